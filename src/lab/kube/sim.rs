//! The controllers of the lab cluster, advanced one step per tick: kubelets register
//! Nodes, CRDs become Established, the Cilium install Job runs (doing what cilium-cli
//! would), workloads roll out once their prerequisites hold, nodes turn Ready with the
//! CNI, and MetalLB's webhook gets a ready endpoint. Every delay is configurable.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use super::Lab;
use super::store::{self, key};
use crate::addons::cilium;
use crate::lab::LabNodeInfo;

/// The objects cilium-cli renders for the Talos native-routing values (chart 1.19.6):
/// (apiVersion, kind, namespace, name). Chart 1.18 has no `cilium-operator-ztunnel`
/// Role/RoleBinding (cilium 1.18.11 `templates/cilium-operator/role.yaml`).
const CILIUM_OBJECTS: &[(&str, &str, &str, &str)] = &[
    ("v1", "Namespace", "", "cilium-secrets"),
    ("v1", "ServiceAccount", "kube-system", "cilium"),
    ("v1", "ServiceAccount", "kube-system", "cilium-envoy"),
    ("v1", "ServiceAccount", "kube-system", "cilium-operator"),
    ("v1", "Secret", "kube-system", "cilium-ca"),
    ("v1", "Secret", "kube-system", "hubble-server-certs"),
    ("v1", "ConfigMap", "kube-system", "cilium-config"),
    ("v1", "ConfigMap", "kube-system", "cilium-envoy-config"),
    ("rbac.authorization.k8s.io/v1", "ClusterRole", "", "cilium"),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "",
        "cilium-operator",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "",
        "cilium",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "",
        "cilium-operator",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        "kube-system",
        "cilium-config-agent",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        "cilium-secrets",
        "cilium-tlsinterception-secrets",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        "cilium-secrets",
        "cilium-operator-tlsinterception-secrets",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "Role",
        "kube-system",
        "cilium-operator-ztunnel",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "kube-system",
        "cilium-config-agent",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "cilium-secrets",
        "cilium-tlsinterception-secrets",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "cilium-secrets",
        "cilium-operator-tlsinterception-secrets",
    ),
    (
        "rbac.authorization.k8s.io/v1",
        "RoleBinding",
        "kube-system",
        "cilium-operator-ztunnel",
    ),
    ("v1", "Service", "kube-system", "cilium-envoy"),
    ("v1", "Service", "kube-system", "hubble-peer"),
    ("apps/v1", "DaemonSet", "kube-system", "cilium"),
    ("apps/v1", "DaemonSet", "kube-system", "cilium-envoy"),
    ("apps/v1", "Deployment", "kube-system", "cilium-operator"),
];

fn plural(kind: &str) -> String {
    match kind {
        "Endpoints" => "endpoints".into(),
        k if k.ends_with('y') => format!("{}ies", &k[..k.len() - 1].to_lowercase()),
        k if k.ends_with('s') => format!("{}es", k.to_lowercase()),
        k => format!("{}s", k.to_lowercase()),
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

fn obj_key(o: &Value) -> String {
    let ns = o["metadata"]["namespace"].as_str();
    key(
        group_of(o["apiVersion"].as_str().unwrap_or_default()),
        &plural(o["kind"].as_str().unwrap_or_default()),
        ns,
        o["metadata"]["name"].as_str().unwrap_or_default(),
    )
}

/// Write `obj` as a controller would (no managed-field changes); no-op when unchanged.
/// A controller's write, as its API client makes it: an object read from the store
/// goes back only if nobody changed it since (a user's cordon between the read and
/// this write is not undone); a lost race is redone at the next reconcile.
fn save(lab: &Lab, obj: Value) {
    if lab.store.put_current(&obj_key(&obj), obj).is_none() {
        lab.store.nudge();
    }
}

/// Has `what` been pending for `delay` (counting from the first time it was asked)?
fn elapsed(lab: &Lab, what: &str, delay: Duration) -> bool {
    let start = *lab
        .timers
        .lock()
        .expect("timers lock")
        .entry(what.to_owned())
        .or_insert_with(Instant::now);
    reached(lab, start + delay)
}

/// Is it `due` yet? If not, the controllers wake then.
fn reached(lab: &Lab, due: Instant) -> bool {
    if Instant::now() >= due {
        return true;
    }
    let mut next = lab.next_due.lock().expect("next due lock");
    *next = Some(next.map_or(due, |n| n.min(due)));
    false
}

pub fn step(lab: &Lab) {
    lab.catch_up();
    register_nodes(lab);
    establish_crds(lab);
    run_cilium_job(lab);
    roll_out(lab);
    run_pods(lab);
    nodes_ready(lab);
    webhook_endpoints(lab);
}

fn nodes(lab: &Lab) -> Vec<Value> {
    lab.store.list(&store::prefix("", "nodes", None))
}

/// The kubelet's version: its config's image tag, else the release default.
fn kubelet_version(lab: &Lab, info: &LabNodeInfo) -> String {
    if info.kubelet_version.is_empty() {
        format!("v{}", lab.cfg.kubernetes_version.trim_start_matches('v'))
    } else {
        info.kubelet_version.clone()
    }
}

fn register_nodes(lab: &Lab) {
    let infos = lab.nodes.lock().expect("nodes lock").clone();
    for info in infos {
        let k = key("", "nodes", None, &info.hostname);
        if let Some(mut node) = lab.store.get(&k) {
            // A restarted kubelet (new image) reports its version at once.
            let kubelet = kubelet_version(lab, &info);
            if node["status"]["nodeInfo"]["kubeletVersion"] != kubelet.as_str() {
                node["status"]["nodeInfo"]["kubeletVersion"] = json!(kubelet);
                save(lab, node);
            }
            continue;
        }
        // A stopped kubelet registers nothing: a deleted Node of a powered-off
        // machine stays deleted. Asked after the Node was found missing, with the
        // events caught up: a power-off emitted before the deletion is seen here.
        lab.catch_up();
        if !kubelet_started(lab, &info.hostname)
            || !elapsed(
                lab,
                &format!("kubelet/{}", info.hostname),
                lab.cfg.node_register,
            )
        {
            continue;
        }
        posting_again(lab, &info.hostname);
        let mut labels = json!({"kubernetes.io/hostname": info.hostname, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64"});
        if info.machine_type == "controlplane" {
            labels["node-role.kubernetes.io/control-plane"] = json!("");
        }
        for (k, v) in &lab.cfg.node_labels {
            labels[k] = json!(v);
        }
        // The kubelet's heartbeat object (`kubectl describe node` shows its holder).
        save(
            lab,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": info.hostname, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": info.hostname, "leaseDurationSeconds": 40, "renewTime": store::now()}}),
        );
        let capacity = lab.cfg.node_sizes.get(&info.hostname).map(|(cores, mib)| {
            json!({"cpu": cores.to_string(), "memory": format!("{}Ki", u64::from(*mib) * 1024), "pods": "110"})
        }).unwrap_or_else(|| json!({}));
        let now = store::now();
        save(
            lab,
            json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": info.hostname, "labels": labels},
            "spec": {},
            "status": {
                "addresses": [{"type": "InternalIP", "address": info.internal_ip.to_string()},
                              {"type": "Hostname", "address": info.hostname}],
                // What a Talos kubelet reports (`kubectl get nodes -o wide`).
                "nodeInfo": {"kubeletVersion": kubelet_version(lab, &info), "bootID": info.boot_id,
                    "osImage": format!("Talos ({})", lab.cfg.talos_version), "operatingSystem": "linux",
                    "architecture": "amd64", "kernelVersion": "lab", "containerRuntimeVersion": "containerd://lab"},
                "capacity": capacity, "allocatable": capacity,
                "conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady",
                    "lastHeartbeatTime": now, "lastTransitionTime": now,
                    "message": "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"}]}}),
        );
    }
}

fn establish_crds(lab: &Lab) {
    for mut crd in lab.store.list(&store::prefix(
        "apiextensions.k8s.io",
        "customresourcedefinitions",
        None,
    )) {
        if crate::kube::crd_established(&crd).is_ok() {
            continue;
        }
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let delay = lab
            .cfg
            .slow_crds
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(lab.cfg.crd_established, |(_, d)| *d);
        if !elapsed(lab, &format!("crd/{name}"), delay) {
            continue;
        }
        let now = store::now();
        let stored: Vec<Value> = crd["spec"]["versions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|v| v["storage"] == true)
            .map(|v| v["name"].clone())
            .collect();
        crd["status"] = json!({"acceptedNames": crd["spec"]["names"], "storedVersions": stored, "conditions": [
            {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts", "lastTransitionTime": now},
            {"type": "Established", "status": "True", "reason": "InitialNamesAccepted", "lastTransitionTime": now}]});
        save(lab, crd);
    }
}

fn job_finished(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True")
}

/// Whether the lab's cilium-cli image carries the chart for `version`: cilium-cli
/// v0.19.7 embeds `vendor/github.com/cilium/charts/cilium-<v>.tgz` for 1.18.x and
/// 1.19.0–1.19.5, and downloads any other version from helm.cilium.io
/// (`internal/helm/helm.go` `resolveChartVersion`), which the lab never reaches.
fn chart_carried(version: &str) -> bool {
    let parts: Vec<u32> = version.split('.').filter_map(|p| p.parse().ok()).collect();
    match parts[..] {
        [1, 18, _] => true,
        [1, 19, patch] => patch <= 5,
        _ => false,
    }
}

/// Images the lab's registry serves for the installer: the pinned tag, also with a digest.
fn cli_image_known(image: &str) -> bool {
    let pinned = &cilium::pins().installer.image;
    image == pinned
        || image
            .strip_prefix(pinned.as_str())
            .and_then(|d| d.strip_prefix("@sha256:"))
            .is_some_and(|h| h.len() == 64)
}

/// The Helm release revisions of `cilium` (helm's secrets driver: one Secret per
/// revision, `sh.helm.release.v1.<name>.v<revision>`, labelled owner/name/status/version).
fn releases(lab: &Lab) -> Vec<Value> {
    lab.store
        .list(&store::prefix("", "secrets", Some(cilium::NAMESPACE)))
        .into_iter()
        .filter(|s| {
            let l = &s["metadata"]["labels"];
            l["owner"] == "helm" && l["name"] == cilium::RELEASE
        })
        .collect()
}

/// Record a deployed revision; earlier ones become `superseded`, as helm does.
fn record_release(lab: &Lab, version: &str) {
    let old = releases(lab);
    for mut r in old.clone() {
        r["metadata"]["labels"]["status"] = json!("superseded");
        let k = obj_key(&r);
        lab.store.put(&k, r);
    }
    let rev = old
        .iter()
        .filter_map(|r| {
            r["metadata"]["labels"]["version"]
                .as_str()?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap_or(0)
        + 1;
    let name = format!("sh.helm.release.v1.{}.v{rev}", cilium::RELEASE);
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": name, "namespace": cilium::NAMESPACE, "labels": {
            "owner": "helm", "name": cilium::RELEASE, "status": "deployed", "version": rev.to_string()}},
        // The real one holds the gzipped release; the lab keeps only the chart version.
        "data": {"chart": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, version)}});
    let k = obj_key(&secret);
    lab.store.put(&k, secret);
}

/// The install Job: only the pinned cilium-cli image "pulls"; it then does what
/// `cilium install|upgrade --version V --set …` does, from its command line, and
/// fails the way cilium-cli does (cilium-cli v0.19.7 `cli/install.go` messages).
fn run_cilium_job(lab: &Lab) {
    let Some(mut job) = lab
        .store
        .get(&key("batch", "jobs", Some(cilium::NAMESPACE), cilium::JOB))
    else {
        return;
    };
    let uid = job["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if job_finished(&job) || !elapsed(lab, &format!("job/{uid}"), lab.cfg.job_run) {
        return;
    }
    let c = &job["spec"]["template"]["spec"]["containers"][0];
    let image = c["image"].as_str().unwrap_or_default();
    let cmd: Vec<String> = c["command"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_owned))
        .collect();
    let version = cmd
        .iter()
        .position(|a| a == "--version")
        .and_then(|i| cmd.get(i + 1))
        .cloned()
        .unwrap_or_default();
    let sets: Vec<String> = cmd
        .windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].clone())
        .collect();
    let verb = cmd.get(1).map(String::as_str).unwrap_or_default();
    let released = !releases(lab).is_empty();
    let failure = if !cli_image_known(image) {
        Some(format!(
            "Back-off pulling image \"{image}\": the lab only runs the pinned {}",
            cilium::pins().installer.image
        ))
    } else if !chart_carried(&version) {
        Some(format!(
            "Unable to {verb} Cilium: chart {version} is not embedded in cilium-cli; downloading https://helm.cilium.io/cilium-{version}.tgz: the lab has no internet"
        ))
    } else if cilium::pin(&version).is_err() {
        Some(format!("cilium {verb}: unsupported --version {version:?}"))
    } else {
        match verb {
            "install" if released => Some(
                "Unable to install Cilium: cannot reuse a name that is still in use".to_owned(),
            ),
            "upgrade" if !released => Some(format!(
                "Unable to upgrade Cilium: {:?} has no deployed releases",
                cilium::RELEASE
            )),
            "install" | "upgrade" => None,
            other => Some(format!("cilium: unknown command {other:?}")),
        }
    };
    let now = store::now();
    job["status"] = match failure {
        Some(msg) => {
            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": msg, "lastTransitionTime": now}]})
        }
        None => {
            install_cilium(lab, &version, &cilium::parse_set_args(&sets));
            record_release(lab, &version);
            json!({"succeeded": 1, "completionTime": now, "conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": now}]})
        }
    };
    save(lab, job);
}

fn image(repo: &str, version: &str, digest: &Value) -> String {
    format!(
        "quay.io/cilium/{repo}:v{version}@{}",
        digest.as_str().unwrap_or_default()
    )
}

fn install_cilium(lab: &Lab, version: &str, v: &Value) {
    let s = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|i| i.as_str().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" "),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let config = json!({
        "routing-mode": s(&v["routingMode"]),
        "ipv4-native-routing-cidr": s(&v["ipv4NativeRoutingCIDR"]),
        "auto-direct-node-routes": s(&v["autoDirectNodeRoutes"]),
        "devices": s(&v["devices"]),
        "ipam": s(&v["ipam"]["mode"]),
        "kube-proxy-replacement": s(&v["kubeProxyReplacement"]),
        "enable-ipv4-masquerade": s(&v["enableIPv4Masquerade"]),
        "enable-bpf-masquerade": s(&v["bpf"]["masquerade"]),
        "enable-host-legacy-routing": s(&v["bpf"]["hostLegacyRouting"]),
        "k8s-service-host": s(&v["k8sServiceHost"]),
        "k8s-service-port": s(&v["k8sServicePort"]),
        "default-lb-service-ipam": s(&v["defaultLBServiceIPAM"]),
        "enable-l2-announcements": s(&v["l2announcements"]["enabled"]),
        "cgroup-root": s(&v["cgroup"]["hostRoot"]),
    });
    let manager = json!([{"manager": "cilium-cli", "operation": "Update", "time": store::now(), "fieldsType": "FieldsV1", "fieldsV1": {}}]);
    let ztunnel = !version.starts_with("1.18.");
    for (api, kind, ns, name) in CILIUM_OBJECTS {
        if name.ends_with("-ztunnel") && !ztunnel {
            continue;
        }
        let mut o = json!({"apiVersion": api, "kind": kind, "metadata": {"name": name,
            "labels": {"app.kubernetes.io/part-of": "cilium"}, "managedFields": manager}});
        if !ns.is_empty() {
            o["metadata"]["namespace"] = json!(ns);
        }
        let sel = json!({"matchLabels": {"k8s-app": name}});
        let pod = |img: String| json!({"metadata": {"labels": {"k8s-app": name}}, "spec": {"hostNetwork": true, "containers": [{"name": name, "image": img}]}});
        match (*kind, *name) {
            ("ConfigMap", "cilium-config") => o["data"] = config.clone(),
            ("DaemonSet", "cilium") => {
                o["spec"] = json!({"selector": sel, "template": pod(image("cilium", version, &v["image"]["digest"]))})
            }
            ("DaemonSet", _) => {
                o["spec"] = json!({"selector": sel, "template": pod(format!("quay.io/cilium/cilium-envoy@{}", s(&v["envoy"]["image"]["digest"])))})
            }
            ("Deployment", _) => {
                o["spec"] = json!({"replicas": 2, "selector": sel, "template": pod(image("operator-generic", version, &v["operator"]["image"]["genericDigest"]))})
            }
            ("Secret", _) => o["type"] = json!("Opaque"),
            _ => {}
        }
        let k = obj_key(&o);
        if lab.store.get(&k).is_none() || *kind != "Namespace" {
            lab.store.put(&k, o);
        }
    }
}

fn cilium_ready(lab: &Lab) -> bool {
    lab.store
        .get(&key("apps", "daemonsets", Some("kube-system"), "cilium"))
        .is_some_and(|d| crate::kube::daemonset_ready(&d).is_ok())
}

/// Cilium's workloads wait for every Node's pod CIDR (ipam=kubernetes); everything
/// else needs a working CNI.
fn roll_out(lab: &Lab) {
    let nodes = nodes(lab);
    let cidrs_set = !nodes.is_empty()
        && nodes
            .iter()
            .all(|n| n["spec"]["podCIDR"].as_str().is_some_and(|c| !c.is_empty()));
    let cni = cilium_ready(lab);
    for (plural_, is_ds) in [("daemonsets", true), ("deployments", false)] {
        for mut o in lab.store.list(&store::prefix("apps", plural_, None)) {
            let ns = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let gen_ = o["metadata"]["generation"].as_i64().unwrap_or(1);
            let is_cilium = ns == "kube-system" && name.starts_with("cilium");
            let gate = if is_cilium { cidrs_set } else { cni };
            // Rolled out before (a saved datacenter coming back) stays rolled out.
            let was_ready = o["status"]["observedGeneration"].as_i64() == Some(gen_)
                && if is_ds {
                    crate::kube::daemonset_ready(&o).is_ok()
                } else {
                    crate::kube::deployment_ready(&o).is_ok()
                };
            let ready = gate
                && (was_ready
                    || elapsed(lab, &format!("rollout/{ns}/{name}/{gen_}"), lab.cfg.rollout));
            let want = if is_ds {
                nodes.len() as i64
            } else {
                o["spec"]["replicas"].as_i64().unwrap_or(1)
            };
            let have = if ready { want } else { 0 };
            o["status"] = if is_ds {
                json!({"observedGeneration": gen_, "desiredNumberScheduled": want, "currentNumberScheduled": want,
                    "numberReady": have, "updatedNumberScheduled": have, "numberAvailable": have})
            } else {
                let avail = if ready { "True" } else { "False" };
                json!({"observedGeneration": gen_, "replicas": want, "readyReplicas": have, "updatedReplicas": have,
                    "availableReplicas": have, "conditions": [{"type": "Available", "status": avail}]})
            };
            save(lab, o);
        }
    }
}

/// The random-looking suffixes of generated pod names, from `seed` (the real ones
/// come from `k8s.io/apimachinery/pkg/util/rand.String`'s alphabet).
fn suffix(seed: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    ring::digest::digest(&ring::digest::SHA256, seed.as_bytes())
        .as_ref()
        .iter()
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A running Pod of workload `w` on `node` (`i`: its index among the workload's pods).
fn pod(w: &Value, owner: (&str, String), name: String, node: &Value, i: usize) -> Value {
    let tmpl = &w["spec"]["template"];
    let node_ip = node["status"]["addresses"][0]["address"].clone();
    let host_network = tmpl["spec"]["hostNetwork"] == true;
    let pod_ip = if host_network {
        node_ip.clone()
    } else {
        node["spec"]["podCIDR"]
            .as_str()
            .and_then(|c| c.parse::<ipnet::Ipv4Net>().ok())
            .map_or(Value::Null, |n| {
                json!(std::net::Ipv4Addr::from(u32::from(n.network()) + 10 + i as u32).to_string())
            })
    };
    let statuses: Vec<Value> = tmpl["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| json!({"name": c["name"], "image": c["image"], "ready": true, "started": true,
            "restartCount": 0, "state": {"running": {"startedAt": w["metadata"]["creationTimestamp"]}}}))
        .collect();
    let cond = |t: &str| json!({"type": t, "status": "True"});
    let mut spec = tmpl["spec"].clone();
    spec["nodeName"] = node["metadata"]["name"].clone();
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": w["metadata"]["namespace"], "labels": tmpl["metadata"]["labels"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner.0, "name": owner.1,
                "controller": true, "blockOwnerDeletion": true}]},
        "spec": spec,
        "status": {"phase": "Running", "hostIP": node_ip, "hostIPs": [{"ip": node_ip}],
            "podIP": pod_ip, "podIPs": [{"ip": pod_ip}], "qosClass": "BestEffort",
            "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
            "containerStatuses": statuses}})
}

/// The scheduler and kubelets, coarsely: a ready DaemonSet runs one Pod per Node, a
/// ready Deployment its replicas (owned by a ReplicaSet, as the real controller
/// names them); Pods of a workload that is gone or not ready go away. Pods nobody
/// owns (created by hand) are left alone.
fn run_pods(lab: &Lab) {
    let nodes = nodes(lab);
    if nodes.is_empty() {
        return;
    }
    let mut want = std::collections::BTreeMap::new();
    for (plural_, is_ds) in [("daemonsets", true), ("deployments", false)] {
        for w in lab.store.list(&store::prefix("apps", plural_, None)) {
            let ready = if is_ds {
                crate::kube::daemonset_ready(&w).is_ok()
            } else {
                crate::kube::deployment_ready(&w).is_ok()
            };
            if !ready {
                continue;
            }
            let name = w["metadata"]["name"].as_str().unwrap_or_default();
            let ns = w["metadata"]["namespace"].as_str().unwrap_or_default();
            // DaemonSet pods tolerate `node.kubernetes.io/unschedulable`; the
            // scheduler places nothing else on a cordoned node.
            let targets: Vec<&Value> = nodes
                .iter()
                .filter(|n| is_ds || n["spec"]["unschedulable"] != true)
                .collect();
            if targets.is_empty() {
                continue;
            }
            let count = if is_ds {
                targets.len()
            } else {
                w["spec"]["replicas"].as_i64().unwrap_or(1).max(0) as usize
            };
            let rs = format!("{name}-{}", suffix(&format!("{ns}/{name}"), 10));
            for i in 0..count {
                let node = targets[i % targets.len()];
                let node_name = node["metadata"]["name"].as_str().unwrap_or_default();
                let (owner, pod_name) = if is_ds {
                    let seed = format!("{ns}/{name}/{node_name}");
                    (
                        ("DaemonSet", name.to_owned()),
                        format!("{name}-{}", suffix(&seed, 5)),
                    )
                } else {
                    let seed = format!("{rs}/{i}");
                    (
                        ("ReplicaSet", rs.clone()),
                        format!("{rs}-{}", suffix(&seed, 5)),
                    )
                };
                want.insert(
                    key("", "pods", Some(ns), &pod_name),
                    (w.clone(), owner, pod_name, (*node).clone(), i),
                );
            }
        }
    }
    for p in lab.store.list(&store::prefix("", "pods", None)) {
        let k = obj_key(&p);
        let owned = matches!(
            p["metadata"]["ownerReferences"][0]["kind"].as_str(),
            Some("DaemonSet" | "ReplicaSet")
        );
        if owned && !want.contains_key(&k) {
            lab.store.delete(&k);
        }
    }
    for (k, (w, owner, name, node, i)) in want {
        // Created once: a running Pod's status does not change by itself.
        if lab.store.get(&k).is_none() {
            lab.store.put(&k, pod(&w, owner, name, &node, i));
        }
    }
}

fn pods_on(lab: &Lab, node: &str) -> Vec<Value> {
    lab.store
        .list(&store::prefix("", "pods", None))
        .into_iter()
        .filter(|p| p["spec"]["nodeName"] == node)
        .collect()
}

/// A node goes down for a reboot. One that drains itself (the legacy upgrade
/// sequence, talos v1.13.9 `pkg/kubernetes/kubernetes.go` L239-316) first evicts
/// every pod but mirror, unmanaged and DaemonSet pods, a refusal only logged. Then
/// its containers stop: the pods left stay bound to it, not Ready, and count a
/// restart (the kubelet starts them again after the boot).
pub fn going_down(lab: &Lab, node: &str, drains: bool) {
    if drains {
        for p in pods_on(lab, node) {
            let owner = p["metadata"]["ownerReferences"][0]["kind"].as_str();
            if matches!(owner, None | Some("DaemonSet")) {
                continue;
            }
            let (ns, name) = (
                p["metadata"]["namespace"].as_str().unwrap_or_default(),
                p["metadata"]["name"].as_str().unwrap_or_default(),
            );
            let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": name, "namespace": ns}});
            let _ = super::eviction::evict(lab, ns, name, &body);
        }
    }
    for mut p in pods_on(lab, node) {
        set_ready(&mut p, false);
        for c in p["status"]["containerStatuses"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            c["restartCount"] = json!(c["restartCount"].as_i64().unwrap_or(0) + 1);
        }
        save(lab, p);
    }
}

/// The node runs again: the kubelet restarts the containers of its pods.
pub fn containers_started(lab: &Lab, node: &str) {
    for mut p in pods_on(lab, node) {
        set_ready(&mut p, true);
        save(lab, p);
    }
}

fn set_ready(p: &mut Value, ready: bool) {
    let status = if ready { "True" } else { "False" };
    for c in p["status"]["conditions"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .filter(|c| c["type"] == "Ready" || c["type"] == "ContainersReady")
    {
        c["status"] = json!(status);
    }
    for c in p["status"]["containerStatuses"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        c["ready"] = json!(ready);
    }
}

/// Whether the node's kubelet runs: it never stopped, or it started again since.
fn kubelet_started(lab: &Lab, name: &str) -> bool {
    !lab.down.lock().expect("down lock").contains_key(name)
        || lab
            .starting
            .lock()
            .expect("starting lock")
            .contains_key(name)
}

/// The kubelet posts status again: no longer silent.
fn posting_again(lab: &Lab, name: &str) {
    lab.down.lock().expect("down lock").remove(name);
    lab.starting.lock().expect("starting lock").remove(name);
}

/// What the kubelet and the node lifecycle controller make of each Node's `Ready`.
///
/// A running kubelet posts status (kubelet `pkg/kubelet/kubelet_node_status.go`
/// `syncNodeStatus`), with `nodeInfo.bootID` read from
/// `/proc/sys/kernel/random/boot_id` (`pkg/kubelet/nodestatus/setters.go`
/// `MachineInfo`): Ready once the CNI runs and the Node has a pod CIDR. A kubelet
/// that stopped (the machine rebooting, shut down, or its kubelet stuck) posts
/// nothing: the Node keeps its last status — Ready, with the old `bootID` — until
/// the node lifecycle controller finds no heartbeat for `node_monitor_grace` and
/// marks `Ready` `Unknown`, "Kubelet stopped posting node status."
/// (kubernetes v1.35 `pkg/controller/nodelifecycle/node_lifecycle_controller.go`
/// `tryUpdateNodeHealth`). After a boot the kubelet posts again `kubelet_start`
/// after the node runs, with the new boot's id.
fn nodes_ready(lab: &Lab) {
    let cni = cilium_ready(lab);
    let infos = lab.nodes.lock().expect("nodes lock").clone();
    for n in nodes(lab) {
        let name = n["metadata"]["name"].as_str().unwrap_or_default();
        let silent = lab.down.lock().expect("down lock").get(name).copied();
        let started = lab
            .starting
            .lock()
            .expect("starting lock")
            .get(name)
            .copied();
        let old = &n["status"]["conditions"][0];
        let mut ready = match (silent, started) {
            (Some(_), Some(at)) if reached(lab, at + lab.cfg.kubelet_start) => {
                posting_again(lab, name);
                None
            }
            (Some(since), _) => {
                if old["status"] == "Unknown" || !reached(lab, since + lab.cfg.node_monitor_grace) {
                    continue;
                }
                // The controller keeps the last heartbeat the kubelet posted.
                let mut c = json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastHeartbeatTime": old["lastHeartbeatTime"], "lastTransitionTime": store::now()});
                if c["lastHeartbeatTime"].is_null() {
                    c["lastHeartbeatTime"] = c["lastTransitionTime"].clone();
                }
                Some(c)
            }
            (None, _) => None,
        };
        let mut boot = n["status"]["nodeInfo"]["bootID"].clone();
        if ready.is_none() {
            // The kubelet posts.
            if let Some(info) = infos.iter().find(|i| i.hostname == name) {
                boot = json!(info.boot_id);
            }
            if cni && n["spec"]["podCIDR"].as_str().is_some_and(|c| !c.is_empty()) {
                let mut c = json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status"});
                if old["status"] == "True" {
                    c["lastTransitionTime"] = old["lastTransitionTime"].clone();
                    c["lastHeartbeatTime"] = if boot == n["status"]["nodeInfo"]["bootID"] {
                        old["lastHeartbeatTime"].clone()
                    } else {
                        json!(store::now())
                    };
                } else {
                    let now = json!(store::now());
                    c["lastHeartbeatTime"] = now.clone();
                    c["lastTransitionTime"] = now;
                }
                ready = Some(c);
            }
        }
        // The kubelet writes only status: taken onto the object as it is now, so a
        // spec change made since the list above (a cordon) is not lost.
        if let Some(mut cur) = lab.store.get(&obj_key(&n)) {
            if let Some(ready) = ready {
                cur["status"]["conditions"] = json!([ready]);
            }
            cur["status"]["nodeInfo"]["bootID"] = boot;
            save(lab, cur);
        }
    }
}

/// A Service gets a ready endpoint once a ready Deployment in its namespace serves it.
fn webhook_endpoints(lab: &Lab) {
    for svc in lab.store.list(&store::prefix("", "services", None)) {
        let ns = svc["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = svc["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let sel = &svc["spec"]["selector"];
        let Some(sel) = sel.as_object().filter(|m| !m.is_empty()) else {
            continue;
        };
        let backing = lab
            .store
            .list(&store::prefix("apps", "deployments", Some(&ns)))
            .into_iter()
            .find(|d| {
                sel.iter()
                    .all(|(k, v)| &d["spec"]["template"]["metadata"]["labels"][k] == v)
            });
        let Some(d) = backing.filter(|d| crate::kube::deployment_ready(d).is_ok()) else {
            continue;
        };
        if !elapsed(
            lab,
            &format!("endpoint/{ns}/{name}"),
            lab.cfg.webhook_endpoint,
        ) {
            continue;
        }
        let port = svc["spec"]["ports"][0]["targetPort"].clone();
        // The server's grace counts from its endpoint, whoever asks when: MetalLB's
        // controller serves once its cert rotator has written the certificates, on its
        // own clock (metallb `internal/k8s/webhook.go` enableCertRotation,
        // open-policy-agent cert-controller `rotator.CertRotator{IsReady}`).
        elapsed(
            lab,
            &format!("webhook-cert/{ns}/{name}"),
            lab.cfg.webhook_grace,
        );
        save(
            lab,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-lab"), "namespace": ns,
                "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.8.32.10"], "conditions": {"ready": true}, "targetRef": {"kind": "Pod", "namespace": ns, "name": format!("{}-lab", d["metadata"]["name"].as_str().unwrap_or_default())}}],
            "ports": [{"port": port}]}),
        );
    }
}

/// The webhook answers once its Service has a ready endpoint and the server has
/// its certificate (`webhook_grace` after the endpoint: MetalLB's readiness passes
/// before that).
pub fn webhook_serving(lab: &Lab, ns: &str, svc: &str) -> bool {
    let slice = lab.store.get(&key(
        "discovery.k8s.io",
        "endpointslices",
        Some(ns),
        &format!("{svc}-lab"),
    ));
    slice.is_some()
        && elapsed(
            lab,
            &format!("webhook-cert/{ns}/{svc}"),
            lab.cfg.webhook_grace,
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals_of_the_kinds_the_lab_creates() {
        assert_eq!(plural("NetworkPolicy"), "networkpolicies");
        assert_eq!(plural("ClusterRoleBinding"), "clusterrolebindings");
        assert_eq!(plural("Ingress"), "ingresses");
        assert_eq!(
            obj_key(
                &json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "cilium", "namespace": "kube-system"}})
            ),
            "/registry/apps/daemonsets/kube-system/cilium"
        );
    }
}

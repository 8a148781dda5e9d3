//! Cilium in native-routing mode, installed by an in-cluster Job that runs a pinned
//! cilium-cli image (`cilium install|upgrade --version … --set …`), so the workstation
//! needs no helm or cilium binary. The chart values are a pure function of the plan.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{AddonError, Links, Options, wait_ready};
use crate::kube::{Client, Discovery, KubeError, daemonset_ready, deployment_ready, node_ready};
use crate::plan::Plan;
use crate::profile::Cilium;

pub const NAMESPACE: &str = "kube-system";
pub const JOB: &str = "cilium-install";
/// Annotation on the Job: SHA-256 of what it installs, to know when to recreate it.
pub const SPEC_ANNOTATION: &str = "talos-pve.dev/install-sha256";
/// cilium-cli's Helm release name (`--helm-release-name`, default `cilium`).
pub const RELEASE: &str = "cilium";
/// Helm's secrets storage driver labels every release revision `owner=helm,name=<release>`
/// (helm v4 `pkg/storage/driver/secrets.go`, vendored by cilium-cli v0.19.7).
pub const RELEASE_SELECTOR: &str = "owner=helm,name=cilium";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pins {
    pub installer: Installer,
    /// The version a profile gets when it names none (reason in the YAML).
    pub default: String,
    pub versions: BTreeMap<String, VersionPin>,
}

#[derive(Debug, Deserialize)]
pub struct Installer {
    /// cilium-cli image reference.
    pub image: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionPin {
    /// Digest of the chart tarball the cilium-cli image carries for this version.
    pub chart_sha256: String,
    pub agent_digest: String,
    pub operator_generic_digest: String,
    pub envoy_digest: String,
}

/// The pins built into talos-pve (`embedded/cilium.yaml`).
pub fn pins() -> &'static Pins {
    static P: OnceLock<Pins> = OnceLock::new();
    P.get_or_init(|| {
        serde_saphyr::from_str(include_str!("../../embedded/cilium.yaml"))
            .expect("embedded/cilium.yaml is valid (unit-tested)")
    })
}

pub fn pin(version: &str) -> Result<&'static VersionPin, AddonError> {
    let p = pins();
    p.versions
        .get(version.trim_start_matches('v'))
        .ok_or_else(|| AddonError::CiliumVersion {
            version: version.into(),
            supported: p.versions.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}

/// The cilium-cli image the Job runs: the profile's override, checked as an OCI
/// image reference with an explicit tag or digest, or the built-in pin.
pub fn cli_image(cilium: &Cilium) -> Result<&str, AddonError> {
    match cilium.cli_image.as_deref() {
        None => Ok(&pins().installer.image),
        Some(r) => image_reference(r)
            .map(|()| r)
            .map_err(|what| AddonError::CliImage {
                image: r.into(),
                what,
            }),
    }
}

/// `[host[:port]/]path[:tag][@sha256:<64 hex>]` with a tag or a digest (no implicit
/// `latest`), as the OCI distribution spec names images.
fn image_reference(r: &str) -> Result<(), String> {
    let (rest, digest) = match r.split_once('@') {
        Some((rest, d)) => (rest, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let hex = d
            .strip_prefix("sha256:")
            .ok_or("the digest must start with sha256:")?;
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err("a sha256 digest is 64 lower-case hex digits".into());
        }
    }
    // A tag follows the last ':' after the last '/' (a ':' before it is a registry port).
    let last = rest.rsplit('/').next().unwrap_or_default();
    let (name, tag) = match last.rsplit_once(':') {
        Some((_, t)) => (&rest[..rest.len() - t.len() - 1], Some(t)),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let ok = t.len() <= 128
            && t.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_')
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
        if !ok {
            return Err(format!("`{t}` is not an image tag"));
        }
    }
    if tag.is_none() && digest.is_none() {
        return Err("it has neither a tag nor a digest, so it would float with `latest`".into());
    }
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let host = first.contains(['.', ':']) || first == "localhost";
    let host_ok = |h: &str| {
        let (h, port) = h.split_once(':').unwrap_or((h, "0"));
        !h.is_empty()
            && h.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b))
            && port.parse::<u16>().is_ok()
    };
    let path_ok = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
            && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
    };
    let ok = if host {
        host_ok(first) && name.contains('/') && name.split('/').skip(1).all(path_ok)
    } else {
        name.split('/').all(path_ok)
    };
    if !ok {
        return Err(format!("`{name}` is not an image name"));
    }
    Ok(())
}

/// Chart values for this plan: the Talos requirements, native routing over the
/// workload L2, Kubernetes IPAM (pod CIDRs from the Node objects), MetalLB owning
/// LoadBalancer IPs, and images pinned by digest.
pub fn values(plan: &Plan, cilium: &Cilium, links: &Links) -> Result<Value, AddonError> {
    let pin = pin(&cilium.version)?;
    let cidr = cilium.native_routing_cidr.unwrap_or(plan.pod_subnet);
    if let Some(n) = plan.nodes.iter().find(|n| !cidr.contains(&n.pod_cidr)) {
        return Err(AddonError::NativeRoutingCidr {
            cidr,
            node: n.name.clone(),
            pod_cidr: n.pod_cidr,
            pod_subnet: plan.pod_subnet,
        });
    }
    Ok(json!({
        "ipam": {"mode": "kubernetes"},
        "kubeProxyReplacement": true,
        // Talos forbids loading kernel modules: the chart defaults minus SYS_MODULE.
        "securityContext": {"capabilities": {
            "ciliumAgent": ["CHOWN", "KILL", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "SYS_ADMIN",
                "SYS_RESOURCE", "DAC_OVERRIDE", "FOWNER", "SETGID", "SETUID"],
            "cleanCiliumState": ["NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE"],
        }},
        // Talos mounts cgroup2 itself.
        "cgroup": {"autoMount": {"enabled": false}, "hostRoot": "/sys/fs/cgroup"},
        // KubePrism: there is no ClusterIP service before Cilium runs.
        "k8sServiceHost": "localhost",
        "k8sServicePort": 7445,
        "routingMode": "native",
        "autoDirectNodeRoutes": true,
        "ipv4NativeRoutingCIDR": cidr.to_string(),
        "enableIPv4Masquerade": plan.masquerade,
        "devices": links.devices(),
        // Talos forwards CoreDNS to the host resolver (`forwardKubeDNSToHost`), which
        // BPF host routing breaks (Cilium docs `installation/k8s-install-talos-linux.rst`);
        // BPF host routing stays on with kube-proxy replacement and no iptables
        // masquerading, so turn it off: pods resolve external names through the node.
        "bpf": {"hostLegacyRouting": true},
        "defaultLBServiceIPAM": "none",
        "l2announcements": {"enabled": false},
        "image": {"useDigest": true, "digest": pin.agent_digest},
        "operator": {"image": {"useDigest": true, "genericDigest": pin.operator_generic_digest}},
        "envoy": {"image": {"useDigest": true, "digest": pin.envoy_digest}},
    }))
}

/// Helm `--set` form of `values`: dotted keys, lists as `{a,b}`, sorted.
pub fn set_args(values: &Value) -> Vec<String> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, x, out);
                }
            }
            Value::Array(xs) => {
                let items: Vec<String> = xs.iter().map(scalar).collect();
                out.push(format!("{prefix}={{{}}}", items.join(",")));
            }
            x => out.push(format!("{prefix}={}", scalar(x))),
        }
    }
    fn scalar(v: &Value) -> String {
        match v {
            Value::String(s) => s.replace(',', "\\,"),
            other => other.to_string(),
        }
    }
    let mut out = Vec::new();
    walk("", values, &mut out);
    out
}

/// Parse `--set` arguments back into values (the lab reads the Job like cilium-cli).
pub fn parse_set_args(args: &[String]) -> Value {
    let mut root = json!({});
    for a in args {
        let Some((key, raw)) = a.split_once('=') else {
            continue;
        };
        let parse = |s: &str| -> Value {
            let s = s.replace("\\,", ",");
            serde_json::from_str::<Value>(&s)
                .ok()
                .filter(|v| !v.is_string())
                .unwrap_or(Value::String(s))
        };
        let val = match raw.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
            Some(inner) => Value::Array(
                inner
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(parse)
                    .collect(),
            ),
            None => parse(raw),
        };
        let mut cur = &mut root;
        let parts: Vec<&str> = key.split('.').collect();
        for (i, p) in parts.iter().enumerate() {
            if i + 1 == parts.len() {
                cur[*p] = val.clone();
            } else {
                if !cur[*p].is_object() {
                    cur[*p] = json!({});
                }
                cur = &mut cur[*p];
            }
        }
    }
    root
}

/// What the Job runs: cilium-cli refuses `install` over an existing release
/// (helm v4 `pkg/action/install.go`: "cannot reuse a name that is still in use"), so
/// once a release exists its values change through `upgrade`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Install,
    /// `--reset-values`: cilium-cli's default `--reset-then-reuse-values` would merge
    /// the last release's values in, so a value dropped from the plan would linger.
    Upgrade,
}

/// The container command of the install Job.
pub fn command(verb: Verb, version: &str, values: &Value) -> Vec<String> {
    let mut cmd: Vec<String> = match verb {
        Verb::Install => vec!["cilium".into(), "install".into()],
        Verb::Upgrade => vec!["cilium".into(), "upgrade".into(), "--reset-values".into()],
    };
    cmd.push("--version".into());
    cmd.push(version.trim_start_matches('v').to_owned());
    for s in set_args(values) {
        cmd.push("--set".into());
        cmd.push(s);
    }
    cmd
}

/// ServiceAccount, ClusterRoleBinding (cluster-admin) and Job that install Cilium.
/// The Job's annotation hashes what it installs (image, version, values), not the
/// verb: an upgrade Job with unchanged inputs is no reason to run again.
pub fn objects(image: &str, version: &str, values: &Value, verb: Verb) -> Vec<Value> {
    let mut job = job(image, command(verb, version, values));
    let what = json!({"image": image, "version": version, "values": values});
    let digest = ring::digest::digest(&ring::digest::SHA256, what.to_string().as_bytes());
    job["metadata"]["annotations"] = json!({SPEC_ANNOTATION: hex::encode(digest.as_ref())});
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": JOB, "namespace": NAMESPACE}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": JOB},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": JOB, "namespace": NAMESPACE}]}),
        job,
    ]
}

/// The install Job; its pod template is immutable, hence the hash annotation.
fn job(image: &str, cmd: Vec<String>) -> Value {
    let cp = "node-role.kubernetes.io/control-plane";
    json!({"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": JOB, "namespace": NAMESPACE},
            "spec": {"backoffLimit": 10, "template": {
                "metadata": {"labels": {"app": JOB}},
                "spec": {
                    "restartPolicy": "OnFailure",
                    "serviceAccountName": JOB,
                    // No CNI yet: only the host network works.
                    "hostNetwork": true,
                    "tolerations": [
                        {"operator": "Exists"},
                        {"key": cp, "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": cp, "operator": "Exists"}]}]}}},
                    "containers": [{
                        "name": JOB,
                        "image": image,
                        // The kubernetes Service needs a CNI; talk to the local API server.
                        "env": [
                            {"name": "KUBERNETES_SERVICE_HOST",
                             "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}},
                            {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}],
                        "command": cmd}]}}}})
}

fn job_complete(job: &Value) -> bool {
    job["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    })
}

fn job_failed(job: &Value) -> Option<String> {
    job["status"]["conditions"]
        .as_array()?
        .iter()
        .find_map(|c| {
            (c["type"] == "Failed" && c["status"] == "True")
                .then(|| c["message"].as_str().unwrap_or("no message").to_owned())
        })
}

/// Apply the installer objects (recreating the Job when its command changed), then
/// wait for the agent DaemonSet, the operator Deployment and every node Ready.
/// Returns whether a Job was (re)created.
pub async fn install(
    client: &Client,
    plan: &Plan,
    cilium: &Cilium,
    opts: &Options,
) -> Result<bool, AddonError> {
    let values = values(plan, cilium, &opts.links)?;
    let image = cli_image(cilium)?;
    let release = format!(
        "/api/v1/namespaces/{NAMESPACE}/secrets?labelSelector={}",
        RELEASE_SELECTOR.replace('=', "%3D").replace(',', "%2C")
    );
    // A half-finished earlier run or a profile change: the release is there already.
    let verb = if client.list(&release).await?.is_empty() {
        Verb::Install
    } else {
        Verb::Upgrade
    };
    let objs = objects(image, &cilium.version, &values, verb);
    let disc = Discovery::run(client).await?;
    let job_res = disc.resolve("batch/v1", "Job")?;
    let job_path = job_res.object_path(Some(NAMESPACE), JOB);
    let want = &objs[2]["metadata"]["annotations"][SPEC_ANNOTATION];
    let existing = client.get(&job_path).await?;
    let created = match &existing {
        Some(j)
            if &j["metadata"]["annotations"][SPEC_ANNOTATION] == want
                && job_failed(j).is_none() =>
        {
            false
        }
        Some(_) => {
            // A Job's pod template is immutable, and a failed Job does not run again: replace it.
            client
                .delete(&format!("{job_path}?propagationPolicy=Background"))
                .await?;
            true
        }
        None => true,
    };
    // An unchanged, healthy Job is left alone (its template could not change anyway).
    for o in objs.iter().filter(|o| created || o["kind"] != "Job") {
        client.apply(disc.for_object(o)?, o).await?;
    }
    let poll = &opts.poll;
    // A Job (re)created, or one an interrupted run left running, must finish first:
    // after an upgrade the old agents are still ready, and a Job that fails never
    // creates the DaemonSet. Watched, as every wait here: it ends when the Job does.
    if created || !existing.as_ref().is_some_and(job_complete) {
        let failed = poll
            .watch_object::<_, KubeError, _>(
                client,
                &job_path,
                "the Cilium install Job to finish",
                |job| match job {
                    None => Err("not created yet".into()),
                    Some(j) => match job_failed(j) {
                        Some(msg) => Ok(Some(msg)),
                        None if job_complete(j) => Ok(None),
                        None => Err("running".into()),
                    },
                },
            )
            .await?;
        if let Some(msg) = failed {
            return Err(AddonError::CiliumJob(msg));
        }
    }
    let ds = disc
        .resolve("apps/v1", "DaemonSet")?
        .object_path(Some(NAMESPACE), "cilium");
    wait_ready(
        client,
        "the Cilium agent DaemonSet",
        &ds,
        daemonset_ready,
        poll,
    )
    .await?;
    let op = disc
        .resolve("apps/v1", "Deployment")?
        .object_path(Some(NAMESPACE), "cilium-operator");
    wait_ready(
        client,
        "the Cilium operator Deployment",
        &op,
        deployment_ready,
        poll,
    )
    .await?;
    // One watch of the Node list for all of them, not one wait after another.
    poll.watch::<_, KubeError, _, _>(client, "/api/v1/nodes", "every node to be Ready", |nodes| {
        let r = every_node_ready(plan, &nodes);
        async move { Ok(r) }
    })
    .await?;
    Ok(created)
}

/// Every planned node's Node object is Ready; else which are not, and why.
fn every_node_ready(plan: &Plan, nodes: &[Value]) -> Result<(), String> {
    let waiting: Vec<String> = plan
        .nodes
        .iter()
        .filter_map(|n| {
            let state = match nodes
                .iter()
                .find(|o| o["metadata"]["name"] == n.name.as_str())
            {
                None => Err("not registered".to_owned()),
                Some(o) => node_ready(o),
            };
            state.err().map(|why| format!("{} {why}", n.name))
        })
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(waiting.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::build(&crate::test_support::homelab()).unwrap()
    }

    #[test]
    fn every_node_must_be_ready_and_the_others_are_named() {
        let plan = plan();
        let node = |name: &str, ready: &str| {
            json!({"metadata": {"name": name},
                "status": {"conditions": [{"type": "Ready", "status": ready, "reason": "KubeletNotReady"}]}})
        };
        let mut nodes: Vec<Value> = plan.nodes.iter().map(|n| node(&n.name, "True")).collect();
        assert_eq!(every_node_ready(&plan, &nodes), Ok(()));
        nodes[1] = node(&plan.nodes[1].name, "False");
        nodes.pop();
        let why = every_node_ready(&plan, &nodes).unwrap_err();
        assert!(
            why.contains(&format!("{} Ready=False", plan.nodes[1].name)),
            "{why}"
        );
        assert!(
            why.contains(&format!("{} not registered", plan.nodes[2].name)),
            "{why}"
        );
        assert!(!why.contains(&plan.nodes[0].name), "{why}");
    }

    #[test]
    fn pins_parse_and_unknown_versions_list_the_supported_ones() {
        assert!(
            pins()
                .installer
                .image
                .starts_with("quay.io/cilium/cilium-cli:")
        );
        assert_eq!(pins().default, crate::profile::default_cilium_version());
        assert_eq!(Cilium::default().version, pins().default);
        assert!(pin("1.18.11").unwrap().agent_digest.starts_with("sha256:"));
        // Offered: the newest 1.18 and a 1.19, both carried inside the cilium-cli image.
        assert!(pin("1.19.5").is_ok());
        let e = pin("1.19.6").unwrap_err().to_string();
        assert!(e.contains("1.18.11, 1.19.5"), "{e}");
    }

    #[test]
    fn cli_image_overrides_are_checked_references() {
        let with = |r: &str| Cilium {
            cli_image: Some(r.into()),
            ..Cilium::default()
        };
        assert_eq!(
            cli_image(&Cilium::default()).unwrap(),
            pins().installer.image
        );
        let digest = format!(
            "quay.io/cilium/cilium-cli:v0.19.7@sha256:{}",
            "a".repeat(64)
        );
        for ok in [
            digest.as_str(),
            "registry.lan:5000/mirror/cilium-cli:v0.19.7",
            "localhost/cilium-cli:v0.19.7",
        ] {
            assert_eq!(cli_image(&with(ok)).unwrap(), ok);
        }
        for bad in [
            "quay.io/cilium/cilium-cli",
            "quay.io/cilium/cilium-cli:v0.19.7@sha256:abc",
            "quay.io/cilium/Cilium-cli:v1",
            "quay.io/cilium/cilium-cli:v1 --privileged",
            "",
        ] {
            let e = cli_image(&with(bad)).unwrap_err().to_string();
            assert!(
                e.contains("addons.cilium.cliImage") && e.contains("fix:"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn values_follow_the_plan_and_round_trip_through_set_args() {
        let plan = plan();
        let links = Links::from_plan(&plan);
        let v = values(&plan, &Cilium::default(), &links).unwrap();
        assert_eq!(v["ipv4NativeRoutingCIDR"], "10.8.32.0/22");
        assert_eq!(v["enableIPv4Masquerade"], false);
        assert_eq!(v["devices"], json!(["eth0", "eth1"]));
        assert!(
            !v["securityContext"]["capabilities"]["ciliumAgent"]
                .as_array()
                .unwrap()
                .contains(&json!("SYS_MODULE"))
        );
        let args = set_args(&v);
        assert!(args.contains(&"devices={eth0,eth1}".to_owned()));
        assert!(args.contains(&"k8sServicePort=7445".to_owned()));
        assert_eq!(parse_set_args(&args), v);
        let narrow = Cilium {
            native_routing_cidr: Some("10.8.32.0/24".parse().unwrap()),
            ..Cilium::default()
        };
        assert!(matches!(
            values(&plan, &narrow, &links),
            Err(AddonError::NativeRoutingCidr { .. })
        ));
    }

    /// One network: Cilium attaches to the one link, named once.
    #[test]
    fn a_one_network_cluster_gives_cilium_one_device() {
        let plan = Plan::build(&crate::test_support::one_network()).unwrap();
        let links = Links::from_plan(&plan);
        assert_eq!(
            (links.management.as_str(), links.workload.as_str()),
            ("eth0", "eth0")
        );
        let v = values(&plan, &Cilium::default(), &links).unwrap();
        assert_eq!(v["devices"], json!(["eth0"]));
        assert_eq!(v["ipv4NativeRoutingCIDR"], "10.244.0.0/22");
    }

    #[test]
    fn job_runs_pinned_cli_on_host_network_and_upgrades_an_existing_release() {
        let plan = plan();
        let v = values(&plan, &Cilium::default(), &Links::from_plan(&plan)).unwrap();
        let image = &pins().installer.image;
        let objs = objects(image, "1.18.11", &v, Verb::Install);
        let pod = &objs[2]["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["containers"][0]["image"], image.as_str());
        let cmd: Vec<String> =
            serde_json::from_value(pod["containers"][0]["command"].clone()).unwrap();
        assert_eq!(&cmd[..4], ["cilium", "install", "--version", "1.18.11"]);
        assert!(cmd.iter().any(|a| a == "routingMode=native"));
        let up = objects(image, "1.18.11", &v, Verb::Upgrade);
        let cmd: Vec<String> = serde_json::from_value(
            up[2]["spec"]["template"]["spec"]["containers"][0]["command"].clone(),
        )
        .unwrap();
        assert_eq!(
            &cmd[..5],
            [
                "cilium",
                "upgrade",
                "--reset-values",
                "--version",
                "1.18.11"
            ]
        );
        // Same inputs, same annotation: an unchanged cluster does not re-run the Job.
        let ann = |o: &[Value]| o[2]["metadata"]["annotations"][SPEC_ANNOTATION].clone();
        assert_eq!(ann(&objs), ann(&up));
        assert_ne!(
            ann(&objs),
            ann(&objects(image, "1.19.5", &v, Verb::Install))
        );
    }
}

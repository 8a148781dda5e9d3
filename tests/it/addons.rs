//! Add-ons against the lab Kubernetes API: from a bootstrapped lab cluster to Cilium
//! and MetalLB ready, every node on its planned pod CIDR, and idempotent re-runs.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use serde_json::{Value, json};
use talos_pve::addons::{self, AddonError, ManifestSource, Options, cilium, metallb};
use talos_pve::jsonschema;
use talos_pve::kube::{self, Client, Kubeconfig, Poll};
use talos_pve::lab::kube::{KubeSimConfig, LabKube, POD_CIDR_FORBIDDEN};
use talos_pve::lab::{Fabric, LabEvent, LabNodeInfo};
use talos_pve::pki::KeyAlg;
use talos_pve::plan::Plan;
use talos_pve::profile::Profile;

use crate::support;

struct Cluster {
    fabric: Fabric,
    /// The lab API's loopback listener.
    local: std::net::SocketAddr,
    /// The admin kubeconfig (PEM fields).
    kubeconfig: Kubeconfig,
    /// What each node's `NodeRunning` event said.
    infos: Vec<LabNodeInfo>,
    lab: LabKube,
    client: Client,
    plan: Plan,
    profile: Profile,
}

async fn cluster(cfg: KubeSimConfig) -> Cluster {
    let profile = support::homelab();
    let plan = Plan::build(&profile).unwrap();
    let ca = support::test_ca(KeyAlg::EcdsaP256, "kubernetes");
    let (admin_pem, admin_key) =
        support::test_client(&ca, KeyAlg::EcdsaP256, &["system:masters"], Some("admin"));

    let fabric = Fabric::new();
    let lab = LabKube::spawn(&fabric, cfg);
    let infos: Vec<LabNodeInfo> = plan
        .nodes
        .iter()
        .map(|n| LabNodeInfo {
            vmid: n.vmid,
            hostname: n.name.clone(),
            machine_type: n.role.as_str().into(),
            cluster_name: plan.cluster.clone(),
            management: n.management.address.addr(),
            internal_ip: n.nic(talos_pve::profile::LinkRole::Workload).address.addr(),
            endpoint: plan.endpoint.clone(),
            kubernetes_ca_crt: ca.crt.clone(),
            kubernetes_ca_key: ca.key_pem.clone(),
            kubelet_version: "v1.36.3".into(),
            boot_id: format!("lab-boot-{}", n.vmid),
            kubelet_stuck: false,
        })
        .collect();
    for i in &infos {
        fabric.emit(LabEvent::NodeRunning(i.clone()));
    }
    let endpoint: Ipv4Addr = "10.8.16.20".parse().unwrap();
    fabric.emit(LabEvent::EtcdBootstrapped {
        node: plan.bootstrap_node.clone(),
        endpoint,
    });
    let local = lab
        .serving(Duration::from_secs(5))
        .await
        .expect("lab API serves");
    assert!(local.ip().is_loopback());
    let kc = Kubeconfig {
        server: plan.endpoint.clone(),
        ca_pem: ca.crt.clone(),
        cert_pem: admin_pem,
        key_pem: admin_key.into(),
    };
    let kubeconfig = Kubeconfig::parse(&kc.render(&plan.cluster), "test kubeconfig").unwrap();
    let client = Client::new(&kubeconfig, &fabric.addresses).await.unwrap();
    Cluster {
        fabric,
        local,
        kubeconfig,
        infos,
        lab,
        client,
        plan,
        profile,
    }
}

fn fast_poll(timeout_ms: u64) -> Poll {
    Poll {
        min: Duration::from_millis(10),
        max: Duration::from_millis(100),
        timeout: Duration::from_millis(timeout_ms),
    }
}

fn options(c: &Cluster) -> Options {
    let mut o = Options::new(
        &c.plan,
        ManifestSource::Embedded,
        c.fabric.addresses.clone(),
    );
    o.poll = fast_poll(20_000);
    o.webhook_retry = Poll {
        min: Duration::from_millis(20),
        max: Duration::from_millis(100),
        timeout: Duration::from_secs(10),
    };
    o
}

fn find<'a>(objs: &'a [Value], kind: &str, ns: &str, name: &str) -> Option<&'a Value> {
    objs.iter().find(|o| {
        o["kind"] == kind
            && o["metadata"]["name"] == name
            && o["metadata"]["namespace"].as_str().unwrap_or_default() == ns
    })
}

/// Every leaf of `want` is in `got` with the same value.
fn contains(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Object(g), Value::Object(w)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|x| contains(x, v))),
        (g, w) => g == w,
    }
}

/// Whether the Cilium agent runs BPF host routing with this `cilium-config`: it
/// falls back to legacy host routing only when asked, without kube-proxy
/// replacement, or with iptables masquerading (cilium/cilium agent,
/// `finishKubeProxyReplacementInit`).
fn bpf_host_routing(cfg: &Value) -> bool {
    let on = |k: &str| cfg[k].as_str() == Some("true");
    let iptables_masquerade = on("enable-ipv4-masquerade") && !on("enable-bpf-masquerade");
    !on("enable-host-legacy-routing") && on("kube-proxy-replacement") && !iptables_masquerade
}

fn versions(objs: &[Value]) -> BTreeMap<String, Value> {
    objs.iter()
        .map(|o| {
            (
                format!(
                    "{}/{}/{}",
                    o["kind"], o["metadata"]["namespace"], o["metadata"]["name"]
                ),
                o["metadata"]["resourceVersion"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn lab_cluster_converges_and_a_second_run_changes_nothing() {
    let (
        Some(values_schema),
        Some(values_yaml),
        Some(expected),
        Some(upstream),
        Some(pool_crd),
        Some(l2_crd),
    ) = (
        support::reference("data/kubernetes/cilium-chart-1.18.11/values.schema.json"),
        support::reference("data/kubernetes/cilium-chart-1.18.11/values.yaml"),
        support::reference("data/kubernetes/cni-expected-objects.json"),
        support::reference("data/kubernetes/metallb-native-v0.16.1.yaml"),
        support::reference("data/kubernetes/metallb-v0.16.1-crd-ipaddresspools.metallb.io.yaml"),
        support::reference("data/kubernetes/metallb-v0.16.1-crd-l2advertisements.metallb.io.yaml"),
    )
    else {
        return;
    };
    let c = cluster(KubeSimConfig::fast()).await;
    let opts = options(&c);
    let report = addons::install(&c.client, &c.plan, &c.profile.addons, &opts)
        .await
        .unwrap();
    let mut patched = report.pod_cidrs_patched.clone();
    patched.sort();
    assert_eq!(patched, ["talos-k8s-01", "talos-k8s-02", "talos-k8s-03"]);
    assert!(report.cilium_job_created);
    assert_eq!(report.metallb_objects, 26);

    let objs = c.lab.objects();
    for n in &c.plan.nodes {
        let node = find(&objs, "Node", "", &n.name).unwrap();
        assert_eq!(node["spec"]["podCIDR"], n.pod_cidr.to_string());
        assert_eq!(node["spec"]["podCIDRs"], json!([n.pod_cidr.to_string()]));
        kube::node_ready(node).unwrap();
    }
    kube::daemonset_ready(find(&objs, "DaemonSet", "kube-system", "cilium").unwrap()).unwrap();
    kube::deployment_ready(find(&objs, "Deployment", "kube-system", "cilium-operator").unwrap())
        .unwrap();
    kube::deployment_ready(find(&objs, "Deployment", "metallb-system", "controller").unwrap())
        .unwrap();

    // The install Job runs the pinned cilium-cli with values that satisfy the schema of
    // the chart it installs (the default version, 1.18.11).
    assert_eq!(c.profile.addons.cilium.version, "1.18.11");
    let job = find(&objs, "Job", "kube-system", cilium::JOB).unwrap();
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], cilium::pins().installer.image.as_str());
    let cmd: Vec<String> = serde_json::from_value(container["command"].clone()).unwrap();
    let sets: Vec<String> = cmd
        .windows(2)
        .filter(|w| w[0] == "--set")
        .map(|w| w[1].clone())
        .collect();
    let values = cilium::parse_set_args(&sets);
    let s: Value = serde_json::from_str(&std::fs::read_to_string(values_schema).unwrap()).unwrap();
    let issues = jsonschema::validate(&s, &values);
    // `devices` is read by the chart templates but only commented in values.yaml.
    let real: Vec<_> = issues
        .iter()
        .filter(|i| !(i.unknown && i.path == "devices"))
        .collect();
    assert!(
        real.is_empty(),
        "Cilium values violate values.schema.json: {real:?}"
    );
    // Image digests are the chart's own, and the agent runs by digest.
    let vy = std::fs::read_to_string(values_yaml).unwrap();
    let pin = cilium::pin("1.18.11").unwrap();
    for d in [
        &pin.agent_digest,
        &pin.operator_generic_digest,
        &pin.envoy_digest,
    ] {
        assert!(
            vy.contains(d.as_str()),
            "{d} is not in the chart's values.yaml"
        );
    }
    let ds = find(&objs, "DaemonSet", "kube-system", "cilium").unwrap();
    assert_eq!(
        ds["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("quay.io/cilium/cilium:v1.18.11@{}", pin.agent_digest)
    );
    // cilium-cli created what the chart renders for these values.
    let exp: Value = serde_json::from_str(&std::fs::read_to_string(expected).unwrap()).unwrap();
    // The list is for chart 1.19.6; 1.18 has no ztunnel Role/RoleBinding.
    for o in exp["cilium-1.19.6-talos-native"]["objects"]
        .as_array()
        .unwrap()
    {
        let (kind, ns, name) = (
            o[1].as_str().unwrap(),
            o[2].as_str().unwrap(),
            o[3].as_str().unwrap(),
        );
        if name.ends_with("-ztunnel") {
            assert!(
                find(&objs, kind, ns, name).is_none(),
                "{kind} {name} is 1.19 only"
            );
            continue;
        }
        assert!(
            find(&objs, kind, ns, name).is_some(),
            "missing {kind} {ns}/{name}"
        );
    }
    let cfg = &find(&objs, "ConfigMap", "kube-system", "cilium-config").unwrap()["data"];
    assert_eq!(
        (
            cfg["routing-mode"].as_str(),
            cfg["ipam"].as_str(),
            cfg["devices"].as_str()
        ),
        (Some("native"), Some("kubernetes"), Some("eth0 eth1"))
    );
    // The Talos configs forward CoreDNS to the host resolver, which BPF host routing
    // breaks: the agent must run with legacy host routing.
    assert!(
        !bpf_host_routing(cfg),
        "BPF host routing on: pods cannot resolve external names through the host DNS"
    );

    // MetalLB is the upstream manifest, object for object.
    let up = std::fs::read(upstream).unwrap();
    assert_eq!(
        metallb::sha256_hex(&up),
        metallb::pin("0.16.1").unwrap().sha256
    );
    let docs = metallb::parse(&up).unwrap();
    assert_eq!(docs.len(), 26);
    for d in &docs {
        let (kind, ns, name) = (
            d["kind"].as_str().unwrap(),
            d["metadata"]["namespace"].as_str().unwrap_or_default(),
            d["metadata"]["name"].as_str().unwrap(),
        );
        let got =
            find(&objs, kind, ns, name).unwrap_or_else(|| panic!("{kind} {name} not applied"));
        let mut want = d.clone();
        want["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("creationTimestamp");
        want.as_object_mut().unwrap().remove("status");
        assert!(
            contains(got, &want),
            "{kind} {name} differs from the upstream manifest"
        );
    }
    // The pool and advertisement satisfy the real CRD schemas.
    for (kind, crd) in [("IPAddressPool", pool_crd), ("L2Advertisement", l2_crd)] {
        let crd: Value = serde_saphyr::from_str(&std::fs::read_to_string(crd).unwrap()).unwrap();
        let s = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let cr = find(&objs, kind, "metallb-system", "default").unwrap();
        let issues: Vec<_> = jsonschema::validate(s, cr)
            .into_iter()
            .filter(|i| !i.path.starts_with("metadata"))
            .collect();
        assert!(issues.is_empty(), "{kind}: {issues:?}");
        assert_eq!(cr["metadata"]["managedFields"][0]["manager"], "talos-pve");
    }
    let pool = find(&objs, "IPAddressPool", "metallb-system", "default").unwrap();
    assert_eq!(pool["spec"]["addresses"], json!(["10.8.31.10-10.8.31.200"]));
    let l2 = find(&objs, "L2Advertisement", "metallb-system", "default").unwrap();
    assert_eq!(l2["spec"]["interfaces"], json!(["eth1"]));
    assert!(objs.iter().filter(|o| o["kind"] == "Node").all(|n| {
        n["metadata"]["labels"]
            .get(metallb::EXCLUDE_LABEL)
            .is_none()
    }));

    // Second run: nothing is written.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (w1, rv1) = (c.lab.writes(), versions(&c.lab.objects()));
    let again = addons::install(&c.client, &c.plan, &c.profile.addons, &opts)
        .await
        .unwrap();
    assert!(again.pod_cidrs_patched.is_empty());
    assert!(!again.cilium_job_created);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(versions(&c.lab.objects()), rv1);
    assert_eq!(c.lab.writes(), w1);

    // Inspection dump, and the API state survives an etcd snapshot/restore.
    let dir = tempfile::tempdir().unwrap();
    let n = c.lab.dump(dir.path()).unwrap();
    assert_eq!(n, objs.len());
    assert!(
        dir.path()
            .join("metallb.io/ipaddresspools/metallb-system/default.yaml")
            .exists()
    );
    let snap = c.fabric.etcd.snapshot();
    c.fabric.etcd.clear();
    assert!(
        c.client
            .get("/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/default")
            .await
            .unwrap()
            .is_none()
    );
    c.fabric.etcd.restore(&snap, false).unwrap();
    let ready_is = |want: &'static str| {
        let c = &c;
        async move {
            fast_poll(5_000)
                .until(&format!("talos-k8s-03 Ready={want}"), || async {
                    let n = c
                        .client
                        .get("/api/v1/nodes/talos-k8s-03")
                        .await?
                        .unwrap_or_default();
                    let s = n["status"]["conditions"][0]["status"].clone();
                    Ok(if s == want {
                        Ok(())
                    } else {
                        Err(s.to_string())
                    })
                })
                .await
                .unwrap()
        }
    };
    // A stopped VM's node goes Unknown, and comes back Ready when it runs again.
    c.fabric.emit(LabEvent::VmStopped {
        vmid: c.infos[2].vmid,
    });
    ready_is("Unknown").await;
    c.fabric.emit(LabEvent::NodeRunning(c.infos[2].clone()));
    ready_is("True").await;
    let back = c
        .client
        .get("/apis/metallb.io/v1beta1/namespaces/metallb-system/ipaddresspools/default")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back["spec"], pool["spec"]);
}

/// Cilium and the pod CIDRs, so MetalLB's workloads can roll out.
async fn cni_without_metallb(c: &Cluster, opts: &Options) {
    let mut no_lb = c.profile.addons.clone();
    no_lb.metallb = None;
    addons::install(&c.client, &c.plan, &no_lb, opts)
        .await
        .unwrap();
}

/// The pinned MetalLB release manifest, applied.
async fn apply_metallb_manifest(c: &Cluster, opts: &Options) {
    let docs = metallb::parse(
        &metallb::manifest("0.16.1", &ManifestSource::Embedded, &c.fabric.addresses)
            .await
            .unwrap(),
    )
    .unwrap();
    addons::apply_all(&c.client, docs, &opts.poll)
        .await
        .unwrap();
}

/// Until MetalLB's webhook Service has an endpoint.
async fn webhook_endpoint(c: &Cluster, opts: &Options) {
    let slices = "/apis/discovery.k8s.io/v1/namespaces/metallb-system/endpointslices";
    opts.poll
        .until("webhook endpoint", || async {
            Ok(if c.client.list(slices).await?.is_empty() {
                Err("none".into())
            } else {
                Ok(())
            })
        })
        .await
        .unwrap();
}

/// The webhook's serving grace runs from its endpoint on the server's own clock: a
/// client that writes only after the grace is accepted at once (the lab used to start
/// the grace at the first write that asked).
#[tokio::test]
async fn a_webhook_serves_once_its_grace_after_the_endpoint_is_over() {
    let mut cfg = KubeSimConfig::fast();
    cfg.webhook_grace = Duration::from_millis(300);
    let c = cluster(cfg).await;
    let opts = options(&c);
    cni_without_metallb(&c, &opts).await;
    apply_metallb_manifest(&c, &opts).await;
    webhook_endpoint(&c, &opts).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let m = c.profile.addons.metallb.clone().unwrap();
    let crs = metallb::resources(&m, &opts.links);
    let disc = kube::Discovery::run(&c.client).await.unwrap();
    c.client
        .apply(disc.for_object(&crs[0]).unwrap(), &crs[0])
        .await
        .unwrap();
}

#[tokio::test]
async fn webhook_race_and_slow_crd_are_retried_within_bounds() {
    let mut cfg = KubeSimConfig::fast();
    cfg.webhook_grace = Duration::from_millis(800);
    cfg.slow_crds = vec![(
        "l2advertisements.metallb.io".into(),
        Duration::from_millis(600),
    )];
    cfg.node_labels
        .insert(metallb::EXCLUDE_LABEL.into(), String::new());
    let c = cluster(cfg).await;
    let opts = options(&c);
    cni_without_metallb(&c, &opts).await;

    // Applying the manifest waits for the slow CRD before anything after it.
    let started = std::time::Instant::now();
    apply_metallb_manifest(&c, &opts).await;
    assert!(started.elapsed() >= Duration::from_millis(600));
    let crd = c
        .client
        .get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/l2advertisements.metallb.io")
        .await
        .unwrap()
        .unwrap();
    kube::crd_established(&crd).unwrap();

    // Endpoint ready but the webhook not serving yet: the API answers like the real one.
    webhook_endpoint(&c, &opts).await;
    let m = c.profile.addons.metallb.clone().unwrap();
    let crs = metallb::resources(&m, &opts.links);
    let disc = kube::Discovery::run(&c.client).await.unwrap();
    let e = c
        .client
        .apply(disc.for_object(&crs[0]).unwrap(), &crs[0])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(500));
    assert!(
        e.message()
            .unwrap()
            .contains("failed calling webhook \"ipaddresspoolvalidationwebhook.metallb.io\""),
        "{e}"
    );

    // The installer retries through it, bounded, and removes the exclude label.
    let (applied, unlabelled) = metallb::install(&c.client, &c.plan, &m, &opts)
        .await
        .unwrap();
    assert_eq!(applied, 26);
    assert_eq!(unlabelled.len(), 3);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        c.client
            .get("/apis/metallb.io/v1beta1/namespaces/metallb-system/l2advertisements/default")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn foreign_pod_cidr_stops_the_run_with_the_remedy() {
    let c = cluster(KubeSimConfig::fast()).await;
    let path = "/api/v1/nodes/talos-k8s-02";
    fast_poll(5_000)
        .until("node", || async {
            Ok(c.client
                .get(path)
                .await?
                .map(|_| ())
                .ok_or_else(|| "absent".to_owned()))
        })
        .await
        .unwrap();
    // Someone else (a controller-manager allocator) set a CIDR first.
    c.client
        .merge_patch(
            path,
            &json!({"spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"]}}),
        )
        .await
        .unwrap();
    // The lab enforces immutability like the real API server.
    let e = c
        .client
        .merge_patch(
            path,
            &addons::pod_cidr::patch("10.8.33.0/24".parse().unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(422));
    assert!(e.message().unwrap().contains(POD_CIDR_FORBIDDEN), "{e}");
    let err = addons::install(&c.client, &c.plan, &c.profile.addons, &options(&c))
        .await
        .unwrap_err();
    let AddonError::PodCidrConflict {
        node,
        current,
        planned,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(
        (
            node.as_str(),
            current.as_str(),
            planned.to_string().as_str()
        ),
        ("talos-k8s-02", "10.244.1.0/24", "10.8.33.0/24")
    );
    let msg = err.to_string();
    assert!(
        msg.contains("kubectl delete node talos-k8s-02") && msg.contains("podCIDR: 10.244.1.0/24"),
        "{msg}"
    );
}

#[tokio::test]
async fn cilium_job_with_an_unpinned_image_fails_in_the_lab() {
    // Long enough that the installer finds the tampered Job still running.
    let mut cfg = KubeSimConfig::fast();
    cfg.job_run = Duration::from_millis(1000);
    let c = cluster(cfg).await;
    let opts = options(&c);
    addons::pod_cidr::assign(&c.client, &c.plan, &opts.poll)
        .await
        .unwrap();
    let values = cilium::values(&c.plan, &c.profile.addons.cilium, &opts.links).unwrap();
    let image = &cilium::pins().installer.image;
    let mut objs = cilium::objects(image, "1.18.11", &values, cilium::Verb::Install);
    objs[2]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("quay.io/cilium/cilium-cli:latest");
    addons::apply_all(&c.client, objs, &opts.poll)
        .await
        .unwrap();
    // The Job claims to be talos-pve's (same annotation) but runs another image: the
    // lab refuses to "pull" it, and the installer reports the failed Job.
    let err = cilium::install(&c.client, &c.plan, &c.profile.addons.cilium, &opts)
        .await
        .unwrap_err();
    let AddonError::CiliumJob(msg) = &err else {
        panic!("{err}")
    };
    assert!(msg.contains(&cilium::pins().installer.image), "{msg}");
    assert!(
        err.to_string()
            .contains("kubectl -n kube-system logs job/cilium-install")
    );
}

/// The cilium-cli command of the install Job now in the lab.
fn job_command(c: &Cluster) -> Vec<String> {
    let job = c.lab.objects();
    let job = find(&job, "Job", "kube-system", cilium::JOB).unwrap();
    serde_json::from_value(job["spec"]["template"]["spec"]["containers"][0]["command"].clone())
        .unwrap()
}

#[tokio::test]
async fn changed_cilium_values_go_through_upgrade_not_a_second_install() {
    let c = cluster(KubeSimConfig::fast()).await;
    let opts = options(&c);
    addons::pod_cidr::assign(&c.client, &c.plan, &opts.poll)
        .await
        .unwrap();
    assert!(
        cilium::install(&c.client, &c.plan, &c.profile.addons.cilium, &opts)
            .await
            .unwrap()
    );
    assert_eq!(job_command(&c)[1], "install");
    // A profile change after the first install: the lab, like helm, refuses a second
    // `cilium install` over the release; the installer must upgrade it.
    let mut wider = c.profile.addons.cilium.clone();
    wider.native_routing_cidr = Some("10.8.0.0/16".parse().unwrap());
    let created = cilium::install(&c.client, &c.plan, &wider, &opts)
        .await
        .unwrap();
    assert!(created);
    assert_eq!(&job_command(&c)[1..3], ["upgrade", "--reset-values"]);
    let objs = c.lab.objects();
    let cfg = &find(&objs, "ConfigMap", "kube-system", "cilium-config").unwrap()["data"];
    assert_eq!(cfg["ipv4-native-routing-cidr"], "10.8.0.0/16");
    let mut revisions: Vec<(String, String)> = objs
        .iter()
        .filter(|o| o["type"] == "helm.sh/release.v1")
        .map(|o| {
            let l = &o["metadata"]["labels"];
            (
                l["version"].as_str().unwrap().to_owned(),
                l["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    revisions.sort();
    assert_eq!(
        revisions,
        [
            ("1".to_owned(), "superseded".to_owned()),
            ("2".to_owned(), "deployed".to_owned())
        ]
    );

    // What the old installer did: `install` again. The lab fails the Job as cilium-cli does.
    let values = cilium::values(&c.plan, &c.profile.addons.cilium, &opts.links).unwrap();
    let image = &cilium::pins().installer.image;
    let objs = cilium::objects(image, "1.18.11", &values, cilium::Verb::Install);
    let msg = run_job(&c, objs, &opts).await;
    assert!(
        msg.contains("cannot reuse a name that is still in use"),
        "{msg}"
    );
}

/// Replace the install Job with `objs`' and wait for it to fail; its message.
async fn run_job(c: &Cluster, objs: Vec<Value>, opts: &Options) -> String {
    let path = format!("/apis/batch/v1/namespaces/kube-system/jobs/{}", cilium::JOB);
    c.client.delete(&path).await.unwrap();
    addons::apply_all(&c.client, objs, &opts.poll)
        .await
        .unwrap();
    fast_poll(5_000)
        .until("the Job to fail", || async {
            let j = c.client.get(&path).await?.unwrap_or_default();
            let cond = &j["status"]["conditions"][0];
            Ok(if cond["type"] == "Failed" {
                Ok(cond["message"].as_str().unwrap_or_default().to_owned())
            } else {
                Err(format!("{cond}"))
            })
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_chart_the_cli_image_does_not_carry_is_refused() {
    let c = cluster(KubeSimConfig::fast()).await;
    let opts = options(&c);
    // 1.19.6 (the old default) is not inside cilium-cli v0.19.7: it would be downloaded
    // from helm.cilium.io without a checksum. talos-pve no longer offers it ...
    let mut old = c.profile.addons.cilium.clone();
    old.version = "1.19.6".into();
    let e = cilium::install(&c.client, &c.plan, &old, &opts)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("1.18.11, 1.19.5") && e.contains("fix:"), "{e}");
    // ... and the lab's cilium-cli refuses to fetch it.
    let values = cilium::values(&c.plan, &c.profile.addons.cilium, &opts.links).unwrap();
    let image = &cilium::pins().installer.image;
    let objs = cilium::objects(image, "1.19.6", &values, cilium::Verb::Install);
    let msg = run_job(&c, objs, &opts).await;
    assert!(msg.contains("helm.cilium.io/cilium-1.19.6.tgz"), "{msg}");
}

#[test]
fn every_offered_cilium_version_satisfies_its_chart_schema() {
    // 1.19.5's own schema is not among the references; 1.19.6's is the nearest.
    let (Some(s118), Some(s119), Some(v118), Some(v119)) = (
        support::reference("data/kubernetes/cilium-chart-1.18.11/values.schema.json"),
        support::reference("data/kubernetes/cilium-chart-1.19.6/values.schema.json"),
        support::reference("data/kubernetes/cilium-chart-1.18.11/values.yaml"),
        support::reference("data/kubernetes/cilium-chart-1.19.6/values.yaml"),
    ) else {
        return;
    };
    let profile = support::homelab();
    let plan = Plan::build(&profile).unwrap();
    let links = addons::Links::from_plan(&plan);
    let offered: Vec<&String> = cilium::pins().versions.keys().collect();
    assert_eq!(offered, ["1.18.11", "1.19.5"]);
    for (version, schema, values_yaml) in [("1.18.11", s118, v118), ("1.19.5", s119, v119)] {
        let mut c = profile.addons.cilium.clone();
        c.version = version.into();
        let values = cilium::values(&plan, &c, &links).unwrap();
        let s: Value = serde_json::from_str(&std::fs::read_to_string(schema).unwrap()).unwrap();
        let real: Vec<_> = jsonschema::validate(&s, &values)
            .into_iter()
            .filter(|i| !(i.unknown && i.path == "devices"))
            .collect();
        assert!(real.is_empty(), "{version}: {real:?}");
        // The Job never downloads: the chart is the one inside the image (README pins).
        let pin = cilium::pin(version).unwrap();
        assert_eq!(pin.chart_sha256.len(), 64);
        if version == "1.18.11" {
            let vy = std::fs::read_to_string(values_yaml).unwrap();
            assert!(vy.contains(&pin.agent_digest) && vy.contains(&pin.operator_generic_digest));
        }
    }
    if let Some(readme) = support::reference("README.md") {
        let readme = std::fs::read_to_string(readme).unwrap();
        for v in offered {
            let sha = &cilium::pin(v).unwrap().chart_sha256;
            assert!(
                readme.contains(sha.as_str()),
                "{v}: {sha} not in the reference"
            );
        }
    }
}

/// A self-signed ECDSA certificate and key (PEM), for "wrong CA" cases.
fn stranger(org: &str) -> (String, String) {
    let ca = support::test_ca(KeyAlg::EcdsaP256, org);
    (ca.crt, ca.key_pem)
}

#[tokio::test]
async fn kube_client_pins_the_kubeconfig_ca_and_server_name() {
    use secrecy::ExposeSecret;
    let c = cluster(KubeSimConfig::fast()).await;
    assert!(
        c.client
            .get("/api/v1/namespaces/kube-system")
            .await
            .unwrap()
            .is_some()
    );
    let with = |server: &str, ca: &str, cert: &str, key: &str| Kubeconfig {
        server: server.into(),
        ca_pem: ca.into(),
        cert_pem: cert.into(),
        key_pem: key.to_owned().into(),
    };
    let k = &c.kubeconfig;
    let key = k.key_pem.expose_secret();
    // A server certificate from another CA is refused.
    let (other_ca, _) = stranger("other");
    let bad = Client::new(
        &with(&k.server, &other_ca, &k.cert_pem, key),
        &c.fabric.addresses,
    )
    .await
    .unwrap();
    let e = bad.get("/api").await.unwrap_err();
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    // The right CA but an address the certificate does not name is refused too.
    c.fabric
        .addresses
        .map("10.8.16.99:6443".parse().unwrap(), c.local);
    let wrong = Client::new(
        &with("https://10.8.16.99:6443", &k.ca_pem, &k.cert_pem, key),
        &c.fabric.addresses,
    )
    .await
    .unwrap();
    let e = wrong.get("/api").await.unwrap_err();
    assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
    // A client certificate the cluster CA did not issue is rejected by the server.
    let (cert, ckey) = stranger("intruder");
    let anon = Client::new(
        &with(&k.server, &k.ca_pem, &cert, &ckey),
        &c.fabric.addresses,
    )
    .await
    .unwrap();
    let e = anon.get("/api").await.unwrap_err();
    assert!(format!("{e:?}").contains("AlertReceived"), "{e:?}");
    // The lab never dials an unmapped address.
    let e = Client::new(
        &with("https://10.8.16.77:6443", &k.ca_pem, &k.cert_pem, key),
        &c.fabric.addresses,
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("no loopback mapping"), "{e}");
}

#[tokio::test]
async fn user_objects_are_applied_and_survive_an_etcd_snapshot() {
    let c = cluster(KubeSimConfig::fast()).await;
    let objs = vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "precious", "namespace": "apps"}, "data": {"k": "v"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "apps"}}),
    ];
    // A namespaced object needs its namespace, as on a real API server.
    let disc = kube::Discovery::run(&c.client).await.unwrap();
    let e = c
        .client
        .apply(disc.for_object(&objs[0]).unwrap(), &objs[0])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(404));
    addons::apply_all(&c.client, objs, &fast_poll(5_000))
        .await
        .unwrap();
    let path = "/api/v1/namespaces/apps/configmaps/precious";
    let snap = c.fabric.etcd.snapshot();
    c.client.delete(path).await.unwrap();
    assert!(c.client.get(path).await.unwrap().is_none());
    c.fabric.etcd.restore(&snap, false).unwrap();
    let cm = c.client.get(path).await.unwrap().unwrap();
    assert_eq!(cm["data"]["k"], "v");
    assert_eq!(cm["metadata"]["managedFields"][0]["manager"], "talos-pve");
}

/// The readiness gates wait through watches: a change is seen at once, where a poll
/// with these intervals would sleep ten seconds first.
#[tokio::test(flavor = "multi_thread")]
async fn a_watched_wait_wakes_on_the_change_not_on_a_poll_interval() {
    let c = cluster(KubeSimConfig::fast()).await;
    let slow = talos_pve::kube::Poll {
        min: Duration::from_secs(10),
        max: Duration::from_secs(10),
        timeout: Duration::from_secs(15),
    };
    let path = "/api/v1/namespaces/default/configmaps/flag";
    let cm = |v: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "flag", "namespace": "default"}, "data": {"v": v}})
    };
    let res = talos_pve::kube::Resource {
        group: String::new(),
        version: "v1".into(),
        kind: "ConfigMap".into(),
        plural: "configmaps".into(),
        namespaced: true,
    };
    c.client.apply(&res, &cm("no")).await.unwrap();
    let writer = {
        let (client, res) = (c.client.clone(), res.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            client.apply(&res, &cm("still no")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            client.apply(&res, &cm("yes")).await.unwrap();
        })
    };
    let start = std::time::Instant::now();
    let seen = slow
        .watch_object::<_, talos_pve::kube::KubeError, _>(&c.client, path, "the flag", |o| match o
            .and_then(|o| o["data"]["v"].as_str())
        {
            Some("yes") => Ok("yes".to_owned()),
            other => Err(format!("{other:?}")),
        })
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(seen, "yes");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );

    // Timed out: the last state is reported.
    let quick = talos_pve::kube::Poll {
        timeout: Duration::from_millis(300),
        ..slow
    };
    let e = quick
        .watch_object::<(), talos_pve::kube::KubeError, _>(&c.client, path, "never", |_| {
            Err("still waiting".into())
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("still waiting"), "{e}");
}

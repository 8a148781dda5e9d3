//! Integration tests: the Talos API client and stages against lab Talos nodes on
//! loopback. Node creation is driven by emitting `LabEvent::VmStarted` directly.
//! The fixture makes its CAs and admin certificate with the real `pki` generator
//! and writes a minimal machine config by hand.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use secrecy::SecretString;
use talos_pve::lab::talos::{Faults, LabTalos, LabTalosConfig, LinkNames, Phase};
use talos_pve::lab::{Fabric, LabEvent, LabNic, LabVm};
use talos_pve::pki::KeyAlg;
use talos_pve::talos::api::*;
use talos_pve::talos::cidata;

use crate::support::{TestCa, test_ca, test_client};

// ---------------------------------------------------------------- fixture

fn client_cert(ca: &TestCa, role: &str) -> Credentials {
    let (crt, key) = test_client(ca, KeyAlg::Ed25519, &[role], None);
    Credentials {
        ca_pem: ca.crt.clone(),
        crt_pem: crt,
        key_pem: SecretString::from(key),
    }
}

struct Cluster {
    os: TestCa,
    k8s: TestCa,
    admin: Credentials,
    nodes: Vec<NodeFx>,
}

#[derive(Clone)]
struct NodeFx {
    name: String,
    vm: LabVm,
}

impl NodeFx {
    fn target(&self) -> Target {
        Target::new(&self.name, self.mgmt())
    }
    fn mgmt(&self) -> IpAddr {
        self.vm.nics[0].address.unwrap().addr().into()
    }
}

fn cluster(n: usize, first_vmid: u32) -> Cluster {
    talos_pve::tls::install_provider();
    let os = test_ca(KeyAlg::Ed25519, "talos");
    let k8s = test_ca(KeyAlg::EcdsaP256, "kubernetes");
    let admin = client_cert(&os, "os:admin");
    let nodes = (0..n)
        .map(|i| {
            let host = 20 + i as u8 + (first_vmid % 100) as u8;
            let nic = |index: u8, vlan: u16, prefix: u8| LabNic {
                index,
                mac: format!("BC:24:11:00:{vlan:02X}:{host:02X}"),
                vlan: Some(vlan),
                address: Some(format!("10.8.{vlan}.{host}/{prefix}").parse().unwrap()),
                gateway: None,
            };
            let name = format!("talos-k8s-{:02}", i + 1);
            NodeFx {
                name: name.clone(),
                vm: LabVm {
                    vmid: first_vmid + i as u32,
                    host: "pve1".into(),
                    name,
                    nics: vec![nic(0, 16, 24), nic(1, 28, 22)],
                    media: Vec::new(),
                },
            }
        })
        .collect();
    Cluster {
        os,
        k8s,
        admin,
        nodes,
    }
}

impl Cluster {
    fn endpoint(&self) -> String {
        format!("https://{}:6443", self.nodes[0].mgmt())
    }

    fn config(&self, n: &NodeFx) -> Vec<u8> {
        self.config_with_macs(n, &[&n.vm.nics[0].mac, &n.vm.nics[1].mac])
    }

    fn config_with_macs(&self, n: &NodeFx, macs: &[&str]) -> Vec<u8> {
        let b = |s: &str| STANDARD.encode(s);
        let mut y = format!(
            "version: v1alpha1\nmachine:\n  type: controlplane\n  token: abc.def\n  ca:\n    crt: {}\n    key: {}\n  certSANs: []\n  kubelet:\n    nodeIP:\n      validSubnets: [10.8.28.0/22]\ncluster:\n  clusterName: lab\n  controlPlane:\n    endpoint: {}\n  ca:\n    crt: {}\n    key: {}\n",
            b(&self.os.crt),
            b(&self.os.key_pem),
            self.endpoint(),
            b(&self.k8s.crt),
            b(&self.k8s.key_pem),
        );
        for (alias, mac) in ["mgmt", "work"].iter().zip(macs) {
            y.push_str(&format!(
                "---\napiVersion: v1alpha1\nkind: LinkAliasConfig\nname: {alias}\nselector:\n  match: mac(link.permanent_addr) == \"{}\"\n",
                mac.to_lowercase()
            ));
        }
        y.push_str(&format!(
            "---\napiVersion: v1alpha1\nkind: HostnameConfig\nhostname: {}\n",
            n.name
        ));
        y.into_bytes()
    }

    /// Power every VM on with its `cidata` volume (its config) in the drive.
    fn start(&self, fabric: &Fabric) {
        for n in &self.nodes {
            fabric.emit(LabEvent::VmStarted(self.with_cidata(n, &self.config(n))));
        }
    }

    /// Power every VM on without a `cidata` volume: maintenance mode.
    fn start_bare(&self, fabric: &Fabric) {
        for n in &self.nodes {
            fabric.emit(LabEvent::VmStarted(n.vm.clone()));
        }
    }

    fn with_cidata(&self, n: &NodeFx, config: &[u8]) -> LabVm {
        let mut vm = n.vm.clone();
        let img = cidata::image(&n.name, &vm.vmid.to_string(), config).unwrap();
        vm.media = vec![STANDARD.encode(img)];
        vm
    }
}

/// Wait (up to 2 s) for a node to reach `phase`; the phase it is in then.
async fn reach_phase(lab: &LabTalos, vmid: u32, phase: Phase) -> Option<Phase> {
    for _ in 0..200 {
        if lab.phase(vmid) == Some(phase) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    lab.phase(vmid)
}

/// The message of a `StageFailed` error of `stage` (any other error fails the test).
fn failed_in(e: TalosError, stage: Stage) -> String {
    let msg = e.to_string();
    assert!(
        matches!(&e, TalosError::StageFailed { stage: s, .. } if *s == stage),
        "expected a {stage:?} stage failure: {msg}"
    );
    msg
}

/// The message of a `StageTimeout` error of `stage` (any other error fails the test).
fn timed_out_in(e: TalosError, stage: Stage) -> String {
    let msg = e.to_string();
    assert!(
        matches!(&e, TalosError::StageTimeout { stage: s, .. } if *s == stage),
        "expected a {stage:?} stage timeout: {msg}"
    );
    msg
}

fn fast_timeouts() -> Timeouts {
    Timeouts::uniform(
        Duration::from_secs(10),
        Duration::from_millis(10),
        Duration::from_millis(100),
    )
}

fn short_timeouts(d: Duration) -> Timeouts {
    Timeouts::uniform(d, Duration::from_millis(10), Duration::from_millis(50))
}

/// One full bring-up pass, as the orchestrator runs it once the VMs booted with
/// their `cidata` volumes.
async fn bring_up(c: &Cluster, stages: &Stages) -> (BootstrapOutcome, FetchedKubeconfig) {
    for n in &c.nodes {
        let tag = stages.wait_installed(&n.target(), &c.admin).await.unwrap();
        assert_eq!(tag, "v1.13.9");
    }
    let boot = c.nodes[0].target();
    let b = stages.bootstrap(&boot, &c.admin).await.unwrap();
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    stages
        .wait_etcd_members(&boot, &c.admin, &names)
        .await
        .unwrap();
    let k = stages
        .fetch_kubeconfig(&boot, &c.admin, None)
        .await
        .unwrap();
    (b, k)
}

/// `n` nodes from `vmid` on, booted with their `cidata` in a fresh lab, with fast stages.
fn started(n: usize, vmid: u32, cfg: LabTalosConfig) -> (Cluster, Fabric, LabTalos, Stages) {
    let c = cluster(n, vmid);
    let fabric = Fabric::new();
    let lab = LabTalos::start(&fabric, cfg);
    c.start(&fabric);
    let stages = Stages::new(fabric.addresses.clone(), fast_timeouts());
    (c, fabric, lab, stages)
}

async fn running_cluster(
    n: usize,
    vmid: u32,
    cfg: LabTalosConfig,
) -> (Cluster, Fabric, LabTalos, Stages) {
    let up = started(n, vmid, cfg);
    bring_up(&up.0, &up.3).await;
    up
}

// ---------------------------------------------------------------- bring-up

#[tokio::test]
async fn three_nodes_from_cidata_to_etcd_and_kubeconfig_then_rerun_is_a_noop() {
    let c = cluster(3, 100);
    let fabric = Fabric::new();
    let mut events = fabric.events.subscribe();
    let lab = LabTalos::start(&fabric, LabTalosConfig::fast());
    c.start(&fabric);
    let stages = Stages::new(fabric.addresses.clone(), fast_timeouts());

    let (boot, kube) = bring_up(&c, &stages).await;
    assert_eq!(boot, BootstrapOutcome::Bootstrapped);
    let text = String::from_utf8(kube.bytes.clone()).unwrap();
    // Compared with a locally generated kubeconfig: same cluster entry, other CA.
    let same = stages
        .fetch_kubeconfig(&c.nodes[0].target(), &c.admin, Some(&kube.bytes))
        .await
        .unwrap();
    assert!(same.differences.is_empty(), "{:?}", same.differences);
    let other = text.replace(&STANDARD.encode(&c.k8s.crt), "T1RIRVI=");
    let diff = stages
        .fetch_kubeconfig(&c.nodes[0].target(), &c.admin, Some(other.as_bytes()))
        .await
        .unwrap();
    assert_eq!(diff.differences.len(), 1, "{:?}", diff.differences);
    assert!(
        text.contains(&format!("server: {}", c.endpoint())),
        "{text}"
    );
    assert!(text.contains(&STANDARD.encode(&c.k8s.crt)));
    let first = lab.counters();
    assert_eq!(
        (
            first.cidata_configs,
            first.applies,
            first.bootstraps,
            first.kubeconfigs
        ),
        (3, 0, 1, 3),
        "each node took its config from cidata; nothing was applied over the network"
    );

    let mut running = Vec::new();
    let mut bootstrapped = Vec::new();
    while let Ok(e) = events.try_recv() {
        match e {
            LabEvent::NodeRunning(i) => running.push(i),
            LabEvent::EtcdBootstrapped { node, .. } => bootstrapped.push(node),
            _ => {}
        }
    }
    assert_eq!(running.len(), 3);
    // validSubnets selects the workload network for the kubelet.
    assert_eq!(running[0].internal_ip.to_string()[..8], *"10.8.28.");
    assert_eq!(running[0].kubernetes_ca_crt, c.k8s.crt);
    assert_eq!(bootstrapped, ["talos-k8s-01"]);

    // Second run: nothing is re-applied, etcd is not bootstrapped again.
    let (boot2, _) = bring_up(&c, &stages).await;
    assert_eq!(boot2, BootstrapOutcome::AlreadyBootstrapped);
    let second = lab.counters();
    assert_eq!(second.cidata_configs, 3, "a config taken again");
    assert_eq!(
        second.bootstrap_calls, first.bootstrap_calls,
        "bootstrap called again"
    );
    assert_eq!(second.bootstraps, 1);
    lab.shutdown();
}

// ---------------------------------------------------------------- mTLS and per-node errors

fn connect(fabric: &Fabric, t: &Target, creds: Credentials) -> TalosClient {
    TalosClient::connect(
        &fabric.addresses,
        t,
        &TlsMode::Mutual(creds),
        RpcLimits::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn client_from_another_ca_is_refused_and_reported_clearly() {
    let (c, fabric, lab, _) = running_cluster(1, 200, LabTalosConfig::fast()).await;
    let t = c.nodes[0].target();
    let other = test_ca(KeyAlg::Ed25519, "talos");
    let foreign = Credentials {
        ca_pem: c.os.crt.clone(),
        ..client_cert(&other, "os:admin")
    };
    let e = connect(&fabric, &t, foreign).version().await.unwrap_err();
    assert!(matches!(e, TalosError::CertificateRejected { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("node talos-k8s-01 refused our client certificate"),
        "{msg}"
    );
    assert!(msg.contains("fix:"), "{msg}");
    lab.shutdown();
}

#[tokio::test]
async fn a_client_certificate_for_more_than_client_auth_is_refused() {
    let (c, fabric, lab, _) = running_cluster(1, 205, LabTalosConfig::fast()).await;
    let t = c.nodes[0].target();
    // Signed by the right CA with the admin role, but also good for ServerAuth: apid
    // wants exactly ClientAuth.
    let os_ca = rcgen::Issuer::from_ca_cert_pem(&c.os.crt, c.os.key.key_pair().unwrap()).unwrap();
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name
        .push(rcgen::DnType::OrganizationName, "os:admin");
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let crt = p.signed_by(&kp, &os_ca).unwrap();
    let both = Credentials {
        ca_pem: c.os.crt.clone(),
        crt_pem: crt.pem(),
        key_pem: SecretString::from(
            talos_pve::pki::PrivateKey::from_key_pair(&kp, KeyAlg::Ed25519)
                .to_talos_pem()
                .to_string(),
        ),
    };
    let e = connect(&fabric, &t, both).version().await.unwrap_err();
    assert!(matches!(e, TalosError::CertificateRejected { .. }), "{e}");
    // The certificates talos-pve issues carry exactly ClientAuth and are accepted.
    connect(&fabric, &t, c.admin.clone())
        .version()
        .await
        .unwrap();
    lab.shutdown();
}

#[tokio::test]
async fn nodes_report_their_link_names_with_macs() {
    for (names, want) in [
        (LinkNames::Eth, ["eth0", "eth1"]),
        (LinkNames::Predictable, ["ens18", "ens19"]),
    ] {
        let cfg = LabTalosConfig {
            link_names: names,
            ..LabTalosConfig::fast()
        };
        let (c, fabric, lab, _) = running_cluster(1, 207, cfg).await;
        let n = &c.nodes[0];
        let links = connect(&fabric, &n.target(), c.admin.clone())
            .links()
            .await
            .unwrap();
        let macs: Vec<String> = n.vm.nics.iter().map(|x| x.mac.to_uppercase()).collect();
        assert_eq!(
            links,
            vec![
                (want[0].to_owned(), macs[0].clone()),
                (want[1].to_owned(), macs[1].clone())
            ]
        );
        lab.shutdown();
    }
}

#[tokio::test]
async fn reader_role_may_read_but_admin_calls_are_denied() {
    let (c, fabric, lab, stages) = running_cluster(1, 210, LabTalosConfig::fast()).await;
    let t = c.nodes[0].target();
    let reader = client_cert(&c.os, "os:reader");
    let mut cl = connect(&fabric, &t, reader.clone());
    assert_eq!(cl.version().await.unwrap().len(), 1);
    let e = cl.bootstrap(Default::default()).await.unwrap_err();
    assert!(
        matches!(
            e,
            TalosError::PermissionDenied {
                rpc: "Bootstrap",
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("node talos-k8s-01 denied Bootstrap"),
        "{e}"
    );
    assert!(e.to_string().contains("os:admin"), "{e}");
    // Through a stage: not retried, and the stage is named.
    let e = stages
        .fetch_kubeconfig(&t, &reader, None)
        .await
        .unwrap_err();
    let msg = failed_in(e, Stage::Kubeconfig);
    assert!(
        msg.contains("fetch kubeconfig") && msg.contains("check:"),
        "{msg}"
    );
    assert_eq!(lab.counters().denied, 2);
    lab.shutdown();
}

#[tokio::test]
async fn per_node_errors_in_fan_out_metadata_name_the_node() {
    let (c, fabric, lab, _) = running_cluster(2, 220, LabTalosConfig::fast()).await;
    let t = c.nodes[0].target();
    let both: Vec<String> = c.nodes.iter().map(|n| n.mgmt().to_string()).collect();
    let v = connect(&fabric, &t, c.admin.clone())
        .with_routing(Routing::Nodes(both.clone()))
        .version()
        .await
        .unwrap();
    let hosts: Vec<_> = v
        .iter()
        .map(|m| m.metadata.as_ref().unwrap().hostname.clone())
        .collect();
    assert_eq!(hosts, ["talos-k8s-01", "talos-k8s-02"]);
    let e = connect(&fabric, &t, c.admin.clone())
        .with_routing(Routing::Nodes(vec![both[0].clone(), "10.8.16.99".into()]))
        .version()
        .await
        .unwrap_err();
    assert!(
        matches!(&e, TalosError::NodeError { node, .. } if node == "10.8.16.99"),
        "{e}"
    );
    assert!(
        e.to_string()
            .starts_with("node 10.8.16.99: Version failed on the node"),
        "{e}"
    );
    lab.shutdown();
}

// ---------------------------------------------------------------- cidata and identity

#[tokio::test]
async fn cidata_config_with_foreign_macs_is_not_taken_and_the_node_is_refused() {
    let c = cluster(1, 230);
    let fabric = Fabric::new();
    let lab = LabTalos::start(&fabric, LabTalosConfig::fast());
    let n = &c.nodes[0];
    let bad = c.config_with_macs(n, &["BC:24:11:00:00:01", &n.vm.nics[1].mac]);
    fabric.emit(LabEvent::VmStarted(c.with_cidata(n, &bad)));
    let stages = Stages::new(fabric.addresses.clone(), fast_timeouts());
    // It stays in maintenance mode, where it presents a self-signed certificate.
    let e = stages
        .wait_installed(&n.target(), &c.admin)
        .await
        .unwrap_err();
    let msg = failed_in(e, Stage::Install);
    assert!(msg.contains("is not this cluster's node"), "{msg}");
    assert_eq!(lab.phase(n.vm.vmid), Some(Phase::Maintenance));
    assert_eq!(lab.counters().cidata_configs, 0);
    lab.shutdown();
}

#[tokio::test]
async fn cloud_config_or_an_unlabelled_volume_leaves_the_node_in_maintenance() {
    let c = cluster(2, 235);
    let fabric = Fabric::new();
    let lab = LabTalos::start(&fabric, LabTalosConfig::fast());
    // What Proxmox's generated drive holds: `#cloud-config` is no machine config.
    fabric.emit(LabEvent::VmStarted(
        c.with_cidata(&c.nodes[0], b"#cloud-config\nhostname: x\n"),
    ));
    // The right files on a volume with another label: not the nocloud volume.
    let mut vm = c.nodes[1].vm.clone();
    let config = c.config(&c.nodes[1]);
    let img = talos_pve::iso9660::image(
        "config2",
        &[talos_pve::iso9660::File {
            name: "user-data",
            data: &config,
        }],
    )
    .unwrap();
    vm.media = vec![STANDARD.encode(img)];
    fabric.emit(LabEvent::VmStarted(vm));
    for n in &c.nodes {
        assert_eq!(
            reach_phase(&lab, n.vm.vmid, Phase::Maintenance).await,
            Some(Phase::Maintenance),
            "{}",
            n.name
        );
    }
    assert_eq!(lab.counters().cidata_configs, 0);
    lab.shutdown();
}

#[tokio::test]
async fn a_node_of_another_cluster_is_not_ours() {
    let (c, fabric, lab, stages) = running_cluster(1, 245, LabTalosConfig::fast()).await;
    // Our credentials, but we expect the server certificate from another OS CA.
    let other = test_ca(KeyAlg::Ed25519, "talos");
    let creds = Credentials {
        ca_pem: other.crt.clone(),
        ..c.admin.clone()
    };
    let e = stages
        .our_node(&c.nodes[0].target(), &creds)
        .await
        .unwrap_err();
    assert!(matches!(e, TalosError::NotOurNode { .. }), "{e}");
    drop(fabric);
    lab.shutdown();
}

#[tokio::test]
async fn a_machine_without_our_ca_is_refused_naming_node_address_and_remedy() {
    let c = cluster(1, 240);
    let fabric = Fabric::new();
    let lab = LabTalos::start(&fabric, LabTalosConfig::fast());
    c.start_bare(&fabric);
    let stages = Stages::new(fabric.addresses.clone(), fast_timeouts());
    let t = c.nodes[0].target();
    let e = stages.wait_installed(&t, &c.admin).await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("talos-k8s-01"), "{msg}");
    assert!(msg.contains(&t.addr.to_string()), "{msg}");
    assert!(
        msg.contains("does not chain to the cluster's OS CA"),
        "{msg}"
    );
    assert!(msg.contains("fix: find the machine that holds"), "{msg}");
    // The one-shot probe `up` uses before delivering anything says the same.
    let e = stages.our_node(&t, &c.admin).await.unwrap_err();
    assert!(matches!(e, TalosError::NotOurNode { .. }), "{e}");
    lab.shutdown();
}

// ---------------------------------------------------------------- stage timeouts and faults

#[tokio::test]
async fn node_that_never_boots_times_out_in_install_stage() {
    let c = cluster(1, 250);
    let fabric = Fabric::new(); // no VmStarted: the address has no mapping
    let stages = Stages::new(
        fabric.addresses.clone(),
        short_timeouts(Duration::from_millis(200)),
    );
    let e = stages
        .wait_installed(&c.nodes[0].target(), &c.admin)
        .await
        .unwrap_err();
    let msg = timed_out_in(e, Stage::Install);
    assert!(
        msg.starts_with("node talos-k8s-01: stage `wait for install and reboot` did not finish"),
        "{msg}"
    );
    assert!(
        msg.contains("no loopback mapping"),
        "last error kept: {msg}"
    );
    assert!(msg.contains("cidata"), "{msg}");
}

/// One node booted with its `cidata` (it installs by itself).
async fn applied(cfg: LabTalosConfig, vmid: u32) -> (Cluster, LabTalos, Fabric) {
    let (c, fabric, lab, _) = started(1, vmid, cfg);
    (c, lab, fabric)
}

#[tokio::test]
async fn reboot_loop_times_out_in_install_stage_with_a_hint() {
    let mut cfg = LabTalosConfig::fast();
    cfg.faults.reboot_loops = u32::MAX;
    let (c, lab, fabric) = applied(cfg, 260).await;
    let stages = Stages::new(
        fabric.addresses.clone(),
        short_timeouts(Duration::from_millis(400)),
    );
    let e = stages
        .wait_installed(&c.nodes[0].target(), &c.admin)
        .await
        .unwrap_err();
    let msg = timed_out_in(e, Stage::Install);
    assert!(
        msg.contains("node talos-k8s-01: stage `wait for install and reboot`"),
        "{msg}"
    );
    assert!(
        msg.contains("reboot loop") && msg.contains("boot order"),
        "{msg}"
    );
    lab.shutdown();
}

#[tokio::test]
async fn slow_install_outlasts_a_short_deadline_but_not_a_longer_one() {
    let mut cfg = LabTalosConfig::fast();
    cfg.faults.slow_install = Duration::from_millis(600);
    cfg.faults.reboot_loops = 1;
    let (c, lab, fabric) = applied(cfg, 270).await;
    let t = c.nodes[0].target();
    let short = Stages::new(
        fabric.addresses.clone(),
        short_timeouts(Duration::from_millis(150)),
    );
    let e = short.wait_installed(&t, &c.admin).await.unwrap_err();
    timed_out_in(e, Stage::Install);
    let long = Stages::new(fabric.addresses.clone(), fast_timeouts());
    assert_eq!(long.wait_installed(&t, &c.admin).await.unwrap(), "v1.13.9");
    lab.shutdown();
}

#[tokio::test]
async fn time_not_in_sync_is_retried_until_bootstrap_succeeds() {
    let mut cfg = LabTalosConfig::fast();
    cfg.faults.time_not_in_sync = 2;
    let (c, lab, fabric) = applied(cfg, 280).await;
    let t = c.nodes[0].target();
    let stages = Stages::new(fabric.addresses.clone(), fast_timeouts());
    stages.wait_installed(&t, &c.admin).await.unwrap();
    assert_eq!(
        stages.bootstrap(&t, &c.admin).await.unwrap(),
        BootstrapOutcome::Bootstrapped
    );
    let k = lab.counters();
    assert_eq!(k.bootstraps, 1);
    assert!(k.bootstrap_calls >= 3, "{k:?}");
    lab.shutdown();
}

#[tokio::test]
async fn clock_that_never_syncs_times_out_naming_ntp() {
    let mut cfg = LabTalosConfig::fast();
    cfg.faults.time_not_in_sync = u32::MAX;
    let (c, lab, fabric) = applied(cfg, 290).await;
    let t = c.nodes[0].target();
    Stages::new(fabric.addresses.clone(), fast_timeouts())
        .wait_installed(&t, &c.admin)
        .await
        .unwrap();
    let stages = Stages::new(
        fabric.addresses.clone(),
        short_timeouts(Duration::from_millis(1000)),
    );
    let e = stages.bootstrap(&t, &c.admin).await.unwrap_err();
    let msg = timed_out_in(e, Stage::Bootstrap);
    assert!(msg.contains("time is not in sync yet"), "{msg}");
    assert!(msg.contains("time is synced"), "{msg}");
    assert_eq!(lab.counters().bootstraps, 0);
    lab.shutdown();
}

#[tokio::test]
async fn dropped_streams_are_detected_and_fetched_again() {
    let mut cfg = LabTalosConfig::fast();
    cfg.faults.drop_streams = 1;
    let (c, fabric, lab, stages) = running_cluster(1, 300, cfg).await;
    // bring_up fetched the kubeconfig through one dropped stream already.
    assert_eq!(lab.counters().kubeconfigs, 2);
    lab.inject(Faults {
        drop_streams: 1,
        ..Faults::default()
    });
    for i in 0..400 {
        fabric.etcd.put(
            &format!("/registry/configmaps/default/c{i}"),
            serde_json::json!({"i": i}),
        );
    }
    let t = c.nodes[0].target();
    let snap = stages.snapshot(&t, &c.admin).await.unwrap();
    assert_eq!(snap, fabric.etcd.snapshot());
    assert_eq!(
        lab.counters().snapshots,
        2,
        "the truncated one was refetched"
    );
    lab.shutdown();
}

// ---------------------------------------------------------------- backup and recovery

#[tokio::test]
async fn backup_then_recover_into_a_fresh_lab_cluster_restores_the_data() {
    let (c, fabric, lab, stages) = running_cluster(3, 400, LabTalosConfig::fast()).await;
    for i in 0..50 {
        fabric.etcd.put(
            &format!("/registry/secrets/default/s{i}"),
            serde_json::json!({"kind": "Secret", "n": i}),
        );
    }
    let want = fabric.etcd.list("");
    // The backup itself (files, manifest, age) is `rebuild::backup`'s; here the API part.
    let snapshot = stages
        .snapshot(&c.nodes[0].target(), &c.admin)
        .await
        .unwrap();
    talos_pve::talos::api::snapshot::validate_snapshot(&snapshot).unwrap();
    lab.shutdown();

    // Disaster: a new datacenter, same secrets, empty etcd.
    let fresh = Fabric::new();
    let lab2 = LabTalos::start(&fresh, LabTalosConfig::fast());
    c.start(&fresh);
    let stages2 = Stages::new(fresh.addresses.clone(), fast_timeouts());
    for n in &c.nodes {
        stages2.wait_installed(&n.target(), &c.admin).await.unwrap();
    }
    assert!(fresh.etcd.is_empty());
    let boot = c.nodes[0].target();
    stages2
        .recover(&boot, &c.admin, &snapshot, false, "snap.db")
        .await
        .unwrap();
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    stages2
        .wait_etcd_members(&boot, &c.admin, &names)
        .await
        .unwrap();
    assert_eq!(fresh.etcd.list(""), want);
    let k = lab2.counters();
    assert_eq!((k.recover_uploads, k.bootstraps), (1, 1));
    lab2.shutdown();
}

#[tokio::test]
async fn damaged_snapshot_is_refused_before_upload() {
    let (c, fabric, lab, stages) = running_cluster(1, 410, LabTalosConfig::fast()).await;
    let mut bytes = stages
        .snapshot(&c.nodes[0].target(), &c.admin)
        .await
        .unwrap();
    bytes.pop();
    let e = stages
        .recover(&c.nodes[0].target(), &c.admin, &bytes, false, "snap.db")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("size % 512 == 32"), "{e}");
    assert_eq!(lab.counters().recover_uploads, 0);
    drop(fabric);
    lab.shutdown();
}

// ---------------------------------------------------------------- persistence

#[tokio::test]
async fn node_state_survives_a_restart_of_the_lab() {
    let (c, fabric, lab, stages) = running_cluster(2, 420, LabTalosConfig::fast()).await;
    let saved = serde_json::to_string(&lab.state()).unwrap();
    lab.shutdown();
    let t = c.nodes[0].target();
    // Shut down: the addresses are unmapped (fail closed).
    assert!(matches!(
        stages.client(&t, &TlsMode::Maintenance).err(),
        Some(TalosError::Address { .. })
    ));
    let state = serde_json::from_str(&saved).unwrap();
    let lab2 = LabTalos::start_from(&fabric, LabTalosConfig::fast(), state);
    stages.wait_installed(&t, &c.admin).await.unwrap();
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    stages
        .wait_etcd_members(&t, &c.admin, &names)
        .await
        .unwrap();
    // Nothing is redone after the restart.
    let (boot, _) = bring_up(&c, &stages).await;
    assert_eq!(boot, BootstrapOutcome::AlreadyBootstrapped);
    assert_eq!(lab2.counters().bootstraps, 1);
    assert_eq!(lab2.counters().cidata_configs, 2);
    lab2.shutdown();
}

#[test]
fn backup_command_without_a_talosconfig_says_what_to_do() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::bin())
        .args(["backup", "--profile"])
        .arg(crate::support::profile("homelab.yaml"))
        .arg("--dir")
        .arg(tmp.path())
        .env("TALOS_PVE_LOOPBACK_ONLY", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("talosconfig")
            && err.contains("talos-pve gen")
            && err.contains("--dir")
            && err.contains(&tmp.path().display().to_string()),
        "{err}"
    );
}

// ---------------------------------------------------------------- rebuild building blocks

#[tokio::test]
async fn reset_node_rejoins_after_its_dead_member_is_removed() {
    let (c, fabric, lab, stages) = running_cluster(3, 430, LabTalosConfig::fast()).await;
    let boot = c.nodes[0].target();
    let lost = c.nodes[2].target();
    connect(&fabric, &lost, c.admin.clone())
        .reset(messages::ResetRequest {
            graceful: false,
            reboot: true,
            ..Default::default()
        })
        .await
        .unwrap();
    // Wiped: back in maintenance mode (a self-signed certificate, nothing of
    // ours) once it has booted (the reply comes before the reboot), its old etcd
    // member still listed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let answer = loop {
        match stages.our_node(&lost, &c.admin).await {
            Ok(None) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            other => break other,
        }
    };
    assert!(
        matches!(answer, Err(TalosError::NotOurNode { .. })),
        "{answer:?}"
    );
    let members = connect(&fabric, &boot, c.admin.clone())
        .etcd_member_list()
        .await
        .unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().any(|m| m.hostname == "talos-k8s-03"));
    assert!(
        stages
            .remove_etcd_member(&boot, &c.admin, "talos-k8s-03")
            .await
            .unwrap()
    );
    // Idempotent: a second removal finds nothing to do.
    assert!(
        !stages
            .remove_etcd_member(&boot, &c.admin, "talos-k8s-03")
            .await
            .unwrap()
    );
    let e = connect(&fabric, &boot, c.admin.clone())
        .etcd_remove_member_by_id(0xdead)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::NotFound), "{e}");
    assert!(
        e.to_string()
            .starts_with("node talos-k8s-01: EtcdRemoveMemberByID failed"),
        "{e}"
    );
    let two: Vec<String> = c.nodes[..2].iter().map(|n| n.name.clone()).collect();
    stages
        .wait_etcd_members(&boot, &c.admin, &two)
        .await
        .unwrap();
    // Rebuild the node: booted again with its cidata, it installs and joins by itself.
    let n = &c.nodes[2];
    fabric.emit(LabEvent::VmStarted(c.with_cidata(n, &c.config(n))));
    stages.wait_installed(&lost, &c.admin).await.unwrap();
    let all: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    stages
        .wait_etcd_members(&boot, &c.admin, &all)
        .await
        .unwrap();
    assert_eq!(lab.counters().bootstraps, 1);
    lab.shutdown();
}

#[tokio::test]
async fn stopped_vm_is_unreachable_and_boots_from_disk_when_started() {
    let (c, fabric, lab, stages) = running_cluster(1, 440, LabTalosConfig::fast()).await;
    let n = &c.nodes[0];
    fabric.emit(LabEvent::VmStopped { vmid: n.vm.vmid });
    assert_eq!(
        reach_phase(&lab, n.vm.vmid, Phase::Stopped).await,
        Some(Phase::Stopped)
    );
    let short = Stages::new(
        fabric.addresses.clone(),
        short_timeouts(Duration::from_millis(200)),
    );
    let e = short
        .wait_installed(&n.target(), &c.admin)
        .await
        .unwrap_err();
    // Powered off, its address answers nothing (as a real host's), which a wait
    // takes for "not yet"; it is not the lab's fail-closed unknown address.
    let msg = e.to_string();
    assert!(
        msg.contains("not reachable") && !msg.contains("no loopback mapping"),
        "{msg}"
    );
    fabric.emit(LabEvent::VmStarted(n.vm.clone()));
    assert_eq!(
        stages.wait_installed(&n.target(), &c.admin).await.unwrap(),
        "v1.13.9"
    );
    assert_eq!(
        lab.counters().cidata_configs,
        1,
        "installed config survives the power cycle"
    );
    lab.shutdown();
}

#[tokio::test]
async fn lost_etcd_is_recovered_in_place_from_a_snapshot() {
    let (c, fabric, lab, stages) = running_cluster(3, 450, LabTalosConfig::fast()).await;
    fabric.etcd.put(
        "/registry/namespaces/prod",
        serde_json::json!({"kind": "Namespace"}),
    );
    let want = fabric.etcd.list("");
    let snapshot = stages
        .snapshot(&c.nodes[1].target(), &c.admin)
        .await
        .unwrap();
    // Disaster: etcd data is lost; every control plane's EPHEMERAL is wiped.
    fabric.etcd.clear();
    for n in &c.nodes {
        stages.wipe_etcd_data(&n.target(), &c.admin).await.unwrap();
    }
    for n in &c.nodes {
        stages
            .wait_etcd_preparing(&n.target(), &c.admin)
            .await
            .unwrap();
    }
    let boot = c.nodes[0].target();
    stages
        .recover(&boot, &c.admin, &snapshot, false, "snap.db")
        .await
        .unwrap();
    let names: Vec<String> = c.nodes.iter().map(|n| n.name.clone()).collect();
    stages
        .wait_etcd_members(&boot, &c.admin, &names)
        .await
        .unwrap();
    assert_eq!(fabric.etcd.list(""), want);
    // Recovering again is refused: etcd already runs there.
    let e = stages
        .recover(&boot, &c.admin, &snapshot, false, "snap.db")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("etcd recover") && e.to_string().contains("Preparing"),
        "{e}"
    );
    assert!(e.to_string().contains("etcd is already running"), "{e}");
    let k = lab.counters();
    assert_eq!((k.bootstraps, k.recover_uploads), (2, 1));
    lab.shutdown();
}

#[tokio::test]
async fn a_recovery_from_a_bad_raw_snapshot_fails_etcd_and_names_the_snapshot() {
    let (c, fabric, lab, stages) = running_cluster(1, 460, LabTalosConfig::fast()).await;
    fabric.etcd.clear();
    let boot = c.nodes[0].target();
    stages.wipe_etcd_data(&boot, &c.admin).await.unwrap();
    stages.wait_etcd_preparing(&boot, &c.admin).await.unwrap();
    // A raw `db` copy cannot be checked before the upload (no hash trailer); this one
    // is garbage. The recovery Bootstrap still answers OK, as Talos does: only the
    // etcd service fails, so the installer must watch it rather than trust the RPC.
    let garbage = vec![7u8; 1024];
    let e = stages
        .recover(&boot, &c.admin, &garbage, true, "/backups/bad.db")
        .await
        .unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("etcd did not start from the snapshot /backups/bad.db")
            && msg.contains("failed to restore etcd from snapshot")
            && msg.contains("fix:"),
        "{msg}"
    );
    let k = lab.counters();
    assert_eq!((k.bootstrap_calls, k.recover_uploads), (2, 1));
    lab.shutdown();
}

#[tokio::test]
async fn maintenance_probe_understands_talos_1_12_and_1_13() {
    for version in ["v1.12.11", "v1.13.9"] {
        let c = cluster(1, 470);
        let fabric = Fabric::new();
        let lab = LabTalos::start(
            &fabric,
            LabTalosConfig {
                talos_version: version.into(),
                ..LabTalosConfig::fast()
            },
        );
        c.start_bare(&fabric);
        let stages = Stages::new(fabric.addresses.clone(), fast_timeouts());
        let t = c.nodes[0].target();
        // Let it boot into maintenance mode.
        reach_phase(&lab, c.nodes[0].vm.vmid, Phase::Maintenance).await;
        let v = stages
            .client(&t, &TlsMode::Maintenance)
            .unwrap()
            .version()
            .await;
        assert_eq!(v.is_ok(), version.starts_with("v1.13"), "{version}: {v:?}");
        // `status` reads a 1.12 node's refusal as "in maintenance", not "unreachable".
        if let Err(e) = &v {
            assert!(e.is_maintenance_answer(), "{e}");
        }
        // Maintenance mode ignores routing metadata: the node answers for itself.
        let routed = stages
            .client(&t, &TlsMode::Maintenance)
            .unwrap()
            .with_routing(Routing::Nodes(vec!["10.8.16.99".to_owned()]))
            .version()
            .await;
        assert_eq!(routed.is_ok(), v.is_ok(), "{version}: {routed:?}");
        lab.shutdown();
    }
}

// ---------------------------------------------------------------- OS upgrade (talos-day2.md §7)

const INSTALLER: &str = "factory.talos.dev/nocloud-installer/ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515";

/// Poll until the node answers with another boot id; then its `Version` tag.
async fn after_reboot(fabric: &Fabric, c: &Cluster, n: usize, before: &str) -> String {
    for _ in 0..500 {
        let mut cl = connect(fabric, &c.nodes[n].target(), c.admin.clone());
        if let Ok(id) = cl.boot_id().await
            && id != before
        {
            let v = cl.version().await.unwrap();
            return v[0].version.as_ref().unwrap().tag.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("node {n} did not reboot");
}

#[tokio::test]
async fn a_1_12_node_upgrades_through_the_legacy_call_only_and_refuses_kubernetes_1_36() {
    let (c, fabric, lab, stages) = started(
        1,
        480,
        LabTalosConfig {
            talos_version: "v1.12.11".into(),
            ..LabTalosConfig::fast()
        },
    );
    // The node installs the config of its cidata volume.
    let t = c.nodes[0].target();
    assert_eq!(
        stages.wait_installed(&t, &c.admin).await.unwrap(),
        "v1.12.11"
    );
    let mut cl = connect(&fabric, &t, c.admin.clone());
    // Kubernetes 1.36 is outside Talos 1.12's range: the node refuses the config.
    let with_kubelet = |v: &str| {
        String::from_utf8(c.config(&c.nodes[0]))
            .unwrap()
            .replace(
                "  kubelet:\n",
                &format!("  kubelet:\n    image: ghcr.io/siderolabs/kubelet:v{v}\n"),
            )
            .into_bytes()
    };
    let e = cl
        .apply_configuration(
            &with_kubelet("1.36.3"),
            messages::ApplyMode::NoReboot,
            false,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
    assert!(
        e.to_string()
            .contains("kubelet image is not valid: version of Kubernetes 1.36.3 is too new to be used with Talos 1.12.11"),
        "{e}"
    );
    cl.apply_configuration(
        &with_kubelet("1.35.4"),
        messages::ApplyMode::NoReboot,
        false,
    )
    .await
    .unwrap();
    // The 1.13 services do not exist on a 1.12 node.
    let e = cl
        .image_pull(&format!("{INSTALLER}:v1.13.9"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unimplemented), "{e}");
    let e = cl.lifecycle_upgrade("x").await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::Unimplemented), "{e}");
    // Legacy Upgrade checks the image inside the call…
    let e = cl
        .legacy_upgrade("ghcr.io/acme/app:latest")
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("error validating installer image"),
        "{e}"
    );
    // …then installs and reboots by itself into the new release.
    let boot = cl.boot_id().await.unwrap();
    cl.legacy_upgrade(&format!("{INSTALLER}:v1.13.9"))
        .await
        .unwrap();
    assert_eq!(after_reboot(&fabric, &c, 0, &boot).await, "v1.13.9");
    // Now on 1.13: Kubernetes 1.36 is accepted.
    let mut cl = connect(&fabric, &t, c.admin.clone());
    cl.apply_configuration(
        &with_kubelet("1.36.3"),
        messages::ApplyMode::NoReboot,
        false,
    )
    .await
    .unwrap();
    lab.shutdown();
}

#[tokio::test]
async fn lifecycle_upgrade_writes_the_image_only_and_reboot_boots_it() {
    let (c, fabric, lab, _) = running_cluster(3, 490, LabTalosConfig::fast()).await;
    let t = c.nodes[1].target();
    let mut cl = connect(&fabric, &t, c.admin.clone());
    let image = format!("{INSTALLER}:v1.13.10");
    // Per node only: `nodes` fan-out is refused for these services.
    let mut fan = connect(&fabric, &c.nodes[0].target(), c.admin.clone())
        .with_routing(Routing::Nodes(vec![c.nodes[1].mgmt().to_string()]));
    let e = fan.lifecycle_upgrade(&image).await.unwrap_err();
    assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
    let e = cl.lifecycle_upgrade("").await.unwrap_err();
    assert_eq!(e.message(), Some("installer image name is required"), "{e}");
    // Not pulled: the installer cannot run; the RPC ends OK with a non-zero exit code.
    let e = cl.lifecycle_upgrade(&image).await.unwrap_err();
    assert!(
        e.to_string().contains("installer exited with code 1"),
        "{e}"
    );
    let boot = cl.boot_id().await.unwrap();
    assert_eq!(cl.image_pull(&image).await.unwrap(), image);
    cl.lifecycle_upgrade(&image).await.unwrap();
    // No reboot by itself: same boot, same release.
    assert_eq!(cl.boot_id().await.unwrap(), boot);
    let v = cl.version().await.unwrap();
    assert_eq!(v[0].version.as_ref().unwrap().tag, "v1.13.9");
    cl.reboot().await.unwrap();
    assert_eq!(after_reboot(&fabric, &c, 1, &boot).await, "v1.13.10");
    lab.shutdown();
}

#[tokio::test]
async fn legacy_upgrade_on_a_control_plane_refuses_a_two_member_etcd() {
    let (c, fabric, lab, _) = running_cluster(3, 500, LabTalosConfig::fast()).await;
    let mut cl = connect(&fabric, &c.nodes[0].target(), c.admin.clone());
    let members = cl.etcd_member_list().await.unwrap();
    let third = members
        .iter()
        .find(|m| m.hostname == c.nodes[2].name)
        .unwrap();
    cl.etcd_remove_member_by_id(third.id).await.unwrap();
    let e = cl
        .legacy_upgrade(&format!("{INSTALLER}:v1.13.10"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains(
            "error validating etcd for upgrade: etcd member count(2) is insufficient to maintain quorum if upgrade commences"
        ),
        "{e}"
    );
    lab.shutdown();
}

// ---------------------------------------------------------------- apply modes

/// talos-day2.md §3.1–3.3 (talos v1.13.9 `v1alpha1_server.go` ApplyConfiguration):
/// a change Talos applies in place goes NO_REBOOT; one that needs a reboot is refused
/// by NO_REBOOT/TRY with the diff, resolved by AUTO to REBOOT (the node reboots),
/// and STAGED keeps the running config until the next boot.
#[tokio::test]
async fn apply_modes_follow_which_changes_need_a_reboot() {
    use talos_pve::talos::api::messages::ApplyMode;
    let (c, fabric, lab, _stages) = running_cluster(1, 160, LabTalosConfig::fast()).await;
    let n = &c.nodes[0];
    let mut t = connect(&fabric, &n.target(), c.admin.clone());
    let base = String::from_utf8(c.config(n)).unwrap();
    let dry = |r: &messages::ApplyConfiguration| r.mode_details.clone();
    let same = t
        .apply_configuration(base.as_bytes(), ApplyMode::Auto, true)
        .await
        .unwrap();
    assert!(
        dry(&same).ends_with("Config diff:\n\nNo changes."),
        "{}",
        dry(&same)
    );

    // machine.certSANs: applied in place.
    let sans = base.replace("certSANs: []", "certSANs: [api.example.org]");
    let r = t
        .apply_configuration(sans.as_bytes(), ApplyMode::Auto, true)
        .await
        .unwrap();
    assert_eq!(r.mode, ApplyMode::NoReboot as i32);
    assert!(dry(&r).starts_with("Dry run summary:\nApplied configuration without a reboot (skipped in dry-run).\nConfig diff:\n\n--- a\n+++ b\n"), "{}", dry(&r));
    assert!(
        dry(&r).contains("+  certSANs: [api.example.org]"),
        "{}",
        dry(&r)
    );
    let r = t
        .apply_configuration(sans.as_bytes(), ApplyMode::NoReboot, false)
        .await
        .unwrap();
    assert_eq!(r.mode_details, "Applied configuration without a reboot");

    // machine.env: only a reboot applies it.
    let env = sans.replace(
        "  certSANs:",
        "  env: {HTTP_PROXY: http://proxy:3128}\n  certSANs:",
    );
    for mode in [ApplyMode::NoReboot, ApplyMode::Try] {
        let e = t
            .apply_configuration(env.as_bytes(), mode, false)
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(tonic::Code::InvalidArgument), "{e}");
        assert!(
            e.to_string()
                .contains("this config change can't be applied in immediate mode"),
            "{e}"
        );
    }
    let boot = t.boot_id().await.unwrap();
    let r = t
        .apply_configuration(env.as_bytes(), ApplyMode::Staged, false)
        .await
        .unwrap();
    assert_eq!(r.mode, ApplyMode::Staged as i32);
    assert_eq!(
        r.mode_details,
        "Staged configuration to be applied after the next reboot"
    );
    // Still running the old one: a dry run shows the difference, AUTO wants a reboot.
    let r = t
        .apply_configuration(env.as_bytes(), ApplyMode::Auto, true)
        .await
        .unwrap();
    assert_eq!(r.mode, ApplyMode::Reboot as i32, "{}", dry(&r));
    t.reboot().await.unwrap();
    let mut t = wait_new_boot(&fabric, n, &c, &boot).await;
    let r = t
        .apply_configuration(env.as_bytes(), ApplyMode::Auto, true)
        .await
        .unwrap();
    assert!(
        dry(&r).ends_with("No changes."),
        "the staged config runs after the boot: {}",
        dry(&r)
    );

    // AUTO with a reboot-needing change: REBOOT with the reason, then the node reboots
    // and refuses further applies until it has.
    let boot = t.boot_id().await.unwrap();
    let r = t
        .apply_configuration(sans.as_bytes(), ApplyMode::Auto, false)
        .await
        .unwrap();
    assert_eq!(r.mode, ApplyMode::Reboot as i32);
    assert!(
        r.mode_details.starts_with(
            "Applied configuration with a reboot: this config change can't be applied in immediate mode\ndiff:\n"
        ),
        "{}",
        r.mode_details
    );
    if let Err(e) = t
        .apply_configuration(sans.as_bytes(), ApplyMode::Auto, true)
        .await
    {
        // Refused while it goes down (or already unreachable).
        assert!(e.code() != Some(tonic::Code::InvalidArgument), "{e}");
    }
    let mut t = wait_new_boot(&fabric, n, &c, &boot).await;
    let r = t
        .apply_configuration(sans.as_bytes(), ApplyMode::Auto, true)
        .await
        .unwrap();
    assert!(dry(&r).ends_with("No changes."), "{}", dry(&r));
    lab.shutdown();
}

/// A client of `n` once it answers with another boot id than `before`.
async fn wait_new_boot(fabric: &Fabric, n: &NodeFx, c: &Cluster, before: &str) -> TalosClient {
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(25)).await;
        let mut t = connect(fabric, &n.target(), c.admin.clone());
        if let Ok(id) = t.boot_id().await
            && id != before
        {
            return t;
        }
    }
    panic!("{} did not come back with a new boot id", n.name);
}

//! Integration tests: the Talos API client and stages against lab Talos nodes on
//! loopback. Node creation is driven by emitting `LabEvent::VmStarted` directly.
//! The fixture below makes a minimal OS CA / admin cert / machine config; it stands
//! in for the real generator until that is merged.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use secrecy::SecretString;
use talos_pve::lab::talos::{Faults, LabTalos, LabTalosConfig};
use talos_pve::lab::{Fabric, LabEvent, LabNic, LabVm};
use talos_pve::talos::api::*;

// ---------------------------------------------------------------- fixture

/// Talos writes Ed25519 keys as PKCS#8 v1 under `ED25519 PRIVATE KEY`.
fn talos_ed25519_pem(k: &KeyPair) -> String {
    let der = k.serialize_der();
    let mut v1 = hex::decode("302e020100300506032b657004220420").unwrap();
    v1.extend_from_slice(&der[16..48]);
    pem("ED25519 PRIVATE KEY", &v1)
}

fn pem(label: &str, der: &[u8]) -> String {
    let b = STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
        lines.join("\n")
    )
}

struct Ca {
    crt: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn ca(org: &str, alg: &'static rcgen::SignatureAlgorithm, talos_label: bool) -> Ca {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, org);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let crt = p.self_signed(&key).unwrap().pem();
    let key_pem = if talos_label {
        talos_ed25519_pem(&key)
    } else {
        key.serialize_pem()
    };
    Ca {
        crt,
        key_pem,
        issuer: Issuer::new(p, key),
    }
}

fn client_cert(ca: &Ca, role: &str) -> Credentials {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::OrganizationName, role);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let crt = p.signed_by(&key, &ca.issuer).unwrap().pem();
    Credentials {
        ca_pem: ca.crt.clone(),
        crt_pem: crt,
        key_pem: SecretString::from(talos_ed25519_pem(&key)),
    }
}

struct Cluster {
    os: Ca,
    k8s: Ca,
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
    let os = ca("talos", &rcgen::PKCS_ED25519, true);
    let k8s = ca("kubernetes", &rcgen::PKCS_ECDSA_P256_SHA256, false);
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

    fn talosconfig(&self) -> String {
        let b = |s: &str| STANDARD.encode(s);
        use secrecy::ExposeSecret;
        format!(
            "context: lab\ncontexts:\n  lab:\n    endpoints: [{}]\n    ca: {}\n    crt: {}\n    key: {}\n",
            self.nodes[0].mgmt(),
            b(&self.admin.ca_pem),
            b(&self.admin.crt_pem),
            b(self.admin.key_pem.expose_secret())
        )
    }

    fn start(&self, fabric: &Fabric) {
        for n in &self.nodes {
            fabric.emit(LabEvent::VmStarted(n.vm.clone()));
        }
    }
}

/// The orchestrator's identity check, fed with what the lab VM's guest agent would report.
struct AgentFacts(BTreeMap<String, (String, Vec<GuestInterface>)>);

impl AgentFacts {
    fn of(nodes: &[NodeFx]) -> Self {
        Self(
            nodes
                .iter()
                .map(|n| {
                    let ifs =
                        n.vm.nics
                            .iter()
                            .map(|x| GuestInterface {
                                name: format!("eth{}", x.index),
                                mac: x.mac.clone(),
                                addresses: x.address.iter().map(|a| a.addr().into()).collect(),
                            })
                            .collect();
                    (n.name.clone(), (n.vm.nics[0].mac.clone(), ifs))
                })
                .collect(),
        )
    }
}

impl IdentityCheck for AgentFacts {
    fn confirm<'a>(
        &'a self,
        node: &'a str,
        addr: IpAddr,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let (mac, ifs) = self.0.get(node).ok_or("unknown node")?;
            check_identity(mac, addr, ifs)
        })
    }
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

/// One full bring-up pass, as the orchestrator will run it.
async fn bring_up(
    c: &Cluster,
    stages: &Stages,
) -> (Vec<ApplyOutcome>, BootstrapOutcome, FetchedKubeconfig) {
    let facts = AgentFacts::of(&c.nodes);
    let mut outcomes = Vec::new();
    for n in &c.nodes {
        let t = n.target();
        stages.wait_maintenance(&t).await.unwrap();
        outcomes.push(
            stages
                .apply_config(&t, &c.config(n), &facts, &c.admin)
                .await
                .unwrap(),
        );
    }
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
    (outcomes, b, k)
}

async fn running_cluster(
    n: usize,
    vmid: u32,
    cfg: LabTalosConfig,
) -> (Cluster, Fabric, LabTalos, Stages) {
    let c = cluster(n, vmid);
    let fabric = Fabric::new();
    let lab = LabTalos::start(&fabric, cfg);
    c.start(&fabric);
    let stages = Stages::new(fabric.addresses.clone(), fast_timeouts());
    bring_up(&c, &stages).await;
    (c, fabric, lab, stages)
}

// ---------------------------------------------------------------- bring-up

#[tokio::test]
async fn three_nodes_from_maintenance_to_etcd_and_kubeconfig_then_rerun_is_a_noop() {
    let c = cluster(3, 100);
    let fabric = Fabric::new();
    let mut events = fabric.events.subscribe();
    let lab = LabTalos::start(&fabric, LabTalosConfig::fast());
    c.start(&fabric);
    let stages = Stages::new(fabric.addresses.clone(), fast_timeouts());

    let (applied, boot, kube) = bring_up(&c, &stages).await;
    assert_eq!(applied, vec![ApplyOutcome::Applied; 3]);
    assert_eq!(boot, BootstrapOutcome::Bootstrapped);
    let text = String::from_utf8(kube.bytes.clone()).unwrap();
    assert!(
        text.contains(&format!("server: {}", c.endpoint())),
        "{text}"
    );
    assert!(text.contains(&STANDARD.encode(&c.k8s.crt)));
    let first = lab.counters();
    assert_eq!(
        (first.applies, first.bootstraps, first.kubeconfigs),
        (3, 1, 1)
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
    let (again, boot2, _) = bring_up(&c, &stages).await;
    assert_eq!(again, vec![ApplyOutcome::Unchanged; 3]);
    assert_eq!(boot2, BootstrapOutcome::AlreadyBootstrapped);
    let second = lab.counters();
    assert_eq!(second.applies, first.applies, "identical config re-applied");
    assert_eq!(
        second.bootstrap_calls, first.bootstrap_calls,
        "bootstrap called again"
    );
    assert_eq!(second.bootstraps, 1);
    assert_eq!(second.dry_runs, 3);
    lab.shutdown();
}

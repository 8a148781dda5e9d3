//! Cluster family: the initial datacenter and what it reports about itself
//! (`GET /nodes`, `/nodes/{node}/network`, `/cluster/status`, `/cluster/resources`,
//! `/cluster/nextid`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Lab, Reply, random_hex, rustls_pemfile_der};
use crate::lab::proxmox::{LabIface, LabNode, LabPveState, LabStorage};
use crate::profile::Proxmox;

/// A fresh datacenter: one online node per host, `local` + `local-lvm`, a VLAN-aware `vmbr0`.
pub(in crate::lab::proxmox) fn initial_state(px: &Proxmox) -> anyhow::Result<LabPveState> {
    // The virtual address the profile names; a bare host means PVE's port 8006.
    let endpoint = px
        .endpoint
        .trim_end_matches('/')
        .strip_prefix("https://")
        .and_then(|rest| rest.split('/').next())
        .and_then(|authority| {
            authority
                .parse()
                .or_else(|_| format!("{authority}:8006").parse())
                .ok()
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "lab: proxmox.endpoint `{}` must be https://<IPv4>[:port]",
                px.endpoint
            )
        })?;
    let (ca_pem, cert_pem, key_pem) = pve_certificates(&endpoint)?;
    let nodes = px
        .hosts
        .iter()
        .map(|h| {
            let mut network = vec![
                LabIface {
                    iface: h.uplink.clone().unwrap_or_else(|| "eno1".into()),
                    kind: "eth".into(),
                    vlan_aware: false,
                    vids: None,
                    ports: None,
                    slaves: None,
                    mtu: Some(1500),
                    cidr: None,
                },
                LabIface {
                    iface: px.bridge.clone(),
                    kind: "bridge".into(),
                    vlan_aware: true,
                    vids: Some("2-4094".into()),
                    ports: Some(h.uplink.clone().unwrap_or_else(|| "eno1".into())),
                    slaves: None,
                    mtu: Some(1500),
                    cidr: Some(format!("{}/24", h.address)),
                },
            ];
            if let Some(s) = &h.storage {
                network.push(LabIface {
                    iface: s.interface.clone(),
                    kind: "bond".into(),
                    vlan_aware: false,
                    vids: None,
                    ports: None,
                    slaves: Some(s.members.join(" ")),
                    mtu: s.mtu,
                    cidr: Some(format!("{}/24", s.address)),
                });
            }
            let storage = |id: &str, kind: &str, content: &[&str], total: u64| LabStorage {
                id: id.into(),
                kind: kind.into(),
                content: content.iter().map(|s| s.to_string()).collect(),
                shared: false,
                total,
                volumes: BTreeMap::new(),
                files: BTreeMap::new(),
            };
            let node = LabNode {
                name: h.name.clone(),
                online: true,
                storages: vec![
                    storage(
                        &px.iso_storage,
                        "dir",
                        &["iso", "vztmpl", "backup"],
                        100 << 30,
                    ),
                    storage(&px.disk_storage, "lvmthin", &["images", "rootdir"], 1 << 40),
                ],
                network,
            };
            (h.name.clone(), node)
        })
        .collect();
    Ok(LabPveState {
        endpoint,
        token_id: px.token_id.clone(),
        token_secret: random_hex(16),
        ca_pem,
        cert_pem,
        key_pem,
        standalone: false,
        nodes,
        vms: BTreeMap::new(),
        containers: BTreeMap::new(),
        tasks: Vec::new(),
        next_pid: 0x1000,
        schematics: Default::default(),
        clock_ms: 0,
    })
}

/// A CA like `/etc/pve/pve-root-ca.pem` (one per cluster, or per standalone
/// host) and the node certificate it signs, named for loopback (where the lab
/// listens) and the endpoint's address (pve-cluster 9.1.6
/// `src/PVE/Cluster/Setup.pm` 420-590: CA subject, leaf SANs). Returns CA PEM,
/// leaf PEM, leaf key PEM.
fn pve_certificates(endpoint: &std::net::SocketAddr) -> anyhow::Result<(String, String, String)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose, SanType,
    };
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(DnType::CommonName, "Proxmox Virtual Environment");
    ca.distinguished_name
        .push(DnType::OrganizationalUnitName, random_hex(16));
    ca.distinguished_name
        .push(DnType::OrganizationName, "PVE Cluster Manager CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::from_params(&ca, &ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()])?;
    for ip in [
        std::net::IpAddr::from([127, 0, 0, 1]),
        std::net::Ipv6Addr::LOCALHOST.into(),
        endpoint.ip(),
    ] {
        leaf.subject_alt_names.push(SanType::IpAddress(ip));
    }
    leaf.distinguished_name
        .push(DnType::CommonName, endpoint.ip().to_string());
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = leaf.signed_by(&key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), key.serialize_pem()))
}

impl Lab {
    pub(super) fn nodes(&self) -> Reply {
        let fp = self.fingerprint();
        let st = self.state.lock().expect("lab state");
        Reply::data(
            st.nodes
                .values()
                .map(|n| {
                    json!({"node": n.name, "status": if n.online {"online"} else {"offline"}, "type": "node",
                           "id": format!("node/{}", n.name), "maxcpu": 20, "maxmem": 96u64 << 30, "ssl_fingerprint": fp})
                })
                .collect(),
        )
    }

    fn fingerprint(&self) -> String {
        let st = self.state.lock();
        st.ok()
            .and_then(|s| rustls_pemfile_der(&s.cert_pem))
            .map(|der| crate::tls::fingerprint(&der))
            .unwrap_or_default()
    }

    pub(super) fn cluster_status(&self) -> Reply {
        let st = self.state.lock().expect("lab state");
        // A standalone host: one node entry, nodeid 0, no cluster entry
        // (pve-manager 9.2.11 `API2/Cluster.pm` 867-1000; pve-cluster `status.c` 305-365).
        if st.standalone {
            let out: Vec<Value> = st
                .nodes
                .values()
                .map(|n| {
                    json!({"type": "node", "id": format!("node/{}", n.name),
                "name": n.name, "online": 1, "nodeid": 0, "local": 1, "level": ""})
                })
                .collect();
            return Reply::data(Value::Array(out));
        }
        let mut out = vec![
            json!({"type": "cluster", "name": "lab", "quorate": 1, "nodes": st.nodes.len(), "version": 3}),
        ];
        for (i, n) in st.nodes.values().enumerate() {
            out.push(json!({"type": "node", "name": n.name, "online": u8::from(n.online), "nodeid": i + 1, "local": u8::from(i == 0)}));
        }
        Reply::data(Value::Array(out))
    }

    pub(super) fn resources(&self, kind: Option<&str>) -> Reply {
        let st = self.state.lock().expect("lab state");
        if kind.is_some_and(|k| k != "vm") {
            return Reply::data(json!([]));
        }
        // Containers share the VMID space and are listed beside the VMs
        // (pve-manager `API2/Cluster.pm` 263-615).
        let containers = st.containers.iter().map(|(vmid, ct)| {
            json!({"id": format!("lxc/{vmid}"), "type": "lxc", "vmid": vmid, "node": ct.node,
                "name": ct.hostname, "status": if ct.running {"running"} else {"stopped"}, "template": 0})
        });
        Reply::data(
            st.vms
                .values()
                .map(|vm| {
                    let mut o = json!({"id": format!("qemu/{}", vm.vmid), "type": "qemu", "vmid": vm.vmid, "node": vm.node,
                        // The QMP status while the process runs (pve-manager pvestatd.pm 341).
                        "status": match (vm.running, vm.paused) { (true, true) => "paused", (true, false) => "running", _ => "stopped" }, "template": 0,
                        "name": vm.config.get("name").cloned().unwrap_or_else(|| format!("VM {}", vm.vmid))});
                    // A VM being created has no pvestatd data yet: no name, status
                    // unknown (pve-manager `API2/Cluster.pm` 554-595, `API2Tools.pm` 81-119).
                    if vm.config.get("lock").is_some_and(|l| l == "create") {
                        o["status"] = json!("unknown");
                        o.as_object_mut().expect("object").remove("name");
                    }
                    if let Some(t) = vm.config.get("tags") {
                        o["tags"] = json!(t);
                    }
                    if let Some(l) = vm.config.get("lock") {
                        o["lock"] = json!(l);
                    }
                    o
                })
                .chain(containers)
                .collect(),
        )
    }

    pub(super) fn nextid(&self, vmid: Option<&String>) -> Reply {
        let st = self.state.lock().expect("lab state");
        match vmid.and_then(|v| v.parse::<u32>().ok()) {
            Some(v) if st.vms.contains_key(&v) || st.containers.contains_key(&v) => {
                let mut e = BTreeMap::new();
                e.insert("vmid".to_owned(), format!("VM {v} already exists"));
                Reply::params(e)
            }
            Some(v) => Reply::data(json!(v.to_string())),
            None => {
                let free = (100u32..)
                    .find(|v| !st.vms.contains_key(v) && !st.containers.contains_key(v))
                    .unwrap_or(100);
                Reply::data(json!(free.to_string()))
            }
        }
    }

    pub(super) fn network(&self, node: &str, kind: Option<&str>) -> Reply {
        let st = self.state.lock().expect("lab state");
        Reply::data(
            st.nodes[node]
                .network
                .iter()
                .filter(|i| match kind {
                    None => true,
                    Some("any_bridge") | Some("any_local_bridge") => i.kind == "bridge",
                    Some(k) => i.kind == k,
                })
                .map(|i| {
                    let mut o = json!({"iface": i.iface, "type": i.kind, "active": 1, "autostart": 1, "families": ["inet"], "method": "static"});
                    if i.vlan_aware {
                        o["bridge_vlan_aware"] = json!(1);
                    }
                    for (k, v) in [("bridge_vids", &i.vids), ("bridge_ports", &i.ports), ("slaves", &i.slaves), ("cidr", &i.cidr)] {
                        if let Some(v) = v {
                            o[k] = json!(v);
                        }
                    }
                    if let Some(m) = i.mtu {
                        o["mtu"] = json!(m.to_string());
                    }
                    o
                })
                .collect(),
        )
    }
}

//! Live discovery for the wizard: what a Proxmox cluster has (hosts and their
//! addresses, bridges, bonds, storages, free VMIDs), read through the same client,
//! trust rules (fingerprint pin, `PROXMOX_VE_INSECURE` with its warning, otherwise
//! normal verification) and address book as every other Proxmox call.
//!
//! The wizard's `Discovery` trait is synchronous (prompts are); each discovery owns a
//! small current-thread runtime and blocks on the async client. Call it from a thread
//! that is not running a tokio runtime (the CLI's main thread is not).

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Mutex;

use serde_json::Value;

use super::client::{Client, ClientConfig, Credentials, Trust, int, node_path, params, text};
use super::error::PveError;
use crate::net::AddressBook;
use crate::wizard::{Access, Bond, Bridge, Connect, Discovery, DiscoveryError, HostInfo, Storage};

/// Opens a [`LiveDiscovery`] with the endpoint and token the wizard asked for.
pub struct LiveConnect {
    book: AddressBook,
    /// Accept any certificate when no fingerprint is given (`PROXMOX_VE_INSECURE`).
    insecure: bool,
}

impl LiveConnect {
    pub fn new(book: AddressBook, insecure: bool) -> Self {
        Self { book, insecure }
    }
}

impl Connect for LiveConnect {
    fn connect(&self, access: &Access) -> Result<Box<dyn Discovery + '_>, DiscoveryError> {
        let remote = |e: PveError| remote(&access.endpoint, &e);
        let trust = match (&access.fingerprint, self.insecure) {
            (Some(f), _) => Trust::Fingerprint(f.clone()),
            (None, true) => Trust::Insecure,
            (None, false) => Trust::Verify,
        };
        let credentials = Credentials::Token {
            id: access.token_id.clone(),
            secret: access.secret.clone(),
        };
        let cfg = ClientConfig::new(&access.endpoint, credentials, trust);
        let client = Client::new(cfg, &self.book).map_err(remote)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| DiscoveryError::Remote {
                endpoint: access.endpoint.clone(),
                message: format!("cannot start the I/O runtime: {e}"),
                fix: "plan offline with --discovery-file FILE (docs/discovery-file.md)".into(),
            })?;
        let d = LiveDiscovery {
            client,
            rt,
            networks: Mutex::default(),
        };
        // Fail at the connection question, not halfway through the layout.
        d.get::<Vec<Value>>("/nodes", &[])?;
        Ok(Box::new(d))
    }
}

/// A connected discovery; `/nodes/{n}/network` is read once per host.
pub struct LiveDiscovery {
    client: Client,
    rt: tokio::runtime::Runtime,
    networks: Mutex<BTreeMap<String, Vec<Value>>>,
}

fn remote(endpoint: &str, e: &PveError) -> DiscoveryError {
    DiscoveryError::Remote {
        endpoint: endpoint.to_owned(),
        message: e.to_string(),
        fix: "check the endpoint, the token (it needs Sys.Audit and Datastore.Audit) and the fingerprint, or plan offline with --discovery-file FILE".into(),
    }
}

impl LiveDiscovery {
    /// `/nodes/{host}`: host names come from the server, and are encoded too.
    fn node(&self, host: &str) -> Result<String, DiscoveryError> {
        node_path(host).map_err(|e| remote(self.client.endpoint(), &e))
    }

    fn get<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        p: &[(String, String)],
    ) -> Result<T, DiscoveryError> {
        self.rt
            .block_on(self.client.get(path, p))
            .map_err(|e| remote(self.client.endpoint(), &e))
    }

    fn network(&self, host: &str) -> Result<Vec<Value>, DiscoveryError> {
        let mut cache = self.networks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = cache.get(host) {
            return Ok(n.clone());
        }
        let n: Vec<Value> = self.get(&format!("{}/network", self.node(host)?), &[])?;
        cache.insert(host.to_owned(), n.clone());
        Ok(n)
    }

    /// The hosts that answer. An offline member (corosync says so in `/nodes`;
    /// every call proxied to it fails with 595) is left out with a warning
    /// instead of ending the discovery.
    fn node_names(&self) -> Result<Vec<String>, DiscoveryError> {
        let nodes: Vec<Value> = self.get("/nodes", &[])?;
        let mut names = Vec::new();
        for n in &nodes {
            let Some(name) = n.get("node").and_then(Value::as_str) else {
                continue;
            };
            if n.get("status").and_then(Value::as_str) == Some("offline") {
                tracing::warn!(
                    host = name,
                    "host is offline: left out of the discovery; add it to proxmox.hosts by hand if it belongs to the cluster"
                );
                continue;
            }
            names.push(name.to_owned());
        }
        names.sort();
        Ok(names)
    }
}

/// `cidr` (`10.8.16.10/24`) or `address` of an interface.
fn iface_address(i: &Value) -> Option<Ipv4Addr> {
    let a = i.get("cidr").or_else(|| i.get("address")).and_then(text)?;
    a.split('/').next()?.trim().parse().ok()
}

fn words(i: &Value, key: &str) -> Vec<String> {
    i.get(key)
        .and_then(text)
        .map(|s| s.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn kind(i: &Value) -> &str {
    i.get("type").and_then(Value::as_str).unwrap_or_default()
}

fn name(i: &Value) -> String {
    i.get("iface").and_then(text).unwrap_or_default()
}

/// The host's management address: the interface holding the default gateway, else
/// the first bridge with an address, else any interface with one.
pub fn management_address(network: &[Value]) -> Option<Ipv4Addr> {
    let with = |f: &dyn Fn(&Value) -> bool| network.iter().filter(|i| f(i)).find_map(iface_address);
    with(&|i| i.get("gateway").is_some())
        .or_else(|| with(&|i| kind(i).ends_with("Bridge") || kind(i) == "bridge"))
        .or_else(|| with(&|_| true))
}

pub fn bridges(network: &[Value]) -> Vec<Bridge> {
    let mut v: Vec<Bridge> = network
        .iter()
        .filter(|i| matches!(kind(i), "bridge" | "OVSBridge"))
        .map(|i| Bridge {
            name: name(i),
            ports: words(i, "bridge_ports"),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub fn bonds(network: &[Value]) -> Vec<Bond> {
    let mut v: Vec<Bond> = network
        .iter()
        .filter(|i| matches!(kind(i), "bond" | "OVSBond"))
        .map(|i| Bond {
            name: name(i),
            slaves: words(i, "slaves"),
            mtu: i
                .get("mtu")
                .and_then(int)
                .and_then(|m| u32::try_from(m).ok()),
            address: iface_address(i),
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub fn storages(list: &[Value]) -> Vec<Storage> {
    let mut v: Vec<Storage> = list
        .iter()
        .filter(|s| s.get("enabled").and_then(int) != Some(0))
        .filter_map(|s| {
            Some(Storage {
                name: s.get("storage").and_then(text)?,
                content: s
                    .get("content")
                    .and_then(text)
                    .map(|c| c.split(',').map(|x| x.trim().to_owned()).collect())
                    .unwrap_or_default(),
            })
        })
        .collect();
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

/// The `n` lowest ids from `floor` up that no guest uses.
pub fn free_vmids(floor: u32, used: &BTreeSet<u32>, n: usize) -> Vec<u32> {
    (floor..).filter(|id| !used.contains(id)).take(n).collect()
}

impl Discovery for LiveDiscovery {
    fn hosts(&self) -> Result<Vec<HostInfo>, DiscoveryError> {
        let mut out = Vec::new();
        for host in self.node_names()? {
            let network = self.network(&host)?;
            let address = management_address(&network).ok_or_else(|| DiscoveryError::Remote {
                endpoint: self.client.endpoint().to_owned(),
                message: format!("host {host} reports no IPv4 address on any interface"),
                fix: "give the host's management bridge an address, or plan offline with --discovery-file FILE".into(),
            })?;
            out.push(HostInfo {
                name: host.clone(),
                address,
                bridges: bridges(&network),
                bonds: bonds(&network),
                storages: self.storages(&host)?,
            });
        }
        Ok(out)
    }

    fn bridges(&self, host: &str) -> Result<Vec<Bridge>, DiscoveryError> {
        Ok(bridges(&self.network(host)?))
    }

    fn bonds(&self, host: &str) -> Result<Vec<Bond>, DiscoveryError> {
        Ok(bonds(&self.network(host)?))
    }

    fn storages(&self, host: &str) -> Result<Vec<Storage>, DiscoveryError> {
        let list: Vec<Value> = self.get(&format!("{}/storage", self.node(host)?), &[])?;
        Ok(storages(&list))
    }

    fn next_free_vmids(&self, n: usize) -> Result<Vec<u32>, DiscoveryError> {
        // `nextid` honours the cluster's configured range; guests above it are skipped.
        let next: Value = self.get("/cluster/nextid", &[])?;
        let floor = int(&next)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(100);
        let used: BTreeSet<u32> = self.used_vmids()?.into_iter().map(|(id, _)| id).collect();
        Ok(free_vmids(floor, &used, n))
    }

    fn used_vmids(&self) -> Result<Vec<(u32, String)>, DiscoveryError> {
        let guests: Vec<Value> =
            self.get("/cluster/resources", &params([("type", "vm".into())]))?;
        Ok(guests.iter().filter_map(guest).collect())
    }
}

/// A `/cluster/resources` guest as (VMID, `VM name on node`); `type` is `qemu` or `lxc`.
fn guest(g: &Value) -> Option<(u32, String)> {
    let vmid = u32::try_from(int(g.get("vmid")?)?).ok()?;
    let kind = match g.get("type").and_then(Value::as_str) {
        Some("lxc") => "container",
        _ => "VM",
    };
    let name = g.get("name").and_then(Value::as_str).unwrap_or("(unnamed)");
    let on = g
        .get("node")
        .and_then(Value::as_str)
        .map(|n| format!(" on {n}"))
        .unwrap_or_default();
    Some((vmid, format!("{kind} {name}{on}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network() -> Vec<Value> {
        vec![
            json!({"iface": "enp87s0", "type": "eth"}),
            json!({"iface": "vmbr0", "type": "bridge", "bridge_ports": "enp87s0", "cidr": "10.8.16.10/24", "gateway": "10.8.16.1"}),
            json!({"iface": "vmbr1", "type": "bridge", "bridge_ports": "", "address": "192.168.99.1"}),
            json!({"iface": "bond0", "type": "bond", "slaves": "enp2s0f0np0 enp2s0f1np1", "mtu": "9000", "cidr": "10.8.48.10/24"}),
        ]
    }

    #[test]
    fn guests_are_described_by_kind_name_and_node() {
        let g = json!({"vmid": 105, "type": "lxc", "name": "pihole", "node": "pve1"});
        assert_eq!(guest(&g), Some((105, "container pihole on pve1".into())));
        let g = json!({"vmid": "120", "type": "qemu"});
        assert_eq!(guest(&g), Some((120, "VM (unnamed)".into())));
    }

    #[test]
    fn network_answers_become_bridges_bonds_and_the_management_address() {
        let n = network();
        assert_eq!(management_address(&n), Some(Ipv4Addr::new(10, 8, 16, 10)));
        let b = bridges(&n);
        assert_eq!(b.len(), 2);
        assert_eq!(b[0].name, "vmbr0");
        assert_eq!(b[0].ports, vec!["enp87s0"]);
        assert!(b[1].ports.is_empty());
        let bonds = bonds(&n);
        assert_eq!(
            bonds,
            vec![Bond {
                name: "bond0".into(),
                slaves: vec!["enp2s0f0np0".into(), "enp2s0f1np1".into()],
                mtu: Some(9000),
                address: Some(Ipv4Addr::new(10, 8, 48, 10)),
            }]
        );
        // Without a gateway the first bridge with an address is the management one.
        let no_gw: Vec<Value> = n
            .into_iter()
            .map(|mut i| {
                i.as_object_mut().unwrap().remove("gateway");
                i
            })
            .collect();
        assert_eq!(
            management_address(&no_gw),
            Some(Ipv4Addr::new(10, 8, 16, 10))
        );
        assert_eq!(management_address(&[json!({"iface": "eno1"})]), None);
    }

    #[test]
    fn storages_keep_content_and_skip_disabled_ones() {
        let s = storages(&[
            json!({"storage": "local-lvm", "content": "rootdir,images"}),
            json!({"storage": "local", "content": "iso,vztmpl,backup"}),
            json!({"storage": "old", "content": "images", "enabled": 0}),
        ]);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "local");
        assert!(s[0].holds("iso"));
        assert!(s[1].holds("images") && !s[1].holds("iso"));
    }

    #[test]
    fn free_vmids_skip_every_guest() {
        let used: BTreeSet<u32> = [100, 101, 103].into();
        assert_eq!(free_vmids(100, &used, 3), vec![102, 104, 105]);
        assert_eq!(free_vmids(200, &used, 2), vec![200, 201]);
    }
}

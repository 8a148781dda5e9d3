//! The question flow: a draft profile (pre-filled with the seed layout) that each
//! section edits, every answer parsed and checked as it is typed, a final check through
//! a pluggable hook, and a summary from `plan::Plan::build`.
//!
//! Every question's default is the draft's current value, so re-running a section
//! after a failed final check starts from the person's own answers.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use secrecy::{ExposeSecret, SecretString};
use thiserror::Error;

use super::discovery::{Access, Connect, Discovery, DiscoveryError, HostInfo};
use super::parse::{self, Checked};
use super::prompter::{PromptError, Prompter};
use crate::plan::Plan;
use crate::profile::{
    Host, HostStorageLink, LinkRole, MetalLb, Network, NetworkRole, Node, NodeLink, Profile, Role,
};

#[derive(Debug, Error)]
pub enum WizardError {
    #[error(transparent)]
    Prompt(#[from] PromptError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("{0}\n  fix: {1}")]
    Unusable(String, String),
    #[error("the wizard was stopped; nothing was written")]
    Aborted,
}

/// Final validation of the assembled profile; an empty list means "fine".
/// The commands plug `lint` in here (`lint(p).error_lines()`).
pub type Check<'a> = &'a dyn Fn(&Profile) -> Vec<String>;

pub struct Options<'a> {
    /// Starting values; [`super::seed_draft`] is the seed's corrected layout.
    pub draft: Profile,
    /// Directory proposed for the token file.
    pub token_dir: PathBuf,
    pub check: Check<'a>,
}

/// The secret to store next to the profile (mode 0600), as `proxmox.tokenFile` says.
pub struct TokenFile {
    pub path: PathBuf,
    pub secret: SecretString,
}

pub struct Outcome {
    pub profile: Profile,
    pub token_file: Option<TokenFile>,
}

/// Ask everything and return the profile. Pure apart from the prompter and discovery.
pub fn run(
    p: &mut dyn Prompter,
    connect: &dyn Connect,
    opts: Options<'_>,
) -> Result<Outcome, WizardError> {
    let mut f = Flow {
        p,
        d: opts.draft,
        found: Vec::new(),
    };
    f.cluster()?;
    let (discovery, token_file) = f.proxmox(connect, &opts.token_dir)?;
    f.discover(discovery.as_ref())?;
    f.hosts()?;
    f.networks()?;
    f.host_details()?;
    f.nodes(discovery.as_ref())?;
    f.settings()?;
    loop {
        f.derive();
        let problems = problems(&f.d, opts.check);
        if problems.is_empty() {
            f.summary();
            return Ok(Outcome {
                profile: f.d,
                token_file,
            });
        }
        f.p.note("The profile has problems:");
        for pr in &problems {
            f.p.note(&format!("  ✗ {pr}"));
        }
        let choices = [
            "Change the networks",
            "Change the nodes",
            "Change Kubernetes, DNS and add-ons",
            "Save anyway",
            "Stop without saving",
        ]
        .map(String::from);
        match f.p.select("What now?", &choices, 0)? {
            0 => {
                f.networks()?;
                f.host_details()?;
            }
            1 => f.nodes(discovery.as_ref())?,
            2 => f.settings()?,
            3 => {
                f.summary();
                return Ok(Outcome {
                    profile: f.d,
                    token_file,
                });
            }
            _ => return Err(WizardError::Aborted),
        }
    }
}

fn problems(d: &Profile, check: Check<'_>) -> Vec<String> {
    let mut v = check(d);
    if let Err(e) = Plan::build(d) {
        v.push(e.to_string());
    }
    v
}

struct Flow<'a> {
    p: &'a mut dyn Prompter,
    d: Profile,
    /// Discovered hosts with their bridges, bonds and storages filled in.
    found: Vec<HostInfo>,
}

/// The `i`-th address after the network address (`10.8.16.0/24`, 20 → 10.8.16.20).
fn nth(net: &Ipv4Net, i: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()).saturating_add(i))
}

/// The first address from the `from`-th on that nobody in `taken` holds (discovered
/// hosts on a flat LAN often sit at .20 and up).
fn free_from(net: &Network, from: u32, taken: &[(Ipv4Addr, String)]) -> Ipv4Addr {
    let room = net.subnet.hosts().count() as u32;
    (from..room)
        .map(|k| nth(&net.subnet, k))
        .find(|a| Some(*a) != net.gateway && taken.iter().all(|(t, _)| t != a))
        .unwrap_or_else(|| nth(&net.subnet, from))
}

/// Hosts that carry two or more control planes while another host could take one:
/// losing that host loses etcd quorum with them.
fn shared_control_plane_hosts(nodes: &[Node], host_count: usize) -> Vec<String> {
    if host_count < 2 {
        return Vec::new();
    }
    let mut by_host: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
    for n in nodes.iter().filter(|n| n.role == Role::Controlplane) {
        by_host.entry(&n.host).or_default().push(&n.name);
    }
    by_host
        .into_iter()
        .filter(|(_, cps)| cps.len() > 1)
        .map(|(host, cps)| {
            format!(
                "control planes {} share host {host}: losing it loses etcd quorum with them; spread them over hosts",
                cps.join(" and ")
            )
        })
        .collect()
}

fn role_rank(r: NetworkRole) -> u8 {
    match r {
        NetworkRole::Infrastructure => 0,
        NetworkRole::Management => 1,
        NetworkRole::Workload => 2,
        NetworkRole::Storage => 3,
        NetworkRole::Other => 4,
    }
}

impl Flow<'_> {
    /// Ask until `check` accepts the answer, showing each rejection's reason.
    fn ask<T>(
        &mut self,
        prompt: &str,
        default: &str,
        check: impl Fn(&str) -> Checked<T>,
    ) -> Result<T, WizardError> {
        loop {
            let answer = self.p.input(prompt, Some(default))?;
            match check(&answer) {
                Ok(v) => return Ok(v),
                Err(why) => self.p.note(&format!("  ✗ {why}")),
            }
        }
    }

    fn net(&self, role: NetworkRole) -> Option<&Network> {
        self.d.network(role)
    }

    fn cluster(&mut self) -> Result<(), WizardError> {
        let name = self.d.metadata.name.clone();
        self.d.metadata.name = self.ask("Cluster name", &name, parse::dns_label)?;
        let desc = self.d.metadata.description.clone().unwrap_or_default();
        let desc = self.ask("Description (optional)", &desc, |s| Ok(s.trim().to_owned()))?;
        self.d.metadata.description = (!desc.is_empty()).then_some(desc);
        Ok(())
    }

    fn proxmox<'c>(
        &mut self,
        connect: &'c dyn Connect,
        token_dir: &std::path::Path,
    ) -> Result<(Box<dyn Discovery + 'c>, Option<TokenFile>), WizardError> {
        loop {
            let ep = self.d.proxmox.endpoint.clone();
            self.d.proxmox.endpoint =
                self.ask("Proxmox API endpoint", &ep, parse::proxmox_endpoint)?;
            let id = self.d.proxmox.token_id.clone();
            self.d.proxmox.token_id =
                self.ask("API token id (USER@REALM!TOKENID)", &id, parse::token_id)?;
            let secret = self
                .p
                .password("API token secret (never stored in the profile; empty to skip)")?;
            let fp = self.d.proxmox.fingerprint.clone().unwrap_or_default();
            self.d.proxmox.fingerprint = self.ask(
                "API certificate SHA-256 fingerprint (empty: trust system CAs)",
                &fp,
                parse::fingerprint,
            )?;
            let token_file = if secret.expose_secret().is_empty() {
                None
            } else if self.p.confirm(
                "Save the token secret to a 0600 file (proxmox.tokenFile)?",
                true,
            )? {
                let def = token_dir
                    .join(format!("{}-proxmox.token", self.d.metadata.name))
                    .display()
                    .to_string();
                let path = self.ask("Token file", &def, |s| {
                    let s = s.trim();
                    if s.is_empty() {
                        Err("give a file path".to_owned())
                    } else {
                        Ok(PathBuf::from(s))
                    }
                })?;
                Some(TokenFile {
                    path,
                    secret: secret.clone(),
                })
            } else {
                None
            };
            self.d.proxmox.token_file = token_file.as_ref().map(|t| t.path.display().to_string());
            let access = Access {
                endpoint: self.d.proxmox.endpoint.clone(),
                token_id: self.d.proxmox.token_id.clone(),
                secret,
                fingerprint: self.d.proxmox.fingerprint.clone(),
            };
            match connect.connect(&access) {
                Ok(d) => return Ok((d, token_file)),
                Err(e) => {
                    self.p.note(&format!("  ✗ {e}"));
                    if !self
                        .p
                        .confirm("Enter the Proxmox connection again?", true)?
                    {
                        return Err(e.into());
                    }
                }
            }
        }
    }

    fn discover(&mut self, d: &dyn Discovery) -> Result<(), WizardError> {
        let mut hosts = d.hosts()?;
        if hosts.is_empty() {
            return Err(WizardError::Unusable(
                "Proxmox reported no hosts".into(),
                "check that the token may read /nodes (PVEAuditor on /)".into(),
            ));
        }
        for h in &mut hosts {
            h.bridges = d.bridges(&h.name)?;
            h.bonds = d.bonds(&h.name)?;
            h.storages = d.storages(&h.name)?;
        }
        self.found = hosts;
        Ok(())
    }

    /// Which hosts run Talos VMs, the bridge, and the ISO and disk storages.
    fn hosts(&mut self) -> Result<(), WizardError> {
        let names: Vec<String> = self.found.iter().map(|h| h.name.clone()).collect();
        let checked: Vec<bool> = names
            .iter()
            .map(|n| self.d.proxmox.hosts.is_empty() || self.d.host(n).is_some())
            .collect();
        let picked = loop {
            let v = self
                .p
                .multi_select("Proxmox hosts for the Talos VMs", &names, &checked)?;
            if !v.is_empty() {
                break v;
            }
            self.p.note("  ✗ pick at least one host");
        };
        let chosen: Vec<HostInfo> = picked.iter().map(|&i| self.found[i].clone()).collect();
        // A VM may land on any chosen host, so the bridge and storages must exist on all.
        let common = |names_of: &dyn Fn(&HostInfo) -> Vec<String>| -> Vec<String> {
            names_of(&chosen[0])
                .into_iter()
                .filter(|n| chosen.iter().all(|h| names_of(h).contains(n)))
                .collect()
        };
        let bridges = common(&|h| h.bridges.iter().map(|b| b.name.clone()).collect());
        let iso = common(&|h| {
            h.storages
                .iter()
                .filter(|s| s.holds("iso"))
                .map(|s| s.name.clone())
                .collect()
        });
        let images = common(&|h| {
            h.storages
                .iter()
                .filter(|s| s.holds("images"))
                .map(|s| s.name.clone())
                .collect()
        });
        let on = chosen
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        for (what, list) in [
            ("bridge", &bridges),
            ("ISO storage", &iso),
            ("disk-image storage", &images),
        ] {
            if list.is_empty() {
                return Err(WizardError::Unusable(
                    format!("no {what} exists on every chosen host ({on})"),
                    format!("create the same {what} on each host, or choose fewer hosts"),
                ));
            }
        }
        let px = &mut self.d.proxmox;
        let choices: [(&str, &[String], &mut String); 3] = [
            ("Bridge for the VM NICs", &bridges, &mut px.bridge),
            ("Storage for the Talos ISO", &iso, &mut px.iso_storage),
            ("Storage for the VM disks", &images, &mut px.disk_storage),
        ];
        // The current value is the default, so a re-run keeps the earlier choice.
        for (q, list, cur) in choices {
            let def = list.iter().position(|x| x == cur).unwrap_or(0);
            *cur = list[self.p.select(q, list, def)?].clone();
        }
        let bridge = self.d.proxmox.bridge.clone();
        let old = std::mem::take(&mut self.d.proxmox.hosts);
        self.d.proxmox.hosts = chosen
            .iter()
            .map(|h| {
                let prev = old.iter().find(|o| o.name == h.name);
                Host {
                    name: h.name.clone(),
                    address: h.address,
                    uplink: h
                        .bridges
                        .iter()
                        .find(|b| b.name == bridge)
                        .and_then(|b| b.ports.first().cloned()),
                    storage: None,
                    oob: prev.map(|p| p.oob.clone()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(())
    }

    fn networks(&mut self) -> Result<(), WizardError> {
        let hosts: Vec<Ipv4Addr> = self.d.proxmox.hosts.iter().map(|h| h.address).collect();
        if let Some(lan) = self
            .net(NetworkRole::Management)
            .and_then(|m| super::seed::management_for(m, &hosts))
        {
            self.p.note(&format!(
                "The hosts sit on {}: proposing it (untagged) as the management network.",
                lan.subnet
            ));
            self.d
                .networks
                .retain(|n| n.role != NetworkRole::Management);
            self.d.networks.push(lan);
            self.d.networks.sort_by_key(|n| role_rank(n.role));
        }
        self.network(NetworkRole::Management, true)?;
        self.network(NetworkRole::Workload, true)?;
        self.network(NetworkRole::Storage, false)?;
        self.network(NetworkRole::Infrastructure, false)?;
        Ok(())
    }

    /// One network; `required` ones have a gateway and cannot be skipped.
    fn network(&mut self, role: NetworkRole, required: bool) -> Result<(), WizardError> {
        let (label, question) = match role {
            NetworkRole::Management => ("management", ""),
            NetworkRole::Workload => ("workload", ""),
            NetworkRole::Storage => (
                "storage",
                "Is there a storage network (Ceph, jumbo frames)?",
            ),
            _ => (
                "infrastructure",
                "Document an infrastructure network (switches, APs) for overlap checks?",
            ),
        };
        let current = self.net(role).cloned();
        if !required && !self.p.confirm(question, current.is_some())? {
            self.d.networks.retain(|n| n.role != role);
            return Ok(());
        }
        let cur = current.unwrap_or_else(|| Network {
            name: label.into(),
            role,
            vlan: None,
            subnet: "10.0.0.0/24".parse().expect("constant"),
            gateway: None,
            mtu: 1500,
            routed: true,
            reserved: vec![],
            devices: vec![],
        });
        let others: Vec<Network> = self
            .d
            .networks
            .iter()
            .filter(|n| n.role != role)
            .cloned()
            .collect();
        let vlan_default = cur.vlan.map(|v| v.to_string()).unwrap_or_default();
        let vlan = self.ask(
            &format!("{label} VLAN (empty: untagged)"),
            &vlan_default,
            |s| {
                let v = match s.trim() {
                    "" => None,
                    s => Some(parse::vlan(s)?),
                };
                match others.iter().find(|o| o.vlan == v) {
                    Some(o) => Err(format!(
                        "{} is already the {} network (at most one network is untagged)",
                        crate::profile::vlan_label(v),
                        o.name
                    )),
                    None => Ok(v),
                }
            },
        )?;
        let subnet = self.ask(&format!("{label} subnet"), &cur.subnet.to_string(), |s| {
            let net = parse::subnet(s)?;
            match others
                .iter()
                .find(|o| o.subnet.contains(&net) || net.contains(&o.subnet))
            {
                Some(o) => Err(format!(
                    "{net} overlaps the {} network {}",
                    o.name, o.subnet
                )),
                None => Ok(net),
            }
        })?;
        let gw_default = cur
            .gateway
            .filter(|g| subnet.contains(g))
            .unwrap_or_else(|| nth(&subnet, 1))
            .to_string();
        let gw_prompt = if required {
            format!("{label} gateway")
        } else {
            format!("{label} gateway (empty: none)")
        };
        let gateway = self.ask(&gw_prompt, &gw_default, |s| {
            if s.trim().is_empty() && !required {
                return Ok(None);
            }
            parse::host_in(parse::ipv4(s)?, &subnet, None).map(Some)
        })?;
        let (mtu, routed) = if role == NetworkRole::Storage {
            let mtu = self.ask("storage MTU", &cur.mtu.to_string(), |s| {
                let m: u32 = parse::number(s, "MTU")?;
                if (576..=9216).contains(&m) {
                    Ok(m)
                } else {
                    Err(format!("MTU {m} is outside 576-9216"))
                }
            })?;
            let routed = self
                .p
                .confirm("Is the storage network routed to other VLANs?", cur.routed)?;
            (mtu, routed)
        } else {
            (cur.mtu, cur.routed)
        };
        let reserved = self.ask(
            &format!("{label}: reserved ranges (first-last=purpose, ending in `dhcp` for a DHCP pool; …; empty: none)"),
            &parse::reservations_text(&cur.reserved),
            |s| {
                let r = parse::reservations(s)?;
                match r.iter().find(|r| !r.range.within(&subnet)) {
                    Some(bad) => Err(format!("{} is not inside {subnet}", bad.range)),
                    None => Ok(r),
                }
            },
        )?;
        let devices = self.ask(
            &format!("{label}: devices with fixed addresses (name=address, then a kind if you like; …; empty: none)"),
            &parse::devices_text(&cur.devices),
            |s| {
                let d = parse::devices(s)?;
                for dev in &d {
                    parse::host_in(dev.address, &subnet, gateway)
                        .map_err(|e| format!("{}: {e}", dev.name))?;
                }
                Ok(d)
            },
        )?;
        let net = Network {
            name: cur.name,
            role,
            vlan,
            subnet,
            gateway,
            mtu,
            routed,
            reserved,
            devices,
        };
        self.d.networks.retain(|n| n.role != role);
        let at = self
            .d
            .networks
            .iter()
            .position(|n| role_rank(n.role) > role_rank(role))
            .unwrap_or(self.d.networks.len());
        self.d.networks.insert(at, net);
        Ok(())
    }

    /// Storage bonds come from discovery; out-of-band devices are asked per host.
    fn host_details(&mut self) -> Result<(), WizardError> {
        let storage = self.net(NetworkRole::Storage).map(|n| n.subnet);
        let mgmt = self
            .net(NetworkRole::Management)
            .map(|n| (n.subnet, n.gateway));
        for i in 0..self.d.proxmox.hosts.len() {
            let name = self.d.proxmox.hosts[i].name.clone();
            let bonds = self
                .found
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.bonds.clone())
                .unwrap_or_default();
            let link = storage.and_then(|net| {
                bonds.iter().find_map(|b| {
                    let addr = b.address.filter(|a| net.contains(a))?;
                    Some(HostStorageLink {
                        interface: b.name.clone(),
                        address: addr,
                        members: b.slaves.clone(),
                        mtu: b.mtu,
                    })
                })
            });
            if let Some(l) = &link {
                self.p.note(&format!(
                    "{name}: storage link {} {} (discovered)",
                    l.interface, l.address
                ));
            }
            self.d.proxmox.hosts[i].storage = link;
            let cur = parse::devices_text(&self.d.proxmox.hosts[i].oob);
            let oob = self.ask(
                &format!("{name}: out-of-band management (name=address, then a kind if you like; …; empty: none)"),
                &cur,
                |s| {
                    let d = parse::devices(s)?;
                    if let Some((net, gw)) = mgmt {
                        for dev in &d {
                            parse::host_in(dev.address, &net, gw)
                                .map_err(|e| format!("{}: {e}", dev.name))?;
                        }
                    }
                    Ok(d)
                },
            )?;
            self.d.proxmox.hosts[i].oob = oob;
        }
        Ok(())
    }

    /// Addresses already claimed by something other than node `skip`.
    fn taken(&self, skip: usize) -> Vec<(Ipv4Addr, String)> {
        let mut v = Vec::new();
        for n in &self.d.networks {
            v.extend(n.gateway.map(|g| (g, format!("the {} gateway", n.name))));
            v.extend(n.devices.iter().map(|d| (d.address, d.name.clone())));
        }
        for h in &self.d.proxmox.hosts {
            v.push((h.address, h.name.clone()));
            v.extend(h.oob.iter().map(|d| (d.address, d.name.clone())));
        }
        for (_, n) in self.d.nodes.iter().enumerate().filter(|(i, _)| *i != skip) {
            v.push((n.management.address, n.name.clone()));
            v.push((n.workload.address, n.name.clone()));
        }
        v
    }

    fn nodes(&mut self, discovery: &dyn Discovery) -> Result<(), WizardError> {
        let hosts: Vec<String> = self
            .d
            .proxmox
            .hosts
            .iter()
            .map(|h| h.name.clone())
            .collect();
        let count_default = if self.d.nodes.is_empty() {
            hosts.len()
        } else {
            self.d.nodes.len()
        };
        let count = self.ask("Number of Talos nodes", &count_default.to_string(), |s| {
            let n: usize = parse::number(s, "node count")?;
            if (1..=64).contains(&n) {
                Ok(n)
            } else {
                Err("between 1 and 64 nodes".into())
            }
        })?;
        let free = discovery.next_free_vmids(count)?;
        let required = |role: NetworkRole, name: &str| {
            self.net(role).cloned().ok_or_else(|| {
                WizardError::Unusable(
                    format!("the draft has no {name} network"),
                    "answer the network questions before the node questions".into(),
                )
            })
        };
        let mgmt = required(NetworkRole::Management, "management")?;
        let work = required(NetworkRole::Workload, "workload")?;
        self.d.nodes.truncate(count);
        let roles = vec!["controlplane".to_owned(), "worker".to_owned()];
        for i in 0..count {
            let prev = self.d.nodes.get(i).cloned();
            let default_name = prev
                .as_ref()
                .map_or_else(|| format!("talos-k8s-{:02}", i + 1), |n| n.name.clone());
            let used_names: Vec<String> =
                self.d.nodes[..i].iter().map(|n| n.name.clone()).collect();
            let name = self.ask(&format!("Node {} name", i + 1), &default_name, |s| {
                let n = parse::dns_label(s)?;
                if used_names.contains(&n) {
                    Err(format!("{n} is already a node"))
                } else {
                    Ok(n)
                }
            })?;
            let host_default = prev
                .as_ref()
                .and_then(|n| hosts.iter().position(|h| *h == n.host))
                .unwrap_or(i % hosts.len());
            let host =
                hosts[self
                    .p
                    .select(&format!("{name}: Proxmox host"), &hosts, host_default)?]
                .clone();
            let used_ids: Vec<u32> = self.d.nodes[..i].iter().map(|n| n.vmid).collect();
            let vmid_default = prev
                .as_ref()
                .map_or(free.get(i).copied().unwrap_or(100 + i as u32), |n| n.vmid);
            let vmid = self.ask(&format!("{name}: VMID"), &vmid_default.to_string(), |s| {
                let id: u32 = parse::number(s, "VMID")?;
                if !(100..=999_999_999).contains(&id) {
                    Err("Proxmox VMIDs run from 100 to 999999999".into())
                } else if used_ids.contains(&id) {
                    Err(format!("VMID {id} is already another node's"))
                } else {
                    Ok(id)
                }
            })?;
            let role_default = usize::from(prev.as_ref().is_some_and(|n| n.role == Role::Worker));
            let role = match self
                .p
                .select(&format!("{name}: role"), &roles, role_default)?
            {
                0 => Role::Controlplane,
                _ => Role::Worker,
            };
            let taken = self.taken(i);
            let addr = |net: &Network, cur: Option<Ipv4Addr>, taken: &[(Ipv4Addr, String)]| {
                let d = cur.unwrap_or_else(|| free_from(net, 20 + i as u32, taken));
                let taken = taken.to_vec();
                let net = net.clone();
                (d.to_string(), move |s: &str| {
                    let ip = parse::host_in(parse::ipv4(s)?, &net.subnet, net.gateway)?;
                    match taken.iter().find(|(a, _)| *a == ip) {
                        Some((_, who)) => Err(format!("{ip} is already used by {who}")),
                        None => Ok(ip),
                    }
                })
            };
            let (def, check) = addr(&mgmt, prev.as_ref().map(|n| n.management.address), &taken);
            let m = self.ask(&format!("{name}: management address"), &def, check)?;
            let mut taken = taken;
            taken.push((m, name.clone()));
            let (def, check) = addr(&work, prev.as_ref().map(|n| n.workload.address), &taken);
            let w = self.ask(&format!("{name}: workload address"), &def, check)?;
            let node = Node {
                name,
                host,
                vmid,
                role,
                management: NodeLink::new(m),
                workload: NodeLink::new(w),
                pod_cidr: None,
                cores: None,
                memory: None,
                disk: None,
            };
            if i < self.d.nodes.len() {
                self.d.nodes[i] = node;
            } else {
                self.d.nodes.push(node);
            }
        }
        for warning in shared_control_plane_hosts(&self.d.nodes, hosts.len()) {
            self.p.note(&format!("  ⚠ {warning}"));
        }
        Ok(())
    }

    /// Kubernetes, pod addressing, DNS, Talos, resources, routing and MetalLB.
    fn settings(&mut self) -> Result<(), WizardError> {
        let k = self.d.kubernetes.clone();
        self.d.kubernetes.version = self.ask("Kubernetes version", &k.version, |s| {
            let s = s.trim().trim_start_matches('v');
            if s.split('.').count() == 3 && s.split('.').all(|p| p.parse::<u32>().is_ok()) {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` is not a version like 1.36.3"))
            }
        })?;
        let first_cp = self
            .d
            .nodes
            .iter()
            .find(|n| n.role == Role::Controlplane)
            .map(|n| n.management.address);
        // Keep a typed endpoint unless it names an address no node has any more.
        let node_ips: Vec<Ipv4Addr> = self.d.nodes.iter().map(|n| n.management.address).collect();
        let stale = k.endpoint.is_empty()
            || endpoint_ip(&k.endpoint).is_some_and(|ip| !node_ips.contains(&ip));
        let ep_default = match first_cp {
            Some(a) if stale => format!("https://{a}:6443"),
            _ => k.endpoint.clone(),
        };
        let old_ep = endpoint_ip(&k.endpoint);
        self.d.kubernetes.endpoint = self.ask("Kubernetes API endpoint", &ep_default, |s| {
            let s = s.trim();
            match crate::plan::endpoint_host(s) {
                Some(_)
                    if s.rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
                {
                    Ok(s.to_owned())
                }
                _ => Err(format!(
                    "`{s}` is not https://HOST:PORT (e.g. https://10.8.16.20:6443)"
                )),
            }
        })?;
        let nets: Vec<Network> = self.d.networks.clone();
        let overlaps = move |net: Ipv4Net| -> Checked<Ipv4Net> {
            match nets
                .iter()
                .find(|o| o.subnet.contains(&net) || net.contains(&o.subnet))
            {
                Some(o) => Err(format!(
                    "{net} overlaps the {} network {}",
                    o.name, o.subnet
                )),
                None => Ok(net),
            }
        };
        let svc = self.ask("Service subnet", &k.service_subnet.to_string(), |s| {
            overlaps(parse::subnet(s)?)
        })?;
        self.d.kubernetes.service_subnet = svc;
        let count = self.d.nodes.len();
        let pod_default = self.pod_block_default(count);
        let pod = self.ask(
            "Pod subnet (routed; one block per node is carved from it)",
            &pod_default.to_string(),
            |s| {
                let net = overlaps(parse::subnet(s)?)?;
                if net.contains(&svc) || svc.contains(&net) {
                    return Err(format!("{net} overlaps the service subnet {svc}"));
                }
                Ok(net)
            },
        )?;
        let prefix = self.ask(
            "Pod CIDR prefix per node",
            &k.node_pod_prefix.to_string(),
            |s| {
                let p: u8 = parse::number(s, "prefix length")?;
                let room = if p >= pod.prefix_len() && p <= 30 {
                    1u64 << (p - pod.prefix_len()).min(32)
                } else {
                    0
                };
                if room >= count as u64 {
                    Ok(p)
                } else {
                    Err(format!(
                        "{pod} holds {room} blocks of /{p}, but there are {count} nodes"
                    ))
                }
            },
        )?;
        self.d.kubernetes.pod_subnet = pod;
        self.d.kubernetes.node_pod_prefix = prefix;
        let dns = self.d.dns.clone();
        self.d.dns.servers = self.ask(
            "DNS servers (comma-separated)",
            &parse::join(&dns.servers),
            |s| {
                let v = parse::ipv4_list(s)?;
                if v.is_empty() {
                    Err("give at least one DNS server".into())
                } else {
                    Ok(v)
                }
            },
        )?;
        let domain = self.ask(
            "Local DNS domain (empty: none)",
            dns.domain.as_deref().unwrap_or(""),
            |s| {
                let s = s.trim().trim_end_matches('.');
                if s.is_empty() {
                    return Ok(None);
                }
                s.split('.')
                    .map(parse::dns_label)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(s.to_owned()))
            },
        )?;
        self.d.dns.domain = domain;
        // Records that named the old endpoint follow the new one (going back must not keep it).
        let mut dns = dns;
        if let (Some(old), Some(new)) = (old_ep, endpoint_ip(&self.d.kubernetes.endpoint)) {
            for r in dns.records.iter_mut().filter(|r| r.address == old) {
                r.address = new;
            }
        }
        let rec_default = if dns.records.is_empty() {
            endpoint_ip(&self.d.kubernetes.endpoint)
                .map(|a| format!("k8s-api={a}"))
                .unwrap_or_default()
        } else {
            parse::records_text(&dns.records)
        };
        self.d.dns.records = self.ask(
            "Local DNS records (name=address; …; empty: none)",
            &rec_default,
            parse::dns_records,
        )?;

        let t = self.d.talos.clone();
        self.d.talos.version = self.ask("Talos version", &t.version, |s| {
            let s = s.trim();
            let v = if s.starts_with('v') {
                s.to_owned()
            } else {
                format!("v{s}")
            };
            if v[1..].split('.').count() == 3 && v[1..].split('.').all(|p| p.parse::<u32>().is_ok())
            {
                Ok(v)
            } else {
                Err(format!("`{s}` is not a version like v1.13.9"))
            }
        })?;
        self.d.talos.install_disk =
            self.ask("Install disk inside the VM", &t.install_disk, |s| {
                let s = s.trim();
                if s.starts_with("/dev/") {
                    Ok(s.to_owned())
                } else {
                    Err("a device path such as /dev/sda".into())
                }
            })?;
        let r = self.d.node_defaults.clone();
        self.d.node_defaults.cores = self.ask("CPU cores per node", &r.cores.to_string(), |s| {
            positive(s, "core count")
        })?;
        self.d.node_defaults.memory =
            self.ask("Memory per node (MiB)", &r.memory.to_string(), |s| {
                let m = positive(s, "memory size")?;
                if m < 2048 {
                    Err("Talos needs at least 2048 MiB".into())
                } else {
                    Ok(m)
                }
            })?;
        self.d.node_defaults.disk = self.ask("Disk per node (GiB)", &r.disk.to_string(), |s| {
            let g = positive(s, "disk size")?;
            if g < 10 {
                Err("Talos needs at least 10 GiB".into())
            } else {
                Ok(g)
            }
        })?;
        self.d.routing.masquerade = self.p.confirm(
            "Masquerade pod traffic? (only if you cannot add static routes on the gateway)",
            self.d.routing.masquerade,
        )?;
        self.metallb()
    }

    /// Values that follow from the answers, recomputed after every (re-)run of a section.
    fn derive(&mut self) {
        for n in &mut self.d.nodes {
            n.pod_cidr = None;
        }
        // Written out per node so the profile shows (and pins) each node's block. When
        // the pod subnet is too small they stay empty and the plan check reports why.
        if let Ok(cidrs) = crate::plan::pod_cidrs(&self.d) {
            for (n, c) in self.d.nodes.iter_mut().zip(cidrs) {
                n.pod_cidr = Some(c);
            }
        }
        self.d.kubernetes.allow_scheduling_on_control_planes = Some(self.d.all_control_planes());
        self.d.addons.cilium.native_routing_cidr = Some(self.d.kubernetes.pod_subnet);
    }

    fn pod_block_default(&self, count: usize) -> Ipv4Net {
        let cur = self.d.kubernetes.pod_subnet;
        let clash = self
            .d
            .networks
            .iter()
            .any(|n| n.subnet.contains(&cur) || cur.contains(&n.subnet));
        if !clash {
            return cur;
        }
        // The block right after the workload subnet, big enough for one /24 per node.
        let after = self
            .net(NetworkRole::Workload)
            .map_or(0, |n| u32::from(n.subnet.broadcast()).saturating_add(1));
        let bits = (count.max(1) as u32).next_power_of_two().trailing_zeros() as u8;
        let len = 24u8.saturating_sub(bits);
        Ipv4Net::new(Ipv4Addr::from(after), len).map_or(cur, |n| n.trunc())
    }

    fn metallb(&mut self) -> Result<(), WizardError> {
        let Some(work) = self.net(NetworkRole::Workload).cloned() else {
            return Ok(());
        };
        let cur = self.d.addons.metallb.clone();
        let default = cur
            .as_ref()
            .map(|m| m.pool)
            .filter(|p| p.within(&work.subnet))
            .map_or_else(
                || {
                    // .10-.200 of the workload subnet's last /24.
                    let last24 = u32::from(work.subnet.broadcast()) & !0xff;
                    format!(
                        "{}-{}",
                        Ipv4Addr::from(last24 + 10),
                        Ipv4Addr::from(last24 + 200)
                    )
                },
                |p| p.to_string(),
            );
        let nodes: Vec<(Ipv4Addr, String)> = self
            .d
            .nodes
            .iter()
            .map(|n| (n.workload.address, n.name.clone()))
            .collect();
        let pool = self.ask(
            "MetalLB address pool (first-last; empty: no MetalLB)",
            &default,
            |s| {
                if s.trim().is_empty() {
                    return Ok(None);
                }
                let r = parse::range(s)?;
                if !r.within(&work.subnet) {
                    return Err(format!(
                        "{r} is not inside the workload subnet {}",
                        work.subnet
                    ));
                }
                if let Some(g) = work.gateway.filter(|g| r.contains(*g)) {
                    return Err(format!("{r} contains the gateway {g}"));
                }
                if let Some((a, n)) = nodes.iter().find(|(a, _)| r.contains(*a)) {
                    return Err(format!("{r} contains {n}'s address {a}"));
                }
                if let Some(res) = work.reserved.iter().find(|x| x.range.overlaps(&r)) {
                    return Err(format!(
                        "{r} overlaps the reserved range {} ({})",
                        res.range, res.purpose
                    ));
                }
                Ok(Some(r))
            },
        )?;
        self.d.addons.metallb = pool.map(|pool| {
            let mut m = cur.unwrap_or(MetalLb {
                version: "0.16.1".into(),
                pool_name: "default".into(),
                pool,
                interface: LinkRole::Workload,
            });
            m.pool = pool;
            m
        });
        Ok(())
    }

    fn summary(&mut self) {
        let plan = match Plan::build(&self.d) {
            Ok(p) => p,
            Err(e) => {
                self.p.note(&format!("(no plan: {e})"));
                return;
            }
        };
        let mut out = format!(
            "\nPlan for cluster {} — endpoint {}, Talos {}, Kubernetes {}\n",
            plan.cluster, plan.endpoint, plan.talos_version, plan.kubernetes_version
        );
        for n in &plan.nodes {
            out.push_str(&format!(
                "  {:<14} on {:<14} VMID {:<5} {:<12} mgmt {} ({})  workload {} ({})  pods {}\n",
                n.name,
                n.host,
                n.vmid,
                n.role.as_str(),
                n.management.address,
                n.management.mac,
                n.workload.address,
                n.workload.mac,
                n.pod_cidr
            ));
        }
        if let Some(pool) = plan.metallb_pool {
            out.push_str(&format!("  MetalLB pool {pool}\n"));
        }
        if !plan.masquerade {
            out.push_str("  Static routes the gateway needs (pods are not NATed):\n");
            for r in &plan.gateway_routes {
                out.push_str(&format!(
                    "    {} via {}  ({})\n",
                    r.destination, r.via, r.node
                ));
            }
        }
        self.p.note(&out);
    }
}

fn positive(s: &str, what: &str) -> Checked<u32> {
    match parse::number::<u32>(s, what)? {
        0 => Err(format!("the {what} must be above 0")),
        n => Ok(n),
    }
}

fn endpoint_ip(ep: &str) -> Option<Ipv4Addr> {
    crate::plan::endpoint_host(ep)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_control_planes_on_one_of_several_hosts_are_warned() {
        let node = |name: &str, host: &str| Node {
            name: name.into(),
            host: host.into(),
            vmid: 100,
            role: Role::Controlplane,
            management: NodeLink::new(Ipv4Addr::LOCALHOST),
            workload: NodeLink::new(Ipv4Addr::LOCALHOST),
            pod_cidr: None,
            cores: None,
            memory: None,
            disk: None,
        };
        let nodes = [node("cp1", "a"), node("cp2", "a"), node("cp3", "b")];
        let w = shared_control_plane_hosts(&nodes, 2);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("cp1 and cp2 share host a"), "{w:?}");
        assert!(shared_control_plane_hosts(&nodes, 1).is_empty());
        assert!(shared_control_plane_hosts(&nodes[1..], 2).is_empty());
    }
}

//! `talos-pve diff`: how the live cluster differs from the profile. VMs to add,
//! remove or change (Proxmox), per node the running Talos and kubelet versions, a
//! semantic machine-config diff with secrets redacted (`config`), the pod CIDR and
//! the gateway routes that follow from it, and the add-on versions. Read-only: no
//! write reaches any system (the config check is an ApplyConfiguration dry run).
//!
//! The machine-config diff compares the config the cluster directory holds (what
//! talos-pve last applied) with the one the profile renders now; a dry run of the
//! held config against the node tells whether the node still runs it.

pub mod config;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::addons::metallb::NAMESPACE as METALLB_NS;
use crate::artifacts;
use crate::cluster_dir::ClusterDir;
use crate::plan::Plan;
use crate::profile::Profile;
use crate::proxmox::ownership::{self, Claim};
use crate::proxmox::{inventory, provision, vm};
use crate::talos::api::messages::ApplyMode;
use crate::talos::api::{Target, TlsMode};
use crate::talos::compat;
use crate::talos::config::{self as tc, Contract};
use crate::up::Env;
use crate::upgrade::{Clients, Running, observe};

pub use config::{Apply, Change};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diff {
    pub cluster: String,
    pub vms: Vec<VmChange>,
    pub nodes: Vec<NodeDiff>,
    pub addons: Vec<Versions>,
    /// Gateway routes the live pod CIDRs imply and the profile does not, and back.
    pub routes: Routes,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmChange {
    pub node: String,
    pub vmid: u32,
    /// `add`, `remove` or `change`.
    pub change: &'static str,
    pub details: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Versions {
    pub name: String,
    /// What runs, or why that is unknown.
    pub running: String,
    pub profile: String,
}

impl Versions {
    fn differs(&self) -> bool {
        let norm = |s: &str| compat::Version::parse(s);
        match (norm(&self.running), norm(&self.profile)) {
            (Some(a), Some(b)) => a != b,
            _ => self.running != self.profile,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeDiff {
    pub node: String,
    pub talos: Versions,
    pub kubelet: Versions,
    /// Machine-config changes the profile makes, secrets redacted.
    pub config: Vec<Change>,
    /// How `up` applies them: in place, or staged with a rolling reboot.
    pub apply: Apply,
    /// Set when the node does not run the config the cluster directory holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Versions,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Routes {
    pub add: Vec<String>,
    pub remove: Vec<String>,
}

impl Diff {
    /// Number of differences; 0 means the cluster is what the profile says.
    pub fn count(&self) -> usize {
        self.vms.len()
            + self
                .nodes
                .iter()
                .map(|n| {
                    usize::from(n.talos.differs())
                        + usize::from(n.kubelet.differs())
                        + n.config.len()
                        + usize::from(n.drift.is_some())
                        + usize::from(n.pod_cidr.differs())
                })
                .sum::<usize>()
            + self.addons.iter().filter(|a| a.differs()).count()
            + self.routes.add.len()
            + self.routes.remove.len()
    }

    pub fn render(&self) -> String {
        let mut o = format!("Cluster {}: ", self.cluster);
        let n = self.count();
        if n == 0 {
            o += "no differences from the profile\n";
            return o;
        }
        o += &format!("{n} difference(s) from the profile\n");
        if !self.vms.is_empty() {
            o += "\n  VMs:\n";
            for v in &self.vms {
                o += &format!("    {} {} (VMID {})\n", v.change, v.node, v.vmid);
                for d in &v.details {
                    o += &format!("        {d}\n");
                }
            }
        }
        let versions = |o: &mut String, label: &str, v: &Versions| {
            if v.differs() {
                *o += &format!("      {label}: {} → {}\n", v.running, v.profile);
            }
        };
        for nd in &self.nodes {
            let changed = nd.talos.differs()
                || nd.kubelet.differs()
                || !nd.config.is_empty()
                || nd.drift.is_some()
                || nd.pod_cidr.differs();
            if !changed {
                continue;
            }
            o += &format!("\n  {}:\n", nd.node);
            versions(&mut o, "Talos", &nd.talos);
            versions(&mut o, "kubelet", &nd.kubelet);
            versions(&mut o, "pod CIDR", &nd.pod_cidr);
            if let Some(d) = &nd.drift {
                o += &format!("      drift: {d}\n");
            }
            for c in &nd.config {
                let reboot = if config::needs_reboot(c) {
                    " (reboot needed)"
                } else {
                    ""
                };
                o += &format!("      config {c}{reboot}\n");
            }
            match nd.apply {
                Apply::Unchanged => {}
                Apply::NoReboot => o += "      config applies without reboot\n",
                Apply::RebootNeeded => {
                    o += "      config needs a reboot: `up` stages it and reboots nodes one at a time\n"
                }
            }
        }
        for a in self.addons.iter().filter(|a| a.differs()) {
            o += &format!("\n  {}: {} → {}\n", a.name, a.running, a.profile);
        }
        for r in &self.routes.add {
            o += &format!("\n  gateway route to add: {r}");
        }
        for r in &self.routes.remove {
            o += &format!("\n  gateway route to remove: {r}");
        }
        if !self.routes.add.is_empty() || !self.routes.remove.is_empty() {
            o += "\n";
        }
        o
    }
}

fn unknown(e: impl std::fmt::Display) -> String {
    format!(
        "unknown ({})",
        e.to_string().lines().next().unwrap_or_default()
    )
}

/// Compare the live cluster with the profile. Errors only when nothing can be
/// compared (Proxmox or the cluster's files unreadable); a node that does not
/// answer shows as `unknown (…)`.
pub async fn diff(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    dir: &ClusterDir,
) -> anyhow::Result<Diff> {
    let vms = vm_changes(env, profile, plan, dir).await?;
    let clients = Clients::open(env, dir).await?;
    let running = observe(env, plan, &clients).await;
    let secrets = artifacts::existing_secrets(dir)?;
    let contract = Contract::from_talos_version(&profile.talos.version)?;
    let live = clients.kube().list("/api/v1/nodes").await;
    let pod_cidr = |name: &str| -> String {
        match &live {
            Err(e) => unknown(e),
            Ok(nodes) => nodes
                .iter()
                .find(|n| n["metadata"]["name"] == name)
                .and_then(|n| n["spec"]["podCIDR"].as_str())
                .unwrap_or("(none)")
                .to_owned(),
        }
    };
    let mut nodes = Vec::new();
    for (n, r) in plan.nodes.iter().zip(&running) {
        let rendered = tc::render_node(profile, plan, n, &secrets, contract);
        let held = std::fs::read_to_string(artifacts::machineconfig_path(dir, &n.name)).ok();
        let config = match &held {
            Some(h) => config::diff(h, &rendered).map_err(anyhow::Error::msg)?,
            None => config::diff("", &rendered).map_err(anyhow::Error::msg)?,
        };
        let drift = match &held {
            None => Some("the cluster directory holds no config for it".to_owned()),
            Some(h) => runs(env, &clients, n, h.as_bytes()).await,
        };
        let Running { talos, kubelet, .. } = r;
        nodes.push(NodeDiff {
            node: n.name.clone(),
            talos: Versions {
                name: "Talos".into(),
                running: talos.clone().unwrap_or_else(unknown),
                profile: profile.talos.version.clone(),
            },
            kubelet: Versions {
                name: "kubelet".into(),
                running: kubelet.clone().unwrap_or_else(unknown),
                profile: format!("v{}", profile.kubernetes.version),
            },
            apply: config::classify(&config),
            config,
            drift,
            pod_cidr: Versions {
                name: "pod CIDR".into(),
                running: pod_cidr(&n.name),
                profile: n.pod_cidr.to_string(),
            },
        });
    }
    let routes = routes(plan, &nodes);
    let addons = addons(&clients, profile).await;
    Ok(Diff {
        cluster: plan.cluster.clone(),
        vms,
        nodes,
        addons,
        routes,
    })
}

/// Whether the node runs `held`: a dry run answers "No changes." when it does.
async fn runs(
    env: &Env,
    clients: &Clients,
    n: &crate::plan::NodePlan,
    held: &[u8],
) -> Option<String> {
    let check = async {
        let mut c = env.talos.client(
            &Target::of(n),
            &TlsMode::Mutual(clients.credentials().clone()),
        )?;
        c.apply_configuration(held, ApplyMode::Auto, true).await
    };
    match check.await {
        Ok(r) if r.mode_details.trim_end().ends_with("No changes.") => None,
        Ok(_) => Some(
            "the node runs another config than the one talos-pve applied (changed outside talos-pve)"
                .into(),
        ),
        Err(e) => Some(unknown(e)),
    }
}

/// Planned VMs missing or differing; VMs marked as this cluster's that the profile
/// no longer has.
async fn vm_changes(
    env: &Env,
    profile: &Profile,
    plan: &Plan,
    dir: &ClusterDir,
) -> anyhow::Result<Vec<VmChange>> {
    let vms = inventory::planned_vms(&env.pve, plan).await?;
    let owner = crate::cluster_id::owner(dir, &plan.cluster, false)?;
    let mut out = Vec::new();
    for n in &plan.nodes {
        let Some(found) = vms.get(&n.vmid) else {
            out.push(VmChange {
                node: n.name.clone(),
                vmid: n.vmid,
                change: "add",
                details: vec![format!("on {}", n.host)],
            });
            continue;
        };
        let Some(owner) = &owner else { continue };
        let got = inventory::config(&env.pve, &found.node, found.vmid).await?;
        let wanted = provision::wanted(profile, plan, owner, n)?;
        let details: Vec<String> = vm::diff(&wanted, &got)
            .iter()
            .map(|d| {
                let how = if d.safe {
                    "in place"
                } else {
                    "needs --recreate"
                };
                format!(
                    "{}: {} → {} ({how})",
                    d.key,
                    d.got.as_deref().unwrap_or("(absent)"),
                    d.want
                )
            })
            .collect();
        // A migrated VM (another host than planned) or a grown disk needs nothing:
        // not a difference (`provision` notes them).
        if !details.is_empty() {
            out.push(VmChange {
                node: n.name.clone(),
                vmid: n.vmid,
                change: "change",
                details,
            });
        }
    }
    if let Some(owner) = &owner {
        // Every host's VMs, not the planned-VMID map: standalone hosts each have their
        // own VMID space, so a leaving node's VMID may be another host's VM too.
        let (all, _silent) = inventory::reachable_vms(&env.pve).await?;
        out.extend(leaving(owner, plan, &all));
    }
    Ok(out)
}

/// VMs marked as this cluster's whose node the profile no longer has (or has on
/// another VMID), each named with its own host.
fn leaving(owner: &ownership::Owner, plan: &Plan, vms: &[inventory::VmResource]) -> Vec<VmChange> {
    vms.iter()
        .filter_map(|v| match ownership::claim(owner, &v.tags, None) {
            Claim::Ours { node } if plan.node(&node).is_none_or(|n| n.vmid != v.vmid) => {
                Some(VmChange {
                    node,
                    vmid: v.vmid,
                    change: "remove",
                    details: vec![format!("on {}", v.node)],
                })
            }
            _ => None,
        })
        .collect()
}

/// Routes for the live pod CIDRs against the plan's gateway routes.
fn routes(plan: &Plan, nodes: &[NodeDiff]) -> Routes {
    let want: BTreeSet<String> = plan
        .gateway_routes
        .iter()
        .map(|r| format!("{} via {} ({})", r.destination, r.via, r.node))
        .collect();
    let via: BTreeMap<&str, String> = plan
        .gateway_routes
        .iter()
        .map(|r| (r.node.as_str(), r.via.to_string()))
        .collect();
    let have: BTreeSet<String> = nodes
        .iter()
        .filter(|n| n.pod_cidr.running.parse::<ipnet::Ipv4Net>().is_ok())
        .filter_map(|n| {
            let v = via.get(n.node.as_str())?;
            Some(format!("{} via {v} ({})", n.pod_cidr.running, n.node))
        })
        .collect();
    // Only nodes whose live CIDR is known take part.
    let known: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.pod_cidr.running.parse::<ipnet::Ipv4Net>().is_ok())
        .map(|n| n.node.as_str())
        .collect();
    Routes {
        add: want
            .iter()
            .filter(|r| !have.contains(*r))
            .filter(|r| known.iter().any(|k| r.ends_with(&format!("({k})"))))
            .cloned()
            .collect(),
        remove: have.difference(&want).cloned().collect(),
    }
}

/// Cilium's and MetalLB's running versions, from their workloads' image tags.
async fn addons(clients: &Clients, profile: &Profile) -> Vec<Versions> {
    let image_version = |obj: Result<Option<serde_json::Value>, crate::kube::KubeError>| -> String {
        match obj {
            Ok(Some(o)) => o["spec"]["template"]["spec"]["containers"][0]["image"]
                .as_str()
                .and_then(compat::image_version)
                .map(|v| format!("{v}"))
                .unwrap_or_else(|| "unknown (no version tag)".into()),
            Ok(None) => "not installed".into(),
            Err(e) => unknown(e),
        }
    };
    let kube = clients.kube();
    let mut out = vec![Versions {
        name: "cilium".into(),
        running: image_version(
            kube.get("/apis/apps/v1/namespaces/kube-system/daemonsets/cilium")
                .await,
        ),
        profile: profile.addons.cilium.version.clone(),
    }];
    if let Some(m) = &profile.addons.metallb {
        out.push(Versions {
            name: "metallb".into(),
            running: image_version(
                kube.get(&format!(
                    "/apis/apps/v1/namespaces/{METALLB_NS}/deployments/controller"
                ))
                .await,
            ),
            profile: m.version.clone(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxmox::inventory::VmResource;
    use crate::proxmox::ownership::{Marker, Owner};

    /// Two standalone hosts, one VMID: a leaving node's VM on one and another
    /// cluster's VM on the other. Both rows are read; only ours is listed, on its host.
    #[test]
    fn a_leaving_vm_is_found_on_its_host_whatever_shares_its_vmid() {
        let plan = Plan::build(&crate::test_support::homelab()).unwrap();
        let owner = Owner {
            cluster: plan.cluster.clone(),
            id: crate::cluster_id::ClusterId::of("ours"),
            recorded: BTreeMap::new(),
        };
        let other = Owner {
            id: crate::cluster_id::ClusterId::of("theirs"),
            ..owner.clone()
        };
        let vm = |host: &str, tags: Vec<String>| VmResource {
            vmid: 130,
            node: host.into(),
            name: "talos-k8s-04".into(),
            running: true,
            tags,
        };
        let mut rows = vec![
            vm("pve-ms01-02", Marker::new(&owner, "talos-k8s-04").tags()),
            vm("pve-ms01-01", Marker::new(&other, "talos-k8s-04").tags()),
        ];
        let found = leaving(&owner, &plan, &rows);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (
                found[0].node.as_str(),
                found[0].vmid,
                found[0].details[0].as_str()
            ),
            ("talos-k8s-04", 130, "on pve-ms01-02")
        );
        // The same with the other host's row first (a VMID-keyed map kept one of them).
        rows.reverse();
        assert_eq!(leaving(&owner, &plan, &rows).len(), 1);
        // A planned node on its planned VMID is not leaving.
        let n = &plan.nodes[0];
        let planned = VmResource {
            vmid: n.vmid,
            ..vm(&n.host, Marker::new(&owner, &n.name).tags())
        };
        assert!(leaving(&owner, &plan, &[planned]).is_empty());
    }
}

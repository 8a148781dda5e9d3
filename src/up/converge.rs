//! `up` converges the node set: nodes the profile no longer lists leave the cluster.
//!
//! Which nodes leave comes from the live systems, not the profile: a VM marked with
//! this cluster's ID whose node the plan does not name (`proxmox::destroy::owned_vms`),
//! with its role, address and pod CIDR from its Kubernetes Node. Each one, one at a
//! time: cordon → drain (policy/v1 evictions, which PodDisruptionBudgets may refuse
//! with 429; bounded) → for a control plane its etcd member removed through a
//! control plane that stays (talos-day2.md §4.3–4.4) → Talos `Reset{graceful}`
//! (power off) → Node deleted (Talos never deletes it) → VM destroyed. Its steps in
//! the state file went when the profile was adopted, which frees its pod CIDR.
//! The etcd guard is pure: `etcd_guard`.

use std::net::IpAddr;

use serde_json::{Value, json};
use thiserror::Error;

use crate::cluster_dir::ClusterDir;
use crate::kube::{self, KubeError, Kubeconfig};
use crate::plan::Plan;
use crate::profile::Profile;
use crate::progress::Reporter;
use crate::proxmox::PveError;
use crate::proxmox::destroy::{OwnedVm, destroy, owned_vms};
use crate::state::{Record, Step};
use crate::talos::api::messages::ResetRequest;
use crate::talos::api::{Credentials, TalosError, Talosconfig, Target, TlsMode};

use super::{Env, bootstrap_target};

#[derive(Debug, Error)]
pub enum ScaleError {
    #[error(
        "removing control plane(s) {leaving} leaves {remaining} etcd members: two members have no fault tolerance (losing either one stops etcd and the Kubernetes API)\n  fix: add a replacement control plane to the profile first, or re-run with --allow-etcd-without-fault-tolerance to accept it"
    )]
    NoFaultTolerance { leaving: String, remaining: usize },
    #[error(
        "removing control plane(s) {leaving} leaves no etcd member: the cluster would be gone\n  fix: keep at least one control plane in the profile; `talos-pve destroy` removes a whole cluster"
    )]
    NoMemberLeft { leaving: String },
    #[error(
        "drain of {node} did not finish: {pods}\n  check: `kubectl get pdb -A` — a PodDisruptionBudget refuses these evictions (429); scale the workload up or relax the budget, then run again (the node stays cordoned)"
    )]
    Drain { node: String, pods: String },
    #[error(
        "{node}: its Kubernetes Node lists no InternalIP, so its Talos API cannot be found\n  fix: check `kubectl get node {node} -o wide`; then run again"
    )]
    NoAddress { node: String },
    #[error("{0:#}")]
    Files(anyhow::Error),
    #[error(transparent)]
    Pve(#[from] PveError),
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(transparent)]
    Talos(#[from] TalosError),
}

/// A node the profile no longer lists, as the live systems know it.
#[derive(Debug, Clone)]
pub struct Leaving {
    pub vm: OwnedVm,
    pub control_plane: bool,
    /// InternalIP of its Node (Talos answers on every node address).
    pub address: Option<IpAddr>,
    pub pod_cidr: Option<String>,
}

impl Leaving {
    pub fn node(&self) -> &str {
        &self.vm.node
    }

    /// The gateway's static route for its pod CIDR, which must go with it.
    pub fn route(&self) -> Option<String> {
        Some(format!(
            "{} via {}   ({})",
            self.pod_cidr.as_ref()?,
            self.address?,
            self.node()
        ))
    }

    /// The removal steps, for the confirmation question.
    pub fn steps(&self) -> String {
        let etcd = if self.control_plane {
            "remove its etcd member, "
        } else {
            ""
        };
        format!(
            "{}: cordon, drain, {etcd}reset Talos, delete the Node, destroy VM {} on {}",
            self.node(),
            self.vm.vmid,
            self.vm.host
        )
    }
}

/// Refuse a control-plane removal that leaves etcd without a member or (unless
/// `allow_two`) with two members, which survive no failure. `remaining` is the
/// number of planned control planes.
pub fn etcd_guard(remaining: usize, leaving: &[&str], allow_two: bool) -> Result<(), ScaleError> {
    if leaving.is_empty() {
        return Ok(());
    }
    let leaving = leaving.join(", ");
    match remaining {
        0 => Err(ScaleError::NoMemberLeft { leaving }),
        2 if !allow_two => Err(ScaleError::NoFaultTolerance { leaving, remaining }),
        _ => Ok(()),
    }
}

/// The profile with the pod CIDRs recorded for nodes that give none, so adding or
/// removing a node anywhere in the list never moves another node's CIDR (a Node's
/// `spec.podCIDR` cannot change). `None` when nothing needs keeping. A recorded CIDR
/// that left the pod subnet or overlaps one the profile names is not kept.
pub fn keep_pod_cidrs(profile: &Profile, steps: &[Record]) -> Option<Profile> {
    let subnet = profile.kubernetes.pod_subnet;
    let named: Vec<ipnet::Ipv4Net> = profile.nodes.iter().filter_map(|n| n.pod_cidr).collect();
    let mut out = profile.clone();
    let mut kept = false;
    for r in steps {
        let Step::PodCidr(name) = &r.step else {
            continue;
        };
        let Some(cidr) = r
            .detail
            .as_deref()
            .and_then(|d| d.split(' ').next()?.parse::<ipnet::Ipv4Net>().ok())
        else {
            continue;
        };
        let usable =
            subnet.contains(&cidr) && !named.iter().any(|t| t.contains(&cidr) || cidr.contains(t));
        if let Some(n) = out
            .nodes
            .iter_mut()
            .find(|n| &n.name == name && n.pod_cidr.is_none())
            && usable
        {
            n.pod_cidr = Some(cidr);
            kept = true;
        }
    }
    kept.then_some(out)
}

/// The nodes to remove: VMs of this cluster (by its ID) that the plan no longer names.
/// Nothing when the cluster has no ID yet (nothing was ever made).
pub async fn leaving(env: &Env, plan: &Plan, dir: &ClusterDir) -> Result<Vec<Leaving>, ScaleError> {
    let Some(owner) =
        crate::cluster_id::owner(dir, &plan.cluster, false).map_err(ScaleError::Files)?
    else {
        return Ok(Vec::new());
    };
    let (vms, _) = owned_vms(&env.pve, &owner, &[]).await?;
    let gone: Vec<OwnedVm> = vms
        .into_iter()
        .filter(|v| plan.node(&v.node).is_none())
        .collect();
    if gone.is_empty() {
        return Ok(Vec::new());
    }
    let client = kube_client(env, dir).await?;
    let mut out = Vec::new();
    for vm in gone {
        let node = client
            .get(&format!("/api/v1/nodes/{}", path_segment(&vm.node)))
            .await?
            .unwrap_or(Value::Null);
        out.push(Leaving {
            control_plane: node["metadata"]["labels"]
                .get("node-role.kubernetes.io/control-plane")
                .is_some(),
            address: node["status"]["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["type"] == "InternalIP")
                .and_then(|a| a["address"].as_str()?.parse().ok()),
            pod_cidr: node["spec"]["podCIDR"].as_str().map(str::to_owned),
            vm,
        });
    }
    Ok(out)
}

/// Control planes among `leaving` that etcd still lists as members.
pub async fn members_leaving(
    env: &Env,
    plan: &Plan,
    dir: &ClusterDir,
    leaving: &[Leaving],
) -> Result<Vec<String>, ScaleError> {
    if !leaving.iter().any(|l| l.control_plane) {
        return Ok(Vec::new());
    }
    let creds = Talosconfig::load(&dir.talosconfig())?.credentials;
    let members = env
        .talos
        .client(&bootstrap_target(plan), &TlsMode::Mutual(creds))?
        .etcd_member_list()
        .await?;
    Ok(leaving
        .iter()
        .filter(|l| members.iter().any(|m| m.hostname == l.node()))
        .map(|l| l.node().to_owned())
        .collect())
}

/// Take every leaving node out, one at a time; returns the gateway routes to delete.
pub async fn shrink(
    env: &Env,
    plan: &Plan,
    dir: &ClusterDir,
    leaving: &[Leaving],
    rep: &Reporter,
) -> Result<Vec<String>, ScaleError> {
    if leaving.is_empty() {
        return Ok(Vec::new());
    }
    let client = kube_client(env, dir).await?;
    let creds = Talosconfig::load(&dir.talosconfig())?.credentials;
    let mut routes = Vec::new();
    for l in leaving {
        remove(env, plan, &client, &creds, l, rep)
            .await
            .inspect_err(|e| rep.failed(Some(l.node()), "remove", e))?;
        routes.extend(l.route());
    }
    Ok(routes)
}

async fn remove(
    env: &Env,
    plan: &Plan,
    client: &kube::Client,
    creds: &Credentials,
    l: &Leaving,
    rep: &Reporter,
) -> Result<(), ScaleError> {
    let name = l.node();
    let node_path = format!("/api/v1/nodes/{}", path_segment(name));
    rep.started(Some(name), "remove");
    let registered = client.get(&node_path).await?.is_some();
    if registered {
        client
            .merge_patch(&node_path, &json!({"spec": {"unschedulable": true}}))
            .await?;
        rep.progress(Some(name), "remove", "cordoned");
        drain(env, client, name).await?;
        rep.progress(Some(name), "remove", "drained");
    }
    if l.control_plane {
        // Through a control plane that stays: the member goes before the VM does.
        let removed = env
            .talos
            .remove_etcd_member(&bootstrap_target(plan), creds, name)
            .await?;
        if removed {
            rep.progress(Some(name), "remove", "etcd member removed");
        }
    }
    if l.vm.running
        && let Some(ip) = l.address
    {
        reset(env, &Target::new(name.to_owned(), ip), creds).await?;
        rep.progress(Some(name), "remove", "Talos reset, powered off");
    } else if l.vm.running {
        return Err(ScaleError::NoAddress {
            node: name.to_owned(),
        });
    }
    if registered {
        client.delete(&node_path).await?;
        rep.progress(Some(name), "remove", "Node deleted");
    }
    // One VM: it was removed, or its error is the node's.
    if let Some((_, e)) = destroy(&env.pve, std::slice::from_ref(&l.vm))
        .await
        .left
        .into_iter()
        .next()
    {
        return Err(e.into());
    }
    rep.progress(
        Some(name),
        "remove",
        format!("VM {} on {} destroyed", l.vm.vmid, l.vm.host),
    );
    rep.done(Some(name), "remove");
    Ok(())
}

/// A graceful reset that powers the node off (its disk goes with the VM). Its etcd
/// member is already gone, so the node's own leave finds nothing to do.
async fn reset(env: &Env, t: &Target, creds: &Credentials) -> Result<(), ScaleError> {
    let req = ResetRequest {
        graceful: true,
        reboot: false,
        ..Default::default()
    };
    env.talos
        .client(t, &TlsMode::Mutual(creds.clone()))?
        .reset(req)
        .await?;
    Ok(())
}

/// Evict every pod on the node that a controller would not simply recreate there
/// (DaemonSet and static mirror pods stay), until none is left or the poll gives up.
pub(crate) async fn drain(env: &Env, client: &kube::Client, node: &str) -> Result<(), ScaleError> {
    let list = format!(
        "/api/v1/pods?fieldSelector={}",
        path_segment(&format!("spec.nodeName={node}"))
    );
    let outcome = env
        .kube_poll
        .until(&format!("drain of {node}"), || async {
            let mut refused = Vec::new();
            for p in client.list(&list).await? {
                if !evictable(&p) {
                    continue;
                }
                let (ns, pod) = (
                    p["metadata"]["namespace"].as_str().unwrap_or_default(),
                    p["metadata"]["name"].as_str().unwrap_or_default(),
                );
                let body = json!({"apiVersion": "policy/v1", "kind": "Eviction",
                    "metadata": {"name": pod, "namespace": ns}});
                let path = format!(
                    "/api/v1/namespaces/{}/pods/{}/eviction",
                    path_segment(ns),
                    path_segment(pod)
                );
                match client.post(&path, &body).await {
                    Ok(_) => {}
                    // Already gone is drained.
                    Err(e) if e.code() == Some(404) => {}
                    Err(e) if e.code() == Some(429) => refused.push(format!(
                        "{ns}/{pod}: {}",
                        e.message().unwrap_or("eviction refused")
                    )),
                    Err(e) => return Err(e),
                }
            }
            Ok(if refused.is_empty() {
                Ok(())
            } else {
                Err(refused.join("; "))
            })
        })
        .await;
    match outcome {
        Ok(()) => Ok(()),
        Err(KubeError::Timeout { last, .. }) => Err(ScaleError::Drain {
            node: node.to_owned(),
            pods: last,
        }),
        Err(e) => Err(e.into()),
    }
}

/// Like `kubectl drain --ignore-daemonsets`: DaemonSet pods and mirror pods stay.
fn evictable(pod: &Value) -> bool {
    let daemon = pod["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|o| o["kind"] == "DaemonSet");
    let mirror = pod["metadata"]["annotations"]
        .get("kubernetes.io/config.mirror")
        .is_some();
    !daemon && !mirror
}

async fn kube_client(env: &Env, dir: &ClusterDir) -> Result<kube::Client, ScaleError> {
    let kc = Kubeconfig::load(&dir.kubeconfig())?;
    Ok(kube::Client::new(&kc, &env.book).await?)
}

/// One URL path segment or query value, percent-encoded (Kubernetes names are DNS
/// labels/subdomains, so the form encoding of a space never arises).
fn path_segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_to_two_control_planes_is_refused_unless_allowed() {
        let e = etcd_guard(2, &["talos-k8s-03"], false).unwrap_err();
        assert!(e.to_string().contains("no fault tolerance"), "{e}");
        assert!(
            e.to_string()
                .contains("--allow-etcd-without-fault-tolerance")
        );
        assert!(etcd_guard(2, &["talos-k8s-03"], true).is_ok());
    }

    #[test]
    fn four_to_three_and_workers_pass_and_none_left_is_refused() {
        assert!(etcd_guard(3, &["talos-k8s-04"], false).is_ok());
        assert!(etcd_guard(2, &[], false).is_ok());
        assert!(matches!(
            etcd_guard(0, &["a"], true),
            Err(ScaleError::NoMemberLeft { .. })
        ));
    }

    #[test]
    fn recorded_pod_cidrs_stay_when_a_node_is_inserted_first() {
        let mut p = crate::test_support::homelab();
        for n in &mut p.nodes {
            n.pod_cidr = None;
        }
        let rec = |node: &str, detail: &str| Record {
            step: Step::PodCidr(node.into()),
            at: String::new(),
            detail: Some(detail.into()),
        };
        let steps = [
            rec("talos-k8s-01", "10.8.32.0/24 set"),
            rec("talos-k8s-02", "10.8.33.0/24 already set"),
            rec("talos-k8s-03", "set"),
        ];
        let mut first = p.nodes[0].clone();
        first.name = "talos-k8s-00".into();
        p.nodes.insert(0, first);
        let kept = keep_pod_cidrs(&p, &steps).expect("two are kept");
        let cidrs = crate::plan::pod_cidrs(&kept).unwrap();
        let got: Vec<String> = cidrs.iter().map(ToString::to_string).collect();
        // 01 and 02 keep theirs; the new node and 03 (no CIDR recorded) take the free ones.
        assert_eq!(
            got,
            [
                "10.8.34.0/24",
                "10.8.32.0/24",
                "10.8.33.0/24",
                "10.8.35.0/24"
            ]
        );
        // A CIDR the profile now gives another node is not kept.
        p.nodes[0].pod_cidr = Some("10.8.32.0/24".parse().unwrap());
        let kept = keep_pod_cidrs(&p, &steps).unwrap();
        assert_eq!(kept.nodes[1].pod_cidr, None);
    }

    #[test]
    fn daemonset_and_mirror_pods_are_not_evicted() {
        let ds = json!({"metadata": {"ownerReferences": [{"kind": "DaemonSet"}]}});
        let mirror = json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}});
        let rs = json!({"metadata": {"ownerReferences": [{"kind": "ReplicaSet"}]}});
        assert!(!evictable(&ds) && !evictable(&mirror) && evictable(&rs));
    }
}

//! Cluster add-ons, applied after bootstrap through the Kubernetes API: each node's
//! planned pod CIDR (`pod_cidr`), Cilium in native-routing mode (`cilium`) and MetalLB
//! in L2 mode (`metallb`). Every step is idempotent: a second run changes nothing.
//!
//! It must not shell out (no helm, kubectl or cilium binary: Cilium runs as an in-cluster
//! Job) nor reach Proxmox or Talos; it sees the cluster only through `kube`.

pub mod cilium;
pub mod metallb;
pub mod pod_cidr;

use std::path::PathBuf;
use std::time::Duration;

use ipnet::Ipv4Net;
use serde_json::Value;
use thiserror::Error;

use crate::kube::{Client, Discovery, KubeError, Poll, crd_established};
use crate::net::AddressBook;
use crate::plan::Plan;
use crate::profile::{Addons, LinkRole};

#[derive(Debug, Error)]
pub enum AddonError {
    #[error(transparent)]
    Kube(#[from] KubeError),
    #[error(
        "node {node} already has pod CIDR {current}, but the plan gives it {planned}; Kubernetes never lets spec.podCIDR change once set\n  fix: delete the Node object (`kubectl delete node {node}`; the kubelet re-registers it) or rebuild the node, or set `nodes[].podCIDR: {current}` for {node} in the profile"
    )]
    PodCidrConflict {
        node: String,
        current: String,
        planned: Ipv4Net,
    },
    #[error(
        "Cilium {version} is not a version talos-pve supports (supported: {supported})\n  fix: set `addons.cilium.version` to a supported version"
    )]
    CiliumVersion { version: String, supported: String },
    #[error(
        "`addons.cilium.nativeRoutingCIDR` {cidr} does not contain node {node}'s pod CIDR {pod_cidr}\n  fix: widen it to cover the pod subnet {pod_subnet}, or remove it"
    )]
    NativeRoutingCidr {
        cidr: Ipv4Net,
        node: String,
        pod_cidr: Ipv4Net,
        pod_subnet: Ipv4Net,
    },
    #[error(
        "`addons.cilium.cliImage` {image:?} is not a usable image reference: {what}\n  fix: write `<registry>/<path>:<tag>` or `…@sha256:<digest>`, e.g. quay.io/cilium/cilium-cli:v0.19.7, or remove it for the built-in pin"
    )]
    CliImage { image: String, what: String },
    #[error(
        "the Cilium install Job failed: {0}\n  fix: `kubectl -n kube-system logs job/cilium-install`; re-run to recreate the Job"
    )]
    CiliumJob(String),
    #[error(
        "MetalLB {version} is not a version talos-pve supports (supported: {supported})\n  fix: set `addons.metallb.version` to a supported version"
    )]
    MetalLbVersion { version: String, supported: String },
    #[error(
        "node {node}: cannot tell its management/workload interface names: {what}\n  fix: check the node's NICs against the plan's MACs (`talos-pve plan`)"
    )]
    Links { node: String, what: String },
    #[error("MetalLB manifest {origin}: {what}")]
    Manifest { origin: String, what: String },
    #[error(
        "MetalLB manifest {origin} has SHA-256 {got}, but talos-pve pins {want} for this release\n  fix: use the unmodified upstream `metallb-native.yaml` of this version (or `--manifests embedded`)"
    )]
    Checksum {
        origin: String,
        got: String,
        want: String,
    },
    #[error("{kind} {name} does not satisfy its CRD schema: {issues}")]
    Schema {
        kind: String,
        name: String,
        issues: String,
    },
}

/// Where the MetalLB manifest comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestSource {
    /// The release URL (through the address book), checked against the pin.
    Fetch,
    /// The copy built into talos-pve (air-gapped installs and the lab).
    Embedded,
    /// `DIR/metallb-native-v<version>.yaml`, checked against the pin.
    Dir(PathBuf),
}

impl ManifestSource {
    /// `--manifests` value: `embedded` or a directory.
    pub fn from_arg(arg: Option<&str>) -> Self {
        match arg {
            None => ManifestSource::Fetch,
            Some("embedded") => ManifestSource::Embedded,
            Some(dir) => ManifestSource::Dir(dir.into()),
        }
    }
}

/// Kernel names of the two NICs on every node. Cilium `devices` and MetalLB
/// `interfaces` match kernel names, not Talos link aliases. `up` and `rebuild` read
/// them from the nodes (`resolve`); `from_plan` is the nocloud expectation
/// (`net.ifnames=0`, `eth0`/`eth1` in NIC order), used to check choices up front.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Links {
    pub management: String,
    pub workload: String,
}

impl Links {
    pub fn from_plan(plan: &Plan) -> Self {
        let first = plan.nodes.first();
        let name = |f: fn(&crate::plan::NodePlan) -> &str, d: &str| {
            first.map_or(d.to_owned(), |n| f(n).to_owned())
        };
        Self {
            management: name(|n| &n.management.guest_name, "eth0"),
            workload: name(|n| &n.nic(LinkRole::Workload).guest_name, "eth1"),
        }
    }

    /// The kernel names the nodes really have, from each node's links as
    /// `(kernel name, MAC)` (Talos `LinkStatus`), matched by the plan's MACs. The
    /// settings are cluster-wide, so every node must use the same two names.
    pub fn resolve(
        plan: &Plan,
        links: &[(String, Vec<(String, String)>)],
    ) -> Result<Self, AddonError> {
        let mut found: Option<Links> = None;
        for n in &plan.nodes {
            let (_, nics) = links
                .iter()
                .find(|(node, _)| node == &n.name)
                .ok_or_else(|| AddonError::Links {
                    node: n.name.clone(),
                    what: "no link status for this node".into(),
                })?;
            let by_mac = |mac: &str| {
                nics.iter()
                    .find(|(_, m)| m.eq_ignore_ascii_case(mac))
                    .map(|(name, _)| name.clone())
                    .ok_or_else(|| AddonError::Links {
                        node: n.name.clone(),
                        what: format!("no link has MAC {mac}"),
                    })
            };
            let here = Links {
                management: by_mac(&n.management.mac)?,
                workload: by_mac(&n.nic(LinkRole::Workload).mac)?,
            };
            match &found {
                Some(f) if f != &here => {
                    return Err(AddonError::Links {
                        node: n.name.clone(),
                        what: format!(
                            "its links are {}/{} but other nodes use {}/{}; Cilium devices and MetalLB interfaces are cluster-wide",
                            here.management, here.workload, f.management, f.workload
                        ),
                    });
                }
                Some(_) => {}
                None => found = Some(here),
            }
        }
        found.ok_or_else(|| AddonError::Links {
            node: "-".into(),
            what: "the plan has no nodes".into(),
        })
    }

    /// The node links Cilium attaches to: one name when one link carries both roles.
    pub fn devices(&self) -> Vec<&str> {
        let mut v = vec![self.management.as_str()];
        if self.workload != self.management {
            v.push(&self.workload);
        }
        v
    }

    pub fn name(&self, role: LinkRole) -> &str {
        match role {
            LinkRole::Management => &self.management,
            LinkRole::Workload => &self.workload,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub manifests: ManifestSource,
    pub links: Links,
    /// Every readiness wait (nodes, CRDs, rollouts, webhook endpoint).
    pub poll: Poll,
    /// Retrying MetalLB custom resources while its webhook is not serving yet.
    pub webhook_retry: Poll,
    /// Resolves the MetalLB release URL (the lab fails closed on it).
    pub addresses: AddressBook,
}

impl Options {
    pub fn new(plan: &Plan, manifests: ManifestSource, addresses: AddressBook) -> Self {
        Self {
            manifests,
            links: Links::from_plan(plan),
            poll: Poll::standard(Duration::from_secs(600)),
            webhook_retry: Poll {
                min: Duration::from_secs(2),
                max: Duration::from_secs(10),
                timeout: Duration::from_secs(180),
            },
            addresses,
        }
    }
}

/// What a run did; a second run reports no patches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub pod_cidrs_patched: Vec<String>,
    pub cilium_job_created: bool,
    pub metallb_objects: usize,
    pub exclude_labels_removed: Vec<String>,
}

/// The profile's add-on choices, checked before anything is created: an unpinned
/// version or a bad image reference would otherwise stop a bring-up only after the
/// VMs run.
pub fn check(plan: &Plan, addons: &Addons) -> Result<(), AddonError> {
    cilium::values(plan, &addons.cilium, &Links::from_plan(plan))?;
    cilium::cli_image(&addons.cilium)?;
    if let Some(m) = &addons.metallb {
        metallb::pin(&m.version)?;
    }
    Ok(())
}

/// Pod CIDRs, then Cilium, then MetalLB (when the profile has a pool).
pub async fn install(
    client: &Client,
    plan: &Plan,
    addons: &Addons,
    opts: &Options,
) -> Result<Report, AddonError> {
    let mut report = Report {
        pod_cidrs_patched: pod_cidr::assign(client, plan, &opts.poll).await?,
        ..Report::default()
    };
    // MetalLB's manifests go in while Cilium rolls out: its pods wait for the CNI anyway.
    let metallb = async {
        match &addons.metallb {
            Some(m) => metallb::apply(client, m, opts).await.map(Some),
            None => Ok(None),
        }
    };
    let (cilium_created, metallb) =
        tokio::try_join!(cilium::install(client, plan, &addons.cilium, opts), metallb)?;
    report.cilium_job_created = cilium_created;
    if let Some(applied) = metallb {
        let r = metallb::finish(client, plan, applied, opts).await?;
        report.metallb_objects = r.0;
        report.exclude_labels_removed = r.1;
    }
    Ok(report)
}

/// Apply order: namespaces, CRDs, identities/config, services, workloads, webhooks, the rest.
fn apply_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" | "Role" | "ClusterRole" | "RoleBinding" | "ClusterRoleBinding"
        | "ConfigMap" | "Secret" => 2,
        "Service" => 3,
        "Deployment" | "DaemonSet" | "StatefulSet" | "Job" => 4,
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => 5,
        _ => 6,
    }
}

/// `objs` in apply order (stable within a rank).
pub fn apply_order(mut objs: Vec<Value>) -> Vec<Value> {
    objs.sort_by_key(|o| apply_rank(o["kind"].as_str().unwrap_or_default()));
    objs
}

/// The API group of a CRD (`<plural>.<group>`) or of an object's `apiVersion`.
fn crd_group(crd_name: &str) -> &str {
    crd_name.split_once('.').map_or("", |(_, g)| g)
}

fn object_group(o: &Value) -> &str {
    o["apiVersion"]
        .as_str()
        .and_then(|v| v.rsplit_once('/'))
        .map_or("", |(g, _)| g)
}

/// Server-side apply a set of objects in dependency order; before an object of a
/// group whose CRDs were just applied, they are waited for (`Established`) and
/// discovery is refreshed. Built-in kinds (the workloads) do not wait for them.
pub async fn apply_all(
    client: &Client,
    objs: Vec<Value>,
    poll: &Poll,
) -> Result<usize, AddonError> {
    let objs = apply_order(objs);
    let mut disc = Discovery::run(client).await?;
    let mut pending_crds: Vec<String> = Vec::new();
    for o in &objs {
        let is_crd = o["kind"] == "CustomResourceDefinition";
        let group = object_group(o);
        if !is_crd && pending_crds.iter().any(|c| crd_group(c) == group) {
            wait_crds(client, &pending_crds, poll).await?;
            pending_crds.clear();
            disc = Discovery::run(client).await?;
        }
        client.apply(disc.for_object(o)?, o).await?;
        if is_crd {
            pending_crds.push(
                o["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
    }
    wait_crds(client, &pending_crds, poll).await?;
    Ok(objs.len())
}

async fn wait_crds(client: &Client, names: &[String], poll: &Poll) -> Result<(), AddonError> {
    for n in names {
        let path = format!("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{n}");
        poll.watch_object::<_, KubeError, _>(
            client,
            &path,
            &format!("CRD {n} to be Established"),
            |crd| crd.map_or(Err("not found".into()), crd_established),
        )
        .await?;
    }
    Ok(())
}

/// Wait until the workload at `path` satisfies `ready`.
async fn wait_ready(
    client: &Client,
    what: &str,
    path: &str,
    ready: fn(&Value) -> Result<(), String>,
    poll: &Poll,
) -> Result<(), AddonError> {
    poll.watch_object::<_, KubeError, _>(client, path, &format!("{what} to be ready"), |o| {
        o.map_or(Err("not created yet".into()), ready)
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// One NIC per node: both roles resolve to that link's kernel name.
    #[test]
    fn one_link_resolves_for_both_roles() {
        let plan = Plan::build(&crate::test_support::one_network()).unwrap();
        let status: Vec<(String, Vec<(String, String)>)> = plan
            .nodes
            .iter()
            .map(|n| {
                let nics = vec![
                    ("lo".into(), "00:00:00:00:00:00".into()),
                    ("ens18".into(), n.management.mac.to_lowercase()),
                ];
                (n.name.clone(), nics)
            })
            .collect();
        let l = Links::resolve(&plan, &status).unwrap();
        assert_eq!(
            (l.name(LinkRole::Management), l.name(LinkRole::Workload)),
            ("ens18", "ens18")
        );
        assert_eq!(l.devices(), ["ens18"]);
    }

    #[test]
    fn links_resolve_by_mac_and_must_agree_across_nodes() {
        let plan = Plan::build(&crate::test_support::homelab()).unwrap();
        let status = |swap: bool| -> Vec<(String, Vec<(String, String)>)> {
            plan.nodes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let (a, b) = if swap && i == 2 {
                        ("ens19", "ens18")
                    } else {
                        ("ens18", "ens19")
                    };
                    (
                        n.name.clone(),
                        vec![
                            (b.into(), n.nic(LinkRole::Workload).mac.to_lowercase()),
                            (a.into(), n.management.mac.clone()),
                        ],
                    )
                })
                .collect()
        };
        let l = Links::resolve(&plan, &status(false)).unwrap();
        assert_eq!(
            (l.management.as_str(), l.workload.as_str()),
            ("ens18", "ens19")
        );
        let e = Links::resolve(&plan, &status(true))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("talos-k8s-03") && e.contains("cluster-wide"),
            "{e}"
        );
        assert_eq!(
            Links::from_plan(&plan),
            Links {
                management: "eth0".into(),
                workload: "eth1".into()
            }
        );
    }

    #[test]
    fn unpinned_addon_choices_are_refused_up_front() {
        let p = crate::test_support::homelab();
        let plan = Plan::build(&p).unwrap();
        check(&plan, &p.addons).unwrap();
        let mut a = p.addons.clone();
        a.cilium.version = "1.19.6".into();
        let e = check(&plan, &a).unwrap_err().to_string();
        assert!(e.contains("1.18.11, 1.19.5") && e.contains("fix:"), "{e}");
        let mut a = p.addons.clone();
        a.cilium.cli_image = Some("quay.io/cilium/cilium-cli".into());
        assert!(matches!(check(&plan, &a), Err(AddonError::CliImage { .. })));
    }

    #[test]
    fn only_objects_of_a_pending_crd_group_wait_for_it() {
        let crd = "ipaddresspools.metallb.io";
        assert_eq!(crd_group(crd), "metallb.io");
        let pool = json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool"});
        let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment"});
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap"});
        assert_eq!(object_group(&pool), crd_group(crd));
        assert_ne!(object_group(&deploy), crd_group(crd));
        assert_eq!(object_group(&cm), "");
    }

    #[test]
    fn apply_order_puts_dependencies_first() {
        let kinds = [
            "L2Advertisement",
            "ValidatingWebhookConfiguration",
            "Deployment",
            "Service",
            "Secret",
            "CustomResourceDefinition",
            "Namespace",
        ];
        let objs = kinds.iter().map(|k| json!({"kind": k})).collect();
        let got: Vec<String> = apply_order(objs)
            .iter()
            .map(|o| o["kind"].as_str().unwrap().to_owned())
            .collect();
        let mut want: Vec<String> = kinds.iter().rev().map(|k| k.to_string()).collect();
        want.sort_by_key(|k| apply_rank(k));
        assert_eq!(got, want);
        assert_eq!(got[0], "Namespace");
        assert_eq!(got[6], "L2Advertisement");
    }
}

//! What `upgrade` will do, decided from the profile's versions and the versions the
//! nodes report: pure, so `--dry-run` prints exactly the steps a real run takes.
//!
//! Order (talos-day2.md §0, §1.7, §2.1): Talos OS first, control planes one at a
//! time, then workers (Kubernetes 1.36 needs every node on Talos 1.13 first); then
//! Kubernetes per node, control planes first (a kubelet is never newer than the API
//! server); then the add-ons.

use serde::Serialize;
use thiserror::Error;

use crate::plan::Plan;
use crate::profile::Profile;
use crate::talos::compat::{self, Version};

#[derive(Debug, Error, PartialEq)]
pub enum PlanError {
    #[error(
        "`{field}` = `{value}` is not a version\n  fix: write a release like {example} in the profile"
    )]
    BadTarget {
        field: &'static str,
        value: String,
        example: &'static str,
    },
    #[error(
        "{node}: its running {what} version is unknown ({detail})\n  fix: `talos-pve status` shows what the node answers; bring it back (or finish `talos-pve up`), then run the upgrade again"
    )]
    Unknown {
        node: String,
        what: &'static str,
        detail: String,
    },
    #[error(
        "{node}: {detail}\n  fix: set `talos.version` in the profile to the next minor's latest patch (one minor per upgrade), run `talos-pve upgrade`, then bump again"
    )]
    TalosPath { node: String, detail: String },
    #[error(
        "kubernetes: {detail}\n  fix: set `kubernetes.version` to a release of the next minor at most (e.g. 1.{next}.x), upgrade, then bump again"
    )]
    KubernetesPath { detail: String, next: u32 },
    #[error(
        "kubernetes {k8s} cannot run on Talos {talos}: {detail}\n  fix: upgrade Talos first (its own `talos-pve upgrade` with the Kubernetes version unchanged), or pick a Kubernetes release that Talos {talos} supports"
    )]
    Unsupported {
        talos: String,
        k8s: String,
        detail: String,
    },
}

/// One node as it runs now.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Running {
    pub node: String,
    pub control_plane: bool,
    /// `Version`'s tag, e.g. `v1.12.11`; `Err` says why it is unknown.
    pub talos: Result<String, String>,
    /// `Node.status.nodeInfo.kubeletVersion`, e.g. `v1.35.4`.
    pub kubelet: Result<String, String>,
}

/// One node's change from one version to another.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub node: String,
    pub control_plane: bool,
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePlan {
    pub talos: String,
    pub kubernetes: String,
    /// The Image Factory installer for the profile's schematic, so extensions survive.
    pub installer: String,
    /// OS upgrades, in order (control planes first, one at a time).
    pub talos_steps: Vec<Step>,
    /// Kubelet and control-plane component upgrades, in order.
    pub kubernetes_steps: Vec<Step>,
}

impl UpgradePlan {
    pub fn is_empty(&self) -> bool {
        self.talos_steps.is_empty() && self.kubernetes_steps.is_empty()
    }

    /// The text `--dry-run` prints (and a real run prints before it asks).
    pub fn render(&self) -> String {
        let mut o = format!(
            "Upgrade to Talos {} and Kubernetes {}\n",
            self.talos, self.kubernetes
        );
        if self.talos_steps.is_empty() {
            o += "\n  Talos OS: every node already runs it\n";
        } else {
            o += &format!(
                "\n  Talos OS, one node at a time, installer {}:\n",
                self.installer
            );
            // No kubelet moves: each node's config follows its OS (`Upgrade::execute`).
            let follow = if self.kubernetes_steps.is_empty() {
                "; then its machine config from the profile (no reboot)"
            } else {
                ""
            };
            for (i, s) in self.talos_steps.iter().enumerate() {
                let extra = if s.control_plane {
                    "etcd healthy before and after; "
                } else {
                    ""
                };
                o += &format!(
                    "    {}. {} ({}) {} → {}: {extra}upgrade, reboot, check the running version, wait for the Node Ready{follow}\n",
                    i + 1,
                    s.node,
                    role(s.control_plane),
                    s.from,
                    s.to
                );
            }
        }
        if self.kubernetes_steps.is_empty() {
            o += "\n  Kubernetes: every kubelet already runs it\n";
        } else {
            o += "\n  Kubernetes, one node at a time (machine config applied without a reboot):\n";
            for (i, s) in self.kubernetes_steps.iter().enumerate() {
                let what = if s.control_plane {
                    "API server, controller manager, scheduler, kube-proxy and kubelet images"
                } else {
                    "kubelet image"
                };
                o += &format!(
                    "    {}. {} ({}) {} → {}: {what}; wait for kubeletVersion and Ready\n",
                    i + 1,
                    s.node,
                    role(s.control_plane),
                    s.from,
                    s.to
                );
            }
        }
        o += "\n  then: every node's machine config is brought to the profile's (no reboot; nodes already matching are skipped), and the add-ons are installed again from the profile (unchanged objects stay unchanged)\n";
        o
    }
}

fn role(cp: bool) -> &'static str {
    if cp { "control plane" } else { "worker" }
}

fn target(field: &'static str, value: &str, example: &'static str) -> Result<Version, PlanError> {
    Version::parse(value).ok_or_else(|| PlanError::BadTarget {
        field,
        value: value.into(),
        example,
    })
}

/// Decide the steps, or refuse with the rule that forbids them.
pub fn decide(
    profile: &Profile,
    plan: &Plan,
    running: &[Running],
) -> Result<UpgradePlan, PlanError> {
    let talos = target("talos.version", &profile.talos.version, "v1.13.9")?;
    let k8s = target("kubernetes.version", &profile.kubernetes.version, "1.36.3")?;
    compat::check_kubernetes(talos, k8s).map_err(|detail| PlanError::Unsupported {
        talos: format!("v{talos}"),
        k8s: k8s.to_string(),
        detail,
    })?;
    let known = |node: &str, what: &'static str, r: &Result<String, String>| {
        let detail = match r {
            Ok(v) => match Version::parse(v) {
                Some(p) => return Ok((v.clone(), p)),
                None => format!("it reports `{v}`"),
            },
            Err(e) => e.clone(),
        };
        Err(PlanError::Unknown {
            node: node.into(),
            what,
            detail,
        })
    };
    let mut talos_steps = Vec::new();
    let mut kubelets = Vec::new();
    for r in running {
        let (tag, v) = known(&r.node, "Talos", &r.talos)?;
        compat::check_talos_path(v, talos).map_err(|detail| PlanError::TalosPath {
            node: r.node.clone(),
            detail,
        })?;
        if v != talos {
            talos_steps.push(Step {
                node: r.node.clone(),
                control_plane: r.control_plane,
                from: tag,
                to: profile.talos.version.clone(),
            });
        }
        kubelets.push((r, known(&r.node, "kubelet", &r.kubelet)?));
    }
    // upgrade-k8s starts from the lowest version found (talos-day2.md §2.3-2.4).
    if let Some(((_, lowest), _)) = kubelets
        .iter()
        .map(|(r, (tag, v))| ((tag, *v), r))
        .min_by_key(|((_, v), _)| *v)
    {
        compat::check_kubernetes_path(lowest, k8s).map_err(|detail| PlanError::KubernetesPath {
            detail,
            next: lowest.minor + 1,
        })?;
    }
    let mut kubernetes_steps: Vec<Step> = kubelets
        .into_iter()
        .filter(|(_, (_, v))| *v != k8s)
        .map(|(r, (tag, _))| Step {
            node: r.node.clone(),
            control_plane: r.control_plane,
            from: tag,
            to: format!("v{k8s}"),
        })
        .collect();
    // Control planes first, in plan order; stable sort keeps that order.
    let order = |s: &Step| {
        (
            !s.control_plane,
            plan.nodes.iter().position(|n| n.name == s.node),
        )
    };
    talos_steps.sort_by_key(order);
    kubernetes_steps.sort_by_key(order);
    Ok(UpgradePlan {
        talos: profile.talos.version.clone(),
        kubernetes: k8s.to_string(),
        installer: plan.installer_image.clone(),
        talos_steps,
        kubernetes_steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(talos: &str, k8s: &str) -> (Profile, Plan) {
        let mut p = crate::test_support::homelab();
        p.talos.version = talos.into();
        p.kubernetes.version = k8s.into();
        let plan = Plan::build(&p).unwrap();
        (p, plan)
    }

    fn running(plan: &Plan, talos: &str, kubelet: &str) -> Vec<Running> {
        plan.nodes
            .iter()
            .rev()
            .map(|n| Running {
                node: n.name.clone(),
                control_plane: n.role == crate::profile::Role::Controlplane,
                talos: Ok(talos.into()),
                kubelet: Ok(kubelet.into()),
            })
            .collect()
    }

    #[test]
    fn talos_then_kubernetes_control_planes_first_with_the_factory_installer() {
        let (p, plan) = fixture("v1.13.9", "1.36.3");
        let u = decide(&p, &plan, &running(&plan, "v1.12.11", "v1.35.4")).unwrap();
        let names: Vec<&str> = u.talos_steps.iter().map(|s| s.node.as_str()).collect();
        let planned: Vec<&str> = plan.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, planned, "plan order, control planes first");
        assert!(
            u.talos_steps
                .iter()
                .all(|s| s.from == "v1.12.11" && s.to == "v1.13.9")
        );
        assert!(
            u.installer
                .starts_with("factory.talos.dev/nocloud-installer/")
                && u.installer.ends_with(":v1.13.9"),
            "{}",
            u.installer
        );
        assert!(u.kubernetes_steps.iter().all(|s| s.to == "v1.36.3"));
        let text = u.render();
        assert!(text.contains("v1.12.11 → v1.13.9"), "{text}");
        assert!(text.contains("etcd healthy before and after"), "{text}");
        // Nothing to do once everything runs the targets.
        let done = decide(&p, &plan, &running(&plan, "v1.13.9", "v1.36.3")).unwrap();
        assert!(done.is_empty());
    }

    #[test]
    fn refuses_skipped_minors_unsupported_pairs_and_unknown_versions() {
        let (p, plan) = fixture("v1.13.9", "1.36.3");
        let e = decide(&p, &plan, &running(&plan, "v1.11.5", "v1.35.4")).unwrap_err();
        assert!(matches!(e, PlanError::TalosPath { .. }), "{e}");
        let e = decide(&p, &plan, &running(&plan, "v1.12.11", "v1.34.2")).unwrap_err();
        assert!(
            e.to_string()
                .contains("unsupported upgrade path 1.34->1.36"),
            "{e}"
        );
        let (p12, plan12) = fixture("v1.12.11", "1.36.3");
        let e = decide(&p12, &plan12, &running(&plan12, "v1.12.11", "v1.35.4")).unwrap_err();
        assert!(
            e.to_string()
                .contains("too new to be used with Talos 1.12.11"),
            "{e}"
        );
        let mut r = running(&plan, "v1.12.11", "v1.35.4");
        r[0].talos = Err("unreachable".into());
        let e = decide(&p, &plan, &r).unwrap_err();
        assert!(
            e.to_string()
                .contains("running Talos version is unknown (unreachable)"),
            "{e}"
        );
    }
}

//! What is still alive before a rebuild: one quick probe per node (no retries, no
//! stage deadlines — a dead node must not hold the answer up), the etcd member
//! list as a healthy control plane sees it, and the quorum arithmetic that decides
//! whether removing a member is safe.

use futures_util::future::join_all;

use crate::plan::{NodePlan, Plan};
use crate::profile::Role;
use crate::talos::api::{Credentials, Stages, Target, TlsMode};

#[derive(Debug, Clone, PartialEq)]
pub struct NodeHealth {
    pub name: String,
    pub control_plane: bool,
    /// Answers the Talos API with mutual TLS (runs our config).
    pub answers: bool,
    /// Answers in maintenance mode (booted, no config).
    pub maintenance: bool,
    /// Control planes: the etcd service is Running.
    pub etcd_running: bool,
    /// Why it is not healthy (empty when it is).
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub id: u64,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub nodes: Vec<NodeHealth>,
    /// The member list and the control plane it came from; `None` when no
    /// control plane's etcd answered.
    pub members: Option<(String, Vec<Member>)>,
}

/// Probe every planned node once, concurrently.
pub async fn probe(stages: &Stages, plan: &Plan, creds: &Credentials) -> Health {
    let nodes = join_all(plan.nodes.iter().map(|n| probe_node(stages, n, creds))).await;
    // The bootstrap node first: the endpoint points at it.
    let mut order: Vec<&NodeHealth> = nodes.iter().filter(|n| n.etcd_running).collect();
    order.sort_by_key(|n| n.name != plan.bootstrap_node);
    let mut members = None;
    for h in order {
        let Some(n) = plan.node(&h.name) else {
            continue;
        };
        let r = async {
            stages
                .client(&Target::of(n), &TlsMode::Mutual(creds.clone()))?
                .etcd_member_list()
                .await
        }
        .await;
        if let Ok(list) = r {
            let list = list
                .into_iter()
                .map(|m| Member {
                    id: m.id,
                    hostname: m.hostname,
                })
                .collect();
            members = Some((h.name.clone(), list));
            break;
        }
    }
    Health { nodes, members }
}

async fn probe_node(stages: &Stages, n: &NodePlan, creds: &Credentials) -> NodeHealth {
    let control_plane = n.role == Role::Controlplane;
    let mut h = NodeHealth {
        name: n.name.clone(),
        control_plane,
        answers: false,
        maintenance: false,
        etcd_running: false,
        detail: String::new(),
    };
    let t = Target::of(n);
    let r = async {
        let mut c = stages.client(&t, &TlsMode::Mutual(creds.clone()))?;
        c.version().await?;
        if control_plane {
            c.service_list().await.map(Some)
        } else {
            Ok(None)
        }
    }
    .await;
    match r {
        Ok(services) => {
            h.answers = true;
            if let Some(services) = services {
                let etcd = services.iter().find(|s| s.id == "etcd");
                h.etcd_running = etcd.is_some_and(|s| s.state == "Running");
                if !h.etcd_running {
                    h.detail = format!("etcd is {}", etcd.map_or("absent", |s| s.state.as_str()));
                }
            }
        }
        Err(e) => {
            h.detail = first_line(&e.to_string()).to_owned();
            // Talos 1.12 answers Version with Unimplemented in maintenance mode.
            let m = async { stages.client(&t, &TlsMode::Maintenance)?.version().await }.await;
            h.maintenance = match m {
                Ok(_) => true,
                Err(e) => e.code() == Some(tonic::Code::Unimplemented),
            };
            if h.maintenance {
                h.detail = "in maintenance mode (no config)".into();
            }
        }
    }
    h
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

impl Health {
    pub fn node(&self, name: &str) -> Option<&NodeHealth> {
        self.nodes.iter().find(|n| n.name == name)
    }

    fn listed(&self, name: &str) -> bool {
        self.members
            .as_ref()
            .is_some_and(|(_, m)| m.iter().any(|m| m.hostname == name))
    }

    /// Answers mTLS and, for a control plane, runs etcd as a listed member.
    pub fn node_healthy(&self, name: &str) -> bool {
        self.node(name).is_some_and(|n| {
            n.answers && (!n.control_plane || (n.etcd_running && self.listed(&n.name)))
        })
    }

    /// Every node healthy and etcd lists exactly the planned control planes.
    pub fn cluster_healthy(&self) -> bool {
        let Some((_, members)) = &self.members else {
            return false;
        };
        let mut listed: Vec<&str> = members.iter().map(|m| m.hostname.as_str()).collect();
        let mut planned: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.control_plane)
            .map(|n| n.name.as_str())
            .collect();
        listed.sort_unstable();
        planned.sort_unstable();
        listed == planned && self.nodes.iter().all(|n| self.node_healthy(&n.name))
    }

    /// Control planes whose etcd still runs.
    pub fn etcd_running(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter(|n| n.etcd_running)
            .map(|n| n.name.as_str())
            .collect()
    }

    /// Listed members whose node is healthy.
    pub fn healthy_members(&self) -> Vec<String> {
        self.members
            .as_ref()
            .map(|(_, m)| {
                m.iter()
                    .filter(|m| self.node_healthy(&m.hostname))
                    .map(|m| m.hostname.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One line per node, for messages.
    pub fn render(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let state = if self.node_healthy(&n.name) {
                    "healthy".to_owned()
                } else if n.detail.is_empty() {
                    "not an etcd member".to_owned()
                } else {
                    n.detail.clone()
                };
                format!("  {}: {state}", n.name)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// May `removing` leave the member list (or may a node rejoin when `removing` is
/// not listed) without losing quorum? etcd needs a majority of the members it
/// counts: after removing one of `members`, the healthy ones left must be more than
/// half of what remains; a rejoin needs a majority of the current list.
pub fn check_quorum(members: &[String], healthy: &[String], removing: &str) -> Result<(), String> {
    let listed = members.iter().any(|m| m == removing);
    let count = if listed {
        members.len() - 1
    } else {
        members.len()
    };
    let alive = healthy.iter().filter(|h| *h != removing).count();
    let need = count / 2 + 1;
    if count == 0 {
        return Err(format!(
            "{removing} is the only etcd member; removing it leaves no cluster to rejoin"
        ));
    }
    if alive < need {
        let what = if listed {
            format!("removing {removing}'s etcd member would leave {count} members")
        } else {
            format!("etcd has {count} members")
        };
        return Err(format!(
            "{what}, of which {alive} {} healthy; etcd needs {need} for a majority",
            if alive == 1 { "is" } else { "are" }
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn quorum_arithmetic() {
        let three = v(&["a", "b", "c"]);
        // One of three lost: two healthy out of two remaining.
        assert!(check_quorum(&three, &v(&["a", "c"]), "b").is_ok());
        // Two of three lost: one healthy out of two remaining is no majority.
        let e = check_quorum(&three, &v(&["a"]), "b").unwrap_err();
        assert!(e.contains("leave 2 members, of which 1 is healthy"), "{e}");
        assert!(e.contains("needs 2"), "{e}");
        // Removing a healthy member (forced) counts against the survivors.
        assert!(check_quorum(&three, &three, "b").is_ok());
        assert!(check_quorum(&v(&["a", "b"]), &v(&["a", "b"]), "a").is_ok());
        // Already removed: the rejoin needs a majority of the current list.
        assert!(check_quorum(&v(&["a", "c"]), &v(&["a", "c"]), "b").is_ok());
        assert!(check_quorum(&v(&["a", "c"]), &v(&["a"]), "b").is_err());
        assert!(
            check_quorum(&v(&["a"]), &v(&[]), "a")
                .unwrap_err()
                .contains("only etcd member")
        );
    }

    #[test]
    fn health_verdicts() {
        let node = |name: &str, answers: bool, etcd: bool| NodeHealth {
            name: name.into(),
            control_plane: true,
            answers,
            maintenance: false,
            etcd_running: etcd,
            detail: String::new(),
        };
        let members = |names: &[&str]| {
            Some((
                "a".to_owned(),
                names
                    .iter()
                    .enumerate()
                    .map(|(i, n)| Member {
                        id: i as u64 + 1,
                        hostname: n.to_string(),
                    })
                    .collect(),
            ))
        };
        let h = Health {
            nodes: vec![node("a", true, true), node("b", true, true)],
            members: members(&["a", "b"]),
        };
        assert!(h.cluster_healthy());
        let h = Health {
            nodes: vec![node("a", true, true), node("b", false, false)],
            members: members(&["a", "b"]),
        };
        assert!(!h.cluster_healthy());
        assert!(h.node_healthy("a") && !h.node_healthy("b"));
        assert_eq!(h.healthy_members(), vec!["a".to_owned()]);
        // A running etcd that is not listed (removed) is not a healthy member.
        let h = Health {
            nodes: vec![node("a", true, true), node("b", true, true)],
            members: members(&["a"]),
        };
        assert!(!h.node_healthy("b") && !h.cluster_healthy());
    }
}

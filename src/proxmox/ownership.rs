//! Which VMs are ours: the marker every VM of a cluster carries, and what a VM's
//! tags and description say about who owns it.
//!
//! The marker names the cluster's ID (`cluster_id`), not only its name, in two
//! places: tags `talos-pve-cluster.<id>` and `talos-pve-node.<node>`, which
//! `/cluster/resources` lists even while the VM's host is offline (proxmox-semantics
//! §5), and its own description line `talos-pve:cluster=<name>;id=<id>;node=<node>`.
//! PVE stores tags lowercased, sorted and de-duplicated, and strips trailing
//! whitespace from the description (§7.3), so both are compared in that form.
//! Only the marker tags and the marker line are ours: the user's own tags and Notes
//! text are kept on every update.
//!
//! Markers of talos-pve before cluster IDs (`talos-pve:cluster=<name>;node=<node>`,
//! no tags) are `Legacy`: a name proves nothing, so such a VM is adopted only when
//! this cluster directory's state recorded the VM at that VMID.
//!
//! Pure: no I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::cluster_id::ClusterId;

use super::propstr::split_tags;

const ID_TAG: &str = "talos-pve-cluster.";
const NODE_TAG: &str = "talos-pve-node.";
const LINE: &str = "talos-pve:cluster=";
const HEADER: &str = "Talos node managed by talos-pve; keep the talos-pve: line below.";

/// Who this run acts for.
#[derive(Debug, Clone, PartialEq)]
pub struct Owner {
    pub cluster: String,
    pub id: ClusterId,
    /// Node → VMID this cluster directory's state recorded as its VM: the proof
    /// that lets a VM with a legacy (name-only) marker be adopted once.
    pub recorded: BTreeMap<String, u32>,
}

impl Owner {
    /// Whether `claim`, read from the VM at `vmid`, makes it `node`'s VM of this
    /// cluster: our ID for that node, or a legacy marker of this cluster's name for
    /// that node on the VMID this directory's state recorded (adopted once).
    pub fn proves(&self, claim: &Claim, node: &str, vmid: u32) -> bool {
        match claim {
            Claim::Ours { node: n } => n == node,
            Claim::Legacy { cluster, node: n } => {
                *cluster == self.cluster && n == node && self.recorded.get(n) == Some(&vmid)
            }
            _ => false,
        }
    }
}

/// A cluster's marker on one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    pub cluster: String,
    /// `None`: a legacy marker.
    pub id: Option<ClusterId>,
    pub node: String,
}

impl Marker {
    pub fn new(owner: &Owner, node: &str) -> Self {
        Self {
            cluster: owner.cluster.clone(),
            id: Some(owner.id.clone()),
            node: node.to_owned(),
        }
    }

    /// The description line.
    pub fn line(&self) -> String {
        match &self.id {
            Some(id) => format!("{LINE}{};id={id};node={}", self.cluster, self.node),
            None => format!("{LINE}{};node={}", self.cluster, self.node),
        }
    }

    /// The marker tags (none for a legacy marker). Node names are DNS labels (lint
    /// NET308), which are valid tags.
    pub fn tags(&self) -> Vec<String> {
        self.id
            .iter()
            .map(|id| format!("{ID_TAG}{id}"))
            .chain([format!("{NODE_TAG}{}", self.node.to_lowercase())])
            .collect()
    }

    /// The first marker in a description, anywhere on a line (legacy markers
    /// followed other text on the same line).
    pub fn read(description: &str) -> Option<Self> {
        description.lines().find_map(|l| {
            let token = l[l.find(LINE)? + LINE.len()..].split_whitespace().next()?;
            let mut parts = token.split(';');
            let cluster = parts.next()?.to_owned();
            let (mut id, mut node) = (None, None);
            for p in parts {
                match p.split_once('=')? {
                    ("id", v) => id = Some(ClusterId::parse(v)?),
                    ("node", v) => node = Some(v.to_owned()),
                    _ => return None,
                }
            }
            Some(Self {
                cluster,
                id,
                node: node?,
            })
        })
    }
}

/// What a VM's marker says about it, for `owner`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Marked with our ID, for this node.
    Ours { node: String },
    /// A legacy marker (name only); `cluster` may or may not be ours.
    Legacy { cluster: String, node: String },
    /// Marked by another cluster (perhaps with our name), or marked inconsistently.
    Other { what: String },
    /// No marker at all.
    Unmarked,
}

impl std::fmt::Display for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Claim::Ours { node } => write!(f, "this cluster's marker for node `{node}`"),
            Claim::Legacy { cluster, node } => {
                write!(
                    f,
                    "the old name-only marker of cluster `{cluster}`, node `{node}`"
                )
            }
            Claim::Other { what } => write!(f, "the marker of {what}"),
            Claim::Unmarked => f.write_str("no marker"),
        }
    }
}

/// Read tags (always available) and, when readable, the description.
pub fn claim(owner: &Owner, tags: &[String], description: Option<&str>) -> Claim {
    let ids: BTreeSet<String> = tags
        .iter()
        .filter_map(|t| t.to_lowercase().strip_prefix(ID_TAG).map(str::to_owned))
        .collect();
    let tag_node = tags
        .iter()
        .find_map(|t| t.to_lowercase().strip_prefix(NODE_TAG).map(str::to_owned));
    let ours = owner.id.as_str();
    let foreign_tag = ids.iter().find(|i| *i != ours);
    let other = |cluster: &str, id: &str| Claim::Other {
        what: format!("cluster `{cluster}` with ID {id}"),
    };
    match description.and_then(Marker::read) {
        Some(Marker {
            cluster,
            id: Some(id),
            node,
        }) => match foreign_tag {
            _ if id != owner.id => other(&cluster, id.as_str()),
            Some(t) => other(
                &cluster,
                &format!("{id} in its description but {t} in its tags"),
            ),
            None => Claim::Ours { node },
        },
        Some(Marker {
            cluster,
            id: None,
            node,
        }) => match (foreign_tag, ids.is_empty()) {
            (Some(t), _) => other(&cluster, t),
            (None, true) => Claim::Legacy { cluster, node },
            (None, false) => Claim::Ours { node },
        },
        None => match (foreign_tag, ids.is_empty(), tag_node) {
            (Some(t), _, _) => other("?", t),
            (None, false, Some(node)) => Claim::Ours { node },
            _ => Claim::Unmarked,
        },
    }
}

/// Tags our ID marks for `node` (from `/cluster/resources`, so also for VMs on an
/// offline host).
pub fn tagged_for(owner: &Owner, tags: &[String], node: &str) -> bool {
    matches!(claim(owner, tags, None), Claim::Ours { node: n } if n == node)
}

/// Put the marker into create parameters: marker tags beside the plan's tags, and
/// the description header and marker line.
pub fn stamp(params: &mut Vec<(String, String)>, marker: &Marker) {
    let set = |params: &mut Vec<(String, String)>, key: &str, value: String| match params
        .iter_mut()
        .find(|(k, _)| k == key)
    {
        Some(p) => p.1 = value,
        None => params.push((key.to_owned(), value)),
    };
    let tags = params
        .iter()
        .find(|(k, _)| k == "tags")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    set(params, "tags", merge_tags(&marker.tags().join(";"), &tags));
    set(
        params,
        "description",
        format!("{HEADER}\n{}", marker.line()),
    );
}

fn normal_tags(s: &str) -> BTreeSet<String> {
    split_tags(s).iter().map(|t| t.to_lowercase()).collect()
}

fn is_marker_tag(t: &str) -> bool {
    t.starts_with(ID_TAG) || t.starts_with(NODE_TAG)
}

/// Every tag we want is there and no other marker tag is.
pub fn same_tags(want: &str, got: &str) -> bool {
    let (w, g) = (normal_tags(want), normal_tags(got));
    w.is_subset(&g) && g.iter().filter(|t| is_marker_tag(t)).all(|t| w.contains(t))
}

/// The user's tags with ours added and stale marker tags dropped, in PVE's stored form.
pub fn merge_tags(want: &str, got: &str) -> String {
    let mut out = normal_tags(want);
    out.extend(normal_tags(got).into_iter().filter(|t| !is_marker_tag(t)));
    out.into_iter().collect::<Vec<_>>().join(";")
}

/// The same marker (the header and the user's text do not matter).
pub fn same_description(want: &str, got: &str) -> bool {
    Marker::read(want).is_some() && Marker::read(want) == Marker::read(got)
}

/// The user's Notes text, with our header and marker line replacing old ones.
pub fn merge_description(want: &str, got: &str) -> String {
    let user: Vec<&str> = got
        .lines()
        .filter(|l| !l.contains(LINE) && l.trim() != HEADER)
        .collect();
    let user = user.join("\n");
    let user = user.trim_end();
    if user.trim().is_empty() {
        want.to_owned()
    } else {
        format!("{user}\n{want}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(seed: &str) -> Owner {
        Owner {
            cluster: "homelab".into(),
            id: ClusterId::of(seed),
            recorded: BTreeMap::new(),
        }
    }

    fn tags(s: &str) -> Vec<String> {
        split_tags(s)
    }

    #[test]
    fn markers_round_trip_and_legacy_ones_are_read() {
        let m = Marker::new(&owner("a"), "talos-k8s-01");
        assert_eq!(
            Marker::read(&format!("notes\n{}", m.line())),
            Some(m.clone())
        );
        let legacy = "Talos node managed by talos-pve; do not edit the marker. talos-pve:cluster=homelab;node=talos-k8s-01";
        assert_eq!(
            Marker::read(legacy),
            Some(Marker {
                cluster: "homelab".into(),
                id: None,
                node: "talos-k8s-01".into()
            })
        );
        assert_eq!(Marker::read("talos-pve:cluster=x;id=zz;node=n"), None);
        for t in m.tags() {
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-+.".contains(&b)),
                "{t} is a valid PVE tag"
            );
        }
    }

    #[test]
    fn the_same_name_with_another_id_is_not_ours() {
        let (a, b) = (owner("a"), owner("b"));
        let mut p = vec![("tags".to_owned(), "talos;talos-pve".to_owned())];
        stamp(&mut p, &Marker::new(&a, "n1"));
        let t = tags(&p[0].1);
        let d = p[1].1.as_str();
        assert_eq!(claim(&a, &t, Some(d)), Claim::Ours { node: "n1".into() });
        assert!(matches!(claim(&b, &t, Some(d)), Claim::Other { .. }));
        // Host offline: tags alone decide.
        assert!(tagged_for(&a, &t, "n1"));
        assert!(!tagged_for(&b, &t, "n1"));
        assert!(!tagged_for(&a, &t, "n2"));
        let legacy = "talos-pve:cluster=homelab;node=n1";
        assert_eq!(
            claim(&b, &tags("talos;talos-pve"), Some(legacy)),
            Claim::Legacy {
                cluster: "homelab".into(),
                node: "n1".into()
            }
        );
        assert_eq!(claim(&a, &[], Some("my notes")), Claim::Unmarked);
        // Description and tags disagree: not ours.
        let mixed: Vec<String> = t
            .iter()
            .map(|x| x.replace(a.id.as_str(), b.id.as_str()))
            .collect();
        assert!(matches!(claim(&a, &mixed, Some(d)), Claim::Other { .. }));
    }

    #[test]
    fn user_tags_and_notes_are_kept() {
        let a = owner("a");
        let m = Marker::new(&a, "n1");
        let mut p = vec![("tags".to_owned(), "talos;talos-pve;controlplane".to_owned())];
        stamp(&mut p, &m);
        let (want_tags, want_desc) = (p[0].1.clone(), p[1].1.clone());
        let got = "backup-daily;controlplane;talos;talos-pve";
        assert!(!same_tags(&want_tags, got));
        let merged = merge_tags(&want_tags, got);
        assert!(merged.contains("backup-daily") && same_tags(&want_tags, &merged));
        let stale = format!("{merged};talos-pve-cluster.0123456789abcdef");
        assert!(!same_tags(&want_tags, &stale));
        assert!(!merge_tags(&want_tags, &stale).contains("0123456789abcdef"));

        let legacy = "Talos node managed by talos-pve; do not edit the marker. talos-pve:cluster=homelab;node=n1\nUPS group B";
        assert!(!same_description(&want_desc, legacy));
        let merged = merge_description(&want_desc, legacy);
        assert_eq!(merged, format!("UPS group B\n{want_desc}"));
        assert!(same_description(&want_desc, &merged));
        assert_eq!(
            merge_description(&want_desc, "talos-pve:cluster=homelab;node=n1"),
            want_desc
        );
    }
}

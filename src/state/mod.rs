//! The run state of a cluster (`state.json` in the cluster directory): which steps of
//! the bring-up are complete, so an interrupted `up` resumes where it stopped.
//!
//! Each completed step is persisted at once (atomic replace, mode 0600). The file also
//! records the hash of the profile and the identities the plan derived (VMIDs, MACs):
//! a resumed run with a changed profile sees the [`Drift`] and must decide (`adopt`)
//! before marking anything, so steps done for one profile never count for another.
//! A damaged file is an error naming the file and the way out, never a silent reset.
//!
//! It records steps; it must not perform them (that is `up`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cluster_dir::ClusterDir;
use crate::files;
use crate::plan::Plan;
use crate::profile::Profile;

/// Version of the state file layout.
pub const STATE_FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum StateError {
    #[error(
        "cannot read state file {path}: {source}\n  fix: check the permissions of the cluster directory"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "state file {path} is damaged: {reason}\n  fix: restore it from a backup, or move it aside to start the run over (completed steps are then checked again; nothing is deleted)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "state file {path} has format {found}, this talos-pve understands {STATE_FORMAT}\n  fix: use the talos-pve version that wrote it, or move the file aside to start over"
    )]
    Format { path: PathBuf, found: u32 },
    #[error(
        "state file {path} belongs to cluster `{found}`, not `{expected}`\n  fix: use the cluster directory of `{expected}` (--dir), or move the file aside"
    )]
    OtherCluster {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "the profile changed since state file {path} was written ({summary}); refusing to record `{step}`\n  fix: review the change; to continue with the new profile, accept it (State::adopt)"
    )]
    Drifted {
        path: PathBuf,
        summary: String,
        step: String,
    },
    #[error(
        "cannot write state file {path}: {source}\n  fix: check free space and permissions of the cluster directory"
    )]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One step of the bring-up; per-host and per-node steps carry their target.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    Lint,
    Preflight,
    Secrets,
    Configs,
    Schematic,
    Iso(String),
    Vm(String),
    Started(String),
    /// The node's `cidata` volume is attached and its VM booted from it.
    Cidata(String),
    Installed(String),
    /// The `cidata` volume is out of the drive and off the storage.
    CidataRemoved(String),
    Bootstrapped,
    EtcdHealthy,
    Kubeconfig,
    PodCidr(String),
    Cilium,
    Metallb,
    Healthy,
    /// `upgrade`: the node runs the profile's Talos release (detail: from → to).
    TalosUpgraded(String),
    /// `upgrade`: the node runs the profile's machine config and Kubernetes release.
    KubernetesUpgraded(String),
    /// `up`: the node runs the profile's changed machine config (in place, or
    /// staged and rebooted) and its VM has no pending hardware change.
    Reconfigured(String),
}

impl Step {
    /// The stable name written to the state file and shown by `status`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Lint => "lint",
            Step::Preflight => "preflight",
            Step::Secrets => "secrets",
            Step::Configs => "configs",
            Step::Schematic => "schematic",
            Step::Iso(_) => "iso",
            Step::Vm(_) => "vm",
            Step::Started(_) => "started",
            Step::Cidata(_) => "cidata",
            Step::Installed(_) => "installed",
            Step::CidataRemoved(_) => "cidata-removed",
            Step::Bootstrapped => "bootstrapped",
            Step::EtcdHealthy => "etcd-healthy",
            Step::Kubeconfig => "kubeconfig",
            Step::PodCidr(_) => "pod-cidr",
            Step::Cilium => "cilium",
            Step::Metallb => "metallb",
            Step::Healthy => "healthy",
            Step::TalosUpgraded(_) => "talos-upgraded",
            Step::KubernetesUpgraded(_) => "kubernetes-upgraded",
            Step::Reconfigured(_) => "reconfigured",
        }
    }

    /// The host (for `Iso`) or node the step is about; `None` for cluster-wide steps.
    pub fn target(&self) -> Option<&str> {
        match self {
            Step::Iso(t)
            | Step::Vm(t)
            | Step::Started(t)
            | Step::Cidata(t)
            | Step::Installed(t)
            | Step::CidataRemoved(t)
            | Step::PodCidr(t)
            | Step::TalosUpgraded(t)
            | Step::KubernetesUpgraded(t)
            | Step::Reconfigured(t) => Some(t),
            _ => None,
        }
    }

    /// Rebuild a step from its stored name and target.
    pub fn from_parts(name: &str, target: Option<&str>) -> Option<Step> {
        let cluster = |s: Step| target.is_none().then_some(s);
        let per = |f: fn(String) -> Step| target.map(|t| f(t.to_owned()));
        match name {
            "lint" => cluster(Step::Lint),
            "preflight" => cluster(Step::Preflight),
            "secrets" => cluster(Step::Secrets),
            "configs" => cluster(Step::Configs),
            "schematic" => cluster(Step::Schematic),
            "iso" => per(Step::Iso),
            "vm" => per(Step::Vm),
            "started" => per(Step::Started),
            // "maintenance"/"applied": the config delivery of state files written
            // before configs travelled on cidata volumes.
            "cidata" | "maintenance" | "applied" => per(Step::Cidata),
            "cidata-removed" => per(Step::CidataRemoved),
            "installed" => per(Step::Installed),
            "bootstrapped" => cluster(Step::Bootstrapped),
            "etcd-healthy" => cluster(Step::EtcdHealthy),
            "kubeconfig" => cluster(Step::Kubeconfig),
            "pod-cidr" => per(Step::PodCidr),
            "cilium" => cluster(Step::Cilium),
            "metallb" => cluster(Step::Metallb),
            "healthy" => cluster(Step::Healthy),
            "talos-upgraded" => per(Step::TalosUpgraded),
            "kubernetes-upgraded" => per(Step::KubernetesUpgraded),
            "reconfigured" => per(Step::Reconfigured),
            _ => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.target() {
            Some(t) => write!(f, "{} {t}", self.name()),
            None => f.write_str(self.name()),
        }
    }
}

/// On disk a step is `{"step": "vm", "target": "talos-k8s-01"}`.
#[derive(Serialize, Deserialize)]
struct StepParts {
    step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        StepParts {
            step: self.name().to_owned(),
            target: self.target().map(str::to_owned),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let p = StepParts::deserialize(d)?;
        Step::from_parts(&p.step, p.target.as_deref()).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown step `{}`{}",
                p.step,
                p.target.map(|t| format!(" for `{t}`")).unwrap_or_default()
            ))
        })
    }
}

/// A completed step. (No `deny_unknown_fields`: serde does not support it with `flatten`.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    #[serde(flatten)]
    pub step: Step,
    /// RFC 3339, UTC.
    pub at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// What the plan made a node into; a change means a different VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    pub host: String,
    pub vmid: u32,
    /// Management and workload NIC MACs.
    pub macs: Vec<String>,
}

/// The file's content, also what `status` reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Recorded {
    pub format: u32,
    pub cluster: String,
    /// SHA-256 of the profile the steps were done for.
    pub profile_hash: String,
    pub identities: BTreeMap<String, Identity>,
    pub steps: Vec<Record>,
}

impl Recorded {
    /// Node → VMID of every VM this state recorded as made or adopted for the node.
    pub fn vms(&self) -> BTreeMap<String, u32> {
        self.steps
            .iter()
            .filter_map(|r| match &r.step {
                Step::Vm(node) => Some((node.clone(), self.identities.get(node)?.vmid)),
                _ => None,
            })
            .collect()
    }
}

/// How the current profile differs from the one the state was written for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drift {
    pub profile_changed: bool,
    /// Human-readable, e.g. `talos-k8s-01: VMID 120 → 130`.
    pub identity_changes: Vec<String>,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        !self.profile_changed && self.identity_changes.is_empty()
    }

    fn summary(&self) -> String {
        if self.identity_changes.is_empty() {
            "profile edited; VMIDs and MACs unchanged".into()
        } else {
            self.identity_changes.join("; ")
        }
    }
}

/// The live state: shared between tasks (`&State` is enough; a mutex is inside).
pub struct State {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    rec: Recorded,
    drift: Drift,
    /// What the current profile would record, applied by `adopt`.
    current: (String, BTreeMap<String, Identity>),
}

pub fn profile_hash(p: &Profile) -> String {
    // serde_json of the typed profile: field order is fixed by the struct, so the hash
    // ignores comments and formatting but not any value.
    let bytes = serde_json::to_vec(p).unwrap_or_default();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes))
}

pub fn identities(plan: &Plan) -> BTreeMap<String, Identity> {
    plan.nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                Identity {
                    host: n.host.clone(),
                    vmid: n.vmid,
                    macs: n.nics().map(|nic| nic.mac.clone()).collect(),
                },
            )
        })
        .collect()
}

fn now() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn compare(old: &BTreeMap<String, Identity>, new: &BTreeMap<String, Identity>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, o) in old {
        match new.get(name) {
            None => out.push(format!("{name}: no longer in the profile")),
            Some(n) => {
                if o.host != n.host {
                    out.push(format!("{name}: host {} → {}", o.host, n.host));
                }
                if o.vmid != n.vmid {
                    out.push(format!("{name}: VMID {} → {}", o.vmid, n.vmid));
                }
                if o.macs != n.macs {
                    out.push(format!(
                        "{name}: MACs {} → {}",
                        o.macs.join(","),
                        n.macs.join(",")
                    ));
                }
            }
        }
    }
    out.extend(
        new.keys()
            .filter(|k| !old.contains_key(*k))
            .map(|k| format!("{k}: new node")),
    );
    out
}

impl State {
    /// `state.json` of the cluster directory.
    pub fn open(dir: &ClusterDir, profile: &Profile, plan: &Plan) -> Result<State, StateError> {
        Self::load_or_new(&dir.state(), profile, plan)
    }

    /// Read the file if it exists (checking it belongs to this cluster), else start empty.
    /// Nothing is written until the first `mark_done` or `adopt`.
    pub fn load_or_new(path: &Path, profile: &Profile, plan: &Plan) -> Result<State, StateError> {
        let current = (profile_hash(profile), identities(plan));
        let (rec, drift) = match Self::read(path)? {
            None => (
                Recorded {
                    format: STATE_FORMAT,
                    cluster: profile.metadata.name.clone(),
                    profile_hash: current.0.clone(),
                    identities: current.1.clone(),
                    steps: Vec::new(),
                },
                Drift::default(),
            ),
            Some(rec) => {
                if rec.cluster != profile.metadata.name {
                    return Err(StateError::OtherCluster {
                        path: path.to_owned(),
                        found: rec.cluster,
                        expected: profile.metadata.name.clone(),
                    });
                }
                let drift = Drift {
                    profile_changed: rec.profile_hash != current.0,
                    identity_changes: compare(&rec.identities, &current.1),
                };
                (rec, drift)
            }
        };
        Ok(State {
            path: path.to_owned(),
            inner: Mutex::new(Inner {
                rec,
                drift,
                current,
            }),
        })
    }

    /// The recorded state without a profile (for `status`); `None` when there is no file.
    pub fn read(path: &Path) -> Result<Option<Recorded>, StateError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StateError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let corrupt = |reason: String| StateError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        // Check the format first so a newer layout is reported as such, not as damage.
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        match value.get("format").and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(STATE_FORMAT) => {}
            Some(f) => {
                return Err(StateError::Format {
                    path: path.to_owned(),
                    found: u32::try_from(f).unwrap_or(u32::MAX),
                });
            }
            None => return Err(corrupt("no `format` field".into())),
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How the profile differs from the recorded one (empty for a fresh state).
    pub fn drift(&self) -> Drift {
        self.lock().drift.clone()
    }

    /// Accept the current profile: record its hash and identities and persist. Steps of
    /// nodes whose identity changed are forgotten, since they describe another VM.
    pub fn adopt(&self) -> Result<(), StateError> {
        let mut g = self.lock();
        let (hash, ids) = g.current.clone();
        let changed: Vec<String> = g
            .rec
            .identities
            .iter()
            .filter(|(name, old)| ids.get(*name) != Some(old))
            .map(|(name, _)| name.clone())
            .collect();
        g.rec.steps.retain(|r| {
            r.step
                .target()
                .is_none_or(|t| !changed.iter().any(|c| c == t))
        });
        g.rec.profile_hash = hash;
        g.rec.identities = ids;
        g.drift = Drift::default();
        self.persist(&g.rec)
    }

    pub fn is_done(&self, step: &Step) -> bool {
        self.lock().rec.steps.iter().any(|r| r.step == *step)
    }

    /// Record `step` as complete and write the file before returning.
    pub fn mark_done(&self, step: Step, detail: Option<&str>) -> Result<(), StateError> {
        self.mark_all(vec![(step, detail.map(str::to_owned))])
    }

    /// Record several steps complete with one write of the file (each write is
    /// fsynced: steps finished together are not written one by one).
    pub fn mark_all(&self, done: Vec<(Step, Option<String>)>) -> Result<(), StateError> {
        let mut g = self.lock();
        if !g.drift.is_empty()
            && let Some((step, _)) = done.first()
        {
            return Err(StateError::Drifted {
                path: self.path.clone(),
                summary: g.drift.summary(),
                step: step.to_string(),
            });
        }
        let at = now();
        for (step, detail) in done {
            let record = Record {
                step,
                at: at.clone(),
                detail,
            };
            match g.rec.steps.iter_mut().find(|r| r.step == record.step) {
                Some(r) => *r = record,
                None => g.rec.steps.push(record),
            }
        }
        // Written under the lock: concurrent marks land one after another, the last
        // write holds every step.
        self.persist(&g.rec)
    }

    /// Completed steps in the order they were first recorded.
    pub fn steps(&self) -> Vec<Record> {
        self.lock().rec.steps.clone()
    }

    fn persist(&self, rec: &Recorded) -> Result<(), StateError> {
        let write_err = |source| StateError::Write {
            path: self.path.clone(),
            source,
        };
        let mut bytes = serde_json::to_vec_pretty(rec).map_err(|e| write_err(e.into()))?;
        bytes.push(b'\n');
        files::write_atomic(&self.path, &bytes, files::SECRET_MODE).map_err(write_err)
    }
}

#[cfg(test)]
mod tests;

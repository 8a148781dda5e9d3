//! One simulated datacenter: lab Proxmox, lab Talos nodes and the lab Kubernetes API
//! on a shared fabric, with its state kept in the cluster directory so that every
//! `--lab` command (`up`, `status`, `backup`, `rebuild`, `destroy`) acts on the same
//! simulated hosts, as it would on real ones.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::Fabric;
use super::faults::LabFaults;
use super::kube::{KubeSimConfig, LabKube};
use super::proxmox::{LabProxmox, LabProxmoxConfig, LabProxmoxHandle, LabPveState};
use super::talos::{LabTalos, LabTalosConfig, LabTalosState};
use crate::files::{self, SECRET_MODE};
use crate::profile::Profile;

#[derive(Debug, Error)]
pub enum DatacenterError {
    #[error(
        "lab state {path}: {detail}\n  fix: it is written by talos-pve --lab runs; delete {path} to start a fresh simulated datacenter"
    )]
    State { path: PathBuf, detail: String },
    #[error("lab: {0}")]
    Start(String),
    #[error("writing lab output {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How the simulated datacenter behaves: pace and injected faults.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Real-world phase latencies are divided by this (60 = a minute becomes a second).
    pub speed: f64,
    pub faults: LabFaults,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            speed: 60.0,
            faults: LabFaults::default(),
        }
    }
}

impl LabOptions {
    /// Scale a real-world duration to lab time.
    pub fn scaled(&self, real: Duration) -> Duration {
        Duration::from_secs_f64(real.as_secs_f64() / self.speed.max(1.0))
    }
}

/// What survives between `--lab` commands (written 0600: configs hold CA keys).
#[derive(Serialize, Deserialize)]
struct Saved {
    proxmox: LabPveState,
    talos: LabTalosState,
    /// The lab etcd (Kubernetes objects) as a snapshot, base64.
    etcd: String,
}

pub struct Datacenter {
    pub fabric: Fabric,
    pub proxmox: LabProxmoxHandle,
    pub talos: LabTalos,
    pub kube: LabKube,
    state_path: PathBuf,
}

impl Datacenter {
    /// Open the datacenter saved in `dir` (or build a fresh one for `profile`).
    pub async fn open(
        dir: &Path,
        profile: &Profile,
        opts: &LabOptions,
    ) -> Result<Self, DatacenterError> {
        let timings = (
            proxmox_config(opts),
            talos_config(profile, opts),
            kube_config(opts),
        );
        Self::open_with(dir, profile, timings).await
    }

    /// As `open`, with every simulated latency given explicitly (benchmarks pin them
    /// instead of deriving them from `LabOptions::speed`).
    pub async fn open_with(
        dir: &Path,
        profile: &Profile,
        (pve_cfg, talos_cfg, kube_cfg): (LabProxmoxConfig, LabTalosConfig, KubeSimConfig),
    ) -> Result<Self, DatacenterError> {
        crate::tls::install_provider();
        let state_path = dir.join("datacenter.json");
        let saved = load(&state_path)?;
        let fabric = Fabric::new();
        let kube = LabKube::spawn(&fabric, kube_cfg);
        let (proxmox, talos) = match saved {
            Some(s) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&s.etcd)
                    .map_err(|e| DatacenterError::State {
                        path: state_path.clone(),
                        detail: e.to_string(),
                    })?;
                if !bytes.is_empty() {
                    fabric
                        .etcd
                        .restore(&bytes, false)
                        .map_err(|e| DatacenterError::State {
                            path: state_path.clone(),
                            detail: e.to_string(),
                        })?;
                }
                let talos = LabTalos::start_from(&fabric, talos_cfg, s.talos);
                let pve = LabProxmox::from_state(&fabric, pve_cfg, s.proxmox).await;
                (pve, talos)
            }
            None => {
                let talos = LabTalos::start(&fabric, talos_cfg);
                (
                    LabProxmox::start(&fabric, pve_cfg, &profile.proxmox).await,
                    talos,
                )
            }
        };
        let proxmox = proxmox.map_err(|e| DatacenterError::Start(format!("{e:#}")))?;
        Ok(Self {
            fabric,
            proxmox,
            talos,
            kube,
            state_path,
        })
    }

    /// Persist the simulated datacenter for the next `--lab` command.
    pub fn save(&self) -> Result<(), DatacenterError> {
        let etcd = if self.fabric.etcd.is_empty() {
            Vec::new()
        } else {
            self.fabric.etcd.snapshot()
        };
        let saved = Saved {
            proxmox: self.proxmox.state(),
            talos: self.talos.state(),
            etcd: base64::engine::general_purpose::STANDARD.encode(etcd),
        };
        let json = serde_json::to_vec_pretty(&saved).expect("lab state serializes");
        files::write_atomic(&self.state_path, &json, SECRET_MODE).map_err(|source| {
            DatacenterError::Write {
                path: self.state_path.clone(),
                source,
            }
        })
    }

    /// `--lab-report DIR`: each VM's Proxmox config, each node's applied machine config,
    /// and every object the lab Kubernetes API holds, as plain files.
    pub fn report(&self, out: &Path) -> Result<usize, DatacenterError> {
        let w = |p: PathBuf, bytes: &[u8]| {
            files::write_atomic(&p, bytes, SECRET_MODE)
                .map_err(|source| DatacenterError::Write { path: p, source })
        };
        let mut n = 0;
        let pve = self.proxmox.state();
        let pve_json = serde_json::to_value(&pve).expect("lab state serializes");
        if let Some(vms) = pve_json.get("vms").and_then(|v| v.as_object()) {
            for (vmid, vm) in vms {
                w(
                    out.join("proxmox").join(format!("{vmid}.json")),
                    &serde_json::to_vec_pretty(vm).expect("json"),
                )?;
                n += 1;
            }
        }
        for node in self.talos.state().nodes {
            if let Some(cfg) = &node.config {
                w(
                    out.join("talos").join(format!("{}.yaml", node.vm.name)),
                    cfg.as_bytes(),
                )?;
                n += 1;
            }
        }
        let kube_dir = out.join("kubernetes");
        n += self
            .kube
            .dump(&kube_dir)
            .map_err(|e| DatacenterError::Write {
                path: kube_dir.clone(),
                source: std::io::Error::other(e.to_string()),
            })?;
        Ok(n)
    }

    pub fn shutdown(self) {
        self.talos.shutdown();
        self.proxmox.shutdown();
    }
}

fn load(path: &Path) -> Result<Option<Saved>, DatacenterError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| DatacenterError::State {
                path: path.to_owned(),
                detail: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(DatacenterError::State {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

/// Real-world Proxmox task times, scaled.
fn proxmox_config(o: &LabOptions) -> LabProxmoxConfig {
    let ms = |s: f64| (o.scaled(Duration::from_secs_f64(s)).as_millis()) as u64;
    LabProxmoxConfig {
        request_latency_ms: ms(0.02),
        task_ms: [
            ("qmcreate", 3.0),
            ("qmstart", 2.0),
            ("qmstop", 2.0),
            ("qmdestroy", 2.0),
            ("download", 40.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ms(v)))
        .collect(),
        default_task_ms: ms(1.0),
        faults: o.faults.proxmox.clone(),
        ..LabProxmoxConfig::default()
    }
}

/// Real-world Talos phase times (ISO boot, install + reboot, etcd, join), scaled.
fn talos_config(p: &Profile, o: &LabOptions) -> LabTalosConfig {
    let s = |secs: u64| o.scaled(Duration::from_secs(secs));
    LabTalosConfig {
        talos_version: p.talos.version.clone(),
        boot: s(45),
        install: s(90),
        etcd_ready: s(20),
        join: s(20),
        faults: o.faults.talos.clone(),
    }
}

fn kube_config(o: &LabOptions) -> KubeSimConfig {
    let r = KubeSimConfig::realistic();
    let s = |d: Duration| o.scaled(d);
    KubeSimConfig {
        tick: s(r.tick).max(Duration::from_millis(5)),
        node_register: s(r.node_register),
        crd_established: s(r.crd_established),
        slow_crds: o
            .faults
            .slow_crds
            .iter()
            .map(|(n, d)| (n.clone(), s(*d)))
            .collect(),
        job_run: s(r.job_run),
        rollout: s(r.rollout),
        webhook_endpoint: s(r.webhook_endpoint),
        webhook_grace: s(r.webhook_grace),
        node_labels: r.node_labels,
    }
}

//! One simulated datacenter: lab Proxmox, lab Talos nodes and the lab Kubernetes API
//! on a shared fabric, with its state kept in the cluster directory so that every
//! `--lab` command (`up`, `status`, `backup`, `rebuild`, `destroy`) acts on the same
//! simulated hosts, as it would on real ones.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::faults::{Disaster, LabFaults};
use super::kube::{KubeSimConfig, LabKube};
use super::proxmox::{LabProxmox, LabProxmoxConfig, LabProxmoxHandle, LabPveState, free_volumes};
use super::talos::{LabTalos, LabTalosConfig, LabTalosState, NodeState, Phase};
use super::{EtcdStore, Fabric, LabEvent, LabNic, LabVm};
use crate::files::{self, SECRET_MODE};
use crate::profile::{Profile, Role};

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
    saver: LabSaver,
}

/// Writes the datacenter's state to its file; cheap to clone into any task. The
/// simulated hosts outlive a killed command as real ones would, so `up` saves at
/// every recorded step and periodically, not only at the end.
#[derive(Clone)]
pub struct LabSaver {
    path: PathBuf,
    talos: LabTalos,
    proxmox: Arc<dyn Fn() -> LabPveState + Send + Sync>,
    etcd: EtcdStore,
    /// One writer at a time (`write_atomic`'s temporary file is per process);
    /// `true` once the datacenter shut down: its emptied simulators are not saved.
    writing: Arc<Mutex<bool>>,
}

impl LabSaver {
    /// Snapshot Talos before Proxmox: a node always has its VM in the same file
    /// (VMs come first in the real order of events); a VM started after the Talos
    /// snapshot is booted again on restore (`Datacenter::open`).
    pub fn save(&self) -> Result<(), DatacenterError> {
        let closed = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        if *closed {
            return Ok(());
        }
        let talos = self.talos.state();
        let proxmox = (self.proxmox)();
        let etcd = if self.etcd.is_empty() {
            Vec::new()
        } else {
            self.etcd.snapshot()
        };
        let saved = Saved {
            proxmox,
            talos,
            etcd: base64::engine::general_purpose::STANDARD.encode(etcd),
        };
        let json = serde_json::to_vec_pretty(&saved).expect("lab state serializes");
        files::write_atomic_unsynced(&self.path, &json, SECRET_MODE).map_err(|source| {
            DatacenterError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
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
            kube_config(profile, opts),
        );
        Self::open_with(dir, profile, timings, &opts.faults.disasters).await
    }

    /// As `open`, with every simulated latency given explicitly (benchmarks pin them
    /// instead of deriving them from `LabOptions::speed`).
    pub async fn open_with(
        dir: &Path,
        profile: &Profile,
        (pve_cfg, talos_cfg, kube_cfg): (LabProxmoxConfig, LabTalosConfig, KubeSimConfig),
        disasters: &[Disaster],
    ) -> Result<Self, DatacenterError> {
        crate::tls::install_provider();
        let state_path = dir.join("datacenter.json");
        let mut saved = load(&state_path)?;
        let (impostors, disasters): (Vec<&Disaster>, Vec<&Disaster>) = disasters
            .iter()
            .partition(|d| matches!(d, Disaster::Impostor(_)));
        if !disasters.is_empty() {
            let s = saved.as_mut().ok_or_else(|| DatacenterError::State {
                path: state_path.clone(),
                detail: "lab disasters act on an existing lab datacenter, and there is none yet"
                    .into(),
            })?;
            strike(s, profile, &disasters).map_err(|detail| DatacenterError::State {
                path: state_path.clone(),
                detail,
            })?;
        }
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
                let mut t = s.talos;
                // Faults are this command's (`--lab-faults`), as for Proxmox: a
                // previous command's leftovers do not fire again.
                t.faults_left = talos_cfg.faults.clone();
                // A guest whose VM is gone (deleted after the Talos snapshot) is gone too.
                t.nodes.retain(|n| s.proxmox.vms.contains_key(&n.vm.vmid));
                let known: Vec<u32> = t.nodes.iter().map(|n| n.vm.vmid).collect();
                // Proxmox listens before any restored guest boots on: a guest that
                // reaches Talos-from-disk during the restore still gets its agent.
                let pve = LabProxmox::from_state(&fabric, pve_cfg, s.proxmox).await;
                let talos = LabTalos::start_from(&fabric, talos_cfg, t);
                if let Ok(pve) = &pve {
                    // Powered-on VMs whose guest the last command never saw boot now.
                    for vm in pve.running_vms() {
                        if !known.contains(&vm.vmid) {
                            fabric.emit(LabEvent::VmStarted(vm));
                        }
                    }
                }
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
        for d in impostors {
            if let Disaster::Impostor(name) = d {
                let vm = impostor_vm(profile, name).map_err(|detail| DatacenterError::State {
                    path: state_path.clone(),
                    detail,
                })?;
                talos.impostor(vm);
            }
        }
        let saver = LabSaver {
            path: state_path,
            talos: talos.clone(),
            proxmox: Arc::new(proxmox.state_reader()),
            etcd: fabric.etcd.clone(),
            writing: Arc::default(),
        };
        Ok(Self {
            fabric,
            proxmox,
            talos,
            kube,
            saver,
        })
    }

    /// Persist the simulated datacenter for the next `--lab` command.
    pub fn save(&self) -> Result<(), DatacenterError> {
        self.saver.save()
    }

    /// A saver for other tasks (checkpoints during a run).
    pub fn saver(&self) -> LabSaver {
        self.saver.clone()
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
        for (node, cfg) in self.talos.impostor_configs() {
            w(
                out.join("talos").join(format!("impostor-{node}.yaml")),
                cfg.as_bytes(),
            )?;
            n += 1;
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
        *self.saver.writing.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.talos.shutdown();
        self.proxmox.shutdown();
    }
}

/// The foreign machine of `impostor=NODE`: the node's MACs and management address.
fn impostor_vm(profile: &Profile, name: &str) -> Result<LabVm, String> {
    let plan = crate::plan::Plan::build(profile).map_err(|e| format!("lab impostor: {e}"))?;
    let n = plan.node(name).ok_or_else(|| {
        format!("lab disaster names `{name}`, which is not a node of the profile")
    })?;
    let nic = |index: u8, p: &crate::plan::NicPlan, address| LabNic {
        index,
        mac: p.mac.to_ascii_uppercase(),
        vlan: p.vlan,
        address,
        gateway: None,
    };
    Ok(LabVm {
        vmid: n.vmid,
        host: "(not a Proxmox VM)".into(),
        name: n.name.clone(),
        nics: n
            .nics()
            .map(|p| nic(p.index, p, (p.index == 0).then_some(p.address)))
            .collect(),
        media: Vec::new(),
    })
}

/// Apply disasters to the saved datacenter before anything starts from it, so the
/// simulators resume into the aftermath.
fn strike(s: &mut Saved, profile: &Profile, disasters: &[&Disaster]) -> Result<(), String> {
    let vmid = |name: &str| {
        profile
            .nodes
            .iter()
            .find(|n| n.name == name)
            .map(|n| n.vmid)
            .ok_or_else(|| {
                format!("lab disaster names `{name}`, which is not a node of the profile")
            })
    };
    let destroy = |s: &mut Saved, vmid: u32| {
        if let Some(vm) = s.proxmox.vms.remove(&vmid) {
            free_volumes(&mut s.proxmox, &vm);
        }
        s.talos.nodes.retain(|n| n.vm.vmid != vmid);
    };
    for d in disasters {
        match d {
            Disaster::DestroyVm(name) => destroy(s, vmid(name)?),
            // Its member stays listed (the cluster still counts it) but the node
            // serves no etcd: it must be wiped and removed to rejoin.
            Disaster::CorruptEtcd(name) => node(s, name, vmid(name)?)?.etcd_member = false,
            // The VM runs on, the node is gone from the network until a power cycle.
            Disaster::HangNode(name) => node(s, name, vmid(name)?)?.phase = Phase::Stopped,
            Disaster::LoseControlPlanes => {
                for n in profile
                    .nodes
                    .iter()
                    .filter(|n| n.role == Role::Controlplane)
                {
                    destroy(s, n.vmid);
                }
                s.talos.members.clear();
                // etcd lived only on the control planes.
                s.etcd.clear();
            }
            // Set up after the simulators start (`impostor_vm`).
            Disaster::Impostor(_) => {}
        }
    }
    Ok(())
}

fn node<'a>(s: &'a mut Saved, name: &str, vmid: u32) -> Result<&'a mut NodeState, String> {
    s.talos
        .nodes
        .iter_mut()
        .find(|n| n.vm.vmid == vmid)
        .ok_or_else(|| format!("lab disaster: `{name}` has no node (its VM is gone)"))
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
        faults: super::talos::Faults {
            // Real-world time, like every other lab latency (and `slow-crd`).
            slow_install: o.scaled(o.faults.talos.slow_install),
            ..o.faults.talos.clone()
        },
        link_names: o.faults.link_names.clone(),
    }
}

fn kube_config(p: &Profile, o: &LabOptions) -> KubeSimConfig {
    let r = KubeSimConfig::realistic();
    let s = |d: Duration| o.scaled(d);
    KubeSimConfig {
        tick: s(r.tick).max(Duration::from_millis(5)),
        node_register: s(r.node_register),
        kubelet_start: s(r.kubelet_start),
        node_monitor_grace: s(r.node_monitor_grace),
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
        kubernetes_version: p.kubernetes.version.clone(),
        talos_version: p.talos.version.clone(),
        node_sizes: crate::plan::Plan::build(p)
            .map(|plan| {
                plan.nodes
                    .iter()
                    .map(|n| (n.name.clone(), (n.cores, n.memory_mib)))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

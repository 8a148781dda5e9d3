//! `--lab-faults SPEC`: faults injected into the simulated datacenter.
//!
//! SPEC is a comma-separated list of `name[=value]`:
//!
//! | name | value | effect |
//! |---|---|---|
//! | `slow-install` | duration (`30s`, `500ms`) | every Talos install takes that much longer (real time, scaled by `--lab-speed`) |
//! | `reboot-loops` | count | nodes loop install → reboot that many times before running |
//! | `time-not-in-sync` | count | the first N Bootstrap calls fail with "time is not in sync yet" |
//! | `drop-streams` | count | the first N snapshot/kubeconfig streams are cut short |
//! | `pve-lock` | count | N VM operations fail with `can't lock file … got timeout` |
//! | `pve-595` | count | N reads fail with 595 (connection to the node lost) |
//! | `pve-500` | count | N writes fail with a 500 before doing anything |
//! | `pve-task-error` | task type (`qmcreate`, `qmstart`, `download`) | that task ends in `TASK ERROR` once (`qmstart`: the start that boots a VM with its `cidata`) |
//! | `link-names` | `predictable` | the nodes name their NICs `ens18`, `ens19`, … instead of `eth0`, `eth1`, … (talos-pve must read them) |
//! | `slow-crd` | `NAME:duration` | that CRD takes that long (in real time) to become Established |
//! | `upgrade-fails` | node name | that node's next OS upgrade fails in the installer; it stays on its release |
//! | `kubelet-stays-down` | node name | that node's kubelet does not start at its next boot (a reboot, an upgrade): its Node keeps the old `bootID` and turns `Unknown` after the grace period |
//! | `etcd-stays-down` | node name | that control plane's etcd does not start at its next boot: it stays a listed member, its `etcd` service never gets Running |
//! | `destroy-vm` | node name | disaster: that node's VM (and its disks) is gone; its etcd member stays listed |
//! | `corrupt-etcd` | node name | disaster: that control plane's etcd data is broken; it stays a listed member but serves nothing |
//! | `hang-node` | node name | disaster: that node's VM runs but the node answers nothing (hung) until it is power-cycled |
//! | `lose-control-planes` | — | disaster: every control-plane VM and the etcd data are gone |
//! | `impostor` | node name | disaster: a foreign machine answers at that node's management address with the node's MACs, in maintenance mode (takes any config; `--lab-report` writes what it got to `talos/impostor-<node>.yaml`) |
//!
//! Disasters act on a saved lab datacenter once, when the command opens it (the
//! next command sees their result, as it would on real hosts).
//!
//! Example: `--lab-faults time-not-in-sync=2,pve-lock=3,slow-crd=ipaddresspools.metallb.io:60s`.
//!
//! Faults belong to the command that names them: a later `--lab` command on the same
//! saved datacenter without `--lab-faults` runs without any.

use std::time::Duration;

use thiserror::Error;

use super::proxmox::{Fault, FaultEffect};
use super::talos::Faults;

#[derive(Debug, Error, PartialEq)]
#[error(
    "--lab-faults: `{item}`: {reason}\n  fix: see `talos-pve up --help`; e.g. --lab-faults time-not-in-sync=2,pve-lock=3"
)]
pub struct FaultSpecError {
    pub item: String,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct LabFaults {
    pub talos: Faults,
    pub proxmox: Vec<Fault>,
    pub slow_crds: Vec<(String, Duration)>,
    pub link_names: super::talos::LinkNames,
    /// Applied to the saved datacenter when it opens.
    pub disasters: Vec<Disaster>,
}

/// Something that happened to the simulated datacenter between two commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disaster {
    DestroyVm(String),
    CorruptEtcd(String),
    HangNode(String),
    LoseControlPlanes,
    /// Needs no saved datacenter: the machine is there from the start.
    Impostor(String),
}

impl LabFaults {
    pub fn parse(spec: &str) -> Result<Self, FaultSpecError> {
        let mut f = LabFaults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let err = |reason: &str| FaultSpecError {
                item: item.into(),
                reason: reason.into(),
            };
            let (name, value) = item
                .split_once('=')
                .map_or((item, ""), |(n, v)| (n.trim(), v.trim()));
            let count = || {
                value
                    .parse::<u32>()
                    .map_err(|_| err("expects a count, e.g. =2"))
            };
            match name {
                "slow-install" => {
                    f.talos.slow_install =
                        duration(value).ok_or_else(|| err("expects a duration, e.g. =30s"))?
                }
                "reboot-loops" => f.talos.reboot_loops = count()?,
                "time-not-in-sync" => f.talos.time_not_in_sync = count()?,
                "drop-streams" => f.talos.drop_streams = count()?,
                "link-names" if value == "predictable" => {
                    f.link_names = super::talos::LinkNames::Predictable
                }
                "link-names" => return Err(err("expects =predictable")),
                "pve-lock" => f.proxmox.push(Fault::new(
                    "POST",
                    "/qemu",
                    count()?,
                    FaultEffect::LockTimeout,
                )),
                "pve-595" => f.proxmox.push(Fault::new(
                    "GET",
                    "/nodes",
                    count()?,
                    FaultEffect::Status {
                        code: 595,
                        message: "Connection refused".into(),
                    },
                )),
                "pve-500" => f.proxmox.push(Fault::new(
                    "POST",
                    "/qemu",
                    count()?,
                    FaultEffect::Status {
                        code: 500,
                        message: "lab: injected failure".into(),
                    },
                )),
                "pve-task-error" => {
                    let path = match value {
                        "qmcreate" => "/qemu",
                        "qmstart" => "/status/start",
                        "download" => "/download-url",
                        _ => return Err(err("expects qmcreate, qmstart or download")),
                    };
                    // "Contains" matching: `/qemu` also matches start calls, but the
                    // create of the first VM is the first POST it sees.
                    f.proxmox.push(Fault::new(
                        "POST",
                        path,
                        1,
                        FaultEffect::TaskError {
                            message: format!("lab: injected {value} failure"),
                        },
                    ));
                }
                "slow-crd" => {
                    let (crd, d) = value
                        .split_once(':')
                        .ok_or_else(|| err("expects NAME:duration"))?;
                    let d = duration(d)
                        .ok_or_else(|| err("expects NAME:duration, e.g. crds.x.io:30s"))?;
                    f.slow_crds.push((crd.to_owned(), d));
                }
                "destroy-vm" | "corrupt-etcd" | "hang-node" | "impostor" | "upgrade-fails"
                | "kubelet-stays-down" | "etcd-stays-down"
                    if value.is_empty() =>
                {
                    return Err(err("expects a node name, e.g. =talos-k8s-02"));
                }
                "upgrade-fails" => f.talos.upgrade_fails.push(value.to_owned()),
                "kubelet-stays-down" => f.talos.kubelet_stays_down.push(value.to_owned()),
                "etcd-stays-down" => f.talos.etcd_stays_down.push(value.to_owned()),
                "destroy-vm" => f.disasters.push(Disaster::DestroyVm(value.to_owned())),
                "corrupt-etcd" => f.disasters.push(Disaster::CorruptEtcd(value.to_owned())),
                "hang-node" => f.disasters.push(Disaster::HangNode(value.to_owned())),
                "lose-control-planes" => f.disasters.push(Disaster::LoseControlPlanes),
                "impostor" => f.disasters.push(Disaster::Impostor(value.to_owned())),
                _ => return Err(err("unknown fault")),
            }
        }
        Ok(f)
    }
}

/// `30s`, `500ms`, `2m`.
fn duration(s: &str) -> Option<Duration> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "s"), |i| s.split_at(i));
    let n: u64 = num.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(60 * n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_kind_and_rejects_unknown() {
        let f =
            LabFaults::parse("time-not-in-sync=2, slow-install=30s,pve-lock=3,slow-crd=a.io:1m")
                .unwrap();
        assert_eq!(f.talos.time_not_in_sync, 2);
        assert_eq!(f.talos.slow_install, Duration::from_secs(30));
        assert_eq!(f.proxmox.len(), 1);
        assert_eq!(
            f.slow_crds,
            vec![("a.io".to_owned(), Duration::from_secs(60))]
        );
        let e = LabFaults::parse("melt-down=1").unwrap_err();
        assert_eq!(e.item, "melt-down=1");
        assert!(LabFaults::parse("reboot-loops=x").is_err());
        let d = LabFaults::parse("destroy-vm=a,corrupt-etcd=b,hang-node=c,lose-control-planes")
            .unwrap();
        assert_eq!(
            d.disasters,
            vec![
                Disaster::DestroyVm("a".into()),
                Disaster::CorruptEtcd("b".into()),
                Disaster::HangNode("c".into()),
                Disaster::LoseControlPlanes
            ]
        );
        assert!(LabFaults::parse("destroy-vm").is_err());
        let u = LabFaults::parse("upgrade-fails=talos-k8s-02").unwrap();
        assert_eq!(u.talos.upgrade_fails, ["talos-k8s-02"]);
        assert!(LabFaults::parse("upgrade-fails").is_err());
        let k = LabFaults::parse("kubelet-stays-down=a,etcd-stays-down=b").unwrap();
        assert_eq!(
            (k.talos.kubelet_stays_down, k.talos.etcd_stays_down),
            (vec!["a".to_owned()], vec!["b".to_owned()])
        );
        assert!(LabFaults::parse("etcd-stays-down").is_err());
    }
}

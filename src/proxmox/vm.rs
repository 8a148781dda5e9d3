//! The VM a Talos node needs, as Proxmox create parameters, and the semantic
//! comparison of a read-back config with it.
//!
//! Pure: no I/O. The values follow the Talos Proxmox guidance (q35, OVMF with a
//! 4m EFI disk without enrolled keys, `cpu=host`, no balloon, `virtio-scsi-pci`).
//! There is no Proxmox-generated cloud-init drive (and so no `ipconfigN`,
//! `citype`, `nameserver`, `searchdomain`: they feed only that drive): `ide0` is an
//! empty CD-ROM drive that holds the node's own `cidata` volume (its machine
//! config, with every address) only until the node runs (`proxmox::cidata`); two
//! volumes labelled `cidata` would make the nocloud lookup ambiguous.

use std::collections::BTreeMap;

use crate::plan::{NicPlan, NodePlan, Plan};
use crate::profile::Profile;

use super::ownership;
use super::propstr::{NetDevice, PropError, PropString, PropWriter, bridge, parse_size, volume};

/// Tag every VM of talos-pve carries (with `talos` and its role); the ownership
/// marker (`ownership`) is added beside it.
pub const OWNER_TAG: &str = "talos-pve";

/// The drive that carries a node's `cidata` volume while it boots.
pub const CIDATA_DRIVE: &str = "ide0";
/// `CIDATA_DRIVE` with no volume: how VMs are created and left.
pub const CIDATA_DRIVE_EMPTY: &str = "none,media=cdrom";

/// The create body for one node, in a stable order. Profile values go into property
/// strings through [`PropWriter`], which refuses what would change their structure.
pub fn create_params(
    profile: &Profile,
    plan: &Plan,
    node: &NodePlan,
) -> Result<Vec<(String, String)>, PropError> {
    let px = &profile.proxmox;
    let disk = &px.disk_storage;
    let mut p: Vec<(&str, String)> = vec![
        ("vmid", node.vmid.to_string()),
        ("name", node.name.clone()),
        ("tags", format!("talos;{OWNER_TAG};{}", node.role.as_str())),
        ("ostype", "l26".into()),
        ("machine", "q35".into()),
        ("bios", "ovmf".into()),
        (
            "efidisk0",
            PropWriter::first(volume(disk, 1)?)?
                .with("efitype", "4m")?
                .with("pre-enrolled-keys", 0)?
                .finish(),
        ),
        ("cpu", "host".into()),
        ("sockets", "1".into()),
        ("cores", node.cores.to_string()),
        ("memory", node.memory_mib.to_string()),
        ("balloon", "0".into()),
        ("scsihw", "virtio-scsi-pci".into()),
        (
            "scsi0",
            PropWriter::first(volume(disk, node.disk_gib)?)?
                .with("discard", "on")?
                .with("ssd", 1)?
                .with("cache", "writethrough")?
                .finish(),
        ),
        (
            "ide2",
            PropWriter::first(volume(&px.iso_storage, format!("iso/{}", plan.iso_file))?)?
                .with("media", "cdrom")?
                .finish(),
        ),
        ("ide0", CIDATA_DRIVE_EMPTY.into()),
        ("net0", net(&node.management)?),
    ];
    // One network: the VM has `net0` only.
    if let Some(work) = &node.workload {
        p.push(("net1", net(work)?));
    }
    p.extend([
        ("boot", "order=scsi0;ide2".into()),
        ("serial0", "socket".into()),
        ("vga", "std".into()),
        ("onboot", "1".into()),
    ]);
    if profile
        .talos
        .schematic
        .extensions
        .iter()
        .any(|e| e.ends_with("qemu-guest-agent"))
    {
        p.push(("agent", "enabled=1".into()));
    }
    Ok(p.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

fn net(nic: &NicPlan) -> Result<String, PropError> {
    let w = PropWriter::new("virtio", &nic.mac)?.with("bridge", bridge(&nic.bridge)?)?;
    // An untagged NIC has no `tag` key at all (qemu-server: `tag` is optional).
    let w = match nic.vlan {
        Some(tag) => w.with("tag", tag)?,
        None => w,
    };
    Ok(w.with("firewall", 0)?.finish())
}

/// One config key that differs from the plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    pub key: String,
    pub want: String,
    pub got: Option<String>,
    /// A config update fixes it in place; otherwise only `--recreate` does.
    pub safe: bool,
}

/// Keys that change the VM's disks, firmware or network identity.
const UNSAFE: &[&str] = &[
    "machine", "bios", "efidisk0", "scsihw", "scsi0", "net0", "net1",
];

/// Compare a read-back config with the create parameters, semantically.
pub fn diff(want: &[(String, String)], got: &BTreeMap<String, String>) -> Vec<Difference> {
    want.iter()
        .filter(|(k, _)| k != "vmid")
        .filter(|(k, v)| !same(k, v, got.get(k.as_str()).map(String::as_str)))
        .map(|(k, v)| Difference {
            key: k.clone(),
            want: merged(k, v, got.get(k.as_str())),
            got: got.get(k.as_str()).cloned(),
            safe: !UNSAFE.contains(&k.as_str()),
        })
        .chain(extra_nic(want, got))
        .collect()
}

/// A second NIC the plan no longer has (the profile became one network): only a
/// recreated VM loses it, so it is an unsafe difference rather than ignored.
fn extra_nic(want: &[(String, String)], got: &BTreeMap<String, String>) -> Option<Difference> {
    let key = "net1";
    let have = got.get(key)?;
    (!want.iter().any(|(k, _)| k == key)).then(|| Difference {
        key: key.into(),
        want: "(none: one network)".into(),
        got: Some(have.clone()),
        safe: false,
    })
}

/// Differences from the plan that are kept as they are: a disk larger than planned.
pub fn notes(want: &[(String, String)], got: &BTreeMap<String, String>) -> Vec<String> {
    let size =
        |v: &str| PropString::parse(v, "file").and_then(|p| p.get("size").and_then(parse_size));
    let planned = |v: &str| {
        PropString::parse(v, "file")
            .and_then(|p| p.get("file")?.split_once(':')?.1.parse::<u64>().ok())
    };
    want.iter()
        .filter(|(k, _)| k.starts_with("scsi"))
        .filter_map(|(k, v)| {
            let (plan, now) = (planned(v)?, size(got.get(k)?)?);
            (now > plan << 30).then(|| {
                format!(
                    "{k}: {} GiB, larger than the planned {plan} GiB (kept)",
                    now >> 30
                )
            })
        })
        .collect()
}

/// The value to write: ours, except that the user's own tags and Notes text stay.
fn merged(key: &str, want: &str, got: Option<&String>) -> String {
    match (key, got) {
        ("tags", Some(got)) => ownership::merge_tags(want, got),
        ("description", Some(got)) => ownership::merge_description(want, got),
        _ => want.to_owned(),
    }
}

fn same(key: &str, want: &str, got: Option<&str>) -> bool {
    let Some(got) = got else { return false };
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    match base {
        "net" => {
            NetDevice::parse(want).is_some() && NetDevice::parse(want) == NetDevice::parse(got)
        }
        "scsi" | "efidisk" => same_disk(want, got, base == "scsi"),
        // Any CD-ROM here is fine: `proxmox::cidata` puts the node's volume in and
        // takes it out again; provisioning must not undo that mid-boot.
        _ if key == CIDATA_DRIVE => PropString::parse(got, "file").is_some_and(|p| {
            p.get("media") == Some("cdrom")
                && !p.get("file").is_some_and(|f| f.contains("cloudinit"))
        }),
        "ide" | "ipconfig" | "boot" => same_props(want, got, "file", &["size"]),
        "tags" => ownership::same_tags(want, got),
        "description" => ownership::same_description(want, got),
        "memory" => same_props(want, got, "current", &[]),
        "agent" => {
            let a = PropString::parse(want, "enabled");
            let b = PropString::parse(got, "enabled");
            a.zip(b)
                .is_some_and(|(a, b)| a.flag("enabled") == b.flag("enabled"))
        }
        _ => want.trim() == got.trim(),
    }
}

/// Same keys and values, ignoring `ignore` keys on the read-back side.
fn same_props(want: &str, got: &str, default_key: &str, ignore: &[&str]) -> bool {
    match (
        PropString::parse(want, default_key),
        PropString::parse(got, default_key),
    ) {
        (Some(a), Some(mut b)) => {
            b.0.retain(|k, _| !ignore.contains(&k.as_str()));
            a.0.len() == b.0.len()
                && a.0.iter().all(|(k, v)| {
                    b.get(k).is_some_and(|g| {
                        g == v || matches!((super::propstr::parse_bool(g), super::propstr::parse_bool(v)), (Some(x), Some(y)) if x == y && v.len() == 1)
                    })
                })
        }
        _ => false,
    }
}

/// `local-lvm:64,…` against `local-lvm:vm-120-disk-1,…,size=64G`.
fn same_disk(want: &str, got: &str, check_size: bool) -> bool {
    let (Some(w), Some(g)) = (
        PropString::parse(want, "file"),
        PropString::parse(got, "file"),
    ) else {
        return false;
    };
    let storage = |p: &PropString| {
        p.get("file")
            .and_then(|f| f.split_once(':'))
            .map(|(s, v)| (s.to_owned(), v.to_owned()))
    };
    let (Some((ws, wsize)), Some((gs, _))) = (storage(&w), storage(&g)) else {
        return false;
    };
    if ws != gs {
        return false;
    }
    if check_size {
        // A disk grown beyond the plan (by hand, in the GUI) is kept: disks never
        // shrink, and the node's filesystem may use the space (`notes` says so).
        let want_bytes = wsize.parse::<u64>().ok().map(|g| g << 30);
        match (want_bytes, g.get("size").and_then(parse_size)) {
            (Some(w), Some(got)) if got >= w => {}
            _ => return false,
        }
    }
    w.0.iter().filter(|(k, _)| *k != "file").all(|(k, v)| {
        let gv = g.get(k);
        gv == Some(v.as_str())
            || matches!((gv.and_then(super::propstr::parse_bool), super::propstr::parse_bool(v)), (Some(a), Some(b)) if a == b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn homelab() -> (Profile, Plan) {
        let p = crate::test_support::homelab();
        let plan = Plan::build(&p).unwrap();
        (p, plan)
    }

    fn as_map(v: &[(String, String)]) -> BTreeMap<String, String> {
        v.iter().cloned().collect()
    }

    /// Issue 11 §4: with lint skipped, a value that would add keys to a property
    /// string is refused, never pasted (it used to yield `…,link_down=1,…`).
    #[test]
    fn profile_values_cannot_add_property_string_keys() {
        let cases: [crate::test_support::Mutation; 3] = [
            ("bridge", |p| p.proxmox.bridge = "vmbr0,link_down=1".into()),
            ("storage", |p| {
                p.proxmox.disk_storage = "local-lvm,cache=unsafe".into()
            }),
            ("storage", |p| p.proxmox.iso_storage = "local;x".into()),
        ];
        for (key, mutate) in cases {
            let (mut p, _) = homelab();
            mutate(&mut p);
            let plan = Plan::build(&p).unwrap();
            let e = create_params(&p, &plan, &plan.nodes[0]).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn create_body_follows_the_talos_guidance_and_decision_4() {
        let (p, plan) = homelab();
        let m = as_map(&create_params(&p, &plan, &plan.nodes[0]).unwrap());
        assert_eq!(m["scsihw"], "virtio-scsi-pci");
        assert_eq!(m["cpu"], "host");
        assert_eq!(m["balloon"], "0");
        assert_eq!(m["efidisk0"], "local-lvm:1,efitype=4m,pre-enrolled-keys=0");
        assert!(!m.contains_key("ipconfig0") && !m.contains_key("citype"));
        assert_eq!(m["ide0"], "none,media=cdrom");
        assert!(m["net1"].contains("tag=28"));
        assert_eq!(m["boot"], "order=scsi0;ide2");
    }

    /// Issue 14 §5: a network without `vlan` is a NIC without `tag` (untagged), not `tag=0`.
    #[test]
    fn an_untagged_network_gives_a_nic_without_tag() {
        let (mut p, _) = homelab();
        p.networks
            .iter_mut()
            .find(|n| n.role == crate::profile::NetworkRole::Management)
            .unwrap()
            .vlan = None;
        let plan = Plan::build(&p).unwrap();
        let m = as_map(&create_params(&p, &plan, &plan.nodes[0]).unwrap());
        let mac = &plan.nodes[0].management.mac;
        assert_eq!(m["net0"], format!("virtio={mac},bridge=vmbr0,firewall=0"));
        assert!(m["net1"].contains("tag=28"));
    }

    /// One network: the VM has `net0` only, untagged when the LAN has no `vlan`.
    #[test]
    fn a_one_network_node_gets_one_nic() {
        let p = crate::test_support::one_network();
        let plan = Plan::build(&p).unwrap();
        let m = as_map(&create_params(&p, &plan, &plan.nodes[0]).unwrap());
        let mac = &plan.nodes[0].management.mac;
        assert_eq!(m["net0"], format!("virtio={mac},bridge=vmbr0,firewall=0"));
        assert!(!m.contains_key("net1"), "{m:?}");
        let mut p = p.clone();
        p.networks[0].vlan = Some(30);
        let plan = Plan::build(&p).unwrap();
        let m = as_map(&create_params(&p, &plan, &plan.nodes[0]).unwrap());
        assert_eq!(
            m["net0"],
            format!("virtio={mac},bridge=vmbr0,tag=30,firewall=0")
        );
        // A VM made when the profile had two networks keeps net1 until recreated.
        let want = create_params(&p, &plan, &plan.nodes[0]).unwrap();
        let mut got = as_map(&want);
        got.insert(
            "net1".into(),
            "virtio=BC:24:11:00:00:01,bridge=vmbr0,tag=28".into(),
        );
        let net1 = |got: &BTreeMap<String, String>| {
            let d = diff(&want, got);
            d.into_iter().find(|d| d.key == "net1").map(|d| d.safe)
        };
        assert_eq!(net1(&got), Some(false));
        got.remove("net1");
        assert_eq!(net1(&got), None);
    }

    #[test]
    fn normalised_read_back_is_equal_and_real_changes_are_classified() {
        let (p, plan) = homelab();
        let want = create_params(&p, &plan, &plan.nodes[0]).unwrap();
        let mut got = as_map(&want);
        let mac = &plan.nodes[0].management.mac;
        got.insert(
            "net0".into(),
            format!("virtio={mac},bridge=vmbr0,firewall=0,tag=16"),
        );
        got.insert(
            "scsi0".into(),
            "local-lvm:vm-120-disk-1,cache=writethrough,discard=on,size=64G,ssd=1".into(),
        );
        got.insert(
            "efidisk0".into(),
            "local-lvm:vm-120-disk-0,efitype=4m,pre-enrolled-keys=0,size=4M".into(),
        );
        got.insert(
            "ide0".into(),
            "local:iso/talos-pve-cidata-homelab-120-talos-k8s-01.iso,media=cdrom".into(),
        );
        got.insert("tags".into(), "controlplane;talos;talos-pve".into());
        got.insert("agent".into(), "1".into());
        assert_eq!(diff(&want, &got), vec![]);
        got.insert(
            "scsi0".into(),
            "local-lvm:vm-120-disk-1,cache=writethrough,discard=on,size=32G,ssd=1".into(),
        );
        got.insert("cores".into(), "2".into());
        // A VM of the old flow still has Proxmox's cloud-init drive: emptied in place.
        got.insert(
            "ide0".into(),
            "local-lvm:vm-120-cloudinit,media=cdrom".into(),
        );
        let d = diff(&want, &got);
        assert!(d.iter().any(|x| x.key == "ide0" && x.safe), "{d:?}");
        got.insert("ide0".into(), "none,media=cdrom".into());
        let d = diff(&want, &got);
        assert_eq!(d.len(), 2);
        // Grown by hand: no difference, a note.
        got.insert(
            "scsi0".into(),
            "local-lvm:vm-120-disk-1,cache=writethrough,discard=on,size=80G,ssd=1".into(),
        );
        assert!(!diff(&want, &got).iter().any(|x| x.key == "scsi0"));
        assert_eq!(
            notes(&want, &got),
            ["scsi0: 80 GiB, larger than the planned 64 GiB (kept)"]
        );
        assert!(d.iter().any(|x| x.key == "scsi0" && !x.safe));
        assert!(d.iter().any(|x| x.key == "cores" && x.safe));
    }
}

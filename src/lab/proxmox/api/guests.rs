//! Guests family: QEMU VMs and how PVE stores their config (`POST /nodes/{node}/qemu`,
//! `GET|PUT .../qemu/{vmid}/config`, `.../status/{current,start,stop,shutdown}`,
//! `.../agent/network-get-interfaces`, `DELETE .../qemu/{vmid}`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Lab, Reply, lock_msg, random_hex};
use crate::lab::proxmox::{LabPveState, LabVmState, TaskEffect};
use crate::lab::{LabEvent, LabNic, LabVm};
use crate::proxmox::propstr::{NetDevice, PropString, split_tags};

/// A VM whose create runs (or was killed): its config is only the lock.
pub(super) fn create_stub(node: &str, vmid: u32) -> LabVmState {
    LabVmState {
        guest: None,
        paused: false,
        vmid,
        node: node.into(),
        config: [("lock".to_owned(), "create".to_owned())].into(),
        running: false,
        pending: BTreeMap::new(),
    }
}

/// PVE's answer for a VMID that has no VM on `node`.
fn no_such_vm(node: &str, vmid: impl std::fmt::Display) -> Reply {
    Reply::err(
        500,
        format!("Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"),
    )
}

/// The VM `vmid` on `node`, or PVE's answer for a missing VMID (400) or VM (500).
fn vm_on<'s>(
    st: &'s LabPveState,
    node: &str,
    vmid: Option<u32>,
) -> Result<(u32, &'s LabVmState), Reply> {
    let Some(vmid) = vmid else {
        return Err(Reply::err(400, "bad vmid"));
    };
    match st.vms.get(&vmid).filter(|vm| vm.node == node) {
        Some(vm) => Ok((vmid, vm)),
        None => Err(no_such_vm(node, vmid)),
    }
}

impl Lab {
    fn vm_running_task(&self, st: &LabPveState, vmid: u32) -> bool {
        let id = vmid.to_string();
        st.tasks
            .iter()
            .any(|t| t.exitstatus.is_none() && t.id == id && t.kind.starts_with("qm"))
    }

    pub(super) fn create(
        self: &std::sync::Arc<Self>,
        node: &str,
        mut p: BTreeMap<String, String>,
        user: &str,
        injected: Option<String>,
        start_error: Option<String>,
    ) -> Reply {
        let Some(vmid) = p.remove("vmid").and_then(|v| v.parse::<u32>().ok()) else {
            return Reply::err(400, "bad vmid");
        };
        let start = p.remove("start").is_some_and(|v| v == "1");
        p.remove("storage");
        p.remove("pool");
        let mut st = self.state.lock().expect("lab state");
        // One VMID space for VMs and containers (pve-cluster `Cluster.pm` 785-797).
        let taken = st
            .vms
            .get(&vmid)
            .map(|vm| ("VM", &vm.node))
            .or_else(|| st.containers.get(&vmid).map(|ct| ("CT", &ct.node)));
        if let Some((kind, on)) = taken {
            return Reply::err(
                500,
                format!("unable to create VM {vmid} - {kind} {vmid} already exists on node '{on}'"),
            );
        }
        let config = match normalise_new(&mut st, node, vmid, p) {
            Ok(c) => c,
            Err(e) => return Reply::err(500, format!("unable to create VM {vmid} - {e}")),
        };
        // Until the task ends the config is only the lock (pve-guest-common
        // `AbstractConfig.pm` 254-269): no name, tags or description yet.
        st.vms.insert(vmid, create_stub(node, vmid));
        let task_error = injected.map(|e| format!("unable to create VM {vmid} - {e}"));
        let effect = TaskEffect::Create {
            vmid,
            start,
            config,
            start_error,
        };
        let upid = self.new_task(
            &mut st,
            node,
            "qmcreate",
            &vmid.to_string(),
            user,
            effect,
            task_error,
        );
        drop(st);
        self.spawn_settle("qmcreate");
        Reply::data(json!(upid))
    }

    pub(super) fn with_vm(
        &self,
        node: &str,
        vmid: &str,
        f: impl FnOnce(&LabVmState) -> Reply,
    ) -> Reply {
        let st = self.state.lock().expect("lab state");
        match vmid
            .parse::<u32>()
            .ok()
            .and_then(|v| st.vms.get(&v))
            .filter(|vm| vm.node == node)
        {
            Some(vm) => f(vm),
            None => no_such_vm(node, vmid),
        }
    }

    pub(super) fn update(
        &self,
        node: &str,
        vmid: Option<u32>,
        mut p: BTreeMap<String, String>,
    ) -> Reply {
        let mut st = self.state.lock().expect("lab state");
        let vmid = match vm_on(&st, node, vmid) {
            Ok((vmid, _)) => vmid,
            Err(reply) => return reply,
        };
        if self.vm_running_task(&st, vmid) {
            return Reply::err(500, lock_msg(vmid));
        }
        if let Some(l) = st.vms[&vmid].config.get("lock") {
            return Reply::err(500, format!("VM is locked ({l})"));
        }
        if let Some(d) = p.remove("digest")
            && d != digest(&st.vms[&vmid].config)
        {
            return Reply::err(
                500,
                "detected modified configuration - file changed by other user? Try again.",
            );
        }
        p.remove("skiplock");
        p.remove("force");
        let delete = p.remove("delete").unwrap_or_default();
        for (k, v) in &p {
            let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
            let is_drive = base.len() < k.len() && matches!(base, "scsi" | "efidisk" | "ide");
            if is_drive && !v.contains(":iso/") && !v.starts_with("none") {
                return Reply::err(
                    500,
                    format!("lab: changing disk {k} in place is not simulated"),
                );
            }
        }
        let vm = st.vms.get_mut(&vmid).expect("checked");
        let changes = p
            .into_iter()
            .map(|(k, v)| {
                let v = normalise_value(&k, &v);
                (k, Some(v))
            })
            .chain(split_tags(&delete).into_iter().map(|k| (k, None)));
        for (k, v) in changes {
            // A stopped VM takes every change; a running one only what can be
            // hot-plugged, the rest waits in `[pending]` (proxmox-semantics.md §7.2).
            if vm.running && !hotplugged(&k, v.as_deref(), &vm.config) {
                // A pending value equal to the running one is dropped (pve-guest-common
                // `AbstractConfig.pm` cleanup_pending).
                if v.is_some() && v.as_ref() == vm.config.get(&k) {
                    vm.pending.remove(&k);
                } else {
                    vm.pending.insert(k, v);
                }
                continue;
            }
            vm.pending.remove(&k);
            match v {
                Some(v) => vm.config.insert(k, v),
                None => vm.config.remove(&k),
            };
        }
        Reply::data(Value::Null)
    }

    pub(super) fn power(
        self: &std::sync::Arc<Self>,
        node: &str,
        vmid: Option<u32>,
        op: &str,
        user: &str,
        injected: Option<String>,
    ) -> Reply {
        let mut st = self.state.lock().expect("lab state");
        let (vmid, vm) = match vm_on(&st, node, vmid) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        let running = vm.running;
        let locked = vm.config.get("lock").cloned();
        if self.vm_running_task(&st, vmid) {
            return Reply::err(500, lock_msg(vmid));
        }
        let (kind, effect, error) = match op {
            "start" => (
                "qmstart",
                TaskEffect::Start { vmid },
                running.then(|| format!("VM {vmid} already running")),
            ),
            "stop" => ("qmstop", TaskEffect::Stop { vmid }, None),
            "shutdown" => (
                "qmshutdown",
                TaskEffect::Stop { vmid },
                (!running).then(|| format!("VM {vmid} not running")),
            ),
            // Shutdown + start of the QEMU process, so pending changes apply
            // (qemu-server `API2/Qemu.pm` vm_reboot).
            "reboot" => (
                "qmreboot",
                TaskEffect::Reboot { vmid },
                (!running).then(|| format!("VM {vmid} not running")),
            ),
            _ => return Reply::err(501, format!("Method 'POST status/{op}' not implemented")),
        };
        let error = injected
            .or(error)
            .or(locked.map(|l| format!("VM is locked ({l})")));
        let upid = self.new_task(&mut st, node, kind, &vmid.to_string(), user, effect, error);
        drop(st);
        self.spawn_settle(kind);
        Reply::data(json!(upid))
    }

    pub(super) fn destroy(
        self: &std::sync::Arc<Self>,
        node: &str,
        vmid: Option<u32>,
        user: &str,
        injected: Option<String>,
    ) -> Reply {
        let mut st = self.state.lock().expect("lab state");
        let (vmid, vm) = match vm_on(&st, node, vmid) {
            Ok(found) => found,
            Err(reply) => return reply,
        };
        if vm.running {
            return Reply::err(500, format!("VM {vmid} is running - destroy failed"));
        }
        let locked = vm.config.get("lock").map(|l| format!("VM is locked ({l})"));
        if self.vm_running_task(&st, vmid) {
            return Reply::err(500, lock_msg(vmid));
        }
        let upid = self.new_task(
            &mut st,
            node,
            "qmdestroy",
            &vmid.to_string(),
            user,
            TaskEffect::Destroy { vmid },
            injected.or(locked),
        );
        drop(st);
        self.spawn_settle("qmdestroy");
        Reply::data(json!(upid))
    }
}

pub(super) fn start_vm(st: &mut LabPveState, vmid: u32, events: &mut Vec<LabEvent>) {
    let Some(vm) = st.vms.get_mut(&vmid) else {
        return;
    };
    if vm.running {
        return;
    }
    vm.running = true;
    vm.guest = None;
    vm.apply_pending();
    let vm = vm.clone();
    events.push(LabEvent::VmStarted(lab_vm(st, &vm)));
}

/// Whether a running VM takes this change at once (qemu-server 9.2.6 `API2/Qemu.pm`
/// 2560-2590, `QemuServer.pm` `vmconfig_hotplug_pending` 4594-4900), with the
/// VM's `hotplug` option (default `network,disk,usb`).
fn hotplugged(key: &str, value: Option<&str>, config: &BTreeMap<String, String>) -> bool {
    // Written straight into the config, running or not.
    const FAST: &[&str] = &[
        "description",
        "name",
        "onboot",
        "tags",
        "protection",
        "startup",
        "hookscript",
        "shares",
        "migrate_downtime",
        "migrate_speed",
        "vmstatestorage",
        "lock",
        "nameserver",
        "searchdomain",
        "citype",
        "ciuser",
        "cipassword",
        "sshkeys",
        "cicustom",
        "ciupgrade",
    ];
    let base = key.trim_end_matches(|c: char| c.is_ascii_digit());
    if FAST.contains(&key) || base == "ipconfig" {
        return true;
    }
    let features = config
        .get("hotplug")
        .map_or("network,disk,usb".to_owned(), Clone::clone);
    let has = |f: &str| features == "1" || features.split(',').any(|x| x == f);
    let cdrom = |v: Option<&str>| v.is_some_and(|v| v.contains("media=cdrom"));
    match base {
        "net" => has("network"),
        // A CD-ROM's medium is changed live, on any bus.
        "ide" | "sata" | "scsi" | "virtio"
            if cdrom(value) || cdrom(config.get(key).map(String::as_str)) =>
        {
            true
        }
        "scsi" | "virtio" => has("disk"),
        "usb" => has("usb"),
        "cpulimit" | "cpuunits" => true,
        // The balloon target moves live; switching ballooning on or off does not.
        "balloon" => {
            let off = |v: Option<&str>| v.is_none_or(|v| v == "0");
            off(value) == off(config.get(key).map(String::as_str))
        }
        "vcpus" => has("cpu"),
        "memory" => has("memory") && config.get("numa").is_some_and(|n| n == "1"),
        _ => false,
    }
}

/// A VM as it boots: its NICs, with the addresses Proxmox's generated cloud-init
/// drive gives them (only when it has one: `ipconfigN` feed nothing else), and
/// the contents of the ISO volumes in its CD-ROM drives.
pub(in crate::lab::proxmox) fn lab_vm(st: &LabPveState, vm: &LabVmState) -> LabVm {
    let cloudinit = vm
        .config
        .values()
        .any(|v| v.contains(":cloudinit") || v.contains("-cloudinit"));
    let nics = (0u8..32)
        .filter_map(|i| {
            let net = NetDevice::parse(vm.config.get(&format!("net{i}"))?)?;
            let ip = vm
                .config
                .get(&format!("ipconfig{i}"))
                .filter(|_| cloudinit)
                .and_then(|c| PropString::parse(c, "ip"));
            Some(LabNic {
                index: i,
                mac: net.mac.unwrap_or_default(),
                vlan: net.tag,
                address: ip.as_ref().and_then(|p| p.get("ip")?.parse().ok()),
                gateway: ip.as_ref().and_then(|p| p.get("gw")?.parse().ok()),
            })
        })
        .collect();
    let media = vm
        .config
        .iter()
        .filter(|(k, _)| k.starts_with("ide") || k.starts_with("sata") || k.starts_with("scsi"))
        .filter_map(|(_, v)| {
            let p = PropString::parse(v, "file")?;
            if p.get("media") != Some("cdrom") {
                return None;
            }
            let volid = p.get("file")?;
            let (sid, _) = volid.split_once(':')?;
            let s = st
                .nodes
                .get(&vm.node)?
                .storages
                .iter()
                .find(|s| s.id == sid)?;
            s.files.get(volid).cloned()
        })
        .collect();
    LabVm {
        vmid: vm.vmid,
        host: vm.node.clone(),
        name: vm.config.get("name").cloned().unwrap_or_default(),
        nics,
        media,
    }
}

/// Allocate disks and fill defaults the way PVE's create does, returning the stored config.
fn normalise_new(
    st: &mut LabPveState,
    node: &str,
    vmid: u32,
    p: BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut disk_no = 0;
    let mut allocations: Vec<(String, String, u64)> = Vec::new();
    for (k, v) in p {
        let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
        let value = match base {
            // An empty CD-ROM drive (`none,media=cdrom`) allocates nothing.
            "scsi" | "efidisk" | "ide" if !v.contains(":iso/") && !v.starts_with("none") => {
                let mut ps = PropString::parse(&v, "file").ok_or("bad drive")?;
                let file = ps.get("file").unwrap_or_default().to_owned();
                let (sid, spec) = file.split_once(':').ok_or("bad volume")?;
                let storage = st.nodes[node]
                    .storages
                    .iter()
                    .find(|s| s.id == sid)
                    .ok_or_else(|| format!("storage '{sid}' does not exist"))?;
                if !storage.content.iter().any(|c| c == "images") {
                    return Err(format!("storage '{sid}' does not support vm images"));
                }
                let (name, size, size_text) = if spec == "cloudinit" {
                    ps.0.insert("media".into(), "cdrom".into());
                    (format!("vm-{vmid}-cloudinit"), 4u64 << 20, None)
                } else if base == "efidisk" {
                    let n = format!("vm-{vmid}-disk-{disk_no}");
                    disk_no += 1;
                    (n, 4 << 20, Some("4M".to_owned()))
                } else {
                    let gib: u64 = spec
                        .parse()
                        .map_err(|_| format!("volume {file} does not exist"))?;
                    let n = format!("vm-{vmid}-disk-{disk_no}");
                    disk_no += 1;
                    (n, gib << 30, Some(format!("{gib}G")))
                };
                let volid = format!("{sid}:{name}");
                ps.0.insert("file".into(), volid.clone());
                if let Some(s) = size_text {
                    ps.0.insert("size".into(), s);
                }
                allocations.push((sid.to_owned(), volid, size));
                print_prop(&ps, "file")
            }
            _ => normalise_value(&k, &v),
        };
        out.insert(k, value);
    }
    for (sid, volid, size) in allocations {
        let s = st
            .nodes
            .get_mut(node)
            .and_then(|n| n.storages.iter_mut().find(|s| s.id == sid))
            .ok_or("storage vanished")?;
        let used: u64 = s.volumes.values().sum();
        if used + size > s.total {
            return Err(format!(
                "lvcreate 'pve/{}' error:   Volume group \"pve\" has insufficient free space",
                volid
            ));
        }
        s.volumes.insert(volid, size);
    }
    out.entry("smbios1".into())
        .or_insert_with(|| format!("uuid={}", uuid_like()));
    out.entry("vmgenid".into()).or_insert_with(uuid_like);
    out.insert("meta".into(), "creation-qemu=9.2.0,ctime=1700000000".into());
    Ok(out)
}

fn uuid_like() -> String {
    crate::lab::uuid_text(&random_hex(16))
}

/// Re-print a value as PVE stores it: NICs re-printed with their MAC (filled in,
/// upper case) first and the other keys sorted; tags lowercased, de-duplicated and
/// sorted (default datacenter `tag-style`: pve-guest-common src/PVE/GuestHelpers.pm
/// 349-378); the description without trailing whitespace, since it is kept as
/// comment lines and read back joined and trimmed (qemu-server src/PVE/QemuServer.pm
/// 1969-1975); both per proxmox-semantics.md §7.3. Everything else as written.
fn normalise_value(k: &str, v: &str) -> String {
    let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
    match base {
        "net" => {
            let Some(mut ps) = PropString::parse(v, "model") else {
                return v.into();
            };
            let Some(nd) = NetDevice::parse(v) else {
                return v.into();
            };
            let mac = nd.mac.unwrap_or_else(|| {
                let r = random_hex(3).to_uppercase();
                format!("BC:24:11:{}:{}:{}", &r[..2], &r[2..4], &r[4..])
            });
            ps.0.retain(|key, _| {
                key != "model"
                    && key != "macaddr"
                    && !crate::proxmox::propstr::NET_MODELS.contains(&key.as_str())
            });
            let rest = print_prop(&ps, "");
            if rest.is_empty() {
                format!("{}={mac}", nd.model)
            } else {
                format!("{}={mac},{rest}", nd.model)
            }
        }
        "tags" => {
            let mut t: Vec<String> = split_tags(v).iter().map(|t| t.to_lowercase()).collect();
            t.sort();
            t.dedup();
            t.join(";")
        }
        "description" => v.trim_end().into(),
        _ => v.into(),
    }
}

/// Default key first without `key=`, the rest sorted.
fn print_prop(p: &PropString, default_key: &str) -> String {
    let mut parts = Vec::new();
    if let Some(d) = p.get(default_key) {
        parts.push(d.to_owned());
    }
    parts.extend(
        p.0.iter()
            .filter(|(k, _)| k.as_str() != default_key)
            .map(|(k, v)| format!("{k}={v}")),
    );
    parts.join(",")
}

/// Numbers come back as numbers, except where PVE keeps strings.
pub(super) fn config_value(k: &str, v: &str) -> Value {
    match k {
        "cores" | "sockets" | "balloon" | "onboot" => v
            .parse::<u64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(v)),
        _ => json!(v),
    }
}

/// `GET …/pending`: every key with its current value, and `pending`/`delete` where a
/// change waits (qemu-server `API2/Qemu.pm` 1858-1920).
pub(super) fn pending_list(vm: &LabVmState) -> Reply {
    let mut keys: Vec<&String> = vm.config.keys().chain(vm.pending.keys()).collect();
    keys.sort();
    keys.dedup();
    let items: Vec<Value> = keys
        .into_iter()
        .map(|k| {
            let mut e = json!({ "key": k });
            if let Some(v) = vm.config.get(k) {
                e["value"] = config_value(k, v);
            }
            match vm.pending.get(k) {
                Some(Some(v)) => e["pending"] = config_value(k, v),
                Some(None) => e["delete"] = json!(1),
                None => {}
            }
            e
        })
        .collect();
    Reply::data(Value::Array(items))
}

pub(super) fn digest(config: &BTreeMap<String, String>) -> String {
    let text: String = config.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
    hex::encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        text.as_bytes(),
    ))
}

pub(super) fn status_current(vm: &LabVmState) -> Reply {
    let mem = vm
        .config
        .get("memory")
        .and_then(|m| {
            PropString::parse(m, "current")?
                .get("current")?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or(512);
    // `status` says only whether the process runs; `qmpstatus` what QEMU does
    // (qemu-server 9.2.6 `QemuServer.pm` 2558).
    let mut o = json!({"vmid": vm.vmid, "status": if vm.running {"running"} else {"stopped"},
        "qmpstatus": match (vm.running, vm.paused) { (true, true) => "paused", (true, false) => "running", _ => "stopped" },
        "name": vm.config.get("name"),
        "maxmem": mem << 20, "cpus": vm.config.get("cores").and_then(|c| c.parse::<u64>().ok()).unwrap_or(1),
        "agent": u8::from(vm.config.get("agent").and_then(|a| PropString::parse(a, "enabled")?.flag("enabled")).unwrap_or(false)),
        "uptime": 0});
    if let Some(l) = vm.config.get("lock") {
        o["lock"] = json!(l);
    }
    if let Some(t) = vm.config.get("tags") {
        o["tags"] = json!(t);
    }
    Reply::data(o)
}

/// `agent/network-get-interfaces`: answered only by a guest agent that runs, i.e.
/// the VM has `agent` enabled (talos-pve sets it only with the qemu-guest-agent
/// extension) and Talos runs from disk (`LabEvent::NodeRunning`).
pub(super) fn agent_interfaces(vm: &LabVmState) -> Reply {
    if !vm.running {
        return Reply::err(500, format!("VM {} not running", vm.vmid));
    }
    if !vm
        .config
        .get("agent")
        .and_then(|a| PropString::parse(a, "enabled")?.flag("enabled"))
        .unwrap_or(false)
    {
        return Reply::err(500, "No QEMU guest agent configured");
    }
    let Some((mgmt, kubelet)) = vm.guest else {
        return Reply::err(500, "QEMU guest agent is not running");
    };
    let mut ifaces = vec![
        json!({"name": "lo", "hardware-address": "00:00:00:00:00:00",
        "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]}),
    ];
    for i in 0u8..32 {
        let Some(net) = vm
            .config
            .get(&format!("net{i}"))
            .and_then(|n| NetDevice::parse(n))
        else {
            continue;
        };
        let addr = match i {
            0 => Some(mgmt),
            1 if kubelet != mgmt => Some(kubelet),
            _ => None,
        };
        let addrs: Vec<Value> = addr
            .map(|a| vec![json!({"ip-address": a.to_string(), "ip-address-type": "ipv4"})])
            .unwrap_or_default();
        ifaces.push(json!({"name": format!("eth{i}"), "hardware-address": net.mac.unwrap_or_default().to_lowercase(), "ip-addresses": addrs}));
    }
    Reply::data(json!({ "result": ifaces }))
}

/// A guest reported running: its agent (if any) answers from now on.
pub(super) fn guest_running(
    st: &mut LabPveState,
    vmid: u32,
    mgmt: std::net::Ipv4Addr,
    kubelet: std::net::Ipv4Addr,
) {
    if let Some(vm) = st.vms.get_mut(&vmid)
        && vm.running
    {
        vm.guest = Some((mgmt, kubelet));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_is_normalised_like_pve() {
        assert_eq!(
            normalise_value(
                "net0",
                "virtio=bc:24:11:00:16:20,tag=16,bridge=vmbr0,firewall=0"
            ),
            "virtio=BC:24:11:00:16:20,bridge=vmbr0,firewall=0,tag=16"
        );
        assert!(normalise_value("net1", "virtio,bridge=vmbr0").starts_with("virtio=BC:24:11:"));
        assert_eq!(
            normalise_value("tags", "talos;talos-pve;controlplane"),
            "controlplane;talos;talos-pve"
        );
        assert_eq!(
            normalise_value("ipconfig0", "ip=10.8.16.20/24,gw=10.8.16.1"),
            "ip=10.8.16.20/24,gw=10.8.16.1"
        );
    }
}

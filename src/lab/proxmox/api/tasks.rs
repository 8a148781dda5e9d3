//! Tasks family: the UPIDs every change runs as, settling them and applying their
//! effects (`GET /nodes/{node}/tasks`, `.../tasks/{upid}/status`, `.../tasks/{upid}/log`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::guests::start_vm;
use super::storage::{free_volumes, storage_mut};
use super::{Lab, Reply};
use crate::lab::LabEvent;
use crate::lab::proxmox::{LabPveState, LabTask, TaskEffect};
use crate::proxmox::propstr::PropString;
use crate::proxmox::upid::Upid;

impl Lab {
    /// Stop every task whose time has come and apply its effect.
    pub fn settle(self: &std::sync::Arc<Self>) {
        self.catch_up();
        let now = self.now_ms();
        let mut events = Vec::new();
        let mut started = Vec::new();
        {
            let mut st = self.state.lock().expect("lab state");
            let due: Vec<usize> = st
                .tasks
                .iter()
                .enumerate()
                .filter(|(_, t)| t.exitstatus.is_none() && t.done_at_ms <= now)
                .map(|(i, _)| i)
                .collect();
            for i in due {
                let task = st.tasks[i].clone();
                let result = match &task.forced_error {
                    Some(e) => Err(e.clone()),
                    None => apply(&mut st, &task, &mut events),
                };
                if let (Err(_), TaskEffect::Create { vmid, .. }) = (&result, &task.effect) {
                    // A failed create leaves nothing behind, as in PVE.
                    if let Some(vm) = st.vms.remove(vmid) {
                        free_volumes(&mut st, &vm);
                    }
                }
                if let (
                    Ok(()),
                    TaskEffect::Create {
                        vmid,
                        start: true,
                        start_error,
                        ..
                    },
                ) = (&result, &task.effect)
                {
                    // Autostart forks its own `qmstart` task; `qmcreate` ends OK
                    // whatever the start does (qemu-server 9.2.6 `API2/Qemu.pm`
                    // 1568-1572, 3676; proxmox-semantics §1.1).
                    st.tasks[i].log.push("Execute autostart".into());
                    let id = vmid.to_string();
                    let effect = TaskEffect::Start { vmid: *vmid };
                    let (node, user) = (task.node.clone(), task.user.clone());
                    let err = start_error.clone();
                    self.new_task(&mut st, &node, "qmstart", &id, &user, effect, err);
                    started.push("qmstart");
                }
                let t = &mut st.tasks[i];
                // The uploaded bytes now live in the storage (or nowhere): a
                // finished task keeps no copy of them (they may hold CA keys).
                if let TaskEffect::Upload { bytes, .. } = &mut t.effect {
                    bytes.clear();
                }
                match result {
                    Ok(()) => {
                        t.log.push("TASK OK".into());
                        t.exitstatus = Some("OK".into());
                    }
                    Err(e) => {
                        t.log.push(format!("TASK ERROR: {e}"));
                        t.exitstatus = Some(e);
                    }
                }
            }
        }
        for e in events {
            self.fabric.emit(e);
        }
        for kind in started {
            self.spawn_settle(kind);
        }
    }

    #[allow(clippy::too_many_arguments)] // one call site per task type; a struct would only rename the list
    pub(super) fn new_task(
        &self,
        st: &mut LabPveState,
        node: &str,
        kind: &str,
        id: &str,
        user: &str,
        effect: TaskEffect,
        forced_error: Option<String>,
    ) -> String {
        st.next_pid += 1;
        let now = self.now_ms();
        let upid = Upid::new(
            node,
            st.next_pid,
            0x35693 + u64::from(st.next_pid),
            0x6900_0000 + (now / 1000) as u32,
            kind,
            id,
            user,
        );
        let (_, dur) = self.latency(kind);
        st.tasks.push(LabTask {
            upid: upid.to_string(),
            node: node.into(),
            kind: kind.into(),
            id: id.into(),
            user: user.into(),
            done_at_ms: now + dur,
            effect,
            forced_error,
            exitstatus: None,
            log: vec![format!("starting task {kind}")],
        });
        upid.to_string()
    }

    pub(super) fn spawn_settle(self: &std::sync::Arc<Self>, kind: &str) {
        let (_, dur) = self.latency(kind);
        self.spawn_settle_after(dur);
    }

    fn spawn_settle_after(self: &std::sync::Arc<Self>, dur: u64) {
        let lab = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(dur + 1)).await;
            lab.settle();
        });
    }

    fn find_task(&self, node: &str, upid: &str) -> Result<LabTask, Reply> {
        let st = self.state.lock().expect("lab state");
        match st.tasks.iter().find(|t| t.upid == upid && t.node == node) {
            Some(t) => Ok(t.clone()),
            None => {
                let mut e = BTreeMap::new();
                e.insert(
                    "upid".into(),
                    "unable to parse worker upid / no such task".into(),
                );
                Err(Reply::params(e))
            }
        }
    }

    pub(super) fn task_status(&self, node: &str, upid: &str) -> Reply {
        match self.find_task(node, upid) {
            Err(r) => r,
            Ok(t) => {
                let (user, tokenid) = match t.user.split_once('!') {
                    Some((u, tk)) => (u.to_owned(), Some(tk.to_owned())),
                    None => (t.user.clone(), None),
                };
                let mut o = json!({"upid": t.upid, "node": t.node, "type": t.kind, "id": t.id, "user": user,
                    "status": if t.exitstatus.is_some() {"stopped"} else {"running"}, "pid": 1, "pstart": 1, "starttime": 1});
                if let Some(tk) = tokenid {
                    o["tokenid"] = json!(tk);
                }
                if let Some(e) = t.exitstatus {
                    o["exitstatus"] = json!(e);
                }
                Reply::data(o)
            }
        }
    }

    /// `GET /nodes/{n}/tasks` (pve-manager `API2/Tasks.pm` 141-260): the caller's
    /// own tasks (the lab token holds `Sys.Audit` only as a whole, so: own ones);
    /// `source` defaults to `archive`, which omits running tasks.
    pub(super) fn task_list(&self, node: &str, p: &BTreeMap<String, String>, user: &str) -> Reply {
        let st = self.state.lock().expect("lab state");
        let source = p.get("source").map_or("archive", String::as_str);
        Reply::data(
            st.tasks
                .iter()
                .rev()
                .filter(|t| t.node == node && t.user == user)
                .filter(|t| match source {
                    "active" => t.exitstatus.is_none(),
                    "archive" => t.exitstatus.is_some(),
                    _ => true,
                })
                .filter(|t| p.get("vmid").is_none_or(|v| *v == t.id))
                .filter(|t| p.get("typefilter").is_none_or(|k| *k == t.kind))
                .map(|t| {
                    let mut o = json!({"upid": t.upid, "node": t.node, "type": t.kind, "id": t.id,
                        "user": t.user, "pid": 1, "pstart": 1, "starttime": 1});
                    if let Some(e) = &t.exitstatus {
                        o["status"] = json!(e);
                        o["endtime"] = json!(2);
                    }
                    o
                })
                .collect(),
        )
    }

    pub(super) fn task_log(&self, node: &str, upid: &str) -> Reply {
        match self.find_task(node, upid) {
            Err(r) => r,
            Ok(t) => {
                let mut log = t.log.clone();
                if t.kind == "download" && t.forced_error.is_none() {
                    let (_, dur) = self.latency("download");
                    let left = t.done_at_ms.saturating_sub(self.now_ms());
                    let done = 1.0 - left as f64 / dur.max(1) as f64;
                    log.splice(1..1, wget_lines(done));
                }
                Reply::data(
                    log.iter()
                        .enumerate()
                        .map(|(i, l)| json!({"n": i + 1, "t": l}))
                        .collect(),
                )
            }
        }
    }
}

/// What a download task has logged once `done` (0..=1) of the file arrived: PVE runs
/// `wget --progress=dot:giga` (pve-common 9.2.1 src/PVE/Tools.pm
/// `download_file_from_url`), one dot per MiB, one line per 32 MiB with the percent.
/// The lab's ISO is a nominal 110 MiB.
fn wget_lines(done: f64) -> Vec<String> {
    const MIB: u64 = 110;
    let got = (MIB as f64 * done.clamp(0.0, 1.0)) as u64;
    let mut lines = vec![format!(
        "Length: {} ({MIB}M) [application/octet-stream]",
        MIB << 20
    )];
    for start in (0..got).step_by(32) {
        let end = (start + 32).min(got);
        let full = end - start == 32 || got == MIB;
        if !full {
            break;
        }
        let dots: Vec<String> = (start..end)
            .collect::<Vec<_>>()
            .chunks(8)
            .map(|c| ".".repeat(c.len()))
            .collect();
        lines.push(format!(
            "{:>6}K {:<35} {:>3}%  100M 1s",
            start * 1024,
            dots.join(" "),
            end * 100 / MIB
        ));
    }
    lines
}

/// Apply a finished task's effect; `Err` = its `TASK ERROR` message.
fn apply(st: &mut LabPveState, task: &LabTask, events: &mut Vec<LabEvent>) -> Result<(), String> {
    match &task.effect {
        TaskEffect::Create { vmid, config, .. } => {
            for (k, v) in config {
                if k.starts_with("ide") && v.contains(":iso/") {
                    let volid = PropString::parse(v, "file")
                        .and_then(|p| p.get("file").map(str::to_owned))
                        .unwrap_or_default();
                    let (sid, _) = volid.split_once(':').unwrap_or_default();
                    let present = st.nodes[&task.node]
                        .storages
                        .iter()
                        .filter(|s| s.id == sid)
                        .any(|s| super::storage::visible_volumes(st, s).contains_key(&volid));
                    if !present {
                        return Err(format!(
                            "unable to create VM {vmid} - volume {volid} does not exist"
                        ));
                    }
                }
            }
            let vm = st.vms.get_mut(vmid).ok_or("VM vanished")?;
            vm.config = config.clone();
            Ok(())
        }
        TaskEffect::Start { vmid } => {
            start_vm(st, *vmid, events);
            Ok(())
        }
        TaskEffect::Stop { vmid } => {
            stop_vm(st, *vmid, events);
            Ok(())
        }
        TaskEffect::Reboot { vmid } => {
            stop_vm(st, *vmid, events);
            start_vm(st, *vmid, events);
            Ok(())
        }
        TaskEffect::Destroy { vmid } => {
            if let Some(vm) = st.vms.remove(vmid) {
                free_volumes(st, &vm);
                events.push(LabEvent::VmDestroyed { vmid: *vmid });
            }
            Ok(())
        }
        TaskEffect::Download { storage, volid } => {
            let node = st.nodes.get_mut(&task.node).ok_or("node vanished")?;
            let s = node
                .storages
                .iter_mut()
                .find(|s| &s.id == storage)
                .ok_or("storage vanished")?;
            s.volumes.entry(volid.clone()).or_insert(104_857_600);
            Ok(())
        }
        TaskEffect::Upload {
            node,
            storage,
            volid,
            bytes,
        } => {
            let s = storage_mut(st, node, storage)?;
            let size = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, bytes)
                .map_err(|e| e.to_string())?
                .len() as u64;
            s.volumes.insert(volid.clone(), size);
            s.files.insert(volid.clone(), bytes.clone());
            Ok(())
        }
        TaskEffect::DeleteVolume { storage, volid } => {
            let s = storage_mut(st, &task.node, storage)?;
            s.files.remove(volid);
            if s.volumes.remove(volid).is_none() {
                tracing::debug!(%volid, "lab: deleting a volume that does not exist (a warning in PVE)");
            }
            Ok(())
        }
    }
}

/// A host-side stop: pending changes apply (qemu-server `QemuServer.pm` 6298, 6329).
fn stop_vm(st: &mut LabPveState, vmid: u32, events: &mut Vec<LabEvent>) {
    if let Some(vm) = st.vms.get_mut(&vmid)
        && vm.running
    {
        vm.running = false;
        vm.paused = false;
        vm.guest = None;
        vm.apply_pending();
        events.push(LabEvent::VmStopped { vmid });
    }
}

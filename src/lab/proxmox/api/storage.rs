//! Storage and content family: storages, their volumes and ISO transfers
//! (`GET /nodes/{node}/storage`, `.../storage/{storage}/content`, `POST .../download-url`,
//! `POST .../upload`, `DELETE .../content/{volume}`).

use std::collections::BTreeMap;

use serde_json::json;

use super::{Lab, Reply};
use crate::lab::proxmox::{LabPveState, LabStorage, LabVmState, TaskEffect};

impl Lab {
    /// `POST /nodes/{node}/storage/{storage}/upload` (pve-storage 9.1.7
    /// `API2/Storage/Status.pm` 519-734; proxmox-semantics §2): the file part's
    /// name is normalised, ISO content needs `.iso`/`.img`, the checksum is verified
    /// inside the `imgcopy` task, an existing file is overwritten.
    pub(super) fn upload(
        self: &std::sync::Arc<Self>,
        node: &str,
        storage: &str,
        p: &BTreeMap<String, String>,
        file: Option<&(String, Vec<u8>)>,
        user: &str,
    ) -> Reply {
        let param_err = |k: &str, msg: &str| {
            let mut e = BTreeMap::new();
            e.insert(k.to_owned(), msg.to_owned());
            Reply::params(e)
        };
        let Some((raw_name, bytes)) = file else {
            return param_err("filename", "property is missing and it is not optional");
        };
        if p.contains_key("checksum") != p.contains_key("checksum-algorithm") {
            return param_err(
                "checksum",
                "'checksum' and 'checksum-algorithm' must be set together",
            );
        }
        // pve-storage Storage.pm 2483-2491: path stripped, odd characters become `_`.
        let base = raw_name.rsplit(['/', '\\']).next().unwrap_or_default();
        let filename: String = base
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if filename.len() > 255 {
            return param_err("filename", "value may only be 255 characters long");
        }
        let content = &p["content"];
        let lower = filename.to_lowercase();
        if content == "iso" && !(lower.ends_with(".iso") || lower.ends_with(".img")) {
            return param_err("filename", "wrong file extension");
        }
        let mut st = self.state.lock().expect("lab state");
        let Some(s) = st.nodes[node].storages.iter().find(|s| s.id == storage) else {
            return Reply::err(500, format!("storage '{storage}' does not exist"));
        };
        if !s.content.iter().any(|c| c == content) {
            return Reply::err(
                500,
                format!("storage '{storage}' does not support '{content}' content"),
            );
        }
        let mut error = None;
        if let Some(want) = p.get("checksum") {
            let got = match p["checksum-algorithm"].as_str() {
                "sha256" => hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes)),
                other => format!("(lab: {other} not simulated)"),
            };
            if !got.eq_ignore_ascii_case(want) {
                error = Some(format!("checksum mismatch: got '{got}' != expect '{want}'"));
            }
        }
        let volid = format!("{storage}:{content}/{filename}");
        // Uploads are never proxied: the `imgcopy` task runs on the node that
        // received the request (the endpoint's host) and copies the file to `node`
        // (pve-manager `PVE/HTTPServer.pm` 185, pve-storage `Status.pm` 638-666).
        let endpoint_ip = st.endpoint.ip().to_string();
        let receiving = st
            .nodes
            .values()
            .find(|n| {
                n.network.iter().any(|i| {
                    i.cidr.as_deref().and_then(|c| c.split('/').next()) == Some(&endpoint_ip)
                })
            })
            .map_or_else(|| node.to_owned(), |n| n.name.clone());
        let upid = self.new_task(
            &mut st,
            &receiving,
            "imgcopy",
            "",
            user,
            TaskEffect::Upload {
                node: node.into(),
                storage: storage.into(),
                volid,
                bytes: base64::Engine::encode(&base64::engine::general_purpose::STANDARD, bytes),
            },
            error,
        );
        drop(st);
        self.spawn_settle("imgcopy");
        Reply::data(json!(upid))
    }

    /// `DELETE /nodes/{n}/storage/{s}/content/{volume}` (pve-storage
    /// `API2/Storage/Content.pm` 453-540): `volume` is the full volid or the part
    /// after `storage:`; an `imgdel` task frees it. Nothing checks whether a VM
    /// still has it attached. A missing file is only a warning in the task log.
    pub(super) fn delete_volume(
        self: &std::sync::Arc<Self>,
        node: &str,
        storage: &str,
        volume: &str,
        user: &str,
    ) -> Reply {
        let volid = if volume.contains(':') {
            volume.to_owned()
        } else {
            format!("{storage}:{volume}")
        };
        if volid.split_once(':').map(|(s, _)| s) != Some(storage) {
            return Reply::err(
                400,
                format!("volume '{volid}' is not on storage '{storage}'"),
            );
        }
        let mut st = self.state.lock().expect("lab state");
        if !st.nodes[node].storages.iter().any(|s| s.id == storage) {
            return Reply::err(500, format!("storage '{storage}' does not exist"));
        }
        let upid = self.new_task(
            &mut st,
            node,
            "imgdel",
            storage,
            user,
            TaskEffect::DeleteVolume {
                storage: storage.into(),
                volid,
            },
            None,
        );
        drop(st);
        self.spawn_settle("imgdel");
        Reply::data(json!(upid))
    }

    pub(super) fn storages(&self, node: &str, params: &BTreeMap<String, String>) -> Reply {
        let st = self.state.lock().expect("lab state");
        let n = &st.nodes[node];
        let want = params.get("content");
        Reply::data(
            n.storages
                .iter()
                .filter(|s| want.is_none_or(|c| c.split(',').all(|c| s.content.iter().any(|x| x == c))))
                .map(|s| {
                    // A shared storage is one pool: what any host allocated on it counts.
                    let used: u64 = if s.shared {
                        st.nodes
                            .values()
                            .flat_map(|n| n.storages.iter().filter(|x| x.id == s.id))
                            .flat_map(|x| x.volumes.values())
                            .sum()
                    } else {
                        s.volumes.values().sum()
                    };
                    json!({"storage": s.id, "type": s.kind, "content": s.content.join(","), "active": 1, "enabled": 1,
                           "shared": u8::from(s.shared), "total": s.total, "used": used, "avail": s.total.saturating_sub(used),
                           "used_fraction": used as f64 / s.total.max(1) as f64})
                })
                .collect(),
        )
    }

    pub(super) fn content(
        &self,
        node: &str,
        storage: &str,
        params: &BTreeMap<String, String>,
    ) -> Reply {
        let st = self.state.lock().expect("lab state");
        let Some(s) = st.nodes[node].storages.iter().find(|s| s.id == storage) else {
            return Reply::err(500, format!("storage '{storage}' does not exist"));
        };
        let want = params.get("content");
        Reply::data(
            visible_volumes(&st, s)
                .iter()
                .filter(|(v, _)| want.is_none_or(|c| volume_content(v) == c))
                .map(|(v, size)| json!({"volid": v, "size": size, "content": volume_content(v), "format": if v.ends_with(".iso") {"iso"} else {"raw"}, "ctime": 1_700_000_000}))
                .collect(),
        )
    }

    pub(super) fn download(
        self: &std::sync::Arc<Self>,
        node: &str,
        storage: &str,
        p: &BTreeMap<String, String>,
        user: &str,
        injected: Option<String>,
    ) -> Reply {
        if p.contains_key("checksum") != p.contains_key("checksum-algorithm") {
            let mut e = BTreeMap::new();
            e.insert(
                "checksum".into(),
                "'checksum' and 'checksum-algorithm' must be set together".into(),
            );
            return Reply::params(e);
        }
        let filename = &p["filename"];
        let content = &p["content"];
        let lower = filename.to_lowercase();
        if content == "iso" && !(lower.ends_with(".iso") || lower.ends_with(".img")) {
            let mut e = BTreeMap::new();
            e.insert("filename".into(), "wrong file extension".into());
            return Reply::params(e);
        }
        let mut st = self.state.lock().expect("lab state");
        let Some(s) = st.nodes[node].storages.iter().find(|s| s.id == storage) else {
            return Reply::err(500, format!("storage '{storage}' does not exist"));
        };
        if s.kind != "dir" {
            return Reply::err(
                500,
                format!(
                    "can't upload to storage type '{}', not a file based storage!",
                    s.kind
                ),
            );
        }
        if !s.content.iter().any(|c| c == content) {
            return Reply::err(
                500,
                format!("storage '{storage}' is not configured for content-type '{content}'"),
            );
        }
        let volid = format!("{storage}:{content}/{filename}");
        let exists = visible_volumes(&st, s).contains_key(&volid);
        let mut error = injected;
        if error.is_none() && exists && !p.contains_key("checksum") {
            error = Some(format!(
                "refusing to override existing file '/var/lib/vz/template/{content}/{filename}'"
            ));
        }
        // An Image Factory URL served by this lab must name a schematic it has seen.
        let own = self
            .listen
            .lock()
            .expect("lab listen")
            .map(|a| format!("https://{a}/image/"));
        if error.is_none()
            && let Some(prefix) = own
            && let Some(rest) = p["url"].strip_prefix(&prefix)
        {
            let mut parts = rest.split('/');
            let id = parts.next().unwrap_or_default();
            let version = parts.next().unwrap_or_default();
            let verify = p
                .get("verify-certificates")
                .is_none_or(|v| !matches!(v.as_str(), "0" | "false" | "no" | "off"));
            error = if !st.schematics.contains(id) {
                Some(format!(
                    "download failed: 404 Not Found (schematic {id} unknown to the Image Factory)"
                ))
            } else if verify {
                // The lab factory's certificate comes from the lab's own CA, which
                // the host's system trust (wget's) does not hold; only
                // `verify-certificates=0` skips the check (pve-storage 9.1.7
                // `API2/Storage/Status.pm` 870-874).
                Some(format!(
                    "download failed: wget: cannot verify {}'s certificate: unable to get local issuer certificate",
                    prefix
                        .trim_start_matches("https://")
                        .trim_end_matches("/image/")
                ))
            } else {
                checksum_error(p, &super::factory_iso(id, version))
            };
        }
        let upid = self.new_task(
            &mut st,
            node,
            "download",
            filename,
            user,
            TaskEffect::Download {
                storage: storage.into(),
                volid,
            },
            error,
        );
        drop(st);
        self.spawn_settle("download");
        Reply::data(json!(upid))
    }
}

/// What a storage holds as seen from one node: a shared storage is one pool, so
/// what any node put on it is there (the lab keeps volumes per node).
pub(super) fn visible_volumes(st: &LabPveState, s: &LabStorage) -> BTreeMap<String, u64> {
    if !s.shared {
        return s.volumes.clone();
    }
    st.nodes
        .values()
        .flat_map(|n| n.storages.iter().filter(|x| x.id == s.id))
        .flat_map(|x| x.volumes.iter().map(|(k, v)| (k.clone(), *v)))
        .collect()
}

/// The task error of a checksum that does not match `bytes` (PVE checks it after
/// the download: pve-common 9.2.1 `Tools.pm` 1486-1590); `None` when it matches
/// or none was given. Algorithms ring lacks are not checked.
fn checksum_error(p: &BTreeMap<String, String>, bytes: &[u8]) -> Option<String> {
    let (want, alg) = (p.get("checksum")?, p.get("checksum-algorithm")?);
    let alg = match alg.as_str() {
        "sha256" => &ring::digest::SHA256,
        "sha384" => &ring::digest::SHA384,
        "sha512" => &ring::digest::SHA512,
        _ => return None,
    };
    let got = hex::encode(ring::digest::digest(alg, bytes));
    (!got.eq_ignore_ascii_case(want))
        .then(|| format!("checksum mismatch: got '{got}' != expect '{want}', aborting"))
}

pub(super) fn storage_mut<'a>(
    st: &'a mut LabPveState,
    node: &str,
    storage: &str,
) -> Result<&'a mut LabStorage, String> {
    st.nodes
        .get_mut(node)
        .ok_or("node vanished")?
        .storages
        .iter_mut()
        .find(|s| s.id == storage)
        .ok_or_else(|| "storage vanished".to_owned())
}

pub(crate) fn free_volumes(st: &mut LabPveState, vm: &LabVmState) {
    let prefix = format!("vm-{}-", vm.vmid);
    if let Some(n) = st.nodes.get_mut(&vm.node) {
        for s in &mut n.storages {
            s.volumes.retain(|v, _| {
                !v.split_once(':')
                    .is_some_and(|(_, name)| name.starts_with(&prefix))
            });
        }
    }
}

fn volume_content(volid: &str) -> &'static str {
    if volid.contains(":iso/") {
        "iso"
    } else if volid.contains(":vztmpl/") {
        "vztmpl"
    } else {
        "images"
    }
}

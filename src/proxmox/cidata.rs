//! A node's `cidata` volume on Proxmox: upload it through the authenticated,
//! fingerprint-verified API, put it in the VM's CD-ROM drive, power the VM on; once
//! the node runs its installed config, take it out and delete it.
//!
//! The machine config (with the cluster's CA keys) thus travels only over the
//! Proxmox API channel, to storage of the VM we created, never to whatever answers
//! at a node's address. Facts (proxmox-semantics §2, §7.2):
//! - upload: multipart, `Datastore.AllocateTemplate`, an `imgcopy` task on the node
//!   that received the request, an existing file silently overwritten
//!   (pve-storage 9.1.7 `API2/Storage/Status.pm` 519-734);
//! - changing a CD-ROM's medium on a running VM is live (qemu-server 9.2.6
//!   `QemuServer.pm` `vmconfig_update_disk`, cdrom branch → `Blockdev::change_medium`),
//!   while deleting an `ide` drive of a running VM stays pending
//!   (`vmconfig_hotplug_pending`: `ide|sata` → "skip"), so it is emptied with
//!   `none,media=cdrom`, not deleted;
//! - delete: `DELETE …/content/{volume}`, `Datastore.Allocate`, an `imgdel` task;
//!   nothing checks whether a VM still has it attached (pve-storage
//!   `API2/Storage/Content.pm` 453-540), hence detach first.

use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::client::{Client, api_path, params, vm_path};
use super::error::PveError;
use super::propstr::PropString;
use super::vm::{CIDATA_DRIVE, CIDATA_DRIVE_EMPTY};
use crate::plan::NodePlan;
use crate::talos::cidata;

const UPLOAD_DEADLINE: Duration = Duration::from_secs(300);
const POWER_DEADLINE: Duration = Duration::from_secs(120);
const DELETE_DEADLINE: Duration = Duration::from_secs(120);

/// Where one node's volume lives.
#[derive(Debug, Clone)]
pub struct Volume {
    pub host: String,
    pub vmid: u32,
    pub storage: String,
    pub file: String,
}

impl Volume {
    pub fn of(cluster: &str, iso_storage: &str, n: &NodePlan) -> Self {
        Self {
            host: n.host.clone(),
            vmid: n.vmid,
            storage: iso_storage.to_owned(),
            file: cidata::file_name(cluster, &n.name, n.vmid),
        }
    }

    pub fn volid(&self) -> String {
        format!("{}:iso/{}", self.storage, self.file)
    }

    fn vm(&self) -> Result<String, PveError> {
        vm_path(&self.host, self.vmid)
    }

    fn storage_path(&self) -> Result<String, PveError> {
        api_path(&[&"nodes", &self.host, &"storage", &self.storage])
    }
}

/// What `deliver` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Uploaded, attached, VM powered on (or power-cycled, if it ran without it).
    Booted,
    /// The VM already runs with this volume attached (a resumed run): nothing sent.
    AlreadyBooting,
}

/// What `retire` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retired {
    Deleted,
    /// Deleting was refused (no `Datastore.Allocate`): the file was overwritten
    /// with a volume holding no key material.
    Scrubbed,
    /// Not (or no longer) on the storage.
    Gone,
}

/// Upload `image` as the node's volume, attach it, and boot the VM from it.
pub async fn deliver(pve: &Client, v: &Volume, image: &[u8]) -> Result<Delivery, PveError> {
    let status: Value = pve.get(&format!("{}/status/current", v.vm()?), &[]).await?;
    // `status` says only whether the QEMU process runs; a paused VM's
    // `qmpstatus` says `paused` (qemu-server 9.2.6 `QemuServer.pm` 2558).
    let running = status.get("status").and_then(Value::as_str) == Some("running");
    let booting = running
        && status
            .get("qmpstatus")
            .and_then(Value::as_str)
            .is_none_or(|q| q == "running");
    // Only a VM that runs can already be booting from it (a resumed run).
    if booting && attached(pve, v).await? {
        return Ok(Delivery::AlreadyBooting);
    }
    upload(pve, v, image).await?;
    pve.put(
        &format!("{}/config", v.vm()?),
        &[(CIDATA_DRIVE.into(), format!("{},media=cdrom", v.volid()))],
    )
    .await?;
    // The volume is read at boot: a VM that runs without it must boot again.
    if running {
        power(pve, v, "stop").await?;
    }
    power(pve, v, "start").await?;
    Ok(Delivery::Booted)
}

/// Take the volume out of the drive and off the storage. When deleting is not
/// allowed, overwrite it with `scrubbed` (same name, no key material).
pub async fn retire(pve: &Client, v: &Volume, scrubbed: &[u8]) -> Result<Retired, PveError> {
    if attached(pve, v).await? {
        pve.put(
            &format!("{}/config", v.vm()?),
            &[(CIDATA_DRIVE.into(), CIDATA_DRIVE_EMPTY.into())],
        )
        .await?;
    }
    let content: Vec<Value> = pve
        .get(
            &format!("{}/content", v.storage_path()?),
            &params([("content", "iso".into())]),
        )
        .await?;
    let volid = v.volid();
    let stored = content
        .iter()
        .any(|c| c.get("volid").and_then(Value::as_str) == Some(volid.as_str()));
    if !stored {
        return Ok(Retired::Gone);
    }
    let encoded: String = form_urlencoded::byte_serialize(volid.as_bytes()).collect();
    match pve
        .run_task(
            Method::DELETE,
            &format!("{}/content/{encoded}", v.storage_path()?),
            &[],
            DELETE_DEADLINE,
        )
        .await
    {
        Ok(_) => Ok(Retired::Deleted),
        Err(PveError::Api { status: 403, .. }) => {
            upload(pve, v, scrubbed).await?;
            Ok(Retired::Scrubbed)
        }
        Err(e) => Err(e),
    }
}

/// Is the node's volume in the VM's drive?
async fn attached(pve: &Client, v: &Volume) -> Result<bool, PveError> {
    let config: Value = pve.get(&format!("{}/config", v.vm()?), &[]).await?;
    let drive = config
        .get(CIDATA_DRIVE)
        .and_then(Value::as_str)
        .unwrap_or("");
    let volid = v.volid();
    Ok(PropString::parse(drive, "file").is_some_and(|p| p.get("file") == Some(volid.as_str())))
}

async fn upload(pve: &Client, v: &Volume, bytes: &[u8]) -> Result<(), PveError> {
    let path = format!("{}/upload", v.storage_path()?);
    let upid = pve.upload(&path, "iso", &v.file, bytes).await?;
    pve.wait_task(&upid, UPLOAD_DEADLINE).await?;
    Ok(())
}

async fn power(pve: &Client, v: &Volume, op: &str) -> Result<(), PveError> {
    match pve
        .run_task(
            Method::POST,
            &format!("{}/status/{op}", v.vm()?),
            &[],
            POWER_DEADLINE,
        )
        .await
    {
        Err(PveError::TaskFailed { message, .. }) if message.ends_with("already running") => Ok(()),
        other => other.map(|_| ()),
    }
}

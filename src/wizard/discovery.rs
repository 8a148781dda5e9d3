//! What the wizard learns from Proxmox before asking about the layout: hosts, bridges,
//! bonds, storages and free VMIDs. `Discovery` is the seam (a Proxmox-backed
//! implementation plugs in here); `Inventory` is the plain-data implementation used for
//! offline/air-gapped planning (`init --discovery-file FILE`) and in tests.
//!
//! The trait is synchronous because prompts are: an async client wraps its calls in
//! its own runtime (`Handle::block_on` from a non-runtime thread).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum DiscoveryError {
    #[error(
        "cannot read discovery file {path}: {cause}\n  fix: check the path given to --discovery-file"
    )]
    Read {
        path: PathBuf,
        // Part of the message, not a `source`: `{:#}` would repeat it after the fix line.
        cause: std::io::Error,
    },
    #[error("discovery file {path}: {message}\n  fix: see docs/discovery-file.md for the format")]
    Parse { path: PathBuf, message: String },
    #[error("Proxmox discovery failed at {endpoint}: {message}\n  fix: {fix}")]
    Remote {
        endpoint: String,
        message: String,
        fix: String,
    },
    #[error("Proxmox host `{0}` was not discovered")]
    UnknownHost(String),
}

impl DiscoveryError {
    /// The user's input is at fault (a discovery file), not a remote system.
    pub fn is_bad_input(&self) -> bool {
        matches!(self, Self::Read { .. } | Self::Parse { .. })
    }
}

/// How to reach the Proxmox API, as answered in the wizard. The secret is never
/// written into the profile.
pub struct Access {
    pub endpoint: String,
    pub token_id: String,
    pub secret: SecretString,
    pub fingerprint: Option<String>,
}

/// Opens a [`Discovery`] once the wizard knows the endpoint and token.
pub trait Connect {
    fn connect(&self, access: &Access) -> Result<Box<dyn Discovery + '_>, DiscoveryError>;
}

pub trait Discovery {
    fn hosts(&self) -> Result<Vec<HostInfo>, DiscoveryError>;
    fn bridges(&self, host: &str) -> Result<Vec<Bridge>, DiscoveryError>;
    fn bonds(&self, host: &str) -> Result<Vec<Bond>, DiscoveryError>;
    fn storages(&self, host: &str) -> Result<Vec<Storage>, DiscoveryError>;
    /// The `n` lowest VMIDs not used anywhere in the Proxmox cluster.
    fn next_free_vmids(&self, n: usize) -> Result<Vec<u32>, DiscoveryError>;
    /// VMIDs taken in the Proxmox cluster, each with a description of its guest
    /// (`VM web on pve1`), so a typed VMID can be refused by name.
    fn used_vmids(&self) -> Result<Vec<(u32, String)>, DiscoveryError>;
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostInfo {
    pub name: String,
    /// Management address (Proxmox cluster status `ip`).
    pub address: Ipv4Addr,
    #[serde(default)]
    pub bridges: Vec<Bridge>,
    #[serde(default)]
    pub bonds: Vec<Bond>,
    #[serde(default)]
    pub storages: Vec<Storage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bridge {
    pub name: String,
    /// Physical ports (`bridge_ports`); the first one is recorded as the host uplink.
    #[serde(default)]
    pub ports: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bond {
    pub name: String,
    #[serde(default)]
    pub slaves: Vec<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub address: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Storage {
    pub name: String,
    /// Proxmox content types: `iso`, `images`, `rootdir`, `backup`, …
    #[serde(default)]
    pub content: Vec<String>,
}

impl Storage {
    pub fn holds(&self, content: &str) -> bool {
        self.content.iter().any(|c| c == content)
    }
}

/// Discovered facts as data: the `--discovery-file` format (YAML or JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inventory {
    pub hosts: Vec<HostInfo>,
    /// VMIDs already taken in the Proxmox cluster.
    #[serde(default)]
    pub used_vmids: Vec<u32>,
    /// Lowest VMID to hand out (Proxmox starts at 100).
    #[serde(default = "default_floor")]
    pub vmid_floor: u32,
}

fn default_floor() -> u32 {
    100
}

impl Inventory {
    pub fn load(path: &Path) -> Result<Self, DiscoveryError> {
        let text = std::fs::read_to_string(path).map_err(|cause| DiscoveryError::Read {
            path: path.to_owned(),
            cause,
        })?;
        // JSON is YAML, so one parser serves both spellings.
        serde_saphyr::from_str(&text).map_err(|e| DiscoveryError::Parse {
            path: path.to_owned(),
            message: crate::profile::tidy_message(&e.to_string(), path),
        })
    }

    fn host(&self, name: &str) -> Result<&HostInfo, DiscoveryError> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .ok_or_else(|| DiscoveryError::UnknownHost(name.to_owned()))
    }
}

impl Connect for Inventory {
    fn connect(&self, _access: &Access) -> Result<Box<dyn Discovery + '_>, DiscoveryError> {
        Ok(Box::new(self))
    }
}

impl Discovery for &Inventory {
    fn hosts(&self) -> Result<Vec<HostInfo>, DiscoveryError> {
        Ok(self.hosts.clone())
    }
    fn bridges(&self, host: &str) -> Result<Vec<Bridge>, DiscoveryError> {
        Ok(self.host(host)?.bridges.clone())
    }
    fn bonds(&self, host: &str) -> Result<Vec<Bond>, DiscoveryError> {
        Ok(self.host(host)?.bonds.clone())
    }
    fn storages(&self, host: &str) -> Result<Vec<Storage>, DiscoveryError> {
        Ok(self.host(host)?.storages.clone())
    }
    fn next_free_vmids(&self, n: usize) -> Result<Vec<u32>, DiscoveryError> {
        Ok((self.vmid_floor..)
            .filter(|id| !self.used_vmids.contains(id))
            .take(n)
            .collect())
    }
    fn used_vmids(&self) -> Result<Vec<(u32, String)>, DiscoveryError> {
        // The file lists numbers only.
        let guest = |id: &u32| (*id, "a guest listed in `usedVmids`".to_owned());
        Ok(self.used_vmids.iter().map(guest).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_discovery_files_name_the_file_and_the_fix_once() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope.json");
        let e = anyhow::Error::new(Inventory::load(&missing).err().unwrap());
        let text = format!("{e:#}");
        assert_eq!(text.matches("os error").count(), 1, "{text}");
        assert!(
            text.ends_with("fix: check the path given to --discovery-file"),
            "{text}"
        );
        let empty = d.path().join("empty.json");
        std::fs::write(&empty, "{}").unwrap();
        let text = Inventory::load(&empty).err().unwrap().to_string();
        assert!(text.contains("missing field `hosts`"), "{text}");
        assert!(
            text.contains(&format!("--> {}:1:1", empty.display())),
            "{text}"
        );
        assert!(
            !text.contains("<input>") && !text.contains(": error:"),
            "{text}"
        );
    }

    #[test]
    fn free_vmids_skip_used_ones() {
        let inv = Inventory {
            hosts: vec![],
            used_vmids: vec![100, 102],
            vmid_floor: 100,
        };
        assert_eq!((&inv).next_free_vmids(3).unwrap(), vec![101, 103, 104]);
    }

    #[test]
    fn unknown_host_is_an_error() {
        let inv = Inventory {
            hosts: vec![],
            used_vmids: vec![],
            vmid_floor: 100,
        };
        assert!(matches!(
            (&inv).bridges("nope"),
            Err(DiscoveryError::UnknownHost(h)) if h == "nope"
        ));
    }
}

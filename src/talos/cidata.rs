//! A node's nocloud `cidata` volume: how its machine config reaches it without
//! ever crossing the network to an unauthenticated endpoint. Pure.
//!
//! Talos's nocloud platform looks for a volume labelled `cidata`/`CIDATA`, mounts
//! it read-only and reads `meta-data`, `network-config` and `user-data`; a
//! `user-data` that is a machine config becomes the node's config, a
//! `#cloud-config` one does not (siderolabs/talos v1.13.9 and v1.12.11
//! `internal/app/machined/pkg/runtime/v1alpha1/platform/nocloud/metadata.go`
//! `configFromCD`, `platform/internal/blockutils/blockutils.go` `ReadFromVolume`).
//!
//! No `network-config`: the machine config already holds every link, address,
//! route and resolver (`talos::config::machine`), and the acquire controller takes
//! the config from the STATE partition first on every later boot
//! (`internal/app/machined/pkg/controllers/config/acquire.go` `stateDisk`), so the
//! volume only matters for the first boot. A platform `network-config` would be
//! read again on every boot while the volume is attached and would add a second,
//! lower-priority source of the same addresses that disappears once the volume is
//! detached; leaving it out keeps one source of truth.

use crate::iso9660::{self, File, IsoError};

/// The volume label Talos looks for.
pub const LABEL: &str = "cidata";

/// The image for one node: `user-data` is exactly `machine_config`.
pub fn image(node: &str, instance_id: &str, machine_config: &[u8]) -> Result<Vec<u8>, IsoError> {
    let meta = meta_data(node, instance_id);
    iso9660::image(
        LABEL,
        &[
            File {
                name: "meta-data",
                data: meta.as_bytes(),
            },
            File {
                name: "user-data",
                data: machine_config,
            },
        ],
    )
}

/// `meta-data` (YAML): the instance id and the hostname. Both come from the plan
/// (a DNS label and a number), so no quoting is needed.
fn meta_data(node: &str, instance_id: &str) -> String {
    format!("instance-id: {instance_id}\nlocal-hostname: {node}\n")
}

/// The ISO file name on the Proxmox storage: unique per cluster, VM and node, and
/// already in the form PVE keeps (`[a-zA-Z0-9_.-]`, ending `.iso`; other
/// characters would be rewritten to `_` on upload, pve-storage `Storage.pm`
/// `normalize_content_filename`), so the volid we attach is the one stored.
pub fn file_name(cluster: &str, node: &str, vmid: u32) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    format!(
        "talos-pve-cidata-{}-{vmid}-{}.iso",
        clean(cluster),
        clean(node)
    )
}

/// What stays on the storage when the volume cannot be deleted: the same name,
/// no key material (`user-data` is a `#cloud-config`, which Talos ignores).
pub fn scrubbed(node: &str, instance_id: &str) -> Result<Vec<u8>, IsoError> {
    image(node, instance_id, b"#cloud-config\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_is_pve_safe_and_unique_per_vm() {
        assert_eq!(
            file_name("homelab", "talos-k8s-01", 120),
            "talos-pve-cidata-homelab-120-talos-k8s-01.iso"
        );
        assert_eq!(file_name("a b/c", "n", 1), "talos-pve-cidata-a_b_c-1-n.iso");
    }

    #[test]
    fn user_data_is_the_config_verbatim() {
        let img = image("n1", "120", b"version: v1alpha1\n").unwrap();
        let hay = img.windows(18).any(|w| w == b"version: v1alpha1\n");
        assert!(hay);
        let s = scrubbed("n1", "120").unwrap();
        assert!(!s.windows(9).any(|w| w == b"v1alpha1\n"));
    }
}

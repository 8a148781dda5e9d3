//! Image Factory schematic IDs, computed offline.
//!
//! The factory's ID is the SHA-256 of the schematic marshalled as Go yaml.v3 does
//! (4-space indent, sequences indented under their key, empty fields omitted,
//! struct order `customization` → `extraKernelArgs`, `systemExtensions`).

use ring::digest::{SHA256, digest};

use crate::profile::Schematic;

/// The canonical YAML body, also what talos-pve POSTs to `/schematics`.
pub fn schematic_yaml(s: &Schematic) -> String {
    if s.extensions.is_empty() && s.extra_kernel_args.is_empty() {
        return "customization: {}\n".into();
    }
    let mut y = String::from("customization:\n");
    if !s.extra_kernel_args.is_empty() {
        y.push_str("    extraKernelArgs:\n");
        for a in &s.extra_kernel_args {
            y.push_str(&format!("        - {}\n", yaml_scalar(a)));
        }
    }
    if !s.extensions.is_empty() {
        y.push_str("    systemExtensions:\n        officialExtensions:\n");
        for e in &s.extensions {
            y.push_str(&format!("            - {}\n", yaml_scalar(e)));
        }
    }
    y
}

pub fn schematic_id(s: &Schematic) -> String {
    hex::encode(digest(&SHA256, schematic_yaml(s).as_bytes()))
}

/// Quote the rare scalar that yaml.v3 would quote; extension names and kernel args
/// are plain words in practice.
fn yaml_scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=,".contains(c))
        && !matches!(
            s,
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_owned()
    } else {
        format!("{s:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schematic(ext: &[&str], args: &[&str]) -> Schematic {
        Schematic {
            extensions: ext.iter().map(|s| s.to_string()).collect(),
            extra_kernel_args: args.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn well_known_ids_reproduce() {
        assert_eq!(
            schematic_id(&schematic(&[], &[])),
            "376567988ad370138ad8b2698212367b8edcb69b5fd68c80be1f2ec7d603b4ba"
        );
        assert_eq!(
            schematic_id(&schematic(&["siderolabs/qemu-guest-agent"], &[])),
            "ce4c980550dd2ab1b17bbf2b08801c7eb59418eafe8f279833297925d67c7515"
        );
        assert_eq!(
            schematic_id(&schematic(
                &["siderolabs/qemu-guest-agent"],
                &["net.ifnames=0"]
            )),
            "f683308f6e49ec36d715bd41c90d800910552d8cbc015c8363ec350594535fa1"
        );
    }
}

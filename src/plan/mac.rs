//! Deterministic MAC addresses, so a rebuilt VM gets the identity the machine
//! config's link selectors expect.

use ring::digest::{SHA256, digest};

/// Locally administered unicast MAC from cluster, node and NIC index, upper-case
/// as Proxmox reports it.
pub fn derive_mac(cluster: &str, node: &str, nic: u8) -> String {
    let input = format!("talos-pve\0{cluster}\0{node}\0{nic}");
    let h = digest(&SHA256, input.as_bytes());
    let mut b = [0u8; 6];
    b.copy_from_slice(&h.as_ref()[..6]);
    // Bit 1 of the first octet = locally administered, bit 0 cleared = unicast.
    b[0] = (b[0] & 0xfc) | 0x02;
    format_mac(&b)
}

/// Parse `aa:bb:…`/`AA-BB-…` into canonical upper-case colon form.
pub fn normalize_mac(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut b = [0u8; 6];
    for (slot, p) in b.iter_mut().zip(&parts) {
        if p.len() != 2 {
            return None;
        }
        *slot = u8::from_str_radix(p, 16).ok()?;
    }
    Some(format_mac(&b))
}

fn format_mac(b: &[u8; 6]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_local_unicast_and_distinct() {
        let a = derive_mac("homelab", "talos-k8s-01", 0);
        assert_eq!(a, derive_mac("homelab", "talos-k8s-01", 0));
        assert_ne!(a, derive_mac("homelab", "talos-k8s-01", 1));
        assert_ne!(a, derive_mac("other", "talos-k8s-01", 0));
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(
            first & 0x03,
            0x02,
            "{a} must be locally administered unicast"
        );
    }

    #[test]
    fn normalizes_case_and_separators() {
        assert_eq!(
            normalize_mac("bc-24-11-00-16-20").as_deref(),
            Some("BC:24:11:00:16:20")
        );
        assert_eq!(normalize_mac("bc:24:11:00:16"), None);
        assert_eq!(normalize_mac("zz:24:11:00:16:20"), None);
    }
}

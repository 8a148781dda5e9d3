//! Before a machine config (which carries the cluster's CA keys) goes to a node in
//! maintenance mode — where the node cannot prove who it is — confirm the address
//! belongs to the VM we created: the guest agent of that VM reports an interface
//! with the planned MAC holding that address. The orchestrator supplies the facts
//! (Proxmox config + guest agent) through `IdentityCheck`.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// One interface as the QEMU guest agent reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestInterface {
    pub name: String,
    /// Any case, `:`-separated.
    pub mac: String,
    pub addresses: Vec<IpAddr>,
}

/// Supplied by the orchestrator: is `addr` really the VM planned for `node`?
pub trait IdentityCheck: Send + Sync {
    fn confirm<'a>(
        &'a self,
        node: &'a str,
        addr: IpAddr,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The decision: an interface with `expected_mac` holds `addr`, and no interface
/// with another MAC claims it too (a duplicate would mean a clash on the network).
pub fn check_identity(
    expected_mac: &str,
    addr: IpAddr,
    interfaces: &[GuestInterface],
) -> Result<(), String> {
    let norm = |m: &str| m.trim().to_ascii_lowercase().replace('-', ":");
    let want = norm(expected_mac);
    let ours: Vec<&GuestInterface> = interfaces.iter().filter(|i| norm(&i.mac) == want).collect();
    if ours.is_empty() {
        return Err(format!(
            "the guest agent reports no interface with MAC {want} (it reports {})",
            interfaces
                .iter()
                .map(|i| norm(&i.mac))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if !ours.iter().any(|i| i.addresses.contains(&addr)) {
        return Err(format!(
            "the interface with MAC {want} does not hold {addr} (it has {:?})",
            ours.iter().flat_map(|i| &i.addresses).collect::<Vec<_>>()
        ));
    }
    if let Some(other) = interfaces
        .iter()
        .find(|i| norm(&i.mac) != want && i.addresses.contains(&addr))
    {
        return Err(format!(
            "{addr} is also on interface {} with MAC {}",
            other.name,
            norm(&other.mac)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(mac: &str, addr: &str) -> GuestInterface {
        GuestInterface {
            name: "eth0".into(),
            mac: mac.into(),
            addresses: vec![addr.parse().unwrap()],
        }
    }

    #[test]
    fn matching_mac_and_address_passes_case_insensitively() {
        let ifs = [nic("bc:24:11:00:16:20", "10.8.16.20")];
        assert_eq!(
            check_identity("BC:24:11:00:16:20", "10.8.16.20".parse().unwrap(), &ifs),
            Ok(())
        );
    }

    #[test]
    fn wrong_mac_wrong_address_or_duplicate_is_refused() {
        let a: IpAddr = "10.8.16.20".parse().unwrap();
        let e = check_identity(
            "BC:24:11:00:16:21",
            a,
            &[nic("bc:24:11:00:16:20", "10.8.16.20")],
        );
        assert!(
            e.unwrap_err()
                .contains("no interface with MAC bc:24:11:00:16:21")
        );
        let e = check_identity(
            "BC:24:11:00:16:20",
            a,
            &[nic("bc:24:11:00:16:20", "10.8.16.99")],
        );
        assert!(e.unwrap_err().contains("does not hold 10.8.16.20"));
        let e = check_identity(
            "BC:24:11:00:16:20",
            a,
            &[
                nic("bc:24:11:00:16:20", "10.8.16.20"),
                nic("bc:24:11:00:16:99", "10.8.16.20"),
            ],
        );
        assert!(e.unwrap_err().contains("also on interface"));
    }
}

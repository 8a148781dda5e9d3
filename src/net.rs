//! Where a connection really goes. Production dials the address it is given; the
//! lab maps every simulated address (10.8.16.20:50000, …) to a loopback listener
//! and refuses, fail-closed, anything it has no mapping for. Every client
//! (Proxmox, Talos, Kubernetes) resolves through an `AddressBook` before dialing.
//!
//! It must never let a lab client reach a non-loopback address, and no client may
//! dial without resolving here first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use thiserror::Error;

/// Set to `1` to make even the direct address book refuse non-loopback targets
/// (tests and CI set it: they must never send traffic anywhere else).
pub const LOOPBACK_ONLY_ENV: &str = "TALOS_PVE_LOOPBACK_ONLY";

#[derive(Debug, Error, PartialEq)]
pub enum NetError {
    #[error(
        "lab: {0} has no loopback mapping; refusing to connect (the lab never dials real addresses)"
    )]
    NoMapping(SocketAddr),
    #[error("{0} is not a loopback address and {LOOPBACK_ONLY_ENV}=1 is set; refusing to connect")]
    NotLoopback(SocketAddr),
}

#[derive(Debug, Clone)]
pub enum AddressBook {
    Direct,
    Lab(Arc<RwLock<HashMap<SocketAddr, SocketAddr>>>),
}

impl AddressBook {
    pub fn direct() -> Self {
        AddressBook::Direct
    }

    pub fn lab() -> Self {
        AddressBook::Lab(Arc::default())
    }

    /// Lab only: route `virtual_addr` to the loopback `listener`.
    pub fn map(&self, virtual_addr: SocketAddr, listener: SocketAddr) {
        assert!(
            listener.ip().is_loopback(),
            "lab listeners bind loopback only, got {listener}"
        );
        if let AddressBook::Lab(m) = self {
            m.write()
                .expect("address map lock")
                .insert(virtual_addr, listener);
        }
    }

    /// Lab only: forget a mapping (the simulated machine is gone).
    pub fn unmap(&self, virtual_addr: SocketAddr) {
        if let AddressBook::Lab(m) = self {
            m.write().expect("address map lock").remove(&virtual_addr);
        }
    }

    pub fn is_lab(&self) -> bool {
        matches!(self, AddressBook::Lab(_))
    }

    /// The address to dial for `target`.
    pub fn resolve(&self, target: SocketAddr) -> Result<SocketAddr, NetError> {
        match self {
            AddressBook::Direct => {
                if std::env::var(LOOPBACK_ONLY_ENV).is_ok_and(|v| v == "1")
                    && !target.ip().is_loopback()
                {
                    return Err(NetError::NotLoopback(target));
                }
                Ok(target)
            }
            AddressBook::Lab(m) => {
                let got = m.read().expect("address map lock").get(&target).copied();
                match got {
                    Some(l) if l.ip().is_loopback() => Ok(l),
                    Some(l) => Err(NetError::NotLoopback(l)),
                    None if target.ip().is_loopback() => Ok(target),
                    None => Err(NetError::NoMapping(target)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_fails_closed_without_mapping() {
        let book = AddressBook::lab();
        let real: SocketAddr = "10.8.16.20:50000".parse().unwrap();
        assert_eq!(book.resolve(real), Err(NetError::NoMapping(real)));
        let lo: SocketAddr = "127.0.0.1:41000".parse().unwrap();
        book.map(real, lo);
        assert_eq!(book.resolve(real), Ok(lo));
        book.unmap(real);
        assert_eq!(book.resolve(real), Err(NetError::NoMapping(real)));
    }
}

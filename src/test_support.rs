//! Helpers for the unit tests inside `src/` (compiled only under `cfg(test)`): the
//! sample profile and the reference data, with the same skip/fail rule as
//! `tests/it/support.rs`. Never used by the binary.

use std::path::Path;

use crate::profile::Profile;

/// A named change to a profile: what a table-driven refusal test applies.
pub type Mutation = (&'static str, fn(&mut Profile));

/// `profiles/homelab.yaml`, loaded.
pub fn homelab() -> Profile {
    crate::profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/homelab.yaml"))
        .expect("profiles/homelab.yaml loads")
}

/// `profiles/one-network.yaml` (a flat LAN, one NIC per node), loaded.
pub fn one_network() -> Profile {
    crate::profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles/one-network.yaml"))
        .expect("profiles/one-network.yaml loads")
}

/// The text of `../shared/reference/<rel>`, or `None` with a printed reason when this
/// clone has no `shared/` beside it. Under `CI=true` a missing file is a failure.
pub fn reference(rel: &str) -> Option<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference")
        .join(rel);
    match std::fs::read_to_string(&p) {
        Ok(t) => Some(t),
        Err(_) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but {} is missing", p.display())
        }
        Err(_) => {
            eprintln!("skipped: {} not found", p.display());
            None
        }
    }
}

//! Shared helpers for the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The repository root (profiles/, embedded/).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn profile(name: &str) -> PathBuf {
    repo().join("profiles").join(name)
}

/// `../shared/reference/...`, or `None` with a printed reason when this clone has no
/// `shared/` beside it. Under `CI=true` a missing reference is a failure, not a skip.
pub fn reference(rel: &str) -> Option<PathBuf> {
    let p = repo().join("../shared/reference").join(rel);
    if p.exists() {
        return Some(p);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but the reference file {} is missing", p.display());
    }
    eprintln!(
        "skipped: {} not found (no ../shared beside this clone)",
        p.display()
    );
    None
}

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_talos-pve"))
}

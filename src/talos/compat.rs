//! Which Talos and Kubernetes versions go together, and which upgrades are allowed:
//! the rules of `siderolabs/talos` v1.13.9 `pkg/machinery/compatibility/` (Talos host →
//! installer table, Kubernetes range per Talos minor) and go-kubernetes v0.2.38
//! `kubernetes/upgrade/path.go` (same or next Kubernetes minor), plus the documented
//! "one Talos minor at a time" rule (siderolabs/docs `upgrading-talos.mdx`).
//! Pure: shared by the `upgrade` command and the lab nodes that enforce the same rules.

use std::fmt;

/// `major.minor.patch`, parsed tolerantly (`v` prefix, pre-release/build ignored, as
/// the upstream comparisons use major.minor.patch only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let core = s.split(['-', '+']).next()?;
        let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
        let v = Version {
            major: it.next()??,
            minor: it.next()??,
            patch: it.next().unwrap_or(Some(0))?,
        };
        it.next().is_none().then_some(v)
    }

    pub fn new(major: u32, minor: u32, patch: u32) -> Self {
        Self {
            major,
            minor,
            patch,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The Kubernetes minors a Talos release runs (`crate::formats` holds the table).
fn kubernetes_minors(talos: Version) -> Option<(u32, u32)> {
    (talos.major == 1)
        .then(|| crate::formats::kubernetes_minors(talos.minor))
        .flatten()
}

/// Whether a node running `talos` accepts Kubernetes `k8s` (what `RuntimeValidate`
/// checks on every config, `v1alpha1_validation.go` @v1.13.9 L1014-1079).
pub fn check_kubernetes(talos: Version, k8s: Version) -> Result<(), String> {
    let Some((lo, hi)) = kubernetes_minors(talos) else {
        return Err(format!(
            "compatibility with version {talos} is not supported"
        ));
    };
    if k8s.major != 1 || k8s.minor < lo {
        return Err(format!(
            "version of Kubernetes {k8s} is too old to be used with Talos {talos}"
        ));
    }
    if k8s.minor > hi {
        return Err(format!(
            "version of Kubernetes {k8s} is too new to be used with Talos {talos}"
        ));
    }
    Ok(())
}

/// The installer's pre-flight (`talos_version.go` @v1.13.9 L75-141): which host
/// versions an installer of `target` upgrades (minimum inclusive, maximum exclusive).
pub fn check_installer(host: Version, target: Version) -> Result<(), String> {
    let (min, max) = match (target.major, target.minor) {
        (1, 12) => (Version::new(1, 10, 0), Version::new(1, 14, 0)),
        (1, 13) => (Version::new(1, 11, 0), Version::new(1, 15, 0)),
        _ => return Err(format!("upgrades to version {target} are not supported")),
    };
    if host < min {
        return Err(format!(
            "host version {host} is too old to upgrade to Talos {target}"
        ));
    }
    if host >= max {
        return Err(format!(
            "host version {host} is too new to downgrade to Talos {target}"
        ));
    }
    Ok(())
}

/// talos-pve's Talos rule: the installer table allows more, but upstream tests and
/// documents adjacent minors only, and never a downgrade.
pub fn check_talos_path(from: Version, to: Version) -> Result<(), String> {
    check_installer(from, to)?;
    if to < from {
        return Err(format!(
            "Talos {from} → {to} is a downgrade; talos-pve only upgrades"
        ));
    }
    if to.major != from.major || to.minor > from.minor + 1 {
        return Err(format!(
            "Talos {from} → {to} skips a minor release; upgrade one minor at a time through the latest patch of each (e.g. v{}.{}.x first)",
            from.major,
            from.minor + 1
        ));
    }
    Ok(())
}

/// `upgrade-k8s`'s path rule (go-kubernetes `IsSupported`): same minor or the next one.
pub fn check_kubernetes_path(from: Version, to: Version) -> Result<(), String> {
    if to < from {
        return Err(format!(
            "Kubernetes {from} → {to} is a downgrade; talos-pve only upgrades"
        ));
    }
    if to.major != from.major || to.minor > from.minor + 1 {
        return Err(format!(
            "unsupported upgrade path 1.{}->1.{} (from \"{from}\" to \"{to}\"); upgrade one minor at a time",
            from.minor, to.minor
        ));
    }
    Ok(())
}

/// The tag after the last `:v` of an image reference (`ghcr.io/siderolabs/kubelet:v1.36.3`).
pub fn image_version(image: &str) -> Option<Version> {
    let tag = image.rsplit_once(":v")?.1;
    Version::parse(tag.split('@').next()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn parses_tolerantly() {
        assert_eq!(v("v1.13.9"), Version::new(1, 13, 9));
        assert_eq!(v("1.36"), Version::new(1, 36, 0));
        assert_eq!(v("v1.13.0-alpha.2"), Version::new(1, 13, 0));
        assert!(Version::parse("latest").is_none());
        assert!(Version::parse("1.2.3.4").is_none());
        assert_eq!(
            image_version("ghcr.io/siderolabs/kubelet:v1.35.4"),
            Some(v("1.35.4"))
        );
        assert_eq!(image_version("kubelet:latest"), None);
    }

    #[test]
    fn kubernetes_range_per_talos_minor() {
        assert!(check_kubernetes(v("1.12.11"), v("1.35.4")).is_ok());
        let e = check_kubernetes(v("1.12.11"), v("1.36.3")).unwrap_err();
        assert_eq!(
            e,
            "version of Kubernetes 1.36.3 is too new to be used with Talos 1.12.11"
        );
        assert!(check_kubernetes(v("1.13.9"), v("1.36.3")).is_ok());
        assert!(
            check_kubernetes(v("1.13.9"), v("1.30.1"))
                .unwrap_err()
                .contains("too old")
        );
        assert!(check_kubernetes(v("1.14.0"), v("1.36.3")).is_err());
    }

    #[test]
    fn installer_table_and_one_minor_rule() {
        assert!(check_installer(v("1.12.11"), v("1.13.9")).is_ok());
        assert!(
            check_installer(v("1.10.3"), v("1.13.9"))
                .unwrap_err()
                .contains("too old")
        );
        assert!(
            check_installer(v("1.12.0"), v("1.14.0"))
                .unwrap_err()
                .contains("not supported")
        );
        // The installer would take 1.11 → 1.13; talos-pve goes one minor at a time.
        assert!(check_installer(v("1.11.5"), v("1.13.9")).is_ok());
        assert!(
            check_talos_path(v("1.11.5"), v("1.13.9"))
                .unwrap_err()
                .contains("skips a minor")
        );
        assert!(check_talos_path(v("1.12.11"), v("1.13.9")).is_ok());
        assert!(check_talos_path(v("1.13.9"), v("1.13.9")).is_ok());
        assert!(
            check_talos_path(v("1.13.9"), v("1.12.11"))
                .unwrap_err()
                .contains("downgrade")
        );
    }

    #[test]
    fn kubernetes_path_is_same_or_next_minor() {
        assert!(check_kubernetes_path(v("1.35.4"), v("1.36.3")).is_ok());
        assert!(check_kubernetes_path(v("1.36.0"), v("1.36.3")).is_ok());
        let e = check_kubernetes_path(v("1.34.2"), v("1.36.3")).unwrap_err();
        assert!(e.starts_with("unsupported upgrade path 1.34->1.36"), "{e}");
        assert!(check_kubernetes_path(v("1.36.3"), v("1.35.4")).is_err());
    }
}

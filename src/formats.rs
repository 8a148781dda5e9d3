//! The value formats of the systems a profile value ends up in, as pure predicates:
//! Proxmox VE (`pve-common` `src/PVE/JSONSchema.pm` at 9.2.1, `pve-access-control`
//! `src/PVE/Auth/Plugin.pm`), Talos (`pkg/minimal/limits.go` at v1.13.9) and
//! Kubernetes (DNS-1123 names, semantic versions). The NET5xx rules (`values`) say
//! which field needs which format; these functions only answer "is this accepted".

use std::net::Ipv4Addr;

/// DNS-1123 label: 1-63 of `[a-z0-9-]`, alphanumeric at both ends. Kubernetes object
/// names, Talos `clusterName`; also what makes a cluster name a safe directory name.
pub fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A host name in a URL or certificate SAN: a DNS name (letters of either case) or
/// an IPv4 address; `wildcard` also allows a leading `*.` label (SANs only).
pub fn is_host(s: &str, wildcard: bool) -> bool {
    let s = if wildcard {
        s.strip_prefix("*.").unwrap_or(s)
    } else {
        s
    };
    if s.parse::<Ipv4Addr>().is_ok() {
        return true;
    }
    // An all-numeric last label is a mistyped address (`10.8.16.300`), not a name.
    let numeric_tld = s
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    !numeric_tld && is_dns_subdomain(&s.to_ascii_lowercase())
}

/// `pve-node` (`pve_verify_node_name`): a DNS label, either case.
pub fn is_pve_node(s: &str) -> bool {
    is_dns_label(&s.to_ascii_lowercase())
}

/// `pve-storage-id` (`parse_id`): at least 2 characters, `[a-z][a-z0-9._-]*[a-z0-9]`
/// (either case).
pub fn is_pve_storage_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `pve-bridge-id` (`parse_bridge_id`: `^[-_.\w\d]+$`), and a Linux interface name
/// (at most 15 bytes, `IFNAMSIZ` - 1), since the bridge is one.
pub fn is_pve_bridge(s: &str) -> bool {
    is_interface_name(s)
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A Linux interface name: 1-15 bytes, no `/`, whitespace or control characters,
/// not `.` or `..` (`dev_valid_name` in the kernel's `net/core/dev.c`).
pub fn is_interface_name(s: &str) -> bool {
    (1..=15).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && c != b'/' && c != b':')
}

/// PVE realm and token names: `[A-Za-z][A-Za-z0-9.\-_]+` (`$realm_regex`, which
/// `$token_subid_regex` reuses).
fn is_pve_realm(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphabetic()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

/// `USER@REALM!TOKENID` (`$token_full_regex`); the user part is `[^\s:/]+`. `=` is
/// refused too: the id travels in the `PVEAPIToken=ID=SECRET` header, where it
/// would move the split between id and secret.
pub fn is_pve_token_id(s: &str) -> bool {
    let Some((userid, token)) = s.rsplit_once('!') else {
        return false;
    };
    let Some((user, realm)) = userid.rsplit_once('@') else {
        return false;
    };
    !user.is_empty()
        && user
            .bytes()
            .all(|c| c.is_ascii_graphic() && !matches!(c, b':' | b'/' | b'=' | b'!'))
        && is_pve_realm(realm)
        && is_pve_realm(token)
}

/// `X.Y.Z` with an optional pre-release (`-beta.0`), digits without leading zeros:
/// the tag grammar of Talos and Kubernetes releases (semver 2.0 core).
pub fn semver(s: &str) -> Option<(u32, u32, u32)> {
    let (core, pre) = match s.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (s, None),
    };
    if let Some(p) = pre
        && (p.is_empty()
            || !p.split('.').all(|id| {
                !id.is_empty() && id.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            }))
    {
        return None;
    }
    let num = |t: &str| {
        let ok = !t.is_empty()
            && t.bytes().all(|c| c.is_ascii_digit())
            && (t == "0" || !t.starts_with('0'));
        ok.then(|| t.parse::<u32>().ok()).flatten()
    };
    let mut it = core.split('.');
    let v = (num(it.next()?)?, num(it.next()?)?, num(it.next()?)?);
    it.next().is_none().then_some(v)
}

/// Kubernetes minors a Talos minor runs: `pkg/machinery/compatibility/talos112`
/// (>= 1.30.0, < 1.35.99) and `talos113` (>= 1.31.0, < 1.36.99) at v1.13.9.
pub fn kubernetes_minors(talos_minor: u32) -> Option<(u32, u32)> {
    match talos_minor {
        12 => Some((30, 35)),
        13 => Some((31, 36)),
        _ => None,
    }
}

/// A block device path inside the VM: absolute under `/dev/`, plain components (no
/// `.`, `..` or empty ones) of `[A-Za-z0-9._:+@-]`, as in `/dev/sda` or
/// `/dev/disk/by-path/pci-0000:00:05.0-scsi-0:0:0:0`.
pub fn is_device_path(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("/dev/") else {
        return false;
    };
    s.len() <= 4096
        && rest.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:+@-".contains(&b))
        })
}

/// One kernel command-line argument (`key` or `key=value`): printable ASCII without
/// whitespace (a space would make two arguments) or quotes, and a key.
pub fn is_kernel_arg(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('=')
        && s.bytes()
            .all(|c| c.is_ascii_graphic() && c != b'"' && c != b'\'')
}

/// An Image Factory extension name: `owner/name` path of lower-case components
/// (`siderolabs/qemu-guest-agent`), each starting alphanumeric.
pub fn is_extension_name(s: &str) -> bool {
    s.len() <= 255
        && s.contains('/')
        && s.split('/').all(|c| {
            c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
                && c.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
                })
        })
}

/// An NTP source Talos accepts in `machine.time.servers`: a host name, an IPv4
/// address or a PTP device (`/dev/ptp0`).
pub fn is_time_server(s: &str) -> bool {
    if let Some(dev) = s.strip_prefix("/dev/ptp") {
        return !dev.is_empty() && dev.bytes().all(|b| b.is_ascii_digit());
    }
    is_host(s, false) && usable_unicast(s.parse().unwrap_or(Ipv4Addr::new(1, 1, 1, 1)))
}

/// An address a node can send to: not 0.0.0.0/8, loopback, multicast, broadcast or
/// the reserved 240.0.0.0/4 (a node's loopback runs no resolver or NTP server that
/// the profile could mean).
pub fn usable_unicast(ip: Ipv4Addr) -> bool {
    let first = ip.octets()[0];
    first != 0 && !ip.is_loopback() && !ip.is_multicast() && first < 240
}

/// `https://HOST[:PORT][/]` with a DNS or IPv4 host and a port 1-65535.
/// An Image Factory URL: an https origin, or a plain-http one (self-hosted;
/// accepted with a warning by lint).
pub fn factory_origin(url: &str) -> Result<(), &'static str> {
    match url.strip_prefix("http://") {
        Some(rest) => https_origin(&format!("https://{rest}")),
        None => https_origin(url),
    }
}

pub fn https_origin(url: &str) -> Result<(), &'static str> {
    let rest = url
        .strip_prefix("https://")
        .ok_or("is not an https:// URL")?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@']) {
        return Err("carries a path, query or user part");
    }
    // `[v6]` or `[v6]:port` (RFC 3986 §3.2.2); the port defaults like any other.
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or("has an unclosed `[`")?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err("has no valid IPv6 address between `[` and `]`");
            }
            match after {
                "" => (None, None),
                a => (
                    None,
                    Some(
                        a.strip_prefix(':')
                            .ok_or("has text after `]` that is not :PORT")?,
                    ),
                ),
            }
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(authority), None),
        },
    };
    if host.is_some_and(|h| !is_host(h, false)) {
        return Err("has no valid host name or IPv4 address");
    }
    match port {
        Some(p) if !matches!(p.parse::<u16>(), Ok(1..)) || p.starts_with('+') => {
            Err("has a port outside 1-65535")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn proxmox_ids() {
        assert!(is_pve_storage_id("local-lvm") && is_pve_storage_id("ceph.pool_1"));
        for bad in [
            "l",
            "local-lvm,cache=unsafe",
            "local/x",
            "1local",
            "local-",
            "a b",
        ] {
            assert!(!is_pve_storage_id(bad), "{bad}");
        }
        assert!(is_pve_bridge("vmbr0") && is_pve_bridge("vnet_1.2"));
        for bad in ["", "vmbr0,link_down=1", "vmbr 0", "averyveryverylongbridge"] {
            assert!(!is_pve_bridge(bad), "{bad}");
        }
        assert!(is_pve_node("pve-MS01-01") && !is_pve_node("pve_1") && !is_pve_node("a/b"));
        assert!(is_pve_token_id("root@pam!talos-pve"));
        assert!(is_pve_token_id("ops@corp.example@ad!ci_1"));
        for bad in [
            "root@pam",
            "root!x",
            "@pam!x",
            "root@pam!",
            "root@p!x",
            "root@pam!x y",
            "ro ot@pam!x",
            "root=1@pam!x",
        ] {
            assert!(!is_pve_token_id(bad), "{bad}");
        }
    }

    #[test]
    fn talos_values() {
        assert_eq!(semver("1.36.3"), Some((1, 36, 3)));
        assert_eq!(semver("1.13.0-beta.0"), Some((1, 13, 0)));
        for bad in [
            "latest", "", "1.36", "1.36.3 ", "v1.36.3", "1.036.3", "1.2.3.4", "1.2.3-",
        ] {
            assert_eq!(semver(bad), None, "{bad}");
        }
        assert!(is_device_path("/dev/sda") && is_device_path("/dev/disk/by-id/wwn-0x5:0"));
        for bad in [
            "/",
            "/dev/",
            "/dev/../etc/passwd",
            "/dev/./sda",
            "sda",
            "/dev/sd a",
        ] {
            assert!(!is_device_path(bad), "{bad}");
        }
        assert!(is_kernel_arg("console=ttyS0,115200") && is_kernel_arg("net.ifnames=0"));
        for bad in ["", "a b", "=x", "x\"y"] {
            assert!(!is_kernel_arg(bad), "{bad}");
        }
        assert!(is_extension_name("siderolabs/qemu-guest-agent"));
        for bad in [
            "../x",
            "siderolabs/../x",
            "qemu",
            "Sidero/x",
            "a//b",
            "a/b/",
        ] {
            assert!(!is_extension_name(bad), "{bad}");
        }
        assert!(is_time_server("time.cloudflare.com") && is_time_server("/dev/ptp0"));
        for bad in [
            "",
            "pool ntp.org",
            "0.0.0.0",
            "255.255.255.255",
            "-x",
            "/dev/ptp",
        ] {
            assert!(!is_time_server(bad), "{bad}");
        }
    }

    #[test]
    fn origins() {
        assert!(https_origin("https://10.8.16.10:8006").is_ok());
        assert!(https_origin("https://pve.lab.local/").is_ok());
        // IPv6 with and without a port (issue 13 item 10: PVE's 8006 is implied).
        assert!(https_origin("https://[fd00::1]").is_ok());
        assert!(https_origin("https://[fd00::1]:8006/").is_ok());
        for bad in [
            "https://[fd00::1",
            "https://[fd00::1]8006",
            "https://[nothex]",
            "https://fd00::1",
            "http://x",
            "https://x:0",
            "https://x:99999",
            "https://x:",
            "https://:8006",
            "https://x/api",
            "https://u@x",
            "https://x y",
        ] {
            assert!(https_origin(bad).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn semver_round_trips(a in 0u32..1000, b in 0u32..1000, c in 0u32..1000) {
            prop_assert_eq!(semver(&format!("{a}.{b}.{c}")), Some((a, b, c)));
        }

        #[test]
        fn accepted_ids_never_carry_property_string_syntax(s in "\\PC{0,20}") {
            for ok in [is_pve_storage_id(&s), is_pve_bridge(&s), is_pve_node(&s)] {
                prop_assert!(!ok || !s.contains([',', '=', ';', '/', ' ', ':']));
            }
        }

        #[test]
        fn device_paths_stay_under_dev(s in "/dev/[a-z./]{0,12}") {
            if is_device_path(&s) {
                prop_assert!(!s.split('/').any(|c| c == ".."));
            }
        }

        #[test]
        fn origin_checker_never_panics(s in "https://\\PC{0,30}") {
            let _ = https_origin(&s);
        }
    }
}

//! Parameter validation of the simulated PVE API, written from the facts of the
//! PVE schema (types, formats, enums, ranges) for the endpoints the lab serves.
//! Messages mirror PVE's, keyed by parameter as in its `errors` map.

use std::collections::BTreeMap;

use crate::formats::{is_pve_bridge, is_pve_node, is_pve_storage_id};
use crate::proxmox::propstr::{NET_MODELS, PropString, parse_bool};

/// The type of a top-level parameter or of a property-string key.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Bool,
    Int(i64, i64),
    Enum(&'static [&'static str]),
    DnsName,
    Node,
    StorageId,
    Tags,
    AddressList,
    Str(usize),
    Url,
    Mac,
    Ipv4,
    /// `<ipv4>/<prefix>` or `dhcp`.
    IpCidrOrDhcp,
    /// A volume `STORAGE:rest`.
    Volume,
    /// `order=dev;dev` content.
    DeviceList,
    Pattern(fn(&str) -> bool),
    Prop(&'static PropFormat),
}

#[derive(Debug)]
pub struct PropFormat {
    pub default_key: &'static str,
    pub keys: &'static [(&'static str, Kind)],
}

/// A top-level parameter; `indexed` = `name[n]` with n in 0..indexed.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
    pub indexed: u8,
}

const fn opt(name: &'static str, kind: Kind) -> Param {
    Param {
        name,
        kind,
        required: false,
        indexed: 0,
    }
}
const fn req(name: &'static str, kind: Kind) -> Param {
    Param {
        name,
        kind,
        required: true,
        indexed: 0,
    }
}
const fn idx(name: &'static str, n: u8, kind: Kind) -> Param {
    Param {
        name,
        kind,
        required: false,
        indexed: n,
    }
}

const CACHE: &[&str] = &["none", "writethrough", "writeback", "unsafe", "directsync"];
const DRIVE_KEYS: &[(&str, Kind)] = &[
    ("file", Kind::Volume),
    ("aio", Kind::Enum(&["native", "threads", "io_uring"])),
    ("backup", Kind::Bool),
    ("cache", Kind::Enum(CACHE)),
    ("discard", Kind::Enum(&["ignore", "on"])),
    (
        "format",
        Kind::Enum(&["raw", "cow", "qcow", "qed", "qcow2", "vmdk", "cloop"]),
    ),
    ("import-from", Kind::Volume),
    ("iothread", Kind::Bool),
    ("media", Kind::Enum(&["cdrom", "disk"])),
    ("replicate", Kind::Bool),
    ("ro", Kind::Bool),
    ("serial", Kind::Str(20)),
    ("size", Kind::Pattern(is_size)),
    ("snapshot", Kind::Bool),
    ("ssd", Kind::Bool),
    (
        "werror",
        Kind::Enum(&["enospc", "ignore", "report", "stop"]),
    ),
    ("rerror", Kind::Enum(&["ignore", "report", "stop"])),
];
static DRIVE: PropFormat = PropFormat {
    default_key: "file",
    keys: DRIVE_KEYS,
};
static EFIDISK: PropFormat = PropFormat {
    default_key: "file",
    keys: &[
        ("file", Kind::Volume),
        ("efitype", Kind::Enum(&["2m", "4m"])),
        ("pre-enrolled-keys", Kind::Bool),
        ("ms-cert", Kind::Enum(&["2011", "2023", "2023k"])),
        (
            "format",
            Kind::Enum(&["raw", "cow", "qcow", "qed", "qcow2", "vmdk", "cloop"]),
        ),
        ("size", Kind::Pattern(is_size)),
        ("import-from", Kind::Volume),
    ],
};
static NET: PropFormat = PropFormat {
    default_key: "model",
    keys: &[
        ("model", Kind::Enum(NET_MODELS)),
        ("bridge", Kind::Pattern(is_pve_bridge)),
        ("firewall", Kind::Bool),
        ("link_down", Kind::Bool),
        ("macaddr", Kind::Mac),
        ("mtu", Kind::Int(1, 65520)),
        ("queues", Kind::Int(0, 64)),
        ("rate", Kind::Pattern(is_number)),
        ("tag", Kind::Int(1, 4094)),
        ("trunks", Kind::Pattern(is_trunks)),
    ],
};
static IPCONFIG: PropFormat = PropFormat {
    default_key: "ip",
    keys: &[
        ("ip", Kind::IpCidrOrDhcp),
        ("gw", Kind::Ipv4),
        ("ip6", Kind::Str(64)),
        ("gw6", Kind::Str(64)),
    ],
};
static MEMORY: PropFormat = PropFormat {
    default_key: "current",
    keys: &[("current", Kind::Int(16, i64::MAX))],
};
static MACHINE: PropFormat = PropFormat {
    default_key: "type",
    keys: &[
        ("type", Kind::Pattern(is_machine)),
        ("viommu", Kind::Enum(&["intel", "virtio"])),
        ("enable-s3", Kind::Bool),
        ("enable-s4", Kind::Bool),
        ("aw-bits", Kind::Int(32, 64)),
    ],
};
static CPU: PropFormat = PropFormat {
    default_key: "cputype",
    keys: &[
        ("cputype", Kind::Str(64)),
        ("flags", Kind::Str(256)),
        ("hidden", Kind::Bool),
        ("hv-vendor-id", Kind::Str(12)),
        ("phys-bits", Kind::Str(4)),
        ("guest-phys-bits", Kind::Int(32, 64)),
        ("reported-model", Kind::Str(64)),
    ],
};
static BOOT: PropFormat = PropFormat {
    default_key: "legacy",
    keys: &[
        ("legacy", Kind::Pattern(is_legacy_boot)),
        ("order", Kind::DeviceList),
    ],
};
static AGENT: PropFormat = PropFormat {
    default_key: "enabled",
    keys: &[
        ("enabled", Kind::Bool),
        ("freeze-fs", Kind::Bool),
        ("fstrim_cloned_disks", Kind::Bool),
        ("type", Kind::Enum(&["virtio", "isa"])),
    ],
};
static VGA: PropFormat = PropFormat {
    default_key: "type",
    keys: &[
        (
            "type",
            Kind::Enum(&[
                "cirrus",
                "qxl",
                "qxl2",
                "qxl3",
                "qxl4",
                "none",
                "serial0",
                "serial1",
                "serial2",
                "serial3",
                "std",
                "virtio",
                "virtio-gl",
                "vmware",
            ]),
        ),
        ("memory", Kind::Int(4, 512)),
        ("clipboard", Kind::Enum(&["vnc"])),
    ],
};

/// The VM config keys the lab accepts on create and update.
pub const VM_CONFIG: &[Param] = &[
    opt("name", Kind::DnsName),
    opt("description", Kind::Str(8192)),
    opt("tags", Kind::Tags),
    opt(
        "ostype",
        Kind::Enum(&[
            "other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
            "l24", "l26", "solaris",
        ]),
    ),
    opt("machine", Kind::Prop(&MACHINE)),
    opt("bios", Kind::Enum(&["seabios", "ovmf"])),
    opt("efidisk0", Kind::Prop(&EFIDISK)),
    opt("cpu", Kind::Prop(&CPU)),
    opt("sockets", Kind::Int(1, 4096)),
    opt("cores", Kind::Int(1, 4096)),
    opt("memory", Kind::Prop(&MEMORY)),
    opt("balloon", Kind::Int(0, i64::MAX)),
    opt(
        "scsihw",
        Kind::Enum(&[
            "lsi",
            "lsi53c810",
            "virtio-scsi-pci",
            "virtio-scsi-single",
            "megasas",
            "pvscsi",
        ]),
    ),
    idx("scsi", 31, Kind::Prop(&DRIVE)),
    idx("ide", 4, Kind::Prop(&DRIVE)),
    idx("net", 32, Kind::Prop(&NET)),
    idx("ipconfig", 32, Kind::Prop(&IPCONFIG)),
    opt("nameserver", Kind::AddressList),
    opt("searchdomain", Kind::Str(256)),
    opt(
        "citype",
        Kind::Enum(&["configdrive2", "nocloud", "opennebula"]),
    ),
    opt("boot", Kind::Prop(&BOOT)),
    idx("serial", 4, Kind::Pattern(is_serial)),
    opt("vga", Kind::Prop(&VGA)),
    opt("agent", Kind::Prop(&AGENT)),
    opt("onboot", Kind::Bool),
    opt("numa", Kind::Bool),
];

pub const CREATE_EXTRA: &[Param] = &[
    req("vmid", Kind::Int(100, 999_999_999)),
    opt("start", Kind::Bool),
    opt("storage", Kind::StorageId),
    opt("pool", Kind::Str(64)),
];

pub const UPDATE_EXTRA: &[Param] = &[
    opt("delete", Kind::Str(4096)),
    opt("digest", Kind::Str(64)),
    opt("skiplock", Kind::Bool),
    opt("force", Kind::Bool),
];

pub const DOWNLOAD: &[Param] = &[
    req("url", Kind::Url),
    req("filename", Kind::Str(255)),
    req("content", Kind::Enum(&["iso", "vztmpl", "import"])),
    opt("checksum", Kind::Str(1024)),
    opt(
        "checksum-algorithm",
        Kind::Enum(&["md5", "sha1", "sha224", "sha256", "sha384", "sha512"]),
    ),
    opt("compression", Kind::Enum(&["gz", "lzo", "zst", "bz2"])),
    opt("verify-certificates", Kind::Bool),
];

/// `upload`: `filename` comes from the file part, `tmpfilename` only from the
/// trusted local port (pve-http-server AnyEvent.pm 1695), so it is refused here.
pub const UPLOAD: &[Param] = &[
    req("content", Kind::Enum(&["iso", "vztmpl", "import"])),
    opt("checksum", Kind::Str(1024)),
    opt(
        "checksum-algorithm",
        Kind::Enum(&["md5", "sha1", "sha224", "sha256", "sha384", "sha512"]),
    ),
];
pub const CONTENT_DELETE: &[Param] = &[opt("delay", Kind::Int(1, 30))];

pub const START: &[Param] = &[
    opt("timeout", Kind::Int(0, 86400)),
    opt("skiplock", Kind::Bool),
];
pub const STOP: &[Param] = &[
    opt("timeout", Kind::Int(0, i64::MAX)),
    opt("skiplock", Kind::Bool),
    opt("keepActive", Kind::Bool),
    opt("overrule-shutdown", Kind::Bool),
];
pub const SHUTDOWN: &[Param] = &[
    opt("timeout", Kind::Int(0, i64::MAX)),
    opt("skiplock", Kind::Bool),
    opt("keepActive", Kind::Bool),
    opt("forceStop", Kind::Bool),
];
/// `POST …/status/reboot`.
pub const REBOOT: &[Param] = &[opt("timeout", Kind::Int(0, i64::MAX))];
pub const DESTROY: &[Param] = &[
    opt("purge", Kind::Bool),
    opt("destroy-unreferenced-disks", Kind::Bool),
    opt("skiplock", Kind::Bool),
];
/// `GET /nodes/{node}/tasks`.
pub const TASK_LIST: &[Param] = &[
    opt("errors", Kind::Bool),
    opt("limit", Kind::Int(0, i64::MAX)),
    opt("since", Kind::Int(i64::MIN, i64::MAX)),
    opt("until", Kind::Int(i64::MIN, i64::MAX)),
    opt("source", Kind::Enum(&["archive", "active", "all"])),
    opt("start", Kind::Int(0, i64::MAX)),
    opt("statusfilter", Kind::Str(1024)),
    opt("typefilter", Kind::Str(1024)),
    opt("userfilter", Kind::Str(1024)),
    opt("vmid", Kind::Int(100, 999_999_999)),
];
pub const RESOURCES: &[Param] = &[opt("type", Kind::Enum(&["vm", "storage", "node", "sdn"]))];
pub const STORAGE_LIST: &[Param] = &[
    opt("content", Kind::Str(128)),
    opt("enabled", Kind::Bool),
    opt("format", Kind::Bool),
    opt("storage", Kind::StorageId),
    opt("target", Kind::Node),
];
pub const CONTENT_LIST: &[Param] = &[
    opt("content", Kind::Str(128)),
    opt("vmid", Kind::Int(100, 999_999_999)),
];
pub const NETWORK_LIST: &[Param] = &[opt(
    "type",
    Kind::Enum(&[
        "bridge",
        "bond",
        "eth",
        "alias",
        "vlan",
        "fabric",
        "OVSBridge",
        "OVSBond",
        "OVSPort",
        "OVSIntPort",
        "vnet",
        "any_bridge",
        "any_local_bridge",
        "include_sdn",
    ]),
)];
pub const CONFIG_GET: &[Param] = &[opt("current", Kind::Bool), opt("snapshot", Kind::Str(40))];
pub const PERMISSIONS: &[Param] = &[opt("path", Kind::Str(256)), opt("userid", Kind::Str(128))];
pub const NEXTID: &[Param] = &[opt("vmid", Kind::Int(100, 999_999_999))];
pub const TICKET: &[Param] = &[
    req("username", Kind::Str(64)),
    req("password", Kind::Str(4096)),
    opt("realm", Kind::Str(32)),
    opt("otp", Kind::Str(64)),
    opt("new-format", Kind::Bool),
];
pub const TASK_LOG: &[Param] = &[
    opt("start", Kind::Int(0, i64::MAX)),
    opt("limit", Kind::Int(0, i64::MAX)),
];
pub const NONE: &[Param] = &[];

/// Validate `params` against `spec`; the `errors` map PVE would answer with.
pub fn validate(
    params: &BTreeMap<String, String>,
    specs: &[&[Param]],
) -> Result<(), BTreeMap<String, String>> {
    let mut errors = BTreeMap::new();
    let all = || specs.iter().flat_map(|s| s.iter());
    for (k, v) in params {
        match all().find(|p| matches_name(p, k)) {
            None => {
                errors.insert(
                    k.clone(),
                    "property is not defined in schema and the schema does not allow additional properties".into(),
                );
            }
            Some(p) => {
                if let Err(e) = check(p.kind, v, true) {
                    errors.insert(k.clone(), e);
                }
            }
        }
    }
    for p in all().filter(|p| p.required) {
        if !params.contains_key(p.name) {
            errors.insert(
                p.name.into(),
                "property is missing and it is not optional".into(),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Path parameters are parameters too: PVE's router (`pve-http-server`
/// `PVE/APIServer/AnyEvent.pm` → `RESTHandler::find_handler`) binds `{node}`,
/// `{storage}`, `{vmid}` from the path and validates them against the method's
/// schema (`pve-node`, `pve-storage-id`, `pve-vmid`) with every other parameter.
pub fn validate_path(seg: &[&str]) -> Result<(), BTreeMap<String, String>> {
    let mut bound: Vec<(&str, &str, Kind)> = Vec::new();
    if let ["nodes", node, rest @ ..] = seg {
        bound.push(("node", node, Kind::Node));
        match rest {
            ["storage", storage, ..] => bound.push(("storage", storage, Kind::StorageId)),
            ["qemu", vmid, ..] => bound.push(("vmid", vmid, Kind::Int(100, 999_999_999))),
            _ => {}
        }
    }
    let errors: BTreeMap<String, String> = bound
        .into_iter()
        .filter_map(|(k, v, kind)| check(kind, v, true).err().map(|e| (k.to_owned(), e)))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

fn matches_name(p: &Param, k: &str) -> bool {
    if p.indexed == 0 {
        return p.name == k;
    }
    k.strip_prefix(p.name)
        .and_then(|n| n.parse::<u8>().ok().filter(|_| !n.starts_with('+')))
        .is_some_and(|n| n < p.indexed)
}

/// Check one value. `top` = a top-level parameter, where booleans are strictly 1/0.
pub fn check(kind: Kind, v: &str, top: bool) -> Result<(), String> {
    let ok = |b: bool, msg: &str| if b { Ok(()) } else { Err(msg.to_owned()) };
    match kind {
        Kind::Bool if top => ok(
            v == "0" || v == "1",
            &format!("type check ('boolean') failed - got '{v}'"),
        ),
        Kind::Bool => ok(
            parse_bool(v).is_some(),
            &format!("type check ('boolean') failed - got '{v}'"),
        ),
        Kind::Int(min, max) => {
            let n: i64 = v
                .parse()
                .map_err(|_| format!("type check ('integer') failed - got '{v}'"))?;
            if n < min {
                Err(format!("value must have a minimum value of {min}"))
            } else if n > max {
                Err(format!("value may not exceed {max}"))
            } else {
                Ok(())
            }
        }
        Kind::Enum(vals) => ok(
            vals.contains(&v),
            &format!(
                "value '{v}' does not have a value in the enumeration '{}'",
                vals.join(", ")
            ),
        ),
        Kind::DnsName => ok(is_dns_name(v), "value does not look like a valid DNS name"),
        Kind::Node => ok(is_pve_node(v), "value does not look like a valid node name"),
        Kind::StorageId => ok(
            is_pve_storage_id(v),
            &format!("storage ID '{v}' contains illegal characters"),
        ),
        Kind::Tags => ok(
            v.split([';', ',', ' '])
                .filter(|t| !t.is_empty())
                .all(is_tag),
            &format!("invalid format - invalid tag list '{v}'"),
        ),
        Kind::AddressList => ok(
            v.split([' ', ',', ';'])
                .filter(|t| !t.is_empty())
                .all(|a| a.parse::<std::net::IpAddr>().is_ok()),
            &format!("value '{v}' does not look like a valid address list"),
        ),
        Kind::Str(max) => ok(
            v.len() <= max,
            &format!("value may only be {max} characters long"),
        ),
        Kind::Url => ok(
            v.starts_with("https://") || v.starts_with("http://"),
            "value does not match the regex pattern",
        ),
        Kind::Mac => ok(is_mac(v), "value does not look like a valid MAC address"),
        Kind::Ipv4 => ok(
            v.parse::<std::net::Ipv4Addr>().is_ok(),
            "value does not look like a valid IPv4 address",
        ),
        Kind::IpCidrOrDhcp => ok(
            v == "dhcp" || v.parse::<ipnet::Ipv4Net>().is_ok(),
            "value does not look like a valid IPv4 network configuration",
        ),
        // `none` (an empty drive) and `cdrom` (the host's drive) are accepted as
        // is (qemu-server 9.2.6 `QemuServer.pm` `verify_volume_id_or_qm_path`).
        Kind::Volume => ok(
            v == "none"
                || v == "cdrom"
                || v.split_once(':')
                    .is_some_and(|(s, rest)| is_pve_storage_id(s) && !rest.is_empty())
                || v.starts_with('/'),
            &format!("unable to parse volume ID '{v}'"),
        ),
        Kind::DeviceList => ok(
            v.split(';').all(is_device),
            &format!("invalid format - invalid device '{v}'"),
        ),
        Kind::Pattern(f) => ok(f(v), &format!("value '{v}' does not match the pattern")),
        Kind::Prop(fmt) => check_prop(fmt, v),
    }
}

fn check_prop(fmt: &PropFormat, v: &str) -> Result<(), String> {
    let p = PropString::parse(v, fmt.default_key)
        .ok_or_else(|| format!("invalid format - unable to parse property string '{v}'"))?;
    for (k, val) in &p.0 {
        // `virtio=MAC` shorthand of net[n].
        if std::ptr::eq(fmt, &NET) && NET_MODELS.contains(&k.as_str()) {
            check(Kind::Mac, val, false)
                .map_err(|e| format!("invalid format - format error\n{k}: {e}"))?;
            continue;
        }
        let kind = fmt
            .keys
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| {
                format!("invalid format - invalid key in comma-separated list property: {k}")
            })?;
        check(kind, val, false).map_err(|e| format!("invalid format - format error\n{k}: {e}"))?;
    }
    Ok(())
}

/// `dns-name`: `pve-node`-shaped labels joined by dots.
pub fn is_dns_name(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_pve_node)
}

fn is_tag(t: &str) -> bool {
    let mut c = t.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphanumeric() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || "_-+.".contains(ch))
}

pub fn is_mac(s: &str) -> bool {
    let parts: Vec<&str> = s.split(':').collect();
    parts.len() == 6
        && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        // PVE refuses multicast addresses (I/G bit of the first octet).
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
}

fn is_size(s: &str) -> bool {
    crate::proxmox::propstr::parse_size(s).is_some()
}
fn is_number(s: &str) -> bool {
    s.parse::<f64>().is_ok()
}
fn is_trunks(s: &str) -> bool {
    s.split(';').all(|t| {
        t.split('-')
            .all(|n| n.parse::<u16>().is_ok_and(|n| (1..=4094).contains(&n)))
    })
}
fn is_machine(s: &str) -> bool {
    s == "pc" || s == "q35" || s.starts_with("pc-")
}
fn is_legacy_boot(s: &str) -> bool {
    (1..=4).contains(&s.len()) && s.chars().all(|c| "acdn".contains(c))
}
fn is_serial(s: &str) -> bool {
    s == "socket" || (s.starts_with("/dev/") && s.len() > 5)
}
fn is_device(d: &str) -> bool {
    let base = d.trim_end_matches(|c: char| c.is_ascii_digit());
    base.len() < d.len()
        && matches!(
            base,
            "ide" | "sata" | "scsi" | "virtio" | "net" | "efidisk" | "tpmstate" | "usb" | "hostpci"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(k: &str, v: &str) -> Result<(), BTreeMap<String, String>> {
        let mut m = BTreeMap::new();
        m.insert(k.to_owned(), v.to_owned());
        validate(&m, &[VM_CONFIG])
    }

    #[test]
    fn pve_rules_are_enforced() {
        assert!(one("onboot", "1").is_ok());
        let e = one("onboot", "true").unwrap_err();
        assert_eq!(e["onboot"], "type check ('boolean') failed - got 'true'");
        assert_eq!(
            one("name", "talos_k8s").unwrap_err()["name"],
            "value does not look like a valid DNS name"
        );
        assert!(one("name", "talos-k8s-01").is_ok());
        assert!(
            one(
                "net0",
                "virtio=BC:24:11:00:16:20,bridge=vmbr0,tag=16,firewall=0"
            )
            .is_ok()
        );
        assert!(one("net0", "virtio,bridge=vmbr0,tag=5000").is_err());
        assert!(
            one("net0", "virtio,bridge=vmbr0,vlan=16").unwrap_err()["net0"].contains("invalid key")
        );
        assert!(
            one("net0", "virtio=01:24:11:00:16:20").is_err(),
            "multicast MAC"
        );
        assert!(one("scsihw", "virtio-scsi-pcie").is_err());
        assert!(one("ipconfig0", "ip=10.8.16.20/24,gw=10.8.16.1").is_ok());
        assert!(one("ipconfig0", "ip=10.8.16.20,gw=10.8.16.1").is_err());
        assert!(one("efidisk0", "local-lvm:1,efitype=4m,pre-enrolled-keys=0").is_ok());
        assert!(one("boot", "order=scsi0;ide2").is_ok());
        assert!(one("scsi31", "local-lvm:1").is_err());
        assert!(one("bogus", "1").is_err());
        assert!(
            validate(&BTreeMap::new(), &[VM_CONFIG, CREATE_EXTRA])
                .unwrap_err()
                .contains_key("vmid")
        );
        // What PVE accepts, and what a pasted profile value turns into.
        assert!(one("net0", "virtio,bridge=vmbr0,firewall=0,link_down=1").is_ok());
        assert!(one("scsi0", "local-lvm:64,cache=unsafe").is_ok());
    }

    #[test]
    fn path_parameters_are_validated_like_body_parameters() {
        assert!(validate_path(&["nodes", "pve-1", "storage", "local", "content"]).is_ok());
        assert!(validate_path(&["nodes", "pve-1", "qemu", "120", "config"]).is_ok());
        let e = validate_path(&["nodes", "pve-1", "storage", "lo;cal", "content"]).unwrap_err();
        assert!(e["storage"].contains("illegal characters"), "{e:?}");
        let e = validate_path(&["nodes", "pve 1", "qemu", "99"]).unwrap_err();
        assert!(e.contains_key("node") && e.contains_key("vmid"), "{e:?}");
    }
}

//! Proxmox property strings (`virtio=BC:24:11:00:16:20,bridge=vmbr0,tag=16`).
//!
//! Parsed into an ordered key → value list, where a leading token without `=`
//! (or the `model=MAC` shorthand of `net[n]`) lands under the format's default
//! key. Comparing parsed maps instead of strings is what makes read-back
//! comparison robust against PVE's re-ordering and normalisation.
//!
//! Written through [`PropWriter`]: PVE property strings have no escaping
//! (`pve-common` `JSONSchema.pm` `parse_property_string` splits on `,` and then on
//! the first `=`), so a value holding `,` would add keys of its own
//! (`bridge=vmbr0,link_down=1`). The writer refuses such values instead of pasting them.

use std::collections::BTreeMap;
use std::fmt::Display;

use thiserror::Error;

use crate::formats::{is_pve_bridge, is_pve_storage_id};

/// A value that cannot be written into a property string.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "`{value}` cannot be the `{key}` of a Proxmox property string: {why}\n  fix: correct the profile value it comes from (`talos-pve lint` names the field)"
)]
pub struct PropError {
    pub key: String,
    pub value: String,
    pub why: &'static str,
}

/// Builds `[default,]key=value,…` from values that cannot change its structure.
#[derive(Debug, Default)]
pub struct PropWriter(String);

impl PropWriter {
    /// Start with the format's default-key value (a volume, a NIC model).
    pub fn first(value: impl Display) -> Result<Self, PropError> {
        let v = value.to_string();
        check_value("(default key)", &v)?;
        Ok(Self(v))
    }

    /// Start with `key=value`.
    pub fn new(key: &str, value: impl Display) -> Result<Self, PropError> {
        Self::default().with(key, value)
    }

    pub fn with(mut self, key: &str, value: impl Display) -> Result<Self, PropError> {
        let v = value.to_string();
        check_value(key, &v)?;
        if !self.0.is_empty() {
            self.0.push(',');
        }
        self.0.push_str(key);
        self.0.push('=');
        self.0.push_str(&v);
        Ok(self)
    }

    pub fn finish(self) -> String {
        self.0
    }
}

/// Printable ASCII without `,` (the key separator), `=` (the key/value separator)
/// or whitespace (PVE trims and splits lists on it).
fn check_value(key: &str, v: &str) -> Result<(), PropError> {
    let why = if v.is_empty() {
        "it is empty"
    } else if v.contains([',', '=']) {
        "`,` and `=` would add keys of their own (property strings have no escaping)"
    } else if !v.bytes().all(|b| b.is_ascii_graphic()) {
        "it contains whitespace, control or non-ASCII characters"
    } else {
        return Ok(());
    };
    Err(PropError {
        key: key.into(),
        value: v.escape_debug().to_string(),
        why,
    })
}

/// `STORAGE:NAME` (a volume ID, or `STORAGE:SIZE` for a new disk) with a
/// `pve-storage-id` storage and a name of plain components.
pub fn volume(storage: &str, name: impl Display) -> Result<String, PropError> {
    if !is_pve_storage_id(storage) {
        return Err(PropError {
            key: "storage".into(),
            value: storage.escape_debug().to_string(),
            why: "it is not a Proxmox storage ID (pve-storage-id)",
        });
    }
    let name = name.to_string();
    check_value("volume", &name)?;
    if name.contains(':') || name.split('/').any(|c| matches!(c, "" | "." | "..")) {
        return Err(PropError {
            key: "volume".into(),
            value: name.escape_debug().to_string(),
            why: "a volume name has no `:` and no empty, `.` or `..` components",
        });
    }
    Ok(format!("{storage}:{name}"))
}

/// A `pve-bridge-id` for `bridge=`.
pub fn bridge(id: &str) -> Result<&str, PropError> {
    if is_pve_bridge(id) {
        return Ok(id);
    }
    Err(PropError {
        key: "bridge".into(),
        value: id.escape_debug().to_string(),
        why: "it is not a Proxmox bridge ID (pve-bridge-id)",
    })
}

/// A parsed property string: keys in sorted order, values verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PropString(pub BTreeMap<String, String>);

impl PropString {
    /// Parse `s`; a key-less first token is stored under `default_key`.
    /// `None` when a token is empty or a key repeats (PVE rejects both).
    pub fn parse(s: &str, default_key: &str) -> Option<PropString> {
        let mut map = BTreeMap::new();
        for (i, tok) in s.split(',').enumerate() {
            let tok = tok.trim();
            if tok.is_empty() {
                return None;
            }
            let (k, v) = match tok.split_once('=') {
                Some((k, v)) => (k.to_owned(), v.to_owned()),
                None if i == 0 => (default_key.to_owned(), tok.to_owned()),
                None => return None,
            };
            if map.insert(k, v).is_some() {
                return None;
            }
        }
        Some(PropString(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Boolean values PVE accepts inside property strings.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).and_then(parse_bool)
    }
}

/// A parsed `net[n]`: the model and the MAC (from `model=MAC` or `macaddr=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetDevice {
    pub model: String,
    pub mac: Option<String>,
    pub bridge: Option<String>,
    pub tag: Option<u16>,
    pub firewall: bool,
}

/// NIC models PVE knows; the shorthand `model=MAC` uses one of them as key.
pub const NET_MODELS: &[&str] = &[
    "e1000",
    "e1000-82540em",
    "e1000-82544gc",
    "e1000-82545em",
    "e1000e",
    "i82551",
    "i82557b",
    "i82559er",
    "ne2k_isa",
    "ne2k_pci",
    "pcnet",
    "rtl8139",
    "virtio",
    "vmxnet3",
];

impl NetDevice {
    pub fn parse(s: &str) -> Option<NetDevice> {
        let p = PropString::parse(s, "model")?;
        let (model, mut mac) = match p.get("model") {
            Some(m) => (m.to_owned(), None),
            None => {
                let (m, mac) = p.0.iter().find(|(k, _)| NET_MODELS.contains(&k.as_str()))?;
                (m.clone(), Some(mac.to_ascii_uppercase()))
            }
        };
        if let Some(m) = p.get("macaddr") {
            mac = Some(m.to_ascii_uppercase());
        }
        Some(NetDevice {
            model,
            mac,
            bridge: p.get("bridge").map(str::to_owned),
            tag: match p.get("tag") {
                Some(t) => Some(t.parse().ok()?),
                None => None,
            },
            firewall: p.flag("firewall").unwrap_or(false),
        })
    }
}

/// `1|on|yes|true` / `0|off|no|false`, as PVE accepts inside property strings.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "on" | "yes" | "true" => Some(true),
        "0" | "off" | "no" | "false" => Some(false),
        _ => None,
    }
}

/// A volume size as PVE writes it (`64G`, `4M`, `512K`, bare bytes) in bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' | 'k' => (&s[..s.len() - 1], 1u64 << 10),
        'M' | 'm' => (&s[..s.len() - 1], 1 << 20),
        'G' | 'g' => (&s[..s.len() - 1], 1 << 30),
        'T' | 't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// Split `a;b;c` tag lists as PVE does (also `,` and spaces).
pub fn split_tags(s: &str) -> Vec<String> {
    s.split([';', ',', ' '])
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_shorthand_and_order_do_not_matter() {
        let a =
            NetDevice::parse("virtio=bc:24:11:2b:88:12,bridge=vmbr0,firewall=0,tag=16").unwrap();
        let b = NetDevice::parse("virtio,tag=16,macaddr=BC:24:11:2B:88:12,bridge=vmbr0").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.mac.as_deref(), Some("BC:24:11:2B:88:12"));
        assert_eq!(a.tag, Some(16));
        assert!(NetDevice::parse("virtio,tag=x").is_none());
    }

    #[test]
    fn property_strings_reject_duplicates_and_empty_tokens() {
        assert!(PropString::parse("a=1,a=2", "x").is_none());
        assert!(PropString::parse("a=1,,b=2", "x").is_none());
        let p = PropString::parse("local-lvm:64,discard=on,ssd=1", "file").unwrap();
        assert_eq!(p.get("file"), Some("local-lvm:64"));
        assert_eq!(p.flag("ssd"), Some(true));
        assert_eq!(p.flag("discard"), Some(true));
    }

    #[test]
    fn the_writer_refuses_values_that_would_add_keys() {
        let ok = PropWriter::first(volume("local-lvm", 64).unwrap())
            .and_then(|w| w.with("discard", "on"))
            .unwrap()
            .finish();
        assert_eq!(ok, "local-lvm:64,discard=on");
        let e = PropWriter::new("virtio", "BC:24:11:00:16:20")
            .and_then(|w| w.with("bridge", bridge("vmbr0,link_down=1")?))
            .unwrap_err();
        assert_eq!(e.key, "bridge");
        assert!(e.to_string().contains("\n  fix: "), "{e}");
        for bad in ["a,b=c", "a=b", "", "a b", "a\nb"] {
            assert!(PropWriter::new("k", bad).is_err(), "{bad:?}");
        }
        assert!(volume("local-lvm,cache=unsafe", 64).is_err());
        assert!(volume("local", "iso/../../etc/x").is_err());
        assert!(volume("local", "iso/a b.iso").is_err());
        assert_eq!(volume("local", "iso/t.iso").unwrap(), "local:iso/t.iso");
    }

    proptest::proptest! {
        #[test]
        fn written_strings_parse_back_to_what_was_written(
            first in "[a-z0-9:/._-]{1,12}",
            values in proptest::collection::vec("\\PC{0,8}", 1..4),
        ) {
            let keys = ["alpha", "beta", "gamma", "delta"];
            let mut w = PropWriter::first(&first);
            for (k, v) in keys.iter().zip(&values) {
                w = w.and_then(|w| w.with(k, v));
            }
            // Either refused, or it parses back to exactly these keys and values.
            if let Ok(w) = w {
                let parsed = PropString::parse(&w.finish(), "file").unwrap();
                proptest::prop_assert_eq!(parsed.0.len(), values.len() + 1);
                for (k, v) in keys.iter().zip(&values) {
                    proptest::prop_assert_eq!(parsed.get(k), Some(v.as_str()));
                }
            }
        }
    }

    #[test]
    fn sizes_and_tags() {
        assert_eq!(parse_size("64G"), Some(64 << 30));
        assert_eq!(parse_size("4M"), Some(4 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(
            split_tags("talos;talos-pve,controlplane"),
            ["talos", "talos-pve", "controlplane"]
        );
    }
}

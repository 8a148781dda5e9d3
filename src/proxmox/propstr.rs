//! Proxmox property strings (`virtio=BC:24:11:00:16:20,bridge=vmbr0,tag=16`).
//!
//! Parsed into an ordered key → value list, where a leading token without `=`
//! (or the `model=MAC` shorthand of `net[n]`) lands under the format's default
//! key. Comparing parsed maps instead of strings is what makes read-back
//! comparison robust against PVE's re-ordering and normalisation.

use std::collections::BTreeMap;

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

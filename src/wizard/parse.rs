//! Parsing and checking single wizard answers. Every function returns the reason a
//! person can act on, so the flow can show it and ask again.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::profile::{AddrRange, Device, DnsRecord, Reservation};

pub type Checked<T> = Result<T, String>;

pub fn ipv4(s: &str) -> Checked<Ipv4Addr> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{}` is not an IPv4 address (e.g. 10.8.16.20)", s.trim()))
}

/// A subnet in CIDR form; host bits must be zero so `10.8.16.5/24` is caught as a typo.
pub fn subnet(s: &str) -> Checked<Ipv4Net> {
    let s = s.trim();
    let net: Ipv4Net = s
        .parse()
        .map_err(|_| format!("`{s}` is not a subnet in CIDR form (e.g. 10.8.16.0/24)"))?;
    if net.trunc() != net {
        return Err(format!(
            "`{s}` has host bits set; the subnet is {}",
            net.trunc()
        ));
    }
    Ok(net)
}

pub fn range(s: &str) -> Checked<AddrRange> {
    s.trim().parse()
}

pub fn number<T: std::str::FromStr>(s: &str, what: &str) -> Checked<T> {
    s.trim()
        .parse()
        .map_err(|_| format!("`{}` is not a valid {what}", s.trim()))
}

pub fn vlan(s: &str) -> Checked<u16> {
    let v: u16 = number(s, "VLAN id")?;
    if (1..=4094).contains(&v) {
        Ok(v)
    } else {
        Err(format!("VLAN {v} is outside 1-4094"))
    }
}

/// A DNS label: Talos and Proxmox use these names as host names.
pub fn dns_label(s: &str) -> Checked<String> {
    let s = s.trim();
    let ok = crate::formats::is_dns_label(s);
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a valid name: use 1-63 lower-case letters, digits and inner hyphens"
        ))
    }
}

/// `https://host[:port]`; a bare host or `host:port` is completed to `https://host:8006`.
pub fn proxmox_endpoint(s: &str) -> Checked<String> {
    let s = s.trim().trim_end_matches('/');
    if s.starts_with("http://") {
        return Err("the Proxmox API must be reached over https://".into());
    }
    let rest = s.strip_prefix("https://").unwrap_or(s);
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err(format!(
            "`{s}` is not an endpoint; write https://HOST:8006 (e.g. https://10.8.16.10:8006)"
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, number::<u16>(p, "port")?),
        None => (rest, 8006),
    };
    if host.is_empty() {
        return Err(format!("`{s}` names no host"));
    }
    // The same rule as lint's NET502: `10.8.16.300` is a mistyped address, not a name.
    if !crate::formats::is_host(host, false) {
        return Err(format!(
            "`{host}` is neither an IPv4 address (four numbers 0-255) nor a host name"
        ));
    }
    if port == 0 {
        return Err("port 0 is not a port; Proxmox listens on 8006".into());
    }
    Ok(format!("https://{host}:{port}"))
}

/// Proxmox API token id `USER@REALM!TOKENID`.
pub fn token_id(s: &str) -> Checked<String> {
    let s = s.trim();
    if crate::formats::is_pve_token_id(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a token id; write USER@REALM!TOKENID (e.g. root@pam!talos-pve)"
        ))
    }
}

/// Optional SHA-256 fingerprint `AA:BB:…` (32 pairs); empty means "trust system CAs".
pub fn fingerprint(s: &str) -> Checked<Option<String>> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    let pairs: Vec<&str> = s.split(':').collect();
    let ok = pairs.len() == 32
        && pairs
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(Some(s.to_ascii_uppercase()))
    } else {
        Err("a fingerprint is 32 hex pairs separated by colons (Proxmox: Certificates → Fingerprint)".into())
    }
}

/// Comma-separated IPv4 addresses.
pub fn ipv4_list(s: &str) -> Checked<Vec<Ipv4Addr>> {
    items(s, ',').map(ipv4).collect()
}

/// `first-last=purpose; …`, with the word `dhcp` (or `[dhcp]`, as it is written back)
/// after the purpose marking a DHCP pool; typed alone it is the purpose too.
pub fn reservations(s: &str) -> Checked<Vec<Reservation>> {
    items(s, ';')
        .map(|item| {
            let (r, purpose) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}`: write first-last=purpose"))?;
            let purpose = purpose.trim();
            let lower = purpose.to_ascii_lowercase();
            let marker = ["[dhcp]", "dhcp"].into_iter().find(|m| {
                lower.strip_suffix(m).is_some_and(|before| {
                    before.is_empty() || before.ends_with(char::is_whitespace)
                })
            });
            let (purpose, dhcp) = match marker {
                Some(m) => match purpose[..purpose.len() - m.len()].trim() {
                    "" => ("DHCP pool", true),
                    p => (p, true),
                },
                None => (purpose, false),
            };
            if purpose.is_empty() {
                return Err(format!("`{item}`: the purpose is empty"));
            }
            Ok(Reservation {
                range: range(r)?,
                purpose: purpose.to_owned(),
                dhcp,
            })
        })
        .collect()
}

/// `name=address [kind]; …` (the kind is free text, e.g. `vPro/AMT`).
pub fn devices(s: &str) -> Checked<Vec<Device>> {
    items(s, ';')
        .map(|item| {
            let (name, rest) = item
                .split_once('=')
                .ok_or_else(|| format!("`{item}`: write name=address [kind]"))?;
            let rest = rest.trim();
            let (addr, kind) = match rest.split_once(char::is_whitespace) {
                Some((a, k)) => (a, Some(k.trim().to_owned())),
                None => (rest, None),
            };
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("`{item}`: the name is empty"));
            }
            Ok(Device {
                name: name.to_owned(),
                address: ipv4(addr)?,
                kind,
            })
        })
        .collect()
}

/// `name=address; …`.
pub fn dns_records(s: &str) -> Checked<Vec<DnsRecord>> {
    devices(s)?
        .into_iter()
        .map(|d| match d.kind {
            Some(k) => Err(format!("`{}`: unexpected `{k}` after the address", d.name)),
            None => Ok(DnsRecord {
                name: d.name,
                address: d.address,
            }),
        })
        .collect()
}

pub fn reservations_text(r: &[Reservation]) -> String {
    r.iter()
        .map(|r| {
            let dhcp = if r.dhcp { " [dhcp]" } else { "" };
            format!("{}={}{dhcp}", r.range, r.purpose)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn devices_text(d: &[Device]) -> String {
    d.iter()
        .map(|d| match &d.kind {
            Some(k) => format!("{}={} {k}", d.name, d.address),
            None => format!("{}={}", d.name, d.address),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn records_text(r: &[DnsRecord]) -> String {
    r.iter()
        .map(|r| format!("{}={}", r.name, r.address))
        .collect::<Vec<_>>()
        .join("; ")
}

pub fn join<T: std::fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A usable host address of `net`: inside, not the network or broadcast address, not the gateway.
pub fn host_in(ip: Ipv4Addr, net: &Ipv4Net, gateway: Option<Ipv4Addr>) -> Checked<Ipv4Addr> {
    if !net.contains(&ip) {
        return Err(format!("{ip} is outside {net}"));
    }
    if net.prefix_len() < 31 && (ip == net.network() || ip == net.broadcast()) {
        return Err(format!("{ip} is the network or broadcast address of {net}"));
    }
    if gateway == Some(ip) {
        return Err(format!(
            "{ip} is the gateway of {net}; two hosts answering for one address break the segment"
        ));
    }
    Ok(ip)
}

fn items(s: &str, sep: char) -> impl Iterator<Item = &str> {
    s.split(sep).map(str::trim).filter(|x| !x.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnet_rejects_host_bits_and_garbage() {
        assert_eq!(subnet("10.8.16.0/24").unwrap().to_string(), "10.8.16.0/24");
        assert!(subnet("10.8.16.5/24").unwrap_err().contains("10.8.16.0/24"));
        assert!(subnet("10.8.16/24").is_err());
    }

    #[test]
    fn endpoint_is_completed_and_http_refused() {
        assert_eq!(
            proxmox_endpoint("10.8.16.10").unwrap(),
            "https://10.8.16.10:8006"
        );
        assert_eq!(
            proxmox_endpoint("https://pve:8443/").unwrap(),
            "https://pve:8443"
        );
        assert!(proxmox_endpoint("http://pve:8006").is_err());
        assert!(proxmox_endpoint("https://pve:port").is_err());
        let e = proxmox_endpoint("https://10.8.16.300:8006").unwrap_err();
        assert!(
            e.contains("`10.8.16.300` is neither an IPv4 address"),
            "{e}"
        );
        assert!(proxmox_endpoint("https://pve_1:8006").is_err());
        assert!(proxmox_endpoint("https://pve:0").is_err());
    }

    #[test]
    fn token_and_fingerprint() {
        assert!(token_id("root@pam!talos-pve").is_ok());
        assert!(token_id("root@pam").is_err());
        assert_eq!(fingerprint(" ").unwrap(), None);
        let fp = vec!["ab"; 32].join(":");
        assert_eq!(fingerprint(&fp).unwrap().unwrap(), fp.to_uppercase());
        assert!(fingerprint("AB:CD").is_err());
    }

    #[test]
    fn lists_round_trip_through_text() {
        let r = reservations("10.0.1.101-10.0.1.200=DHCP pool for clients [dhcp]; 10.0.1.2-10.0.1.50=Network infrastructure (switches, APs, controllers)").unwrap();
        assert!(r[0].dhcp && !r[1].dhcp);
        // Typed without brackets, the marker is not silently part of the purpose.
        let typed =
            reservations("10.0.1.101-10.0.1.200=clients DHCP; 10.0.1.2-10.0.1.9=dhcp").unwrap();
        assert_eq!(
            (typed[0].purpose.as_str(), typed[0].dhcp),
            ("clients", true)
        );
        assert_eq!(
            (typed[1].purpose.as_str(), typed[1].dhcp),
            ("DHCP pool", true)
        );
        assert!(!reservations("10.0.1.2-10.0.1.9=nodhcp").unwrap()[0].dhcp);
        assert_eq!(
            r[1].purpose,
            "Network infrastructure (switches, APs, controllers)"
        );
        assert_eq!(reservations(&reservations_text(&r)).unwrap(), r);
        let d = devices("vpro=10.8.16.190 vPro/AMT; sw=10.0.1.80").unwrap();
        assert_eq!(d[0].kind.as_deref(), Some("vPro/AMT"));
        assert_eq!(d[1].kind, None);
        assert_eq!(devices(&devices_text(&d)).unwrap(), d);
        assert!(dns_records("k8s-api=10.8.16.20 extra").is_err());
        assert!(reservations("10.0.1.9-10.0.1.2=backwards").is_err());
    }

    #[test]
    fn host_address_checks() {
        let net = subnet("10.8.28.0/22").unwrap();
        let gw = Some(ipv4("10.8.28.1").unwrap());
        assert!(host_in(ipv4("10.8.28.20").unwrap(), &net, gw).is_ok());
        assert!(
            host_in(ipv4("10.8.28.1").unwrap(), &net, gw)
                .unwrap_err()
                .contains("gateway")
        );
        assert!(
            host_in(ipv4("10.8.31.255").unwrap(), &net, gw)
                .unwrap_err()
                .contains("broadcast")
        );
        assert!(
            host_in(ipv4("10.8.32.1").unwrap(), &net, gw)
                .unwrap_err()
                .contains("outside")
        );
    }
}

//! The `switches` section names devices and hosts declared elsewhere in the profile;
//! a name that points at nothing is refused when the profile is read, so the physical
//! diagram never draws a switch or host the profile does not have.

use super::types::Profile;

/// A profile the loader refuses although it parses: what is wrong where
/// (`switches[1].uplink`), and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
    pub fix: String,
}

/// The first dangling or contradictory name in `switches`, if any.
pub fn refusal(p: &Profile) -> Option<Refusal> {
    let is_switch = |name: &str| {
        p.networks
            .iter()
            .flat_map(|n| &n.devices)
            .any(|d| d.name == name && d.kind.as_deref() == Some("switch"))
    };
    let is_host = |name: &str| p.proxmox.hosts.iter().any(|h| h.name == name);
    for (i, s) in p.switches.iter().enumerate() {
        let at = |field: &str, message: String, fix: &str| Refusal {
            field: format!("switches[{i}].{field}"),
            message,
            fix: fix.into(),
        };
        if !is_switch(&s.name) {
            return Some(at(
                "name",
                format!("`{}` is not a device of kind `switch`", s.name),
                "list the switch under its network's `devices` with `kind: switch`, or use that name here",
            ));
        }
        if p.switches[..i].iter().any(|o| o.name == s.name) {
            return Some(at(
                "name",
                format!("switch `{}` is described twice", s.name),
                "merge the two entries",
            ));
        }
        if let Some(up) = &s.uplink
            && (up == &s.name || !p.switches.iter().any(|o| &o.name == up))
        {
            return Some(at(
                "uplink",
                format!("`{up}` is not another switch of `switches`"),
                "name another entry of `switches`, or drop `uplink` when this switch goes to the gateway",
            ));
        }
        for (field, hosts) in [("hosts", &s.hosts), ("storage", &s.storage)] {
            if let Some((j, h)) = hosts.iter().enumerate().find(|(_, h)| !is_host(h)) {
                return Some(at(
                    &format!("{field}[{j}]"),
                    format!("no Proxmox host is named `{h}`"),
                    "use a name from `proxmox.hosts`",
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Switch;

    fn switch(name: &str, uplink: Option<&str>, hosts: &[&str]) -> Switch {
        Switch {
            name: name.into(),
            uplink: uplink.map(Into::into),
            hosts: hosts.iter().map(|h| (*h).into()).collect(),
            storage: vec![],
        }
    }

    #[test]
    fn names_must_point_at_declared_switches_and_hosts() {
        let mut p = crate::test_support::homelab();
        let core = "Enterprise-24-PoE-Main";
        let server = "USW-Enterprise-8-PoE-Server";
        p.switches = vec![
            switch(core, None, &[]),
            switch(server, Some(core), &["pve-ms01-01"]),
        ];
        assert_eq!(refusal(&p), None);
        let field = |p: &Profile| refusal(p).map(|r| r.field);
        p.switches[1].uplink = Some(server.into());
        assert_eq!(field(&p).as_deref(), Some("switches[1].uplink"));
        p.switches[1].uplink = Some("UDM-Pro".into());
        assert_eq!(field(&p).as_deref(), Some("switches[1].uplink"));
        p.switches[1].uplink = None;
        p.switches[1].hosts.push("pve-nope".into());
        assert_eq!(field(&p).as_deref(), Some("switches[1].hosts[1]"));
        p.switches[1] = switch("pve-ms01-01-vpro", None, &[]);
        assert_eq!(
            field(&p).as_deref(),
            Some("switches[1].name"),
            "an oob device is no switch"
        );
        p.switches[1] = switch(core, None, &[]);
        assert_eq!(field(&p).as_deref(), Some("switches[1].name"));
    }
}

//! Task identifiers (UPID) and task exit statuses.
//!
//! `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:` — the node field
//! says where to poll, so it is parsed rather than trusted from the caller.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub pid: u32,
    pub pstart: u64,
    pub starttime: u32,
    pub kind: String,
    pub id: String,
    pub user: String,
    raw: String,
}

impl Upid {
    pub fn parse(s: &str) -> Option<Upid> {
        let rest = s.strip_prefix("UPID:")?.strip_suffix(':')?;
        let f: Vec<&str> = rest.split(':').collect();
        let [node, pid, pstart, start, kind, id, user] = f.as_slice() else {
            return None;
        };
        let hex = |v: &str, lens: &[usize]| {
            (lens.contains(&v.len()) && v.chars().all(|c| c.is_ascii_hexdigit())).then_some(())
        };
        hex(pid, &[8])?;
        hex(pstart, &[8, 9])?;
        hex(start, &[8])?;
        let node_ok = !node.is_empty()
            && node.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !node.starts_with('-')
            && !node.ends_with('-');
        let field_ok = |v: &str| !v.chars().any(|c| c.is_whitespace() || c == '/');
        if !node_ok
            || kind.is_empty()
            || user.is_empty()
            || ![kind, id, user].iter().all(|v| field_ok(v))
        {
            return None;
        }
        Some(Upid {
            node: (*node).to_owned(),
            pid: u32::from_str_radix(pid, 16).ok()?,
            pstart: u64::from_str_radix(pstart, 16).ok()?,
            starttime: u32::from_str_radix(start, 16).ok()?,
            kind: (*kind).to_owned(),
            id: (*id).to_owned(),
            user: (*user).to_owned(),
            raw: s.to_owned(),
        })
    }

    /// Build a UPID (the lab issues them).
    pub fn new(
        node: &str,
        pid: u32,
        pstart: u64,
        starttime: u32,
        kind: &str,
        id: &str,
        user: &str,
    ) -> Upid {
        let raw = format!("UPID:{node}:{pid:08X}:{pstart:08X}:{starttime:08X}:{kind}:{id}:{user}:");
        Upid {
            node: node.into(),
            pid,
            pstart,
            starttime,
            kind: kind.into(),
            id: id.into(),
            user: user.into(),
            raw,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }
}

impl fmt::Display for Upid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// `OK` and `WARNINGS: n` are success; anything else is the task's error message.
pub fn exit_ok(exitstatus: &str) -> bool {
    exitstatus == "OK" || exitstatus.starts_with("WARNINGS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_task_upid() {
        let u = Upid::parse(
            "UPID:pve:00001ED0:00035693:66343A23:qmshutdown:100:terraform@pve!provider:",
        )
        .unwrap();
        assert_eq!(u.node, "pve");
        assert_eq!(u.kind, "qmshutdown");
        assert_eq!(u.id, "100");
        assert_eq!(u.user, "terraform@pve!provider");
        assert_eq!(u.pid, 0x1ED0);
        let made = Upid::new(
            "pve-ms01-01",
            7,
            0x35693,
            0x66343A23,
            "qmcreate",
            "",
            "root@pam!x",
        );
        assert_eq!(Upid::parse(made.as_str()), Some(made));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "UPID:pve:1ED0:00035693:66343A23:qmstart:100:root@pam:",
            "UPID:pve:00001ED0:00035693:66343A23:qmstart:100:root@pam",
            "UPID:-pve:00001ED0:00035693:66343A23:qmstart:100:root@pam:",
            "UPID:pve:00001ED0:00035693:66343A23::100:root@pam:",
            "",
        ] {
            assert!(Upid::parse(bad).is_none(), "{bad}");
        }
        assert!(exit_ok("WARNINGS: 2"));
        assert!(!exit_ok("unexpected status"));
    }
}

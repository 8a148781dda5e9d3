//! Access family: the ticket or API token each call carries and what its ACLs
//! grant (`POST /access/ticket`, `GET /access/permissions`).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Lab, Reply, Request, random_hex, schema};
use crate::lab::proxmox::LabAcl;

/// The privileges `acls` give on `path`, as PVE evaluates them
/// (pve-access-control `AccessControl.pm` 1788-1895; proxmox-semantics §4.1):
/// walking from `/` down to `path`, the ACLs of a level replace what was collected
/// above; an ACL counts on an intermediate level only with `propagate`, on `path`
/// itself always. Value: the granting ACL's propagate flag.
fn effective_privileges(acls: &[LabAcl], path: &str) -> BTreeMap<String, u8> {
    let mut levels = vec!["/".to_owned()];
    let mut cur = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        cur.push('/');
        cur.push_str(seg);
        levels.push(cur.clone());
    }
    let mut got = BTreeMap::new();
    let last = levels.len() - 1;
    for (i, level) in levels.iter().enumerate() {
        let here: Vec<&LabAcl> = acls
            .iter()
            .filter(|a| a.path == *level)
            .filter(|a| i == last || a.propagate)
            .collect();
        if !here.is_empty() {
            got.clear();
            for a in here {
                for p in &a.privileges {
                    got.insert(p.clone(), u8::from(a.propagate));
                }
            }
        }
    }
    got
}

/// All privileges a token may hold (what `None` grants).
const ALL_PRIVS: &[&str] = &[
    "VM.Allocate",
    "VM.Audit",
    "VM.PowerMgmt",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.GuestAgent.Audit",
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "SDN.Use",
    "Sys.Audit",
    "Sys.Modify",
    "Sys.AccessNetwork",
];

impl Lab {
    pub(super) fn authenticate(&self, req: &Request) -> Result<String, Reply> {
        let st = self.state.lock().expect("lab state");
        if let Some(a) = &req.authorization
            && let Some(rest) = a.strip_prefix("PVEAPIToken=")
        {
            let (id, secret) = rest
                .split_once(['=', ' '])
                .ok_or_else(|| Reply::err(401, "authentication failure"))?;
            if id == st.token_id && secret == st.token_secret {
                return Ok(id.to_owned());
            }
            return Err(Reply::err(401, "authentication failure"));
        }
        let ticket = req.cookie.as_deref().and_then(|c| {
            c.split(';')
                .filter_map(|kv| kv.trim().strip_prefix("PVEAuthCookie="))
                .next()
        });
        if let Some(t) = ticket {
            let tickets = self.tickets.lock().expect("lab tickets");
            let csrf = tickets
                .get(t)
                .ok_or_else(|| Reply::err(401, "authentication failure"))?;
            if req.method != "GET" && req.csrf.as_deref() != Some(csrf.as_str()) {
                return Err(Reply::err(401, "Permission denied - invalid csrf token"));
            }
            let user = st.token_id.split('!').next().unwrap_or_default().to_owned();
            return Ok(user);
        }
        Err(Reply::err(401, "No ticket"))
    }

    pub(super) fn ticket(&self, params: &BTreeMap<String, String>) -> Reply {
        if let Err(e) = schema::validate(params, &[schema::TICKET]) {
            return Reply::params(e);
        }
        let st = self.state.lock().expect("lab state");
        let user = st.token_id.split('!').next().unwrap_or_default().to_owned();
        let cfg = self.config.lock().expect("lab config");
        let ok = params.get("username") == Some(&user)
            && cfg.password.is_some()
            && params.get("password") == cfg.password.as_ref();
        if !ok {
            return Reply::err(401, "authentication failure");
        }
        let ticket = format!("PVE:{user}:{}", random_hex(16));
        let csrf = random_hex(16);
        self.tickets
            .lock()
            .expect("lab tickets")
            .insert(ticket.clone(), csrf.clone());
        Reply::data(json!({"username": user, "ticket": ticket, "CSRFPreventionToken": csrf}))
    }

    /// The token's privileges on `path` (privilege → propagate flag).
    fn privileges(&self, path: &str) -> BTreeMap<String, u8> {
        let cfg = self.config.lock().expect("lab config");
        if cfg.acls.is_empty() {
            let all = || ALL_PRIVS.iter().map(|s| s.to_string()).collect();
            let privileges = cfg.token_privileges.clone().unwrap_or_else(all);
            let root = LabAcl {
                path: "/".into(),
                privileges,
                propagate: true,
            };
            return effective_privileges(&[root], path);
        }
        effective_privileges(&cfg.acls, path)
    }

    pub(super) fn has_privilege(&self, path: &str, privilege: &str) -> bool {
        self.privileges(path).contains_key(privilege)
    }

    /// `GET /access/permissions` (pve-access-control `API2/AccessControl.pm`
    /// 510-574): with `path`, that path evaluated; without, `/` and the ACL paths.
    pub(super) fn permissions(&self, path: Option<&String>) -> Reply {
        let paths: Vec<String> = match path {
            Some(p) => vec![p.clone()],
            None => {
                let cfg = self.config.lock().expect("lab config");
                std::iter::once("/".to_owned())
                    .chain(cfg.acls.iter().map(|a| a.path.clone()))
                    .collect()
            }
        };
        let map: serde_json::Map<String, Value> = paths
            .into_iter()
            .map(|p| {
                let privs = self.privileges(&p);
                (p, json!(privs))
            })
            .collect();
        Reply::data(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_acl_wins_and_propagate_only_counts_above_the_path() {
        let acl = |path: &str, privs: &[&str], propagate: bool| LabAcl {
            path: path.into(),
            privileges: privs.iter().map(|p| p.to_string()).collect(),
            propagate,
        };
        let acls = [
            acl("/", &["Sys.Audit", "Datastore.Audit"], true),
            acl("/storage/local", &["Datastore.AllocateTemplate"], true),
            acl("/vms", &["VM.Audit"], false),
        ];
        let keys = |p: &str| {
            effective_privileges(&acls, p)
                .into_keys()
                .collect::<Vec<_>>()
        };
        // A role on /storage/local hides the broader one on / for that path.
        assert_eq!(keys("/storage/local"), ["Datastore.AllocateTemplate"]);
        assert_eq!(keys("/storage/local-lvm"), ["Datastore.Audit", "Sys.Audit"]);
        // propagate 0: granted on /vms itself (value 0), not below; / shows through.
        assert_eq!(effective_privileges(&acls, "/vms")["VM.Audit"], 0);
        assert_eq!(keys("/vms/120"), ["Datastore.Audit", "Sys.Audit"]);
    }
}

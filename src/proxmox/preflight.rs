//! Preflight: can this token, on these hosts, provision this plan? Read-only;
//! returns a structured report of checks (ok / warning / failure, with fixes).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use super::client::{Client, boolean, int, node_path, params, text};
use super::error::PveError;
use super::inventory::{self, marker};
use crate::plan::{NodePlan, Plan};
use crate::profile::{NetworkRole, Profile};

/// Deleting a node's cidata volume once it runs (on the ISO storage). Without it
/// the volume is overwritten with one holding no key material, and a warning says
/// to delete it by hand.
pub const DELETE_PRIVILEGE: &str = "Datastore.Allocate";

/// Privileges the installer token needs, and why.
pub const REQUIRED_PRIVILEGES: &[(&str, &str)] = &[
    ("VM.Allocate", "create and delete the VMs"),
    ("VM.Audit", "read VM configs and status"),
    (
        "VM.PowerMgmt",
        "start the VMs once their cidata is attached, stop them",
    ),
    (
        "VM.Config.CDROM",
        "attach the Talos ISO and each node's cidata volume",
    ),
    ("VM.Config.CPU", "set cpu=host and cores"),
    ("VM.Config.Disk", "allocate the system and EFI disks"),
    ("VM.Config.HWType", "set machine, bios, scsihw"),
    ("VM.Config.Memory", "set memory and balloon"),
    ("VM.Config.Network", "add the two NICs"),
    (
        "VM.Config.Options",
        "set name, tags, description, boot order",
    ),
    (
        "Datastore.AllocateSpace",
        "allocate disks on the disk storage",
    ),
    (
        "Datastore.AllocateTemplate",
        "download the ISO and upload each node's cidata volume into the ISO storage",
    ),
    ("Datastore.Audit", "list storage content"),
    ("SDN.Use", "attach NICs to the bridge and VLANs"),
    ("Sys.Audit", "read node status, network and tasks"),
    (
        "Sys.AccessNetwork",
        "let the node download the ISO (download-url)",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Check {
    pub level: Level,
    pub what: String,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PreflightReport {
    pub endpoint: String,
    pub version: Option<String>,
    pub checks: Vec<Check>,
}

impl PreflightReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.level != Level::Fail)
    }
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.level == Level::Fail)
    }
}

fn check(
    level: Level,
    what: impl Into<String>,
    detail: impl Into<String>,
    fix: Option<String>,
) -> Check {
    Check {
        level,
        what: what.into(),
        detail: detail.into(),
        fix,
    }
}

/// What `GET /access/permissions?path=` says for one path: privilege → propagate
/// flag. A present key is a grant whatever its value (proxmox-semantics §4.2).
type PathPrivileges = BTreeMap<String, Value>;

/// The exact paths PVE checks each privilege on, for this plan (proxmox-semantics
/// §4.3/4.4): VM privileges on `/vms/<id>`, the disk storage for new disks, the ISO
/// storage for uploads and downloads, the VLAN of each NIC for `SDN.Use`, each
/// host for its tasks, network and downloads.
fn privilege_paths(profile: &Profile, plan: &Plan) -> Vec<(&'static str, String)> {
    let px = &profile.proxmox;
    let mut out = Vec::new();
    for (privilege, _) in REQUIRED_PRIVILEGES {
        let paths: Vec<String> = match privilege.split('.').next() {
            Some("VM") => plan
                .nodes
                .iter()
                .map(|n| format!("/vms/{}", n.vmid))
                .collect(),
            _ if *privilege == "Datastore.AllocateSpace" => {
                vec![format!("/storage/{}", px.disk_storage)]
            }
            Some("Datastore") => vec![format!("/storage/{}", px.iso_storage)],
            Some("SDN") => plan
                .nodes
                .iter()
                .flat_map(|n| n.nics().map(|nic| nic.vlan))
                .collect::<BTreeSet<Option<u16>>>()
                .into_iter()
                // An untagged NIC is checked on the bridge itself (GuestHelpers.pm
                // `check_vnet_access`, proxmox-semantics §4.4).
                .map(|v| match v {
                    Some(v) => format!("/sdn/zones/localnetwork/{}/{v}", px.bridge),
                    None => format!("/sdn/zones/localnetwork/{}", px.bridge),
                })
                .collect(),
            _ => px
                .hosts
                .iter()
                .map(|h| format!("/nodes/{}", h.name))
                .collect(),
        };
        out.extend(paths.into_iter().map(|p| (*privilege, p)));
    }
    out
}

/// The privileges each path grants the caller, one request per path, a few at a
/// time (a 30-node plan checks ~45 paths before anything else can start). One
/// request without `path` would not do: its dump lists only paths with an ACL,
/// and a missing path cannot be evaluated from it (proxmox-semantics §4.2).
async fn path_privileges(
    pve: &Client,
    paths: impl IntoIterator<Item = String>,
) -> Result<BTreeMap<String, PathPrivileges>, PveError> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    const AT_ONCE: usize = 8;
    stream::iter(paths.into_iter().collect::<BTreeSet<_>>())
        .map(|path| async move {
            let mut answer: BTreeMap<String, PathPrivileges> = pve
                .get("/access/permissions", &params([("path", path.clone())]))
                .await?;
            let privileges = answer.remove(&path).unwrap_or_default();
            Ok::<_, PveError>((path, privileges))
        })
        .buffer_unordered(AT_ONCE)
        .try_collect()
        .await
}

/// The token's privileges on every path a call of the plan is checked on, and
/// whether it may delete cidata volumes. `host`: a standalone host, checked for
/// the paths of its own VMs and itself only.
async fn permission_checks(
    pve: &Client,
    profile: &Profile,
    plan: &Plan,
    host: Option<&str>,
    version: &Option<String>,
    checks: &mut Vec<Check>,
) -> Result<(), PveError> {
    let px = &profile.proxmox;
    let on = host.map(|h| format!(" on {h}")).unwrap_or_default();
    let what = format!("token privileges{on}");
    let cleanup = format!("cidata cleanup{on}");
    let token = pve.identity().to_owned();
    let wanted: Vec<(&str, String)> = privilege_paths(profile, plan)
        .into_iter()
        .filter(|(_, path)| host.is_none_or(|h| on_host(plan, h, path)))
        .collect();
    let iso_path = format!("/storage/{}", px.iso_storage);
    let perms = path_privileges(
        pve,
        wanted
            .iter()
            .map(|(_, p)| p.clone())
            .chain(["/".to_owned(), iso_path.clone()]),
    )
    .await?;
    let has =
        |path: &str, privilege: &str| perms.get(path).is_some_and(|p| p.contains_key(privilege));
    // Sys.AccessNetwork exists since PVE 8.2; before (and as an alternative) download-url
    // takes Sys.Audit and Sys.Modify on / (pve-storage `Status.pm` 738-755).
    let old_pve = version
        .as_deref()
        .and_then(|v| {
            let mut it = v.split(['.', '-']).map(|x| x.parse::<u32>().ok());
            Some((it.next()??, it.next().flatten().unwrap_or(0)))
        })
        .is_some_and(|(major, minor)| (major, minor) < (8, 2));
    let mut missing: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (privilege, path) in &wanted {
        let ok = has(path, privilege)
            || (*privilege == "Sys.AccessNetwork"
                && has("/", "Sys.Audit")
                && has("/", "Sys.Modify"));
        if !ok {
            missing.entry(privilege).or_default().push(path.clone());
        }
    }
    checks.push(if missing.is_empty() {
        check(Level::Ok, what.as_str(), format!("{token} has every privilege the plan needs, on every path it is checked on"), None)
    } else {
        let why = |p: &str| REQUIRED_PRIVILEGES.iter().find(|(x, _)| *x == p).map_or("", |(_, w)| *w);
        let lacks: Vec<String> = missing
            .iter()
            .map(|(p, paths)| format!("{p} on {} ({})", paths.join(", "), why(p)))
            .collect();
        let privs: Vec<&str> = REQUIRED_PRIVILEGES
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !(old_pve && *p == "Sys.AccessNetwork"))
            .collect();
        let user = token.split('!').next().unwrap_or(&token);
        let mut fix = format!(
            "on a Proxmox host run (Proxmox VE {}):\n    pveum role add TalosPVE --privs \"{}\"\n    pveum acl modify / --roles TalosPVE --users '{user}'{} --propagate 1",
            version.clone().unwrap_or_default(),
            privs.join(" "),
            if token.contains('!') { format!(" --tokens '{token}'") } else { String::new() },
        );
        if old_pve {
            fix.push_str("\n  PVE before 8.2 has no Sys.AccessNetwork: downloading the ISO also needs Sys.Audit and Sys.Modify on /");
        }
        check(
            Level::Fail,
            what.as_str(),
            format!("{token} lacks: {}", lacks.join("; ")),
            Some(fix),
        )
    });

    checks.push(if has(&iso_path, DELETE_PRIVILEGE) {
        check(
            Level::Ok,
            cleanup.as_str(),
            format!("{token} may delete each node's cidata volume once it runs"),
            None,
        )
    } else {
        check(
            Level::Warn,
            cleanup.as_str(),
            format!(
                "{token} lacks {DELETE_PRIVILEGE} on {iso_path}: each node's cidata volume (its machine config) will be overwritten with one without key material instead of deleted"
            ),
            Some(format!(
                "grant {DELETE_PRIVILEGE} on {iso_path} only (`pveum acl modify {iso_path} --tokens '{token}' --roles PVEDatastoreAdmin`), or delete the talos-pve-cidata-*.iso files by hand after `up`"
            )),
        )
    });
    Ok(())
}

/// Whether a permission path concerns standalone host `host`: its own VMs and
/// node path; storage and SDN paths exist on every host.
fn on_host(plan: &Plan, host: &str, path: &str) -> bool {
    if let Some(vmid) = path.strip_prefix("/vms/") {
        return plan
            .nodes
            .iter()
            .any(|n| n.host == host && n.vmid.to_string() == vmid);
    }
    match path.strip_prefix("/nodes/") {
        Some(node) => node == host,
        None => true,
    }
}

pub async fn preflight(
    pve: &Client,
    profile: &Profile,
    plan: &Plan,
) -> Result<PreflightReport, PveError> {
    let mut checks = Vec::new();
    let px = &profile.proxmox;

    // Every read is independent of the others: they go at once (a 30-node plan asks
    // ~70 questions, and the ISO download waits for the answers).
    let (version, nodes, guests) = tokio::try_join!(
        pve.get::<Value>("/version", &[]),
        pve.get::<Vec<Value>>("/nodes", &[]),
        inventory::planned_guests(pve, plan),
    )?;
    let version = version.get("version").and_then(text);
    let major = version
        .as_deref()
        .and_then(|v| v.split('.').next()?.parse::<u32>().ok());
    checks.push(match major {
        Some(m) if m >= 8 => check(
            Level::Ok,
            "API version",
            format!("Proxmox VE {}", version.clone().unwrap_or_default()),
            None,
        ),
        _ => check(
            Level::Warn,
            "API version",
            format!(
                "Proxmox VE {} is older than 8 (untested)",
                version.clone().unwrap_or_default()
            ),
            Some("upgrade to Proxmox VE 8 or 9".into()),
        ),
    });
    let online: BTreeMap<String, bool> = nodes
        .iter()
        .filter_map(|n| {
            Some((
                n.get("node")?.as_str()?.to_owned(),
                n.get("status").and_then(Value::as_str) == Some("online"),
            ))
        })
        .collect();
    let reachable: Vec<&crate::profile::Host> = px
        .hosts
        .iter()
        .filter(|h| online.get(&h.name) == Some(&true))
        .collect();

    let permissions = async {
        let mut checks = Vec::new();
        if pve.standalone() {
            // Each standalone host has its own users and ACLs: check each on its own.
            for h in &px.hosts {
                let Some(view) = pve.host_view(&h.name) else {
                    continue;
                };
                let v: Value = match view.get("/version", &[]).await {
                    Ok(v) => v,
                    // Not answering: reported offline with the hosts below.
                    Err(e) if e.may_fail_over("GET") => continue,
                    Err(e) => return Err(e),
                };
                let v = v.get("version").and_then(text);
                permission_checks(&view, profile, plan, Some(&h.name), &v, &mut checks).await?;
            }
        } else {
            permission_checks(pve, profile, plan, None, &version, &mut checks).await?;
        }
        Ok(checks)
    };
    let hosts = futures_util::future::try_join_all(reachable.iter().map(|h| host_view(pve, h)));
    let existing = futures_util::future::try_join_all(
        plan.nodes
            .iter()
            .filter_map(|n| guests.vms.get(&n.vmid))
            .map(|vm| async move {
                let cfg = inventory::config(pve, &vm.node, vm.vmid).await?;
                Ok::<_, PveError>((vm.vmid, cfg))
            }),
    );
    let (permissions, hosts, existing) = tokio::try_join!(permissions, hosts, existing)?;
    let existing: BTreeMap<u32, BTreeMap<String, String>> = existing.into_iter().collect();
    checks.extend(permissions);

    for h in &px.hosts {
        match online.get(&h.name) {
            Some(true) => {
                checks.push(check(Level::Ok, format!("host {}", h.name), "online", None));
            }
            Some(false) => checks.push(check(
                Level::Fail,
                format!("host {}", h.name),
                "offline",
                Some("power it on or fix cluster quorum".into()),
            )),
            None => checks.push(check(
                Level::Fail,
                format!("host {}", h.name),
                format!(
                    "not a node of this cluster (nodes: {})",
                    online.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some(
                    "use the node name shown by `pvesh get /nodes` in proxmox.hosts[].name".into(),
                ),
            )),
        }
    }

    let vlans: BTreeSet<u16> = plan
        .nodes
        .iter()
        .flat_map(|n| n.nics().filter_map(|nic| nic.vlan))
        .collect();
    let vms = &guests.vms;
    // Only VMs that will be created need space: a re-run after success needs none.
    let creating: Vec<&NodePlan> = plan
        .nodes
        .iter()
        .filter(|n| !vms.contains_key(&n.vmid) && !guests.containers.contains_key(&n.vmid))
        .collect();
    let mut space = SpaceCheck {
        creating: &creating,
        shared_seen: BTreeSet::new(),
    };
    for (h, view) in reachable.iter().zip(&hosts) {
        host_checks(pve, profile, h, view, &vlans, &mut space, &mut checks);
    }

    for n in &plan.nodes {
        let what = format!("VMID {} ({})", n.vmid, n.name);
        if let Some(ct) = guests.containers.get(&n.vmid) {
            // VMs and containers share one VMID space (pve-cluster `Cluster.pm` 785-797).
            checks.push(check(
                Level::Fail,
                what,
                format!("taken by container `{}` on {}", ct.name, ct.node),
                Some(format!("pick another vmid for {}", n.name)),
            ));
            continue;
        }
        match vms.get(&n.vmid) {
            None => checks.push(check(Level::Ok, what, "free", None)),
            Some(vm) => {
                let Some(cfg) = existing.get(&vm.vmid) else {
                    continue;
                };
                if inventory::creating(cfg) {
                    checks.push(if inventory::create_running(pve, &vm.node, vm.vmid).await? {
                        check(
                            Level::Warn,
                            what,
                            format!("being created on {} right now (`lock: create`): whose it is shows when that ends", vm.node),
                            Some("run preflight again once the create task has ended".into()),
                        )
                    } else {
                        let (detail, fix) = inventory::stub_remedy(&vm.node, vm.vmid);
                        check(Level::Fail, what, detail, Some(fix))
                    });
                    continue;
                }
                match marker(cfg) {
                    Some(m) if m.cluster == plan.cluster && m.node == n.name => checks.push(check(
                        Level::Ok,
                        what,
                        format!(
                            "carries the marker of {} on {} (adopted when its cluster ID is this directory's)",
                            n.name, vm.node
                        ),
                        None,
                    )),
                    _ => checks.push(check(
                        Level::Fail,
                        what,
                        format!(
                            "taken by `{}` on {}, not a VM of cluster `{}`",
                            vm.name, vm.node, plan.cluster
                        ),
                        Some(format!(
                            "pick another vmid for {} or remove that VM",
                            n.name
                        )),
                    )),
                }
            }
        }
    }
    Ok(PreflightReport {
        endpoint: pve.endpoint().to_owned(),
        version,
        checks,
    })
}

/// Disk space wanted by the VMs to be created. A shared storage is one pool seen
/// from every host: it is checked once, against every new VM on any host.
struct SpaceCheck<'a> {
    creating: &'a [&'a NodePlan],
    shared_seen: BTreeSet<String>,
}

impl SpaceCheck<'_> {
    /// Bytes needed on `storage` as seen from `host`; `None` when a shared storage
    /// was already checked from another host.
    fn need(&mut self, host: &str, storage: &str, shared: bool) -> Option<(u64, usize)> {
        if shared && !self.shared_seen.insert(storage.to_owned()) {
            return None;
        }
        let new: Vec<&&NodePlan> = self
            .creating
            .iter()
            .filter(|n| shared || n.host == host)
            .collect();
        // The disk plus the 4 MiB EFI vars disk, rounded up.
        let bytes = new
            .iter()
            .map(|n| (u64::from(n.disk_gib) << 30) + (8 << 20))
            .sum();
        Some((bytes, new.len()))
    }
}

/// What one host says of its network and its enabled storages.
struct HostView {
    net: Vec<Value>,
    storages: Vec<Value>,
}

async fn host_view(pve: &Client, h: &crate::profile::Host) -> Result<HostView, PveError> {
    let node = node_path(&h.name)?;
    let (net_path, storage_path) = (format!("{node}/network"), format!("{node}/storage"));
    let enabled = params([("enabled", "1".into())]);
    let (net, storages) = tokio::try_join!(
        pve.get::<Vec<Value>>(&net_path, &[]),
        pve.get::<Vec<Value>>(&storage_path, &enabled),
    )?;
    Ok(HostView { net, storages })
}

fn host_checks(
    pve: &Client,
    profile: &Profile,
    h: &crate::profile::Host,
    view: &HostView,
    vlans: &BTreeSet<u16>,
    space: &mut SpaceCheck<'_>,
    checks: &mut Vec<Check>,
) {
    let px = &profile.proxmox;
    let HostView { net, storages } = view;
    let iface = |name: &str| {
        net.iter()
            .find(|i| i.get("iface").and_then(Value::as_str) == Some(name))
    };
    match iface(&px.bridge) {
        None => checks.push(check(
            Level::Fail,
            format!("{}: bridge {}", h.name, px.bridge),
            "does not exist",
            Some(format!(
                "create {} (VLAN aware) in System → Network, or set proxmox.bridge",
                px.bridge
            )),
        )),
        // An Open vSwitch bridge carries tagged ports without a vlan-aware flag.
        Some(b) if b.get("type").and_then(Value::as_str) == Some("OVSBridge") => {
            checks.push(check(
                Level::Ok,
                format!("{}: bridge {}", h.name, px.bridge),
                "Open vSwitch bridge (tagged NICs need no VLAN-aware flag)",
                None,
            ))
        }
        Some(b) if b.get("bridge_vlan_aware").is_some_and(boolean) => {
            let vids = b
                .get("bridge_vids")
                .and_then(text)
                .unwrap_or_else(|| "2-4094".into());
            let covered = |v: u16| {
                vids.split([' ', ',']).any(|r| match r.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().is_ok_and(|a| a <= v)
                            && b.parse::<u16>().is_ok_and(|b| v <= b)
                    }
                    None => r.parse::<u16>() == Ok(v),
                })
            };
            let gaps: Vec<String> = vlans
                .iter()
                .filter(|v| !covered(**v))
                .map(u16::to_string)
                .collect();
            checks.push(if gaps.is_empty() {
                check(
                    Level::Ok,
                    format!("{}: bridge {}", h.name, px.bridge),
                    format!("VLAN aware (vids {vids})"),
                    None,
                )
            } else {
                check(
                    Level::Fail,
                    format!("{}: bridge {}", h.name, px.bridge),
                    format!(
                        "VLAN aware but bridge-vids {vids} misses VLAN {}",
                        gaps.join(", ")
                    ),
                    Some("add the VLANs to bridge-vids in /etc/network/interfaces".into()),
                )
            });
        }
        Some(_) => checks.push(check(
            Level::Warn,
            format!("{}: bridge {}", h.name, px.bridge),
            "not VLAN aware: tagged NICs will use Proxmox's per-VLAN bridges (vmbr0v16, vmbr0v28)",
            Some(format!(
                "tick \"VLAN aware\" on {} for the usual setup",
                px.bridge
            )),
        )),
    }
    if let Some(s) = &h.storage {
        let want_mtu = s
            .mtu
            .or_else(|| profile.network(NetworkRole::Storage).map(|n| n.mtu));
        match iface(&s.interface) {
            None => checks.push(check(
                Level::Warn,
                format!("{}: {}", h.name, s.interface),
                "storage interface not found",
                None,
            )),
            Some(i) => {
                let mtu = i.get("mtu").and_then(int).map(|m| m as u32).unwrap_or(1500);
                if want_mtu.is_some_and(|w| w != mtu) {
                    checks.push(check(
                        Level::Warn,
                        format!("{}: {}", h.name, s.interface),
                        format!(
                            "MTU {mtu}, the profile says {}",
                            want_mtu.unwrap_or_default()
                        ),
                        Some(format!(
                            "set `mtu {}` on {} and its members",
                            want_mtu.unwrap_or_default(),
                            s.interface
                        )),
                    ));
                }
                let slaves = i.get("slaves").and_then(text).unwrap_or_default();
                let missing: Vec<&String> = s
                    .members
                    .iter()
                    .filter(|m| !slaves.split_whitespace().any(|x| x == m.as_str()))
                    .collect();
                if !missing.is_empty() {
                    checks.push(check(
                        Level::Warn,
                        format!("{}: {}", h.name, s.interface),
                        format!("members {:?} not in the bond (it has `{slaves}`)", missing),
                        None,
                    ));
                }
            }
        }
    }
    let find = |id: &str| {
        storages
            .iter()
            .find(|s| s.get("storage").and_then(Value::as_str) == Some(id))
    };
    let accepts = |s: &Value, c: &str| {
        s.get("content")
            .and_then(Value::as_str)
            .is_some_and(|x| x.split(',').any(|y| y == c))
    };
    for (id, content, purpose) in [
        (&px.iso_storage, "iso", "the Talos ISO"),
        (&px.disk_storage, "images", "VM disks"),
    ] {
        let what = format!("{}: storage {id}", h.name);
        match find(id) {
            None => checks.push(check(
                Level::Fail,
                what,
                "does not exist or is disabled",
                Some(format!(
                    "create it or set proxmox.{}",
                    if content == "iso" {
                        "isoStorage"
                    } else {
                        "diskStorage"
                    }
                )),
            )),
            Some(s) if !accepts(s, content) => checks.push(check(
                Level::Fail,
                what,
                format!("does not accept `{content}` content ({purpose})"),
                Some(format!(
                    "add `{content}` to its content types (Datacenter → Storage → {id})"
                )),
            )),
            Some(s) if content == "images" => {
                // Standalone hosts share no storage, whatever each calls shared
                // (proxmox-semantics §6: no cluster-wide storage config).
                let shared = s.get("shared").is_some_and(boolean) && !pve.standalone();
                let Some((need, count)) = space.need(&h.name, id, shared) else {
                    continue;
                };
                let avail = s.get("avail").and_then(int).unwrap_or(0);
                let what = if shared {
                    format!("storage {id} (shared)")
                } else {
                    what
                };
                let detail = format!(
                    "{} GiB free, {} GiB needed for {count} new VM(s)",
                    avail >> 30,
                    need.div_ceil(1 << 30)
                );
                checks.push(if avail >= need {
                    check(Level::Ok, what, detail, None)
                } else {
                    check(
                        Level::Fail,
                        what,
                        detail,
                        Some("free space or choose another diskStorage".into()),
                    )
                });
            }
            Some(_) => checks.push(check(Level::Ok, what, format!("accepts {content}"), None)),
        }
    }
}

//! Provisioning: make each planned node's VM exist and match the plan. It does not
//! power VMs on: a VM must not boot before its `cidata` volume (its machine
//! config) is attached, which needs the configs (`proxmox::cidata`, run by `up`).
//!
//! Idempotent and adoptive: the cluster inventory decides per VM whether to
//! create, adopt (our marker: this cluster's ID, see `ownership`), refuse (someone
//! else's VM on a planned VMID, or this node's VM found at another VMID) or leave
//! alone. Hosts work in parallel; on one host the ISO comes first, then its
//! VMs in parallel; every step on one VM runs in order. A run that stopped
//! half-way resumes from what exists.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use thiserror::Error;

use super::client::{Client, api_path, node_path, params, vm_path};
use super::error::PveError;
use super::factory::Factory;
use super::inventory::{self, VmResource};
use super::ownership::{self, Claim, Marker, Owner};
use super::propstr::split_tags;
use super::vm::{Difference, OWNER_TAG, create_params, diff};
use crate::plan::{NodePlan, Plan, schematic_yaml};
use crate::profile::Profile;

const CREATE_DEADLINE: Duration = Duration::from_secs(300);
const DOWNLOAD_DEADLINE: Duration = Duration::from_secs(900);
const STOP_DEADLINE: Duration = Duration::from_secs(120);
const UNLOCK_DEADLINE: Duration = Duration::from_secs(300);
/// VMs worked on at once on one host. Each create allocates its disks under the
/// storage's lock, which waits at most 10 s before `got timeout` (pve-storage
/// `cfs_lock_storage`); many creates at once on one host queue there (inferred).
const VMS_AT_ONCE_PER_HOST: usize = 2;

#[derive(Debug, Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Pve(#[from] PveError),
    #[error(
        "VMID {vmid} (planned for {node}) is taken by `{name}` on host {host}, which is not a VM of cluster `{cluster}` (ID {id}){owner}\n  fix: pick another `vmid` for {node} in the profile, or remove that VM yourself"
    )]
    Foreign {
        vmid: u32,
        node: String,
        name: String,
        host: String,
        cluster: String,
        id: String,
        owner: String,
    },
    #[error(
        "the VM of {node} is VM {found} on host {host} (it carries this cluster's marker), not the planned VMID {planned}; creating another would give two VMs the same MACs and addresses\n  fix: set `vmid: {found}` for {node} in the profile again; moving a node to another VMID is deliberate: `talos-pve rebuild node {node}` after deleting VM {found} yourself"
    )]
    Moved {
        node: String,
        found: u32,
        host: String,
        planned: u32,
    },
    #[error(
        "VMID {vmid} on host {host} carries the old name-only marker of `{cluster}`/{node}, and nothing in this cluster directory records creating it; a name proves nothing (another directory made from the same profile has it too)\n  fix: if it is this cluster's VM, run from the cluster directory that created it; to claim it on purpose, add the tags `{tags}` to VM {vmid} (`qm set {vmid} --tags ...`, keeping its others) and run again"
    )]
    Unproven {
        vmid: u32,
        host: String,
        cluster: String,
        node: String,
        tags: String,
    },
    #[error("{node}: {detail}")]
    Node { node: String, detail: String },
    #[error("{}\n  fix: {}", inventory::stub_remedy(host, *vmid).0, inventory::stub_remedy(host, *vmid).1)]
    Stub { vmid: u32, host: String },
    /// Some hosts failed while others got on: what those did is kept.
    #[error("{}", incomplete(done, failed))]
    Incomplete {
        done: Box<ProvisionReport>,
        failed: Vec<ProvisionError>,
    },
}

impl ProvisionError {
    /// The first failure itself (inside `Incomplete`, its first one).
    pub fn cause(&self) -> &ProvisionError {
        match self {
            ProvisionError::Incomplete { failed, .. } => failed.first().unwrap_or(self),
            other => other,
        }
    }
}

fn incomplete(done: &ProvisionReport, failed: &[ProvisionError]) -> String {
    let mut s: Vec<String> = failed.iter().map(ToString::to_string).collect();
    if done.isos.is_empty() && done.vms.is_empty() {
        return s.join("\n");
    }
    s.push("done on the other hosts (kept; the next run adopts it):".into());
    for i in &done.isos {
        let what = if i.downloaded {
            "downloaded"
        } else {
            "present"
        };
        s.push(format!("  ISO {} on {}: {what}", i.volid, i.host));
    }
    for v in &done.vms {
        s.push(format!(
            "  VM {} {} on {}: {}",
            v.vmid,
            v.node,
            v.host,
            v.action.as_str()
        ));
    }
    s.join("\n")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmAction {
    Created,
    Recreated,
    /// Existed with our marker and matches the plan.
    UpToDate,
    /// Existed with our marker; safe differences were fixed.
    Updated,
    /// Differs in a way only `--recreate` fixes; left untouched.
    NeedsRecreate,
    /// Running, with config changes Proxmox holds as pending until the VM is
    /// rebooted through Proxmox (`up` does that in its rolling reboot).
    PendingReboot,
}

impl VmAction {
    /// How reports name it.
    pub fn as_str(self) -> &'static str {
        match self {
            VmAction::Created => "created",
            VmAction::Recreated => "re-created",
            VmAction::UpToDate => "up to date",
            VmAction::Updated => "updated",
            VmAction::NeedsRecreate => "needs --recreate",
            VmAction::PendingReboot => "pending until reboot",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmReport {
    pub node: String,
    pub host: String,
    pub vmid: u32,
    pub action: VmAction,
    pub differences: Vec<String>,
    /// Differences from the plan that need nothing (a grown disk, a migrated VM).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IsoReport {
    pub host: String,
    pub volid: String,
    pub downloaded: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ProvisionReport {
    pub vms: Vec<VmReport>,
    pub isos: Vec<IsoReport>,
    /// Write requests sent to Proxmox (POST/PUT/DELETE).
    pub writes: u32,
}

impl ProvisionReport {
    pub fn up_to_date(&self) -> bool {
        self.writes == 0
    }
    pub fn blocked(&self) -> impl Iterator<Item = &VmReport> {
        self.vms
            .iter()
            .filter(|v| v.action == VmAction::NeedsRecreate)
    }
    /// The closing line of a run that wrote nothing: "up to date" only when
    /// nothing differs either.
    pub fn unchanged_line(&self) -> Option<&'static str> {
        match (self.up_to_date(), self.blocked().next().is_some()) {
            (true, false) => Some("Everything is up to date (no changes made)."),
            (true, true) => Some("No changes made."),
            (false, _) => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ProvisionOptions {
    /// Delete and re-create VMs whose differences cannot be fixed in place.
    pub recreate: bool,
    /// Whose VMs these are: the marker written and the one adopted.
    pub owner: Owner,
}

/// What to do with one node, decided from the inventory before any write.
#[derive(Debug, Clone)]
enum Step {
    Create,
    Adopt {
        differences: Vec<Difference>,
        digest: Option<String>,
        running: bool,
        /// The VM's current host (another than planned when it was migrated).
        on: String,
        notes: Vec<String>,
        /// Not re-created in this run although `--recreate` was given: another
        /// control plane is (`hold_control_planes`).
        hold: bool,
    },
}

/// What `provision` has settled so far, for a caller that goes on VM by VM (`up`
/// boots each VM as soon as it exists, not once all do).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settled {
    /// The VMs only `--recreate` fixes, published before any write.
    pub blocked: Vec<String>,
    /// Each VM once it matches the plan (or is left as it is), by node name.
    pub vms: BTreeMap<String, VmAction>,
}

/// Where `provision_settling` publishes what it has settled; dropped when it ends.
pub type SettledTx = Arc<tokio::sync::watch::Sender<Settled>>;

impl Step {
    /// Left as it is, `NeedsRecreate`: only a re-create fixes it, and this run
    /// does not (no `--recreate`, or another control plane goes first).
    fn blocked(&self, recreate: bool) -> bool {
        match self {
            Step::Create => false,
            Step::Adopt {
                differences, hold, ..
            } => differences.iter().any(|d| !d.safe) && (!recreate || *hold),
        }
    }
}

/// Bring every planned VM into existence, as planned (powered on or not).
pub async fn provision(
    pve: &Client,
    factory: &Factory,
    profile: &Profile,
    plan: &Plan,
    opts: ProvisionOptions,
) -> Result<ProvisionReport, ProvisionError> {
    let settled = Arc::new(tokio::sync::watch::channel(Settled::default()).0);
    provision_settling(pve, factory, profile, plan, opts, settled).await
}

/// `provision`, publishing each VM to `settled` as soon as it is done.
pub async fn provision_settling(
    pve: &Client,
    factory: &Factory,
    profile: &Profile,
    plan: &Plan,
    opts: ProvisionOptions,
    settled: SettledTx,
) -> Result<ProvisionReport, ProvisionError> {
    let guests = inventory::planned_guests(pve, plan).await?;
    let vms = guests.vms;
    let mut steps = BTreeMap::new();
    for node in &plan.nodes {
        if let Some(ct) = guests.containers.get(&node.vmid) {
            // VMs and containers share one VMID space: the create would fail.
            return Err(ProvisionError::Foreign {
                vmid: ct.vmid,
                node: node.name.clone(),
                name: ct.name.clone(),
                host: ct.node.clone(),
                cluster: plan.cluster.clone(),
                id: opts.owner.id.to_string(),
                owner: " (it is a container)".into(),
            });
        }
        let step = decide(pve, profile, plan, &opts.owner, node, &vms).await?;
        steps.insert(node.name.clone(), step);
    }
    if opts.recreate {
        hold_control_planes(plan, &mut steps);
    }
    let blocked: Vec<String> = plan
        .nodes
        .iter()
        .filter(|n| steps[&n.name].blocked(opts.recreate))
        .map(|n| n.name.clone())
        .collect();
    settled.send_modify(|s| s.blocked = blocked);
    let needs_iso: BTreeSet<&str> = plan
        .nodes
        .iter()
        .filter(|n| match &steps[&n.name] {
            Step::Create => true,
            Step::Adopt {
                differences, hold, ..
            } => {
                differences.iter().any(|d| d.key == "ide2")
                    || (opts.recreate && !hold && differences.iter().any(|d| !d.safe))
            }
        })
        .map(|n| n.host.as_str())
        .collect();
    let mut report = ProvisionReport::default();
    let mut needs_iso = needs_iso;
    let mut download = Vec::new();
    if !needs_iso.is_empty() {
        // The factory serves only schematics it has seen; registering is idempotent.
        let id = factory
            .register(&schematic_yaml(&profile.talos.schematic))
            .await?;
        if id != plan.schematic_id {
            tracing::warn!(factory = %id, plan = %plan.schematic_id, "the Image Factory computed another schematic id than the plan");
        }
        download = factory.download_check(&plan.iso_url).await?;
        // A shared ISO storage is one pool seen by every host: one download.
        let first = needs_iso.iter().next().copied();
        if let Some(first) = first
            && iso_storage_shared(pve, first, &profile.proxmox.iso_storage).await?
        {
            let iso = ensure_iso(pve, profile, plan, first, &download, &mut report).await?;
            report.isos.push(iso);
            needs_iso.clear();
        }
    }
    let mut set = tokio::task::JoinSet::new();
    for host in &plan.hosts {
        let nodes: Vec<(NodePlan, Step)> = plan
            .nodes
            .iter()
            .filter(|n| n.host == host.name)
            .map(|n| (n.clone(), steps[&n.name].clone()))
            .collect();
        if nodes.is_empty() {
            continue;
        }
        let (pve, profile, plan, opts) = (pve.clone(), profile.clone(), plan.clone(), opts.clone());
        let settled = settled.clone();
        let iso = needs_iso
            .contains(host.name.as_str())
            .then(|| download.clone());
        let host = host.name.clone();
        // Spawned, yet its retries and download progress belong to the caller's row.
        set.spawn(crate::progress::carry(async move {
            let mut r = ProvisionReport::default();
            let res = provision_host(
                &pve, &profile, &plan, &host, iso, nodes, &opts, &settled, &mut r,
            )
            .await;
            (r, res)
        }));
    }
    let mut failed = Vec::new();
    while let Some(joined) = set.join_next().await {
        let (r, res) = joined.map_err(|e| ProvisionError::Node {
            node: "(worker)".into(),
            detail: e.to_string(),
        })?;
        report.vms.extend(r.vms);
        report.isos.extend(r.isos);
        report.writes += r.writes;
        if let Err(e) = res {
            failed.push(e);
        }
    }
    report.vms.sort_by_key(|v| v.vmid);
    report.isos.sort_by(|a, b| a.host.cmp(&b.host));
    if failed.is_empty() {
        Ok(report)
    } else if failed.len() == 1 && report.vms.is_empty() && report.isos.is_empty() {
        // Nothing else happened: the failure says it all.
        Err(failed.remove(0))
    } else {
        Err(ProvisionError::Incomplete {
            done: Box::new(report),
            failed,
        })
    }
}

/// At most one control plane is re-created per run: each must be back with its etcd
/// member rejoined before the next goes (`up --recreate` does them one after the
/// other), so etcd keeps its quorum. The others stay `NeedsRecreate`.
fn hold_control_planes(plan: &Plan, steps: &mut BTreeMap<String, Step>) {
    let mut first = true;
    for n in plan.control_planes() {
        if let Some(Step::Adopt {
            differences, hold, ..
        }) = steps.get_mut(&n.name)
            && differences.iter().any(|d| !d.safe)
        {
            *hold = !first;
            first = false;
        }
    }
}

/// The create parameters of `node`, marked as `owner`'s.
pub fn wanted(
    profile: &Profile,
    plan: &Plan,
    owner: &Owner,
    node: &NodePlan,
) -> Result<Vec<(String, String)>, PveError> {
    let mut p = create_params(profile, plan, node).map_err(PveError::from)?;
    ownership::stamp(&mut p, &Marker::new(owner, &node.name));
    Ok(p)
}

/// What `vm`'s marker says, for `owner`: tags and description; tags alone while
/// its host cannot be reached (59x: the cluster still lists the tags).
pub async fn claim_of(pve: &Client, owner: &Owner, vm: &VmResource) -> Result<Claim, PveError> {
    let description = match inventory::config(pve, &vm.node, vm.vmid).await {
        Ok(mut c) => c.remove("description"),
        Err(e) if e.status().is_some_and(|s| (595..=599).contains(&s)) => None,
        Err(e) => return Err(e),
    };
    Ok(ownership::claim(owner, &vm.tags, description.as_deref()))
}

/// This node's VM at another VMID: tagged with our ID (readable while its host is
/// offline), or a legacy VM of ours by name.
async fn elsewhere(
    pve: &Client,
    plan: &Plan,
    owner: &Owner,
    node: &NodePlan,
    vms: &BTreeMap<u32, VmResource>,
) -> Result<Option<VmResource>, PveError> {
    for vm in vms.values().filter(|v| v.vmid != node.vmid) {
        if ownership::tagged_for(owner, &vm.tags, &node.name) {
            return Ok(Some(vm.clone()));
        }
        let legacy_candidate =
            vm.name == node.name && vm.tags.iter().any(|t| t.eq_ignore_ascii_case(OWNER_TAG));
        if legacy_candidate
            && matches!(claim_of(pve, owner, vm).await?,
                Claim::Legacy { cluster, node: n } if cluster == plan.cluster && n == node.name)
        {
            return Ok(Some(vm.clone()));
        }
    }
    Ok(None)
}

async fn decide(
    pve: &Client,
    profile: &Profile,
    plan: &Plan,
    owner: &Owner,
    node: &NodePlan,
    vms: &BTreeMap<u32, VmResource>,
) -> Result<Step, ProvisionError> {
    if let Some(vm) = elsewhere(pve, plan, owner, node, vms).await? {
        return Err(ProvisionError::Moved {
            node: node.name.clone(),
            found: vm.vmid,
            host: vm.node,
            planned: node.vmid,
        });
    }
    let Some(vm) = vms.get(&node.vmid) else {
        return Ok(Step::Create);
    };
    let mut config = inventory::config(pve, &vm.node, vm.vmid).await?;
    let description = |c: &BTreeMap<String, String>| c.get("description").cloned();
    let mut claim = ownership::claim(owner, &vm.tags, description(&config).as_deref());
    if inventory::creating(&config) {
        // Nothing (no tags, no description) says whose it is until the create ends.
        if !inventory::create_running(pve, &vm.node, vm.vmid).await? {
            return Err(ProvisionError::Stub {
                vmid: vm.vmid,
                host: vm.node.clone(),
            });
        }
        inventory::wait_unlocked(pve, &vm.node, vm.vmid, UNLOCK_DEADLINE).await?;
        config = inventory::config(pve, &vm.node, vm.vmid).await?;
        let tags = config
            .get("tags")
            .map(|t| split_tags(t))
            .unwrap_or_default();
        claim = ownership::claim(owner, &tags, description(&config).as_deref());
    }
    // A legacy marker is adopted once: this directory's state recorded this VM.
    let proven = |claim: &Claim| owner.proves(claim, &node.name, vm.vmid);
    if config.contains_key("lock") && proven(&claim) {
        // Left locked by an operation still running (e.g. an interrupted create).
        inventory::wait_unlocked(pve, &vm.node, vm.vmid, UNLOCK_DEADLINE).await?;
        config = inventory::config(pve, &vm.node, vm.vmid).await?;
        claim = ownership::claim(owner, &vm.tags, description(&config).as_deref());
    }
    if !proven(&claim) {
        return Err(match claim {
            Claim::Legacy { cluster, node: n } if cluster == plan.cluster && n == node.name => {
                ProvisionError::Unproven {
                    vmid: vm.vmid,
                    host: vm.node.clone(),
                    cluster,
                    node: n,
                    tags: Marker::new(owner, &node.name).tags().join(";"),
                }
            }
            other => ProvisionError::Foreign {
                vmid: vm.vmid,
                node: node.name.clone(),
                name: vm.name.clone(),
                host: vm.node.clone(),
                cluster: plan.cluster.clone(),
                id: owner.id.to_string(),
                owner: match other {
                    Claim::Unmarked => String::new(),
                    c => format!(" (it carries {c})"),
                },
            },
        });
    }
    let want = wanted(profile, plan, owner, node)?;
    let differences = diff(&want, &config);
    let mut notes = super::vm::notes(&want, &config);
    if vm.node != node.host {
        // Migrated (HA, maintenance): the VM is the same machine; it is used where it
        // runs, never re-created for it.
        notes.push(format!(
            "runs on {}, planned on {} (migrated; used where it runs)",
            vm.node, node.host
        ));
    }
    Ok(Step::Adopt {
        differences,
        digest: config.get("digest").cloned(),
        running: vm.running,
        on: vm.node.clone(),
        notes,
        hold: false,
    })
}

#[allow(clippy::too_many_arguments)]
async fn provision_host(
    pve: &Client,
    profile: &Profile,
    plan: &Plan,
    host: &str,
    download: Option<Vec<(String, String)>>,
    mut nodes: Vec<(NodePlan, Step)>,
    opts: &ProvisionOptions,
    settled: &SettledTx,
    r: &mut ProvisionReport,
) -> Result<(), ProvisionError> {
    if let Some(download) = download {
        let iso = ensure_iso(pve, profile, plan, host, &download, r).await?;
        r.isos.push(iso);
    }
    // The bootstrap node first: the whole cluster waits for it, nothing for the others.
    nodes.sort_by_key(|(n, _)| n.name != plan.bootstrap_node);
    // VMs are independent (each has its own lock on the host): a few at a time, in
    // order (the semaphore is fair).
    let slots = tokio::sync::Semaphore::new(VMS_AT_ONCE_PER_HOST);
    let done = futures_util::future::join_all(nodes.into_iter().map(|(node, step)| {
        let slots = &slots;
        async move {
            let _slot = slots.acquire().await.expect("semaphore never closed");
            let mut own = ProvisionReport::default();
            let vm = provision_vm(pve, profile, plan, &node, step, opts, &mut own).await;
            if let Ok(vm) = &vm {
                settled.send_modify(|s| {
                    s.vms.insert(vm.node.clone(), vm.action);
                });
            }
            (own.writes, vm)
        }
    }))
    .await;
    let mut first_err = None;
    for (writes, vm) in done {
        r.writes += writes;
        match vm {
            Ok(vm) => r.vms.push(vm),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// Whether `storage` is shared (one pool for every host), as `host` sees it.
/// Standalone hosts never share one.
async fn iso_storage_shared(pve: &Client, host: &str, storage: &str) -> Result<bool, PveError> {
    if pve.standalone() {
        return Ok(false);
    }
    let list: Vec<serde_json::Value> = pve
        .get(&format!("{}/storage", super::client::node_path(host)?), &[])
        .await?;
    Ok(list.iter().any(|s| {
        s.get("storage").and_then(|v| v.as_str()) == Some(storage)
            && s.get("shared").is_some_and(super::client::boolean)
    }))
}

/// Download the ISO unless the host's ISO storage already has it; `check`: the
/// `download-url` parameters that make the host verify it (`Factory::download_check`).
async fn ensure_iso(
    pve: &Client,
    profile: &Profile,
    plan: &Plan,
    host: &str,
    check: &[(String, String)],
    r: &mut ProvisionReport,
) -> Result<IsoReport, ProvisionError> {
    let storage = &profile.proxmox.iso_storage;
    let volid = format!("{storage}:iso/{}", plan.iso_file);
    let base = api_path(&[&"nodes", &host, &"storage", storage])?;
    let content: Vec<serde_json::Value> = pve
        .get(
            &format!("{base}/content"),
            &params([("content", "iso".into())]),
        )
        .await?;
    let present = content
        .iter()
        .any(|c| c.get("volid").and_then(|v| v.as_str()) == Some(volid.as_str()));
    if !present {
        tracing::info!(host, %volid, "downloading the Talos ISO");
        r.writes += 1;
        let mut p = params([
            ("url", plan.iso_url.clone()),
            ("filename", plan.iso_file.clone()),
            ("content", "iso".into()),
        ]);
        p.extend_from_slice(check);
        let path = format!("{base}/download-url");
        let download = pve.run_task(Method::POST, &path, &p, DOWNLOAD_DEADLINE);
        crate::progress::own_row(host, "ISO download", download).await?;
    }
    Ok(IsoReport {
        host: host.into(),
        volid,
        downloaded: !present,
    })
}

async fn provision_vm(
    pve: &Client,
    profile: &Profile,
    plan: &Plan,
    node: &NodePlan,
    step: Step,
    opts: &ProvisionOptions,
    r: &mut ProvisionReport,
) -> Result<VmReport, ProvisionError> {
    let want = wanted(profile, plan, &opts.owner, node)?;
    let host = node.host.as_str();
    let vmid = node.vmid;
    let describe = |d: &[Difference]| -> Vec<String> {
        d.iter()
            .map(|d| {
                format!(
                    "{}: {} → {}{}",
                    d.key,
                    d.got.as_deref().unwrap_or("(unset)"),
                    d.want,
                    if d.safe { "" } else { " (needs --recreate)" }
                )
            })
            .collect()
    };
    let mut notes = Vec::new();
    let blocked = step.blocked(opts.recreate);
    let (action, differences) = match step {
        Step::Create => {
            create(pve, host, &want, r).await?;
            (VmAction::Created, Vec::new())
        }
        Step::Adopt {
            differences,
            digest,
            running,
            on,
            notes: found,
            ..
        } => {
            notes = found;
            let unsafe_diff = differences.iter().any(|d| !d.safe);
            if blocked {
                return Ok(VmReport {
                    node: node.name.clone(),
                    host: on,
                    vmid,
                    action: VmAction::NeedsRecreate,
                    differences: describe(&differences),
                    notes,
                });
            }
            if unsafe_diff {
                remove(pve, &on, vmid, running, r).await?;
                create(pve, host, &want, r).await?;
                (VmAction::Recreated, describe(&differences))
            } else if differences.is_empty() {
                (
                    pending_or(pve, &on, vmid, running, VmAction::UpToDate).await?,
                    Vec::new(),
                )
            } else {
                let mut body: Vec<(String, String)> = differences
                    .iter()
                    .map(|d| (d.key.clone(), d.want.clone()))
                    .collect();
                if let Some(d) = digest {
                    body.push(("digest".into(), d));
                }
                r.writes += 1;
                pve.put(&format!("{}/config", vm_path(&on, vmid)?), &body)
                    .await?;
                (
                    pending_or(pve, &on, vmid, running, VmAction::Updated).await?,
                    describe(&differences),
                )
            }
        }
    };
    Ok(VmReport {
        node: node.name.clone(),
        host: host.into(),
        vmid,
        action,
        differences,
        notes,
    })
}

/// `PendingReboot` when the running VM holds changes Proxmox could not hot-plug
/// (proxmox-semantics.md §7.2: they stay in `[pending]`), else `done`.
async fn pending_or(
    pve: &Client,
    host: &str,
    vmid: u32,
    running: bool,
    done: VmAction,
) -> Result<VmAction, PveError> {
    if running && !inventory::pending(pve, host, vmid).await?.is_empty() {
        return Ok(VmAction::PendingReboot);
    }
    Ok(done)
}

/// Create the VM, powered off (no `start=1`): it boots only once its `cidata`
/// volume is attached.
async fn create(
    pve: &Client,
    host: &str,
    want: &[(String, String)],
    r: &mut ProvisionReport,
) -> Result<(), ProvisionError> {
    r.writes += 1;
    let res = pve
        .run_task(
            Method::POST,
            &format!("{}/qemu", node_path(host)?),
            want,
            CREATE_DEADLINE,
        )
        .await;
    match res {
        // The create's worker never ran; its `lock: create` stub stays
        // (proxmox-semantics §1.3), so retrying would only meet "already exists".
        Err(e) if e.is_no_worker() => Err(ProvisionError::Stub {
            vmid: want
                .iter()
                .find(|(k, _)| k == "vmid")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or_default(),
            host: host.to_owned(),
        }),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// Stop (if running) and delete a VM with its disks.
pub async fn remove(
    pve: &Client,
    host: &str,
    vmid: u32,
    running: bool,
    r: &mut ProvisionReport,
) -> Result<(), PveError> {
    if running {
        r.writes += 1;
        pve.run_task(
            Method::POST,
            &format!("{}/status/stop", vm_path(host, vmid)?),
            &[],
            STOP_DEADLINE,
        )
        .await?;
    }
    r.writes += 1;
    pve.run_task(
        Method::DELETE,
        &vm_path(host, vmid)?,
        &params([
            ("purge", "1".into()),
            ("destroy-unreferenced-disks", "1".into()),
        ]),
        STOP_DEADLINE,
    )
    .await?;
    Ok(())
}

/// Reboot a running VM through Proxmox (shutdown + start of the QEMU process), which
/// applies its pending config; a reboot inside the guest does not (qemu-server
/// `API2/Qemu.pm` `vm_reboot`, `QemuServer.pm` `vm_start`; proxmox-semantics.md §7.2).
pub async fn reboot(pve: &Client, host: &str, vmid: u32) -> Result<(), PveError> {
    pve.run_task(
        Method::POST,
        &format!("{}/status/reboot", vm_path(host, vmid)?),
        &[],
        STOP_DEADLINE,
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A running VM on host `h` kept as it is, with one difference (`safe`: fixed
    /// in place) and `hold` as given.
    fn adopt(safe: bool, hold: bool) -> Step {
        Step::Adopt {
            differences: vec![Difference {
                key: "scsihw".into(),
                want: "virtio-scsi-pci".into(),
                got: Some("lsi".into()),
                safe,
            }],
            digest: None,
            running: true,
            on: "h".into(),
            notes: vec![],
            hold,
        }
    }

    /// Issue 13 item 7: `--recreate` took every affected control plane at once.
    #[test]
    fn recreate_holds_all_control_planes_but_one() {
        let p = crate::test_support::homelab();
        let plan = Plan::build(&p).unwrap();
        let mut steps: BTreeMap<String, Step> = plan
            .nodes
            .iter()
            .map(|n| (n.name.clone(), adopt(false, false)))
            .collect();
        hold_control_planes(&plan, &mut steps);
        let held: Vec<bool> = plan
            .nodes
            .iter()
            .map(|n| matches!(steps[&n.name], Step::Adopt { hold: true, .. }))
            .collect();
        assert_eq!(held, [false, true, true]);
    }

    /// What `provision_settling` publishes before any write: the VMs left as they are.
    #[test]
    fn only_unsafe_differences_not_recreated_in_this_run_block() {
        assert!(!Step::Create.blocked(false));
        assert!(!adopt(true, false).blocked(false), "fixed in place");
        assert!(adopt(false, false).blocked(false), "needs --recreate");
        assert!(!adopt(false, false).blocked(true), "re-created now");
        assert!(
            adopt(false, true).blocked(true),
            "another control plane first"
        );
    }

    #[test]
    fn up_to_date_is_said_only_when_nothing_differs() {
        let vm = |action| VmReport {
            node: "n".into(),
            host: "h".into(),
            vmid: 120,
            action,
            differences: vec![],
            notes: vec![],
        };
        let mut r = ProvisionReport {
            vms: vec![vm(VmAction::UpToDate)],
            ..Default::default()
        };
        assert_eq!(
            r.unchanged_line(),
            Some("Everything is up to date (no changes made).")
        );
        r.vms.push(vm(VmAction::NeedsRecreate));
        assert_eq!(r.unchanged_line(), Some("No changes made."));
        r.writes = 1;
        assert_eq!(r.unchanged_line(), None);
    }
}

//! Integration tests: the real Proxmox client, provisioning, preflight and destroy
//! against the lab's simulated PVE over HTTPS on loopback.

use reqwest::Method;
use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret;
use talos_pve::cluster_id::ClusterId;
use talos_pve::lab::proxmox::{Fault, FaultEffect, LabProxmox, LabProxmoxConfig, LabProxmoxHandle};
use talos_pve::lab::{Fabric, LabEvent};
use talos_pve::plan::Plan;
use talos_pve::profile::Profile;
use talos_pve::proxmox::destroy::{destroy, owned_vms};
use talos_pve::proxmox::factory::Factory;
use talos_pve::proxmox::ownership::{Marker, Owner};
use talos_pve::proxmox::preflight::{Level, preflight};
use talos_pve::proxmox::provision::{ProvisionError, ProvisionOptions, VmAction, provision};
use talos_pve::proxmox::{
    Client, ClientConfig, Credentials, PollPolicy, PveError, RetryPolicy, Trust, inventory,
};

use super::support;
use super::support::homelab;

struct Lab {
    fabric: Fabric,
    pve: LabProxmoxHandle,
    client: Client,
    factory: Factory,
    profile: Profile,
    plan: Plan,
    /// The cluster this test's provisioning acts for.
    owner: Owner,
}

/// An owner of the homelab cluster with the ID made from `seed`.
fn owner(seed: &str) -> Owner {
    Owner {
        cluster: "homelab".into(),
        id: ClusterId::of(seed),
        recorded: BTreeMap::new(),
    }
}

async fn lab_with(config: LabProxmoxConfig, fast: bool) -> Lab {
    talos_pve::tls::install_provider();
    let mut profile = homelab();
    let fabric = Fabric::new();
    let pve = LabProxmox::start(&fabric, config, &profile.proxmox)
        .await
        .unwrap();
    profile.talos.image_factory = pve.factory_url();
    let plan = Plan::build(&profile).unwrap();
    let creds = Credentials::parse_token(pve.api_token().expose_secret(), "test").unwrap();
    let trust = Trust::Fingerprint(pve.fingerprint.clone());
    let mut cfg = ClientConfig::new(&profile.proxmox.endpoint, creds, trust.clone());
    if fast {
        cfg.retry = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(5),
            cap: Duration::from_millis(40),
        };
        cfg.poll = PollPolicy {
            first: Duration::from_millis(5),
            max: Duration::from_millis(40),
        };
    }
    let client = Client::new(cfg, &fabric.addresses).unwrap();
    let factory = Factory::new(&profile.talos.image_factory, &trust, &fabric.addresses).unwrap();
    Lab {
        fabric,
        pve,
        client,
        factory,
        profile,
        plan,
        owner: owner("a"),
    }
}

async fn lab() -> Lab {
    lab_with(LabProxmoxConfig::default(), true).await
}

/// A fault answering `times` matching requests with HTTP `code` and `message`.
fn status_fault(method: &str, path: &str, times: u32, code: u16, message: &str) -> Fault {
    let message = message.into();
    Fault::new(method, path, times, FaultEffect::Status { code, message })
}

/// A fault failing the first matching request's task with `message`.
fn task_error(method: &str, path: &str, message: &str) -> Fault {
    let message = message.into();
    Fault::new(method, path, 1, FaultEffect::TaskError { message })
}

/// A VM config from `(key, value)` pairs.
fn strings(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl Lab {
    /// Power every planned VM on (provision leaves them off; `up` boots them with
    /// their cidata).
    async fn start_all(&self) {
        for n in &self.plan.nodes {
            self.client
                .run_task(
                    Method::POST,
                    &format!("/nodes/{}/qemu/{}/status/start", n.host, n.vmid),
                    &[],
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
        }
    }

    async fn provision(
        &self,
        recreate: bool,
    ) -> Result<talos_pve::proxmox::provision::ProvisionReport, ProvisionError> {
        self.provision_as(&self.owner, recreate).await
    }
    async fn provision_as(
        &self,
        owner: &Owner,
        recreate: bool,
    ) -> Result<talos_pve::proxmox::provision::ProvisionReport, ProvisionError> {
        let opts = ProvisionOptions {
            recreate,
            owner: owner.clone(),
        };
        provision(&self.client, &self.factory, &self.profile, &self.plan, opts).await
    }
    fn writes(&self) -> Vec<String> {
        self.pve
            .requests()
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| format!("{} {}", r.method, r.path))
            .collect()
    }
}

#[tokio::test]
async fn provision_homelab_matches_the_plan_and_a_rerun_writes_nothing() {
    let l = lab().await;
    let mut events = l.fabric.events.subscribe();
    let report = l.provision(false).await.unwrap();
    assert_eq!(report.vms.len(), 3);
    assert!(
        report.vms.iter().all(|v| v.action == VmAction::Created),
        "{report:?}"
    );
    assert!(report.isos.iter().all(|i| i.downloaded));
    let factory: Vec<String> = l
        .pve
        .factory_requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    // Registered once; the ISO fetched once to give every host its checksum
    // (the lab factory's CA is talos-pve's to trust, not the hosts').
    assert_eq!(factory.len(), 2, "{factory:?}");
    assert_eq!(factory[0], "POST /schematics");
    assert!(factory[1].starts_with("GET /image/"), "{factory:?}");
    for r in l
        .pve
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/download-url"))
    {
        let p: BTreeMap<&str, &str> = r
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(p.get("checksum-algorithm"), Some(&"sha512"), "{p:?}");
        assert_eq!(p.get("verify-certificates"), Some(&"0"), "{p:?}");
    }

    for n in &l.plan.nodes {
        let c = inventory::config(&l.client, &n.host, n.vmid).await.unwrap();
        assert_eq!(
            c["net0"],
            format!("virtio={},bridge=vmbr0,firewall=0,tag=16", n.management.mac)
        );
        assert_eq!(
            c["net1"],
            format!(
                "virtio={},bridge=vmbr0,firewall=0,tag=28",
                n.workload.as_ref().unwrap().mac
            )
        );
        // No generated cloud-init drive: the node's own cidata volume goes into
        // this empty CD-ROM drive when `up` boots it.
        for k in [
            "ipconfig0",
            "ipconfig1",
            "citype",
            "nameserver",
            "searchdomain",
        ] {
            assert!(!c.contains_key(k), "{k} is set: {c:?}");
        }
        assert_eq!(c["ide0"], "none,media=cdrom");
        assert_eq!(c["cpu"], "host");
        assert_eq!(c["scsihw"], "virtio-scsi-pci");
        assert_eq!(c["balloon"], "0");
        assert_eq!(c["machine"], "q35");
        assert_eq!(c["bios"], "ovmf");
        assert_eq!(c["boot"], "order=scsi0;ide2");
        assert_eq!(
            c["ide2"],
            format!("local:iso/{},media=cdrom", l.plan.iso_file)
        );
        assert!(c["scsi0"].contains("size=64G"), "{}", c["scsi0"]);
        assert!(
            c["efidisk0"].contains("efitype=4m") && c["efidisk0"].contains("pre-enrolled-keys=0")
        );
        assert_eq!(
            c["tags"],
            format!(
                "controlplane;talos;talos-pve;talos-pve-cluster.{};talos-pve-node.{}",
                l.owner.id, n.name
            )
        );
        assert_eq!(inventory::marker(&c), Some(Marker::new(&l.owner, &n.name)));
        let st: serde_json::Value = l
            .client
            .get(
                &format!("/nodes/{}/qemu/{}/status/current", n.host, n.vmid),
                &[],
            )
            .await
            .unwrap();
        // A VM must not boot before its cidata volume (its config) is attached.
        assert_eq!(st["status"], "stopped");
    }
    while let Ok(e) = events.try_recv() {
        assert!(
            !matches!(e, LabEvent::VmStarted(_)),
            "provision started a VM"
        );
    }

    l.pve.clear_requests();
    let again = l.provision(false).await.unwrap();
    assert!(again.up_to_date(), "{again:?}");
    assert!(again.vms.iter().all(|v| v.action == VmAction::UpToDate));
    assert_eq!(l.writes(), Vec::<String>::new(), "a re-run must not write");
    assert!(l.pve.factory_requests().is_empty());
}

#[tokio::test]
async fn full_provision_stays_within_the_request_budget() {
    // Realistic task durations and the default (adaptive) polling.
    let cfg = LabProxmoxConfig {
        task_ms: [("qmcreate", 1200), ("qmstart", 400), ("download", 2500)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
        ..Default::default()
    };
    let l = lab_with(cfg, false).await;
    let report = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    assert!(report.passed(), "{report:#?}");
    let preflight_requests = l.pve.requests().len();
    l.provision(false).await.unwrap();
    let reqs = l.pve.requests();
    println!(
        "provision alone: {} requests = {:.1} per node",
        reqs.len() - preflight_requests,
        (reqs.len() - preflight_requests) as f64 / 3.0
    );
    let per_node = reqs.len() as f64 / 3.0;
    let mut by_method = BTreeMap::new();
    for r in &reqs {
        *by_method.entry(r.method.clone()).or_insert(0) += 1;
    }
    println!(
        "preflight + provision: {} requests for 3 nodes = {per_node:.1} per node; by method {by_method:?}",
        reqs.len()
    );
    let mut by_path = BTreeMap::new();
    for r in &reqs {
        let path = r.path.split("UPID").next().unwrap_or_default();
        *by_path.entry(format!("{} {path}", r.method)).or_insert(0) += 1;
    }
    println!("{by_path:#?}");
    assert!(per_node <= 25.0, "{per_node} requests per node");
}

#[tokio::test]
async fn an_interrupted_run_resumes() {
    let l = lab().await;
    l.pve.set_faults(vec![task_error(
        "POST",
        "/nodes/pve-ms01-02/qemu",
        "simulated crash while allocating",
    )]);
    let err = l.provision(false).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("unable to create VM 121 - simulated crash while allocating"),
        "{msg}"
    );
    l.pve.settle(Duration::from_secs(2)).await;
    let st = l.pve.state();
    assert!(!st.vms.contains_key(&121), "a failed create leaves nothing");
    assert!(st.vms.contains_key(&120) && st.vms.contains_key(&122));

    l.pve.clear_requests();
    let report = l.provision(false).await.unwrap();
    assert!(
        !l.writes().iter().any(|w| w.ends_with("/download-url")),
        "the ISO downloaded in the first run is reused: {:?}",
        l.writes()
    );
    let action = |id| report.vms.iter().find(|v| v.vmid == id).unwrap().action;
    assert_eq!(action(121), VmAction::Created);
    assert_eq!(action(120), VmAction::UpToDate);
    assert_eq!(action(122), VmAction::UpToDate);
    assert!(l.pve.state().vms.values().all(|v| !v.running));
}

#[tokio::test]
async fn transient_errors_are_retried_and_the_run_completes() {
    let l = lab().await;
    l.pve.set_faults(vec![
        status_fault(
            "GET",
            "/cluster/resources",
            1,
            595,
            "Errors during connection establishment, proxy handshake: No route to host",
        ),
        Fault::new(
            "POST",
            "/nodes/pve-ms01-01/qemu",
            2,
            FaultEffect::LockTimeout,
        ),
        Fault::new(
            "POST",
            "/nodes/pve-ms01-02/storage/local/download-url",
            1,
            FaultEffect::NoWorker,
        ),
    ]);
    let report = l.provision(false).await.unwrap();
    assert!(report.vms.iter().all(|v| v.action == VmAction::Created));
    let reqs = l.pve.requests();
    let failed: Vec<u16> = reqs
        .iter()
        .filter(|r| r.status >= 500)
        .map(|r| r.status)
        .collect();
    assert_eq!(failed.len(), 4, "{failed:?}");
    assert!(failed.contains(&595));
    assert_eq!(l.pve.state().vms.len(), 3);
}

#[tokio::test]
async fn creates_on_one_host_are_bounded() {
    let mut task_ms = BTreeMap::new();
    task_ms.insert("qmcreate".to_owned(), 300);
    let cfg = LabProxmoxConfig {
        task_ms,
        ..Default::default()
    };
    let mut l = lab_with(cfg, true).await;
    let host = l.profile.proxmox.hosts[0].name.clone();
    for n in &mut l.profile.nodes {
        n.host = host.clone();
    }
    l.plan = Plan::build(&l.profile).unwrap();
    let start = std::time::Instant::now();
    let r = l.provision(false).await.unwrap();
    assert_eq!(r.vms.len(), 3);
    // Three creates of 300 ms on one host, two at a time: two rounds at least
    // (all at once would take one).
    assert!(
        start.elapsed() >= Duration::from_millis(600),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_failed_task_stops_the_run_with_its_own_message() {
    let l = lab().await;
    l.pve.set_faults(vec![task_error(
        "POST",
        "/download-url",
        "download failed: 502 Bad Gateway",
    )]);
    let err = l.provision(false).await.unwrap_err();
    match err.cause() {
        ProvisionError::Pve(PveError::TaskFailed { message, node, .. }) => {
            assert_eq!(message, "download failed: 502 Bad Gateway");
            assert!(l.profile.proxmox.hosts.iter().any(|h| &h.name == node));
        }
        other => panic!("expected a task failure, got {other}"),
    }
    // What the other hosts did stays in the report (issue 13 item 10).
    let ProvisionError::Incomplete { done, failed } = &err else {
        panic!("expected the other hosts' work to be kept: {err}");
    };
    assert_eq!(failed.len(), 1);
    assert_eq!(done.vms.len(), 2, "{err}");
    assert!(done.vms.iter().all(|v| v.action == VmAction::Created));
    let text = err.to_string();
    assert!(
        text.starts_with("Proxmox task"),
        "the failure comes first: {text}"
    );
    assert!(text.contains("done on the other hosts"), "{text}");
    // Non-transient API errors are not retried either.
    let e = l
        .client
        .post("/nodes/pve-ms01-01/qemu", &[("vmid".into(), "99".into())])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    assert!(
        e.to_string()
            .contains("vmid: value must have a minimum value of 100"),
        "{e}"
    );
}

#[tokio::test]
async fn adopted_vms_are_compared_and_only_safe_drift_is_fixed() {
    let l = lab().await;
    l.provision(false).await.unwrap();
    l.client
        .put(
            "/nodes/pve-ms01-01/qemu/120/config",
            &[("cores".into(), "2".into())],
        )
        .await
        .unwrap();
    l.pve.clear_requests();
    let r = l.provision(false).await.unwrap();
    let vm = r.vms.iter().find(|v| v.vmid == 120).unwrap();
    assert_eq!(vm.action, VmAction::Updated);
    assert_eq!(vm.differences, vec!["cores: 2 → 4".to_owned()]);
    assert_eq!(
        l.writes(),
        vec!["PUT /api2/json/nodes/pve-ms01-01/qemu/120/config".to_owned()]
    );

    l.client
        .put(
            "/nodes/pve-ms01-01/qemu/120/config",
            &[("scsihw".into(), "virtio-scsi-single".into())],
        )
        .await
        .unwrap();
    let r = l.provision(false).await.unwrap();
    let vm = r.vms.iter().find(|v| v.vmid == 120).unwrap();
    assert_eq!(vm.action, VmAction::NeedsRecreate);
    assert!(
        vm.differences[0].contains("needs --recreate"),
        "{:?}",
        vm.differences
    );
    let r = l.provision(true).await.unwrap();
    assert_eq!(
        r.vms.iter().find(|v| v.vmid == 120).unwrap().action,
        VmAction::Recreated
    );
    let c = inventory::config(&l.client, "pve-ms01-01", 120)
        .await
        .unwrap();
    assert_eq!(c["scsihw"], "virtio-scsi-pci");
}

#[tokio::test]
async fn a_foreign_vm_on_a_planned_vmid_is_an_error_naming_it() {
    let l = lab().await;
    let cfg: BTreeMap<String, String> =
        strings(&[("name", "grafana"), ("description", "hand-made")]);
    l.pve.insert_vm("pve-ms01-02", 121, cfg, true);
    let err = l.provision(false).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ProvisionError::Foreign { vmid: 121, .. }),
        "{msg}"
    );
    assert!(msg.contains("`grafana` on host pve-ms01-02"), "{msg}");
    assert!(
        l.writes().is_empty(),
        "nothing is written before the check passes"
    );
    let pf = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    assert!(pf.failures().any(|c| c.what.contains("VMID 121")));
}

#[tokio::test]
async fn destroy_removes_exactly_this_clusters_vms() {
    let l = lab().await;
    l.provision(false).await.unwrap();
    let other: BTreeMap<String, String> = strings(&[
        ("name", "talos-other-01"),
        ("tags", "talos;talos-pve"),
        ("description", "talos-pve:cluster=other;node=talos-other-01"),
    ]);
    l.pve.insert_vm("pve-ms01-01", 500, other, true);
    l.pve.insert_vm(
        "pve-ms01-02",
        501,
        [("name".to_owned(), "pihole".to_owned())].into(),
        false,
    );
    let mut events = l.fabric.events.subscribe();
    let (owned, _) = owned_vms(&l.client, &l.owner, &[120, 121, 122])
        .await
        .unwrap();
    let ids: Vec<u32> = owned.iter().map(|v| v.vmid).collect();
    assert_eq!(ids, [120, 121, 122]);
    assert!(destroy(&l.client, &owned).await.left.is_empty());
    let left: Vec<u32> = l.pve.state().vms.keys().copied().collect();
    assert_eq!(left, [500, 501]);
    let mut destroyed = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let LabEvent::VmDestroyed { vmid } = e {
            destroyed.push(vmid);
        }
    }
    destroyed.sort();
    assert_eq!(destroyed, [120, 121, 122]);
}

#[tokio::test]
async fn preflight_lists_missing_privileges_with_pveum_commands() {
    let cfg = LabProxmoxConfig {
        token_privileges: Some(vec![
            "VM.Audit".into(),
            "Sys.Audit".into(),
            "Datastore.Audit".into(),
        ]),
        ..Default::default()
    };
    let l = lab_with(cfg, true).await;
    let r = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    assert!(!r.passed());
    let privs = r
        .checks
        .iter()
        .find(|c| c.what == "token privileges")
        .unwrap();
    assert_eq!(privs.level, Level::Fail);
    assert!(
        privs.detail.contains("VM.Allocate") && !privs.detail.contains("VM.Audit ("),
        "{}",
        privs.detail
    );
    assert!(privs.fix.as_deref().unwrap().contains(
        "pveum acl modify / --roles TalosPVE --users 'root@pam' --tokens 'root@pam!talos-pve'"
    ));
    assert!(
        r.checks
            .iter()
            .any(|c| c.what == "pve-ms01-01: bridge vmbr0" && c.level == Level::Ok)
    );
    assert_eq!(r.version.as_deref(), Some("9.1.3"));
}

#[tokio::test]
async fn the_token_secret_never_leaks() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let w = buf.clone();
    let sub = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || w.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(sub);
    tracing::callsite::rebuild_interest_cache();
    let l = lab().await;
    // Other tests run in parallel without a subscriber. A callsite whose first
    // registration (on their thread) overlaps `set_default` can store "never
    // interested" after a rebuild already ran, so one rebuild up front is not
    // enough. Once a request has gone through, the request callsite is registered
    // and a rebuild reaches it: rebuild until a probe request is seen.
    let seen = || String::from_utf8_lossy(&buf.0.lock().unwrap()).contains("proxmox request");
    for _ in 0..100 {
        tracing::callsite::rebuild_interest_cache();
        if seen() {
            break;
        }
        let _: serde_json::Value = l.client.get("/version", &[]).await.unwrap();
    }
    assert!(seen(), "trace logging of a probe request was captured");
    let probed = buf.0.lock().unwrap().len();
    let token = l.pve.api_token();
    let secret = token.expose_secret().split_once('=').unwrap().1.to_owned();
    l.pve.set_faults(vec![status_fault(
        "GET",
        "/cluster/resources",
        1,
        596,
        "Broken pipe",
    )]);
    l.provision(false).await.unwrap();
    // A wrong secret: 401, and the error does not echo what was sent.
    let wrong = format!("{}=not-{secret}", l.pve.token_id);
    let creds = Credentials::parse_token(&wrong, "test").unwrap();
    let bad = Client::new(
        ClientConfig::new(
            &l.profile.proxmox.endpoint,
            creds.clone(),
            Trust::Fingerprint(l.pve.fingerprint.clone()),
        ),
        &l.fabric.addresses,
    )
    .unwrap();
    let e = bad
        .get::<serde_json::Value>("/version", &[])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    let texts = [
        e.to_string(),
        format!("{e:?}"),
        format!("{creds:?}"),
        format!("{:?}", l.client),
        String::from_utf8_lossy(&buf.0.lock().unwrap()).into_owned(),
    ];
    assert!(
        texts[4][probed..].contains("proxmox request"),
        "trace logging was captured"
    );
    for t in &texts {
        assert!(!t.contains(&secret), "secret leaked into: {t}");
    }
}

#[tokio::test]
async fn ticket_login_works_and_writes_need_the_csrf_token() {
    let cfg = LabProxmoxConfig {
        password: Some("hunter2-lab".into()),
        ..Default::default()
    };
    let l = lab_with(cfg, true).await;
    let creds = Credentials::Password {
        user: "root@pam".into(),
        password: "hunter2-lab".to_owned().into(),
    };
    let c = Client::new(
        ClientConfig::new(
            &l.profile.proxmox.endpoint,
            creds,
            Trust::Fingerprint(l.pve.fingerprint.clone()),
        ),
        &l.fabric.addresses,
    )
    .unwrap();
    let v: serde_json::Value = c.get("/version", &[]).await.unwrap();
    assert_eq!(v["release"], "9.1");
    let e = c
        .put(
            "/nodes/pve-ms01-01/qemu/999/config",
            &[("cores".into(), "2".into())],
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("999.conf' does not exist"),
        "CSRF accepted, then 500: {e}"
    );
}

#[tokio::test]
async fn wrong_fingerprint_is_refused_before_any_request() {
    let l = lab().await;
    let creds = Credentials::parse_token(l.pve.api_token().expose_secret(), "t").unwrap();
    let other = talos_pve::tls::fingerprint(b"another certificate");
    let c = Client::new(
        ClientConfig::new(
            &l.profile.proxmox.endpoint,
            creds,
            Trust::Fingerprint(other),
        ),
        &l.fabric.addresses,
    )
    .unwrap();
    let e = c
        .get::<serde_json::Value>("/version", &[])
        .await
        .unwrap_err();
    assert!(
        matches!(&e, PveError::Certificate { fingerprint, .. } if *fingerprint == l.pve.fingerprint),
        "{e}"
    );
    assert!(l.pve.requests().is_empty());
}

#[tokio::test]
async fn lab_state_round_trips_through_serde() {
    let l = lab().await;
    l.provision(false).await.unwrap();
    let json = serde_json::to_string(&l.pve.state()).unwrap();
    let state: talos_pve::lab::proxmox::LabPveState = serde_json::from_str(&json).unwrap();
    let fp = l.pve.fingerprint.clone();
    l.pve.shutdown();
    let again = LabProxmox::from_state(&l.fabric, LabProxmoxConfig::default(), state)
        .await
        .unwrap();
    assert_eq!(again.fingerprint, fp, "same certificate after a restart");
    // A new client resolves the endpoint again: the address book now maps it to the new listener.
    let creds = Credentials::parse_token(again.api_token().expose_secret(), "t").unwrap();
    let c = Client::new(
        ClientConfig::new(&l.profile.proxmox.endpoint, creds, Trust::Fingerprint(fp)),
        &l.fabric.addresses,
    )
    .unwrap();
    let r = provision(
        &c,
        &l.factory,
        &l.profile,
        &l.plan,
        ProvisionOptions {
            recreate: false,
            owner: l.owner.clone(),
        },
    )
    .await
    .unwrap();
    assert!(r.up_to_date(), "{r:?}");
    assert!(again.state().vms.values().all(|v| !v.running));
}

/// Every request the client sent in a broad run, checked against the PVE 9.1 schema.
#[tokio::test]
async fn every_request_the_client_sends_conforms_to_the_pve_schema() {
    let Some(path) = support::reference("data/proxmox/pve-apidata-flat.json") else {
        return;
    };
    let schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let l = lab().await;
    l.pve.set_faults(vec![Fault::new(
        "POST",
        "/status/start",
        1,
        FaultEffect::NoWorker,
    )]);
    preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    l.provision(false).await.unwrap();
    l.client
        .put(
            "/nodes/pve-ms01-01/qemu/120/config",
            &[("cores".into(), "2".into()), ("onboot".into(), "1".into())],
        )
        .await
        .unwrap();
    l.client
        .put(
            "/nodes/pve-ms01-01/qemu/120/config",
            &[("scsihw".into(), "lsi".into())],
        )
        .await
        .unwrap();
    l.provision(false).await.unwrap();
    l.provision(true).await.unwrap();
    let (owned, _) = owned_vms(&l.client, &l.owner, &[]).await.unwrap();
    assert!(destroy(&l.client, &owned).await.left.is_empty());

    let reqs = l.pve.requests();
    assert!(reqs.len() > 40, "a broad sample: {}", reqs.len());
    let mut problems = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for r in &reqs {
        let api = r.path.strip_prefix("/api2/json").unwrap_or(&r.path);
        match check_request(&schema, &r.method, api, &r.params) {
            Ok(template) => {
                seen.insert(format!("{} {template}", r.method));
            }
            Err(e) => problems.push(format!("{} {api}: {e}", r.method)),
        }
    }
    println!(
        "checked {} requests on {} endpoints: {seen:#?}",
        reqs.len(),
        seen.len()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    // The checker itself rejects what PVE rejects.
    let p = |k: &str, v: &str| {
        vec![
            ("vmid".to_owned(), "120".to_owned()),
            (k.to_owned(), v.to_owned()),
        ]
    };
    assert!(
        check_request(
            &schema,
            "POST",
            "/nodes/pve-ms01-01/qemu",
            &p("onboot", "true")
        )
        .is_err()
    );
    assert!(
        check_request(
            &schema,
            "POST",
            "/nodes/pve-ms01-01/qemu",
            &p("net0", "virtio,bridge=vmbr0,vlan=16")
        )
        .is_err()
    );
    assert!(
        check_request(
            &schema,
            "POST",
            "/nodes/pve-ms01-01/qemu",
            &p("name", "talos_k8s")
        )
        .is_err()
    );
    assert!(
        check_request(
            &schema,
            "POST",
            "/nodes/pve-ms01-01/qemu",
            &p("scsihw", "virtio")
        )
        .is_err()
    );
    assert!(
        check_request(
            &schema,
            "POST",
            "/nodes/pve-ms01-01/qemu",
            &p("frobnicate", "1")
        )
        .is_err()
    );
    assert!(check_request(&schema, "GET", "/nodes/pve-ms01-01/qemu/120/frob", &[]).is_err());
    assert!(
        check_request(
            &schema,
            "POST",
            "/nodes/pve-ms01-01/qemu",
            &p(
                "net0",
                "virtio=BC:24:11:00:16:20,bridge=vmbr0,tag=16,firewall=0"
            )
        )
        .is_ok()
    );
    for must in [
        "POST /nodes/{node}/qemu",
        "DELETE /nodes/{node}/qemu/{vmid}",
        "PUT /nodes/{node}/qemu/{vmid}/config",
        "POST /nodes/{node}/storage/{storage}/download-url",
    ] {
        assert!(seen.contains(must), "{must} was exercised");
    }
}

/// The schema path template the request matches, or what is wrong with it.
fn check_request(
    schema: &serde_json::Value,
    method: &str,
    path: &str,
    params: &[(String, String)],
) -> Result<String, String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (template, path_params) = schema
        .as_object()
        .unwrap()
        .keys()
        .find_map(|t| {
            let ts: Vec<&str> = t.trim_matches('/').split('/').collect();
            if ts.len() != segs.len() {
                return None;
            }
            let mut pp = Vec::new();
            for (a, b) in ts.iter().zip(&segs) {
                if a.starts_with('{') {
                    pp.push((a.trim_matches(['{', '}']).to_owned(), (*b).to_owned()));
                } else if a != b {
                    return None;
                }
            }
            Some((t.clone(), pp))
        })
        .ok_or("no such path in the schema")?;
    let info = schema[&template]
        .get(method)
        .ok_or_else(|| format!("{template} has no {method}"))?;
    let props = info["parameters"]["properties"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (k, v) in path_params.iter().chain(params) {
        let spec = props
            .get(k)
            .or_else(|| {
                let base = k.trim_end_matches(|c: char| c.is_ascii_digit());
                (base.len() < k.len())
                    .then(|| props.get(&format!("{base}[n]")))
                    .flatten()
            })
            .ok_or_else(|| format!("unknown parameter `{k}`"))?;
        check_value(spec, v, true).map_err(|e| format!("`{k}`=`{v}`: {e}"))?;
    }
    for (k, spec) in &props {
        let required =
            spec.get("optional").and_then(|o| o.as_u64()) != Some(1) && !k.contains("[n]");
        if required && !path_params.iter().chain(params).any(|(pk, _)| pk == k) {
            return Err(format!("required parameter `{k}` missing"));
        }
    }
    Ok(template)
}

fn check_value(spec: &serde_json::Value, v: &str, top: bool) -> Result<(), String> {
    if let Some(vals) = spec.get("enum").and_then(|e| e.as_array())
        && !vals.iter().any(|x| x.as_str() == Some(v))
    {
        return Err(format!("not in enum {vals:?}"));
    }
    if let Some(p) = spec.get("pattern").and_then(|p| p.as_str()) {
        let re = regex::Regex::new(&format!("^(?:{p})$")).map_err(|e| e.to_string())?;
        if !re.is_match(v) {
            return Err(format!("does not match /{p}/"));
        }
    }
    if let Some(max) = spec.get("maxLength").and_then(|m| m.as_u64())
        && v.len() as u64 > max
    {
        return Err(format!("longer than {max}"));
    }
    match spec.get("type").and_then(|t| t.as_str()) {
        Some("boolean") => {
            let ok = if top {
                v == "0" || v == "1"
            } else {
                ["0", "1", "on", "off", "yes", "no", "true", "false"].contains(&v)
            };
            if !ok {
                return Err("not a 1/0 boolean".into());
            }
        }
        Some("integer") => {
            let n: i64 = v.parse().map_err(|_| "not an integer".to_owned())?;
            if spec
                .get("minimum")
                .and_then(|m| m.as_i64())
                .is_some_and(|m| n < m)
                || spec
                    .get("maximum")
                    .and_then(|m| m.as_i64())
                    .is_some_and(|m| n > m)
            {
                return Err("out of range".into());
            }
        }
        Some("number") => {
            v.parse::<f64>().map_err(|_| "not a number".to_owned())?;
        }
        _ => {}
    }
    match spec.get("format") {
        Some(serde_json::Value::Object(fmt)) => check_property_string(fmt, v),
        Some(serde_json::Value::String(name)) => check_named_format(name, v),
        _ => Ok(()),
    }
}

fn check_property_string(
    fmt: &serde_json::Map<String, serde_json::Value>,
    v: &str,
) -> Result<(), String> {
    let default_key = fmt
        .iter()
        .find(|(_, s)| s.get("default_key").and_then(|d| d.as_u64()) == Some(1))
        .map(|(k, _)| k.clone());
    for (i, tok) in v.split(',').enumerate() {
        let (k, val) = match tok.split_once('=') {
            Some((k, val)) => (k.to_owned(), val),
            None if i == 0 => (
                default_key
                    .clone()
                    .ok_or("key-less token but no default key")?,
                tok,
            ),
            None => return Err(format!("token `{tok}` has no key")),
        };
        let mut spec = fmt.get(&k).ok_or_else(|| format!("unknown key `{k}`"))?;
        if let Some(alias) = spec.get("alias").and_then(|a| a.as_str()) {
            spec = fmt
                .get(alias)
                .ok_or_else(|| format!("alias `{alias}` missing"))?;
        }
        check_value(spec, val, false).map_err(|e| format!("{k}: {e}"))?;
    }
    Ok(())
}

/// The named formats the installer uses, checked as PVE defines them.
fn check_named_format(name: &str, v: &str) -> Result<(), String> {
    let label = regex::Regex::new(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$").unwrap();
    let ok = match name {
        "pve-node" => label.is_match(v),
        "dns-name" => v.split('.').all(|l| label.is_match(l)),
        "pve-vmid" => v.parse::<u32>().is_ok_and(|n| n >= 100),
        "pve-storage-id" => regex::Regex::new(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$")
            .unwrap()
            .is_match(v),
        "pve-tag-list" => v.split([';', ',', ' ']).filter(|t| !t.is_empty()).all(|t| {
            regex::Regex::new(r"^[a-z0-9_][a-z0-9_\-+.]*$")
                .unwrap()
                .is_match(&t.to_lowercase())
        }),
        "address-list" => v
            .split([' ', ',', ';'])
            .filter(|a| !a.is_empty())
            .all(|a| a.parse::<std::net::IpAddr>().is_ok()),
        "pve-qm-ipconfig" => v.split(',').all(|kv| match kv.split_once('=') {
            Some(("ip", ip)) => ip == "dhcp" || ip.parse::<ipnet::Ipv4Net>().is_ok(),
            Some(("gw", gw)) => gw.parse::<std::net::Ipv4Addr>().is_ok(),
            Some(("ip6" | "gw6", _)) => true,
            _ => false,
        }),
        "pve-qm-boot" => v.split(',').all(|kv| match kv.split_once('=') {
            Some(("order", o)) => o.split(';').all(|d| {
                regex::Regex::new(r"^(ide|sata|scsi|virtio|net)\d+$")
                    .unwrap()
                    .is_match(d)
            }),
            Some(("legacy", l)) => regex::Regex::new(r"^[acdn]{1,4}$").unwrap().is_match(l),
            _ => false,
        }),
        "pve-vm-cpu-conf" => v
            .split(',')
            .enumerate()
            .all(|(i, kv)| i == 0 && !kv.contains('=') || kv.contains('=')),
        // qemu-server `verify_volume_id_or_qm_path` also takes `none` and `cdrom`.
        "pve-volume-id-or-qm-path" => {
            v == "none" || v == "cdrom" || v.contains(':') || v.starts_with('/')
        }
        "pve-volume-id" => v.contains(':') || v.starts_with('/'),
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("not a valid {name}"))
    }
}

/// The real binary: preflight passes, destroy refuses without a terminal or
/// `--yes`, and with `--yes` removes exactly the cluster's VMs. The token
/// travels in the environment only and never shows up in the output.
#[tokio::test]
async fn cli_provision_preflight_and_destroy_against_the_lab() {
    let l = lab().await;
    l.pve.insert_vm(
        "pve-ms01-01",
        777,
        [("name".to_owned(), "keep-me".to_owned())].into(),
        true,
    );
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(support::profile("homelab.yaml")).unwrap();
    let profile = dir.path().join("homelab.yaml");
    std::fs::write(
        &profile,
        text.replace(
            "https://10.8.16.10:8006",
            &format!("https://{}", l.pve.listen),
        ),
    )
    .unwrap();
    let token = l.pve.api_token();
    let secret = token.expose_secret().split_once('=').unwrap().1.to_owned();
    let run = |args: Vec<&str>| {
        let mut c = tokio::process::Command::new(support::bin());
        c.args(&args)
            .arg("--profile")
            .arg(&profile)
            .env("PROXMOX_VE_API_TOKEN", token.expose_secret())
            .env("PROXMOX_VE_FINGERPRINT", &l.pve.fingerprint)
            .env("TALOS_PVE_LOOPBACK_ONLY", "1")
            // The cluster directory (its ID) stays in the test's temporary directory.
            .env("TALOS_PVE_DIR", dir.path().join("cluster"))
            .env("TALOS_PVE_IMAGE_FACTORY", l.pve.factory_url())
            .env("TALOS_PVE_IMAGE_FACTORY_FINGERPRINT", &l.pve.fingerprint)
            .env_remove("PROXMOX_VE_ENDPOINT")
            .stdin(std::process::Stdio::null());
        for a in &args {
            assert!(
                !a.contains(&secret),
                "the secret is never a process argument"
            );
        }
        c.output()
    };
    let out = run(vec!["provision"]).await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("VM 120 talos-k8s-01 on pve-ms01-01: created"),
        "{stdout}"
    );
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret));
    let out = run(vec!["provision"]).await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Everything is up to date (no changes made)."),
        "{stdout}"
    );
    assert!(
        stdout.contains("VM 121 talos-k8s-02 on pve-ms01-02: up to date"),
        "{stdout}"
    );

    let out = run(vec!["-vv", "preflight"]).await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("[ok  ] token privileges"), "{stdout}");
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret));

    let out = run(vec!["destroy"]).await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("120 talos-k8s-01 on pve-ms01-01"),
        "{stdout}"
    );
    assert!(!stdout.contains("keep-me"));
    assert!(
        stderr.contains("refusing to destroy without confirmation") && stderr.contains("--yes"),
        "{stderr}"
    );
    assert_eq!(l.pve.state().vms.len(), 4, "nothing was touched");

    // A second cluster directory made from the same profile has its own ID: its
    // provision refuses the first's VMs, its destroy deletes none of them.
    let other = dir.path().join("other");
    talos_pve::cluster_id::establish(&talos_pve::cluster_dir::ClusterDir {
        root: other.clone(),
    })
    .unwrap();
    let o = other.to_str().unwrap();
    let out = run(vec!["provision", "--dir", o]).await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("not a VM of cluster `homelab` (ID"),
        "{stderr}"
    );
    let out = run(vec!["destroy", "--yes", "--dir", o]).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("Skipping VM 120 talos-k8s-01 on pve-ms01-01: it belongs to another cluster of the same name")
            && stdout.contains("nothing to destroy"),
        "{stdout}"
    );
    assert_eq!(
        l.pve.state().vms.len(),
        4,
        "none of the first's VMs is gone"
    );

    // One host offline: the others' VMs go, the rest is reported, exit non-zero.
    l.pve
        .edit_state(|st| st.nodes.get_mut("pve-aimax-01").unwrap().online = false);
    let out = run(vec!["destroy", "--yes"]).await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("Destroyed 2 VMs."), "{stdout}");
    assert!(
        stderr.contains("1 of 3 VMs were not destroyed")
            && stderr.contains("VM 122 talos-k8s-03 on pve-aimax-01: ")
            && stderr.contains("left to do: when pve-aimax-01 answers again"),
        "{stderr}"
    );
    let left: Vec<u32> = l.pve.state().vms.keys().copied().collect();
    assert_eq!(left, [122, 777]);
    l.pve
        .edit_state(|st| st.nodes.get_mut("pve-aimax-01").unwrap().online = true);
    let out = run(vec!["destroy", "--yes"]).await.unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(!stdout.contains(&secret) && !stderr.contains(&secret));
    let left: Vec<u32> = l.pve.state().vms.keys().copied().collect();
    assert_eq!(left, [777]);
}

#[tokio::test]
async fn preflight_audits_bridges_and_the_storage_bond() {
    let l = lab().await;
    let mut state = l.pve.state();
    let n2 = state.nodes.get_mut("pve-ms01-02").unwrap();
    n2.network
        .iter_mut()
        .find(|i| i.iface == "vmbr0")
        .unwrap()
        .vlan_aware = false;
    let ovs = state.nodes.get_mut("pve-ms01-01").unwrap();
    let b = ovs.network.iter_mut().find(|i| i.iface == "vmbr0").unwrap();
    (b.kind, b.vlan_aware, b.vids) = ("OVSBridge".into(), false, None);
    let n3 = state.nodes.get_mut("pve-aimax-01").unwrap();
    n3.network
        .iter_mut()
        .find(|i| i.iface == "bond0")
        .unwrap()
        .mtu = Some(1500);
    n3.storages
        .iter_mut()
        .find(|s| s.id == "local")
        .unwrap()
        .content = vec!["backup".into()];
    l.pve.shutdown();
    let pve = LabProxmox::from_state(&l.fabric, LabProxmoxConfig::default(), state)
        .await
        .unwrap();
    let creds = Credentials::parse_token(pve.api_token().expose_secret(), "t").unwrap();
    let c = Client::new(
        ClientConfig::new(
            &l.profile.proxmox.endpoint,
            creds,
            Trust::Fingerprint(pve.fingerprint.clone()),
        ),
        &l.fabric.addresses,
    )
    .unwrap();
    let r = preflight(&c, &l.profile, &l.plan).await.unwrap();
    let find = |what: &str| {
        r.checks
            .iter()
            .find(|c| c.what == what)
            .unwrap_or_else(|| panic!("{what}: {r:#?}"))
    };
    let bridge = find("pve-ms01-02: bridge vmbr0");
    assert_eq!(bridge.level, Level::Warn);
    assert!(bridge.detail.contains("vmbr0v16"), "{}", bridge.detail);
    // An Open vSwitch bridge has no vlan-aware flag and needs none (issue 13 item 10).
    assert_eq!(find("pve-ms01-01: bridge vmbr0").level, Level::Ok);
    assert!(
        find("pve-ms01-01: bridge vmbr0")
            .detail
            .contains("Open vSwitch")
    );
    let bond = find("pve-aimax-01: bond0");
    assert_eq!(bond.level, Level::Warn);
    assert!(
        bond.detail.contains("MTU 1500, the profile says 9000"),
        "{}",
        bond.detail
    );
    let iso = find("pve-aimax-01: storage local");
    assert_eq!(iso.level, Level::Fail);
    assert!(!r.passed());
    assert_eq!(find("pve-ms01-01: storage local-lvm").level, Level::Ok);
}

/// Issue 13 item 3: while a create runs, PVE's config holds only `lock: create`
/// and `/cluster/resources` shows the lock and no name. A second run meanwhile
/// waits for that create and adopts the VM instead of calling it foreign.
#[tokio::test]
async fn a_rerun_during_a_slow_create_waits_for_it_and_adopts_the_vm() {
    let cfg = LabProxmoxConfig {
        task_ms: [("qmcreate".to_owned(), 600)].into(),
        ..Default::default()
    };
    let l = lab_with(cfg, true).await;
    let second = async {
        // The first run's creates have been dispatched, none has ended.
        loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            if l.pve.state().vms.len() == 3 {
                break;
            }
        }
        let cfg = inventory::config(&l.client, "pve-ms01-01", 120)
            .await
            .unwrap();
        assert_eq!(
            cfg.keys().collect::<Vec<_>>(),
            ["digest", "lock"],
            "only the lock while creating"
        );
        let rows: Vec<serde_json::Value> = l
            .client
            .get("/cluster/resources", &[("type".into(), "vm".into())])
            .await
            .unwrap();
        let row = rows.iter().find(|r| r["vmid"] == 120).unwrap();
        assert_eq!(row["lock"], "create");
        assert!(row.get("name").is_none(), "{row}");
        l.provision(false).await
    };
    let (first, second) = tokio::join!(l.provision(false), second);
    assert!(
        first
            .unwrap()
            .vms
            .iter()
            .all(|v| v.action == VmAction::Created)
    );
    let second = second.unwrap();
    assert!(
        second.vms.iter().all(|v| v.action == VmAction::UpToDate),
        "{second:?}"
    );
    assert!(
        l.pve
            .requests()
            .iter()
            .any(|q| q.path.ends_with("/qemu/120/status/current")),
        "it waited for the lock"
    );
}

/// Issue 13 item 3: a create whose worker never ran leaves a `lock: create` stub;
/// preflight and provision name it with the remedy (only root can clear it).
#[tokio::test]
async fn a_stub_left_by_a_killed_create_is_reported_with_the_remedy() {
    let l = lab().await;
    l.pve.set_faults(vec![Fault::new(
        "POST",
        "/nodes/pve-ms01-01/qemu",
        1,
        FaultEffect::NoWorker,
    )]);
    let e = l.provision(false).await.unwrap_err();
    assert!(
        matches!(e.cause(), ProvisionError::Stub { vmid: 120, .. }),
        "{e}"
    );
    assert_eq!(l.pve.state().vms[&120].config.len(), 1, "the stub stays");
    let e = l.provision(false).await.unwrap_err();
    assert!(
        matches!(e.cause(), ProvisionError::Stub { vmid: 120, .. }),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("only `lock: create`"), "{msg}");
    assert!(
        msg.contains("fix: as root on pve-ms01-01: `qm unlock 120 && qm destroy 120`"),
        "{msg}"
    );
    let pf = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    let c = pf
        .checks
        .iter()
        .find(|c| c.what == "VMID 120 (talos-k8s-01)")
        .unwrap();
    assert_eq!(c.level, Level::Fail, "{c:?}");
    assert!(c.fix.as_deref().unwrap().contains("qm unlock 120"), "{c:?}");
}

/// Issue 13 item 2: with `start=1` PVE forks the start as its own `qmstart` task;
/// `qmcreate` ends OK even when the start fails. Our explicit start waits for its
/// task and reports the failure.
#[tokio::test]
async fn start_runs_as_its_own_task_and_a_failed_start_is_reported() {
    let l = lab().await;
    l.pve.set_faults(vec![Fault::new(
        "POST",
        "/nodes/pve-ms01-01/qemu",
        1,
        FaultEffect::StartError {
            message: "start failed: QEMU exited with code 1".into(),
        },
    )]);
    let upid = l
        .client
        .run_task(
            Method::POST,
            "/nodes/pve-ms01-01/qemu",
            &[
                ("vmid".into(), "130".into()),
                ("name".into(), "other".into()),
                ("start".into(), "1".into()),
            ],
            Duration::from_secs(5),
        )
        .await
        .expect("qmcreate ends OK");
    let log: Vec<serde_json::Value> = l
        .client
        .get(&format!("/nodes/pve-ms01-01/tasks/{}/log", upid.upid), &[])
        .await
        .unwrap();
    assert!(log.iter().any(|l| l["t"] == "Execute autostart"), "{log:?}");
    l.pve.settle(Duration::from_secs(2)).await;
    let starts: Vec<serde_json::Value> = l
        .client
        .get(
            "/nodes/pve-ms01-01/tasks",
            &[
                ("source".into(), "all".into()),
                ("typefilter".into(), "qmstart".into()),
                ("vmid".into(), "130".into()),
            ],
        )
        .await
        .unwrap();
    assert_eq!(starts.len(), 1, "{starts:?}");
    assert_eq!(starts[0]["status"], "start failed: QEMU exited with code 1");
    assert!(!l.pve.state().vms[&130].running);

    // Our own start (cidata delivery) waits for its task and reports the error.
    use talos_pve::proxmox::cidata::{Volume, deliver};
    l.provision(false).await.unwrap();
    let n = &l.plan.nodes[0];
    l.pve.set_faults(vec![Fault::new(
        "POST",
        "/status/start",
        1,
        FaultEffect::StartError {
            message: "start failed: QEMU exited with code 1".into(),
        },
    )]);
    let v = Volume::of(&l.plan.cluster, &l.profile.proxmox.iso_storage, n);
    let img =
        talos_pve::talos::cidata::image(&n.name, "homelab-120", b"version: v1alpha1\n").unwrap();
    let e = deliver(&l.client, &v, &img).await.unwrap_err();
    assert!(e.to_string().contains("QEMU exited with code 1"), "{e}");
    assert!(!l.pve.state().vms[&120].running);
}

#[tokio::test]
async fn errors_without_a_body_take_the_reason_phrase_and_reads_give_up_after_the_cap() {
    let l = lab().await;
    let msg = "Errors during connection establishment, proxy handshake: No route to host";
    l.pve
        .set_faults(vec![status_fault("GET", "/version", 10, 595, msg)]);
    let e = l
        .client
        .get::<serde_json::Value>("/version", &[])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(595));
    assert!(e.to_string().ends_with(msg), "{e}");
    assert_eq!(
        l.pve.requests().len(),
        5,
        "retried up to the attempt cap, then gave up"
    );
    // Writes are not retried on 595: the proxy may have forwarded them.
    l.pve
        .set_faults(vec![status_fault("PUT", "/config", 10, 595, msg)]);
    l.pve.clear_requests();
    let e = l
        .client
        .put(
            "/nodes/pve-ms01-01/qemu/120/config",
            &[("cores".into(), "2".into())],
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(595));
    assert_eq!(l.pve.requests().len(), 1);
}

/// The PVE rules the client relies on, checked on the lab directly.
#[tokio::test]
async fn the_lab_behaves_like_pve_where_the_client_depends_on_it() {
    let l = lab().await;
    l.provision(false).await.unwrap();
    l.start_all().await;
    let node = &l.plan.nodes[0];
    let create = create_body(&l);
    // A taken VMID fails synchronously, naming the node.
    let e = l
        .client
        .post("/nodes/pve-ms01-02/qemu", &create)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(500));
    assert!(
        e.to_string()
            .contains("VM 120 already exists on node 'pve-ms01-01'"),
        "{e}"
    );
    // download-url without a checksum refuses to overwrite (as a task error).
    let dl = [
        ("url".to_owned(), l.plan.iso_url.clone()),
        ("filename".to_owned(), l.plan.iso_file.clone()),
        ("content".to_owned(), "iso".to_owned()),
    ];
    let e = l
        .client
        .run_task(
            Method::POST,
            "/nodes/pve-ms01-01/storage/local/download-url",
            &dl,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("refusing to override existing file"),
        "{e}"
    );
    // Deleting a running VM is refused synchronously; stopped, it goes.
    let path = format!("/nodes/{}/qemu/{}", node.host, node.vmid);
    let e = l.client.delete(&path, &[]).await.unwrap_err();
    assert!(e.to_string().contains("is running - destroy failed"), "{e}");
    // Starting a running VM: the task fails with "already running".
    let e = l
        .client
        .run_task(
            Method::POST,
            &format!("{path}/status/start"),
            &[],
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().ends_with("VM 120 already running"), "{e}");
    // Booleans are 1/0 only at the top level; tags are sorted; unknown NIC keys refused.
    for (key, value, want) in [
        (
            "onboot",
            "true",
            "onboot: type check ('boolean') failed - got 'true'",
        ),
        (
            "net0",
            "virtio,bridge=vmbr0,vlan=16",
            "invalid key in comma-separated list property: vlan",
        ),
        (
            "name",
            "talos_k8s",
            "value does not look like a valid DNS name",
        ),
    ] {
        let e = l
            .client
            .put(&format!("{path}/config"), &[(key.into(), value.into())])
            .await
            .unwrap_err();
        assert!(e.to_string().contains(want), "{key}={value}: {e}");
    }
    // A missing token is a 401.
    let e = Client::new(
        ClientConfig::new(
            &l.profile.proxmox.endpoint,
            Credentials::parse_token("root@pam!other=nope", "t").unwrap(),
            Trust::Fingerprint(l.pve.fingerprint.clone()),
        ),
        &l.fabric.addresses,
    )
    .unwrap()
    .get::<serde_json::Value>("/nodes", &[])
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(401));
}

fn create_body(l: &Lab) -> Vec<(String, String)> {
    talos_pve::proxmox::vm::create_params(&l.profile, &l.plan, &l.plan.nodes[0]).unwrap()
}

/// Issue 11 §4 with lint skipped: a profile value that would add property-string
/// keys or path segments is refused before it reaches Proxmox, and one that is
/// merely not a PVE ID reaches it only as one encoded path segment, which the
/// lab refuses as PVE does. No VM is created in any case.
#[tokio::test]
async fn injected_profile_values_never_reach_a_vm_config_or_another_path() {
    type Injection = (fn(&mut Profile), &'static str);
    let cases: [Injection; 4] = [
        (
            |p| p.proxmox.bridge = "vmbr0,link_down=1".into(),
            "cannot be the `bridge` of a Proxmox property string",
        ),
        (
            |p| p.proxmox.disk_storage = "local-lvm,cache=unsafe".into(),
            "cannot be the `storage` of a Proxmox property string",
        ),
        (
            |p| p.proxmox.iso_storage = "local/../../x".into(),
            "cannot be part of a Proxmox API path",
        ),
        (
            |p| p.proxmox.iso_storage = "lo cal;x".into(),
            "storage ID 'lo cal;x' contains illegal characters",
        ),
    ];
    for (mutate, want) in cases {
        let mut l = lab().await;
        mutate(&mut l.profile);
        l.plan = Plan::build(&l.profile).unwrap();
        let e = l.provision(false).await.unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
        let writes = l.writes();
        assert!(
            !writes.iter().any(|w| w.ends_with("/qemu")),
            "{want}: {writes:?}"
        );
        for r in l.pve.requests() {
            assert!(!r.path.contains(".."), "{want}: {}", r.path);
        }
    }
}

/// Two cluster directories made from one profile share the name `homelab`, never
/// the ID: the second neither adopts nor destroys the first's VMs, and a node moved
/// to another VMID is refused instead of created twice with the same MACs.
#[tokio::test]
async fn two_clusters_of_one_name_never_claim_each_others_vms() {
    let l = lab().await;
    l.provision(false).await.unwrap();
    let writes = l.writes().len();
    let second = owner("b");
    let err = l.provision_as(&second, false).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ProvisionError::Foreign { vmid: 120, .. }),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("cluster `homelab` with ID {}", l.owner.id)),
        "{msg}"
    );
    assert_eq!(l.writes().len(), writes, "nothing written");

    let (owned, skipped) = owned_vms(&l.client, &second, &[120, 121, 122])
        .await
        .unwrap();
    assert!(owned.is_empty(), "{owned:?}");
    assert_eq!(skipped.len(), 3);
    for s in &skipped {
        assert!(
            s.why.contains("another cluster of the same name"),
            "{}",
            s.why
        );
    }
    assert!(destroy(&l.client, &owned).await.left.is_empty());
    assert_eq!(
        l.pve.state().vms.len(),
        3,
        "none of the first's VMs is gone"
    );

    // The node's VMID changed in the profile: its VM is found by marker, not duplicated.
    let mut moved = l.profile.clone();
    moved.nodes[0].vmid = 130;
    let plan = Plan::build(&moved).unwrap();
    for recreate in [false, true] {
        let opts = ProvisionOptions {
            recreate,
            owner: l.owner.clone(),
        };
        let err = provision(&l.client, &l.factory, &moved, &plan, opts)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                ProvisionError::Moved {
                    found: 120,
                    planned: 130,
                    ..
                }
            ),
            "{err}"
        );
    }
    let vms = l.pve.state().vms;
    assert!(!vms.contains_key(&130));
    let macs: std::collections::BTreeSet<String> =
        vms.values().map(|v| v.config["net0"].clone()).collect();
    assert_eq!(macs.len(), vms.len(), "one VM per MAC");
}

/// VMs marked by talos-pve before cluster IDs carry only the cluster's name: adopted
/// (and re-marked, keeping the user's tags and notes) only when this directory's
/// state recorded them.
#[tokio::test]
async fn old_name_only_markers_are_adopted_once_with_proof() {
    let l = lab().await;
    l.provision(false).await.unwrap();
    for n in &l.plan.nodes {
        let desc = format!(
            "Talos node managed by talos-pve; do not edit the marker. talos-pve:cluster=homelab;node={}\nrack 2",
            n.name
        );
        l.client
            .put(
                &format!("/nodes/{}/qemu/{}/config", n.host, n.vmid),
                &[
                    ("tags".into(), "talos;talos-pve;controlplane;ups-b".into()),
                    ("description".into(), desc),
                ],
            )
            .await
            .unwrap();
    }
    let err = l.provision(false).await.unwrap_err();
    assert!(
        matches!(err, ProvisionError::Unproven { vmid: 120, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("talos-pve-cluster."), "{err}");
    let (owned, skipped) = owned_vms(&l.client, &l.owner, &[]).await.unwrap();
    assert!(owned.is_empty());
    assert!(
        skipped[0].why.contains("old name-only marker"),
        "{skipped:?}"
    );

    let mut proven = l.owner.clone();
    proven.recorded = l
        .plan
        .nodes
        .iter()
        .map(|n| (n.name.clone(), n.vmid))
        .collect();
    let r = l.provision_as(&proven, false).await.unwrap();
    assert!(r.vms.iter().all(|v| v.action == VmAction::Updated), "{r:?}");
    let c = inventory::config(&l.client, "pve-ms01-01", 120)
        .await
        .unwrap();
    assert!(c["tags"].contains("ups-b"), "{}", c["tags"]);
    assert!(c["tags"].contains(&format!("talos-pve-cluster.{}", l.owner.id)));
    assert!(
        c["description"].starts_with("rack 2\n"),
        "{}",
        c["description"]
    );
    assert_eq!(
        inventory::marker(&c),
        Some(Marker::new(&l.owner, "talos-k8s-01"))
    );
    // From now on the ID proves it: no record needed, nothing to change.
    assert!(l.provision(false).await.unwrap().up_to_date());
}

// ---------------------------------------------------------------- cidata volumes

fn storage_text(l: &Lab) -> String {
    serde_json::to_string(&l.pve.state().nodes).unwrap()
}

/// A node's cidata volume goes up through the API, into the VM's CD-ROM drive,
/// boots with the VM, and is detached and deleted again; every request conforms.
#[tokio::test]
async fn cidata_is_uploaded_attached_booted_then_detached_and_deleted() {
    use talos_pve::proxmox::cidata::{Delivery, Retired, Volume, deliver, retire};
    let l = lab().await;
    l.provision(false).await.unwrap();
    let n = &l.plan.nodes[0];
    let v = Volume::of(&l.plan.cluster, &l.profile.proxmox.iso_storage, n);
    assert_eq!(
        v.volid(),
        "local:iso/talos-pve-cidata-homelab-120-talos-k8s-01.iso"
    );
    let config = b"version: v1alpha1\n# SECRET-MARKER\n";
    let img = talos_pve::talos::cidata::image(&n.name, "homelab-120", config).unwrap();
    let mut events = l.fabric.events.subscribe();
    assert_eq!(
        deliver(&l.client, &v, &img).await.unwrap(),
        Delivery::Booted
    );
    let st = l.pve.state();
    assert!(st.vms[&120].running);
    assert_eq!(
        st.vms[&120].config["ide0"],
        format!("{},media=cdrom", v.volid())
    );
    let mut booted_with = None;
    while let Ok(e) = events.try_recv() {
        if let LabEvent::VmStarted(vm) = e {
            booted_with = Some(vm.media);
        }
    }
    // Booting (in real life: in maintenance mode or installing), no guest agent runs.
    let agent = format!(
        "/nodes/{}/qemu/{}/agent/network-get-interfaces",
        n.host, n.vmid
    );
    let e = l
        .client
        .get::<serde_json::Value>(&agent, &[])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("guest agent is not running"), "{e}");
    let media = booted_with.expect("the VM was started");
    assert_eq!(media.len(), 1, "the VM boots with its cidata in the drive");
    let got = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &media[0]);
    assert_eq!(got.unwrap(), img, "byte-identical after the upload");
    // Resumed run: the VM already boots from it; nothing is uploaded again.
    l.pve.clear_requests();
    assert_eq!(
        deliver(&l.client, &v, &img).await.unwrap(),
        Delivery::AlreadyBooting
    );
    assert_eq!(l.writes(), Vec::<String>::new());
    // A paused VM is not booting anything (issue 13 item 10): it is not
    // "running" in /cluster/resources, and delivery boots it again.
    l.pve
        .edit_state(|st| st.vms.get_mut(&120).unwrap().paused = true);
    let vms = inventory::vms(&l.client).await.unwrap();
    assert!(!vms[&120].running, "a paused VM does not count as running");
    assert_eq!(
        deliver(&l.client, &v, &img).await.unwrap(),
        Delivery::Booted
    );
    assert!(!l.pve.state().vms[&120].paused);

    assert_eq!(
        retire(&l.client, &v, b"unused").await.unwrap(),
        Retired::Deleted
    );
    assert!(!storage_text(&l).contains("talos-pve-cidata"));
    assert_eq!(l.pve.state().vms[&120].config["ide0"], "none,media=cdrom");
    assert_eq!(
        retire(&l.client, &v, b"unused").await.unwrap(),
        Retired::Gone
    );
    let paths: Vec<String> = l.pve.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths
            .iter()
            .any(|p| p.contains("/storage/local/content/local:iso/talos-pve-cidata")),
        "{paths:?}"
    );
}

/// Without `Datastore.Allocate` the volume is overwritten with one holding no key
/// material; without `Datastore.AllocateTemplate` nothing is uploaded at all.
#[tokio::test]
async fn cidata_permissions_are_enforced_and_a_refused_delete_scrubs() {
    use talos_pve::proxmox::cidata::{Retired, Volume, deliver, retire};
    let all: Vec<String> = [
        "VM.Allocate",
        "VM.Audit",
        "VM.PowerMgmt",
        "VM.Config.CDROM",
        "VM.Config.CPU",
        "VM.Config.Disk",
        "VM.Config.HWType",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.Options",
        "Datastore.AllocateSpace",
        "Datastore.AllocateTemplate",
        "Datastore.Audit",
        "SDN.Use",
        "Sys.Audit",
        "Sys.AccessNetwork",
    ]
    .map(String::from)
    .to_vec();
    let l = lab_with(
        LabProxmoxConfig {
            token_privileges: Some(all.clone()),
            ..Default::default()
        },
        true,
    )
    .await;
    l.provision(false).await.unwrap();
    let r = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    let cleanup = r
        .checks
        .iter()
        .find(|c| c.what == "cidata cleanup")
        .unwrap();
    assert_eq!(cleanup.level, Level::Warn, "{cleanup:?}");
    assert!(r.passed(), "deleting is optional: {r:?}");

    let n = &l.plan.nodes[0];
    let v = Volume::of(&l.plan.cluster, &l.profile.proxmox.iso_storage, n);
    let img = talos_pve::talos::cidata::image(&n.name, "i", b"SECRET-MARKER").unwrap();
    deliver(&l.client, &v, &img).await.unwrap();
    let scrubbed = talos_pve::talos::cidata::scrubbed(&n.name, "i").unwrap();
    assert_eq!(
        retire(&l.client, &v, &scrubbed).await.unwrap(),
        Retired::Scrubbed
    );
    let files = storage_text(&l);
    assert!(files.contains("talos-pve-cidata"), "still there, scrubbed");
    let st = l.pve.state();
    let stored = st.nodes["pve-ms01-01"]
        .storages
        .iter()
        .find_map(|s| s.files.get(&v.volid()))
        .unwrap();
    let bytes = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, stored).unwrap();
    assert_eq!(bytes, scrubbed);
    assert!(!bytes.windows(13).any(|w| w == b"SECRET-MARKER"));

    l.pve.set_config(|c| {
        c.token_privileges = Some(
            all.iter()
                .filter(|p| *p != "Datastore.AllocateTemplate")
                .cloned()
                .collect(),
        )
    });
    let e = deliver(
        &l.client,
        &Volume::of(&l.plan.cluster, "local", &l.plan.nodes[1]),
        &img,
    )
    .await
    .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(
        e.to_string()
            .contains("/storage/local, Datastore.AllocateTemplate"),
        "{e}"
    );
}

/// Issue 13 item 1: free space is needed only for the VMs that will be created,
/// and a shared disk storage is one pool counted once across hosts.
#[tokio::test]
async fn preflight_counts_space_for_new_vms_only_and_shared_storage_once() {
    let l = lab().await;
    let disk = l.profile.proxmox.disk_storage.clone();
    let set_disk = |f: &dyn Fn(&mut talos_pve::lab::proxmox::LabStorage)| {
        l.pve.edit_state(|st| {
            for n in st.nodes.values_mut() {
                f(n.storages.iter_mut().find(|s| s.id == disk).unwrap());
            }
        })
    };
    // One shared pool with room for two 64 GiB VMs, not three: each host alone
    // would pass; together they do not fit.
    set_disk(&|s| {
        s.shared = true;
        s.total = 130 << 30;
    });
    let r = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    let shared: Vec<_> = r
        .checks
        .iter()
        .filter(|c| c.what.contains("local-lvm"))
        .collect();
    assert_eq!(shared.len(), 1, "checked once: {shared:#?}");
    assert_eq!(shared[0].level, Level::Fail, "{shared:#?}");
    assert!(
        shared[0].detail.contains("193 GiB needed for 3 new VM(s)"),
        "{}",
        shared[0].detail
    );

    // Provisioned with room to spare, then the storage fills up (1 GiB left):
    // nothing is to be created, so preflight passes and a re-run writes nothing.
    set_disk(&|s| {
        s.shared = false;
        s.total = 1 << 40;
    });
    l.provision(false).await.unwrap();
    set_disk(&|s| s.total = s.volumes.values().sum::<u64>() + (1 << 30));
    let r = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    assert!(r.passed(), "{r:#?}");
    let host = r
        .checks
        .iter()
        .find(|c| c.what == "pve-ms01-01: storage local-lvm")
        .unwrap();
    assert!(
        host.detail
            .contains("1 GiB free, 0 GiB needed for 0 new VM(s)"),
        "{}",
        host.detail
    );
    l.pve.clear_requests();
    let again = l.provision(false).await.unwrap();
    assert!(again.up_to_date(), "{again:?}");
    assert_eq!(l.writes(), Vec::<String>::new(), "a re-run must not write");
}

/// Issue 13 item 4: containers hold VMIDs too. PVE refuses a create on a CT's
/// VMID (`CT N already exists on node …`); preflight and provision say so first.
#[tokio::test]
async fn a_container_on_a_planned_vmid_fails_preflight_and_provision_creates_nothing() {
    let l = lab().await;
    l.pve.edit_state(|st| {
        let ct = talos_pve::lab::proxmox::LabContainer {
            node: "pve-ms01-02".into(),
            hostname: "pihole".into(),
            running: true,
        };
        st.containers.insert(121, ct);
    });
    // The lab refuses as PVE does.
    let e = l
        .client
        .post("/nodes/pve-ms01-01/qemu", &[("vmid".into(), "121".into())])
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("CT 121 already exists on node 'pve-ms01-02'"),
        "{e}"
    );
    let pf = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    let c = pf
        .checks
        .iter()
        .find(|c| c.what == "VMID 121 (talos-k8s-02)")
        .unwrap();
    assert_eq!(c.level, Level::Fail, "{c:?}");
    assert!(
        c.detail.contains("container `pihole` on pve-ms01-02"),
        "{c:?}"
    );
    l.pve.clear_requests();
    let e = l.provision(false).await.unwrap_err();
    assert!(e.to_string().contains("it is a container"), "{e}");
    assert_eq!(l.writes(), Vec::<String>::new(), "nothing half-created");
}

/// Issue 13 item 6: one offline host (every call proxied to it answers 595, its
/// guests stay listed with their tags) does not keep `destroy` from the others;
/// what is left is reported.
#[tokio::test]
async fn destroy_with_one_host_offline_removes_the_rest_and_reports_what_is_left() {
    let l = lab().await;
    l.provision(false).await.unwrap();
    l.pve
        .edit_state(|st| st.nodes.get_mut("pve-aimax-01").unwrap().online = false);
    let planned: Vec<u32> = l.plan.nodes.iter().map(|n| n.vmid).collect();
    let (owned, skipped) = owned_vms(&l.client, &l.owner, &planned).await.unwrap();
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(owned.len(), 3, "the offline host's VM is ours by its tags");
    let report = destroy(&l.client, &owned).await;
    let removed: Vec<u32> = report.removed.iter().map(|v| v.vmid).collect();
    assert_eq!(removed, [120, 121]);
    assert_eq!(report.left.len(), 1);
    let (vm, e) = &report.left[0];
    assert_eq!((vm.vmid, vm.host.as_str()), (122, "pve-aimax-01"));
    assert_eq!(e.status(), Some(595), "{e}");
    let st = l.pve.state();
    assert_eq!(st.vms.keys().collect::<Vec<_>>(), [&122]);
}

/// Issue 13 item 5: preflight checks each privilege on the path PVE checks it on
/// (`/access/permissions?path=`), with PVE's walk (deepest ACL wins, a
/// `propagate 0` ACL still grants on its own path), and names the token in use.
#[tokio::test]
async fn preflight_checks_each_privilege_on_its_real_path() {
    use talos_pve::lab::proxmox::LabAcl;
    let acl = |path: &str, privs: &[&str], propagate: bool| LabAcl {
        path: path.into(),
        privileges: privs.iter().map(|p| p.to_string()).collect(),
        propagate,
    };
    let vm_privs = [
        "VM.Allocate",
        "VM.Audit",
        "VM.PowerMgmt",
        "VM.Config.CDROM",
        "VM.Config.CPU",
        "VM.Config.Disk",
        "VM.Config.HWType",
        "VM.Config.Memory",
        "VM.Config.Network",
        "VM.Config.Options",
    ];
    // The tight placement of docs/proxmox.md: one complete role per path.
    let mut tight = vec![
        acl("/vms", &vm_privs, true),
        acl(
            "/storage/local",
            &["Datastore.Audit", "Datastore.AllocateTemplate"],
            true,
        ),
        acl(
            "/storage/local-lvm",
            &["Datastore.Audit", "Datastore.AllocateSpace"],
            true,
        ),
        acl("/sdn/zones/localnetwork/vmbr0", &["SDN.Use"], true),
        acl("/", &["Sys.Audit"], false),
    ];
    for h in ["pve-ms01-01", "pve-ms01-02", "pve-aimax-01"] {
        tight.push(acl(
            &format!("/nodes/{h}"),
            &["Sys.Audit", "Sys.AccessNetwork"],
            false,
        ));
    }
    let cfg = LabProxmoxConfig {
        acls: tight.clone(),
        ..Default::default()
    };
    let mut l = lab_with(cfg, true).await;
    // The profile names another token than the one in use: the report names the one in use.
    l.profile.proxmox.token_id = "someone@pve!else".into();
    let r = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    let privs = r
        .checks
        .iter()
        .find(|c| c.what == "token privileges")
        .unwrap();
    assert_eq!(privs.level, Level::Ok, "{privs:?}");
    assert!(privs.detail.starts_with("root@pam!talos-pve "), "{privs:?}");
    // And it holds: the run downloads the ISO and creates the VMs.
    l.provision(false).await.unwrap();

    // AllocateTemplate on the disk storage instead of the ISO storage: the ISO
    // download would fail with 403; preflight says so before.
    tight[1] = acl("/storage/local", &["Datastore.Audit"], true);
    tight[2] = acl(
        "/storage/local-lvm",
        &[
            "Datastore.Audit",
            "Datastore.AllocateSpace",
            "Datastore.AllocateTemplate",
        ],
        true,
    );
    l.pve.set_config(|c| c.acls = tight.clone());
    let r = preflight(&l.client, &l.profile, &l.plan).await.unwrap();
    let privs = r
        .checks
        .iter()
        .find(|c| c.what == "token privileges")
        .unwrap();
    assert_eq!(privs.level, Level::Fail, "{privs:?}");
    assert!(
        privs
            .detail
            .contains("Datastore.AllocateTemplate on /storage/local ("),
        "{}",
        privs.detail
    );
    let e = l
        .client
        .post(
            "/nodes/pve-ms01-01/storage/local/download-url",
            &[
                ("url".into(), "https://factory.example/x.iso".into()),
                ("filename".into(), "x.iso".into()),
                ("content".into(), "iso".into()),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
}

/// Issue 13 item 7 (proxmox-semantics.md §7): on a running VM, a change Proxmox cannot
/// hot-plug (cores with the default `hotplug=network,disk,usb`) waits in `[pending]`:
/// `GET config` merges it, `current=1` shows the running value, `GET pending` lists it,
/// and provision says "pending until reboot", not "updated". The PVE reboot applies it.
#[tokio::test]
async fn a_running_vm_keeps_cold_changes_pending_until_a_proxmox_reboot() {
    let l = lab().await;
    l.provision(false).await.unwrap();
    l.start_all().await;
    let path = "/nodes/pve-ms01-01/qemu/120";
    l.client
        .put(
            &format!("{path}/config"),
            &[("cores".into(), "2".into()), ("onboot".into(), "1".into())],
        )
        .await
        .unwrap();
    let merged = inventory::config(&l.client, "pve-ms01-01", 120)
        .await
        .unwrap();
    assert_eq!(merged["cores"], "2");
    let current: BTreeMap<String, serde_json::Value> = l
        .client
        .get(&format!("{path}/config"), &[("current".into(), "1".into())])
        .await
        .unwrap();
    assert_eq!(current["cores"], 4, "the running VM keeps its cores");
    assert_eq!(current["onboot"], 1, "onboot is written at once");
    assert_eq!(
        inventory::pending(&l.client, "pve-ms01-01", 120)
            .await
            .unwrap(),
        ["cores"]
    );
    // The profile's 4 is the running value: written, and the pending entry goes.
    let r = l.provision(false).await.unwrap();
    let vm = r.vms.iter().find(|v| v.vmid == 120).unwrap();
    assert_eq!(vm.action, VmAction::Updated, "{vm:?}");
    assert!(
        inventory::pending(&l.client, "pve-ms01-01", 120)
            .await
            .unwrap()
            .is_empty()
    );
    // Running with 2 cores (applied by a Proxmox reboot), the profile's 4 waits.
    l.client
        .put(&format!("{path}/config"), &[("cores".into(), "2".into())])
        .await
        .unwrap();
    l.client
        .run_task(
            Method::POST,
            &format!("{path}/status/reboot"),
            &[],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let r = l.provision(false).await.unwrap();
    let vm = r.vms.iter().find(|v| v.vmid == 120).unwrap();
    assert_eq!(vm.action, VmAction::PendingReboot, "{vm:?}");
    l.client
        .run_task(
            Method::POST,
            &format!("{path}/status/reboot"),
            &[],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert!(
        inventory::pending(&l.client, "pve-ms01-01", 120)
            .await
            .unwrap()
            .is_empty()
    );
    let c = inventory::config(&l.client, "pve-ms01-01", 120)
        .await
        .unwrap();
    assert_eq!(c["cores"], "4");
}

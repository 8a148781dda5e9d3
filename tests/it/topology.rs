//! Proxmox topologies and trust (issue 13 item 8): standalone hosts, several
//! endpoints for one cluster, the cluster CA file, and what a refused
//! certificate says. Against lab PVEs on loopback.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::ExposeSecret;
use serde_json::Value;
use talos_pve::cluster_id::ClusterId;
use talos_pve::lab::Fabric;
use talos_pve::lab::proxmox::{Fault, FaultEffect, LabProxmox, LabProxmoxConfig, LabProxmoxHandle};
use talos_pve::plan::Plan;
use talos_pve::proxmox::client::HostApi;
use talos_pve::proxmox::destroy::{OwnedVm, destroy, owned_vms, survey, unfinished};
use talos_pve::proxmox::factory::Factory;
use talos_pve::proxmox::ownership::Owner;
use talos_pve::proxmox::preflight::preflight;
use talos_pve::proxmox::provision::{ProvisionOptions, VmAction, provision};
use talos_pve::proxmox::{
    Client, ClientConfig, Credentials, PollPolicy, PveError, RetryPolicy, Trust,
};

use super::support::homelab;

fn fast(mut cfg: ClientConfig) -> ClientConfig {
    cfg.retry = RetryPolicy {
        attempts: 3,
        base: Duration::from_millis(5),
        cap: Duration::from_millis(20),
    };
    cfg.poll = PollPolicy {
        first: Duration::from_millis(5),
        max: Duration::from_millis(40),
    };
    cfg
}

fn token(pve: &LabProxmoxHandle) -> Credentials {
    Credentials::parse_token(pve.api_token().expose_secret(), "test").unwrap()
}

fn owner() -> Owner {
    Owner {
        cluster: "homelab".into(),
        id: ClusterId::of("topology"),
        recorded: BTreeMap::new(),
    }
}

/// A loopback port nothing listens on: "connection refused", like a host that is down.
async fn dead_port() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// The homelab on standalone lab hosts (each its own PVE, token and CA), and a
/// client that knows each host's endpoint.
async fn standalone_lab() -> (
    Fabric,
    talos_pve::profile::Profile,
    Vec<LabProxmoxHandle>,
    Plan,
    Client,
) {
    talos_pve::tls::install_provider();
    let fabric = Fabric::new();
    let mut profile = homelab();
    for h in &mut profile.proxmox.hosts {
        h.endpoint = Some(format!("https://{}:8006", h.address));
    }
    let labs = LabProxmox::start_standalone(&fabric, LabProxmoxConfig::default(), &profile.proxmox)
        .await
        .unwrap();
    assert_eq!(labs.len(), 3);
    // Each standalone host has its own CA (pve-cluster Setup.pm: one per install).
    assert_ne!(labs[0].ca_pem(), labs[1].ca_pem());
    profile.talos.image_factory = labs[0].factory_url();
    let plan = Plan::build(&profile).unwrap();
    let hosts: Vec<HostApi> = profile
        .proxmox
        .hosts
        .iter()
        .zip(&labs)
        .map(|(h, l)| HostApi {
            node: h.name.clone(),
            endpoint: h.endpoint.clone().unwrap(),
            credentials: token(l),
            trust: Trust::Ca(l.ca_pem()),
        })
        .collect();
    let mut cfg = ClientConfig::new(
        &hosts[0].endpoint,
        hosts[0].credentials.clone(),
        hosts[0].trust.clone(),
    );
    cfg.standalone = hosts;
    let client = Client::new(fast(cfg), &fabric.addresses).unwrap();
    assert!(client.standalone());
    (fabric, profile, labs, plan, client)
}

#[tokio::test]
async fn standalone_hosts_each_answer_for_themselves_with_their_own_token_and_ca() {
    let (fabric, profile, labs, plan, client) = standalone_lab().await;

    // A standalone host's /cluster/status: one node entry, nodeid 0, no cluster
    // entry (pve-manager API2/Cluster.pm 867-1000).
    let st: Vec<Value> = client.get("/cluster/status", &[]).await.unwrap();
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0]["nodeid"], 0);
    let nodes: Vec<Value> = client.get("/nodes", &[]).await.unwrap();
    assert_eq!(nodes.len(), 3, "every host's /nodes gathered: {nodes:?}");

    // Each host's disk storage holds its own VM with room to spare, though it
    // calls itself shared: standalone hosts share no storage, so it is not
    // asked to hold every host's VMs.
    let one_vm = (u64::from(plan.nodes[0].disk_gib) + 8) << 30;
    for l in &labs {
        l.edit_state(|st| {
            for n in st.nodes.values_mut() {
                for s in n.storages.iter_mut().filter(|s| s.id == "local-lvm") {
                    s.shared = true;
                    s.total = one_vm;
                }
            }
        });
    }
    // Each host has its own VMID space: someone's VM 121 on the first host is not
    // in the way of the node planned as VM 121 on the second.
    let planned_121 = plan.nodes.iter().find(|n| n.vmid == 121).unwrap();
    assert_ne!(planned_121.host, "pve-ms01-01");
    let foreign = [("name".to_owned(), "someones-vm".to_owned())].into();
    labs[0].insert_vm("pve-ms01-01", 121, foreign, false);
    // Each host has its own users and ACLs: preflight checks each token on its host.
    let pf = preflight(&client, &profile, &plan).await.unwrap();
    assert!(pf.passed(), "{:?}", pf.failures().collect::<Vec<_>>());
    labs[1].set_config(|c| c.token_privileges = Some(vec!["VM.Audit".into()]));
    let pf = preflight(&client, &profile, &plan).await.unwrap();
    let failed: Vec<&str> = pf.failures().map(|c| c.what.as_str()).collect();
    assert_eq!(failed, ["token privileges on pve-ms01-02"], "{pf:?}");
    labs[1].set_config(|c| c.token_privileges = None);

    let factory = Factory::new(
        &profile.talos.image_factory,
        &Trust::Ca(labs[0].ca_pem()),
        &fabric.addresses,
    )
    .unwrap();
    let opts = ProvisionOptions {
        recreate: false,
        owner: owner(),
    };
    let r = provision(&client, &factory, &profile, &plan, opts.clone())
        .await
        .unwrap();
    assert!(r.vms.iter().all(|v| v.action == VmAction::Created), "{r:?}");
    // Each VM lives on its own host's PVE, each host downloaded the ISO itself.
    for (h, l) in profile.proxmox.hosts.iter().zip(&labs) {
        let st = l.state();
        let on: Vec<u32> = st
            .vms
            .values()
            .filter(|vm| vm.config.get("name").map(String::as_str) != Some("someones-vm"))
            .map(|vm| vm.vmid)
            .collect();
        let want: Vec<u32> = plan
            .nodes
            .iter()
            .filter(|n| n.host == h.name)
            .map(|n| n.vmid)
            .collect();
        assert_eq!(on, want, "host {}", h.name);
    }
    assert!(labs[0].state().vms.contains_key(&121), "left alone");
    // A re-run changes nothing.
    let again = provision(&client, &factory, &profile, &plan, opts)
        .await
        .unwrap();
    assert_eq!(again.writes, 0, "{again:?}");

    // A call about a host the profile does not list has nowhere to go.
    let e = client
        .get::<Value>("/nodes/pve-other/status", &[])
        .await
        .unwrap_err();
    assert!(matches!(e, PveError::UnknownHost { .. }), "{e}");

    // A standalone host whose API does not answer (595: pveproxy cannot reach
    // its pvedaemon) is an offline node, not an abort.
    labs[2].set_faults(vec![Fault::new(
        "GET",
        "/nodes",
        10,
        FaultEffect::Status {
            code: 595,
            message: "Connection refused".into(),
        },
    )]);
    let nodes: Vec<Value> = client.get("/nodes", &[]).await.unwrap();
    let down = nodes.iter().find(|n| n["node"] == "pve-aimax-01").unwrap();
    assert_eq!(down["status"], "offline", "{nodes:?}");
    labs[2].set_faults(vec![Fault::new(
        "GET",
        "",
        100,
        FaultEffect::Status {
            code: 595,
            message: "Connection refused".into(),
        },
    )]);
    // Its guests are unknown: what needs them stops, naming the host.
    let e = preflight(&client, &profile, &plan).await.unwrap_err();
    assert!(
        matches!(&e, PveError::HostDown { host, .. } if host == "pve-aimax-01"),
        "{e}"
    );
}

/// The homelab as one joined cluster in the lab.
async fn lab_cluster() -> (Fabric, talos_pve::profile::Profile, LabProxmoxHandle) {
    talos_pve::tls::install_provider();
    let fabric = Fabric::new();
    let profile = homelab();
    let pve = LabProxmox::start(&fabric, LabProxmoxConfig::default(), &profile.proxmox)
        .await
        .unwrap();
    (fabric, profile, pve)
}

/// A client for the cluster behind 10.8.16.10, then 10.8.16.11 (where the
/// address book maps them now: the client resolves them once).
fn two_endpoints(fabric: &Fabric, pve: &LabProxmoxHandle) -> Client {
    let mut cfg = ClientConfig::new(
        "https://10.8.16.10:8006",
        token(pve),
        Trust::Ca(pve.ca_pem()),
    );
    cfg.fallback_endpoints = vec!["https://10.8.16.11:8006".into()];
    Client::new(fast(cfg), &fabric.addresses).unwrap()
}

#[tokio::test]
async fn a_cluster_endpoint_that_is_down_fails_over_to_the_next_and_writes_are_not_replayed() {
    let (fabric, _, pve) = lab_cluster().await;
    // The profile's endpoint (first node) is down; the second node answers for
    // the same cluster.
    fabric
        .addresses
        .map("10.8.16.10:8006".parse().unwrap(), dead_port().await);
    fabric
        .addresses
        .map("10.8.16.11:8006".parse().unwrap(), pve.listen);
    let client = two_endpoints(&fabric, &pve);
    let v: Value = client.get("/version", &[]).await.unwrap();
    assert_eq!(v["release"], "9.1");
    assert_eq!(client.endpoint(), "https://10.8.16.11:8006");

    // 595 from the endpoint (its pvedaemon is not reachable): a read goes to the
    // next endpoint, which then stays in use.
    fabric
        .addresses
        .map("10.8.16.10:8006".parse().unwrap(), pve.listen);
    let client = two_endpoints(&fabric, &pve);
    pve.set_faults(vec![Fault::new(
        "GET",
        "/version",
        1,
        FaultEffect::Status {
            code: 595,
            message: "Connection refused".into(),
        },
    )]);
    let v: Value = client.get("/version", &[]).await.unwrap();
    assert_eq!(v["release"], "9.1");
    assert_eq!(client.endpoint(), "https://10.8.16.11:8006");

    // A write that may have been applied (596: the request was sent) is not
    // sent again to the other endpoint, nor retried.
    pve.clear_requests();
    pve.set_faults(vec![Fault::new(
        "POST",
        "/status/start",
        1,
        FaultEffect::Status {
            code: 596,
            message: "Broken pipe".into(),
        },
    )]);
    let e = client
        .post("/nodes/pve-ms01-01/qemu/999/status/start", &[])
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(596), "{e}");
    let posts = pve.requests().iter().filter(|r| r.method == "POST").count();
    assert_eq!(posts, 1, "the write was sent once");

    // Both endpoints down: the error names the endpoint and says once what failed.
    let dead = dead_port().await;
    fabric
        .addresses
        .map("10.8.16.10:8006".parse().unwrap(), dead);
    fabric
        .addresses
        .map("10.8.16.11:8006".parse().unwrap(), dead);
    let client = two_endpoints(&fabric, &pve);
    let e = client.get::<Value>("/version", &[]).await.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, PveError::Transport { .. }), "{msg}");
    assert!(msg.contains("cannot connect"), "{msg}");
    assert!(
        !msg.contains("error sending request"),
        "the innermost cause, said once: {msg}"
    );
}

#[tokio::test]
async fn the_cluster_ca_file_is_trusted_and_a_refused_certificate_shows_its_fingerprint() {
    let (fabric, profile, pve) = lab_cluster().await;
    let client = |trust: Trust| {
        Client::new(
            fast(ClientConfig::new(
                &profile.proxmox.endpoint,
                token(&pve),
                trust,
            )),
            &fabric.addresses,
        )
        .unwrap()
    };
    let v: Value = client(Trust::Ca(pve.ca_pem()))
        .get("/version", &[])
        .await
        .unwrap();
    assert_eq!(v["release"], "9.1");

    // Another cluster's CA, the system's CAs, a wrong pin: refused before any
    // request, with the presented fingerprint and the three remedies.
    let other = LabProxmox::start(
        &Fabric::new(),
        LabProxmoxConfig::default(),
        &profile.proxmox,
    )
    .await
    .unwrap();
    pve.clear_requests();
    for trust in [
        Trust::Ca(other.ca_pem()),
        Trust::Verify,
        Trust::Fingerprint(talos_pve::tls::fingerprint(b"another certificate")),
    ] {
        let e = client(trust.clone())
            .get::<Value>("/version", &[])
            .await
            .unwrap_err();
        let msg = e.to_string();
        match &e {
            PveError::Certificate { fingerprint, .. } => {
                assert_eq!(fingerprint, &pve.fingerprint, "{trust:?}")
            }
            other => panic!("{trust:?}: not a certificate error: {other}"),
        }
        for remedy in [
            "pvenode cert info",
            "pve-root-ca.pem",
            "--pve-ca",
            "a CA this machine already trusts",
        ] {
            assert!(msg.contains(remedy), "{remedy} missing: {msg}");
        }
    }
    assert!(pve.requests().is_empty(), "nothing reached the API");

    // A self-hosted factory whose certificate is not trusted: the same facts.
    let factory = Factory::new(&pve.factory_url(), &Trust::Verify, &fabric.addresses).unwrap();
    let e = factory.register("customization: {}\n").await.unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&pve.fingerprint), "{msg}");
    assert!(msg.contains("--factory-fingerprint"), "{msg}");
    assert!(
        pve.factory_requests().is_empty(),
        "nothing reached the factory"
    );
}

/// A joined cluster on the lab, its client and a factory trusted like the lab's
/// own (a self-hosted factory with its own CA).
async fn cluster() -> (
    Fabric,
    LabProxmoxHandle,
    Client,
    Factory,
    talos_pve::profile::Profile,
) {
    let (fabric, mut profile, pve) = lab_cluster().await;
    profile.talos.image_factory = pve.factory_url();
    let trust = Trust::Ca(pve.ca_pem());
    let cfg = ClientConfig::new(&profile.proxmox.endpoint, token(&pve), trust.clone());
    let client = Client::new(fast(cfg), &fabric.addresses).unwrap();
    let factory = Factory::new(&profile.talos.image_factory, &trust, &fabric.addresses).unwrap();
    (fabric, pve, client, factory, profile)
}

/// Issue 13 item 9: the host's wget does not trust a factory's own CA; PVE has
/// only `verify-certificates` (pve-storage Status.pm 870-874), so the ISO's
/// checksum, computed by talos-pve over its own trust, is what proves it.
#[tokio::test]
async fn download_url_verifies_the_factory_certificate_unless_told_not_to_and_checks_the_checksum()
{
    let (_fabric, pve, client, factory, profile) = cluster().await;
    let plan = Plan::build(&profile).unwrap();
    let yaml = talos_pve::plan::schematic_yaml(&profile.talos.schematic);
    factory.register(&yaml).await.unwrap();
    let path = "/nodes/pve-ms01-01/storage/local/download-url";
    let download = |extra: Vec<(String, String)>| {
        let mut p = vec![
            ("url".to_owned(), plan.iso_url.clone()),
            ("filename".to_owned(), plan.iso_file.clone()),
            ("content".to_owned(), "iso".to_owned()),
        ];
        p.extend(extra);
        let client = client.clone();
        async move {
            client
                .run_task(reqwest::Method::POST, path, &p, Duration::from_secs(10))
                .await
        }
    };
    let e = download(vec![]).await.unwrap_err();
    assert!(e.to_string().contains("cannot verify"), "{e}");
    let off = |sum: &str| {
        vec![
            ("verify-certificates".to_owned(), "0".to_owned()),
            ("checksum".to_owned(), sum.to_owned()),
            ("checksum-algorithm".to_owned(), "sha512".to_owned()),
        ]
    };
    let e = download(off(&"0".repeat(128))).await.unwrap_err();
    assert!(e.to_string().contains("checksum mismatch"), "{e}");
    let check = factory.download_check(&plan.iso_url).await.unwrap();
    let sum = check
        .iter()
        .find(|(k, _)| k == "checksum")
        .map(|(_, v)| v.clone())
        .unwrap();
    let sorted = |mut v: Vec<(String, String)>| {
        v.sort();
        v
    };
    assert_eq!(sorted(check.clone()), sorted(off(&sum)));
    download(check).await.unwrap();
    assert!(
        pve.state().nodes["pve-ms01-01"].storages[0]
            .volumes
            .contains_key(&format!("local:iso/{}", plan.iso_file))
    );
}

/// Issue 13 item 9: a shared ISO storage is one pool: the ISO is downloaded once.
#[tokio::test]
async fn the_iso_is_downloaded_once_per_shared_storage() {
    let (_fabric, pve, client, factory, profile) = cluster().await;
    pve.edit_state(|st| {
        for n in st.nodes.values_mut() {
            for s in &mut n.storages {
                if s.id == "local" {
                    s.shared = true;
                }
            }
        }
    });
    let plan = Plan::build(&profile).unwrap();
    let opts = ProvisionOptions {
        recreate: false,
        owner: owner(),
    };
    let r = provision(&client, &factory, &profile, &plan, opts)
        .await
        .unwrap();
    assert_eq!(r.vms.len(), 3);
    let downloads = pve
        .requests()
        .iter()
        .filter(|q| q.path.ends_with("/download-url"))
        .count();
    assert_eq!(downloads, 1, "{r:?}");
    assert_eq!(r.isos.len(), 1, "{r:?}");
}

/// Issue 13 item 6 on standalone hosts: one host that does not answer keeps
/// `destroy` from none of the others; it is named with the VMs the plan puts on
/// it and what is left to do. Each host has its own VMID space, so a VM is
/// known by (host, VMID): someone's VM at our VMID on another host is neither
/// ours nor hides ours.
#[tokio::test]
async fn destroy_on_standalone_hosts_acts_on_those_that_answer_and_names_the_one_that_does_not() {
    let (fabric, profile, labs, plan, client) = standalone_lab().await;
    let factory = Factory::new(
        &profile.talos.image_factory,
        &Trust::Ca(labs[0].ca_pem()),
        &fabric.addresses,
    )
    .unwrap();
    let opts = ProvisionOptions {
        recreate: false,
        owner: owner(),
    };
    provision(&client, &factory, &profile, &plan, opts)
        .await
        .unwrap();
    let on = |host: &str| -> Vec<(u32, String)> {
        plan.nodes
            .iter()
            .filter(|n| n.host == host)
            .map(|n| (n.vmid, n.host.clone()))
            .collect()
    };
    let [h0, h1, h2] = ["pve-ms01-01", "pve-ms01-02", "pve-aimax-01"];
    let (ours_0, ours_1, ours_2) = (on(h0), on(h1), on(h2));
    assert!(!ours_0.is_empty() && !ours_1.is_empty() && ours_2.len() == 1);
    // Gathered second, someone's VM at the first host's VMID on the second host.
    let foreign = [("name".to_owned(), "someones-vm".to_owned())].into();
    labs[1].insert_vm(h1, ours_0[0].0, foreign, false);
    // status, diff, rebuild and up look a planned VMID up on the plan's host.
    let vms = talos_pve::proxmox::inventory::planned_vms(&client, &plan)
        .await
        .unwrap();
    let at = &vms[&ours_0[0].0];
    let node_0 = plan.nodes.iter().find(|n| n.vmid == ours_0[0].0).unwrap();
    assert_eq!(
        (at.node.as_str(), at.name.as_str()),
        (h0, node_0.name.as_str())
    );
    labs[2].set_faults(vec![Fault::new(
        "GET",
        "",
        100,
        FaultEffect::Status {
            code: 595,
            message: "No route to host".into(),
        },
    )]);

    let planned: Vec<u32> = plan.nodes.iter().map(|n| n.vmid).collect();
    let found = survey(&client, &owner(), &planned).await.unwrap();
    let key = |v: &OwnedVm| (v.vmid, v.host.clone());
    let mut want: Vec<(u32, String)> = ours_0.iter().chain(&ours_1).cloned().collect();
    want.sort();
    assert_eq!(found.owned.iter().map(key).collect::<Vec<_>>(), want);
    let skipped: Vec<(u32, &str)> = found
        .skipped
        .iter()
        .map(|v| (v.vmid, v.host.as_str()))
        .collect();
    assert_eq!(skipped, [(ours_0[0].0, h1)], "{:?}", found.skipped);
    let down: Vec<&str> = found.unreachable.iter().map(|(h, _)| h.as_str()).collect();
    assert_eq!(down, [h2]);
    // The strict lookup (for what must not act on a partial list) still stops.
    let e = owned_vms(&client, &owner(), &planned).await.unwrap_err();
    assert!(
        matches!(&e, PveError::HostDown { host, .. } if host == h2),
        "{e}"
    );

    let report = destroy(&client, &found.owned).await;
    assert!(report.left.is_empty(), "{:?}", report.left);
    assert_eq!(report.removed.iter().map(key).collect::<Vec<_>>(), want);
    assert!(labs[0].state().vms.is_empty());
    let kept: Vec<u32> = labs[1].state().vms.keys().copied().collect();
    assert_eq!(kept, [ours_0[0].0], "someone's VM is left alone");
    let kept: Vec<u32> = labs[2].state().vms.keys().copied().collect();
    assert_eq!(kept, [ours_2[0].0]);
    let node_2 = plan.nodes.iter().find(|n| n.host == h2).unwrap();
    let what = unfinished(&report, &found.unreachable, &plan).expect("not done");
    for part in [
        format!("standalone host {h2} does not answer"),
        "No route to host".to_owned(),
        format!("the plan puts there: VM {} {}", node_2.vmid, node_2.name),
        format!("when {h2} answers again, run `talos-pve destroy` again"),
        format!("qm destroy {} --purge", node_2.vmid),
        "\n  fix: ".to_owned(),
    ] {
        assert!(what.contains(&part), "{part:?} in\n{what}");
    }

    // Back: the next run finishes on it.
    labs[2].set_faults(Vec::new());
    let found = survey(&client, &owner(), &planned).await.unwrap();
    assert!(found.unreachable.is_empty());
    assert_eq!(found.owned.iter().map(key).collect::<Vec<_>>(), ours_2);
    let report = destroy(&client, &found.owned).await;
    assert_eq!(unfinished(&report, &found.unreachable, &plan), None);
    assert!(labs[2].state().vms.is_empty());
}

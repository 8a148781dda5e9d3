//! Integration tests: the wizard (scripted answers → the homelab profile), saving,
//! `init` without a terminal, one pty run of the real binary, completions and man page.

use std::net::Ipv4Addr;
use std::process::Command;

use talos_pve::profile::{self, Profile};
use talos_pve::wizard::{
    self, Answer, Bond, Bridge, Connect, HostInfo, Inventory, Options, Outcome, ScriptedPrompter,
    Storage, WizardError,
};

use super::support;
use super::support::homelab_without_cabling as homelab;

/// What a Proxmox cluster shaped like the seed reports.
fn seed_inventory() -> Inventory {
    let host =
        |name: &str, addr: &str, uplink: &str, bond_addr: &str, members: [&str; 2]| HostInfo {
            name: name.into(),
            address: addr.parse().unwrap(),
            bridges: vec![Bridge {
                name: "vmbr0".into(),
                ports: vec![uplink.into()],
            }],
            bonds: vec![Bond {
                name: "bond0".into(),
                slaves: members.iter().map(|m| m.to_string()).collect(),
                mtu: Some(9000),
                address: Some(bond_addr.parse().unwrap()),
            }],
            storages: vec![
                Storage {
                    name: "local".into(),
                    content: vec!["iso".into(), "vztmpl".into(), "backup".into()],
                },
                Storage {
                    name: "local-lvm".into(),
                    content: vec!["images".into(), "rootdir".into()],
                },
            ],
        };
    Inventory {
        hosts: vec![
            host(
                "pve-ms01-01",
                "10.8.16.10",
                "enp87s0",
                "10.8.48.10",
                ["enp2s0f0np0", "enp2s0f1np1"],
            ),
            host(
                "pve-ms01-02",
                "10.8.16.11",
                "enp87s0",
                "10.8.48.11",
                ["enp2s0f0np0", "enp2s0f1np1"],
            ),
            host(
                "pve-aimax-01",
                "10.8.16.12",
                "eno1",
                "10.8.48.12",
                ["enp1s0f0", "enp1s0f1"],
            ),
        ],
        used_vmids: (100..120).collect(),
        vmid_floor: 100,
    }
}

fn d() -> Answer {
    Answer::Default
}
fn t(s: &str) -> Answer {
    Answer::Text(s.into())
}

/// The answers a person gives to rebuild profiles/homelab.yaml: mostly Enter (the seed
/// layout is the default), the inventory lists typed, and two typos that get re-asked.
pub(super) fn homelab_answers() -> Vec<Answer> {
    let mut a = vec![
        d(),                                                 // cluster name
        t("Proxmox homelab, three Talos control-plane VMs"), // description
        d(),
        d(),
        d(),
        d(), // endpoint, token id, secret, fingerprint
        d(),
        d(),
        d(),
        d(), // hosts, bridge, iso, disk storage
        d(), // one network or two: two (the hosts sit inside the seed's VLAN 16)
        // management
        d(),
        t("10.8.16.5/24"), // typo: host bits set -> re-asked
        d(),
        d(),
        t(
            "10.8.16.100-10.8.16.189=Reserved for additional VMs; 10.8.16.192-10.8.16.254=Reserved for future expansion",
        ),
        d(),
        // workload
        d(),
        d(),
        d(),
        t("10.8.31.1-10.8.31.9=Reserved; 10.8.31.201-10.8.31.254=Reserved for expansion"),
        d(),
        // storage: yes, vlan, subnet, gw, mtu, routed?, reservations, devices
        d(),
        d(),
        d(),
        d(),
        d(),
        d(),
        t(
            "10.8.48.20-10.8.48.30=Ceph monitor IPs (if needed); 10.8.48.200-10.8.48.254=Reserved for expansion",
        ),
        d(),
        // infrastructure: yes, vlan, subnet, gw, reservations, devices
        d(),
        d(),
        d(),
        d(),
        t(
            "10.0.1.2-10.0.1.50=Network infrastructure (switches, APs, controllers); 10.0.1.51-10.0.1.100=Server management (out-of-band, BMC, vPro); 10.0.1.101-10.0.1.200=DHCP pool for clients [dhcp]; 10.0.1.201-10.0.1.254=Static assignments",
        ),
        t(
            "USW-Flex-2.5G-K8s-Main=10.0.1.80 switch; MikroTik-CRS309-K8s-Storage=10.0.1.82 switch; USW-Enterprise-8-PoE-Server=10.0.1.238 switch; Enterprise-24-PoE-Main=10.0.1.239 switch",
        ),
        // out-of-band per host
        t("pve-ms01-01-vpro=10.8.16.190 vPro/AMT"),
        t("pve-ms01-02-vpro=10.8.16.191 vPro/AMT"),
        t("pve-aimax-01-kvm=10.8.16.92 JetKVM"),
        d(), // node count
    ];
    // Node 1: the seed's workload address is the gateway; typing it is refused.
    a.extend([d(), d(), d(), d(), d(), t("10.8.28.1"), d()]);
    for _ in 0..2 {
        a.extend([d(), d(), d(), d(), d(), d()]);
    }
    a.extend([
        d(),
        d(),
        d(),
        d(),
        d(), // k8s version, endpoint, service, pod subnet, prefix
        d(),
        d(), // dns servers, domain
        t("k8s-api=10.8.16.20; traefik=10.8.31.10"),
        d(),
        d(),
        d(),
        d(),
        d(), // talos version, disk, cores, memory, disk size
        d(),
        d(), // masquerade, metallb pool
    ]);
    a
}

/// A final check that reports `finding` on its first call only, counting calls.
fn finding_once<'a>(
    calls: &'a std::cell::Cell<u32>,
    finding: &'a str,
) -> impl Fn(&Profile) -> Vec<String> + 'a {
    move |_| {
        calls.set(calls.get() + 1);
        if calls.get() == 1 {
            vec![finding.to_owned()]
        } else {
            Vec::new()
        }
    }
}

fn no_problems(_: &Profile) -> Vec<String> {
    Vec::new()
}

/// The wizard from the seed draft, answered by `p`, discovering through `connect`.
pub fn run_with(
    p: &mut ScriptedPrompter,
    connect: &dyn Connect,
    check: wizard::Check<'_>,
) -> Result<Outcome, WizardError> {
    let opts = Options {
        draft: wizard::seed_draft(),
        token_dir: "/nonexistent".into(),
        check,
    };
    wizard::run(p, connect, opts)
}

fn run_scripted(
    answers: Vec<Answer>,
    check: wizard::Check<'_>,
) -> (Result<Outcome, WizardError>, ScriptedPrompter) {
    let inv = seed_inventory();
    let mut p = ScriptedPrompter::new(answers);
    let out = run_with(&mut p, &inv, check);
    (out, p)
}

/// The wizard told the user something containing `needle`.
#[track_caller]
fn assert_noted(p: &ScriptedPrompter, needle: &str) {
    assert!(
        p.notes.iter().any(|n| n.contains(needle)),
        "no note contains {needle:?}: {:#?}",
        p.notes
    );
}

#[test]
fn scripted_answers_produce_the_homelab_profile() {
    let (out, p) = run_scripted(homelab_answers(), &|p| {
        talos_pve::lint::lint(p).error_lines()
    });
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(p.remaining(), 0, "every scripted answer was asked for");
    assert!(out.token_file.is_none());
    // Saved and loaded again, the profile equals the hand-written homelab profile.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("homelab.yaml");
    let mut saver = ScriptedPrompter::new([]);
    assert!(wizard::save(&mut saver, &path, &out).unwrap());
    let loaded = profile::load(&path).unwrap();
    assert_eq!(loaded, out.profile);
    assert_eq!(loaded, homelab());
    // The typos were rejected with their reason, then asked again.
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("host bits") && n.contains("10.8.16.0/24")),
        "{:?}",
        p.notes
    );
    assert_noted(&p, "10.8.28.1 is the gateway");
    assert_eq!(
        p.questions
            .iter()
            .filter(|q| *q == "management subnet")
            .count(),
        2
    );
    // Discovery was offered, and the summary came from the plan.
    assert!(
        p.questions
            .contains(&"Proxmox hosts for the Talos VMs".to_owned())
    );
    assert_noted(&p, "10.8.32.0/24 via 10.8.28.20");
    assert_noted(&p, "storage link bond0 10.8.48.10");
}

#[test]
fn final_check_problems_are_shown_and_can_be_overridden() {
    let lint = |_: &Profile| vec!["E999 pretend lint finding".to_owned()];
    let mut answers = homelab_answers();
    answers.push(Answer::Pick("Save anyway".into()));
    let (out, p) = run_scripted(answers, &lint);
    assert!(out.is_ok());
    assert_noted(&p, "E999 pretend lint finding");

    let mut answers = homelab_answers();
    answers.push(Answer::Pick("Stop without saving".into()));
    let (out, _) = run_scripted(answers, &lint);
    assert!(matches!(out, Err(WizardError::Aborted)));
}

#[test]
fn token_secret_goes_to_a_0600_file_not_the_profile() {
    let mut answers = homelab_answers();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("homelab.token");
    // Order: endpoint, token id, secret, fingerprint, then "save it?" and the path.
    answers[4] = t("s3cret-uuid");
    answers.insert(6, d());
    answers.insert(7, t(token.to_str().unwrap()));
    let (out, p) = run_scripted(answers, &no_problems);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(out.profile.proxmox.token_file.as_deref(), token.to_str());
    let path = dir.path().join("p.yaml");
    wizard::save(&mut ScriptedPrompter::new([]), &path, &out).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains("s3cret-uuid"),
        "secret leaked into the profile"
    );
    assert_eq!(std::fs::read_to_string(&token).unwrap(), "s3cret-uuid");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&token).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}

#[test]
fn save_refuses_to_overwrite_without_a_yes() {
    let (out, _) = run_scripted(homelab_answers(), &no_problems);
    let out = out.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yaml");
    std::fs::write(&path, "keep me").unwrap();
    let mut p = ScriptedPrompter::new([Answer::Default]);
    assert!(!wizard::save(&mut p, &path, &out).unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    let mut p = ScriptedPrompter::new([Answer::Yes]);
    assert!(wizard::save(&mut p, &path, &out).unwrap());
    assert_eq!(profile::load(&path).unwrap(), homelab());
}

#[test]
fn init_without_a_terminal_points_at_profile_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(support::bin())
        .args(["init", "--out"])
        .arg(dir.path().join("p.yaml"))
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--profile FILE"), "{err}");
    assert!(!dir.path().join("p.yaml").exists());
}

#[test]
fn completions_and_man_page_are_printed() {
    for args in [
        &["completions", "bash"][..],
        &["completions", "zsh"],
        &["man"],
    ] {
        let out = Command::new(support::bin()).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("talos-pve"),
            "{args:?} printed no talos-pve text"
        );
        assert!(
            text.contains("init"),
            "{args:?} does not mention the init subcommand"
        );
    }
}

/// `init --discovery-file` (from `inv`) in a pty: name `lab`, then Enter for every
/// question until the profile is saved. Returns the saved profile's path and what the
/// terminal showed after the token questions.
#[cfg(unix)]
fn pty_init_with_defaults(inv: &Inventory, dir: &std::path::Path) -> (std::path::PathBuf, String) {
    use rexpect::session::spawn_command;

    let inv_file = dir.join("discovery.yaml");
    std::fs::write(&inv_file, serde_saphyr::to_string(inv).unwrap()).unwrap();
    let out = dir.join("lab.yaml");
    let mut cmd = Command::new(support::bin());
    cmd.arg("init")
        .arg("--out")
        .arg(&out)
        .arg("--discovery-file")
        .arg(&inv_file)
        .env("NO_COLOR", "1")
        .env("TERM", "dumb");
    // Short expect timeouts so the loop below can press Enter while waiting.
    let mut s = spawn_command(cmd, Some(150)).unwrap();
    let wait_for = |s: &mut rexpect::session::PtySession, needle: &str| {
        for _ in 0..100 {
            if s.exp_string(needle).is_ok() {
                return;
            }
        }
        panic!("`{needle}` never appeared");
    };
    wait_for(&mut s, "Cluster name");
    s.send_line("lab").unwrap();
    wait_for(&mut s, "Description");
    s.send_line("").unwrap();
    wait_for(&mut s, "Proxmox API endpoint");
    s.send_line("").unwrap();
    wait_for(&mut s, "API token id");
    s.send_line("").unwrap();
    wait_for(&mut s, "API token secret");
    s.send_line("").unwrap();
    // From here on every question takes its default (Enter) until the profile is saved.
    let mut shown = None;
    for _ in 0..400 {
        if let Ok(before) = s.exp_string("Profile saved to") {
            shown = Some(before);
            break;
        }
        s.send_line("").unwrap();
    }
    let shown = shown.expect("the wizard never saved the profile");
    s.exp_eof().unwrap();
    (out, shown)
}

/// "Overwrite it?" comes before the questions, so "no" throws no answers away.
#[cfg(unix)]
#[test]
fn pty_init_asks_about_an_existing_file_first() {
    use rexpect::session::spawn_command;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("kept.yaml");
    std::fs::write(&out, "keep me\n").unwrap();
    let mut cmd = Command::new(support::bin());
    cmd.arg("init").arg("--out").arg(&out).arg("--lab");
    cmd.env("NO_COLOR", "1").env("TERM", "dumb");
    let mut s = spawn_command(cmd, Some(10_000)).unwrap();
    let before = s.exp_string("exists. Overwrite it?").unwrap();
    assert!(!before.contains("Cluster name"), "{before}");
    s.send_line("n").unwrap();
    let rest = s.exp_eof().unwrap();
    assert!(!rest.contains("Cluster name"), "{rest}");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "keep me\n");
}

/// The real terminal path: dialoguer in a pty, discovery from a file, Enter for defaults.
#[cfg(unix)]
#[test]
fn pty_init_accepts_defaults_and_saves_a_loadable_profile() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = pty_init_with_defaults(&seed_inventory(), dir.path());
    let p = profile::load(&out).unwrap();
    assert!(
        !p.one_network(),
        "hosts inside the seed's VLAN 16: two networks"
    );
    assert_eq!(p.metadata.name, "lab");
    assert_eq!(p.nodes.len(), 3);
    assert_eq!(
        p.nodes[2].workload.as_ref().unwrap().address,
        "10.8.28.22".parse::<Ipv4Addr>().unwrap()
    );
    assert_eq!(p.proxmox.hosts[2].uplink.as_deref(), Some("eno1"));
}

/// Issue 14 §5: hosts discovered on a flat home LAN (192.168.1.20-22) get that LAN,
/// untagged, as the one network (the default answer to "one network or two"), node
/// addresses and a MetalLB pool that are free on it, one NIC per node, and the profile
/// lints without errors and builds with `up --lab`.
#[cfg(unix)]
#[test]
fn pty_init_on_a_flat_lan_proposes_it_and_the_profile_builds_in_the_lab() {
    let mut inv = seed_inventory();
    for (i, h) in inv.hosts.iter_mut().enumerate() {
        h.address = Ipv4Addr::new(192, 168, 1, 20 + i as u8);
        h.bonds.clear();
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, shown) = pty_init_with_defaults(&inv, dir.path());
    assert!(shown.contains("Networks for the Talos VMs"), "{shown}");
    assert!(
        shown.contains("One network: management and workload share it"),
        "{shown}"
    );
    let p = profile::load(&out).unwrap();
    let mgmt = p.network(profile::NetworkRole::Management).unwrap();
    assert_eq!(mgmt.subnet.to_string(), "192.168.1.0/24");
    assert_eq!(mgmt.vlan, None);
    assert_eq!(mgmt.gateway, Some(Ipv4Addr::new(192, 168, 1, 1)));
    let addrs: Vec<String> = p
        .nodes
        .iter()
        .map(|n| n.management.address.to_string())
        .collect();
    assert_eq!(addrs, ["192.168.1.23", "192.168.1.24", "192.168.1.25"]);
    // One network: no workload network, no second NIC, the seed's VLANs gone.
    assert!(p.one_network(), "{:#?}", p.networks);
    assert_eq!(p.networks.len(), 1, "{:#?}", p.networks);
    assert!(p.nodes.iter().all(|n| n.workload.is_none()));
    assert_eq!(p.dns.servers, [Ipv4Addr::new(192, 168, 1, 1)]);
    let pool = p.addons.metallb.as_ref().map(|m| m.pool.to_string());
    assert_eq!(pool.as_deref(), Some("192.168.1.200-192.168.1.249"));
    let file = out.display().to_string();
    let (code, lint_out, err) = support::run(&["lint", "--profile", &file]);
    assert_eq!(code, 0, "{lint_out}{err}");
    // Pods are masqueraded on a home LAN: no asymmetric replies, no routes to add.
    assert!(p.routing.masquerade);
    for code in ["NET601", "NET407", "NET408"] {
        assert!(!lint_out.contains(code), "{code}:\n{lint_out}");
    }
    let cluster = dir.path().join("cluster").display().to_string();
    let (code, up_out, err) = support::run(&[
        "up",
        "--profile",
        &file,
        "--lab",
        "--yes",
        "--dir",
        &cluster,
        "--progress",
        "plain",
        "--lab-speed",
        "600",
    ]);
    assert_eq!(
        code, 0,
        "up failed\n--- stdout\n{up_out}\n--- stderr\n{err}"
    );
}

#[test]
fn fixing_a_section_starts_from_the_previous_answers() {
    let calls = std::cell::Cell::new(0);
    let lint = finding_once(&calls, "E100 pretend finding about nodes");
    let mut answers = homelab_answers();
    answers.push(Answer::Pick("Change the nodes".into()));
    // Node count, then six questions per node: Enter keeps every earlier answer.
    answers.extend(std::iter::repeat_n(d(), 1 + 3 * 6));
    let (out, p) = run_scripted(answers, &lint);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(p.remaining(), 0);
    assert_eq!(calls.get(), 2);
    assert_eq!(out.profile, homelab());
}

/// Going back to change the endpoint moves the DNS record that named the old one.
#[test]
fn the_dns_record_default_follows_a_changed_endpoint() {
    let calls = std::cell::Cell::new(0);
    let lint = finding_once(&calls, "E100 pretend finding about the endpoint");
    let mut answers = homelab_answers();
    answers.push(Answer::Pick("Change Kubernetes, DNS and add-ons".into()));
    answers.extend([d(), t("https://10.8.16.21:6443")]);
    answers.extend(std::iter::repeat_n(d(), 13));
    let (out, p) = run_scripted(answers, &lint);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(p.remaining(), 0);
    let api = out.profile.dns.records.iter().find(|r| r.name == "k8s-api");
    assert_eq!(
        api.map(|r| r.address.to_string()).as_deref(),
        Some("10.8.16.21")
    );
}

/// The final menu goes back to a single page: the add-ons page asks only its own question.
#[test]
fn the_add_ons_page_can_be_changed_alone() {
    let calls = std::cell::Cell::new(0);
    let lint = finding_once(&calls, "E100 pretend finding about the pool");
    let mut answers = homelab_answers();
    answers.push(Answer::Pick("Change the add-ons".into()));
    answers.push(t("10.8.31.20-10.8.31.100"));
    let (out, p) = run_scripted(answers, &lint);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(p.remaining(), 0);
    let pool = out
        .profile
        .addons
        .metallb
        .as_ref()
        .map(|m| m.pool.to_string());
    assert_eq!(pool.as_deref(), Some("10.8.31.20-10.8.31.100"));
}

#[test]
fn duplicate_node_addresses_are_refused_as_typed() {
    let mut answers = homelab_answers();
    // Node 2's management address: type node 1's, get told, then take the default.
    let node2_mgmt = answers.len() - 15 - 6 - 6 + 4;
    answers.insert(node2_mgmt, t("10.8.16.20"));
    answers.insert(node2_mgmt, t("10.8.16.190"));
    let (out, p) = run_scripted(answers, &no_problems);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(out.profile, homelab());
    assert_noted(&p, "10.8.16.190 is already used by pve-ms01-01-vpro");
    assert_noted(&p, "10.8.16.20 is already used by talos-k8s-01");
}

/// "One network" can be chosen for the homelab's hosts too: one NIC per node on the
/// management network, a pool that avoids every known address, and lint finds no error.
#[test]
fn one_network_chosen_on_the_seed_layout_lints_clean() {
    let mut answers = vec![d(); 10]; // cluster … disk storage
    answers.push(Answer::Pick(
        "One network: management and workload share it (one NIC per VM)".into(),
    ));
    answers.extend(std::iter::repeat_n(d(), 200));
    let lint = |p: &Profile| talos_pve::lint::lint(p).error_lines();
    let (out, p) = run_scripted(answers, &lint);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    let prof = out.profile;
    assert!(prof.one_network());
    assert!(prof.nodes.iter().all(|n| n.workload.is_none()));
    let pool = prof.addons.metallb.as_ref().map(|m| m.pool.to_string());
    assert_eq!(pool.as_deref(), Some("10.8.16.200-10.8.16.249"));
    assert!(
        p.questions
            .iter()
            .any(|q| q.ends_with("talos-k8s-01: address"))
    );
    assert!(
        !p.questions.iter().any(|q| q.contains("workload")),
        "{:#?}",
        p.questions
    );
}

/// A flat LAN where the seed's pod block would sit (10.8.32.0/24): the proposed pod
/// subnet is the next free aligned block after it, and the profile lints clean.
#[test]
fn the_pod_block_default_moves_past_a_clashing_lan() {
    let mut inv = seed_inventory();
    for (i, h) in inv.hosts.iter_mut().enumerate() {
        h.address = Ipv4Addr::new(10, 8, 32, 20 + i as u8);
        h.bonds.clear();
    }
    let mut p = ScriptedPrompter::new(std::iter::repeat_n(d(), 200));
    let lint = |p: &Profile| talos_pve::lint::lint(p).error_lines();
    let out = run_with(&mut p, &inv, &lint);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert!(out.profile.one_network());
    assert_eq!(
        out.profile.kubernetes.pod_subnet.to_string(),
        "10.8.36.0/22"
    );
}

/// Issue 14: `<` at any typed question goes back a page (here from the node count to
/// the networks page), and Enter there keeps every earlier answer.
#[test]
fn back_from_any_page_keeps_the_answers() {
    let mut answers = homelab_answers();
    let node_count = answers.len() - 35;
    // Networks page again: one-or-two, 5 + 5 + 8 + 6 network questions, 3 out-of-band.
    let again = std::iter::once(t("<")).chain(std::iter::repeat_n(d(), 28));
    answers.splice(node_count..node_count, again);
    let (out, p) = run_scripted(answers, &no_problems);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(p.remaining(), 0);
    assert_eq!(out.profile, homelab());
    let asked = |q: &str| p.questions.iter().filter(|x| x.contains(q)).count();
    assert_eq!(asked("Networks for the Talos VMs"), 2, "{:#?}", p.questions);
}

/// Esc at a choice goes back a page too: at "one network or two" back to the hosts
/// page (choices only), and at the final menu back to the menu.
#[test]
fn esc_at_a_choice_goes_back_a_page() {
    let mut answers = homelab_answers();
    // Index 10: "Networks for the Talos VMs"; the hosts page is 4 choices.
    answers.splice(10..10, [Answer::Back, d(), d(), d(), d()]);
    answers.extend([Answer::Back, Answer::Pick("Save anyway".into())]);
    let always = |_: &Profile| vec!["E100 pretend finding".to_owned()];
    let (out, p) = run_scripted(answers, &always);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(p.remaining(), 0);
    assert_eq!(out.profile, homelab());
    let asked = |q: &str| p.questions.iter().filter(|x| x.contains(q)).count();
    assert_eq!(asked("Proxmox hosts for the Talos VMs"), 2);
    assert_eq!(asked("What now?"), 2);
}

/// Going back and changing the management subnet moves the defaults that derive from
/// it: the gateway, every node address and the API endpoint.
#[test]
fn defaults_follow_a_subnet_changed_by_going_back() {
    let mut answers = homelab_answers();
    answers.truncate(answers.len() - 15); // up to the Kubernetes page
    // Back to the nodes page, back again to the networks page; a new management subnet.
    answers.extend([t("<"), t("<"), d(), d(), t("10.8.20.0/24"), d(), t(""), d()]);
    answers.extend(std::iter::repeat_n(d(), 5 + 8 + 6)); // workload, storage, infrastructure
    answers.extend([t(""), t(""), t("")]); // out-of-band devices were on 10.8.16.x
    answers.extend(std::iter::repeat_n(d(), 1 + 3 * 6 + 15));
    let (out, p) = run_scripted(answers, &no_problems);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(p.remaining(), 0, "{:#?}", p.questions);
    let prof = out.profile;
    let mgmt = prof.network(profile::NetworkRole::Management).unwrap();
    assert_eq!(mgmt.gateway, Some(Ipv4Addr::new(10, 8, 20, 1)));
    let addrs: Vec<String> = prof
        .nodes
        .iter()
        .map(|n| n.management.address.to_string())
        .collect();
    assert_eq!(addrs, ["10.8.20.20", "10.8.20.21", "10.8.20.22"]);
    assert_eq!(prof.kubernetes.endpoint, "https://10.8.20.20:6443");
}

/// Issue 14: a VMID that discovery lists as taken is refused as typed, naming the guest.
#[test]
fn a_vmid_used_in_the_proxmox_cluster_is_refused() {
    let mut answers = homelab_answers();
    // Node 1 starts 34 answers from the end (7 + 2 × 6 node answers, 15 settings).
    let node1_vmid = answers.len() - 34 + 2;
    answers.insert(node1_vmid, t("105"));
    let (out, p) = run_scripted(answers, &no_problems);
    let out = out.unwrap_or_else(|e| panic!("{e}\nquestions: {:#?}", p.questions));
    assert_eq!(out.profile, homelab());
    assert_noted(
        &p,
        "VMID 105 is already used by a guest listed in `usedVmids`",
    );
}

#[test]
fn a_storage_missing_on_one_host_is_reported_not_guessed() {
    let mut inv = seed_inventory();
    inv.hosts[2].storages.retain(|s| s.name != "local-lvm");
    let mut p = ScriptedPrompter::new(homelab_answers());
    let out = run_with(&mut p, &inv, &no_problems);
    let e = out.err().expect("no common disk storage");
    assert!(
        e.to_string()
            .contains("no disk-image storage exists on every chosen host"),
        "{e}"
    );
    // Choosing only the hosts that have it works: two hosts, two nodes.
    let mut answers = homelab_answers();
    answers[6] = Answer::PickMany(vec!["pve-ms01-01".into(), "pve-ms01-02".into()]);
    answers.retain(|a| *a != t("pve-aimax-01-kvm=10.8.16.92 JetKVM"));
    let third_node = answers.len() - 15 - 6;
    answers.drain(third_node..third_node + 6);
    let mut p = ScriptedPrompter::new(answers);
    let out = run_with(&mut p, &inv, &no_problems).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.remaining(), 0);
    let hosts: Vec<&str> = out
        .profile
        .proxmox
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .collect();
    assert_eq!(hosts, ["pve-ms01-01", "pve-ms01-02"]);
    let nodes: Vec<(&str, &str)> = out
        .profile
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.host.as_str()))
        .collect();
    assert_eq!(
        nodes,
        [
            ("talos-k8s-01", "pve-ms01-01"),
            ("talos-k8s-02", "pve-ms01-02")
        ]
    );
}

/// Refuses the first connection (a wrong token), then hands out the seed inventory.
struct FailsOnce {
    inv: Inventory,
    tries: std::cell::Cell<u32>,
}

impl wizard::Connect for FailsOnce {
    fn connect(
        &self,
        access: &wizard::Access,
    ) -> Result<Box<dyn wizard::Discovery + '_>, wizard::DiscoveryError> {
        self.tries.set(self.tries.get() + 1);
        if self.tries.get() == 1 {
            return Err(wizard::DiscoveryError::Remote {
                endpoint: access.endpoint.clone(),
                message: "401 authentication failure".into(),
                fix: "check the token id and secret".into(),
            });
        }
        self.inv.connect(access)
    }
}

#[test]
fn a_failed_connection_is_shown_and_asked_again() {
    let mut answers = homelab_answers();
    // After the first endpoint/token/secret/fingerprint: "again?" (yes) and four more answers.
    answers.splice(6..6, [d(), d(), d(), d(), d()]);
    let connect = FailsOnce {
        inv: seed_inventory(),
        tries: std::cell::Cell::new(0),
    };
    let mut p = ScriptedPrompter::new(answers);
    let out = run_with(&mut p, &connect, &no_problems).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(connect.tries.get(), 2);
    assert_eq!(out.profile, homelab());
    assert!(
        p.notes
            .iter()
            .any(|n| n.contains("401 authentication failure")
                && n.contains("https://10.8.16.10:8006"))
    );
}

#[test]
fn a_bad_discovery_file_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("discovery.yaml");
    std::fs::write(&bad, "hosts:\n  - name: pve\n    adress: 10.8.16.10\n").unwrap();
    let out = Command::new(support::bin())
        .args(["init", "--discovery-file"])
        .arg(&bad)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "bad input: {err}");
    assert!(err.contains(&bad.display().to_string()), "{err}");
    assert!(err.contains("adress"), "{err}");
}

//! The routing rehearsal against a real kernel: each node's state (links,
//! addresses, routes, rules) is built in its own network namespace (`unshare -n`,
//! dummy links, or veth pairs where the dummy driver is missing) and every
//! decision the rehearsal relied on is asked of the kernel with `ip route get`, which
//! only looks the route up: no packet is ever sent. Needs root, `unshare` and
//! `ip` (iproute2); skips with a reason otherwise, except under `CI=true`.

use std::io::Write;
use std::process::{Command, Stdio};

use talos_pve::plan::Plan;
use talos_pve::profile::{LinkRole, Profile};
use talos_pve::routing::{
    Decision, Fib, NodeDecision, Query, Rehearsal, TABLE_LOCAL, TABLE_MAIN, table_name,
};
use talos_pve::talos::config::{Contract, network_config};

use super::support::homelab;

fn kernel_available() -> Result<(), String> {
    let ok = |cmd: &mut Command| {
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ok(Command::new("ip").arg("-V")) {
        return Err("no `ip` (iproute2)".into());
    }
    if !ok(Command::new("unshare").args(["-n", "true"])) {
        return Err("`unshare -n` failed (needs root and util-linux)".into());
    }
    Ok(())
}

/// Run the namespace test, or say why not (a failure under CI=true).
fn can_run() -> bool {
    match kernel_available() {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but the namespace routing test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            false
        }
    }
}

/// Shell commands that give a fresh namespace this node's routing state, then one
/// `ip route get` per query, each preceded by a marker line.
fn script(fib: &Fib, queries: &[&Query]) -> String {
    let mut s = String::from(
        "set -e\nip link set lo up\necho 1 > /proc/sys/net/ipv4/conf/all/forwarding\n\
         mk() { ip link add \"$1\" type dummy 2>/dev/null || { ip link add \"$1\" type veth peer name \"$1.p\" && ip link set \"$1.p\" up; }; ip link set \"$1\" up; }\n",
    );
    for l in fib.links() {
        s.push_str(&format!("mk {}\n", l.name));
        for a in &l.addresses {
            s.push_str(&format!("ip addr add {a} dev {}\n", l.name));
        }
    }
    for (table, routes) in fib.tables() {
        for r in routes.iter().filter(|r| !r.kernel) {
            let via = r.via.map(|v| format!(" via {v}")).unwrap_or_default();
            let src = r.src.map(|v| format!(" src {v}")).unwrap_or_default();
            s.push_str(&format!(
                "ip route add {}{via} dev {}{src} metric {} table {table}\n",
                r.dst, r.dev, r.metric
            ));
        }
    }
    for r in fib
        .rules()
        .into_iter()
        // The three rules every namespace starts with are there already.
        .filter(|r| {
            let builtin = r.from.is_none() && r.to.is_none() && r.iif.is_none();
            !(builtin && [0, 32766, 32767].contains(&r.priority))
        })
    {
        let from = r.from.map(|n| format!(" from {n}")).unwrap_or_default();
        let to = r.to.map(|n| format!(" to {n}")).unwrap_or_default();
        let iif = r
            .iif
            .as_ref()
            .map(|n| format!(" iif {n}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "ip rule add priority {}{from}{to}{iif} table {}\n",
            r.priority, r.table
        ));
    }
    s.push_str("set +e\n");
    for (i, q) in queries.iter().enumerate() {
        let from = q.src.map(|a| format!(" from {a}")).unwrap_or_default();
        let iif = q
            .iif
            .as_ref()
            .map(|d| format!(" iif {d}"))
            .unwrap_or_default();
        s.push_str(&format!(
            "echo '@@ {i}'\nip -o route get {}{from}{iif} 2>&1\n",
            q.dst
        ));
    }
    s
}

/// What `ip -o route get` printed, in the rehearsal's terms (`None`: no route).
fn parse(line: &str) -> Option<Decision> {
    if line.starts_with("RTNETLINK") || line.contains("unreachable") {
        return None;
    }
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |k: &str| {
        words
            .windows(2)
            .find(|w| w[0] == k)
            .map(|w| w[1].to_owned())
    };
    let local = words.first() == Some(&"local");
    Some(Decision {
        table: match after("table").as_deref() {
            Some("local") => TABLE_LOCAL,
            Some("main") | None if !local => TABLE_MAIN,
            None => TABLE_LOCAL,
            Some(t) => t.parse().unwrap_or(0),
        },
        local,
        dev: after("dev").unwrap_or_default(),
        via: after("via").and_then(|v| v.parse().ok()),
        src: after("src").and_then(|v| v.parse().ok()),
    })
}

/// Build every node in a namespace and compare each decision; returns how many.
fn model_matches_kernel(r: &Rehearsal) -> usize {
    let mut compared = 0;
    for node in &r.nodes {
        let mut queries: Vec<&NodeDecision> = Vec::new();
        for d in r.decisions.iter().filter(|d| d.node == node.name) {
            if !queries.iter().any(|q| q.query == d.query) {
                queries.push(d);
            }
        }
        let qs: Vec<&Query> = queries.iter().map(|d| &d.query).collect();
        let mut child = Command::new("unshare")
            .args(["-n", "sh", "-s"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("unshare runs");
        let text = script(&node.fib, &qs);
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("@@ 0") || qs.is_empty(),
            "{}: building the namespace failed: {}\n{text}",
            node.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut answers = stdout.split("@@ ").skip(1);
        for d in &queries {
            let block = answers.next().expect("one answer per query");
            let line = block.lines().nth(1).unwrap_or("");
            // The kernel prints the source only when it selected one.
            let selected = |x: Option<Decision>| {
                x.map(|x| Decision {
                    src: x.src.filter(|_| d.query.src.is_none()),
                    ..x
                })
            };
            let kernel = selected(parse(line));
            let model = selected(d.decision.clone());
            let show = |x: &Option<Decision>| match x {
                None => "no route".to_owned(),
                Some(d) if d.local => "local".to_owned(),
                Some(d) => format!(
                    "dev {} via {:?} table {} src {:?}",
                    d.dev,
                    d.via,
                    table_name(d.table),
                    d.src
                ),
            };
            assert_eq!(
                show(&model),
                show(&kernel),
                "{}: `ip route get {:?}`: model and kernel disagree (kernel said `{line}`)",
                node.name,
                d.query
            );
            compared += 1;
        }
    }
    compared
}

fn rehearse(p: &Profile) -> Rehearsal {
    Rehearsal::of_profile(p, &Plan::build(p).unwrap()).unwrap()
}

#[test]
fn homelab_model_matches_the_kernel_and_every_vlan16_flow_crosses_the_gateway() {
    if !can_run() {
        return;
    }
    let r = rehearse(&homelab());
    assert!(model_matches_kernel(&r) > 50);
    for f in &r.flows {
        assert!(
            f.symmetric && !f.bypasses_gateway() && !f.detours(),
            "{} {}: {}",
            f.node,
            f.label,
            f.verdict()
        );
    }
}

/// A one-network node (profiles/one-network.yaml): one link, its default route, no
/// policy rules; the kernel agrees with the model and every flow is symmetric.
#[test]
fn a_one_network_node_matches_the_kernel() {
    if !can_run() {
        return;
    }
    let p = talos_pve::profile::load(&super::support::profile("one-network.yaml")).unwrap();
    let r = rehearse(&p);
    let links: Vec<&str> = r.nodes[0]
        .fib
        .links()
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert!(
        links.contains(&"mgmt") && !links.contains(&"work"),
        "{links:?}"
    );
    assert!(model_matches_kernel(&r) > 20);
    for f in &r.flows {
        assert!(
            f.symmetric && !f.bypasses_gateway(),
            "{} {}: {}",
            f.node,
            f.label,
            f.verdict()
        );
    }
}

#[test]
fn variants_match_the_kernel() {
    if !can_run() {
        return;
    }
    let mut masq = homelab();
    masq.routing.masquerade = true;
    let mut v12 = homelab();
    v12.talos.version = "v1.12.11".into();
    let mut via_mgmt = homelab();
    via_mgmt.routing.default_route = LinkRole::Management;
    for p in [&masq, &v12, &via_mgmt] {
        model_matches_kernel(&rehearse(p));
    }
    // 1.12 cannot hold the isolation: the rehearsal (and the kernel) say so.
    assert!(rehearse(&v12).flows.iter().any(|f| f.bypasses_gateway()));

    // A third NIC (storage VLAN 48, no gateway) on every node.
    let p = homelab();
    let plan = Plan::build(&p).unwrap();
    let configs: Vec<String> = plan
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "{}---\napiVersion: v1alpha1\nkind: LinkConfig\nname: stor\naddresses: [{{address: 10.8.48.{}/24}}]\n",
                network_config(&p, n, Contract::V1_13),
                20 + i
            )
        })
        .collect();
    let r = Rehearsal::of_configs(&p, &plan, &configs).unwrap();
    assert!(r.nodes[0].fib.links().iter().any(|l| l.name == "stor"));
    model_matches_kernel(&r);
}

#[test]
fn plan_paths_prints_the_flow_table_as_text_and_json() {
    let path = super::support::profile("homelab.yaml");
    let run = |args: &[&str]| {
        let out = Command::new(super::support::bin())
            .args(args)
            .args(["plan", "--paths", "--profile"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let text = run(&[]);
    assert!(text.contains("talos-k8s-03\n"), "{text}");
    assert!(
        text.contains("talos-k8s-01 ─[workload (VLAN 28), table 101]→ gateway ─[management (VLAN 16)]→ 10.8.16.10"),
        "{text}"
    );
    assert!(
        !text.contains("ASYMMETRIC") && !text.contains("BYPASSES"),
        "{text}"
    );
    let v: serde_json::Value = serde_json::from_str(&run(&["--output", "json"])).unwrap();
    let flows = v["flows"].as_array().unwrap();
    assert!(flows.len() > 60);
    assert!(flows.iter().all(|f| f["symmetric"] == true));
    assert!(flows.iter().any(|f| f["kind"] == "pod-management"
        && f["requestViaGateway"] == true
        && f["replyViaGateway"] == true));
}

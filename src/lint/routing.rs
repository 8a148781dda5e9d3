//! NET6xx: the routing rehearsal (`crate::routing`) run on the configs talos-pve
//! would generate; flows that are asymmetric, skip the gateway they should cross,
//! or go nowhere become findings (a detour through the gateway shows in
//! `plan --paths`; no profile talos-pve accepts produces one, so it has no code). It runs only on a profile
//! without errors (a broken plan rehearses nothing useful).

use std::collections::BTreeMap;

use super::{Finding, Rule, Severity};
use crate::plan::Plan;
use crate::profile::{LinkRole, Profile};
use crate::routing::{FlowKind, FlowPath, Rehearsal};
use crate::talos::config::Contract;

pub const ASYMMETRIC: Rule = Rule::new(
    "NET601",
    Severity::Warning,
    "flow is asymmetric: the reply takes another path than the request",
);
pub const BYPASSES_GATEWAY: Rule = Rule::new(
    "NET602",
    Severity::Warning,
    "flow between VLANs (or VLAN 16 and pods/workload/LoadBalancer) skips the gateway one way",
);
pub const UNREACHABLE: Rule = Rule::new(
    "NET603",
    Severity::Warning,
    "flow has no path (no route, or nobody answers for the next hop)",
);

pub fn check(p: &Profile, out: &mut Vec<Finding>) {
    let Ok(plan) = Plan::build(p) else { return };
    let Ok(r) = Rehearsal::of_profile(p, &plan) else {
        return;
    };
    let contract = Contract::from_talos_version(&p.talos.version).ok();
    let (path, fix) = if contract.is_some_and(|c| !c.has_routing_rules()) {
        (
            "talos.version",
            "use Talos 1.13 (`talos.version: v1.13.x`): talos-pve then adds routing tables and RoutingRuleConfig documents so these flows cross the gateway both ways; on 1.12 (no routing rules) enforce management isolation on the nodes instead, with a CiliumClusterwideNetworkPolicy denying pod egress to the management hosts",
        )
    } else if p.routing.default_route == LinkRole::Management {
        (
            "routing.defaultRoute",
            "set `routing.defaultRoute: workload`: pods, LoadBalancer replies and the workload address then leave through the workload gateway, and management replies through their own table",
        )
    } else {
        (
            "routing",
            "`talos-pve plan --paths` shows each path; check the networks' gateways and the node addresses",
        )
    };
    type Check = (Rule, fn(&FlowPath) -> bool, &'static str);
    let checks: [Check; 3] = [
        (ASYMMETRIC, FlowPath::asymmetric, "asymmetric"),
        (
            BYPASSES_GATEWAY,
            FlowPath::bypasses_gateway,
            "skip the gateway",
        ),
        (UNREACHABLE, |f| f.unreachable.is_some(), "have no path"),
    ];
    for (rule, test, what) in checks {
        let mut by_kind: BTreeMap<FlowKind, Vec<&FlowPath>> = BTreeMap::new();
        for f in r.flows.iter().filter(|f| test(f)) {
            by_kind.entry(f.kind).or_default().push(f);
        }
        for (kind, flows) in by_kind {
            let mut nodes: Vec<&str> = flows.iter().map(|f| f.node.as_str()).collect();
            nodes.dedup();
            let e = flows[0];
            out.push(rule.at(
                path,
                format!(
                    "{}: {} flow(s) on {} {what}, e.g. {} on {}: {}",
                    kind.title(),
                    flows.len(),
                    nodes.join(", "),
                    e.label,
                    e.node,
                    e.verdict()
                ),
                fix,
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::lint::lint;
    use crate::test_support::homelab;

    #[test]
    fn homelab_flows_hold_and_talos_1_12_says_what_does_not() {
        let r = lint(&homelab());
        assert!(
            !r.findings.iter().any(|f| f.code.starts_with("NET6")),
            "{:?}",
            r.findings
        );
        let mut p = homelab();
        p.talos.version = "v1.12.11".into();
        // 1.12 runs Kubernetes up to 1.35 (NET511 otherwise stops lint before routing).
        p.kubernetes.version = "1.35.0".into();
        let r = lint(&p);
        let f = r
            .with_code("NET602")
            .find(|f| f.message.contains("pod → management hosts"))
            .expect("pod → management bypass reported");
        assert_eq!(f.path, "talos.version");
        assert!(
            f.fix.contains("CiliumClusterwideNetworkPolicy"),
            "{}",
            f.fix
        );
        assert!(r.with_code("NET601").count() > 0);
    }
}

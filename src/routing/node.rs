//! One node's routing state as the kernel will hold it, built from three sources:
//! the machine config's network documents (`LinkConfig` addresses and routes,
//! `RoutingRuleConfig`), the platform's cloud-init default route, and what Cilium
//! adds in native routing.
//!
//! Talos facts (v1.13.9): a `LinkConfig` route without a metric gets 1024
//! (`internal/app/machined/pkg/controllers/network/route_config.go`), as does the
//! nocloud gateway (`network.DefaultRouteMetric`); platform and machine-config routes
//! with different gateways are distinct resources, so both are installed
//! (`pkg/machinery/resources/network/network.go` `RouteID`). Cilium
//! (`Documentation/network/concepts/routing.rst`): the own pod CIDR routes to
//! `cilium_host`, other nodes' pod CIDRs via their InternalIP with
//! `autoDirectNodeRoutes`. Pod traffic enters the host from the pod's veth (`lxc`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::Value;

use super::RoutingError;
use super::fib::{Fib, Route, Rule, TABLE_MAIN, parse_table};

/// The device pod traffic arrives on, and the one that leads to the own pods.
pub const POD_IIF: &str = "lxc";
pub const CILIUM_HOST: &str = "cilium_host";
/// Metric of routes Talos creates without one (and of the nocloud gateway).
pub const TALOS_DEFAULT_METRIC: u32 = 1024;

/// A node as the rehearsal sees it.
#[derive(Debug, Clone)]
pub struct NodeNet {
    pub name: String,
    pub fib: Fib,
    pub pod_cidr: Ipv4Net,
}

/// Cilium's part: the own pod CIDR, and each other node's pod CIDR via its workload
/// address on the workload link.
#[derive(Debug, Clone)]
pub struct CiliumRoutes<'a> {
    pub pod_cidr: Ipv4Net,
    pub workload_link: &'a str,
    pub peers: Vec<(Ipv4Net, Ipv4Addr)>,
}

/// The cloud-init default route (nocloud `gateway` → metric 1024).
#[derive(Debug, Clone)]
pub struct PlatformRoute<'a> {
    pub link: &'a str,
    pub gateway: Ipv4Addr,
}

impl NodeNet {
    /// Build from the node's network config documents (a multi-document YAML
    /// stream; other documents are ignored).
    pub fn build(
        name: &str,
        config: &str,
        platform: Option<PlatformRoute<'_>>,
        cilium: &CiliumRoutes<'_>,
    ) -> Result<Self, RoutingError> {
        let bad = |what: String| RoutingError::Config {
            node: name.to_owned(),
            what,
        };
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(config).map_err(|e| {
            bad(format!(
                "not YAML: {}",
                e.to_string().lines().next().unwrap_or("")
            ))
        })?;
        let mut fib = Fib::new();
        let kind = |d: &Value| d.get("kind").and_then(Value::as_str).map(str::to_owned);
        let text = |d: &Value, k: &str| d.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut routes = Vec::new();
        for d in docs
            .iter()
            .filter(|d| kind(d).as_deref() == Some("LinkConfig"))
        {
            let link = text(d, "name").ok_or_else(|| bad("LinkConfig without a name".into()))?;
            let mut addrs = Vec::new();
            for a in d
                .get("addresses")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let s = text(a, "address").unwrap_or_default();
                addrs.push(
                    s.parse::<Ipv4Net>()
                        .map_err(|_| bad(format!("LinkConfig `{link}`: address `{s}`")))?,
                );
            }
            fib.add_link(&link, &addrs);
            for r in d
                .get("routes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                routes.push(route(&link, r).map_err(|w| bad(format!("LinkConfig `{link}`: {w}")))?);
            }
        }
        for (table, r) in routes {
            fib.add_route(table, r);
        }
        for d in docs
            .iter()
            .filter(|d| kind(d).as_deref() == Some("RoutingRuleConfig"))
        {
            fib.add_rule(rule(d).map_err(bad)?);
        }
        if let Some(p) = platform {
            fib.add_route(
                TABLE_MAIN,
                Route {
                    dst: Ipv4Net::default(),
                    via: Some(p.gateway),
                    dev: p.link.to_owned(),
                    src: None,
                    metric: TALOS_DEFAULT_METRIC,
                    kernel: false,
                },
            );
        }
        fib.add_link(CILIUM_HOST, &[]);
        fib.add_link(POD_IIF, &[]);
        let on = |dst, via: Option<Ipv4Addr>, dev: &str| Route {
            dst,
            via,
            dev: dev.to_owned(),
            src: None,
            metric: 0,
            kernel: false,
        };
        fib.add_route(TABLE_MAIN, on(cilium.pod_cidr, None, CILIUM_HOST));
        for (cidr, via) in &cilium.peers {
            fib.add_route(TABLE_MAIN, on(*cidr, Some(*via), cilium.workload_link));
        }
        Ok(Self {
            name: name.to_owned(),
            fib,
            pod_cidr: cilium.pod_cidr,
        })
    }
}

fn route(link: &str, r: &Value) -> Result<(u32, Route), String> {
    let field = |k: &str| r.get(k).and_then(Value::as_str);
    let dst = match field("destination") {
        Some(s) => s
            .parse::<Ipv4Net>()
            .map_err(|_| format!("route destination `{s}`"))?,
        None => Ipv4Net::default(),
    };
    let addr = |k: &str| -> Result<Option<Ipv4Addr>, String> {
        field(k)
            .map(|s| s.parse().map_err(|_| format!("route {k} `{s}`")))
            .transpose()
    };
    let table = match field("table") {
        Some(t) => parse_table(t).ok_or_else(|| format!("route table `{t}`"))?,
        None => TABLE_MAIN,
    };
    let metric = r
        .get("metric")
        .and_then(Value::as_u64)
        .and_then(|m| u32::try_from(m).ok())
        .unwrap_or(TALOS_DEFAULT_METRIC);
    Ok((
        table,
        Route {
            dst,
            via: addr("gateway")?,
            dev: link.to_owned(),
            src: addr("source")?,
            metric,
            kernel: false,
        },
    ))
}

fn rule(d: &Value) -> Result<Rule, String> {
    let field = |k: &str| d.get(k).and_then(Value::as_str);
    let priority = field("name")
        .and_then(|p| p.parse().ok())
        .ok_or("RoutingRuleConfig name is not a priority")?;
    let prefix = |k: &str| -> Result<Option<Ipv4Net>, String> {
        field(k)
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("RoutingRuleConfig {priority}: {k} `{s}`"))
            })
            .transpose()
    };
    let table = field("table")
        .and_then(parse_table)
        .ok_or_else(|| format!("RoutingRuleConfig {priority}: table"))?;
    Ok(Rule {
        priority,
        from: prefix("src")?,
        to: prefix("dst")?,
        iif: field("iifName").map(str::to_owned),
        table,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::fib::Query;

    const CONFIG: &str = "apiVersion: v1alpha1\nkind: LinkConfig\nname: mgmt\naddresses: [{address: 10.8.16.20/24}]\nroutes: [{destination: 10.8.16.0/24, table: \"100\"}, {gateway: 10.8.16.1, table: \"100\"}]\n---\napiVersion: v1alpha1\nkind: LinkConfig\nname: work\naddresses: [{address: 10.8.28.20/22}]\nroutes: [{gateway: 10.8.28.1, metric: 512}]\n---\napiVersion: v1alpha1\nkind: RoutingRuleConfig\nname: \"1000\"\nsrc: 10.8.16.20/32\ntable: \"100\"\n";

    #[test]
    fn config_platform_and_cilium_routes_are_all_there() {
        let cilium = CiliumRoutes {
            pod_cidr: "10.8.32.0/24".parse().unwrap(),
            workload_link: "work",
            peers: vec![(
                "10.8.33.0/24".parse().unwrap(),
                "10.8.28.21".parse().unwrap(),
            )],
        };
        let platform = PlatformRoute {
            link: "mgmt",
            gateway: "10.8.16.1".parse().unwrap(),
        };
        let n = NodeNet::build("n1", CONFIG, Some(platform), &cilium).unwrap();
        let get = |dst: &str, src: Option<&str>, iif: Option<&str>| {
            n.fib
                .lookup(&Query {
                    dst: dst.parse().unwrap(),
                    src: src.map(|s| s.parse().unwrap()),
                    iif: iif.map(str::to_owned),
                })
                .unwrap()
        };
        // 512 beats the platform's 1024.
        assert_eq!(get("1.1.1.1", None, None).dev, "work");
        assert_eq!(get("1.1.1.1", Some("10.8.16.20"), None).table, 100);
        assert_eq!(
            get("10.8.32.9", Some("1.1.1.1"), Some("work")).dev,
            CILIUM_HOST
        );
        let d = get("10.8.33.9", Some("10.8.32.9"), Some(POD_IIF));
        assert_eq!(d.via, Some("10.8.28.21".parse().unwrap()));
        let e = NodeNet::build(
            "n1",
            "kind: LinkConfig\nname: x\naddresses: [{address: nope}]\n",
            None,
            &cilium,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("n1") && e.contains("nope") && e.contains("fix:"),
            "{e}"
        );
    }
}

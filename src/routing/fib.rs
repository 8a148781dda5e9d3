//! A model of the Linux IPv4 forwarding decision: policy rules by priority, numbered
//! tables, longest-prefix match, then the lowest metric; on-link versus via-gateway
//! routes; and the source address the kernel picks for locally sent packets.
//!
//! Semantics follow `net/ipv4/fib_rules.c` and `fib_trie.c`: a rule whose table has
//! no matching route falls through to the next rule; addresses add a `local` route
//! (table 255) and a connected route with the address as preferred source (main);
//! a locally generated packet matches `iif lo` rules.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

pub const TABLE_DEFAULT: u32 = 253;
pub const TABLE_MAIN: u32 = 254;
pub const TABLE_LOCAL: u32 = 255;

/// A route as `ip route` holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub dst: Ipv4Net,
    /// `None`: on-link (scope link).
    pub via: Option<Ipv4Addr>,
    pub dev: String,
    /// Preferred source (`src`).
    pub src: Option<Ipv4Addr>,
    pub metric: u32,
    /// Added by the kernel for an address (connected or local); not configured.
    pub kernel: bool,
}

/// A policy routing rule (`ip rule`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub priority: u32,
    pub from: Option<Ipv4Net>,
    pub to: Option<Ipv4Net>,
    pub iif: Option<String>,
    pub table: u32,
}

/// A link and its addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Link {
    pub name: String,
    pub addresses: Vec<Ipv4Net>,
}

/// What a lookup asks: `ip route get <dst> [from <src>] [iif <iif>]`. Without `iif`
/// the packet is sent by the node itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Query {
    pub dst: Ipv4Addr,
    pub src: Option<Ipv4Addr>,
    pub iif: Option<String>,
}

/// The kernel's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Decision {
    pub table: u32,
    /// Delivered to this node (a `local` route).
    pub local: bool,
    pub dev: String,
    pub via: Option<Ipv4Addr>,
    /// Source of a locally sent packet (the query's, or the one the kernel selects).
    pub src: Option<Ipv4Addr>,
}

/// One node's routing state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Fib {
    links: Vec<Link>,
    rules: Vec<Rule>,
    tables: BTreeMap<u32, Vec<Route>>,
}

impl Fib {
    /// No links; the three rules every Linux system starts with.
    pub fn new() -> Self {
        let rule = |priority, table| Rule {
            priority,
            from: None,
            to: None,
            iif: None,
            table,
        };
        Self {
            links: Vec::new(),
            rules: vec![
                rule(0, TABLE_LOCAL),
                rule(32766, TABLE_MAIN),
                rule(32767, TABLE_DEFAULT),
            ],
            tables: BTreeMap::new(),
        }
    }

    /// A link with its addresses, and the routes the kernel adds for them.
    pub fn add_link(&mut self, name: &str, addresses: &[Ipv4Net]) {
        for a in addresses {
            let kernel = |dst, table: u32, fib: &mut Self| {
                fib.tables.entry(table).or_default().push(Route {
                    dst,
                    via: None,
                    dev: name.to_owned(),
                    src: Some(a.addr()),
                    metric: 0,
                    kernel: true,
                });
            };
            kernel(Ipv4Net::from(a.addr()), TABLE_LOCAL, self);
            if a.prefix_len() < 32 {
                kernel(a.trunc(), TABLE_MAIN, self);
            }
        }
        self.links.push(Link {
            name: name.to_owned(),
            addresses: addresses.to_vec(),
        });
    }

    pub fn add_route(&mut self, table: u32, route: Route) {
        self.tables.entry(table).or_default().push(route);
    }

    pub fn add_rule(&mut self, rule: Rule) {
        self.rules.push(rule);
    }

    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Rules in lookup order (priority, then insertion).
    pub fn rules(&self) -> Vec<&Rule> {
        let mut r: Vec<&Rule> = self.rules.iter().collect();
        r.sort_by_key(|r| r.priority);
        r
    }

    /// Every table with its routes.
    pub fn tables(&self) -> &BTreeMap<u32, Vec<Route>> {
        &self.tables
    }

    pub fn is_local(&self, ip: Ipv4Addr) -> bool {
        self.links
            .iter()
            .any(|l| l.addresses.iter().any(|a| a.addr() == ip))
    }

    /// The forwarding decision, or `None` when no rule finds a route (unreachable) or
    /// the packet arrives with one of this node's own addresses as its source (a
    /// martian: `ip route get … iif` answers "Invalid argument").
    pub fn lookup(&self, q: &Query) -> Option<Decision> {
        if q.iif.is_some() && q.src.is_some_and(|s| self.is_local(s)) {
            return None;
        }
        let src = q.src.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let iif = q.iif.as_deref().unwrap_or("lo");
        for rule in self.rules() {
            let matches = rule.from.is_none_or(|n| n.contains(&src))
                && rule.to.is_none_or(|n| n.contains(&q.dst))
                && rule.iif.as_deref().is_none_or(|i| i == iif);
            if !matches {
                continue;
            }
            let Some(route) = self.best(rule.table, q.dst) else {
                continue;
            };
            let local = rule.table == TABLE_LOCAL;
            let src = match q.iif {
                Some(_) => q.src,
                None => q.src.or_else(|| self.select_source(route, q.dst)),
            };
            return Some(Decision {
                table: rule.table,
                local,
                dev: if local {
                    "lo".into()
                } else {
                    route.dev.clone()
                },
                via: route.via,
                src,
            });
        }
        None
    }

    /// Longest prefix, then lowest metric, then the first added.
    fn best(&self, table: u32, dst: Ipv4Addr) -> Option<&Route> {
        let mut best: Option<&Route> = None;
        for r in self
            .tables
            .get(&table)?
            .iter()
            .filter(|r| r.dst.contains(&dst))
        {
            let better = match best {
                None => true,
                Some(b) => {
                    (r.dst.prefix_len(), std::cmp::Reverse(r.metric))
                        > (b.dst.prefix_len(), std::cmp::Reverse(b.metric))
                }
            };
            if better {
                best = Some(r);
            }
        }
        best
    }

    /// The preferred source, else the address of the outgoing link on the same
    /// subnet as the next hop, else its first address (`inet_select_addr`).
    fn select_source(&self, route: &Route, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        if route.src.is_some() {
            return route.src;
        }
        let hop = route.via.unwrap_or(dst);
        let addrs = &self.links.iter().find(|l| l.name == route.dev)?.addresses;
        addrs
            .iter()
            .find(|a| a.contains(&hop))
            .or_else(|| addrs.first())
            .map(|a| a.addr())
    }
}

/// `main`, `local`, `default` or a number, as Talos and iproute2 accept them.
pub fn parse_table(s: &str) -> Option<u32> {
    match s {
        "main" => Some(TABLE_MAIN),
        "local" => Some(TABLE_LOCAL),
        "default" => Some(TABLE_DEFAULT),
        n => n.parse().ok().filter(|t| (1..=252).contains(t)),
    }
}

/// The name `ip` prints for a table.
pub fn table_name(t: u32) -> String {
    match t {
        TABLE_MAIN => "main".into(),
        TABLE_LOCAL => "local".into(),
        TABLE_DEFAULT => "default".into(),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }
    fn route(dst: &str, via: Option<&str>, dev: &str, metric: u32) -> Route {
        Route {
            dst: net(dst),
            via: via.map(ip),
            dev: dev.into(),
            src: None,
            metric,
            kernel: false,
        }
    }
    fn q(dst: &str, src: Option<&str>, iif: Option<&str>) -> Query {
        Query {
            dst: ip(dst),
            src: src.map(ip),
            iif: iif.map(str::to_owned),
        }
    }

    fn node() -> Fib {
        let mut f = Fib::new();
        f.add_link("mgmt", &[net("10.8.16.20/24")]);
        f.add_link("work", &[net("10.8.28.20/22")]);
        f.add_route(
            TABLE_MAIN,
            route("0.0.0.0/0", Some("10.8.16.1"), "mgmt", 1024),
        );
        f.add_route(
            TABLE_MAIN,
            route("0.0.0.0/0", Some("10.8.28.1"), "work", 512),
        );
        f.add_route(100, route("0.0.0.0/0", Some("10.8.16.1"), "mgmt", 1024));
        f.add_rule(Rule {
            priority: 1000,
            from: Some(net("10.8.16.20/32")),
            to: None,
            iif: None,
            table: 100,
        });
        f
    }

    #[test]
    fn lowest_metric_default_wins_and_source_is_selected() {
        let d = node().lookup(&q("1.1.1.1", None, None)).unwrap();
        assert_eq!(
            (d.table, d.dev.as_str(), d.via, d.src),
            (
                TABLE_MAIN,
                "work",
                Some(ip("10.8.28.1")),
                Some(ip("10.8.28.20"))
            )
        );
    }

    #[test]
    fn source_rule_selects_its_table_and_connected_routes_beat_defaults() {
        let f = node();
        let d = f.lookup(&q("10.0.1.5", Some("10.8.16.20"), None)).unwrap();
        assert_eq!((d.table, d.dev.as_str()), (100, "mgmt"));
        // Table 100's default answers even for the on-link subnet: the generator
        // must put the subnet into the table too.
        let d = f
            .lookup(&q("10.8.16.10", Some("10.8.16.20"), None))
            .unwrap();
        assert_eq!((d.table, d.via), (100, Some(ip("10.8.16.1"))));
        // A table without a matching route falls through to the next rule.
        let mut g = node();
        g.add_route(7, route("10.0.0.0/8", Some("10.8.16.1"), "mgmt", 0));
        g.add_rule(Rule {
            priority: 5,
            from: None,
            to: None,
            iif: None,
            table: 7,
        });
        assert_eq!(
            g.lookup(&q("1.1.1.1", None, None)).unwrap().table,
            TABLE_MAIN
        );
        assert_eq!(g.lookup(&q("10.0.1.5", None, None)).unwrap().table, 7);
        let d = f
            .lookup(&q("10.8.16.20", Some("10.0.1.5"), Some("mgmt")))
            .unwrap();
        assert!(d.local);
    }

    #[test]
    fn iif_rules_match_forwarded_packets_and_lo_matches_local_ones() {
        let mut f = node();
        f.add_route(7, route("0.0.0.0/0", Some("10.8.16.1"), "mgmt", 0));
        f.add_rule(Rule {
            priority: 10,
            from: None,
            to: None,
            iif: Some("lxc".into()),
            table: 7,
        });
        assert_eq!(
            f.lookup(&q("1.1.1.1", Some("10.8.32.5"), Some("lxc")))
                .unwrap()
                .table,
            7
        );
        assert_eq!(
            f.lookup(&q("1.1.1.1", None, None)).unwrap().table,
            TABLE_MAIN
        );
        let mut empty = Fib::new();
        empty.add_link("x", &[net("192.0.2.1/24")]);
        assert_eq!(empty.lookup(&q("1.1.1.1", None, None)), None);
    }

    #[test]
    fn tables_parse_like_talos() {
        assert_eq!(parse_table("main"), Some(TABLE_MAIN));
        assert_eq!(parse_table("100"), Some(100));
        assert_eq!(parse_table("300"), None);
        assert_eq!(table_name(100), "100");
    }
}

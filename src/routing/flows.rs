//! The flows the seed cares about, traced hop by hop through the nodes' kernels
//! (the `Fib` model), the gateway (connected VLANs, the pod-CIDR static routes
//! talos-pve asks for, then the internet) and plain hosts (on-link, else their
//! VLAN's gateway), and judged: symmetric or not, crossing the gateway or not.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use super::fib::{Decision, Query, table_name};
use super::node::{CILIUM_HOST, NodeNet, POD_IIF};
use crate::profile::vlan_label;

/// An L2 segment (a profile network).
#[derive(Debug, Clone)]
pub struct Segment {
    pub name: String,
    pub vlan: Option<u16>,
    pub subnet: Ipv4Net,
    /// The gateway's address here, when the gateway routes this VLAN.
    pub gateway: Option<Ipv4Addr>,
}

/// Who holds a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Actor {
    Node(usize),
    Gateway,
    Host(Ipv4Addr),
    Internet,
}

/// One hop: `from` sends on `segment` to `to`; `table` is the node's routing table
/// when it is not `main`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hop {
    pub from: String,
    pub segment: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

/// What a flow should do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// Both directions cross the gateway (different VLANs or zones).
    Gateway,
    /// Neither does (one segment, or inside the cluster).
    Direct,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowKind {
    AdminApi,
    PodInternet,
    PodManagement,
    LbReply,
    NodeNode,
}

impl FlowKind {
    pub fn title(self) -> &'static str {
        match self {
            FlowKind::AdminApi => "clients → Talos/Kubernetes API",
            FlowKind::PodInternet => "pod → internet",
            FlowKind::PodManagement => "pod → management hosts and node APIs",
            FlowKind::LbReply => "LoadBalancer replies",
            FlowKind::NodeNode => "node ↔ node",
        }
    }
}

/// A traced flow and its verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowPath {
    pub node: String,
    pub kind: FlowKind,
    pub label: String,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub request: Vec<Hop>,
    pub reply: Vec<Hop>,
    pub expect: Expect,
    /// Why the flow does not complete (no route, nobody owns the next hop).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreachable: Option<String>,
    pub symmetric: bool,
    pub request_via_gateway: bool,
    pub reply_via_gateway: bool,
}

impl FlowPath {
    /// Should cross the gateway both ways but one direction does not.
    pub fn bypasses_gateway(&self) -> bool {
        self.unreachable.is_none()
            && self.expect == Expect::Gateway
            && !(self.request_via_gateway && self.reply_via_gateway)
    }

    /// Should stay direct but one direction detours through the gateway.
    pub fn detours(&self) -> bool {
        self.unreachable.is_none()
            && self.expect == Expect::Direct
            && (self.request_via_gateway || self.reply_via_gateway)
    }

    pub fn asymmetric(&self) -> bool {
        self.unreachable.is_none() && !self.symmetric
    }

    pub fn verdict(&self) -> String {
        if let Some(u) = &self.unreachable {
            return format!("UNREACHABLE: {u}");
        }
        let mut v = Vec::new();
        if self.asymmetric() {
            v.push("ASYMMETRIC");
        }
        if self.bypasses_gateway() {
            v.push("BYPASSES THE GATEWAY");
        }
        if self.detours() {
            v.push("DETOURS THROUGH THE GATEWAY");
        }
        match (v.is_empty(), self.request_via_gateway) {
            _ if v.is_empty() && self.request.is_empty() && self.reply.is_empty() => {
                "local, never leaves the node".into()
            }
            (true, true) => "symmetric, via the gateway both ways".into(),
            (true, false) => "symmetric, on-link".into(),
            (false, _) => v.join(", "),
        }
    }
}

/// A kernel decision the rehearsal relied on (the namespace test replays these).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeDecision {
    pub node: String,
    pub query: Query,
    pub decision: Option<Decision>,
}

/// Where a packet was delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Delivered {
    /// To a pod on this node (also after undoing masquerade).
    Pod(usize),
    /// To the node itself.
    Node(usize),
    /// To a LoadBalancer service on this node.
    Lb(usize),
    Host(Ipv4Addr),
    Internet,
}

/// Where a packet is and what the next lookup sees.
struct Leg {
    at: Actor,
    iif: Option<String>,
    src: Ipv4Addr,
}

struct Trace {
    hops: Vec<Hop>,
    delivered: Delivered,
    /// Source after masquerading (the reply's destination).
    src: Ipv4Addr,
}

/// Everything the tracer needs.
pub struct World<'a> {
    pub nodes: &'a [NodeNet],
    pub segments: &'a [Segment],
    /// The gateway's static routes (pod CIDR via node workload address).
    pub gateway_routes: &'a [(Ipv4Net, Ipv4Addr)],
    pub masquerade: bool,
    /// Cilium's `ipv4NativeRoutingCIDR`: destinations inside are never masqueraded.
    pub native_cidr: Ipv4Net,
    pub lb: Option<Ipv4Addr>,
    /// The workload segment's name: it belongs to the cluster with the pods.
    pub workload: &'a str,
}

/// Where a flow starts.
pub enum Start {
    /// A pod on node `i`.
    Pod(usize),
    /// Node `i` itself, from this address.
    Node(usize, Ipv4Addr),
    /// Node `i` itself, from the address its kernel selects for the destination.
    NodeAuto(usize),
    /// A host on a segment (or the internet when in none).
    Host(Ipv4Addr),
}

const MAX_HOPS: usize = 8;

impl World<'_> {
    pub fn pod_ip(&self, i: usize) -> Ipv4Addr {
        let n = self.nodes[i].pod_cidr;
        Ipv4Addr::from(u32::from(n.network()) + 10)
    }

    fn label(&self, a: &Actor) -> String {
        match a {
            Actor::Node(i) => self.nodes[*i].name.clone(),
            Actor::Gateway => "gateway".into(),
            Actor::Host(ip) => ip.to_string(),
            Actor::Internet => "internet".into(),
        }
    }

    fn segment_of(&self, ip: Ipv4Addr) -> Option<&Segment> {
        self.segments.iter().find(|s| s.subnet.contains(&ip))
    }

    /// The segment a node's link is on, by its addresses.
    fn link_segment(&self, node: usize, dev: &str) -> Option<&Segment> {
        let link = self.nodes[node]
            .fib
            .links()
            .iter()
            .find(|l| l.name == dev)?;
        link.addresses
            .iter()
            .find_map(|a| self.segment_of(a.addr()))
    }

    /// Who answers ARP for `ip` on `seg`, and the link it arrives on.
    fn owner(
        &self,
        seg: &Segment,
        ip: Ipv4Addr,
        lb_node: usize,
    ) -> Option<(Actor, Option<String>)> {
        if seg.gateway == Some(ip) {
            return Some((Actor::Gateway, None));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            let on_seg = n
                .fib
                .links()
                .iter()
                .find(|l| l.addresses.iter().any(|a| seg.subnet.contains(&a.addr())));
            let Some(link) = on_seg else { continue };
            let owns = link.addresses.iter().any(|a| a.addr() == ip)
                || (Some(ip) == self.lb && i == lb_node);
            if owns {
                return Some((Actor::Node(i), Some(link.name.clone())));
            }
        }
        if self.nodes.iter().any(|n| n.fib.is_local(ip)) || self.in_pods(ip) {
            return None;
        }
        seg.subnet.contains(&ip).then_some((Actor::Host(ip), None))
    }

    fn in_pods(&self, ip: Ipv4Addr) -> bool {
        self.nodes.iter().any(|n| n.pod_cidr.contains(&ip))
    }

    /// Follow one direction. `log` collects every node decision.
    fn trace(
        &self,
        leg: Leg,
        dst: Ipv4Addr,
        lb_node: usize,
        snat: Option<(usize, Ipv4Addr)>,
        log: &mut Vec<NodeDecision>,
    ) -> Result<Trace, String> {
        let Leg {
            mut at,
            mut iif,
            mut src,
        } = leg;
        let mut hops = Vec::new();
        let done = |hops, delivered, src| {
            Ok(Trace {
                hops,
                delivered,
                src,
            })
        };
        for _ in 0..MAX_HOPS {
            let (next_hop, seg_name, table) = match &at {
                Actor::Node(i) => {
                    let i = *i;
                    let n = &self.nodes[i];
                    if Some(dst) == self.lb && i == lb_node && iif.as_deref() != Some(POD_IIF) {
                        return done(hops, Delivered::Lb(i), src);
                    }
                    let query = Query {
                        dst,
                        src: Some(src),
                        iif: iif.clone(),
                    };
                    let d = n.fib.lookup(&query);
                    log.push(NodeDecision {
                        node: n.name.clone(),
                        query,
                        decision: d.clone(),
                    });
                    let d = d.ok_or_else(|| {
                        if iif.is_some() && n.fib.is_local(src) {
                            format!("{} drops a packet from its own address {src} that comes back to it", n.name)
                        } else {
                            format!("{} has no route to {dst}", n.name)
                        }
                    })?;
                    if d.local {
                        return match snat {
                            Some((s, addr)) if s == i && addr == dst => {
                                done(hops, Delivered::Pod(i), src)
                            }
                            _ => done(hops, Delivered::Node(i), src),
                        };
                    }
                    if d.dev == CILIUM_HOST {
                        return done(hops, Delivered::Pod(i), src);
                    }
                    let seg = self.link_segment(i, &d.dev).ok_or_else(|| {
                        format!("{} sends on {}, which is on no network", n.name, d.dev)
                    })?;
                    let masq = self.masquerade
                        && iif.as_deref() == Some(POD_IIF)
                        && n.pod_cidr.contains(&src)
                        && !self.native_cidr.contains(&dst);
                    if masq {
                        let link = n.fib.links().iter().find(|l| l.name == d.dev);
                        if let Some(a) = link.and_then(|l| l.addresses.first()) {
                            src = a.addr();
                        }
                    }
                    let table = (d.table != super::fib::TABLE_MAIN).then(|| table_name(d.table));
                    (d.via.unwrap_or(dst), seg.clone(), table)
                }
                Actor::Gateway => {
                    let route = self
                        .gateway_routes
                        .iter()
                        .filter(|(net, _)| net.contains(&dst))
                        .max_by_key(|(net, _)| net.prefix_len());
                    let routed = |ip| {
                        self.segments
                            .iter()
                            .find(|s| s.gateway.is_some() && s.subnet.contains(&ip))
                    };
                    match route {
                        Some((_, via)) => {
                            let seg = routed(*via).ok_or_else(|| {
                                format!("gateway route via {via} on no routed network")
                            })?;
                            (*via, seg.clone(), None)
                        }
                        None => match routed(dst) {
                            Some(seg) => (dst, seg.clone(), None),
                            None if self.in_pods(dst) => {
                                return Err(format!(
                                    "the gateway has no route to the pod address {dst}"
                                ));
                            }
                            None if self.segment_of(dst).is_some() => {
                                return Err(format!("the gateway does not route to {dst}"));
                            }
                            None => {
                                hops.push(Hop {
                                    from: "gateway".into(),
                                    segment: "internet".into(),
                                    to: "internet".into(),
                                    table: None,
                                });
                                return done(hops, Delivered::Internet, src);
                            }
                        },
                    }
                }
                Actor::Host(ip) => {
                    if *ip == dst {
                        return done(hops, Delivered::Host(dst), src);
                    }
                    let seg = self
                        .segment_of(*ip)
                        .ok_or_else(|| format!("{ip} is on no network"))?;
                    match seg.gateway {
                        _ if seg.subnet.contains(&dst) => (dst, seg.clone(), None),
                        Some(gw) => (gw, seg.clone(), None),
                        None => return Err(format!("{ip} has no gateway on {}", seg.name)),
                    }
                }
                Actor::Internet => {
                    if self.segment_of(dst).is_none() && !self.in_pods(dst) && Some(dst) != self.lb
                    {
                        return done(hops, Delivered::Internet, src);
                    }
                    hops.push(Hop {
                        from: "internet".into(),
                        segment: "internet".into(),
                        to: "gateway".into(),
                        table: None,
                    });
                    at = Actor::Gateway;
                    iif = None;
                    continue;
                }
            };
            let (to, to_iif) = self
                .owner(&seg_name, next_hop, lb_node)
                .ok_or_else(|| format!("nobody on {} answers for {next_hop}", seg_name.name))?;
            hops.push(Hop {
                from: self.label(&at),
                segment: format!("{} ({})", seg_name.name, vlan_label(seg_name.vlan)),
                to: self.label(&to),
                table,
            });
            at = to;
            iif = to_iif;
        }
        Err(format!("more than {MAX_HOPS} hops (a routing loop)"))
    }

    fn start(&self, s: &Start, dst: Ipv4Addr, log: &mut Vec<NodeDecision>) -> Leg {
        let (at, iif, src) = match s {
            Start::Pod(i) => (Actor::Node(*i), Some(POD_IIF.into()), self.pod_ip(*i)),
            Start::Node(i, a) => (Actor::Node(*i), None, *a),
            Start::NodeAuto(i) => {
                let n = &self.nodes[*i];
                let query = Query {
                    dst,
                    src: None,
                    iif: None,
                };
                let decision = n.fib.lookup(&query);
                let src = decision.as_ref().and_then(|d| d.src);
                log.push(NodeDecision {
                    node: n.name.clone(),
                    query,
                    decision,
                });
                (Actor::Node(*i), None, src.unwrap_or(Ipv4Addr::UNSPECIFIED))
            }
            Start::Host(ip) if self.segment_of(*ip).is_some() => (Actor::Host(*ip), None, *ip),
            Start::Host(ip) => (Actor::Internet, None, *ip),
        };
        Leg { at, iif, src }
    }

    /// Trace the request and its reply. `lb_node` announces the LoadBalancer address.
    pub fn flow(
        &self,
        node: usize,
        kind: FlowKind,
        label: String,
        from: Start,
        dst: Ipv4Addr,
        log: &mut Vec<NodeDecision>,
    ) -> FlowPath {
        let leg = self.start(&from, dst, log);
        let src = leg.src;
        let expect = self.expect(src, dst);
        let mut path = FlowPath {
            node: self.nodes[node].name.clone(),
            kind,
            label,
            src,
            dst,
            request: Vec::new(),
            reply: Vec::new(),
            expect,
            unreachable: None,
            symmetric: false,
            request_via_gateway: false,
            reply_via_gateway: false,
        };
        let snat_node = match &from {
            Start::Pod(i) => Some(*i),
            _ => None,
        };
        let req = match self.trace(leg, dst, node, None, log) {
            Ok(t) => t,
            Err(e) => {
                path.unreachable = Some(e);
                return path;
            }
        };
        let snat = snat_node.filter(|_| req.src != src).map(|i| (i, req.src));
        let (at, iif) = match req.delivered {
            Delivered::Pod(i) | Delivered::Lb(i) => (Actor::Node(i), Some(POD_IIF.to_owned())),
            Delivered::Node(i) => (Actor::Node(i), None),
            Delivered::Host(ip) => (Actor::Host(ip), None),
            Delivered::Internet => (Actor::Internet, None),
        };
        path.request = req.hops;
        // Delivered on the node it started from: the reply must stay there too.
        if path.request.is_empty() {
            path.expect = Expect::Direct;
        }
        let back = Leg { at, iif, src: dst };
        match self.trace(back, req.src, node, snat, log) {
            Ok(t) => path.reply = t.hops,
            Err(e) => {
                path.unreachable = Some(format!("reply: {e}"));
                return path;
            }
        }
        let via = |h: &[Hop]| h.iter().any(|h| h.to == "gateway" || h.from == "gateway");
        path.request_via_gateway = via(&path.request);
        path.reply_via_gateway = via(&path.reply);
        let mirrored: Vec<(String, String, String)> = path
            .request
            .iter()
            .rev()
            .map(|h| (h.to.clone(), h.segment.clone(), h.from.clone()))
            .collect();
        let reply: Vec<(String, String, String)> = path
            .reply
            .iter()
            .map(|h| (h.from.clone(), h.segment.clone(), h.to.clone()))
            .collect();
        path.symmetric = mirrored == reply;
        path
    }

    /// Flows inside one segment, or inside the cluster (pods and the workload
    /// segment), stay direct; everything else crosses the gateway.
    fn expect(&self, a: Ipv4Addr, b: Ipv4Addr) -> Expect {
        #[derive(PartialEq)]
        enum Zone<'s> {
            Cluster,
            Segment(&'s str),
            Outside,
        }
        let zone = |ip: Ipv4Addr| {
            if self.in_pods(ip) {
                return Zone::Cluster;
            }
            match self.segment_of(ip) {
                Some(s) if s.name == self.workload => Zone::Cluster,
                Some(s) => Zone::Segment(&s.name),
                None => Zone::Outside,
            }
        };
        if zone(a) == zone(b) && zone(a) != Zone::Outside {
            Expect::Direct
        } else {
            Expect::Gateway
        }
    }
}

//! One node's machine config: the `v1alpha1` document (talosctl's defaults for the
//! contract, plus the decided network plan: no CNI, no kube-proxy, pod CIDRs assigned by
//! talos-pve, kubelet on the workload subnet, etcd on management) and the multi-document
//! network config (links selected by MAC, static addresses, one default route, policy
//! routing for the other link on 1.13, hostname, resolvers, time servers).

use std::net::Ipv4Addr;

use super::Contract;
use super::yaml::{Yaml, multi_document};
use crate::pki::SecretsBundle;
use crate::plan::{NicPlan, NodePlan, Plan, endpoint_host};
use crate::profile::{LinkRole, Profile, Role};

/// Routing table for replies from the non-default link (1.13 policy routing).
const REPLY_TABLE: &str = "100";
/// Priority of the rule that selects it: before `main` (32766).
const REPLY_RULE_PRIORITY: &str = "1000";
/// Priority of the rule that keeps replies to the node's own pods local: before the
/// reply rule, whose table would send them out to the gateway and back, where the
/// node drops its own address as a martian source.
const OWN_PODS_RULE_PRIORITY: &str = "999";
/// Routing table that sends the cluster's traffic for the management subnet through
/// the workload gateway (1.13, default route on workload).
const VIA_GATEWAY_TABLE: &str = "101";
/// Priorities of its rules (pod block, workload subnet): before the reply rule.
const VIA_GATEWAY_RULE_PRIORITIES: [&str; 2] = ["900", "901"];
const KUBEPRISM_PORT: u16 = 7445;

/// The whole machine config of `node` as a multi-document YAML stream.
pub fn render_node(
    profile: &Profile,
    plan: &Plan,
    node: &NodePlan,
    secrets: &SecretsBundle,
    contract: Contract,
) -> String {
    let mut docs = vec![v1alpha1(profile, plan, node, secrets)];
    docs.extend(network_documents(profile, node, contract));
    multi_document(&docs)
}

/// Only the network documents of `node`'s machine config (no key material): what the
/// routing rehearsal reads.
pub fn network_config(profile: &Profile, node: &NodePlan, contract: Contract) -> String {
    multi_document(&network_documents(profile, node, contract))
}

/// certSANs for the API server and apid: the endpoint host, every control plane's
/// addresses and DNS names, local-zone records pointing at control planes, and the
/// profile's extra SANs — in that order, without duplicates.
pub fn cert_sans(profile: &Profile, plan: &Plan) -> Vec<String> {
    let domain = profile.dns.domain.as_deref();
    let mut sans: Vec<String> = Vec::new();
    let mut add = |s: String| {
        if !sans.contains(&s) {
            sans.push(s);
        }
    };
    if let Some(h) = endpoint_host(&plan.endpoint) {
        add(h.to_owned());
    }
    let cp_addrs: Vec<Ipv4Addr> = plan
        .control_planes()
        .flat_map(|n| n.nics().map(|nic| nic.address.addr()))
        .collect();
    for n in plan.control_planes() {
        for nic in n.nics() {
            add(nic.address.addr().to_string());
        }
        if let Some(d) = domain {
            add(format!("{}.{d}", n.name));
        }
    }
    if let Some(d) = domain {
        for r in profile
            .dns
            .records
            .iter()
            .filter(|r| cp_addrs.contains(&r.address))
        {
            add(format!("{}.{d}", r.name));
        }
    }
    for s in &profile.kubernetes.cert_sans {
        add(s.clone());
    }
    sans
}

fn node_sans(profile: &Profile, node: &NodePlan) -> Vec<String> {
    let mut v: Vec<String> = node.nics().map(|n| n.address.addr().to_string()).collect();
    if let Some(d) = &profile.dns.domain {
        v.push(format!("{}.{d}", node.name));
    }
    v
}

fn strs<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Yaml {
    Yaml::seq(items.into_iter().map(|s| Yaml::from(s.as_ref())))
}

fn v1alpha1(profile: &Profile, plan: &Plan, node: &NodePlan, s: &SecretsBundle) -> Yaml {
    let cp = node.role == Role::Controlplane;
    let k8s = &plan.kubernetes_version;
    let work_subnet = node.nic(LinkRole::Workload).address.trunc().to_string();
    let mgmt_subnet = node.management.address.trunc().to_string();
    let sans = if cp {
        cert_sans(profile, plan)
    } else {
        node_sans(profile, node)
    };

    let machine = Yaml::map()
        .with("type", node.role.as_str())
        .with("token", s.trustdinfo.token.expose())
        .with("ca", SecretsBundle::ca_yaml(&s.certs.os, cp))
        .with("certSANs", strs(&sans))
        .with(
            "kubelet",
            Yaml::map()
                .with("image", format!("ghcr.io/siderolabs/kubelet:v{k8s}"))
                .with("defaultRuntimeSeccompProfileEnabled", true)
                .with(
                    "nodeIP",
                    Yaml::map().with("validSubnets", strs([&work_subnet])),
                )
                .with("disableManifestsDirectory", true),
        )
        .with(
            "install",
            Yaml::map()
                .with("disk", &profile.talos.install_disk)
                .with("image", &plan.installer_image)
                .with("wipe", false)
                .with("grubUseUKICmdline", true),
        )
        .with(
            "features",
            Yaml::map()
                .with("diskQuotaSupport", true)
                .with(
                    "kubePrism",
                    Yaml::map()
                        .with("enabled", true)
                        .with("port", KUBEPRISM_PORT),
                )
                .with(
                    "hostDNS",
                    Yaml::map()
                        .with("enabled", true)
                        .with("forwardKubeDNSToHost", true),
                ),
        );

    let network = Yaml::map()
        .with("cni", Yaml::map().with("name", "none"))
        .with("dnsDomain", &profile.kubernetes.dns_domain)
        .with("podSubnets", strs([plan.pod_subnet.to_string()]))
        .with("serviceSubnets", strs([plan.service_subnet.to_string()]));

    let mut cluster = Yaml::map()
        .with("id", s.cluster.id.expose())
        .with("secret", s.cluster.secret.expose())
        .with("controlPlane", Yaml::map().with("endpoint", &plan.endpoint))
        .with("clusterName", &plan.cluster)
        .with("network", network)
        .with("token", s.secrets.bootstraptoken.expose());
    if cp {
        cluster = cluster
            .with_opt(
                "aescbcEncryptionSecret",
                s.secrets
                    .aescbcencryptionsecret
                    .as_ref()
                    .map(|v| v.expose()),
            )
            .with_opt(
                "secretboxEncryptionSecret",
                s.secrets
                    .secretboxencryptionsecret
                    .as_ref()
                    .map(|v| v.expose()),
            )
            .with("ca", SecretsBundle::ca_yaml(&s.certs.k8s, true))
            .with(
                "aggregatorCA",
                SecretsBundle::ca_yaml(&s.certs.k8saggregator, true),
            )
            .with(
                "serviceAccount",
                Yaml::map().with("key", s.certs.k8sserviceaccount.key.expose()),
            )
            .with(
                "apiServer",
                Yaml::map()
                    .with("image", format!("registry.k8s.io/kube-apiserver:v{k8s}"))
                    .with("certSANs", strs(&sans))
                    .with("admissionControl", pod_security())
                    .with(
                        "auditPolicy",
                        Yaml::map()
                            .with("apiVersion", "audit.k8s.io/v1")
                            .with("kind", "Policy")
                            .with("rules", Yaml::seq([Yaml::map().with("level", "Metadata")])),
                    ),
            )
            .with(
                "controllerManager",
                Yaml::map()
                    .with(
                        "image",
                        format!("registry.k8s.io/kube-controller-manager:v{k8s}"),
                    )
                    // talos-pve assigns each Node's pod CIDR itself (routed pods).
                    .with(
                        "extraArgs",
                        Yaml::map().with("allocate-node-cidrs", "false"),
                    ),
            )
            .with(
                "proxy",
                Yaml::map()
                    .with("disabled", true)
                    .with("image", format!("registry.k8s.io/kube-proxy:v{k8s}")),
            )
            .with(
                "scheduler",
                Yaml::map().with("image", format!("registry.k8s.io/kube-scheduler:v{k8s}")),
            )
            .with("discovery", discovery())
            .with(
                "etcd",
                Yaml::map()
                    .with("ca", SecretsBundle::ca_yaml(&s.certs.etcd, true))
                    .with("advertisedSubnets", strs([&mgmt_subnet]))
                    // advertisedSubnets alone also limits where etcd listens, but
                    // a joiner without the discovery service finds members at the
                    // API server endpoints: their kubelet node IPs (workload).
                    .with("listenSubnets", strs([&mgmt_subnet, &work_subnet])),
            );
        let allow = profile
            .kubernetes
            .allow_scheduling_on_control_planes
            .unwrap_or_else(|| profile.all_control_planes());
        if allow {
            cluster.push("allowSchedulingOnControlPlanes", true);
        }
    } else {
        cluster = cluster
            .with("ca", SecretsBundle::ca_yaml(&s.certs.k8s, false))
            .with("discovery", discovery());
    }

    Yaml::map()
        .with("version", "v1alpha1")
        .with("debug", false)
        .with("machine", machine)
        .with("cluster", cluster)
}

fn discovery() -> Yaml {
    Yaml::map().with("enabled", true).with(
        "registries",
        Yaml::map()
            .with("kubernetes", Yaml::map().with("disabled", true))
            .with("service", Yaml::map()),
    )
}

fn pod_security() -> Yaml {
    let defaults = Yaml::map()
        .with("audit", "restricted")
        .with("audit-version", "latest")
        .with("enforce", "baseline")
        .with("enforce-version", "latest")
        .with("warn", "restricted")
        .with("warn-version", "latest");
    let exemptions = Yaml::map()
        .with("namespaces", strs(["kube-system"]))
        .with("runtimeClasses", Yaml::Seq(vec![]))
        .with("usernames", Yaml::Seq(vec![]));
    Yaml::seq([Yaml::map().with("name", "PodSecurity").with(
        "configuration",
        Yaml::map()
            .with(
                "apiVersion",
                "pod-security.admission.config.k8s.io/v1alpha1",
            )
            .with("defaults", defaults)
            .with("exemptions", exemptions)
            .with("kind", "PodSecurityConfiguration"),
    )])
}

fn doc(kind: &str) -> Yaml {
    Yaml::map()
        .with("apiVersion", "v1alpha1")
        .with("kind", kind)
}

fn network_documents(profile: &Profile, node: &NodePlan, contract: Contract) -> Vec<Yaml> {
    use crate::profile::NetworkRole;
    let mut docs = Vec::new();
    let metric = profile.routing.default_route_metric;
    let default_link = node.nic(profile.routing.default_route);
    let (other_role, other_network) = match profile.routing.default_route {
        LinkRole::Management => (LinkRole::Workload, NetworkRole::Workload),
        LinkRole::Workload => (LinkRole::Management, NetworkRole::Management),
    };
    // Replies from the other link's address leave through its own gateway (1.13 only).
    // A one-NIC node has no other link: its one default route answers everybody.
    let reply_gateway = profile
        .network(other_network)
        .and_then(|n| n.gateway)
        .filter(|_| contract.has_routing_rules() && node.workload.is_some());
    // Pods, LoadBalancer addresses and the workload address reach the management
    // subnet through the workload gateway, so both directions cross it and its
    // firewall sees the whole connection (network-review.md amendment 5).
    let cluster_to_management = (profile.routing.default_route == LinkRole::Workload)
        .then_some(())
        .and(reply_gateway)
        .and(node.workload.as_ref().and_then(|w| w.gateway));

    for nic in node.nics() {
        docs.push(doc("LinkAliasConfig").with("name", &nic.alias).with(
            "selector",
            Yaml::map().with(
                "match",
                format!(
                    "mac(link.permanent_addr) == \"{}\"",
                    nic.mac.to_ascii_lowercase()
                ),
            ),
        ));
        let mut routes = Vec::new();
        if std::ptr::eq(nic, default_link) {
            if let Some(gw) = nic.gateway {
                routes.push(
                    Yaml::map()
                        .with("gateway", gw.to_string())
                        .with("metric", metric),
                );
            }
            if let Some(gw) = cluster_to_management {
                routes.push(
                    Yaml::map()
                        .with("destination", node.management.address.trunc().to_string())
                        .with("gateway", gw.to_string())
                        .with("table", VIA_GATEWAY_TABLE),
                );
            }
        } else if let Some(gw) = reply_gateway {
            routes.extend(reply_table_routes(nic, gw));
        }
        let mut link = doc("LinkConfig")
            .with("name", &nic.alias)
            .with("mtu", nic.mtu)
            .with(
                "addresses",
                Yaml::seq([Yaml::map().with("address", nic.address.to_string())]),
            );
        if !routes.is_empty() {
            link.push("routes", Yaml::Seq(routes));
        }
        docs.push(link);
    }
    if cluster_to_management.is_some() {
        let sources = [
            profile.kubernetes.pod_subnet,
            node.nic(LinkRole::Workload).address.trunc(),
        ];
        for (priority, src) in VIA_GATEWAY_RULE_PRIORITIES.iter().zip(sources) {
            docs.push(
                doc("RoutingRuleConfig")
                    .with("name", *priority)
                    .with("src", src.to_string())
                    .with("dst", node.management.address.trunc().to_string())
                    .with("table", VIA_GATEWAY_TABLE),
            );
        }
    }
    if reply_gateway.is_some() {
        let other = node.nic(other_role);
        docs.push(
            doc("RoutingRuleConfig")
                .with("name", OWN_PODS_RULE_PRIORITY)
                .with("src", format!("{}/32", other.address.addr()))
                .with("dst", node.pod_cidr.to_string())
                .with("table", "main"),
        );
        docs.push(
            doc("RoutingRuleConfig")
                .with("name", REPLY_RULE_PRIORITY)
                .with("src", format!("{}/32", other.address.addr()))
                .with("table", REPLY_TABLE),
        );
    }
    docs.push(doc("HostnameConfig").with("hostname", &node.name));
    let dns = &profile.dns;
    if !dns.servers.is_empty() || dns.domain.is_some() {
        let mut r = doc("ResolverConfig");
        if !dns.servers.is_empty() {
            r.push(
                "nameservers",
                Yaml::seq(
                    dns.servers
                        .iter()
                        .map(|a| Yaml::map().with("address", a.to_string())),
                ),
            );
        }
        if let Some(d) = &dns.domain {
            r.push("searchDomains", Yaml::map().with("domains", strs([d])));
        }
        docs.push(r);
    }
    if !profile.time_servers.is_empty() {
        docs.push(doc("TimeSyncConfig").with(
            "ntp",
            Yaml::map().with("servers", strs(&profile.time_servers)),
        ));
    }
    docs
}

/// The reply table: the link's own subnet on-link, and a default route via its gateway.
fn reply_table_routes(nic: &NicPlan, gateway: Ipv4Addr) -> [Yaml; 2] {
    [
        Yaml::map()
            .with("destination", nic.address.trunc().to_string())
            .with("table", REPLY_TABLE),
        Yaml::map()
            .with("gateway", gateway.to_string())
            .with("table", REPLY_TABLE),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::homelab;

    #[test]
    fn cert_sans_cover_endpoint_control_planes_and_records_once() {
        let mut p = homelab();
        p.kubernetes.cert_sans = vec!["10.8.16.20".into(), "api.example.org".into()];
        let plan = Plan::build(&p).unwrap();
        let sans = cert_sans(&p, &plan);
        assert_eq!(sans[0], "10.8.16.20", "endpoint host first");
        assert_eq!(sans.iter().filter(|s| *s == "10.8.16.20").count(), 1);
        assert!(sans.contains(&"talos-k8s-02.lab.local".to_string()));
        assert!(sans.contains(&"k8s-api.lab.local".to_string()));
        assert!(!sans.contains(&"traefik.lab.local".to_string()));
        assert_eq!(sans.last().unwrap(), "api.example.org");
        // Workers are not API servers: their addresses stay out.
        p.nodes[2].role = Role::Worker;
        let plan = Plan::build(&p).unwrap();
        assert!(!cert_sans(&p, &plan).contains(&"10.8.28.22".to_string()));
    }
}

//! What a lab Talos node understands of a machine config. Parsed generically (a
//! multi-document YAML stream into JSON values), not with the generator's types, so
//! the lab checks what Talos would check rather than what talos-pve meant.

use std::net::Ipv4Addr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::lab::LabNic;
use crate::talos::compat;

/// The facts a node takes from its applied config.
#[derive(Clone, PartialEq)]
pub struct MachineConfig {
    pub machine_type: String,
    pub cluster_name: String,
    pub endpoint: String,
    pub hostname: Option<String>,
    /// `machine.ca` (the OS CA): PEM.
    pub os_ca_crt: String,
    /// Empty on workers.
    pub os_ca_key: String,
    pub k8s_ca_crt: String,
    pub k8s_ca_key: String,
    pub cert_sans: Vec<String>,
    /// `machine.kubelet.nodeIP.validSubnets` (entries starting with `!` exclude).
    pub node_ip_subnets: Vec<String>,
    /// The Kubernetes images the node checks against its release: the kubelet's, and
    /// on control planes the apiserver's, controller-manager's and scheduler's.
    pub kubernetes_images: Vec<(&'static str, String)>,
    /// Where etcd listens: `cluster.etcd.listenSubnets`, else `advertisedSubnets`
    /// (Talos v1.13.9 `pkg/machinery/config/types/v1alpha1/v1alpha1_etcdconfig.go`
    /// `ListenSubnets`); empty means every address.
    pub etcd_listen_subnets: Vec<String>,
    /// Static addresses per link MAC (lower case): `LinkConfig.addresses` of the
    /// link a `LinkAliasConfig` selects by MAC. This is how the node gets its
    /// addresses when nothing else (a cloud-init `network-config`) gives them.
    pub link_addresses: Vec<(String, Ipv4Net)>,
}

/// Without the CA keys, like every type that holds them.
impl std::fmt::Debug for MachineConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MachineConfig")
            .field("machine_type", &self.machine_type)
            .field("cluster_name", &self.cluster_name)
            .field("endpoint", &self.endpoint)
            .field("hostname", &self.hostname)
            .field("cert_sans", &self.cert_sans)
            .field("node_ip_subnets", &self.node_ip_subnets)
            .finish_non_exhaustive()
    }
}

/// Parse and validate `text` for a VM with these NICs. The error is what the node
/// would put after "configuration validation failed: ".
pub fn parse(text: &str, nics: &[LabNic]) -> Result<MachineConfig, String> {
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(text).map_err(|e| {
        format!(
            "the config is not valid YAML: {}",
            first_line(&e.to_string())
        )
    })?;
    let legacy: Vec<&Value> = docs
        .iter()
        .filter(|d| d.get("version").and_then(Value::as_str) == Some("v1alpha1"))
        .collect();
    let v1 = match legacy.as_slice() {
        [one] => *one,
        [] => return Err("no `version: v1alpha1` document".into()),
        _ => return Err("more than one `version: v1alpha1` document".into()),
    };
    let s = |path: &[&str]| -> Option<String> {
        path.iter()
            .try_fold(v1, |v, k| v.get(k))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let req = |path: &[&str]| s(path).ok_or_else(|| format!("`{}` is required", path.join(".")));
    let machine_type = req(&["machine", "type"])?;
    if !matches!(machine_type.as_str(), "controlplane" | "worker") {
        return Err(format!(
            "machine.type `{machine_type}` is not supported (controlplane or worker)"
        ));
    }
    let endpoint = req(&["cluster", "controlPlane", "endpoint"])?;
    if !endpoint.starts_with("https://") {
        return Err(format!(
            "cluster.controlPlane.endpoint `{endpoint}` must be an https URL"
        ));
    }
    let pem = |path: &[&str], optional: bool| -> Result<String, String> {
        let b64 = s(path).unwrap_or_default();
        if b64.is_empty() && optional {
            return Ok(String::new());
        }
        let bytes = STANDARD
            .decode(b64.trim())
            .map_err(|_| format!("`{}` is not base64", path.join(".")))?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("`{}` is not PEM", path.join(".")))?;
        if !text.contains("-----BEGIN ") {
            return Err(format!("`{}` is not PEM", path.join(".")));
        }
        Ok(text)
    };
    let cp = machine_type == "controlplane";
    let cfg = MachineConfig {
        cluster_name: req(&["cluster", "clusterName"])?,
        endpoint,
        hostname: docs
            .iter()
            .filter(|d| kind(d) == Some("HostnameConfig"))
            .find_map(|d| d.get("hostname").and_then(Value::as_str).map(str::to_owned)),
        os_ca_crt: pem(&["machine", "ca", "crt"], false)?,
        os_ca_key: pem(&["machine", "ca", "key"], !cp)?,
        k8s_ca_crt: pem(&["cluster", "ca", "crt"], false)?,
        k8s_ca_key: pem(&["cluster", "ca", "key"], !cp)?,
        cert_sans: strings(v1, &["machine", "certSANs"]),
        node_ip_subnets: strings(v1, &["machine", "kubelet", "nodeIP", "validSubnets"]),
        kubernetes_images: [
            ("kubelet", &["machine", "kubelet", "image"][..], true),
            ("kube-apiserver", &["cluster", "apiServer", "image"], cp),
            (
                "kube-controller-manager",
                &["cluster", "controllerManager", "image"],
                cp,
            ),
            ("kube-scheduler", &["cluster", "scheduler", "image"], cp),
        ]
        .into_iter()
        .filter(|(_, _, checked)| *checked)
        .map(|(name, path, _)| (name, s(path).unwrap_or_default()))
        .collect(),
        etcd_listen_subnets: etcd_listen_subnets(v1),
        link_addresses: link_addresses(&docs),
        machine_type,
    };
    check_link_aliases(&docs, nics)?;
    check_routing_rules(&docs)?;
    Ok(cfg)
}

impl MachineConfig {
    /// The kubelet's Kubernetes version as `Node.status.nodeInfo.kubeletVersion` shows
    /// it (`v1.36.3`); empty when the config names no kubelet image (the release's default).
    pub fn kubelet_version(&self) -> String {
        self.kubernetes_images
            .iter()
            .find(|(name, _)| *name == "kubelet")
            .and_then(|(_, img)| compat::image_version(img))
            .map(|v| format!("v{v}"))
            .unwrap_or_default()
    }
}

/// Document kinds Talos 1.13 added: a 1.12 node does not know them (v1.12.11
/// `pkg/machinery/config/internal/registry/registry.go`: `"<kind>" "v1alpha1": not
/// registered`; the list is the difference of the two releases' config schemas).
const KINDS_SINCE_1_13: [&str; 7] = [
    "BlackholeRouteConfig",
    "EnvironmentConfig",
    "ExternalVolumeConfig",
    "KubeSpanConfig",
    "RoutingRuleConfig",
    "TCPProbeConfig",
    "VRFConfig",
];

/// `parse` on a node running `talos_version`: a 1.12 node refuses 1.13-only kinds.
pub fn parse_on(text: &str, nics: &[LabNic], talos_version: &str) -> Result<MachineConfig, String> {
    let cfg = parse(text, nics)?;
    if talos_version.trim_start_matches('v').starts_with("1.12.") {
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(text).unwrap_or_default();
        if let Some(k) = docs
            .iter()
            .filter_map(kind)
            .find(|k| KINDS_SINCE_1_13.contains(k))
        {
            return Err(format!("\"{k}\" \"v1alpha1\": not registered"));
        }
    }
    Ok(cfg)
}

/// What Talos's `RuntimeValidate` says about the Kubernetes images of a config on a
/// node running `talos_version` (siderolabs/talos v1.13.9
/// `pkg/machinery/config/types/v1alpha1/v1alpha1_validation.go`
/// `ValidateKubernetesImageTag`, `compatibility/kubernetes_version.go` `SupportedWith`):
/// the tag after the last `:v` must be a Kubernetes version the release runs.
pub fn check_kubernetes_images(cfg: &MachineConfig, talos_version: &str) -> Result<(), String> {
    use crate::formats::{kubernetes_minors, semver};
    let talos = talos_version.trim_start_matches('v');
    let range = semver(talos).and_then(|(_, minor, _)| kubernetes_minors(minor));
    // An unset image is the release's default (`KubeletConfig.Image()` and friends),
    // which it always runs.
    for (name, image) in cfg.kubernetes_images.iter().filter(|(_, i)| !i.is_empty()) {
        let tag = image.rfind(":v").map(|i| &image[i + 2..]);
        let tag = tag.map(|t| t.split('@').next().unwrap_or(t));
        let Some((major, minor, _)) = tag.and_then(semver) else {
            return Err(format!(
                "{name} image is not valid: failed to parse Kubernetes version from image reference \"{image}\""
            ));
        };
        let Some((lo, hi)) = range else {
            return Err(format!(
                "compatibility with version {talos} is not supported"
            ));
        };
        let k8s = tag.unwrap_or_default();
        if (major, minor) < (1, lo) {
            return Err(format!(
                "{name} image is not valid: version of Kubernetes {k8s} is too old to be used with Talos {talos}"
            ));
        }
        if (major, minor) > (1, hi) {
            return Err(format!(
                "{name} image is not valid: version of Kubernetes {k8s} is too new to be used with Talos {talos}"
            ));
        }
    }
    Ok(())
}

fn kind(d: &Value) -> Option<&str> {
    d.get("kind").and_then(Value::as_str)
}

fn strings(v: &Value, path: &[&str]) -> Vec<String> {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

/// Every `LinkAliasConfig` selecting by MAC must match exactly one of the VM's NICs
/// (the CEL `mac()` helper renders lower case, so the comparison is exact).
fn check_link_aliases(docs: &[Value], nics: &[LabNic]) -> Result<(), String> {
    let macs: Vec<String> = nics.iter().map(|n| n.mac.to_ascii_lowercase()).collect();
    for d in docs.iter().filter(|d| kind(d) == Some("LinkAliasConfig")) {
        let name = d.get("name").and_then(Value::as_str).unwrap_or("?");
        let expr = d
            .get("selector")
            .and_then(|s| s.get("match"))
            .and_then(Value::as_str)
            .ok_or_else(|| format!("LinkAliasConfig `{name}`: selector.match is required"))?;
        let Some(mac) = selected_mac(expr) else {
            continue;
        };
        if !macs.contains(&mac) {
            return Err(format!(
                "LinkAliasConfig `{name}` selects MAC {mac}, but this machine's links are {}",
                macs.join(", ")
            ));
        }
    }
    Ok(())
}

/// `RoutingRuleConfig` as Talos validates it (v1.13.9
/// `pkg/machinery/config/types/network/routing_rule.go` `Validate`): the name is the
/// priority, an unsigned integer other than the reserved 0, 32500 (KubeSpan), 32766
/// and 32767; a table is required for a unicast rule; `fwMask` needs `fwMark`; and a
/// document name is unique per kind.
fn check_routing_rules(docs: &[Value]) -> Result<(), String> {
    const RESERVED: [u64; 4] = [0, 32500, 32766, 32767];
    let mut seen = Vec::new();
    for d in docs.iter().filter(|d| kind(d) == Some("RoutingRuleConfig")) {
        let name = d.get("name").and_then(Value::as_str).unwrap_or_default();
        let bad = |why: &str| format!("RoutingRuleConfig `{name}`: {why}");
        let priority: u64 = name
            .parse()
            .ok()
            .filter(|p| *p <= u64::from(u32::MAX))
            .ok_or_else(|| bad("invalid name: must be priority parsable unsigned integer"))?;
        if RESERVED.contains(&priority) {
            return Err(bad(
                "priority must be between 1 and 32765 (excluding reserved priorities [0 32500 32766 32767])",
            ));
        }
        let action = d.get("action").and_then(Value::as_u64).unwrap_or(0);
        let table = d.get("table").and_then(Value::as_str).unwrap_or_default();
        if crate::routing::parse_table(table).is_none() && action <= 1 {
            return Err(bad(
                "either table or a non-unicast action must be specified",
            ));
        }
        if d.get("fwMask").is_some() && d.get("fwMark").is_none() {
            return Err(bad("fwMask requires fwMark to be set"));
        }
        if seen.contains(&priority) {
            return Err(bad("duplicate document"));
        }
        seen.push(priority);
    }
    Ok(())
}

fn link_addresses(docs: &[Value]) -> Vec<(String, Ipv4Net)> {
    let alias_mac = |alias: &str| {
        docs.iter()
            .filter(|d| kind(d) == Some("LinkAliasConfig"))
            .find(|d| d.get("name").and_then(Value::as_str) == Some(alias))
            .and_then(|d| d.get("selector")?.get("match")?.as_str())
            .and_then(selected_mac)
    };
    docs.iter()
        .filter(|d| kind(d) == Some("LinkConfig"))
        .filter_map(|d| {
            let mac = alias_mac(d.get("name")?.as_str()?)?;
            let addrs = d.get("addresses")?.as_array()?;
            Some(
                addrs
                    .iter()
                    .filter_map(|a| a.get("address")?.as_str()?.parse().ok())
                    .map(|net| (mac.clone(), net))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect()
}

/// The MAC in `mac(link.permanent_addr) == "…"` (or `hardware_addr`).
fn selected_mac(expr: &str) -> Option<String> {
    let (lhs, rhs) = expr.split_once("==")?;
    if !lhs.trim().starts_with("mac(link.") {
        return None;
    }
    Some(
        rhs.trim()
            .trim_matches(|c| c == '"' || c == '\'')
            .to_owned(),
    )
}

/// The kubelet node IP: the workload NIC's address when `validSubnets` selects it,
/// else the management address.
pub fn internal_ip(subnets: &[String], mgmt: Ipv4Addr, workload: Option<Ipv4Addr>) -> Ipv4Addr {
    match workload {
        Some(w) if selects(subnets, w) => w,
        _ => mgmt,
    }
}

/// `cluster.etcd.listenSubnets`, defaulting to `advertisedSubnets`.
fn etcd_listen_subnets(v1: &Value) -> Vec<String> {
    let listen = strings(v1, &["cluster", "etcd", "listenSubnets"]);
    if listen.is_empty() {
        strings(v1, &["cluster", "etcd", "advertisedSubnets"])
    } else {
        listen
    }
}

/// Whether etcd, configured with these listen subnets, accepts connections on `ip`
/// (Talos v1.13.9 `internal/app/machined/pkg/controllers/etcd/spec.go`: no subnets
/// means `0.0.0.0`).
pub fn etcd_listens_on(listen_subnets: &[String], ip: Ipv4Addr) -> bool {
    listen_subnets.is_empty() || selects(listen_subnets, ip)
}

/// Talos' subnet filter: `ip` is in a listed subnet and in no `!`-excluded one.
fn selects(subnets: &[String], ip: Ipv4Addr) -> bool {
    let mut hit = false;
    for s in subnets {
        let (neg, cidr) = match s.strip_prefix('!') {
            Some(c) => (true, c),
            None => (false, s.as_str()),
        };
        let net: Option<Ipv4Net> = cidr
            .parse()
            .ok()
            .or_else(|| cidr.parse::<Ipv4Addr>().ok().map(Ipv4Net::from));
        if net.is_some_and(|n| n.contains(&ip)) {
            if neg {
                return false;
            }
            hit = true;
        }
    }
    hit
}

#[cfg(test)]
mod tests {
    use super::super::golden;
    use super::*;

    #[test]
    fn upstream_generated_configs_parse() {
        let Some(cp) = golden("v1.13-base-controlplane.yaml") else {
            return;
        };
        let c = parse(&cp, &[]).unwrap();
        assert_eq!(c.machine_type, "controlplane");
        assert_eq!(c.cluster_name, "base");
        assert!(c.os_ca_key.contains("ED25519 PRIVATE KEY"));
        // The Kubernetes CA key is SEC1 `EC PRIVATE KEY`: the kubeconfig signer reads it.
        let k = super::super::certs::admin_kubeconfig(
            &c.cluster_name,
            &c.endpoint,
            &c.k8s_ca_crt,
            &c.k8s_ca_key,
        )
        .unwrap();
        assert!(k.contains("server: https://base:6443"), "{k}");
        let Some(w) = golden("v1.13-base-worker.yaml") else {
            return;
        };
        let w = parse(&w, &[]).unwrap();
        assert_eq!(
            (w.machine_type.as_str(), w.os_ca_key.as_str()),
            ("worker", "")
        );
    }

    /// A node refuses Kubernetes images its Talos release does not run, as
    /// `RuntimeValidate` does: Kubernetes 1.36 needs Talos 1.13.
    #[test]
    fn kubernetes_images_outside_the_releases_range_are_refused() {
        let Some(cp) = golden("v1.13-base-controlplane.yaml") else {
            return;
        };
        let mut c = parse(&cp, &[]).unwrap();
        assert_eq!(c.kubernetes_images.len(), 4);
        for (_, image) in &mut c.kubernetes_images {
            *image = image.rsplit_once(":v").unwrap().0.to_owned() + ":v1.36.3";
        }
        assert_eq!(check_kubernetes_images(&c, "v1.13.9"), Ok(()));
        let e = check_kubernetes_images(&c, "v1.12.11").unwrap_err();
        assert_eq!(
            e,
            "kubelet image is not valid: version of Kubernetes 1.36.3 is too new to be used with Talos 1.12.11"
        );
        c.kubernetes_images[0].1 = "ghcr.io/siderolabs/kubelet:v1.29.0".into();
        let e = check_kubernetes_images(&c, "v1.13.9").unwrap_err();
        assert!(
            e.contains("1.29.0 is too old to be used with Talos 1.13.9"),
            "{e}"
        );
        c.kubernetes_images[0].1 = "ghcr.io/siderolabs/kubelet:latest".into();
        assert!(check_kubernetes_images(&c, "v1.13.9").is_err());
    }

    #[test]
    fn invalid_configs_say_what_is_wrong() {
        assert!(parse("a: [", &[]).unwrap_err().contains("not valid YAML"));
        // Parse errors never quote the config: it holds CA keys.
        let e = parse("machine:\n  ca:\n    key: SECRETKEY: [\n", &[]).unwrap_err();
        assert!(!e.contains("SECRETKEY"), "{e}");
        assert!(
            parse("kind: X\napiVersion: v1alpha1\n", &[])
                .unwrap_err()
                .contains("no `version: v1alpha1`")
        );
        let e = parse("version: v1alpha1\nmachine: {type: init}\n", &[]).unwrap_err();
        assert!(e.contains("machine.type `init`"), "{e}");
        let e = parse("version: v1alpha1\nmachine: {type: worker}\n", &[]).unwrap_err();
        assert!(
            e.contains("`cluster.controlPlane.endpoint` is required"),
            "{e}"
        );
    }

    #[test]
    fn mac_selector_is_extracted() {
        assert_eq!(
            selected_mac(r#"mac(link.permanent_addr) == "bc:24:11:00:16:20""#).as_deref(),
            Some("bc:24:11:00:16:20")
        );
        assert_eq!(selected_mac(r#"link.driver == "virtio""#), None);
    }

    #[test]
    fn valid_subnets_pick_the_workload_address() {
        let m: Ipv4Addr = "10.8.16.20".parse().unwrap();
        let w: Ipv4Addr = "10.8.28.20".parse().unwrap();
        assert_eq!(internal_ip(&["10.8.28.0/22".into()], m, Some(w)), w);
        assert_eq!(internal_ip(&[], m, Some(w)), m);
        assert_eq!(
            internal_ip(&["10.8.0.0/16".into(), "!10.8.28.20/32".into()], m, Some(w)),
            m
        );
    }

    #[test]
    fn routing_rules_are_validated_as_talos_does() {
        let rule = |body: &str| {
            let docs: Vec<Value> = serde_saphyr::from_str_multiple(&format!(
                "apiVersion: v1alpha1\nkind: RoutingRuleConfig\n{body}"
            ))
            .unwrap();
            check_routing_rules(&docs)
        };
        assert!(rule("name: \"900\"\nsrc: 10.8.32.0/22\ntable: \"101\"\n").is_ok());
        assert!(
            rule("name: \"32766\"\ntable: \"100\"\n")
                .unwrap_err()
                .contains("reserved")
        );
        assert!(
            rule("name: main\ntable: \"100\"\n")
                .unwrap_err()
                .contains("unsigned integer")
        );
        assert!(rule("name: \"10\"\n").unwrap_err().contains("either table"));
        assert!(
            rule("name: \"10\"\ntable: \"100\"\n---\napiVersion: v1alpha1\nkind: RoutingRuleConfig\nname: \"10\"\ntable: \"101\"\n")
                .unwrap_err()
                .contains("duplicate")
        );
    }

    #[test]
    fn a_1_12_node_does_not_know_routing_rules() {
        let doc = "version: v1alpha1\n---\napiVersion: v1alpha1\nkind: RoutingRuleConfig\nname: \"900\"\ntable: \"101\"\n";
        // The v1alpha1 document is incomplete: parse fails first on both versions,
        // so check the kind filter on its own.
        let docs: Vec<Value> = serde_saphyr::from_str_multiple(doc).unwrap();
        assert!(
            docs.iter()
                .filter_map(kind)
                .any(|k| KINDS_SINCE_1_13.contains(&k))
        );
        let Some(cp) = golden("v1.13-base-controlplane.yaml") else {
            return;
        };
        let with_rule = format!(
            "{cp}\n---\napiVersion: v1alpha1\nkind: RoutingRuleConfig\nname: \"900\"\ntable: \"101\"\n"
        );
        assert!(parse_on(&with_rule, &[], "v1.13.9").is_ok());
        let e = parse_on(&with_rule, &[], "v1.12.11").unwrap_err();
        assert_eq!(e, "\"RoutingRuleConfig\" \"v1alpha1\": not registered");
    }

    #[test]
    fn etcd_listens_where_listen_or_advertised_subnets_say() {
        let w: Ipv4Addr = "10.8.28.20".parse().unwrap();
        let listen = |etcd: &str| {
            let v: Value = serde_saphyr::from_str(&format!("cluster: {{etcd: {etcd}}}")).unwrap();
            etcd_listen_subnets(&v)
        };
        // advertisedSubnets alone also limits where etcd listens.
        assert!(!etcd_listens_on(
            &listen("{advertisedSubnets: [10.8.16.0/24]}"),
            w
        ));
        assert!(etcd_listens_on(
            &listen(
                "{advertisedSubnets: [10.8.16.0/24], listenSubnets: [10.8.16.0/24, 10.8.28.0/22]}"
            ),
            w
        ));
        assert!(etcd_listens_on(&listen("{}"), w));
    }
}

//! What a lab Talos node understands of a machine config. Parsed generically (a
//! multi-document YAML stream into JSON values), not with the generator's types, so
//! the lab checks what Talos would check rather than what talos-pve meant.

use std::net::Ipv4Addr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ipnet::Ipv4Net;
use serde_json::Value;

use crate::lab::LabNic;

/// The facts a node takes from its applied config.
#[derive(Debug, Clone, PartialEq)]
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
    /// Static addresses per link MAC (lower case): `LinkConfig.addresses` of the
    /// link a `LinkAliasConfig` selects by MAC. This is how the node gets its
    /// addresses when nothing else (a cloud-init `network-config`) gives them.
    pub link_addresses: Vec<(String, Ipv4Net)>,
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
        link_addresses: link_addresses(&docs),
        machine_type,
    };
    check_link_aliases(&docs, nics)?;
    Ok(cfg)
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
    let selects = |ip: Ipv4Addr| {
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
    };
    match workload {
        Some(w) if selects(w) => w,
        _ => mgmt,
    }
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
}

//! The outbound connections the nodes need, derived from the profile: what `docs`,
//! the summary after `up` and `lint` tell the user to allow on the gateway. Sources:
//! talos v1.13.9 `pkg/machinery/constants/constants.go` (image names, default NTP
//! server, discovery endpoint), the generated configs (discovery service on,
//! Kubernetes registry off) and the add-on pins.

use serde::Serialize;

use crate::addons::cilium;
use crate::profile::Profile;

/// One destination the nodes must reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Need {
    pub host: String,
    pub ports: &'static str,
    pub what: String,
    /// The profile fields that make the nodes go there (empty: the generated config).
    pub because: Vec<&'static str>,
}

/// The registry host of an image reference (`host/path:tag`).
fn registry(image: &str) -> String {
    image.split('/').next().unwrap_or_default().to_owned()
}

pub fn needs(p: &Profile) -> Vec<Need> {
    let factory = crate::plan::image_factory_host(p);
    let mut out = vec![
        Need {
            host: registry(factory),
            ports: "tcp/443",
            what: format!(
                "Image Factory: the nocloud installer image of Talos {} (install and upgrades)",
                p.talos.version
            ),
            because: vec!["talos.imageFactory", "talos.version"],
        },
        Need {
            host: "registry.k8s.io".into(),
            ports: "tcp/443",
            what: "kube-apiserver, -controller-manager, -scheduler, etcd and CoreDNS images \
                   (and the storage it redirects to)"
                .into(),
            because: vec!["kubernetes.version"],
        },
        Need {
            host: "ghcr.io".into(),
            ports: "tcp/443",
            what: "the kubelet image ghcr.io/siderolabs/kubelet (blobs from \
                   pkg-containers.githubusercontent.com)"
                .into(),
            because: vec!["kubernetes.version"],
        },
    ];
    let cli = cilium::cli_image(&p.addons.cilium)
        .unwrap_or(&cilium::pins().installer.image)
        .to_owned();
    let quay = "quay.io".to_owned();
    let mut cilium_need = Need {
        host: quay.clone(),
        ports: "tcp/443",
        what: format!(
            "Cilium {} agent, operator and envoy images (blobs from cdn*.quay.io); the chart is \
             inside the cilium-cli image, so helm.cilium.io is not needed",
            p.addons.cilium.version
        ),
        because: vec!["addons.cilium.version"],
    };
    if registry(&cli) == quay {
        cilium_need.what = format!("{cli} and the {}", cilium_need.what);
        cilium_need.because.push("addons.cilium.cliImage");
        out.push(cilium_need);
    } else {
        out.push(cilium_need);
        out.push(Need {
            host: registry(&cli),
            ports: "tcp/443",
            what: format!("the Cilium install Job's image {cli}"),
            because: vec!["addons.cilium.cliImage"],
        });
    }
    if let Some(m) = &p.addons.metallb {
        out.push(Need {
            host: quay,
            ports: "tcp/443",
            what: format!(
                "MetalLB v{} controller and speaker images",
                m.version.trim_start_matches('v')
            ),
            because: vec!["addons.metallb.version"],
        });
    }
    out.push(Need {
        host: "discovery.talos.dev".into(),
        ports: "tcp/443",
        what: "Talos discovery service (cluster membership, KubeSpan); etcd joins do not \
               depend on it"
            .into(),
        because: vec![],
    });
    if p.time_servers.is_empty() {
        out.push(Need {
            host: "time.cloudflare.com".into(),
            ports: "udp/123",
            what: "NTP: Talos' default time server (bootstrap waits for synced time)".into(),
            because: vec!["timeServers"],
        });
    } else {
        out.push(Need {
            host: p.time_servers.join(", "),
            ports: "udp/123",
            what: "NTP (bootstrap waits for synced time)".into(),
            because: vec!["timeServers"],
        });
    }
    out
}

/// `host ports  what` lines, indented by `indent`.
pub fn lines(needs: &[Need], indent: &str) -> String {
    let width = needs.iter().map(|n| n.host.len()).max().unwrap_or(0);
    needs
        .iter()
        .map(|n| format!("{indent}{:<width$}  {:<8} {}\n", n.host, n.ports, n.what))
        .collect()
}

/// Markdown table for `docs`.
pub fn markdown(needs: &[Need]) -> String {
    let mut s = String::from(
        "The nodes (not only the workstation) open these connections; allow them on the \
         gateway, or mirror the images and point the profile at the mirror. DNS goes to the \
         profile's resolvers.\n\n| destination | ports | what | profile fields |\n|---|---|---|---|\n",
    );
    for n in needs {
        let because = if n.because.is_empty() {
            "(generated config)".to_owned()
        } else {
            n.because
                .iter()
                .map(|b| format!("`{b}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        s.push_str(&format!(
            "| {} | {} | {} | {because} |\n",
            n.host, n.ports, n.what
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_homelab_needs_the_factory_registries_discovery_and_ntp() {
        let p = crate::test_support::homelab();
        let n = needs(&p);
        let hosts: Vec<&str> = n.iter().map(|n| n.host.as_str()).collect();
        for h in [
            "factory.talos.dev",
            "registry.k8s.io",
            "ghcr.io",
            "quay.io",
            "discovery.talos.dev",
        ] {
            assert!(hosts.contains(&h), "{h} missing: {hosts:?}");
        }
        assert!(!hosts.contains(&"helm.cilium.io"));
        assert!(n.iter().any(|n| n.ports == "udp/123"));
        let cilium = n.iter().find(|n| n.what.contains("Cilium")).unwrap();
        assert!(
            cilium.what.contains("quay.io/cilium/cilium-cli:"),
            "{}",
            cilium.what
        );
        let md = markdown(&n);
        assert!(md.contains("| factory.talos.dev | tcp/443 |"), "{md}");
        assert!(md.contains("`addons.cilium.version`"), "{md}");
    }

    #[test]
    fn a_mirrored_cli_image_adds_its_registry() {
        let mut p = crate::test_support::homelab();
        p.addons.cilium.cli_image = Some("registry.lan:5000/cilium/cilium-cli:v0.19.7".into());
        let n = needs(&p);
        assert!(
            n.iter()
                .any(|n| n.host == "registry.lan:5000" && n.because == ["addons.cilium.cliImage"])
        );
    }
}

//! Page "Kubernetes": versions, endpoint, pod and service addressing, DNS (records
//! follow a changed endpoint), Talos, node resources and routing; then the values
//! derived from all answers.

use super::*;

impl Flow<'_> {
    /// Kubernetes, pod addressing, DNS, Talos, resources, routing and MetalLB.
    pub(super) fn settings(&mut self) -> Result<(), WizardError> {
        let k = self.d.kubernetes.clone();
        self.d.kubernetes.version = self.ask("Kubernetes version", &k.version, |s| {
            let s = s.trim().trim_start_matches('v');
            if s.split('.').count() == 3 && s.split('.').all(|p| p.parse::<u32>().is_ok()) {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` is not a version like 1.36.3"))
            }
        })?;
        let first_cp = self
            .d
            .nodes
            .iter()
            .find(|n| n.role == Role::Controlplane)
            .map(|n| n.management.address);
        // Keep a typed endpoint unless it names an address no node has any more.
        let node_ips: Vec<Ipv4Addr> = self.d.nodes.iter().map(|n| n.management.address).collect();
        let stale = k.endpoint.is_empty()
            || endpoint_ip(&k.endpoint).is_some_and(|ip| !node_ips.contains(&ip));
        let ep_default = match first_cp {
            Some(a) if stale => format!("https://{a}:6443"),
            _ => k.endpoint.clone(),
        };
        let old_ep = endpoint_ip(&k.endpoint);
        self.d.kubernetes.endpoint = self.ask("Kubernetes API endpoint", &ep_default, |s| {
            let s = s.trim();
            match crate::plan::endpoint_host(s) {
                Some(_)
                    if s.rsplit_once(':')
                        .is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
                {
                    Ok(s.to_owned())
                }
                _ => Err(format!(
                    "`{s}` is not https://HOST:PORT (e.g. https://10.8.16.20:6443)"
                )),
            }
        })?;
        let nets: Vec<Network> = self.d.networks.clone();
        let overlaps = move |net: Ipv4Net| no_overlap(net, &nets);
        let svc = self.ask("Service subnet", &k.service_subnet.to_string(), |s| {
            overlaps(parse::subnet(s)?)
        })?;
        self.d.kubernetes.service_subnet = svc;
        let count = self.d.nodes.len();
        let pod_default = self.pod_block_default(count);
        let pod = self.ask(
            "Pod subnet (routed; one block per node is carved from it)",
            &pod_default.to_string(),
            |s| {
                let net = overlaps(parse::subnet(s)?)?;
                if net.contains(&svc) || svc.contains(&net) {
                    return Err(format!("{net} overlaps the service subnet {svc}"));
                }
                Ok(net)
            },
        )?;
        let prefix = self.ask(
            "Pod CIDR prefix per node",
            &k.node_pod_prefix.to_string(),
            |s| {
                let p: u8 = parse::number(s, "prefix length")?;
                let room = if p >= pod.prefix_len() && p <= 30 {
                    1u64 << (p - pod.prefix_len()).min(32)
                } else {
                    0
                };
                if room >= count as u64 {
                    Ok(p)
                } else {
                    Err(format!(
                        "{pod} holds {room} blocks of /{p}, but there are {count} nodes"
                    ))
                }
            },
        )?;
        self.d.kubernetes.pod_subnet = pod;
        self.d.kubernetes.node_pod_prefix = prefix;
        let dns = self.d.dns.clone();
        self.d.dns.servers = self.ask(
            "DNS servers (comma-separated)",
            &parse::join(&dns.servers),
            |s| {
                let v = parse::ipv4_list(s)?;
                if v.is_empty() {
                    Err("give at least one DNS server".into())
                } else {
                    Ok(v)
                }
            },
        )?;
        let domain = self.ask(
            "Local DNS domain (empty: none)",
            dns.domain.as_deref().unwrap_or(""),
            |s| {
                let s = s.trim().trim_end_matches('.');
                if s.is_empty() {
                    return Ok(None);
                }
                s.split('.')
                    .map(parse::dns_label)
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(s.to_owned()))
            },
        )?;
        self.d.dns.domain = domain;
        // Records that named the old endpoint follow the new one (going back must not keep it).
        let mut dns = dns;
        if let (Some(old), Some(new)) = (old_ep, endpoint_ip(&self.d.kubernetes.endpoint)) {
            for r in dns.records.iter_mut().filter(|r| r.address == old) {
                r.address = new;
            }
        }
        let rec_default = if dns.records.is_empty() {
            endpoint_ip(&self.d.kubernetes.endpoint)
                .map(|a| format!("k8s-api={a}"))
                .unwrap_or_default()
        } else {
            parse::records_text(&dns.records)
        };
        self.d.dns.records = self.ask(
            "Local DNS records (name=address; …; empty: none)",
            &rec_default,
            parse::dns_records,
        )?;

        let t = self.d.talos.clone();
        self.d.talos.version = self.ask("Talos version", &t.version, |s| {
            let s = s.trim();
            let v = if s.starts_with('v') {
                s.to_owned()
            } else {
                format!("v{s}")
            };
            if v[1..].split('.').count() == 3 && v[1..].split('.').all(|p| p.parse::<u32>().is_ok())
            {
                Ok(v)
            } else {
                Err(format!("`{s}` is not a version like v1.13.9"))
            }
        })?;
        self.d.talos.install_disk =
            self.ask("Install disk inside the VM", &t.install_disk, |s| {
                let s = s.trim();
                if s.starts_with("/dev/") {
                    Ok(s.to_owned())
                } else {
                    Err("a device path such as /dev/sda".into())
                }
            })?;
        let r = self.d.node_defaults.clone();
        self.d.node_defaults.cores = self.ask("CPU cores per node", &r.cores.to_string(), |s| {
            positive(s, "core count")
        })?;
        self.d.node_defaults.memory =
            self.ask("Memory per node (MiB)", &r.memory.to_string(), |s| {
                let m = positive(s, "memory size")?;
                if m < 2048 {
                    Err("Talos needs at least 2048 MiB".into())
                } else {
                    Ok(m)
                }
            })?;
        self.d.node_defaults.disk = self.ask("Disk per node (GiB)", &r.disk.to_string(), |s| {
            let g = positive(s, "disk size")?;
            if g < 10 {
                Err("Talos needs at least 10 GiB".into())
            } else {
                Ok(g)
            }
        })?;
        self.d.routing.masquerade = self.p.confirm(
            "Masquerade pod traffic? (only if you cannot add static routes on the gateway)",
            self.d.routing.masquerade,
        )?;
        self.metallb()
    }

    /// Values that follow from the answers, recomputed after every (re-)run of a section.
    pub(super) fn derive(&mut self) {
        for n in &mut self.d.nodes {
            n.pod_cidr = None;
        }
        // Written out per node so the profile shows (and pins) each node's block. When
        // the pod subnet is too small they stay empty and the plan check reports why.
        if let Ok(cidrs) = crate::plan::pod_cidrs(&self.d) {
            for (n, c) in self.d.nodes.iter_mut().zip(cidrs) {
                n.pod_cidr = Some(c);
            }
        }
        self.d.kubernetes.allow_scheduling_on_control_planes = Some(self.d.all_control_planes());
        self.d.addons.cilium.native_routing_cidr = Some(self.d.kubernetes.pod_subnet);
    }

    pub(super) fn pod_block_default(&self, count: usize) -> Ipv4Net {
        let cur = self.d.kubernetes.pod_subnet;
        let clash = self
            .d
            .networks
            .iter()
            .any(|n| n.subnet.contains(&cur) || cur.contains(&n.subnet));
        if !clash {
            return cur;
        }
        // The block right after the workload subnet (the one network's, with one), big
        // enough for one /24 per node.
        let after = self
            .d
            .link_network(LinkRole::Workload)
            .map_or(0, |n| u32::from(n.subnet.broadcast()).saturating_add(1));
        let bits = (count.max(1) as u32).next_power_of_two().trailing_zeros() as u8;
        let len = 24u8.saturating_sub(bits);
        // Aligned up, not truncated down: truncating would land back on the network.
        let size = 1u64 << (32 - u32::from(len));
        let start = u64::from(after).div_ceil(size) * size;
        u32::try_from(start)
            .ok()
            .and_then(|s| Ipv4Net::new(Ipv4Addr::from(s), len).ok())
            .unwrap_or(cur)
    }
}

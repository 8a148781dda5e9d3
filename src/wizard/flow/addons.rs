//! Page "add-ons": the MetalLB pool on the workload network.

use super::*;

impl Flow<'_> {
    pub(super) fn metallb(&mut self) -> Result<(), WizardError> {
        let Some(work) = self.net(NetworkRole::Workload).cloned() else {
            return Ok(());
        };
        let cur = self.d.addons.metallb.clone();
        let default = cur
            .as_ref()
            .map(|m| m.pool)
            .filter(|p| p.within(&work.subnet))
            .map_or_else(
                || {
                    // .10-.200 of the workload subnet's last /24.
                    let last24 = u32::from(work.subnet.broadcast()) & !0xff;
                    format!(
                        "{}-{}",
                        Ipv4Addr::from(last24 + 10),
                        Ipv4Addr::from(last24 + 200)
                    )
                },
                |p| p.to_string(),
            );
        let nodes: Vec<(Ipv4Addr, String)> = self
            .d
            .nodes
            .iter()
            .map(|n| (n.workload.address, n.name.clone()))
            .collect();
        let pool = self.ask(
            "MetalLB address pool (first-last; empty: no MetalLB)",
            &default,
            |s| {
                if s.trim().is_empty() {
                    return Ok(None);
                }
                let r = parse::range(s)?;
                if !r.within(&work.subnet) {
                    return Err(format!(
                        "{r} is not inside the workload subnet {}",
                        work.subnet
                    ));
                }
                if let Some(g) = work.gateway.filter(|g| r.contains(*g)) {
                    return Err(format!("{r} contains the gateway {g}"));
                }
                if let Some((a, n)) = nodes.iter().find(|(a, _)| r.contains(*a)) {
                    return Err(format!("{r} contains {n}'s address {a}"));
                }
                if let Some(res) = work.reserved.iter().find(|x| x.range.overlaps(&r)) {
                    return Err(format!(
                        "{r} overlaps the reserved range {} ({})",
                        res.range, res.purpose
                    ));
                }
                Ok(Some(r))
            },
        )?;
        self.d.addons.metallb = pool.map(|pool| {
            let mut m = cur.unwrap_or(MetalLb {
                version: "0.16.1".into(),
                pool_name: "default".into(),
                pool,
                interface: LinkRole::Workload,
            });
            m.pool = pool;
            m
        });
        Ok(())
    }
}

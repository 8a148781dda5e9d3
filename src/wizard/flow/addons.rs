//! Page "add-ons": the MetalLB pool on the workload network (the one network of a
//! one-network cluster), clear of every address the profile knows.

use crate::profile::AddrRange;

use super::*;

/// The longest run inside `within` that holds none of `taken` and no reserved range.
fn free_run(within: AddrRange, taken: &[Ipv4Addr], reserved: &[AddrRange]) -> Option<AddrRange> {
    let free = |a: Ipv4Addr| !taken.contains(&a) && !reserved.iter().any(|r| r.contains(a));
    let (first, last) = (u32::from(within.first), u32::from(within.last));
    let mut best: Option<(u32, u32)> = None;
    let mut start = None;
    for a in first..=last {
        match (free(Ipv4Addr::from(a)), start) {
            (true, None) => start = Some(a),
            (false, Some(s)) => {
                if best.is_none_or(|(b0, b1)| a - s > b1 - b0 + 1) {
                    best = Some((s, a - 1));
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start
        && best.is_none_or(|(b0, b1)| last - s + 1 > b1 - b0 + 1)
    {
        best = Some((s, last));
    }
    best.map(|(a, b)| AddrRange {
        first: Ipv4Addr::from(a),
        last: Ipv4Addr::from(b),
    })
}

impl Flow<'_> {
    pub(super) fn metallb(&mut self) -> Result<(), WizardError> {
        let Some(work) = self.d.link_network(LinkRole::Workload).cloned() else {
            return Ok(());
        };
        let nodes = self.taken(usize::MAX);
        let taken: Vec<Ipv4Addr> = nodes.iter().map(|(a, _)| *a).collect();
        let reserved: Vec<AddrRange> = work.reserved.iter().map(|r| r.range).collect();
        let cur = self.d.addons.metallb.clone();
        let default = cur
            .as_ref()
            .map(|m| m.pool)
            .filter(|p| p.within(&work.subnet))
            .or_else(|| {
                // A dedicated workload network: .10-.200 of its last /24. A shared LAN
                // keeps clients, hosts and nodes low: .200-.249, minus what is taken.
                let last24 = u32::from(work.subnet.broadcast()) & !0xff;
                let (lo, hi) = if self.d.one_network() {
                    (200, 249)
                } else {
                    (10, 200)
                };
                let span = AddrRange {
                    first: Ipv4Addr::from(last24 + lo),
                    last: Ipv4Addr::from(last24 + hi),
                };
                free_run(span, &taken, &reserved)
            })
            .map(|p| p.to_string())
            .unwrap_or_default();
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
                    return Err(format!("{r} contains the address {a} of {n}"));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_default_skips_taken_addresses() {
        let r = |s: &str| s.parse::<AddrRange>().unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let span = r("192.168.1.200-192.168.1.249");
        assert_eq!(free_run(span, &[], &[]), Some(span));
        let got = free_run(
            span,
            &[ip("192.168.1.210")],
            &[r("192.168.1.240-192.168.1.249")],
        );
        assert_eq!(got, Some(r("192.168.1.211-192.168.1.239")));
        assert_eq!(free_run(r("192.168.1.5"), &[ip("192.168.1.5")], &[]), None);
    }
}

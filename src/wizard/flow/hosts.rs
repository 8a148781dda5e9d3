//! Page "hosts": the cluster name, the Proxmox connection, discovery, which hosts
//! run Talos VMs with their bridge and storages, and each host's storage and OOB links.

use super::*;

impl Flow<'_> {
    pub(super) fn cluster(&mut self) -> Result<(), WizardError> {
        let name = self.d.metadata.name.clone();
        self.d.metadata.name = self.ask("Cluster name", &name, parse::dns_label)?;
        let desc = self.d.metadata.description.clone().unwrap_or_default();
        let desc = self.ask("Description (optional)", &desc, |s| Ok(s.trim().to_owned()))?;
        self.d.metadata.description = (!desc.is_empty()).then_some(desc);
        Ok(())
    }

    pub(super) fn proxmox<'c>(
        &mut self,
        connect: &'c dyn Connect,
        token_dir: &std::path::Path,
    ) -> Result<(Box<dyn Discovery + 'c>, Option<TokenFile>), WizardError> {
        loop {
            let ep = self.d.proxmox.endpoint.clone();
            self.d.proxmox.endpoint =
                self.ask("Proxmox API endpoint", &ep, parse::proxmox_endpoint)?;
            let id = self.d.proxmox.token_id.clone();
            self.d.proxmox.token_id =
                self.ask("API token id (USER@REALM!TOKENID)", &id, parse::token_id)?;
            let secret = self
                .p
                .password("API token secret (never stored in the profile; empty to skip)")?;
            let fp = self.d.proxmox.fingerprint.clone().unwrap_or_default();
            self.d.proxmox.fingerprint = self.ask(
                "API certificate SHA-256 fingerprint (empty: trust system CAs)",
                &fp,
                parse::fingerprint,
            )?;
            let token_file = if secret.expose_secret().is_empty() {
                None
            } else if self.p.confirm(
                "Save the token secret to a 0600 file (proxmox.tokenFile)?",
                true,
            )? {
                let def = token_dir
                    .join(format!("{}-proxmox.token", self.d.metadata.name))
                    .display()
                    .to_string();
                let path = self.ask("Token file", &def, |s| {
                    let s = s.trim();
                    if s.is_empty() {
                        Err("give a file path".to_owned())
                    } else {
                        Ok(PathBuf::from(s))
                    }
                })?;
                Some(TokenFile {
                    path,
                    secret: secret.clone(),
                })
            } else {
                None
            };
            self.d.proxmox.token_file = token_file.as_ref().map(|t| t.path.display().to_string());
            let access = Access {
                endpoint: self.d.proxmox.endpoint.clone(),
                token_id: self.d.proxmox.token_id.clone(),
                secret,
                fingerprint: self.d.proxmox.fingerprint.clone(),
            };
            match connect.connect(&access) {
                Ok(d) => return Ok((d, token_file)),
                Err(e) => {
                    self.p.note(&format!("  ✗ {e}"));
                    if !self
                        .p
                        .confirm("Enter the Proxmox connection again?", true)?
                    {
                        return Err(e.into());
                    }
                }
            }
        }
    }

    pub(super) fn discover(&mut self, d: &dyn Discovery) -> Result<(), WizardError> {
        let mut hosts = d.hosts()?;
        if hosts.is_empty() {
            return Err(WizardError::Unusable(
                "Proxmox reported no hosts".into(),
                "check that the token may read /nodes (PVEAuditor on /)".into(),
            ));
        }
        for h in &mut hosts {
            h.bridges = d.bridges(&h.name)?;
            h.bonds = d.bonds(&h.name)?;
            h.storages = d.storages(&h.name)?;
        }
        self.found = hosts;
        Ok(())
    }

    /// Which hosts run Talos VMs, the bridge, and the ISO and disk storages.
    pub(super) fn hosts(&mut self) -> Result<(), WizardError> {
        let names: Vec<String> = self.found.iter().map(|h| h.name.clone()).collect();
        let checked: Vec<bool> = names
            .iter()
            .map(|n| self.d.proxmox.hosts.is_empty() || self.d.host(n).is_some())
            .collect();
        let picked = loop {
            let v = self
                .p
                .multi_select("Proxmox hosts for the Talos VMs", &names, &checked)?;
            if !v.is_empty() {
                break v;
            }
            self.p.note("  ✗ pick at least one host");
        };
        let chosen: Vec<HostInfo> = picked.iter().map(|&i| self.found[i].clone()).collect();
        // A VM may land on any chosen host, so the bridge and storages must exist on all.
        let common = |names_of: &dyn Fn(&HostInfo) -> Vec<String>| -> Vec<String> {
            names_of(&chosen[0])
                .into_iter()
                .filter(|n| chosen.iter().all(|h| names_of(h).contains(n)))
                .collect()
        };
        let bridges = common(&|h| h.bridges.iter().map(|b| b.name.clone()).collect());
        let iso = common(&|h| {
            h.storages
                .iter()
                .filter(|s| s.holds("iso"))
                .map(|s| s.name.clone())
                .collect()
        });
        let images = common(&|h| {
            h.storages
                .iter()
                .filter(|s| s.holds("images"))
                .map(|s| s.name.clone())
                .collect()
        });
        let on = chosen
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        for (what, list) in [
            ("bridge", &bridges),
            ("ISO storage", &iso),
            ("disk-image storage", &images),
        ] {
            if list.is_empty() {
                return Err(WizardError::Unusable(
                    format!("no {what} exists on every chosen host ({on})"),
                    format!("create the same {what} on each host, or choose fewer hosts"),
                ));
            }
        }
        let px = &mut self.d.proxmox;
        let choices: [(&str, &[String], &mut String); 3] = [
            ("Bridge for the VM NICs", &bridges, &mut px.bridge),
            ("Storage for the Talos ISO", &iso, &mut px.iso_storage),
            ("Storage for the VM disks", &images, &mut px.disk_storage),
        ];
        // The current value is the default, so a re-run keeps the earlier choice.
        for (q, list, cur) in choices {
            let def = list.iter().position(|x| x == cur).unwrap_or(0);
            *cur = list[self.p.select(q, list, def)?].clone();
        }
        let bridge = self.d.proxmox.bridge.clone();
        let old = std::mem::take(&mut self.d.proxmox.hosts);
        self.d.proxmox.hosts = chosen
            .iter()
            .map(|h| {
                let prev = old.iter().find(|o| o.name == h.name);
                Host {
                    name: h.name.clone(),
                    address: h.address,
                    uplink: h
                        .bridges
                        .iter()
                        .find(|b| b.name == bridge)
                        .and_then(|b| b.ports.first().cloned()),
                    storage: None,
                    oob: prev.map(|p| p.oob.clone()).unwrap_or_default(),
                    endpoint: prev.and_then(|p| p.endpoint.clone()),
                    fingerprint: prev.and_then(|p| p.fingerprint.clone()),
                    ca_file: prev.and_then(|p| p.ca_file.clone()),
                    token_file: prev.and_then(|p| p.token_file.clone()),
                }
            })
            .collect();
        Ok(())
    }

    /// Storage bonds come from discovery; out-of-band devices are asked per host.
    pub(super) fn host_details(&mut self) -> Result<(), WizardError> {
        let storage = self.net(NetworkRole::Storage).map(|n| n.subnet);
        let mgmt = self
            .net(NetworkRole::Management)
            .map(|n| (n.subnet, n.gateway));
        for i in 0..self.d.proxmox.hosts.len() {
            let name = self.d.proxmox.hosts[i].name.clone();
            let bonds = self
                .found
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.bonds.clone())
                .unwrap_or_default();
            let link = storage.and_then(|net| {
                bonds.iter().find_map(|b| {
                    let addr = b.address.filter(|a| net.contains(a))?;
                    Some(HostStorageLink {
                        interface: b.name.clone(),
                        address: addr,
                        members: b.slaves.clone(),
                        mtu: b.mtu,
                    })
                })
            });
            if let Some(l) = &link {
                self.p.note(&format!(
                    "{name}: storage link {} {} (discovered)",
                    l.interface, l.address
                ));
            }
            self.d.proxmox.hosts[i].storage = link;
            let cur = parse::devices_text(&self.d.proxmox.hosts[i].oob);
            let oob = self.ask(
                &format!("{name}: out-of-band management (name=address, then a kind if you like; …; empty: none)"),
                &cur,
                |s| {
                    let d = parse::devices(s)?;
                    if let Some((net, gw)) = mgmt {
                        for dev in &d {
                            parse::host_in(dev.address, &net, gw)
                                .map_err(|e| format!("{}: {e}", dev.name))?;
                        }
                    }
                    Ok(d)
                },
            )?;
            self.d.proxmox.hosts[i].oob = oob;
        }
        Ok(())
    }
}

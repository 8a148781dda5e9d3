//! Is the machine answering at a node's address really the VM talos-pve created?
//! Asked before a machine config (which carries the cluster's CA keys) goes to a
//! node in maintenance mode, where the node cannot prove who it is.
//!
//! First choice: the QEMU guest agent reports an interface with the planned MAC
//! holding the address. The agent does not run in Talos maintenance mode
//! (siderolabs/talos#11651), so when it is not answering, the Proxmox side must at
//! least agree: the VM is running, its NIC has the planned MAC and its cloud-init
//! drive gives that NIC this address. Anything else refuses.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use serde_json::Value;

use crate::plan::Plan;
use crate::proxmox::client::vm_path;
use crate::proxmox::{Client, PveError};
use crate::talos::api::{GuestInterface, IdentityCheck, check_identity};

pub struct ProxmoxIdentity<'a> {
    pub pve: &'a Client,
    pub plan: &'a Plan,
}

impl IdentityCheck for ProxmoxIdentity<'_> {
    fn confirm<'a>(
        &'a self,
        node: &'a str,
        addr: IpAddr,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            let n = self
                .plan
                .node(node)
                .ok_or_else(|| format!("{node} is not in the plan"))?;
            let nic = [&n.management, &n.workload]
                .into_iter()
                .find(|nic| IpAddr::V4(nic.address.addr()) == addr)
                .ok_or_else(|| format!("{addr} is not one of {node}'s planned addresses"))?;
            let base = vm_path(&n.host, n.vmid).map_err(|e| e.to_string())?;
            match self
                .pve
                .get::<Value>(&format!("{base}/agent/network-get-interfaces"), &[])
                .await
            {
                Ok(v) => check_identity(&nic.mac, addr, &guest_interfaces(&v)),
                Err(PveError::Api { .. }) => {
                    tracing::info!(
                        node,
                        "guest agent not answering (maintenance mode); checking the Proxmox VM config instead"
                    );
                    let status: Value = self
                        .pve
                        .get(&format!("{base}/status/current"), &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    if status.get("status").and_then(Value::as_str) != Some("running") {
                        return Err(format!("VM {} on {} is not running", n.vmid, n.host));
                    }
                    let cfg: Value = self
                        .pve
                        .get(&format!("{base}/config"), &[])
                        .await
                        .map_err(|e| e.to_string())?;
                    config_agrees(&cfg, nic.index, &nic.mac, addr)
                }
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

/// `{"result": [{"name", "hardware-address", "ip-addresses": [{"ip-address"}]}]}`.
fn guest_interfaces(v: &Value) -> Vec<GuestInterface> {
    let list = v
        .get("result")
        .unwrap_or(v)
        .as_array()
        .cloned()
        .unwrap_or_default();
    list.iter()
        .map(|i| GuestInterface {
            name: i
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            mac: i
                .get("hardware-address")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            addresses: i
                .get("ip-addresses")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.get("ip-address")?.as_str()?.parse().ok())
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect()
}

/// `net<i>` carries the MAC and `ipconfig<i>` the address.
fn config_agrees(cfg: &Value, index: u8, mac: &str, addr: IpAddr) -> Result<(), String> {
    let field = |k: String| {
        cfg.get(&k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let net = field(format!("net{index}"));
    if !net.to_ascii_uppercase().contains(&mac.to_ascii_uppercase()) {
        return Err(format!(
            "net{index} of the VM is `{net}`, not the planned MAC {mac}"
        ));
    }
    let ipconfig = field(format!("ipconfig{index}"));
    let ip = ipconfig
        .split(',')
        .find_map(|kv| kv.strip_prefix("ip="))
        .and_then(|c| c.split('/').next());
    if ip != Some(&addr.to_string()) {
        return Err(format!(
            "ipconfig{index} of the VM is `{ipconfig}`, which does not give it {addr}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn proxmox_config_must_agree_on_mac_and_address() {
        let cfg = json!({"net0": "virtio=02:AA:BB:CC:DD:EE,bridge=vmbr0,tag=16", "ipconfig0": "ip=10.8.16.20/24,gw=10.8.16.1"});
        let addr: IpAddr = "10.8.16.20".parse().unwrap();
        assert!(config_agrees(&cfg, 0, "02:aa:bb:cc:dd:ee", addr).is_ok());
        assert!(
            config_agrees(&cfg, 0, "02:aa:bb:cc:dd:ef", addr)
                .unwrap_err()
                .contains("MAC")
        );
        assert!(
            config_agrees(&cfg, 0, "02:aa:bb:cc:dd:ee", "10.8.16.21".parse().unwrap())
                .unwrap_err()
                .contains("ipconfig0")
        );
    }

    #[test]
    fn guest_agent_answer_is_read() {
        let v = json!({"result": [{"name": "eth0", "hardware-address": "02:aa:bb:cc:dd:ee",
            "ip-addresses": [{"ip-address": "10.8.16.20", "ip-address-type": "ipv4", "prefix": 24}]}]});
        let i = guest_interfaces(&v);
        assert_eq!(
            i[0].addresses,
            vec!["10.8.16.20".parse::<IpAddr>().unwrap()]
        );
    }
}

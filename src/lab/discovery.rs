//! The lab as the wizard's Proxmox (`init --lab`, `up --lab` without a profile): a
//! lab Proxmox API for the seed's datacenter (the hosts of `profiles/homelab.yaml`,
//! built in), so discovery runs the real client over HTTPS on loopback and no real
//! host is ever contacted. Read-only: nothing is saved.

use secrecy::ExposeSecret;

use super::Fabric;
use super::proxmox::{LabProxmox, LabProxmoxConfig, LabProxmoxHandle};
use crate::proxmox::discovery::LiveConnect;
use crate::wizard::{Access, Connect, Discovery, DiscoveryError};

/// The datacenter the lab simulates when there is no profile yet.
const SEED_PROFILE: &str = include_str!("../../profiles/homelab.yaml");

/// A running lab Proxmox and a connector to it; dropping it stops the server.
pub struct LabDiscovery {
    // Declared before the runtime: the handle's server task is aborted first.
    pve: LabProxmoxHandle,
    live: LiveConnect,
    /// Serves the lab Proxmox while the wizard blocks on prompts.
    _rt: tokio::runtime::Runtime,
}

impl LabDiscovery {
    pub fn start() -> Result<Self, DiscoveryError> {
        let err = |message: String| DiscoveryError::Remote {
            endpoint: "the lab".into(),
            message,
            fix: "this is a bug in the lab; plan offline with --discovery-file FILE meanwhile"
                .into(),
        };
        let seed = crate::profile::parse(
            SEED_PROFILE,
            std::path::Path::new("profiles/homelab.yaml (built in)"),
        )
        .map_err(|e| err(e.to_string()))?;
        crate::tls::install_provider();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| err(e.to_string()))?;
        let fabric = Fabric::new();
        let pve = rt
            .block_on(LabProxmox::start(
                &fabric,
                LabProxmoxConfig::default(),
                &seed.proxmox,
            ))
            .map_err(|e| err(format!("{e:#}")))?;
        let live = LiveConnect::new(fabric.addresses.clone(), false);
        Ok(Self { pve, live, _rt: rt })
    }

    /// The lab Proxmox's (simulated) endpoint, as a profile writes it.
    pub fn endpoint(&self) -> String {
        self.pve.endpoint_url()
    }
}

impl Connect for LabDiscovery {
    fn connect(&self, access: &Access) -> Result<Box<dyn Discovery + '_>, DiscoveryError> {
        // The lab Proxmox accepts only the token it generated, which nobody can type,
        // and its certificate is self-signed: both come from the lab. The endpoint
        // stays the typed one; a wrong one fails closed in the lab's address book.
        let token = self.pve.api_token();
        let secret = token
            .expose_secret()
            .split_once('=')
            .map(|(_, s)| s.to_owned())
            .unwrap_or_default();
        let lab = Access {
            endpoint: access.endpoint.clone(),
            token_id: self.pve.token_id.clone(),
            secret: secret.into(),
            fingerprint: Some(self.pve.fingerprint.clone()),
        };
        self.live.connect(&lab).map_err(|e| match e {
            DiscoveryError::Remote {
                endpoint, message, ..
            } => DiscoveryError::Remote {
                endpoint,
                message,
                fix: format!(
                    "in the lab the Proxmox API is {} (the seed's datacenter)",
                    self.endpoint()
                ),
            },
            other => other,
        })
    }
}

//! Where a run acts: real Proxmox/Talos/Kubernetes, or the lab's simulations on
//! loopback. Everything after this point is the same code for both.

use std::path::Path;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::addons::ManifestSource;
use crate::kube::Poll;
use crate::lab::{Datacenter, LabOptions, LabSaver};
use crate::net::AddressBook;
use crate::profile::Profile;
use crate::proxmox::factory::Factory;
use crate::proxmox::settings::{self, Overrides};
use crate::proxmox::{Client, ClientConfig, Credentials, PollPolicy, PveError, RetryPolicy, Trust};
use crate::talos::api::{Stages, Timeouts};

/// Longest pause between two readiness checks of a Talos node or a Kubernetes object.
/// Each check is one cheap call; a wait ends at most this long after what it waits
/// for (the lab scales it with its speed, like every latency).
const TALOS_POLL_MAX: Duration = Duration::from_millis(250);
const KUBE_POLL_MAX: Duration = Duration::from_millis(250);
/// A drain's bound and its retry cadence while a PodDisruptionBudget refuses
/// (talosctl 1.13 `--drain-timeout` 5 min; the node's own drain retries every 5 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
const DRAIN_RETRY_MAX: Duration = Duration::from_secs(5);
/// Longest pause before applying again while an admission webhook is not serving yet:
/// one small request a try, and every pause past the moment it serves adds to `up`.
const WEBHOOK_RETRY_MAX: Duration = Duration::from_millis(250);

pub struct Env {
    pub book: AddressBook,
    pub pve: Client,
    pub factory: Factory,
    pub talos: Stages,
    pub kube_poll: Poll,
    /// Cordoned node → every evictable pod gone (`kube::drain`).
    pub drain: Poll,
    pub webhook_retry: Poll,
    pub manifests: ManifestSource,
    /// The lab saves its simulated hosts at every recorded step, so a killed run
    /// leaves them as far along as the state file says (real hosts need nothing).
    pub lab: Option<LabSaver>,
}

impl Env {
    /// Called after every step recorded in the state file.
    pub fn checkpoint(&self) {
        checkpoint(self.lab.as_ref());
    }
}

/// `Env::checkpoint` for a caller holding only the saver (off the async threads).
pub(super) fn checkpoint(lab: Option<&LabSaver>) {
    if let Some(saver) = lab
        && let Err(e) = saver.save()
    {
        tracing::warn!(error = %e, "lab: could not save the simulated datacenter");
    }
}

impl Env {
    /// Real hosts: credentials and trust from flags, environment and profile.
    pub fn real(
        profile: &Profile,
        profile_dir: Option<&Path>,
        o: &Overrides,
        manifests: ManifestSource,
    ) -> Result<Self, PveError> {
        let book = AddressBook::direct();
        let env = |k: &str| std::env::var(k).ok();
        let cfg = settings::client_config(profile, profile_dir, o, &env)?;
        let factory = Factory::new(
            &settings::factory_url(profile, &env),
            &settings::factory_trust(&env)?,
            &book,
        )?;
        Ok(Self {
            pve: Client::new(cfg, &book)?,
            factory,
            talos: Stages::new(
                book.clone(),
                Timeouts {
                    poll_max: TALOS_POLL_MAX,
                    ..Timeouts::default()
                },
            ),
            kube_poll: Poll {
                max: KUBE_POLL_MAX,
                ..Poll::standard(Duration::from_secs(900))
            },
            drain: Poll {
                max: DRAIN_RETRY_MAX,
                ..Poll::standard(DRAIN_TIMEOUT)
            },
            webhook_retry: Poll {
                min: Duration::from_millis(250),
                max: WEBHOOK_RETRY_MAX,
                timeout: Duration::from_secs(180),
            },
            manifests,
            book,
            lab: None,
        })
    }

    /// The lab: clients pin the lab's certificates; deadlines are the real ones
    /// scaled by the lab's speed (never below a few seconds), polling is fine-grained.
    pub fn lab(dc: &Datacenter, profile: &Profile, o: &LabOptions) -> Result<Self, PveError> {
        let book = dc.fabric.addresses.clone();
        let token = dc.proxmox.api_token();
        let creds = Credentials::parse_token(token.expose_secret(), "the lab")?;
        let trust = Trust::Fingerprint(dc.proxmox.fingerprint.clone());
        let mut cfg = ClientConfig::new(&profile.proxmox.endpoint, creds, trust.clone());
        let fine = Duration::from_millis(10);
        cfg.retry = RetryPolicy {
            attempts: 6,
            base: fine,
            cap: o.scaled(Duration::from_secs(8)).max(fine),
        };
        // Task polls follow the real cadence scaled, like the Talos polls below: a
        // floor of 10 ms is 0.2 s real at 20x, and its 1.5x backoff would find a 2 s
        // start 0.6 s late where the real 250 ms cadence finds it on time.
        let real = PollPolicy::default();
        cfg.poll = PollPolicy {
            first: o.scaled(real.first).max(Duration::from_millis(2)),
            max: o.scaled(real.max).max(fine),
        };
        let scale = |real: Duration| o.scaled(real).max(Duration::from_secs(5));
        // Talos waits poll at the real cadence scaled like every latency (a floor of
        // 10 ms would be 1 s real at 100x, four times the real cadence, and would
        // add its lateness to every node of a rolling upgrade).
        let talos_poll = o.scaled(TALOS_POLL_MAX).max(Duration::from_millis(2));
        let d = Timeouts::default();
        let timeouts = Timeouts {
            poll_min: fine.min(talos_poll),
            poll_max: talos_poll,
            install: scale(d.install),
            bootstrap: scale(d.bootstrap),
            etcd_members: scale(d.etcd_members),
            kubeconfig: scale(d.kubeconfig),
            snapshot: scale(d.snapshot),
            recover: scale(d.recover),
            limits: d.limits,
        };
        Ok(Self {
            pve: Client::new(cfg, &book)?,
            factory: Factory::new(&dc.proxmox.factory_url(), &trust, &book)?,
            talos: Stages::new(book.clone(), timeouts),
            kube_poll: Poll {
                min: fine,
                max: o.scaled(KUBE_POLL_MAX).max(fine),
                timeout: scale(Duration::from_secs(900)),
            },
            drain: Poll {
                min: fine,
                max: o.scaled(DRAIN_RETRY_MAX).max(fine),
                timeout: scale(DRAIN_TIMEOUT),
            },
            webhook_retry: Poll {
                min: fine,
                max: o.scaled(WEBHOOK_RETRY_MAX).max(fine),
                timeout: scale(Duration::from_secs(180)),
            },
            manifests: ManifestSource::Embedded,
            book,
            lab: Some(dc.saver()),
        })
    }
}

//! A lab node's OS upgrade and reboot APIs, as siderolabs/talos v1.13.9 (and
//! v1.12.11 for the legacy call) behave (talos-day2.md §1, §7.1-7.4):
//! - legacy `MachineService/Upgrade` validates the installer image and, on a control
//!   plane, etcd inside the call (`v1alpha1_server.go` @v1.13.9 L508-622), answers
//!   `Upgrade request received` with an actor id, then installs and reboots;
//! - `ImageService/Pull` and `LifecycleService/Upgrade` exist on 1.13 nodes only
//!   (a 1.12 node has no such service); they refuse `nodes` fan-out
//!   (`apid/pkg/director/director.go` @v1.13.9 L86-97), and the upgrade writes the
//!   new release to disk only: no etcd check, no drain, no reboot
//!   (`internal/app/lifecycle/lifecycle.go` @v1.13.9 L145-232);
//! - `Reboot` answers, then the node goes down and boots what was staged;
//! - `Read` of the boot id, which changes with every boot.
//!
//! The installer's host-version rule (`compatibility/talos_version.go`) decides
//! whether an install succeeds; a failed one leaves the node on its old release.

use std::future::ready;

use tonic::body::Body;
use tonic::codegen::http;
use tonic::{Request, Response, Status};

use super::server::{ADMIN, Ctx, Frames, chunks, respond, server_stream, stream, unary};
use super::{Phase, Shared, lock};
use crate::lab::LabEvent;
use crate::talos::api::upgrade::*;
use crate::talos::compat::{self, Version};

const OPERATOR: &[&str] = &["os:admin", "os:operator"];

/// `Some` when `path` is one of these methods.
pub(super) async fn dispatch(
    ctx: Ctx,
    path: &str,
    req: http::Request<hyper::body::Incoming>,
) -> Option<http::Response<Body>> {
    let c = ctx.clone();
    Some(match path {
        "/machine.MachineService/Upgrade" => {
            unary(req, move |r: Request<UpgradeRequest>| {
                ready(c.legacy_upgrade(&r.into_inner()))
            })
            .await
        }
        "/machine.MachineService/Reboot" => {
            unary(req, move |_: Request<RebootRequest>| ready(c.reboot())).await
        }
        "/machine.MachineService/Read" => {
            server_stream(req, move |r: Request<ReadRequest>| {
                ready(c.read(&r.into_inner().path))
            })
            .await
        }
        "/machine.ImageService/Pull" => {
            server_stream(req, move |r: Request<ImageServicePullRequest>| {
                let fan_out = fan_out(r.metadata());
                ready(c.pull(fan_out, &r.into_inner().image_ref))
            })
            .await
        }
        "/machine.LifecycleService/Upgrade" => {
            server_stream(req, move |r: Request<LifecycleServiceUpgradeRequest>| {
                let c = c.clone();
                let fan_out = fan_out(r.metadata());
                async move { c.lifecycle_upgrade(fan_out, r.into_inner()).await }
            })
            .await
        }
        _ => return None,
    })
}

fn fan_out(md: &tonic::metadata::MetadataMap) -> bool {
    md.get_all("nodes").iter().next().is_some()
}

/// The release an installer image installs: the tag of an `…installer…:vX.Y.Z` reference.
fn installer_release(image: &str) -> Result<Version, String> {
    let (repo, _) = image
        .rsplit_once(':')
        .ok_or("the reference has no tag".to_owned())?;
    if !repo.contains("installer") {
        return Err(format!("{repo} is not an installer image"));
    }
    compat::image_version(image).ok_or_else(|| "the tag is not a Talos release".into())
}

/// Why the installer run on `hostname` ends non-zero, if it does.
fn installer_failure(
    shared: &Shared,
    hostname: &str,
    host: &str,
    target: Version,
) -> Option<String> {
    if let Some(h) = Version::parse(host)
        && let Err(e) = compat::check_installer(h, target)
    {
        return Some(e);
    }
    let mut f = lock(&shared.faults_left);
    let i = f.upgrade_fails.iter().position(|n| n == hostname)?;
    f.upgrade_fails.remove(i);
    Some("lab: injected installer failure (upgrade-fails)".into())
}

impl Ctx {
    /// (hostname, running release, control plane, installed) of this node.
    fn me(&self) -> Result<(String, String, bool, bool), Status> {
        let nodes = lock(&self.shared.nodes);
        let n = nodes
            .get(&self.vmid)
            .ok_or_else(|| Status::unavailable("node gone"))?;
        Ok((
            n.hostname(),
            super::running_version(&self.shared, n),
            n.is_control_plane(),
            n.state.config.is_some(),
        ))
    }

    /// A 1.12 node does not register the 1.13 services (grpc-go's own answer).
    fn needs_113(&self, service: &str, release: &str) -> Result<(), Status> {
        match Version::parse(release) {
            Some(v) if v < Version::new(1, 13, 0) => Err(Status::unimplemented(format!(
                "unknown service machine.{service}"
            ))),
            _ => Ok(()),
        }
    }

    /// `ValidateForUpgrade` (`internal/pkg/etcd/etcd.go` @v1.13.9 L95-121).
    fn etcd_precheck(&self) -> Result<(), String> {
        let nodes = lock(&self.shared.nodes);
        let members = lock(&self.shared.members);
        if members.len() == 2 {
            return Err(
                "etcd member count(2) is insufficient to maintain quorum if upgrade commences"
                    .into(),
            );
        }
        for m in members.iter() {
            let node = nodes.values().find(|n| n.hostname() == m.hostname);
            // `validateMemberHealth` dials the member: one whose etcd has not started
            // again since its boot fails it.
            match node {
                Some(n)
                    if n.state.phase == Phase::Running
                        && n.state.etcd_member
                        && n.state.etcd_ready => {}
                other => {
                    let why = other.map_or("no such node".to_owned(), |n| {
                        if n.state.phase == Phase::Running {
                            "its etcd is not running".to_owned()
                        } else {
                            format!("node is {:?}", n.state.phase)
                        }
                    });
                    return Err(format!(
                        "etcd member {:016x} is not healthy; all members must be healthy to perform an upgrade: {why}",
                        m.id
                    ));
                }
            }
        }
        Ok(())
    }

    fn legacy_upgrade(&self, q: &UpgradeRequest) -> Result<Response<UpgradeResponse>, Status> {
        self.allow("Upgrade", ADMIN)?;
        let (hostname, release, cp, installed) = self.me()?;
        if !installed && release.starts_with("v1.13.") {
            return Err(Status::failed_precondition("Talos is not installed"));
        }
        let target = installer_release(&q.image).map_err(|e| {
            Status::unknown(format!(
                "error validating installer image {:?}: {e}",
                q.image
            ))
        })?;
        if cp && !q.force && !q.preserve {
            self.etcd_precheck()
                .map_err(|e| Status::unknown(format!("error validating etcd for upgrade: {e}")))?;
        }
        let failure = installer_failure(&self.shared, &hostname, &release, target);
        let generation = {
            let mut nodes = lock(&self.shared.nodes);
            let n = nodes
                .get_mut(&self.vmid)
                .ok_or_else(|| Status::unavailable("node gone"))?;
            if let Some(e) = &failure {
                tracing::info!(node = %hostname, error = %e, "lab talos: upgrade sequence failed");
            } else {
                n.state.staged_version = Some(format!("v{target}"));
            }
            // The upgrade sequence: the node drains itself, is down while it
            // installs, then reboots (into the new release, or the old one when the
            // installer failed).
            super::set_phase(n, Phase::Installing)
        };
        self.shared.fabric.emit(LabEvent::NodeGoingDown {
            vmid: self.vmid,
            drains: true,
        });
        super::after(
            &self.shared,
            self.vmid,
            generation,
            self.shared.cfg.install,
            super::boot,
        );
        respond(UpgradeResponse {
            messages: vec![Upgrade {
                metadata: None,
                ack: "Upgrade request received".into(),
                actor_id: self.actor("upgrade"),
            }],
        })
    }

    fn actor(&self, what: &str) -> String {
        let boots = lock(&self.shared.nodes)
            .get(&self.vmid)
            .map_or(0, |n| n.state.boots);
        format!("lab-{what}-{}-{boots}", self.vmid)
    }

    fn pull(
        &self,
        fan_out: bool,
        image: &str,
    ) -> Result<Response<Frames<ImageServicePullResponse>>, Status> {
        self.allow("ImageService.Pull", OPERATOR)?;
        let (_, release, _, _) = self.me()?;
        self.needs_113("ImageService", &release)?;
        if fan_out {
            return Err(Status::invalid_argument(
                "one-2-many proxying is not supported for method /machine.ImageService/Pull",
            ));
        }
        installer_release(image)
            .map_err(|e| Status::not_found(format!("failed to pull image {image:?}: {e}")))?;
        if let Some(n) = lock(&self.shared.nodes).get_mut(&self.vmid)
            && !n.state.pulled.iter().any(|p| p == image)
        {
            n.state.pulled.push(image.to_owned());
        }
        let frame = |r| Ok(ImageServicePullResponse { response: Some(r) });
        Ok(Response::new(Box::pin(tokio_stream::iter(vec![
            frame(PullResponse::PullProgress(ImageServicePullProgress {
                layer_id: "sha256:lab".into(),
                progress: Some(ImageServicePullLayerProgress {
                    status: 3,
                    ..Default::default()
                }),
            })),
            frame(PullResponse::Name(image.to_owned())),
        ]))))
    }

    async fn lifecycle_upgrade(
        &self,
        fan_out: bool,
        q: LifecycleServiceUpgradeRequest,
    ) -> Result<Response<Frames<LifecycleServiceUpgradeResponse>>, Status> {
        self.allow("LifecycleService.Upgrade", ADMIN)?;
        let (hostname, release, _, installed) = self.me()?;
        self.needs_113("LifecycleService", &release)?;
        if fan_out {
            return Err(Status::invalid_argument(
                "one-2-many proxying is not supported for method /machine.LifecycleService/Upgrade",
            ));
        }
        let image = q.source.map(|s| s.image_name).unwrap_or_default();
        {
            let mut nodes = lock(&self.shared.nodes);
            let n = nodes
                .get_mut(&self.vmid)
                .ok_or_else(|| Status::unavailable("node gone"))?;
            if n.state.installing_upgrade {
                return Err(Status::failed_precondition(
                    "another installation/upgrade is already in progress",
                ));
            }
            if !installed {
                return Err(Status::failed_precondition("machine is not installed"));
            }
            if image.is_empty() {
                return Err(Status::invalid_argument("installer image name is required"));
            }
            n.state.installing_upgrade = true;
        }
        // The installer runs while the call streams; the node keeps running.
        tokio::time::sleep(self.shared.cfg.install).await;
        let pulled = lock(&self.shared.nodes)
            .get(&self.vmid)
            .is_some_and(|n| n.state.pulled.contains(&image));
        let outcome = if !pulled {
            Err(format!(
                "image {image:?} not found in the system containerd"
            ))
        } else {
            installer_release(&image).and_then(|target| {
                installer_failure(&self.shared, &hostname, &release, target).map_or(Ok(target), Err)
            })
        };
        let mut frames = vec![format!(
            "lab installer: upgrading {hostname} from {release}"
        )];
        let code = {
            let mut nodes = lock(&self.shared.nodes);
            let n = nodes
                .get_mut(&self.vmid)
                .ok_or_else(|| Status::unavailable("node gone"))?;
            n.state.installing_upgrade = false;
            match outcome {
                Ok(target) => {
                    n.state.staged_version = Some(format!("v{target}"));
                    frames.push(format!("installed v{target}; it boots at the next reboot"));
                    0
                }
                Err(e) => {
                    frames.push(e);
                    1
                }
            }
        };
        let progress = |r| {
            Ok(LifecycleServiceUpgradeResponse {
                progress: Some(LifecycleServiceInstallProgress { response: Some(r) }),
            })
        };
        let mut out: Vec<_> = frames
            .into_iter()
            .map(|m| progress(InstallProgress::Message(m)))
            .collect();
        out.push(progress(InstallProgress::ExitCode(code)));
        Ok(Response::new(Box::pin(tokio_stream::iter(out))))
    }

    fn reboot(&self) -> Result<Response<RebootResponse>, Status> {
        self.allow("Reboot", OPERATOR)?;
        let actor_id = self.actor("reboot");
        // Answer first, as the node does; the connection drops as it goes down.
        // A reboot drains nothing (talosctl drains, if asked, before it).
        self.shared.fabric.emit(LabEvent::NodeGoingDown {
            vmid: self.vmid,
            drains: false,
        });
        super::boot(&self.shared, self.vmid);
        respond(RebootResponse {
            messages: vec![Reboot {
                metadata: None,
                actor_id,
            }],
        })
    }

    fn read(
        &self,
        path: &str,
    ) -> Result<Response<Frames<crate::talos::api::messages::Data>>, Status> {
        self.allow("Read", ADMIN)?;
        if path != BOOT_ID_PATH {
            return Err(Status::not_found(format!(
                "lab Talos serves only {BOOT_ID_PATH}, not {path}"
            )));
        }
        let boots = lock(&self.shared.nodes)
            .get(&self.vmid)
            .map_or(0, |n| n.state.boots);
        let id = format!("{}\n", super::boot_id(self.vmid, boots));
        stream(chunks(id.as_bytes()))
    }
}

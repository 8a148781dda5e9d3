//! The Talos OS upgrade and reboot APIs (talos-day2.md §1): legacy
//! `MachineService/Upgrade` (1.12 nodes; the node checks etcd, drains, installs and
//! reboots), the 1.13 `ImageService/Pull` + `LifecycleService/Upgrade` (writes the
//! new image only: no etcd check, no drain, no reboot), `MachineService/Reboot`, and
//! `Read` of the boot id that proves a reboot happened. Messages are hand-written
//! from `api/machine/{machine,lifecycle,image}.proto` and `api/common/common.proto`
//! of siderolabs/talos v1.13.9 (field numbers as there).

use tonic::codegen::http::uri::PathAndQuery;
use tonic_prost::ProstCodec;

use super::client::{TalosClient, check, classify};
use super::error::TalosError;
use super::messages::{Duration, Metadata, NodeMessages};

/// `machine.UpgradeRequest` (machine.proto @v1.13.9 L355-375).
#[derive(Clone, PartialEq, prost::Message)]
pub struct UpgradeRequest {
    #[prost(string, tag = "1")]
    pub image: String,
    /// Skips the etcd pre-checks (disk wipe on upgrade no longer exists).
    #[prost(bool, tag = "2")]
    pub preserve: bool,
    #[prost(bool, tag = "3")]
    pub stage: bool,
    #[prost(bool, tag = "4")]
    pub force: bool,
    /// DEFAULT = 0 (kexec), POWERCYCLE = 1.
    #[prost(int32, tag = "5")]
    pub reboot_mode: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct UpgradeResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<Upgrade>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Upgrade {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(string, tag = "2")]
    pub ack: String,
    #[prost(string, tag = "3")]
    pub actor_id: String,
}

/// `common.ContainerdInstance`: driver CONTAINERD = 0, CRI = 1; namespace
/// NS_UNKNOWN = 0, NS_SYSTEM = 1, NS_CRI = 2.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct ContainerdInstance {
    #[prost(int32, tag = "1")]
    pub driver: i32,
    #[prost(int32, tag = "2")]
    pub namespace: i32,
}

impl ContainerdInstance {
    /// talosctl's default `--namespace system`: driver CRI, namespace NS_SYSTEM.
    pub const SYSTEM: ContainerdInstance = ContainerdInstance {
        driver: 1,
        namespace: 1,
    };
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct InstallArtifactsSource {
    #[prost(string, tag = "1")]
    pub image_name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LifecycleServiceUpgradeRequest {
    #[prost(message, optional, tag = "1")]
    pub containerd: Option<ContainerdInstance>,
    #[prost(message, optional, tag = "2")]
    pub source: Option<InstallArtifactsSource>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LifecycleServiceUpgradeResponse {
    #[prost(message, optional, tag = "1")]
    pub progress: Option<LifecycleServiceInstallProgress>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct LifecycleServiceInstallProgress {
    #[prost(oneof = "InstallProgress", tags = "1, 2")]
    pub response: Option<InstallProgress>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum InstallProgress {
    #[prost(string, tag = "1")]
    Message(String),
    /// The last frame; non-zero means the install failed (the RPC itself stays OK).
    #[prost(int32, tag = "2")]
    ExitCode(i32),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageServicePullRequest {
    #[prost(message, optional, tag = "1")]
    pub containerd: Option<ContainerdInstance>,
    /// Number 2 is unused upstream.
    #[prost(string, tag = "3")]
    pub image_ref: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageServicePullResponse {
    #[prost(oneof = "PullResponse", tags = "1, 2")]
    pub response: Option<PullResponse>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum PullResponse {
    /// The pulled image's name, once, when done.
    #[prost(string, tag = "1")]
    Name(String),
    #[prost(message, tag = "2")]
    PullProgress(ImageServicePullProgress),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageServicePullProgress {
    #[prost(string, tag = "1")]
    pub layer_id: String,
    #[prost(message, optional, tag = "2")]
    pub progress: Option<ImageServicePullLayerProgress>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageServicePullLayerProgress {
    /// DOWNLOADING = 0 … ALREADY_EXISTS = 4.
    #[prost(int32, tag = "1")]
    pub status: i32,
    #[prost(message, optional, tag = "2")]
    pub elapsed: Option<Duration>,
    #[prost(int64, tag = "3")]
    pub offset: i64,
    #[prost(int64, tag = "4")]
    pub total: i64,
}

/// `machine.RebootRequest`: mode DEFAULT = 0, POWERCYCLE = 1, FORCE = 2.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct RebootRequest {
    #[prost(int32, tag = "1")]
    pub mode: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct RebootResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<Reboot>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reboot {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(string, tag = "2")]
    pub actor_id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadRequest {
    #[prost(string, tag = "1")]
    pub path: String,
}

impl NodeMessages for UpgradeResponse {
    fn metadata(&self) -> Vec<Option<&Metadata>> {
        self.messages.iter().map(|m| m.metadata.as_ref()).collect()
    }
}

impl NodeMessages for RebootResponse {
    fn metadata(&self) -> Vec<Option<&Metadata>> {
        self.messages.iter().map(|m| m.metadata.as_ref()).collect()
    }
}

/// Where the kernel keeps the boot id; a new value means the node rebooted.
pub const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

impl TalosClient {
    async fn stream_messages<Q, R>(
        &mut self,
        rpc: &'static str,
        path: &'static str,
        q: Q,
    ) -> Result<Vec<R>, TalosError>
    where
        Q: prost::Message + Send + Sync + 'static,
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let req = self.request(q);
        self.ready(rpc).await?;
        let target = self.target().clone();
        let mut stream = self
            .grpc
            .server_streaming(
                req,
                PathAndQuery::from_static(path),
                ProstCodec::<Q, R>::default(),
            )
            .await
            .map_err(|s| classify(&target, rpc, s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = stream
            .message()
            .await
            .map_err(|s| classify(&target, rpc, s))?
        {
            out.push(m);
        }
        Ok(out)
    }

    /// Legacy `MachineService/Upgrade`: the node validates the image (and, on a
    /// control plane, etcd) inside the call, then upgrades and reboots in the
    /// background. Returns the actor id of that run.
    pub async fn legacy_upgrade(&mut self, image: &str) -> Result<String, TalosError> {
        let r: UpgradeResponse = self
            .unary(
                "Upgrade",
                "/machine.MachineService/Upgrade",
                UpgradeRequest {
                    image: image.to_owned(),
                    ..Default::default()
                },
            )
            .await?;
        check(self.target(), "Upgrade", &r)?;
        Ok(r.messages
            .into_iter()
            .next()
            .map(|m| m.actor_id)
            .unwrap_or_default())
    }

    /// `ImageService/Pull` into the system containerd; the pulled image's name.
    pub async fn image_pull(&mut self, image: &str) -> Result<String, TalosError> {
        let frames: Vec<ImageServicePullResponse> = self
            .stream_messages(
                "ImageService.Pull",
                "/machine.ImageService/Pull",
                ImageServicePullRequest {
                    containerd: Some(ContainerdInstance::SYSTEM),
                    image_ref: image.to_owned(),
                },
            )
            .await?;
        frames
            .into_iter()
            .find_map(|f| match f.response {
                Some(PullResponse::Name(n)) => Some(n),
                _ => None,
            })
            .ok_or_else(|| TalosError::BadResponse {
                node: self.target().node.clone(),
                rpc: "ImageService.Pull",
                detail: "the stream ended without the pulled image's name".into(),
            })
    }

    /// `LifecycleService/Upgrade` from an image already pulled into the system
    /// containerd. Installs only; a non-zero exit code is a failure with the
    /// installer's last output.
    pub async fn lifecycle_upgrade(&mut self, image_name: &str) -> Result<(), TalosError> {
        let rpc = "LifecycleService.Upgrade";
        let frames: Vec<LifecycleServiceUpgradeResponse> = self
            .stream_messages(
                rpc,
                "/machine.LifecycleService/Upgrade",
                LifecycleServiceUpgradeRequest {
                    containerd: Some(ContainerdInstance::SYSTEM),
                    source: Some(InstallArtifactsSource {
                        image_name: image_name.to_owned(),
                    }),
                },
            )
            .await?;
        let mut output = Vec::new();
        for f in frames {
            match f.progress.and_then(|p| p.response) {
                Some(InstallProgress::Message(m)) => output.push(m),
                Some(InstallProgress::ExitCode(0)) => return Ok(()),
                Some(InstallProgress::ExitCode(code)) => {
                    return Err(TalosError::NodeError {
                        node: self.target().node.clone(),
                        rpc,
                        message: format!(
                            "installer exited with code {code}: {}",
                            output.last().map(String::as_str).unwrap_or("no output")
                        ),
                    });
                }
                None => {}
            }
        }
        Err(TalosError::BadResponse {
            node: self.target().node.clone(),
            rpc,
            detail: "the stream ended without an exit code".into(),
        })
    }

    /// `MachineService/Reboot` (default mode); the node answers before it goes down.
    pub async fn reboot(&mut self) -> Result<String, TalosError> {
        let r: RebootResponse = self
            .unary(
                "Reboot",
                "/machine.MachineService/Reboot",
                RebootRequest { mode: 0 },
            )
            .await?;
        check(self.target(), "Reboot", &r)?;
        Ok(r.messages
            .into_iter()
            .next()
            .map(|m| m.actor_id)
            .unwrap_or_default())
    }

    /// The node's current boot id (`MachineService/Read` of [`BOOT_ID_PATH`]).
    pub async fn boot_id(&mut self) -> Result<String, TalosError> {
        let bytes = self
            .stream_bytes(
                "Read",
                "/machine.MachineService/Read",
                ReadRequest {
                    path: BOOT_ID_PATH.into(),
                },
            )
            .await?;
        Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_the_protos() {
        // image_ref is field 3 (tag 0x1a), containerd field 1 (tag 0x0a).
        let b = ImageServicePullRequest {
            containerd: Some(ContainerdInstance::SYSTEM),
            image_ref: "x".into(),
        }
        .encode_to_vec();
        assert_eq!(b, [0x0a, 0x04, 0x08, 0x01, 0x10, 0x01, 0x1a, 0x01, b'x']);
        // exit_code is field 2 of the progress oneof, inside progress (field 1).
        let r = LifecycleServiceUpgradeResponse {
            progress: Some(LifecycleServiceInstallProgress {
                response: Some(InstallProgress::ExitCode(3)),
            }),
        }
        .encode_to_vec();
        assert_eq!(r, [0x0a, 0x02, 0x10, 0x03]);
        let u = UpgradeRequest {
            image: "i".into(),
            reboot_mode: 1,
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(u, [0x0a, 0x01, b'i', 0x28, 0x01]);
    }
}

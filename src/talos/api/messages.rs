//! Talos API messages, written by hand with prost derives from the field table in
//! the reference (talos.md §10.4): packages `machine`, `common`, `cluster`, plus the
//! few `google.*` well-known types they use. Only the messages talos-pve calls or
//! serves exist here. Messages that carry machine configs or key material (configs,
//! kubeconfig and snapshot chunks) skip prost's derived `Debug` and redact instead.

use std::fmt;

/// `common.Metadata`: which node produced a message, and its per-node error.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    #[prost(string, tag = "1")]
    pub hostname: String,
    #[prost(string, tag = "2")]
    pub error: String,
    #[prost(message, optional, tag = "3")]
    pub status: Option<RpcStatus>,
}

/// `google.rpc.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<Any>,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.protobuf.Duration` (and the identical wire shape of `Timestamp`).
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

pub type Timestamp = Duration;

/// `google.protobuf.Empty`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct Empty {}

/// `common.Data`: one chunk of a byte stream (snapshot, kubeconfig, recover upload).
#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct Data {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(bytes = "vec", tag = "2")]
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Data")
            .field("metadata", &self.metadata)
            .field("bytes", &format_args!("<{} bytes>", self.bytes.len()))
            .finish()
    }
}

/// `machine.ApplyConfigurationRequest.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ApplyMode {
    Reboot = 0,
    Auto = 1,
    NoReboot = 2,
    Staged = 3,
    Try = 4,
}

#[derive(Clone, PartialEq, prost::Message)]
#[prost(skip_debug)]
pub struct ApplyConfigurationRequest {
    /// The complete machine config (all documents). Holds CA keys: never logged.
    #[prost(bytes = "vec", tag = "1")]
    pub data: Vec<u8>,
    #[prost(enumeration = "ApplyMode", tag = "4")]
    pub mode: i32,
    #[prost(bool, tag = "5")]
    pub dry_run: bool,
    #[prost(message, optional, tag = "6")]
    pub try_mode_timeout: Option<Duration>,
}

impl fmt::Debug for ApplyConfigurationRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplyConfigurationRequest")
            .field(
                "data",
                &format_args!("<{} bytes, redacted>", self.data.len()),
            )
            .field("mode", &ApplyMode::try_from(self.mode))
            .field("dry_run", &self.dry_run)
            .field("try_mode_timeout", &self.try_mode_timeout)
            .finish()
    }
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ApplyConfigurationResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<ApplyConfiguration>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ApplyConfiguration {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(string, repeated, tag = "2")]
    pub warnings: Vec<String>,
    #[prost(enumeration = "ApplyMode", tag = "3")]
    pub mode: i32,
    #[prost(string, tag = "4")]
    pub mode_details: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct BootstrapRequest {
    #[prost(bool, tag = "1")]
    pub recover_etcd: bool,
    #[prost(bool, tag = "2")]
    pub recover_skip_hash_check: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct BootstrapResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<Bootstrap>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Bootstrap {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<Version>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Version {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(message, optional, tag = "2")]
    pub version: Option<VersionInfo>,
    #[prost(message, optional, tag = "3")]
    pub platform: Option<PlatformInfo>,
    #[prost(message, optional, tag = "4")]
    pub features: Option<FeaturesInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionInfo {
    #[prost(string, tag = "1")]
    pub tag: String,
    #[prost(string, tag = "2")]
    pub sha: String,
    #[prost(string, tag = "3")]
    pub built: String,
    #[prost(string, tag = "4")]
    pub go_version: String,
    #[prost(string, tag = "5")]
    pub os: String,
    #[prost(string, tag = "6")]
    pub arch: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct PlatformInfo {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub mode: String,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct FeaturesInfo {
    #[prost(bool, tag = "1")]
    pub rbac: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceListResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<ServiceList>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceList {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(message, repeated, tag = "2")]
    pub services: Vec<ServiceInfo>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceInfo {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub state: String,
    #[prost(message, optional, tag = "3")]
    pub events: Option<ServiceEvents>,
    #[prost(message, optional, tag = "4")]
    pub health: Option<ServiceHealth>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceEvents {
    #[prost(message, repeated, tag = "1")]
    pub events: Vec<ServiceEvent>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceEvent {
    #[prost(string, tag = "1")]
    pub msg: String,
    #[prost(string, tag = "2")]
    pub state: String,
    #[prost(message, optional, tag = "3")]
    pub ts: Option<Timestamp>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceHealth {
    #[prost(bool, tag = "1")]
    pub unknown: bool,
    #[prost(bool, tag = "2")]
    pub healthy: bool,
    #[prost(string, tag = "3")]
    pub last_message: String,
    #[prost(message, optional, tag = "4")]
    pub last_change: Option<Timestamp>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct EtcdSnapshotRequest {}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdRecoverResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<EtcdRecover>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdRecover {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct EtcdMemberListRequest {
    #[prost(bool, tag = "1")]
    pub query_local: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdMemberListResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<EtcdMembers>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdMembers {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(string, repeated, tag = "2")]
    pub legacy_members: Vec<String>,
    #[prost(message, repeated, tag = "3")]
    pub members: Vec<EtcdMember>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdMember {
    #[prost(uint64, tag = "2")]
    pub id: u64,
    #[prost(string, tag = "3")]
    pub hostname: String,
    #[prost(string, repeated, tag = "4")]
    pub peer_urls: Vec<String>,
    #[prost(string, repeated, tag = "5")]
    pub client_urls: Vec<String>,
    #[prost(bool, tag = "6")]
    pub is_learner: bool,
}

#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct EtcdRemoveMemberByIdRequest {
    #[prost(uint64, tag = "1")]
    pub member_id: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdRemoveMemberByIdResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<EtcdRemoveMemberById>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EtcdRemoveMemberById {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
}

/// `machine.ResetRequest.WipeMode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum WipeMode {
    All = 0,
    SystemDisk = 1,
    UserDisks = 2,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResetPartitionSpec {
    #[prost(string, tag = "1")]
    pub label: String,
    #[prost(bool, tag = "2")]
    pub wipe: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResetRequest {
    #[prost(bool, tag = "1")]
    pub graceful: bool,
    #[prost(bool, tag = "2")]
    pub reboot: bool,
    #[prost(message, repeated, tag = "3")]
    pub system_partitions_to_wipe: Vec<ResetPartitionSpec>,
    #[prost(string, repeated, tag = "4")]
    pub user_disks_to_wipe: Vec<String>,
    #[prost(enumeration = "WipeMode", tag = "5")]
    pub mode: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ResetResponse {
    #[prost(message, repeated, tag = "1")]
    pub messages: Vec<Reset>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Reset {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    #[prost(string, tag = "2")]
    pub actor_id: String,
}

/// Every response wrapper is `repeated X messages = 1` with `X.metadata = 1`; this
/// lets the client check per-node errors generically.
pub trait NodeMessages {
    /// The `metadata` of each message in the response.
    fn metadata(&self) -> Vec<Option<&Metadata>>;
}

macro_rules! node_messages {
    ($($t:ty),* $(,)?) => {$(
        impl NodeMessages for $t {
            fn metadata(&self) -> Vec<Option<&Metadata>> {
                self.messages.iter().map(|m| m.metadata.as_ref()).collect()
            }
        }
    )*};
}

node_messages!(
    ApplyConfigurationResponse,
    BootstrapResponse,
    VersionResponse,
    ServiceListResponse,
    EtcdRecoverResponse,
    EtcdMemberListResponse,
    EtcdRemoveMemberByIdResponse,
    ResetResponse,
);

// ---- COSI resource API (`/cosi.resource.State/List`, server streaming), field
// numbers from cosi-project/runtime v1.14.1 `api/v1alpha1/{state,resource}.pb.go`
// (the version talos v1.13.9 uses). Only the fields talos-pve reads.

#[derive(Clone, PartialEq, prost::Message)]
pub struct CosiListRequest {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CosiListResponse {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<CosiResource>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CosiResource {
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<CosiMetadata>,
    #[prost(message, optional, tag = "2")]
    pub spec: Option<CosiSpec>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CosiMetadata {
    #[prost(string, tag = "1")]
    pub namespace: String,
    #[prost(string, tag = "2")]
    pub r#type: String,
    #[prost(string, tag = "3")]
    pub id: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct CosiSpec {
    #[prost(bytes = "vec", tag = "1")]
    pub proto_spec: Vec<u8>,
    #[prost(string, tag = "2")]
    pub yaml_spec: String,
}

/// `LinkStatuses.net.talos.dev` in namespace `network`; the resource ID is the kernel
/// link name (talos v1.13.9 `pkg/machinery/resources/network/link_status.go`).
pub const LINK_STATUS_NAMESPACE: &str = "network";
pub const LINK_STATUS_TYPE: &str = "LinkStatuses.net.talos.dev";

/// The `LinkStatusSpec` fields talos-pve reads (protobuf tags of the same file).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LinkStatusSpec {
    /// ARPHRD type: 1 = ether.
    #[prost(uint32, tag = "2")]
    pub r#type: u32,
    #[prost(bytes = "vec", tag = "5")]
    pub hardware_addr: Vec<u8>,
    /// Empty for physical links; `vlan`, `bond`, `bridge`, … otherwise.
    #[prost(string, tag = "11")]
    pub kind: String,
    #[prost(bytes = "vec", tag = "30")]
    pub permanent_addr: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;

    fn hex(m: &impl Message) -> String {
        hex::encode(m.encode_to_vec())
    }

    // Each expectation is computed by hand: key byte = (field << 3) | wire type
    // (0 varint, 2 length-delimited), then the length or varint value.

    #[test]
    fn apply_configuration_request_golden() {
        let m = ApplyConfigurationRequest {
            data: b"ab".to_vec(),
            mode: ApplyMode::Try as i32,
            dry_run: true,
            try_mode_timeout: Some(Duration {
                seconds: 60,
                nanos: 0,
            }),
        };
        // 0a 02 'a' 'b' | 20 04 (field 4 varint TRY) | 28 01 (field 5 true) | 32 02 08 3c (field 6 {seconds: 60})
        assert_eq!(hex(&m), "0a0261622004280132 02083c".replace(' ', ""));
        // REBOOT = 0 and false are proto3 defaults: not on the wire.
        let m = ApplyConfigurationRequest {
            data: vec![0xff],
            mode: ApplyMode::Reboot as i32,
            ..Default::default()
        };
        assert_eq!(hex(&m), "0a01ff");
    }

    #[test]
    fn bootstrap_request_golden() {
        let m = BootstrapRequest {
            recover_etcd: true,
            recover_skip_hash_check: true,
        };
        assert_eq!(hex(&m), "08011001");
        assert_eq!(hex(&BootstrapRequest::default()), "");
    }

    #[test]
    fn etcd_requests_golden() {
        assert_eq!(hex(&EtcdMemberListRequest { query_local: true }), "0801");
        // 300 = 0b1_0010_1100 → varint ac 02
        assert_eq!(
            hex(&EtcdRemoveMemberByIdRequest { member_id: 300 }),
            "08ac02"
        );
        assert_eq!(hex(&EtcdSnapshotRequest {}), "");
        assert_eq!(hex(&Empty {}), "");
    }

    #[test]
    fn reset_request_golden() {
        let m = ResetRequest {
            graceful: false,
            reboot: true,
            system_partitions_to_wipe: vec![ResetPartitionSpec {
                label: "EPHEMERAL".into(),
                wipe: true,
            }],
            user_disks_to_wipe: vec![],
            mode: WipeMode::SystemDisk as i32,
        };
        // 10 01 | 1a 0d (0a 09 "EPHEMERAL" 10 01) | 28 01
        assert_eq!(hex(&m), "10011a0d0a09455048454d4552414c10012801");
    }

    #[test]
    fn data_chunk_golden_and_metadata_decodes() {
        let m = Data {
            metadata: None,
            bytes: vec![1, 2, 3],
        };
        assert_eq!(hex(&m), "1203010203");
        // Bootstrap{metadata{hostname "n1", error "boom", status{code 9}}} inside the response wrapper.
        let wire = hex::decode("0a100a0e0a026e311204626f6f6d1a020809").unwrap();
        let r = BootstrapResponse::decode(wire.as_slice()).unwrap();
        let md = r.messages[0].metadata.as_ref().unwrap();
        assert_eq!((md.hostname.as_str(), md.error.as_str()), ("n1", "boom"));
        assert_eq!(md.status.as_ref().map(|s| s.code), Some(9));
    }

    #[test]
    fn debug_never_prints_config_or_stream_bytes() {
        let m = ApplyConfigurationRequest {
            data: b"key: SECRET".to_vec(),
            ..Default::default()
        };
        let d = Data {
            metadata: None,
            bytes: b"SECRET".to_vec(),
        };
        assert!(!format!("{m:?}{d:?}").contains("SECRET"));
    }
}

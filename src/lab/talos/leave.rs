//! A control plane leaving etcd on its own, as a graceful `Reset` does it (talos
//! v1.13.9 `internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer_tasks.go`
//! LeaveEtcd → `internal/app/machined/pkg/system/services/etcd.go` LeaveCluster):
//! a member already removed ("member not found") counts as done; the last member
//! cannot leave, and that failure aborts the reset sequence (the caller logs it).

use std::sync::Arc;

use tonic::Status;

use super::{Shared, lock};

pub(super) fn leave_etcd(shared: &Arc<Shared>, vmid: u32) -> Result<(), Status> {
    let mut nodes = lock(&shared.nodes);
    let Some(n) = nodes.get_mut(&vmid) else {
        return Ok(());
    };
    let id = n.state.member_id;
    let mut members = lock(&shared.members);
    if !members.iter().any(|m| m.id == id) {
        n.state.etcd_member = false;
        return Ok(());
    }
    if members.len() == 1 {
        return Err(Status::unknown(
            "failed to leave etcd: etcdserver: re-configuration failed due to not enough started members",
        ));
    }
    members.retain(|m| m.id != id);
    n.state.etcd_member = false;
    n.state.etcd_ready = false;
    Ok(())
}

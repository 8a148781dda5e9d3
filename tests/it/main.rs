//! The one integration-test binary: runs the real `talos-pve` executable and the
//! library against the lab on loopback. One module per area.

mod support;

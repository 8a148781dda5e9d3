//! The one integration-test binary: runs the real `talos-pve` executable and the
//! library against the lab on loopback. One module per area.

mod addons;
mod changes;
mod cidata;
mod cli_lint;
mod completions;
mod diff;
mod discovery;
mod docs;
mod generate;
mod lab_cli;
mod lab_serve;
mod progress;
mod proxmox;
mod rebuild;
mod rolling;
mod routing;
mod scale;
mod secrets_in_logs;
mod support;
mod talos_api;
mod topology;
mod up;
mod upgrade;
mod wizard;

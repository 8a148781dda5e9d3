//! Talos: machine configuration rendering (`config`) and the gRPC API client (`api`).
//!
//! `config` is pure (no I/O); `api` is the only code that talks to Talos nodes.

pub mod api;
pub mod cidata;
pub mod compat;
pub mod config;

//! Talos: machine configuration rendering (`config`) and the gRPC API client (`api`).

pub mod api;
pub mod config;

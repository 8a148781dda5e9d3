//! The lab's simulated Talos nodes (gRPC over TLS on loopback).

//! Cluster add-ons: per-node pod CIDRs, Cilium (native routing), MetalLB (L2).

//! The lab's simulated Kubernetes API (mTLS on loopback), backed by the lab etcd.

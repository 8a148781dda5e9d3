//! Minimal Kubernetes API client: server-side apply, discovery, readiness waits.

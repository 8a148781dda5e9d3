//! Rendering Talos machine configs, talosconfig and the admin kubeconfig from a plan and a secrets bundle.

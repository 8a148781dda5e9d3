//! Key material: the Talos secrets bundle, CAs, leaf certificates, PEM label handling.

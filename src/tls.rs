//! TLS policy in one place: the single ring crypto provider, the verifier that pins a
//! server certificate by SHA-256 fingerprint (Proxmox self-signed hosts, Talos
//! maintenance mode), and the one that checks a private CA for a fixed name whatever
//! address was dialed (the `AddressBook` may map it to loopback).
//!
//! No other module may install a crypto provider or build its own verifier.

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// Install ring as the process-wide rustls provider. Idempotent; call before
/// building any reqwest/tonic client or TLS server.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// SHA-256 of a DER certificate in Proxmox notation (`AA:BB:…`).
pub fn fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Parse `AA:BB:…` or plain hex into canonical `AA:BB:…`; `None` if not 32 bytes.
pub fn parse_fingerprint(s: &str) -> Option<String> {
    let hexs: String = s.chars().filter(|c| *c != ':').collect();
    let bytes = hex::decode(hexs).ok()?;
    (bytes.len() == 32).then(|| {
        bytes
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect::<Vec<_>>()
            .join(":")
    })
}

/// What a server certificate must satisfy when there is no CA to verify against.
#[derive(Debug, Clone)]
pub enum Pin {
    /// The end-entity certificate's SHA-256 must equal this (`AA:BB:…`).
    Sha256(String),
    /// Accept any certificate (Talos maintenance mode, `--insecure`). Signatures
    /// are still checked, so the peer must hold the key of what it presents.
    Any,
}

/// The handshake-signature half of a `ServerCertVerifier`, the same for every
/// verifier here: checked with the `provider` field's algorithms (what the chain
/// check does not cover, a peer proving it holds the certificate's key).
macro_rules! handshake_signatures_by_provider {
    () => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.provider.signature_verification_algorithms;
            verify_tls12_signature(message, cert, dss, algs)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            let algs = &self.provider.signature_verification_algorithms;
            verify_tls13_signature(message, cert, dss, algs)
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
}

#[derive(Debug)]
pub struct PinnedVerifier {
    pin: Pin,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    pub fn new(pin: Pin) -> Arc<Self> {
        Arc::new(Self {
            pin,
            provider: provider(),
        })
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.pin {
            Pin::Any => Ok(ServerCertVerified::assertion()),
            Pin::Sha256(want) => {
                let got = fingerprint(end_entity);
                if &got == want {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::General(format!(
                        "server certificate fingerprint {got} does not match the pinned {want}"
                    )))
                }
            }
        }
    }

    handshake_signatures_by_provider!();
}

/// Verifies the server against a private CA for a fixed name, whatever address was
/// dialed: the lab (and any `AddressBook` mapping) connects to a loopback listener
/// while the certificate must still be valid for the configured host.
#[derive(Debug)]
pub struct NameOverrideVerifier {
    name: ServerName<'static>,
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    provider: Arc<CryptoProvider>,
}

impl NameOverrideVerifier {
    pub fn new(
        roots: rustls::RootCertStore,
        name: ServerName<'static>,
    ) -> Result<Arc<Self>, rustls::client::VerifierBuilderError> {
        let provider = provider();
        let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()?;
        Ok(Arc::new(Self {
            name,
            inner,
            provider,
        }))
    }
}

impl ServerCertVerifier for NameOverrideVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, &self.name, ocsp, now)
    }

    handshake_signatures_by_provider!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_notation_round_trips() {
        let f = fingerprint(b"x");
        assert_eq!(parse_fingerprint(&f).as_deref(), Some(f.as_str()));
        assert_eq!(
            parse_fingerprint(&f.replace(':', "").to_lowercase()).as_deref(),
            Some(f.as_str())
        );
        assert_eq!(parse_fingerprint("AA:BB"), None);
    }
}

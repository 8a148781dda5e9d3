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

/// The trust anchors in PEM text (a CA file such as PVE's `pve-root-ca.pem`);
/// `Err` says why none could be read.
pub fn roots_from_pem(pem: &str) -> Result<rustls::RootCertStore, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for der in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| format!("not PEM: {e}"))?;
        roots
            .add(der)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CERTIFICATE block in it".into());
    }
    Ok(roots)
}

/// Records the end-entity certificate's fingerprint and refuses it, so the
/// handshake stops before anything is sent.
#[derive(Debug)]
struct Recorder {
    seen: std::sync::Mutex<Option<String>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Recorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().expect("recorder") = Some(fingerprint(end_entity));
        Err(rustls::Error::General("recorded, not trusted".into()))
    }

    handshake_signatures_by_provider!();
}

/// The SHA-256 fingerprint (`AA:BB:…`) of the certificate the TLS server at
/// `addr` (`host:port`) presents, for an error that tells the user what to check.
/// The handshake is aborted once the certificate is seen: no request, no secret.
pub async fn presented_fingerprint(addr: &str) -> Option<String> {
    let recorder = Arc::new(Recorder {
        seen: std::sync::Mutex::new(None),
        provider: provider(),
    });
    let cfg = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(recorder.clone())
        .with_no_client_auth();
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_owned()).ok()?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        let _ = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(name, tcp)
            .await;
        Some(())
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), handshake)
        .await
        .ok()??;
    recorder.seen.lock().expect("recorder").take()
}

/// Whether an error chain is a refused server certificate. `io::Error` hides
/// its inner error from `source()`, so it is unwrapped by hand.
pub fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    let refused = |r: &rustls::Error| {
        matches!(
            r,
            rustls::Error::InvalidCertificate(_) | rustls::Error::General(_)
        )
    };
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>()
            && refused(r)
        {
            return true;
        }
        if let Some(r) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            && refused(r)
        {
            return true;
        }
        // Some layers (hyper-util's connect error) carry it only as text.
        let text = err.to_string();
        if text.contains("invalid peer certificate") || text.contains("does not match the pinned") {
            return true;
        }
        cur = err.source();
    }
    false
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

//! Certificates a lab Talos node makes for itself: a per-boot self-signed
//! maintenance certificate, the apid server certificate signed with the applied
//! config's OS CA, and the admin kubeconfig signed with the Kubernetes CA. Also
//! reads client roles from a peer certificate (apid takes them from Organization).

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rcgen::{
    CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::pki::PrivateKey;

/// A certificate chain and its key, ready for a rustls server.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Load a key as Talos writes it (`ED25519 PRIVATE KEY`, SEC1 `EC PRIVATE KEY`,
/// PKCS#1 or PKCS#8), through the same decoder the secrets bundle uses.
pub fn load_key(pem: &str) -> Result<KeyPair, String> {
    PrivateKey::from_pem(pem, "CA key")
        .and_then(|k| k.key_pair())
        .map_err(err)
}

fn validity(p: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    p.not_before = now - Duration::minutes(5);
    p.not_after = now + Duration::days(days);
}

fn sans(names: &[String]) -> Vec<SanType> {
    names
        .iter()
        .filter_map(|n| match n.parse::<IpAddr>() {
            Ok(ip) => Some(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().ok().map(SanType::DnsName),
        })
        .collect()
}

fn identity(cert: rcgen::Certificate, key: &KeyPair) -> ServerIdentity {
    ServerIdentity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// Maintenance mode: a fresh self-signed Ed25519 certificate (nothing can verify it).
pub fn maintenance(names: &[String]) -> Result<ServerIdentity, String> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err)?;
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans(names);
    p.distinguished_name
        .push(DnType::OrganizationName, "maintenance");
    validity(&mut p, 1);
    let cert = p.self_signed(&key).map_err(err)?;
    Ok(identity(cert, &key))
}

/// Normal mode: apid's certificate, signed with the OS CA, naming every address.
pub fn apid(
    ca_crt: &str,
    ca_key: &str,
    cn: &str,
    names: &[String],
) -> Result<ServerIdentity, String> {
    let issuer = Issuer::from_ca_cert_pem(ca_crt, load_key(ca_key)?).map_err(err)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).map_err(err)?;
    let mut p = CertificateParams::default();
    p.subject_alt_names = sans(names);
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut p, 1);
    let cert = p.signed_by(&key, &issuer).map_err(err)?;
    Ok(identity(cert, &key))
}

/// The admin kubeconfig a control plane hands out, signed with `cluster.ca`.
pub fn admin_kubeconfig(
    cluster: &str,
    endpoint: &str,
    k8s_ca_crt: &str,
    k8s_ca_key: &str,
) -> Result<String, String> {
    let ca_key = load_key(k8s_ca_key)?;
    let issuer = Issuer::from_ca_cert_pem(k8s_ca_crt, ca_key).map_err(err)?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::ExplicitNoCa;
    p.distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    p.distinguished_name.push(DnType::CommonName, "admin");
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut p, 365);
    let cert = p.signed_by(&key, &issuer).map_err(err)?;
    let b = |s: &str| STANDARD.encode(s);
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {endpoint}\n    certificate-authority-data: {}\nusers:\n- name: admin@{cluster}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: admin@{cluster}\n  context:\n    cluster: {cluster}\n    namespace: default\n    user: admin@{cluster}\ncurrent-context: admin@{cluster}\n",
        b(k8s_ca_crt),
        b(&cert.pem()),
        b(&key.serialize_pem()),
    ))
}

/// A gzip'd tar holding one file, as the Kubeconfig RPC streams it.
pub fn tar_gz(name: &str, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
    let mut b = tar::Builder::new(gz);
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o600);
    h.set_cksum();
    b.append_data(&mut h, name, bytes).map_err(err)?;
    b.into_inner().map_err(err)?.finish().map_err(err)?;
    Ok(out)
}

/// The Organization values of a client certificate: its Talos roles.
pub fn roles(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, c)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    c.subject()
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_owned))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sec1_keys_from_talos_load_after_wrapping() {
        let Some(text) = super::super::golden("secrets.yaml") else {
            return;
        };
        let v: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
        let key = v["certs"]["k8s"]["key"].as_str().unwrap();
        let pem = String::from_utf8(STANDARD.decode(key).unwrap()).unwrap();
        assert!(pem.contains("EC PRIVATE KEY"));
        load_key(&pem).unwrap();
        let os = v["certs"]["os"]["key"].as_str().unwrap();
        let os = String::from_utf8(STANDARD.decode(os).unwrap()).unwrap();
        assert!(os.contains("ED25519 PRIVATE KEY"));
        load_key(&os).unwrap();
    }
}

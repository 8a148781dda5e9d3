//! Issuing certificates the way Talos does (siderolabs/crypto): self-signed CAs and
//! client leaves with explicit validity, random 128-bit serials, PrintableString
//! organisations; and inspecting/verifying certificates for bundle validation and reuse.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SerialNumber, string::PrintableString,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

use super::PkiError;
use super::pem::{self, KeyAlg, PrivateKey};

/// CA validity used by Talos (`CAValidityTime`, 87600 h).
pub const CA_VALIDITY: time::Duration = time::Duration::hours(87_600);
/// Admin client certificates (talosconfig, kubeconfig): 365 days.
pub const CLIENT_VALIDITY: time::Duration = time::Duration::days(365);

/// A certificate and its key, PEM certificate text kept as issued.
#[derive(Debug)]
pub struct CertAndKey {
    pub cert_pem: String,
    pub key: PrivateKey,
}

/// Fill `buf` from the OS CSPRNG (ring).
pub fn random_bytes(buf: &mut [u8]) -> Result<(), PkiError> {
    SystemRandom::new().fill(buf).map_err(|_| PkiError::Random)
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut b = [0u8; 16];
    random_bytes(&mut b)?;
    Ok(SerialNumber::from_slice(&b))
}

fn generate_key(alg: KeyAlg) -> Result<rcgen::KeyPair, PkiError> {
    let sig = match alg {
        KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
        KeyAlg::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyAlg::Rsa => return Err(PkiError::Random), // RSA keys come from `bundle::rsa_key`
    };
    rcgen::KeyPair::generate_for(sig).map_err(|_| PkiError::Random)
}

fn name(orgs: &[&str], cn: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for o in orgs {
        let v = PrintableString::try_from(*o)
            .map(DnValue::PrintableString)
            .unwrap_or_else(|_| DnValue::from(*o));
        dn.push(DnType::OrganizationName, v);
    }
    if let Some(cn) = cn {
        dn.push(DnType::CommonName, cn);
    }
    dn
}

/// A self-signed CA: subject = issuer = `O=<org>` (or empty), CA:TRUE, CertSign +
/// DigitalSignature, EKU server+client auth, `not_before` = `now`, 10 years.
pub fn new_ca(alg: KeyAlg, org: Option<&str>, now: OffsetDateTime) -> Result<CertAndKey, PkiError> {
    let kp = generate_key(alg)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = name(org.as_slice(), None);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
    ];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = now;
    p.not_after = now + CA_VALIDITY;
    p.serial_number = Some(random_serial()?);
    let cert = p
        .self_signed(&kp)
        .map_err(|e| PkiError::Issue(e.to_string()))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key: PrivateKey::from_key_pair(&kp, alg),
    })
}

/// A client certificate (EKU clientAuth, DigitalSignature) signed by `ca`.
pub fn new_client(
    ca_cert_pem: &str,
    ca_key: &PrivateKey,
    alg: KeyAlg,
    orgs: &[&str],
    cn: Option<&str>,
    now: OffsetDateTime,
) -> Result<CertAndKey, PkiError> {
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, ca_key.key_pair()?)
        .map_err(|e| PkiError::Issue(format!("loading the CA: {e}")))?;
    let kp = generate_key(alg)?;
    let mut p = CertificateParams::default();
    p.distinguished_name = name(orgs, cn);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.not_before = now;
    p.not_after = now + CLIENT_VALIDITY;
    p.serial_number = Some(random_serial()?);
    p.use_authority_key_identifier_extension = true;
    let cert = p
        .signed_by(&kp, &issuer)
        .map_err(|e| PkiError::Issue(e.to_string()))?;
    Ok(CertAndKey {
        cert_pem: cert.pem(),
        key: PrivateKey::from_key_pair(&kp, alg),
    })
}

/// What validation and reuse decisions need to know about a certificate.
#[derive(Debug, Clone, PartialEq)]
pub struct CertInfo {
    pub alg: Option<KeyAlg>,
    pub is_ca: bool,
    pub organizations: Vec<String>,
    pub common_name: Option<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    pub client_auth: bool,
    /// Raw public key bytes (point / Ed25519 key / PKCS#1).
    pub public_key: Vec<u8>,
    tbs: Vec<u8>,
    signature: Vec<u8>,
    signature_oid: String,
}

pub fn inspect(cert_pem: &str, what: &str) -> Result<CertInfo, PkiError> {
    let block = pem::decode(cert_pem, what)?;
    let bad = |reason: String| PkiError::Pem {
        what: what.to_owned(),
        reason,
    };
    if block.label != pem::CERTIFICATE {
        return Err(bad(format!(
            "expected a CERTIFICATE, found `{}`",
            block.label
        )));
    }
    let (_, x) = x509_parser::parse_x509_certificate(&block.der)
        .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let spki = x.public_key();
    let alg_oid = spki.algorithm.algorithm.to_id_string();
    let alg = match alg_oid.as_str() {
        "1.3.101.112" => Some(KeyAlg::Ed25519),
        "1.2.840.10045.2.1" => Some(KeyAlg::EcdsaP256),
        "1.2.840.113549.1.1.1" => Some(KeyAlg::Rsa),
        _ => None,
    };
    let strs = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue>| {
        it.filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect::<Vec<_>>()
    };
    let client_auth = x
        .extended_key_usage()
        .ok()
        .flatten()
        .is_some_and(|e| e.value.client_auth);
    let ts = |t: x509_parser::time::ASN1Time| t.to_datetime();
    Ok(CertInfo {
        alg,
        is_ca: x.is_ca(),
        organizations: strs(&mut x.subject().iter_organization()),
        common_name: strs(&mut x.subject().iter_common_name()).into_iter().next(),
        not_before: ts(x.validity().not_before),
        not_after: ts(x.validity().not_after),
        client_auth,
        public_key: spki.subject_public_key.data.to_vec(),
        tbs: x.tbs_certificate.as_ref().to_vec(),
        signature: x.signature_value.data.to_vec(),
        signature_oid: x.signature_algorithm.algorithm.to_id_string(),
    })
}

impl CertInfo {
    /// Whether `issuer`'s key signed this certificate.
    pub fn signed_by(&self, issuer: &CertInfo) -> bool {
        use ring::signature as sig;
        let alg: &dyn sig::VerificationAlgorithm = match self.signature_oid.as_str() {
            "1.3.101.112" => &sig::ED25519,
            "1.2.840.10045.4.3.2" => &sig::ECDSA_P256_SHA256_ASN1,
            "1.2.840.113549.1.1.11" => &sig::RSA_PKCS1_2048_8192_SHA256,
            _ => return false,
        };
        sig::UnparsedPublicKey::new(alg, &issuer.public_key)
            .verify(&self.tbs, &self.signature)
            .is_ok()
    }

    /// Valid at `now` and for at least `margin` longer.
    pub fn valid_for(&self, now: OffsetDateTime, margin: time::Duration) -> bool {
        self.not_before <= now && now + margin < self.not_after
    }
}

/// Whether `key` is the private half of the certificate's public key.
pub fn key_matches(info: &CertInfo, key: &PrivateKey) -> bool {
    key.key_pair()
        .is_ok_and(|kp| kp.public_key_raw() == info.public_key.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_client_follow_talos_rules() {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let ca = new_ca(KeyAlg::Ed25519, Some("talos"), now).unwrap();
        let ca_info = inspect(&ca.cert_pem, "ca").unwrap();
        assert!(ca_info.is_ca);
        assert_eq!(ca_info.organizations, ["talos"]);
        assert_eq!(ca_info.not_after - ca_info.not_before, CA_VALIDITY);
        assert!(key_matches(&ca_info, &ca.key));
        assert!(ca_info.signed_by(&ca_info));

        let admin = new_client(
            &ca.cert_pem,
            &ca.key,
            KeyAlg::Ed25519,
            &["os:admin"],
            None,
            now,
        )
        .unwrap();
        let a = inspect(&admin.cert_pem, "admin").unwrap();
        assert!(!a.is_ca && a.client_auth);
        assert_eq!(a.organizations, ["os:admin"]);
        assert!(a.signed_by(&ca_info));
        let other = new_ca(KeyAlg::Ed25519, Some("talos"), now).unwrap();
        assert!(!a.signed_by(&inspect(&other.cert_pem, "o").unwrap()));
        assert!(!key_matches(&ca_info, &admin.key));
        assert!(a.valid_for(now, time::Duration::days(300)));
        assert!(!a.valid_for(now, time::Duration::days(400)));
    }

    #[test]
    fn two_cas_get_different_serials() {
        let now = OffsetDateTime::now_utc();
        let a = new_ca(KeyAlg::EcdsaP256, Some("etcd"), now).unwrap();
        let b = new_ca(KeyAlg::EcdsaP256, Some("etcd"), now).unwrap();
        let serial = |p: &str| {
            let d = pem::decode(p, "c").unwrap();
            let (_, x) = x509_parser::parse_x509_certificate(&d.der).unwrap();
            x.raw_serial().to_vec()
        };
        assert_ne!(serial(&a.cert_pem), serial(&b.cert_pem));
    }
}

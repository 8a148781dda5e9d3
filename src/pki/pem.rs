//! PEM text and private-key encodings as Talos writes and reads them.
//!
//! Talos (siderolabs/crypto) writes Ed25519 keys as PKCS#8 v1 under the label
//! `ED25519 PRIVATE KEY`, ECDSA keys as SEC1 `EC PRIVATE KEY`, RSA keys as PKCS#1
//! `RSA PRIVATE KEY`, and accepts `PRIVATE KEY` (PKCS#8) for all. ring (and thus
//! rcgen, rustls) wants PKCS#8 (Ed25519 v1 or v2, ECDSA with the public key), so keys
//! are held as PKCS#8 and converted at the edges.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use super::PkiError;

pub const CERTIFICATE: &str = "CERTIFICATE";

/// One PEM block's label and DER bytes (zeroized on drop: it may be a key).
pub struct PemBlock {
    pub label: String,
    pub der: Zeroizing<Vec<u8>>,
}

/// Encode DER as PEM with 64-column lines.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = Zeroizing::new(STANDARD.encode(der));
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// Decode the first PEM block of `text`. Errors never echo the text (it may be a key).
pub fn decode(text: &str, what: &str) -> Result<PemBlock, PkiError> {
    let bad = |reason: &str| PkiError::Pem {
        what: what.to_owned(),
        reason: reason.to_owned(),
    };
    let start = text
        .find("-----BEGIN ")
        .ok_or_else(|| bad("no BEGIN line"))?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest
        .find("-----")
        .ok_or_else(|| bad("unterminated BEGIN line"))?;
    let label = rest[..label_end].to_owned();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest
        .find(&end_marker)
        .ok_or_else(|| bad("no matching END line"))?;
    let body: Zeroizing<String> = Zeroizing::new(
        rest[body_start..body_end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect(),
    );
    let der = STANDARD
        .decode(body.as_bytes())
        .map_err(|_| bad("body is not base64"))?;
    Ok(PemBlock {
        label,
        der: Zeroizing::new(der),
    })
}

/// Talos labels PKCS#8 Ed25519 keys `ED25519 PRIVATE KEY`; rustls-pki-types (and
/// OpenSSL) only know `PRIVATE KEY` for PKCS#8. The DER is the same, so only the
/// label changes; other labels pass through untouched.
pub fn relabel_private_key(pem: &str) -> String {
    // Matches the BEGIN and the END line alike; base64 bodies hold no spaces or dashes.
    pem.replace("ED25519 PRIVATE KEY-----", "PRIVATE KEY-----")
}

/// The key algorithms Talos bundles use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAlg {
    Ed25519,
    EcdsaP256,
    Rsa,
}

impl KeyAlg {
    pub fn name(self) -> &'static str {
        match self {
            KeyAlg::Ed25519 => "Ed25519",
            KeyAlg::EcdsaP256 => "ECDSA P-256",
            KeyAlg::Rsa => "RSA",
        }
    }
}

// DER building blocks (fixed for the only curve and algorithms supported).
const OID_ED25519: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_RSA: &[u8] = &[
    0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01,
];
/// PKCS#8 v1 Ed25519 prefix; the 32-byte seed follows (RFC 8410).
const ED25519_V1_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// A private key held as PKCS#8 DER (the form ring and rcgen load).
pub struct PrivateKey {
    pub alg: KeyAlg,
    pub pkcs8: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({}, <redacted>)", self.alg.name())
    }
}

impl PrivateKey {
    /// Parse any label Talos writes or accepts.
    pub fn from_pem(text: &str, what: &str) -> Result<Self, PkiError> {
        let block = decode(text, what)?;
        let bad = |reason: &str| PkiError::Pem {
            what: what.to_owned(),
            reason: reason.to_owned(),
        };
        match block.label.as_str() {
            "ED25519 PRIVATE KEY" | "PRIVATE KEY" => {
                let alg = pkcs8_alg(&block.der).ok_or_else(|| {
                    bad("PKCS#8 key of an unsupported algorithm (want Ed25519, P-256 or RSA)")
                })?;
                let pkcs8 = if alg == KeyAlg::EcdsaP256 {
                    // Normalise to ring's layout (public key present, no parameters).
                    let inner = pkcs8_inner(&block.der).ok_or_else(|| bad("malformed PKCS#8"))?;
                    sec1_to_pkcs8(inner).ok_or_else(|| bad("malformed EC key in PKCS#8"))?
                } else {
                    block.der
                };
                Ok(Self { alg, pkcs8 })
            }
            "EC PRIVATE KEY" => Ok(Self {
                alg: KeyAlg::EcdsaP256,
                pkcs8: sec1_to_pkcs8(&block.der)
                    .ok_or_else(|| bad("not a P-256 SEC1 key with its public key"))?,
            }),
            "RSA PRIVATE KEY" => Ok(Self {
                alg: KeyAlg::Rsa,
                pkcs8: Zeroizing::new(pkcs1_to_pkcs8(&block.der)),
            }),
            other => Err(bad(&format!("unsupported PEM label `{other}`"))),
        }
    }

    /// The PEM Talos writes for this key (see the module doc).
    pub fn to_talos_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(match self.alg {
            KeyAlg::Ed25519 => encode("ED25519 PRIVATE KEY", &self.ed25519_v1()),
            KeyAlg::EcdsaP256 => encode("EC PRIVATE KEY", &self.sec1()),
            KeyAlg::Rsa => encode(
                "RSA PRIVATE KEY",
                pkcs8_inner(&self.pkcs8).unwrap_or_default(),
            ),
        })
    }

    /// PKCS#8 v1 for Ed25519 (OpenSSL 3.0 cannot read ring's v2).
    fn ed25519_v1(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(ED25519_V1_PREFIX.to_vec());
        v.extend_from_slice(self.pkcs8.get(16..48).unwrap_or_default());
        v
    }

    /// SEC1 `ECPrivateKey` with the named-curve parameter, as Go's MarshalECPrivateKey.
    fn sec1(&self) -> Zeroizing<Vec<u8>> {
        let inner = pkcs8_inner(&self.pkcs8).unwrap_or_default();
        let (d, public) = sec1_parts(inner).unwrap_or_default();
        let mut body = Zeroizing::new(vec![0x02, 0x01, 0x01]);
        body.extend(tlv(0x04, d).iter());
        body.extend(tlv(0xa0, OID_P256));
        body.extend(tlv(0xa1, &tlv(0x03, public)));
        Zeroizing::new(tlv(0x30, &body))
    }

    /// rcgen's key pair (ring backend).
    pub fn key_pair(&self) -> Result<rcgen::KeyPair, PkiError> {
        let alg = match self.alg {
            KeyAlg::Ed25519 => &rcgen::PKCS_ED25519,
            KeyAlg::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlg::Rsa => &rcgen::PKCS_RSA_SHA256,
        };
        let der = rustls::pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, alg).map_err(|_| PkiError::Pem {
            what: self.alg.name().into(),
            reason: "the key does not load (corrupt key material)".into(),
        })
    }

    pub fn from_key_pair(kp: &rcgen::KeyPair, alg: KeyAlg) -> Self {
        Self {
            alg,
            pkcs8: Zeroizing::new(kp.serialize_der()),
        }
    }
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend([0x81, n as u8]);
    } else {
        out.extend([0x82, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

/// Split one DER TLV off `input`: (tag, content, rest).
fn read_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |a, &b| (a << 8) | usize::from(b));
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// Algorithm of a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_alg(der: &[u8]) -> Option<KeyAlg> {
    let (_, seq, _) = read_tlv(der)?;
    let (_, _version, rest) = read_tlv(seq)?;
    let (_, alg_id, _) = read_tlv(rest)?;
    if alg_id.starts_with(OID_ED25519) {
        Some(KeyAlg::Ed25519)
    } else if alg_id.starts_with(OID_EC_PUBLIC_KEY) && alg_id.ends_with(OID_P256) {
        Some(KeyAlg::EcdsaP256)
    } else if alg_id.starts_with(OID_RSA) {
        Some(KeyAlg::Rsa)
    } else {
        None
    }
}

/// The `privateKey` OCTET STRING content of a PKCS#8 `PrivateKeyInfo`.
fn pkcs8_inner(der: &[u8]) -> Option<&[u8]> {
    let (_, seq, _) = read_tlv(der)?;
    let (_, _version, rest) = read_tlv(seq)?;
    let (_, _alg, rest) = read_tlv(rest)?;
    let (tag, key, _) = read_tlv(rest)?;
    (tag == 0x04).then_some(key)
}

/// (private scalar, public point BIT STRING content) of a SEC1 `ECPrivateKey`.
fn sec1_parts(der: &[u8]) -> Option<(&[u8], &[u8])> {
    let (tag, seq, _) = read_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (_, _version, mut rest) = read_tlv(seq)?;
    let (tag, d, r) = read_tlv(rest)?;
    if tag != 0x04 || d.len() != 32 {
        return None;
    }
    rest = r;
    while !rest.is_empty() {
        let (tag, content, r) = read_tlv(rest)?;
        if tag == 0xa0 && content != OID_P256 {
            return None; // another curve
        }
        if tag == 0xa1 {
            let (t, bits, _) = read_tlv(content)?;
            return (t == 0x03).then_some((d, bits));
        }
        rest = r;
    }
    None
}

/// SEC1 (with or without curve parameters) → PKCS#8 in ring's layout.
fn sec1_to_pkcs8(sec1: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let (d, public) = sec1_parts(sec1)?;
    let mut inner = Zeroizing::new(vec![0x02, 0x01, 0x01]);
    inner.extend(tlv(0x04, d).iter());
    inner.extend(tlv(0xa1, &tlv(0x03, public)));
    let inner = Zeroizing::new(tlv(0x30, &inner));
    let mut alg = OID_EC_PUBLIC_KEY.to_vec();
    alg.extend_from_slice(OID_P256);
    let mut body = Zeroizing::new(vec![0x02, 0x01, 0x00]);
    body.extend(tlv(0x30, &alg));
    body.extend(tlv(0x04, &inner).iter());
    Some(Zeroizing::new(tlv(0x30, &body)))
}

/// PKCS#1 `RSAPrivateKey` → PKCS#8.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    let mut alg = OID_RSA.to_vec();
    alg.extend([0x05, 0x00]);
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend(tlv(0x30, &alg));
    body.extend(tlv(0x04, pkcs1));
    let out = tlv(0x30, &body);
    zeroize::Zeroize::zeroize(&mut body);
    out
}

/// PKCS#8 for an RSA key given as PKCS#1 DER (from the `rsa` crate).
pub fn rsa_pkcs1_to_private_key(pkcs1: &[u8]) -> PrivateKey {
    PrivateKey {
        alg: KeyAlg::Rsa,
        pkcs8: Zeroizing::new(pkcs1_to_pkcs8(pkcs1)),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// PEM text built from its label, so no key-shaped literal sits in the source.
    pub(crate) fn begin(label: &str) -> String {
        format!("-----BEGIN {label}-----\n")
    }

    fn block(label: &str, body: &str) -> String {
        format!("{}{body}\n-----END {label}-----\n", begin(label))
    }

    #[test]
    fn ed25519_label_becomes_pkcs8_label() {
        let body = "MC4CAQAwBQYDK2VwBCIEIA==";
        assert_eq!(
            relabel_private_key(&block("ED25519 PRIVATE KEY", body)),
            block("PRIVATE KEY", body)
        );
    }

    #[test]
    fn ed25519_is_written_as_pkcs8_v1_under_the_talos_label() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let key = PrivateKey::from_key_pair(&kp, KeyAlg::Ed25519);
        let pem = key.to_talos_pem();
        assert!(pem.starts_with(&format!(
            "{}MC4CAQAwBQYDK2VwBCIEI",
            begin("ED25519 PRIVATE KEY")
        )));
        let block = decode(&pem, "t").unwrap();
        assert_eq!(block.der.len(), 48);
        assert_eq!(block.der[..16], ED25519_V1_PREFIX);
        let back = PrivateKey::from_pem(&pem, "t").unwrap();
        assert_eq!(
            back.key_pair().unwrap().public_key_raw(),
            kp.public_key_raw()
        );
        // The standard label loads too.
        let std = PrivateKey::from_pem(&relabel_private_key(&pem), "t").unwrap();
        assert_eq!(std.alg, KeyAlg::Ed25519);
    }

    #[test]
    fn ecdsa_round_trips_through_sec1_with_curve_parameters() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = PrivateKey::from_key_pair(&kp, KeyAlg::EcdsaP256);
        let pem = key.to_talos_pem();
        assert!(pem.starts_with(&format!("{}MHcCAQEE", begin("EC PRIVATE KEY"))));
        let block = decode(&pem, "t").unwrap();
        assert_eq!(block.der.len(), 121);
        let back = PrivateKey::from_pem(&pem, "t").unwrap();
        assert_eq!(
            back.key_pair().unwrap().public_key_raw(),
            kp.public_key_raw()
        );
        assert_eq!(back.pkcs8.as_slice(), kp.serialize_der().as_slice());
    }

    #[test]
    fn garbage_is_an_error_that_does_not_echo_input() {
        let e = PrivateKey::from_pem(
            &block("EC PRIVATE KEY", "QUJDREVGR0hJSktMTU5PUA=="),
            "certs.k8s.key",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("certs.k8s.key"), "{e}");
        assert!(!e.contains("QUJD"), "{e}");
        assert!(PrivateKey::from_pem("nothing", "x").is_err());
    }
}

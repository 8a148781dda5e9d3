//! Randomness for the bundle: Talos-format tokens and ids, and a `rand_core` adapter
//! over ring's OS generator for the `rsa` crate (the tree has no `getrandom` feature
//! for rand_core 0.6, and ring stays the only source of randomness).

use base64::Engine;
use rsa::rand_core::{self, CryptoRng, RngCore};
use zeroize::Zeroizing;

use super::PkiError;
use super::cert::random_bytes;

/// Buffered OS randomness: prime search asks for many small chunks.
pub struct OsRandom {
    buf: Zeroizing<[u8; 4096]>,
    pos: usize,
}

impl Default for OsRandom {
    fn default() -> Self {
        Self {
            buf: Zeroizing::new([0; 4096]),
            pos: 4096,
        }
    }
}

impl OsRandom {
    pub fn new() -> Self {
        Self::default()
    }
}

impl RngCore for OsRandom {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        // The OS generator does not fail on supported platforms; a failure here
        // would make key generation unsafe, so abort rather than continue.
        self.try_fill_bytes(dest)
            .expect("the operating system's random number generator failed");
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        let mut done = 0;
        while done < dest.len() {
            if self.pos == self.buf.len() {
                random_bytes(&mut self.buf[..])
                    .map_err(|_| rand_core::Error::from(std::num::NonZeroU32::MIN))?;
                self.pos = 0;
            }
            let n = (dest.len() - done).min(self.buf.len() - self.pos);
            dest[done..done + n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
            self.buf[self.pos..self.pos + n].fill(0);
            self.pos += n;
            done += n;
        }
        Ok(())
    }
}

impl CryptoRng for OsRandom {}

/// A kubeadm-style token `[0-9a-z]{6}.[0-9a-z]{16}` (Talos: bytes ≥ 252 rejected, byte mod 36).
pub fn token() -> Result<String, PkiError> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(23);
    let mut buf = [0u8; 64];
    while out.len() < 23 {
        random_bytes(&mut buf)?;
        for &b in &buf {
            if out.len() == 6 {
                out.push('.');
            }
            if out.len() == 23 {
                break;
            }
            if b < 252 {
                out.push(char::from(ALPHABET[usize::from(b % 36)]));
            }
        }
    }
    Ok(out)
}

/// 32 random bytes, base64 with padding (URL-safe alphabet for the cluster id).
pub fn b64_secret(url_safe: bool) -> Result<String, PkiError> {
    let mut b = Zeroizing::new([0u8; 32]);
    random_bytes(&mut b[..])?;
    Ok(if url_safe {
        base64::engine::general_purpose::URL_SAFE.encode(&b[..])
    } else {
        base64::engine::general_purpose::STANDARD.encode(&b[..])
    })
}

/// Whether `s` has the token shape Talos checks.
pub fn is_token(s: &str) -> bool {
    let ok = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
    };
    s.split_once('.')
        .is_some_and(|(a, b)| ok(a, 6) && ok(b, 16))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_secrets_have_the_talos_shape() {
        for _ in 0..50 {
            let t = token().unwrap();
            assert!(is_token(&t), "{t}");
        }
        assert_ne!(token().unwrap(), token().unwrap());
        let id = b64_secret(true).unwrap();
        assert_eq!(id.len(), 44);
        assert!(id.ends_with('='));
        assert!(!is_token("ABCDEF.0123456789abcdef"));
    }

    #[test]
    fn os_random_fills_across_buffer_refills() {
        let mut r = OsRandom::new();
        let mut a = vec![0u8; 10_000];
        r.fill_bytes(&mut a);
        assert!(a.iter().filter(|&&b| b == 0).count() < 200);
    }
}

//! RSA key generation with a faster prime search than the `rsa` crate's default.
//!
//! `rsa` 0.9 draws a fresh random candidate after every failure and sieves only by
//! primes up to 53, so most of its time goes into Miller-Rabin on candidates a larger
//! sieve would have rejected. Here (as OpenSSL does): one random odd start per window,
//! its residues modulo every prime below 2^16 computed once, a sieve over the next
//! `WINDOW` odd offsets, a single base-2 Miller-Rabin on survivors, and the full
//! 20-round Miller-Rabin + Lucas test (`probably_prime`) on the first that passes.
//! p and q are searched on two threads.

use std::sync::OnceLock;

use num_bigint_dig::BigUint;
use num_bigint_dig::prime::{probably_prime, probably_prime_miller_rabin};
use rsa::RsaPrivateKey;
use rsa::rand_core::RngCore;

use super::PkiError;
use super::rng::OsRandom;

/// Odd offsets sieved per random start.
const WINDOW: usize = 1 << 14;
const PUBLIC_EXPONENT: u32 = 65_537;

fn small_primes() -> &'static [u32] {
    static PRIMES: OnceLock<Vec<u32>> = OnceLock::new();
    PRIMES.get_or_init(|| {
        const LIMIT: usize = 1 << 16;
        let mut composite = vec![false; LIMIT];
        let mut out = Vec::new();
        for i in (3..LIMIT).step_by(2) {
            if !composite[i] {
                out.push(i as u32);
                for j in (i * i..LIMIT).step_by(2 * i) {
                    composite[j] = true;
                }
            }
        }
        out
    })
}

/// `n mod m` for a big-endian byte string.
fn residue(be: &[u8], m: u32) -> u32 {
    let m = u64::from(m);
    let r = be.iter().fold(0u64, |r, &b| ((r << 8) | u64::from(b)) % m);
    r as u32
}

/// A random prime of exactly `bits` bits (top two bits set) with gcd(p-1, 65537) = 1.
fn random_prime(rng: &mut OsRandom, bits: usize) -> BigUint {
    let primes = small_primes();
    let len = bits.div_ceil(8);
    let top = bits - 8 * (len - 1); // bits used in the first byte
    let mut bytes = vec![0u8; len];
    loop {
        rng.fill_bytes(&mut bytes);
        bytes[0] &= ((1u16 << top) - 1) as u8;
        bytes[0] |= ((0b11u16 << top) >> 2) as u8;
        if top == 1 {
            bytes[1] |= 0x80;
        }
        bytes[len - 1] |= 1;
        let start = BigUint::from_bytes_be(&bytes);
        // sieve[k] marks start + 2k as having a small factor.
        let mut sieve = vec![false; WINDOW];
        for &p in primes {
            let r = residue(&bytes, p);
            // smallest even delta with (r + delta) ≡ 0 (mod p), stepping by 2p
            let mut delta = (p - r) % p;
            if delta % 2 == 1 {
                delta += p;
            }
            let mut k = (delta / 2) as usize;
            while k < WINDOW {
                sieve[k] = true;
                k += p as usize;
            }
        }
        for (k, _) in sieve.iter().enumerate().filter(|(_, c)| !**c) {
            let cand = &start + BigUint::from(2 * k as u64);
            if cand.bits() != bits {
                break;
            }
            let be = cand.to_bytes_be();
            if residue(&be, PUBLIC_EXPONENT) == 1 {
                continue; // 65537 divides p - 1: e would not be invertible
            }
            if probably_prime_miller_rabin(&cand, 1, true) && probably_prime(&cand, 20) {
                return cand;
            }
        }
    }
}

/// A `bits`-bit RSA key with e = 65537.
pub fn rsa_private_key(bits: usize) -> Result<RsaPrivateKey, PkiError> {
    loop {
        let (p, q) = std::thread::scope(|s| {
            let h = s.spawn(|| random_prime(&mut OsRandom::new(), bits / 2));
            let q = random_prime(&mut OsRandom::new(), bits - bits / 2);
            (h.join(), q)
        });
        let p = p.map_err(|_| PkiError::Issue("RSA prime search thread panicked".into()))?;
        if p == q {
            continue;
        }
        let mut key = RsaPrivateKey::from_p_q(p, q, BigUint::from(PUBLIC_EXPONENT))
            .map_err(|e| PkiError::Issue(format!("RSA key assembly: {e}")))?;
        key.precompute()
            .map_err(|e| PkiError::Issue(format!("RSA key precomputation: {e}")))?;
        key.validate()
            .map_err(|e| PkiError::Issue(format!("RSA key validation: {e}")))?;
        return Ok(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::traits::PublicKeyParts;

    #[test]
    fn sieve_finds_real_primes_of_the_requested_size() {
        assert_eq!(&small_primes()[..5], &[3, 5, 7, 11, 13]);
        assert_eq!(small_primes().len(), 6541); // odd primes below 2^16
        assert_eq!(residue(&[0x01, 0x00], 7), 256 % 7);
        let p = random_prime(&mut OsRandom::new(), 256);
        assert_eq!(p.bits(), 256);
        assert!(probably_prime(&p, 20));
    }

    #[test]
    fn small_rsa_key_is_consistent() {
        let key = rsa_private_key(1024).unwrap();
        assert_eq!(key.n().bits(), 1024);
        assert_eq!(key.e(), &BigUint::from(65_537u32));
    }
}

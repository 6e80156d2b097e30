//! Signing keys encrypted at rest under a master key: AES-256-GCM (aws-lc-rs) with a random
//! 96-bit nonce, the key id as associated data (a sealed key cannot be moved to another
//! kid). Format: `JGK1 ‖ nonce ‖ ciphertext ‖ tag`.

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"JGK1";
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")]
    BadMasterKey,
    #[error("cannot decrypt key {0}: wrong master key, or the stored key was altered")]
    Open(String),
    #[error("encryption failed")]
    Seal,
}

/// The master key. Never printed.
pub struct MasterKey(RandomizedNonceKey);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    /// From its base64 text (standard or URL-safe alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        let t = text.trim();
        let bytes = Zeroizing::new(
            STANDARD
                .decode(t)
                .or_else(|_| URL_SAFE_NO_PAD.decode(t.trim_end_matches('=')))
                .map_err(|_| SealError::BadMasterKey)?,
        );
        if bytes.len() != 32 {
            return Err(SealError::BadMasterKey);
        }
        RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map(Self)
            .map_err(|_| SealError::BadMasterKey)
    }

    pub fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut buf = plaintext.to_vec();
        let nonce = self
            .0
            .seal_in_place_append_tag(Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(4 + NONCE_LEN + buf.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    pub fn open(&self, kid: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let err = || SealError::Open(kid.to_string());
        let body = sealed.strip_prefix(MAGIC).ok_or_else(err)?;
        if body.len() < NONCE_LEN {
            return Err(err());
        }
        let (nonce, ct) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| err())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .0
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buf)
            .map_err(|_| err())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// True when `stored` is a sealed key (as opposed to plain PKCS#8 DER or a secret).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

    #[test]
    fn seal_open_round_trip_bound_to_kid() {
        let m = MasterKey::from_base64(KEY).unwrap();
        let sealed = m.seal("k1", b"private der").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(11).any(|w| w == b"private der"));
        assert_eq!(&m.open("k1", &sealed).unwrap()[..], b"private der");
        // Another kid, another master key, or a flipped byte: refused.
        assert!(m.open("k2", &sealed).is_err());
        let other = MasterKey::from_base64(&KEY.replace("q", "r")).unwrap();
        assert!(other.open("k1", &sealed).is_err());
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(m.open("k1", &bad).is_err());
        // Two seals of the same key differ (random nonce).
        assert_ne!(m.seal("k1", b"x").unwrap(), m.seal("k1", b"x").unwrap());
    }

    #[test]
    fn master_key_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64("short").is_err());
        assert!(MasterKey::from_base64("!!!!").is_err());
        assert!(MasterKey::from_base64(&KEY.replace("=", "")).is_ok());
        assert!(!format!("{:?}", MasterKey::from_base64(KEY).unwrap()).contains("q83"));
    }
}

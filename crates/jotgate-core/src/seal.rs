//! Signing keys encrypted at rest under a master key: AES-256-GCM (aws-lc-rs) with a random
//! 96-bit nonce.
//!
//! Format 2 (written now): `JGK2 ‖ master-key id (8 bytes) ‖ nonce ‖ ciphertext ‖ tag`,
//! with associated data binding the purpose, the key id and its algorithm, so a blob
//! cannot be moved to another row or read as another kind of secret. The master-key id
//! (the first 8 bytes of SHA-256 over the master key) says which master key sealed it:
//! a leaked master key can be replaced, the old one kept as an old key until every blob
//! is re-sealed (they are, as they are read).
//!
//! Format 1 (read only): `JGK1 ‖ nonce ‖ ciphertext ‖ tag`, the kid as associated data.

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"JGK1";
const MAGIC2: &[u8; 4] = b"JGK2";
const NONCE_LEN: usize = 12;
const ID_LEN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")]
    BadMasterKey,
    #[error("cannot decrypt key {0}: wrong master key, or the stored key was altered")]
    Open(String),
    #[error(
        "key {0} was sealed with a master key that is not configured (id {1}): set it as the master key or among the old master keys"
    )]
    UnknownMasterKey(String, String),
    #[error("encryption failed")]
    Seal,
}

/// One master key. Never printed.
pub struct MasterKey {
    key: RandomizedNonceKey,
    id: [u8; ID_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

fn aad_v2(kid: &str, alg: &str) -> Vec<u8> {
    let mut a = b"jotgate:signing-key:v2\0".to_vec();
    a.extend_from_slice(kid.as_bytes());
    a.push(0);
    a.extend_from_slice(alg.as_bytes());
    a
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
        let digest = crate::sha256(&bytes);
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(&digest[..ID_LEN]);
        RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map(|key| Self { key, id })
            .map_err(|_| SealError::BadMasterKey)
    }

    /// The id written into what it seals (hex, for messages).
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seal the private key `kid` of algorithm `alg` (format 2).
    pub fn seal(&self, kid: &str, alg: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut buf = plaintext.to_vec();
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad_v2(kid, alg).as_slice()), &mut buf)
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(4 + ID_LEN + NONCE_LEN + buf.len());
        out.extend_from_slice(MAGIC2);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(nonce.as_ref());
        out.extend_from_slice(&buf);
        Ok(out)
    }

    fn open_body(
        &self,
        kid: &str,
        aad: &[u8],
        body: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let err = || SealError::Open(kid.to_string());
        if body.len() < NONCE_LEN {
            return Err(err());
        }
        let (nonce, ct) = body.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| err())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| err())?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// The master key and the ones it replaced.
pub struct MasterKeys {
    pub current: MasterKey,
    pub old: Vec<MasterKey>,
}

/// What [`MasterKeys::open`] found.
pub struct Opened {
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Sealed in format 1 or with an old master key: seal it again with the current one.
    pub reseal: bool,
}

impl MasterKeys {
    pub fn new(current: MasterKey, old: Vec<MasterKey>) -> Self {
        Self { current, old }
    }

    pub fn seal(&self, kid: &str, alg: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        self.current.seal(kid, alg, plaintext)
    }

    /// Open a sealed key `kid` of algorithm `alg`, with whichever configured master key
    /// sealed it.
    pub fn open(&self, kid: &str, alg: &str, sealed: &[u8]) -> Result<Opened, SealError> {
        let all = || std::iter::once(&self.current).chain(&self.old);
        if let Some(rest) = sealed.strip_prefix(MAGIC2) {
            if rest.len() < ID_LEN {
                return Err(SealError::Open(kid.to_string()));
            }
            let (id, body) = rest.split_at(ID_LEN);
            let Some(m) = all().find(|m| m.id[..] == *id) else {
                let hex = id.iter().map(|b| format!("{b:02x}")).collect();
                return Err(SealError::UnknownMasterKey(kid.to_string(), hex));
            };
            let plaintext = m.open_body(kid, &aad_v2(kid, alg), body)?;
            return Ok(Opened {
                plaintext,
                reseal: m.id != self.current.id,
            });
        }
        let body = sealed
            .strip_prefix(MAGIC)
            .ok_or_else(|| SealError::Open(kid.to_string()))?;
        for m in all() {
            if let Ok(plaintext) = m.open_body(kid, kid.as_bytes(), body) {
                return Ok(Opened {
                    plaintext,
                    reseal: true,
                });
            }
        }
        Err(SealError::Open(kid.to_string()))
    }
}

/// True when `stored` is a sealed key (as opposed to plain PKCS#8 DER or a secret).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC) || stored.starts_with(MAGIC2)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

    fn keys(current: &str, old: &[&str]) -> MasterKeys {
        MasterKeys::new(
            MasterKey::from_base64(current).unwrap(),
            old.iter()
                .map(|k| MasterKey::from_base64(k).unwrap())
                .collect(),
        )
    }

    #[test]
    fn seal_open_round_trip_bound_to_kid_and_alg() {
        let m = keys(KEY, &[]);
        let sealed = m.seal("k1", "ES256", b"private der").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(11).any(|w| w == b"private der"));
        let o = m.open("k1", "ES256", &sealed).unwrap();
        assert_eq!(&o.plaintext[..], b"private der");
        assert!(!o.reseal);
        // Another kid or alg, another master key, or a flipped byte: refused.
        assert!(m.open("k2", "ES256", &sealed).is_err());
        assert!(m.open("k1", "RS256", &sealed).is_err());
        let other = keys(&KEY.replace("q", "r"), &[]);
        assert!(matches!(
            other.open("k1", "ES256", &sealed),
            Err(SealError::UnknownMasterKey(..))
        ));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(m.open("k1", "ES256", &bad).is_err());
        // Two seals of the same key differ (random nonce).
        assert_ne!(
            m.seal("k1", "ES256", b"x").unwrap(),
            m.seal("k1", "ES256", b"x").unwrap()
        );
    }

    #[test]
    fn a_master_key_can_be_replaced() {
        let old_key = KEY;
        let new_key = KEY.replace("q", "r");
        let before = keys(old_key, &[]).seal("k1", "EdDSA", b"der").unwrap();
        let after = keys(&new_key, &[old_key]);
        let o = after.open("k1", "EdDSA", &before).unwrap();
        assert_eq!(&o.plaintext[..], b"der");
        assert!(o.reseal, "sealed with an old master key");
        // Format 1 blobs (kid as associated data) still open, and ask to be re-sealed.
        let m = MasterKey::from_base64(old_key).unwrap();
        let mut v1 = b"der".to_vec();
        let nonce = m
            .key
            .seal_in_place_append_tag(Aad::from(b"k1".as_slice()), &mut v1)
            .unwrap();
        let blob = [MAGIC.as_slice(), nonce.as_ref(), &v1].concat();
        let o = after.open("k1", "EdDSA", &blob).unwrap();
        assert!(o.reseal && &o.plaintext[..] == b"der");
    }

    #[test]
    fn master_key_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64("short").is_err());
        assert!(MasterKey::from_base64("!!!!").is_err());
        assert!(MasterKey::from_base64(&KEY.replace("=", "")).is_ok());
        assert!(!format!("{:?}", MasterKey::from_base64(KEY).unwrap()).contains("q83"));
    }
}

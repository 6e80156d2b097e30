//! Signing keys encrypted at rest under a master key: AES-256-GCM (aws-lc-rs) with a random
//! 96-bit nonce.
//!
//! Format 3 (written now): `JGK3 ‖ master-key id (8 bytes) ‖ activation (8 bytes
//! big-endian) ‖ retired (1 byte flag ‖ 8 bytes big-endian instant) ‖ nonce ‖ ciphertext ‖
//! tag`. The associated data binds the purpose,
//! the deployment (jotgate: the store's random id), the key id, its algorithm and that
//! whole header, so a blob cannot be moved to another row, another store sharing the
//! master key, or read as
//! another kind of secret — and its life cycle cannot be changed without the master key: a
//! row whose `retired_at` was cleared still holds a blob that says "retired", and a row
//! whose `created_at` was moved still holds the real activation. A kid holding a control
//! character (NUL among them) is refused, so no kid can spell another format's associated
//! data. The master-key
//! id (the first 8 bytes of SHA-256 over the master key) says which master key sealed it: a
//! leaked master key can be replaced, the old one kept as an old key until every blob is
//! re-sealed (they are, as they are read).
//!
//! Format 2 (read only): `JGK2 ‖ master-key id ‖ nonce ‖ ciphertext ‖ tag`, purpose, kid and
//! algorithm as associated data. Format 1 (read only): `JGK1 ‖ nonce ‖ ciphertext ‖ tag`,
//! the kid as associated data. Both are re-sealed in format 3 when read.

use aws_lc_rs::aead::{AES_256_GCM, Aad, Nonce, RandomizedNonceKey};
use base64::Engine;
use zeroize::Zeroizing;

const MAGIC: &[u8; 4] = b"JGK1";
const MAGIC2: &[u8; 4] = b"JGK2";
const MAGIC3: &[u8; 4] = b"JGK3";
const NONCE_LEN: usize = 12;
const ID_LEN: usize = 8;
/// The activation field of a format-3 header: an instant.
const CREATED_LEN: usize = 8;
/// The retirement field of a format-3 header: a flag byte and an instant.
const RETIRED_LEN: usize = 9;
/// A format-3 header: magic, master-key id, activation, retirement.
const HEADER_LEN: usize = 4 + ID_LEN + CREATED_LEN + RETIRED_LEN;
/// Longest kid sealed or opened.
const MAX_KID: usize = 256;

/// A kid that can be bound: 1 to 256 bytes, no control character. (Format 1 used the raw
/// kid as associated data; the later formats' contain NUL bytes, so a kid without one
/// never spells them.)
fn valid_kid(kid: &str) -> bool {
    !kid.is_empty() && kid.len() <= MAX_KID && !kid.chars().any(char::is_control)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("the master key must be 32 bytes, base64-encoded (e.g. `openssl rand -base64 32`)")]
    BadMasterKey,
    #[error(
        "cannot decrypt key {0}: wrong master key, a key copied from another store, or the stored key was altered"
    )]
    Open(String),
    #[error(
        "key {0} was sealed with a master key that is not configured (id {1}): set it as the master key or among the old master keys"
    )]
    UnknownMasterKey(String, String),
    #[error("encryption failed")]
    Seal,
    #[error("a key id must be 1 to 256 characters without control characters")]
    BadKid,
}

/// One master key. Never printed.
pub struct MasterKey {
    key: RandomizedNonceKey,
    id: [u8; ID_LEN],
    /// A key of its own for [`MasterKey::derive`], made from the master key with HMAC, so
    /// that no bytes are used both to encrypt and to authenticate.
    derive: aws_lc_rs::hmac::Key,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

fn aad_v3(deployment: &str, kid: &str, alg: &str, header: &[u8]) -> Vec<u8> {
    let mut a = b"jotgate:signing-key:v3\0".to_vec();
    for part in [deployment.as_bytes(), kid.as_bytes(), alg.as_bytes()] {
        a.extend_from_slice(&(part.len() as u64).to_be_bytes());
        a.extend_from_slice(part);
    }
    a.extend_from_slice(header);
    a
}

fn retired_field(retired_at: Option<i64>) -> [u8; RETIRED_LEN] {
    let mut f = [0u8; RETIRED_LEN];
    if let Some(at) = retired_at {
        f[0] = 1;
        f[1..].copy_from_slice(&at.to_be_bytes());
    }
    f
}

fn parse_retired(f: &[u8]) -> Option<Option<i64>> {
    match f.split_first()? {
        (0, rest) if rest.iter().all(|b| *b == 0) => Some(None),
        (1, rest) => Some(Some(i64::from_be_bytes(rest.try_into().ok()?))),
        _ => None,
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
        let root = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &bytes);
        let sub = aws_lc_rs::hmac::sign(&root, b"jotgate:derive:v1");
        let derive = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, sub.as_ref());
        RandomizedNonceKey::new(&AES_256_GCM, &bytes)
            .map(|key| Self { key, id, derive })
            .map_err(|_| SealError::BadMasterKey)
    }

    /// A secret bound to this master key: HMAC-SHA256 over `context` and `input`, base64url.
    /// Whoever reads `input` from the store without the master key cannot compute it; a
    /// new master key gives a new one.
    pub fn derive(&self, context: &str, input: &[u8]) -> String {
        let mut msg = Vec::with_capacity(context.len() + 1 + input.len());
        msg.extend_from_slice(context.as_bytes());
        msg.push(0);
        msg.extend_from_slice(input);
        let tag = aws_lc_rs::hmac::sign(&self.derive, &msg);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref())
    }

    /// The id written into what it seals (hex, for messages).
    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Seal the private key `kid` of algorithm `alg` for `deployment` (format 3), recording
    /// its life cycle.
    fn seal(
        &self,
        deployment: &str,
        kid: &str,
        alg: &str,
        life: Life,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        if !valid_kid(kid) {
            return Err(SealError::BadKid);
        }
        let mut header = Vec::with_capacity(HEADER_LEN);
        header.extend_from_slice(MAGIC3);
        header.extend_from_slice(&self.id);
        header.extend_from_slice(&life.created_at.to_be_bytes());
        header.extend_from_slice(&retired_field(life.retired_at));
        let mut buf = Zeroizing::new(plaintext.to_vec());
        let aad = aad_v3(deployment, kid, alg, &header);
        let nonce = self
            .key
            .seal_in_place_append_tag(Aad::from(aad.as_slice()), &mut *buf)
            .map_err(|_| SealError::Seal)?;
        let mut out = header;
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

/// A key's life cycle, as a sealed key records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    /// When it starts signing.
    pub created_at: i64,
    /// When it was retired (0: revoked), if it was.
    pub retired_at: Option<i64>,
}

/// What [`MasterKeys::open`] found.
pub struct Opened {
    pub plaintext: Zeroizing<Vec<u8>>,
    /// Sealed in an older format or with an old master key: seal it again with the current
    /// one.
    pub reseal: bool,
    /// The life cycle the blob itself records (format 3; `None` for older formats),
    /// whatever the row says.
    pub life: Option<Life>,
}

impl MasterKeys {
    pub fn new(current: MasterKey, old: Vec<MasterKey>) -> Self {
        Self { current, old }
    }

    /// Seal private key `kid` of algorithm `alg` for `deployment` (jotgate: the store's
    /// id), with its life cycle. A blob sealed for one deployment does not open for another.
    pub fn seal(
        &self,
        deployment: &str,
        kid: &str,
        alg: &str,
        life: Life,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, SealError> {
        self.current.seal(deployment, kid, alg, life, plaintext)
    }

    /// Open a sealed key `kid` of algorithm `alg` of `deployment`, with whichever
    /// configured master key sealed it.
    pub fn open(
        &self,
        deployment: &str,
        kid: &str,
        alg: &str,
        sealed: &[u8],
    ) -> Result<Opened, SealError> {
        if !valid_kid(kid) {
            return Err(SealError::BadKid);
        }
        let all = || std::iter::once(&self.current).chain(&self.old);
        let by_id = |id: &[u8]| {
            all().find(|m| m.id[..] == *id).ok_or_else(|| {
                let hex = id.iter().map(|b| format!("{b:02x}")).collect();
                SealError::UnknownMasterKey(kid.to_string(), hex)
            })
        };
        let err = || SealError::Open(kid.to_string());
        if sealed.starts_with(MAGIC3) {
            if sealed.len() < HEADER_LEN {
                return Err(err());
            }
            let (header, body) = sealed.split_at(HEADER_LEN);
            let m = by_id(&header[4..4 + ID_LEN])?;
            let created = &header[4 + ID_LEN..4 + ID_LEN + CREATED_LEN];
            let created_at = i64::from_be_bytes(created.try_into().map_err(|_| err())?);
            let retired_at = parse_retired(&header[4 + ID_LEN + CREATED_LEN..]).ok_or_else(err)?;
            let aad = aad_v3(deployment, kid, alg, header);
            let plaintext = m.open_body(kid, &aad, body)?;
            return Ok(Opened {
                plaintext,
                reseal: m.id != self.current.id,
                life: Some(Life {
                    created_at,
                    retired_at,
                }),
            });
        }
        if let Some(rest) = sealed.strip_prefix(MAGIC2) {
            if rest.len() < ID_LEN {
                return Err(err());
            }
            let (id, body) = rest.split_at(ID_LEN);
            let plaintext = by_id(id)?.open_body(kid, &aad_v2(kid, alg), body)?;
            return Ok(Opened {
                plaintext,
                reseal: true,
                life: None,
            });
        }
        let body = sealed.strip_prefix(MAGIC).ok_or_else(err)?;
        for m in all() {
            if let Ok(plaintext) = m.open_body(kid, kid.as_bytes(), body) {
                return Ok(Opened {
                    plaintext,
                    reseal: true,
                    life: None,
                });
            }
        }
        Err(err())
    }
}

/// True when `stored` is sealed in the current format, bound to its store.
pub fn is_bound_to_store(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC3)
}

/// True when `stored` is a sealed key (as opposed to plain PKCS#8 DER or a secret).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(MAGIC) || stored.starts_with(MAGIC2) || stored.starts_with(MAGIC3)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    const D: &str = "3f1c2b7e-store";
    const LIVE: Life = Life {
        created_at: 1_700_000_000,
        retired_at: None,
    };

    fn keys(current: &str, old: &[&str]) -> MasterKeys {
        MasterKeys::new(
            MasterKey::from_base64(current).unwrap(),
            old.iter()
                .map(|k| MasterKey::from_base64(k).unwrap())
                .collect(),
        )
    }

    #[test]
    fn seal_open_round_trip_bound_to_deployment_kid_and_alg() {
        let m = keys(KEY, &[]);
        let sealed = m.seal(D, "k1", "ES256", LIVE, b"private der").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(11).any(|w| w == b"private der"));
        let o = m.open(D, "k1", "ES256", &sealed).unwrap();
        assert_eq!(&o.plaintext[..], b"private der");
        assert!(!o.reseal);
        assert_eq!(o.life, Some(LIVE));
        // Another kid or alg, another deployment, another master key, or a flipped byte:
        // refused.
        assert!(m.open(D, "k2", "ES256", &sealed).is_err());
        assert!(m.open(D, "k1", "RS256", &sealed).is_err());
        assert!(matches!(
            m.open("another-store", "k1", "ES256", &sealed),
            Err(SealError::Open(_))
        ));
        let other = keys(&KEY.replace("q", "r"), &[]);
        assert!(matches!(
            other.open(D, "k1", "ES256", &sealed),
            Err(SealError::UnknownMasterKey(..))
        ));
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(m.open(D, "k1", "ES256", &bad).is_err());
        // Two seals of the same key differ (random nonce).
        assert_ne!(
            m.seal(D, "k1", "ES256", LIVE, b"x").unwrap(),
            m.seal(D, "k1", "ES256", LIVE, b"x").unwrap()
        );
    }

    /// The life cycle a blob records is authenticated: cleared, moved or postponed, it no
    /// longer opens.
    #[test]
    fn a_sealed_life_cycle_cannot_be_changed() {
        let m = keys(KEY, &[]);
        let retired_life = Life {
            created_at: 100,
            retired_at: Some(1_800_000_000),
        };
        let retired = m.seal(D, "k1", "EdDSA", retired_life, b"der").unwrap();
        assert_eq!(
            m.open(D, "k1", "EdDSA", &retired).unwrap().life,
            Some(retired_life)
        );
        let revoked_life = Life {
            created_at: 100,
            retired_at: Some(0),
        };
        let revoked = m.seal(D, "k1", "EdDSA", revoked_life, b"der").unwrap();
        assert_eq!(
            m.open(D, "k1", "EdDSA", &revoked).unwrap().life,
            Some(revoked_life)
        );
        let field = 4 + ID_LEN + CREATED_LEN;
        let mut cleared = retired.clone();
        cleared[field..field + RETIRED_LEN].fill(0);
        assert!(m.open(D, "k1", "EdDSA", &cleared).is_err());
        let mut later = retired.clone();
        later[field + RETIRED_LEN - 1] ^= 1;
        assert!(m.open(D, "k1", "EdDSA", &later).is_err());
        let mut moved = retired.clone();
        moved[4 + ID_LEN + CREATED_LEN - 1] ^= 1;
        assert!(m.open(D, "k1", "EdDSA", &moved).is_err());
    }

    /// No kid can spell another format's associated data: a format-2 blob of k1, its
    /// master-key id cut out, under a kid equal to k1's format-2 associated data, read as
    /// format 1 (which bound the raw kid), is refused — and so is any such kid.
    #[test]
    fn a_kid_cannot_replay_another_formats_associated_data() {
        let m = keys(KEY, &[]);
        let k = MasterKey::from_base64(KEY).unwrap();
        let aad = aad_v2("k1", "EdDSA");
        let mut v2 = b"der".to_vec();
        let nonce = k
            .key
            .seal_in_place_append_tag(Aad::from(aad.as_slice()), &mut v2)
            .unwrap();
        let as_v1 = [MAGIC.as_slice(), nonce.as_ref(), &v2].concat();
        let forged_kid = String::from_utf8(aad).unwrap();
        assert!(matches!(
            m.open(D, &forged_kid, "EdDSA", &as_v1),
            Err(SealError::BadKid)
        ));
        assert!(matches!(
            m.seal(D, "a\0b", "EdDSA", LIVE, b"der"),
            Err(SealError::BadKid)
        ));
        assert!(m.seal(D, &"k".repeat(257), "EdDSA", LIVE, b"der").is_err());
    }

    #[test]
    fn a_master_key_can_be_replaced_and_old_formats_still_open() {
        let old_key = KEY;
        let new_key = KEY.replace("q", "r");
        let before = keys(old_key, &[])
            .seal(D, "k1", "EdDSA", LIVE, b"der")
            .unwrap();
        let after = keys(&new_key, &[old_key]);
        let o = after.open(D, "k1", "EdDSA", &before).unwrap();
        assert_eq!(&o.plaintext[..], b"der");
        assert!(o.reseal, "sealed with an old master key");
        let m = MasterKey::from_base64(old_key).unwrap();
        // Format 2 blobs (purpose, kid and alg as associated data).
        let mut v2 = b"der".to_vec();
        let nonce = m
            .key
            .seal_in_place_append_tag(Aad::from(aad_v2("k1", "EdDSA").as_slice()), &mut v2)
            .unwrap();
        let blob = [MAGIC2.as_slice(), &m.id, nonce.as_ref(), &v2].concat();
        let o = after.open(D, "k1", "EdDSA", &blob).unwrap();
        assert!(o.reseal && &o.plaintext[..] == b"der" && o.life.is_none());
        // Format 1 blobs (kid as associated data).
        let mut v1 = b"der".to_vec();
        let nonce = m
            .key
            .seal_in_place_append_tag(Aad::from(b"k1".as_slice()), &mut v1)
            .unwrap();
        let blob = [MAGIC.as_slice(), nonce.as_ref(), &v1].concat();
        let o = after.open(D, "k1", "EdDSA", &blob).unwrap();
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

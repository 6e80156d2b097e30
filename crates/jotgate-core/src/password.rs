//! Password policy and argon2id hashing (PHC strings, per-user random salt, optional pepper).
//!
//! Hashing is CPU- and memory-heavy on purpose (OWASP: m=19 MiB, t=2, p=1, ~18 ms). This
//! module is synchronous; the server runs it on a bounded pool off the async threads.
//! [`PasswordHasher::verify_dummy_in`] costs the same as a real check, for unknown
//! usernames, without a dummy hash computed at start-up (cold start matters on Lambda).

use argon2::password_hash::phc::{Output, ParamsString, Salt};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHash, Version};
use secrecy::{ExposeSecret, SecretBox, SecretString};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Shortest password accepted by default, in characters (NIST SP 800-63B's minimum; a
/// deployment may ask for more with [`check_policy_min`]).
pub const MIN_LEN: usize = 8;
/// Longest password accepted, in bytes: hashing cost must not grow with attacker input.
pub const MAX_BYTES: usize = 1024;

/// Common passwords of public breach corpora, NFKC, lower case, sorted, one a line; only
/// those long enough to pass the length rule (the zxcvbn-ts common list, MIT: see
/// `data/common-passwords.LICENSE.txt`). A password equal to one, ignoring case, is refused.
const COMMON: &str = include_str!("../data/common-passwords.txt");

fn is_common(lower: &str) -> bool {
    // The list is sorted: a binary search over its lines, without building an index.
    let (mut lo, mut hi) = (0usize, COMMON.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        let start = COMMON[..mid].rfind('\n').map_or(0, |i| i + 1);
        let end = COMMON[start..]
            .find('\n')
            .map_or(COMMON.len(), |i| start + i);
        match COMMON[start..end].cmp(lower) {
            std::cmp::Ordering::Equal => return true,
            std::cmp::Ordering::Less => lo = end + 1,
            std::cmp::Ordering::Greater => hi = start,
        }
    }
    false
}

/// Does a character count towards a password's length? White space, combining marks and
/// invisible format characters (zero-width spaces and joiners, variation selectors, the
/// soft hyphen, the byte-order mark) do not.
fn counts(c: char) -> bool {
    !(c.is_whitespace()
        || unicode_normalization::char::is_combining_mark(c)
        || matches!(c, '\u{ad}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}'))
}

/// The form a password is hashed in (NIST SP 800-63B §5.1.1.2): Unicode NFKC, so that `ﬁ`
/// and `fi`, or a composed and a decomposed `é`, are the same password.
/// The copy is wiped when dropped.
pub fn normalize(password: &str) -> Zeroizing<String> {
    use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfkc_quick};
    Zeroizing::new(if is_nfkc_quick(password.chars()) == IsNormalized::Yes {
        password.to_string()
    } else {
        password.nfkc().collect()
    })
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error(
        "password must be at least {0} characters long (white space and combining marks alone do not count)"
    )]
    TooShort(usize),
    #[error("password must not contain control characters")]
    ControlCharacter,
    #[error("password must be at most {MAX_BYTES} bytes long")]
    TooLong,
    #[error("password must not be the same as the username")]
    SameAsUsername,
    #[error("password is one of the most commonly used passwords; choose another")]
    TooCommon,
    #[error("invalid argon2 parameters: {0}")]
    Params(String),
    #[error("password hashing failed")]
    Hashing,
}

/// Check the policy on the normalised password: no control characters, at least
/// [`MIN_LEN`] code points that are neither white space nor combining marks, not the
/// username, not a common password.
pub fn check_policy(password: &str, username_canonical: &str) -> Result<(), PasswordError> {
    check_policy_min(password, username_canonical, MIN_LEN)
}

/// [`check_policy`] with another minimum length (never below [`MIN_LEN`]).
pub fn check_policy_min(
    password: &str,
    username_canonical: &str,
    min_len: usize,
) -> Result<(), PasswordError> {
    let min_len = min_len.max(MIN_LEN);
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().any(char::is_control) {
        return Err(PasswordError::ControlCharacter);
    }
    let pw = normalize(password);
    let substantial = pw.chars().filter(|c| counts(*c)).count();
    if substantial < min_len {
        return Err(PasswordError::TooShort(min_len));
    }
    if Zeroizing::new(crate::username::canonical_key(&pw)).as_str() == username_canonical {
        return Err(PasswordError::SameAsUsername);
    }
    if is_common(&Zeroizing::new(pw.to_lowercase())) {
        return Err(PasswordError::TooCommon);
    }
    Ok(())
}

/// The outcome of [`PasswordHasher::check_in`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Check {
    pub matched: bool,
    /// The stored hash should be replaced by one made now (other parameters, or made from
    /// the password as typed rather than normalised).
    pub rehash: bool,
}

/// argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// OWASP's recommendation: m=19 MiB, t=2, p=1.
    fn default() -> Self {
        Self {
            memory_kib: 19 * 1024,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// argon2 working memory (the whole memory cost, 19 MiB by default), kept by a hashing
/// thread and reused: no allocation and no page faults per hash, and a resident size that
/// is bounded by the number of hashing threads.
#[derive(Default)]
pub struct Workspace(Vec<Block>);

impl Workspace {
    /// Whether the working memory is held (after a first hash, until [`release`](Self::release)).
    pub fn is_allocated(&self) -> bool {
        self.0.capacity() > 0
    }

    /// Give the working memory back to the system: the resident size drops at once.
    pub fn release(&mut self) {
        self.0 = Vec::new();
    }

    fn blocks(&mut self, n: usize) -> &mut [Block] {
        if self.0.len() < n {
            if self.0.capacity() == 0 {
                // Reserve at least MAPPED_ALWAYS: glibc serves a block that large from its
                // own mapping and unmaps it on free, every time. A smaller one (19 MiB)
                // is mapped the first time only: freeing it raises glibc's dynamic mmap
                // threshold to its size, the next one comes from the thread's heap, and
                // freeing that returns nothing. Only the blocks used are touched, so the
                // resident size stays the memory cost.
                let at_least = MAPPED_ALWAYS.div_ceil(std::mem::size_of::<Block>());
                self.0.reserve_exact(n.max(at_least));
            }
            self.0.resize(n, Block::default());
        }
        &mut self.0[..n]
    }
}

/// More than glibc's largest dynamic mmap threshold (`DEFAULT_MMAP_THRESHOLD_MAX`, 32 MiB
/// on 64-bit systems, mallopt(3)): allocations this large are always mapped on their own.
const MAPPED_ALWAYS: usize = 33 << 20;

/// Shortest pepper accepted, in bytes.
pub const MIN_PEPPER_BYTES: usize = 32;

/// A server-side pepper and its id: the first 6 bytes of SHA-256 over it, written into each
/// hash as argon2's `keyid`, so that a hash names the pepper it was made with and the
/// pepper can be changed (old ones kept for checking, hashes upgraded at login).
struct Pepper {
    id: [u8; 6],
    secret: SecretBox<[u8]>,
}

impl Pepper {
    fn new(s: &SecretString) -> Self {
        let bytes = s.expose_secret().as_bytes();
        let digest = crate::sha256(bytes);
        let mut id = [0u8; 6];
        id.copy_from_slice(&digest[..6]);
        Self {
            id,
            secret: SecretBox::new(bytes.into()),
        }
    }
}

/// Hashes and verifies passwords with fixed parameters and an optional server-side pepper.
pub struct PasswordHasher {
    params: Params,
    pepper: Option<Pepper>,
    old_peppers: Vec<Pepper>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("pepper", &self.pepper.as_ref().map(|_| "[redacted]"))
            .field("old_peppers", &self.old_peppers.len())
            .finish()
    }
}

impl PasswordHasher {
    /// Build a hasher. Cheap: no hashing happens until the first call.
    pub fn new(p: PasswordParams, pepper: Option<SecretString>) -> Result<Self, PasswordError> {
        Self::with_old_peppers(p, pepper, Vec::new())
    }

    /// A hasher whose pepper replaced `old_peppers`: hashes made with one of them still
    /// verify and are upgraded (see [`check_in`](Self::check_in)).
    pub fn with_old_peppers(
        p: PasswordParams,
        pepper: Option<SecretString>,
        old_peppers: Vec<SecretString>,
    ) -> Result<Self, PasswordError> {
        let pepper = pepper.map(|s| Pepper::new(&s));
        let mut builder = argon2::ParamsBuilder::new();
        builder
            .m_cost(p.memory_kib)
            .t_cost(p.iterations)
            .p_cost(p.parallelism)
            .output_len(32);
        if let Some(pp) = &pepper {
            if pp.secret.expose_secret().len() < MIN_PEPPER_BYTES {
                return Err(PasswordError::Params(format!(
                    "the pepper must be at least {MIN_PEPPER_BYTES} bytes (e.g. `openssl rand -base64 32`); to replace a shorter one, keep it in old_peppers"
                )));
            }
            builder.keyid(
                argon2::KeyId::new(&pp.id).map_err(|e| PasswordError::Params(e.to_string()))?,
            );
        }
        let params = builder
            .build()
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        Ok(Self {
            params,
            pepper,
            old_peppers: old_peppers.iter().map(Pepper::new).collect(),
        })
    }

    fn argon<'a>(
        pepper: Option<&'a Pepper>,
        alg: Algorithm,
        version: Version,
        params: Params,
    ) -> Result<Argon2<'a>, PasswordError> {
        match pepper {
            None => Ok(Argon2::new(alg, version, params)),
            Some(p) => Argon2::new_with_secret(p.secret.expose_secret(), alg, version, params)
                .map_err(|e| PasswordError::Params(e.to_string())),
        }
    }

    /// The peppers a stored hash may have been made with: the one its `keyid` names; for a
    /// hash without one (made before pepper ids), the current pepper (or none), then the
    /// old ones.
    fn peppers_for(&self, keyid: &[u8]) -> Vec<Option<&Pepper>> {
        let all = self.pepper.iter().chain(&self.old_peppers);
        if keyid.is_empty() {
            let mut v: Vec<Option<&Pepper>> = vec![self.pepper.as_ref()];
            v.extend(self.old_peppers.iter().map(Some));
            // Made before any pepper was configured.
            if self.pepper.is_some() {
                v.push(None);
            }
            v
        } else {
            all.filter(|p| p.id[..] == *keyid)
                .map(Some)
                .take(1)
                .collect()
        }
    }

    /// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a fresh random salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.hash_in(password, &mut Workspace::default())
    }

    /// [`hash`](Self::hash) computed in reusable working memory.
    pub fn hash_in(&self, password: &str, ws: &mut Workspace) -> Result<String, PasswordError> {
        let salt = crate::random::bytes(16);
        let argon = Self::argon(
            self.pepper.as_ref(),
            Algorithm::Argon2id,
            Version::V0x13,
            self.params.clone(),
        )?;
        let mut out = [0u8; 32];
        let password = normalize(password);
        argon
            .hash_password_into_with_memory(
                password.as_bytes(),
                &salt,
                &mut out,
                ws.blocks(self.params.block_count()),
            )
            .map_err(|_| PasswordError::Hashing)?;
        let phc = PasswordHash {
            algorithm: argon2::ARGON2ID_IDENT,
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|_| PasswordError::Hashing)?,
            salt: Some(Salt::new(&salt).map_err(|_| PasswordError::Hashing)?),
            hash: Some(Output::new(&out).map_err(|_| PasswordError::Hashing)?),
        };
        Ok(phc.to_string())
    }

    /// True when `password` matches the PHC string. A malformed stored hash never matches.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        self.verify_in(password, phc, &mut Workspace::default())
    }

    /// [`verify`](Self::verify) computed in reusable working memory, with the parameters the
    /// stored hash was made with, compared in constant time.
    pub fn verify_in(&self, password: &str, phc: &str, ws: &mut Workspace) -> bool {
        self.check_in(password, phc, ws).matched
    }

    /// Verify the normalised password; for a hash made before passwords were normalised,
    /// also the password as typed (then `rehash` says so: store a new hash).
    pub fn check_in(&self, password: &str, phc: &str, ws: &mut Workspace) -> Check {
        let normal = normalize(password);
        if self.verify_raw(&normal, phc, ws) {
            return Check {
                matched: true,
                rehash: self.needs_rehash(phc),
            };
        }
        let matched = normal.as_str() != password && self.verify_raw(password, phc, ws);
        Check {
            matched,
            rehash: matched,
        }
    }

    fn verify_raw(&self, password: &str, phc: &str, ws: &mut Workspace) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let Ok(alg) = Algorithm::try_from(parsed.algorithm.as_str()) else {
            return false;
        };
        let Ok(version) = parsed
            .version
            .map_or(Ok(Version::default()), Version::try_from)
        else {
            return false;
        };
        let Ok(params) = Params::try_from(&parsed) else {
            return false;
        };
        // A planted hash must not pin a worker's memory or time: parameters far above
        // today's are refused unchecked.
        if params.m_cost() > self.params.m_cost().saturating_mul(4).max(64 * 1024)
            || params.t_cost() > self.params.t_cost().saturating_mul(4).max(8)
            || params.p_cost() > self.params.p_cost().saturating_mul(4).max(4)
        {
            return false;
        }
        let blocks = params.block_count();
        let keyid = params.keyid().to_vec();
        let mut out = vec![0u8; expected.len()];
        for pepper in self.peppers_for(&keyid) {
            let Ok(argon) = Self::argon(pepper, alg, version, params.clone()) else {
                continue;
            };
            if argon
                .hash_password_into_with_memory(
                    password.as_bytes(),
                    salt,
                    &mut out,
                    ws.blocks(blocks),
                )
                .is_ok()
                && bool::from(out.ct_eq(expected.as_bytes()))
            {
                return true;
            }
        }
        false
    }

    /// Spend the same work as a verification for a user that does not exist: one argon2
    /// computation with the current parameters.
    pub fn verify_dummy_in(&self, password: &str, ws: &mut Workspace) {
        let _ = self.hash_in(password, ws);
        // A failed check of a real account also tries the typed form when normalisation
        // changed it: the same work here, so the time does not tell the two apart.
        if normalize(password).as_str() != password {
            let _ = self.hash_in(password, ws);
        }
    }

    /// True when the stored hash was made otherwise than a hash made now would be: not
    /// argon2id v0x13, other parameters or output length, or another pepper (or none).
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        if parsed.algorithm != argon2::ARGON2ID_IDENT
            || parsed.version != Some(Version::V0x13.into())
            || parsed.hash.is_none_or(|h| h.len() != 32)
        {
            return true;
        }
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
                    || p.keyid() != self.params.keyid()
            }
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PasswordParams {
        PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    #[test]
    fn hash_and_verify_round_trip() {
        let h = PasswordHasher::new(cheap(), None).unwrap();
        let phc = h.hash("correct horse battery").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(h.verify("correct horse battery", &phc));
        assert!(!h.verify("wrong", &phc));
        assert!(!h.verify("x", "not a phc string"));
        // Two hashes of one password differ: per-user random salt.
        assert_ne!(phc, h.hash("correct horse battery").unwrap());
        assert!(!h.needs_rehash(&phc));
        let stronger = PasswordHasher::new(PasswordParams::default(), None).unwrap();
        assert!(stronger.needs_rehash(&phc));
    }

    #[test]
    fn phc_strings_interoperate_with_the_argon2_crate() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let ours = PasswordHasher::new(cheap(), None).unwrap();
        let theirs = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        let phc = ours.hash("correct horse battery").unwrap();
        let parsed = PasswordHash::new(&phc).unwrap();
        assert!(
            theirs
                .verify_password(b"correct horse battery", &parsed)
                .is_ok()
        );
        assert!(theirs.verify_password(b"wrong", &parsed).is_err());
        let made_by_them = theirs
            .hash_password(b"correct horse battery")
            .unwrap()
            .to_string();
        let mut ws = Workspace::default();
        assert!(ours.verify_in("correct horse battery", &made_by_them, &mut ws));
        assert!(!ours.verify_in("correct horse batterz", &made_by_them, &mut ws));
        // Other parameters than the current ones verify too (the workspace grows).
        let bigger = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(4096, 2, 1, None).unwrap(),
        );
        let phc = bigger.hash_password(b"pw-pw-pw-pw").unwrap().to_string();
        assert!(ours.verify_in("pw-pw-pw-pw", &phc, &mut ws));
        // Truncated or foreign strings never match.
        assert!(!ours.verify_in("pw-pw-pw-pw", &phc[..phc.len() - 4], &mut ws));
        assert!(!ours.verify_in("x", "$2b$12$abcdefghijklmnopqrstuu", &mut ws));
    }

    const PA: &str = "pepper-a-0123456789-0123456789-0123456789";
    const PB: &str = "pepper-b-0123456789-0123456789-0123456789";

    #[test]
    fn pepper_is_part_of_the_hash_and_names_itself() {
        let a = PasswordHasher::new(cheap(), Some(SecretString::from(PA))).unwrap();
        let b = PasswordHasher::new(cheap(), Some(SecretString::from(PB))).unwrap();
        let phc = a.hash("correct horse battery").unwrap();
        assert!(phc.contains(",keyid="), "{phc}");
        assert!(a.verify("correct horse battery", &phc));
        assert!(!b.verify("correct horse battery", &phc));
        assert!(!format!("{a:?}").contains("pepper-a"));
        // Short peppers are refused.
        assert!(PasswordHasher::new(cheap(), Some(SecretString::from("short"))).is_err());
    }

    #[test]
    fn a_pepper_can_be_replaced_and_hashes_are_upgraded() {
        let a = PasswordHasher::new(cheap(), Some(SecretString::from(PA))).unwrap();
        let old = a.hash("correct horse battery").unwrap();
        // A hash from before pepper ids (no keyid), made with the old pepper.
        let legacy = {
            let argon = Argon2::new_with_secret(
                PA.as_bytes(),
                Algorithm::Argon2id,
                Version::V0x13,
                Params::new(1024, 1, 1, None).unwrap(),
            )
            .unwrap();
            use argon2::PasswordHasher as _;
            argon
                .hash_password(b"correct horse battery")
                .unwrap()
                .to_string()
        };
        let b = PasswordHasher::with_old_peppers(
            cheap(),
            Some(SecretString::from(PB)),
            vec![SecretString::from(PA)],
        )
        .unwrap();
        let mut ws = Workspace::default();
        for h in [&old, &legacy] {
            let c = b.check_in("correct horse battery", h, &mut ws);
            assert!(c.matched && c.rehash, "{h}");
            assert!(!b.check_in("wrong horse battery", h, &mut ws).matched);
        }
        let new = b.hash("correct horse battery").unwrap();
        assert!(!b.needs_rehash(&new));
        // A pepper added where there was none: hashes made without one still open.
        let none = PasswordHasher::new(cheap(), None).unwrap();
        let unpeppered = none.hash("correct horse battery").unwrap();
        let c = a.check_in("correct horse battery", &unpeppered, &mut ws);
        assert!(c.matched && c.rehash);
        // Without the old pepper, old hashes no longer open.
        let c = PasswordHasher::new(cheap(), Some(SecretString::from(PB))).unwrap();
        assert!(!c.verify("correct horse battery", &old));
    }

    #[test]
    fn foreign_and_planted_hashes() {
        let h = PasswordHasher::new(cheap(), None).unwrap();
        use argon2::PasswordHasher as _;
        // argon2i, or another output length: verified, then rehashed.
        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        )
        .hash_password(b"correct horse battery")
        .unwrap()
        .to_string();
        let c = h.check_in("correct horse battery", &argon2i, &mut Workspace::default());
        assert!(c.matched && c.rehash);
        let long = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, Some(64)).unwrap(),
        )
        .hash_password(b"correct horse battery")
        .unwrap()
        .to_string();
        assert!(h.needs_rehash(&long));
        // Parameters far above today's are refused without being computed.
        let planted = "$argon2id$v=19$m=4000000,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g";
        assert!(!h.verify("anything", planted));
    }

    #[test]
    fn policy() {
        assert_eq!(
            check_policy("short", "bob"),
            Err(PasswordError::TooShort(MIN_LEN))
        );
        assert_eq!(
            check_policy("Password123", "bob"),
            Err(PasswordError::TooCommon)
        );
        assert_eq!(
            check_policy("LongUserName", "longusername"),
            Err(PasswordError::SameAsUsername)
        );
        assert_eq!(
            check_policy(&"x".repeat(2000), "bob"),
            Err(PasswordError::TooLong)
        );
        assert_eq!(check_policy("correct horse battery", "bob"), Ok(()));
        // NIST SP 800-63B: control characters, white space or combining marks alone, and
        // common passwords in any case are refused; length counts code points.
        for bad in [
            "\0\0\0\0\0\0\0\0".to_string(),
            " ".repeat(12),
            "\u{301}".repeat(12),
            "abc\tdefghij".to_string(),
            "QWERTYUIOP".to_string(),
            "ILOVEYOU".to_string(),
            "baseball1".to_string(),
            "\u{200b}".repeat(12),
            "ab\u{200d}\u{200d}\u{200d}\u{200d}\u{200d}\u{200d}".to_string(),
        ] {
            assert!(check_policy(&bad, "bob").is_err(), "{bad:?}");
        }
        assert_eq!(
            check_policy("ｑｗｅｒｔｙｕｉｏｐ", "bob"),
            Err(PasswordError::TooCommon)
        );
        assert_eq!(check_policy("日本語のパスワード", "bob"), Ok(()));
        assert!(is_common("password") && !is_common("correct horse battery"));
        assert_eq!(
            check_policy_min("correct horse", "bob", 15),
            Err(PasswordError::TooShort(15))
        );
        assert!(is_common(COMMON.lines().next().unwrap()));
        assert!(is_common(COMMON.lines().last().unwrap()));
    }

    #[test]
    fn passwords_are_normalised_and_old_hashes_still_open() {
        let h = PasswordHasher::new(cheap(), None).unwrap();
        // "ﬁﬁﬁﬁ…" (ligatures) and "fifi…" are one password.
        let phc = h.hash("\u{fb01}\u{fb01}\u{fb01}\u{fb01}-secret").unwrap();
        assert!(h.verify("fifififi-secret", &phc));
        // A hash made from the typed form (before normalisation) opens once and asks for
        // a rehash.
        let theirs = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        use argon2::PasswordHasher as _;
        let raw = "\u{fb01}\u{fb01}\u{fb01}\u{fb01}-secret";
        let old = theirs.hash_password(raw.as_bytes()).unwrap().to_string();
        let mut ws = Workspace::default();
        let c = h.check_in(raw, &old, &mut ws);
        assert!(c.matched && c.rehash);
        assert!(!h.check_in("wrong password", &old, &mut ws).matched);
    }
}

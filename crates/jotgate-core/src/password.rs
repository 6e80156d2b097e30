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

/// Shortest password accepted, in characters.
pub const MIN_LEN: usize = 8;
/// Longest password accepted, in bytes: hashing cost must not grow with attacker input.
pub const MAX_BYTES: usize = 1024;

/// The most common passwords of public breach corpora; a password equal to one of them
/// (ignoring case) is refused.
const COMMON: &[&str] = &[
    "12345678",
    "123456789",
    "1234567890",
    "password",
    "password1",
    "password12",
    "password123",
    "passw0rd",
    "qwertyuiop",
    "qwerty123",
    "qwerty12",
    "1q2w3e4r",
    "1q2w3e4r5t",
    "11111111",
    "00000000",
    "12341234",
    "88888888",
    "87654321",
    "abcd1234",
    "abc12345",
    "iloveyou",
    "iloveyou1",
    "sunshine",
    "princess",
    "football",
    "baseball",
    "welcome1",
    "welcome123",
    "letmein1",
    "trustno1",
    "superman",
    "starwars",
    "whatever",
    "computer",
    "michelle",
    "jennifer",
    "corvette",
    "mercedes",
    "1qaz2wsx",
    "zaq12wsx",
    "q1w2e3r4",
    "q1w2e3r4t5",
    "asdfghjkl",
    "asdf1234",
    "zxcvbnm1",
    "changeme",
    "changeme1",
    "admin123",
    "administrator",
    "letmein123",
    "monkey123",
    "dragon123",
    "master123",
    "secret123",
    "default1",
    "p@ssw0rd",
    "p@ssword",
    "password!",
    "qwerty1234",
    "1234qwer",
    "aa123456",
    "a1234567",
    "123123123",
    "987654321",
    "147258369",
    "123qweasd",
    "qweasdzxc",
    "football1",
    "baseball1",
    "shadow12",
    "michael1",
    "jordan23",
    "liverpool",
    "chelsea1",
    "arsenal1",
    "samsung1",
    "internet",
    "pokemon1",
    "matrix123",
    "hello123",
    "freedom1",
    "whatever1",
    "ashley12",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("password must be at least {MIN_LEN} characters long")]
    TooShort,
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

/// Check the policy: length, not the username, not a common password.
pub fn check_policy(password: &str, username_canonical: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong);
    }
    if password.chars().count() < MIN_LEN {
        return Err(PasswordError::TooShort);
    }
    if crate::username::canonical_key(password) == username_canonical {
        return Err(PasswordError::SameAsUsername);
    }
    let lower = password.to_lowercase();
    if COMMON.contains(&lower.as_str()) {
        return Err(PasswordError::TooCommon);
    }
    Ok(())
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
    fn blocks(&mut self, n: usize) -> &mut [Block] {
        if self.0.len() < n {
            self.0.resize(n, Block::default());
        }
        &mut self.0[..n]
    }
}

/// Hashes and verifies passwords with fixed parameters and an optional server-side pepper.
pub struct PasswordHasher {
    params: Params,
    pepper: Option<SecretBox<[u8]>>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.params)
            .field("pepper", &self.pepper.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

impl PasswordHasher {
    /// Build a hasher. Cheap: no hashing happens until the first call.
    pub fn new(p: PasswordParams, pepper: Option<SecretString>) -> Result<Self, PasswordError> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let pepper = pepper.map(|s| SecretBox::new(s.expose_secret().as_bytes().into()));
        Ok(Self { params, pepper })
    }

    fn argon(
        &self,
        alg: Algorithm,
        version: Version,
        params: Params,
    ) -> Result<Argon2<'_>, PasswordError> {
        match &self.pepper {
            None => Ok(Argon2::new(alg, version, params)),
            Some(p) => Argon2::new_with_secret(p.expose_secret(), alg, version, params)
                .map_err(|e| PasswordError::Params(e.to_string())),
        }
    }

    /// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a fresh random salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        self.hash_in(password, &mut Workspace::default())
    }

    /// [`hash`](Self::hash) computed in reusable working memory.
    pub fn hash_in(&self, password: &str, ws: &mut Workspace) -> Result<String, PasswordError> {
        let salt = crate::random::bytes(16);
        let argon = self.argon(Algorithm::Argon2id, Version::V0x13, self.params.clone())?;
        let mut out = [0u8; 32];
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
        let blocks = params.block_count();
        let Ok(argon) = self.argon(alg, version, params) else {
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        argon
            .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, ws.blocks(blocks))
            .is_ok()
            && bool::from(out.ct_eq(expected.as_bytes()))
    }

    /// Spend the same work as a verification for a user that does not exist: one argon2
    /// computation with the current parameters.
    pub fn verify_dummy_in(&self, password: &str, ws: &mut Workspace) {
        let _ = self.hash_in(password, ws);
    }

    /// True when the stored hash was made with other parameters than the current ones.
    pub fn needs_rehash(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        match Params::try_from(&parsed) {
            Ok(p) => {
                p.m_cost() != self.params.m_cost()
                    || p.t_cost() != self.params.t_cost()
                    || p.p_cost() != self.params.p_cost()
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

    #[test]
    fn pepper_is_part_of_the_hash() {
        let a = PasswordHasher::new(cheap(), Some(SecretString::from("pepper-a"))).unwrap();
        let b = PasswordHasher::new(cheap(), Some(SecretString::from("pepper-b"))).unwrap();
        let phc = a.hash("correct horse battery").unwrap();
        assert!(a.verify("correct horse battery", &phc));
        assert!(!b.verify("correct horse battery", &phc));
        assert!(!format!("{a:?}").contains("pepper-a"));
    }

    #[test]
    fn policy() {
        assert_eq!(check_policy("short", "bob"), Err(PasswordError::TooShort));
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
    }
}

//! Password policy and argon2id hashing (PHC strings, per-user random salt, optional pepper).
//!
//! Hashing is CPU- and memory-heavy on purpose (OWASP: m=19 MiB, t=2, p=1, ~18 ms). This
//! module is synchronous; the server runs it on a bounded pool off the async threads.
//! [`PasswordHasher::verify_dummy`] costs the same as a real check, for unknown usernames.

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version};
use secrecy::{ExposeSecret, SecretBox, SecretString};

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

/// Hashes and verifies passwords with fixed parameters and an optional server-side pepper.
pub struct PasswordHasher {
    params: Params,
    pepper: Option<SecretBox<[u8]>>,
    /// A real hash of a random password, verified against for unknown users.
    dummy: String,
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
    /// Build a hasher. Computes one dummy hash (one hash's cost) so that unknown users can
    /// be verified against something real.
    pub fn new(p: PasswordParams, pepper: Option<SecretString>) -> Result<Self, PasswordError> {
        let params = Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| PasswordError::Params(e.to_string()))?;
        let pepper = pepper.map(|s| SecretBox::new(s.expose_secret().as_bytes().into()));
        let mut hasher = Self {
            params,
            pepper,
            dummy: String::new(),
        };
        hasher.dummy = hasher.hash(&crate::random::token(24))?;
        Ok(hasher)
    }

    fn argon(&self) -> Result<Argon2<'_>, PasswordError> {
        match &self.pepper {
            None => Ok(Argon2::new(
                Algorithm::Argon2id,
                Version::V0x13,
                self.params.clone(),
            )),
            Some(p) => Argon2::new_with_secret(
                p.expose_secret(),
                Algorithm::Argon2id,
                Version::V0x13,
                self.params.clone(),
            )
            .map_err(|e| PasswordError::Params(e.to_string())),
        }
    }

    /// A PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`) with a fresh random salt.
    pub fn hash(&self, password: &str) -> Result<String, PasswordError> {
        use argon2::PasswordHasher as _;
        let hash = self
            .argon()?
            .hash_password(password.as_bytes())
            .map_err(|_| PasswordError::Hashing)?;
        Ok(hash.to_string())
    }

    /// True when `password` matches the PHC string. A malformed stored hash never matches.
    pub fn verify(&self, password: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let Ok(argon) = self.argon() else {
            return false;
        };
        argon.verify_password(password.as_bytes(), &parsed).is_ok()
    }

    /// Spend the same work as [`verify`](Self::verify) for a user that does not exist.
    pub fn verify_dummy(&self, password: &str) {
        let _ = self.verify(password, &self.dummy);
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

    pub fn params(&self) -> PasswordParams {
        PasswordParams {
            memory_kib: self.params.m_cost(),
            iterations: self.params.t_cost(),
            parallelism: self.params.p_cost(),
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

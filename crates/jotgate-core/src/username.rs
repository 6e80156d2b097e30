//! Usernames: parsed once at the boundary, normalised so `Alice` and `alice` are one account.
//!
//! The canonical form is Unicode NFKC followed by full case folding (and NFKC again, since
//! folding can denormalise); the original spelling is kept for display.

use unicode_normalization::UnicodeNormalization;

/// Longest username accepted, in characters of the canonical form.
pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("username must not be empty")]
    Empty,
    #[error("username must be at most {MAX_LEN} characters")]
    TooLong,
    #[error(
        "username may contain only letters, digits and the characters . _ - @ + (no spaces or control characters)"
    )]
    InvalidCharacter,
}

/// A validated username: its canonical key and the spelling the user chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    canonical: String,
    display: String,
}

impl Username {
    pub fn parse(raw: &str) -> Result<Self, UsernameError> {
        if raw.len() > MAX_RAW_BYTES {
            return Err(UsernameError::TooLong);
        }
        let display: String = raw.trim().nfkc().collect();
        if display.is_empty() {
            return Err(UsernameError::Empty);
        }
        if display.chars().count() > MAX_LEN {
            return Err(UsernameError::TooLong);
        }
        if !display
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '+'))
        {
            return Err(UsernameError::InvalidCharacter);
        }
        let canonical: String = caseless::default_case_fold_str(&display).nfkc().collect();
        Ok(Self { canonical, display })
    }

    /// The comparison key: what uniqueness and lookups use.
    pub fn canonical(&self) -> &str {
        &self.canonical
    }

    /// The spelling the user signed up with.
    pub fn display(&self) -> &str {
        &self.display
    }
}

/// The canonical key of a raw string, without validation: for lookups of names that may not
/// exist (login), so an invalid name costs the same as an unknown one.
pub fn canonical_key(raw: &str) -> String {
    let display: String = raw.trim().nfkc().collect();
    caseless::default_case_fold_str(&display).nfkc().collect()
}

/// Longest raw username accepted anywhere, in bytes, before normalisation.
pub const MAX_RAW_BYTES: usize = 1024;

/// The canonical key of a name typed at login, bounded like a sign-up name (an over-long
/// name cannot name an account, and must not reach the store as a key).
pub fn lookup_key(raw: &str) -> Result<String, UsernameError> {
    if raw.len() > MAX_RAW_BYTES {
        return Err(UsernameError::TooLong);
    }
    let display: String = raw.trim().nfkc().collect();
    if display.chars().count() > MAX_LEN {
        return Err(UsernameError::TooLong);
    }
    Ok(caseless::default_case_fold_str(&display).nfkc().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_and_compatibility_forms_fold_together() {
        let a = Username::parse("Alice").unwrap();
        let b = Username::parse("alice").unwrap();
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.display(), "Alice");
        // Fullwidth letters are NFKC-equivalent to ASCII.
        let c = Username::parse("ＡＬＩＣＥ").unwrap();
        assert_eq!(c.canonical(), "alice");
        // German sharp s folds to "ss".
        assert_eq!(Username::parse("Straße").unwrap().canonical(), "strasse");
        assert_eq!(canonical_key(" ALICE "), "alice");
    }

    #[test]
    fn rejects_bad_names() {
        assert_eq!(Username::parse("  "), Err(UsernameError::Empty));
        assert_eq!(Username::parse("a b"), Err(UsernameError::InvalidCharacter));
        assert_eq!(
            Username::parse("a\u{0}b"),
            Err(UsernameError::InvalidCharacter)
        );
        assert_eq!(
            Username::parse(&"x".repeat(65)),
            Err(UsernameError::TooLong)
        );
        assert!(Username::parse("émile.d+test@example.org").is_ok());
        assert_eq!(lookup_key(&"x".repeat(3000)), Err(UsernameError::TooLong));
        assert_eq!(lookup_key(&"x".repeat(65)), Err(UsernameError::TooLong));
        assert_eq!(lookup_key(" Bob "), Ok("bob".into()));
    }
}

//! Usernames: parsed once at the boundary, normalised so `Alice` and `alice` are one account.
//!
//! The canonical form is Unicode NFKC followed by full case folding (and NFKC again, since
//! folding can denormalise); the original spelling is kept for display. NFKC folds width
//! and compatibility forms, not scripts: `аlice` (Cyrillic а) is not `alice`. So a name
//! must be written in one script (UTS #39 single-script, digits and punctuation count for
//! every script), and accounts are keyed by the UTS #39 confusable *skeleton* of the
//! canonical form, so that `аlice`, `Αlice` or `a1ice` name the account of `alice` ([`key`]).
//! Accounts made before skeleton keys are found by their canonical form ([`Lookup`]).
//!
//! [`key`]: Username::key

use unicode_normalization::UnicodeNormalization;

/// Longest username accepted, in characters of the canonical form.
pub const MAX_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    #[error("username must be written in one script (no mixing of Latin, Cyrillic, Greek…)")]
    MixedScript,
    #[error("username must not be empty")]
    Empty,
    #[error("username must be at most {MAX_LEN} characters")]
    TooLong,
    #[error(
        "username may contain only letters, digits and the characters . _ - @ + (no spaces or control characters)"
    )]
    InvalidCharacter,
    #[error(
        "username must not contain '@': usernames and email addresses share one namespace (give the address as \"email\")"
    )]
    ContainsAt,
}

/// A validated username: its canonical key and the spelling the user chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Username {
    canonical: String,
    display: String,
    key: String,
}

/// The store key of a canonical name: its confusable skeleton, case-folded and NFKC again
/// (UTS #39 §4, for case-insensitive identifiers).
fn skeleton_key(canonical: &str) -> String {
    let skel: String = unicode_security::skeleton(canonical).collect();
    caseless::default_case_fold_str(&skel).nfkc().collect()
}

/// The keys a typed name may be stored under: the skeleton key, and for accounts made
/// before skeleton keys, the canonical form. Look up both (in that order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub key: String,
    pub legacy: Option<String>,
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
        if !unicode_security::MixedScript::is_single_script(display.as_str()) {
            return Err(UsernameError::MixedScript);
        }
        let canonical: String = caseless::default_case_fold_str(&display).nfkc().collect();
        let key = skeleton_key(&canonical);
        Ok(Self {
            canonical,
            display,
            key,
        })
    }

    /// A name for a new account: as [`Username::parse`], and without `@` (or a character
    /// that normalises to it), so that no username is also an email address. Accounts made
    /// before this rule keep their names.
    pub fn parse_new(raw: &str) -> Result<Self, UsernameError> {
        let u = Self::parse(raw)?;
        if u.display.contains('@') {
            return Err(UsernameError::ContainsAt);
        }
        Ok(u)
    }

    /// The store key: unique per account, shared by every confusable spelling.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where to look for this name's account (see [`Lookup`]).
    pub fn lookup(&self) -> Lookup {
        Lookup {
            key: self.key.clone(),
            legacy: (self.canonical != self.key).then(|| self.canonical.clone()),
        }
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

/// The throttling bucket of an identifier typed at login (a username or an email
/// address): its confusable skeleton, with no length limit but [`MAX_RAW_BYTES`]. Every
/// spelling that looks alike shares it, whether it names an account or not, so that a
/// locked bucket says nothing about existence.
pub fn bucket_key(raw: &str) -> String {
    let raw = match raw.char_indices().nth(MAX_RAW_BYTES) {
        Some((i, _)) => &raw[..i],
        None => raw,
    };
    skeleton_key(&canonical_key(raw))
}

/// Longest raw username accepted anywhere, in bytes, before normalisation.
pub const MAX_RAW_BYTES: usize = 1024;

/// Where to look for the account of a name typed at login, bounded like a sign-up name
/// (an over-long name cannot name an account, and must not reach the store as a key). Not
/// otherwise validated: an invalid name costs the same as an unknown one.
pub fn lookup_key(raw: &str) -> Result<Lookup, UsernameError> {
    if raw.len() > MAX_RAW_BYTES {
        return Err(UsernameError::TooLong);
    }
    let display: String = raw.trim().nfkc().collect();
    if display.chars().count() > MAX_LEN {
        return Err(UsernameError::TooLong);
    }
    // No account's name holds one, and a store may refuse it (PostgreSQL refuses NUL in
    // text): an error here, not a lookup.
    if display.chars().any(char::is_control) {
        return Err(UsernameError::InvalidCharacter);
    }
    let canonical: String = caseless::default_case_fold_str(&display).nfkc().collect();
    let key = skeleton_key(&canonical);
    Ok(Lookup {
        legacy: (canonical != key).then_some(canonical),
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lookup_with_a_control_character_is_refused() {
        for raw in ["a\u{0}b", "al\u{7}ice", "bo\u{85}b"] {
            assert_eq!(
                lookup_key(raw),
                Err(UsernameError::InvalidCharacter),
                "{raw:?}"
            );
        }
        assert!(
            lookup_key(" alice\t").is_ok(),
            "surrounding whitespace is trimmed"
        );
    }

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
        assert_eq!(
            lookup_key(" Bob ").map(|l| l.key),
            Ok(Username::parse("bob").unwrap().key().to_string())
        );
    }

    #[test]
    fn confusable_names_are_one_account_and_scripts_do_not_mix() {
        let alice = Username::parse("alice").unwrap();
        // Cyrillic а / е, Greek Α: mixed scripts are refused at sign-up…
        for (mixed, imitated) in [
            ("\u{430}lice", "alice"),
            ("alic\u{435}", "alice"),
            ("b\u{43e}b", "bob"),
            ("\u{391}lice", "alice"),
        ] {
            assert_eq!(
                Username::parse(mixed),
                Err(UsernameError::MixedScript),
                "{mixed}"
            );
            // …and at login they name the account they imitate.
            let target = Username::parse(imitated).unwrap();
            assert_eq!(lookup_key(mixed).unwrap().key, target.key(), "{mixed}");
        }
        // Whole-script lookalikes and digit/letter lookalikes share the skeleton too.
        let cyr = Username::parse("\u{430}\u{441}\u{435}").unwrap(); // "асе"
        assert_eq!(cyr.key(), Username::parse("ace").unwrap().key());
        assert_eq!(
            Username::parse("a1ice").unwrap().key(),
            alice.key(),
            "1 and l"
        );
        // Names in one other script are fine.
        assert!(Username::parse("émile").is_ok());
        assert!(Username::parse("\u{432}\u{43b}\u{430}\u{434}").is_ok()); // влад
        assert!(Username::parse("山田").is_ok());
    }
}

#[cfg(test)]
mod new_names {
    use super::*;

    #[test]
    fn a_new_name_holds_no_at_sign_in_any_spelling() {
        assert!(Username::parse_new("alice").is_ok());
        assert_eq!(
            Username::parse_new("alice@example.com"),
            Err(UsernameError::ContainsAt)
        );
        // FULLWIDTH COMMERCIAL AT normalises (NFKC) to '@'.
        assert_eq!(
            Username::parse_new("alice\u{ff20}example.com"),
            Err(UsernameError::ContainsAt)
        );
        assert!(
            Username::parse("alice@example.com").is_ok(),
            "old names still parse"
        );
    }
}

//! Email addresses: parsed once at the boundary and normalised, so that `Alice@Example.COM`
//! and `alice@example.com` are one address.
//!
//! The normal form is trimmed, NFKC and case-folded whole (the local part too: the big
//! providers treat it case-insensitively, and an address that two accounts could claim by
//! case or by a compatibility form alone would name two accounts), with the domain put
//! through IDNA (UTS #46: `bücher.example` and `xn--bcher-kva.example` are one domain,
//! shown in Unicode). Accepted: a dot-atom local part (RFC 5322 §3.2.3, with UTF-8
//! letters as RFC 6531 allows), `@`, and a domain of at least two labels of letters,
//! digits and inner hyphens. Quoted local parts and address literals are refused: no mail
//! system a sign-up form meets needs them, and they are a parser's playground.

use unicode_normalization::UnicodeNormalization;

/// Longest address accepted, in bytes (RFC 5321 §4.5.3.1.3's path limit less `<>`).
pub const MAX_LEN: usize = 254;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("email must be at most {MAX_LEN} bytes")]
    TooLong,
    #[error("email must look like name@example.com")]
    Malformed,
}

/// The normal form of `raw`, or why it is not an address.
pub fn normalise(raw: &str) -> Result<String, EmailError> {
    if raw.len() > 4 * MAX_LEN {
        return Err(EmailError::TooLong);
    }
    let s: String = raw.trim().nfkc().collect();
    let s: String = caseless::default_case_fold_str(&s).nfkc().collect();
    let (local, domain) = s.rsplit_once('@').ok_or(EmailError::Malformed)?;
    // UTS #46: one domain, however written; shown in Unicode.
    let ascii = idna::domain_to_ascii(domain).map_err(|_| EmailError::Malformed)?;
    let (domain, ok) = idna::domain_to_unicode(&ascii);
    ok.map_err(|_| EmailError::Malformed)?;
    let s = format!("{local}@{domain}");
    if s.len() > MAX_LEN || ascii.len() > 253 {
        return Err(EmailError::TooLong);
    }
    let domain = domain.as_str();
    let atext =
        |c: char| c.is_alphanumeric() || (c.is_ascii_graphic() && !"()<>[]:;@\\,\".".contains(c));
    let local_ok = !local.is_empty()
        && local.len() <= 64
        && local
            .split('.')
            .all(|w| !w.is_empty() && w.chars().all(atext));
    let labels: Vec<&str> = domain.split('.').collect();
    let domain_ok = labels.len() >= 2
        && domain.len() <= 253
        && labels.iter().all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        });
    if local_ok && domain_ok {
        Ok(s.clone())
    } else {
        Err(EmailError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_fold_to_one_form() {
        assert_eq!(
            normalise("  Alice@Example.COM ").unwrap(),
            "alice@example.com"
        );
        assert_eq!(
            normalise("a.b+tag@mail.example.co.uk").unwrap(),
            "a.b+tag@mail.example.co.uk"
        );
        assert_eq!(
            normalise("JÖRG@bücher.example").unwrap(),
            "jörg@bücher.example"
        );
        // Composed and decomposed ö are one address; so are compatibility forms, case
        // folding beyond lower case, and a domain in Punycode.
        assert_eq!(
            normalise("jo\u{308}rg@x.example").unwrap(),
            normalise("jörg@x.example").unwrap()
        );
        assert_eq!(normalise("alice@ｃｏｒｐ.com").unwrap(), "alice@corp.com");
        assert_eq!(
            normalise("ΟΔΟΣ@x.example").unwrap(),
            normalise("οδος@x.example").unwrap()
        );
        assert_eq!(
            normalise("a@xn--bcher-kva.example").unwrap(),
            normalise("a@BÜCHER.example").unwrap()
        );
        assert_eq!(
            normalise("a@xn--bcher-kva.example").unwrap(),
            "a@bücher.example"
        );
    }

    #[test]
    fn what_is_not_an_address_is_refused() {
        for bad in [
            "",
            "alice",
            "@example.com",
            "alice@",
            "alice@localhost",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a b@example.com",
            "a@b@example.com",
            "\"quoted\"@example.com",
            "a@[127.0.0.1]",
            "a@-example.com",
            "a@example-.com",
            "a@exa_mple.com",
            "a@example..com",
            "a\n@example.com",
            "a@example.com\u{0}",
        ] {
            assert!(normalise(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            normalise(&format!("{}@example.com", "a".repeat(65))),
            Err(EmailError::Malformed)
        );
        assert_eq!(
            normalise(&format!("a@{}.com", "b".repeat(250))),
            Err(EmailError::TooLong)
        );
    }
}

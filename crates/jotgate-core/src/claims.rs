//! Access-token claims (RFC 9068 profile) and the mapping from roles to scopes.

use serde::{Deserialize, Serialize};

/// Claims of a jotgate access token. `typ: at+jwt` lives in the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    pub username: String,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(default)]
    pub scope: String,
    /// The refresh-token family (login session) this token was issued in; logout revokes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// Scopes granted by a set of roles: every account has `profile`; each role `r` grants the
/// scope `r` itself (so `admin` grants `admin`). Sorted and de-duplicated, space-separated
/// as RFC 6749 §3.3 requires.
pub fn scopes_for_roles(roles: &[String]) -> String {
    let mut scopes: Vec<&str> = vec!["profile"];
    scopes.extend(roles.iter().map(String::as_str));
    scopes.sort_unstable();
    scopes.dedup();
    scopes.join(" ")
}

/// A role name: lowercase ASCII letters, digits, `-`, `_`, `:`; 1..=64 characters.
pub fn valid_role(role: &str) -> bool {
    !role.is_empty()
        && role.len() <= 64
        && role.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b':')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_map_to_scopes() {
        assert_eq!(scopes_for_roles(&[]), "profile");
        assert_eq!(
            scopes_for_roles(&["admin".into(), "admin".into()]),
            "admin profile"
        );
        assert!(valid_role("billing:read"));
        assert!(!valid_role("Admin"));
        assert!(!valid_role(""));
    }
}

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

/// Scopes granted by a set of roles: every account has `profile`; a role defined in the
/// store (`jotgate roles set`) grants its bag of scopes (`bag` finds it), and a role never
/// defined grants the scope of its own name (so an `admin` given at `users add` grants
/// `admin`, as before roles had definitions). Sorted and de-duplicated, space-separated as
/// RFC 6749 §3.3 requires.
pub fn scopes_for_roles<'a, F>(roles: &'a [String], bag: F) -> String
where
    F: Fn(&str) -> Option<&'a [String]>,
{
    let mut scopes: Vec<&str> = vec!["profile"];
    for r in roles {
        match bag(r) {
            Some(b) => scopes.extend(b.iter().map(String::as_str)),
            None => scopes.push(r),
        }
    }
    scopes.sort_unstable();
    scopes.dedup();
    scopes.join(" ")
}

/// A scope token (RFC 6749 §3.3: printable ASCII except space, `"` and `\`), at most
/// 128 bytes.
pub fn valid_scope(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= 128
        && scope
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
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
        let none = |_: &str| None;
        assert_eq!(scopes_for_roles(&[], none), "profile");
        assert_eq!(
            scopes_for_roles(&["admin".into(), "admin".into()], none),
            "admin profile"
        );
        let paid = vec!["reports:read".to_string(), "api:read".to_string()];
        let bag = |r: &str| (r == "paid").then_some(paid.as_slice());
        assert_eq!(
            scopes_for_roles(&["paid".into(), "legacy".into()], bag),
            "api:read legacy profile reports:read"
        );
        assert!(valid_scope("read:users"));
        assert!(valid_scope("https://api.example.com/orders.read"));
        assert!(!valid_scope("a b"));
        assert!(!valid_scope("a\\b"));
        assert!(!valid_scope("quo\"te"));
        assert!(!valid_scope(""));
        assert!(valid_role("billing:read"));
        assert!(!valid_role("Admin"));
        assert!(!valid_role(""));
    }
}

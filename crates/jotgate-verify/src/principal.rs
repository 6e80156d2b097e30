//! The verified identity handlers receive.

use serde::Serialize;
use serde_json::{Map, Value};

/// Who made a request, from a verified token.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Principal {
    /// `sub`.
    pub subject: String,
    /// `username`, else `preferred_username`, else `email`, when present.
    pub username: Option<String>,
    /// From the issuer's roles claim (`roles` unless configured, e.g. `cognito:groups`).
    pub roles: Vec<String>,
    /// From `scope` (space-separated, RFC 8693/9068) or `scp` (array or string).
    pub scopes: Vec<String>,
    /// `iss`, exactly as configured.
    pub issuer: String,
    /// `exp`.
    pub expires_at: i64,
    /// Every claim of the token, as issued.
    pub claims: Map<String, Value>,
    /// The `kid` of the key that signed it.
    pub key_id: Option<String>,
    /// `jti`, `sid` and `iat`, read from `claims` once, at verification: the revocation
    /// check asks for them on every request, and a lookup in `claims` hashes with SipHash.
    #[serde(skip)]
    pub(crate) ids: Ids,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Ids {
    jti: Option<Box<str>>,
    sid: Option<Box<str>>,
    iat: Option<i64>,
    /// `aud`, a string or an array of them (RFC 7519 §4.1.3).
    aud: Box<[Box<str>]>,
}

impl Ids {
    fn of(claims: &Map<String, Value>) -> Self {
        let string = |k: &str| claims.get(k).and_then(Value::as_str).map(Box::from);
        Self {
            jti: string("jti"),
            sid: string("sid"),
            iat: claims.get("iat").and_then(Value::as_i64),
            aud: match claims.get("aud") {
                Some(Value::String(a)) => Box::new([Box::from(a.as_str())]),
                Some(Value::Array(a)) => {
                    a.iter().filter_map(Value::as_str).map(Box::from).collect()
                }
                _ => Box::new([]),
            },
        }
    }
}

impl Principal {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }

    /// `jti`, when the token has one.
    pub fn token_id(&self) -> Option<&str> {
        self.ids.jti.as_deref()
    }

    /// `sid` (jotgate: the login session), when present.
    pub fn session_id(&self) -> Option<&str> {
        self.ids.sid.as_deref()
    }

    /// Whether `aud` names `audience`.
    pub fn has_audience(&self, audience: &str) -> bool {
        self.ids.aud.iter().any(|a| &**a == audience)
    }

    /// `iat`, when present.
    pub fn issued_at(&self) -> Option<i64> {
        self.ids.iat
    }

    /// Build from verified claims. `roles_claim` is a claim name, or a dotted path into
    /// nested objects (`realm_access.roles` for Keycloak).
    pub(crate) fn from_claims(claims: Map<String, Value>, issuer: &str, roles_claim: &str) -> Self {
        let string = |k: &str| claims.get(k).and_then(Value::as_str).map(str::to_string);
        let words = |v: Option<&Value>| -> Vec<String> {
            match v {
                Some(Value::String(s)) => s.split_ascii_whitespace().map(str::to_string).collect(),
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            }
        };
        let mut scopes = words(claims.get("scope"));
        if scopes.is_empty() {
            scopes = words(claims.get("scp"));
        }
        let mut node = None;
        for (i, seg) in roles_claim.split('.').enumerate() {
            node = if i == 0 {
                claims.get(seg)
            } else {
                node.and_then(|n: &Value| n.get(seg))
            };
        }
        // A claim literally named with dots (`https://example.com/roles`) wins.
        let roles = words(claims.get(roles_claim).or(node));
        Self {
            subject: string("sub").unwrap_or_default(),
            username: string("username")
                .or_else(|| string("preferred_username"))
                .or_else(|| string("email")),
            roles,
            scopes,
            issuer: issuer.to_string(),
            expires_at: claims.get("exp").and_then(Value::as_i64).unwrap_or(0),
            ids: Ids::of(&claims),
            claims,
            key_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_claims_and_absent_when_missing_or_mistyped() {
        let claims = |v: Value| v.as_object().cloned().unwrap_or_default();
        let p = Principal::from_claims(
            claims(serde_json::json!({"sub": "u", "jti": "t1", "sid": "s1", "iat": 1700000000})),
            "iss",
            "roles",
        );
        assert_eq!(
            (p.token_id(), p.session_id(), p.issued_at()),
            (Some("t1"), Some("s1"), Some(1_700_000_000))
        );
        let p = Principal::from_claims(
            claims(serde_json::json!({"sub": "u", "jti": 5, "iat": "1700000000"})),
            "iss",
            "roles",
        );
        assert_eq!(
            (p.token_id(), p.session_id(), p.issued_at()),
            (None, None, None)
        );
    }
}

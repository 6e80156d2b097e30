//! Access tokens: one signing path and one verification policy (RFC 8725, RFC 9068).
//!
//! Verification order, cheapest and most decisive first: size cap → strict compact
//! serialisation (three base64url parts, canonical, no padding) → header policy (`typ`
//! must be `at+jwt`; `alg: none`, `jku`, `x5u`, `jwk`, `x5c` and any `crit` extension are
//! refused; `kid` must name a key we hold; `alg` must equal that key's algorithm) →
//! signature (jsonwebtoken on aws-lc-rs) → issuer and audience → time claims against the
//! caller's `now` with a small leeway (exp required, nbf honoured, iat not in the future).

use std::collections::HashMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};

use crate::claims::AccessClaims;
use crate::keys::{KeyError, KeyMaterial, SigningAlg};

/// The media type of access tokens (RFC 9068 §2.1).
pub const ACCESS_TOKEN_TYP: &str = "at+jwt";

/// Issuer-wide token settings.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub issuer: String,
    pub audience: String,
    /// Access-token lifetime in seconds.
    pub access_ttl: i64,
    /// Clock-skew allowance in seconds for exp, nbf and iat.
    pub leeway: i64,
    /// Longest token accepted, in bytes.
    pub max_token_bytes: usize,
}

impl Default for TokenPolicy {
    fn default() -> Self {
        Self {
            issuer: "http://127.0.0.1:8080".into(),
            audience: "jotgate".into(),
            access_ttl: 15 * 60,
            leeway: 30,
            max_token_bytes: 8 * 1024,
        }
    }
}

/// Which check refused a token. Stable: the server maps each to a machine code.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenErrorKind {
    TooLarge,
    Malformed,
    AlgNone,
    ForbiddenHeader(&'static str),
    UnknownCriticalExtension,
    WrongType,
    UnknownKey,
    AlgorithmMismatch,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    InvalidClaims,
    Expired,
    NotYetValid,
    IssuedInFuture,
    /// Signed by a key after it was retired (or by a revoked key).
    KeyRetired,
}

/// Why a token was refused. The message never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct TokenError {
    kind: TokenErrorKind,
}

impl TokenError {
    pub fn new(kind: TokenErrorKind) -> Self {
        Self { kind }
    }

    pub fn kind(&self) -> TokenErrorKind {
        self.kind
    }

    pub fn message(&self) -> &'static str {
        use TokenErrorKind::*;
        match self.kind {
            TooLarge => "token is too large",
            Malformed => "token is malformed",
            AlgNone => "unsigned tokens (alg none) are not accepted",
            ForbiddenHeader("jku") => "token header member jku is not trusted",
            ForbiddenHeader("x5u") => "token header member x5u is not trusted",
            ForbiddenHeader("jwk") => "token header member jwk is not trusted",
            ForbiddenHeader("x5c") => "token header member x5c is not trusted",
            ForbiddenHeader(_) => "token header carries a member that is not trusted",
            UnknownCriticalExtension => {
                "token header lists a critical extension that is not understood"
            }
            WrongType => "token is not an access token (typ must be at+jwt)",
            UnknownKey => "token is signed with an unknown key",
            AlgorithmMismatch => "token algorithm does not match its key",
            BadSignature => "token signature is invalid",
            WrongIssuer => "token issuer is not trusted",
            WrongAudience => "token audience is not accepted",
            InvalidClaims => "token claims are invalid",
            Expired => "token has expired",
            NotYetValid => "token is not valid yet",
            IssuedInFuture => "token is issued in the future",
            KeyRetired => {
                "token is signed by a key that was retired or revoked before it was issued"
            }
        }
    }

    /// A short stable code, e.g. `token_expired`.
    pub fn code(&self) -> &'static str {
        use TokenErrorKind::*;
        match self.kind {
            TooLarge => "token_too_large",
            Malformed => "token_malformed",
            AlgNone => "token_alg_none",
            ForbiddenHeader(_) => "token_header_forbidden",
            UnknownCriticalExtension => "token_crit_unknown",
            WrongType => "token_wrong_type",
            UnknownKey => "token_unknown_key",
            AlgorithmMismatch => "token_alg_mismatch",
            BadSignature => "token_bad_signature",
            WrongIssuer => "token_wrong_issuer",
            WrongAudience => "token_wrong_audience",
            InvalidClaims => "token_invalid_claims",
            Expired => "token_expired",
            NotYetValid => "token_not_yet_valid",
            IssuedInFuture => "token_issued_in_future",
            KeyRetired => "token_key_retired",
        }
    }
}

/// Signs access tokens with one key.
pub struct TokenSigner {
    kid: String,
    alg: SigningAlg,
    key: EncodingKey,
}

impl TokenSigner {
    pub fn new(key: &KeyMaterial) -> Result<Self, KeyError> {
        Ok(Self {
            kid: key.kid().to_string(),
            alg: key.alg(),
            key: key.encoding_key()?,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    pub fn sign(&self, claims: &AccessClaims) -> Result<String, KeyError> {
        let mut header = Header::new(self.alg.jwt());
        header.typ = Some(ACCESS_TOKEN_TYP.into());
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| KeyError::Malformed(e.to_string()))
    }
}

/// Verifies access tokens against a fixed set of keys under one [`TokenPolicy`].
pub struct TokenVerifier {
    policy: TokenPolicy,
    keys: HashMap<String, (SigningAlg, DecodingKey, Validation)>,
    /// kid → the instant a key was retired: a token it signed later is refused.
    not_after: HashMap<String, i64>,
}

fn part(s: &str) -> Result<Vec<u8>, TokenError> {
    if s.is_empty()
        || !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(TokenError::new(TokenErrorKind::Malformed));
    }
    // The base64 engine refuses non-canonical trailing bits, so each token has exactly one
    // accepted spelling.
    URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::new(TokenErrorKind::Malformed))
}

/// The credential of an `Authorization` header value that uses the Bearer scheme (matched
/// case-insensitively, RFC 6750 §2.1), trimmed: `Some("")` when nothing follows the
/// scheme, `None` for any other scheme. The one reading of the header that the server, the
/// edge layer, the gateway and the authorizer share.
pub fn bearer_credential(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// A compact JWS that passed the structural and header checks every verifier shares.
#[derive(Debug)]
pub struct Compact {
    /// The decoded protected header.
    pub header: serde_json::Map<String, serde_json::Value>,
    /// The header's `alg` (never `none`).
    pub alg: String,
    /// The decoded payload bytes (not yet trusted: the signature is unchecked).
    pub payload: Vec<u8>,
}

impl Compact {
    /// A string member of the header.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header.get(name).and_then(|v| v.as_str())
    }
}

/// The checks that come before any key is chosen: size cap → three canonical base64url
/// parts → JSON header → `alg` present and not `none` → no `jku`, `x5u`, `jwk`, `x5c` →
/// no `crit` (no JWS extension is understood). Used by this crate's [`TokenVerifier`] and
/// by the edge verifier for any issuer.
pub fn parse_compact(token: &str, max_bytes: usize) -> Result<Compact, TokenError> {
    use TokenErrorKind::*;
    let err = TokenError::new;
    if token.len() > max_bytes {
        return Err(err(TooLarge));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(err(Malformed));
    };
    let header_bytes = part(h)?;
    let payload = part(p)?;
    part(s)?;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&header_bytes).map_err(|_| err(Malformed))?;
    let alg = header
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or(err(Malformed))?
        .to_string();
    if alg.eq_ignore_ascii_case("none") {
        return Err(err(AlgNone));
    }
    for forbidden in ["jku", "x5u", "jwk", "x5c"] {
        if header.contains_key(forbidden) {
            return Err(err(ForbiddenHeader(forbidden)));
        }
    }
    if header.contains_key("crit") {
        // No JWS extension is understood, so any critical one is unknown (RFC 7515 §4.1.11).
        return Err(err(UnknownCriticalExtension));
    }
    Ok(Compact {
        header,
        alg,
        payload,
    })
}

impl TokenVerifier {
    pub fn new<'a>(
        policy: TokenPolicy,
        keys: impl IntoIterator<Item = &'a KeyMaterial>,
    ) -> Result<Self, KeyError> {
        let mut map = HashMap::new();
        for k in keys {
            let mut v = Validation::new(k.alg().jwt());
            v.set_issuer(&[&policy.issuer]);
            v.set_audience(&[&policy.audience]);
            v.set_required_spec_claims(&["iss", "aud", "sub"]);
            // Time claims are checked below against the caller's clock.
            v.validate_exp = false;
            v.validate_nbf = false;
            v.leeway = 0;
            map.insert(k.kid().to_string(), (k.alg(), k.decoding_key()?, v));
        }
        Ok(Self {
            policy,
            keys: map,
            not_after: HashMap::new(),
        })
    }

    /// Refuse tokens of `kid` issued after `at` (the key's retirement).
    pub fn with_not_after(mut self, kid: &str, at: i64) -> Self {
        self.not_after.insert(kid.to_string(), at);
        self
    }

    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    pub fn verify(&self, token: &str, now: i64) -> Result<AccessClaims, TokenError> {
        use TokenErrorKind::*;
        let err = TokenError::new;
        let Compact { header, alg, .. } = parse_compact(token, self.policy.max_token_bytes)?;
        let typ = header.get("typ").and_then(|t| t.as_str()).unwrap_or("");
        if !(typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")) {
            return Err(err(WrongType));
        }
        let kid = header
            .get("kid")
            .and_then(|k| k.as_str())
            .ok_or(err(UnknownKey))?;
        let (key_alg, key, validation) = self.keys.get(kid).ok_or(err(UnknownKey))?;
        if alg != key_alg.as_str() {
            return Err(err(AlgorithmMismatch));
        }

        let data = jsonwebtoken::decode::<AccessClaims>(token, key, validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as J;
            err(match e.kind() {
                J::InvalidSignature => BadSignature,
                J::InvalidIssuer => WrongIssuer,
                J::InvalidAudience => WrongAudience,
                J::InvalidAlgorithm => AlgorithmMismatch,
                J::MissingRequiredClaim(_) | J::InvalidClaimFormat(_) | J::Json(_) => InvalidClaims,
                _ => Malformed,
            })
        })?;
        let c = data.claims;
        let leeway = self.policy.leeway;
        if now > c.exp.saturating_add(leeway) {
            return Err(err(Expired));
        }
        if c.nbf > now.saturating_add(leeway) {
            return Err(err(NotYetValid));
        }
        if c.iat > now.saturating_add(leeway) {
            return Err(err(IssuedInFuture));
        }
        if self.not_after.get(kid).is_some_and(|at| c.iat > *at) {
            return Err(err(KeyRetired));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "http://127.0.0.1:8080".into(),
            sub: "u1".into(),
            aud: "jotgate".into(),
            exp: now + 900,
            iat: now,
            nbf: now,
            jti: "j1".into(),
            username: "alice".into(),
            roles: vec![],
            scope: "profile".into(),
            sid: None,
        }
    }

    #[test]
    fn sign_and_verify_each_algorithm() {
        let now = 1_700_000_000;
        for alg in [SigningAlg::RS256, SigningAlg::ES256, SigningAlg::EdDSA] {
            let key = KeyMaterial::generate(alg).unwrap();
            let signer = TokenSigner::new(&key).unwrap();
            let verifier = TokenVerifier::new(TokenPolicy::default(), [&key]).unwrap();
            let t = signer.sign(&claims(now)).unwrap();
            assert_eq!(verifier.verify(&t, now).unwrap(), claims(now));
            assert_eq!(
                verifier.verify(&t, now + 2000).unwrap_err().kind(),
                TokenErrorKind::Expired
            );
            assert_eq!(
                verifier.verify(&t, now - 1000).unwrap_err().kind(),
                TokenErrorKind::NotYetValid
            );
        }
        let hs = KeyMaterial::shared_secret(&[1u8; 32]).unwrap();
        let t = TokenSigner::new(&hs).unwrap().sign(&claims(now)).unwrap();
        assert!(
            TokenVerifier::new(TokenPolicy::default(), [&hs])
                .unwrap()
                .verify(&t, now)
                .is_ok()
        );
    }

    #[test]
    fn tampering_is_refused() {
        let now = 1_700_000_000;
        let key = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
        let t = TokenSigner::new(&key).unwrap().sign(&claims(now)).unwrap();
        let v = TokenVerifier::new(TokenPolicy::default(), [&key]).unwrap();
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut c = claims(now);
        c.username = "mallory".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(
            v.verify(&parts.join("."), now).unwrap_err().kind(),
            TokenErrorKind::BadSignature
        );
        assert_eq!(
            v.verify("a.b", now).unwrap_err().kind(),
            TokenErrorKind::Malformed
        );
        assert_eq!(
            v.verify(&format!("{t}="), now).unwrap_err().kind(),
            TokenErrorKind::Malformed
        );
        assert_eq!(
            v.verify(&"a".repeat(9000), now).unwrap_err().kind(),
            TokenErrorKind::TooLarge
        );
    }

    /// Random mutations of a valid token (byte flips, truncations, insertions, swapped
    /// parts) never panic, and the only accepted spelling is the original token.
    #[test]
    fn mutated_tokens_are_refused_and_never_panic() {
        let now = 1_700_000_000;
        let key = KeyMaterial::generate(SigningAlg::ES256).unwrap();
        let token = TokenSigner::new(&key).unwrap().sign(&claims(now)).unwrap();
        let v = TokenVerifier::new(TokenPolicy::default(), [&key]).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
        for _ in 0..5000 {
            let mut t = token.clone().into_bytes();
            for _ in 0..=next(3) {
                match next(4) {
                    0 => {
                        let i = next(t.len());
                        t[i] = alphabet[next(alphabet.len())];
                    }
                    1 => t.truncate(next(t.len()).max(1)),
                    2 => {
                        let i = next(t.len() + 1);
                        t.insert(i, alphabet[next(alphabet.len())]);
                    }
                    _ => {
                        let i = next(t.len());
                        t.remove(i);
                        if t.is_empty() {
                            t.push(b'.');
                        }
                    }
                }
            }
            let t = String::from_utf8(t).unwrap();
            if let Ok(c) = v.verify(&t, now) {
                assert_eq!(t, token, "a second spelling was accepted");
                assert_eq!(c, claims(now));
            }
        }
    }
}

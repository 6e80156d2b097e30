//! Access tokens: one signing path, the error kinds of verification, and the checks every
//! verifier runs before it chooses a key ([`parse_compact`]): size cap → strict compact
//! serialisation (three base64url parts, canonical, no padding) → `alg` present and not
//! `none`, no `jku`, `x5u`, `jwk`, `x5c`, no `crit` (RFC 8725). The rest of verification
//! (`typ`, the key the `kid` names and its algorithm, signature, issuer, audience, time
//! claims, revocations) is `jotgate_verify::Verifier`: the one pipeline that the server,
//! the layer, the gateway, the Lambda authorizer and `jotgate token verify` share.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Header;

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
    /// `b64url(header) + "."`: the same for every token of this key.
    header: String,
    key: ParsedKey,
}

/// A private key parsed once, when the signer is made: signing a token is then one
/// signature, not a key parse (jsonwebtoken parses the DER on every call: ~1.2 ms of an
/// RS256 token's ~1.5 ms).
enum ParsedKey {
    Hs256(Box<aws_lc_rs::hmac::Key>),
    Rs256(aws_lc_rs::signature::RsaKeyPair),
    Es256(aws_lc_rs::signature::EcdsaKeyPair),
    EdDsa(aws_lc_rs::signature::Ed25519KeyPair),
}

impl TokenSigner {
    pub fn new(key: &KeyMaterial) -> Result<Self, KeyError> {
        use aws_lc_rs::signature::{
            ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair,
        };
        let der = key.secret_bytes();
        let bad = |e: aws_lc_rs::error::KeyRejected| KeyError::Malformed(e.to_string());
        let parsed = match key.alg() {
            SigningAlg::HS256 => ParsedKey::Hs256(Box::new(aws_lc_rs::hmac::Key::new(
                aws_lc_rs::hmac::HMAC_SHA256,
                der,
            ))),
            SigningAlg::RS256 => ParsedKey::Rs256(RsaKeyPair::from_pkcs8(der).map_err(bad)?),
            SigningAlg::ES256 => ParsedKey::Es256(
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der).map_err(bad)?,
            ),
            SigningAlg::EdDSA => {
                ParsedKey::EdDsa(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(bad)?)
            }
        };
        let mut header = Header::new(key.alg().jwt());
        header.typ = Some(ACCESS_TOKEN_TYP.into());
        header.kid = Some(key.kid().to_string());
        let header = serde_json::to_vec(&header).map_err(|e| KeyError::Malformed(e.to_string()))?;
        Ok(Self {
            kid: key.kid().to_string(),
            alg: key.alg(),
            header: format!("{}.", URL_SAFE_NO_PAD.encode(header)),
            key: parsed,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// A compact JWS (RFC 7515 §7.1) of `claims`: `b64url(header).b64url(claims).b64url(sig)`.
    pub fn sign<C: serde::Serialize>(&self, claims: &C) -> Result<String, KeyError> {
        let claims = serde_json::to_vec(claims).map_err(|e| KeyError::Malformed(e.to_string()))?;
        let mut token = String::with_capacity(self.header.len() + claims.len() * 2 + 400);
        token.push_str(&self.header);
        URL_SAFE_NO_PAD.encode_string(claims, &mut token);
        let input = token.as_bytes();
        let signing_failed = |_| KeyError::Malformed("the signature could not be made".into());
        let signature: Vec<u8> = match &self.key {
            ParsedKey::Hs256(k) => aws_lc_rs::hmac::sign(k, input).as_ref().to_vec(),
            ParsedKey::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &aws_lc_rs::rand::SystemRandom::new(),
                    input,
                    &mut sig,
                )
                .map_err(signing_failed)?;
                sig
            }
            ParsedKey::Es256(k) => k
                .sign(&aws_lc_rs::rand::SystemRandom::new(), input)
                .map_err(signing_failed)?
                .as_ref()
                .to_vec(),
            ParsedKey::EdDsa(k) => k.sign(input).as_ref().to_vec(),
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }
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

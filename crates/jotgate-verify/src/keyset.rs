//! A set of verification keys: from a JWKS document, a PEM public key or a shared secret.
//!
//! A key's algorithm comes from the key (its JWK `alg`, else its type and curve), never
//! from a token. A JWKS fetched from an issuer never yields a symmetric (`oct`) key:
//! a published "public" HMAC key would let anyone sign tokens.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::error::ConfigError;

pub struct VerifyKey {
    /// `None` for a configured PEM or secret: it matches tokens with or without a `kid`.
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
    /// The RFC 7638 thumbprint of a JWKS key (empty for a configured PEM or secret): new
    /// material under an old kid is another key.
    pub thumbprint: String,
}

/// RFC 7638: SHA-256 over the required public members, in lexicographic order, no spaces.
fn thumbprint(raw: &Value) -> Option<String> {
    let members: &[&str] = match raw.get("kty")?.as_str()? {
        "RSA" => &["e", "kty", "n"],
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        _ => return None,
    };
    let mut out = String::from("{");
    for (i, m) in members.iter().enumerate() {
        let v = raw.get(*m)?.as_str()?;
        if i > 0 {
            out.push(',');
        }
        out.push_str(&serde_json::to_string(m).ok()?);
        out.push(':');
        out.push_str(&serde_json::to_string(v).ok()?);
    }
    out.push('}');
    Some(jotgate_core::sha256_b64url(out.as_bytes()))
}

/// Keys of one issuer.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.alg)))
            .finish()
    }
}

/// How many keys of a JWKS were usable, and why others were skipped (for logs).
#[derive(Debug, Default)]
pub struct Parsed {
    pub set: KeySet,
    pub skipped: Vec<String>,
}

fn alg_of(jwk: &Jwk) -> Result<Algorithm, String> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => Algorithm::EdDSA,
            _ => return Err("unsupported curve".into()),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric keys are never trusted from a JWKS".into());
        }
        _ => return Err("unsupported key type".into()),
    };
    let alg = match jwk.common.key_algorithm {
        None => by_type,
        Some(KeyAlgorithm::UNKNOWN_ALGORITHM) => return Err("unknown alg".into()),
        Some(a) => serde_json::to_value(a)
            .ok()
            .and_then(|v| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or("not a signing alg")?,
    };
    // The JWK's alg must fit its key type (an RSA key labelled HS256 is refused), and an EC
    // key's curve must be the one its alg names.
    if alg.family() != by_type.family()
        || (by_type.family() == jsonwebtoken::AlgorithmFamily::Ec && alg != by_type)
    {
        return Err("alg does not match the key type".into());
    }
    Ok(alg)
}

impl KeySet {
    /// Parse a JWKS document. Keys that are not for signatures, of unknown type, or
    /// malformed are skipped (an issuer may publish encryption keys next to its signing keys).
    pub fn from_jwks(body: &[u8]) -> Result<Parsed, String> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|_| "JWKS is not JSON".to_string())?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("JWKS has no \"keys\" array")?;
        let mut parsed = Parsed::default();
        for (i, raw) in keys.iter().enumerate() {
            let jwk: Jwk = match serde_json::from_value(raw.clone()) {
                Ok(j) => j,
                Err(_) => {
                    parsed.skipped.push(format!("key {i}: not a JWK"));
                    continue;
                }
            };
            let name = jwk.common.key_id.clone().unwrap_or_else(|| format!("#{i}"));
            match &jwk.common.public_key_use {
                None | Some(PublicKeyUse::Signature) => {}
                Some(PublicKeyUse::Encryption) => {
                    parsed.skipped.push(format!("{name}: use=enc"));
                    continue;
                }
                Some(PublicKeyUse::Other(u)) => {
                    parsed.skipped.push(format!("{name}: unknown use {u:?}"));
                    continue;
                }
            }
            // RFC 7517 §4.3: a key whose operations do not include "verify" does not verify.
            if jwk
                .common
                .key_operations
                .as_ref()
                .is_some_and(|ops| !ops.contains(&KeyOperations::Verify))
            {
                parsed
                    .skipped
                    .push(format!("{name}: key_ops without verify"));
                continue;
            }
            let alg = match alg_of(&jwk) {
                Ok(a) => a,
                Err(why) => {
                    parsed.skipped.push(format!("{name}: {why}"));
                    continue;
                }
            };
            let Some(print) = thumbprint(raw) else {
                parsed.skipped.push(format!("{name}: malformed key"));
                continue;
            };
            match DecodingKey::from_jwk(&jwk) {
                Ok(key) => parsed.set.keys.push(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                    thumbprint: print,
                }),
                Err(_) => parsed.skipped.push(format!("{name}: malformed key")),
            }
        }
        Ok(parsed)
    }

    /// One public key in PEM (SPKI, or PKCS#1 for RSA), for algorithm `alg`.
    pub fn from_pem(pem: &[u8], alg: Algorithm) -> Result<Self, ConfigError> {
        use jsonwebtoken::AlgorithmFamily as F;
        let key = match alg.family() {
            F::Rsa => DecodingKey::from_rsa_pem(pem),
            F::Ec => DecodingKey::from_ec_pem(pem),
            F::Ed => DecodingKey::from_ed_pem(pem),
            F::Hmac => {
                return Err(ConfigError(
                    "a PEM key cannot be used with an HMAC algorithm".into(),
                ));
            }
        }
        .map_err(|e| {
            ConfigError(format!(
                "the PEM public key is not a valid {alg:?} key: {e}"
            ))
        })?;
        Ok(Self {
            keys: vec![VerifyKey {
                kid: None,
                alg,
                key,
                thumbprint: String::new(),
            }],
        })
    }

    /// A shared HMAC secret (HS256); at least 32 bytes (RFC 7518 §3.2).
    pub fn from_secret(secret: &[u8]) -> Result<Self, ConfigError> {
        if secret.len() < 32 {
            return Err(ConfigError(
                "the shared secret must be at least 32 bytes".into(),
            ));
        }
        Ok(Self {
            keys: vec![VerifyKey {
                kid: None,
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
                thumbprint: String::new(),
            }],
        })
    }

    /// The key a token names. A token without `kid` matches only when the set holds one key.
    pub fn find(&self, kid: Option<&str>) -> Option<&VerifyKey> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .or_else(|| match self.keys.as_slice() {
                    [only] if only.kid.is_none() => Some(only),
                    _ => None,
                }),
            None => match self.keys.as_slice() {
                [only] => Some(only),
                _ => None,
            },
        }
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set holds an HMAC secret (then it holds nothing else).
    pub fn is_secret(&self) -> bool {
        self.keys
            .iter()
            .any(|k| k.alg.family() == jsonwebtoken::AlgorithmFamily::Hmac)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().filter_map(|k| k.kid.as_deref())
    }

    /// Every key a token with `kid` may be verified with: RFC 7517 lets keys of different
    /// types share a kid, so all of them are candidates (the caller keeps those whose
    /// algorithm is the token's).
    pub fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a VerifyKey> {
        let by_kid: Vec<&VerifyKey> = match kid {
            Some(kid) => self
                .keys
                .iter()
                .filter(|k| k.kid.as_deref() == Some(kid))
                .collect(),
            None => Vec::new(),
        };
        let fallback = if by_kid.is_empty() {
            self.find(kid)
        } else {
            None
        };
        by_kid.into_iter().chain(fallback)
    }

    /// The (kid, thumbprint) pairs: what a refresh compares to see withdrawn material.
    pub fn material(&self) -> impl Iterator<Item = (Option<&str>, &str)> {
        self.keys
            .iter()
            .map(|k| (k.kid.as_deref(), k.thumbprint.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_follow_rfc7638() {
        // RFC 7638 §3.1.
        let key = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(
            thumbprint(&key).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }
}

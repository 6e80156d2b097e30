//! Signing keys: generation, import (PEM or JWK), the public JWK, and the jsonwebtoken
//! key objects built from them.
//!
//! Asymmetric keys are held as PKCS#8 DER (zeroized on drop, redacted in `Debug`); that is
//! also the form the store keeps. A key's `kid` is its RFC 7638 thumbprint unless an
//! imported key brings its own (so tokens from a previous issuer keep verifying).

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, ThumbprintHash};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unsupported algorithm {0:?}: use RS256, ES256, EdDSA or HS256")]
    UnsupportedAlgorithm(String),
    #[error("the key could not be parsed: {0}")]
    Malformed(String),
    #[error("HS256 keys are not generated or published: configure a shared secret")]
    SharedSecret,
    #[error("key generation failed")]
    Generation,
}

/// The algorithms jotgate signs with. The verifier accepts exactly the one bound to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlg {
    RS256,
    ES256,
    EdDSA,
    HS256,
}

impl SigningAlg {
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        match s.to_ascii_uppercase().as_str() {
            "RS256" => Ok(Self::RS256),
            "ES256" => Ok(Self::ES256),
            "EDDSA" => Ok(Self::EdDSA),
            "HS256" => Ok(Self::HS256),
            _ => Err(KeyError::UnsupportedAlgorithm(s.to_string())),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
            Self::HS256 => "HS256",
        }
    }

    pub fn jwt(self) -> Algorithm {
        match self {
            Self::RS256 => Algorithm::RS256,
            Self::ES256 => Algorithm::ES256,
            Self::EdDSA => Algorithm::EdDSA,
            Self::HS256 => Algorithm::HS256,
        }
    }
}

impl std::fmt::Display for SigningAlg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A signing key with its id and algorithm.
pub struct KeyMaterial {
    kid: String,
    alg: SigningAlg,
    /// PKCS#8 DER for asymmetric keys; the raw secret for HS256.
    secret: Zeroizing<Vec<u8>>,
    /// The public JWK (none for HS256).
    public: Option<Jwk>,
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("secret", &"[redacted]")
            .finish()
    }
}

fn malformed(e: impl std::fmt::Display) -> KeyError {
    KeyError::Malformed(e.to_string())
}

fn pkcs8_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()))
}

impl KeyMaterial {
    /// A fresh asymmetric key (RSA 2048, P-256 or Ed25519) from the system RNG.
    pub fn generate(alg: SigningAlg) -> Result<Self, KeyError> {
        let der: Vec<u8> = match alg {
            SigningAlg::RS256 => {
                let kp = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                    .map_err(|_| KeyError::Generation)?;
                kp.as_der()
                    .map_err(|_| KeyError::Generation)?
                    .as_ref()
                    .to_vec()
            }
            SigningAlg::ES256 => EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .and_then(|kp| kp.to_pkcs8v1())
                .map_err(|_| KeyError::Generation)?
                .as_ref()
                .to_vec(),
            SigningAlg::EdDSA => Ed25519KeyPair::generate()
                .and_then(|kp| kp.to_pkcs8v1())
                .map_err(|_| KeyError::Generation)?
                .as_ref()
                .to_vec(),
            SigningAlg::HS256 => return Err(KeyError::SharedSecret),
        };
        Self::from_pkcs8(None, alg, der)
    }

    /// A shared HS256 secret (at least 32 bytes, RFC 7518 §3.2).
    pub fn shared_secret(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 32 {
            return Err(KeyError::Malformed(
                "an HS256 shared secret must be at least 32 bytes".into(),
            ));
        }
        Ok(Self {
            kid: "hs256".into(),
            alg: SigningAlg::HS256,
            secret: Zeroizing::new(secret.to_vec()),
            public: None,
        })
    }

    /// Load a key kept as PKCS#8 DER, checking that it parses as `alg`'s key type.
    pub fn from_pkcs8(
        kid: Option<String>,
        alg: SigningAlg,
        der: Vec<u8>,
    ) -> Result<Self, KeyError> {
        let der = Zeroizing::new(der);
        let enc = match alg {
            SigningAlg::RS256 => {
                aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).map_err(malformed)?;
                EncodingKey::from_rsa_pem(pkcs8_pem(&der).as_bytes()).map_err(malformed)?
            }
            SigningAlg::ES256 => {
                EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(malformed)?;
                EncodingKey::from_ec_pem(pkcs8_pem(&der).as_bytes()).map_err(malformed)?
            }
            SigningAlg::EdDSA => {
                Ed25519KeyPair::from_pkcs8(&der).map_err(malformed)?;
                EncodingKey::from_ed_pem(pkcs8_pem(&der).as_bytes()).map_err(malformed)?
            }
            SigningAlg::HS256 => return Err(KeyError::SharedSecret),
        };
        let mut jwk = Jwk::from_encoding_key(&enc, alg.jwt()).map_err(malformed)?;
        let kid = match kid {
            Some(k) => k,
            None => jwk.thumbprint(ThumbprintHash::SHA256).map_err(malformed)?,
        };
        jwk.common.key_id = Some(kid.clone());
        jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
        Ok(Self {
            kid,
            alg,
            secret: der,
            public: Some(jwk),
        })
    }

    /// Import a private key in PEM: PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or
    /// SEC 1 (`EC PRIVATE KEY`, P-256). The algorithm follows from the key type.
    pub fn from_pem(text: &str, kid: Option<String>) -> Result<Self, KeyError> {
        let block = pem::parse(text).map_err(malformed)?;
        let der = Zeroizing::new(block.contents().to_vec());
        match block.tag() {
            "PRIVATE KEY" => {
                if aws_lc_rs::rsa::KeyPair::from_pkcs8(&der).is_ok() {
                    Self::from_pkcs8(kid, SigningAlg::RS256, der.to_vec())
                } else if EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der).is_ok() {
                    Self::from_pkcs8(kid, SigningAlg::ES256, der.to_vec())
                } else if Ed25519KeyPair::from_pkcs8(&der).is_ok() {
                    Self::from_pkcs8(kid, SigningAlg::EdDSA, der.to_vec())
                } else {
                    Err(KeyError::Malformed(
                        "PKCS#8 key is not RSA (2048-8192 bits), P-256 or Ed25519".into(),
                    ))
                }
            }
            "RSA PRIVATE KEY" => Self::from_pkcs1_der(kid, &der),
            "EC PRIVATE KEY" => {
                let kp = EcdsaKeyPair::from_private_key_der(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(malformed)?;
                let p8 = kp.to_pkcs8v1().map_err(malformed)?;
                Self::from_pkcs8(kid, SigningAlg::ES256, p8.as_ref().to_vec())
            }
            other => Err(KeyError::Malformed(format!(
                "expected a private key PEM block, found {other:?}"
            ))),
        }
    }

    fn from_pkcs1_der(kid: Option<String>, der: &[u8]) -> Result<Self, KeyError> {
        let kp = aws_lc_rs::rsa::KeyPair::from_der(der).map_err(malformed)?;
        let p8 = kp.as_der().map_err(malformed)?;
        Self::from_pkcs8(kid, SigningAlg::RS256, p8.as_ref().to_vec())
    }

    /// Import a private JWK (RFC 7517/7518): RSA with CRT members, EC P-256, or OKP Ed25519.
    /// The JWK's `kid` is kept unless `kid` overrides it.
    pub fn from_jwk(json: &str, kid: Option<String>) -> Result<Self, KeyError> {
        let v: serde_json::Value = serde_json::from_str(json).map_err(malformed)?;
        let field =
            |name: &str| -> Result<Zeroizing<Vec<u8>>, KeyError> {
                let s = v.get(name).and_then(|x| x.as_str()).ok_or_else(|| {
                    KeyError::Malformed(format!("JWK member {name:?} is missing"))
                })?;
                URL_SAFE_NO_PAD.decode(s).map(Zeroizing::new).map_err(|_| {
                    KeyError::Malformed(format!("JWK member {name:?} is not base64url"))
                })
            };
        let kid = kid.or_else(|| v.get("kid").and_then(|k| k.as_str()).map(str::to_string));
        match v.get("kty").and_then(|k| k.as_str()) {
            Some("RSA") => {
                let mut parts = Vec::new();
                for name in ["n", "e", "d", "p", "q", "dp", "dq", "qi"] {
                    parts.push(field(name)?);
                }
                let der = der::rsa_private_key(&parts);
                Self::from_pkcs1_der(kid, &der)
            }
            Some("EC") => {
                if v.get("crv").and_then(|c| c.as_str()) != Some("P-256") {
                    return Err(KeyError::Malformed(
                        "only EC keys on P-256 are supported".into(),
                    ));
                }
                let (d, x, y) = (field("d")?, field("x")?, field("y")?);
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                let kp = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &d,
                    &point,
                )
                .map_err(malformed)?;
                let p8 = kp.to_pkcs8v1().map_err(malformed)?;
                Self::from_pkcs8(kid, SigningAlg::ES256, p8.as_ref().to_vec())
            }
            Some("OKP") => {
                if v.get("crv").and_then(|c| c.as_str()) != Some("Ed25519") {
                    return Err(KeyError::Malformed(
                        "only OKP keys on Ed25519 are supported".into(),
                    ));
                }
                let kp = Ed25519KeyPair::from_seed_and_public_key(&field("d")?, &field("x")?)
                    .map_err(malformed)?;
                let p8 = kp.to_pkcs8v1().map_err(malformed)?;
                Self::from_pkcs8(kid, SigningAlg::EdDSA, p8.as_ref().to_vec())
            }
            Some("oct") => Err(KeyError::SharedSecret),
            _ => Err(KeyError::Malformed(
                "JWK needs \"kty\" of RSA, EC or OKP with its private members".into(),
            )),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The private key as PKCS#8 DER (or the HS256 secret), for the store. Handle with care.
    pub fn secret_bytes(&self) -> &[u8] {
        &self.secret
    }

    /// The public JWK with `kid`, `kty`, `alg`, `use`; `None` for a shared secret.
    pub fn public_jwk(&self) -> Option<&Jwk> {
        self.public.as_ref()
    }

    pub fn encoding_key(&self) -> Result<EncodingKey, KeyError> {
        match self.alg {
            SigningAlg::HS256 => Ok(EncodingKey::from_secret(&self.secret)),
            SigningAlg::RS256 => {
                EncodingKey::from_rsa_pem(pkcs8_pem(&self.secret).as_bytes()).map_err(malformed)
            }
            SigningAlg::ES256 => {
                EncodingKey::from_ec_pem(pkcs8_pem(&self.secret).as_bytes()).map_err(malformed)
            }
            SigningAlg::EdDSA => {
                EncodingKey::from_ed_pem(pkcs8_pem(&self.secret).as_bytes()).map_err(malformed)
            }
        }
    }

    pub fn decoding_key(&self) -> Result<DecodingKey, KeyError> {
        match (&self.public, self.alg) {
            (_, SigningAlg::HS256) => Ok(DecodingKey::from_secret(&self.secret)),
            (Some(jwk), _) => DecodingKey::from_jwk(jwk).map_err(malformed),
            (None, _) => Err(KeyError::Malformed(
                "asymmetric key without a public part".into(),
            )),
        }
    }
}

/// Minimal DER writer for the one structure aws-lc-rs cannot build from parts: PKCS#1
/// `RSAPrivateKey` (RFC 8017 A.1.2). aws-lc-rs then parses and validates the result.
mod der {
    fn len(out: &mut Vec<u8>, n: usize) {
        if n < 0x80 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
    }

    fn integer(out: &mut Vec<u8>, be: &[u8]) {
        let trimmed: &[u8] = match be.iter().position(|b| *b != 0) {
            Some(i) => &be[i..],
            None => &[0],
        };
        let pad = trimmed[0] & 0x80 != 0;
        out.push(0x02);
        len(out, trimmed.len() + usize::from(pad));
        if pad {
            out.push(0);
        }
        out.extend_from_slice(trimmed);
    }

    /// `parts` are n, e, d, p, q, dp, dq, qi as unsigned big-endian integers.
    pub fn rsa_private_key(parts: &[zeroize::Zeroizing<Vec<u8>>]) -> zeroize::Zeroizing<Vec<u8>> {
        let mut body = zeroize::Zeroizing::new(vec![0x02, 0x01, 0x00]); // version 0
        for p in parts {
            integer(&mut body, p);
        }
        let mut out = zeroize::Zeroizing::new(vec![0x30]);
        len(&mut out, body.len());
        out.extend_from_slice(&body);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_publish_public_jwks_only() {
        for alg in [SigningAlg::RS256, SigningAlg::ES256, SigningAlg::EdDSA] {
            let k = KeyMaterial::generate(alg).unwrap();
            let jwk = serde_json::to_value(k.public_jwk().unwrap()).unwrap();
            assert_eq!(jwk["kid"], k.kid());
            assert_eq!(jwk["alg"], alg.as_str());
            assert_eq!(jwk["use"], "sig");
            for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
                assert!(jwk.get(private).is_none(), "{alg}: JWK leaks {private}");
            }
            // Reloading the stored form gives the same key id.
            let again = KeyMaterial::from_pkcs8(None, alg, k.secret_bytes().to_vec()).unwrap();
            assert_eq!(again.kid(), k.kid());
            assert!(!format!("{k:?}").contains("secret: ["));
        }
    }

    #[test]
    fn import_pem_round_trip() {
        let k = KeyMaterial::generate(SigningAlg::ES256).unwrap();
        let pem = super::pkcs8_pem(k.secret_bytes());
        let imported = KeyMaterial::from_pem(&pem, None).unwrap();
        assert_eq!(imported.alg(), SigningAlg::ES256);
        assert_eq!(imported.kid(), k.kid());
        assert!(KeyMaterial::from_pem("not pem", None).is_err());
    }

    #[test]
    fn short_shared_secret_is_refused() {
        assert!(KeyMaterial::shared_secret(b"short").is_err());
        assert!(KeyMaterial::shared_secret(&[7u8; 32]).is_ok());
    }
}

//! jotgate-core: the pure domain of jotgate — usernames, password policy and hashing,
//! signing keys and their JWKS, access-token claims, the one verification policy, and
//! refresh-token material.
//!
//! It does no I/O and needs no async runtime: the store, the HTTP server and the CLI build
//! on it. All cryptography comes from maintained crates (`jsonwebtoken` on `aws-lc-rs`,
//! RustCrypto `argon2`); this crate only decides *which* checks run and in what order.
//!
//! The key design decision: the algorithm a token is verified with comes from the key
//! that its `kid` names, never from the token header. A header that disagrees with its key
//! is rejected before any signature work.

pub mod claims;
pub mod email;
pub mod keys;
pub mod password;
pub mod random;
pub mod refresh;
pub mod seal;
pub mod token;
pub mod username;

pub use claims::{AccessClaims, scopes_for_roles};
pub use keys::{KeyError, KeyMaterial, SigningAlg};
pub use password::{PasswordError, PasswordHasher, PasswordParams, Workspace};
pub use token::{
    Compact, TokenError, TokenErrorKind, TokenPolicy, TokenSigner, bearer_credential, parse_compact,
};
pub use username::{Username, UsernameError};

/// SHA-256 of `data`, unpadded base64url: a fixed-size key for secrets and unbounded input.
/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

/// Whether two secrets (or their digests) are equal, in time that does not depend on
/// where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a, b).is_ok()
}

pub fn sha256_b64url(data: &[u8]) -> String {
    use base64::Engine;
    use sha2::Digest;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(data))
}

/// Seconds since the Unix epoch. Callers pass "now" in, so the core stays pure and testable.
pub type UnixTime = i64;

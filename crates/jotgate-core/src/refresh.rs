//! Refresh-token material: opaque random strings; only their SHA-256 is ever stored.
//!
//! A rotation's successor is derived as HMAC-SHA256(key = the presented token, nonce), with
//! a random nonce the store keeps. Whoever holds the parent token can recompute the same
//! successor (that is how a repeat inside the grace window gets *the same* successor), while
//! the store alone — which holds hashes and nonces, never tokens — cannot.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Longest refresh token accepted, in bytes (ours are 43).
pub const MAX_LEN: usize = 256;

/// A new refresh token: 256 random bits, base64url.
pub fn generate() -> String {
    crate::random::token(32)
}

/// A fresh rotation nonce.
pub fn nonce() -> String {
    crate::random::token(16)
}

/// The value the store keeps and looks up by.
pub fn hash(token: &str) -> String {
    crate::sha256_b64url(token.as_bytes())
}

/// The successor of `parent` for the rotation identified by `nonce`.
pub fn successor(parent: &str, nonce: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(parent.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"jotgate/refresh-successor/v1:");
    mac.update(nonce.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successor_is_deterministic_per_parent_and_nonce() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        let n = nonce();
        assert_eq!(successor(&a, &n), successor(&a, &n));
        assert_ne!(successor(&a, &n), successor(&b, &n));
        assert_ne!(successor(&a, &n), successor(&a, &nonce()));
        assert_ne!(hash(&a), a);
    }
}

//! What several targets share: one current-thread runtime and the fixed test keys.

#![allow(dead_code)]

use std::sync::LazyLock;

/// The issuer's keys (RS256 `rsa1`, ES256 `ec1`) and its HS256 secret (`make_seeds.py`).
pub const JWKS: &str = include_str!("../keys/jwks.json");
pub const SECRET: &[u8] = include_bytes!("../keys/secret.txt");
/// The only tokens signed with them (valid until 2100).
pub const VALID: &str = include_str!("../keys/valid_tokens.txt");

pub static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
});

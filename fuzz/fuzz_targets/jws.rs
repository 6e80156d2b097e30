//! Compact JWS parsing and verification, as every verifier (server, gateway, authorizer)
//! runs it: never a panic, and nothing verifies but the tokens signed with the keys
//! (`keys/valid_tokens.txt`): no other spelling of them (base64 slack, header tricks,
//! `alg` swaps) is accepted.
#![no_main]
use std::sync::{Arc, LazyLock};

use jotgate_verify::Verifier;
use jotgate_verify::verifier::{IssuerConfig, KeySource, VerifierConfig};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;

static VERIFIER: LazyLock<(Arc<Verifier>, jotgate_verify::Background)> = LazyLock::new(|| {
    jotgate::init_crypto();
    RT.block_on(async {
        let cfg = VerifierConfig {
            issuers: vec![
                IssuerConfig::jotgate("https://issuer.fuzz", "api")
                    .with_keys(KeySource::Jwks(JWKS.into())),
                IssuerConfig::jotgate("https://hs.fuzz", "api")
                    .with_keys(KeySource::SharedSecret(SECRET.to_vec())),
            ],
            follow_feeds: false,
            ..VerifierConfig::default()
        };
        let v = Verifier::new(cfg).expect("verifier");
        let bg = v.start().await;
        (v, bg)
    })
});

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let (v, _) = &*VERIFIER;
    if RT.block_on(v.verify(token)).is_ok() {
        assert!(
            VALID.lines().any(|t| t == token),
            "a token that was never signed verified: {token:?}"
        );
    }
});

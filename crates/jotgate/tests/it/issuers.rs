//! Third-party keys as the issuer publishes them (issue 16, item 10): new material under
//! an old kid, an authoritative empty key set, `key_ops` and unknown `use`, and keys of
//! different types sharing a kid.

use jotgate_core::{KeyMaterial, SigningAlg};
use jotgate_verify::{Verifier, VerifyErrorKind};
use serde_json::{Value, json};

use crate::edge::{FakeIssuer, Mode, eventually, quick};

fn jwk(key: &KeyMaterial, kid: &str, extra: Value) -> Value {
    let mut j = serde_json::to_value(key.public_jwk().unwrap()).unwrap();
    j["kid"] = kid.into();
    for (k, v) in extra.as_object().unwrap() {
        j[k] = v.clone();
    }
    j
}

/// A token of `fake`'s claims signed by `key`, naming `kid`.
fn token(fake: &FakeIssuer, key: &KeyMaterial, kid: &str) -> String {
    let mut h = jsonwebtoken::Header::new(key.alg().jwt());
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.into());
    jsonwebtoken::encode(&h, &fake.claims(), &key.encoding_key().unwrap()).unwrap()
}

#[tokio::test]
async fn new_material_under_an_old_kid_drops_cached_verifications() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let a = KeyMaterial::generate(SigningAlg::ES256).unwrap();
    fake.set_jwks(json!({"keys": [jwk(&a, "k1", json!({}))]}));
    let v = Verifier::new(quick(vec![fake.config()])).unwrap();
    let _bg = v.start().await;
    let t = token(&fake, &a, "k1");
    assert!(v.verify(&t).await.is_ok());
    assert!(v.verify(&t).await.is_ok(), "cached");
    // The issuer replaces the material behind k1 (a compromised key re-issued).
    let b = KeyMaterial::generate(SigningAlg::ES256).unwrap();
    fake.set_jwks(json!({"keys": [jwk(&b, "k1", json!({}))]}));
    eventually("the old material's token is refused", async || {
        v.verify(&t).await.is_err()
    })
    .await;
    assert!(v.verify(&token(&fake, &b, "k1")).await.is_ok());
}

#[tokio::test]
async fn an_authoritative_empty_key_set_withdraws_every_key() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let v = Verifier::new(quick(vec![fake.config()])).unwrap();
    let _bg = v.start().await;
    let t = fake.token();
    assert!(v.verify(&t).await.is_ok());
    // A failed fetch is no news.
    fake.set_mode(Mode::Down);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert!(v.verify(&t).await.is_ok(), "kept while the issuer is down");
    fake.set_mode(Mode::Ok);
    // Only an encryption key left: nothing to verify with. Believed once confirmed.
    let enc = KeyMaterial::generate(SigningAlg::ES256).unwrap();
    fake.set_jwks(json!({"keys": [jwk(&enc, "e1", json!({"use": "enc"}))]}));
    eventually("every key withdrawn", async || v.verify(&t).await.is_err()).await;
    assert_ne!(
        v.verify(&t).await.unwrap_err().kind(),
        VerifyErrorKind::IssuerUnavailable
    );
    fake.set_jwks(json!({"keys": []}));
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(v.verify(&t).await.is_err());
}

#[tokio::test]
async fn key_ops_and_use_are_honoured_and_keys_may_share_a_kid() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let signer_only = KeyMaterial::generate(SigningAlg::ES256).unwrap();
    let odd_use = KeyMaterial::generate(SigningAlg::ES256).unwrap();
    let ec = KeyMaterial::generate(SigningAlg::ES256).unwrap();
    let rsa = KeyMaterial::generate(SigningAlg::RS256).unwrap();
    let verify_ok = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
    fake.set_jwks(json!({"keys": [
        jwk(&signer_only, "s1", json!({"key_ops": ["sign"]})),
        jwk(&odd_use, "u1", json!({"use": "tls"})),
        jwk(&ec, "shared", json!({})),
        jwk(&rsa, "shared", json!({})),
        jwk(&verify_ok, "v1", json!({"key_ops": ["verify"]})),
    ]}));
    let mut cfg = fake.config();
    cfg.algorithms = vec![
        jsonwebtoken::Algorithm::ES256,
        jsonwebtoken::Algorithm::RS256,
        jsonwebtoken::Algorithm::EdDSA,
    ];
    let v = Verifier::new(quick(vec![cfg])).unwrap();
    let _bg = v.start().await;
    for (key, kid) in [(&signer_only, "s1"), (&odd_use, "u1")] {
        let e = v.verify(&token(&fake, key, kid)).await.unwrap_err();
        assert_eq!(e.code(), "token_unknown_key", "{kid}");
    }
    assert!(v.verify(&token(&fake, &ec, "shared")).await.is_ok());
    assert!(v.verify(&token(&fake, &rsa, "shared")).await.is_ok());
    assert!(v.verify(&token(&fake, &verify_ok, "v1")).await.is_ok());
}

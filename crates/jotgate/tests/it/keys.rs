//! The compromised-key drill (issue 16, item 14): retiring the signing key makes running
//! servers switch to a successor; a token the retired key signs afterwards is refused;
//! `keys revoke` withdraws a key from the JWKS and refuses all its tokens, on the server
//! and at the edge through the feed.

use jotgate_core::{KeyMaterial, SigningAlg, TokenSigner};
use jotgate_verify::Verifier;
use reqwest::StatusCode;
use serde_json::Value;

use crate::common::{TestApp, error_code, token_part};
use crate::edge::{eventually, quick, trust};

fn kid_of(token: &str) -> String {
    token_part(token, 0)["kid"].as_str().unwrap().to_string()
}

async fn jwks_kids(app: &TestApp) -> Vec<String> {
    let jwks = app.get_json("/.well-known/jwks.json").await;
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// A server whose issuer is its URL, with the feed open (re-reading keys every second).
async fn app() -> TestApp {
    crate::edge::issuer_app().await
}

/// The stored key `kid`, as an attacker who stole it would hold it.
async fn stolen(app: &TestApp, kid: &str) -> KeyMaterial {
    let keys = app.store().await.keys().await.unwrap();
    let k = keys.iter().find(|k| k.kid == kid).unwrap();
    KeyMaterial::from_pkcs8(
        Some(k.kid.clone()),
        SigningAlg::parse(&k.alg).unwrap(),
        k.private_der.clone(),
    )
    .unwrap()
}

fn cli(app: &TestApp, args: &[&str]) -> String {
    let (ok, out, err) = crate::cli::run_env(&app.dir, args, &[("JOTGATE_ISSUER", &app.base)]);
    assert!(ok, "{err}");
    out
}

#[tokio::test]
async fn retiring_the_signing_key_switches_running_servers_and_refuses_later_tokens() {
    let app = app().await;
    let before = app.signup("ann").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let old = kid_of(&before);
    let out = cli(&app, &["keys", "retire", &old]);
    assert!(
        out.contains("signing now") && out.contains("retired"),
        "{out}"
    );
    // The running server stops signing with it within the sync interval.
    eventually("a successor signs", async || {
        let t = app
            .signup(&format!("u{}", uuid::Uuid::new_v4().simple()))
            .await["token"]
            .as_str()
            .unwrap()
            .to_string();
        kid_of(&t) != old
    })
    .await;
    // Still published, and tokens it signed before its retirement still verify.
    assert!(jwks_kids(&app).await.contains(&old));
    assert_eq!(app.private(&before).await.status(), StatusCode::OK);
    // A token it signs now (a thief's) is refused.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut c = app.claims("ann");
    c.iss = app.base.clone();
    let forged = TokenSigner::new(&stolen(&app, &old).await)
        .unwrap()
        .sign(&c)
        .unwrap();
    let res = app.private(&forged).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_key_retired"
    );
    // Retiring the only signing key never leaves a server without one: the CLI made a
    // successor, and a retirement is never undone.
    let keys = app.store().await.keys().await.unwrap();
    assert!(
        keys.iter()
            .find(|k| k.kid == old)
            .unwrap()
            .retired_at
            .is_some()
    );
}

#[tokio::test]
async fn revoking_a_key_withdraws_it_and_refuses_its_tokens_everywhere() {
    let app = app().await;
    let token = app.signup("ann").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let old = kid_of(&token);
    let v = Verifier::new(quick(vec![trust(&app)])).unwrap();
    let _bg = v.start().await;
    assert!(v.verify(&token).await.is_ok());

    let out = cli(&app, &["keys", "revoke", &old]);
    assert!(out.contains("revoked"), "{out}");
    eventually("the server withdraws the key", async || {
        !jwks_kids(&app).await.contains(&old)
    })
    .await;
    let res = app.private(&token).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    eventually("the edge refuses its tokens", async || {
        v.verify(&token).await.is_err()
    })
    .await;
    // New tokens come from the successor and pass everywhere.
    let fresh = app.signup("bob").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(kid_of(&fresh), old);
    assert_eq!(app.private(&fresh).await.status(), StatusCode::OK);
    eventually("the edge accepts the successor's tokens", async || {
        v.verify(&fresh).await.is_ok()
    })
    .await;
    // A revoked key is needed by no token: the server's key sync deletes it, private half
    // and all.
    eventually("the revoked key is deleted", async || {
        let listed: Value = serde_json::from_str(&cli(&app, &["keys", "list", "--json"])).unwrap();
        !listed
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["kid"] == old.as_str())
    })
    .await;
}

/// Issue 17, item 6: a key retired long enough ago that no token can need it is deleted,
/// private half and all, by the running server's key sync.
#[tokio::test]
async fn expired_keys_are_deleted() {
    let app = app().await;
    let store = app.store().await;
    let old = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
    let long_ago = jotgate_verify::now() - 10 * 24 * 3600;
    store
        .insert_key(jotgate_store::StoredKey {
            kid: old.kid().to_string(),
            alg: "EdDSA".into(),
            private_der: old.secret_bytes().to_vec(),
            created_at: long_ago,
            retired_at: Some(long_ago + 60),
        })
        .await
        .unwrap();
    eventually("the expired key is deleted", async || {
        !store
            .keys()
            .await
            .unwrap()
            .iter()
            .any(|k| k.kid == old.kid())
    })
    .await;
    // The signing key stays and signs.
    let token = app.signup_token("ann").await;
    assert_eq!(app.private(&token).await.status(), StatusCode::OK);
}

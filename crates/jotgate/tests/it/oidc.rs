//! An OpenID Connect provider that is not ours: panva's `oidc-provider` (npm, run by node)
//! issues RFC 9068 JWT access tokens by the client-credentials grant; jotgate's verifier,
//! gateway and `token verify --issuer` accept them from its discovery document alone.
//! `scripts/test.sh` installs it; `JOTGATE_SKIP_OIDC_PROVIDER=1` skips these tests.

use std::process::Command;

use jotgate_verify::{IssuerConfig, Verifier};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::{Served, run};
use crate::common::{bearer, client, error_code};
use crate::edge::quick;
use crate::gateway::{Upstream, gateway, policy_for};

const AUDIENCE: &str = "https://api.example.com";

/// A running provider signing with `alg`, or `None` when told to skip.
fn provider(alg: &str) -> Option<Served> {
    if std::env::var("JOTGATE_SKIP_OIDC_PROVIDER").as_deref() == Ok("1") {
        return None;
    }
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oidc-provider");
    assert!(
        std::path::Path::new(dir)
            .join("node_modules/oidc-provider")
            .exists(),
        "oidc-provider is not installed: run scripts/test.sh (or `npm ci` in {dir}), \
         or set JOTGATE_SKIP_OIDC_PROVIDER=1"
    );
    let mut cmd = Command::new("node");
    cmd.current_dir(dir)
        .args(["provider.mjs", "0"])
        .env("OP_ALG", alg);
    Some(Served::launch(cmd, "oidc-provider listening on "))
}

/// An access token from the provider's token endpoint (client credentials).
async fn access_token(op: &Served, scope: &str) -> String {
    let res = client()
        .post(op.url("/token"))
        .basic_auth("edge-tests", Some("edge-tests-secret-0123456789abcdef"))
        .form(&[("grant_type", "client_credentials"), ("scope", scope)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn tokens_of_an_independent_oidc_provider_verify_from_discovery() {
    for alg in ["ES256", "RS256"] {
        let Some(op) = provider(alg) else { return };
        let v = Verifier::new(quick(vec![IssuerConfig::new(&op.base, AUDIENCE)])).unwrap();
        let _bg = v.start().await;
        let token = access_token(&op, "orders:read").await;
        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(format!("{:?}", header.alg), alg);
        let p = v
            .verify(&token)
            .await
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(p.subject, "edge-tests");
        assert_eq!(p.scopes, ["orders:read"]);
        assert_eq!(p.issuer, op.base);
        // The same provider's token for another audience is refused.
        let other = Verifier::new(quick(vec![IssuerConfig::new(
            &op.base,
            "https://other.example",
        )]))
        .unwrap();
        let _bg2 = other.start().await;
        assert_eq!(
            other.verify(&token).await.unwrap_err().code(),
            "token_wrong_audience"
        );
    }
}

#[tokio::test]
async fn the_gateway_applies_scopes_from_an_independent_provider() {
    let Some(op) = provider("ES256") else { return };
    let up = Upstream::start().await;
    let policy =
        policy_for(&op.base, "").replace(r#"["api", "jotgate"]"#, &format!("[\"{AUDIENCE}\"]"));
    let gw = gateway(&up, &policy).await;
    let reader = access_token(&op, "orders:read").await;
    let writer = access_token(&op, "orders:read orders:write").await;
    let res = bearer(Method::POST, format!("{gw}/orders/1"), &reader).await;
    assert_eq!(
        error_code(res, StatusCode::FORBIDDEN).await,
        "insufficient_scope"
    );
    let res = bearer(Method::POST, format!("{gw}/orders/1"), &writer).await;
    assert_eq!(res.status(), StatusCode::OK);
    let echo: Value = res.json().await.unwrap();
    assert_eq!(echo["headers"]["x-jotgate-sub"], "edge-tests");
    assert_eq!(
        echo["headers"]["x-jotgate-scopes"],
        "orders:read orders:write"
    );
}

#[tokio::test]
async fn token_verify_cli_checks_any_issuer() {
    let Some(op) = provider("RS256") else { return };
    let token = access_token(&op, "orders:read").await;
    let dir = crate::common::temp_dir();
    let (ok, out, err) = run(
        &dir,
        &[
            "token",
            "verify",
            &token,
            "--issuer",
            &op.base,
            "--audience",
            AUDIENCE,
        ],
        None,
    );
    assert!(ok, "{err}");
    let claims: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["client_id"], "edge-tests");
    let (ok, _, err) = run(
        &dir,
        &[
            "token",
            "verify",
            &format!("{token}x"),
            "--issuer",
            &op.base,
        ],
        None,
    );
    assert!(!ok && err.contains("invalid token"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

//! The JWT attack list (RFC 8725 and friends), each its own test, against `/private` and
//! `/verify`. Well-signed tokens with bad claims are forged with the server's own key, read
//! from its store, so each test isolates exactly one check.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, error_code};

/// Assert both `/private` and `/verify` refuse `token` with 401 and `code`.
async fn refused(app: &TestApp, token: &str, code: &str) {
    let res = app.private(token).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        code,
        "/private"
    );
    let res = app.post("/verify", json!({"token": token})).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        code,
        "/verify"
    );
}

/// Forge `claims` with the server's key and the right header; assert the refusal `code`.
async fn refused_claims(app: &TestApp, claims: &Value, code: &str) {
    refused(app, &forge(app, header(app).await, claims).await, code).await;
}

fn b64(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

/// A compact JWT from a header, claims and an (unchanged or forged) signature.
fn jwt(h: &Value, c: &Value, sig: &str) -> String {
    format!("{}.{}.{sig}", b64(h), b64(c))
}

async fn valid_token(app: &TestApp) -> String {
    app.signup_token("victim").await
}

fn split(token: &str) -> (Value, Value, String) {
    use crate::common::token_part;
    let sig = token.split('.').nth(2).unwrap().to_string();
    (token_part(token, 0), token_part(token, 1), sig)
}

/// Sign arbitrary header and claims with the server's real key.
async fn forge(app: &TestApp, header: Header, claims: &Value) -> String {
    let key = app.signing_key().await;
    jsonwebtoken::encode(&header, claims, &key.encoding_key().unwrap()).unwrap()
}

async fn header(app: &TestApp) -> Header {
    let key = app.signing_key().await;
    let mut h = Header::new(key.alg().jwt());
    h.typ = Some("at+jwt".into());
    h.kid = Some(key.kid().to_string());
    h
}

fn claims(app: &TestApp) -> Value {
    serde_json::to_value(app.claims("victim")).unwrap()
}

#[tokio::test]
async fn the_forging_harness_itself_produces_accepted_tokens() {
    let app = TestApp::start().await;
    let t = forge(&app, header(&app).await, &claims(&app)).await;
    assert_eq!(app.private(&t).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn alg_none_is_refused() {
    let app = TestApp::start().await;
    let (mut h, c, _) = split(&valid_token(&app).await);
    for none in ["none", "None", "NONE"] {
        h["alg"] = json!(none);
        refused(&app, &jwt(&h, &c, ""), "token_malformed").await;
        refused(&app, &jwt(&h, &c, "AAAA"), "token_alg_none").await;
    }
}

#[tokio::test]
async fn key_confusion_hs256_with_the_public_key_is_refused() {
    let app = TestApp::start().await;
    let (h, c, _) = split(&valid_token(&app).await);
    // The attacker HMACs with the public key as published (JWKS member bytes and the JWK).
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    let jwk = jwks["keys"][0].clone();
    let n = B64.decode(jwk["n"].as_str().unwrap()).unwrap();
    for secret in [serde_json::to_vec(&jwk).unwrap(), n] {
        let mut hs = Header::new(Algorithm::HS256);
        hs.typ = Some("at+jwt".into());
        hs.kid = h["kid"].as_str().map(str::to_string);
        let t = jsonwebtoken::encode(&hs, &c, &EncodingKey::from_secret(&secret)).unwrap();
        // HS256 is no algorithm of this issuer: refused before any key is looked at.
        refused(&app, &t, "token_alg_not_allowed").await;
    }
}

#[tokio::test]
async fn alg_differing_from_the_key_is_refused() {
    let app = TestApp::start().await;
    let (mut h, c, s) = split(&valid_token(&app).await);
    // An algorithm jotgate signs with, but not this key's: a mismatch.
    for alg in ["ES256", "EdDSA"] {
        h["alg"] = json!(alg);
        refused(&app, &jwt(&h, &c, &s), "token_alg_mismatch").await;
    }
    // An algorithm jotgate never signs with: not allowed for the issuer at all.
    for alg in ["PS256", "RS512", "HS512"] {
        h["alg"] = json!(alg);
        refused(&app, &jwt(&h, &c, &s), "token_alg_not_allowed").await;
    }
}

#[tokio::test]
async fn unknown_or_missing_kid_is_refused() {
    let app = TestApp::start().await;
    let (mut h, c, s) = split(&valid_token(&app).await);
    h["kid"] = json!("not-a-key");
    refused(&app, &jwt(&h, &c, &s), "token_unknown_key").await;
    // Without a kid, the one published key is tried (RFC 7515 does not require a kid):
    // its signature over this header does not match.
    h.as_object_mut().unwrap().remove("kid");
    refused(&app, &jwt(&h, &c, &s), "token_bad_signature").await;
    // A kid that is a path or SQL is just unknown.
    h["kid"] = json!("../../etc/passwd' OR '1'='1");
    refused(&app, &jwt(&h, &c, &s), "token_unknown_key").await;
}

#[tokio::test]
async fn jku_x5u_and_embedded_jwk_are_never_trusted() {
    let app = TestApp::start().await;
    let c = claims(&app);
    // The attacker signs with their own key and points at it.
    let own = jotgate_core::KeyMaterial::generate(jotgate_core::SigningAlg::RS256).unwrap();
    let mut h = header(&app).await;
    h.jwk = own.public_jwk().cloned();
    h.kid = Some(own.kid().to_string());
    let t = jsonwebtoken::encode(&h, &c, &own.encoding_key().unwrap()).unwrap();
    refused(&app, &t, "token_header_forbidden").await;
    // Even with the server's own kid and a valid signature, the members are refused.
    for member in ["jku", "x5u"] {
        let mut h = header(&app).await;
        if member == "jku" {
            h.jku = Some("http://127.0.0.1:1/jwks.json".into());
        } else {
            h.x5u = Some("http://127.0.0.1:1/cert.pem".into());
        }
        let t = forge(&app, h, &c).await;
        refused(&app, &t, "token_header_forbidden").await;
    }
    let mut h = header(&app).await;
    h.x5c = Some(vec!["MIIB".into()]);
    refused(&app, &forge(&app, h, &c).await, "token_header_forbidden").await;
}

#[tokio::test]
async fn unknown_critical_extensions_are_refused() {
    let app = TestApp::start().await;
    let mut h = header(&app).await;
    h.crit = Some(vec!["exp".into()]);
    refused(
        &app,
        &forge(&app, h, &claims(&app)).await,
        "token_crit_unknown",
    )
    .await;
    let mut h = header(&app).await;
    h.crit = Some(vec!["b64".into()]);
    h.extras.insert("b64", false);
    refused(
        &app,
        &forge(&app, h, &claims(&app)).await,
        "token_crit_unknown",
    )
    .await;
}

#[tokio::test]
async fn wrong_typ_is_refused() {
    let app = TestApp::start().await;
    for typ in [Some("JWT"), Some("id_token+jwt"), Some("refresh+jwt"), None] {
        let mut h = header(&app).await;
        h.typ = typ.map(str::to_string);
        refused(
            &app,
            &forge(&app, h, &claims(&app)).await,
            "token_wrong_type",
        )
        .await;
    }
    // The media-type spelling of RFC 9068 is accepted.
    let mut h = header(&app).await;
    h.typ = Some("application/at+jwt".into());
    assert_eq!(
        app.private(&forge(&app, h, &claims(&app)).await)
            .await
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn expired_and_not_yet_valid_are_refused_beyond_the_leeway() {
    let app = TestApp::start().await;
    let now = jotgate_server::now();
    let mut c = claims(&app);
    c["exp"] = json!(now - 120);
    c["iat"] = json!(now - 1000);
    c["nbf"] = json!(now - 1000);
    refused_claims(&app, &c, "token_expired").await;
    // Within the 30 s leeway: accepted.
    c["exp"] = json!(now - 5);
    assert_eq!(
        app.private(&forge(&app, header(&app).await, &c).await)
            .await
            .status(),
        StatusCode::OK
    );
    let mut c = claims(&app);
    c["nbf"] = json!(now + 600);
    refused_claims(&app, &c, "token_not_yet_valid").await;
}

#[tokio::test]
async fn iat_in_the_future_is_refused() {
    let app = TestApp::start().await;
    let mut c = claims(&app);
    c["iat"] = json!(jotgate_server::now() + 3600);
    refused_claims(&app, &c, "token_issued_in_future").await;
}

#[tokio::test]
async fn missing_exp_is_refused() {
    let app = TestApp::start().await;
    let mut c = claims(&app);
    c.as_object_mut().unwrap().remove("exp");
    refused_claims(&app, &c, "token_invalid_claims").await;
    let mut c = claims(&app);
    c["exp"] = json!("tomorrow");
    refused_claims(&app, &c, "token_invalid_claims").await;
}

#[tokio::test]
async fn wrong_issuer_or_audience_is_refused() {
    let app = TestApp::start().await;
    let mut c = claims(&app);
    c["iss"] = json!("https://evil.example");
    refused_claims(&app, &c, "token_wrong_issuer").await;
    let mut c = claims(&app);
    c["aud"] = json!("another-api");
    refused_claims(&app, &c, "token_wrong_audience").await;
    let mut c = claims(&app);
    c.as_object_mut().unwrap().remove("aud");
    refused_claims(&app, &c, "token_wrong_audience").await;
}

#[tokio::test]
async fn tampered_payload_or_signature_is_refused() {
    let app = TestApp::start().await;
    let (h, mut c, s) = split(&valid_token(&app).await);
    c["username"] = json!("admin");
    c["roles"] = json!(["admin"]);
    refused(&app, &jwt(&h, &c, &s), "token_bad_signature").await;
    let t = valid_token_for(&app, "other").await;
    let (h, c, s) = split(&t);
    let mut sig = B64.decode(&s).unwrap();
    sig[10] ^= 1;
    refused(
        &app,
        &format!("{}.{}.{}", b64(&h), b64(&c), B64.encode(sig)),
        "token_bad_signature",
    )
    .await;
}

async fn valid_token_for(app: &TestApp, name: &str) -> String {
    app.signup_token(name).await
}

#[tokio::test]
async fn non_canonical_base64_is_refused() {
    let app = TestApp::start().await;
    let t = valid_token(&app).await;
    let parts: Vec<&str> = t.split('.').collect();
    // Padding, standard-alphabet characters, whitespace: not the one accepted spelling.
    for bad in [
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}==", parts[0], parts[1], parts[2]),
        format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            parts[2].replace('-', "+").replace('_', "/")
        ),
        format!("{}.{} .{}", parts[0], parts[1], parts[2]),
    ] {
        if bad == t {
            continue;
        }
        refused(&app, &bad, "token_malformed").await;
    }
    // Flipping the unused low bits of the last character gives a non-canonical encoding of
    // the same bytes: refused, not silently equal.
    let sig = parts[2];
    let last = sig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    if !sig.len().is_multiple_of(4) {
        let alt = alphabet.chars().nth(idx ^ 1).unwrap();
        let bad = format!("{}.{}.{}{alt}", parts[0], parts[1], &sig[..sig.len() - 1]);
        let res = app.private(&bad).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn oversized_tokens_are_refused() {
    let app = TestApp::start().await;
    let mut c = claims(&app);
    c["padding"] = json!("x".repeat(9000));
    refused_claims(&app, &c, "token_too_large").await;
}

#[tokio::test]
async fn refresh_tokens_are_not_access_tokens() {
    let app = TestApp::start().await;
    let s = app.signup("wendy").await;
    refused(
        &app,
        s["refresh_token"].as_str().unwrap(),
        "token_malformed",
    )
    .await;
}

#[tokio::test]
async fn garbage_never_gets_a_5xx() {
    let app = TestApp::start().await;
    let junk = [
        "",
        ".",
        "..",
        "...",
        "a.b.c",
        "a.b.c.d",
        "🔐.🔐.🔐",
        "eyJ.eyJ.eyJ",
        &format!("{}.{}.AAAA", B64.encode("[]"), B64.encode("{}")),
        &format!("{}.{}.AAAA", B64.encode("{\"alg\":5}"), B64.encode("{}")),
        &format!(
            "{}.{}.AAAA",
            B64.encode("{\"alg\":\"RS256\",\"kid\":[]}"),
            B64.encode("{}")
        ),
        &format!("{}.{}.AAAA", B64.encode("null"), B64.encode("null")),
        &format!(
            "{}.{}.AAAA",
            B64.encode("{\"alg\":\"RS256\",\"typ\":\"at+jwt\",\"kid\":\"x\"}"),
            B64.encode("123")
        ),
    ];
    for t in junk {
        let res = app.post("/verify", json!({"token": t})).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{t:?}");
        if !t.is_ascii() {
            continue; // not expressible as a header value
        }
        let res = app
            .client
            .get(app.url("/private"))
            .header("authorization", format!("Bearer {t}"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_client_error(), "{t:?}: {}", res.status());
    }
    // Header bytes that are not valid UTF-8.
    let res = app
        .client
        .get(app.url("/private"))
        .header(
            "authorization",
            reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
}

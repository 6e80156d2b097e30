//! The attack list against every edge surface (verifier, layer, gateway, authorizer), and
//! the gateway as a reverse proxy: identity headers, forged headers, streaming both ways,
//! status pass-through, upstream down, ambiguous paths, revocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jotgate_core::{KeyMaterial, SigningAlg};
use jotgate_verify::authorizer::{Authorizer, V2Format};
use jotgate_verify::layer::RequireAuth;
use jotgate_verify::policy::{Policy, PolicyFile};
use jotgate_verify::{Principal, Verifier};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::common::{bearer, challenge, client, error_code};
use crate::edge::{FEED_TOKEN, FakeIssuer, Mode, eventually, issuer_app, quick, trust};

fn b64(v: &Value) -> String {
    B64.encode(serde_json::to_vec(v).unwrap())
}

/// Sign any header and claims (raw JWS, so headers jsonwebtoken would not emit are possible).
fn sign(
    header: &Value,
    claims: &Value,
    key: &jsonwebtoken::EncodingKey,
    alg: jsonwebtoken::Algorithm,
) -> String {
    let input = format!("{}.{}", b64(header), b64(claims));
    let sig = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{sig}")
}

/// The RFC 8725 attack list, as (name, token, expected code), for tokens of `fake`.
pub fn attacks(fake: &FakeIssuer) -> Vec<(&'static str, String, &'static str)> {
    attacks_on(&fake.key, &fake.claims())
}

/// The attack list for tokens like `claims` signed by the ES256 key `signer`: the same list,
/// and the same codes, for every verifier of them (the jotgate server included).
pub fn attacks_on(
    signer: &KeyMaterial,
    claims: &jotgate_core::AccessClaims,
) -> Vec<(&'static str, String, &'static str)> {
    use jsonwebtoken::Algorithm::*;
    let key = signer.encoding_key().unwrap();
    let kid = signer.kid().to_string();
    let h = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
    let c = serde_json::to_value(claims).unwrap();
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = c.clone();
        f(&mut v);
        v
    };
    let hwith = |f: &dyn Fn(&mut Value)| {
        let mut v = h.clone();
        f(&mut v);
        v
    };
    let now = jotgate_verify::now();
    let valid = sign(&h, &c, &key, ES256);
    let (head, _, sig) = {
        let p: Vec<&str> = valid.split('.').collect();
        (p[0].to_string(), p[1].to_string(), p[2].to_string())
    };
    // The public key's bytes used as an HMAC secret (the classic RS/HS confusion).
    let public = serde_json::to_vec(signer.public_jwk().unwrap()).unwrap();
    let hs = jsonwebtoken::EncodingKey::from_secret(&public);
    let other = KeyMaterial::generate(SigningAlg::ES256)
        .unwrap()
        .encoding_key()
        .unwrap();
    // Valid header, claims changed by `f`; and valid claims, header changed by `f`.
    let claims_signed = |f: &dyn Fn(&mut Value)| sign(&h, &with(f), &key, ES256);
    let header_signed = |f: &dyn Fn(&mut Value)| sign(&hwith(f), &c, &key, ES256);
    let unsigned =
        |f: &dyn Fn(&mut Value), sig: &str| format!("{}.{}.{sig}", b64(&hwith(f)), b64(&c));
    let drop = |k: &'static str| {
        move |c: &mut Value| {
            c.as_object_mut().unwrap().remove(k);
        }
    };
    vec![
        (
            "alg none",
            unsigned(&|h| h["alg"] = "none".into(), "AAAA"),
            "token_alg_none",
        ),
        (
            "alg none, empty signature",
            unsigned(&|h| h["alg"] = "none".into(), ""),
            "token_malformed",
        ),
        (
            "HS256 with the public key as secret",
            sign(&hwith(&|h| h["alg"] = "HS256".into()), &c, &hs, HS256),
            "token_alg_not_allowed",
        ),
        (
            "RS256 header on an EC key",
            unsigned(&|h| h["alg"] = "RS256".into(), &sig),
            "token_alg_mismatch",
        ),
        (
            "jku header",
            header_signed(&|h| h["jku"] = "https://evil.example/jwks".into()),
            "token_header_forbidden",
        ),
        (
            "embedded jwk",
            header_signed(&|h| h["jwk"] = json!({"kty": "oct", "k": "AAAA"})),
            "token_header_forbidden",
        ),
        (
            "x5u header",
            header_signed(&|h| h["x5u"] = "https://evil.example/c.pem".into()),
            "token_header_forbidden",
        ),
        (
            "x5c header",
            header_signed(&|h| h["x5c"] = json!(["MIIB"])),
            "token_header_forbidden",
        ),
        (
            "unknown crit",
            header_signed(&|h| {
                h["crit"] = json!(["exp2"]);
                h["exp2"] = 1.into();
            }),
            "token_crit_unknown",
        ),
        (
            "wrong typ",
            header_signed(&|h| h["typ"] = "secevent+jwt".into()),
            "token_wrong_type",
        ),
        (
            "unknown kid",
            header_signed(&|h| h["kid"] = "nope".into()),
            "token_unknown_key",
        ),
        (
            "another key, same kid",
            sign(&h, &c, &other, ES256),
            "token_bad_signature",
        ),
        (
            "tampered payload",
            format!(
                "{head}.{}.{sig}",
                b64(&with(&|c| c["sub"] = "admin".into()))
            ),
            "token_bad_signature",
        ),
        (
            "expired",
            claims_signed(&|c| c["exp"] = (now - 3600).into()),
            "token_expired",
        ),
        (
            "not yet valid",
            claims_signed(&|c| c["nbf"] = (now + 3600).into()),
            "token_not_yet_valid",
        ),
        (
            "issued in the future",
            claims_signed(&|c| c["iat"] = (now + 3600).into()),
            "token_issued_in_future",
        ),
        (
            "no exp",
            claims_signed(&drop("exp")),
            "token_invalid_claims",
        ),
        (
            "wrong audience",
            claims_signed(&|c| c["aud"] = "other-api".into()),
            "token_wrong_audience",
        ),
        (
            "untrusted issuer",
            claims_signed(&|c| c["iss"] = "https://evil.example".into()),
            "token_wrong_issuer",
        ),
        (
            "no sub",
            claims_signed(&drop("sub")),
            "token_invalid_claims",
        ),
        (
            "no aud",
            claims_signed(&drop("aud")),
            "token_wrong_audience",
        ),
        ("padding", format!("{valid}="), "token_malformed"),
        ("two parts", format!("{head}.{sig}"), "token_malformed"),
        (
            "huge",
            format!("{head}.{}.{sig}", "A".repeat(9000)),
            "token_too_large",
        ),
        ("garbage", "not-a-jwt".into(), "token_malformed"),
    ]
}

#[tokio::test]
async fn every_attack_is_refused_by_the_verifier_with_its_code() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let v = Verifier::new(quick(vec![fake.config()])).unwrap();
    let _bg = v.start().await;
    v.verify(&fake.token())
        .await
        .expect("the harness makes valid tokens");
    for (name, token, code) in attacks(&fake) {
        let e = v.verify(&token).await.expect_err(name);
        assert_eq!(e.code(), code, "{name}");
    }
}

#[tokio::test]
async fn every_attack_is_refused_by_the_layer() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let v = Verifier::new(quick(vec![fake.config()])).unwrap();
    let _bg = v.start().await;
    let app = Router::new()
        .route("/me", get(|p: Principal| async move { p.subject }))
        .layer(RequireAuth::new(v));
    let base = serve(app).await;
    for (name, token, code) in attacks(&fake) {
        let res = bearer(Method::GET, format!("{base}/me"), &token).await;
        let challenge = challenge(&res);
        assert!(challenge.contains("invalid_token"), "{name}: {challenge}");
        assert_eq!(
            error_code(res, StatusCode::UNAUTHORIZED).await,
            code,
            "{name}"
        );
    }
}

#[tokio::test]
async fn every_attack_is_refused_by_the_gateway_and_never_reaches_the_upstream() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy_for(&fake.base, "")).await;
    let res = bearer(Method::GET, format!("{gw}/orders"), fake.token()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let seen = up.hits();
    for (name, token, code) in attacks(&fake) {
        let res = bearer(Method::GET, format!("{gw}/orders"), &token).await;
        assert_eq!(
            error_code(res, StatusCode::UNAUTHORIZED).await,
            code,
            "{name}"
        );
    }
    assert_eq!(up.hits(), seen, "no refused request reached the upstream");
}

#[tokio::test]
async fn every_attack_is_refused_by_the_authorizer() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let file = PolicyFile::parse(&policy_for(&fake.base, ""), std::path::Path::new(".")).unwrap();
    let v = Verifier::new(quick(file.verifier.issuers.clone())).unwrap();
    let _bg = v.start().await;
    let auth = Authorizer::new(v, file.policy, V2Format::Simple);
    for (name, token, code) in attacks(&fake) {
        let rest = crate::authorizer::event("rest-token", &token);
        assert!(
            auth.handle(&rest).await.is_err(),
            "{name}: REST TOKEN must be Unauthorized"
        );
        let v2 = crate::authorizer::event("http-v2", &token);
        let out = auth.handle(&v2).await.unwrap();
        assert_eq!(out["isAuthorized"], false, "{name}");
        assert_eq!(out["context"]["code"], code, "{name}");
    }
}

/// The server checks its own tokens through the same pipeline as the edge: the same list,
/// the same codes, on `/private` (with the same WWW-Authenticate challenge) and `/verify`.
#[tokio::test]
async fn every_attack_gets_the_same_code_from_the_server() {
    let dir = crate::common::temp_dir();
    let mut s = crate::common::settings(&dir);
    s.tokens.alg = Some("ES256".into());
    let app = crate::common::TestApp::with(s, dir).await;
    let key = app.signing_key().await;
    let claims = app.claims("ann");
    let valid = jotgate_core::TokenSigner::new(&key)
        .unwrap()
        .sign(&claims)
        .unwrap();
    assert_eq!(app.private(&valid).await.status(), StatusCode::OK);
    // jotgate's own tokens must carry a jti (a verifier configured with the jotgate
    // profile requires it too).
    let mut no_jti = serde_json::to_value(&claims).unwrap();
    no_jti.as_object_mut().unwrap().remove("jti");
    let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid()});
    let no_jti = sign(
        &header,
        &no_jti,
        &key.encoding_key().unwrap(),
        jsonwebtoken::Algorithm::ES256,
    );
    let mut list = attacks_on(&key, &claims);
    list.push(("no jti", no_jti, "token_invalid_claims"));
    for (name, token, code) in list {
        let res = app.private(&token).await;
        let challenge = challenge(&res);
        assert!(challenge.contains("invalid_token"), "{name}: {challenge}");
        assert_eq!(
            error_code(res, StatusCode::UNAUTHORIZED).await,
            code,
            "{name}: /private"
        );
        let res = app.post("/verify", json!({ "token": token })).await;
        assert_eq!(
            error_code(res, StatusCode::UNAUTHORIZED).await,
            code,
            "{name}: /verify"
        );
    }
    // No token: the same code and challenge as the layer and the gateway give.
    let res = app.client.get(app.url("/private")).send().await.unwrap();
    assert_eq!(challenge(&res), "Bearer realm=\"jotgate\"");
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );
}

// ---- the gateway as a proxy ----

/// A policy trusting `issuer` (OIDC profile, audience "api") with a few routes.
pub fn policy_for(issuer: &str, extra: &str) -> String {
    format!(
        r#"
[verifier]
unknown_kid_cooldown = 0.3
jwks_min_ttl = 0.2
jwks_max_ttl = 2
feed_wait = 2

[[issuer]]
issuer = "{issuer}"
audiences = ["api", "jotgate"]
{extra}

[[route]]
path = "/health"
access = "public"

[[route]]
path = "/admin/*"
roles_any = ["admin"]

[[route]]
path = "/orders/*"
methods = ["POST"]
scopes_all = ["orders:write"]

[[route]]
path = "/closed"
access = "deny"
"#
    )
}

pub struct Upstream {
    pub base: String,
    state: Arc<UpState>,
}

struct UpState {
    hits: AtomicUsize,
    release: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
}

async fn echo(State(s): State<Arc<UpState>>, req: Request) -> axum::response::Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body_len": body.len(),
        "body_sum": body.iter().map(|&b| b as u64).sum::<u64>(),
    }))
    .into_response()
}

async fn status(State(s): State<Arc<UpState>>, Path(code): Path<u16>) -> axum::response::Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut h = HeaderMap::new();
    h.insert("x-upstream", "yes".parse().unwrap());
    (
        axum::http::StatusCode::from_u16(code).unwrap(),
        h,
        "from upstream",
    )
        .into_response()
}

/// Sends "first\n", then waits for the test's go-ahead before "second\n".
async fn stream(State(s): State<Arc<UpState>>) -> axum::response::Response {
    let release = s
        .release
        .lock()
        .await
        .take()
        .expect("one streaming request");
    let chunks = futures_util::stream::unfold((0, Some(release)), |(i, rel)| async move {
        match i {
            0 => Some((Ok::<_, std::io::Error>(Bytes::from("first\n")), (1, rel))),
            1 => {
                let _ = rel.expect("release").await;
                Some((Ok(Bytes::from("second\n")), (2, None)))
            }
            _ => None,
        }
    });
    Body::from_stream(chunks).into_response()
}

impl Upstream {
    pub async fn start() -> Self {
        let state = Arc::new(UpState {
            hits: AtomicUsize::new(0),
            release: Mutex::new(None),
        });
        let app = Router::new()
            .route("/status/{code}", get(status))
            .route("/stream", get(stream))
            .fallback(echo)
            .with_state(state.clone());
        Self {
            base: serve(app).await,
            state,
        }
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

pub async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    base
}

/// A running `jotgate::edge::Gateway` (the code behind `jotgate gateway`) on port 0.
pub async fn gateway(up: &Upstream, policy: &str) -> String {
    gateway_to(&up.base, policy).await
}

pub async fn gateway_to(upstream: &str, policy: &str) -> String {
    let dir = crate::common::temp_dir();
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy).unwrap();
    let gw = jotgate::edge::Gateway::build(
        "127.0.0.1:0".parse().unwrap(),
        upstream,
        &path,
        jotgate::serve::ConnLimits::default(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", gw.local_addr());
    tokio::spawn(async move { gw.run(std::future::pending()).await });
    base
}

#[tokio::test]
async fn gateway_forwards_the_verified_identity_and_strips_forged_headers() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy_for(&fake.base, "")).await;
    let res = client()
        .get(format!("{gw}/orders/7?x=1&y=%20"))
        .bearer_auth(fake.token())
        .header("X-Jotgate-Sub", "admin")
        .header("x-jotgate-roles", "admin")
        .header("X-Jotgate-Anything", "forged")
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "must not pass")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let echo: Value = res.json().await.unwrap();
    let h = &echo["headers"];
    assert_eq!(echo["uri"], "/orders/7?x=1&y=%20");
    assert_eq!(h["x-jotgate-sub"], "user-1");
    assert_eq!(h["x-jotgate-username"], "ann");
    assert_eq!(h["x-jotgate-scopes"], "orders:read profile");
    assert_eq!(h["x-jotgate-roles"], "reader");
    assert_eq!(h["x-jotgate-issuer"], fake.base.as_str());
    assert!(h.get("x-jotgate-anything").is_none(), "{h}");
    assert!(
        h.get("x-secret-hop").is_none(),
        "hop-by-hop headers are dropped: {h}"
    );
    assert!(
        h["x-forwarded-for"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1")
    );
    assert!(h["authorization"].as_str().unwrap().starts_with("Bearer "));

    // A public route: forged identity headers are stripped even without a token.
    let res = client()
        .get(format!("{gw}/health"))
        .header("X-Jotgate-Sub", "admin")
        .send()
        .await
        .unwrap();
    let echo: Value = res.json().await.unwrap();
    assert!(echo["headers"].get("x-jotgate-sub").is_none());
}

#[tokio::test]
async fn gateway_applies_route_policy() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy_for(&fake.base, "")).await;
    let c = client();
    let t = fake.token();
    let res = c.get(format!("{gw}/orders")).send().await.unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );
    let res = bearer(Method::POST, format!("{gw}/orders/1"), &t).await;
    let ch = challenge(&res);
    assert!(
        ch.contains("insufficient_scope") && ch.contains("scope=\"orders:write\""),
        "{ch}"
    );
    assert_eq!(
        error_code(res, StatusCode::FORBIDDEN).await,
        "insufficient_scope"
    );
    let res = bearer(Method::GET, format!("{gw}/admin/users"), &t).await;
    assert_eq!(
        error_code(res, StatusCode::FORBIDDEN).await,
        "insufficient_scope"
    );
    let res = bearer(Method::GET, format!("{gw}/closed"), &t).await;
    assert_eq!(error_code(res, StatusCode::FORBIDDEN).await, "forbidden");
    let res = c.get(format!("{gw}/health")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Paths that an upstream could read as another route are refused before any rule.
    // (Raw requests: an HTTP client library would normalise the dot segments away.)
    for p in [
        "/health/../admin/users",
        "/health/%2e%2e/admin",
        "//admin/users",
        "/admin%2fusers",
        "/health/./x",
    ] {
        let head = raw_get(&gw, p, &t).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{p}: {head}");
        assert!(head.contains("invalid_request"), "{p}: {head}");
    }
    assert_eq!(up.hits(), 1, "only /health reached the upstream");
    // Case and trailing slashes do not dodge a rule.
    for p in ["/ADMIN/users", "/admin/", "/Admin"] {
        let res = bearer(Method::GET, format!("{gw}{p}"), &t).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{p}");
    }
}

/// Send a GET with `path` exactly as written; returns the whole response as text.
async fn raw_get(base: &str, path: &str, token: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn gateway_streams_bodies_and_passes_status_codes_through() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy_for(&fake.base, "")).await;
    let c = client();
    let t = fake.token();
    let body: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let sum: u64 = body.iter().map(|&b| b as u64).sum();
    let res = c
        .put(format!("{gw}/upload"))
        .bearer_auth(&t)
        .body(body)
        .send()
        .await
        .unwrap();
    let echo: Value = res.json().await.unwrap();
    assert_eq!(echo["body_len"], 4 << 20);
    assert_eq!(echo["body_sum"], sum);

    for code in [201u16, 204, 404, 418, 500, 503] {
        let res = bearer(Method::GET, format!("{gw}/status/{code}"), &t).await;
        assert_eq!(res.status().as_u16(), code);
        assert_eq!(res.headers()["x-upstream"], "yes");
    }

    // The first chunk arrives while the upstream is still holding the second.
    let (go, release) = tokio::sync::oneshot::channel();
    *up.state.release.lock().await = Some(release);
    let mut res = bearer(Method::GET, format!("{gw}/stream"), &t).await;
    let first = tokio::time::timeout(Duration::from_secs(10), res.chunk())
        .await
        .expect("the gateway does not buffer the response")
        .unwrap()
        .unwrap();
    assert_eq!(&first[..], b"first\n");
    go.send(()).unwrap();
    assert_eq!(&res.chunk().await.unwrap().unwrap()[..], b"second\n");
}

#[tokio::test]
async fn gateway_answers_502_json_when_the_upstream_is_down() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = gateway_to(
        &format!("http://127.0.0.1:{port}"),
        &policy_for(&fake.base, ""),
    )
    .await;
    let res = client()
        .get(format!("{gw}/orders"))
        .bearer_auth(fake.token())
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::BAD_GATEWAY).await,
        "upstream_unavailable"
    );
    // And 503 (not 401) while the issuer's keys have never been fetched.
    let down = FakeIssuer::start(Mode::Down).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy_for(&down.base, "")).await;
    let res = client()
        .get(format!("{gw}/orders"))
        .bearer_auth(down.token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["retry-after"], "5");
    assert_eq!(
        error_code(res, StatusCode::SERVICE_UNAVAILABLE).await,
        "issuer_unavailable"
    );
}

#[tokio::test]
async fn gateway_follows_the_revocation_feed() {
    let app = issuer_app().await;
    let up = Upstream::start().await;
    let extra = format!(
        "profile = \"jotgate\"\nrevocation_feed = \"{}\"\nrevocation_token_env = \"JOTGATE_TEST_FEED_TOKEN\"",
        app.url("/api/v1/revocations")
    );
    // SAFETY: tests only read this variable; every writer sets the same value.
    unsafe { std::env::set_var("JOTGATE_TEST_FEED_TOKEN", FEED_TOKEN) };
    let gw = gateway(&up, &policy_for(&app.base, &extra)).await;
    let token = app.signup_token("ann").await;
    let res = bearer(Method::GET, format!("{gw}/orders"), &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = bearer(Method::POST, app.url("/logout"), &token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    eventually("the gateway refuses the revoked token", async || {
        let res = bearer(Method::GET, format!("{gw}/orders"), &token).await;
        res.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let res = bearer(Method::GET, format!("{gw}/orders"), &token).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );
    let _ = trust; // the same issuer, configured from the policy file instead
}

#[tokio::test]
async fn policy_from_the_example_file_parses() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/policy.toml"
    ))
    .unwrap();
    let f = PolicyFile::parse(&text, std::path::Path::new(".")).unwrap();
    assert!(!f.policy.routes.is_empty());
    let _: &Policy = &f.policy;
}

#[tokio::test]
async fn jotgate_gateway_binary_serves_and_refuses_bad_policy_files() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let dir = crate::common::temp_dir();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, policy_for(&fake.base, "")).unwrap();
    let mut cmd = crate::cli::bin();
    cmd.args([
        "gateway",
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        &up.base,
        "--policy",
    ])
    .arg(&policy);
    let gw = crate::cli::Served::launch(cmd, "jotgate gateway listening on ");
    let res = bearer(Method::GET, gw.url("/orders"), fake.token()).await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = client().get(gw.url("/orders")).send().await.unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );

    // A mistake in the policy stops start-up with the file, line and field.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        policy_for(&fake.base, "").replace("roles_any = [\"admin\"]", "roles_any = \"admin\""),
    )
    .unwrap();
    let out = crate::cli::bin()
        .args(["gateway", "--upstream", &up.base, "--policy"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: line 19 (roles_any = \"admin\"): invalid type"),
        "{err}"
    );
    let out = crate::cli::bin()
        .args(["gateway", "--upstream", "https://127.0.0.1:1", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be an http:// URL"));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn require_auth_decides_per_route_from_a_policy_file() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let file = PolicyFile::parse(&policy_for(&fake.base, ""), std::path::Path::new(".")).unwrap();
    let v = Verifier::new(quick(file.verifier.issuers.clone())).unwrap();
    let _bg = v.start().await;
    let who = |p: Option<axum::Extension<Arc<Principal>>>| async move {
        p.map_or("anonymous".to_string(), |p| p.subject.clone())
    };
    let app = Router::new()
        .route("/health", get(who))
        .route("/orders/{id}", get(who).post(who))
        .route("/admin/{x}", get(who))
        .layer(RequireAuth::policy(v, file.policy));
    let base = serve(app).await;
    let t = fake.token();
    let res = client().get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(res.text().await.unwrap(), "anonymous");
    let res = bearer(Method::GET, format!("{base}/health"), &t).await;
    assert_eq!(
        res.text().await.unwrap(),
        "user-1",
        "a public route still sees a valid token"
    );
    let res = bearer(Method::GET, format!("{base}/orders/1"), &t).await;
    assert_eq!(res.text().await.unwrap(), "user-1");
    let res = bearer(Method::POST, format!("{base}/orders/1"), &t).await;
    assert_eq!(
        error_code(res, StatusCode::FORBIDDEN).await,
        "insufficient_scope"
    );
    let res = bearer(Method::GET, format!("{base}/admin/x"), &t).await;
    assert_eq!(
        error_code(res, StatusCode::FORBIDDEN).await,
        "insufficient_scope"
    );
    let res = client()
        .get(format!("{base}/orders/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );
}

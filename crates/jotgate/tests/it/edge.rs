//! jotgate-verify against real issuers: two jotgate servers with their own keys, and a
//! stand-in issuer whose discovery/JWKS endpoints can be made down, slow, huge or garbage.
//! Key rotation, kid spraying, the verified-token cache, the revocation feed, the layer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode as AxStatus, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use jotgate_core::{AccessClaims, KeyMaterial, SigningAlg, TokenSigner};
use jotgate_verify::layer::RequireAuth;
use jotgate_verify::{
    FeedConfig, IssuerConfig, KeySource, Principal, Verifier, VerifierConfig, VerifyErrorKind,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{TestApp, bearer, challenge, error_code, settings, temp_dir};

pub const FEED_TOKEN: &str = "feed-token-for-tests-0123456789abcdef";

/// A jotgate server whose issuer is its real URL, with the revocation feed open.
pub async fn issuer_app() -> TestApp {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.tokens.issuer = None;
    s.sessions.sync_interval = Some(1);
    s.feed.feed_token = Some(FEED_TOKEN.to_string().into());
    // Tests sign up freely (one polls sign-ups until a rotated key signs).
    s.login.signup_ip_limit = Some(10_000);
    TestApp::with(s, dir).await
}

/// Verifier settings that make refreshes observable within a test.
pub fn quick(issuers: Vec<IssuerConfig>) -> VerifierConfig {
    VerifierConfig {
        issuers,
        unknown_kid_cooldown: Duration::from_millis(300),
        http_timeout: Duration::from_secs(1),
        jwks_min_ttl: Duration::from_millis(200),
        jwks_max_ttl: Duration::from_secs(2),
        feed_wait: Duration::from_secs(2),
        ..VerifierConfig::default()
    }
}

pub fn trust(app: &TestApp) -> IssuerConfig {
    IssuerConfig::jotgate(&app.base, "jotgate").with_feed(FeedConfig {
        url: app.url("/api/v1/revocations"),
        token: FEED_TOKEN.into(),
    })
}

/// Poll `f` until it is true (at most ~10 s); the revocation and refresh paths are async.
pub async fn eventually(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never happened: {what}");
}

// ---- a stand-in OIDC issuer ----

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Ok,
    Down,
    Garbage,
    Huge,
    Slow,
}

pub struct FakeIssuer {
    pub base: String,
    pub key: KeyMaterial,
    state: Arc<FakeState>,
}

struct FakeState {
    base: String,
    mode: std::sync::Mutex<Mode>,
    jwks: std::sync::Mutex<Value>,
    jwks_hits: AtomicUsize,
}

async fn discovery(State(s): State<Arc<FakeState>>) -> Response {
    if *s.mode.lock().unwrap() == Mode::Down {
        return AxStatus::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(json!({"issuer": s.base, "jwks_uri": format!("{}/jwks", s.base)})).into_response()
}

async fn jwks(State(s): State<Arc<FakeState>>) -> Response {
    s.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let mode = *s.mode.lock().unwrap();
    match mode {
        Mode::Ok => {
            let mut res = axum::Json(s.jwks.lock().unwrap().clone()).into_response();
            res.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=3600"),
            );
            res
        }
        Mode::Down => AxStatus::SERVICE_UNAVAILABLE.into_response(),
        Mode::Garbage => "<html>not a key set</html>".into_response(),
        Mode::Huge => format!("{{\"keys\":[\"{}\"]}}", "x".repeat(4 << 20)).into_response(),
        Mode::Slow => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            AxStatus::OK.into_response()
        }
    }
}

impl FakeIssuer {
    pub async fn start(mode: Mode) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let key = KeyMaterial::generate(SigningAlg::ES256).unwrap();
        let state = Arc::new(FakeState {
            base: base.clone(),
            mode: std::sync::Mutex::new(mode),
            jwks: std::sync::Mutex::new(json!({"keys": [key.public_jwk().unwrap()]})),
            jwks_hits: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base, key, state }
    }

    pub fn set_mode(&self, m: Mode) {
        *self.state.mode.lock().unwrap() = m;
    }

    pub fn jwks_hits(&self) -> usize {
        self.state.jwks_hits.load(Ordering::SeqCst)
    }

    /// Publish another key next to the first; returns it.
    pub fn add_key(&self) -> KeyMaterial {
        let k = KeyMaterial::generate(SigningAlg::ES256).unwrap();
        self.state.jwks.lock().unwrap()["keys"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::to_value(k.public_jwk().unwrap()).unwrap());
        k
    }

    /// Serve this JWKS from now on.
    pub fn set_jwks(&self, jwks: Value) {
        *self.state.jwks.lock().unwrap() = jwks;
    }

    pub fn config(&self) -> IssuerConfig {
        IssuerConfig::new(&self.base, "api")
    }

    pub fn claims(&self) -> AccessClaims {
        let now = jotgate_verify::now();
        AccessClaims {
            iss: self.base.clone(),
            sub: "user-1".into(),
            aud: "api".into(),
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            username: "ann".into(),
            roles: vec!["reader".into()],
            scope: "orders:read profile".into(),
            sid: None,
        }
    }

    pub fn token(&self) -> String {
        TokenSigner::new(&self.key)
            .unwrap()
            .sign(&self.claims())
            .unwrap()
    }

    pub fn token_with(&self, key: &KeyMaterial, claims: &AccessClaims) -> String {
        TokenSigner::new(key).unwrap().sign(claims).unwrap()
    }

    /// A token signed by the real key but naming another `kid`.
    pub fn token_with_kid(&self, kid: &str) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &self.claims(), &self.key.encoding_key().unwrap()).unwrap()
    }
}

// ---- tests ----

#[tokio::test]
async fn tokens_from_two_independent_issuers_verify_and_a_third_is_refused() {
    let (a, b, c) = (issuer_app().await, issuer_app().await, issuer_app().await);
    let v = Verifier::new(quick(vec![trust(&a), trust(&b)])).unwrap();
    let _bg = v.start().await;
    let ta = a.signup_token("ann").await;
    let tb = b.signup_token("bob").await;
    let pa = v.verify(&ta).await.unwrap();
    let pb = v.verify(&tb).await.unwrap();
    assert_eq!(
        (pa.issuer.as_str(), pa.username.as_deref()),
        (a.base.as_str(), Some("ann"))
    );
    assert_eq!(
        (pb.issuer.as_str(), pb.username.as_deref()),
        (b.base.as_str(), Some("bob"))
    );
    assert_eq!(pa.scopes, ["profile"]);
    let e = v.verify(&c.signup_token("cat").await).await.unwrap_err();
    assert_eq!(e.kind(), VerifyErrorKind::UnknownIssuer);
}

#[tokio::test]
async fn issuer_key_rotation_keeps_verification_working() {
    let app = issuer_app().await;
    let v = Verifier::new(quick(vec![trust(&app)])).unwrap();
    let _bg = v.start().await;
    let old = app.signup_token("ann").await;
    v.verify(&old).await.unwrap();
    let fetches = v.stats().jwks_fetches.load(Ordering::SeqCst);
    // Rotate on the issuer with immediate activation: the worst case for a verifier.
    jotgate::admin::keys_rotate(&app.settings, Some("EdDSA"), 0)
        .await
        .unwrap();
    let mut new = String::new();
    eventually("the issuer signs with the new key", async || {
        let t = app
            .signup_token(&format!("u{}", uuid::Uuid::new_v4().simple()))
            .await;
        let header = jsonwebtoken::decode_header(&t).unwrap();
        new = t;
        header.alg == jsonwebtoken::Algorithm::EdDSA
    })
    .await;
    // Old and new tokens both verify, without a single error.
    v.verify(&new)
        .await
        .expect("new-key token verifies after one JWKS refetch");
    v.verify(&old).await.expect("old-key token still verifies");
    assert!(v.stats().jwks_fetches.load(Ordering::SeqCst) > fetches);
}

#[tokio::test]
async fn a_published_next_key_is_learned_in_the_background_before_it_signs() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let v = Verifier::new(quick(vec![fake.config()])).unwrap();
    let _bg = v.start().await;
    v.verify(&fake.token()).await.unwrap();
    let next = fake.add_key();
    // The JWKS max-age (3600) is bounded by jwks_max_ttl (2 s): a refresh comes on its own.
    let hits = fake.jwks_hits();
    eventually("background JWKS refresh", async || fake.jwks_hits() > hits).await;
    let checks = v.stats().jwks_fetches.load(Ordering::SeqCst);
    v.verify(&fake.token_with(&next, &fake.claims()))
        .await
        .unwrap();
    assert_eq!(
        v.stats().jwks_fetches.load(Ordering::SeqCst),
        checks,
        "the next key was already known: no fetch on the request path"
    );
}

#[tokio::test]
async fn kid_spraying_does_not_multiply_issuer_requests() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let mut cfg = quick(vec![fake.config()]);
    cfg.unknown_kid_cooldown = Duration::from_secs(30);
    cfg.jwks_max_ttl = Duration::from_secs(3600);
    let v = Verifier::new(cfg).unwrap();
    let _bg = v.start().await;
    let before = fake.jwks_hits();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (v, t) = (v.clone(), fake.token_with_kid(&format!("spray-{i}")));
        tasks.push(tokio::spawn(async move { v.verify(&t).await }));
    }
    for t in tasks {
        let e = t.await.unwrap().unwrap_err();
        assert_eq!(e.code(), "token_unknown_key");
    }
    let extra = fake.jwks_hits() - before;
    assert!(extra <= 1, "300 unknown kids caused {extra} JWKS requests");
    v.verify(&fake.token()).await.unwrap();
}

#[tokio::test]
async fn issuer_unreachable_at_start_then_recovers() {
    let fake = FakeIssuer::start(Mode::Down).await;
    let v = Verifier::new(quick(vec![fake.config()])).unwrap();
    let _bg = v.start().await;
    let t = fake.token();
    let e = v.verify(&t).await.unwrap_err();
    assert_eq!(e.kind(), VerifyErrorKind::IssuerUnavailable);
    fake.set_mode(Mode::Ok);
    eventually("keys fetched once the issuer is back", async || {
        v.verify(&t).await.is_ok()
    })
    .await;
}

#[tokio::test]
async fn cached_keys_keep_serving_when_the_issuer_fails() {
    for failure in [Mode::Down, Mode::Garbage, Mode::Huge, Mode::Slow] {
        let fake = FakeIssuer::start(Mode::Ok).await;
        let mut cfg = quick(vec![fake.config()]);
        cfg.jwks_max_ttl = Duration::from_millis(200);
        cfg.http_timeout = Duration::from_millis(300);
        let v = Verifier::new(cfg).unwrap();
        let _bg = v.start().await;
        v.verify(&fake.token()).await.unwrap();
        fake.set_mode(failure);
        let hits = fake.jwks_hits();
        eventually("a failing refresh happened", async || {
            fake.jwks_hits() > hits + 1
        })
        .await;
        v.verify(&fake.token())
            .await
            .unwrap_or_else(|e| panic!("{failure:?}: {e}"));
        // An unknown kid during the outage is refused (bounded by the timeout), not hung.
        let e = tokio::time::timeout(
            Duration::from_secs(10),
            v.verify(&fake.token_with_kid("new")),
        )
        .await
        .expect("verification is bounded by http_timeout")
        .unwrap_err();
        assert_eq!(e.code(), "token_unknown_key", "{failure:?}");
    }
}

#[tokio::test]
async fn garbage_huge_and_slow_jwks_at_start_are_survived() {
    for failure in [Mode::Garbage, Mode::Huge, Mode::Slow] {
        let fake = FakeIssuer::start(failure).await;
        let mut cfg = quick(vec![fake.config()]);
        cfg.http_timeout = Duration::from_millis(300);
        let v = Verifier::new(cfg).unwrap();
        let started = tokio::time::timeout(Duration::from_secs(10), v.start())
            .await
            .expect("start is bounded by http_timeout");
        let e = v.verify(&fake.token()).await.unwrap_err();
        assert_eq!(e.kind(), VerifyErrorKind::IssuerUnavailable, "{failure:?}");
        drop(started);
    }
}

#[tokio::test]
async fn repeated_tokens_hit_the_cache_and_revocation_evicts_them() {
    let app = issuer_app().await;
    let v = Verifier::new(quick(vec![trust(&app)])).unwrap();
    let _bg = v.start().await;
    let session = app.signup("ann").await;
    let token = session["token"].as_str().unwrap().to_string();
    v.verify(&token).await.unwrap();
    let checks = v.stats().signature_checks.load(Ordering::SeqCst);
    for _ in 0..10 {
        v.verify(&token).await.unwrap();
    }
    assert_eq!(v.stats().signature_checks.load(Ordering::SeqCst), checks);
    assert!(v.stats().cache_hits.load(Ordering::SeqCst) >= 10);
    assert_eq!(v.cached_tokens(), 1);

    let res = bearer(Method::POST, app.url("/logout"), &token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    eventually("the feed delivers the logout", async || {
        v.verify(&token)
            .await
            .is_err_and(|e| e.kind() == VerifyErrorKind::Revoked)
    })
    .await;
    assert_eq!(v.cached_tokens(), 0, "the revoked token left the cache");
}

#[tokio::test]
async fn cache_off_checks_every_signature() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let mut cfg = quick(vec![fake.config()]);
    cfg.cache_capacity = 0;
    let v = Verifier::new(cfg).unwrap();
    let _bg = v.start().await;
    let t = fake.token();
    for _ in 0..5 {
        v.verify(&t).await.unwrap();
    }
    assert_eq!(v.stats().signature_checks.load(Ordering::SeqCst), 5);
    assert_eq!(v.stats().cache_hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn logout_everywhere_reaches_verifiers_as_a_user_not_before() {
    let app = issuer_app().await;
    let v = Verifier::new(quick(vec![trust(&app)])).unwrap();
    let _bg = v.start().await;
    let first = app.signup("ann").await;
    let t1 = first["token"].as_str().unwrap().to_string();
    let res = app.login("ann", crate::common::PASSWORD).await;
    let t2 = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let other = app.signup_token("bob").await;
    for t in [&t1, &t2, &other] {
        v.verify(t).await.unwrap();
    }
    let res = bearer(Method::POST, app.url("/logout-all"), &t1).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    eventually("both of ann's tokens are refused", async || {
        v.verify(&t1).await.is_err() && v.verify(&t2).await.is_err()
    })
    .await;
    v.verify(&other).await.expect("bob is untouched");
    // The server itself refuses them too, and ann's refresh tokens are dead.
    assert_eq!(
        error_code(app.private(&t2).await, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );
    let res = app
        .post("/refresh", json!({"refresh_token": first["refresh_token"]}))
        .await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );
}

#[tokio::test]
async fn the_revocation_feed_is_protected_and_long_polls() {
    let app = issuer_app().await;
    let res = app
        .client
        .get(app.url("/api/v1/revocations"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );
    let res = bearer(Method::GET, app.url("/api/v1/revocations"), "wrong-token").await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_feed_token"
    );
    let res = bearer(
        Method::GET,
        app.url("/api/v1/revocations?since=-1"),
        FEED_TOKEN,
    )
    .await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_query"
    );

    let feed = |q: &'static str| {
        app.client
            .get(app.url(&format!("/api/v1/revocations{q}")))
            .bearer_auth(FEED_TOKEN)
            .send()
    };
    let page: Value = feed("?since=0").await.unwrap().json().await.unwrap();
    assert_eq!(page, json!({"cursor": 0, "revocations": [], "more": false}));
    // A long poll returns as soon as a revocation happens.
    let token = app.signup_token("ann").await;
    let waiting = tokio::spawn(feed("?since=0&wait=30"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let res = bearer(Method::POST, app.url("/logout"), &token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let page: Value = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the long poll answered")
        .unwrap()
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<&str> = page["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    // Logout stores one entry: the session's, which covers its access tokens.
    assert_eq!(kinds, ["session"], "{page}");
    assert!(page["cursor"].as_i64().unwrap() > 0);
    let all: Value = feed("?since=0").await.unwrap().json().await.unwrap();
    let kinds: Vec<&str> = all["revocations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["session"], "{all}");

    // Closed when no feed_token is configured.
    let closed = TestApp::start().await;
    let res = bearer(Method::GET, closed.url("/api/v1/revocations"), FEED_TOKEN).await;
    assert_eq!(
        error_code(res, StatusCode::NOT_FOUND).await,
        "feed_disabled"
    );
}

#[tokio::test]
async fn static_pem_and_shared_secret_issuers() {
    let key = KeyMaterial::generate(SigningAlg::RS256).unwrap();
    // The public key as PEM, made by openssl from the private key.
    let dir = temp_dir();
    let private = dir.join("k.der");
    std::fs::write(&private, key.secret_bytes()).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["pkey", "-inform", "DER", "-pubout", "-in"])
        .arg(&private)
        .output()
        .expect("openssl");
    assert!(out.status.success());
    let issuer = "https://static.example.com";
    let secret = b"0123456789abcdef0123456789abcdef".to_vec();
    let v = Verifier::new(quick(vec![
        IssuerConfig::new(issuer, "api").with_keys(KeySource::Pem {
            pem: out.stdout,
            alg: jsonwebtoken::Algorithm::RS256,
        }),
        IssuerConfig::new("https://hs.example.com", "api")
            .with_keys(KeySource::SharedSecret(secret.clone())),
    ]))
    .unwrap();
    let mut claims = FakeIssuer::start(Mode::Ok).await.claims();
    claims.iss = issuer.into();
    let t = TokenSigner::new(&key).unwrap().sign(&claims).unwrap();
    assert_eq!(v.verify(&t).await.unwrap().subject, "user-1");
    claims.iss = "https://hs.example.com".into();
    let hs = KeyMaterial::shared_secret(&secret).unwrap();
    let t = TokenSigner::new(&hs).unwrap().sign(&claims).unwrap();
    v.verify(&t).await.unwrap();
    // The same claims signed with HS256 for the RSA issuer: refused before any HMAC is tried.
    claims.iss = issuer.into();
    let t = TokenSigner::new(&hs).unwrap().sign(&claims).unwrap();
    assert_eq!(
        v.verify(&t).await.unwrap_err().code(),
        "token_alg_not_allowed"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn require_auth_layer_answers_with_rfc6750_challenges() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let v = Verifier::new(quick(vec![fake.config()])).unwrap();
    let _bg = v.start().await;
    let app = Router::new()
        .route(
            "/orders",
            get(|p: Principal| async move { format!("hello {}", p.subject) }),
        )
        .layer(RequireAuth::new(v.clone()).any_scope(["orders:read"]))
        .merge(
            Router::new()
                .route("/admin", get(|| async { "admin" }))
                .layer(RequireAuth::new(v.clone()).any_role(["admin"])),
        );
    let base = crate::gateway::serve(app).await;
    let c = crate::common::client();
    let t = fake.token();

    let res = c.get(format!("{base}/orders")).send().await.unwrap();
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"jotgate\""
    );
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );

    for scheme in ["Bearer", "bearer", "BEARER"] {
        let res = c
            .get(format!("{base}/orders"))
            .header("authorization", format!("{scheme} {t}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{scheme}");
        assert_eq!(res.text().await.unwrap(), "hello user-1");
    }

    let res = bearer(Method::GET, format!("{base}/admin"), &t).await;
    let ch = challenge(&res);
    assert!(ch.contains("error=\"insufficient_scope\""), "{ch}");
    assert_eq!(
        error_code(res, StatusCode::FORBIDDEN).await,
        "insufficient_scope"
    );

    let res = bearer(Method::GET, format!("{base}/orders"), format!("{t}x")).await;
    let ch = challenge(&res);
    assert!(ch.contains("error=\"invalid_token\""), "{ch}");
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_malformed"
    );

    let res = c
        .get(format!("{base}/orders"))
        .header("authorization", format!("Bearer {t}"))
        .header("authorization", format!("Bearer {t}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
}

#[tokio::test]
async fn users_revoke_cli_logs_a_user_out_everywhere() {
    let app = issuer_app().await;
    let v = Verifier::new(quick(vec![trust(&app)])).unwrap();
    let _bg = v.start().await;
    let token = app.signup_token("ann").await;
    let other = app.signup_token("bob").await;
    v.verify(&token).await.unwrap();
    let out = jotgate::admin::users_revoke(&app.settings, "ANN")
        .await
        .unwrap();
    assert!(out.contains("1 session(s) ended"), "{out}");
    // The running server learns it from the store (sync_interval 1 s), the verifier from
    // the feed, which re-reads the store every second while it waits.
    eventually("the server refuses ann's token", async || {
        app.private(&token).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    eventually("the verifier refuses ann's token", async || {
        v.verify(&token)
            .await
            .is_err_and(|e| e.kind() == VerifyErrorKind::Revoked)
    })
    .await;
    assert_eq!(app.private(&other).await.status(), StatusCode::OK);
    let e = jotgate::admin::users_revoke(&app.settings, "nobody")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no user named"), "{e}");
}

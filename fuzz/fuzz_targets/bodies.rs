//! Every JSON request body, through the real router on an in-memory SQLite store: the
//! first byte picks the endpoint (sign-up, login, refresh, logout, verify), the rest is the
//! body. Whatever arrives is answered below 500, as JSON, and an error names its `code`.
#![no_main]
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{Request, header};
use axum::response::Response;
use http_body_util::BodyExt;
use jotgate_core::{PasswordHasher, PasswordParams, SigningAlg};
use jotgate_server::{AppState, KeySource, ServerConfig};
use jotgate_store::Store;
use jotgate_store::sqlite::SqliteStore;
use libfuzzer_sys::fuzz_target;
use tower::util::BoxCloneSyncService;

#[path = "common.rs"]
mod common;
use common::*;
use tower::ServiceExt;

const ENDPOINTS: [&str; 7] = [
    "/signup",
    "/login",
    "/refresh",
    "/logout",
    "/verify",
    // The token endpoint, its body as JSON and as a form (OAuth 2.0 errors).
    "/oauth/token",
    "/oauth/token#form",
];

type App = BoxCloneSyncService<Request<Body>, Response, Infallible>;

static APP: LazyLock<App> = LazyLock::new(|| {
    jotgate::init_crypto();
    RT.block_on(async {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().expect("sqlite"));
        // The cheapest argon2 there is: the target is the parsing, not the hashing.
        let params = PasswordParams {
            memory_kib: 8,
            iterations: 1,
            parallelism: 1,
        };
        let hasher = PasswordHasher::new(params, None).expect("hasher");
        let cfg = ServerConfig {
            hash_workers: 1,
            hash_queue: 64,
            ..ServerConfig::default()
        };
        let state = AppState::new(
            cfg,
            store,
            hasher,
            KeySource::Stored {
                generate: SigningAlg::ES256,
            },
        )
        .await
        .expect("state");
        BoxCloneSyncService::new(jotgate_server::router(state))
    })
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let endpoint = ENDPOINTS[usize::from(pick) % ENDPOINTS.len()];
    let (path, content_type) = match endpoint.split_once('#') {
        Some((p, _)) => (p, "application/x-www-form-urlencoded"),
        None => (endpoint, "application/json"),
    };
    let mut req = Request::post(path)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body.to_vec()))
        .expect("request");
    req.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 4000))));
    let app = APP.clone();
    let (status, bytes) = RT.block_on(async {
        let res = app.oneshot(req).await.expect("infallible");
        let status = res.status();
        let bytes = res.into_body().collect().await.expect("body").to_bytes();
        (status, bytes)
    });
    assert!(status.as_u16() < 500, "{path} answered {status}: {bytes:?}");
    if status.as_u16() == 204 {
        return;
    }
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).unwrap_or_else(|_| panic!("{path}: not JSON: {bytes:?}"));
    if !status.is_success() {
        // jotgate's shape; the token endpoint's is RFC 6749 §5.2's.
        let code = if path == "/oauth/token" { "error" } else { "code" };
        assert!(json[code].is_string(), "{path} {status}: {json}");
    }
});

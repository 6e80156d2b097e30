//! Cold start and per-invocation time of `jotgate` on Lambda — the authorizer and the HTTP
//! API — the real binary driven by a local Lambda Runtime API
//! (tests/support/runtime_api.rs). The authorizer's policy trusts an issuer found by
//! discovery on loopback, so its start-up includes one discovery + JWKS fetch.
//!
//! `cargo bench -p jotgate --bench lambda_start` (bench profile = release); with
//! `--features dynamodb` and `JOTGATE_TEST_DYNAMODB` set (an emulator's endpoint, plus any
//! AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY), the HTTP API over the DynamoDB store too.

use std::process::Stdio;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use jotgate_core::{AccessClaims, KeyMaterial, SigningAlg, TokenSigner};
use serde_json::json;

#[path = "../tests/support/runtime_api.rs"]
mod runtime_api;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A Lambda function URL event (payload 2.0).
fn url_event(
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> serde_json::Value {
    let mut headers = json!({"host": "abc.lambda-url.us-east-1.on.aws", "content-type": "application/json",
                             "x-forwarded-for": "203.0.113.7"});
    if let Some(t) = token {
        headers["authorization"] = format!("Bearer {t}").into();
    }
    json!({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": headers,
        "requestContext": {"accountId": "anonymous", "apiId": "abc", "domainName": "abc.lambda-url.us-east-1.on.aws",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "203.0.113.7", "userAgent": "bench"},
            "requestId": "id", "routeKey": "$default", "stage": "$default", "time": "23/Nov/2026:22:00:00 +0000",
            "timeEpoch": 1795471200000u64},
        "body": body, "isBase64Encoded": false
    })
}

/// Cold starts (spawn → first response posted) over 20 starts, then 500 warm invocations.
async fn measure(
    label: &str,
    note: &str,
    spawn: &dyn Fn(&runtime_api::RuntimeApi) -> tokio::process::Child,
    first_event: serde_json::Value,
    warm_event: serde_json::Value,
) {
    const STARTS: usize = 20;
    const EVENTS: usize = 500;
    let mut starts = Vec::new();
    let mut per_event = Vec::new();
    let mut hwm_kib = 0u64;
    for run in 0..STARTS {
        let mut api = runtime_api::RuntimeApi::start().await;
        api.invoke(first_event.clone());
        let t0 = Instant::now();
        let mut child = spawn(&api);
        let first = api.outcome().await;
        assert!(first.result.is_ok(), "{:?}", first.result);
        starts.push((first.at - t0).as_secs_f64() * 1000.0);
        if run == 0 {
            for _ in 0..EVENTS {
                let t = Instant::now();
                api.invoke(warm_event.clone());
                let o = api.outcome().await;
                let ok = o
                    .result
                    .as_ref()
                    .is_ok_and(|r| r.get("statusCode").is_none_or(|s| s == 200));
                assert!(ok, "{:?}", o.result);
                per_event.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let pid = child.id().unwrap();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            hwm_kib = status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
        }
        let _ = child.kill().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    starts.sort_by(f64::total_cmp);
    per_event.sort_by(f64::total_cmp);
    println!(
        "| {label}: cold start, spawn → first response posted ({note}) | median {:.1} ms, min {:.1} ms, max {:.1} ms ({STARTS} starts) |",
        pct(&starts, 0.5),
        starts[0],
        starts[STARTS - 1]
    );
    println!(
        "| {label}: warm invocation, queue → response posted (three loopback HTTP hops) | p50 {:.0} µs, p99 {:.0} µs ({EVENTS} events) |",
        pct(&per_event, 0.5),
        pct(&per_event, 0.99)
    );
    println!(
        "| {label}: peak RSS after {EVENTS} events | {:.1} MiB |",
        hwm_kib as f64 / 1024.0
    );
}

/// Sign up once (the first start creates the key), then measure the HTTP API's cold
/// starts (first event /healthz) and warm GET /private invocations with `env`.
async fn http_api(label: &str, note: &str, bin: &'static str, env: Vec<(String, String)>) {
    let api_env = move |api: &runtime_api::RuntimeApi| {
        tokio::process::Command::new(bin)
            .envs(api.env())
            .envs(env.iter().cloned())
            .env("JOTGATE_ISSUER", "https://abc.lambda-url.us-east-1.on.aws")
            .env("JOTGATE_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let signup = url_event(
        "POST",
        "/signup",
        Some(r#"{"username":"bench","password":"correct horse battery"}"#),
        None,
    );
    let mut api = runtime_api::RuntimeApi::start().await;
    let mut child = api_env(&api);
    api.invoke(signup);
    let body = api.outcome().await.result.unwrap();
    let token = serde_json::from_str::<serde_json::Value>(body["body"].as_str().unwrap()).unwrap()
        ["token"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = child.kill().await;
    measure(
        label,
        note,
        &api_env,
        url_event("GET", "/healthz", None, None),
        url_event("GET", "/private", None, Some(&token)),
    )
    .await;
}

#[tokio::main]
async fn main() {
    // A stand-in issuer on loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let key = KeyMaterial::generate(SigningAlg::RS256).unwrap();
    let jwks = json!({"keys": [key.public_jwk().unwrap()]});
    let disc = json!({"issuer": base, "jwks_uri": format!("{base}/jwks")});
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(disc) }),
        )
        .route("/jwks", get(move || async move { axum::Json(jwks) }));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let now = jotgate_verify::now();
    let token = TokenSigner::new(&key)
        .unwrap()
        .sign(&AccessClaims {
            iss: base.clone(),
            sub: "user-1".into(),
            aud: "api".into(),
            exp: now + 3600,
            iat: now,
            nbf: now,
            jti: "j".into(),
            username: "ann".into(),
            roles: vec![],
            scope: "profile".into(),
            sid: None,
        })
        .unwrap();
    let event = json!({
        "type": "TOKEN",
        "authorizationToken": format!("Bearer {token}"),
        "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/GET/orders"
    });
    let dir = std::env::temp_dir().join(format!("jotgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!("[[issuer]]\nissuer = \"{base}\"\naudiences = [\"api\"]\n"),
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_jotgate");
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    println!("| jotgate on Lambda (local Runtime API) | value |");
    println!("|---|---|");

    let p = policy.clone();
    measure(
        "authorizer",
        "discovery + JWKS on loopback included",
        &move |api: &runtime_api::RuntimeApi| api.spawn_authorizer(bin, &p),
        event.clone(),
        event.clone(),
    )
    .await;

    // The authorizer-only package's binary, when named (`JOTGATE_AUTHORIZER_BIN=
    // target/lambda/jotgate-authorizer`, built by `scripts/lambda-zip.sh --authorizer-only`).
    if let Ok(slim) = std::env::var("JOTGATE_AUTHORIZER_BIN") {
        let p = policy.clone();
        let spawn = move |api: &runtime_api::RuntimeApi| {
            tokio::process::Command::new(&slim)
                .envs(api.env())
                .env("JOTGATE_POLICY", &p)
                .env("JOTGATE_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .unwrap()
        };
        measure(
            "authorizer-only package (jotgate-authorizer)",
            "discovery + JWKS on loopback included",
            &spawn,
            event.clone(),
            event.clone(),
        )
        .await;
    }

    // The HTTP API: an existing database (its key made by a first start), a token from a
    // sign-up, then GET /private as function URL events.
    let db = dir.join("api.db").display().to_string();
    http_api(
        "HTTP API (GET /private, function URL events)",
        "existing database: keys loaded, none generated",
        bin,
        vec![("JOTGATE_DATABASE".into(), db)],
    )
    .await;
    // The same over the DynamoDB store, when an endpoint is named (an emulator on loopback:
    // the init includes its reads of keys and revocations, not AWS's latency).
    #[cfg(feature = "dynamodb")]
    if std::env::var("JOTGATE_TEST_DYNAMODB").is_ok() {
        let url = jotgate_store::contract::dynamodb_test_table().unwrap();
        http_api(
            "HTTP API on DynamoDB (moto, loopback)",
            "existing table: keys and revocations read at init",
            bin,
            vec![("JOTGATE_STORE".into(), url)],
        )
        .await;
    }
    println!(
        "| binary ({bin}) | {:.1} MiB |",
        size as f64 / (1024.0 * 1024.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

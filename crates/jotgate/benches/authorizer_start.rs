//! Cold start and per-invocation time of `jotgate authorizer`, the real binary driven by a
//! local Lambda Runtime API (tests/support/runtime_api.rs). The policy trusts an issuer
//! found by discovery on loopback, so start-up includes one discovery + JWKS fetch.
//!
//! `cargo bench -p jotgate --bench authorizer_start` (bench profile = release).

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

    let mut starts = Vec::new();
    let mut per_event = Vec::new();
    let mut hwm_kib = 0u64;
    const STARTS: usize = 20;
    const EVENTS: usize = 500;
    for run in 0..STARTS {
        let mut api = runtime_api::RuntimeApi::start().await;
        api.invoke(event.clone());
        let t0 = Instant::now();
        let mut child = api.spawn_authorizer(bin, &policy);
        let first = api.outcome().await;
        assert!(first.result.is_ok(), "{:?}", first.result);
        starts.push((first.at - t0).as_secs_f64() * 1000.0);
        if run == 0 {
            // Warm invocations: the runtime API round trip included.
            for _ in 0..EVENTS {
                let t = Instant::now();
                api.invoke(event.clone());
                let o = api.outcome().await;
                assert!(o.result.is_ok());
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
    let size = std::fs::metadata(bin).map(|m| m.len()).unwrap_or(0);
    println!("| jotgate authorizer | value |");
    println!("|---|---|");
    println!(
        "| cold start: spawn → first decision posted (discovery + JWKS on loopback included) | median {:.1} ms, min {:.1} ms, max {:.1} ms ({STARTS} starts) |",
        pct(&starts, 0.5),
        starts[0],
        starts[STARTS - 1]
    );
    println!(
        "| warm invocation through the Runtime API (queue → response posted) | p50 {:.0} µs, p99 {:.0} µs ({EVENTS} events) |",
        pct(&per_event, 0.5),
        pct(&per_event, 0.99)
    );
    println!(
        "| peak RSS after {EVENTS} events | {:.1} MiB |",
        hwm_kib as f64 / 1024.0
    );
    println!(
        "| binary ({bin}) | {:.1} MiB |",
        size as f64 / (1024.0 * 1024.0)
    );
    let _ = std::fs::remove_dir_all(dir);
}

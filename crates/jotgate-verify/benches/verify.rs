//! In-process cost of edge verification: `Verifier::verify` with the verified-token cache on
//! and off, and one API Gateway authorizer event end to end (parse event → verify → policy →
//! IAM response). `cargo bench -p jotgate-verify --bench verify`
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jotgate_core::{AccessClaims, KeyMaterial, SigningAlg, TokenSigner};
use jotgate_verify::authorizer::{Authorizer, V2Format};
use jotgate_verify::policy::{Policy, Rule};
use jotgate_verify::{IssuerConfig, KeySource, Verifier, VerifierConfig};
use serde_json::json;

fn setup(alg: SigningAlg, cache: usize) -> (std::sync::Arc<Verifier>, String) {
    let key = KeyMaterial::generate(alg).unwrap();
    let jwks = json!({"keys": [key.public_jwk().unwrap()]}).to_string();
    let now = jotgate_verify::now();
    let claims = AccessClaims {
        iss: "https://auth.example.com".into(),
        sub: "3f8e2a4c-1d2b-4c5e-9f00-7a6b5c4d3e2f".into(),
        aud: "jotgate".into(),
        exp: now + 3600,
        iat: now,
        nbf: now,
        jti: "8d7c6b5a-4e3f-2a1b-0c9d-8e7f6a5b4c3d".into(),
        username: "alice".into(),
        roles: vec!["admin".into()],
        scope: "admin profile".into(),
        sid: Some("f0e1d2c3-b4a5-9687-7869-5a4b3c2d1e0f".into()),
    };
    let token = TokenSigner::new(&key).unwrap().sign(&claims).unwrap();
    let issuer = IssuerConfig::jotgate("https://auth.example.com", "jotgate")
        .with_keys(KeySource::Jwks(jwks));
    let v = Verifier::new(VerifierConfig {
        issuers: vec![issuer],
        cache_capacity: cache,
        ..VerifierConfig::default()
    })
    .unwrap();
    (v, token)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("verify");
    for (name, alg) in [
        ("RS256", SigningAlg::RS256),
        ("ES256", SigningAlg::ES256),
        ("EdDSA", SigningAlg::EdDSA),
    ] {
        for (label, cache) in [("cache_off", 0), ("cache_on", 10_000)] {
            let (v, token) = setup(alg, cache);
            g.bench_function(format!("{name}/{label}"), |b| {
                b.iter(|| rt.block_on(v.verify(black_box(&token))).unwrap())
            });
        }
    }
    // The last character changed: a signature that fails, checked every time (refusals are
    // never cached) — what benches/http.sh's "invalid token" load costs per request.
    let (v, token) = setup(SigningAlg::RS256, 10_000);
    let bad = format!("{}A", &token[..token.len() - 1]);
    g.bench_function("RS256/bad_signature", |b| {
        b.iter(|| rt.block_on(v.verify(black_box(&bad))).unwrap_err())
    });
    g.finish();

    let mut g = c.benchmark_group("authorizer_event");
    for (label, cache) in [("cache_off", 0), ("cache_on", 10_000)] {
        let (v, token) = setup(SigningAlg::RS256, cache);
        let policy = Policy {
            routes: vec![],
            default: Rule::authenticated().any_role(["admin"]),
        };
        let auth = Authorizer::new(v, policy, V2Format::Simple);
        let event = json!({
            "type": "TOKEN",
            "authorizationToken": format!("Bearer {token}"),
            "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/GET/orders/42"
        });
        g.bench_function(format!("rest_token_RS256/{label}"), |b| {
            b.iter(|| rt.block_on(auth.handle(black_box(&event))).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

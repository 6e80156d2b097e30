//! In-process cost of the hot operations: signing per algorithm, and one argon2id password
//! check at the default (OWASP) parameters — the floor of a login's latency. Verification
//! is measured where it lives: `cargo bench -p jotgate-verify --bench verify`.
//!
//! Run: `cargo bench -p jotgate-core --bench tokens`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use jotgate_core::{
    AccessClaims, KeyMaterial, PasswordHasher, PasswordParams, SigningAlg, TokenSigner,
};

fn claims(now: i64) -> AccessClaims {
    AccessClaims {
        iss: "http://127.0.0.1:8080".into(),
        sub: "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9".into(),
        aud: "jotgate".into(),
        exp: now + 900,
        iat: now,
        nbf: now,
        jti: "5f0c8a3e-8a4f-4f57-b1b6-3a1d2c3b4a59".into(),
        username: "alice".into(),
        roles: vec!["admin".into()],
        scope: "admin profile".into(),
        sid: Some("7d1e9a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b".into()),
    }
}

fn tokens(c: &mut Criterion) {
    let now = 1_800_000_000;
    let keys = [
        KeyMaterial::shared_secret(&[7u8; 32]).unwrap(),
        KeyMaterial::generate(SigningAlg::RS256).unwrap(),
        KeyMaterial::generate(SigningAlg::ES256).unwrap(),
        KeyMaterial::generate(SigningAlg::EdDSA).unwrap(),
    ];
    for key in &keys {
        let alg = key.alg();
        let signer = TokenSigner::new(key).unwrap();
        let c0 = claims(now);
        c.bench_function(&format!("sign/{alg}"), |b| {
            b.iter(|| signer.sign(black_box(&c0)).unwrap())
        });
    }
}

fn passwords(c: &mut Criterion) {
    let hasher = PasswordHasher::new(PasswordParams::default(), None).unwrap();
    let phc = hasher.hash("correct horse battery").unwrap();
    let mut g = c.benchmark_group("argon2id-owasp");
    g.sample_size(20);
    g.bench_function("verify", |b| {
        b.iter(|| hasher.verify(black_box("correct horse battery"), &phc))
    });
    g.finish();
}

criterion_group!(benches, tokens, passwords);
criterion_main!(benches);

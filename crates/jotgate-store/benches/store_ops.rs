//! Store operation latency behind login and refresh, per backend: `user_by_key` (the read
//! of a login), `insert_refresh` (the write of a login: a new session), `rotate_refresh`
//! (a refresh: one transaction), `login_failures` (the throttling check every login makes,
//! two keys). SQLite on a file always; PostgreSQL when `JOTGATE_TEST_POSTGRES` names a
//! server (an admin URL; a database is created); DynamoDB when `JOTGATE_TEST_DYNAMODB`
//! names an endpoint (an emulator: its figures say nothing about AWS latency).
//!
//! `JOTGATE_TEST_POSTGRES=postgres://postgres@127.0.0.1:5432/postgres \
//!  JOTGATE_TEST_DYNAMODB=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
//!   cargo bench -p jotgate-store --features postgres,dynamodb --bench store_ops`

use std::sync::Arc;
use std::time::Instant;

use jotgate_store::{NewRefresh, NewUser, Rotate, Store};

/// Rounds per backend (`JOTGATE_BENCH_N`; default 2000).
fn rounds() -> usize {
    std::env::var("JOTGATE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn measure(name: &str, s: Arc<dyn Store>) {
    s.create_user(NewUser {
        id: "u1".into(),
        username_key: "alice".into(),
        username_display: "Alice".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        roles: vec!["admin".into()],
        created_at: 1,
        email: None,
    })
    .await
    .unwrap();
    let (mut read, mut write, mut rotate) = (Vec::new(), Vec::new(), Vec::new());
    let mut throttle = Vec::new();
    let keys = ["user:alice".to_string(), "ip:127.0.0.1".to_string()];
    s.add_login_failure("ip:127.0.0.1", 1_000, 60_000)
        .await
        .unwrap();
    for i in 0..rounds() {
        let t = Instant::now();
        s.login_failures(&keys, 2_000, 60_000).await.unwrap();
        throttle.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        s.user_by_key("alice").await.unwrap().unwrap();
        read.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        s.insert_refresh(NewRefresh {
            token_hash: format!("h{i}"),
            family_id: format!("f{i}"),
            user_id: "u1".into(),
            created_at: 10,
            expires_at: 1_000_000,
        })
        .await
        .unwrap();
        write.push(t.elapsed().as_secs_f64() * 1e6);
        let t = Instant::now();
        s.rotate_refresh(Rotate {
            presented_hash: format!("h{i}"),
            nonce: format!("n{i}"),
            successor_hash: format!("s{i}"),
            successor_expires_at: 1_000_000,
            now: 20,
            grace_secs: 10,
        })
        .await
        .unwrap();
        rotate.push(t.elapsed().as_secs_f64() * 1e6);
    }
    println!(
        "| {name} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} | {:.0} / {:.0} |",
        pct(&mut throttle, 0.5),
        pct(&mut throttle, 0.99),
        pct(&mut read, 0.5),
        pct(&mut read, 0.99),
        pct(&mut write, 0.5),
        pct(&mut write, 0.99),
        pct(&mut rotate, 0.5),
        pct(&mut rotate, 0.99)
    );
}

#[tokio::main]
async fn main() {
    println!(
        "| backend ({} each, µs p50 / p99) | login_failures (throttle check) | user_by_key (login read) | insert_refresh (login write) | rotate_refresh (refresh) |",
        rounds()
    );
    println!("|---|---|---|---|---|");
    let dir = std::env::temp_dir().join(format!("jotgate-bench-{}", std::process::id()));
    let sqlite = jotgate_store::sqlite::SqliteStore::open(&dir.join("bench.db")).unwrap();
    measure("SQLite (file, WAL)", Arc::new(sqlite)).await;
    let _ = std::fs::remove_dir_all(&dir);
    #[cfg(feature = "postgres")]
    if std::env::var("JOTGATE_TEST_POSTGRES").is_ok() {
        let url = jotgate_store::contract::postgres_test_database()
            .await
            .unwrap();
        let pg = jotgate_store::postgres::PostgresStore::connect(&url, 8)
            .await
            .unwrap();
        measure("PostgreSQL (loopback)", Arc::new(pg)).await;
    }
    #[cfg(feature = "dynamodb")]
    if std::env::var("JOTGATE_TEST_DYNAMODB").is_ok() {
        use jotgate_store::dynamodb::{DynamoConfig, DynamoStore};
        let url = jotgate_store::contract::dynamodb_test_table().unwrap();
        let cfg = DynamoConfig::parse(&url).unwrap();
        let ddb = DynamoStore::connect(cfg).await.unwrap();
        measure("DynamoDB emulator (moto, loopback)", Arc::new(ddb)).await;
    }
}

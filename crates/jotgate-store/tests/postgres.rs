//! The store contract against a real PostgreSQL server. `scripts/test.sh` starts a
//! throwaway cluster and sets `JOTGATE_TEST_POSTGRES` (an admin URL); each test gets a
//! database of its own. `JOTGATE_SKIP_POSTGRES=1` skips them.
#![cfg(feature = "postgres")]

use std::sync::Arc;

use jotgate_store::Store;
use jotgate_store::postgres::PostgresStore;

use jotgate_store::contract::postgres_test_database as fresh_database;

async fn make() -> Option<Arc<dyn Store>> {
    let url = fresh_database().await?;
    Some(Arc::new(PostgresStore::connect(&url, 8).await.unwrap()))
}

jotgate_store::store_contract_tests!(optional make);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pools_on_one_database_rotate_once_and_agree() {
    let Some(url) = fresh_database().await else {
        return;
    };
    // Two pools are two jotgate instances: only the database can serialise them.
    let a: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
    let b: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
    assert!(a.describe().starts_with("postgres://") && !a.describe().contains("password"));
    a.create_user(jotgate_store::NewUser {
        id: "u1".into(),
        username_key: "alice".into(),
        username_display: "alice".into(),
        password_hash: "x".into(),
        roles: vec!["admin".into()],
        created_at: 1,
    })
    .await
    .unwrap();
    assert_eq!(
        b.user_by_key("alice").await.unwrap().unwrap().user.roles,
        ["admin"]
    );
    a.insert_refresh(jotgate_store::NewRefresh {
        token_hash: "h0".into(),
        family_id: "f1".into(),
        user_id: "u1".into(),
        created_at: 1,
        expires_at: 1000,
    })
    .await
    .unwrap();
    let mut tasks = Vec::new();
    for i in 0..12 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.rotate_refresh(jotgate_store::Rotate {
                presented_hash: "h0".into(),
                nonce: format!("n{i}"),
                successor_hash: format!("h1-{i}"),
                successor_expires_at: 1000,
                now: 10,
                grace_secs: 10,
            })
            .await
            .unwrap()
        }));
    }
    let mut rotated = 0;
    for t in tasks {
        if matches!(
            t.await.unwrap(),
            jotgate_store::RotateOutcome::Rotated { .. }
        ) {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1);
    // Revocations written on one are in the other's feed, in order.
    for i in 0..20 {
        let s = if i % 2 == 0 { &a } else { &b };
        s.revoke_token(&format!("jti:{i}"), 100, 5).await.unwrap();
    }
    let feed = b.revocations_since(0, 5).await.unwrap();
    assert_eq!(feed.len(), 20);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
}

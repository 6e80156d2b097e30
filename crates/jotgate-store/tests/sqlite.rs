//! The store contract against the SQLite backend: in memory and on a real file.

use std::sync::Arc;

use jotgate_store::Store;
use jotgate_store::sqlite::SqliteStore;

mod memory {
    use super::*;

    async fn make() -> Arc<dyn Store> {
        Arc::new(SqliteStore::in_memory().unwrap())
    }

    jotgate_store::store_contract_tests!(make);
}

mod file {
    use super::*;

    async fn make() -> Arc<dyn Store> {
        let dir = std::env::temp_dir().join(format!("jotgate-store-{}", uuid::Uuid::new_v4()));
        Arc::new(SqliteStore::open(&dir.join("nested").join("jotgate.db")).unwrap())
    }

    jotgate_store::store_contract_tests!(make);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_connections_on_one_file_rotate_once() {
    // Two handles are two SQLite connections, as the server and the CLI (or two processes)
    // would hold: the write lock, not the in-process mutex, must serialise rotation.
    let dir = std::env::temp_dir().join(format!("jotgate-store-{}", uuid::Uuid::new_v4()));
    let path = dir.join("shared.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    a.create_user(jotgate_store::NewUser {
        id: "u1".into(),
        username_key: "alice".into(),
        username_display: "alice".into(),
        password_hash: "x".into(),
        roles: vec![],
        created_at: 1,
    })
    .await
    .unwrap();
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
        let s = if i % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(async move {
            s.rotate_refresh(jotgate_store::Rotate {
                presented_hash: "h0".into(),
                nonce: format!("n{i}"),
                successor_hash: format!("next-{i}"),
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
        if let jotgate_store::RotateOutcome::Rotated { .. } = t.await.unwrap() {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1);
    assert_eq!(b.list_users().await.unwrap().len(), 1);
}

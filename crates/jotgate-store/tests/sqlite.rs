//! The store contract against the SQLite backend: in memory and on a real file.

use std::sync::Arc;

use jotgate_store::prelude::*;
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

/// The contract holds through the key-sealing decorator, and the file never holds the
/// private key in the clear.
mod sealed {
    use super::*;
    use jotgate_core::seal::{MasterKey, MasterKeys};

    fn master_keys(current: &str, old: &[&str]) -> MasterKeys {
        MasterKeys::new(
            MasterKey::from_base64(current).unwrap(),
            old.iter()
                .map(|k| MasterKey::from_base64(k).unwrap())
                .collect(),
        )
    }
    use jotgate_store::sealed::SealedKeys;

    const MASTER: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";

    async fn make() -> Arc<dyn Store> {
        let inner = Arc::new(SqliteStore::in_memory().unwrap());
        Arc::new(SealedKeys::new(inner, Some(master_keys(MASTER, &[]))))
    }

    jotgate_store::store_contract_tests!(make);

    /// With a master key, a shared secret (the device tokens' MAC key) is not what the
    /// store holds: a copy of the database does not give it. Each instance with the same
    /// master key and store derives the same one; another master key, another one.
    #[tokio::test]
    async fn shared_secrets_are_bound_to_the_master_key() {
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        let stored = raw.shared_secret("device_tokens").await.unwrap();
        let a = SealedKeys::new(raw.clone(), Some(master_keys(MASTER, &[])));
        let b = SealedKeys::new(raw.clone(), Some(master_keys(MASTER, &[])));
        let secret = a.shared_secret("device_tokens").await.unwrap();
        assert_ne!(secret, stored);
        assert!(!secret.contains(&stored));
        assert_eq!(b.shared_secret("device_tokens").await.unwrap(), secret);
        assert_ne!(a.shared_secret("other").await.unwrap(), secret);
        let other = MASTER.replace("q", "r");
        let c = SealedKeys::new(raw.clone(), Some(master_keys(&other, &[MASTER])));
        assert_ne!(c.shared_secret("device_tokens").await.unwrap(), secret);
        // Without a master key, the stored secret as it is.
        let plain = SealedKeys::new(raw.clone(), None);
        assert_eq!(plain.shared_secret("device_tokens").await.unwrap(), stored);
    }

    #[tokio::test]
    async fn keys_are_sealed_at_rest_and_need_the_master_key() {
        let dir = std::env::temp_dir().join(format!("jotgate-store-{}", uuid::Uuid::new_v4()));
        let path = dir.join("sealed.db");
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
        let master = || Some(master_keys(MASTER, &[]));
        let sealed = SealedKeys::new(raw.clone(), master());
        let der = b"-----pretend pkcs8 der-----".to_vec();
        sealed
            .insert_key(jotgate_store::StoredKey {
                kid: "k1".into(),
                alg: "EdDSA".into(),
                private_der: der.clone(),
                created_at: 1,
                retired_at: None,
            })
            .await
            .unwrap();
        assert_eq!(sealed.keys().await.unwrap()[0].private_der, der);
        let at_rest = &raw.keys().await.unwrap()[0].private_der;
        assert!(jotgate_core::seal::is_sealed(at_rest));
        assert!(!at_rest.windows(der.len()).any(|w| w == der.as_slice()));
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(der.len()).any(|w| w == der.as_slice()));
        // Without the master key, or with another one: a clear refusal.
        let e = SealedKeys::new(raw.clone(), None).keys().await.unwrap_err();
        assert!(
            e.to_string()
                .contains("set the master key (JOTGATE_MASTER_KEY)"),
            "{e}"
        );
        let other = MASTER.replace("q", "r");
        let e = SealedKeys::new(raw.clone(), Some(master_keys(&other, &[])))
            .keys()
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not configured"), "{e}");
        // A new master key with the old one kept: opens, and re-seals with the new one.
        let rotated = SealedKeys::new(raw.clone(), Some(master_keys(&other, &[MASTER])));
        assert_eq!(rotated.keys().await.unwrap()[0].private_der, der);
        let only_new = SealedKeys::new(raw.clone(), Some(master_keys(&other, &[])));
        assert_eq!(
            only_new.keys().await.unwrap()[0].private_der,
            der,
            "re-sealed"
        );
        // A blob moved to another row (another kid) does not open.
        let blob = raw.keys().await.unwrap()[0].private_der.clone();
        raw.insert_key(jotgate_store::StoredKey {
            kid: "k2".into(),
            alg: "EdDSA".into(),
            private_der: blob,
            created_at: 2,
            retired_at: None,
        })
        .await
        .unwrap();
        assert!(only_new.keys().await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Issue 16, item 15: a sealed key records its retirement, so clearing `retired_at`
    /// in the database does not switch it back on; a blob does not open in another store
    /// that shares the master key.
    #[tokio::test]
    async fn a_retired_key_stays_retired_and_keys_stay_in_their_deployment() {
        let dir = std::env::temp_dir().join(format!("jotgate-store-{}", uuid::Uuid::new_v4()));
        let path = dir.join("sealed.db");
        let raw: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
        let sealed = SealedKeys::new(raw.clone(), Some(master_keys(MASTER, &[])));
        for kid in ["k1", "k2"] {
            sealed
                .insert_key(jotgate_store::StoredKey {
                    kid: kid.into(),
                    alg: "EdDSA".into(),
                    private_der: b"der".to_vec(),
                    created_at: 1,
                    retired_at: None,
                })
                .await
                .unwrap();
        }
        sealed.retire_key("k1", 500).await.unwrap();
        sealed.retire_key("k2", 0).await.unwrap();
        let retired = |keys: &[jotgate_store::StoredKey]| -> Vec<Option<i64>> {
            keys.iter().map(|k| k.retired_at).collect()
        };
        assert_eq!(retired(&sealed.keys().await.unwrap()), [Some(500), Some(0)]);
        // Someone with write access to the database clears the retirements.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute("UPDATE signing_keys SET retired_at = NULL", [])
            .unwrap();
        assert_eq!(retired(&raw.keys().await.unwrap()), [None, None]);
        assert_eq!(retired(&sealed.keys().await.unwrap()), [Some(500), Some(0)]);
        // ... or writes a later one: the earlier, sealed one holds.
        db.execute("UPDATE signing_keys SET retired_at = 900", [])
            .unwrap();
        assert_eq!(retired(&sealed.keys().await.unwrap()), [Some(500), Some(0)]);
        // A key retired in the row only (before this version) has its blob re-sealed as
        // retired when read.
        sealed
            .insert_key(jotgate_store::StoredKey {
                kid: "k3".into(),
                alg: "EdDSA".into(),
                private_der: b"der".to_vec(),
                created_at: 1,
                retired_at: None,
            })
            .await
            .unwrap();
        raw.retire_key("k3", 700).await.unwrap();
        assert_eq!(sealed.keys().await.unwrap()[2].retired_at, Some(700));
        db.execute(
            "UPDATE signing_keys SET retired_at = NULL WHERE kid = 'k3'",
            [],
        )
        .unwrap();
        assert_eq!(sealed.keys().await.unwrap()[2].retired_at, Some(700));
        // Moving a key's activation in the row changes nothing: the sealed one holds.
        db.execute(
            "UPDATE signing_keys SET created_at = 99 WHERE kid = 'k3'",
            [],
        )
        .unwrap();
        assert_eq!(sealed.keys().await.unwrap()[2].created_at, 1);
        // Another store with the same master key cannot read these keys: a blob copied
        // there does not open.
        let blob = raw.keys().await.unwrap()[0].private_der.clone();
        let elsewhere_raw: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().unwrap());
        elsewhere_raw.store_id(true).await.unwrap();
        elsewhere_raw
            .insert_key(jotgate_store::StoredKey {
                kid: "k1".into(),
                alg: "EdDSA".into(),
                private_der: blob,
                created_at: 1,
                retired_at: None,
            })
            .await
            .unwrap();
        let elsewhere = SealedKeys::new(elsewhere_raw, Some(master_keys(MASTER, &[])));
        let e = elsewhere.keys().await.unwrap_err();
        assert!(e.to_string().contains("copied from another store"), "{e}");
        // A store that lost its id is not given a new one while keys are bound to the old.
        db.execute("DELETE FROM meta", []).unwrap();
        let reopened = SealedKeys::new(raw.clone(), Some(master_keys(MASTER, &[])));
        let e = reopened.keys().await.unwrap_err();
        assert!(e.to_string().contains("store's id is missing"), "{e}");
        assert_eq!(raw.store_id(false).await.unwrap(), None);
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_connections_on_one_file_agree() {
    // Two handles are two SQLite connections, as the server and the CLI (or two processes)
    // would hold: the write lock, not the in-process mutex, must serialise rotation.
    let dir = std::env::temp_dir().join(format!("jotgate-store-{}", uuid::Uuid::new_v4()));
    let path = dir.join("shared.db");
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).unwrap());
    jotgate_store::contract::two_handles_agree(a, b).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A file made by a release before emails and roles: opened by this one, it gains the new
/// columns and tables, and its users keep their accounts; `open_existing` (what `jotgate
/// check` reads) finds it whole before that.
#[tokio::test]
async fn a_file_from_before_accounts_is_upgraded_in_place() {
    let dir = std::env::temp_dir().join(format!("jotgate-store-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.db");
    {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE users (id TEXT PRIMARY KEY, username_key TEXT NOT NULL UNIQUE,
                username TEXT NOT NULL, password_hash TEXT NOT NULL, roles TEXT NOT NULL,
                created_at INTEGER NOT NULL);
             CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, alg TEXT NOT NULL,
                private_der BLOB NOT NULL, created_at INTEGER NOT NULL, retired_at INTEGER);
             CREATE TABLE refresh_families (family_id TEXT PRIMARY KEY, user_id TEXT NOT NULL,
                created_at INTEGER NOT NULL, revoked_at INTEGER);
             CREATE TABLE refresh_tokens (token_hash TEXT PRIMARY KEY, family_id TEXT NOT NULL,
                created_at INTEGER NOT NULL, expires_at INTEGER NOT NULL, used_at INTEGER,
                rotation_nonce TEXT);
             CREATE TABLE revoked_tokens (seq INTEGER PRIMARY KEY AUTOINCREMENT,
                token_id TEXT NOT NULL UNIQUE, expires_at INTEGER NOT NULL,
                revoked_at INTEGER NOT NULL);
             CREATE TABLE login_failures (key TEXT PRIMARY KEY, failures INTEGER NOT NULL,
                last_ms INTEGER NOT NULL);
             CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO users VALUES ('u1', 'alice', 'Alice', '$argon2id$x', '[\"admin\"]', 7);",
        )
        .unwrap();
    }
    assert!(SqliteStore::open_existing(&path).unwrap().is_some());
    let s = SqliteStore::open(&path).unwrap();
    let alice = s.user_by_id("u1").await.unwrap().unwrap();
    assert_eq!(
        (alice.username.as_str(), alice.roles.clone()),
        ("Alice", vec!["admin".to_string()])
    );
    assert!(alice.email.is_none() && !alice.blocked && alice.app_metadata.is_empty());
    s.update_user(
        "u1",
        jotgate_store::UserPatch {
            email: Some(Some("alice@example.com".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(s.roles().await.unwrap().is_empty());
    drop(s);
    // Opened again: nothing to add, nothing lost.
    let s = SqliteStore::open(&path).unwrap();
    assert!(
        s.user_by_email("alice@example.com")
            .await
            .unwrap()
            .is_some()
    );
}

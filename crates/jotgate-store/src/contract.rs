//! The contract every [`Store`] backend passes: one function per behaviour,
//! and [`store_contract_tests!`](crate::store_contract_tests) to run them all against a
//! backend factory (`async fn() -> Arc<dyn Store>` returning a fresh, empty store).
//!
//! These are test helpers: they panic on the first broken promise. By trait:
//!
//! - [`Store`]: [`store_id`], [`two_handles_agree`];
//! - [`Users`](crate::Users): [`users`], [`user_roles`], [`concurrent_role_changes`],
//!   [`user_profile`], [`concurrent_email_claims`];
//! - [`Roles`](crate::Roles): [`roles`];
//! - [`Clients`](crate::Clients): [`clients`];
//! - [`Audit`](crate::Audit): [`audit`];
//! - [`Keys`](crate::Keys): [`keys`], [`key_slots`];
//! - [`Sessions`](crate::Sessions): [`refresh_rotation`], [`refresh_reuse_revokes_family`],
//!   [`refresh_expiry_and_logout`], [`revoke_user_sessions`], [`evict_sessions`],
//!   [`concurrent_rotation_has_one_winner`];
//! - [`Revocations`](crate::Revocations): [`revocations`], [`concurrent_revocations`];
//! - [`Throttle`](crate::Throttle): [`login_failures`], [`login_failure_groups`].

use std::sync::Arc;

use crate::{
    NewRefresh, NewUser, Role, Rotate, RotateOutcome, Store, StoreError, StoredKey, UserPatch,
};

/// Generate one `#[tokio::test]` per contract item for the given store factory.
#[macro_export]
macro_rules! store_contract_tests {
    // A factory returning `Option<Arc<dyn Store>>`: `None` (a backend server the caller
    // was told to skip) makes every test return at once.
    (optional $factory:path) => {
        $crate::store_contract_tests!(@each_optional $factory;
            users, keys, refresh_rotation, refresh_reuse_revokes_family,
            refresh_expiry_and_logout, revoke_user_sessions, concurrent_rotation_has_one_winner,
            revocations, concurrent_revocations, login_failures, store_id, key_slots,
            evict_sessions, roles, user_roles, concurrent_role_changes, user_profile,
            concurrent_email_claims, clients, audit, login_failure_groups);
    };
    (@each_optional $factory:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                if let Some(store) = $factory().await {
                    $crate::contract::$name(store).await;
                }
            }
        )*
    };
    ($factory:path) => {
        $crate::store_contract_tests!(@each $factory;
            users, keys, refresh_rotation, refresh_reuse_revokes_family,
            refresh_expiry_and_logout, revoke_user_sessions, concurrent_rotation_has_one_winner,
            revocations, concurrent_revocations, login_failures, store_id, key_slots,
            evict_sessions, roles, user_roles, concurrent_role_changes, user_profile,
            concurrent_email_claims, clients, audit, login_failure_groups);
    };
    (@each $factory:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                $crate::contract::$name($factory().await).await;
            }
        )*
    };
}

/// A URL for a fresh, empty PostgreSQL database on the test server named by
/// `JOTGATE_TEST_POSTGRES` (an admin URL; `scripts/test.sh` starts one), or `None` when
/// `JOTGATE_SKIP_POSTGRES=1`. Panics with instructions when neither is set.
#[cfg(feature = "postgres")]
pub async fn postgres_test_database() -> Option<String> {
    if std::env::var("JOTGATE_SKIP_POSTGRES").as_deref() == Ok("1") {
        return None;
    }
    let admin = std::env::var("JOTGATE_TEST_POSTGRES").expect(
        "JOTGATE_TEST_POSTGRES is not set: run scripts/test.sh (it starts PostgreSQL), \
         or set JOTGATE_SKIP_POSTGRES=1",
    );
    let (client, conn) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(conn);
    let name = format!("jt_{}", uuid::Uuid::new_v4().simple());
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
    Some(format!("{base}/{name}"))
}

/// A `dynamodb://` URL for a fresh table (created on first use) on the DynamoDB-compatible
/// server named by `JOTGATE_TEST_DYNAMODB` (its endpoint; `scripts/test.sh` starts moto),
/// or `None` when `JOTGATE_SKIP_DYNAMODB=1`. Panics with instructions when neither is set.
/// The client reads credentials from the environment; `scripts/test.sh` sets dummy ones.
#[cfg(feature = "dynamodb")]
pub fn dynamodb_test_table() -> Option<String> {
    if std::env::var("JOTGATE_SKIP_DYNAMODB").as_deref() == Ok("1") {
        return None;
    }
    let endpoint = std::env::var("JOTGATE_TEST_DYNAMODB").expect(
        "JOTGATE_TEST_DYNAMODB is not set: run scripts/test.sh (it starts a DynamoDB \
         emulator), or set JOTGATE_SKIP_DYNAMODB=1",
    );
    assert!(
        std::env::var_os("AWS_ACCESS_KEY_ID").is_some(),
        "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any value: an emulator takes any)"
    );
    let table = format!("jt-{}", uuid::Uuid::new_v4().simple());
    // moto serialises every operation: under the suite's load a write can take longer than
    // half of the default one-second settle time, so the tests give the feed three.
    Some(format!(
        "dynamodb://{table}?region=us-east-1&endpoint={endpoint}&create_table=true&feed_settle_ms=3000"
    ))
}

/// Two handles on one database (two connections, pools or processes) — not part of the
/// per-backend macro because it needs two handles: users written by one are read by the
/// other, 12 concurrent rotations of one token split across both rotate exactly once, and
/// revocations written alternately appear in either's feed in order.
pub async fn two_handles_agree(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    assert_eq!(
        a.store_id(true).await.unwrap(),
        b.store_id(false).await.unwrap()
    );
    a.create_user(new_user("u1", "alice")).await.unwrap();
    assert_eq!(
        b.user_by_key("alice").await.unwrap().unwrap().user.roles,
        ["admin"]
    );
    a.insert_refresh(NewRefresh {
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
            s.rotate_refresh(rotate("h0", &format!("n{i}"), &format!("next-{i}"), 10))
                .await
                .unwrap()
        }));
    }
    let mut rotated = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), RotateOutcome::Rotated { .. }) {
            rotated += 1;
        }
    }
    assert_eq!(rotated, 1, "exactly one rotation across both handles");
    for i in 0..20 {
        let s = if i % 2 == 0 { &a } else { &b };
        s.revoke_token(&format!("jti:{i}"), 100, 5).await.unwrap();
    }
    tokio::time::sleep(b.feed_settle()).await;
    let feed = b.revocations_since(0, 5, usize::MAX).await.unwrap();
    assert_eq!(feed.len(), 20);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
}

/// One id per store, whoever asks first: none until asked for with `create`, then eight
/// concurrent first calls agree, and it stays.
pub async fn store_id(s: Arc<dyn Store>) {
    // A shared secret: made once, the same for every caller, one per name.
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.shared_secret("device_tokens").await.unwrap()
        }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap());
    }
    seen.dedup();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert!(seen[0].len() >= 43, "256 bits");
    assert_ne!(s.shared_secret("other").await.unwrap(), seen[0]);
    assert_eq!(s.shared_secret("device_tokens").await.unwrap(), seen[0]);

    assert_eq!(s.store_id(false).await.unwrap(), None);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.store_id(true).await.unwrap() }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap());
    }
    assert!(!ids[0].is_empty());
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    assert_eq!(s.store_id(false).await.unwrap().as_deref(), Some(&*ids[0]));
    assert_eq!(s.store_id(true).await.unwrap().as_deref(), Some(&*ids[0]));
}

/// Of instances racing to store the first key, exactly one does; a slot is taken once.
pub async fn key_slots(s: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.insert_key_once("first", key(&format!("race-{i}"), 10))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        won += usize::from(t.await.unwrap());
    }
    assert_eq!(won, 1, "exactly one instance stores the first key");
    let keys = s.keys().await.unwrap();
    assert_eq!(keys.len(), 1);
    let first = keys[0].kid.clone();
    let after = format!("after:{first}");
    assert!(s.insert_key_once(&after, key("next", 20)).await.unwrap());
    assert!(!s.insert_key_once(&after, key("again", 30)).await.unwrap());
    assert!(!s.insert_key_once("first", key("late", 40)).await.unwrap());
    assert_eq!(s.keys().await.unwrap().len(), 2);
    // Deleted, material and all; deleting it again is fine.
    s.delete_key(&first).await.unwrap();
    s.delete_key(&first).await.unwrap();
    let left: Vec<String> = s
        .keys()
        .await
        .unwrap()
        .iter()
        .map(|k| k.kid.clone())
        .collect();
    assert_eq!(left, ["next"]);
}

/// The oldest live sessions beyond the newest `keep` end; ended ones do not count.
pub async fn evict_sessions(s: Arc<dyn Store>) {
    s.create_user(new_user("ev", "ev")).await.unwrap();
    for i in 1..=5 {
        s.insert_refresh(NewRefresh {
            token_hash: format!("ev-h{i}"),
            family_id: format!("ev-f{i}"),
            user_id: "ev".into(),
            created_at: 100 + i,
            expires_at: 10_000,
        })
        .await
        .unwrap();
    }
    s.revoke_family("ev-f5", 200).await.unwrap();
    assert!(s.evict_sessions("ev", 4, 200).await.unwrap().is_empty());
    let mut evicted = s.evict_sessions("ev", 2, 200).await.unwrap();
    evicted.sort();
    assert_eq!(evicted, ["ev-f1", "ev-f2"]);
    assert!(s.evict_sessions("ev", 2, 200).await.unwrap().is_empty());
    // The evicted sessions' refresh tokens are dead; the kept ones rotate.
    assert!(matches!(
        s.rotate_refresh(rotate("ev-h1", "n", "ev-n1", 201))
            .await
            .unwrap(),
        RotateOutcome::Invalid | RotateOutcome::Reused { .. }
    ));
    assert!(matches!(
        s.rotate_refresh(rotate("ev-h4", "n", "ev-n4", 201))
            .await
            .unwrap(),
        RotateOutcome::Rotated { .. }
    ));
}

fn new_user(id: &str, key: &str) -> NewUser {
    NewUser {
        id: id.into(),
        username_key: key.into(),
        username_display: key.to_uppercase(),
        password_hash: "$argon2id$v=19$m=1024,t=1,p=1$c2FsdHNhbHQ$aGFzaA".into(),
        roles: vec!["admin".into()],
        created_at: 100,
        email: None,
    }
}

pub async fn users(s: Arc<dyn Store>) {
    let u = s.create_user(new_user("u1", "alice")).await.unwrap();
    assert_eq!(u.username, "ALICE");
    assert_eq!(u.roles, vec!["admin".to_string()]);
    let dup = s.create_user(new_user("u2", "alice")).await;
    assert!(
        matches!(dup, Err(StoreError::Conflict(_))),
        "duplicate username must conflict: {dup:?}"
    );
    // The failed insert left nothing behind.
    assert!(s.user_by_id("u2").await.unwrap().is_none());
    let rec = s.user_by_key("alice").await.unwrap().expect("alice exists");
    assert_eq!(rec.user, u);
    assert!(rec.password_hash.starts_with("$argon2id$"));
    assert!(s.user_by_key("bob").await.unwrap().is_none());
    assert_eq!(s.user_by_id("u1").await.unwrap(), Some(u.clone()));
    s.create_user(new_user("u3", "bob")).await.unwrap();
    let all = s.list_users().await.unwrap();
    assert_eq!(all.len(), 2);
    s.set_password_hash("u1", "$argon2id$new").await.unwrap();
    assert_eq!(
        s.user_by_key("alice").await.unwrap().unwrap().password_hash,
        "$argon2id$new"
    );
    assert!(matches!(
        s.set_password_hash("nobody", "x").await,
        Err(StoreError::NotFound(_))
    ));
}

fn key(kid: &str, created_at: i64) -> StoredKey {
    StoredKey {
        kid: kid.into(),
        alg: "RS256".into(),
        private_der: vec![1, 2, 3],
        created_at,
        retired_at: None,
    }
}

pub async fn keys(s: Arc<dyn Store>) {
    assert!(s.keys().await.unwrap().is_empty());
    s.insert_key(key("k1", 10)).await.unwrap();
    s.insert_key(key("k2", 20)).await.unwrap();
    assert!(matches!(
        s.insert_key(key("k1", 30)).await,
        Err(StoreError::Conflict(_))
    ));
    s.insert_key(key("k0", 5)).await.unwrap();
    s.retire_key("k1", 25).await.unwrap();
    // Retiring twice keeps the first instant; an earlier one (a revocation) wins.
    s.retire_key("k1", 26).await.unwrap();
    s.retire_key("k0", 40).await.unwrap();
    s.retire_key("k0", 0).await.unwrap();
    let ks = s.keys().await.unwrap();
    let kids: Vec<&str> = ks.iter().map(|k| k.kid.as_str()).collect();
    assert_eq!(kids, ["k0", "k1", "k2"], "ordered by activation time");
    assert_eq!(ks[1].retired_at, Some(25));
    assert_eq!(ks[2].retired_at, None);
    assert_eq!(ks[2].private_der, vec![1, 2, 3]);
    assert_eq!(ks[0].retired_at, Some(0));
    let missing = s.retire_key("nope", 30).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    // Material is replaced only from what it was (compare and swap).
    s.replace_key_material("k2", &[1, 2, 3], vec![9, 9])
        .await
        .unwrap();
    assert!(matches!(
        s.replace_key_material("k2", &[1, 2, 3], vec![7]).await,
        Err(StoreError::Conflict(_))
    ));
    let k2 = s
        .keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.kid == "k2")
        .unwrap();
    assert_eq!(k2.private_der, vec![9, 9]);
}

async fn family(s: &Arc<dyn Store>, hash: &str, fam: &str, now: i64) {
    s.create_user(new_user(&format!("user-{fam}"), &format!("user-{fam}")))
        .await
        .unwrap();
    s.insert_refresh(NewRefresh {
        token_hash: hash.into(),
        family_id: fam.into(),
        user_id: format!("user-{fam}"),
        created_at: now,
        expires_at: now + 1000,
    })
    .await
    .unwrap();
}

fn rotate(presented: &str, nonce: &str, successor: &str, now: i64) -> Rotate {
    Rotate {
        presented_hash: presented.into(),
        nonce: nonce.into(),
        successor_hash: successor.into(),
        successor_expires_at: now + 1000,
        now,
        grace_secs: 10,
    }
}

pub async fn refresh_rotation(s: Arc<dyn Store>) {
    family(&s, "h0", "f1", 100).await;
    let r = s
        .rotate_refresh(rotate("h0", "n1", "h1", 110))
        .await
        .unwrap();
    assert_eq!(
        r,
        RotateOutcome::Rotated {
            user_id: "user-f1".into(),
            family_id: "f1".into()
        }
    );
    // Spent or fresh, both tokens name their session.
    for h in ["h0", "h1"] {
        let f = s.family_of(h).await.unwrap().unwrap();
        assert_eq!(
            (f.family_id.as_str(), f.user_id.as_str()),
            ("f1", "user-f1")
        );
    }
    // A repeat inside the grace window learns the first rotation's nonce and creates nothing.
    let again = s
        .rotate_refresh(rotate("h0", "n2", "h2", 115))
        .await
        .unwrap();
    assert_eq!(
        again,
        RotateOutcome::Repeat {
            user_id: "user-f1".into(),
            family_id: "f1".into(),
            nonce: "n1".into()
        }
    );
    assert_eq!(
        s.rotate_refresh(rotate("h2", "n", "h3", 115))
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    // The successor works.
    assert!(matches!(
        s.rotate_refresh(rotate("h1", "n3", "h4", 116))
            .await
            .unwrap(),
        RotateOutcome::Rotated { .. }
    ));
    assert_eq!(
        s.rotate_refresh(rotate("nope", "n", "x", 116))
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
}

pub async fn refresh_reuse_revokes_family(s: Arc<dyn Store>) {
    family(&s, "h0", "f1", 100).await;
    s.rotate_refresh(rotate("h0", "n1", "h1", 110))
        .await
        .unwrap();
    // After the grace window, presenting the spent token revokes the family…
    let r = s
        .rotate_refresh(rotate("h0", "n2", "h2", 121))
        .await
        .unwrap();
    assert_eq!(
        r,
        RotateOutcome::Reused {
            family_id: "f1".into()
        }
    );
    // …so the legitimate successor is dead too.
    assert_eq!(
        s.rotate_refresh(rotate("h1", "n3", "h3", 122))
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
}

pub async fn refresh_expiry_and_logout(s: Arc<dyn Store>) {
    family(&s, "h0", "f1", 100).await;
    assert_eq!(
        s.family_of("h0")
            .await
            .unwrap()
            .map(|f| f.family_id)
            .as_deref(),
        Some("f1")
    );
    assert_eq!(s.family_of("nope").await.unwrap(), None);
    assert_eq!(
        s.rotate_refresh(rotate("h0", "n", "h1", 1100))
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    family(&s, "g0", "f2", 100).await;
    s.revoke_family("f2", 150).await.unwrap();
    s.revoke_family("f2", 151).await.unwrap();
    assert_eq!(
        s.rotate_refresh(rotate("g0", "n", "g1", 160))
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
}

pub async fn revoke_user_sessions(s: Arc<dyn Store>) {
    family(&s, "a0", "fa", 100).await;
    s.insert_refresh(NewRefresh {
        token_hash: "b0".into(),
        family_id: "fb".into(),
        user_id: "user-fa".into(),
        created_at: 100,
        expires_at: 1100,
    })
    .await
    .unwrap();
    family(&s, "c0", "fc", 100).await;
    s.revoke_family("fb", 105).await.unwrap();
    // Only the user's live sessions are revoked, and named.
    assert_eq!(
        s.revoke_user_sessions("user-fa", 110).await.unwrap(),
        ["fa"]
    );
    assert!(
        s.revoke_user_sessions("user-fa", 111)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        s.revoke_user_sessions("nobody", 111)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.rotate_refresh(rotate("a0", "n", "a1", 120))
            .await
            .unwrap(),
        RotateOutcome::Invalid
    );
    // Another user's session is untouched.
    assert!(matches!(
        s.rotate_refresh(rotate("c0", "n", "c1", 120))
            .await
            .unwrap(),
        RotateOutcome::Rotated { .. }
    ));
}

pub async fn concurrent_rotation_has_one_winner(s: Arc<dyn Store>) {
    family(&s, "h0", "f1", 100).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.rotate_refresh(rotate("h0", &format!("n{i}"), &format!("h{i}-next"), 110))
                .await
        }));
    }
    let mut rotated = Vec::new();
    let mut nonces = Vec::new();
    for t in tasks {
        match t.await.unwrap().unwrap() {
            RotateOutcome::Rotated { .. } => rotated.push(()),
            RotateOutcome::Repeat { nonce, .. } => nonces.push(nonce),
            other => panic!("unexpected outcome under concurrency: {other:?}"),
        }
    }
    assert_eq!(rotated.len(), 1, "exactly one rotation");
    assert_eq!(nonces.len(), 15);
    nonces.dedup();
    assert_eq!(nonces.len(), 1, "every repeat sees the winner's nonce");
}

pub async fn revocations(s: Arc<dyn Store>) {
    assert!(
        s.revocations_since(0, 100, usize::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    s.revoke_token("jti:j1", 200, 100).await.unwrap();
    s.revoke_token("jti:j1", 200, 101).await.unwrap();
    s.revoke_token("jti:j2", 150, 102).await.unwrap();
    tokio::time::sleep(s.feed_settle()).await;
    let all = s.revocations_since(0, 100, usize::MAX).await.unwrap();
    assert_eq!(
        all.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["jti:j1", "jti:j2"]
    );
    assert!(all[0].seq < all[1].seq);
    let later = s
        .revocations_since(all[0].seq, 100, usize::MAX)
        .await
        .unwrap();
    assert_eq!(later.len(), 1);
    assert_eq!(later[0].id, "jti:j2");
    // Expired entries are never returned.
    let after = s.revocations_since(0, 160, usize::MAX).await.unwrap();
    assert_eq!(
        after.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["jti:j1"]
    );
}

pub async fn concurrent_revocations(s: Arc<dyn Store>) {
    // Writers racing (one per logout on many instances) each get their own feed position,
    // and a reader sees all of them in order.
    let mut tasks = Vec::new();
    for i in 0..16 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.revoke_token(&format!("jti:c{i}"), 500, 100).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    tokio::time::sleep(s.feed_settle()).await;
    let feed = s.revocations_since(0, 100, usize::MAX).await.unwrap();
    assert_eq!(feed.len(), 16);
    assert!(feed.windows(2).all(|w| w[0].seq < w[1].seq));
    // Paged: pages of 5 from the last position seen give the same entries, in order.
    let mut paged = Vec::new();
    let mut since = 0;
    loop {
        let page = s.revocations_since(since, 100, 5).await.unwrap();
        assert!(page.len() <= 5);
        let Some(last) = page.last() else { break };
        since = last.seq;
        paged.extend(page);
    }
    assert_eq!(paged, feed);
    let mut ids: Vec<&str> = feed.iter().map(|r| r.id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 16);
}

/// A group's counters (`group#member`) are listed together: live ones only, and none of
/// another group whose name starts alike; each is counted, read and cleared as any key.
pub async fn login_failure_groups(s: Arc<dyn Store>) {
    let w = 60_000;
    for (key, at) in [
        ("pair:a#203.0.113.1", 1000),
        ("pair:a#203.0.113.1", 1001),
        ("pair:a#2001:db8::/64", 1002),
        ("pair:a#-", 1003),
        ("pair:ab#203.0.113.1", 1004),
        ("pair:a", 1005),
        ("pair:a#old", -100_000),
    ] {
        s.add_login_failure(key, at, w).await.unwrap();
    }
    let listed = |v: Vec<crate::LoginFailures>| {
        v.into_iter()
            .map(|f| (f.key, f.count, f.last_ms))
            .collect::<Vec<_>>()
    };
    let a = s.login_failures_in("pair:a", 2000, w).await.unwrap();
    assert_eq!(
        listed(a),
        [
            ("pair:a#-".to_string(), 1, 1003),
            ("pair:a#2001:db8::/64".to_string(), 1, 1002),
            ("pair:a#203.0.113.1".to_string(), 2, 1001),
        ]
    );
    // A grouped key reads and clears like any other.
    let one = s
        .login_failures(&["pair:a#203.0.113.1".to_string()], 2000, w)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].count, 2);
    s.clear_login_failures("pair:a#203.0.113.1").await.unwrap();
    let a = s.login_failures_in("pair:a", 2000, w).await.unwrap();
    assert_eq!(a.len(), 2);
    assert!(
        s.login_failures_in("pair:zz", 2000, w)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.login_failures_in("pair:ab", 2000, w).await.unwrap().len(),
        1
    );
    // A group holding the separator is refused.
    assert!(s.login_failures_in("pair:a#b", 2000, w).await.is_err());
    assert!(s.login_failures_in("", 2000, w).await.is_err());
    // Clearing a group takes every member, stale ones too, and nothing else.
    assert_eq!(s.clear_login_failures_in("pair:a").await.unwrap(), 3);
    assert!(
        s.login_failures_in("pair:a", 2000, w)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        s.login_failures_in("pair:ab", 2000, w).await.unwrap().len(),
        1
    );
    let plain = s
        .login_failures(&["pair:a".to_string()], 2000, w)
        .await
        .unwrap();
    assert_eq!(plain.len(), 1, "a key without a member is no group's");
    assert_eq!(s.clear_login_failures_in("pair:zz").await.unwrap(), 0);
    assert!(s.clear_login_failures_in("pair:a#b").await.is_err());
}

pub async fn login_failures(s: Arc<dyn Store>) {
    let keys = ["user:a".to_string(), "ip:1".to_string()];
    assert!(s.login_failures(&keys, 1000, 100).await.unwrap().is_empty());
    assert_eq!(
        s.add_login_failure("user:a", 1000, 100)
            .await
            .unwrap()
            .count,
        1
    );
    let f = s.add_login_failure("user:a", 1050, 100).await.unwrap();
    assert_eq!((f.count, f.last_ms), (2, 1050));
    s.add_login_failure("ip:1", 1060, 100).await.unwrap();
    let mut live = s.login_failures(&keys, 1100, 100).await.unwrap();
    live.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        live.iter()
            .map(|f| (f.key.as_str(), f.count))
            .collect::<Vec<_>>(),
        [("ip:1", 1), ("user:a", 2)]
    );
    // 100 ms after the last failure the counter is stale: gone from reads, restarts at 1.
    assert_eq!(
        s.login_failures(&keys, 1150, 100).await.unwrap().len(),
        1,
        "only ip:1 (last failure at 1060) is live at 1150"
    );
    assert_eq!(
        s.add_login_failure("user:a", 1150, 100)
            .await
            .unwrap()
            .count,
        1
    );
    s.clear_login_failures("user:a").await.unwrap();
    s.clear_login_failures("never-seen").await.unwrap();
    assert_eq!(
        s.login_failures(&keys, 1150, 100)
            .await
            .unwrap()
            .iter()
            .map(|f| f.key.as_str())
            .collect::<Vec<_>>(),
        ["ip:1"]
    );
    // Keys counted over different windows: an hour's counter outlives a write to a key
    // counted over a minute.
    let hour = 3_600_000;
    s.add_login_failure("ceil:h", 10_000, hour).await.unwrap();
    s.add_login_failure("pair:m", 10_000 + 120_000, 60_000)
        .await
        .unwrap();
    let h = s
        .login_failures(&["ceil:h".to_string()], 10_000 + 120_000, hour)
        .await
        .unwrap();
    assert_eq!(
        h.len(),
        1,
        "the hour's counter is still live after two minutes"
    );
    assert_eq!(
        s.add_login_failure("ceil:h", 10_000 + 180_000, hour)
            .await
            .unwrap()
            .count,
        2
    );
    // Concurrent failures (many instances) each count once.
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.add_login_failure("user:z", 5000, 60_000).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let z = s
        .login_failures(&["user:z".to_string()], 5000, 60_000)
        .await
        .unwrap();
    assert_eq!(z[0].count, 20);
    // Releases take back one count each, concurrently too, and never go below zero.
    let mut tasks = Vec::new();
    for _ in 0..15 {
        let s = Arc::clone(&s);
        tasks.push(tokio::spawn(async move {
            s.release_login_failure("user:z").await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let z = s
        .login_failures(&["user:z".to_string()], 5000, 60_000)
        .await
        .unwrap();
    assert_eq!(z[0].count, 5);
    for _ in 0..7 {
        s.release_login_failure("user:z").await.unwrap();
    }
    s.release_login_failure("never-seen").await.unwrap();
    let z = s
        .login_failures(&["user:z".to_string()], 5000, 60_000)
        .await
        .unwrap();
    assert!(
        z.iter().all(|f| f.count == 0),
        "{:?}",
        z.first().map(|f| f.count)
    );
}

fn role(name: &str, scopes: &[&str], at: i64) -> Role {
    Role {
        name: name.into(),
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
        updated_at: at,
    }
}

/// Roles are created, replaced (the old definition returned), listed by name and deleted
/// (the deleted definition returned, `None` the second time).
pub async fn roles(s: Arc<dyn Store>) {
    assert!(s.roles().await.unwrap().is_empty());
    assert_eq!(
        s.put_role(role("paid", &["api:read", "reports:read"], 10))
            .await
            .unwrap(),
        None
    );
    s.put_role(role("admin", &["read:users"], 11))
        .await
        .unwrap();
    let before = s.put_role(role("paid", &["api:read"], 12)).await.unwrap();
    assert_eq!(
        before,
        Some(role("paid", &["api:read", "reports:read"], 10))
    );
    assert_eq!(
        s.roles().await.unwrap(),
        vec![
            role("admin", &["read:users"], 11),
            role("paid", &["api:read"], 12)
        ]
    );
    // A role with no scopes is a role.
    s.put_role(role("free", &[], 13)).await.unwrap();
    assert_eq!(s.roles().await.unwrap().len(), 3);
    assert_eq!(
        s.delete_role("paid").await.unwrap(),
        Some(role("paid", &["api:read"], 12))
    );
    assert_eq!(s.delete_role("paid").await.unwrap(), None);
    assert_eq!(
        s.roles().await.unwrap(),
        vec![role("admin", &["read:users"], 11), role("free", &[], 13)]
    );
}

/// A user's roles are replaced, the old ones returned, on every copy the store keeps (by
/// id and by login name); an unknown user is `NotFound`.
pub async fn user_roles(s: Arc<dyn Store>) {
    s.create_user(new_user("u1", "alice")).await.unwrap();
    let before = s
        .set_user_roles("u1", vec!["paid".into(), "support".into()])
        .await
        .unwrap();
    assert_eq!(before, vec!["admin".to_string()]);
    let want = vec!["paid".to_string(), "support".to_string()];
    assert_eq!(s.user_by_id("u1").await.unwrap().unwrap().roles, want);
    assert_eq!(
        s.user_by_key("alice").await.unwrap().unwrap().user.roles,
        want
    );
    assert_eq!(s.set_user_roles("u1", vec![]).await.unwrap(), want);
    assert!(s.user_by_id("u1").await.unwrap().unwrap().roles.is_empty());
    assert!(matches!(
        s.set_user_roles("nobody", vec!["paid".into()]).await,
        Err(StoreError::NotFound(_))
    ));
}

/// Role changes at once: each reports the roles it replaced, so the changes form one
/// sequence (every value replaced exactly once) and none is lost.
pub async fn concurrent_role_changes(s: Arc<dyn Store>) {
    s.create_user(new_user("u1", "alice")).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mine = vec![format!("r{i}")];
            (mine.clone(), s.set_user_roles("u1", mine).await.unwrap())
        }));
    }
    let mut replaced = Vec::new();
    let mut written = Vec::new();
    for t in tasks {
        let (mine, before) = t.await.unwrap();
        written.push(mine);
        replaced.push(before);
    }
    let last = s.user_by_id("u1").await.unwrap().unwrap().roles;
    // Every value written was replaced by another write, except the last one standing;
    // the original value was replaced exactly once.
    let mut chain = replaced.clone();
    chain.push(last.clone());
    chain.sort();
    let mut all = written.clone();
    all.push(vec!["admin".to_string()]);
    all.sort();
    assert_eq!(chain, all, "replaced {replaced:?}, last {last:?}");
}

fn with_email(id: &str, key: &str, email: &str) -> NewUser {
    NewUser {
        email: Some(email.into()),
        ..new_user(id, key)
    }
}

/// Email addresses: unique, never another account's username, found by address, freed by a
/// change or a deletion; a new address is unverified. Blocking, app_metadata and the last
/// login are kept on every copy the store reads.
pub async fn user_profile(s: Arc<dyn Store>) {
    let a = s
        .create_user(with_email("u1", "alice", "alice@example.com"))
        .await
        .unwrap();
    assert_eq!(a.email.as_deref(), Some("alice@example.com"));
    assert!(!a.email_verified && !a.blocked && a.last_login.is_none());
    // Device tokens: none refused at first; a revocation holds by name and by address,
    // and never moves back.
    let by_name = |s: Arc<dyn Store>| async move {
        s.user_by_key("alice")
            .await
            .unwrap()
            .unwrap()
            .devices_not_before
    };
    assert_eq!(by_name(Arc::clone(&s)).await, 0);
    s.revoke_devices("u1", 500).await.unwrap();
    s.revoke_devices("u1", 400).await.unwrap();
    s.revoke_devices("no-such-user", 400).await.unwrap();
    assert_eq!(by_name(Arc::clone(&s)).await, 500);
    let by_email = s.user_by_email("alice@example.com").await.unwrap().unwrap();
    assert_eq!(by_email.devices_not_before, 500);
    let dup = s
        .create_user(with_email("u2", "bob", "alice@example.com"))
        .await;
    assert!(matches!(dup, Err(StoreError::Conflict("email"))), "{dup:?}");
    assert!(
        s.user_by_id("u2").await.unwrap().is_none(),
        "nothing written"
    );
    assert!(
        s.user_by_key("bob").await.unwrap().is_none(),
        "nothing written"
    );
    // A username from before addresses, holding '@': no account may take it as address.
    s.create_user(new_user("u3", "carol@example.com"))
        .await
        .unwrap();
    let clash = s
        .create_user(with_email("u4", "dave", "carol@example.com"))
        .await;
    assert!(
        matches!(clash, Err(StoreError::Conflict("email"))),
        "{clash:?}"
    );
    let rec = s.user_by_email("alice@example.com").await.unwrap().unwrap();
    assert_eq!(rec.user, a);
    assert!(
        s.user_by_email("nobody@example.com")
            .await
            .unwrap()
            .is_none()
    );

    // Verified, blocked and metadata set; then a new address is unverified again.
    let meta: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"plan":"pro","seats":3}"#).unwrap();
    let (before, after) = s
        .update_user(
            "u1",
            UserPatch {
                email_verified: Some(true),
                blocked: Some(true),
                app_metadata: Some(meta.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(before, a);
    assert!(after.email_verified && after.blocked && after.app_metadata == meta);
    for u in [
        s.user_by_id("u1").await.unwrap().unwrap(),
        s.user_by_key("alice").await.unwrap().unwrap().user,
        s.user_by_email("alice@example.com")
            .await
            .unwrap()
            .unwrap()
            .user,
    ] {
        assert_eq!(u, after, "every copy");
    }
    let listed = s.list_users().await.unwrap();
    assert_eq!(
        listed.iter().find(|u| u.id == "u1"),
        Some(&after),
        "the list too"
    );
    let (_, moved) = s
        .update_user(
            "u1",
            UserPatch {
                email: Some(Some("alice@new.example".into())),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(!moved.email_verified, "a new address is unverified");
    assert!(
        s.user_by_email("alice@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(
        s.user_by_key("alice")
            .await
            .unwrap()
            .unwrap()
            .user
            .email
            .as_deref(),
        Some("alice@new.example")
    );
    // The old address is free for another account; taking someone's is a conflict that
    // changes nothing.
    s.create_user(with_email("u5", "erin", "alice@example.com"))
        .await
        .unwrap();
    let taken = s
        .update_user(
            "u5",
            UserPatch {
                email: Some(Some("alice@new.example".into())),
                blocked: Some(true),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(taken, Err(StoreError::Conflict("email"))),
        "{taken:?}"
    );
    let erin = s.user_by_id("u5").await.unwrap().unwrap();
    assert_eq!(erin.email.as_deref(), Some("alice@example.com"));
    assert!(!erin.blocked, "a refused change changes nothing");
    let legacy = s
        .update_user(
            "u5",
            UserPatch {
                email: Some(Some("carol@example.com".into())),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(legacy, Err(StoreError::Conflict("email"))),
        "{legacy:?}"
    );
    // Removing the address.
    let (_, none) = s
        .update_user(
            "u5",
            UserPatch {
                email: Some(None),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(none.email.is_none() && !none.email_verified);
    assert!(
        s.user_by_email("alice@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        s.update_user("nobody", UserPatch::default()).await,
        Err(StoreError::NotFound(_))
    ));

    s.record_login("u1", 12345).await.unwrap();
    assert_eq!(
        s.user_by_id("u1").await.unwrap().unwrap().last_login,
        Some(12345)
    );
    s.record_login("nobody", 1).await.unwrap();
    assert!(
        s.user_by_id("nobody").await.unwrap().is_none(),
        "not recreated"
    );

    // Deletion: gone by id, name and address; the name and address are free again.
    let gone = s.delete_user("u1").await.unwrap().unwrap();
    assert_eq!(gone.id, "u1");
    assert!(s.user_by_id("u1").await.unwrap().is_none());
    assert!(s.user_by_key("alice").await.unwrap().is_none());
    assert!(
        s.user_by_email("alice@new.example")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(s.delete_user("u1").await.unwrap(), None);
    s.create_user(with_email("u6", "alice", "alice@new.example"))
        .await
        .unwrap();
}

/// Two accounts claiming one address at once: exactly one gets it.
pub async fn concurrent_email_claims(s: Arc<dyn Store>) {
    for (id, key) in [
        ("u1", "alice"),
        ("u2", "bob"),
        ("u3", "carol"),
        ("u4", "dave"),
    ] {
        s.create_user(new_user(id, key)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for id in ["u1", "u2", "u3", "u4"] {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.update_user(
                id,
                UserPatch {
                    email: Some(Some("shared@example.com".into())),
                    ..Default::default()
                },
            )
            .await
        }));
    }
    let mut won = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => won += 1,
            Err(StoreError::Conflict("email")) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won, 1);
    let owner = s
        .user_by_email("shared@example.com")
        .await
        .unwrap()
        .unwrap();
    let holders = s
        .list_users()
        .await
        .unwrap()
        .into_iter()
        .filter(|u| u.email.as_deref() == Some("shared@example.com"))
        .count();
    let _ = owner;
    // The users index may lag on DynamoDB: at most one, never two.
    assert!(holders <= 1);
}

/// Machine clients: created once per id, read, listed by id, a new secret, deleted.
pub async fn clients(s: Arc<dyn Store>) {
    let c = crate::ClientRecord {
        id: "cl_b".into(),
        name: "purchases".into(),
        secret_hash: "h1".into(),
        scopes: vec!["read:users".into(), "update:users".into()],
        audiences: vec![
            "https://id.example/api/v1/".into(),
            "https://api.example".into(),
        ],
        created_at: 10,
        secret_set_at: 10,
    };
    s.create_client(c.clone()).await.unwrap();
    assert!(matches!(
        s.create_client(c.clone()).await,
        Err(StoreError::Conflict("client"))
    ));
    s.create_client(crate::ClientRecord {
        id: "cl_a".into(),
        scopes: vec![],
        audiences: vec![],
        ..c.clone()
    })
    .await
    .unwrap();
    assert_eq!(s.client("cl_b").await.unwrap(), Some(c.clone()));
    assert_eq!(s.client("cl_x").await.unwrap(), None);
    let ids: Vec<String> = s
        .clients()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["cl_a", "cl_b"]);
    s.set_client_secret("cl_b", "h2", 20).await.unwrap();
    let got = s.client("cl_b").await.unwrap().unwrap();
    assert_eq!((got.secret_hash.as_str(), got.secret_set_at), ("h2", 20));
    assert!(matches!(
        s.set_client_secret("cl_x", "h", 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        s.delete_client("cl_b").await.unwrap().map(|c| c.id),
        Some("cl_b".into())
    );
    assert_eq!(s.delete_client("cl_b").await.unwrap(), None);
    assert_eq!(s.clients().await.unwrap().len(), 1);
}

/// The audit log: read newest first, filtered by type and user, paged by time, pruned by
/// age (DynamoDB: read past its time to keep, never).
pub async fn audit(s: Arc<dyn Store>) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let now = now_ms / 1000;
    let ev = |dt: i64, kind: &str, user: &str| crate::AuditEvent {
        at_ms: now_ms - dt,
        kind: kind.into(),
        user: Some(user.into()),
        actor: None,
        ip: Some("127.0.0.1".into()),
        detail: serde_json::from_str(r#"{"k":"v"}"#).unwrap(),
    };
    s.append_audit(ev(3000, "login.failed", "u1"), now + 3600)
        .await
        .unwrap();
    s.append_audit(ev(2000, "login.succeeded", "u1"), now + 3600)
        .await
        .unwrap();
    s.append_audit(ev(1000, "login.succeeded", "u2"), now + 3600)
        .await
        .unwrap();
    // Past its time to keep.
    s.append_audit(ev(500, "login.failed", "u9"), now - 10)
        .await
        .unwrap();
    let q = |kind: Option<&str>, user: Option<&str>| crate::AuditQuery {
        since_ms: now_ms - 60_000,
        before_ms: None,
        kind: kind.map(str::to_string),
        user: user.map(str::to_string),
        limit: 10,
    };
    s.prune_audit(now).await.unwrap();
    let all = s.audit_events(q(None, None)).await.unwrap();
    let users: Vec<_> = all.iter().map(|e| e.user.clone().unwrap()).collect();
    assert_eq!(
        users,
        ["u2", "u1", "u1"],
        "newest first, the expired one gone"
    );
    assert_eq!(all[0].detail["k"], "v");
    assert_eq!(all[0].ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(
        s.audit_events(q(Some("login.succeeded"), None))
            .await
            .unwrap()
            .len(),
        2
    );
    assert_eq!(s.audit_events(q(None, Some("u1"))).await.unwrap().len(), 2);
    assert_eq!(
        s.audit_events(q(Some("login.failed"), Some("u1")))
            .await
            .unwrap()[0]
            .at_ms,
        now_ms - 3000
    );
    let page = s
        .audit_events(crate::AuditQuery {
            limit: 1,
            ..q(None, None)
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    let next = s
        .audit_events(crate::AuditQuery {
            before_ms: Some(page[0].at_ms),
            limit: 5,
            ..q(None, None)
        })
        .await
        .unwrap();
    assert_eq!(next.len(), 2, "the page after the first");
}

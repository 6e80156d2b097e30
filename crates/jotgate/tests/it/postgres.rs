//! Many jotgate instances on one PostgreSQL database (`JOTGATE_STORE=postgres://…`): two
//! real servers agree on users and keys, a refresh token rotated on one is spent on the
//! other, and a logout on one is refused by the other. `scripts/test.sh` starts
//! PostgreSQL; `JOTGATE_SKIP_POSTGRES=1` skips.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, bearer, error_code, settings, temp_dir};
use crate::edge::eventually;

async fn instance(url: &str) -> TestApp {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(url.to_string().into());
    s.sessions.sync_interval = Some(1);
    s.sessions.refresh_grace = Some(0);
    TestApp::with(s, dir).await
}

#[tokio::test]
async fn two_servers_on_one_database_agree() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let a = instance(&url).await;
    let b = instance(&url).await;
    assert_eq!(
        a.store().await.keys().await.unwrap().len(),
        1,
        "one key, made by the first"
    );

    // Users: signed up on A, logged in on B; tokens of one verify on the other.
    let first = a.signup("alice").await;
    let res = b.login("alice", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let on_b: Value = res.json().await.unwrap();
    let token_a = first["token"].as_str().unwrap();
    assert_eq!(b.private(token_a).await.status(), StatusCode::OK);
    let res = a
        .post(
            "/signup",
            json!({"username": "ALICE", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        error_code(res, StatusCode::CONFLICT).await,
        "username_taken"
    );

    // Refresh: rotated on B; presented again on A in the same second (the grace), A
    // derives the very same successor from B's nonce; a second later it is a reuse.
    let r0 = first["refresh_token"].clone();
    let res = b.post("/refresh", json!({"refresh_token": r0})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let r1 = res.json::<Value>().await.unwrap()["refresh_token"].clone();
    let res = a.post("/refresh", json!({"refresh_token": r0})).await;
    if res.status() == StatusCode::OK {
        assert_eq!(res.json::<Value>().await.unwrap()["refresh_token"], r1);
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let res = a.post("/refresh", json!({"refresh_token": r0})).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );
    // Reuse revoked the whole session, successor included, for both instances.
    let res = b.post("/refresh", json!({"refresh_token": r1})).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );

    // Revocation: logout on A, refused by B within its sync interval.
    let token_b = on_b["token"].as_str().unwrap().to_string();
    assert_eq!(a.private(&token_b).await.status(), StatusCode::OK);
    let res = bearer(Method::POST, a.url("/logout"), &token_b).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    eventually("B refuses the token A revoked", async || {
        b.private(&token_b).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}

#[tokio::test]
async fn a_bad_store_url_fails_start_up_with_one_clear_line() {
    let dir = temp_dir();
    let (ok, _, err) =
        crate::cli::run_env(&dir, &["users", "list"], &[("JOTGATE_STORE", "mysql://x")]);
    assert!(
        !ok && err.contains("invalid setting store (JOTGATE_STORE)"),
        "{err}"
    );
    let (ok, _, err) = crate::cli::run_env(
        &dir,
        &["users", "list"],
        &[(
            "JOTGATE_STORE",
            "postgres://nobody:secret-pw@127.0.0.1:1/none",
        )],
    );
    assert!(!ok && err.contains("PostgreSQL"), "{err}");
    assert!(
        !err.contains("secret-pw"),
        "the password never appears: {err}"
    );
}

/// Concurrent guesses for one name spread over two servers on one database: the count is
/// taken in the database before hashing, so the limit holds across instances.
#[tokio::test]
async fn concurrent_guesses_across_two_servers_are_bounded() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let make = |url: String| async move {
        let dir = temp_dir();
        let mut s = settings(&dir);
        s.store.store = Some(url.into());
        s.login.login_user_failures = Some(5);
        s.login.login_ip_failures = Some(100_000);
        s.login.login_delay = Some(60);
        TestApp::with(s, dir).await
    };
    let a = make(url.clone()).await;
    let b = make(url).await;
    a.signup("kim").await;
    let answers = futures_util::future::join_all((0..200).map(|i| {
        let app = if i % 2 == 0 { &a } else { &b };
        app.login("kim", "wrong password")
    }))
    .await;
    let evaluated = answers
        .iter()
        .filter(|r| r.status() == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        (1..=6).contains(&evaluated),
        "{evaluated} guesses evaluated"
    );
}

/// Is this connection encrypted? (Asked of the server.)
async fn encrypted(url: &str, root: Option<&[u8]>, mode: jotgate_store::pgtls::SslMode) -> bool {
    let mut cfg: tokio_postgres::Config = url.parse().unwrap();
    cfg.ssl_mode(mode.wire());
    let tls = jotgate_store::pgtls::client_config(mode, root).unwrap();
    let (client, conn) = cfg
        .connect(jotgate_store::pgtls::MakeRustls::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// PostgreSQL over TLS (issue 16, item 17): verify-full against the cluster's CA (test.sh
/// makes one), refused with another CA or none, require without checking.
#[tokio::test]
async fn postgres_over_tls() {
    use jotgate_store::pgtls::SslMode;
    use jotgate_store::postgres::PostgresStore;
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    if std::env::var("JOTGATE_SKIP_POSTGRES_TLS").as_deref() == Ok("1") {
        return;
    }
    let ca = std::env::var("JOTGATE_TEST_POSTGRES_CA").expect(
        "JOTGATE_TEST_POSTGRES_CA is not set: scripts/test.sh starts PostgreSQL with TLS and a \
         test CA; with your own server, name its CA, or set JOTGATE_SKIP_POSTGRES_TLS=1",
    );
    let ca_pem = std::fs::read(&ca).unwrap();
    assert!(encrypted(&url, Some(&ca_pem), SslMode::VerifyFull).await);
    assert!(encrypted(&url, None, SslMode::Require).await);

    let with = |q: &str| format!("{url}?{q}");
    let store = PostgresStore::connect(&with(&format!("sslmode=verify-full&sslrootcert={ca}")), 2)
        .await
        .unwrap();
    assert!(
        jotgate_store::Store::describe(&store).contains("sslmode=verify-full"),
        "{}",
        jotgate_store::Store::describe(&store)
    );
    // By host name too (the certificate names localhost and 127.0.0.1).
    let by_name =
        with(&format!("sslmode=verify-full&sslrootcert={ca}")).replace("127.0.0.1", "localhost");
    PostgresStore::connect(&by_name, 1).await.unwrap();
    PostgresStore::connect(&with("sslmode=require"), 1)
        .await
        .unwrap();
    PostgresStore::connect(&with(&format!("sslmode=verify-ca&sslrootcert={ca}")), 1)
        .await
        .unwrap();

    // Another CA, or the web's roots: refused, with a reason.
    let dir = temp_dir();
    let other = dir.join("other-ca.crt");
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
        ])
        .args(["-days", "1", "-subj", "/CN=other"])
        .arg("-keyout")
        .arg(dir.join("other.key"))
        .arg("-out")
        .arg(&other)
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok);
    for q in [
        format!("sslmode=verify-full&sslrootcert={}", other.display()),
        "sslmode=verify-full".to_string(),
    ] {
        let Err(e) = PostgresStore::connect(&with(&q), 1).await else {
            panic!("{q} connected");
        };
        assert!(
            e.to_string().to_lowercase().contains("certificate"),
            "{q}: {e}"
        );
    }
    for (q, want) in [
        ("sslmode=bogus", "sslmode"),
        (
            "sslmode=verify-full&sslrootcert=/nonexistent",
            "sslrootcert",
        ),
    ] {
        let Err(e) = PostgresStore::connect(&with(q), 1).await else {
            panic!("{q} connected");
        };
        assert!(e.to_string().contains(want), "{q}: {e}");
    }
    // The server itself, on that store.
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(with(&format!("sslmode=verify-full&sslrootcert={ca}")).into());
    let app = TestApp::with(s, dir).await;
    app.signup("tls").await;
    assert_eq!(app.login("tls", PASSWORD).await.status(), StatusCode::OK);
}

/// Two servers on one PostgreSQL agree on device tokens: one minted by the first gets its
/// owner through the second while the account's ceiling is tripped, and a log-out-everywhere
/// on the first ends it on both.
#[tokio::test]
async fn two_servers_agree_on_device_tokens() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let make = |url: String| async move {
        let dir = temp_dir();
        let mut s = settings(&dir);
        s.store.store = Some(url.into());
        s.login.login_user_failures = Some(2);
        s.login.login_user_ceiling = Some(2);
        TestApp::with(s, dir).await
    };
    let a = make(url.clone()).await;
    let b = make(url).await;
    a.signup("lou").await;
    let first: serde_json::Value = a.login("lou", PASSWORD).await.json().await.unwrap();
    let device = first["device_token"].as_str().unwrap().to_string();
    let access = first["token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        assert_eq!(
            b.login("lou", "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let with_device = |app: &TestApp| {
        app.client
            .post(app.url("/login"))
            .json(&serde_json::json!({"username": "lou", "password": PASSWORD, "device_token": device}))
            .send()
    };
    assert_eq!(
        a.login("lou", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(with_device(&b).await.unwrap().status(), StatusCode::OK);
    let res = a
        .client
        .post(a.url("/logout-all"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        with_device(&b).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

//! Bounds at the boundary (issue 16, items 12, 18, 19): over-long values of every field
//! to every endpoint on each backend get a 4xx and leave the store as it was; duplicate
//! JSON keys are refused; sign-up is throttled per address and can be closed; the SQLite
//! files are private.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, client, error_code, settings, temp_dir};

async fn store_snapshot(app: &TestApp) -> (usize, usize) {
    let store = app.store().await;
    let users = store.list_users().await.unwrap().len();
    let revs = store
        .revocations_since(0, jotgate_verify::now(), usize::MAX)
        .await
        .unwrap()
        .len();
    (users, revs)
}

/// Every endpoint, every field, too long (and a few wrong shapes): 4xx, nothing written.
async fn over_long_values_change_nothing(app: &TestApp) {
    let ann = app.signup("ann").await;
    let token = ann["token"].as_str().unwrap().to_string();
    let before = store_snapshot(app).await;
    let long = "x".repeat(3000);
    let long_pw = "correct horse ".repeat(200);
    let cases: Vec<(&str, Value)> = vec![
        ("/signup", json!({"username": long, "password": PASSWORD})),
        (
            "/signup",
            json!({"username": "bounded", "password": long_pw}),
        ),
        ("/signup", json!({"username": 7, "password": PASSWORD})),
        ("/signup", json!({"username": ["a"], "password": PASSWORD})),
        ("/login", json!({"username": long, "password": PASSWORD})),
        ("/login", json!({"username": "ann", "password": long_pw})),
        ("/login", json!({"username": "ann", "password": {"x": 1}})),
        ("/verify", json!({"token": long})),
        ("/refresh", json!({"refresh_token": long})),
        ("/logout", json!({"refresh_token": long})),
        ("/logout-all", json!({"refresh_token": long})),
    ];
    for (path, body) in cases {
        let res = app.post(path, body.clone()).await;
        let s = res.status();
        assert!(s.is_client_error(), "{path} {body:.60}: {s}");
    }
    for (path, raw) in [
        (
            "/signup",
            r#"{"username":"dup","username":"dup2","password":"correct horse battery"}"#,
        ),
        (
            "/login",
            r#"{"username":"ann","password":"x","password":"correct horse battery"}"#,
        ),
    ] {
        let res = client()
            .post(app.url(path))
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(res, StatusCode::BAD_REQUEST).await,
            "invalid_json",
            "{path}"
        );
    }
    let res = client()
        .post(app.url("/signup"))
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"username":"big","password":"{}"}}"#,
            "x".repeat(100_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let res = client()
        .get(app.url("/private"))
        .bearer_auth(&long)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = client()
        .get(app.url(&format!("/api/v1/revocations?since={}", "9".repeat(3000))))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_client_error());
    assert_eq!(store_snapshot(app).await, before, "the store is unchanged");
    // And the account still works.
    assert_eq!(app.private(&token).await.status(), StatusCode::OK);
    assert_eq!(app.login("ann", PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn over_long_values_are_refused_on_sqlite() {
    over_long_values_change_nothing(&TestApp::start().await).await;
}

#[tokio::test]
async fn over_long_values_are_refused_on_postgres() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(url.into());
    over_long_values_change_nothing(&TestApp::with(s, dir).await).await;
}

#[tokio::test]
async fn over_long_values_are_refused_on_dynamodb() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(url.into());
    over_long_values_change_nothing(&TestApp::with(s, dir).await).await;
}

#[tokio::test]
async fn signup_is_throttled_per_address_and_can_be_closed() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.login.signup_ip_limit = Some(3);
    s.login.login_delay = Some(60);
    let app = TestApp::with(s, dir).await;
    // Taken or not, every attempt counts: the name oracle is bounded too.
    for i in 0..3 {
        let res = app
            .post(
                "/signup",
                json!({"username": format!("s{}", i % 2), "password": PASSWORD}),
            )
            .await;
        assert!(matches!(res.status().as_u16(), 201 | 409), "{i}");
    }
    let res = app
        .post("/signup", json!({"username": "s9", "password": PASSWORD}))
        .await;
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        error_code(res, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
    );

    let dir = temp_dir();
    let mut s = settings(&dir);
    s.api.signup = Some(jotgate::settings::SignupMode::Closed);
    let app = TestApp::with(s, dir).await;
    let res = app
        .post(
            "/signup",
            json!({"username": "nobody", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        error_code(res, StatusCode::FORBIDDEN).await,
        "signup_closed"
    );
    assert!(app.store().await.list_users().await.unwrap().is_empty());
}

#[cfg(unix)]
#[tokio::test]
async fn the_sqlite_files_are_readable_by_their_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::start().await;
    app.signup("ann").await;
    let db = app.dir.join("jotgate.db");
    for f in [
        db.clone(),
        db.with_extension("db-wal"),
        db.with_extension("db-shm"),
    ] {
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
}

/// Names that imitate another in a second script are refused at sign-up and name the
/// account they imitate at login; passwords are normalised (NIST SP 800-63B).
#[tokio::test]
async fn confusable_names_and_unnormalised_passwords() {
    let app = TestApp::start().await;
    app.signup("alice").await;
    app.signup("bob").await;
    for name in ["\u{430}lice", "alic\u{435}", "b\u{43e}b", "\u{391}lice"] {
        let res = app
            .post("/signup", json!({"username": name, "password": PASSWORD}))
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{name}");
    }
    // A whole-script lookalike and a digit for a letter are "taken".
    app.signup("ace").await;
    for name in ["\u{430}\u{441}\u{435}", "a1ice"] {
        let res = app
            .post("/signup", json!({"username": name, "password": PASSWORD}))
            .await;
        assert_eq!(
            error_code(res, StatusCode::CONFLICT).await,
            "username_taken",
            "{name}"
        );
    }
    // At login a lookalike spelling is the account it imitates (same password).
    assert_eq!(
        app.login("\u{430}lice", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(app.store().await.list_users().await.unwrap().len(), 3);

    for pw in [
        "\0\0\0\0\0\0\0\0",
        "        ",
        "\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}\u{301}",
        "Qwertyuiop",
    ] {
        let res = app
            .post("/signup", json!({"username": "carol", "password": pw}))
            .await;
        assert_eq!(
            error_code(res, StatusCode::BAD_REQUEST).await,
            "weak_password",
            "{pw:?}"
        );
    }
    let res = app
        .post(
            "/signup",
            json!({"username": "dan", "password": "\u{fb01}\u{fb01}\u{fb01}\u{fb01} lig secret"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        app.login("dan", "fifififi lig secret").await.status(),
        StatusCode::OK
    );
}

/// Accounts stored before skeleton keys (keyed by their canonical form) still log in, and
/// their name stays taken.
#[tokio::test]
async fn accounts_keyed_before_skeletons_still_work() {
    let app = TestApp::start().await;
    let hasher = jotgate_core::PasswordHasher::new(
        jotgate_core::PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        },
        None,
    )
    .unwrap();
    let name = jotgate_core::Username::parse("william").unwrap();
    assert_ne!(name.canonical(), name.key(), "the skeleton differs here");
    app.store()
        .await
        .create_user(jotgate_store::NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            username_key: name.canonical().to_string(),
            username_display: "william".into(),
            password_hash: hasher.hash(PASSWORD).unwrap(),
            roles: vec![],
            created_at: 0,
            email: None,
        })
        .await
        .unwrap();
    assert_eq!(
        app.login("William", PASSWORD).await.status(),
        StatusCode::OK
    );
    let res = app
        .post(
            "/signup",
            json!({"username": "william", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        error_code(res, StatusCode::CONFLICT).await,
        "username_taken"
    );
    // A confusable newcomer cannot be told from the older account by its skeleton (that
    // is not stored for it), but it never shadows it: the exact name is the older account.
    let other = "another correct horse battery";
    let res = app
        .post("/signup", json!({"username": "wi11iam", "password": other}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        app.login("william", PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("william", other).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(app.login("wi11iam", other).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_minimum_password_length_is_a_setting() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.passwords.password_min_length = Some(24);
    let app = TestApp::with(s, dir).await;
    let res = app
        .post("/signup", json!({"username": "mo", "password": PASSWORD}))
        .await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "weak_password"
    );
    let res = app
        .post(
            "/signup",
            json!({"username": "mo", "password": "a much longer correct horse battery"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

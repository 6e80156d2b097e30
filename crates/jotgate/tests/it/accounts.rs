//! Accounts with email addresses: sign-up with an address, login by username or address,
//! one namespace for both, throttling by account whatever the identifier, blocking. The
//! same scenario on SQLite, PostgreSQL and the DynamoDB emulator.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, error_code, settings, temp_dir};
use crate::edge::eventually;

fn login_body(field: &str, id: &str, pw: &str) -> Value {
    json!({ field: id, "password": pw })
}

async fn scenario(app: &TestApp) {
    let res = app
        .post(
            "/signup",
            json!({"username": "alice", "email": " Alice@Example.COM", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user"]["email"], "alice@example.com");
    assert_eq!(body["user"]["email_verified"], false);
    assert_eq!(body["user"]["blocked"], false);

    // One address, one account; an address is not a username, nor a username an address.
    let taken = app
        .post(
            "/signup",
            json!({"username": "bob", "email": "ALICE@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(error_code(taken, StatusCode::CONFLICT).await, "email_taken");
    let at = app
        .post(
            "/signup",
            json!({"username": "bob@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        error_code(at, StatusCode::BAD_REQUEST).await,
        "invalid_username"
    );
    for bad in [
        "not-an-email",
        "a@b",
        "a b@example.com",
        "\"q\"@example.com",
    ] {
        let res = app
            .post(
                "/signup",
                json!({"username": "bob", "email": bad, "password": PASSWORD}),
            )
            .await;
        assert_eq!(
            error_code(res, StatusCode::BAD_REQUEST).await,
            "invalid_email",
            "{bad}"
        );
    }
    let res = app
        .post(
            "/signup",
            json!({"username": "bob", "email": 5, "password": PASSWORD}),
        )
        .await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_field"
    );

    // Login by username, by address in `username` (any case), by address in `email`.
    for (field, id) in [
        ("username", "alice"),
        ("username", "ALICE@example.com"),
        ("email", "alice@example.com"),
    ] {
        let res = app.post("/login", login_body(field, id, PASSWORD)).await;
        assert_eq!(res.status(), StatusCode::OK, "{field} {id}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["user"]["username"], "alice");
    }
    let res = app
        .post(
            "/login",
            login_body("email", "nobody@example.com", PASSWORD),
        )
        .await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "bad_credentials"
    );

    // Failures count against the account, whichever identifier they name it by: the
    // limit (3) is reached by alternating username and address.
    for id in ["alice", "alice@example.com", "Alice"] {
        let res = app
            .post("/login", login_body("username", id, "wrong one"))
            .await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app
        .post(
            "/login",
            login_body("username", "ALICE@EXAMPLE.COM", PASSWORD),
        )
        .await;
    assert_eq!(
        error_code(res, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
    );
}

async fn blocking(app: &TestApp) {
    let s = &app.settings;
    let res = app
        .post(
            "/signup",
            json!({"username": "carol", "email": "carol@example.com", "password": PASSWORD}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let patch = jotgate_store::UserPatch {
        blocked: Some(true),
        ..Default::default()
    };
    let out = jotgate::admin::users_update(s, "carol@example.com", patch)
        .await
        .unwrap();
    assert!(
        out.contains("\"blocked\": true") && out.contains("sessions ended"),
        "{out}"
    );
    eventually("a blocked user's token is refused", async || {
        app.private(&token).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let res = app
        .post("/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // The right password is told the account is blocked; a wrong one learns nothing.
    let res = app.login("carol", PASSWORD).await;
    assert_eq!(error_code(res, StatusCode::FORBIDDEN).await, "user_blocked");
    let res = app.login("carol", "wrong password").await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "bad_credentials"
    );
    let unblock = jotgate_store::UserPatch {
        blocked: Some(false),
        email: Some(Some("Carol@New.Example".into())),
        ..Default::default()
    };
    let out = jotgate::admin::users_update(s, "carol", unblock)
        .await
        .unwrap();
    assert!(
        out.contains("carol@new.example") && !out.contains("ended"),
        "{out}"
    );
    eventually(
        "an unblocked user logs in with the new address",
        async || {
            app.post("/login", login_body("email", "carol@new.example", PASSWORD))
                .await
                .status()
                == StatusCode::OK
        },
    )
    .await;
    let res = app
        .post("/login", login_body("email", "carol@example.com", PASSWORD))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "the old address names no one"
    );
    let taken = jotgate_store::UserPatch {
        email: Some(Some("alice@example.com".into())),
        ..Default::default()
    };
    let err = jotgate::admin::users_update(s, "carol", taken)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("already in use"), "{err}");
}

/// Self-service: the signed-in user reads their account, changes their password (every
/// other session ends; this one gets new tokens) and deletes their account; a machine
/// client's token is refused.
async fn self_service(app: &TestApp) {
    let res = app
        .post(
            "/signup",
            json!({"username": "dora", "email": "dora@example.com", "password": PASSWORD}),
        )
        .await;
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let other = app
        .login("dora", PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let me = |t: &str| {
        app.client
            .get(app.url("/api/v1/me"))
            .bearer_auth(t.to_string())
            .send()
    };
    let v: Value = me(&token).await.unwrap().json().await.unwrap();
    assert_eq!(
        (v["username"].as_str(), v["email"].as_str()),
        (Some("dora"), Some("dora@example.com"))
    );
    let out =
        jotgate::admin::clients_add(&app.settings, "svc", &["reports:read".into()], &[], true)
            .await
            .unwrap();
    let c: Value = serde_json::from_str(&out).unwrap();
    let res = app
        .client
        .post(app.url("/oauth/token"))
        .basic_auth(
            c["client_id"].as_str().unwrap(),
            c["client_secret"].as_str(),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    let client_token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        error_code(me(&client_token).await.unwrap(), StatusCode::FORBIDDEN).await,
        "client_token"
    );

    let change = |cur: &str, new: &str| {
        app.client
            .post(app.url("/api/v1/me/password"))
            .bearer_auth(token.clone())
            .json(&json!({"current_password": cur, "new_password": new}))
            .send()
    };
    let res = change("wrong password", "a brand new password")
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "bad_credentials"
    );
    let res = change(PASSWORD, "short").await.unwrap();
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "weak_password"
    );
    let res = change(PASSWORD, "a brand new password").await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let fresh: Value = res.json().await.unwrap();
    let fresh_token = fresh["token"].as_str().unwrap().to_string();
    eventually("the other session's token is refused", async || {
        app.private(other["token"].as_str().unwrap()).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let res = app
        .post("/refresh", json!({"refresh_token": other["refresh_token"]}))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(app.private(&fresh_token).await.status(), StatusCode::OK);
    assert_eq!(
        app.login("dora", PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("dora", "a brand new password").await.status(),
        StatusCode::OK
    );

    let delete = |pw: &str| {
        app.client
            .delete(app.url("/api/v1/me"))
            .bearer_auth(fresh_token.clone())
            .json(&json!({"password": pw}))
            .send()
    };
    let res = delete("wrong password").await.unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "bad_credentials"
    );
    let res = delete("a brand new password").await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.login("dora", "a brand new password").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.private(&fresh_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

fn limited(dir: &std::path::Path) -> jotgate::settings::Settings {
    let mut s = settings(dir);
    s.login.login_user_failures = Some(3);
    s.login.login_delay = Some(30);
    s.sessions.sync_interval = Some(1);
    s
}

#[tokio::test]
async fn accounts_with_addresses_on_sqlite() {
    let dir = temp_dir();
    let app = TestApp::with(limited(&dir), dir).await;
    scenario(&app).await;
    blocking(&app).await;
    self_service(&app).await;
}

#[tokio::test]
async fn accounts_with_addresses_on_postgres() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let dir = temp_dir();
    let mut s = limited(&dir);
    s.store.store = Some(url.into());
    let app = TestApp::with(s, dir).await;
    scenario(&app).await;
    blocking(&app).await;
    self_service(&app).await;
}

#[cfg(feature = "dynamodb")]
#[tokio::test]
async fn accounts_with_addresses_on_dynamodb() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let dir = temp_dir();
    let mut s = limited(&dir);
    s.store.store = Some(url.into());
    let app = TestApp::with(s, dir).await;
    scenario(&app).await;
    blocking(&app).await;
    self_service(&app).await;
}

/// A lookalike of an address fills the same throttling bucket as the address, whether the
/// address names an account or not: the 429 that follows says nothing about existence.
#[tokio::test]
async fn a_lookalike_address_tells_nothing_about_existence() {
    let dir = temp_dir();
    let app = TestApp::with(limited(&dir), dir).await;
    let res = app
        .post(
            "/signup",
            json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // `a1ice@…` is another address (unknown), with alice's skeleton; `b0b@…` likewise
    // for `bob@…`, which names no one.
    for (decoy, target) in [
        ("a1ice@example.com", "alice@example.com"),
        ("b0b@example.com", "bob@example.com"),
    ] {
        for _ in 0..3 {
            let res = app
                .post("/login", login_body("email", decoy, "wrong one"))
                .await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{decoy}");
        }
        let res = app
            .post("/login", login_body("email", target, "wrong one"))
            .await;
        assert_eq!(
            error_code(res, StatusCode::TOO_MANY_REQUESTS).await,
            "rate_limited",
            "{target}"
        );
    }
    // An address longer than any username still logs in.
    let long = format!("{}@example.com", "l".repeat(60));
    let res = app
        .post(
            "/signup",
            json!({"username": "longmail", "email": long, "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = app
        .post("/login", login_body("username", &long, PASSWORD))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

/// Chosen keys of app_metadata go into tokens as namespaced claims; other keys, and a value
/// over the size cap, do not. A claim that is not namespaced, or is a registered one, is
/// refused at start-up.
#[tokio::test]
async fn app_metadata_keys_become_namespaced_claims() {
    let dir = temp_dir();
    let mut s = limited(&dir);
    s.api.app_metadata_claims = Some(
        "plan=https://example.com/plan, seats=urn:example:seats, big=https://x.example/big".into(),
    );
    let app = TestApp::with(s, dir).await;
    let body: Value = app
        .post("/signup", json!({"username": "erin", "password": PASSWORD}))
        .await
        .json()
        .await
        .unwrap();
    let id = body["user"]["id"].as_str().unwrap().to_string();
    let meta: serde_json::Map<String, Value> = serde_json::from_value(json!({
        "plan": "pro", "seats": 3, "internal": "not for tokens", "big": "x".repeat(3000)
    }))
    .unwrap();
    app.store()
        .await
        .update_user(
            &id,
            jotgate_store::UserPatch {
                app_metadata: Some(meta),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let login: Value = app.login("erin", PASSWORD).await.json().await.unwrap();
    let claims = crate::common::token_part(login["token"].as_str().unwrap(), 1);
    assert_eq!(claims["https://example.com/plan"], "pro");
    assert_eq!(claims["urn:example:seats"], 3);
    assert!(
        claims.get("https://x.example/big").is_none(),
        "over the cap"
    );
    assert!(claims.get("internal").is_none() && claims.get("plan").is_none());
    assert_eq!(
        claims["sub"],
        id.as_str(),
        "the registered claims are intact"
    );
    assert_eq!(
        app.private(login["token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );

    for bad in [
        "plan=plan",
        "plan=sub",
        "plan=https://a.example/p,seats=https://a.example/p",
        "plan",
    ] {
        let mut s = settings(&temp_dir());
        s.api.app_metadata_claims = Some(bad.into());
        let e = s.server_config().unwrap_err();
        assert!(
            format!("{e:#}").contains("app_metadata_claims"),
            "{bad}: {e:#}"
        );
    }
}

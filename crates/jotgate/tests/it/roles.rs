//! Roles as bags of scopes, and role changes taking effect: the next token carries what a
//! user holds now; losing a role or a scope ends their sessions and refuses their access
//! tokens issued before. The same scenario on SQLite, PostgreSQL and the DynamoDB emulator.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, settings, temp_dir, token_part};
use crate::edge::eventually;

async fn scope_of(app: &TestApp, user: &str) -> (Value, String, String) {
    let res = app.login(user, PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let claims = token_part(&token, 1);
    (
        claims,
        token,
        body["refresh_token"].as_str().unwrap().to_string(),
    )
}

async fn refused(app: &TestApp, token: &str, what: &str) {
    eventually(what, async || {
        app.private(token).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
}

async fn scenario(app: &TestApp) {
    let s = &app.settings;
    app.signup("alice").await;
    app.signup("bob").await;
    let (claims, before, _) = scope_of(app, "alice").await;
    assert_eq!(claims["scope"], "profile");
    assert_eq!(claims["roles"], json!([]));

    // A role given that is not defined yet grants the scope of its name (as `users add
    // --role` always did); gaining it ends nothing.
    let out = jotgate::admin::users_set_roles(s, "alice", &["paid".into()])
        .await
        .unwrap();
    assert!(out.contains("roles [paid] (were [])"), "{out}");
    assert!(!out.contains("sessions ended"), "{out}");
    assert_eq!(app.private(&before).await.status(), StatusCode::OK);
    let (claims, _, _) = scope_of(app, "alice").await;
    assert_eq!(claims["scope"], "paid profile");

    // Defined as a bag: the next token carries the bag. The scope `paid` is gone, so
    // alice's sessions ended (bob holds nothing and keeps his).
    let (_, bob_token, _) = scope_of(app, "bob").await;
    let (_, old, old_refresh) = scope_of(app, "alice").await;
    let out = jotgate::admin::roles_set(s, "paid", &["reports:read api:read".into()])
        .await
        .unwrap();
    assert!(
        out.contains("role paid created: api:read reports:read"),
        "{out}"
    );
    assert!(out.contains("1 user's sessions ended"), "{out}");
    refused(
        app,
        &old,
        "alice's token issued before the change is refused",
    )
    .await;
    let res = app
        .post("/refresh", json!({"refresh_token": old_refresh}))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "the session ended");
    assert_eq!(app.private(&bob_token).await.status(), StatusCode::OK);
    let (claims, token, refresh) = eventually_login(app, "alice").await;
    assert_eq!(claims["roles"], json!(["paid"]));
    assert_eq!(claims["scope"], "api:read profile reports:read");

    // Adding a scope ends nothing; the refresh carries it.
    let out = jotgate::admin::roles_set(
        s,
        "paid",
        &["reports:read".into(), "api:read export".into()],
    )
    .await
    .unwrap();
    assert!(
        out.contains("role paid replaced") && !out.contains("ended"),
        "{out}"
    );
    assert_eq!(app.private(&token).await.status(), StatusCode::OK);
    let res = app
        .post("/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let refreshed = token_part(body["token"].as_str().unwrap(), 1);
    assert_eq!(refreshed["scope"], "api:read export profile reports:read");

    // Taking a scope away ends the holders' sessions.
    let token = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let out = jotgate::admin::roles_set(s, "paid", &["reports:read".into()])
        .await
        .unwrap();
    assert!(out.contains("1 user's sessions ended"), "{out}");
    refused(app, &token, "a token with a scope taken away is refused").await;
    let res = app
        .post("/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);

    // Taking the role from the user ends their sessions too.
    let (_, token, _) = eventually_login(app, "alice").await;
    let out = jotgate::admin::users_set_roles(s, "alice", &[])
        .await
        .unwrap();
    assert!(
        out.contains("roles [] (were [paid])") && out.contains("ended"),
        "{out}"
    );
    refused(app, &token, "a token of a role taken away is refused").await;

    // Deleting a role takes it from its holders, whose sessions end.
    jotgate::admin::users_set_roles(s, "bob", &["paid".into(), "support".into()])
        .await
        .unwrap();
    let (claims, bob_token, _) = eventually_login(app, "bob").await;
    assert_eq!(claims["scope"], "profile reports:read support");
    let out = jotgate::admin::roles_delete(s, "paid").await.unwrap();
    assert!(
        out.contains("role paid deleted; 1 user's sessions ended"),
        "{out}"
    );
    refused(app, &bob_token, "a token of a deleted role is refused").await;
    let (claims, _, _) = eventually_login(app, "bob").await;
    assert_eq!(claims["roles"], json!(["support"]));
    assert_eq!(claims["scope"], "profile support");
    let err = jotgate::admin::roles_delete(s, "paid").await.unwrap_err();
    assert!(err.to_string().contains("no role named"), "{err}");

    // Bad input changes nothing.
    for scopes in [&["a\"b"][..], &["bad\\scope"], &[""]] {
        let scopes: Vec<String> = scopes.iter().map(|s| s.to_string()).collect();
        let r = jotgate::admin::roles_set(s, "x", &scopes).await;
        if scopes[0].is_empty() {
            // No scope at all is a role with no scopes.
            assert!(r.is_ok());
            jotgate::admin::roles_delete(s, "x").await.unwrap();
        } else {
            assert!(r.unwrap_err().to_string().contains("invalid scope"));
        }
    }
    let err = jotgate::admin::roles_set(s, "Bad Name", &["a".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid role name"), "{err}");
    let err = jotgate::admin::users_set_roles(s, "nobody", &["paid".into()])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no user named"), "{err}");
    let listed = jotgate::admin::roles_list(s, true).await.unwrap();
    assert_eq!(serde_json::from_str::<Value>(&listed).unwrap(), json!([]));
    // The command line's changes are in the audit log, by actor `cli`.
    let log: Value = serde_json::from_str(
        &jotgate::admin::audit_tail(s, 3600, None, None, 100, true)
            .await
            .unwrap(),
    )
    .unwrap();
    for kind in ["role.changed", "role.deleted", "user.roles_changed"] {
        assert!(
            log.as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == kind && e["actor"] == "cli"),
            "{kind}: {log}"
        );
    }
}

/// A login right after a change may fall in the second the user's "not before" names;
/// the server waits it out (up to 2 s), so this retries only on a refused token.
async fn eventually_login(app: &TestApp, user: &str) -> (Value, String, String) {
    let mut got = None;
    eventually("a fresh login's token is accepted", async || {
        let l = scope_of(app, user).await;
        let ok = app.private(&l.1).await.status() == StatusCode::OK;
        got = Some(l);
        ok
    })
    .await;
    got.unwrap()
}

#[tokio::test]
async fn role_changes_take_effect_on_sqlite() {
    let app = TestApp::start().await;
    scenario(&app).await;
}

#[tokio::test]
async fn role_changes_take_effect_on_postgres() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(url.into());
    scenario(&TestApp::with(s, dir).await).await;
}

#[cfg(feature = "dynamodb")]
#[tokio::test]
async fn role_changes_take_effect_on_dynamodb() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(url.into());
    scenario(&TestApp::with(s, dir).await).await;
}

//! Refresh rotation over HTTP: rotation, reuse detection, the grace window, real concurrency.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, error_code, settings, temp_dir};

async fn refresh(app: &TestApp, token: &str) -> reqwest::Response {
    app.post("/refresh", json!({"refresh_token": token})).await
}

#[tokio::test]
async fn each_refresh_rotates_and_returns_a_working_pair() {
    let app = TestApp::start().await;
    let s = app.signup("ann").await;
    let r0 = s["refresh_token"].as_str().unwrap().to_string();
    let res = refresh(&app, &r0).await;
    assert_eq!(res.status(), StatusCode::OK);
    let b: Value = res.json().await.unwrap();
    let r1 = b["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(r0, r1);
    assert_eq!(b["user"]["username"], "ann");
    assert_eq!(b["expires_in"], 900);
    assert_eq!(
        app.private(b["token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
    // The new access token belongs to the same session.
    let claims = |t: &str| crate::common::token_part(t, 1);
    assert_eq!(
        claims(s["token"].as_str().unwrap())["sid"],
        claims(b["token"].as_str().unwrap())["sid"]
    );
    let r2 = refresh(&app, &r1).await.json::<Value>().await.unwrap()["refresh_token"].clone();
    assert!(r2.is_string());
    // Only hashes are stored: the plaintext never appears in the database file.
    let db = std::fs::read(app.dir.join("jotgate.db")).unwrap();
    let wal = std::fs::read(app.dir.join("jotgate.db-wal")).unwrap_or_default();
    for t in [&r0, &r1] {
        let needle = t.as_bytes();
        assert!(
            !db.windows(needle.len()).any(|w| w == needle),
            "plaintext refresh token stored"
        );
        assert!(
            !wal.windows(needle.len()).any(|w| w == needle),
            "plaintext refresh token stored"
        );
    }
}

#[tokio::test]
async fn bad_refresh_tokens_are_401() {
    let app = TestApp::start().await;
    for t in ["", "nope", &"x".repeat(300), "🔐"] {
        let res = refresh(&app, t).await;
        assert_eq!(
            error_code(res, StatusCode::UNAUTHORIZED).await,
            "invalid_refresh_token",
            "{t:?}"
        );
    }
    // An access token is not a refresh token.
    let s = app.signup("bea").await;
    let res = refresh(&app, s["token"].as_str().unwrap()).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_never_fork_the_family() {
    let app = TestApp::start().await;
    let s = app.signup("cat").await;
    let r0 = s["refresh_token"].as_str().unwrap().to_string();
    // Two browser tabs, many times over: 12 simultaneous presentations.
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let client = app.client.clone();
        let url = app.url("/refresh");
        let r0 = r0.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"refresh_token": r0}))
                .send()
                .await
                .unwrap()
        }));
    }
    let mut successors = Vec::new();
    for t in tasks {
        let res = t.await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        successors.push(
            res.json::<Value>().await.unwrap()["refresh_token"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    successors.dedup();
    assert_eq!(successors.len(), 1, "every tab got the same successor");
    // And that successor is live: the family was not revoked.
    let res = refresh(&app, &successors[0]).await;
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn reuse_after_the_grace_window_revokes_the_whole_family() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.sessions.refresh_grace = Some(1);
    let app = TestApp::with(s, dir).await;
    let login = app.signup("dan").await;
    let r0 = login["refresh_token"].as_str().unwrap().to_string();
    let b1: Value = refresh(&app, &r0).await.json().await.unwrap();
    let r1 = b1["refresh_token"].as_str().unwrap().to_string();
    let access1 = b1["token"].as_str().unwrap().to_string();
    // Inside the window a repeat is harmless...
    let again: Value = refresh(&app, &r0).await.json().await.unwrap();
    assert_eq!(again["refresh_token"], r1.as_str());
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // ...after it, the spent token is a theft signal.
    let res = refresh(&app, &r0).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );
    let res = refresh(&app, &r1).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );
    // Access tokens of the revoked session stop working on this instance at once.
    assert_eq!(
        error_code(app.private(&access1).await, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );
    assert_eq!(
        error_code(
            app.private(login["token"].as_str().unwrap()).await,
            StatusCode::UNAUTHORIZED
        )
        .await,
        "token_revoked"
    );
}

#[tokio::test]
async fn expired_refresh_tokens_are_refused() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.sessions.refresh_ttl = Some(1);
    let app = TestApp::with(s, dir).await;
    let login = app.signup("eve").await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let res = refresh(&app, login["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );
}

//! Bad input: always a clear 4xx JSON error, never a 5xx, and the store is unchanged.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{PASSWORD, TestApp, error_code};

async fn raw(
    app: &TestApp,
    path: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn malformed_bodies() {
    let app = TestApp::start().await;
    for path in ["/signup", "/login", "/verify", "/refresh"] {
        let cases: Vec<(&str, Vec<u8>, StatusCode, &str)> = vec![
            (
                "application/json",
                b"{not json".to_vec(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "application/json",
                b"".to_vec(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "application/json",
                b"[1,2,3]".to_vec(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "application/json",
                b"\"str\"".to_vec(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "application/json",
                b"null".to_vec(),
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "application/json",
                vec![0xff, 0xfe, 0x00],
                StatusCode::BAD_REQUEST,
                "invalid_json",
            ),
            (
                "application/json",
                b"{}".to_vec(),
                StatusCode::BAD_REQUEST,
                "missing_field",
            ),
            (
                "text/plain",
                b"{}".to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
            (
                "application/x-www-form-urlencoded",
                b"username=a&password=b".to_vec(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            ),
        ];
        for (ct, body, status, code) in cases {
            let res = raw(&app, path, ct, body.clone()).await;
            assert_eq!(
                error_code(res, status).await,
                code,
                "{path} with {ct} {:?}",
                String::from_utf8_lossy(&body)
            );
        }
    }
    // No content type at all.
    let res = app
        .client
        .post(app.url("/login"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNSUPPORTED_MEDIA_TYPE).await,
        "unsupported_media_type"
    );
    // A charset parameter is fine.
    let res = raw(&app, "/login", "application/json; charset=utf-8", "{}").await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "missing_field"
    );
    assert!(app.store().await.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn wrong_types_and_missing_fields_name_the_field_not_the_value() {
    let app = TestApp::start().await;
    let cases = [
        (json!({"username": "zed"}), "missing_field", "password"),
        (json!({"password": PASSWORD}), "missing_field", "username"),
        (
            json!({"username": 42, "password": PASSWORD}),
            "invalid_field",
            "username",
        ),
        (
            json!({"username": "zed", "password": 12345678901_i64}),
            "invalid_field",
            "password",
        ),
        (
            json!({"username": "zed", "password": ["x"]}),
            "invalid_field",
            "password",
        ),
        (
            json!({"username": null, "password": PASSWORD}),
            "invalid_field",
            "username",
        ),
        (
            json!({"username": {"$ne": ""}, "password": PASSWORD}),
            "invalid_field",
            "username",
        ),
    ];
    for path in ["/signup", "/login"] {
        for (body, code, field) in &cases {
            let res = app.post(path, body.clone()).await;
            assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{path} {body}");
            let v: serde_json::Value = res.json().await.unwrap();
            assert_eq!(v["code"], *code, "{path} {body}");
            let msg = v["error"].as_str().unwrap();
            assert!(msg.contains(field), "{msg}");
            assert!(!msg.contains("12345678901"), "error echoes a value: {msg}");
        }
    }
    let res = app.post("/verify", json!({"token": 5})).await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_field"
    );
    let res = app.post("/refresh", json!({"refresh_token": false})).await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_field"
    );
    assert!(app.store().await.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn huge_bodies_are_413() {
    let app = TestApp::start().await;
    let big = json!({"username": "x".repeat(200_000), "password": PASSWORD}).to_string();
    for path in ["/signup", "/login", "/verify"] {
        let res = raw(&app, path, "application/json", big.clone()).await;
        assert_eq!(
            error_code(res, StatusCode::PAYLOAD_TOO_LARGE).await,
            "payload_too_large"
        );
    }
    // A GET's body is read by no handler: it is not limited, and not read either.
    let res = app
        .client
        .get(app.url("/healthz"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // A long password under the body limit is refused by policy, before any hashing.
    let res = app
        .post(
            "/signup",
            json!({"username": "yan", "password": "p".repeat(5000)}),
        )
        .await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "weak_password"
    );
    let res = app.login("yan", &"p".repeat(5000)).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "bad_credentials"
    );
    assert!(app.store().await.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn unicode_usernames_and_passwords_work() {
    let app = TestApp::start().await;
    let pw = "pässwörd-日本語-🔐";
    let res = app
        .post("/signup", json!({"username": "Zoë.Ünal", "password": pw}))
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    // NFD spelling of the same name, different case: the same account.
    let res = app.login("zoe\u{308}.u\u{308}nal", pw).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["user"]["username"], "Zoë.Ünal");
    let res = app.private(body["token"].as_str().unwrap()).await;
    assert_eq!(
        res.json::<serde_json::Value>().await.unwrap()["message"],
        "Hello Zoë.Ünal"
    );
    // Control characters and emoji in names are refused.
    for bad in ["a\u{0007}b", "🔐", "a\u{202e}b"] {
        let res = app
            .post("/signup", json!({"username": bad, "password": pw}))
            .await;
        assert_eq!(
            error_code(res, StatusCode::BAD_REQUEST).await,
            "invalid_username",
            "{bad:?}"
        );
    }
}

#[tokio::test]
async fn unknown_paths_and_methods_are_json() {
    let app = TestApp::start().await;
    let res = app.client.get(app.url("/nope")).send().await.unwrap();
    assert_eq!(error_code(res, StatusCode::NOT_FOUND).await, "not_found");
    let res = app.client.get(app.url("/login")).send().await.unwrap();
    assert_eq!(
        error_code(res, StatusCode::METHOD_NOT_ALLOWED).await,
        "method_not_allowed"
    );
    let res = app.client.delete(app.url("/private")).send().await.unwrap();
    assert_eq!(
        error_code(res, StatusCode::METHOD_NOT_ALLOWED).await,
        "method_not_allowed"
    );
}

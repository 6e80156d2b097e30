//! Machine clients: the OAuth 2.0 client-credentials grant at `POST /oauth/token` (RFC 6749
//! §4.4, errors per §5.2), RFC 9068 tokens, audiences, scopes, throttling, and a rotated
//! secret or a deleted client refusing the tokens it held. On SQLite, PostgreSQL and the
//! DynamoDB emulator.

use base64::Engine;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, settings, temp_dir, token_part};
use crate::edge::eventually;

async fn add(app: &TestApp, scopes: &str, audiences: &[String]) -> (String, String) {
    let out = jotgate::admin::clients_add(
        &app.settings,
        "purchases",
        &[scopes.into()],
        audiences,
        true,
    )
    .await
    .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_object().unwrap().len(), 2, "{out}");
    (
        v["client_id"].as_str().unwrap().into(),
        v["client_secret"].as_str().unwrap().into(),
    )
}

fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
    )
}

async fn form(app: &TestApp, auth: Option<&str>, params: &[(&str, &str)]) -> reqwest::Response {
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params)
        .finish();
    let mut req = app
        .client
        .post(app.url("/oauth/token"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    req.send().await.unwrap()
}

async fn oauth_error(res: reqwest::Response, status: StatusCode) -> String {
    assert_eq!(res.status(), status);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let v: Value = res.json().await.unwrap();
    assert!(v["error_description"].is_string(), "{v}");
    v["error"].as_str().unwrap().to_string()
}

async fn scenario(app: &TestApp) {
    let policy = app.settings.policy().unwrap();
    let mgmt = format!("{}/api/v1/", policy.issuer);
    let (id, secret) = add(app, "reports:read read:users update:users", &[]).await;
    assert!(id.starts_with("cl_"));
    let cc = [("grant_type", "client_credentials")];

    // client_secret_basic, no audience: a management token (the client has management
    // scopes), carrying only those.
    let res = form(app, Some(&basic(&id, &secret)), &cc).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["scope"], "read:users update:users");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(token_part(token, 0)["typ"], "at+jwt");
    let claims = token_part(token, 1);
    assert_eq!(claims["sub"], id.as_str());
    assert_eq!(claims["client_id"], id.as_str());
    assert_eq!(claims["aud"], mgmt.as_str());
    assert_eq!(claims["iss"], policy.issuer.as_str());
    assert!(claims.get("username").is_none() && claims.get("sid").is_none());
    // A management token is no credential for the application's API.
    assert_eq!(app.private(token).await.status(), StatusCode::UNAUTHORIZED);

    // client_secret_post, the application's audience (registered? no: refused), then a
    // client registered for it.
    let post = |extra: Vec<(&'static str, String)>| {
        let mut p: Vec<(&str, String)> = vec![
            ("grant_type", "client_credentials".into()),
            ("client_id", id.clone()),
            ("client_secret", secret.clone()),
        ];
        p.extend(extra);
        p
    };
    let p = post(vec![("audience", policy.audience.clone())]);
    let p: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        oauth_error(form(app, None, &p).await, StatusCode::BAD_REQUEST).await,
        "invalid_target"
    );
    let (app_id, app_secret) = add(
        app,
        "reports:read read:users",
        &[policy.audience.clone(), mgmt.clone()],
    )
    .await;
    let res = form(
        app,
        None,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &app_id),
            ("client_secret", &app_secret),
        ],
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["scope"], "reports:read",
        "the first audience is the default"
    );
    let app_token = body["access_token"].as_str().unwrap().to_string();
    assert_eq!(token_part(&app_token, 1)["aud"], policy.audience.as_str());
    assert_eq!(app.private(&app_token).await.status(), StatusCode::OK);
    // `resource` (RFC 8707) names an audience too; a JSON body is accepted.
    let res = app
        .client
        .post(app.url("/oauth/token"))
        .header("authorization", basic(&app_id, &app_secret))
        .json(&json!({"grant_type": "client_credentials", "resource": mgmt, "scope": "read:users"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["scope"], "read:users");

    // Errors exactly per RFC 6749 §5.2.
    let auth = basic(&id, &secret);
    let e = |r| oauth_error(r, StatusCode::BAD_REQUEST);
    assert_eq!(
        e(form(app, Some(&auth), &[]).await).await,
        "invalid_request"
    );
    assert_eq!(
        e(form(app, Some(&auth), &[("grant_type", "password")]).await).await,
        "unsupported_grant_type"
    );
    assert_eq!(
        e(form(
            app,
            Some(&auth),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "delete:users")
            ]
        )
        .await)
        .await,
        "invalid_scope"
    );
    assert_eq!(
        e(form(
            app,
            Some(&auth),
            &[
                ("grant_type", "client_credentials"),
                ("scope", "reports:read")
            ]
        )
        .await)
        .await,
        "invalid_scope",
        "an application scope in a management token"
    );
    assert_eq!(
        e(form(
            app,
            Some(&auth),
            &[
                ("grant_type", "client_credentials"),
                ("grant_type", "client_credentials")
            ]
        )
        .await)
        .await,
        "invalid_request",
        "a parameter twice"
    );
    assert_eq!(
        e(form(
            app,
            Some(&auth),
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret)
            ]
        )
        .await)
        .await,
        "invalid_request",
        "two authentication methods"
    );
    let res = app
        .client
        .post(app.url("/oauth/token"))
        .header("authorization", &auth)
        .header("content-type", "text/plain")
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap();
    assert_eq!(e(res).await, "invalid_request");
    for bad in [
        basic(&id, "jgs_wrong"),
        basic("cl_nobody", &secret),
        "Basic !!!".into(),
        "Bearer x".into(),
    ] {
        let res = form(app, Some(&bad), &cc).await;
        assert_eq!(
            res.headers()["www-authenticate"],
            "Basic realm=\"jotgate\", charset=\"UTF-8\""
        );
        assert_eq!(
            oauth_error(res, StatusCode::UNAUTHORIZED).await,
            "invalid_client"
        );
    }
    assert_eq!(
        oauth_error(form(app, None, &cc).await, StatusCode::UNAUTHORIZED).await,
        "invalid_client"
    );

    // A new secret: the old one and the tokens it got are refused.
    let out = jotgate::admin::clients_rotate_secret(&app.settings, &app_id, true)
        .await
        .unwrap();
    let new_secret = serde_json::from_str::<Value>(&out).unwrap()["client_secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_secret, app_secret);
    assert_eq!(
        oauth_error(
            form(app, Some(&basic(&app_id, &app_secret)), &cc).await,
            StatusCode::UNAUTHORIZED
        )
        .await,
        "invalid_client"
    );
    eventually("a token of a rotated secret is refused", async || {
        app.private(&app_token).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let mut fresh = String::new();
    eventually("the new secret works", async || {
        let res = form(app, Some(&basic(&app_id, &new_secret)), &cc).await;
        if res.status() != StatusCode::OK {
            return false;
        }
        let body: Value = res.json().await.unwrap();
        fresh = body["access_token"].as_str().unwrap().to_string();
        app.private(&fresh).await.status() == StatusCode::OK
    })
    .await;
    // Deleted: its secret and its tokens are refused.
    jotgate::admin::clients_delete(&app.settings, &app_id)
        .await
        .unwrap();
    assert_eq!(
        oauth_error(
            form(app, Some(&basic(&app_id, &new_secret)), &cc).await,
            StatusCode::UNAUTHORIZED
        )
        .await,
        "invalid_client"
    );
    eventually("a deleted client's token is refused", async || {
        app.private(&fresh).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;
    let listed = jotgate::admin::clients_list(&app.settings, true)
        .await
        .unwrap();
    assert!(
        !listed.contains("secret_hash") && !listed.contains(&secret),
        "{listed}"
    );
    assert!(listed.contains(&id) && !listed.contains(&app_id));

    // Discovery names the endpoint.
    let d = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(
        d["token_endpoint"],
        format!("{}/oauth/token", policy.issuer)
    );
    assert_eq!(d["grant_types_supported"], json!(["client_credentials"]));

    // Secrets are throttled like passwords: 3 failures, then even the right one waits.
    let (t_id, t_secret) = add(app, "reports:read", &[]).await;
    for _ in 0..3 {
        let res = form(app, Some(&basic(&t_id, "jgs_guess")), &cc).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = form(app, Some(&basic(&t_id, &t_secret)), &cc).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(
        oauth_error(res, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
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
async fn client_credentials_on_sqlite() {
    let dir = temp_dir();
    scenario(&TestApp::with(limited(&dir), dir).await).await;
}

#[tokio::test]
async fn client_credentials_on_postgres() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let dir = temp_dir();
    let mut s = limited(&dir);
    s.store.store = Some(url.into());
    scenario(&TestApp::with(s, dir).await).await;
}

#[cfg(feature = "dynamodb")]
#[tokio::test]
async fn client_credentials_on_dynamodb() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let dir = temp_dir();
    let mut s = limited(&dir);
    s.store.store = Some(url.into());
    scenario(&TestApp::with(s, dir).await).await;
}

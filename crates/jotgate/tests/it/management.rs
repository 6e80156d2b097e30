//! The management API (`/api/v1`) over HTTP, the way the README shows it: a management
//! client gets a token, finds a user by email, gives them a role, and the user's next token
//! carries it. Every scope rule (401, 403 insufficient_scope naming the scope, the
//! management audience, no escalation) and the users/roles/clients endpoints; on SQLite,
//! PostgreSQL and the DynamoDB emulator.

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, error_code, settings, temp_dir, token_part};
use crate::edge::eventually;

const ALL: &str = "read:users create:users update:users delete:users read:roles create:roles \
                   update:roles delete:roles read:clients create:clients update:clients delete:clients read:audit";

/// A management token for a new client holding `scopes`.
pub(crate) async fn mgmt_token(app: &TestApp, scopes: &str) -> String {
    let out = jotgate::admin::clients_add(&app.settings, "ops", &[scopes.into()], &[], true)
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    let basic = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        v["client_id"].as_str().unwrap(),
        v["client_secret"].as_str().unwrap()
    ));
    let res = app
        .client
        .post(app.url("/oauth/token"))
        .header("authorization", format!("Basic {basic}"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    body["access_token"].as_str().unwrap().to_string()
}

async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn ok_json(res: reqwest::Response, status: StatusCode) -> Value {
    let got = res.status();
    let body: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(got, status, "{body}");
    body
}

async fn scenario(app: &TestApp) {
    let admin = mgmt_token(app, ALL).await;
    let res = app
        .post(
            "/signup",
            json!({"username": "alice", "email": "alice@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);

    // Find her by email; give her a role; her next token carries it.
    let found = ok_json(
        call(
            app,
            Method::GET,
            "/api/v1/users?email=Alice@Example.com",
            &admin,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(found["users"].as_array().unwrap().len(), 1, "{found}");
    let id = found["users"][0]["id"].as_str().unwrap().to_string();
    let role = ok_json(
        call(
            app,
            Method::PUT,
            "/api/v1/roles/paid",
            &admin,
            Some(json!({"scopes": ["reports:read", "api:read"]})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(role["scopes"], json!(["api:read", "reports:read"]));
    let given = ok_json(
        call(
            app,
            Method::POST,
            &format!("/api/v1/users/{id}/roles"),
            &admin,
            Some(json!({"roles": ["paid"]})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(given["roles"], json!(["paid"]));
    let res = app.login("alice@example.com", PASSWORD).await;
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let claims = token_part(&token, 1);
    assert_eq!(claims["roles"], json!(["paid"]));
    assert_eq!(claims["scope"], "api:read profile reports:read");

    // Who may call: no token 401; the application's token (any scopes) 401; a management
    // token lacking the scope 403 naming it.
    let res = app
        .client
        .get(app.url("/api/v1/users"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );
    let res = call(app, Method::GET, "/api/v1/users", &token, None).await;
    assert_eq!(
        res.status(),
        StatusCode::UNAUTHORIZED,
        "an application token"
    );
    let reader = mgmt_token(app, "read:users").await;
    ok_json(
        call(
            app,
            Method::GET,
            &format!("/api/v1/users/{id}"),
            &reader,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    for (method, path, body, scope) in [
        (
            Method::POST,
            format!("/api/v1/users/{id}/roles"),
            Some(json!({"roles": ["paid"]})),
            "update:users",
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{id}"),
            Some(json!({"blocked": true})),
            "update:users",
        ),
        (
            Method::DELETE,
            format!("/api/v1/users/{id}"),
            None,
            "delete:users",
        ),
        (
            Method::POST,
            "/api/v1/users".to_string(),
            Some(json!({"username": "x", "password": PASSWORD})),
            "create:users",
        ),
        (
            Method::POST,
            format!("/api/v1/users/{id}/revoke-sessions"),
            None,
            "update:users",
        ),
        (Method::GET, "/api/v1/roles".to_string(), None, "read:roles"),
        (
            Method::PUT,
            "/api/v1/roles/paid".to_string(),
            Some(json!({"scopes": []})),
            "create:roles update:roles",
        ),
        (
            Method::PUT,
            "/api/v1/roles/new".to_string(),
            Some(json!({"scopes": []})),
            "create:roles update:roles",
        ),
        (
            Method::DELETE,
            "/api/v1/roles/paid".to_string(),
            None,
            "delete:roles",
        ),
        (
            Method::GET,
            "/api/v1/clients".to_string(),
            None,
            "read:clients",
        ),
        (
            Method::POST,
            "/api/v1/clients".to_string(),
            Some(json!({"name": "x"})),
            "create:clients",
        ),
        (
            Method::POST,
            "/api/v1/clients/cl_x/rotate-secret".to_string(),
            None,
            "update:clients",
        ),
        (
            Method::DELETE,
            "/api/v1/clients/cl_x".to_string(),
            None,
            "delete:clients",
        ),
    ] {
        let res = call(app, method.clone(), &path, &reader, body).await;
        let challenge = res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(
            challenge.contains(&format!("scope=\"{scope}\"")),
            "{method} {path}: {challenge}"
        );
        let v = ok_json(res, StatusCode::FORBIDDEN).await;
        assert_eq!(v["code"], "insufficient_scope", "{method} {path}");
        assert!(v["error"].as_str().unwrap().contains(scope), "{v}");
    }

    // No escalation: a caller cannot hand out a management scope it lacks — in a role's
    // bag, through a role, or to a client. Application scopes go with update:users.
    let manager = mgmt_token(
        app,
        "read:users update:users create:roles update:roles create:clients",
    )
    .await;
    for (method, path, body) in [
        (
            Method::PUT,
            "/api/v1/roles/ops".to_string(),
            json!({"scopes": ["delete:users"]}),
        ),
        (
            Method::POST,
            "/api/v1/clients".to_string(),
            json!({"name": "x", "scopes": ["delete:users"]}),
        ),
    ] {
        let v = ok_json(
            call(app, method, &path, &manager, Some(body)).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(v["code"], "escalation", "{v}");
    }
    ok_json(
        call(
            app,
            Method::PUT,
            "/api/v1/roles/auditor",
            &admin,
            Some(json!({"scopes": ["read:clients"]})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    let v = ok_json(
        call(
            app,
            Method::POST,
            &format!("/api/v1/users/{id}/roles"),
            &manager,
            Some(json!({"roles": ["auditor"]})),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert_eq!(v["code"], "escalation");
    let v = ok_json(
        call(
            app,
            Method::PUT,
            "/api/v1/roles/support",
            &manager,
            Some(json!({"scopes": ["tickets:read", "read:users"]})),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(
        v["scopes"],
        json!(["read:users", "tickets:read"]),
        "held scopes may be granted"
    );
    let v = ok_json(
        call(
            app,
            Method::POST,
            "/api/v1/users/nobody/roles",
            &admin,
            Some(json!({"roles": ["ghost"]})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(v["code"], "unknown_role");
    // A new secret, or the end, of a client holding more than the caller: refused.
    let admin_id = token_part(&admin, 1)["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let rotator = mgmt_token(app, "update:clients delete:clients").await;
    for (method, path) in [
        (
            Method::POST,
            format!("/api/v1/clients/{admin_id}/rotate-secret"),
        ),
        (Method::DELETE, format!("/api/v1/clients/{admin_id}")),
    ] {
        let v = ok_json(
            call(app, method, &path, &rotator, None).await,
            StatusCode::FORBIDDEN,
        )
        .await;
        assert_eq!(v["code"], "escalation", "{path}");
    }
    for path in ["/api/v1/users/%00", "/api/v1/clients/%00/rotate-secret"] {
        let method = if path.ends_with("secret") {
            Method::POST
        } else {
            Method::GET
        };
        let res = call(app, method, path, &admin, None).await;
        assert_eq!(
            error_code(res, StatusCode::NOT_FOUND).await,
            "not_found",
            "{path}"
        );
    }

    // Taking a role ends the user's sessions.
    ok_json(
        call(
            app,
            Method::DELETE,
            &format!("/api/v1/users/{id}/roles"),
            &admin,
            Some(json!({"roles": ["paid"]})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    eventually("a token of a role taken away is refused", async || {
        app.private(&token).await.status() == StatusCode::UNAUTHORIZED
    })
    .await;

    // Users: create, page, patch (block, email), delete.
    for n in ["bob", "carol", "dave"] {
        let v = ok_json(
            call(app, Method::POST, "/api/v1/users", &admin, Some(json!({"username": n, "password": PASSWORD, "email": format!("{n}@example.com"), "email_verified": true}))).await,
            StatusCode::CREATED,
        )
        .await;
        assert_eq!(v["email_verified"], true);
        assert!(v.get("password").is_none() && v.get("password_hash").is_none());
    }
    let first = ok_json(
        call(app, Method::GET, "/api/v1/users?limit=2", &admin, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(first["users"].as_array().unwrap().len(), 2);
    let next = first["next"].as_str().unwrap();
    let second = ok_json(
        call(
            app,
            Method::GET,
            &format!("/api/v1/users?limit=2&cursor={next}"),
            &admin,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(second["users"].as_array().unwrap().len(), 2);
    assert!(second["next"].is_null());
    let by_prefix = ok_json(
        call(app, Method::GET, "/api/v1/users?q=CA", &admin, None).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(by_prefix["users"][0]["username"], "carol");
    let dup = call(
        app,
        Method::POST,
        "/api/v1/users",
        &admin,
        Some(json!({"username": "Bob", "password": PASSWORD})),
    )
    .await;
    assert_eq!(
        error_code(dup, StatusCode::CONFLICT).await,
        "username_taken"
    );
    let bob_id = first["users"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["users"].as_array().unwrap())
        .find(|u| u["username"] == "bob")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let v = ok_json(
        call(app, Method::PATCH, &format!("/api/v1/users/{bob_id}"), &admin, Some(json!({"blocked": true, "email": "bob@new.example", "app_metadata": {"plan": "pro"}}))).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        (v["blocked"].clone(), v["email_verified"].clone()),
        (json!(true), json!(false))
    );
    assert_eq!(v["app_metadata"]["plan"], "pro");
    let res = app.login("bob", PASSWORD).await;
    assert_eq!(error_code(res, StatusCode::FORBIDDEN).await, "user_blocked");
    let v = ok_json(
        call(
            app,
            Method::PATCH,
            &format!("/api/v1/users/{bob_id}"),
            &admin,
            Some(json!({"blocked": false, "password": "a new password 42"})),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(v["blocked"], false);
    eventually("bob logs in with the new password", async || {
        app.login("bob", "a new password 42").await.status() == StatusCode::OK
    })
    .await;
    for (body, code) in [
        (json!({"blocked": "yes"}), "invalid_request"),
        (json!({"nickname": "b"}), "invalid_request"),
        (json!({"email": "not an email"}), "invalid_request"),
        (json!({"password": "short"}), "weak_password"),
        (json!({"email": "carol@example.com"}), "email_taken"),
    ] {
        let res = call(
            app,
            Method::PATCH,
            &format!("/api/v1/users/{bob_id}"),
            &admin,
            Some(body.clone()),
        )
        .await;
        let got = res.status();
        let v: Value = res.json().await.unwrap();
        assert!(got.is_client_error(), "{body}: {got}");
        assert_eq!(v["code"], code, "{body}");
    }
    for q in [
        "limit=0",
        "limit=x",
        "sort=name",
        "q=a&q=b",
        "cursor=nobody",
    ] {
        let res = call(
            app,
            Method::GET,
            &format!("/api/v1/users?{q}"),
            &admin,
            None,
        )
        .await;
        assert_eq!(
            error_code(res, StatusCode::BAD_REQUEST).await,
            "invalid_query",
            "{q}"
        );
    }
    let res = call(
        app,
        Method::DELETE,
        &format!("/api/v1/users/{bob_id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = call(
        app,
        Method::GET,
        &format!("/api/v1/users/{bob_id}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(error_code(res, StatusCode::NOT_FOUND).await, "not_found");
    assert_eq!(
        app.login("bob", "a new password 42").await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Clients: created with the secret shown once, rotated, deleted.
    let res = call(
        app,
        Method::POST,
        "/api/v1/clients",
        &admin,
        Some(json!({"name": "webhook", "scopes": ["read:users", "update:users"]})),
    )
    .await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let c = ok_json(res, StatusCode::CREATED).await;
    let cid = c["client_id"].as_str().unwrap().to_string();
    assert!(c["client_secret"].as_str().unwrap().starts_with("jgs_"));
    assert_eq!(
        c["audiences"][0],
        format!("{}/api/v1/", app.settings.policy().unwrap().issuer)
    );
    let listed = ok_json(
        call(app, Method::GET, "/api/v1/clients", &admin, None).await,
        StatusCode::OK,
    )
    .await;
    assert!(!listed.to_string().contains("secret\""), "{listed}");
    let r = ok_json(
        call(
            app,
            Method::POST,
            &format!("/api/v1/clients/{cid}/rotate-secret"),
            &admin,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_ne!(r["client_secret"], c["client_secret"]);
    let res = call(
        app,
        Method::DELETE,
        &format!("/api/v1/clients/{cid}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = call(
        app,
        Method::DELETE,
        &format!("/api/v1/clients/{cid}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(error_code(res, StatusCode::NOT_FOUND).await, "not_found");
    let res = call(app, Method::DELETE, "/api/v1/roles/paid", &admin, None).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);

    // The audit log: who did what, newest first, by type and by user; read:audit only.
    let admin_id = token_part(&admin, 1)["client_id"]
        .as_str()
        .unwrap()
        .to_string();
    let log = ok_json(
        call(app, Method::GET, "/api/v1/audit?limit=1000", &admin, None).await,
        StatusCode::OK,
    )
    .await;
    let events = log["events"].as_array().unwrap();
    let has = |kind: &str, user: Option<&str>, actor: Option<&str>| {
        events.iter().any(|e| {
            e["type"] == kind
                && user.is_none_or(|u| e["user"] == u)
                && actor.is_none_or(|a| e["actor"] == a)
        })
    };
    assert!(has("signup", Some(&id), None), "{log}");
    assert!(has("login.succeeded", Some(&id), None), "{log}");
    assert!(has("role.changed", None, Some(&admin_id)), "{log}");
    assert!(
        has("user.roles_changed", Some(&id), Some(&admin_id)),
        "{log}"
    );
    assert!(has("user.deleted", Some(&bob_id), Some(&admin_id)), "{log}");
    assert!(has("login.blocked", Some(&bob_id), None), "{log}");
    assert!(has("client.token_issued", Some(&admin_id), None), "{log}");
    assert!(has("client.created", Some(&cid), Some(&admin_id)), "{log}");
    assert!(has("role.deleted", None, Some(&admin_id)), "{log}");
    let times: Vec<i64> = events
        .iter()
        .map(|e| e["at_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let logins = ok_json(
        call(
            app,
            Method::GET,
            &format!("/api/v1/audit?type=login.succeeded&user={id}"),
            &admin,
            None,
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let only = logins["events"].as_array().unwrap();
    assert!(
        !only.is_empty()
            && only
                .iter()
                .all(|e| e["type"] == "login.succeeded" && e["user"] == id.as_str())
    );
    let res = call(app, Method::GET, "/api/v1/audit", &reader, None).await;
    assert_eq!(
        error_code(res, StatusCode::FORBIDDEN).await,
        "insufficient_scope"
    );
    let res = call(
        app,
        Method::GET,
        "/api/v1/audit?since=yesterday",
        &admin,
        None,
    )
    .await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_query"
    );
    let out = jotgate::admin::audit_tail(
        &app.settings,
        3600,
        Some("role.changed".into()),
        None,
        10,
        false,
    )
    .await
    .unwrap();
    assert!(
        out.contains("role.changed") && out.contains(&admin_id),
        "{out}"
    );
    let res = call(app, Method::GET, "/api/v1/roles/paid", &admin, None).await;
    assert_eq!(error_code(res, StatusCode::NOT_FOUND).await, "not_found");
}

fn quick(dir: &std::path::Path) -> jotgate::settings::Settings {
    let mut s = settings(dir);
    s.sessions.sync_interval = Some(1);
    s
}

#[tokio::test]
async fn management_api_on_sqlite() {
    let dir = temp_dir();
    scenario(&TestApp::with(quick(&dir), dir).await).await;
}

#[tokio::test]
async fn management_api_on_postgres() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let dir = temp_dir();
    let mut s = quick(&dir);
    s.store.store = Some(url.into());
    scenario(&TestApp::with(s, dir).await).await;
}

#[cfg(feature = "dynamodb")]
#[tokio::test]
async fn management_api_on_dynamodb() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let dir = temp_dir();
    let mut s = quick(&dir);
    s.store.store = Some(url.into());
    scenario(&TestApp::with(s, dir).await).await;
}

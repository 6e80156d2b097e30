//! Route-policy bypasses (issue 16, items 1–6, 9, 21): path spellings against the gateway,
//! the authorizer and `RequireAuth`; method and URL overrides; forged identity and
//! forwarding headers; refused tokens on public routes; request framing; authorizer events
//! whose path and ARN disagree; duplicate Authorization headers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use jotgate_verify::authorizer::{Authorizer, V2Format};
use jotgate_verify::layer::RequireAuth;
use jotgate_verify::policy::PolicyFile;
use jotgate_verify::{Principal, Verifier};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{TestApp, client, error_code};
use crate::edge::{FakeIssuer, Mode, quick};
use crate::gateway::{Upstream, gateway, serve};

/// `/public/*` open, `/admin/*` for role admin, `/orders/*` POST needs orders:write,
/// everything else needs a valid token.
fn policy(issuer: &str, extra: &str) -> String {
    format!(
        r#"
[[issuer]]
issuer = "{issuer}"
audiences = ["api"]

[[route]]
path = "/public/*"
access = "public"

[[route]]
path = "/admin/*"
roles_any = ["admin"]

[[route]]
path = "/orders/*"
methods = ["POST"]
scopes_all = ["orders:write"]
{extra}
"#
    )
}

/// Spellings of `/admin/users` (or of a way into it) that some server reads as that
/// path. None may reach an upstream with a token that lacks the admin role, or none.
const SPELLINGS: &[&str] = &[
    "/%61dmin/users",
    "/%41DMIN/users",
    "/a%64%6d%69%6e/users",
    "/admin;x=1/users",
    "/admin;/users",
    "/admin;jsessionid=1/users",
    "/admin%3bx/users",
    "/admin/users;.css",
    "/public/..;/admin/users",
    "/public/..%3b/admin/users",
    "/public/%2e%2e;/admin/users",
    "/public/../admin/users",
    "/public/%2e%2e/admin/users",
    "/public/%2E%2E/admin/users",
    "/public/.%2e/admin/users",
    "/public/%2e./admin/users",
    "/public/..%2fadmin/users",
    "/public%2f..%2fadmin/users",
    "/public/..%5cadmin/users",
    "/public/..%00/admin/users",
    "/public//../admin/users",
    "/public/%252e%252e/admin/users",
    "/%2561dmin/users",
    "/%2fadmin/users",
    "//admin/users",
    "/./admin/users",
    "/admin/./users",
    "/admin./users",
    "/admin../users",
    "/admin%2e/users",
    "/admin%20/users",
    "/admin%09/users",
    "/%20admin/users",
    "/admin%0a/users",
    "/admin%0d/users",
    "/admin%00/users",
    "/admin%7f/users",
    "/admin%C2%A0/users",
    "/admin%E3%80%80/users",
    "/admin%ff/users",
    "/admin%c0%ae/users",
    "/%EF%BD%81dmin/users",
    "/%E2%84%AAdmin/users",
    "/ADMIN/users",
    "/Admin/users",
    "/admin",
    "/admin/",
    "/admin.json",
    "/(S(x))/admin/users",
    "/(A(x))/admin/users",
    "/adm%C4%B1n/users",
    "/ADM%C4%B0N/users",
    "/admin::$INDEX_ALLOCATION/users",
    "/admin:$DATA/users",
    "/ADMINI~1/users",
];

/// Send `request` (the whole head) as written; the whole response as text.
async fn raw(base: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(request.replace("{HOST}", addr).as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn get(path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: {{HOST}}\r\n{auth}Connection: close\r\n\r\n")
}

fn status(response: &str) -> u16 {
    response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The upstream's echo of a forwarded request (its JSON body).
fn echo(response: &str) -> Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or("");
    // The echo answers with a Content-Length body; a chunked one would not parse.
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not an echo: {response}"))
}

#[tokio::test]
async fn path_spellings_cannot_dodge_the_gateway_policy() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy(&fake.base, "")).await;
    let t = fake.token();
    for p in SPELLINGS {
        for token in [Some(t.as_str()), None] {
            let res = raw(&gw, &get(p, token)).await;
            let s = status(&res);
            assert!(
                matches!(s, 400 | 401 | 403),
                "{p} (token: {}): {res}",
                token.is_some()
            );
        }
    }
    assert_eq!(up.hits(), 0, "no spelling reached the upstream");
    // What is forwarded is the canonical path the policy decided on.
    for (sent, forwarded) in [
        ("/orders/%37", "/orders/7"),
        ("/%6Frders/7?q=%61", "/orders/7?q=%61"),
        ("/orders/caf%c3%a9", "/orders/caf%C3%A9"),
        ("/orders/a%2Bb", "/orders/a+b"),
        ("/orders/a%3Fb", "/orders/a%3Fb"),
    ] {
        let res = raw(&gw, &get(sent, Some(&t))).await;
        assert_eq!(status(&res), 200, "{sent}: {res}");
        assert_eq!(echo(&res)["uri"], forwarded, "{sent}");
    }
}

#[tokio::test]
async fn path_spellings_cannot_dodge_require_auth() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let file = PolicyFile::parse(&policy(&fake.base, ""), std::path::Path::new(".")).unwrap();
    let v = Verifier::new(quick(file.verifier.issuers.clone())).unwrap();
    let _bg = v.start().await;
    let reached = Arc::new(AtomicUsize::new(0));
    let r = reached.clone();
    let app = Router::new()
        .fallback(move |p: Option<axum::Extension<Arc<Principal>>>| {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                p.map_or("anonymous".to_string(), |p| p.subject.clone())
            }
        })
        .layer(RequireAuth::policy(v, file.policy));
    let base = serve(app).await;
    let t = fake.token();
    for p in SPELLINGS {
        for token in [Some(t.as_str()), None] {
            let res = raw(&base, &get(p, token)).await;
            assert!(
                matches!(status(&res), 400 | 401 | 403),
                "{p} (token: {}): {res}",
                token.is_some()
            );
        }
    }
    assert_eq!(reached.load(Ordering::SeqCst), 0);
    // The layer passes requests on as they came: a non-canonical spelling is refused
    // even where the rule would allow it.
    assert_eq!(
        status(&raw(&base, &get("/orders/%37", Some(&t))).await),
        400
    );
    assert_eq!(status(&raw(&base, &get("/orders/7", Some(&t))).await), 200);
}

/// A REST REQUEST event for `method path`, as API Gateway sends it for stage `prod`.
fn rest_event(method: &str, path: &str, arn_path: &str, token: &str) -> Value {
    json!({
        "type": "REQUEST",
        "methodArn": format!("arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/{method}{arn_path}"),
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Authorization": format!("Bearer {token}")},
        "multiValueHeaders": {"Authorization": [format!("Bearer {token}")]},
        "requestContext": {"stage": "prod", "httpMethod": method, "path": format!("/prod{path}")},
    })
}

/// An HTTP API 2.0 event on stage `stage` for the route `route_key` ("GET /orders/{id}").
fn v2_event(method: &str, raw_path: &str, stage: &str, route: &str, token: &str) -> Value {
    json!({
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": format!("arn:aws:execute-api:us-east-1:123456789012:abcdef123/{stage}/{route}"),
        "identitySource": [format!("Bearer {token}")],
        "rawPath": raw_path,
        "rawQueryString": "",
        "headers": {"authorization": format!("Bearer {token}")},
        "requestContext": {"stage": stage, "http": {"method": method, "path": raw_path}},
    })
}

async fn authorizer(fake: &FakeIssuer, extra: &str) -> (Authorizer, jotgate_verify::Background) {
    let file = PolicyFile::parse(&policy(&fake.base, extra), std::path::Path::new(".")).unwrap();
    let v = Verifier::new(quick(file.verifier.issuers.clone())).unwrap();
    let bg = v.start().await;
    (
        Authorizer::with_options(v, file.policy, V2Format::Simple, file.authorizer),
        bg,
    )
}

/// Allowed: an IAM Allow or a simple `isAuthorized: true`. Errors (Unauthorized) are not.
async fn allowed(a: &Authorizer, event: &Value) -> bool {
    match a.handle(event).await {
        Ok(v) => {
            v["isAuthorized"] == true || v["policyDocument"]["Statement"][0]["Effect"] == "Allow"
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn path_spellings_cannot_dodge_the_authorizer() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let (a, _bg) = authorizer(&fake, "").await;
    let t = fake.token();
    for p in SPELLINGS {
        for token in [t.as_str(), "none"] {
            let rest = rest_event("GET", p, p, token);
            assert!(!allowed(&a, &rest).await, "REST {p}");
            let v2 = v2_event("GET", p, "$default", "$default", token);
            assert!(!allowed(&a, &v2).await, "HTTP API {p}");
            let v2 = v2_event("GET", &format!("/prod{p}"), "prod", "ANY/{proxy+}", token);
            assert!(!allowed(&a, &v2).await, "HTTP API on a stage {p}");
        }
    }
    // The canonical spellings of allowed routes are allowed.
    assert!(allowed(&a, &rest_event("GET", "/orders/7", "/orders/7", &t)).await);
    assert!(
        allowed(
            &a,
            &v2_event("GET", "/orders/7", "$default", "$default", &t)
        )
        .await
    );
    assert!(
        allowed(
            &a,
            &v2_event("GET", "/prod/orders/7", "prod", "GET/orders/{id}", &t)
        )
        .await
    );
}

#[tokio::test]
async fn the_authorizer_decides_on_what_its_answer_allows() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let (a, _bg) = authorizer(&fake, "").await;
    let t = fake.token();
    // A custom domain with base path v1: path /v1/admin/x, method ARN …/GET/admin/x.
    // The decision is on the ARN (admin: refused); unconfigured, the paths disagree.
    assert!(!allowed(&a, &rest_event("GET", "/v1/admin/x", "/admin/x", &t)).await);
    assert!(!allowed(&a, &rest_event("GET", "/v1/orders/7", "/orders/7", &t)).await);
    // HTTP API payload 1.0 on a named stage: path /prod/admin/x.
    assert!(!allowed(&a, &rest_event("GET", "/prod/admin/x", "/admin/x", &t)).await);
    assert!(allowed(&a, &rest_event("GET", "/prod/orders/7", "/orders/7", &t)).await);
    // Path or method disagreeing with the ARN.
    assert!(!allowed(&a, &rest_event("GET", "/admin/x", "/orders/7", &t)).await);
    let mut e = rest_event("GET", "/orders/7", "/orders/7", &t);
    e["httpMethod"] = "DELETE".into();
    assert!(!allowed(&a, &e).await);
    // A wildcard resource is never allowed.
    assert!(!allowed(&a, &rest_event("GET", "/orders/*", "/orders/*", &t)).await);
    let mut e = rest_event("GET", "/orders/7", "/orders/7", &t);
    e["methodArn"] = "arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/*/orders/7".into();
    assert!(!allowed(&a, &e).await);
    // Two Authorization values, in multiValueHeaders or as two spellings of the name.
    let mut e = rest_event("GET", "/orders/7", "/orders/7", &t);
    e["multiValueHeaders"]["Authorization"] = json!([format!("Bearer {t}"), "Bearer junk"]);
    assert!(!allowed(&a, &e).await);
    let mut e = rest_event("GET", "/orders/7", "/orders/7", &t);
    e["headers"]["authorization"] = "Bearer junk".into();
    assert!(!allowed(&a, &e).await);
    // Method and URL overrides cannot be stripped here: refused, in every spelling.
    for h in [
        "X-HTTP-Method-Override",
        "X_HTTP_METHOD_OVERRIDE",
        "X-Original-URI",
        "SCRIPT_NAME",
    ] {
        let mut e = rest_event("POST", "/orders/7", "/orders/7", &t);
        e["headers"][h] = "DELETE".into();
        assert!(!allowed(&a, &e).await, "{h}");
    }
    let mut e = rest_event("POST", "/orders/7", "/orders/7", &t);
    e["queryStringParameters"] = json!({"_method": "DELETE"});
    assert!(!allowed(&a, &e).await);
    let mut e = v2_event("POST", "/orders/7", "$default", "$default", &t);
    e["rawQueryString"] = "a=1&_%6Dethod=DELETE".into();
    assert!(!allowed(&a, &e).await);
    // HTTP API joins duplicate headers with a comma.
    let mut e = v2_event("GET", "/orders/7", "$default", "$default", &t);
    e["headers"]["authorization"] = format!("Bearer {t},Bearer junk").into();
    assert!(!allowed(&a, &e).await);
    // The answer allows exactly the ARN: it must be the path's one spelling.
    assert!(!allowed(&a, &rest_event("GET", "/%6Frders/7", "/%6Frders/7", &t)).await);
    // HTTP API 2.0: the path must be one the route ARN covers, with its method.
    assert!(
        !allowed(
            &a,
            &v2_event("GET", "/prod/admin/x", "prod", "GET/orders/{id}", &t)
        )
        .await
    );
    assert!(
        !allowed(
            &a,
            &v2_event("DELETE", "/prod/orders/7", "prod", "GET/orders/{id}", &t)
        )
        .await
    );
    assert!(
        !allowed(
            &a,
            &v2_event("GET", "/prod/admin/x", "prod", "GET/{proxy+}", &t)
        )
        .await,
        "decided on the path: admin"
    );

    // With the base path configured, the custom domain's requests agree and are decided
    // on the ARN's path.
    let (a, _bg2) = authorizer(&fake, "\n[authorizer]\nbase_paths = [\"/v1\"]\n").await;
    assert!(allowed(&a, &rest_event("GET", "/v1/orders/7", "/orders/7", &t)).await);
    assert!(!allowed(&a, &rest_event("GET", "/v1/admin/x", "/admin/x", &t)).await);
    assert!(
        allowed(
            &a,
            &v2_event("GET", "/v1/orders/7", "$default", "GET/orders/{id}", &t)
        )
        .await
    );
    // A catch-all route under a base path: decided without the base path (admin).
    for route in ["$default", "ANY/{proxy+}"] {
        assert!(
            !allowed(&a, &v2_event("GET", "/v1/admin/x", "$default", route, &t)).await,
            "{route}"
        );
    }
}

#[tokio::test]
async fn the_gateway_strips_or_refuses_method_and_url_overrides() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy(&fake.base, "")).await;
    let mut c = fake.claims();
    c.scope = "orders:write".into();
    let writer = fake.token_with(&fake.key, &c);
    let res = client()
        .post(format!("{gw}/orders/1"))
        .bearer_auth(&writer)
        .header("X-HTTP-Method-Override", "DELETE")
        .header("X-HTTP-Method", "DELETE")
        .header("X-Method-Override", "DELETE")
        .header("X_HTTP_Method_Override", "DELETE")
        .header("X-Original-URL", "/admin/users")
        .header("X-Rewrite-URL", "/admin/users")
        .header("X-Forwarded-Prefix", "/admin")
        .header("SCRIPT_NAME", "/orders")
        .header("X-Script-Name", "/orders")
        .header("PATH_INFO", "/admin/users")
        .header("X-Forwarded-Uri", "/admin/users")
        .header("X-Envoy-Original-Path", "/admin/users")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let e: Value = res.json().await.unwrap();
    for h in [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
        "x_http_method_override",
        "x-original-url",
        "x-rewrite-url",
        "x-forwarded-prefix",
        "script_name",
        "x-script-name",
        "path_info",
        "x-forwarded-uri",
        "x-envoy-original-path",
    ] {
        assert!(e["headers"].get(h).is_none(), "{h} reached the upstream");
    }
    for q in [
        "_method=DELETE",
        "a=1&_METHOD=DELETE",
        "%5Fmethod=DELETE",
        "_%6Dethod=DELETE",
        ".method=DELETE",
        "x=1;_method=DELETE",
    ] {
        let res = client()
            .post(format!("{gw}/orders/1?{q}"))
            .bearer_auth(&writer)
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(res, StatusCode::BAD_REQUEST).await,
            "invalid_request",
            "{q}"
        );
    }
    let gw2 = gateway(
        &up,
        &policy(
            &fake.base,
            "\n[gateway]\noverride_headers = \"refuse\"\nallow_method_param = true\n",
        ),
    )
    .await;
    let res = client()
        .post(format!("{gw2}/orders/1"))
        .bearer_auth(&writer)
        .header("X-HTTP-Method-Override", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
    let res = client()
        .post(format!("{gw2}/orders/1?_method=PUT"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "allowed by the setting");
}

#[tokio::test]
async fn the_gateway_sets_identity_and_forwarding_headers_itself() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy(&fake.base, "")).await;
    let t = fake.token();
    let res = raw(
        &gw,
        &format!(
            "GET /orders/7 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer {t}\r\n\
             X-Jotgate_Sub: admin\r\nx_jotgate_roles: admin\r\nX-JOTGATE-ISSUER: evil\r\n\
             Forwarded: for=1.2.3.4\r\nX-Real-IP: 1.2.3.4\r\nTrue-Client-IP: 1.2.3.4\r\n\
             X-Forwarded-For: 1.2.3.4\r\nX_Forwarded_For: 1.2.3.4\r\nX-Forwarded-Host: evil.example\r\n\
             X-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Forwarded-Server: evil\r\n\
             X-Forwarded-User: admin\r\nX-Auth-Request-Email: root@example.com\r\n\
             Remote-User: admin\r\nCF-Connecting-IP: 1.2.3.4\r\nX-Forwarded-Scheme: https\r\n\
             X_Request_Id: forged-1\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status(&res), 200, "{res}");
    let h = &echo(&res)["headers"];
    assert_eq!(h["x-jotgate-sub"], "user-1");
    assert_eq!(h["x-jotgate-roles"], "reader");
    assert_eq!(h["x-jotgate-issuer"], fake.base.as_str());
    for k in [
        "x-jotgate_sub",
        "x_jotgate_roles",
        "forwarded",
        "x-real-ip",
        "true-client-ip",
        "x_forwarded_for",
        "x-forwarded-port",
        "x-forwarded-server",
        "x-forwarded-user",
        "x-auth-request-email",
        "remote-user",
        "cf-connecting-ip",
        "x-forwarded-scheme",
        "x_request_id",
    ] {
        assert!(h.get(k).is_none(), "{k} reached the upstream: {h}");
    }
    let id = h["x-request-id"].as_str().unwrap_or_default();
    assert!(
        !id.is_empty() && id != "forged-1",
        "the gateway's own id: {h}"
    );
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "replaced: the peer is not trusted"
    );
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(h["x-forwarded-proto"], "http");

    // Behind a trusted proxy its chain is appended to and its proto and host kept.
    let gw2 = gateway(
        &up,
        &policy(
            &fake.base,
            "\n[gateway]\ntrusted_proxies = [\"127.0.0.0/8\"]\n",
        ),
    )
    .await;
    let res = client()
        .get(format!("{gw2}/orders/7"))
        .bearer_auth(&t)
        .header("X-Forwarded-For", "203.0.113.9")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "api.example.com")
        .send()
        .await
        .unwrap();
    let e: Value = res.json().await.unwrap();
    assert_eq!(e["headers"]["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(e["headers"]["x-forwarded-proto"], "https");
    assert_eq!(e["headers"]["x-forwarded-host"], "api.example.com");
}

#[tokio::test]
async fn a_refused_token_on_a_public_route_is_not_forwarded() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy(&fake.base, "")).await;
    let forged = {
        let t = fake.token();
        let mut p: Vec<&str> = t.split('.').collect();
        let claims = crate::common::token_part(&t, 1);
        let mut c = claims.clone();
        c["roles"] = json!(["admin"]);
        let enc = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            serde_json::to_vec(&c).unwrap(),
        );
        p[1] = &enc;
        p.join(".")
    };
    let res = client()
        .get(format!("{gw}/public/page"))
        .bearer_auth(&forged)
        .header("x-access-token", &forged)
        .header("x_access_token", &forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let e: Value = res.json().await.unwrap();
    let h = &e["headers"];
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(h.get("x-access-token").is_none(), "{h}");
    assert!(h.get("x_access_token").is_none(), "{h}");
    assert_eq!(h["x-jotgate-verified"], "false");
    assert!(h.get("x-jotgate-sub").is_none());
    // Other spellings and schemes nobody verified are not forwarded either.
    for value in [
        format!("Bearer\t{forged}"),
        format!("JWT {forged}"),
        forged.clone(),
    ] {
        let res = client()
            .get(format!("{gw}/public/page"))
            .header("authorization", value.as_str())
            .send()
            .await
            .unwrap();
        let e: Value = res.json().await.unwrap();
        assert!(e["headers"].get("authorization").is_none(), "{value:.12}");
        assert_eq!(e["headers"]["x-jotgate-verified"], "false");
    }
    // A valid token on a public route is forwarded with its identity.
    let res = client()
        .get(format!("{gw}/public/page"))
        .bearer_auth(fake.token())
        .send()
        .await
        .unwrap();
    let e: Value = res.json().await.unwrap();
    assert!(e["headers"]["authorization"].is_string());
    assert_eq!(e["headers"]["x-jotgate-sub"], "user-1");
    assert!(e["headers"].get("x-jotgate-verified").is_none());

    // RequireAuth removes it too before the handler sees the request.
    let file = PolicyFile::parse(&policy(&fake.base, ""), std::path::Path::new(".")).unwrap();
    let v = Verifier::new(quick(file.verifier.issuers.clone())).unwrap();
    let _bg = v.start().await;
    let app = Router::new()
        .fallback(|h: axum::http::HeaderMap| async move {
            format!("{}", h.contains_key("authorization"))
        })
        .layer(RequireAuth::policy(v, file.policy));
    let base = serve(app).await;
    let res = client()
        .get(format!("{base}/public/page"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), "false");
}

#[tokio::test]
async fn the_gateway_refuses_framing_an_upstream_could_read_differently() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy(&fake.base, "")).await;
    let t = fake.token();
    let auth = format!("Authorization: Bearer {t}\r\n");
    for (name, req, want) in [
        (
            "Connection naming Authorization",
            format!(
                "GET /orders/7 HTTP/1.1\r\nHost: {{HOST}}\r\n{auth}Connection: close, Authorization\r\n\r\n"
            ),
            400,
        ),
        (
            "Connection naming x-request-id (which the gateway sets for the upstream)",
            format!(
                "GET /orders/7 HTTP/1.1\r\nHost: {{HOST}}\r\n{auth}Connection: close, X-Request-Id\r\n\r\n"
            ),
            400,
        ),
        (
            "Connection naming X-Forwarded-For",
            format!(
                "GET /orders/7 HTTP/1.1\r\nHost: {{HOST}}\r\n{auth}Connection: close, x_forwarded_for\r\n\r\n"
            ),
            400,
        ),
        (
            "two Host headers",
            format!(
                "GET /orders/7 HTTP/1.1\r\nHost: {{HOST}}\r\nHost: evil.example\r\n{auth}Connection: close\r\n\r\n"
            ),
            400,
        ),
        (
            "Host with userinfo",
            format!(
                "GET /orders/7 HTTP/1.1\r\nHost: user@evil.example\r\n{auth}Connection: close\r\n\r\n"
            ),
            400,
        ),
        (
            "Host with a path",
            format!(
                "GET /orders/7 HTTP/1.1\r\nHost: evil.example/x\r\n{auth}Connection: close\r\n\r\n"
            ),
            400,
        ),
        (
            "HTTP/1.1 without Host",
            format!("GET /orders/7 HTTP/1.1\r\n{auth}Connection: close\r\n\r\n"),
            400,
        ),
        (
            "absolute form without Host",
            format!("GET http://evil.example/orders/7 HTTP/1.1\r\n{auth}Connection: close\r\n\r\n"),
            400,
        ),
        (
            "absolute form with userinfo",
            format!(
                "GET http://u@evil.example/orders/7 HTTP/1.1\r\nHost: evil.example\r\n{auth}Connection: close\r\n\r\n"
            ),
            400,
        ),
        (
            "CONNECT",
            format!(
                "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n{auth}Connection: close\r\n\r\n"
            ),
            501,
        ),
        (
            "TRACE",
            format!(
                "TRACE /orders/7 HTTP/1.1\r\nHost: {{HOST}}\r\n{auth}Connection: close\r\n\r\n"
            ),
            405,
        ),
        (
            "gzip, chunked",
            format!(
                "POST /orders/7 HTTP/1.1\r\nHost: {{HOST}}\r\n{auth}Transfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n0\r\n\r\n"
            ),
            501,
        ),
    ] {
        let res = raw(&gw, &req).await;
        let s = status(&res);
        assert!(s == want || (s == 400 && want != 400), "{name}: {res}");
    }
    assert_eq!(up.hits(), 0, "nothing reached the upstream");
    // HTTP/1.0 without Host: a client's X-Forwarded-Host never passes.
    let res = raw(
        &gw,
        &format!(
            "GET /orders/7 HTTP/1.0\r\n{auth}X-Forwarded-Host: evil.example\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status(&res), 200, "{res}");
    assert!(echo(&res)["headers"].get("x-forwarded-host").is_none());
}

#[tokio::test]
async fn two_authorization_headers_are_refused_everywhere() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy(&fake.base, "")).await;
    let t = fake.token();
    for path in ["/orders/7", "/public/page"] {
        let res = client()
            .get(format!("{gw}{path}"))
            .header("authorization", format!("Bearer {t}"))
            .header("authorization", "Bearer junk")
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(res, StatusCode::BAD_REQUEST).await,
            "invalid_request",
            "{path}"
        );
    }
    assert_eq!(up.hits(), 0);

    let app = TestApp::start().await;
    let ann = app.signup("ann").await;
    let token = ann["token"].as_str().unwrap().to_string();
    // Even where the refresh token alone would do.
    let res = client()
        .post(app.url("/logout"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer junk")
        .json(&json!({"refresh_token": ann["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
    let res = client()
        .get(app.url("/private"))
        .header("authorization", format!("Bearer {token}"))
        .header("authorization", "Bearer junk")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_request"
    );
}

#[tokio::test]
async fn logout_refuses_an_access_token_and_a_refresh_token_of_different_sessions() {
    let app = TestApp::start().await;
    let ann = app.signup("ann").await;
    let bob = app.signup("bob").await;
    let res = client()
        .post(app.url("/logout"))
        .bearer_auth(ann["token"].as_str().unwrap())
        .json(&json!({"refresh_token": bob["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "token_mismatch"
    );
    // Both sessions are alive.
    for who in [&ann, &bob] {
        let res = app.private(who["token"].as_str().unwrap()).await;
        assert_eq!(res.status(), StatusCode::OK);
        let res = app
            .post("/refresh", json!({"refresh_token": who["refresh_token"]}))
            .await;
        assert_eq!(res.status(), StatusCode::OK);
    }
    // The matching pair logs out.
    let res = client()
        .post(app.url("/logout"))
        .bearer_auth(ann["token"].as_str().unwrap())
        .json(&json!({"refresh_token": ann["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

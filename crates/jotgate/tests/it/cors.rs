//! CORS in a real browser: headless Chromium (Debian's `chromium`, driven by npm's
//! `playwright-core`) loads a page from an allowed origin, which signs up, logs in and calls
//! `/private` across origins; a page from another origin is refused by the browser, and
//! its sign-up never reaches the store. `scripts/test.sh` installs both;
//! `JOTGATE_SKIP_BROWSER=1` skips.

use std::net::SocketAddr;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::common::{TestApp, settings, temp_dir};

const PAGE: &str = include_str!("../browser/page.html");

/// A server answering every GET with the test page, on its own port (its own origin).
async fn page_server() -> SocketAddr {
    let app = axum::Router::new().fallback(|| async { axum::response::Html(PAGE) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn browser_dir() -> Option<std::path::PathBuf> {
    if std::env::var("JOTGATE_SKIP_BROWSER").as_deref() == Ok("1") {
        return None;
    }
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser"));
    assert!(
        dir.join("node_modules/playwright-core").exists()
            && std::path::Path::new(&chromium()).exists(),
        "Chromium or playwright-core is missing: run scripts/test.sh (apt-get install \
         chromium; npm ci in {}), or set JOTGATE_SKIP_BROWSER=1",
        dir.display()
    );
    Some(dir.to_path_buf())
}

fn chromium() -> String {
    std::env::var("JOTGATE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into())
}

#[tokio::test]
async fn a_page_on_an_allowed_origin_signs_in_and_others_are_refused() {
    let Some(dir) = browser_dir() else { return };
    let allowed = page_server().await;
    let other = page_server().await;
    let data = temp_dir();
    let mut s = settings(&data);
    s.api.cors_origins = Some(format!("http://{allowed}"));
    let app = TestApp::with(s, data).await;

    let page = |at: SocketAddr, user: &str| format!("http://{at}/?api={}&user={user}", app.base);
    let (good, bad) = (page(allowed, "alice"), page(other, "mallory"));
    let out = tokio::process::Command::new("node")
        .current_dir(&dir)
        .args(["cors.mjs", &chromium(), &good, &bad])
        .output()
        .await
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ok = &results[&good];
    assert_eq!(ok["signup"], 201, "{results}");
    assert_eq!(ok["login"], 200, "{results}");
    assert_eq!(ok["private"], 200, "{results}");
    assert_eq!(ok["message"], "Hello alice");
    assert_eq!(
        ok["request_id"], true,
        "x-request-id is exposed to the page"
    );
    let refused = &results[&bad];
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("Failed to fetch"),
        "{results}"
    );
    assert!(refused.get("signup").is_none(), "{results}");
    // The preflight was refused, so the sign-up never ran.
    let store = app.store().await;
    assert!(store.user_by_key("mallory").await.unwrap().is_none());
    assert!(store.user_by_key("alice").await.unwrap().is_some());
}

/// The protocol as the Fetch standard has it, checked header by header (what the browser
/// test relies on), and the setting's checks.
#[tokio::test]
async fn preflights_and_answers_carry_the_cors_headers_for_allowed_origins_only() {
    let data = temp_dir();
    let mut s = settings(&data);
    s.api.cors_origins = Some("https://app.example.com, http://localhost:3000".into());
    let app = TestApp::with(s, data).await;
    let pre = |origin: &'static str| {
        app.client
            .request(Method::OPTIONS, app.url("/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type")
            .send()
    };
    let res = pre("https://app.example.com").await.unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert_eq!(h["access-control-max-age"], "600");
    assert!(
        h.get("access-control-allow-credentials").is_none(),
        "credentials are off"
    );
    let res = pre("https://evil.example").await.unwrap();
    assert_eq!(
        crate::common::error_code(res, StatusCode::FORBIDDEN).await,
        "cors_origin_not_allowed"
    );
    // An answer to an allowed origin names it, varies by it and exposes the request id.
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "http://localhost:3000");
    assert!(
        h["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    assert!(h.get_all("vary").iter().any(|v| v == "origin"));
    for origin in [
        Some("https://evil.example"),
        Some("https://app.example.com.evil"),
        None,
    ] {
        let mut req = app.client.get(app.url("/healthz"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        let res = req.send().await.unwrap();
        assert!(
            res.headers().get("access-control-allow-origin").is_none(),
            "{origin:?}"
        );
    }

    // Origins are checked at start-up.
    for bad in [
        "app.example.com",
        "https://app.example.com/",
        "https://app.example.com/x",
        "ftp://a.example",
        "*",
    ] {
        let mut s = settings(&temp_dir());
        s.api.cors_origins = Some(bad.into());
        let e = s.server_config().unwrap_err();
        assert!(
            format!("{e:#}").contains("invalid CORS origin"),
            "{bad}: {e:#}"
        );
    }
    let mut s = settings(&temp_dir());
    s.api.cors_origins = Some("HTTPS://App.Example.com:443".into());
    s.api.cors_credentials = Some(true);
    let cors = s.server_config().unwrap().cors.unwrap();
    assert_eq!(cors.origins, ["https://app.example.com"]);
    assert!(cors.credentials);
}

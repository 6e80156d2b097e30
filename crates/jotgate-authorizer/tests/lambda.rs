//! The authorizer-only binary, driven by a local Lambda Runtime API as Lambda drives a
//! `bootstrap`: the same decisions as `jotgate authorizer`.

#[path = "../../jotgate/tests/support/runtime_api.rs"]
mod runtime_api;

use serde_json::{Value, json};

/// Tokens signed with the fixed test keys of `fuzz/keys` (valid until 2100).
const JWKS: &str = include_str!("../../../fuzz/keys/jwks.json");
const VALID: &str = include_str!("../../../fuzz/keys/valid_tokens.txt");

fn event(token: &str, path: &str) -> Value {
    json!({
        "version": "2.0",
        "type": "REQUEST",
        "routeArn": "arn:aws:execute-api:us-east-1:123456789012:abcdef123/$default/GET/{proxy+}",
        "identitySource": [format!("Bearer {token}")],
        "routeKey": "GET /{proxy+}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"authorization": format!("Bearer {token}")},
        "requestContext": {"stage": "$default", "http": {"method": "GET", "path": path}},
    })
}

#[tokio::test]
async fn the_authorizer_alone_decides_events_from_the_runtime_api() {
    let dir = std::env::temp_dir().join(format!("jotgate-authorizer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[[issuer]]\nissuer = \"https://issuer.fuzz\"\nprofile = \"jotgate\"\naudiences = [\"api\"]\n\
             algorithms = [\"RS256\", \"ES256\"]\njwks = '{}'\n\
             [default]\naccess = \"authenticated\"\n\
             [[route]]\npath = \"/admin/*\"\nroles_any = [\"auditor\"]\n",
            JWKS.replace('\n', "")
        ),
    )
    .unwrap();
    let mut api = runtime_api::RuntimeApi::start().await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jotgate-authorizer"))
        .envs(api.env())
        .env("JOTGATE_POLICY", &policy)
        .env("JOTGATE_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let token = VALID.lines().next().unwrap();

    api.invoke(event(token, "/orders/1"));
    let body = api.outcome().await.result.expect("decided");
    assert_eq!(body["isAuthorized"], true, "{body}");
    assert_eq!(body["context"]["sub"], "user-1");
    // The route wants a role the token lacks; a forged token is refused.
    api.invoke(event(token, "/admin/x"));
    let body = api.outcome().await.result.expect("decided");
    assert_eq!(body["isAuthorized"], false, "{body}");
    assert_eq!(body["context"]["code"], "insufficient_scope");
    api.invoke(event(&format!("{token}x"), "/orders/1"));
    let body = api.outcome().await.result.expect("decided");
    assert_eq!(body["isAuthorized"], false, "{body}");
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn outside_lambda_it_says_what_is_missing() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jotgate-authorizer"))
        .env_remove("AWS_LAMBDA_RUNTIME_API")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not set: AWS_LAMBDA_RUNTIME_API"), "{err}");
}

#[test]
fn a_wrong_format_setting_is_named() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jotgate-authorizer"))
        .env("JOTGATE_AUTHORIZER_FORMAT", "simpel")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("JOTGATE_AUTHORIZER_FORMAT \"simpel\""),
        "{err}"
    );
}

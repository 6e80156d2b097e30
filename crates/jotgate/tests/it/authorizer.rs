//! The API Gateway Lambda authorizer: recorded event shapes (REST TOKEN and REQUEST, HTTP
//! API 2.0) through the handler, then through the real binary driven by a local Lambda
//! Runtime API.

use jotgate_verify::Verifier;
use jotgate_verify::authorizer::{Authorizer, V2Format};
use jotgate_verify::policy::PolicyFile;
use serde_json::{Value, json};

use crate::edge::{FakeIssuer, Mode, quick};
use crate::gateway::policy_for;

#[path = "../support/runtime_api.rs"]
pub mod runtime_api;

/// A recorded event from `tests/fixtures/authorizer/<name>.json` carrying `token`.
pub fn event(name: &str, token: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/authorizer/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text.replace("{{TOKEN}}", token)).unwrap()
}

async fn authorizer(fake: &FakeIssuer, v2: V2Format) -> (Authorizer, jotgate_verify::Background) {
    let file = PolicyFile::parse(&policy_for(&fake.base, ""), std::path::Path::new(".")).unwrap();
    let v = Verifier::new(quick(file.verifier.issuers.clone())).unwrap();
    let bg = v.start().await;
    (Authorizer::new(v, file.policy, v2), bg)
}

fn writer_token(fake: &FakeIssuer) -> String {
    let mut c = fake.claims();
    c.scope = "orders:read orders:write".into();
    fake.token_with(&fake.key, &c)
}

/// API Gateway accepts only strings, numbers and booleans as context values.
fn assert_context_is_flat(ctx: &Value) {
    for (k, v) in ctx.as_object().expect("context is an object") {
        assert!(
            v.is_string() || v.is_number() || v.is_boolean(),
            "context {k} = {v}"
        );
    }
}

#[tokio::test]
async fn rest_token_event_gets_an_iam_policy_for_its_method_arn() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let (auth, _bg) = authorizer(&fake, V2Format::Simple).await;
    let out = auth
        .handle(&event("rest-token", &fake.token()))
        .await
        .unwrap();
    assert_eq!(out["principalId"], "user-1");
    let stmt = &out["policyDocument"]["Statement"][0];
    assert_eq!(out["policyDocument"]["Version"], "2012-10-17");
    assert_eq!(stmt["Effect"], "Allow");
    assert_eq!(stmt["Action"], "execute-api:Invoke");
    assert_eq!(
        stmt["Resource"],
        "arn:aws:execute-api:us-east-1:123456789012:abcdef123/test/GET/orders"
    );
    assert_eq!(out["context"]["sub"], "user-1");
    assert_eq!(out["context"]["username"], "ann");
    assert_eq!(out["context"]["scope"], "orders:read profile");
    assert_eq!(out["context"]["iss"], fake.base.as_str());
    assert_context_is_flat(&out["context"]);
    // No token, or a bad one: the invocation fails with "Unauthorized" (API Gateway: 401).
    let e = auth.handle(&event("rest-token", "")).await.unwrap_err();
    assert_eq!(e.to_string(), "Unauthorized");
    let mut lower = event("rest-token", &fake.token());
    lower["authorizationToken"] = format!("bearer {}", fake.token()).into();
    assert!(
        auth.handle(&lower).await.is_ok(),
        "scheme is case-insensitive"
    );
}

#[tokio::test]
async fn rest_request_event_applies_the_route_policy() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let (auth, _bg) = authorizer(&fake, V2Format::Simple).await;
    // POST /orders/42 needs orders:write: a reader gets an explicit Deny (403).
    let out = auth
        .handle(&event("rest-request", &fake.token()))
        .await
        .unwrap();
    assert_eq!(out["policyDocument"]["Statement"][0]["Effect"], "Deny");
    assert_eq!(out["context"]["code"], "insufficient_scope");
    assert_context_is_flat(&out["context"]);
    let out = auth
        .handle(&event("rest-request", &writer_token(&fake)))
        .await
        .unwrap();
    assert_eq!(out["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_eq!(
        out["policyDocument"]["Statement"][0]["Resource"],
        "arn:aws:execute-api:us-east-1:123456789012:abcdef123/test/POST/orders/42"
    );
    // Public and closed routes, from the method ARN (with which the path must agree).
    let arn = |method: &str, path: &str| {
        format!("arn:aws:execute-api:us-east-1:123456789012:abcdef123/test/{method}{path}")
    };
    let mut health = event("rest-request", "");
    health["path"] = "/health".into();
    health["httpMethod"] = "GET".into();
    health["methodArn"] = arn("GET", "/health").into();
    let out = auth.handle(&health).await.unwrap();
    assert_eq!(out["principalId"], "anonymous");
    assert_eq!(out["policyDocument"]["Statement"][0]["Effect"], "Allow");
    let mut closed = event("rest-request", &writer_token(&fake));
    closed["path"] = "/closed".into();
    closed["methodArn"] = arn("POST", "/closed").into();
    let out = auth.handle(&closed).await.unwrap();
    assert_eq!(out["policyDocument"]["Statement"][0]["Effect"], "Deny");
    // A path that could mean another route is refused.
    let mut sneaky = event("rest-request", &writer_token(&fake));
    sneaky["path"] = "/health/../admin".into();
    sneaky["methodArn"] = arn("POST", "/health/../admin").into();
    let out = auth.handle(&sneaky).await.unwrap();
    assert_eq!(out["policyDocument"]["Statement"][0]["Effect"], "Deny");
    // A path that disagrees with the method ARN is refused, whatever either says.
    let mut mismatch = event("rest-request", &writer_token(&fake));
    mismatch["path"] = "/health".into();
    let out = auth.handle(&mismatch).await.unwrap();
    assert_eq!(out["policyDocument"]["Statement"][0]["Effect"], "Deny");
    assert_eq!(out["context"]["code"], "invalid_request");
}

#[tokio::test]
async fn http_api_v2_events_get_simple_or_iam_responses() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let (simple, _bg1) = authorizer(&fake, V2Format::Simple).await;
    let out = simple
        .handle(&event("http-v2", &fake.token()))
        .await
        .unwrap();
    assert_eq!(out["isAuthorized"], true);
    assert_eq!(out["context"]["sub"], "user-1");
    assert_context_is_flat(&out["context"]);
    let out = simple.handle(&event("http-v2", "")).await.unwrap();
    assert_eq!(
        out,
        json!({"isAuthorized": false, "context": {"code": "token_missing"}})
    );
    // The stage prefix in rawPath does not hide the route: POST /orders/42 needs orders:write.
    let out = simple
        .handle(&event("http-v2-stage", &fake.token()))
        .await
        .unwrap();
    assert_eq!(out["isAuthorized"], false);
    assert_eq!(out["context"]["code"], "insufficient_scope");
    let out = simple
        .handle(&event("http-v2-stage", &writer_token(&fake)))
        .await
        .unwrap();
    assert_eq!(out["isAuthorized"], true);

    let (iam, _bg2) = authorizer(&fake, V2Format::Iam).await;
    let out = iam.handle(&event("http-v2", &fake.token())).await.unwrap();
    assert_eq!(out["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_eq!(
        out["policyDocument"]["Statement"][0]["Resource"],
        "arn:aws:execute-api:us-east-1:123456789012:abcdef123/$default/GET/orders"
    );
    let out = iam.handle(&event("http-v2", "")).await.unwrap();
    assert_eq!(out["policyDocument"]["Statement"][0]["Effect"], "Deny");
    // An event of no known shape is refused, never allowed.
    assert!(simple.handle(&json!({"hello": "world"})).await.is_err());
}

#[tokio::test]
async fn the_binary_serves_authorizer_events_through_the_lambda_runtime_api() {
    let fake = FakeIssuer::start(Mode::Ok).await;
    let dir = crate::common::temp_dir();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, policy_for(&fake.base, "")).unwrap();
    let mut api = runtime_api::RuntimeApi::start().await;
    let mut child = api.spawn_authorizer(env!("CARGO_BIN_EXE_jotgate"), &policy);
    let ok = api.invoke(event("rest-token", &fake.token()));
    let out = api.outcome().await;
    assert_eq!(out.request_id, ok);
    let body = out.result.expect("allowed");
    assert_eq!(body["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_eq!(body["principalId"], "user-1");

    let bad = api.invoke(event("rest-token", "not.a.jwt"));
    let out = api.outcome().await;
    assert_eq!(out.request_id, bad);
    let err = out.result.expect_err("refused with an invocation error");
    assert_eq!(err["errorMessage"], "Unauthorized");

    api.invoke(event("http-v2", &fake.token()));
    let body = api.outcome().await.result.unwrap();
    assert_eq!(body["isAuthorized"], true);
    assert_context_is_flat(&body["context"]);
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn outside_lambda_the_authorizer_says_what_is_missing() {
    let out = crate::cli::bin()
        .args(["authorizer", "--policy", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not set: AWS_LAMBDA_RUNTIME_API"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Lambda freezes a function between invocations, so a background feed follower falls
/// behind: each invocation brings the revocations up to date first (issue 16, item 8).
#[tokio::test]
async fn a_frozen_authorizer_catches_up_on_revocations_before_deciding() {
    use crate::edge::{FEED_TOKEN, issuer_app};
    let app = issuer_app().await;
    let token = app.signup_token("ann").await;
    let other = app.signup_token("bob").await;
    let dir = crate::common::temp_dir();
    let spawn = |api: &runtime_api::RuntimeApi, unreachable: &str| {
        let policy = dir.join(format!("policy-{unreachable}.toml"));
        std::fs::write(
            &policy,
            format!(
                "[[issuer]]\nissuer = \"{base}\"\nprofile = \"jotgate\"\naudiences = [\"jotgate\"]\n\
                 revocation_feed = \"{base}/api/v1/revocations\"\nrevocation_token_env = \"JOTGATE_TEST_FEED\"\n\
                 [authorizer]\nfreshness = 0.5\nfeed_unreachable = \"{unreachable}\"\n",
                base = app.base
            ),
        )
        .unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_jotgate"))
            .args(["authorizer", "--policy"])
            .arg(&policy)
            .envs(api.env())
            .env("JOTGATE_TEST_FEED", FEED_TOKEN)
            .env("JOTGATE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let signal = |child: &tokio::process::Child, sig: &str| {
        let pid = child.id().unwrap().to_string();
        assert!(
            std::process::Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    let allowed = |out: &runtime_api::Outcome| {
        out.result
            .as_ref()
            .is_ok_and(|b| b["policyDocument"]["Statement"][0]["Effect"] == "Allow")
    };
    let mut deny = runtime_api::RuntimeApi::start().await;
    let mut allow = runtime_api::RuntimeApi::start().await;
    let deny_child = spawn(&deny, "deny");
    let allow_child = spawn(&allow, "allow");
    for api in [&mut deny, &mut allow] {
        api.invoke(event("rest-token", &token));
        assert!(allowed(&api.outcome().await));
    }
    // Frozen between invocations; meanwhile the user logs out.
    signal(&deny_child, "-STOP");
    let res = crate::common::bearer(reqwest::Method::POST, app.url("/logout"), &token).await;
    assert_eq!(res.status(), reqwest::StatusCode::NO_CONTENT);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    signal(&deny_child, "-CONT");
    deny.invoke(event("rest-token", &token));
    assert!(
        !allowed(&deny.outcome().await),
        "the logout is honoured at once"
    );
    deny.invoke(event("rest-token", &other));
    assert!(allowed(&deny.outcome().await));

    // The feed unreachable after a freeze: refused by default, decided from memory when
    // the policy says so.
    signal(&deny_child, "-STOP");
    signal(&allow_child, "-STOP");
    drop(app);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    signal(&deny_child, "-CONT");
    signal(&allow_child, "-CONT");
    deny.invoke(event("rest-token", &other));
    let out = deny.outcome().await;
    assert!(!allowed(&out));
    assert_eq!(
        out.result.unwrap()["context"]["code"],
        "revocations_unavailable"
    );
    allow.invoke(event("rest-token", &other));
    assert!(allowed(&allow.outcome().await));
    let _ = std::fs::remove_dir_all(dir);
}

/// The policy the SAM template packages parses, with the feed token the template passes.
#[test]
fn the_deployed_policy_file_parses() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/aws/policy.toml");
    let token = "x".repeat(40);
    let f = PolicyFile::load_with(std::path::Path::new(path), &|name: &str| {
        (name == "JOTGATE_FEED_TOKEN").then(|| token.clone())
    })
    .unwrap();
    assert!(f.verifier.issuers[0].revocation_feed.is_some());
    assert_eq!(f.authorizer.freshness, std::time::Duration::from_secs(1));
}

/// The deployed example end to end, as far as it runs here: a jotgate token, the
/// authorizer's real answers to an HTTP API and a REST API event, handed to the
/// templates' own `/hello` function in each API's event shape; and the templates' routing,
/// authorizer and gateway responses as SAM translates them (scripts/check_templates.py).
#[tokio::test]
async fn the_templates_protect_a_route_end_to_end() {
    let app = crate::edge::issuer_app().await;
    let token = app.signup("ann").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let v = Verifier::new(quick(vec![crate::edge::trust(&app)])).unwrap();
    let _bg = v.start().await;
    let auth = Authorizer::new(v, Default::default(), V2Format::Simple);
    let v2 = auth.handle(&event("http-v2", &token)).await.unwrap();
    assert_eq!(v2["isAuthorized"], true, "{v2}");
    let rest = auth.handle(&event("rest-request", &token)).await.unwrap();
    assert_eq!(rest["policyDocument"]["Statement"][0]["Effect"], "Allow");
    let dir = crate::common::temp_dir();
    let (a, b) = (dir.join("v2.json"), dir.join("rest.json"));
    std::fs::write(&a, v2["context"].to_string()).unwrap();
    std::fs::write(&b, rest["context"].to_string()).unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../scripts/check_templates.py"
        ))
        .args([&a, &b])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(77) {
        eprintln!("{text}");
        return;
    }
    assert!(out.status.success(), "{text}");
}

//! The API Gateway Lambda authorizer as a Lambda function: one event at a time from the
//! Lambda Runtime API, decided by [`Authorizer`]. Behind the `lambda` feature; used by
//! `jotgate authorizer` and by the authorizer-only package (`crates/jotgate-authorizer`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::Verifier;
use crate::authorizer::{Authorizer, V2Format};
use crate::policy::PolicyFile;

/// The variables the Lambda runtime sets; without them this is not a Lambda environment.
pub const RUNTIME_VARS: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// One line naming what is missing when this is not a Lambda environment (lambda_runtime
/// would panic instead).
pub fn require_lambda_env(what: &str) -> Result<(), String> {
    let missing: Vec<&str> = RUNTIME_VARS
        .into_iter()
        .filter(|v| std::env::var_os(v).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "{what} runs inside AWS Lambda (or a local Lambda Runtime API); not set: {}",
        missing.join(", ")
    ))
}

/// The authorizer's policy and its verifier (not started): `feed_token` (the feed token
/// setting, an ARN already resolved) answers a policy's
/// `revocation_token_env = "JOTGATE_FEED_TOKEN"`; the feeds are read before decisions, not
/// followed (Lambda freezes the process between events).
pub fn load_policy(
    policy: &Path,
    feed_token: Option<&str>,
) -> Result<(Arc<Verifier>, PolicyFile), String> {
    let token = feed_token.map(str::to_string);
    let lookup = move |name: &str| {
        (name == "JOTGATE_FEED_TOKEN")
            .then(|| token.clone())
            .flatten()
    };
    let mut file =
        PolicyFile::load_with(policy, &lookup).map_err(|e| format!("invalid policy file {e}"))?;
    file.verifier.follow_feeds = false;
    let verifier = Verifier::new(file.verifier.clone()).map_err(|e| e.to_string())?;
    Ok((verifier, file))
}

/// Run as an AWS Lambda authorizer until the runtime stops it. Keys are fetched once per
/// container, before the first event, and the revocation feeds read to their end.
pub async fn run_authorizer(
    policy: &Path,
    v2: V2Format,
    feed_token: Option<&str>,
    what: &str,
) -> Result<(), String> {
    require_lambda_env(what)?;
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (verifier, file) = load_policy(policy, feed_token)?;
    let _background = verifier.start().await;
    if let Err(e) = verifier
        .bring_up_to_date(Duration::ZERO, Duration::from_secs(5))
        .await
    {
        tracing::warn!(error = %e, "revocations could not be read at start; retried at each decision");
    }
    let authorizer = Arc::new(Authorizer::with_options(
        verifier,
        file.policy,
        v2,
        file.authorizer,
    ));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| {
            let a = authorizer.clone();
            async move {
                let started = std::time::Instant::now();
                let out = a.handle(&event.payload).await;
                log_decision(&event, out.as_ref().ok(), started.elapsed());
                out.map_err(|e| -> lambda_runtime::Error { Box::new(e) })
            }
        },
    ))
    .await
    .map_err(|e| format!("lambda runtime: {e}"))
}

/// The authorizer's access-log line: one per event, at info. Method and path (never the
/// query string, a header or the token), the decision and its code, the Lambda request id.
fn log_decision(event: &lambda_runtime::LambdaEvent<Value>, out: Option<&Value>, took: Duration) {
    let p = &event.payload;
    let text = |v: &Value| v.as_str().map(str::to_string);
    let method = text(&p["httpMethod"])
        .or_else(|| text(&p["requestContext"]["http"]["method"]))
        .unwrap_or_default();
    let path = text(&p["rawPath"])
        .or_else(|| text(&p["path"]))
        .or_else(|| text(&p["methodArn"]))
        .unwrap_or_default();
    let allowed = out.is_some_and(|v| {
        v["isAuthorized"] == Value::Bool(true)
            || v["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    });
    let code = out
        .and_then(|v| v["context"]["code"].as_str())
        .unwrap_or("");
    tracing::info!(
        target: "access",
        request_id = %event.context.request_id.escape_debug(),
        method = %method.escape_debug(),
        path = %path.escape_debug(),
        decision = if allowed { "allow" } else { "deny" },
        code,
        latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        "decided"
    );
}

//! AWS Lambda: the same axum Router as `jotgate serve`, driven by `lambda_http` for API
//! Gateway REST APIs (payload 1.0), HTTP APIs (2.0) and Lambda function URLs; or the
//! authorizer ([`crate::edge::run_authorizer`]). The `bootstrap` runs `jotgate` with no
//! arguments: with `AWS_LAMBDA_RUNTIME_API` set, that means `jotgate lambda`.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::http::{Request, Uri};
use base64::Engine;
use lambda_http::RequestExt;
use lambda_http::request::{LambdaRequest, RequestContext};
use lambda_runtime::{LambdaEvent, Service};
use serde_json::{Value, json};

use crate::settings::Settings;

/// The variables the Lambda runtime sets; without them this is not a Lambda environment.
pub const RUNTIME_VARS: [&str; 4] = [
    "AWS_LAMBDA_RUNTIME_API",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
];

/// Fail with one line naming what is missing (lambda_runtime would panic instead).
pub fn require_lambda_env(what: &str) -> anyhow::Result<()> {
    let missing: Vec<&str> = RUNTIME_VARS
        .into_iter()
        .filter(|v| std::env::var_os(v).is_none())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "{what} runs inside AWS Lambda (or a local Lambda Runtime API); not set: {}",
            missing.join(", ")
        );
    }
    Ok(())
}

/// lambda_http puts the stage in front of the path for named stages (`/prod/login`); the
/// Router's routes have none. REST (1.0) and HTTP API (2.0) events both carry the stage in
/// their request context; `$default` (and function URLs) have no prefix.
fn strip_stage<B>(mut req: Request<B>) -> Request<B> {
    let stage = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => c.stage.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| s != "$default") else {
        return req;
    };
    let prefix = format!("/{stage}");
    let path = req.uri().path();
    let rest = match path.strip_prefix(&prefix) {
        Some("") => "/",
        Some(r) if r.starts_with('/') => r,
        _ => return req,
    };
    let target = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    if let Ok(uri) = target.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
    req
}

/// The caller's address as API Gateway saw it (`sourceIp` of the request context), for
/// throttling: not the last `X-Forwarded-For` hop, which behind an edge-optimised REST API
/// is CloudFront's and shared by every client of that edge.
fn source_ip<B>(mut req: Request<B>) -> Request<B> {
    let ip = match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(c)) => c.identity.source_ip.clone(),
        Some(RequestContext::ApiGatewayV2(c)) => c.http.source_ip.clone(),
        _ => None,
    };
    if let Some(ip) = ip.and_then(|s| s.parse().ok()) {
        req.extensions_mut()
            .insert(jotgate_server::extract::SourceIp(ip));
    }
    req
}

/// Serve the HTTP API as a Lambda function until the runtime stops it.
pub async fn run_api(settings: &Settings) -> anyhow::Result<()> {
    require_lambda_env("jotgate lambda")?;
    crate::init_crypto();
    if settings.tokens.issuer.is_none() {
        anyhow::bail!(
            "missing setting issuer (JOTGATE_ISSUER): in Lambda set it to the API's public URL, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com"
        );
    }
    let mut settings = settings.clone();
    settings.https_front = settings
        .tokens
        .issuer
        .as_deref()
        .is_some_and(|i| i.starts_with("https://"));
    let state = crate::build_state(&settings).await?;
    let sync = state.spawn_sync();
    // Outside the Router: a Router layer would run after routing, too late for the path.
    let app = tower::ServiceBuilder::new()
        .map_request(strip_stage::<lambda_http::Body>)
        .map_request(source_ip::<lambda_http::Body>)
        .service(jotgate_server::router(state));
    let adapter = lambda_http::Adapter::from(app);
    let result = lambda_runtime::run(BodyChecked(adapter))
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    sync.abort();
    result
}

/// Why an event's body cannot be handed to lambda_http: it says `isBase64Encoded` and the
/// body is not base64. (The events crate would panic on it, and with the release profile's
/// `panic = "abort"` that ends the container.)
fn bad_body(event: &Value) -> bool {
    event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true)
        && event
            .get("body")
            .and_then(Value::as_str)
            .is_some_and(|b| base64::engine::general_purpose::STANDARD.decode(b).is_err())
}

/// The answer to an event whose body is not what it claims: 400 in the shape every
/// API Gateway payload and function URLs accept.
fn bad_body_response() -> Value {
    json!({
        "statusCode": 400,
        // Made outside the Router, so its layer's headers are written here.
        "headers": {
            "content-type": "application/json",
            "cache-control": "no-store",
            "pragma": "no-cache",
            "x-content-type-options": "nosniff",
        },
        "isBase64Encoded": false,
        "body": json!({
            "status": "error",
            "error": "the request body is marked base64 but is not valid base64",
            "code": "invalid_body",
        }).to_string(),
    })
}

/// lambda_http's adapter behind a check of the raw event: what it would panic on is
/// answered with a 400 instead.
struct BodyChecked<S>(S);

impl<S> Service<LambdaEvent<Value>> for BodyChecked<S>
where
    S: Service<LambdaEvent<LambdaRequest>>,
    S::Response: serde::Serialize,
    S::Error: Into<lambda_runtime::Diagnostic> + std::fmt::Debug,
    S::Future: Send + 'static,
{
    type Response = Value;
    type Error = lambda_runtime::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Value, lambda_runtime::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0
            .poll_ready(cx)
            .map_err(|e| format!("lambda adapter: {e:?}").into())
    }

    fn call(&mut self, event: LambdaEvent<Value>) -> Self::Future {
        let (payload, context) = event.into_parts();
        if bad_body(&payload) {
            return Box::pin(async { Ok(bad_body_response()) });
        }
        let request: LambdaRequest = match serde_json::from_value(payload) {
            Ok(r) => r,
            Err(e) => {
                let e: lambda_runtime::Error =
                    format!("the event is not an API Gateway or function URL request: {e}").into();
                return Box::pin(async move { Err(e) });
            }
        };
        let fut = self.0.call(LambdaEvent::new(request, context));
        Box::pin(async move {
            let res = fut
                .await
                .map_err(|e| -> lambda_runtime::Error { format!("{e:?}").into() })?;
            Ok(serde_json::to_value(res)?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_marked_base64_must_be_base64() {
        assert!(bad_body(
            &json!({"isBase64Encoded": true, "body": "not base64!"})
        ));
        assert!(!bad_body(
            &json!({"isBase64Encoded": true, "body": "eyJhIjoxfQ=="})
        ));
        assert!(!bad_body(
            &json!({"isBase64Encoded": false, "body": "not base64!"})
        ));
        assert!(!bad_body(&json!({"isBase64Encoded": true})));
        assert_eq!(bad_body_response()["statusCode"], 400);
    }
}

//! AWS Lambda: the same axum Router as `jotgate serve`, driven by `lambda_http` for API
//! Gateway REST APIs (payload 1.0), HTTP APIs (2.0) and Lambda function URLs; or the
//! authorizer ([`crate::edge::run_authorizer`]). The `bootstrap` runs `jotgate` with no
//! arguments: with `AWS_LAMBDA_RUNTIME_API` set, that means `jotgate lambda`.

use axum::http::{Request, Uri};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;

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
    if settings.issuer.is_none() {
        anyhow::bail!(
            "missing setting issuer (JOTGATE_ISSUER): in Lambda set it to the API's public URL, e.g. https://abc123.execute-api.eu-west-1.amazonaws.com"
        );
    }
    let state = crate::build_state(settings).await?;
    let sync = state.spawn_sync();
    // Outside the Router: a Router layer would run after routing, too late for the path.
    let app = tower::ServiceBuilder::new()
        .map_request(strip_stage::<lambda_http::Body>)
        .map_request(source_ip::<lambda_http::Body>)
        .service(jotgate_server::router(state));
    let result = lambda_http::run(app)
        .await
        .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"));
    sync.abort();
    result
}

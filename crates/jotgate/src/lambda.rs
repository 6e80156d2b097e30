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

pub use jotgate_verify::lambda::RUNTIME_VARS;

/// Fail with one line naming what is missing (lambda_runtime would panic instead).
pub fn require_lambda_env(what: &str) -> anyhow::Result<()> {
    jotgate_verify::lambda::require_lambda_env(what).map_err(anyhow::Error::msg)
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
        .map_request(|r: lambda_http::Request| r.map(axum::body::Body::new))
        .service(jotgate_server::router(state));
    // lambda_runtime serves each request inside its invocation span.
    jotgate_verify::service::serve_under_spans();
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

/// Why an event is not handed to lambda_http: an answer to give (400), or the
/// invocation's error (not an API Gateway or function URL event at all).
enum Refused {
    Answer(Value),
    Error(String),
}

/// The checks every event passes before lambda_http decodes it (it would panic on the
/// rest): a body that is what it claims, the shape of an API Gateway or function URL
/// request, a URL that can be made of it.
fn checked(mut payload: Value) -> Result<LambdaRequest, Refused> {
    // A query parameter given as an empty list (`{"a": []}`) has no value: query_map
    // (under lambda_http) indexes its first value and panics on it. Found by the fuzzer;
    // API Gateway sends no such thing. It is dropped, as absent.
    for field in ["queryStringParameters", "multiValueQueryStringParameters"] {
        if let Some(Value::Object(m)) = payload.get_mut(field) {
            m.retain(|_, v| !matches!(v, Value::Array(a) if a.is_empty()));
        }
    }
    if bad_body(&payload) {
        return Err(Refused::Answer(refusal(BAD_BODY)));
    }
    let request: LambdaRequest = serde_json::from_value(payload).map_err(|e| {
        Refused::Error(format!(
            "the event is not an API Gateway or function URL request: {e}"
        ))
    })?;
    match unreadable(&request) {
        Some(why) => Err(Refused::Answer(refusal(why))),
        None => Ok(request),
    }
}

/// What the API function makes of one event: the request the Router is handed, with the
/// stage stripped and the caller's address attached; or why the event is refused (`Err`
/// holds the invocation's answer or error text). The path events take through
/// [`run_api`], open to tests and the fuzzer (`fuzz/fuzz_targets/lambda_event.rs`).
pub fn request_of(payload: Value) -> Result<Request<lambda_http::Body>, String> {
    match checked(payload) {
        Ok(request) => Ok(source_ip(strip_stage(request.into()))),
        Err(Refused::Answer(v)) => Err(v.to_string()),
        Err(Refused::Error(e)) => Err(e),
    }
}

/// Why lambda_http could not make a request of this event, if it could not. It builds the
/// URL from the `Host` header (or the domain name), `X-Forwarded-Proto`, the stage, the
/// path and the raw query, and panics (an `unwrap` on `Url::parse`, an `expect` on the
/// request builder) when that fails: a host such as `a>b` or `a..0`, a scheme such as
/// `x y`, a path such as `:99999`, a query with a space. With `panic = "abort"` that ends
/// the container. So the same steps are tried here first. Found by the fuzzer
/// (`fuzz/fuzz_targets/lambda_event.rs`); API Gateway itself sends none of these.
fn unreadable(request: &LambdaRequest) -> Option<&'static str> {
    use axum::http::HeaderMap;
    const WHY: &str = "the request's URL (host, scheme, path or query) cannot be read";
    fn url_ok(
        headers: &HeaderMap,
        domain: Option<&str>,
        stage: Option<&str>,
        path: &str,
        query: &str,
    ) -> bool {
        // lambda_http's `apigw_path_with_stage`.
        let path = match stage {
            _ if std::env::var("AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH").is_ok() => path.to_string(),
            None | Some("$default") => path.to_string(),
            Some(s) if path.starts_with(&format!("/{s}/")) => path.to_string(),
            Some(s) => format!("/{s}{path}"),
        };
        // lambda_http's `build_request_uri`.
        let host = headers
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or(domain);
        let url = match host {
            None => {
                url::Url::parse(&format!("http://localhost{path}")).map(|u| u.path().to_string())
            }
            Some(host) => {
                let scheme = headers
                    .get("x-forwarded-proto")
                    .and_then(|s| s.to_str().ok())
                    .unwrap_or("https");
                url::Url::parse(&format!("{scheme}://{host}{path}")).map(|u| u.to_string())
            }
        };
        let Ok(mut url) = url else {
            return false;
        };
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        url.parse::<Uri>().is_ok()
    }
    let ok = match request {
        LambdaRequest::ApiGatewayV1(r) => {
            // The query lambda_http rebuilds from the parameter maps, encoded (it may be
            // three times as long as given, past what a URI may be).
            let (mv, sv) = (
                &r.multi_value_query_string_parameters,
                &r.query_string_parameters,
            );
            let query = if !mv.is_empty() {
                mv.to_query_string()
            } else {
                sv.to_query_string()
            };
            url_ok(
                &r.headers,
                r.request_context.domain_name.as_deref(),
                r.request_context.stage.as_deref(),
                r.path.as_deref().unwrap_or(""),
                &query,
            )
        }
        LambdaRequest::ApiGatewayV2(r) => url_ok(
            &r.headers,
            r.request_context.domain_name.as_deref(),
            r.request_context.stage.as_deref(),
            r.raw_path.as_deref().unwrap_or(""),
            r.raw_query_string.as_deref().unwrap_or(""),
        ),
        // Kinds this build does not decode (ALB, WebSocket): lambda_http's own handling.
        _ => true,
    };
    (!ok).then_some(WHY)
}

const BAD_BODY: &str = "the request body is marked base64 but is not valid base64";

/// The answer to an event that lambda_http cannot make a request of: 400 in the shape
/// every API Gateway payload and function URLs accept.
fn refusal(why: &str) -> Value {
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
            "error": why,
            "code": if why == BAD_BODY { "invalid_body" } else { "invalid_request" },
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
        let request = match checked(payload) {
            Ok(r) => r,
            Err(Refused::Answer(v)) => return Box::pin(async move { Ok(v) }),
            Err(Refused::Error(e)) => {
                let e: lambda_runtime::Error = e.into();
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
        assert_eq!(refusal(BAD_BODY)["statusCode"], 400);
    }

    /// A query parameter with an empty list of values is no parameter (query_map panicked
    /// on it: found by the fuzzer in the CI smoke run).
    #[test]
    fn a_query_parameter_with_no_values_is_dropped_not_panicked_on() {
        for (single, multi) in [
            (json!({"a": [], "b": "1"}), json!(null)),
            (json!({"b": "1"}), json!({"a": [], "b": ["1"]})),
            (json!({"a": []}), json!({"c": []})),
        ] {
            let event = json!({
                "resource": "/{proxy+}", "path": "/private", "httpMethod": "GET",
                "headers": {"Host": "api.example.com"},
                "queryStringParameters": single,
                "multiValueQueryStringParameters": multi,
                "requestContext": {"stage": "prod", "httpMethod": "GET"},
                "isBase64Encoded": false,
            });
            let req = request_of(event).unwrap();
            assert!(
                matches!(req.uri().query(), None | Some("b=1")),
                "{:?}",
                req.uri()
            );
        }
    }

    /// What lambda_http would panic on is a 400 (each found by the fuzzer, or its kin).
    #[test]
    fn events_lambda_http_cannot_read_are_refused_not_panicked_on() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/regressions/lambda_event"
        );
        let mut found = 0;
        for f in std::fs::read_dir(dir).unwrap() {
            let event: Value =
                serde_json::from_slice(&std::fs::read(f.unwrap().path()).unwrap()).unwrap();
            assert!(request_of(event).is_err());
            found += 1;
        }
        assert!(found > 0);
        let v2 = |host: &str, proto: &str, path: &str, query: &str| {
            json!({
                "version": "2.0", "routeKey": "$default", "rawPath": path,
                "rawQueryString": query,
                "headers": {"host": host, "x-forwarded-proto": proto},
                "requestContext": {"http": {"method": "GET", "path": path}, "stage": "$default"},
                "isBase64Encoded": false,
            })
        };
        let v1 = |host: &str, path: &str| {
            json!({
                "resource": "/{proxy+}", "path": path, "httpMethod": "GET",
                "headers": {"Host": host},
                "requestContext": {"stage": "prod", "httpMethod": "GET"},
                "isBase64Encoded": false,
            })
        };
        for (event, why) in [
            (v2("a>b", "https", "/x", ""), "host name"),
            (v2("a.example:99999", "https", "/x", ""), "host name"),
            (v2("a.example..0", "https", "/x", ""), "host name"),
            (v2("[zz::1]", "https", "/x", ""), "host name"),
            (v2("a.example", "x y", "/x", ""), "X-Forwarded-Proto"),
            (v2("a.example", "https", ":99999", ""), "path"),
            (v2("a.example", "https", "/x", "a b"), "query"),
            (v1("a b", "/x"), "host name"),
            (
                {
                    let mut e = v1("api.example.com", "/prod/x");
                    e["queryStringParameters"] = json!({"q": "\u{e9}".repeat(12_000)});
                    e
                },
                "query past the longest URI",
            ),
        ] {
            let err = request_of(event).unwrap_err();
            assert!(err.contains("cannot be read"), "{why}: {err}");
            assert!(err.contains("\"statusCode\":400"), "{err}");
        }
        for (host, path) in [
            ("a.example", "/x"),
            ("[::1]:8443", "/"),
            ("a.example:443", ""),
        ] {
            let req = request_of(v2(host, "HTTPS", path, "q=1&r")).unwrap();
            assert_eq!(req.uri().query(), Some("q=1&r"));
        }
        assert!(request_of(v1("api.example.com", "/prod/x")).is_ok());
    }
}

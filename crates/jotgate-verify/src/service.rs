//! What every answer jotgate makes carries, and one access-log line per request: the
//! layers `serve`, `lambda` and `gateway` wrap their routes in, in one place.
//!
//! - `Cache-Control: no-store` and `Pragma: no-cache` unless the handler chose a
//!   `Cache-Control` (only the JWKS and discovery documents do): tokens, claims, account
//!   data and errors are never kept by a shared cache or a browser (RFC 6749 §5.1,
//!   RFC 9111 §5.2.2.5).
//! - `X-Content-Type-Options: nosniff` on every answer.
//! - `Strict-Transport-Security: max-age=N` when serving HTTPS (RFC 6797).
//! - `x-request-id`: the caller's, when it is 1–64 of `[A-Za-z0-9._-]`, else a new UUID;
//!   set on the request (the gateway forwards it) and on the answer.
//! - One `info` line per request: method, path (never the query string), status,
//!   latency, request id. Never a header, a token or a body.
//!
//! An answer a gateway passes through from its upstream is marked [`Forwarded`] and keeps
//! the upstream's own headers untouched.

use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

/// Marks an answer that came from an upstream: its headers are the upstream's business.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The one-year HSTS max-age, jotgate's default.
pub const HSTS_DEFAULT: u64 = 31_536_000;

/// Wrap `router` in the headers and the access log. `hsts_max_age`: only when the
/// service is reached over HTTPS.
pub fn wrap(router: Router, hsts_max_age: Option<u64>) -> Router {
    let hsts = hsts_max_age
        .filter(|s| *s > 0)
        .and_then(|s| HeaderValue::from_str(&format!("max-age={s}")).ok());
    router
        .layer(axum::middleware::map_response(move |res: Response| {
            let hsts = hsts.clone();
            async move { secure(res, hsts) }
        }))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    let id = req
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path().escape_debug(),
                        request_id = %id,
                    )
                })
                .on_request(())
                .on_response(|res: &Response, latency: Duration, _: &tracing::Span| {
                    tracing::info!(
                        status = res.status().as_u16(),
                        latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
                        "answered"
                    );
                })
                .on_body_chunk(())
                .on_eos(())
                .on_failure(()),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(axum::middleware::map_request(
            |mut req: Request| async move {
                if req
                    .headers()
                    .get(&REQUEST_ID)
                    .is_some_and(|v| !valid_request_id(v.as_bytes()))
                    || req.headers().get_all(&REQUEST_ID).iter().count() > 1
                {
                    req.headers_mut().remove(&REQUEST_ID);
                }
                req
            },
        ))
}

/// 1–64 of `[A-Za-z0-9._-]`: safe in a log line and a header.
pub fn valid_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn secure(mut res: Response, hsts: Option<HeaderValue>) -> Response {
    if res.extensions().get::<Forwarded>().is_some() {
        return res;
    }
    let h = res.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if let Some(v) = hsts {
        h.insert(header::STRICT_TRANSPORT_SECURITY, v);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_checked() {
        assert!(valid_request_id(b"abc-123_X.y"));
        assert!(valid_request_id(&[b'a'; 64]));
        assert!(!valid_request_id(&[b'a'; 65]));
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(b"a\nINFO forged"));
        assert!(!valid_request_id("é".as_bytes()));
    }
}

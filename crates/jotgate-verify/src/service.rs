//! What every answer jotgate makes carries, and one access-log line per request: the
//! layers `serve`, `lambda` and `gateway` wrap their routes in, in one place.
//!
//! - `Cache-Control: no-store` and `Pragma: no-cache` unless the handler chose a
//!   `Cache-Control` (only the JWKS and discovery documents do): tokens, claims, account
//!   data and errors are never kept by a shared cache or a browser (RFC 6749 §5.1,
//!   RFC 9111 §5.2.2.5).
//! - `X-Content-Type-Options: nosniff` on every answer.
//! - `Strict-Transport-Security: max-age=N` when serving HTTPS (RFC 6797).
//! - `x-request-id`: the caller's, when it is 1–64 of `[A-Za-z0-9._-]`, else a new one;
//!   set on the request (the gateway forwards it) and on the answer.
//! - One `info` line per request, target `access` (`JOTGATE_LOG=info,access=off` turns
//!   it off): method, path (never the query string), status, latency, request id. Never a
//!   header, a token or a body.
//!
//! An answer a gateway passes through from its upstream is marked [`Forwarded`] and keeps
//! the upstream's own headers untouched.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use tracing::Instrument;

/// Marks an answer that came from an upstream: its headers are the upstream's business.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The one-year HSTS max-age, jotgate's default.
pub const HSTS_DEFAULT: u64 = 31_536_000;

/// Wrap `router` in the headers and the access log. `hsts_max_age`: only when the
/// service is reached over HTTPS.
///
/// One layer, one boxed future per request: the hot path (a cached token on `/private`)
/// pays for a request id from a counter, a disabled span when logging is off, and four
/// header inserts — nothing that allocates per layer or asks the kernel for randomness.
pub fn wrap(router: Router, hsts_max_age: Option<u64>) -> Router {
    let hsts = hsts_max_age
        .filter(|s| *s > 0)
        .and_then(|s| HeaderValue::from_str(&format!("max-age={s}")).ok());
    router.layer(Frame { hsts })
}

/// The layer behind [`wrap`].
#[derive(Clone)]
pub struct Frame {
    hsts: Option<HeaderValue>,
}

impl<S> tower::Layer<S> for Frame {
    type Service = Framed<S>;

    fn layer(&self, inner: S) -> Framed<S> {
        Framed {
            inner,
            hsts: self.hsts.clone(),
        }
    }
}

/// The service [`Frame`] makes.
#[derive(Clone)]
pub struct Framed<S> {
    inner: S,
    hsts: Option<HeaderValue>,
}

impl<S> tower::Service<Request> for Framed<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The caller's id when it is safe to log and to send on (exactly one, valid), else
        // a new one; on the request, so a gateway forwards it.
        let mut given = req.headers().get_all(&REQUEST_ID).iter();
        let id = match (given.next(), given.next()) {
            (Some(v), None) if valid_request_id(v.as_bytes()) => v.clone(),
            _ => new_request_id(),
        };
        req.headers_mut().insert(REQUEST_ID, id.clone());
        let span = tracing::info_span!(
            target: "access",
            "request",
            method = %req.method(),
            path = %req.uri().path().escape_debug(),
            request_id = %id.to_str().unwrap_or(""),
        );
        let started = Instant::now();
        // The clone that was made ready is the one to call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let hsts = self.hsts.clone();
        Box::pin(
            async move {
                let mut res = inner.call(req).await?;
                secure(&mut res, hsts);
                if !res.headers().contains_key(&REQUEST_ID) {
                    res.headers_mut().insert(REQUEST_ID, id);
                }
                tracing::info!(
                    target: "access",
                    status = res.status().as_u16(),
                    latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                    "answered"
                );
                Ok(res)
            }
            .instrument(span),
        )
    }
}

/// A new request id: a random per-process prefix and a counter (unique, cheap; an id is a
/// label for logs, not a secret).
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<String> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // std's per-process random hasher keys (from the OS), not aws-lc's DRBG: its first
    // use seeds a jitter-entropy source (~35 ms), which the first request would wait for.
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let n = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        format!("{n:016x}")
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    HeaderValue::from_str(&format!("{prefix}-{n:x}"))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// 1–64 of `[A-Za-z0-9._-]`: safe in a log line and a header.
pub fn valid_request_id(v: &[u8]) -> bool {
    (1..=64).contains(&v.len())
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn secure(res: &mut Response, hsts: Option<HeaderValue>) {
    if res.extensions().get::<Forwarded>().is_some() {
        return;
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

    #[test]
    fn new_request_ids_are_valid_and_distinct() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert!(valid_request_id(a.as_bytes()), "{a:?}");
    }
}

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
//!   set on the answer, and on the request a gateway forwards ([`Framed::forwarding`]).
//! - One `info` line per request, target `access` (`JOTGATE_LOG=info,access=off` turns
//!   it off): method, path (never the query string), status, latency, request id. Never a
//!   header, a token or a body.
//!
//! - A handler that panics is answered 500 `internal` (the JSON error shape), never a
//!   dropped connection (in builds that unwind; the `dist` profile aborts).
//!
//! An answer a gateway passes through from its upstream is marked [`Forwarded`] and keeps
//! the upstream's own headers untouched.
//!
//! The layer goes around the whole router, not on it: `Router::layer` wraps every route in
//! its own boxed copy of each layer, cloned and boxed again per request.

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::Router;
use axum::extract::Request;
use axum::http::header::Entry;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use futures_util::FutureExt;
use tower::Layer;

/// Marks an answer that came from an upstream: its headers are the upstream's business.
#[derive(Clone, Copy, Debug)]
pub struct Forwarded;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The one-year HSTS max-age, jotgate's default.
pub const HSTS_DEFAULT: u64 = 31_536_000;

/// Wrap `router` in the headers and the access log. `hsts_max_age`: only when the
/// service is reached over HTTPS.
///
/// One layer, its future not allocated ([`Answer`]): the hot path (a cached token on
/// `/private`) pays for a request id from a counter, its [`RequestContext`], and four
/// header inserts — nothing that allocates per layer or asks the kernel for randomness.
pub fn wrap<S>(inner: S, hsts_max_age: Option<u64>) -> Framed<S> {
    let hsts = hsts_max_age
        .filter(|s| *s > 0)
        .and_then(|s| HeaderValue::from_str(&format!("max-age={s}")).ok());
    Frame { hsts }.layer(inner)
}

/// What [`wrap`] makes of a router: a service for [`hyper`] or `lambda_http`.
pub type App = Framed<Router>;

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
            timeout: None,
            peer: None,
            id_on_request: false,
        }
    }
}

/// The service [`Frame`] makes.
#[derive(Clone)]
pub struct Framed<S> {
    inner: S,
    hsts: Option<HeaderValue>,
    timeout: Option<std::time::Duration>,
    peer: Option<SocketAddr>,
    /// The request id also goes on the request, for an upstream ([`Framed::forwarding`]).
    id_on_request: bool,
}

impl<S> Framed<S> {
    /// Answer 408 `request_timeout` to a request not answered within `limit` (a body that
    /// trickles in, a slow store read).
    pub fn with_timeout(mut self, limit: std::time::Duration) -> Self {
        self.timeout = Some(limit);
        self
    }

    /// The frame of a proxy: the request id is also set on the request (replacing what the
    /// caller sent when that was not one valid id), for the upstream it is forwarded to.
    /// Other frames only read the caller's.
    pub fn forwarding(mut self) -> Self {
        self.id_on_request = true;
        self
    }

    /// This frame, for the requests of one connection from `peer`: each request's
    /// [`RequestContext`] carries the address ([`peer`]). Instead of axum's `ConnectInfo`
    /// extension, which cost every request an insert into its extension map and, as the
    /// map's fourth entry, the map's growth (2 % of a cached token's request).
    pub fn for_peer(&self, peer: SocketAddr) -> Self
    where
        S: Clone,
    {
        Self {
            peer: Some(peer),
            ..self.clone()
        }
    }
}

impl<S> tower::Service<Request> for Framed<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = InRequest<Answer<S::Future>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The caller's id when it is safe to log and to send on (exactly one, valid), else
        // a new one, which a proxy's frame also sets on the request, in place of what the
        // caller sent.
        let given = crate::http::only_value(req.headers(), &REQUEST_ID)
            .flatten()
            .filter(|v| valid_request_id(v.as_bytes()))
            .cloned();
        let id = given.unwrap_or_else(|| {
            let id = new_request_id();
            if self.id_on_request {
                req.headers_mut().insert(REQUEST_ID, id.clone());
            }
            id
        });
        let context = Arc::new(RequestContext {
            method: req.method().clone(),
            uri: req.uri().clone(),
            id,
            // A frame inside another (a library user's) keeps the outer one's peer.
            peer: self
                .peer
                .or_else(|| RequestContext::with_current(RequestContext::peer).flatten()),
            outer: UNDER_SPANS
                .load(Ordering::Relaxed)
                .then(|| tracing::Span::current().id())
                .flatten(),
        });
        let started = Instant::now();
        let write = ACCESS_WRITER.get().copied();
        let observe = OBSERVER.get().copied();
        // The clone that was made ready is the one to call (tower's contract).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let hsts = self.hsts.clone();
        let timeout = self.timeout;
        // Called here, not in the future below, which then holds the answer's future alone
        // (not the service and the request too). A panic in `call` is answered as one in
        // the answer's future is, after the context is set.
        let mut context = Some(context);
        let called = {
            let _current = Current::set(&mut context);
            std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(req)))
        };
        InRequest {
            context,
            work: Answer {
                answer: called.ok().map(|f| AssertUnwindSafe(f).catch_unwind()),
                timer: None,
                limit: timeout,
                started,
                hsts,
                write,
                observe,
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The frame's future: the answer (or a 500 for a panic, a 408 past the time limit)
    /// with the frame's headers, the access line written. A plain future, not an `async`
    /// block: a block kept the answer's future twice and made the whole 1.5 KB, allocated
    /// per request; this is not allocated at all.
    pub struct Answer<F> {
        // `None`: the service panicked in `call`.
        #[pin]
        answer: Option<futures_util::future::CatchUnwind<AssertUnwindSafe<F>>>,
        // Armed only for an answer not ready at its first poll: most (a cached token) are,
        // and never pay for a timer.
        #[pin]
        timer: Option<tokio::time::Sleep>,
        limit: Option<std::time::Duration>,
        started: Instant,
        hsts: Option<HeaderValue>,
        write: Option<AccessWriter>,
        observe: Option<Observer>,
    }
}

impl<F> Future for Answer<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let mut res = match this.answer.as_mut().as_pin_mut().map(|a| a.poll(cx)) {
            None | Some(Poll::Ready(Err(_))) => panicked(),
            Some(Poll::Ready(Ok(answer))) => answer?,
            Some(Poll::Pending) => {
                let Some(limit) = *this.limit else {
                    return Poll::Pending;
                };
                if this.timer.is_none() {
                    let left = limit.saturating_sub(this.started.elapsed());
                    this.timer.set(Some(tokio::time::sleep(left)));
                }
                match this.timer.as_mut().as_pin_mut().map(|t| t.poll(cx)) {
                    Some(Poll::Ready(())) => {
                        // The answer's work ends here, as a dropped request's does.
                        this.answer.set(None);
                        timed_out(limit)
                    }
                    _ => return Poll::Pending,
                }
            }
        };
        secure(&mut res, this.hsts.take());
        let status = res.status().as_u16();
        let latency_us = u64::try_from(this.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        // The request's context: current while this future is polled (`InRequest`).
        RequestContext::with_current(|c| {
            match this.write {
                Some(write) => write(&AccessLine {
                    method: c.method(),
                    path: c.path(),
                    request_id: c.request_id(),
                    status,
                    latency_us,
                }),
                None => tracing::info!(target: "access", status, latency_us, "answered"),
            }
            if let Some(observe) = this.observe {
                observe(&c.method, c.uri.path(), status, latency_us);
            }
            res.headers_mut()
                .entry(REQUEST_ID)
                .or_insert_with(|| c.id.clone());
        });
        Poll::Ready(Ok(res))
    }
}

thread_local! {
    /// The request the future being polled on this thread serves.
    static CURRENT: RefCell<Option<Arc<RequestContext>>> = const { RefCell::new(None) };
}

pin_project_lite::pin_project! {
    /// A request's work, its [`RequestContext`] current while it is polled: put in place
    /// and taken back around each poll (a pointer's swap each way, the context allocated
    /// once per request; a `tokio::task_local!` moved the whole context in and out, a
    /// `tracing` span registered it and formatted its fields).
    pub struct InRequest<F> {
        context: Option<Arc<RequestContext>>,
        #[pin]
        work: F,
    }
}

impl<F: Future> Future for InRequest<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _current = Current::set(this.context);
        this.work.poll(cx)
    }
}

/// While it lives, `slot`'s context is the current one; the one before is put back after.
struct Current<'a> {
    slot: &'a mut Option<Arc<RequestContext>>,
    before: Option<Arc<RequestContext>>,
}

impl<'a> Current<'a> {
    fn set(slot: &'a mut Option<Arc<RequestContext>>) -> Self {
        let before = CURRENT.with(|c| c.replace(slot.take()));
        Current { slot, before }
    }
}

impl Drop for Current<'_> {
    fn drop(&mut self) {
        *self.slot = CURRENT.with(|c| c.replace(self.before.take()));
    }
}

/// The request a task is serving, for the log lines written while it does: each format
/// names it (`request{method=… path=… request_id=…}:` in text, `"span":{…,"name":"request"}`
/// in JSON, as a `tracing` span of that name would be). Set by [`Framed`] for the time the
/// request is served, read only when a line is written: a `tracing` span did the same work
/// on every request, logged or not (registered, its fields formatted, entered on each poll:
/// an eighth of a cached token's request).
#[derive(Clone, Debug)]
pub struct RequestContext {
    method: axum::http::Method,
    uri: axum::http::Uri,
    id: HeaderValue,
    /// The socket peer of the connection it came on ([`Framed::for_peer`]).
    peer: Option<SocketAddr>,
    /// The `tracing` span the request began in, where requests are served inside spans
    /// ([`serve_under_spans`]).
    outer: Option<tracing::span::Id>,
}

static UNDER_SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Requests are served inside other `tracing` spans (lambda_runtime's invocation span):
/// each request then notes the span it began in ([`RequestContext::outer_span`]), for a
/// log line to name the spans outside the request before it. Once per process.
pub fn serve_under_spans() {
    UNDER_SPANS.store(true, Ordering::Relaxed);
}

impl RequestContext {
    /// A request's context: its method, its URI (only the path is ever written) and its id
    /// (1–64 of `[A-Za-z0-9._-]`, see [`valid_request_id`]).
    pub fn new(method: axum::http::Method, uri: axum::http::Uri, id: HeaderValue) -> Self {
        Self {
            method,
            uri,
            id,
            peer: None,
            outer: None,
        }
    }

    /// This context, begun inside the span `outer`.
    pub fn inside(mut self, outer: Option<tracing::span::Id>) -> Self {
        self.outer = outer;
        self
    }

    /// The span the request began in, when requests are served inside spans.
    pub fn outer_span(&self) -> Option<&tracing::span::Id> {
        self.outer.as_ref()
    }

    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The path, never the query string, escaped for a log line.
    pub fn path(&self) -> Escaped<'_> {
        Escaped(self.uri.path())
    }

    pub fn request_id(&self) -> &str {
        // Checked or made as 1–64 of `[A-Za-z0-9._-]`: UTF-8 (a quicker check than
        // `to_str`'s of each byte).
        std::str::from_utf8(self.id.as_bytes()).unwrap_or("")
    }

    /// The socket peer of the connection the request came on, where the server knows it
    /// ([`Framed::for_peer`]).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// Run `f` as this request's: its log lines name the request.
    pub fn sync_scope<R>(self, f: impl FnOnce() -> R) -> R {
        let mut slot = Some(Arc::new(self));
        let _current = Current::set(&mut slot);
        f()
    }

    /// What `f` makes of the request the future being polled serves, if it serves one.
    pub fn with_current<R>(f: impl FnOnce(&RequestContext) -> R) -> Option<R> {
        CURRENT.with(|c| c.borrow().as_deref().map(f))
    }

    /// `work`, to be spawned as a task of its own, still the current request's: its log
    /// lines name the request.
    pub fn carry<F: Future>(work: F) -> InRequest<F> {
        InRequest {
            context: CURRENT.with(|c| c.borrow().clone()),
            work,
        }
    }
}

/// Headers an answer gets on its way out, besides its own: `Cache-Control`, `Pragma`,
/// `X-Content-Type-Options`, `Strict-Transport-Security`, `x-request-id`, hyper's `Date`
/// and `Content-Length`, and room for CORS's.
const FRAME_HEADERS: usize = 12;

/// The socket peer of a request: axum's `ConnectInfo` in its `extensions` (a router served
/// with `into_make_service_with_connect_info`), else the one in the [`RequestContext`] of
/// the request being served (a frame made [`for_peer`](Framed::for_peer)).
///
/// Asked outside any request's context (a task spawned without [`RequestContext::carry`]),
/// it has no address and says so once in the log: per-address limits would go unapplied.
pub fn peer(extensions: &axum::http::Extensions) -> Option<SocketAddr> {
    if let Some(c) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(c.0);
    }
    RequestContext::with_current(RequestContext::peer).unwrap_or_else(|| {
        static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if !SAID.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "a client address was asked for outside a request's context (a task spawned \
                 without RequestContext::carry?): no address"
            );
        }
        None
    })
}

/// A 200 `application/json` answer of `json` (a JSON text), whose header map has room for
/// what the frame adds. A
/// handler's `Json` answer starts with room for 6 headers, and hyper's `Date`, the 7th
/// after the frame's, made it grow (reallocate and rehash) on every request: a twentieth of
/// a cached token's request.
pub fn json_response(json: Vec<u8>) -> Response {
    let mut res = Response::new(axum::body::Body::from(json));
    let headers = res.headers_mut();
    *headers = axum::http::HeaderMap::with_capacity(FRAME_HEADERS);
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// The answer to a handler that panicked: 500 in the JSON error shape.
fn panicked() -> Response {
    tracing::error!(cause = %"handler panicked", "request failed");
    crate::http::error_response(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal server error",
    )
}

/// The answer to a request that outlived its time: 408 in the JSON error shape.
fn timed_out(limit: std::time::Duration) -> Response {
    tracing::warn!(limit_s = limit.as_secs(), "request timed out");
    crate::http::error_response(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
        "the request did not finish in time",
    )
}

/// A new request id: a random per-process prefix and a counter in hex (unique, cheap; an id
/// is a label for logs, not a secret).
fn new_request_id() -> HeaderValue {
    static PREFIX: OnceLock<[u8; 17]> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // 16 hex digits and '-', written once. From std's per-process random hasher keys (from
    // the OS), not aws-lc's DRBG: its first use seeds a jitter-entropy source (~35 ms),
    // which the first request would wait for.
    let prefix = PREFIX.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let mut p = [b'-'; 17];
        hex(random, &mut p[..16]);
        p
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // The prefix, then the counter's digits without leading zeros.
    let mut buf = [0u8; 33];
    buf[..17].copy_from_slice(prefix);
    let digits = (16 - n.leading_zeros() as usize / 4).max(1);
    hex(n, &mut buf[17..17 + digits]);
    // Bytes that own the array: a clone (for the answer) counts a reference, where bytes
    // copied from a slice are made shared, allocated again, on their first clone.
    HeaderValue::from_maybe_shared(axum::body::Bytes::from_owner(Id(buf, 17 + digits)))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A request id's bytes: the first `.1` of the array.
struct Id([u8; 33], usize);

impl AsRef<[u8]> for Id {
    fn as_ref(&self) -> &[u8] {
        self.0.get(..self.1).unwrap_or(&self.0)
    }
}

/// The low `out.len()` hex digits of `n`, most significant first.
fn hex(mut n: u64, out: &mut [u8]) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
    }
}

/// One request's access line, for an [`AccessWriter`].
pub struct AccessLine<'a> {
    pub method: &'a str,
    pub path: Escaped<'a>,
    pub request_id: &'a str,
    pub status: u16,
    pub latency_us: u64,
}

/// Writes access lines itself, in the text format the log's formatter would give them
/// (`request{method=… path=… request_id=…}: access: answered status=… latency_us=…`),
/// when the `access` target is enabled. Without one, the line is a `tracing` event,
/// written while the request's [`RequestContext`] is current.
pub type AccessWriter = fn(&AccessLine<'_>);

static ACCESS_WRITER: OnceLock<AccessWriter> = OnceLock::new();

/// Sees every answered request (method, path, status, latency in µs): the server's
/// metrics. Installed once per process with [`set_observer`].
pub type Observer = fn(&axum::http::Method, &str, u16, u64);

static OBSERVER: OnceLock<Observer> = OnceLock::new();

/// Install the [`Observer`] (once per process; later calls are ignored).
pub fn set_observer(observer: Observer) {
    let _ = OBSERVER.set(observer);
}

/// Install the [`AccessWriter`] (once per process; later calls are ignored): a plain-text
/// log pays for formatting one line, not for a `tracing` event (a fifth of a cached
/// token's whole request).
pub fn set_access_writer(writer: AccessWriter) {
    let _ = ACCESS_WRITER.set(writer);
}

/// A path for a log line: control characters, quotes and backslashes escaped (Rust's
/// `escape_debug`), so no one forges a line; written in one piece when there is nothing
/// to escape (nearly always: a path that reached a handler is percent-encoded).
pub struct Escaped<'a>(pub &'a str);

impl Escaped<'_> {
    /// Nothing to escape.
    fn plain(&self) -> bool {
        self.0
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\' && b != b'\'')
    }

    /// Append it to `out`: what `Display` writes, without the formatting machinery when
    /// there is nothing to escape.
    pub fn push_to(&self, out: &mut String) {
        if self.plain() {
            out.push_str(self.0);
        } else {
            use std::fmt::Write;
            let _ = write!(out, "{}", self.0.escape_debug());
        }
    }
}

impl std::fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.plain() {
            f.write_str(self.0)
        } else {
            std::fmt::Display::fmt(&self.0.escape_debug(), f)
        }
    }
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
    // A handler's own policy stays; else no-store.
    if let Entry::Vacant(none) = h.entry(header::CACHE_CONTROL) {
        none.insert(HeaderValue::from_static("no-store"));
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
    fn logged_paths_are_escaped() {
        for p in [
            "/private", "/a%0Ab", "/x\ny", "/q\"", "/b\\s", "/é", "/t\u{85}",
        ] {
            assert_eq!(Escaped(p).to_string(), p.escape_debug().to_string());
            let mut pushed = String::from(">");
            Escaped(p).push_to(&mut pushed);
            assert_eq!(pushed, format!(">{}", p.escape_debug()));
        }
    }

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
        let mut buf = [0u8; 16];
        hex(0x0123_4567_89ab_cdef, &mut buf);
        assert_eq!(&buf, b"0123456789abcdef");
        let mut one = [0u8; 1];
        hex(0, &mut one);
        assert_eq!(&one, b"0");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_time_gets_a_json_408() {
        use tower::ServiceExt;
        let app = wrap(
            Router::new()
                .route(
                    "/slow",
                    axum::routing::get(|| async {
                        tokio::time::sleep(std::time::Duration::from_secs(60)).await;
                        "late"
                    }),
                )
                .route("/fast", axum::routing::get(|| async { "ok" })),
            None,
        )
        .with_timeout(std::time::Duration::from_secs(30));
        let get = |path: &str| {
            axum::http::Request::get(path)
                .body(axum::body::Body::empty())
                .expect("request")
        };
        let res = app.clone().oneshot(get("/slow")).await.expect("infallible");
        assert_eq!(res.status(), 408);
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        let body = axum::body::to_bytes(res.into_body(), 1 << 10)
            .await
            .expect("body");
        assert!(body.ends_with(br#""code":"request_timeout"}"#), "{body:?}");
        let res = app.oneshot(get("/fast")).await.expect("infallible");
        assert_eq!(res.status(), 200);
    }

    #[tokio::test]
    async fn a_service_panicking_in_call_gets_a_json_500() {
        use tower::ServiceExt;
        let svc = tower::service_fn(|_req: Request| {
            if true {
                panic!("in call");
            }
            std::future::ready(Ok::<_, Infallible>(
                Response::new(axum::body::Body::empty()),
            ))
        });
        let req = axum::http::Request::get("/x")
            .body(axum::body::Body::empty())
            .expect("request");
        let res = wrap(svc, None).oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 500);
        assert!(res.headers().contains_key(&REQUEST_ID));
    }

    /// A proxy's frame puts the id it answers with on the request it forwards, in place of
    /// a caller's that is not one valid id; another frame leaves the request as it came.
    /// Both answer with the caller's valid id, and the peer rides in the request's context.
    #[tokio::test]
    async fn only_a_forwarding_frame_sets_the_request_id_on_the_request() {
        use tower::ServiceExt;
        let seen = Router::new().route(
            "/",
            axum::routing::get(|h: axum::http::HeaderMap| async move {
                let sent: Vec<String> = h
                    .get_all(REQUEST_ID)
                    .iter()
                    .map(|v| v.to_str().unwrap_or("?").to_string())
                    .collect();
                let peer = RequestContext::with_current(RequestContext::peer).flatten();
                axum::Json((sent, peer.map(|p| p.to_string())))
            }),
        );
        /// The id answered with, the ids the handler saw on the request, the peer it saw.
        async fn ask<S>(frame: S, ids: &[&str]) -> (String, Vec<String>, Option<String>)
        where
            S: tower::Service<Request, Response = Response, Error = Infallible>,
        {
            let mut req = axum::http::Request::get("/");
            for id in ids {
                req = req.header(REQUEST_ID, *id);
            }
            let req = req.body(axum::body::Body::empty()).expect("request");
            let res = frame.oneshot(req).await.expect("infallible");
            let answered = res.headers()[REQUEST_ID].to_str().expect("id").to_string();
            let body = axum::body::to_bytes(res.into_body(), 1 << 10)
                .await
                .expect("body");
            let (sent, peer): (Vec<String>, Option<String>) =
                serde_json::from_slice(&body).expect("json");
            (answered, sent, peer)
        }
        let peer: SocketAddr = "192.0.2.7:4242".parse().expect("address");
        // A frame inside another keeps the outer one's peer.
        let nested = wrap(wrap(seen.clone(), None), None).for_peer(peer);
        let (_, _, at) = ask(nested, &[]).await;
        assert_eq!(at.as_deref(), Some("192.0.2.7:4242"));
        let plain = wrap(seen.clone(), None).for_peer(peer);
        let proxy = wrap(seen, None).forwarding();

        let (answered, sent, at) = ask(plain.clone(), &["a b", "c"]).await;
        assert_eq!(sent, ["a b", "c"], "left as it came");
        assert!(valid_request_id(answered.as_bytes()) && answered != "c");
        assert_eq!(at.as_deref(), Some("192.0.2.7:4242"));
        let (answered, sent, at) = ask(proxy.clone(), &["a b", "c"]).await;
        assert_eq!(
            &sent,
            std::slice::from_ref(&answered),
            "replaced by the id answered with"
        );
        assert_eq!(at, None);
        let (answered, sent, _) = ask(proxy, &[]).await;
        assert_eq!(sent, [answered]);
        for frame in [plain, wrap(Router::new(), None).forwarding()] {
            let req = axum::http::Request::get("/")
                .header(REQUEST_ID, "trace-1")
                .body(axum::body::Body::empty())
                .expect("request");
            let res = frame.oneshot(req).await.expect("infallible");
            assert_eq!(res.headers()[REQUEST_ID], "trace-1");
        }
    }

    #[test]
    fn the_request_is_current_only_while_its_work_runs() {
        let r = RequestContext::new(
            axum::http::Method::GET,
            axum::http::Uri::from_static("/a?b"),
            HeaderValue::from_static("id-1"),
        );
        let path = |c: &RequestContext| c.path().to_string();
        assert_eq!(RequestContext::with_current(path), None);
        let inner = r.clone().sync_scope(|| {
            let outer = RequestContext::with_current(path);
            let nested = RequestContext::new(
                axum::http::Method::POST,
                axum::http::Uri::from_static("/n"),
                HeaderValue::from_static("id-2"),
            )
            .sync_scope(|| RequestContext::with_current(path));
            (outer, nested, RequestContext::with_current(path))
        });
        assert_eq!(
            inner,
            (Some("/a".into()), Some("/n".into()), Some("/a".into()))
        );
        assert_eq!(RequestContext::with_current(path), None);
    }

    #[tokio::test]
    async fn a_panicking_handler_gets_a_json_500_with_the_headers() {
        use tower::ServiceExt;
        let app = wrap(
            Router::new().route(
                "/boom",
                axum::routing::get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "unreachable"
                }),
            ),
            None,
        );
        let req = axum::http::Request::get("/boom")
            .body(axum::body::Body::empty())
            .expect("request");
        let res = app.oneshot(req).await.expect("infallible");
        assert_eq!(res.status(), 500);
        assert_eq!(res.headers()[header::CACHE_CONTROL], "no-store");
        assert!(res.headers().contains_key(&REQUEST_ID));
        let body = axum::body::to_bytes(res.into_body(), 1 << 10)
            .await
            .expect("body");
        assert!(body.starts_with(br#"{"status":"error""#), "{body:?}");
    }
}

//! CORS (the Fetch standard's protocol) for browser apps on other origins: an allowlist of
//! origins (`cors_origins`), preflights answered, `Authorization` and JSON allowed,
//! credentials (cookies) only when configured. A request from another origin gets no CORS
//! headers, so the browser keeps the answer from the page; its preflight is refused, so a
//! cross-origin JSON request from it never reaches a handler.
//!
//! Without `cors_origins` this layer costs a request one header lookup.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;

/// Origins allowed, and whether credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`, `http://localhost:3000`).
    pub origins: Vec<String>,
    /// `Access-Control-Allow-Credentials: true` (cookies, HTTP auth) for them.
    pub credentials: bool,
}

/// Why an origin in the list is not one.
pub fn parse_origin(o: &str) -> Result<String, String> {
    let o = o.trim();
    let bad = || {
        format!(
            "invalid CORS origin {o:?}: scheme://host[:port], without a path (e.g. https://app.example.com)"
        )
    };
    let url = url::Url::parse(o).map_err(|_| bad())?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || o.ends_with('/')
    {
        return Err(bad());
    }
    // The serialised origin, as a browser sends it (lower-case host, no default port).
    Ok(url.origin().ascii_serialization())
}

const METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const HEADERS: &str = "authorization, content-type, x-request-id";
/// What a page may read of an answer beyond the CORS-safelisted headers.
const EXPOSED: &str = "x-request-id, retry-after, www-authenticate";
/// How long a browser may keep a preflight's answer.
const MAX_AGE: &str = "600";

/// The layer's service.
#[derive(Clone)]
pub struct Cors<S> {
    inner: S,
    cfg: Option<Arc<CorsConfig>>,
}

pub fn wrap<S>(inner: S, cfg: Option<CorsConfig>) -> Cors<S> {
    Cors {
        inner,
        cfg: cfg.filter(|c| !c.origins.is_empty()).map(Arc::new),
    }
}

impl<S> Cors<S> {
    /// The request's origin, when it is allowed.
    fn allowed(&self, headers: &HeaderMap) -> Option<(HeaderValue, bool)> {
        let cfg = self.cfg.as_ref()?;
        let origin = headers.get(header::ORIGIN)?;
        let o = origin.to_str().ok()?;
        cfg.origins
            .iter()
            .any(|a| a == o)
            .then(|| (origin.clone(), cfg.credentials))
    }
}

fn decorate(h: &mut HeaderMap, origin: HeaderValue, credentials: bool) {
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if credentials {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
    h.append(header::VARY, HeaderValue::from_static("origin"));
}

fn preflight(allowed: Option<(HeaderValue, bool)>) -> Response {
    let Some((origin, credentials)) = allowed else {
        let mut res = jotgate_verify::http::error_response(
            StatusCode::FORBIDDEN,
            "cors_origin_not_allowed",
            "this origin may not call the API from a browser (cors_origins)",
        );
        res.headers_mut()
            .append(header::VARY, HeaderValue::from_static("origin"));
        return res;
    };
    let mut res = Response::new(axum::body::Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    decorate(h, origin, credentials);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static(METHODS),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static(HEADERS),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static(MAX_AGE),
    );
    res
}

pin_project_lite::pin_project! {
    /// The answer of [`Cors`]: the inner one, with CORS headers when the origin is allowed.
    #[project = CorsProj]
    pub enum CorsFuture<F> {
        Inner { #[pin] fut: F, add: Option<(HeaderValue, bool)>, vary: bool },
        Ready { res: Option<Response> },
    }
}

impl<F> Future for CorsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CorsProj::Inner { fut, add, vary } => {
                let Ok(mut res) = std::task::ready!(fut.poll(cx));
                // The answer depends on Origin whenever CORS is on: a cache must not serve
                // the copy without CORS headers to an allowed page (the JWKS is cacheable).
                if *vary && add.is_none() {
                    res.headers_mut()
                        .append(header::VARY, HeaderValue::from_static("origin"));
                }
                if let Some((origin, credentials)) = add.take() {
                    let h = res.headers_mut();
                    decorate(h, origin, credentials);
                    h.insert(
                        header::ACCESS_CONTROL_EXPOSE_HEADERS,
                        HeaderValue::from_static(EXPOSED),
                    );
                }
                Poll::Ready(Ok(res))
            }
            CorsProj::Ready { res } => Poll::Ready(Ok(res.take().unwrap_or_default())),
        }
    }
}

impl<S> tower::Service<Request> for Cors<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = CorsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        if self.cfg.is_none() {
            return CorsFuture::Inner {
                fut: self.inner.call(req),
                add: None,
                vary: false,
            };
        }
        let allowed = self.allowed(req.headers());
        let is_preflight = req.method() == Method::OPTIONS
            && req.headers().contains_key(header::ORIGIN)
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if is_preflight {
            return CorsFuture::Ready {
                res: Some(preflight(allowed)),
            };
        }
        CorsFuture::Inner {
            fut: self.inner.call(req),
            add: allowed,
            vary: true,
        }
    }
}

//! The reverse-proxy gateway: verify, apply the route policy, forward to one upstream with
//! the verified identity in headers. Bodies stream both ways; upstream status codes pass
//! through; an unreachable upstream is a 502 JSON error, a silent one a 504.
//!
//! What reaches the upstream is what was checked:
//! - the path is forwarded in its canonical form ([`crate::path`]), the one the policy
//!   decided on;
//! - identity headers arriving from the client (the configured names and any `X-Jotgate-*`,
//!   compared case-insensitively with `_` read as `-`, as CGI-style upstreams do) are
//!   removed, and so are client-sent `Forwarded`, `X-Real-IP`, `True-Client-IP` and
//!   `X-Forwarded-*` unless the peer is a trusted proxy;
//! - method and URL override headers (`X-HTTP-Method-Override`, `X-Original-URL`,
//!   `SCRIPT_NAME`…) are removed (or refused), `_method` in the query is refused (in a form
//!   body it cannot be seen by a streaming proxy: see docs/security.md);
//! - on a public route, an Authorization header that is not a verified Bearer token (one
//!   that failed, or another scheme or spelling) is removed, with `X-Jotgate-Verified:
//!   false`; `x-access-token`, which the gateway never checks, is never forwarded;
//! - request framing the upstream could read differently is refused: two `Host` headers,
//!   a `Host` with userinfo or a path, HTTP/1.1 without `Host`, a `Connection` header
//!   naming an end-to-end header, transfer codings other than `chunked`, `CONNECT`, `TRACE`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::error::ConfigError;
use crate::forwarding::{fold, is_client_fact, is_override, query_has_method_param};
use crate::http::{Rejection, decide};
use crate::path::canonicalize;
use crate::policy::{GatewayOptions, IdentityHeaders, OverrideHeaders, Policy};
use crate::{Principal, Verifier};

/// How the gateway forwards.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `http://host:port`, optionally with a base path that is prefixed to every request.
    pub upstream: String,
    pub policy: Policy,
    pub headers: IdentityHeaders,
    pub options: GatewayOptions,
    /// Longest wait for the upstream's response headers.
    pub upstream_timeout: Duration,
}

struct Upstream {
    scheme: Scheme,
    authority: Authority,
    base: String,
}

struct Gateway {
    verifier: Arc<Verifier>,
    upstream: Upstream,
    policy: Policy,
    names: Names,
    options: GatewayOptions,
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

struct Names {
    subject: HeaderName,
    username: HeaderName,
    scopes: HeaderName,
    roles: HeaderName,
    issuer: HeaderName,
    /// The five names, lower case with `_` as `-`.
    folded: Vec<String>,
}

/// End-to-end headers the gateway relies on: a `Connection` header may not name them.
const NOT_HOP_BY_HOP: &[&str] = &[
    "authorization",
    "host",
    "cookie",
    "content-length",
    "content-type",
    "content-encoding",
    "transfer-encoding",
    "x-access-token",
    "forwarded",
    "x-real-ip",
    // Set by the gateway's frame for the upstream (`Framed::forwarding`).
    "x-request-id",
];

fn header_name(field: &str, v: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::try_from(v).map_err(|_| {
        ConfigError(format!(
            "[gateway.headers] {field}: {v:?} is not a header name"
        ))
    })
}

/// The gateway as a framed service (headers, request id, access log): every path is proxied.
pub fn router(
    verifier: Arc<Verifier>,
    cfg: GatewayConfig,
) -> Result<crate::service::App, ConfigError> {
    let uri: Uri = cfg
        .upstream
        .parse()
        .map_err(|_| ConfigError(format!("upstream {:?} is not a URL", cfg.upstream)))?;
    if uri.scheme() != Some(&Scheme::HTTP) {
        return Err(ConfigError(format!(
            "upstream {:?} must be an http:// URL (the gateway sits next to its upstream)",
            cfg.upstream
        )));
    }
    let authority = uri
        .authority()
        .cloned()
        .ok_or_else(|| ConfigError(format!("upstream {:?} has no host", cfg.upstream)))?;
    if uri.query().is_some() {
        return Err(ConfigError("upstream must not carry a query string".into()));
    }
    let h = &cfg.headers;
    let names = Names {
        subject: header_name("subject", &h.subject)?,
        username: header_name("username", &h.username)?,
        scopes: header_name("scopes", &h.scopes)?,
        roles: header_name("roles", &h.roles)?,
        issuer: header_name("issuer", &h.issuer)?,
        folded: [&h.subject, &h.username, &h.scopes, &h.roles, &h.issuer]
            .into_iter()
            .map(|n| fold(n))
            .collect(),
    };
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let state = Arc::new(Gateway {
        verifier,
        upstream: Upstream {
            scheme: Scheme::HTTP,
            authority,
            base: uri.path().trim_end_matches('/').to_string(),
        },
        policy: cfg.policy,
        names,
        options: cfg.options,
        client,
        timeout: cfg.upstream_timeout,
    });
    let ready = state.verifier.clone();
    let router = Router::new()
        .route(
            "/_jotgate/healthz",
            axum::routing::get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route(
            "/_jotgate/readyz",
            axum::routing::get(move || {
                let v = ready.clone();
                async move {
                    match v.readiness() {
                        Ok(()) => {
                            (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response()
                        }
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            axum::Json(json!({"status": "not_ready", "reason": why})),
                        )
                            .into_response(),
                    }
                }
            }),
        )
        .fallback(proxy)
        .with_state(state);
    Ok(crate::service::wrap(router, None).forwarding())
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) are for one connection, never forwarded.
fn strip_hop_by_hop(h: &mut HeaderMap) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        h.remove(n);
    }
    h.remove("keep-alive");
    h.remove("proxy-connection");
}

impl Gateway {
    fn set_identity(&self, h: &mut HeaderMap, p: Option<&Principal>) {
        let n = &self.names;
        let Some(p) = p else { return };
        let mut set = |name: &HeaderName, v: &str| {
            // A claim that cannot be a header value (control characters) is left out.
            if let Ok(v) = HeaderValue::from_str(v) {
                h.insert(name.clone(), v);
            }
        };
        set(&n.subject, &p.subject);
        if let Some(u) = &p.username {
            set(&n.username, u);
        }
        set(&n.scopes, &p.scopes.join(" "));
        set(&n.roles, &p.roles.join(" "));
        set(&n.issuer, &p.issuer);
    }

    /// Is this client-sent header one the gateway sets, or a claim about the connection?
    fn is_ours(&self, folded: &str) -> bool {
        folded.starts_with("x-jotgate-")
            || self.names.folded.iter().any(|n| n == folded)
            || is_client_fact(folded)
            || is_override(folded)
            || folded == "x-access-token"
    }

    fn trusted(&self, peer: Option<std::net::IpAddr>) -> bool {
        peer.is_some_and(|ip| {
            self.options
                .trusted_proxies
                .iter()
                .any(|n| n.contains(ip.to_canonical()))
        })
    }
}

fn joined(h: &HeaderMap, name: &str) -> Option<String> {
    let v: Vec<&str> = h
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!v.is_empty()).then(|| v.join(", "))
}

fn bad(m: &'static str) -> Response {
    Rejection::BadRequest(m).into_response()
}

/// A request refused before any policy: status, stable code, sentence.
struct Refused(StatusCode, &'static str, &'static str);

impl Refused {
    fn bad(m: &'static str) -> Self {
        Self(StatusCode::BAD_REQUEST, "invalid_request", m)
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        crate::http::error_response(self.0, self.1, self.2)
    }
}

/// The request's authority: the absolute-form target's, or the one `Host` header's.
/// Refuses what RFC 9112 §3.2 asks a server to refuse.
fn authority(req: &Request) -> Result<Option<HeaderValue>, Refused> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refused::bad("more than one Host header"));
    }
    if let Some(h) = host {
        let ok = h
            .to_str()
            .ok()
            .filter(|s| !s.contains(['@', '/', '\\', '?', '#']))
            .and_then(|s| s.parse::<Authority>().ok())
            .is_some_and(|a| !a.host().is_empty());
        if !ok {
            return Err(Refused::bad("the Host header is not a host[:port]"));
        }
    }
    if host.is_none() && req.version() == axum::http::Version::HTTP_11 {
        return Err(Refused::bad("an HTTP/1.1 request needs a Host header"));
    }
    if let Some(a) = req.uri().authority() {
        if a.as_str().contains('@') || a.host().is_empty() {
            return Err(Refused::bad(
                "the request target's authority is not a host[:port]",
            ));
        }
        return Ok(HeaderValue::from_str(a.as_str()).ok());
    }
    Ok(host.cloned())
}

/// Framing and override checks before any policy: `Err` is the answer.
fn check_request(gw: &Gateway, req: &Request) -> Result<(), Refused> {
    let m = req.method();
    if m == axum::http::Method::CONNECT {
        return Err(Refused(
            StatusCode::NOT_IMPLEMENTED,
            "method_not_supported",
            "the gateway does not tunnel (CONNECT)",
        ));
    }
    if m == axum::http::Method::TRACE {
        return Err(Refused(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "TRACE is not allowed",
        ));
    }
    let h = req.headers();
    if let Some(te) = joined(h, "transfer-encoding")
        && !te
            .split(',')
            .all(|c| c.trim().eq_ignore_ascii_case("chunked"))
    {
        return Err(Refused(
            StatusCode::NOT_IMPLEMENTED,
            "transfer_coding_not_supported",
            "only the chunked transfer coding is supported",
        ));
    }
    for v in h.get_all(header::CONNECTION) {
        let Ok(v) = v.to_str() else {
            return Err(Refused::bad("the Connection header is not text"));
        };
        for name in v.split(',').map(|n| fold(n.trim())) {
            if NOT_HOP_BY_HOP.contains(&name.as_str()) || gw.is_ours(&name) {
                return Err(Refused::bad(
                    "the Connection header names an end-to-end header (such as Authorization)",
                ));
            }
        }
    }
    if gw.options.override_headers == OverrideHeaders::Refuse
        && h.keys().any(|k| is_override(&fold(k.as_str())))
    {
        return Err(Refused::bad(
            "method and URL override headers (X-HTTP-Method-Override, X-Original-URL…) are not accepted",
        ));
    }
    if !gw.options.allow_method_param
        && let Some(q) = req.uri().query()
        && query_has_method_param(q)
    {
        return Err(Refused::bad("the _method query parameter is not accepted"));
    }
    Ok(())
}

async fn proxy(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    if let Err(r) = check_request(&gw, &req) {
        return r.into_response();
    }
    let authority = match authority(&req) {
        Ok(a) => a,
        Err(r) => return r.into_response(),
    };
    let path = match canonicalize(req.uri().path()) {
        Ok(p) => p,
        Err(m) => return bad(m),
    };
    let rule = gw.policy.decide(req.method().as_str(), &path);
    let decision = match decide(&gw.verifier, rule, req.headers()).await {
        Ok(d) => d,
        Err(r) => return r.into_response(),
    };

    let peer = crate::service::peer(req.extensions()).map(|p| p.ip());
    let trusted = gw.trusted(peer);
    let (mut parts, body) = req.into_parts();
    let query = parts.uri.query().map(str::to_string);
    let h = &mut parts.headers;
    // What a trusted proxy in front said about the client, read before it is removed.
    let (prev_for, prev_proto, prev_host) = if trusted {
        (
            joined(h, "x-forwarded-for"),
            joined(h, "x-forwarded-proto").filter(|p| p == "http" || p == "https"),
            h.get("x-forwarded-host").cloned(),
        )
    } else {
        (None, None, None)
    };
    strip_hop_by_hop(h);
    // Also any other spelling of the request id the frame set (`x_request_id`), which an
    // upstream that folds `_` into `-` (CGI, WSGI) would read as it.
    let remove: Vec<HeaderName> = h
        .keys()
        .filter(|k| {
            let folded = fold(k.as_str());
            gw.is_ours(&folded) || (folded == "x-request-id" && k.as_str() != folded)
        })
        .cloned()
        .collect();
    for k in remove {
        h.remove(k);
    }
    h.remove(header::HOST);
    // The gateway owns Authorization: on a public route, whatever was not a verified Bearer
    // token (a forged one, `Bearer<TAB>…`, `JWT …`, a bare token) is not passed on.
    if decision.principal.is_none()
        && (decision.token_refused || h.contains_key(header::AUTHORIZATION))
    {
        h.remove(header::AUTHORIZATION);
        h.insert("x-jotgate-verified", HeaderValue::from_static("false"));
    }
    gw.set_identity(h, decision.principal.as_deref());
    if let Some(ip) = peer.map(|ip| ip.to_canonical()) {
        let xff = match prev_for {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            h.insert("x-forwarded-for", v);
        }
    }
    if let Some(host) = prev_host.or(authority) {
        h.insert("x-forwarded-host", host);
    }
    let proto = prev_proto.unwrap_or_else(|| "http".into());
    if let Ok(v) = HeaderValue::from_str(&proto) {
        h.insert("x-forwarded-proto", v);
    }
    let target = match query {
        Some(q) => format!("{}{}?{q}", gw.upstream.base, path.as_str()),
        None => format!("{}{}", gw.upstream.base, path.as_str()),
    };
    parts.uri = match Uri::builder()
        .scheme(gw.upstream.scheme.clone())
        .authority(gw.upstream.authority.clone())
        .path_and_query(target)
        .build()
    {
        Ok(u) => u,
        Err(_) => return bad("the request target is not valid"),
    };
    parts.version = axum::http::Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    match tokio::time::timeout(gw.timeout, gw.client.request(upstream_req)).await {
        Ok(Ok(res)) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            parts.extensions.insert(crate::service::Forwarded);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream request failed");
            crate::http::error_response(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream service is unreachable",
            )
        }
        Err(_) => crate::http::error_response(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the upstream service did not answer in time",
        ),
    }
}

//! The reverse-proxy gateway: verify, apply the route policy, forward to one upstream with
//! the verified identity in headers. Bodies stream both ways; upstream status codes pass
//! through; an unreachable upstream is a 502 JSON error, a silent one a 504.
//!
//! Identity headers arriving from the client (the configured names, and any `X-Jotgate-*`)
//! are always removed, so a client cannot forge an identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;

use crate::error::ConfigError;
use crate::http::{Rejection, decide};
use crate::policy::{IdentityHeaders, Policy, canonical_path};
use crate::{Principal, Verifier};

/// How the gateway forwards.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// `http://host:port`, optionally with a base path that is prefixed to every request.
    pub upstream: String,
    pub policy: Policy,
    pub headers: IdentityHeaders,
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
    client: Client<HttpConnector, Body>,
    timeout: Duration,
}

struct Names {
    subject: HeaderName,
    username: HeaderName,
    scopes: HeaderName,
    roles: HeaderName,
    issuer: HeaderName,
}

fn header_name(field: &str, v: &str) -> Result<HeaderName, ConfigError> {
    HeaderName::try_from(v).map_err(|_| {
        ConfigError(format!(
            "[gateway.headers] {field}: {v:?} is not a header name"
        ))
    })
}

/// The gateway as an axum Router: every path is proxied.
pub fn router(verifier: Arc<Verifier>, cfg: GatewayConfig) -> Result<Router, ConfigError> {
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
        client,
        timeout: cfg.upstream_timeout,
    });
    Ok(Router::new().fallback(proxy).with_state(state))
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

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "error": message, "code": code})),
    )
        .into_response()
}

impl Gateway {
    fn set_identity(&self, h: &mut HeaderMap, p: Option<&Principal>) {
        let n = &self.names;
        let forged: Vec<HeaderName> = h
            .keys()
            .filter(|k| k.as_str().starts_with("x-jotgate-"))
            .cloned()
            .collect();
        for k in forged.into_iter().chain([
            n.subject.clone(),
            n.username.clone(),
            n.scopes.clone(),
            n.roles.clone(),
            n.issuer.clone(),
        ]) {
            h.remove(k);
        }
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
}

async fn proxy(State(gw): State<Arc<Gateway>>, req: Request) -> Response {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let path = match canonical_path(&path_and_query) {
        Ok(p) => p,
        Err(m) => return Rejection::BadRequest(m).into_response(),
    };
    let rule = gw.policy.decide(req.method().as_str(), path);
    let principal = match decide(&gw.verifier, rule, req.headers()).await {
        Ok(p) => p,
        Err(r) => return r.into_response(),
    };

    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let (mut parts, body) = req.into_parts();
    let host = parts.headers.get(header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    gw.set_identity(&mut parts.headers, principal.as_deref());
    parts.headers.remove(header::HOST);
    if let Some(ip) = client_ip {
        let xff = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {ip}"),
            None => ip.to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&xff) {
            parts.headers.insert("x-forwarded-for", v);
        }
    }
    if let Some(h) = host {
        parts.headers.insert("x-forwarded-host", h);
    }
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static("http"));
    let target = format!("{}{}", gw.upstream.base, path_and_query);
    parts.uri = match Uri::builder()
        .scheme(gw.upstream.scheme.clone())
        .authority(gw.upstream.authority.clone())
        .path_and_query(target)
        .build()
    {
        Ok(u) => u,
        Err(_) => return Rejection::BadRequest("the request target is not valid").into_response(),
    };
    parts.version = axum::http::Version::HTTP_11;
    let upstream_req = Request::from_parts(parts, body);

    match tokio::time::timeout(gw.timeout, gw.client.request(upstream_req)).await {
        Ok(Ok(res)) => {
            let (mut parts, body) = res.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "upstream request failed");
            error(
                StatusCode::BAD_GATEWAY,
                "upstream_unavailable",
                "the upstream service is unreachable",
            )
        }
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the upstream service did not answer in time",
        ),
    }
}

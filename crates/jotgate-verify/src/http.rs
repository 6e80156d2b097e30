//! What the layer and the gateway share: reading the Bearer token (RFC 6750 §2.1, scheme
//! case-insensitive), deciding, and answering 401/403/503 with RFC 6750 challenges and the
//! same JSON error body as the jotgate server.

use std::sync::Arc;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::policy::{Access, Denial, Rule};
use crate::{Principal, Verifier, VerifyError, VerifyErrorKind};

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// 400: more than one Authorization header, or one that is not text.
    BadRequest(&'static str),
    /// 401 without an error code: no credentials (RFC 6750 §3.1).
    Missing,
    /// 401 `invalid_token`.
    Invalid(VerifyError),
    /// 403 `insufficient_scope`, with the scopes the route asks for.
    InsufficientScope(String),
    /// 403: the route is closed.
    Forbidden,
    /// 503: the issuer's keys have never been fetched.
    Unavailable,
}

/// The Bearer token of a request, if any: the one reader of credentials that the jotgate
/// server, the layer and the gateway share. `Ok(None)` when there is no Authorization
/// header, it uses another scheme, or nothing follows `Bearer`. With `legacy`, a request
/// without Authorization may carry the token in `x-access-token` instead. Two headers of
/// either name, or one that is not text, are a 400: a proxy that read the other one would
/// disagree about who is calling.
pub fn bearer(headers: &HeaderMap, legacy: bool) -> Result<Option<&str>, Rejection> {
    fn single<'a>(
        headers: &'a HeaderMap,
        name: &HeaderName,
        twice: &'static str,
    ) -> Result<Option<&'a str>, Rejection> {
        let mut values = headers.get_all(name).iter();
        let Some(v) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(Rejection::BadRequest(twice));
        }
        v.to_str()
            .map(Some)
            .map_err(|_| Rejection::BadRequest("a credential header is not text"))
    }
    const X_ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-access-token");
    if let Some(v) = single(
        headers,
        &header::AUTHORIZATION,
        "more than one Authorization header",
    )? {
        return Ok(jotgate_core::bearer_credential(v).filter(|t| !t.is_empty()));
    }
    if legacy {
        let v = single(
            headers,
            &X_ACCESS_TOKEN,
            "more than one x-access-token header",
        )?;
        return Ok(v.map(str::trim).filter(|t| !t.is_empty()));
    }
    Ok(None)
}

/// What [`decide`] lets through.
#[derive(Debug, Default)]
pub struct Decision {
    /// The verified caller, if a valid token was presented.
    pub principal: Option<Arc<Principal>>,
    /// A public route was called with a Bearer token that failed verification: whoever
    /// passes the request on must remove it (and `x-access-token`), so that nothing behind
    /// trusts claims nobody checked.
    pub token_refused: bool,
}

/// Verify the request's token (if any) and apply `rule`. Public routes pass without a token
/// and with an invalid one (then without identity, and marked [`Decision::token_refused`]).
/// Two Authorization headers are refused with 400 on every route.
pub async fn decide(
    verifier: &Verifier,
    rule: &Rule,
    headers: &HeaderMap,
) -> Result<Decision, Rejection> {
    if rule.access == Access::Deny {
        return Err(Rejection::Forbidden);
    }
    let public = rule.access == Access::Public;
    let token = match bearer(headers, false)? {
        Some(t) => t,
        None if public => return Ok(Decision::default()),
        None => return Err(Rejection::Missing),
    };
    let principal = match verifier.verify(token).await {
        Ok(p) => p,
        Err(_) if public => {
            return Ok(Decision {
                principal: None,
                token_refused: true,
            });
        }
        Err(e) => return Err(e.into()),
    };
    if !public {
        rule.check(&principal).map_err(|d| match d {
            Denial::Forbidden => Rejection::Forbidden,
            Denial::InsufficientScope { scope } => Rejection::InsufficientScope(scope),
        })?;
    }
    Ok(Decision {
        principal: Some(principal),
        token_refused: false,
    })
}

/// Remove the credentials of a refused token from headers passed on.
pub fn remove_credentials(h: &mut HeaderMap) {
    h.remove(header::AUTHORIZATION);
    h.remove("x-access-token");
}

impl From<VerifyError> for Rejection {
    fn from(e: VerifyError) -> Self {
        match e.kind() {
            VerifyErrorKind::Missing => Self::Missing,
            VerifyErrorKind::IssuerUnavailable => Self::Unavailable,
            _ => Self::Invalid(e),
        }
    }
}

fn quoted(s: &str) -> String {
    s.replace(['"', '\\'], "")
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        let (status, code, message, challenge) = match &self {
            Rejection::BadRequest(m) => (
                StatusCode::BAD_REQUEST,
                "invalid_request",
                m.to_string(),
                Some("Bearer error=\"invalid_request\"".to_string()),
            ),
            Rejection::Missing => (
                StatusCode::UNAUTHORIZED,
                "token_missing",
                "a Bearer token is required".into(),
                Some("Bearer realm=\"jotgate\"".into()),
            ),
            Rejection::Invalid(e) => (
                StatusCode::UNAUTHORIZED,
                e.code(),
                e.message().to_string(),
                Some(format!(
                    "Bearer realm=\"jotgate\", error=\"invalid_token\", error_description=\"{}\"",
                    quoted(e.message())
                )),
            ),
            Rejection::InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                "the token lacks a scope or role this route requires".into(),
                Some(if scope.is_empty() {
                    "Bearer realm=\"jotgate\", error=\"insufficient_scope\"".into()
                } else {
                    format!(
                        "Bearer realm=\"jotgate\", error=\"insufficient_scope\", scope=\"{}\"",
                        quoted(scope)
                    )
                }),
            ),
            Rejection::Forbidden => (
                StatusCode::FORBIDDEN,
                "forbidden",
                "this route is closed".into(),
                None,
            ),
            Rejection::Unavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "issuer_unavailable",
                "the token issuer's keys are unavailable; try again shortly".into(),
                None,
            ),
        };
        let mut res = error_response(status, code, &message);
        if let Some(c) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        res
    }
}

/// An error answer in jotgate's JSON shape: `{"status":"error","error":…,"code":…}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "error": message, "code": code})),
    )
        .into_response()
}

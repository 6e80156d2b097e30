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
        let Some(v) = only_value(headers, name).ok_or(Rejection::BadRequest(twice))? else {
            return Ok(None);
        };
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

/// The token of a request's one `Authorization: Bearer` header, as bytes, before they are
/// read as text: for a lookup in the verified-token cache ([`Verifier::cached`]), whose
/// tokens are text. `None` wherever [`bearer`] gives no token or refuses (two headers,
/// another scheme); a value that is not text is never found in the cache.
pub fn bearer_bytes(headers: &HeaderMap) -> Option<&[u8]> {
    let value = only_value(headers, &header::AUTHORIZATION)??.as_bytes();
    let space = value.iter().position(|&b| b == b' ')?;
    let (scheme, token) = (&value[..space], value[space + 1..].trim_ascii());
    (scheme.eq_ignore_ascii_case(b"bearer") && !token.is_empty()).then_some(token)
}

/// The value of header `name` when it comes at most once: `Some(None)` when absent, `None`
/// when it comes twice or more.
pub(crate) fn only_value<'a>(
    headers: &'a HeaderMap,
    name: &HeaderName,
) -> Option<Option<&'a HeaderValue>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    values.next().is_none().then_some(first)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whenever `bearer` gives a token, `bearer_bytes` gives its bytes; whenever it gives
    /// none, so does `bearer_bytes`; and what `bearer_bytes` gives where `bearer` refuses is
    /// never text (so never a cached token).
    #[test]
    fn bearer_bytes_agree_with_bearer() {
        let values: &[&[u8]] = &[
            b"Bearer abc.def.ghi",
            b"bearer abc",
            b"BEARER  abc  ",
            b"Bearer\tabc",
            b"Bearer ",
            b"Bearer",
            b"Basic abc",
            b"Bearerabc",
            b" Bearer abc",
            b"Bearer abc\x0b",
            b"Bearer \xc2\xa0abc",
            b"Bearer abc\xff",
            b"Bearer a b",
        ];
        for v in values {
            // (No header carries a control character but tab.)
            let Ok(value) = HeaderValue::from_bytes(v) else {
                continue;
            };
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, value);
            match bearer(&h, false) {
                Ok(Some(t)) => assert_eq!(bearer_bytes(&h), Some(t.as_bytes()), "{v:?}"),
                Ok(None) => assert_eq!(bearer_bytes(&h), None, "{v:?}"),
                Err(_) => {
                    if let Some(b) = bearer_bytes(&h) {
                        assert!(
                            std::str::from_utf8(b).is_err()
                                || !b.iter().all(|c| (0x20..0x7f).contains(c)),
                            "{v:?}"
                        );
                    }
                }
            }
        }
        let mut two = HeaderMap::new();
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer b"));
        assert!(bearer(&two, false).is_err());
        assert_eq!(bearer_bytes(&two), None);
        assert_eq!(bearer_bytes(&HeaderMap::new()), None);
    }
}

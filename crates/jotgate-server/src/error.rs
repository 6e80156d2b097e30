//! The one place where failures become HTTP responses.
//!
//! Every error body is `{"status":"error","error":"<human sentence>","code":"<stable code>"}`.
//! 401s carry an RFC 6750 `WWW-Authenticate` challenge; 429s carry `Retry-After`. Internal
//! failures are logged with their cause and answered with a generic 500; no message here
//! ever contains a password, a token or a key.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use jotgate_verify::VerifyError;
use jotgate_verify::http::Rejection;

#[derive(Debug)]
pub enum ApiError {
    /// 400 with a code and a sentence.
    BadRequest(&'static str, String),
    UnsupportedMediaType,
    PayloadTooLarge,
    /// 401 for a failed login; the message is the same for unknown users and bad passwords.
    BadCredentials,
    /// No usable credentials, or a refused access token: answered exactly as the edge
    /// (layer, gateway) answers it — one code per condition.
    Credentials(Rejection),
    InvalidRefreshToken,
    /// The revocation feed is closed (no `feed_token` configured).
    FeedDisabled,
    /// The Bearer credential presented to the revocation feed is not its `feed_token`.
    InvalidFeedToken,
    Conflict(&'static str, String),
    /// 403 with a code and a sentence.
    Forbidden(&'static str, String),
    /// 403 `insufficient_scope`: the token lacks this scope (RFC 6750 §3.1).
    InsufficientScope(String),
    /// 404 `not_found` for a resource: the sentence names what.
    Missing(String),
    /// 429: too many failures for this username or address.
    RateLimited {
        retry_after_secs: u64,
    },
    /// 429: the password-hashing pool is full.
    Busy,
    NotFound,
    MethodNotAllowed,
    /// 503: the data store failed or did not answer in time; retrying may succeed.
    StoreUnavailable(String),
    Internal(String),
}

impl ApiError {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    /// 401 `token_missing`: a protected endpoint was called without a Bearer token.
    pub fn missing_token() -> Self {
        Self::Credentials(Rejection::Missing)
    }

    fn parts(&self) -> (StatusCode, &'static str, String) {
        use ApiError::*;
        match self {
            BadRequest(code, msg) => (StatusCode::BAD_REQUEST, code, msg.clone()),
            Forbidden(code, msg) => (StatusCode::FORBIDDEN, code, msg.clone()),
            InsufficientScope(scope) => (
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("the token lacks the scope this endpoint needs: {scope}"),
            ),
            Missing(what) => (StatusCode::NOT_FOUND, "not_found", what.clone()),
            UnsupportedMediaType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Content-Type must be application/json".into(),
            ),
            PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "request body is too large".into(),
            ),
            BadCredentials => (
                StatusCode::UNAUTHORIZED,
                "bad_credentials",
                "Bad username/password combination".into(),
            ),
            // Answered by the rejection itself, in `into_response`.
            Credentials(_) => (
                StatusCode::UNAUTHORIZED,
                "token_invalid",
                "the credentials are not valid".into(),
            ),
            FeedDisabled => (
                StatusCode::NOT_FOUND,
                "feed_disabled",
                "the revocation feed is off; set feed_token to open it".into(),
            ),
            InvalidFeedToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_feed_token",
                "the feed token is not valid".into(),
            ),
            InvalidRefreshToken => (
                StatusCode::UNAUTHORIZED,
                "invalid_refresh_token",
                "refresh token is invalid, expired or revoked".into(),
            ),
            Conflict(code, msg) => (StatusCode::CONFLICT, code, msg.clone()),
            RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many failed login attempts; retry later".into(),
            ),
            Busy => (
                StatusCode::TOO_MANY_REQUESTS,
                "server_busy",
                "the server is busy; retry shortly".into(),
            ),
            NotFound => (
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint".into(),
            ),
            MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint".into(),
            ),
            StoreUnavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the data store is unavailable; retry shortly".into(),
            ),
            Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal server error".into(),
            ),
        }
    }
}

impl From<jotgate_store::StoreError> for ApiError {
    fn from(e: jotgate_store::StoreError) -> Self {
        use jotgate_store::StoreError;
        match e {
            // Unreachable, timed out, refused: the next attempt may succeed.
            StoreError::Unavailable(_) | StoreError::Setup { .. } => {
                Self::StoreUnavailable(e.to_string())
            }
            e => Self::internal(e),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(r: Rejection) -> Self {
        Self::Credentials(r)
    }
}

impl From<VerifyError> for ApiError {
    fn from(e: VerifyError) -> Self {
        Self::Credentials(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Credentials(r) = self {
            return r.into_response();
        }
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "request failed");
        }
        if let ApiError::StoreUnavailable(cause) = &self {
            tracing::warn!(%cause, "the data store failed; answered 503");
        }
        let (status, code, message) = self.parts();
        let mut res = (
            status,
            axum::Json(crate::schema::ErrorBody {
                status: "error",
                error: message.clone(),
                code,
            }),
        )
            .into_response();
        let headers = res.headers_mut();
        match &self {
            ApiError::InvalidFeedToken => {
                // error_description is one of our fixed sentences: safe to quote.
                let v = format!(
                    "Bearer realm=\"jotgate\", error=\"invalid_token\", error_description=\"{message}\""
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            ApiError::RateLimited { retry_after_secs } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs.max(&1).to_owned()),
                );
            }
            ApiError::Busy | ApiError::StoreUnavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::InsufficientScope(scope) => {
                // Scopes are RFC 6749 scope tokens: nothing to escape in a quoted string.
                let v = format!(
                    "Bearer realm=\"jotgate\", error=\"insufficient_scope\", scope=\"{scope}\""
                );
                if let Ok(v) = HeaderValue::from_str(&v) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            _ => {}
        }
        res
    }
}

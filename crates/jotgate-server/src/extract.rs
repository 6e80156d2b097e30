//! Request parsing at the boundary: JSON bodies, Bearer tokens, the client address.
//! Every rejection is an [`ApiError`], so bad input always gets our JSON error shape.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Request};
use axum::http::{HeaderMap, header, request::Parts};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A JSON object body. Fields are read with [`JsonObject::string`], whose errors name the
/// field but never echo its value (it may be a password).
pub struct JsonObject(pub Map<String, Value>);

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || m.ends_with("+json")
        })
}

async fn body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|e| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge
        } else {
            ApiError::BadRequest("invalid_body", "the request body could not be read".into())
        }
    })
}

fn object(bytes: &[u8]) -> Result<JsonObject, ApiError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(JsonObject(map)),
        Ok(_) => Err(ApiError::BadRequest(
            "invalid_json",
            "the request body must be a JSON object".into(),
        )),
        Err(_) => Err(ApiError::BadRequest(
            "invalid_json",
            "the request body is not valid JSON".into(),
        )),
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        object(&body(req, state).await?)
    }
}

/// A JSON object body that may be absent: an empty body is `None`.
pub struct OptionalJsonObject(pub Option<JsonObject>);

impl<S: Send + Sync> FromRequest<S> for OptionalJsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(req.headers());
        let bytes = body(req, state).await?;
        if bytes.is_empty() {
            return Ok(Self(None));
        }
        if !json {
            return Err(ApiError::UnsupportedMediaType);
        }
        object(&bytes).map(|o| Self(Some(o)))
    }
}

impl JsonObject {
    /// A required string field.
    pub fn string(&self, name: &str) -> Result<&str, ApiError> {
        match self.0.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(_) => Err(ApiError::BadRequest(
                "invalid_field",
                format!("field \"{name}\" must be a string"),
            )),
            None => Err(ApiError::BadRequest(
                "missing_field",
                format!("field \"{name}\" is required"),
            )),
        }
    }
}

/// The access token of a request: `Authorization: Bearer <token>` (scheme case-insensitive,
/// RFC 6750 §2.1), or `x-access-token` when that legacy header is enabled. Two
/// Authorization (or two `x-access-token`) headers are refused with 400: a proxy that
/// reads the other one would disagree about who is calling.
pub fn bearer_token(headers: &HeaderMap, accept_x_access_token: bool) -> Result<&str, ApiError> {
    let duplicate = || {
        ApiError::BadRequest(
            "invalid_request",
            "more than one Authorization header".into(),
        )
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(v) = values.next() {
        if values.next().is_some() {
            return Err(duplicate());
        }
        let v = v.to_str().map_err(|_| ApiError::MissingToken)?;
        return match jotgate_core::bearer_credential(v) {
            Some(token) if !token.is_empty() => Ok(token),
            _ => Err(ApiError::MissingToken),
        };
    }
    if accept_x_access_token {
        let mut values = headers.get_all("x-access-token").iter();
        if let Some(v) = values.next().and_then(|v| v.to_str().ok()) {
            if values.next().is_some() {
                return Err(duplicate());
            }
            if !v.trim().is_empty() {
                return Ok(v.trim());
            }
        }
    }
    Err(ApiError::MissingToken)
}

/// The client's address: the socket peer, or — only when the deployment says a proxy in
/// front sets it — the last `X-Forwarded-For` hop (the one our own proxy appended).
pub fn client_ip(parts: &Parts, trust_forwarded_for: bool) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back();
        if forwarded.is_some() {
            return forwarded;
        }
    }
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

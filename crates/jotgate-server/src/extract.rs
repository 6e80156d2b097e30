//! Request parsing at the boundary: JSON bodies and the client address (Bearer tokens
//! are read by `jotgate_verify::http::bearer`, the reader the edge uses too).
//! Every rejection is an [`ApiError`], so bad input always gets our JSON error shape.

use std::net::{IpAddr, SocketAddr};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
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

/// JSON parsed like [`Value`], except that an object with a duplicate key is an error: a
/// proxy or WAF in front may have read the first where serde_json keeps the last.
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("JSON")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(Strict(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if m.insert(k, v).is_some() {
                return Err(serde::de::Error::custom("duplicate key"));
            }
        }
        Ok(Value::Object(m))
    }
}

fn object(bytes: &[u8]) -> Result<JsonObject, ApiError> {
    match serde_json::from_slice::<Strict>(bytes) {
        Ok(Strict(Value::Object(map))) => Ok(JsonObject(map)),
        Ok(_) => Err(ApiError::BadRequest(
            "invalid_json",
            "the request body must be a JSON object".into(),
        )),
        Err(e) if e.to_string().starts_with("duplicate key") => Err(ApiError::BadRequest(
            "invalid_json",
            "the request body has a duplicate key".into(),
        )),
        Err(_) => Err(ApiError::BadRequest(
            "invalid_json",
            "the request body is not valid JSON".into(),
        )),
    }
}

/// Wipe the raw body once parsed (it may hold a password), when this is its only owner.
fn wipe(bytes: Bytes) {
    if let Ok(mut b) = bytes.try_into_mut() {
        zeroize::Zeroize::zeroize(&mut b[..]);
    }
}

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let bytes = body(req, state).await?;
        let parsed = object(&bytes);
        wipe(bytes);
        parsed
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
        let parsed = object(&bytes);
        wipe(bytes);
        parsed.map(|o| Self(Some(o)))
    }
}

impl JsonObject {
    /// A required string field that is a secret (a password): moved out of the body into
    /// a buffer wiped on drop, so no copy stays behind in the parsed body.
    pub fn take_secret(&mut self, name: &str) -> Result<zeroize::Zeroizing<String>, ApiError> {
        self.string(name)?;
        match self.0.remove(name) {
            Some(Value::String(s)) => Ok(zeroize::Zeroizing::new(s)),
            _ => Err(ApiError::BadRequest(
                "missing_field",
                format!("field \"{name}\" is required"),
            )),
        }
    }

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

/// The caller's address as the platform reports it (API Gateway's `sourceIp`), set by the
/// Lambda adapter; it wins over headers and the socket.
#[derive(Debug, Clone, Copy)]
pub struct SourceIp(pub IpAddr);

/// One `X-Forwarded-For` entry: an address, possibly with a port (`1.2.3.4:5678`,
/// `[2001:db8::1]:443`) or in brackets.
fn forwarded_entry(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    s.parse::<IpAddr>()
        .ok()
        .or_else(|| s.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            s.strip_prefix('[')
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|r| r.parse().ok())
        })
}

/// The client's address: the platform's (Lambda), else — when the deployment says `hops`
/// proxies in front append to `X-Forwarded-For` — the entry `hops` from the right (the one
/// the outermost trusted proxy wrote; anything left of it is the client's own say), else
/// the socket peer. An entry the trusted proxy wrote but that is no address (`unknown`)
/// and a list shorter than `hops` (the request bypassed a proxy) fall back to the peer.
pub fn client_ip(parts: &Parts, hops: u8) -> Option<IpAddr> {
    client_address(parts, hops).0
}

/// [`client_ip`], and whether it is the address the deployment resolves (the platform's,
/// the socket peer with no proxies, the outermost trusted proxy's entry) rather than the
/// peer taken for want of one — which, behind proxies, is a proxy's own address, whatever
/// client sent the request: such an address is not matched against the allowlist.
pub fn client_address(parts: &Parts, hops: u8) -> (Option<IpAddr>, bool) {
    if let Some(SourceIp(ip)) = parts.extensions.get::<SourceIp>() {
        return (Some(*ip), true);
    }
    let peer = jotgate_verify::service::peer(&parts.extensions).map(|p| p.ip());
    if hops == 0 {
        return (peer, true);
    }
    // A line that is not text cannot be read, and skipping it would shift which entry is
    // the proxy's: no forwarded address then, the peer (unresolved).
    let Ok(lines) = parts
        .headers
        .get_all("x-forwarded-for")
        .iter()
        .map(|v| v.to_str())
        .collect::<Result<Vec<&str>, _>>()
    else {
        return (peer, false);
    };
    let entries: Vec<&str> = lines.iter().flat_map(|v| v.split(',')).collect();
    let hops = usize::from(hops);
    if entries.len() < hops {
        return (peer, false);
    }
    match forwarded_entry(entries[entries.len() - hops]) {
        Some(ip) => (Some(ip), true),
        None => (peer, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::ConnectInfo;

    fn parts(xff: &[&str], peer: &str) -> Parts {
        let mut b = axum::http::Request::builder();
        for v in xff {
            b = b.header("x-forwarded-for", *v);
        }
        let (mut p, _) = b.body(()).unwrap().into_parts();
        p.extensions
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        p
    }

    #[test]
    fn the_client_address_is_taken_a_fixed_number_of_hops_from_the_right() {
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        let p = parts(&["6.6.6.6, 1.2.3.4"], "10.0.0.1:80");
        assert_eq!(client_ip(&p, 0), ip("10.0.0.1"));
        assert_eq!(client_ip(&p, 1), ip("1.2.3.4"));
        assert_eq!(client_ip(&p, 2), ip("6.6.6.6"));
        // A proxy that appends host:port or "unknown": the client cannot choose its key.
        let p = parts(&["6.6.6.6", "1.2.3.4:5555"], "10.0.0.1:80");
        assert_eq!(client_ip(&p, 1), ip("1.2.3.4"));
        let p = parts(&["6.6.6.6, unknown"], "10.0.0.1:80");
        assert_eq!(client_ip(&p, 1), ip("10.0.0.1"));
        assert!(
            !client_address(&p, 1).1,
            "the proxy's own address: not resolved"
        );
        let p = parts(&["[2001:db8::1]:443"], "10.0.0.1:80");
        assert_eq!(client_ip(&p, 1), ip("2001:db8::1"));
        // Fewer entries than trusted hops: the request did not come through them all.
        let p = parts(&["1.2.3.4"], "10.0.0.1:80");
        assert_eq!(client_ip(&p, 2), ip("10.0.0.1"));
        assert!(!client_address(&p, 2).1);
        assert!(client_address(&p, 1).1 && client_address(&p, 0).1);
        let mut p = parts(&["1.2.3.4"], "10.0.0.1:80");
        p.extensions.insert(SourceIp("9.9.9.9".parse().unwrap()));
        assert_eq!(client_ip(&p, 1), ip("9.9.9.9"));
        assert!(client_address(&p, 1).1);
        // A line that is not text: no forwarded address, never a shifted one.
        let mut b = axum::http::Request::builder().header("x-forwarded-for", "6.6.6.6");
        b = b.header(
            "x-forwarded-for",
            axum::http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        let (mut p, _) = b.body(()).unwrap().into_parts();
        p.extensions
            .insert(ConnectInfo("10.0.0.1:80".parse::<SocketAddr>().unwrap()));
        assert_eq!(client_address(&p, 1), (ip("10.0.0.1"), false));
    }

    #[test]
    fn a_secret_field_is_moved_out_of_the_body() {
        let mut o = object(br#"{"username":"ann","password":"correct horse battery"}"#).unwrap();
        assert_eq!(
            o.take_secret("password").unwrap().as_str(),
            "correct horse battery"
        );
        assert!(!o.0.contains_key("password"), "no copy stays in the body");
        assert!(matches!(
            o.take_secret("password"),
            Err(ApiError::BadRequest("missing_field", _))
        ));
        let mut o = object(br#"{"password":5}"#).unwrap();
        assert!(matches!(
            o.take_secret("password"),
            Err(ApiError::BadRequest("invalid_field", _))
        ));
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(object(br#"{"a":1,"b":[1,{"c":null}],"d":1.5}"#).is_ok());
        for bad in [
            r#"{"username":"a","username":"b"}"#,
            r#"{"x":{"k":1,"k":2}}"#,
            r#"{"x":[{"k":1,"k":2}]}"#,
        ] {
            match object(bad.as_bytes()) {
                Err(ApiError::BadRequest("invalid_json", m)) => {
                    assert!(m.contains("duplicate"), "{bad}: {m}")
                }
                _ => panic!("{bad} accepted"),
            }
        }
    }
}

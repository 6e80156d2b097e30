//! AWS API Gateway Lambda authorizer: events in, decisions out — no AWS SDK involved.
//!
//! - REST API `TOKEN` and `REQUEST` events (and HTTP API payload 1.0) → an IAM policy for
//!   the method ARN with `principalId` and a `context` of claims. A missing or invalid
//!   token is the error `Unauthorized` (API Gateway answers 401); a valid token that the
//!   route policy refuses is an explicit `Deny` (403).
//! - HTTP API payload 2.0 → the simple `{"isAuthorized", "context"}` response, or the IAM
//!   format when configured so. Refusals are `isAuthorized: false` / `Deny` (403).
//!
//! The policy allows exactly the invoked method ARN. With authorizer result caching, key
//! the cache on the token *and* the method and path, or a cached Allow would open other
//! routes (see docs/policy.md).

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::policy::{Access, Policy, canonical_path};
use crate::{Principal, Verifier};

/// The response shape for HTTP API (payload 2.0) events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum V2Format {
    /// `{"isAuthorized": bool, "context": {...}}` (enableSimpleResponses).
    #[default]
    Simple,
    /// An IAM policy, like REST APIs.
    Iam,
}

/// The invocation fails with this message; API Gateway turns it into 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Unauthorized")]
pub struct Unauthorized;

pub struct Authorizer {
    verifier: Arc<Verifier>,
    policy: Policy,
    v2: V2Format,
}

enum Kind {
    /// REST API TOKEN or REQUEST, HTTP API 1.0: IAM policy; invalid token → Unauthorized.
    Rest,
    /// HTTP API 2.0.
    V2,
}

struct Call<'a> {
    kind: Kind,
    token: Option<&'a str>,
    method: String,
    path: String,
    resource: String,
}

fn header<'a>(event: &'a Value, name: &str) -> Option<&'a str> {
    event
        .get("headers")?
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.as_str())
}

/// `Bearer <jwt>` (scheme case-insensitive) or, for TOKEN authorizers, a bare JWT.
fn bearer(v: &str) -> Option<&str> {
    match jotgate_core::bearer_credential(v) {
        Some(t) => (!t.is_empty()).then_some(t),
        None if !v.contains(' ') && v.split('.').count() == 3 => Some(v),
        None => None,
    }
}

/// `arn:aws:execute-api:region:account:api/stage/METHOD/path…` → (METHOD, /path…).
fn from_arn(arn: &str) -> Option<(String, String)> {
    let rest = arn.splitn(6, ':').nth(5)?;
    let mut parts = rest.splitn(4, '/');
    let (_api, _stage, method) = (parts.next()?, parts.next()?, parts.next()?);
    Some((
        method.to_string(),
        format!("/{}", parts.next().unwrap_or("")),
    ))
}

fn parse(event: &Value) -> Option<Call<'_>> {
    let s = |k: &str| event.get(k).and_then(Value::as_str);
    if s("version") == Some("2.0") {
        let ctx = event.get("requestContext");
        let method = ctx
            .and_then(|c| c.pointer("/http/method"))
            .and_then(Value::as_str)?
            .to_string();
        let mut path = s("rawPath")
            .or_else(|| {
                ctx.and_then(|c| c.pointer("/http/path"))
                    .and_then(Value::as_str)
            })?
            .to_string();
        // rawPath carries the stage name for stages other than $default.
        if let Some(stage) = ctx.and_then(|c| c.get("stage")).and_then(Value::as_str) {
            let prefix = format!("/{stage}");
            if stage != "$default" && (path == prefix || path.starts_with(&format!("{prefix}/"))) {
                path = path[prefix.len()..].to_string();
                if path.is_empty() {
                    path = "/".into();
                }
            }
        }
        let token = header(event, "authorization")
            .or_else(|| {
                event
                    .get("identitySource")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
            })
            .and_then(bearer);
        return Some(Call {
            kind: Kind::V2,
            token,
            method,
            path,
            resource: s("routeArn").unwrap_or("").to_string(),
        });
    }
    let arn = s("methodArn")?;
    let (arn_method, arn_path) = from_arn(arn)?;
    match s("type")? {
        "TOKEN" => Some(Call {
            kind: Kind::Rest,
            token: s("authorizationToken").and_then(bearer),
            method: arn_method,
            path: arn_path,
            resource: arn.to_string(),
        }),
        "REQUEST" => Some(Call {
            kind: Kind::Rest,
            token: header(event, "authorization").and_then(bearer),
            method: s("httpMethod").map_or(arn_method, str::to_string),
            path: s("path").map_or(arn_path, str::to_string),
            resource: arn.to_string(),
        }),
        _ => None,
    }
}

fn context(p: Option<&Principal>, code: Option<&str>) -> Value {
    let mut c = Map::new();
    if let Some(p) = p {
        c.insert("sub".into(), p.subject.clone().into());
        if let Some(u) = &p.username {
            c.insert("username".into(), u.clone().into());
        }
        c.insert("scope".into(), p.scopes.join(" ").into());
        c.insert("roles".into(), p.roles.join(" ").into());
        c.insert("iss".into(), p.issuer.clone().into());
        c.insert("exp".into(), p.expires_at.into());
    }
    if let Some(code) = code {
        c.insert("code".into(), code.into());
    }
    Value::Object(c)
}

fn iam(principal_id: &str, allow: bool, resource: &str, context: Value) -> Value {
    json!({
        "principalId": principal_id,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": if allow { "Allow" } else { "Deny" },
                "Resource": resource,
            }],
        },
        "context": context,
    })
}

impl Authorizer {
    pub fn new(verifier: Arc<Verifier>, policy: Policy, v2: V2Format) -> Self {
        Self {
            verifier,
            policy,
            v2,
        }
    }

    /// Decide one event. `Err(Unauthorized)` must be reported as the invocation's error.
    pub async fn handle(&self, event: &Value) -> Result<Value, Unauthorized> {
        let Some(call) = parse(event) else {
            tracing::warn!("authorizer event of an unknown shape; refusing");
            return Err(Unauthorized);
        };
        let refuse = |code: &str, principal: Option<&Principal>| -> Result<Value, Unauthorized> {
            let ctx = context(principal, Some(code));
            let id = principal.map_or("anonymous", |p| p.subject.as_str());
            match (&call.kind, self.v2) {
                (Kind::V2, V2Format::Simple) => Ok(json!({"isAuthorized": false, "context": ctx})),
                _ => Ok(iam(id, false, &call.resource, ctx)),
            }
        };
        let allow = |principal: Option<&Principal>| -> Value {
            let ctx = context(principal, None);
            match (&call.kind, self.v2) {
                (Kind::V2, V2Format::Simple) => json!({"isAuthorized": true, "context": ctx}),
                _ => iam(
                    principal.map_or("anonymous", |p| p.subject.as_str()),
                    true,
                    &call.resource,
                    ctx,
                ),
            }
        };
        let Ok(path) = canonical_path(&call.path) else {
            return refuse("invalid_request", None);
        };
        let rule = self.policy.decide(&call.method, path);
        let unauthorized = |code: &str| match call.kind {
            Kind::Rest => Err(Unauthorized),
            Kind::V2 => refuse(code, None),
        };
        if rule.access == Access::Deny {
            return refuse("forbidden", None);
        }
        let principal = match call.token {
            Some(t) => match self.verifier.verify(t).await {
                Ok(p) => Some(p),
                Err(_) if rule.access == Access::Public => None,
                Err(e) => return unauthorized(e.code()),
            },
            None if rule.access == Access::Public => None,
            None => return unauthorized("token_missing"),
        };
        if rule.access == Access::Public {
            return Ok(allow(principal.as_deref()));
        }
        let Some(p) = principal else {
            return unauthorized("token_missing");
        };
        match rule.check(&p) {
            Ok(()) => Ok(allow(Some(&p))),
            Err(crate::policy::Denial::Forbidden) => refuse("forbidden", Some(&p)),
            Err(crate::policy::Denial::InsufficientScope { .. }) => {
                refuse("insufficient_scope", Some(&p))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_arns_split_into_method_and_path() {
        assert_eq!(
            from_arn("arn:aws:execute-api:us-east-1:123456789012:abcdef123/test/GET/request"),
            Some(("GET".into(), "/request".into()))
        );
        assert_eq!(
            from_arn("arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/POST/pets/42/toys"),
            Some(("POST".into(), "/pets/42/toys".into()))
        );
        assert_eq!(
            from_arn("arn:aws:execute-api:us-east-1:1:api/prod/GET/"),
            Some(("GET".into(), "/".into()))
        );
        assert_eq!(from_arn("not-an-arn"), None);
    }

    #[test]
    fn bearer_values() {
        assert_eq!(bearer("Bearer a.b.c"), Some("a.b.c"));
        assert_eq!(bearer("bearer a.b.c"), Some("a.b.c"));
        assert_eq!(bearer("a.b.c"), Some("a.b.c"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
    }
}

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

use crate::forwarding::{fold, is_method_param, is_override, query_has_method_param};
use crate::path::{CanonicalPath, canonicalize, require_canonical};
use crate::policy::{Access, AuthorizerOptions, FeedUnreachable, Policy};

/// Longest wait for the revocation feed (and due keys) before a decision.
const FRESHNESS_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);
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
    options: AuthorizerOptions,
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
    path: Result<CanonicalPath, &'static str>,
    resource: String,
}

/// The value of header `name` (case-insensitive, `_` ≡ `-`), from `headers` and
/// `multiValueHeaders`. Two values (two spellings of the name, a multi-value list of two,
/// or HTTP API's comma-joined duplicates) → `Err`.
fn header<'a>(event: &'a Value, name: &str) -> Result<Option<&'a str>, &'static str> {
    let mut found: Option<&str> = None;
    let mut count = 0;
    if let Some(h) = event.get("headers").and_then(Value::as_object) {
        for (_, v) in h.iter().filter(|(k, _)| fold(k) == name) {
            count += 1;
            found = v.as_str();
        }
    }
    if let Some(h) = event.get("multiValueHeaders").and_then(Value::as_object) {
        let mut multi = 0;
        for (_, v) in h.iter().filter(|(k, _)| fold(k) == name) {
            multi += v.as_array().map_or(1, Vec::len);
        }
        count = count.max(multi);
    }
    if count > 1 || found.is_some_and(|v| v.contains(',')) {
        return Err("more than one Authorization header");
    }
    Ok(found)
}

/// Header names of the event (`headers` and `multiValueHeaders`), folded.
fn header_names(event: &Value) -> impl Iterator<Item = String> + '_ {
    ["headers", "multiValueHeaders"]
        .into_iter()
        .filter_map(|k| event.get(k).and_then(Value::as_object))
        .flat_map(|m| m.keys().map(|k| fold(k)))
}

/// Does the event's query carry `_method` (REST: the parameter maps; HTTP API: the raw
/// query string)?
fn has_method_param(event: &Value) -> bool {
    let in_maps = ["queryStringParameters", "multiValueQueryStringParameters"]
        .into_iter()
        .filter_map(|k| event.get(k).and_then(Value::as_object))
        .any(|m| m.keys().any(|k| is_method_param(k)));
    let raw = event
        .get("rawQueryString")
        .and_then(Value::as_str)
        .is_some_and(query_has_method_param);
    in_maps || raw
}

/// `Bearer <jwt>` (scheme case-insensitive) or, for TOKEN authorizers, a bare JWT.
fn bearer(v: &str) -> Option<&str> {
    match jotgate_core::bearer_credential(v) {
        Some(t) => (!t.is_empty()).then_some(t),
        None if !v.contains(' ') && v.split('.').count() == 3 => Some(v),
        None => None,
    }
}

/// `arn:aws:execute-api:region:account:api/stage/METHOD/path…` → (stage, METHOD, path…),
/// the path without its leading `/` and `None` when the ARN has no path part (HTTP API's
/// `…/stage/$default`).
fn from_arn(arn: &str) -> Option<(&str, &str, Option<&str>)> {
    let rest = arn.strip_prefix("arn:")?.splitn(5, ':').nth(4)?;
    let mut parts = rest.splitn(4, '/');
    let (_api, stage, method) = (parts.next()?, parts.next()?, parts.next()?);
    if stage.is_empty() || method.is_empty() {
        return None;
    }
    Some((stage, method, parts.next()))
}

/// Percent-encode what API Gateway may hand over decoded (non-ASCII, spaces) so the path
/// can be canonicalised; anything else ambiguous is still refused by the canonicaliser.
fn as_uri_path(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for &b in p.as_bytes() {
        if b >= 0x80 || b == b' ' {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// `path` without a leading `prefix` (a whole segment), if it has it.
fn strip_segment_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

/// Does an HTTP API route template (`/orders/{id}`, `/files/{proxy+}`) cover the path?
fn route_covers(template: &str, path: &CanonicalPath) -> bool {
    let parts: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let segs = path.segments();
    for (i, t) in parts.iter().enumerate() {
        if t.starts_with('{') && t.ends_with("+}") {
            return i == parts.len() - 1 && segs.len() > i;
        }
        let Some(seg) = segs.get(i) else { return false };
        if t.starts_with('{') && t.ends_with('}') {
            continue;
        }
        match canonicalize(&format!("/{t}")) {
            Ok(c) if c.segments().len() == 1 && &c.segments()[0] == seg => {}
            _ => return false,
        }
    }
    parts.len() == segs.len()
}

fn parse<'e>(event: &'e Value, opts: &AuthorizerOptions) -> Option<Call<'e>> {
    let s = |k: &str| event.get(k).and_then(Value::as_str);
    let auth = header(event, "authorization");
    let overridden = header_names(event).any(|n| is_override(&n));
    let method_param = !opts.allow_method_param && has_method_param(event);
    // What an answer allows must be exactly what was decided: never a wildcard.
    let problem = |resource: &str| -> Option<&'static str> {
        if resource.contains('*') {
            Some("the resource ARN contains '*'")
        } else if auth.is_err() {
            Some("more than one Authorization header")
        } else if overridden {
            Some("method and URL override headers are not accepted")
        } else if method_param {
            Some("the _method query parameter is not accepted")
        } else {
            None
        }
    };
    if s("version") == Some("2.0") {
        let ctx = event.get("requestContext");
        let method = ctx
            .and_then(|c| c.pointer("/http/method"))
            .and_then(Value::as_str)?
            .to_string();
        let raw = s("rawPath").or_else(|| {
            ctx.and_then(|c| c.pointer("/http/path"))
                .and_then(Value::as_str)
        })?;
        let resource = s("routeArn").unwrap_or("").to_string();
        let token = auth
            .ok()
            .flatten()
            .or_else(|| {
                event
                    .get("identitySource")
                    .and_then(Value::as_array)
                    .and_then(|a| a.first())
                    .and_then(Value::as_str)
            })
            .and_then(bearer);
        let stage = ctx
            .and_then(|c| c.get("stage"))
            .and_then(Value::as_str)
            .unwrap_or("$default");
        let path = v2_path(raw, stage, &opts.base_paths, &method, &resource);
        let path = match problem(&resource) {
            Some(p) => Err(p),
            None => path,
        };
        return Some(Call {
            kind: Kind::V2,
            token,
            method,
            path,
            resource,
        });
    }
    let arn = s("methodArn")?;
    let (stage, arn_method, arn_path) = from_arn(arn)?;
    // The answer allows exactly this ARN: it must already be the path's one spelling.
    let decided = require_canonical(&as_uri_path(&format!("/{}", arn_path.unwrap_or(""))));
    let token = match s("type")? {
        "TOKEN" => s("authorizationToken").and_then(bearer),
        "REQUEST" => auth.ok().flatten().and_then(bearer),
        _ => return None,
    };
    let mut path = decided;
    if let Ok(d) = &path {
        // REQUEST events (and HTTP API 1.0) say which path and method were called: they
        // must be the ones the ARN names.
        let agrees_method = s("httpMethod").is_none_or(|m| m.eq_ignore_ascii_case(arn_method));
        let agrees_path = s("path").is_none_or(|p| {
            event_path_candidates(p, stage, &opts.base_paths)
                .iter()
                .any(|c| c == d)
        });
        if !agrees_method || !agrees_path {
            path = Err("the event's path or method is not the one its method ARN names");
        }
    }
    if let Some(p) = problem(arn) {
        path = Err(p);
    }
    Some(Call {
        kind: Kind::Rest,
        token,
        method: arn_method.to_string(),
        path,
        resource: arn.to_string(),
    })
}

/// The canonical readings of an event path: as it is, without the stage, without a base
/// path.
fn event_path_candidates(raw: &str, stage: &str, base_paths: &[String]) -> Vec<CanonicalPath> {
    let raw = as_uri_path(raw);
    let mut out = Vec::new();
    let mut push = |p: &str| {
        if let Ok(c) = require_canonical(p) {
            out.push(c);
        }
    };
    push(&raw);
    if stage != "$default"
        && let Some(r) = strip_segment_prefix(&raw, &format!("/{stage}"))
    {
        push(r);
    }
    for b in base_paths {
        if let Some(r) = strip_segment_prefix(&raw, b) {
            push(r);
        }
    }
    out
}

/// HTTP API 2.0: the path the integration sees (rawPath without the stage, or a base path),
/// checked against the route ARN's method and route template.
fn v2_path(
    raw: &str,
    stage: &str,
    base_paths: &[String],
    method: &str,
    route_arn: &str,
) -> Result<CanonicalPath, &'static str> {
    let raw = as_uri_path(raw);
    let mut p: &str = &raw;
    if stage != "$default"
        && let Some(r) = strip_segment_prefix(p, &format!("/{stage}"))
    {
        p = r;
    }
    // A configured base path (a custom domain's API mapping) is not part of the route.
    if let Some(r) = base_paths.iter().find_map(|b| strip_segment_prefix(p, b)) {
        p = r;
    }
    let path = require_canonical(p)?;
    let Some((_, arn_method, template)) = from_arn(route_arn) else {
        return Err("the event has no valid route ARN");
    };
    let method_ok =
        arn_method == "$default" || arn_method == "ANY" || arn_method.eq_ignore_ascii_case(method);
    if !method_ok {
        return Err("the event's method is not the one its route ARN names");
    }
    let Some(template) = template else {
        return Ok(path);
    };
    if route_covers(template, &path) {
        return Ok(path);
    }
    Err("the event's path is not covered by its route ARN")
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
        Self::with_options(verifier, policy, v2, AuthorizerOptions::default())
    }

    pub fn with_options(
        verifier: Arc<Verifier>,
        policy: Policy,
        v2: V2Format,
        options: AuthorizerOptions,
    ) -> Self {
        Self {
            verifier,
            policy,
            v2,
            options,
        }
    }

    /// Decide one event. `Err(Unauthorized)` must be reported as the invocation's error.
    pub async fn handle(&self, event: &Value) -> Result<Value, Unauthorized> {
        let Some(call) = parse(event, &self.options) else {
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
        let path = match &call.path {
            Ok(p) => p,
            Err(why) => {
                tracing::info!(reason = why, "authorizer refused the event's request");
                return refuse("invalid_request", None);
            }
        };
        let rule = self.policy.decide(&call.method, path);
        // A frozen process's revocation list may be stale: bring it up to date before a
        // decision that depends on it (not for public or closed routes).
        if call.token.is_some()
            && rule.access == Access::Authenticated
            && let Err(e) = self
                .verifier
                .bring_up_to_date(self.options.freshness, FRESHNESS_BUDGET)
                .await
        {
            tracing::warn!(error = %e, "revocations could not be brought up to date");
            if self.options.feed_unreachable == FeedUnreachable::Deny {
                return refuse("revocations_unavailable", None);
            }
        }
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
    fn method_arns_split_into_stage_method_and_path() {
        assert_eq!(
            from_arn("arn:aws:execute-api:us-east-1:123456789012:abcdef123/test/GET/request"),
            Some(("test", "GET", Some("request")))
        );
        assert_eq!(
            from_arn("arn:aws:execute-api:us-east-1:123456789012:abcdef123/prod/POST/pets/42/a:b"),
            Some(("prod", "POST", Some("pets/42/a:b")))
        );
        assert_eq!(
            from_arn("arn:aws:execute-api:us-east-1:1:api/prod/GET/"),
            Some(("prod", "GET", Some("")))
        );
        assert_eq!(
            from_arn("arn:aws:execute-api:us-east-1:1:api/$default/$default"),
            Some(("$default", "$default", None))
        );
        assert_eq!(from_arn("not-an-arn"), None);
    }

    #[test]
    fn route_templates_cover_paths() {
        let c = |p: &str| canonicalize(p).unwrap();
        assert!(route_covers("orders/{id}", &c("/orders/42")));
        assert!(!route_covers("orders/{id}", &c("/orders/42/x")));
        assert!(!route_covers("orders/{id}", &c("/admin/42")));
        assert!(route_covers("files/{proxy+}", &c("/files/a/b")));
        assert!(!route_covers("files/{proxy+}", &c("/files")));
        assert!(route_covers("", &c("/")));
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

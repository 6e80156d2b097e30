//! The route policy file: trusted issuers, verifier settings, and which routes need what.
//! One TOML format for the axum layer, the API Gateway authorizer and the gateway; checked
//! at start with errors that name the line and the field. See `docs/policy.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;
use toml::Spanned;

use crate::Principal;
use crate::error::ConfigError;
use crate::path::CanonicalPath;
use crate::verifier::{FeedConfig, IssuerConfig, KeySource, VerifierConfig};

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// No token needed (one that is presented is still verified and passed on).
    Public,
    /// A valid token, plus the route's scopes and roles.
    #[default]
    Authenticated,
    /// Always refused.
    Deny,
}

/// The requirement of one route (or the default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub access: Access,
    pub scopes_any: Vec<String>,
    pub scopes_all: Vec<String>,
    pub roles_any: Vec<String>,
    pub roles_all: Vec<String>,
}

/// Why a verified principal may not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// The route is closed to everyone.
    Forbidden,
    /// A scope or role is missing; `scope` lists what the route asks for (RFC 6750 §3).
    InsufficientScope { scope: String },
}

impl Rule {
    /// Any scope at all.
    pub fn authenticated() -> Self {
        Self::default()
    }

    pub fn public() -> Self {
        Self {
            access: Access::Public,
            ..Self::default()
        }
    }

    pub fn any_scope<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes_any = scopes.into_iter().map(Into::into).collect();
        self
    }

    pub fn all_scopes<I: IntoIterator<Item = S>, S: Into<String>>(mut self, scopes: I) -> Self {
        self.scopes_all = scopes.into_iter().map(Into::into).collect();
        self
    }

    pub fn any_role<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.roles_any = roles.into_iter().map(Into::into).collect();
        self
    }

    pub fn all_roles<I: IntoIterator<Item = S>, S: Into<String>>(mut self, roles: I) -> Self {
        self.roles_all = roles.into_iter().map(Into::into).collect();
        self
    }

    /// Does `p` satisfy this rule? (Call only for a verified principal.)
    pub fn check(&self, p: &Principal) -> Result<(), Denial> {
        if self.access == Access::Deny {
            return Err(Denial::Forbidden);
        }
        let ok = (self.scopes_any.is_empty() || self.scopes_any.iter().any(|s| p.has_scope(s)))
            && self.scopes_all.iter().all(|s| p.has_scope(s))
            && (self.roles_any.is_empty() || self.roles_any.iter().any(|r| p.has_role(r)))
            && self.roles_all.iter().all(|r| p.has_role(r));
        if ok {
            Ok(())
        } else {
            let mut scope: Vec<&str> = self
                .scopes_all
                .iter()
                .chain(&self.scopes_any)
                .map(String::as_str)
                .collect();
            scope.dedup();
            Err(Denial::InsufficientScope {
                scope: scope.join(" "),
            })
        }
    }
}

/// A path pattern: literal segments (ASCII case-insensitive), `{name}` for exactly one
/// segment, and a final `*` for any number of remaining segments (zero included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    segments: Vec<Seg>,
    rest: bool,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    Param,
}

impl PathPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let Some(body) = s.strip_prefix('/') else {
            return Err(format!("path pattern {s:?} must start with '/'"));
        };
        let body = body.strip_suffix('/').unwrap_or(body);
        let mut segments = Vec::new();
        let mut rest = false;
        let parts: Vec<&str> = if body.is_empty() {
            vec![]
        } else {
            body.split('/').collect()
        };
        for (i, seg) in parts.iter().enumerate() {
            if rest {
                return Err(format!("path pattern {s:?}: '*' must be the last segment"));
            }
            match *seg {
                "*" => rest = true,
                "" => return Err(format!("path pattern {s:?} has an empty segment")),
                "." | ".." => return Err(format!("path pattern {s:?} has a dot segment")),
                p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                    segments.push(Seg::Param)
                }
                p if p.contains(['{', '}', '*']) => {
                    return Err(format!(
                        "path pattern {s:?}: segment {} mixes text with '{{', '}}' or '*'",
                        i + 1
                    ));
                }
                p if p.contains(['?', '#']) => {
                    return Err(format!(
                        "path pattern {s:?}, segment {}: a pattern is a path, without '?' or '#'",
                        i + 1
                    ));
                }
                p => {
                    // A literal is written as the decoded text a request's segment must
                    // have; its own spelling must already be canonical.
                    let c = crate::path::require_canonical(&format!("/{p}"))
                        .map_err(|m| format!("path pattern {s:?}, segment {}: {m}", i + 1))?;
                    let [one] = c.segments() else {
                        return Err(format!(
                            "path pattern {s:?}, segment {}: not one segment",
                            i + 1
                        ));
                    };
                    segments.push(Seg::Literal(one.to_ascii_lowercase()))
                }
            }
        }
        Ok(Self {
            segments,
            rest,
            source: s.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Does the canonical path match? A literal also matches the request's last segment
    /// with a format suffix (`/admin.json` for `admin`): Rails and Spring route those to
    /// the same handler.
    pub fn matches(&self, path: &CanonicalPath) -> bool {
        let segs = path.segments();
        let mut it = segs.iter().enumerate();
        for seg in &self.segments {
            match (seg, it.next()) {
                (_, None) => return false,
                (Seg::Param, Some(_)) => {}
                (Seg::Literal(l), Some((i, x))) => {
                    let last = i + 1 == segs.len();
                    let same = l.eq_ignore_ascii_case(x)
                        || (last
                            && x.len() > l.len()
                            && x.is_char_boundary(l.len())
                            && x.as_bytes()[l.len()] == b'.'
                            && l.eq_ignore_ascii_case(&x[..l.len()]));
                    if !same {
                        return false;
                    }
                }
            }
        }
        self.rest || it.next().is_none()
    }
}

/// One route of the policy.
#[derive(Debug, Clone)]
pub struct Route {
    /// Upper-case methods; empty means any. A `GET` rule also covers `HEAD`.
    pub methods: Vec<String>,
    pub path: PathPattern,
    pub rule: Rule,
}

/// Headers the gateway sets from the verified principal (and strips from requests).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityHeaders {
    pub subject: String,
    pub username: String,
    pub scopes: String,
    pub roles: String,
    pub issuer: String,
}

impl Default for IdentityHeaders {
    fn default() -> Self {
        Self {
            subject: "X-Jotgate-Sub".into(),
            username: "X-Jotgate-Username".into(),
            scopes: "X-Jotgate-Scopes".into(),
            roles: "X-Jotgate-Roles".into(),
            issuer: "X-Jotgate-Issuer".into(),
        }
    }
}

/// What the gateway does with headers that change the method or path some frameworks act
/// on (`X-HTTP-Method-Override`, `X-Original-URL`…).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OverrideHeaders {
    /// Remove them before forwarding (the default).
    #[default]
    Strip,
    /// Answer 400.
    Refuse,
}

/// `[gateway]` options besides the identity headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewayOptions {
    pub override_headers: OverrideHeaders,
    /// Let a `_method` query parameter through (refused with 400 otherwise).
    pub allow_method_param: bool,
    /// Peers whose `X-Forwarded-For` / `-Proto` / `-Host` are believed and appended to;
    /// from anyone else those headers are replaced.
    pub trusted_proxies: Vec<IpNet>,
}

/// `[authorizer]` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizerOptions {
    /// Base paths of custom-domain API mappings (`/v1`): an event whose path is one of
    /// these followed by the method ARN's path agrees with it.
    pub base_paths: Vec<String>,
    /// Let a `_method` query parameter through (refused otherwise).
    pub allow_method_param: bool,
    /// Before deciding, read the revocation feed when it was last read longer ago than
    /// this (Lambda freezes the process between invocations; a background follower then
    /// falls behind).
    pub freshness: std::time::Duration,
    /// What to answer when the feed cannot be read in time: refuse (the default), or
    /// decide with the revocations known.
    pub feed_unreachable: FeedUnreachable,
}

/// The authorizer's choice when the revocation feed is unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FeedUnreachable {
    /// Refuse every token of that issuer (fail closed).
    #[default]
    Deny,
    /// Decide with the revocations known so far (fail open for revocations).
    Allow,
}

impl Default for AuthorizerOptions {
    fn default() -> Self {
        Self {
            base_paths: Vec::new(),
            allow_method_param: false,
            freshness: std::time::Duration::from_secs(1),
            feed_unreachable: FeedUnreachable::Deny,
        }
    }
}

/// An address block, `10.0.0.0/8` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: std::net::IpAddr,
    prefix: u8,
}

impl IpNet {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or block"))?;
        // `::ffff:10.0.0.0/104` is an IPv4 block; peers are compared in canonical form too.
        let (addr, p) = match (addr, addr.to_canonical(), p) {
            (std::net::IpAddr::V6(_), v4 @ std::net::IpAddr::V4(_), Some(p)) => {
                let n: u8 = p
                    .parse()
                    .ok()
                    .filter(|n| (96..=128).contains(n))
                    .ok_or_else(|| {
                        format!("{s:?}: an IPv4-mapped block needs a prefix of 96..=128")
                    })?;
                (v4, Some((n - 96).to_string()))
            }
            (_, c, p) => (c, p.map(str::to_string)),
        };
        let p = p.as_deref();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Self { addr, prefix })
    }

    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        let ip = match ip {
            V6(v6) => v6.to_ipv4_mapped().map_or(V6(v6), V4),
            v4 => v4,
        };
        let (a, b, bits) = match (self.addr, ip) {
            (V4(a), V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
            (V6(a), V6(b)) => (u128::from(a), u128::from(b), 128),
            _ => return false,
        };
        let shift = bits - u32::from(self.prefix);
        shift >= bits || (a >> shift) == (b >> shift)
    }
}

/// Routes, in file order; the first match decides.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub routes: Vec<Route>,
    /// For requests no route matches.
    pub default: Rule,
}

impl Policy {
    /// The rule for a request; the path must be canonical (see [`crate::path`]).
    pub fn decide(&self, method: &str, path: &CanonicalPath) -> &Rule {
        self.routes
            .iter()
            .find(|r| {
                (r.methods.is_empty()
                    || r.methods.iter().any(|m| {
                        m.eq_ignore_ascii_case(method)
                            || (m == "GET" && method.eq_ignore_ascii_case("HEAD"))
                    }))
                    && r.path.matches(path)
            })
            .map_or(&self.default, |r| &r.rule)
    }
}

/// A whole policy file.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub verifier: VerifierConfig,
    pub policy: Policy,
    pub headers: IdentityHeaders,
    pub gateway: GatewayOptions,
    pub authorizer: AuthorizerOptions,
}

// ---- the file format ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    #[serde(default)]
    verifier: VerifierToml,
    #[serde(default, rename = "issuer")]
    issuers: Vec<Spanned<IssuerToml>>,
    #[serde(default)]
    default: Option<Spanned<RouteToml>>,
    #[serde(default, rename = "route")]
    routes: Vec<Spanned<RouteToml>>,
    #[serde(default)]
    gateway: GatewayToml,
    #[serde(default)]
    authorizer: AuthorizerToml,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GatewayToml {
    #[serde(default)]
    headers: IdentityHeaders,
    #[serde(default)]
    override_headers: OverrideHeaders,
    #[serde(default)]
    allow_method_param: bool,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct AuthorizerToml {
    #[serde(default)]
    base_paths: Vec<String>,
    #[serde(default)]
    allow_method_param: bool,
    freshness: Option<Secs>,
    #[serde(default)]
    feed_unreachable: FeedUnreachable,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct VerifierToml {
    leeway: Option<Secs>,
    max_token_bytes: Option<usize>,
    cache_size: Option<usize>,
    jwks_default_ttl: Option<Secs>,
    jwks_min_ttl: Option<Secs>,
    jwks_max_ttl: Option<Secs>,
    unknown_kid_cooldown: Option<Secs>,
    http_timeout: Option<Secs>,
    max_jwks_bytes: Option<usize>,
    feed_wait: Option<Secs>,
}

/// Seconds, whole or fractional, non-negative.
#[derive(Clone, Copy)]
struct Secs(Duration);

impl<'de> Deserialize<'de> for Secs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum N {
            I(u64),
            F(f64),
        }
        match N::deserialize(d)? {
            N::I(i) => Ok(Secs(Duration::from_secs(i))),
            N::F(f) if (0.0..1e9).contains(&f) => Ok(Secs(Duration::from_secs_f64(f))),
            N::F(_) => Err(serde::de::Error::custom("expected a number of seconds")),
        }
    }
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
enum Profile {
    #[default]
    Oidc,
    Jotgate,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IssuerToml {
    issuer: String,
    #[serde(default)]
    profile: Profile,
    audiences: Vec<String>,
    algorithms: Option<Vec<Alg>>,
    jwks_uri: Option<String>,
    jwks: Option<String>,
    jwks_file: Option<PathBuf>,
    public_key_file: Option<PathBuf>,
    shared_secret_env: Option<String>,
    typ: Option<Vec<String>>,
    required_claims: Option<Vec<String>>,
    roles_claim: Option<String>,
    revocation_feed: Option<String>,
    revocation_token_env: Option<String>,
}

#[derive(Clone, Copy)]
struct Alg(Algorithm);

impl<'de> Deserialize<'de> for Alg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.as_str() {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384"
            | "EdDSA" | "HS256" | "HS384" | "HS512" => {
                s.parse().map(Alg).map_err(serde::de::Error::custom)
            }
            _ => Err(serde::de::Error::custom(format!(
                "unknown algorithm {s:?} (expected RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA, HS256, HS384 or HS512)"
            ))),
        }
    }
}

/// A `[[route]]`, or the `[default]` rule (which takes no path or methods). The rule's
/// fields are listed here, not flattened from a struct of their own: `flatten` loses the
/// spans that put line numbers in errors.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteToml {
    path: Option<Spanned<String>>,
    #[serde(default)]
    methods: Vec<Spanned<String>>,
    access: Option<Access>,
    #[serde(default)]
    scopes_any: Vec<String>,
    #[serde(default)]
    scopes_all: Vec<String>,
    #[serde(default)]
    roles_any: Vec<String>,
    #[serde(default)]
    roles_all: Vec<String>,
}

/// Line (1-based) of a byte offset (bytes: an offset inside a character cannot panic).
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

impl RouteToml {
    fn rule(self) -> Result<Rule, String> {
        let access = self.access.unwrap_or_default();
        let has_requirements = !(self.scopes_any.is_empty()
            && self.scopes_all.is_empty()
            && self.roles_any.is_empty()
            && self.roles_all.is_empty());
        if access != Access::Authenticated && has_requirements {
            return Err(format!(
                "access = \"{}\" cannot be combined with scopes or roles",
                if access == Access::Public {
                    "public"
                } else {
                    "deny"
                }
            ));
        }
        for s in self
            .scopes_any
            .iter()
            .chain(&self.scopes_all)
            .chain(&self.roles_any)
            .chain(&self.roles_all)
        {
            if s.is_empty() || s.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\') {
                return Err(format!("{s:?} is not a valid scope or role name"));
            }
        }
        Ok(Rule {
            access,
            scopes_any: self.scopes_any,
            scopes_all: self.scopes_all,
            roles_any: self.roles_any,
            roles_all: self.roles_all,
        })
    }
}

fn read_beside(base: &Path, p: &Path) -> Result<Vec<u8>, String> {
    let path = if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    };
    std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Where `*_env` secrets of a policy file are looked up: the environment, unless the
/// caller resolved some itself (e.g. from AWS Secrets Manager).
pub type SecretLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

fn secret_env(name: &str, lookup: SecretLookup) -> Result<String, String> {
    match lookup(name).or_else(|| std::env::var(name).ok()) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => Err(format!("environment variable {name} is not set")),
    }
}

impl IssuerToml {
    fn build(self, base: &Path, lookup: SecretLookup) -> Result<IssuerConfig, String> {
        let aud = self.audiences.first().cloned().unwrap_or_default();
        let mut cfg = match self.profile {
            Profile::Oidc => IssuerConfig::new(&self.issuer, aud),
            Profile::Jotgate => IssuerConfig::jotgate(&self.issuer, aud),
        };
        cfg.audiences = self.audiences;
        let sources = [
            self.jwks_uri.is_some(),
            self.jwks.is_some(),
            self.jwks_file.is_some(),
            self.public_key_file.is_some(),
            self.shared_secret_env.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if sources > 1 {
            return Err(
                "give at most one of jwks_uri, jwks, jwks_file, public_key_file, shared_secret_env"
                    .into(),
            );
        }
        let algs: Option<Vec<Algorithm>> = self
            .algorithms
            .map(|a| a.into_iter().map(|a| a.0).collect());
        cfg.keys = if let Some(u) = self.jwks_uri {
            KeySource::JwksUri(u)
        } else if let Some(j) = self.jwks {
            KeySource::Jwks(j)
        } else if let Some(f) = self.jwks_file {
            KeySource::Jwks(
                String::from_utf8(read_beside(base, &f)?)
                    .map_err(|_| "jwks_file is not UTF-8".to_string())?,
            )
        } else if let Some(f) = self.public_key_file {
            let alg = match algs.as_deref() {
                Some([one]) => *one,
                _ => return Err("public_key_file needs exactly one entry in algorithms".into()),
            };
            KeySource::Pem {
                pem: read_beside(base, &f)?,
                alg,
            }
        } else if let Some(name) = self.shared_secret_env {
            cfg.algorithms = vec![Algorithm::HS256];
            KeySource::SharedSecret(secret_env(&name, lookup)?.into_bytes())
        } else {
            KeySource::Discovery
        };
        if let Some(a) = algs {
            cfg.algorithms = a;
        }
        if let Some(t) = self.typ {
            cfg.typ = t
                .into_iter()
                .map(|t| {
                    t.strip_prefix("application/")
                        .map(str::to_string)
                        .unwrap_or(t)
                })
                .collect();
        }
        if let Some(r) = self.required_claims {
            cfg.required_claims = r;
        }
        if let Some(r) = self.roles_claim {
            cfg.roles_claim = r;
        }
        cfg.revocation_feed = match (self.revocation_feed, self.revocation_token_env) {
            (Some(url), Some(env)) => Some(FeedConfig {
                url,
                token: secret_env(&env, lookup)?,
            }),
            (None, None) => None,
            _ => return Err("revocation_feed and revocation_token_env go together".into()),
        };
        Ok(cfg)
    }
}

impl PolicyFile {
    /// Read and check a policy file. Relative key files are read beside it.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::load_with(path, &|_| None)
    }

    /// [`load`](Self::load), with `*_env` secrets looked up by `lookup` first.
    pub fn load_with(path: &Path, lookup: SecretLookup) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read policy file {}: {e}", path.display())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::parse_with(&text, base, lookup)
            .map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    /// Parse policy text; `base` is where relative files are looked up.
    pub fn parse(text: &str, base: &Path) -> Result<Self, ConfigError> {
        Self::parse_with(text, base, &|_| None)
    }

    fn parse_with(text: &str, base: &Path, lookup: SecretLookup) -> Result<Self, ConfigError> {
        let file: FileToml = toml::from_str(text).map_err(|e| {
            // "line 19 (roles_any = "admin"): invalid type…" names the field by its line.
            let line = e
                .span()
                .map(|s| {
                    let n = line_of(text, s.start);
                    let src = text.lines().nth(n - 1).unwrap_or("").trim();
                    let src: String = src.chars().take(80).collect();
                    format!("line {n} ({src}): ")
                })
                .unwrap_or_default();
            ConfigError(format!("{line}{}", e.message().trim_end()))
        })?;
        let at = |span: std::ops::Range<usize>, what: &str, msg: String| {
            ConfigError(format!("line {}: {what}: {msg}", line_of(text, span.start)))
        };

        let mut verifier = VerifierConfig::default();
        let v = file.verifier;
        if let Some(Secs(x)) = v.leeway {
            if x > Duration::from_secs(300) {
                return Err(ConfigError("[verifier] leeway: at most 300 seconds".into()));
            }
            // Claims are whole seconds: a fractional allowance counts as the next second.
            verifier.leeway =
                i64::try_from(x.as_secs() + u64::from(x.subsec_nanos() > 0)).unwrap_or(300);
        }
        if let Some(x) = v.max_token_bytes {
            verifier.max_token_bytes = x;
        }
        if let Some(x) = v.cache_size {
            verifier.cache_capacity = x;
        }
        for (slot, val) in [
            (&mut verifier.jwks_default_ttl, v.jwks_default_ttl),
            (&mut verifier.jwks_min_ttl, v.jwks_min_ttl),
            (&mut verifier.jwks_max_ttl, v.jwks_max_ttl),
            (&mut verifier.unknown_kid_cooldown, v.unknown_kid_cooldown),
            (&mut verifier.http_timeout, v.http_timeout),
            (&mut verifier.feed_wait, v.feed_wait),
        ] {
            if let Some(s) = val {
                *slot = s.0;
            }
        }
        if verifier.http_timeout.is_zero() {
            return Err(ConfigError(
                "[verifier] http_timeout must be more than 0".into(),
            ));
        }
        if verifier.jwks_min_ttl > verifier.jwks_max_ttl {
            return Err(ConfigError(
                "[verifier] jwks_min_ttl is larger than jwks_max_ttl".into(),
            ));
        }
        if let Some(x) = v.max_jwks_bytes {
            verifier.max_jwks_bytes = x;
        }
        if file.issuers.is_empty() {
            return Err(ConfigError(
                "no [[issuer]] is configured: add at least one".into(),
            ));
        }
        for i in file.issuers {
            let span = i.span();
            let name = i.get_ref().issuer.clone();
            let cfg = i
                .into_inner()
                .build(base, lookup)
                .map_err(|m| at(span.clone(), &format!("[[issuer]] {name}"), m))?;
            verifier.issuers.push(cfg);
        }
        // Check each issuer's settings now (the caller builds the verifier itself).
        verifier.check()?;

        let mut policy = Policy::default();
        if let Some(d) = file.default {
            let span = d.span();
            let d = d.into_inner();
            if d.path.is_some() || !d.methods.is_empty() {
                return Err(at(span, "[default]", "takes no path or methods".into()));
            }
            policy.default = d.rule().map_err(|m| at(span, "[default]", m))?;
        }
        for mut r in file.routes {
            let span = r.span();
            let route = r.get_mut();
            let Some(path) = route.path.take() else {
                return Err(at(span, "[[route]]", "path is required".into()));
            };
            let path = PathPattern::parse(path.get_ref())
                .map_err(|m| at(path.span(), "[[route]] path", m))?;
            let mut methods = Vec::new();
            for m in std::mem::take(&mut route.methods) {
                let name = m.get_ref().to_ascii_uppercase();
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_uppercase()) {
                    return Err(at(
                        m.span(),
                        "[[route]] methods",
                        format!("{:?} is not an HTTP method", m.get_ref()),
                    ));
                }
                methods.push(name);
            }
            let rule = r
                .into_inner()
                .rule()
                .map_err(|m| at(span, &format!("[[route]] {}", path.as_str()), m))?;
            policy.routes.push(Route {
                methods,
                path,
                rule,
            });
        }
        let g = file.gateway;
        let gateway = GatewayOptions {
            override_headers: g.override_headers,
            allow_method_param: g.allow_method_param,
            trusted_proxies: g
                .trusted_proxies
                .iter()
                .map(|s| IpNet::parse(s))
                .collect::<Result<_, _>>()
                .map_err(|m| ConfigError(format!("[gateway] trusted_proxies: {m}")))?,
        };
        let mut base_paths = Vec::new();
        for b in file.authorizer.base_paths.clone() {
            let c = crate::path::require_canonical(&b)
                .ok()
                .filter(|c| !c.segments().is_empty() && !c.as_str().ends_with('/'))
                .ok_or_else(|| {
                    ConfigError(format!(
                        "[authorizer] base_paths: {b:?} must look like \"/v1\" (canonical, no trailing '/')"
                    ))
                })?;
            base_paths.push(c.as_str().to_string());
        }
        Ok(Self {
            verifier,
            policy,
            headers: g.headers,
            gateway,
            authorizer: AuthorizerOptions {
                base_paths,
                allow_method_param: file.authorizer.allow_method_param,
                freshness: file
                    .authorizer
                    .freshness
                    .map_or(std::time::Duration::from_secs(1), |s| s.0),
                feed_unreachable: file.authorizer.feed_unreachable,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(p: &str) -> CanonicalPath {
        crate::path::canonicalize(p).unwrap()
    }

    #[test]
    fn patterns_match_segments() {
        let p = PathPattern::parse("/orders/{id}").unwrap();
        assert!(p.matches(&c("/orders/42")));
        assert!(p.matches(&c("/Orders/42/")));
        assert!(!p.matches(&c("/orders")));
        assert!(!p.matches(&c("/orders/42/items")));
        let p = PathPattern::parse("/admin/*").unwrap();
        assert!(p.matches(&c("/admin")));
        assert!(p.matches(&c("/admin/x/y")));
        assert!(p.matches(&c("/%61dmin/x")));
        assert!(!p.matches(&c("/administrator")));
        assert!(p.matches(&c("/admin.json")), "format suffix");
        assert!(!p.matches(&c("/admin.json/x")));
        let root = PathPattern::parse("/").unwrap();
        assert!(root.matches(&c("/")));
        assert!(!root.matches(&c("/x")));
        assert!(
            PathPattern::parse("/*")
                .unwrap()
                .matches(&c("/anything/at/all"))
        );
        assert!(PathPattern::parse("/a%20b").unwrap().matches(&c("/A%20B")));
        for bad in [
            "orders", "/a//b", "/a/*/b", "/a/x{y}", "/a/..", "/a;b", "/%61", "/a b",
        ] {
            assert!(PathPattern::parse(bad).is_err(), "{bad}");
        }
    }

    /// Found by the fuzzer (`fuzz/regressions/policy/`): a `?` in a pattern's segment
    /// made its canonical form empty, and start-up panicked on it.
    #[test]
    fn a_pattern_with_a_query_or_fragment_is_an_error_not_a_panic() {
        for bad in ["/?a", "/x/?:y/*", "/#a", "/a/b?c"] {
            let e = PathPattern::parse(bad).unwrap_err();
            assert!(e.contains(bad) || e.contains("'?'"), "{bad}: {e}");
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/regressions/policy");
        for f in std::fs::read_dir(dir).unwrap() {
            let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
            assert!(PolicyFile::parse(&text, Path::new(".")).is_err());
        }
    }

    #[test]
    fn the_leeway_takes_fractions_like_every_duration() {
        let base = Path::new(".");
        let issuer = "[[issuer]]\nissuer = \"https://id.example.com\"\naudiences = [\"api\"]\n";
        for (given, secs) in [("0.5", 1), ("2", 2), ("2.25", 3), ("0", 0)] {
            let f = PolicyFile::parse(&format!("[verifier]\nleeway = {given}\n{issuer}"), base)
                .unwrap();
            assert_eq!(f.verifier.leeway, secs, "{given}");
        }
        assert!(PolicyFile::parse(&format!("[verifier]\nleeway = 300.5\n{issuer}"), base).is_err());
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let base = Path::new(".");
        let head = "[[issuer]]\nissuer = \"https://id.example.com\"\naudiences = [\"api\"]\n";
        let e = PolicyFile::parse(&format!("{head}\n[[route]]\npath = \"orders\"\n"), base)
            .unwrap_err();
        assert!(e.0.starts_with("line 6: [[route]] path"), "{e}");
        let e = PolicyFile::parse(
            &format!("{head}\n[[route]]\npath = \"/x\"\nscope_any = [\"a\"]\n"),
            base,
        )
        .unwrap_err();
        assert!(
            e.0.starts_with("line 7 (scope_any = [\"a\"]): unknown field"),
            "{e}"
        );
        let e = PolicyFile::parse(&format!("{head}algorithms = [\"none\"]\n"), base).unwrap_err();
        assert!(
            e.0.contains("line 4") && e.0.contains("unknown algorithm"),
            "{e}"
        );
        let e = PolicyFile::parse(
            &format!(
                "{head}\n[[route]]\npath = \"/x\"\naccess = \"public\"\nroles_any = [\"a\"]\n"
            ),
            base,
        )
        .unwrap_err();
        assert!(
            e.0.contains("line 5: [[route]] /x: access = \"public\""),
            "{e}"
        );
        let e = PolicyFile::parse(
            "[[issuer]]\nissuer = \"http://id.example.com\"\naudiences = [\"api\"]\n",
            base,
        )
        .unwrap_err();
        assert!(e.0.contains("https://"), "{e}");
        let e = PolicyFile::parse("", base).unwrap_err();
        assert!(e.0.contains("[[issuer]]"), "{e}");
    }

    #[test]
    fn first_matching_route_decides() {
        let text = r#"
[[issuer]]
issuer = "https://id.example.com"
audiences = ["api"]

[default]
access = "deny"

[[route]]
path = "/health"
methods = ["GET"]
access = "public"

[[route]]
path = "/orders/{id}"
methods = ["POST", "put"]
scopes_all = ["orders:write"]

[[route]]
path = "/orders/*"
"#;
        let f = PolicyFile::parse(text, Path::new(".")).unwrap();
        let p = &f.policy;
        assert_eq!(p.decide("GET", &c("/health")).access, Access::Public);
        assert_eq!(p.decide("HEAD", &c("/health")).access, Access::Public);
        assert_eq!(p.decide("POST", &c("/health")).access, Access::Deny);
        assert_eq!(
            p.decide("PUT", &c("/orders/7")).scopes_all,
            vec!["orders:write"]
        );
        assert_eq!(p.decide("GET", &c("/orders/7")), &Rule::authenticated());
        assert_eq!(p.decide("GET", &c("/nothing")).access, Access::Deny);
        assert_eq!(f.headers.subject, "X-Jotgate-Sub");
    }
}

//! The edge commands: `jotgate gateway` (reverse proxy), `jotgate authorizer` (AWS API
//! Gateway Lambda authorizer) and `jotgate token verify --issuer` (any OIDC issuer).
//! All three verify through jotgate-verify; the first two read the same policy file.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jotgate_verify::authorizer::{Authorizer, V2Format};
use jotgate_verify::gateway::{self, GatewayConfig};
use jotgate_verify::policy::PolicyFile;
use jotgate_verify::{IssuerConfig, Verifier, VerifierConfig};
use serde_json::Value;

/// Read a policy file and build its verifier (not started).
pub fn load_policy(path: &Path) -> anyhow::Result<(Arc<Verifier>, PolicyFile)> {
    load_policy_with(path, &|_| None, true)
}

/// [`load_policy`], with `*_env` secrets resolved by `lookup` first (the feed token may be
/// a Secrets Manager / SSM ARN that the settings resolved at start-up).
pub fn load_policy_with(
    path: &Path,
    lookup: jotgate_verify::policy::SecretLookup,
    follow_feeds: bool,
) -> anyhow::Result<(Arc<Verifier>, PolicyFile)> {
    let mut file = PolicyFile::load_with(path, lookup)
        .map_err(|e| anyhow::anyhow!("invalid policy file {e}"))?;
    // In Lambda no long poll outlives an invocation: each decision reads the feed itself.
    file.verifier.follow_feeds = follow_feeds;
    let verifier = Verifier::new(file.verifier.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((verifier, file))
}

/// Where the gateway listens unless --listen says otherwise (8080 is the server's).
pub const GATEWAY_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8081);

/// A bound, not yet running gateway.
pub struct Gateway {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    verifier: Arc<Verifier>,
    router: axum::Router,
    upstream: String,
    limits: crate::serve::ConnLimits,
}

impl Gateway {
    pub async fn build(
        listen: SocketAddr,
        upstream: &str,
        policy: &Path,
        limits: crate::serve::ConnLimits,
    ) -> anyhow::Result<Self> {
        crate::init_crypto();
        let (verifier, file) = load_policy(policy)?;
        let router = gateway::router(
            verifier.clone(),
            GatewayConfig {
                upstream: upstream.to_string(),
                policy: file.policy,
                headers: file.headers,
                options: file.gateway,
                upstream_timeout: Duration::from_secs(60),
            },
        )
        .map_err(|e| anyhow::anyhow!("invalid --upstream: {e}"))?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("cannot listen on {listen}"))?;
        let addr = listener.local_addr()?;
        Ok(Self {
            listener,
            addr,
            verifier,
            router,
            upstream: upstream.to_string(),
            limits,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Fetch issuer keys, follow revocation feeds, serve until `shutdown`.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let _background = self.verifier.start().await;
        tracing::info!(upstream = %self.upstream, "jotgate gateway listening on http://{}", self.addr);
        crate::serve::serve(self.listener, None, self.router, self.limits, shutdown).await?;
        Ok(())
    }
}

/// The authorizer's policy: `feed_token` (the `feed_token` setting, an ARN already
/// resolved) answers a policy's `revocation_token_env = "JOTGATE_FEED_TOKEN"`; the feeds
/// are read before decisions, not followed (Lambda freezes the process between events).
pub fn load_authorizer_policy(
    policy: &Path,
    feed_token: Option<&secrecy::SecretString>,
) -> anyhow::Result<(Arc<Verifier>, PolicyFile)> {
    let token = feed_token.map(|t| secrecy::ExposeSecret::expose_secret(t).to_string());
    let lookup = move |name: &str| {
        (name == "JOTGATE_FEED_TOKEN")
            .then(|| token.clone())
            .flatten()
    };
    load_policy_with(policy, &lookup, false)
}

/// Run as an AWS Lambda authorizer: one event at a time from the Lambda Runtime API.
/// `feed_token` (the `feed_token` setting, an ARN already resolved) answers a policy's
/// `revocation_token_env = "JOTGATE_FEED_TOKEN"`.
pub async fn run_authorizer(
    policy: &Path,
    v2: V2Format,
    feed_token: Option<&secrecy::SecretString>,
) -> anyhow::Result<()> {
    crate::lambda::require_lambda_env("jotgate authorizer")?;
    crate::init_crypto();
    let (verifier, file) = load_authorizer_policy(policy, feed_token)?;
    // Keys are fetched once per container, before the first event, and the revocation
    // feeds read to their end.
    let _background = verifier.start().await;
    if let Err(e) = verifier
        .bring_up_to_date(Duration::ZERO, Duration::from_secs(5))
        .await
    {
        tracing::warn!(error = %e, "revocations could not be read at start; retried at each decision");
    }
    let authorizer = Arc::new(Authorizer::with_options(
        verifier,
        file.policy,
        v2,
        file.authorizer,
    ));
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| {
            let a = authorizer.clone();
            async move {
                let started = std::time::Instant::now();
                let out = a.handle(&event.payload).await;
                log_decision(&event, out.as_ref().ok(), started.elapsed());
                out.map_err(|e| -> lambda_runtime::Error { Box::new(e) })
            }
        },
    ))
    .await
    .map_err(|e| anyhow::anyhow!("lambda runtime: {e}"))
}

/// The authorizer's access-log line: one per event, at info. Method and path (never the
/// query string, a header or the token), the decision and its code, the Lambda request id.
fn log_decision(event: &lambda_runtime::LambdaEvent<Value>, out: Option<&Value>, took: Duration) {
    let p = &event.payload;
    let text = |v: &Value| v.as_str().map(str::to_string);
    let method = text(&p["httpMethod"])
        .or_else(|| text(&p["requestContext"]["http"]["method"]))
        .unwrap_or_default();
    let path = text(&p["rawPath"])
        .or_else(|| text(&p["path"]))
        .or_else(|| text(&p["methodArn"]))
        .unwrap_or_default();
    let allowed = out.is_some_and(|v| {
        v["isAuthorized"] == Value::Bool(true)
            || v["policyDocument"]["Statement"][0]["Effect"] == "Allow"
    });
    let code = out
        .and_then(|v| v["context"]["code"].as_str())
        .unwrap_or("");
    tracing::info!(
        target: "access",
        request_id = %event.context.request_id.escape_debug(),
        method = %method.escape_debug(),
        path = %path.escape_debug(),
        decision = if allowed { "allow" } else { "deny" },
        code,
        latency_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        "decided"
    );
}

/// Verify `token` against any OpenID Connect issuer (discovery → JWKS) and print its claims.
/// Without `audience` the token's own `aud` is accepted, and a note says so on stderr.
pub async fn token_verify_oidc(
    issuer: &str,
    audience: Option<&str>,
    token: &str,
) -> anyhow::Result<String> {
    crate::init_crypto();
    let token = token.trim();
    let audience = match audience {
        Some(a) => a.to_string(),
        None => {
            let aud =
                unverified_aud(token)?.context("the token names no audience; pass --audience")?;
            eprintln!(
                "note: audience not checked (accepting the token's own aud {aud:?}); pass --audience to check it"
            );
            aud
        }
    };
    let cfg = VerifierConfig {
        issuers: vec![IssuerConfig::new(issuer, audience)],
        cache_capacity: 0,
        ..VerifierConfig::default()
    };
    let verifier = Verifier::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?;
    let _bg = verifier.start().await;
    match verifier.verify(token).await {
        Ok(p) => Ok(serde_json::to_string_pretty(&p.claims)?),
        Err(e) if e.kind() == jotgate_verify::VerifyErrorKind::IssuerUnavailable => {
            anyhow::bail!("cannot fetch the keys of {issuer} (see the warning above)")
        }
        Err(e) => anyhow::bail!("invalid token: {e}"),
    }
}

/// The token's own `aud` (unverified), after the same structural checks as verification.
fn unverified_aud(token: &str) -> anyhow::Result<Option<String>> {
    let compact = jotgate_core::parse_compact(token, usize::MAX)
        .map_err(|e| anyhow::anyhow!("invalid token: {e}"))?;
    let v: Value = serde_json::from_slice(&compact.payload).unwrap_or_default();
    Ok(match v.get("aud") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(a)) => a.first().and_then(Value::as_str).map(str::to_string),
        _ => None,
    })
}

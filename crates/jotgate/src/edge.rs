//! The edge commands: `jotgate gateway` (reverse proxy), `jotgate authorizer` (AWS API
//! Gateway Lambda authorizer) and `jotgate token verify --issuer` (any OIDC issuer).
//! All three verify through jotgate-verify; the first two read the same policy file.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use jotgate_verify::authorizer::V2Format;
use jotgate_verify::gateway::{self, GatewayConfig};
use jotgate_verify::policy::PolicyFile;
use jotgate_verify::{IssuerConfig, Verifier, VerifierConfig};
use serde_json::Value;

/// Read a policy file and build its verifier (not started), following revocation feeds
/// in the background. (The Lambda authorizer's: [`load_authorizer_policy`].)
pub fn load_policy(path: &Path) -> anyhow::Result<(Arc<Verifier>, PolicyFile)> {
    let file = PolicyFile::load(path).map_err(|e| anyhow::anyhow!("invalid policy file {e}"))?;
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
    router: jotgate_verify::service::App,
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
    let token = feed_token.map(secrecy::ExposeSecret::expose_secret);
    jotgate_verify::lambda::load_policy(policy, token).map_err(anyhow::Error::msg)
}

/// Run as an AWS Lambda authorizer: one event at a time from the Lambda Runtime API
/// ([`jotgate_verify::lambda::run_authorizer`], which the authorizer-only package runs
/// too). `feed_token` (the `feed_token` setting, an ARN already resolved) answers a
/// policy's `revocation_token_env = "JOTGATE_FEED_TOKEN"`.
pub async fn run_authorizer(
    policy: &Path,
    v2: V2Format,
    feed_token: Option<&secrecy::SecretString>,
) -> anyhow::Result<()> {
    crate::init_crypto();
    let token = feed_token.map(secrecy::ExposeSecret::expose_secret);
    jotgate_verify::lambda::run_authorizer(policy, v2, token, "jotgate authorizer")
        .await
        .map_err(anyhow::Error::msg)
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

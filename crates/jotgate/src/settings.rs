//! Configuration: built-in defaults, then a TOML file, then `JOTGATE_*` environment
//! variables, then command-line flags — each layer overriding the one before.
//!
//! Every setting is one field below, with its flag, variable and TOML key named alike
//! (`--access-ttl`, `JOTGATE_ACCESS_TTL`, `access_ttl`). Secrets (`hs256_secret`, `pepper`)
//! are `SecretString`s: never printed, never logged.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use jotgate_core::{KeyMaterial, PasswordParams, SigningAlg, TokenPolicy};
use jotgate_server::limits::RateLimitConfig;
use jotgate_server::{KeySource, ServerConfig};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub const DEFAULT_DATABASE: &str = "jotgate.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Settings shared by every command. Unset fields fall through to the next layer.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// SQLite database file; created on first start [default: ./jotgate.db]
    #[arg(long, env = "JOTGATE_DATABASE", global = true, value_name = "PATH")]
    pub database: Option<PathBuf>,

    /// Data store URL: sqlite://PATH, postgres://USER[:PASSWORD]@HOST[:PORT]/DB or dynamodb://TABLE[?region=R&endpoint=URL] (overrides --database) [default: sqlite://<database>]
    #[arg(
        long,
        env = "JOTGATE_STORE",
        global = true,
        hide_env_values = true,
        value_name = "URL"
    )]
    #[serde(default, deserialize_with = "secret")]
    pub store: Option<SecretString>,

    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "JOTGATE_LISTEN", global = true, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Issuer (`iss`) of tokens and base URL of the discovery documents
    /// [default: http(s)://<listen address>]
    #[arg(long, env = "JOTGATE_ISSUER", global = true, value_name = "URL")]
    pub issuer: Option<String>,

    /// Audience (`aud`) of access tokens [default: jotgate]
    #[arg(long, env = "JOTGATE_AUDIENCE", global = true)]
    pub audience: Option<String>,

    /// Access-token lifetime in seconds [default: 900]
    #[arg(long, env = "JOTGATE_ACCESS_TTL", global = true, value_name = "SECS")]
    pub access_ttl: Option<i64>,

    /// Refresh-token lifetime in seconds, renewed at each rotation [default: 2592000]
    #[arg(long, env = "JOTGATE_REFRESH_TTL", global = true, value_name = "SECS")]
    pub refresh_ttl: Option<i64>,

    /// Seconds during which a repeat of a just-rotated refresh token gets the same
    /// successor instead of revoking the session [default: 10]
    #[arg(
        long,
        env = "JOTGATE_REFRESH_GRACE",
        global = true,
        value_name = "SECS"
    )]
    pub refresh_grace: Option<i64>,

    /// Clock-skew allowance in seconds for exp, nbf and iat [default: 30]
    #[arg(long, env = "JOTGATE_LEEWAY", global = true, value_name = "SECS")]
    pub leeway: Option<i64>,

    /// Signing algorithm for generated keys: RS256, ES256 or EdDSA; HS256 needs
    /// --hs256-secret [default: RS256]
    #[arg(long, env = "JOTGATE_ALG", global = true)]
    pub alg: Option<String>,

    /// Shared secret (at least 32 bytes) for HS256 mode; nothing is published in the JWKS
    #[arg(
        long,
        env = "JOTGATE_HS256_SECRET",
        global = true,
        hide_env_values = true
    )]
    #[serde(default, deserialize_with = "secret")]
    pub hs256_secret: Option<SecretString>,

    /// Server-side pepper mixed into every password hash, or the Secrets Manager / SSM ARN holding it (changing it invalidates all passwords)
    #[arg(long, env = "JOTGATE_PEPPER", global = true, hide_env_values = true)]
    #[serde(default, deserialize_with = "secret")]
    pub pepper: Option<SecretString>,

    /// Peppers replaced by --pepper, comma-separated (or the ARN holding them): hashes made with one still verify and are upgraded at the next login
    #[arg(
        long,
        env = "JOTGATE_OLD_PEPPERS",
        global = true,
        hide_env_values = true
    )]
    #[serde(default, deserialize_with = "secret")]
    pub old_peppers: Option<SecretString>,

    /// Previous master keys, comma-separated base64 (or the ARN holding them): keys sealed with one are opened and re-sealed with --master-key
    #[arg(
        long,
        env = "JOTGATE_OLD_MASTER_KEYS",
        global = true,
        hide_env_values = true,
        value_name = "BASE64,…"
    )]
    #[serde(default, deserialize_with = "secret")]
    pub old_master_keys: Option<SecretString>,

    /// argon2id memory cost in KiB [default: 19456 (OWASP)]
    #[arg(
        long,
        env = "JOTGATE_ARGON2_MEMORY_KIB",
        global = true,
        value_name = "KIB"
    )]
    pub argon2_memory_kib: Option<u32>,

    /// argon2id iterations [default: 2]
    #[arg(
        long,
        env = "JOTGATE_ARGON2_ITERATIONS",
        global = true,
        value_name = "N"
    )]
    pub argon2_iterations: Option<u32>,

    /// Concurrent password hashes; each holds the argon2 memory cost [default: CPU count]
    #[arg(long, env = "JOTGATE_HASH_WORKERS", global = true, value_name = "N")]
    pub hash_workers: Option<usize>,

    /// Logins waiting for a hashing worker before new ones get 429 [default: 32 × CPUs]
    #[arg(long, env = "JOTGATE_HASH_QUEUE", global = true, value_name = "N")]
    pub hash_queue: Option<usize>,

    /// Failed logins per username before growing delays start [default: 5]
    #[arg(
        long,
        env = "JOTGATE_LOGIN_USER_FAILURES",
        global = true,
        value_name = "N"
    )]
    pub login_user_failures: Option<u32>,

    /// Failed logins per client address before growing delays start [default: 20]
    #[arg(
        long,
        env = "JOTGATE_LOGIN_IP_FAILURES",
        global = true,
        value_name = "N"
    )]
    pub login_ip_failures: Option<u32>,

    /// First lockout delay in seconds; doubles with each further failure [default: 1]
    #[arg(long, env = "JOTGATE_LOGIN_DELAY", global = true, value_name = "SECS")]
    pub login_delay: Option<u64>,

    /// Longest lockout delay in seconds [default: 900]
    #[arg(
        long,
        env = "JOTGATE_LOGIN_MAX_DELAY",
        global = true,
        value_name = "SECS"
    )]
    pub login_max_delay: Option<u64>,

    /// Also accept the legacy `x-access-token` header [default: false]
    #[arg(long, env = "JOTGATE_ACCEPT_X_ACCESS_TOKEN", global = true, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub accept_x_access_token: Option<bool>,

    /// Take the client address from X-Forwarded-For; only behind a proxy you run (one proxy; see --forwarded-hops) [default: false]
    #[arg(long, env = "JOTGATE_TRUST_FORWARDED_FOR", global = true, num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub trust_forwarded_for: Option<bool>,

    /// Number of proxies in front that append to X-Forwarded-For; the client address is the entry that many from the right (0: the socket peer) [default: 1 with --trust-forwarded-for, else 0]
    #[arg(long, env = "JOTGATE_FORWARDED_HOPS", global = true, value_name = "N")]
    pub forwarded_hops: Option<u8>,

    /// Public sign-up with POST /signup: open or closed (accounts then come from `jotgate users add`) [default: open]
    #[arg(
        long,
        env = "JOTGATE_SIGNUP",
        global = true,
        value_name = "open|closed"
    )]
    pub signup: Option<SignupMode>,

    /// Shortest password accepted, in characters (white space and combining marks alone do not count; at least 8) [default: 8]
    #[arg(
        long,
        env = "JOTGATE_PASSWORD_MIN_LENGTH",
        global = true,
        value_name = "N"
    )]
    pub password_min_length: Option<usize>,

    /// Sign-up attempts per client address before growing delays start [default: 20]
    #[arg(long, env = "JOTGATE_SIGNUP_IP_LIMIT", global = true, value_name = "N")]
    pub signup_ip_limit: Option<u32>,

    /// Live sessions per user; a new login ends the oldest beyond it [default: 100]
    #[arg(long, env = "JOTGATE_MAX_SESSIONS", global = true, value_name = "N")]
    pub max_sessions: Option<usize>,

    /// How often keys and revocations are re-read from the store, in seconds [default: 5]
    #[arg(
        long,
        env = "JOTGATE_SYNC_INTERVAL",
        global = true,
        value_name = "SECS"
    )]
    pub sync_interval: Option<u64>,

    /// Encrypt signing keys at rest (AES-256-GCM) with this 32-byte key, base64 (`openssl rand -base64 32`), or the Secrets Manager / SSM ARN holding it [default: keys stored unencrypted]
    #[arg(
        long,
        env = "JOTGATE_MASTER_KEY",
        global = true,
        hide_env_values = true,
        value_name = "BASE64"
    )]
    #[serde(default, deserialize_with = "secret")]
    pub master_key: Option<SecretString>,

    /// Bearer secret that opens GET /api/v1/revocations to edge verifiers (at least 32 characters) [default: feed closed]
    #[arg(
        long,
        env = "JOTGATE_FEED_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "SECRET"
    )]
    #[serde(default, deserialize_with = "secret")]
    pub feed_token: Option<SecretString>,

    /// Seconds a client has to send a whole request head (or finish a TLS handshake); also how long an idle keep-alive connection stays open [default: 10]
    #[arg(
        long,
        env = "JOTGATE_HEADER_TIMEOUT",
        global = true,
        value_name = "SECS"
    )]
    pub header_timeout: Option<u64>,

    /// Connections open at once; more wait in the kernel's backlog [default: the descriptor limit less 256]
    #[arg(long, env = "JOTGATE_MAX_CONNECTIONS", global = true, value_name = "N")]
    pub max_connections: Option<usize>,

    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS
    #[arg(long, env = "JOTGATE_TLS_CERT", global = true, value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM)
    #[arg(long, env = "JOTGATE_TLS_KEY", global = true, value_name = "PEM")]
    pub tls_key: Option<PathBuf>,
}

/// Whether anyone may sign up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignupMode {
    Open,
    Closed,
}

/// A comma-separated list of secrets, each a secret of its own.
pub fn split_secrets(s: Option<&SecretString>) -> Vec<SecretString> {
    s.map(|s| {
        s.expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| SecretString::from(p.to_string()))
            .collect()
    })
    .unwrap_or_default()
}

fn secret<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<SecretString>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.map(SecretString::from))
}

macro_rules! layer {
    ($hi:expr, $lo:expr; $($f:ident),*) => { $( if $hi.$f.is_none() { $hi.$f = $lo.$f.clone(); } )* };
}

impl Settings {
    /// Flags and environment (already merged by clap) over the TOML file, if any.
    pub fn resolve(mut self, file: Option<&Path>) -> anyhow::Result<Self> {
        let Some(path) = file else { return Ok(self) };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let from_file: Settings = toml::from_str(&text)
            .with_context(|| format!("invalid config file {}", path.display()))?;
        layer!(self, from_file; database, store, listen, issuer, audience, access_ttl, refresh_ttl,
            refresh_grace, leeway, alg, hs256_secret, pepper, old_peppers, old_master_keys, argon2_memory_kib,
            argon2_iterations, hash_workers, hash_queue, login_user_failures,
            login_ip_failures, login_delay, login_max_delay, accept_x_access_token,
            trust_forwarded_for, forwarded_hops, signup, signup_ip_limit, max_sessions, password_min_length, sync_interval, master_key, feed_token, header_timeout, max_connections, tls_cert, tls_key);
        Ok(self)
    }

    /// Replace secret settings given as references — the ARN of a Secrets Manager secret
    /// or an SSM Parameter Store parameter — by the secrets they name (feature
    /// `aws-secrets`; one fetch per reference, none otherwise).
    pub async fn resolve_secret_refs(mut self) -> anyhow::Result<Self> {
        let slots = [
            ("store", "JOTGATE_STORE", &mut self.store),
            (
                "hs256_secret",
                "JOTGATE_HS256_SECRET",
                &mut self.hs256_secret,
            ),
            ("pepper", "JOTGATE_PEPPER", &mut self.pepper),
            ("old_peppers", "JOTGATE_OLD_PEPPERS", &mut self.old_peppers),
            (
                "old_master_keys",
                "JOTGATE_OLD_MASTER_KEYS",
                &mut self.old_master_keys,
            ),
            ("master_key", "JOTGATE_MASTER_KEY", &mut self.master_key),
            ("feed_token", "JOTGATE_FEED_TOKEN", &mut self.feed_token),
        ];
        for (name, env, slot) in slots {
            if let Some(value) = slot.as_ref() {
                *slot = Some(resolve_secret(name, env, value).await?);
            }
        }
        Ok(self)
    }

    pub fn database(&self) -> PathBuf {
        self.database
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE))
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"))
    }

    pub fn tls(&self) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Ok(Some((c.clone(), k.clone()))),
            (None, None) => Ok(None),
            _ => bail!("--tls-cert and --tls-key must be given together"),
        }
    }

    /// Bounds on client connections for `serve` and `gateway`.
    pub fn conn_limits(&self) -> anyhow::Result<crate::serve::ConnLimits> {
        let d = crate::serve::ConnLimits::default();
        let limits = crate::serve::ConnLimits {
            header_timeout: self
                .header_timeout
                .map_or(d.header_timeout, Duration::from_secs),
            max_connections: self.max_connections.unwrap_or(d.max_connections),
        };
        if limits.header_timeout.is_zero() || limits.max_connections == 0 {
            bail!(
                "invalid setting: header_timeout (JOTGATE_HEADER_TIMEOUT) and max_connections (JOTGATE_MAX_CONNECTIONS) must be at least 1"
            );
        }
        Ok(limits)
    }

    pub fn alg(&self) -> anyhow::Result<SigningAlg> {
        let alg = SigningAlg::parse(self.alg.as_deref().unwrap_or("RS256"))
            .context("invalid setting alg (JOTGATE_ALG)")?;
        if alg == SigningAlg::HS256 && self.hs256_secret.is_none() {
            bail!("alg HS256 needs a shared secret: set --hs256-secret or JOTGATE_HS256_SECRET");
        }
        Ok(alg)
    }

    pub fn key_source(&self) -> anyhow::Result<KeySource> {
        let alg = self.alg()?;
        match (&self.hs256_secret, alg) {
            (Some(s), _) => {
                if self.alg.is_some() && alg != SigningAlg::HS256 {
                    bail!(
                        "--hs256-secret is set but alg is {alg}: set alg to HS256 or drop the secret"
                    );
                }
                let key = KeyMaterial::shared_secret(s.expose_secret().as_bytes())
                    .context("invalid setting hs256_secret (JOTGATE_HS256_SECRET)")?;
                Ok(KeySource::SharedSecret(Box::new(key)))
            }
            (None, alg) => Ok(KeySource::Stored { generate: alg }),
        }
    }

    pub fn policy(&self) -> anyhow::Result<TokenPolicy> {
        let d = TokenPolicy::default();
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let issuer = self
            .issuer
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen()));
        let p = TokenPolicy {
            issuer,
            audience: self.audience.clone().unwrap_or(d.audience),
            access_ttl: self.access_ttl.unwrap_or(d.access_ttl),
            leeway: self.leeway.unwrap_or(d.leeway),
            max_token_bytes: d.max_token_bytes,
        };
        if p.access_ttl < 1 {
            bail!("invalid setting access_ttl (JOTGATE_ACCESS_TTL): must be at least 1 second");
        }
        if !(0..=300).contains(&p.leeway) {
            bail!("invalid setting leeway (JOTGATE_LEEWAY): must be between 0 and 300 seconds");
        }
        if p.audience.is_empty() || p.issuer.is_empty() {
            bail!("invalid setting issuer/audience: must not be empty");
        }
        Ok(p)
    }

    /// The password hasher: parameters, pepper and the peppers it replaced.
    pub fn password_hasher(&self) -> anyhow::Result<jotgate_core::PasswordHasher> {
        let old = split_secrets(self.old_peppers.as_ref());
        jotgate_core::PasswordHasher::with_old_peppers(
            self.password_params(),
            self.pepper.clone(),
            old,
        )
        .map_err(|e| anyhow::anyhow!("invalid setting pepper/argon2 (JOTGATE_PEPPER): {e}"))
    }

    pub fn password_params(&self) -> PasswordParams {
        let d = PasswordParams::default();
        PasswordParams {
            memory_kib: self.argon2_memory_kib.unwrap_or(d.memory_kib),
            iterations: self.argon2_iterations.unwrap_or(d.iterations),
            parallelism: d.parallelism,
        }
    }

    pub fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let d = ServerConfig::default();
        let r = RateLimitConfig::default();
        let cfg = ServerConfig {
            policy: self.policy()?,
            refresh_ttl: self.refresh_ttl.unwrap_or(d.refresh_ttl),
            refresh_grace: self.refresh_grace.unwrap_or(d.refresh_grace),
            rate_limit: RateLimitConfig {
                user_free_failures: self.login_user_failures.unwrap_or(r.user_free_failures),
                ip_free_failures: self.login_ip_failures.unwrap_or(r.ip_free_failures),
                signup_free_attempts: self.signup_ip_limit.unwrap_or(r.signup_free_attempts),
                base_delay: self.login_delay.map_or(r.base_delay, Duration::from_secs),
                max_delay: self
                    .login_max_delay
                    .map_or(r.max_delay, Duration::from_secs),
                reset_after: r.reset_after,
            },
            hash_workers: self.hash_workers.unwrap_or(d.hash_workers),
            hash_queue: self.hash_queue.unwrap_or(d.hash_queue),
            accept_x_access_token: self.accept_x_access_token.unwrap_or(false),
            forwarded_hops: self
                .forwarded_hops
                .unwrap_or(u8::from(self.trust_forwarded_for.unwrap_or(false))),
            signup_open: self.signup != Some(SignupMode::Closed),
            password_min_length: self
                .password_min_length
                .unwrap_or(jotgate_core::password::MIN_LEN),
            max_sessions: self.max_sessions.unwrap_or(d.max_sessions),
            max_body_bytes: d.max_body_bytes,
            sync_interval: self
                .sync_interval
                .map_or(d.sync_interval, Duration::from_secs),
            feed_token: self.feed_token.clone(),
        };
        if cfg
            .feed_token
            .as_ref()
            .is_some_and(|t| t.expose_secret().chars().count() < 32)
        {
            bail!(
                "invalid setting feed_token (JOTGATE_FEED_TOKEN): must be at least 32 characters"
            );
        }
        if !(1..=10_000).contains(&cfg.max_sessions) {
            bail!(
                "invalid setting max_sessions (JOTGATE_MAX_SESSIONS): must be between 1 and 10000"
            );
        }
        if cfg.refresh_ttl < 1 {
            bail!("invalid setting refresh_ttl (JOTGATE_REFRESH_TTL): must be at least 1 second");
        }
        if !(0..=300).contains(&cfg.refresh_grace) {
            bail!(
                "invalid setting refresh_grace (JOTGATE_REFRESH_GRACE): must be between 0 and 300"
            );
        }
        if !(jotgate_core::password::MIN_LEN..=256).contains(&cfg.password_min_length) {
            bail!(
                "invalid setting password_min_length (JOTGATE_PASSWORD_MIN_LENGTH): must be between 8 and 256"
            );
        }
        if cfg.hash_workers == 0 || cfg.sync_interval.is_zero() {
            bail!("invalid setting: hash_workers and sync_interval must be at least 1");
        }
        Ok(cfg)
    }
}

#[cfg(feature = "aws-secrets")]
async fn resolve_secret(
    name: &str,
    env: &str,
    value: &SecretString,
) -> anyhow::Result<SecretString> {
    use jotgate_aws::secrets;
    match secrets::reference(value.expose_secret()) {
        Ok(None) => Ok(value.clone()),
        Ok(Some(r)) => {
            let secret = secrets::fetch(&r)
                .await
                .map_err(|e| anyhow::anyhow!("cannot resolve setting {name} ({env}): {e}"))?;
            tracing::info!(setting = name, "read a secret setting from AWS");
            Ok(secret)
        }
        Err(e) => bail!("invalid setting {name} ({env}): {e}"),
    }
}

#[cfg(not(feature = "aws-secrets"))]
async fn resolve_secret(
    name: &str,
    env: &str,
    value: &SecretString,
) -> anyhow::Result<SecretString> {
    let v = value.expose_secret();
    if v.starts_with("arn:aws") && (v.contains(":secretsmanager:") || v.contains(":ssm:")) {
        bail!(
            "setting {name} ({env}) names an AWS secret, but this jotgate was built without the \
             `aws-secrets` feature (cargo build --features aws-secrets)"
        );
    }
    Ok(value.clone())
}

//! Configuration: built-in defaults, then a TOML file, then `JOTGATE_*` environment
//! variables, then command-line flags — each layer overriding the one before.
//!
//! **Each setting is declared once**, as one field of a group below (a `clap::Args`
//! struct). That declaration yields its flag, its variable, its help and default text, and
//! its TOML key — the variable's name without `JOTGATE_`, in lower case (`--access-ttl`,
//! `JOTGATE_ACCESS_TTL`, `access_ttl`). The TOML file is applied by [`crate::cli`] as the
//! arguments' default values, so clap itself layers file < environment < flag and no
//! hand-kept merge list exists. Each command flattens only the groups it reads.
//!
//! Secrets are `SecretString`s (never printed, never logged) whose argument hides its
//! environment value; their flag takes a *file* holding the secret (`--pepper-file`), never
//! the secret itself, which `ps` would show.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use jotgate_core::{KeyMaterial, PasswordParams, SigningAlg, TokenPolicy};
use jotgate_server::limits::RateLimitConfig;
use jotgate_server::{KeySource, ServerConfig};
use secrecy::{ExposeSecret, SecretString};

pub const DEFAULT_DATABASE: &str = "jotgate.db";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Where the data lives.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Store")]
pub struct StoreSettings {
    /// SQLite database file; created on first start [default: ./jotgate.db]
    #[arg(long, env = "JOTGATE_DATABASE", value_name = "PATH")]
    pub database: Option<PathBuf>,

    /// Data store URL (overrides --database): sqlite://PATH,
    /// postgres://USER@HOST[:PORT]/DB[?sslmode=verify-full&sslrootcert=PEM] or
    /// dynamodb://TABLE[?region=R&endpoint=URL&create_table=true]. A URL with a database
    /// password is read from the environment or the config file only
    /// [default: sqlite://<database>]
    #[arg(
        long,
        env = "JOTGATE_STORE",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub store: Option<SecretString>,
}

/// The key that encrypts signing keys at rest, for the commands that read keys.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Key encryption")]
pub struct SealSettings {
    /// File holding the key that encrypts signing keys at rest (AES-256-GCM): 32 bytes,
    /// base64 (`openssl rand -base64 32`), or the Secrets Manager / SSM ARN holding it
    /// [default: keys stored unencrypted]
    #[arg(
        long = "master-key-file",
        env = "JOTGATE_MASTER_KEY",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub master_key: Option<SecretString>,

    /// File holding the master keys that --master-key-file replaced, comma-separated base64
    /// (or the ARN holding them): keys sealed with one are opened and re-sealed
    #[arg(
        long = "old-master-keys-file",
        env = "JOTGATE_OLD_MASTER_KEYS",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub old_master_keys: Option<SecretString>,
}

/// What access tokens say and how they are signed and checked.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Tokens")]
pub struct TokenSettings {
    /// Issuer (`iss`) of tokens and base URL of the discovery documents; set it to your
    /// public URL [default: http(s)://<listen address>]
    #[arg(long, env = "JOTGATE_ISSUER", value_name = "URL")]
    pub issuer: Option<String>,

    /// Audience (`aud`) of access tokens [default: jotgate]
    #[arg(long, env = "JOTGATE_AUDIENCE")]
    pub audience: Option<String>,

    /// Access-token lifetime in seconds [default: 900]
    #[arg(long, env = "JOTGATE_ACCESS_TTL", value_name = "SECS",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub access_ttl: Option<i64>,

    /// Clock-skew allowance in seconds for exp, nbf and iat, 0–300 [default: 30]
    #[arg(long, env = "JOTGATE_LEEWAY", value_name = "SECS",
          value_parser = clap::value_parser!(i64).range(0..=300))]
    pub leeway: Option<i64>,

    /// Signing algorithm for generated keys: RS256, ES256 or EdDSA; HS256 needs
    /// --hs256-secret-file [default: RS256]
    #[arg(long, env = "JOTGATE_ALG", value_name = "ALG")]
    pub alg: Option<String>,

    /// File holding the shared secret (at least 32 bytes) for HS256 mode; nothing is
    /// published in the JWKS
    #[arg(
        long = "hs256-secret-file",
        env = "JOTGATE_HS256_SECRET",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub hs256_secret: Option<SecretString>,
}

/// Refresh tokens, sessions, and how often the server re-reads shared state.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Sessions")]
pub struct SessionSettings {
    /// Refresh-token lifetime in seconds, renewed at each rotation [default: 2592000]
    #[arg(long, env = "JOTGATE_REFRESH_TTL", value_name = "SECS",
          value_parser = clap::value_parser!(i64).range(1..))]
    pub refresh_ttl: Option<i64>,

    /// Seconds during which a repeat of a just-rotated refresh token gets the same
    /// successor instead of revoking the session, 0–300 [default: 10]
    #[arg(long, env = "JOTGATE_REFRESH_GRACE", value_name = "SECS",
          value_parser = clap::value_parser!(i64).range(0..=300))]
    pub refresh_grace: Option<i64>,

    /// Live sessions per user, 1–10000; a new login ends the oldest beyond it [default: 100]
    #[arg(long, env = "JOTGATE_MAX_SESSIONS", value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000))]
    pub max_sessions: Option<usize>,

    /// How often keys and revocations are re-read from the store, in seconds [default: 5]
    #[arg(long, env = "JOTGATE_SYNC_INTERVAL", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_interval: Option<u64>,
}

/// How passwords are hashed and which are accepted.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Passwords")]
pub struct PasswordSettings {
    /// File holding the server-side pepper mixed into every password hash (at least 32
    /// bytes), or the Secrets Manager / SSM ARN holding it
    #[arg(
        long = "pepper-file",
        env = "JOTGATE_PEPPER",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub pepper: Option<SecretString>,

    /// File holding the peppers that --pepper-file replaced, comma-separated (or the ARN
    /// holding them): their hashes still verify and are upgraded at the next login
    #[arg(
        long = "old-peppers-file",
        env = "JOTGATE_OLD_PEPPERS",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub old_peppers: Option<SecretString>,

    /// argon2id memory cost in KiB [default: 19456 (OWASP)]
    #[arg(long, env = "JOTGATE_ARGON2_MEMORY_KIB", value_name = "KIB")]
    pub argon2_memory_kib: Option<u32>,

    /// argon2id iterations [default: 2]
    #[arg(long, env = "JOTGATE_ARGON2_ITERATIONS", value_name = "N")]
    pub argon2_iterations: Option<u32>,

    /// Shortest password accepted, 8–256 characters (white space and combining marks
    /// alone do not count) [default: 8]
    #[arg(long, env = "JOTGATE_PASSWORD_MIN_LENGTH", value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(8..=256))]
    pub password_min_length: Option<usize>,
}

/// Who may call the HTTP API, and how the client is identified.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "HTTP API")]
pub struct ApiSettings {
    /// Public sign-up with POST /signup: open or closed (accounts then come from
    /// `jotgate users add`) [default: open]
    #[arg(long, env = "JOTGATE_SIGNUP", value_name = "open|closed")]
    pub signup: Option<SignupMode>,

    /// Also accept the legacy `x-access-token` header [default: false]
    #[arg(long, env = "JOTGATE_ACCEPT_X_ACCESS_TOKEN", num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub accept_x_access_token: Option<bool>,

    /// Take the client address from X-Forwarded-For; only behind a proxy you run (one
    /// proxy; see --forwarded-hops) [default: false]
    #[arg(long, env = "JOTGATE_TRUST_FORWARDED_FOR", num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub trust_forwarded_for: Option<bool>,

    /// Number of proxies in front that append to X-Forwarded-For; the client address is
    /// the entry that many from the right (0: the socket peer) [default: 1 with
    /// --trust-forwarded-for, else 0]
    #[arg(long, env = "JOTGATE_FORWARDED_HOPS", value_name = "N")]
    pub forwarded_hops: Option<u8>,

    /// Browser origins allowed to call the API (CORS), comma-separated, each
    /// scheme://host[:port] (e.g. https://app.example.com) [default: none]
    #[arg(long, env = "JOTGATE_CORS_ORIGINS", value_name = "URL")]
    pub cors_origins: Option<String>,

    /// app_metadata keys to put into access tokens, as key=claim pairs, comma-separated;
    /// each claim namespaced (plan=https://example.com/plan) [default: none]
    #[arg(long, env = "JOTGATE_APP_METADATA_CLAIMS", value_name = "PAIRS")]
    pub app_metadata_claims: Option<String>,

    /// Days a security event is kept in the audit log [default: 90]
    #[arg(long, env = "JOTGATE_AUDIT_RETENTION_DAYS", value_name = "N",
          value_parser = clap::value_parser!(i64).range(1..=3650))]
    pub audit_retention_days: Option<i64>,

    /// Let those origins send credentials (cookies, HTTP auth): Access-Control-Allow-
    /// Credentials [default: false]
    #[arg(long, env = "JOTGATE_CORS_CREDENTIALS", num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL")]
    pub cors_credentials: Option<bool>,
}

/// Login and sign-up throttling, and the hashing pool that bounds them.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Login limits")]
pub struct LoginSettings {
    /// Wrong passwords per username from one client address answered 401 before the next
    /// attempt from that address gets 429 with growing delays [default: 5]
    #[arg(long, env = "JOTGATE_LOGIN_USER_FAILURES", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_user_failures: Option<u32>,

    /// Wrong passwords evaluated per username from all addresses together in an hour;
    /// past it every attempt gets 429 until an hour after the last [default: 100]
    #[arg(long, env = "JOTGATE_LOGIN_USER_CEILING", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_user_ceiling: Option<u32>,

    /// Days a device token lives (a successful login gives one; logins with it skip the
    /// two limits above); renewed at each login, 0 turns them off [default: 90]
    #[arg(long, env = "JOTGATE_DEVICE_TOKEN_DAYS", value_name = "DAYS",
          value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub device_token_days: Option<u32>,

    /// Client addresses and CIDR ranges (an office, CI), comma-separated, that skip the
    /// per-address limits of logins, sign-ups and client secrets; never a username's own
    /// limits or its hourly ceiling. Matched against the client address as resolved
    /// through --forwarded-hops [default: none]
    #[arg(long, env = "JOTGATE_LOGIN_ALLOWLIST", value_name = "CIDRS")]
    pub login_allowlist: Option<String>,

    /// Failed logins per client address before growing delays start [default: 20]
    #[arg(long, env = "JOTGATE_LOGIN_IP_FAILURES", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_ip_failures: Option<u32>,

    /// First lockout delay in seconds; doubles with each further failure [default: 1]
    #[arg(long, env = "JOTGATE_LOGIN_DELAY", value_name = "SECS")]
    pub login_delay: Option<u64>,

    /// Longest lockout delay in seconds (at most 6 hours); a count starts afresh after
    /// four times this without a failure, at least an hour [default: 900]
    #[arg(long, env = "JOTGATE_LOGIN_MAX_DELAY", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..=21600))]
    pub login_max_delay: Option<u64>,

    /// Sign-up attempts per client address before growing delays start [default: 20]
    #[arg(long, env = "JOTGATE_SIGNUP_IP_LIMIT", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub signup_ip_limit: Option<u32>,

    /// Concurrent password hashes; each holds the argon2 memory cost [default: CPU count]
    #[arg(long, env = "JOTGATE_HASH_WORKERS", value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024))]
    pub hash_workers: Option<usize>,

    /// Logins waiting for a hashing worker before new ones get 429 [default: 32 × CPUs]
    #[arg(long, env = "JOTGATE_HASH_QUEUE", value_name = "N")]
    pub hash_queue: Option<usize>,
}

/// The server's socket and TLS.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Listening")]
pub struct ListenSettings {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "JOTGATE_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Serve Prometheus metrics at http://ADDR/metrics, on their own address (keep it
    /// private: it is not the API's) [default: none, nothing is counted]
    #[arg(long, env = "JOTGATE_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// TLS certificate chain (PEM); with --tls-key, serve HTTPS
    #[arg(long, env = "JOTGATE_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM)
    #[arg(long, env = "JOTGATE_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Strict-Transport-Security max-age in seconds on HTTPS answers; 0 sends none
    /// [default: 31536000 (one year)]
    #[arg(long, env = "JOTGATE_HSTS_MAX_AGE", value_name = "SECS")]
    pub hsts_max_age: Option<u64>,
}

/// Bounds on client connections (`serve` and `gateway`).
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Connections")]
pub struct ConnSettings {
    /// Seconds a client has to send a whole request head (or finish a TLS handshake); also
    /// how long an idle keep-alive connection stays open [default: 10]
    #[arg(long, env = "JOTGATE_HEADER_TIMEOUT", value_name = "SECS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: Option<u64>,

    /// Connections open at once; more wait in the kernel's backlog [default: the
    /// descriptor limit less 256]
    #[arg(long, env = "JOTGATE_MAX_CONNECTIONS", value_name = "N",
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: Option<usize>,
}

/// The revocation feed's Bearer secret: `serve` opens the feed with it, the authorizer
/// reads the feed with it.
#[derive(Debug, Default, Clone, clap::Args)]
#[command(next_help_heading = "Revocation feed")]
pub struct FeedSettings {
    /// File holding the Bearer secret of GET /api/v1/revocations (at least 32 characters),
    /// or the ARN holding it [default: feed closed]
    #[arg(
        long = "feed-token-file",
        env = "JOTGATE_FEED_TOKEN",
        hide_env_values = true,
        value_name = "FILE"
    )]
    pub feed_token: Option<SecretString>,
}

/// The running configuration: every group. A command fills the groups it reads from its
/// arguments; the others keep their defaults and are never consulted.
#[derive(Debug, Default, Clone)]
pub struct Settings {
    pub store: StoreSettings,
    pub seal: SealSettings,
    pub tokens: TokenSettings,
    pub sessions: SessionSettings,
    pub passwords: PasswordSettings,
    pub api: ApiSettings,
    pub login: LoginSettings,
    pub listen: ListenSettings,
    pub conn: ConnSettings,
    pub feed: FeedSettings,
    /// Reached over HTTPS terminated in front (API Gateway, for `lambda`): answers carry
    /// Strict-Transport-Security as with `--tls-cert`. Not a setting.
    pub https_front: bool,
}

/// Whether anyone may sign up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
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

impl Settings {
    /// Replace secret settings given as references — the ARN of a Secrets Manager secret
    /// or an SSM Parameter Store parameter — by the secrets they name (feature
    /// `aws-secrets`; one fetch per reference, none otherwise).
    pub async fn resolve_secret_refs(mut self) -> anyhow::Result<Self> {
        for (name, slot) in self.secret_slots() {
            if let Some(value) = slot.as_ref() {
                let env = format!("JOTGATE_{}", name.to_ascii_uppercase());
                *slot = Some(resolve_secret(name, &env, value).await?);
            }
        }
        Ok(self)
    }

    /// Every secret setting, by its TOML key (a test checks that this is exactly the set of
    /// settings whose variable is hidden, so a new secret cannot miss ARN resolution).
    pub fn secret_slots(&mut self) -> [(&'static str, &mut Option<SecretString>); 7] {
        [
            ("store", &mut self.store.store),
            ("hs256_secret", &mut self.tokens.hs256_secret),
            ("pepper", &mut self.passwords.pepper),
            ("old_peppers", &mut self.passwords.old_peppers),
            ("old_master_keys", &mut self.seal.old_master_keys),
            ("master_key", &mut self.seal.master_key),
            ("feed_token", &mut self.feed.feed_token),
        ]
    }

    /// Strict-Transport-Security on HTTPS answers: max-age in seconds, `None` for none.
    pub fn hsts_max_age(&self) -> Option<u64> {
        match self.listen.hsts_max_age {
            Some(0) => None,
            Some(s) => Some(s),
            None => Some(31_536_000),
        }
    }

    pub fn database(&self) -> PathBuf {
        self.store
            .database
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE))
    }

    pub fn listen(&self) -> SocketAddr {
        self.listen
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default address"))
    }

    pub fn tls(&self) -> anyhow::Result<Option<(PathBuf, PathBuf)>> {
        match (&self.listen.tls_cert, &self.listen.tls_key) {
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
                .conn
                .header_timeout
                .map_or(d.header_timeout, Duration::from_secs),
            max_connections: self.conn.max_connections.unwrap_or(d.max_connections),
        };
        if limits.header_timeout.is_zero() || limits.max_connections == 0 {
            bail!(
                "invalid setting: header_timeout (JOTGATE_HEADER_TIMEOUT) and max_connections (JOTGATE_MAX_CONNECTIONS) must be at least 1"
            );
        }
        Ok(limits)
    }

    pub fn alg(&self) -> anyhow::Result<SigningAlg> {
        let alg = SigningAlg::parse(self.tokens.alg.as_deref().unwrap_or("RS256"))
            .context("invalid setting alg (JOTGATE_ALG)")?;
        if alg == SigningAlg::HS256 && self.tokens.hs256_secret.is_none() {
            bail!(
                "alg HS256 needs a shared secret: set --hs256-secret-file or JOTGATE_HS256_SECRET"
            );
        }
        Ok(alg)
    }

    pub fn key_source(&self) -> anyhow::Result<KeySource> {
        let alg = self.alg()?;
        match (&self.tokens.hs256_secret, alg) {
            (Some(s), _) => {
                if self.tokens.alg.is_some() && alg != SigningAlg::HS256 {
                    bail!(
                        "an HS256 secret is set (JOTGATE_HS256_SECRET) but alg is {alg}: set alg to HS256 or drop the secret"
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
        let scheme = if self.listen.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let issuer = self
            .tokens
            .issuer
            .clone()
            .unwrap_or_else(|| format!("{scheme}://{}", self.listen()));
        let p = TokenPolicy {
            issuer,
            audience: self.tokens.audience.clone().unwrap_or(d.audience),
            access_ttl: self.tokens.access_ttl.unwrap_or(d.access_ttl),
            leeway: self.tokens.leeway.unwrap_or(d.leeway),
            max_token_bytes: d.max_token_bytes,
        };
        if p.access_ttl < 1 {
            bail!("invalid setting access_ttl (JOTGATE_ACCESS_TTL): must be at least 1 second");
        }
        if !(0..=300).contains(&p.leeway) {
            bail!("invalid setting leeway (JOTGATE_LEEWAY): must be between 0 and 300 seconds");
        }
        if p.audience == jotgate_server::clients::management_audience(&p) {
            bail!(
                "invalid setting audience: {:?} is the management API's audience; the application's must differ",
                p.audience
            );
        }
        if p.audience.is_empty() || p.issuer.is_empty() {
            bail!("invalid setting issuer/audience: must not be empty");
        }
        Ok(p)
    }

    /// The password hasher: parameters, pepper and the peppers it replaced.
    pub fn password_hasher(&self) -> anyhow::Result<jotgate_core::PasswordHasher> {
        let old = split_secrets(self.passwords.old_peppers.as_ref());
        jotgate_core::PasswordHasher::with_old_peppers(
            self.password_params(),
            self.passwords.pepper.clone(),
            old,
        )
        .map_err(|e| anyhow::anyhow!("invalid setting pepper/argon2 (JOTGATE_PEPPER): {e}"))
    }

    pub fn password_params(&self) -> PasswordParams {
        let d = PasswordParams::default();
        PasswordParams {
            memory_kib: self.passwords.argon2_memory_kib.unwrap_or(d.memory_kib),
            iterations: self.passwords.argon2_iterations.unwrap_or(d.iterations),
            parallelism: d.parallelism,
        }
    }

    /// The CORS allowlist, each origin checked.
    pub fn cors(&self) -> anyhow::Result<Option<jotgate_server::cors::CorsConfig>> {
        let Some(list) = &self.api.cors_origins else {
            return Ok(None);
        };
        let origins = list
            .split([',', ' '])
            .filter(|o| !o.trim().is_empty())
            .map(|o| jotgate_server::cors::parse_origin(o).map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<Vec<String>>>()
            .context("invalid setting cors_origins")?;
        Ok(Some(jotgate_server::cors::CorsConfig {
            origins,
            credentials: self.api.cors_credentials.unwrap_or(false),
        }))
    }

    fn max_delay(&self) -> Duration {
        self.login
            .login_max_delay
            .map_or(RateLimitConfig::default().max_delay, Duration::from_secs)
    }

    /// The login limits these settings give.
    pub fn rate_limit(&self) -> anyhow::Result<RateLimitConfig> {
        let r = RateLimitConfig::default();
        let allowlist = match &self.login.login_allowlist {
            None => Vec::new(),
            Some(l) => RateLimitConfig::parse_allowlist(l)
                .map_err(anyhow::Error::msg)
                .context("invalid setting login_allowlist")?,
        };
        Ok(RateLimitConfig {
            allowlist,
            user_free_failures: self
                .login
                .login_user_failures
                .unwrap_or(r.user_free_failures),
            user_ceiling: self.login.login_user_ceiling.unwrap_or(r.user_ceiling),
            ceiling_window: r.ceiling_window,
            ip_free_failures: self.login.login_ip_failures.unwrap_or(r.ip_free_failures),
            signup_free_attempts: self.login.signup_ip_limit.unwrap_or(r.signup_free_attempts),
            base_delay: self
                .login
                .login_delay
                .map_or(r.base_delay, Duration::from_secs),
            max_delay: self.max_delay(),
            reset_after: RateLimitConfig::reset_for(self.max_delay()),
        })
    }

    pub fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let d = ServerConfig::default();
        let cfg = ServerConfig {
            policy: self.policy()?,
            refresh_ttl: self.sessions.refresh_ttl.unwrap_or(d.refresh_ttl),
            refresh_grace: self.sessions.refresh_grace.unwrap_or(d.refresh_grace),
            rate_limit: self.rate_limit()?,
            hash_workers: self.login.hash_workers.unwrap_or(d.hash_workers),
            hash_queue: self.login.hash_queue.unwrap_or(d.hash_queue),
            accept_x_access_token: self.api.accept_x_access_token.unwrap_or(false),
            forwarded_hops: self
                .api
                .forwarded_hops
                .unwrap_or(u8::from(self.api.trust_forwarded_for.unwrap_or(false))),
            signup_open: self.api.signup != Some(SignupMode::Closed),
            password_min_length: self
                .passwords
                .password_min_length
                .unwrap_or(jotgate_core::password::MIN_LEN),
            max_sessions: self.sessions.max_sessions.unwrap_or(d.max_sessions),
            max_body_bytes: d.max_body_bytes,
            sync_interval: self
                .sessions
                .sync_interval
                .map_or(d.sync_interval, Duration::from_secs),
            feed_token: self.feed.feed_token.clone(),
            hsts_max_age: if self.listen.tls_cert.is_some() || self.https_front {
                self.hsts_max_age()
            } else {
                None
            },
            cors: self.cors()?,
            device_token_ttl: i64::from(self.login.device_token_days.unwrap_or(90)) * 86_400,
            audit_retention_days: self
                .api
                .audit_retention_days
                .unwrap_or(jotgate_server::audit::DEFAULT_RETENTION_DAYS),
            app_metadata_claims: match &self.api.app_metadata_claims {
                None => Vec::new(),
                Some(spec) => jotgate_server::accounts::app_metadata_claims(spec)
                    .map_err(anyhow::Error::msg)
                    .context("invalid setting app_metadata_claims")?,
            },
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

//! [`Verifier`]: tokens from one or more trusted issuers, verified under one explicit policy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jotgate_core::{TokenErrorKind, parse_compact};
use jsonwebtoken::{Algorithm, Validation};
use serde_json::{Map, Value};

use crate::cache::{Entry, TokenCache};
use crate::error::{ConfigError, VerifyError, VerifyErrorKind, refused};
use crate::fetch::Fetcher;
use crate::keyset::KeySet;
use crate::revocation::{FeedPage, Revocations};
use crate::{Principal, now};

/// Where an issuer's keys come from.
#[derive(Clone)]
pub enum KeySource {
    /// `<issuer>/.well-known/openid-configuration` → `jwks_uri` (OpenID Connect Discovery).
    Discovery,
    /// A JWKS URL, without discovery.
    JwksUri(String),
    /// A JWKS document given inline (never refreshed).
    Jwks(String),
    /// One public key in PEM and its algorithm.
    Pem { pem: Vec<u8>, alg: Algorithm },
    /// A shared HS256 secret (at least 32 bytes).
    SharedSecret(Vec<u8>),
    /// Keys the program holds and hands over, replaced later with
    /// [`Verifier::replace_keys`]: how the jotgate server verifies its own tokens.
    Given(Arc<KeySet>),
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Discovery => f.write_str("Discovery"),
            Self::JwksUri(u) => write!(f, "JwksUri({u})"),
            Self::Jwks(_) => f.write_str("Jwks(..)"),
            Self::Pem { alg, .. } => write!(f, "Pem({alg:?})"),
            Self::SharedSecret(_) => f.write_str("SharedSecret([redacted])"),
            Self::Given(set) => write!(f, "Given({set:?})"),
        }
    }
}

/// A jotgate revocation feed to follow.
#[derive(Clone)]
pub struct FeedConfig {
    /// e.g. `https://auth.example.com/api/v1/revocations`.
    pub url: String,
    /// The server's `feed_token`.
    pub token: String,
}

impl std::fmt::Debug for FeedConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeedConfig")
            .field("url", &self.url)
            .field("token", &"[redacted]")
            .finish()
    }
}

/// One trusted issuer.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The exact `iss` value.
    pub issuer: String,
    pub keys: KeySource,
    /// Accepted `aud` values; a token must carry at least one. Never empty.
    pub audiences: Vec<String>,
    /// Algorithms accepted from this issuer (each key also fixes its own).
    pub algorithms: Vec<Algorithm>,
    /// Accepted header `typ` values, compared case-insensitively with any `application/`
    /// prefix removed; `""` accepts a token without `typ`.
    pub typ: Vec<String>,
    /// Claims that must be present besides `iss`, `aud` and `exp` (always required).
    pub required_claims: Vec<String>,
    /// Where roles are: a claim name or a dotted path (`realm_access.roles`).
    pub roles_claim: String,
    pub revocation_feed: Option<FeedConfig>,
}

impl IssuerConfig {
    /// An issuer found by OIDC discovery, accepting RS256/ES256/EdDSA tokens with `typ`
    /// `at+jwt`, `JWT` or none, for `audience`.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            keys: KeySource::Discovery,
            audiences: vec![audience.into()],
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
            typ: vec!["at+jwt".into(), "jwt".into(), String::new()],
            required_claims: vec!["sub".into()],
            roles_claim: "roles".into(),
            revocation_feed: None,
        }
    }

    /// A jotgate server: only `typ: at+jwt`, and `sub` and `jti` required.
    pub fn jotgate(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            typ: vec!["at+jwt".into()],
            required_claims: vec!["sub".into(), "jti".into()],
            ..Self::new(issuer, audience)
        }
    }

    pub fn with_keys(mut self, keys: KeySource) -> Self {
        if matches!(keys, KeySource::SharedSecret(_)) {
            self.algorithms = vec![Algorithm::HS256];
        }
        self.keys = keys;
        self
    }

    pub fn with_feed(mut self, feed: FeedConfig) -> Self {
        self.revocation_feed = Some(feed);
        self
    }
}

/// Verifier-wide settings.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub issuers: Vec<IssuerConfig>,
    /// Clock-skew allowance for exp, nbf and iat, in seconds.
    pub leeway: i64,
    pub max_token_bytes: usize,
    /// Verified tokens kept; 0 turns the cache off.
    pub cache_capacity: usize,
    /// JWKS lifetime when the issuer sends no `Cache-Control: max-age`.
    pub jwks_default_ttl: Duration,
    /// Bounds applied to the issuer's max-age.
    pub jwks_min_ttl: Duration,
    pub jwks_max_ttl: Duration,
    /// An unknown `kid` refetches the JWKS at most once per this interval.
    pub unknown_kid_cooldown: Duration,
    /// Timeout of each discovery/JWKS request.
    pub http_timeout: Duration,
    /// Largest discovery or JWKS body accepted.
    pub max_jwks_bytes: usize,
    /// Long-poll wait asked of the revocation feed.
    pub feed_wait: Duration,
    /// Follow revocation feeds in the background (long polls). Off where the process is
    /// frozen between requests (the Lambda authorizer): there each decision brings the
    /// feed up to date itself ([`Verifier::bring_up_to_date`]).
    pub follow_feeds: bool,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            leeway: 30,
            max_token_bytes: 8 * 1024,
            cache_capacity: 10_000,
            jwks_default_ttl: Duration::from_secs(300),
            jwks_min_ttl: Duration::from_secs(30),
            jwks_max_ttl: Duration::from_secs(24 * 3600),
            unknown_kid_cooldown: Duration::from_secs(30),
            http_timeout: Duration::from_secs(5),
            max_jwks_bytes: 256 * 1024,
            feed_wait: Duration::from_secs(25),
            follow_feeds: true,
        }
    }
}

impl VerifierConfig {
    /// Check every issuer's settings (URLs, audiences, algorithms, static keys) without
    /// building a verifier (no HTTP client, no background work).
    pub fn check(&self) -> Result<(), ConfigError> {
        self.issuers().map(|_| ())
    }

    fn issuers(&self) -> Result<HashMap<String, Arc<Issuer>>, ConfigError> {
        if self.issuers.is_empty() {
            return Err(ConfigError("no issuer is configured".into()));
        }
        let mut issuers = HashMap::new();
        for i in &self.issuers {
            let name = i.issuer.clone();
            if issuers
                .insert(name.clone(), Arc::new(Issuer::new(i.clone())?))
                .is_some()
            {
                return Err(ConfigError(format!("issuer {name} is configured twice")));
            }
        }
        Ok(issuers)
    }
}

/// Only https, except on the loopback interface (local development and tests). The URL is
/// parsed by a WHATWG parser (the `url` crate, the one the HTTP client connects by), so the
/// host checked is the host connected to; credentials in a URL are refused.
pub(crate) fn check_url(what: &str, url: &str) -> Result<(), ConfigError> {
    let refuse = |why: &str| {
        Err(ConfigError(format!(
            "{what} must be an https:// URL (http:// only on 127.0.0.1, localhost or [::1]){why}: {url}"
        )))
    };
    let Ok(u) = url::Url::parse(url) else {
        return refuse(" and a valid URL");
    };
    if !u.username().is_empty() || u.password().is_some() {
        return refuse(", without user name or password");
    }
    let loopback = match u.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => return refuse(""),
    };
    match u.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => refuse(""),
    }
}

struct Remote {
    /// Resolved JWKS URL (after discovery).
    jwks_uri: Mutex<Option<String>>,
    last_attempt: Mutex<Option<Instant>>,
    /// When the keys are due for a refetch (their TTL, or a retry after a failure).
    refresh_due: Mutex<Option<Instant>>,
    /// The last fetch found a well-formed JWKS without a usable key.
    empty_seen: AtomicBool,
    single_flight: tokio::sync::Mutex<()>,
    loaded: AtomicBool,
}

pub(crate) struct Issuer {
    pub(crate) cfg: IssuerConfig,
    keys: RwLock<Arc<KeySet>>,
    remote: Option<Remote>,
    validations: HashMap<Algorithm, Validation>,
    pub(crate) revocations: Revocations,
    /// With a revocation feed: set once the first catch-up is complete. Until then no
    /// token of this issuer is accepted (503): a fresh follower knows no logout yet.
    feed_ready: AtomicBool,
    /// When the feed was last read to its end.
    feed_synced: Mutex<Option<Instant>>,
    /// Bumped after every key swap that withdraws material: cached verifications made
    /// with keys read before it are not served.
    withdrawals: AtomicU64,
}

impl Issuer {
    fn new(cfg: IssuerConfig) -> Result<Self, ConfigError> {
        let name = &cfg.issuer;
        if name.is_empty() {
            return Err(ConfigError("issuer: the issuer URL is empty".into()));
        }
        if cfg.audiences.is_empty() || cfg.audiences.iter().any(String::is_empty) {
            return Err(ConfigError(format!(
                "issuer {name}: audiences must list at least one non-empty audience"
            )));
        }
        if cfg.algorithms.is_empty() {
            return Err(ConfigError(format!("issuer {name}: algorithms is empty")));
        }
        let secret = match &cfg.keys {
            KeySource::SharedSecret(_) => true,
            KeySource::Given(set) => set.is_secret(),
            _ => false,
        };
        for a in &cfg.algorithms {
            let hmac = a.family() == jsonwebtoken::AlgorithmFamily::Hmac;
            if hmac != secret {
                return Err(ConfigError(format!(
                    "issuer {name}: algorithm {a:?} {}",
                    if hmac {
                        "needs a shared secret (HMAC keys are never taken from a JWKS or PEM)"
                    } else {
                        "cannot be used with a shared secret"
                    }
                )));
            }
        }
        let (keys, remote) = match &cfg.keys {
            KeySource::Discovery => {
                check_url("issuer (for discovery)", name)?;
                (Arc::default(), Some(None))
            }
            KeySource::JwksUri(u) => {
                check_url(&format!("issuer {name}: jwks_uri"), u)?;
                (Arc::default(), Some(Some(u.clone())))
            }
            KeySource::Jwks(doc) => {
                let parsed = KeySet::from_jwks(doc.as_bytes())
                    .map_err(|e| ConfigError(format!("issuer {name}: jwks: {e}")))?;
                if parsed.set.is_empty() {
                    return Err(ConfigError(format!(
                        "issuer {name}: jwks holds no usable signing key ({})",
                        parsed.skipped.join("; ")
                    )));
                }
                (Arc::new(parsed.set), None)
            }
            KeySource::Pem { pem, alg } => (
                Arc::new(
                    KeySet::from_pem(pem, *alg)
                        .map_err(|e| ConfigError(format!("issuer {name}: {e}")))?,
                ),
                None,
            ),
            KeySource::SharedSecret(s) => (
                Arc::new(
                    KeySet::from_secret(s)
                        .map_err(|e| ConfigError(format!("issuer {name}: {e}")))?,
                ),
                None,
            ),
            KeySource::Given(set) => {
                if set.is_empty() {
                    return Err(ConfigError(format!("issuer {name}: no key given")));
                }
                (Arc::clone(set), None)
            }
        };
        if let Some(feed) = &cfg.revocation_feed {
            check_url(&format!("issuer {name}: revocation_feed"), &feed.url)?;
            if feed.token.is_empty() {
                return Err(ConfigError(format!(
                    "issuer {name}: the revocation feed token is empty"
                )));
            }
        }
        let mut required: Vec<&str> = vec!["iss", "aud", "exp"];
        for c in &cfg.required_claims {
            if matches!(c.as_str(), "sub" | "nbf") {
                required.push(c);
            }
        }
        let validations = cfg
            .algorithms
            .iter()
            .map(|&alg| {
                let mut v = Validation::new(alg);
                v.set_issuer(&[name]);
                v.set_audience(&cfg.audiences);
                v.set_required_spec_claims(&required);
                // Time claims are checked by the verifier against its own clock and leeway.
                v.validate_exp = false;
                v.validate_nbf = false;
                v.leeway = 0;
                (alg, v)
            })
            .collect();
        Ok(Self {
            keys: RwLock::new(keys),
            remote: remote.map(|uri| Remote {
                jwks_uri: Mutex::new(uri),
                last_attempt: Mutex::new(None),
                single_flight: tokio::sync::Mutex::new(()),
                refresh_due: Mutex::new(None),
                empty_seen: AtomicBool::new(false),
                loaded: AtomicBool::new(false),
            }),
            validations,
            revocations: Revocations::default(),
            feed_ready: AtomicBool::new(cfg.revocation_feed.is_none()),
            feed_synced: Mutex::new(None),
            withdrawals: AtomicU64::new(0),
            cfg,
        })
    }

    fn keys(&self) -> Arc<KeySet> {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn loaded(&self) -> bool {
        self.remote
            .as_ref()
            .is_none_or(|r| r.loaded.load(Ordering::Acquire))
    }
}

/// Counters for tests, benchmarks and operators.
#[derive(Debug, Default)]
pub struct Stats {
    pub jwks_fetches: AtomicU64,
    pub cache_hits: AtomicU64,
    pub signature_checks: AtomicU64,
    pub feed_polls: AtomicU64,
}

/// Verifies tokens from its configured issuers. Share it behind an `Arc`; call
/// [`Verifier::start`] inside a tokio runtime to fetch keys and follow revocation feeds.
pub struct Verifier {
    issuers: HashMap<String, Arc<Issuer>>,
    cache: TokenCache<Arc<Issuer>>,
    fetcher: Fetcher,
    cfg: VerifierConfig,
    stats: Stats,
}

/// The background work of a started verifier; dropping it stops key refreshes and feeds.
pub struct Background {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Background {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

enum Why {
    Scheduled,
    UnknownKid,
}

impl Verifier {
    pub fn new(cfg: VerifierConfig) -> Result<Arc<Self>, ConfigError> {
        let issuers = cfg.issuers()?;
        let fetcher = Fetcher::new(cfg.http_timeout, cfg.max_jwks_bytes).map_err(ConfigError)?;
        Ok(Arc::new(Self {
            issuers,
            cache: TokenCache::new(cfg.cache_capacity),
            fetcher,
            cfg,
            stats: Stats::default(),
        }))
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Verified tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// The revocations known for `issuer`.
    pub fn revocations(&self, issuer: &str) -> Option<&Revocations> {
        self.issuers.get(issuer).map(|i| &i.revocations)
    }

    /// Fetch every remote issuer's keys once, without installing them: for each issuer,
    /// the key ids it publishes or why they could not be had. `jotgate check` reports this.
    pub async fn probe_issuers(&self) -> Vec<(String, Result<Vec<String>, String>)> {
        let mut out = Vec::new();
        let mut names: Vec<&String> = self.issuers.keys().collect();
        names.sort();
        for name in names {
            let issuer = &self.issuers[name];
            let r = match &issuer.remote {
                Some(remote) => match self.fetch_keys(issuer, remote).await {
                    Ok((set, _)) if set.is_empty() => {
                        Err("its JWKS holds no key usable for verification".to_string())
                    }
                    Ok((set, _)) => Ok(set.kids().map(str::to_string).collect()),
                    Err(e) => Err(e),
                },
                None => Ok(issuer.keys().kids().map(str::to_string).collect()),
            };
            out.push((name.clone(), r));
        }
        out
    }

    /// Ready to decide: every issuer holds keys and every revocation feed had its first
    /// catch-up. `Err` says what is missing (for a readiness probe), naming no issuer.
    pub fn readiness(&self) -> Result<(), String> {
        // Unauthenticated probes get no issuer names: `jotgate check` says which.
        for issuer in self.issuers.values() {
            if issuer.keys().is_empty() {
                return Err("no keys yet for an issuer".to_string());
            }
            if issuer.cfg.revocation_feed.is_some() && !issuer.feed_ready.load(Ordering::Acquire) {
                return Err("a revocation feed has not been read yet".to_string());
            }
        }
        Ok(())
    }

    /// Fetch every remote issuer's keys once (concurrently; failures are logged and retried
    /// in the background, never fatal), then keep keys and revocation feeds current.
    pub async fn start(self: &Arc<Self>) -> Background {
        let mut first = Vec::new();
        for issuer in self.issuers.values().filter(|i| i.remote.is_some()) {
            let (v, i) = (self.clone(), issuer.clone());
            first.push(tokio::spawn(async move {
                let r = v.refresh(&i, Why::Scheduled).await;
                (i, r)
            }));
        }
        let mut tasks = Vec::new();
        for f in first {
            let Ok((issuer, result)) = f.await else {
                continue;
            };
            let v = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut result = result;
                let mut backoff = Duration::from_secs(1);
                loop {
                    let wait = match result {
                        Ok(ttl) => {
                            backoff = Duration::from_secs(1);
                            ttl.mul_f64(0.75)
                        }
                        Err(_) => {
                            let b = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(60));
                            b.min(v.cfg.jwks_max_ttl)
                        }
                    };
                    tokio::time::sleep(wait).await;
                    result = v.refresh(&issuer, Why::Scheduled).await;
                }
            }));
        }
        if !self.cfg.follow_feeds {
            return Background { tasks };
        }
        for issuer in self.issuers.values() {
            if let Some(feed) = issuer.cfg.revocation_feed.clone() {
                let (v, i) = (self.clone(), issuer.clone());
                tasks.push(tokio::spawn(async move { v.follow(&i, &feed).await }));
            }
        }
        // Give the feeds their first catch-up before the first request, as the keys got
        // their first fetch (bounded: an unreachable feed is retried in the background,
        // and its issuer's tokens are refused with 503 meanwhile).
        let deadline = tokio::time::Instant::now() + self.cfg.http_timeout;
        while self
            .issuers
            .values()
            .any(|i| !i.feed_ready.load(Ordering::Acquire))
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Background { tasks }
    }

    /// Fetch an issuer's JWKS (after discovery if needed). Returns how long to keep it.
    async fn refresh(&self, issuer: &Issuer, why: Why) -> Result<Duration, String> {
        let Some(remote) = &issuer.remote else {
            return Ok(self.cfg.jwks_max_ttl);
        };
        let _one = remote.single_flight.lock().await;
        {
            let mut last = remote
                .last_attempt
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if matches!(why, Why::UnknownKid)
                && last.is_some_and(|t| t.elapsed() < self.cfg.unknown_kid_cooldown)
            {
                return Err("cooling down".into());
            }
            *last = Some(Instant::now());
        }
        let name = &issuer.cfg.issuer;
        let result = self.fetch_keys(issuer, remote).await;
        match result {
            Ok((set, ttl)) => {
                let old = issuer.keys();
                if set.is_empty() {
                    // A well-formed JWKS without a usable signing key: an issuer pulling
                    // every key in an incident. Believed on the second fetch in a row (one
                    // confirming fetch, soon), never on the first.
                    let confirmed = remote.empty_seen.swap(true, Ordering::AcqRel);
                    if !confirmed || !remote.loaded.load(Ordering::Acquire) {
                        tracing::warn!(issuer = %name, "JWKS holds no usable signing key; confirming");
                        *remote.refresh_due.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(Instant::now());
                        return Err("JWKS holds no usable signing key".into());
                    }
                    tracing::warn!(issuer = %name, "JWKS holds no usable signing key, twice: every key of the issuer is withdrawn");
                } else {
                    remote.empty_seen.store(false, Ordering::Release);
                }
                // A kid gone, or new material under an old kid: cached verifications made
                // with the old material are dropped.
                let withdrawn = old
                    .material()
                    .any(|(k, t)| !set.material().any(|(nk, nt)| nk == k && nt == t));
                tracing::debug!(issuer = %name, keys = set.len(), ttl = ttl.as_secs(), "JWKS refreshed");
                *issuer.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
                remote.loaded.store(true, Ordering::Release);
                *remote.refresh_due.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Instant::now() + ttl);
                if withdrawn {
                    // A key the issuer stopped publishing may have been compromised: tokens
                    // it signed must be checked again.
                    self.withdrawn(issuer);
                }
                Ok(ttl)
            }
            Err(e) => {
                if issuer.keys().is_empty() {
                    tracing::warn!(issuer = %name, error = %e, "cannot get this issuer's keys; its tokens are refused until they come");
                } else {
                    tracing::warn!(issuer = %name, error = %e, "JWKS refresh failed; keeping the cached keys");
                }
                Err(e)
            }
        }
    }

    async fn fetch_keys(
        &self,
        issuer: &Issuer,
        remote: &Remote,
    ) -> Result<(KeySet, Duration), String> {
        let name = &issuer.cfg.issuer;
        let known = remote
            .jwks_uri
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let uri = match known {
            Some(u) => u,
            None => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    name.trim_end_matches('/')
                );
                self.stats.jwks_fetches.fetch_add(1, Ordering::Relaxed);
                let doc = self.fetcher.get(&url, None, None).await?;
                let doc: Value = serde_json::from_slice(&doc.body)
                    .map_err(|_| "discovery document is not JSON".to_string())?;
                let said = doc.get("issuer").and_then(Value::as_str);
                if said != Some(name.as_str()) {
                    return Err(match said {
                        Some(other) => format!(
                            "its discovery document names the issuer {other:?}, not {name:?}: tokens carry that `iss`, which must match exactly (write issuer = {other:?})"
                        ),
                        None => "its discovery document names no issuer".to_string(),
                    });
                }
                let uri = doc
                    .get("jwks_uri")
                    .and_then(Value::as_str)
                    .ok_or("discovery document has no jwks_uri")?
                    .to_string();
                check_url("jwks_uri", &uri).map_err(|e| e.0)?;
                *remote.jwks_uri.lock().unwrap_or_else(|p| p.into_inner()) = Some(uri.clone());
                uri
            }
        };
        self.stats.jwks_fetches.fetch_add(1, Ordering::Relaxed);
        let res = self.fetcher.get(&uri, None, None).await?;
        let parsed = KeySet::from_jwks(&res.body)?;
        if !parsed.skipped.is_empty() {
            tracing::debug!(issuer = %name, skipped = ?parsed.skipped, "JWKS keys skipped");
        }
        let ttl = res
            .max_age()
            .map(Duration::from_secs)
            .unwrap_or(self.cfg.jwks_default_ttl)
            .clamp(
                self.cfg.jwks_min_ttl,
                self.cfg.jwks_max_ttl.max(self.cfg.jwks_min_ttl),
            );
        Ok((parsed.set, ttl))
    }

    /// Read one page of `issuer`'s feed from its cursor (waiting up to `wait` seconds for
    /// news) and apply it. Returns whether more pages follow.
    async fn feed_page(
        &self,
        issuer: &Issuer,
        feed: &FeedConfig,
        wait: u64,
    ) -> Result<bool, String> {
        let sep = if feed.url.contains('?') { '&' } else { '?' };
        let url = format!(
            "{}{sep}since={}&wait={wait}",
            feed.url,
            issuer.revocations.cursor()
        );
        self.stats.feed_polls.fetch_add(1, Ordering::Relaxed);
        let page = self
            .fetcher
            .get(
                &url,
                Some(&feed.token),
                Some(Duration::from_secs(wait) + self.cfg.http_timeout),
            )
            .await
            .and_then(|r| {
                serde_json::from_slice::<FeedPage>(&r.body)
                    .map_err(|_| "feed page is not the expected JSON".to_string())
            })?;
        let changed = !page.revocations.is_empty();
        issuer
            .revocations
            .apply(page.revocations, self.revocations_now());
        issuer.revocations.set_cursor(page.cursor);
        if changed {
            self.cache
                .retain(|e| !issuer.revocations.denies_principal(&e.principal));
        }
        if !page.more {
            *issuer.feed_synced.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            if !issuer.feed_ready.swap(true, Ordering::AcqRel) {
                tracing::info!(issuer = %issuer.cfg.issuer, cursor = page.cursor, "revocation feed caught up");
            }
        }
        Ok(page.more)
    }

    /// Before a decision in a process that may have been frozen between requests (AWS
    /// Lambda): read each feed to its end when it was last read more than `max_age` ago,
    /// and refetch keys that are due, all within `budget`. `Err` when a feed could not be
    /// brought up to date: the caller decides whether to fail closed.
    pub async fn bring_up_to_date(
        &self,
        max_age: Duration,
        budget: Duration,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + budget;
        // Revocations first: only they can fail the decision.
        let feeds = async {
            for issuer in self.issuers.values() {
                let Some(feed) = &issuer.cfg.revocation_feed else {
                    continue;
                };
                let synced = *issuer.feed_synced.lock().unwrap_or_else(|p| p.into_inner());
                if synced.is_some_and(|t| t.elapsed() <= max_age) {
                    continue;
                }
                while self.feed_page(issuer, feed, 0).await? {}
            }
            Ok::<(), String>(())
        };
        match tokio::time::timeout_at(deadline, feeds).await {
            Ok(r) => r?,
            Err(_) => return Err("the revocation feed did not answer in time".into()),
        }
        // Keys that are due, in what is left of the budget; a failure keeps the cached keys
        // and is retried after a pause, not on every decision.
        let keys = async {
            for issuer in self.issuers.values() {
                let Some(remote) = &issuer.remote else {
                    continue;
                };
                let due = *remote.refresh_due.lock().unwrap_or_else(|p| p.into_inner());
                if due.is_none_or(|d| Instant::now() >= d)
                    && self.refresh(issuer, Why::Scheduled).await.is_err()
                {
                    *remote.refresh_due.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some(Instant::now() + Duration::from_secs(30));
                }
            }
        };
        let _ = tokio::time::timeout_at(deadline, keys).await;
        Ok(())
    }

    /// Follow a jotgate revocation feed forever (long polls; backoff on errors).
    async fn follow(&self, issuer: &Issuer, feed: &FeedConfig) {
        let mut backoff = Duration::from_millis(500);
        // Pages follow each other at once while the feed says more; then long polls.
        let mut catching_up = true;
        loop {
            let wait = if catching_up {
                0
            } else {
                self.cfg.feed_wait.as_secs()
            };
            match self.feed_page(issuer, feed, wait).await {
                Ok(more) => {
                    backoff = Duration::from_millis(500);
                    catching_up = more;
                }
                Err(e) => {
                    tracing::warn!(issuer = %issuer.cfg.issuer, error = %e, "revocation feed poll failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Verify `token`: cached answer if seen before, else the full policy.
    pub async fn verify(&self, token: &str) -> Result<Arc<Principal>, VerifyError> {
        let t = now();
        if let Some(answer) = self.lookup(token.as_bytes(), t) {
            return answer;
        }
        // Boxed: the miss's state (a key refetch among it, ~900 bytes) would otherwise be
        // part of every verification's future, and of every request's that awaits one.
        Box::pin(self.verify_uncached(token, t)).await
    }

    /// A token verified before, found by its bytes (a header's, not yet read as text: only
    /// a verified token's bytes are in the cache) and still good: not expired, revoked or
    /// signed by a withdrawn key. `None` otherwise, for [`verify`](Self::verify) to answer.
    pub fn cached(&self, token: &[u8]) -> Option<Arc<Principal>> {
        self.lookup(token, now())?.ok()
    }

    /// The cache's answer for `token` at `t`, if it has one.
    fn lookup(&self, token: &[u8], t: i64) -> Option<Result<Arc<Principal>, VerifyError>> {
        let (p, issuer, stamp) = self.cache.get(token, t)?;
        if stamp != issuer.withdrawals.load(Ordering::Acquire) {
            return None;
        }
        if let Some(e) = issuer.revocations.refuses(&p) {
            return Some(Err(e));
        }
        self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
        Some(Ok(p))
    }

    /// [`verify`](Self::verify) past the verified-token cache: the token parsed, its
    /// signature and claims checked, the cache filled.
    async fn verify_uncached(&self, token: &str, t: i64) -> Result<Arc<Principal>, VerifyError> {
        let c = parse_compact(token, self.cfg.max_token_bytes)?;
        let payload: Map<String, Value> =
            serde_json::from_slice(&c.payload).map_err(|_| refused(TokenErrorKind::Malformed))?;
        // `iss` only chooses which keys to try; the signature check below binds it.
        let iss = payload
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(refused(TokenErrorKind::InvalidClaims))?;
        let issuer = self
            .issuers
            .get(iss)
            .ok_or(VerifyError::new(VerifyErrorKind::UnknownIssuer))?;
        let typ = c.header_str("typ").unwrap_or("");
        let typ = typ
            .get(..12)
            .filter(|p| p.eq_ignore_ascii_case("application/"))
            .map_or(typ, |_| &typ[12..]);
        if !issuer.cfg.typ.iter().any(|t| t.eq_ignore_ascii_case(typ)) {
            return Err(refused(TokenErrorKind::WrongType));
        }
        let alg: Algorithm = c
            .alg
            .parse()
            .map_err(|_| VerifyError::new(VerifyErrorKind::AlgorithmNotAllowed))?;
        let validation = issuer
            .validations
            .get(&alg)
            .ok_or(VerifyError::new(VerifyErrorKind::AlgorithmNotAllowed))?;
        let kid = c.header_str("kid");
        // Read before the keys: a withdrawal after this makes the cache entry stale.
        let stamp = issuer.withdrawals.load(Ordering::Acquire);
        let mut keys = issuer.keys();
        if keys.candidates(kid).next().is_none() && issuer.remote.is_some() {
            // Maybe the issuer rotated: refetch, at most once per cooldown whatever the
            // number of distinct unknown kids presented.
            let _ = self.refresh(issuer, Why::UnknownKid).await;
            keys = issuer.keys();
        }
        if !issuer.feed_ready.load(Ordering::Acquire) {
            return Err(VerifyError::new(VerifyErrorKind::IssuerUnavailable));
        }
        let mut candidates = keys.candidates(kid).peekable();
        if candidates.peek().is_none() {
            return Err(if issuer.loaded() {
                refused(TokenErrorKind::UnknownKey)
            } else {
                VerifyError::new(VerifyErrorKind::IssuerUnavailable)
            });
        }
        let fitting: Vec<_> = candidates.filter(|k| k.alg == alg).collect();
        if fitting.is_empty() {
            return Err(refused(TokenErrorKind::AlgorithmMismatch));
        }
        // Keys sharing a kid: the first whose signature checks wins.
        let mut decoded = None;
        let mut signer = None;
        for key in &fitting {
            self.stats.signature_checks.fetch_add(1, Ordering::Relaxed);
            let r = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation);
            let bad_sig = matches!(
                &r,
                Err(e) if matches!(e.kind(), jsonwebtoken::errors::ErrorKind::InvalidSignature)
            );
            decoded = Some(r);
            signer = Some(key);
            if !bad_sig {
                break;
            }
        }
        let data = decoded
            .unwrap_or_else(|| Err(jsonwebtoken::errors::ErrorKind::InvalidSignature.into()))
            .map_err(|e| {
                use jsonwebtoken::errors::ErrorKind as J;
                refused(match e.kind() {
                    J::InvalidSignature => TokenErrorKind::BadSignature,
                    J::InvalidIssuer => TokenErrorKind::WrongIssuer,
                    J::InvalidAudience => TokenErrorKind::WrongAudience,
                    J::MissingRequiredClaim(c) if c == "aud" => TokenErrorKind::WrongAudience,
                    J::InvalidAlgorithm => TokenErrorKind::AlgorithmMismatch,
                    J::MissingRequiredClaim(_) | J::InvalidClaimFormat(_) | J::Json(_) => {
                        TokenErrorKind::InvalidClaims
                    }
                    _ => TokenErrorKind::Malformed,
                })
            })?;
        let claims = data.claims;
        let num = |k: &str| {
            claims
                .get(k)
                .map(|v| v.as_i64().ok_or(refused(TokenErrorKind::InvalidClaims)))
                .transpose()
        };
        let exp = num("exp")?.ok_or(refused(TokenErrorKind::InvalidClaims))?;
        let leeway = self.cfg.leeway;
        if t > exp.saturating_add(leeway) {
            return Err(refused(TokenErrorKind::Expired));
        }
        if num("nbf")?.is_some_and(|nbf| nbf > t.saturating_add(leeway)) {
            return Err(refused(TokenErrorKind::NotYetValid));
        }
        if num("iat")?.is_some_and(|iat| iat > t.saturating_add(leeway)) {
            return Err(refused(TokenErrorKind::IssuedInFuture));
        }
        if issuer
            .cfg
            .required_claims
            .iter()
            .any(|c| claims.get(c).is_none_or(Value::is_null))
        {
            return Err(VerifyError::new(VerifyErrorKind::MissingClaim));
        }
        // The claims revocations are keyed by must be strings, or no entry could match them.
        if ["sub", "jti", "sid"]
            .iter()
            .any(|k| claims.get(*k).is_some_and(|s| !s.is_string()))
        {
            return Err(refused(TokenErrorKind::InvalidClaims));
        }
        let mut principal =
            Principal::from_claims(claims, &issuer.cfg.issuer, &issuer.cfg.roles_claim);
        // The key that verified it, whatever the header said (a token without `kid` is
        // checked against an issuer's only key): key revocations are keyed by it.
        principal.key_id = signer.and_then(|k| k.kid.clone());
        let principal = Arc::new(principal);
        if let Some(e) = issuer.revocations.refuses(&principal) {
            return Err(e);
        }
        self.cache.insert(
            token,
            Entry {
                principal: principal.clone(),
                valid_until: exp.saturating_add(leeway),
                tag: issuer.clone(),
                stamp,
            },
            t,
        );
        Ok(principal)
    }

    /// Replace the keys of an issuer whose keys are given, not fetched (a JWKS document, a
    /// PEM key or a secret): how the jotgate server hands its own key ring over after a
    /// rotation, retirement or revocation. Cached verifications made with withdrawn
    /// material are dropped.
    pub fn replace_keys(&self, issuer: &str, set: Arc<KeySet>) -> Result<(), ConfigError> {
        let i = self
            .issuers
            .get(issuer)
            .ok_or_else(|| ConfigError(format!("issuer {issuer} is not configured")))?;
        if i.remote.is_some() {
            return Err(ConfigError(format!(
                "issuer {issuer}: its keys are fetched, not given"
            )));
        }
        if set.is_empty() {
            return Err(ConfigError(format!("issuer {issuer}: no key given")));
        }
        let withdrawn = {
            let old = i.keys();
            old.material()
                .any(|(k, t)| !set.material().any(|(nk, nt)| nk == k && nt == t))
        };
        *i.keys.write().unwrap_or_else(|p| p.into_inner()) = set;
        if withdrawn {
            self.withdrawn(i);
        }
        Ok(())
    }

    /// After `issuer`'s keys were swapped for a set without some of the old material:
    /// no cached verification of that issuer is served again, including one a concurrent
    /// `verify` inserts with keys it read before the swap (its stamp is older).
    fn withdrawn(&self, issuer: &Issuer) {
        issuer.withdrawals.fetch_add(1, Ordering::AcqRel);
        self.cache.retain(|e| !std::ptr::eq(&*e.tag, issuer));
    }

    /// Apply revocations by hand (the jotgate server's own, tests, or a feed other than
    /// jotgate's), and drop expired ones.
    pub fn apply_revocations(&self, issuer: &str, entries: Vec<crate::Revoked>) {
        if let Some(i) = self.issuers.get(issuer) {
            let any = !entries.is_empty();
            i.revocations.apply(entries, self.revocations_now());
            if any {
                self.cache
                    .retain(|e| !i.revocations.denies_principal(&e.principal));
            }
        }
    }

    /// The instant revocations are expired against: an entry is kept while a token it
    /// refuses could still pass, i.e. until its `expires_at` plus this verifier's leeway
    /// (which may be larger than the issuer's).
    fn revocations_now(&self) -> i64 {
        now().saturating_sub(self.cfg.leeway)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use jotgate_core::{AccessClaims, KeyMaterial, SigningAlg, TokenSigner};

    const ISS: &str = "http://127.0.0.1:8080";

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: ISS.into(),
            sub: "u1".into(),
            aud: "jotgate".into(),
            exp: now + 900,
            iat: now,
            nbf: now,
            jti: "j1".into(),
            username: "alice".into(),
            roles: vec![],
            scope: "profile".into(),
            sid: None,
        }
    }

    /// A jotgate issuer verifying `key` (the way the server verifies its own tokens).
    fn verifier_for(key: &KeyMaterial, cache: usize) -> Arc<Verifier> {
        let keys = match key.public_jwk() {
            Some(jwk) => KeySource::Jwks(serde_json::json!({ "keys": [jwk] }).to_string()),
            None => KeySource::SharedSecret(key.secret_bytes().to_vec()),
        };
        Verifier::new(VerifierConfig {
            issuers: vec![IssuerConfig::jotgate(ISS, "jotgate").with_keys(keys)],
            cache_capacity: cache,
            ..VerifierConfig::default()
        })
        .unwrap()
    }

    fn run<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn code(v: &Verifier, token: &str) -> &'static str {
        match run(v.verify(token)) {
            Ok(_) => "ok",
            Err(e) => e.code(),
        }
    }

    #[test]
    fn sign_and_verify_each_algorithm() {
        let now = crate::now();
        for alg in [
            SigningAlg::RS256,
            SigningAlg::ES256,
            SigningAlg::EdDSA,
            SigningAlg::HS256,
        ] {
            let key = if alg == SigningAlg::HS256 {
                KeyMaterial::shared_secret(&[1u8; 32]).unwrap()
            } else {
                KeyMaterial::generate(alg).unwrap()
            };
            let signer = TokenSigner::new(&key).unwrap();
            let v = verifier_for(&key, 0);
            let t = signer.sign(&claims(now)).unwrap();
            let p = run(v.verify(&t)).unwrap();
            assert_eq!(
                serde_json::from_value::<AccessClaims>(Value::Object(p.claims.clone())).unwrap(),
                claims(now)
            );
            let mut c = claims(now - 2000);
            assert_eq!(code(&v, &signer.sign(&c).unwrap()), "token_expired");
            c = claims(now + 1000);
            c.iat = now;
            assert_eq!(code(&v, &signer.sign(&c).unwrap()), "token_not_yet_valid");
            c = claims(now + 1000);
            assert_eq!(code(&v, &signer.sign(&c).unwrap()), "token_not_yet_valid");
        }
    }

    /// One code per condition, whoever verifies: the server, the layer, the gateway and
    /// the authorizer all come here.
    #[test]
    fn claim_defects_have_one_code_each() {
        let now = crate::now();
        let key = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
        let signer = TokenSigner::new(&key).unwrap();
        let v = verifier_for(&key, 0);
        let mut doc = serde_json::to_value(claims(now)).unwrap();
        let sign = |doc: &Value| {
            let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": key.kid()});
            let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
            let input = format!("{}.{}", enc(&header), enc(doc));
            let sig = jsonwebtoken::crypto::sign(
                input.as_bytes(),
                &key.encoding_key().unwrap(),
                jsonwebtoken::Algorithm::EdDSA,
            )
            .unwrap();
            format!("{input}.{sig}")
        };
        assert_eq!(code(&v, &sign(&doc)), "ok");
        assert_eq!(code(&v, &signer.sign(&claims(now)).unwrap()), "ok");
        for (claim, expected) in [
            ("aud", "token_wrong_audience"),
            ("iss", "token_invalid_claims"),
            ("exp", "token_invalid_claims"),
            ("sub", "token_invalid_claims"),
            ("jti", "token_invalid_claims"),
        ] {
            let mut d = doc.clone();
            d.as_object_mut().unwrap().remove(claim);
            assert_eq!(code(&v, &sign(&d)), expected, "without {claim}");
        }
        doc["aud"] = "someone-else".into();
        assert_eq!(code(&v, &sign(&doc)), "token_wrong_audience");
        doc["aud"] = "jotgate".into();
        doc["iss"] = "https://other.example".into();
        assert_eq!(code(&v, &sign(&doc)), "token_wrong_issuer");
    }

    #[test]
    fn tampering_is_refused() {
        let now = crate::now();
        let key = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
        let t = TokenSigner::new(&key).unwrap().sign(&claims(now)).unwrap();
        let v = verifier_for(&key, 0);
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut c = claims(now);
        c.username = "mallory".into();
        parts[1] = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap());
        assert_eq!(code(&v, &parts.join(".")), "token_bad_signature");
        assert_eq!(code(&v, "a.b"), "token_malformed");
        assert_eq!(code(&v, &format!("{t}=")), "token_malformed");
        assert_eq!(code(&v, &"a".repeat(9000)), "token_too_large");
    }

    /// Random mutations of a valid token (byte flips, truncations, insertions, swapped
    /// parts) never panic, and the only accepted spelling is the original token.
    #[test]
    fn mutated_tokens_are_refused_and_never_panic() {
        let now = crate::now();
        let key = KeyMaterial::generate(SigningAlg::ES256).unwrap();
        let token = TokenSigner::new(&key).unwrap().sign(&claims(now)).unwrap();
        let v = verifier_for(&key, 0);
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ ";
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for _ in 0..5000 {
            let mut t = token.clone().into_bytes();
            for _ in 0..=next(3) {
                match next(4) {
                    0 => {
                        let i = next(t.len());
                        t[i] = alphabet[next(alphabet.len())];
                    }
                    1 => t.truncate(next(t.len()).max(1)),
                    2 => {
                        let i = next(t.len() + 1);
                        t.insert(i, alphabet[next(alphabet.len())]);
                    }
                    _ => {
                        let i = next(t.len());
                        t.remove(i);
                        if t.is_empty() {
                            t.push(b'.');
                        }
                    }
                }
            }
            let t = String::from_utf8(t).unwrap();
            if rt.block_on(v.verify(&t)).is_ok() {
                assert_eq!(t, token, "a second spelling was accepted");
            }
        }
    }

    /// The server hands its ring over after a rotation or revocation: a withdrawn key's
    /// cached verifications go with it, and retirement entries refuse later tokens.
    #[test]
    fn given_keys_are_replaced_and_withdrawn_ones_forgotten() {
        let now = crate::now();
        let old = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
        let new = KeyMaterial::generate(SigningAlg::ES256).unwrap();
        let set = |keys: &[&KeyMaterial]| {
            let doc = serde_json::json!({"keys": keys.iter().map(|k| k.public_jwk()).collect::<Vec<_>>()});
            Arc::new(KeySet::from_jwks(doc.to_string().as_bytes()).unwrap().set)
        };
        let issuer =
            IssuerConfig::jotgate(ISS, "jotgate").with_keys(KeySource::Given(set(&[&old])));
        let v = Verifier::new(VerifierConfig {
            issuers: vec![issuer],
            ..VerifierConfig::default()
        })
        .unwrap();
        let by_old = TokenSigner::new(&old).unwrap().sign(&claims(now)).unwrap();
        let by_new = TokenSigner::new(&new).unwrap().sign(&claims(now)).unwrap();
        assert_eq!(code(&v, &by_old), "ok");
        assert_eq!(code(&v, &by_new), "token_unknown_key");
        v.replace_keys(ISS, set(&[&old, &new])).unwrap();
        assert_eq!(code(&v, &by_new), "ok");
        assert_eq!(v.cached_tokens(), 2);
        // Retired at `now - 1`: tokens it signed from then on are refused, cached or not.
        v.apply_revocations(
            ISS,
            vec![crate::Revoked::Key {
                kid: old.kid().into(),
                not_after: now - 1,
                expires_at: now + 100,
            }],
        );
        assert_eq!(code(&v, &by_old), "token_key_retired");
        // Withdrawn: the issuer's cached verifications go, and are made again.
        v.replace_keys(ISS, set(&[&new])).unwrap();
        assert_eq!(v.cached_tokens(), 0);
        assert_eq!(code(&v, &by_old), "token_unknown_key");
        assert_eq!(code(&v, &by_new), "ok");
        assert!(v.replace_keys(ISS, Arc::new(KeySet::default())).is_err());
    }

    /// A revoked key (`not_after` 0) refuses every token it verifies: with a backdated or
    /// negative `iat`, and without a `kid` (matched to the issuer's only key).
    #[test]
    fn a_revoked_key_cannot_be_dodged_by_iat_or_a_missing_kid() {
        let now = crate::now();
        let key = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
        let v = verifier_for(&key, 100);
        v.apply_revocations(
            ISS,
            vec![crate::Revoked::Key {
                kid: key.kid().into(),
                not_after: 0,
                expires_at: now + 100,
            }],
        );
        let signed = |kid: Option<&str>, iat: i64| {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
            h.typ = Some("at+jwt".into());
            h.kid = kid.map(str::to_string);
            let mut c = claims(now);
            c.iat = iat;
            jsonwebtoken::encode(&h, &c, &key.encoding_key().unwrap()).unwrap()
        };
        for (kid, iat) in [
            (Some(key.kid()), now),
            (Some(key.kid()), 0),
            (Some(key.kid()), -5),
            (None, now),
            (None, 0),
        ] {
            assert_eq!(
                code(&v, &signed(kid, iat)),
                "token_key_retired",
                "kid {kid:?}, iat {iat}"
            );
        }
    }

    /// A verification made with keys read before a withdrawal, cached after it, is not
    /// served: its stamp is older than the issuer's key generation.
    #[test]
    fn a_cache_entry_older_than_a_withdrawal_is_not_served() {
        let now = crate::now();
        let old = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
        let new = KeyMaterial::generate(SigningAlg::EdDSA).unwrap();
        let set = |k: &KeyMaterial| {
            let doc = serde_json::json!({ "keys": [k.public_jwk()] });
            Arc::new(KeySet::from_jwks(doc.to_string().as_bytes()).unwrap().set)
        };
        let issuer = IssuerConfig::jotgate(ISS, "jotgate").with_keys(KeySource::Given(set(&old)));
        let v = Verifier::new(VerifierConfig {
            issuers: vec![issuer],
            ..VerifierConfig::default()
        })
        .unwrap();
        let token = TokenSigner::new(&old).unwrap().sign(&claims(now)).unwrap();
        let p = run(v.verify(&token)).unwrap();
        let stale_stamp = v.issuers[ISS].withdrawals.load(Ordering::Acquire);
        v.replace_keys(ISS, set(&new)).unwrap();
        assert_eq!(v.cached_tokens(), 0);
        // The interleaving a concurrent request could produce: verified with the old keys,
        // inserted after the withdrawal dropped the issuer's entries.
        v.cache.insert(
            &token,
            Entry {
                principal: p,
                valid_until: now + 900,
                tag: v.issuers[ISS].clone(),
                stamp: stale_stamp,
            },
            now,
        );
        assert_eq!(code(&v, &token), "token_unknown_key");
    }

    #[test]
    fn urls_are_checked_on_the_host_they_connect_to() {
        for ok in [
            "https://id.example.com/jwks.json",
            "http://127.0.0.1:9999/jwks.json",
            "http://localhost/x",
            "http://[::1]:80/x",
        ] {
            assert!(check_url("jwks_uri", ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://127.0.0.2:9999\\@127.0.0.1/jwks.json",
            "http://127.0.0.2:9999\\@localhost/jwks.json",
            "http://evil.example#@127.0.0.1/",
            "http://user:pw@127.0.0.1/x",
            "https://user@id.example.com/x",
            "http://127.0.0.1.evil.example/x",
            "http://id.example.com/x",
            "ftp://127.0.0.1/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(check_url("jwks_uri", bad).is_err(), "{bad}");
        }
    }
}

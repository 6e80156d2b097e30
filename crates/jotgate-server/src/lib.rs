//! jotgate-server: the HTTP service as an axum [`Router`] built by one function,
//! [`router`], from an [`AppState`]. The same Router serves a laptop, a container fleet or
//! (wrapped by a Lambda adapter) AWS Lambda.
//!
//! Not for: sockets, TLS, configuration files or process life cycle — the `jotgate` binary
//! does those. Not for: cryptography or storage details — see jotgate-core and
//! jotgate-store.

pub mod accounts;
pub mod audit;
pub mod clients;
pub mod cors;
pub mod device;
pub mod error;
pub mod extract;
pub mod keyring;
pub mod limits;
pub mod management;
pub mod metrics;
pub mod openapi;
pub mod revocation;
mod routes;
pub mod schema;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post};
use jotgate_core::{KeyMaterial, PasswordHasher, SigningAlg, TokenPolicy};
use jotgate_store::Store;
use jotgate_verify::Principal;

pub use error::ApiError;
use keyring::{KeyRing, KeyRingError, Keys};
use limits::{HashPool, LoginLimiter, RateLimitConfig};
use revocation::Denylist;

/// Verified access tokens the server keeps, so a repeated token costs a hash lookup.
const TOKEN_CACHE: usize = 10_000;

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Where signing keys come from.
pub enum KeySource {
    /// Keys kept in the store; one of `alg` is generated on first start.
    Stored { generate: SigningAlg },
    /// HS256 with an explicitly configured shared secret (nothing published in the JWKS).
    SharedSecret(Box<KeyMaterial>),
}

/// Behaviour settings of the service (everything but where it listens).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub policy: TokenPolicy,
    /// Refresh-token lifetime in seconds (each rotation starts a new lifetime).
    pub refresh_ttl: i64,
    /// A repeat of a just-rotated refresh token within this many seconds gets the same
    /// successor (two tabs refreshing at once) instead of revoking the session.
    pub refresh_grace: i64,
    pub rate_limit: RateLimitConfig,
    /// Concurrent argon2 computations; each needs the argon2 memory cost.
    pub hash_workers: usize,
    /// Logins/sign-ups allowed to wait for a hashing worker before 429.
    pub hash_queue: usize,
    /// Accept the legacy `x-access-token` header besides `Authorization: Bearer`.
    pub accept_x_access_token: bool,
    /// How many proxies in front of the service append to `X-Forwarded-For`: the client
    /// address is the entry that many from the right. 0: the socket peer.
    pub forwarded_hops: u8,
    /// Whether anyone may create an account with `POST /signup`.
    pub signup_open: bool,
    /// Shortest password accepted, in characters (at least 8).
    pub password_min_length: usize,
    /// Live sessions per user: a new session ends the oldest beyond this many.
    pub max_sessions: usize,
    pub max_body_bytes: usize,
    /// How often the denylist and keys are refreshed from the store.
    pub sync_interval: Duration,
    /// Bearer secret that opens the revocation feed to verifiers; `None` closes it.
    pub feed_token: Option<secrecy::SecretString>,
    /// `Strict-Transport-Security` max-age on every answer, when reached over HTTPS.
    pub hsts_max_age: Option<u64>,
    /// Browser origins allowed to call the API (CORS); `None`: none.
    pub cors: Option<cors::CorsConfig>,
    /// Days an audit event is kept.
    pub audit_retention_days: i64,
    /// Seconds a device token lives (renewed at each login with it); 0: none are issued.
    pub device_token_ttl: i64,
    /// `app_metadata` keys put into access tokens, and the namespaced claim of each.
    pub app_metadata_claims: Vec<(String, String)>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            policy: TokenPolicy::default(),
            refresh_ttl: 30 * 24 * 3600,
            refresh_grace: 10,
            rate_limit: RateLimitConfig::default(),
            hash_workers: cores,
            hash_queue: cores * 32,
            accept_x_access_token: false,
            forwarded_hops: 0,
            signup_open: true,
            password_min_length: jotgate_core::password::MIN_LEN,
            max_sessions: 100,
            max_body_bytes: 64 * 1024,
            sync_interval: Duration::from_secs(5),
            feed_token: None,
            hsts_max_age: None,
            cors: None,
            audit_retention_days: audit::DEFAULT_RETENTION_DAYS,
            device_token_ttl: 90 * 86_400,
            app_metadata_claims: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Keys(#[from] KeyRingError),
    #[error(transparent)]
    Store(#[from] jotgate_store::StoreError),
    #[error("cannot start the password-hashing threads: {0}")]
    Threads(#[from] std::io::Error),
}

/// A readiness check of the store: when, its verdict, and how many checks in a row failed.
pub(crate) struct ReadyCheck {
    at: std::time::Instant,
    verdict: Result<(), String>,
    failures: u32,
}

pub(crate) struct Inner {
    pub cfg: ServerConfig,
    pub store: Arc<dyn Store>,
    pub keys: Keys,
    pub pool: HashPool,
    pub limiter: LoginLimiter,
    pub devices: device::DeviceTokens,
    pub denylist: Denylist,
    /// The last readiness check of the store.
    pub ready: tokio::sync::Mutex<Option<ReadyCheck>>,
    /// When revocations were last read from the store (epoch seconds; 0: not yet).
    pub last_sync: std::sync::atomic::AtomicI64,
}

/// Everything the handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    /// Prepare the service: make sure a signing key exists (generating one on first start),
    /// load keys and the revocation list. Logs the kid of a generated key.
    pub async fn new(
        cfg: ServerConfig,
        store: Arc<dyn Store>,
        hasher: PasswordHasher,
        keys: KeySource,
    ) -> Result<Self, StartError> {
        let t = now();
        let keys = match keys {
            KeySource::Stored { generate } => {
                let (ring, generated) =
                    keyring::load_or_generate(&*store, generate, &cfg.policy, t).await?;
                if let Some(kid) = generated {
                    tracing::info!(%kid, alg = %generate, "generated a new signing key on first start");
                }
                Keys::new(ring, Some(generate), &cfg.policy, TOKEN_CACHE)?
            }
            KeySource::SharedSecret(secret) => Keys::new(
                KeyRing::shared_secret(&secret)?,
                None,
                &cfg.policy,
                TOKEN_CACHE,
            )?,
        };
        let denylist = Denylist::new(Arc::clone(keys.verifier()), cfg.policy.issuer.clone());
        denylist.sync(&*store, t).await?;
        // The shared secret only when device tokens are on: nothing added to start-up
        // otherwise.
        let secret = if cfg.device_token_ttl > 0 {
            store.shared_secret("device_tokens").await?
        } else {
            String::new()
        };
        let devices = device::DeviceTokens::new(
            &secret,
            cfg.device_token_ttl,
            cfg.policy.issuer.starts_with("https://"),
        );
        Ok(Self(Arc::new(Inner {
            devices,
            pool: HashPool::new(hasher, cfg.hash_workers, cfg.hash_queue)?,
            limiter: LoginLimiter::new(cfg.rate_limit.clone(), Arc::clone(&store)),
            cfg,
            store,
            keys,
            denylist,
            ready: tokio::sync::Mutex::new(None),
            last_sync: std::sync::atomic::AtomicI64::new(t),
        })))
    }

    /// Verify an access token the way every edge verifier of this issuer does (the same
    /// [`jotgate_verify::Verifier`]: policy, revocations, verified-token cache). No store
    /// read.
    /// A token for the application's API (not a management token), verified.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Principal>, ApiError> {
        let verified = self.0.keys.verifier().verify(token).await;
        self.for_the_api(verified)
    }

    /// A verified token, if it is for the application's API; counted either way.
    fn for_the_api(
        &self,
        verified: Result<Arc<Principal>, jotgate_verify::VerifyError>,
    ) -> Result<Arc<Principal>, ApiError> {
        let p = match verified {
            Ok(p) if p.has_audience(&self.0.cfg.policy.audience) => p,
            Ok(_) => {
                metrics::verification("token_wrong_audience");
                return Err(wrong_audience());
            }
            Err(e) => {
                metrics::verification(e.code());
                return Err(e.into());
            }
        };
        metrics::verification("valid");
        Ok(p)
    }

    /// Set the gauges read from state (the hashing queue, cache hits, revocation sync
    /// age) and encode every metric.
    pub fn metrics_text(&self) -> String {
        use std::sync::atomic::Ordering;
        let m = &metrics::METRICS;
        m.hash_queue.set(self.0.pool.queued() as i64);
        let hits = self
            .0
            .keys
            .verifier()
            .stats()
            .cache_hits
            .load(Ordering::Relaxed);
        m.cache_hits.inc_by(hits.saturating_sub(m.cache_hits.get()));
        let last = self.0.last_sync.load(Ordering::Relaxed);
        if last > 0 {
            m.feed_lag_seconds.set(now() - last);
        }
        metrics::encode()
    }

    /// A management token (`aud` = the management audience), verified.
    pub async fn authenticate_management(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Arc<Principal>, ApiError> {
        let Some(token) = jotgate_verify::http::bearer(headers, false)? else {
            return Err(ApiError::missing_token());
        };
        let p = self.0.keys.verifier().verify(token).await?;
        if !p.has_audience(&clients::management_audience(&self.0.cfg.policy)) {
            return Err(wrong_audience());
        }
        Ok(p)
    }

    /// The access token of a request (`Authorization: Bearer`, or `x-access-token` when
    /// that legacy header is on), verified.
    pub async fn authenticate_request(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Arc<Principal>, ApiError> {
        // A token verified before, found by the header's bytes: neither read as text nor
        // parsed again (the hot path; everything else takes the way below).
        let verifier = self.0.keys.verifier();
        if let Some(p) =
            jotgate_verify::http::bearer_bytes(headers).and_then(|t| verifier.cached(t))
        {
            return self.for_the_api(Ok(p));
        }
        match jotgate_verify::http::bearer(headers, self.0.cfg.accept_x_access_token)? {
            Some(token) => self.authenticate(token).await,
            None => Err(ApiError::missing_token()),
        }
    }

    /// Record a security event ([`audit::record`]).
    pub async fn audit(&self, e: audit::Event<'_>) {
        audit::record(&*self.0.store, self.0.cfg.audit_retention_days, e).await
    }

    /// One refresh of keys and revocations from the store.
    pub async fn sync(&self) {
        let t = now();
        if let Err(e) = self.0.denylist.sync(&*self.0.store, t).await {
            tracing::warn!(error = %e, "revocation sync failed; keeping the last list");
        }
        if let Err(e) = self
            .0
            .keys
            .reload(&*self.0.store, &self.0.cfg.policy, t)
            .await
        {
            tracing::warn!(error = %e, "key reload failed; keeping the current keys");
        }
    }

    /// Keep revocations current every second (a cheap cursor read: a revocation made by
    /// another instance is honoured here within about a second) and keys every
    /// `sync_interval`, until the task is dropped.
    pub fn spawn_sync(&self) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(1).min(state.0.cfg.sync_interval);
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            let mut keys_due = tokio::time::Instant::now() + state.0.cfg.sync_interval;
            let mut prune_due = tokio::time::Instant::now();
            loop {
                tick.tick().await;
                let t = now();
                // Audit events past their time, once an hour.
                if tokio::time::Instant::now() >= prune_due {
                    prune_due = tokio::time::Instant::now() + Duration::from_secs(3600);
                    match state.0.store.prune_audit(t).await {
                        Ok(0) => {}
                        Ok(n) => tracing::info!(events = n, "old audit events pruned"),
                        Err(e) => tracing::warn!(error = %e, "could not prune the audit log"),
                    }
                }
                let synced =
                    metrics::timed("revocation_sync", state.0.denylist.sync(&*state.0.store, t))
                        .await;
                let news = match synced {
                    Ok(s) => {
                        state
                            .0
                            .last_sync
                            .store(t, std::sync::atomic::Ordering::Relaxed);
                        s
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "revocation sync failed; keeping the last list");
                        Default::default()
                    }
                };
                // A key retired or revoked elsewhere arrives through the feed too: look at
                // the keys at once rather than at the next key sync.
                if news.keys || tokio::time::Instant::now() >= keys_due {
                    keys_due = tokio::time::Instant::now() + state.0.cfg.sync_interval;
                    state.reload_keys(t).await;
                }
            }
        })
    }

    async fn reload_keys(&self, t: i64) {
        if let Err(e) = self
            .0
            .keys
            .reload(&*self.0.store, &self.0.cfg.policy, t)
            .await
        {
            tracing::warn!(error = %e, "key reload failed; keeping the current keys");
        }
    }

    pub fn config(&self) -> &ServerConfig {
        &self.0.cfg
    }
}

/// The account a name names: by its skeleton key, or (accounts made before skeleton keys)
/// its canonical form. Both are read, concurrently, whenever they differ, so that the time
/// taken does not tell which kind of account exists. An older account stored under exactly
/// this canonical form wins: a newer confusable account never shadows it.
pub async fn find_user(
    store: &dyn jotgate_store::Store,
    l: &jotgate_core::username::Lookup,
) -> Result<Option<jotgate_store::UserRecord>, jotgate_store::StoreError> {
    match &l.legacy {
        None => store.user_by_key(&l.key).await,
        Some(legacy) => {
            let (by_skeleton, exact) =
                tokio::join!(store.user_by_key(&l.key), store.user_by_key(legacy));
            Ok(exact?.or(by_skeleton?))
        }
    }
}

fn wrong_audience() -> ApiError {
    jotgate_verify::VerifyError::new(jotgate_verify::VerifyErrorKind::Token(
        jotgate_core::token::TokenErrorKind::WrongAudience,
    ))
    .into()
}

/// The account an email address names: its address, or — for accounts made before
/// addresses, whose usernames could hold '@' — its username.
pub async fn find_account(
    store: &dyn jotgate_store::Store,
    email: &str,
) -> Result<Option<jotgate_store::UserRecord>, jotgate_store::StoreError> {
    if let Some(r) = store.user_by_email(email).await? {
        return Ok(Some(r));
    }
    match jotgate_core::username::lookup_key(email) {
        Ok(l) => find_user(store, &l).await,
        Err(_) => Ok(None),
    }
}

impl AppState {
    /// Ready to serve logins: the store answered a read within 2 s. Checked at most once a
    /// second, however often probes come; the verdict in between is the last one. Two
    /// failed checks in a row (a second apart) make it not ready, so that one slow moment
    /// (a pool busy under a burst) does not take every instance out of a load balancer at
    /// once.
    pub async fn readiness(&self) -> Result<(), String> {
        let mut last = self.0.ready.lock().await;
        if let Some(c) = &*last
            && c.at.elapsed() < Duration::from_secs(1)
        {
            return c.verdict.clone();
        }
        let failures = last.as_ref().map_or(0, |c| c.failures);
        let verdict = match tokio::time::timeout(
            Duration::from_secs(2),
            self.0.store.store_id(false),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the store failed a read");
                Err("the data store does not answer".to_string())
            }
            Err(_) => Err("the data store did not answer within 2 s".to_string()),
        };
        let failures = if verdict.is_ok() { 0 } else { failures + 1 };
        let verdict = if failures == 1 { Ok(()) } else { verdict };
        *last = Some(ReadyCheck {
            at: std::time::Instant::now(),
            verdict: verdict.clone(),
            failures,
        });
        verdict
    }
}

/// How long a request that writes to the store may take before it is answered 503. Less
/// than half the default refresh grace (10 s): a client that retries a refresh after the
/// 503 (`Retry-After: 1`) presents its token again within the grace, and gets the same
/// successor instead of being taken for a thief.
pub const STORE_DEADLINE: Duration = Duration::from_secs(4);

/// Answer 503 at [`STORE_DEADLINE`], but let the handler run to its end in the
/// background: a rotation, an account or a login attempt it has begun is finished
/// (released, revoked, recorded) as if the client had waited, never left half-done by a
/// cancellation at some await point.
async fn store_deadline(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // Still the request's, so that the handler's log lines name it.
    let mut work = tokio::spawn(tracing::Instrument::in_current_span(
        jotgate_verify::service::RequestContext::carry(next.run(req)),
    ));
    match tokio::time::timeout(STORE_DEADLINE, &mut work).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => axum::response::IntoResponse::into_response(ApiError::internal(e)),
        Err(_) => axum::response::IntoResponse::into_response(ApiError::StoreUnavailable(format!(
            "the request did not finish within {} s (it goes on in the background)",
            STORE_DEADLINE.as_secs()
        ))),
    }
}

/// `max_body_bytes` for every request but GET and HEAD, whose handlers read no body (none
/// may: one that did would read up to axum's own 2 MB). They are spared the limit's
/// request extension, an allocation and a map insert on every cached-token request.
#[derive(Clone)]
struct BodyLimit<L, S> {
    limited: L,
    plain: S,
}

impl<L, S> tower::Service<axum::extract::Request> for BodyLimit<L, S>
where
    S: tower::Service<axum::extract::Request>,
    L: tower::Service<
            axum::extract::Request,
            Response = S::Response,
            Error = S::Error,
            Future = S::Future,
        >,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        std::task::ready!(self.limited.poll_ready(cx))?;
        self.plain.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> S::Future {
        use axum::http::Method;
        if req.method() == Method::GET || req.method() == Method::HEAD {
            self.plain.call(req)
        } else {
            self.limited.call(req)
        }
    }
}

/// The whole HTTP API, framed (headers, request id, access log, panics answered, a request
/// timeout) with its body limit around the router as a whole (a `Router::layer` would
/// box a copy of each layer per route and clone it per request).
pub fn router(
    state: AppState,
) -> jotgate_verify::service::Framed<
    impl tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + Sync
    + 'static,
> {
    let limit = state.0.cfg.max_body_bytes;
    let hsts = state.0.cfg.hsts_max_age;
    let cors_cfg = state.0.cfg.cors.clone();
    // Built once, on the first request for it: the document changes only with the issuer,
    // and building it peaks at ~4 MB of heap that a server never asked for it should not keep
    // (freed, but fragmented in the start-up thread's arena).
    let api_doc = Arc::new((
        state.0.cfg.policy.issuer.clone(),
        std::sync::OnceLock::<axum::body::Bytes>::new(),
    ));
    let router = Router::new()
        .route("/signup", post(routes::signup))
        .route("/login", post(routes::login))
        .route("/refresh", post(routes::refresh))
        .route("/logout", post(routes::logout))
        .route("/logout-all", post(routes::logout_all))
        .route(
            "/api/v1/users",
            get(management::list_users).post(management::create_user),
        )
        .route(
            "/api/v1/users/{id}",
            get(management::get_user)
                .patch(management::patch_user)
                .delete(management::delete_user),
        )
        .route(
            "/api/v1/users/{id}/roles",
            get(management::user_roles)
                .post(management::add_user_roles)
                .delete(management::remove_user_roles),
        )
        .route(
            "/api/v1/users/{id}/revoke-sessions",
            post(management::revoke_sessions),
        )
        .route(
            "/api/v1/user-blocks/{id}",
            get(management::get_user_blocks).delete(management::delete_user_blocks),
        )
        .route(
            "/api/v1/me",
            get(management::me).delete(management::delete_me),
        )
        .route("/api/v1/me/password", post(management::change_my_password))
        .route("/api/v1/audit", get(management::audit_events))
        .route("/api/v1/roles", get(management::list_roles))
        .route(
            "/api/v1/roles/{name}",
            get(management::get_role)
                .put(management::put_role)
                .delete(management::delete_role),
        )
        .route(
            "/api/v1/clients",
            get(management::list_clients).post(management::create_client),
        )
        .route("/api/v1/clients/{id}", delete(management::delete_client))
        .route(
            "/api/v1/clients/{id}/rotate-secret",
            post(management::rotate_client_secret),
        )
        // The routes that write to the store answer within STORE_DEADLINE, a slow store
        // or not: 503 `store_unavailable` then, never a request left hanging.
        .route_layer(axum::middleware::from_fn(store_deadline))
        // Its own deadline, answered as an RFC 6749 error.
        .route("/oauth/token", post(clients::token))
        .route("/verify", post(routes::verify))
        .route("/private", get(routes::private))
        .route("/api/v1/revocations", get(routes::revocation_feed))
        .route("/.well-known/jwks.json", get(routes::jwks))
        .route("/.well-known/openid-configuration", get(routes::discovery))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route(
            "/openapi.json",
            get(move || {
                let (issuer, doc) = &*api_doc;
                let doc = doc.get_or_init(|| openapi::document(issuer).into()).clone();
                async move {
                    (
                        [
                            (axum::http::header::CONTENT_TYPE, "application/json"),
                            (axum::http::header::CACHE_CONTROL, "public, max-age=300"),
                        ],
                        doc,
                    )
                }
            }),
        )
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state);
    let app = cors::wrap(
        BodyLimit {
            limited: tower::Layer::layer(&DefaultBodyLimit::max(limit), router.clone()),
            plain: router,
        },
        cors_cfg,
    );
    // A request (a body that trickles in, a slow store read) ends within 30 s.
    jotgate_verify::service::wrap(app, hsts).with_timeout(Duration::from_secs(30))
}

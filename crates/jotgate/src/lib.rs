//! The `jotgate` binary's library half: configuration layering ([`settings`]), the
//! [`Application`] that binds a socket and serves the Router (plain HTTP or rustls TLS),
//! and the administrative commands ([`admin`]). `main.rs` only parses arguments.

pub mod admin;
pub mod check;
pub mod cli;
pub mod edge;
pub mod lambda;
pub mod logging;
pub mod serve;
pub mod settings;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use jotgate_server::{AppState, router};
use jotgate_store::Store;
use jotgate_store::sqlite::SqliteStore;
use settings::Settings;

/// Open the configured store: `store` (`sqlite://PATH`, `postgres://…`, `dynamodb://TABLE`) or the SQLite
/// file `database`.
pub async fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_sealed(settings).await?)
}

/// The master keys that seal signing keys at rest, if configured.
pub fn master_keys(settings: &Settings) -> anyhow::Result<Option<jotgate_core::seal::MasterKeys>> {
    use jotgate_core::seal::{MasterKey, MasterKeys};
    use secrecy::ExposeSecret;
    let old: Vec<MasterKey> = settings::split_secrets(settings.seal.old_master_keys.as_ref())
        .iter()
        .map(|k| MasterKey::from_base64(k.expose_secret()))
        .collect::<Result<_, _>>()
        .map_err(|e| {
            anyhow::anyhow!("invalid setting old_master_keys (JOTGATE_OLD_MASTER_KEYS): {e}")
        })?;
    Ok(match &settings.seal.master_key {
        Some(k) => Some(MasterKeys::new(
            MasterKey::from_base64(k.expose_secret()).map_err(|e| {
                anyhow::anyhow!("invalid setting master_key (JOTGATE_MASTER_KEY): {e}")
            })?,
            old,
        )),
        None if !old.is_empty() => anyhow::bail!(
            "old_master_keys (JOTGATE_OLD_MASTER_KEYS) is set without master_key (JOTGATE_MASTER_KEY): set the new master key too"
        ),
        None => None,
    })
}

/// [`open_store`], as the key-sealing layer itself (for `jotgate keys seal`).
pub async fn open_sealed(
    settings: &Settings,
) -> anyhow::Result<Arc<jotgate_store::sealed::SealedKeys>> {
    let master = master_keys(settings)?;
    let store = open_backend(settings).await?;
    Ok(Arc::new(jotgate_store::sealed::SealedKeys::new(
        store, master,
    )))
}

async fn open_backend(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    // The URL may carry a database password: it is a secret until the backend has it.
    match store_url(settings) {
        None => open_sqlite(&settings.database()),
        Some(url) => {
            if let Some(path) = url.strip_prefix("sqlite://") {
                return open_sqlite(std::path::Path::new(path));
            }
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                return open_postgres(url).await;
            }
            if url.starts_with("dynamodb://") {
                return open_dynamodb(url).await;
            }
            anyhow::bail!(
                "invalid setting store (JOTGATE_STORE): expected sqlite://PATH, postgres://… or dynamodb://TABLE, got a URL with another scheme"
            )
        }
    }
}

fn open_sqlite(path: &std::path::Path) -> anyhow::Result<Arc<dyn Store>> {
    let store = SqliteStore::open(path)
        .map_err(|e| store_error(e, &format!("cannot open the database {}", path.display())))?;
    Ok(Arc::new(store))
}

#[cfg(feature = "postgres")]
async fn open_postgres(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    let store = jotgate_store::postgres::PostgresStore::connect(url, 16)
        .await
        .map_err(|e| store_error(e, "cannot open the PostgreSQL store (JOTGATE_STORE)"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "postgres"))]
async fn open_postgres(_: &str) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!("this jotgate was built without the `postgres` feature")
}

#[cfg(feature = "dynamodb")]
async fn open_dynamodb(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    use jotgate_store::dynamodb::{DynamoConfig, DynamoStore};
    let cfg = DynamoConfig::parse(url)
        .map_err(|e| anyhow::anyhow!("invalid setting store (JOTGATE_STORE): {e}"))?;
    let store = DynamoStore::connect(cfg)
        .await
        .map_err(|e| store_error(e, "cannot open the DynamoDB store (JOTGATE_STORE)"))?;
    Ok(Arc::new(store))
}

#[cfg(not(feature = "dynamodb"))]
async fn open_dynamodb(_: &str) -> anyhow::Result<Arc<dyn Store>> {
    anyhow::bail!(
        "this jotgate was built without the `dynamodb` feature (cargo build --features dynamodb)"
    )
}

/// A store error as the person starting jotgate should read it.
fn store_error(e: jotgate_store::StoreError, what: &str) -> anyhow::Error {
    match e {
        jotgate_store::StoreError::Setup { what, todo } => {
            anyhow::Error::new(logging::Startup { what, todo })
        }
        e => anyhow::Error::new(e).context(what.to_string()),
    }
}

/// The store's location as `describe` would give it, without opening it.
fn store_url(settings: &Settings) -> Option<&str> {
    use secrecy::ExposeSecret;
    settings.store.store.as_ref().map(|s| s.expose_secret())
}

/// Open the configured store without writing to it: `None` when it is fresh (nothing
/// there yet that `serve` would create). For `jotgate check`.
pub async fn open_existing(settings: &Settings) -> anyhow::Result<Option<Arc<dyn Store>>> {
    let url = store_url(settings);
    let sqlite = |path: &std::path::Path| -> anyhow::Result<Option<Arc<dyn Store>>> {
        Ok(SqliteStore::open_existing(path)
            .map_err(|e| store_error(e, "cannot read the SQLite database"))?
            .map(|s| Arc::new(s) as Arc<dyn Store>))
    };
    match url {
        None => sqlite(&settings.database()),
        Some(u) if u.starts_with("sqlite://") => {
            sqlite(std::path::Path::new(u.trim_start_matches("sqlite://")))
        }
        #[cfg(feature = "postgres")]
        Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
            Ok(jotgate_store::postgres::PostgresStore::connect_existing(u)
                .await
                .map_err(|e| store_error(e, "cannot read the PostgreSQL store"))?
                .map(|s| Arc::new(s) as Arc<dyn Store>))
        }
        #[cfg(feature = "dynamodb")]
        Some(u) if u.starts_with("dynamodb://") => {
            use jotgate_store::dynamodb::{DynamoConfig, DynamoStore};
            let cfg = DynamoConfig::parse(u)
                .map_err(|e| anyhow::anyhow!("invalid setting store (JOTGATE_STORE): {e}"))?;
            Ok(DynamoStore::connect_existing(cfg)
                .await
                .map_err(|e| store_error(e, "cannot read the DynamoDB store"))?
                .map(|s| Arc::new(s) as Arc<dyn Store>))
        }
        Some(_) => {
            // Not compiled in, or not a store URL: the same words as `serve`.
            open_backend(settings).await.map(Some)
        }
    }
}

/// Install aws-lc-rs as rustls' process-wide provider (idempotent).
pub fn init_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Open the store (creating it and a signing key on first start) and prepare the service
/// state: everything but a socket. Shared by the server and Lambda mode.
pub async fn build_state(settings: &Settings) -> anyhow::Result<AppState> {
    let cfg = settings.server_config()?;
    let keys = settings.key_source()?;
    let store = open_store(settings).await?;
    tracing::info!(store = %store.describe(), "data store opened");
    let hasher = settings.password_hasher()?;
    Ok(AppState::new(cfg, Arc::clone(&store), hasher, keys).await?)
}

/// A configured, bound, not yet running server.
pub struct Application {
    listener: std::net::TcpListener,
    metrics: Option<std::net::TcpListener>,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: serve::ConnLimits,
    state: AppState,
}

impl Application {
    /// Open the store (creating it and a signing key on first start), bind the socket.
    pub async fn build(settings: &Settings) -> anyhow::Result<Self> {
        init_crypto();
        let listener = std::net::TcpListener::bind(settings.listen())
            .with_context(|| format!("cannot listen on {}", settings.listen()))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        // With port 0 the default issuer must name the port actually bound.
        let mut settings = settings.clone();
        settings.listen.listen = Some(addr);
        let settings = &settings;
        let tls = match settings.tls()? {
            Some((cert, key)) => Some(serve::tls_acceptor(&cert, &key)?),
            None => None,
        };
        let limits = settings.conn_limits()?;
        let metrics = match settings.listen.metrics_listen {
            None => None,
            Some(a) => {
                let l = std::net::TcpListener::bind(a)
                    .with_context(|| format!("cannot listen on {a} for metrics"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
        };
        let state = build_state(settings).await?;

        if tls.is_none() && !addr.ip().is_loopback() {
            tracing::warn!(
                %addr,
                "listening on a non-loopback address without TLS: passwords and tokens travel in clear text; \
                 use --tls-cert/--tls-key or a TLS-terminating proxy"
            );
        }
        Ok(Self {
            listener,
            metrics,
            addr,
            tls,
            limits,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where metrics are served, when they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Serve until `shutdown` completes, then drain in-flight requests.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let sync = self.state.spawn_sync();
        let metrics = match self.metrics {
            None => None,
            Some(l) => {
                jotgate_server::metrics::enable();
                let addr = l.local_addr()?;
                let listener = tokio::net::TcpListener::from_std(l)?;
                let state = self.state.clone();
                let app = axum::Router::new().route(
                    "/metrics",
                    axum::routing::get(move || {
                        let text = state.metrics_text();
                        async move {
                            (
                                [(
                                    axum::http::header::CONTENT_TYPE,
                                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                )],
                                text,
                            )
                        }
                    }),
                );
                tracing::info!("metrics on http://{addr}/metrics");
                Some(tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).await {
                        tracing::warn!(error = %e, "the metrics listener stopped");
                    }
                }))
            }
        };
        let issuer = self.state.config().policy.issuer.clone();
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        tracing::info!(%issuer, "jotgate listening on {scheme}://{}", self.addr);
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let result = serve::serve(
            listener,
            self.tls,
            router(self.state),
            self.limits,
            shutdown,
        )
        .await
        .map_err(Into::into);
        sync.abort();
        if let Some(m) = metrics {
            m.abort();
        }
        result
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

/// Where the configured store is, for messages: never a password.
pub fn store_location(settings: &Settings) -> String {
    match store_url(settings) {
        None => format!("sqlite://{}", settings.database().display()),
        Some(u) => match u.split_once("://") {
            Some((scheme, rest)) => {
                let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
                let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
                let user = authority
                    .rsplit_once('@')
                    .map(|(ui, _)| ui.split(':').next().unwrap_or(""))
                    .filter(|u| !u.is_empty())
                    .map(|u| format!("{u}@"))
                    .unwrap_or_default();
                let path = tail.split('?').next().unwrap_or("");
                format!("{scheme}://{user}{host}{path}")
            }
            None => "(an unrecognised store URL)".into(),
        },
    }
}

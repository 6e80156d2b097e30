//! The accept loop shared by `jotgate serve` and `jotgate gateway`: bounded against slow and
//! idle clients, which `axum::serve` is not (a partial request line stayed open for good).
//!
//! - Every HTTP/1 request head must arrive within `header_timeout`, counted from the moment
//!   the connection is ready for a request: a slow or silent client, or an idle keep-alive
//!   connection, is closed then.
//! - A TLS handshake must finish within the same time.
//! - At most `max_connections` connections are open; past that, new ones wait in the
//!   kernel's backlog until a slot frees (the timeouts guarantee slots do free). The default
//!   stays below the process's descriptor limit, which is raised to its hard limit at start.
//! - HTTP/2 only over TLS, by ALPN; plain connections speak HTTP/1.1.
//!
//! Not for: routing or anything an HTTP handler decides.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use jotgate_verify::service::Framed;
use tokio::net::TcpListener;
use tower::ServiceExt;

/// How long a drain waits for in-flight requests at shutdown.
const DRAIN: Duration = Duration::from_secs(10);

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// A request head (or a TLS handshake) must arrive within this; also the idle limit of
    /// a keep-alive connection.
    pub header_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            max_connections: default_max_connections(),
        }
    }
}

/// Raise the soft descriptor limit to the hard one and keep 256 descriptors for the store,
/// files and outgoing connections.
pub fn default_max_connections() -> usize {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, getrlimit, setrlimit};
        let mut l = getrlimit(Resource::Nofile);
        if let (Some(cur), Some(max)) = (l.current, l.maximum)
            && cur < max
        {
            l.current = Some(max);
            if setrlimit(Resource::Nofile, l).is_err() {
                l.current = Some(cur);
            }
        }
        let n = l.current.unwrap_or(65_536).min(1 << 20) as usize;
        n.saturating_sub(256).max(64)
    }
    #[cfg(not(unix))]
    {
        10_000
    }
}

/// Serve `app` on `listener` (TLS when `tls` is given) until `shutdown`, then drain.
pub async fn serve<S>(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: Framed<S>,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut h1 = hyper::server::conn::http1::Builder::new();
    h1.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut h2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(200);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = Arc::clone(&slots).acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of descriptors or the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Responses go out in pieces (the gateway streams): no Nagle delay.
        let _ = tcp.set_nodelay(true);
        // Each request's context carries the peer (`service::peer`).
        let router = app.for_peer(peer);
        let svc = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            router.clone().oneshot(req.map(Body::new))
        });
        let watcher = graceful.watcher();
        let (h1, h2, tls) = (h1.clone(), h2.clone(), tls.clone());
        let timeout = limits.header_timeout;
        tokio::spawn(async move {
            let _permit = permit;
            let result = match tls {
                None => {
                    let conn = h1.serve_connection(TokioIo::new(tcp), svc);
                    watcher.watch(conn).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let is_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    if is_h2 {
                        let conn = h2.serve_connection(TokioIo::new(stream), svc);
                        watcher.watch(conn).await
                    } else {
                        let conn = h1.serve_connection(TokioIo::new(stream), svc);
                        watcher.watch(conn).await
                    }
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("shutdown: in-flight requests did not finish in {DRAIN:?}");
        },
    }
    Ok(())
}

/// A rustls acceptor for a PEM certificate chain and key, offering HTTP/2 and HTTP/1.1.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use crate::logging::startup;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| {
            let why = pem_why(&e);
            startup(
                e,
                format!("cannot read the TLS certificate {}: {why}", cert.display()),
                "give --tls-cert the PEM certificate chain (server certificate first)",
            )
        })?;
    if certs.is_empty() {
        return Err(startup(
            anyhow::anyhow!("empty"),
            format!("no certificate in {}", cert.display()),
            "give --tls-cert the PEM certificate chain (server certificate first)",
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        let why = pem_why(&e);
        startup(
            e,
            format!("cannot read the TLS key {}: {why}", key.display()),
            "give --tls-key the certificate's private key in PEM (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .map_err(|e| {
            startup(
                e,
                format!(
                    "the TLS certificate {} and key {} do not belong together",
                    cert.display(),
                    key.display()
                ),
                "give --tls-key the private key of the certificate's public key",
            )
        })?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

/// Why a PEM file could not be read, in a few words.
fn pem_why(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::NoItemsFound => "it holds no PEM item of that kind".into(),
        Error::Io(io) => io.to_string(),
        other => format!("{other:?}"),
    }
}

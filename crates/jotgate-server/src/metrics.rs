//! Prometheus metrics (the `prometheus-client` crate, OpenMetrics text): requests by route,
//! method and status with a latency histogram; logins by outcome; the hashing pool's queue
//! and its 429s; token verifications by result; verified-token cache hits; how long ago
//! revocations were last synced; store latency per operation. Served by `jotgate serve`
//! on its own address (`metrics_listen`), never on the API's.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub method: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    pub operation: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Histogram>,
    pub logins: Family<Outcome, Counter>,
    pub hash_queue: Gauge,
    pub hash_rejected: Counter,
    pub verifications: Family<Outcome, Counter>,
    pub cache_hits: Counter,
    pub feed_lag_seconds: Gauge,
    pub store_seconds: Family<Operation, Histogram>,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// Whether metrics are served (`metrics_listen`): without, nothing is counted, and a
/// request pays for none of it.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Count from now on, and observe every answer.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
    jotgate_verify::service::set_observer(observe);
}

fn on() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let mut registry = Registry::with_prefix("jotgate");
    let requests =
        Family::<RequestLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
    registry.register(
        "http_request_duration_seconds",
        "HTTP requests answered, by route template, method and status",
        requests.clone(),
    );
    let logins = Family::<Outcome, Counter>::default();
    registry.register(
        "logins",
        "Login attempts by outcome (succeeded, failed, throttled, blocked, busy)",
        logins.clone(),
    );
    let hash_queue = Gauge::default();
    registry.register(
        "hash_queue_depth",
        "Password hashes waiting for a worker",
        hash_queue.clone(),
    );
    let hash_rejected = Counter::default();
    registry.register(
        "hash_rejected",
        "Logins and sign-ups answered 429 because the hashing queue was full",
        hash_rejected.clone(),
    );
    let verifications = Family::<Outcome, Counter>::default();
    registry.register(
        "token_verifications",
        "Access tokens verified by the server, by result (valid, or the refusal's code)",
        verifications.clone(),
    );
    let cache_hits = Counter::default();
    registry.register(
        "token_cache_hits",
        "Verifications answered from the verified-token cache",
        cache_hits.clone(),
    );
    let feed_lag_seconds = Gauge::default();
    registry.register(
        "revocation_sync_age_seconds",
        "Seconds since revocations were last read from the store",
        feed_lag_seconds.clone(),
    );
    let store_seconds =
        Family::<Operation, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
    registry.register(
        "store_operation_duration_seconds",
        "Store operations on the login and token paths, by operation",
        store_seconds.clone(),
    );
    Metrics {
        registry,
        requests,
        logins,
        hash_queue,
        hash_rejected,
        verifications,
        cache_hits,
        feed_lag_seconds,
        store_seconds,
    }
});

/// Every route of the API, as templates (`{id}`): the label values of `route`.
pub const ROUTES: &[&str] = &[
    "/signup",
    "/login",
    "/refresh",
    "/logout",
    "/logout-all",
    "/verify",
    "/private",
    "/oauth/token",
    "/healthz",
    "/readyz",
    "/.well-known/jwks.json",
    "/.well-known/openid-configuration",
    "/api/v1/revocations",
    "/api/v1/users",
    "/api/v1/roles",
    "/api/v1/clients",
    "/api/v1/audit",
    "/api/v1/me",
    "/api/v1/me/password",
    "/openapi.json",
    "/api/v1/users/{id}",
    "/api/v1/users/{id}/roles",
    "/api/v1/users/{id}/revoke-sessions",
    "/api/v1/roles/{name}",
    "/api/v1/clients/{id}",
    "/api/v1/clients/{id}/rotate-secret",
];

/// The route template of a path: a bounded set of label values, whatever paths arrive.
pub fn route(path: &str) -> &'static str {
    if let Some(r) = ROUTES.iter().find(|r| **r == path) {
        return r;
    }
    let rest = |prefix: &str| path.strip_prefix(prefix).filter(|r| !r.is_empty());
    if let Some(r) = rest("/api/v1/users/") {
        return match r.split_once('/') {
            None => "/api/v1/users/{id}",
            Some((_, "roles")) => "/api/v1/users/{id}/roles",
            Some((_, "revoke-sessions")) => "/api/v1/users/{id}/revoke-sessions",
            Some(_) => "other",
        };
    }
    if let Some(r) = rest("/api/v1/user-blocks/") {
        return if r.contains('/') {
            "other"
        } else {
            "/api/v1/user-blocks/{id}"
        };
    }
    if let Some(r) = rest("/api/v1/roles/") {
        return if r.contains('/') {
            "other"
        } else {
            "/api/v1/roles/{name}"
        };
    }
    if let Some(r) = rest("/api/v1/clients/") {
        return match r.split_once('/') {
            None => "/api/v1/clients/{id}",
            Some((_, "rotate-secret")) => "/api/v1/clients/{id}/rotate-secret",
            Some(_) => "other",
        };
    }
    "other"
}

fn method(m: &axum::http::Method) -> &'static str {
    use axum::http::Method as M;
    match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::HEAD => "HEAD",
        _ => "other",
    }
}

/// The [`jotgate_verify::service::Observer`] that counts every answer.
pub fn observe(m: &axum::http::Method, path: &str, status: u16, latency_us: u64) {
    METRICS
        .requests
        .get_or_create(&RequestLabels {
            route: route(path),
            method: method(m),
            status,
        })
        .observe(latency_us as f64 / 1e6);
}

pub fn login(outcome: &'static str) {
    if on() {
        METRICS.logins.get_or_create(&Outcome { outcome }).inc();
    }
}

pub fn verification(outcome: &'static str) {
    if !on() {
        return;
    }
    METRICS
        .verifications
        .get_or_create(&Outcome { outcome })
        .inc();
}

/// Time a store operation.
pub async fn timed<T>(operation: &'static str, f: impl Future<Output = T>) -> T {
    if !on() {
        return f.await;
    }
    let started = Instant::now();
    let out = f.await;
    METRICS
        .store_seconds
        .get_or_create(&Operation { operation })
        .observe(started.elapsed().as_secs_f64());
    out
}

/// The OpenMetrics text of every metric.
pub fn encode() -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &METRICS.registry).is_err() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_a_bounded_set_of_routes() {
        assert_eq!(route("/login"), "/login");
        assert_eq!(route("/api/v1/users/abc"), "/api/v1/users/{id}");
        assert_eq!(route("/api/v1/users/abc/roles"), "/api/v1/users/{id}/roles");
        assert_eq!(route("/api/v1/users/abc/other"), "other");
        assert_eq!(route("/api/v1/users/"), "other");
        assert_eq!(route("/api/v1/roles/paid"), "/api/v1/roles/{name}");
        assert_eq!(
            route("/api/v1/clients/cl_x/rotate-secret"),
            "/api/v1/clients/{id}/rotate-secret"
        );
        assert_eq!(route("/nope/%00"), "other");
    }
}

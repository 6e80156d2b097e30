//! Back-pressure for the expensive parts of login: a bounded password-hashing pool and
//! per-username / per-address failure throttling with growing delays, counted in the
//! store so that it holds across instances.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jotgate_core::{PasswordHasher, Workspace};
use jotgate_store::{LoginFailures, Store};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

type Job = Box<dyn FnOnce(&PasswordHasher, &mut Workspace) + Send>;

/// Runs argon2 on `workers` dedicated threads, with at most `max_pending` jobs waiting;
/// past that a request gets 429 instead of queueing without bound.
///
/// Each worker thread owns one argon2 [`Workspace`] (the whole memory cost, 19 MiB by
/// default) and reuses it: hashing memory is `workers` × the cost, allocated once, with no
/// page faults per login. (Allocating per hash on tokio's blocking pool instead was
/// measured here at 1.3 GiB RSS after 150 logins — glibc kept the freed blocks in many
/// threads' arenas — and forcing those blocks onto mmap cost ~40 % of login throughput.)
pub struct HashPool {
    jobs: mpsc::Sender<Job>,
}

impl HashPool {
    pub fn new(
        hasher: PasswordHasher,
        workers: usize,
        max_pending: usize,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>(max_pending.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let hasher = Arc::new(hasher);
        for i in 0..workers.max(1) {
            let rx = Arc::clone(&rx);
            let hasher = Arc::clone(&hasher);
            std::thread::Builder::new()
                .name(format!("jotgate-hash-{i}"))
                .spawn(move || {
                    let mut workspace = Workspace::default();
                    loop {
                        // One idle worker waits on the queue at a time; the others wait here.
                        let job = rx.lock().unwrap_or_else(|p| p.into_inner()).blocking_recv();
                        let Some(job) = job else { break }; // the pool was dropped
                        let run = std::panic::AssertUnwindSafe(|| job(&hasher, &mut workspace));
                        if std::panic::catch_unwind(run).is_err() {
                            tracing::error!("a password-hashing job panicked");
                        }
                    }
                })?;
        }
        Ok(Self { jobs })
    }

    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&PasswordHasher, &mut Workspace) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |h, ws| {
            let _ = tx.send(f(h, ws));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::Busy,
            mpsc::error::TrySendError::Closed(_) => ApiError::internal("hashing pool stopped"),
        })?;
        rx.await
            .map_err(|_| ApiError::internal("a hashing job was dropped"))
    }
}

/// Login throttling settings.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Failures allowed per username before delays start.
    pub user_free_failures: u32,
    /// Failures allowed per client address before delays start.
    pub ip_free_failures: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A key with no failure for this long starts afresh.
    pub reset_after: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            user_free_failures: 5,
            ip_free_failures: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            reset_after: Duration::from_secs(15 * 60),
        }
    }
}

/// Counts failed logins per key (`user:<digest of the canonical name>`, `ip:<address>`) in
/// the store, so every instance — every Lambda container, every server on one database —
/// sees the same counts. Keys are the names *as typed*, existing or not, so a lockout
/// reveals nothing about existence. The delay after a failure is computed from the count
/// and the instant of the latest failure; nothing else is stored.
pub struct LoginLimiter {
    cfg: RateLimitConfig,
    store: Arc<dyn Store>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl LoginLimiter {
    pub fn new(cfg: RateLimitConfig, store: Arc<dyn Store>) -> Self {
        Self { cfg, store }
    }

    fn window_ms(&self) -> i64 {
        self.cfg.reset_after.as_millis() as i64
    }

    /// Until when (ms since the epoch) `f` blocks further attempts, if it does.
    fn blocked_until(&self, f: &LoginFailures) -> Option<i64> {
        let free = if f.key.starts_with("ip:") {
            self.cfg.ip_free_failures
        } else {
            self.cfg.user_free_failures
        };
        if f.count <= free {
            return None;
        }
        let exp = (f.count - free - 1).min(30);
        let delay = self
            .cfg
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.cfg.max_delay);
        Some(f.last_ms.saturating_add(delay.as_millis() as i64))
    }

    /// `Err(RateLimited)` with the seconds to wait when any key is still blocked; else
    /// whether the first key (the username) has failures on record, for
    /// [`record_success`](Self::record_success).
    pub async fn check(&self, keys: &[String]) -> Result<bool, ApiError> {
        let now = now_ms();
        let live = self
            .store
            .login_failures(keys, now, self.window_ms())
            .await?;
        let wait_ms = live
            .iter()
            .filter_map(|f| self.blocked_until(f))
            .map(|until| until - now)
            .max()
            .unwrap_or(0);
        if wait_ms > 0 {
            return Err(ApiError::RateLimited {
                retry_after_secs: (wait_ms as u64).div_ceil(1000),
            });
        }
        Ok(live.iter().any(|f| Some(&f.key) == keys.first()))
    }

    /// Count a failure against the username and the address. A store failure is logged,
    /// not shown: the answer stays "bad credentials".
    pub async fn record_failure(&self, user_key: &str, ip_key: Option<&str>) {
        let now = now_ms();
        for key in std::iter::once(user_key).chain(ip_key) {
            if let Err(e) = self
                .store
                .add_login_failure(key, now, self.window_ms())
                .await
            {
                tracing::warn!(error = %e, "could not count a failed login");
            }
        }
    }

    /// A successful login clears the username's count (not the address's). `had_failures`
    /// is what [`check`](Self::check) said: a login with nothing to clear writes nothing.
    pub async fn record_success(&self, user_key: &str, had_failures: bool) {
        if !had_failures {
            return;
        }
        if let Err(e) = self.store.clear_login_failures(user_key).await {
            tracing::warn!(error = %e, "could not clear a login failure count");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delays_grow_after_free_failures() {
        let store: Arc<dyn Store> =
            Arc::new(jotgate_store::sqlite::SqliteStore::in_memory().unwrap());
        let cfg = RateLimitConfig {
            user_free_failures: 2,
            ip_free_failures: 100,
            base_delay: Duration::from_secs(4),
            ..RateLimitConfig::default()
        };
        let l = LoginLimiter::new(cfg.clone(), Arc::clone(&store));
        let keys = ["user:bob".to_string()];
        let wait = |r: Result<bool, ApiError>| match r {
            Ok(_) => 0,
            Err(ApiError::RateLimited { retry_after_secs }) => retry_after_secs,
            Err(e) => panic!("{e:?}"),
        };
        l.record_failure("user:bob", None).await;
        l.record_failure("user:bob", None).await;
        assert_eq!(wait(l.check(&keys).await), 0);
        l.record_failure("user:bob", None).await;
        let first = wait(l.check(&keys).await);
        assert!((3..=4).contains(&first), "{first}");
        l.record_failure("user:bob", None).await;
        // Another instance on the same store sees the same count.
        let other = LoginLimiter::new(cfg, store);
        let second = wait(other.check(&keys).await);
        assert!((7..=8).contains(&second), "{second}");
        assert_eq!(
            other.check(&["ip:none".to_string()]).await.ok(),
            Some(false)
        );
        other.record_success("user:bob", true).await;
        assert_eq!(wait(l.check(&keys).await), 0);
    }

    #[tokio::test]
    async fn a_success_clears_the_username_count_only_when_there_is_one() {
        let store: Arc<dyn Store> =
            Arc::new(jotgate_store::sqlite::SqliteStore::in_memory().unwrap());
        let cfg = RateLimitConfig {
            user_free_failures: 2,
            ..RateLimitConfig::default()
        };
        let l = LoginLimiter::new(cfg, store);
        let keys = ["user:amy".to_string(), "ip:1".to_string()];
        assert!(!l.check(&keys).await.unwrap(), "nothing on record");
        l.record_failure("user:amy", Some("ip:1")).await;
        l.record_failure("user:amy", Some("ip:1")).await;
        let had = l.check(&keys).await.unwrap();
        assert!(had);
        l.record_success("user:amy", had).await;
        // The address keeps its count; the username starts afresh, so a third failure
        // is its first and blocks nothing.
        assert!(!l.check(&keys).await.unwrap());
        l.record_failure("user:amy", None).await;
        assert!(l.check(&keys).await.is_ok());
    }
}

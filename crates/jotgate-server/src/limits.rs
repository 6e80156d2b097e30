//! Back-pressure for the expensive parts of login: a bounded password-hashing pool and
//! per-username / per-address failure throttling with growing delays.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jotgate_core::{PasswordHasher, Workspace};
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

#[derive(Debug)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

/// Counts failed logins per key (`user:<canonical name>`, `ip:<address>`). Keys are the
/// names *as typed*, existing or not, so a lockout reveals nothing about existence.
pub struct LoginLimiter {
    cfg: RateLimitConfig,
    entries: Mutex<HashMap<String, Entry>>,
}

/// Entries kept before stale ones are swept.
const SWEEP_AT: usize = 100_000;

impl LoginLimiter {
    pub fn new(cfg: RateLimitConfig) -> Self {
        Self {
            cfg,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds)` when any key is still blocked.
    pub fn check(&self, keys: &[String]) -> Result<(), u64> {
        let now = Instant::now();
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let wait = keys
            .iter()
            .filter_map(|k| entries.get(k))
            .filter(|e| now.duration_since(e.last_failure) < self.cfg.reset_after)
            .filter_map(|e| e.blocked_until.checked_duration_since(now))
            .max();
        match wait {
            Some(d) if !d.is_zero() => Err(d.as_secs() + u64::from(d.subsec_nanos() > 0)),
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, user_key: &str, ip_key: Option<&str>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= SWEEP_AT {
            let reset = self.cfg.reset_after;
            entries.retain(|_, e| now.duration_since(e.last_failure) < reset);
        }
        let mut bump = |key: &str, free: u32| {
            let e = entries.entry(key.to_string()).or_insert(Entry {
                failures: 0,
                last_failure: now,
                blocked_until: now,
            });
            if now.duration_since(e.last_failure) >= self.cfg.reset_after {
                e.failures = 0;
            }
            e.failures = e.failures.saturating_add(1);
            e.last_failure = now;
            if e.failures > free {
                let exp = (e.failures - free - 1).min(30);
                let delay = self
                    .cfg
                    .base_delay
                    .saturating_mul(1u32 << exp)
                    .min(self.cfg.max_delay);
                e.blocked_until = now + delay;
            }
        };
        bump(user_key, self.cfg.user_free_failures);
        if let Some(ip) = ip_key {
            bump(ip, self.cfg.ip_free_failures);
        }
    }

    /// A successful login clears the username's count (not the address's).
    pub fn record_success(&self, user_key: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(user_key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_after_free_failures() {
        let l = LoginLimiter::new(RateLimitConfig {
            user_free_failures: 2,
            ip_free_failures: 100,
            base_delay: Duration::from_secs(4),
            ..RateLimitConfig::default()
        });
        let keys = ["user:bob".to_string()];
        l.record_failure("user:bob", None);
        l.record_failure("user:bob", None);
        assert_eq!(l.check(&keys), Ok(()));
        l.record_failure("user:bob", None);
        let first = l.check(&keys).unwrap_err();
        assert!((3..=4).contains(&first), "{first}");
        l.record_failure("user:bob", None);
        let second = l.check(&keys).unwrap_err();
        assert!((7..=8).contains(&second), "{second}");
        l.record_success("user:bob");
        assert_eq!(l.check(&keys), Ok(()));
    }
}

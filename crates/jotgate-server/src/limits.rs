//! Back-pressure for the expensive parts of login: a bounded password-hashing pool and
//! per-username / per-address failure throttling with growing delays, counted in the
//! store so that it holds across instances.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jotgate_core::{PasswordHasher, Workspace};
use jotgate_store::{LoginFailures, Store, THROTTLE_GROUP_SEP};
use tokio::sync::oneshot;

use crate::error::ApiError;

type Job = Box<dyn FnOnce(&PasswordHasher, &mut Workspace) + Send>;

/// A hashing thread that has had no job for this long gives its argon2 memory back: a
/// server that only verifies tokens keeps no login memory, and a stream of logins keeps
/// it (the first login after a quiet spell pays the page faults, ~2 ms of a ~30 ms hash).
pub const HASH_MEMORY_IDLE: Duration = Duration::from_secs(5);

/// The most device-token logins of one user waiting at once: an account whose owner (or
/// whoever holds its device token and password) floods the lane gets its turn in the
/// rotation and this many places, never the whole lane.
pub const TRUSTED_PER_USER: usize = 4;

/// The most device-token logins from one client address group (an IPv4 address, an IPv6
/// /64) waiting at once: accounts made from one address cannot fill the lane together.
pub const TRUSTED_PER_ADDRESS: usize = 8;

struct Queue {
    jobs: std::collections::VecDeque<Job>,
    /// Logins with a valid device token: taken before any job of `jobs`, and bounded
    /// apart, so a flood of untrusted attempts neither delays nor sheds them.
    trusted: FairQueue,
    /// Trusted jobs taken in a row since the last untrusted one ([`TRUSTED_RUN`]).
    trusted_run: u32,
    closed: bool,
}

/// Trusted jobs taken in a row while untrusted ones wait: then one untrusted job. Device-
/// token logins get three quarters of the workers under any flood, and the rest of the
/// service (sign-ups, logins without a token) a quarter under any stream of device-token
/// logins — whoever sends them: a device token is no secret from its own account.
pub const TRUSTED_RUN: u32 = 3;

impl Queue {
    fn next_job(&mut self) -> Option<Job> {
        let trusted_turn = self.jobs.is_empty() || self.trusted_run < TRUSTED_RUN;
        if trusted_turn && let Some(job) = self.trusted.pop() {
            self.trusted_run += 1;
            return Some(job);
        }
        self.trusted_run = 0;
        self.jobs.pop_front().or_else(|| self.trusted.pop())
    }
}

/// Jobs per user, served in turn: one job of each waiting user, then the next round.
#[derive(Default)]
struct FairQueue {
    by_user: std::collections::HashMap<String, std::collections::VecDeque<(Job, String)>>,
    /// Users with jobs waiting, in serving order.
    turn: std::collections::VecDeque<String>,
    /// Jobs waiting per client address group.
    by_address: std::collections::HashMap<String, usize>,
    len: usize,
}

impl FairQueue {
    fn len(&self) -> usize {
        self.len
    }

    /// Whether `user` from `address` may add a job: at most [`TRUSTED_PER_USER`] waiting
    /// per user and [`TRUSTED_PER_ADDRESS`] per address group.
    fn has_room(&self, user: &str, address: &str) -> bool {
        self.by_user.get(user).map_or(0, |q| q.len()) < TRUSTED_PER_USER
            && self.by_address.get(address).copied().unwrap_or(0) < TRUSTED_PER_ADDRESS
    }

    fn push(&mut self, user: &str, address: &str, job: Job) {
        let q = self.by_user.entry(user.to_string()).or_default();
        if q.is_empty() {
            self.turn.push_back(user.to_string());
        }
        q.push_back((job, address.to_string()));
        *self.by_address.entry(address.to_string()).or_default() += 1;
        self.len += 1;
    }

    fn pop(&mut self) -> Option<Job> {
        let user = self.turn.pop_front()?;
        let q = self.by_user.get_mut(&user)?;
        let (job, address) = q.pop_front()?;
        if q.is_empty() {
            self.by_user.remove(&user);
        } else {
            self.turn.push_back(user);
        }
        if let Some(n) = self.by_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.by_address.remove(&address);
            }
        }
        self.len -= 1;
        Some(job)
    }
}

struct Shared {
    queue: Mutex<Queue>,
    ready: std::sync::Condvar,
    max_pending: usize,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs argon2 on `workers` dedicated threads, with at most `max_pending` jobs waiting;
/// past that a request gets 429 instead of queueing without bound.
///
/// Each worker thread owns one argon2 [`Workspace`] (the whole memory cost, 19 MiB by
/// default) and reuses it: hashing memory is at most `workers` × the cost, with no page
/// faults per login while logins come; a worker idle for [`HASH_MEMORY_IDLE`] releases it.
/// (Allocating per hash on tokio's blocking pool instead was measured here at 1.3 GiB RSS
/// after 150 logins — glibc kept the freed blocks in many threads' arenas — and forcing
/// those blocks onto mmap cost ~40 % of login throughput.) Idle workers all wait on one
/// condition variable, each with its own timeout, so every one of them gets to release.
pub struct HashPool {
    shared: Arc<Shared>,
    /// Untrusted logins under way, from their first store read to their answer.
    admitted: Arc<std::sync::atomic::AtomicUsize>,
    /// The most of them: what the pool can take (its queue and one per worker).
    admit_max: usize,
}

/// An untrusted login under way ([`HashPool::admit`]); the place is given back on drop.
pub struct Admission(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl HashPool {
    pub fn new(
        hasher: PasswordHasher,
        workers: usize,
        max_pending: usize,
    ) -> std::io::Result<Self> {
        Self::with_idle(hasher, workers, max_pending, HASH_MEMORY_IDLE)
    }

    /// [`new`](Self::new), with the idle time after which a worker releases its memory.
    pub fn with_idle(
        hasher: PasswordHasher,
        workers: usize,
        max_pending: usize,
        idle: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: std::collections::VecDeque::new(),
                trusted: FairQueue::default(),
                trusted_run: 0,
                closed: false,
            }),
            ready: std::sync::Condvar::new(),
            max_pending: max_pending.max(1),
        });
        let hasher = Arc::new(hasher);
        // Made first, so that a failed spawn below drops it and ends the workers started.
        let pool = Self {
            shared,
            admitted: Arc::default(),
            admit_max: max_pending.max(1) + workers.max(1),
        };
        for i in 0..workers.max(1) {
            let shared = Arc::clone(&pool.shared);
            let hasher = Arc::clone(&hasher);
            std::thread::Builder::new()
                .name(format!("jotgate-hash-{i}"))
                .spawn(move || {
                    let mut workspace = Workspace::default();
                    let mut last_job = std::time::Instant::now();
                    let mut q = shared.lock();
                    loop {
                        if let Some(job) = q.next_job() {
                            drop(q);
                            let run = std::panic::AssertUnwindSafe(|| job(&hasher, &mut workspace));
                            if std::panic::catch_unwind(run).is_err() {
                                tracing::error!("a password-hashing job panicked");
                            }
                            last_job = std::time::Instant::now();
                            q = shared.lock();
                            continue;
                        }
                        if q.closed {
                            break; // the pool was dropped
                        }
                        if !workspace.is_allocated() {
                            q = shared.ready.wait(q).unwrap_or_else(|p| p.into_inner());
                            continue;
                        }
                        // Idle since the last job, not since the last wake-up.
                        let Some(left) = idle.checked_sub(last_job.elapsed()) else {
                            // Freed outside the lock: others queue and take jobs meanwhile.
                            drop(q);
                            workspace.release();
                            q = shared.lock();
                            continue;
                        };
                        q = shared
                            .ready
                            .wait_timeout(q, left)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                })?;
        }
        Ok(pool)
    }

    /// Admit an untrusted login (no device token of its account) before it does any store
    /// work: at most as many are under way at once as the pool can take (its queue and one
    /// per worker); past that, 429 at once. A flood then cannot queue hundreds of logins
    /// for the store's connections, ahead of the device-token logins that need them too —
    /// on PostgreSQL and DynamoDB the store, not the hashing, is what fills first.
    pub fn admit(&self) -> Result<Admission, ApiError> {
        use std::sync::atomic::Ordering;
        if self.admitted.fetch_add(1, Ordering::AcqRel) >= self.admit_max {
            self.admitted.fetch_sub(1, Ordering::AcqRel);
            crate::metrics::METRICS.hash_rejected.inc();
            return Err(ApiError::Busy);
        }
        Ok(Admission(Arc::clone(&self.admitted)))
    }

    /// Whether the untrusted queue is full now: a login without a device token would be
    /// shed. Checked before any store work, so that a flood beyond the pool's capacity
    /// costs no store round trip; [`run_in`](Self::run_in) still enforces the bound.
    pub fn untrusted_full(&self) -> bool {
        self.shared.lock().jobs.len() >= self.shared.max_pending
    }

    /// Hashes waiting for a worker.
    pub fn queued(&self) -> usize {
        let q = self.shared.lock();
        q.jobs.len() + q.trusted.len()
    }

    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&PasswordHasher, &mut Workspace) -> T + Send + 'static,
    {
        self.run_in(Lane::Untrusted, f).await
    }

    /// [`run`](Self::run) in a lane: a `Trusted` job (a login with a valid device token)
    /// waits only for trusted jobs and the hashes under way — at most one hash per worker
    /// — whatever the untrusted queue holds; each lane sheds its own overflow with 429.
    /// Inside the trusted lane users are served in turn, each with at most
    /// [`TRUSTED_PER_USER`] jobs waiting, and at most [`TRUSTED_PER_ADDRESS`] per address;
    /// after [`TRUSTED_RUN`] trusted jobs in a row, a waiting untrusted one is taken.
    pub async fn run_in<T, F>(&self, lane: Lane<'_>, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&PasswordHasher, &mut Workspace) -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |h, ws| {
            let _ = tx.send(f(h, ws));
        });
        {
            let mut q = self.shared.lock();
            let max = self.shared.max_pending;
            let full = match lane {
                Lane::Trusted { user, address } => {
                    q.trusted.len() >= max || !q.trusted.has_room(user, address)
                }
                Lane::Untrusted => q.jobs.len() >= max,
            };
            if full {
                crate::metrics::METRICS.hash_rejected.inc();
                return Err(ApiError::Busy);
            }
            match lane {
                Lane::Trusted { user, address } => q.trusted.push(user, address, job),
                Lane::Untrusted => q.jobs.push_back(job),
            }
        }
        self.shared.ready.notify_one();
        rx.await
            .map_err(|_| ApiError::internal("a hashing job was dropped"))
    }
}

/// Which queue of the hashing pool a job waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane<'a> {
    /// A login with a valid device token of `user` (the account's id), from `address`
    /// (its address group, or any fixed text when unknown).
    Trusted { user: &'a str, address: &'a str },
    /// Everything else: sign-ups, logins without a device token, password changes.
    Untrusted,
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

/// Login throttling settings.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Failures allowed per (account, client address) pair before delays start.
    pub user_free_failures: u32,
    /// Failures evaluated per account from all addresses together within
    /// `ceiling_window`; past it every attempt waits until the window after the last.
    pub user_ceiling: u32,
    pub ceiling_window: Duration,
    /// Failures allowed per client address before delays start.
    pub ip_free_failures: u32,
    /// Sign-up attempts (successful or not) allowed per client address before delays.
    pub signup_free_attempts: u32,
    /// The first delay; each further failure doubles it.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// Client addresses (e.g. an office, CI) that skip the per-address limits — of
    /// logins, sign-ups and client secrets — but never an account's pair or ceiling.
    pub allowlist: Vec<ipnet::IpNet>,
    /// A key with no failure for this long starts afresh. It outlives `max_delay` by far
    /// ([`RateLimitConfig::reset_for`]): a counter that went stale as its longest delay
    /// ended would give a guesser `free` attempts again after every delay.
    pub reset_after: Duration,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            user_free_failures: 5,
            user_ceiling: 100,
            ceiling_window: Duration::from_secs(60 * 60),
            ip_free_failures: 20,
            signup_free_attempts: 20,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
            reset_after: Duration::from_secs(60 * 60),
            allowlist: Vec::new(),
        }
    }
}

impl RateLimitConfig {
    /// Parse an allowlist: addresses and CIDR ranges (`203.0.113.7`, `10.0.0.0/8`,
    /// `2001:db8::/48`), separated by commas or spaces. A range with host bits set
    /// (`10.0.0.1/8`) is refused: it is likely a mistake.
    pub fn parse_allowlist(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
        list.split([',', ' '])
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| {
                let net = match e.parse::<ipnet::IpNet>() {
                    Ok(n) => n,
                    Err(_) => e
                        .parse::<IpAddr>()
                        .map(ipnet::IpNet::from)
                        .map_err(|_| format!("{e:?} is neither an address nor a CIDR range"))?,
                };
                if net.trunc() != net {
                    return Err(format!(
                        "{e:?} has bits set past its prefix; did you mean {}?",
                        net.trunc()
                    ));
                }
                Ok(net)
            })
            .collect()
    }

    /// The reset window for a longest delay of `max_delay`: four times it, at least an hour
    /// and at most [`jotgate_store::THROTTLE_MAX_WINDOW_MS`]. With the defaults (15 min),
    /// guessing from one address gets 5 answers, then ~10 growing delays, then one guess
    /// every 15 minutes for as long as it goes on.
    pub fn reset_for(max_delay: Duration) -> Duration {
        let most = Duration::from_millis(jotgate_store::THROTTLE_MAX_WINDOW_MS as u64);
        max_delay
            .saturating_mul(4)
            .max(Duration::from_secs(60 * 60))
            .min(most)
    }
}

/// Counts failed logins per key in the store, so every instance — every Lambda container,
/// every server on one database — sees the same counts:
///
/// - `pair:<digest of account>#<address group>`: growing delays after `user_free_failures`,
///   so guessing from one address stops soon, and locks out nobody elsewhere;
/// - `ceil:<digest of account>`: at most `user_ceiling` per `ceiling_window` from all
///   addresses together, which bounds a botnet without a lockout a few guesses can cause;
/// - `ip:<address, IPv6 by /64>`: growing delays after `ip_free_failures`;
/// - `user:` (a signed-in user's current password), `client:` (a client secret) and
///   `signup:<address>` (every sign-up attempt).
///
/// Account keys are the names *as typed*, existing or not, so a lockout reveals nothing
/// about existence. The delay after a failure is computed from the count and the instant
/// of the latest failure; nothing else is stored.
pub struct LoginLimiter {
    cfg: RateLimitConfig,
    store: Arc<dyn Store>,
}

/// The member of a pair counter for an attempt with no known client address.
pub const NO_ADDRESS: &str = "-";

/// A block on an account ([`LoginLimiter::blocks`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The address group held back (an IPv4 address, an IPv6 /64, or [`NO_ADDRESS`]);
    /// `None`: every address, the account's ceiling being reached.
    pub address: Option<String>,
    /// Wrong passwords counted.
    pub failures: u32,
    /// Until when (ms since the epoch), unless more attempts come.
    pub until_ms: i64,
}

/// What [`LoginLimiter::begin`] saw besides letting the attempt through.
#[derive(Debug, Default, Clone, Copy)]
pub struct Begun {
    /// This attempt took an account's last evaluation of the ceiling's window: the owner
    /// is told once per window (an audit event, a log line).
    pub ceiling_reached: bool,
}

/// The throttling group of a client address: itself for IPv4 (an IPv4-mapped IPv6 address
/// is its IPv4), its /64 for IPv6 (one host usually holds a whole /64).
pub fn address_group(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
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

    fn window_ms(&self, key: &str) -> i64 {
        if key.starts_with("ceil:") {
            self.cfg.ceiling_window.as_millis() as i64
        } else if key.starts_with("dev:") {
            jotgate_store::THROTTLE_MAX_WINDOW_MS
        } else {
            self.cfg.reset_after.as_millis() as i64
        }
    }

    /// The per-account ceiling's key of `name` (`id:<account id>` or `name:<bucket>`):
    /// every check of an account's password counts against it.
    pub fn ceiling_key(name: &str) -> String {
        format!("ceil:{}", jotgate_core::sha256_b64url(name.as_bytes()))
    }

    /// Whether `ip` is on the allowlist (an IPv4-mapped IPv6 address as its IPv4).
    pub fn allowlisted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.cfg.allowlist.iter().any(|n| n.contains(&ip))
    }

    /// The key of an address's own limit (`ip:` for logins and client secrets, `signup:`),
    /// none for an allowlisted address ([`crate::routes::ClientIp`] says) or an unknown one.
    pub fn address_key(
        &self,
        kind: &str,
        ip: Option<IpAddr>,
        listed: crate::routes::Allowlisted,
    ) -> Option<String> {
        ip.filter(|_| !listed.0)
            .map(|i| format!("{kind}:{}", address_group(i)))
    }

    /// [`login_keys`](Self::login_keys) for a login attempt: a name that names no account
    /// is counted under a decoy account of its bucket too (`~<digest>`, never an id), so a
    /// known and an unknown name cost the same store writes and answer in the same time.
    /// Without the address's own key when the address is allowlisted: the pair and the
    /// ceiling always count.
    pub fn attempt_keys(
        &self,
        account: Option<&str>,
        bucket: &str,
        ip: Option<IpAddr>,
        listed: crate::routes::Allowlisted,
    ) -> Vec<String> {
        let decoy;
        let account = match account {
            Some(id) => id,
            None => {
                decoy = format!("~{}", jotgate_core::sha256_b64url(bucket.as_bytes()));
                &decoy
            }
        };
        let mut keys = Self::login_keys(Some(account), bucket, ip);
        if listed.0 {
            keys.retain(|k| !k.starts_with("ip:"));
        }
        keys
    }

    /// The group of an account's pair counters (`pair:<digest>`, each member an address):
    /// listed together, an operator sees which addresses an account is blocked from.
    pub fn pair_group(name: &str) -> String {
        format!("pair:{}", jotgate_core::sha256_b64url(name.as_bytes()))
    }

    /// The names an account is counted under: its id, and the buckets of its username and
    /// its email address (a name typed at login counts under its bucket, known or not).
    pub fn account_names(user: &jotgate_store::User) -> Vec<String> {
        let mut names = vec![format!("id:{}", user.id)];
        names.push(format!(
            "name:{}",
            jotgate_core::username::bucket_key(&user.username)
        ));
        names.extend(
            user.email
                .as_deref()
                .map(|e| format!("name:{}", jotgate_core::username::bucket_key(e))),
        );
        names
    }

    /// The blocks on an account now: each address its pair limit holds back (with until
    /// when), and every address at once when its ceiling is reached.
    pub async fn blocks(&self, user: &jotgate_store::User) -> jotgate_store::Result<Vec<Block>> {
        let now = now_ms();
        let names = Self::account_names(user);
        let mut found: Vec<LoginFailures> = Vec::new();
        for n in &names {
            let group = Self::pair_group(n);
            found.extend(
                self.store
                    .login_failures_in(&group, now, self.window_ms(&group))
                    .await?,
            );
        }
        let ceilings: Vec<String> = names.iter().map(|n| Self::ceiling_key(n)).collect();
        found.extend(
            self.store
                .login_failures(&ceilings, now, self.cfg.ceiling_window.as_millis() as i64)
                .await?,
        );
        let mut blocks: Vec<Block> = Vec::new();
        for f in &found {
            let Some(until_ms) = self.blocked_until(f).filter(|u| *u > now) else {
                continue;
            };
            let address = f
                .key
                .split_once(THROTTLE_GROUP_SEP)
                .map(|(_, member)| member.to_string());
            // One entry per address: an account counted under its id and a name alike.
            match blocks.iter_mut().find(|b| b.address == address) {
                Some(b) => {
                    b.until_ms = b.until_ms.max(until_ms);
                    b.failures = b.failures.max(f.count);
                }
                None => blocks.push(Block {
                    address,
                    failures: f.count,
                    until_ms,
                }),
            }
        }
        blocks.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(blocks)
    }

    /// Lift every block on an account (`jotgate users unblock`, `DELETE
    /// /api/v1/user-blocks/{id}`): its pair counters from every address and its ceiling
    /// are forgotten, blocking or not yet. Address limits stay (they are no account's).
    /// Returns the blocks that were in force.
    pub async fn unblock(&self, user: &jotgate_store::User) -> jotgate_store::Result<Vec<Block>> {
        let lifted = self.blocks(user).await?;
        for n in Self::account_names(user) {
            self.store
                .clear_login_failures_in(&Self::pair_group(&n))
                .await?;
            self.store
                .clear_login_failures(&Self::ceiling_key(&n))
                .await?;
        }
        Ok(lifted)
    }

    /// The keys of a login attempt: per (account, address) pair and per account, for the
    /// account's id when the name resolved and for the typed name's bucket always, and the
    /// address's.
    pub fn login_keys(account: Option<&str>, bucket: &str, ip: Option<IpAddr>) -> Vec<String> {
        let group = ip.map(address_group);
        let names: Vec<String> = account
            .map(|id| format!("id:{id}"))
            .into_iter()
            .chain([format!("name:{bucket}")])
            .collect();
        let mut keys = Vec::with_capacity(2 * names.len() + 1);
        for n in &names {
            let at = group.as_deref().unwrap_or(NO_ADDRESS);
            keys.push(format!("{}{}{at}", Self::pair_group(n), THROTTLE_GROUP_SEP));
        }
        for n in &names {
            keys.push(Self::ceiling_key(n));
        }
        keys.extend(group.map(|g| format!("ip:{g}")));
        keys
    }

    /// Until when (ms since the epoch) `f` blocks further attempts, if it does.
    fn blocked_until(&self, f: &LoginFailures) -> Option<i64> {
        if f.key.starts_with("ceil:") {
            return (f.count >= self.cfg.user_ceiling.max(1))
                .then(|| f.last_ms.saturating_add(self.window_ms(&f.key)));
        }
        // A device token that saw `user_free_failures` wrong passwords is spent: for a day
        // after the last, it counts as none (the owner's next login gives a new one).
        if f.key.starts_with("dev:") {
            return (f.count >= self.cfg.user_free_failures.max(1))
                .then(|| f.last_ms.saturating_add(self.window_ms(&f.key)));
        }
        let free = if f.key.starts_with("ip:") {
            self.cfg.ip_free_failures
        } else if f.key.starts_with("signup:") {
            self.cfg.signup_free_attempts
        } else {
            self.cfg.user_free_failures
        };
        // `free` failures are answered; the attempt after them waits. (A count of 0 is a
        // row whose attempts were all taken back.)
        if f.count == 0 || f.count < free {
            return None;
        }
        let exp = (f.count - free).min(30);
        let delay = self
            .cfg
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.cfg.max_delay);
        Some(f.last_ms.saturating_add(delay.as_millis() as i64))
    }

    fn rate_limited(wait_ms: i64) -> ApiError {
        ApiError::RateLimited {
            retry_after_secs: (wait_ms.max(1) as u64).div_ceil(1000),
        }
    }

    /// Count an attempt against every key *before* it is evaluated, atomically in the
    /// store, so that concurrent attempts (on this instance or any other) cannot all slip
    /// under the limit. `Err(RateLimited)` with the seconds to wait when a key is blocked,
    /// or when concurrent attempts took the last evaluation this key had left (their
    /// counts are then taken back). On `Ok`, the attempt stays counted as a failure until
    /// [`succeeded`](Self::succeeded) or [`release`](Self::release).
    pub async fn begin(&self, keys: &[String]) -> Result<Begun, ApiError> {
        let now = now_ms();
        // Read by window: the per-account ceiling counts over an hour, a device token over a
        // day, the rest over `reset_after`.
        let mut groups: Vec<Vec<String>> = Vec::new();
        for k in keys {
            match groups
                .iter_mut()
                .find(|g| self.window_ms(&g[0]) == self.window_ms(k))
            {
                Some(g) => g.push(k.clone()),
                None => groups.push(vec![k.clone()]),
            }
        }
        let mut live = Vec::new();
        for group in groups {
            if let Some(first) = group.first() {
                let w = self.window_ms(first);
                live.extend(self.store.login_failures(&group, now, w).await?);
            }
        }
        let wait_ms = live
            .iter()
            .filter_map(|f| self.blocked_until(f))
            .map(|until| until - now)
            .max()
            .unwrap_or(0);
        if wait_ms > 0 {
            return Err(Self::rate_limited(wait_ms));
        }
        let mut reserved: Vec<&String> = Vec::with_capacity(keys.len());
        let mut begun = Begun::default();
        for key in keys {
            let counted = match self
                .store
                .add_login_failure(key, now, self.window_ms(key))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    self.release_keys(&reserved).await;
                    return Err(e.into());
                }
            };
            reserved.push(key);
            // This attempt is the count-th. It may be evaluated when the key had free
            // attempts left before it, or when it is the one attempt the check above
            // allowed (the count it saw, plus one). Anything else lost a race.
            let seen = live.iter().find(|f| &f.key == key).map_or(0, |f| f.count);
            let before = LoginFailures {
                key: key.clone(),
                count: counted.count.saturating_sub(1),
                last_ms: now,
            };
            if counted.count != seen + 1
                && let Some(until) = self.blocked_until(&before)
            {
                self.release_keys(&reserved).await;
                return Err(Self::rate_limited(until - now));
            }
            if key.starts_with("ceil:") && counted.count == self.cfg.user_ceiling.max(1) {
                begun.ceiling_reached = true;
            }
        }
        Ok(begun)
    }

    async fn release_keys(&self, keys: &[&String]) {
        for key in keys {
            if let Err(e) = self.store.release_login_failure(key).await {
                tracing::warn!(error = %e, "could not take back a counted login attempt");
            }
        }
    }

    /// Take back an attempt counted by [`begin`](Self::begin) that was never evaluated
    /// (the hashing pool was full, the store failed).
    pub async fn release(&self, keys: &[String]) {
        let keys: Vec<&String> = keys.iter().collect();
        self.release_keys(&keys).await;
    }

    /// A successful login clears the account's counts on its address (and every other
    /// key's but the address's and the per-account ceiling's) and takes back its attempt
    /// from those two: a right password does not reset what guesses elsewhere have used.
    pub async fn succeeded(&self, keys: &[String]) {
        let (addresses, accounts): (Vec<&String>, Vec<&String>) = keys
            .iter()
            .partition(|k| k.starts_with("ip:") || k.starts_with("ceil:"));
        for k in accounts {
            if let Err(e) = self.store.clear_login_failures(k).await {
                tracing::warn!(error = %e, "could not clear a login failure count");
            }
        }
        self.release_keys(&addresses).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every worker keeps its argon2 memory while jobs come and releases it once idle;
    /// the queue bound holds; a job after the release hashes as before.
    #[tokio::test]
    async fn hashing_workers_release_their_memory_when_idle() {
        let params = jotgate_core::PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let hasher = PasswordHasher::new(params, None).unwrap();
        let idle = Duration::from_millis(300);
        let pool = Arc::new(HashPool::with_idle(hasher, 2, 4, idle).unwrap());
        // Both workers hash at once (each job waits for the other to have started).
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let jobs: Vec<_> = (0..2)
            .map(|_| {
                let (pool, barrier) = (Arc::clone(&pool), Arc::clone(&barrier));
                tokio::spawn(async move {
                    pool.run(move |h, ws| {
                        barrier.wait();
                        h.hash_in("correct horse battery", ws).unwrap();
                        ws.is_allocated()
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for j in jobs {
            assert!(j.await.unwrap(), "the workspace is held after a hash");
        }
        tokio::time::sleep(idle * 4).await;
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let jobs: Vec<_> = (0..2)
            .map(|_| {
                let (pool, barrier) = (Arc::clone(&pool), Arc::clone(&barrier));
                tokio::spawn(async move {
                    pool.run(move |h, ws| {
                        barrier.wait();
                        let held = ws.is_allocated();
                        let phc = h.hash_in("correct horse battery", ws).unwrap();
                        (held, h.verify_in("correct horse battery", &phc, ws))
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        for j in jobs {
            assert_eq!(
                j.await.unwrap(),
                (false, true),
                "released when idle, then works"
            );
        }
    }

    /// A pool of one worker, busy with a job until `hold` is sent (or dropped), so that
    /// jobs queue in the meantime; `first` is that job.
    async fn held_pool(
        pending: usize,
    ) -> (
        Arc<HashPool>,
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), ApiError>>,
    ) {
        let hasher = PasswordHasher::new(jotgate_core::PasswordParams::default(), None).unwrap();
        let pool = Arc::new(HashPool::new(hasher, 1, pending).unwrap());
        let (hold, held) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let p = Arc::clone(&pool);
        let first = tokio::spawn(async move {
            p.run(move |_, _| {
                started_tx.send(()).unwrap();
                let _ = held.recv();
            })
            .await
        });
        tokio::task::spawn_blocking(move || started.recv().unwrap())
            .await
            .unwrap();
        (pool, hold, first)
    }

    /// With the untrusted queue full (a flood), a device-token login is still taken, and
    /// hashed before every untrusted job that was waiting.
    #[tokio::test]
    async fn trusted_logins_pass_a_full_untrusted_queue() {
        let (pool, hold, first) = held_pool(2).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for (lane, name) in [
            (Lane::Untrusted, "flood-1"),
            (Lane::Untrusted, "flood-2"),
            (
                Lane::Trusted {
                    user: "u1",
                    address: "a",
                },
                "owner",
            ),
        ] {
            let (p, o) = (Arc::clone(&pool), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                p.run_in(lane, move |_, _| o.lock().unwrap().push(name))
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The flood's lane is full; the owner's is not.
        assert!(matches!(pool.run(|_, _| ()).await, Err(ApiError::Busy)));
        hold.send(()).unwrap();
        first.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["owner", "flood-1", "flood-2"]);
    }

    /// Inside the trusted lane users take turns, and one user holds at most
    /// TRUSTED_PER_USER places: an account flooding the lane with its own device token
    /// (its holder knows the password) delays the others by one hash a round, no more.
    #[tokio::test]
    async fn the_trusted_lane_serves_users_in_turn() {
        let (pool, hold, first) = held_pool(64).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        let jobs = (1..=TRUSTED_PER_USER)
            .map(|i| ("noisy", format!("noisy-{i}")))
            .chain([("june", "june".to_string()), ("kit", "kit".to_string())]);
        for (user, name) in jobs {
            let (p, o) = (Arc::clone(&pool), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                p.run_in(
                    Lane::Trusted {
                        user,
                        address: user,
                    },
                    move |_, _| o.lock().unwrap().push(name),
                )
                .await
            }));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let over = pool
            .run_in(
                Lane::Trusted {
                    user: "noisy",
                    address: "noisy",
                },
                |_, _| (),
            )
            .await;
        assert!(
            matches!(over, Err(ApiError::Busy)),
            "noisy's places are taken"
        );
        hold.send(()).unwrap();
        first.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            ["noisy-1", "june", "kit", "noisy-2", "noisy-3", "noisy-4"]
        );
        assert_eq!(pool.queued(), 0);
    }

    /// A stream of device-token logins (whoever sends them) cannot starve the untrusted
    /// queue: after TRUSTED_RUN trusted jobs in a row, a waiting untrusted one is taken.
    /// And accounts from one address hold at most TRUSTED_PER_ADDRESS places together.
    #[tokio::test]
    async fn trusted_logins_leave_a_share_to_the_rest() {
        let (pool, hold, first) = held_pool(64).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let users = ["t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8"];
        let jobs = [(None, "f1"), (None, "f2")]
            .into_iter()
            .chain(users.iter().map(|u| (Some(*u), *u)));
        let mut waiting = Vec::new();
        for (user, name) in jobs {
            let (p, o) = (Arc::clone(&pool), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                let lane = match user {
                    // Eight accounts from one address fill its places.
                    Some(user) => Lane::Trusted {
                        user,
                        address: "198.51.100.1",
                    },
                    None => Lane::Untrusted,
                };
                p.run_in(lane, move |_, _| o.lock().unwrap().push(name))
                    .await
            }));
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let ninth = Lane::Trusted {
            user: "t9",
            address: "198.51.100.1",
        };
        assert!(matches!(
            pool.run_in(ninth, |_, _| ()).await,
            Err(ApiError::Busy)
        ));
        let elsewhere = Lane::Trusted {
            user: "t9",
            address: "203.0.113.9",
        };
        let p = Arc::clone(&pool);
        let o = Arc::clone(&order);
        waiting.push(tokio::spawn(async move {
            p.run_in(elsewhere, move |_, _| o.lock().unwrap().push("t9"))
                .await
        }));
        tokio::time::sleep(Duration::from_millis(30)).await;
        hold.send(()).unwrap();
        first.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
        assert_eq!(
            *order.lock().unwrap(),
            [
                "t1", "t2", "t3", "f1", "t4", "t5", "t6", "f2", "t7", "t8", "t9"
            ]
        );
    }

    /// No more untrusted logins are admitted at once than the pool can take (its queue and
    /// one per worker); a place comes back when its login ends.
    #[test]
    fn untrusted_logins_are_admitted_up_to_what_the_pool_takes() {
        let params = jotgate_core::PasswordParams {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        };
        let pool = HashPool::new(PasswordHasher::new(params, None).unwrap(), 2, 3).unwrap();
        let held: Vec<Admission> = (0..5).map(|_| pool.admit().unwrap()).collect();
        assert!(matches!(pool.admit(), Err(ApiError::Busy)));
        drop(held);
        let again: Vec<Admission> = (0..5).map(|_| pool.admit().unwrap()).collect();
        assert_eq!(again.len(), 5);
    }

    #[tokio::test]
    async fn the_hashing_queue_is_bounded() {
        let (pool, hold, first) = held_pool(2).await;
        // The worker is busy: two jobs may wait, the third is refused at once.
        let waiting: Vec<_> = (0..2)
            .map(|_| {
                let p = Arc::clone(&pool);
                tokio::spawn(async move { p.run(|_, _| ()).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(matches!(pool.run(|_, _| ()).await, Err(ApiError::Busy)));
        hold.send(()).unwrap();
        first.await.unwrap().unwrap();
        for w in waiting {
            w.await.unwrap().unwrap();
        }
    }

    fn wait(r: Result<Begun, ApiError>) -> u64 {
        match r {
            Ok(_) => 0,
            Err(ApiError::RateLimited { retry_after_secs }) => retry_after_secs,
            Err(e) => panic!("{e:?}"),
        }
    }

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
        // Two failures are evaluated; the third attempt waits.
        for _ in 0..2 {
            assert_eq!(wait(l.begin(&keys).await), 0);
        }
        let first = wait(l.begin(&keys).await);
        assert!((3..=4).contains(&first), "{first}");
        // Another instance on the same store sees the same count.
        let other = LoginLimiter::new(cfg, store);
        assert!(wait(other.begin(&keys).await) > 0);
        other.succeeded(&keys).await;
        assert_eq!(wait(l.begin(&keys).await), 0);
    }

    /// Guesses from many addresses lock nobody out at her own address: they stop at the
    /// per-account ceiling, which then holds for everyone until its window passes, and
    /// reaching it is reported once.
    #[tokio::test]
    async fn guesses_from_elsewhere_stop_at_the_ceiling_not_at_the_owners_address() {
        let store: Arc<dyn Store> =
            Arc::new(jotgate_store::sqlite::SqliteStore::in_memory().unwrap());
        let cfg = RateLimitConfig {
            user_free_failures: 3,
            user_ceiling: 10,
            ip_free_failures: 1000,
            ..RateLimitConfig::default()
        };
        let l = LoginLimiter::new(cfg, store);
        let at = |i: u8| Some(IpAddr::from([203, 0, 113, i]));
        let keys = |i: u8| LoginLimiter::login_keys(Some("u1"), "alice", at(i));
        // Three wrong passwords from one address: its fourth attempt waits.
        for _ in 0..3 {
            assert_eq!(wait(l.begin(&keys(1)).await), 0);
        }
        assert!(wait(l.begin(&keys(1)).await) > 0);
        // The owner at her own address is not held up, and her success does not reset
        // what the guesses used.
        let mine = keys(200);
        assert_eq!(wait(l.begin(&mine).await), 0);
        l.succeeded(&mine).await;
        // Seven more guesses, each from a new address, reach the ceiling of ten; the
        // one that reaches it says so, once.
        let mut reached = 0;
        for i in 2..9 {
            let b = l.begin(&keys(i)).await.unwrap();
            reached += usize::from(b.ceiling_reached);
        }
        assert_eq!(reached, 1);
        // Past it, every address waits, about the ceiling's window (an hour).
        let w = wait(l.begin(&keys(9)).await);
        assert!((3590..=3600).contains(&w), "{w}");
        assert!(wait(l.begin(&mine).await) > 0);
        // Another account is untouched.
        let bob = LoginLimiter::login_keys(Some("u2"), "bob", at(9));
        assert_eq!(wait(l.begin(&bob).await), 0);
        // A device token's own counter: three wrong passwords spend it for a day.
        let dev = ["dev:d1".to_string()];
        for _ in 0..3 {
            assert_eq!(wait(l.begin(&dev).await), 0);
        }
        let w = wait(l.begin(&dev).await);
        assert!((86_390..=86_400).contains(&w), "{w}");
    }

    /// A pair's count outlives its longest delay: once the delay has passed, one guess is
    /// answered and the next waits the longest delay again — not `free` guesses afresh.
    #[tokio::test]
    async fn a_count_outlives_the_longest_delay() {
        let store: Arc<dyn Store> =
            Arc::new(jotgate_store::sqlite::SqliteStore::in_memory().unwrap());
        let max_delay = RateLimitConfig::default().max_delay;
        let cfg = RateLimitConfig {
            reset_after: RateLimitConfig::reset_for(max_delay),
            ..RateLimitConfig::default()
        };
        let window = cfg.reset_after.as_millis() as i64;
        let l = LoginLimiter::new(cfg, Arc::clone(&store));
        let keys = LoginLimiter::login_keys(Some("u1"), "alice", "203.0.113.1".parse().ok());
        // Sixteen wrong passwords (the delay long since at its longest), the last one just
        // over the longest delay ago.
        let then = now_ms() - max_delay.as_millis() as i64 - 1000;
        for _ in 0..16 {
            store
                .add_login_failure(&keys[0], then, window)
                .await
                .unwrap();
        }
        assert_eq!(wait(l.begin(&keys).await), 0, "the delay has passed");
        let w = wait(l.begin(&keys).await);
        assert!(
            (890..=900).contains(&w),
            "the next guess waits the longest delay: {w}"
        );
        assert_eq!(RateLimitConfig::reset_for(max_delay).as_secs(), 3600);
        assert_eq!(
            RateLimitConfig::reset_for(Duration::from_secs(1)).as_secs(),
            3600
        );
        assert_eq!(
            RateLimitConfig::reset_for(Duration::from_secs(6 * 3600)).as_secs(),
            86_400
        );
        assert_eq!(
            RateLimitConfig::reset_for(Duration::from_secs(7 * 3600)).as_secs(),
            86_400
        );
    }

    /// An operator sees the addresses an account is blocked from, and the ceiling, and
    /// lifts them all at once; other accounts and the addresses' own limits stay.
    #[tokio::test]
    async fn blocks_are_listed_per_address_and_lifted() {
        let store: Arc<dyn Store> =
            Arc::new(jotgate_store::sqlite::SqliteStore::in_memory().unwrap());
        let cfg = RateLimitConfig {
            user_free_failures: 2,
            user_ceiling: 6,
            ip_free_failures: 4,
            ..RateLimitConfig::default()
        };
        let l = LoginLimiter::new(cfg, store);
        let user = jotgate_store::User {
            id: "u1".into(),
            username: "Alice".into(),
            roles: vec![],
            created_at: 0,
            email: Some("alice@example.com".into()),
            email_verified: false,
            blocked: false,
            app_metadata: Default::default(),
            last_login: None,
        };
        let at = |s: &str| s.parse::<IpAddr>().ok();
        // Typed as her username (another case), as her address, and from an unknown one.
        let by_name = |ip| {
            LoginLimiter::login_keys(Some("u1"), &jotgate_core::username::bucket_key("ALICE"), ip)
        };
        let by_mail = |ip| {
            LoginLimiter::login_keys(
                Some("u1"),
                &jotgate_core::username::bucket_key("alice@example.com"),
                ip,
            )
        };
        assert!(l.blocks(&user).await.unwrap().is_empty());
        l.begin(&by_name(at("203.0.113.1"))).await.unwrap();
        l.begin(&by_mail(at("203.0.113.1"))).await.unwrap();
        l.begin(&by_name(at("2001:db8::1"))).await.unwrap();
        let blocks = l.blocks(&user).await.unwrap();
        assert_eq!(blocks.len(), 1, "{blocks:?}");
        assert_eq!(blocks[0].address.as_deref(), Some("203.0.113.1"));
        assert_eq!(blocks[0].failures, 2);
        // Three more from new addresses reach the ceiling: every address is held back.
        for i in 2..5 {
            l.begin(&by_name(at(&format!("198.51.100.{i}"))))
                .await
                .unwrap();
        }
        let blocks = l.blocks(&user).await.unwrap();
        assert_eq!(
            blocks
                .iter()
                .map(|b| b.address.as_deref())
                .collect::<Vec<_>>(),
            [None, Some("203.0.113.1")]
        );
        assert!(wait(l.begin(&by_name(at("192.0.2.9"))).await) > 0);
        // Another account's pair from the same address.
        let bob = LoginLimiter::login_keys(Some("u2"), "bob", at("203.0.113.1"));
        l.begin(&bob).await.unwrap();
        l.begin(&bob).await.unwrap();
        let lifted = l.unblock(&user).await.unwrap();
        assert_eq!(lifted.len(), 2);
        assert!(l.blocks(&user).await.unwrap().is_empty());
        assert_eq!(wait(l.begin(&by_name(at("192.0.2.9"))).await), 0);
        // Bob is still held back at that address — by his pair, and the address by its
        // own limit (four failures there, four free).
        assert!(wait(l.begin(&bob).await) > 0);
    }

    #[test]
    fn the_allowlist_takes_addresses_and_ranges_and_refuses_mistakes() {
        let ok =
            RateLimitConfig::parse_allowlist("203.0.113.7, 10.0.0.0/8 2001:db8::/48,").unwrap();
        assert_eq!(ok.len(), 3);
        for bad in ["10.0.0.1/8", "office", "10.0.0.0/33", "2001:db8::1/48"] {
            let e = RateLimitConfig::parse_allowlist(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        let store: Arc<dyn Store> =
            Arc::new(jotgate_store::sqlite::SqliteStore::in_memory().unwrap());
        let l = LoginLimiter::new(
            RateLimitConfig {
                allowlist: ok,
                ..RateLimitConfig::default()
            },
            store,
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(l.allowlisted(ip("10.200.1.1")));
        assert!(l.allowlisted(ip("::ffff:10.200.1.1")), "IPv4-mapped");
        assert!(l.allowlisted(ip("2001:db8:0:ffff::1")));
        assert!(!l.allowlisted(ip("203.0.113.8")));
        assert!(!l.allowlisted(ip("2001:db9::1")));
        use crate::routes::Allowlisted;
        let (on, off) = (Allowlisted(true), Allowlisted(false));
        let keys = l.attempt_keys(Some("u1"), "alice", Some(ip("10.1.1.1")), on);
        assert_eq!(keys.len(), 4, "pair and ceiling, no address key: {keys:?}");
        assert!(keys.iter().all(|k| !k.starts_with("ip:")));
        let all = l.attempt_keys(Some("u1"), "alice", Some(ip("192.0.2.1")), off);
        assert_eq!(all.len(), 5);
        // An unknown name counts as many keys as a known one (under a decoy account).
        let unknown = l.attempt_keys(None, "nobody", Some(ip("192.0.2.1")), off);
        assert_eq!(unknown.len(), 5, "{unknown:?}");
        let again = l.attempt_keys(None, "nobody", Some(ip("192.0.2.1")), off);
        assert_eq!(unknown, again);
        let other = l.attempt_keys(None, "nobodz", Some(ip("192.0.2.1")), off);
        assert_ne!(unknown, other);
        assert_eq!(l.address_key("signup", Some(ip("10.1.1.1")), on), None);
        assert_eq!(
            l.address_key("signup", Some(ip("192.0.2.1")), off)
                .as_deref(),
            Some("signup:192.0.2.1")
        );
    }

    #[test]
    fn addresses_group_by_ipv4_host_and_ipv6_slash_64() {
        let g = |s: &str| address_group(s.parse().unwrap());
        assert_eq!(g("198.51.100.7"), "198.51.100.7");
        assert_eq!(g("::ffff:198.51.100.7"), "198.51.100.7");
        assert_eq!(g("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(g("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::/64");
        assert_ne!(g("2001:db8:1:3::1"), g("2001:db8:1:2::1"));
        // The keys hold no raw name or address but the group's.
        let keys = LoginLimiter::login_keys(Some("u1"), "alice", "2001:db8::9".parse().ok());
        assert_eq!(keys.len(), 5);
        assert!(
            keys.iter()
                .all(|k| !k.contains("alice") && !k.contains("u1"))
        );
        assert_eq!(keys[4], "ip:2001:db8:0:0::/64");
    }

    #[tokio::test]
    async fn concurrent_attempts_cannot_all_slip_under_the_limit() {
        let store: Arc<dyn Store> =
            Arc::new(jotgate_store::sqlite::SqliteStore::in_memory().unwrap());
        let cfg = RateLimitConfig {
            user_free_failures: 5,
            ..RateLimitConfig::default()
        };
        let l = Arc::new(LoginLimiter::new(cfg, store));
        let mut tasks = Vec::new();
        for i in 0..60 {
            let l = Arc::clone(&l);
            tasks.push(tokio::spawn(async move {
                l.begin(&["user:eve".to_string(), format!("ip:{i}")])
                    .await
                    .is_ok()
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            admitted += usize::from(t.await.unwrap());
        }
        assert_eq!(admitted, 5, "five attempts, then the delay");
    }

    #[tokio::test]
    async fn a_success_clears_the_username_and_gives_back_the_address_attempt() {
        let store: Arc<dyn Store> =
            Arc::new(jotgate_store::sqlite::SqliteStore::in_memory().unwrap());
        let cfg = RateLimitConfig {
            user_free_failures: 2,
            ip_free_failures: 2,
            ..RateLimitConfig::default()
        };
        let l = LoginLimiter::new(cfg, Arc::clone(&store));
        let keys = ["user:amy".to_string(), "ip:1".to_string()];
        l.begin(&keys).await.unwrap();
        l.begin(&keys).await.unwrap();
        l.succeeded(&keys).await;
        let live = store.login_failures(&keys, now_ms(), 60_000).await.unwrap();
        let count = |k: &str| live.iter().find(|f| f.key == k).map_or(0, |f| f.count);
        assert_eq!((count("user:amy"), count("ip:1")), (0, 1));
        // Many successes from one address never lock it out.
        for _ in 0..10 {
            l.begin(&keys).await.unwrap();
            l.succeeded(&keys).await;
        }
    }
}

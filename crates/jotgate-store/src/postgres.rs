//! The PostgreSQL backend, for many jotgate instances on one database. Every method is
//! one statement or one transaction; rotation locks the presented token's row
//! (`SELECT … FOR UPDATE`), so of concurrent presentations on any number of instances
//! exactly one rotates. Revocations are written one at a time (a table lock around the
//! insert) so that feed order is commit order and a reader's cursor never skips an entry.

use crate::prelude::*;
use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::feedpos::{FEED_SETTLE, feed_position, micros_now, settled_horizon};
use crate::{
    ClientRecord, FamilyRef, LoginFailures, NewRefresh, NewUser, Result, Revocation, Rotate,
    RotateOutcome, Store, StoreError, StoredKey, User, UserPatch, UserRecord,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS users (
    id            TEXT PRIMARY KEY,
    username_key  TEXT NOT NULL UNIQUE,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    roles         TEXT[] NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_der BYTEA NOT NULL,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT,
    inserted    BIGSERIAL
);
CREATE TABLE IF NOT EXISTS refresh_families (
    family_id  TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX IF NOT EXISTS refresh_families_user ON refresh_families(user_id);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash     TEXT PRIMARY KEY,
    family_id      TEXT NOT NULL REFERENCES refresh_families(family_id),
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    used_at        BIGINT,
    rotation_nonce TEXT
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens(family_id);
CREATE TABLE IF NOT EXISTS revoked_tokens (
    seq        BIGSERIAL PRIMARY KEY,
    token_id   TEXT NOT NULL UNIQUE,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_expiry ON revoked_tokens(expires_at);
-- A writer of an older version inserts without a position: give it a time-ordered one, or
-- followers (whose cursors are times) would never read it.
ALTER TABLE revoked_tokens ALTER COLUMN seq
    SET DEFAULT (floor(extract(epoch FROM clock_timestamp()) * 1000000)::bigint * 1000);
CREATE TABLE IF NOT EXISTS login_failures (
    key      TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_ms  BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_last ON login_failures(last_ms);
-- Throttle groups (`group#member`) are listed by a byte-wise range, which the primary
-- key's index serves only in a C-collated database: this one serves it in any (checked
-- first, since CREATE INDEX needs the table's owner even when the index exists).
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_indexes WHERE schemaname = current_schema()
                 AND indexname = 'login_failures_key_c') THEN
    CREATE INDEX login_failures_key_c ON login_failures (key COLLATE \"C\");
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Columns added after the first release: only when missing, since ALTER TABLE needs the
-- table's owner, and a runtime role that may only read and write must still start.
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                 AND table_name = 'users' AND column_name = 'last_login') THEN
    ALTER TABLE users ADD COLUMN IF NOT EXISTS email TEXT;
    ALTER TABLE users ADD COLUMN IF NOT EXISTS email_verified BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE users ADD COLUMN IF NOT EXISTS blocked BOOLEAN NOT NULL DEFAULT false;
    ALTER TABLE users ADD COLUMN IF NOT EXISTS app_metadata TEXT NOT NULL DEFAULT '{}';
    ALTER TABLE users ADD COLUMN IF NOT EXISTS last_login BIGINT;
    CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users(email);
  END IF;
END $$;
DO $$ BEGIN
  IF NOT EXISTS (SELECT 1 FROM information_schema.columns WHERE table_schema = current_schema()
                 AND table_name = 'users' AND column_name = 'devices_nbf') THEN
    ALTER TABLE users ADD COLUMN IF NOT EXISTS devices_nbf BIGINT NOT NULL DEFAULT 0;
  END IF;
END $$;
CREATE TABLE IF NOT EXISTS roles (
    name       TEXT PRIMARY KEY,
    scopes     TEXT[] NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq        BIGSERIAL PRIMARY KEY,
    at_ms      BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    user_id    TEXT,
    actor      TEXT,
    ip         TEXT,
    detail     TEXT NOT NULL,
    keep_until BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at_ms);
CREATE INDEX IF NOT EXISTS audit_log_user ON audit_log(user_id, at_ms);
CREATE INDEX IF NOT EXISTS audit_log_keep ON audit_log(keep_until);
CREATE TABLE IF NOT EXISTS clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    scopes        TEXT[] NOT NULL,
    audiences     TEXT[] NOT NULL,
    created_at    BIGINT NOT NULL,
    secret_set_at BIGINT NOT NULL
);
";

/// PostgreSQL-backed [`Store`].
pub struct PostgresStore {
    pool: Pool,
    describe: String,
    /// Counter writes so far: every [`SWEEP_EVERY`]th also deletes long-stale counters.
    throttle_writes: std::sync::atomic::AtomicU32,
}

/// How often a throttle counter write also sweeps stale counters. Reads ignore stale
/// counters and a write restarts one, so sweeping is only housekeeping: one round trip in
/// 32 instead of one more per write (a device-token login makes two such writes).
const SWEEP_EVERY: u32 = 32;

/// A backend failure with its causes: tokio-postgres' own text for a server error is just
/// "db error", the server's message is its source.
fn backend(e: impl std::error::Error + 'static) -> StoreError {
    // A server error's SQLSTATE and message only: its DETAIL may quote a row.
    let db = (&e as &dyn std::error::Error)
        .downcast_ref::<tokio_postgres::Error>()
        .and_then(|e| e.as_db_error());
    match db {
        // Connection exceptions (08), insufficient resources (53), operator intervention
        // (57: a shutdown, a cancelled statement), system errors (58), and serialization
        // failures and deadlocks (40): the next attempt may succeed.
        Some(d) => {
            let code = d.code().code();
            let text = format!("{} ({code})", d.message());
            if ["08", "53", "57", "58", "40"]
                .iter()
                .any(|c| code.starts_with(c))
            {
                StoreError::Unavailable(text)
            } else {
                StoreError::Backend(text)
            }
        }
        // No server error: the connection broke, or an I/O error.
        None => StoreError::Unavailable(causes(&e)),
    }
}

fn failed(m: &str) -> StoreError {
    StoreError::Backend(m.to_string())
}

/// How long a request waits for a connection (or a new one to open) before failing.
const STORE_WAIT: std::time::Duration = std::time::Duration::from_millis(1500);

const INSERT_KEY: &str = "INSERT INTO signing_keys (kid, alg, private_der, created_at, retired_at)
     VALUES ($1, $2, $3, $4, $5)";

fn key_params(key: &StoredKey) -> [&(dyn tokio_postgres::types::ToSql + Sync); 5] {
    [
        &key.kid,
        &key.alg,
        &key.private_der,
        &key.created_at,
        &key.retired_at,
    ]
}

fn unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// The URL without `sslmode` and `sslrootcert` (read here, not by tokio-postgres, which
/// knows no `verify-*`), the mode and the CA file.
fn tls_params(url: &str) -> Result<(String, crate::pgtls::SslMode, Option<String>)> {
    use crate::pgtls::SslMode;
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, q),
        None => (url, ""),
    };
    let mut mode = SslMode::Prefer;
    let mut root = None;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", v)) => {
                mode = SslMode::parse(v)
                    .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?
            }
            Some(("sslrootcert", v)) => root = Some(v.to_string()),
            _ => rest.push(pair),
        }
    }
    // As libpq: `require` with a root certificate checks the chain (verify-ca).
    if mode == SslMode::Require && root.is_some() {
        mode = SslMode::VerifyCa;
    }
    let url = if rest.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", rest.join("&"))
    };
    Ok((url, mode, root))
}

fn mode_name(m: crate::pgtls::SslMode) -> &'static str {
    use crate::pgtls::SslMode::*;
    match m {
        Disable => "disable",
        Prefer => "prefer",
        Require => "require",
        VerifyCa => "verify-ca",
        VerifyFull => "verify-full",
    }
}

/// Is every host of `cfg` on this machine (loopback or a Unix socket)?
fn loopback(cfg: &tokio_postgres::Config) -> bool {
    cfg.get_hosts().iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(s) => {
            s == "localhost"
                || s.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => true,
    })
}

/// An error and its causes, one after another: "error performing TLS handshake" alone does
/// not say that the certificate is not trusted.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(s) = next {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        next = s.source();
    }
    out
}

/// Why the first connection failed, in words that say what to do. The whole chain goes to
/// the debug log.
fn connect_error(describe: &str, e: &deadpool_postgres::PoolError) -> StoreError {
    tracing::debug!(error = %causes(e), "PostgreSQL connection failed");
    let mut db: Option<&tokio_postgres::Error> = None;
    let mut io: Option<std::io::ErrorKind> = None;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if let Some(d) = err.downcast_ref::<tokio_postgres::Error>() {
            db = db.or(Some(d));
        }
        if let Some(i) = err.downcast_ref::<std::io::Error>() {
            io = io.or(Some(i.kind()));
        }
        next = err.source();
    }
    let text = causes(e);
    let tls_reason;
    let (what, todo) = match db.and_then(|d| d.code()) {
        Some(c) if *c == SqlState::INVALID_PASSWORD => (
            "PostgreSQL refused the password",
            "check the user and password in JOTGATE_STORE (or the server's pg_hba.conf)",
        ),
        Some(c) if *c == SqlState::INVALID_CATALOG_NAME => (
            "the PostgreSQL database does not exist",
            "create it (createdb, or CREATE DATABASE) or name an existing one in JOTGATE_STORE",
        ),
        Some(c)
            if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                && text.contains("no encryption") =>
        {
            (
                "PostgreSQL requires TLS for this connection",
                "add ?sslmode=verify-full&sslrootcert=CA.pem to JOTGATE_STORE (docs/configuration.md#postgresql-over-tls)",
            )
        }
        Some(c) if *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION => (
            "PostgreSQL refused this user from this address",
            "check the user in JOTGATE_STORE and the server's pg_hba.conf",
        ),
        _ if io == Some(std::io::ErrorKind::ConnectionRefused) => (
            "PostgreSQL refused the connection",
            "is the server running and listening on that host and port?",
        ),
        _ if text.contains("TLS") || text.contains("tls") || text.contains("certificate") => (
            {
                // The innermost cause says which: an unknown issuer, a name mismatch…
                let mut last = e.to_string();
                let mut next = std::error::Error::source(e);
                while let Some(s) = next {
                    last = s.to_string();
                    next = s.source();
                }
                tls_reason = format!("the TLS handshake with PostgreSQL failed: {last}");
                tls_reason.as_str()
            },
            "check sslmode and sslrootcert in JOTGATE_STORE (docs/configuration.md#postgresql-over-tls)",
        ),
        _ if text.contains("timed out") || io == Some(std::io::ErrorKind::TimedOut) => (
            "PostgreSQL did not answer in time",
            "is the host reachable from here (firewall, security group)?",
        ),
        _ if text.contains("failed to lookup") || text.contains("resolve") => (
            "the PostgreSQL host name does not resolve",
            "check the host in JOTGATE_STORE",
        ),
        _ => (
            "cannot connect to PostgreSQL",
            "run with JOTGATE_LOG=debug for the driver's full error",
        ),
    };
    StoreError::Setup {
        what: format!("{what} ({describe})"),
        todo: todo.to_string(),
    }
}

/// `postgres://user@host:port/db`, without the password or parameters, for logs.
fn redact(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(s) => s.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        cfg.get_user().unwrap_or(""),
        cfg.get_dbname().unwrap_or("")
    )
}

fn user_record(r: &Row) -> Result<UserRecord> {
    Ok(UserRecord {
        user: User {
            id: r.get("id"),
            username: r.get("username"),
            roles: r.get("roles"),
            created_at: r.get("created_at"),
            email: r.get("email"),
            email_verified: r.get("email_verified"),
            blocked: r.get("blocked"),
            app_metadata: serde_json::from_str(r.get("app_metadata")).map_err(backend)?,
            last_login: r.get("last_login"),
        },
        username_key: r.get("username_key"),
        password_hash: r.get("password_hash"),
        devices_not_before: r.get("devices_nbf"),
    })
}

const USER_COLS: &str = "id, username, roles, created_at, username_key, password_hash, email, email_verified, blocked, app_metadata, last_login, devices_nbf";

/// Whether `email` names an account other than `id`: as its address, or as its username key
/// (usernames made before addresses could contain '@').
async fn email_taken(
    c: &impl deadpool_postgres::GenericClient,
    email: &str,
    id: &str,
) -> Result<bool> {
    let row = c
        .query_one(
            &c.prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE (email = $1 OR username_key = $1) AND id <> $2)").await.map_err(backend)?,
            &[&email, &id],
        )
        .await
        .map_err(backend)?;
    Ok(row.get(0))
}

/// The conflict a unique violation on `users` means.
fn users_conflict(e: &tokio_postgres::Error) -> StoreError {
    match e.as_db_error().and_then(|d| d.constraint()) {
        Some("users_email") => StoreError::Conflict("email"),
        Some(c) if c.contains("pkey") => StoreError::Conflict("user id"),
        _ => StoreError::Conflict("username"),
    }
}

impl PostgresStore {
    /// Connect (a pool of up to `max_connections`) and apply the schema.
    /// Connect with a `postgres://` URL. `sslmode` (disable, prefer — the default —,
    /// require, verify-ca, verify-full) and `sslrootcert=PATH` are read as libpq does (see
    /// [`crate::pgtls`]).
    pub async fn connect(url: &str, max_connections: usize) -> Result<Self> {
        let store = Self::pool(url, max_connections)?;
        let c = store.first_client().await?;
        // Two instances starting together must not race on CREATE TABLE: the lock is held
        // until the schema's transaction commits (a session lock released before the
        // commit let the second instance collide with the first's uncommitted tables).
        // The notices of CREATE TABLE IF NOT EXISTS on an existing schema are not news.
        c.batch_execute(&format!(
            "BEGIN; SET LOCAL client_min_messages = warning; SELECT pg_advisory_xact_lock(7411); {SCHEMA} COMMIT;"
        ))
        .await
        .map_err(|e| {
            let why = e.as_db_error().map_or_else(|| causes(&e), |d| d.message().to_string());
            StoreError::Setup {
                what: format!("cannot create jotgate's tables in {}: {why}", store.describe),
                todo: "let the user create tables in its schema (GRANT CREATE ON SCHEMA public TO …), or start jotgate once as a user who may".into(),
            }
        })?;
        Ok(store)
    }

    /// Connect without writing anything: `None` when the database holds none of jotgate's
    /// tables yet (a fresh store, which `connect` would set up), an error when it holds
    /// only some of them. For `jotgate check`.
    pub async fn connect_existing(url: &str) -> Result<Option<Self>> {
        let store = Self::pool(url, 2)?;
        let c = store.first_client().await?;
        let rows = c
            .query(
                &c.prepare_cached("SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()").await.map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        let present: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
        let at = format!("the database at {}", store.describe);
        Ok(crate::schema_state(SCHEMA, &present, &at)?.then_some(store))
    }

    fn pool(url: &str, max_connections: usize) -> Result<Self> {
        let (url, mode, root_cert) = tls_params(url)?;
        let mut cfg: tokio_postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("invalid PostgreSQL URL: {e}")))?;
        cfg.ssl_mode(mode.wire());
        // A database that stops answering (a dead host, a cut network) is noticed in
        // seconds, not at the system's TCP timeout.
        cfg.connect_timeout(STORE_WAIT);
        cfg.keepalives(true);
        cfg.keepalives_idle(std::time::Duration::from_secs(5));
        cfg.keepalives_interval(std::time::Duration::from_secs(1));
        cfg.keepalives_retries(3);
        // Keepalives do not fire while a query waits unanswered: data left unacknowledged
        // this long breaks the connection, which the pool then drops.
        cfg.tcp_user_timeout(std::time::Duration::from_secs(8));
        let describe = format!("{} (sslmode={})", redact(&cfg), mode_name(mode));
        if !mode.verifies() && !loopback(&cfg) {
            tracing::warn!(
                database = %describe,
                "the PostgreSQL connection is not verified TLS: password hashes and keys may cross the network readable or to an impostor; use sslmode=verify-full"
            );
        }
        let root =
            match &root_cert {
                Some(path) => Some(std::fs::read(path).map_err(|e| {
                    StoreError::Config(format!("cannot read sslrootcert {path}: {e}"))
                })?),
                None => None,
            };
        let tls = crate::pgtls::client_config(mode, root.as_deref())
            .map_err(|e| StoreError::Config(format!("PostgreSQL TLS: {e}")))?;
        let mgr = Manager::from_config(
            cfg,
            crate::pgtls::MakeRustls::new(tls),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        // Bounded waits: a request that cannot get a connection within STORE_WAIT (the
        // database down, or every connection busy) fails then and is answered 503, instead
        // of piling up behind the pool.
        let pool = Pool::builder(mgr)
            .max_size(max_connections.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(STORE_WAIT))
            .create_timeout(Some(STORE_WAIT))
            .recycle_timeout(Some(STORE_WAIT))
            .build()
            .map_err(backend)?;
        Ok(Self {
            pool,
            describe,
            throttle_writes: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// The first connection, its failure explained for the person starting jotgate.
    async fn first_client(&self) -> Result<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| connect_error(&self.describe, &e))
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to {}: {}",
                self.describe,
                causes(&e)
            ))
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn shared_secret(&self, name: &str) -> Result<String> {
        let c = self.client().await?;
        let key = format!("secret:{name}");
        let select = c
            .prepare_cached("SELECT value FROM meta WHERE key = $1")
            .await
            .map_err(backend)?;
        if let Some(row) = c.query_opt(&select, &[&key]).await.map_err(backend)? {
            return Ok(row.get(0));
        }
        // Made only when missing: the first draw from aws-lc's generator seeds it (~30 ms).
        c.execute(
            &c.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
            )
            .await
            .map_err(backend)?,
            &[&key, &jotgate_core::random::token(32)],
        )
        .await
        .map_err(backend)?;
        let row = c.query_one(&select, &[&key]).await.map_err(backend)?;
        Ok(row.get(0))
    }

    async fn store_id(&self, create: bool) -> Result<Option<String>> {
        let c = self.client().await?;
        if create {
            c.execute(
                &c.prepare_cached("INSERT INTO meta (key, value) VALUES ('store_id', $1) ON CONFLICT (key) DO NOTHING").await.map_err(backend)?,
                &[&uuid::Uuid::new_v4().to_string()],
            )
            .await
            .map_err(backend)?;
        }
        let row = c
            .query_opt(
                &c.prepare_cached("SELECT value FROM meta WHERE key = 'store_id'")
                    .await
                    .map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|r| r.get(0)))
    }

    fn feed_settle(&self) -> std::time::Duration {
        FEED_SETTLE
    }
}

#[async_trait]
impl Users for PostgresStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        let c = self.client().await?;
        if let Some(email) = &user.email
            && email_taken(&c, email, &user.id).await?
        {
            return Err(StoreError::Conflict("email"));
        }
        let res = c
            .execute(
                &c.prepare_cached("INSERT INTO users (id, username_key, username, password_hash, roles, created_at, email)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)").await.map_err(backend)?,
                &[
                    &user.id,
                    &user.username_key,
                    &user.username_display,
                    &user.password_hash,
                    &user.roles,
                    &user.created_at,
                    &user.email,
                ],
            )
            .await;
        match res {
            Ok(_) => Ok(User::new(&user)),
            Err(e) if unique_violation(&e) => Err(users_conflict(&e)),
            Err(e) => Err(backend(e)),
        }
    }

    async fn user_by_key(&self, username_key: &str) -> Result<Option<UserRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(&format!(
                    "SELECT {USER_COLS} FROM users WHERE username_key = $1"
                ))
                .await
                .map_err(backend)?,
                &[&username_key],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(user_record).transpose()
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE id = $1"))
                    .await
                    .map_err(backend)?,
                &[&id],
            )
            .await
            .map_err(backend)?;
        Ok(row.as_ref().map(user_record).transpose()?.map(|r| r.user))
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(&format!(
                    "SELECT {USER_COLS} FROM users ORDER BY created_at, username_key"
                ))
                .await
                .map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| user_record(r).map(|r| r.user))
            .collect()
    }

    async fn revoke_devices(&self, user_id: &str, at: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached(
                "UPDATE users SET devices_nbf = GREATEST(devices_nbf, $1) WHERE id = $2",
            )
            .await
            .map_err(backend)?,
            &[&at, &user_id],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                &c.prepare_cached("UPDATE users SET password_hash = $1 WHERE id = $2")
                    .await
                    .map_err(backend)?,
                &[&password_hash, &user_id],
            )
            .await
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound("user"));
        }
        Ok(())
    }

    async fn set_user_roles(&self, user_id: &str, roles: Vec<String>) -> Result<Vec<String>> {
        let c = self.client().await?;
        // The old value from a row lock taken in the same statement: two changes at once
        // each see the roles the other left.
        let row = c
            .query_opt(
                &c.prepare_cached(
                    "WITH old AS (SELECT id, roles FROM users WHERE id = $1 FOR UPDATE)
                 UPDATE users SET roles = $2 FROM old WHERE users.id = old.id RETURNING old.roles",
                )
                .await
                .map_err(backend)?,
                &[&user_id, &roles],
            )
            .await
            .map_err(backend)?;
        row.map(|r| r.get(0)).ok_or(StoreError::NotFound("user"))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(&format!("SELECT {USER_COLS} FROM users WHERE email = $1"))
                    .await
                    .map_err(backend)?,
                &[&email],
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(user_record).transpose()
    }

    async fn update_user(&self, user_id: &str, patch: UserPatch) -> Result<(User, User)> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let Some(row) = tx
            .query_opt(
                &tx.prepare_cached(&format!(
                    "SELECT {USER_COLS} FROM users WHERE id = $1 FOR UPDATE"
                ))
                .await
                .map_err(backend)?,
                &[&user_id],
            )
            .await
            .map_err(backend)?
        else {
            return Err(StoreError::NotFound("user"));
        };
        let before = user_record(&row)?.user;
        let after = patch.apply(&before);
        if let Some(email) = &after.email
            && after.email != before.email
            && email_taken(&tx, email, user_id).await?
        {
            return Err(StoreError::Conflict("email"));
        }
        let meta = serde_json::to_string(&after.app_metadata).map_err(backend)?;
        let res = tx
            .execute(
                &tx.prepare_cached("UPDATE users SET email = $1, email_verified = $2, blocked = $3, app_metadata = $4 WHERE id = $5").await.map_err(backend)?,
                &[&after.email, &after.email_verified, &after.blocked, &meta, &user_id],
            )
            .await;
        match res {
            Ok(_) => {}
            Err(e) if unique_violation(&e) => return Err(users_conflict(&e)),
            Err(e) => return Err(backend(e)),
        }
        tx.commit().await.map_err(backend)?;
        Ok((before, after))
    }

    async fn record_login(&self, user_id: &str, at: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached("UPDATE users SET last_login = $1 WHERE id = $2")
                .await
                .map_err(backend)?,
            &[&at, &user_id],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn delete_user(&self, user_id: &str) -> Result<Option<User>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        let Some(row) = tx
            .query_opt(
                &tx.prepare_cached(&format!(
                    "SELECT {USER_COLS} FROM users WHERE id = $1 FOR UPDATE"
                ))
                .await
                .map_err(backend)?,
                &[&user_id],
            )
            .await
            .map_err(backend)?
        else {
            return Ok(None);
        };
        let before = user_record(&row)?.user;
        // Its sessions' rows name it; they go with it (they were ended first).
        for sql in [
            "DELETE FROM refresh_tokens WHERE family_id IN (SELECT family_id FROM refresh_families WHERE user_id = $1)",
            "DELETE FROM refresh_families WHERE user_id = $1",
            "DELETE FROM users WHERE id = $1",
        ] {
            tx.execute(sql, &[&user_id]).await.map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(Some(before))
    }
}

fn role_of(r: &tokio_postgres::Row) -> crate::Role {
    crate::Role {
        name: r.get(0),
        scopes: r.get(1),
        updated_at: r.get(2),
    }
}

#[async_trait]
impl Roles for PostgresStore {
    async fn put_role(&self, role: crate::Role) -> Result<Option<crate::Role>> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // Puts and deletes of one role queue on a lock of its name (a row lock cannot
        // cover a role that does not exist yet): each sees the definition the last left.
        tx.execute(
            &tx.prepare_cached("SELECT pg_advisory_xact_lock(7412, hashtext($1))")
                .await
                .map_err(backend)?,
            &[&role.name],
        )
        .await
        .map_err(backend)?;
        let before = tx
            .query_opt(
                &tx.prepare_cached("SELECT name, scopes, updated_at FROM roles WHERE name = $1")
                    .await
                    .map_err(backend)?,
                &[&role.name],
            )
            .await
            .map_err(backend)?;
        tx.execute(
            &tx.prepare_cached("INSERT INTO roles (name, scopes, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET scopes = EXCLUDED.scopes, updated_at = EXCLUDED.updated_at").await.map_err(backend)?,
            &[&role.name, &role.scopes, &role.updated_at],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(before.as_ref().map(role_of))
    }

    async fn roles(&self) -> Result<Vec<crate::Role>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached("SELECT name, scopes, updated_at FROM roles ORDER BY name")
                    .await
                    .map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(role_of).collect())
    }

    async fn delete_role(&self, name: &str) -> Result<Option<crate::Role>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(
                    "DELETE FROM roles WHERE name = $1 RETURNING name, scopes, updated_at",
                )
                .await
                .map_err(backend)?,
                &[&name],
            )
            .await
            .map_err(backend)?;
        Ok(row.as_ref().map(role_of))
    }
}

#[async_trait]
impl Keys for PostgresStore {
    async fn replace_key_material(&self, kid: &str, from: &[u8], to: Vec<u8>) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                &c.prepare_cached(
                    "UPDATE signing_keys SET private_der = $1 WHERE kid = $2 AND private_der = $3",
                )
                .await
                .map_err(backend)?,
                &[&to, &kid, &from],
            )
            .await
            .map_err(backend)?;
        if n == 1 {
            Ok(())
        } else {
            Err(StoreError::Conflict("key material"))
        }
    }

    async fn insert_key_once(&self, slot: &str, key: StoredKey) -> Result<bool> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // A second instance waits on the slot's row until the first commits, then finds it.
        let claimed = tx
            .execute(
                &tx.prepare_cached(
                    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
                )
                .await
                .map_err(backend)?,
                &[&format!("keyslot:{slot}"), &key.kid],
            )
            .await
            .map_err(backend)?;
        if claimed == 1 {
            tx.execute(INSERT_KEY, &key_params(&key))
                .await
                .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        Ok(claimed == 1)
    }

    async fn insert_key(&self, key: StoredKey) -> Result<()> {
        let c = self.client().await?;
        let res = c.execute(INSERT_KEY, &key_params(&key)).await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict("key id")),
            Err(e) => Err(backend(e)),
        }
    }

    async fn keys(&self) -> Result<Vec<StoredKey>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(
                    "SELECT kid, alg, private_der, created_at, retired_at FROM signing_keys
                 ORDER BY created_at, inserted",
                )
                .await
                .map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| StoredKey {
                kid: r.get(0),
                alg: r.get(1),
                private_der: r.get(2),
                created_at: r.get(3),
                retired_at: r.get(4),
            })
            .collect())
    }

    async fn delete_key(&self, kid: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached("DELETE FROM signing_keys WHERE kid = $1")
                .await
                .map_err(backend)?,
            &[&kid],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn retire_key(&self, kid: &str, at: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached("UPDATE signing_keys SET retired_at = LEAST(COALESCE(retired_at, $1), $1) WHERE kid = $2").await.map_err(backend)?,
            &[&at, &kid],
        )
        .await
        .map_err(backend)?;
        let exists = c
            .query_opt(
                &c.prepare_cached("SELECT 1 FROM signing_keys WHERE kid = $1")
                    .await
                    .map_err(backend)?,
                &[&kid],
            )
            .await
            .map_err(backend)?
            .is_some();
        if !exists {
            return Err(StoreError::NotFound("key"));
        }
        Ok(())
    }
}

#[async_trait]
impl Sessions for PostgresStore {
    async fn insert_refresh(&self, t: NewRefresh) -> Result<()> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO refresh_families (family_id, user_id, created_at) VALUES ($1, $2, $3)",
            )
            .await
            .map_err(backend)?,
            &[&t.family_id, &t.user_id, &t.created_at],
        )
        .await
        .map_err(backend)?;
        tx.execute(
            &tx.prepare_cached(
                "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(backend)?,
            &[&t.token_hash, &t.family_id, &t.created_at, &t.expires_at],
        )
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }

    async fn rotate_refresh(&self, req: Rotate) -> Result<RotateOutcome> {
        let mut c = self.client().await?;
        let tx = c.transaction().await.map_err(backend)?;
        // The row lock makes concurrent presentations (on any instance) wait here, then
        // read the winner's used_at and nonce.
        let row = tx
            .query_opt(
                &tx.prepare_cached(
                    "SELECT t.family_id, f.user_id, t.expires_at, t.used_at, t.rotation_nonce,
                        f.revoked_at
                 FROM refresh_tokens t JOIN refresh_families f USING (family_id)
                 WHERE t.token_hash = $1
                 FOR UPDATE OF t",
                )
                .await
                .map_err(backend)?,
                &[&req.presented_hash],
            )
            .await
            .map_err(backend)?;
        let Some(row) = row else {
            return Ok(RotateOutcome::Invalid);
        };
        let (family_id, user_id): (String, String) = (row.get(0), row.get(1));
        let (expires_at, used_at): (i64, Option<i64>) = (row.get(2), row.get(3));
        let (nonce, revoked_at): (Option<String>, Option<i64>) = (row.get(4), row.get(5));
        if revoked_at.is_some() || expires_at <= req.now {
            return Ok(RotateOutcome::Invalid);
        }
        let outcome = match crate::rotation_step(used_at, nonce, &req) {
            crate::Step::Rotate => {
                tx.execute(
                    &tx.prepare_cached(
                        "UPDATE refresh_tokens SET used_at = $1, rotation_nonce = $2
                     WHERE token_hash = $3",
                    )
                    .await
                    .map_err(backend)?,
                    &[&req.now, &req.nonce, &req.presented_hash],
                )
                .await
                .map_err(backend)?;
                tx.execute(
                    &tx.prepare_cached(
                        "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
                     VALUES ($1, $2, $3, $4)",
                    )
                    .await
                    .map_err(backend)?,
                    &[
                        &req.successor_hash,
                        &family_id,
                        &req.now,
                        &req.successor_expires_at,
                    ],
                )
                .await
                .map_err(backend)?;
                RotateOutcome::Rotated { user_id, family_id }
            }
            crate::Step::Repeat(nonce) => RotateOutcome::Repeat {
                user_id,
                family_id,
                nonce,
            },
            crate::Step::Reuse => {
                tx.execute(
                    &tx.prepare_cached(
                        "UPDATE refresh_families SET revoked_at = $1 WHERE family_id = $2",
                    )
                    .await
                    .map_err(backend)?,
                    &[&req.now, &family_id],
                )
                .await
                .map_err(backend)?;
                RotateOutcome::Reused { family_id }
            }
        };
        tx.commit().await.map_err(backend)?;
        Ok(outcome)
    }

    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached("UPDATE refresh_families SET revoked_at = $1 WHERE family_id = $2 AND revoked_at IS NULL").await.map_err(backend)?,
            &[&now, &family_id],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn evict_sessions(&self, user_id: &str, keep: usize, now: i64) -> Result<Vec<String>> {
        let c = self.client().await?;
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let rows = c
            .query(
                &c.prepare_cached(
                    "UPDATE refresh_families SET revoked_at = $1 WHERE family_id IN (
                     SELECT family_id FROM refresh_families
                     WHERE user_id = $2 AND revoked_at IS NULL
                     ORDER BY created_at DESC, family_id DESC OFFSET $3)
                 AND revoked_at IS NULL RETURNING family_id",
                )
                .await
                .map_err(backend)?,
                &[&now, &user_id, &keep],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn revoke_user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<String>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(
                    "UPDATE refresh_families SET revoked_at = $1
                 WHERE user_id = $2 AND revoked_at IS NULL RETURNING family_id",
                )
                .await
                .map_err(backend)?,
                &[&now, &user_id],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<FamilyRef>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(
                    "SELECT t.family_id, f.user_id FROM refresh_tokens t
                 JOIN refresh_families f ON f.family_id = t.family_id
                 WHERE t.token_hash = $1",
                )
                .await
                .map_err(backend)?,
                &[&token_hash],
            )
            .await
            .map_err(backend)?;
        Ok(row.map(|r| FamilyRef {
            family_id: r.get(0),
            user_id: r.get(1),
        }))
    }
}

#[async_trait]
impl Revocations for PostgresStore {
    async fn revoke_token(&self, id: &str, expires_at: i64, now: i64) -> Result<()> {
        // No table lock: the feed position is the writer's time (µs) and a random suffix,
        // and readers return only settled positions (crate::feedpos).
        let c = self.client().await?;
        // Pruning is off the hot path: one write in 64, an index range scan.
        if feed_position(0) % 64 == 0 {
            c.execute(
                &c.prepare_cached("DELETE FROM revoked_tokens WHERE expires_at < $1")
                    .await
                    .map_err(backend)?,
                &[&now],
            )
            .await
            .map_err(backend)?;
        }
        // A repeat (a retry after a failure, say) moves the entry to a fresh position: the
        // first attempt may have landed late, behind a follower's cursor.
        let mut started = micros_now();
        let mut stored = false;
        for _ in 0..8 {
            let res = c
                .execute(
                    &c.prepare_cached(
                        "INSERT INTO revoked_tokens (seq, token_id, expires_at, revoked_at)
                     VALUES ($1, $2, $3, $4)
                     ON CONFLICT (token_id) DO UPDATE SET seq = EXCLUDED.seq",
                    )
                    .await
                    .map_err(backend)?,
                    &[&feed_position(started), &id, &expires_at, &now],
                )
                .await;
            match res {
                Ok(_) => {
                    stored = true;
                    break;
                }
                // The position was taken in the same microsecond: take another.
                Err(e) if unique_violation(&e) => started = micros_now(),
                Err(e) => return Err(backend(e)),
            }
        }
        if !stored {
            return Err(failed("the revocation kept colliding; try again"));
        }
        // Took long enough that a reader may have passed its position: move it forward.
        let half = FEED_SETTLE.as_micros() as i64 / 2;
        let mut attempts = 0;
        while micros_now() - started >= half {
            attempts += 1;
            if attempts > 8 {
                return Err(failed("the revocation kept landing late; try again"));
            }
            started = micros_now();
            let res = c
                .execute(
                    &c.prepare_cached("UPDATE revoked_tokens SET seq = $1 WHERE token_id = $2")
                        .await
                        .map_err(backend)?,
                    &[&feed_position(started), &id],
                )
                .await;
            match res {
                Ok(_) => {}
                Err(e) if unique_violation(&e) => started = micros_now() - half,
                Err(e) => return Err(backend(e)),
            }
        }
        Ok(())
    }

    async fn revocations_since(
        &self,
        since: i64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Revocation>> {
        let c = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = c
            .query(
                &c.prepare_cached(
                    "SELECT seq, token_id, expires_at FROM revoked_tokens
                 WHERE seq > $1 AND seq <= $2 AND expires_at >= $3 ORDER BY seq LIMIT $4",
                )
                .await
                .map_err(backend)?,
                &[&since, &settled_horizon(FEED_SETTLE), &now, &limit],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| Revocation {
                seq: r.get(0),
                id: r.get(1),
                expires_at: r.get(2),
            })
            .collect())
    }
}

#[async_trait]
impl Throttle for PostgresStore {
    async fn add_login_failure(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<LoginFailures> {
        let c = self.client().await?;
        let stale = now_ms - window_ms;
        // Housekeeping deletes other keys' counters only once they are stale for every
        // window a caller uses (at most a day): a key counted over an hour must not go
        // because another is counted over fifteen minutes.
        let gone = now_ms - window_ms.max(crate::THROTTLE_MAX_WINDOW_MS);
        let writes = self
            .throttle_writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if writes.is_multiple_of(SWEEP_EVERY) {
            c.execute(
                &c.prepare_cached("DELETE FROM login_failures WHERE last_ms <= $1 AND key <> $2")
                    .await
                    .map_err(backend)?,
                &[&gone, &key],
            )
            .await
            .map_err(backend)?;
        }
        // One statement: concurrent failures on any instance each add exactly one.
        let row = c
            .query_one(
                &c.prepare_cached(
                    "INSERT INTO login_failures AS f (key, failures, last_ms) VALUES ($1, 1, $2)
                 ON CONFLICT (key) DO UPDATE SET
                   failures = CASE WHEN f.last_ms <= $3 THEN 1 ELSE f.failures + 1 END,
                   last_ms = $2
                 RETURNING failures, last_ms",
                )
                .await
                .map_err(backend)?,
                &[&key, &now_ms, &stale],
            )
            .await
            .map_err(backend)?;
        let count: i32 = row.get(0);
        Ok(LoginFailures {
            key: key.to_string(),
            count: u32::try_from(count).unwrap_or(0),
            last_ms: row.get(1),
        })
    }

    async fn login_failures(
        &self,
        keys: &[String],
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(
                    "SELECT key, failures, last_ms FROM login_failures
                 WHERE key = ANY($1) AND last_ms > $2",
                )
                .await
                .map_err(backend)?,
                &[&keys, &(now_ms - window_ms)],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| LoginFailures {
                key: r.get(0),
                count: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                last_ms: r.get(2),
            })
            .collect())
    }

    async fn login_failures_in(
        &self,
        group: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>> {
        // Compared byte-wise (`COLLATE "C"`), whatever the database's collation.
        let (from, to) = crate::throttle_group_range(group)?;
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(
                    "SELECT key, failures, last_ms FROM login_failures
                 WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" < $2 AND last_ms > $3
                 ORDER BY key COLLATE \"C\" LIMIT $4",
                )
                .await
                .map_err(backend)?,
                &[
                    &from,
                    &to,
                    &(now_ms - window_ms),
                    &(crate::THROTTLE_GROUP_MAX as i64),
                ],
            )
            .await
            .map_err(backend)?;
        Ok(rows
            .iter()
            .map(|r| LoginFailures {
                key: r.get(0),
                count: u32::try_from(r.get::<_, i32>(1)).unwrap_or(0),
                last_ms: r.get(2),
            })
            .collect())
    }

    async fn clear_login_failures_in(&self, group: &str) -> Result<usize> {
        let (from, to) = crate::throttle_group_range(group)?;
        let c = self.client().await?;
        let n = c
            .execute(
                &c.prepare_cached("DELETE FROM login_failures WHERE key COLLATE \"C\" >= $1 AND key COLLATE \"C\" < $2").await.map_err(backend)?,
                &[&from, &to],
            )
            .await
            .map_err(backend)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn clear_login_failures(&self, key: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached("DELETE FROM login_failures WHERE key = $1")
                .await
                .map_err(backend)?,
            &[&key],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn release_login_failure(&self, key: &str) -> Result<()> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached(
                "UPDATE login_failures SET failures = failures - 1 WHERE key = $1 AND failures > 0",
            )
            .await
            .map_err(backend)?,
            &[&key],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }
}

const CLIENT_COLS: &str = "id, name, secret_hash, scopes, audiences, created_at, secret_set_at";

fn client_of(r: &Row) -> ClientRecord {
    ClientRecord {
        id: r.get(0),
        name: r.get(1),
        secret_hash: r.get(2),
        scopes: r.get(3),
        audiences: r.get(4),
        created_at: r.get(5),
        secret_set_at: r.get(6),
    }
}

#[async_trait]
impl Clients for PostgresStore {
    async fn create_client(&self, c: ClientRecord) -> Result<()> {
        let conn = self.client().await?;
        let res = conn
            .execute(
                &conn
                    .prepare_cached(&format!(
                        "INSERT INTO clients ({CLIENT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
                    ))
                    .await
                    .map_err(backend)?,
                &[
                    &c.id,
                    &c.name,
                    &c.secret_hash,
                    &c.scopes,
                    &c.audiences,
                    &c.created_at,
                    &c.secret_set_at,
                ],
            )
            .await;
        match res {
            Ok(_) => Ok(()),
            Err(e) if unique_violation(&e) => Err(StoreError::Conflict("client")),
            Err(e) => Err(backend(e)),
        }
    }

    async fn client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(&format!("SELECT {CLIENT_COLS} FROM clients WHERE id = $1"))
                    .await
                    .map_err(backend)?,
                &[&id],
            )
            .await
            .map_err(backend)?;
        Ok(row.as_ref().map(client_of))
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(&format!("SELECT {CLIENT_COLS} FROM clients ORDER BY id"))
                    .await
                    .map_err(backend)?,
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(client_of).collect())
    }

    async fn set_client_secret(&self, id: &str, secret_hash: &str, at: i64) -> Result<()> {
        let c = self.client().await?;
        let n = c
            .execute(
                &c.prepare_cached(
                    "UPDATE clients SET secret_hash = $1, secret_set_at = $2 WHERE id = $3",
                )
                .await
                .map_err(backend)?,
                &[&secret_hash, &at, &id],
            )
            .await
            .map_err(backend)?;
        if n == 0 {
            return Err(StoreError::NotFound("client"));
        }
        Ok(())
    }

    async fn delete_client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let c = self.client().await?;
        let row = c
            .query_opt(
                &c.prepare_cached(&format!(
                    "DELETE FROM clients WHERE id = $1 RETURNING {CLIENT_COLS}"
                ))
                .await
                .map_err(backend)?,
                &[&id],
            )
            .await
            .map_err(backend)?;
        Ok(row.as_ref().map(client_of))
    }
}

#[async_trait]
impl Audit for PostgresStore {
    async fn append_audit(&self, e: crate::AuditEvent, keep_until: i64) -> Result<()> {
        let detail = serde_json::to_string(&e.detail).map_err(backend)?;
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached(
                "INSERT INTO audit_log (at_ms, kind, user_id, actor, ip, detail, keep_until)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await
            .map_err(backend)?,
            &[
                &e.at_ms,
                &e.kind,
                &e.user,
                &e.actor,
                &e.ip,
                &detail,
                &keep_until,
            ],
        )
        .await
        .map_err(backend)?;
        Ok(())
    }

    async fn audit_events(&self, q: crate::AuditQuery) -> Result<Vec<crate::AuditEvent>> {
        let c = self.client().await?;
        let rows = c
            .query(
                &c.prepare_cached(
                    "SELECT at_ms, kind, user_id, actor, ip, detail FROM audit_log
                 WHERE at_ms >= $1 AND at_ms < $2 AND ($3::TEXT IS NULL OR kind = $3)
                   AND ($4::TEXT IS NULL OR user_id = $4)
                 ORDER BY at_ms DESC, seq DESC LIMIT $5",
                )
                .await
                .map_err(backend)?,
                &[
                    &q.since_ms,
                    &q.before_ms.unwrap_or(i64::MAX),
                    &q.kind,
                    &q.user,
                    &(q.limit as i64),
                ],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                Ok(crate::AuditEvent {
                    at_ms: r.get(0),
                    kind: r.get(1),
                    user: r.get(2),
                    actor: r.get(3),
                    ip: r.get(4),
                    detail: serde_json::from_str(r.get(5)).map_err(backend)?,
                })
            })
            .collect()
    }

    async fn prune_audit(&self, now: i64) -> Result<u64> {
        let c = self.client().await?;
        c.execute(
            &c.prepare_cached("DELETE FROM audit_log WHERE keep_until < $1")
                .await
                .map_err(backend)?,
            &[&now],
        )
        .await
        .map_err(backend)
    }
}

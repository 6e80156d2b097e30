//! The embedded default backend: one SQLite file (WAL mode), safe to share between the
//! server and the CLI running at the same time. Calls run on tokio's blocking pool.

use crate::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

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
    roles         TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid         TEXT PRIMARY KEY,
    alg         TEXT NOT NULL,
    private_der BLOB NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);
CREATE TABLE IF NOT EXISTS refresh_families (
    family_id  TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX IF NOT EXISTS refresh_families_user ON refresh_families(user_id);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash     TEXT PRIMARY KEY,
    family_id      TEXT NOT NULL REFERENCES refresh_families(family_id),
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    used_at        INTEGER,
    rotation_nonce TEXT
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens(family_id);
CREATE TABLE IF NOT EXISTS revoked_tokens (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    token_id   TEXT NOT NULL UNIQUE,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS revoked_tokens_expiry ON revoked_tokens(expires_at);
CREATE TABLE IF NOT EXISTS login_failures (
    key      TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last_ms  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS login_failures_last ON login_failures(last_ms);
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS roles (
    name       TEXT PRIMARY KEY,
    scopes     TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_log (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms      INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    user_id    TEXT,
    actor      TEXT,
    ip         TEXT,
    detail     TEXT NOT NULL,
    keep_until INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_at ON audit_log(at_ms);
CREATE INDEX IF NOT EXISTS audit_log_user ON audit_log(user_id, at_ms);
CREATE INDEX IF NOT EXISTS audit_log_keep ON audit_log(keep_until);
CREATE TABLE IF NOT EXISTS clients (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    secret_hash   TEXT NOT NULL,
    scopes        TEXT NOT NULL,
    audiences     TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    secret_set_at INTEGER NOT NULL
);
";

/// Columns of `users` added after the first release: added to an older file at start
/// (`ALTER TABLE … ADD COLUMN`), inside one write transaction so two processes opening the
/// file at once do not both add them.
const USER_COLUMNS_ADDED: &[(&str, &str)] = &[
    ("email", "email TEXT"),
    (
        "email_verified",
        "email_verified INTEGER NOT NULL DEFAULT 0",
    ),
    ("blocked", "blocked INTEGER NOT NULL DEFAULT 0"),
    ("app_metadata", "app_metadata TEXT NOT NULL DEFAULT '{}'"),
    ("last_login", "last_login INTEGER"),
    ("devices_nbf", "devices_nbf INTEGER NOT NULL DEFAULT 0"),
];

const INSERT_KEY: &str = "INSERT INTO signing_keys (kid, alg, private_der, created_at, retired_at)
     VALUES (?1, ?2, ?3, ?4, ?5)";

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    let text = e.to_string();
    // sqlite3_errstr's words for the conditions that pass: a full disk, a busy or locked
    // database, an I/O failure.
    let transient = [
        "database or disk is full",
        "database is locked",
        "database table is locked",
        "disk I/O error",
        "unable to open database file",
    ];
    if transient.iter().any(|t| text.contains(t)) {
        StoreError::Unavailable(text)
    } else {
        StoreError::Backend(text)
    }
}

/// The database holds password hashes and (unless sealed) private keys: it is created
/// readable by its owner only (0600), and an existing one is tightened to that. SQLite
/// creates the `-wal` and `-shm` files with the database file's permissions.
fn private_file(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| StoreError::Setup {
                what: format!("cannot open the SQLite database {}: {e}", path.display()),
                todo: "check the file's and its directory's permissions, or choose a writable place with --database PATH (or JOTGATE_DATABASE)".into(),
            })?;
        let meta = f
            .metadata()
            .map_err(|e| backend(format!("cannot read {}: {e}", path.display())))?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| backend(format!("cannot make {} private: {e}", path.display())))?;
            for ext in ["-wal", "-shm"] {
                let side = PathBuf::from(format!("{}{ext}", path.display()));
                if side.exists() {
                    let _ = std::fs::set_permissions(&side, std::fs::Permissions::from_mode(0o600));
                }
            }
            tracing::warn!(file = %path.display(), "the database was readable by others; it is now 0600");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database file and apply the schema.
    pub fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Setup {
                what: format!("cannot create the directory {}: {e}", dir.display()),
                todo: "choose a writable place with --database PATH (or JOTGATE_DATABASE)".into(),
            })?;
        }
        private_file(path)?;
        let unwritable = |e: rusqlite::Error| {
            StoreError::Setup {
            what: format!("cannot write the SQLite database {}: {e}", path.display()),
            todo: "check the file's and its directory's permissions, or choose a writable place with --database PATH (or JOTGATE_DATABASE)".into(),
        }
        };
        let conn = Connection::open(path).map_err(unwritable)?;
        Self::init(&conn).map_err(|e| match e {
            StoreError::Backend(m) if m.contains("readonly") || m.contains("read-only") || m.contains("unable to open") => StoreError::Setup {
                what: format!("cannot write the SQLite database {}: {m}", path.display()),
                todo: "check the file's and its directory's permissions, or choose a writable place with --database PATH (or JOTGATE_DATABASE)".into(),
            },
            e => e,
        })?;
        // Absolute, so the start-up log says exactly which file holds the data.
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Open an existing database read-only, writing nothing: `None` when the file does not
    /// exist or holds none of jotgate's tables (a fresh store, which `open` would set up),
    /// an error when it holds only some. For `jotgate check`.
    pub fn open_existing(path: &Path) -> Result<Option<Self>> {
        if !path.exists() {
            return Ok(None);
        }
        // With no `-wal` file beside it no connection has the database open: read it as
        // immutable, so that SQLite creates no `-wal`/`-shm` either. Otherwise a plain
        // read-only connection shares the running server's WAL.
        let wal = PathBuf::from(format!("{}-wal", path.display()));
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // With a `-wal`, `readonly_shm=1` keeps SQLite from creating or writing the `-shm`
        // (the WAL index) too: a check run by another user leaves no file behind.
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let mut uri = String::from("file:");
        for c in abs.display().to_string().chars() {
            match c {
                '?' => uri.push_str("%3f"),
                '#' => uri.push_str("%23"),
                '%' => uri.push_str("%25"),
                c => uri.push(c),
            }
        }
        uri.push_str(if wal.exists() {
            "?mode=ro&readonly_shm=1"
        } else {
            "?immutable=1"
        });
        let opened = Connection::open_with_flags(uri, flags | rusqlite::OpenFlags::SQLITE_OPEN_URI);
        let conn = opened.map_err(|e| {
            StoreError::Config(format!("cannot open {} read-only: {e}", path.display()))
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        let present: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut st| {
                st.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| {
                StoreError::Config(format!(
                    "{} is not a readable SQLite database: {e}",
                    path.display()
                ))
            })?;
        if !crate::schema_state(SCHEMA, &present, &path.display().to_string())? {
            return Ok(None);
        }
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Some(Self {
            path,
            conn: Arc::new(Mutex::new(conn)),
        }))
    }

    /// A private in-memory database, for tests.
    pub fn in_memory() -> Result<Self> {
        let conn = Connection::open_in_memory().map_err(backend)?;
        Self::init(&conn)?;
        Ok(Self {
            path: PathBuf::from(":memory:"),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn init(conn: &Connection) -> Result<()> {
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(backend)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(backend)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        conn.execute_batch("BEGIN IMMEDIATE").map_err(backend)?;
        let added = (|| {
            let present: Vec<String> = conn
                .prepare("SELECT name FROM pragma_table_info('users')")?
                .query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<_>>()?;
            for (col, ddl) in USER_COLUMNS_ADDED {
                if !present.iter().any(|p| p == col) {
                    conn.execute_batch(&format!("ALTER TABLE users ADD COLUMN {ddl}"))?;
                }
            }
            conn.execute_batch("CREATE UNIQUE INDEX IF NOT EXISTS users_email ON users(email)")
        })();
        match added {
            Ok(()) => conn.execute_batch("COMMIT").map_err(backend),
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(backend(e))
            }
        }
    }

    /// Run `f` with the connection on the blocking pool.
    async fn with<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| backend("connection lock poisoned"))?;
            f(&mut guard)
        })
        .await
        .map_err(backend)?
    }
}

struct UserRow {
    id: String,
    username: String,
    roles_json: String,
    created_at: i64,
    username_key: String,
    password_hash: String,
    email: Option<String>,
    email_verified: bool,
    blocked: bool,
    app_metadata: String,
    last_login: Option<i64>,
    devices_nbf: i64,
}

const USER_COLS: &str = "id, username, roles, created_at, username_key, password_hash, email, email_verified, blocked, app_metadata, last_login, devices_nbf";

fn user_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        roles_json: r.get(2)?,
        created_at: r.get(3)?,
        username_key: r.get(4)?,
        password_hash: r.get(5)?,
        email: r.get(6)?,
        email_verified: r.get(7)?,
        blocked: r.get(8)?,
        app_metadata: r.get(9)?,
        last_login: r.get(10)?,
        devices_nbf: r.get(11)?,
    })
}

fn user_where(c: &Connection, cond: &str, arg: &str) -> Result<Option<UserRecord>> {
    c.query_row(
        &format!("SELECT {USER_COLS} FROM users WHERE {cond} = ?1"),
        params![arg],
        user_row,
    )
    .optional()
    .map_err(backend)?
    .map(UserRow::into_record)
    .transpose()
}

impl UserRow {
    fn into_record(self) -> Result<UserRecord> {
        Ok(UserRecord {
            user: User {
                id: self.id,
                username: self.username,
                roles: serde_json::from_str(&self.roles_json).map_err(backend)?,
                created_at: self.created_at,
                email: self.email,
                email_verified: self.email_verified,
                blocked: self.blocked,
                app_metadata: serde_json::from_str(&self.app_metadata).map_err(backend)?,
                last_login: self.last_login,
            },
            username_key: self.username_key,
            password_hash: self.password_hash,
            devices_not_before: self.devices_nbf,
        })
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    async fn shared_secret(&self, name: &str) -> Result<String> {
        let key = format!("secret:{name}");
        self.with(move |c| {
            let read = |c: &Connection| {
                c.query_row("SELECT value FROM meta WHERE key = ?1", params![key], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(backend)
            };
            if let Some(secret) = read(c)? {
                return Ok(secret);
            }
            // Made only when missing: the first draw from aws-lc's generator seeds it
            // (~30 ms), which every start paid when a candidate was drawn each time.
            c.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                params![key, jotgate_core::random::token(32)],
            )
            .map_err(backend)?;
            read(c)?.ok_or_else(|| backend("SQLite lost a secret it just wrote"))
        })
        .await
    }

    async fn store_id(&self, create: bool) -> Result<Option<String>> {
        let fresh = uuid::Uuid::new_v4().to_string();
        self.with(move |c| {
            if create {
                c.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?1)",
                    params![fresh],
                )
                .map_err(backend)?;
            }
            c.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl Users for SqliteStore {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.with(move |c| {
            let roles = serde_json::to_string(&user.roles).map_err(backend)?;
            let tx = c.transaction().map_err(backend)?;
            if let Some(email) = &user.email
                && email_taken(&tx, email, &user.id)?
            {
                return Err(StoreError::Conflict("email"));
            }
            let res = tx.execute(
                "INSERT INTO users (id, username_key, username, password_hash, roles, created_at, email)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    user.id,
                    user.username_key,
                    user.username_display,
                    user.password_hash,
                    roles,
                    user.created_at,
                    user.email,
                ],
            );
            match res {
                Ok(_) => {
                    tx.commit().map_err(backend)?;
                    Ok(User::new(&user))
                }
                Err(e) => Err(users_conflict(e)),
            }
        })
        .await
    }

    async fn user_by_key(&self, username_key: &str) -> Result<Option<UserRecord>> {
        let key = username_key.to_string();
        self.with(move |c| {
            let row = c
                .query_row(
                    &format!("SELECT {USER_COLS} FROM users WHERE username_key = ?1"),
                    params![key],
                    user_row,
                )
                .optional()
                .map_err(backend)?;
            row.map(UserRow::into_record).transpose()
        })
        .await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        let id = id.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                params![id],
                user_row,
            )
            .optional()
            .map_err(backend)?
            .map(|r| r.into_record().map(|rec| rec.user))
            .transpose()
        })
        .await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.with(|c| {
            let mut stmt = c
                .prepare(&format!(
                    "SELECT {USER_COLS} FROM users ORDER BY created_at, username_key"
                ))
                .map_err(backend)?;
            let rows = stmt.query_map([], user_row).map_err(backend)?;
            rows.map(|r| r.map_err(backend)?.into_record().map(|rec| rec.user))
                .collect()
        })
        .await
    }

    async fn revoke_devices(&self, user_id: &str, at: i64) -> Result<()> {
        let id = user_id.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE users SET devices_nbf = MAX(devices_nbf, ?1) WHERE id = ?2",
                params![at, id],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<()> {
        let (id, hash) = (user_id.to_string(), password_hash.to_string());
        self.with(move |c| {
            match c
                .execute(
                    "UPDATE users SET password_hash = ?1 WHERE id = ?2",
                    params![hash, id],
                )
                .map_err(backend)?
            {
                0 => Err(StoreError::NotFound("user")),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn set_user_roles(&self, user_id: &str, roles: Vec<String>) -> Result<Vec<String>> {
        let id = user_id.to_string();
        let json = serde_json::to_string(&roles).map_err(backend)?;
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let before: Option<String> = tx
                .query_row("SELECT roles FROM users WHERE id = ?1", [&id], |r| r.get(0))
                .optional()
                .map_err(backend)?;
            let Some(before) = before else {
                return Err(StoreError::NotFound("user"));
            };
            tx.execute(
                "UPDATE users SET roles = ?1 WHERE id = ?2",
                params![json, id],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            serde_json::from_str(&before).map_err(backend)
        })
        .await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        let email = email.to_string();
        self.with(move |c| user_where(c, "email", &email)).await
    }

    async fn update_user(&self, user_id: &str, patch: UserPatch) -> Result<(User, User)> {
        let id = user_id.to_string();
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let Some(before) = user_where(&tx, "id", &id)? else {
                return Err(StoreError::NotFound("user"));
            };
            let after = patch.apply(&before.user);
            if let Some(email) = &after.email
                && after.email != before.user.email
                && email_taken(&tx, email, &id)?
            {
                return Err(StoreError::Conflict("email"));
            }
            let meta = serde_json::to_string(&after.app_metadata).map_err(backend)?;
            tx.execute(
                "UPDATE users SET email = ?1, email_verified = ?2, blocked = ?3, app_metadata = ?4 WHERE id = ?5",
                params![after.email, after.email_verified, after.blocked, meta, id],
            )
            .map_err(users_conflict)?;
            tx.commit().map_err(backend)?;
            Ok((before.user, after))
        })
        .await
    }

    async fn record_login(&self, user_id: &str, at: i64) -> Result<()> {
        let id = user_id.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE users SET last_login = ?1 WHERE id = ?2",
                params![at, id],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn delete_user(&self, user_id: &str) -> Result<Option<User>> {
        let id = user_id.to_string();
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let Some(before) = user_where(&tx, "id", &id)? else {
                return Ok(None);
            };
            // Its sessions' rows name it; they go with it (they were ended first).
            tx.execute(
                "DELETE FROM refresh_tokens WHERE family_id IN (SELECT family_id FROM refresh_families WHERE user_id = ?1)",
                params![id],
            )
            .map_err(backend)?;
            tx.execute("DELETE FROM refresh_families WHERE user_id = ?1", params![id])
                .map_err(backend)?;
            tx.execute("DELETE FROM users WHERE id = ?1", params![id])
                .map_err(backend)?;
            tx.commit().map_err(backend)?;
            Ok(Some(before.user))
        })
        .await
    }
}

/// The conflict a refused write to `users` means (another process may have taken the
/// name or the address between the check and the write).
fn users_conflict(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg)
            if f.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            match msg.as_deref() {
                Some(m) if m.contains("users.email") => StoreError::Conflict("email"),
                Some(m) if m.contains("users.id") => StoreError::Conflict("user id"),
                _ => StoreError::Conflict("username"),
            }
        }
        _ => backend(e),
    }
}

/// Whether `email` names an account other than `id`: as its address, or as its username key
/// (usernames made before addresses could contain '@').
fn email_taken(c: &Connection, email: &str, id: &str) -> Result<bool> {
    c.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE (email = ?1 OR username_key = ?1) AND id <> ?2)",
        params![email, id],
        |r| r.get(0),
    )
    .map_err(backend)
}

fn role_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(String, String, i64)> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
}

fn role_of((name, scopes, updated_at): (String, String, i64)) -> Result<crate::Role> {
    Ok(crate::Role {
        name,
        scopes: serde_json::from_str(&scopes).map_err(backend)?,
        updated_at,
    })
}

#[async_trait]
impl Roles for SqliteStore {
    async fn put_role(&self, role: crate::Role) -> Result<Option<crate::Role>> {
        let scopes = serde_json::to_string(&role.scopes).map_err(backend)?;
        self.with(move |c| {
            let tx = c.transaction().map_err(backend)?;
            let before = tx
                .query_row(
                    "SELECT name, scopes, updated_at FROM roles WHERE name = ?1",
                    [&role.name],
                    role_row,
                )
                .optional()
                .map_err(backend)?;
            tx.execute(
                "INSERT INTO roles (name, scopes, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET scopes = excluded.scopes, updated_at = excluded.updated_at",
                params![role.name, scopes, role.updated_at],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)?;
            before.map(role_of).transpose()
        })
        .await
    }

    async fn roles(&self) -> Result<Vec<crate::Role>> {
        self.with(|c| {
            let mut st = c
                .prepare("SELECT name, scopes, updated_at FROM roles ORDER BY name")
                .map_err(backend)?;
            let rows = st
                .query_map([], role_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(backend)?;
            rows.into_iter().map(role_of).collect()
        })
        .await
    }

    async fn delete_role(&self, name: &str) -> Result<Option<crate::Role>> {
        let name = name.to_string();
        self.with(move |c| {
            c.query_row(
                "DELETE FROM roles WHERE name = ?1 RETURNING name, scopes, updated_at",
                [&name],
                role_row,
            )
            .optional()
            .map_err(backend)?
            .map(role_of)
            .transpose()
        })
        .await
    }
}

#[async_trait]
impl Keys for SqliteStore {
    async fn replace_key_material(&self, kid: &str, from: &[u8], to: Vec<u8>) -> Result<()> {
        let (kid, from) = (kid.to_string(), from.to_vec());
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE signing_keys SET private_der = ?1 WHERE kid = ?2 AND private_der = ?3",
                    params![to, kid, from],
                )
                .map_err(backend)?;
            if n == 1 {
                Ok(())
            } else {
                Err(StoreError::Conflict("key material"))
            }
        })
        .await
    }

    async fn insert_key_once(&self, slot: &str, key: StoredKey) -> Result<bool> {
        let slot = format!("keyslot:{slot}");
        let mut key = key;
        let der = std::mem::take(&mut key.private_der);
        let (kid, alg, created_at, retired_at) = (
            key.kid.clone(),
            key.alg.clone(),
            key.created_at,
            key.retired_at,
        );
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let claimed = tx
                .execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                    params![slot, kid],
                )
                .map_err(backend)?;
            if claimed == 1 {
                tx.execute(INSERT_KEY, params![kid, alg, der, created_at, retired_at])
                    .map_err(backend)?;
            }
            tx.commit().map_err(backend)?;
            Ok(claimed == 1)
        })
        .await
    }

    async fn insert_key(&self, key: StoredKey) -> Result<()> {
        self.with(move |c| {
            let res = c.execute(
                INSERT_KEY,
                params![
                    key.kid,
                    key.alg,
                    key.private_der,
                    key.created_at,
                    key.retired_at
                ],
            );
            match res {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Conflict("key id"))
                }
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn keys(&self) -> Result<Vec<StoredKey>> {
        self.with(|c| {
            let mut stmt = c
                .prepare(
                    "SELECT kid, alg, private_der, created_at, retired_at FROM signing_keys
                     ORDER BY created_at, rowid",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(StoredKey {
                        kid: r.get(0)?,
                        alg: r.get(1)?,
                        private_der: r.get(2)?,
                        created_at: r.get(3)?,
                        retired_at: r.get(4)?,
                    })
                })
                .map_err(backend)?;
            rows.map(|r| r.map_err(backend)).collect()
        })
        .await
    }

    async fn delete_key(&self, kid: &str) -> Result<()> {
        let kid = kid.to_string();
        self.with(move |c| {
            c.execute("DELETE FROM signing_keys WHERE kid = ?1", params![kid])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn retire_key(&self, kid: &str, at: i64) -> Result<()> {
        let kid = kid.to_string();
        self.with(move |c| {
            let n = c
                .execute(
                    "UPDATE signing_keys SET retired_at = MIN(COALESCE(retired_at, ?1), ?1) WHERE kid = ?2",
                    params![at, kid],
                )
                .map_err(backend)?;
            let exists: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM signing_keys WHERE kid = ?1)",
                    params![kid],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            match (n, exists) {
                (_, false) => Err(StoreError::NotFound("key")),
                _ => Ok(()),
            }
        })
        .await
    }
}

#[async_trait]
impl Sessions for SqliteStore {
    async fn insert_refresh(&self, t: NewRefresh) -> Result<()> {
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            tx.execute(
                "INSERT INTO refresh_families (family_id, user_id, created_at) VALUES (?1, ?2, ?3)",
                params![t.family_id, t.user_id, t.created_at],
            )
            .map_err(backend)?;
            tx.execute(
                "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4)",
                params![t.token_hash, t.family_id, t.created_at, t.expires_at],
            )
            .map_err(backend)?;
            tx.commit().map_err(backend)
        })
        .await
    }

    async fn rotate_refresh(&self, req: Rotate) -> Result<RotateOutcome> {
        self.with(move |c| {
            // IMMEDIATE takes the write lock up front, so two processes cannot both read
            // "unused" and both rotate.
            let tx = c
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend)?;
            let row = tx
                .query_row(
                    "SELECT t.family_id, f.user_id, t.expires_at, t.used_at, t.rotation_nonce,
                            f.revoked_at
                     FROM refresh_tokens t JOIN refresh_families f USING (family_id)
                     WHERE t.token_hash = ?1",
                    params![req.presented_hash],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, i64>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, Option<i64>>(5)?,
                        ))
                    },
                )
                .optional()
                .map_err(backend)?;
            let Some((family_id, user_id, expires_at, used_at, nonce, revoked_at)) = row else {
                return Ok(RotateOutcome::Invalid);
            };
            if revoked_at.is_some() || expires_at <= req.now {
                return Ok(RotateOutcome::Invalid);
            }
            let outcome =
                match crate::rotation_step(used_at, nonce, &req) {
                    crate::Step::Rotate => {
                        tx.execute(
                            "UPDATE refresh_tokens SET used_at = ?1, rotation_nonce = ?2
                         WHERE token_hash = ?3",
                            params![req.now, req.nonce, req.presented_hash],
                        )
                        .map_err(backend)?;
                        tx.execute(
                        "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)
                         VALUES (?1, ?2, ?3, ?4)",
                        params![req.successor_hash, family_id, req.now, req.successor_expires_at],
                    )
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
                            "UPDATE refresh_families SET revoked_at = ?1 WHERE family_id = ?2",
                            params![req.now, family_id],
                        )
                        .map_err(backend)?;
                        RotateOutcome::Reused { family_id }
                    }
                };
            tx.commit().map_err(backend)?;
            Ok(outcome)
        })
        .await
    }

    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<()> {
        let family = family_id.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE refresh_families SET revoked_at = ?1 WHERE family_id = ?2 AND revoked_at IS NULL",
                params![now, family],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn evict_sessions(&self, user_id: &str, keep: usize, now: i64) -> Result<Vec<String>> {
        let user = user_id.to_string();
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "UPDATE refresh_families SET revoked_at = ?1 WHERE family_id IN (
                         SELECT family_id FROM refresh_families
                         WHERE user_id = ?2 AND revoked_at IS NULL
                         ORDER BY created_at DESC, rowid DESC LIMIT -1 OFFSET ?3)
                     RETURNING family_id",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![now, user, keep], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn revoke_user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<String>> {
        let user = user_id.to_string();
        self.with(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(backend)?;
            let ids = {
                let mut stmt = tx
                    .prepare(
                        "UPDATE refresh_families SET revoked_at = ?1
                         WHERE user_id = ?2 AND revoked_at IS NULL RETURNING family_id",
                    )
                    .map_err(backend)?;
                let rows = stmt
                    .query_map(params![now, user], |r| r.get::<_, String>(0))
                    .map_err(backend)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(backend)?
            };
            tx.commit().map_err(backend)?;
            Ok(ids)
        })
        .await
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<FamilyRef>> {
        let hash = token_hash.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT t.family_id, f.user_id FROM refresh_tokens t
                 JOIN refresh_families f ON f.family_id = t.family_id
                 WHERE t.token_hash = ?1",
                params![hash],
                |r| {
                    Ok(FamilyRef {
                        family_id: r.get(0)?,
                        user_id: r.get(1)?,
                    })
                },
            )
            .optional()
            .map_err(backend)
        })
        .await
    }
}

#[async_trait]
impl Revocations for SqliteStore {
    async fn revoke_token(&self, id: &str, expires_at: i64, now: i64) -> Result<()> {
        let id = id.to_string();
        self.with(move |c| {
            c.execute(
                "DELETE FROM revoked_tokens WHERE expires_at < ?1",
                params![now],
            )
            .map_err(backend)?;
            c.execute(
                "INSERT INTO revoked_tokens (token_id, expires_at, revoked_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (token_id) DO NOTHING",
                params![id, expires_at, now],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn revocations_since(
        &self,
        since: i64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Revocation>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT seq, token_id, expires_at FROM revoked_tokens
                     WHERE seq > ?1 AND expires_at >= ?2 ORDER BY seq LIMIT ?3",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![since, now, limit], |r| {
                    Ok(Revocation {
                        seq: r.get(0)?,
                        id: r.get(1)?,
                        expires_at: r.get(2)?,
                    })
                })
                .map_err(backend)?;
            rows.map(|r| r.map_err(backend)).collect()
        })
        .await
    }
}

#[async_trait]
impl Throttle for SqliteStore {
    async fn add_login_failure(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<LoginFailures> {
        let key = key.to_string();
        self.with(move |c| {
            let stale = now_ms - window_ms;
            // Housekeeping deletes other keys' counters only once they are stale for every
            // window a caller uses (at most a day): a key counted over an hour must not go
            // because another is counted over fifteen minutes.
            let gone = now_ms - window_ms.max(crate::THROTTLE_MAX_WINDOW_MS);
            // Stale counters of other keys go too: the table holds only live ones.
            c.execute(
                "DELETE FROM login_failures WHERE last_ms <= ?1 AND key <> ?2",
                params![gone, key],
            )
            .map_err(backend)?;
            let (count, last_ms) = c
                .query_row(
                    "INSERT INTO login_failures (key, failures, last_ms) VALUES (?1, 1, ?2)
                     ON CONFLICT (key) DO UPDATE SET
                       failures = CASE WHEN last_ms <= ?3 THEN 1 ELSE failures + 1 END,
                       last_ms = ?2
                     RETURNING failures, last_ms",
                    params![key, now_ms, stale],
                    |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)),
                )
                .map_err(backend)?;
            Ok(LoginFailures {
                key,
                count: u32::try_from(count).unwrap_or(u32::MAX),
                last_ms,
            })
        })
        .await
    }

    async fn login_failures(
        &self,
        keys: &[String],
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>> {
        let keys = keys.to_vec();
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT failures, last_ms FROM login_failures WHERE key = ?1 AND last_ms > ?2",
                )
                .map_err(backend)?;
            let mut out = Vec::new();
            for key in keys {
                let row = stmt
                    .query_row(params![key, now_ms - window_ms], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?))
                    })
                    .optional()
                    .map_err(backend)?;
                if let Some((count, last_ms)) = row {
                    out.push(LoginFailures {
                        key,
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                        last_ms,
                    });
                }
            }
            Ok(out)
        })
        .await
    }

    async fn login_failures_in(
        &self,
        group: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>> {
        // `group#` up to `group$` ('$' follows '#'): a range of the primary key.
        let (from, to) = crate::throttle_group_range(group)?;
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT key, failures, last_ms FROM login_failures
                     WHERE key >= ?1 AND key < ?2 AND last_ms > ?3 ORDER BY key LIMIT ?4",
                )
                .map_err(backend)?;
            let rows = stmt
                .query_map(
                    params![
                        from,
                        to,
                        now_ms - window_ms,
                        crate::THROTTLE_GROUP_MAX as i64
                    ],
                    |r| {
                        Ok(LoginFailures {
                            key: r.get(0)?,
                            count: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                            last_ms: r.get(2)?,
                        })
                    },
                )
                .map_err(backend)?;
            rows.collect::<rusqlite::Result<Vec<_>>>().map_err(backend)
        })
        .await
    }

    async fn clear_login_failures_in(&self, group: &str) -> Result<usize> {
        let (from, to) = crate::throttle_group_range(group)?;
        self.with(move |c| {
            c.execute(
                "DELETE FROM login_failures WHERE key >= ?1 AND key < ?2",
                params![from, to],
            )
            .map_err(backend)
        })
        .await
    }

    async fn clear_login_failures(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.with(move |c| {
            c.execute("DELETE FROM login_failures WHERE key = ?1", params![key])
                .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn release_login_failure(&self, key: &str) -> Result<()> {
        let key = key.to_string();
        self.with(move |c| {
            c.execute(
                "UPDATE login_failures SET failures = failures - 1 WHERE key = ?1 AND failures > 0",
                params![key],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }
}

const CLIENT_COLS: &str = "id, name, secret_hash, scopes, audiences, created_at, secret_set_at";

type ClientRow = (String, String, String, String, String, i64, i64);

fn client_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn client_of(
    (id, name, secret_hash, scopes, audiences, created_at, secret_set_at): ClientRow,
) -> Result<ClientRecord> {
    Ok(ClientRecord {
        id,
        name,
        secret_hash,
        scopes: serde_json::from_str(&scopes).map_err(backend)?,
        audiences: serde_json::from_str(&audiences).map_err(backend)?,
        created_at,
        secret_set_at,
    })
}

#[async_trait]
impl Clients for SqliteStore {
    async fn create_client(&self, c: ClientRecord) -> Result<()> {
        let scopes = serde_json::to_string(&c.scopes).map_err(backend)?;
        let audiences = serde_json::to_string(&c.audiences).map_err(backend)?;
        self.with(move |conn| {
            let res = conn.execute(
                &format!("INSERT INTO clients ({CLIENT_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
                params![
                    c.id,
                    c.name,
                    c.secret_hash,
                    scopes,
                    audiences,
                    c.created_at,
                    c.secret_set_at
                ],
            );
            match res {
                Ok(_) => Ok(()),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::Conflict("client"))
                }
                Err(e) => Err(backend(e)),
            }
        })
        .await
    }

    async fn client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let id = id.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("SELECT {CLIENT_COLS} FROM clients WHERE id = ?1"),
                [&id],
                client_row,
            )
            .optional()
            .map_err(backend)?
            .map(client_of)
            .transpose()
        })
        .await
    }

    async fn clients(&self) -> Result<Vec<ClientRecord>> {
        self.with(|c| {
            let mut st = c
                .prepare(&format!("SELECT {CLIENT_COLS} FROM clients ORDER BY id"))
                .map_err(backend)?;
            let rows = st
                .query_map([], client_row)
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(backend)?;
            rows.into_iter().map(client_of).collect()
        })
        .await
    }

    async fn set_client_secret(&self, id: &str, secret_hash: &str, at: i64) -> Result<()> {
        let (id, hash) = (id.to_string(), secret_hash.to_string());
        self.with(move |c| {
            match c
                .execute(
                    "UPDATE clients SET secret_hash = ?1, secret_set_at = ?2 WHERE id = ?3",
                    params![hash, at, id],
                )
                .map_err(backend)?
            {
                0 => Err(StoreError::NotFound("client")),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn delete_client(&self, id: &str) -> Result<Option<ClientRecord>> {
        let id = id.to_string();
        self.with(move |c| {
            c.query_row(
                &format!("DELETE FROM clients WHERE id = ?1 RETURNING {CLIENT_COLS}"),
                [&id],
                client_row,
            )
            .optional()
            .map_err(backend)?
            .map(client_of)
            .transpose()
        })
        .await
    }
}

#[async_trait]
impl Audit for SqliteStore {
    async fn append_audit(&self, e: crate::AuditEvent, keep_until: i64) -> Result<()> {
        let detail = serde_json::to_string(&e.detail).map_err(backend)?;
        self.with(move |c| {
            c.execute(
                "INSERT INTO audit_log (at_ms, kind, user_id, actor, ip, detail, keep_until)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![e.at_ms, e.kind, e.user, e.actor, e.ip, detail, keep_until],
            )
            .map_err(backend)?;
            Ok(())
        })
        .await
    }

    async fn audit_events(&self, q: crate::AuditQuery) -> Result<Vec<crate::AuditEvent>> {
        self.with(move |c| {
            let mut st = c
                .prepare(
                    "SELECT at_ms, kind, user_id, actor, ip, detail FROM audit_log
                     WHERE at_ms >= ?1 AND at_ms < ?2 AND (?3 IS NULL OR kind = ?3)
                       AND (?4 IS NULL OR user_id = ?4)
                     ORDER BY at_ms DESC, seq DESC LIMIT ?5",
                )
                .map_err(backend)?;
            let rows = st
                .query_map(
                    params![
                        q.since_ms,
                        q.before_ms.unwrap_or(i64::MAX),
                        q.kind,
                        q.user,
                        q.limit as i64
                    ],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<String>>(2)?,
                            r.get::<_, Option<String>>(3)?,
                            r.get::<_, Option<String>>(4)?,
                            r.get::<_, String>(5)?,
                        ))
                    },
                )
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(backend)?;
            rows.into_iter()
                .map(|(at_ms, kind, user, actor, ip, detail)| {
                    Ok(crate::AuditEvent {
                        at_ms,
                        kind,
                        user,
                        actor,
                        ip,
                        detail: serde_json::from_str(&detail).map_err(backend)?,
                    })
                })
                .collect()
        })
        .await
    }

    async fn prune_audit(&self, now: i64) -> Result<u64> {
        self.with(move |c| {
            // In batches: one long DELETE would hold the single writer's lock from logins.
            let mut total = 0u64;
            loop {
                let n = c
                    .execute(
                        "DELETE FROM audit_log WHERE seq IN
                           (SELECT seq FROM audit_log WHERE keep_until < ?1 LIMIT 1000)",
                        params![now],
                    )
                    .map_err(backend)?;
                total += n as u64;
                if n < 1000 {
                    return Ok(total);
                }
            }
        })
        .await
    }
}

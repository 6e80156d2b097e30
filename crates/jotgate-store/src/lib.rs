//! jotgate-store: the [`Store`] trait — everything jotgate persists — and its backends.
//!
//! One trait, one implementation per backend, chosen once at start-up; never an `if` per
//! query. The embedded SQLite backend is the default (feature `sqlite`); PostgreSQL and
//! DynamoDB backends implement the same trait and must pass the same [`contract`] suite.
//!
//! Not for: HTTP meaning, token signing or password hashing — those live in the server and
//! core crates. Values arrive here already validated (canonical usernames, hashed tokens).

pub mod contract;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(any(feature = "dynamodb", feature = "postgres"))]
pub mod feedpos;
#[cfg(feature = "postgres")]
pub mod pgtls;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sealed;
#[cfg(feature = "sqlite")]
pub mod sqlite;

use async_trait::async_trait;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule refused the write (e.g. the username is taken).
    #[error("{0} already exists")]
    Conflict(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The store's configuration is malformed or incomplete (bad URL, no region): the
    /// message names what to fix.
    #[error("{0}")]
    Config(String),
    /// The store could not be reached or set up at start: what is wrong (naming the
    /// store, never a password) and what to do.
    #[error("{what}; {todo}")]
    Setup { what: String, todo: String },
    /// The backend failed (corruption, a refused statement, a bug). The message is for logs.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The backend could not be reached or did not answer in time (a refused or dropped
    /// connection, a timeout, a full disk, throttling): the next attempt may succeed.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// An account as the API shows it: never a password hash.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: String,
    /// The spelling chosen at sign-up.
    pub username: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    /// Normalised (see `jotgate_core::email`); unique across accounts, and never an
    /// account's username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// False at sign-up and after every change of address, until verified.
    pub email_verified: bool,
    /// A blocked user cannot log in, and their sessions were ended when blocked.
    pub blocked: bool,
    /// Set by administrators only (the management API); a documented mapping puts chosen
    /// keys into tokens.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub app_metadata: serde_json::Map<String, serde_json::Value>,
    /// The last successful login.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_login: Option<i64>,
}

impl User {
    /// A new account's view, as `create_user` stores it.
    pub fn new(u: &NewUser) -> Self {
        Self {
            id: u.id.clone(),
            username: u.username_display.clone(),
            roles: u.roles.clone(),
            created_at: u.created_at,
            email: u.email.clone(),
            email_verified: false,
            blocked: false,
            app_metadata: Default::default(),
            last_login: None,
        }
    }
}

/// A change to an account's profile; `None` fields are left as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserPatch {
    /// `Some(None)` removes the address.
    pub email: Option<Option<String>>,
    pub email_verified: Option<bool>,
    pub blocked: Option<bool>,
    pub app_metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

impl UserPatch {
    /// `before` with the patch applied. A new address is unverified unless the patch says
    /// it is verified; without an address nothing is verified.
    pub fn apply(&self, before: &User) -> User {
        let mut u = before.clone();
        if let Some(email) = &self.email {
            if *email != before.email {
                u.email_verified = false;
            }
            u.email = email.clone();
        }
        if let Some(v) = self.email_verified {
            u.email_verified = v;
        }
        if u.email.is_none() {
            u.email_verified = false;
        }
        if let Some(b) = self.blocked {
            u.blocked = b;
        }
        if let Some(m) = &self.app_metadata {
            u.app_metadata = m.clone();
        }
        u
    }
}

/// An account with its credential, for the login path only.
#[derive(Debug, Clone)]
pub struct UserRecord {
    pub user: User,
    /// Canonical (NFKC + case-folded) username.
    pub username_key: String,
    pub password_hash: String,
    /// Device tokens issued before this instant (seconds) are refused: set when the
    /// user's sessions all end (log out everywhere, a password change, a block).
    pub devices_not_before: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub id: String,
    pub username_key: String,
    pub username_display: String,
    pub password_hash: String,
    pub roles: Vec<String>,
    pub created_at: i64,
    /// Normalised; unverified at creation.
    pub email: Option<String>,
}

/// A role: a named bag of scopes. A token carries its holder's role names in `roles` and
/// the union of their scopes in `scope`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Role {
    pub name: String,
    /// Sorted, without duplicates.
    pub scopes: Vec<String>,
    pub updated_at: i64,
}

/// A machine client (OAuth 2.0 client credentials, RFC 6749 §4.4) as stored: its secret
/// only as a hash.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClientRecord {
    /// `cl_…`: never a user id (RFC 9068 §5).
    pub id: String,
    pub name: String,
    /// SHA-256 of the secret (base64url): secrets are 256 random bits, not passwords.
    #[serde(skip)]
    pub secret_hash: String,
    /// What the client may ask for; sorted.
    pub scopes: Vec<String>,
    /// The audiences it may ask tokens for; the first is its default.
    pub audiences: Vec<String>,
    pub created_at: i64,
    /// When the secret last changed (creation, then each rotation).
    pub secret_set_at: i64,
}

/// One security event of the audit log.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEvent {
    /// Milliseconds since the epoch.
    pub at_ms: i64,
    /// `login.succeeded`, `login.failed`, `role.changed`, … (docs/accounts.md lists them).
    #[serde(rename = "type")]
    pub kind: String,
    /// The user (or client) it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Who did it, when not the user: a management client, `cli`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The client address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// What else the event says (never a secret).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// Which audit events to read: at or after `since_ms`, newest first, at most `limit`.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since_ms: i64,
    /// Only events older than this (for the next page), when set.
    pub before_ms: Option<i64>,
    pub kind: Option<String>,
    pub user: Option<String>,
    pub limit: usize,
}

/// A signing key as stored: private material (PKCS#8 DER) and its life cycle.
#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub private_der: Vec<u8>,
    /// When it starts signing. A key is published from the moment it is stored, so a
    /// rotation stores the next key with a `created_at` in the future.
    pub created_at: i64,
    /// When it was retired by hand; it stays published until its last token has expired.
    pub retired_at: Option<i64>,
}

/// The private material is wiped when the record goes.
impl Drop for StoredKey {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.private_der);
    }
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_der", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .finish()
    }
}

/// The first refresh token of a new login session (family).
#[derive(Debug, Clone)]
pub struct NewRefresh {
    pub token_hash: String,
    pub family_id: String,
    pub user_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// One presentation of a refresh token.
#[derive(Debug, Clone)]
pub struct Rotate {
    pub presented_hash: String,
    /// The nonce and hash of the successor to create if this is the first use.
    pub nonce: String,
    pub successor_hash: String,
    pub successor_expires_at: i64,
    pub now: i64,
    /// A repeat within this many seconds of the first use gets the same successor.
    pub grace_secs: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateOutcome {
    /// First use: the successor was stored.
    Rotated { user_id: String, family_id: String },
    /// A repeat inside the grace window: derive the successor again from this nonce.
    Repeat {
        user_id: String,
        family_id: String,
        nonce: String,
    },
    /// A spent token presented after the grace window: the whole family is now revoked.
    Reused { family_id: String },
    /// Unknown, expired, or its family is revoked.
    Invalid,
}

/// What a presentation of a live (unexpired, unrevoked) refresh token means, given its
/// first use. The one rule every backend applies inside its atomic section.
pub(crate) enum Step {
    /// First use: store the successor.
    Rotate,
    /// A repeat within the grace window: the winner's nonce.
    Repeat(String),
    /// A spent token after the grace window: revoke the family.
    Reuse,
}

#[allow(dead_code)] // with no backend feature enabled
pub(crate) fn rotation_step(used_at: Option<i64>, nonce: Option<String>, req: &Rotate) -> Step {
    match (used_at, nonce) {
        (None, _) => Step::Rotate,
        (Some(used), Some(nonce)) if req.now - used <= req.grace_secs => Step::Repeat(nonce),
        _ => Step::Reuse,
    }
}

/// The session a refresh token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyRef {
    pub family_id: String,
    pub user_id: String,
}

/// A revoked access token, kept until its own expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    /// Monotonic position in the revocation feed.
    pub seq: i64,
    pub id: String,
    pub expires_at: i64,
}

/// A failed-login counter (login throttling), shared by every instance on the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginFailures {
    pub key: String,
    /// Failures since the counter last started afresh.
    pub count: u32,
    /// The latest failure, in milliseconds since the epoch.
    pub last_ms: i64,
}

/// Everything jotgate persists. Implementations must be safe to share across tasks and,
/// for multi-instance backends, across processes: each method is atomic on its own.
///
/// The store is split by role, one trait each with its contract tests in [`contract`]:
/// [`Users`], [`Roles`], [`Clients`], [`Audit`], [`Keys`], [`Sessions`], [`Revocations`], [`Throttle`]. `Store` is all of
/// them; code that needs one role can ask for just that trait. Bring the traits into scope
/// with `use jotgate_store::prelude::*`.
#[async_trait]
pub trait Store:
    Users + Roles + Clients + Audit + Keys + Sessions + Revocations + Throttle + Send + Sync + 'static
{
    /// A short name for logs (`sqlite:///path`, never credentials).
    fn describe(&self) -> String;

    /// How long a revocation may take to appear in [`Revocations::revocations_since`] after
    /// `revoke_token` returned (zero where positions are handed out in commit order).
    fn feed_settle(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    /// A random id made the first time it is asked for with `create`, then the same for
    /// every instance on this store (and its backups): sealed signing keys are bound to it,
    /// so a key moved to another store does not open there. `None` when there is none yet
    /// and `create` is false.
    async fn store_id(&self, create: bool) -> Result<Option<String>>;

    /// A secret named `name` (256 random bits, base64url), made the first time it is asked
    /// for and then the same for every instance on this store. Device tokens are MAC'd
    /// with one, so any instance checks them in memory.
    async fn shared_secret(&self, name: &str) -> Result<String>;
}

/// Accounts.
#[async_trait]
pub trait Users: Send + Sync {
    async fn create_user(&self, user: NewUser) -> Result<User>;
    async fn user_by_key(&self, username_key: &str) -> Result<Option<UserRecord>>;
    async fn user_by_id(&self, id: &str) -> Result<Option<User>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<()>;
    /// Refuse the user's device tokens issued before `at` (seconds); a later instant
    /// already set is kept. A missing user is not an error.
    async fn revoke_devices(&self, user_id: &str, at: i64) -> Result<()>;
    /// Replace a user's roles, atomically; returns the roles replaced (so the caller sees
    /// what was lost even when two changes race). `NotFound` when there is no such user.
    async fn set_user_roles(&self, user_id: &str, roles: Vec<String>) -> Result<Vec<String>>;
    /// The account with this (normalised) email address.
    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>>;
    /// Apply `patch` atomically ([`UserPatch::apply`]); returns the user before and after.
    /// `Conflict("email")` when another account has the address or it is an account's
    /// username key; `NotFound` when there is no such user.
    async fn update_user(&self, user_id: &str, patch: UserPatch) -> Result<(User, User)>;
    /// Record a successful login at `at`.
    async fn record_login(&self, user_id: &str, at: i64) -> Result<()>;
    /// Delete an account (its address is free again); returns it. Its sessions are the
    /// caller's to end first.
    async fn delete_user(&self, user_id: &str) -> Result<Option<User>>;
}

/// Roles: named bags of scopes.
#[async_trait]
pub trait Roles: Send + Sync {
    /// Create or replace a role, atomically; returns the definition it replaced, if any.
    async fn put_role(&self, role: Role) -> Result<Option<Role>>;
    /// Every role, by name.
    async fn roles(&self) -> Result<Vec<Role>>;
    /// Delete a role, atomically; returns the definition deleted (`None`: there was none).
    async fn delete_role(&self, name: &str) -> Result<Option<Role>>;
}

/// Machine clients.
#[async_trait]
pub trait Clients: Send + Sync {
    /// `Conflict("client")` when the id exists.
    async fn create_client(&self, client: ClientRecord) -> Result<()>;
    async fn client(&self, id: &str) -> Result<Option<ClientRecord>>;
    /// Every client, by id.
    async fn clients(&self) -> Result<Vec<ClientRecord>>;
    /// Replace a client's secret hash; `NotFound` when there is no such client.
    async fn set_client_secret(&self, id: &str, secret_hash: &str, at: i64) -> Result<()>;
    /// Delete a client; returns it (`None`: there was none).
    async fn delete_client(&self, id: &str) -> Result<Option<ClientRecord>>;
}

/// The audit log: appended, read newest first, pruned by age.
#[async_trait]
pub trait Audit: Send + Sync {
    /// Append an event; `keep_until` (epoch seconds) is when it may be pruned.
    async fn append_audit(&self, event: AuditEvent, keep_until: i64) -> Result<()>;
    /// Events matching `q`, newest first.
    async fn audit_events(&self, q: AuditQuery) -> Result<Vec<AuditEvent>>;
    /// Delete events whose time to keep has passed (`now` in epoch seconds); how many
    /// went. DynamoDB's TTL does it by itself there.
    async fn prune_audit(&self, now: i64) -> Result<u64>;
}

/// Signing keys: private material and life cycle.
#[async_trait]
pub trait Keys: Send + Sync {
    async fn insert_key(&self, key: StoredKey) -> Result<()>;
    /// Insert `key` only if no key was inserted for `slot` before, atomically across
    /// instances: of instances starting together on an empty store (slot `first`), or
    /// replacing a key that stopped signing (slot `after:<kid>`), exactly one inserts.
    /// `false` when the slot was taken (the key is not inserted).
    async fn insert_key_once(&self, slot: &str, key: StoredKey) -> Result<bool>;
    /// All keys, in order of activation (`created_at`), oldest first.
    async fn keys(&self) -> Result<Vec<StoredKey>>;
    /// Replace a key's stored material, if it is still `from` (compare and swap: two
    /// instances sealing at once cannot lose a key). `Conflict` when it changed meanwhile.
    async fn replace_key_material(&self, kid: &str, from: &[u8], to: Vec<u8>) -> Result<()>;
    /// Stop signing with `kid` from `at` on (it stays published until its tokens expire).
    /// A key retired already keeps the earlier of the two instants: a retirement is never
    /// undone or postponed.
    async fn retire_key(&self, kid: &str, at: i64) -> Result<()>;
    /// Delete a key, private material and all (a key no token can need any more). Deleting
    /// a key that is gone already is not an error.
    async fn delete_key(&self, kid: &str) -> Result<()>;
}

/// Login sessions: refresh-token families and their rotation.
#[async_trait]
pub trait Sessions: Send + Sync {
    async fn insert_refresh(&self, token: NewRefresh) -> Result<()>;
    /// Rotate atomically: of concurrent presentations of one token, exactly one rotates.
    async fn rotate_refresh(&self, req: Rotate) -> Result<RotateOutcome>;
    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<()>;
    /// Revoke every live session (refresh family) of a user; returns their ids.
    async fn revoke_user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<String>>;
    /// End the oldest live sessions of `user_id` beyond the newest `keep`; returns their
    /// family ids.
    async fn evict_sessions(&self, user_id: &str, keep: usize, now: i64) -> Result<Vec<String>>;
    /// The session (refresh family) a refresh token belongs to, and its user.
    async fn family_of(&self, token_hash: &str) -> Result<Option<FamilyRef>>;
}

/// The revocation feed that edge verifiers follow.
#[async_trait]
pub trait Revocations: Send + Sync {
    /// Deny access tokens by id until `expires_at`. Idempotent. Ids are namespaced:
    /// `jti:<jti>` denies one token, `sid:<session>` every token of a login session, `usr:<sub>:<instant>` every token of
    /// a user issued before the instant.
    async fn revoke_token(&self, id: &str, expires_at: i64, now: i64) -> Result<()>;
    /// Unexpired revocations with `seq > since`, in feed order, at most `limit` of them
    /// (the feed is paged: a follower asks again from the last `seq`). An entry appears at
    /// most [`Store::feed_settle`] after `revoke_token` returned, and never at a position
    /// below one already returned.
    async fn revocations_since(
        &self,
        since: i64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Revocation>>;
}

/// The longest counting window a [`Throttle`] caller may use: counters are kept at least
/// this long after their last failure, whatever window another key is counted over.
pub const THROTTLE_MAX_WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Separates a throttle key's group from its member (`pair:<account>#<address>`): the
/// counters of one group are listed together by [`Throttle::login_failures_in`].
pub const THROTTLE_GROUP_SEP: char = '#';

/// The most counters [`Throttle::login_failures_in`] returns.
pub const THROTTLE_GROUP_MAX: usize = 1000;

/// Failed-login counters (login throttling), shared by every instance on the store.
#[async_trait]
pub trait Throttle: Send + Sync {
    /// Count one failed login against `key` at `now_ms`, atomically across instances. A
    /// counter whose last failure is `window_ms` or more in the past starts afresh at 1.
    /// Keys may be counted over different windows (at most [`THROTTLE_MAX_WINDOW_MS`]);
    /// one key's window never drops another's counter.
    async fn add_login_failure(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<LoginFailures>;
    /// The live counters among `keys` (missing and stale ones are left out).
    async fn login_failures(
        &self,
        keys: &[String],
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>>;
    /// The live counters of `group` — the keys `group#member`, for any member
    /// ([`THROTTLE_GROUP_SEP`]) — in key order, at most [`THROTTLE_GROUP_MAX`]. `group`
    /// holds no separator. (An operator lists the addresses an account is blocked from.)
    async fn login_failures_in(
        &self,
        group: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>>;
    /// Forget every counter of `group` (all its members, however many), returning how many
    /// went. (An operator lifts an account's blocks from every address.)
    async fn clear_login_failures_in(&self, group: &str) -> Result<usize>;
    /// Forget `key`'s failures (a successful login clears its username's count).
    async fn clear_login_failures(&self, key: &str) -> Result<()>;
    /// Take back one count of `key` (an attempt counted before it was evaluated that
    /// turned out to be a success, or was refused); never below zero.
    async fn release_login_failure(&self, key: &str) -> Result<()>;
}

/// The store's traits, for `use jotgate_store::prelude::*`: a method of a role trait is
/// callable on a `dyn Store` only with its trait in scope.
pub mod prelude {
    pub use crate::{Audit, Clients, Keys, Revocations, Roles, Sessions, Store, Throttle, Users};
}

/// The keys of a throttle group, as a half-open range: `group#` up to `group$` ('$' is
/// the character after the separator).
pub(crate) fn throttle_group_range(group: &str) -> Result<(String, String)> {
    if group.is_empty() || group.contains(THROTTLE_GROUP_SEP) {
        return Err(StoreError::Backend(format!(
            "a throttle group is not empty and holds no '{THROTTLE_GROUP_SEP}'"
        )));
    }
    Ok((format!("{group}{THROTTLE_GROUP_SEP}"), format!("{group}$")))
}

/// Whether a database holds `schema`'s tables, given the tables `present`: `false` for
/// none (a fresh store), `true` for all, an error naming the missing ones for some.
pub(crate) fn schema_state(schema: &str, present: &[String], at: &str) -> Result<bool> {
    // Tables a later version added: a store made before them lacks them until `serve`
    // starts on it (`CREATE TABLE IF NOT EXISTS`), and is whole without them.
    let expected: Vec<&str> = schema_tables(schema)
        .into_iter()
        .filter(|t| !ADDED_LATER.contains(t))
        .collect();
    let missing: Vec<&str> = expected
        .iter()
        .filter(|t| !present.iter().any(|p| p == *t))
        .copied()
        .collect();
    if missing.len() == expected.len() {
        return Ok(false);
    }
    if !missing.is_empty() {
        return Err(StoreError::Config(format!(
            "{at} holds only part of jotgate's schema (missing tables: {}); start `jotgate serve` once to complete it",
            missing.join(", ")
        )));
    }
    Ok(true)
}

/// Tables added after the first release, in the order they came.
const ADDED_LATER: &[&str] = &["roles", "clients", "audit_log"];

/// The table names of a schema's `CREATE TABLE IF NOT EXISTS name` statements.
pub(crate) fn schema_tables(schema: &str) -> Vec<&str> {
    schema
        .split("CREATE TABLE IF NOT EXISTS ")
        .skip(1)
        .filter_map(|rest| rest.split([' ', '(', '\n']).next())
        .collect()
}

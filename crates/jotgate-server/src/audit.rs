//! The audit log: every security event appended in the store (queryable with
//! `GET /api/v1/audit` and `jotgate audit tail`, kept `audit_retention_days`) and written as
//! one structured log line (target `audit`: a JSON line with `--log-format json`, which
//! CloudWatch indexes). An event never holds a secret, and never what someone typed as a
//! username that names no account (a password typed in the wrong field).

use jotgate_store::{AuditEvent, Store};
use serde_json::{Map, Value};

/// Event types (docs/accounts.md lists what each carries).
pub mod kind {
    pub const LOGIN_SUCCEEDED: &str = "login.succeeded";
    pub const LOGIN_FAILED: &str = "login.failed";
    pub const LOGIN_THROTTLED: &str = "login.throttled";
    pub const LOGIN_BLOCKED: &str = "login.blocked";
    /// An account reached its per-hour ceiling of evaluated guesses from all addresses.
    pub const LOGIN_CEILING: &str = "login.ceiling_reached";
    /// An operator lifted the login limits' blocks on a user.
    pub const LOGIN_UNBLOCKED: &str = "login.unblocked";
    pub const SIGNUP: &str = "signup";
    pub const LOGOUT: &str = "logout";
    pub const LOGOUT_ALL: &str = "logout.all";
    pub const REFRESH_REUSE: &str = "refresh.reuse_detected";
    pub const USER_CREATED: &str = "user.created";
    pub const USER_UPDATED: &str = "user.updated";
    pub const USER_DELETED: &str = "user.deleted";
    pub const USER_ROLES: &str = "user.roles_changed";
    pub const USER_SESSIONS_REVOKED: &str = "user.sessions_revoked";
    pub const PASSWORD_CHANGED: &str = "user.password_changed";
    pub const ROLE_CHANGED: &str = "role.changed";
    pub const ROLE_DELETED: &str = "role.deleted";
    pub const CLIENT_CREATED: &str = "client.created";
    pub const CLIENT_SECRET_ROTATED: &str = "client.secret_rotated";
    pub const CLIENT_DELETED: &str = "client.deleted";
    pub const CLIENT_TOKEN: &str = "client.token_issued";
    pub const KEY_ROTATED: &str = "key.rotated";
    pub const KEY_RETIRED: &str = "key.retired";
    pub const KEY_REVOKED: &str = "key.revoked";
    pub const KEY_IMPORTED: &str = "key.imported";
}

/// Default days an event is kept.
pub const DEFAULT_RETENTION_DAYS: i64 = 90;

/// An event about to be recorded.
pub struct Event<'a> {
    pub kind: &'a str,
    pub user: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub ip: Option<String>,
    pub detail: Map<String, Value>,
}

impl<'a> Event<'a> {
    pub fn new(kind: &'a str) -> Self {
        Self {
            kind,
            user: None,
            actor: None,
            ip: None,
            detail: Map::new(),
        }
    }

    pub fn user(mut self, u: &'a str) -> Self {
        self.user = Some(u);
        self
    }

    pub fn actor(mut self, a: &'a str) -> Self {
        self.actor = Some(a);
        self
    }

    pub fn ip(mut self, ip: Option<std::net::IpAddr>) -> Self {
        self.ip = ip.map(|i| i.to_string());
        self
    }

    pub fn with(mut self, k: &str, v: impl Into<Value>) -> Self {
        self.detail.insert(k.into(), v.into());
        self
    }
}

/// Whether `key` has not been seen in the last minute (and remember it): for events a
/// flood would repeat. Bounded: forgets everything past 10,000 keys.
pub fn first_in_minute(key: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashMap<String, i64>>> = Mutex::new(None);
    let now = crate::now();
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    let map = seen.get_or_insert_with(HashMap::new);
    if map.len() > 10_000 {
        map.retain(|_, t| now - *t < 60);
        if map.len() > 10_000 {
            map.clear();
        }
    }
    match map.get(key) {
        Some(t) if now - *t < 60 => false,
        _ => {
            map.insert(key.to_string(), now);
            true
        }
    }
}

/// Log the event and append it to the store, kept `retention_days`. A store failure is
/// logged, never the request's.
pub async fn record(store: &dyn Store, retention_days: i64, e: Event<'_>) {
    let at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let detail = Value::Object(e.detail.clone());
    tracing::info!(
        target: "audit",
        event = e.kind,
        user = e.user.unwrap_or(""),
        actor = e.actor.unwrap_or(""),
        ip = e.ip.as_deref().unwrap_or(""),
        detail = %detail,
        "audit"
    );
    let event = AuditEvent {
        at_ms,
        kind: e.kind.to_string(),
        user: e.user.map(str::to_string),
        actor: e.actor.map(str::to_string),
        ip: e.ip,
        detail: e.detail,
    };
    let keep_until = at_ms / 1000 + retention_days.max(1) * 86_400;
    if let Err(err) = store.append_audit(event, keep_until).await {
        tracing::warn!(error = %err, "could not append an audit event");
    }
}

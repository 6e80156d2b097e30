//! The in-memory denylist of revoked access-token ids, kept current from the store's
//! revocation feed so the request path never reads the store.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use jotgate_core::AccessClaims;
use jotgate_store::Store;

/// The denylist id of one access token.
pub fn token_id(jti: &str) -> String {
    format!("jti:{jti}")
}

/// The denylist id of a login session (every access token carrying that `sid`).
pub fn session_id(sid: &str) -> String {
    format!("sid:{sid}")
}

/// True when `claims` are denied by any of `revoked` (token or session id).
pub fn denies(claims: &AccessClaims, mut revoked: impl FnMut(&str) -> bool) -> bool {
    revoked(&token_id(&claims.jti))
        || claims
            .sid
            .as_deref()
            .is_some_and(|s| revoked(&session_id(s)))
}

#[derive(Default)]
pub struct Denylist {
    /// `jti:<id>` or `sid:<session>` → when the entry becomes useless (the tokens expire).
    entries: RwLock<HashMap<String, i64>>,
    /// Last feed position applied.
    cursor: AtomicI64,
}

impl Denylist {
    pub fn contains(&self, id: &str) -> bool {
        self.entries
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// Record a revocation made by this instance, effective at once.
    pub fn insert(&self, id: String, expires_at: i64) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, expires_at);
    }

    /// Apply the store's feed since the last sync and drop expired entries.
    pub async fn sync(
        &self,
        store: &dyn Store,
        now: i64,
    ) -> Result<usize, jotgate_store::StoreError> {
        let since = self.cursor.load(Ordering::Acquire);
        let feed = store.revocations_since(since, now).await?;
        let n = feed.len();
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, exp| *exp >= now);
        let mut cursor = since;
        for r in feed {
            cursor = cursor.max(r.seq);
            entries.insert(r.id, r.expires_at);
        }
        self.cursor.store(cursor, Ordering::Release);
        Ok(n)
    }
}

//! The in-memory denylist of revoked access-token ids, kept current from the store's
//! revocation feed so the request path never reads the store.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use jotgate_store::Store;

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

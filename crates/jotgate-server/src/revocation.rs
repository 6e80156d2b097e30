//! The server's view of revoked access tokens: the revocations of its own [`Verifier`]
//! (tokens, sessions, per-user "not before", retired keys), kept current from the store so
//! the request path never reads it, plus a wake-up for long-polling feed readers.

use std::sync::Arc;

use jotgate_core::TokenPolicy;
use jotgate_store::{Store, StoreError};
use jotgate_verify::{FeedPage, Revoked, Verifier};
use tokio::sync::Notify;

pub struct Denylist {
    verifier: Arc<Verifier>,
    issuer: String,
    changed: Notify,
}

impl Denylist {
    /// The revocations of `issuer` in `verifier` (the server's own).
    pub fn new(verifier: Arc<Verifier>, issuer: impl Into<String>) -> Self {
        Self {
            verifier,
            issuer: issuer.into(),
            changed: Notify::new(),
        }
    }

    /// Record revocations this instance made, effective at once.
    pub fn record(&self, r: impl IntoIterator<Item = Revoked>) {
        self.verifier
            .apply_revocations(&self.issuer, r.into_iter().collect());
        self.changed.notify_waiters();
    }

    /// Wakes when this instance records or syncs a revocation.
    pub fn changed(&self) -> &Notify {
        &self.changed
    }

    /// Apply the store's revocations since the last sync, page after page until caught
    /// up, and drop expired entries. Says how many arrived and whether a key was among
    /// them (retired or revoked elsewhere: the key ring must be re-read).
    pub async fn sync(&self, store: &dyn Store, now: i64) -> Result<Synced, StoreError> {
        let Some(revs) = self.verifier.revocations(&self.issuer) else {
            return Ok(Synced::default());
        };
        let mut n = 0;
        let mut keys = false;
        loop {
            let page = read_feed(store, revs.cursor(), now).await?;
            n += page.revocations.len();
            keys |= page
                .revocations
                .iter()
                .any(|r| matches!(r, Revoked::Key { .. }));
            // Also drops expired entries, when nothing new came.
            self.verifier
                .apply_revocations(&self.issuer, page.revocations);
            revs.set_cursor(page.cursor);
            if !page.more {
                break;
            }
        }
        if n > 0 {
            self.changed.notify_waiters();
        }
        Ok(Synced { entries: n, keys })
    }
}

/// What one [`Denylist::sync`] brought.
#[derive(Debug, Clone, Copy, Default)]
pub struct Synced {
    pub entries: usize,
    pub keys: bool,
}

/// When every access token issued up to `t` under `policy` has expired.
pub fn outlived(policy: &TokenPolicy, t: i64) -> i64 {
    t + policy.access_ttl + policy.leeway
}

/// What [`revoke_user`] did.
pub struct UserRevoked {
    /// The entries stored, for the caller to apply: a session entry for each of the first
    /// [`SESSION_ENTRIES`] sessions ended, and the per-user "not before".
    pub entries: Vec<Revoked>,
    /// Sessions ended now (others may have ended before).
    pub sessions: usize,
}

/// Sessions of a "log out everywhere" that also get an entry of their own: they cover a
/// token such a session was issued on an instance whose clock runs ahead, which the
/// per-user "not before" would let pass. Past this many, the "not before" alone.
pub const SESSION_ENTRIES: usize = 32;

/// [`revoke_user`], and the user's device tokens with it: what "log out everywhere", a
/// password change, a block and a deletion do (a role change ends sessions only).
pub async fn revoke_user_and_devices(
    store: &dyn Store,
    policy: &TokenPolicy,
    user_id: &str,
    t: i64,
) -> Result<UserRevoked, StoreError> {
    let done = revoke_user(store, policy, user_id, t).await?;
    store
        .revoke_devices(user_id, crate::now().max(t) + 1)
        .await?;
    Ok(done)
}

/// End every session of `user_id` and deny every access token issued to it until now:
/// first the sessions (idempotent, so a retry after a failure resumes, while the caller's
/// access token still works), then one "not before" for all the access tokens, taken after
/// the sessions ended — whatever the number of sessions.
pub async fn revoke_user(
    store: &dyn Store,
    policy: &TokenPolicy,
    user_id: &str,
    t: i64,
) -> Result<UserRevoked, StoreError> {
    let ended = store.revoke_user_sessions(user_id, t).await?;
    let mut entries = Vec::new();
    for sid in ended.iter().take(SESSION_ENTRIES) {
        let e = Revoked::Session {
            sid: sid.clone(),
            expires_at: outlived(policy, crate::now()),
        };
        store.revoke_token(&e.store_id(), e.expires_at(), t).await?;
        entries.push(e);
    }
    // After the sessions ended: a refresh that rotated before its session ended was issued
    // at or before this second. `not before` refuses tokens issued strictly before it.
    let not_before = crate::now().max(t) + 1;
    let entry = Revoked::User {
        sub: user_id.into(),
        not_before,
        expires_at: outlived(policy, not_before),
    };
    store
        .revoke_token(&entry.store_id(), entry.expires_at(), t)
        .await?;
    entries.push(entry);
    Ok(UserRevoked {
        entries,
        sessions: ended.len(),
    })
}

/// Most revocations in one page of the feed.
pub const FEED_PAGE: usize = 1000;

/// One page of unexpired revocations after `since`, parsed, with the cursor to continue
/// from and whether more follow.
pub async fn read_feed(store: &dyn Store, since: i64, now: i64) -> Result<FeedPage, StoreError> {
    let mut rows = store.revocations_since(since, now, FEED_PAGE + 1).await?;
    let more = rows.len() > FEED_PAGE;
    rows.truncate(FEED_PAGE);
    let cursor = rows.iter().map(|r| r.seq).max().unwrap_or(since).max(since);
    let entries = rows
        .into_iter()
        .filter_map(|r| {
            let parsed = Revoked::from_store_id(&r.id, r.expires_at);
            if parsed.is_none() {
                tracing::warn!(id = %r.id, "ignoring a revocation of unknown kind");
            }
            parsed
        })
        .collect();
    Ok(FeedPage {
        cursor,
        revocations: entries,
        more,
    })
}

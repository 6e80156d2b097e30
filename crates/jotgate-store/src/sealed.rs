//! Signing keys encrypted at rest: a [`Store`] decorator that seals private key material
//! with the master key on the way in and opens it on the way out, whatever the backend.
//! Everything else passes through unchanged.
//!
//! Without a master key, a store holding sealed keys is refused with a clear error (never
//! read as garbage). With one, a key stored unencrypted is refused too (a planted or
//! leftover plain key must not sign): `jotgate keys seal` encrypts such keys in place.
//!
//! A sealed key records its own retirement (authenticated with the key): retiring re-seals
//! the key first, then marks the row, and a key reads as retired when either says so — so
//! clearing `retired_at` in the database does not switch a retired key back on.

use crate::prelude::*;
use std::sync::Arc;

use async_trait::async_trait;
use jotgate_core::seal::{Life, MasterKeys, is_bound_to_store, is_sealed};
use zeroize::{Zeroize, Zeroizing};

use crate::{
    LoginFailures, NewRefresh, NewUser, Result, Revocation, Rotate, RotateOutcome, Store,
    StoreError, StoredKey, User, UserRecord,
};

/// A row's life cycle, as a seal records it.
fn life(k: &StoredKey) -> Life {
    Life {
        created_at: k.created_at,
        retired_at: k.retired_at,
    }
}

/// The earlier of two optional instants (`None` when both are).
fn earliest(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

pub struct SealedKeys {
    inner: Arc<dyn Store>,
    master: Option<MasterKeys>,
    /// The inner store's id, which every blob is bound to (read once).
    store_id: tokio::sync::OnceCell<String>,
}

impl SealedKeys {
    pub fn new(inner: Arc<dyn Store>, master: Option<MasterKeys>) -> Self {
        Self {
            inner,
            master,
            store_id: tokio::sync::OnceCell::new(),
        }
    }

    /// The deployment every blob of this store is sealed for: the store's id. Made on first
    /// use — but never for a store that holds keys bound to an id already: that id was lost
    /// (a restore or copy without the `meta` row), and a new one would open none of them.
    async fn deployment(&self) -> Result<&str> {
        self.store_id
            .get_or_try_init(|| async {
                if let Some(id) = self.inner.store_id(false).await? {
                    return Ok(id);
                }
                if self
                    .inner
                    .keys()
                    .await?
                    .iter()
                    .any(|k| is_bound_to_store(&k.private_der))
                {
                    return Err(StoreError::Config(
                        "the store's id is missing (the meta item store_id), but its signing keys are sealed to one: restore it from a backup of this store (jotgate keys list shows it)".into(),
                    ));
                }
                let id = self.inner.store_id(true).await?.ok_or_else(|| {
                    StoreError::Backend("the store did not keep its new id".into())
                })?;
                tracing::info!(store_id = %id, "store id created; sealed signing keys are bound to it");
                Ok(id)
            })
            .await
            .map(String::as_str)
    }

    /// `key` as it is to be stored: sealed when there is a master key; refused without one
    /// on a store whose keys are sealed.
    async fn sealed_for_insert(&self, mut key: StoredKey) -> Result<StoredKey> {
        // Without the master key, a key added to a store whose keys are encrypted would be
        // the one unencrypted key, refused by every server that has the master key.
        if self.master.is_none()
            && self
                .inner
                .keys()
                .await?
                .iter()
                .any(|k| is_sealed(&k.private_der))
        {
            return Err(StoreError::Config(
                "the stored signing keys are encrypted at rest: set the master key (JOTGATE_MASTER_KEY) to add one".into(),
            ));
        }
        if let Some(m) = &self.master {
            let sealed = m
                .seal(
                    self.deployment().await?,
                    &key.kid,
                    &key.alg,
                    life(&key),
                    &key.private_der,
                )
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            // The plaintext goes, wiped.
            key.private_der.zeroize();
            key.private_der = sealed;
        }
        Ok(key)
    }

    /// The store's id, as keys sealed here are bound to it (for `jotgate keys list`).
    pub async fn id(&self) -> Result<Option<String>> {
        self.inner.store_id(false).await
    }

    /// Encrypt, in place, every key stored unencrypted. Returns their kids.
    pub async fn seal_plain_keys(&self) -> Result<Vec<String>> {
        let Some(m) = &self.master else {
            return Err(StoreError::Config(
                "no master key is configured (JOTGATE_MASTER_KEY): nothing to seal with".into(),
            ));
        };
        let d = self.deployment().await?;
        let mut sealed = Vec::new();
        for k in self.inner.keys().await? {
            if is_sealed(&k.private_der) {
                continue;
            }
            let blob = m
                .seal(d, &k.kid, &k.alg, life(&k), &k.private_der)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            self.inner
                .replace_key_material(&k.kid, &k.private_der, blob)
                .await?;
            sealed.push(k.kid.clone());
        }
        Ok(sealed)
    }
}

#[async_trait]
impl Store for SealedKeys {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn feed_settle(&self) -> std::time::Duration {
        self.inner.feed_settle()
    }

    async fn store_id(&self, create: bool) -> Result<Option<String>> {
        self.inner.store_id(create).await
    }

    /// With a master key, the stored secret is mixed with it (HMAC): reading the store
    /// alone does not give the secret (device tokens cannot be minted from a copy of the
    /// database), and a new master key gives a new secret.
    async fn shared_secret(&self, name: &str) -> Result<String> {
        let stored = self.inner.shared_secret(name).await?;
        Ok(match &self.master {
            None => stored,
            Some(m) => m
                .current
                .derive(&format!("jotgate:shared-secret:{name}"), stored.as_bytes()),
        })
    }
}

#[async_trait]
impl Users for SealedKeys {
    async fn create_user(&self, user: NewUser) -> Result<User> {
        self.inner.create_user(user).await
    }

    async fn user_by_key(&self, username_key: &str) -> Result<Option<UserRecord>> {
        self.inner.user_by_key(username_key).await
    }

    async fn user_by_id(&self, id: &str) -> Result<Option<User>> {
        self.inner.user_by_id(id).await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        self.inner.list_users().await
    }

    async fn set_password_hash(&self, user_id: &str, password_hash: &str) -> Result<()> {
        self.inner.set_password_hash(user_id, password_hash).await
    }

    async fn revoke_devices(&self, user_id: &str, at: i64) -> Result<()> {
        self.inner.revoke_devices(user_id, at).await
    }

    async fn set_user_roles(&self, user_id: &str, roles: Vec<String>) -> Result<Vec<String>> {
        self.inner.set_user_roles(user_id, roles).await
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        self.inner.user_by_email(email).await
    }

    async fn update_user(&self, user_id: &str, patch: crate::UserPatch) -> Result<(User, User)> {
        self.inner.update_user(user_id, patch).await
    }

    async fn record_login(&self, user_id: &str, at: i64) -> Result<()> {
        self.inner.record_login(user_id, at).await
    }

    async fn delete_user(&self, user_id: &str) -> Result<Option<User>> {
        self.inner.delete_user(user_id).await
    }
}

#[async_trait]
impl Roles for SealedKeys {
    async fn put_role(&self, role: crate::Role) -> Result<Option<crate::Role>> {
        self.inner.put_role(role).await
    }

    async fn roles(&self) -> Result<Vec<crate::Role>> {
        self.inner.roles().await
    }

    async fn delete_role(&self, name: &str) -> Result<Option<crate::Role>> {
        self.inner.delete_role(name).await
    }
}

#[async_trait]
impl Clients for SealedKeys {
    async fn create_client(&self, c: crate::ClientRecord) -> Result<()> {
        self.inner.create_client(c).await
    }

    async fn client(&self, id: &str) -> Result<Option<crate::ClientRecord>> {
        self.inner.client(id).await
    }

    async fn clients(&self) -> Result<Vec<crate::ClientRecord>> {
        self.inner.clients().await
    }

    async fn set_client_secret(&self, id: &str, secret_hash: &str, at: i64) -> Result<()> {
        self.inner.set_client_secret(id, secret_hash, at).await
    }

    async fn delete_client(&self, id: &str) -> Result<Option<crate::ClientRecord>> {
        self.inner.delete_client(id).await
    }
}

#[async_trait]
impl Audit for SealedKeys {
    async fn append_audit(&self, e: crate::AuditEvent, keep_until: i64) -> Result<()> {
        self.inner.append_audit(e, keep_until).await
    }

    async fn audit_events(&self, q: crate::AuditQuery) -> Result<Vec<crate::AuditEvent>> {
        self.inner.audit_events(q).await
    }

    async fn prune_audit(&self, now: i64) -> Result<u64> {
        self.inner.prune_audit(now).await
    }
}

#[async_trait]
impl Keys for SealedKeys {
    async fn insert_key_once(&self, slot: &str, key: StoredKey) -> Result<bool> {
        let key = self.sealed_for_insert(key).await?;
        self.inner.insert_key_once(slot, key).await
    }

    async fn insert_key(&self, key: StoredKey) -> Result<()> {
        let key = self.sealed_for_insert(key).await?;
        self.inner.insert_key(key).await
    }

    async fn keys(&self) -> Result<Vec<StoredKey>> {
        let mut keys = self.inner.keys().await?;
        for k in &mut keys {
            if !is_sealed(&k.private_der) {
                if self.master.is_some() {
                    return Err(StoreError::Config(format!(
                        "signing key {} is stored unencrypted although a master key is configured: run `jotgate keys seal` to encrypt it",
                        k.kid
                    )));
                }
                continue;
            }
            let Some(m) = &self.master else {
                return Err(StoreError::Backend(format!(
                    "signing key {} is encrypted at rest: set the master key (JOTGATE_MASTER_KEY)",
                    k.kid
                )));
            };
            let d = self.deployment().await?;
            let opened = m
                .open(d, &k.kid, &k.alg, &k.private_der)
                .map_err(|e| StoreError::Backend(format!("{e} (JOTGATE_MASTER_KEY)")))?;
            // The sealed life cycle is the truth: its activation, and its retirement unless
            // the row records an earlier one (a key retired before format 3).
            let merged = match opened.life {
                Some(sealed) => Life {
                    created_at: sealed.created_at,
                    retired_at: earliest(sealed.retired_at, k.retired_at),
                },
                None => life(k),
            };
            if opened
                .life
                .is_some_and(|l| l.created_at != k.created_at || l.retired_at != k.retired_at)
            {
                tracing::warn!(kid = %k.kid, "the stored row of a signing key does not match the life cycle its sealed key records: the sealed one holds");
            }
            k.created_at = merged.created_at;
            k.retired_at = merged.retired_at;
            if opened.reseal || opened.life != Some(merged) {
                // Sealed with an old master key or an old format, or retired in the row only:
                // seal it again with the current master key, recording the life cycle.
                match m.seal(d, &k.kid, &k.alg, merged, &opened.plaintext) {
                    Ok(blob) => match self
                        .inner
                        .replace_key_material(&k.kid, &k.private_der, blob)
                        .await
                    {
                        Ok(()) => {
                            tracing::info!(kid = %k.kid, "signing key re-sealed with the current master key")
                        }
                        Err(StoreError::Conflict(_)) => {}
                        Err(e) => {
                            tracing::warn!(kid = %k.kid, error = %e, "could not re-seal a signing key")
                        }
                    },
                    Err(e) => {
                        tracing::warn!(kid = %k.kid, error = %e, "could not re-seal a signing key")
                    }
                }
            }
            k.private_der = opened.plaintext.to_vec();
        }
        // Oldest first by the activation the seals record (a row's may have been moved);
        // the sort is stable, so the store's tie-break order stays.
        keys.sort_by_key(|k| k.created_at);
        Ok(keys)
    }

    /// `from` and `to` are plaintext, as everywhere above this layer.
    async fn replace_key_material(&self, kid: &str, from: &[u8], to: Vec<u8>) -> Result<()> {
        let Some(m) = &self.master else {
            return self.inner.replace_key_material(kid, from, to).await;
        };
        let stored = self
            .inner
            .keys()
            .await?
            .into_iter()
            .find(|k| k.kid == kid)
            .ok_or(StoreError::NotFound("key"))?;
        let to = Zeroizing::new(to);
        let d = self.deployment().await?;
        let (current, sealed_life) = if is_sealed(&stored.private_der) {
            let o = m
                .open(d, kid, &stored.alg, &stored.private_der)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            (o.plaintext, o.life)
        } else {
            (Zeroizing::new(stored.private_der.clone()), None)
        };
        if current.as_slice() != from {
            return Err(StoreError::Conflict("key material"));
        }
        let life = match sealed_life {
            Some(l) => Life {
                created_at: l.created_at,
                retired_at: earliest(l.retired_at, stored.retired_at),
            },
            None => life(&stored),
        };
        let blob = m
            .seal(d, kid, &stored.alg, life, &to)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.inner
            .replace_key_material(kid, &stored.private_der, blob)
            .await
    }

    async fn delete_key(&self, kid: &str) -> Result<()> {
        self.inner.delete_key(kid).await
    }

    async fn retire_key(&self, kid: &str, at: i64) -> Result<()> {
        let Some(m) = &self.master else {
            return self.inner.retire_key(kid, at).await;
        };
        // The sealed key first: once it says "retired", no edit of the row undoes it (a
        // crash before the row is marked leaves a key that reads as retired).
        for _ in 0..5 {
            let Some(stored) = self.inner.keys().await?.into_iter().find(|k| k.kid == kid) else {
                return Err(StoreError::NotFound("key"));
            };
            if !is_sealed(&stored.private_der) {
                return Err(StoreError::Config(format!(
                    "signing key {kid} is stored unencrypted although a master key is configured: run `jotgate keys seal` to encrypt it"
                )));
            }
            let d = self.deployment().await?;
            let opened = m
                .open(d, kid, &stored.alg, &stored.private_der)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            let sealed = opened.life.unwrap_or(life(&stored));
            let retired = Life {
                created_at: sealed.created_at,
                retired_at: earliest(earliest(sealed.retired_at, stored.retired_at), Some(at)),
            };
            let blob = m
                .seal(d, kid, &stored.alg, retired, &opened.plaintext)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            match self
                .inner
                .replace_key_material(kid, &stored.private_der, blob)
                .await
            {
                // Re-sealed by another instance meanwhile: read it again.
                Err(StoreError::Conflict(_)) => continue,
                r => r?,
            }
            return self.inner.retire_key(kid, at).await;
        }
        Err(StoreError::Conflict("key material"))
    }
}

#[async_trait]
impl Sessions for SealedKeys {
    async fn insert_refresh(&self, token: NewRefresh) -> Result<()> {
        self.inner.insert_refresh(token).await
    }

    async fn rotate_refresh(&self, req: Rotate) -> Result<RotateOutcome> {
        self.inner.rotate_refresh(req).await
    }

    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<()> {
        self.inner.revoke_family(family_id, now).await
    }

    async fn evict_sessions(&self, user_id: &str, keep: usize, now: i64) -> Result<Vec<String>> {
        self.inner.evict_sessions(user_id, keep, now).await
    }

    async fn revoke_user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<String>> {
        self.inner.revoke_user_sessions(user_id, now).await
    }

    async fn family_of(&self, token_hash: &str) -> Result<Option<crate::FamilyRef>> {
        self.inner.family_of(token_hash).await
    }
}

#[async_trait]
impl Revocations for SealedKeys {
    async fn revoke_token(&self, id: &str, expires_at: i64, now: i64) -> Result<()> {
        self.inner.revoke_token(id, expires_at, now).await
    }

    async fn revocations_since(
        &self,
        since: i64,
        now: i64,
        limit: usize,
    ) -> Result<Vec<Revocation>> {
        self.inner.revocations_since(since, now, limit).await
    }
}

#[async_trait]
impl Throttle for SealedKeys {
    async fn add_login_failure(
        &self,
        key: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<LoginFailures> {
        self.inner.add_login_failure(key, now_ms, window_ms).await
    }

    async fn login_failures(
        &self,
        keys: &[String],
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>> {
        self.inner.login_failures(keys, now_ms, window_ms).await
    }

    async fn login_failures_in(
        &self,
        group: &str,
        now_ms: i64,
        window_ms: i64,
    ) -> Result<Vec<LoginFailures>> {
        self.inner.login_failures_in(group, now_ms, window_ms).await
    }

    async fn clear_login_failures(&self, key: &str) -> Result<()> {
        self.inner.clear_login_failures(key).await
    }

    async fn clear_login_failures_in(&self, group: &str) -> Result<usize> {
        self.inner.clear_login_failures_in(group).await
    }

    async fn release_login_failure(&self, key: &str) -> Result<()> {
        self.inner.release_login_failure(key).await
    }
}

//! Signing keys encrypted at rest: a [`Store`] decorator that seals private key material
//! with the master key on the way in and opens it on the way out, whatever the backend.
//! Everything else passes through unchanged.
//!
//! Without a master key, a store holding sealed keys is refused with a clear error (never
//! read as garbage). With one, a key stored unencrypted is refused too (a planted or
//! leftover plain key must not sign): `jotgate keys seal` encrypts such keys in place.

use std::sync::Arc;

use async_trait::async_trait;
use jotgate_core::seal::{MasterKeys, is_sealed};

use crate::{
    LoginFailures, NewRefresh, NewUser, Result, Revocation, Rotate, RotateOutcome, Store,
    StoreError, StoredKey, User, UserRecord,
};

pub struct SealedKeys {
    inner: Arc<dyn Store>,
    master: Option<MasterKeys>,
}

impl SealedKeys {
    pub fn new(inner: Arc<dyn Store>, master: Option<MasterKeys>) -> Self {
        Self { inner, master }
    }

    /// Encrypt, in place, every key stored unencrypted. Returns their kids.
    pub async fn seal_plain_keys(&self) -> Result<Vec<String>> {
        let Some(m) = &self.master else {
            return Err(StoreError::Config(
                "no master key is configured (JOTGATE_MASTER_KEY): nothing to seal with".into(),
            ));
        };
        let mut sealed = Vec::new();
        for k in self.inner.keys().await? {
            if is_sealed(&k.private_der) {
                continue;
            }
            let blob = m
                .seal(&k.kid, &k.alg, &k.private_der)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
            self.inner
                .replace_key_material(&k.kid, &k.private_der, blob)
                .await?;
            sealed.push(k.kid);
        }
        Ok(sealed)
    }
}

#[async_trait]
impl Store for SealedKeys {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn insert_key(&self, mut key: StoredKey) -> Result<()> {
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
            key.private_der = m
                .seal(&key.kid, &key.alg, &key.private_der)
                .map_err(|e| StoreError::Backend(e.to_string()))?;
        }
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
            let opened = m
                .open(&k.kid, &k.alg, &k.private_der)
                .map_err(|e| StoreError::Backend(format!("{e} (JOTGATE_MASTER_KEY)")))?;
            if opened.reseal {
                // Sealed with an old master key or the old format: seal it again with the
                // current one, so the old master key can be dropped.
                match m.seal(&k.kid, &k.alg, &opened.plaintext) {
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
        Ok(keys)
    }

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
        let current = if is_sealed(&stored.private_der) {
            m.open(kid, &stored.alg, &stored.private_der)
                .map_err(|e| StoreError::Backend(e.to_string()))?
                .plaintext
                .to_vec()
        } else {
            stored.private_der.clone()
        };
        if current != from {
            return Err(StoreError::Conflict("key material"));
        }
        let blob = m
            .seal(kid, &stored.alg, &to)
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        self.inner
            .replace_key_material(kid, &stored.private_der, blob)
            .await
    }
    async fn retire_key(&self, kid: &str, at: i64) -> Result<()> {
        self.inner.retire_key(kid, at).await
    }
    async fn insert_refresh(&self, token: NewRefresh) -> Result<()> {
        self.inner.insert_refresh(token).await
    }
    async fn rotate_refresh(&self, req: Rotate) -> Result<RotateOutcome> {
        self.inner.rotate_refresh(req).await
    }
    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<()> {
        self.inner.revoke_family(family_id, now).await
    }
    async fn revoke_user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<String>> {
        self.inner.revoke_user_sessions(user_id, now).await
    }
    async fn family_of(&self, token_hash: &str) -> Result<Option<crate::FamilyRef>> {
        self.inner.family_of(token_hash).await
    }
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
    async fn clear_login_failures(&self, key: &str) -> Result<()> {
        self.inner.clear_login_failures(key).await
    }

    async fn release_login_failure(&self, key: &str) -> Result<()> {
        self.inner.release_login_failure(key).await
    }
}

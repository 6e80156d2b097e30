//! The signing key and the published keys, derived from the store's key records.
//!
//! A key signs from its `created_at` on, until a newer key takes over or it is retired by
//! hand; it stays in the JWKS (and verifiable) until `access_ttl + leeway` after that, so
//! no token it signed is orphaned. A key whose `created_at` is in the future is published
//! but not used yet: that is how a rotation announces the next key before signing with it.

use std::sync::{Arc, RwLock};

use jotgate_core::{KeyMaterial, SigningAlg, TokenPolicy, TokenSigner};
use jotgate_store::{Store, StoredKey};
use jotgate_verify::keyset::KeySet;
use jotgate_verify::{IssuerConfig, Revoked, Verifier, VerifierConfig};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KeyRingError {
    #[error("stored key {kid} cannot be loaded: {reason}")]
    BadKey { kid: String, reason: String },
    #[error(
        "no signing key is active yet: run `jotgate keys rotate --now` or start the server once"
    )]
    NoActiveKey,
    #[error(transparent)]
    Store(#[from] jotgate_store::StoreError),
    #[error("the token verifier cannot be built: {0}")]
    Verifier(#[from] jotgate_verify::ConfigError),
}

/// An immutable snapshot: the signer, the published keys as the verifier reads them, the
/// JWKS.
pub struct KeyRing {
    signer: TokenSigner,
    /// Every published key, parsed from the JWKS exactly as an edge verifier parses it.
    verify_keys: Arc<KeySet>,
    /// A published key retired by hand: tokens it signs after its retirement are refused.
    retirements: Vec<Revoked>,
    jwks: Value,
    algs: Vec<&'static str>,
    /// The signer's kid, then the published kids: what a reload compares.
    selection: Vec<String>,
}

/// When key `i` of `keys` (oldest first) stops signing, as known at `now`: its retirement,
/// or the activation of a newer key that has begun signing, whichever comes first.
fn signing_end(keys: &[StoredKey], i: usize, now: i64) -> Option<i64> {
    let superseded = keys[i + 1..]
        .iter()
        .map(|j| j.created_at)
        .filter(|t| *t <= now)
        .min();
    match (keys[i].retired_at, superseded) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which stored keys sign and which are published at `now`, from metadata alone.
/// Keys come oldest first, so the last one signing now is the newest.
fn select<'a>(
    keys: &'a [StoredKey],
    policy: &TokenPolicy,
    now: i64,
) -> (Option<&'a StoredKey>, Vec<&'a StoredKey>) {
    let grace = policy.access_ttl + policy.leeway;
    let mut signer = None;
    let mut published = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let end = signing_end(keys, i, now);
        if k.created_at <= now && end.is_none_or(|e| e > now) {
            signer = Some(k);
        }
        if end.is_none_or(|e| e.saturating_add(grace) > now) {
            published.push(k);
        }
    }
    (signer, published)
}

/// How long a key that no token can need any more is kept anyway, at least: instances or
/// verifiers configured with a longer token lifetime may still publish it. A week, as long
/// as the feed's key entries live (`jotgate keys retire`/`revoke`).
pub const KEEP_EXPIRED_KEYS: i64 = 7 * 24 * 3600;

/// Keys to delete at `now`: retired or superseded, and past their last token's expiry by
/// the token lifetime plus leeway or [`KEEP_EXPIRED_KEYS`], whichever is longer. The key
/// that signs, and the newest key, are never among them.
pub fn disposable(keys: &[StoredKey], policy: &TokenPolicy, now: i64) -> Vec<String> {
    let keep = (policy.access_ttl + policy.leeway).max(KEEP_EXPIRED_KEYS);
    let (signer, _) = select(keys, policy, now);
    let last = keys.len().saturating_sub(1);
    keys.iter()
        .enumerate()
        .filter(|(i, k)| {
            *i != last
                && signer.is_none_or(|s| s.kid != k.kid)
                && signing_end(keys, *i, now).is_some_and(|e| e.saturating_add(keep) <= now)
        })
        .map(|(_, k)| k.kid.clone())
        .collect()
}

/// A stored key's place in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// The key new tokens are signed with.
    Signing,
    /// Published ahead of its activation time.
    Next,
    /// No longer signing; published while tokens it signed may live.
    Published,
    /// Neither signing nor published.
    Expired,
}

impl KeyStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signing => "signing",
            Self::Next => "next",
            Self::Published => "published",
            Self::Expired => "expired",
        }
    }
}

/// The status of each of `keys` at `now` (same order), from metadata alone.
pub fn statuses(keys: &[StoredKey], policy: &TokenPolicy, now: i64) -> Vec<KeyStatus> {
    let (signer, published) = select(keys, policy, now);
    keys.iter()
        .map(|k| {
            let is_published = published.iter().any(|p| p.kid == k.kid);
            if signer.is_some_and(|s| s.kid == k.kid) {
                KeyStatus::Signing
            } else if is_published && k.created_at > now {
                KeyStatus::Next
            } else if is_published {
                KeyStatus::Published
            } else {
                KeyStatus::Expired
            }
        })
        .collect()
}

/// The signer's and the published keys' kids, with their retirement: a reload rebuilds the
/// ring when any of it changes.
fn selection(signer: &StoredKey, published: &[&StoredKey]) -> Vec<String> {
    std::iter::once(signer)
        .chain(published.iter().copied())
        .map(|k| format!("{}@{:?}", k.kid, k.retired_at))
        .collect()
}

impl KeyRing {
    pub fn from_stored(
        keys: &[StoredKey],
        policy: &TokenPolicy,
        now: i64,
    ) -> Result<Self, KeyRingError> {
        let (signer, published) = select(keys, policy, now);
        let signer = signer.ok_or(KeyRingError::NoActiveKey)?;
        let mut loaded = Vec::with_capacity(published.len());
        for k in &published {
            let bad = |reason: String| KeyRingError::BadKey {
                kid: k.kid.clone(),
                reason,
            };
            let alg = SigningAlg::parse(&k.alg).map_err(|e| bad(e.to_string()))?;
            let m = KeyMaterial::from_pkcs8(Some(k.kid.clone()), alg, k.private_der.clone())
                .map_err(|e| bad(e.to_string()))?;
            loaded.push(m);
        }
        // The signing key is always published (it has not stopped signing yet).
        let signing = loaded
            .iter()
            .find(|m| m.kid() == signer.kid)
            .ok_or(KeyRingError::NoActiveKey)?;
        let mut ring = Self::build(signing, loaded.iter().collect())?;
        // A token a key signed after its retirement is refused (a stolen key cannot mint
        // tokens that pass for older ones). The feed carries the same entry; this one holds
        // even before the feed is read.
        let grace = policy.access_ttl + policy.leeway;
        ring.retirements = published
            .iter()
            .filter_map(|k| {
                k.retired_at.map(|at| Revoked::Key {
                    kid: k.kid.clone(),
                    not_after: at,
                    expires_at: at.saturating_add(grace),
                })
            })
            .collect();
        ring.selection = selection(signer, &published);
        Ok(ring)
    }

    /// HS256 with a shared secret: nothing is published.
    pub fn shared_secret(secret: &KeyMaterial) -> Result<Self, KeyRingError> {
        let mut ring = Self::build(secret, vec![])?;
        ring.verify_keys = Arc::new(KeySet::from_secret(secret.secret_bytes()).map_err(|e| {
            KeyRingError::BadKey {
                kid: secret.kid().to_string(),
                reason: e.to_string(),
            }
        })?);
        ring.algs = vec![SigningAlg::HS256.as_str()];
        Ok(ring)
    }

    fn build(signer: &KeyMaterial, published: Vec<&KeyMaterial>) -> Result<Self, KeyRingError> {
        let bad = |m: &KeyMaterial, reason: String| KeyRingError::BadKey {
            kid: m.kid().to_string(),
            reason,
        };
        let keys: Vec<Value> = published
            .iter()
            .filter_map(|m| m.public_jwk())
            .filter_map(|j| serde_json::to_value(j).ok())
            .collect();
        let jwks = json!({ "keys": keys });
        let parsed = KeySet::from_jwks(jwks.to_string().as_bytes()).map_err(|e| bad(signer, e))?;
        // Every key it publishes, the verifier must hold: else tokens it signs are refused.
        if !parsed.skipped.is_empty() || parsed.set.len() != published.len() {
            return Err(bad(
                signer,
                format!(
                    "a published key does not parse as a verification key ({})",
                    parsed.skipped.join("; ")
                ),
            ));
        }
        let verify_keys = parsed.set;
        let mut algs: Vec<&'static str> = published.iter().map(|m| m.alg().as_str()).collect();
        algs.sort_unstable();
        algs.dedup();
        Ok(Self {
            signer: TokenSigner::new(signer).map_err(|e| bad(signer, e.to_string()))?,
            verify_keys: Arc::new(verify_keys),
            retirements: Vec::new(),
            jwks,
            algs,
            selection: Vec::new(),
        })
    }

    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// The published keys, as [`Verifier`] takes them.
    pub fn verify_keys(&self) -> &Arc<KeySet> {
        &self.verify_keys
    }

    /// Revocation entries for the published keys that were retired by hand.
    pub fn retirements(&self) -> &[Revoked] {
        &self.retirements
    }

    pub fn jwks(&self) -> &Value {
        &self.jwks
    }

    /// Algorithms of the published keys.
    pub fn algorithms(&self) -> &[&'static str] {
        &self.algs
    }
}

/// The instant to pick a signer at when none signs at `now`: a key another instance stored
/// may carry a later second than this clock reads (it started a moment later) and is the one
/// to sign with all the same. A few seconds at most: a rotation scheduled for later does not
/// start early.
fn skew_tolerant(keys: &[StoredKey], now: i64) -> i64 {
    keys.iter()
        .map(|k| k.created_at)
        .filter(|c| *c <= now + 5)
        .max()
        .unwrap_or(now)
        .max(now)
}

/// Load the key ring, first generating a key of `alg` if none signs now.
/// Also returns the kid of a generated key.
pub async fn load_or_generate(
    store: &dyn Store,
    alg: SigningAlg,
    policy: &TokenPolicy,
    now: i64,
) -> Result<(KeyRing, Option<String>), KeyRingError> {
    let keys = store.keys().await?;
    match KeyRing::from_stored(&keys, policy, skew_tolerant(&keys, now)) {
        Err(KeyRingError::NoActiveKey) => {}
        other => return other.map(|ring| (ring, None)),
    }
    let key = KeyMaterial::generate(alg).map_err(|e| KeyRingError::BadKey {
        kid: "(new)".into(),
        reason: e.to_string(),
    })?;
    // Instances starting together on an empty store (or finding that no key signs any
    // more) claim one slot: exactly one stores its key, and all sign with that one. A slot
    // taken earlier by a key that has stopped signing too leads to the next slot of the
    // same (deterministic) chain.
    let base = keys
        .last()
        .map_or_else(|| "first".to_string(), |k| format!("after:{}", k.kid));
    let mut stored = false;
    for attempt in 0..4 {
        let slot = if attempt == 0 {
            base.clone()
        } else {
            format!("{base}#{attempt}")
        };
        stored = store
            .insert_key_once(
                &slot,
                StoredKey {
                    kid: key.kid().to_string(),
                    alg: alg.as_str().to_string(),
                    private_der: key.secret_bytes().to_vec(),
                    created_at: now,
                    retired_at: None,
                },
            )
            .await?;
        let keys = store.keys().await?;
        match KeyRing::from_stored(&keys, policy, skew_tolerant(&keys, now)) {
            Err(KeyRingError::NoActiveKey) if !stored => continue,
            ring => return Ok((ring?, stored.then(|| key.kid().to_string()))),
        }
    }
    let keys = store.keys().await?;
    let ring = KeyRing::from_stored(&keys, policy, skew_tolerant(&keys, now))?;
    Ok((ring, stored.then(|| key.kid().to_string())))
}

/// This issuer's [`Verifier`]: its own keys as a given key set, under the policy every
/// edge verifier of its tokens applies (`typ: at+jwt`, `sub` and `jti` required, its
/// audience, the algorithms jotgate signs with), with the verified-token cache.
pub fn own_verifier(
    policy: &TokenPolicy,
    ring: &KeyRing,
    cache_capacity: usize,
) -> Result<Arc<Verifier>, KeyRingError> {
    let algorithms = if ring.verify_keys.is_secret() {
        vec![SigningAlg::HS256.jwt()]
    } else {
        // Every algorithm a stored key may have: a rotation may change it.
        [SigningAlg::RS256, SigningAlg::ES256, SigningAlg::EdDSA]
            .map(SigningAlg::jwt)
            .to_vec()
    };
    // The application's audience and the management API's: each route then asks for its
    // own (`AppState::authenticate`, `management::Caller`).
    let issuer = IssuerConfig {
        algorithms,
        audiences: vec![
            policy.audience.clone(),
            crate::clients::management_audience(policy),
        ],
        ..IssuerConfig::jotgate(&policy.issuer, &policy.audience)
    }
    .with_keys(jotgate_verify::KeySource::Given(Arc::clone(
        &ring.verify_keys,
    )));
    let verifier = Verifier::new(VerifierConfig {
        issuers: vec![issuer],
        leeway: policy.leeway,
        max_token_bytes: policy.max_token_bytes,
        cache_capacity,
        follow_feeds: false,
        ..VerifierConfig::default()
    })?;
    verifier.apply_revocations(&policy.issuer, ring.retirements.clone());
    Ok(verifier)
}

/// Where the current [`KeyRing`] lives (swapped whole on reload), and the verifier that
/// checks tokens against it.
pub struct Keys {
    current: RwLock<Arc<KeyRing>>,
    verifier: Arc<Verifier>,
    issuer: String,
    /// The algorithm of a key to generate when none signs any more; `None` when signing
    /// with a shared secret (nothing to reload).
    generate: Option<SigningAlg>,
}

impl Keys {
    pub fn new(
        ring: KeyRing,
        generate: Option<SigningAlg>,
        policy: &TokenPolicy,
        cache_capacity: usize,
    ) -> Result<Self, KeyRingError> {
        Ok(Self {
            verifier: own_verifier(policy, &ring, cache_capacity)?,
            issuer: policy.issuer.clone(),
            current: RwLock::new(Arc::new(ring)),
            generate,
        })
    }

    pub fn current(&self) -> Arc<KeyRing> {
        Arc::clone(&self.current.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn verifier(&self) -> &Arc<Verifier> {
        &self.verifier
    }

    /// Re-read the store's keys (picks up `jotgate keys rotate`, activations, retirements
    /// and revocations). When no key signs any more (the signing key was retired or revoked
    /// and nothing succeeds it), a new one is generated: a retired key never signs again.
    pub async fn reload(
        &self,
        store: &dyn Store,
        policy: &TokenPolicy,
        now: i64,
    ) -> Result<(), KeyRingError> {
        let Some(alg) = self.generate else {
            return Ok(());
        };
        let keys = store.keys().await?;
        // Private keys no token can need any more are deleted (every instance tries; a
        // deletion is idempotent).
        for kid in disposable(&keys, policy, now) {
            match store.delete_key(&kid).await {
                Ok(()) => tracing::info!(%kid, "deleted a signing key no token can need any more"),
                Err(e) => {
                    tracing::warn!(%kid, error = %e, "could not delete an expired signing key")
                }
            }
        }
        // Parsing keys costs milliseconds (RSA): skip it when nothing changed.
        if let (Some(signer), published) = select(&keys, policy, now)
            && selection(signer, &published) == self.current().selection
        {
            return Ok(());
        }
        let ring = match KeyRing::from_stored(&keys, policy, now) {
            Err(KeyRingError::NoActiveKey) => {
                let (ring, generated) = load_or_generate(store, alg, policy, now).await?;
                if let Some(kid) = generated {
                    tracing::warn!(%kid, "no key signs any more (retired or revoked): generated a new signing key");
                }
                ring
            }
            other => other?,
        };
        // The verifier learns the new keys before the new signer signs anything.
        self.verifier
            .replace_keys(&self.issuer, Arc::clone(&ring.verify_keys))?;
        self.verifier
            .apply_revocations(&self.issuer, ring.retirements.clone());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(ring);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jotgate_store::Keys;

    /// A slot taken earlier by a key that no longer exists (or no longer signs) leads to
    /// the next slot of the chain, not to a store where no instance can ever sign.
    #[tokio::test]
    async fn a_spent_slot_leads_to_the_next() {
        let store = jotgate_store::sqlite::SqliteStore::in_memory().unwrap();
        let policy = TokenPolicy::default();
        let w = stored(SigningAlg::EdDSA, 0, Some(5));
        let kid = w.kid.clone();
        store.insert_key(w).await.unwrap();
        let x = stored(SigningAlg::EdDSA, 1, None);
        let x_kid = x.kid.clone();
        assert!(
            store
                .insert_key_once(&format!("after:{kid}"), x)
                .await
                .unwrap()
        );
        store.delete_key(&x_kid).await.unwrap();
        let (ring, generated) = load_or_generate(&store, SigningAlg::EdDSA, &policy, 100)
            .await
            .unwrap();
        let generated = generated.expect("a new key was stored in the next slot");
        assert_eq!(ring.signer().kid(), generated);
    }

    fn stored(alg: SigningAlg, created_at: i64, retired_at: Option<i64>) -> StoredKey {
        let k = KeyMaterial::generate(alg).unwrap();
        StoredKey {
            kid: k.kid().into(),
            alg: alg.as_str().into(),
            private_der: k.secret_bytes().to_vec(),
            created_at,
            retired_at,
        }
    }

    #[test]
    fn rotation_publishes_before_signing_and_keeps_old_keys_until_their_tokens_expire() {
        let policy = TokenPolicy {
            access_ttl: 100,
            leeway: 10,
            ..TokenPolicy::default()
        };
        let old = stored(SigningAlg::EdDSA, 0, None);
        let next = stored(SigningAlg::ES256, 1000, None);
        let keys = [old.clone(), next.clone()];
        let kids = |r: &KeyRing| -> Vec<String> {
            r.jwks()["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k["kid"].as_str().unwrap().to_string())
                .collect()
        };
        // Before activation: old signs, both are published.
        let r = KeyRing::from_stored(&keys, &policy, 900).unwrap();
        assert_eq!(r.signer().kid(), old.kid);
        assert_eq!(kids(&r), [old.kid.clone(), next.kid.clone()]);
        // After activation: next signs, old still published for ttl + leeway.
        let r = KeyRing::from_stored(&keys, &policy, 1050).unwrap();
        assert_eq!(r.signer().kid(), next.kid);
        assert_eq!(kids(&r).len(), 2);
        let r = KeyRing::from_stored(&keys, &policy, 1111).unwrap();
        assert_eq!(kids(&r), std::slice::from_ref(&next.kid));
        let st = statuses(&keys, &policy, 900);
        assert_eq!(st, [KeyStatus::Signing, KeyStatus::Next]);
        assert_eq!(
            statuses(&keys, &policy, 1111),
            [KeyStatus::Expired, KeyStatus::Signing]
        );
        // A long-expired key is not even parsed: damage there cannot stop start-up.
        let mut broken = stored(SigningAlg::EdDSA, -5000, None);
        broken.private_der = vec![0xde, 0xad];
        let r = KeyRing::from_stored(&[broken.clone(), old.clone()], &policy, 900).unwrap();
        assert_eq!(r.signer().kid(), old.kid);
        broken.created_at = 10_000; // a future key is published, so it must parse
        assert!(matches!(
            KeyRing::from_stored(&[old.clone(), broken], &policy, 900),
            Err(KeyRingError::BadKey { .. })
        ));
        // Deleted only a day (or a token lifetime, if longer) after its last token expired,
        // and never the signer or the newest key.
        assert!(disposable(&keys, &policy, 1111).is_empty());
        assert_eq!(
            disposable(&keys, &policy, 1000 + KEEP_EXPIRED_KEYS),
            std::slice::from_ref(&old.kid)
        );
        let revoked = [
            stored(SigningAlg::EdDSA, 0, Some(0)),
            stored(SigningAlg::EdDSA, 10, None),
        ];
        assert_eq!(
            disposable(&revoked, &policy, KEEP_EXPIRED_KEYS),
            [revoked[0].kid.clone()]
        );
        assert!(disposable(&revoked[1..], &policy, i64::MAX / 2).is_empty());
        // Retired by hand with nothing newer: no signer.
        let only = [stored(SigningAlg::EdDSA, 0, Some(5))];
        assert!(matches!(
            KeyRing::from_stored(&only, &policy, 10),
            Err(KeyRingError::NoActiveKey)
        ));
    }
}

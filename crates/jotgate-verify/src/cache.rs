//! The verified-token cache: a repeated token costs a hash lookup instead of a signature
//! check. Bounded; keyed by the whole token; an entry never outlives the token's `exp` (plus
//! leeway) and is dropped when a revocation or a key withdrawal could affect it.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, RwLock};

use crate::Principal;

const SHARDS: usize = 16;

pub(crate) struct Entry<T> {
    pub principal: Arc<Principal>,
    /// Unix seconds after which the entry is useless.
    pub valid_until: i64,
    pub tag: T,
    /// The owner's key generation when the keys that verified it were read: an entry of an
    /// older generation is not served (keys were withdrawn since).
    pub stamp: u64,
}

pub(crate) struct TokenCache<T> {
    shards: Vec<RwLock<HashMap<Box<str>, Entry<T>>>>,
    per_shard: usize,
    hasher: RandomState,
}

impl<T: Clone> TokenCache<T> {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: RandomState::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    fn shard(&self, token: &str) -> &RwLock<HashMap<Box<str>, Entry<T>>> {
        &self.shards[(self.hasher.hash_one(token) as usize) % SHARDS]
    }

    pub fn get(&self, token: &str, now: i64) -> Option<(Arc<Principal>, T, u64)> {
        if !self.enabled() {
            return None;
        }
        let shard = self.shard(token).read().unwrap_or_else(|p| p.into_inner());
        let e = shard.get(token)?;
        (now <= e.valid_until).then(|| (e.principal.clone(), e.tag.clone(), e.stamp))
    }

    pub fn insert(&self, token: &str, entry: Entry<T>, now: i64) {
        if !self.enabled() {
            return;
        }
        let mut shard = self.shard(token).write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            shard.retain(|_, e| e.valid_until >= now);
            if shard.len() >= self.per_shard {
                // Still full of live tokens: drop an eighth, in the map's (random) order.
                let drop: Vec<Box<str>> = shard
                    .keys()
                    .take((self.per_shard / 8).max(1))
                    .cloned()
                    .collect();
                for k in drop {
                    shard.remove(&k);
                }
            }
        }
        shard.insert(token.into(), entry);
    }

    /// Keep only entries for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&Entry<T>) -> bool) {
        for s in &self.shards {
            s.write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, e| keep(e));
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

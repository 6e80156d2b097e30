//! The verified-token cache: a repeated token costs a hash lookup instead of a signature
//! check. Bounded; keyed by the whole token; an entry never outlives the token's `exp` (plus
//! leeway) and is dropped when a revocation or a key withdrawal could affect it.

use std::hash::BuildHasher;
use std::sync::{Arc, RwLock};

use hashbrown::HashTable;

use crate::Principal;

const SHARDS: usize = 16;
/// How much of a token's end is hashed.
const HASHED: usize = 32;

pub(crate) struct Entry<T> {
    pub principal: Arc<Principal>,
    /// Unix seconds after which the entry is useless.
    pub valid_until: i64,
    pub tag: T,
    /// The owner's key generation when the keys that verified it were read: an entry of an
    /// older generation is not served (keys were withdrawn since).
    pub stamp: u64,
}

/// A cached token: its hash (computed once per lookup, shared by the shard choice and the
/// table), the token itself (compared in full on a hit) and what verifying it gave.
struct Slot<T> {
    hash: u64,
    token: Box<str>,
    entry: Entry<T>,
}

pub(crate) struct TokenCache<T> {
    shards: Vec<RwLock<HashTable<Slot<T>>>>,
    per_shard: usize,
    /// foldhash with a per-process seed: a token is ~800 bytes, which SipHash (std's
    /// default) took ~4,600 instructions to hash, twice per lookup. foldhash does not
    /// claim to resist a flooding attacker, and anyone who can sign up can mint verified
    /// tokens; but only verified tokens are inserted, their bytes (a fresh `jti`, the
    /// signature) are not the caller's to choose, a shard holds at most capacity / 16
    /// entries, and the worst a flood of minted tokens does is evict others, which any
    /// flood of valid tokens does to a bounded cache.
    hasher: foldhash::fast::RandomState,
}

impl<T: Clone> TokenCache<T> {
    /// `capacity` 0 disables the cache.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| RwLock::new(HashTable::new())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
            hasher: foldhash::fast::RandomState::default(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.per_shard > 0
    }

    /// The token's hash and its shard (from middle bits: hashbrown takes its bucket from
    /// the low bits and its 7-bit tag from the top ones). Hashed: its last 32 bytes, the end
    /// of its signature, which the signer's key makes (the rest, ~800 bytes, took ~350
    /// instructions a lookup to hash); a lookup still compares every byte.
    fn locate(&self, token: &[u8]) -> (u64, &RwLock<HashTable<Slot<T>>>) {
        let tail = token
            .get(token.len().saturating_sub(HASHED)..)
            .unwrap_or(token);
        let hash = self.hasher.hash_one(tail);
        (hash, &self.shards[(hash >> 32) as usize % SHARDS])
    }

    /// The entry of `token`, looked up by its bytes (a request's header before it is read
    /// as text: the bytes of a verified token are).
    pub fn get(&self, token: &[u8], now: i64) -> Option<(Arc<Principal>, T, u64)> {
        if !self.enabled() {
            return None;
        }
        let (hash, shard) = self.locate(token);
        let shard = shard.read().unwrap_or_else(|p| p.into_inner());
        let e = &shard
            .find(hash, |s| s.hash == hash && *s.token.as_bytes() == *token)?
            .entry;
        (now <= e.valid_until).then(|| (e.principal.clone(), e.tag.clone(), e.stamp))
    }

    pub fn insert(&self, token: &str, entry: Entry<T>, now: i64) {
        if !self.enabled() {
            return;
        }
        let (hash, shard) = self.locate(token.as_bytes());
        let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
        if shard.len() >= self.per_shard {
            shard.retain(|s| s.entry.valid_until >= now);
            if shard.len() >= self.per_shard {
                // Still full of live tokens: drop an eighth, in the table's (random) order.
                let mut drop = (self.per_shard / 8).max(1);
                shard.retain(|_| {
                    let keep = drop == 0;
                    drop = drop.saturating_sub(1);
                    keep
                });
            }
        }
        let slot = Slot {
            hash,
            token: token.into(),
            entry,
        };
        match shard.entry(hash, |s| s.hash == hash && *s.token == *token, |s| s.hash) {
            hashbrown::hash_table::Entry::Occupied(mut o) => *o.get_mut() = slot,
            hashbrown::hash_table::Entry::Vacant(v) => {
                v.insert(slot);
            }
        }
    }

    /// Keep only entries for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&Entry<T>) -> bool) {
        for s in &self.shards {
            s.write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|s| keep(&s.entry));
        }
    }

    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(valid_until: i64) -> Entry<u8> {
        Entry {
            principal: Arc::new(Principal {
                subject: "u".into(),
                username: None,
                roles: vec![],
                scopes: vec![],
                issuer: "i".into(),
                expires_at: valid_until,
                claims: Default::default(),
                key_id: None,
                ids: Default::default(),
            }),
            valid_until,
            tag: 7,
            stamp: 1,
        }
    }

    #[test]
    fn a_hit_needs_the_whole_token_and_a_live_entry() {
        let c = TokenCache::new(64);
        c.insert("a.b.c", entry(100), 0);
        assert!(c.get(b"a.b.c", 100).is_some());
        assert!(c.get(b"a.b.c", 101).is_none(), "expired");
        assert!(c.get(b"a.b.", 50).is_none());
        assert!(c.get(b"a.b.cd", 50).is_none());
        // A second insert of the same token replaces the first.
        c.insert("a.b.c", entry(200), 0);
        assert_eq!(c.len(), 1);
        assert!(c.get(b"a.b.c", 150).is_some());
    }

    #[test]
    fn stays_bounded_when_full_of_live_tokens() {
        let c = TokenCache::new(16 * 8);
        for i in 0..10_000 {
            c.insert(&format!("token-{i}"), entry(1_000), 0);
            assert!(c.len() <= 16 * 8, "{} entries", c.len());
        }
        // The newest one is always there.
        assert!(c.get(b"token-9999", 0).is_some());
        // Expired entries go first: a full shard drops them before any live one.
        let d = TokenCache::new(16 * 64);
        for i in 0..2_000 {
            d.insert(&format!("old-{i}"), entry(5), 0);
        }
        for i in 0..64 {
            d.insert(&format!("new-{i}"), entry(100), 10);
        }
        assert!((0..64).all(|i| d.get(format!("new-{i}").as_bytes(), 10).is_some()));
    }

    #[test]
    fn capacity_zero_caches_nothing() {
        let c = TokenCache::new(0);
        c.insert("a.b.c", entry(100), 0);
        assert!(c.get(b"a.b.c", 0).is_none());
    }
}

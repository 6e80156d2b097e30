//! Revoked access tokens, sessions and per-user "not before" instants, held in memory so
//! the request path never reads a store — plus the wire format of the jotgate server's
//! change feed (`GET /api/v1/revocations?since=<cursor>&wait=<seconds>`) that keeps them
//! current.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI64, Ordering};

use serde::{Deserialize, Serialize};

use jotgate_core::TokenErrorKind;

use crate::{Principal, VerifyError, VerifyErrorKind};

/// One revocation, as the feed carries it. Each lives until `expires_at`, after which every
/// token it could deny has expired on its own.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revoked {
    /// One access token, by `jti`.
    Token { jti: String, expires_at: i64 },
    /// Every access token of a login session (`sid`).
    Session { sid: String, expires_at: i64 },
    /// Every access token of user `sub` issued before `not_before` (logout everywhere,
    /// role change).
    User {
        sub: String,
        not_before: i64,
        expires_at: i64,
    },
    /// Every token signed by key `kid` and issued after `not_after`: a retired key (its
    /// retirement instant) or a revoked one (an instant before any of its live tokens).
    Key {
        kid: String,
        not_after: i64,
        expires_at: i64,
    },
}

impl Revoked {
    pub fn expires_at(&self) -> i64 {
        match self {
            Self::Token { expires_at, .. }
            | Self::Session { expires_at, .. }
            | Self::User { expires_at, .. }
            | Self::Key { expires_at, .. } => *expires_at,
        }
    }

    /// The id a store keeps it under: `jti:<jti>`, `sid:<sid>`, `usr:<sub>:<not_before>`,
    /// `key:<kid>:<not_after>`.
    pub fn store_id(&self) -> String {
        match self {
            Self::Token { jti, .. } => format!("jti:{jti}"),
            Self::Session { sid, .. } => format!("sid:{sid}"),
            Self::User {
                sub, not_before, ..
            } => format!("usr:{sub}:{not_before}"),
            Self::Key { kid, not_after, .. } => format!("key:{kid}:{not_after}"),
        }
    }

    /// The inverse of [`Revoked::store_id`].
    pub fn from_store_id(id: &str, expires_at: i64) -> Option<Self> {
        let (kind, rest) = id.split_once(':')?;
        Some(match kind {
            "jti" => Self::Token {
                jti: rest.into(),
                expires_at,
            },
            "sid" => Self::Session {
                sid: rest.into(),
                expires_at,
            },
            "usr" => {
                let (sub, nbf) = rest.rsplit_once(':')?;
                Self::User {
                    sub: sub.into(),
                    not_before: nbf.parse().ok()?,
                    expires_at,
                }
            }
            "key" => {
                let (kid, at) = rest.rsplit_once(':')?;
                Self::Key {
                    kid: kid.into(),
                    not_after: at.parse().ok()?,
                    expires_at,
                }
            }
            _ => return None,
        })
    }
}

/// One page of the feed.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPage {
    /// Pass back as `since` to get only newer entries.
    pub cursor: i64,
    pub revocations: Vec<Revoked>,
    /// More entries follow this page: ask again from `cursor` at once.
    #[serde(default)]
    pub more: bool,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, i64>,
    sessions: HashMap<String, i64>,
    /// sub → (not_before, expires_at); the latest not_before wins.
    users: HashMap<String, (i64, i64)>,
    /// kid → (not_after, expires_at); the earliest not_after wins.
    keys: HashMap<String, (i64, i64)>,
}

/// The revocations of one issuer.
#[derive(Default)]
pub struct Revocations {
    state: RwLock<State>,
    cursor: AtomicI64,
}

impl Revocations {
    /// Feed position applied so far.
    pub fn cursor(&self) -> i64 {
        self.cursor.load(Ordering::Acquire)
    }

    pub fn set_cursor(&self, cursor: i64) {
        self.cursor.fetch_max(cursor, Ordering::AcqRel);
    }

    /// Add entries and drop the ones that no longer matter at `now`.
    pub fn apply(&self, entries: impl IntoIterator<Item = Revoked>, now: i64) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        s.tokens.retain(|_, exp| *exp >= now);
        s.sessions.retain(|_, exp| *exp >= now);
        s.users.retain(|_, (_, exp)| *exp >= now);
        s.keys.retain(|_, (_, exp)| *exp >= now);
        for e in entries {
            match e {
                Revoked::Token { jti, expires_at } => {
                    s.tokens.insert(jti, expires_at);
                }
                Revoked::Session { sid, expires_at } => {
                    s.sessions.insert(sid, expires_at);
                }
                Revoked::User {
                    sub,
                    not_before,
                    expires_at,
                } => {
                    let slot = s.users.entry(sub).or_insert((not_before, expires_at));
                    slot.0 = slot.0.max(not_before);
                    slot.1 = slot.1.max(expires_at);
                }
                Revoked::Key {
                    kid,
                    not_after,
                    expires_at,
                } => {
                    let slot = s.keys.entry(kid).or_insert((not_after, expires_at));
                    slot.0 = slot.0.min(not_after);
                    slot.1 = slot.1.max(expires_at);
                }
            }
        }
    }

    /// True when a token with these claims is revoked. A user revocation at `T` denies
    /// tokens issued before `T` (whole seconds: jotgate writes `T` as the second after the
    /// logout, and a login in the logout's own second waits for it).
    pub fn denies(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        sub: &str,
        iat: Option<i64>,
    ) -> bool {
        self.refusal(jti, sid, sub, iat, None).is_some()
    }

    /// Why a token with these claims is refused, if it is: `token_key_retired` when the
    /// key that signed it was retired before it was issued (or revoked), else
    /// `token_revoked` for the token, its session or its user.
    pub fn refusal(
        &self,
        jti: Option<&str>,
        sid: Option<&str>,
        sub: &str,
        iat: Option<i64>,
        kid: Option<&str>,
    ) -> Option<VerifyError> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        // `not_after` 0 (the epoch) is a revoked key: every token, whatever `iat` it claims.
        if kid
            .and_then(|k| s.keys.get(k))
            .is_some_and(|(na, _)| *na <= 0 || iat.is_none_or(|iat| iat > *na))
        {
            return Some(VerifyError::new(VerifyErrorKind::Token(
                TokenErrorKind::KeyRetired,
            )));
        }
        let revoked = jti.is_some_and(|j| s.tokens.contains_key(j))
            || sid.is_some_and(|x| s.sessions.contains_key(x))
            || s.users
                .get(sub)
                .is_some_and(|(nbf, _)| iat.is_none_or(|iat| iat < *nbf));
        revoked.then(|| VerifyError::new(VerifyErrorKind::Revoked))
    }

    pub fn denies_principal(&self, p: &Principal) -> bool {
        self.refuses(p).is_some()
    }

    /// [`refusal`](Self::refusal) for a verified principal.
    pub fn refuses(&self, p: &Principal) -> Option<VerifyError> {
        self.refusal(
            p.token_id(),
            p.session_id(),
            &p.subject,
            p.issued_at(),
            p.key_id.as_deref(),
        )
    }

    /// The user's "not before" instant, when one is in force: tokens issued before it are
    /// refused.
    pub fn user_not_before(&self, sub: &str) -> Option<i64> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        s.users.get(sub).map(|(nbf, _)| *nbf)
    }

    pub fn len(&self) -> usize {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        s.tokens.len() + s.sessions.len() + s.users.len() + s.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_ids_round_trip() {
        for r in [
            Revoked::Token {
                jti: "a:b".into(),
                expires_at: 5,
            },
            Revoked::Session {
                sid: "s".into(),
                expires_at: 6,
            },
            Revoked::User {
                sub: "user:with:colons".into(),
                not_before: 100,
                expires_at: 7,
            },
        ] {
            assert_eq!(
                Revoked::from_store_id(&r.store_id(), r.expires_at()),
                Some(r)
            );
        }
        assert_eq!(Revoked::from_store_id("zzz:1", 1), None);
        assert_eq!(Revoked::from_store_id("usr:x:notanumber", 1), None);
    }

    #[test]
    fn user_not_before_denies_older_tokens_only() {
        let r = Revocations::default();
        r.apply(
            [Revoked::User {
                sub: "u".into(),
                not_before: 100,
                expires_at: 1000,
            }],
            0,
        );
        assert!(r.denies(None, None, "u", Some(99)));
        assert!(!r.denies(None, None, "u", Some(100)));
        assert!(r.denies(None, None, "u", None));
        assert!(!r.denies(None, None, "other", Some(1)));
        // An older not-before never lowers a newer one.
        r.apply(
            [Revoked::User {
                sub: "u".into(),
                not_before: 50,
                expires_at: 1000,
            }],
            0,
        );
        assert!(r.denies(None, None, "u", Some(99)));
        // Expired entries are dropped.
        r.apply([], 2000);
        assert!(r.is_empty());
    }
}

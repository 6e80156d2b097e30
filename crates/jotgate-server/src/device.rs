//! Device tokens (OWASP, "Slow down online guessing attacks with device cookies"): a login
//! that succeeded gives the device a token; later logins from it with that token skip the
//! per-(account, address) delays and the per-account ceiling, and keep only the token's
//! own counter, so guesses from elsewhere do not keep the owner out. A token never stands
//! in for the password: it only decides which limits apply.
//!
//! `dt1.<user id>.<issued>.<expires>.<id>.<mac>`: HMAC-SHA256 over the rest with a secret
//! every instance shares (`Store::shared_secret`), so a flood of forged tokens is refused
//! in memory, without a store read. A token is bound to its user (one user's token does
//! nothing for another), expires (`device_token_days`, renewed at each login), and is
//! refused once issued before the user's `devices_not_before` (log out everywhere, a
//! password change, a block), or after `login_user_failures` wrong passwords with it.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The longest token accepted (a user id is at most 128 characters).
const MAX_LEN: usize = 400;

/// The cookie browsers keep it in: `__Host-` (Secure, no Domain, Path=/) over HTTPS.
pub const COOKIE_SECURE: &str = "__Host-jotgate-device";
/// The same over plain HTTP (a laptop), where `__Host-` cookies are refused.
pub const COOKIE_PLAIN: &str = "jotgate-device";

pub struct DeviceTokens {
    key: zeroize::Zeroizing<Vec<u8>>,
    /// Seconds a token lives; 0 turns device tokens off.
    ttl: i64,
    /// The issuer is HTTPS: the cookie is `__Host-` and Secure, and only it is read.
    https: bool,
}

/// A token that checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Its own throttling counter's name.
    pub id: String,
}

impl DeviceTokens {
    pub fn new(secret: &str, ttl_secs: i64, https: bool) -> Self {
        Self {
            key: zeroize::Zeroizing::new(secret.as_bytes().to_vec()),
            ttl: ttl_secs.max(0),
            https,
        }
    }

    pub fn https(&self) -> bool {
        self.https
    }

    pub fn enabled(&self) -> bool {
        self.ttl > 0
    }

    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    fn mac(&self, body: &str) -> Hmac<Sha256> {
        // HMAC takes a key of any length.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
        m.update(body.as_bytes());
        m
    }

    /// A new token for `user_id`, issued at `now`.
    pub fn mint(&self, user_id: &str, now: i64) -> String {
        let body = format!(
            "dt1.{user_id}.{now}.{}.{}",
            now.saturating_add(self.ttl),
            jotgate_core::random::token(16)
        );
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&body).finalize().into_bytes());
        format!("{body}.{tag}")
    }

    /// The device, when `token` is this server's, for `user_id`, unexpired and issued at
    /// or after `not_before`. Anything else — forged, another user's, expired, revoked,
    /// malformed — is `None`, which counts as no token.
    pub fn check(&self, token: &str, user_id: &str, not_before: i64, now: i64) -> Option<Device> {
        let t = self.parse(token, now)?;
        if t.user != user_id || t.issued < not_before {
            return None;
        }
        Some(Device {
            id: t.id.to_string(),
        })
    }

    /// Whether `token` is one this server made and unexpired, whoever's and revoked or not
    /// (in memory, no store read): a login that sends one is not shed with the flood
    /// before its account is looked up.
    pub fn vouches(&self, token: &str, now: i64) -> bool {
        self.parse(token, now).is_some()
    }

    fn parse<'t>(&self, token: &'t str, now: i64) -> Option<Parsed<'t>> {
        if !self.enabled() || token.len() > MAX_LEN {
            return None;
        }
        let (body, tag) = token.rsplit_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        // Constant time, and before anything in the body is believed.
        self.mac(body).verify_slice(&tag).ok()?;
        let mut parts = body.split('.');
        let (v, user, issued, expires, id) = (
            parts.next()?,
            parts.next()?,
            parts.next()?.parse::<i64>().ok()?,
            parts.next()?.parse::<i64>().ok()?,
            parts.next()?,
        );
        if v != "dt1" || parts.next().is_some() || expires <= now {
            return None;
        }
        Some(Parsed { user, issued, id })
    }

    /// The `Set-Cookie` value that keeps `token` in a browser (HttpOnly, SameSite=Strict;
    /// `__Host-` and Secure when the issuer is HTTPS).
    pub fn cookie(&self, token: &str) -> String {
        let (name, secure) = if self.https {
            (COOKIE_SECURE, "; Secure")
        } else {
            (COOKIE_PLAIN, "")
        };
        format!(
            "{name}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
            self.ttl
        )
    }
}

/// A device token whose MAC held.
struct Parsed<'t> {
    user: &'t str,
    issued: i64,
    id: &'t str,
}

/// The device tokens a request carries, to try in order: `device_token` in the body, then
/// each device cookie (at most four). Over HTTPS only the `__Host-` cookie counts: a plain
/// one may have been planted by a sibling domain or over plain HTTP, and it must not
/// displace the real one either — so every candidate is tried, not just the first.
pub fn presented<'a>(
    body: Option<&'a str>,
    headers: &'a axum::http::HeaderMap,
    https: bool,
) -> Vec<&'a str> {
    let names: &[&str] = if https {
        &[COOKIE_SECURE]
    } else {
        &[COOKIE_SECURE, COOKIE_PLAIN]
    };
    body.into_iter()
        .chain(
            headers
                .get_all(axum::http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|c| c.trim().split_once('='))
                .filter(|(n, _)| names.contains(n))
                .map(|(_, v)| v),
        )
        .take(4)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_holds_for_its_user_until_it_expires_or_is_revoked() {
        let d = DeviceTokens::new("secret-0123456789-0123456789-0123", 90 * 86_400, false);
        let t = d.mint("u1", 1_000);
        assert!(d.check(&t, "u1", 0, 2_000).is_some());
        assert!(d.check(&t, "u2", 0, 2_000).is_none(), "another user's");
        assert!(d.check(&t, "u1", 1_001, 2_000).is_none(), "revoked after");
        assert!(
            d.check(&t, "u1", 1_000, 2_000).is_some(),
            "revoked at issue"
        );
        assert!(
            d.check(&t, "u1", 0, 1_000 + 90 * 86_400).is_none(),
            "expired"
        );
        // Forged: another key, a changed field, a truncated tag, junk.
        let other = DeviceTokens::new("another-secret-0123456789-0123456", 90 * 86_400, false);
        assert!(other.check(&t, "u1", 0, 2_000).is_none());
        let changed = t.replacen(".1000.", ".1001.", 1);
        assert!(d.check(&changed, "u1", 0, 2_000).is_none());
        assert!(d.check(&t[..t.len() - 2], "u1", 0, 2_000).is_none());
        for junk in ["", ".", "dt1", "dt1.u1.1.2.3", &"a".repeat(5000)] {
            assert!(d.check(junk, "u1", 0, 2_000).is_none(), "{junk}");
        }
        // Each token is its own device.
        let t2 = d.mint("u1", 1_000);
        assert_ne!(d.check(&t, "u1", 0, 2_000), d.check(&t2, "u1", 0, 2_000));
        // Off: nothing checks out.
        let off = DeviceTokens::new("secret-0123456789-0123456789-0123", 0, false);
        assert!(off.check(&t, "u1", 0, 2_000).is_none());
    }

    #[test]
    fn the_cookie_is_host_only_and_strict() {
        let d = DeviceTokens::new("k", 60, true);
        assert_eq!(
            d.cookie("T"),
            "__Host-jotgate-device=T; Path=/; Max-Age=60; HttpOnly; SameSite=Strict; Secure"
        );
        assert_eq!(
            DeviceTokens::new("k", 60, false).cookie("T"),
            "jotgate-device=T; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
        );
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            "cookie",
            "a=b; jotgate-device=T2; __Host-jotgate-device=T3"
                .parse()
                .unwrap(),
        );
        assert_eq!(presented(None, &h, false), ["T2", "T3"]);
        assert_eq!(presented(Some("T1"), &h, false), ["T1", "T2", "T3"]);
        // Over HTTPS a planted plain cookie is not even tried.
        assert_eq!(presented(None, &h, true), ["T3"]);
    }
}

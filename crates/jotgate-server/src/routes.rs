//! Handlers of the seed-compatible API and the discovery documents.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use jotgate_core::{AccessClaims, Username, password, refresh, scopes_for_roles, username};
use jotgate_store::{NewRefresh, NewUser, Rotate, RotateOutcome, StoreError, User};
use jotgate_verify::Revoked;
use serde_json::Value;

use crate::error::ApiError;
use crate::extract::{JsonObject, OptionalJsonObject};
use crate::schema::{
    Discovery, ErrorBody, Greeting, Health, JwkSet, LoginRequest, LogoutRequest, Readiness,
    RefreshRequest, SignupRequest, Tokens, Verified, VerifyRequest,
};
use crate::{AppState, now, revocation};

/// The client address, as far as this deployment can tell, and whether it is on the login
/// allowlist (only an address the deployment resolved can be: never the proxy's own
/// address, taken for want of a forwarded one).
pub struct ClientIp(pub Option<IpAddr>, pub Allowlisted);

/// Whether the client address is on the login allowlist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowlisted(pub bool);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let (ip, resolved) = crate::extract::client_address(parts, state.0.cfg.forwarded_hops);
        let listed = resolved && ip.is_some_and(|i| state.0.limiter.allowlisted(i));
        Ok(Self(ip, Allowlisted(listed)))
    }
}

/// The second to issue a new session's first token in: now — unless "log out everywhere"
/// (or the logout fold) set the user's "not before" to the next second, which refuses every
/// token of this second: then wait for it (at most about two seconds), so the new token is
/// valid. Only for new sessions: a refresh is issued at its rotation's second.
pub(crate) async fn issuing_second(st: &AppState, user_id: &str) -> i64 {
    let t = now();
    let nb =
        st.0.keys
            .verifier()
            .revocations(&st.0.cfg.policy.issuer)
            .and_then(|r| r.user_not_before(user_id));
    match nb {
        Some(nb) if nb > t && nb - t <= 2 => {
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            let wait = (nb * 1000 - now_ms).clamp(0, 2000) as u64;
            tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            now().max(nb)
        }
        _ => t,
    }
}

async fn access_token(st: &AppState, user: &User, sid: &str, t: i64) -> Result<String, ApiError> {
    // The roles' current definitions, read at each issue: a role changed a moment ago (by
    // another instance, or the CLI) is in the next token. No read for a user with none.
    let defs = if user.roles.is_empty() {
        Vec::new()
    } else {
        st.0.store.roles().await?
    };
    let bag = |r: &str| {
        defs.iter()
            .find(|d| d.name == r)
            .map(|d| d.scopes.as_slice())
    };
    let p = &st.0.cfg.policy;
    let claims = AccessClaims {
        iss: p.issuer.clone(),
        sub: user.id.clone(),
        aud: p.audience.clone(),
        exp: t + p.access_ttl,
        iat: t,
        nbf: t,
        jti: uuid::Uuid::new_v4().to_string(),
        username: user.username.clone(),
        roles: user.roles.clone(),
        scope: scopes_for_roles(&user.roles, bag),
        sid: Some(sid.to_string()),
    };
    // Chosen keys of app_metadata, as namespaced custom claims (`app_metadata_claims`).
    let mut extra = serde_json::Map::new();
    let mut budget = crate::accounts::MAX_CUSTOM_CLAIMS_BYTES;
    for (key, claim) in &st.0.cfg.app_metadata_claims {
        let Some(v) = user.app_metadata.get(key) else {
            continue;
        };
        let size = serde_json::to_vec(v).map_or(usize::MAX, |b| b.len());
        if size > budget {
            tracing::warn!(user_id = %user.id, %key, size, "app_metadata value left out of the token: over the custom claims' size cap");
            continue;
        }
        budget -= size;
        extra.insert(claim.clone(), v.clone());
    }
    #[derive(serde::Serialize)]
    struct WithCustom<'a> {
        #[serde(flatten)]
        claims: &'a AccessClaims,
        #[serde(flatten)]
        custom: &'a serde_json::Map<String, Value>,
    }
    st.0.keys
        .current()
        .signer()
        .sign(&WithCustom {
            claims: &claims,
            custom: &extra,
        })
        .map_err(ApiError::internal)
}

fn token_body(st: &AppState, user: &User, access: String, refresh: String) -> Tokens {
    Tokens {
        user: user.clone(),
        token: access,
        token_type: "Bearer",
        expires_in: st.0.cfg.policy.access_ttl,
        refresh_token: refresh,
        device_token: None,
    }
}

/// A new login session: a refresh-token family and its first pair of tokens.
/// `verified_hash`: the password hash a login just checked; the session is kept only if the
/// account still has it (a password change that raced the login ends it).
pub(crate) async fn new_session(
    st: &AppState,
    user: &User,
    verified_hash: Option<&str>,
) -> Result<Tokens, ApiError> {
    let t = issuing_second(st, &user.id).await;
    let family = uuid::Uuid::new_v4().to_string();
    let refresh_token = refresh::generate();
    crate::metrics::timed(
        "session_insert",
        st.0.store.insert_refresh(NewRefresh {
            token_hash: refresh::hash(&refresh_token),
            family_id: family.clone(),
            user_id: user.id.clone(),
            created_at: t,
            expires_at: t + st.0.cfg.refresh_ttl,
        }),
    )
    .await?;
    // The account again, now that the session exists: a block or a role change that
    // committed before this read is seen here, and one that commits after it ends this
    // session with the others (its revocation comes after its write).
    let current = match st.0.store.user_by_id(&user.id).await {
        Ok(Some(u)) if !u.blocked => match verified_hash {
            None => Ok(Some(u)),
            Some(h) => match jotgate_core::username::lookup_key(&u.username) {
                Ok(l) => match crate::find_user(&*st.0.store, &l).await {
                    Ok(Some(r)) if r.user.id == u.id && r.password_hash == h => Ok(Some(u)),
                    // The password changed while this login was checked: no session.
                    Ok(_) => Ok(None),
                    Err(e) => Err(e),
                },
                Err(_) => Ok(Some(u)),
            },
        },
        other => other,
    };
    let fresh = match current {
        Ok(Some(u)) if !u.blocked => u,
        other => {
            if let Err(e) = st.0.store.revoke_family(&family, t).await {
                tracing::warn!(error = %e, "could not end a session opened for a blocked user");
            }
            return Err(match other {
                Ok(Some(_)) => ApiError::Forbidden(
                    "user_blocked",
                    "this account is blocked; ask an administrator".into(),
                ),
                Ok(None) => ApiError::BadCredentials,
                Err(e) => e.into(),
            });
        }
    };
    let user = &fresh;
    // Sessions per user are bounded: the oldest beyond `max_sessions` end, their access
    // tokens with them. A failure here is logged, never the login's.
    match st
        .0
        .store
        .evict_sessions(&user.id, st.0.cfg.max_sessions, t)
        .await
    {
        Ok(evicted) => {
            let expires_at = revocation::outlived(&st.0.cfg.policy, t);
            for sid in evicted {
                tracing::info!(session = %sid, "oldest session ended: max_sessions reached");
                if let Err(e) = revoke(st, Revoked::Session { sid, expires_at }, t).await {
                    tracing::warn!(error = ?e, "could not revoke an evicted session's tokens");
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "could not bound the user's sessions"),
    }
    let access = access_token(st, user, &family, t).await?;
    Ok(token_body(st, user, access, refresh_token))
}

/// Sign up
///
/// Creates an account and its first session (when `signup` is open). Every attempt counts
/// against the client address, the name taken or not.
#[utoipa::path(post, path = "/signup", tag = "sessions", request_body = SignupRequest,
    responses(
        (status = 201, description = "The account and its session's tokens", body = Tokens,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "`invalid_username`, `invalid_email`, `weak_password`, `missing_field`, `invalid_json`", body = ErrorBody),
        (status = 403, description = "`signup_closed`", body = ErrorBody),
        (status = 409, description = "`username_taken`, `email_taken`", body = ErrorBody),
    ),
    security(()))]
pub async fn signup(
    State(st): State<AppState>,
    ClientIp(ip, listed): ClientIp,
    mut body: JsonObject,
) -> Result<Response, ApiError> {
    if !st.0.cfg.signup_open {
        return Err(ApiError::Forbidden(
            "signup_closed",
            "sign-up is closed; ask an administrator for an account".into(),
        ));
    }
    // Every attempt counts against the address, taken name or not: sign-up must be neither
    // a fast enumeration oracle nor a way to fill the hashing queue.
    if let Some(key) = st.0.limiter.address_key("signup", ip, listed) {
        st.0.limiter.begin(&[key]).await?;
    }
    let name = Username::parse_new(body.string("username")?)
        .map_err(|e| ApiError::BadRequest("invalid_username", e.to_string()))?;
    let email = match body.0.get("email") {
        None | Some(Value::Null) => None,
        Some(_) => Some(
            jotgate_core::email::normalise(body.string("email")?)
                .map_err(|e| ApiError::BadRequest("invalid_email", e.to_string()))?,
        ),
    };
    let pw = body.take_secret("password")?;
    password::check_policy_min(&pw, name.canonical(), st.0.cfg.password_min_length)
        .map_err(|e| ApiError::BadRequest("weak_password", e.to_string()))?;
    let taken = || ApiError::Conflict("username_taken", "username is already taken".into());
    // Cheap pre-check so a taken name costs no hash (a confusable spelling of a taken name
    // is taken); the insert below settles races.
    if crate::find_user(&*st.0.store, &name.lookup())
        .await?
        .is_some()
    {
        return Err(taken());
    }
    let email_taken = || ApiError::Conflict("email_taken", "email is already in use".into());
    if let Some(e) = &email
        && crate::find_account(&*st.0.store, e).await?.is_some()
    {
        return Err(email_taken());
    }
    let hash =
        st.0.pool
            .run(move |h, ws| h.hash_in(&pw, ws))
            .await?
            .map_err(ApiError::internal)?;
    let user =
        st.0.store
            .create_user(NewUser {
                id: uuid::Uuid::new_v4().to_string(),
                username_key: name.key().to_string(),
                username_display: name.display().to_string(),
                password_hash: hash,
                roles: vec![],
                created_at: now(),
                email,
            })
            .await
            .map_err(|e| match e {
                StoreError::Conflict("email") => email_taken(),
                StoreError::Conflict(_) => taken(),
                e => e.into(),
            })?;
    tracing::info!(user_id = %user.id, "account created");
    st.audit(
        crate::audit::Event::new(crate::audit::kind::SIGNUP)
            .user(&user.id)
            .ip(ip),
    )
    .await;
    let mut body = new_session(&st, &user, None).await?;
    // The device that made the account is known to it from the start.
    body.device_token = device_token_for(&st, &user.id, 0).await;
    let mut res = with_device_cookie(&st, body);
    *res.status_mut() = StatusCode::CREATED;
    Ok(res)
}

/// Log in
///
/// With a username or an email address (as `username`, or as `email`) and the password.
/// Failed attempts are counted per account and per address; past the limit the answer is
/// 429 with `Retry-After`, the password right or wrong.
#[utoipa::path(post, path = "/login", tag = "sessions", request_body = LoginRequest,
    responses(
        (status = 200, description = "A new session's tokens", body = Tokens,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "`invalid_username` (an over-long name, or one with a control character), `missing_field`, `invalid_field`, `invalid_json`", body = ErrorBody),
        (status = 401, description = "`bad_credentials`: no such account or a wrong password, alike", body = ErrorBody),
        (status = 403, description = "`user_blocked`", body = ErrorBody),
    ),
    security(()))]
pub async fn login(
    State(st): State<AppState>,
    ClientIp(ip, listed): ClientIp,
    headers: HeaderMap,
    mut body: JsonObject,
) -> Result<Response, ApiError> {
    // A username or an email address, as `username` (what OAuth clients send) or `email`.
    let field = if body.0.contains_key("email") && !body.0.contains_key("username") {
        "email"
    } else {
        "username"
    };
    let typed = body.string(field)?.to_string();
    let pw = body.take_secret("password")?;
    let device_token = match body.0.get("device_token") {
        None | Some(Value::Null) => None,
        Some(_) => Some(body.string("device_token")?.to_string()),
    };
    let presented =
        crate::device::presented(device_token.as_deref(), &headers, st.0.devices.https());
    // A flood beyond the hashing pool's capacity is shed here, before the store is asked
    // anything: a login without a device token this server made (checked in memory) must
    // be admitted — no more are under way at once than the pool can take.
    let mut admission = None;
    if !presented.iter().any(|t| st.0.devices.vouches(t, now())) {
        admit(&st, &mut admission)?;
    }
    let email = typed
        .contains('@')
        .then(|| jotgate_core::email::normalise(&typed).ok())
        .flatten();
    let lookup = match (&email, username::lookup_key(&typed)) {
        (_, Ok(l)) => Some(l),
        // An address longer than any username: looked up as an address only.
        (Some(_), Err(_)) => None,
        (None, Err(e)) => return Err(ApiError::BadRequest("invalid_username", e.to_string())),
    };
    // The account first, then the count. Every attempt counts in the bucket of what was
    // typed (its confusable skeleton, known or not: a locked bucket says nothing about
    // existence), and an attempt on an account also under its id, whatever identifier
    // named it (username, address, another spelling): no spelling adds guesses. Keys are
    // digests, so a long name does not grow the table by as much.
    let found = crate::metrics::timed("user_lookup", async {
        match (&email, &lookup) {
            (Some(e), _) => crate::find_account(&*st.0.store, e).await,
            (None, Some(l)) => crate::find_user(&*st.0.store, l).await,
            (None, None) => Ok(None),
        }
    })
    .await?;
    // Per (account, address) pair and per account across addresses (a ceiling an hour),
    // so guesses from elsewhere cannot lock the owner out at her own address.
    let untrusted = st.0.limiter.attempt_keys(
        found.as_ref().map(|r| r.user.id.as_str()),
        // An address in the bucket of its normal form, as it is looked up: no two
        // spellings of one address count apart.
        &username::bucket_key(email.as_deref().unwrap_or(&typed)),
        ip,
        listed,
    );
    // A device token of this account (checked in memory) trades those limits for its own
    // counter; one spent by wrong passwords, or any other, counts as none.
    let device = found.as_ref().and_then(|r| {
        presented.iter().find_map(|t| {
            st.0.devices
                .check(t, &r.user.id, r.devices_not_before, now())
        })
    });
    // A token that vouched above but is not this account's (another user's, a revoked
    // one) leaves the attempt untrusted: admitted like the flood, before it is counted.
    if device.is_none() {
        admit(&st, &mut admission)?;
    }
    let mut keys = match &device {
        Some(d) => vec![format!("dev:{}", d.id)],
        None => untrusted.clone(),
    };
    // The attempt is counted before any hashing: concurrent guesses cannot all be
    // evaluated under the limit. It stays counted as a failure unless it succeeds.
    // The account's id for the audit log: never what was typed (it may be a password
    // typed in the wrong field).
    let known: Option<String> = found.as_ref().map(|r| r.user.id.clone());
    let mut begun = st.0.limiter.begin(&keys).await;
    if device.is_some() && matches!(begun, Err(ApiError::RateLimited { .. })) {
        // A spent token counts as none: an untrusted login, admitted like any other (its
        // device counter was only read).
        admit(&st, &mut admission)?;
        keys = untrusted;
        begun = st.0.limiter.begin(&keys).await;
    }
    // Held until the answer: the place is given back when this login ends.
    let _admission = admission;
    if let Ok(b) = &begun
        && b.ceiling_reached
    {
        // Once per window: the owner (and the operator) learn that the account is being
        // guessed from many addresses.
        tracing::warn!(user_id = ?known, "login ceiling reached: further attempts wait an hour");
        let mut ev = crate::audit::Event::new(crate::audit::kind::LOGIN_CEILING).ip(ip);
        if let Some(id) = &known {
            ev = ev.user(id);
        }
        st.audit(ev).await;
    }
    if let Err(e) = begun {
        if matches!(e, ApiError::RateLimited { .. }) {
            crate::metrics::login("throttled");
            // A flood is throttled without a hash: one event per account (or address) a
            // minute, not one store write per refused attempt.
            let who = known
                .clone()
                .or(ip.map(|i| i.to_string()))
                .unwrap_or_default();
            if crate::audit::first_in_minute(&who) {
                let mut ev = crate::audit::Event::new(crate::audit::kind::LOGIN_THROTTLED).ip(ip);
                if let Some(id) = &known {
                    ev = ev.user(id);
                }
                st.audit(ev).await;
            }
        }
        return Err(e);
    }

    let record = if pw.len() > password::MAX_BYTES {
        None
    } else {
        found
    };
    // A device token's login waits in its own lane, ahead of any flood, served in turn
    // with other users' device-token logins.
    let address = ip.map_or_else(
        || crate::limits::NO_ADDRESS.to_string(),
        crate::limits::address_group,
    );
    let lane = match known.as_deref() {
        Some(user) if keys.first().is_some_and(|k| k.starts_with("dev:")) => {
            crate::limits::Lane::Trusted {
                user,
                address: &address,
            }
        }
        _ => crate::limits::Lane::Untrusted,
    };
    // Known and unknown users cost one argon2 verification each.
    let evaluated =
        st.0.pool
            .run_in(lane, move |h, ws| match record {
                Some(r) => {
                    let c = h.check_in(&pw, &r.password_hash, ws);
                    let rehash = (c.matched && c.rehash)
                        .then(|| h.hash_in(&pw, ws).ok())
                        .flatten();
                    (c.matched, rehash, Some(r))
                }
                None => {
                    h.verify_dummy_in(&pw, ws);
                    (false, None, None)
                }
            })
            .await;
    let (ok, rehash, record) = match evaluated {
        Ok(e) => e,
        Err(e) => {
            if matches!(e, ApiError::Busy) {
                crate::metrics::login("busy");
            }
            // Not evaluated (the pool is full): the attempt does not count.
            st.0.limiter.release(&keys).await;
            return Err(e);
        }
    };
    let record = match (ok, record) {
        (true, Some(r)) => r,
        // The attempt was counted as a failure before it was evaluated.
        _ => {
            crate::metrics::login("failed");
            let mut ev = crate::audit::Event::new(crate::audit::kind::LOGIN_FAILED).ip(ip);
            if let Some(id) = &known {
                ev = ev.user(id);
            }
            st.audit(ev).await;
            return Err(ApiError::BadCredentials);
        }
    };
    st.0.limiter.succeeded(&keys).await;
    // Only after the password matched: a guesser learns nothing about the block.
    if record.user.blocked {
        crate::metrics::login("blocked");
        st.audit(
            crate::audit::Event::new(crate::audit::kind::LOGIN_BLOCKED)
                .user(&record.user.id)
                .ip(ip),
        )
        .await;
        return Err(ApiError::Forbidden(
            "user_blocked",
            "this account is blocked; ask an administrator".into(),
        ));
    }
    if let Err(e) = st.0.store.record_login(&record.user.id, now()).await {
        tracing::warn!(error = %e, "could not record the login time");
    }
    let mut body = new_session(&st, &record.user, Some(&record.password_hash)).await?;
    body.device_token = device_token_for(&st, &record.user.id, record.devices_not_before).await;
    // After the session is kept, so after the hash was seen unchanged: an upgrade never
    // writes the old password back over a change that raced this login.
    if let Some(new_hash) = rehash
        && let Err(e) =
            st.0.store
                .set_password_hash(&record.user.id, &new_hash)
                .await
    {
        tracing::warn!(error = %e, "could not upgrade a password hash; will retry at next login");
    }
    crate::metrics::login("succeeded");
    st.audit(
        crate::audit::Event::new(crate::audit::kind::LOGIN_SUCCEEDED)
            .user(&record.user.id)
            .ip(ip),
    )
    .await;
    Ok(with_device_cookie(&st, body))
}

/// Admit an untrusted login ([`crate::limits::HashPool::admit`]) into `held`, unless it
/// holds a place already; shed it with 429 when the pool is full or as many are under way
/// as it can take.
fn admit(st: &AppState, held: &mut Option<crate::limits::Admission>) -> Result<(), ApiError> {
    if held.is_some() {
        return Ok(());
    }
    let admitted = if st.0.pool.untrusted_full() {
        crate::metrics::METRICS.hash_rejected.inc();
        Err(ApiError::Busy)
    } else {
        st.0.pool.admit()
    };
    *held = Some(admitted.inspect_err(|_| crate::metrics::login("busy"))?);
    Ok(())
}

/// A token answer, with its device token (if any) also set as the browser's cookie.
pub(crate) fn with_device_cookie(st: &AppState, body: Tokens) -> Response {
    let cookie = body.device_token.as_deref().map(|t| st.0.devices.cookie(t));
    let mut res = Json(body).into_response();
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        res.headers_mut().insert(header::SET_COOKIE, c);
    }
    res
}

/// Device tokens a user may be given in an hour (a stolen password cannot mint an
/// unbounded supply).
const DEVICE_TOKENS_PER_HOUR: u32 = 20;

/// A new device token for a user who just logged in, unless they are off or the user had
/// their hour's share.
pub(crate) async fn device_token_for(
    st: &AppState,
    user_id: &str,
    not_before: i64,
) -> Option<String> {
    if !st.0.devices.enabled() {
        return None;
    }
    // A bucket per clock hour: the count starts afresh each hour, logins or not.
    let t = now();
    let key = format!(
        "mint:{}:{}",
        jotgate_core::sha256_b64url(user_id.as_bytes()),
        t / 3600
    );
    match st
        .0
        .store
        .add_login_failure(&key, t.saturating_mul(1000), 3_600_000)
        .await
    {
        // Issued no earlier than the revocation this login's account read says: a login
        // in the second of a "log out everywhere" still gets a token that works.
        Ok(c) if c.count <= DEVICE_TOKENS_PER_HOUR => {
            Some(st.0.devices.mint(user_id, t.max(not_before)))
        }
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "could not count a device token; none given");
            None
        }
    }
}

/// Verify a token
///
/// Checks a JWT as `/private` would (signature, issuer, audience, expiry, revocations) and
/// answers its claims.
#[utoipa::path(post, path = "/verify", tag = "tokens", request_body = VerifyRequest,
    responses(
        (status = 200, description = "The token is valid", body = Verified),
        (status = 400, description = "`missing_field`, `invalid_field`, `invalid_json`", body = ErrorBody),
        (status = 401, description = "The token is missing, malformed, expired, revoked or not this issuer's", body = ErrorBody),
    ),
    security(()))]
pub async fn verify(
    State(st): State<AppState>,
    body: JsonObject,
) -> Result<Json<Verified>, ApiError> {
    let token = body.string("token")?;
    if token.is_empty() {
        return Err(ApiError::missing_token());
    }
    let principal = st.authenticate(token).await?;
    Ok(Json(Verified {
        status: "valid",
        claims: principal.claims.clone(),
    }))
}

/// `/private`'s answer, `{"message":"Hello <username>"}`, written straight into its bytes:
/// this is the hot path of a cached token. The same bytes as `serde_json` writes (it
/// escapes only `"`, `\` and control characters; a test holds them equal).
fn hello_json(name: &str) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"message":"Hello "#;
    let mut out = Vec::with_capacity(HEAD.len() + name.len() + 2);
    out.extend_from_slice(HEAD);
    if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.extend_from_slice(name.as_bytes());
    } else {
        // serde_json's string, without its quotes (serialising a `str` does not fail).
        let quoted = serde_json::to_string(name).unwrap_or_default();
        let inner = quoted
            .get(1..quoted.len().saturating_sub(1))
            .unwrap_or_default();
        out.extend_from_slice(inner.as_bytes());
    }
    out.extend_from_slice(b"\"}");
    out
}

/// A protected resource
///
/// Answers `Hello <username>` to a valid application token: the example every client
/// starts with.
#[utoipa::path(get, path = "/private", tag = "tokens",
    responses(
        (status = 200, description = "The token is valid", body = Greeting),
        (status = 400, description = "`invalid_request`: more than one credential", body = ErrorBody),
        (status = 401, description = "`token_missing`, or the token is invalid", body = ErrorBody),
    ),
    security(("user" = [])))]
pub async fn private(
    State(st): State<AppState>,
    // The request itself, not a `HeaderMap` extractor: that one clones every header.
    req: axum::extract::Request,
) -> Result<axum::response::Response, ApiError> {
    let p = st.authenticate_request(req.headers()).await?;
    let name = p.username.as_deref().unwrap_or_default();
    Ok(jotgate_verify::service::json_response(hello_json(name)))
}

/// Refresh
///
/// Trades a refresh token for a new pair. Each refresh token is single use: presenting one
/// again (outside a short grace for a lost answer) ends its whole session.
#[utoipa::path(post, path = "/refresh", tag = "sessions", request_body = RefreshRequest,
    responses(
        (status = 200, description = "The session's next tokens", body = Tokens,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "`missing_field`, `invalid_field`, `invalid_json`", body = ErrorBody),
        (status = 401, description = "`invalid_refresh_token`", body = ErrorBody),
    ),
    security(()))]
pub async fn refresh(
    State(st): State<AppState>,
    body: JsonObject,
) -> Result<Json<Tokens>, ApiError> {
    let presented = body.string("refresh_token")?;
    if presented.is_empty() || presented.len() > refresh::MAX_LEN {
        return Err(ApiError::InvalidRefreshToken);
    }
    let t = now();
    let nonce = refresh::nonce();
    let successor = refresh::successor(presented, &nonce);
    let outcome = crate::metrics::timed(
        "refresh_rotate",
        st.0.store.rotate_refresh(Rotate {
            presented_hash: refresh::hash(presented),
            nonce,
            successor_hash: refresh::hash(&successor),
            successor_expires_at: t + st.0.cfg.refresh_ttl,
            now: t,
            grace_secs: st.0.cfg.refresh_grace,
        }),
    )
    .await?;
    let (next, user_id, family) = match outcome {
        RotateOutcome::Rotated { user_id, family_id } => (successor, user_id, family_id),
        RotateOutcome::Repeat {
            user_id,
            family_id,
            nonce,
        } => (refresh::successor(presented, &nonce), user_id, family_id),
        RotateOutcome::Reused { family_id } => {
            tracing::warn!(session = %family_id, "refresh token reuse detected; session revoked");
            st.audit(
                crate::audit::Event::new(crate::audit::kind::REFRESH_REUSE)
                    .with("session", family_id.as_str()),
            )
            .await;
            revoke_session(&st, &family_id, None, t).await?;
            return Err(ApiError::InvalidRefreshToken);
        }
        RotateOutcome::Invalid => return Err(ApiError::InvalidRefreshToken),
    };
    let user =
        st.0.store
            .user_by_id(&user_id)
            .await?
            .filter(|u| !u.blocked)
            .ok_or(ApiError::InvalidRefreshToken)?;
    // Issued at the rotation's second, never later: a refresh racing "log out everywhere"
    // must not wait its way past the user's "not before".
    let access = access_token(&st, &user, &family, t).await?;
    Ok(Json(token_body(&st, &user, access, next)))
}

/// Store a revocation (so other instances and verifiers see it) and apply it here at once.
async fn revoke(st: &AppState, r: Revoked, t: i64) -> Result<(), ApiError> {
    st.0.store
        .revoke_token(&r.store_id(), r.expires_at(), t)
        .await?;
    st.0.denylist.record([r]);
    Ok(())
}

/// Session revocations of one user (without a pause as long as the login throttle's window,
/// 15 minutes) past which the next ones fold into a per-user "not before": a login/logout
/// loop must not grow every verifier's list (one entry per logout) without bound.
const FOLD_AFTER: u32 = 32;

/// End a session: its refresh tokens are dead, and every access token of it is refused
/// until they would have expired anyway. For a user (`sub`) with many recent session
/// revocations the entry is a per-user "not before" instead, which verifiers keep as one
/// entry per user (tokens of the user's other sessions then need a refresh).
async fn revoke_session(
    st: &AppState,
    family: &str,
    sub: Option<&str>,
    t: i64,
) -> Result<(), ApiError> {
    st.0.store.revoke_family(family, t).await?;
    let policy = &st.0.cfg.policy;
    let expires_at = revocation::outlived(policy, t);
    if let Some(sub) = sub {
        // The counters share one table and one window with the login throttle (a write
        // there sweeps counters older than its window: a shorter one would lift lockouts).
        let window_ms = st.0.cfg.rate_limit.reset_after.as_millis() as i64;
        let recent =
            st.0.store
                .add_login_failure(&format!("revocations:{sub}"), t * 1000, window_ms)
                .await?;
        if recent.count > FOLD_AFTER {
            // `not before` refuses tokens issued strictly before it: t + 1 covers this
            // second's, the one just ended among them.
            let not_before = t + 1;
            return revoke(
                st,
                Revoked::User {
                    sub: sub.into(),
                    not_before,
                    expires_at: revocation::outlived(policy, not_before),
                },
                t,
            )
            .await;
        }
    }
    revoke(
        st,
        Revoked::Session {
            sid: family.into(),
            expires_at,
        },
        t,
    )
    .await
}

/// End a session. Takes the access token (`Authorization: Bearer`), the refresh token
/// (`{"refresh_token": ...}`), or both — a client whose access token has expired can still
/// log out with its refresh token.
#[utoipa::path(post, path = "/logout", tag = "sessions",
    request_body(content = Option<LogoutRequest>, description = "Optional when the access token is sent"),
    responses(
        (status = 204, description = "The session ended"),
        (status = 400, description = "`token_mismatch`, `invalid_field`, `invalid_json`", body = ErrorBody),
        (status = 401, description = "`token_missing`, an invalid access token, or `invalid_refresh_token`", body = ErrorBody),
    ),
    security(("user" = []), ()))]
pub async fn logout(
    State(st): State<AppState>,
    headers: HeaderMap,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<StatusCode, ApiError> {
    let t = now();
    let refresh_token = match &body {
        Some(b) if b.0.contains_key("refresh_token") => Some(b.string("refresh_token")?),
        _ => None,
    };
    let by_refresh = match refresh_token {
        Some(r) if !r.is_empty() && r.len() <= refresh::MAX_LEN => {
            st.0.store.family_of(&refresh::hash(r)).await?
        }
        _ => None,
    };
    if refresh_token.is_some() && by_refresh.is_none() {
        return Err(ApiError::InvalidRefreshToken);
    }
    // Two Authorization headers are refused even when the refresh token would do.
    let access = match jotgate_verify::http::bearer(&headers, st.0.cfg.accept_x_access_token)? {
        Some(token) => Some(st.authenticate(token).await),
        None if by_refresh.is_none() => return Err(ApiError::missing_token()),
        None => None,
    };
    // Both credentials given: they must belong to one session, or one user's access token
    // would end another user's session.
    if let (Some(Ok(p)), Some(family)) = (&access, &by_refresh)
        && p.session_id() != Some(family.family_id.as_str())
    {
        return Err(ApiError::BadRequest(
            "token_mismatch",
            "the access token and the refresh token belong to different sessions".into(),
        ));
    }
    match (access, by_refresh) {
        (Some(Err(e)), None) => Err(e),
        (Some(Ok(p)), _) => {
            match (p.session_id(), p.token_id()) {
                // The session entry refuses every access token of the session, this one
                // among them: one feed entry per logout.
                (Some(sid), _) => revoke_session(&st, sid, Some(&p.subject), t).await?,
                (None, Some(jti)) => {
                    revoke(
                        &st,
                        Revoked::Token {
                            jti: jti.to_string(),
                            // Accepted until exp + leeway: refused as long.
                            expires_at: p.expires_at.saturating_add(st.0.cfg.policy.leeway),
                        },
                        t,
                    )
                    .await?
                }
                // The verifier requires `jti` of this issuer's tokens.
                (None, None) => return Err(ApiError::internal("a verified token without jti")),
            }
            Ok(StatusCode::NO_CONTENT)
        }
        (_, Some(f)) => {
            revoke_session(&st, &f.family_id, Some(&f.user_id), t).await?;
            Ok(StatusCode::NO_CONTENT)
        }
        (None, None) => Err(ApiError::missing_token()),
    }
}

/// Log out everywhere: every session of the caller ends, and every access token issued to
/// them until now is refused (a per-user "not before").
#[utoipa::path(post, path = "/logout-all", tag = "sessions",
    responses(
        (status = 204, description = "Every session of the caller ended"),
        (status = 400, description = "`invalid_request`: more than one credential", body = ErrorBody),
        (status = 401, description = "`token_missing`, or the token is invalid", body = ErrorBody),
        (status = 403, description = "`client_token`: a machine client's token", body = ErrorBody),
    ),
    security(("user" = [])))]
pub async fn logout_all(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let p = st.authenticate_request(&headers).await?;
    // A user's act: a machine client's token (RFC 9068 `client_id`, no session) has no
    // sessions to end; its tokens end when the client is deleted or its secret rotated.
    if p.claims.contains_key("client_id") && !p.claims.contains_key("sid") {
        return Err(ApiError::Forbidden(
            "client_token",
            "log out everywhere is for users; a machine client's tokens end with `jotgate clients rotate-secret`".into(),
        ));
    }
    let t = now();
    let done =
        revocation::revoke_user_and_devices(&*st.0.store, &st.0.cfg.policy, &p.subject, t).await?;
    st.0.denylist.record(done.entries);
    st.audit(crate::audit::Event::new(crate::audit::kind::LOGOUT_ALL).user(&p.subject))
        .await;
    Ok(StatusCode::NO_CONTENT)
}

/// Longest long poll a feed reader may ask for (under the 30 s request timeout).
const MAX_FEED_WAIT: u64 = 25;

/// `GET /api/v1/revocations?since=<cursor>&wait=<seconds>`: the revocation change feed
/// that edge verifiers follow. Opened by `feed_token` (Bearer). With `wait`, an empty
/// answer is held until something is revoked or the wait ends.
#[utoipa::path(get, path = "/api/v1/revocations", tag = "tokens",
    params(
        ("since" = Option<i64>, Query, minimum = 0, description = "The `cursor` of the last page read; 0 for all"),
        ("wait" = Option<i64>, Query, minimum = 0, description = "Hold an empty answer up to this many seconds (at most 25: more is 25)"),
    ),
    responses(
        (status = 200, description = "Revocations after `since`", body = jotgate_verify::FeedPage),
        (status = 400, description = "`invalid_query`", body = ErrorBody),
        (status = 401, description = "`token_missing`, `invalid_feed_token`", body = ErrorBody),
        (status = 404, description = "`feed_disabled`: no `feed_token` is configured", body = ErrorBody),
    ),
    security(("feed" = [])))]
pub async fn revocation_feed(
    State(st): State<AppState>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Result<Json<Value>, ApiError> {
    use secrecy::ExposeSecret;
    use subtle::ConstantTimeEq;
    let Some(expected) = &st.0.cfg.feed_token else {
        return Err(ApiError::FeedDisabled);
    };
    let presented =
        jotgate_verify::http::bearer(&headers, false)?.ok_or_else(ApiError::missing_token)?;
    let a = jotgate_core::sha256_b64url(presented.as_bytes());
    let b = jotgate_core::sha256_b64url(expected.expose_secret().as_bytes());
    if !bool::from(a.as_bytes().ct_eq(b.as_bytes())) {
        return Err(ApiError::InvalidFeedToken);
    }
    let (mut since, mut wait) = (0i64, 0u64);
    for pair in uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let bad = |what: &str| {
            ApiError::BadRequest(
                "invalid_query",
                format!("{what} must be a non-negative integer"),
            )
        };
        match k {
            "since" => {
                since = v
                    .parse()
                    .ok()
                    .filter(|n: &i64| *n >= 0)
                    .ok_or_else(|| bad("since"))?
            }
            // Any i64 a client sends (the document's integer), held at most MAX_FEED_WAIT.
            "wait" => {
                wait = v
                    .parse::<i64>()
                    .ok()
                    .and_then(|n| u64::try_from(n).ok())
                    .ok_or_else(|| bad("wait"))?
            }
            _ => {}
        }
    }
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(wait.min(MAX_FEED_WAIT));
    loop {
        // Subscribe before reading, so a revocation between the read and the wait is not lost.
        let changed = st.0.denylist.changed().notified();
        let page = revocation::read_feed(&*st.0.store, since, now()).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !page.revocations.is_empty() || left.is_zero() {
            return Ok(Json(
                serde_json::to_value(page).map_err(ApiError::internal)?,
            ));
        }
        since = page.cursor;
        // Another instance's revocations reach the store, not this process: look again
        // every second; this instance's own wake the wait at once.
        let _ = tokio::time::timeout(left.min(std::time::Duration::from_secs(1)), changed).await;
    }
}

/// The signing keys
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "discovery",
    responses((status = 200, description = "The public keys (RFC 7517)", body = JwkSet,
        headers(("cache-control" = String, description = "public, max-age=300")))),
    security(()))]
pub async fn jwks(State(st): State<AppState>) -> Response {
    let body = st.0.keys.current().jwks().clone();
    let mut res = Json(body).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(DOCUMENT_MAX_AGE),
    );
    res
}

/// How long verifiers may cache the JWKS and discovery documents: no longer than a new
/// key is published before it signs (`jotgate keys rotate --activate-in`, default 300 s).
const DOCUMENT_MAX_AGE: &str = "public, max-age=300";

/// OpenID Provider metadata
#[utoipa::path(get, path = "/.well-known/openid-configuration", tag = "discovery",
    responses((status = 200, description = "OpenID Connect Discovery 1.0 / RFC 8414", body = Discovery,
        headers(("cache-control" = String, description = "public, max-age=300")))),
    security(()))]
pub async fn discovery(State(st): State<AppState>) -> Response {
    let issuer = st.0.cfg.policy.issuer.trim_end_matches('/').to_string();
    let algs: Vec<String> =
        st.0.keys
            .current()
            .algorithms()
            .iter()
            .map(|a| a.to_string())
            .collect();
    let mut res = Json(Discovery {
        issuer: st.0.cfg.policy.issuer.clone(),
        jwks_uri: format!("{issuer}/.well-known/jwks.json"),
        token_endpoint: format!("{issuer}/oauth/token"),
        grant_types_supported: &["client_credentials"],
        token_endpoint_auth_methods_supported: &["client_secret_basic", "client_secret_post"],
        subject_types_supported: &["public"],
        id_token_signing_alg_values_supported: algs.clone(),
        access_token_signing_alg_values_supported: algs,
        scopes_supported: &["profile"],
        claims_supported: &[
            "iss",
            "sub",
            "aud",
            "exp",
            "iat",
            "nbf",
            "jti",
            "username",
            "roles",
            "scope",
            "sid",
            "client_id",
        ],
    })
    .into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(DOCUMENT_MAX_AGE),
    );
    res
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process answers", body = Health)),
    security(()))]
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: the store answers (the signing key is loaded before the server listens).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the store does not answer", body = Readiness,
            headers(("retry-after" = u64))),
    ),
    security(()))]
pub async fn readyz(State(st): State<AppState>) -> Response {
    match st.readiness().await {
        Ok(()) => Json(Readiness {
            status: "ready",
            reason: None,
        })
        .into_response(),
        Err(reason) => {
            let mut res = (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Readiness {
                    status: "not_ready",
                    reason: Some(reason),
                }),
            )
                .into_response();
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            res
        }
    }
}

pub async fn not_found() -> ApiError {
    ApiError::NotFound
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    #[test]
    fn hello_is_what_serde_json_writes() {
        for name in [
            "bench",
            "",
            "é ü 中",
            "q\"uote",
            "back\\slash",
            "ctl\u{1}\n\t",
            "del\u{7f}",
            "</script>",
            "\u{2028}",
        ] {
            let want = serde_json::to_vec(&serde_json::json!({"message": format!("Hello {name}")}))
                .expect("json");
            assert_eq!(
                super::hello_json(name),
                want,
                "{name:?}: {}",
                String::from_utf8_lossy(&want)
            );
        }
    }
}

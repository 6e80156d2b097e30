//! Administrative commands that work on the same store as the server: users, keys, tokens.
//! They print results on stdout; errors go to stderr with a non-zero exit.

use std::io::Read;

use anyhow::{Context, bail};
use jotgate_core::{KeyMaterial, SigningAlg, Username, password};
use jotgate_server::keyring::{self, KeyRing};
use jotgate_server::now;
use jotgate_store::{NewUser, StoreError, StoredKey};
use serde_json::json;

use crate::settings::Settings;
use crate::{init_crypto, open_store};

/// Read a password from stdin: the first line, without its line ending.
pub fn read_password(input: impl Read) -> anyhow::Result<String> {
    let mut buf = String::new();
    input
        .take(4096)
        .read_to_string(&mut buf)
        .context("cannot read the password from stdin")?;
    let pw = buf.lines().next().unwrap_or("").to_string();
    if pw.is_empty() {
        bail!(
            "no password on stdin: pipe it in, e.g. `printf '%s\\n' \"$PW\" | jotgate users add alice`"
        );
    }
    Ok(pw)
}

pub async fn users_add(
    s: &Settings,
    name: &str,
    roles: &[String],
    email: Option<&str>,
    pw: String,
) -> anyhow::Result<String> {
    let username =
        Username::parse_new(name).map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
    let email = email
        .map(jotgate_core::email::normalise)
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid email: {e}"))?;
    for r in roles {
        if !jotgate_core::claims::valid_role(r) {
            bail!("invalid role {r:?}: use lowercase letters, digits, '-', '_' or ':'");
        }
    }
    let min_len = s.server_config()?.password_min_length;
    password::check_policy_min(&pw, username.canonical(), min_len)
        .map_err(|e| anyhow::anyhow!("weak password: {e}"))?;
    let store = open_store(s).await?;
    if jotgate_server::find_user(&*store, &username.lookup())
        .await?
        .is_some()
    {
        bail!("username {name:?} is already taken");
    }
    if let Some(e) = &email
        && jotgate_server::find_account(&*store, e).await?.is_some()
    {
        bail!("email {e:?} is already in use");
    }
    let hasher = s.password_hasher()?;
    let hash = hasher.hash(&pw)?;
    let mut roles = roles.to_vec();
    roles.sort();
    roles.dedup();
    let user = store
        .create_user(NewUser {
            id: uuid::Uuid::new_v4().to_string(),
            username_key: username.key().to_string(),
            username_display: username.display().to_string(),
            password_hash: hash,
            roles,
            created_at: now(),
            email,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict("email") => anyhow::anyhow!("email is already in use"),
            StoreError::Conflict(_) => anyhow::anyhow!("username {name:?} is already taken"),
            e => e.into(),
        })?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::USER_CREATED).user(&user.id),
    )
    .await;
    Ok(serde_json::to_string_pretty(&user)?)
}

pub async fn users_list(s: &Settings, as_json: bool) -> anyhow::Result<String> {
    let users = open_store(s).await?.list_users().await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&users)?);
    }
    let mut out = format!(
        "{:<36}  {:<24}  {:<20}  {}\n",
        "ID", "USERNAME", "ROLES", "CREATED"
    );
    for u in users {
        out.push_str(&format!(
            "{:<36}  {:<24}  {:<20}  {}\n",
            u.id,
            u.username,
            u.roles.join(","),
            u.created_at
        ));
    }
    Ok(out)
}

pub async fn keys_list(s: &Settings, as_json: bool) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let keys = store.keys().await?;
    let statuses = keyring::statuses(&keys, &s.policy()?, now());
    let rows: Vec<_> = keys
        .iter()
        .zip(statuses)
        .map(|(k, status)| {
            json!({
                "kid": k.kid, "alg": k.alg, "status": status.as_str(),
                "activates_at": k.created_at, "retired_at": k.retired_at,
            })
        })
        .collect();
    if as_json {
        return Ok(serde_json::to_string_pretty(&rows)?);
    }
    let store_id = store.store_id(false).await?;
    let mut out = format!(
        "{:<44}  {:<6}  {:<9}  {:<12}  {}\n",
        "KID", "ALG", "STATUS", "ACTIVATES", "RETIRED"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<44}  {:<6}  {:<9}  {:<12}  {}\n",
            r["kid"].as_str().unwrap_or(""),
            r["alg"].as_str().unwrap_or(""),
            r["status"].as_str().unwrap_or(""),
            r["activates_at"],
            r["retired_at"]
                .as_i64()
                .map_or("-".into(), |v| v.to_string()),
        ));
    }
    if let Some(id) = store_id {
        // Keys sealed with a master key are bound to it: a restore must keep it.
        out.push_str(&format!("store id: {id}\n"));
    }
    Ok(out)
}

async fn store_key(s: &Settings, key: &KeyMaterial, activate_in: i64) -> anyhow::Result<String> {
    insert_key(&*open_store(s).await?, key, activate_in).await
}

async fn insert_key(
    store: &dyn jotgate_store::Store,
    key: &KeyMaterial,
    activate_in: i64,
) -> anyhow::Result<String> {
    let at = now() + activate_in.max(0);
    store
        .insert_key(StoredKey {
            kid: key.kid().to_string(),
            alg: key.alg().as_str().to_string(),
            private_der: key.secret_bytes().to_vec(),
            created_at: at,
            retired_at: None,
        })
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => {
                anyhow::anyhow!("a key with kid {:?} already exists", key.kid())
            }
            e => e.into(),
        })?;
    let when = if activate_in > 0 {
        format!("published now, signs from {at} (in {activate_in} s)")
    } else {
        "signing now".to_string()
    };
    Ok(format!("{} {} {when}\n", key.kid(), key.alg()))
}

pub async fn keys_rotate(
    s: &Settings,
    alg: Option<&str>,
    activate_in: i64,
) -> anyhow::Result<String> {
    init_crypto();
    let alg = match alg {
        Some(a) => SigningAlg::parse(a)?,
        None => s.alg()?,
    };
    if alg == SigningAlg::HS256 {
        bail!("HS256 uses the configured shared secret; there is no key to rotate in the store");
    }
    let key = KeyMaterial::generate(alg)?;
    let out = store_key(s, &key, activate_in).await?;
    let store = open_store(s).await?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::KEY_ROTATED)
            .with("kid", key.kid()),
    )
    .await;
    Ok(out)
}

pub async fn keys_import(
    s: &Settings,
    text: &str,
    kid: Option<String>,
    activate_in: i64,
) -> anyhow::Result<String> {
    let text = text.trim();
    let key = if text.starts_with('{') {
        KeyMaterial::from_jwk(text, kid)
    } else {
        KeyMaterial::from_pem(text, kid)
    }
    .context("cannot import the key")?;
    let out = store_key(s, &key, activate_in).await?;
    let store = open_store(s).await?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::KEY_IMPORTED)
            .with("kid", key.kid()),
    )
    .await;
    Ok(out)
}

/// Retire (`revoke = false`) or revoke a key. A retired key signs no more and stays
/// published until its last token expires; tokens it signs after its retirement are
/// refused. A revoked key leaves the JWKS at once and every token it signed is refused.
/// Either way, when it is the signing key a successor of the same algorithm is generated
/// first, and the change goes out through the revocation feed to every server, gateway and
/// authorizer.
async fn end_key(s: &Settings, kid: &str, revoke: bool) -> anyhow::Result<String> {
    init_crypto();
    let store = open_store(s).await?;
    let policy = s.policy()?;
    let t = now();
    let keys = store.keys().await?;
    let Some(target) = keys.iter().find(|k| k.kid == kid) else {
        bail!("no key with kid {kid:?}");
    };
    let statuses = keyring::statuses(&keys, &policy, t);
    let signing = keys
        .iter()
        .zip(&statuses)
        .any(|(k, st)| k.kid == kid && *st == keyring::KeyStatus::Signing);
    let mut out = String::new();
    if signing {
        let alg = SigningAlg::parse(&target.alg)?;
        let successor = KeyMaterial::generate(alg)?;
        out.push_str(&insert_key(&*store, &successor, 0).await?);
    }
    // A revoked key counts as retired before it ever signed (the epoch): whatever the
    // servers' token lifetime, it is published no more and none of its tokens passes.
    let at = if revoke { 0 } else { t };
    // Feed entries outlive any token the key may have signed, whatever lifetime the
    // servers use (this command may run with other settings than they do).
    let grace = (policy.access_ttl + policy.leeway).max(7 * 24 * 3600);
    store.retire_key(kid, at).await.map_err(|e| match e {
        StoreError::NotFound(_) => anyhow::anyhow!("no key with kid {kid:?}"),
        e => e.into(),
    })?;
    // A key retired earlier already (the store keeps the earlier instant) is announced
    // with that instant: tokens it signed since are refused at the edge too.
    let not_after = target.retired_at.map_or(at, |earlier| earlier.min(at));
    let entry = jotgate_verify::Revoked::Key {
        kid: kid.to_string(),
        not_after,
        expires_at: t + grace,
    };
    store
        .revoke_token(&entry.store_id(), entry.expires_at(), t)
        .await?;
    let kind = if revoke {
        jotgate_server::audit::kind::KEY_REVOKED
    } else {
        jotgate_server::audit::kind::KEY_RETIRED
    };
    audited(
        &*store,
        jotgate_server::audit::Event::new(kind).with("kid", kid),
    )
    .await;
    out.push_str(&if revoke {
        format!(
            "{kid} revoked: withdrawn from the JWKS, and every token it signed is refused (servers within a second or two, edge verifiers within the feed delay)\n"
        )
    } else {
        format!(
            "{kid} retired: it signs no more, tokens it signs from now on are refused, and it leaves the JWKS when its last token expires\n"
        )
    });
    Ok(out)
}

/// Encrypt, with the configured master key, every signing key stored unencrypted.
pub async fn keys_seal(s: &Settings) -> anyhow::Result<String> {
    let store = crate::open_sealed(s).await?;
    let sealed = store.seal_plain_keys().await?;
    Ok(if sealed.is_empty() {
        "every signing key is encrypted already\n".to_string()
    } else {
        sealed.iter().map(|k| format!("{k} sealed\n")).collect()
    })
}

pub async fn keys_retire(s: &Settings, kid: &str) -> anyhow::Result<String> {
    end_key(s, kid, false).await
}

pub async fn keys_revoke(s: &Settings, kid: &str) -> anyhow::Result<String> {
    end_key(s, kid, true).await
}

/// Log a user out everywhere: end every session and refuse every access token issued to it
/// until now. Running servers apply it within sync_interval; verifiers following the
/// revocation feed within about a second.
pub async fn users_revoke(s: &Settings, name: &str) -> anyhow::Result<String> {
    let lookup = jotgate_core::username::lookup_key(name)
        .map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
    let store = open_store(s).await?;
    let record = jotgate_server::find_user(&*store, &lookup)
        .await?
        .ok_or_else(|| anyhow::anyhow!("no user named {name:?}"))?;
    let done = jotgate_server::revocation::revoke_user_and_devices(
        &*store,
        &s.policy()?,
        &record.user.id,
        now(),
    )
    .await?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::USER_SESSIONS_REVOKED)
            .user(&record.user.id),
    )
    .await;
    Ok(format!(
        "{}: {} session(s) ended; access tokens issued until now are refused\n",
        record.user.username, done.sessions
    ))
}

fn blocks_table(blocks: &[jotgate_server::limits::Block]) -> String {
    if blocks.is_empty() {
        return "no blocks\n".into();
    }
    let mut out = format!("{:<42} {:>8}  {}\n", "ADDRESS", "FAILURES", "UNTIL");
    for b in blocks {
        let until = crate::logging::date_time_ms(b.until_ms);
        let address = b
            .address
            .as_deref()
            .unwrap_or("(every address: hourly ceiling)");
        out.push_str(&format!("{address:<42} {:>8}  {until}\n", b.failures));
    }
    out
}

/// The login limits' blocks on a user (`jotgate users blocks`).
pub async fn users_blocks(s: &Settings, name: &str, as_json: bool) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let record = account(&*store, name).await?;
    let limiter = jotgate_server::limits::LoginLimiter::new(s.rate_limit()?, store);
    let blocks = limiter.blocks(&record.user).await?;
    Ok(if as_json {
        let shown = jotgate_server::schema::UserBlocks::from(blocks);
        format!("{}\n", serde_json::to_string(&shown)?)
    } else {
        blocks_table(&blocks)
    })
}

/// Lift the login limits' blocks on a user (`jotgate users unblock`).
pub async fn users_unblock(s: &Settings, name: &str) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let record = account(&*store, name).await?;
    let limiter = jotgate_server::limits::LoginLimiter::new(s.rate_limit()?, store.clone());
    let lifted = limiter.unblock(&record.user).await?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::LOGIN_UNBLOCKED)
            .user(&record.user.id)
            .with("blocks", lifted.len()),
    )
    .await;
    Ok(format!(
        "{}: {} block(s) lifted\n",
        record.user.username,
        lifted.len()
    ))
}

/// How a role or user change reads on the command line: what happened to sessions.
fn ended(r: &jotgate_server::accounts::Revoking) -> String {
    match r.users {
        0 => String::new(),
        1 => "; 1 user's sessions ended (their access tokens issued until now are refused)".into(),
        n => format!(
            "; {n} users' sessions ended (their access tokens issued until now are refused)"
        ),
    }
}

/// Replace a user's roles (`jotgate users set-roles`).
pub async fn users_set_roles(s: &Settings, name: &str, roles: &[String]) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let record = account(&*store, name).await?;
    let done = jotgate_server::accounts::set_user_roles(
        &*store,
        &s.policy()?,
        &record.user.id,
        roles,
        now(),
    )
    .await?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::USER_ROLES)
            .user(&record.user.id)
            .with("before", done.before.clone())
            .with("after", done.after.clone()),
    )
    .await;
    Ok(format!(
        "{}: roles [{}] (were [{}]){}\n",
        record.user.username,
        done.after.join(", "),
        done.before.join(", "),
        ended(&done.revoking)
    ))
}

/// The account a username or an email address names.
async fn account(
    store: &dyn jotgate_store::Store,
    name: &str,
) -> anyhow::Result<jotgate_store::UserRecord> {
    let found = match jotgate_core::email::normalise(name) {
        Ok(e) if name.contains('@') => jotgate_server::find_account(store, &e).await?,
        _ => {
            let lookup = jotgate_core::username::lookup_key(name)
                .map_err(|e| anyhow::anyhow!("invalid username: {e}"))?;
            jotgate_server::find_user(store, &lookup).await?
        }
    };
    found.ok_or_else(|| anyhow::anyhow!("no user named {name:?}"))
}

/// Change a user's address, its verification or the block (`jotgate users update`).
pub async fn users_update(
    s: &Settings,
    name: &str,
    patch: jotgate_store::UserPatch,
) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let record = account(&*store, name).await?;
    let done =
        jotgate_server::accounts::update_user(&*store, &s.policy()?, &record.user.id, patch, now())
            .await
            .map_err(|e| match e {
                jotgate_server::accounts::AccountError::Store(StoreError::Conflict(_)) => {
                    anyhow::anyhow!("that email address is already in use")
                }
                e => e.into(),
            })?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::USER_UPDATED)
            .user(&record.user.id)
            .with("blocked", done.after.blocked),
    )
    .await;
    Ok(format!(
        "{}{}\n",
        serde_json::to_string_pretty(&done.after)?,
        ended(&done.revoking)
    ))
}

fn secret_out(id: &str, secret: &str, json: bool) -> anyhow::Result<String> {
    Ok(if json {
        serde_json::to_string(&json!({"client_id": id, "client_secret": secret}))?
    } else {
        format!(
            "client_id:     {id}\nclient_secret: {secret}\n(the secret is shown once; only its hash is kept)\n"
        )
    })
}

/// Register a machine client (`jotgate clients add`).
pub async fn clients_add(
    s: &Settings,
    name: &str,
    scopes: &[String],
    audiences: &[String],
    json: bool,
) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let (c, secret) =
        jotgate_server::clients::create(&*store, &s.policy()?, name, scopes, audiences, now())
            .await?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::CLIENT_CREATED)
            .user(&c.id)
            .with("scopes", c.scopes.clone()),
    )
    .await;
    secret_out(&c.id, &secret, json)
}

/// `jotgate clients list`.
pub async fn clients_list(s: &Settings, as_json: bool) -> anyhow::Result<String> {
    let clients = open_store(s).await?.clients().await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&clients)?);
    }
    let mut out = format!(
        "{:<25}  {:<20}  {:<40}  {}\n",
        "CLIENT_ID", "NAME", "SCOPES", "AUDIENCES"
    );
    for c in clients {
        out.push_str(&format!(
            "{:<25}  {:<20}  {:<40}  {}\n",
            c.id,
            c.name,
            c.scopes.join(" "),
            c.audiences.join(" ")
        ));
    }
    Ok(out)
}

/// `jotgate clients rotate-secret`.
pub async fn clients_rotate_secret(s: &Settings, id: &str, json: bool) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    match jotgate_server::clients::rotate_secret(&*store, &s.policy()?, id, now()).await {
        Err(jotgate_server::accounts::AccountError::NotFound(_)) => bail!("no client {id:?}"),
        r => {
            let secret = r?.0;
            audited(
                &*store,
                jotgate_server::audit::Event::new(
                    jotgate_server::audit::kind::CLIENT_SECRET_ROTATED,
                )
                .user(id),
            )
            .await;
            secret_out(id, &secret, json)
        }
    }
}

/// `jotgate clients delete`.
pub async fn clients_delete(s: &Settings, id: &str) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    match jotgate_server::clients::delete(&*store, &s.policy()?, id, now()).await {
        Err(jotgate_server::accounts::AccountError::NotFound(_)) => bail!("no client {id:?}"),
        r => {
            let name = r?.0.name;
            audited(
                &*store,
                jotgate_server::audit::Event::new(jotgate_server::audit::kind::CLIENT_DELETED)
                    .user(id),
            )
            .await;
            Ok(format!(
                "client {id} ({name}) deleted; the tokens it holds are refused\n"
            ))
        }
    }
}

/// `jotgate audit tail`.
pub async fn audit_tail(
    s: &Settings,
    since_secs: i64,
    kind: Option<String>,
    user: Option<String>,
    limit: usize,
    as_json: bool,
) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let events = store
        .audit_events(jotgate_store::AuditQuery {
            since_ms: (now() - since_secs.max(0)) * 1000,
            before_ms: None,
            kind,
            user,
            limit: limit.clamp(1, 10_000),
        })
        .await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&events)?);
    }
    let mut out = format!(
        "{:<24}  {:<24}  {:<38}  {:<26}  {}\n",
        "AT", "TYPE", "USER", "ACTOR", "DETAIL"
    );
    for e in events {
        out.push_str(&format!(
            "{:<24}  {:<24}  {:<38}  {:<26}  {}{}\n",
            crate::logging::date_time_ms(e.at_ms),
            e.kind,
            e.user.as_deref().unwrap_or("-"),
            e.actor.as_deref().unwrap_or("-"),
            e.ip.map(|i| format!("ip={i} ")).unwrap_or_default(),
            serde_json::Value::Object(e.detail),
        ));
    }
    Ok(out)
}

/// Record what the command line did (actor `cli`).
async fn audited(store: &dyn jotgate_store::Store, e: jotgate_server::audit::Event<'_>) {
    jotgate_server::audit::record(
        store,
        jotgate_server::audit::DEFAULT_RETENTION_DAYS,
        e.actor("cli"),
    )
    .await
}

/// Create or replace a role (`jotgate roles set`).
pub async fn roles_set(s: &Settings, name: &str, scopes: &[String]) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let done =
        jotgate_server::accounts::set_role(&*store, &s.policy()?, name, scopes, now()).await?;
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::ROLE_CHANGED)
            .with("role", done.role.name.as_str())
            .with("scopes", done.role.scopes.clone())
            .with("users_revoked", done.revoking.users),
    )
    .await;
    Ok(format!(
        "role {} {}: {}{}\n",
        done.role.name,
        if done.previous.is_some() {
            "replaced"
        } else {
            "created"
        },
        if done.role.scopes.is_empty() {
            "no scopes".to_string()
        } else {
            done.role.scopes.join(" ")
        },
        ended(&done.revoking)
    ))
}

/// `jotgate roles list`.
pub async fn roles_list(s: &Settings, as_json: bool) -> anyhow::Result<String> {
    let roles = open_store(s).await?.roles().await?;
    if as_json {
        return Ok(serde_json::to_string_pretty(&roles)? + "\n");
    }
    let mut out = format!("{:<24}  {}\n", "ROLE", "SCOPES");
    for r in roles {
        out.push_str(&format!("{:<24}  {}\n", r.name, r.scopes.join(" ")));
    }
    Ok(out)
}

/// Delete a role (`jotgate roles delete`).
pub async fn roles_delete(s: &Settings, name: &str) -> anyhow::Result<String> {
    let store = open_store(s).await?;
    let (role, revoking) =
        match jotgate_server::accounts::delete_role(&*store, &s.policy()?, name, now()).await {
            Err(jotgate_server::accounts::AccountError::NotFound(_)) => {
                bail!("no role named {name:?}")
            }
            r => r?,
        };
    audited(
        &*store,
        jotgate_server::audit::Event::new(jotgate_server::audit::kind::ROLE_DELETED)
            .with("role", role.name.as_str())
            .with("users_revoked", revoking.users),
    )
    .await;
    Ok(format!("role {} deleted{}\n", role.name, ended(&revoking)))
}

/// Verify an access token against this store's keys and revocations; print its claims.
pub async fn token_verify(s: &Settings, token: &str) -> anyhow::Result<String> {
    let policy = s.policy()?;
    if s.tokens.issuer.is_none() {
        eprintln!(
            "note: no issuer configured: checking `iss` against {}, the issuer `jotgate serve` takes by default (set JOTGATE_ISSUER or `issuer` in the config file as serve has it)",
            policy.issuer
        );
    }
    let store = open_store(s).await?;
    let t = now();
    let ring = match s.key_source()? {
        jotgate_server::KeySource::SharedSecret(k) => KeyRing::shared_secret(&k)?,
        jotgate_server::KeySource::Stored { .. } => {
            KeyRing::from_stored(&store.keys().await?, &policy, t)?
        }
    };
    // The server's own verifier and revocations: the same answer as its API would give.
    let verifier = keyring::own_verifier(&policy, &ring, 0)?;
    jotgate_server::revocation::Denylist::new(verifier.clone(), policy.issuer.clone())
        .sync(&*store, t)
        .await?;
    let claims = verifier
        .verify(token.trim())
        .await
        .map_err(|e| anyhow::anyhow!("invalid token: {e} ({})", e.code()))?
        .claims
        .clone();
    Ok(serde_json::to_string_pretty(&claims)?)
}

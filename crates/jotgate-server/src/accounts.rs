//! Account changes that reach into tokens: roles (named bags of scopes) and the roles a user
//! holds. A change that takes a role or a scope away from someone ends that user's sessions
//! and refuses the access tokens issued to them until now ([`revocation::revoke_user`]), so
//! neither a refresh nor a token in flight keeps what was taken; a change that only adds
//! shows up in the next token. Used by `jotgate roles …` / `jotgate users set-roles` and,
//! with the same rules, by the management API.

use std::collections::BTreeSet;

use jotgate_core::TokenPolicy;
use jotgate_core::claims::{scopes_for_roles, valid_role, valid_scope};
use jotgate_store::{Role, Store, StoreError, User, UserPatch};
use jotgate_verify::Revoked;

use crate::revocation;

/// Most scopes in one role.
pub const MAX_SCOPES_PER_ROLE: usize = 100;
/// Most roles one user holds.
pub const MAX_ROLES_PER_USER: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The request is malformed: the message says what to change.
    #[error("{0}")]
    Invalid(String),
    #[error("no such {0}")]
    NotFound(&'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a change did to tokens: users whose sessions ended, and the revocations stored
/// (for a server to apply at once; other instances and verifiers read them from the feed).
#[derive(Debug, Default)]
pub struct Revoking {
    pub users: usize,
    pub entries: Vec<Revoked>,
}

impl Revoking {
    async fn user(
        &mut self,
        store: &dyn Store,
        policy: &TokenPolicy,
        user_id: &str,
        t: i64,
    ) -> Result<(), AccountError> {
        let done = revocation::revoke_user(store, policy, user_id, t).await?;
        self.users += 1;
        self.entries.extend(done.entries);
        Ok(())
    }

    /// [`user`](Self::user), and the user's device tokens with it (a block).
    async fn user_and_devices(
        &mut self,
        store: &dyn Store,
        policy: &TokenPolicy,
        user_id: &str,
        t: i64,
    ) -> Result<(), AccountError> {
        let done = revocation::revoke_user_and_devices(store, policy, user_id, t).await?;
        self.users += 1;
        self.entries.extend(done.entries);
        Ok(())
    }
}

/// A role name, checked.
pub fn role_name(name: &str) -> Result<&str, AccountError> {
    if valid_role(name) {
        Ok(name)
    } else {
        Err(AccountError::Invalid(format!(
            "invalid role name {name:?}: 1 to 64 of lowercase letters, digits, '-', '_' or ':'"
        )))
    }
}

/// Scopes as given (each item may hold several, space-separated), checked, sorted and
/// without duplicates.
pub fn scope_set(given: &[String]) -> Result<Vec<String>, AccountError> {
    let mut out = BTreeSet::new();
    for s in given.iter().flat_map(|g| g.split_ascii_whitespace()) {
        if !valid_scope(s) {
            return Err(AccountError::Invalid(format!(
                "invalid scope {s:?}: 1 to 128 printable ASCII characters, no space, '\"' or '\\'"
            )));
        }
        out.insert(s.to_string());
    }
    if out.len() > MAX_SCOPES_PER_ROLE {
        return Err(AccountError::Invalid(format!(
            "a role holds at most {MAX_SCOPES_PER_ROLE} scopes"
        )));
    }
    Ok(out.into_iter().collect())
}

/// Role names as given, checked, sorted and without duplicates.
pub fn role_set(given: &[String]) -> Result<Vec<String>, AccountError> {
    let mut out = BTreeSet::new();
    for r in given.iter().flat_map(|g| g.split([',', ' '])) {
        if !r.is_empty() {
            out.insert(role_name(r)?.to_string());
        }
    }
    if out.len() > MAX_ROLES_PER_USER {
        return Err(AccountError::Invalid(format!(
            "a user holds at most {MAX_ROLES_PER_USER} roles"
        )));
    }
    Ok(out.into_iter().collect())
}

/// The scopes `roles` grant under the definitions `defs`.
fn granted(roles: &[String], defs: &[Role]) -> BTreeSet<String> {
    let bag = |r: &str| {
        defs.iter()
            .find(|d| d.name == r)
            .map(|d| d.scopes.as_slice())
    };
    scopes_for_roles(roles, bag)
        .split(' ')
        .map(str::to_string)
        .collect()
}

/// The ids of the users holding `role`.
async fn holders(store: &dyn Store, role: &str) -> Result<Vec<String>, AccountError> {
    Ok(store
        .list_users()
        .await?
        .into_iter()
        .filter(|u| u.roles.iter().any(|r| r == role))
        .map(|u| u.id)
        .collect())
}

/// The outcome of [`set_role`].
#[derive(Debug)]
pub struct RoleSet {
    pub role: Role,
    /// The definition replaced (`None`: the role is new).
    pub previous: Option<Role>,
    pub revoking: Revoking,
}

/// Create or replace a role. When it loses a scope — or, newly defined, no longer grants
/// the scope of its own name that it granted undefined — its holders' sessions end.
pub async fn set_role(
    store: &dyn Store,
    policy: &TokenPolicy,
    name: &str,
    scopes: &[String],
    t: i64,
) -> Result<RoleSet, AccountError> {
    let role = Role {
        name: role_name(name)?.to_string(),
        scopes: scope_set(scopes)?,
        updated_at: t,
    };
    let previous = store.put_role(role.clone()).await?;
    let before: BTreeSet<&str> = match &previous {
        Some(p) => p.scopes.iter().map(String::as_str).collect(),
        None => BTreeSet::from([role.name.as_str()]),
    };
    let lost = before.iter().any(|s| !role.scopes.iter().any(|n| n == s));
    let mut revoking = Revoking::default();
    if lost {
        for id in holders(store, &role.name).await? {
            revoking.user(store, policy, &id, t).await?;
        }
    }
    Ok(RoleSet {
        role,
        previous,
        revoking,
    })
}

/// Take `role` from user `id`, keeping whatever else a concurrent change gave them: the
/// store returns the roles it replaced, and a write that replaced something other than
/// what was read is made again from that. `false` when the user did not hold it.
async fn take_role(store: &dyn Store, id: &str, role: &str) -> Result<bool, AccountError> {
    let Some(u) = store.user_by_id(id).await? else {
        return Ok(false);
    };
    let mut read = u.roles;
    if !read.iter().any(|r| r == role) {
        return Ok(false);
    }
    for _ in 0..8 {
        let kept: Vec<String> = read.iter().filter(|r| *r != role).cloned().collect();
        let replaced = match store.set_user_roles(id, kept).await {
            Err(StoreError::NotFound(_)) => return Ok(true),
            r => r?,
        };
        if replaced == read {
            return Ok(true);
        }
        read = replaced;
    }
    Err(AccountError::Store(StoreError::Unavailable(
        "the user's roles kept changing; try again".into(),
    )))
}

/// Delete a role: it is taken from every user holding it, and their sessions end.
/// `NotFound` when no such role is defined.
///
/// Holders lose it before the definition goes, so a failure part-way leaves the role
/// defined and the command can be run again; and once more after, for a user given the
/// role meanwhile (an undefined role would grant the scope of its own name).
pub async fn delete_role(
    store: &dyn Store,
    policy: &TokenPolicy,
    name: &str,
    t: i64,
) -> Result<(Role, Revoking), AccountError> {
    let name = role_name(name)?;
    if !store.roles().await?.iter().any(|r| r.name == name) {
        return Err(AccountError::NotFound("role"));
    }
    let mut revoking = Revoking::default();
    for id in holders(store, name).await? {
        if take_role(store, &id, name).await? {
            revoking.user(store, policy, &id, t).await?;
        }
    }
    let Some(role) = store.delete_role(name).await? else {
        return Err(AccountError::NotFound("role"));
    };
    for id in holders(store, name).await? {
        if take_role(store, &id, name).await? {
            revoking.user(store, policy, &id, t).await?;
        }
    }
    Ok((role, revoking))
}

/// The outcome of [`set_user_roles`].
#[derive(Debug)]
pub struct UserRolesSet {
    pub before: Vec<String>,
    pub after: Vec<String>,
    pub revoking: Revoking,
}

/// Replace a user's roles. When the user loses a role or a scope, their sessions end.
pub async fn set_user_roles(
    store: &dyn Store,
    policy: &TokenPolicy,
    user_id: &str,
    roles: &[String],
    t: i64,
) -> Result<UserRolesSet, AccountError> {
    let after = role_set(roles)?;
    let before = match store.set_user_roles(user_id, after.clone()).await {
        Err(StoreError::NotFound(_)) => return Err(AccountError::NotFound("user")),
        r => r?,
    };
    let defs = store.roles().await?;
    let lost_role = before.iter().any(|r| !after.contains(r));
    let (had, has) = (granted(&before, &defs), granted(&after, &defs));
    let mut revoking = Revoking::default();
    if lost_role || !had.is_subset(&has) {
        revoking.user(store, policy, user_id, t).await?;
    }
    Ok(UserRolesSet {
        before,
        after,
        revoking,
    })
}

/// Most bytes of custom claims (`app_metadata_claims`) in one token, as JSON: a token stays
/// well under 8 KiB.
pub const MAX_CUSTOM_CLAIMS_BYTES: usize = 2048;

/// Claims a custom claim may never be: registered (RFC 7519, RFC 9068, OIDC) and jotgate's.
const RESERVED_CLAIMS: &[&str] = &[
    "iss",
    "sub",
    "aud",
    "exp",
    "nbf",
    "iat",
    "jti",
    "scope",
    "scp",
    "roles",
    "client_id",
    "sid",
    "username",
    "typ",
    "azp",
    "auth_time",
    "acr",
    "amr",
    "nonce",
    "cnf",
    "act",
    "may_act",
    "groups",
    "entitlements",
    "email",
    "email_verified",
];

/// `app_metadata_claims`, checked: `key=claim` pairs (comma-separated), each claim a
/// namespaced name — an `http(s)://` URL or a `urn:` — never a registered or jotgate claim.
pub fn app_metadata_claims(spec: &str) -> Result<Vec<(String, String)>, AccountError> {
    let mut out: Vec<(String, String)> = Vec::new();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, claim) = pair.split_once('=').ok_or_else(|| {
            AccountError::Invalid(format!(
                "{pair:?}: write key=claim (plan=https://example.com/plan)"
            ))
        })?;
        let (key, claim) = (key.trim(), claim.trim());
        let namespaced = (claim.starts_with("https://")
            || claim.starts_with("http://")
            || claim.starts_with("urn:"))
            && claim.len() <= 256
            && claim.bytes().all(|b| b.is_ascii_graphic());
        if key.is_empty() || !namespaced || RESERVED_CLAIMS.contains(&claim) {
            return Err(AccountError::Invalid(format!(
                "{pair:?}: the claim must be a namespaced name (https://example.com/{key} or urn:…), never a registered or jotgate claim"
            )));
        }
        if out.iter().any(|(_, c)| c == claim) {
            return Err(AccountError::Invalid(format!(
                "claim {claim:?} is mapped twice"
            )));
        }
        out.push((key.to_string(), claim.to_string()));
    }
    Ok(out)
}

/// Most bytes of a user's `app_metadata`, as JSON: what tokens may carry of it must keep a
/// token well under 8 KiB.
pub const MAX_APP_METADATA_BYTES: usize = 4096;

/// `app_metadata` within its size cap.
pub fn check_app_metadata(
    m: &serde_json::Map<String, serde_json::Value>,
) -> Result<(), AccountError> {
    let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_APP_METADATA_BYTES {
        return Err(AccountError::Invalid(format!(
            "app_metadata is {size} bytes as JSON; at most {MAX_APP_METADATA_BYTES}"
        )));
    }
    Ok(())
}

/// An address as given, normalised.
pub fn email(raw: &str) -> Result<String, AccountError> {
    jotgate_core::email::normalise(raw).map_err(|e| AccountError::Invalid(e.to_string()))
}

/// The outcome of [`update_user`].
#[derive(Debug)]
pub struct UserUpdated {
    pub before: User,
    pub after: User,
    pub revoking: Revoking,
}

/// Change a user's address, its verification, the block or `app_metadata`. Blocking ends
/// the user's sessions (again, when asked again). `Conflict` (a [`StoreError`]) when the address names another
/// account.
pub async fn update_user(
    store: &dyn Store,
    policy: &TokenPolicy,
    user_id: &str,
    mut patch: UserPatch,
    t: i64,
) -> Result<UserUpdated, AccountError> {
    if let Some(Some(e)) = &patch.email {
        let e = email(e)?;
        // An account made before addresses may hold it as its username.
        if let Some(other) = crate::find_account(store, &e).await?
            && other.user.id != user_id
        {
            return Err(AccountError::Store(StoreError::Conflict("email")));
        }
        patch.email = Some(Some(e));
    }
    if let Some(m) = &patch.app_metadata {
        check_app_metadata(m)?;
    }
    let blocking = patch.blocked == Some(true);
    let (before, after) = match store.update_user(user_id, patch).await {
        Err(StoreError::NotFound(_)) => return Err(AccountError::NotFound("user")),
        r => r?,
    };
    let mut revoking = Revoking::default();
    // Every time a block is asked for, blocked already or not: ending sessions is
    // idempotent, and a block whose revocation failed is completed by asking again.
    if blocking {
        // A block ends the user's device tokens too (a role change does not).
        revoking.user_and_devices(store, policy, user_id, t).await?;
    }
    Ok(UserUpdated {
        before,
        after,
        revoking,
    })
}

/// Add and remove roles of a user, keeping what a concurrent change gave them (the store
/// returns the roles it replaced; a write that replaced something other than what was read
/// is made again from that). When the user loses a role or a scope, their sessions end.
pub async fn edit_user_roles(
    store: &dyn Store,
    policy: &TokenPolicy,
    user_id: &str,
    add: &[String],
    remove: &[String],
    t: i64,
) -> Result<UserRolesSet, AccountError> {
    let (add, remove) = (role_set(add)?, role_set(remove)?);
    let Some(u) = store.user_by_id(user_id).await? else {
        return Err(AccountError::NotFound("user"));
    };
    let mut read = u.roles;
    for _ in 0..8 {
        let mut after: Vec<String> = read
            .iter()
            .filter(|r| !remove.contains(r))
            .cloned()
            .chain(add.iter().cloned())
            .collect();
        after.sort();
        after.dedup();
        if after.len() > MAX_ROLES_PER_USER {
            return Err(AccountError::Invalid(format!(
                "a user holds at most {MAX_ROLES_PER_USER} roles"
            )));
        }
        let replaced = match store.set_user_roles(user_id, after.clone()).await {
            Err(StoreError::NotFound(_)) => return Err(AccountError::NotFound("user")),
            r => r?,
        };
        if replaced != read {
            read = replaced;
            continue;
        }
        let defs = store.roles().await?;
        let lost_role = read.iter().any(|r| !after.contains(r));
        let mut revoking = Revoking::default();
        if lost_role || !granted(&read, &defs).is_subset(&granted(&after, &defs)) {
            revoking.user(store, policy, user_id, t).await?;
        }
        return Ok(UserRolesSet {
            before: read,
            after,
            revoking,
        });
    }
    Err(AccountError::Store(StoreError::Unavailable(
        "the user's roles kept changing; try again".into(),
    )))
}

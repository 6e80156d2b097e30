//! The management API (`/api/v1`): users, their roles, roles and machine clients, for a
//! caller holding a management token — a token whose `aud` is the management audience
//! (`ISSUER/api/v1/`), from the client-credentials grant. Each endpoint asks for one scope,
//! named as Auth0's management API names it (`read:users`, `update:users`, …): 401 without
//! a token, 403 `insufficient_scope` naming the one missing.
//!
//! No escalation: a caller cannot put into a role, grant through a role, or give a client
//! a management scope it does not hold itself. Application scopes (`reports:read`) are
//! granted with `update:users`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use jotgate_core::{Username, password};
use jotgate_store::{ClientRecord, NewUser, Role, StoreError, User, UserPatch};
use jotgate_verify::Principal;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::accounts::{self, AccountError, Revoking};
use crate::audit::{Event, kind};
use crate::clients::{self, is_management};
use crate::error::ApiError;
use crate::extract::{JsonObject, OptionalJsonObject};
use crate::{AppState, now, revocation};

/// A path parameter (`{id}`, `{name}`), percent-decoded. One that does not decode to UTF-8
/// is our JSON 400 `invalid_path`, not axum's plain-text answer.
pub struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Segment(s))
            .map_err(|_| {
                ApiError::BadRequest(
                    "invalid_path",
                    "a path segment is not valid percent-encoded UTF-8".into(),
                )
            })
    }
}

/// The verified caller of a management endpoint.
pub struct Caller(pub Arc<Principal>);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        st.authenticate_management(&parts.headers).await.map(Caller)
    }
}

impl Caller {
    fn require(&self, scope: &str) -> Result<(), ApiError> {
        if self.0.has_scope(scope) {
            Ok(())
        } else {
            Err(ApiError::InsufficientScope(scope.into()))
        }
    }

    /// Refuse to hand out a management scope the caller does not hold.
    fn may_grant<'a>(&self, scopes: impl IntoIterator<Item = &'a String>) -> Result<(), ApiError> {
        for s in scopes {
            if is_management(s) && !self.0.has_scope(s) {
                return Err(ApiError::Forbidden(
                    "escalation",
                    format!("cannot grant the management scope {s}: the caller does not hold it"),
                ));
            }
        }
        Ok(())
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::Invalid(m) => ApiError::BadRequest("invalid_request", m),
            AccountError::NotFound(what) => ApiError::Missing(format!("no such {what}")),
            AccountError::Store(StoreError::Conflict("email")) => {
                ApiError::Conflict("email_taken", "email is already in use".into())
            }
            AccountError::Store(StoreError::Conflict(_)) => {
                ApiError::Conflict("username_taken", "username is already taken".into())
            }
            AccountError::Store(e) => e.into(),
        }
    }
}

/// A JSON body as a typed request: unknown fields and wrong types are a 400 naming them.
fn typed<T: DeserializeOwned>(body: Map<String, Value>) -> Result<T, ApiError> {
    serde_json::from_value(Value::Object(body))
        .map_err(|e| ApiError::BadRequest("invalid_request", e.to_string()))
}

/// Query parameters, each at most once and among `known`.
fn query(raw: Option<String>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let raw = raw.unwrap_or_default();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(raw.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    for (i, (k, _)) in params.iter().enumerate() {
        if !known.contains(&k.as_str()) {
            return Err(ApiError::BadRequest(
                "invalid_query",
                format!(
                    "unknown query parameter {k:?} (known: {})",
                    known.join(", ")
                ),
            ));
        }
        if params[..i].iter().any(|(p, _)| p == k) {
            return Err(ApiError::BadRequest(
                "invalid_query",
                format!("query parameter {k:?} is given more than once"),
            ));
        }
    }
    Ok(params)
}

/// Apply revocations here at once (the feed carries them to the others).
fn applied(st: &AppState, r: Revoking) -> usize {
    let users = r.users;
    st.0.denylist.record(r.entries);
    users
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// An id a store could hold (users' UUIDs, `cl_…` client ids): 1–128 bytes, no control
/// characters. Anything else names nothing, and never reaches a store (PostgreSQL refuses
/// a NUL with an error; DynamoDB keys are bounded).
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && !id.chars().any(char::is_control)
}

async fn user_or_404(st: &AppState, id: &str) -> Result<User, ApiError> {
    if !plausible_id(id) {
        return Err(ApiError::Missing("no such user".into()));
    }
    st.0.store
        .user_by_id(id)
        .await?
        .ok_or_else(|| ApiError::Missing("no such user".into()))
}

/// The scopes that `roles` would grant, for the escalation check.
async fn scopes_of_roles(st: &AppState, roles: &[String]) -> Result<Vec<String>, ApiError> {
    let defs = st.0.store.roles().await?;
    Ok(defs
        .into_iter()
        .filter(|d| roles.contains(&d.name))
        .flat_map(|d| d.scopes)
        .collect())
}

/// Roles named in a request must be defined (the CLI alone may give a legacy role).
async fn defined(st: &AppState, roles: &[String]) -> Result<(), ApiError> {
    let defs = st.0.store.roles().await?;
    for r in roles {
        if !defs.iter().any(|d| &d.name == r) {
            return Err(ApiError::BadRequest(
                "unknown_role",
                format!("no role named {r:?}; define it first (PUT /api/v1/roles/{r})"),
            ));
        }
    }
    Ok(())
}

// ---- users ----

/// `GET /api/v1/users?q=&email=&limit=&cursor=`: by creation, `limit` (1–100, default 50)
/// at a time; `next` is the cursor of the page after, `null` on the last.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    params(
        ("q" = Option<String>, Query, description = "Usernames (compared case- and confusable-insensitively) or addresses starting with this"),
        ("email" = Option<String>, Query, description = "Exactly this address (normalised first)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 100, description = "Page size, 50 by default"),
        ("cursor" = Option<String>, Query, description = "The `next` of the page before"),
    ),
    responses(
        (status = 200, description = "A page of users", body = crate::schema::UsersPage),
        (status = 400, description = "`invalid_query`", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["read:users"])))]
pub async fn list_users(
    State(st): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<crate::schema::UsersPage>, ApiError> {
    caller.require("read:users")?;
    let params = query(raw, &["q", "email", "limit", "cursor"])?;
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
    let limit = match get("limit") {
        None => 50,
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| {
                ApiError::BadRequest("invalid_query", "limit is a number from 1 to 100".into())
            })?,
    };
    let email = get("email")
        .map(jotgate_core::email::normalise)
        .transpose()
        .map_err(|e| ApiError::BadRequest("invalid_query", e.to_string()))?;
    let q = get("q").map(jotgate_core::username::canonical_key);
    let users = st.0.store.list_users().await?;
    let matches = |u: &User| {
        email.as_ref().is_none_or(|e| u.email.as_ref() == Some(e))
            && q.as_ref().is_none_or(|q| {
                jotgate_core::username::canonical_key(&u.username).starts_with(q.as_str())
                    || u.email.as_ref().is_some_and(|e| e.starts_with(q.as_str()))
            })
    };
    let start = match get("cursor") {
        None => 0,
        Some(c) => {
            users.iter().position(|u| u.id == c).ok_or_else(|| {
                ApiError::BadRequest("invalid_query", "the cursor names no user".into())
            })? + 1
        }
    };
    let page: Vec<&User> = users[start..]
        .iter()
        .filter(|u| matches(u))
        .take(limit + 1)
        .collect();
    let next = (page.len() > limit).then(|| page[limit - 1].id.clone());
    let page = &page[..page.len().min(limit)];
    Ok(Json(crate::schema::UsersPage {
        users: page.iter().map(|u| (*u).clone()).collect(),
        next,
    }))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, description = "The user", body = User), (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody)),
    security(("management" = ["read:users"])))]
pub async fn get_user(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<Json<User>, ApiError> {
    caller.require("read:users")?;
    Ok(Json(user_or_404(&st, &id).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    username: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    app_metadata: Option<Map<String, Value>>,
}

/// `POST /api/v1/users`: `{"username","password"}` and optionally `email`,
/// `email_verified`, `roles` (defined roles), `app_metadata`.
#[utoipa::path(post, path = "/api/v1/users", tag = "users",
    request_body = crate::schema::CreateUserRequest,
    responses(
        (status = 201, description = "The new user", body = User),
        (status = 400, description = "`invalid_username`, `weak_password`, `invalid_request` (a bad address, role name or field), `unknown_role`", body = crate::schema::ErrorBody),
        (status = 403, description = "`insufficient_scope` (giving roles needs `update:users` too); `escalation`: a role grants a management scope the caller lacks", body = crate::schema::ErrorBody),
        (status = 409, description = "`username_taken`, `email_taken`", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["create:users"])))]
pub async fn create_user(
    State(st): State<AppState>,
    caller: Caller,
    mut body: JsonObject,
) -> Result<Response, ApiError> {
    caller.require("create:users")?;
    let pw = body.take_secret("password")?;
    let req: CreateUser = typed(body.0)?;
    let name = Username::parse_new(&req.username)
        .map_err(|e| ApiError::BadRequest("invalid_username", e.to_string()))?;
    password::check_policy_min(&pw, name.canonical(), st.0.cfg.password_min_length)
        .map_err(|e| ApiError::BadRequest("weak_password", e.to_string()))?;
    let roles = accounts::role_set(&req.roles)?;
    if !roles.is_empty() {
        caller.require("update:users")?;
        defined(&st, &roles).await?;
        caller.may_grant(&scopes_of_roles(&st, &roles).await?)?;
    }
    let email = req.email.as_deref().map(accounts::email).transpose()?;
    if let Some(m) = &req.app_metadata {
        accounts::check_app_metadata(m)?;
    }
    if crate::find_user(&*st.0.store, &name.lookup())
        .await?
        .is_some()
    {
        return Err(ApiError::Conflict(
            "username_taken",
            "username is already taken".into(),
        ));
    }
    if let Some(e) = &email
        && crate::find_account(&*st.0.store, e).await?.is_some()
    {
        return Err(ApiError::Conflict(
            "email_taken",
            "email is already in use".into(),
        ));
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
                roles,
                created_at: now(),
                email,
            })
            .await
            .map_err(|e| ApiError::from(AccountError::Store(e)))?;
    let user = if req.email_verified.is_some() || req.app_metadata.is_some() {
        let patch = UserPatch {
            email_verified: req.email_verified,
            app_metadata: req.app_metadata,
            ..UserPatch::default()
        };
        let t = now();
        accounts::update_user(&*st.0.store, &st.0.cfg.policy, &user.id, patch, t)
            .await?
            .after
    } else {
        user
    };
    st.audit(
        Event::new(kind::USER_CREATED)
            .user(&user.id)
            .actor(&caller.0.subject),
    )
    .await;
    Ok((StatusCode::CREATED, Json(user)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    /// `null` removes the address.
    #[serde(default, with = "double_option")]
    email: Option<Option<String>>,
    #[serde(default)]
    email_verified: Option<bool>,
    #[serde(default)]
    blocked: Option<bool>,
    #[serde(default)]
    app_metadata: Option<Map<String, Value>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// `PATCH /api/v1/users/{id}`: any of `email` (`null` removes it), `email_verified`,
/// `blocked`, `app_metadata`, `password`. Blocking or a new password ends the user's
/// sessions.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "The user's id")),
    request_body = crate::schema::PatchUserRequest,
    responses(
        (status = 200, description = "The user, changed", body = User),
        (status = 400, description = "`weak_password`, `invalid_request` (a bad address or field)", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody),
        (status = 409, description = "`email_taken`", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["update:users"])))]
pub async fn patch_user(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    mut body: JsonObject,
) -> Result<Json<User>, ApiError> {
    caller.require("update:users")?;
    let pw = match body.0.contains_key("password") {
        true => Some(body.take_secret("password")?),
        false => None,
    };
    let req: PatchUser = typed(body.0)?;
    let user = user_or_404(&st, &id).await?;
    // Everything checked before the first write: a refused change changes nothing.
    if let Some(Some(e)) = &req.email {
        let e = accounts::email(e)?;
        if let Some(other) = crate::find_account(&*st.0.store, &e).await?
            && other.user.id != id
        {
            return Err(ApiError::Conflict(
                "email_taken",
                "email is already in use".into(),
            ));
        }
    }
    if let Some(m) = &req.app_metadata {
        accounts::check_app_metadata(m)?;
    }
    let t = now();
    let changed_password = pw.is_some();
    if let Some(pw) = pw {
        let canonical = jotgate_core::username::canonical_key(&user.username);
        password::check_policy_min(&pw, &canonical, st.0.cfg.password_min_length)
            .map_err(|e| ApiError::BadRequest("weak_password", e.to_string()))?;
        let hash =
            st.0.pool
                .run(move |h, ws| h.hash_in(&pw, ws))
                .await?
                .map_err(ApiError::internal)?;
        st.0.store.set_password_hash(&id, &hash).await?;
        let done =
            revocation::revoke_user_and_devices(&*st.0.store, &st.0.cfg.policy, &id, t).await?;
        st.0.denylist.record(done.entries);
    }
    let patch = UserPatch {
        email: req.email,
        email_verified: req.email_verified,
        blocked: req.blocked,
        app_metadata: req.app_metadata,
    };
    let done = accounts::update_user(&*st.0.store, &st.0.cfg.policy, &id, patch, t).await?;
    let fields: Vec<&str> = [
        ("email", done.before.email != done.after.email),
        (
            "email_verified",
            done.before.email_verified != done.after.email_verified,
        ),
        ("blocked", done.before.blocked != done.after.blocked),
        (
            "app_metadata",
            done.before.app_metadata != done.after.app_metadata,
        ),
        ("password", changed_password),
    ]
    .into_iter()
    .filter_map(|(f, c)| c.then_some(f))
    .collect();
    st.audit(
        Event::new(kind::USER_UPDATED)
            .user(&id)
            .actor(&caller.0.subject)
            .with("changed", fields),
    )
    .await;
    applied(&st, done.revoking);
    Ok(Json(done.after))
}

/// `DELETE /api/v1/users/{id}`: its sessions end, then the account goes.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = String, Path, description = "The user's id")),
    responses((status = 204, description = "Deleted; its sessions ended"), (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody)),
    security(("management" = ["delete:users"])))]
pub async fn delete_user(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<StatusCode, ApiError> {
    caller.require("delete:users")?;
    user_or_404(&st, &id).await?;
    let t = now();
    let done = revocation::revoke_user_and_devices(&*st.0.store, &st.0.cfg.policy, &id, t).await?;
    st.0.denylist.record(done.entries);
    st.0.store.delete_user(&id).await?;
    st.audit(
        Event::new(kind::USER_DELETED)
            .user(&id)
            .actor(&caller.0.subject),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/users/{id}/revoke-sessions`: log the user out everywhere.
#[utoipa::path(post, path = "/api/v1/users/{id}/revoke-sessions", tag = "users", params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, description = "The user's sessions ended", body = crate::schema::SessionsEnded), (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody)),
    security(("management" = ["update:users"])))]
pub async fn revoke_sessions(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<Json<crate::schema::SessionsEnded>, ApiError> {
    caller.require("update:users")?;
    user_or_404(&st, &id).await?;
    let done =
        revocation::revoke_user_and_devices(&*st.0.store, &st.0.cfg.policy, &id, now()).await?;
    st.0.denylist.record(done.entries);
    st.audit(
        Event::new(kind::USER_SESSIONS_REVOKED)
            .user(&id)
            .actor(&caller.0.subject),
    )
    .await;
    Ok(Json(crate::schema::SessionsEnded {
        sessions_ended: done.sessions,
    }))
}

/// `GET /api/v1/user-blocks/{id}`: the addresses a user's login is held back from by
/// wrong passwords (the per-address limit), and every address once the hourly ceiling is
/// reached — as Auth0's user blocks.
#[utoipa::path(get, path = "/api/v1/user-blocks/{id}", tag = "users", params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, description = "The blocks in force", body = crate::schema::UserBlocks), (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody)),
    security(("management" = ["read:users"])))]
pub async fn get_user_blocks(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<Json<crate::schema::UserBlocks>, ApiError> {
    caller.require("read:users")?;
    let user = user_or_404(&st, &id).await?;
    Ok(Json(st.0.limiter.blocks(&user).await?.into()))
}

/// `DELETE /api/v1/user-blocks/{id}`: lift every block on a user — the wrong-password
/// counts of every address and the hourly ceiling. (The account block is `blocked` on
/// the user; the limits of an address itself, for all names, stay.)
#[utoipa::path(delete, path = "/api/v1/user-blocks/{id}", tag = "users", params(("id" = String, Path, description = "The user's id")),
    responses((status = 204, description = "The blocks are lifted"), (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody)),
    security(("management" = ["update:users"])))]
pub async fn delete_user_blocks(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<StatusCode, ApiError> {
    caller.require("update:users")?;
    let user = user_or_404(&st, &id).await?;
    let lifted = st.0.limiter.unblock(&user).await?;
    st.audit(
        Event::new(kind::LOGIN_UNBLOCKED)
            .user(&id)
            .actor(&caller.0.subject)
            .with("blocks", lifted.len()),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleNames {
    roles: Vec<String>,
}

#[utoipa::path(get, path = "/api/v1/users/{id}/roles", tag = "users", params(("id" = String, Path, description = "The user's id")),
    responses((status = 200, description = "The user's roles", body = crate::schema::UserRoles), (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody)),
    security(("management" = ["read:users"])))]
pub async fn user_roles(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<Json<crate::schema::UserRoles>, ApiError> {
    caller.require("read:users")?;
    Ok(Json(crate::schema::UserRoles {
        roles: user_or_404(&st, &id).await?.roles,
    }))
}

/// `POST /api/v1/users/{id}/roles` `{"roles":[…]}`: give roles (defined ones).
#[utoipa::path(post, path = "/api/v1/users/{id}/roles", tag = "users", params(("id" = String, Path, description = "The user's id")),
    request_body = RoleNames,
    responses(
        (status = 200, description = "The user's roles now", body = crate::schema::UserRoles),
        (status = 400, description = "`unknown_role`, `invalid_request`", body = crate::schema::ErrorBody),
        (status = 403, description = "`insufficient_scope`; `escalation`: a role grants a management scope the caller lacks", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["update:users"])))]
pub async fn add_user_roles(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    body: JsonObject,
) -> Result<Json<crate::schema::UserRoles>, ApiError> {
    caller.require("update:users")?;
    if !plausible_id(&id) {
        return Err(ApiError::Missing("no such user".into()));
    }
    let req: RoleNames = typed(body.0)?;
    let roles = accounts::role_set(&req.roles)?;
    defined(&st, &roles).await?;
    caller.may_grant(&scopes_of_roles(&st, &roles).await?)?;
    let done =
        accounts::edit_user_roles(&*st.0.store, &st.0.cfg.policy, &id, &roles, &[], now()).await?;
    st.audit(
        Event::new(kind::USER_ROLES)
            .user(&id)
            .actor(&caller.0.subject)
            .with("before", done.before.clone())
            .with("after", done.after.clone()),
    )
    .await;
    applied(&st, done.revoking);
    Ok(Json(crate::schema::UserRoles { roles: done.after }))
}

/// `DELETE /api/v1/users/{id}/roles` `{"roles":[…]}`: take roles; the user's sessions end.
#[utoipa::path(delete, path = "/api/v1/users/{id}/roles", tag = "users", params(("id" = String, Path, description = "The user's id")),
    request_body = RoleNames,
    responses(
        (status = 200, description = "The user's roles now; their sessions ended", body = crate::schema::UserRoles),
        (status = 400, description = "`missing_field`, `invalid_request`", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: no such user", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["update:users"])))]
pub async fn remove_user_roles(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
    OptionalJsonObject(body): OptionalJsonObject,
) -> Result<Json<crate::schema::UserRoles>, ApiError> {
    caller.require("update:users")?;
    if !plausible_id(&id) {
        return Err(ApiError::Missing("no such user".into()));
    }
    let Some(body) = body else {
        return Err(ApiError::BadRequest(
            "missing_field",
            "field \"roles\" is required".into(),
        ));
    };
    let req: RoleNames = typed(body.0)?;
    let done =
        accounts::edit_user_roles(&*st.0.store, &st.0.cfg.policy, &id, &[], &req.roles, now())
            .await?;
    st.audit(
        Event::new(kind::USER_ROLES)
            .user(&id)
            .actor(&caller.0.subject)
            .with("before", done.before.clone())
            .with("after", done.after.clone()),
    )
    .await;
    applied(&st, done.revoking);
    Ok(Json(crate::schema::UserRoles { roles: done.after }))
}

// ---- roles ----

#[utoipa::path(get, path = "/api/v1/roles", tag = "roles",
    responses((status = 200, description = "Every role", body = crate::schema::RoleList)),
    security(("management" = ["read:roles"])))]
pub async fn list_roles(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<crate::schema::RoleList>, ApiError> {
    caller.require("read:roles")?;
    Ok(Json(crate::schema::RoleList {
        roles: st.0.store.roles().await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/roles/{name}", tag = "roles", params(("name" = String, Path, description = "The role's name")),
    responses((status = 200, description = "The role", body = Role),
        (status = 404, description = "`not_found`: no such role", body = crate::schema::ErrorBody)),
    security(("management" = ["read:roles"])))]
pub async fn get_role(
    State(st): State<AppState>,
    caller: Caller,
    Segment(name): Segment,
) -> Result<Json<Role>, ApiError> {
    caller.require("read:roles")?;
    st.0.store
        .roles()
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::Missing("no such role".into()))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoleScopes {
    scopes: Vec<String>,
}

/// `PUT /api/v1/roles/{name}` `{"scopes":[…]}`: create (`create:roles`, 201) or replace
/// (`update:roles`, 200). When the role loses a scope, its holders' sessions end.
#[utoipa::path(put, path = "/api/v1/roles/{name}", tag = "roles", params(("name" = String, Path, description = "The role's name")),
    request_body = RoleScopes,
    responses(
        (status = 200, description = "Replaced (`update:roles`); if it lost a scope, its holders' sessions ended", body = Role),
        (status = 201, description = "Created (`create:roles`)", body = Role),
        (status = 400, description = "`invalid_request` (a bad name or scope)", body = crate::schema::ErrorBody),
        (status = 403, description = "`insufficient_scope`; `escalation`: a management scope the caller lacks", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["create:roles"]), ("management" = ["update:roles"])))]
pub async fn put_role(
    State(st): State<AppState>,
    caller: Caller,
    Segment(name): Segment,
    body: JsonObject,
) -> Result<Response, ApiError> {
    // A caller with neither scope learns nothing about which roles exist.
    if !caller.0.has_scope("create:roles") && !caller.0.has_scope("update:roles") {
        return Err(ApiError::InsufficientScope(
            "create:roles update:roles".into(),
        ));
    }
    let req: RoleScopes = typed(body.0)?;
    let exists = st.0.store.roles().await?.iter().any(|r| r.name == name);
    caller.require(if exists {
        "update:roles"
    } else {
        "create:roles"
    })?;
    let scopes = accounts::scope_set(&req.scopes)?;
    caller.may_grant(&scopes)?;
    let done = accounts::set_role(&*st.0.store, &st.0.cfg.policy, &name, &scopes, now()).await?;
    let created = done.previous.is_none();
    st.audit(
        Event::new(kind::ROLE_CHANGED)
            .actor(&caller.0.subject)
            .with("role", done.role.name.as_str())
            .with("scopes", done.role.scopes.clone())
            .with("users_revoked", done.revoking.users),
    )
    .await;
    applied(&st, done.revoking);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(done.role)).into_response())
}

/// `DELETE /api/v1/roles/{name}`: taken from its holders, whose sessions end.
#[utoipa::path(delete, path = "/api/v1/roles/{name}", tag = "roles", params(("name" = String, Path, description = "The role's name")),
    responses((status = 204, description = "Deleted; taken from its holders, whose sessions ended"),
        (status = 404, description = "`not_found`: no such role", body = crate::schema::ErrorBody)),
    security(("management" = ["delete:roles"])))]
pub async fn delete_role(
    State(st): State<AppState>,
    caller: Caller,
    Segment(name): Segment,
) -> Result<StatusCode, ApiError> {
    caller.require("delete:roles")?;
    let (_, revoking) = accounts::delete_role(&*st.0.store, &st.0.cfg.policy, &name, now()).await?;
    st.audit(
        Event::new(kind::ROLE_DELETED)
            .actor(&caller.0.subject)
            .with("role", name.as_str())
            .with("users_revoked", revoking.users),
    )
    .await;
    applied(&st, revoking);
    Ok(StatusCode::NO_CONTENT)
}

// ---- clients ----

#[utoipa::path(get, path = "/api/v1/clients", tag = "clients",
    responses((status = 200, description = "Every machine client", body = crate::schema::ClientList)),
    security(("management" = ["read:clients"])))]
pub async fn list_clients(
    State(st): State<AppState>,
    caller: Caller,
) -> Result<Json<crate::schema::ClientList>, ApiError> {
    caller.require("read:clients")?;
    Ok(Json(crate::schema::ClientList {
        clients: st.0.store.clients().await?,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateClient {
    name: String,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    audiences: Vec<String>,
}

async fn client_or_404(st: &AppState, id: &str) -> Result<ClientRecord, ApiError> {
    if !plausible_id(id) {
        return Err(ApiError::Missing("no such client".into()));
    }
    st.0.store
        .client(id)
        .await?
        .ok_or_else(|| ApiError::Missing("no such client".into()))
}

/// `POST /api/v1/clients` `{"name","scopes","audiences"}`: 201 with `client_secret`,
/// shown once.
#[utoipa::path(post, path = "/api/v1/clients", tag = "clients",
    request_body = CreateClient,
    responses(
        (status = 201, description = "The client and its secret, shown once", body = crate::schema::NewClient,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "`invalid_request` (a bad name, scope or audience)", body = crate::schema::ErrorBody),
        (status = 403, description = "`insufficient_scope`; `escalation`: a management scope the caller lacks", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["create:clients"])))]
pub async fn create_client(
    State(st): State<AppState>,
    caller: Caller,
    body: JsonObject,
) -> Result<Response, ApiError> {
    caller.require("create:clients")?;
    let req: CreateClient = typed(body.0)?;
    let scopes = accounts::scope_set(&req.scopes)?;
    caller.may_grant(&scopes)?;
    let (c, secret) = clients::create(
        &*st.0.store,
        &st.0.cfg.policy,
        &req.name,
        &scopes,
        &req.audiences,
        now(),
    )
    .await?;
    st.audit(
        Event::new(kind::CLIENT_CREATED)
            .user(&c.id)
            .actor(&caller.0.subject)
            .with("scopes", c.scopes.clone()),
    )
    .await;
    Ok(no_store(
        (
            StatusCode::CREATED,
            Json(crate::schema::NewClient {
                client_id: c.id.clone(),
                client: c,
                client_secret: secret.to_string(),
            }),
        )
            .into_response(),
    ))
}

/// `POST /api/v1/clients/{id}/rotate-secret`: a new secret (shown once); the old one and
/// the tokens the client holds are refused.
#[utoipa::path(post, path = "/api/v1/clients/{id}/rotate-secret", tag = "clients", params(("id" = String, Path, description = "The client's id (`cl_…`)")),
    responses(
        (status = 200, description = "The new secret, shown once; the old one and the client's tokens are refused", body = crate::schema::ClientSecret,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 403, description = "`insufficient_scope`; `escalation`: the client holds a management scope the caller lacks", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: no such client", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["update:clients"])))]
pub async fn rotate_client_secret(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<Response, ApiError> {
    caller.require("update:clients")?;
    // A new secret is the client's powers in the caller's hands: only for a client whose
    // management scopes the caller holds itself.
    caller.may_grant(&client_or_404(&st, &id).await?.scopes)?;
    let (secret, r) = clients::rotate_secret(&*st.0.store, &st.0.cfg.policy, &id, now()).await?;
    st.0.denylist.record([r]);
    st.audit(
        Event::new(kind::CLIENT_SECRET_ROTATED)
            .user(&id)
            .actor(&caller.0.subject),
    )
    .await;
    Ok(no_store(
        Json(crate::schema::ClientSecret {
            client_id: id,
            client_secret: secret.to_string(),
        })
        .into_response(),
    ))
}

/// `DELETE /api/v1/clients/{id}`: the tokens it holds are refused.
#[utoipa::path(delete, path = "/api/v1/clients/{id}", tag = "clients", params(("id" = String, Path, description = "The client's id (`cl_…`)")),
    responses(
        (status = 204, description = "Deleted; its tokens are refused"),
        (status = 403, description = "`insufficient_scope`; `escalation`: the client holds a management scope the caller lacks", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: no such client", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["delete:clients"])))]
pub async fn delete_client(
    State(st): State<AppState>,
    caller: Caller,
    Segment(id): Segment,
) -> Result<StatusCode, ApiError> {
    caller.require("delete:clients")?;
    caller.may_grant(&client_or_404(&st, &id).await?.scopes)?;
    let (_, r) = clients::delete(&*st.0.store, &st.0.cfg.policy, &id, now()).await?;
    st.0.denylist.record([r]);
    st.audit(
        Event::new(kind::CLIENT_DELETED)
            .user(&id)
            .actor(&caller.0.subject),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- self-service (a signed-in user's own account) ----

/// A signed-in user: an application token of a login session (a client's token has no
/// session and is refused: these are a person's acts).
pub struct Me(pub Arc<Principal>);

impl FromRequestParts<AppState> for Me {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, ApiError> {
        let p = st.authenticate_request(&parts.headers).await?;
        if p.session_id().is_none() || p.claims.contains_key("client_id") {
            return Err(ApiError::Forbidden(
                "client_token",
                "this endpoint is for a signed-in user, not a machine client".into(),
            ));
        }
        Ok(Me(p))
    }
}

/// Check the user's current password, counted like a login (a stolen access token must not
/// become a password-guessing oracle). `Err(BadCredentials)` when it is wrong.
async fn check_current_password(
    st: &AppState,
    user_id: &str,
    (ip, listed): (Option<std::net::IpAddr>, crate::routes::Allowlisted),
    pw: zeroize::Zeroizing<String>,
) -> Result<(), ApiError> {
    // Its own counter, and the account's ceiling that logins count against too: a stolen
    // access token adds no guesses to the hour's.
    let mut keys = vec![
        format!(
            "user:{}",
            jotgate_core::sha256_b64url(format!("id:{user_id}").as_bytes())
        ),
        crate::limits::LoginLimiter::ceiling_key(&format!("id:{user_id}")),
    ];
    keys.extend(st.0.limiter.address_key("ip", ip, listed));
    st.0.limiter.begin(&keys).await?;
    let record = match st.0.store.user_by_id(user_id).await {
        Ok(Some(u)) => match crate::find_user(
            &*st.0.store,
            &jotgate_core::username::lookup_key(&u.username).map_err(ApiError::internal)?,
        )
        .await
        {
            Ok(r) => r.filter(|r| r.user.id == user_id),
            Err(e) => {
                st.0.limiter.release(&keys).await;
                return Err(e.into());
            }
        },
        Ok(None) => None,
        Err(e) => {
            st.0.limiter.release(&keys).await;
            return Err(e.into());
        }
    };
    let Some(record) = record else {
        return Err(ApiError::BadCredentials);
    };
    let hash = record.password_hash;
    let matched = match st
        .0
        .pool
        .run(move |h, ws| h.check_in(&pw, &hash, ws).matched)
        .await
    {
        Ok(m) => m,
        Err(e) => {
            st.0.limiter.release(&keys).await;
            return Err(e);
        }
    };
    if !matched {
        return Err(ApiError::BadCredentials);
    }
    st.0.limiter.succeeded(&keys).await;
    Ok(())
}

/// `GET /api/v1/me`: the signed-in user's account.
#[utoipa::path(get, path = "/api/v1/me", tag = "me",
    responses((status = 200, description = "The signed-in user", body = User),
        (status = 403, description = "`client_token`: a machine client's token", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: the account is gone", body = crate::schema::ErrorBody)),
    security(("user" = [])))]
pub async fn me(State(st): State<AppState>, Me(p): Me) -> Result<Json<User>, ApiError> {
    Ok(Json(user_or_404(&st, &p.subject).await?))
}

/// `POST /api/v1/me/password` `{"current_password","new_password"}`: every session ends,
/// and the answer is a new session's tokens (this device stays signed in).
#[utoipa::path(post, path = "/api/v1/me/password", tag = "me",
    request_body = crate::schema::ChangePasswordRequest,
    responses(
        (status = 200, description = "Changed; every other session and device token ended. A new session's tokens, and a device token for this device", body = crate::schema::Tokens,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "`weak_password`, `missing_field`, `invalid_request`", body = crate::schema::ErrorBody),
        (status = 401, description = "`bad_credentials`: the current password is wrong; or the token is invalid", body = crate::schema::ErrorBody),
        (status = 403, description = "`client_token`: a machine client's token", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: the account is gone", body = crate::schema::ErrorBody),
    ),
    security(("user" = [])))]
pub async fn change_my_password(
    State(st): State<AppState>,
    crate::routes::ClientIp(ip, listed): crate::routes::ClientIp,
    Me(p): Me,
    mut body: JsonObject,
) -> Result<Response, ApiError> {
    let current = body.take_secret("current_password")?;
    let new = body.take_secret("new_password")?;
    if let Some(k) = body.0.keys().next() {
        return Err(ApiError::BadRequest(
            "invalid_request",
            format!("unknown field `{k}`"),
        ));
    }
    let user = user_or_404(&st, &p.subject).await?;
    let canonical = jotgate_core::username::canonical_key(&user.username);
    password::check_policy_min(&new, &canonical, st.0.cfg.password_min_length)
        .map_err(|e| ApiError::BadRequest("weak_password", e.to_string()))?;
    check_current_password(&st, &user.id, (ip, listed), current).await?;
    let hash =
        st.0.pool
            .run(move |h, ws| h.hash_in(&new, ws))
            .await?
            .map_err(ApiError::internal)?;
    st.0.store.set_password_hash(&user.id, &hash).await?;
    let done = revocation::revoke_user_and_devices(&*st.0.store, &st.0.cfg.policy, &user.id, now())
        .await?;
    st.0.denylist.record(done.entries);
    st.audit(Event::new(kind::PASSWORD_CHANGED).user(&user.id).ip(ip))
        .await;
    let mut body = crate::routes::new_session(&st, &user, None).await?;
    // The other devices' tokens ended with the change; this one gets a new one, so its
    // owner is not left behind an attack's limits.
    body.device_token = crate::routes::device_token_for(&st, &user.id, now() + 1).await;
    Ok(no_store(crate::routes::with_device_cookie(&st, body)))
}

/// `DELETE /api/v1/me` `{"password"}`: the account and its sessions end.
#[utoipa::path(delete, path = "/api/v1/me", tag = "me",
    request_body = crate::schema::DeleteMeRequest,
    responses(
        (status = 204, description = "The account and its sessions ended"),
        (status = 400, description = "`missing_field`, `invalid_json`", body = crate::schema::ErrorBody),
        (status = 401, description = "`bad_credentials`: the password is wrong; or the token is invalid", body = crate::schema::ErrorBody),
        (status = 403, description = "`client_token`: a machine client's token", body = crate::schema::ErrorBody),
        (status = 404, description = "`not_found`: the account is gone", body = crate::schema::ErrorBody),
    ),
    security(("user" = [])))]
pub async fn delete_me(
    State(st): State<AppState>,
    crate::routes::ClientIp(ip, listed): crate::routes::ClientIp,
    Me(p): Me,
    mut body: JsonObject,
) -> Result<StatusCode, ApiError> {
    let pw = body.take_secret("password")?;
    let user = user_or_404(&st, &p.subject).await?;
    check_current_password(&st, &user.id, (ip, listed), pw).await?;
    let done = revocation::revoke_user_and_devices(&*st.0.store, &st.0.cfg.policy, &user.id, now())
        .await?;
    st.0.denylist.record(done.entries);
    st.0.store.delete_user(&user.id).await?;
    st.audit(
        Event::new(kind::USER_DELETED)
            .user(&user.id)
            .actor(&user.id)
            .ip(ip),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

// ---- audit ----

/// `GET /api/v1/audit?since=&before=&type=&user=&limit=`: events newest first; `since` and
/// `before` in milliseconds since the epoch (default: the last 24 hours, `before`
/// exclusive); `next` is the `before` of the page after, `null` on the last.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit",
    params(
        ("since" = Option<i64>, Query, description = "Milliseconds since the epoch; the last 24 hours by default"),
        ("before" = Option<i64>, Query, description = "Only older events (exclusive): the `next` of the page before"),
        ("type" = Option<String>, Query, description = "Only this type, e.g. `login.failed`"),
        ("user" = Option<String>, Query, description = "Only about this user or client"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size, 100 by default"),
    ),
    responses(
        (status = 200, description = "Events, newest first", body = crate::schema::AuditPage),
        (status = 400, description = "`invalid_query`", body = crate::schema::ErrorBody),
    ),
    security(("management" = ["read:audit"])))]
pub async fn audit_events(
    State(st): State<AppState>,
    caller: Caller,
    RawQuery(raw): RawQuery,
) -> Result<Json<crate::schema::AuditPage>, ApiError> {
    caller.require("read:audit")?;
    let params = query(raw, &["since", "before", "type", "user", "limit"])?;
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
    let number = |k: &str| -> Result<Option<i64>, ApiError> {
        get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::BadRequest("invalid_query", format!("{k} is a number")))
            })
            .transpose()
    };
    let now_ms = now() * 1000;
    let limit = match number("limit")? {
        None => 100,
        Some(l) if (1..=1000).contains(&l) => l as usize,
        Some(_) => {
            return Err(ApiError::BadRequest(
                "invalid_query",
                "limit is a number from 1 to 1000".into(),
            ));
        }
    };
    let since = number("since")?.unwrap_or(now_ms - 86_400_000).max(0);
    let before = number("before")?.map(|b| b.clamp(1, i64::MAX / 2));
    if before.is_some_and(|b| b <= since) {
        return Err(ApiError::BadRequest(
            "invalid_query",
            "before must be later than since".into(),
        ));
    }
    // Nothing older than the retention is kept: a `since` before it reads no further back
    // (on DynamoDB each day is a partition to read).
    let kept_from = now_ms.saturating_sub(st.0.cfg.audit_retention_days.saturating_mul(86_400_000));
    let since = since.max(kept_from);
    for k in ["type", "user"] {
        if get(k).is_some_and(|v| !plausible_id(v)) {
            return Err(ApiError::BadRequest(
                "invalid_query",
                format!("{k} is 1 to 128 characters, no control characters"),
            ));
        }
    }
    let q = jotgate_store::AuditQuery {
        since_ms: since,
        before_ms: before,
        kind: get("type").map(str::to_string),
        user: get("user").map(str::to_string),
        limit,
    };
    let mut events = match before {
        // The whole range is older than anything kept.
        Some(b) if b <= since => Vec::new(),
        _ => st.0.store.audit_events(q).await?,
    };
    // A full page ends before its last millisecond, which the next page (`before` = that
    // millisecond + 1) then gives whole: no event is skipped at a page boundary.
    let mut next = None;
    if events.len() == limit
        && let Some(last) = events.last().map(|e| e.at_ms)
    {
        let cut = events.iter().position(|e| e.at_ms == last).unwrap_or(0);
        if cut > 0 {
            events.truncate(cut);
            next = Some(last + 1);
        } else {
            // A whole page in one millisecond (1,000 events): the next starts below it.
            next = Some(last);
        }
    }
    Ok(Json(crate::schema::AuditPage { events, next }))
}

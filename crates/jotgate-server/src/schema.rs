//! The HTTP API's bodies as types. The handlers answer with these, and the OpenAPI document
//! (`GET /openapi.json`, [`crate::openapi`]) is generated from them and from the handlers'
//! `#[utoipa::path]` annotations.
//!
//! Request bodies that carry a password are read field by field (`JsonObject::take_secret`
//! moves the secret into a buffer wiped on drop), so their types here describe the body for
//! the document; the management API's other bodies are deserialised into the types in
//! `management.rs`, which the document uses directly. `scripts/test.sh` runs schemathesis
//! against a live server: whatever the document says is checked against what the server
//! does.

use jotgate_store::User;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// Every error of the API but `/oauth/token`'s.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"status": "error", "error": "field \"username\" is required", "code": "missing_field"}))]
pub struct ErrorBody {
    /// Always `error`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// A sentence for people; it never echoes a secret.
    pub error: String,
    /// Stable, for programs: `missing_field`, `invalid_token`, `insufficient_scope`,
    /// `rate_limited`, `store_unavailable`, …
    #[schema(value_type = String)]
    pub code: &'static str,
}

/// An OAuth 2.0 error (RFC 6749 §5.2).
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "invalid_client", "error_description": "client authentication failed"}))]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `invalid_grant`, `invalid_scope`,
    /// `invalid_target`, `unsupported_grant_type`, `rate_limited`, `temporarily_unavailable`.
    #[schema(value_type = String)]
    pub error: &'static str,
    pub error_description: String,
}

/// A login session's tokens: from sign-up, login, refresh and a password change.
#[derive(Serialize, ToSchema)]
pub struct Tokens {
    pub user: User,
    /// The access token (a JWT), sent as `Authorization: Bearer`.
    pub token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// Single use: each refresh answers a new one.
    pub refresh_token: String,
    /// From `/login`, `/signup` and a password change: this device's token (also set as
    /// an HttpOnly cookie). Send it back as `device_token` with the next login: it then
    /// skips the limits that guesses from elsewhere cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_token: Option<String>,
}

/// A machine client's token (RFC 6749 §5.1, an RFC 9068 JWT).
#[derive(Serialize, ToSchema)]
pub struct ClientToken {
    pub access_token: String,
    /// Always `Bearer`.
    #[schema(value_type = String)]
    pub token_type: &'static str,
    pub expires_in: i64,
    /// The scopes granted, space-separated.
    pub scope: String,
}

/// `POST /verify`'s answer for a valid token.
#[derive(Serialize, ToSchema)]
pub struct Verified {
    /// Always `valid`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// The token's claims.
    #[schema(value_type = Object)]
    pub claims: Map<String, Value>,
}

/// `GET /private`'s answer (`Hello <username>`).
#[derive(Serialize, ToSchema)]
pub struct Greeting {
    pub message: String,
}

/// `GET /healthz`.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    #[schema(value_type = String)]
    pub status: &'static str,
}

/// `GET /readyz`.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    #[schema(value_type = String)]
    pub status: &'static str,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The OpenID Provider Metadata jotgate publishes (OpenID Connect Discovery 1.0 §3,
/// RFC 8414).
#[derive(Serialize, ToSchema)]
pub struct Discovery {
    pub issuer: String,
    pub jwks_uri: String,
    pub token_endpoint: String,
    #[schema(value_type = Vec<String>)]
    pub grant_types_supported: &'static [&'static str],
    #[schema(value_type = Vec<String>)]
    pub token_endpoint_auth_methods_supported: &'static [&'static str],
    #[schema(value_type = Vec<String>)]
    pub subject_types_supported: &'static [&'static str],
    pub id_token_signing_alg_values_supported: Vec<String>,
    pub access_token_signing_alg_values_supported: Vec<String>,
    #[schema(value_type = Vec<String>)]
    pub scopes_supported: &'static [&'static str],
    #[schema(value_type = Vec<String>)]
    pub claims_supported: &'static [&'static str],
}

/// A JSON Web Key Set (RFC 7517 §5): the public keys that verify jotgate's tokens.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JwkSet {
    /// Public JWKs (`kty`, `kid`, `alg`, `use` and the key's own members).
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<Value>,
}

/// A page of users, oldest first.
#[derive(Serialize, ToSchema)]
pub struct UsersPage {
    pub users: Vec<User>,
    /// The `cursor` of the next page; `null` on the last.
    pub next: Option<String>,
}

/// `POST /api/v1/users/{id}/revoke-sessions`.
#[derive(Serialize, ToSchema)]
pub struct SessionsEnded {
    /// How many sessions ended.
    pub sessions_ended: usize,
}

/// `GET /api/v1/user-blocks/{id}`: what holds a user's login back, as Auth0's user blocks.
#[derive(Serialize, ToSchema)]
pub struct UserBlocks {
    /// Blocks in force now; empty when none.
    pub blocked_for: Vec<UserBlock>,
}

impl From<Vec<crate::limits::Block>> for UserBlocks {
    fn from(blocks: Vec<crate::limits::Block>) -> Self {
        Self {
            blocked_for: blocks
                .into_iter()
                .map(|b| UserBlock {
                    ip: b.address,
                    failures: b.failures,
                    until: (b.until_ms + 999) / 1000,
                })
                .collect(),
        }
    }
}

/// One block on a user's login.
#[derive(Serialize, ToSchema)]
pub struct UserBlock {
    /// The client address held back: an IPv4 address, an IPv6 /64 (`2001:db8:0:1::/64`),
    /// or `-` (attempts with no known address). Null: every address, the account's hourly
    /// ceiling being reached (logins with a device token still get through).
    pub ip: Option<String>,
    /// Wrong passwords counted.
    pub failures: u32,
    /// Until when (seconds since the epoch), unless more wrong passwords come.
    pub until: i64,
}

/// A user's role names, sorted.
#[derive(Serialize, ToSchema)]
pub struct UserRoles {
    pub roles: Vec<String>,
}

/// Every role.
#[derive(Serialize, ToSchema)]
pub struct RoleList {
    pub roles: Vec<jotgate_store::Role>,
}

/// Every machine client (secrets are never shown again).
#[derive(Serialize, ToSchema)]
pub struct ClientList {
    pub clients: Vec<jotgate_store::ClientRecord>,
}

/// A new client, with its secret: shown this once.
#[derive(Serialize, ToSchema)]
pub struct NewClient {
    #[serde(flatten)]
    pub client: jotgate_store::ClientRecord,
    /// The same as `id`, under its OAuth 2.0 name.
    pub client_id: String,
    pub client_secret: String,
}

/// A client's new secret: shown this once.
#[derive(Serialize, ToSchema)]
pub struct ClientSecret {
    pub client_id: String,
    pub client_secret: String,
}

/// A page of audit events, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditPage {
    pub events: Vec<jotgate_store::AuditEvent>,
    /// The `before` of the next page; `null` on the last.
    pub next: Option<i64>,
}

// ---- request bodies read field by field (they carry a password) ----

/// `POST /signup`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct SignupRequest {
    /// 1 to 64 characters, no `@`; compared case- and confusable-insensitively.
    #[schema(min_length = 1, max_length = 64)]
    pub username: String,
    /// At least the configured minimum length (8 by default), not a common password,
    /// not the username.
    #[schema(
        min_length = 8,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub password: String,
    /// Optional; unique across accounts; unverified until verified.
    #[schema(max_length = 254)]
    pub email: Option<String>,
}

/// `POST /login`: `username` (a username or an email address, as OAuth clients send it)
/// or `email`, and `password`. Other members are ignored; with both, `username` is used.
pub struct LoginRequest;

impl utoipa::PartialSchema for LoginRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        let text = |min: usize| {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(min))
                .max_length(Some(1024))
        };
        let by = |field: &str| {
            ObjectBuilder::new()
                .property(field, text(1))
                .required(field)
                .property("password", text(1))
                .required("password")
                .property(
                    "device_token",
                    text(1).description(Some(
                        "The device token an earlier login answered (or send its cookie)",
                    )),
                )
        };
        AnyOfBuilder::new()
            .item(by("username"))
            .item(by("email"))
            .description(Some(
                "A username or an email address (as `username` or as `email`) and the password",
            ))
            .into()
    }
}

impl ToSchema for LoginRequest {}

/// `POST /refresh`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// `POST /logout`: the refresh token, or none when the access token is sent as `Bearer`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct LogoutRequest {
    #[serde(default)]
    pub refresh_token: String,
}

/// `POST /verify`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct VerifyRequest {
    /// A JWT.
    pub token: String,
}

/// `POST /oauth/token` (RFC 6749 §4.4.2), form-encoded or a JSON object of strings; each
/// parameter at most once. The client authenticates with HTTP Basic or with
/// `client_id` and `client_secret` here, not both.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct TokenRequest {
    pub grant_type: GrantType,
    #[serde(default)]
    pub client_id: String,
    #[serde(default)]
    pub client_secret: String,
    /// Space-separated; by default every scope the client holds for the audience.
    #[serde(default)]
    pub scope: String,
    /// One of the client's audiences (Auth0's name); the first by default.
    #[serde(default)]
    pub audience: String,
    /// The same, under RFC 8707's name.
    #[serde(default)]
    pub resource: String,
}

/// The one grant `/oauth/token` answers (others: 400 `unsupported_grant_type`).
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub enum GrantType {
    #[serde(rename = "client_credentials")]
    ClientCredentials,
}

/// `POST /api/v1/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct CreateUserRequest {
    #[schema(min_length = 1, max_length = 64)]
    pub username: String,
    #[schema(
        min_length = 8,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub password: String,
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// Defined roles; needs `update:users` too, and no role may grant a management scope
    /// the caller lacks.
    #[serde(default)]
    pub roles: Vec<String>,
    /// At most 4 KiB as JSON.
    #[schema(value_type = Option<Object>)]
    pub app_metadata: Option<Map<String, Value>>,
}

/// `PATCH /api/v1/users/{id}`: any of these.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct PatchUserRequest {
    /// `null` removes the address.
    pub email: Option<String>,
    pub email_verified: Option<bool>,
    /// Blocking ends the user's sessions.
    pub blocked: Option<bool>,
    #[schema(value_type = Option<Object>)]
    pub app_metadata: Option<Map<String, Value>>,
    /// A new password ends the user's sessions.
    #[serde(default)]
    #[schema(
        min_length = 8,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub password: String,
}

/// `POST /api/v1/me/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct ChangePasswordRequest {
    pub current_password: String,
    #[schema(
        min_length = 8,
        max_length = 1024,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub new_password: String,
}

/// `DELETE /api/v1/me`.
#[derive(Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct DeleteMeRequest {
    pub password: String,
}

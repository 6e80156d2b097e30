//! Machine clients and the OAuth 2.0 client-credentials grant (RFC 6749 §4.4): a client
//! authenticates with its id and secret at `POST /oauth/token` and receives an RFC 9068
//! access token whose `sub` is its id. Secrets are 256 random bits, stored as SHA-256.
//! Deleting a client or rotating its secret refuses the tokens it holds (a "not before"
//! on its id, through the revocation feed).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use jotgate_core::TokenPolicy;
use jotgate_store::{ClientRecord, Store, StoreError};
use jotgate_verify::Revoked;
use serde::Serialize;

use crate::accounts::{AccountError, scope_set};
use crate::error::ApiError;
use crate::routes::ClientIp;
use crate::{AppState, now, revocation};

/// The management API's scopes, named as Auth0's management API names them.
pub const MANAGEMENT_SCOPES: &[&str] = &[
    "read:users",
    "create:users",
    "update:users",
    "delete:users",
    "read:roles",
    "create:roles",
    "update:roles",
    "delete:roles",
    "read:clients",
    "create:clients",
    "update:clients",
    "delete:clients",
    "read:audit",
];

/// The management API's audience (as Auth0's `https://TENANT/api/v2/`): a token for it is
/// never a token for the application's API, nor the other way round.
pub fn management_audience(policy: &TokenPolicy) -> String {
    format!("{}/api/v1/", policy.issuer.trim_end_matches('/'))
}

pub fn is_management(scope: &str) -> bool {
    MANAGEMENT_SCOPES.contains(&scope)
}

fn secret_hash(secret: &str) -> String {
    jotgate_core::sha256_b64url(secret.as_bytes())
}

fn new_secret() -> String {
    format!("jgs_{}", jotgate_core::random::token(32))
}

/// A client name, checked: 1–100 characters, no control characters.
fn client_name(name: &str) -> Result<String, AccountError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AccountError::Invalid(
            "a client name is 1 to 100 characters, no control characters".into(),
        ));
    }
    Ok(name.to_string())
}

/// An audience, checked: 1–256 printable ASCII characters without space.
fn audience(a: &str) -> Result<String, AccountError> {
    if a.is_empty() || a.len() > 256 || !a.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AccountError::Invalid(format!(
            "invalid audience {a:?}: 1 to 256 printable ASCII characters, no space"
        )));
    }
    Ok(a.to_string())
}

/// A new client and its secret (shown once; only its hash is kept). With management
/// scopes, the management audience is registered and, unless `audiences` names others
/// first, its default; without, the application's audience is the default.
pub async fn create(
    store: &dyn Store,
    policy: &TokenPolicy,
    name: &str,
    scopes: &[String],
    audiences: &[String],
    t: i64,
) -> Result<(ClientRecord, String), AccountError> {
    let scopes = scope_set(scopes)?;
    let mut auds = Vec::new();
    for a in audiences {
        let a = audience(a)?;
        if !auds.contains(&a) {
            auds.push(a);
        }
    }
    let mgmt = management_audience(policy);
    if scopes.iter().any(|s| is_management(s)) && !auds.contains(&mgmt) {
        if audiences.is_empty() {
            auds.insert(0, mgmt);
        } else {
            auds.push(mgmt);
        }
    }
    if auds.is_empty() {
        auds.push(policy.audience.clone());
    }
    let secret = new_secret();
    let client = ClientRecord {
        id: format!("cl_{}", jotgate_core::random::token(16)),
        name: client_name(name)?,
        secret_hash: secret_hash(&secret),
        scopes,
        audiences: auds,
        created_at: t,
        secret_set_at: t,
    };
    store.create_client(client.clone()).await?;
    Ok((client, secret))
}

/// Refuse every token issued to `client_id` until now, here and (through the feed) at
/// every verifier.
async fn revoke_tokens(
    store: &dyn Store,
    policy: &TokenPolicy,
    client_id: &str,
    t: i64,
) -> Result<Revoked, StoreError> {
    let not_before = now().max(t) + 1;
    let entry = Revoked::User {
        sub: client_id.into(),
        not_before,
        expires_at: revocation::outlived(policy, not_before),
    };
    store
        .revoke_token(&entry.store_id(), entry.expires_at(), t)
        .await?;
    Ok(entry)
}

/// A new secret for a client (the old one stops working at once) and its tokens revoked.
pub async fn rotate_secret(
    store: &dyn Store,
    policy: &TokenPolicy,
    id: &str,
    t: i64,
) -> Result<(String, Revoked), AccountError> {
    let secret = new_secret();
    match store.set_client_secret(id, &secret_hash(&secret), t).await {
        Err(StoreError::NotFound(_)) => return Err(AccountError::NotFound("client")),
        r => r?,
    }
    let r = revoke_tokens(store, policy, id, t).await?;
    Ok((secret, r))
}

/// Delete a client and revoke its tokens.
pub async fn delete(
    store: &dyn Store,
    policy: &TokenPolicy,
    id: &str,
    t: i64,
) -> Result<(ClientRecord, Revoked), AccountError> {
    if store.client(id).await?.is_none() {
        return Err(AccountError::NotFound("client"));
    }
    // Its tokens first: a failure leaves the client there, and the delete can be asked
    // again; never a deleted client whose tokens still work.
    let r = revoke_tokens(store, policy, id, t).await?;
    let Some(c) = store.delete_client(id).await? else {
        return Err(AccountError::NotFound("client"));
    };
    Ok((c, r))
}

/// An RFC 6749 §5.2 error (or 429, 503): `{"error", "error_description"}`, never cached.
pub struct OAuthError {
    status: StatusCode,
    error: &'static str,
    description: String,
    retry_after: Option<u64>,
}

impl OAuthError {
    fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            retry_after: None,
        }
    }

    fn request(d: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", d)
    }

    fn client() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "client authentication failed",
        )
    }
}

impl From<ApiError> for OAuthError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::RateLimited { retry_after_secs } => Self {
                retry_after: Some(retry_after_secs.max(1)),
                ..Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many failed attempts for this client or address; retry later",
                )
            },
            ApiError::StoreUnavailable(cause) => {
                tracing::warn!(%cause, "the data store failed; answered 503");
                Self {
                    retry_after: Some(1),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "temporarily_unavailable",
                        "the data store is unavailable; retry shortly",
                    )
                }
            }
            e => {
                tracing::error!(cause = ?e, "token request failed");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal server error",
                )
            }
        }
    }
}

impl From<StoreError> for OAuthError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

fn no_store(h: &mut HeaderMap) {
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            axum::Json(crate::schema::OAuthErrorBody {
                error: self.error,
                error_description: self.description,
            }),
        )
            .into_response();
        let h = res.headers_mut();
        no_store(h);
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"jotgate\", charset=\"UTF-8\""),
            );
        }
        if let Some(s) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        res
    }
}

/// The claims of a client-credentials token (RFC 9068 §2.2).
#[derive(Serialize)]
struct ClientClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    client_id: &'a str,
    scope: String,
}

/// The request's parameters: form-encoded (RFC 6749 §4.4.2) or a JSON object of strings;
/// each at most once (§3.2).
fn parameters(headers: &HeaderMap, body: &[u8]) -> Result<Vec<(String, String)>, OAuthError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let params: Vec<(String, String)> = match ct.as_str() {
        "application/x-www-form-urlencoded" => url::form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        "application/json" => {
            let map: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(body)
                .map_err(|_| OAuthError::request("the body is not a JSON object"))?;
            map.into_iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Ok((k, s)),
                    _ => Err(OAuthError::request(format!(
                        "parameter \"{k}\" must be a string"
                    ))),
                })
                .collect::<Result<_, _>>()?
        }
        _ => {
            return Err(OAuthError::request(
                "send the parameters as application/x-www-form-urlencoded",
            ));
        }
    };
    for (i, (k, _)) in params.iter().enumerate() {
        if params[..i].iter().any(|(p, _)| p == k) {
            return Err(OAuthError::request(format!(
                "parameter \"{k}\" is given more than once"
            )));
        }
    }
    Ok(params)
}

/// The client's id and secret, from HTTP Basic (RFC 6749 §2.3.1: each form-urlencoded)
/// or from the body — never both.
fn credentials(
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(String, String), OAuthError> {
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
    let in_body = (get("client_id"), get("client_secret"));
    let mut auth = headers.get_all(header::AUTHORIZATION).iter();
    let basic = match (auth.next(), auth.next()) {
        (None, _) => None,
        (Some(v), None) => {
            let v = v.to_str().map_err(|_| OAuthError::client())?;
            let (scheme, b64) = v.split_once(' ').ok_or_else(OAuthError::client)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::client());
            }
            let raw = STANDARD
                .decode(b64.trim())
                .map_err(|_| OAuthError::client())?;
            let raw = String::from_utf8(raw).map_err(|_| OAuthError::client())?;
            let (id, secret) = raw.split_once(':').ok_or_else(OAuthError::client)?;
            // Each part form-urlencoded (§2.3.1); a raw '&' is itself, not a separator.
            let dec = |s: &str| {
                url::form_urlencoded::parse(format!("x={}", s.replace('&', "%26")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            Some((dec(id), dec(secret)))
        }
        _ => return Err(OAuthError::request("more than one Authorization header")),
    };
    match (basic, in_body) {
        (Some(_), (_, Some(_))) => Err(OAuthError::request(
            "use one client authentication method, not two",
        )),
        (Some(b), (Some(id), None)) if id != b.0 => Err(OAuthError::request(
            "client_id differs from the one authenticated",
        )),
        (Some(b), _) => Ok(b),
        (None, (Some(id), Some(secret))) => Ok((id, secret)),
        _ => Err(OAuthError::client()),
    }
}

/// Client credentials
///
/// A machine client's token (RFC 6749 §4.4, an RFC 9068 JWT). The client authenticates with
/// HTTP Basic or with `client_id` and `client_secret` in the body. Failed attempts are
/// counted per client and per address, like passwords.
#[utoipa::path(post, path = "/oauth/token", tag = "clients",
    request_body(content(
        (crate::schema::TokenRequest = "application/x-www-form-urlencoded"),
        (crate::schema::TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "The token", body = crate::schema::ClientToken,
            headers(("cache-control" = String, description = "no-store"))),
        (status = 400, description = "`invalid_request`, `unsupported_grant_type`, `invalid_scope`, `invalid_target`", body = crate::schema::OAuthErrorBody),
        (status = 413, description = "`invalid_request`: the body is too large", body = crate::schema::OAuthErrorBody),
        (status = 401, description = "`invalid_client`", body = crate::schema::OAuthErrorBody,
            headers(("www-authenticate" = String))),
        (status = 429, description = "`rate_limited`", body = crate::schema::OAuthErrorBody,
            headers(("retry-after" = u64))),
        (status = 503, description = "`temporarily_unavailable`", body = crate::schema::OAuthErrorBody,
            headers(("retry-after" = u64))),
    ),
    security(("client" = []), ()))]
pub async fn token(
    State(st): State<AppState>,
    ClientIp(ip, listed): ClientIp,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            let too_large = e.status() == StatusCode::PAYLOAD_TOO_LARGE;
            return OAuthError::new(
                e.status(),
                "invalid_request",
                if too_large {
                    "the request body is too large"
                } else {
                    "the request body could not be read"
                },
            )
            .into_response();
        }
    };
    // Answered within STORE_DEADLINE, a slow store or not, in this endpoint's own error
    // shape (the other writing routes share a middleware that answers in ours). The work
    // goes on in the background, so a counted attempt is still settled.
    let work = tokio::spawn(tracing::Instrument::in_current_span(
        jotgate_verify::service::RequestContext::carry(async move {
            match issue(&st, ip, listed, &headers, &body).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            }
        }),
    ));
    match tokio::time::timeout(crate::STORE_DEADLINE, work).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => OAuthError::from(ApiError::internal(e)).into_response(),
        Err(_) => OAuthError::from(ApiError::StoreUnavailable(format!(
            "the token request did not finish within {} s",
            crate::STORE_DEADLINE.as_secs()
        )))
        .into_response(),
    }
}

async fn issue(
    st: &AppState,
    ip: Option<std::net::IpAddr>,
    listed: crate::routes::Allowlisted,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let params = parameters(headers, body)?;
    let get = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.as_str());
    match get("grant_type") {
        None => return Err(OAuthError::request("grant_type is required")),
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "this endpoint grants client_credentials",
            ));
        }
    }
    let (id, secret) = credentials(headers, &params)?;
    if !crate::management::plausible_id(&id) || secret.len() > 256 {
        return Err(OAuthError::client());
    }
    // Counted before the check, like a password: a secret cannot be guessed faster than
    // a password, from one address or many.
    let mut keys = vec![format!(
        "client:{}",
        jotgate_core::sha256_b64url(id.as_bytes())
    )];
    keys.extend(st.0.limiter.address_key("ip", ip, listed));
    st.0.limiter.begin(&keys).await?;
    let client = match st.0.store.client(&id).await {
        Ok(c) => c,
        Err(e) => {
            st.0.limiter.release(&keys).await;
            return Err(e.into());
        }
    };
    let presented = secret_hash(&secret);
    let client = match client {
        Some(c) if jotgate_core::same_secret(presented.as_bytes(), c.secret_hash.as_bytes()) => c,
        _ => return Err(OAuthError::client()),
    };
    st.0.limiter.succeeded(&keys).await;

    let policy = &st.0.cfg.policy;
    let (aud_param, resource) = (get("audience"), get("resource"));
    let aud = match (aud_param, resource) {
        (Some(a), Some(r)) if a != r => {
            return Err(OAuthError::request("audience and resource differ"));
        }
        (Some(a), _) | (None, Some(a)) => {
            if !client.audiences.iter().any(|c| c == a) {
                return Err(OAuthError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_target",
                    "the audience is not registered for this client",
                ));
            }
            a.to_string()
        }
        (None, None) => client
            .audiences
            .first()
            .cloned()
            .unwrap_or_else(|| policy.audience.clone()),
    };
    // Management scopes go only into management tokens, application scopes only into
    // the others.
    let mgmt = aud == management_audience(policy);
    let grantable: Vec<&String> = client
        .scopes
        .iter()
        .filter(|s| is_management(s) == mgmt)
        .collect();
    let scope: Vec<&str> = match get("scope") {
        None => grantable.iter().map(|s| s.as_str()).collect(),
        Some(asked) => {
            let mut out: Vec<&str> = Vec::new();
            for s in asked.split_ascii_whitespace() {
                if !grantable.iter().any(|g| g.as_str() == s) {
                    return Err(OAuthError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_scope",
                        format!("scope {s:?} is not granted to this client for this audience"),
                    ));
                }
                if !out.contains(&s) {
                    out.push(s);
                }
            }
            out
        }
    };
    let scope = scope.join(" ");
    // Issued in a second no rotation's "not before" refuses (waiting for it, as a login
    // does), then the client read again: a rotation or deletion that committed before this
    // read is seen here, and one after it refuses this token (its "not before" is later).
    let t = crate::routes::issuing_second(st, &client.id).await;
    match st.0.store.client(&client.id).await? {
        Some(now_c) if now_c.secret_hash == client.secret_hash => {}
        _ => return Err(OAuthError::client()),
    }
    let claims = ClientClaims {
        iss: &policy.issuer,
        sub: &client.id,
        aud: &aud,
        exp: t + policy.access_ttl,
        iat: t,
        nbf: t,
        jti: uuid::Uuid::new_v4().to_string(),
        client_id: &client.id,
        scope: scope.clone(),
    };
    let token =
        st.0.keys
            .current()
            .signer()
            .sign(&claims)
            .map_err(ApiError::internal)?;
    st.audit(
        crate::audit::Event::new(crate::audit::kind::CLIENT_TOKEN)
            .user(&client.id)
            .ip(ip)
            .with("aud", aud.as_str())
            .with("scope", scope.as_str()),
    )
    .await;
    let mut res = axum::Json(crate::schema::ClientToken {
        access_token: token,
        token_type: "Bearer",
        expires_in: policy.access_ttl,
        scope,
    })
    .into_response();
    no_store(res.headers_mut());
    Ok(res)
}

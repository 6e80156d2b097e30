//! The OpenAPI 3.1 document of the whole HTTP API, served at `GET /openapi.json`. It is
//! generated (utoipa) from the handlers' `#[utoipa::path]` annotations and the body types
//! in [`crate::schema`]; [`document`] adds what every operation shares — the security
//! schemes and the errors the framing answers (body too large, wrong media type, the store
//! unavailable) — so no operation has to repeat them.
//!
//! `scripts/test.sh` runs schemathesis against a live server on each backend with this
//! document: no 5xx, and every answer matches it.

use utoipa::OpenApi;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{
    ClientCredentials, Flow, HttpAuthScheme, HttpBuilder, OAuth2, Scopes, SecurityScheme,
};
use utoipa::openapi::{
    ContentBuilder, Header, Ref, RefOr, Response, ResponseBuilder, ServerBuilder,
};

use crate::{clients, management, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "jotgate",
        description = "Authentication for APIs: sign-up, login and refresh for users; client \
credentials for machines; the management API (`/api/v1`) for users, roles, clients and the audit \
log; and what verifiers need (JWKS, discovery, the revocation feed). Errors are \
`{\"status\":\"error\",\"error\",\"code\"}` (RFC 6749 §5.2 on `/oauth/token`).",
    ),
    paths(
        routes::signup,
        routes::login,
        routes::refresh,
        routes::logout,
        routes::logout_all,
        routes::verify,
        routes::private,
        clients::token,
        routes::revocation_feed,
        routes::jwks,
        routes::discovery,
        routes::healthz,
        routes::readyz,
        management::list_users,
        management::create_user,
        management::get_user,
        management::patch_user,
        management::delete_user,
        management::revoke_sessions,
        management::get_user_blocks,
        management::delete_user_blocks,
        management::user_roles,
        management::add_user_roles,
        management::remove_user_roles,
        management::list_roles,
        management::get_role,
        management::put_role,
        management::delete_role,
        management::list_clients,
        management::create_client,
        management::rotate_client_secret,
        management::delete_client,
        management::me,
        management::delete_me,
        management::change_my_password,
        management::audit_events,
    ),
    tags(
        (name = "sessions", description = "A user's sessions: sign-up, login, refresh, logout"),
        (name = "tokens", description = "Using and checking tokens"),
        (name = "me", description = "The signed-in user's own account"),
        (name = "users", description = "Management: users and their roles"),
        (name = "roles", description = "Management: roles, named bags of scopes"),
        (name = "clients", description = "Machine clients and their tokens"),
        (name = "audit", description = "Management: the audit log"),
        (name = "discovery", description = "What verifiers and OAuth clients read"),
        (name = "operations", description = "Health checks"),
    )
)]
struct ApiDoc;

/// The management API's scopes, as the client-credentials flow grants them.
const MANAGEMENT_SCOPES: &[(&str, &str)] = &[
    ("read:users", "Read users"),
    ("create:users", "Create users"),
    ("update:users", "Change users and their roles"),
    ("delete:users", "Delete users"),
    ("read:roles", "Read roles"),
    ("create:roles", "Create roles"),
    ("update:roles", "Change roles"),
    ("delete:roles", "Delete roles"),
    ("read:clients", "Read machine clients"),
    ("create:clients", "Create machine clients"),
    ("update:clients", "Rotate client secrets"),
    ("delete:clients", "Delete machine clients"),
    ("read:audit", "Read the audit log"),
];

/// Operations whose answer may be 429: they hash a password (the hashing pool's queue is
/// bounded) or count failed attempts.
const HASHING: &[&str] = &[
    "signup",
    "login",
    "create_user",
    "patch_user",
    "change_my_password",
    "delete_me",
];

/// Operations that never read the store (no 503 `store_unavailable`).
const STORELESS: &[&str] = &[
    "healthz",
    "readyz",
    "jwks",
    "discovery",
    "verify",
    "private",
];

fn error(description: &str, header: Option<&str>) -> RefOr<Response> {
    let mut r = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorBody")))
            .build(),
    );
    if let Some(h) = header {
        r = r.header(
            h,
            Header::new(
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String),
            ),
        );
    }
    RefOr::T(r.build())
}

fn operations(doc: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut Operation> {
    doc.paths.paths.values_mut().flat_map(|item| {
        [
            item.get.as_mut(),
            item.post.as_mut(),
            item.put.as_mut(),
            item.patch.as_mut(),
            item.delete.as_mut(),
        ]
        .into_iter()
        .flatten()
    })
}

/// The document for a server whose issuer is `issuer`, as JSON.
pub fn document(issuer: &str) -> String {
    let base = issuer.trim_end_matches('/');
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    doc.servers = Some(vec![ServerBuilder::new().url(base).build()]);
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "user",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "An application access token from /login, /signup or /refresh",
                ))
                .build(),
        ),
    );
    components.add_security_scheme(
        "management",
        SecurityScheme::OAuth2(OAuth2::with_description(
            [Flow::ClientCredentials(ClientCredentials::new(
                format!("{base}/oauth/token"),
                Scopes::from_iter(MANAGEMENT_SCOPES.iter().copied()),
            ))],
            format!(
                "A management token: a machine client's token whose audience is {base}/api/v1/"
            ),
        )),
    );
    components.add_security_scheme(
        "feed",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("The configured `feed_token`"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "client",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Basic)
                .description(Some("client_id and client_secret (RFC 6749 §2.3.1)"))
                .build(),
        ),
    );
    for op in operations(&mut doc) {
        let id = op.operation_id.clone().unwrap_or_default();
        let secured = op.security.as_ref().is_some_and(|s| {
            let v = serde_json::to_value(s).unwrap_or_default();
            v.as_array().is_some_and(|a| {
                a.iter()
                    .any(|r| r.as_object().is_some_and(|o| !o.is_empty()))
            })
        });
        let has_body = op.request_body.is_some();
        let has_path = op.parameters.as_ref().is_some_and(|ps| {
            ps.iter()
                .any(|p| matches!(p, RefOr::T(p) if p.parameter_in == ParameterIn::Path))
        });
        let oauth = id == "token";
        let r = &mut op.responses.responses;
        // A status the operation documents already keeps its own body and gains the
        // shared cause in its description.
        let mut add = |status: &str, resp: RefOr<Response>| match r.get_mut(status) {
            Some(RefOr::T(have)) => {
                if let RefOr::T(new) = resp {
                    have.description = format!("{}; {}", have.description, new.description);
                }
            }
            Some(RefOr::Ref(_)) => {}
            None => {
                r.insert(status.to_string(), resp);
            }
        };
        if secured && !oauth {
            add(
                "400",
                error("`invalid_request`: more than one credential", None),
            );
            add(
                "401",
                error(
                    "`token_missing`, or the token is invalid, expired, revoked or for another audience",
                    Some("www-authenticate"),
                ),
            );
            add(
                "403",
                error(
                    "`insufficient_scope`: the token lacks the scope named in `WWW-Authenticate`",
                    Some("www-authenticate"),
                ),
            );
        }
        if has_body && !oauth {
            add(
                "400",
                error(
                    "`invalid_json`, `invalid_body`, `missing_field`, `invalid_field`: the body is not the JSON object described",
                    None,
                ),
            );
            add("415", error("`unsupported_media_type`: send JSON", None));
        }
        if has_path {
            add(
                "400",
                error(
                    "`invalid_path`: a path segment is not percent-encoded UTF-8",
                    None,
                ),
            );
        }
        if has_body && !oauth {
            add("413", error("`payload_too_large`", None));
        }
        if HASHING.contains(&id.as_str()) {
            add(
                "429",
                error(
                    "`rate_limited` (too many failed attempts) or `server_busy` (the hashing queue is full)",
                    Some("retry-after"),
                ),
            );
        }
        add(
            "408",
            error(
                "`request_timeout`: the request was not answered within 30 s",
                None,
            ),
        );
        if !STORELESS.contains(&id.as_str()) && !oauth {
            add(
                "503",
                error(
                    "`store_unavailable`: the store did not answer in time; retry",
                    Some("retry-after"),
                ),
            );
        }
    }
    serde_json::to_string(&doc).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_names_every_route() {
        let doc: Value = serde_json::from_str(&document("https://auth.example.com/")).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        assert_eq!(doc["servers"][0]["url"], "https://auth.example.com");
        let paths = doc["paths"].as_object().unwrap();
        // Every route template the metrics know is documented, and nothing else.
        for p in paths.keys() {
            assert_eq!(crate::metrics::route(p), p.as_str(), "{p}");
        }
        for p in crate::metrics::ROUTES {
            assert!(
                paths.contains_key(*p) || *p == "/openapi.json",
                "{p} is not documented"
            );
        }
        let tokens = &doc["components"]["securitySchemes"]["management"]["flows"]["clientCredentials"]
            ["tokenUrl"];
        assert_eq!(tokens, "https://auth.example.com/oauth/token");
        // Every management operation asks for one of the management scopes.
        for (p, item) in paths {
            for (method, op) in item.as_object().unwrap() {
                let Some(sec) = op["security"].as_array() else {
                    continue;
                };
                for req in sec {
                    for scope in req["management"].as_array().into_iter().flatten() {
                        assert!(
                            MANAGEMENT_SCOPES.iter().any(|(s, _)| scope == *s),
                            "{method} {p}: {scope}"
                        );
                    }
                }
            }
        }
    }
}

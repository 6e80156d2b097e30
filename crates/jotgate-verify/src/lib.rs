//! jotgate-verify: verification at the edge, for jotgate's tokens and those of any OpenID
//! Connect issuer (Auth0, Cognito, Okta, Firebase, Keycloak…).
//!
//! - [`Verifier`]: trusted issuers (discovery → JWKS, a static JWKS, a PEM key or a shared
//!   secret), audiences, algorithms, leeway, required claims and accepted `typ`, under one
//!   explicit policy. A JWKS cache per issuer refreshed in the background (Cache-Control
//!   max-age within bounds), refetched on an unknown `kid` at most once per cooldown, and
//!   kept when the issuer is down. A bounded verified-token cache. Revocations (token,
//!   session, per-user "not before") held in memory and kept current from jotgate's feed.
//! - [`policy`]: the route policy file shared by the layer, the authorizer and the gateway.
//! - [`path`]: the one canonical spelling of a request path that the policy decides on.
//! - [`layer`]: `RequireAuth`, a tower layer for axum services.
//! - [`authorizer`]: AWS API Gateway Lambda authorizer events in, IAM policies out.
//! - [`gateway`]: a reverse proxy that verifies and forwards the identity in headers.
//!
//! The key design decision is the same as in jotgate-core: the algorithm comes from the
//! key, never from the token; an issuer's JWKS never yields an HMAC key. Not for: issuing
//! tokens or storing anything.

pub mod authorizer;
mod cache;
pub mod error;
mod fetch;
pub mod forwarding;
pub mod gateway;
pub mod http;
pub mod keyset;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod layer;
pub mod path;
pub mod policy;
pub mod principal;
pub mod revocation;
pub mod service;
pub mod verifier;

pub use error::{ConfigError, VerifyError, VerifyErrorKind};
pub use principal::Principal;
pub use revocation::{FeedPage, Revocations, Revoked};
pub use verifier::{
    Background, FeedConfig, IssuerConfig, KeySource, Stats, Verifier, VerifierConfig,
};

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

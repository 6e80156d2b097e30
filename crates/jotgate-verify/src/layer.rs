//! `RequireAuth`: a tower layer for axum that verifies the Bearer token, applies a route
//! requirement (or a whole [`Policy`]), and hands the [`Principal`] to handlers through
//! request extensions — what `express-jwt` is for Express.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use axum::{Router, routing::get};
//! # use jotgate_verify::{Principal, Verifier, layer::RequireAuth};
//! # fn app(verifier: Arc<Verifier>) -> Router {
//! Router::new()
//!     .route("/orders", get(|p: Principal| async move { format!("hello {}", p.subject) }))
//!     .layer(RequireAuth::new(verifier).any_scope(["orders:read"]))
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::http::{Rejection, decide, remove_credentials};
use crate::path::require_canonical;
use crate::policy::{Policy, Rule};
use crate::{Principal, Verifier};

#[derive(Clone)]
enum Requirement {
    Rule(Arc<Rule>),
    Policy(Arc<Policy>),
}

/// Require a valid token (and optionally scopes/roles) on every request of the wrapped
/// service.
#[derive(Clone)]
pub struct RequireAuth {
    verifier: Arc<Verifier>,
    req: Requirement,
}

impl RequireAuth {
    /// Any valid token.
    pub fn new(verifier: Arc<Verifier>) -> Self {
        Self::rule(verifier, Rule::authenticated())
    }

    pub fn rule(verifier: Arc<Verifier>, rule: Rule) -> Self {
        Self {
            verifier,
            req: Requirement::Rule(Arc::new(rule)),
        }
    }

    /// Decide per request from a policy's routes (method + path).
    pub fn policy(verifier: Arc<Verifier>, policy: Policy) -> Self {
        Self {
            verifier,
            req: Requirement::Policy(Arc::new(policy)),
        }
    }

    fn edit(mut self, f: impl FnOnce(&mut Rule)) -> Self {
        if let Requirement::Rule(r) = &mut self.req {
            f(Arc::make_mut(r));
        }
        self
    }

    /// At least one of these scopes.
    pub fn any_scope<I: IntoIterator<Item = S>, S: Into<String>>(self, s: I) -> Self {
        let v: Vec<String> = s.into_iter().map(Into::into).collect();
        self.edit(|r| r.scopes_any = v)
    }

    /// Every one of these scopes.
    pub fn all_scopes<I: IntoIterator<Item = S>, S: Into<String>>(self, s: I) -> Self {
        let v: Vec<String> = s.into_iter().map(Into::into).collect();
        self.edit(|r| r.scopes_all = v)
    }

    /// At least one of these roles.
    pub fn any_role<I: IntoIterator<Item = S>, S: Into<String>>(self, s: I) -> Self {
        let v: Vec<String> = s.into_iter().map(Into::into).collect();
        self.edit(|r| r.roles_any = v)
    }

    /// Every one of these roles.
    pub fn all_roles<I: IntoIterator<Item = S>, S: Into<String>>(self, s: I) -> Self {
        let v: Vec<String> = s.into_iter().map(Into::into).collect();
        self.edit(|r| r.roles_all = v)
    }
}

impl<S> Layer<S> for RequireAuth {
    type Service = RequireAuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequireAuthService {
            inner,
            auth: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct RequireAuthService<S> {
    inner: S,
    auth: RequireAuth,
}

impl<S> Service<Request> for RequireAuthService<S>
where
    S: Service<Request, Response = Response> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        // The clone that was polled ready serves this request (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            let rule: &Rule = match &auth.req {
                Requirement::Rule(r) => r,
                Requirement::Policy(p) => {
                    // The request goes on as it came, so its path must already be the
                    // one spelling the policy decides on.
                    let path = match require_canonical(req.uri().path()) {
                        Ok(p) => p,
                        Err(m) => return Ok(Rejection::BadRequest(m).into_response()),
                    };
                    p.decide(req.method().as_str(), &path)
                }
            };
            match decide(&auth.verifier, rule, req.headers()).await {
                Ok(d) => {
                    // On a public route, credentials nobody verified are not passed on.
                    if d.principal.is_none() {
                        remove_credentials(req.headers_mut());
                    }
                    if let Some(p) = d.principal {
                        req.extensions_mut().insert(p);
                    }
                }
                Err(r) => return Ok(r.into_response()),
            }
            inner.call(req).await
        })
    }
}

/// Handlers behind [`RequireAuth`] take the principal as an argument. Without the layer
/// (a wiring mistake, or a public route without a token) it answers 401.
impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Arc<Principal>>()
            .map(|p| (**p).clone())
            .ok_or_else(|| Rejection::Missing.into_response())
    }
}

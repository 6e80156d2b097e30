//! Why a token was refused, as one opaque error with a stable kind and code.

use jotgate_core::{TokenError, TokenErrorKind};

/// Which check refused a token.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyErrorKind {
    /// A structural or header check from the shared policy (size, encoding, `alg: none`,
    /// `jku`/`x5u`/`jwk`/`x5c`, `crit`, signature, time claims…).
    Token(TokenErrorKind),
    /// No token was presented.
    Missing,
    /// The `iss` claim names no configured issuer.
    UnknownIssuer,
    /// The header's `alg` is not among the issuer's allowed algorithms.
    AlgorithmNotAllowed,
    /// A configured required claim is absent.
    MissingClaim,
    /// The issuer's keys could not be fetched yet (issuer unreachable since start).
    IssuerUnavailable,
    /// The token, its session or its user was revoked.
    Revoked,
}

/// A refused token. Never carries the token or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct VerifyError {
    kind: VerifyErrorKind,
}

impl VerifyError {
    pub fn new(kind: VerifyErrorKind) -> Self {
        Self { kind }
    }

    pub fn kind(&self) -> VerifyErrorKind {
        self.kind
    }

    pub fn message(&self) -> &'static str {
        match self.kind {
            VerifyErrorKind::Token(k) => TokenError::new(k).message(),
            VerifyErrorKind::Missing => "a Bearer token is required",
            VerifyErrorKind::UnknownIssuer => "token issuer is not trusted",
            VerifyErrorKind::AlgorithmNotAllowed => "token algorithm is not allowed for its issuer",
            VerifyErrorKind::MissingClaim => "token lacks a required claim",
            VerifyErrorKind::IssuerUnavailable => "the token issuer's keys are unavailable",
            VerifyErrorKind::Revoked => "token has been revoked",
        }
    }

    /// A short stable code, e.g. `token_expired`.
    pub fn code(&self) -> &'static str {
        match self.kind {
            VerifyErrorKind::Token(k) => TokenError::new(k).code(),
            VerifyErrorKind::Missing => "token_missing",
            VerifyErrorKind::UnknownIssuer => "token_wrong_issuer",
            VerifyErrorKind::AlgorithmNotAllowed => "token_alg_not_allowed",
            VerifyErrorKind::MissingClaim => "token_invalid_claims",
            VerifyErrorKind::IssuerUnavailable => "issuer_unavailable",
            VerifyErrorKind::Revoked => "token_revoked",
        }
    }
}

impl From<TokenError> for VerifyError {
    fn from(e: TokenError) -> Self {
        Self::new(VerifyErrorKind::Token(e.kind()))
    }
}

pub(crate) fn refused(kind: TokenErrorKind) -> VerifyError {
    VerifyError::new(VerifyErrorKind::Token(kind))
}

/// A configuration that cannot work, found at start-up. The message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

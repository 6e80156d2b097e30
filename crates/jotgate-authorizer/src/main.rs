//! `jotgate-authorizer`: the API Gateway Lambda authorizer of `jotgate authorizer`, built
//! alone for a small Lambda package (`scripts/lambda-zip.sh --authorizer-only`). The same
//! decisions ([`jotgate_verify::lambda::run_authorizer`]); settings from the environment
//! only, as the function's configuration gives them:
//!
//! - `JOTGATE_POLICY`: the policy file (default `/var/task/policy.toml`);
//! - `JOTGATE_AUTHORIZER_FORMAT`: `simple` (default) or `iam`, for HTTP API payload 2.0;
//! - `JOTGATE_FEED_TOKEN`: the revocation feed's token, or the Secrets Manager / SSM ARN
//!   holding it;
//! - `JOTGATE_LOG`: `error`, `warn`, `info` (default), `debug` or `trace`. Lines are JSON.

use std::path::PathBuf;

use jotgate_verify::authorizer::V2Format;

fn setting(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn fail(msg: impl std::fmt::Display) -> ! {
    tracing::error!("{msg}");
    eprintln!("jotgate-authorizer: {msg}");
    std::process::exit(1)
}

async fn feed_token() -> Result<Option<String>, String> {
    let Some(value) = setting("JOTGATE_FEED_TOKEN") else {
        return Ok(None);
    };
    #[cfg(feature = "aws-secrets")]
    {
        let reference = jotgate_aws::secrets::reference(&value)
            .map_err(|e| format!("invalid setting JOTGATE_FEED_TOKEN: {e}"))?;
        if let Some(r) = reference {
            let secret = jotgate_aws::secrets::fetch(&r)
                .await
                .map_err(|e| format!("cannot read JOTGATE_FEED_TOKEN from AWS: {e}"))?;
            return Ok(Some(
                secrecy::ExposeSecret::expose_secret(&secret).to_string(),
            ));
        }
    }
    #[cfg(not(feature = "aws-secrets"))]
    if value.starts_with("arn:") {
        return Err("JOTGATE_FEED_TOKEN is an ARN, and this build reads no AWS secrets (feature aws-secrets)".into());
    }
    Ok(Some(value))
}

fn main() {
    let level = match setting("JOTGATE_LOG").as_deref().unwrap_or("info") {
        "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        other => {
            eprintln!(
                "jotgate-authorizer: invalid JOTGATE_LOG {other:?}: expected error, warn, info, debug or trace"
            );
            std::process::exit(2)
        }
    };
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let v2 = match setting("JOTGATE_AUTHORIZER_FORMAT").as_deref() {
        None | Some("simple") => V2Format::Simple,
        Some("iam") => V2Format::Iam,
        Some(other) => fail(format!(
            "invalid setting JOTGATE_AUTHORIZER_FORMAT {other:?}: expected simple or iam"
        )),
    };
    // Before anything that may call AWS (an ARN-given feed token).
    if let Err(e) = jotgate_verify::lambda::require_lambda_env("jotgate-authorizer") {
        fail(e)
    }
    let policy = setting("JOTGATE_POLICY")
        .map_or_else(|| PathBuf::from("/var/task/policy.toml"), PathBuf::from);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("cannot start the async runtime: {e}")));
    let result = runtime.block_on(async {
        let token = feed_token().await?;
        jotgate_verify::lambda::run_authorizer(&policy, v2, token.as_deref(), "jotgate-authorizer")
            .await
    });
    if let Err(e) = result {
        fail(e)
    }
}

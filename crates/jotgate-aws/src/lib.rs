//! jotgate-aws: how jotgate talks to AWS services without `aws-config`.
//!
//! [`sdk_config`] builds the one `SdkConfig` every AWS client of jotgate is made from:
//! region given or from `AWS_REGION`, credentials from the environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, as Lambda sets them from the function's
//! role), a rustls (aws-lc) HTTPS client, bounded timeouts and the standard retry policy.
//! Building it makes no network call — no profile files, no instance metadata — which keeps
//! a Lambda cold start at a few milliseconds and the build light.
//!
//! With feature `secrets`, [`secrets::resolve`] turns a setting whose value is a Secrets
//! Manager or SSM Parameter Store ARN into the secret it names.
//!
//! Not for: container (ECS) or instance (EC2) credential providers, SSO or profiles — export
//! the three variables there.

#[cfg(feature = "secrets")]
pub mod secrets;

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_types::SdkConfig;
use aws_types::region::Region;
use aws_types::sdk_config::{RetryConfig, SharedCredentialsProvider, TimeoutConfig};

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// Something to fix in the configuration (no region, no credentials, a bad ARN).
    #[error("{0}")]
    Config(String),
    /// The service refused or could not be reached. Never carries a secret's value.
    #[error("{0}")]
    Service(String),
}

/// The region from the environment: `AWS_REGION` (set by Lambda), then `AWS_DEFAULT_REGION`.
pub fn region_from_env() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .into_iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|r| !r.is_empty())
}

/// The `SdkConfig` for `region`, talking to `endpoint` when given (a local emulator).
pub fn sdk_config(region: &str, endpoint: Option<&str>) -> Result<SdkConfig, AwsError> {
    let (Ok(access), Ok(secret)) = (
        std::env::var("AWS_ACCESS_KEY_ID"),
        std::env::var("AWS_SECRET_ACCESS_KEY"),
    ) else {
        return Err(AwsError::Config(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
             (Lambda sets them from the function's role; a local emulator takes any dummy pair)"
                .into(),
        ));
    };
    let session = std::env::var("AWS_SESSION_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .build_https();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(2))
        .operation_attempt_timeout(Duration::from_secs(3))
        .operation_timeout(Duration::from_secs(8))
        .build();
    let mut b = SdkConfig::builder()
        .behavior_version(
            aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest(),
        )
        .region(Region::new(region.to_string()))
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            access,
            secret,
            session,
            None,
            "environment",
        )))
        .http_client(http)
        .timeout_config(timeouts)
        // Transient failures (a refused connection, a timeout, a 5xx) back off from 25 ms,
        // DynamoDB's own base, so that a store that is down is answered 503 within about a
        // second; throttling keeps the SDK's 1 s base (retry behaviour 2.1), so a hot
        // partition is not hit three times in 75 ms.
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_retry_spec(
                    aws_smithy_types::retry::RetrySpec::v2_1()
                        .with_non_throttling_initial_backoff(Duration::from_millis(25)),
                ),
        );
    if let Some(e) = endpoint {
        b = b.endpoint_url(e);
    }
    Ok(b.build())
}

//! Secret references: a setting whose value is the ARN of a Secrets Manager secret
//! (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-abc123` → its `SecretString`) or of
//! an SSM Parameter Store parameter (`arn:aws:ssm:REGION:ACCOUNT:parameter/NAME` → its
//! value, decrypted for a `SecureString`). Resolved once at start-up, with the function's
//! own credentials, in the region the ARN names. The ARN is not secret and may appear in
//! errors; the value never does.
//!
//! Endpoints follow AWS's standard variables: `AWS_ENDPOINT_URL_SECRETS_MANAGER`,
//! `AWS_ENDPOINT_URL_SSM`, then `AWS_ENDPOINT_URL` (tests point them at an emulator).

use aws_sdk_secretsmanager::error::DisplayErrorContext;
use secrecy::SecretString;

use crate::{AwsError, sdk_config};

/// What an ARN names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    SecretsManager { region: String, arn: String },
    Parameter { region: String, arn: String },
}

/// `Some` when `value` is meant as a reference (`arn:PARTITION:secretsmanager|ssm:…`),
/// checked: a malformed ARN of those services is an error, not a literal secret.
pub fn reference(value: &str) -> Result<Option<Reference>, AwsError> {
    let parts: Vec<&str> = value.splitn(6, ':').collect();
    if parts.len() < 3
        || parts[0] != "arn"
        || !parts[1].starts_with("aws")
        || !matches!(parts[2], "secretsmanager" | "ssm")
    {
        return Ok(None);
    }
    let bad = |why: &str| AwsError::Config(format!("invalid secret ARN {value:?}: {why}"));
    let [_, _, service, region, account, resource] = parts[..] else {
        return Err(bad("expected arn:aws:SERVICE:REGION:ACCOUNT:RESOURCE"));
    };
    if region.is_empty() {
        return Err(bad("no region"));
    }
    if account.len() != 12 || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("the account is 12 digits"));
    }
    let (region, arn) = (region.to_string(), value.to_string());
    match service {
        "secretsmanager"
            if resource
                .strip_prefix("secret:")
                .is_some_and(|n| !n.is_empty()) =>
        {
            Ok(Some(Reference::SecretsManager { region, arn }))
        }
        "ssm"
            if resource
                .strip_prefix("parameter/")
                .is_some_and(|n| !n.is_empty()) =>
        {
            Ok(Some(Reference::Parameter { region, arn }))
        }
        "secretsmanager" => Err(bad("expected …:secret:NAME")),
        _ => Err(bad("expected …:parameter/NAME")),
    }
}

fn endpoint(service: &str) -> Option<String> {
    [
        format!("AWS_ENDPOINT_URL_{service}"),
        "AWS_ENDPOINT_URL".into(),
    ]
    .into_iter()
    .filter_map(|v| std::env::var(v).ok())
    .find(|e| !e.is_empty())
}

/// Fetch the secret a reference names.
pub async fn fetch(r: &Reference) -> Result<SecretString, AwsError> {
    match r {
        Reference::SecretsManager { region, arn } => {
            let conf = sdk_config(region, endpoint("SECRETS_MANAGER").as_deref())?;
            let out = aws_sdk_secretsmanager::Client::new(&conf)
                .get_secret_value()
                .secret_id(arn)
                .send()
                .await
                .map_err(|e| {
                    AwsError::Service(format!(
                        "cannot read secret {arn}: {}",
                        DisplayErrorContext(&e)
                    ))
                })?;
            out.secret_string.map(SecretString::from).ok_or_else(|| {
                AwsError::Config(format!("secret {arn} holds binary data, not a string"))
            })
        }
        Reference::Parameter { region, arn } => {
            let conf = sdk_config(region, endpoint("SSM").as_deref())?;
            let out = aws_sdk_ssm::Client::new(&conf)
                .get_parameter()
                .name(arn)
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| {
                    AwsError::Service(format!(
                        "cannot read parameter {arn}: {}",
                        DisplayErrorContext(&e)
                    ))
                })?;
            out.parameter
                .and_then(|p| p.value)
                .map(SecretString::from)
                .ok_or_else(|| AwsError::Service(format!("parameter {arn} has no value")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let sm = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:jotgate/master-AbCdEf";
        assert_eq!(
            reference(sm).unwrap(),
            Some(Reference::SecretsManager {
                region: "eu-west-1".into(),
                arn: sm.into()
            })
        );
        let p = "arn:aws:ssm:us-east-1:123456789012:parameter/jotgate/pepper";
        assert!(matches!(
            reference(p).unwrap(),
            Some(Reference::Parameter { .. })
        ));
        // Literal secrets are not references, whatever they look like.
        for literal in [
            "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
            "arn",
            "arn:x",
            "arn:aws:s3:::bucket",
        ] {
            assert_eq!(reference(literal).unwrap(), None, "{literal}");
        }
        for bad in [
            "arn:aws:ssm:us-east-1:123456789012:document/x",
            "arn:aws:ssm::123456789012:parameter/x",
            "arn:aws:ssm:us-east-1:1234:parameter/x",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:",
            "arn:aws:secretsmanager:us-east-1",
        ] {
            assert!(reference(bad).is_err(), "{bad}");
        }
    }
}

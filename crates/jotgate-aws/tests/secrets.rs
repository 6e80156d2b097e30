//! Secret references resolved against a real AWS-compatible server: moto, started by
//! `scripts/test.sh` (`JOTGATE_TEST_DYNAMODB` names its endpoint; moto serves every
//! service on one port). `JOTGATE_SKIP_DYNAMODB=1` skips.
#![cfg(feature = "secrets")]

use jotgate_aws::secrets::{Reference, fetch, reference};
use secrecy::ExposeSecret;

fn endpoint() -> Option<String> {
    if std::env::var("JOTGATE_SKIP_DYNAMODB").as_deref() == Ok("1") {
        return None;
    }
    Some(std::env::var("JOTGATE_TEST_DYNAMODB").expect(
        "JOTGATE_TEST_DYNAMODB is not set: run scripts/test.sh, or set JOTGATE_SKIP_DYNAMODB=1",
    ))
}

#[tokio::test]
async fn secrets_manager_and_parameter_store_references_resolve() {
    let Some(ep) = endpoint() else { return };
    let conf = jotgate_aws::sdk_config("us-east-1", Some(&ep)).unwrap();
    let name = format!("jotgate-test-{}", std::process::id());
    let created = aws_sdk_secretsmanager::Client::new(&conf)
        .create_secret()
        .name(&name)
        .secret_string("the master key value")
        .send()
        .await
        .unwrap();
    let arn = created.arn.unwrap();
    let param = format!("/jotgate/{name}/pepper");
    aws_sdk_ssm::Client::new(&conf)
        .put_parameter()
        .name(&param)
        .value("the pepper value")
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .unwrap();

    // SAFETY: the only test in this binary that reads these variables.
    unsafe { std::env::set_var("AWS_ENDPOINT_URL", &ep) };
    let r = reference(&arn).unwrap().unwrap();
    assert!(matches!(r, Reference::SecretsManager { .. }));
    assert_eq!(
        fetch(&r).await.unwrap().expose_secret(),
        "the master key value"
    );
    let p = reference(&format!(
        "arn:aws:ssm:us-east-1:123456789012:parameter{param}"
    ))
    .unwrap()
    .unwrap();
    assert_eq!(fetch(&p).await.unwrap().expose_secret(), "the pepper value");

    // A missing secret is an error naming the ARN, never a value.
    let missing = reference("arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf")
        .unwrap()
        .unwrap();
    let e = fetch(&missing).await.unwrap_err().to_string();
    assert!(
        e.contains("cannot read secret arn:aws:secretsmanager") && e.contains("nope"),
        "{e}"
    );
}

//! `jotgate` as an AWS Lambda function: the real binary, started without arguments as
//! Lambda starts a `bootstrap`, driven through a local Lambda Runtime API with recorded
//! API Gateway REST (payload 1.0, named stage), HTTP API (2.0, named stage) and function
//! URL events: signup, login, private with and without a token, verify, refresh, errors.

use base64::Engine;
use serde_json::{Value, json};

use crate::authorizer::runtime_api::RuntimeApi;
use crate::common::{PASSWORD, temp_dir};

#[derive(Clone, Copy, Debug)]
enum Shape {
    RestV1,
    HttpV2,
    FunctionUrl,
}

/// A recorded event of `shape`, re-aimed at `method path` with `body` and `token`.
fn event(
    shape: Shape,
    method: &str,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> Value {
    let file = match shape {
        Shape::RestV1 => "rest-v1",
        Shape::HttpV2 => "http-v2",
        Shape::FunctionUrl => "function-url",
    };
    let text = std::fs::read_to_string(format!(
        "{}/tests/fixtures/apigw/{file}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let mut e: Value = serde_json::from_str(&text).unwrap();
    e["body"] = body.map_or(Value::Null, |b| b.to_string().into());
    match shape {
        Shape::RestV1 => {
            e["path"] = path.into();
            e["httpMethod"] = method.into();
            e["requestContext"]["httpMethod"] = method.into();
            e["requestContext"]["path"] = format!("/prod{path}").into();
            if let Some(t) = token {
                e["headers"]["Authorization"] = format!("Bearer {t}").into();
                e["multiValueHeaders"]["Authorization"] = json!([format!("Bearer {t}")]);
            }
        }
        Shape::HttpV2 | Shape::FunctionUrl => {
            let raw = match shape {
                Shape::HttpV2 => format!("/prod{path}"),
                _ => path.to_string(),
            };
            e["rawPath"] = raw.clone().into();
            e["requestContext"]["http"]["method"] = method.into();
            e["requestContext"]["http"]["path"] = raw.into();
            if let Some(t) = token {
                e["headers"]["authorization"] = format!("Bearer {t}").into();
            }
        }
    }
    e
}

struct Function {
    api: RuntimeApi,
    _child: tokio::process::Child,
    dir: std::path::PathBuf,
}

impl Function {
    async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A function (one Lambda container) with extra settings.
    async fn start_with(settings: &[(&str, &str)]) -> Self {
        let api = RuntimeApi::start().await;
        let dir = temp_dir();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_jotgate"))
            .envs(api.env())
            .env("JOTGATE_DATABASE", dir.join("jotgate.db"))
            .envs(settings.iter().copied())
            .env(
                "JOTGATE_ISSUER",
                "https://abcdef123.execute-api.us-east-1.amazonaws.com",
            )
            .env("JOTGATE_ARGON2_MEMORY_KIB", "1024")
            .env("JOTGATE_ARGON2_ITERATIONS", "1")
            .env("JOTGATE_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            api,
            _child: child,
            dir,
        }
    }

    /// Invoke and return the API Gateway response as the function wrote it.
    async fn call_raw(&mut self, event: Value) -> Value {
        let id = self.api.invoke(event);
        let out = self.api.outcome().await;
        assert_eq!(out.request_id, id);
        out.result
            .expect("the function answered, not an invocation error")
    }

    /// Invoke and return (status, headers, JSON body) of the API Gateway response.
    async fn call(&mut self, event: Value) -> (u16, Value, Value) {
        let res = self.call_raw(event).await;
        let body = res["body"].as_str().unwrap_or("");
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| panic!("JSON body: {body}"))
        };
        // Payload 1.0 answers put headers in multiValueHeaders; 2.0 in headers.
        let mut headers = serde_json::Map::new();
        for (k, v) in res["multiValueHeaders"].as_object().into_iter().flatten() {
            headers.insert(k.to_ascii_lowercase(), v[0].clone());
        }
        for (k, v) in res["headers"].as_object().into_iter().flatten() {
            headers.insert(k.to_ascii_lowercase(), v.clone());
        }
        let status = res["statusCode"].as_u64().unwrap() as u16;
        (status, Value::Object(headers), body)
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test]
async fn the_http_api_runs_unchanged_behind_each_event_shape() {
    let mut f = Function::start().await;
    for shape in [Shape::RestV1, Shape::HttpV2, Shape::FunctionUrl] {
        let user = format!("{shape:?}").to_lowercase();
        let creds = json!({"username": user, "password": PASSWORD});
        let (status, _, body) = f
            .call(event(shape, "POST", "/signup", Some(creds.clone()), None))
            .await;
        assert_eq!(status, 201, "{shape:?}: {body}");
        let (status, _, body) = f
            .call(event(shape, "POST", "/login", Some(creds), None))
            .await;
        assert_eq!(status, 200, "{shape:?}: {body}");
        let token = body["token"].as_str().unwrap().to_string();
        let refresh = body["refresh_token"].clone();
        assert_eq!(
            crate::common::token_part(&token, 1)["iss"],
            "https://abcdef123.execute-api.us-east-1.amazonaws.com"
        );

        let (status, _, body) = f
            .call(event(shape, "GET", "/private", None, Some(&token)))
            .await;
        assert_eq!(
            (status, body["message"].as_str()),
            (200, Some(&*format!("Hello {user}"))),
            "{shape:?}"
        );
        let (status, headers, body) = f.call(event(shape, "GET", "/private", None, None)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("token_missing")),
            "{shape:?}"
        );
        let challenge = headers["www-authenticate"].as_str().unwrap_or_default();
        assert!(challenge.starts_with("Bearer"), "{shape:?}: {headers}");

        let (status, _, body) = f
            .call(event(
                shape,
                "POST",
                "/verify",
                Some(json!({"token": token})),
                None,
            ))
            .await;
        assert_eq!(
            (status, body["status"].as_str()),
            (200, Some("valid")),
            "{shape:?}"
        );
        let (status, _, body) = f
            .call(event(
                shape,
                "POST",
                "/refresh",
                Some(json!({"refresh_token": refresh})),
                None,
            ))
            .await;
        assert_eq!(status, 200, "{shape:?}: {body}");
        assert_ne!(body["refresh_token"], refresh);

        // Errors keep their JSON shape.
        let (status, _, body) = f
            .call(event(
                shape,
                "POST",
                "/login",
                Some(json!({"username": user, "password": "wrong password"})),
                None,
            ))
            .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (401, Some("bad_credentials")),
            "{shape:?}"
        );
        let (status, _, body) = f.call(event(shape, "GET", "/nope", None, None)).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (404, Some("not_found")),
            "{shape:?}"
        );
    }
    // The JWKS the function publishes is the one its tokens verify with.
    let (status, headers, jwks) = f
        .call(event(
            Shape::HttpV2,
            "GET",
            "/.well-known/jwks.json",
            None,
            None,
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert!(
        headers["cache-control"]
            .as_str()
            .unwrap()
            .contains("max-age")
    );
}

/// Two Lambda containers on one DynamoDB table (moto, started by test.sh): what one writes
/// the other honours — accounts, signing keys, refresh rotation and reuse detection, and
/// login throttling counters.
#[cfg(feature = "dynamodb")]
/// Issue 17, item 7: a body marked base64 that is not base64 is a 400, in every event
/// shape, and the container goes on serving (the events crate would panic, and the
/// release profile aborts on panic).
#[tokio::test]
async fn a_body_marked_base64_that_is_not_gets_400() {
    let mut f = Function::start().await;
    for shape in [Shape::RestV1, Shape::HttpV2, Shape::FunctionUrl] {
        let mut e = event(shape, "POST", "/login", None, None);
        e["isBase64Encoded"] = true.into();
        e["body"] = "this is not base64!".into();
        let (status, _, body) = f.call(e).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("invalid_body")),
            "{shape:?}"
        );
        // Well-formed base64 still reaches the API.
        let creds = json!({"username": format!("{shape:?}").to_lowercase(), "password": PASSWORD});
        let mut e = event(shape, "POST", "/signup", None, None);
        e["isBase64Encoded"] = true.into();
        e["body"] = base64::engine::general_purpose::STANDARD
            .encode(creds.to_string())
            .into();
        let (status, _, body) = f.call(e).await;
        assert_eq!(status, 201, "{shape:?}: {body}");
    }
}

#[tokio::test]
async fn two_containers_share_one_dynamodb_table() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let settings = [
        ("JOTGATE_STORE", url.as_str()),
        ("JOTGATE_REFRESH_GRACE", "0"),
        ("JOTGATE_LOGIN_USER_FAILURES", "3"),
        ("JOTGATE_LOGIN_DELAY", "60"),
    ];
    // The first container creates the table and the signing key; the second finds both.
    let mut a = Function::start_with(&settings).await;
    let creds = json!({"username": "dyn", "password": PASSWORD});
    let (status, _, body) = a
        .call(event(
            Shape::HttpV2,
            "POST",
            "/signup",
            Some(creds.clone()),
            None,
        ))
        .await;
    assert_eq!(status, 201, "{body}");
    let mut b = Function::start_with(&settings).await;
    let (status, _, body) = b
        .call(event(Shape::HttpV2, "POST", "/login", Some(creds), None))
        .await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].clone();
    let (status, _, body) = a
        .call(event(Shape::HttpV2, "GET", "/private", None, Some(&token)))
        .await;
    assert_eq!((status, body["message"].as_str()), (200, Some("Hello dyn")));

    // Rotated on A, the token is spent on B too: presenting it again there is reuse, and
    // the whole session dies, so A's fresh successor is refused as well.
    let refresh_call = |t: &Value| {
        event(
            Shape::HttpV2,
            "POST",
            "/refresh",
            Some(json!({"refresh_token": t})),
            None,
        )
    };
    let (status, _, body) = a.call(refresh_call(&refresh)).await;
    assert_eq!(status, 200, "{body}");
    let successor = body["refresh_token"].clone();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, _, body) = b.call(refresh_call(&refresh)).await;
    assert_eq!(status, 401, "{body}");
    let (status, _, _) = a.call(refresh_call(&successor)).await;
    assert_eq!(status, 401, "the reused session is revoked everywhere");

    // Failed logins counted on A lock the username on B.
    let wrong = json!({"username": "dyn", "password": "not the password"});
    for _ in 0..3 {
        let (status, _, _) = a
            .call(event(
                Shape::HttpV2,
                "POST",
                "/login",
                Some(wrong.clone()),
                None,
            ))
            .await;
        assert_eq!(status, 401);
    }
    let (status, headers, body) = b
        .call(event(Shape::HttpV2, "POST", "/login", Some(wrong), None))
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    let retry: u64 = headers["retry-after"].as_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
}

#[test]
fn lambda_mode_needs_an_issuer_and_the_runtime() {
    let dir = temp_dir();
    let (ok, _, err) = crate::cli::run(&dir, &["lambda"], None);
    assert!(
        !ok && err.contains("not set: AWS_LAMBDA_RUNTIME_API"),
        "{err}"
    );
    let out = crate::cli::bin()
        .arg("lambda")
        .env("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:1")
        .env("AWS_LAMBDA_FUNCTION_NAME", "f")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("JOTGATE_DATABASE", dir.join("x.db"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("missing setting issuer (JOTGATE_ISSUER)"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A malformed or incomplete DynamoDB store URL fails start-up with one line naming the
/// setting and the problem; a good one serves the admin CLI too.
#[cfg(feature = "dynamodb")]
#[test]
fn dynamodb_store_settings_are_checked_at_start_up() {
    let dir = temp_dir();
    let cases = [
        (
            "dynamodb://tbl1?colour=red",
            "unknown or empty DynamoDB URL parameter \"colour\"",
        ),
        ("dynamodb://a b", "invalid DynamoDB table name"),
        (
            "dynamodb://tbl1?endpoint=ftp://x",
            "endpoint must be an http(s):// URL",
        ),
    ];
    for (url, says) in cases {
        let (ok, _, err) = crate::cli::run_env(&dir, &["users", "list"], &[("JOTGATE_STORE", url)]);
        assert!(
            !ok && err.contains("invalid setting store (JOTGATE_STORE)"),
            "{url}: {err}"
        );
        assert!(err.contains(says), "{url}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{url}: {err}");
    }
    let out = crate::cli::bin()
        .args(["users", "list"])
        .env("JOTGATE_STORE", "dynamodb://tbl1")
        .env_remove("AWS_REGION")
        .env_remove("AWS_DEFAULT_REGION")
        .env("JOTGATE_DATABASE", dir.join("x.db"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no AWS region"),
        "{err}"
    );

    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let env = [("JOTGATE_STORE", url.as_str())];
    let (ok, _, err) = crate::cli::run_full(
        &dir,
        &["users", "add", "carol", "--role", "admin"],
        Some(PASSWORD),
        &env,
    );
    assert!(ok, "{err}");
    let (ok, out, err) = crate::cli::run_env(&dir, &["users", "list"], &env);
    assert!(
        ok && out.contains("carol") && out.contains("admin"),
        "{out}{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Secret settings given as Secrets Manager / SSM ARNs are fetched at start-up (moto here):
/// signing keys sealed with a master key read from Secrets Manager open with it, and refuse
/// another key; an unreadable reference stops start-up with one line naming the setting.
#[cfg(all(feature = "dynamodb", feature = "aws-secrets"))]
#[tokio::test]
async fn secret_settings_can_be_aws_secret_references() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let endpoint = std::env::var("JOTGATE_TEST_DYNAMODB").unwrap();
    let master = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    let name = format!("jotgate/master-{}", uuid::Uuid::new_v4().simple());
    let created: Value = crate::common::client()
        .post(&endpoint)
        .header("x-amz-target", "secretsmanager.CreateSecret")
        .header("content-type", "application/x-amz-json-1.1")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0")
        .body(json!({"Name": name, "SecretString": master}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let arn = created["ARN"]
        .as_str()
        .expect("moto returns the ARN")
        .to_string();

    let dir = temp_dir();
    let run_cmd = |args: &[&str], master_key: &str| {
        crate::cli::run_env(
            &dir,
            args,
            &[
                ("JOTGATE_STORE", url.as_str()),
                ("JOTGATE_MASTER_KEY", master_key),
                ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ],
        )
    };
    let run = |master_key: &str| run_cmd(&["keys", "list"], master_key);
    let (ok, _, err) = run_cmd(&["keys", "rotate", "--now"], &arn);
    assert!(ok, "{err}");
    let (ok, out, err) = run(&arn);
    assert!(
        ok && out.contains("RS256"),
        "the same key opens them again: {out}{err}"
    );
    let (ok, _, err) = run("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    assert!(
        !ok && err.contains("master"),
        "another key is refused: {err}"
    );
    assert!(!err.contains(master), "{err}");

    let gone = arn.replace(&name, "jotgate/none");
    let (ok, _, err) = run(&gone);
    assert!(
        !ok && err.contains("cannot resolve setting master_key (JOTGATE_MASTER_KEY)"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let (ok, _, err) = run("arn:aws:ssm:us-east-1:123:parameter/x");
    assert!(!ok && err.contains("invalid setting master_key"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The per-address login limit keys on API Gateway's `sourceIp`, not on the last
/// `X-Forwarded-For` hop (CloudFront's, behind an edge-optimised API; and absent otherwise).
#[tokio::test]
async fn lambda_throttles_by_the_source_ip_of_the_request_context() {
    let mut f = Function::start_with(&[
        ("JOTGATE_LOGIN_IP_FAILURES", "3"),
        ("JOTGATE_LOGIN_DELAY", "60"),
    ])
    .await;
    let login = |name: &str, client: &str, edge: &str| {
        let mut e = event(
            Shape::RestV1,
            "POST",
            "/login",
            Some(json!({"username": name, "password": "wrong password"})),
            None,
        );
        e["requestContext"]["identity"]["sourceIp"] = client.into();
        e["headers"]["X-Forwarded-For"] = format!("{client}, {edge}").into();
        e["multiValueHeaders"]["X-Forwarded-For"] = json!([format!("{client}, {edge}")]);
        e
    };
    // Three failures from one client through one edge (login_ip_failures = 3); the next waits.
    for i in 0..3 {
        let (s, _, _) = f
            .call(login(&format!("u{i}"), "198.51.100.1", "130.176.0.1"))
            .await;
        assert_eq!(s, 401);
    }
    let (s, h, _) = f.call(login("u9", "198.51.100.1", "130.176.0.1")).await;
    assert_eq!(s, 429);
    assert!(h.get("retry-after").is_some());
    // Another client behind the same CloudFront edge is not affected.
    let (s, _, _) = f.call(login("u9", "198.51.100.2", "130.176.0.1")).await;
    assert_eq!(s, 401);
}

/// Issue 20 on Lambda: a sign-up answers a device token in the body and as a `__Host-`
/// cookie (payload 2.0 carries it in `cookies`, 1.0 in `Set-Cookie`); with the account's
/// ceiling tripped by guesses from many source addresses, the token — in the body, or as
/// the cookie API Gateway passes back — gets June in, and nothing else does.
#[tokio::test]
async fn device_tokens_get_their_owner_through_the_ceiling_on_lambda() {
    let mut f = Function::start_with(&[
        ("JOTGATE_LOGIN_USER_FAILURES", "2"),
        ("JOTGATE_LOGIN_USER_CEILING", "3"),
    ])
    .await;
    let from = |shape: Shape, ip: &str, body: Value| {
        let mut e = event(shape, "POST", "/login", Some(body), None);
        match shape {
            Shape::RestV1 => e["requestContext"]["identity"]["sourceIp"] = ip.into(),
            _ => e["requestContext"]["http"]["sourceIp"] = ip.into(),
        }
        e
    };
    let signup = event(
        Shape::HttpV2,
        "POST",
        "/signup",
        Some(json!({"username": "june", "password": PASSWORD})),
        None,
    );
    let res = f.call_raw(signup).await;
    assert_eq!(res["statusCode"], 201, "{res}");
    let body: Value = serde_json::from_str(res["body"].as_str().unwrap()).unwrap();
    let device = body["device_token"].as_str().unwrap().to_string();
    let cookie = res["cookies"][0].as_str().unwrap_or_default().to_string();
    assert!(
        cookie.starts_with(&format!("__Host-jotgate-device={device};"))
            && cookie.contains("; Secure"),
        "payload 2.0 answers the cookie in `cookies`: {res}"
    );
    // Guesses from three source addresses reach the ceiling.
    for i in 1..=3 {
        let e = from(
            Shape::HttpV2,
            &format!("203.0.113.{i}"),
            json!({"username": "june", "password": "wrong password"}),
        );
        assert_eq!(f.call(e).await.0, 401);
    }
    let right = json!({"username": "june", "password": PASSWORD});
    for shape in [Shape::HttpV2, Shape::RestV1] {
        assert_eq!(
            f.call(from(shape, "198.51.100.20", right.clone())).await.0,
            429
        );
    }
    // In the body, on both payloads.
    let mut with_token = right.clone();
    with_token["device_token"] = device.clone().into();
    for shape in [Shape::HttpV2, Shape::RestV1] {
        let (s, h, b) = f
            .call(from(shape, "198.51.100.20", with_token.clone()))
            .await;
        assert_eq!(s, 200, "{shape:?}: {b}");
        assert_eq!(h["cache-control"], "no-store");
    }
    // As the cookie: payload 2.0 passes cookies in `cookies`, 1.0 in the Cookie header.
    let mut e = from(Shape::HttpV2, "198.51.100.20", right.clone());
    e["cookies"] = json!([format!("__Host-jotgate-device={device}")]);
    let res = f.call_raw(e).await;
    assert_eq!(res["statusCode"], 200, "{res}");
    let mut e = from(Shape::RestV1, "198.51.100.20", right.clone());
    e["headers"]["Cookie"] = format!("__Host-jotgate-device={device}").into();
    e["multiValueHeaders"]["Cookie"] = json!([format!("__Host-jotgate-device={device}")]);
    let res = f.call_raw(e).await;
    assert_eq!(res["statusCode"], 200, "{res}");
    let set = res["multiValueHeaders"]["set-cookie"][0]
        .as_str()
        .or(res["headers"]["set-cookie"].as_str())
        .unwrap_or_default();
    assert!(
        set.starts_with("__Host-jotgate-device="),
        "payload 1.0: {res}"
    );
    // A plain cookie (not `__Host-`) is not read behind an https issuer.
    let mut e = from(Shape::HttpV2, "198.51.100.20", right.clone());
    e["cookies"] = json!([format!("jotgate-device={device}")]);
    assert_eq!(f.call(e).await.0, 429);
}

//! What a new user meets first: the headers on every answer, the request id and access
//! log, readiness, and the words of start-up errors.

use reqwest::StatusCode;
use serde_json::json;

use crate::common::{PASSWORD, TestApp, settings, temp_dir};
use crate::gateway::{Upstream, gateway, policy_for};

fn assert_private(res: &reqwest::Response, what: &str) {
    let h = res.headers();
    assert_eq!(h["cache-control"], "no-store", "{what}");
    assert_eq!(h["pragma"], "no-cache", "{what}");
    assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
    assert!(
        h.get("strict-transport-security").is_none(),
        "{what}: HSTS over plain HTTP"
    );
    let id = h["x-request-id"].to_str().unwrap();
    assert!(!id.is_empty() && id.len() <= 64, "{what}: {id}");
}

/// RFC 6749 §5.1: every answer that carries tokens (and, so that no later endpoint can
/// forget, every answer at all) is `no-store`; only the JWKS and discovery are cacheable.
#[tokio::test]
async fn every_answer_is_no_store_except_the_published_documents() {
    let app = TestApp::start().await;
    let signup = app
        .post("/signup", json!({"username": "ann", "password": PASSWORD}))
        .await;
    assert_private(&signup, "signup");
    let body: serde_json::Value = signup.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    let login = app.login("ann", PASSWORD).await;
    assert_private(&login, "login");
    let res = app
        .post("/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_private(&res, "refresh");
    let res = app.private(&token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_private(&res, "private");
    let res = app.post("/verify", json!({"token": token})).await;
    assert_private(&res, "verify");
    for (what, res) in [
        ("wrong password", app.login("ann", "wrong password!!").await),
        (
            "404",
            app.client.get(app.url("/nope")).send().await.unwrap(),
        ),
        ("bad token", app.private("x.y.z").await),
        (
            "bad body",
            app.client
                .post(app.url("/login"))
                .body("{")
                .send()
                .await
                .unwrap(),
        ),
        (
            "healthz",
            app.client.get(app.url("/healthz")).send().await.unwrap(),
        ),
        (
            "readyz",
            app.client.get(app.url("/readyz")).send().await.unwrap(),
        ),
    ] {
        assert!(
            res.status() != StatusCode::OK || what == "healthz" || what == "readyz",
            "{what}"
        );
        assert_private(&res, what);
    }
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
    ] {
        let res = app.client.get(app.url(path)).send().await.unwrap();
        let h = res.headers();
        assert_eq!(h["cache-control"], "public, max-age=300", "{path}");
        assert!(h.get("pragma").is_none(), "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_only_when_safe() {
    let app = TestApp::start().await;
    let get = |id: &'static str| {
        app.client
            .get(app.url("/healthz"))
            .header("x-request-id", id)
            .send()
    };
    let res = get("trace-123_a.b").await.unwrap();
    assert_eq!(res.headers()["x-request-id"], "trace-123_a.b");
    // Two ids (which would the log believe?): neither, a fresh one.
    let res = app
        .client
        .get(app.url("/healthz"))
        .header("x-request-id", "first-1")
        .header("x-request-id", "second-2")
        .send()
        .await
        .unwrap();
    let id = res.headers()["x-request-id"].to_str().unwrap();
    assert!(id != "first-1" && id != "second-2", "{id}");
    for bad in ["has space", "x\tINFO forged", "ünï", &"a".repeat(65)] {
        let res = app
            .client
            .get(app.url("/healthz"))
            .header("x-request-id", bad)
            .send()
            .await
            .unwrap();
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_ne!(id, bad);
        assert!(
            id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)),
            "a fresh id: {id}"
        );
    }
}

/// A line a handler logs names its request (method, path, request id) in text and in JSON,
/// also from the task a writing route runs in, and the access line names it too.
#[tokio::test]
async fn log_lines_name_their_request() {
    for format in ["text", "json"] {
        let dir = temp_dir();
        let mut cmd = crate::cli::bin();
        cmd.env("JOTGATE_LOG_FORMAT", format);
        let mut s = crate::cli::Served::start_with(cmd, &dir, &[]);
        // JSON: the marker's line goes on with `","target":…`.
        if let Some((base, _)) = s.base.split_once('"') {
            s.base = base.to_string();
        }
        let res = crate::common::client()
            .post(s.url("/signup?q=1"))
            .header("x-request-id", "req-77")
            .json(&json!({"username": "logan", "password": PASSWORD}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::CREATED, "{format}");
        // `info` lines wait up to 2 ms to be written in a batch, and the server is killed.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let log = s.stop_and_log();
        let line = |what: &str| {
            log.lines()
                .find(|l| l.contains(what))
                .unwrap_or_else(|| panic!("no {what:?} line in the {format} log: {log}"))
                .to_string()
        };
        for what in ["account created", "answered"] {
            let line = line(what);
            if format == "text" {
                assert!(
                    line.contains("request{method=POST path=/signup request_id=req-77}: "),
                    "{line}"
                );
            } else {
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                assert_eq!(
                    v["span"],
                    json!({"method": "POST", "path": "/signup", "request_id": "req-77", "name": "request"}),
                    "{line}"
                );
            }
        }
    }
}

/// The gateway's own answers carry the headers; an upstream's answer keeps its own.
#[tokio::test]
async fn the_gateway_marks_its_own_answers_and_passes_the_upstreams_through() {
    let fake = crate::edge::FakeIssuer::start(crate::edge::Mode::Ok).await;
    let up = Upstream::start().await;
    let gw = gateway(&up, &policy_for(&fake.base, "")).await;
    let client = crate::common::client();
    // Refused by the gateway: 401 without a token, 403 on a closed route.
    for (path, status) in [
        ("/orders/1", StatusCode::UNAUTHORIZED),
        ("/closed", StatusCode::FORBIDDEN),
    ] {
        let res = client
            .get(format!("{gw}{path}"))
            .bearer_auth(fake.token())
            .send()
            .await
            .unwrap();
        let res = if path == "/orders/1" {
            client.get(format!("{gw}{path}")).send().await.unwrap()
        } else {
            res
        };
        assert_eq!(res.status(), status, "{path}");
        assert_private(&res, path);
    }
    // Passed through: the upstream's headers, untouched, and no cache policy added.
    let res = client
        .get(format!("{gw}/status/200"))
        .bearer_auth(fake.token())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["x-upstream"], "yes");
    assert!(res.headers().get("cache-control").is_none());
    assert!(res.headers().get("pragma").is_none());
    // The request id reaches the upstream.
    let echo: serde_json::Value = client
        .get(format!("{gw}/health"))
        .header("x-request-id", "from-client-1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["headers"]["x-request-id"], "from-client-1");
    // Liveness and readiness of the gateway itself, under a path no upstream route uses.
    let res = client
        .get(format!("{gw}/_jotgate/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .get(format!("{gw}/_jotgate/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// The gateway is not ready until it holds its issuers' keys.
#[tokio::test]
async fn the_gateway_is_not_ready_without_keys() {
    let up = Upstream::start().await;
    // An issuer nobody answers for: no keys, ever.
    let gw = gateway(&up, &policy_for("http://127.0.0.1:9", "")).await;
    let res = crate::common::client()
        .get(format!("{gw}/_jotgate/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: serde_json::Value = res.json().await.unwrap();
    assert!(
        body["reason"].as_str().unwrap().contains("no keys"),
        "{body}"
    );
}

/// `/healthz` is liveness; `/readyz` says whether the store answers, and recovers by
/// itself.
#[tokio::test]
async fn readiness_follows_the_store() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let (relay, via) = crate::faults::Relay::in_front_of(&url).await;
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(via.into());
    let app = TestApp::with(s, dir).await;
    let ready = async || {
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(ready().await, StatusCode::OK);
    relay.cut();
    crate::edge::eventually("readyz says 503", async || {
        ready().await == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.headers()["retry-after"], "1");
    let healthz = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(
        healthz.status(),
        StatusCode::OK,
        "liveness is not readiness"
    );
    relay.restore();
    crate::edge::eventually("readyz recovers", async || ready().await == StatusCode::OK).await;
}

/// Run `jotgate ARGS` with `env` (and the test's private database) until it exits.
fn fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = temp_dir();
    let out = crate::cli::bin()
        .envs(crate::cli::base_env(&dir))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each start-up failure: the first line says what is wrong, the next what to do, in
/// under 400 bytes at the default log level, never a password; nothing claims the store
/// was opened.
#[tokio::test]
async fn start_up_errors_name_their_cause() {
    let dir = temp_dir();
    let p = |f: &str| dir.join(f).display().to_string();
    let (cert, _) = crate::cli::self_signed(&dir);
    std::fs::copy(cert, dir.join("c1.pem")).unwrap();
    crate::cli::openssl(&[
        "genpkey",
        "-algorithm",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-out",
        &p("k2.pem"),
    ]);
    std::fs::write(dir.join("junk.pem"), "junk\n").unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "[[issuer]]\nissuer = \"http://x.test\"\naudiences = [\"a\"]\nrols_claim = \"r\"\n",
    )
    .unwrap();
    // (arguments, environment, what the first line says, what the next says)
    type Case = (
        Vec<String>,
        Vec<(&'static str, String)>,
        &'static str,
        &'static str,
    );
    let mut cases: Vec<Case> = vec![
        (
            vec![
                "serve".into(),
                "--tls-cert".into(),
                p("c1.pem"),
                "--tls-key".into(),
                p("k2.pem"),
            ],
            vec![],
            "do not belong together",
            "private key",
        ),
        (
            vec![
                "serve".into(),
                "--tls-cert".into(),
                p("c1.pem"),
                "--tls-key".into(),
                p("junk.pem"),
            ],
            vec![],
            "cannot read the TLS key",
            "PEM",
        ),
        (
            vec![
                "serve".into(),
                "--database".into(),
                "/proc/jotgate-nope/x.db".into(),
            ],
            vec![],
            "cannot create the directory /proc/jotgate-nope",
            "--database",
        ),
        (
            vec!["serve".into()],
            vec![(
                "JOTGATE_STORE",
                "postgres://postgres:hunter2-secret@127.0.0.1:1/db".into(),
            )],
            "PostgreSQL refused the connection (postgres://postgres@127.0.0.1:1/db",
            "running",
        ),
        (
            vec![
                "gateway".into(),
                "--policy".into(),
                p("policy.toml"),
                "--upstream".into(),
                "http://127.0.0.1:9".into(),
            ],
            vec![],
            "line 4",
            "",
        ),
    ];
    if let Some(url) = jotgate_store::contract::postgres_test_database().await {
        let base = url.rsplit_once('/').unwrap().0;
        let missing = format!("{base}/no_such_db_jotgate");
        cases.push((
            vec!["serve".into()],
            vec![("JOTGATE_STORE", missing)],
            "the PostgreSQL database does not exist",
            "CREATE DATABASE",
        ));
        // Roles that scripts/test.sh makes: one needing its password, one TLS only.
        if std::env::var("JOTGATE_TEST_POSTGRES_ROLES").is_ok() {
            let host = base.rsplit_once('@').unwrap().1;
            cases.push((
                vec!["serve".into()],
                vec![(
                    "JOTGATE_STORE",
                    format!("postgres://jotgate_needs_password:hunter2-wrong@{host}/postgres"),
                )],
                "PostgreSQL refused the password",
                "pg_hba.conf",
            ));
            cases.push((
                vec!["serve".into()],
                vec![(
                    "JOTGATE_STORE",
                    format!("postgres://jotgate_needs_tls@{host}/postgres?sslmode=disable"),
                )],
                "PostgreSQL requires TLS for this connection",
                "sslmode=verify-full",
            ));
        }
    }
    if let Ok(endpoint) = std::env::var("JOTGATE_TEST_DYNAMODB") {
        cases.push((
            vec!["serve".into()],
            vec![(
                "JOTGATE_STORE",
                format!("dynamodb://no-such-table?region=us-east-1&endpoint={endpoint}"),
            )],
            "the DynamoDB table no-such-table does not exist",
            "sam deploy",
        ));
        cases.push((
            vec!["serve".into()],
            vec![(
                "JOTGATE_STORE",
                "dynamodb://tbl?region=us-east-1&endpoint=http://127.0.0.1:1".into(),
            )],
            "cannot reach DynamoDB",
            "endpoint",
        ));
    }
    for (args, env, first, second) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let err = fails(&args, &env);
        let mut lines = err.lines();
        let line1 = lines.next().unwrap_or("");
        assert!(
            line1.starts_with("error: ") && line1.contains(first),
            "{args:?}: {err}"
        );
        assert!(err.contains(second), "{args:?}: {err}");
        assert!(err.len() < 400, "{args:?}: {} bytes: {err}", err.len());
        assert!(!err.contains("hunter2"), "{args:?}: password shown: {err}");
        assert!(!err.contains("data store opened"), "{args:?}: {err}");
    }
}

/// At `JOTGATE_LOG=trace` nothing secret reaches the log: not a password, a token, a
/// cookie, an Authorization header or a query string from requests, nor a configured
/// secret (pepper, master key, feed token, database password, AWS key).
#[tokio::test]
async fn nothing_secret_reaches_the_log_even_at_trace() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let db_password = "db-pass-7f3e1c0b9a";
    let with_password = url.replacen(
        "postgres://postgres@",
        &format!("postgres://postgres:{db_password}@"),
        1,
    );
    assert_ne!(with_password, url, "the test URL has the expected shape");
    let pepper = "pepper-5b1e0e8c7d6f4a3b2c1d0e9f8a7b6c5d";
    let master = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    let feed = "feed-token-0a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d";
    let password = "pw-correct-horse-9d8c7b";
    let dir = temp_dir();
    let mut cmd = crate::cli::bin();
    cmd.env("JOTGATE_LOG", "trace")
        .env("JOTGATE_STORE", &with_password)
        .env("JOTGATE_PEPPER", pepper)
        .env("JOTGATE_MASTER_KEY", master)
        .env("JOTGATE_FEED_TOKEN", feed);
    let mut s = crate::cli::Served::start_with(cmd, &dir, &[]);
    let client = crate::common::client();
    let body: serde_json::Value = client
        .post(s.url("/signup?secret-query=q-77e1"))
        .header("cookie", "session=cookie-9f8e7d")
        .json(&json!({"username": "tracy", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        client
            .get(s.url("/private"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    client
        .post(s.url("/refresh"))
        .json(&json!({"refresh_token": refresh}))
        .send()
        .await
        .unwrap();
    client
        .get(s.url("/api/v1/revocations"))
        .bearer_auth(feed)
        .send()
        .await
        .unwrap();
    let log = s.stop_and_log();
    assert!(log.contains("answered"), "no access log: {log}");
    assert!(log.contains("path=/signup"), "{log}");
    for (what, secret) in [
        ("password", password),
        ("token", token.as_str()),
        ("token signature", token.rsplit('.').next().unwrap()),
        ("refresh token", refresh.as_str()),
        ("query string", "q-77e1"),
        ("cookie", "cookie-9f8e7d"),
        ("pepper", pepper),
        ("master key", master),
        ("feed token", feed),
        ("database password", db_password),
    ] {
        assert!(!log.contains(secret), "the {what} is in the log");
    }
    assert!(log.lines().count() > 5);
    // The AWS SDK at trace: the secret access key never appears.
    if let Ok(endpoint) = std::env::var("JOTGATE_TEST_DYNAMODB") {
        let aws_secret = "aws-secret-4c3b2a1f0e9d8c7b6a5f";
        let table = format!("jt-log-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let out = crate::cli::bin()
            .env("JOTGATE_LOG", "trace")
            .env(
                "JOTGATE_STORE",
                format!(
                    "dynamodb://{table}?region=us-east-1&endpoint={endpoint}&create_table=true"
                ),
            )
            .env("AWS_ACCESS_KEY_ID", "AKIAJOTGATETEST")
            .env("AWS_SECRET_ACCESS_KEY", aws_secret)
            .args(["users", "list"])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(
            !err.contains(aws_secret),
            "the AWS secret key is in the log"
        );
    }
}

fn run_in(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = crate::cli::bin()
        .env("JOTGATE_DATABASE", dir.join("jotgate.db"))
        .envs(env.iter().copied())
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The files of `dir` and a digest of each; SQLite's `-shm` (the WAL index, where even
/// readers record their read marks) left out.
/// The first key line of `check --format json`'s summary.
fn first_key(v: &serde_json::Value) -> &str {
    v["summary"]["keys"][0].as_str().unwrap_or("")
}

fn files(dir: &std::path::Path) -> Vec<(String, u64)> {
    use std::hash::{Hash, Hasher};
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| !e.file_name().to_string_lossy().ends_with("-shm"))
        .map(|e| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            std::fs::read(e.path()).unwrap_or_default().hash(&mut h);
            (e.file_name().to_string_lossy().into_owned(), h.finish())
        })
        .collect();
    v.sort();
    v
}

/// `jotgate check`: what would run, every problem, exit 1 on any, nothing written.
#[tokio::test]
async fn check_reports_what_would_run_and_every_problem_and_writes_nothing() {
    let dir = temp_dir();
    // A fresh store: reported as such, and not created.
    let (code, out, err) = run_in(&dir, &["check", "serve"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fresh store"), "{out}");
    assert!(
        !dir.join("jotgate.db").exists(),
        "check created the database"
    );
    // A store with a key: its id, algorithm and state; the files untouched.
    let (code, _, err) = run_in(
        &dir,
        &["keys", "rotate", "--now", "--key-alg", "ES256"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let before = files(&dir);
    let (code, out, err) = run_in(&dir, &["check", "serve", "--format", "json"], &[]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["command"], "serve");
    let keys = v["summary"]["keys"].as_array().unwrap();
    assert!(keys[0].as_str().unwrap().contains("ES256 signing"), "{v}");
    assert!(
        v["summary"]["store"]
            .as_str()
            .unwrap()
            .starts_with("sqlite://")
    );
    assert_eq!(v["summary"]["listen"], "http://127.0.0.1:8080");
    assert_eq!(files(&dir), before, "check changed the store's files");
    // A master key set, the keys unencrypted: a problem, exit 1.
    let (code, out, _) = run_in(
        &dir,
        &["check", "serve"],
        &[(
            "JOTGATE_MASTER_KEY",
            "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=",
        )],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("jotgate keys seal"), "{out}");

    // Every problem at once: a store that refuses, an unreadable TLS key, a short pepper.
    let cfg = dir.join("bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "store = \"postgres://postgres:hunter2-secret@127.0.0.1:1/db\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\npepper = \"short\"\n",
            dir.join("nope.pem").display(),
            dir.join("nope.key").display()
        ),
    )
    .unwrap();
    let before = files(&dir);
    let (code, out, err) = run_in(
        &dir,
        &["check", "serve", "--config", cfg.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 1, "{out}{err}");
    for says in [
        "PostgreSQL refused the connection",
        "TLS certificate",
        "pepper",
    ] {
        assert!(out.contains(says), "missing {says:?} in:\n{out}");
    }
    assert!(out.contains("3 problem(s)"), "{out}");
    assert!(!out.contains("hunter2"), "{out}");
    assert_eq!(files(&dir), before);
    // The gateway's: a policy with a typo and no upstream, both reported.
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[issuer]]\nissuer = \"http://x.test\"\naudiences = [\"a\"]\nrols_claim = \"r\"\n",
    )
    .unwrap();
    let (code, out, _) = run_in(
        &dir,
        &[
            "check",
            "gateway",
            "--policy",
            policy.to_str().unwrap(),
            "--format",
            "json",
        ],
        &[],
    );
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 2, "{v}");
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("rols_claim")),
        "{v}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.as_str().unwrap().contains("upstream")),
        "{v}"
    );
}

/// `check gateway` and `check authorizer` fetch each issuer's keys and list the routes.
#[tokio::test]
async fn check_fetches_every_issuers_keys() {
    let fake = crate::edge::FakeIssuer::start(crate::edge::Mode::Ok).await;
    let dir = temp_dir();
    let policy = dir.join("policy.toml");
    let text = format!(
        "{}\n[[issuer]]\nissuer = \"http://127.0.0.1:9\"\naudiences = [\"a\"]\n",
        policy_for(&fake.base, "")
    );
    std::fs::write(&policy, text).unwrap();
    let p = policy.to_str().unwrap();
    for target in ["gateway", "authorizer"] {
        let mut args = vec!["check", target, "--policy", p];
        if target == "gateway" {
            args.extend([
                "--upstream",
                "http://127.0.0.1:9",
                "--listen",
                "127.0.0.1:0",
            ]);
        }
        let (code, out, err) = tokio::task::spawn_blocking({
            let dir = dir.clone();
            let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
            move || {
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                run_in(&dir, &a, &[])
            }
        })
        .await
        .unwrap();
        assert_eq!(code, 1, "{target}: {out}{err}");
        assert!(
            out.contains(&format!("{}: keys ", fake.base)),
            "{target}: {out}"
        );
        assert!(
            out.contains("issuer http://127.0.0.1:9: cannot get its keys"),
            "{target}: {out}"
        );
        assert!(
            out.contains("/admin/* → a valid token; any role of: admin"),
            "{target}: {out}"
        );
        assert!(out.contains("1 problem(s)"), "{target}: {out}");
    }
}

/// `--help` names secrets' variables, never their values, wherever the value came from.
#[test]
fn help_never_shows_a_secret() {
    let dir = temp_dir();
    let secrets = [
        ("pepper", "pepper-in-file-1234567890abcdef0123456789"),
        ("master_key", "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="),
        ("feed_token", "feed-in-file-1234567890abcdef0123456789"),
        ("store", "postgres://u:db-pw-in-file@h/db"),
    ];
    let cfg = dir.join("c.toml");
    std::fs::write(
        &cfg,
        secrets
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}\n"))
            .collect::<String>(),
    )
    .unwrap();
    for cmd in [
        vec!["serve"],
        vec!["lambda"],
        vec!["authorizer"],
        vec!["check", "serve"],
        vec!["users", "add"],
        vec!["keys", "list"],
        vec!["token", "verify"],
    ] {
        let out = crate::cli::bin()
            .env(
                "JOTGATE_HS256_SECRET",
                "hs-secret-in-env-0123456789abcdef0123",
            )
            .env("JOTGATE_OLD_PEPPERS", "old-pepper-in-env")
            .arg("--config")
            .arg(&cfg)
            .args(&cmd)
            .arg("--help")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{cmd:?}");
        for v in secrets.iter().map(|(_, v)| *v).chain([
            "hs-secret-in-env",
            "old-pepper-in-env",
            "db-pw-in-file",
        ]) {
            assert!(!text.contains(v), "`{} --help` shows {v}", cmd.join(" "));
        }
    }
    // A secret's flag takes a file: the value never travels in argv.
    let out = crate::cli::bin()
        .args(["users", "list", "--pepper-file", "x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // A secret that begins with `-` is a value, never read as a flag (nor echoed).
    for secret in [
        "-h-pepper-0123456789abcdef0123456789",
        "--pepper-0123456789abcdef0123456789",
    ] {
        let f = dir.join("pepper");
        std::fs::write(&f, format!("{secret}\n")).unwrap();
        for form in [
            vec!["--pepper-file".to_string(), f.display().to_string()],
            vec![format!("--pepper-file={}", f.display())],
        ] {
            let out = crate::cli::bin()
                .env("JOTGATE_DATABASE", dir.join("x.db"))
                .args(["check", "serve", "--listen", "127.0.0.1:0"])
                .args(&form)
                .output()
                .unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "{form:?}: {all}");
            assert!(all.contains("ok: no problems found"), "{form:?}: {all}");
            assert!(!all.contains("pepper-0123"), "{form:?}: {all}");
        }
    }
    // A config file that does not parse is named with its line, never quoted: the line
    // may hold a secret.
    std::fs::write(&cfg, "pepper = \"abc\\qsecret-in-a-broken-line\"\n").unwrap();
    let out = crate::cli::bin()
        .arg("--config")
        .arg(&cfg)
        .args(["users", "list"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("line 1"), "{err}");
    assert!(!err.contains("secret-in-a-broken-line"), "{err}");
}

/// One config file for the server and the gateway: each reads its own `listen`, and the
/// gateway takes `upstream` and `policy` from the file.
#[test]
fn one_config_file_serves_the_server_and_the_gateway() {
    let dir = temp_dir();
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, policy_for("http://127.0.0.1:9", "")).unwrap();
    let cfg = dir.join("jotgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:18443\"\ngateway_listen = \"127.0.0.1:18444\"\nupstream = \"http://127.0.0.1:9\"\npolicy = {:?}\naccess_ttl = 60\n",
            policy.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    let (_, out, err) = run_in(
        &dir,
        &["check", "gateway", "--config", c, "--format", "json"],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}{err}"));
    assert_eq!(v["summary"]["listen"], "http://127.0.0.1:18444", "{v}");
    assert_eq!(v["summary"]["upstream"], "http://127.0.0.1:9", "{v}");
    assert_eq!(v["summary"]["policy"], policy.display().to_string(), "{v}");
    let (_, out, _) = run_in(
        &dir,
        &["check", "serve", "--config", c, "--format", "json"],
        &[],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["summary"]["listen"], "http://127.0.0.1:18443", "{v}");
    assert_eq!(v["summary"]["access_ttl"], "60 s", "{v}");
}

/// `check serve` on PostgreSQL: a fresh database is reported as such and stays empty (no
/// schema created); once set up, its keys are listed.
#[tokio::test]
async fn check_reads_postgresql_without_writing() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let tables = async || {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query_one(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    let dir = temp_dir();
    let env = [("JOTGATE_STORE", url.as_str())];
    let (code, out, err) = run_in(&dir, &["check", "serve"], &env);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("fresh store"), "{out}");
    assert!(
        out.contains("store            postgres://postgres@"),
        "{out}"
    );
    assert_eq!(tables().await, 0, "check created tables");
    let (code, _, err) = run_in(&dir, &["keys", "rotate", "--now"], &env);
    assert_eq!(code, 0, "{err}");
    let n = tables().await;
    assert!(n > 0);
    // A command on an existing schema prints no "relation … already exists" notices.
    let (code, _, err) = run_in(&dir, &["users", "list"], &env);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("already exists"), "{err}");
    let (code, out, err) = run_in(&dir, &["check", "serve", "--format", "json"], &env);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(first_key(&v).contains("RS256 signing"), "{v}");
    assert_eq!(tables().await, n);
    // A database holding part of the schema is a problem, named.
    let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client.batch_execute("DROP TABLE meta").await.unwrap();
    let (code, out, _) = run_in(&dir, &["check", "serve"], &env);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("missing tables: meta"), "{out}");
}

/// `check serve` beside the running server on the same SQLite file: it reads the live
/// database (through the server's WAL) and says the port is taken, as a note.
#[test]
fn check_reads_the_database_of_a_running_server() {
    let dir = temp_dir();
    let s = crate::cli::Served::start(&dir, &[]);
    let port = s.base.rsplit(':').next().unwrap().to_string();
    let listen = format!("127.0.0.1:{port}");
    let (code, out, err) = run_in(
        &dir,
        &["check", "serve", "--listen", &listen, "--format", "json"],
        &[("JOTGATE_ARGON2_MEMORY_KIB", "1024")],
    );
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(first_key(&v).contains("signing"), "{v}");
    assert!(v["notes"].to_string().contains("already listens"), "{v}");
    drop(s);
}

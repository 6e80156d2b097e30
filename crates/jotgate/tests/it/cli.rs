//! The real `jotgate` binary: serve, restart, TLS, the admin commands, help, settings layers.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, temp_dir};

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_jotgate"));
    for (k, _) in std::env::vars() {
        if k.starts_with("JOTGATE_") {
            c.env_remove(k);
        }
    }
    c.env("JOTGATE_LOG", "info");
    c
}

/// The same as environment variables, which every command accepts (and ignores when it
/// does not read the setting).
pub fn base_env(dir: &Path) -> Vec<(String, String)> {
    vec![
        (
            "JOTGATE_DATABASE".into(),
            dir.join("jotgate.db").display().to_string(),
        ),
        ("JOTGATE_ARGON2_MEMORY_KIB".into(), "1024".into()),
        ("JOTGATE_ARGON2_ITERATIONS".into(), "1".into()),
    ]
}

/// Common flags: a private database and cheap hashing.
pub fn base_args(dir: &Path) -> Vec<String> {
    vec![
        "--database".into(),
        dir.join("jotgate.db").display().to_string(),
        "--argon2-memory-kib".into(),
        "1024".into(),
        "--argon2-iterations".into(),
        "1".into(),
    ]
}

/// A running `jotgate serve` child process.
pub struct Served {
    child: Child,
    pub base: String,
    /// Kept open so the server never writes its log into a closed pipe.
    _log: mpsc::Receiver<String>,
    pub startup_log: Vec<String>,
}

impl Served {
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_with(bin(), dir, extra)
    }

    pub fn start_with(mut cmd: Command, dir: &Path, extra: &[&str]) -> Self {
        cmd.arg("serve")
            .args(base_args(dir))
            .args(["--listen", "127.0.0.1:0"])
            .args(extra);
        Self::launch(cmd, "jotgate listening on ")
    }

    /// Spawn `cmd` and wait for the log line containing `marker`, followed by the base URL.
    // The child is killed and waited for in `Drop`.
    #[allow(clippy::zombie_processes)]
    pub fn launch(mut cmd: Command, marker: &str) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn jotgate");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut startup_log = Vec::new();
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .unwrap_or_else(|_| {
                    let _ = child.kill();
                    panic!("server did not start; log so far: {startup_log:#?}")
                });
            startup_log.push(line.clone());
            if let Some(i) = line.find(marker) {
                let rest = &line[i + marker.len()..];
                let base = rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
                return Self {
                    child,
                    base,
                    _log: rx,
                    startup_log,
                };
            }
        }
    }

    pub fn url(&self, p: &str) -> String {
        format!("{}{p}", self.base)
    }

    /// Stop the server; everything it logged, start-up included.
    /// Stop the server as an operator does (SIGTERM: drain, write the last log lines) and
    /// return its log. (`kill -9` loses the log's last batch, about 10 ms of lines.)
    pub fn stop_and_log(&mut self) -> String {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let mut all = self.startup_log.clone();
        while let Ok(line) = self._log.recv_timeout(Duration::from_secs(5)) {
            all.push(line);
        }
        all.join("\n")
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run a CLI command; returns (success, stdout, stderr).
pub fn run(dir: &Path, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    run_full(dir, args, stdin, &[])
}

/// Run a CLI command with extra environment variables.
pub fn run_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    run_full(dir, args, None, env)
}

pub fn run_full(
    dir: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> (bool, String, String) {
    let mut child = bin()
        .envs(base_env(dir))
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jotgate");
    let mut input = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        input.write_all(s.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn signup(client: &reqwest::Client, base: &str, name: &str) -> Value {
    let res = client
        .post(format!("{base}/signup"))
        .json(&json!({"username": name, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    res.json().await.unwrap()
}

async fn jwks(client: &reqwest::Client, base: &str) -> Value {
    client
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn first_start_generates_a_key_and_a_restart_reuses_it() {
    let dir = temp_dir();
    let client = crate::common::client();
    let (kid, token) = {
        let s = Served::start(&dir, &["--issuer", "http://jotgate.test"]);
        let log = s.startup_log.join("\n");
        assert!(log.contains("generated a new signing key"), "{log}");
        assert!(
            log.contains(&dir.join("jotgate.db").display().to_string()),
            "database path not logged: {log}"
        );
        let kid = jwks(&client, &s.base).await["keys"][0]["kid"]
            .as_str()
            .unwrap()
            .to_string();
        let token = signup(&client, &s.base, "liz").await["token"]
            .as_str()
            .unwrap()
            .to_string();
        (kid, token)
    };
    assert!(dir.join("jotgate.db").exists());
    // Same issuer: the default one follows the port, which is random here.
    let s = Served::start(&dir, &["--issuer", "http://jotgate.test"]);
    assert!(
        !s.startup_log
            .join("\n")
            .contains("generated a new signing key")
    );
    let again = jwks(&client, &s.base).await;
    assert_eq!(again["keys"].as_array().unwrap().len(), 1);
    assert_eq!(again["keys"][0]["kid"], kid.as_str());
    // A token issued before the restart still works, and the account is still there.
    let res = client
        .get(s.url("/private"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let res = client
        .post(s.url("/login"))
        .json(&json!({"username": "liz", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn admin_commands_share_the_store_with_a_running_server() {
    let dir = temp_dir();
    let s = Served::start(&dir, &["--alg", "EdDSA"]);
    let (ok, out, err) = run(
        &dir,
        &["users", "add", "Root", "--role", "admin"],
        Some("a long admin password\n"),
    );
    assert!(ok, "{err}");
    let user: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(user["username"], "Root");
    assert_eq!(user["roles"], json!(["admin"]));
    assert!(!out.contains("argon2"), "hash printed");

    let (ok, _, err) = run(&dir, &["users", "add", "weak"], Some("password\n"));
    assert!(!ok);
    assert!(err.contains("weak password"), "{err}");
    let (ok, _, err) = run(
        &dir,
        &["users", "add", "root"],
        Some("another long password\n"),
    );
    assert!(!ok);
    assert!(err.contains("already taken"), "{err}");
    let (ok, _, err) = run(&dir, &["users", "add", "nopw"], None);
    assert!(!ok);
    assert!(err.contains("stdin"), "{err}");

    let (ok, out, _) = run(&dir, &["users", "list"], None);
    assert!(ok);
    assert!(out.contains("Root") && out.contains("admin"), "{out}");
    let (ok, out, _) = run(&dir, &["users", "list", "--json"], None);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // The server sees the account at once; the token carries its role and scope.
    let client = crate::common::client();
    let res = client
        .post(s.url("/login"))
        .json(&json!({"username": "root", "password": "a long admin password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let token = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();

    // Against this store (the deployment's issuer from the environment, as a server has it).
    let env = [("JOTGATE_ISSUER", s.base.as_str())];
    let (ok, out, err) = run_env(&dir, &["token", "verify", &token], &env);
    assert!(ok, "{err}");
    let claims: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(claims["roles"], json!(["admin"]));
    assert_eq!(claims["scope"], "admin profile");
    // Against the issuer's published keys (OIDC discovery → JWKS), as any verifier would.
    let (ok, out, err) = run(
        &dir,
        &["token", "verify", &token, "--issuer", &s.base],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["sub"],
        claims["sub"]
    );
    assert!(err.contains("audience not checked"), "{err}");
    let (ok, _, err) = run(
        &dir,
        &[
            "token",
            "verify",
            &token,
            "--issuer",
            &s.base,
            "--audience",
            "other",
        ],
        None,
    );
    assert!(!ok && err.contains("audience"), "{err}");
    // Issuer mismatch, tampering and revocation are all reported, with exit status 1.
    let other = [("JOTGATE_ISSUER", "http://elsewhere")];
    let (ok, _, err) = run_env(&dir, &["token", "verify", &token], &other);
    assert!(!ok && err.contains("issuer"), "{err}");
    let (ok, _, err) = run(
        &dir,
        &[
            "token",
            "verify",
            &token,
            "--issuer",
            "http://elsewhere.example",
        ],
        None,
    );
    assert!(!ok && err.contains("https://"), "{err}");
    let (ok, _, err) = run_env(&dir, &["token", "verify", &format!("{token}x")], &env);
    assert!(!ok && err.contains("invalid token"), "{err}");
    let res = client
        .post(s.url("/logout"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (ok, _, err) = run_env(&dir, &["token", "verify", &token], &env);
    assert!(!ok && err.contains("revoked"), "{err}");

    let (ok, out, _) = run(&dir, &["keys", "list"], None);
    assert!(ok);
    assert!(out.contains("EdDSA") && out.contains("signing"), "{out}");
}

#[tokio::test]
async fn key_rotation_publishes_first_then_signs_and_old_tokens_keep_working() {
    let dir = temp_dir();
    let s = Served::start(&dir, &["--sync-interval", "1"]);
    let client = crate::common::client();
    let old = signup(&client, &s.base, "max").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let old_kid = jwks(&client, &s.base).await["keys"][0]["kid"]
        .as_str()
        .unwrap()
        .to_string();

    // Default rotation: published now, signing in 300 s.
    let (ok, out, err) = run(&dir, &["keys", "rotate", "--key-alg", "ES256"], None);
    assert!(ok, "{err}");
    assert!(out.contains("published now"), "{out}");
    let next_kid = out.split_whitespace().next().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let keys = jwks(&client, &s.base).await;
    let kids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&next_kid.as_str()) && kids.contains(&old_kid.as_str()),
        "{kids:?}"
    );
    let (_, out, _) = run(&dir, &["keys", "list"], None);
    assert!(out.contains("next"), "{out}");
    let t = signup(&client, &s.base, "ned").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        header_kid(&t) == old_kid,
        "signed with the next key before its time"
    );

    // Immediate rotation: the running server switches within a sync interval.
    let (ok, out, err) = run(
        &dir,
        &["keys", "rotate", "--key-alg", "EdDSA", "--now"],
        None,
    );
    assert!(ok, "{err}");
    let now_kid = out.split_whitespace().next().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let t = signup(&client, &s.base, "oli").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(header_kid(&t), now_kid);
    // Tokens signed by the previous key still verify.
    assert_eq!(
        client
            .get(s.url("/private"))
            .bearer_auth(&old)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(s.url("/private"))
            .bearer_auth(&t)
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );

    let (ok, _, err) = run(&dir, &["keys", "retire", "nope"], None);
    assert!(!ok && err.contains("no key"), "{err}");
    // Kids are base64url: one may begin with '-'.
    let (ok, _, err) = run(&dir, &["keys", "revoke", "-W3x"], None);
    assert!(!ok && err.contains("no key"), "{err}");
}

fn header_kid(token: &str) -> String {
    crate::common::token_part(token, 0)["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A self-signed P-256 certificate for localhost and 127.0.0.1, and its key.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-addext",
        "subjectAltName=IP:127.0.0.1,DNS:localhost",
        "-addext",
        "basicConstraints=critical,CA:FALSE",
        "-days",
        "1",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    (cert, key)
}

pub fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn keys_import_accepts_pkcs1_sec1_and_pkcs8_pem() {
    let dir = temp_dir();
    let rsa = dir.join("rsa.pem");
    let ec = dir.join("ec.pem");
    let ed = dir.join("ed.pem");
    openssl(&[
        "genrsa",
        "-traditional",
        "-out",
        rsa.to_str().unwrap(),
        "2048",
    ]);
    openssl(&[
        "ecparam",
        "-name",
        "prime256v1",
        "-genkey",
        "-noout",
        "-out",
        ec.to_str().unwrap(),
    ]);
    openssl(&[
        "genpkey",
        "-algorithm",
        "ed25519",
        "-out",
        ed.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read_to_string(&rsa)
            .unwrap()
            .contains("BEGIN RSA PRIVATE KEY")
    );
    assert!(
        std::fs::read_to_string(&ec)
            .unwrap()
            .contains("BEGIN EC PRIVATE KEY")
    );
    for (file, alg, kid) in [
        (&rsa, "RS256", "legacy-rsa"),
        (&ec, "ES256", "legacy-ec"),
        (&ed, "EdDSA", "legacy-ed"),
    ] {
        let (ok, out, err) = run(
            &dir,
            &["keys", "import", file.to_str().unwrap(), "--kid", kid],
            None,
        );
        assert!(ok, "{err}");
        assert!(
            out.starts_with(&format!("{kid} {alg} signing now")),
            "{out}"
        );
    }
    let (ok, _, err) = run(
        &dir,
        &[
            "keys",
            "import",
            rsa.to_str().unwrap(),
            "--kid",
            "legacy-rsa",
        ],
        None,
    );
    assert!(!ok && err.contains("already exists"), "{err}");
    let junk = dir.join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let (ok, _, err) = run(&dir, &["keys", "import", junk.to_str().unwrap()], None);
    assert!(!ok && err.contains("cannot import"), "{err}");
    // The last import signs; the server publishes all three.
    let s = Served::start(&dir, &[]);
    let client = crate::common::client();
    let keys = jwks(&client, &s.base).await;
    assert_eq!(keys["keys"].as_array().unwrap().len(), 3, "{keys}");
    let t = signup(&client, &s.base, "pam").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(header_kid(&t), "legacy-ed");
}

#[tokio::test]
async fn tls_serves_https_and_plain_http_fails() {
    let dir = temp_dir();
    let (cert, key) = self_signed(&dir);
    let s = Served::start(
        &dir,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(s.base.starts_with("https://"), "{}", s.base);
    jotgate::init_crypto();
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let res = client.get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Over HTTPS every answer carries HSTS (RFC 6797), a year by default.
    for path in ["/healthz", "/nope", "/.well-known/jwks.json"] {
        let res = client.get(s.url(path)).send().await.unwrap();
        assert_eq!(
            res.headers()["strict-transport-security"],
            "max-age=31536000",
            "{path}"
        );
        assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    }
    let body = signup(&client, &s.base, "quinn").await;
    // The issuer follows the scheme.
    let d: Value = client
        .get(s.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(d["issuer"].as_str().unwrap().starts_with("https://"));
    assert!(body["token"].is_string());
    let plain = s.base.replace("https://", "http://");
    assert!(
        crate::common::client()
            .get(format!("{plain}/healthz"))
            .send()
            .await
            .is_err()
    );
    drop(s);
    // A shorter max-age, or none at all.
    for (age, want) in [("600", Some("max-age=600")), ("0", None)] {
        let s = Served::start(
            &dir,
            &[
                "--tls-cert",
                cert.to_str().unwrap(),
                "--tls-key",
                key.to_str().unwrap(),
                "--hsts-max-age",
                age,
            ],
        );
        let res = client.get(s.url("/healthz")).send().await.unwrap();
        assert_eq!(
            res.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            want
        );
    }
    // Only one of the pair: a clear start-up error.
    let (ok, _, err) = run(&dir, &["serve", "--tls-cert", cert.to_str().unwrap()], None);
    assert!(!ok && err.contains("--tls-key"), "{err}");
}

#[test]
fn non_loopback_without_tls_warns() {
    let dir = temp_dir();
    let mut cmd = bin();
    let mut child = cmd
        .arg("serve")
        .args(["--listen", "0.0.0.0:0"])
        .args(base_args(&dir))
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        seen.push(line.clone());
        if line.contains("jotgate listening on") {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let log = seen.join("\n");
    assert!(log.contains("without TLS"), "{log}");
}

#[test]
fn help_is_complete_for_every_command() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--help"],
            &[
                "serve",
                "check",
                "users",
                "keys",
                "token",
                "gateway",
                "jotgate.db",
                "127.0.0.1:8080",
                "--config",
            ],
        ),
        (
            &["serve", "--help"],
            &[
                "JOTGATE_DATABASE",
                "jotgate.db",
                "127.0.0.1:8080",
                "create_table=true",
                "--pepper-file",
                "--listen",
                "--tls-cert",
                "--tls-key",
                "--alg",
                "--access-ttl",
                "JOTGATE_LISTEN",
            ],
        ),
        (&["users", "--help"], &["add", "list"]),
        (&["users", "add", "--help"], &["--role", "stdin"]),
        (&["users", "list", "--help"], &["--json"]),
        (&["keys", "--help"], &["list", "rotate", "import", "retire"]),
        (
            &["keys", "rotate", "--help"],
            &["--key-alg", "--activate-in", "--now"],
        ),
        (&["keys", "import", "--help"], &["PEM", "JWK", "--kid"]),
        (&["keys", "retire", "--help"], &["<KID>"]),
        (&["token", "verify", "--help"], &["<JWT>"]),
    ];
    for (args, needles) in cases {
        let out = bin().args(*args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        for n in *needles {
            assert!(
                text.contains(n),
                "`jotgate {}` lacks {n:?}:\n{text}",
                args.join(" ")
            );
        }
    }
    let out = bin().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("jotgate "));
}

#[tokio::test]
async fn settings_layer_file_then_env_then_flags() {
    let dir = temp_dir();
    let cfg: PathBuf = dir.join("jotgate.toml");
    std::fs::write(
        &cfg,
        "issuer = \"http://from-file\"\naudience = \"file-aud\"\naccess_ttl = 60\n",
    )
    .unwrap();
    let client = crate::common::client();
    let discover = |s: &Served| {
        let url = s.url("/.well-known/openid-configuration");
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let c = cfg.to_str().unwrap();
    let s = Served::start(&dir, &["--config", c]);
    assert_eq!(discover(&s).await["issuer"], "http://from-file");
    let b = signup(&client, &s.base, "rae").await;
    assert_eq!(b["expires_in"], 60);
    drop(s);
    let mut with_env = bin();
    with_env.env("JOTGATE_ISSUER", "http://from-env");
    let s = Served::start_with(with_env, &dir, &["--config", c]);
    assert_eq!(discover(&s).await["issuer"], "http://from-env");
    drop(s);
    let mut with_env = bin();
    with_env.env("JOTGATE_ISSUER", "http://from-env");
    let s = Served::start_with(
        with_env,
        &dir,
        &["--config", c, "--issuer", "http://from-flag"],
    );
    assert_eq!(discover(&s).await["issuer"], "http://from-flag");
    drop(s);
    // Broken settings fail start-up with one line naming the setting.
    std::fs::write(&cfg, "isuer = \"typo\"\n").unwrap();
    let (ok, _, err) = run(&dir, &["serve", "--config", c], None);
    assert!(
        !ok && err.contains("isuer") && err.contains("jotgate.toml"),
        "{err}"
    );
    let (ok, _, err) = run(&dir, &["serve", "--alg", "HS512"], None);
    assert!(!ok && err.contains("alg"), "{err}");
    let (ok, _, err) = run(&dir, &["serve", "--alg", "HS256"], None);
    assert!(!ok && err.contains("HS256 needs a shared secret"), "{err}");
    let (ok, _, err) = run(&dir, &["serve", "--access-ttl", "0"], None);
    assert!(!ok && err.contains("--access-ttl"), "{err}");
    let mut short = bin();
    short
        .env("JOTGATE_HS256_SECRET", "too-short")
        .env("JOTGATE_ALG", "HS256");
    let out = short.arg("serve").args(base_args(&dir)).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("at least 32 bytes"),
        "{err}"
    );
    assert!(!err.contains("too-short"), "secret echoed: {err}");
}

#[tokio::test]
async fn signing_keys_encrypted_at_rest_need_the_master_key() {
    let dir = temp_dir();
    let master = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
    let mut cmd = bin();
    cmd.env("JOTGATE_MASTER_KEY", master);
    let s = Served::start_with(cmd, &dir, &[]);
    let res = crate::common::client()
        .post(s.url("/signup"))
        .json(&json!({"username": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(
        !s.startup_log.iter().any(|l| l.contains(master)),
        "the master key is never logged"
    );
    drop(s);
    // Without the key (or with a malformed one), start-up and key commands stop with one line.
    let (ok, _, err) = run(&dir, &["keys", "list"], None);
    assert!(
        !ok && err.contains("set the master key (JOTGATE_MASTER_KEY)"),
        "{err}"
    );
    let (ok, _, err) = run_env(&dir, &["keys", "list"], &[("JOTGATE_MASTER_KEY", "short")]);
    assert!(
        !ok && err.contains("invalid setting master_key (JOTGATE_MASTER_KEY)"),
        "{err}"
    );
    let other = master.replace('q', "r");
    let (ok, _, err) = run_env(&dir, &["keys", "list"], &[("JOTGATE_MASTER_KEY", &other)]);
    assert!(!ok && err.contains("not configured"), "{err}");
    assert!(!err.contains(&other), "{err}");
    let (ok, out, err) = run_env(&dir, &["keys", "list"], &[("JOTGATE_MASTER_KEY", master)]);
    assert!(ok && out.contains("signing"), "{out}{err}");
    // Replacing a leaked master key: the old one kept as an old key opens and re-seals;
    // afterwards the new one alone suffices.
    let (ok, _, err) = run_env(
        &dir,
        &["keys", "list"],
        &[
            ("JOTGATE_MASTER_KEY", &other),
            ("JOTGATE_OLD_MASTER_KEYS", master),
        ],
    );
    assert!(ok, "{err}");
    let (ok, out, err) = run_env(&dir, &["keys", "list"], &[("JOTGATE_MASTER_KEY", &other)]);
    assert!(ok && out.contains("signing"), "{out}{err}");
    let (ok, _, err) = run_env(&dir, &["keys", "list"], &[("JOTGATE_MASTER_KEY", master)]);
    assert!(
        !ok && err.contains("not configured"),
        "the old key no longer opens: {err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// With a master key set, a key stored unencrypted is refused until `keys seal` encrypts
/// it in place (issue 16, item 17).
#[test]
fn unsealed_keys_are_refused_under_a_master_key_until_sealed() {
    let dir = crate::common::temp_dir();
    let (ok, _, err) = run(&dir, &["keys", "rotate", "--now"], None);
    assert!(ok, "{err}");
    let master = [(
        "JOTGATE_MASTER_KEY",
        "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
    )];
    let (ok, _, err) = run_env(&dir, &["keys", "list"], &master);
    assert!(!ok && err.contains("keys seal"), "{err}");
    let (ok, out, err) = run_env(&dir, &["keys", "seal"], &master);
    assert!(ok && out.contains("sealed"), "{err}");
    let (ok, out, err) = run_env(&dir, &["keys", "list"], &master);
    assert!(ok && out.contains("signing"), "{err}");
    // Sealed now: without the master key it cannot be read.
    let (ok, _, err) = run(&dir, &["keys", "list"], None);
    assert!(!ok && err.contains("master key"), "{err}");
}

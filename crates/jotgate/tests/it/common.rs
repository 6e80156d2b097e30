//! Test harness: a fresh server per test (own temp database, port 0) and helpers.

use std::path::PathBuf;
use std::sync::Arc;

use jotgate::Application;
use jotgate::settings::Settings;
use jotgate_core::{AccessClaims, KeyMaterial, SigningAlg};
use jotgate_store::Store;
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const PASSWORD: &str = "correct horse battery";

/// A fresh data directory under the system temp dir.
pub fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("jotgate-it-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

/// Settings for tests: a private database, port 0, cheap argon2 (the default costs ~1 s per
/// hash in a debug build; one test keeps the OWASP defaults).
/// The stores a test runs on: the embedded SQLite file (`None`), then PostgreSQL and the
/// DynamoDB emulator unless told to skip them (a fresh database or table each).
pub async fn every_store() -> Vec<Option<String>> {
    let mut stores = vec![None];
    stores.extend(
        jotgate_store::contract::postgres_test_database()
            .await
            .map(Some),
    );
    #[cfg(feature = "dynamodb")]
    stores.extend(jotgate_store::contract::dynamodb_test_table().map(Some));
    stores
}

pub fn settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::default();
    s.store.database = Some(dir.join("jotgate.db"));
    s.listen.listen = Some("127.0.0.1:0".parse().unwrap());
    s.tokens.issuer = Some("http://jotgate.test".into());
    s.passwords.argon2_memory_kib = Some(1024);
    s.passwords.argon2_iterations = Some(1);
    s
}

pub struct TestApp {
    pub base: String,
    pub client: Client,
    pub dir: PathBuf,
    pub settings: Settings,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    pub async fn start() -> Self {
        let dir = temp_dir();
        Self::with(settings(&dir), dir).await
    }

    pub async fn with(settings: Settings, dir: PathBuf) -> Self {
        let app = Application::build(&settings).await.expect("server builds");
        let base = format!("http://{}", app.local_addr());
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.run(async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        Self {
            base,
            client: client(),
            dir,
            settings,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let res = self
            .client
            .get(self.url(path))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK, "GET {path}");
        res.json().await.expect("JSON body")
    }

    pub async fn signup(&self, username: &str) -> Value {
        let res = self
            .post(
                "/signup",
                json!({"username": username, "password": PASSWORD}),
            )
            .await;
        assert_eq!(res.status(), StatusCode::CREATED);
        res.json().await.unwrap()
    }

    /// Sign up and return just the access token.
    pub async fn signup_token(&self, username: &str) -> String {
        self.signup(username).await["token"]
            .as_str()
            .expect("token")
            .to_string()
    }

    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post(
            "/login",
            json!({"username": username, "password": password}),
        )
        .await
    }

    pub async fn private(&self, token: &str) -> Response {
        self.client
            .get(self.url("/private"))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// The database as a second process would see it.
    pub async fn store(&self) -> Arc<dyn Store> {
        jotgate::open_store(&self.settings).await.unwrap()
    }

    /// The signing key material itself.
    pub async fn signing_key(&self) -> KeyMaterial {
        let keys = self.store().await.keys().await.unwrap();
        let k = keys.last().unwrap();
        KeyMaterial::from_pkcs8(
            Some(k.kid.clone()),
            SigningAlg::parse(&k.alg).unwrap(),
            k.private_der.clone(),
        )
        .unwrap()
    }

    /// Claims as the server would issue them now for `sub`.
    pub fn claims(&self, sub: &str) -> AccessClaims {
        let now = jotgate_server::now();
        AccessClaims {
            iss: "http://jotgate.test".into(),
            sub: sub.into(),
            aud: "jotgate".into(),
            exp: now + 600,
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            username: sub.into(),
            roles: vec![],
            scope: "profile".into(),
            sid: None,
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Assert the common error shape and return the code.
pub async fn error_code(res: Response, status: StatusCode) -> String {
    assert_eq!(res.status(), status, "unexpected status");
    let body: Value = res.json().await.expect("error body is JSON");
    assert_eq!(body["status"], "error", "{body}");
    assert!(
        body["error"].as_str().is_some_and(|s| !s.is_empty()),
        "{body}"
    );
    body["code"].as_str().expect("error has a code").to_string()
}

impl TestApp {
    /// Stop the server but keep its data directory (for restarts).
    pub async fn stop_keep_dir(mut self) {
        self.dir = PathBuf::new();
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.expect("server task ends");
        }
    }
}

/// An HTTP client (with rustls' provider installed for the https tests).
pub fn client() -> Client {
    jotgate::init_crypto();
    Client::new()
}

/// `GET` or `POST` (or any method) `url` with a Bearer token.
pub async fn bearer(
    method: reqwest::Method,
    url: impl reqwest::IntoUrl,
    token: impl std::fmt::Display,
) -> Response {
    client()
        .request(method, url)
        .bearer_auth(token)
        .send()
        .await
        .expect("request")
}

/// The `WWW-Authenticate` challenge of a response.
pub fn challenge(res: &Response) -> String {
    res.headers()["www-authenticate"]
        .to_str()
        .expect("challenge is text")
        .to_string()
}

/// Part `i` of a compact JWT (0 header, 1 claims), decoded as JSON. No verification.
pub fn token_part(token: &str, i: usize) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(i).expect("JWT part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

//! Faults: the store going away and coming back while the server runs; a server killed
//! in the middle of concurrent refreshes. (A store unreachable at start is
//! `first_contact::start_up_errors_name_their_cause`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, error_code, settings, temp_dir};

/// A TCP relay to a store (PostgreSQL, the DynamoDB emulator) that a test can cut and
/// restore: the store "goes down" without stopping the shared test server. While cut,
/// new connections are accepted and dropped at once, and open ones are closed.
pub struct Relay {
    pub addr: std::net::SocketAddr,
    open: Arc<AtomicBool>,
    /// Milliseconds every chunk waits before it is passed on (a slow network or store).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

/// Copy `from` to `to`, each chunk after `delay_ms`.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let d = delay_ms.load(Ordering::SeqCst);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Relay {
    async fn start(target: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let delay_ms: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let conns: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (o, c, d) = (open.clone(), conns.clone(), delay_ms.clone());
        tokio::spawn(async move {
            loop {
                let Ok((inbound, _)) = listener.accept().await else {
                    return;
                };
                if !o.load(Ordering::SeqCst) {
                    continue;
                }
                let (target, d) = (target.clone(), d.clone());
                let task = tokio::spawn(async move {
                    if let Ok(out) = tokio::net::TcpStream::connect(target).await {
                        let (ir, iw) = inbound.into_split();
                        let (or, ow) = out.into_split();
                        tokio::join!(pass(ir, ow, d.clone()), pass(or, iw, d));
                    }
                });
                c.lock().unwrap().push(task.abort_handle());
            }
        });
        Self {
            addr,
            open,
            delay_ms,
            conns,
        }
    }

    /// A relay in front of the store `url` names (a PostgreSQL URL's host and port, or a
    /// DynamoDB URL's `endpoint`), and the same URL through the relay.
    pub async fn in_front_of(url: &str) -> (Self, String) {
        let target = match url.split_once("endpoint=http://") {
            Some((_, rest)) => rest.split(['&', '/']).next().unwrap().to_string(),
            None => {
                let parsed: reqwest::Url = url.parse().unwrap();
                format!(
                    "{}:{}",
                    parsed.host_str().unwrap(),
                    parsed.port().unwrap_or(5432)
                )
            }
        };
        let relay = Self::start(target.clone()).await;
        let via = url.replacen(&target, &relay.addr.to_string(), 1);
        assert_ne!(via, url, "the store URL names {target}");
        (relay, via)
    }

    /// Hold every chunk this long, both ways (0: none).
    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }

    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// A server on the store URL `via` (through a relay).
async fn app_on(via: String) -> TestApp {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(via.into());
    TestApp::with(s, dir).await
}

/// While the store is down: login and refresh answer 503 `store_unavailable` with
/// `Retry-After` within 2 s; a token issued before still opens `/private` (verified from
/// memory); when the store is back, service resumes by itself.
async fn store_goes_down_and_comes_back(app: &TestApp, relay: &Relay) {
    let body = app.signup("fay").await;
    let token = body["token"].as_str().unwrap().to_string();
    let refresh = body["refresh_token"].as_str().unwrap().to_string();
    assert_eq!(app.private(&token).await.status(), StatusCode::OK);
    relay.cut();
    for (what, call) in [("login", 0), ("refresh", 1), ("signup", 2)] {
        let started = Instant::now();
        let res = match call {
            0 => app.login("fay", PASSWORD).await,
            1 => {
                app.post("/refresh", json!({"refresh_token": refresh}))
                    .await
            }
            _ => {
                app.post("/signup", json!({"username": "gil", "password": PASSWORD}))
                    .await
            }
        };
        let took = started.elapsed();
        assert_eq!(res.headers()["retry-after"], "1", "{what}");
        assert_eq!(res.headers()["cache-control"], "no-store", "{what}");
        assert_eq!(
            error_code(res, StatusCode::SERVICE_UNAVAILABLE).await,
            "store_unavailable",
            "{what}"
        );
        assert!(took < Duration::from_secs(2), "{what} took {took:?}");
    }
    // Verified from memory: keys and revocations are held, not read per request.
    assert_eq!(app.private(&token).await.status(), StatusCode::OK);
    relay.restore();
    crate::edge::eventually("login works again", async || {
        app.login("fay", PASSWORD).await.status() == StatusCode::OK
    })
    .await;
    let res = app
        .post("/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "the refresh token outlived the outage"
    );
}

#[tokio::test]
async fn postgresql_going_away_is_503_then_service_resumes() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let (relay, via) = Relay::in_front_of(&url).await;
    let app = app_on(via).await;
    store_goes_down_and_comes_back(&app, &relay).await;
}

#[tokio::test]
async fn the_dynamodb_emulator_going_away_is_503_then_service_resumes() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let (relay, via) = Relay::in_front_of(&url).await;
    let app = app_on(via).await;
    store_goes_down_and_comes_back(&app, &relay).await;
}

/// The gateway in front of a server whose store is down keeps verifying: it holds the
/// issuer's keys and revocations, and reads neither per request.
#[tokio::test]
async fn the_gateway_keeps_verifying_while_the_issuers_store_is_down() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let (relay, via) = Relay::in_front_of(&url).await;
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(via.into());
    s.tokens.issuer = None;
    s.sessions.sync_interval = Some(1);
    s.feed.feed_token = Some(crate::edge::FEED_TOKEN.to_string().into());
    let app = TestApp::with(s, dir).await;
    let up = crate::gateway::Upstream::start().await;
    let policy = format!(
        "[[issuer]]\nissuer = \"{base}\"\nprofile = \"jotgate\"\naudiences = [\"jotgate\"]\nrevocation_feed = \"{base}/api/v1/revocations\"\nrevocation_token_env = \"JOTGATE_TEST_FEED_TOKEN\"\n",
        base = app.base
    );
    // The feed token reaches the policy through an environment variable of this process.
    unsafe { std::env::set_var("JOTGATE_TEST_FEED_TOKEN", crate::edge::FEED_TOKEN) };
    let gw = crate::gateway::gateway(&up, &policy).await;
    let token = app.signup("hal").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    let client = crate::common::client();
    let through = async || {
        client
            .get(format!("{gw}/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status()
    };
    crate::edge::eventually("the gateway passes the token", async || {
        through().await == StatusCode::OK
    })
    .await;
    relay.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(through().await, StatusCode::OK, "verified from memory");
    relay.restore();
}

/// `kill -9` of the server in the middle of 1,000 concurrent refreshes of 100 sessions
/// (each refresh token presented ten times at once): no presented token got two different
/// successors, and after a restart on the same database no rotated token is accepted
/// again — the reuse is detected and ends its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_mid_refresh_leaves_no_forked_session() {
    let dir = temp_dir();
    let args = ["--refresh-grace", "1", "--signup-ip-limit", "1000"];
    let served = crate::cli::Served::start(&dir, &args);
    let client = crate::common::client();
    let post = |base: String, path: &'static str, body: Value| {
        let client = client.clone();
        async move {
            let res = client
                .post(format!("{base}{path}"))
                .json(&body)
                .send()
                .await
                .ok()?;
            let status = res.status();
            Some((status, res.json::<Value>().await.ok()?))
        }
    };
    // 100 sessions: 10 users, 10 logins each.
    let mut sessions: Vec<String> = Vec::new();
    for u in 0..10 {
        let name = format!("k{u}");
        let body = json!({"username": name, "password": PASSWORD});
        post(served.base.clone(), "/signup", body.clone())
            .await
            .unwrap();
        for _ in 0..10 {
            let (_, b) = post(served.base.clone(), "/login", body.clone())
                .await
                .unwrap();
            sessions.push(b["refresh_token"].as_str().unwrap().to_string());
        }
    }
    // 1,000 refreshes at once; the server dies while they are in flight.
    let mut tasks = Vec::new();
    for (i, r) in sessions.iter().enumerate() {
        for _ in 0..10 {
            let fut = post(served.base.clone(), "/refresh", json!({"refresh_token": r}));
            tasks.push(tokio::spawn(async move { (i, fut.await) }));
        }
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    drop(served); // SIGKILL
    let mut successors: Vec<std::collections::BTreeSet<String>> = vec![Default::default(); 100];
    let mut answered = 0;
    for t in tasks {
        if let (i, Some((StatusCode::OK, b))) = t.await.unwrap() {
            answered += 1;
            successors[i].insert(b["refresh_token"].as_str().unwrap().to_string());
        }
    }
    for (i, s) in successors.iter().enumerate() {
        assert!(s.len() <= 1, "session {i} forked into {s:?}");
    }
    // Restart on the same database, past the grace (one second, counted in whole seconds:
    // up to two on the clock).
    let served = crate::cli::Served::start(&dir, &args);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let refresh = |r: &str| post(served.base.clone(), "/refresh", json!({"refresh_token": r}));
    let mut checked = 0;
    let mut unseen = Vec::new();
    for (i, original) in sessions.iter().enumerate() {
        let Some(next) = successors[i].iter().next() else {
            // Rotated before the kill (the answer lost) or never: one presentation may
            // succeed from here, a second (after the grace) is reuse.
            let (first, b) = refresh(original).await.unwrap();
            unseen.push((i, original, first, b));
            continue;
        };
        // The successor lives; the rotated original is reuse: refused, and the session
        // ends with it.
        let (status, b) = refresh(next).await.unwrap();
        assert_eq!(status, StatusCode::OK, "session {i}: {b}");
        let latest = b["refresh_token"].as_str().unwrap().to_string();
        let (status, _) = refresh(original).await.unwrap();
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "session {i}: reuse accepted"
        );
        let (status, _) = refresh(&latest).await.unwrap();
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "session {i}: reuse did not end it"
        );
        checked += 1;
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (i, original, first, b) in unseen {
        let (again, _) = refresh(original).await.unwrap();
        assert_eq!(
            again,
            StatusCode::UNAUTHORIZED,
            "session {i}: reuse accepted"
        );
        if first == StatusCode::OK {
            let next = b["refresh_token"].as_str().unwrap();
            let (status, _) = refresh(next).await.unwrap();
            assert_eq!(status, StatusCode::UNAUTHORIZED, "session {i}");
        }
    }
    eprintln!(
        "{answered} refreshes answered 200 before the kill; {checked} sessions had a successor"
    );
}

/// A small tmpfs, unmounted when dropped.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    /// `None` (the test skips) where this process may not mount (not root, a container).
    fn mount(size: &str) -> Option<Self> {
        let dir = temp_dir().join("disk");
        std::fs::create_dir_all(&dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .ok()?
            .status
            .success();
        ok.then_some(Self(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// SQLite on a full disk: writes answer 503 `store_unavailable` (never a crash, never a
/// half-written account), tokens issued before keep working, and service resumes when
/// space returns, with the data intact.
#[tokio::test]
async fn sqlite_on_a_full_disk_fails_clearly_and_recovers() {
    let Some(disk) = SmallDisk::mount("4m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root outside a container)");
        return;
    };
    let dir = disk.0.clone();
    let mut s = settings(&dir);
    s.store.database = Some(dir.join("jotgate.db"));
    let app = TestApp::with(s, dir.clone()).await;
    let token = app.signup("ivy").await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // Fill the disk.
    let filler = dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let mut refused = Vec::new();
    for i in 0..20 {
        let res = app
            .post(
                "/signup",
                json!({"username": format!("full{i}"), "password": PASSWORD}),
            )
            .await;
        match res.status() {
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(res.headers()["retry-after"], "1");
                assert_eq!(
                    error_code(res, StatusCode::SERVICE_UNAVAILABLE).await,
                    "store_unavailable"
                );
                refused.push(format!("full{i}"));
            }
            // A write may still fit in space SQLite already holds.
            StatusCode::CREATED => {}
            other => panic!("sign-up on a full disk: {other}"),
        }
    }
    assert!(!refused.is_empty(), "the disk never filled");
    assert_eq!(app.private(&token).await.status(), StatusCode::OK);
    // Space returns: service resumes, nothing lost, nothing half-made.
    std::fs::remove_file(&filler).unwrap();
    crate::edge::eventually("sign-up works again", async || {
        app.post(
            "/signup",
            json!({"username": "after", "password": PASSWORD}),
        )
        .await
        .status()
            == StatusCode::CREATED
    })
    .await;
    assert_eq!(app.login("ivy", PASSWORD).await.status(), StatusCode::OK);
    let out = crate::cli::bin()
        .env("JOTGATE_DATABASE", dir.join("jotgate.db"))
        .args(["users", "list", "--json"])
        .output()
        .unwrap();
    let users: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"ivy") && names.contains(&"after"),
        "{names:?}"
    );
    drop(app);
}

/// A PostgreSQL that answers slowly (every packet held 1 s): requests are bounded — those
/// that find every connection busy get 503 after the pool's wait, the one that holds a
/// connection gets 503 at the store deadline (4 s; its work goes on in the background),
/// none hangs or piles up — and the service is itself again once the store is.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_postgresql_bounds_every_request() {
    let Some(url) = jotgate_store::contract::postgres_test_database().await else {
        return;
    };
    let (relay, via) = Relay::in_front_of(&url).await;
    let app = app_on(via).await;
    app.signup("slow").await;
    relay.set_delay(Duration::from_secs(1));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let (client, url) = (app.client.clone(), app.url("/login"));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let res = client
                .post(url)
                .json(&json!({"username": "slow", "password": PASSWORD}))
                .send()
                .await
                .unwrap();
            (res.status(), t.elapsed())
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    let mut fast_503 = 0;
    for t in tasks {
        let (status, took) = t.await.unwrap();
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
        if status == StatusCode::SERVICE_UNAVAILABLE && took < Duration::from_secs(3) {
            fast_503 += 1;
        }
    }
    let all = started.elapsed();
    assert!(
        statuses.keys().all(|s| [200, 503].contains(s)),
        "{statuses:?}"
    );
    assert!(fast_503 > 0, "nobody was told to come back: {statuses:?}");
    assert!(all < Duration::from_secs(8), "requests piled up: {all:?}");
    relay.set_delay(Duration::ZERO);
    crate::edge::eventually("logins are fast again", async || {
        let t = Instant::now();
        app.login("slow", PASSWORD).await.status() == StatusCode::OK
            && t.elapsed() < Duration::from_secs(1)
    })
    .await;
    eprintln!("slow store: {statuses:?} in {all:?}, {fast_503} answered 503 within 3 s");
}

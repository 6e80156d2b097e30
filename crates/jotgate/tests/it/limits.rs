//! Login throttling and the bounded hashing pool, with real concurrent requests.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, error_code, settings, temp_dir};

fn retry_after(res: &reqwest::Response) -> u64 {
    res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn failures_per_username_lock_it_with_growing_delays() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.login.login_user_failures = Some(3);
    s.login.login_delay = Some(30);
    let app = TestApp::with(s, dir).await;
    app.signup("gus").await;
    for _ in 0..3 {
        assert_eq!(
            app.login("gus", "wrong password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    // login_user_failures = 3: three wrong passwords are answered, then the next attempt
    // waits, even with the right password.
    let res = app.login("GUS", PASSWORD).await;
    let first = retry_after(&res);
    assert!((29..=30).contains(&first), "{first}");
    assert_eq!(
        error_code(res, StatusCode::TOO_MANY_REQUESTS).await,
        "rate_limited"
    );
    // Other accounts are unaffected.
    app.signup("hal").await;
    assert_eq!(app.login("hal", PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_locked_name_reveals_nothing_about_existence() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.login.login_user_failures = Some(2);
    s.login.login_delay = Some(60);
    let app = TestApp::with(s, dir).await;
    app.signup("ida").await;
    let mut answers = Vec::new();
    for name in ["ida", "no-such-user"] {
        for _ in 0..3 {
            app.login(name, "wrong password").await;
        }
        let res = app.login(name, "wrong password").await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{name}");
        assert!(res.headers().contains_key("retry-after"));
        answers.push(res.json::<Value>().await.unwrap());
    }
    assert_eq!(answers[0], answers[1]);
}

#[tokio::test]
async fn failures_per_address_throttle_spraying_across_names() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.login.login_ip_failures = Some(4);
    s.login.login_delay = Some(20);
    let app = TestApp::with(s, dir).await;
    app.signup("jan").await;
    for i in 0..4 {
        let res = app.login(&format!("sprayed-{i}"), "Winter2026!").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    // The address is now delayed, whatever the name.
    let res = app.login("jan", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(retry_after(&res) >= 1);
}

/// An allowlisted range (an office, CI) skips the address's own limit, as resolved through
/// the trusted proxy: spraying names from it is not delayed, from elsewhere it is. A
/// name's own limits and its hourly ceiling still hold there.
#[tokio::test]
async fn an_allowlisted_range_skips_the_address_limit_but_never_the_ceiling() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.api.trust_forwarded_for = Some(true);
    s.login.login_ip_failures = Some(3);
    s.login.login_user_failures = Some(2);
    s.login.login_user_ceiling = Some(4);
    s.login.login_allowlist = Some("192.0.2.0/24, 2001:db8:cafe::/48".into());
    let app = TestApp::with(s, dir).await;
    app.signup("ci-bot").await;
    for at in ["192.0.2.10", "2001:db8:cafe:1::7"] {
        for i in 0..6 {
            let res = login_from(&app, at, &format!("typo-{i}"), "wrong").await;
            assert_eq!(
                res.status(),
                StatusCode::UNAUTHORIZED,
                "{at}: not held back"
            );
        }
        let res = login_from(&app, at, "ci-bot", PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK, "{at}");
    }
    // A header entry the client wrote itself, left of the proxy's, is never used.
    for i in 0..3 {
        let res = login_from(&app, "192.0.2.10, 198.51.100.1", &format!("x-{i}"), "w").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&app, "192.0.2.10, 198.51.100.1", "x-9", "w").await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "not allowlisted"
    );
    // From the allowlist, a name's pair limit (2) still holds ...
    for _ in 0..2 {
        let res = login_from(&app, "192.0.2.20", "ci-bot", "wrong").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&app, "192.0.2.20", "ci-bot", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // ... and so does its ceiling (4 an hour, across addresses, the allowlist's too).
    for at in ["192.0.2.21", "192.0.2.22"] {
        let res = login_from(&app, at, "ci-bot", "wrong").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_from(&app, "192.0.2.23", "ci-bot", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "the ceiling");
}

/// Behind a proxy, a request without the forwarded entry resolves to the proxy's own
/// address (the socket peer): that is never matched against the allowlist, even when the
/// allowlist covers the proxy, or anyone reaching it directly would skip the limits.
#[tokio::test]
async fn the_proxys_own_address_is_never_allowlisted() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.api.trust_forwarded_for = Some(true);
    s.login.login_ip_failures = Some(3);
    s.login.login_allowlist = Some("127.0.0.0/8, ::1".into());
    let app = TestApp::with(s, dir).await;
    for i in 0..3 {
        let res = app.login(&format!("sprayed-{i}"), "wrong").await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = app.login("sprayed-9", "wrong").await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // The same loopback address, forwarded by the proxy: allowlisted.
    let res = login_from(&app, "127.0.0.1", "sprayed-9", "wrong").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_login_flood_gets_429_not_unbounded_memory() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    // One worker, two waiting; each hash ~64 MiB and slow enough to pile up.
    s.login.hash_workers = Some(1);
    s.login.hash_queue = Some(2);
    s.passwords.argon2_memory_kib = Some(64 * 1024);
    s.passwords.argon2_iterations = Some(3);
    s.login.login_ip_failures = Some(1000);
    s.login.login_user_failures = Some(1000);
    let app = TestApp::with(s, dir).await;
    let mut tasks = Vec::new();
    for i in 0..24 {
        let client = app.client.clone();
        let url = app.url("/login");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({"username": format!("flood-{i}"), "password": "whatever123"}))
                .send()
                .await
                .unwrap()
        }));
    }
    let (mut busy, mut denied) = (0, 0);
    for t in tasks {
        let res = t.await.unwrap();
        match res.status() {
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(retry_after(&res), 1);
                assert_eq!(res.json::<Value>().await.unwrap()["code"], "server_busy");
                busy += 1;
            }
            StatusCode::UNAUTHORIZED => denied += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(busy > 0, "no request was shed");
    assert!(denied >= 1, "every request was shed");
    assert_eq!(busy + denied, 24);
}

/// Issue 20's flood: wrong passwords for random names from random addresses fill the
/// hashing queue, and are shed with 429 before any store work; June, with her device
/// token, gets in every time meanwhile. May, without one, is shed with the flood.
#[tokio::test]
async fn a_device_token_gets_its_owner_through_a_flood() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.api.trust_forwarded_for = Some(true);
    s.login.hash_workers = Some(1);
    s.login.hash_queue = Some(2);
    s.passwords.argon2_memory_kib = Some(32 * 1024);
    s.passwords.argon2_iterations = Some(3);
    let app = Arc::new(TestApp::with(s, dir).await);
    let june: Value = app.signup("june").await;
    let mut device = june["device_token"].as_str().unwrap().to_string();
    app.signup("may").await;
    let (stop, busy) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let flood: Vec<_> = (0..24)
        .map(|c| {
            let (app, stop, busy) = (Arc::clone(&app), Arc::clone(&stop), Arc::clone(&busy));
            tokio::spawn(async move {
                let mut i = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let at = format!("10.{c}.{}.{}", i / 250, i % 250 + 1);
                    let res = login_from(&app, &at, &format!("flood-{c}-{i}"), "guess").await;
                    match res.status() {
                        StatusCode::TOO_MANY_REQUESTS => {
                            assert_eq!(res.json::<Value>().await.unwrap()["code"], "server_busy");
                            busy.fetch_add(1, Ordering::Relaxed);
                        }
                        StatusCode::UNAUTHORIZED => {}
                        other => panic!("the flood got {other}"),
                    }
                }
            })
        })
        .collect();
    while busy.load(Ordering::Relaxed) < 10 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut may_in = 0;
    for _ in 0..5 {
        let res = login_with_device(&app, "198.51.100.20", "june", PASSWORD, Some(&device)).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "June gets in through the flood"
        );
        device = res.json::<Value>().await.unwrap()["device_token"]
            .as_str()
            .unwrap()
            .to_string();
        let res = login_from(&app, "198.51.100.21", "may", PASSWORD).await;
        may_in += usize::from(res.status() == StatusCode::OK);
    }
    let shed = busy.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for f in flood {
        f.await.unwrap();
    }
    assert!(shed >= 10, "the flood was shed");
    // May may or may not find a free place in the untrusted queue: recorded, not asserted.
    eprintln!("May, without a device token, got in {may_in} of 5 times during the flood");
}

/// 200 concurrent wrong passwords for one name: each is counted before it is hashed, so
/// at most the free failures plus the one that starts the delay are evaluated (401); the
/// rest are 429 without a hash.
#[tokio::test]
async fn concurrent_guesses_are_counted_before_hashing() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.login.login_user_failures = Some(5);
    s.login.login_ip_failures = Some(100_000);
    s.login.login_delay = Some(60);
    let app = TestApp::with(s, dir).await;
    app.signup("kim").await;
    let answers =
        futures_util::future::join_all((0..200).map(|_| app.login("kim", "wrong password"))).await;
    let evaluated = answers
        .iter()
        .filter(|r| r.status() == StatusCode::UNAUTHORIZED)
        .count();
    assert!(answers.iter().all(|r| matches!(
        r.status(),
        StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS
    )));
    assert!(
        (1..=6).contains(&evaluated),
        "{evaluated} guesses evaluated"
    );
}

/// A client that never finishes its request head is closed after the header timeout.
async fn closed_after_partial_request(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HT").await.unwrap();
    let mut buf = [0u8; 512];
    // Closed (EOF or reset) well before this generous bound; held open forever before.
    matches!(
        tokio::time::timeout(std::time::Duration::from_secs(20), s.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn slow_clients_are_closed_and_do_not_block_others() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.conn.header_timeout = Some(1);
    let app = TestApp::with(s, dir).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    assert!(closed_after_partial_request(&addr).await);

    // 2,000 connections holding partial requests: /healthz still answers.
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.conn.header_timeout = Some(120);
    let app = TestApp::with(s, dir).await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..2000 {
        use tokio::io::AsyncWriteExt;
        let mut c = tokio::net::TcpStream::connect(&addr).await.unwrap();
        c.write_all(b"POST /login HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(c);
    }
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    drop(held);
}

#[tokio::test]
async fn the_gateway_closes_slow_clients_too() {
    let dir = temp_dir();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        "[[issuer]]\nissuer = \"http://127.0.0.1:9\"\naudiences = [\"api\"]\n",
    )
    .unwrap();
    let gw = jotgate::edge::Gateway::build(
        "127.0.0.1:0".parse().unwrap(),
        "http://127.0.0.1:9",
        &policy,
        jotgate::serve::ConnLimits {
            header_timeout: std::time::Duration::from_secs(1),
            max_connections: 100,
        },
    )
    .await
    .unwrap();
    let addr = gw.local_addr().to_string();
    tokio::spawn(async move { gw.run(std::future::pending()).await });
    assert!(closed_after_partial_request(&addr).await);
}

/// The same bound on DynamoDB (60 guesses: every attempt is a few writes on the emulator).
#[tokio::test]
async fn concurrent_guesses_are_counted_before_hashing_on_dynamodb() {
    let Some(url) = jotgate_store::contract::dynamodb_test_table() else {
        return;
    };
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.store.store = Some(url.into());
    s.login.login_user_failures = Some(5);
    s.login.login_ip_failures = Some(100_000);
    s.login.login_delay = Some(60);
    let app = TestApp::with(s, dir).await;
    app.signup("kim").await;
    let answers =
        futures_util::future::join_all((0..60).map(|_| app.login("kim", "wrong password"))).await;
    let evaluated = answers
        .iter()
        .filter(|r| r.status() == StatusCode::UNAUTHORIZED)
        .count();
    assert!(
        (1..=6).contains(&evaluated),
        "{evaluated} guesses evaluated"
    );
    // The owner's right password waits too (the delay holds across spellings).
    assert_eq!(
        app.login("KIM", PASSWORD).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

async fn login_from(app: &TestApp, at: &str, name: &str, password: &str) -> reqwest::Response {
    app.client
        .post(app.url("/login"))
        .header("x-forwarded-for", at)
        .json(&json!({"username": name, "password": password}))
        .send()
        .await
        .unwrap()
}

/// Issue 20's targeted lockout: guesses for one user from many addresses no longer keep
/// her out at her own address; they stop at the per-account ceiling (an hour's worth of
/// evaluated guesses), which is recorded once in the audit log.
#[tokio::test]
async fn guessing_from_many_addresses_does_not_lock_the_owner_out_until_the_ceiling() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.api.trust_forwarded_for = Some(true);
    s.login.login_user_failures = Some(3);
    s.login.login_user_ceiling = Some(12);
    let app = TestApp::with(s, dir).await;
    app.signup("june").await;
    // Four guesses from each of three addresses: the fourth from each waits.
    let mut evaluated = 0;
    for i in 1..=3 {
        for _ in 0..4 {
            let res = login_from(&app, &format!("203.0.113.{i}"), "june", "wrong password").await;
            evaluated += usize::from(res.status() == StatusCode::UNAUTHORIZED);
        }
    }
    assert_eq!(evaluated, 9, "three per address");
    // June, at her own address, with the right password: in.
    let res = login_from(&app, "198.51.100.20", "june", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Guesses from fresh addresses go on until the ceiling: 12 evaluated in all.
    for i in 10..20 {
        let res = login_from(&app, &format!("203.0.113.{i}"), "june", "wrong password").await;
        evaluated += usize::from(res.status() == StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        evaluated, 12,
        "the ceiling bounds the guesses from all addresses"
    );
    // Now everyone waits about an hour, June too.
    let res = login_from(&app, "198.51.100.20", "june", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait = retry_after(&res);
    assert!((3500..=3600).contains(&wait), "{wait}");
    // Reaching it was recorded once.
    let store = app.store().await;
    let events = store
        .audit_events(jotgate_store::AuditQuery {
            since_ms: 0,
            kind: Some("login.ceiling_reached".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "{events:?}");
}

async fn login_with_device(
    app: &TestApp,
    at: &str,
    name: &str,
    password: &str,
    device: Option<&str>,
) -> reqwest::Response {
    let mut body = json!({"username": name, "password": password});
    if let Some(d) = device {
        body["device_token"] = json!(d);
    }
    app.client
        .post(app.url("/login"))
        .header("x-forwarded-for", at)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Issue 20's device tokens: with the account's ceiling tripped by guesses from many
/// addresses, June's device gets her in from anywhere; nobody else's token, a revoked one
/// or one spent by wrong passwords does; the cookie carries it for browsers.
#[tokio::test]
async fn a_device_token_gets_its_owner_through_a_tripped_ceiling_and_nothing_else_does() {
    let dir = temp_dir();
    let mut s = settings(&dir);
    s.api.trust_forwarded_for = Some(true);
    s.login.login_user_failures = Some(3);
    s.login.login_user_ceiling = Some(6);
    let app = TestApp::with(s, dir).await;
    app.signup("june").await;
    app.signup("bob").await;
    let first = login_with_device(&app, "198.51.100.20", "june", PASSWORD, None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with("jotgate-device=")
            && cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let body: Value = first.json().await.unwrap();
    let june_device = body["device_token"].as_str().unwrap().to_string();
    assert!(cookie.contains(&june_device));
    let bob: Value = login_with_device(&app, "198.51.100.30", "bob", PASSWORD, None)
        .await
        .json()
        .await
        .unwrap();
    let bob_device = bob["device_token"].as_str().unwrap().to_string();

    // Guesses from six addresses trip June's ceiling: now everyone waits...
    for i in 1..=6 {
        let res = login_with_device(&app, &format!("203.0.113.{i}"), "june", "wrong", None).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_with_device(&app, "198.51.100.20", "june", PASSWORD, None).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // ...but June's device, from anywhere — in the body, or as the cookie.
    let res = login_with_device(&app, "203.0.113.1", "june", PASSWORD, Some(&june_device)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let renewed: Value = res.json().await.unwrap();
    let renewed = renewed["device_token"].as_str().unwrap().to_string();
    let res = app
        .client
        .post(app.url("/login"))
        .header("x-forwarded-for", "192.0.2.9")
        .header("cookie", format!("jotgate-device={renewed}"))
        .json(&json!({"username": "june", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let token: Value = res.json().await.unwrap();
    let access = token["token"].as_str().unwrap().to_string();
    // Bob's token does nothing for June; a forged one neither.
    let forged = format!("{}x", &june_device[..june_device.len() - 1]);
    for other in [bob_device.as_str(), forged.as_str()] {
        let res = login_with_device(&app, "198.51.100.20", "june", PASSWORD, Some(other)).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    }
    // A device token that sees three wrong passwords is spent.
    for _ in 0..3 {
        let res = login_with_device(&app, "198.51.100.21", "june", "wrong", Some(&renewed)).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let res = login_with_device(&app, "198.51.100.21", "june", PASSWORD, Some(&renewed)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    // Log out everywhere: June's device tokens end with her sessions.
    let res = app
        .client
        .post(app.url("/logout-all"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = login_with_device(&app, "203.0.113.1", "june", PASSWORD, Some(&june_device)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
}

/// What a client sends instead of a device token, on every backend: a token of the
/// account works, a wrong type is a 400, an oversized or duplicated-looking one counts as
/// none (the password still decides), and nothing reveals whether the name exists.
#[tokio::test]
async fn device_token_input_is_bounded_and_alike_on_every_backend() {
    for store in crate::common::every_store().await {
        let dir = temp_dir();
        let mut s = settings(&dir);
        s.store.store = store.clone().map(Into::into);
        let app = TestApp::with(s, dir).await;
        let signed: Value = app.signup("kit").await;
        let device = signed["device_token"].as_str().unwrap().to_string();
        let at = "198.51.100.7";
        let ok = login_with_device(&app, at, "kit", PASSWORD, Some(&device)).await;
        assert_eq!(ok.status(), StatusCode::OK, "{store:?}");
        let res = app
            .client
            .post(app.url("/login"))
            .json(&json!({"username": "kit", "password": PASSWORD, "device_token": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_code(res, StatusCode::BAD_REQUEST).await,
            "invalid_field"
        );
        let huge = "dt1.".to_string() + &"a".repeat(20_000);
        let res = login_with_device(&app, at, "kit", PASSWORD, Some(&huge)).await;
        assert_eq!(
            res.status(),
            StatusCode::OK,
            "an unusable token counts as none"
        );
        // The same token for a name that does not exist: the same 401 as a wrong password.
        let a = login_with_device(&app, at, "nobody", "wrong", Some(&device)).await;
        let b = login_with_device(&app, at, "kit", "wrong", Some(&device)).await;
        assert_eq!(a.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(b.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            a.json::<Value>().await.unwrap(),
            b.json::<Value>().await.unwrap()
        );
    }
}

/// Issue 20's operator view, as Auth0's user blocks: the addresses a user is held back
/// from are listed (management API with `read:users`, `jotgate users blocks`) and lifted
/// (`update:users`, `jotgate users unblock`), with an audit event; on every backend.
#[tokio::test]
async fn operators_list_and_lift_a_users_blocks_on_every_backend() {
    for store in crate::common::every_store().await {
        let dir = temp_dir();
        let mut s = settings(&dir);
        s.store.store = store.clone().map(Into::into);
        s.api.trust_forwarded_for = Some(true);
        s.login.login_user_failures = Some(2);
        s.login.login_user_ceiling = Some(50);
        let app = TestApp::with(s, dir).await;
        let signed: Value = app.signup("lena").await;
        let id = signed["user"]["id"].as_str().unwrap().to_string();
        let path = format!("/api/v1/user-blocks/{id}");
        let reader = crate::management::mgmt_token(&app, "read:users").await;
        let writer = crate::management::mgmt_token(&app, "read:users update:users").await;
        let get = |token: String| {
            let (app, path) = (&app, path.clone());
            async move {
                app.client
                    .get(app.url(&path))
                    .bearer_auth(token)
                    .send()
                    .await
                    .unwrap()
            }
        };
        let blocks = |res: reqwest::Response| async move {
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await.unwrap()["blocked_for"].clone()
        };
        assert_eq!(blocks(get(reader.clone()).await).await, json!([]));
        // Two wrong passwords from one address hold it back.
        let at = "203.0.113.9";
        for _ in 0..2 {
            let res = login_from(&app, at, "lena", "wrong password").await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{store:?}");
        }
        let res = login_from(&app, at, "lena", PASSWORD).await;
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS, "{store:?}");
        let listed = blocks(get(reader.clone()).await).await;
        assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
        assert_eq!(listed[0]["ip"], at);
        assert_eq!(listed[0]["failures"], 2);
        let until = listed[0]["until"].as_i64().unwrap();
        assert!(until > jotgate_server::now(), "{listed}");
        // The command line sees the same.
        let cli = jotgate::admin::users_blocks(&app.settings, "lena", true)
            .await
            .unwrap();
        let cli: Value = serde_json::from_str(&cli).unwrap();
        assert_eq!(cli["blocked_for"][0]["ip"], at);
        // Lifting needs update:users; an unknown user is 404.
        let del =
            |token: &str, path: &str| app.client.delete(app.url(path)).bearer_auth(token).send();
        let res = del(&reader, &path).await.unwrap();
        assert_eq!(
            error_code(res, StatusCode::FORBIDDEN).await,
            "insufficient_scope"
        );
        let res = del(&writer, "/api/v1/user-blocks/u_nobody").await.unwrap();
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
        // What an attacker sends instead: no token, a token without the scope, an id of
        // 5,000 characters or one that is not UTF-8 — each a JSON error, nothing listed.
        let res = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        let other = crate::management::mgmt_token(&app, "read:roles").await;
        let res = get(other).await;
        assert_eq!(
            error_code(res, StatusCode::FORBIDDEN).await,
            "insufficient_scope"
        );
        for odd in [
            format!("/api/v1/user-blocks/{}", "a".repeat(5000)),
            "/api/v1/user-blocks/%FF%FE".to_string(),
        ] {
            let res = app
                .client
                .get(app.url(&odd))
                .bearer_auth(&reader)
                .send()
                .await
                .unwrap();
            assert!(res.status().is_client_error(), "{odd}: {}", res.status());
            assert!(res.json::<Value>().await.unwrap()["code"].is_string());
        }
        // Two lifts at once: both succeed, and nothing is left.
        let (a, b) = tokio::join!(del(&writer, &path), del(&writer, &path));
        assert_eq!(a.unwrap().status(), StatusCode::NO_CONTENT);
        assert_eq!(b.unwrap().status(), StatusCode::NO_CONTENT);
        assert_eq!(blocks(get(reader.clone()).await).await, json!([]));
        let res = login_from(&app, at, "lena", PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK, "{store:?}");
        // Held back again, lifted from the command line.
        for _ in 0..2 {
            login_from(&app, at, "lena", "wrong password").await;
        }
        let out = jotgate::admin::users_unblock(&app.settings, "lena")
            .await
            .unwrap();
        assert!(out.contains("1 block(s) lifted"), "{out}");
        let res = login_from(&app, at, "lena", PASSWORD).await;
        assert_eq!(res.status(), StatusCode::OK, "{store:?}");
        let events = app
            .store()
            .await
            .audit_events(jotgate_store::AuditQuery {
                since_ms: 0,
                kind: Some("login.unblocked".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        // Every lift is recorded: the two at once, and the command line's.
        assert_eq!(events.len(), 3, "{events:?}");
    }
}

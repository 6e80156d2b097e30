//! Every row of the seed endpoint table, over HTTP.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::common::{PASSWORD, TestApp, error_code};

#[tokio::test]
async fn signup_login_private_verify() {
    let app = TestApp::start().await;
    let body = app.signup("Alice").await;
    assert_eq!(body["user"]["username"], "Alice");
    assert!(body["user"].get("password_hash").is_none());
    assert!(body["user"].get("password").is_none());
    assert_eq!(body["expires_in"], 900);
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);
    let token = body["token"].as_str().unwrap();

    let res = app.private(token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"message": "Hello Alice"})
    );

    // Login is case-insensitive on the username and returns the same shape.
    let res = app.login("ALICE", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut login: Value = res.json().await.unwrap();
    // The same account; the login is recorded in it.
    let last = login["user"]
        .as_object_mut()
        .unwrap()
        .remove("last_login")
        .expect("last_login after a login");
    assert!(last.as_i64().unwrap() >= body["user"]["created_at"].as_i64().unwrap());
    assert_eq!(login["user"], body["user"]);
    for k in ["token", "refresh_token", "expires_in", "user"] {
        assert!(login.get(k).is_some(), "login response lacks {k}");
    }

    let res = app.post("/verify", json!({"token": login["token"]})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["status"], "valid");
    let c = &v["claims"];
    assert_eq!(c["username"], "Alice");
    assert_eq!(c["iss"], "http://jotgate.test");
    assert_eq!(c["aud"], "jotgate");
    assert_eq!(c["scope"], "profile");
    for k in ["sub", "exp", "iat", "nbf", "jti", "roles"] {
        assert!(c.get(k).is_some(), "claims lack {k}");
    }
    assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 900);

    // The header says what the token is.
    let header = crate::common::token_part(token, 0);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "RS256");
}

#[tokio::test]
async fn signup_conflict_is_case_and_unicode_insensitive() {
    let app = TestApp::start().await;
    app.signup("Ｂｏｂ").await;
    for name in ["bob", "BOB", " Bob "] {
        let res = app
            .post("/signup", json!({"username": name, "password": PASSWORD}))
            .await;
        assert_eq!(
            error_code(res, StatusCode::CONFLICT).await,
            "username_taken"
        );
    }
    assert_eq!(app.store().await.list_users().await.unwrap().len(), 1);
    let res = app.login("bob", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap()["user"]["username"],
        "Bob"
    );
}

#[tokio::test]
async fn weak_and_invalid_signups_are_400_and_store_nothing() {
    let app = TestApp::start().await;
    let cases = [
        (
            json!({"username": "carol", "password": "short"}),
            "weak_password",
            "at least 8",
        ),
        (
            json!({"username": "carol", "password": "password123"}),
            "weak_password",
            "common",
        ),
        (
            json!({"username": "carolcarol", "password": "CarolCarol"}),
            "weak_password",
            "username",
        ),
        (
            json!({"username": "", "password": PASSWORD}),
            "invalid_username",
            "empty",
        ),
        (
            json!({"username": "carol smith", "password": PASSWORD}),
            "invalid_username",
            "letters",
        ),
        (
            json!({"username": "x".repeat(65), "password": PASSWORD}),
            "invalid_username",
            "64",
        ),
    ];
    for (body, code, needle) in cases {
        let res = app.post("/signup", body.clone()).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["code"], code, "{body}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        // The password never comes back.
        if let Some(pw) = body["password"].as_str() {
            assert!(
                !msg.contains(pw) || pw.len() < 3,
                "error echoes the password"
            );
        }
    }
    assert!(app.store().await.list_users().await.unwrap().is_empty());
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_answer() {
    let app = TestApp::start().await;
    app.signup("dave").await;
    let wrong = app.login("dave", "not the password").await;
    let unknown = app.login("nobody-here", "not the password").await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let (a, b) = (wrong.text().await.unwrap(), unknown.text().await.unwrap());
    assert_eq!(a, b);
    let v: Value = serde_json::from_str(&a).unwrap();
    assert_eq!(v["error"], "Bad username/password combination");
    assert_eq!(v["status"], "error");
}

#[tokio::test]
async fn private_without_or_with_bad_token_is_401_with_challenge() {
    let app = TestApp::start().await;
    let res = app.client.get(app.url("/private")).send().await.unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"jotgate\""
    );
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );

    let res = app.private("not.a.token").await;
    let challenge = res.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer "), "{challenge}");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");
    error_code(res, StatusCode::UNAUTHORIZED).await;

    // Scheme is case-insensitive (RFC 6750 / RFC 9110).
    let token = app.signup_token("erin").await;
    let res = app
        .client
        .get(app.url("/private"))
        .header("authorization", format!("bEaReR {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    // Basic is not Bearer.
    let res = app
        .client
        .get(app.url("/private"))
        .basic_auth("erin", Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );
}

#[tokio::test]
async fn x_access_token_is_off_by_default_and_can_be_enabled() {
    let app = TestApp::start().await;
    let token = app.signup_token("frank").await;
    let res = app
        .client
        .get(app.url("/private"))
        .header("x-access-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    drop(app);

    let dir = crate::common::temp_dir();
    let mut s = crate::common::settings(&dir);
    s.api.accept_x_access_token = Some(true);
    let app = TestApp::with(s, dir).await;
    let token = app.signup_token("frank").await;
    let res = app
        .client
        .get(app.url("/private"))
        .header("x-access-token", &token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_revokes_the_token_and_the_session_at_once() {
    let app = TestApp::start().await;
    let s = app.signup("grace").await;
    let token = s["token"].as_str().unwrap();
    let res = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        error_code(app.private(token).await, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );
    let res = app.post("/verify", json!({"token": token})).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );
    // The refresh token of that session is dead too.
    let res = app
        .post("/refresh", json!({"refresh_token": s["refresh_token"]}))
        .await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );
    // Logging out again with the revoked token is 401; without one, 401.
    let res = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let res = app.client.post(app.url("/logout")).send().await.unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );
    // Another session of the same user is untouched.
    let other = app
        .login("grace", PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        app.private(other["token"].as_str().unwrap()).await.status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn jwks_and_discovery_publish_public_keys_only() {
    let app = TestApp::start().await;
    let res = app
        .client
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        res.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let jwks: Value = res.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    let k = &keys[0];
    for m in ["kid", "kty", "alg", "use", "n", "e"] {
        assert!(k.get(m).is_some(), "JWK lacks {m}");
    }
    assert_eq!(k["use"], "sig");
    assert_eq!(k["alg"], "RS256");
    for private in ["d", "p", "q", "dp", "dq", "qi"] {
        assert!(k.get(private).is_none(), "JWK leaks {private}");
    }
    let d: Value = app.get_json("/.well-known/openid-configuration").await;
    assert_eq!(d["issuer"], "http://jotgate.test");
    assert_eq!(d["jwks_uri"], "http://jotgate.test/.well-known/jwks.json");
    assert_eq!(d["id_token_signing_alg_values_supported"], json!(["RS256"]));
    let h: Value = app.get_json("/healthz").await;
    assert_eq!(h["status"], "ok");
}

#[tokio::test]
async fn es256_eddsa_and_hs256_modes() {
    for alg in ["ES256", "EdDSA"] {
        let dir = crate::common::temp_dir();
        let mut s = crate::common::settings(&dir);
        s.tokens.alg = Some(alg.into());
        let app = TestApp::with(s, dir).await;
        let token = app.signup_token("henry").await;
        assert_eq!(app.private(&token).await.status(), StatusCode::OK);
        let jwks: Value = app.get_json("/.well-known/jwks.json").await;
        assert_eq!(jwks["keys"][0]["alg"], alg);
    }
    let dir = crate::common::temp_dir();
    let mut s = crate::common::settings(&dir);
    s.tokens.alg = Some("HS256".into());
    s.tokens.hs256_secret = Some("0123456789abcdef0123456789abcdef-test".into());
    let app = TestApp::with(s, dir).await;
    let token = app.signup_token("ivy").await;
    assert_eq!(app.private(&token).await.status(), StatusCode::OK);
    let jwks: Value = app.get_json("/.well-known/jwks.json").await;
    assert_eq!(
        jwks["keys"],
        json!([]),
        "a shared secret is never published"
    );
    assert!(app.store().await.keys().await.unwrap().is_empty());
}

#[tokio::test]
async fn default_argon2_parameters_are_owasp() {
    let dir = crate::common::temp_dir();
    let mut s = crate::common::settings(&dir);
    s.passwords.argon2_memory_kib = None;
    s.passwords.argon2_iterations = None;
    let app = TestApp::with(s, dir).await;
    app.signup("judy").await;
    let rec = app
        .store()
        .await
        .user_by_key(jotgate_core::Username::parse("judy").unwrap().key())
        .await
        .unwrap()
        .unwrap();
    assert!(
        rec.password_hash
            .starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{}",
        rec.password_hash
    );
    assert_eq!(app.login("judy", PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn login_upgrades_hashes_made_with_old_parameters() {
    let app = TestApp::start().await;
    app.signup("kim").await;
    let before = app
        .store()
        .await
        .user_by_key(jotgate_core::Username::parse("kim").unwrap().key())
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    let dir = app.dir.clone();
    let mut s = app.settings.clone();
    app.stop_keep_dir().await;
    s.passwords.argon2_memory_kib = Some(2048);
    let app = TestApp::with(s, dir).await;
    assert_eq!(app.login("kim", PASSWORD).await.status(), StatusCode::OK);
    let after = app
        .store()
        .await
        .user_by_key(jotgate_core::Username::parse("kim").unwrap().key())
        .await
        .unwrap()
        .unwrap()
        .password_hash;
    assert_ne!(before, after);
    assert!(after.contains("m=2048,"), "{after}");
    assert_eq!(app.login("kim", PASSWORD).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn logout_with_the_refresh_token_alone_ends_the_session() {
    let app = TestApp::start().await;
    let s = app.signup("lou").await;
    // A client whose access token expired still holds its refresh token.
    let res = app
        .post("/logout", json!({"refresh_token": s["refresh_token"]}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .post("/refresh", json!({"refresh_token": s["refresh_token"]}))
        .await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );
    // The session's access tokens die with it.
    let res = app.private(s["token"].as_str().unwrap()).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );

    // Unknown refresh token: 401, and a valid access token sent along is left alone.
    let other = app
        .login("lou", PASSWORD)
        .await
        .json::<Value>()
        .await
        .unwrap();
    let token = other["token"].as_str().unwrap();
    let res = app
        .client
        .post(app.url("/logout"))
        .bearer_auth(token)
        .json(&json!({"refresh_token": "not-a-refresh-token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "invalid_refresh_token"
    );
    assert_eq!(app.private(token).await.status(), StatusCode::OK);
    // An expired or bad access token plus a good refresh token still logs out.
    let res = app
        .client
        .post(app.url("/logout"))
        .bearer_auth("expired.or.garbage")
        .json(&json!({"refresh_token": other["refresh_token"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        error_code(app.private(token).await, StatusCode::UNAUTHORIZED).await,
        "token_revoked"
    );
    // A body without either credential: 401; a wrongly typed one: 400.
    let res = app.post("/logout", json!({})).await;
    assert_eq!(
        error_code(res, StatusCode::UNAUTHORIZED).await,
        "token_missing"
    );
    let res = app.post("/logout", json!({"refresh_token": 7})).await;
    assert_eq!(
        error_code(res, StatusCode::BAD_REQUEST).await,
        "invalid_field"
    );
}

/// A pepper is replaced: the old one kept in old_peppers still opens its hashes, which are
/// re-made with the new pepper at the next login (issue 16, item 15).
#[tokio::test]
async fn a_pepper_is_replaced_and_hashes_are_upgraded_at_login() {
    const A: &str = "pepper-a-0123456789-0123456789-0123456789";
    const B: &str = "pepper-b-0123456789-0123456789-0123456789";
    let dir = crate::common::temp_dir();
    let mut s = crate::common::settings(&dir);
    s.passwords.pepper = Some(A.to_string().into());
    let app = TestApp::with(s.clone(), dir.clone()).await;
    app.signup("lea").await;
    let hash = |app: &TestApp| {
        let key = jotgate_core::Username::parse("lea")
            .unwrap()
            .key()
            .to_string();
        let store = app.settings.clone();
        async move {
            jotgate::open_store(&store)
                .await
                .unwrap()
                .user_by_key(&key)
                .await
                .unwrap()
                .unwrap()
                .password_hash
        }
    };
    let before = hash(&app).await;
    app.stop_keep_dir().await;
    s.passwords.pepper = Some(B.to_string().into());
    s.passwords.old_peppers = Some(A.to_string().into());
    let app = TestApp::with(s.clone(), dir.clone()).await;
    assert_eq!(app.login("lea", PASSWORD).await.status(), StatusCode::OK);
    let after = hash(&app).await;
    assert_ne!(before, after);
    app.stop_keep_dir().await;
    // The old pepper is no longer needed.
    s.passwords.old_peppers = None;
    let app = TestApp::with(s, dir).await;
    assert_eq!(app.login("lea", PASSWORD).await.status(), StatusCode::OK);
}

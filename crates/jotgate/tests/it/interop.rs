//! Interoperability with a JWT library that is not ours: PyJWT (from PyPI) verifies
//! jotgate's tokens with nothing but the published JWKS, for every algorithm; and a key
//! made by PyJWT/cryptography, imported as a private JWK, signs tokens jotgate accepts
//! (migrating from another issuer).
//!
//! Needs `python3` with `pyjwt[crypto]` (the test script installs it). Set
//! JOTGATE_SKIP_INTEROP=1 to skip on a machine without them.

use std::process::Command;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::cli::{Served, run};
use crate::common::temp_dir;

const VERIFY: &str = r#"
import json, sys, jwt
jwks_url, token, aud, iss = sys.argv[1:5]
client = jwt.PyJWKClient(jwks_url)
key = client.get_signing_key_from_jwt(token)
header = jwt.get_unverified_header(token)
claims = jwt.decode(token, key.key, algorithms=[header["alg"]], audience=aud, issuer=iss,
                    options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]})
print(json.dumps({"header": header, "claims": claims}))
"#;

const MAKE_KEY_AND_TOKEN: &str = r#"
import json, sys, time, uuid, jwt
from cryptography.hazmat.primitives.asymmetric import rsa
iss = sys.argv[1]
priv = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(priv))
jwk["kid"] = "previous-issuer-key"
now = int(time.time())
token = jwt.encode({"iss": iss, "aud": "jotgate", "sub": "legacy-user", "username": "legacy",
                    "exp": now + 300, "iat": now, "nbf": now, "jti": str(uuid.uuid4()),
                    "roles": [], "scope": "profile"},
                   priv, algorithm="RS256", headers={"kid": "previous-issuer-key", "typ": "at+jwt"})
print(json.dumps({"jwk": jwk, "token": token}))
"#;

fn skip() -> bool {
    if std::env::var("JOTGATE_SKIP_INTEROP").is_ok_and(|v| v == "1") {
        eprintln!("interop: skipped (JOTGATE_SKIP_INTEROP=1)");
        return true;
    }
    false
}

fn python(script: &str, args: &[&str]) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("python3 is installed (or set JOTGATE_SKIP_INTEROP=1)");
    assert!(
        out.status.success(),
        "python failed (is pyjwt[crypto] installed? the test script installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn pyjwt_verifies_jotgate_tokens_with_the_jwks_alone() {
    if skip() {
        return;
    }
    let client = crate::common::client();
    for alg in ["RS256", "ES256", "EdDSA"] {
        let dir = temp_dir();
        let s = Served::start(&dir, &["--alg", alg]);
        let res = client
            .post(s.url("/signup"))
            .json(&json!({"username": "py", "password": "correct horse battery"}))
            .send()
            .await
            .unwrap();
        let token = res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_string();
        let v = python(
            VERIFY,
            &[&s.url("/.well-known/jwks.json"), &token, "jotgate", &s.base],
        );
        assert_eq!(v["header"]["alg"], alg);
        assert_eq!(v["header"]["typ"], "at+jwt");
        assert_eq!(v["claims"]["username"], "py");
        // And PyJWT refuses the same token for another audience: the check is real.
        let out = Command::new("python3")
            .arg("-c")
            .arg(VERIFY)
            .args([
                &s.url("/.well-known/jwks.json"),
                &token,
                "other-aud",
                &s.base,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success());
    }
}

#[tokio::test]
async fn a_private_jwk_from_another_issuer_can_be_imported() {
    if skip() {
        return;
    }
    let dir = temp_dir();
    let issuer = "https://old-issuer.example";
    let made = python(MAKE_KEY_AND_TOKEN, &[issuer]);
    let jwk_file = dir.join("legacy.jwk");
    std::fs::write(&jwk_file, made["jwk"].to_string()).unwrap();
    let (ok, out, err) = run(
        &dir,
        &[
            "keys",
            "import",
            jwk_file.to_str().unwrap(),
            "--issuer",
            issuer,
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("previous-issuer-key RS256"), "{out}");
    let s = Served::start(&dir, &["--issuer", issuer]);
    let client = crate::common::client();
    let token = made["token"].as_str().unwrap();
    let res = client
        .get(s.url("/private"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        res.json::<Value>().await.unwrap()["message"],
        "Hello legacy"
    );
    // A corrupted JWK (d from another key) is refused: aws-lc-rs checks consistency.
    let mut bad = made["jwk"].clone();
    bad["kid"] = json!("bad");
    let other = python(MAKE_KEY_AND_TOKEN, &[issuer]);
    bad["d"] = other["jwk"]["d"].clone();
    std::fs::write(&jwk_file, bad.to_string()).unwrap();
    let (ok, _, err) = run(&dir, &["keys", "import", jwk_file.to_str().unwrap()], None);
    assert!(!ok && err.contains("cannot import"), "{err}");
}

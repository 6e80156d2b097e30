//! The Lambda authorizer's event decoder and decision: any JSON event is decided (Allow,
//! Deny or Unauthorized) without a panic, and only an event that carries one of the
//! signed tokens (`keys/valid_tokens.txt`) is ever allowed as someone.
#![no_main]
use std::sync::{Arc, LazyLock};

use jotgate_verify::Verifier;
use jotgate_verify::authorizer::{Authorizer, V2Format};
use jotgate_verify::policy::PolicyFile;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;
use common::*;
use serde_json::Value;

static AUTHORIZER: LazyLock<(Arc<Authorizer>, jotgate_verify::Background)> = LazyLock::new(|| {
    jotgate::init_crypto();
    let policy = format!(
        r#"
[[issuer]]
issuer = "https://issuer.fuzz"
profile = "jotgate"
audiences = ["api"]
algorithms = ["RS256", "ES256"]
jwks = '{jwks}'

[authorizer]
base_paths = ["/v1"]

[default]
access = "authenticated"

[[route]]
path = "/admin/*"
roles_any = ["admin"]

[[route]]
path = "/public/*"
access = "public"
"#,
        jwks = JWKS.replace('\n', "")
    );
    let file = PolicyFile::parse(&policy, std::path::Path::new(".")).expect("policy");
    RT.block_on(async {
        let mut cfg = file.verifier.clone();
        cfg.follow_feeds = false;
        let v = Verifier::new(cfg).expect("verifier");
        let bg = v.start().await;
        let a = Authorizer::with_options(v, file.policy, V2Format::Simple, file.authorizer);
        (Arc::new(a), bg)
    })
});

fn allowed(out: &Value) -> bool {
    out["isAuthorized"] == true || out["policyDocument"]["Statement"][0]["Effect"] == "Allow"
}

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let (a, _) = &*AUTHORIZER;
    if let Ok(out) = RT.block_on(a.handle(&event)) {
        // An allowed caller with a principal showed a signed token (public routes are
        // allowed without one, and carry no principal).
        let principal = out["context"].get("sub").is_some();
        if allowed(&out) && principal {
            let text = String::from_utf8_lossy(data);
            assert!(
                VALID.lines().any(|t| text.contains(t)),
                "allowed without a signed token: {text}"
            );
        }
    }
});

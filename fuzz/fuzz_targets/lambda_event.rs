//! The API function's event decoder (lambda_http's request types, then the stage and
//! source-address steps): any JSON event becomes a request or a refusal, never a panic
//! (with `panic = "abort"` a panic would end the container).
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Ok(req) = jotgate::lambda::request_of(event) {
        let _ = req.uri().path();
    }
});

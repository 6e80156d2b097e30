//! The comparison floor of `benches/http.sh`: a bare axum server whose `/private` verifies
//! nothing and answers as jotgate does. `bare_axum PORT`.

use axum::{Json, Router, routing::get};
use serde_json::json;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18081);
    let app = Router::new().route(
        "/private",
        get(|| async { Json(json!({"message": "Hello bench"})) }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

//! The comparison of `benches/http.sh` for a verifying server: bare axum + `jsonwebtoken`,
//! RS256 against one public key, `iss` and `aud` checked, no cache — what a hand-rolled
//! `express-jwt`-style middleware does. `bare_jwt PORT ISSUER N E` (the key's JWK members).

use axum::http::{HeaderMap, StatusCode};
use axum::{Json, Router, routing::get};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use std::sync::Arc;

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    let port: u16 = a[1].parse().unwrap();
    let key = Arc::new(DecodingKey::from_rsa_components(&a[3], &a[4]).unwrap());
    let mut v = Validation::new(Algorithm::RS256);
    v.set_issuer(&[&a[2]]);
    v.set_audience(&["jotgate"]);
    let v = Arc::new(v);
    let app = Router::new().route(
        "/private",
        get(move |h: HeaderMap| {
            let (key, v) = (key.clone(), v.clone());
            async move {
                let token = h
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .ok_or(StatusCode::UNAUTHORIZED)?;
                let data = jsonwebtoken::decode::<Value>(token, &key, &v)
                    .map_err(|_| StatusCode::UNAUTHORIZED)?;
                let name = data.claims["username"].as_str().unwrap_or("").to_string();
                Ok::<_, StatusCode>(Json(json!({"message": format!("Hello {name}")})))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    axum::serve(listener, app).await.unwrap();
}

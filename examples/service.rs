//! Your own axum service behind jotgate: `cargo run -p jotgate-verify --example service`,
//! then `curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:3000/hello`.
use axum::{Router, routing::get};
use jotgate_verify::{IssuerConfig, Principal, Verifier, VerifierConfig, layer::RequireAuth};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let issuer = std::env::var("ISSUER").unwrap_or("http://127.0.0.1:8080".into());
    let issuers = vec![IssuerConfig::jotgate(issuer, "jotgate")];
    let verifier = Verifier::new(VerifierConfig {
        issuers,
        ..Default::default()
    })?;
    let _keys = verifier.start().await; // fetches the JWKS, keeps it fresh
    let hello =
        |p: Principal| async move { format!("Hello {}\n", p.username.unwrap_or(p.subject)) };
    let app = Router::new()
        .route("/hello", get(hello))
        .layer(RequireAuth::new(verifier).any_scope(["profile"]));
    axum::serve(tokio::net::TcpListener::bind("127.0.0.1:3000").await?, app).await?;
    Ok(())
}

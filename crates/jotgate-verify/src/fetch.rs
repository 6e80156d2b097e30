//! Bounded HTTP GETs for discovery documents, JWKS and the revocation feed: a timeout on
//! every request, a cap on body size, no redirects, TLS on aws-lc-rs with the Mozilla roots
//! (no process-wide crypto provider needed).

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CACHE_CONTROL, HeaderMap};

#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    max_body: usize,
}

pub struct Fetched {
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

impl Fetched {
    /// `Cache-Control: max-age` in seconds, when given (and not `no-store`/`no-cache`).
    pub fn max_age(&self) -> Option<u64> {
        let cc = self.headers.get(CACHE_CONTROL)?.to_str().ok()?;
        let mut age = None;
        for d in cc.split(',').map(str::trim) {
            let lower = d.to_ascii_lowercase();
            if lower == "no-store" || lower == "no-cache" {
                return Some(0);
            }
            if let Some(v) = lower.strip_prefix("max-age=") {
                age = v.trim_matches('"').parse().ok();
            }
        }
        age
    }
}

impl Fetcher {
    pub fn new(timeout: Duration, max_body: usize) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("jotgate-verify/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { client, max_body })
    }

    /// GET `url`; 2xx only; the body is read up to `max_body` bytes, then refused.
    pub async fn get(
        &self,
        url: &str,
        bearer: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<Fetched, String> {
        let mut req = self.client.get(url).header("accept", "application/json");
        if let Some(t) = bearer {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        let mut res = req.send().await.map_err(|e| describe(&e))?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status().as_u16()));
        }
        if res
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(format!("body larger than {} bytes", self.max_body));
        }
        let headers = res.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > self.max_body {
                return Err(format!("body larger than {} bytes", self.max_body));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched { body, headers })
    }
}

/// A short reason without the URL's query or any credential.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else if e.is_body() || e.is_decode() {
        "reading the body failed".into()
    } else {
        "request failed".into()
    }
}

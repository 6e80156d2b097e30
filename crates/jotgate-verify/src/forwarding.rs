//! What a client may not say about itself or about the request: header names some upstream
//! framework reads as the client's address or identity, or as another method or path than
//! the request's, and the `_method` query parameter. Shared by the gateway (which strips or
//! refuses them) and the authorizer (which can only refuse).
//!
//! Names are compared folded, as CGI/WSGI-style servers read them: lower case, `_` ≡ `-`.

/// A header name folded: lower case, `_` read as `-`.
pub fn fold(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Client-sent claims about the connection, the client or its identity, never passed on as
/// they came: every `x-forwarded-*` name and these.
const CLIENT_FACTS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "client-ip",
    "x-cluster-client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-host",
    "x-host",
    "x-url-scheme",
    "front-end-https",
    "x-scheme",
    "remote-user",
    "x-remote-user",
    "remote-addr",
];

/// Prefixes of such names (`X-Forwarded-User`, oauth2-proxy's `X-Auth-Request-Email`…).
const CLIENT_FACT_PREFIXES: &[&str] = &["x-forwarded-", "x-auth-request-"];

/// Is this (folded) header a claim about the client or the connection?
pub fn is_client_fact(folded: &str) -> bool {
    CLIENT_FACTS.contains(&folded) || CLIENT_FACT_PREFIXES.iter().any(|p| folded.starts_with(p))
}

/// Headers some framework honours to act on another method or path than the request's
/// (gunicorn takes `SCRIPT_NAME` / `PATH_INFO` from proxies it trusts, loopback by default).
const OVERRIDES: &[&str] = &[
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-forwarded-prefix",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-envoy-original-path",
    "script-name",
    "x-script-name",
    "path-info",
];

/// Is this (folded) header a method or URL override?
pub fn is_override(folded: &str) -> bool {
    OVERRIDES.contains(&folded)
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            )
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    out
}

/// Is `name` (a query or form key, raw) one that frameworks read as `_method`? Decoded
/// once and twice, with `.`, space and `[` read as `_` (PHP), case-insensitive.
pub fn is_method_param(name: &str) -> bool {
    let once = percent_decode(name);
    let twice = percent_decode(&String::from_utf8_lossy(&once));
    [once, twice].iter().any(|k| {
        let k: Vec<u8> = k
            .trim_ascii()
            .iter()
            .map(|&c| match c {
                b'.' | b' ' | b'[' => b'_',
                c => c.to_ascii_lowercase(),
            })
            .collect();
        k == b"_method"
    })
}

/// Does a raw query string carry a `_method` parameter (`&` or `;` separated)?
pub fn query_has_method_param(query: &str) -> bool {
    query
        .split(['&', ';'])
        .any(|kv| is_method_param(kv.split('=').next().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_params_in_every_spelling() {
        for q in [
            "_method=DELETE",
            "a=1&_METHOD=x",
            "%5Fmethod=x",
            "_%6Dethod=x",
            "_me%74hod=x",
            ".method=x",
            "x=1;_method=x",
            "%255Fmethod=x",
            "+_method=x",
            "[method=x",
        ] {
            assert!(query_has_method_param(q), "{q}");
        }
        for q in ["method=x", "a_method=x", "x=_method"] {
            assert!(!query_has_method_param(q), "{q}");
        }
    }

    #[test]
    fn folded_names() {
        assert!(is_override(&fold("SCRIPT_NAME")));
        assert!(is_override(&fold("X_HTTP_Method_Override")));
        assert!(is_client_fact(&fold("X-Forwarded-User")));
        assert!(is_client_fact(&fold("x_forwarded_scheme")));
        assert!(is_client_fact(&fold("CF-Connecting-IP")));
        assert!(!is_client_fact("accept"));
    }
}

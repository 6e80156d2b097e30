//! The canonical request path: the one spelling of a path that the route policy decides on
//! and that the gateway forwards, so that the upstream acts on exactly the path that was
//! checked. Shared by the gateway, the Lambda authorizer and `RequireAuth`.
//!
//! Servers disagree about paths: Express, Flask, Django, Go and nginx decode `%61` to `a`;
//! Tomcat, Jetty and Spring read `;…` as path parameters and `..;` as `..`; IIS strips a
//! trailing `.` or space from a segment; some frameworks decode twice. So:
//!
//! - percent-encoded unreserved characters (letters, digits, `-`, `_`, `~`) are decoded;
//! - whatever servers read differently is refused: `;` (raw or encoded), encoded `/`, `\`,
//!   `.` or `%` (double decoding), `\` itself, NUL and other control characters, invalid
//!   percent escapes, invalid UTF-8, dot and empty segments, a segment that begins or ends
//!   with white space or ends with `.`, text that Unicode compatibility normalisation (NFKC)
//!   would change (full-width letters, the Kelvin sign…), and characters that may not stand
//!   raw in a path;
//! - the result is re-encoded one way: unreserved characters, sub-delimiters other than
//!   `;`, `:` and `@` stand raw, everything else is `%XX` (upper-case hex) of its UTF-8.
//!
//! Not for: the query string, which is passed on as it came.

use unicode_normalization::{IsNormalized, is_nfkc_quick};

/// A path in canonical form, with its decoded segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    encoded: String,
    segments: Vec<String>,
}

impl CanonicalPath {
    /// The canonical spelling, starting with `/` (what the gateway forwards).
    pub fn as_str(&self) -> &str {
        &self.encoded
    }

    /// The decoded segments; a trailing slash is not a segment (`/a/` → `["a"]`).
    pub fn segments(&self) -> &[String] {
        &self.segments
    }
}

impl std::fmt::Display for CanonicalPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encoded)
    }
}

/// Why a path is refused (a sentence for the 400 answer).
pub type PathError = &'static str;

const UNRESERVED: &[u8] = b"-_~";
/// Sub-delimiters and `:`/`@` that stand raw in a canonical segment (`;` never does).
const RAW_OK: &[u8] = b"!$&'()*+,=:@";

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || UNRESERVED.contains(&b)
}

/// Decode one segment (between slashes) into text, refusing what servers read differently.
fn decode_segment(raw: &str) -> Result<String, PathError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            ) else {
                return Err("the request path contains an invalid percent escape");
            };
            let d = hi << 4 | lo;
            match d {
                b'/' | b'\\' | b'.' | b'%' => {
                    return Err(
                        "the request path contains an encoded '/', '\\', '.' or '%', which servers read differently",
                    );
                }
                b';' => return Err("the request path contains ';' (path parameters)"),
                0..=0x1f | 0x7f => {
                    return Err("the request path contains a control character");
                }
                _ => out.push(d),
            }
            i += 3;
            continue;
        }
        match b {
            b';' => return Err("the request path contains ';' (path parameters)"),
            b'\\' => return Err("the request path contains a backslash"),
            b'.' => out.push(b),
            _ if is_unreserved(b) || RAW_OK.contains(&b) => out.push(b),
            0..=0x1f | 0x7f => return Err("the request path contains a control character"),
            _ => return Err("the request path contains a character that must be percent-encoded"),
        }
        i += 1;
    }
    let text =
        String::from_utf8(out).map_err(|_| "the request path is not valid UTF-8 once decoded")?;
    if text == "." || text == ".." {
        return Err("the request path contains a dot segment");
    }
    if text.ends_with('.') {
        return Err("a segment of the request path ends with '.'");
    }
    if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
        return Err("a segment of the request path begins or ends with white space");
    }
    if text.chars().any(char::is_control) {
        return Err("the request path contains a control character");
    }
    // ASP.NET's cookieless sessions drop `/(S(…))/` segments; NTFS reads `name::$DATA` and
    // `name:$INDEX_ALLOCATION` as `name`; IIS maps 8.3 short names (`ADMINI~1`).
    if text.starts_with('(') {
        return Err("a segment of the request path begins with '(' (ASP.NET cookieless sessions)");
    }
    if text.contains("::") || text.contains(":$") {
        return Err("the request path contains '::' or ':$' (NTFS alternate streams)");
    }
    if text
        .as_bytes()
        .windows(2)
        .any(|w| w[0] == b'~' && w[1].is_ascii_digit())
    {
        return Err("the request path contains '~' and a digit (8.3 short names)");
    }
    // Letters whose case mapping is ASCII (dotless ı, İ): case-insensitive matchers such
    // as Java's equalsIgnoreCase read `adm\u{131}n` as `admin`.
    // (Simple, one-letter mappings, as Java's: `ß` → `SS` is not one, `İ` → `i` is.)
    let ascii_case = |m: &mut dyn Iterator<Item = char>| {
        let (first, rest) = (m.next(), m.next());
        first.is_some_and(|f| f.is_ascii()) && rest.is_none()
    };
    if text.chars().any(|c| {
        !c.is_ascii()
            && (c == '\u{130}'
                || ascii_case(&mut c.to_uppercase())
                || ascii_case(&mut c.to_lowercase()))
    }) {
        return Err("the request path contains a letter whose case mapping is ASCII");
    }
    if !text.is_ascii() && is_nfkc_quick(text.chars()) != IsNormalized::Yes {
        use unicode_normalization::UnicodeNormalization;
        if text.nfkc().ne(text.chars()) {
            return Err(
                "the request path contains characters that Unicode normalisation would change",
            );
        }
    }
    Ok(text)
}

fn encode_segment(seg: &str, out: &mut String) {
    for &b in seg.as_bytes() {
        if is_unreserved(b) || b == b'.' || RAW_OK.contains(&b) {
            out.push(b as char);
        } else {
            const H: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(H[(b >> 4) as usize] as char);
            out.push(H[(b & 15) as usize] as char);
        }
    }
}

/// The canonical form of a request path (a query or fragment, if given, is ignored).
pub fn canonicalize(path_and_query: &str) -> Result<CanonicalPath, PathError> {
    let path = path_and_query.split(['?', '#']).next().unwrap_or("");
    let Some(body) = path.strip_prefix('/') else {
        return Err("the request path must start with '/'");
    };
    let (body, trailing) = match body.strip_suffix('/') {
        Some(b) => (b, true),
        None => (body, false),
    };
    let mut segments = Vec::new();
    let mut encoded = String::with_capacity(path.len());
    if !body.is_empty() {
        for raw in body.split('/') {
            if raw.is_empty() {
                return Err("the request path contains an empty segment ('//')");
            }
            let seg = decode_segment(raw)?;
            encoded.push('/');
            encode_segment(&seg, &mut encoded);
            segments.push(seg);
        }
    }
    if trailing || encoded.is_empty() {
        encoded.push('/');
    }
    Ok(CanonicalPath { encoded, segments })
}

/// For components that pass the request on as it came (the layer, the authorizer): the
/// path is accepted only when it is already in canonical form.
pub fn require_canonical(path_and_query: &str) -> Result<CanonicalPath, PathError> {
    let c = canonicalize(path_and_query)?;
    let raw = path_and_query.split(['?', '#']).next().unwrap_or("");
    if c.encoded != raw {
        return Err("the request path is not in canonical form (percent-encode only what must be)");
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (raw, want) in [
            ("/", "/"),
            ("/a/b?x=1", "/a/b"),
            ("/%61dmin/users", "/admin/users"),
            ("/admin/", "/admin/"),
            ("/caf%c3%a9", "/caf%C3%A9"),
            ("/a%20b", "/a%20b"),
            ("/x%2By", "/x+y"),
            ("/file.txt", "/file.txt"),
            ("/a%3Fb", "/a%3Fb"),
            ("/~u/_x-y", "/~u/_x-y"),
            ("/a:b/x(y)", "/a:b/x(y)"),
            ("/stra%C3%9Fe", "/stra%C3%9Fe"),
        ] {
            assert_eq!(
                canonicalize(raw).map(|c| c.encoded),
                Ok(want.into()),
                "{raw}"
            );
        }
        assert_eq!(
            canonicalize("/caf%C3%A9/x").unwrap().segments(),
            &["café".to_string(), "x".to_string()]
        );
    }

    #[test]
    fn ambiguous_spellings_are_refused() {
        for bad in [
            "x",
            "",
            "/admin;x=1/users",
            "/public/..;/admin",
            "/a%3bb",
            "/a/../admin",
            "/a/./b",
            "//admin",
            "/a//b",
            "/a%2fb",
            "/%2E%2E/x",
            "/a%2e",
            "/a\\b",
            "/a%5cb",
            "/a%25%36%31",
            "/a%00",
            "/admin./x",
            "/admin%20/x",
            "/admin%09/x",
            "/%20admin",
            "/a%0d%0a",
            "/a%ff",
            "/a%c3",
            "/a%zz",
            "/a%4",
            "/\u{0430}dmin",
            "/%EF%BD%81dmin",
            "/a b",
            "/a\"b",
            "/a%E2%80%A8",
            "/a%C2%A0",
            "/(S(x))/admin",
            "/admin::$INDEX_ALLOCATION/x",
            "/admin:$DATA",
            "/ADMINI~1/x",
            "/adm%C4%B1n",
            "/ADM%C4%B0N",
        ] {
            assert!(canonicalize(bad).is_err(), "{bad:?}");
        }
        assert!(require_canonical("/admin/x?y=%61").is_ok());
        assert!(require_canonical("/%61dmin").is_err());
        assert!(require_canonical("/caf%c3%a9").is_err());
    }
}

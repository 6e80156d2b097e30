//! `jotgate check serve|gateway|authorizer`: load a configuration as the command would,
//! touch nothing (the store is opened read-only: no schema, no key, no store id is
//! created), and report what would run and every problem found.

use std::net::SocketAddr;
use std::sync::Arc;

use jotgate_verify::policy::{Access, PolicyFile, Rule};
use serde_json::{Map, Value, json};

use crate::cli::{AuthorizerArgs, CheckArgs, CheckFormat, CheckTarget, GatewayArgs, ServeArgs};
use crate::settings::Settings;

#[derive(Default)]
struct Report {
    command: &'static str,
    summary: Map<String, Value>,
    notes: Vec<String>,
    problems: Vec<String>,
}

impl Report {
    fn set(&mut self, key: &str, value: impl Into<Value>) {
        self.summary.insert(key.to_string(), value.into());
    }

    fn problem(&mut self, e: impl std::fmt::Display) {
        self.problems.push(e.to_string());
    }

    fn error(&mut self, e: &anyhow::Error) {
        let text = crate::logging::render(e);
        let text = text.trim_start_matches("error: ").trim_end();
        self.problems.push(
            text.split('\n')
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" — "),
        );
    }

    fn render(&self, format: CheckFormat) -> String {
        if format == CheckFormat::Json {
            let v = json!({
                "command": self.command,
                "ok": self.problems.is_empty(),
                "summary": self.summary,
                "notes": self.notes,
                "problems": self.problems,
            });
            return format!("{v:#}\n");
        }
        let mut out = format!("jotgate check {}\n", self.command);
        let width = self.summary.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in &self.summary {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Array(items) => {
                    let lines: Vec<String> = items
                        .iter()
                        .map(|i| match i {
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        })
                        .collect();
                    if lines.is_empty() {
                        "(none)".into()
                    } else {
                        lines.join(&format!("\n  {:width$}  ", ""))
                    }
                }
                other => other.to_string(),
            };
            out.push_str(&format!("  {k:width$}  {shown}\n"));
        }
        for n in &self.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        if self.problems.is_empty() {
            out.push_str("ok: no problems found\n");
        } else {
            out.push_str(&format!("{} problem(s):\n", self.problems.len()));
            for p in &self.problems {
                out.push_str(&format!("  - {p}\n"));
            }
        }
        out
    }
}

/// Run the check; the text to print and whether all is well.
pub async fn run(args: CheckArgs) -> (String, bool) {
    crate::init_crypto();
    let mut r = Report::default();
    match args.target {
        CheckTarget::Serve(a) => serve(*a, &mut r).await,
        CheckTarget::Gateway(a) => gateway(a, &mut r).await,
        CheckTarget::Authorizer(a) => authorizer(a, &mut r).await,
    }
    (r.render(args.format), r.problems.is_empty())
}

fn try_bind(r: &mut Report, addr: SocketAddr) {
    match std::net::TcpListener::bind(addr) {
        Ok(_) => {}
        // Likely the running instance whose configuration is being checked.
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => r.notes.push(format!(
            "something already listens on {addr} (the running instance?): a second one could not start there"
        )),
        Err(e) => r.problem(format!("cannot listen on {addr}: {e}")),
    }
}

async fn serve(args: ServeArgs, r: &mut Report) {
    r.command = "serve";
    let plain = args.settings();
    let s = match plain.clone().resolve_secret_refs().await {
        Ok(s) => s,
        Err(e) => {
            r.error(&e);
            plain
        }
    };
    let listen = s.listen();
    let tls = match s.tls() {
        Ok(Some((cert, key))) => {
            if let Err(e) = crate::serve::tls_acceptor(&cert, &key) {
                r.error(&e);
            }
            true
        }
        Ok(None) => false,
        Err(e) => {
            r.error(&e);
            false
        }
    };
    r.set(
        "listen",
        format!("{}://{listen}", if tls { "https" } else { "http" }),
    );
    try_bind(r, listen);
    if let Err(e) = s.conn_limits() {
        r.error(&e);
    }
    let policy = match s.policy() {
        Ok(p) => {
            r.set("issuer", p.issuer.clone());
            r.set("audience", p.audience.clone());
            r.set("access_ttl", format!("{} s", p.access_ttl));
            Some(p)
        }
        Err(e) => {
            r.error(&e);
            None
        }
    };
    match s.server_config() {
        Ok(c) => {
            r.set("signup", if c.signup_open { "open" } else { "closed" });
            r.set(
                "limits",
                format!(
                    "{} wrong passwords per username and {} per address before 429; {} hashing workers, {} queued; {} sessions per user",
                    c.rate_limit.user_free_failures,
                    c.rate_limit.ip_free_failures,
                    c.hash_workers,
                    c.hash_queue,
                    c.max_sessions
                ),
            );
            r.set(
                "revocation_feed",
                if c.feed_token.is_some() {
                    "open (feed_token set)"
                } else {
                    "closed"
                },
            );
        }
        Err(e) => r.error(&e),
    }
    if let Err(e) = s.password_hasher() {
        r.error(&e);
    }
    let shared_secret = match s.key_source() {
        Ok(jotgate_server::KeySource::SharedSecret(_)) => true,
        Ok(_) => false,
        Err(e) => {
            r.error(&e);
            false
        }
    };
    store(&s, policy.as_ref(), shared_secret, r).await;
}

/// The store's kind and location, its state, and its keys — read, never written.
async fn store(
    s: &Settings,
    policy: Option<&jotgate_core::TokenPolicy>,
    shared_secret: bool,
    r: &mut Report,
) {
    let master = match crate::master_keys(s) {
        Ok(m) => m,
        Err(e) => {
            r.error(&e);
            None
        }
    };
    let store = match crate::open_existing(s).await {
        Ok(Some(store)) => store,
        Ok(None) => {
            r.set("store", crate::store_location(s));
            r.notes.push(
                "fresh store: `jotgate serve` creates its schema (or table) and a signing key on first start".into(),
            );
            return;
        }
        Err(e) => {
            r.set("store", crate::store_location(s));
            r.error(&e);
            return;
        }
    };
    r.set("store", store.describe());
    if shared_secret {
        r.set("keys", "HS256 shared secret (nothing published)");
        return;
    }
    let keys = match store.keys().await {
        Ok(k) => k,
        Err(e) => {
            r.problem(format!("cannot read the signing keys: {e}"));
            return;
        }
    };
    if keys.is_empty() {
        r.notes
            .push("no signing key yet: `jotgate serve` generates one on first start".into());
    }
    let id = store.store_id(false).await.ok().flatten();
    let now = jotgate_server::now();
    let statuses = policy
        .map(|p| jotgate_server::keyring::statuses(&keys, p, now))
        .unwrap_or_default();
    let mut lines = Vec::new();
    let mut unsealed = 0;
    for (i, k) in keys.iter().enumerate() {
        let status = statuses.get(i).map_or("?", |s| s.as_str());
        let sealed = jotgate_core::seal::is_sealed(&k.private_der);
        let at_rest = if sealed { "encrypted" } else { "unencrypted" };
        lines.push(format!("{} {} {status} ({at_rest})", k.kid, k.alg));
        if !sealed {
            unsealed += 1;
            continue;
        }
        match (&master, &id) {
            (None, _) => r.problem(format!(
                "key {} is encrypted at rest, and no master key is set (JOTGATE_MASTER_KEY)",
                k.kid
            )),
            (Some(m), Some(id)) => {
                if let Err(e) = m.open(id, &k.kid, &k.alg, &k.private_der) {
                    r.problem(format!(
                        "key {} does not open with the master keys: {e}",
                        k.kid
                    ));
                }
            }
            (Some(_), None) => r.problem(format!(
                "key {} is sealed, but the store has no id to open it with",
                k.kid
            )),
        }
    }
    if master.is_some() && unsealed > 0 {
        r.problem(format!(
            "{unsealed} signing key(s) stored unencrypted while a master key is set: run `jotgate keys seal`"
        ));
    }
    r.set("keys", lines);
}

fn describe_rule(rule: &Rule) -> String {
    let mut parts = vec![
        match rule.access {
            Access::Public => "public",
            Access::Authenticated => "a valid token",
            Access::Deny => "denied",
        }
        .to_string(),
    ];
    let list = |l: &[String]| l.join(" ");
    if !rule.scopes_any.is_empty() {
        parts.push(format!("any scope of: {}", list(&rule.scopes_any)));
    }
    if !rule.scopes_all.is_empty() {
        parts.push(format!("all scopes: {}", list(&rule.scopes_all)));
    }
    if !rule.roles_any.is_empty() {
        parts.push(format!("any role of: {}", list(&rule.roles_any)));
    }
    if !rule.roles_all.is_empty() {
        parts.push(format!("all roles: {}", list(&rule.roles_all)));
    }
    parts.join("; ")
}

/// The policy's routes and every issuer's keys, fetched once.
async fn policy(file: &PolicyFile, verifier: &Arc<jotgate_verify::Verifier>, r: &mut Report) {
    let mut routes: Vec<String> = file
        .policy
        .routes
        .iter()
        .map(|route| {
            let methods = if route.methods.is_empty() {
                "*".to_string()
            } else {
                route.methods.join(",")
            };
            format!(
                "{methods} {} → {}",
                route.path.as_str(),
                describe_rule(&route.rule)
            )
        })
        .collect();
    routes.push(format!(
        "(default) → {}",
        describe_rule(&file.policy.default)
    ));
    r.set("routes", routes);
    let mut issuers = Vec::new();
    for (name, result) in verifier.probe_issuers().await {
        let feed = file
            .verifier
            .issuers
            .iter()
            .find(|i| i.issuer == name)
            .and_then(|i| i.revocation_feed.as_ref())
            .map_or(String::new(), |f| format!("; revocation feed {}", f.url));
        match result {
            Ok(kids) => issuers.push(format!("{name}: keys {}{feed}", kids.join(", "))),
            Err(e) => {
                issuers.push(format!("{name}: no keys{feed}"));
                r.problem(format!("issuer {name}: cannot get its keys: {e}"));
            }
        }
    }
    r.set("issuers", issuers);
}

/// The policy file's path, in the summary; `None` (a problem) without one.
fn policy_path(edge: &crate::cli::EdgeSettings, r: &mut Report) -> Option<std::path::PathBuf> {
    match edge.policy() {
        Ok(p) => {
            r.set("policy", p.display().to_string());
            Some(p.to_path_buf())
        }
        Err(e) => {
            r.error(&e);
            None
        }
    }
}

async fn gateway(args: GatewayArgs, r: &mut Report) {
    r.command = "gateway";
    let listen = args.gateway_listen.unwrap_or(crate::edge::GATEWAY_LISTEN);
    r.set("listen", format!("http://{listen}"));
    try_bind(r, listen);
    let limits = Settings {
        conn: args.conn.clone(),
        ..Settings::default()
    }
    .conn_limits();
    if let Err(e) = &limits {
        r.error(e);
    }
    let upstream = match args.upstream() {
        Ok(u) => {
            r.set("upstream", u);
            Some(u.to_string())
        }
        Err(e) => {
            r.error(&e);
            None
        }
    };
    let Some(path) = policy_path(&args.edge, r) else {
        return;
    };
    match crate::edge::load_policy(&path) {
        Ok((verifier, file)) => {
            if let Some(upstream) = upstream
                && let Err(e) = jotgate_verify::gateway::router(
                    verifier.clone(),
                    jotgate_verify::gateway::GatewayConfig {
                        upstream,
                        policy: file.policy.clone(),
                        headers: file.headers.clone(),
                        options: file.gateway.clone(),
                        upstream_timeout: std::time::Duration::from_secs(60),
                    },
                )
            {
                r.problem(format!("invalid setting upstream: {e}"));
            }
            policy(&file, &verifier, r).await;
        }
        Err(e) => r.error(&e),
    }
}

async fn authorizer(args: AuthorizerArgs, r: &mut Report) {
    r.command = "authorizer";
    let feed = match (Settings {
        feed: args.feed.clone(),
        ..Settings::default()
    })
    .resolve_secret_refs()
    .await
    {
        Ok(s) => s.feed.feed_token,
        Err(e) => {
            r.error(&e);
            None
        }
    };
    r.set(
        "http_api_format",
        match args.format.v2() {
            jotgate_verify::authorizer::V2Format::Iam => "iam",
            jotgate_verify::authorizer::V2Format::Simple => "simple",
        },
    );
    let Some(path) = policy_path(&args.edge, r) else {
        return;
    };
    match crate::edge::load_authorizer_policy(&path, feed.as_ref()) {
        Ok((verifier, file)) => policy(&file, &verifier, r).await,
        Err(e) => r.error(&e),
    }
}

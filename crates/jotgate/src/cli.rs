//! The command line: every command with the groups of settings it reads, and the layering
//! of the TOML file under the environment and the flags.
//!
//! A *setting* is an argument with a `JOTGATE_*` variable. Its TOML key is that variable
//! without the prefix, in lower case. The config file is applied as the settings' default
//! values before clap parses, so clap's own order — flag, then variable, then default —
//! gives file < environment < flag for every setting, with no list to keep in step.
//! A key no command knows stops start-up; a key (or variable) meant for another command
//! is validated with that command's parser and otherwise ignored, so one file serves all.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::settings::{
    ApiSettings, ConnSettings, FeedSettings, ListenSettings, LoginSettings, PasswordSettings,
    SealSettings, SessionSettings, Settings, StoreSettings, TokenSettings,
};

#[derive(Parser, Debug)]
#[command(
    name = "jotgate",
    version,
    about = "Serverless-first authentication for APIs: issues and verifies JWTs.",
    long_about = "Serverless-first authentication for APIs: issues and verifies JWTs.\n\n\
        Settings come from built-in defaults, then the TOML file given with --config, then \
        JOTGATE_* environment variables, then flags. Each command takes only the settings it \
        reads (`jotgate serve --help`). With no settings at all, `jotgate serve` listens on \
        127.0.0.1:8080, keeps its data in ./jotgate.db (created on first start) and generates \
        an RS256 signing key there on first start.",
    after_help = "Logging: set JOTGATE_LOG (e.g. JOTGATE_LOG=debug); default info."
)]
pub struct Cli {
    /// TOML configuration file: keys are the settings' variables without JOTGATE_, in lower
    /// case (JOTGATE_ACCESS_TTL → access_ttl); one file may serve every command
    #[arg(
        long,
        short = 'c',
        env = "JOTGATE_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Log line format: text, or json (one object per line, for CloudWatch and log
    /// shippers) [default: json under AWS Lambda, else text]
    #[arg(
        long,
        env = "JOTGATE_LOG_FORMAT",
        global = true,
        value_name = "text|json"
    )]
    pub log_format: Option<LogFormat>,

    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the HTTP server (sign-up, login, refresh, JWKS, OpenID discovery)
    Serve(Box<ServeArgs>),
    /// Check a configuration without running it: settings, store, keys, policy, issuers
    ///
    /// Loads what `serve`, `gateway` or `authorizer` would load (same settings), connects
    /// to the store read-only (no schema creation, no key generation), fetches every
    /// third-party JWKS, prints what would run and every problem found. Exit 0 when all is
    /// well, 1 otherwise.
    Check(CheckArgs),
    /// Manage accounts
    #[command(subcommand)]
    Users(UsersCmd),
    /// Manage roles: named bags of scopes that tokens carry
    #[command(subcommand)]
    Roles(RolesCmd),
    /// Manage machine clients (OAuth 2.0 client credentials at POST /oauth/token)
    #[command(subcommand)]
    Clients(ClientsCmd),
    /// Read the audit log (security events)
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Manage signing keys
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Work with tokens
    #[command(subcommand)]
    Token(TokenCmd),
    /// Run a reverse proxy that verifies tokens before forwarding to an upstream
    ///
    /// Verifies Bearer tokens of the policy file's issuers, applies its route rules, and
    /// forwards allowed requests to --upstream with the verified identity in X-Jotgate-*
    /// headers (docs/edge.md).
    Gateway(GatewayArgs),
    /// Run as an AWS API Gateway Lambda authorizer
    ///
    /// Answers REST API TOKEN/REQUEST and HTTP API authorizer events from the Lambda
    /// Runtime API (AWS_LAMBDA_RUNTIME_API and the AWS_LAMBDA_FUNCTION_* variables, set by
    /// Lambda), deciding with the policy file (docs/edge.md).
    Authorizer(AuthorizerArgs),
    /// Run as an AWS Lambda function (what the bootstrap does when started without arguments)
    ///
    /// --mode api (default) serves the HTTP API to API Gateway REST APIs, HTTP APIs and
    /// function URLs; --mode authorizer is `jotgate authorizer` (needs JOTGATE_POLICY).
    /// JOTGATE_ISSUER is required in api mode (docs/lambda.md).
    Lambda(Box<LambdaArgs>),
}

/// The service's own settings, read by `serve` and by `lambda` (api mode).
#[derive(clap::Args, Debug, Clone)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub seal: SealSettings,
    #[command(flatten)]
    pub tokens: TokenSettings,
    #[command(flatten)]
    pub sessions: SessionSettings,
    #[command(flatten)]
    pub passwords: PasswordSettings,
    #[command(flatten)]
    pub api: ApiSettings,
    #[command(flatten)]
    pub login: LoginSettings,
    #[command(flatten)]
    pub feed: FeedSettings,
}

impl ServiceArgs {
    pub fn settings(self) -> Settings {
        Settings {
            store: self.store,
            seal: self.seal,
            tokens: self.tokens,
            sessions: self.sessions,
            passwords: self.passwords,
            api: self.api,
            login: self.login,
            feed: self.feed,
            ..Settings::default()
        }
    }
}

/// Everything `serve` reads: the service and its socket.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub listen: ListenSettings,
    #[command(flatten)]
    pub conn: ConnSettings,
}

impl ServeArgs {
    pub fn settings(self) -> Settings {
        Settings {
            listen: self.listen,
            conn: self.conn,
            ..self.service.settings()
        }
    }
}

/// The policy file of the edge commands.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Edge")]
pub struct EdgeSettings {
    /// Policy file: trusted issuers and route rules (docs/policy.md)
    #[arg(long, env = "JOTGATE_POLICY", value_name = "FILE")]
    pub policy: Option<PathBuf>,
}

impl EdgeSettings {
    pub fn policy(&self) -> anyhow::Result<&Path> {
        self.policy.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "missing setting policy: give --policy FILE, JOTGATE_POLICY or `policy` in the config file"
            )
        })
    }
}

/// Everything `gateway` reads.
#[derive(clap::Args, Debug, Clone)]
pub struct GatewayArgs {
    /// Address to listen on (its own setting, so one config file can hold the server's
    /// `listen` too) [default: 127.0.0.1:8081]
    #[arg(
        long = "listen",
        env = "JOTGATE_GATEWAY_LISTEN",
        value_name = "ADDR",
        help_heading = "Gateway"
    )]
    pub gateway_listen: Option<std::net::SocketAddr>,
    /// Where requests go: http://host:port[/base]
    #[arg(
        long,
        env = "JOTGATE_UPSTREAM",
        value_name = "URL",
        help_heading = "Gateway"
    )]
    pub upstream: Option<String>,
    #[command(flatten)]
    pub edge: EdgeSettings,
    #[command(flatten)]
    pub conn: ConnSettings,
}

impl GatewayArgs {
    pub fn upstream(&self) -> anyhow::Result<&str> {
        self.upstream.as_deref().ok_or_else(|| {
            anyhow::anyhow!(
                "missing setting upstream: give --upstream URL, JOTGATE_UPSTREAM or `upstream` in the config file"
            )
        })
    }
}

/// The authorizer's response format for HTTP API events.
#[derive(clap::Args, Debug, Clone)]
#[command(next_help_heading = "Edge")]
pub struct FormatArg {
    /// Response format for HTTP API (payload 2.0) events: simple or iam [default: simple]
    #[arg(
        long = "authorizer-format",
        env = "JOTGATE_AUTHORIZER_FORMAT",
        value_name = "simple|iam"
    )]
    pub authorizer_format: Option<AuthorizerFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthorizerFormat {
    Simple,
    Iam,
}

impl FormatArg {
    pub fn v2(&self) -> jotgate_verify::authorizer::V2Format {
        match self.authorizer_format {
            Some(AuthorizerFormat::Iam) => jotgate_verify::authorizer::V2Format::Iam,
            _ => jotgate_verify::authorizer::V2Format::Simple,
        }
    }
}

/// Everything `authorizer` reads.
#[derive(clap::Args, Debug, Clone)]
pub struct AuthorizerArgs {
    #[command(flatten)]
    pub edge: EdgeSettings,
    #[command(flatten)]
    pub format: FormatArg,
    #[command(flatten)]
    pub feed: FeedSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LambdaMode {
    Api,
    Authorizer,
}

/// Everything `lambda` reads: the service's settings (api mode) and the authorizer's.
#[derive(clap::Args, Debug, Clone)]
pub struct LambdaArgs {
    /// api or authorizer [default: api]
    #[arg(
        long = "mode",
        env = "JOTGATE_LAMBDA_MODE",
        value_name = "api|authorizer",
        help_heading = "Lambda"
    )]
    pub lambda_mode: Option<LambdaMode>,
    #[command(flatten)]
    pub service: ServiceArgs,
    #[command(flatten)]
    pub edge: EdgeSettings,
    #[command(flatten)]
    pub format: FormatArg,
}

impl LambdaArgs {
    pub fn settings(&self) -> Settings {
        self.service.clone().settings()
    }
}

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Output: text, or json (one object: settings summary, problems) for scripts
    #[arg(long, global = true, default_value = "text", value_name = "text|json")]
    pub format: CheckFormat,
    #[command(subcommand)]
    pub target: CheckTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CheckFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum CheckTarget {
    /// Check what `jotgate serve` would run
    Serve(Box<ServeArgs>),
    /// Check what `jotgate gateway` would run
    Gateway(GatewayArgs),
    /// Check what `jotgate authorizer` would run
    Authorizer(AuthorizerArgs),
}

/// The store, key and token settings of the commands that read keys.
#[derive(clap::Args, Debug, Clone)]
pub struct AdminArgs {
    #[command(flatten)]
    pub store: StoreSettings,
    #[command(flatten)]
    pub seal: SealSettings,
    #[command(flatten)]
    pub tokens: TokenSettings,
}

impl AdminArgs {
    pub fn settings(self) -> Settings {
        Settings {
            store: self.store,
            seal: self.seal,
            tokens: self.tokens,
            ..Settings::default()
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum UsersCmd {
    /// Create an account; the password is read from the first line of stdin
    Add {
        /// Username (case-insensitive, Unicode-normalised; the spelling is kept for display)
        username: String,
        /// Role to grant (repeatable), e.g. --role admin
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        /// Email address (unverified until --email-verified true is set with `users update`)
        #[arg(long)]
        email: Option<String>,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        passwords: PasswordSettings,
    },
    /// Change a user's email address, its verification or the block. Blocking ends the
    /// user's sessions and refuses their login (403 user_blocked)
    Update {
        /// Username or email address
        username: String,
        /// New email address (unverified unless --email-verified true is given too)
        #[arg(long, conflicts_with = "no_email")]
        email: Option<String>,
        /// Remove the email address
        #[arg(long)]
        no_email: bool,
        /// Mark the address verified (true) or not (false)
        #[arg(long, value_name = "BOOL")]
        email_verified: Option<bool>,
        /// Block (true) or unblock (false) the account
        #[arg(long, value_name = "BOOL")]
        blocked: Option<bool>,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        tokens: TokenSettings,
    },
    /// Show what holds a user's login back: each address past the per-address limit of
    /// wrong passwords, and every address once the hourly ceiling is reached
    Blocks {
        /// Username or email address
        username: String,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        login: LoginSettings,
    },
    /// Lift the login limits' blocks on a user (from every address, and the hourly
    /// ceiling); the account block is `users update --blocked false`
    Unblock {
        /// Username or email address
        username: String,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        login: LoginSettings,
    },
    /// Log a user out everywhere: end all sessions, refuse all access tokens issued so far
    Revoke {
        /// Username
        username: String,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        tokens: TokenSettings,
    },
    /// List accounts
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreSettings,
    },
    /// Replace a user's roles. Losing a role or a scope ends the user's sessions and
    /// refuses their access tokens issued so far; the next login carries the new roles
    SetRoles {
        /// Username
        username: String,
        /// Role the user holds afterwards (repeatable; none: no roles)
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        tokens: TokenSettings,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum ClientsCmd {
    /// Register a machine client; prints its client_id and client_secret (shown once: only
    /// a hash is kept). With management scopes (read:users, …) the management audience
    /// (ISSUER/api/v1/) is registered and, unless --audience comes first, its default
    Add {
        /// A name for people (e.g. "purchase webhook")
        name: String,
        /// Scopes the client may ask for, space-separated; repeatable
        #[arg(long, value_name = "SCOPES")]
        scopes: Vec<String>,
        /// An audience the client may ask tokens for (repeatable; the first is its default;
        /// default: the application's audience)
        #[arg(long = "audience", value_name = "URL")]
        audiences: Vec<String>,
        /// Output: text, or one JSON object with client_id and client_secret
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        /// Issuer of tokens (names the management audience, ISSUER/api/v1/)
        /// [default: http(s)://<listen address>]
        #[arg(
            long,
            env = "JOTGATE_ISSUER",
            value_name = "URL",
            help_heading = "Tokens"
        )]
        issuer: Option<String>,
        /// The application's audience (`audience` in the config file; the flag is named
        /// apart from the client's --audience) [default: jotgate]
        #[arg(
            long = "app-audience",
            env = "JOTGATE_AUDIENCE",
            value_name = "AUDIENCE",
            help_heading = "Tokens"
        )]
        app_audience: Option<String>,
        #[command(flatten)]
        store: StoreSettings,
    },
    /// List machine clients (never their secrets)
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreSettings,
    },
    /// Give a client a new secret (printed once); the old one stops working and the tokens
    /// it holds are refused
    RotateSecret {
        /// Client id (cl_…)
        client_id: String,
        /// Output: text, or one JSON object with client_id and client_secret
        #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
        format: OutputFormat,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        tokens: TokenSettings,
    },
    /// Delete a client; the tokens it holds are refused
    Delete {
        /// Client id (cl_…)
        client_id: String,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        tokens: TokenSettings,
    },
}

#[derive(Subcommand, Debug)]
pub enum AuditCmd {
    /// The latest security events, newest first
    Tail {
        /// How far back, in seconds [default: 86400]
        #[arg(long, value_name = "SECS", default_value_t = 86_400)]
        since: i64,
        /// Only events of this type (login.failed, role.changed, …)
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// Only events about this user (or client) id
        #[arg(long, value_name = "ID")]
        user: Option<String>,
        /// At most this many events
        #[arg(long, value_name = "COUNT", default_value_t = 50)]
        limit: usize,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreSettings,
    },
}

#[derive(Subcommand, Debug)]
pub enum RolesCmd {
    /// Create or replace a role. A token carries its holder's role names in `roles` and
    /// the union of their scopes in `scope`; when a role loses a scope, its holders'
    /// sessions end
    Set {
        /// Role name (lowercase letters, digits, '-', '_', ':')
        name: String,
        /// The role's scopes, space-separated (e.g. --scopes "reports:read api:read");
        /// repeatable
        #[arg(long, value_name = "SCOPES", required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        tokens: TokenSettings,
    },
    /// List roles and their scopes
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        store: StoreSettings,
    },
    /// Delete a role: it is taken from every user holding it, and their sessions end
    Delete {
        /// Role name
        name: String,
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        tokens: TokenSettings,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// List signing keys and their status (signing, next, published, expired)
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Generate a new signing key. It is published in the JWKS at once and signs after
    /// --activate-in seconds, so verifiers that cache the JWKS learn it first
    Rotate {
        /// Algorithm of the new key: RS256, ES256 or EdDSA [default: the configured alg]
        #[arg(long = "key-alg", value_name = "ALG")]
        key_alg: Option<String>,
        /// Seconds until the new key starts signing (the JWKS is cached for 300 s)
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        activate_in: i64,
        /// Start signing with the new key immediately (same as --activate-in 0)
        #[arg(long, conflicts_with = "activate_in")]
        now: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Import a private key (PEM: PKCS#8, PKCS#1 or SEC1; or a private JWK), e.g. when
    /// migrating from another issuer. It signs from now on unless --activate-in is given
    Import {
        /// File holding the key ("-" for stdin)
        file: PathBuf,
        /// Key id to publish (default: the JWK's kid, else the RFC 7638 thumbprint)
        #[arg(long)]
        kid: Option<String>,
        /// Seconds until the imported key starts signing
        #[arg(long, default_value_t = 0, value_name = "SECS")]
        activate_in: i64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Stop signing with a key; it stays published until its last token expires, and a
    /// token it signs after now is refused. Retiring the signing key generates a successor
    Retire {
        /// Key id (it may begin with '-': kids are base64url)
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Encrypt every signing key stored unencrypted with the master key (JOTGATE_MASTER_KEY);
    /// with a master key set, an unencrypted key is refused until then
    Seal {
        #[command(flatten)]
        store: StoreSettings,
        #[command(flatten)]
        seal: SealSettings,
    },
    /// Withdraw a (compromised) key at once: it leaves the JWKS, every token it signed is
    /// refused by servers, gateways and authorizers (through the revocation feed). Revoking
    /// the signing key generates a successor
    Revoke {
        /// Key id (it may begin with '-': kids are base64url)
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Verify an access token and print its claims
    ///
    /// With --issuer URL on the command line: against that OpenID Connect issuer's
    /// published keys (discovery → JWKS; any issuer; revocations not consulted; --audience
    /// checked if given). Otherwise: against this deployment's store, keys and revocations,
    /// for the configured issuer (JOTGATE_ISSUER or `issuer` in the config file; without
    /// one, serve's default http://127.0.0.1:8080, which the output names).
    Verify {
        /// The JWT ("-" to read it from stdin)
        jwt: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// A parsed command line: the command, and whether `token verify --issuer` came from the
/// command line (verify against that remote issuer).
pub struct Parsed {
    pub cli: Cli,
    pub remote_issuer: bool,
}

/// Parse `args` (the first is the program name) with the config file, the environment
/// and secret files applied. Errors from clap (usage, `--help`, `--version`) come back as
/// `clap::Error` inside the `anyhow::Error` so the caller can let clap print them.
pub fn parse(args: Vec<OsString>) -> anyhow::Result<Parsed> {
    let mut config = config_path(&args);
    let mut rounds = 0;
    let (cmd, matches) = loop {
        rounds += 1;
        let mut cmd = Cli::command();
        if let Some(path) = &config {
            cmd = apply_config_file(cmd, path)?;
        }
        let argv = read_secret_files(&cmd, args.clone())?;
        let matches = cmd.clone().try_get_matches_from(argv)?;
        // The pre-scan reads only `-c FILE`, `--config FILE` and `--config=FILE`; a file
        // that clap found another way (`-cFILE`) is applied too, by parsing again.
        let found = matches.get_one::<PathBuf>("config").cloned();
        if found == config || rounds > 2 {
            break (cmd, matches);
        }
        config = found;
    };
    check_environment(&cmd)?;
    refuse_password_flags(&matches)?;
    let remote_issuer = matches
        .subcommand_matches("token")
        .and_then(|t| t.subcommand_matches("verify"))
        .and_then(|v| v.value_source("issuer"))
        == Some(clap::parser::ValueSource::CommandLine);
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(Parsed { cli, remote_issuer })
}

/// Every setting of every command, with the path of subcommands that holds it.
pub fn settings_args(cmd: &Command) -> Vec<(Vec<String>, Arg)> {
    fn walk(cmd: &Command, path: &mut Vec<String>, out: &mut Vec<(Vec<String>, Arg)>) {
        for a in cmd.get_arguments() {
            if toml_key(a).is_some() {
                out.push((path.clone(), a.clone()));
            }
        }
        for sc in cmd.get_subcommands() {
            path.push(sc.get_name().to_string());
            walk(sc, path, out);
            path.pop();
        }
    }
    let mut out = Vec::new();
    walk(cmd, &mut Vec::new(), &mut out);
    out
}

/// The TOML key of a setting: its variable without `JOTGATE_`, lower case. `None` for
/// arguments that are not settings (no variable) and for the config file itself.
pub fn toml_key(a: &Arg) -> Option<String> {
    let env = a.get_env()?.to_str()?;
    let key = env.strip_prefix("JOTGATE_")?.to_ascii_lowercase();
    (key != "config").then_some(key)
}

/// A secret setting: its variable's value is hidden, and its flag names a file
/// (`--pepper-file`). The store URL hides its value too (it may carry a password) but its
/// flag takes the URL: see [`refuse_password_flags`].
pub fn is_secret(a: &Arg) -> bool {
    a.is_hide_env_values_set() && a.get_long().is_some_and(|l| l.ends_with("-file"))
}

/// A value to show in messages: secrets' and the store URL's never.
fn shown(a: &Arg, v: &str) -> String {
    if a.is_hide_env_values_set() {
        "(hidden)".into()
    } else {
        format!("{v:?}")
    }
}

fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(s) = a.to_str() else { continue };
        if s == "--" {
            break;
        }
        if s == "--config" || s == "-c" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
        // Only the exact `-c PATH`: `-cPATH` would also match a kid given to `keys revoke`
        // (kids may begin with `-`). clap still accepts `-cPATH` for the file it reads.
    }
    std::env::var_os("JOTGATE_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The line of `key = …` in a TOML text, for error messages.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

/// Read the config file and make its values the settings' defaults, in every command
/// that has them. Each value is checked with the parser of every command that reads it.
pub fn apply_config_file(cmd: Command, path: &Path) -> anyhow::Result<Command> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // The parser's own text quotes the offending line, which may hold a secret:
        // say where and what, never the line.
        let line = e.span().map_or(0, |s| {
            text[..s.start.min(text.len())].lines().count().max(1)
        });
        anyhow::anyhow!(
            "invalid config file {} line {line}: {}",
            path.display(),
            e.message().trim_end()
        )
    })?;
    let known = settings_args(&cmd);
    let mut values: BTreeMap<String, String> = BTreeMap::new();
    for (key, value) in &table {
        let line = line_of(&text, key);
        let hits: Vec<&(Vec<String>, Arg)> = known
            .iter()
            .filter(|(_, a)| toml_key(a).as_deref() == Some(key.as_str()))
            .collect();
        if hits.is_empty() {
            let mut keys: Vec<String> = known.iter().filter_map(|(_, a)| toml_key(a)).collect();
            keys.sort();
            keys.dedup();
            let near = keys
                .iter()
                .find(|k| similar(k, key))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            bail!(
                "invalid config file {} line {line}: unknown key `{key}`{near}; the keys are the settings' variables without JOTGATE_, in lower case (docs/configuration.md)",
                path.display()
            );
        }
        let v = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            _ => bail!(
                "invalid config file {} line {line}: `{key}` must be a string, a number or a boolean",
                path.display()
            ),
        };
        for (sub, arg) in hits {
            let _ = sub;
            if let Err(e) = validate(arg, OsStr::new(&v)) {
                bail!(
                    "invalid config file {} line {line}: `{key}` = {}: {}",
                    path.display(),
                    shown(arg, &v),
                    why(&e)
                );
            }
        }
        values.insert(key.clone(), v);
    }
    Ok(with_defaults(cmd, &values))
}

fn similar(a: &str, b: &str) -> bool {
    // One edit apart (a typo such as `sigup` for `signup`).
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a.len().abs_diff(b.len()) > 1 {
        return false;
    }
    let (mut i, mut j, mut edits) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        if a[i] == b[j] {
            i += 1;
            j += 1;
            continue;
        }
        edits += 1;
        if edits > 1 {
            return false;
        }
        match a.len().cmp(&b.len()) {
            std::cmp::Ordering::Greater => i += 1,
            std::cmp::Ordering::Less => j += 1,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    edits + (a.len() - i) + (b.len() - j) <= 1
}

/// A value parser's complaint, without clap's probe flag and usage hints.
fn why(e: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let mut out = match e.kind() {
        clap::error::ErrorKind::InvalidValue => "not one of the accepted values".to_string(),
        _ => String::new(),
    };
    if let Some(ContextValue::String(s)) = e.get(ContextKind::Custom) {
        out = s.clone();
    }
    if let Some(ContextValue::Strings(v)) = e.get(ContextKind::ValidValue) {
        out = format!("expected one of: {}", v.join(", "));
    }
    if out.is_empty() {
        out = e
            .to_string()
            .lines()
            .next()
            .unwrap_or("")
            .trim_start_matches("error: ")
            .replace(" for '--value <value>'", "");
    }
    out
}

/// Check `value` with the parser of setting `arg` (clap keeps the parser's own entry point
/// private: a one-argument command runs it).
fn validate(arg: &Arg, value: &OsStr) -> Result<(), clap::Error> {
    let probe = Command::new("jotgate").no_binary_name(true).arg(
        Arg::new("value")
            .long("value")
            .value_parser(arg.get_value_parser().clone())
            .num_args(1)
            .allow_hyphen_values(true),
    );
    let mut flag = OsString::from("--value=");
    flag.push(value);
    probe.try_get_matches_from([flag]).map(|_| ())
}

fn with_defaults(cmd: Command, values: &BTreeMap<String, String>) -> Command {
    let ids: Vec<(String, bool, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let key = toml_key(a)?;
            let v = values.get(&key)?;
            Some((
                a.get_id().to_string(),
                a.is_hide_env_values_set(),
                v.clone(),
            ))
        })
        .collect();
    let mut cmd = cmd;
    for (id, secret, v) in ids {
        // The file is read once per process: leaking its few values is the simplest way
        // to hand clap the 'static defaults it keeps.
        let v: &'static str = Box::leak(v.into_boxed_str());
        cmd = cmd.mut_arg(id, |a| {
            // The help says where the value now comes from, instead of the built-in default.
            let help = a.get_help().map(ToString::to_string).unwrap_or_default();
            let from = if secret {
                "[set in the config file]".to_string()
            } else {
                format!("[config file: {v}]")
            };
            let help = match (help.find("[default:"), help.rfind(']')) {
                (Some(i), Some(j)) if j > i => format!("{}{from}{}", &help[..i], &help[j + 1..]),
                _ => format!("{help} {from}"),
            };
            a.default_value(v).hide_default_value(true).help(help)
        });
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, |sc| with_defaults(sc, values));
    }
    cmd
}

/// Secrets never travel in argv (`ps` shows it): a secret's flag names a file, read here
/// and handed to the parser as the value.
fn read_secret_files(cmd: &Command, args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let longs: Vec<String> = settings_args(cmd)
        .iter()
        .filter(|(_, a)| is_secret(a))
        .filter_map(|(_, a)| a.get_long().map(|l| format!("--{l}")))
        .collect();
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    if let Some(program) = it.next() {
        out.push(program);
    }
    while let Some(a) = it.next() {
        let bytes = a.as_encoded_bytes();
        if bytes == b"--" {
            out.push(a);
            out.extend(it);
            break;
        }
        // `--pepper-file PATH` or `--pepper-file=PATH`, compared as bytes so that a path
        // that is not UTF-8 is still a path, never taken for the secret.
        let found = longs.iter().find_map(|l| {
            let lb = l.as_bytes();
            if bytes == lb {
                Some((l.clone(), false))
            } else if bytes.len() > lb.len() && bytes.starts_with(lb) && bytes[lb.len()] == b'=' {
                Some((l.clone(), true))
            } else {
                None
            }
        });
        let Some((flag, attached)) = found else {
            out.push(a);
            continue;
        };
        let inline = attached.then(|| os_after_eq(&a, flag.len()));
        let file = match inline.or_else(|| it.next()) {
            Some(f) => PathBuf::from(f),
            None => {
                out.push(a);
                continue;
            }
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {flag} {}", file.display()))?;
        let value = text.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            bail!("{flag} {}: the file is empty", file.display());
        }
        // One argument, `--flag=VALUE`: clap takes an attached value verbatim, even one
        // that begins with `-`, and never reads it as another flag.
        out.push(format!("{flag}={value}").into());
    }
    Ok(out)
}

/// The part of `arg` after `--flag=` (`flag_len` bytes of `--flag`), as an `OsString`.
fn os_after_eq(arg: &OsStr, flag_len: usize) -> OsString {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        OsStr::from_bytes(&arg.as_bytes()[flag_len + 1..]).to_os_string()
    }
    #[cfg(not(unix))]
    {
        OsString::from(arg.to_string_lossy()[flag_len + 1..].to_string())
    }
}

/// Every `JOTGATE_*` variable set for a setting is valid for every command that reads it,
/// not only for the command being run (one environment serves every command).
fn check_environment(cmd: &Command) -> anyhow::Result<()> {
    for (sub, arg) in settings_args(cmd) {
        let Some(env) = arg.get_env() else { continue };
        let Some(value) = std::env::var_os(env) else {
            continue;
        };
        if value.is_empty() {
            continue;
        }
        let _ = sub;
        if let Err(e) = validate(&arg, &value) {
            bail!(
                "invalid environment variable {}={}: {}",
                env.to_string_lossy(),
                shown(&arg, &value.to_string_lossy()),
                why(&e)
            );
        }
    }
    Ok(())
}

/// A database password in `--store` would be visible to every user of the machine.
fn refuse_password_flags(matches: &ArgMatches) -> anyhow::Result<()> {
    let mut m = Some(matches);
    while let Some(at) = m {
        if at.ids().any(|id| id == "store")
            && at.value_source("store") == Some(clap::parser::ValueSource::CommandLine)
            && let Ok(Some(url)) = at.try_get_raw("store")
            && let Some(url) = url.into_iter().next().and_then(|v| v.to_str())
            && url_has_password(url)
        {
            bail!(
                "--store carries a database password, which the command line shows to every user of the machine (ps): set JOTGATE_STORE or `store` in the config file instead"
            );
        }
        m = at.subcommand().map(|(_, sub)| sub);
    }
    Ok(())
}

fn url_has_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let in_userinfo = authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    // libpq's (and tokio-postgres') `?password=` query parameter.
    let in_query = rest.split_once('?').is_some_and(|(_, q)| {
        q.split('&').any(|kv| {
            kv.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("password"))
        })
    });
    in_userinfo || in_query
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn passwords_in_urls_are_found() {
        assert!(url_has_password("postgres://u:pw@h/db"));
        assert!(!url_has_password("postgres://u@h/db"));
        assert!(!url_has_password("sqlite:///a:b@c"));
        assert!(!url_has_password("dynamodb://t?endpoint=http://a:b@c"));
        assert!(url_has_password(
            "postgres://u@h/db?sslmode=require&password=x"
        ));
        assert!(url_has_password("postgres://u@h/db?PASSWORD=x"));
    }

    #[test]
    fn every_hidden_setting_is_resolved_as_a_secret() {
        let mut hidden: Vec<String> = settings_args(&Cli::command())
            .iter()
            .filter(|(_, a)| a.is_hide_env_values_set())
            .filter_map(|(_, a)| toml_key(a))
            .collect();
        hidden.sort();
        hidden.dedup();
        let mut s = Settings::default();
        let mut slots: Vec<String> = s
            .secret_slots()
            .iter()
            .map(|(n, _)| n.to_string())
            .collect();
        slots.sort();
        assert_eq!(hidden, slots);
    }

    #[test]
    fn typos_are_one_edit_away() {
        assert!(similar("signup", "sigup"));
        assert!(similar("listen", "lisen"));
        assert!(!similar("listen", "store"));
    }
}

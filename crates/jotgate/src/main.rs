//! `jotgate`: serverless-first authentication for APIs. This file only parses arguments
//! and dispatches; the work is in the library (`jotgate::Application`, `jotgate::admin`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use jotgate::settings::Settings;
use jotgate::{Application, admin, edge, shutdown_signal};
use jotgate_verify::authorizer::V2Format;

#[derive(Parser)]
#[command(
    name = "jotgate",
    version,
    about = "Serverless-first authentication for APIs: issues and verifies JWTs.",
    long_about = "Serverless-first authentication for APIs: issues and verifies JWTs.\n\n\
        Settings come from built-in defaults, then the TOML file given with --config, then \
        JOTGATE_* environment variables, then flags. With no settings at all, `jotgate serve` \
        listens on 127.0.0.1:8080, keeps its data in ./jotgate.db (created on first start) \
        and generates an RS256 signing key there on first start.",
    after_help = "Logging: set JOTGATE_LOG (e.g. JOTGATE_LOG=debug); default info."
)]
struct Cli {
    /// TOML configuration file (keys as the long flags, with underscores)
    #[arg(
        long,
        short = 'c',
        env = "JOTGATE_CONFIG",
        global = true,
        value_name = "FILE"
    )]
    config: Option<PathBuf>,

    #[command(flatten)]
    settings: Settings,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server (seed API, JWKS, OpenID discovery)
    Serve,
    /// Manage accounts
    #[command(subcommand)]
    Users(UsersCmd),
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
    /// headers (docs/edge.md). Listens on --listen, default 127.0.0.1:8081.
    Gateway {
        /// Where requests go: http://host:port[/base]
        #[arg(long, env = "JOTGATE_UPSTREAM", value_name = "URL")]
        upstream: String,
        /// Policy file: trusted issuers and route rules (docs/policy.md)
        #[arg(long, env = "JOTGATE_POLICY", value_name = "FILE")]
        policy: PathBuf,
    },
    /// Run as an AWS Lambda function (what the bootstrap does when started without arguments)
    ///
    /// --mode api (default) serves the HTTP API to API Gateway REST APIs, HTTP APIs and
    /// function URLs; --mode authorizer is `jotgate authorizer` (needs JOTGATE_POLICY).
    /// Settings come from JOTGATE_* variables; JOTGATE_ISSUER is required (docs/lambda.md).
    Lambda {
        /// api or authorizer
        #[arg(
            long,
            env = "JOTGATE_LAMBDA_MODE",
            default_value = "api",
            value_name = "MODE"
        )]
        mode: String,
        /// Policy file, for --mode authorizer
        #[arg(long, env = "JOTGATE_POLICY", value_name = "FILE")]
        policy: Option<PathBuf>,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Run as an AWS API Gateway Lambda authorizer
    ///
    /// Answers REST API TOKEN/REQUEST and HTTP API authorizer events from the Lambda
    /// Runtime API (AWS_LAMBDA_RUNTIME_API and the AWS_LAMBDA_FUNCTION_* variables, set by
    /// Lambda), deciding with the policy file (docs/edge.md).
    Authorizer {
        /// Policy file: trusted issuers and route rules (docs/policy.md)
        #[arg(long, env = "JOTGATE_POLICY", value_name = "FILE")]
        policy: PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
}

#[derive(Subcommand)]
enum UsersCmd {
    /// Create an account; the password is read from the first line of stdin
    Add {
        /// Username (case-insensitive, Unicode-normalised; the spelling is kept for display)
        username: String,
        /// Role to grant (repeatable), e.g. --role admin
        #[arg(long = "role", value_name = "ROLE")]
        roles: Vec<String>,
    },
    /// Log a user out everywhere: end all sessions, refuse all access tokens issued so far
    Revoke {
        /// Username
        username: String,
    },
    /// List accounts
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List signing keys and their status (signing, next, published, expired)
    List {
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
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
    },
    /// Stop signing with a key; it stays published until its last token expires, and a
    /// token it signs after now is refused. Retiring the signing key generates a successor
    Retire {
        /// Key id (it may begin with '-': kids are base64url)
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Encrypt every signing key stored unencrypted with the master key (JOTGATE_MASTER_KEY);
    /// with a master key set, an unencrypted key is refused until then
    Seal,
    /// Withdraw a (compromised) key at once: it leaves the JWKS, every token it signed is
    /// refused by servers, gateways and authorizers (through the revocation feed). Revoking
    /// the signing key generates a successor
    Revoke {
        /// Key id (it may begin with '-': kids are base64url)
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Verify an access token and print its claims
    ///
    /// With --issuer URL on the command line: against that OpenID Connect issuer's
    /// published keys (discovery → JWKS; any issuer; revocations not consulted; --audience
    /// checked if given). Otherwise: against this deployment's store, keys and revocations.
    Verify {
        /// The JWT ("-" to read it from stdin)
        jwt: String,
    },
}

/// The authorizer's response format for HTTP API events (shared by `authorizer` and
/// `lambda --mode authorizer`).
#[derive(clap::Args)]
struct FormatArg {
    /// Response format for HTTP API (payload 2.0) events: simple or iam
    #[arg(
        long,
        env = "JOTGATE_AUTHORIZER_FORMAT",
        default_value = "simple",
        value_name = "FORMAT"
    )]
    format: String,
}

impl FormatArg {
    fn v2(&self) -> anyhow::Result<V2Format> {
        let f = &self.format;
        match f.to_ascii_lowercase().as_str() {
            "simple" => Ok(V2Format::Simple),
            "iam" => Ok(V2Format::Iam),
            _ => anyhow::bail!("invalid --format {f:?}: expected simple or iam"),
        }
    }
}

fn read_arg_or_stdin(v: &str) -> anyhow::Result<String> {
    use std::io::Read;
    if v == "-" {
        let mut s = String::new();
        std::io::stdin().take(1 << 20).read_to_string(&mut s)?;
        Ok(s)
    } else {
        Ok(v.to_string())
    }
}

/// `remote_issuer`: `--issuer` was given on the command line (not from env or file).
async fn run(cli: Cli, remote_issuer: bool) -> anyhow::Result<Option<String>> {
    let s = cli
        .settings
        .resolve(cli.config.as_deref())?
        .resolve_secret_refs()
        .await?;
    Ok(Some(match cli.command {
        Command::Serve => {
            let app = Application::build(&s).await?;
            app.run(shutdown_signal()).await?;
            return Ok(None);
        }
        Command::Users(UsersCmd::Add { username, roles }) => {
            let pw = admin::read_password(std::io::stdin())?;
            admin::users_add(&s, &username, &roles, pw).await?
        }
        Command::Users(UsersCmd::List { json }) => admin::users_list(&s, json).await?,
        Command::Keys(KeysCmd::List { json }) => admin::keys_list(&s, json).await?,
        Command::Keys(KeysCmd::Rotate {
            key_alg,
            activate_in,
            now,
        }) => admin::keys_rotate(&s, key_alg.as_deref(), if now { 0 } else { activate_in }).await?,
        Command::Keys(KeysCmd::Import {
            file,
            kid,
            activate_in,
        }) => {
            let text = if file.as_os_str() == "-" {
                read_arg_or_stdin("-")?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
            };
            admin::keys_import(&s, &text, kid, activate_in).await?
        }
        Command::Keys(KeysCmd::Retire { kid }) => admin::keys_retire(&s, &kid).await?,
        Command::Keys(KeysCmd::Revoke { kid }) => admin::keys_revoke(&s, &kid).await?,
        Command::Keys(KeysCmd::Seal) => admin::keys_seal(&s).await?,
        Command::Token(TokenCmd::Verify { jwt }) => match (&s.issuer, remote_issuer) {
            (Some(issuer), true) => {
                edge::token_verify_oidc(issuer, s.audience.as_deref(), &read_arg_or_stdin(&jwt)?)
                    .await?
            }
            _ => admin::token_verify(&s, &read_arg_or_stdin(&jwt)?).await?,
        },
        Command::Users(UsersCmd::Revoke { username }) => admin::users_revoke(&s, &username).await?,
        Command::Gateway { upstream, policy } => {
            let listen = s.listen.unwrap_or(edge::GATEWAY_LISTEN);
            let gw = edge::Gateway::build(listen, &upstream, &policy, s.conn_limits()?).await?;
            gw.run(shutdown_signal()).await?;
            return Ok(None);
        }
        Command::Authorizer { policy, format } => {
            edge::run_authorizer(&policy, format.v2()?, s.feed_token.as_ref()).await?;
            return Ok(None);
        }
        Command::Lambda {
            mode,
            policy,
            format,
        } => {
            match mode.as_str() {
                "api" => jotgate::lambda::run_api(&s).await?,
                "authorizer" => {
                    let policy = policy.ok_or_else(|| {
                        anyhow::anyhow!(
                            "missing setting policy (JOTGATE_POLICY) for --mode authorizer"
                        )
                    })?;
                    edge::run_authorizer(&policy, format.v2()?, s.feed_token.as_ref()).await?
                }
                _ => anyhow::bail!(
                    "invalid setting mode (JOTGATE_LAMBDA_MODE): {mode:?}; expected api or authorizer"
                ),
            }
            return Ok(None);
        }
    }))
}

fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    // Lambda starts the bootstrap without arguments.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.len() == 1 && std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        args.push("lambda".into());
    }
    let matches = Cli::command().get_matches_from(args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // `token verify --issuer URL` means "verify against that issuer"; a deployment's
    // JOTGATE_ISSUER still means "this store's issuer".
    let remote_issuer = matches
        .subcommand_matches("token")
        .and_then(|t| t.subcommand_matches("verify"))
        .and_then(|v| v.value_source("issuer"))
        == Some(clap::parser::ValueSource::CommandLine);
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JOTGATE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli, remote_issuer)) {
        Ok(Some(out)) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `jotgate`: serverless-first authentication for APIs. This file only parses arguments
//! and dispatches; the work is in the library (`jotgate::Application`, `jotgate::admin`).

use std::process::ExitCode;

use jotgate::cli::{
    self, AuditCmd, Cli, ClientsCmd, Cmd, KeysCmd, LambdaMode, LogFormat, OutputFormat, Parsed,
    RolesCmd, TokenCmd, UsersCmd,
};
use jotgate::settings::Settings;
use jotgate::{Application, admin, edge, shutdown_signal};

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
    Ok(Some(match cli.command {
        Cmd::Serve(args) => {
            let s = (*args).settings().resolve_secret_refs().await?;
            let app = Application::build(&s).await?;
            app.run(shutdown_signal()).await?;
            return Ok(None);
        }
        Cmd::Check(check) => {
            let (out, ok) = jotgate::check::run(check).await;
            print!("{out}");
            if ok {
                return Ok(None);
            }
            std::process::exit(1);
        }
        Cmd::Users(UsersCmd::Add {
            username,
            roles,
            email,
            store,
            passwords,
        }) => {
            let s = Settings {
                store,
                passwords,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            let pw = admin::read_password(std::io::stdin())?;
            admin::users_add(&s, &username, &roles, email.as_deref(), pw).await?
        }
        Cmd::Users(UsersCmd::Update {
            username,
            email,
            no_email,
            email_verified,
            blocked,
            store,
            tokens,
        }) => {
            let s = Settings {
                store,
                tokens,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            let patch = jotgate_store::UserPatch {
                email: if no_email {
                    Some(None)
                } else {
                    email.map(Some)
                },
                email_verified,
                blocked,
                app_metadata: None,
            };
            admin::users_update(&s, &username, patch).await?
        }
        Cmd::Users(UsersCmd::List { json, store }) => {
            let s = Settings {
                store,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::users_list(&s, json).await?
        }
        Cmd::Users(UsersCmd::Blocks {
            username,
            json,
            store,
            login,
        }) => {
            let s = Settings {
                store,
                login,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::users_blocks(&s, &username, json).await?
        }
        Cmd::Users(UsersCmd::Unblock {
            username,
            store,
            login,
        }) => {
            let s = Settings {
                store,
                login,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::users_unblock(&s, &username).await?
        }
        Cmd::Users(UsersCmd::SetRoles {
            username,
            roles,
            store,
            tokens,
        }) => {
            let s = Settings {
                store,
                tokens,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::users_set_roles(&s, &username, &roles).await?
        }
        Cmd::Roles(RolesCmd::Set {
            name,
            scopes,
            store,
            tokens,
        }) => {
            let s = Settings {
                store,
                tokens,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::roles_set(&s, &name, &scopes).await?
        }
        Cmd::Clients(ClientsCmd::Add {
            name,
            scopes,
            audiences,
            format,
            issuer,
            app_audience,
            store,
        }) => {
            let s = Settings {
                store,
                tokens: jotgate::settings::TokenSettings {
                    issuer,
                    audience: app_audience,
                    ..Default::default()
                },
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::clients_add(&s, &name, &scopes, &audiences, format == OutputFormat::Json).await?
        }
        Cmd::Clients(ClientsCmd::List { json, store }) => {
            let s = Settings {
                store,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::clients_list(&s, json).await?
        }
        Cmd::Clients(ClientsCmd::RotateSecret {
            client_id,
            format,
            store,
            tokens,
        }) => {
            let s = Settings {
                store,
                tokens,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::clients_rotate_secret(&s, &client_id, format == OutputFormat::Json).await?
        }
        Cmd::Clients(ClientsCmd::Delete {
            client_id,
            store,
            tokens,
        }) => {
            let s = Settings {
                store,
                tokens,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::clients_delete(&s, &client_id).await?
        }
        Cmd::Audit(AuditCmd::Tail {
            since,
            kind,
            user,
            limit,
            json,
            store,
        }) => {
            let s = Settings {
                store,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::audit_tail(&s, since, kind, user, limit, json).await?
        }
        Cmd::Roles(RolesCmd::List { json, store }) => {
            let s = Settings {
                store,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::roles_list(&s, json).await?
        }
        Cmd::Roles(RolesCmd::Delete {
            name,
            store,
            tokens,
        }) => {
            let s = Settings {
                store,
                tokens,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::roles_delete(&s, &name).await?
        }
        Cmd::Users(UsersCmd::Revoke {
            username,
            store,
            tokens,
        }) => {
            let s = Settings {
                store,
                tokens,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::users_revoke(&s, &username).await?
        }
        Cmd::Keys(KeysCmd::List { json, admin }) => {
            let s = admin.settings().resolve_secret_refs().await?;
            admin::keys_list(&s, json).await?
        }
        Cmd::Keys(KeysCmd::Rotate {
            key_alg,
            activate_in,
            now,
            admin,
        }) => {
            let s = admin.settings().resolve_secret_refs().await?;
            admin::keys_rotate(&s, key_alg.as_deref(), if now { 0 } else { activate_in }).await?
        }
        Cmd::Keys(KeysCmd::Import {
            file,
            kid,
            activate_in,
            admin,
        }) => {
            let s = admin.settings().resolve_secret_refs().await?;
            let text = if file.as_os_str() == "-" {
                read_arg_or_stdin("-")?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
            };
            admin::keys_import(&s, &text, kid, activate_in).await?
        }
        Cmd::Keys(KeysCmd::Retire { kid, admin }) => {
            let s = admin.settings().resolve_secret_refs().await?;
            admin::keys_retire(&s, &kid).await?
        }
        Cmd::Keys(KeysCmd::Revoke { kid, admin }) => {
            let s = admin.settings().resolve_secret_refs().await?;
            admin::keys_revoke(&s, &kid).await?
        }
        Cmd::Keys(KeysCmd::Seal { store, seal }) => {
            let s = Settings {
                store,
                seal,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            admin::keys_seal(&s).await?
        }
        Cmd::Token(TokenCmd::Verify { jwt, admin }) => {
            let s = admin.settings().resolve_secret_refs().await?;
            match (&s.tokens.issuer, remote_issuer) {
                (Some(issuer), true) => {
                    edge::token_verify_oidc(
                        issuer,
                        s.tokens.audience.as_deref(),
                        &read_arg_or_stdin(&jwt)?,
                    )
                    .await?
                }
                _ => admin::token_verify(&s, &read_arg_or_stdin(&jwt)?).await?,
            }
        }
        Cmd::Gateway(args) => {
            let listen = args.gateway_listen.unwrap_or(edge::GATEWAY_LISTEN);
            let limits = Settings {
                conn: args.conn.clone(),
                ..Settings::default()
            }
            .conn_limits()?;
            let gw =
                edge::Gateway::build(listen, args.upstream()?, args.edge.policy()?, limits).await?;
            gw.run(shutdown_signal()).await?;
            return Ok(None);
        }
        Cmd::Authorizer(args) => {
            let s = Settings {
                feed: args.feed,
                ..Settings::default()
            }
            .resolve_secret_refs()
            .await?;
            edge::run_authorizer(
                args.edge.policy()?,
                args.format.v2(),
                s.feed.feed_token.as_ref(),
            )
            .await?;
            return Ok(None);
        }
        Cmd::Lambda(args) => {
            let s = args.settings().resolve_secret_refs().await?;
            match args.lambda_mode.unwrap_or(LambdaMode::Api) {
                LambdaMode::Api => jotgate::lambda::run_api(&s).await?,
                LambdaMode::Authorizer => {
                    edge::run_authorizer(
                        args.edge.policy()?,
                        args.format.v2(),
                        s.feed.feed_token.as_ref(),
                    )
                    .await?
                }
            }
            return Ok(None);
        }
    }))
}

/// Two glibc malloc settings, for a server's resident memory (docs/benchmarks.md), each
/// left to `GLIBC_TUNABLES` (or glibc's older `MALLOC_*_` variables) when that sets it.
/// Called before any other thread starts.
///
/// - Arenas: glibc gives every thread that allocates its own, up to 8 per core, and each
///   keeps its freed pages: ~0.8 MiB after a burst of requests. Its per-thread cache
///   serves most small allocations without an arena's lock, so one arena per core cost no
///   measurable throughput (A/B, 2 cores).
/// - The mmap threshold, fixed at glibc's initial 128 KiB: an allocation that large is
///   mapped on its own and unmapped when freed. glibc otherwise raises the threshold to
///   the size of the largest mapped block freed, and later blocks that size (the log
///   writer's batches after a burst) come from an arena, which keeps their pages.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    let tunables = std::env::var_os("GLIBC_TUNABLES").unwrap_or_default();
    let tuned = |name: &str, old: &str| {
        std::env::var_os(old).is_some()
            || tunables
                .as_encoded_bytes()
                .windows(name.len())
                .any(|w| w == name.as_bytes())
    };
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = libc::c_int::try_from(cores.max(2)).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only sets malloc parameters, for allocations made later; existing
    // ones are left alone.
    unsafe {
        if !tuned("arena_max", "MALLOC_ARENA_MAX") {
            libc::mallopt(libc::M_ARENA_MAX, arenas);
        }
        if !tuned("mmap_threshold", "MALLOC_MMAP_THRESHOLD_") {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

fn main() -> ExitCode {
    tune_malloc();
    // Lambda starts the bootstrap without arguments.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let in_lambda = std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some();
    if args.len() == 1 && in_lambda {
        args.push("lambda".into());
    }
    let Parsed { cli, remote_issuer } = match cli::parse(args) {
        Ok(p) => p,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(e) => e.exit(),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(2);
            }
        },
    };
    let json = match cli.log_format {
        Some(f) => f == LogFormat::Json,
        None => in_lambda,
    };
    // The long-running servers batch their log lines; the rest (and anything under
    // Lambda, frozen once it has answered) write each line as it comes.
    let batched = !in_lambda && matches!(cli.command, Cmd::Serve(_) | Cmd::Gateway(_));
    jotgate::logging::init(json, batched);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli, remote_issuer));
    // Tasks still running (connections past the drain, background work) log until the
    // runtime is gone; then the last lines are written.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    jotgate::logging::flush();
    match result {
        Ok(Some(out)) => {
            print!("{out}");
            if !out.ends_with('\n') {
                println!();
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            jotgate::logging::report(&e);
            ExitCode::FAILURE
        }
    }
}

//! Every setting of every command, set through each layer — the TOML file, its
//! `JOTGATE_*` variable, its flag — reaches the parsed configuration, and the layers
//! override in that order. A setting added to a group is covered here without a word
//! of this file changing (and one whose kind of value is new fails until it has a sample).
//!
//! Its own test binary: it sets environment variables, which no other thread may read
//! at the same time.

use std::ffi::OsString;
use std::path::Path;

use clap::{Arg, CommandFactory};
use jotgate::cli::{self, Cli};

/// The tests of this binary read and set the environment: one at a time.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Three distinct valid values for a setting, by the kind of value it takes.
fn samples(arg: &Arg, dir: &Path) -> [String; 3] {
    let possible: Vec<String> = arg
        .get_possible_values()
        .iter()
        .map(|p| p.get_name().to_string())
        .collect();
    if possible.len() >= 2 {
        let at = |i: usize| possible[i % possible.len()].clone();
        return [at(0), at(1), at(2)];
    }
    let name = arg
        .get_value_names()
        .and_then(|v| v.first())
        .map(|v| v.to_string())
        .unwrap_or_default();
    let three = |f: &dyn Fn(usize) -> String| [f(1), f(2), f(3)];
    match name.as_str() {
        "SECS" | "N" | "KIB" | "DAYS" => three(&|i| (8 + i).to_string()),
        "ADDR" => three(&|i| format!("127.0.0.1:{}", 7000 + i)),
        "URL" if arg.get_id() == "store" => {
            three(&|i| format!("sqlite://{}", dir.join(format!("s{i}.db")).display()))
        }
        "URL" => three(&|i| format!("http://host{i}.test")),
        "PATH" | "PEM" => three(&|i| dir.join(format!("p{i}")).display().to_string()),
        // A secret's flag names a file; the value itself is what the file holds.
        "FILE" if cli::is_secret(arg) => {
            three(&|i| format!("secret-value-{i}-0123456789abcdefghijklmnopqrstuv"))
        }
        "FILE" => three(&|i| dir.join(format!("f{i}.toml")).display().to_string()),
        "ALG" => ["ES256".into(), "EdDSA".into(), "RS256".into()],
        "BOOL" => ["true".into(), "false".into(), "true".into()],
        "AUDIENCE" | "" => three(&|i| format!("word{i}")),
        "PAIRS" => three(&|i| format!("k{i}=https://claims.example/k{i}")),
        "CIDRS" => three(&|i| format!("10.{i}.0.0/16")),
        other => panic!(
            "setting {} takes a kind of value ({other}) with no sample here: add one",
            arg.get_id()
        ),
    }
}

#[derive(Clone, Copy, Debug)]
enum Layer {
    File,
    Env,
    Flag,
}

struct Case<'a> {
    path: &'a [String],
    arg: &'a Arg,
    dir: &'a Path,
}

impl Case<'_> {
    /// Parse the command with `values` set through their layers; the Debug text of what
    /// the command receives.
    fn parse(&self, values: &[(Layer, &str)]) -> String {
        let mut args: Vec<OsString> = vec!["jotgate".into()];
        let mut config = String::new();
        let env = self.arg.get_env().unwrap().to_os_string();
        let key = cli::toml_key(self.arg).unwrap();
        let mut flags: Vec<OsString> = Vec::new();
        for (layer, v) in values {
            match layer {
                Layer::File => config.push_str(&format!("{key} = {v:?}\n")),
                Layer::Env => unsafe { std::env::set_var(&env, v) },
                Layer::Flag => {
                    let long = format!("--{}", self.arg.get_long().unwrap());
                    flags.push(long.into());
                    if cli::is_secret(self.arg) {
                        let f = self.dir.join(format!("secret-{}", uuid::Uuid::new_v4()));
                        std::fs::write(&f, format!("{v}\n")).unwrap();
                        flags.push(f.into());
                    } else {
                        flags.push((*v).into());
                    }
                }
            }
        }
        if !config.is_empty() {
            let f = self.dir.join(format!("c-{}.toml", uuid::Uuid::new_v4()));
            std::fs::write(&f, config).unwrap();
            args.push("--config".into());
            args.push(f.into());
        }
        args.extend(self.path.iter().map(OsString::from));
        args.extend(required_positionals(self.path));
        args.extend(flags);
        let parsed = cli::parse(args);
        unsafe { std::env::remove_var(&env) };
        match parsed {
            Ok(mut p) => {
                // Which file held the settings is not a setting.
                p.cli.config = None;
                format!("{:?}", p.cli)
            }
            Err(e) => panic!("{:?} {:?}: {e:#}", self.path, self.arg.get_id()),
        }
    }
}

/// Positional arguments a command needs to parse at all.
fn required_positionals(path: &[String]) -> Vec<OsString> {
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    match p.as_slice() {
        [
            "users",
            "add" | "revoke" | "update" | "set-roles" | "blocks" | "unblock",
        ] => {
            vec!["ann".into()]
        }
        ["roles", "delete"] => vec!["paid".into()],
        ["roles", "set"] => vec!["paid".into(), "--scopes".into(), "a".into()],
        ["clients", "add"] => vec!["svc".into()],
        ["clients", "rotate-secret" | "delete"] => vec!["cl_x".into()],
        ["keys", "retire" | "revoke"] => vec!["kid1".into()],
        ["keys", "import"] => vec!["key.pem".into()],
        ["token", "verify"] => vec!["a.b.c".into()],
        _ => vec![],
    }
}

/// The command paths that run something (leaves of the command tree).
fn leaves(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    let subs: Vec<&clap::Command> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help")
        .collect();
    if subs.is_empty() && !path.is_empty() {
        out.push(path.clone());
    }
    for s in subs {
        path.push(s.get_name().to_string());
        leaves(s, path, out);
        path.pop();
    }
}

#[test]
fn every_setting_of_every_command_goes_through_every_layer() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    for (k, _) in std::env::vars() {
        if k.starts_with("JOTGATE_") {
            unsafe { std::env::remove_var(k) };
        }
    }
    let dir = std::env::temp_dir().join(format!("jotgate-settings-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = Cli::command();
    let mut paths = Vec::new();
    leaves(&root, &mut Vec::new(), &mut paths);
    let mut checked = 0;
    for path in &paths {
        let mut at = &root;
        for name in path {
            at = at.find_subcommand(name).unwrap();
        }
        let args: Vec<Arg> = at
            .get_arguments()
            .chain(root.get_arguments())
            .filter(|a| cli::toml_key(a).is_some())
            .cloned()
            .collect();
        let baseline = Case {
            path,
            arg: &args[0],
            dir: &dir,
        }
        .parse(&[]);
        for arg in &args {
            let case = Case {
                path,
                arg,
                dir: &dir,
            };
            let [a, b, c] = samples(arg, &dir);
            let mut seen = Vec::new();
            for layer in [Layer::File, Layer::Env, Layer::Flag] {
                let got = case.parse(&[(layer, &a)]);
                assert_ne!(
                    got,
                    baseline,
                    "{path:?}: {} set through {layer:?} does not reach the command",
                    arg.get_id()
                );
                seen.push(got);
            }
            assert!(
                seen.windows(2).all(|w| w[0] == w[1]),
                "{path:?}: {} differs by layer: {seen:?}",
                arg.get_id()
            );
            if arg.is_hide_env_values_set() {
                // Secrets print as [REDACTED]: their order is checked by the store URL.
                checked += 1;
                continue;
            }
            // File < environment < flag.
            let env_only = case.parse(&[(Layer::Env, &b)]);
            assert_eq!(
                case.parse(&[(Layer::File, &a), (Layer::Env, &b)]),
                env_only,
                "{path:?}: {} — the environment must override the file",
                arg.get_id()
            );
            let flag_only = case.parse(&[(Layer::Flag, &c)]);
            assert_eq!(
                case.parse(&[(Layer::File, &a), (Layer::Env, &b), (Layer::Flag, &c)]),
                flag_only,
                "{path:?}: {} — the flag must override the environment",
                arg.get_id()
            );
            checked += 1;
        }
    }
    // serve alone has 40 settings: the walk must have found them all.
    assert!(checked > 200, "only {checked} settings checked");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `-cFILE` (attached) reads the file as `-c FILE` does.
#[test]
fn every_spelling_of_the_config_flag_reads_the_file() {
    let _env = ENV.lock().unwrap_or_else(|p| p.into_inner());
    let dir = std::env::temp_dir().join(format!("jotgate-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("c.toml");
    std::fs::write(&f, "access_ttl = 77\n").unwrap();
    let p = f.display().to_string();
    for args in [
        vec!["-c".to_string(), p.clone()],
        vec![format!("-c{p}")],
        vec!["--config".to_string(), p.clone()],
        vec![format!("--config={p}")],
    ] {
        let mut argv: Vec<OsString> = vec!["jotgate".into(), "serve".into()];
        argv.extend(args.iter().map(OsString::from));
        let parsed = cli::parse(argv).unwrap();
        let cli::Cmd::Serve(s) = parsed.cli.command else {
            panic!("not serve");
        };
        assert_eq!(s.service.tokens.access_ttl, Some(77), "{args:?}");
    }
}

//! Logging set-up and the one way a command reports a fatal error.

use std::fmt;

/// Libraries that log what they send at debug and trace level — request headers, SQL
/// parameters, signed AWS requests — kept at `info` unless `JOTGATE_LOG` names them.
const TALKATIVE: &[&str] = &[
    "aws_config",
    "aws_credential_types",
    "aws_sigv4",
    "aws_smithy_runtime",
    "aws_smithy_runtime_api",
    "aws_smithy_http",
    "aws_smithy_http_client",
    "aws_sdk_dynamodb",
    "aws_sdk_secretsmanager",
    "aws_sdk_ssm",
    "aws_sdk_sts",
    "h2",
    "hyper",
    "hyper_util",
    "reqwest",
    "rustls",
    "tokio_postgres",
    "deadpool_postgres",
    "lambda_runtime",
    "lambda_http",
    "tower_http",
];

/// The filter for `spec` (the value of `JOTGATE_LOG`): [`TALKATIVE`] libraries capped at
/// `info` unless the spec names them.
pub fn filter_spec(spec: &str) -> String {
    let mut out = if spec.trim().is_empty() {
        "info".to_string()
    } else {
        spec.to_string()
    };
    // The targets the spec names: `lib=level` and `lib::module=level` directives.
    let named: Vec<&str> = spec
        .split(',')
        .filter_map(|d| d.split(['=', '[']).next())
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    for lib in TALKATIVE {
        let mentioned = named
            .iter()
            .any(|t| *t == *lib || t.strip_prefix(lib).is_some_and(|r| r.starts_with("::")));
        if !mentioned {
            out.push_str(&format!(",{lib}=info"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_one_library_uncaps_only_that_one() {
        let f = filter_spec("trace,hyper_util=debug");
        assert!(
            f.contains(",hyper=info") && !f.contains(",hyper_util=info"),
            "{f}"
        );
        let f = filter_spec("trace,aws_smithy_runtime_api=trace");
        assert!(f.contains(",aws_smithy_runtime=info"), "{f}");
        assert!(!f.contains(",aws_smithy_runtime_api=info"), "{f}");
        let f = filter_spec("debug,rustls::conn=trace");
        assert!(!f.contains(",rustls=info"), "{f}");
        assert!(filter_spec("").starts_with("info,"));
    }
}

/// Install the global subscriber: `JOTGATE_LOG` filters (default `info`); `json` writes one
/// JSON object per line (CloudWatch), else text. Logs go to stderr.
pub fn init(json: bool) {
    let spec = filter_spec(&std::env::var("JOTGATE_LOG").unwrap_or_default());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter_spec("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init();
    }
}

/// An error written for the person who started jotgate: what is wrong, then what to do.
/// Its cause (the library's error chain) is shown only at `JOTGATE_LOG=debug`.
#[derive(Debug)]
pub struct Startup {
    pub what: String,
    pub todo: String,
}

impl fmt::Display for Startup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Startup {}

/// Wrap `cause` in a [`Startup`] error: `what` went wrong, `todo` mends it.
pub fn startup(
    cause: impl Into<anyhow::Error>,
    what: impl Into<String>,
    todo: impl Into<String>,
) -> anyhow::Error {
    let cause: anyhow::Error = cause.into();
    tracing::debug!(error = format!("{cause:#}"), "cause");
    anyhow::Error::new(Startup {
        what: what.into(),
        todo: todo.into(),
    })
}

/// The text of a fatal error: a [`Startup`] error's two sentences, any other error's
/// chain on one line.
pub fn render(e: &anyhow::Error) -> String {
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<Startup>() {
            return format!("error: {}\n  {}\n", s.what, s.todo);
        }
    }
    format!("error: {e:#}\n")
}

/// Print a fatal error on stderr.
pub fn report(e: &anyhow::Error) {
    eprint!("{}", render(e));
}

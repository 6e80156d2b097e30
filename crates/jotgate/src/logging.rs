//! Logging set-up and the one way a command reports a fatal error.

use std::fmt::{self, Write as _};
use std::io::Write;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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
    fn dates_are_civil_utc() {
        for (t, want) in [
            (0, "1970-01-01T00:00:00."),
            (951_782_400, "2000-02-29T00:00:00."),
            (1_700_000_000, "2023-11-14T22:13:20."),
            (1_709_164_800, "2024-02-29T00:00:00."),
            (4_102_444_799, "2099-12-31T23:59:59."),
        ] {
            assert_eq!(super::date_time(t), want);
        }
    }

    /// A log writer whose lines a test reads.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl Captured {
        /// What was written, as text.
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }

        /// A subscriber writing here as `serve` writes text lines ([`TextLines`]).
        fn text_lines(&self) -> impl tracing::Subscriber + Send + Sync + 'static {
            let writer = self.clone();
            tracing_subscriber::fmt()
                .with_ansi(false)
                .fmt_fields(super::PlainFields)
                .event_format(super::TextLines)
                .with_writer(move || writer.clone())
                .finish()
        }
    }

    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_fields_escape_control_characters() {
        let out = Captured::default();
        let writer = out.clone();
        let sub = tracing_subscriber::fmt()
            .with_ansi(false)
            .fmt_fields(super::PlainFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("request", path = %"/a\nINFO forged");
            let _in = span.enter();
            tracing::warn!(error = %"x\u{85}y\x1b[31m", name = "q\"n", n = 7, "said");
        });
        let text = out.text();
        assert_eq!(text.lines().count(), 1, "{text:?}");
        assert!(
            text.contains(r#"request{path=/a\nINFO forged}: "#),
            "{text:?}"
        );
        assert!(
            text.ends_with("said error=x\\u{85}y\\u{1b}[31m name=\"q\\\"n\" n=7\n"),
            "{text:?}"
        );
    }

    /// `tracing-subscriber`'s own text format, without the time, and ours (the time cut off)
    /// for the same event: the request inside an equal span for theirs, as a
    /// `RequestContext` for ours.
    fn text_both(event: impl Fn() + Clone) -> (String, String) {
        let (theirs, ours) = (Captured::default(), Captured::default());
        let t = theirs.clone();
        let stock = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(super::PlainFields)
            .with_writer(move || t.clone())
            .finish();
        let ev = event.clone();
        tracing::subscriber::with_default(stock, || {
            let span = tracing::info_span!(
                target: "access",
                "request",
                method = %"POST",
                path = %jotgate_verify::service::Escaped("/a b\"\n"),
                request_id = %"abc-1",
            );
            span.in_scope(ev);
        });
        let mine = ours.text_lines();
        tracing::subscriber::with_default(mine, || request().sync_scope(event));
        let theirs = theirs.text();
        let ours = ours.text();
        // Ours: `2026-12-03T07:04:27.123456Z  INFO …`; theirs without time: ` INFO …`.
        let (time, rest) = ours.split_once(' ').unwrap();
        assert_eq!(time.len(), 27, "{ours:?}");
        assert!(time.ends_with('Z'), "{ours:?}");
        (theirs, rest.to_string())
    }

    fn request() -> jotgate_verify::service::RequestContext {
        jotgate_verify::service::RequestContext::new(
            axum::http::Method::POST,
            axum::http::Uri::from_static("/a%20b?secret=1"),
            axum::http::HeaderValue::from_static("abc-1"),
        )
    }

    #[test]
    fn text_lines_name_the_request_as_tracing_named_its_span() {
        let (theirs, ours) = text_both(
            || tracing::info!(target: "access", status = 401u16, latency_us = 12_345u64, "answered"),
        );
        // The context's path is the URI's path: the query string is never written.
        let theirs = theirs.replace("path=/a b\\\"\\n", "path=/a%20b");
        assert_eq!(theirs, ours);
        assert!(ours.starts_with(" INFO request{method=POST path=/a%20b request_id=abc-1}: access: answered status=401"), "{ours:?}");
        let (theirs, ours) = text_both(|| {
            let inner = tracing::info_span!("store", table = "users");
            inner.in_scope(|| tracing::warn!(error = %"x\ny", "slow"));
        });
        let theirs = theirs.replace("path=/a b\\\"\\n", "path=/a%20b");
        assert_eq!(theirs, ours);
        assert!(
            ours.contains("}:store{table=\"users\"}: jotgate::logging::tests: slow error=x\\ny"),
            "{ours:?}"
        );
    }

    #[test]
    fn text_lines_put_the_request_inside_the_span_it_began_in() {
        let (theirs, ours) = (Captured::default(), Captured::default());
        let t = theirs.clone();
        let stock = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(super::PlainFields)
            .with_writer(move || t.clone())
            .finish();
        tracing::subscriber::with_default(stock, || {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "r-1");
            let _invoke = invoke.enter();
            let span = tracing::info_span!(
                "request",
                method = %"POST",
                path = %"/a%20b",
                request_id = %"abc-1",
            );
            span.in_scope(|| tracing::warn!("slow"));
        });
        let mine = ours.text_lines();
        tracing::subscriber::with_default(mine, || {
            let invoke = tracing::info_span!("Lambda runtime invoke", requestId = "r-1");
            let _invoke = invoke.enter();
            request()
                .inside(tracing::Span::current().id())
                .sync_scope(|| tracing::warn!("slow"));
        });
        let theirs = theirs.text();
        let ours = ours.text();
        let (_, ours) = ours.split_once(' ').unwrap();
        assert_eq!(theirs, ours);
        assert!(
            ours.contains("Lambda runtime invoke{requestId=\"r-1\"}:request{method=POST"),
            "{ours}"
        );
    }

    #[test]
    fn text_lines_name_a_log_records_own_target() {
        let _ = tracing_log::LogTracer::init();
        let out = Captured::default();
        let sub = out.text_lines();
        tracing::subscriber::with_default(sub, || {
            log::warn!(target: "tokio_postgres::connection", "NOTICE: relation exists");
        });
        let text = out.text();
        assert!(
            text.contains(" WARN tokio_postgres::connection: NOTICE: relation exists"),
            "{text:?}"
        );
    }

    #[test]
    fn the_hand_written_access_line_is_the_one_text_lines_writes() {
        use jotgate_verify::service::AccessLine;
        let out = Captured::default();
        let sub = out.text_lines();
        let r = request();
        tracing::subscriber::with_default(sub, || {
            r.clone().sync_scope(|| {
                tracing::info!(target: "access", status = 401u16, latency_us = 12_345u64, "answered")
            })
        });
        let traced = out.text();
        let mut ours = String::new();
        super::access_text(
            &mut ours,
            &AccessLine {
                method: r.method(),
                path: r.path(),
                request_id: r.request_id(),
                status: 401,
                latency_us: 12_345,
            },
        );
        // After the time: "  INFO …" in both.
        let (_, after) = traced.trim_end().split_once('Z').unwrap();
        assert_eq!(after, ours);
    }

    #[test]
    fn json_lines_name_the_request_as_tracing_named_its_span() {
        let json = |line: &str| -> serde_json::Value {
            let mut v: serde_json::Value = serde_json::from_str(line).expect(line);
            v.as_object_mut()
                .unwrap()
                .remove("timestamp")
                .expect("a timestamp");
            v
        };
        for with_request in [true, false] {
            let (theirs, ours) = (Captured::default(), Captured::default());
            let (t, o) = (theirs.clone(), ours.clone());
            let stock = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_writer(move || t.clone())
                .finish();
            let event = || tracing::warn!(target: "access", status = 503u16, cause = %"a \"b\"\n", "answered");
            tracing::subscriber::with_default(stock, || {
                let outer = tracing::info_span!("Lambda runtime invoke", requestId = "r-1");
                let _outer = outer.enter();
                if with_request {
                    let span = tracing::info_span!(
                        "request",
                        method = %"POST",
                        path = %"/a%20b",
                        request_id = %"abc-1",
                    );
                    span.in_scope(event);
                } else {
                    event();
                }
            });
            let mine = tracing_subscriber::fmt()
                .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
                .event_format(super::JsonLines::new())
                .with_writer(move || o.clone())
                .finish();
            tracing::subscriber::with_default(mine, || {
                let outer = tracing::info_span!("Lambda runtime invoke", requestId = "r-1");
                let _outer = outer.enter();
                if with_request {
                    request().sync_scope(event);
                } else {
                    event();
                }
            });
            let theirs = theirs.text();
            let ours = ours.text();
            assert_eq!(ours.lines().count(), 1, "{ours}");
            assert_eq!(json(&theirs), json(&ours), "{theirs}\n{ours}");
            let want = if with_request { "abc-1" } else { "" };
            assert_eq!(
                json(&ours)["span"]["request_id"].as_str().unwrap_or(""),
                want
            );
        }
    }

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
/// JSON object per line (CloudWatch), else text. Logs go to stderr: line by line, or, with
/// `batched` (the long-running servers), through [`Batched`].
pub fn init(json: bool, batched: bool) {
    let spec = filter_spec(&std::env::var("JOTGATE_LOG").unwrap_or_default());
    let filter = tracing_subscriber::EnvFilter::try_new(&spec)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter_spec("info")));
    let writer = if batched {
        BoxMakeWriter::new(Batched::start())
    } else {
        BoxMakeWriter::new(std::io::stderr)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    if json {
        builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLines::new())
            .init();
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        // Colours for the level and the names, PlainFields for the values: escaped on a
        // terminal too (`docker run -t`), where an escape sequence would do the most harm.
        builder
            .with_ansi(true)
            .fmt_fields(PlainFields)
            .event_format(TextLines)
            .init();
    } else {
        builder
            .with_ansi(false)
            .fmt_fields(PlainFields)
            .event_format(TextLines)
            .init();
        // Only where no span encloses the request, as under lambda_runtime's
        // invocation span: the hand-written line names the request alone. Asked once: the
        // filter is fixed from here on.
        if batched && tracing::enabled!(target: "access", tracing::Level::INFO) {
            jotgate_verify::service::set_access_writer(access_line);
        }
    }
}

/// Text lines as `tracing-subscriber`'s full format writes them (time, level, spans,
/// target, fields), with the request a line is written for
/// ([`RequestContext`](jotgate_verify::service::RequestContext)) named as a span: first, or
/// after the span the request began in (lambda_runtime's), where the span was:
/// `2026-12-03T07:04:27.123456Z  WARN request{method=POST path=/login request_id=…}:
/// jotgate_server::routes: …`.
pub struct TextLines;

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        use std::time::{SystemTime, UNIX_EPOCH};
        use tracing::Level;
        let (dim, bold, end) = if w.has_ansi_escapes() {
            ("\x1b[2m", "\x1b[1m", "\x1b[0m")
        } else {
            ("", "", "")
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        write!(
            w,
            "{dim}{}{:06}Z{end} ",
            date_time(now.as_secs()),
            now.subsec_micros()
        )?;
        // A `log` record's own target and level, not `log`'s (as tracing-subscriber's).
        let normalized = tracing_log::NormalizeEvent::normalized_metadata(event);
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let level = *meta.level();
        if w.has_ansi_escapes() {
            let colour = match level {
                Level::TRACE => "35",
                Level::DEBUG => "34",
                Level::INFO => "32",
                Level::WARN => "33",
                Level::ERROR => "31",
            };
            write!(w, "\x1b[{colour}m{level:>5}{end} ")?;
        } else {
            write!(w, "{level:>5} ")?;
        }
        let request = |w: &mut Writer<'_>| {
            jotgate_verify::service::RequestContext::with_current(|r| {
                write!(
                    w,
                    "{bold}request{{{end}method={} path={} request_id={}{bold}}}{end}{dim}:{end}",
                    r.method(),
                    r.path(),
                    r.request_id()
                )
            })
            .unwrap_or(Ok(()))
        };
        // The request comes after the span it began in (lambda_runtime's), else first.
        let outer =
            jotgate_verify::service::RequestContext::with_current(|r| r.outer_span().cloned());
        let mut seen = matches!(outer, Some(None));
        if seen {
            request(&mut w)?;
        }
        let mut after = outer.flatten();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(w, "{bold}{}{end}", span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(w, "{bold}{{{end}{fields}{bold}}}{end}")?;
                }
                write!(w, "{dim}:{end}")?;
                if after.as_ref() == Some(&span.id()) {
                    after = None;
                    request(&mut w)?;
                }
            }
        }
        if after.is_some() {
            // Its span is not this line's: after the ones that are.
            request(&mut w)?;
            seen = true;
        }
        if seen {
            w.write_char(' ')?;
        }
        write!(w, "{dim}{}:{end} ", meta.target())?;
        ctx.format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

/// JSON lines as `tracing-subscriber`'s JSON format writes them (`timestamp`, `level`, the
/// fields flattened, `target`, the current span as `span`), where the span of a line
/// written for a request is that request
/// (`"span":{"method":…,"path":…,"request_id":…,"name":"request"}`).
pub struct JsonLines {
    with_span: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
    without_span: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Json>,
}

impl JsonLines {
    pub fn new() -> Self {
        let json = || {
            tracing_subscriber::fmt::format()
                .json()
                .flatten_event(true)
                .with_span_list(false)
        };
        Self {
            with_span: json().with_current_span(true),
            without_span: json().with_current_span(false),
        }
    }
}

impl Default for JsonLines {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let request = jotgate_verify::service::RequestContext::with_current(|r| {
            let text = |v: &str| serde_json::to_string(v).unwrap_or_else(|_| "\"\"".into());
            format!(
                r#","span":{{"method":{},"path":{},"request_id":{},"name":"request"}}}}"#,
                text(r.method()),
                text(&r.path().to_string()),
                text(r.request_id())
            )
        });
        let Some(span) = request else {
            return self.with_span.format_event(ctx, w, event);
        };
        let mut line = String::new();
        self.without_span
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_suffix("}\n") {
            Some(object) => {
                w.write_str(object)?;
                w.write_str(&span)?;
                w.write_char('\n')
            }
            None => w.write_str(&line),
        }
    }
}

/// An access line in the text format (`tracing`'s, with [`PlainFields`]), formatted by
/// hand: a timestamp whose date and time of day are made once a second, the fields
/// appended. Written where the other lines go.
fn access_line(l: &jotgate_verify::service::AccessLine<'_>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        // The second the prefix is for, `YYYY-MM-DDTHH:MM:SS.` of it, the line.
        static BUF: RefCell<(u64, String, String)> =
            const { RefCell::new((u64::MAX, String::new(), String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    BUF.with_borrow_mut(|(second, prefix, line)| {
        if *second != now.as_secs() {
            *second = now.as_secs();
            *prefix = date_time(now.as_secs());
        }
        line.clear();
        line.push_str(prefix);
        let mut n = itoa::Buffer::new();
        line.push_str(&n.format(1_000_000 + now.subsec_micros())[1..]);
        line.push('Z');
        access_text(line, l);
        line.push('\n');
        emit(line.as_bytes(), false);
    });
}

/// An access line after its timestamp, as `tracing` with [`PlainFields`] writes it.
fn access_text(line: &mut String, l: &jotgate_verify::service::AccessLine<'_>) {
    let mut n = itoa::Buffer::new();
    line.push_str("  INFO request{method=");
    line.push_str(l.method);
    line.push_str(" path=");
    l.path.push_to(line);
    line.push_str(" request_id=");
    line.push_str(l.request_id);
    line.push_str("}: access: answered status=");
    line.push_str(n.format(l.status));
    line.push_str(" latency_us=");
    line.push_str(n.format(l.latency_us));
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC) of a time in milliseconds since the epoch.
pub fn date_time_ms(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    format!("{}{:03}Z", date_time(ms / 1000), ms % 1000)
}

/// `YYYY-MM-DDTHH:MM:SS.` (UTC) of a Unix time (days to a civil date: Howard Hinnant's
/// algorithm).
fn date_time(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The fields of text log lines without colours, as tracing-subscriber writes them
/// (`message name=value …`, a string quoted), at a fraction of the cost (its default
/// pays for colour codes it then leaves out: two thirds of an access line's time), and
/// with every control character of a value escaped, so no value can forge a line.
pub struct PlainFields;

impl<'w> FormatFields<'w> for PlainFields {
    fn format_fields<R: RecordFields>(&self, mut writer: Writer<'w>, fields: R) -> fmt::Result {
        use std::cell::RefCell;
        thread_local! {
            static SCRATCH: RefCell<String> = const { RefCell::new(String::new()) };
        }
        let record = |w: Writer<'_>| {
            let mut v = PlainVisitor {
                w,
                empty: true,
                result: Ok(()),
            };
            fields.record(&mut v);
            v.result
        };
        // Formatted in a scratch buffer first, then handed over in one piece: a span's
        // fields go to a fresh String, which grew (and reallocated) field by field.
        // A value whose formatting logs (re-entering here) formats straight through.
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                record(Writer::new(&mut *buf))?;
                writer.write_str(&buf)
            }
            Err(_) => record(writer),
        })
    }
}

struct PlainVisitor<'w> {
    w: Writer<'w>,
    empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    fn put(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let name = field.name();
        if self.result.is_err() || name.starts_with("log.") {
            return;
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        if !std::mem::take(&mut self.empty) {
            self.result = self.w.write_char(' ');
        }
        if name != "message" {
            self.result = self.result.and_then(|()| write!(self.w, "{name}="));
        }
        self.result = self
            .result
            .and_then(|()| write!(Escaping(&mut self.w), "{value:?}"));
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.put(field, &format_args!("{value}"));
        } else {
            self.put(field, &value);
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        match value.source() {
            None => self.put(field, &format_args!("{value}")),
            Some(_) => {
                let mut chain = value.to_string();
                let mut next = value.source();
                while let Some(e) = next {
                    chain.push_str(": ");
                    chain.push_str(&e.to_string());
                    next = e.source();
                }
                self.put(field, &format_args!("{chain}"));
            }
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, value);
    }
}

/// Writes through, control characters (C0, DEL, C1) escaped.
struct Escaping<'a, W>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // C1 controls are U+0080..U+009F: 0xC2 0x80..0x9F in UTF-8.
        if !s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2) {
            return self.0.write_str(s);
        }
        for c in s.chars() {
            if c.is_control() {
                write!(self.0, "{}", c.escape_default())?;
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// How long an `info` line may wait to be written with the ones after it. Each batch
/// wakes the writer's thread, and on a busy core every wake-up costs the requests around
/// it: measured pinned on one core, a cached token's request rate rose 3–5 % from 2 ms to
/// 10 ms (docs/benchmarks.md).
const BATCH_DELAY: Duration = Duration::from_millis(10);
/// Written at once, by the thread that logs, past this many waiting bytes: about 1,800
/// access lines, which at 10 ms is past 180,000 requests a second.
const BATCH_BYTES: usize = 256 * 1024;
/// A buffer's room to begin with, and what it shrinks back to once the lines slow down.
const BATCH_ROOM: usize = 16 * 1024;

/// The log writer of `serve` and `gateway`: one `write(2)` per batch of lines instead of
/// one per line, so the log's system calls stay a few hundred a second whatever the
/// request rate, and off the request's thread. A line waits about [`BATCH_DELAY`] (plus
/// the write of the batch before it); a `warn` or `error` line is written at once with
/// everything before it, in order. [`flush`] at exit and in the panic hook, so no line is
/// lost but to `kill -9` (the last batch of `info` lines). Not for Lambda, which freezes the process as soon as it has
/// answered.
#[derive(Clone, Copy)]
pub struct Batched;

struct Sink {
    waiting: Mutex<Waiting>,
    wake: Condvar,
    /// The other buffer, empty between batches; held while a batch is written, taken before
    /// `waiting` is released: batches reach stderr in the order they were taken.
    out: Mutex<Vec<u8>>,
}

/// Lines not yet written, and whether the writer waits for them.
struct Waiting {
    lines: Vec<u8>,
    /// The writer is parked on `wake`: the next line must wake it. Otherwise (it sleeps out
    /// a batch's delay, or writes) nobody calls it: a wake is a system call, and under load
    /// one per batch for every thread that logged first in it.
    parked: bool,
}

static SINK: OnceLock<&'static Sink> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Sink {
    fn push(&self, line: &[u8], urgent: bool) {
        let mut waiting = lock(&self.waiting);
        waiting.lines.extend_from_slice(line);
        if urgent || waiting.lines.len() >= BATCH_BYTES {
            self.write(waiting);
        } else if std::mem::take(&mut waiting.parked) {
            drop(waiting);
            self.wake.notify_one();
        }
    }

    fn write(&self, mut waiting: MutexGuard<'_, Waiting>) {
        if waiting.lines.is_empty() {
            return;
        }
        // The two buffers change places: both keep their capacity, and lines go on
        // arriving in the other while this one is written.
        let mut out = lock(&self.out);
        std::mem::swap(&mut *out, &mut waiting.lines);
        drop(waiting);
        // Nowhere to report a failed write to stderr.
        let _ = std::io::stderr().write_all(&out);
        // A buffer grows with the traffic and gives its pages back when it slows down.
        let room = (2 * out.len()).max(BATCH_ROOM);
        out.clear();
        if out.capacity() > 2 * room {
            out.shrink_to(room);
        }
    }

    fn run(&self) {
        loop {
            let mut waiting = lock(&self.waiting);
            let mut quiet = false;
            while waiting.lines.is_empty() {
                waiting.parked = true;
                if quiet {
                    waiting = self.wake.wait(waiting).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                let (w, wait) = self
                    .wake
                    .wait_timeout(waiting, BATCH_DELAY)
                    .unwrap_or_else(|p| p.into_inner());
                waiting = w;
                if wait.timed_out() && waiting.lines.is_empty() {
                    // No line for a batch's delay: the traffic stopped, and both buffers
                    // (the other is empty between batches) give back what it made them.
                    // Not on a moment's emptiness between batches: under load they would
                    // shrink and regrow every batch.
                    quiet = true;
                    waiting.lines.shrink_to(BATCH_ROOM);
                    lock(&self.out).shrink_to(BATCH_ROOM);
                }
            }
            waiting.parked = false;
            drop(waiting);
            std::thread::sleep(BATCH_DELAY);
            self.write(lock(&self.waiting));
        }
    }
}

impl Batched {
    /// The writer, its thread started (once) and [`flush`] added to the panic hook. Without
    /// a thread, lines are written by the thread that logs them.
    pub fn start() -> Self {
        if SINK.get().is_some() {
            return Batched;
        }
        let sink: &'static Sink = Box::leak(Box::new(Sink {
            waiting: Mutex::new(Waiting {
                lines: Vec::with_capacity(BATCH_ROOM),
                parked: false,
            }),
            wake: Condvar::new(),
            out: Mutex::new(Vec::with_capacity(BATCH_ROOM)),
        }));
        let spawned = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || sink.run());
        if spawned.is_err() {
            eprintln!("warning: no thread for the log writer; logging line by line");
            return Batched;
        }
        if SINK.set(sink).is_ok() {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                flush();
                previous(info);
            }));
        }
        Batched
    }
}

/// One line to [`Batched`]'s buffer, or straight to stderr when it has no thread.
fn emit(line: &[u8], urgent: bool) {
    match SINK.get() {
        Some(sink) => sink.push(line, urgent),
        // Nowhere to report a failed write to stderr.
        None => {
            let _ = std::io::stderr().write_all(line);
        }
    }
}

/// Write the lines [`Batched`] holds.
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.write(lock(&sink.waiting));
        // And the batch the writer's thread may be writing: it holds `out` until written.
        drop(lock(&sink.out));
    }
}

/// One log line on its way to [`Batched`]'s buffer.
pub struct BatchedLine {
    urgent: bool,
}

impl Write for BatchedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        emit(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = BatchedLine;

    fn make_writer(&'a self) -> BatchedLine {
        BatchedLine { urgent: true }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> BatchedLine {
        BatchedLine {
            urgent: *meta.level() <= tracing::Level::WARN,
        }
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

/// Print a fatal error on stderr, after the log lines still waiting.
pub fn report(e: &anyhow::Error) {
    flush();
    eprint!("{}", render(e));
}

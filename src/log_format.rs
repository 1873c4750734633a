//! The text layout of a log line, written straight into the line's buffer:
//!
//! `2026-12-01T17:31:52.694951Z  INFO switchyard::http: request channel=bench status=200`
//!
//! the layout of tracing-subscriber's default format (timestamp, level,
//! target, message, `name=value` fields; control characters in the message
//! escaped the same way) without its styling and `fmt` round trips, which
//! cost ≈ 11 000 instructions a line: a sixth of a scripted request. The
//! server opens no `tracing` spans, so none are written.
//!
//! The two lines written for every call (a request, a websocket message)
//! skip `tracing`'s event machinery as well: [`direct`] writes them straight
//! into the log buffer, in this layout or in tracing-subscriber's JSON one
//! (`log_format = "json"`), when `RUST_LOG` lets them through (the callers
//! ask `tracing::enabled!`).

use std::cell::RefCell;
use std::fmt::{self, Write};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The text line formatter (`log_format = "text"`, the default).
pub struct TextLine;

impl<S, N> FormatEvent<S, N> for TextLine
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        timestamp(&mut writer)?;
        let meta = event.metadata();
        writer.write_str(level(meta.level()))?;
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut fields = Fields {
            out: &mut writer,
            first: true,
            result: Ok(()),
        };
        event.record(&mut fields);
        fields.result?;
        writer.write_char('\n')
    }
}

/// The level padded to five characters, with the spaces around it.
fn level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => " ERROR ",
        Level::WARN => "  WARN ",
        Level::INFO => "  INFO ",
        Level::DEBUG => " DEBUG ",
        Level::TRACE => " TRACE ",
    }
}

/// The layout [`direct`] writes lines in: `log_format`'s.
#[derive(Clone, Copy)]
pub enum Layout {
    /// [`TextLine`]'s.
    Text,
    /// tracing-subscriber's JSON format with flattened fields.
    Json,
}

/// The log buffer lines are written into directly, and their layout; set
/// when the logs are set up.
static DIRECT: OnceLock<(crate::log_writer::Lines, Layout)> = OnceLock::new();

/// Lets [`direct`] write into `lines` in `layout`.
pub fn enable_direct(lines: crate::log_writer::Lines, layout: Layout) {
    let _ = DIRECT.set((lines, layout));
}

/// A field of a line written by [`direct`].
pub enum Value<'a> {
    /// Written as it is (a `%` field).
    Text(&'a str),
    /// A number.
    Number(u64),
    /// `true` or `false`.
    Bool(bool),
    /// Milliseconds with three decimals.
    Millis(Duration),
    /// JSON text (a websocket frame's qid).
    Json(&'a serde_json::Value),
}

/// Writes an info line of `target` into the log buffer without `tracing`,
/// laid out as `tracing` would lay out the same event (a `%` field for each
/// text, `Millis` and `Json` value). The caller has checked that the level lets
/// it through (`tracing::enabled!`); before the logs are set up nothing is written.
pub fn direct(target: &str, message: &str, fields: &[(&str, Value<'_>)]) {
    let Some((lines, layout)) = DIRECT.get() else {
        return;
    };
    thread_local! {
        static LINE: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    LINE.with(|line| {
        let mut line = line.borrow_mut();
        line.clear();
        let _ = match layout {
            Layout::Text => info_line(&mut Bytes(&mut line), target, message, fields),
            Layout::Json => json_line(&mut line, target, message, fields),
        };
        let mut out = tracing_subscriber::fmt::MakeWriter::make_writer(lines);
        let _ = std::io::Write::write_all(&mut out, &line);
    });
}

/// Text written into a byte buffer.
struct Bytes<'a>(&'a mut Vec<u8>);

impl Write for Bytes<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The JSON of an info line, as tracing-subscriber's JSON format with
/// flattened fields lays out the same event.
fn json_line(
    out: &mut Vec<u8>,
    target: &str,
    message: &str,
    fields: &[(&str, Value<'_>)],
) -> fmt::Result {
    let string = |out: &mut Vec<u8>, s: &str| serde_json::to_writer(out, s).map_err(|_| fmt::Error);
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(&mut Bytes(out))?;
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":");
    string(out, message)?;
    for (name, value) in fields {
        out.push(b',');
        string(out, name)?;
        out.push(b':');
        match value {
            Value::Text(text) => string(out, text)?,
            Value::Number(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
            Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Millis(d) => {
                out.push(b'"');
                millis(&mut Bytes(out), *d)?;
                out.push(b'"');
            }
            Value::Json(v) => string(out, &v.to_string())?,
        }
    }
    out.extend_from_slice(b",\"target\":");
    string(out, target)?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// The text of an info line, as [`TextLine`] lays out the same event.
fn info_line(
    out: &mut impl Write,
    target: &str,
    message: &str,
    fields: &[(&str, Value<'_>)],
) -> fmt::Result {
    timestamp(out)?;
    out.write_str(level(&Level::INFO))?;
    out.write_str(target)?;
    out.write_str(": ")?;
    Escaping(out).write_str(message)?;
    for (name, value) in fields {
        out.write_char(' ')?;
        out.write_str(name)?;
        out.write_char('=')?;
        match value {
            Value::Text(text) => Escaping(out).write_str(text)?,
            Value::Number(n) => out.write_str(itoa::Buffer::new().format(*n))?,
            Value::Bool(b) => out.write_str(if *b { "true" } else { "false" })?,
            Value::Millis(d) => millis(out, *d)?,
            Value::Json(serde_json::Value::Number(n)) if n.is_u64() => {
                out.write_str(itoa::Buffer::new().format(n.as_u64().unwrap_or(0)))?
            }
            Value::Json(v) => write!(out, "{v}")?,
        }
    }
    out.write_char('\n')
}

/// A duration as milliseconds with three decimals (`12.345`), written with
/// integers: a float's exact formatting, or `core::fmt`'s, costs more than the
/// rest of a line's fields.
fn millis(out: &mut impl Write, d: Duration) -> fmt::Result {
    let micros = d.as_micros();
    out.write_str(itoa::Buffer::new().format(micros / 1000))?;
    let frac = (micros % 1000) as u16;
    let digits = [
        b'.',
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ];
    out.write_str(std::str::from_utf8(&digits).unwrap_or(".000"))
}

/// `2026-12-01T17:31:52.694951Z` (UTC, microseconds); the part up to the
/// seconds is made once a second per thread.
fn timestamp(out: &mut impl Write) -> fmt::Result {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    SECOND.with(|second| {
        let mut second = second.borrow_mut();
        if second.0 != secs {
            let at = chrono::DateTime::from_timestamp(secs as i64, 0).unwrap_or_default();
            second.1 = at.format("%Y-%m-%dT%H:%M:%S.").to_string();
            second.0 = secs;
        }
        out.write_str(&second.1)
    })?;
    let mut micros = now.subsec_micros();
    let mut digits = [b'0'; 7];
    digits[6] = b'Z';
    for d in digits[..6].iter_mut().rev() {
        *d = b'0' + (micros % 10) as u8;
        micros /= 10;
    }
    out.write_str(std::str::from_utf8(&digits).unwrap_or("000000Z"))
}

/// Writes the message, then ` name=value` for each other field (values in
/// their `Debug` form, so strings are quoted), like tracing-subscriber.
struct Fields<'a, 'w> {
    out: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl Fields<'_, '_> {
    fn start(&mut self, field: &Field) -> fmt::Result {
        if self.first {
            self.first = false;
        } else {
            self.out.write_char(' ')?;
        }
        if field.name() != "message" {
            let name = field.name();
            self.out
                .write_str(name.strip_prefix("r#").unwrap_or(name))?;
            self.out.write_char('=')?;
        }
        Ok(())
    }

    fn value(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_ok() {
            self.result = self
                .start(field)
                .and_then(|()| Escaping(&mut *self.out).write_fmt(value));
        }
    }
}

impl Visit for Fields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            if self.result.is_ok() {
                self.result = self
                    .start(field)
                    .and_then(|()| Escaping(&mut *self.out).write_str(value));
            }
        } else {
            self.value(field, format_args!("{value:?}"));
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.value(field, format_args!("{value}"));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.value(field, format_args!("{value}"));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.result.is_ok() {
            self.result = self
                .start(field)
                .and_then(|()| self.out.write_str(if value { "true" } else { "false" }));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.value(field, format_args!("{value:?}"));
    }
}

/// Escapes the terminal control characters tracing-subscriber escapes in a
/// message (ESC, BEL, BS, FF, DEL and the C1 controls), so a message cannot
/// drive the terminal of whoever reads the log, and every other control
/// character but the tab (line feed and carriage return as `\n` and `\r`),
/// so a value cannot end its line and forge the next one. Applied to the
/// message and to every field written as text.
struct Escaping<'a, W: Write>(&'a mut W);

impl<W: Write> Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let escaped =
            |c: char| matches!(c, '\x00'..='\x08' | '\x0a'..='\x1f' | '\x7f' | '\u{80}'..='\u{9f}');
        let mut rest = s;
        while let Some(at) = rest.find(escaped) {
            self.0.write_str(&rest[..at])?;
            let c = rest[at..].chars().next().unwrap_or_default();
            match c as u32 {
                0x0a => self.0.write_str("\\n")?,
                0x0d => self.0.write_str("\\r")?,
                n @ 0x80.. => write!(self.0, "\\u{{{n:x}}}")?,
                n => write!(self.0, "\\x{n:02x}")?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        self.0.write_str(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Sink {
        /// A `MakeWriter` for a subscriber: every line lands in this sink.
        fn make_writer(&self) -> impl Fn() -> Sink + Send + Sync + 'static {
            let sink = self.clone();
            move || sink.clone()
        }
    }

    /// What `log` writes through tracing-subscriber's default format (no
    /// colours), or through ours.
    fn written(ours: bool, log: impl Fn()) -> String {
        let sink = Sink::default();
        let writer = sink.make_writer();
        let builder = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer);
        if ours {
            tracing::subscriber::with_default(builder.event_format(TextLine).finish(), log);
        } else {
            tracing::subscriber::with_default(builder.finish(), log);
        }
        let bytes = sink.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    /// The same events through both formats, each line without its timestamp.
    fn both(log: impl Fn()) -> (String, String) {
        let lines = |ours: bool| {
            written(ours, &log)
                .lines()
                .map(|l| l.split_once(' ').map_or("", |(_, rest)| rest).to_owned())
                .collect::<Vec<_>>()
                .join("\n")
        };
        (lines(false), lines(true))
    }

    #[test]
    fn lines_are_laid_out_as_tracing_subscribers_default_format() {
        let (theirs, ours) = both(|| {
            tracing::info!(channel = %"bench", status = 200u16, success = true, "request");
            tracing::warn!(
                reason = "a \"quoted\" reason",
                code = -3i64,
                "websocket closed"
            );
            tracing::error!(r#type = ?Some(1), "bad \x1b[31m news \u{85}\x07\x08\x0c\x7f end");
            tracing::debug!("only a message");
            tracing::info!(ms = 1.5f64, "a float");
        });
        assert!(theirs.contains("INFO"), "{theirs}");
        assert_eq!(ours, theirs);
    }

    #[test]
    fn a_line_break_in_a_message_or_a_field_cannot_forge_a_line() {
        let forged = "ok\n2026-12-04T00:00:00.000000Z  INFO switchyard::http: admin signed in\r";
        let ours = written(true, || {
            tracing::info!(target: "switchyard::script", channel = %forged, "script: {forged}");
        });
        assert_eq!(ours.lines().count(), 1, "{ours}");
        assert!(
            ours.contains(r"script: ok\n2026-12-04T00:00:00.000000Z  INFO switchyard::http: admin signed in\r channel=ok\n2026"),
            "{ours}"
        );
        let mut line = String::new();
        info_line(
            &mut line,
            "switchyard::http",
            "request",
            &[("path", Value::Text(forged))],
        )
        .unwrap();
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(line.contains(r"path=ok\n2026"), "{line}");
    }

    #[test]
    fn a_direct_line_is_what_tracing_would_write() {
        let took = Duration::from_micros(12_345);
        for qid in [
            serde_json::json!("q-1"),
            serde_json::json!(17),
            serde_json::json!(u64::MAX),
            serde_json::json!(-3),
            serde_json::json!(1.5),
            serde_json::json!(null),
        ] {
            let (theirs, _) = both(|| {
                tracing::info!(
                    target: "switchyard::ws",
                    channel = %"bench",
                    connection = %"c1",
                    qid = %qid,
                    success = true,
                    status = 200u16,
                    duration_ms = %"12.345",
                    "message"
                )
            });
            let mut ours = String::new();
            let fields = [
                ("channel", Value::Text("bench")),
                ("connection", Value::Text("c1")),
                ("qid", Value::Json(&qid)),
                ("success", Value::Bool(true)),
                ("status", Value::Number(200)),
                ("duration_ms", Value::Millis(took)),
            ];
            info_line(&mut ours, "switchyard::ws", "message", &fields).unwrap();
            assert!(ours.ends_with('\n'), "{ours:?}");
            let (stamp, rest) = ours.trim_end().split_once(' ').unwrap();
            assert!(
                chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
                "{stamp}"
            );
            assert_eq!(rest, theirs);
            assert!(
                theirs.contains(&format!(
                    "qid={qid} success=true status=200 duration_ms=12.345"
                )),
                "{theirs}"
            );
        }
    }

    #[test]
    fn durations_are_milliseconds_with_three_decimals() {
        for (micros, text) in [
            (0, "0.000"),
            (7, "0.007"),
            (40, "0.040"),
            (999, "0.999"),
            (12_345, "12.345"),
            (1_000_000, "1000.000"),
            (86_400_000_001, "86400000.001"),
        ] {
            let d = Duration::from_micros(micros);
            let mut direct = String::new();
            let _ = info_line(&mut direct, "t", "m", &[("d", Value::Millis(d))]);
            assert!(direct.ends_with(&format!(" d={text}\n")), "{direct}");
            let mut json = Vec::new();
            let _ = json_line(&mut json, "t", "m", &[("d", Value::Millis(d))]);
            let json: serde_json::Value = serde_json::from_slice(&json).unwrap();
            assert_eq!(json["d"], text);
        }
    }

    #[test]
    fn a_direct_json_line_is_what_tracing_would_write() {
        let sink = Sink::default();
        let writer = sink.make_writer();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(writer)
            .json()
            .flatten_event(true)
            .finish();
        let qids = [
            serde_json::json!("q-\"1\"\u{7}"),
            serde_json::json!(17),
            serde_json::json!(null),
        ];
        let mut ours = Vec::new();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                target: "switchyard::http",
                channel = %"bench",
                request_id = %"r-1",
                method = %"POST",
                path = %"/channels/bench/api/\"quoted\"\\ ünï",
                status = 200u16,
                duration_ms = %"12.345",
                "request"
            );
            let fields = [
                ("channel", Value::Text("bench")),
                ("request_id", Value::Text("r-1")),
                ("method", Value::Text("POST")),
                ("path", Value::Text("/channels/bench/api/\"quoted\"\\ ünï")),
                ("status", Value::Number(200)),
                ("duration_ms", Value::Millis(Duration::from_micros(12_345))),
            ];
            json_line(&mut ours, "switchyard::http", "request", &fields).unwrap();
            for qid in &qids {
                tracing::info!(
                    target: "switchyard::ws",
                    channel = %"bench",
                    connection = %"c1",
                    qid = %qid,
                    success = false,
                    duration_ms = %"0.007",
                    "message"
                );
                let fields = [
                    ("channel", Value::Text("bench")),
                    ("connection", Value::Text("c1")),
                    ("qid", Value::Json(qid)),
                    ("success", Value::Bool(false)),
                    ("duration_ms", Value::Millis(Duration::from_micros(7))),
                ];
                json_line(&mut ours, "switchyard::ws", "message", &fields).unwrap();
            }
        });
        let theirs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let ours = String::from_utf8(ours).unwrap();
        let without_stamp = |text: &str| {
            text.lines()
                .map(|line| {
                    let (stamp, rest) = line.split_once("\",\"level\"").unwrap();
                    let stamp = stamp.strip_prefix("{\"timestamp\":\"").unwrap();
                    assert!(
                        chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
                        "{line}"
                    );
                    rest.to_owned()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(theirs.lines().count(), 4, "{theirs}");
        assert_eq!(without_stamp(&ours), without_stamp(&theirs));
        assert!(ours.ends_with('\n'));
    }

    #[test]
    fn the_timestamp_is_rfc3339_utc_with_microseconds() {
        let text = written(true, || tracing::info!("x"));
        let stamp = text.split(' ').next().unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{stamp:?} in {text:?}"
        );
        assert_eq!(stamp.len(), "2026-12-01T17:31:52.694951Z".len(), "{stamp}");
    }
}

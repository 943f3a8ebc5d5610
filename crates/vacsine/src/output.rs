//! What the CLI prints, and how: stdout writers, JSON (one document or one line), errors and
//! located diagnostics (JSON on stdout under `--format json`, miette on stderr otherwise), and
//! the shared tables (step records, durations). Every subcommand prints through here; nothing
//! here decides an exit code (that is [`crate::exit`]), it only returns the one it was given.

use crate::exit::Exit;
use miette::Report as Diag;
use std::collections::HashSet;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use vacsine_core::doc::LoadError;
use vacsine_core::record::StepRecord;

/// Whether errors are printed as JSON on stdout (`--format json`, `sarif`) rather than as
/// human diagnostics on stderr. Set once, by [`crate::commands::dispatch`].
static JSON_ERRORS: AtomicBool = AtomicBool::new(false);

/// Print the errors of this invocation as JSON on stdout (`true`) or as diagnostics on stderr.
pub fn set_json_errors(json: bool) {
    JSON_ERRORS.store(json, Ordering::Relaxed);
}

fn json_errors() -> bool {
    JSON_ERRORS.load(Ordering::Relaxed)
}

/// Write `s` to stdout as is, flushed (a closed pipe is not an error worth a panic).
pub fn print(s: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(s.as_bytes());
    let _ = out.flush();
}

/// One pretty JSON document on stdout.
pub fn print_json(v: &impl serde::Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => print(&format!("{s}\n")),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

/// A value on one line of stdout: valid JSON for the commands that print one document and one
/// line of the JSON Lines that `run`, `logs` and `watch` print.
pub fn print_json_line(v: &impl serde::Serialize) {
    match serde_json::to_string(v) {
        Ok(s) => print(&format!("{s}\n")),
        Err(e) => eprintln!("error: cannot render JSON: {e}"),
    }
}

/// A located error as JSON: message, help, file, line, column.
fn load_error_json(l: &LoadError) -> serde_json::Value {
    serde_json::json!({
        "message": l.message,
        "help": l.help,
        "file": l.file,
        "line": l.line,
        "column": l.column,
    })
}

/// An error as JSON: located when it is a [`LoadError`], else its message and help.
fn error_json(e: &miette::Report) -> serde_json::Value {
    match e.downcast_ref::<LoadError>() {
        Some(l) => load_error_json(l),
        None => serde_json::json!({
            "message": e.to_string(),
            "help": e.help().map(|h| h.to_string()),
        }),
    }
}

/// Print an error that ends the command (as `{"error": {...}}` on stdout under `--format
/// json`, as a diagnostic on stderr otherwise); its exit code is [`Exit::of_error`].
pub fn report_error(e: miette::Report) -> Exit {
    if json_errors() {
        print_json_line(&serde_json::json!({ "error": error_json(&e) }));
    } else {
        eprintln!("{e:?}");
    }
    Exit::of_error(&e)
}

/// Print located diagnostics (bad input): [`Exit::Error`]. Under `--format json`: one
/// `{"error": {...}}` object for one problem, `{"errors": [...]}` for several.
pub fn print_diagnostics(errors: Vec<LoadError>) -> Exit {
    if json_errors() {
        let mut v: Vec<_> = errors.iter().map(load_error_json).collect();
        if v.len() == 1 {
            print_json_line(&serde_json::json!({ "error": v.remove(0) }));
        } else {
            print_json_line(&serde_json::json!({ "errors": v }));
        }
        return Exit::Error;
    }
    let n = errors.len();
    for e in errors {
        eprintln!("{:?}", Diag::new(e));
    }
    eprintln!("{n} problem{} found", if n == 1 { "" } else { "s" });
    Exit::Error
}

/// A measured duration in milliseconds, or `—` when none was measured (a step interrupted by
/// a crash: its end, journaled on resume, says when the crash was noticed, not how long it
/// ran).
pub fn duration_ms_text(ms: Option<u64>) -> String {
    ms.map_or_else(|| "—".to_string(), |ms| format!("{ms}ms"))
}

/// The time between two RFC 3339 instants as `1.23s`, or `-` when either is missing or
/// unreadable.
pub fn elapsed_text(started: &str, finished: Option<&str>) -> String {
    finished
        .and_then(|f| {
            let a = chrono::DateTime::parse_from_rfc3339(started).ok()?;
            let b = chrono::DateTime::parse_from_rfc3339(f).ok()?;
            Some(format!(
                "{:.2}s",
                (b - a).num_milliseconds() as f64 / 1000.0
            ))
        })
        .unwrap_or_else(|| "-".into())
}

/// Whether [`print_record`] prints the step's messages under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Messages {
    Shown,
    Hidden,
}

/// One step record as a table row (start, step#attempt, node, status, duration, executor),
/// then its messages (when `messages` is [`Messages::Shown`]) and its error.
pub fn print_record(out: &mut impl Write, r: &StepRecord, messages: Messages) {
    let _ = writeln!(
        out,
        "{}  {:<24} {:<10} {:<12} {:>9}  {}{}",
        r.started_at,
        format!("{}#{}", r.step_id, r.attempt),
        r.node.as_deref().unwrap_or("-"),
        r.status.as_str(),
        duration_ms_text(r.duration_ms),
        r.executor,
        if r.changed { " (changed)" } else { "" }
    );
    if messages == Messages::Shown {
        for m in &r.messages {
            let _ = writeln!(out, "      {} {:?}: {}", m.at, m.level, m.text);
        }
    }
    if let Some(e) = &r.error {
        let _ = writeln!(out, "      error: {e}");
    }
}

/// What tells step records apart: their step, attempt and node.
type RecordKey = (String, u32, Option<String>);

/// The one way step records are printed as they come (`run`, `logs`, `agent run`, and runs
/// followed at the orchestrator): a table row each ([`print_record`]) or a JSON line each.
/// Made with [`RecordPrinter::once`], it prints a record once however often it is given
/// (records read back again and again).
pub struct RecordPrinter {
    json: bool,
    messages: Messages,
    /// The keys of the records printed, when each is printed once.
    printed: Option<HashSet<RecordKey>>,
}

impl RecordPrinter {
    /// Records as JSON Lines (`json`) or table rows, with or without their messages; every
    /// record given is printed.
    pub fn new(json: bool, messages: Messages) -> Self {
        RecordPrinter {
            json,
            messages,
            printed: None,
        }
    }

    /// This printer, printing each record (step, attempt, node) once.
    pub fn once(mut self) -> Self {
        self.printed = Some(HashSet::new());
        self
    }

    /// Whether `r` is to be printed now (not printed yet, or every record is); remembered.
    fn first_time(&mut self, r: &StepRecord) -> bool {
        match &mut self.printed {
            Some(p) => p.insert((r.step_id.clone(), r.attempt, r.node.clone())),
            None => true,
        }
    }

    /// Print `r` to `out`: its JSON line, or its table row.
    pub fn print(&mut self, out: &mut impl Write, r: &StepRecord) {
        if !self.first_time(r) {
            return;
        }
        if self.json {
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            print_record(out, r, self.messages);
        }
    }
}

/// Step records as a table (human, with their messages) or JSON Lines, on stdout.
pub fn print_records(records: &[StepRecord], json: bool) {
    let mut out = std::io::stdout().lock();
    let mut printer = RecordPrinter::new(json, Messages::Shown);
    for r in records {
        printer.print(&mut out, r);
    }
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration_ms_text(Some(12)), "12ms");
        assert_eq!(duration_ms_text(None), "—");
        assert_eq!(
            elapsed_text("2026-01-01T00:00:00Z", Some("2026-01-01T00:00:01.5Z")),
            "1.50s"
        );
        assert_eq!(elapsed_text("2026-01-01T00:00:00Z", None), "-");
        assert_eq!(elapsed_text("garbage", Some("2026-01-01T00:00:00Z")), "-");
    }

    fn record(step: &str, attempt: u32) -> StepRecord {
        StepRecord::started("r1", step, attempt, Some("web"), "command", "T0".into())
    }

    fn printed(printer: &mut RecordPrinter, records: &[StepRecord]) -> String {
        let mut out = Vec::new();
        for r in records {
            printer.print(&mut out, r);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_record_printer_prints_rows_or_json_lines_and_once_when_asked() {
        let (a, b) = (record("one", 1), record("one", 2));
        let mut every = RecordPrinter::new(false, Messages::Hidden);
        let text = printed(&mut every, &[a.clone(), a.clone()]);
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.starts_with("T0  one#1"), "{text}");
        let mut once = RecordPrinter::new(true, Messages::Hidden).once();
        let text = printed(&mut once, &[a.clone(), b.clone(), a.clone()]);
        let lines: Vec<StepRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines.iter().map(|r| r.attempt).collect::<Vec<_>>(),
            [1, 2],
            "{text}"
        );
        assert_eq!(printed(&mut once, &[b]), "", "already printed");
    }
}

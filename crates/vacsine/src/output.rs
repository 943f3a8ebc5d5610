//! What the CLI prints, and how: stdout writers, JSON (one document or one line), errors and
//! located diagnostics (JSON on stdout under `--format json`, miette on stderr otherwise), and
//! the shared tables (step records, durations). Every subcommand prints through here; nothing
//! here decides an exit code (that is [`crate::exit`]), it only returns the one it was given.

use crate::exit::Exit;
use miette::Report as Diag;
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

/// Step records as a table (human) or JSON Lines, on stdout.
pub fn print_records(records: &[StepRecord], json: bool) {
    let mut out = std::io::stdout().lock();
    for r in records {
        if json {
            let _ = writeln!(out, "{}", serde_json::to_string(r).unwrap_or_default());
        } else {
            print_record(&mut out, r, Messages::Shown);
        }
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
}

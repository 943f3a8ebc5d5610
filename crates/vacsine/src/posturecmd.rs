//! `vacsine posture` (issue 17): the posture the scheduled assessments show, now and over
//! time, per site and per framework control; and `kind: Schedule` files for `vacsine push`.

use crate::cli::{PostureCli, SimpleFormat};
use crate::exit::Exit;
use crate::orch::{call_err, client};
use crate::output::print_json;
use std::path::Path;
use vacsine_contract::proto;
use vacsine_contract::schedule::Schedule;
use vacsine_core::doc::{parse_as, LoadError};
use vacsine_orch::posture::{PostureView, OP_POSTURE};

/// `Some(document)` when `path` is a `kind: Schedule` file (read strictly, errors located at
/// file:line:column; the checks serde cannot make name the field); `None` for another kind.
pub fn load_schedule(path: &Path) -> Result<Option<proto::PushDocument>, LoadError> {
    #[derive(serde::Deserialize)]
    struct Probe {
        kind: Option<String>,
    }
    let source = vacsine_enforce::inputs::read_source(path)?;
    let is_schedule = parse_as::<Probe>(&source)
        .ok()
        .and_then(|p| p.kind)
        .is_some_and(|k| k == "Schedule");
    if !is_schedule {
        return Ok(None);
    }
    let s: Schedule = parse_as(&source)?;
    let document = serde_json::to_value(&s)
        .map_err(|e| LoadError::at(&source, 1, 1, format!("cannot be encoded: {e}"), None))?;
    // Read back as the registry and the agents will: the same checks, here first.
    Schedule::from_value(&document).map_err(|e| {
        LoadError::at(
            &source,
            1,
            1,
            format!("Schedule `{}`: {e}", s.metadata.name),
            Some("see schedules/ for an example".into()),
        )
    })?;
    Ok(Some(proto::PushDocument {
        kind: "Schedule".into(),
        name: s.metadata.name.clone(),
        document,
    }))
}

/// `vacsine posture [--site S] [--framework F] [--window W] [--bucket B]`. Exit 2 when a
/// requirement fails now.
pub async fn posture(a: PostureCli) -> miette::Result<Exit> {
    let c = client(&a.conn)?;
    let mut q = vec![("window", a.window)];
    if let Some(s) = a.site {
        q.push(("site", s));
    }
    if let Some(f) = a.framework {
        q.push(("framework", f));
    }
    if let Some(b) = a.bucket {
        q.push(("bucket", b));
    }
    let v: PostureView = c.get_query(OP_POSTURE, &q).await.map_err(call_err)?;
    match a.format {
        SimpleFormat::Json => print_json(&v),
        SimpleFormat::Human => print_human(&v),
    }
    Ok(if v.sites.iter().any(|s| s.failing > 0) {
        Exit::Failures
    } else {
        Exit::Ok
    })
}

/// A bar of `width` cells for `passing` out of `total`.
fn bar(passing: i64, total: i64, width: usize) -> String {
    if total <= 0 {
        return " ".repeat(width);
    }
    let full = ((passing as f64 / total as f64) * width as f64).round() as usize;
    format!(
        "{}{}",
        "█".repeat(full.min(width)),
        "░".repeat(width - full.min(width))
    )
}

/// `posture`'s human report: the sites' summary, then each section that has rows.
fn print_human(v: &PostureView) {
    if v.sites.is_empty() {
        println!("no assessment yet: push a `kind: Schedule` (see schedules/) and wait for its first run");
        return;
    }
    print_sites(v);
    print_failing_now(v);
    print_controls(v);
    print_exposure(v);
    print_trend(v);
    print_control_trend(v);
}

/// The header, then one line per site: passing, failing, other, when last assessed.
fn print_sites(v: &PostureView) {
    println!(
        "Posture at {}{}",
        v.at,
        v.framework
            .as_deref()
            .map(|f| format!(" (framework {f})"))
            .unwrap_or_default()
    );
    println!();
    println!(
        "{:<20} {:>8} {:>8} {:>6}  last assessed",
        "SITE", "PASSING", "FAILING", "OTHER"
    );
    for s in &v.sites {
        println!(
            "{:<20} {:>8} {:>8} {:>6}  {}",
            s.site,
            s.passing,
            s.failing,
            s.other,
            s.last_assessed.as_deref().unwrap_or("-")
        );
    }
}

/// What fails now, per site that has failures.
fn print_failing_now(v: &PostureView) {
    for s in v.sites.iter().filter(|s| !s.failing_now.is_empty()) {
        println!();
        println!("Failing now at {}:", s.site);
        for f in &s.failing_now {
            println!(
                "  {} {} {}{} since {}: {}",
                f.node,
                f.item,
                f.outcome,
                f.title
                    .as_deref()
                    .map(|t| format!(" ({t})"))
                    .unwrap_or_default(),
                f.since,
                f.evidence
            );
        }
    }
}

/// The framework controls' table, when there are controls.
fn print_controls(v: &PostureView) {
    if v.controls.is_empty() {
        return;
    }
    println!();
    println!(
        "{:<20} {:<16} {:<16} {:<6} requirements",
        "SITE", "FRAMEWORK", "CONTROL", "STATUS"
    );
    for c in &v.controls {
        println!(
            "{:<20} {:<16} {:<16} {:<6} {}",
            c.site,
            c.framework,
            c.control,
            c.status,
            c.requirements.join(", ")
        );
    }
}

/// The open ports the scans found, when any.
fn print_exposure(v: &PostureView) {
    if v.exposure.is_empty() {
        return;
    }
    println!();
    println!("Open ports (scans):");
    for e in &v.exposure {
        println!(
            "  {} {} {} since {} {}",
            e.site, e.node, e.port, e.since, e.evidence
        );
    }
}

/// Requirements passing over time, one bar per site and bucket.
fn print_trend(v: &PostureView) {
    if v.trend.is_empty() {
        return;
    }
    println!();
    println!("Trend (requirements passing, last assessment of each bucket):");
    for p in &v.trend {
        println!(
            "  {:<20} {}  {} {:>5}/{:<5} ({} failing)",
            p.site,
            p.at,
            bar(p.passing, p.total, 20),
            p.passing,
            p.total,
            p.failing
        );
    }
}

/// Controls passing over time, one bar per framework and bucket.
fn print_control_trend(v: &PostureView) {
    if v.control_trend.is_empty() {
        return;
    }
    println!();
    println!("Controls over time:");
    for p in &v.control_trend {
        let total = (p.passing + p.failing) as i64;
        println!(
            "  {:<16} {}  {} {:>4} passing, {:>4} failing",
            p.framework,
            p.at,
            bar(p.passing as i64, total, 20),
            p.passing,
            p.failing
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{bar, load_schedule};
    use std::path::Path;

    #[test]
    fn the_shipped_schedule_is_read_and_a_typo_is_located() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let d = load_schedule(&root.join("schedules/edge-baseline.yaml"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (d.kind.as_str(), d.name.as_str()),
            ("Schedule", "edge-baseline")
        );
        assert!(load_schedule(&root.join("examples/edge-site/policy.yaml"))
            .unwrap()
            .is_none());
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s.yaml");
        let text = std::fs::read_to_string(root.join("schedules/edge-baseline.yaml"))
            .unwrap()
            .replace("  every: 15m", "  evry: 15m");
        std::fs::write(&f, text).unwrap();
        let e = load_schedule(&f).unwrap_err();
        assert!(e.message.contains("evry") && e.line > 1, "{e}");
    }

    #[test]
    fn bars_are_proportional() {
        assert_eq!(bar(0, 4, 4), "░░░░");
        assert_eq!(bar(2, 4, 4), "██░░");
        assert_eq!(bar(4, 4, 4), "████");
        assert_eq!(bar(0, 0, 2), "  ");
    }
}

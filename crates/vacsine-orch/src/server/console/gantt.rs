//! A run's steps as an SVG Gantt chart: one row per attempt of a step on a node, placed by
//! its start and length, coloured by its status. Pure functions over step records. A child of
//! `console`.

use chrono::DateTime;
use maud::{html, Markup};
use vacsine_core::record::{StepRecord, StepStatus};

/// One bar: an attempt of a step, in milliseconds from the first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Bar {
    pub step: String,
    pub node: Option<String>,
    pub attempt: u32,
    pub status: StepStatus,
    pub start_ms: i64,
    pub duration_ms: i64,
    /// Still running: drawn up to now.
    pub open: bool,
}

fn ms(t: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The bars of `records` (one per attempt; see `pages::attempts`), placed from the first
/// start; a step still running lasts until `now_ms`. A record whose start cannot be read is
/// left out.
pub(super) fn bars(records: &[StepRecord], now_ms: i64) -> Vec<Bar> {
    let placed: Vec<(i64, i64, bool, &StepRecord)> = records
        .iter()
        .filter_map(|r| {
            let start = ms(&r.started_at)?;
            let (len, open) = match (r.finished_at.as_deref().and_then(ms), r.duration_ms) {
                (Some(end), _) => ((end - start).max(0), false),
                (None, Some(d)) => (d as i64, false),
                (None, None) if r.status == StepStatus::Running => ((now_ms - start).max(0), true),
                (None, None) => (0, false),
            };
            Some((start, len, open, r))
        })
        .collect();
    let Some(t0) = placed.iter().map(|p| p.0).min() else {
        return Vec::new();
    };
    let mut v: Vec<Bar> = placed
        .into_iter()
        .map(|(start, len, open, r)| Bar {
            step: r.step_id.clone(),
            node: r.node.clone(),
            attempt: r.attempt,
            status: r.status,
            start_ms: start - t0,
            duration_ms: len,
            open,
        })
        .collect();
    v.sort_by(|a, b| a.start_ms.cmp(&b.start_ms).then(a.step.cmp(&b.step)));
    v
}

/// `1.5 s`, `320 ms`, `2 min 5 s`.
pub(super) fn human_ms(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

const WIDTH: i64 = 960;
const LABEL: i64 = 300;
const ROW: i64 = 26;
const TOP: i64 = 24;

/// The chart. Labels and titles are text nodes (escaped); the class is the status's fixed
/// name.
pub(super) fn svg(bars: &[Bar]) -> Markup {
    let span = bars
        .iter()
        .map(|b| b.start_ms + b.duration_ms)
        .max()
        .unwrap_or(0)
        .max(1);
    let chart = WIDTH - LABEL - 10;
    let x = |t: i64| LABEL + t * chart / span;
    let height = TOP + ROW * bars.len() as i64 + 8;
    let ticks: Vec<i64> = (0..=4).map(|i| span * i / 4).collect();
    html! {
        svg.gantt #gantt xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (height) }
            role="img" aria-label="steps of the run over time" {
            @for t in &ticks {
                line.tick x1=(x(*t)) x2=(x(*t)) y1=(TOP - 6) y2=(height - 4) {}
                text.axis x=(x(*t)) y=(TOP - 10) text-anchor=(if *t == span { "end" } else { "middle" }) { (human_ms(*t)) }
            }
            @for (i, b) in bars.iter().enumerate() {
                @let y = TOP + ROW * i as i64;
                @let w = (b.duration_ms * chart / span).max(3);
                @let label = label(b);
                g.bar data-step=(b.step) {
                    title { (label) " · " (b.status.as_str()) " · starts +" (human_ms(b.start_ms)) " · " (human_ms(b.duration_ms)) @if b.open { " so far" } }
                    text.label x=(LABEL - 8) y=(y + ROW / 2 + 4) text-anchor="end" { (shorten(&label, 44)) }
                    rect class={ "st-" (b.status.as_str()) } x=(x(b.start_ms)) y=(y + 4) width=(w) height=(ROW - 8) rx="3" {}
                }
            }
        }
    }
}

fn label(b: &Bar) -> String {
    let mut s = b.step.clone();
    if let Some(n) = &b.node {
        s.push_str(" @ ");
        s.push_str(n);
    }
    if b.attempt > 1 {
        s.push_str(&format!(" (retry {})", b.attempt - 1));
    }
    s
}

fn shorten(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(
        step: &str,
        node: &str,
        attempt: u32,
        start: &str,
        end: Option<&str>,
        st: StepStatus,
    ) -> StepRecord {
        let mut r = StepRecord::started("r", step, attempt, Some(node), "command", start.into());
        r.finished_at = end.map(str::to_string);
        r.status = st;
        r
    }

    #[test]
    fn bars_are_placed_from_the_first_start_with_their_length() {
        let rs = [
            rec(
                "b",
                "n2",
                1,
                "2026-01-01T00:00:02Z",
                Some("2026-01-01T00:00:05Z"),
                StepStatus::Failed,
            ),
            rec(
                "a",
                "n1",
                1,
                "2026-01-01T00:00:00Z",
                Some("2026-01-01T00:00:01.500Z"),
                StepStatus::Succeeded,
            ),
            rec(
                "b",
                "n2",
                2,
                "2026-01-01T00:00:06Z",
                None,
                StepStatus::Running,
            ),
            rec("bad", "n1", 1, "not a time", None, StepStatus::Failed),
        ];
        let now = ms("2026-01-01T00:00:10Z").unwrap();
        let b = bars(&rs, now);
        let got: Vec<(&str, u32, i64, i64, bool)> = b
            .iter()
            .map(|b| {
                (
                    b.step.as_str(),
                    b.attempt,
                    b.start_ms,
                    b.duration_ms,
                    b.open,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", 1, 0, 1500, false),
                ("b", 1, 2000, 3000, false),
                ("b", 2, 6000, 4000, true)
            ]
        );
        assert!(bars(&[], now).is_empty());
    }

    #[test]
    fn the_chart_scales_to_the_last_end_and_escapes_hostile_names() {
        let rs = [
            rec(
                "a",
                "<script>alert(1)</script>",
                1,
                "2026-01-01T00:00:00Z",
                Some("2026-01-01T00:00:01Z"),
                StepStatus::Succeeded,
            ),
            rec(
                "b",
                "n\"onload=\"x",
                2,
                "2026-01-01T00:00:01Z",
                Some("2026-01-01T00:00:02Z"),
                StepStatus::RolledBack,
            ),
        ];
        let s = svg(&bars(&rs, 0)).into_string();
        assert!(!s.contains("<script>"), "{s}");
        assert!(s.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{s}");
        assert!(!s.contains("\"onload"), "{s}");
        assert!(s.contains("(retry 1)"), "{s}");
        assert!(s.contains("class=\"st-rolled_back\""), "{s}");
        // Half the span: the first bar ends where the second starts, at the middle.
        let mid = LABEL + (WIDTH - LABEL - 10) / 2;
        assert!(s.contains(&format!("x=\"{mid}\"")), "{s}");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(human_ms(320), "320 ms");
        assert_eq!(human_ms(1500), "1.5 s");
        assert_eq!(human_ms(125_000), "2 min 5 s");
    }
}

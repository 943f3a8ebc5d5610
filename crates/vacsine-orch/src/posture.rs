//! Posture (issue 17): what the assessment history says now and over time, per site and per
//! framework control (from the policies' `references`). Pure functions over the store's rows
//! (`store::posture`); the API (`GET /v1/posture`), `vacsine posture` and the Prometheus
//! gauges all read them from here.

use crate::rfc3339;
use crate::store::{AssessmentRow, HistoryRow};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Operator endpoint of the posture.
pub const OP_POSTURE: &str = "/v1/posture";

/// A span of time in ms: a duration (`500ms`, `30s`, `10m`, `24h`) or days (`30d`).
pub fn parse_span(s: &str) -> Option<i64> {
    let t = s.trim();
    if let Some(d) = t.strip_suffix('d') {
        return d
            .parse::<i64>()
            .ok()
            .filter(|d| *d >= 0)
            .and_then(|d| d.checked_mul(86_400_000));
    }
    vacsine_core::workflow::parse_duration(t)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

pub use vacsine_contract::schedule::is_failing;

/// The posture: now, and the trend over the window asked for.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PostureView {
    /// When it was computed (RFC 3339).
    pub at: String,
    /// The framework asked for (a prefix of the reference keys: `anssi` matches
    /// `anssi-bp28`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework: Option<String>,
    pub sites: Vec<SitePosture>,
    pub controls: Vec<ControlPosture>,
    /// Per site and bucket: the results of the last assessments made in it.
    pub trend: Vec<TrendPoint>,
    /// Per framework and bucket: controls passing and failing at the bucket's end.
    pub control_trend: Vec<ControlTrendPoint>,
    /// Scan results now (open ports), per site and node.
    pub exposure: Vec<Exposure>,
}

/// Requirements and rules on the nodes of a site, now.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SitePosture {
    pub site: String,
    pub passing: usize,
    pub failing: usize,
    /// Neither (not applicable, not checked, informational…).
    pub other: usize,
    /// Assessments received from the site made within the window (each once).
    pub assessments: usize,
    /// Assessments of the window that could not be made (the agent's reason is kept).
    pub not_assessed: usize,
    /// The last assessment received from the site (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_assessed: Option<String>,
    /// Failing now: `node: requirement` with its evidence.
    pub failing_now: Vec<Finding>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Finding {
    pub node: String,
    pub item: String,
    pub outcome: String,
    pub evidence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Since when (RFC 3339).
    pub since: String,
}

/// A framework control at a site, rolled up from its requirements on every node: `pass`
/// when all of them pass, `fail` when one fails, `other` otherwise.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControlPosture {
    pub site: String,
    pub framework: String,
    pub control: String,
    pub status: String,
    pub passing: usize,
    pub failing: usize,
    pub requirements: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TrendPoint {
    pub site: String,
    /// The bucket's start (RFC 3339).
    pub at: String,
    pub passing: i64,
    pub failing: i64,
    pub total: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ControlTrendPoint {
    pub framework: String,
    pub at: String,
    pub passing: usize,
    pub failing: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Exposure {
    pub site: String,
    pub node: String,
    /// `tcp/PORT`.
    pub port: String,
    pub evidence: String,
    pub since: String,
}

/// The key of a result's history.
type Key<'a> = (&'a str, &'a str, &'a str, &'a str, &'a str);

fn key(r: &HistoryRow) -> Key<'_> {
    (&r.site, &r.schedule, &r.kind, &r.node, &r.item)
}

/// The row in effect at `t` for each key (`None`: now), without `gone` ones.
fn at_time(rows: &[HistoryRow], t: Option<i64>) -> Vec<&HistoryRow> {
    let mut cur: BTreeMap<Key<'_>, &HistoryRow> = BTreeMap::new();
    for r in rows {
        if t.is_some_and(|t| r.since_ms > t) {
            continue;
        }
        match cur.get(&key(r)) {
            Some(c) if c.since_ms > r.since_ms => {}
            _ => {
                cur.insert(key(r), r);
            }
        }
    }
    cur.into_values().filter(|r| r.outcome != "gone").collect()
}

fn refs(r: &HistoryRow) -> BTreeMap<String, Vec<String>> {
    serde_json::from_str(&r.refs).unwrap_or_default()
}

fn framework_matches(framework: Option<&str>, name: &str) -> bool {
    framework.is_none_or(|f| {
        name.to_ascii_lowercase()
            .starts_with(&f.to_ascii_lowercase())
    })
}

/// Requirements passing and failing under a control, and their ids.
type Tally = (usize, usize, BTreeSet<String>);

/// Controls per (site, framework, control) over `rows` (compliance results only).
fn controls(rows: &[&HistoryRow], framework: Option<&str>) -> Vec<ControlPosture> {
    let mut m: BTreeMap<(String, String, String), Tally> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.kind != "scan") {
        for (fw, list) in refs(r) {
            if !framework_matches(framework, &fw) {
                continue;
            }
            for c in list {
                let e = m
                    .entry((r.site.clone(), fw.clone(), c))
                    .or_insert((0, 0, BTreeSet::new()));
                if r.outcome == "pass" {
                    e.0 += 1;
                } else if is_failing(&r.outcome) {
                    e.1 += 1;
                }
                e.2.insert(r.item.clone());
            }
        }
    }
    m.into_iter()
        .map(
            |((site, framework, control), (passing, failing, reqs))| ControlPosture {
                site,
                framework,
                control,
                status: if failing > 0 {
                    "fail"
                } else if passing > 0 {
                    "pass"
                } else {
                    "other"
                }
                .into(),
                passing,
                failing,
                requirements: reqs.into_iter().collect(),
            },
        )
        .collect()
}

/// What to compute: the framework filter, the trend's window and bucket.
#[derive(Debug, Clone)]
pub struct Query {
    pub framework: Option<String>,
    pub since_ms: i64,
    pub bucket_ms: i64,
    pub now_ms: i64,
}

/// The posture from the history rows and the assessments of the window.
pub fn compute(q: &Query, history: &[HistoryRow], assessments: &[AssessmentRow]) -> PostureView {
    let fw = q.framework.as_deref();
    let now = at_time(history, None);
    let mut sites: BTreeMap<String, SitePosture> = BTreeMap::new();
    for a in assessments {
        let s = sites
            .entry(a.site.clone())
            .or_insert_with(|| empty(&a.site));
        s.last_assessed = Some(rfc3339(a.at_ms));
        s.assessments += 1;
        if a.error.is_some() {
            s.not_assessed += 1;
        }
    }
    let mut exposure = Vec::new();
    for r in &now {
        let s = sites
            .entry(r.site.clone())
            .or_insert_with(|| empty(&r.site));
        if r.kind == "scan" {
            if r.outcome == "open" {
                exposure.push(Exposure {
                    site: r.site.clone(),
                    node: r.node.clone(),
                    port: r.item.clone(),
                    evidence: r.evidence.clone(),
                    since: rfc3339(r.since_ms),
                });
            }
            continue;
        }
        // With a framework asked for, only the requirements it references count.
        if fw.is_some() && !refs(r).keys().any(|k| framework_matches(fw, k)) {
            continue;
        }
        if r.outcome == "pass" {
            s.passing += 1;
        } else if is_failing(&r.outcome) {
            s.failing += 1;
            s.failing_now.push(Finding {
                node: r.node.clone(),
                item: r.item.clone(),
                outcome: r.outcome.clone(),
                evidence: r.evidence.clone(),
                title: r.title.clone(),
                since: rfc3339(r.since_ms),
            });
        } else {
            s.other += 1;
        }
    }
    let bucket = q.bucket_ms.max(1);
    // Trend per site: per bucket, the last assessment of each (schedule, kind) in it.
    let mut last: BTreeMap<(String, i64, String, String), &AssessmentRow> = BTreeMap::new();
    for a in assessments
        .iter()
        .filter(|a| a.kind != "scan" && a.error.is_none())
    {
        let b = a.at_ms - a.at_ms.rem_euclid(bucket);
        let k = (a.site.clone(), b, a.schedule.clone(), a.kind.clone());
        match last.get(&k) {
            Some(x) if x.at_ms > a.at_ms => {}
            _ => {
                last.insert(k, a);
            }
        }
    }
    let mut trend: BTreeMap<(String, i64), TrendPoint> = BTreeMap::new();
    for ((site, b, _, _), a) in last {
        let p = trend.entry((site.clone(), b)).or_insert(TrendPoint {
            site,
            at: rfc3339(b),
            passing: 0,
            failing: 0,
            total: 0,
        });
        p.passing += a.passing;
        p.failing += a.failing;
        p.total += a.total;
    }
    // Controls over time: at the end of each bucket of the window, by one sweep over the
    // changes in time order (each row's references read once).
    let mut control_trend = Vec::new();
    if history.iter().any(|r| r.refs.len() > 2) {
        control_trend = controls_over_time(q, history, bucket);
    }
    PostureView {
        at: rfc3339(q.now_ms),
        framework: q.framework.clone(),
        controls: controls(&now, fw),
        sites: sites.into_values().collect(),
        trend: trend.into_values().collect(),
        control_trend,
        exposure,
    }
}

/// Per framework and bucket: controls passing and failing at the bucket's end (a control
/// fails when one requirement under it fails on a node of its site, passes when all pass).
fn controls_over_time(q: &Query, history: &[HistoryRow], bucket: i64) -> Vec<ControlTrendPoint> {
    let fw = q.framework.as_deref();
    // Each compliance row with the controls it counts for: (site, framework, control).
    let mut rows: Vec<(&HistoryRow, Vec<(String, String)>)> = history
        .iter()
        .filter(|r| r.kind != "scan")
        .map(|r| {
            let cs = refs(r)
                .into_iter()
                .filter(|(f, _)| framework_matches(fw, f))
                .flat_map(|(f, list)| list.into_iter().map(move |c| (f.clone(), c)))
                .collect();
            (r, cs)
        })
        .filter(|(_, cs): &(&HistoryRow, Vec<(String, String)>)| !cs.is_empty())
        .collect();
    rows.sort_by_key(|(r, _)| r.since_ms);
    let mut state: std::collections::HashMap<Key<'_>, usize> = Default::default();
    let mut next = 0;
    let mut out = Vec::new();
    let mut b = q.since_ms - q.since_ms.rem_euclid(bucket);
    while b <= q.now_ms {
        let end = (b + bucket - 1).min(q.now_ms);
        while next < rows.len() && rows[next].0.since_ms <= end {
            state.insert(key(rows[next].0), next);
            next += 1;
        }
        // (site, framework, control) → (passing, failing) requirements.
        let mut tally: BTreeMap<(&str, &str, &str), (usize, usize)> = BTreeMap::new();
        for &i in state.values() {
            let (r, cs) = &rows[i];
            for (f, c) in cs {
                let e = tally
                    .entry((r.site.as_str(), f.as_str(), c.as_str()))
                    .or_default();
                if r.outcome == "pass" {
                    e.0 += 1;
                } else if is_failing(&r.outcome) {
                    e.1 += 1;
                }
            }
        }
        let mut per: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for ((_, f, _), (p, x)) in tally {
            let e = per.entry(f).or_default();
            if x > 0 {
                e.1 += 1;
            } else if p > 0 {
                e.0 += 1;
            }
        }
        for (framework, (passing, failing)) in per {
            out.push(ControlTrendPoint {
                framework: framework.to_string(),
                at: rfc3339(b),
                passing,
                failing,
            });
        }
        b += bucket;
    }
    out
}

fn empty(site: &str) -> SitePosture {
    SitePosture {
        site: site.to_string(),
        passing: 0,
        failing: 0,
        other: 0,
        assessments: 0,
        not_assessed: 0,
        last_assessed: None,
        failing_now: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(site: &str, item: &str, since: i64, outcome: &str, refs: &str) -> HistoryRow {
        HistoryRow {
            site: site.into(),
            schedule: "s".into(),
            kind: "check".into(),
            node: "web".into(),
            item: item.into(),
            since_ms: since,
            outcome: outcome.into(),
            evidence: String::new(),
            title: None,
            refs: refs.into(),
        }
    }

    fn a(site: &str, at: i64, passing: i64, failing: i64) -> AssessmentRow {
        AssessmentRow {
            key: format!("{site}/{at}"),
            site: site.into(),
            schedule: "s".into(),
            kind: "check".into(),
            at_ms: at,
            total: passing + failing,
            passing,
            failing,
            error: None,
        }
    }

    const R30: &str = r#"{"anssi-bp28":["R30"],"cis":["5.2"]}"#;

    #[test]
    fn now_is_the_latest_change_and_the_trend_follows_the_assessments() {
        let history = vec![
            h("edge", "r1", 0, "pass", R30),
            h("edge", "r1", 2_500, "fail", R30),
            h("edge", "r2", 0, "pass", r#"{"anssi-bp28":["R30"]}"#),
            h("edge", "r3", 0, "pass", "{}"),
            h("edge", "r3", 1_500, "gone", "{}"),
        ];
        let assessments = vec![
            a("edge", 0, 3, 0),
            a("edge", 1_500, 2, 0),
            a("edge", 2_500, 1, 1),
        ];
        let q = Query {
            framework: None,
            since_ms: 0,
            bucket_ms: 1_000,
            now_ms: 2_999,
        };
        let v = compute(&q, &history, &assessments);
        assert_eq!(v.sites.len(), 1);
        assert_eq!((v.sites[0].passing, v.sites[0].failing), (1, 1));
        assert_eq!(v.sites[0].failing_now[0].item, "r1");
        let t: Vec<_> = v.trend.iter().map(|p| (p.passing, p.failing)).collect();
        assert_eq!(t, [(3, 0), (2, 0), (1, 1)]);
        let r30 = v
            .controls
            .iter()
            .find(|c| c.framework == "anssi-bp28" && c.control == "R30")
            .unwrap();
        assert_eq!(r30.status, "fail");
        assert_eq!(r30.requirements, ["r1", "r2"]);
        let anssi: Vec<_> = v
            .control_trend
            .iter()
            .filter(|p| p.framework == "anssi-bp28")
            .map(|p| (p.passing, p.failing))
            .collect();
        assert_eq!(anssi, [(1, 0), (1, 0), (0, 1)]);
        // A framework asked for: only its requirements count.
        let v = compute(
            &Query {
                framework: Some("cis".into()),
                ..q
            },
            &history,
            &assessments,
        );
        assert_eq!((v.sites[0].passing, v.sites[0].failing), (0, 1));
        assert!(v.controls.iter().all(|c| c.framework == "cis"));
    }

    #[test]
    fn spans_take_days_too() {
        assert_eq!(parse_span("30d"), Some(30 * 86_400_000));
        assert_eq!(parse_span("10m"), Some(600_000));
        assert_eq!(parse_span("soon"), None);
        assert_eq!(parse_span("-1d"), None);
    }

    #[test]
    fn open_ports_are_exposure_not_compliance() {
        let mut r = h("edge", "tcp/8080", 10, "open", "{}");
        r.kind = "scan".into();
        let v = compute(
            &Query {
                framework: None,
                since_ms: 0,
                bucket_ms: 1000,
                now_ms: 100,
            },
            &[r],
            &[],
        );
        assert_eq!(v.exposure.len(), 1);
        assert_eq!(v.sites[0].passing + v.sites[0].failing, 0);
    }
}

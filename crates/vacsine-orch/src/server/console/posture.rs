//! The posture page (issue 17): per site, requirements passing and failing now, framework
//! controls, the trend as an inline SVG, and the drill down (each failing requirement's
//! evidence on each node, open ports). Read through `GET /v1/posture`'s own handler. A child
//! of `console`.

use super::super::extract::ApiQuery;
use super::super::posture::{get_posture, PostureQuery};
use super::super::{ApiError, Srv};
use super::pages::{badge, seg, table_wrap, when};
use super::{api_failed, frame, render, Session};
use crate::posture::{Finding, PostureView};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::DateTime;
use maud::{html, Markup};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The trend windows offered by the filter form (any `window` the API takes is accepted).
const WINDOWS: [&str; 4] = ["24h", "7d", "30d", "90d"];
/// A site's failing requirements are shown open (their evidence visible) up to this many.
const OPEN_UP_TO: usize = 5;

#[derive(Deserialize, Default)]
pub(super) struct PostureFilter {
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    framework: Option<String>,
    #[serde(default)]
    window: Option<String>,
}

pub(super) async fn page(
    State(s): State<Arc<Srv>>,
    who: Session,
    Query(f): Query<PostureFilter>,
) -> Response {
    let nonempty = |o: Option<String>| o.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let (site, framework, window) = (nonempty(f.site), nonempty(f.framework), nonempty(f.window));
    let got = async {
        let h = s.as_operator()?;
        let q: PostureQuery = serde_json::from_value(serde_json::json!({
            "site": site, "framework": framework, "window": window,
        }))
        .map_err(|e| ApiError::bad(format!("posture filter: {e}")))?;
        let v = get_posture(State(s.clone()), h, ApiQuery(q)).await?.0;
        let sites = s.store.sites().await?;
        Ok::<_, ApiError>((v, sites))
    };
    let (v, sites) = match got.await {
        Ok(x) => x,
        Err(e) => return api_failed(&who, e),
    };
    let chosen = window.as_deref().unwrap_or("30d");
    let body = html! {
        form.filters method="get" action="/console/posture" {
            label { "Site "
                select name="site" {
                    option value="" { "every site" }
                    @for x in &sites {
                        option value=(x.name) selected[site.as_deref() == Some(x.name.as_str())] { (x.name) }
                    }
                }
            }
            label { "Framework "
                input type="text" name="framework" placeholder="anssi, cis, nist…" value=(framework.as_deref().unwrap_or(""));
            }
            label { "Window "
                select name="window" {
                    @for w in WINDOWS { option value=(w) selected[chosen == w] { (w) } }
                    @if !WINDOWS.contains(&chosen) { option value=(chosen) selected { (chosen) } }
                }
            }
            button type="submit" { "Filter" }
        }
        p.dim { "Computed " (when(&v.at))
            @if let Some(fw) = &v.framework { " · only requirements referencing " code { (fw) } } }
        (sites_table(&v))
        (trends(&v))
        h2 { "Framework controls" }
        (controls_table(&v))
        h2 { "Failing now" }
        (failing(&v))
        h2 { "Open ports" }
        (exposure(&v))
    };
    render(StatusCode::OK, frame("Posture", Some(&who), body))
}

fn sites_table(v: &PostureView) -> Markup {
    html! {
        (table_wrap(html! {
            table #posture-sites {
                thead { tr { th { "Site" } th { "Passing" } th { "Failing" } th { "Other" } th { "Assessments" } th { "Not assessed" } th { "Last assessed" } } }
                tbody {
                    @for s in &v.sites {
                        tr {
                            td { a href={ "/console/posture?site=" (seg(&s.site)) } { (s.site) } }
                            td { (s.passing) }
                            td { @if s.failing > 0 { span.badge.bad { (s.failing) } } @else { "0" } }
                            td { (s.other) }
                            td { (s.assessments) }
                            td { (s.not_assessed) }
                            td { @if let Some(t) = &s.last_assessed { (when(t)) } }
                        }
                    }
                }
            }
        }))
        @if v.sites.is_empty() { p.dim { "No assessment yet (a " code { "kind: Schedule" } " pushed to a site makes them)." } }
    }
}

fn ms(t: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(t)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// A series of a trend chart: its name, its fixed CSS class, its points `(ms, value)`.
struct Series<'a> {
    name: &'a str,
    class: &'static str,
    points: Vec<(i64, i64)>,
}

/// Points `(ms, count)` of passing and of failing.
type PassFail = (Vec<(i64, i64)>, Vec<(i64, i64)>);

fn trends(v: &PostureView) -> Markup {
    let mut per_site: BTreeMap<&str, PassFail> = BTreeMap::new();
    for p in &v.trend {
        let Some(t) = ms(&p.at) else { continue };
        let e = per_site.entry(&p.site).or_default();
        e.0.push((t, p.passing));
        e.1.push((t, p.failing));
    }
    let mut per_fw: BTreeMap<&str, PassFail> = BTreeMap::new();
    for p in &v.control_trend {
        let Some(t) = ms(&p.at) else { continue };
        let e = per_fw.entry(&p.framework).or_default();
        e.0.push((t, p.passing as i64));
        e.1.push((t, p.failing as i64));
    }
    html! {
        h2 { "Trend" }
        @if per_site.is_empty() { p.dim { "No assessment in the window." } }
        @for (site, (pass, fail)) in per_site {
            h3 { "Site " (site) " · requirements per assessment" }
            (svg(&format!("requirements of site {site} over time"), &[
                Series { name: "passing", class: "pass", points: pass },
                Series { name: "failing", class: "fail", points: fail },
            ]))
        }
        @for (fw, (pass, fail)) in per_fw {
            h3 { "Framework " (fw) " · controls" }
            (svg(&format!("controls of framework {fw} over time"), &[
                Series { name: "passing", class: "pass", points: pass },
                Series { name: "failing", class: "fail", points: fail },
            ]))
        }
    }
}

const WIDTH: i64 = 960;
const HEIGHT: i64 = 180;
const LEFT: i64 = 48;
const RIGHT: i64 = 16;
const TOP: i64 = 26;
const BOTTOM: i64 = 24;

/// Lines over time, one per series, with a dot (and its value as a tooltip) at each point.
/// Every label is a text node (escaped); classes come from a fixed set.
fn svg(label: &str, series: &[Series<'_>]) -> Markup {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let t0 = all().map(|p| p.0).min().unwrap_or(0);
    let t1 = all().map(|p| p.0).max().unwrap_or(0);
    let top = all().map(|p| p.1).max().unwrap_or(0).max(1);
    let (w, h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    // A single bucket is drawn in the middle.
    let x = |t: i64| {
        if t1 == t0 {
            LEFT + w / 2
        } else {
            LEFT + (t - t0) * w / (t1 - t0)
        }
    };
    let y = |n: i64| TOP + h - n.clamp(0, top) * h / top;
    let day = |t: i64| crate::rfc3339(t).get(..16).unwrap_or("").replace('T', " ");
    html! {
        svg.trend xmlns="http://www.w3.org/2000/svg" viewBox={ "0 0 " (WIDTH) " " (HEIGHT) }
            role="img" aria-label=(label) {
            line.tick x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(0)) y2=(y(0)) {}
            line.tick x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y(top)) y2=(y(top)) {}
            text.axis x=(LEFT - 6) y=(y(top) + 4) text-anchor="end" { (top) }
            text.axis x=(LEFT - 6) y=(y(0) + 4) text-anchor="end" { "0" }
            text.axis x=(LEFT) y=(HEIGHT - 6) text-anchor="start" { (day(t0)) }
            @if t1 > t0 { text.axis x=(WIDTH - RIGHT) y=(HEIGHT - 6) text-anchor="end" { (day(t1)) } }
            @for (i, s) in series.iter().enumerate() {
                g class={ "legend " (s.class) } {
                    circle cx=(WIDTH - RIGHT - 150 + 80 * i as i64) cy="10" r="4" {}
                    text x=(WIDTH - RIGHT - 142 + 80 * i as i64) y="14" { (s.name) }
                }
            }
            @for s in series {
                @let pts: Vec<String> = s.points.iter().map(|(t, n)| format!("{},{}", x(*t), y(*n))).collect();
                g class={ "series " (s.class) } {
                    polyline points=(pts.join(" ")) {}
                    @for (t, n) in &s.points {
                        circle cx=(x(*t)) cy=(y(*n)) r="3" { title { (s.name) " " (n) " · " (crate::rfc3339(*t)) } }
                    }
                }
            }
        }
    }
}

fn controls_table(v: &PostureView) -> Markup {
    html! {
        (table_wrap(html! {
            table #controls {
                thead { tr { th { "Site" } th { "Framework" } th { "Control" } th { "Status" } th { "Passing" } th { "Failing" } th { "Requirements" } } }
                tbody {
                    @for c in &v.controls {
                        tr {
                            td { (c.site) }
                            td { (c.framework) }
                            td { (c.control) }
                            td { (badge(&c.status)) }
                            td { (c.passing) }
                            td { (c.failing) }
                            td { @for r in &c.requirements {
                                @if is_failing_at(v, &c.site, r) { a href={ "#" (anchor(&c.site, r)) } { code { (r) } } } @else { code { (r) } }
                                " "
                            } }
                        }
                    }
                }
            }
        }))
        @if v.controls.is_empty() { p.dim { "No requirement references a framework control" @if v.framework.is_some() { " of this framework" } "." } }
    }
}

fn is_failing_at(v: &PostureView, site: &str, item: &str) -> bool {
    v.sites
        .iter()
        .any(|s| s.site == site && s.failing_now.iter().any(|f| f.item == item))
}

/// The id of a failing requirement's drill down (percent-encoded: only `[A-Za-z0-9%-]`).
fn anchor(site: &str, item: &str) -> String {
    format!("req-{}-{}", seg(site), seg(item))
}

/// Each site's failing requirements, each with its evidence on every node.
fn failing(v: &PostureView) -> Markup {
    let grouped: Vec<(&str, BTreeMap<&str, Vec<&Finding>>)> = v
        .sites
        .iter()
        .filter(|s| !s.failing_now.is_empty())
        .map(|s| {
            let mut by_item: BTreeMap<&str, Vec<&Finding>> = BTreeMap::new();
            for f in &s.failing_now {
                by_item.entry(f.item.as_str()).or_default().push(f);
            }
            (s.site.as_str(), by_item)
        })
        .collect();
    html! {
        @if grouped.is_empty() { p.dim { "Nothing failing." } }
        @for (site, by_item) in &grouped {
            h3 { "Site " (site) }
            @for (item, fs) in by_item {
                details.finding id=(anchor(site, item)) open[by_item.len() <= OPEN_UP_TO] {
                    summary {
                        code { (item) }
                        @if let Some(t) = fs.iter().find_map(|f| f.title.as_deref()) { " · " (t) }
                        " · failing on " (fs.len()) " node" @if fs.len() > 1 { "s" }
                    }
                    (table_wrap(html! {
                        table.evidence {
                            thead { tr { th { "Node" } th { "Outcome" } th { "Since" } th { "Evidence" } } }
                            tbody {
                                @for f in fs {
                                    tr {
                                        td { (f.node) }
                                        td { (badge(&f.outcome)) }
                                        td { (when(&f.since)) }
                                        td { pre.out { (f.evidence) } }
                                    }
                                }
                            }
                        }
                    }))
                }
            }
        }
    }
}

fn exposure(v: &PostureView) -> Markup {
    html! {
        (table_wrap(html! {
            table #exposure {
                thead { tr { th { "Site" } th { "Node" } th { "Port" } th { "Open since" } th { "Evidence" } } }
                tbody {
                    @for e in &v.exposure {
                        tr {
                            td { (e.site) }
                            td { (e.node) }
                            td { code { (e.port) } }
                            td { (when(&e.since)) }
                            td.msg { (e.evidence) }
                        }
                    }
                }
            }
        }))
        @if v.exposure.is_empty() { p.dim { "No open port found by a scan." } }
    }
}

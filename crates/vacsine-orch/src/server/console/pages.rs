//! The console's pages. Each reads what it shows through the JSON API's own handler (called
//! with the operator's credentials once the session and its role were checked), so a page
//! never shows what the API does not. A child of `console`.

use super::super::extract::{ApiJson, ApiPath, ApiQuery};
use super::super::{approvals, enforce_site, registry, responses, Srv};
use super::{api_failed, frame, gantt, render, Role, Session};
use crate::{now_ms, rfc3339};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use vacsine_contract::proto::{self, AgentView, ApprovalView, RunView};
use vacsine_core::record::StepRecord;

/// How often the live part of the events page is rendered again for a connected browser
/// (also at once when a run changes).
const LIVE_EVERY: Duration = Duration::from_secs(1);
/// Rows of each table of the events page.
const EVENTS_SHOWN: usize = 50;
/// Runs on a page of the runs list.
const RUNS_PER_PAGE: usize = 50;

/// A path segment, percent-encoded (ids and names in links).
pub(super) fn seg(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// An enum as its wire name (`snake_case`), for display.
fn wire<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(v) => v.to_string(),
        Err(_) => String::new(),
    }
}

/// `2026-12-07T01:02:03.456Z` as `2026-12-07 01:02:03` (the full time in the title).
pub(super) fn when(t: &str) -> Markup {
    let short = t.get(..19).unwrap_or(t).replace('T', " ");
    html! { time datetime=(t) title=(t) { (short) } }
}

pub(super) fn badge(status: &str) -> Markup {
    // The class from a fixed set only; the text as it is.
    let class = match status {
        "succeeded" | "online" | "approved" | "active" | "pass" | "verified" | "compliant" => "ok",
        "failed" | "cancelled" | "revoked" | "denied" | "timed_out" | "rolled_back"
        | "interrupted" | "fail" | "error" | "rejected" => "bad",
        "running" | "queued" | "awaiting" => "busy",
        _ => "dim",
    };
    html! { span class={ "badge " (class) } { (status) } }
}

pub(super) fn table_wrap(m: Markup) -> Markup {
    html! { div.scroll { (m) } }
}

/// Where a site stands: `revoked`, `no agent`, `cut off` since the last time one of its
/// agents was seen (the API's `cut_off_since`), or `online`.
pub(super) fn site_state(
    site: &proto::SiteView,
    agents: &[&AgentView],
) -> (String, Option<String>) {
    if site.revoked.is_some() {
        return ("revoked".into(), None);
    }
    if !agents.iter().any(|a| a.state != "revoked") {
        return ("no agent".into(), None);
    }
    match &site.cut_off_since {
        Some(t) => ("cut off".into(), Some(t.clone())),
        None => ("online".into(), None),
    }
}

pub(super) async fn sites(State(s): State<Arc<Srv>>, who: Session) -> Response {
    let st = match sites_data(&s).await {
        Ok(v) => v,
        Err(e) => return api_failed(&who, e),
    };
    let by_site =
        |name: &str| -> Vec<&AgentView> { st.agents.iter().filter(|a| a.site == name).collect() };
    let body = html! {
        section {
            h2 { "Sites" }
            (table_wrap(html! {
                table #sites {
                    thead { tr { th { "Site" } th { "State" } th { "Agents online" } th { "Labels" } th { "Refused outbox items" } } }
                    tbody {
                        @for site in &st.sites {
                            @let agents = by_site(&site.name);
                            @let (state, since) = site_state(site, &agents);
                            tr data-site=(site.name) class=(if state == "cut off" { "cutoff" } else { "" }) {
                                td { a href={ "/console/runs?site=" (seg(&site.name)) } { (site.name) } }
                                td.state {
                                    (badge(&state))
                                    @if let Some(t) = &since { " since " (when(t)) }
                                }
                                td { (agents.iter().filter(|a| a.state == "online").count()) " / " (agents.len()) }
                                td { @for (k, v) in &site.labels { code { (k) "=" (v) } " " } }
                                td { (site.refused_outbox_items) }
                            }
                        }
                    }
                }
            }))
        }
        section {
            h2 { "Agents" }
            (table_wrap(html! {
                table #agents {
                    thead { tr { th { "Site" } th { "Agent" } th { "State" } th { "Last seen" } th { "Version" } th { "Last autonomous run" } th { "Outbox refused" } } }
                    tbody {
                        @for a in &st.agents {
                            tr {
                                td { (a.site) }
                                td { (a.name) }
                                td { (badge(&a.state)) }
                                td { (when(&a.last_seen)) }
                                td { (a.version) }
                                td { @if let Some(t) = &a.last_autonomous { (when(t)) } @else { "—" } }
                                td { @if let Some(o) = &a.outbox { (o.refused) } @else { "—" } }
                            }
                        }
                    }
                }
            }))
        }
    };
    render(StatusCode::OK, frame("Sites and agents", Some(&who), body))
}

async fn sites_data(s: &Arc<Srv>) -> Result<proto::StatusView, super::ApiError> {
    let h = s.as_operator()?;
    Ok(super::super::status_view(State(s.clone()), h).await?.0)
}

#[derive(Deserialize, Default)]
pub(super) struct RunsFilter {
    #[serde(default)]
    site: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    before: Option<String>,
}

pub(super) async fn runs(
    State(s): State<Arc<Srv>>,
    who: Session,
    Query(f): Query<RunsFilter>,
) -> Response {
    let nonempty = |o: Option<String>| o.filter(|v| !v.is_empty());
    let (site, status) = (nonempty(f.site), nonempty(f.status));
    let page = async {
        let h = s.as_operator()?;
        let q = super::super::RunsQuery {
            site: site.clone(),
            status: status.clone(),
            workflow: None,
            limit: Some(RUNS_PER_PAGE),
            before: nonempty(f.before),
        };
        let l = super::super::list_runs(State(s.clone()), h, ApiQuery(q))
            .await?
            .0;
        let sites = s.store.sites().await?;
        Ok::<_, super::ApiError>((l, sites))
    };
    let (list, sites) = match page.await {
        Ok(v) => v,
        Err(e) => return api_failed(&who, e),
    };
    let next = list.next.as_ref().map(|n| {
        let mut q: Vec<(&str, &str)> = vec![("before", n)];
        if let Some(x) = &site {
            q.push(("site", x));
        }
        if let Some(x) = &status {
            q.push(("status", x));
        }
        format!(
            "/console/runs?{}",
            serde_urlencoded::to_string(q).unwrap_or_default()
        )
    });
    use crate::store::status as st;
    // The statuses a run of the work queue can have (the stores' names of `RunStatus`).
    const STATUSES: [&str; 5] = [
        st::QUEUED,
        st::RUNNING,
        st::SUCCEEDED,
        st::FAILED,
        st::CANCELLED,
    ];
    let body = html! {
        form.filters method="get" action="/console/runs" {
            label { "Site "
                select name="site" {
                    option value="" { "every site" }
                    @for x in &sites {
                        option value=(x.name) selected[site.as_deref() == Some(x.name.as_str())] { (x.name) }
                    }
                }
            }
            label { "Status "
                select name="status" {
                    option value="" { "any" }
                    @for x in STATUSES {
                        option value=(x) selected[status.as_deref() == Some(x)] { (x) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        (table_wrap(html! {
            table #runs {
                thead { tr { th { "Run" } th { "Site" } th { "Workflow" } th { "Status" } th { "Created" } th { "Finished" } th { "Records" } th { "Message" } } }
                tbody {
                    @for r in &list.runs {
                        tr {
                            td { a.run href={ "/console/runs/" (seg(&r.id)) } { code { (r.id.get(..8).unwrap_or(&r.id)) } } }
                            td { (r.site) }
                            td { (r.workflow) }
                            td { (badge(&r.status)) }
                            td { (when(&r.created)) }
                            td { @if let Some(t) = &r.finished { (when(t)) } }
                            td { (r.records) }
                            td.msg { (r.message.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }))
        @if list.runs.is_empty() { p.dim { "No run matches." } }
        @if let Some(n) = &next { p { a #older href=(n) { "Older runs →" } } }
    };
    render(StatusCode::OK, frame("Runs", Some(&who), body))
}

/// The last record of each attempt of each step (an attempt is recorded as it starts and
/// again as it ends), in the order they started.
pub(super) fn attempts(records: &[proto::SeqRecord]) -> Vec<StepRecord> {
    let mut last: BTreeMap<(String, String, u32, String), (i64, StepRecord)> = BTreeMap::new();
    for r in records {
        let rec = r.record.clone();
        let key = (
            rec.engine_run_id.clone().unwrap_or_default(),
            rec.step_id.clone(),
            rec.attempt,
            rec.node.clone().unwrap_or_default(),
        );
        last.insert(key, (r.seq, rec));
    }
    let mut v: Vec<StepRecord> = last.into_values().map(|(_, r)| r).collect();
    v.sort_by(|a, b| a.started_at.cmp(&b.started_at));
    v
}

fn run_summary(r: &RunView) -> Markup {
    html! {
        dl.facts {
            dt { "Run" } dd { code #run-id { (r.id) } }
            dt { "Site" } dd { (r.site) }
            dt { "Workflow" } dd { (r.workflow) }
            dt { "Status" } dd { (badge(&r.status)) }
            dt { "Agent" } dd { (r.agent.as_deref().unwrap_or("—")) }
            dt { "Offers" } dd { (r.offers) }
            dt { "Created" } dd { (when(&r.created)) }
            dt { "Started" } dd { @if let Some(t) = &r.started { (when(t)) } @else { "—" } }
            dt { "Finished" } dd { @if let Some(t) = &r.finished { (when(t)) } @else { "—" } }
            @if let Some(m) = &r.message { dt { "Message" } dd { (m) } }
            @if let Some(o) = &r.site_outcome {
                dt { "Site reported" } dd { (badge(&o.status)) " " (o.message.as_deref().unwrap_or("")) " at " (when(&o.reported)) }
            }
        }
    }
}

pub(super) async fn run(
    State(s): State<Arc<Srv>>,
    who: Session,
    Path(id): Path<String>,
) -> Response {
    let got = async {
        let h = s.as_operator()?;
        let q = super::super::RecordsQuery {
            after: 0,
            wait_ms: 0,
        };
        let rr = super::super::run_records(State(s.clone()), h, ApiPath(id.clone()), ApiQuery(q))
            .await?
            .0;
        let has_report = s.store.report(&id).await?.is_some();
        Ok::<_, super::ApiError>((rr, has_report))
    };
    let (rr, has_report) = match got.await {
        Ok(v) => v,
        Err(e) => return api_failed(&who, e),
    };
    let steps = attempts(&rr.records);
    let bars = gantt::bars(&steps, now_ms());
    let body = html! {
        (run_summary(&rr.run))
        @if has_report {
            p { a #report-link href={ "/console/runs/" (seg(&rr.run.id)) "/report" } { "Enforce report (before, sandbox, after)" } }
        }
        section {
            h2 { "Timeline" }
            @if bars.is_empty() { p.dim { "No step recorded yet." } } @else { div.scroll { (gantt::svg(&bars)) } }
        }
        section {
            h2 { "Records" }
            @for r in &steps {
                details.record open[r.status != vacsine_core::record::StepStatus::Succeeded] {
                    summary {
                        (badge(r.status.as_str())) " "
                        strong { (r.step_id) }
                        @if let Some(n) = &r.node { " on " span.node { (n) } }
                        @if r.attempt > 1 { " · attempt " (r.attempt) }
                        " · " (r.executor)
                        @if let Some(d) = r.duration_ms { " · " (gantt::human_ms(d as i64)) }
                    }
                    dl.facts {
                        dt { "Started" } dd { (when(&r.started_at)) }
                        @if let Some(c) = r.exit_code { dt { "Exit code" } dd { (c) } }
                        @if let Some(e) = &r.error { dt { "Error" } dd.error { (e) } }
                        @if let Some(e) = &r.engine_run_id { dt { "Engine run" } dd { code { (e) } } }
                        dt { "Changed" } dd { (r.changed) }
                    }
                    @if !r.messages.is_empty() {
                        ul.messages {
                            @for m in &r.messages {
                                li { (when(&m.at)) " " (badge(&wire(&m.level))) " " span.text { (m.text) } }
                            }
                        }
                    }
                    @if !r.stdout.is_empty() { h4 { "stdout" } pre.out { (r.stdout) } }
                    @if !r.stderr.is_empty() { h4 { "stderr" } pre.out { (r.stderr) } }
                }
            }
        }
    };
    render(
        StatusCode::OK,
        frame(&format!("Run {}", rr.run.workflow), Some(&who), body),
    )
}

/// The parts of an enforce report the page shows, read tolerantly (a report from an agent of
/// another version still shows what it has).
#[derive(Deserialize, Default)]
#[serde(default)]
struct ReportDoc {
    verdict: serde_json::Value,
    summary: String,
    policy: String,
    target: String,
    started_at: String,
    duration_ms: u64,
    requirements: Vec<RequirementDoc>,
    plan: Option<PlanDoc>,
    fixes: Vec<FixDoc>,
    warnings: Vec<String>,
    availability: AvailabilityDoc,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RequirementDoc {
    id: String,
    node: String,
    title: String,
    target_before: serde_json::Value,
    sandbox_before: serde_json::Value,
    sandbox_after: serde_json::Value,
    target_after: serde_json::Value,
    message: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PlanDoc {
    items: Vec<serde_json::Value>,
    held_back: Vec<serde_json::Value>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FixDoc {
    workflow: String,
    node: String,
    persistent: bool,
    lost: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct AvailabilityDoc {
    duration_ms: u64,
    guards: Vec<GuardDoc>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct GuardDoc {
    requirement: String,
    node: String,
    probes: u32,
    failed: u32,
    longest_outage_ms: u64,
}

fn text_of(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "—".into(),
        v => v.to_string(),
    }
}

pub(super) async fn report(
    State(s): State<Arc<Srv>>,
    who: Session,
    Path(id): Path<String>,
) -> Response {
    let got = async {
        let h = s.as_operator()?;
        Ok::<_, super::ApiError>(
            enforce_site::run_report(State(s.clone()), h, ApiPath(id.clone()))
                .await?
                .0,
        )
    };
    let v = match got.await {
        Ok(v) => v,
        Err(e) => return api_failed(&who, e),
    };
    let doc: ReportDoc = serde_json::to_value(&*v.report)
        .ok()
        .and_then(|r| serde_json::from_value(r).ok())
        .unwrap_or_default();
    let body = html! {
        (run_summary(&v.run))
        dl.facts {
            dt { "Verdict" } dd { (badge(&text_of(&doc.verdict))) }
            dt { "Summary" } dd { (doc.summary) }
            dt { "Policy" } dd { (doc.policy) }
            dt { "Target" } dd { (doc.target) }
            dt { "Started" } dd { (doc.started_at) }
            dt { "Duration" } dd { (gantt::human_ms(doc.duration_ms as i64)) }
        }
        section {
            h2 { "Requirements: before, sandbox, after" }
            (table_wrap(html! {
                table #requirements {
                    thead { tr { th { "Requirement" } th { "Node" } th { "Target before" } th { "Sandbox before" } th { "Sandbox after" } th { "Target after" } th { "Message" } } }
                    tbody {
                        @for r in &doc.requirements {
                            tr {
                                td { code { (r.id) } br; span.dim { (r.title) } }
                                td { (r.node) }
                                td { (badge(&text_of(&r.target_before))) }
                                td { (badge(&text_of(&r.sandbox_before))) }
                                td { (badge(&text_of(&r.sandbox_after))) }
                                td { (badge(&text_of(&r.target_after))) }
                                td.msg { (r.message) }
                            }
                        }
                    }
                }
            }))
        }
        @if let Some(p) = &doc.plan {
            section {
                h2 { "Plan" }
                ul { @for i in &p.items { li { code { (i.to_string()) } } } }
                @if !p.held_back.is_empty() {
                    h3 { "Held back" }
                    ul { @for i in &p.held_back { li { code { (i.to_string()) } } } }
                }
            }
        }
        @if !doc.fixes.is_empty() {
            section {
                h2 { "Persistence" }
                ul { @for f in &doc.fixes {
                    li { (f.workflow) " on " (f.node) ": " @if f.persistent { (badge("pass")) " persistent" } @else { (badge("fail")) " not persistent (" (f.lost.join("; ")) ")" } }
                } }
            }
        }
        section {
            h2 { "Availability" }
            p.dim { "Watched for " (gantt::human_ms(doc.availability.duration_ms as i64)) }
            (table_wrap(html! {
                table {
                    thead { tr { th { "Guard" } th { "Node" } th { "Probes" } th { "Failed" } th { "Longest outage" } } }
                    tbody { @for g in &doc.availability.guards {
                        tr { td { (g.requirement) } td { (g.node) } td { (g.probes) } td { (g.failed) } td { (gantt::human_ms(g.longest_outage_ms as i64)) } }
                    } }
                }
            }))
        }
        @if !doc.warnings.is_empty() {
            section { h2 { "Warnings" } ul { @for w in &doc.warnings { li { (w) } } } }
        }
    };
    render(StatusCode::OK, frame("Enforce report", Some(&who), body))
}

/// The live part of the events page: approvals, decisions and events, rendered for `who`
/// (the approve and deny buttons only for an operator).
async fn live_part(s: &Arc<Srv>, who: &Session) -> Result<Markup, super::ApiError> {
    let h = s.as_operator()?;
    let approvals = approvals::list_approvals(State(s.clone()), h.clone())
        .await?
        .0
        .approvals;
    let dq: responses::DecisionsQuery = serde_json::from_value(serde_json::json!({}))
        .map_err(|e| super::ApiError::bad(e.to_string()))?;
    let mut decisions = responses::list_decisions(State(s.clone()), h.clone(), ApiQuery(dq))
        .await?
        .0
        .decisions;
    decisions.reverse();
    decisions.truncate(EVENTS_SHOWN);
    let eq: responses::EventsQuery =
        serde_json::from_value(serde_json::json!({ "limit": EVENTS_SHOWN }))
            .map_err(|e| super::ApiError::bad(e.to_string()))?;
    let events = responses::list_events(State(s.clone()), h, ApiQuery(eq))
        .await?
        .0
        .events;
    // Awaiting ones first, then the latest.
    let mut approvals: Vec<ApprovalView> = approvals;
    approvals.sort_by(|a, b| {
        (a.state != "awaiting")
            .cmp(&(b.state != "awaiting"))
            .then(b.requested_at.cmp(&a.requested_at))
    });
    approvals.truncate(EVENTS_SHOWN);
    let can_settle = who.role >= Role::Operator;
    Ok(html! {
        section {
            h2 { "Approvals" }
            (table_wrap(html! {
                table #approvals {
                    thead { tr { th { "What" } th { "Response" } th { "Site" } th { "State" } th { "Requested" } th { "Expires" } th { "" } } }
                    tbody {
                        @for a in &approvals {
                            tr data-approval=(a.id) {
                                td.what { (a.what)
                                    @if let Some(r) = &a.held.run { @for (k, v) in &r.inputs { br; span.dim { (k) " = " } span.input { (v) } } }
                                }
                                td { (a.response) }
                                td { (a.site) }
                                td.state { (badge(&a.state)) }
                                td { (when(&a.requested_at)) }
                                td { (when(&a.expires_at)) }
                                td {
                                    @if a.state == "awaiting" && can_settle {
                                        form.settle method="post" action={ "/console/approvals/" (seg(&a.id)) } {
                                            input type="hidden" name="csrf" value=(who.csrf);
                                            button.approve type="submit" name="decision" value="approve" { "Approve" }
                                            button.deny type="submit" name="decision" value="deny" { "Deny" }
                                        }
                                    } @else if a.state == "awaiting" {
                                        span.dim { "an operator decides" }
                                    }
                                }
                            }
                        }
                    }
                }
            }))
            @if approvals.is_empty() { p.dim { "No approval." } }
        }
        section {
            h2 { "Decisions" }
            (table_wrap(html! {
                table #decisions {
                    thead { tr { th { "Action" } th { "State" } th { "Scope" } th { "Origin" } th { "Decided" } th { "In effect at" } } }
                    tbody {
                        @for d in &decisions {
                            tr {
                                td { (d.action) }
                                td { (badge(&d.state)) }
                                td { @if d.scope.is_empty() { "every site" } @else { (d.scope.join(", ")) } }
                                td { (d.origin_site.as_deref().unwrap_or("operator")) }
                                td { (when(&d.decided_at)) }
                                td { @for (site, ms) in &d.mitigated_ms { (site) " (+" (gantt::human_ms(*ms)) ") " } }
                            }
                        }
                    }
                }
            }))
            @if decisions.is_empty() { p.dim { "No decision." } }
        }
        section {
            h2 { "Events" }
            (table_wrap(html! {
                table #events {
                    thead { tr { th { "Time" } th { "Site" } th { "Kind" } th { "Source" } th { "Severity" } th { "Node" } th { "Summary" } th { "Fields" } } }
                    tbody {
                        @for e in &events {
                            tr {
                                td { (when(&rfc3339(e.event.time.timestamp_millis()))) }
                                td { (e.site) }
                                td { (wire(&e.event.kind)) }
                                td { (e.event.source) }
                                td { (wire(&e.event.severity)) }
                                td.node { (e.event.node.as_deref().unwrap_or("")) }
                                td.msg { (e.event.summary) }
                                td.fields { @for (k, v) in &e.event.fields { code { (k) "=" (v) } " " } }
                            }
                        }
                    }
                }
            }))
            @if events.is_empty() { p.dim { "No event." } }
        }
    })
}

pub(super) async fn events(State(s): State<Arc<Srv>>, who: Session) -> Response {
    let part = match live_part(&s, &who).await {
        Ok(m) => m,
        Err(e) => return api_failed(&who, e),
    };
    let body = html! {
        p.dim { span #live-state { "live updates: connecting…" } }
        div #live data-live="/console/events/live" { (part) }
    };
    render(
        StatusCode::OK,
        frame("Events, decisions and approvals", Some(&who), body),
    )
}

struct Live {
    srv: Arc<Srv>,
    who: Session,
    last: String,
    runs: tokio::sync::watch::Receiver<u64>,
    stopping: tokio::sync::watch::Receiver<bool>,
    done: bool,
}

/// Server-sent events: the live part of the events page each time it changes (`live`), and
/// `ended` when the session ends (logout, revocation, expiry).
pub(super) async fn live(State(s): State<Arc<Srv>>, who: Session) -> Response {
    let st = Live {
        runs: s.events.subscribe(),
        stopping: s.stopping.subscribe(),
        srv: s,
        who,
        last: String::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if st.done || *st.stopping.borrow() {
                return None;
            }
            let alive = matches!(
                st.srv.store.session(&st.who.id_hash, now_ms()).await,
                Ok(Some(_))
            );
            if !alive {
                st.done = true;
                let e = Event::default().event("ended").data("the session ended");
                return Some((Ok::<_, std::convert::Infallible>(e), st));
            }
            if let Ok(m) = live_part(&st.srv, &st.who).await {
                let html = m.into_string();
                if html != st.last {
                    st.last = html.clone();
                    return Some((Ok(Event::default().event("live").data(html)), st));
                }
            }
            tokio::select! {
                _ = st.runs.changed() => {}
                _ = tokio::time::sleep(LIVE_EVERY) => {}
                _ = st.stopping.changed() => {}
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
pub(super) struct SettleForm {
    #[serde(default)]
    csrf: Option<String>,
    #[serde(default)]
    decision: String,
}

/// Approve or deny: the CSRF token, then the role, then the API's own handler.
pub(super) async fn settle(
    State(s): State<Arc<Srv>>,
    who: Session,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<Form<SettleForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let f = form.ok().map(|Form(f)| f);
    if let Err(r) = who.check_csrf(f.as_ref().and_then(|f| f.csrf.as_deref())) {
        return r;
    }
    if let Err(r) = who.require(Role::Operator, "approving or denying") {
        return r;
    }
    let decision = f.map(|f| f.decision).unwrap_or_default();
    let done = async {
        let h = s.as_operator()?;
        approvals::settle_approval(
            State(s.clone()),
            h,
            ApiPath(id.clone()),
            ApiJson(proto::Settle {
                decision: decision.clone(),
            }),
        )
        .await
    };
    match done.await {
        Ok(v) => {
            tracing::info!(
                "console: approval {id} {} by user {} ({})",
                v.0.state,
                who.user,
                who.role.as_str()
            );
            if headers.get("x-console-fetch").is_some() {
                (StatusCode::OK, v.0.state.clone()).into_response()
            } else {
                Redirect::to("/console/events").into_response()
            }
        }
        Err(e) => api_failed(&who, e),
    }
}

pub(super) async fn registry(State(s): State<Arc<Srv>>, who: Session) -> Response {
    let got = async {
        let h = s.as_operator()?;
        Ok::<_, super::ApiError>(registry::list_registry(State(s.clone()), h).await?.0)
    };
    let list = match got.await {
        Ok(v) => v,
        Err(e) => return api_failed(&who, e),
    };
    let mut docs: BTreeMap<(String, String), Vec<&proto::RegistryEntry>> = BTreeMap::new();
    for e in &list.entries {
        docs.entry((e.kind.clone(), e.name.clone()))
            .or_default()
            .push(e);
    }
    let body = html! {
        (table_wrap(html! {
            table #registry {
                thead { tr { th { "Kind" } th { "Name" } th { "Versions" } th { "Latest pushed" } th { "" } } }
                tbody {
                    @for ((kind, name), vs) in &docs {
                        @let latest = vs.iter().map(|v| v.version).max().unwrap_or(1);
                        @let base = format!("/console/registry/{}/{}", seg(kind), seg(name));
                        tr {
                            td { (kind) }
                            td { (name) }
                            td { @for v in vs { a href={ (base) "?to=" (v.version) } title=(v.sha256) { "v" (v.version) } " " } }
                            td { @if let Some(v) = vs.iter().find(|v| v.version == latest) { (when(&v.pushed)) } }
                            td { @if latest > 1 { a.diff href={ (base) "?from=" (latest - 1) "&to=" (latest) } { "diff v" (latest - 1) " → v" (latest) } } }
                        }
                    }
                }
            }
        }))
        @if docs.is_empty() { p.dim { "Nothing pushed yet (" code { "vacsine push FILE" } ")." } }
    };
    render(StatusCode::OK, frame("Registry", Some(&who), body))
}

#[derive(Deserialize, Default)]
pub(super) struct Versions {
    #[serde(default)]
    from: Option<i64>,
    #[serde(default)]
    to: Option<i64>,
}

/// One version of a document (`?to=N`), or the difference between two (`?from=M&to=N`),
/// read through `GET /v1/registry/{kind}/{name}` and its `/diff`.
pub(super) async fn document(
    State(s): State<Arc<Srv>>,
    who: Session,
    Path((kind, name)): Path<(String, String)>,
    Query(v): Query<Versions>,
) -> Response {
    let get = |version: Option<i64>| {
        let (s, kind, name) = (s.clone(), kind.clone(), name.clone());
        async move {
            let h = s.as_operator()?;
            Ok::<_, super::ApiError>(
                registry::show_document(
                    State(s),
                    h,
                    ApiPath((kind, name)),
                    ApiQuery(proto::VersionQuery { version }),
                )
                .await?
                .0,
            )
        }
    };
    let to = match get(v.to).await {
        Ok(r) => r,
        Err(e) => return api_failed(&who, e),
    };
    let diff = match v.from {
        Some(from) => {
            let got = async {
                let h = s.as_operator()?;
                Ok::<_, super::ApiError>(
                    registry::diff_documents(
                        State(s.clone()),
                        h,
                        ApiPath((kind.clone(), name.clone())),
                        ApiQuery(proto::DiffQuery {
                            from,
                            to: to.version,
                        }),
                    )
                    .await?
                    .0,
                )
            };
            match got.await {
                Ok(d) => Some(d),
                Err(e) => return api_failed(&who, e),
            }
        }
        None => None,
    };
    let versions: Vec<i64> = (1..=to.version.max(diff.as_ref().map_or(0, |d| d.from))).collect();
    let new_text = serde_json::to_string_pretty(&to.document).unwrap_or_default();
    let body = html! {
        form.filters method="get" {
            label { "From "
                select name="from" {
                    option value="" { "—" }
                    @for n in &versions { option value=(n) selected[diff.as_ref().map(|d| d.from) == Some(*n)] { "v" (n) } }
                }
            }
            label { "To "
                select name="to" {
                    @for n in &versions { option value=(n) selected[to.version == *n] { "v" (n) } }
                }
            }
            button type="submit" { "Show" }
        }
        p.dim { "v" (to.version) " pushed " (when(&to.pushed)) ", " code { (to.sha256) } }
        @match &diff {
            Some(d) => {
                h2 { "v" (d.from) " → v" (to.version) }
                pre #diff .diff {
                    @for (tag, line) in diff_lines(&d.lines) {
                        span class=(tag) { (line) }
                    }
                }
            }
            None => { pre.out #document { (new_text) } }
        }
    };
    render(
        StatusCode::OK,
        frame(&format!("{kind} {name}"), Some(&who), body),
    )
}

/// A diff's lines with `ins`, `del` or `ctx`, and its sign.
pub(super) fn diff_lines(lines: &[proto::DiffLine]) -> Vec<(&'static str, String)> {
    lines
        .iter()
        .map(|l| {
            let tag = match l.op.as_str() {
                "-" => "del",
                "+" => "ins",
                _ => "ctx",
            };
            (tag, format!("{} {}\n", l.op, l.text))
        })
        .collect()
}

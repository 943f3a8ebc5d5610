//! Events and decisions at the orchestrator (issue 16): what agents upload (each kept once),
//! the decision set each site's long poll carries (signed), and the operator's view and
//! hand-made decisions. A child of `server`.

use super::extract::{ApiJson, ApiPath as UrlPath, ApiQuery as Query};
use super::{ApiError, ApiResult, Srv};
use crate::proto::{self, DecisionView, SignedDecisions};
use crate::store::{AgentRow, DecisionRow};
use crate::{now_ms, rfc3339};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use vacsine_response::{decision_id, Action, Decision, DecisionOrigin, IpNet};

/// The scope of a decision (JSON array of sites; empty: every site).
fn scope_of(r: &DecisionRow) -> Vec<String> {
    serde_json::from_str(&r.scope).unwrap_or_default()
}

pub(super) fn in_scope(r: &DecisionRow, site: &str) -> bool {
    let s = scope_of(r);
    s.is_empty() || s.iter().any(|x| x == site)
}

pub(super) fn is_active(r: &DecisionRow, now: i64) -> bool {
    r.deleted_ms.is_none() && r.expires_ms.is_none_or(|t| t > now)
}

fn state(r: &DecisionRow, now: i64) -> &'static str {
    if r.deleted_ms.is_some() {
        "deleted"
    } else if is_active(r, now) {
        "active"
    } else {
        "expired"
    }
}

impl Srv {
    /// Events and decisions a site uploaded: events kept once by id (their id must be their
    /// content id), decisions made at this site kept once by id (their id must be the one
    /// their response, event and target give), every report of a decision in effect here
    /// kept once per site. A new decision wakes the long polls of the sites in its scope.
    pub(super) async fn responses_upload(
        &self,
        agent: &AgentRow,
        r: &proto::ResponseUpload,
    ) -> ApiResult<proto::ResponseAccepted> {
        let now = now_ms();
        let mut events = Vec::with_capacity(r.events.len());
        for e in &r.events {
            if e.id != e.content_id() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    proto::BAD_RECORD,
                    format!(
                        "event `{}` from site `{}`: its id is not its content id",
                        e.id, agent.site
                    ),
                ));
            }
            let body = serde_json::to_string(e).map_err(|e| ApiError::bad(e.to_string()))?;
            events.push((e.id.clone(), body));
        }
        let events_new = self.store.put_events(&agent.site, &events, now).await?;
        if events_new > 0 {
            self.metrics.events.inc_by(events_new as u64);
            // Those kept before (an upload sent again) are the same line and timestamp for
            // Loki, which keeps them once.
            if let Some(l) = &self.loki {
                l.push(r.events.iter().zip(&events).map(|(e, (_, body))| {
                    crate::loki::Line::event(&agent.site, &agent.name, e, body)
                }));
            }
            // `mode: orchestrated` Responses: the orchestrator decides on what sites send.
            let intel: Vec<crate::taxii::Intel> = r
                .events
                .iter()
                .map(|e| crate::taxii::Intel {
                    event: e.clone(),
                    valid_from: None,
                    valid_until: None,
                })
                .collect();
            if let Err(e) = self.decide_orchestrated(&intel).await {
                tracing::warn!(
                    "orchestrated responses on events from site {}: {e:#}",
                    agent.site
                );
            }
        }
        // What orchestrated Responses needing approval ask for waits for an operator.
        self.hold_for_approval(&agent.site, &r.events).await?;
        let mut decisions_new = 0;
        for sd in &r.decisions {
            let d = &sd.decision;
            if d.origin.site.as_deref() == Some(agent.site.as_str()) {
                if let Action::Ban { net } = &d.action {
                    if let Some(why) = vacsine_response::decide::unbannable(net) {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            proto::BAD_RECORD,
                            format!(
                                "decision `{}` from site `{}`: {why}: refused, not fanned out",
                                d.id, agent.site
                            ),
                        ));
                    }
                }
                if d.id != decision_id(&d.origin.response, &d.origin.event_id, &d.action) {
                    return Err(ApiError::new(
                        StatusCode::BAD_REQUEST,
                        proto::BAD_RECORD,
                        format!(
                            "decision `{}` from site `{}`: its id is not the one its response, event and target give",
                            d.id, agent.site
                        ),
                    ));
                }
                let row = DecisionRow {
                    id: d.id.clone(),
                    body: serde_json::to_string(d).map_err(|e| ApiError::bad(e.to_string()))?,
                    scope: serde_json::to_string(
                        &self
                            .response_scope(&d.origin.response, Some(&agent.site))
                            .await,
                    )
                    .unwrap_or_else(|_| "[]".into()),
                    origin_site: Some(agent.site.clone()),
                    event_ms: sd.event_ms,
                    decided_ms: sd.decided_ms,
                    expires_ms: d.expires_at.map(|t| t.timestamp_millis()),
                    deleted_ms: None,
                    applied: vec![],
                };
                if self.store.put_decision(&row).await? {
                    decisions_new += 1;
                    self.metrics
                        .decisions
                        .get_or_create(&crate::metrics::OriginLabel { origin: "site" })
                        .inc();
                    if let Some(l) = &self.loki {
                        l.push([crate::loki::Line::decision(
                            &agent.site,
                            &agent.name,
                            row.decided_ms,
                            &row.body,
                        )]);
                    }
                    tracing::info!(
                        "decision {} ({}) made at site {}",
                        d.id,
                        d.action,
                        agent.site
                    );
                }
            }
            if let Some(at) = sd.applied_ms {
                if self.store.decision_applied(&d.id, &agent.site, at).await? {
                    self.metrics.decisions_applied.inc();
                    self.metrics
                        .time_to_mitigate
                        .observe(crate::metrics::Metrics::secs(
                            sd.event_ms.unwrap_or(sd.decided_ms),
                            at,
                        ));
                }
            }
        }
        if decisions_new > 0 {
            self.queue.send_modify(|n| *n += 1);
        }
        Ok(proto::ResponseAccepted {
            events_new,
            decisions_new,
        })
    }

    /// The sites of the latest pushed `kind: Response` named `name` (empty: every site; also
    /// when it is not in the registry: a decision is never narrower than its response).
    /// With `scope.labels`: the sites carrying them when the decision is kept.
    async fn response_scope(&self, name: &str, deciding: Option<&str>) -> Vec<String> {
        let rule = match self.store.registry_document("Response", name, None).await {
            Ok(Some(row)) => serde_json::from_str::<serde_json::Value>(&row.document)
                .ok()
                .and_then(|v| crate::decisions::response_rule(&row.name, row.version, &v).ok()),
            _ => None,
        };
        match rule {
            Some(r) => self.rule_scope(&r, deciding).await.unwrap_or(r.sites),
            None => Vec::new(),
        }
    }

    /// The signed decision set of `site`, unless its version is `have`.
    pub(super) async fn decision_set(
        &self,
        site: &str,
        have: &str,
    ) -> ApiResult<Option<SignedDecisions>> {
        let now = now_ms();
        let rows = self.store.decisions().await?;
        let mut active = Vec::new();
        let mut deleted = Vec::new();
        for r in rows.iter().filter(|r| in_scope(r, site)) {
            if is_active(r, now) {
                if let Ok(d) = serde_json::from_str::<Decision>(&r.body) {
                    active.push(d);
                }
            } else if r.deleted_ms.is_some() && r.expires_ms.is_none_or(|t| t > now) {
                deleted.push(r.id.clone());
            }
        }
        let version = crate::decisions::set_version(&active, &deleted);
        let labels = self.labels_of(site).await?;
        let version = crate::decisions::labeled_version(&version, &labels);
        if version == have {
            return Ok(None);
        }
        crate::decisions::sign_set_labeled(&self.bundle, site, active, deleted, labels, now)
            .map(Some)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("signing the decision set: {e}"),
                )
            })
    }
}

fn view(r: &DecisionRow, now: i64) -> Option<DecisionView> {
    let decision: Decision = serde_json::from_str(&r.body).ok()?;
    let start = r.event_ms.unwrap_or(r.decided_ms);
    let applied: BTreeMap<String, String> = r
        .applied
        .iter()
        .map(|(s, t)| (s.clone(), rfc3339(*t)))
        .collect();
    let mitigated_ms = r
        .applied
        .iter()
        .map(|(s, t)| (s.clone(), t - start))
        .collect();
    Some(DecisionView {
        id: r.id.clone(),
        action: decision.action.to_string(),
        state: state(r, now).into(),
        scope: scope_of(r),
        origin_site: r.origin_site.clone(),
        event_at: r.event_ms.map(rfc3339),
        decided_at: rfc3339(r.decided_ms),
        applied,
        mitigated_ms,
        expires_at: r.expires_ms.map(rfc3339),
        deleted_at: r.deleted_ms.map(rfc3339),
        decision,
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct DecisionsQuery {
    site: Option<String>,
    #[serde(default)]
    active: bool,
}

#[utoipa::path(get, path = "/v1/decisions", tag = "operator", security(("operator" = [])),
    description = "Decisions made at sites or by operators, oldest first, with their scope, origin and time to mitigate (event, decided, in effect at each site).",
    params(("site" = Option<String>, Query, description = "only decisions whose scope holds this site"),
        ("active" = Option<bool>, Query, description = "only active decisions (not expired, not deleted)")),
    responses((status = 200, body = proto::DecisionList), (status = 400, body = proto::ErrorBody, description = "`active` that is not `true` or `false`"), (status = 401, body = proto::ErrorBody)))]
pub(super) async fn list_decisions(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    Query(q): Query<DecisionsQuery>,
) -> ApiResult<Json<proto::DecisionList>> {
    s.operator(&h)?;
    let now = now_ms();
    let decisions = s
        .store
        .decisions()
        .await?
        .iter()
        .filter(|r| q.site.as_deref().is_none_or(|site| in_scope(r, site)))
        .filter(|r| !q.active || is_active(r, now))
        .filter_map(|r| view(r, now))
        .collect();
    Ok(Json(proto::DecisionList { decisions }))
}

#[utoipa::path(post, path = "/v1/decisions", tag = "operator", security(("operator" = [])),
    description = "Ban an address or network for a duration at every site in scope; fanned out on the sites' long polls.",
    request_body = proto::AddDecision,
    responses((status = 200, body = proto::DecisionView), (status = 400, body = proto::ErrorBody), (status = 401, body = proto::ErrorBody)))]
pub(super) async fn add_decision(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiJson(r): ApiJson<proto::AddDecision>,
) -> ApiResult<Json<DecisionView>> {
    s.operator(&h)?;
    let net: IpNet = r.ip.trim().parse().map_err(|e| {
        ApiError::bad(format!(
            "`ip`: {e} (give an IPv4 or IPv6 address, or a network such as 198.51.100.0/24)"
        ))
    })?;
    if let Some(why) = vacsine_response::decide::unbannable(&net) {
        return Err(ApiError::bad(format!("`ip`: {why}; nothing was decided")));
    }
    let span = vacsine_response::parse_span(r.duration.trim())
        .map_err(|e| ApiError::bad(format!("`for`: {e}")))?;
    let sites = s.store.sites().await?;
    for site in &r.sites {
        if !sites.iter().any(|x| &x.name == site) {
            return Err(ApiError::bad(format!(
                "`sites`: no site `{site}` (`vacsine site list` shows them)"
            )));
        }
    }
    let now = chrono::Utc::now();
    let action = Action::Ban { net };
    let event_id = format!("operator:{}", super::random_hex(16));
    let origin = DecisionOrigin {
        site: None,
        response: "operator".into(),
        event_id: event_id.clone(),
    };
    let d = Decision {
        id: decision_id("operator", &event_id, &action),
        action,
        expires_at: Some(now + span),
        origin,
        created_at: now,
    };
    let row = DecisionRow {
        id: d.id.clone(),
        body: serde_json::to_string(&d).map_err(|e| ApiError::bad(e.to_string()))?,
        scope: serde_json::to_string(&r.sites).unwrap_or_else(|_| "[]".into()),
        origin_site: None,
        event_ms: None,
        decided_ms: now.timestamp_millis(),
        expires_ms: d.expires_at.map(|t| t.timestamp_millis()),
        deleted_ms: None,
        applied: vec![],
    };
    if s.store.put_decision(&row).await? {
        s.metrics
            .decisions
            .get_or_create(&crate::metrics::OriginLabel { origin: "operator" })
            .inc();
        if let Some(l) = &s.loki {
            l.push([crate::loki::Line::decision(
                "",
                "",
                row.decided_ms,
                &row.body,
            )]);
        }
    }
    tracing::info!(
        "decision {} ({}) added by an operator{}",
        d.id,
        d.action,
        r.reason.map(|x| format!(": {x}")).unwrap_or_default()
    );
    s.queue.send_modify(|n| *n += 1);
    view(&row, now.timestamp_millis())
        .map(Json)
        .ok_or_else(|| ApiError::bad("the decision cannot be shown"))
}

#[utoipa::path(delete, path = "/v1/decisions/{id}", tag = "operator", security(("operator" = [])),
    description = "Delete a decision: every site in its scope removes its element at its next poll.",
    params(("id" = String, Path, description = "the decision's id")),
    responses((status = 200, body = proto::DecisionView), (status = 404, body = proto::ErrorBody), (status = 401, body = proto::ErrorBody)))]
pub(super) async fn delete_decision(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<DecisionView>> {
    s.operator(&h)?;
    let now = now_ms();
    if !s.store.delete_decision(&id, now).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no active decision `{id}` (`vacsine decisions` lists them)"),
        ));
    }
    s.queue.send_modify(|n| *n += 1);
    let row = s
        .store
        .decisions()
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", id.clone()))?;
    view(&row, now)
        .map(Json)
        .ok_or_else(|| ApiError::bad("the decision cannot be shown"))
}

#[derive(Debug, Deserialize)]
pub(super) struct EventsQuery {
    site: Option<String>,
    limit: Option<usize>,
}

#[utoipa::path(get, path = "/v1/events", tag = "operator", security(("operator" = [])),
    description = "Events sites uploaded (each once), newest first.",
    params(("site" = Option<String>, Query, description = "only events from this site"),
        ("limit" = Option<usize>, Query, description = "at most this many, newest first (default 1000, at most 100000)", minimum = 0u64, maximum = 18446744073709551615u64)),
    responses((status = 200, body = proto::EventList), (status = 400, body = proto::ErrorBody, description = "a `limit` that is not a number"), (status = 401, body = proto::ErrorBody)))]
pub(super) async fn list_events(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    Query(q): Query<EventsQuery>,
) -> ApiResult<Json<proto::EventList>> {
    s.operator(&h)?;
    let rows = s
        .store
        .events(q.site.as_deref(), q.limit.unwrap_or(1000).min(100_000))
        .await?;
    let events = rows
        .into_iter()
        .filter_map(|r| {
            Some(proto::EventView {
                site: r.site,
                received_at: rfc3339(r.received_ms),
                event: serde_json::from_str(&r.body).ok()?,
            })
        })
        .collect();
    Ok(Json(proto::EventList { events }))
}

//! Events and decisions at the orchestrator (issue 16): what agents upload (each kept once),
//! the decision set each site's long poll carries (signed), and the operator's view and
//! hand-made decisions. A child of `server`.

use super::extract::{ApiJson, ApiPath as UrlPath, ApiQuery as Query};
use super::{ApiError, ApiResult, Srv};
use crate::store::{AgentRow, DecisionRow};
use crate::{now_ms, rfc3339};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use vacsine_contract::decisions::{DecisionGrant, Deletion, DECISION_FORMAT, DELETION_FORMAT};
use vacsine_contract::proto::{self, DecisionView, SignedDecisions, SignedJob};
use vacsine_response::{decision_id, Action, Decision, DecisionOrigin, IpNet};

/// A decision as the orchestrator signed it when it was made, and its deletion if one was
/// signed: what sites and bouncers act on (the row's columns only index it).
pub(super) struct Sealed {
    pub grant: DecisionGrant,
    pub signed: SignedJob,
    pub deletion: Option<(SignedJob, Deletion)>,
}

/// A decision row read through its signature: `sealed` is the reason it is refused when the
/// row was not signed by this orchestrator when the decision was made (written by hand,
/// altered, or older than signed decisions).
pub(super) struct Opened {
    pub row: DecisionRow,
    pub sealed: Result<Sealed, String>,
}

impl Opened {
    /// Whether the decision applies at `site` (never when refused).
    pub(super) fn in_scope(&self, site: &str) -> bool {
        self.sealed.as_ref().is_ok_and(|s| s.grant.applies_at(site))
    }

    /// Whether it is in effect: signed, not deleted, not expired.
    pub(super) fn is_active(&self, now: i64) -> bool {
        self.sealed.as_ref().is_ok_and(|s| {
            s.deletion.is_none()
                && s.grant
                    .decision
                    .expires_at
                    .is_none_or(|t| t.timestamp_millis() > now)
        })
    }

    fn state(&self, now: i64) -> &'static str {
        match &self.sealed {
            Err(_) => "unsigned",
            Ok(s) if s.deletion.is_some() => "deleted",
            Ok(_) if self.is_active(now) => "active",
            Ok(_) => "expired",
        }
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
                let scope = self
                    .response_scope(&d.origin.response, Some(&agent.site))
                    .await;
                let row = self.sealed_row(
                    d,
                    &scope,
                    Some(agent.site.clone()),
                    sd.event_ms,
                    sd.decided_ms,
                )?;
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
                .and_then(|v| {
                    vacsine_contract::decisions::response_rule(&row.name, row.version, &v).ok()
                }),
            _ => None,
        };
        match rule {
            Some(r) => self.rule_scope(&r, deciding).await.unwrap_or(r.sites),
            None => Vec::new(),
        }
    }

    /// A decision row for `d`, signed now with the sites it applies at (`scope`, empty:
    /// every site): called by the authenticated act that makes the decision, never from a
    /// row read back.
    pub(super) fn sealed_row(
        &self,
        d: &Decision,
        scope: &[String],
        origin_site: Option<String>,
        event_ms: Option<i64>,
        decided_ms: i64,
    ) -> ApiResult<DecisionRow> {
        let internal = |e: anyhow::Error| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("signing decision {}: {e:#}", d.id),
            )
        };
        let signed =
            vacsine_contract::decisions::seal_decision(&self.bundle, d, scope).map_err(internal)?;
        Ok(DecisionRow {
            id: d.id.clone(),
            body: serde_json::to_string(d).map_err(|e| ApiError::bad(e.to_string()))?,
            scope: serde_json::to_string(scope).unwrap_or_else(|_| "[]".into()),
            origin_site,
            event_ms,
            decided_ms,
            expires_ms: d.expires_at.map(|t| t.timestamp_millis()),
            deleted_ms: None,
            applied: vec![],
            signed: Some(serde_json::to_string(&signed).map_err(|e| internal(e.into()))?),
            deletion: None,
        })
    }

    /// A row read through its signatures (see [`Opened`]).
    pub(super) fn open_row(&self, row: DecisionRow) -> Opened {
        let key = self.bundle.public_b64();
        let sealed = (|| {
            let text = row
                .signed
                .as_deref()
                .ok_or("not signed by the orchestrator when it was made")?;
            let signed: SignedJob = serde_json::from_str(text)
                .map_err(|e| format!("its signed form is unreadable: {e}"))?;
            let grant: DecisionGrant = self
                .verifier
                .open(&key, &signed, DECISION_FORMAT)
                .map_err(|e| format!("{e:#}"))?;
            if grant.decision.id != row.id {
                return Err(format!(
                    "its signed form is decision {}, not {}",
                    grant.decision.id, row.id
                ));
            }
            let deletion = match row.deletion.as_deref() {
                None => None,
                Some(text) => {
                    let sj: SignedJob = serde_json::from_str(text)
                        .map_err(|e| format!("its signed deletion is unreadable: {e}"))?;
                    let del: Deletion = self
                        .verifier
                        .open(&key, &sj, DELETION_FORMAT)
                        .map_err(|e| format!("its deletion: {e:#}"))?;
                    if del.id != row.id {
                        return Err(format!("its deletion is signed for decision {}", del.id));
                    }
                    Some((sj, del))
                }
            };
            Ok(Sealed {
                grant,
                signed,
                deletion,
            })
        })();
        if let Err(why) = &sealed {
            if self.verifier.first_refusal(&row.id) {
                tracing::warn!(
                    "decision {} in the store is refused, no site or bouncer acts on it: {why}",
                    row.id
                );
            }
        } else if row.deleted_ms.is_some()
            && sealed.as_ref().is_ok_and(|s| s.deletion.is_none())
            && self.verifier.first_refusal(&row.id)
        {
            tracing::warn!(
                "decision {} is marked deleted in the store without a signed deletion: it stays in effect",
                row.id
            );
        }
        Opened { row, sealed }
    }

    /// Every decision of the store, read through its signatures.
    pub(super) async fn opened_decisions(&self) -> ApiResult<Vec<Opened>> {
        Ok(self
            .store
            .decisions()
            .await?
            .into_iter()
            .map(|r| self.open_row(r))
            .collect())
    }

    /// The signed decision set of `site`, unless its version is `have`: made only of what
    /// was signed when it was made.
    pub(super) async fn decision_set(
        &self,
        site: &str,
        have: &str,
    ) -> ApiResult<Option<SignedDecisions>> {
        let now = now_ms();
        let mut active = Vec::new();
        let mut deleted = Vec::new();
        for o in self.opened_decisions().await? {
            let Ok(s) = &o.sealed else { continue };
            if !s.grant.applies_at(site) {
                continue;
            }
            let unexpired = s
                .grant
                .decision
                .expires_at
                .is_none_or(|t| t.timestamp_millis() > now);
            match &s.deletion {
                None if unexpired => active.push(s.signed.clone()),
                Some((sj, _)) if unexpired => deleted.push(sj.clone()),
                _ => {}
            }
        }
        let labels = self.signed_labels_of(site).await?;
        let version = vacsine_contract::decisions::set_version(&active, &deleted, labels.as_ref());
        if version == have {
            return Ok(None);
        }
        vacsine_contract::decisions::sign_set(&self.bundle, site, active, deleted, labels, now)
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

fn view(o: &Opened, now: i64) -> Option<DecisionView> {
    let r = &o.row;
    // What was signed when it was made; a refused row is shown as its columns say, marked.
    let (decision, scope, expires_ms, deleted_ms) = match &o.sealed {
        Ok(s) => (
            s.grant.decision.clone(),
            s.grant.scope.clone(),
            s.grant.decision.expires_at.map(|t| t.timestamp_millis()),
            s.deletion.as_ref().map(|(_, d)| d.deleted_ms),
        ),
        Err(_) => (
            serde_json::from_str::<Decision>(&r.body).ok()?,
            serde_json::from_str(&r.scope).unwrap_or_default(),
            r.expires_ms,
            r.deleted_ms,
        ),
    };
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
        state: o.state(now).into(),
        refused: o.sealed.as_ref().err().cloned(),
        scope,
        origin_site: r.origin_site.clone(),
        event_at: r.event_ms.map(rfc3339),
        decided_at: rfc3339(r.decided_ms),
        applied,
        mitigated_ms,
        expires_at: expires_ms.map(rfc3339),
        deleted_at: deleted_ms.map(rfc3339),
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
        .opened_decisions()
        .await?
        .iter()
        .filter(|o| q.site.as_deref().is_none_or(|site| o.in_scope(site)))
        .filter(|o| !q.active || o.is_active(now))
        .filter_map(|o| view(o, now))
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
    let row = s.sealed_row(&d, &r.sites, None, None, now.timestamp_millis())?;
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
    view(&s.open_row(row), now.timestamp_millis())
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
    let deletion = vacsine_contract::decisions::seal_deletion(&s.bundle, &id, now)
        .and_then(|d| Ok(serde_json::to_string(&d)?))
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("signing the deletion of {id}: {e:#}"),
            )
        })?;
    if !s.store.delete_decision(&id, now, &deletion).await? {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no active decision `{id}` (`vacsine decisions` lists them)"),
        ));
    }
    s.queue.send_modify(|n| *n += 1);
    let row = s
        .opened_decisions()
        .await?
        .into_iter()
        .find(|o| o.row.id == id)
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

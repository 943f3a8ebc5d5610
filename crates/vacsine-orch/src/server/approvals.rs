//! Approvals (issue 16, `approval: required`): a quarantine or a workflow run an orchestrated
//! Response asks for waits here, with its expiry, until an operator approves or denies it.
//! Approved: a quarantine becomes a decision fanned out to every site in the Response's scope
//! on the signed decision sets (as any decision); a workflow run is submitted to the site whose
//! event asked for it, from the registry (as `vacsine registry run`). Denied or expired: never.
//! A child of `server`.

use super::extract::{ApiJson, ApiPath};
use super::{ApiError, ApiResult, Srv};
use crate::store::ApprovalRow;
use crate::{now_ms, rfc3339};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use std::sync::Arc;
use vacsine_contract::decisions::ApprovalGrant;
use vacsine_contract::proto::{self, ApprovalView, Held};
use vacsine_events::Event;
use vacsine_response::{
    AllowList, Context as DecideContext, Decider, EventOrigin, Outcome, Verdict, Windows,
};

/// `awaiting`, `expired`, `approved` or `denied`.
fn state(a: &ApprovalRow, now: i64) -> &'static str {
    match a.state.as_str() {
        "approved" => "approved",
        "denied" => "denied",
        _ if a.expires_ms <= now => "expired",
        _ => "awaiting",
    }
}

/// Approval `a` as shown: what was signed when the Response asked (`g`); a refused row as
/// its columns say, in state `unsigned`, with why.
fn view(a: &ApprovalRow, g: &Result<ApprovalGrant, String>, now: i64) -> Option<ApprovalView> {
    let (held, scope, site, expires_ms) = match g {
        Ok(g) => (
            g.held.clone(),
            g.scope.clone(),
            g.site.clone(),
            g.expires_ms,
        ),
        Err(_) => (
            serde_json::from_str::<Held>(&a.body).ok()?,
            serde_json::from_str(&a.scope).unwrap_or_default(),
            a.site.clone(),
            a.expires_ms,
        ),
    };
    let mut a = a.clone();
    a.expires_ms = expires_ms;
    let what = match (&held.decision, &held.run) {
        (Some(d), _) => d.action.to_string(),
        (None, Some(r)) => format!("run workflow {}", r.workflow),
        (None, None) => return None,
    };
    Some(ApprovalView {
        id: a.id.clone(),
        what,
        response: a.response.clone(),
        site,
        scope,
        state: if g.is_err() {
            "unsigned"
        } else {
            state(&a, now)
        }
        .into(),
        refused: g.as_ref().err().cloned(),
        event_at: a.event_ms.map(rfc3339),
        requested_at: rfc3339(a.created_ms),
        expires_at: rfc3339(a.expires_ms),
        settled_at: a.settled_ms.map(rfc3339),
        held,
    })
}

/// What an approval is about: a decision's target, or a workflow and its inputs.
fn target_key(
    decision: Option<&vacsine_response::Decision>,
    run: Option<&vacsine_response::WorkflowRun>,
) -> String {
    match (decision, run) {
        (Some(d), _) => d.action.target_text(),
        (None, Some(r)) => format!(
            "workflow:{}:{}",
            r.workflow,
            serde_json::to_string(&r.inputs).unwrap_or_default()
        ),
        (None, None) => String::new(),
    }
}

impl Srv {
    /// The `kind: Response` documents of the registry (latest version of each) that are
    /// orchestrated and need approval: what this orchestrator holds approvals for.
    async fn approval_rules(&self) -> Vec<vacsine_response::Rule> {
        let Ok(rows) = self.store.registry().await else {
            return Vec::new();
        };
        let mut latest: std::collections::BTreeMap<String, crate::store::RegistryRow> =
            Default::default();
        for r in rows.into_iter().filter(|r| r.kind == "Response") {
            if latest.get(&r.name).is_none_or(|l| l.version < r.version) {
                latest.insert(r.name.clone(), r);
            }
        }
        latest
            .values()
            .filter_map(|row| {
                let v: serde_json::Value = serde_json::from_str(&row.document).ok()?;
                vacsine_contract::decisions::response_rule(&row.name, row.version, &v).ok()
            })
            .filter(|r| {
                r.mode == vacsine_response::response::Mode::Orchestrated && r.approval.is_some()
            })
            .collect()
    }

    /// Events a site uploaded, new here: every orchestrated Response that needs approval is
    /// evaluated for them, and what it asks for waits as an approval (each once by its id).
    pub(super) async fn hold_for_approval(&self, site: &str, events: &[Event]) -> ApiResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let rules = self.approval_rules().await;
        if rules.is_empty() {
            return Ok(());
        }
        let labels = self.labels_of(site).await?;
        let allow = AllowList::default();
        let cx = DecideContext {
            now: chrono::Utc::now(),
            site,
            site_labels: &labels,
            decider: Decider::Orchestrator,
            allow: &allow,
            origin: EventOrigin::External,
        };
        let mut windows = Windows::default();
        for e in events {
            for o in vacsine_response::decide(&rules, e, &cx, &mut windows) {
                self.hold(site, e, &rules, &o).await?;
            }
        }
        Ok(())
    }

    /// One outcome awaiting approval kept (others are not this module's).
    pub(super) async fn hold(
        &self,
        site: &str,
        e: &Event,
        rules: &[vacsine_response::Rule],
        o: &Outcome,
    ) -> ApiResult<()> {
        let Verdict::AwaitingApproval {
            decision,
            run,
            expires_at,
        } = &o.verdict
        else {
            return Ok(());
        };
        let id = match (decision, run) {
            (Some(d), _) => d.id.clone(),
            (None, Some(r)) => r.id.clone(),
            (None, None) => return Ok(()),
        };
        let response = o.response.clone().unwrap_or_default();
        // One approval per response and target while one waits or was approved: a thousand
        // touches ask once (the denied and expired ones may be asked again).
        let now = now_ms();
        let target = target_key(decision.as_ref(), run.as_ref());
        for a in self.store.approvals().await? {
            if a.response != response || !matches!(state(&a, now), "awaiting" | "approved") {
                continue;
            }
            if let Ok(h) = serde_json::from_str::<Held>(&a.body) {
                if target_key(h.decision.as_ref(), h.run.as_ref()) == target {
                    return Ok(());
                }
            }
        }
        let sites = match rules.iter().find(|r| r.name == response) {
            Some(r) => self.rule_scope(r, Some(site)).await?,
            None => Vec::new(),
        };
        let held = Held {
            decision: decision.clone(),
            run: run.clone(),
        };
        let grant = ApprovalGrant {
            format: vacsine_contract::decisions::APPROVAL_FORMAT.into(),
            id: id.clone(),
            response: response.clone(),
            held: held.clone(),
            scope: sites.clone(),
            site: site.to_string(),
            event_ms: Some(e.time.timestamp_millis()),
            expires_ms: expires_at.timestamp_millis(),
        };
        let signed = vacsine_contract::decisions::seal_approval(&self.bundle, &grant)
            .and_then(|s| Ok(serde_json::to_string(&s)?))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("signing approval {id}: {e:#}"),
                )
            })?;
        let row = ApprovalRow {
            id: id.clone(),
            response: response.clone(),
            body: serde_json::to_string(&held).map_err(|e| ApiError::bad(e.to_string()))?,
            scope: serde_json::to_string(&sites).unwrap_or_else(|_| "[]".into()),
            site: site.to_string(),
            event_ms: Some(e.time.timestamp_millis()),
            created_ms: now_ms(),
            expires_ms: expires_at.timestamp_millis(),
            state: "awaiting".into(),
            settled_ms: None,
            signed: Some(signed),
        };
        if self.store.put_approval(&row).await? {
            tracing::info!(
                "approval {id} requested by response {response} for an event at site {site}: awaiting an operator until {}",
                rfc3339(row.expires_ms)
            );
        }
        Ok(())
    }

    async fn approval(&self, id: &str) -> ApiResult<ApprovalRow> {
        self.store
            .approvals()
            .await?
            .into_iter()
            .find(|a| a.id == id)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no approval `{id}` (`vacsine approvals` lists them)"),
                )
            })
    }

    /// What approval `a` holds as the orchestrator signed it when the Response asked: what
    /// an approval enacts (the row's columns only index it). Refused when the row was not
    /// signed then (written by hand, altered, or older than signed approvals).
    pub(super) fn open_approval(&self, a: &ApprovalRow) -> Result<ApprovalGrant, String> {
        let text = a
            .signed
            .as_deref()
            .ok_or("not signed by the orchestrator when the Response asked for it")?;
        let sj: proto::SignedJob = serde_json::from_str(text)
            .map_err(|e| format!("its signed form is unreadable: {e}"))?;
        let g: ApprovalGrant = self
            .verifier
            .open(
                &self.bundle.public_b64(),
                &sj,
                vacsine_contract::decisions::APPROVAL_FORMAT,
            )
            .map_err(|e| format!("{e:#}"))?;
        if g.id != a.id {
            return Err(format!(
                "its signed form is approval {}, not {}",
                g.id, a.id
            ));
        }
        Ok(g)
    }

    /// An approved quarantine: its decision kept (once by id), signed now, and fanned out.
    async fn enact(&self, a: &ApprovalRow, g: &ApprovalGrant) -> ApiResult<()> {
        if let Some(d) = &g.held.decision {
            let row = self.sealed_row(
                d,
                &g.scope,
                None,
                g.event_ms,
                a.settled_ms.unwrap_or_else(now_ms),
            )?;
            if self.store.put_decision(&row).await? {
                self.queue.send_modify(|n| *n += 1);
            }
        }
        Ok(())
    }
}

#[utoipa::path(get, path = "/v1/approvals", tag = "operator", security(("operator" = [])),
    description = "Decisions (quarantine) and workflow runs waiting for an operator's approval, oldest first, with their state: awaiting, expired, approved or denied.",
    responses((status = 200, body = proto::ApprovalList), (status = 401, body = proto::ErrorBody)))]
pub(super) async fn list_approvals(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
) -> ApiResult<Json<proto::ApprovalList>> {
    s.operator(&h)?;
    let now = now_ms();
    let approvals = s
        .store
        .approvals()
        .await?
        .iter()
        .filter_map(|a| view(a, &s.open_approval(a), now))
        .collect();
    Ok(Json(proto::ApprovalList { approvals }))
}

#[utoipa::path(post, path = "/v1/approvals/{id}", tag = "operator", security(("operator" = [])),
    description = "Approve or deny a waiting decision or workflow run. Approved: a quarantine is fanned out to every site in its scope, a workflow run is submitted to the site whose event asked for it. Denied: never. An expired one cannot be approved (409). Approving an approved quarantine again is harmless.",
    params(("id" = String, Path, description = "the approval's id")),
    request_body = proto::Settle,
    responses((status = 200, body = proto::ApprovalView), (status = 400, body = proto::ErrorBody), (status = 401, body = proto::ErrorBody), (status = 404, body = proto::ErrorBody), (status = 409, body = proto::ErrorBody)))]
pub(super) async fn settle_approval(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiPath(id): ApiPath<String>,
    ApiJson(r): ApiJson<proto::Settle>,
) -> ApiResult<Json<ApprovalView>> {
    s.operator(&h)?;
    let approve = match r.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return Err(ApiError::bad(format!(
                "`decision`: `{}` is neither `approve` nor `deny`",
                other.chars().take(40).collect::<String>()
            )))
        }
    };
    let before = s.approval(&id).await?;
    let now = now_ms();
    // Only what the orchestrator signed when the Response asked is ever enacted, and only
    // before the expiry it signed.
    let g = s.open_approval(&before).map_err(|why| {
        ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("approval `{id}` is refused, it cannot be settled: {why}"),
        )
    })?;
    if approve && before.state == "awaiting" && g.expires_ms <= now {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "approval `{id}` is expired (it expired at {}): it can no longer be approved",
                rfc3339(g.expires_ms)
            ),
        ));
    }
    let settled = s
        .store
        .settle_approval(&id, if approve { "approved" } else { "denied" }, now)
        .await?;
    let a = s.approval(&id).await?;
    if !settled {
        let st = state(&before, now);
        let same = (approve && st == "approved") || (!approve && st == "denied");
        if !same {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!(
                    "approval `{id}` is {st}{}: it can no longer be {}",
                    if st == "expired" {
                        format!(" (it expired at {})", rfc3339(before.expires_ms))
                    } else {
                        String::new()
                    },
                    if approve { "approved" } else { "denied" }
                ),
            ));
        }
    }
    if approve {
        // Again when approved already: a decision lost between the two writes is kept now
        // (kept once by its id).
        s.enact(&a, &g).await?;
        if settled {
            if let Some(run) = &g.held.run {
                let inputs = run
                    .inputs
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect();
                let submit = proto::RunPushed {
                    name: run.workflow.clone(),
                    version: None,
                    site: g.site.clone(),
                    inputs,
                };
                let created =
                    super::registry::run_pushed(State(s.clone()), h.clone(), ApiJson(submit))
                        .await?;
                tracing::info!(
                    "approval {id}: workflow {} submitted to site {} as run {}",
                    run.workflow,
                    g.site,
                    created.0.run_id
                );
            }
        }
    }
    tracing::info!(
        "approval {id} ({}) {} by an operator",
        a.response,
        if approve { "approved" } else { "denied" }
    );
    view(&a, &Ok(g), now_ms())
        .map(Json)
        .ok_or_else(|| ApiError::bad("the approval cannot be shown"))
}

//! Scheduled assessments at the orchestrator (issue 17): the agent endpoint that keeps each
//! assessment once with its changed results, and the operator's `GET /v1/posture`. A child of
//! `server`.

use super::extract::ApiQuery as Query;
use super::{ApiError, ApiResult, Srv};
use crate::posture::{self, PostureView};
use crate::store::{AgentRow, AssessmentRow, HistoryRow};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use std::sync::Arc;
use vacsine_contract::schedule::{AssessmentAccepted, AssessmentUpload};

/// Longest trend window asked for.
const MAX_DAYS: i64 = 3660;
const DAY_MS: i64 = 86_400_000;

impl Srv {
    /// Keep an assessment from `agent`'s site once by its key (a retried upload is
    /// acknowledged and ignored), with its changes as history rows.
    pub(super) async fn assessment_upload(
        &self,
        agent: &AgentRow,
        r: &AssessmentUpload,
    ) -> ApiResult<AssessmentAccepted> {
        let prefix = format!("assess/{}/{}/", r.schedule, r.kind);
        if !r.key.starts_with(&prefix) || !matches!(r.kind.as_str(), "check" | "scap" | "scan") {
            return Err(ApiError::bad(format!(
                "assessment `{}` from site `{}`: the key must start with `{prefix}` and the kind be check, scap or scan",
                r.key, agent.site
            )));
        }
        let row = AssessmentRow {
            key: format!("{}/{}", agent.site, r.key),
            site: agent.site.clone(),
            schedule: r.schedule.clone(),
            kind: r.kind.clone(),
            at_ms: r.at_ms,
            total: r.total,
            passing: r.passing,
            failing: r.failing,
            error: r.error.clone(),
        };
        let changes: Vec<HistoryRow> = r
            .items
            .iter()
            .map(|i| HistoryRow {
                site: agent.site.clone(),
                schedule: r.schedule.clone(),
                kind: r.kind.clone(),
                node: i.node.clone(),
                item: i.item.clone(),
                since_ms: r.at_ms,
                outcome: i.outcome.clone(),
                evidence: i.evidence.clone(),
                title: i.title.clone(),
                refs: serde_json::to_string(&i.references).unwrap_or_else(|_| "{}".into()),
            })
            .collect();
        let created = self.store.put_assessment(&row, &changes).await?;
        if created {
            tracing::info!(
                "assessment {} of site {}: {} result(s), {} changed",
                r.key,
                agent.site,
                r.total,
                changes.len()
            );
        }
        Ok(AssessmentAccepted {
            created,
            changed: if created { changes.len() } else { 0 },
        })
    }

    /// The posture of `q`, computed from the store.
    pub(super) async fn posture(&self, q: &PostureQuery) -> ApiResult<PostureView> {
        // An empty parameter (`?site=&bucket=`, as a form sends it) is one not given.
        let given = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
        let q = &PostureQuery {
            site: given(&q.site),
            framework: given(&q.framework),
            window: given(&q.window),
            bucket: given(&q.bucket),
        };
        let window = match q.window.as_deref() {
            None => 30 * DAY_MS,
            Some(w) => posture::parse_span(w)
                .filter(|ms| (1_000..=MAX_DAYS * DAY_MS).contains(ms))
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "window={w}: give a duration from 1s to {MAX_DAYS}d (`10m`, `24h`, `30d`)"
                    ))
                })?,
        };
        let bucket_ms = match q.bucket.as_deref() {
            None => (window / 30).max(1_000),
            Some(b) => posture::parse_span(b)
                .filter(|ms| *ms >= 1_000)
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "bucket={b}: give a duration of at least a second (`1m`, `1h`, `1d`)"
                    ))
                })?,
        };
        if window / bucket_ms > 10_000 {
            return Err(ApiError::bad(format!(
                "window={} with bucket={}: more than 10000 points; give a larger bucket",
                q.window.as_deref().unwrap_or("30d"),
                q.bucket.as_deref().unwrap_or("-")
            )));
        }
        let now = crate::now_ms();
        let since = now - window;
        let site = q.site.as_deref();
        let history = self.store.history(site).await?;
        let assessments = self.store.assessments(site, since).await?;
        Ok(posture::compute(
            &posture::Query {
                framework: q.framework.clone(),
                since_ms: since,
                bucket_ms,
                now_ms: now,
            },
            &history,
            &assessments,
        ))
    }

    /// Posture gauges, at scrape time (one read of the history; the trend is not needed).
    pub(super) async fn refresh_posture_metrics(&self) {
        let now = crate::now_ms();
        let r = async {
            let history = self.store.history(None).await?;
            let last = self.store.assessments(None, now - DAY_MS).await?;
            Ok::<_, crate::store::StoreError>(posture::compute(
                &posture::Query {
                    framework: None,
                    since_ms: now,
                    bucket_ms: DAY_MS,
                    now_ms: now,
                },
                &history,
                &last,
            ))
        }
        .await;
        match r {
            Ok(v) => self.metrics.set_posture(&v),
            Err(e) => tracing::warn!("metrics: posture: {e}"),
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PostureQuery {
    site: Option<String>,
    framework: Option<String>,
    window: Option<String>,
    bucket: Option<String>,
}

#[utoipa::path(get, path = "/v1/posture", tag = "operator", security(("operator" = [])),
    description = "The posture from the scheduled assessments (`kind: Schedule`): per site, requirements and rules passing and failing now (failing ones with their evidence), framework controls rolled up from the policies' `references`, open ports from scans, and the trend over the window (per site: the last assessments of each bucket; per framework: controls passing and failing at each bucket's end).",
    params(("site" = Option<String>, Query, description = "only this site"),
        ("framework" = Option<String>, Query, description = "only requirements referencing a framework whose name starts with this (`anssi` matches `anssi-bp28`)"),
        ("window" = Option<String>, Query, description = "the trend's window, back from now (`10m`, `24h`, `30d`; default 30d, at most 3660d)"),
        ("bucket" = Option<String>, Query, description = "the trend's step (`1m`, `1h`, `1d`; default a thirtieth of the window, at least 1s, at most 10000 steps)")),
    responses((status = 200, body = PostureView),
        (status = 400, body = vacsine_contract::proto::ErrorBody, description = "a `window` or `bucket` that is not a duration in range")))]
pub(super) async fn get_posture(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    Query(q): Query<PostureQuery>,
) -> ApiResult<Json<PostureView>> {
    s.operator(&h)?;
    Ok(Json(s.posture(&q).await?))
}

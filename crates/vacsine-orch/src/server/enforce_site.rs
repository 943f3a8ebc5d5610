//! The orchestrator's side of job 1 at a site: the report an agent sends with the end of an
//! enforce run is kept with the run, and operators fetch it.

use super::extract::ApiPath as UrlPath;
use super::{run_view, ApiError, ApiResult, Srv};
use crate::now_ms;
use crate::store::AgentRow;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use std::sync::Arc;
use vacsine_contract::proto;

impl Srv {
    /// Keep the report a finishing agent sent, before its run ends (an operator who sees the
    /// run ended finds its report). Nothing to do for runs without one.
    pub(super) async fn keep_report(
        &self,
        agent: &AgentRow,
        r: &proto::FinishRequest,
    ) -> ApiResult<()> {
        let Some(report) = &r.report else {
            return Ok(());
        };
        // Kept as sent, typed by its kind (`{"enforce": …}` or `{"step": …}`): each reader
        // takes the kind it expects.
        let text = serde_json::to_string(report).map_err(|e| ApiError::bad(e.to_string()))?;
        // False when the agent no longer holds the run: its end is refused just after.
        let _kept = self
            .store
            .set_report(&r.run_id, &agent.id, &text, now_ms())
            .await?;
        Ok(())
    }
}

/// The report of an enforce run (`vacsine enforce --site`), once its agent sent it.
#[utoipa::path(get, path = "/v1/runs/{id}/report", tag = "operator", security(("operator" = [])),
    description = "The report of an enforce run (`vacsine enforce --site`), as its agent sent it with the run's end: the verdict, each requirement's outcomes before, in the sandbox and after, the plan, the step records and the phase durations.",
    params(("id" = String, Path, description = "run id")),
    responses((status = 200, body = proto::RunReportView),
        (status = 404, body = proto::ErrorBody, description = "no such run, or a run without a report (not an enforce run, or not ended yet)")))]
pub(super) async fn run_report(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    UrlPath(id): UrlPath<String>,
) -> ApiResult<Json<proto::RunReportView>> {
    s.operator(&h)?;
    let run = s.store.run(&id).await?.ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no run `{id}`"))
    })?;
    let Some(text) = s.store.report(&id).await? else {
        let why = if run.workflow.starts_with("enforce/") {
            format!(
                "run `{id}` is {} and has no report yet (its agent sends it with the run's end)",
                run.status
            )
        } else {
            format!("run `{id}` runs workflow `{}`: only enforce runs have a report (`vacsine logs {id}` shows its records)", run.workflow)
        };
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", why));
    };
    let report = match serde_json::from_str::<proto::RunReport>(&text) {
        Ok(proto::RunReport::Enforce(r)) => r,
        Ok(other) => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "run `{id}` is a {} job: only enforce runs have a report (`vacsine logs {id}` shows its records)",
                    other.kind()
                ),
            ))
        }
        // Kept by an orchestrator of protocol 2 or earlier: the report itself.
        Err(_) => serde_json::from_str(&text).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("the report kept for run `{id}` is not an enforce report: {e}"),
            )
        })?,
    };
    Ok(Json(proto::RunReportView {
        run: run_view(run),
        report,
    }))
}

//! The orchestrator's side of signed work (see [`vacsine_contract::bundle`]): a run's job is signed
//! with the bundle key when the run is submitted, kept beside it in the store, and handed
//! out as signed; a job altered in the store afterwards no longer verifies at the agent.

use super::{ApiError, ApiResult, Srv};
use crate::store::{RunRow, SignedRow};
use axum::http::StatusCode;
use vacsine_contract::proto::{Job, SignedJob};

impl Srv {
    /// Sign run `run`'s job and queue the run with its signed job.
    pub(super) async fn sign_and_create_run(&self, run: &RunRow, job: &Job) -> ApiResult<()> {
        let (run_id, site) = (run.id.as_str(), run.site.as_str());
        let now = crate::now_ms();
        let s = vacsine_contract::bundle::sign_job(&self.bundle, run_id, site, job, now).map_err(
            |e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("signing run {run_id}: {e}"),
                )
            },
        )?;
        let row = SignedRow {
            payload: s.payload,
            signature: s.signature,
            key_id: s.key_id,
        };
        self.store.create_signed_run(run, &row, now).await?;
        Ok(())
    }

    /// Run `run_id`'s job as it was signed, if it was.
    pub(super) async fn signed_for(&self, run_id: &str) -> ApiResult<Option<SignedJob>> {
        let s = self.store.signed_job(run_id).await?;
        if s.is_none() {
            tracing::warn!(
                "run {run_id} has no signed job (queued before jobs were signed, or removed from the store): its agent will refuse it"
            );
        }
        Ok(s.map(|r| SignedJob {
            payload: r.payload,
            signature: r.signature,
            key_id: r.key_id,
        }))
    }
}

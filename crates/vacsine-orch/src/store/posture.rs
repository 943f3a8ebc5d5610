//! Assessment history (issue 17): each assessment a site made, once by its key, with its
//! counts; and its results as *changes*: a row per (site, schedule, kind, node, item) each
//! time its outcome changed (the agent uploads only what changed since its previous
//! assessment; its first one in full). A requirement checked every 15 minutes for a year and
//! never changing is one row; the assessments themselves are one small row each.

use super::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One assessment made at a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssessmentRow {
    pub key: String,
    pub site: String,
    pub schedule: String,
    /// `check`, `scap` or `scan`.
    pub kind: String,
    pub at_ms: i64,
    /// Results in the whole assessment (not only the changes), passing and failing ones
    /// (`fail` or `error`; for a scan: open ports in `failing`).
    pub total: i64,
    pub passing: i64,
    pub failing: i64,
    pub error: Option<String>,
}

/// A result that changed: from `since_ms` on, `item` on `node` had `outcome` (until the next
/// row of the same key). `gone`: no longer assessed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRow {
    pub site: String,
    pub schedule: String,
    pub kind: String,
    pub node: String,
    pub item: String,
    pub since_ms: i64,
    pub outcome: String,
    pub evidence: String,
    pub title: Option<String>,
    /// Framework controls, JSON object of arrays (`{}` when none).
    pub refs: String,
}

#[async_trait]
pub trait PostureStore: Send + Sync {
    /// Keep assessment `a` once by its key, with its changed results; false (nothing kept)
    /// when the key was kept before.
    async fn put_assessment(&self, a: &AssessmentRow, changes: &[HistoryRow]) -> Result<bool>;
    /// Assessments of `site` (every site) made at or after `since_ms`, oldest first.
    async fn assessments(&self, site: Option<&str>, since_ms: i64) -> Result<Vec<AssessmentRow>>;
    /// Every history row of `site` (every site), by key then time.
    async fn history(&self, site: Option<&str>) -> Result<Vec<HistoryRow>>;
}

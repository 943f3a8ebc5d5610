//! Sites' labels (issue 16): set at `vacsine site create NAME --label k=v` or changed with
//! `vacsine site label NAME k=v k2-`, kept in the store, shown in the status, and carried to
//! the site's agents inside the signed decision set (so an autonomous Response scoped by
//! `labels` matches at the site, also while it is cut off, with labels the orchestrator
//! signed). A decision made under a label-scoped Response applies at the sites carrying the
//! labels when it is made. A child of `server`.

use super::extract::{ApiJson, ApiPath};
use super::{ApiError, ApiResult, Srv};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use vacsine_contract::proto;

/// Labels per site.
pub const MAX_LABELS: usize = 64;

pub(super) fn check_labels(labels: &BTreeMap<String, String>) -> ApiResult<()> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad(format!(
            "`labels`: {} labels, more than the {MAX_LABELS} a site may carry",
            labels.len()
        )));
    }
    for (k, v) in labels {
        vacsine_contract::decisions::check_label(k, v)
            .map_err(|e| ApiError::bad(format!("`labels`: {e}")))?;
    }
    Ok(())
}

impl Srv {
    /// Site `site`'s labels signed now (`vacsine_contract::decisions::seal_labels`), as the store keeps
    /// them: only what an operator set is signed, and only what is signed counts.
    pub(super) fn seal_labels(
        &self,
        site: &str,
        labels: &BTreeMap<String, String>,
    ) -> ApiResult<String> {
        vacsine_contract::decisions::seal_labels(&self.bundle, site, labels, crate::now_ms())
            .and_then(|s| Ok(serde_json::to_string(&s)?))
            .map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("signing the labels of site {site}: {e:#}"),
                )
            })
    }

    /// Every site's labels as signed when set, by site. Labels the store holds unsigned or
    /// altered (written by hand) are refused, said once, and count as none.
    async fn signed_labels(
        &self,
    ) -> ApiResult<HashMap<String, (proto::SignedJob, BTreeMap<String, String>)>> {
        let key = self.bundle.public_b64();
        let mut out = HashMap::new();
        for (site, text) in self.store.site_labels().await? {
            let opened = serde_json::from_str::<proto::SignedJob>(&text)
                .map_err(|_| anyhow::anyhow!("not signed by the orchestrator when they were set"))
                .and_then(|sj| {
                    let l: vacsine_contract::decisions::SiteLabels = self.verifier.open(
                        &key,
                        &sj,
                        vacsine_contract::decisions::LABELS_FORMAT,
                    )?;
                    if l.site != site {
                        anyhow::bail!("signed for site `{}`", l.site);
                    }
                    Ok((sj, l.labels))
                });
            match opened {
                Ok(v) => {
                    out.insert(site, v);
                }
                Err(e) => {
                    if self.verifier.first_refusal(&format!("labels:{site}")) {
                        tracing::warn!(
                            "the labels of site {site} in the store are refused and count as none (set them again with `vacsine site label`): {e:#}"
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every site's labels (as signed when set).
    pub(super) async fn all_labels(&self) -> ApiResult<HashMap<String, BTreeMap<String, String>>> {
        Ok(self
            .signed_labels()
            .await?
            .into_iter()
            .map(|(s, (_, l))| (s, l))
            .collect())
    }

    /// Site `site`'s labels as signed when set, for its decision set.
    pub(super) async fn signed_labels_of(&self, site: &str) -> ApiResult<Option<proto::SignedJob>> {
        Ok(self.signed_labels().await?.remove(site).map(|(sj, _)| sj))
    }

    /// Site `site`'s labels (none when it has none).
    pub(super) async fn labels_of(&self, site: &str) -> ApiResult<BTreeMap<String, String>> {
        Ok(self.all_labels().await?.remove(site).unwrap_or_default())
    }

    /// The sites a decision of `rule` applies at: its `scope.sites` (empty: every site) and,
    /// when it names labels, only the sites carrying them now (the deciding site always
    /// carries them: `decide` checked it).
    pub(super) async fn rule_scope(
        &self,
        rule: &vacsine_response::Rule,
        deciding: Option<&str>,
    ) -> ApiResult<Vec<String>> {
        if rule.labels.is_empty() {
            return Ok(rule.sites.clone());
        }
        let labels = self.all_labels().await?;
        let mut out: Vec<String> = self
            .store
            .sites()
            .await?
            .into_iter()
            .filter(|s| s.revoked_ms.is_none())
            .map(|s| s.name)
            .filter(|s| rule.sites.is_empty() || rule.sites.contains(s))
            .filter(|s| {
                let have = labels.get(s);
                rule.labels
                    .iter()
                    .all(|(k, v)| have.and_then(|h| h.get(k)) == Some(v))
            })
            .collect();
        if let Some(d) = deciding {
            if !out.iter().any(|s| s == d) {
                out.push(d.to_string());
            }
        }
        out.sort();
        Ok(out)
    }
}

#[utoipa::path(post, path = "/v1/sites/{name}/labels", tag = "operator", security(("operator" = [])),
    description = "Change a site's labels: `set` adds or replaces, `remove` takes keys away. The site's agents receive them, signed, with their next decision set.",
    params(("name" = String, Path, description = "the site")),
    request_body = proto::SiteLabels,
    responses((status = 200, body = proto::SiteLabels), (status = 400, body = proto::ErrorBody), (status = 401, body = proto::ErrorBody), (status = 404, body = proto::ErrorBody)))]
pub(super) async fn set_labels(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiPath(name): ApiPath<String>,
    ApiJson(r): ApiJson<proto::SiteLabels>,
) -> ApiResult<Json<proto::SiteLabels>> {
    s.operator(&h)?;
    if !s.store.sites().await?.iter().any(|x| x.name == name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no site `{name}` (`vacsine site list` shows them)"),
        ));
    }
    let mut labels = s.labels_of(&name).await?;
    for k in &r.remove {
        labels.remove(k);
    }
    labels.extend(r.set.clone());
    check_labels(&labels)?;
    s.store
        .set_site_labels(&name, &s.seal_labels(&name, &labels)?)
        .await?;
    tracing::info!("site {name}: labels now {labels:?}");
    // The site's long polls carry the new labels in its decision set.
    s.queue.send_modify(|n| *n += 1);
    Ok(Json(proto::SiteLabels {
        set: labels,
        remove: vec![],
    }))
}

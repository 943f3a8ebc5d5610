//! The registry (operator endpoints): policies, workflows and responses pushed by operators, versioned
//! (1, 2, … a new version only when the content changed), and runs of a pushed workflow at a
//! site whose job names the versions it carries (and is signed, as every job).

use super::extract::{ApiPath, ApiQuery};
use super::{valid_name, ApiError, ApiJson, ApiResult, Srv};
use crate::rfc3339;
use crate::store::RegistryRow;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use std::collections::BTreeMap;
use std::sync::Arc;
use vacsine_contract::proto::{self, RegistryEntry, VersionRef};

fn entry(r: &RegistryRow, created: bool) -> RegistryEntry {
    RegistryEntry {
        kind: r.kind.clone(),
        name: r.name.clone(),
        version: r.version,
        sha256: r.sha256.clone(),
        pushed: rfc3339(r.pushed_ms),
        created,
    }
}

/// A pushed document is what agents will read: it must parse as its kind, strictly, and be
/// named as it says.
fn check_document(d: &proto::PushDocument) -> ApiResult<()> {
    valid_name(&d.name)?;
    let (parsed, name) = match d.kind.as_str() {
        "Workflow" => {
            let w = serde_json::from_value::<vacsine_core::workflow::Workflow>(d.document.clone());
            (
                w.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                vacsine_contract::bundle::document_name(&d.document),
            )
        }
        "Policy" => {
            let p = serde_json::from_value::<vacsine_core::policy::Policy>(d.document.clone());
            (
                p.as_ref().map(|_| ()).map_err(|e| e.to_string()),
                p.map(|p| p.metadata.name.to_string()).unwrap_or_default(),
            )
        }
        "Response" => {
            // Validated as agents will read it (the text of its JSON, strictly).
            let r = vacsine_contract::decisions::response_rule(&d.name, 0, &d.document);
            let name = d
                .document
                .pointer("/metadata/name")
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_string();
            (r.map(|_| ()), name)
        }
        "Schedule" => {
            // Issue 17: read as agents will read it (strictly, with its target and interval).
            let s = vacsine_contract::schedule::Schedule::from_value(&d.document);
            let name = s
                .as_ref()
                .map(|s| s.metadata.name.clone())
                .unwrap_or_default();
            (s.map(|_| ()), name)
        }
        k => {
            return Err(ApiError::bad(format!(
            "document `{}` is of kind `{k}`: the registry keeps `Policy`, `Workflow`, `Response` and `Schedule` documents",
            d.name
        )))
        }
    };
    parsed.map_err(|e| ApiError::bad(format!("{} `{}` is not valid: {e}", d.kind, d.name)))?;
    if name != d.name {
        return Err(ApiError::bad(format!(
            "{} pushed as `{}` is named `{name}` in its metadata",
            d.kind, d.name
        )));
    }
    Ok(())
}

#[utoipa::path(post, path = "/v1/registry", tag = "operator", security(("operator" = [])),
    description = "Push policies and workflows into the registry: each gets a new version (1, 2, …) when its content (SHA-256 of its canonical JSON) differs from its latest version. Every document is checked before any is kept.",
    request_body = proto::PushRequest,
    responses((status = 200, body = proto::RegistryList),
        (status = 400, body = proto::ErrorBody, description = "not a `PushRequest`, nothing to push, or a document that is not a valid `Policy` or `Workflow` named as pushed")))]
pub(super) async fn push_documents(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiJson(r): ApiJson<proto::PushRequest>,
) -> ApiResult<Json<proto::RegistryList>> {
    s.operator(&h)?;
    if r.documents.is_empty() {
        return Err(ApiError::bad("nothing to push: give policies or workflows"));
    }
    for d in &r.documents {
        check_document(d)?;
    }
    let mut entries = Vec::new();
    for d in &r.documents {
        let text = vacsine_contract::bundle::canonical_json(&d.document);
        let sha = vacsine_wire::sha256_pin(text.as_bytes());
        // Signed now, as pushed: agents and the orchestrator itself refuse a document whose
        // content in the store is not what this signature names.
        let signature = vacsine_contract::bundle::sign_document(&s.bundle, &d.kind, &d.name, &sha);
        let (row, created) = s
            .store
            .push_document(&d.kind, &d.name, &sha, &text, &signature, crate::now_ms())
            .await?;
        if created {
            tracing::info!(
                "registry: {} {} version {} pushed",
                row.kind,
                row.name,
                row.version
            );
        }
        entries.push(entry(&row, created));
    }
    Ok(Json(proto::RegistryList { entries }))
}

#[utoipa::path(get, path = "/v1/registry", tag = "operator", security(("operator" = [])),
    description = "Every version of every pushed policy and workflow, by kind, name and version.",
    responses((status = 200, body = proto::RegistryList)))]
pub(super) async fn list_registry(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
) -> ApiResult<Json<proto::RegistryList>> {
    s.operator(&h)?;
    let entries = s
        .store
        .registry()
        .await?
        .iter()
        .map(|r| entry(r, false))
        .collect();
    Ok(Json(proto::RegistryList { entries }))
}

/// A version of a document (the latest without `version`), or 404 naming what there is.
async fn stored(s: &Srv, kind: &str, name: &str, version: Option<i64>) -> ApiResult<RegistryRow> {
    s.store
        .registry_document(kind, name, version)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                match version {
                    Some(v) => format!(
                        "no version {v} of {kind} `{name}` in the registry (`vacsine registry list` shows the versions there are)"
                    ),
                    None => format!(
                        "no {kind} `{name}` in the registry (`vacsine registry list` shows what there is; `vacsine push FILE` adds it)"
                    ),
                },
            )
        })
}

/// A document's text as shown and compared: its JSON, pretty-printed.
fn pretty(r: &RegistryRow) -> ApiResult<String> {
    serde_json::to_string_pretty(&document(r)?).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("registry {} {} version {}: {e}", r.kind, r.name, r.version),
        )
    })
}

#[utoipa::path(get, path = "/v1/registry/{kind}/{name}", tag = "operator", security(("operator" = [])),
    description = "One version of a pushed document (the latest without `version`), as pushed: its content, SHA-256, time of push, and whether its signature made at push still verifies.",
    params(("kind" = String, Path, description = "`Policy`, `Workflow`, `Response` or `Schedule`"),
        ("name" = String, Path, description = "the document's name"),
        ("version" = Option<i64>, Query, description = "the version (the latest when absent)", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses((status = 200, body = proto::RegistryDocument),
        (status = 400, body = proto::ErrorBody, description = "a `version` that is not a whole number"),
        (status = 404, body = proto::ErrorBody, description = "no such document, or no such version of it")))]
pub(super) async fn show_document(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiPath((kind, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<proto::VersionQuery>,
) -> ApiResult<Json<proto::RegistryDocument>> {
    s.operator(&h)?;
    let latest = stored(&s, &kind, &name, None).await?;
    let r = match q.version {
        Some(v) if v != latest.version => stored(&s, &kind, &name, Some(v)).await?,
        _ => latest.clone(),
    };
    let verified = vacsine_contract::bundle::verify_document(
        &s.bundle.public_b64(),
        &r.kind,
        &r.name,
        r.version,
        &r.sha256,
        &r.document,
        r.signature.as_deref(),
    )
    .is_ok();
    Ok(Json(proto::RegistryDocument {
        document: document(&r)?,
        kind: r.kind,
        name: r.name,
        version: r.version,
        latest: latest.version,
        sha256: r.sha256,
        pushed: rfc3339(r.pushed_ms),
        verified,
    }))
}

#[utoipa::path(get, path = "/v1/registry/{kind}/{name}/diff", tag = "operator", security(("operator" = [])),
    description = "The difference between two versions of a pushed document, line by line, of their pretty-printed JSON: as a unified diff and as every line with its change.",
    params(("kind" = String, Path, description = "`Policy`, `Workflow`, `Response` or `Schedule`"),
        ("name" = String, Path, description = "the document's name"),
        ("from" = i64, Query, description = "the older version", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64),
        ("to" = i64, Query, description = "the newer version", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64)),
    responses((status = 200, body = proto::RegistryDiff),
        (status = 400, body = proto::ErrorBody, description = "`from` or `to` missing, or not a whole number"),
        (status = 404, body = proto::ErrorBody, description = "no such document, or no such version of it")))]
pub(super) async fn diff_documents(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiPath((kind, name)): ApiPath<(String, String)>,
    ApiQuery(q): ApiQuery<proto::DiffQuery>,
) -> ApiResult<Json<proto::RegistryDiff>> {
    s.operator(&h)?;
    let (old, new) = (
        stored(&s, &kind, &name, Some(q.from)).await?,
        stored(&s, &kind, &name, Some(q.to)).await?,
    );
    let (old_text, new_text) = (pretty(&old)?, pretty(&new)?);
    let diff = similar::TextDiff::from_lines(&old_text, &new_text);
    let unified = diff
        .unified_diff()
        .context_radius(3)
        .header(
            &format!("{kind} {name} v{}", q.from),
            &format!("{kind} {name} v{}", q.to),
        )
        .to_string();
    let lines = diff
        .iter_all_changes()
        .map(|c| proto::DiffLine {
            op: match c.tag() {
                similar::ChangeTag::Delete => "-",
                similar::ChangeTag::Insert => "+",
                similar::ChangeTag::Equal => " ",
            }
            .into(),
            text: c.value().trim_end_matches('\n').to_string(),
        })
        .collect();
    Ok(Json(proto::RegistryDiff {
        kind,
        name,
        from: q.from,
        to: q.to,
        unified,
        lines,
    }))
}

fn document(r: &RegistryRow) -> ApiResult<serde_json::Value> {
    serde_json::from_str(&r.document).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("registry {} {} version {}: {e}", r.kind, r.name, r.version),
        )
    })
}

/// A pushed Workflow as its type (it parsed when it was pushed, and its signature was just
/// checked: an error here is the orchestrator's own).
fn workflow_document(r: &RegistryRow) -> ApiResult<vacsine_core::workflow::Workflow> {
    serde_json::from_str(&r.document).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!(
                "registry {} {} version {}: not a Workflow: {e}",
                r.kind, r.name, r.version
            ),
        )
    })
}

fn vref(r: &RegistryRow) -> VersionRef {
    VersionRef {
        kind: r.kind.clone(),
        name: r.name.clone(),
        version: r.version,
        sha256: r.sha256.clone(),
    }
}

#[utoipa::path(post, path = "/v1/registry/runs", tag = "operator", security(("operator" = [])),
    description = "Queue a run of a pushed workflow (its latest version, or `version`) at a site. The job carries the latest version of every other pushed workflow as its catalog, names every version it carries, and is signed like every job.",
    request_body = proto::RunPushed,
    responses((status = 200, body = proto::RunCreated),
        (status = 400, body = proto::ErrorBody, description = "not a `RunPushed`, or inputs the workflow does not take"),
        (status = 403, body = proto::ErrorBody, description = "the site is revoked"),
        (status = 404, body = proto::ErrorBody, description = "no such workflow or version in the registry, or no such site"),
        (status = 409, description = "a document the job would carry is not what was pushed (altered in the store, or pushed before documents were signed: push it again), or a pushed image's archive is missing", body = proto::ErrorBody)))]
pub(super) async fn run_pushed(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiJson(r): ApiJson<proto::RunPushed>,
) -> ApiResult<Json<proto::RunCreated>> {
    s.operator(&h)?;
    let main = s
        .store
        .registry_document("Workflow", &r.name, r.version)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                match r.version {
                    Some(v) => format!(
                        "no version {v} of workflow `{}` in the registry (`vacsine registry list` shows them)",
                        r.name
                    ),
                    None => format!(
                        "no workflow `{}` in the registry; `vacsine push FILE` adds it",
                        r.name
                    ),
                },
            )
        })?;
    // The latest version of every other workflow: the catalog.
    let mut latest: BTreeMap<String, RegistryRow> = BTreeMap::new();
    for row in s.store.registry().await? {
        if row.kind == "Workflow" && row.name != r.name {
            latest.insert(row.name.clone(), row);
        }
    }
    // Every document the job carries is checked against its signature made at push: a
    // document altered in the store is not signed into a job.
    s.verify_document(&main)?;
    let mut versions = vec![vref(&main)];
    let mut catalog = Vec::new();
    for row in latest.values() {
        s.verify_document(row)?;
        versions.push(vref(row));
        catalog.push(workflow_document(row)?);
    }
    let submit = proto::SubmitRun {
        site: r.site,
        job: proto::Job::Workflow(Box::new(proto::WorkflowJob {
            workflow: workflow_document(&main)?,
            catalog,
            inputs: r.inputs,
            versions,
            images: vec![],
        })),
    };
    super::submit_run(State(s), h, ApiJson(submit)).await
}

impl Srv {
    /// A registry document as the store holds it, checked against its signature made at
    /// push: 409 naming the document when it was altered since (or never signed).
    pub(super) fn verify_document(&self, r: &RegistryRow) -> ApiResult<()> {
        vacsine_contract::bundle::verify_document(
            &self.bundle.public_b64(),
            &r.kind,
            &r.name,
            r.version,
            &r.sha256,
            &r.document,
            r.signature.as_deref(),
        )
        .map_err(|e| {
            tracing::error!("{e:#}");
            ApiError::new(
                StatusCode::CONFLICT,
                "unverified_document",
                format!("{e:#}"),
            )
        })
    }

    /// The registry bundle for an agent of `site`: the latest version of every document,
    /// signed; only its version when the agent holds it already.
    pub(super) async fn registry_bundle(
        &self,
        site: &str,
        have: Option<&str>,
    ) -> ApiResult<proto::BundleResponse> {
        let mut latest: BTreeMap<(String, String), RegistryRow> = BTreeMap::new();
        for row in self.store.registry().await? {
            latest.insert((row.kind.clone(), row.name.clone()), row);
        }
        let mut documents = Vec::new();
        for row in latest.values() {
            documents.push(vacsine_contract::bundle::BundleDocument {
                kind: row.kind.clone(),
                name: row.name.clone(),
                version: row.version,
                sha256: row.sha256.clone(),
                document: document(row)?,
                // Agents verify it: the bundle's own signature, made now, covers whatever
                // the store holds.
                signature: row.signature.clone(),
            });
        }
        let version = vacsine_contract::bundle::registry_version(&documents);
        if have == Some(version.as_str()) {
            return Ok(proto::BundleResponse {
                bundle: None,
                version,
            });
        }
        let signed =
            vacsine_contract::bundle::sign_registry(&self.bundle, site, documents, crate::now_ms())
                .map_err(|e| {
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        format!("signing the registry bundle: {e}"),
                    )
                })?;
        Ok(proto::BundleResponse {
            bundle: Some(signed),
            version,
        })
    }
}

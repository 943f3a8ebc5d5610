//! The orchestrator's side of action images (see [`vacsine_contract::images`]): operators upload image
//! archives, kept content-addressed in `images/` of the data folder and recorded in the
//! registry (kind `Image`); submissions list the digests of the images their `container`
//! steps name (in the job that is signed); an agent fetches, in chunks over the sealed
//! channel, only archives listed in a run it holds.

use super::extract::{ApiPath as UrlPath, ApiQuery as Query};
use super::{ApiError, ApiResult, Srv};
use crate::store::{status, AgentRow};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use base64::Engine as _;
use futures_util::StreamExt;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use vacsine_contract::images::{archive_file, Hasher, ImageUse, CHUNK_BYTES, KIND};
use vacsine_contract::proto::{self, ImageRef};

/// The request body of an image upload: the archive's bytes.
/// (Documents the body; the handler streams it.)
pub(super) struct ImageArchive;

impl utoipa::PartialSchema for ImageArchive {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl utoipa::ToSchema for ImageArchive {}

#[derive(Deserialize)]
pub(super) struct PutQuery {
    name: String,
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!(
            "the image archive is larger than this orchestrator accepts ({} MiB; start it with a larger --max-image-mb)",
            max >> 20
        ),
    )
}

fn internal(m: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
}

#[utoipa::path(put, path = "/v1/images/{digest}", tag = "operator", security(("operator" = [])),
    description = "Upload an action image archive (`docker save`): the body is the archive; the orchestrator checks its SHA-256 against `digest` while writing it, keeps it content-addressed in its data folder (a second upload of the same archive changes nothing) and records `name → digest` in the registry as a document of kind `Image` (versioned like policies and workflows).",
    params(("digest" = String, Path, description = "`sha256:` and the 64 lowercase hex digits of the archive's SHA-256", pattern = r"^sha256:[0-9a-f]{64}$"),
        ("name" = String, Query, description = "the image reference `container` steps name (e.g. `acme/block-ip:1`)")),
    request_body(content = inline(ImageArchive), content_type = "application/octet-stream", description = "the image archive (`docker save`), as bytes"),
    responses((status = 200, body = proto::ImagePushed),
        (status = 400, body = proto::ErrorBody, description = "a digest or name that is not valid, an empty archive, or an archive whose SHA-256 is not `digest` (cut or altered on the way): nothing kept"),
        (status = 413, body = proto::ErrorBody, description = "an archive larger than the orchestrator accepts (`--max-image-mb`)")))]
pub(super) async fn put_image(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    UrlPath(digest): UrlPath<String>,
    Query(q): Query<PutQuery>,
    body: Body,
) -> ApiResult<Json<proto::ImagePushed>> {
    s.operator(&h)?;
    let file = archive_file(&digest).map_err(ApiError::bad)?;
    vacsine_engine::executor::check_image(&q.name)
        .map_err(|e| ApiError::bad(format!("name: {e}")))?;
    let announced = h
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > s.max_image_bytes) {
        return Err(too_large(s.max_image_bytes));
    }
    vacsine_private::private_dir(&s.images)
        .map_err(|e| internal(format!("creating {}: {e}", s.images.display())))?;
    let tmp = vacsine_private::temp_in(&s.images, "upload")
        .map_err(|e| internal(format!("creating a file in {}: {e}", s.images.display())))?;
    let mut f = tmp
        .as_file()
        .try_clone()
        .map(tokio::fs::File::from_std)
        .map_err(|e| internal(format!("opening {}: {e}", tmp.path().display())))?;
    let mut hash = Hasher::default();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad(format!("the upload was cut: {e}")))?;
        hash.update(&chunk);
        if hash.len() > s.max_image_bytes {
            return Err(too_large(s.max_image_bytes));
        }
        f.write_all(&chunk)
            .await
            .map_err(|e| internal(format!("writing {}: {e}", tmp.path().display())))?;
    }
    f.sync_all()
        .await
        .map_err(|e| internal(format!("writing {}: {e}", tmp.path().display())))?;
    drop(f);
    let (got, size) = hash.finish();
    if size == 0 {
        return Err(ApiError::bad("the image archive is empty"));
    }
    if got != digest {
        return Err(ApiError::bad(format!(
            "the archive received has SHA-256 {got}, not {digest} as announced (cut or altered on the way): not kept; push it again"
        )));
    }
    let path = s.images.join(&file);
    // Same content, same name: replacing an existing copy is harmless (and repairs one
    // damaged on disk). A partial upload (an error above) is removed when `tmp` is dropped.
    vacsine_private::persist(tmp, &path)
        .map_err(|e| internal(format!("keeping {}: {e}", path.display())))?;
    let r = ImageRef {
        name: q.name.clone(),
        digest: digest.clone(),
        size,
    };
    let text =
        vacsine_contract::bundle::canonical_json(&serde_json::to_value(&r).map_err(internal_e)?);
    let sha = vacsine_wire::sha256_pin(text.as_bytes());
    // Signed as pushed, like every registry document (agents verify it in the bundle).
    let signature = vacsine_contract::bundle::sign_document(&s.bundle, KIND, &q.name, &sha);
    let (row, created) = s
        .store
        .push_document(KIND, &q.name, &sha, &text, &signature, crate::now_ms())
        .await?;
    if created {
        tracing::info!(
            "registry: image {} version {} pushed ({digest}, {size} bytes)",
            row.name,
            row.version
        );
    }
    Ok(Json(proto::ImagePushed {
        name: row.name,
        digest,
        size,
        version: row.version,
        created,
    }))
}

fn internal_e(e: impl std::fmt::Display) -> ApiError {
    internal(e.to_string())
}

fn unpushed(u: &ImageUse) -> ApiError {
    ApiError::bad(format!(
        "step `{}` of workflow `{}` runs image `{}`, which was never pushed to this orchestrator: sites have no registry to pull it from; `vacsine push image {}` (where the image is built), then submit again",
        u.step, u.workflow, u.image, u.image
    ))
}

impl Srv {
    /// List in `job` the latest pushed digest of every image its `container` steps name
    /// (what the operator sent there is replaced): signed with the job, it is the list of
    /// images the agent may run.
    pub(super) async fn resolve_images(&self, job: &mut proto::Job) -> ApiResult<()> {
        let job = match job {
            proto::Job::Workflow(w) => w,
            proto::Job::Step(s) => {
                s.images.clear();
                return Ok(());
            }
            proto::Job::Enforce(_) => return Ok(()),
        };
        job.images.clear();
        let uses = vacsine_contract::images::job_images(job).map_err(ApiError::bad)?;
        let mut found: BTreeMap<String, ImageRef> = BTreeMap::new();
        for u in &uses {
            if found.contains_key(&u.image) {
                continue;
            }
            let row = self
                .store
                .registry_document(KIND, &u.image, None)
                .await?
                .ok_or_else(|| unpushed(u))?;
            // The digest a job will list is the one that was pushed, not one written into
            // the store since.
            self.verify_document(&row)?;
            let r: ImageRef = serde_json::from_str(&row.document).map_err(|e| {
                internal(format!(
                    "registry image {} version {}: {e}",
                    row.name, row.version
                ))
            })?;
            let file = archive_file(&r.digest).map_err(internal)?;
            if !self.images.join(&file).exists() {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "the archive of image `{}` ({}) is missing from {}: `vacsine push image {}` again",
                        r.name,
                        r.digest,
                        self.images.display(),
                        r.name
                    ),
                ));
            }
            found.insert(u.image.clone(), r);
        }
        job.images = found.into_values().collect();
        Ok(())
    }

    /// A chunk of an archive listed in the job of `r.run_id`, which must be leased to
    /// `agent` now: an agent cannot fetch archives its work does not name.
    pub(super) async fn image_chunk(
        &self,
        agent: &AgentRow,
        r: &proto::ImageChunkRequest,
    ) -> ApiResult<proto::ImageChunk> {
        let file = archive_file(&r.digest).map_err(ApiError::bad)?;
        let forbidden = |why: String| ApiError::new(StatusCode::FORBIDDEN, "forbidden", why);
        let run = self
            .store
            .run(&r.run_id)
            .await?
            .filter(|x| x.agent_id.as_deref() == Some(agent.id.as_str()))
            .filter(|x| x.status == status::RUNNING)
            .ok_or_else(|| {
                forbidden(format!(
                    "run `{}` is not leased to this agent: no image archive is served for it",
                    r.run_id
                ))
            })?;
        let job: proto::Job = serde_json::from_str(&run.request)
            .map_err(|e| internal(format!("stored run {}: {e}", run.id)))?;
        if !job.images().iter().any(|i| i.digest == r.digest) {
            return Err(forbidden(format!(
                "run `{}` lists no image {}: not served",
                r.run_id, r.digest
            )));
        }
        let path = self.images.join(file);
        let offset = r.offset;
        let (data, total) = tokio::task::spawn_blocking(move || read_chunk(&path, offset))
            .await
            .map_err(internal_e)??;
        Ok(proto::ImageChunk {
            data: base64::engine::general_purpose::STANDARD.encode(data),
            total,
        })
    }
}

/// Up to [`CHUNK_BYTES`] of `path` from `offset`, and the file's size.
fn read_chunk(path: &Path, offset: u64) -> ApiResult<(Vec<u8>, u64)> {
    let mut f = std::fs::File::open(path).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "the image archive {} cannot be read ({e}): push the image again",
                path.display()
            ),
        )
    })?;
    let total = f.metadata().map_err(internal_e)?.len();
    if offset > total {
        return Err(ApiError::bad(format!(
            "offset {offset} is past the archive's end ({total} bytes)"
        )));
    }
    f.seek(SeekFrom::Start(offset)).map_err(internal_e)?;
    let mut data = Vec::with_capacity(CHUNK_BYTES.min((total - offset) as usize));
    f.take(CHUNK_BYTES as u64)
        .read_to_end(&mut data)
        .map_err(internal_e)?;
    Ok((data, total))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AgentRow, RunRow};

    async fn srv(dir: &Path) -> Arc<Srv> {
        let cfg = super::super::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            listen_plain: None,
            tls_files: None,
            data: dir.to_path_buf(),
            lease_ttl_ms: 60_000,
            database: None,
            max_image_bytes: 1 << 20,
            max_connections_per_client: None,
            retention: Default::default(),
            metrics_listen: None,
            loki: None,
            taxii: Vec::new(),
            bouncer_listen: None,
        };
        super::super::prepare(&cfg).await.unwrap().srv
    }

    fn agent(id: &str, site: &str) -> AgentRow {
        AgentRow {
            id: id.into(),
            site: site.into(),
            name: id.into(),
            public_key: String::new(),
            version: "t".into(),
            enrolled_ms: 0,
            last_seen_ms: 0,
            revoked_ms: None,
        }
    }

    fn job(images: Vec<ImageRef>) -> proto::Job {
        job_of(
            serde_json::json!({"apiVersion": "vacsine.io/v1", "kind": "Workflow",
                "metadata": {"name": "w"}, "spec": {"steps": []}}),
            images,
        )
    }

    fn job_of(workflow: serde_json::Value, images: Vec<ImageRef>) -> proto::Job {
        proto::Job::Workflow(Box::new(proto::WorkflowJob {
            workflow: serde_json::from_value(workflow).unwrap(),
            catalog: vec![],
            inputs: Default::default(),
            versions: vec![],
            images,
        }))
    }

    async fn queue(s: &Srv, site: &str, job: &proto::Job) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        let row = RunRow {
            id: id.clone(),
            site: site.into(),
            workflow: "w".into(),
            request: serde_json::to_string(job).unwrap(),
            status: status::QUEUED.into(),
            agent_id: None,
            lease_expires_ms: None,
            offers: 0,
            created_ms: crate::now_ms(),
            started_ms: None,
            finished_ms: None,
            message: None,
            records: 0,
            site_outcome: None,
        };
        s.sign_and_create_run(&row, job).await.unwrap();
        id
    }

    fn req(run: &str, digest: &str, offset: u64) -> proto::ImageChunkRequest {
        proto::ImageChunkRequest {
            run_id: run.into(),
            digest: digest.into(),
            offset,
        }
    }

    /// An archive of 5 MiB + 3 bytes kept as an upload would keep it.
    fn keep(s: &Srv, fill: u8) -> ImageRef {
        let bytes = vec![fill; CHUNK_BYTES + (1 << 20) + 3];
        let mut h = Hasher::default();
        h.update(&bytes);
        let (digest, size) = h.finish();
        vacsine_private::private_dir(&s.images).unwrap();
        std::fs::write(s.images.join(archive_file(&digest).unwrap()), &bytes).unwrap();
        ImageRef {
            name: format!("img:{fill}"),
            digest,
            size,
        }
    }

    #[tokio::test]
    async fn an_agent_fetches_only_archives_listed_in_a_run_it_holds() {
        let d = tempfile::tempdir().unwrap();
        let s = srv(d.path()).await;
        let now = crate::now_ms();
        s.store.create_site("a", "ha", now).await.unwrap();
        s.store.create_site("b", "hb", now).await.unwrap();
        let (a, a2, b) = (agent("ag-a", "a"), agent("ag-a2", "a"), agent("ag-b", "b"));
        for x in [&a, &a2, &b] {
            s.store.enroll_agent(x).await.unwrap();
        }
        let listed = keep(&s, 1);
        let other = keep(&s, 2);
        let run_a = queue(&s, "a", &job(vec![listed.clone()])).await;
        let run_b = queue(&s, "b", &job(vec![other.clone()])).await;
        let b64 = base64::engine::general_purpose::STANDARD;

        // Queued, not leased yet: nothing is served, even to an agent of its site.
        let e = s.image_chunk(&a, &req(&run_a, &listed.digest, 0)).await;
        assert_eq!(e.unwrap_err().status, StatusCode::FORBIDDEN);

        s.store.lease_next("a", &a.id, now, 60_000).await.unwrap();
        s.store.lease_next("b", &b.id, now, 60_000).await.unwrap();
        // The holder gets the archive, in chunks, byte for byte.
        let mut got = Vec::new();
        loop {
            let c = s
                .image_chunk(&a, &req(&run_a, &listed.digest, got.len() as u64))
                .await
                .unwrap();
            assert_eq!(c.total, listed.size);
            let bytes = b64.decode(c.data).unwrap();
            assert!(bytes.len() <= CHUNK_BYTES);
            if bytes.is_empty() {
                break;
            }
            got.extend(bytes);
        }
        let mut h = Hasher::default();
        h.update(&got);
        assert_eq!(h.finish(), (listed.digest.clone(), listed.size));

        // Another archive kept here, not listed in the run: refused.
        let e = s
            .image_chunk(&a, &req(&run_a, &other.digest, 0))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN, "{}", e.message);
        assert!(e.message.contains("lists no image"), "{}", e.message);
        // Another agent's run (same site, or another site's run listing it): refused.
        for (who, run, digest) in [
            (&a2, &run_a, &listed.digest),
            (&a, &run_b, &other.digest),
            (&b, &run_a, &listed.digest),
        ] {
            let e = s.image_chunk(who, &req(run, digest, 0)).await.unwrap_err();
            assert_eq!(e.status, StatusCode::FORBIDDEN, "{}", e.message);
            assert!(
                e.message.contains("not leased to this agent"),
                "{}",
                e.message
            );
        }
        // A path in place of a digest, an offset past the end.
        let e = s
            .image_chunk(&a, &req(&run_a, "sha256:../../keys.json", 0))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        let e = s
            .image_chunk(&a, &req(&run_a, &listed.digest, listed.size + 1))
            .await
            .unwrap_err();
        assert!(
            e.message.contains("past the archive's end"),
            "{}",
            e.message
        );
        // Once the run ended, its archives are no longer served.
        s.store
            .finish_run(&run_a, &a.id, status::SUCCEEDED, None, now)
            .await
            .unwrap();
        let e = s
            .image_chunk(&a, &req(&run_a, &listed.digest, 0))
            .await
            .unwrap_err();
        assert_eq!(e.status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn submission_lists_pushed_images_and_refuses_unknown_ones() {
        let d = tempfile::tempdir().unwrap();
        let s = srv(d.path()).await;
        let kept = keep(&s, 3);
        let text = vacsine_contract::bundle::canonical_json(&serde_json::to_value(&kept).unwrap());
        let sha = vacsine_wire::sha256_pin(text.as_bytes());
        let signature = vacsine_contract::bundle::sign_document(&s.bundle, KIND, &kept.name, &sha);
        s.store
            .push_document(KIND, &kept.name, &sha, &text, &signature, 1)
            .await
            .unwrap();
        let wf = |image: &str| {
            serde_json::json!({"apiVersion": "vacsine.io/v1", "kind": "Workflow",
                "metadata": {"name": "w"}, "spec": {"steps": [
                    {"id": "act", "uses": "container", "with": {"image": image}}]}})
        };
        let forged = ImageRef {
            name: kept.name.clone(),
            digest: format!("sha256:{}", "0".repeat(64)),
            size: 1,
        };
        let mut j = job_of(wf(&kept.name), vec![forged]);
        s.resolve_images(&mut j).await.unwrap();
        assert_eq!(
            j.images(),
            vec![kept.clone()],
            "the operator's list is replaced"
        );
        let mut j = job_of(wf("never/pushed:1"), vec![]);
        let e = s.resolve_images(&mut j).await.unwrap_err();
        assert!(
            e.message
                .contains("step `act` of workflow `w` runs image `never/pushed:1`")
                && e.message.contains("vacsine push image never/pushed:1"),
            "{}",
            e.message
        );
        // The archive gone from the data folder: refused at submission, not at the site.
        std::fs::remove_file(s.images.join(archive_file(&kept.digest).unwrap())).unwrap();
        let mut j = job_of(wf(&kept.name), vec![]);
        let e = s.resolve_images(&mut j).await.unwrap_err();
        assert!(e.message.contains("is missing from"), "{}", e.message);
    }
}

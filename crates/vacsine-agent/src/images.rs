//! The agent's side of action images (see [`vacsine_contract::images`]): before a job runs, every image
//! its signed job lists is made present on this machine's Docker: an image loaded before
//! (table `images` of `agent.db`: digest → loaded image ID) is used again while Docker still
//! has it; any other is fetched from the orchestrator in chunks over the sealed channel,
//! checked against the digest the signed job lists (a mismatch is refused, the file deleted,
//! and the run fails saying so), and loaded with `docker load`. The engine then runs only
//! these images, by the ID loaded.

use crate::Shared;
use anyhow::{anyhow, bail, Context};
use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use vacsine_contract::bundle::VerifiedWork;
use vacsine_contract::images::{digest_hex, Hasher};
use vacsine_contract::proto::{self, ImageRef};
use vacsine_core::node::NodeOps;
use vacsine_engine::{CancelToken, LocalNode};

/// How long `docker load` of one archive may take.
const LOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts per chunk while the orchestrator is unreachable.
const ATTEMPTS: u32 = 5;

/// Images loaded here, by archive digest (`agent.db`), and the folder archives are fetched
/// into (`images` of the data folder, emptied of each archive once loaded).
pub(super) struct ImageCache {
    conn: Mutex<Connection>,
    dir: PathBuf,
}

impl ImageCache {
    pub(super) fn open(db: &Path, dir: PathBuf) -> anyhow::Result<Self> {
        let conn = vacsine_private::sqlite::open(db)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS images (
               digest TEXT PRIMARY KEY,
               image_id TEXT NOT NULL,
               name TEXT NOT NULL,
               loaded_ms INTEGER NOT NULL
             );",
        )?;
        Ok(ImageCache {
            conn: Mutex::new(conn),
            dir,
        })
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| anyhow!("image table lock poisoned"))
    }

    pub(super) fn get(&self, digest: &str) -> anyhow::Result<Option<String>> {
        Ok(self
            .lock()?
            .query_row(
                "SELECT image_id FROM images WHERE digest = ?1",
                [digest],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn put(&self, digest: &str, id: &str, name: &str) -> anyhow::Result<()> {
        self.lock()?.execute(
            "INSERT OR REPLACE INTO images (digest, image_id, name, loaded_ms) VALUES (?1, ?2, ?3, ?4)",
            params![digest, id, name, vacsine_contract::now_ms()],
        )?;
        Ok(())
    }
}

/// Removes a partial archive unless disarmed.
struct Partial(Option<PathBuf>);

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

async fn docker(args: &[&str], timeout: Duration) -> anyhow::Result<String> {
    let mut a = vec!["docker"];
    a.extend_from_slice(args);
    let out = LocalNode::new("docker-host")
        .exec(&argv(&a), &[], None, timeout)
        .await
        .map_err(|e| anyhow!("docker {}: {e}", args.first().copied().unwrap_or("")))?;
    if out.timed_out {
        bail!("`docker {}` did not end within {timeout:?}", args.join(" "));
    }
    if out.exit_code != Some(0) {
        bail!(
            "`docker {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The ID of a local image, when Docker has it.
pub(super) async fn image_id(reference: &str) -> Option<String> {
    docker(
        &["image", "inspect", "--format", "{{.Id}}", "--", reference],
        Duration::from_secs(30),
    )
    .await
    .ok()
    .filter(|id| id.starts_with("sha256:"))
}

/// Every image the verified job lists, present on this machine: name → image ID to run.
/// A fetch stops between chunks when `cancel` is set (the lease was lost).
pub(super) async fn prepare(
    sh: &Shared,
    w: &VerifiedWork,
    cancel: &CancelToken,
) -> anyhow::Result<BTreeMap<String, String>> {
    let mut allow = BTreeMap::new();
    for img in w.job().images() {
        digest_hex(&img.digest).map_err(|e| anyhow!("the signed job's image list: {e}"))?;
        vacsine_engine::executor::check_image(&img.name)
            .map_err(|e| anyhow!("the signed job's image list: {e}"))?;
        if let Some(id) = sh.images.get(&img.digest)? {
            if image_id(&id).await.as_deref() == Some(id.as_str()) {
                eprintln!(
                    "run {}: image {} ({}) already loaded as {id}",
                    w.run_id(),
                    img.name,
                    img.digest
                );
                allow.insert(img.name.clone(), id);
                continue;
            }
        }
        let id = fetch_and_load(sh, w.run_id(), img, cancel)
            .await
            .with_context(|| format!("image `{}` ({})", img.name, img.digest))?;
        allow.insert(img.name.clone(), id);
    }
    Ok(allow)
}

async fn fetch_and_load(
    sh: &Shared,
    run_id: &str,
    img: &ImageRef,
    cancel: &CancelToken,
) -> anyhow::Result<String> {
    let hex = digest_hex(&img.digest).map_err(|e| anyhow!(e))?;
    vacsine_private::private_dir(&sh.images.dir)
        .with_context(|| format!("creating {}", sh.images.dir.display()))?;
    let path = sh.images.dir.join(format!("sha256-{hex}.tar.part"));
    let _partial = Partial(Some(path.clone()));
    let mut f =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let mut hash = Hasher::default();
    let b64 = base64::engine::general_purpose::STANDARD;
    let started = std::time::Instant::now();
    loop {
        if cancel.is_cancelled() {
            bail!("cancelled while fetching the archive (nothing loaded)");
        }
        let req = proto::ImageChunkRequest {
            run_id: run_id.to_string(),
            digest: img.digest.clone(),
            offset: hash.len(),
        };
        let mut attempt = 0;
        let chunk = loop {
            match sh.link.op(&sh.agent_id, &req).await {
                Ok(c) => break c,
                Err(vacsine_contract::client::CallError::Unreachable(m))
                    if attempt + 1 < ATTEMPTS =>
                {
                    attempt += 1;
                    eprintln!("run {run_id}: fetching image {}: {m}; retrying", img.name);
                    tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                }
                Err(e) => bail!("fetching the archive from the orchestrator: {e}"),
            }
        };
        if chunk.total != img.size {
            bail!(
                "the orchestrator's archive is {} bytes, the signed job lists {} bytes: refused, nothing loaded (push the image again)",
                chunk.total,
                img.size
            );
        }
        let data = b64
            .decode(chunk.data)
            .context("the orchestrator sent a chunk that is not base64")?;
        if data.is_empty() {
            break;
        }
        if hash.len() + data.len() as u64 > img.size {
            bail!(
                "the orchestrator sent more than the archive's {} bytes: refused",
                img.size
            );
        }
        hash.update(&data);
        f.write_all(&data)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    f.sync_all()?;
    drop(f);
    let (got, size) = hash.finish();
    if got != img.digest {
        bail!(
            "the archive received has SHA-256 {got}, not {} as the signed job lists: refused and deleted, nothing loaded (the orchestrator's copy is damaged or was altered: push the image again)",
            img.digest
        );
    }
    let fetched = started.elapsed();
    let p = path
        .to_str()
        .ok_or_else(|| anyhow!("{} is not UTF-8", path.display()))?;
    let out = docker(&["load", "--input", p], LOAD_TIMEOUT).await?;
    let id = loaded_id(&out, &img.name).await.ok_or_else(|| {
        anyhow!("`docker load` loaded the archive but named no image that Docker then has: {out}")
    })?;
    sh.images.put(&img.digest, &id, &img.name)?;
    eprintln!(
        "run {run_id}: image {} ({}) fetched ({size} bytes in {} ms), digest verified, loaded as {id}",
        img.name,
        img.digest,
        fetched.as_millis()
    );
    Ok(id)
}

/// The image ID `docker load` reports: `Loaded image ID: sha256:…`, or the ID of the image
/// it tagged (`Loaded image: NAME`), `name` first.
async fn loaded_id(out: &str, name: &str) -> Option<String> {
    let mut tags = Vec::new();
    for line in out.lines() {
        if let Some(id) = line.trim().strip_prefix("Loaded image ID: ") {
            return Some(id.trim().to_string());
        }
        if let Some(t) = line.trim().strip_prefix("Loaded image: ") {
            tags.push(t.trim().to_string());
        }
    }
    tags.sort_by_key(|t| t != name);
    for t in tags {
        if let Some(id) = image_id(&t).await {
            return Some(id);
        }
    }
    None
}

//! Action images without a registry: an operator pushes an image archive (`docker save`) to
//! the orchestrator, which keeps it content-addressed (`images/sha256-HEX.tar` in its data
//! folder) and records `name → digest` in its registry (kind `Image`). At submission the
//! orchestrator lists, in the job it signs, the digest of every image the job's `container`
//! steps name; the agent fetches each archive it does not hold yet over the sealed channel,
//! checks its SHA-256, loads it, and runs only those images (by the ID it loaded).
//!
//! This module holds what the three sides share: digests, archive hashing, and which images
//! a job names.

use crate::proto::WorkflowJob;
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::Path;

/// Largest archive the orchestrator accepts by default (`--max-image-mb`).
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 2 << 30;

/// Bytes of archive per sealed answer to an agent.
pub const CHUNK_BYTES: usize = 4 << 20;

/// The registry kind of image entries.
pub const KIND: &str = "Image";

/// The hex of a `sha256:<64 lowercase hex>` digest, or why it is not one.
pub fn digest_hex(digest: &str) -> Result<&str, String> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(hex)
    } else {
        Err(format!(
            "`{digest}` is not an image archive digest: expected sha256: and 64 lowercase hex digits"
        ))
    }
}

/// The file name of an archive in the orchestrator's `images` folder.
pub fn archive_file(digest: &str) -> Result<String, String> {
    Ok(format!("sha256-{}.tar", digest_hex(digest)?))
}

/// An incremental SHA-256 of an archive and its length.
#[derive(Default)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.len += bytes.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// `sha256:<hex>` and the length.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.sha.finalize())),
            self.len,
        )
    }
}

/// `sha256:<hex>` and size of a file, read in chunks.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Hasher::default();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h.finish());
        }
        h.update(&buf[..n]);
    }
}

/// An image a `container` step names literally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageUse {
    pub workflow: String,
    pub step: String,
    pub image: String,
}

/// Every `container` step's image in the job's workflow and catalog (steps and rollback
/// steps). A templated image cannot be resolved before the run: refused, naming the step.
pub fn job_images(job: &WorkflowJob) -> Result<Vec<ImageUse>, String> {
    let mut out = Vec::new();
    for w in std::iter::once(&job.workflow).chain(job.catalog.iter()) {
        let wname = w.metadata.name.value.clone();
        for s in w.spec.steps.iter().chain(w.spec.rollback.iter()) {
            if s.uses.value != "container" {
                continue;
            }
            let Some(serde_json::Value::String(image)) = s.with.get("image") else {
                continue;
            };
            if image.contains("{{") || image.contains("{%") {
                return Err(format!(
                    "step `{}` of workflow `{wname}`: its image `{image}` is templated; an agent runs only images resolved when the run is submitted: name the image literally (and `vacsine push image` it)",
                    s.id.value
                ));
            }
            out.push(ImageUse {
                workflow: wname.clone(),
                step: s.id.value.clone(),
                image: image.clone(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wf(name: &str, image: &str) -> serde_json::Value {
        json!({"apiVersion": "vacsine.io/v1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"steps": [
                {"id": "cmd", "uses": "command", "with": {"argv": ["true"]}},
                {"id": "act", "uses": "container", "with": {"image": image}}],
             "rollback": [{"id": "undo", "uses": "container", "with": {"image": "undo:1"}}]}})
    }

    fn job(workflow: serde_json::Value, catalog: Vec<serde_json::Value>) -> WorkflowJob {
        let typed = |v| serde_json::from_value(v).unwrap();
        WorkflowJob {
            workflow: typed(workflow),
            catalog: catalog.into_iter().map(typed).collect(),
            inputs: Default::default(),
            versions: vec![],
            images: vec![],
        }
    }

    #[test]
    fn the_images_of_a_job_are_those_of_its_workflow_and_catalog() {
        let j = job(wf("main", "act:1"), vec![wf("fix", "other/act:2")]);
        let names: Vec<String> = job_images(&j)
            .unwrap()
            .into_iter()
            .map(|u| format!("{}/{}={}", u.workflow, u.step, u.image))
            .collect();
        assert_eq!(
            names,
            [
                "main/act=act:1",
                "main/undo=undo:1",
                "fix/act=other/act:2",
                "fix/undo=undo:1"
            ]
        );
        let e = job_images(&job(wf("main", "act:{{ inputs.v }}"), vec![])).unwrap_err();
        assert!(
            e.contains("step `act` of workflow `main`") && e.contains("templated"),
            "{e}"
        );
    }

    #[test]
    fn digests_are_sha256_and_64_lowercase_hex() {
        let d = format!("sha256:{}", "0f".repeat(32));
        assert_eq!(
            archive_file(&d).unwrap(),
            format!("sha256-{}.tar", "0f".repeat(32))
        );
        for bad in [
            "sha256:".to_string(),
            "0f".repeat(32),
            format!("sha256:{}", "0F".repeat(32)),
            format!("sha256:{}/..", "0f".repeat(31)),
            format!("md5:{}", "0f".repeat(32)),
        ] {
            assert!(digest_hex(&bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            (
                "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                3
            )
        );
    }
}

//! The agent's verified bundles, kept in its local store (`agent.db`): each job bundle once
//! per content, and the registry bundle it holds; verified again whenever read back.

use anyhow::anyhow;
use anyhow::{bail, Context};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;
use vacsine_contract::bundle::{
    registry_version, verify_registry, versions_label, workflow_name, JobBundle, KeepBundle,
    RegistryBundle,
};
use vacsine_contract::proto::SignedJob;

/// The agent's verified bundles, in its local store (`agent.db`).
pub struct BundleStore {
    conn: Mutex<Connection>,
}

/// A verified bundle as kept.
#[derive(Debug, Clone)]
pub struct Kept {
    pub sha256: String,
    pub run_id: String,
    pub workflow: String,
    pub versions: String,
    pub signed: SignedJob,
}

impl BundleStore {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = vacsine_private::sqlite::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let _mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
        // A cache of what was verified (the orchestrator keeps the originals): no disk flush
        // per commit on the path to running a job; a crash may forget the last ones.
        conn.execute_batch(
            "PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS bundles (
               sha256 TEXT PRIMARY KEY,
               run_id TEXT NOT NULL,
               workflow TEXT NOT NULL,
               versions TEXT NOT NULL,
               payload TEXT NOT NULL,
               signature TEXT NOT NULL,
               key_id TEXT NOT NULL,
               verified_ms INTEGER NOT NULL
             );
             CREATE INDEX IF NOT EXISTS bundles_workflow ON bundles(workflow, verified_ms);
             CREATE TABLE IF NOT EXISTS registry_bundles (
               version TEXT PRIMARY KEY,
               payload TEXT NOT NULL,
               signature TEXT NOT NULL,
               key_id TEXT NOT NULL,
               verified_ms INTEGER NOT NULL
             );",
        )?;
        Ok(BundleStore {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> anyhow::Result<std::sync::MutexGuard<'_, Connection>> {
        self.conn
            .lock()
            .map_err(|_| anyhow!("bundle store lock poisoned"))
    }

    /// Keep a verified bundle (once per content); returns its SHA-256.
    pub fn keep(&self, s: &SignedJob, b: &JobBundle, now_ms: i64) -> anyhow::Result<String> {
        let sha = vacsine_wire::sha256_pin(s.payload.as_bytes());
        let versions = versions_label(&b.job);
        self.lock()?.execute(
            "INSERT OR IGNORE INTO bundles (sha256, run_id, workflow, versions, payload, signature, key_id, verified_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                sha,
                b.run_id,
                workflow_name(&b.job),
                versions,
                s.payload,
                s.signature,
                s.key_id,
                now_ms
            ],
        )?;
        Ok(sha)
    }

    /// The latest kept bundle of `workflow` (with `versions`, as [`versions_label`] writes
    /// them, when given), verified again with `pinned_key` before it is returned.
    pub fn latest(
        &self,
        pinned_key: &str,
        workflow: &str,
        versions: Option<&str>,
    ) -> anyhow::Result<Option<(Kept, JobBundle)>> {
        let row = self
            .lock()?
            .query_row(
                "SELECT sha256, run_id, workflow, versions, payload, signature, key_id FROM bundles
                 WHERE workflow = ?1 AND (?2 IS NULL OR versions = ?2)
                 ORDER BY verified_ms DESC, rowid DESC LIMIT 1",
                params![workflow, versions],
                |r| {
                    Ok(Kept {
                        sha256: r.get(0)?,
                        run_id: r.get(1)?,
                        workflow: r.get(2)?,
                        versions: r.get(3)?,
                        signed: SignedJob {
                            payload: r.get(4)?,
                            signature: r.get(5)?,
                            key_id: r.get(6)?,
                        },
                    })
                },
            )
            .optional()?;
        let Some(k) = row else { return Ok(None) };
        vacsine_wire::verify_bundle(pinned_key, k.signed.payload.as_bytes(), &k.signed.signature)
            .map_err(|_| {
                anyhow!(
                    "the bundle {} kept in the local store no longer verifies (altered on disk): not used",
                    k.sha256
                )
            })?;
        let b: JobBundle = serde_json::from_str(&k.signed.payload)?;
        Ok(Some((k, b)))
    }

    /// Keep a verified registry bundle in place of the one held.
    pub fn keep_registry(&self, version: &str, s: &SignedJob, now_ms: i64) -> anyhow::Result<()> {
        let mut c = self.lock()?;
        let tx = c.transaction()?;
        tx.execute("DELETE FROM registry_bundles", [])?;
        tx.execute(
            "INSERT INTO registry_bundles (version, payload, signature, key_id, verified_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![version, s.payload, s.signature, s.key_id, now_ms],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// The registry bundle held (the latest verified), verified again; `Err` when it no
    /// longer verifies (altered on disk).
    pub fn held_registry(
        &self,
        pinned_key: &str,
        site: &str,
    ) -> anyhow::Result<Option<(String, RegistryBundle)>> {
        let row = self
            .lock()?
            .query_row(
                "SELECT version, payload, signature, key_id FROM registry_bundles
                 ORDER BY verified_ms DESC, rowid DESC LIMIT 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        SignedJob {
                            payload: r.get(1)?,
                            signature: r.get(2)?,
                            key_id: r.get(3)?,
                        },
                    ))
                },
            )
            .optional()?;
        let Some((version, s)) = row else {
            return Ok(None);
        };
        let b = verify_registry(pinned_key, site, &s)
            .with_context(|| format!("the registry bundle {version} held in agent.db"))?;
        if registry_version(&b.documents) != version {
            bail!("the registry bundle {version} held in agent.db is not that version: not used");
        }
        Ok(Some((version, b)))
    }

    /// Forget the registry bundles held (one no longer verified).
    pub fn drop_registry(&self) -> anyhow::Result<()> {
        self.lock()?.execute("DELETE FROM registry_bundles", [])?;
        Ok(())
    }

    /// How many bundles are kept.
    pub fn count(&self) -> anyhow::Result<i64> {
        Ok(self
            .lock()?
            .query_row("SELECT COUNT(*) FROM bundles", [], |r| r.get(0))?)
    }
}

impl KeepBundle for BundleStore {
    fn keep(&self, s: &SignedJob, b: &JobBundle, now_ms: i64) -> anyhow::Result<String> {
        BundleStore::keep(self, s, b, now_ms)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests open the database behind the store to alter it
mod tests {
    use super::*;
    use serde_json::{json, Value};
    use vacsine_contract::bundle::*;
    use vacsine_contract::proto::Job;
    use vacsine_wire::BundleSigner;

    fn workflow() -> Value {
        json!({"apiVersion": "vacsine.io/v1", "kind": "Workflow",
            "metadata": {"name": "w"},
            "spec": {"steps": [{"id": "a", "uses": "command", "with": {"argv": ["echo", "safe"]}}]}})
    }

    fn job() -> Job {
        Job::workflow(
            serde_json::from_value(workflow()).unwrap(),
            vec![],
            serde_json::Map::new(),
        )
    }

    fn same(a: &Job, b: &Job) -> bool {
        serde_json::to_value(a).unwrap() == serde_json::to_value(b).unwrap()
    }

    #[test]
    fn a_registry_bundle_verifies_for_its_site_and_is_held_verified() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.db");
        let k = BundleSigner::generate();
        let sha = vacsine_wire::sha256_pin(canonical_json(&workflow()).as_bytes());
        let docs = vec![BundleDocument {
            kind: "Workflow".into(),
            name: "w".into(),
            version: 2,
            signature: Some(sign_document(&k, "Workflow", "w", &sha)),
            sha256: sha,
            document: workflow(),
        }];
        let v = registry_version(&docs);
        assert_eq!(v, registry_version(&docs.clone()), "stable");
        let s = sign_registry(&k, "edge", docs.clone(), 1).unwrap();
        let b = verify_registry(&k.public_b64(), "edge", &s).unwrap();
        assert_eq!((b.label().as_str(), b.documents), ("Workflow/w@2", docs));
        assert!(verify_registry(&k.public_b64(), "other", &s).is_err());
        let mut t = s.clone();
        t.payload = t.payload.replace("safe", "evil");
        assert!(verify_registry(&k.public_b64(), "edge", &t).is_err());
        let st = BundleStore::open(&p).unwrap();
        assert!(st.held_registry(&k.public_b64(), "edge").unwrap().is_none());
        st.keep_registry(&v, &s, 5).unwrap();
        let (hv, hb) = st.held_registry(&k.public_b64(), "edge").unwrap().unwrap();
        assert_eq!((hv, hb.label()), (v, "Workflow/w@2".to_string()));
        Connection::open(&p)
            .unwrap()
            .execute(
                "UPDATE registry_bundles SET payload = replace(payload, 'safe', 'evil')",
                [],
            )
            .unwrap();
        let e = st.held_registry(&k.public_b64(), "edge").unwrap_err();
        assert!(format!("{e:#}").contains("does not verify"), "{e:#}");
        st.drop_registry().unwrap();
        assert!(st.held_registry(&k.public_b64(), "edge").unwrap().is_none());
    }
    #[test]
    fn kept_bundles_are_found_by_workflow_and_verified_again() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("agent.db");
        let k = BundleSigner::generate();
        let st = BundleStore::open(&p).unwrap();
        let s = sign_job(&k, "run-1", "edge", &job(), 5).unwrap();
        let b = verify_job(&k.public_b64(), "run-1", "edge", &s).unwrap();
        let sha = st.keep(&s, &b, 10).unwrap();
        st.keep(&s, &b, 11).unwrap();
        assert_eq!(st.count().unwrap(), 1, "kept once per content");
        let (kept, back) = st.latest(&k.public_b64(), "w", None).unwrap().unwrap();
        assert_eq!(kept.sha256, sha);
        assert!(same(&back.job, &job()));
        assert!(st
            .latest(&k.public_b64(), "w", Some("x@1"))
            .unwrap()
            .is_none());
        assert!(st.latest(&k.public_b64(), "nope", None).unwrap().is_none());
        // Altered on disk: refused when read back.
        let c = Connection::open(&p).unwrap();
        c.execute(
            "UPDATE bundles SET payload = replace(payload, 'safe', 'evil')",
            [],
        )
        .unwrap();
        let e = st.latest(&k.public_b64(), "w", None).unwrap_err();
        assert!(e.to_string().contains("no longer verifies"), "{e}");
    }
}

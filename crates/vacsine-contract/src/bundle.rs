//! Signed work: every job the orchestrator hands an agent is signed with its bundle key
//! (ed25519, [`vacsine_wire::BundleSigner`]) when the run is submitted, and the agent verifies
//! it with the key it pinned at enrolment before it executes anything.
//!
//! What is signed is a [`JobBundle`] (format, run id, site, the job: workflow, catalog, inputs,
//! registry versions, and when it was signed), serialized as canonical JSON (object keys
//! sorted, no whitespace) and sent as that exact text: the agent checks the signature over
//! the bytes it received, then parses the job *from those bytes*, so what runs is what was
//! signed. [`crate::proto::Work`] carries only the signed job, and the only way to a job an
//! agent executes is [`verified_work`], whatever the job's kind.
//!
//! The agent keeps each verified bundle in its local store (`agent.db`, table `bundles`), so
//! a later run of the same version while cut off can use it; a bundle read back is verified
//! again (the local file could have been altered).

use crate::proto::{Job, SignedJob};
use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use vacsine_wire::BundleSigner;

/// The `format` of a signed job.
pub const JOB_FORMAT: &str = "vacsine.io/signed-job/v1";

/// What the orchestrator signs for one run. Decoding it decodes the job as one of its kinds
/// with its documents typed ([`Job`]): done by an agent only from bytes whose signature it
/// checked first ([`verify_job`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobBundle {
    pub format: String,
    pub run_id: String,
    pub site: String,
    pub job: Job,
    pub signed_ms: i64,
}

/// `value` as canonical JSON: object keys sorted (by their UTF-8 bytes), no whitespace.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            v => v.clone(),
        }
    }
    // Without serde_json's `preserve_order` a Map is a BTreeMap (sorted already); with it,
    // the insertion order above is the sorted order. Either way the text is canonical.
    sorted(value).to_string()
}

/// Short id of a bundle verifying key (base64): the first 16 hex digits of its SHA-256.
pub fn key_id(public_b64: &str) -> String {
    let pin = vacsine_wire::sha256_pin(public_b64.as_bytes());
    pin.trim_start_matches("sha256:")[..16].to_string()
}

/// An ed25519 verifying key as `hello` gives it: 32 bytes, base64.
pub fn check_key(public_b64: &str) -> anyhow::Result<()> {
    use base64::Engine;
    let n = base64::engine::general_purpose::STANDARD
        .decode(public_b64.trim())
        .map(|v| v.len())
        .unwrap_or(0);
    if n != 32 {
        bail!("the orchestrator's bundle key is not 32 bytes of base64: not pinned");
    }
    Ok(())
}

/// Sign `job` for run `run_id` at `site`.
pub fn sign_job(
    signer: &BundleSigner,
    run_id: &str,
    site: &str,
    job: &Job,
    now_ms: i64,
) -> anyhow::Result<SignedJob> {
    let b = JobBundle {
        format: JOB_FORMAT.into(),
        run_id: run_id.into(),
        site: site.into(),
        job: job.clone(),
        signed_ms: now_ms,
    };
    let payload = canonical_json(&serde_json::to_value(&b)?);
    Ok(SignedJob {
        signature: signer.sign(payload.as_bytes()),
        key_id: key_id(&signer.public_b64()),
        payload,
    })
}

/// Verify a signed job with the pinned key and check that it is for this run at this site.
/// The error says why it is refused.
pub fn verify_job(
    pinned_key: &str,
    run_id: &str,
    site: &str,
    s: &SignedJob,
) -> anyhow::Result<JobBundle> {
    vacsine_wire::verify_bundle(pinned_key, s.payload.as_bytes(), &s.signature).map_err(|_| {
        anyhow!(
            "the job's signature does not verify with the orchestrator bundle key pinned at enrolment (key id {}; the job names key id {}): refused, nothing executed",
            key_id(pinned_key),
            s.key_id
        )
    })?;
    // Only now, from the bytes that verified, is the job read: its kind and its documents.
    let b: JobBundle = serde_json::from_str(&s.payload)
        .context("the signed job is not a job this agent reads: refused, nothing executed")?;
    if b.format != JOB_FORMAT {
        bail!(
            "the signed job is in format `{}`, this agent reads `{JOB_FORMAT}`: refused, nothing executed",
            b.format
        );
    }
    if b.run_id != run_id || b.site != site {
        bail!(
            "the signed job is for run {} at site `{}`, not run {run_id} at site `{site}` (a signed job replayed into another run): refused, nothing executed",
            b.run_id,
            b.site
        );
    }
    Ok(b)
}

/// The `format` of a registry bundle.
pub const REGISTRY_FORMAT: &str = "vacsine.io/registry-bundle/v1";

/// One document of a registry bundle.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleDocument {
    pub kind: String,
    pub name: String,
    pub version: i64,
    pub sha256: String,
    /// The document as pushed: open, since its type is said by `kind` (an agent reads it as
    /// that kind where it uses it), and its signature and `sha256` are over its canonical
    /// JSON as pushed.
    pub document: Value,
    /// The document's own signature, made when it was pushed ([`sign_document`]): the
    /// bundle's signature is made when an agent syncs, over what the store holds then, so
    /// it alone cannot tell a document altered in the store; this one can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The domain of a registry document's signature.
pub const DOCUMENT_FORMAT: &str = "vacsine.io/registry-document/v1";

fn document_message(kind: &str, name: &str, sha256: &str) -> String {
    format!("{DOCUMENT_FORMAT}\n{kind}\n{name}\n{sha256}")
}

/// Sign a pushed document: its kind, name and the SHA-256 of its canonical JSON.
pub fn sign_document(signer: &BundleSigner, kind: &str, name: &str, sha256: &str) -> String {
    signer.sign(document_message(kind, name, sha256).as_bytes())
}

/// Check a registry document as pushed: `text` (its canonical JSON) has the SHA-256 it is
/// listed with, and that SHA-256 was signed with the pinned key for this kind and name.
pub fn verify_document(
    pinned_key: &str,
    kind: &str,
    name: &str,
    version: i64,
    sha256: &str,
    text: &str,
    signature: Option<&str>,
) -> anyhow::Result<()> {
    let what = format!("registry {kind} `{name}` version {version}");
    let Some(sig) = signature else {
        bail!("{what} carries no signature (pushed before documents were signed, or its signature was removed from the store): not used; push it again");
    };
    if vacsine_wire::sha256_pin(text.as_bytes()) != sha256 {
        bail!("{what} is not the content that was pushed (its SHA-256 differs: altered in the orchestrator's store): not used");
    }
    vacsine_wire::verify_bundle(
        pinned_key,
        document_message(kind, name, sha256).as_bytes(),
        sig,
    )
    .map_err(|_| {
        anyhow!(
            "{what}: its signature does not verify with the orchestrator bundle key pinned at enrolment (key id {}; altered in the orchestrator's store?): not used",
            key_id(pinned_key)
        )
    })
}

impl BundleDocument {
    /// [`verify_document`] over this document as the bundle carries it.
    pub fn verify(&self, pinned_key: &str) -> anyhow::Result<()> {
        verify_document(
            pinned_key,
            &self.kind,
            &self.name,
            self.version,
            &self.sha256,
            &canonical_json(&self.document),
            self.signature.as_deref(),
        )
    }
}

/// The registry as agents sync it: the latest version of every pushed document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RegistryBundle {
    pub format: String,
    pub site: String,
    pub documents: Vec<BundleDocument>,
    pub signed_ms: i64,
}

impl RegistryBundle {
    /// `kind/name@version` of each document, joined by `,`.
    pub fn label(&self) -> String {
        self.documents
            .iter()
            .map(|d| format!("{}/{}@{}", d.kind, d.name, d.version))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The version of a signed bundle: `sha256:…` of the documents it holds (so two signings of
/// the same registry have one version).
pub fn registry_version(documents: &[BundleDocument]) -> String {
    let v = serde_json::to_value(
        documents
            .iter()
            .map(|d| (&d.kind, &d.name, d.version, &d.sha256))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_default();
    vacsine_wire::sha256_pin(canonical_json(&v).as_bytes())
}

/// Sign the registry bundle for `site`.
pub fn sign_registry(
    signer: &BundleSigner,
    site: &str,
    documents: Vec<BundleDocument>,
    now_ms: i64,
) -> anyhow::Result<SignedJob> {
    let b = RegistryBundle {
        format: REGISTRY_FORMAT.into(),
        site: site.into(),
        documents,
        signed_ms: now_ms,
    };
    let payload = canonical_json(&serde_json::to_value(&b)?);
    Ok(SignedJob {
        signature: signer.sign(payload.as_bytes()),
        key_id: key_id(&signer.public_b64()),
        payload,
    })
}

/// Verify a registry bundle with the pinned key, for this site.
pub fn verify_registry(
    pinned_key: &str,
    site: &str,
    s: &SignedJob,
) -> anyhow::Result<RegistryBundle> {
    vacsine_wire::verify_bundle(pinned_key, s.payload.as_bytes(), &s.signature).map_err(|_| {
        anyhow!(
            "the registry bundle's signature does not verify with the orchestrator bundle key pinned at enrolment (key id {}; the bundle names key id {}): not used",
            key_id(pinned_key),
            s.key_id
        )
    })?;
    let b: RegistryBundle =
        serde_json::from_str(&s.payload).context("the signed registry bundle is not readable")?;
    if b.format != REGISTRY_FORMAT || b.site != site {
        bail!(
            "the signed registry bundle is `{}` for site `{}`, not `{REGISTRY_FORMAT}` for `{site}`: not used",
            b.format,
            b.site
        );
    }
    // Each document as it was pushed: the bundle's signature covers what the store held when
    // it was made, which someone with write access to the store could have altered.
    for d in &b.documents {
        d.verify(pinned_key)
            .context("the registry bundle holds a document that does not verify")?;
    }
    Ok(b)
}

/// Where an agent keeps each bundle it verified (its `agent.db`); returns the bundle's
/// SHA-256.
pub trait KeepBundle {
    fn keep(&self, s: &SignedJob, b: &JobBundle, now_ms: i64) -> anyhow::Result<String>;
}

/// Work the agent may execute: the only way to make one is [`verified_work`], so a job of
/// any kind (workflow, enforce, one step of a run spanning sites) reaches an executor only
/// after its signature was checked, and what it reads is the job decoded from the signed
/// bytes. Its fields are private: nothing outside this module can build one from an
/// unsigned job.
#[derive(Debug)]
pub struct VerifiedWork {
    run_id: String,
    lease_ttl_ms: i64,
    job: Job,
}

impl VerifiedWork {
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
    pub fn lease_ttl_ms(&self) -> i64 {
        self.lease_ttl_ms
    }
    /// The signed job, of its kind.
    pub fn job(&self) -> &Job {
        &self.job
    }
}

/// The work as the agent may execute it: the signature of `w.signed` verified with the key
/// pinned at enrolment, for this run at this site, the job taken from the signed bytes, and
/// the bundle kept in the local store. Anything else is refused with the reason; the
/// unsigned copy `w.job` is never read.
pub fn verified_work(
    pinned_key: &str,
    site: &str,
    store: &dyn KeepBundle,
    w: &crate::proto::Work,
) -> anyhow::Result<VerifiedWork> {
    let s = w.signed.as_ref().ok_or_else(|| {
        anyhow!(
            "the orchestrator sent run {} unsigned (queued by an orchestrator that did not sign jobs?): refused, nothing executed; submit it again",
            w.run_id
        )
    })?;
    let b = verify_job(pinned_key, &w.run_id, site, s)?;
    let sha = store.keep(s, &b, crate::now_ms())?;
    let versions = versions_label(&b.job);
    eprintln!(
        "run {}: job signature verified (key id {}, bundle {sha}{})",
        w.run_id,
        s.key_id,
        if versions.is_empty() {
            String::new()
        } else {
            format!(", versions {versions}")
        }
    );
    Ok(VerifiedWork {
        run_id: w.run_id.clone(),
        lease_ttl_ms: w.lease_ttl_ms,
        job: b.job,
    })
}

/// The name of a job's workflow (`?` for an enforce or a step job).
pub fn workflow_name(job: &Job) -> String {
    match job {
        Job::Workflow(w) => w.workflow.metadata.name.value.clone(),
        Job::Enforce(_) | Job::Step(_) => "?".into(),
    }
}

/// A document's `metadata.name` as JSON holds it (a plain string or a located
/// `{value: …}`), `?` when it has none.
pub fn document_name(document: &Value) -> String {
    document
        .pointer("/metadata/name")
        .and_then(|v| {
            v.as_str()
                .or_else(|| v.pointer("/value").and_then(|x| x.as_str()))
        })
        .unwrap_or("?")
        .to_string()
}

/// The registry versions a job carries, as `kind/name@version` joined by `,` (empty for a
/// job submitted from files).
pub fn versions_label(job: &Job) -> String {
    job.versions()
        .iter()
        .map(|v| format!("{}/{}@{}", v.kind, v.name, v.version))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn canonical_json_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"z": [{"y": 1, "x": 2}], "c": "é"}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":"é","z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn a_signed_job_verifies_for_its_run_and_site_only() {
        let k = BundleSigner::generate();
        let s = sign_job(&k, "run-1", "edge", &job(), 5).unwrap();
        let b = verify_job(&k.public_b64(), "run-1", "edge", &s).unwrap();
        assert!(same(&b.job, &job()));
        assert_eq!(workflow_name(&b.job), "w");
        assert_eq!(s.key_id, key_id(&k.public_b64()));
        let e = verify_job(&k.public_b64(), "run-2", "edge", &s).unwrap_err();
        assert!(e.to_string().contains("not run run-2"), "{e}");
        let e = verify_job(&k.public_b64(), "run-1", "other", &s).unwrap_err();
        assert!(e.to_string().contains("site `other`"), "{e}");
    }

    /// Signed by hand: a payload the orchestrator's own code would not make.
    fn signed_payload(k: &BundleSigner, job: Value) -> SignedJob {
        let payload = canonical_json(&json!({"format": JOB_FORMAT, "run_id": "run-1",
            "site": "edge", "job": job, "signed_ms": 5}));
        SignedJob {
            signature: k.sign(payload.as_bytes()),
            key_id: key_id(&k.public_b64()),
            payload,
        }
    }

    /// Issue 15: the kind of a job is read from the verified bytes only, decoded once into
    /// exactly one kind with its documents typed; fields a newer orchestrator adds are
    /// ignored.
    #[test]
    fn a_verified_job_is_decoded_into_exactly_one_kind() {
        let k = BundleSigner::generate();
        let pk = k.public_b64();
        // A workflow job and a step at once: refused, though its signature verifies.
        let step = json!({"parent_run": "p", "step_id": "s", "attempt": 1,
            "executor": "command", "args": {"argv": ["true"]}, "timeout_ms": 1000});
        let both = signed_payload(&k, json!({"workflow": workflow(), "step": step}));
        let e = format!("{:#}", verify_job(&pk, "run-1", "edge", &both).unwrap_err());
        assert!(
            e.contains("not several") && e.contains("nothing executed"),
            "{e}"
        );
        // A workflow that is not a Workflow: refused when decoded, before anything runs.
        let bad = signed_payload(&k, json!({"workflow": {"kind": "Workflow"}}));
        let e = format!("{:#}", verify_job(&pk, "run-1", "edge", &bad).unwrap_err());
        assert!(e.contains("nothing executed"), "{e}");
        // Unknown fields (of the bundle and of the job) are ignored.
        let mut j = serde_json::to_value(job()).unwrap();
        j["added_later"] = json!(true);
        let ok = signed_payload(&k, j);
        let b = verify_job(&pk, "run-1", "edge", &ok).unwrap();
        assert!(matches!(b.job, Job::Workflow(_)) && same(&b.job, &job()));
        let s = signed_payload(&k, json!({"step": step}));
        let b = verify_job(&pk, "run-1", "edge", &s).unwrap();
        assert!(matches!(&b.job, Job::Step(s) if s.step.step_id == "s"));
        // Altered to another kind after signing: the signature refuses it first.
        let mut t = ok.clone();
        t.payload = t.payload.replace("\"workflow\":", "\"enforce\":");
        let e = verify_job(&pk, "run-1", "edge", &t)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not verify"), "{e}");
    }

    #[test]
    fn a_tampered_job_or_another_key_is_refused() {
        let k = BundleSigner::generate();
        let s = sign_job(&k, "run-1", "edge", &job(), 5).unwrap();
        let mut t = s.clone();
        t.payload = t.payload.replace("safe", "touch /tmp/pwned");
        assert_ne!(t.payload, s.payload);
        let e = verify_job(&k.public_b64(), "run-1", "edge", &t).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        // Signed by another key (an orchestrator this agent did not enrol with).
        let other = BundleSigner::generate();
        let s2 = sign_job(&other, "run-1", "edge", &job(), 5).unwrap();
        let e = verify_job(&k.public_b64(), "run-1", "edge", &s2).unwrap_err();
        assert!(e.to_string().contains(&key_id(&k.public_b64())), "{e}");
        // A signature cut or garbled.
        let mut g = s.clone();
        g.signature = "AAAA".into();
        assert!(verify_job(&k.public_b64(), "run-1", "edge", &g).is_err());
    }

    /// Issue 15: a document altered in the orchestrator's store is signed into the bundle at
    /// sync time like any other; its own signature, made at push, is what refuses it.
    #[test]
    fn a_registry_document_altered_in_the_store_is_refused_though_the_bundle_is_signed() {
        let k = BundleSigner::generate();
        let text = canonical_json(&workflow());
        let sha = vacsine_wire::sha256_pin(text.as_bytes());
        let good = BundleDocument {
            kind: "Workflow".into(),
            name: "w".into(),
            version: 1,
            signature: Some(sign_document(&k, "Workflow", "w", &sha)),
            sha256: sha.clone(),
            document: workflow(),
        };
        good.verify(&k.public_b64()).unwrap();
        // The content altered, its SHA-256 left: refused.
        let mut altered = good.clone();
        altered.document = serde_json::from_str(&text.replace("safe", "evil")).unwrap();
        let e = altered.verify(&k.public_b64()).unwrap_err().to_string();
        assert!(e.contains("not the content that was pushed"), "{e}");
        // Content and SHA-256 altered together: the signature refuses it.
        altered.sha256 = vacsine_wire::sha256_pin(canonical_json(&altered.document).as_bytes());
        let e = altered.verify(&k.public_b64()).unwrap_err().to_string();
        assert!(e.contains("does not verify"), "{e}");
        // Renamed: the signature names the document.
        let mut renamed = good.clone();
        renamed.name = "x".into();
        assert!(renamed.verify(&k.public_b64()).is_err());
        // No signature (pushed before documents were signed, or removed).
        let mut bare = good.clone();
        bare.signature = None;
        let e = bare.verify(&k.public_b64()).unwrap_err().to_string();
        assert!(e.contains("push it again"), "{e}");
        // Inside a bundle signed over the altered store: the bundle is refused.
        let s = sign_registry(&k, "edge", vec![good.clone(), altered], 1).unwrap();
        let e = verify_registry(&k.public_b64(), "edge", &s).unwrap_err();
        assert!(format!("{e:#}").contains("does not verify"), "{e:#}");
        let s = sign_registry(&k, "edge", vec![good], 1).unwrap();
        verify_registry(&k.public_b64(), "edge", &s).unwrap();
    }
}

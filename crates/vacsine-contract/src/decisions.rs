//! Decisions across sites (issue 16), signed by construction.
//!
//! Everything a site enforces is signed by the orchestrator's bundle key **when it is made**,
//! by the authenticated act that makes it: a decision when a site uploads it, an operator adds
//! it, an approval enacts it or a Response decides on intelligence ([`seal_decision`], with
//! the sites it applies at); its deletion when an operator deletes it ([`seal_deletion`]); a
//! site's labels when an operator sets them ([`seal_labels`]); an approval when a Response asks
//! for it ([`seal_approval`]). The store keeps those signed documents beside the rows it
//! indexes; the decision set a site's long poll carries is made of them, never of the rows'
//! columns, so a row written into the database by hand (a ban, a quarantine, a wider scope, a
//! later expiry, a deletion) is not signed and nothing at any site acts on it.
//!
//! The set itself is signed too (site, version, when): an agent verifies the set with the key
//! it pinned at enrolment, then every document in it ([`verify_set`]), refuses what does not
//! verify or is not for its site (said, by id), and reconciles its nft sets by diff (never a
//! flush). The set is whole (every decision active for the site, plus the ones deleted by
//! hand), so a site that was cut off gets exactly what is active for it when it reconnects; a
//! decision the site made itself is in it under the same id, so the site does not act twice.

use crate::bundle::{canonical_json, key_id};
use crate::proto::{Held, SignedDecisions, SignedJob};
use anyhow::{anyhow, bail, Context};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use vacsine_response::Decision;
use vacsine_wire::BundleSigner;

/// The `format` of a signed decision set.
pub const DECISIONS_FORMAT: &str = "vacsine.io/decisions/v2";
/// The `format` of one decision, signed when it is made.
pub const DECISION_FORMAT: &str = "vacsine.io/decision/v1";
/// The `format` of a decision's deletion, signed when an operator deletes it.
pub const DELETION_FORMAT: &str = "vacsine.io/decision-deletion/v1";
/// The `format` of a site's labels, signed when an operator sets them.
pub const LABELS_FORMAT: &str = "vacsine.io/site-labels/v1";
/// The `format` of what waits for an approval, signed when a Response asks for it.
pub const APPROVAL_FORMAT: &str = "vacsine.io/approval/v1";

/// One decision as the orchestrator signed it when it was made: the decision (its action,
/// expiry and origin) and the sites it applies at (empty: every site).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionGrant {
    pub format: String,
    pub decision: Decision,
    pub scope: Vec<String>,
}

impl DecisionGrant {
    /// Whether it applies at `site`.
    pub fn applies_at(&self, site: &str) -> bool {
        self.scope.is_empty() || self.scope.iter().any(|s| s == site)
    }
}

/// A decision's deletion as the orchestrator signed it when an operator deleted it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Deletion {
    pub format: String,
    pub id: String,
    pub deleted_ms: i64,
}

/// A site's labels as the orchestrator signed them when an operator set them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SiteLabels {
    pub format: String,
    pub site: String,
    pub labels: BTreeMap<String, String>,
    pub signed_ms: i64,
}

/// What waits for approval, as the orchestrator signed it when a Response asked for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApprovalGrant {
    pub format: String,
    pub id: String,
    pub response: String,
    pub held: Held,
    /// Sites it applies at once approved (empty: every site).
    pub scope: Vec<String>,
    /// The site whose event asked for it.
    pub site: String,
    pub event_ms: Option<i64>,
    pub expires_ms: i64,
}

/// Sign `doc` (its canonical JSON) with the bundle key.
fn seal<T: Serialize>(signer: &BundleSigner, doc: &T) -> anyhow::Result<SignedJob> {
    let payload = canonical_json(&serde_json::to_value(doc)?);
    Ok(SignedJob {
        signature: signer.sign(payload.as_bytes()),
        key_id: key_id(&signer.public_b64()),
        payload,
    })
}

/// Sign a decision when it is made, with the sites it applies at.
pub fn seal_decision(
    signer: &BundleSigner,
    decision: &Decision,
    scope: &[String],
) -> anyhow::Result<SignedJob> {
    seal(
        signer,
        &DecisionGrant {
            format: DECISION_FORMAT.into(),
            decision: decision.clone(),
            scope: scope.to_vec(),
        },
    )
}

/// Sign the deletion of decision `id`.
pub fn seal_deletion(
    signer: &BundleSigner,
    id: &str,
    deleted_ms: i64,
) -> anyhow::Result<SignedJob> {
    seal(
        signer,
        &Deletion {
            format: DELETION_FORMAT.into(),
            id: id.into(),
            deleted_ms,
        },
    )
}

/// Sign site `site`'s labels.
pub fn seal_labels(
    signer: &BundleSigner,
    site: &str,
    labels: &BTreeMap<String, String>,
    now_ms: i64,
) -> anyhow::Result<SignedJob> {
    seal(
        signer,
        &SiteLabels {
            format: LABELS_FORMAT.into(),
            site: site.into(),
            labels: labels.clone(),
            signed_ms: now_ms,
        },
    )
}

/// Sign what waits for an approval.
pub fn seal_approval(signer: &BundleSigner, grant: &ApprovalGrant) -> anyhow::Result<SignedJob> {
    let mut g = grant.clone();
    g.format = APPROVAL_FORMAT.into();
    seal(signer, &g)
}

/// Signed documents verified before, by the SHA-256 of their payload and signature: each is
/// verified once per process (a set of 100,000 decisions is not verified again at each
/// change). Bounded: emptied past a million entries.
#[derive(Default)]
pub struct Verifier {
    seen: Mutex<HashSet<[u8; 32]>>,
    refused: Mutex<HashSet<String>>,
}

const VERIFIED_KEPT: usize = 1_000_000;

impl Verifier {
    /// True the first time `id` is refused in this process (said once, not at every poll).
    pub fn first_refusal(&self, id: &str) -> bool {
        let mut r = self
            .refused
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.len() >= VERIFIED_KEPT {
            r.clear();
        }
        r.insert(id.to_string())
    }

    /// `s` verified with `key` (base64) and read as a `format` document.
    pub fn open<T: DeserializeOwned>(
        &self,
        key: &str,
        s: &SignedJob,
        format: &str,
    ) -> anyhow::Result<T> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(s.payload.as_bytes());
        h.update([0]);
        h.update(s.signature.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let known = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&digest);
        if !known {
            vacsine_wire::verify_bundle(key, s.payload.as_bytes(), &s.signature).map_err(|_| {
                anyhow!(
                    "its signature does not verify with the orchestrator's bundle key (key id {}; it names key id {})",
                    key_id(key),
                    s.key_id
                )
            })?;
        }
        let v: serde_json::Value =
            serde_json::from_str(&s.payload).context("its signed payload is not JSON")?;
        let f = v.get("format").and_then(|f| f.as_str()).unwrap_or_default();
        if f != format {
            bail!("it is a `{f}` document, not `{format}`");
        }
        let doc = serde_json::from_value(v)
            .with_context(|| format!("it is not a readable `{format}` document"))?;
        if !known {
            let mut seen = self
                .seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if seen.len() >= VERIFIED_KEPT {
                seen.clear();
            }
            seen.insert(digest);
        }
        Ok(doc)
    }
}

/// The set of signed documents a site's long poll carries: signed as a whole (for this site,
/// when), each document in it signed when it was made.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SetPayload {
    format: String,
    site: String,
    version: String,
    /// Every decision active for the site, each as signed when made.
    active: Vec<SignedJob>,
    /// Deletions by hand of decisions that have not expired yet.
    deleted: Vec<SignedJob>,
    /// The site's labels, as signed when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    labels: Option<SignedJob>,
    signed_ms: i64,
}

/// A decision set as an agent acts on it: what verified, for this site.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DecisionSet {
    pub version: String,
    /// Every decision active for the site.
    pub active: Vec<Decision>,
    /// Decisions deleted by hand (the site removes them if it holds them).
    pub deleted: Vec<String>,
    /// The site's labels (a Response's `scope.labels` matches them at the site).
    pub labels: BTreeMap<String, String>,
    /// What the set held and this site refused (why, by id where it could be read).
    pub refused: Vec<String>,
}

/// `sha256:…` of the signed documents of a set (order aside): what a poll names to say which
/// set it holds.
pub fn set_version(
    active: &[SignedJob],
    deleted: &[SignedJob],
    labels: Option<&SignedJob>,
) -> String {
    let mut a: Vec<&str> = active.iter().map(|s| s.signature.as_str()).collect();
    a.sort_unstable();
    let mut d: Vec<&str> = deleted.iter().map(|s| s.signature.as_str()).collect();
    d.sort_unstable();
    let l = labels.map(|s| s.signature.as_str());
    let v = serde_json::json!([a, d, l]);
    vacsine_wire::sha256_pin(canonical_json(&v).as_bytes())
}

/// Sign the decision set of `site`: documents signed when they were made, put together.
pub fn sign_set(
    signer: &BundleSigner,
    site: &str,
    active: Vec<SignedJob>,
    deleted: Vec<SignedJob>,
    labels: Option<SignedJob>,
    now_ms: i64,
) -> anyhow::Result<SignedDecisions> {
    let version = set_version(&active, &deleted, labels.as_ref());
    let set = SetPayload {
        format: DECISIONS_FORMAT.into(),
        site: site.into(),
        version: version.clone(),
        active,
        deleted,
        labels,
        signed_ms: now_ms,
    };
    Ok(SignedDecisions {
        version,
        signed: seal(signer, &set)?,
    })
}

/// Verify a signed decision set with the pinned key, for this site, then each document in it:
/// a decision whose signature does not verify, or that is not for this site, is refused (in
/// `refused`) and the rest is kept. The whole set is refused when its own signature, site or
/// version is wrong.
pub fn verify_set(
    pinned_key: &str,
    site: &str,
    s: &SignedDecisions,
    verifier: &Verifier,
) -> anyhow::Result<DecisionSet> {
    vacsine_wire::verify_bundle(pinned_key, s.signed.payload.as_bytes(), &s.signed.signature)
        .map_err(|_| {
            anyhow!(
                "the decision set's signature does not verify with the orchestrator bundle key pinned at enrolment (key id {}; the set names key id {}): refused, nothing applied",
                key_id(pinned_key),
                s.signed.key_id
            )
        })?;
    let set: SetPayload = serde_json::from_str(&s.signed.payload)
        .context("the signed decision set is not readable: refused, nothing applied")?;
    if set.format != DECISIONS_FORMAT || set.site != site {
        bail!(
            "the signed decision set is `{}` for site `{}`, not `{DECISIONS_FORMAT}` for `{site}`: refused, nothing applied",
            set.format,
            set.site
        );
    }
    if set.version != set_version(&set.active, &set.deleted, set.labels.as_ref()) {
        bail!("the signed decision set's version does not match its content: refused, nothing applied");
    }
    let mut out = DecisionSet {
        version: set.version,
        ..DecisionSet::default()
    };
    for sj in &set.active {
        match verifier.open::<DecisionGrant>(pinned_key, sj, DECISION_FORMAT) {
            Ok(g) if g.applies_at(site) => out.active.push(g.decision),
            Ok(g) => out.refused.push(format!(
                "decision {}: signed for sites {:?}, not this one",
                g.decision.id, g.scope
            )),
            Err(e) => out.refused.push(format!("a decision: {e:#}")),
        }
    }
    for sj in &set.deleted {
        match verifier.open::<Deletion>(pinned_key, sj, DELETION_FORMAT) {
            Ok(d) => out.deleted.push(d.id),
            Err(e) => out.refused.push(format!("a deletion: {e:#}")),
        }
    }
    if let Some(sj) = &set.labels {
        match verifier.open::<SiteLabels>(pinned_key, sj, LABELS_FORMAT) {
            Ok(l) if l.site == site => out.labels = l.labels,
            Ok(l) => out
                .refused
                .push(format!("labels signed for site `{}`, not this one", l.site)),
            Err(e) => out.refused.push(format!("the site's labels: {e:#}")),
        }
    }
    Ok(out)
}

/// A label key: 1 to 63 letters, digits, `-`, `_`, `.` or `/`; a value: 0 to 63 of the same
/// but `/`.
pub fn check_label(k: &str, v: &str) -> Result<(), String> {
    let key_ok = !k.is_empty()
        && k.len() <= 63
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    let value_ok = v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if key_ok && value_ok {
        Ok(())
    } else {
        Err(format!(
            "label {:?}={:?}: a key is 1 to 63 letters, digits, `-`, `_`, `.` or `/`; a value 0 to 63 letters, digits, `-`, `_` or `.`",
            k.chars().take(70).collect::<String>(),
            v.chars().take(70).collect::<String>()
        ))
    }
}

/// A `kind: Response` document as the registry holds it (JSON), validated into the rule
/// `decide` evaluates; errors name the document and the place in its JSON text.
pub fn response_rule(
    name: &str,
    version: i64,
    document: &serde_json::Value,
) -> Result<vacsine_response::Rule, String> {
    let text = serde_json::to_string_pretty(document).map_err(|e| e.to_string())?;
    let src = vacsine_core::doc::SourceFile::new(format!("Response {name}@{version}"), text);
    vacsine_response::load(&src).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vacsine_response::{Action, DecisionOrigin, IpNet};

    fn ban(ip: &str) -> Decision {
        let action = Action::Ban {
            net: ip.parse::<IpNet>().unwrap(),
        };
        Decision {
            id: vacsine_response::decision_id("r", ip, &action),
            action,
            expires_at: Some(chrono::Utc::now() + chrono::TimeDelta::hours(1)),
            origin: DecisionOrigin {
                site: Some("a".into()),
                response: "r".into(),
                event_id: ip.into(),
            },
            created_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_signed_set_verifies_for_its_site_only_and_not_once_altered() {
        let k = BundleSigner::generate();
        let v = Verifier::default();
        let d = seal_decision(&k, &ban("203.0.113.9"), &[]).unwrap();
        let s = sign_set(&k, "edge-b", vec![d], vec![], None, 1).unwrap();
        let set = verify_set(&k.public_b64(), "edge-b", &s, &v).unwrap();
        assert_eq!(set.active.len(), 1);
        assert!(set.refused.is_empty());
        let e = verify_set(&k.public_b64(), "edge-a", &s, &v).unwrap_err();
        assert!(format!("{e:#}").contains("for site `edge-b`"), "{e:#}");
        let mut t = s.clone();
        t.signed.payload = t.signed.payload.replace("203.0.113.9", "203.0.113.8");
        assert!(verify_set(&k.public_b64(), "edge-b", &t, &v).is_err());
        let other = BundleSigner::generate();
        assert!(verify_set(&other.public_b64(), "edge-b", &s, &Verifier::default()).is_err());
    }

    /// The set is signed at poll time, but a decision in it only counts when it was signed
    /// when made: one the orchestrator would put together from a row written by hand (signed
    /// by another key, or altered after signing) is refused, by id, and the others are kept.
    #[test]
    fn a_decision_not_signed_when_made_is_refused_inside_a_signed_set() {
        let k = BundleSigner::generate();
        let good = seal_decision(&k, &ban("203.0.113.9"), &[]).unwrap();
        let mut altered = seal_decision(&k, &ban("203.0.113.10"), &[]).unwrap();
        altered.payload = altered.payload.replace("203.0.113.10", "198.51.100.1");
        let forged = seal_decision(&BundleSigner::generate(), &ban("203.0.113.11"), &[]).unwrap();
        let elsewhere = seal_decision(&k, &ban("203.0.113.12"), &["edge-a".into()]).unwrap();
        let del = seal_deletion(&k, "some-id", 5).unwrap();
        let mut bad_del = del.clone();
        bad_del.payload = bad_del.payload.replace("some-id", "other-id");
        let s = sign_set(
            &k,
            "edge-b",
            vec![good, altered, forged, elsewhere],
            vec![del, bad_del],
            Some(
                seal_labels(
                    &k,
                    "edge-a",
                    &BTreeMap::from([("tier".into(), "dmz".into())]),
                    1,
                )
                .unwrap(),
            ),
            1,
        )
        .unwrap();
        let set = verify_set(&k.public_b64(), "edge-b", &s, &Verifier::default()).unwrap();
        let ips: Vec<String> = set.active.iter().map(|d| d.action.to_string()).collect();
        assert_eq!(ips, vec!["ban 203.0.113.9"], "{set:?}");
        assert_eq!(set.deleted, vec!["some-id".to_string()]);
        assert!(
            set.labels.is_empty(),
            "labels of another site taken: {set:?}"
        );
        assert_eq!(set.refused.len(), 5, "{:?}", set.refused);
        assert!(
            set.refused.iter().any(|r| r.contains("not this one")),
            "{:?}",
            set.refused
        );
        assert!(
            set.refused.iter().any(|r| r.contains("does not verify")),
            "{:?}",
            set.refused
        );
    }

    #[test]
    fn a_document_of_one_format_is_not_taken_for_another() {
        let k = BundleSigner::generate();
        let del = seal_deletion(&k, "x", 1).unwrap();
        let e = Verifier::default()
            .open::<DecisionGrant>(&k.public_b64(), &del, DECISION_FORMAT)
            .unwrap_err();
        assert!(
            format!("{e:#}").contains("not `vacsine.io/decision/v1`"),
            "{e:#}"
        );
    }

    #[test]
    fn the_version_changes_with_any_document_and_not_with_their_order() {
        let k = BundleSigner::generate();
        let a = seal_decision(&k, &ban("203.0.113.9"), &[]).unwrap();
        let b = seal_decision(&k, &ban("203.0.113.10"), &[]).unwrap();
        let v1 = set_version(&[a.clone(), b.clone()], &[], None);
        assert_eq!(v1, set_version(&[b.clone(), a.clone()], &[], None));
        assert_ne!(v1, set_version(std::slice::from_ref(&a), &[], None));
        let l = seal_labels(&k, "s", &BTreeMap::new(), 1).unwrap();
        assert_ne!(v1, set_version(&[a, b], &[], Some(&l)));
    }

    /// 100,000 decisions signed when made, put in one set, verified at a site: cold (a
    /// restarted agent verifies each once) and warm (a set that changed by one decision: the
    /// others were verified before). `cargo test -p vacsine-orch --lib bench_signed_set --
    /// --ignored --nocapture`.
    #[test]
    #[ignore = "benchmark"]
    fn bench_signed_set_of_100000_decisions() {
        use std::time::Instant;
        let k = BundleSigner::generate();
        let n = 100_000u32;
        let t = Instant::now();
        let mut docs: Vec<SignedJob> = (0..n)
            .map(|i| {
                let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
                seal_decision(&k, &ban(&ip), &[]).unwrap()
            })
            .collect();
        let sealed = t.elapsed();
        let t = Instant::now();
        let set = sign_set(&k, "edge", docs.clone(), vec![], None, 1).unwrap();
        let put_together = t.elapsed();
        let v = Verifier::default();
        let t = Instant::now();
        let got = verify_set(&k.public_b64(), "edge", &set, &v).unwrap();
        let cold = t.elapsed();
        assert_eq!(got.active.len(), n as usize);
        docs.push(seal_decision(&k, &ban("198.51.100.1"), &[]).unwrap());
        let set = sign_set(&k, "edge", docs, vec![], None, 2).unwrap();
        let t = Instant::now();
        let got = verify_set(&k.public_b64(), "edge", &set, &v).unwrap();
        let warm = t.elapsed();
        assert_eq!(got.active.len(), n as usize + 1);
        eprintln!(
            "{n} decisions: signed when made {sealed:?} in all; set put together and signed {put_together:?} ({} MB); verified at the site cold {cold:?}, after one more decision {warm:?}",
            set.signed.payload.len() / 1_000_000
        );
    }
}

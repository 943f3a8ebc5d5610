//! Decisions across sites (issue 16): the set of decisions active for one site, signed by the
//! orchestrator's bundle key and carried on the long poll. An agent verifies the set with the
//! key it pinned at enrolment before it acts on any of it, then reconciles its nft sets by
//! diff (never a flush). The set is whole (every decision active for the site, plus the ids
//! deleted by hand), so a site that was cut off gets exactly what is active for it when it
//! reconnects; a decision the site made itself is in it under the same id, so the site does
//! not act twice.

use crate::bundle::{canonical_json, key_id};
use crate::proto::{SignedDecisions, SignedJob};
use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use vacsine_response::Decision;
use vacsine_wire::BundleSigner;

/// The `format` of a signed decision set.
pub const DECISIONS_FORMAT: &str = "vacsine.io/decisions/v1";

/// What the orchestrator signs for one site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DecisionSet {
    pub format: String,
    pub site: String,
    pub version: String,
    /// Every decision active for the site.
    pub active: Vec<Decision>,
    /// Decisions deleted by hand (the site removes them if it holds them).
    pub deleted: Vec<String>,
    pub signed_ms: i64,
    /// The site's labels (a Response's `scope.labels` matches them at the site).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The version of a set with the site's labels: [`set_version`] itself when there are none.
pub fn labeled_version(version: &str, labels: &BTreeMap<String, String>) -> String {
    if labels.is_empty() {
        return version.to_string();
    }
    let v = serde_json::json!([version, labels]);
    vacsine_wire::sha256_pin(canonical_json(&v).as_bytes())
}

/// `sha256:…` of the active decisions (id and expiry) and the deleted ids.
pub fn set_version(active: &[Decision], deleted: &[String]) -> String {
    let mut a: Vec<(&str, Option<i64>)> = active
        .iter()
        .map(|d| (d.id.as_str(), d.expires_at.map(|t| t.timestamp_millis())))
        .collect();
    a.sort();
    let mut del: Vec<&str> = deleted.iter().map(String::as_str).collect();
    del.sort();
    let v = serde_json::json!([a, del]);
    vacsine_wire::sha256_pin(canonical_json(&v).as_bytes())
}

/// Sign the decision set of `site`.
pub fn sign_set(
    signer: &BundleSigner,
    site: &str,
    active: Vec<Decision>,
    deleted: Vec<String>,
    now_ms: i64,
) -> anyhow::Result<SignedDecisions> {
    sign_set_labeled(signer, site, active, deleted, BTreeMap::new(), now_ms)
}

/// Sign the decision set of `site`, with the site's labels.
pub fn sign_set_labeled(
    signer: &BundleSigner,
    site: &str,
    active: Vec<Decision>,
    deleted: Vec<String>,
    labels: BTreeMap<String, String>,
    now_ms: i64,
) -> anyhow::Result<SignedDecisions> {
    let version = labeled_version(&set_version(&active, &deleted), &labels);
    let set = DecisionSet {
        labels,
        format: DECISIONS_FORMAT.into(),
        site: site.into(),
        version: version.clone(),
        active,
        deleted,
        signed_ms: now_ms,
    };
    let payload = canonical_json(&serde_json::to_value(&set)?);
    Ok(SignedDecisions {
        version,
        signed: SignedJob {
            signature: signer.sign(payload.as_bytes()),
            key_id: key_id(&signer.public_b64()),
            payload,
        },
    })
}

/// Verify a signed decision set with the pinned key, for this site; the set parsed from the
/// signed bytes.
pub fn verify_set(
    pinned_key: &str,
    site: &str,
    s: &SignedDecisions,
) -> anyhow::Result<DecisionSet> {
    vacsine_wire::verify_bundle(pinned_key, s.signed.payload.as_bytes(), &s.signed.signature)
        .map_err(|_| {
            anyhow!(
                "the decision set's signature does not verify with the orchestrator bundle key pinned at enrolment (key id {}; the set names key id {}): refused, nothing applied",
                key_id(pinned_key),
                s.signed.key_id
            )
        })?;
    let set: DecisionSet = serde_json::from_str(&s.signed.payload)
        .context("the signed decision set is not readable: refused, nothing applied")?;
    if set.format != DECISIONS_FORMAT || set.site != site {
        bail!(
            "the signed decision set is `{}` for site `{}`, not `{DECISIONS_FORMAT}` for `{site}`: refused, nothing applied",
            set.format,
            set.site
        );
    }
    if set.version != labeled_version(&set_version(&set.active, &set.deleted), &set.labels) {
        bail!("the signed decision set's version does not match its content: refused, nothing applied");
    }
    Ok(set)
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
        let s = sign_set(&k, "edge-b", vec![ban("203.0.113.9")], vec![], 1).unwrap();
        let set = verify_set(&k.public_b64(), "edge-b", &s).unwrap();
        assert_eq!(set.active.len(), 1);
        let e = verify_set(&k.public_b64(), "edge-a", &s).unwrap_err();
        assert!(format!("{e:#}").contains("for site `edge-b`"), "{e:#}");
        let mut t = s.clone();
        t.signed.payload = t.signed.payload.replace("203.0.113.9", "203.0.113.8");
        assert!(verify_set(&k.public_b64(), "edge-b", &t).is_err());
        let other = BundleSigner::generate();
        assert!(verify_set(&other.public_b64(), "edge-b", &s).is_err());
    }
}

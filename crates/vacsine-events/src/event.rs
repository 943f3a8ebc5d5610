//! The event model (design brief §3 "Event").

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::{MAX_FIELDS, MAX_FIELD_BYTES, MAX_FIELD_NAME};
use crate::observable::Observable;

/// What an event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Something is known bad (a feed's indicator, an address that touched a decoy).
    Indicator,
    /// Something happened (an IDS alert, a runtime rule).
    Incident,
    /// Something is exposed or vulnerable (an open port and its service, a CVE).
    Vulnerability,
    /// A requirement that passed now fails (drift), or a policy changed.
    RequirementChanged,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Indicator => "indicator",
            EventKind::Incident => "incident",
            EventKind::Vulnerability => "vulnerability",
            EventKind::RequirementChanged => "requirement_changed",
        }
    }
}

/// Severity, ordered from `info` to `critical` (the policy's scale).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        match s.to_ascii_lowercase().as_str() {
            "info" | "informational" => Some(Severity::Info),
            "low" => Some(Severity::Low),
            "medium" => Some(Severity::Medium),
            "high" => Some(Severity::High),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event. `observables` are what the event is *about* (the suspect side: an alert's source,
/// a decoy's visitor, an indicator's values, a scanned host); the other end of a connection
/// (our own server) stays in `fields`, so that a response acting on observables never targets
/// the site itself.
///
/// The wire form is tolerant: unknown fields are ignored, `fields`, `site`, `node` and
/// `observables` may be absent. Observables are validated on the way in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Content id: hex SHA-256 of the canonical form (see [`Event::content_id`]); the same
    /// event read twice has the same id, which is its idempotency key.
    pub id: String,
    pub kind: EventKind,
    /// Producer: `suricata`, `falco`, `stix`, `crowdsec`, `opencanary`, `cowrie`, `nmap`,
    /// `vacsine`.
    pub source: String,
    /// When it happened, per its producer (RFC 3339 on the wire).
    pub time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub severity: Severity,
    #[serde(default)]
    pub observables: Vec<Observable>,
    pub summary: String,
    /// Selected raw fields of the source record, as text: at most [`MAX_FIELDS`] entries,
    /// names of at most [`MAX_FIELD_NAME`] bytes, values of at most [`MAX_FIELD_BYTES`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

impl Event {
    /// A new event; its id is computed from its content.
    pub fn new(
        kind: EventKind,
        source: &str,
        time: DateTime<Utc>,
        severity: Severity,
        summary: String,
    ) -> Event {
        Event {
            id: String::new(),
            kind,
            source: source.to_string(),
            time,
            site: None,
            node: None,
            severity,
            observables: Vec::new(),
            summary,
            fields: BTreeMap::new(),
        }
    }

    /// Adds a raw field, keeping the bounds (a field past them is not kept; returns whether
    /// it was).
    pub fn field(&mut self, name: &str, value: impl Into<String>) -> bool {
        let value = value.into();
        if name.len() > MAX_FIELD_NAME
            || value.len() > MAX_FIELD_BYTES
            || (self.fields.len() >= MAX_FIELDS && !self.fields.contains_key(name))
        {
            return false;
        }
        self.fields.insert(name.to_string(), value);
        true
    }

    /// Adds an observable once.
    pub fn observe(&mut self, o: Observable) {
        if !self.observables.contains(&o) {
            self.observables.push(o);
        }
    }

    /// Hex SHA-256 of the canonical form: a JSON array of kind, source, time (RFC 3339, UTC,
    /// `Z`, as many fraction digits as needed), site, node, severity, the observables as
    /// `type:value` text sorted, summary and the fields (sorted by name). `id` itself is not
    /// part of it.
    pub fn content_id(&self) -> String {
        let mut obs: Vec<String> = self.observables.iter().map(|o| o.to_string()).collect();
        obs.sort();
        let canon = (
            self.kind.as_str(),
            &self.source,
            self.time.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            &self.site,
            &self.node,
            self.severity.as_str(),
            obs,
            &self.summary,
            &self.fields,
        );
        // Serialising a tuple of strings and maps cannot fail.
        let bytes = serde_json::to_vec(&canon).unwrap_or_default();
        hex(&Sha256::digest(&bytes))
    }

    /// Sets `id` to the content id (after any change of content).
    pub fn seal(mut self) -> Event {
        self.id = self.content_id();
        self
    }

    /// The event at a site (id recomputed).
    pub fn at_site(mut self, site: &str) -> Event {
        self.site = Some(site.to_string());
        self.seal()
    }
}

fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

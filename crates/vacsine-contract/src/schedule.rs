//! `kind: Schedule` (issue 17): continuous assessment at the sites. A schedule, pushed to the
//! registry like workflows and responses (versioned, signed, synced to agents), says what to
//! assess at the sites in its scope and how often: a pushed policy checked on a target, a SCAP
//! profile evaluated on it, and/or an exposure scan (`nmap`, through the `scan` executor) of
//! its nodes. Each agent runs it itself, also while its site is cut off; results wait in the
//! outbox and are uploaded once (idempotency key per assessment).
//!
//! This module is pure: the document, its checks, the scope, and what changed between two
//! assessments (drift, new open ports). The agent's loop is `agent::schedules`, the store's
//! history `store` (`PostureStore`), the views `posture`.

use crate::proto::VersionRef;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use vacsine_core::target::Target;
use vacsine_events::{Event, EventKind, Observable, Severity};

/// Agent endpoint: one assessment's results (`AssessmentUpload` → `AssessmentAccepted`).
pub const ASSESSMENTS: &str = "/v1/agent/assessments";

/// The shortest interval a schedule may ask for.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// A `kind: Schedule` document (strict: a typo is an error, not a silently skipped check).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Schedule {
    pub api_version: String,
    pub kind: String,
    pub metadata: ScheduleMeta,
    pub spec: ScheduleSpec,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleMeta {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// How often: `30s`, `15m`, `1h`, `24h`.
    pub every: String,
    /// Sites in scope, by name (empty: every site whose labels match `labels`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sites: Vec<String>,
    /// Labels a site must carry (all of them) to be in scope.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The target description at each site: its nodes and vantage points.
    pub target: Target,
    /// Check a pushed policy (its latest version in the registry bundle the agent holds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckSpec>,
    /// Evaluate a SCAP profile of a data stream present on the agent's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scap: Option<ScapSpec>,
    /// Scan the target's nodes for open ports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<ScanSpec>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckSpec {
    /// Name of a pushed `Policy`.
    pub policy: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScapSpec {
    /// Path of a SCAP 1.3 source data stream on the agent's machine.
    pub datastream: String,
    /// Profile id (`xccdf_org.ssgproject.content_profile_anssi_bp28_minimal`).
    pub profile: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScanSpec {
    /// The vantage point the scan is made from: `agent` (the agent's machine, with Debian's
    /// `nmap`; the default) or a vantage point of the target (its container needs `nmap`).
    #[serde(default = "agent")]
    pub from: String,
    /// Nodes of the target to scan, by name (default: every node).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<String>,
    /// TCP ports (`22,80,8000-8100`; default `1-1024`).
    #[serde(default = "default_ports")]
    pub ports: String,
    /// Probe services for product and version (`nmap -sV`).
    #[serde(default)]
    pub service_version: bool,
}

fn agent() -> String {
    "agent".into()
}
fn default_ports() -> String {
    "1-1024".into()
}

/// What a schedule assesses: each kind has its own history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssessKind {
    Check,
    Scap,
    Scan,
}

impl AssessKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AssessKind::Check => "check",
            AssessKind::Scap => "scap",
            AssessKind::Scan => "scan",
        }
    }
}

impl Schedule {
    /// Parse and check a schedule as agents will read it (the registry refuses anything else).
    pub fn from_value(v: &serde_json::Value) -> Result<Schedule, String> {
        let s: Schedule = serde_path_to_error::deserialize(v.clone()).map_err(|e| {
            let p = e.path().to_string();
            format!("`{p}`: {}", e.inner())
        })?;
        s.check()?;
        Ok(s)
    }

    /// The checks serde cannot make: kind, interval, something to do, ports, scan nodes.
    pub fn check(&self) -> Result<(), String> {
        if self.kind != "Schedule" {
            return Err(format!("`kind` is `{}`, expected `Schedule`", self.kind));
        }
        name_ok(&self.metadata.name).map_err(|e| format!("`metadata.name`: {e}"))?;
        self.every()?;
        if self.kinds().is_empty() {
            return Err(
                "`spec`: nothing to do: give `check: {policy: NAME}`, `scap: {datastream, profile}` and/or `scan: {}`"
                    .into(),
            );
        }
        let problems = vacsine_core::validate::validate_target(&self.spec.target);
        if let Some(p) = problems.first() {
            return Err(format!("`spec.target`: {}", p.message));
        }
        if let Some(c) = &self.spec.check {
            name_ok(&c.policy).map_err(|e| format!("`spec.check.policy`: {e}"))?;
        }
        if let Some(s) = &self.spec.scan {
            vacsine_engine::executor::check_ports(&s.ports)
                .map_err(|e| format!("`spec.scan`: {e}"))?;
            let names = self.node_names();
            for n in &s.nodes {
                if !names.contains(n) {
                    return Err(format!(
                        "`spec.scan.nodes`: `{n}` is not a node of the target (its nodes: {})",
                        names.iter().cloned().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
            let vantage: Vec<&str> = self
                .spec
                .target
                .spec
                .vantage_points
                .iter()
                .map(|v| v.name.value.as_str())
                .collect();
            if s.from != "agent" && !vantage.contains(&s.from.as_str()) {
                return Err(format!(
                    "`spec.scan.from`: `{}` is neither `agent` nor a vantage point of the target ({})",
                    s.from,
                    if vantage.is_empty() {
                        "it declares none".to_string()
                    } else {
                        vantage.join(", ")
                    }
                ));
            }
        }
        Ok(())
    }

    /// The named nodes of the target.
    fn node_names(&self) -> BTreeSet<String> {
        self.spec
            .target
            .spec
            .nodes
            .iter()
            .filter_map(|n| n.name.as_ref().map(|n| n.value.clone()))
            .collect()
    }

    pub fn every(&self) -> Result<Duration, String> {
        let d = vacsine_core::workflow::parse_duration(&self.spec.every)
            .map_err(|e| format!("`spec.every`: {e}"))?;
        if d < MIN_EVERY {
            return Err(format!(
                "`spec.every: {}` is shorter than {}s",
                self.spec.every,
                MIN_EVERY.as_secs()
            ));
        }
        Ok(d)
    }

    pub fn kinds(&self) -> Vec<AssessKind> {
        let mut k = Vec::new();
        if self.spec.check.is_some() {
            k.push(AssessKind::Check);
        }
        if self.spec.scap.is_some() {
            k.push(AssessKind::Scap);
        }
        if self.spec.scan.is_some() {
            k.push(AssessKind::Scan);
        }
        k
    }

    /// Whether site `site` with `labels` is in scope.
    pub fn in_scope(&self, site: &str, labels: &BTreeMap<String, String>) -> bool {
        (self.spec.sites.is_empty() || self.spec.sites.iter().any(|s| s == site))
            && self
                .spec
                .labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A name as the registry keeps it: 1 to 64 letters, digits, `-`, `_` or `.`.
fn name_ok(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: use 1 to 64 letters, digits, `-`, `_` or `.`"
        ))
    }
}

/// Outcomes counted as failing (`error`: the requirement could not be shown to hold).
pub fn is_failing(outcome: &str) -> bool {
    matches!(outcome, "fail" | "error")
}

/// Whether an assessment last made at `last_ms` is due again at `now_ms`.
pub fn due(last_ms: Option<i64>, every: Duration, now_ms: i64) -> bool {
    last_ms.is_none_or(|l| now_ms - l >= every.as_millis() as i64 || now_ms < l)
}

/// What an agent asks its assessor to do (the seam to the drivers, implemented where they
/// are chosen: `vacsine`'s `SiteEnforcer`).
#[derive(Debug, Clone)]
pub enum Assess {
    /// Check `policy` (a pushed `Policy`) on `target`.
    Check {
        policy: Box<vacsine_core::policy::Policy>,
        target: Target,
    },
    /// Evaluate a SCAP profile on `target`.
    Scap { spec: ScapSpec, target: Target },
    /// Scan the nodes of `target`.
    Scan { spec: ScanSpec, target: Target },
}

/// What an assessment found: its results, and for a scan the address of each node scanned.
#[derive(Debug, Clone, Default)]
pub struct Assessed {
    pub items: Vec<Item>,
    pub addresses: BTreeMap<String, String>,
}

/// One result: a requirement (or SCAP rule, or `tcp/PORT` of a scan) on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Item {
    pub node: String,
    /// Requirement id, SCAP rule id, or `tcp/PORT`.
    pub item: String,
    /// `pass`, `fail`, `error`, `not_applicable`…; for a scan `open` or `closed`.
    pub outcome: String,
    /// What was observed (the probe's observation; a scan's service, product and version).
    #[serde(default)]
    pub evidence: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
    /// Framework controls (`anssi-bp28: [R30]`), from the policy's references.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub references: BTreeMap<String, Vec<String>>,
}

/// One assessment made at a site, uploaded from the agent's outbox; kept once by `key`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssessmentUpload {
    /// Idempotency key: `assess/SCHEDULE/KIND/AT_MS`.
    pub key: String,
    pub schedule: String,
    /// The schedule's version that made it.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub version: Option<VersionRef>,
    /// `check`, `scap` or `scan`.
    pub kind: String,
    /// When it was made (ms since the epoch).
    pub at_ms: i64,
    /// Results in the whole assessment, passing (`pass`) and failing (`fail`, `error`; for
    /// a scan: open ports). `items` holds only the results that changed since the agent's
    /// previous assessment of this schedule (all of them the first time).
    pub total: i64,
    pub passing: i64,
    pub failing: i64,
    /// Why it could not be made (then `items` is empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AssessmentAccepted {
    /// False: this key was kept before (nothing changed now).
    pub created: bool,
    /// Results whose outcome changed (kept as new history rows).
    pub changed: usize,
}

/// The idempotency key of an assessment.
pub fn assessment_key(schedule: &str, kind: AssessKind, at_ms: i64) -> String {
    format!("assess/{schedule}/{}/{at_ms}", kind.as_str())
}

fn outcome_of(s: &str) -> vacsine_events::Outcome {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .unwrap_or(vacsine_events::Outcome::Unknown)
}

fn as_check(i: &Item) -> vacsine_events::CheckResult {
    vacsine_events::CheckResult {
        requirement: i.item.clone(),
        node: i.node.clone(),
        outcome: outcome_of(&i.outcome),
        severity: i.severity.as_deref().and_then(Severity::parse),
        title: i.title.clone(),
    }
}

/// `requirement_changed` events: each (requirement, node) that passed in `previous` and
/// fails in `current` (`vacsine_events::drift`), naming the schedule.
pub fn drift_events(
    schedule: &str,
    previous: &[Item],
    current: &[Item],
    at: DateTime<Utc>,
) -> Vec<Event> {
    let p: Vec<_> = previous.iter().map(as_check).collect();
    let c: Vec<_> = current.iter().map(as_check).collect();
    vacsine_events::drift(&p, &c, at)
        .into_iter()
        .map(|mut e| {
            e.field("schedule", schedule);
            e.seal()
        })
        .collect()
}

/// A scan's results compared with the previous scan's: every port open before and not now
/// is added as `closed`; every port open now and not before is a `vulnerability` event (none
/// on the first scan, which is the baseline: `previous` is `None`).
pub fn scan_changes(
    schedule: &str,
    previous: Option<&[Item]>,
    mut current: Vec<Item>,
    addresses: &BTreeMap<String, String>,
    at: DateTime<Utc>,
) -> (Vec<Item>, Vec<Event>) {
    let open = |items: &[Item]| -> BTreeSet<(String, String)> {
        items
            .iter()
            .filter(|i| i.outcome == "open")
            .map(|i| (i.node.clone(), i.item.clone()))
            .collect()
    };
    let now = open(&current);
    let mut events = Vec::new();
    if let Some(prev) = previous {
        let before = open(prev);
        for (node, item) in before.difference(&now) {
            current.push(Item {
                node: node.clone(),
                item: item.clone(),
                outcome: "closed".into(),
                evidence: String::new(),
                title: None,
                severity: None,
                references: BTreeMap::new(),
            });
        }
        for i in current.iter().filter(|i| i.outcome == "open") {
            if before.contains(&(i.node.clone(), i.item.clone())) {
                continue;
            }
            let addr = addresses.get(&i.node).cloned().unwrap_or_default();
            let mut e = Event::new(
                EventKind::Vulnerability,
                "vacsine",
                at,
                Severity::Medium,
                format!(
                    "vacsine scan: new open port {} on {} ({addr}){}",
                    i.item,
                    i.node,
                    if i.evidence.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", i.evidence)
                    }
                ),
            );
            e.node = Some(i.node.clone());
            if let Ok(o) = Observable::parse_ip(&addr) {
                e.observe(o);
            }
            let (proto, port) = i.item.split_once('/').unwrap_or(("tcp", i.item.as_str()));
            e.field("change", "new_open_port");
            e.field("schedule", schedule);
            e.field("protocol", proto);
            e.field("port", port);
            e.field("address", addr.as_str());
            if !i.evidence.is_empty() {
                e.field("service", i.evidence.as_str());
            }
            events.push(e.seal());
        }
    }
    current.sort_by(|a, b| (&a.node, &a.item).cmp(&(&b.node, &b.item)));
    (current, events)
}

/// The items of a scan: one `open` item per open port, on the node whose address it is.
pub fn scan_items(
    open: &[vacsine_engine::executor::OpenPort],
    addresses: &BTreeMap<String, String>,
) -> Vec<Item> {
    let by_addr: BTreeMap<&str, &str> = addresses
        .iter()
        .map(|(n, a)| (a.as_str(), n.as_str()))
        .collect();
    open.iter()
        .map(|p| {
            let evidence = [&p.service, &p.product, &p.version]
                .iter()
                .filter_map(|x| x.as_deref())
                .collect::<Vec<_>>()
                .join(" ");
            Item {
                node: by_addr
                    .get(p.address.as_str())
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| p.address.clone()),
                item: format!("{}/{}", p.protocol, p.port),
                outcome: "open".into(),
                evidence,
                title: None,
                severity: None,
                references: BTreeMap::new(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc(spec_extra: serde_json::Value) -> serde_json::Value {
        let mut spec = json!({
            "every": "15m",
            "target": {"apiVersion": "vacsine.io/v1", "kind": "Target", "metadata": {"name": "edge"},
                "spec": {"driver": "docker", "nodes": [{"name": "web", "container": "c1"}]}},
        });
        for (k, v) in spec_extra.as_object().unwrap() {
            spec[k.as_str()] = v.clone();
        }
        json!({"apiVersion": "vacsine.io/v1", "kind": "Schedule", "metadata": {"name": "s"}, "spec": spec})
    }

    #[test]
    fn a_schedule_is_read_strictly() {
        let s = Schedule::from_value(&doc(json!({"check": {"policy": "p"}, "scan": {}}))).unwrap();
        assert_eq!(s.kinds(), vec![AssessKind::Check, AssessKind::Scan]);
        assert_eq!(s.every().unwrap(), Duration::from_secs(900));
        for (extra, want) in [
            (json!({}), "nothing to do"),
            (
                json!({"check": {"policy": "p"}, "evry": "1m"}),
                "unknown field",
            ),
            (
                json!({"check": {"policy": "p"}, "every": "soon"}),
                "spec.every",
            ),
            (json!({"scan": {"ports": "1-99999"}}), "not a port"),
            (json!({"scan": {"nodes": ["db"]}}), "not a node"),
            (json!({"scan": {"from": "outside"}}), "vantage point"),
            (json!({"check": {"policy": "p", "x": 1}}), "unknown field"),
        ] {
            let e = Schedule::from_value(&doc(extra.clone())).unwrap_err();
            assert!(e.contains(want), "{extra}: {e} (wanted {want})");
        }
    }

    #[test]
    fn scope_is_sites_and_labels() {
        let mut s = Schedule::from_value(&doc(json!({"check": {"policy": "p"}}))).unwrap();
        let none = BTreeMap::new();
        assert!(s.in_scope("a", &none));
        s.spec.sites = vec!["b".into()];
        assert!(!s.in_scope("a", &none));
        assert!(s.in_scope("b", &none));
        s.spec.labels.insert("tier".into(), "edge".into());
        assert!(!s.in_scope("b", &none));
        let l = BTreeMap::from([("tier".to_string(), "edge".to_string())]);
        assert!(s.in_scope("b", &l));
    }

    #[test]
    fn due_after_the_interval() {
        let m = Duration::from_secs(60);
        assert!(due(None, m, 0));
        assert!(!due(Some(1_000), m, 30_000));
        assert!(due(Some(1_000), m, 61_000));
        // A clock set back does not stop the schedule.
        assert!(due(Some(100_000), m, 50_000));
    }

    fn item(node: &str, item: &str, outcome: &str) -> Item {
        Item {
            node: node.into(),
            item: item.into(),
            outcome: outcome.into(),
            evidence: String::new(),
            title: None,
            severity: None,
            references: BTreeMap::new(),
        }
    }

    #[test]
    fn pass_then_fail_is_drift_and_nothing_else_is() {
        let prev = vec![
            item("n", "r1", "pass"),
            item("n", "r2", "fail"),
            item("n", "r3", "pass"),
        ];
        let cur = vec![
            item("n", "r1", "fail"),
            item("n", "r2", "fail"),
            item("n", "r3", "error"),
        ];
        let e = drift_events("s", &prev, &cur, Utc::now());
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, EventKind::RequirementChanged);
        assert_eq!(e[0].fields["requirement"], "r1");
        assert_eq!(e[0].fields["schedule"], "s");
        assert_eq!(e[0].id, e[0].content_id());
    }

    #[test]
    fn a_new_open_port_is_an_event_and_a_gone_one_is_closed() {
        let addrs = BTreeMap::from([("web".to_string(), "10.0.0.2".to_string())]);
        let first = vec![item("web", "tcp/22", "open")];
        let (items, events) = scan_changes("s", None, first.clone(), &addrs, Utc::now());
        assert_eq!(items.len(), 1);
        assert!(events.is_empty(), "the first scan is the baseline");
        let now = vec![item("web", "tcp/8080", "open")];
        let (items, events) = scan_changes("s", Some(&first), now, &addrs, Utc::now());
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].fields["port"], "8080");
        assert_eq!(events[0].kind, EventKind::Vulnerability);
        assert_eq!(events[0].observables.len(), 1);
        let closed: Vec<_> = items.iter().filter(|i| i.outcome == "closed").collect();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].item, "tcp/22");
    }
}

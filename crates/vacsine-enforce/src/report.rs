//! The enforce report and its renderings: human table, JSON, JUnit XML, SARIF 2.1.0.

use crate::check::CheckResult;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use vacsine_core::plan::{PlanItem, Unfixable};
use vacsine_core::policy::{RequirementKind, Severity};
use vacsine_core::record::StepRecord;
use vacsine_core::workflow::Workflow;
use vacsine_core::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Remediated in the sandbox, then on the target, and verified there.
    Verified,
    /// Nothing to do: every applicable requirement already passes.
    Compliant,
    /// The remediation failed its gate in the sandbox; the target was not touched.
    RejectedInSandbox,
    /// The target failed verification; the changes were rolled back.
    RolledBack,
    /// The pipeline could not complete (unfaithful sandbox, nothing fixable, rollback failed…).
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Compliant => "compliant",
            Verdict::RejectedInSandbox => "rejected_in_sandbox",
            Verdict::RolledBack => "rolled_back",
            Verdict::Failed => "failed",
        }
    }
}

/// One requirement on one node across the phases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequirementRow {
    pub id: String,
    pub node: String,
    pub title: String,
    pub severity: Severity,
    pub kind: RequirementKind,
    pub target_before: Outcome,
    pub sandbox_before: Outcome,
    pub sandbox_after: Outcome,
    pub target_after: Outcome,
    /// Evidence of the last phase that checked it.
    pub observed: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseTiming {
    pub name: String,
    pub started_at: String,
    pub duration_ms: u64,
}

/// A step record with the phase it ran in.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhaseStep {
    pub phase: String,
    #[serde(flatten)]
    pub record: StepRecord,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxReport {
    pub id: Option<String>,
    pub faithful: Option<bool>,
    /// Requirements whose outcome differs between target and sandbox before any change.
    pub differences: Vec<String>,
    pub kept: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanReport {
    pub items: Vec<PlanItem>,
    pub unfixable: Vec<Unfixable>,
    pub workflow: Workflow,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    /// Why the verdict is what it is, in one sentence.
    pub summary: String,
    pub policy: String,
    pub target: String,
    pub started_at: String,
    pub duration_ms: u64,
    pub requirements: Vec<RequirementRow>,
    pub plan: Option<PlanReport>,
    pub steps: Vec<PhaseStep>,
    pub phases: Vec<PhaseTiming>,
    pub sandbox: SandboxReport,
}

impl Report {
    /// Exit code, as oscap: 0 verified/compliant with nothing failing, 2 failures remain.
    pub fn exit_code(&self) -> i32 {
        let remaining = self
            .requirements
            .iter()
            .any(|r| final_outcome(r).is_problem());
        match self.verdict {
            Verdict::Verified | Verdict::Compliant if !remaining => 0,
            _ => 2,
        }
    }
}

/// The last outcome known for a row (target after, else before).
pub fn final_outcome(r: &RequirementRow) -> Outcome {
    if r.target_after != Outcome::NotChecked {
        r.target_after
    } else {
        r.target_before
    }
}

fn xml_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

fn mark(o: Outcome) -> &'static str {
    match o {
        Outcome::Pass => "pass",
        Outcome::Fail => "FAIL",
        Outcome::Error => "ERROR",
        Outcome::Unknown => "unknown",
        Outcome::NotApplicable => "n/a",
        Outcome::NotChecked => "-",
        Outcome::Informational => "info",
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Human rendering of `vacsine check`.
pub fn check_human(results: &[CheckResult]) -> String {
    let mut rows = vec![vec![
        "REQUIREMENT".to_string(),
        "NODE".into(),
        "OUTCOME".into(),
        "OBSERVED".into(),
    ]];
    for r in results {
        rows.push(vec![
            r.requirement.clone(),
            r.node.clone(),
            mark(r.outcome).into(),
            r.observed.clone(),
        ]);
    }
    let mut out = table(&rows);
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let _ = writeln!(
        out,
        "\n{} checks: {} pass, {} fail, {} error, {} not applicable",
        results.len(),
        count(Outcome::Pass),
        count(Outcome::Fail),
        count(Outcome::Error) + count(Outcome::Unknown),
        count(Outcome::NotApplicable)
    );
    for r in results.iter().filter(|r| r.outcome.is_problem()) {
        let _ = writeln!(out, "  {} on {}: {}", r.requirement, r.node, r.message);
    }
    out
}

/// `vacsine check --format json`.
pub fn check_json(results: &[CheckResult]) -> serde_json::Value {
    serde_json::json!({ "results": results })
}

/// Human rendering of an enforce report.
pub fn enforce_human(r: &Report) -> String {
    let mut out = String::new();
    let mut rows = vec![vec![
        "REQUIREMENT".to_string(),
        "NODE".into(),
        "BEFORE".into(),
        "SANDBOX".into(),
        "AFTER".into(),
        "OBSERVED".into(),
    ]];
    for q in r
        .requirements
        .iter()
        .filter(|q| q.target_before != Outcome::NotApplicable)
    {
        rows.push(vec![
            q.id.clone(),
            q.node.clone(),
            mark(q.target_before).into(),
            mark(q.sandbox_after).into(),
            mark(q.target_after).into(),
            q.observed.clone(),
        ]);
    }
    out.push_str(&table(&rows));
    let na = r
        .requirements
        .iter()
        .filter(|q| q.target_before == Outcome::NotApplicable)
        .count();
    if na > 0 {
        let _ = writeln!(
            out,
            "({na} not-applicable requirement/node pairs hidden; see --format json)"
        );
    }
    if let Some(p) = &r.plan {
        if !p.items.is_empty() {
            let _ = writeln!(out, "\nPlan ({} fixes):", p.items.len());
            for i in &p.items {
                let _ = writeln!(
                    out,
                    "  + {} on {} → fixes {} (disruption {})",
                    i.workflow,
                    i.node,
                    i.requirements.join(", "),
                    i.disruption
                );
            }
        }
        for u in &p.unfixable {
            let _ = writeln!(out, "  ! {} on {}: {}", u.requirement, u.node, u.reason);
        }
    }
    let failed: Vec<&PhaseStep> = r
        .steps
        .iter()
        .filter(|s| !s.record.status.is_ok())
        .collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "\nSteps that did not succeed:");
        for s in failed {
            let _ = writeln!(
                out,
                "  [{}] {} on {}: {}{}",
                s.phase,
                s.record.step_id,
                s.record.node.as_deref().unwrap_or("-"),
                s.record.status,
                s.record
                    .error
                    .as_deref()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default()
            );
        }
    }
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| format!("{} {:.1}s", p.name, p.duration_ms as f64 / 1000.0))
        .collect();
    let _ = writeln!(out, "\nPhases: {}", phases.join(", "));
    if let Some(id) = &r.sandbox.id {
        let _ = writeln!(
            out,
            "Sandbox {id}: {}{}",
            match r.sandbox.faithful {
                Some(true) => "faithful",
                Some(false) => "NOT faithful",
                None => "not compared",
            },
            if r.sandbox.kept {
                " (kept)"
            } else {
                " (removed)"
            }
        );
    }
    let _ = writeln!(
        out,
        "\nVerdict: {} — {} ({:.1}s)",
        r.verdict.as_str(),
        r.summary,
        r.duration_ms as f64 / 1000.0
    );
    out
}

struct Case {
    name: String,
    class: String,
    outcome: Outcome,
    message: String,
}

fn junit(suite: &str, cases: &[Case], time_s: f64) -> String {
    let failures = cases.iter().filter(|c| c.outcome == Outcome::Fail).count();
    let errors = cases
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Error | Outcome::Unknown))
        .count();
    let skipped = cases
        .iter()
        .filter(|c| !c.outcome.is_problem() && c.outcome != Outcome::Pass)
        .count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites><testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{time_s:.3}\">",
        xml_escape(suite),
        cases.len()
    );
    for c in cases {
        let _ = write!(
            out,
            "  <testcase classname=\"{}\" name=\"{}\">",
            xml_escape(&c.class),
            xml_escape(&c.name)
        );
        match c.outcome {
            Outcome::Pass => {}
            Outcome::Fail => {
                let _ = write!(out, "<failure message=\"{}\"/>", xml_escape(&c.message));
            }
            Outcome::Error | Outcome::Unknown => {
                let _ = write!(out, "<error message=\"{}\"/>", xml_escape(&c.message));
            }
            o => {
                let _ = write!(out, "<skipped message=\"{}\"/>", o.as_str());
            }
        }
        out.push_str("</testcase>\n");
    }
    out.push_str("</testsuite></testsuites>\n");
    out
}

pub fn check_junit(policy: &str, results: &[CheckResult]) -> String {
    let cases: Vec<Case> = results
        .iter()
        .map(|r| Case {
            name: format!("{} on {}", r.requirement, r.node),
            class: policy.to_string(),
            outcome: r.outcome,
            message: r.message.clone(),
        })
        .collect();
    junit(policy, &cases, 0.0)
}

pub fn enforce_junit(r: &Report) -> String {
    let cases: Vec<Case> = r
        .requirements
        .iter()
        .map(|q| Case {
            name: format!("{} on {}", q.id, q.node),
            class: r.policy.clone(),
            outcome: final_outcome(q),
            message: q.message.clone(),
        })
        .collect();
    junit(
        &format!("{} on {}", r.policy, r.target),
        &cases,
        r.duration_ms as f64 / 1000.0,
    )
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Info | Severity::Low => "note",
        Severity::Medium => "warning",
        Severity::High | Severity::Critical => "error",
    }
}

/// SARIF 2.1.0: one result per requirement/node that is not passing.
pub fn sarif(
    policy_file: &str,
    rows: &[(String, String, String, Severity, Outcome, String)],
) -> serde_json::Value {
    let mut rules: Vec<serde_json::Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut results = Vec::new();
    for (id, node, title, sev, outcome, message) in rows {
        if seen.insert(id.clone()) {
            rules.push(serde_json::json!({"id": id, "shortDescription": {"text": title}, "properties": {"severity": sev.as_str()}}));
        }
        if !outcome.is_problem() {
            continue;
        }
        results.push(serde_json::json!({
            "ruleId": id,
            "level": if *outcome == Outcome::Fail { sarif_level(*sev) } else { "warning" },
            "message": {"text": format!("{title} — node {node}: {outcome}: {message}")},
            "locations": [{"physicalLocation": {"artifactLocation": {"uri": policy_file}}, "logicalLocations": [{"name": node, "kind": "node"}]}],
            "properties": {"node": node, "outcome": outcome.as_str()}
        }));
    }
    serde_json::json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "vacsine", "version": env!("CARGO_PKG_VERSION"), "rules": rules}}, "results": results}]
    })
}

pub fn check_sarif(policy_file: &str, results: &[CheckResult]) -> serde_json::Value {
    let rows: Vec<_> = results
        .iter()
        .map(|r| {
            (
                r.requirement.clone(),
                r.node.clone(),
                r.title.clone(),
                r.severity,
                r.outcome,
                r.message.clone(),
            )
        })
        .collect();
    sarif(policy_file, &rows)
}

pub fn enforce_sarif(policy_file: &str, r: &Report) -> serde_json::Value {
    let rows: Vec<_> = r
        .requirements
        .iter()
        .map(|q| {
            (
                q.id.clone(),
                q.node.clone(),
                q.title.clone(),
                q.severity,
                final_outcome(q),
                q.message.clone(),
            )
        })
        .collect();
    sarif(policy_file, &rows)
}

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
    /// Remediated in the sandbox, then on the target, verified there, and nothing fails.
    Verified,
    /// Nothing to do: every applicable requirement already passes.
    Compliant,
    /// The pipeline ran its course but requirements still fail that it cannot fix (no fix in
    /// the policy, or a check in error); every fix it could prove was applied and verified.
    NonCompliant,
    /// Some fixes were rejected in the sandbox and held back; the others were proven again on
    /// a fresh sandbox without them, applied to the target and verified there. The report
    /// names each fix held back, its requirements, node and why (`plan.held_back`). Exit 2.
    PartiallyVerified,
    /// The remediation failed its gate in the sandbox; the target was not touched.
    RejectedInSandbox,
    /// The target failed verification; the changes were rolled back.
    RolledBack,
    /// The pipeline stopped before remediating (unfaithful sandbox, availability guard failing
    /// before any change) or could not complete its rollback.
    Failed,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Compliant => "compliant",
            Verdict::NonCompliant => "non_compliant",
            Verdict::PartiallyVerified => "partially_verified",
            Verdict::RejectedInSandbox => "rejected_in_sandbox",
            Verdict::RolledBack => "rolled_back",
            Verdict::Failed => "failed",
        }
    }
}

/// How far the pipeline went, and why it stopped there: with the final outcome of every
/// requirement, this decides the verdict ([`decide`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Course {
    /// Nothing failed before: no remediation.
    NothingToFix,
    /// Requirements fail, but the plan has no fix for any of them.
    NothingFixable,
    /// Availability guards failed before any change (and `--force` was not given).
    GuardsDown(Vec<String>),
    /// The sandbox did not become faithful to the target before the deadline.
    NotFaithful(Vec<String>),
    /// The remediation failed in the sandbox; the target was not touched.
    RejectedInSandbox(String),
    /// The remediation was applied to the target and passed its verification.
    Applied { fixes: usize },
    /// Fixes rejected in the sandbox were held back (`PlanReport::held_back`); the others
    /// were proven again without them, applied to the target and passed its verification.
    PartiallyApplied { fixes: usize },
    /// Target verification failed; the changes were rolled back.
    RolledBack(String),
    /// Target verification failed and the rollback did not complete.
    RollbackIncomplete(String),
}

/// A requirement that still fails at the end of an enforce, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remaining {
    pub requirement: String,
    pub node: String,
    pub outcome: Outcome,
    /// Why it was not remediated (no fix, fix rejected, rolled back…).
    pub reason: String,
    /// The evaluation message of its last check.
    pub message: String,
}

impl std::fmt::Display for Remaining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {} ({}: {}; {})",
            self.requirement, self.node, self.outcome, self.reason, self.message
        )
    }
}

/// Why a requirement that still fails was not remediated (pure).
fn reason(course: &Course, row: &RequirementRow, plan: Option<&PlanReport>) -> String {
    if row.kind == RequirementKind::Availability {
        return if row.target_before.is_problem() {
            "availability guard failing before any change".into()
        } else {
            "availability guard broken by the remediation".into()
        };
    }
    let item = plan.and_then(|p| {
        p.items
            .iter()
            .find(|i| i.node == row.node && i.requirements.contains(&row.id))
    });
    if let Some(u) = plan.and_then(|p| {
        p.unfixable
            .iter()
            .find(|u| u.node == row.node && u.requirement == row.id)
    }) {
        return if u.reason.starts_with("no fix") {
            u.reason.clone()
        } else {
            format!("no fix: {}", u.reason)
        };
    }
    let Some(item) = item else {
        return if row.target_before.is_problem() {
            "no fix in the plan".into()
        } else {
            format!("regression: {} before", row.target_before)
        };
    };
    let fix = &item.workflow;
    // A fix held back in the sandbox never reached the target, whatever happened to the
    // others (a rejection of the whole remediation keeps its own words).
    if !matches!(course, Course::RejectedInSandbox(_)) {
        if let Some(h) = plan.and_then(|p| {
            p.held_back
                .iter()
                .find(|h| h.node == row.node && h.requirements.contains(&row.id))
        }) {
            return format!(
                "fix {} held back: rejected in the sandbox ({}); the target was not changed by it",
                h.workflow, h.reason
            );
        }
    }
    match course {
        Course::NothingToFix | Course::NothingFixable => "no fix in the plan".into(),
        Course::GuardsDown(_) => {
            format!("fix {fix} not attempted: an availability guard failed before any change")
        }
        Course::NotFaithful(_) => {
            format!("fix {fix} not attempted: the sandbox is not faithful to the target")
        }
        Course::RejectedInSandbox(_) if row.sandbox_after.is_problem() => format!(
            "fix {fix} rejected in the sandbox: it did not make the requirement pass there ({} after it ran)",
            row.sandbox_after
        ),
        Course::RejectedInSandbox(_) => format!("fix {fix} rejected in the sandbox"),
        Course::Applied { .. } | Course::PartiallyApplied { .. } => {
            format!("fix {fix} applied but it did not make it pass")
        }
        Course::RolledBack(_) => {
            format!("fix {fix} rolled back after the target verification failed")
        }
        Course::RollbackIncomplete(_) => {
            format!("fix {fix} applied, verification failed and the rollback did not complete")
        }
    }
}

/// The verdict, its one-paragraph summary and the requirements still failing: a pure function
/// of how far the pipeline went and the final outcome of every requirement. The same end state
/// always gives the same verdict (and [`Report::exit_code`]); every requirement still failing
/// is named with its reason.
pub fn decide(
    course: &Course,
    rows: &[RequirementRow],
    plan: Option<&PlanReport>,
) -> (Verdict, String, Vec<Remaining>) {
    let remaining: Vec<Remaining> = rows
        .iter()
        .filter(|r| final_outcome(r).is_problem())
        .map(|r| Remaining {
            requirement: r.id.clone(),
            node: r.node.clone(),
            outcome: final_outcome(r),
            reason: reason(course, r, plan),
            message: r.message.clone(),
        })
        .collect();
    let (verdict, head) = match course {
        Course::NothingToFix | Course::NothingFixable if remaining.is_empty() => (
            Verdict::Compliant,
            "every applicable requirement passes".to_string(),
        ),
        Course::Applied { fixes } if remaining.is_empty() => (
            Verdict::Verified,
            format!("{fixes} fixes verified in the sandbox, then on the target"),
        ),
        Course::NothingToFix | Course::NothingFixable => (
            Verdict::NonCompliant,
            "nothing the policy can fix".to_string(),
        ),
        Course::PartiallyApplied { fixes } => {
            let held: Vec<String> = plan
                .map(|p| p.held_back.iter().map(|h| h.to_string()).collect())
                .unwrap_or_default();
            (
                Verdict::PartiallyVerified,
                format!(
                    "{fixes} fixes verified in the sandbox, then on the target; {} held back (rejected in the sandbox, not applied): {}",
                    held.len(),
                    held.join("; ")
                ),
            )
        }
        Course::Applied { fixes } => (
            Verdict::NonCompliant,
            format!("{fixes} fixes verified in the sandbox, then on the target"),
        ),
        Course::GuardsDown(g) => (
            Verdict::Failed,
            format!(
                "availability guards fail before any change ({}): the site is not healthy, nothing was changed; repair it first, or use --force",
                g.join("; ")
            ),
        ),
        Course::NotFaithful(d) => (
            Verdict::Failed,
            format!(
                "the sandbox is not faithful to the target ({}); nothing was changed; use --force to go on anyway",
                d.join("; ")
            ),
        ),
        Course::RejectedInSandbox(why) => (
            Verdict::RejectedInSandbox,
            format!("{why}; the target was not touched"),
        ),
        Course::RolledBack(why) => (
            Verdict::RolledBack,
            format!("target verification failed ({why}); the changes were rolled back"),
        ),
        Course::RollbackIncomplete(why) => (
            Verdict::Failed,
            format!("target verification failed and the rollback did not complete ({why}): inspect the target"),
        ),
    };
    let summary = if remaining.is_empty() {
        head
    } else {
        let list: Vec<String> = remaining.iter().map(|r| r.to_string()).collect();
        format!(
            "{head}; {} still failing: {}",
            remaining.len(),
            list.join("; ")
        )
    };
    (verdict, summary, remaining)
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
    /// How many checks of the sandbox it took to decide fidelity (it is re-checked with
    /// backoff until it agrees with the target or the deadline passes).
    #[serde(default)]
    pub fidelity_checks: u32,
    /// How many checks of the sandbox it took, after its clones were restarted, to judge
    /// which fixes persist (0: not measured).
    #[serde(default)]
    pub restart_checks: u32,
    pub kept: bool,
}

/// Whether a fix of the plan survives a restart of its sandbox clone: after the idempotence
/// check the pipeline restarts every clone and checks again. A fix is persistent when every
/// requirement it targets still passes after the restart; nft tables and runtime sysctls live
/// only in the running node and are lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FixPersistence {
    pub workflow: String,
    pub node: String,
    /// The requirements the fix targets on `node`.
    #[serde(default)]
    pub requirements: Vec<String>,
    pub persistent: bool,
    /// The targeted requirements that did not survive the restart, each with its outcome and
    /// observation after the restart.
    #[serde(default)]
    pub lost: Vec<String>,
}

impl std::fmt::Display for FixPersistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.persistent {
            write!(f, "{} on {}: persistent", self.workflow, self.node)
        } else {
            write!(
                f,
                "{} on {}: NOT persistent ({})",
                self.workflow,
                self.node,
                self.lost.join("; ")
            )
        }
    }
}

/// The target's availability during the whole enforce: every availability guard probed on
/// the target in a loop (from its vantage point, with the same check code as the pipeline)
/// from the moment the target is resolved until the report. The verdict does not depend on
/// it; it measures what the pipeline cost the service (goal: 0 failed probes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityReport {
    /// Pause between the starts of two probes of one guard, in milliseconds.
    pub interval_ms: u64,
    /// Deadline of one probe (besides the check's own timeout), in milliseconds.
    pub probe_timeout_ms: u64,
    /// How long the guards were watched, in milliseconds.
    pub duration_ms: u64,
    /// One entry per availability guard and node, in policy order.
    pub guards: Vec<GuardAvailability>,
}

/// How one availability guard fared on one node of the target during the enforce.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GuardAvailability {
    pub requirement: String,
    pub node: String,
    /// Probes made (a probe still running when the enforce ended is not counted).
    pub probes: u32,
    /// Probes whose outcome was a problem (fail, error, unknown) or that did not answer in
    /// time.
    pub failed: u32,
    /// The longest outage, in milliseconds: from the start of the first failed probe of a
    /// series to the start of the next passing probe (or to the end of the watch).
    pub longest_outage_ms: u64,
    /// Probes and failures per phase of the pipeline (phases in the order they ran; time
    /// between two phases is `after <phase>`).
    #[serde(default)]
    pub phases: Vec<PhaseAvailability>,
    /// What the last failed probe observed (evidence), if one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
}

/// Probes of one guard during one phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseAvailability {
    pub phase: String,
    pub probes: u32,
    pub failed: u32,
}

impl std::fmt::Display for GuardAvailability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {}: {} probes, {} failed, longest outage {} ms",
            self.requirement, self.node, self.probes, self.failed, self.longest_outage_ms
        )?;
        let bad: Vec<String> = self
            .phases
            .iter()
            .filter(|p| p.failed > 0)
            .map(|p| format!("{} {}/{}", p.phase, p.failed, p.probes))
            .collect();
        if !bad.is_empty() {
            write!(f, " (failed during: {})", bad.join(", "))?;
        }
        if let Some(l) = &self.last_failure {
            write!(f, "; last failure: {l}")?;
        }
        Ok(())
    }
}

/// A fix of the plan rejected in the sandbox and held back: it was not applied to the
/// target, while the fixes proven without it were (verdict `partially_verified`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldBack {
    /// Its step in the plan's workflow.
    pub step: String,
    pub workflow: String,
    pub node: String,
    /// The requirements it was to fix on `node`.
    pub requirements: Vec<String>,
    /// Why the sandbox rejected it.
    pub reason: String,
}

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on {} for {} ({})",
            self.workflow,
            self.node,
            self.requirements.join(", "),
            self.reason
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlanReport {
    /// Every fix the plan chose (held back or not).
    pub items: Vec<PlanItem>,
    pub unfixable: Vec<Unfixable>,
    /// The remediation workflow of the plan, as first proven in the sandbox.
    pub workflow: Workflow,
    /// Fixes rejected in the sandbox and held back (not applied to the target); the others
    /// were proven again without them. Empty when nothing was held back.
    #[serde(default)]
    pub held_back: Vec<HeldBack>,
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
    /// Requirements still failing at the end, each with why (see [`decide`]).
    #[serde(default)]
    pub remaining: Vec<Remaining>,
    pub plan: Option<PlanReport>,
    pub steps: Vec<PhaseStep>,
    pub phases: Vec<PhaseTiming>,
    pub sandbox: SandboxReport,
    /// Each fix of the plan and whether it survived a restart of its sandbox clone (empty
    /// when the pipeline stopped before measuring it).
    #[serde(default)]
    pub fixes: Vec<FixPersistence>,
    /// What the verdict does not say but the user should know (e.g. a fix that does not
    /// survive a restart, without `--require-persistent`).
    #[serde(default)]
    pub warnings: Vec<String>,
    /// The target's availability guards, probed in a loop during the whole enforce.
    #[serde(default)]
    pub availability: AvailabilityReport,
}

impl Report {
    /// Exit code, as oscap: 0 only when nothing fails at the end (verified or compliant),
    /// else 2.
    pub fn exit_code(&self) -> i32 {
        exit_code(self.verdict, &self.requirements)
    }
}

/// Exit code of an end state: 0 only when the verdict is `verified`/`compliant` and no
/// requirement fails at the end, else 2.
pub fn exit_code(verdict: Verdict, rows: &[RequirementRow]) -> i32 {
    let failing = rows.iter().any(|r| final_outcome(r).is_problem());
    match verdict {
        Verdict::Verified | Verdict::Compliant if !failing => 0,
        _ => 2,
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
                let held = p
                    .held_back
                    .iter()
                    .find(|h| h.step == i.step && h.node == i.node);
                let _ = writeln!(
                    out,
                    "  {} {} on {} → fixes {} (disruption {}){}",
                    if held.is_some() { "-" } else { "+" },
                    i.workflow,
                    i.node,
                    i.requirements.join(", "),
                    i.disruption,
                    held.map(|h| format!(" — HELD BACK: {}", h.reason))
                        .unwrap_or_default()
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
    if !r.fixes.is_empty() {
        let _ = writeln!(
            out,
            "\nPersistence (sandbox clones restarted, then checked again):"
        );
        for x in &r.fixes {
            let _ = writeln!(out, "  {} {x}", if x.persistent { "✓" } else { "✗" });
        }
    }
    for w in &r.warnings {
        let _ = writeln!(out, "Warning: {w}");
    }
    if !r.availability.guards.is_empty() {
        let _ = writeln!(
            out,
            "\nAvailability of the target during enforce (guards probed every {} ms for {:.1}s):",
            r.availability.interval_ms,
            r.availability.duration_ms as f64 / 1000.0
        );
        for g in &r.availability.guards {
            let _ = writeln!(out, "  {} {g}", if g.failed == 0 { "✓" } else { "✗" });
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use vacsine_core::plan::Unfixable;
    use vacsine_core::policy::{Disruption, Strategy};
    use Outcome::{Error, Fail, NotChecked as NC, Pass};

    /// (id, kind, before, after) → a row on node `n`.
    fn row(id: &str, kind: RequirementKind, before: Outcome, after: Outcome) -> RequirementRow {
        RequirementRow {
            id: id.into(),
            node: "n".into(),
            title: id.into(),
            severity: Severity::High,
            kind,
            target_before: before,
            sandbox_before: NC,
            sandbox_after: NC,
            target_after: after,
            observed: String::new(),
            message: format!("{id} message"),
        }
    }
    fn sec(id: &str, before: Outcome, after: Outcome) -> RequirementRow {
        row(id, RequirementKind::Security, before, after)
    }
    /// A plan fixing `fixed` and unable to fix `unfixable` (no fix declared).
    fn plan(fixed: &[&str], unfixable: &[&str]) -> PlanReport {
        PlanReport {
            items: fixed
                .iter()
                .map(|r| PlanItem {
                    step: format!("fix-{r}"),
                    requirements: vec![r.to_string()],
                    node: "n".into(),
                    workflow: format!("wf-{r}"),
                    inputs: Default::default(),
                    strategy: Strategy::Configure,
                    disruption: Disruption::Low,
                    reboot: false,
                })
                .collect(),
            unfixable: unfixable
                .iter()
                .map(|r| Unfixable {
                    requirement: r.to_string(),
                    node: "n".into(),
                    reason: "the requirement declares no fix".into(),
                })
                .collect(),
            workflow: serde_json::from_value(serde_json::json!({
                "apiVersion": "vacsine.io/v1", "kind": "Workflow",
                "metadata": {"name": "plan"}, "spec": {"steps": []}
            }))
            .unwrap(),
            held_back: Vec::new(),
        }
    }
    /// `plan(fixed, unfixable)` with the fixes of `held` held back for `why`.
    fn plan_held(fixed: &[&str], unfixable: &[&str], held: &[(&str, &str)]) -> PlanReport {
        let mut p = plan(fixed, unfixable);
        p.held_back = held
            .iter()
            .map(|(r, why)| HeldBack {
                step: format!("fix-{r}"),
                workflow: format!("wf-{r}"),
                node: "n".into(),
                requirements: vec![r.to_string()],
                reason: why.to_string(),
            })
            .collect();
        p
    }

    /// `check(course, rows, plan, verdict, exit code, fragments the summary must contain)`.
    fn check(
        course: Course,
        rows: &[RequirementRow],
        plan: &PlanReport,
        verdict: Verdict,
        exit: i32,
        says: &[&str],
    ) {
        let (v, summary, remaining) = decide(&course, rows, Some(plan));
        assert_eq!(v, verdict, "{course:?}: {summary}");
        assert_eq!(exit_code(v, rows), exit, "{course:?}: {summary}");
        for s in says {
            assert!(summary.contains(s), "{course:?}: `{s}` not in: {summary}");
        }
        // Every requirement still failing is named in the summary and listed.
        for r in rows.iter().filter(|r| final_outcome(r).is_problem()) {
            assert!(summary.contains(&r.id), "{} not named: {summary}", r.id);
            assert!(remaining.iter().any(|x| x.requirement == r.id));
        }
        assert_eq!(
            remaining.len(),
            rows.iter()
                .filter(|r| final_outcome(r).is_problem())
                .count()
        );
    }

    #[test]
    fn verdict_table() {
        let none = plan(&[], &[]);
        // Nothing fails.
        check(
            Course::NothingToFix,
            &[sec("a", Pass, NC)],
            &none,
            Verdict::Compliant,
            0,
            &[],
        );
        // Everything fixed and verified.
        check(
            Course::Applied { fixes: 1 },
            &[sec("a", Fail, Pass), sec("b", Pass, Pass)],
            &plan(&["a"], &[]),
            Verdict::Verified,
            0,
            &["1 fixes verified"],
        );
        // Issue 6: the same end state (two failing requirements without a fix) gives the same
        // verdict and exit code whether fixes were applied on the way or not.
        let end = |a_before| {
            [
                sec("a", a_before, Pass),
                sec("x", Fail, Fail),
                sec("y", Fail, Fail),
            ]
        };
        for (course, p, a_before) in [
            (
                Course::Applied { fixes: 1 },
                plan(&["a"], &["x", "y"]),
                Fail,
            ),
            (Course::NothingFixable, plan(&[], &["x", "y"]), Pass),
        ] {
            let (v, ..) = decide(&course, &end(a_before), Some(&p));
            assert_eq!(v, Verdict::NonCompliant);
            check(
                course,
                &end(a_before),
                &p,
                Verdict::NonCompliant,
                2,
                &[
                    "2 still failing",
                    "x on n (fail: no fix: the requirement declares no fix",
                ],
            );
        }
        // A check in error is failing at the end too.
        check(
            Course::NothingFixable,
            &[sec("e", Error, NC)],
            &none,
            Verdict::NonCompliant,
            2,
            &["e on n (error"],
        );
        // Availability guard down before any change.
        check(
            Course::GuardsDown(vec!["web-up on n is fail".into()]),
            &[
                row("web-up", RequirementKind::Availability, Fail, NC),
                sec("a", Fail, NC),
            ],
            &plan(&["a"], &[]),
            Verdict::Failed,
            2,
            &[
                "availability guards fail before any change",
                "--force",
                "not attempted",
            ],
        );
        check(
            Course::NotFaithful(vec!["a on n: target fail, sandbox pass".into()]),
            &[sec("a", Fail, NC)],
            &plan(&["a"], &[]),
            Verdict::Failed,
            2,
            &["not faithful", "a on n: target fail, sandbox pass"],
        );
        check(
            Course::RejectedInSandbox("the sandbox gate failed: web-up".into()),
            &[sec("a", Fail, NC), sec("x", Fail, NC)],
            &plan(&["a"], &["x"]),
            Verdict::RejectedInSandbox,
            2,
            &[
                "target was not touched",
                "fix wf-a rejected in the sandbox",
                "no fix",
            ],
        );
        check(
            Course::RolledBack("a on n is still fail".into()),
            &[sec("a", Fail, Fail)],
            &plan(&["a"], &[]),
            Verdict::RolledBack,
            2,
            &["rolled back"],
        );
        check(
            Course::RollbackIncomplete("a".into()),
            &[sec("a", Fail, Fail)],
            &plan(&["a"], &[]),
            Verdict::Failed,
            2,
            &["inspect the target"],
        );
        // A regression the gate missed still fails the run.
        check(
            Course::Applied { fixes: 1 },
            &[sec("a", Fail, Pass), sec("b", Pass, Fail)],
            &plan(&["a"], &[]),
            Verdict::NonCompliant,
            2,
            &["b on n (fail: regression"],
        );
    }

    /// Issue 18: a verified subset. Fixes held back in the sandbox give `partially_verified`
    /// (exit 2) once the others are applied and verified; each held-back requirement is named
    /// with its fix and why, whatever happened to the subset afterwards; a whole rejection
    /// keeps today's words.
    #[test]
    fn issue18_partial_verdict_table() {
        let held = plan_held(
            &["a", "s"],
            &[],
            &[("s", "s on n is still fail: its fix did not make it pass")],
        );
        // The subset applied and verified; the held-back one still fails.
        check(
            Course::PartiallyApplied { fixes: 1 },
            &[sec("a", Fail, Pass), sec("s", Fail, Fail)],
            &held,
            Verdict::PartiallyVerified,
            2,
            &[
                "1 fixes verified in the sandbox, then on the target",
                "1 held back (rejected in the sandbox, not applied): wf-s on n for s (s on n is still fail",
                "s on n (fail: fix wf-s held back: rejected in the sandbox (s on n is still fail",
                "the target was not changed by it",
            ],
        );
        // Held back plus a requirement without a fix: both named, still partial.
        let mixed = plan_held(&["a", "s"], &["x"], &[("s", "not idempotent")]);
        check(
            Course::PartiallyApplied { fixes: 1 },
            &[
                sec("a", Fail, Pass),
                sec("s", Fail, Fail),
                sec("x", Fail, Fail),
            ],
            &mixed,
            Verdict::PartiallyVerified,
            2,
            &["2 still failing", "x on n (fail: no fix", "wf-s held back"],
        );
        // The subset failed on the target and was rolled back: the held-back fix is still
        // named as held back, the applied one as rolled back.
        check(
            Course::RolledBack("a on n is still fail".into()),
            &[sec("a", Fail, Fail), sec("s", Fail, Fail)],
            &held,
            Verdict::RolledBack,
            2,
            &["fix wf-a rolled back", "fix wf-s held back"],
        );
        // Every fix rejected (nothing left to prove): today's verdict and words.
        check(
            Course::RejectedInSandbox("the sandbox gate failed: s".into()),
            &[sec("s", Fail, NC)],
            &plan_held(&["s"], &[], &[("s", "gate")]),
            Verdict::RejectedInSandbox,
            2,
            &["target was not touched", "fix wf-s rejected in the sandbox"],
        );
        assert_eq!(Verdict::PartiallyVerified.as_str(), "partially_verified");
        assert_eq!(
            serde_json::to_value(Verdict::PartiallyVerified).unwrap(),
            "partially_verified"
        );
        // The human report marks the held-back fix.
        let rows = [sec("a", Fail, Pass), sec("s", Fail, Fail)];
        let (verdict, summary, remaining) =
            decide(&Course::PartiallyApplied { fixes: 1 }, &rows, Some(&held));
        let rep = Report {
            verdict,
            summary,
            policy: "p".into(),
            target: "t".into(),
            started_at: String::new(),
            duration_ms: 0,
            requirements: rows.to_vec(),
            remaining,
            plan: Some(held.clone()),
            steps: vec![],
            phases: vec![],
            sandbox: SandboxReport::default(),
            fixes: vec![],
            warnings: vec![],
            availability: AvailabilityReport::default(),
        };
        let human = enforce_human(&rep);
        assert!(human.contains("  + wf-a on n"), "{human}");
        assert!(
            human.contains(
                "  - wf-s on n → fixes s (disruption low) — HELD BACK: s on n is still fail"
            ),
            "{human}"
        );
        assert!(human.contains("Verdict: partially_verified"), "{human}");
        assert_eq!(rep.exit_code(), 2);
    }
}

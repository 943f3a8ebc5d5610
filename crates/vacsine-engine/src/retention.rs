//! Retention: which ended runs (and their records) are removed, decided once, here, in plain
//! code over data, for every store that keeps runs: the orchestrator's store (SQLite or
//! PostgreSQL) and an agent's journal. The stores only list their candidates and delete the
//! ids they are given ([`plan`] decides).
//!
//! The rules, in order:
//!
//! 1. Only *ended* runs are candidates: a run queued, running or leased is never listed by a
//!    store, so never removed.
//! 2. A candidate that is *held* (an agent's run whose items are not yet uploaded, or refused
//!    and kept for the operator) is never removed, whatever the limits: nothing is lost. When
//!    held runs alone exceed a limit, the plan says so ([`Plan::over_limit_held`]).
//! 3. The newest [`Policy::keep_last`] ended runs of each group (a site at the orchestrator,
//!    a workflow at an agent) are kept, whatever their age or size: the latest outcome of
//!    everything stays visible.
//! 4. Ended runs older than [`Policy::max_age_ms`] go.
//! 5. Then the oldest go until at most [`Policy::max_runs`] ended runs and
//!    [`Policy::max_bytes`] bytes of them remain.
//!
//! A limit of 0 is no limit.

use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

/// Days of the default age limit.
pub const DEFAULT_KEEP_DAYS: u64 = 30;
/// Ended runs kept at most, by default.
pub const DEFAULT_KEEP_RUNS: u64 = 10_000;
/// MiB of ended runs' data kept at most, by default.
pub const DEFAULT_KEEP_MB: u64 = 256;
/// Newest ended runs of each site (or workflow, at an agent) always kept, by default.
pub const DEFAULT_KEEP_LAST: u64 = 10;
/// How often the orchestrator and the agent apply the policy, by default (seconds).
pub const DEFAULT_EVERY_SECS: u64 = 3600;

const DAY_MS: i64 = 24 * 3600 * 1000;
/// Runs that ended less than this long ago are held: records of a run whose lease was lost
/// may still come, and an agent queues a run's items for upload just after it ends.
pub const GRACE_MS: i64 = 10 * 60 * 1000;

/// What is kept. 0 in a limit: no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Policy {
    /// Ended runs whose end is older than this (ms) are removed.
    pub max_age_ms: i64,
    /// At most this many ended runs are kept.
    pub max_runs: u64,
    /// At most this many bytes of ended runs (their job and records) are kept.
    pub max_bytes: u64,
    /// The newest this many ended runs of each group are always kept.
    pub keep_last: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy::from_flags(
            DEFAULT_KEEP_DAYS,
            DEFAULT_KEEP_RUNS,
            DEFAULT_KEEP_MB,
            DEFAULT_KEEP_LAST,
        )
    }
}

impl Policy {
    /// From the command line's units: days, runs, MiB, runs.
    pub fn from_flags(days: u64, runs: u64, mb: u64, keep_last: u64) -> Self {
        Policy {
            max_age_ms: i64::try_from(days)
                .unwrap_or(i64::MAX)
                .saturating_mul(DAY_MS),
            max_runs: runs,
            max_bytes: mb.saturating_mul(1 << 20),
            keep_last,
        }
    }

    /// One line for logs and `vacsine gc`.
    pub fn describe(&self) -> String {
        let or_none = |v: u64, unit: &str| {
            if v == 0 {
                "no limit".to_string()
            } else {
                format!("{v} {unit}")
            }
        };
        format!(
            "age {}, count {}, size {}, always the newest {} per group",
            or_none((self.max_age_ms / DAY_MS) as u64, "day(s)"),
            or_none(self.max_runs, "run(s)"),
            or_none(self.max_bytes >> 20, "MiB"),
            self.keep_last
        )
    }
}

/// An ended run a store may remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: String,
    /// Site (orchestrator) or workflow (agent): the newest [`Policy::keep_last`] of each
    /// group are kept.
    pub group: String,
    /// When it ended (ms since the epoch).
    pub ended_ms: i64,
    /// Bytes it takes: its job and records as stored.
    pub bytes: u64,
    /// Not to be removed: not yet uploaded, or refused and kept.
    pub held: bool,
}

/// Why a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Age,
    Count,
    Size,
}

/// What [`plan`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Ids to remove, oldest first, with why.
    pub remove: Vec<(String, Reason)>,
    /// Bytes they take.
    pub remove_bytes: u64,
    /// Ended runs and their bytes left after the removal.
    pub kept_runs: u64,
    pub kept_bytes: u64,
    /// Runs held (not uploaded yet, or refused and kept): never removed.
    pub held: u64,
    /// A count or size limit still exceeded once everything removable is gone, because
    /// the rest is held or among the newest per group: nothing is lost, the limit waits.
    pub over_limit_held: bool,
}

impl Plan {
    pub fn ids(&self) -> Vec<String> {
        self.remove.iter().map(|(id, _)| id.clone()).collect()
    }
    pub fn count(&self, r: Reason) -> usize {
        self.remove.iter().filter(|(_, x)| *x == r).count()
    }
}

/// Decide what goes, at `now_ms`, from `candidates` (any order).
pub fn plan(policy: &Policy, candidates: &[Candidate], now_ms: i64) -> Plan {
    let mut c: Vec<&Candidate> = candidates.iter().collect();
    // Oldest first; ties by id so the decision never depends on the store's order.
    c.sort_by(|a, b| a.ended_ms.cmp(&b.ended_ms).then_with(|| a.id.cmp(&b.id)));
    // The newest `keep_last` of each group.
    let mut newest: HashMap<&str, u64> = HashMap::new();
    let mut floor: HashSet<&str> = HashSet::new();
    for x in c.iter().rev() {
        let n = newest.entry(x.group.as_str()).or_default();
        if *n < policy.keep_last {
            *n += 1;
            floor.insert(x.id.as_str());
        }
    }
    let held = |x: &Candidate| x.held || x.ended_ms > now_ms.saturating_sub(GRACE_MS);
    let removable = |x: &Candidate| !held(x) && !floor.contains(x.id.as_str());
    let mut out = Plan::default();
    let mut gone: HashSet<&str> = HashSet::new();
    let mut runs = c.len() as u64;
    let mut bytes: u64 = c.iter().map(|x| x.bytes).sum();
    let take = |x: &Candidate, r: Reason, out: &mut Plan, runs: &mut u64, bytes: &mut u64| {
        out.remove.push((x.id.clone(), r));
        out.remove_bytes += x.bytes;
        *runs -= 1;
        *bytes -= x.bytes;
    };
    if policy.max_age_ms > 0 {
        let cutoff = now_ms.saturating_sub(policy.max_age_ms);
        for x in &c {
            if x.ended_ms < cutoff && removable(x) {
                take(x, Reason::Age, &mut out, &mut runs, &mut bytes);
                gone.insert(x.id.as_str());
            }
        }
    }
    let over = |runs: u64, bytes: u64| {
        (policy.max_runs > 0 && runs > policy.max_runs)
            || (policy.max_bytes > 0 && bytes > policy.max_bytes)
    };
    for x in &c {
        if !over(runs, bytes) {
            break;
        }
        if gone.contains(x.id.as_str()) || !removable(x) {
            continue;
        }
        let r = if policy.max_runs > 0 && runs > policy.max_runs {
            Reason::Count
        } else {
            Reason::Size
        };
        take(x, r, &mut out, &mut runs, &mut bytes);
        gone.insert(x.id.as_str());
    }
    out.kept_runs = runs;
    out.kept_bytes = bytes;
    out.held = c.iter().filter(|x| held(x)).count() as u64;
    out.over_limit_held = over(runs, bytes);
    // Oldest first, whatever the reason.
    let order: HashMap<&str, usize> = c
        .iter()
        .enumerate()
        .map(|(i, x)| (x.id.as_str(), i))
        .collect();
    out.remove
        .sort_by_key(|(id, _)| order.get(id.as_str()).copied().unwrap_or(usize::MAX));
    out
}

/// What a removal did in one store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Removed {
    pub runs: u64,
    pub records: u64,
    /// Bytes the store's file(s) shrank by (SQLite after its vacuum; 0 where the database
    /// reclaims space on its own, as PostgreSQL's autovacuum does).
    pub reclaimed_bytes: u64,
}

// ---- Applying it: when passes run and what one did (shared by the orchestrator's store
// and an agent's data folder; the passes themselves are `vacsine_orch::gc` and
// `vacsine_agent::gc`).

/// When retention runs by itself, and with what policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub policy: Policy,
    /// Between two passes; zero: never by itself (only `vacsine gc`).
    pub every: Duration,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            policy: Policy::default(),
            every: Duration::from_secs(DEFAULT_EVERY_SECS),
        }
    }
}

/// The first pass after a start waits this long (the process settles first).
pub const FIRST_PASS_AFTER: Duration = Duration::from_secs(60);

/// What one pass did (or, dry, would do) to the runs of one store.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunsPart {
    /// Ended runs found.
    pub ended: u64,
    /// Removed (or to remove), by reason.
    pub removed: u64,
    pub by_age: u64,
    pub by_count: u64,
    pub by_size: u64,
    /// Bytes of the runs removed (jobs and records).
    pub removed_bytes: u64,
    /// Records removed with them (0 in a dry run).
    pub removed_records: u64,
    /// Ended runs and their bytes kept.
    pub kept: u64,
    pub kept_bytes: u64,
    /// Runs never removed: not yet uploaded, refused and kept, or ended minutes ago.
    pub held: u64,
    /// A limit is still exceeded because of held runs or the newest per group.
    pub over_limit_held: bool,
    /// Bytes the file(s) shrank by (0 in a dry run, and on PostgreSQL).
    pub reclaimed_bytes: u64,
}

impl RunsPart {
    pub fn from_plan(ended: usize, p: &Plan) -> Self {
        RunsPart {
            ended: ended as u64,
            removed: p.remove.len() as u64,
            by_age: p.count(Reason::Age) as u64,
            by_count: p.count(Reason::Count) as u64,
            by_size: p.count(Reason::Size) as u64,
            removed_bytes: p.remove_bytes,
            kept: p.kept_runs,
            kept_bytes: p.kept_bytes,
            held: p.held,
            over_limit_held: p.over_limit_held,
            ..Default::default()
        }
    }
}

/// `n` bytes for people.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// One line of a pass over runs, for logs and `vacsine gc`.
pub fn runs_line(what: &str, r: &RunsPart, dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut s = format!(
        "{what}: {verb} {} of {} ended run(s) ({} by age, {} by count, {} by size; {}",
        r.removed,
        r.ended,
        r.by_age,
        r.by_count,
        r.by_size,
        human_bytes(r.removed_bytes)
    );
    if !dry_run {
        s.push_str(&format!(
            ", {} record(s); file(s) {} smaller",
            r.removed_records,
            human_bytes(r.reclaimed_bytes)
        ));
    }
    s.push_str(&format!(
        "); kept {} ({}), {} held",
        r.kept,
        human_bytes(r.kept_bytes),
        r.held
    ));
    if r.over_limit_held {
        s.push_str(
            "; still over a limit: the rest is not uploaded yet, or among the newest kept (nothing not uploaded is ever removed)",
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 100 * DAY_MS;

    fn cand(id: &str, group: &str, age_days: i64, bytes: u64, held: bool) -> Candidate {
        Candidate {
            id: id.into(),
            group: group.into(),
            ended_ms: NOW - age_days * DAY_MS,
            bytes,
            held,
        }
    }

    fn policy(days: u64, runs: u64, bytes: u64, keep_last: u64) -> Policy {
        Policy {
            max_age_ms: days as i64 * DAY_MS,
            max_runs: runs,
            max_bytes: bytes,
            keep_last,
        }
    }

    /// `check(policy, candidates, removed ids with reasons, over_limit_held)`.
    fn check(p: Policy, c: &[Candidate], want: &[(&str, Reason)], over: bool) {
        let got = plan(&p, c, NOW);
        let got_ids: Vec<(&str, Reason)> =
            got.remove.iter().map(|(i, r)| (i.as_str(), *r)).collect();
        assert_eq!(got_ids, want, "policy {p:?}");
        assert_eq!(got.over_limit_held, over, "over_limit_held, policy {p:?}");
        let total: u64 = c.iter().map(|x| x.bytes).sum();
        assert_eq!(got.kept_bytes + got.remove_bytes, total);
        assert_eq!(got.kept_runs as usize + got.remove.len(), c.len());
    }

    use Reason::*;

    #[test]
    fn age_removes_only_runs_ended_before_the_cutoff() {
        let c = [
            cand("old", "s", 40, 1, false),
            cand("edge", "s", 30, 1, false),
            cand("new", "s", 1, 1, false),
        ];
        check(policy(30, 0, 0, 0), &c, &[("old", Age)], false);
        check(policy(0, 0, 0, 0), &c, &[], false);
        check(
            policy(10, 0, 0, 0),
            &c,
            &[("old", Age), ("edge", Age)],
            false,
        );
    }

    #[test]
    fn count_and_size_remove_the_oldest_first() {
        let c = [
            cand("c", "s", 3, 10, false),
            cand("a", "s", 5, 10, false),
            cand("b", "s", 4, 10, false),
        ];
        check(policy(0, 2, 0, 0), &c, &[("a", Count)], false);
        check(policy(0, 0, 15, 0), &c, &[("a", Size), ("b", Size)], false);
        check(policy(0, 2, 15, 0), &c, &[("a", Count), ("b", Size)], false);
        check(policy(0, 1, 0, 0), &c, &[("a", Count), ("b", Count)], false);
    }

    #[test]
    fn held_runs_are_never_removed_and_the_limit_waits() {
        let c = [
            cand("held-old", "s", 90, 100, true),
            cand("a", "s", 50, 10, false),
            cand("b", "s", 1, 10, false),
        ];
        check(policy(30, 0, 0, 0), &c, &[("a", Age)], false);
        // Size 50: only `held-old` would bring it under; it stays, and the plan says so.
        check(policy(0, 0, 50, 0), &c, &[("a", Size), ("b", Size)], true);
        let p = plan(&policy(0, 0, 50, 0), &c, NOW);
        assert_eq!((p.held, p.kept_runs, p.kept_bytes), (1, 1, 100));
    }

    #[test]
    fn the_newest_of_each_group_are_kept_whatever_their_age() {
        let c = [
            cand("s1-old", "s1", 90, 1, false),
            cand("s1-new", "s1", 80, 1, false),
            cand("s2-only", "s2", 70, 1, false),
            cand("s3-a", "s3", 60, 1, false),
        ];
        check(policy(30, 0, 0, 1), &c, &[("s1-old", Age)], false);
        check(
            policy(30, 0, 0, 0),
            &c,
            &[
                ("s1-old", Age),
                ("s1-new", Age),
                ("s2-only", Age),
                ("s3-a", Age),
            ],
            false,
        );
        // Count 1 with one kept per group: three remain, over the limit, said.
        check(policy(0, 1, 0, 1), &c, &[("s1-old", Count)], true);
    }

    #[test]
    fn runs_ended_minutes_ago_are_held() {
        let mut c = vec![cand("a", "s", 5, 1, false), cand("b", "s", 5, 1, false)];
        c[1].ended_ms = NOW - GRACE_MS + 1;
        check(policy(0, 1, 0, 0), &c, &[("a", Count)], false);
        c[0].ended_ms = NOW - 1;
        check(policy(0, 1, 0, 0), &c, &[], true);
        assert_eq!(plan(&policy(0, 1, 0, 0), &c, NOW).held, 2);
    }

    #[test]
    fn nothing_to_do_on_an_empty_store() {
        check(Policy::default(), &[], &[], false);
    }

    #[test]
    fn the_order_given_does_not_change_the_plan() {
        let mut c: Vec<Candidate> = (0..50)
            .map(|i| {
                cand(
                    &format!("r{i:02}"),
                    &format!("g{}", i % 3),
                    i % 7,
                    3,
                    i % 11 == 0,
                )
            })
            .collect();
        let p = policy(5, 20, 40, 2);
        let a = plan(&p, &c, NOW);
        c.reverse();
        let b = plan(&p, &c, NOW);
        assert_eq!(a, b);
    }

    #[test]
    fn flags_are_days_runs_mib() {
        let p = Policy::from_flags(2, 3, 4, 5);
        assert_eq!(p, policy(2, 3, 4 << 20, 5));
        assert!(Policy::from_flags(u64::MAX, 0, u64::MAX, 0).max_age_ms > 0);
        assert_eq!(
            policy(0, 0, 0, 3).describe(),
            "age no limit, count no limit, size no limit, always the newest 3 per group"
        );
    }
}

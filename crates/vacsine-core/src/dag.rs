//! DAG decisions over workflow steps: cycle detection, topological order, readiness.

use crate::workflow::Step;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Kahn's algorithm over step ids, ready steps taken in declaration order. Returns the
/// order, or the ids left in a cycle. O((steps + needs) · log steps).
pub fn topo_order(steps: &[Step]) -> Result<Vec<String>, Vec<String>> {
    let mut sched = Scheduler::new(steps);
    let mut order = Vec::with_capacity(steps.len());
    while let Some(i) = sched.next_ready() {
        order.push(steps[i].id.value.clone());
        sched.finish(i, true);
    }
    if order.len() == steps.len() {
        Ok(order)
    } else {
        let done: BTreeSet<&str> = order.iter().map(String::as_str).collect();
        let left: BTreeSet<&str> = steps
            .iter()
            .map(|s| s.id.value.as_str())
            .filter(|i| !done.contains(i))
            .collect();
        Err(left.into_iter().map(str::to_string).collect())
    }
}

/// Scheduling state of one step, as the scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Running,
    /// Finished and dependants may run.
    Ok,
    /// Finished unsuccessfully: dependants are skipped.
    Blocked,
}

/// What to do next: steps ready to start (in declaration order) and steps whose dependencies
/// failed (to be marked skipped). Pure decision over the current states.
pub fn ready(steps: &[Step], states: &BTreeMap<String, State>) -> (Vec<String>, Vec<String>) {
    let mut start = Vec::new();
    let mut skip = Vec::new();
    for s in steps {
        if states.get(s.id.value.as_str()) != Some(&State::Pending) {
            continue;
        }
        let deps: Vec<State> = s
            .needs
            .iter()
            .map(|n| states.get(n.value.as_str()).copied().unwrap_or(State::Ok))
            .collect();
        if deps.contains(&State::Blocked) {
            skip.push(s.id.value.clone());
        } else if deps.iter().all(|d| *d == State::Ok) {
            start.push(s.id.value.clone());
        }
    }
    (start, skip)
}

/// Incremental readiness over a fixed list of steps: each step's needs are counted down as
/// they finish, so scheduling a whole workflow costs O((steps + needs) · log steps) rather
/// than a scan of every step after each completion. Steps are identified by their index in
/// the list; a need naming no step counts as satisfied (validation reports it).
#[derive(Debug, Clone)]
pub struct Scheduler {
    state: Vec<State>,
    /// Needs not finished yet, per step.
    waiting: Vec<usize>,
    /// Whether a need finished unsuccessfully (the step will be skipped).
    blocked: Vec<bool>,
    dependents: Vec<Vec<usize>>,
    ready: BTreeSet<usize>,
    skip: Vec<usize>,
}

impl Scheduler {
    pub fn new(steps: &[Step]) -> Self {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(steps.len());
        for (i, s) in steps.iter().enumerate() {
            index.entry(s.id.value.as_str()).or_insert(i);
        }
        let n = steps.len();
        let mut waiting = vec![0; n];
        let mut dependents = vec![Vec::new(); n];
        for (i, s) in steps.iter().enumerate() {
            let mut seen = BTreeSet::new();
            for need in &s.needs {
                if let Some(&j) = index.get(need.value.as_str()) {
                    if seen.insert(j) {
                        waiting[i] += 1;
                        dependents[j].push(i);
                    }
                }
            }
        }
        let ready = (0..n).filter(|&i| waiting[i] == 0).collect();
        Scheduler {
            state: vec![State::Pending; n],
            waiting,
            blocked: vec![false; n],
            dependents,
            ready,
            skip: Vec::new(),
        }
    }

    pub fn state(&self, i: usize) -> State {
        self.state[i]
    }

    /// The first ready step in declaration order, now `Running`.
    pub fn next_ready(&mut self) -> Option<usize> {
        let i = self.ready.pop_first()?;
        self.state[i] = State::Running;
        Some(i)
    }

    /// Whether a step is ready to start.
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// Steps whose needs did not succeed: the caller records them skipped, then calls
    /// [`Scheduler::finish`] with `ok = false` for each, which may block more.
    pub fn take_skips(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.skip)
    }

    /// A step ended (or was found done on resume): `ok` lets its dependants run.
    pub fn finish(&mut self, i: usize, ok: bool) {
        if matches!(self.state[i], State::Ok | State::Blocked) {
            return;
        }
        self.ready.remove(&i);
        self.state[i] = if ok { State::Ok } else { State::Blocked };
        for k in 0..self.dependents[i].len() {
            let d = self.dependents[i][k];
            if self.state[d] != State::Pending {
                continue;
            }
            if ok {
                self.waiting[d] -= 1;
                if self.waiting[d] == 0 && !self.blocked[d] {
                    self.ready.insert(d);
                }
            } else if !self.blocked[d] {
                self.blocked[d] = true;
                self.ready.remove(&d);
                self.skip.push(d);
            }
        }
    }

    /// Steps still pending (neither started nor finished), in declaration order.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.state.len())
            .filter(|&i| self.state[i] == State::Pending)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doc::Loc;

    fn step(id: &str, needs: &[&str]) -> Step {
        Step {
            id: Loc::new(id.into()),
            name: None,
            uses: Loc::new("command".into()),
            with: Default::default(),
            needs: needs.iter().map(|n| Loc::new(n.to_string())).collect(),
            condition: None,
            retry: None,
            timeout: None,
            continue_on_error: false,
            runs_on: None,
            idempotent: None,
            outputs: Default::default(),
        }
    }

    #[test]
    fn orders_and_detects_cycles() {
        let s = vec![step("c", &["b"]), step("a", &[]), step("b", &["a"])];
        assert_eq!(topo_order(&s).unwrap(), vec!["a", "b", "c"]);
        let s = vec![step("a", &["b"]), step("b", &["a"]), step("c", &[])];
        assert_eq!(topo_order(&s).unwrap_err(), vec!["a", "b"]);
    }

    #[test]
    fn readiness_follows_dependencies() {
        let s = vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &[]),
            step("d", &["c"]),
        ];
        let mut st: BTreeMap<String, State> = ["a", "b", "c", "d"]
            .iter()
            .map(|i| (i.to_string(), State::Pending))
            .collect();
        assert_eq!(ready(&s, &st), (vec!["a".into(), "c".into()], vec![]));
        st.insert("a".into(), State::Ok);
        st.insert("c".into(), State::Blocked);
        assert_eq!(ready(&s, &st), (vec!["b".into()], vec!["d".into()]));
    }

    #[test]
    fn scheduler_counts_needs_down() {
        let s = vec![
            step("a", &[]),
            step("b", &["a"]),
            step("c", &[]),
            step("d", &["c"]),
            step("e", &["b", "d"]),
            step("f", &["nope"]),
        ];
        let mut sc = Scheduler::new(&s);
        assert_eq!(sc.next_ready(), Some(0));
        assert_eq!(sc.next_ready(), Some(2));
        assert_eq!(sc.next_ready(), Some(5), "an unknown need counts as met");
        assert_eq!(sc.next_ready(), None);
        sc.finish(0, true);
        assert_eq!(sc.next_ready(), Some(1));
        sc.finish(2, false);
        assert_eq!(sc.take_skips(), vec![3]);
        sc.finish(3, false);
        assert_eq!(sc.take_skips(), vec![4], "skips propagate");
        sc.finish(4, false);
        sc.finish(1, true);
        assert_eq!(sc.next_ready(), None);
        assert!(sc.pending().is_empty());
    }

    #[test]
    fn topo_order_of_a_long_chain() {
        let ids: Vec<String> = (0..20_000).map(|i| format!("s{i}")).collect();
        let s: Vec<Step> = (0..ids.len())
            .map(|i| {
                if i == 0 {
                    step(&ids[0], &[])
                } else {
                    step(&ids[i], &[ids[i - 1].as_str()])
                }
            })
            .collect();
        let order = topo_order(&s).unwrap();
        assert_eq!(order.len(), 20_000);
        assert_eq!(order[19_999], "s19999");
    }
}

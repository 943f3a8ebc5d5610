//! DAG decisions over workflow steps: cycle detection, topological order, readiness.

use crate::workflow::Step;
use std::collections::{BTreeMap, BTreeSet};

/// Kahn's algorithm over step ids. Returns the order, or the ids left in a cycle.
pub fn topo_order(steps: &[Step]) -> Result<Vec<String>, Vec<String>> {
    let ids: BTreeSet<&str> = steps.iter().map(|s| s.id.value.as_str()).collect();
    let mut indeg: BTreeMap<&str, usize> = ids.iter().map(|i| (*i, 0)).collect();
    let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for s in steps {
        for n in &s.needs {
            if ids.contains(n.value.as_str()) {
                *indeg.entry(s.id.value.as_str()).or_default() += 1;
                out.entry(n.value.as_str())
                    .or_default()
                    .push(s.id.value.as_str());
            }
        }
    }
    // Keep declaration order among ready steps.
    let mut order = Vec::new();
    let mut done: BTreeSet<&str> = BTreeSet::new();
    loop {
        let next = steps
            .iter()
            .map(|s| s.id.value.as_str())
            .find(|id| !done.contains(id) && indeg.get(id) == Some(&0));
        let Some(id) = next else { break };
        done.insert(id);
        order.push(id.to_string());
        for d in out.get(id).into_iter().flatten() {
            if let Some(v) = indeg.get_mut(d) {
                *v -= 1;
            }
        }
    }
    if order.len() == ids.len() {
        Ok(order)
    } else {
        Err(ids
            .into_iter()
            .filter(|i| !done.contains(i))
            .map(str::to_string)
            .collect())
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
}

//! The process groups of steps running in this process, so that a cancelled run can stop
//! them: each step's command leads its own process group (so a terminal's Ctrl-C does not
//! reach it directly), and the engine forwards the stop to every group registered here.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};

fn groups() -> &'static Mutex<BTreeSet<i32>> {
    static G: OnceLock<Mutex<BTreeSet<i32>>> = OnceLock::new();
    G.get_or_init(Default::default)
}

/// Registered while a step's process group lives; unregisters on drop.
#[derive(Debug)]
pub(crate) struct GroupGuard(i32);

/// Register the process group `pgid` of a running step.
pub(crate) fn register(pgid: i32) -> GroupGuard {
    if let Ok(mut g) = groups().lock() {
        g.insert(pgid);
    }
    GroupGuard(pgid)
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Ok(mut g) = groups().lock() {
            g.remove(&self.0);
        }
    }
}

/// Send `sig` to every registered process group; returns how many were signalled.
pub(crate) fn signal_all(sig: Signal) -> usize {
    let pgids: Vec<i32> = groups()
        .lock()
        .map(|g| g.iter().copied().collect())
        .unwrap_or_default();
    pgids
        .into_iter()
        .filter(|&p| p > 1 && killpg(Pid::from_raw(p), sig).is_ok())
        .count()
}

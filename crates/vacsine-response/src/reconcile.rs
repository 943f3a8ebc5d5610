//! Reconcile by diff: what must be added to and deleted from a site's nft sets so that they
//! hold exactly the active bans. Never a flush: an element present and still right is left
//! alone, so there is no window during which a banned address passes.
//!
//! The sets are those of the `nftset` executor: table `inet vacsine_decisions`, `ban4`/`ban6`
//! for hosts, `ban4net`/`ban6net` (interval) for networks, each element with a timeout.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::decision::{Action, Decision, IpNet};

/// The nft table of decisions.
pub const TABLE: &str = "vacsine_decisions";
/// An applied element whose time left is shorter than wanted by more than this is refreshed
/// (deleted and added again, in the same transaction).
pub const REFRESH_SLACK: Duration = Duration::from_secs(2);
/// Elements per statement in a rendered script.
pub const ELEMENTS_PER_STATEMENT: usize = 1000;

/// The set an element lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BanSet {
    Ban4,
    Ban6,
    Ban4Net,
    Ban6Net,
}

impl BanSet {
    pub fn of(net: &IpNet) -> BanSet {
        match (net.is_ipv4(), net.is_host()) {
            (true, true) => BanSet::Ban4,
            (false, true) => BanSet::Ban6,
            (true, false) => BanSet::Ban4Net,
            (false, false) => BanSet::Ban6Net,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BanSet::Ban4 => "ban4",
            BanSet::Ban6 => "ban6",
            BanSet::Ban4Net => "ban4net",
            BanSet::Ban6Net => "ban6net",
        }
    }
}

/// An element as listed from the site's sets: the network and the time it has left
/// (`None`: no timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppliedElement {
    pub net: IpNet,
    pub left: Option<Duration>,
}

/// An element to add: the network and its timeout (whole seconds, at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Element {
    pub net: IpNet,
    pub timeout_secs: Option<u64>,
}

impl Element {
    pub fn set(&self) -> BanSet {
        BanSet::of(&self.net)
    }
}

/// What to change, and only that. `delete` is applied before `add` in the same transaction
/// (a refreshed element appears in both).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub add: Vec<Element>,
    pub delete: Vec<IpNet>,
}

impl Diff {
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.delete.is_empty()
    }
}

/// Remaining time of a ban, rounded up to whole seconds, at least 1; `None` when expired.
pub fn remaining_secs(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<u64> {
    let left = expires_at.signed_duration_since(now);
    let ms = left.num_milliseconds();
    if ms <= 0 {
        return None;
    }
    Some(((ms as u64).div_ceil(1000)).max(1))
}

/// The diff from what is applied to what is desired. Expired decisions are dropped from the
/// desired set; several decisions on one network keep the latest expiry; an applied element
/// already gone by its own timeout (`left` zero) is not deleted (nft has dropped it).
pub fn reconcile(desired: &[Decision], applied: &[AppliedElement], now: DateTime<Utc>) -> Diff {
    // net → timeout wanted (None: no expiry).
    let mut want: BTreeMap<IpNet, Option<u64>> = BTreeMap::new();
    for d in desired {
        let Action::Ban { net } = &d.action else {
            continue;
        };
        let timeout = match d.expires_at {
            Some(t) => match remaining_secs(t, now) {
                Some(s) => Some(s),
                None => continue,
            },
            None => None,
        };
        want.entry(*net)
            .and_modify(|cur| {
                *cur = match (*cur, timeout) {
                    (None, _) | (_, None) => None,
                    (Some(a), Some(b)) => Some(a.max(b)),
                }
            })
            .or_insert(timeout);
    }
    let mut have: BTreeMap<IpNet, Option<Duration>> = BTreeMap::new();
    for a in applied {
        if a.left.is_some_and(|l| l.is_zero()) {
            continue;
        }
        have.insert(a.net, a.left);
    }
    let mut diff = Diff::default();
    for (net, timeout) in &want {
        let element = Element {
            net: *net,
            timeout_secs: *timeout,
        };
        match have.get(net) {
            None => diff.add.push(element),
            Some(left) => {
                let short = match (left, timeout) {
                    (_, None) => left.is_some(),
                    (None, Some(_)) => false,
                    (Some(l), Some(t)) => *l + REFRESH_SLACK < Duration::from_secs(*t),
                };
                if short {
                    diff.delete.push(*net);
                    diff.add.push(element);
                }
            }
        }
    }
    for net in have.keys() {
        if !want.contains_key(net) {
            diff.delete.push(*net);
        }
    }
    diff.delete.sort();
    diff
}

/// The nft script of a diff: `delete element` statements, then `add element` statements,
/// grouped by set, at most [`ELEMENTS_PER_STATEMENT`] per statement. Every address and
/// prefix is written from a parsed [`IpNet`] (digits, `.`, `:`, `/` only); nothing else in
/// the text comes from data. Empty for an empty diff.
pub fn render_nft(diff: &Diff) -> String {
    let mut s = String::new();
    let mut deletes: BTreeMap<BanSet, Vec<String>> = BTreeMap::new();
    for n in &diff.delete {
        deletes
            .entry(BanSet::of(n))
            .or_default()
            .push(n.to_string());
    }
    let mut adds: BTreeMap<BanSet, Vec<String>> = BTreeMap::new();
    for e in &diff.add {
        let text = match e.timeout_secs {
            Some(t) => format!("{} timeout {}s", e.net, t.max(1)),
            None => e.net.to_string(),
        };
        adds.entry(e.set()).or_default().push(text);
    }
    for (verb, groups) in [("delete", deletes), ("add", adds)] {
        for (set, items) in groups {
            for chunk in items.chunks(ELEMENTS_PER_STATEMENT) {
                let _ = writeln!(
                    s,
                    "{verb} element inet {TABLE} {} {{ {} }}",
                    set.as_str(),
                    chunk.join(", ")
                );
            }
        }
    }
    s
}

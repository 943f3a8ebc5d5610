//! `nftset`: decisions as data. A ban is an element of an nftables set in the node's network
//! namespace, added or deleted atomically; the table, its sets and the rules that drop what is
//! in them (the *mechanism*) are created when missing and never replaced, so a second ban can
//! never free the first, and an element's `timeout` makes the kernel forget it on time with no
//! process to remember it.
//!
//! The table (default `inet vacsine_decisions`) holds:
//! - `allow4` / `allow6` (interval): networks no decision may touch; accepted first;
//! - `ban4` / `ban6` (timeout): banned host addresses;
//! - `ban4net` / `ban6net` (interval, timeout): banned networks;
//! - chains `input` and `forward` (filter hooks, priority -10), one rule per set.
//!
//! Host addresses and networks live in separate sets because nftables 1.0.6 (Debian 12) reads
//! every element of every *interval* set of the ruleset before it adds any element: with
//! 100,000 elements in an interval set one add took 6.0 s, against 39 ms in a hash set here.
//!
//! Each change is one `nft -f -` transaction through [`NodeOps::nft_apply`]: the skeleton
//! declared with `add` (a no-op for what exists, elements kept), the two chains flushed and
//! their rules added again (the mechanism re-asserted in the same transaction, no window), and
//! the elements. Addresses are parsed (`std::net`) and rendered from the parsed value: no text
//! of an argument reaches nft. An `add` uses `create element`, which fails if an element is
//! present: the fast path (all new) is one `nft` call and no listing. When it fails, one host
//! address that nft says exists is known present (a second call re-asserts the skeleton);
//! otherwise the table is read once and only the missing ones are added, so `changed` and undo
//! are exact. A `delete` and an `ensure` read the table first (undo needs what was there);
//! with nftables 1.0.6 a read dumps the whole set, so their cost grows with the set.
//!
//! An address inside the step's `allow` is refused before anything is applied, as is a ban
//! covering a loopback or unspecified address (so any `/0`); the node's allow sets are
//! accepted before any ban rule in any case.
//!
//! Undo removes only what the step did: the elements an `add` created (an element that expired
//! meanwhile is skipped), the elements a `delete` removed (put back for the time they had
//! left), the allow-list elements an `ensure` added. The skeleton is never removed by undo:
//! other runs' decisions may live in it.

mod text;

use super::{check_typed, contains_template, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use text::{
    elements, only_already_present, parse_duration, parse_listing, parse_net, skeleton, Listing,
    Net, NEVER, SETS,
};
use vacsine_core::node::NodeOps;
use vacsine_core::record::Level;

/// The mechanism of the decisions table `table` as nft script text (sets and the rules that
/// drop what is in them, declared so that what exists is kept): for callers that apply
/// decisions as data in one transaction of their own (the agent's response path).
pub fn decisions_skeleton(table: &str) -> Result<String, String> {
    check_table(table)?;
    Ok(skeleton(table))
}

/// The elements of the ban sets (`ban4`, `ban6`, `ban4net`, `ban6net`) of table `table` as
/// `nft list ruleset` prints them: the address or network (text of a parsed address) and the
/// time it has left (`None`: no timeout).
pub fn decisions_listed(ruleset: &str, table: &str) -> Vec<(String, Option<Duration>)> {
    parse_listing(ruleset, table)
        .elements
        .into_iter()
        .filter(|(set, _, _)| set.starts_with("ban"))
        .map(|(_, n, left)| (n.to_string(), left))
        .collect()
}

/// Arguments of `nftset`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NftSetArgs {
    /// `add` (ban), `delete` (unban) or `ensure` (skeleton and allow-list only).
    op: Op,
    /// Addresses or networks to ban (`add`) or unban (`delete`).
    #[serde(default)]
    addresses: Vec<String>,
    /// How long an added ban lasts (`30s`, `10m`, `4h`, `1d`, `1h30m`); empty or absent: until
    /// deleted.
    #[serde(default)]
    timeout: Option<String>,
    /// Networks no decision may touch: loaded into the allow sets; an address inside one is
    /// refused before anything is applied.
    #[serde(default)]
    allow: Vec<String>,
    /// The decisions table (family `inet`).
    #[serde(default = "default_table")]
    table: String,
}

fn default_table() -> String {
    "vacsine_decisions".into()
}

#[derive(Debug, Deserialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Op {
    /// Ban `addresses` (skeleton created if missing).
    Add,
    /// Unban `addresses` (those present).
    Delete,
    /// The skeleton and the allow-list only; no ban.
    Ensure,
}

/// The arguments checked and parsed: what a call does.
#[derive(Debug)]
struct Plan {
    op: Op,
    table: String,
    addresses: Vec<Net>,
    timeout: Option<Duration>,
    allow: Vec<Net>,
}

fn check_table(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid table name `{}`: letters, digits and `_`, starting with a letter",
            s.escape_debug()
        ))
    }
}

fn plan(a: NftSetArgs) -> Result<Plan, String> {
    check_table(&a.table).map_err(|e| format!("table: {e}"))?;
    if a.addresses.len() > MAX_ADDRESSES {
        return Err(format!(
            "addresses: {} given, at most {MAX_ADDRESSES} per call",
            a.addresses.len()
        ));
    }
    let mut addresses = Vec::with_capacity(a.addresses.len());
    let mut seen = BTreeSet::new();
    for (i, s) in a.addresses.iter().enumerate() {
        let n = parse_net(s.trim()).map_err(|e| format!("addresses[{i}]: {e}"))?;
        if seen.insert(n) {
            addresses.push(n);
        }
    }
    let mut allow = Vec::with_capacity(a.allow.len());
    for (i, s) in a.allow.iter().enumerate() {
        let n = parse_net(s.trim()).map_err(|e| format!("allow[{i}]: {e}"))?;
        if !allow.contains(&n) {
            allow.push(n);
        }
    }
    let timeout = match a.timeout.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(t) => Some(parse_duration(t).map_err(|e| format!("timeout: {e}"))?),
    };
    match a.op {
        Op::Ensure if !addresses.is_empty() => {
            return Err(
                "`op: ensure` takes no `addresses` (it sets up the table and the \
                        allow-list; ban with `op: add`)"
                    .into(),
            )
        }
        Op::Add if addresses.is_empty() => {
            return Err("`op: add` needs at least one address in `addresses`".into())
        }
        Op::Delete if addresses.is_empty() => {
            return Err("`op: delete` needs at least one address in `addresses`".into())
        }
        Op::Delete | Op::Ensure if timeout.is_some() => {
            return Err("`timeout` is for `op: add` only".into())
        }
        _ => {}
    }
    if a.op == Op::Add {
        for (i, n) in addresses.iter().enumerate() {
            if let Some(w) = NEVER
                .iter()
                .find(|w| parse_net(w).is_ok_and(|w| w.overlaps(n)))
            {
                return Err(format!(
                    "addresses[{i}]: {n} covers {w} (loopback or unspecified addresses): a ban \
                     there would cut the node off itself; nothing was applied"
                ));
            }
            if let Some(w) = allow.iter().find(|w| w.overlaps(n)) {
                return Err(format!(
                    "addresses[{i}]: {n} is in the allow-list ({w}): no decision may touch it; \
                     nothing was applied"
                ));
            }
        }
    }
    Ok(Plan {
        op: a.op,
        table: a.table,
        addresses,
        timeout,
        allow,
    })
}

/// What undo puts back, journaled before the change.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "undo", rename_all = "snake_case")]
enum SetUndo {
    /// Delete these elements (an `add` or `ensure` created them).
    Remove {
        table: String,
        elements: Vec<UndoElement>,
    },
    /// Put these elements back (a `delete` removed them), until their own deadline.
    Restore {
        table: String,
        elements: Vec<UndoElement>,
    },
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
struct UndoElement {
    set: String,
    element: String,
    /// Unix time (s) the element expired at, if it had a timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    until: Option<u64>,
}

/// A checked undo element: its set, the element, its deadline (unix seconds).
type UndoItem = (&'static str, Net, Option<u64>);

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Parse undo elements back (they came from the journal: checked again, never trusted).
fn undo_items(table: &str, elements: &[UndoElement]) -> Result<Vec<UndoItem>, String> {
    check_table(table)?;
    elements
        .iter()
        .map(|e| {
            let n = parse_net(&e.element)?;
            let set = SETS
                .iter()
                .map(|s| s.0)
                .find(|s| *s == e.set)
                .ok_or_else(|| format!("unknown set `{}`", e.set))?;
            let expected = if set.starts_with("allow") {
                n.allow_set()
            } else {
                n.ban_set()
            };
            if expected != set {
                return Err(format!("{n} does not belong in set {set}"));
            }
            Ok((set, n, e.until))
        })
        .collect()
}

/// Most addresses one call takes (one transaction).
const MAX_ADDRESSES: usize = 1_000_000;

pub struct NftSetExecutor;

impl NftSetExecutor {
    async fn read(node: &dyn NodeOps, table: &str) -> Result<Listing, String> {
        node.nft_ruleset()
            .await
            .map(|r| parse_listing(&r, table))
            .map_err(|e| format!("reading the ruleset: {e}"))
    }

    async fn add(&self, ctx: &ExecCtx, node: &dyn NodeOps, p: &Plan) -> StepResult {
        let t = &p.table;
        let allow_script = elements("add", t, p.allow.iter().map(|n| (n.allow_set(), *n, None)));
        let remove_undo = |added: &[Net]| SetUndo::Remove {
            table: t.clone(),
            elements: added
                .iter()
                .map(|n| UndoElement {
                    set: n.ban_set().into(),
                    element: n.to_string(),
                    until: None,
                })
                .collect(),
        };
        // Fast path: every element new. Undo is journaled first (it names only elements that
        // this transaction creates, or nothing if it fails).
        let all = remove_undo(&p.addresses);
        if let Err(e) = save(ctx, &all) {
            return StepResult::failed(e);
        }
        let bans =
            |ns: &[Net]| elements("create", t, ns.iter().map(|n| (n.ban_set(), *n, p.timeout)));
        let script = format!("{}{allow_script}{}", skeleton(t), bans(&p.addresses));
        let first = node.nft_apply(&script).await;
        let (added, kept) = match first {
            Ok(()) => (p.addresses.clone(), Vec::new()),
            Err(first_err) => {
                // Nothing was applied: the journal must not name elements that may be
                // someone else's. Then read the table once to see which are present.
                if let Err(e) = save(ctx, &remove_undo(&[])) {
                    return StepResult::failed(e);
                }
                // One host address that nft says exists: it is present, nothing to read.
                // (Host sets only: in an interval set declared by the same transaction nft
                // 1.0.6 says "File exists" of an absent element.)
                if let [only] = p.addresses[..] {
                    if only.is_host() && only_already_present(&first_err.to_string()) {
                        let script = format!("{}{allow_script}", skeleton(t));
                        if let Err(e) = node.nft_apply(&script).await {
                            return StepResult::failed(format!("nft refused the table: {e}"));
                        }
                        return Self::added(p, Vec::new(), vec![only], &remove_undo);
                    }
                }
                let l = match Self::read(node, t).await {
                    Ok(l) => l,
                    Err(e) => return StepResult::failed(e),
                };
                let (kept, missing): (Vec<Net>, Vec<Net>) =
                    p.addresses.iter().partition(|n| l.has(n.ban_set(), n));
                let undo = remove_undo(&missing);
                if let Err(e) = save(ctx, &undo) {
                    return StepResult::failed(e);
                }
                // The missing ones are known now: `add` them (nft 1.0.6 refuses `create` in an
                // interval set declared by the same transaction, so a first ban of a network
                // comes here too).
                let script = format!(
                    "{}{allow_script}{}",
                    skeleton(t),
                    elements(
                        "add",
                        t,
                        missing.iter().map(|n| (n.ban_set(), *n, p.timeout))
                    )
                );
                if let Err(e) = node.nft_apply(&script).await {
                    return StepResult::failed(format!(
                        "nft refused the decisions: {e} (first attempt: {first_err})"
                    ));
                }
                (missing, kept)
            }
        };
        Self::added(p, added, kept, &remove_undo)
    }

    /// The result of an `add`: what was added, what was already there.
    fn added(
        p: &Plan,
        added: Vec<Net>,
        kept: Vec<Net>,
        remove_undo: &dyn Fn(&[Net]) -> SetUndo,
    ) -> StepResult {
        let t = &p.table;
        let changed = !added.is_empty();
        let mut r = StepResult::ok(changed);
        let how_long = p
            .timeout
            .map(|d| format!(" for {}s", d.as_secs()))
            .unwrap_or_default();
        r.push(
            Level::Info,
            format!(
                "{} added to inet {t}{how_long}, {} already present",
                added.len(),
                kept.len()
            ),
        );
        if !p.allow.is_empty() {
            r.push(
                Level::Info,
                format!("allow-list loaded ({} entries)", p.allow.len()),
            );
        }
        r = r
            .output("added", strings(&added))
            .output("present", strings(&kept))
            .output("table", format!("inet {t}"));
        if changed {
            r.undo = serde_json::to_value(remove_undo(&added)).ok();
        }
        r
    }

    async fn delete(&self, ctx: &ExecCtx, node: &dyn NodeOps, p: &Plan) -> StepResult {
        let t = &p.table;
        let l = match Self::read(node, t).await {
            Ok(l) => l,
            Err(e) => return StepResult::failed(e),
        };
        let now = now_secs();
        let mut found = Vec::new();
        let mut absent = Vec::new();
        for n in &p.addresses {
            match l.left(n.ban_set(), n) {
                Some(left) => found.push((*n, left)),
                None => absent.push(*n),
            }
        }
        if found.is_empty() {
            return StepResult::ok(false)
                .msg(
                    Level::Info,
                    format!(
                        "none of the {} addresses is banned in inet {t}",
                        absent.len()
                    ),
                )
                .output("deleted", Vec::<String>::new())
                .output("absent", strings(&absent))
                .output("table", format!("inet {t}"));
        }
        let undo = SetUndo::Restore {
            table: t.clone(),
            elements: found
                .iter()
                .map(|(n, left)| UndoElement {
                    set: n.ban_set().into(),
                    element: n.to_string(),
                    until: left.map(|d| now + d.as_secs().max(1)),
                })
                .collect(),
        };
        if let Err(e) = save(ctx, &undo) {
            return StepResult::failed(e);
        }
        let script = format!(
            "{}{}",
            skeleton(t),
            elements(
                "delete",
                t,
                found.iter().map(|(n, _)| (n.ban_set(), *n, None))
            )
        );
        if let Err(e) = node.nft_apply(&script).await {
            // An element that expired between the read and the delete: say so.
            return StepResult::failed(format!("nft refused the deletion: {e}"));
        }
        let deleted: Vec<Net> = found.iter().map(|x| x.0).collect();
        let mut r = StepResult::ok(true)
            .msg(
                Level::Info,
                format!(
                    "{} deleted from inet {t}, {} were not banned",
                    deleted.len(),
                    absent.len()
                ),
            )
            .output("deleted", strings(&deleted))
            .output("absent", strings(&absent))
            .output("table", format!("inet {t}"));
        r.undo = serde_json::to_value(undo).ok();
        r
    }

    async fn ensure(&self, ctx: &ExecCtx, node: &dyn NodeOps, p: &Plan) -> StepResult {
        let t = &p.table;
        let l = match Self::read(node, t).await {
            Ok(l) => l,
            Err(e) => return StepResult::failed(e),
        };
        let new_allow: Vec<Net> = p
            .allow
            .iter()
            .filter(|n| !l.has(n.allow_set(), n))
            .copied()
            .collect();
        let complete = l.skeleton_complete();
        let undo = SetUndo::Remove {
            table: t.clone(),
            elements: new_allow
                .iter()
                .map(|n| UndoElement {
                    set: n.allow_set().into(),
                    element: n.to_string(),
                    until: None,
                })
                .collect(),
        };
        if !new_allow.is_empty() {
            if let Err(e) = save(ctx, &undo) {
                return StepResult::failed(e);
            }
        }
        let script = format!(
            "{}{}",
            skeleton(t),
            elements(
                "add",
                t,
                new_allow.iter().map(|n| (n.allow_set(), *n, None))
            )
        );
        if let Err(e) = node.nft_apply(&script).await {
            return StepResult::failed(format!("nft refused the table: {e}"));
        }
        let changed = !complete || !new_allow.is_empty();
        let mut r = StepResult::ok(changed).msg(
            Level::Info,
            match (l.present, complete) {
                (false, _) => format!("table inet {t} created"),
                (true, false) => format!("table inet {t} completed (sets or rules were missing)"),
                (true, true) => format!("table inet {t} already in place"),
            },
        );
        if !p.allow.is_empty() {
            r.push(
                Level::Info,
                format!(
                    "allow-list: {} added, {} already present",
                    new_allow.len(),
                    p.allow.len() - new_allow.len()
                ),
            );
        }
        r = r
            .output("added", strings(&new_allow))
            .output("table", format!("inet {t}"));
        if !new_allow.is_empty() {
            r.undo = serde_json::to_value(undo).ok();
        }
        r
    }
}

fn save(ctx: &ExecCtx, u: &SetUndo) -> Result<(), String> {
    let v = serde_json::to_value(u).map_err(|e| format!("encoding undo data: {e}"))?;
    ctx.save_undo(&v)
}

fn strings(ns: &[Net]) -> Vec<String> {
    ns.iter().map(Net::to_string).collect()
}

#[async_trait]
impl Executor for NftSetExecutor {
    fn name(&self) -> &'static str {
        "nftset"
    }
    fn summary(&self) -> &'static str {
        "Ban or unban addresses and networks as elements of nftables sets with a kernel timeout; other elements are never touched."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<NftSetArgs>()
    }
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("added", "elements this step added (`add`, `ensure`)"),
            ("present", "elements already there (`add`)"),
            ("deleted", "elements this step removed (`delete`)"),
            ("absent", "elements that were not there (`delete`)"),
            ("table", "the table, as `inet NAME`"),
        ]
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<NftSetArgs>("nftset", args)?;
        if contains_template(args) {
            return Ok(());
        }
        let a: NftSetArgs = parse_args("nftset", args.clone())?;
        plan(a).map(|_| ())
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let p = match parse_args::<NftSetArgs>("nftset", args).and_then(plan) {
            Ok(p) => p,
            Err(e) => return StepResult::failed(format!("nftset: {e}")),
        };
        let node = match ctx.node() {
            Ok(n) => n.clone(),
            Err(e) => return StepResult::failed(e),
        };
        match p.op {
            Op::Add => self.add(ctx, node.as_ref(), &p).await,
            Op::Delete => self.delete(ctx, node.as_ref(), &p).await,
            Op::Ensure => self.ensure(ctx, node.as_ref(), &p).await,
        }
    }
    async fn undo(&self, ctx: &ExecCtx, undo: Value) -> StepResult {
        let node = match ctx.node() {
            Ok(n) => n.clone(),
            Err(e) => return StepResult::failed(e),
        };
        let u: SetUndo = match serde_json::from_value(undo) {
            Ok(u) => u,
            Err(e) => return StepResult::failed(format!("corrupt undo data: {e}")),
        };
        match u {
            SetUndo::Remove {
                table,
                elements: es,
            } => {
                let items = match undo_items(&table, &es) {
                    Ok(i) => i,
                    Err(e) => return StepResult::failed(format!("corrupt undo data: {e}")),
                };
                let script = |items: &[UndoItem]| {
                    elements(
                        "delete",
                        &table,
                        items.iter().map(|(s, n, _)| (*s, *n, None)),
                    )
                };
                if items.is_empty() {
                    return StepResult::ok(false);
                }
                // One transaction; if some expired meanwhile, read the table and delete those
                // still there.
                let mut gone = 0;
                if node.nft_apply(&script(&items)).await.is_err() {
                    let l = match Self::read(node.as_ref(), &table).await {
                        Ok(l) => l,
                        Err(e) => return StepResult::failed(e),
                    };
                    let still: Vec<_> = items
                        .iter()
                        .filter(|(s, n, _)| l.has(s, n))
                        .copied()
                        .collect();
                    gone = items.len() - still.len();
                    if !still.is_empty() {
                        if let Err(e) = node.nft_apply(&script(&still)).await {
                            return StepResult::failed(format!("removing the elements: {e}"));
                        }
                    }
                }
                StepResult::ok(true).msg(
                    Level::Info,
                    format!(
                        "{} element(s) the step added removed from inet {table} ({gone} had \
                         expired)",
                        items.len() - gone
                    ),
                )
            }
            SetUndo::Restore {
                table,
                elements: es,
            } => {
                let items = match undo_items(&table, &es) {
                    Ok(i) => i,
                    Err(e) => return StepResult::failed(format!("corrupt undo data: {e}")),
                };
                let now = now_secs();
                let live: Vec<(&'static str, Net, Option<Duration>)> = items
                    .iter()
                    .filter(|(_, _, until)| until.is_none_or(|u| u > now))
                    .map(|(s, n, until)| (*s, *n, until.map(|u| Duration::from_secs(u - now))))
                    .collect();
                let expired = items.len() - live.len();
                if !live.is_empty() {
                    let script = format!(
                        "{}{}",
                        skeleton(&table),
                        elements("add", &table, live.clone())
                    );
                    if let Err(e) = node.nft_apply(&script).await {
                        return StepResult::failed(format!("restoring the elements: {e}"));
                    }
                }
                StepResult::ok(true).msg(
                    Level::Info,
                    format!(
                        "{} element(s) the step deleted put back in inet {table} ({expired} \
                         would have expired since)",
                        live.len()
                    ),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(v: Value) -> Result<Plan, String> {
        serde_json::from_value::<NftSetArgs>(v)
            .map_err(|e| e.to_string())
            .and_then(plan)
    }

    #[test]
    fn plans_are_checked_and_located() {
        let e = p(json!({"op": "add", "addresses": ["203.0.113.1", "1.2.3.4; flush ruleset"]}))
            .unwrap_err();
        assert!(e.starts_with("addresses[1]: "), "{e}");
        let e = p(json!({"op": "add", "addresses": ["10.1.2.3"], "allow": ["10.0.0.0/8"]}))
            .unwrap_err();
        assert!(
            e.contains("allow-list") && e.starts_with("addresses[0]"),
            "{e}"
        );
        assert!(p(json!({"op": "add", "addresses": []})).is_err());
        for never in [
            "127.0.0.1",
            "::1",
            "0.0.0.0/0",
            "::/0",
            "0.0.0.0",
            "::ffff:127.0.0.1",
        ] {
            let e = p(json!({"op": "add", "addresses": [never]})).unwrap_err();
            assert!(e.contains("cut the node off itself"), "{never}: {e}");
        }
        // Unbanning them is not refused (nothing to protect).
        assert!(p(json!({"op": "delete", "addresses": ["127.0.0.1"]})).is_ok());
        assert!(p(json!({"op": "ensure", "addresses": ["1.2.3.4"]})).is_err());
        assert!(p(json!({"op": "delete", "addresses": ["1.2.3.4"], "timeout": "1m"})).is_err());
        assert!(p(json!({"op": "add", "addresses": ["1.2.3.4"], "extra": 1})).is_err());
        assert!(p(json!({"op": "add", "addresses": ["1.2.3.4"], "table": "x; flush"})).is_err());
        let ok =
            p(json!({"op": "add", "addresses": ["1.2.3.4", "1.2.3.4"], "timeout": ""})).unwrap();
        assert_eq!(ok.addresses.len(), 1);
        assert!(ok.timeout.is_none());
    }

    #[test]
    fn undo_data_is_checked_again() {
        let bad = [UndoElement {
            set: "ban4".into(),
            element: "1.2.3.4 }; flush ruleset".into(),
            until: None,
        }];
        assert!(undo_items("t", &bad).is_err());
        let wrong_set = [UndoElement {
            set: "ban6".into(),
            element: "1.2.3.4".into(),
            until: None,
        }];
        assert!(undo_items("t", &wrong_set).is_err());
        assert!(undo_items("t x", &[]).is_err());
    }
}

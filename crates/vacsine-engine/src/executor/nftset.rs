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

use super::{check_typed, contains_template, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vacsine_core::node::NodeOps;
use vacsine_core::record::Level;

/// Longest decision a `timeout` may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);
/// Most addresses one call takes (one transaction).
const MAX_ADDRESSES: usize = 1_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NftSetArgs {
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
    #[serde(default = "default_table")]
    table: String,
}

fn default_table() -> String {
    "vacsine_decisions".into()
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Op {
    /// Ban `addresses` (skeleton created if missing).
    Add,
    /// Unban `addresses` (those present).
    Delete,
    /// The skeleton and the allow-list only; no ban.
    Ensure,
}

/// An address or a network, parsed; rendered from the parsed value only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn max(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }
    fn is_host(&self) -> bool {
        self.prefix == Net::max(self.addr)
    }
    fn bits(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        }
    }
    fn mask(&self) -> u128 {
        let width = Net::max(self.addr) as u32;
        let all = if width == 32 {
            u32::MAX as u128
        } else {
            u128::MAX
        };
        if self.prefix == 0 {
            0
        } else {
            all & !((1u128 << (width - self.prefix as u32)).wrapping_sub(1)) & all
        }
    }
    /// Whether the two share an address (one contains the other: they are prefixes).
    fn overlaps(&self, o: &Net) -> bool {
        if self.addr.is_ipv4() != o.addr.is_ipv4() {
            return false;
        }
        let shorter = if self.prefix <= o.prefix { self } else { o };
        (self.bits() & shorter.mask()) == (o.bits() & shorter.mask())
    }
    /// The set a ban of this lives in.
    fn ban_set(&self) -> &'static str {
        match (self.addr.is_ipv4(), self.is_host()) {
            (true, true) => "ban4",
            (true, false) => "ban4net",
            (false, true) => "ban6",
            (false, false) => "ban6net",
        }
    }
    fn allow_set(&self) -> &'static str {
        if self.addr.is_ipv4() {
            "allow4"
        } else {
            "allow6"
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Parse an address (`203.0.113.7`, `2001:db8::7`) or a network (`198.51.100.0/24`). A network
/// with host bits set is refused (it names no network exactly).
fn parse_net(s: &str) -> Result<Net, String> {
    let bad = || {
        format!(
            "`{}` is not an IP address or network (such as 203.0.113.7, 2001:db8::7 or \
             198.51.100.0/24)",
            s.escape_debug()
        )
    };
    if s.len() > 64 {
        return Err(format!(
            "`{}…` is not an IP address or network (longer than 64 characters)",
            s.chars().take(32).collect::<String>().escape_debug()
        ));
    }
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, len)) => {
            let addr: IpAddr = ip.parse().map_err(|_| bad())?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
                return Err(bad());
            }
            let p: u8 = len.parse().map_err(|_| bad())?;
            if p > Net::max(addr) {
                return Err(format!(
                    "`{s}`: prefix /{p} is longer than the address (at most /{})",
                    Net::max(addr)
                ));
            }
            (addr, p)
        }
        None => {
            let addr: IpAddr = s.parse().map_err(|_| bad())?;
            (addr, Net::max(addr))
        }
    };
    // An IPv4 client reaches an inet table as IPv4: `::ffff:203.0.113.7` bans 203.0.113.7.
    let (ip, prefix) = match ip {
        IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => (
            IpAddr::V4(
                v6.to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            ),
            prefix - 96,
        ),
        _ => (ip, prefix),
    };
    let n = Net { addr: ip, prefix };
    if n.bits() & !n.mask() != 0 {
        let base = n.bits() & n.mask();
        let base = match ip {
            IpAddr::V4(_) => IpAddr::V4((base as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(base.into()),
        };
        return Err(format!(
            "`{s}` has host bits set; the network is {base}/{prefix}"
        ));
    }
    Ok(n)
}

/// `30s`, `10m`, `4h`, `1d`, `1h30m` → a duration (whole seconds).
fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{}` is not a duration: a number and a unit (s, m, h, d), such as 10m, 4h or 1h30m",
            s.escape_debug()
        )
    };
    if s.is_empty() || s.len() > 32 {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        if num.is_empty() {
            return Err(bad());
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    let d = Duration::from_secs(total);
    if d.is_zero() {
        return Err(format!("`{s}`: a timeout must be longer than zero"));
    }
    if d > MAX_TIMEOUT {
        return Err(format!("`{s}`: a timeout is at most 365d"));
    }
    Ok(d)
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

/// What no ban may cover, whatever the allow-list says (this also refuses `/0`).
const NEVER: [&str; 4] = ["127.0.0.0/8", "0.0.0.0/8", "::1", "::"];

const SETS: [(&str, &str, &str); 6] = [
    ("allow4", "ipv4_addr", "interval"),
    ("allow6", "ipv6_addr", "interval"),
    ("ban4", "ipv4_addr", "timeout"),
    ("ban6", "ipv6_addr", "timeout"),
    ("ban4net", "ipv4_addr", "interval,timeout"),
    ("ban6net", "ipv6_addr", "interval,timeout"),
];

/// The rules of each chain, in order (as `nft list` prints them).
const RULES: [&str; 6] = [
    "ip saddr @allow4 accept",
    "ip6 saddr @allow6 accept",
    "ip saddr @ban4 drop",
    "ip6 saddr @ban6 drop",
    "ip saddr @ban4net drop",
    "ip6 saddr @ban6net drop",
];

const CHAINS: [&str; 2] = ["input", "forward"];

/// The mechanism, declared so that what exists is kept (elements included) and the rules are
/// exactly these once the transaction commits.
fn skeleton(table: &str) -> String {
    let mut s = format!("add table inet {table}\n");
    for (name, ty, flags) in SETS {
        let _ = writeln!(
            s,
            "add set inet {table} {name} {{ type {ty}; flags {flags}; }}"
        );
    }
    for c in CHAINS {
        let _ = writeln!(
            s,
            "add chain inet {table} {c} {{ type filter hook {c} priority -10; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain inet {table} {c}");
        for r in RULES {
            let _ = writeln!(s, "add rule inet {table} {c} {r}");
        }
    }
    s
}

/// One element statement per set: `VERB element inet T SET { e1, e2 }`.
fn elements(
    verb: &str,
    table: &str,
    items: impl IntoIterator<Item = (&'static str, Net, Option<Duration>)>,
) -> String {
    let mut by_set: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (set, n, t) in items {
        let e = match t {
            Some(t) => format!("{n} timeout {}s", t.as_secs().max(1)),
            None => n.to_string(),
        };
        by_set.entry(set).or_default().push(e);
    }
    let mut s = String::new();
    for (set, es) in by_set {
        let _ = writeln!(
            s,
            "{verb} element inet {table} {set} {{ {} }}",
            es.join(", ")
        );
    }
    s
}

/// What the table holds, read from `nft list ruleset`.
#[derive(Debug, Default)]
struct Listing {
    present: bool,
    /// (set, element, time left) of every element of the table's sets.
    elements: Vec<(String, Net, Option<Duration>)>,
    /// The rules of each chain, as listed.
    rules: Vec<(String, Vec<String>)>,
    sets: Vec<String>,
}

impl Listing {
    fn has(&self, set: &str, n: &Net) -> bool {
        self.elements.iter().any(|(s, e, _)| s == set && e == n)
    }
    fn left(&self, set: &str, n: &Net) -> Option<Option<Duration>> {
        self.elements
            .iter()
            .find(|(s, e, _)| s == set && e == n)
            .map(|x| x.2)
    }
    /// Whether the mechanism is there exactly (sets and rules).
    fn skeleton_complete(&self) -> bool {
        self.present
            && SETS
                .iter()
                .all(|(n, _, _)| self.sets.iter().any(|s| s == n))
            && CHAINS.iter().all(|c| {
                self.rules
                    .iter()
                    .any(|(name, rs)| name == c && rs.iter().map(String::as_str).eq(RULES))
            })
    }
}

/// `1d2h3m4s500ms` (as nft prints times) → duration.
fn parse_nft_time(s: &str) -> Option<Duration> {
    let mut ms: u64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            's' => 1000,
            _ => return None,
        };
        ms = ms.checked_add(n.checked_mul(unit)?)?;
    }
    num.is_empty().then(|| Duration::from_millis(ms))
}

/// Parse the table out of `nft list ruleset` text.
fn parse_listing(ruleset: &str, table: &str) -> Listing {
    let mut l = Listing::default();
    let head = format!("table inet {table} {{");
    let mut lines = ruleset.lines();
    for line in lines.by_ref() {
        if line.trim_end() == head {
            l.present = true;
            break;
        }
    }
    if !l.present {
        return l;
    }
    let mut set: Option<String> = None;
    let mut chain: Option<String> = None;
    let mut in_elements = false;
    let mut buf = String::new();
    for line in lines {
        let t = line.trim();
        if line == "}" {
            break;
        }
        if in_elements {
            buf.push(' ');
            buf.push_str(t);
            if t.ends_with('}') {
                in_elements = false;
                if let Some(s) = &set {
                    parse_elements(&buf, s, &mut l.elements);
                }
                buf.clear();
            }
            continue;
        }
        if let Some(name) = t.strip_prefix("set ").and_then(|r| r.strip_suffix(" {")) {
            set = Some(name.to_string());
            l.sets.push(name.to_string());
            continue;
        }
        if let Some(name) = t.strip_prefix("chain ").and_then(|r| r.strip_suffix(" {")) {
            chain = Some(name.to_string());
            l.rules.push((name.to_string(), Vec::new()));
            continue;
        }
        if t == "}" {
            set = None;
            chain = None;
            continue;
        }
        if let Some(rest) = t.strip_prefix("elements = {") {
            buf = rest.to_string();
            if t.ends_with('}') {
                if let Some(s) = &set {
                    parse_elements(&buf, s, &mut l.elements);
                }
                buf.clear();
            } else {
                in_elements = true;
            }
            continue;
        }
        if chain.is_some() && !t.starts_with("type ") && !t.is_empty() {
            if let Some((_, rs)) = l.rules.last_mut() {
                rs.push(t.to_string());
            }
        }
    }
    l
}

fn parse_elements(body: &str, set: &str, out: &mut Vec<(String, Net, Option<Duration>)>) {
    let body = body.trim().trim_end_matches('}');
    for item in body.split(',') {
        let mut toks = item.split_whitespace();
        let Some(first) = toks.next() else { continue };
        let Ok(n) = parse_net(first) else { continue };
        let mut left = None;
        while let Some(k) = toks.next() {
            if k == "expires" {
                left = toks.next().and_then(parse_nft_time);
            }
        }
        out.push((set.to_string(), n, left));
    }
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

/// Whether nft's complaint is only that the elements to create exist already: every error
/// is `File exists` on a `create element` statement of a host set (`ban4`, `ban6`).
fn only_already_present(err: &str) -> bool {
    let mut lines = err.lines();
    let mut errors = 0;
    while let Some(l) = lines.next() {
        let Some((_, kind)) = l.split_once("Error: ") else {
            continue;
        };
        errors += 1;
        let stmt = lines.next().unwrap_or_default();
        let host_set = stmt.starts_with("create element inet ")
            && (stmt.contains(" ban4 { ") || stmt.contains(" ban6 { "));
        if kind.trim() != "Could not process rule: File exists" || !host_set {
            return false;
        }
    }
    errors > 0
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
    fn parses_addresses_and_networks() {
        for (s, want, set) in [
            ("203.0.113.1", "203.0.113.1", "ban4"),
            ("2001:db8::7", "2001:db8::7", "ban6"),
            ("2001:0db8:0::7", "2001:db8::7", "ban6"),
            ("198.51.100.0/24", "198.51.100.0/24", "ban4net"),
            ("203.0.113.9/32", "203.0.113.9", "ban4"),
            ("2001:db8::/32", "2001:db8::/32", "ban6net"),
            ("0.0.0.0/0", "0.0.0.0/0", "ban4net"),
            ("::ffff:203.0.113.7", "203.0.113.7", "ban4"),
            ("::ffff:198.51.100.0/120", "198.51.100.0/24", "ban4net"),
        ] {
            let n = parse_net(s).unwrap();
            assert_eq!(n.to_string(), want, "{s}");
            assert_eq!(n.ban_set(), set, "{s}");
        }
        for bad in [
            "1.2.3.4; flush ruleset",
            "1.2.3.4 }",
            "1.2.3.4 timeout 1s",
            "",
            "1.2.3",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "example.org",
            "::1/129",
            "1.2.3.4\n",
        ] {
            assert!(parse_net(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_net("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
    }

    #[test]
    fn overlaps() {
        let n = |s| parse_net(s).unwrap();
        assert!(n("10.0.0.0/8").overlaps(&n("10.1.2.3")));
        assert!(n("10.1.2.3").overlaps(&n("10.0.0.0/8")));
        assert!(!n("10.0.0.0/8").overlaps(&n("11.0.0.1")));
        assert!(n("2001:db8::/32").overlaps(&n("2001:db8::7")));
        assert!(!n("2001:db8::/32").overlaps(&n("2001:db9::7")));
        assert!(!n("0.0.0.0/0").overlaps(&n("::1")));
        assert!(n("0.0.0.0/0").overlaps(&n("1.2.3.4")));
        assert!(n("::/0").overlaps(&n("::1")));
    }

    #[test]
    fn durations() {
        for (s, secs) in [
            ("30s", 30),
            ("10m", 600),
            ("4h", 14400),
            ("1d", 86400),
            ("1h30m", 5400),
        ] {
            assert_eq!(parse_duration(s).unwrap().as_secs(), secs, "{s}");
        }
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "0s",
            "-5m",
            "400d",
            "1.5h",
            "10m; flush",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_nft_time("9m58s230ms").unwrap().as_millis(), 598_230);
        assert_eq!(parse_nft_time("1d2h").unwrap().as_secs(), 93_600);
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
    fn scripts_render_parsed_values_only() {
        let s = skeleton("vacsine_decisions");
        assert!(!s.contains("delete") && !s.contains("flush ruleset"));
        assert!(
            s.contains("add set inet vacsine_decisions ban4 { type ipv4_addr; flags timeout; }")
        );
        assert!(s.contains("flush chain inet vacsine_decisions input\n"));
        let n = |x| parse_net(x).unwrap();
        let e = elements(
            "create",
            "t",
            [
                ("ban4", n("203.0.113.1"), Some(Duration::from_secs(600))),
                ("ban6", n("2001:db8::7"), None),
                ("ban4", n("203.0.113.2"), Some(Duration::from_secs(600))),
            ],
        );
        assert_eq!(
            e,
            "create element inet t ban4 { 203.0.113.1 timeout 600s, 203.0.113.2 timeout 600s }\n\
             create element inet t ban6 { 2001:db8::7 }\n"
        );
    }

    #[test]
    fn reads_the_table_listing() {
        let rs = "table inet other {\n}\ntable inet vacsine_decisions {\n\tset allow4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 192.0.2.0/24 }\n\t}\n\tset ban4 {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\telements = { 203.0.113.1 timeout 10m expires 9m58s230ms,\n\t\t\t     203.0.113.2 }\n\t}\n\tset ban6 {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t\telements = { 2001:db8::7 }\n\t}\n\tchain input {\n\t\ttype filter hook input priority -10; policy accept;\n\t\tip saddr @allow4 accept\n\t}\n}\n";
        let l = parse_listing(rs, "vacsine_decisions");
        let n = |x| parse_net(x).unwrap();
        assert!(l.present);
        assert!(l.has("allow4", &n("192.0.2.0/24")));
        assert!(l.has("ban4", &n("203.0.113.2")));
        assert!(l.has("ban6", &n("2001:db8::7")));
        assert_eq!(
            l.left("ban4", &n("203.0.113.1")),
            Some(Some(Duration::from_millis(598_230)))
        );
        assert_eq!(l.left("ban4", &n("203.0.113.2")), Some(None));
        assert!(!l.skeleton_complete());
        assert!(!parse_listing(rs, "nope").present);
    }

    #[test]
    fn tells_an_element_already_present_from_other_refusals() {
        let present = "nft_apply on node `n` failed: nft -f - exited with Some(1): /dev/stdin:25:45-55: Error: Could not process rule: File exists\ncreate element inet vacsine_decisions ban4 { 203.0.113.1 timeout 600s }\n                                            ^^^^^^^^^^^";
        assert!(only_already_present(present));
        let set_clash = "exited with Some(1): /dev/stdin:3:1-9: Error: Could not process rule: File exists\nadd set inet vacsine_decisions ban4 { type ipv4_addr; flags timeout; }\n^^^";
        assert!(!only_already_present(set_clash));
        let interval = "/dev/stdin:25:49-63: Error: Could not process rule: File exists\ncreate element inet vacsine_decisions ban4net { 198.51.100.0/24 timeout 14400s }\n ^^^";
        assert!(!only_already_present(interval));
        let other = "/dev/stdin:25:49-63: Error: Could not process rule: No such file or directory\ncreate element inet vacsine_decisions ban4 { 1.2.3.4 }\n ^^^";
        assert!(!only_already_present(other));
        assert!(!only_already_present("nft: command not found"));
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

//! `firewall`: (re)define one nftables table atomically in the node's network namespace.
//!
//! The generated script is `table F T` + `delete table F T` + the definition, applied in one
//! `nft -f` transaction, so the table is never half-built. Rule text comes from workflows (and
//! possibly templated event data), so it is checked against a strict whitelist: it must not be
//! able to end its command and start another (no `;`, newline, `#`, `$`, backslash, nested or
//! unbalanced braces, no top-level command keywords).
//!
//! Undo restores exactly the one table the step touched, and nothing else: the table's listing
//! before the step is journaled first, and undo deletes the table and recreates that listing in
//! one transaction (or only deletes it, when the step created it). Tables that other parties
//! add or change in the meantime are left as they are.

use super::{check_typed, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt::Write as _;
use vacsine_core::record::Level;

/// Arguments of `firewall`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FirewallArgs {
    /// nftables table the step owns (replaced as a whole, atomically).
    #[serde(default = "default_table")]
    table: String,
    /// Table family: `inet`, `ip`, `ip6`, `arp`, `bridge` or `netdev`.
    #[serde(default = "default_family")]
    family: String,
    /// Chains of the table (base chains with `type`, `hook`, `priority`, `policy`).
    #[serde(default)]
    chains: Vec<ChainArg>,
    /// Rules, each in one chain, in nft syntax (checked before anything is applied).
    #[serde(default)]
    rules: Vec<RuleArg>,
    /// Table body in nft syntax, taken literally from the workflow file (never templated).
    #[serde(default)]
    script: Option<String>,
    /// `present` (default) or `absent` (the table is deleted).
    #[serde(default)]
    state: TableState,
}

#[derive(
    Debug, Deserialize, Serialize, schemars::JsonSchema, Default, PartialEq, Eq, Clone, Copy,
)]
#[serde(rename_all = "lowercase")]
enum TableState {
    #[default]
    Present,
    Absent,
}

fn default_table() -> String {
    "vacsine".into()
}
fn default_family() -> String {
    "inet".into()
}

/// A chain of the table.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChainArg {
    /// Chain name (letters, digits, `_`).
    name: String,
    /// Base chain type: `filter` (default with a `hook`), `nat` or `route`.
    #[serde(default, rename = "type")]
    ty: Option<String>,
    /// Hook making it a base chain: `prerouting`, `input`, `forward`, `output`, `postrouting`
    /// or `ingress` (absent: a regular chain).
    #[serde(default)]
    hook: Option<String>,
    /// Priority of a base chain: a number or a standard name with an offset (`filter`,
    /// `dstnat - 10`); default 0.
    #[serde(default)]
    priority: Option<Value>,
    /// Default verdict of a base chain: `accept` or `drop`.
    #[serde(default)]
    policy: Option<String>,
}

/// A rule and its chain.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RuleArg {
    /// The chain the rule goes in (one of `chains`).
    chain: String,
    /// The rule in nft syntax (`tcp dport 23 drop`).
    rule: String,
}

fn check_name(what: &str, s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} name `{s}`: letters, digits and `_`, starting with a letter"
        ))
    }
}

fn check_one_of(what: &str, s: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&s) {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} `{s}`: expected one of {}",
            allowed.join(", ")
        ))
    }
}

const COMMAND_KEYWORDS: &[&str] = &[
    "add", "create", "delete", "destroy", "describe", "define", "export", "flush", "import",
    "include", "insert", "list", "monitor", "rename", "replace", "reset", "table", "undefine",
    "redefine",
];

/// Check one rule's text (the part after `add rule FAMILY TABLE CHAIN`).
pub fn validate_rule(rule: &str) -> Result<(), String> {
    let r = rule.trim();
    if r.is_empty() {
        return Err("empty rule".into());
    }
    if r.len() > 1024 {
        return Err("rule longer than 1024 characters".into());
    }
    let mut depth = 0;
    let mut in_quote = false;
    for (i, c) in r.char_indices() {
        let allowed = c.is_ascii_alphanumeric()
            || matches!(
                c,
                ' ' | '_'
                    | '.'
                    | ':'
                    | '/'
                    | ','
                    | '-'
                    | '!'
                    | '='
                    | '<'
                    | '>'
                    | '@'
                    | '*'
                    | '"'
                    | '&'
                    | '|'
                    | '('
                    | ')'
                    | '['
                    | ']'
                    | '{'
                    | '}'
                    | '+'
                    | '%'
            );
        if !allowed {
            return Err(format!(
                "character {c:?} at position {} is not allowed in a firewall rule",
                i + 1
            ));
        }
        match c {
            '"' => in_quote = !in_quote,
            '{' if !in_quote => {
                depth += 1;
                if depth > 1 {
                    return Err("nested braces are not allowed in a firewall rule".into());
                }
            }
            '}' if !in_quote => {
                if depth == 0 {
                    return Err("unbalanced `}` in firewall rule".into());
                }
                depth -= 1;
            }
            _ => {}
        }
    }
    if in_quote {
        return Err("unterminated quote in firewall rule".into());
    }
    if depth != 0 {
        return Err("unbalanced `{` in firewall rule".into());
    }
    for tok in r.split([' ', '{', '}', ',']).filter(|t| !t.is_empty()) {
        if COMMAND_KEYWORDS.contains(&tok) {
            return Err(format!(
                "`{tok}` is an nft command keyword and is not allowed inside a rule"
            ));
        }
    }
    Ok(())
}

fn check_priority(p: &Value) -> Result<String, String> {
    match p {
        Value::Number(n) if n.is_i64() => Ok(n.to_string()),
        Value::String(s) => {
            let re = regex::Regex::new(
                r"^(-?\d+|(raw|mangle|dstnat|filter|security|srcnat|out)(\s*[+-]\s*\d+)?)$",
            )
            .expect("static regex");
            if re.is_match(s.trim()) {
                Ok(s.trim().to_string())
            } else {
                Err(format!("invalid chain priority `{s}`"))
            }
        }
        other => Err(format!("invalid chain priority {other}")),
    }
}

/// Build the nft script for the arguments (pure).
fn build_script(a: &FirewallArgs) -> Result<String, String> {
    check_name("table", &a.table)?;
    check_one_of(
        "family",
        &a.family,
        &["ip", "ip6", "inet", "arp", "bridge", "netdev"],
    )?;
    let (f, t) = (&a.family, &a.table);
    let mut s = format!("table {f} {t}\ndelete table {f} {t}\n");
    if a.state == TableState::Absent {
        if !a.chains.is_empty() || !a.rules.is_empty() || a.script.is_some() {
            return Err("`state: absent` takes no chains, rules or script".into());
        }
        return Ok(s);
    }
    if a.script.is_some() && (!a.chains.is_empty() || !a.rules.is_empty()) {
        return Err("give either `script` or `chains`/`rules`, not both".into());
    }
    let _ = writeln!(s, "table {f} {t} {{");
    if let Some(body) = &a.script {
        let opens = body.matches('{').count();
        let closes = body.matches('}').count();
        if opens != closes {
            return Err("`script` has unbalanced braces".into());
        }
        s.push_str(body);
        if !body.ends_with('\n') {
            s.push('\n');
        }
    }
    let mut names = Vec::new();
    for c in &a.chains {
        check_name("chain", &c.name)?;
        if names.contains(&c.name.as_str()) {
            return Err(format!("chain `{}` declared twice", c.name));
        }
        names.push(c.name.as_str());
        let _ = writeln!(s, "  chain {} {{", c.name);
        if let Some(hook) = &c.hook {
            check_one_of(
                "hook",
                hook,
                &[
                    "prerouting",
                    "input",
                    "forward",
                    "output",
                    "postrouting",
                    "ingress",
                ],
            )?;
            let ty = c.ty.as_deref().unwrap_or("filter");
            check_one_of("chain type", ty, &["filter", "nat", "route"])?;
            let prio = check_priority(c.priority.as_ref().unwrap_or(&json!(0)))?;
            let _ = write!(s, "    type {ty} hook {hook} priority {prio};");
            if let Some(p) = &c.policy {
                check_one_of("policy", p, &["accept", "drop"])?;
                let _ = write!(s, " policy {p};");
            }
            s.push('\n');
        } else if c.ty.is_some() || c.priority.is_some() || c.policy.is_some() {
            return Err(format!(
                "chain `{}`: `type`, `priority` and `policy` need a `hook`",
                c.name
            ));
        }
        s.push_str("  }\n");
    }
    s.push_str("}\n");
    for r in &a.rules {
        if !names.contains(&r.chain.as_str()) {
            return Err(format!(
                "rule for chain `{}` which is not declared in `chains`",
                r.chain
            ));
        }
        validate_rule(&r.rule).map_err(|e| format!("rule `{}`: {e}", r.rule))?;
        let _ = writeln!(s, "add rule {f} {t} {} {}", r.chain, r.rule.trim());
    }
    Ok(s)
}

/// The nft script a `firewall` step with these (rendered) arguments loads: exactly what
/// [`FirewallExecutor`] applies. An error says why the step would fail before reaching nft.
pub fn rendered_ruleset(args: Value) -> Result<String, String> {
    let a: FirewallArgs = parse_args("firewall", args)?;
    build_script(&a)
}

/// What `nft -c` said of a ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NftCheck {
    /// nft accepts it: it would load.
    Loads,
    /// nft refuses it; its message.
    Rejected(String),
    /// This ruleset could not be checked here (it names an interface that exists only on
    /// the node); why.
    Unchecked(String),
    /// No ruleset can be checked here (`nft` is not installed or cannot run); why.
    Unavailable(String),
}

/// Where `nft` is, from `PATH` and the usual system folders (`/usr/sbin` is often not in a
/// user's `PATH`).
fn find_nft() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(std::path::PathBuf::from))
        .map(|d| d.join("nft"))
        .find(|p| p.is_file())
}

/// Check that `script` loads with `nft --check -f -`, which parses it and runs it through
/// the kernel as one transaction that is never committed: nothing is loaded. The check runs
/// in a fresh, empty network namespace made for it and gone with it (`unshare -n`, or
/// `unshare -r -n` without root), so the host's own ruleset is neither read nor touched; only
/// when no namespace can be made does it run `nft -c` in the current one (still
/// commit-free). The spawn goes through the engine's [`crate::LocalNode`] (argv only; the
/// script on stdin).
pub async fn nft_check(script: &str) -> NftCheck {
    use vacsine_core::node::NodeOps;
    let Some(nft) = find_nft() else {
        return NftCheck::Unavailable(
            "`nft` is not installed here (Debian package `nftables`), so firewall rulesets are not checked before they run".into(),
        );
    };
    let nft = nft.to_string_lossy().into_owned();
    let local = crate::LocalNode::new("nft-check");
    let mut why_not = Vec::new();
    let variants: [&[&str]; 3] = [&["unshare", "-n"], &["unshare", "-r", "-n"], &[]];
    for prefix in variants {
        let argv: Vec<String> = prefix
            .iter()
            .map(|s| s.to_string())
            .chain([nft.clone(), "-c".into(), "-f".into(), "-".into()])
            .collect();
        let out = match local
            .exec(
                &argv,
                &[],
                Some(script.as_bytes().to_vec()),
                std::time::Duration::from_secs(30),
            )
            .await
        {
            Ok(o) => o,
            Err(e) => {
                why_not.push(e.to_string());
                continue;
            }
        };
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if out.exit_code == Some(0) {
            return NftCheck::Loads;
        }
        // unshare's own failure (no right to make a namespace): try the next way.
        if err.starts_with("unshare:") || out.exit_code.is_none() {
            why_not.push(if err.is_empty() {
                format!("`{}` timed out", argv.join(" "))
            } else {
                err
            });
            continue;
        }
        if err.contains("Operation not permitted") {
            why_not.push(err);
            continue;
        }
        if err.contains("Interface does not exist") {
            return NftCheck::Unchecked(format!(
                "the ruleset names a network interface that exists only on the node: {err}"
            ));
        }
        return NftCheck::Rejected(err);
    }
    NftCheck::Unavailable(format!(
        "`nft -c` cannot run here ({}), so firewall rulesets are not checked before they run",
        why_not.join("; ")
    ))
}

/// The block of one table inside `nft list ruleset` output, as listed (counters included):
/// what `nft -f` takes back to recreate the table exactly.
fn table_block(ruleset: &str, family: &str, table: &str) -> Option<String> {
    let head = format!("table {family} {table} {{");
    let mut out = String::new();
    let mut inside = false;
    for l in ruleset.lines() {
        if !inside && l.trim_end() == head {
            inside = true;
        }
        if inside {
            out.push_str(l);
            out.push('\n');
            if l == "}" {
                return Some(out);
            }
        }
    }
    inside.then_some(out)
}

/// The listing of one table inside `nft list ruleset` output, counters removed (for
/// comparing a table before and after a step).
fn table_listing(ruleset: &str, family: &str, table: &str) -> Option<String> {
    let counters = regex::Regex::new(r"packets \d+ bytes \d+").expect("static regex");
    table_block(ruleset, family, table)
        .map(|t| counters.replace_all(&t, "packets _ bytes _").into_owned())
}

/// What undoing a step restores: one table, as it was before the step (`None`: it did not
/// exist, so undo deletes it). Nothing else in the ruleset is touched, so tables other parties
/// add or change meanwhile survive an undo.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct TableUndo {
    family: String,
    table: String,
    prior: Option<String>,
}

impl TableUndo {
    /// The nft script putting the table back (one transaction): declare it (so the delete
    /// cannot fail), delete it, then recreate its prior content if it had one.
    fn script(&self) -> Result<String, String> {
        check_name("table", &self.table)?;
        check_one_of(
            "family",
            &self.family,
            &["ip", "ip6", "inet", "arp", "bridge", "netdev"],
        )?;
        let (f, t) = (&self.family, &self.table);
        let mut s = format!("table {f} {t}\ndelete table {f} {t}\n");
        if let Some(prior) = &self.prior {
            if !prior.starts_with(&format!("table {f} {t} {{")) {
                return Err(format!("undo data of table {f} {t} holds another table"));
            }
            s.push_str(prior);
        }
        Ok(s)
    }
}

pub struct FirewallExecutor;

#[async_trait]
impl Executor for FirewallExecutor {
    fn name(&self) -> &'static str {
        "firewall"
    }
    fn summary(&self) -> &'static str {
        "Own one nftables table on the node: chains and rules (or a literal `script`) applied in one transaction; undo restores the prior table."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<FirewallArgs>()
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn literal_args(&self) -> &'static [&'static str] {
        &["script"]
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<FirewallArgs>("firewall", args)?;
        if crate::executor::contains_template(args) {
            return Ok(());
        }
        let a: FirewallArgs = parse_args("firewall", args.clone())?;
        build_script(&a).map(|_| ())
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: FirewallArgs = match parse_args("firewall", args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        let script = match build_script(&a) {
            Ok(s) => s,
            Err(e) => return StepResult::failed(e),
        };
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        let before = match node.nft_ruleset().await {
            Ok(r) => r,
            Err(e) => return StepResult::failed(format!("reading the ruleset: {e}")),
        };
        let old_table = table_listing(&before, &a.family, &a.table);
        let undo = TableUndo {
            family: a.family.clone(),
            table: a.table.clone(),
            prior: table_block(&before, &a.family, &a.table),
        };
        let undo = match serde_json::to_value(&undo) {
            Ok(v) => v,
            Err(e) => return StepResult::failed(format!("encoding undo data: {e}")),
        };
        if let Err(e) = ctx.save_undo(&undo) {
            return StepResult::failed(e);
        }
        if let Err(e) = node.nft_apply(&script).await {
            return StepResult::failed(format!("nft rejected the ruleset: {e}"))
                .msg(Level::Error, format!("script:\n{script}"));
        }
        let after = match node.nft_ruleset().await {
            Ok(r) => r,
            Err(e) => return StepResult::failed(format!("reading the ruleset: {e}")),
        };
        let new_table = table_listing(&after, &a.family, &a.table);
        let changed = old_table != new_table;
        let mut r = StepResult::ok(changed).msg(
            Level::Info,
            if changed {
                let verb = match (&old_table, a.state) {
                    (_, TableState::Absent) => "deleted",
                    (None, _) => "created",
                    (Some(_), _) => "replaced",
                };
                format!("table {} {} {verb}", a.family, a.table)
            } else {
                format!("table {} {} already as wanted", a.family, a.table)
            },
        );
        r.stdout = new_table.unwrap_or_default().into_bytes();
        if changed {
            r.undo = Some(undo);
        }
        r
    }
    async fn undo(&self, ctx: &ExecCtx, undo: Value) -> StepResult {
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        if undo.get("ruleset").is_some() && undo.get("table").is_none() {
            // Written by versions that replayed the whole ruleset: doing so now would drop
            // every table added since, so it is refused.
            return StepResult::failed(
                "undo data holds a whole ruleset (older vacsine): restoring it would remove \
                 tables added since; restore the step's table by hand",
            );
        }
        let u: TableUndo = match serde_json::from_value(undo) {
            Ok(u) => u,
            Err(e) => return StepResult::failed(format!("corrupt undo data: {e}")),
        };
        let script = match u.script() {
            Ok(s) => s,
            Err(e) => return StepResult::failed(format!("corrupt undo data: {e}")),
        };
        let what = format!("table {} {}", u.family, u.table);
        match node.nft_apply(&script).await {
            Ok(()) => StepResult::ok(true).msg(
                Level::Info,
                if u.prior.is_some() {
                    format!("{what} restored to its prior content")
                } else {
                    format!("{what} deleted (the step created it)")
                },
            ),
            Err(e) => StepResult::failed(format!("restoring {what}: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_whitelist() {
        for ok in [
            "tcp dport 23 drop",
            "ip saddr 1.2.3.4 drop",
            "tcp dport { 22, 23 } counter drop",
            "ip6 saddr 2001:db8::/32 drop",
            "meta l4proto tcp ct state established,related accept",
            "iifname \"eth0\" accept",
            "tcp flags & (syn|ack) == syn drop",
        ] {
            assert!(validate_rule(ok).is_ok(), "{ok}: {:?}", validate_rule(ok));
        }
        for bad in [
            "tcp dport 23 drop; flush ruleset",
            "drop\nflush ruleset",
            "ip saddr 1.2.3.4 drop } table inet x {",
            "tcp dport { 22, { 23 } } drop",
            "ip saddr $evil drop",
            "drop # comment",
            "",
            "ip saddr 1.2.3.4 drop } ; add table x",
            "tcp dport 22 \\\n drop",
            "tcp dport 22 include \"/etc/x\"",
            "tcp dport 22 drop \"unterminated",
        ] {
            assert!(validate_rule(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn builds_atomic_script() {
        let a: FirewallArgs = serde_json::from_value(json!({
            "chains": [{"name": "input", "hook": "input", "priority": 0, "policy": "accept"}],
            "rules": [{"chain": "input", "rule": "tcp dport 23 drop"}]
        }))
        .unwrap();
        let s = build_script(&a).unwrap();
        assert!(s.starts_with("table inet vacsine\ndelete table inet vacsine\n"));
        assert!(s.contains("type filter hook input priority 0; policy accept;"));
        assert!(s.ends_with("add rule inet vacsine input tcp dport 23 drop\n"));
        let bad: FirewallArgs = serde_json::from_value(json!({
            "chains": [{"name": "input"}],
            "rules": [{"chain": "output", "rule": "drop"}]
        }))
        .unwrap();
        assert!(build_script(&bad).unwrap_err().contains("not declared"));
    }

    #[test]
    fn undo_script_touches_only_its_table() {
        let rs = "table ip other {\n}\ntable inet vacsine {\n\tchain input {\n\t\ttcp dport 23 counter packets 3 bytes 180 drop\n\t}\n}\n";
        let u = TableUndo {
            family: "inet".into(),
            table: "vacsine".into(),
            prior: table_block(rs, "inet", "vacsine"),
        };
        let s = u.script().unwrap();
        assert_eq!(
            s,
            "table inet vacsine\ndelete table inet vacsine\ntable inet vacsine {\n\tchain input {\n\t\ttcp dport 23 counter packets 3 bytes 180 drop\n\t}\n}\n"
        );
        assert!(!s.contains("flush") && !s.contains("other"));
        let created = TableUndo { prior: None, ..u };
        assert_eq!(
            created.script().unwrap(),
            "table inet vacsine\ndelete table inet vacsine\n"
        );
        let forged = TableUndo {
            prior: Some("table ip other {\n}\n".into()),
            ..created
        };
        assert!(forged.script().is_err());
    }

    #[test]
    fn extracts_table_listing() {
        let rs = "table ip other {\n}\ntable inet vacsine {\n\tchain input {\n\t\ttcp dport 23 counter packets 3 bytes 180 drop\n\t}\n}\n";
        let t = table_listing(rs, "inet", "vacsine").unwrap();
        assert!(t.contains("packets _ bytes _"));
        assert!(table_listing(rs, "inet", "nope").is_none());
    }
}

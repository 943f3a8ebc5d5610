//! The firewall executor against real nftables, in a fresh network namespace.

use crate::support::*;
use serde_json::json;
use std::process::Command;
use std::sync::Arc;
use vacsine_core::node::NodeOps;
use vacsine_core::record::StepStatus;
use vacsine_engine::{LocalNode, RunRequest, RunStatus};

/// A network namespace deleted on drop.
struct Netns(String);

impl Netns {
    fn new() -> Option<Self> {
        if !have("nft") || !have("ip") {
            return None;
        }
        let name = format!("vx-{}", uniq());
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| Netns(name))
    }
    fn ruleset(&self) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.0, "nft", "list", "ruleset"])
            .output()
            .unwrap();
        assert!(o.status.success());
        String::from_utf8(o.stdout).unwrap()
    }
    fn node(&self) -> Arc<dyn NodeOps> {
        Arc::new(LocalNode::new("fw").in_netns(&self.0))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The messages of a step's first record.
fn texts(r: &vacsine_engine::RunReport, step: &str) -> Vec<String> {
    recs(r, step)[0]
        .messages
        .iter()
        .map(|m| m.text.clone())
        .collect()
}

fn netns_or_skip() -> Option<Netns> {
    let ns = Netns::new();
    if ns.is_none() {
        assert!(
            std::env::var_os("VACSINE_REQUIRE_NFT").is_none(),
            "nftables/netns required but unavailable"
        );
        eprintln!("SKIP: nft or ip netns unavailable (needs root)");
    }
    ns
}

const SPEC: &str = r#"
  inputs:
    port: { type: port }
  steps:
    - id: block
      uses: firewall
      with:
        table: vacsine
        family: inet
        chains:
          - { name: input, hook: input, priority: 0, policy: accept }
        rules:
          - { chain: input, rule: "tcp dport {{ inputs.port }} counter drop" }
"#;

#[tokio::test]
async fn firewall_applies_atomically_reports_changed_and_undoes() {
    let Some(ns) = netns_or_skip() else { return };
    // A pre-existing table that must survive, and be restored as it was.
    let pre = "table ip keep {\n\tchain c {\n\t\ttype filter hook output priority 0; policy accept;\n\t\tudp dport 53 accept\n\t}\n}\n";
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(pre.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(st.success());
    let before = ns.ruleset();

    let e = engine();
    let go = |port: u16| {
        let mut req = RunRequest::new(wf("fw", SPEC));
        req.inputs = inputs(json!({"port": port}));
        req.nodes = nodes(&[ns.node()]);
        req
    };
    let r1 = e.run(go(23)).await.unwrap();
    assert_eq!(r1.status, RunStatus::Succeeded, "{r1:#?}");
    assert!(recs(&r1, "block")[0].changed);
    // Issue 6: a new table is said to be created, an existing one replaced.
    assert_eq!(texts(&r1, "block"), ["table inet vacsine created"]);
    let after = ns.ruleset();
    assert!(
        after.contains("tcp dport 23 counter packets 0 bytes 0 drop"),
        "{after}"
    );
    assert!(after.contains("table ip keep"), "{after}");

    let r2 = e.run(go(23)).await.unwrap();
    assert!(
        !recs(&r2, "block")[0].changed,
        "re-applying the same table must report unchanged"
    );

    let r3 = e.run(go(2323)).await.unwrap();
    assert!(recs(&r3, "block")[0].changed);
    assert_eq!(texts(&r3, "block"), ["table inet vacsine replaced"]);
    let after3 = ns.ruleset();
    assert!(
        after3.contains("dport 2323") && !after3.contains("dport 23 "),
        "{after3}"
    );

    // Undo the latest change: back to port 23 exactly; then the first: back to the start.
    e.rollback(&r3.run_id, nodes(&[ns.node()])).await.unwrap();
    assert_eq!(ns.ruleset(), after);
    let rb = e.rollback(&r1.run_id, nodes(&[ns.node()])).await.unwrap();
    assert_eq!(rb.status, RunStatus::RolledBack, "{rb:#?}");
    assert_eq!(ns.ruleset(), before);
    assert_eq!(status(&rb, "block"), StepStatus::RolledBack);
}

#[tokio::test]
async fn firewall_refuses_injected_rules_without_touching_nft() {
    let Some(ns) = netns_or_skip() else { return };
    let before = ns.ruleset();
    let w = wf(
        "fwbad",
        r#"
  inputs:
    rule: { type: string }
  steps:
    - id: block
      uses: firewall
      with:
        chains: [{ name: input, hook: input, priority: 0, policy: accept }]
        rules: [{ chain: input, rule: "{{ inputs.rule }}" }]
"#,
    );
    let e = engine();
    for bad in [
        "tcp dport 22 drop; flush ruleset",
        "tcp dport 22 drop\nadd table ip evil",
        "tcp dport 22 drop } table ip evil { chain x { }",
        "ip saddr $x drop",
    ] {
        let mut req = RunRequest::new(w.clone());
        req.inputs = inputs(json!({"rule": bad}));
        req.nodes = nodes(&[ns.node()]);
        let r = e.run(req).await.unwrap();
        assert_eq!(r.status, RunStatus::Failed, "{bad:?} accepted");
        assert_eq!(ns.ruleset(), before, "{bad:?} changed the ruleset");
    }
}

fn nft_in(ns: &Netns, script: &str) {
    let st = Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait()
        })
        .unwrap();
    assert!(st.success(), "nft -f failed on:\n{script}");
}

fn list_table(ns: &Netns, family: &str, table: &str) -> Option<String> {
    let o = Command::new("ip")
        .args([
            "netns", "exec", &ns.0, "nft", "list", "table", family, table,
        ])
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8(o.stdout).unwrap())
}

/// Issue 7: undoing a failed run flushed the whole ruleset and replayed the old one, so a table
/// added by someone else during the run disappeared. Undo must touch only the step's tables.
#[tokio::test]
async fn issue_7_firewall_undo_restores_only_the_tables_the_steps_touched() {
    let Some(ns) = netns_or_skip() else { return };
    // The table the run changes, with a counter that has counted (restored byte for byte).
    nft_in(
        &ns,
        "table inet vacsine {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t\tudp dport 53 counter packets 7 bytes 420 accept\n\t}\n}\n",
    );
    let touched_before = list_table(&ns, "inet", "vacsine").unwrap();
    assert!(list_table(&ns, "inet", "created").is_none());
    let w = wf(
        "fw7",
        r#"
  steps:
    - id: change
      uses: firewall
      with:
        table: vacsine
        chains: [{ name: input, hook: input, priority: 0, policy: drop }]
        rules: [{ chain: input, rule: "tcp dport 23 drop" }]
    - id: create
      uses: firewall
      needs: [change]
      with:
        table: created
        chains: [{ name: output, hook: output, priority: 0, policy: accept }]
    - id: third-party
      uses: command
      needs: [create]
      with: { argv: [nft, add, table, ip, foreign] }
    - id: third-party-chain
      uses: command
      needs: [third-party]
      with: { argv: [nft, add, chain, ip, foreign, keep] }
    - id: boom
      uses: command
      needs: [third-party-chain]
      with: { argv: ["false"] }
"#,
    );
    let mut req = RunRequest::new(w);
    req.nodes = nodes(&[ns.node()]);
    let r = engine().run(req).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed, "{r:#?}");
    assert_eq!(status(&r, "change"), StepStatus::RolledBack, "{r:#?}");
    assert_eq!(status(&r, "create"), StepStatus::RolledBack, "{r:#?}");
    assert_eq!(status(&r, "undo:change"), StepStatus::Succeeded, "{r:#?}");

    let foreign = list_table(&ns, "ip", "foreign");
    assert!(
        foreign.as_deref().is_some_and(|t| t.contains("chain keep")),
        "the table added during the run was removed by undo:\n{}",
        ns.ruleset()
    );
    assert_eq!(
        list_table(&ns, "inet", "vacsine").as_deref(),
        Some(touched_before.as_str()),
        "the changed table is not back to its prior state"
    );
    assert!(
        list_table(&ns, "inet", "created").is_none(),
        "the table the run created is still there:\n{}",
        ns.ruleset()
    );
}

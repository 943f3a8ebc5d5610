//! Issue 15, 4(a): a site cut off longer than its run's lease finishes the run on its own;
//! the orchestrator had failed the run (lease lost). When the link returns, its records
//! arrive once and its own end is kept beside the orchestrator's: the user sees both, with
//! when the site's end arrived, never one silently hiding the other.

use super::{net_tools, submit, text, wait_until, workflow, Orch, Site};
use std::time::Duration;

#[test]
fn issue15_a_run_ended_by_a_lost_lease_shows_the_sites_own_end_when_it_arrives() {
    if !net_tools(&["ip"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let site = Site::new("l", 3);
    // A short lease: the cut outlasts it.
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 1_500);
    let _agent = site.agent(&o, "edge-l", &d.path().join("agent"));
    let wf = workflow(
        d.path(),
        "late",
        &[
            ("first", "echo first"),
            ("slow", "sleep 5; echo slow"),
            ("last", "echo last"),
        ],
    );
    let run = submit(&o, &wf, "edge-l");
    wait_until(Duration::from_secs(30), "the first record", || {
        (o.run(&run)["records"].as_u64() >= Some(1)).then_some(())
    });
    site.cut();
    // The orchestrator ends the run without the site: its lease lapsed.
    let failed = wait_until(Duration::from_secs(30), "the lease to lapse", || {
        let r = o.run(&run);
        (r["status"] == "failed").then_some(r)
    });
    let msg = failed["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("stopped renewing its lease"), "{failed}");
    assert!(failed.get("site_outcome").is_none(), "{failed}");
    // Meanwhile the site finishes every step on its own.
    std::thread::sleep(Duration::from_secs(6));
    site.restore();
    let r = wait_until(Duration::from_secs(60), "the site's own end", || {
        let r = o.run(&run);
        (r["records"] == 3 && r["site_outcome"].is_object()).then_some(r)
    });
    // The orchestrator's end stands, and the site's is beside it, with when it came.
    assert_eq!(r["status"], "failed", "{r}");
    assert_eq!(r["message"].as_str(), Some(msg.as_str()), "{r}");
    assert_eq!(r["site_outcome"]["status"], "succeeded", "{r}");
    let reported = r["site_outcome"]["reported"].as_str().unwrap();
    assert!(reported > failed["finished"].as_str().unwrap(), "{r}");
    // People read both in one line.
    let h = o.cli(&["logs", &run]);
    assert!(h.status.success(), "{}", text(&h));
    let t = text(&h);
    assert!(
        t.contains("stopped renewing its lease")
            && t.contains("the site's own end")
            && t.contains(": succeeded"),
        "{t}"
    );
    let runs = o.cli(&["runs", "--site", "edge-l"]);
    assert!(
        text(&runs).contains("the site's own end"),
        "{}",
        text(&runs)
    );
}

//! Issue 19, item 7: operator submissions are retried while the orchestrator is unreachable,
//! under one idempotency key per invocation, so that none is ever made twice: not when the
//! orchestrator comes up late, not when an answer is lost on the way back, not when a script
//! sends the same key again. Giving up says how long it tried and exits with 3.

use super::{free_port, text, workflow, Orch, TestDb, BIN};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The CLI with the connection given in full (no data folder to read it from).
fn cli(url: &str, pin: &str, token: &str, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .args(["--orchestrator", url, "--pin", pin, "--token", token])
        .args(["--orchestrator-data", "/nonexistent/vacsine-test"])
        .env("NO_COLOR", "1")
        .env_remove("VACSINE_RETRY_FOR")
        .env_remove("VACSINE_IDEMPOTENCY_KEY");
    c
}

fn token(o: &Orch) -> String {
    std::fs::read_to_string(o.data.join("operator.token"))
        .unwrap()
        .trim()
        .to_string()
}

fn runs(o: &Orch) -> Vec<Value> {
    o.status()["runs"].as_array().unwrap().clone()
}

fn run_id(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)));
    v["run_id"].as_str().unwrap().to_string()
}

#[test]
fn issue19_a_run_submitted_while_the_orchestrator_is_down_is_queued_once_when_it_starts() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("orch");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut o = Orch::start(&data, &listen, 3000);
    o.site("edge-r");
    let (url, pin, tok) = (o.url.clone(), o.pin.clone(), token(&o));
    o.kill9();
    let wf = workflow(d.path(), "later", &[("one", "echo one")]);
    let wf = wf.to_str().unwrap();
    let child = cli(
        &url,
        &pin,
        &tok,
        &["run", wf, "--site", "edge-r", "--detach"],
    )
    .args(["--format", "json", "--retry-for", "90s"])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let o = Orch::start(&data, &listen, 3000);
    let out = child.wait_with_output().unwrap();
    let id = run_id(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trying again in"), "a line per wait: {err}");
    assert!(err.contains("taken by the orchestrator at try"), "{err}");
    let all = runs(&o);
    assert_eq!(all.len(), 1, "exactly one run: {all:?}");
    assert_eq!(all[0]["id"], id.as_str());
}

#[test]
fn issue19_a_submission_gives_up_after_retry_for_with_exit_3_and_says_why() {
    let url = format!("https://127.0.0.1:{}", free_port());
    let pin = format!("sha256:{}", "0".repeat(64));
    let d = tempfile::tempdir().unwrap();
    let wf = workflow(d.path(), "never", &[("one", "echo one")]);
    let wf = wf.to_str().unwrap();
    for (retry, min, max) in [("2s", 1.0, 10.0), ("0", 0.0, 5.0)] {
        let t0 = Instant::now();
        let out = cli(&url, &pin, "t", &["run", wf, "--site", "s", "--detach"])
            .args(["--retry-for", retry])
            .output()
            .unwrap();
        let took = t0.elapsed().as_secs_f64();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(3), "{t}");
        assert!(t.contains("submission not confirmed"), "{t}");
        assert!(t.contains("tried for") && t.contains("last error"), "{t}");
        assert!(t.contains("unreachable"), "{t}");
        assert!(t.contains("--retry-for"), "the help names the flag: {t}");
        assert!(
            took >= min && took < max,
            "--retry-for {retry}: took {took}s"
        );
        if retry == "0" {
            assert!(t.contains("(1 attempt)"), "{t}");
            assert!(!t.contains("trying again"), "{t}");
        }
    }
    // Under --format json the error is JSON, with the same exit code.
    let out = cli(&url, &pin, "t", &["run", wf, "--site", "s", "--detach"])
        .args(["--retry-for", "0", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("submission not confirmed"));
}

#[test]
fn issue19_the_same_idempotency_key_twice_makes_one_run_and_answers_the_same_id() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 3000);
    o.site("edge-k");
    let (url, pin, tok) = (o.url.clone(), o.pin.clone(), token(&o));
    let wf = workflow(d.path(), "once", &[("one", "echo one")]);
    let wf = wf.to_str().unwrap();
    let key = format!("test-key-{}", std::process::id());
    let submit = |key: &str| {
        cli(
            &url,
            &pin,
            &tok,
            &["run", wf, "--site", "edge-k", "--detach"],
        )
        .args(["--format", "json", "--idempotency-key", key])
        .output()
        .unwrap()
    };
    let first = run_id(&submit(&key));
    let second = run_id(&submit(&key));
    assert_eq!(first, second, "a repeat is answered with the first answer");
    assert_eq!(runs(&o).len(), 1);
    // Another key: another run.
    let third = run_id(&submit(&format!("{key}-2")));
    assert_ne!(third, first);
    assert_eq!(runs(&o).len(), 2);
    // The same key for another request is refused, and nothing is made.
    let out = cli(&url, &pin, &tok, &["site", "create", "other"])
        .args(["--idempotency-key", &key])
        .output()
        .unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("idempotency_key_reused"), "{t}");
    let sites = o.json(&["site", "list", "--format", "json"]);
    assert_eq!(sites.as_array().unwrap().len(), 1, "{sites}");
    // A key that is not one is refused here, before anything is sent.
    let out = submit("bad key!");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("--idempotency-key"), "{}", text(&out));
}

/// A TCP relay to `to` that, on its first connection, passes the request on but loses the
/// answer: once the client has sent `request_bytes`, nothing more goes back and the client's
/// side is closed a moment later (the orchestrator has the whole request and answers into
/// the void). Later connections are relayed both ways.
struct LosingRelay {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl LosingRelay {
    fn start(to: &str, request_bytes: u64) -> LosingRelay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let to = to.to_string();
        let st = stop.clone();
        std::thread::spawn(move || {
            let mut first = true;
            for c in l.incoming() {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = c else { continue };
                let server = TcpStream::connect(&to).unwrap();
                let lose = first.then_some(request_bytes);
                first = false;
                std::thread::spawn(move || relay(client, server, lose));
            }
        });
        LosingRelay { addr, stop }
    }
}

impl Drop for LosingRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn relay(client: TcpStream, server: TcpStream, lose_after: Option<u64>) {
    let sent = Arc::new(AtomicU64::new(0));
    let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let up_sent = sent.clone();
    let up = std::thread::spawn(move || {
        let mut buf = [0u8; 16384];
        while let Ok(n) = c_in.read(&mut buf) {
            if n == 0 || s_out.write_all(&buf[..n]).is_err() {
                break;
            }
            up_sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        let _ = s_out.shutdown(std::net::Shutdown::Write);
    });
    let (mut s_in, mut c_out) = (server, client);
    let mut buf = [0u8; 16384];
    while let Ok(n) = s_in.read(&mut buf) {
        if n == 0 {
            break;
        }
        if lose_after.is_some_and(|l| sent.load(Ordering::Relaxed) >= l) {
            // The answer: lost. Let the orchestrator finish, then cut the client off.
            std::thread::sleep(Duration::from_millis(300));
            let _ = c_out.shutdown(std::net::Shutdown::Both);
            let _ = s_in.shutdown(std::net::Shutdown::Both);
            break;
        }
        if c_out.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = c_out.shutdown(std::net::Shutdown::Both);
    let _ = up.join();
}

#[test]
fn issue19_a_submission_whose_answer_is_lost_is_made_once_and_answered_on_the_retry() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 3000);
    o.site("edge-l");
    let (pin, tok) = (o.pin.clone(), token(&o));
    // A request far larger than a TLS handshake: once this much went up, the request did.
    let big = "x".repeat(64 * 1024);
    let wf = workflow(d.path(), "lost", &[("one", &format!("echo {big}"))]);
    let relay = LosingRelay::start(&o.addr(), 60 * 1024);
    let url = format!("https://{}", relay.addr);
    let out = cli(
        &url,
        &pin,
        &tok,
        &["run", wf.to_str().unwrap(), "--site", "edge-l"],
    )
    .args(["--detach", "--format", "json", "--retry-for", "60s"])
    .output()
    .unwrap();
    let id = run_id(&out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("trying again in"),
        "the first answer was lost: {err}"
    );
    let all = runs(&o);
    assert_eq!(all.len(), 1, "made once: {all:?}");
    assert_eq!(all[0]["id"], id.as_str(), "the retry got the first answer");
    drop(relay);
}

/// On PostgreSQL, a key is one claim for every replica: the same submission sent to replica
/// A, then (its answer lost, say) to replica B, is one run, and B answers with A's id.
#[test]
fn issue19_replicas_on_postgres_answer_a_repeated_key_with_the_first_run() {
    let Some(db) = TestDb::create("issue19_replicas_idempotency") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("orch");
    let a = Orch::start_on(&data, "127.0.0.1:0", 10_000, &db.url);
    let b = Orch::start_on(&data, "127.0.0.1:0", 10_000, &db.url);
    a.site("edge-p");
    let tok = token(&a);
    let wf = workflow(d.path(), "shared", &[("one", "echo one")]);
    let wf = wf.to_str().unwrap();
    let key = format!("pg-key-{}", std::process::id());
    let submit = |o: &Orch| {
        cli(
            &o.url,
            &o.pin,
            &tok,
            &["run", wf, "--site", "edge-p", "--detach"],
        )
        .args(["--format", "json", "--idempotency-key", &key])
        .output()
        .unwrap()
    };
    let first = run_id(&submit(&a));
    let second = run_id(&submit(&b));
    assert_eq!(first, second);
    assert_eq!(runs(&a).len(), 1);
    assert_eq!(runs(&b).len(), 1);
}

//! Issue 17, the web console, in a real headless Chromium driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`): real orchestrator and agent processes, users
//! made with `vacsine user add`. Log in, see two sites (one cut off, shown as such), approve a
//! pending action as an operator with the page updated live (no reload), be refused as a
//! viewer, a form without its CSRF token refused, hostile strings from an event and a step's
//! output shown escaped (no script runs), a run's timeline, a registry diff, logout, a revoked
//! user's session ended. Screenshots of each page in `target/console-screenshots/`.
//!
//! Without chromium and chromedriver the test says it is skipped, unless
//! `VACSINE_REQUIRE_CHROMIUM=1` (CI): then it fails.

use super::{text, wait_until, Agent, Orch};
use crate::write;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Scripts that would set `window.__xss` if they ever ran.
const HOSTILE: &str = r#"<script>window.__xss=1</script><img src=x onerror="window.__xss=1">"#;

const NOTE: &str = r#"apiVersion: vacsine.io/v1
kind: Workflow
metadata:
  name: note-touch
spec:
  inputs:
    who:
      type: string
  steps:
    - id: note
      uses: command
      with:
        argv: [echo, "touched {{ inputs.who }}"]
    - id: after
      needs: [note]
      uses: command
      with:
        argv: [sleep, "0.3"]
"#;

const RUN_ON_TOUCH: &str = r#"apiVersion: vacsine.io/v1
kind: Response
metadata:
  name: note-on-touch
spec:
  on:
    events: [indicator]
    sources: [opencanary]
  decide:
    workflow:
      name: note-touch
      inputs:
        who: {event: node}
  mode: orchestrated
"#;

/// A minimal W3C WebDriver client over HTTP/1.1 on loopback (chromedriver).
struct Driver {
    child: Child,
    port: u16,
    session: String,
    shots: PathBuf,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn http(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("chromedriver");
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let b = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    // The head, then the body by its length or its chunks (chromedriver may keep the
    // connection open: never read to its end).
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    let mut more = |raw: &mut Vec<u8>| {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "{method} {path}: the answer was cut");
        raw.extend_from_slice(&buf[..n]);
    };
    let at = loop {
        if let Some(p) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        more(&mut raw);
    };
    let head = String::from_utf8_lossy(&raw[..at]).to_ascii_lowercase();
    let len: Option<usize> = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok());
    let body = if let Some(n) = len {
        while raw.len() < at + 4 + n {
            more(&mut raw);
        }
        raw[at + 4..at + 4 + n].to_vec()
    } else {
        while !raw.ends_with(b"0\r\n\r\n") {
            more(&mut raw);
        }
        let mut out = Vec::new();
        let mut rest = &raw[at + 4..];
        loop {
            let nl = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(String::from_utf8_lossy(&rest[..nl]).trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[nl + 2..nl + 2 + n]);
            rest = &rest[nl + 2 + n + 2..];
        }
        out
    };
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&body)))
}

impl Driver {
    fn start(shots: PathBuf, profile: &Path) -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        wait_until(Duration::from_secs(20), "chromedriver", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--ignore-certificate-errors", "--window-size=1280,900",
                         format!("--user-data-dir={}", profile.display())]
            }
        }}});
        // Owned before the session is asked for: chromedriver is stopped even if that fails.
        let mut d = Driver {
            child,
            port,
            session: String::new(),
            shots,
        };
        let v = http(port, "POST", "/session", Some(&caps));
        d.session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"))
            .to_string();
        std::fs::create_dir_all(&d.shots).unwrap();
        d
    }

    fn cmd(&self, method: &str, what: &str, body: Option<Value>) -> Value {
        let v = http(
            self.port,
            method,
            &format!("/session/{}{what}", self.session),
            body.as_ref(),
        );
        if let Some(e) = v["value"]["error"].as_str() {
            panic!("WebDriver {method} {what}: {e}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn url(&self) -> String {
        self.cmd("GET", "/url", None).as_str().unwrap().to_string()
    }

    fn find(&self, css: &str) -> String {
        let v = self.cmd(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        match v[ELEMENT].as_str() {
            Some(e) => e.to_string(),
            None => panic!(
                "no element `{css}` at {}: {v}\n{}",
                self.url(),
                self.js("return document.body.innerText")
            ),
        }
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    /// Run `script` in the page (its `return` is the answer).
    fn js(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    /// Run `script`, which calls `arguments[0]` with its answer (a fetch).
    fn js_async(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/async",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn screenshot(&self, name: &str) {
        use base64::Engine as _;
        let b64 = self.cmd("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap();
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    fn size(&self, w: u32, h: u32) {
        self.cmd(
            "POST",
            "/window/rect",
            Some(json!({"width": w, "height": h})),
        );
    }

    fn wait_js(&self, what: &str, script: &str) -> Value {
        wait_until(Duration::from_secs(30), what, || {
            let v = self.js(script);
            (!v.is_null() && v != false).then_some(v)
        })
    }

    fn login(&self, base: &str, token: &str) {
        self.go(&format!("{base}/console/login"));
        self.type_in("#token", token);
        self.click("#login");
        self.wait_js(
            "the sites page after login",
            "return document.querySelector('#sites') !== null",
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = std::panic::catch_unwind(|| {
                http(
                    self.port,
                    "DELETE",
                    &format!("/session/{}", self.session),
                    None,
                )
            });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn chromium_present() -> bool {
    let has = |c: &str| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    has("chromedriver") && Path::new("/usr/bin/chromium").exists()
}

/// A canary touch whose node (the Response's workflow input) is `node`.
fn canary(node: &str) -> String {
    json!({"dst_host": "", "dst_port": 2222, "local_time": "2026-12-07 01:00:01.000000",
           "logdata": {"USERNAME": HOSTILE}, "logtype": 4002, "node_id": node,
           "src_host": "198.51.100.7", "src_port": 40001,
           "utc_time": "2026-12-07 01:00:01.000000"})
    .to_string()
}

#[test]
fn issue17_the_console_in_a_real_browser() {
    if !chromium_present() {
        assert!(
            std::env::var("VACSINE_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
            "VACSINE_REQUIRE_CHROMIUM=1 but chromium or chromedriver is missing (apt-get install chromium chromium-driver)"
        );
        eprintln!("skipped: chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let wf = write(d.path(), "note.yaml", NOTE);
    let resp = write(d.path(), "run.yaml", RUN_ON_TOUCH);
    o.json(&[
        "push",
        wf.to_str().unwrap(),
        resp.to_str().unwrap(),
        "--format",
        "json",
    ]);
    // Site edge-b: an agent enrolled, then gone (cut off once not seen for a minute).
    let key_b = o.site("edge-b");
    let gone = Agent::start(&o, &key_b, "edge-b-1", &d.path().join("agent-b"));
    drop(gone);
    let cut_at = std::time::Instant::now();
    let key_a = o.site("edge-a");
    let data = d.path().join("agent-a");
    let agent = Agent::start(&o, &key_a, "edge-a-1", &data);
    wait_until(
        Duration::from_secs(30),
        "the bundle with the Response",
        || {
            agent
                .log()
                .contains("Response/note-on-touch@1")
                .then_some(())
        },
    );
    let ev = write(d.path(), "t.jsonl", &format!("{}\n", canary(HOSTILE)));
    let ing = Command::new(env!("CARGO_BIN_EXE_vacsine"))
        .args(["agent", "ingest", "--from", "opencanary"])
        .arg(&ev)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(ing.status.success(), "{}", text(&ing));
    let approval = wait_until(Duration::from_secs(30), "the run awaiting approval", || {
        o.json(&["approvals", "--format", "json"])
            .as_array()
            .unwrap()
            .first()
            .cloned()
    });
    let approval_id = approval["id"].as_str().unwrap().to_string();
    // Users, through the CLI.
    let alice = o.json(&[
        "user", "add", "alice", "--role", "operator", "--format", "json",
    ]);
    let bob = o.json(&["user", "add", "bob", "--role", "viewer", "--format", "json"]);
    let (alice, bob) = (
        alice["token"].as_str().unwrap().to_string(),
        bob["token"].as_str().unwrap().to_string(),
    );
    let listed = o.cli(&["user", "list"]);
    assert!(
        text(&listed).contains("alice (operator)"),
        "{}",
        text(&listed)
    );
    let bad = o.cli(&["user", "add", "carol", "--role", "root"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/console-screenshots");
    let b = Driver::start(shots, &d.path().join("chromium"));
    let base = o.url.clone();
    b.go(&format!("{base}/console/"));
    assert!(b.url().ends_with("/console/login"), "{}", b.url());
    b.screenshot("01-login");

    // The viewer: sees the approval and the hostile strings as text, cannot approve.
    b.login(&base, &bob);
    b.go(&format!("{base}/console/events"));
    b.wait_js(
        "the approval",
        &format!("return document.querySelector('tr[data-approval=\"{approval_id}\"]') !== null"),
    );
    let node = b.js("return document.querySelector('#events td.node').textContent");
    assert_eq!(node, HOSTILE, "the event's node shown as text");
    let input = b.js("return document.querySelector('#approvals span.input').textContent");
    assert_eq!(input, HOSTILE);
    assert_eq!(
        b.js("return typeof window.__xss"),
        "undefined",
        "a hostile string ran"
    );
    assert_eq!(b.js("return document.querySelectorAll('script').length"), 1);
    assert_eq!(
        b.js("return document.querySelectorAll('#live img').length"),
        0
    );
    assert_eq!(
        b.js("return document.querySelectorAll('button.approve').length"),
        0
    );
    b.screenshot("02-events-viewer");
    // A viewer's approval, made by hand with the session's own CSRF token: refused (403).
    let forged = b.js_async(&format!(
        "const done = arguments[0];
         const csrf = document.querySelector('input[name=csrf]').value;
         fetch('/console/approvals/{approval_id}', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}},
               body: 'csrf=' + csrf + '&decision=approve'}}).then(r => done(r.status));"
    ));
    assert_eq!(forged, 403);
    b.click("#logout");
    b.wait_js(
        "the login page",
        "return location.pathname === '/console/login'",
    );
    b.go(&format!("{base}/console/events"));
    assert!(
        b.url().ends_with("/console/login"),
        "logged out: {}",
        b.url()
    );

    // The operator: a form without its CSRF token is refused; with it, approved, and the
    // page updates live without a reload.
    b.login(&base, &alice);
    b.go(&format!("{base}/console/events"));
    b.wait_js(
        "live updates on",
        "return document.getElementById('live-state').textContent === 'live updates: on'",
    );
    let no_csrf = b.js_async(&format!(
        "const done = arguments[0];
         fetch('/console/approvals/{approval_id}', {{method: 'POST', headers: {{'content-type': 'application/x-www-form-urlencoded'}},
               body: 'decision=approve'}}).then(r => done(r.status));"
    ));
    assert_eq!(no_csrf, 403);
    assert_eq!(
        o.json(&["approvals", "--format", "json"])[0]["state"],
        "awaiting"
    );
    b.screenshot("03-events-operator");
    b.js("window.__same_page = 42; return null");
    b.click(&format!(
        "tr[data-approval=\"{approval_id}\"] button.approve"
    ));
    b.wait_js(
        "the approval shown approved, live",
        &format!("const r = document.querySelector('tr[data-approval=\"{approval_id}\"] td.state'); return r && r.textContent.trim() === 'approved'"),
    );
    assert_eq!(
        b.js("return window.__same_page"),
        42,
        "the page was reloaded"
    );
    assert_eq!(
        o.json(&["approvals", "--format", "json"])[0]["state"],
        "approved"
    );
    b.screenshot("04-events-approved");

    // The approved run ran at edge-a: the runs list, filtered, then its timeline.
    let run = wait_until(
        Duration::from_secs(40),
        "the approved run succeeded",
        || {
            o.status()["runs"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["status"] == "succeeded")
                .cloned()
        },
    );
    let run_id = run["id"].as_str().unwrap().to_string();
    b.go(&format!("{base}/console/runs?site=edge-a&status=succeeded"));
    assert_eq!(
        b.js("return document.querySelectorAll('#runs tbody tr').length"),
        1
    );
    b.screenshot("05-runs");
    b.go(&format!("{base}/console/runs?site=edge-b"));
    assert_eq!(
        b.js("return document.querySelectorAll('#runs tbody tr').length"),
        0
    );
    b.go(&format!("{base}/console/runs"));
    b.click("a.run");
    b.wait_js(
        "the run page",
        "return document.querySelector('#gantt') !== null",
    );
    assert_eq!(
        b.js("return document.getElementById('run-id').textContent"),
        run_id
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#gantt g.bar').length"),
        2
    );
    assert_eq!(
        b.js("return document.querySelectorAll('#gantt rect.st-succeeded').length"),
        2
    );
    let out = b.js(
        "return Array.from(document.querySelectorAll('pre.out')).map(p => p.textContent).join('')",
    );
    assert!(
        out.as_str()
            .unwrap()
            .contains(&format!("touched {HOSTILE}")),
        "{out}"
    );
    assert_eq!(
        b.js("return typeof window.__xss"),
        "undefined",
        "a hostile string ran"
    );
    b.screenshot("06-run-timeline");
    b.size(390, 844);
    b.screenshot("07-run-timeline-phone");
    b.size(1280, 900);

    // The registry: a second version and the diff between the two.
    let wf2 = write(
        d.path(),
        "note.yaml",
        &NOTE.replace("touched", "touched at last"),
    );
    o.json(&["push", wf2.to_str().unwrap(), "--format", "json"]);
    b.go(&format!("{base}/console/registry"));
    b.screenshot("08-registry");
    b.click("a.diff");
    b.wait_js(
        "the diff",
        "return document.querySelector('#diff') !== null",
    );
    let ins = b.js("return Array.from(document.querySelectorAll('#diff .ins')).map(s => s.textContent).join('')");
    let del = b.js("return Array.from(document.querySelectorAll('#diff .del')).map(s => s.textContent).join('')");
    assert!(ins.as_str().unwrap().contains("touched at last"), "{ins}");
    assert!(del.as_str().unwrap().contains("touched {{"), "{del}");
    b.screenshot("09-registry-diff");

    // The sites: edge-a online, edge-b cut off since its agent was last seen.
    let left = Duration::from_secs(65).saturating_sub(cut_at.elapsed());
    std::thread::sleep(left);
    b.go(&format!("{base}/console/"));
    let state = |site: &str| {
        b.js(&format!(
            "return document.querySelector('tr[data-site=\"{site}\"] td.state').textContent.trim()"
        ))
    };
    assert_eq!(state("edge-a"), "online");
    let cut = state("edge-b");
    assert!(
        cut.as_str().unwrap().starts_with("cut off since 20"),
        "{cut}"
    );
    assert_eq!(
        b.js("return document.querySelector('tr[data-site=\"edge-b\"]').className"),
        "cutoff"
    );
    b.screenshot("10-sites");
    b.size(390, 844);
    b.screenshot("11-sites-phone");
    b.size(1280, 900);

    // Posture: reached from the navigation; no assessment made yet (no Schedule pushed).
    b.click("header.top nav a[href='/console/posture']");
    b.wait_js(
        "the posture page",
        "return document.querySelector('#posture-sites') !== null",
    );
    assert_eq!(
        b.js("return document.querySelector('main h1').textContent"),
        "Posture"
    );
    let empty = b.js("return document.querySelector('main').textContent");
    assert!(
        empty.as_str().unwrap().contains("No assessment yet"),
        "{empty}"
    );
    b.screenshot("12-posture");

    // Revoking alice ends her session: the next page is the login form.
    let rv = o.json(&["user", "revoke", "alice", "--format", "json"]);
    assert_eq!(rv["sessions_ended"], 1, "{rv}");
    b.go(&format!("{base}/console/runs"));
    assert!(b.url().ends_with("/console/login"), "{}", b.url());
}

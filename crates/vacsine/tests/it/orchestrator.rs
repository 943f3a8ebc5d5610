//! Orchestrator and agent as real processes of the built binary, over real TLS sockets on
//! loopback, each with its own temporary data folder.

use serde_json::Value;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_vacsine");

#[path = "approvals.rs"]
mod approvals;
#[path = "bundles.rs"]
mod bundles;
#[path = "console.rs"]
mod console;
#[path = "crowdsec.rs"]
mod crowdsec;
#[path = "cut_million.rs"]
mod cut_million;
#[path = "decoys.rs"]
mod decoys;
#[path = "fairness.rs"]
mod fairness;
#[path = "forged.rs"]
mod forged;
#[path = "images.rs"]
mod images;
#[path = "late_end.rs"]
mod late_end;
#[path = "mitigate.rs"]
mod mitigate;
#[path = "observability.rs"]
mod observability;
#[path = "respond.rs"]
mod respond;
#[path = "schedules.rs"]
mod schedules;
#[path = "spanning.rs"]
mod spanning;
#[path = "submit_retry.rs"]
mod submit_retry;
#[path = "tamper.rs"]
mod tamper;

pub(crate) struct Orch {
    child: Child,
    pub(crate) data: PathBuf,
    pub(crate) url: String,
    pub(crate) pin: String,
}

impl Orch {
    /// Start an orchestrator on `listen` with its data in `data`; wait until it answers.
    pub(crate) fn start(data: &Path, listen: &str, lease_ttl_ms: u64) -> Orch {
        Orch::launch(data, listen, lease_ttl_ms, &[], None)
    }

    /// [`Orch::start`] with more arguments.
    pub(crate) fn start_with(data: &Path, listen: &str, lease_ttl_ms: u64, extra: &[&str]) -> Orch {
        Orch::launch(data, listen, lease_ttl_ms, extra, None)
    }

    /// [`Orch::start`] with its store in PostgreSQL at `database`.
    fn start_on(data: &Path, listen: &str, lease_ttl_ms: u64, database: &str) -> Orch {
        Orch::launch(data, listen, lease_ttl_ms, &[], Some(database))
    }

    fn launch(
        data: &Path,
        listen: &str,
        lease_ttl_ms: u64,
        extra: &[&str],
        database: Option<&str>,
    ) -> Orch {
        let op = data.join("operator.json");
        let _ = std::fs::remove_file(&op);
        let mut cmd = Command::new(BIN);
        cmd.args(["orchestrator", "--listen", listen, "--data"])
            .arg(data)
            .args(["--lease-ttl-ms", &lease_ttl_ms.to_string()])
            .args(extra)
            .env_remove("VACSINE_DATABASE_URL");
        if let Some(db) = database {
            // As an operator should: the URL (its password) out of the command line.
            cmd.env("VACSINE_DATABASE_URL", db);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the orchestrator");
        let cfg: Value = wait_until(Duration::from_secs(20), "operator.json", || {
            std::fs::read(&op)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        });
        let url = cfg["url"].as_str().unwrap().to_string();
        let pin = cfg["pin"].as_str().unwrap().to_string();
        let o = Orch {
            child,
            data: data.to_path_buf(),
            url,
            pin,
        };
        wait_until(
            Duration::from_secs(20),
            "the orchestrator answering",
            || {
                o.cli(&["status", "--format", "json"])
                    .status
                    .success()
                    .then_some(())
            },
        );
        o
    }

    fn addr(&self) -> String {
        self.url.trim_start_matches("https://").to_string()
    }

    /// The CLI, talking to this orchestrator (pin and token from the data folder, which
    /// replicas share).
    pub(crate) fn cli(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .args(args)
            .arg("--orchestrator-data")
            .arg(&self.data)
            .args(["--orchestrator", &self.url])
            .env("NO_COLOR", "1")
            .output()
            .expect("run vacsine")
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let o = self.cli(args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {}", text(&o)))
    }

    pub(crate) fn site(&self, name: &str) -> String {
        let v = self.json(&["site", "create", name, "--format", "json"]);
        v["intake_key"].as_str().unwrap().to_string()
    }

    pub(crate) fn status(&self) -> Value {
        self.json(&["status", "--format", "json"])
    }

    fn run(&self, id: &str) -> Value {
        self.status()["runs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("run {id} not in status"))
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Orch {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    pub(crate) fn start(o: &Orch, key: &str, name: &str, data: &Path) -> Agent {
        Agent::start_via(&[], &o.url, &o.pin, key, name, data)
    }

    /// An agent started through `prefix` (`ip netns exec NS`), to `url` pinned on `pin`.
    fn start_via(
        prefix: &[&str],
        url: &str,
        pin: &str,
        key: &str,
        name: &str,
        data: &Path,
    ) -> Agent {
        let log = data.with_extension("log");
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = match prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .args(["agent", "--orchestrator", url, "--intake-key", key])
            .args(["--name", name, "--pin", pin, "--data"])
            .arg(data)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start the agent");
        let a = Agent { child, log };
        wait_until(Duration::from_secs(20), "the agent enrolled", || {
            a.log().contains("vacsine agent").then_some(())
        });
        a
    }

    pub(crate) fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the agent's process has ended.
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub(crate) fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub(crate) fn wait_until<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `vacsine agent preflight`'s output (Docker and nft may fail on a CI host: callers look at
/// the lines they need).
fn preflight(data: &Path, args: &[&str]) -> String {
    let o = Command::new(BIN)
        .args(["agent", "preflight", "--data"])
        .arg(data)
        .args(args)
        .output()
        .unwrap();
    let t = text(&o);
    let all_pass = !t.contains("FAIL");
    assert_eq!(o.status.code(), Some(if all_pass { 0 } else { 2 }), "{t}");
    t
}

fn workflow(dir: &Path, name: &str, steps: &[(&str, &str)]) -> PathBuf {
    let mut y = format!(
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  steps:\n"
    );
    let mut prev: Option<&str> = None;
    for (id, sh) in steps {
        y.push_str(&format!(
            "    - id: {id}\n      uses: command\n      with:\n        argv: [\"sh\", \"-c\", {sh:?}]\n"
        ));
        if let Some(p) = prev {
            y.push_str(&format!("      needs: [{p}]\n"));
        }
        prev = Some(id);
    }
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(&p, y).unwrap();
    p
}

fn submit(o: &Orch, wf: &Path, site: &str) -> String {
    let v = o.json(&[
        "run",
        wf.to_str().unwrap(),
        "--site",
        site,
        "--detach",
        "--format",
        "json",
    ]);
    v["run_id"].as_str().unwrap().to_string()
}

#[test]
fn orchestrator_runs_a_workflow_at_a_site_then_refuses_the_revoked_agent() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 3000);
    let key = o.site("edge-a");
    let mut a = Agent::start(&o, &key, "edge-a-1", &d.path().join("agent"));
    // The identity is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.path().join("agent/agent.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let wf = workflow(
        d.path(),
        "three",
        &[("a", "echo a; sleep 0.2"), ("b", "echo b"), ("c", "echo c")],
    );
    let out = o.cli(&[
        "run",
        wf.to_str().unwrap(),
        "--site",
        "edge-a",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = recs
        .iter()
        .map(|r| r["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "b", "c"], "each record once, in order");
    for r in &recs {
        assert_eq!(r["status"], "succeeded", "{r}");
        assert!(
            r["started_at"].is_string() && r["finished_at"].is_string(),
            "{r}"
        );
        assert!(r["duration_ms"].is_u64(), "{r}");
    }
    assert!(recs[0]["duration_ms"].as_u64().unwrap() >= 200);
    assert_eq!(recs[0]["stdout"], "a\n");

    let st = o.status();
    let ag = &st["agents"][0];
    assert_eq!(
        (ag["name"].as_str(), ag["state"].as_str()),
        (Some("edge-a-1"), Some("online"))
    );
    assert!(ag["version"].is_string() && ag["last_seen"].is_string());
    let run = &st["runs"][0];
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["records"], 3);

    // Preflight of the enrolled agent: reachable with the pin, clocks close, identity accepted.
    let pf = preflight(&d.path().join("agent"), &[]);
    for name in ["orchestrator", "clock", "identity", "disk"] {
        assert!(pf.contains(&format!("PASS  {name}")), "{pf}");
    }
    // A wrong pin is a failure that names both fingerprints.
    let zero = format!("sha256:{}", "0".repeat(64));
    let pf2 = preflight(
        &d.path().join("other"),
        &["--orchestrator", &o.url, "--pin", &zero],
    );
    assert!(
        pf2.contains("FAIL  orchestrator") && pf2.contains(&o.pin),
        "{pf2}"
    );

    // Revoked while it long-polls: refused at once, the agent stops and says why.
    let t0 = Instant::now();
    let r = o.cli(&["site", "revoke", "edge-a", "--agent", "edge-a-1"]);
    assert!(r.status.success(), "{}", text(&r));
    let code = wait_until(Duration::from_secs(10), "the revoked agent to stop", || {
        a.child.try_wait().unwrap()
    });
    assert!(!code.success());
    assert!(a.log().contains("revoked"), "{}", a.log());
    // Long polls last 25 s: a prompt refusal is the revocation waking it.
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(o.status()["agents"][0]["state"], "revoked");
    // Its identity no longer works on restart either.
    let again = Command::new(BIN)
        .args(["agent", "--data"])
        .arg(d.path().join("agent"))
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(text(&again).contains("revoked"), "{}", text(&again));
    let pf = preflight(&d.path().join("agent"), &[]);
    assert!(
        pf.contains("FAIL  identity") && pf.contains("revoked"),
        "{pf}"
    );
    a.kill9();
}

#[test]
fn orchestrator_killed_mid_run_gets_every_record_once_after_restart() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("orch");
    let mut o = Orch::start(&data, "127.0.0.1:0", 3000);
    let addr = o.addr();
    let key = o.site("edge-a");
    let a = Agent::start(&o, &key, "edge-a-1", &d.path().join("agent"));
    let wf = workflow(
        d.path(),
        "four",
        &[
            ("a", "echo a"),
            ("b", "sleep 1.5; echo b"),
            ("c", "echo c"),
            ("d", "echo d"),
        ],
    );
    let id = submit(&o, &wf, "edge-a");
    wait_until(Duration::from_secs(20), "step a recorded", || {
        (o.run(&id)["records"].as_i64() >= Some(1)).then_some(())
    });
    let before = o.run(&id)["records"].as_i64().unwrap();
    o.kill9();
    // The agent goes on alone; its records wait in its outbox.
    wait_until(
        Duration::from_secs(30),
        "the agent to finish the run",
        || {
            a.log()
                .contains(&format!("run {id}: succeeded"))
                .then_some(())
        },
    );
    assert!(a.log().contains("unreachable"), "{}", a.log());
    drop(o);
    let o = Orch::start(&data, &addr, 3000);
    let run = wait_until(Duration::from_secs(30), "the run to end", || {
        let r = o.run(&id);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(before < 4, "some records were made while it was down");
    // Exactly once: four step attempts, four records (the store keeps one per key).
    let fin = wait_until(Duration::from_secs(10), "all records", || {
        let r = o.run(&id);
        (r["records"].as_i64() >= Some(4)).then_some(r)
    });
    assert_eq!(fin["records"], 4, "{fin}");
    // Following the run now prints each step once.
    let out = o.cli(&["status", "--format", "json"]);
    assert!(out.status.success());
}

#[test]
fn records_kept_in_a_killed_agents_outbox_arrive_once_after_both_restart() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("orch");
    let mut o = Orch::start(&data, "127.0.0.1:0", 5000);
    let addr = o.addr();
    let key = o.site("edge-a");
    let adata = d.path().join("agent");
    let mut a = Agent::start(&o, &key, "edge-a-1", &adata);
    let wf = workflow(
        d.path(),
        "three",
        &[("a", "sleep 0.5"), ("b", "echo b"), ("c", "echo c")],
    );
    let id = submit(&o, &wf, "edge-a");
    wait_until(Duration::from_secs(20), "the run leased", || {
        (o.run(&id)["status"] == "running").then_some(())
    });
    o.kill9();
    wait_until(
        Duration::from_secs(30),
        "the agent to finish the run",
        || {
            a.log()
                .contains(&format!("run {id}: succeeded"))
                .then_some(())
        },
    );
    // Both die: the records and the run's end are only in the agent's outbox now.
    a.kill9();
    drop(o);
    let o = Orch::start(&data, &addr, 5000);
    assert_ne!(o.run(&id)["status"], "succeeded");
    let _a = Agent::start(&o, &key, "edge-a-1", &adata);
    let run = wait_until(Duration::from_secs(20), "the run to end", || {
        let r = o.run(&id);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["records"], 3, "{run}");
}

#[test]
fn killed_agents_lease_expires_and_its_run_is_failed_or_reoffered_visibly() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 1500);
    let key = o.site("edge-a");

    // A run with a recorded step: failed, visibly, when its agent dies.
    let mut a = Agent::start(&o, &key, "edge-a-1", &d.path().join("agent1"));
    let wf = workflow(d.path(), "slow", &[("a", "echo a"), ("b", "sleep 20")]);
    let id = submit(&o, &wf, "edge-a");
    wait_until(Duration::from_secs(20), "step a recorded", || {
        (o.run(&id)["records"].as_i64() >= Some(1)).then_some(())
    });
    assert_eq!(o.run(&id)["status"], "running");
    let t0 = Instant::now();
    a.kill9();
    let run = wait_until(Duration::from_secs(15), "the lease to expire", || {
        let r = o.run(&id);
        (r["status"] != "running").then_some(r)
    });
    let waited = t0.elapsed();
    assert_eq!(run["status"], "failed", "{run}");
    assert!(run["message"].as_str().unwrap().contains("lease"), "{run}");
    // Lease 1.5 s, sweeper every ~0.4 s; slack for a loaded CI host.
    assert!(waited < Duration::from_secs(8), "{waited:?}");

    // A run that recorded nothing yet: re-offered to the site.
    let mut b = Agent::start(&o, &key, "edge-a-2", &d.path().join("agent2"));
    let wf2 = workflow(d.path(), "sleepy", &[("z", "sleep 20")]);
    let id2 = submit(&o, &wf2, "edge-a");
    wait_until(Duration::from_secs(20), "run leased", || {
        (o.run(&id2)["status"] == "running").then_some(())
    });
    b.kill9();
    let run = wait_until(Duration::from_secs(15), "the lease to expire", || {
        let r = o.run(&id2);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(run["status"], "queued", "{run}");
    assert!(
        run["message"].as_str().unwrap().contains("re-offered"),
        "{run}"
    );
    assert_eq!(run["offers"], 1);
}

/// Requests crafted by hand against the running server: a replay, a tampered body, another
/// agent's keys, another agent's work — each refused with its own status and code.
#[test]
fn running_server_refuses_replayed_tampered_and_foreign_requests() {
    use vacsine_contract::client::{AgentLink, CallError};
    use vacsine_contract::proto;
    use vacsine_wire::{KeyPair, PublicKey};

    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 30_000);
    let key = o.site("edge-a");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let hello = AgentLink::hello(&o.url, &o.pin).await.unwrap();
        let server = PublicKey::from_b64(&hello.server_key).unwrap();
        let enrol = |name: &'static str, keys: KeyPair| {
            let link = AgentLink::new(&o.url, &o.pin, keys.clone(), server.clone()).unwrap();
            let key = key.clone();
            async move {
                let req = proto::EnrollRequest {
                    intake_key: key,
                    name: name.into(),
                    version: "test".into(),
                };
                let env = link.seal(proto::ENROLL, name, &req).unwrap();
                let wrapped = proto::EnrollEnvelope {
                    public_key: keys.public().to_b64(),
                    envelope: env.clone(),
                };
                let r: proto::EnrollResponse = link
                    .send(proto::ENROLL, name, &env, &wrapped)
                    .await
                    .unwrap();
                (link, r.agent_id)
            }
        };
        let (la, ida) = enrol("a", KeyPair::generate()).await;
        let (lb, idb) = enrol("b", KeyPair::generate()).await;
        let poll = proto::PollRequest::new(0);
        let refused = |r: Result<proto::PollResponse, CallError>| match r {
            Err(CallError::Refused { status, code, .. }) => (status, code),
            other => panic!("expected a refusal, got {other:?}"),
        };

        // A good request, then the very same bytes again.
        let env = la.seal(proto::POLL, &ida, &poll).unwrap();
        let ok: proto::PollResponse = la.send(proto::POLL, &ida, &env, &env).await.unwrap();
        assert!(ok.work.is_none());
        let r = la.send(proto::POLL, &ida, &env, &env).await;
        assert_eq!(refused(r), (409, "replay".into()));

        // A tampered body.
        let mut bad = la.seal(proto::POLL, &ida, &poll).unwrap();
        let mut ct = bad.ct.into_bytes();
        ct[5] = if ct[5] == b'A' { b'B' } else { b'A' };
        bad.ct = String::from_utf8(ct).unwrap();
        let r = la.send(proto::POLL, &ida, &bad, &bad).await;
        assert_eq!(refused(r), (400, "tampered".into()));

        // Sent to another path than the one it is sealed for.
        let env = la.seal(proto::RENEW, &ida, &poll).unwrap();
        let r = la.send(proto::POLL, &ida, &env, &env).await;
        assert_eq!(refused(r), (400, "misbound".into()));

        // Agent b claims to be agent a, with its own keys.
        let env = lb.seal(proto::POLL, &ida, &poll).unwrap();
        let r = lb.send(proto::POLL, &ida, &env, &env).await;
        assert_eq!(refused(r), (401, "wrong_sender".into()));

        // Issue 15: an agent of another contract version (one made before the version was
        // carried sends none: protocol 1) gets no work, and is told both versions.
        for (body, theirs, fix) in [
            (serde_json::json!({"wait_ms": 0}), 1, "upgrade the agent"),
            (
                serde_json::json!({"wait_ms": 0, "protocol": proto::PROTOCOL + 1}),
                proto::PROTOCOL + 1,
                "upgrade the orchestrator",
            ),
        ] {
            match la
                .call::<_, proto::PollResponse>(proto::POLL, &ida, &body)
                .await
            {
                Err(CallError::Refused {
                    status: 426,
                    code,
                    message,
                    ..
                }) => {
                    assert_eq!(code, "protocol");
                    assert!(
                        message.contains(&format!("speaks protocol {theirs};"))
                            && message.contains(&format!("speaks protocol {}", proto::PROTOCOL))
                            && message.contains(fix),
                        "{message}"
                    );
                }
                other => panic!("expected 426, got {other:?}"),
            }
        }

        // Agent b uploads records to a run leased to agent a.
        let wf = workflow(d.path(), "one", &[("x", "sleep 5")]);
        let run = submit(&o, &wf, "edge-a");
        let got: proto::PollResponse = la
            .call(proto::POLL, &ida, &proto::PollRequest::new(5000))
            .await
            .unwrap();
        assert_eq!(got.work.unwrap().run_id, run);
        let forged = proto::RecordsRequest {
            run_id: run.clone(),
            records: vec![proto::KeyedRecord {
                key: "x/1/local".into(),
                // A step record (the orchestrator refuses anything else: issue 15).
                record: serde_json::from_value(serde_json::json!({"run_id": "x",
                    "step_id": "x", "attempt": 1, "executor": "command",
                    "started_at": "2026-01-01T00:00:00Z", "status": "succeeded"}))
                .unwrap(),
            }],
        };
        let r = lb
            .call::<_, proto::RecordsResponse>(proto::RECORDS, &idb, &forged)
            .await;
        assert!(
            matches!(&r, Err(CallError::Refused { status: 403, code, .. }) if code == "forbidden"),
            "{r:?}"
        );
        // The same upload by its agent is stored once, however often it is sent.
        for n in 0..2 {
            let s: proto::RecordsResponse = la.call(proto::RECORDS, &ida, &forged).await.unwrap();
            assert_eq!(
                (s.stored, s.duplicates),
                if n == 0 { (1, 0) } else { (0, 1) }
            );
        }
        assert_eq!(o.run(&run)["records"], 1);
    });
}

#[test]
fn run_at_a_site_checks_inputs_before_queuing_anything() {
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 3000);
    o.site("edge-a");
    let wf = d.path().join("typed.yaml");
    std::fs::write(
        &wf,
        "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: typed\nspec:\n  inputs:\n    port:\n      type: port\n  steps:\n    - id: show\n      uses: command\n      with:\n        argv: [\"echo\", \"{{ inputs.port }}\"]\n",
    )
    .unwrap();
    let w = wf.to_str().unwrap();
    let bad = o.cli(&[
        "run",
        w,
        "--site",
        "edge-a",
        "--detach",
        "--input",
        "port=99999",
    ]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(text(&bad).contains("typed.yaml:7:5"), "{}", text(&bad));
    assert!(!text(&bad).contains("not given"), "{}", text(&bad));
    let missing = o.cli(&["run", w, "--site", "edge-a", "--detach"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing).contains("required"), "{}", text(&missing));
    let nosite = o.cli(&["run", w, "--site", "nope", "--detach", "--input", "port=22"]);
    assert_eq!(nosite.status.code(), Some(1));
    assert!(
        text(&nosite).contains("vacsine site create nope"),
        "{}",
        text(&nosite)
    );
    assert_eq!(
        o.status()["runs"].as_array().unwrap().len(),
        0,
        "nothing queued"
    );
    let ok = o.cli(&[
        "run", w, "--site", "edge-a", "--detach", "--input", "port=22",
    ]);
    assert!(ok.status.success(), "{}", text(&ok));
    assert_eq!(o.status()["runs"][0]["status"], "queued");
}

fn sigterm(pid: u32) {
    let st = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn sigterm_drains_the_agent_and_stops_the_orchestrator_promptly() {
    let d = tempfile::tempdir().unwrap();
    let mut o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 3000);
    let key = o.site("edge-a");
    let mut a = Agent::start(&o, &key, "edge-a-1", &d.path().join("agent1"));
    let wf = workflow(
        d.path(),
        "drain",
        &[("a", "sleep 1; echo a"), ("b", "echo b")],
    );
    let id = submit(&o, &wf, "edge-a");
    wait_until(Duration::from_secs(20), "the run leased", || {
        (o.run(&id)["status"] == "running").then_some(())
    });
    // SIGTERM mid-step: the run finishes, its records are uploaded, the agent exits 0.
    sigterm(a.child.id());
    let code = wait_until(Duration::from_secs(20), "the agent to drain", || {
        a.child.try_wait().unwrap()
    });
    assert!(code.success(), "{}", a.log());
    assert!(a.log().contains("draining"), "{}", a.log());
    assert!(a.log().contains("outbox empty"), "{}", a.log());
    let run = o.run(&id);
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["records"], 2, "{run}");

    // An orchestrator with an agent long-polling stops at once on SIGTERM, not after the
    // poll's 25 s.
    let _b = Agent::start(&o, &key, "edge-a-2", &d.path().join("agent2"));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    sigterm(o.child.id());
    let code = wait_until(Duration::from_secs(10), "the orchestrator to stop", || {
        o.child.try_wait().unwrap()
    });
    assert!(code.success());
    // Under the 5 s grace given to requests under way: the long poll ended at once.
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    o.kill9();
}

/// A database of its own on the PostgreSQL server of `VACSINE_TEST_PG`, dropped at the end.
/// `None` (the test is skipped, and says so) when the variable is unset outside CI.
struct TestDb {
    admin: String,
    name: String,
    url: String,
}

impl TestDb {
    fn create(test: &str) -> Option<TestDb> {
        let admin = match std::env::var("VACSINE_TEST_PG") {
            Ok(u) if !u.trim().is_empty() => u,
            _ if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) => {
                panic!("{test}: VACSINE_TEST_PG is not set and CI is: CI must run the PostgreSQL tests (.ci/run starts a server and sets it)")
            }
            _ => {
                eprintln!("skipped {test}: set VACSINE_TEST_PG=postgres://USER@127.0.0.1:5432/DB to run it");
                return None;
            }
        };
        let rnd: String = vacsine_wire::random_bytes::<4>()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let name = format!("vacsine_it_{rnd}");
        Self::sql(&admin, &format!("CREATE DATABASE {name}"));
        // The same server and role, the new database.
        let (base, query) = match admin.split_once('?') {
            Some((b, q)) => (b, format!("?{q}")),
            None => (admin.as_str(), String::new()),
        };
        let at = base
            .rfind('/')
            .expect("VACSINE_TEST_PG: postgres://USER@HOST:PORT/DB");
        let url = format!("{}/{name}{query}", &base[..at]);
        Some(TestDb { admin, name, url })
    }

    fn sql(url: &str, sql: &str) {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let (c, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .unwrap_or_else(|e| panic!("VACSINE_TEST_PG: {e}"));
            let h = tokio::spawn(conn);
            c.batch_execute(sql).await.unwrap();
            drop(c);
            let _ = h.await;
        });
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        Self::sql(
            &self.admin,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}

/// Scale-out: two replicas on one PostgreSQL, sharing the data folder's keys, certificate and
/// token. A run queued through replica B reaches the agent long-polling replica A at once
/// (LISTEN/NOTIFY); replica A is killed with SIGKILL while the agent runs a step; the agent
/// carries on with replica B and the run completes with each record exactly once.
#[test]
fn two_replicas_on_postgres_share_the_work_and_one_killed_leaves_the_other_carrying_on() {
    let Some(db) = TestDb::create("two_replicas_on_postgres") else {
        return;
    };
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("orch");
    // Leases long enough that a loaded machine's failover never lets one lapse (lease expiry
    // is another test's subject).
    let mut a = Orch::start_on(&data, "127.0.0.1:0", 10_000, &db.url);
    let b = Orch::start_on(&data, "127.0.0.1:0", 10_000, &db.url);
    assert_eq!(a.pin, b.pin, "replicas share the certificate");
    // A site made through A is known to B: one store.
    let key = a.site("edge-a");
    assert_eq!(
        b.json(&["site", "list", "--format", "json"])[0]["name"],
        "edge-a"
    );
    let urls = format!("{},{}", a.url, b.url);
    let agent = Agent::start_via(
        &[],
        &urls,
        &a.pin,
        &key,
        "edge-a-1",
        &d.path().join("agent"),
    );
    // Its long poll is waiting at A (the first URL) now.
    std::thread::sleep(Duration::from_millis(500));

    let wf = workflow(
        d.path(),
        "four",
        &[
            ("a", "echo a"),
            ("b", "sleep 3; echo b"),
            ("c", "echo c"),
            ("d", "echo d"),
        ],
    );
    let t0 = Instant::now();
    let id = submit(&b, &wf, "edge-a");
    wait_until(Duration::from_secs(10), "the run leased", || {
        (b.run(&id)["status"] != "queued").then_some(())
    });
    // A long poll ends after 25 s: leased well before, so A's poll was woken by B's NOTIFY.
    let woken = t0.elapsed();
    assert!(woken < Duration::from_secs(5), "{woken:?}");
    wait_until(Duration::from_secs(20), "step a recorded", || {
        (b.run(&id)["records"].as_i64() >= Some(1)).then_some(())
    });
    assert!(
        !agent.log().contains("unreachable"),
        "the agent talked to A until now: {}",
        agent.log()
    );
    // A sealed request taken by A, replayed to B: refused there too (nonces are shared).
    replay_across(&d.path().join("agent/agent.json"), &a, &b);
    // Step b is running: replica A dies.
    let before = b.run(&id)["records"].as_i64().unwrap();
    a.kill9();
    assert!(before < 4, "A died mid-run ({before} records)");
    let run = wait_until(Duration::from_secs(30), "the run to end", || {
        let r = b.run(&id);
        (r["status"] != "running").then_some(r)
    });
    assert_eq!(run["status"], "succeeded", "{run}\n{}", agent.log());
    assert!(
        agent
            .log()
            .contains(&format!("now talking to orchestrator {}", b.url)),
        "{}",
        agent.log()
    );
    // Each record exactly once, in order, as B serves them.
    let recs = run_records(&b, &id);
    let steps: Vec<&str> = recs
        .iter()
        .map(|r| r["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["a", "b", "c", "d"], "{recs:?}");
    assert!(recs.iter().all(|r| r["status"] == "succeeded"), "{recs:?}");
    assert_eq!(run["records"], 4, "{run}");

    // The agent now polls B: the next run goes through it alone.
    let wf2 = workflow(d.path(), "one", &[("z", "echo z")]);
    let id2 = submit(&b, &wf2, "edge-a");
    let run2 = wait_until(Duration::from_secs(20), "the second run to end", || {
        let r = b.run(&id2);
        status_final(&r).then_some(r)
    });
    assert_eq!(run2["status"], "succeeded", "{run2}");
    drop(agent);
    drop(b);
    drop(a);
}

fn status_final(r: &Value) -> bool {
    matches!(
        r["status"].as_str(),
        Some("succeeded" | "failed" | "cancelled")
    )
}

/// The records of run `id` as the orchestrator serves them to operators.
pub(crate) fn run_records(o: &Orch, id: &str) -> Vec<Value> {
    use vacsine_contract::client::OperatorClient;
    use vacsine_contract::proto;
    let cfg = proto::OperatorConfig {
        url: o.url.clone(),
        pin: o.pin.clone(),
        token: std::fs::read_to_string(o.data.join("operator.token"))
            .unwrap()
            .trim()
            .to_string(),
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = OperatorClient::new(&cfg).unwrap();
        let r: proto::RunRecords = c
            .get(&format!("{}/{id}?after=0", proto::OP_RUNS))
            .await
            .unwrap();
        r.records
            .into_iter()
            .map(|s| serde_json::to_value(s.record).unwrap())
            .collect()
    })
}

/// Seal one ping as the agent whose identity is in `identity`, send it to `a`, then the very
/// same envelope to `b`: `b` must refuse it as a replay.
fn replay_across(identity: &Path, a: &Orch, b: &Orch) {
    use vacsine_contract::client::{AgentLink, CallError};
    use vacsine_contract::proto;
    use vacsine_wire::{KeyPair, PublicKey};
    let id: Value = serde_json::from_slice(&std::fs::read(identity).unwrap()).unwrap();
    let s = |k: &str| id[k].as_str().unwrap().to_string();
    let keys = KeyPair::from_secret_b64(&s("secret_key")).unwrap();
    let server = PublicKey::from_b64(&s("server_key")).unwrap();
    let agent = s("agent_id");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let to_a = AgentLink::new(&a.url, &a.pin, keys.clone(), server.clone()).unwrap();
        let to_b = AgentLink::new(&b.url, &b.pin, keys, server).unwrap();
        let env = to_a
            .seal(proto::PING, &agent, &serde_json::json!({}))
            .unwrap();
        let _: proto::Pong = to_a.send(proto::PING, &agent, &env, &env).await.unwrap();
        let r: Result<proto::Pong, _> = to_b.send(proto::PING, &agent, &env, &env).await;
        assert!(
            matches!(&r, Err(CallError::Refused { status: 409, code, .. }) if code == "replay"),
            "{r:?}"
        );
    });
}

// ---- across real networks: a proxy in front, namespaces as sites, links cut ---------------

/// Whether this host can run the network tests (root, `ip`, `nginx`, `openssl`, `dumpcap`):
/// required under CI (`.ci/run` installs them), else skipped with a line.
fn net_tools(tools: &[&str]) -> bool {
    let have = |t: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    let root = nix_is_root();
    if missing.is_empty() && root {
        return true;
    }
    assert!(
        std::env::var("CI").is_err(),
        "CI must run the network tests: missing {missing:?}, root: {root}"
    );
    eprintln!("skipping: missing {missing:?} or not root");
    false
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn sh(script: &str) -> String {
    let o = Command::new("sh").args(["-c", script]).output().unwrap();
    assert!(o.status.success(), "{script}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A self-signed PEM certificate and key made by openssl; returns (cert, key, pin).
fn openssl_cert(dir: &Path, cn: &str) -> (PathBuf, PathBuf, String) {
    let (c, k) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    sh(&format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN={cn} -keyout {} -out {} 2>/dev/null",
        k.display(),
        c.display()
    ));
    let hex = sh(&format!(
        "openssl x509 -in {} -outform der | sha256sum | cut -d' ' -f1",
        c.display()
    ));
    (c, k, format!("sha256:{hex}"))
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real nginx (Debian package) terminates the agents' TLS and forwards plain HTTP to the
/// orchestrator's `--listen-plain`; the orchestrator itself serves a given certificate. The
/// run completes through the proxy, and a capture of the proxy-to-orchestrator leg holds
/// HTTP requests but none of the run's content in plain text (the bodies are sealed).
#[test]
fn agent_behind_a_tls_terminating_nginx_leaks_nothing_on_the_plain_leg() {
    if !net_tools(&["nginx", "openssl", "dumpcap", "curl"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    // The orchestrator with a given certificate: the pin it prints is that certificate's.
    let (ocert, okey, opin) = openssl_cert(d.path(), "orchestrator");
    let plain = free_port();
    let plain_addr = format!("127.0.0.1:{plain}");
    let o = Orch::start_with(
        &d.path().join("orch"),
        "127.0.0.1:0",
        15_000,
        &[
            "--listen-plain",
            &plain_addr,
            "--tls-cert",
            ocert.to_str().unwrap(),
            "--tls-key",
            okey.to_str().unwrap(),
        ],
    );
    assert_eq!(o.pin, opin, "the given certificate is the one served");

    // nginx in front.
    let (pcert, pkey, ppin) = openssl_cert(d.path(), "proxy");
    // `vacsine pin` gives the proxy's pin as openssl computes it (PEM and DER alike); a file
    // that is no certificate is refused, named.
    let pin_cmd = |args: &[&str]| Command::new(BIN).arg("pin").args(args).output().unwrap();
    let pinned = pin_cmd(&[pcert.to_str().unwrap()]);
    assert!(pinned.status.success(), "{}", text(&pinned));
    assert_eq!(String::from_utf8_lossy(&pinned.stdout).trim(), ppin);
    let der = d.path().join("proxy.der");
    sh(&format!(
        "openssl x509 -in {} -outform der -out {}",
        pcert.display(),
        der.display()
    ));
    let pinned = pin_cmd(&[der.to_str().unwrap(), "--format", "json"]);
    let v: Value = serde_json::from_slice(&pinned.stdout).unwrap();
    assert_eq!(v["pin"], ppin.as_str());
    let notcert = pin_cmd(&[pkey.to_str().unwrap()]);
    assert_eq!(notcert.status.code(), Some(1), "{}", text(&notcert));
    assert!(text(&notcert).contains("proxy.key"), "{}", text(&notcert));
    let port = free_port();
    let prefix = d.path().join("nginx");
    std::fs::create_dir_all(prefix.join("logs")).unwrap();
    let conf = prefix.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nuser root;\nworker_processes 1;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
               fastcgi_temp_path {p}/fcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;\n\
               server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {c};\n    ssl_certificate_key {k};\n\
                 location / {{ proxy_pass http://{plain_addr}; proxy_http_version 1.1; proxy_set_header Connection \"\";\n\
                   proxy_read_timeout 60s; proxy_buffering off; client_max_body_size 16m; }}\n  }}\n}}\n",
            p = prefix.display(),
            c = pcert.display(),
            k = pkey.display(),
        ),
    )
    .unwrap();
    let _nginx = Killed(
        Command::new("nginx")
            .arg("-p")
            .arg(&prefix)
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(10), "nginx listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });

    // The API's OpenAPI document, through the proxy, is the one kept in docs/.
    let served: Value = serde_json::from_str(&sh(&format!(
        "curl -sSk https://127.0.0.1:{port}/v1/openapi.json"
    )))
    .unwrap();
    let kept: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../docs/openapi.json"
        ))
        .unwrap(),
    )
    .unwrap();
    assert_eq!(served, kept);

    // Capture the plain leg.
    let pcap = d.path().join("plain.pcap");
    let cap_log = d.path().join("dumpcap.log");
    let mut dumpcap = Killed(
        Command::new("dumpcap")
            .args(["-i", "lo", "-f", &format!("tcp port {plain}"), "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&cap_log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until(Duration::from_secs(15), "dumpcap capturing", || {
        std::fs::read_to_string(&cap_log)
            .ok()
            .filter(|l| l.contains("Capturing on"))
    });

    let key = o.site("edge-p");
    let url = format!("https://127.0.0.1:{port}");
    let _a = Agent::start_via(&[], &url, &ppin, &key, "edge-p-1", &d.path().join("agent"));
    let marker = format!("sealed-marker-{}", std::process::id());
    let wf = workflow(
        d.path(),
        "proxied",
        &[
            ("first", &format!("echo {marker}-out")),
            ("second", "echo done"),
        ],
    );
    let out = o.cli(&[
        "run",
        wf.to_str().unwrap(),
        "--site",
        "edge-p",
        "--format",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let recs: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!(recs[0]["stdout"], format!("{marker}-out\n"));
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &dumpcap.0.id().to_string()])
        .status();
    let _ = dumpcap.0.wait();
    let cap = std::fs::read(&pcap).unwrap();
    let has = |needle: &[u8]| cap.windows(needle.len()).any(|w| w == needle);
    assert!(
        has(b"POST /v1/") && has(b"HTTP/1.1 200"),
        "the capture holds the proxied HTTP exchanges ({} bytes)",
        cap.len()
    );
    // The envelope's routing fields (agent id, method, path, time, nonce) are visible by
    // design (bound to the ciphertext as associated data); the payload never is: not the
    // steps, their output, the workflow, nor the site's intake key sent at enrolment.
    for needle in [
        marker.as_bytes(),
        b"proxied",
        b"echo done",
        b"step_id",
        key.as_bytes(),
    ] {
        assert!(
            !has(needle),
            "`{}` is readable on the proxy-to-orchestrator leg",
            String::from_utf8_lossy(needle)
        );
    }
}

/// A network namespace as a site: its only way out is a veth link to the host (the "wan"),
/// where the orchestrator listens.
struct Site {
    ns: String,
    host_if: String,
    host_ip: String,
}

impl Site {
    fn new(tag: &str, n: u8) -> Site {
        let id = std::process::id() % 10_000;
        let ns = format!("vsn-{tag}-{id}");
        let host_if = format!("vh{tag}{id}");
        // The host end is on this machine's own namespace: its address comes from the
        // process too, so two test runs side by side do not collide.
        let net = 20 + id % 200;
        let (host_ip, ns_ip) = (format!("10.{net}.{n}.1"), format!("10.{net}.{n}.2"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        sh(&format!(
            "ip netns add {ns} && ip link add {host_if} type veth peer name eth0 netns {ns} && \
             ip addr add {host_ip}/30 dev {host_if} && ip link set {host_if} up && \
             ip -n {ns} addr add {ns_ip}/30 dev eth0 && ip -n {ns} link set eth0 up && ip -n {ns} link set lo up"
        ));
        Site {
            ns,
            host_if,
            host_ip,
        }
    }
    /// `ip netns exec NS`: how a process is started inside the site.
    fn via(&self) -> [&str; 4] {
        ["ip", "netns", "exec", self.ns.as_str()]
    }
    /// Site `site` of `o` (listening on 0.0.0.0), its intake key made here, and an agent named
    /// `SITE-1` inside this namespace, reaching `o` over the site's link.
    fn agent(&self, o: &Orch, site: &str, data: &Path) -> Agent {
        let port = o.addr().rsplit(':').next().unwrap().to_string();
        Agent::start_via(
            &self.via(),
            &format!("https://{}:{port}", self.host_ip),
            &o.pin,
            &o.site(site),
            &format!("{site}-1"),
            data,
        )
    }
    fn cut(&self) {
        sh(&format!("ip link set {} down", self.host_if));
    }
    fn restore(&self) {
        sh(&format!("ip link set {} up", self.host_if));
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

/// Two sites, each an agent in its own network namespace whose only route is its link to
/// the orchestrator's host. A run at each site; site A's link is cut at the network level
/// mid-run (its steps go on and their records wait in the agent's outbox), then restored:
/// every record arrives exactly once and both runs succeed; site B is unaffected.
#[test]
fn two_sites_in_namespaces_and_a_cut_link_lose_and_double_nothing() {
    if !net_tools(&["ip"]) {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (Site::new("a", 1), Site::new("b", 2));
    // One orchestrator reachable from both links (0.0.0.0), long leases: the cut must not
    // expire the lease (that is the lease test's subject).
    let o = Orch::start(&d.path().join("orch"), "0.0.0.0:0", 30_000);
    let _ag_a = a.agent(&o, "edge-a", &d.path().join("agent-a"));
    let _ag_b = b.agent(&o, "edge-b", &d.path().join("agent-b"));
    // The namespaces really are cut off from the host's loopback.
    let lo = Command::new("ip")
        .args([
            "netns",
            "exec",
            &a.ns,
            BIN,
            "agent",
            "preflight",
            "--orchestrator",
        ])
        .arg(&o.url)
        .args(["--pin", &o.pin, "--data"])
        .arg(d.path().join("probe"))
        .output()
        .unwrap();
    assert!(text(&lo).contains("FAIL  orchestrator"), "{}", text(&lo));

    let steps: Vec<(String, String)> = (1..=4)
        .map(|i| (format!("s{i}"), format!("echo step {i}; sleep 1")))
        .collect();
    let steps: Vec<(&str, &str)> = steps
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let wf = workflow(d.path(), "cut", &steps);
    let run_a = submit(&o, &wf, "edge-a");
    let run_b = submit(&o, &wf, "edge-b");
    wait_until(Duration::from_secs(30), "site A's first record", || {
        (o.run(&run_a)["records"].as_u64() >= Some(1)).then_some(())
    });
    a.cut();
    let at_cut = o.run(&run_a)["records"].as_u64().unwrap();
    // The agent goes on: its remaining steps (3 s) finish while the link is down.
    std::thread::sleep(Duration::from_secs(5));
    let during = o.run(&run_a)["records"].as_u64().unwrap();
    assert!(
        during <= at_cut + 1,
        "records crossed a cut link: {at_cut} at the cut, {during} after"
    );
    assert!(during < 4, "the cut came too late to hold any record back");
    // Site B was not affected.
    wait_until(Duration::from_secs(30), "site B's run", || {
        (o.run(&run_b)["status"] == "succeeded").then_some(())
    });
    a.restore();
    wait_until(
        Duration::from_secs(90),
        "site A's run after the link returned",
        || (o.run(&run_a)["status"] == "succeeded").then_some(()),
    );
    for run in [&run_a, &run_b] {
        let r = o.run(run);
        // Records are unique per idempotency key: 4 rows for 4 steps is each exactly once.
        assert_eq!(r["records"], 4, "{r}");
        // The consolidated view: the run's records as the orchestrator holds them.
        let out = o.cli(&["logs", run, "--format", "json"]);
        assert!(out.status.success(), "{}", text(&out));
        let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .map(|v| v["step_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["s1", "s2", "s3", "s4"], "each record once, in order");
    }
    // Runs across sites, filtered.
    let ids = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["runs", "--format", "json"];
        a.extend_from_slice(args);
        o.json(&a)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&["--site", "edge-a"]), std::slice::from_ref(&run_a));
    assert_eq!(ids(&["--site", "edge-b"]), std::slice::from_ref(&run_b));
    let mut all = ids(&["--all-sites", "--status", "succeeded"]);
    all.sort();
    let mut want = vec![run_a.clone(), run_b.clone()];
    want.sort();
    assert_eq!(all, want);
    assert!(ids(&["--all-sites", "--status", "failed"]).is_empty());
    let bad = o.cli(&["runs", "--all-sites", "--status", "exploded"]);
    assert!(!bad.status.success());
    assert!(text(&bad).contains("unknown status"), "{}", text(&bad));
    // The human views name the site and the steps.
    let h = o.cli(&["logs", &run_a]);
    assert!(h.status.success(), "{}", text(&h));
    let t = text(&h);
    assert!(
        t.contains("at site edge-a: succeeded") && t.contains("s4#1"),
        "{t}"
    );
}

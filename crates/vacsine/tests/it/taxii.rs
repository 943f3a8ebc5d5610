//! Issue 16, threat intelligence at the orchestrator: a real TAXII 2.1 server (medallion,
//! memory backend configured from a JSON file written here), indicators written with OASIS's
//! `stix2` library and added over TAXII, the orchestrator polling the collection, a
//! `mode: orchestrated` Response banning at every site (real nftables in network
//! namespaces, the attacker's packets dropped). A child of `respond`.

use super::super::{net_tools, text, wait_until, Orch, Site};
use super::{banned_addresses, decisions, Attacker, Listener};
use crate::write;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The CI's venvs (`.ci/run`): `$VACSINE_CI_VENV` (stix2) and `$VACSINE_CI_VENV-medallion`.
fn venv() -> String {
    std::env::var("VACSINE_CI_VENV").unwrap_or_else(|_| "/opt/vacsine-ci-venv".into())
}

fn medallion_bin() -> PathBuf {
    PathBuf::from(format!("{}-medallion/bin/medallion", venv()))
}

fn stix_python() -> String {
    format!("{}/bin/python3", venv())
}
const COLLECTION: &str = "91a7b528-80eb-42ed-a74d-c6fbd5a26116";
const USER: &str = "vacsine-feed";

/// The tools this test needs, or why it is skipped (a failure with
/// `VACSINE_REQUIRE_MEDALLION=1`).
fn medallion_ready() -> bool {
    let medallion = medallion_bin();
    let stix2 = Command::new(stix_python())
        .args(["-c", "import stix2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if medallion.exists() && stix2 {
        return true;
    }
    let why = format!(
        "needs {} (python3 -m venv {v}-medallion && {v}-medallion/bin/pip install medallion) and stix2 for {}",
        medallion.display(),
        stix_python(),
        v = venv()
    );
    if std::env::var("VACSINE_REQUIRE_MEDALLION").is_ok_and(|v| v == "1") {
        panic!("VACSINE_REQUIRE_MEDALLION=1: {why}");
    }
    eprintln!("skipped: {why}");
    false
}

/// A medallion TAXII 2.1 server on loopback, its memory backend loaded from a file.
struct Medallion {
    child: Child,
    url: String,
    password: String,
}

impl Medallion {
    fn start(dir: &Path) -> Medallion {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let base = format!("http://127.0.0.1:{port}");
        let password = format!("pw-{}-{}", std::process::id(), port);
        let data = serde_json::json!({
            "/discovery": {
                "title": "Vacsine test TAXII server",
                "default": format!("{base}/api1/"),
                "api_roots": [format!("{base}/api1/")]
            },
            "api1": {
                "information": {
                    "title": "intel",
                    "versions": ["application/taxii+json;version=2.1"],
                    "max_content_length": 10485760
                },
                "status": [],
                "collections": [{
                    "id": COLLECTION,
                    "title": "indicators",
                    "can_read": true,
                    "can_write": true,
                    "media_types": ["application/stix+json;version=2.1"],
                    "objects": [],
                    "manifest": []
                }]
            }
        });
        let data_file = write(dir, "medallion-data.json", &data.to_string());
        let config = serde_json::json!({
            "backend": {
                "module": "medallion.backends.memory_backend",
                "module_class": "MemoryBackend",
                "filename": data_file,
            },
            "users": { USER: password },
            // Two objects a page: the poller follows `more` / `next`.
            "taxii": { "max_page_size": 2 }
        });
        let config_file = write(dir, "medallion.json", &config.to_string());
        let child = Command::new(medallion_bin())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg(&config_file)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("medallion.log")).unwrap())
            .spawn()
            .expect("start medallion");
        let m = Medallion {
            child,
            url: format!("{base}/api1/collections/{COLLECTION}/"),
            password,
        };
        wait_until(Duration::from_secs(30), "medallion answering", || {
            m.curl(&["-o", "/dev/null", "-w", "%{http_code}", &m.url])
                .contains("200")
                .then_some(())
        });
        m
    }

    fn curl(&self, args: &[&str]) -> String {
        let o = Command::new("curl")
            .args(["-s", "-u", &format!("{USER}:{}", self.password)])
            .args(["-H", "Accept: application/taxii+json;version=2.1"])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    /// Adds the objects of `envelope` (a JSON file) to the collection over TAXII.
    fn add(&self, envelope: &Path) {
        let out = self.curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/taxii+json;version=2.1",
            "--data-binary",
            &format!("@{}", envelope.display()),
            &format!("{}objects/", self.url),
        ]);
        let v: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("medallion: {out}"));
        assert_eq!(v["status"], "complete", "{v}");
        assert_eq!(v["failure_count"], 0, "{v}");
    }
}

impl Drop for Medallion {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes a TAXII envelope of indicators made with `stix2`: each `(pattern, valid_from,
/// valid_until)`.
fn stix_envelope(dir: &Path, name: &str, indicators: &[(&str, &str, Option<&str>)]) -> PathBuf {
    let spec = serde_json::to_string(indicators).unwrap();
    let script = r#"
import json, sys, stix2
objs = []
for pattern, valid_from, valid_until in json.loads(sys.argv[1]):
    kw = dict(name="feed " + pattern, pattern=pattern, pattern_type="stix", valid_from=valid_from, confidence=90)
    if valid_until:
        kw["valid_until"] = valid_until
    objs.append(json.loads(stix2.Indicator(**kw).serialize()))
print(json.dumps({"objects": objs}))
"#;
    let o = Command::new(stix_python())
        .args(["-c", script, &spec])
        .output()
        .unwrap();
    assert!(o.status.success(), "stix2: {}", text(&o));
    let p = dir.join(name);
    std::fs::write(&p, &o.stdout).unwrap();
    p
}

const RESPONSE: &str = r#"apiVersion: vacsine.io/v1
kind: Response
metadata:
  name: ban-feed-indicators
  version: "1"
spec:
  on:
    events: [indicator]
    sources: ["taxii:91a7b528-80eb-42ed-a74d-c6fbd5a26116"]
    observables: [ipv4, ipv6]
  decide:
    ban:
      for: 1h
  mode: orchestrated
  approval: none
"#;

fn events(o: &Orch) -> Vec<Value> {
    o.json(&["events", "--site", "orchestrator", "--format", "json"])
        .as_array()
        .unwrap()
        .clone()
}

/// Issue 16: three IP indicators (IPv4 and IPv6) added to a real TAXII 2.1 server become three
/// bans at every site in scope (the attacker's packets dropped at both); an indicator whose
/// pattern the evaluator cannot handle is reported in `vacsine events`; an expired one is
/// not banned; further polls add nothing, also across a restart of the orchestrator; an
/// indicator added later is banned too; a `mode: orchestrated` Response over an event a site
/// uploads is decided by the orchestrator (not the site) and banned at both sites.
#[test]
fn issue16_taxii_indicators_polled_at_the_orchestrator_become_bans_at_every_site() {
    if !net_tools(&["ip", "nft", "python3", "timeout", "curl"]) || !medallion_ready() {
        return;
    }
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let m = Medallion::start(d.path());
    let (a, b) = (Site::new("ta", 1), Site::new("tb", 2));
    let atk = Attacker::new(&[(&a, 1), (&b, 2)]);
    let (a_ip, b_ip) = (atk.links[0].clone(), atk.links[1].clone());
    let _web_a = Listener::start(&a, 8080);
    let _web_b = Listener::start(&b, 8080);
    let pw = write(d.path(), "taxii.pw", &format!("{}\n", m.password));
    let taxii_args = [
        "--taxii",
        m.url.as_str(),
        "--taxii-user",
        USER,
        "--taxii-password-file",
        pw.to_str().unwrap(),
        "--taxii-every",
        "1",
    ];
    let od = d.path().join("orch");
    let mut o = Orch::start_with(&od, "0.0.0.0:0", 30_000, &taxii_args);
    let resp = write(d.path(), "feed.yaml", RESPONSE);
    let pushed = o.json(&["push", resp.to_str().unwrap(), "--format", "json"]);
    assert_eq!(pushed["entries"][0]["kind"], "Response", "{pushed}");
    let _ag_a = a.agent(&o, "edge-a", &d.path().join("agent-a"));
    let _ag_b = b.agent(&o, "edge-b", &d.path().join("agent-b"));
    wait_until(
        Duration::from_secs(10),
        "the attacker reaching both sites",
        || (atk.connects(&a_ip, 8080) && atk.connects(&b_ip, 8080)).then_some(()),
    );

    let id = std::process::id();
    let v6 = format!("2001:db8:{:x}::7", id % 0xffff);
    let other4 = format!("198.51.100.{}", 1 + id % 250);
    let p_atk = format!("[ipv4-addr:value = '{}']", atk.src);
    let p_v6 = format!("[ipv6-addr:value = '{v6}']");
    let p_other = format!("[ipv4-addr:value = '{other4}']");
    let p_unsupported = "[ipv4-addr:value = '203.0.113.77'] WITHIN 10 SECONDS";
    let p_expired = "[ipv4-addr:value = '203.0.113.88']";
    let env = stix_envelope(
        d.path(),
        "first.json",
        &[
            (&p_atk, "2026-01-01T00:00:00Z", Some("2099-01-01T00:00:00Z")),
            (&p_v6, "2026-01-01T00:00:00Z", None),
            (&p_other, "2026-01-01T00:00:00Z", None),
            (p_unsupported, "2026-01-01T00:00:00Z", None),
            (
                p_expired,
                "2020-01-01T00:00:00Z",
                Some("2021-01-01T00:00:00Z"),
            ),
        ],
    );
    let t0 = Instant::now();
    m.add(&env);
    wait_until(Duration::from_secs(30), "A dropping the attacker", || {
        (!atk.connects(&a_ip, 8080)).then_some(())
    });
    let to_a = t0.elapsed();
    wait_until(Duration::from_secs(30), "B dropping the attacker", || {
        (!atk.connects(&b_ip, 8080)).then_some(())
    });
    let to_b = t0.elapsed();
    eprintln!(
        "indicator added over TAXII → attacker dropped at A: {to_a:?}, at B: {to_b:?} (polls every 1 s)"
    );
    let mut last = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let ds = loop {
        let ds = decisions(&o);
        if ds.len() == 3
            && ds
                .iter()
                .all(|d| d["applied"].as_object().is_some_and(|m| m.len() == 2))
        {
            break ds;
        }
        assert!(
            Instant::now() < deadline,
            "not three decisions in effect at both sites after 30 s: {last:#?}"
        );
        last = ds;
        std::thread::sleep(Duration::from_millis(200));
    };
    for d in &ds {
        let decided =
            chrono::DateTime::parse_from_rfc3339(d["decided_at"].as_str().unwrap()).unwrap();
        let applied: Vec<String> = d["applied"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(site, t)| {
                let t = chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap();
                format!("{site} +{} ms", (t - decided).num_milliseconds())
            })
            .collect();
        eprintln!(
            "{}: decided after the poll, then in effect at {} (indicator created → in effect: {})",
            d["action"],
            applied.join(", "),
            d["mitigated_ms"]
        );
    }
    let mut actions: Vec<String> = ds
        .iter()
        .map(|d| d["action"].as_str().unwrap().to_string())
        .collect();
    actions.sort();
    for ip in [&atk.src, &v6, &other4] {
        assert!(
            actions.iter().any(|x| x.contains(ip.as_str())),
            "{ip} not banned: {actions:?}"
        );
    }
    for d in &ds {
        assert_eq!(d["origin_site"], Value::Null, "{d}");
        assert_eq!(d["state"], "active", "{d}");
    }
    for site in [&a, &b] {
        let held = banned_addresses(site);
        for ip in [&atk.src, &v6, &other4] {
            assert!(held.contains(ip), "{ip} not in {held:?}");
        }
        assert!(!held.iter().any(|x| x.contains("203.0.113.88")), "{held:?}");
        assert!(!held.iter().any(|x| x.contains("203.0.113.77")), "{held:?}");
    }
    let evs = events(&o);
    let report = evs
        .iter()
        .find(|e| {
            e["event"]["summary"]
                .as_str()
                .is_some_and(|s| s.starts_with("not evaluable") && s.contains("WITHIN"))
        })
        .unwrap_or_else(|| panic!("the unsupported pattern is not reported: {evs:#?}"));
    assert_eq!(
        report["event"]["source"],
        format!("taxii:{COLLECTION}"),
        "{report}"
    );
    assert!(report["event"]["observables"]
        .as_array()
        .is_none_or(|o| o.is_empty()));
    // The expired indicator is an event, and decided nothing.
    assert!(
        evs.iter()
            .any(|e| e["event"]["fields"]["pattern"] == p_expired),
        "{evs:#?}"
    );
    assert_eq!(evs.len(), 5, "{evs:#?}");

    // Further polls (every second) add nothing; nor does a restart of the orchestrator.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(events(&o).len(), 5);
    assert_eq!(decisions(&o).len(), 3);
    o.kill9();
    // On the same port: the agents carry on with it.
    let listen = format!("0.0.0.0:{}", o.url.rsplit(':').next().unwrap());
    let o = Orch::start_with(&od, &listen, 30_000, &taxii_args);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(events(&o).len(), 5, "{:#?}", events(&o));
    assert_eq!(decisions(&o).len(), 3);

    // An indicator added later (after the position the restart resumed from) is decided.
    let later = format!("198.51.100.{}", 1 + (id + 1) % 250);
    let env2 = stix_envelope(
        d.path(),
        "second.json",
        &[(
            &format!("[ipv4-addr:value = '{later}']"),
            "2026-01-01T00:00:00Z",
            None,
        )],
    );
    m.add(&env2);
    wait_until(
        Duration::from_secs(30),
        "the later indicator decided",
        || (decisions(&o).len() == 4).then_some(()),
    );
    assert_eq!(events(&o).len(), 6);

    // `mode: orchestrated` over what a site uploads: A reads a decoy touch, decides nothing
    // itself, the orchestrator decides and both sites ban.
    let resp2 = write(
        d.path(),
        "decoy.yaml",
        &RESPONSE
            .replace("ban-feed-indicators", "ban-decoy-orchestrated")
            .replace(
                "[\"taxii:91a7b528-80eb-42ed-a74d-c6fbd5a26116\"]",
                "[opencanary]",
            ),
    );
    let pushed = o.json(&["push", resp2.to_str().unwrap(), "--format", "json"]);
    assert_eq!(pushed["entries"][0]["kind"], "Response", "{pushed}");
    let second = atk.src.replace(".200.7", ".200.8");
    let ev = write(
        d.path(),
        "touch.jsonl",
        &format!("{}\n", super::canary(&second, 1)),
    );
    let out = super::ingest(&a, &d.path().join("agent-a"), &ev);
    assert!(out.status.success(), "{}", text(&out));
    let rep: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rep["applied"].as_array().is_none_or(|x| x.is_empty()),
        "the site decided an orchestrated response itself: {rep}"
    );
    let dec = wait_until(
        Duration::from_secs(30),
        "the orchestrator's decision on A's event in effect at both sites",
        || {
            decisions(&o).into_iter().find(|d| {
                d["action"].as_str().is_some_and(|x| x.ends_with(&second))
                    && d["applied"].as_object().is_some_and(|m| m.len() == 2)
            })
        },
    );
    assert_eq!(dec["origin_site"], Value::Null, "{dec}");
    assert!(banned_addresses(&a).contains(&second));
    assert!(banned_addresses(&b).contains(&second));
    assert_eq!(decisions(&o).len(), 5);
}

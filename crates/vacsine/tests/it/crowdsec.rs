//! Issue 16, compatible enforcement: the real `crowdsec-firewall-bouncer` (Debian's) enforces
//! Vacsine's bans by polling the orchestrator's CrowdSec bouncer API (`--bouncer-listen`),
//! in a network namespace of this test (names and addresses from the process id), with its
//! own configuration, nft table and set names. An attacker namespace observes the drop.

use super::respond::{Attacker, Listener};
use super::{net_tools, sh, text, wait_until, Orch, Site};
use serde_json::Value;
use std::process::{Child, Command};
use std::time::Duration;

const BOUNCER: &str = "crowdsec-firewall-bouncer";

/// Whether the real bouncer is here: required when `VACSINE_REQUIRE_CROWDSEC=1` (`.ci/run`
/// installs it), else skipped with a line.
pub(crate) fn have_bouncer() -> bool {
    let here = Command::new("sh")
        .args(["-c", &format!("command -v {BOUNCER}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !here {
        assert!(
            std::env::var("VACSINE_REQUIRE_CROWDSEC").as_deref() != Ok("1"),
            "VACSINE_REQUIRE_CROWDSEC=1 but `{BOUNCER}` is not installed (apt-get install crowdsec-firewall-bouncer; see .ci/run)"
        );
        eprintln!(
            "skipping: `{BOUNCER}` is not installed (apt-get install crowdsec-firewall-bouncer)"
        );
    }
    here
}

/// The real firewall bouncer in `ns`, nftables mode, its own table and set names.
struct Bouncer {
    child: Child,
    table: String,
    set: String,
    ns: String,
    log: std::path::PathBuf,
}

impl Bouncer {
    fn start(ns: &str, dir: &std::path::Path, api_url: &str, key: &str, every: &str) -> Bouncer {
        let id = std::process::id() % 10_000;
        let (table, set) = (format!("vcs{id}"), format!("vcs{id}-bl"));
        let cfg = format!(
            "mode: nftables\npid_dir: {dir}/\nupdate_frequency: {every}\ndaemonize: false\nlog_mode: stdout\nlog_level: info\n\
             api_url: {api_url}\napi_key: {key}\ndisable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n\
             supported_decisions_types:\n  - ban\nblacklists_ipv4: {set}\nblacklists_ipv6: {set}6\n\
             nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: {table}\n    chain: {table}-chain\n\
             \x20 ipv6:\n    enabled: true\n    set-only: false\n    table: {table}6\n    chain: {table}6-chain\n\
             prometheus:\n  enabled: false\n  listen_addr: 127.0.0.1\n  listen_port: 60601\n",
            dir = dir.display()
        );
        let path = dir.join("bouncer.yaml");
        std::fs::write(&path, cfg).unwrap();
        let log = dir.join("bouncer.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BOUNCER, "-c"])
            .arg(&path)
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Bouncer {
            child,
            table,
            set,
            ns: ns.to_string(),
            log,
        }
    }

    /// The elements of its IPv4 set, as nft lists them.
    fn set_text(&self) -> String {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns, "nft", "list", "set", "ip"])
            .args([&self.table, &self.set])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for t in [format!("ip {}", self.table), format!("ip6 {}6", self.table)] {
            let _ = Command::new("ip")
                .args(["netns", "exec", &self.ns, "sh", "-c"])
                .arg(format!("nft delete table {t}"))
                .output();
        }
    }
}

/// `curl` from the site's namespace to the bouncer API: (status, body).
fn api(ns: &str, url: &str, key: &str) -> (u16, String) {
    let out = sh(&format!(
        "ip netns exec {ns} curl -s -w '\\n%{{http_code}}' -H 'X-Api-Key: {key}' '{url}'"
    ));
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// Issue 16 item 7: a ban made with `vacsine decisions add` reaches the real CrowdSec
/// firewall bouncer (polling the orchestrator's bouncer API with its own key), lands in its
/// nft set, and the attacker's next connection to the site is dropped; deleted, the element
/// goes and the attacker gets through again. `GET /v1/decisions?ip=` answers in CrowdSec's
/// shape; a wrong key, and the key of a deleted bouncer, are refused.
#[test]
fn issue16_the_real_crowdsec_firewall_bouncer_enforces_vacsine_decisions() {
    if !net_tools(&["ip", "nft", "python3", "timeout", "curl"]) || !have_bouncer() {
        return;
    }
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let site = Site::new("cs", 1);
    let atk = Attacker::new(&[(&site, 1)]);
    let web_ip = atk.links[0].clone();
    let _web = Listener::start(&site, 8080);
    let port = std::net::TcpListener::bind(format!("{}:0", site.host_ip))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("{}:{port}", site.host_ip);
    let o = Orch::start_with(
        &d.path().join("orch"),
        "127.0.0.1:0",
        30_000,
        &["--bouncer-listen", &listen],
    );
    let added = o.json(&["bouncer", "add", "fw-a", "--format", "json"]);
    let key = added["key"].as_str().unwrap().to_string();
    assert_eq!(added["bouncer"]["name"], "fw-a", "{added}");
    let again = o.cli(&["bouncer", "add", "fw-a"]);
    assert!(!again.status.success(), "a name taken twice");
    assert!(text(&again).contains("exists"), "{}", text(&again));

    let api_url = format!("http://{listen}/");
    let bd = d.path().join("bouncer");
    std::fs::create_dir_all(&bd).unwrap();
    let b = Bouncer::start(&site.ns, &bd, &api_url, &key, "200ms");
    wait_until(Duration::from_secs(20), "the bouncer's first pull", || {
        let l = o.json(&["bouncer", "list", "--format", "json"]);
        l[0]["last_pull_at"].is_string().then_some(())
    });
    wait_until(
        Duration::from_secs(10),
        "the attacker reaching the site",
        || atk.connects(&web_ip, 8080).then_some(()),
    );

    let dec = o.json(&[
        "decisions",
        "add",
        "--ip",
        &atk.src,
        "--for",
        "1h",
        "--format",
        "json",
    ]);
    let id = dec["id"].as_str().unwrap().to_string();
    wait_until(
        Duration::from_secs(10),
        "the ban in the bouncer's set",
        || b.set_text().contains(&atk.src).then_some(()),
    );
    assert!(
        !atk.connects(&web_ip, 8080),
        "the attacker still reaches the site: {}",
        b.set_text()
    );
    // The element's timeout is the decision's time left (rounded up to the second).
    let t = b.set_text();
    assert!(
        t.contains("timeout 1h ") || t.contains("timeout 59m5"),
        "{t}"
    );

    // The ban in CrowdSec's shape, on its own path.
    let (code, body) = api(
        &site.ns,
        &format!("{api_url}v1/decisions?ip={}", atk.src),
        &key,
    );
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let c = &v[0];
    assert_eq!(
        (
            c["origin"].as_str(),
            c["type"].as_str(),
            c["scope"].as_str()
        ),
        (Some("vacsine"), Some("ban"), Some("Ip")),
        "{v}"
    );
    assert_eq!(c["value"], atk.src.as_str(), "{v}");
    assert_eq!(c["scenario"], "vacsine/operator", "{v}");
    assert!(c["id"].is_u64(), "{v}");
    let left = c["duration"].as_str().unwrap();
    assert!(left.starts_with("59m") || left == "1h0m0s", "{v}");
    let (_, none) = api(
        &site.ns,
        &format!("{api_url}v1/decisions?ip=192.0.2.1"),
        &key,
    );
    assert_eq!(none.trim(), "null");
    let (code, body) = api(&site.ns, &format!("{api_url}v1/decisions/stream"), "wrong");
    assert_eq!(code, 403, "{body}");

    // Deleted: the element goes, the attacker gets through.
    let del = o.cli(&["decisions", "delete", &id]);
    assert!(del.status.success(), "{}", text(&del));
    wait_until(Duration::from_secs(10), "the ban gone from the set", || {
        (!b.set_text().contains(&atk.src)).then_some(())
    });
    wait_until(
        Duration::from_secs(5),
        "the attacker reaching the site again",
        || atk.connects(&web_ip, 8080).then_some(()),
    );
    assert!(b.log().contains("1 decision deleted"), "{}", b.log());

    // A deleted bouncer's key is refused.
    let gone = o.cli(&["bouncer", "delete", "fw-a"]);
    assert!(gone.status.success(), "{}", text(&gone));
    let (code, body) = api(&site.ns, &format!("{api_url}v1/decisions/stream"), &key);
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("unknown or deleted API key"), "{body}");
}

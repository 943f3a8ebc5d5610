//! Issue 16, compatible enforcement: the real `crowdsec-firewall-bouncer` (Debian's) enforces
//! Vacsine's bans by polling the orchestrator's CrowdSec bouncer API (`--bouncer-listen`),
//! in a network namespace of this test (names and addresses from the process id), with its
//! own configuration, nft table and set names. An attacker namespace observes the drop.

use super::respond::{percentile, Attacker, Listener};
use super::{net_tools, sh, text, wait_until, Orch, Site};
use serde_json::Value;
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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
        Bouncer::start_as("", ns, dir, api_url, key, every)
    }

    /// [`Bouncer::start`], its table and set names ending in `tag`.
    fn start_as(
        tag: &str,
        ns: &str,
        dir: &std::path::Path,
        api_url: &str,
        key: &str,
        every: &str,
    ) -> Bouncer {
        let id = std::process::id() % 10_000;
        let (table, set) = (format!("vcs{id}{tag}"), format!("vcs{id}{tag}-bl"));
        let cfg = format!(
            "mode: nftables\npid_dir: {dir}/\nupdate_frequency: {every}\ndaemonize: false\nlog_mode: stdout\nlog_level: info\n\
             api_url: {api_url}\napi_key: {key}\ndisable_ipv6: false\ndeny_action: DROP\ndeny_log: false\n\
             supported_decisions_types:\n  - ban\nblacklists_ipv4: {set}\nblacklists_ipv6: {set}6\n\
             nftables:\n  ipv4:\n    enabled: true\n    set-only: false\n    table: {table}\n    chain: {table}-chain\n\
             \x20 ipv6:\n    enabled: true\n    set-only: false\n    table: {table}6\n    chain: {table}6-chain\n\
             prometheus:\n  enabled: false\n  listen_addr: 127.0.0.1\n  listen_port: 60601\n",
            dir = dir.display()
        );
        let path = dir.join(format!("bouncer{tag}.yaml"));
        std::fs::write(&path, cfg).unwrap();
        let log = dir.join(format!("bouncer{tag}.log"));
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

/// When each address was first added to an nft set in a namespace, as `nft monitor` reports
/// it (event-driven: no polling between the change and its sight), in ms since the epoch.
struct Monitor {
    child: Child,
    seen: Arc<Mutex<HashMap<String, i64>>>,
}

impl Monitor {
    fn start(ns: &str) -> Monitor {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "stdbuf", "-oL", "nft", "monitor"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let s = seen.clone();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(out);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let now = chrono::Utc::now().timestamp_millis();
                let line = String::from_utf8_lossy(&buf);
                if std::env::var("VACSINE_BENCH_DEBUG").is_ok() {
                    eprintln!("monitor: {}", line.trim_end());
                }
                if !line.starts_with("add element") {
                    continue;
                }
                // `add element FAMILY TABLE SET { ADDR timeout …, ADDR … }`
                let Some((head, elems)) = line.split_once('{') else {
                    continue;
                };
                let set = head.split_whitespace().last().unwrap_or("").to_string();
                let mut m = s.lock().unwrap();
                for item in elems.split(',') {
                    if let Some(a) = item.split_whitespace().next() {
                        if a.parse::<std::net::IpAddr>().is_ok() {
                            m.entry(a.to_string()).or_insert(now);
                            m.entry(format!("{set} {a}")).or_insert(now);
                        }
                    }
                }
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        Monitor { child, seen }
    }

    /// First added to any set.
    fn at(&self, addr: &str) -> Option<i64> {
        self.seen.lock().unwrap().get(addr).copied()
    }

    /// First added to set `set`.
    fn at_in(&self, set: &str, addr: &str) -> Option<i64> {
        self.seen
            .lock()
            .unwrap()
            .get(&format!("{set} {addr}"))
            .copied()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bench/crowdsec.sh`: one decision made at the orchestrator (`vacsine decisions add`), N
/// times, seen in effect (its nft element added, per `nft monitor`) at a Vacsine site (the
/// agent's long poll) and by the real CrowdSec firewall bouncer polling the orchestrator's
/// bouncer API with its default update_frequency (10s) and with a short one (100ms), all in
/// the same run. Prints p50/p99 from the decision's `decided_at`.
#[test]
#[ignore = "benchmark: bash bench/crowdsec.sh"]
fn bench_issue16_crowdsec() {
    if !net_tools(&["ip", "nft", "stdbuf"]) || !have_bouncer() {
        return;
    }
    let n: usize = std::env::var("VACSINE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let short = std::env::var("VACSINE_BENCH_SHORT").unwrap_or_else(|_| "100ms".into());
    let _l = crate::site_lock();
    let d = tempfile::tempdir().unwrap();
    let (a, bs) = (Site::new("ca", 1), Site::new("cb", 2));
    let port = std::net::TcpListener::bind(format!("{}:0", bs.host_ip))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("{}:{port}", bs.host_ip);
    let o = Orch::start_with(
        &d.path().join("orch"),
        "0.0.0.0:0",
        30_000,
        &["--bouncer-listen", &listen],
    );
    let _ag = a.agent(&o, "edge-a", &d.path().join("agent-a"));
    let api_url = format!("http://{listen}/");
    let bd = d.path().join("bouncers");
    std::fs::create_dir_all(&bd).unwrap();
    let key = |name: &str| {
        o.json(&["bouncer", "add", name, "--format", "json"])["key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (k10, kshort) = (key("fw-10s"), key("fw-short"));
    let mon_a = Monitor::start(&a.ns);
    let mon_b = Monitor::start(&bs.ns);
    let b10 = Bouncer::start_as("d", &bs.ns, &bd, &api_url, &k10, "10s");
    let bshort = Bouncer::start_as("s", &bs.ns, &bd, &api_url, &kshort, &short);
    // Both bouncers and the agent are up: a first decision reaches all three.
    o.json(&[
        "decisions",
        "add",
        "--ip",
        "192.0.2.200",
        "--for",
        "1h",
        "--format",
        "json",
    ]);
    wait_until(
        Duration::from_secs(30),
        "the warm-up decision everywhere",
        || {
            let seen = mon_a.at("192.0.2.200").is_some()
                && b10.set_text().contains("192.0.2.200")
                && bshort.set_text().contains("192.0.2.200");
            seen.then_some(())
        },
    );
    let id = std::process::id() % 10_000;
    let net = 20 + id % 200;
    // The peer: the real crowdsec LAPI (its own config, database and port), `cscli decisions
    // add`, and its firewall bouncer (same package, same namespace, tables of its own).
    let port2 = std::net::TcpListener::bind(format!("{}:0", bs.host_ip))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let lapi = Lapi::start(&d.path().join("lapi"), &format!("{}:{port2}", bs.host_ip));
    let peer = lapi.as_ref().map(|l| {
        let url = format!("http://{}/", l.listen);
        let c10 = Bouncer::start_as("cd", &bs.ns, &bd, &url, &l.bouncer_key("cs-10s"), "10s");
        let cs = Bouncer::start_as("cs", &bs.ns, &bd, &url, &l.bouncer_key("cs-short"), &short);
        (c10, cs)
    });
    if let (Some(l), Some((c10, cs))) = (&lapi, &peer) {
        l.cscli_ban("192.0.2.201");
        wait_until(
            Duration::from_secs(30),
            "the LAPI's warm-up decision",
            || {
                (c10.set_text().contains("192.0.2.201") && cs.set_text().contains("192.0.2.201"))
                    .then_some(())
            },
        );
    }
    let mut decided = Vec::new();
    let mut peer_decided = Vec::new();
    for i in 0..n {
        let ip = format!("10.{net}.203.{}", i + 1);
        let v = o.json(&[
            "decisions",
            "add",
            "--ip",
            &ip,
            "--for",
            "1h",
            "--format",
            "json",
        ]);
        let t = chrono::DateTime::parse_from_rfc3339(v["decided_at"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
        decided.push((ip, t));
        if let Some(l) = &lapi {
            let ip = format!("10.{net}.204.{}", i + 1);
            let t = l.cscli_ban(&ip);
            peer_decided.push((ip, t));
        }
        // Not a divisor of either poll period: the decisions fall at every phase of them.
        std::thread::sleep(Duration::from_millis(730));
    }
    // The agent's own record of when each element was in effect at A (its nft transaction
    // committed), as the orchestrator holds it (`applied`).
    let applied_a = |ip: &str| -> Option<i64> {
        let ds = o.json(&["decisions", "--format", "json"]);
        ds.as_array()?
            .iter()
            .find(|x| {
                x["decision"]["action"]["net"]
                    .as_str()
                    .is_some_and(|n| n == ip || n == format!("{ip}/32"))
            })
            .and_then(|x| x["applied"]["edge-a"].as_str())
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_millis())
    };
    let missing = || -> Vec<String> {
        let mut out: Vec<String> = decided
            .iter()
            .filter_map(|(ip, _)| {
                let found = [
                    ("vacsine", applied_a(ip).is_some()),
                    ("fw-10s", mon_b.at_in(&b10.set, ip).is_some()),
                    ("fw-short", mon_b.at_in(&bshort.set, ip).is_some()),
                ];
                let not: Vec<&str> = found.iter().filter(|w| !w.1).map(|w| w.0).collect();
                (!not.is_empty()).then(|| format!("{ip}: not at {not:?}"))
            })
            .collect();
        if let Some((c10, cs)) = &peer {
            for (ip, _) in &peer_decided {
                if mon_b.at_in(&c10.set, ip).is_none() || mon_b.at_in(&cs.set, ip).is_none() {
                    out.push(format!("{ip}: not at a bouncer of the crowdsec LAPI"));
                }
            }
        }
        out
    };
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while !missing().is_empty() && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        missing().is_empty(),
        "{:?}\nfw-10s: {}\n{}",
        missing(),
        b10.set_text(),
        b10.log()
    );
    let lat = |set: &str, list: &[(String, i64)]| -> Vec<f64> {
        list.iter()
            .map(|(ip, t)| (mon_b.at_in(set, ip).unwrap() - t) as f64)
            .collect()
    };
    let mut rows: Vec<(String, Vec<f64>)> = vec![
        (
            "Vacsine site: agent long poll, signed set, nft diff (the agent's applied time)".into(),
            decided
                .iter()
                .map(|(ip, t)| (applied_a(ip).unwrap() - t) as f64)
                .collect(),
        ),
        (
            "crowdsec-firewall-bouncer polling Vacsine, update_frequency 10s (its default)".into(),
            lat(&b10.set, &decided),
        ),
        (
            format!("crowdsec-firewall-bouncer polling Vacsine, update_frequency {short}"),
            lat(&bshort.set, &decided),
        ),
    ];
    if let Some((c10, cs)) = &peer {
        rows.push((
            "peer: cscli decisions add → crowdsec LAPI 1.4.6 → its firewall bouncer, 10s (default)"
                .into(),
            lat(&c10.set, &peer_decided),
        ));
        rows.push((
            format!(
                "peer: cscli decisions add → crowdsec LAPI 1.4.6 → its firewall bouncer, {short}"
            ),
            lat(&cs.set, &peer_decided),
        ));
    }
    println!("| decision made → in effect (nft element added, per `nft monitor` unless said), {n} decisions each, debug build | p50 ms | p99 ms |");
    println!("|---|---|---|");
    for (what, mut v) in rows {
        println!(
            "| {what} | {:.0} | {:.0} |",
            percentile(&mut v, 50.0),
            percentile(&mut v, 99.0)
        );
    }
    if lapi.is_none() {
        println!("| peer: crowdsec LAPI | not run here: `crowdsec` or `cscli` missing | |");
    }
}

/// The real crowdsec local API (`crowdsec -no-cs`), with a configuration, database and port
/// of its own (its online API off), a machine for `cscli` and bouncer keys.
struct Lapi {
    child: Child,
    cfg: std::path::PathBuf,
    listen: String,
}

impl Lapi {
    /// `None` when crowdsec is not installed.
    fn start(dir: &std::path::Path, listen: &str) -> Option<Lapi> {
        let base = std::fs::read_to_string("/etc/crowdsec/config.yaml").ok()?;
        let have = |t: &str| {
            Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !have("crowdsec") || !have("cscli") {
            return None;
        }
        std::fs::create_dir_all(dir).unwrap();
        let creds = dir.join("creds.yaml");
        let cfg: String = base
            .lines()
            .filter(|l| {
                !l.trim_start().starts_with("online_client:")
                    && !l.contains("online_api_credentials.yaml")
            })
            .map(|l| {
                let t = l.trim_start();
                let ind = &l[..l.len() - t.len()];
                if t.starts_with("daemonize:") {
                    format!("{ind}daemonize: false")
                } else if t.starts_with("log_media:") {
                    format!("{ind}log_media: stdout")
                } else if t.starts_with("db_path:") {
                    format!("{ind}db_path: {}", dir.join("crowdsec.db").display())
                } else if t.starts_with("listen_uri:") {
                    format!("{ind}listen_uri: {listen}")
                } else if t.starts_with("credentials_path:") {
                    format!("{ind}credentials_path: {}", creds.display())
                } else if t == "type: sqlite" {
                    // As Debian's config.yaml.local sets it: without WAL, cscli's writes meet
                    // the bouncers' reads as "database is locked".
                    format!("{ind}type: sqlite\n{ind}use_wal: true")
                } else if t.starts_with("enabled: true") {
                    format!("{ind}enabled: false")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = dir.join("config.yaml");
        std::fs::write(&path, cfg).unwrap();
        let c = path.to_str().unwrap().to_string();
        sh(&format!(
            "cscli -c {c} machines add bench --auto -f {} 2>/dev/null",
            creds.display()
        ));
        let text = std::fs::read_to_string(&creds).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("url:") {
                    format!("url: http://{listen}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&creds, text + "\n").unwrap();
        let log = std::fs::File::create(dir.join("lapi.log")).unwrap();
        let child = Command::new("crowdsec")
            .args(["-c", &c, "-no-cs"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_until(
            Duration::from_secs(30),
            "the crowdsec LAPI listening",
            || std::net::TcpStream::connect(listen).ok().map(|_| ()),
        );
        Some(Lapi {
            child,
            cfg: path,
            listen: listen.to_string(),
        })
    }

    fn bouncer_key(&self, name: &str) -> String {
        sh(&format!(
            "cscli -c {} bouncers add {name} -o raw 2>/dev/null",
            self.cfg.display()
        ))
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string()
    }

    /// `cscli decisions add --ip IP --duration 1h`; when it returned (the decision is in the
    /// LAPI's database then), ms since the epoch.
    fn cscli_ban(&self, ip: &str) -> i64 {
        sh(&format!(
            "cscli -c {} decisions add --ip {ip} --duration 1h 2>&1",
            self.cfg.display()
        ));
        chrono::Utc::now().timestamp_millis()
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

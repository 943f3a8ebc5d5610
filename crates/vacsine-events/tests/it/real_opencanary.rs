//! The real OpenCanary (PyPI) touched over TCP; its JSON log read by our parser.
//! OpenCanary is found as `opencanary.tac` beside `twistd` in a directory of PATH (a venv's
//! `bin`, as CI's); skipped with a message when absent, unless `VACSINE_REQUIRE_OPENCANARY=1`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vacsine_events::{parse, EventKind, Format, Severity};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_tac() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("opencanary.tac"))
        .find(|p| p.is_file() && p.with_file_name("twistd").is_file())
}

fn wait_for(log: &Path, what: impl Fn(&str) -> bool, why: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if what(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{why}; log so far:\n{text}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut s = String::new();
    r.read_line(&mut s).unwrap();
    s
}

#[test]
fn real_opencanary_log_lines_become_indicators() {
    let Some(tac) = find_tac() else {
        assert!(
            std::env::var("VACSINE_REQUIRE_OPENCANARY").as_deref() != Ok("1"),
            "VACSINE_REQUIRE_OPENCANARY=1 but no opencanary.tac beside twistd in PATH"
        );
        eprintln!("SKIPPED: OpenCanary not found (no opencanary.tac beside twistd in PATH; `pip install opencanary` in a venv on PATH); VACSINE_REQUIRE_OPENCANARY=1 fails instead");
        return;
    };
    assert!(
        !Path::new("/etc/opencanaryd/opencanary.conf").exists(),
        "/etc/opencanaryd/opencanary.conf would take precedence over this test's configuration"
    );
    let dir =
        std::env::temp_dir().join(format!("vacsine-events-opencanary-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("opencanary.log");
    let (ftp, http) = (free_port(), free_port());
    let conf = serde_json::json!({
        "device.node_id": "decoy-test",
        "ip.ignorelist": [], "logtype.ignorelist": [],
        "ftp.enabled": true, "ftp.port": ftp, "ftp.banner": "FTP server ready",
        "http.enabled": true, "http.port": http, "http.banner": "Apache/2.2.22 (Ubuntu)", "http.skin": "nasLogin",
        "logger": {"class": "PyLogger", "kwargs": {
            "formatters": {"plain": {"format": "%(message)s"}},
            "handlers": {"file": {"class": "logging.FileHandler", "filename": log.to_str().unwrap()}}}}
    });
    std::fs::write(dir.join("opencanary.conf"), conf.to_string()).unwrap();
    let twistd = tac.with_file_name("twistd");
    let _daemon = Killed(
        Command::new(&twistd)
            .args([
                "-noy",
                tac.to_str().unwrap(),
                "--pidfile",
                dir.join("pid").to_str().unwrap(),
            ])
            .current_dir(&dir)
            .env("HOME", &dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        &log,
        |t| t.contains("Canary running"),
        "OpenCanary did not start",
    );

    // An HTTP visit with shell metacharacters in the path and the user agent.
    let mut s = TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.write_all(b"GET /index.html?x=$(id) HTTP/1.0\r\nHost: decoy\r\nUser-Agent: `reboot`; rm -rf /\r\n\r\n").unwrap();
    let mut sink = Vec::new();
    let _ = s.read_to_end(&mut sink);
    // An FTP login attempt.
    let s = TcpStream::connect(("127.0.0.1", ftp)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    assert!(read_line(&mut r).starts_with("220"));
    (&s).write_all(b"USER evil\r\n").unwrap();
    read_line(&mut r);
    (&s).write_all(b"PASS pass;rm -rf /\r\n").unwrap();
    read_line(&mut r);

    let text = wait_for(
        &log,
        |t| t.contains("\"logtype\": 3000") && t.contains("\"logtype\": 2000"),
        "OpenCanary did not log both touches",
    );
    let p = parse(Format::OpenCanary, text.as_bytes());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert!(
        p.skipped >= 3,
        "its start-up messages are not events: {}",
        p.skipped
    );
    assert_eq!(p.events.len(), 2, "{:#?}", p.events);
    let (web, login) = (&p.events[0], &p.events[1]);
    for e in [web, login] {
        assert_eq!(e.kind, EventKind::Indicator);
        assert_eq!(e.severity, Severity::High);
        assert_eq!(e.node.as_deref(), Some("decoy-test"));
        assert_eq!(crate::common::obs(e), ["ipv4:127.0.0.1"]);
    }
    assert_eq!(web.fields["logtype"], "3000");
    assert_eq!(web.fields["dst_port"], http.to_string());
    assert_eq!(web.fields["logdata.USERAGENT"], "`reboot`; rm -rf /");
    assert_eq!(login.fields["logtype"], "2000");
    assert_eq!(login.fields["dst_port"], ftp.to_string());
    assert_eq!(login.fields["logdata.USERNAME"], "evil");
    assert_eq!(login.fields["logdata.PASSWORD"], "pass;rm -rf /");
    assert!(
        login.summary.contains("FTP login attempt from 127.0.0.1"),
        "{}",
        login.summary
    );
    drop(_daemon);
    let _ = std::fs::remove_dir_all(&dir);
}

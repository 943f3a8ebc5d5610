//! The real nmap's `-oX` output, of a scan of a listener this test runs, read by our parser.
//! Skipped with a message when nmap is missing, unless `VACSINE_REQUIRE_NMAP=1` (CI).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;

use vacsine_events::{parse, EventKind, Format};

#[test]
fn a_real_nmap_service_scan_gives_one_exposure_per_open_port() {
    let open = TcpListener::bind("127.0.0.1:0").unwrap();
    let open_port = open.local_addr().unwrap().port();
    // A port that was free a moment ago: closed.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::thread::spawn(move || {
        for mut c in open.incoming().flatten() {
            // An SSH server's banner, for nmap's version detection.
            let _ = c.write_all(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n");
            let _ = c.read(&mut [0u8; 256]);
        }
    });
    let ports = format!("{open_port},{closed_port}");
    let out = Command::new("nmap")
        .args([
            "-sT",
            "-sV",
            "-Pn",
            "-n",
            "-p",
            &ports,
            "-oX",
            "-",
            "127.0.0.1",
        ])
        .output();
    let xml = match out {
        Ok(o) if o.status.success() => o.stdout,
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var("VACSINE_REQUIRE_NMAP").as_deref() != Ok("1"),
                "VACSINE_REQUIRE_NMAP=1 but nmap failed: {why}"
            );
            eprintln!("SKIPPED: nmap unavailable ({why}); apt-get install nmap, or set VACSINE_REQUIRE_NMAP=1 to fail instead");
            return;
        }
    };
    assert_eq!(Format::detect(&xml), Some(Format::Nmap));
    let p = parse(Format::Nmap, &xml);
    assert!(p.errors.is_empty(), "{:?}", p.errors);
    assert_eq!(p.events.len(), 1, "{:#?}", p.events);
    assert_eq!(p.skipped, 1, "the closed port");
    let e = &p.events[0];
    assert_eq!(e.kind, EventKind::Vulnerability);
    assert_eq!(e.fields["port"], open_port.to_string());
    assert_eq!(e.fields["protocol"], "tcp");
    assert_eq!(e.fields["service"], "ssh");
    assert_eq!(e.fields["product"], "OpenSSH");
    let obs = crate::common::obs(e);
    assert_eq!(obs[0], "ipv4:127.0.0.1");
    assert!(
        obs.iter().any(|o| o.starts_with("package:OpenSSH@9.2p1")),
        "{obs:?}"
    );
    assert!(
        e.summary
            .contains(&format!("{open_port}/tcp open on 127.0.0.1 (OpenSSH 9.2p1")),
        "{}",
        e.summary
    );
}

//! Issue 19, item 2: per-client fairness. One client address holding stalled connections
//! keeps at most its share (`--max-connections-per-client`): its connections beyond the cap
//! are closed as it opens them, and a client from another address is served promptly.

use super::{text, Orch};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

/// A loopback address of this process's own (`127.A.B.last`), so that runs side by side
/// do not share one.
fn own_loopback(last: u8) -> IpAddr {
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(
        127,
        1 + ((pid >> 8) % 250) as u8,
        (pid & 0xff) as u8,
        last,
    ))
}

/// Whether the server closed `s` (end of stream or reset) within `wait`.
async fn closed(s: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[test]
fn issue19_one_address_holding_stalled_connections_keeps_its_share_and_others_are_served() {
    const CAP: usize = 16;
    const HELD: usize = 64;
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start_with(
        &d.path().join("orch"),
        "127.0.0.1:0",
        3000,
        &["--max-connections-per-client", &CAP.to_string()],
    );
    let server: SocketAddr = o.addr().parse().unwrap();
    let hostile = own_loopback(2);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // From one address: TCP connections that never start their TLS handshake.
        let mut held = Vec::new();
        for _ in 0..HELD {
            let sock = tokio::net::TcpSocket::new_v4().unwrap();
            sock.bind(SocketAddr::new(hostile, 0)).unwrap();
            held.push(sock.connect(server).await.unwrap());
        }
        // A client from another address is served promptly.
        let t0 = Instant::now();
        let out = o.cli(&["status", "--format", "json"]);
        let took = t0.elapsed();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            took < Duration::from_secs(5),
            "served in {took:?} while {HELD} connections are held"
        );
        // The hostile address kept its share: the oldest beyond the cap were closed when
        // the newer ones came (well before the 10 s handshake timeout).
        let mut shut = Vec::new();
        for s in held.iter_mut() {
            shut.push(closed(s, Duration::from_millis(200)).await);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "checked before the handshake timeout"
        );
        let n_closed = shut.iter().filter(|c| **c).count();
        assert_eq!(n_closed, HELD - CAP, "closed: {shut:?}");
        assert!(
            shut[..HELD - CAP].iter().all(|c| *c) && shut[HELD - CAP..].iter().all(|c| !*c),
            "the oldest ones go: {shut:?}"
        );
    });
}

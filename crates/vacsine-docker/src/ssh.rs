//! The `ssh` probe: an SSH client connection made from a vantage point's network namespace.
//!
//! The TCP socket is created by a short-lived dedicated thread that first moves itself into
//! the vantage container's network namespace (`setns`, through rustix's safe wrapper); the
//! socket stays in that namespace after the thread ends, and the SSH session then runs on the
//! async runtime with `russh`. A pool thread is never moved (it would keep the namespace).
//!
//! Threat model: the server is the thing under test, not trusted. Its host key is accepted
//! without verification (the probe observes, it sends no secret: public-key authentication
//! signs the session id, which a rogue server cannot replay elsewhere), the banner is read
//! bounded, and everything is under the check's timeout.

use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use rustix::thread::{move_into_link_name_space, LinkNameSpaceType};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vacsine_core::node::Observation;
use vacsine_core::policy::SshCheck;

/// Longest identification line kept (RFC 4253 allows 255 bytes).
const BANNER_LIMIT: usize = 512;

/// Connect to `addr` from the network namespace of process `netns_pid` (`/proc/<pid>/ns/net`)
/// and read the server's identification line without consuming it (`peek`), so the SSH
/// client still sees it.
/// Why a connection was not made: the probe could not run (`Setup`: the outcome is an
/// error), or the server did not answer (`Connect`: an observation).
enum ConnectError {
    Setup(String),
    Connect(std::io::Error),
}

async fn connect_in_netns(
    netns_pid: i64,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(TcpStream, Option<String>), ConnectError> {
    let path = format!("/proc/{netns_pid}/ns/net");
    let ns = std::fs::File::open(&path)
        .map_err(|e| ConnectError::Setup(format!("opening {path}: {e}")))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("vacsine-netns-connect".into())
        .spawn(move || {
            let r = move_into_link_name_space(ns.as_fd(), Some(LinkNameSpaceType::Network))
                .map_err(|e| {
                    ConnectError::Setup(format!(
                        "entering the network namespace {path} (setns needs root): {e}"
                    ))
                })
                .and_then(|()| {
                    let s = TcpStream::connect_timeout(&addr, timeout)
                        .map_err(ConnectError::Connect)?;
                    let banner = peek_banner(&s, timeout).map_err(ConnectError::Connect)?;
                    Ok((s, banner))
                });
            let _ = tx.send(r);
        })
        .map_err(|e| ConnectError::Setup(format!("starting the connecting thread: {e}")))?;
    rx.await
        .map_err(|_| ConnectError::Setup("the connecting thread ended without an answer".into()))?
}

/// The first line the server sent (up to [`BANNER_LIMIT`]), left in the socket's buffer.
fn peek_banner(s: &TcpStream, timeout: Duration) -> std::io::Result<Option<String>> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; BANNER_LIMIT];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        s.set_read_timeout(Some(left))?;
        let n = match s.peek(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(None);
        }
        // RFC 4253 §4.2: lines before the one starting with `SSH-` may be sent; keep the
        // identification line.
        let text = String::from_utf8_lossy(&buf[..n]);
        if let Some(line) = text
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| l.trim_end())
            .find(|l| l.starts_with("SSH-"))
        {
            return Ok(Some(line.to_string()));
        }
        if n == buf.len() {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Accepts any host key: see the module's threat model.
struct ObserveOnly;

impl client::Handler for ObserveOnly {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Load the check's private key (no passphrase). Errors name the file, never its content.
pub(crate) async fn load_key(path: &str) -> Result<PrivateKey, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("reading SSH key `{path}`: {e}"))?;
    russh::keys::decode_secret_key(&text, None).map_err(|e| {
        format!("SSH key `{path}` cannot be used: {e} (an unencrypted OpenSSH Ed25519 or ECDSA key is needed)")
    })
}

/// Run the probe: connect from `netns_pid`'s network namespace to `ip:c.port`.
pub(crate) async fn probe(
    netns_pid: i64,
    ip: &str,
    c: &SshCheck,
    key: Option<PrivateKey>,
) -> Observation {
    let address = if ip.contains(':') {
        format!("[{ip}]:{}", c.port)
    } else {
        format!("{ip}:{}", c.port)
    };
    let addr: SocketAddr = match address.parse() {
        Ok(a) => a,
        Err(e) => {
            return Observation::Error {
                message: format!("bad address {address}: {e}"),
            }
        }
    };
    let timeout = Duration::from_millis(c.timeout_ms.max(100));
    let mut obs = Observation::Ssh {
        address: address.clone(),
        banner: None,
        methods: None,
        login: None,
        detail: String::new(),
    };
    let Observation::Ssh {
        banner,
        methods,
        login,
        detail,
        ..
    } = &mut obs
    else {
        return obs;
    };
    let (stream, seen) = match connect_in_netns(netns_pid, addr, timeout).await {
        Ok(s) => s,
        Err(ConnectError::Setup(message)) => return Observation::Error { message },
        Err(ConnectError::Connect(e)) => {
            *detail = format!("connecting: {e}");
            return obs;
        }
    };
    let Some(seen) = seen else {
        *detail = "connected, but no SSH identification line before the timeout".into();
        return obs;
    };
    *banner = Some(seen);
    let session = async {
        stream.set_nonblocking(true)?;
        let stream = tokio::net::TcpStream::from_std(stream)?;
        let config = Arc::new(client::Config {
            inactivity_timeout: Some(timeout),
            ..Default::default()
        });
        let mut h = client::connect_stream(config, stream, ObserveOnly).await?;
        let none = h.authenticate_none(c.user.clone()).await?;
        let offered = match none {
            russh::client::AuthResult::Success => {
                *login = Some(true);
                vec!["none".to_string()]
            }
            russh::client::AuthResult::Failure {
                remaining_methods, ..
            } => remaining_methods.iter().map(String::from).collect(),
        };
        *methods = Some(offered);
        if let (Some(k), None) = (key, *login) {
            let hash = h.best_supported_rsa_hash().await?.flatten();
            let r = h
                .authenticate_publickey(
                    c.user.clone(),
                    PrivateKeyWithHashAlg::new(Arc::new(k), hash),
                )
                .await?;
            *login = Some(r.success());
        }
        let _ = h
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        Ok::<(), russh::Error>(())
    };
    match tokio::time::timeout(timeout * 2, session).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => *detail = format!("SSH session: {e}"),
        Err(_) => {
            *detail = format!(
                "SSH session did not finish within {} ms",
                timeout.as_millis() * 2
            )
        }
    }
    obs
}

//! What a client may hold of the orchestrator: time to send a request's head (also the
//! longest idle keep-alive), the pace of a request's body, and a connection limit under the
//! open-file limit (raised to its hard limit at start). At the limit, a new connection closes
//! the oldest one that is not in a request (a TLS handshake or a head that does not come, an
//! idle keep-alive): clients that hold sockets without asking cannot lock out agents and
//! operators, and work under way (a long poll, an upload) is never cut for a newcomer.
//!
//! Per-client fairness: one client address (an IPv6 client: its /64, [`client_of`]) holds
//! at most `per_client` connections (default [`per_client_default`], well below the global
//! limit). At its cap, a client's new
//! connection closes that client's own oldest connection not in a request, or is closed at
//! once when all of them are in one: a hostile address holding sockets only takes its own
//! share, never the room agents and operators need. Connections on the plain listener (a
//! TLS-terminating proxy, one address for every client behind it) are not capped per client.

use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

/// Longest time to send a request's head once the connection waits for one: a new
/// connection's first request, and the next request on a keep-alive connection (hyper starts
/// this timer whenever it waits for a head), so it is also the idle keep-alive limit.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive by `start + BODY_GRACE + bytes so far / BODY_MIN_RATE`: a
/// slow link gets time, a trickle of a byte now and then does not hold a connection.
pub const BODY_GRACE: Duration = Duration::from_secs(20);
/// Bytes per second a body must average after [`BODY_GRACE`].
pub const BODY_MIN_RATE: u64 = 8 * 1024;
/// Open files kept for what is not a connection (store, WAL, images, TLS files, logs).
const FD_RESERVE: u64 = 128;

/// Raise the open-file soft limit to the hard limit; the soft limit in force after.
pub fn raise_open_files() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => {
                tracing::info!("open-file limit raised from {soft} to {hard}");
                hard
            }
            Err(e) => {
                tracing::warn!("open-file limit {soft}: cannot raise it to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!("reading the open-file limit: {e}; assuming 1024");
            1024
        }
    }
}

/// Connections served at once with `open_files` files allowed to the process.
pub fn max_connections(open_files: u64) -> usize {
    open_files.saturating_sub(FD_RESERVE).clamp(16, 1 << 20) as usize
}

/// Connections one client address may hold by default: an eighth of the global limit (112
/// of 896 under 1,024 open files), at least 16.
pub fn per_client_default(max: usize) -> usize {
    (max / 8).max(16)
}

/// The address a client is counted under for its share: IPv4 (also as mapped in IPv6) as it
/// is, IPv6 by its /64 (the block one host is usually given, so a client does not get a new
/// share per address it picks in it).
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// The open connections, oldest first.
pub struct Conns {
    max: usize,
    /// Connections one client address may hold (`usize::MAX`: no cap).
    per_client: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Slot>,
    /// Connections open per capped client address.
    by_client: HashMap<IpAddr, usize>,
}

struct Slot {
    busy: Arc<AtomicUsize>,
    close: oneshot::Sender<()>,
    /// The client's address, when it is capped.
    client: Option<IpAddr>,
}

impl Table {
    /// Remove connection `id` (closing it when `close`), keeping the per-client counts.
    fn remove(&mut self, id: u64, close: bool) {
        if let Some(s) = self.open.remove(&id) {
            if close {
                let _ = s.close.send(());
            }
            if let Some(ip) = s.client {
                if let Some(n) = self.by_client.get_mut(&ip) {
                    *n -= 1;
                    if *n == 0 {
                        self.by_client.remove(&ip);
                    }
                }
            }
        }
    }

    /// The oldest connection not in a request (of `client` only, when given).
    fn oldest_idle(&self, client: Option<IpAddr>) -> Option<u64> {
        self.open
            .iter()
            .find(|(_, s)| {
                s.busy.load(Ordering::Relaxed) == 0 && (client.is_none() || s.client == client)
            })
            .map(|(id, _)| *id)
    }
}

/// A connection admitted: `busy` counts its requests under way; `closed` fires when a newer
/// connection took its place. Leaves the table when dropped.
pub struct Admitted {
    conns: Arc<Conns>,
    id: u64,
    pub busy: Arc<AtomicUsize>,
    pub closed: oneshot::Receiver<()>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.conns.lock().remove(self.id, false);
    }
}

impl Conns {
    /// At most `max` connections, at most `per_client` of them from one client address
    /// (`0`: no cap per client).
    pub fn new(max: usize, per_client: usize) -> Arc<Self> {
        Arc::new(Conns {
            max,
            per_client: if per_client == 0 {
                usize::MAX
            } else {
                per_client
            },
            table: Mutex::default(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Connections one client address may hold (`None`: no cap).
    pub fn per_client(&self) -> Option<usize> {
        (self.per_client != usize::MAX).then_some(self.per_client)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a new connection from `client` (`None`: not capped per client, see the module
    /// notes). At the client's cap, its own oldest connection not in a request is closed for
    /// it; at the global limit, the oldest connection not in a request. `Err`: no such
    /// connection to close (the newcomer is closed).
    pub fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<Admitted, Refused> {
        let mut t = self.lock();
        if let Some(ip) = client {
            if t.by_client.get(&ip).copied().unwrap_or(0) >= self.per_client {
                let idle = t.oldest_idle(Some(ip)).ok_or(Refused::ClientCap)?;
                t.remove(idle, true);
            }
        }
        if t.open.len() >= self.max {
            let idle = t.oldest_idle(None).ok_or(Refused::Full)?;
            t.remove(idle, true);
        }
        let id = t.next;
        t.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let (close, closed) = oneshot::channel();
        if let Some(ip) = client {
            *t.by_client.entry(ip).or_default() += 1;
        }
        t.open.insert(
            id,
            Slot {
                busy: busy.clone(),
                close,
                client,
            },
        );
        Ok(Admitted {
            conns: self.clone(),
            id,
            busy,
            closed,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Connections open now from `client`.
    pub fn open_from(&self, client: IpAddr) -> usize {
        self.lock().by_client.get(&client).copied().unwrap_or(0)
    }
}

/// Why a new connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its client holds its share, every one of those connections in a request.
    ClientCap,
    /// The global limit, every connection in a request.
    Full,
}

/// Counts a request under way on its connection while alive.
pub struct InRequest(Arc<AtomicUsize>);

impl InRequest {
    pub fn new(busy: &Arc<AtomicUsize>) -> Self {
        busy.fetch_add(1, Ordering::Relaxed);
        InRequest(busy.clone())
    }
}

impl Drop for InRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request body that fails when it does not keep the pace of [`BODY_MIN_RATE`] after
/// [`BODY_GRACE`] (the handler sees an error, the connection closes).
pub struct PacedBody {
    inner: Incoming,
    start: Instant,
    received: u64,
    deadline: Pin<Box<Sleep>>,
}

impl PacedBody {
    pub fn new(inner: Incoming) -> Self {
        let start = Instant::now();
        PacedBody {
            inner,
            start,
            received: 0,
            deadline: Box::pin(tokio::time::sleep_until(start + BODY_GRACE)),
        }
    }

    fn due(&self) -> Instant {
        self.start + BODY_GRACE + Duration::from_millis(self.received * 1000 / BODY_MIN_RATE)
    }
}

#[derive(Debug, thiserror::Error)]
#[error(
    "the request body came too slowly (less than {BODY_MIN_RATE} bytes/s after {BODY_GRACE:?})"
)]
pub struct TooSlow;

impl Body for PacedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.received += d.len() as u64;
                    let due = this.due();
                    this.deadline.as_mut().reset(due);
                }
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(TooSlow.into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_the_limit_the_oldest_connection_not_in_a_request_makes_room() {
        let c = Conns::new(3, 0);
        let mut a = c.admit(None).unwrap();
        let b = c.admit(None).unwrap();
        let _in_b = InRequest::new(&b.busy);
        let _in_a = InRequest::new(&a.busy);
        let mut d = c.admit(None).unwrap();
        assert_eq!(c.open(), 3);
        // Full: `d` (the oldest not in a request) is closed for the newcomer.
        let e = c.admit(None).unwrap();
        assert_eq!(d.closed.try_recv(), Ok(()));
        assert!(a.closed.try_recv().is_err(), "in a request: kept");
        assert_eq!(c.open(), 3);
        drop(d);
        assert_eq!(c.open(), 3, "already replaced");
        // Every connection in a request: the newcomer is refused, nobody is cut.
        let _in_e = InRequest::new(&e.busy);
        assert_eq!(c.admit(None).err(), Some(Refused::Full));
        assert!(a.closed.try_recv().is_err());
        drop(_in_a);
        let _f = c.admit(None).unwrap();
        assert_eq!(a.closed.try_recv(), Ok(()));
    }

    #[test]
    fn a_client_at_its_cap_makes_room_from_its_own_connections_only() {
        let ip = |n: u8| Some(IpAddr::from([127, 0, 0, n]));
        let c = Conns::new(10, 2);
        let mut other = c.admit(ip(9)).unwrap();
        let mut h1 = c.admit(ip(1)).unwrap();
        let mut h2 = c.admit(ip(1)).unwrap();
        assert_eq!(c.open_from(ip(1).unwrap()), 2);
        // At its cap: its own oldest idle connection goes, not the other client's (older).
        let h3 = c.admit(ip(1)).unwrap();
        assert_eq!(h1.closed.try_recv(), Ok(()));
        assert!(other.closed.try_recv().is_err());
        assert_eq!(c.open_from(ip(1).unwrap()), 2);
        drop(h1);
        assert_eq!(c.open_from(ip(1).unwrap()), 2, "already counted out");
        // Both of its connections in a request: its newcomer is refused, nobody is cut.
        let (_r2, _r3) = (InRequest::new(&h2.busy), InRequest::new(&h3.busy));
        assert_eq!(c.admit(ip(1)).err(), Some(Refused::ClientCap));
        assert!(h2.closed.try_recv().is_err());
        // Other clients and uncapped connections (the plain listener) come in.
        let _o2 = c.admit(ip(2)).unwrap();
        let _p = c.admit(None).unwrap();
        let _p2 = c.admit(None).unwrap();
        let _p3 = c.admit(None).unwrap();
        assert_eq!(c.open(), 7);
        assert_eq!(c.per_client(), Some(2));
        assert_eq!(Conns::new(10, 0).per_client(), None);
    }

    #[test]
    fn a_client_is_its_ipv4_address_or_its_ipv6_64() {
        let c = |s: &str| client_of(s.parse().unwrap()).to_string();
        assert_eq!(c("127.0.0.9"), "127.0.0.9");
        assert_eq!(c("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(c("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(c("2001:db8:1:2::1"), c("2001:db8:1:2:ffff::"));
        assert_ne!(c("2001:db8:1:2::1"), c("2001:db8:1:3::1"));
    }

    #[test]
    fn the_connection_limit_keeps_files_for_the_rest() {
        assert_eq!(max_connections(1024), 896);
        assert_eq!(max_connections(100), 16);
        assert_eq!(per_client_default(896), 112);
        assert_eq!(per_client_default(16), 16);
    }
}

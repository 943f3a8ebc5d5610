//! What a client may hold of the orchestrator: time to send a request's head (also the
//! longest idle keep-alive), the pace of a request's body, and a connection limit under the
//! open-file limit (raised to its hard limit at start). At the limit, a new connection closes
//! the oldest one that is not in a request (a TLS handshake or a head that does not come, an
//! idle keep-alive): clients that hold sockets without asking cannot lock out agents and
//! operators, and work under way (a long poll, an upload) is never cut for a newcomer.

use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use std::collections::BTreeMap;
use std::future::Future;
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

/// The open connections, oldest first.
pub struct Conns {
    max: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Slot>,
}

struct Slot {
    busy: Arc<AtomicUsize>,
    close: oneshot::Sender<()>,
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
        self.conns.lock().open.remove(&self.id);
    }
}

impl Conns {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Conns {
            max,
            table: Mutex::default(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admit a new connection; at the limit, the oldest connection not in a request is
    /// closed for it. `None`: every connection is in a request (the newcomer is closed).
    pub fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut t = self.lock();
        if t.open.len() >= self.max {
            let idle = t
                .open
                .iter()
                .find(|(_, s)| s.busy.load(Ordering::Relaxed) == 0)
                .map(|(id, _)| *id)?;
            if let Some(s) = t.open.remove(&idle) {
                let _ = s.close.send(());
            }
        }
        let id = t.next;
        t.next += 1;
        let busy = Arc::new(AtomicUsize::new(0));
        let (close, closed) = oneshot::channel();
        t.open.insert(
            id,
            Slot {
                busy: busy.clone(),
                close,
            },
        );
        Some(Admitted {
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
        let c = Conns::new(3);
        let mut a = c.admit().unwrap();
        let b = c.admit().unwrap();
        let _in_b = InRequest::new(&b.busy);
        let _in_a = InRequest::new(&a.busy);
        let mut d = c.admit().unwrap();
        assert_eq!(c.open(), 3);
        // Full: `d` (the oldest not in a request) is closed for the newcomer.
        let e = c.admit().unwrap();
        assert_eq!(d.closed.try_recv(), Ok(()));
        assert!(a.closed.try_recv().is_err(), "in a request: kept");
        assert_eq!(c.open(), 3);
        drop(d);
        assert_eq!(c.open(), 3, "already replaced");
        // Every connection in a request: the newcomer is refused, nobody is cut.
        let _in_e = InRequest::new(&e.busy);
        assert!(c.admit().is_none());
        assert!(a.closed.try_recv().is_err());
        drop(_in_a);
        let _f = c.admit().unwrap();
        assert_eq!(a.closed.try_recv(), Ok(()));
    }

    #[test]
    fn the_connection_limit_keeps_files_for_the_rest() {
        assert_eq!(max_connections(1024), 896);
        assert_eq!(max_connections(100), 16);
    }
}

//! Clients of the orchestrator: the operator's (bearer token) and the agent's (sealed bodies),
//! both over HTTPS pinned to the orchestrator's certificate.

use crate::now_ms;
use crate::proto::{self, ErrorBody};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use vacsine_wire::{Binding, Envelope, KeyPair, Opener, PublicKey, WireError};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// No answer: the orchestrator is down or unreachable (retry later).
    #[error("orchestrator unreachable: {0}")]
    Unreachable(String),
    /// The orchestrator answered with a refusal.
    #[error("refused ({status}, {code}): {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// The answer does not open: not from the orchestrator, altered, or replayed.
    #[error("answer refused: {0}")]
    Wire(#[from] WireError),
    #[error("bad answer: {0}")]
    Bad(String),
    /// An operator write retried while the orchestrator was unreachable or unavailable, until
    /// its time ran out ([`OperatorClient::with_retry`]).
    #[error(
        "the orchestrator did not confirm it: tried for {:.1}s ({attempts} attempt{}), last error: {last}; its idempotency key: {key}",
        tried.as_secs_f64(),
        if *attempts == 1 { "" } else { "s" }
    )]
    GaveUp {
        tried: Duration,
        attempts: u32,
        last: Box<CallError>,
        /// The key it was sent with: sent again with it, it is made at most once.
        key: String,
    },
}

impl CallError {
    pub fn is_revoked(&self) -> bool {
        matches!(self, CallError::Refused { code, .. } if code == "revoked" || code == "unknown_agent")
    }

    /// Whether sending the same write again (with the same idempotency key) may succeed:
    /// no answer, a proxy or server not ready (502, 503, 504), too many requests (429), or
    /// the same key still under way.
    pub fn is_transient(&self) -> bool {
        match self {
            CallError::Unreachable(_) => true,
            CallError::Refused { status, code, .. } => {
                matches!(status, 429 | 502 | 503 | 504) || code == "idempotency_pending"
            }
            _ => false,
        }
    }
}

/// How long operator writes are retried by default.
pub const DEFAULT_RETRY_FOR: Duration = Duration::from_secs(60);
/// The first wait between two tries; each wait doubles, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A fresh idempotency key: 128 random bits, hex.
pub fn new_idempotency_key() -> String {
    vacsine_wire::random_bytes::<16>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The wait before try number `attempt + 1` (`attempt` from 1): doubling from
/// [`FIRST_BACKOFF`] up to [`MAX_BACKOFF`], less up to a quarter at random so that clients
/// that failed together do not come back together.
fn backoff(attempt: u32) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let r = vacsine_wire::random_bytes::<1>()[0] as u32;
    full - full / 4 * r / 255
}

fn describe(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

async fn refusal(resp: reqwest::Response) -> CallError {
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => CallError::Refused {
            status,
            code: b.code,
            message: b.error,
        },
        Err(_) => CallError::Refused {
            status,
            code: "http".into(),
            message: text.chars().take(300).collect(),
        },
    }
}

/// The operator's client (CLI commands). Writes (POST, PUT) carry an idempotency key, the
/// same on every try, and are retried while the orchestrator is unreachable or unavailable
/// (see [`CallError::is_transient`]), for at most `retry_for`; the orchestrator makes a
/// write once per key and answers a repeat with the first answer.
pub struct OperatorClient {
    http: reqwest::Client,
    base: String,
    token: String,
    idempotency_key: String,
    /// Writes made so far: the n-th write of this client has its own key (see
    /// [`OperatorClient::key_of`]).
    writes: std::sync::atomic::AtomicU32,
    retry_for: Duration,
}

impl OperatorClient {
    pub fn new(cfg: &proto::OperatorConfig) -> anyhow::Result<Self> {
        Ok(OperatorClient {
            http: crate::tls::pinned_client(&cfg.pin, Duration::from_secs(40))?,
            base: cfg.url.trim_end_matches('/').to_string(),
            token: cfg.token.clone(),
            idempotency_key: new_idempotency_key(),
            writes: Default::default(),
            retry_for: DEFAULT_RETRY_FOR,
        })
    }

    /// Retry writes for at most `retry_for` (zero: one try), under `key` (`None`: the fresh
    /// one this client was made with).
    pub fn with_retry(mut self, retry_for: Duration, key: Option<String>) -> Self {
        self.retry_for = retry_for;
        if let Some(k) = key {
            self.idempotency_key = k;
        }
        self
    }

    /// The idempotency key of this client's `n`-th write (from 0): the key itself for the
    /// first, `KEY-n` after (`vacsine push image A B` makes one write per image), so the same
    /// invocation run again with the same key asks the same things under the same keys.
    pub fn key_of(&self, n: u32) -> String {
        if n == 0 {
            self.idempotency_key.clone()
        } else {
            format!("{}-{n}", self.idempotency_key)
        }
    }

    /// A write: `build` makes the request for each try; it carries the idempotency key and is
    /// tried again after a transient error while `retry_for` allows, with a line on stderr
    /// before each wait.
    async fn write<T, F, Fut>(&self, what: &str, build: F) -> Result<T, CallError>
    where
        T: DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<reqwest::RequestBuilder, CallError>>,
    {
        let key = self.key_of(self.writes.fetch_add(1, Ordering::Relaxed));
        let start = std::time::Instant::now();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let rb = build().await?.header("Idempotency-Key", key.as_str());
            let e = match self.send(rb).await {
                Ok(v) => {
                    if attempts > 1 {
                        eprintln!("{what}: taken by the orchestrator at try {attempts}");
                    }
                    return Ok(v);
                }
                Err(e) if e.is_transient() => e,
                Err(e) => return Err(e),
            };
            let tried = start.elapsed();
            if tried >= self.retry_for {
                return Err(CallError::GaveUp {
                    tried,
                    attempts,
                    last: Box::new(e),
                    key,
                });
            }
            // The last try comes when the time is up.
            let wait = backoff(attempts).min(self.retry_for - tried);
            eprintln!(
                "{what}: {e}; trying again in {:.1}s ({:.1}s of --retry-for {}s)",
                wait.as_secs_f64(),
                tried.as_secs_f64(),
                self.retry_for.as_secs()
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn send<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T, CallError> {
        let resp = rb
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(describe(&e)))?;
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        resp.json().await.map_err(|e| CallError::Bad(describe(&e)))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    /// GET with query parameters (encoded by the HTTP client).
    pub async fn get_query<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, CallError> {
        self.send(self.http.get(format!("{}{path}", self.base)).query(query))
            .await
    }

    /// POST `body`: a write (idempotency key, retried; see [`OperatorClient`]).
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::Bad(e.to_string()))?;
        let url = format!("{}{path}", self.base);
        self.write(&format!("POST {path}"), || {
            let rb = self
                .http
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone());
            async move { Ok(rb) }
        })
        .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// PUT the file `file` (`len` bytes) as the request body, streamed (not read into
    /// memory), allowing `timeout` for the whole transfer: a write (idempotency key,
    /// retried, the file read again from its start on each try).
    pub async fn put_file<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        file: &std::path::Path,
        len: u64,
        timeout: Duration,
    ) -> Result<T, CallError> {
        let url = format!("{}{path}", self.base);
        self.write(&format!("PUT {path}"), || async {
            let f = tokio::fs::File::open(file)
                .await
                .map_err(|e| CallError::Bad(format!("{}: cannot be read: {e}", file.display())))?;
            Ok(self
                .http
                .put(&url)
                .query(query)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .timeout(timeout)
                .body(reqwest::Body::from(f)))
        })
        .await
    }
}

/// The orchestrator URLs of a comma-separated list (`https://a:8443,https://b:8443`), in order.
pub fn urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

/// The agent's side of the sealed channel, to one orchestrator or to several replicas of it
/// (sharing one store, keys and certificate): when the one in use is unreachable, the next
/// ones are tried in order, and the first that answers is kept.
pub struct AgentLink {
    http: reqwest::Client,
    bases: Vec<String>,
    current: AtomicUsize,
    keys: KeyPair,
    server: PublicKey,
    opener: Opener,
    /// The contract version named in every request ([`proto::PROTOCOL`]).
    protocol: u32,
}

impl AgentLink {
    /// `base`: one URL or a comma-separated list of replicas.
    pub fn new(base: &str, pin: &str, keys: KeyPair, server: PublicKey) -> anyhow::Result<Self> {
        let bases = urls(base);
        if bases.is_empty() {
            anyhow::bail!(
                "no orchestrator URL given (https://HOST:PORT, or several separated by commas)"
            );
        }
        Ok(AgentLink {
            // Long polls last up to 25 s.
            http: crate::tls::pinned_client(pin, Duration::from_secs(40))?,
            bases,
            current: AtomicUsize::new(0),
            keys,
            server,
            opener: Opener::default(),
            protocol: proto::PROTOCOL,
        })
    }

    /// A link that names another contract version than this build's (to test how an
    /// orchestrator answers an older or newer agent).
    pub fn claiming_protocol(mut self, protocol: u32) -> Self {
        self.protocol = protocol;
        self
    }

    /// The orchestrator's public keys (unsealed; the TLS pin vouches for them), from the first
    /// of `base`'s URLs that answers.
    pub async fn hello(base: &str, pin: &str) -> Result<proto::Hello, CallError> {
        let http = crate::tls::pinned_client(pin, Duration::from_secs(15))
            .map_err(|e| CallError::Bad(e.to_string()))?;
        let mut last = CallError::Unreachable("no orchestrator URL given".into());
        for b in urls(base) {
            let resp = match http.get(format!("{b}{}", proto::HELLO)).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = CallError::Unreachable(format!("{b}: {}", describe(&e)));
                    continue;
                }
            };
            if !resp.status().is_success() {
                return Err(refusal(resp).await);
            }
            return resp.json().await.map_err(|e| CallError::Bad(describe(&e)));
        }
        Err(last)
    }

    /// Agent operation `req` as agent `agent`: sealed for its operation's path, its answer
    /// opened as that operation's answer type (see [`proto::AgentCall`]).
    pub async fn op<Q: proto::AgentCall>(
        &self,
        agent: &str,
        req: &Q,
    ) -> Result<Q::Reply, CallError> {
        self.call(Q::OP.path(), agent, req).await
    }

    /// Seal `req` for `path` as agent `agent`, send it, open the sealed answer. An
    /// unreachable orchestrator is left for the next replica (sealed afresh: each envelope
    /// goes to one place once).
    pub async fn call<Q: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        agent: &str,
        req: &Q,
    ) -> Result<A, CallError> {
        self.each_replica(|base| async move {
            let env = self.seal(path, agent, req)?;
            self.send_to(&base, path, agent, &env, &env).await
        })
        .await
    }

    /// Try `f` on the replica in use, then on the others in order while they are
    /// unreachable; keep the first that answers.
    async fn each_replica<A, F, Fut>(&self, f: F) -> Result<A, CallError>
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Result<A, CallError>>,
    {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for k in 0..n {
            let i = (start + k) % n;
            match f(self.bases[i].clone()).await {
                Err(CallError::Unreachable(m)) => {
                    if n > 1 {
                        eprintln!(
                            "orchestrator {} unreachable ({m}){}",
                            self.bases[i],
                            if k + 1 < n {
                                "; trying the next replica"
                            } else {
                                ""
                            }
                        );
                    }
                    last = Some(CallError::Unreachable(m));
                }
                r => {
                    if k > 0 {
                        let prev = self.current.swap(i, Ordering::Relaxed);
                        if prev != i {
                            eprintln!("now talking to orchestrator {}", self.bases[i]);
                        }
                    }
                    return r;
                }
            }
        }
        Err(last.unwrap_or_else(|| CallError::Unreachable("no orchestrator URL".into())))
    }

    pub fn seal<Q: Serialize>(
        &self,
        path: &str,
        agent: &str,
        req: &Q,
    ) -> Result<Envelope, CallError> {
        let body = serde_json::to_vec(req).map_err(|e| CallError::Bad(e.to_string()))?;
        let b = Binding {
            method: "POST",
            path,
            agent,
        };
        Ok(vacsine_wire::seal(
            &self.keys,
            &self.server,
            b,
            None,
            now_ms(),
            &body,
        )?)
    }

    /// Send `body` (an envelope or a wrapper of it) and open the answer to `env`.
    pub async fn send<B: Serialize, A: DeserializeOwned>(
        &self,
        path: &str,
        agent: &str,
        env: &Envelope,
        body: &B,
    ) -> Result<A, CallError> {
        self.each_replica(|base| async move { self.send_to(&base, path, agent, env, body).await })
            .await
    }

    async fn send_to<B: Serialize, A: DeserializeOwned>(
        &self,
        base: &str,
        path: &str,
        agent: &str,
        env: &Envelope,
        body: &B,
    ) -> Result<A, CallError> {
        let mut rb = self
            .http
            .post(format!("{base}{path}"))
            .header(proto::PROTOCOL_HEADER, self.protocol.to_string());
        if path != proto::ENROLL {
            // The sender, named before the body (an enrolled agent's id): the orchestrator
            // reads a large body only from a known agent.
            rb = rb.header(proto::AGENT_HEADER, agent);
        }
        let resp = rb
            .json(body)
            .send()
            .await
            .map_err(|e| CallError::Unreachable(describe(&e)))?;
        if !resp.status().is_success() {
            return Err(refusal(resp).await);
        }
        let answer: Envelope = resp
            .json()
            .await
            .map_err(|e| CallError::Unreachable(describe(&e)))?;
        let b = Binding {
            method: "POST",
            path,
            agent,
        };
        let plain = self.opener.open(
            &self.keys,
            &self.server,
            b,
            Some(&env.nonce),
            &answer,
            now_ms(),
        )?;
        serde_json::from_slice(&plain).map_err(|e| CallError::Bad(e.to_string()))
    }

    pub fn public_key(&self) -> &PublicKey {
        self.keys.public()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_write_of_an_invocation_has_its_own_key_and_waits_grow_to_a_bound() {
        let c = OperatorClient::new(&proto::OperatorConfig {
            url: "https://127.0.0.1:1".into(),
            pin: format!("sha256:{}", "0".repeat(64)),
            token: "t".into(),
        })
        .unwrap()
        .with_retry(Duration::ZERO, Some("script-key-1".into()));
        assert_eq!(c.key_of(0), "script-key-1");
        assert_eq!(c.key_of(2), "script-key-1-2");
        let fresh = new_idempotency_key();
        assert_eq!(fresh.len(), 32);
        assert_ne!(fresh, new_idempotency_key());
        for (attempt, lo, hi) in [
            (1, 187, 250),
            (2, 375, 500),
            (5, 3000, 4000),
            (30, 3750, 5000),
        ] {
            let w = backoff(attempt).as_millis();
            assert!((lo..=hi).contains(&w), "attempt {attempt}: {w} ms");
        }
        assert!(CallError::Unreachable("x".into()).is_transient());
        let refused = |status: u16, code: &str| CallError::Refused {
            status,
            code: code.into(),
            message: String::new(),
        };
        assert!(refused(503, "busy").is_transient());
        assert!(refused(409, "idempotency_pending").is_transient());
        assert!(!refused(409, "conflict").is_transient());
        assert!(!refused(400, "bad_request").is_transient());
    }
}

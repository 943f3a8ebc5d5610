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
}

impl CallError {
    pub fn is_revoked(&self) -> bool {
        matches!(self, CallError::Refused { code, .. } if code == "revoked" || code == "unknown_agent")
    }
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

/// The operator's client (CLI commands).
pub struct OperatorClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl OperatorClient {
    pub fn new(cfg: &proto::OperatorConfig) -> anyhow::Result<Self> {
        Ok(OperatorClient {
            http: crate::tls::pinned_client(&cfg.pin, Duration::from_secs(40))?,
            base: cfg.url.trim_end_matches('/').to_string(),
            token: cfg.token.clone(),
        })
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

    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
            .await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, CallError> {
        self.send(self.http.delete(format!("{}{path}", self.base)))
            .await
    }

    /// PUT a file as the request body, streamed (not read into memory), allowing `timeout`
    /// for the whole transfer.
    pub async fn put_file<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        file: tokio::fs::File,
        len: u64,
        timeout: Duration,
    ) -> Result<T, CallError> {
        self.send(
            self.http
                .put(format!("{}{path}", self.base))
                .query(query)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .timeout(timeout)
                .body(reqwest::Body::from(file)),
        )
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
        })
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
        let mut rb = self.http.post(format!("{base}{path}"));
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

//! The orchestrator: HTTPS server, agent endpoints (sealed), operator endpoints (token), the
//! lease sweeper.

use crate::store::{status, AgentRow, Change, PgStore, RunRow, SqliteStore, Store, StoreError};
use crate::{now_ms, rfc3339};
use anyhow::Context;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use extract::{ApiJson, ApiPath as UrlPath, ApiQuery as Query};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use vacsine_contract::proto::{self, ErrorBody};
use vacsine_wire::{Binding, BundleSigner, Envelope, KeyPair, Opener, PublicKey, WireError};

#[cfg(test)]
mod api_tests;
mod approvals;
mod bouncer;
pub mod console;
mod enforce_site;
mod extract;
pub mod idempotency;
mod images;
mod intel;
mod labels;
pub mod limits;
#[cfg(test)]
mod observe_tests;
mod posture;
mod responses;
mod spanning;

/// Longest long poll an agent may ask for.
pub use vacsine_contract::proto::MAX_WAIT_MS;
/// An agent not seen for this long is shown offline.
pub const ONLINE_MS: i64 = 60_000;
/// An agent's "last seen" is written at most this often (it is shown to the second; each
/// write is a commit, and every agent request would make one).
const SEEN_EVERY_MS: i64 = 1_000;

pub struct Config {
    pub listen: SocketAddr,
    /// Also serve plain HTTP here, for a TLS-terminating proxy in front (the bodies stay
    /// sealed end to end; only the proxy should reach this address).
    pub listen_plain: Option<SocketAddr>,
    /// A given certificate chain and key (PEM) instead of the self-signed one.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub data: PathBuf,
    /// How long a lease lasts without renewal.
    pub lease_ttl_ms: i64,
    /// PostgreSQL URL: the store several replicas share. `None`: SQLite in `data`.
    pub database: Option<String>,
    /// Largest action image archive accepted (`vacsine push image`).
    pub max_image_bytes: u64,
    /// Connections one client address may hold on the HTTPS listener: `None` for
    /// [`limits::per_client_default`], `Some(0)` for no cap.
    pub max_connections_per_client: Option<usize>,
    /// Retention of ended runs, applied periodically (`crate::gc`).
    pub retention: vacsine_engine::retention::Schedule,
    /// Serve `/metrics` (Prometheus, plain HTTP, no token: it holds counts only) here.
    pub metrics_listen: Option<SocketAddr>,
    /// Push step records, events and decisions to Loki (`crate::loki`).
    pub loki: Option<crate::loki::LokiConfig>,
    /// TAXII 2.1 collections polled for indicators (`crate::taxii`).
    pub taxii: Vec<crate::taxii::Feed>,
    /// Serve CrowdSec's bouncer API (plain HTTP) here: `server::bouncer`.
    pub bouncer_listen: Option<SocketAddr>,
}

/// The orchestrator's long-lived keys, in `keys.json` (0600).
#[derive(Serialize, Deserialize)]
struct KeysFile {
    hpke_secret: String,
    bundle_secret: String,
}

struct Srv {
    store: Arc<dyn Store>,
    keys: KeyPair,
    bundle: BundleSigner,
    opener: Opener,
    token: String,
    lease_ttl_ms: i64,
    /// Bumped when work is queued (wakes long polls).
    queue: watch::Sender<u64>,
    /// Bumped when records arrive or a run changes (wakes operators waiting on a run).
    events: watch::Sender<u64>,
    /// Set when the orchestrator stops: long polls end at once.
    stopping: watch::Sender<bool>,
    /// When this process last wrote each agent's "last seen" (see [`SEEN_EVERY_MS`]).
    seen: std::sync::Mutex<std::collections::HashMap<String, i64>>,
    /// Runs spanning sites, driven here.
    spanning: spanning::Spanning,
    /// Other replicas may share the store (PostgreSQL): runs spanning sites whose driver
    /// died are taken over.
    replicated: bool,
    /// Action image archives, content-addressed (`images` in the data folder).
    images: PathBuf,
    max_image_bytes: u64,
    /// Large request bodies read at once per agent (see [`LARGE_READS_PER_AGENT`]).
    large_reads: std::sync::Mutex<std::collections::HashMap<String, Arc<tokio::sync::Semaphore>>>,
    /// The outbox report of each agent this process stored last (stored again only when it
    /// changes).
    outboxes: std::sync::Mutex<std::collections::HashMap<String, proto::OutboxReport>>,
    /// Prometheus metrics (`crate::metrics`).
    metrics: Arc<crate::metrics::Metrics>,
    /// Lines for Loki, when `--loki-url` is given.
    loki: Option<Arc<crate::loki::Loki>>,
    /// Dedupe and throttle windows of the orchestrated Responses (`intel`).
    windows: std::sync::Mutex<vacsine_response::Windows>,
    /// Signed decisions, deletions, labels and approvals verified before (`decisions`).
    verifier: vacsine_contract::decisions::Verifier,
}

/// Request bodies over [`proto::MAX_UNAUTHENTICATED_BODY`] read at once for one agent (its
/// uploader sends one at a time): whoever names an agent without being it holds at most this
/// many of them in memory.
const LARGE_READS_PER_AGENT: usize = 2;
/// How long a large body waits for its turn before it is refused (503: sent again later).
const LARGE_READ_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                code: self.code.to_string(),
                error: self.message,
            }),
        )
            .into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::NotFound(m) => Self::new(StatusCode::NOT_FOUND, "not_found", m),
            StoreError::Forbidden(m) => Self::new(StatusCode::FORBIDDEN, "forbidden", m),
            e => {
                tracing::error!("store: {e}");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<WireError> for ApiError {
    fn from(e: WireError) -> Self {
        let (status, code) = match &e {
            WireError::Replay => (StatusCode::CONFLICT, "replay"),
            WireError::Stale { .. } => (StatusCode::UNAUTHORIZED, "stale"),
            WireError::WrongSender { .. } => (StatusCode::UNAUTHORIZED, "wrong_sender"),
            WireError::Tampered => (StatusCode::BAD_REQUEST, "tampered"),
            WireError::Misbound { .. } => (StatusCode::BAD_REQUEST, "misbound"),
            WireError::Version(_) | WireError::Malformed(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            WireError::BadSignature | WireError::Seal(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn parse<T: DeserializeOwned>(bytes: &[u8], what: &str) -> ApiResult<T> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::bad(format!("{what}: {e}")))
}

fn random_hex(n: usize) -> String {
    let b = vacsine_wire::random_bytes::<32>();
    b[..n.min(32)].iter().map(|x| format!("{x:02x}")).collect()
}

fn intake_hash(key: &str) -> String {
    vacsine_wire::sha256_pin(key.trim().as_bytes())
}

/// Keys, token, certificate and store in `data`, each made on first start.
struct Prepared {
    srv: Arc<Srv>,
    tls: rustls::ServerConfig,
    pin: String,
}

async fn prepare(cfg: &Config) -> anyhow::Result<Prepared> {
    let data = &cfg.data;
    vacsine_private::private_dir(data).with_context(|| format!("creating {}", data.display()))?;
    let (tls, pin) = match &cfg.tls_files {
        Some((c, k)) => {
            let (tls, leaf) = crate::tls::server_config_pem(c, k)?;
            (tls, vacsine_wire::sha256_pin(&leaf))
        }
        None => {
            let (cert, key) = crate::tls::load_or_create_cert(&data.join("tls"))?;
            let pin = vacsine_wire::sha256_pin(&cert);
            (crate::tls::server_config(cert, key)?, pin)
        }
    };
    let kp = data.join("keys.json");
    let keys: KeysFile = if kp.exists() {
        let t = std::fs::read(&kp).with_context(|| format!("reading {}", kp.display()))?;
        serde_json::from_slice(&t).with_context(|| format!("{} is not valid", kp.display()))?
    } else {
        let k = KeysFile {
            hpke_secret: KeyPair::generate().secret_b64(),
            bundle_secret: BundleSigner::generate().secret_b64(),
        };
        vacsine_private::write_private(&kp, &serde_json::to_vec_pretty(&k)?)
            .with_context(|| format!("writing {}", kp.display()))?;
        k
    };
    let tp = data.join("operator.token");
    let token = if tp.exists() {
        std::fs::read_to_string(&tp)
            .with_context(|| format!("reading {}", tp.display()))?
            .trim()
            .to_string()
    } else {
        let t = random_hex(32);
        vacsine_private::write_private(&tp, t.as_bytes())
            .with_context(|| format!("writing {}", tp.display()))?;
        t
    };
    let store: Arc<dyn Store> = match &cfg.database {
        Some(url) => {
            let masked = crate::store::mask_url(url);
            let s = PgStore::connect(url).await.with_context(|| {
                format!("cannot open the PostgreSQL store at {masked} (given with --database)")
            })?;
            println!("store: PostgreSQL at {masked}");
            Arc::new(s)
        }
        None => {
            let p = data.join("orchestrator.db");
            let s = SqliteStore::open(&p).with_context(|| format!("opening {}", p.display()))?;
            println!("store: SQLite in {}", p.display());
            Arc::new(s)
        }
    };
    let (queue, _) = watch::channel(0);
    let (events, _) = watch::channel(0);
    let metrics = Arc::new(crate::metrics::Metrics::new());
    Ok(Prepared {
        srv: Arc::new(Srv {
            store,
            keys: KeyPair::from_secret_b64(&keys.hpke_secret)?,
            bundle: BundleSigner::from_secret_b64(&keys.bundle_secret)?,
            opener: Opener::default(),
            token,
            lease_ttl_ms: cfg.lease_ttl_ms,
            queue,
            events,
            stopping: watch::channel(false).0,
            seen: Default::default(),
            spanning: spanning::Spanning::open(data)?,
            replicated: cfg.database.is_some(),
            images: data.join("images"),
            max_image_bytes: cfg.max_image_bytes,
            large_reads: Default::default(),
            outboxes: Default::default(),
            loki: match &cfg.loki {
                Some(l) => Some(crate::loki::Loki::open(
                    l.buffer,
                    &l.spool,
                    metrics.clone(),
                )?),
                None => None,
            },
            metrics,
            windows: Default::default(),
            verifier: Default::default(),
        }),
        tls,
        pin,
    })
}

#[path = "openapi.rs"]
pub mod openapi;
#[path = "registry.rs"]
mod registry;
#[path = "signing.rs"]
mod signing;

/// Where the API's OpenAPI document is served (no authentication: it holds no data).
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

async fn openapi_json() -> Json<serde_json::Value> {
    Json(openapi::document())
}

fn router(srv: Arc<Srv>) -> Router {
    // Operator routes: the token is checked before a body is read.
    let operator = Router::new()
        .route(proto::OP_SITES, post(create_site).get(list_sites))
        .route("/v1/sites/{name}/revoke", post(revoke))
        .route("/v1/sites/{name}/labels", post(labels::set_labels))
        .route(proto::OP_RUNS, post(submit_run).get(list_runs))
        .route("/v1/runs/{id}", get(run_records))
        .route("/v1/runs/{id}/report", get(enforce_site::run_report))
        .route(proto::OP_STATUS, get(status_view))
        .route(
            proto::OP_REGISTRY,
            post(registry::push_documents).get(registry::list_registry),
        )
        .route(proto::OP_REGISTRY_RUNS, post(registry::run_pushed))
        .route("/v1/registry/{kind}/{name}", get(registry::show_document))
        .route(
            "/v1/registry/{kind}/{name}/diff",
            get(registry::diff_documents),
        )
        .route("/v1/images/{digest}", put(images::put_image))
        .route(
            proto::OP_DECISIONS,
            post(responses::add_decision).get(responses::list_decisions),
        )
        .route("/v1/decisions/{id}", delete(responses::delete_decision))
        .route(proto::OP_EVENTS, get(responses::list_events))
        .route(crate::posture::OP_POSTURE, get(posture::get_posture))
        .route(proto::OP_APPROVALS, get(approvals::list_approvals))
        .route("/v1/approvals/{id}", post(approvals::settle_approval))
        .route(
            proto::OP_BOUNCERS,
            post(bouncer::add_bouncer).get(bouncer::list_bouncers),
        )
        .route("/v1/bouncers/{name}", delete(bouncer::delete_bouncer))
        .route(
            console::users::OP_USERS,
            post(console::users::add_user).get(console::users::list_users),
        )
        .route("/v1/users/{name}/revoke", post(console::users::revoke_user))
        // Layers run last added first: the token, then the idempotency key.
        .route_layer(axum::middleware::from_fn_with_state(
            srv.clone(),
            idempotency::idempotent,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            srv.clone(),
            operator_gate,
        ))
        .layer(DefaultBodyLimit::max(proto::MAX_OPERATOR_BODY));
    Router::new()
        .route(proto::HELLO, get(hello))
        .route("/v1/agent/{op}", post(agent_call))
        .route(OPENAPI_PATH, get(openapi_json))
        .merge(operator)
        // The web console (issue 17): its own sessions, not the operator token.
        .merge(console::router())
        // Unknown routes and methods answer in the API's JSON error shape too (set last:
        // the method fallback applies to the routes already there).
        .fallback(extract::no_route)
        .method_not_allowed_fallback(extract::no_method)
        .layer(axum::middleware::from_fn_with_state(
            srv.clone(),
            count_requests,
        ))
        .with_state(srv)
}

/// Count each request by its route template and answer status (`/metrics`).
async fn count_requests(
    State(s): State<Arc<Srv>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let r = next.run(req).await;
    s.metrics
        .http_requests
        .get_or_create(&crate::metrics::HttpLabel {
            route,
            status: r.status().as_u16(),
        })
        .inc();
    r
}

/// The `/metrics` listener's routes (nothing else is served there).
fn metrics_router(srv: Arc<Srv>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .with_state(srv)
}

async fn metrics_text(State(s): State<Arc<Srv>>) -> Response {
    match s.store.metric_counts(now_ms() - ONLINE_MS).await {
        Ok(c) => {
            s.metrics.set_counts(&c);
            s.refresh_posture_metrics().await;
        }
        Err(e) => {
            tracing::error!("metrics: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the store cannot be read: {e}\n"),
            )
                .into_response();
        }
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        s.metrics.encode(),
    )
        .into_response()
}

/// How much of a refused request's body is read (and thrown away) so that its client, still
/// sending, reads the refusal rather than a broken pipe; past it, the connection is closed.
const DRAIN_REFUSED: usize = 256 * 1024;
/// How long a refused request's body is drained at most.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// Read and drop up to [`DRAIN_REFUSED`] bytes of a refused request's body; the refusal,
/// closing the connection when the body was not read to its end.
async fn drain_then(body: axum::body::Body, refusal: ApiError) -> Response {
    let drained = drain(body).await;
    let mut r = refusal.into_response();
    if !drained {
        r.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    r
}

/// Read and drop up to [`DRAIN_REFUSED`] bytes of a body not used; whether it was read to
/// its end.
async fn drain(body: axum::body::Body) -> bool {
    use http_body_util::BodyExt;
    let mut body = body;
    let mut read = 0usize;
    tokio::time::timeout(DRAIN_TIME, async {
        while let Some(f) = body.frame().await {
            match f {
                Ok(f) => {
                    read += f.data_ref().map_or(0, |d| d.len());
                    if read > DRAIN_REFUSED {
                        return false;
                    }
                }
                Err(_) => return false,
            }
        }
        true
    })
    .await
    .unwrap_or(false)
}

/// The operator token, checked before the handler reads the body.
async fn operator_gate(
    State(s): State<Arc<Srv>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match s.operator(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => drain_then(req.into_body(), e).await,
    }
}

/// Run the orchestrator until the process ends. Prints where it listens and the pin, and
/// writes `operator.json` (URL, pin, token) for the CLI on this machine.
pub async fn serve(cfg: Config) -> anyhow::Result<()> {
    let open_files = limits::raise_open_files();
    let max_conns = limits::max_connections(open_files);
    let conns = limits::Conns::new(
        max_conns,
        cfg.max_connections_per_client
            .unwrap_or_else(|| limits::per_client_default(max_conns)),
    );
    let p = prepare(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let url = format!("https://{addr}");
    let op = proto::OperatorConfig {
        url: url.clone(),
        pin: p.pin.clone(),
        token: p.srv.token.clone(),
    };
    let opp = cfg.data.join("operator.json");
    vacsine_private::write_private(&opp, &serde_json::to_vec_pretty(&op)?)
        .with_context(|| format!("writing {}", opp.display()))?;
    let extended = p
        .srv
        .store
        .extend_leases(now_ms(), p.srv.lease_ttl_ms)
        .await?;
    if extended > 0 {
        tracing::info!("{extended} lease(s) held at the last stop get one more lease period");
    }
    let resumed = p.srv.resume_spanning(false).await?;
    if resumed > 0 {
        println!("resumed {resumed} run(s) spanning sites");
    }
    println!("vacsine orchestrator listening on {url}");
    println!("certificate pin: {}", p.pin);
    println!(
        "limits: {} connections (open files {open_files}), {} per client address, request head {:?}, body at least {} bytes/s after {:?}, requests up to {} bytes (agents) / {} bytes (operators)",
        conns.max(),
        conns
            .per_client()
            .map_or_else(|| "no cap".to_string(), |n| n.to_string()),
        limits::HEADER_TIMEOUT,
        limits::BODY_MIN_RATE,
        limits::BODY_GRACE,
        proto::MAX_AGENT_BODY,
        proto::MAX_OPERATOR_BODY
    );
    println!(
        "operator token in {} (the CLI reads {})",
        cfg.data.join("operator.token").display(),
        opp.display()
    );
    let plain = match cfg.listen_plain {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (--listen-plain)"))?;
            println!(
                "plain HTTP for a TLS-terminating proxy on http://{} (bodies stay sealed; let only the proxy reach it)",
                l.local_addr()?
            );
            Some(l)
        }
        None => None,
    };
    let bouncers = match cfg.bouncer_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (--bouncer-listen)"))?;
            let at = l.local_addr()?;
            println!(
                "CrowdSec bouncer API on http://{at} (a bouncer's api_url: http://{at}/; keys: `vacsine bouncer add NAME`)"
            );
            let app = bouncer::router(p.srv.clone());
            Some(tokio::spawn(async move {
                if let Err(e) = axum::serve(l, app).await {
                    tracing::warn!("the bouncer listener stopped: {e}");
                }
            }))
        }
        None => None,
    };
    let sweep = tokio::spawn(sweeper(p.srv.clone()));
    let listen = tokio::spawn(replica_wakeups(p.srv.clone()));
    if !cfg.retention.every.is_zero() {
        println!(
            "retention: every {:?}, {}",
            cfg.retention.every,
            cfg.retention.policy.describe()
        );
    }
    let gc = tokio::spawn(crate::gc::store_task(p.srv.store.clone(), cfg.retention));
    let loki = match (&p.srv.loki, &cfg.loki) {
        (Some(l), Some(c)) => {
            println!(
                "Loki: pushing step records, events and decisions to {} (up to {} lines kept while it is unreachable)",
                crate::loki::push_url(&c.url),
                c.buffer
            );
            Some(tokio::spawn(
                l.clone().run(c.clone(), p.srv.stopping.subscribe()),
            ))
        }
        _ => None,
    };
    let metrics_server = match cfg.metrics_listen {
        Some(a) => {
            let l = tokio::net::TcpListener::bind(a)
                .await
                .with_context(|| format!("cannot listen on {a} (--metrics-listen)"))?;
            let at = l.local_addr()?;
            println!("metrics: http://{at}/metrics");
            if !at.ip().is_loopback() {
                println!("metrics: {at} is not a loopback address: let only Prometheus reach it");
            }
            let app = metrics_router(p.srv.clone());
            let mut stopping = p.srv.stopping.subscribe();
            Some(tokio::spawn(async move {
                let stop = async move {
                    let _ = stopping.wait_for(|s| *s).await;
                };
                if let Err(e) = axum::serve(l, app).with_graceful_shutdown(stop).await {
                    tracing::error!("metrics listener: {e}");
                }
            }))
        }
        None => None,
    };
    for feed in &cfg.taxii {
        println!(
            "TAXII: polling {} every {:?} (source `{}`)",
            feed.url,
            feed.every,
            feed.source()
        );
        tokio::spawn(intel::taxii_loop(p.srv.clone(), feed.clone()));
    }
    let app = router(p.srv.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(p.tls));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut stop = stop_signal();
    loop {
        let (tcp, peer, tls) = tokio::select! {
            r = listener.accept() => match r {
                Ok((t, p)) => (t, p, true),
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            r = accept_opt(plain.as_ref()) => match r {
                Ok((t, p)) => (t, p, false),
                Err(e) => {
                    tracing::warn!("accept (plain): {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.recv() => break,
        };
        // At the limit (its client's, or the global one), the oldest connection not in a
        // request makes room; when every one is in a request, the newcomer is closed at once
        // (it retries). The plain listener's clients all come through one proxy: not capped
        // per client.
        let admitted = match conns.admit(tls.then(|| limits::client_of(peer.ip()))) {
            Ok(a) => a,
            Err(limits::Refused::Full) => {
                tracing::warn!(
                    "{} connections, all in a request: closing the new one from {peer}",
                    conns.max()
                );
                drop(tcp);
                continue;
            }
            Err(limits::Refused::ClientCap) => {
                tracing::debug!(
                    "{peer} holds its {} connections, all in a request: closing its new one",
                    conns.per_client().unwrap_or(0)
                );
                drop(tcp);
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(serve_connection(
            tcp, peer, tls, acceptor, app, watcher, admitted,
        ));
    }
    // Stopping: no new connections; long polls answer "no work" now; requests under way
    // finish (bounded); the store is durable at every step, so what is cut is retried.
    drop(listener);
    drop(plain);
    p.srv.stopping.send_replace(true);
    sweep.abort();
    listen.abort();
    if let Some(b) = bouncers {
        b.abort();
    }
    gc.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    eprintln!("stopping: finishing requests under way");
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        eprintln!("stopped with requests still open after {SHUTDOWN_GRACE:?}");
    } else {
        eprintln!("stopped");
    }
    // After the requests under way (they may add lines): the last push, then the spool.
    if let Some(l) = loki {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, l).await;
    }
    Ok(())
}

/// One connection, bounded by [`limits`]: TLS handshake and request heads in time, bodies
/// at a pace, closed when a newer connection takes its place while it is not in a request.
async fn serve_connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: bool,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
    mut admitted: limits::Admitted,
) {
    let busy = admitted.busy.clone();
    let inner = hyper_util::service::TowerToHyperService::new(app);
    let svc = hyper::service::service_fn(move |req: axum::http::Request<hyper::body::Incoming>| {
        let in_request = limits::InRequest::new(&busy);
        let call = hyper::service::Service::call(&inner, req.map(limits::PacedBody::new));
        async move {
            let r = call.await;
            drop(in_request);
            r
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits::HEADER_TIMEOUT);
    let served = async {
        if tls {
            let stream =
                match tokio::time::timeout(limits::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(t)) => t,
                    Ok(Err(e)) => {
                        tracing::debug!("TLS handshake with {peer}: {e}");
                        return Ok(());
                    }
                    Err(_) => return Ok(()),
                };
            watcher
                .watch(builder.serve_connection(hyper_util::rt::TokioIo::new(stream), svc))
                .await
        } else {
            watcher
                .watch(builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), svc))
                .await
        }
    };
    tokio::select! {
        r = served => if let Err(e) = r {
            tracing::debug!("connection from {peer}: {e}");
        },
        _ = &mut admitted.closed => tracing::debug!("connection from {peer} closed: the connection limit was reached and it was not in a request"),
    }
}

/// Accepts on the listener if there is one; never returns otherwise.
async fn accept_opt(
    l: Option<&tokio::net::TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Fires at SIGTERM or SIGINT.
fn stop_signal() -> tokio::sync::mpsc::Receiver<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    match signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?))) {
        Ok((mut int, mut term)) => {
            tokio::spawn(async move {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
                let _ = tx.send(()).await;
            });
        }
        Err(e) => {
            tracing::warn!("cannot watch for signals ({e}): SIGTERM will not stop gracefully")
        }
    }
    rx
}

/// Expire leases: work of an agent that stopped renewing is re-offered or failed, visibly.
async fn sweeper(srv: Arc<Srv>) {
    let every = Duration::from_millis((srv.lease_ttl_ms / 4).clamp(100, 1000) as u64);
    let mut last_takeover = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        // Runs spanning sites whose driver died (another replica): taken over.
        if srv.replicated && last_takeover.elapsed() >= TAKEOVER_EVERY {
            last_takeover = tokio::time::Instant::now();
            match srv.resume_spanning(true).await {
                Ok(n) if n > 0 => tracing::debug!("{n} run(s) spanning sites without a driver here: resuming unless another process drives them"),
                Ok(_) => {}
                Err(e) => tracing::warn!("looking for runs spanning sites to take over: {e}"),
            }
        }
        match srv.store.expire_leases(now_ms()).await {
            Ok(v) if !v.is_empty() => {
                for e in &v {
                    tracing::warn!(
                        "lease of run {} by agent {} expired: run {}",
                        e.run_id,
                        e.agent_id,
                        e.now_status
                    );
                }
                srv.queue.send_modify(|n| *n += 1);
                srv.events.send_modify(|n| *n += 1);
            }
            Ok(_) => {}
            Err(e) => tracing::error!("lease sweeper: {e}"),
        }
    }
}

/// How often the sweeper looks for runs spanning sites that no live process drives.
const TAKEOVER_EVERY: Duration = Duration::from_secs(3);

/// Wake-ups from the other replicas sharing the store (PostgreSQL LISTEN) feed the same
/// channels as this replica's own changes; the connection is made again when it fails.
async fn replica_wakeups(srv: Arc<Srv>) {
    let mut failed = false;
    loop {
        let s = srv.clone();
        let wake = move |c: Change| match c {
            Change::Queue => s.queue.send_modify(|n| *n += 1),
            Change::Run => s.events.send_modify(|n| *n += 1),
        };
        if let Err(e) = srv.store.listen(&wake).await {
            if !failed {
                tracing::warn!(
                    "listening for other replicas' changes: {e}; trying again (long polls still find work at their next poll)"
                );
            }
            failed = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[utoipa::path(get, path = "/v1/hello", tag = "agent",
    description = "The orchestrator's public keys (HPKE, bundle signing) and version; no authentication.",
    responses((status = 200, body = proto::Hello)))]
async fn hello(State(s): State<Arc<Srv>>) -> Json<proto::Hello> {
    Json(proto::Hello {
        server_key: s.keys.public().to_b64(),
        bundle_key: s.bundle.public_b64(),
        version: crate::VERSION.to_string(),
        time_ms: now_ms(),
        protocol: proto::PROTOCOL,
    })
}

#[utoipa::path(post, path = "/v1/agent/{op}", tag = "agent",
    description = "Agent calls (`enroll`, `poll`, `renew`, `records`, `finish`, `ping`, `bundle`, `image`, `autonomous`, `responses`, `assessments`). The request body is a sealed envelope (HPKE, RFC 9180, auth mode) whose plaintext is the operation's request (`EnrollRequest`, `PollRequest`, `RenewRequest`, `RecordsRequest`, `FinishRequest`, `BundleRequest`, `ImageChunkRequest`, `AutonomousRun`, `ResponseUpload`, `AssessmentUpload`); the response is an envelope sealed to the agent whose plaintext is the operation's response. The envelope binds method, path, agent id, timestamp and nonce.",
    params(("op" = String, Path, description = "enroll | poll | renew | records | finish | ping | bundle | image | autonomous | responses | assessments"),
        ("x-vacsine-protocol" = Option<u32>, Header, description = "the contract version the agent speaks (3); another version, or none outside a poll, is refused with 426")),
    request_body(content = Object, description = "sealed envelope (JSON): v, method, path, agent, ts, nonce, sender, enc, ct"),
    responses(
        (status = 200, description = "sealed envelope with the operation's response"),
        (status = 400, body = proto::ErrorBody, description = "malformed, tampered or misbound; `bad_record` for an upload holding a record that is not a step record (its key named)"),
        (status = 401, body = proto::ErrorBody, description = "stale timestamp or wrong sender key"),
        (status = 403, body = proto::ErrorBody, description = "revoked, or another agent's run"),
        (status = 404, body = proto::ErrorBody, description = "no agent operation of that name (refused before the body is read)"),
        (status = 409, body = proto::ErrorBody, description = "replayed nonce, or an autonomous run whose id is another agent's run"),
        (status = 413, body = proto::ErrorBody, description = "body larger than its sender may send: 4 MiB for an enrolled agent named in `x-vacsine-agent`, 64 KiB otherwise (enrolment, unknown senders)"),
        (status = 426, body = proto::ErrorBody, description = "an agent of another contract version (`x-vacsine-protocol`: another version is refused before the body is read; none, once the envelope opened, unless a poll's `protocol` names this one): the message names both versions and which side to upgrade"),
        (status = 503, body = proto::ErrorBody, description = "more large bodies in this agent's name are being read: retry")))]
async fn agent_call(State(s): State<Arc<Srv>>, req: axum::extract::Request) -> Response {
    let path = req.uri().path().to_string();
    // The sender named in the header, known and not revoked, may send up to the agent limit;
    // anything else (an enrolment, an unknown sender) only a small body. The envelope, once
    // read, must be from that agent.
    let named = req
        .headers()
        .get(proto::AGENT_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let known = match &named {
        Some(id) if path != proto::ENROLL => match s.store.agent(id).await {
            Ok(a) => a.filter(|a| a.revoked_ms.is_none()),
            Err(e) => return ApiError::from(e).into_response(),
        },
        _ => None,
    };
    // The operation, from the path, and the contract version the sender names: another
    // version is refused before its body is read.
    let op = if path == proto::ENROLL {
        None
    } else {
        match proto::AgentOp::from_path(&path) {
            Some(op) => Some(op),
            None => {
                let e = ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no agent operation {path}"),
                );
                return drain_then(req.into_body(), e).await;
            }
        }
    };
    let claimed = match req.headers().get(proto::PROTOCOL_HEADER) {
        None => None,
        Some(v) => match v.to_str().ok().and_then(|v| v.trim().parse::<u32>().ok()) {
            Some(p) => Some(p),
            None => {
                let e = ApiError::bad(format!(
                    "`{}` must be the contract version the agent speaks (a number; this orchestrator speaks {})",
                    proto::PROTOCOL_HEADER,
                    proto::PROTOCOL
                ));
                return drain_then(req.into_body(), e).await;
            }
        },
    };
    // A version named and not this one: refused now. Agents of protocols 1 and 2 named
    // none: theirs is refused once the envelope opened (a poll's body names its version).
    if let Some(p) = claimed {
        let who = match (&known, &named) {
            (Some(a), _) => format!("agent {} (vacsine {})", a.name, a.version),
            (None, Some(id)) if op.is_some() => format!("agent `{id}`"),
            _ => "the agent".to_string(),
        };
        if let Err(e) = check_protocol(&who, Some(p)) {
            tracing::info!("{path}: refused ({}): {}", e.code, e.message);
            return drain_then(req.into_body(), e).await;
        }
    }
    let limit = if known.is_some() {
        proto::MAX_AGENT_BODY
    } else {
        proto::MAX_UNAUTHENTICATED_BODY
    };
    let announced = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // A large body from a known agent waits for one of its turns (not read meanwhile).
    let _turn = match &known {
        Some(a) if announced.is_none_or(|n| n > proto::MAX_UNAUTHENTICATED_BODY as u64) => {
            let sem = s
                .large_reads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(a.id.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(LARGE_READS_PER_AGENT)))
                .clone();
            match tokio::time::timeout(LARGE_READ_WAIT, sem.acquire_owned()).await {
                Ok(Ok(p)) => Some(p),
                _ => {
                    let e = ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "busy",
                        format!(
                            "agent `{}` already has {LARGE_READS_PER_AGENT} large uploads under way; send it again later",
                            a.id
                        ),
                    );
                    tracing::info!("{path}: refused ({}): {}", e.code, e.message);
                    let mut r = e.into_response();
                    r.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                    return r;
                }
            }
        }
        _ => None,
    };
    let read = if announced.is_some_and(|n| n > limit as u64) {
        // Refused on its announced length, before a byte of it is read.
        Err(None)
    } else {
        axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(Some)
    };
    let body = match read {
        Ok(b) => b,
        Err(e) => {
            let too_large = e.as_ref().is_none_or(|e| {
                std::error::Error::source(e)
                    .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            });
            let e = if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!(
                        "request body over {limit} bytes{}",
                        if known.is_some() {
                            ""
                        } else {
                            " (before its sender is known: an enrolled agent names itself in the x-vacsine-agent header)"
                        }
                    ),
                )
            } else {
                let e = e.map(|e| e.to_string()).unwrap_or_default();
                ApiError::bad(format!("reading the request body: {e}"))
            };
            tracing::info!("{path}: refused ({}): {}", e.code, e.message);
            let mut r = e.into_response();
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    match s.agent_call(&path, op, claimed, &body, known).await {
        Ok(env) => Json(env).into_response(),
        Err(e) => {
            tracing::info!("{path}: refused ({}): {}", e.code, e.message);
            e.into_response()
        }
    }
}

impl Srv {
    fn seal_reply<T: Serialize>(
        &self,
        to: &PublicKey,
        b: Binding<'_>,
        req: &Envelope,
        v: &T,
    ) -> ApiResult<Envelope> {
        let body = serde_json::to_vec(v).map_err(|e| ApiError::bad(e.to_string()))?;
        Ok(vacsine_wire::seal(
            &self.keys,
            to,
            b,
            Some(&req.nonce),
            now_ms(),
            &body,
        )?)
    }

    /// A request that opened here may still be a replay of one another replica took: the
    /// store, which replicas share, is asked too.
    async fn first_use(&self, env: &Envelope) -> ApiResult<()> {
        let now = now_ms();
        let keep_until = now + 2 * vacsine_wire::DEFAULT_WINDOW_MS;
        if self.store.first_use(&env.nonce, now, keep_until).await? {
            Ok(())
        } else {
            Err(WireError::Replay.into())
        }
    }

    /// A sealed agent request for `op` (`None`: an enrolment) arrived at `path`.
    async fn agent_call(
        &self,
        path: &str,
        op: Option<proto::AgentOp>,
        claimed: Option<u32>,
        body: &[u8],
        known: Option<AgentRow>,
    ) -> ApiResult<Envelope> {
        let Some(op) = op else {
            return self.enroll(body, claimed).await;
        };
        let env: Envelope = parse(body, "sealed envelope")?;
        let agent = match known {
            Some(a) if a.id == env.agent => a,
            Some(a) => {
                return Err(ApiError::bad(format!(
                    "the envelope is from agent `{}`, the request named `{}`",
                    env.agent, a.id
                )))
            }
            None => self.store.agent(&env.agent).await?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unknown_agent",
                    format!("no agent `{}` is enrolled here", env.agent),
                )
            })?,
        };
        let from = PublicKey::from_b64(&agent.public_key)?;
        let b = Binding {
            method: "POST",
            path,
            agent: &agent.id,
        };
        let plain = self
            .opener
            .open(&self.keys, &from, b, None, &env, now_ms())?;
        self.first_use(&env).await?;
        if let Some(t) = agent.revoked_ms {
            return Err(revoked(&agent, t));
        }
        self.touch(&agent.id).await?;
        // An agent naming no version is of protocol 2 or earlier: only its poll says which.
        if claimed.is_none() && op != proto::AgentOp::Poll {
            check_protocol(
                &format!("agent {} (vacsine {})", agent.name, agent.version),
                None,
            )?;
        }
        // Decoded once, by the operation the path names: what follows matches on the
        // request's type, never on a path string.
        // A records upload holding a record that is not a step record is refused naming it
        // (`bad_record`): nothing unreadable is stored.
        let req = proto::AgentRequest::decode(op, &plain)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.code, e.message))?;
        match req {
            proto::AgentRequest::Poll(r) => {
                check_protocol(
                    &format!("agent {} (vacsine {})", agent.name, agent.version),
                    Some(r.protocol),
                )?;
                if let Some(o) = &r.outbox {
                    self.note_outbox(&agent.id, o).await;
                }
                let (work, decisions) = self
                    .poll(&agent, r.wait_ms.min(MAX_WAIT_MS), r.decisions.as_deref())
                    .await?;
                self.seal_reply(&from, b, &env, &proto::PollResponse { work, decisions })
            }
            proto::AgentRequest::Ping(_) => {
                self.seal_reply(&from, b, &env, &proto::Pong { time_ms: now_ms() })
            }
            proto::AgentRequest::Responses(r) => {
                let accepted = self.responses_upload(&agent, &r).await?;
                self.seal_reply(&from, b, &env, &accepted)
            }
            proto::AgentRequest::Assessments(r) => {
                let accepted = self.assessment_upload(&agent, &r).await?;
                self.seal_reply(&from, b, &env, &accepted)
            }
            proto::AgentRequest::Autonomous(r) => {
                let created = self.autonomous_run(&agent, &r).await?;
                self.seal_reply(&from, b, &env, &proto::AutonomousAccepted { created })
            }
            proto::AgentRequest::Image(r) => {
                let chunk = self.image_chunk(&agent, &r).await?;
                self.seal_reply(&from, b, &env, &chunk)
            }
            proto::AgentRequest::Bundle(r) => {
                let resp = self.registry_bundle(&agent.site, r.have.as_deref()).await?;
                self.seal_reply(&from, b, &env, &resp)
            }
            proto::AgentRequest::Renew(r) => {
                let held = self
                    .store
                    .renew(&agent.id, &r.runs, now_ms(), self.lease_ttl_ms)
                    .await?;
                self.seal_reply(&from, b, &env, &proto::RenewResponse { held })
            }
            proto::AgentRequest::Records(r) => {
                // Each record is a step record (decoded so, or refused naming it).
                let recs = r
                    .records
                    .iter()
                    .map(|k| {
                        serde_json::to_string(&k.record)
                            .map(|text| (k.key.clone(), text))
                            .map_err(|e| {
                                ApiError::from(StoreError::Other(format!(
                                    "record `{}` of run `{}`: encoding it: {e}",
                                    k.key, r.run_id
                                )))
                            })
                    })
                    .collect::<ApiResult<Vec<(String, String)>>>()?;
                let st = self
                    .store
                    .add_records(&r.run_id, &agent.id, &recs, now_ms())
                    .await?;
                // An upload sent again (all duplicates) is not counted nor logged again.
                if st.stored > 0 {
                    self.observe_records(&agent, &r);
                }
                // Records are proof of life: the lease goes on.
                self.store
                    .renew(
                        &agent.id,
                        std::slice::from_ref(&r.run_id),
                        now_ms(),
                        self.lease_ttl_ms,
                    )
                    .await?;
                self.events.send_modify(|n| *n += 1);
                self.seal_reply(
                    &from,
                    b,
                    &env,
                    &proto::RecordsResponse {
                        stored: st.stored,
                        duplicates: st.duplicates,
                    },
                )
            }
            proto::AgentRequest::Finish(r) => {
                if !r.status.is_final() {
                    return Err(ApiError::bad(format!(
                        "`{}` is not a final status",
                        r.status
                    )));
                }
                self.keep_report(&agent, &r).await?;
                let accepted = self
                    .store
                    .finish_run(
                        &r.run_id,
                        &agent.id,
                        r.status.as_str(),
                        r.message.as_deref(),
                        now_ms(),
                    )
                    .await?;
                self.events.send_modify(|n| *n += 1);
                self.seal_reply(&from, b, &env, &proto::FinishResponse { accepted })
            }
        }
    }

    /// Step durations for `/metrics` and lines for Loki of records just stored.
    fn observe_records(&self, agent: &AgentRow, r: &proto::RecordsRequest) {
        for k in &r.records {
            if let Some(ms) = k.record.duration_ms {
                self.metrics.step_duration.observe(ms as f64 / 1000.0);
            }
        }
        if let Some(l) = &self.loki {
            l.push(r.records.iter().map(|k| {
                crate::loki::Line::step_record(
                    &agent.site,
                    &agent.name,
                    &r.run_id,
                    &k.key,
                    &k.record,
                )
            }));
        }
    }

    /// Record that `id` was seen now, unless this process did less than [`SEEN_EVERY_MS`] ago.
    async fn touch(&self, id: &str) -> ApiResult<()> {
        let now = now_ms();
        {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(&t) = seen.get(id) {
                if (0..SEEN_EVERY_MS).contains(&(now - t)) {
                    return Ok(());
                }
            }
            seen.insert(id.to_string(), now);
        }
        if let Err(e) = self.store.touch_agent(id, now).await {
            self.seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
            return Err(e.into());
        }
        Ok(())
    }

    /// An autonomous run an agent made (`vacsine agent run`), reported when its link
    /// allowed: a run of the agent's site, held by that agent until its end arrives (after
    /// its records, from the same outbox). Reported again: nothing changes.
    async fn autonomous_run(&self, agent: &AgentRow, r: &proto::AutonomousRun) -> ApiResult<bool> {
        let ok_id = !r.run_id.is_empty()
            && r.run_id.len() <= 64
            && r.run_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok_id {
            return Err(ApiError::bad("autonomous run: `run_id` must be a UUID"));
        }
        if let Some(known) = self.store.run(&r.run_id).await? {
            if known.agent_id.as_deref() == Some(agent.id.as_str()) {
                return Ok(false);
            }
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("run `{}` exists and is not this agent's", r.run_id),
            ));
        }
        let title: String = r.workflow.chars().take(200).collect();
        let request = serde_json::json!({"autonomous": {
            "bundle": r.bundle, "versions": r.versions, "agent": agent.name}});
        let row = RunRow {
            id: r.run_id.clone(),
            site: agent.site.clone(),
            workflow: format!("{title} (autonomous)"),
            request: request.to_string(),
            status: status::RUNNING.into(),
            agent_id: Some(agent.id.clone()),
            lease_expires_ms: None,
            offers: 0,
            created_ms: r.started_ms,
            started_ms: Some(r.started_ms),
            finished_ms: None,
            message: None,
            records: 0,
            site_outcome: None,
        };
        self.store.create_run(&row).await?;
        self.events.send_modify(|n| *n += 1);
        Ok(true)
    }

    async fn enroll(&self, body: &[u8], claimed: Option<u32>) -> ApiResult<Envelope> {
        let e: proto::EnrollEnvelope = parse(body, "enrolment")?;
        let from = PublicKey::from_b64(&e.public_key)?;
        let env = e.envelope;
        let b = Binding {
            method: "POST",
            path: proto::ENROLL,
            agent: &env.agent,
        };
        let plain = self
            .opener
            .open(&self.keys, &from, b, None, &env, now_ms())?;
        self.first_use(&env).await?;
        let r: proto::EnrollRequest = parse(&plain, "enrolment")?;
        if claimed.is_none() {
            check_protocol(&format!("agent {} (vacsine {})", r.name, r.version), None)?;
        }
        if r.name != env.agent || r.name.is_empty() || r.name.len() > 128 {
            return Err(ApiError::bad(
                "the agent name must be 1 to 128 characters and match the envelope",
            ));
        }
        let site = self
            .store
            .site_by_intake(&intake_hash(&r.intake_key))
            .await?
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_intake_key",
                    "the intake key is unknown or its site was revoked; `vacsine site create NAME` prints a new one",
                )
            })?;
        let now = now_ms();
        let row = AgentRow {
            id: uuid::Uuid::new_v4().to_string(),
            site: site.name.clone(),
            name: r.name.clone(),
            public_key: from.to_b64(),
            version: r.version.clone(),
            enrolled_ms: now,
            last_seen_ms: now,
            revoked_ms: None,
        };
        self.store.enroll_agent(&row).await?;
        tracing::info!(
            "agent {} enrolled at site {} as {}",
            r.name,
            site.name,
            row.id
        );
        self.seal_reply(
            &from,
            b,
            &env,
            &proto::EnrollResponse {
                agent_id: row.id,
                site: site.name,
            },
        )
    }

    /// Work for `agent`, or the site's decision set when it differs from `decisions` (the
    /// version the agent holds; `None`: an agent that does not enforce decisions).
    async fn poll(
        &self,
        agent: &AgentRow,
        wait_ms: u64,
        decisions: Option<&str>,
    ) -> ApiResult<(Option<proto::Work>, Option<proto::SignedDecisions>)> {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
        let mut rx = self.queue.subscribe();
        let mut stopping = self.stopping.subscribe();
        // `agent` was read (not revoked) just before this poll.
        let mut woken = false;
        loop {
            rx.mark_unchanged();
            // Revoked while waiting: refused at once, not at the next poll.
            if woken {
                if let Some(t) = self
                    .store
                    .agent(&agent.id)
                    .await?
                    .and_then(|a| a.revoked_ms)
                {
                    return Err(revoked(agent, t));
                }
            }
            woken = true;
            if let Some(have) = decisions {
                if let Some(set) = self.decision_set(&agent.site, have).await? {
                    return Ok((None, Some(set)));
                }
            }
            if let Some(run) = self
                .store
                .lease_next(&agent.site, &agent.id, now_ms(), self.lease_ttl_ms)
                .await?
            {
                self.metrics
                    .dispatch_latency
                    .observe(crate::metrics::Metrics::secs(run.created_ms, now_ms()));
                self.events.send_modify(|n| *n += 1);
                // Only the signed job travels: the agent verifies it before it reads what it
                // asks for (the unsigned copy in the run's request is for the API's readers).
                let signed = self.signed_for(&run.id).await?;
                return Ok((
                    Some(proto::Work {
                        run_id: run.id,
                        lease_ttl_ms: self.lease_ttl_ms,
                        signed,
                    }),
                    None,
                ));
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return Ok((None, None)) },
                _ = tokio::time::sleep_until(deadline) => return Ok((None, None)),
                _ = stopping.wait_for(|s| *s) => return Ok((None, None)),
            }
        }
    }

    /// Keep what `agent` reports of its outbox's refused items, when it changed (a poll is
    /// not a store write). A failure to keep it is logged: the next poll reports it again.
    async fn note_outbox(&self, agent: &str, o: &proto::OutboxReport) {
        let lock = || self.outboxes.lock().unwrap_or_else(|p| p.into_inner());
        if lock().get(agent) == Some(o) {
            return;
        }
        let json = match serde_json::to_string(o) {
            Ok(j) => j,
            Err(e) => return tracing::warn!("agent {agent}: its outbox report: {e}"),
        };
        match self.store.set_agent_outbox(agent, &json, now_ms()).await {
            Ok(()) => {
                if o.refused > 0 {
                    tracing::warn!(
                        "agent {agent} keeps {} outbox item(s) refused (`vacsine status` lists the oldest)",
                        o.refused
                    );
                }
                lock().insert(agent.to_string(), o.clone());
            }
            Err(e) => tracing::warn!("agent {agent}: keeping its outbox report: {e}"),
        }
    }

    fn operator(&self, h: &HeaderMap) -> ApiResult<()> {
        let given = h
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if vacsine_wire::constant_time_eq(given.as_bytes(), self.token.as_bytes()) {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "operator token missing or wrong (it is in the orchestrator's data folder: operator.token)",
            ))
        }
    }
}

fn revoked(agent: &AgentRow, at: i64) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "revoked",
        format!(
            "agent `{}` of site `{}` was revoked at {}; enrol it again with a new intake key",
            agent.name,
            agent.site,
            rfc3339(at)
        ),
    )
}

fn valid_name(name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(format!(
            "site name {name:?}: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )))
    }
}

#[utoipa::path(post, path = "/v1/sites", tag = "operator", security(("operator" = [])),
    description = "Create a site; the response holds its intake key, shown once (stored hashed).",
    request_body = proto::CreateSite,
    responses((status = 200, body = proto::SiteCreated),
        (status = 400, body = proto::ErrorBody, description = "not a `CreateSite`, or a site name that is not 1 to 64 letters, digits, `-`, `_` or `.`"),
        (status = 409, body = proto::ErrorBody, description = "a site of that name exists")))]
async fn create_site(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiJson(r): ApiJson<proto::CreateSite>,
) -> ApiResult<Json<proto::SiteCreated>> {
    s.operator(&h)?;
    valid_name(&r.name)?;
    labels::check_labels(&r.labels)?;
    let key = format!("vik_{}", random_hex(24));
    s.store
        .create_site(&r.name, &intake_hash(&key), now_ms())
        .await?;
    if !r.labels.is_empty() {
        s.store
            .set_site_labels(&r.name, &s.seal_labels(&r.name, &r.labels)?)
            .await?;
    }
    Ok(Json(proto::SiteCreated {
        name: r.name,
        intake_key: key,
    }))
}

#[utoipa::path(get, path = "/v1/sites", tag = "operator", security(("operator" = [])),
    responses((status = 200, body = Vec<proto::SiteView>)))]
async fn list_sites(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
) -> ApiResult<Json<Vec<proto::SiteView>>> {
    s.operator(&h)?;
    Ok(Json(site_views(&s).await?))
}

async fn site_views(s: &Srv) -> ApiResult<Vec<proto::SiteView>> {
    let store = &*s.store;
    let agents = store.agents().await?;
    let now = now_ms();
    // A site is cut off when it has agents (not revoked) and none is online: since the last
    // time one of them was seen.
    let mut seen: std::collections::HashMap<&str, (bool, i64)> = Default::default();
    for a in agents.iter().filter(|a| a.revoked_ms.is_none()) {
        let e = seen.entry(a.site.as_str()).or_insert((false, i64::MIN));
        e.0 |= now - a.last_seen_ms <= ONLINE_MS;
        e.1 = e.1.max(a.last_seen_ms);
    }
    let cut_off: std::collections::HashMap<String, i64> = seen
        .into_iter()
        .filter(|(_, (online, _))| !online)
        .map(|(site, (_, last))| (site.to_string(), last))
        .collect();
    // Refused outbox items per site: each agent's last report, summed.
    let site_of: std::collections::HashMap<String, String> =
        agents.into_iter().map(|a| (a.id, a.site)).collect();
    let mut refused: std::collections::HashMap<String, u64> = Default::default();
    for (agent, json) in store.agent_outboxes().await? {
        if let (Some(site), Ok(o)) = (
            site_of.get(&agent),
            serde_json::from_str::<proto::OutboxReport>(&json),
        ) {
            *refused.entry(site.clone()).or_default() += o.refused;
        }
    }
    let mut labels = s.all_labels().await?;
    Ok(store
        .sites()
        .await?
        .into_iter()
        .map(|x| proto::SiteView {
            refused_outbox_items: refused.get(&x.name).copied().unwrap_or(0),
            labels: labels.remove(&x.name).unwrap_or_default(),
            cut_off_since: match x.revoked_ms {
                Some(_) => None,
                None => cut_off.get(&x.name).copied().map(rfc3339),
            },
            name: x.name,
            created: rfc3339(x.created_ms),
            revoked: x.revoked_ms.map(rfc3339),
        })
        .collect())
}

#[utoipa::path(post, path = "/v1/sites/{name}/revoke", tag = "operator", security(("operator" = [])),
    description = "Revoke one agent of a site (`{\"agent\": NAME}`) or the whole site, its intake key and every agent (`{\"whole_site\": true}`): refused at its next request. The body is required: without one nothing is revoked.",
    params(("name" = String, Path, description = "site")),
    request_body = proto::RevokeRequest,
    responses((status = 200, body = proto::Revoked),
        (status = 400, body = proto::ErrorBody, description = "no body, or neither (or both) of `agent` and `whole_site`"),
        (status = 404, body = proto::ErrorBody, description = "no such site, or no such agent at the site")))]
async fn revoke(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    UrlPath(name): UrlPath<String>,
    ApiJson(r): ApiJson<proto::RevokeRequest>,
) -> ApiResult<Json<proto::Revoked>> {
    s.operator(&h)?;
    match &r {
        proto::RevokeRequest::Agent(a) => s.store.revoke_agent(&name, a, now_ms()).await?,
        proto::RevokeRequest::WholeSite => s.store.revoke_site(&name, now_ms()).await?,
    }
    // Wake long polls: a revoked agent is refused now.
    s.queue.send_modify(|n| *n += 1);
    Ok(Json(proto::Revoked { revoked: true }))
}

#[utoipa::path(post, path = "/v1/runs", tag = "operator", security(("operator" = [])),
    description = "Queue a run of a workflow at a site; its agent leases it at its next poll. `job.workflow` must be a valid Workflow (checked with the same validator as `vacsine validate`, with `job.catalog`), or `job.enforce` a valid policy, target and catalog: anything else is refused, nothing is signed or queued.",
    request_body = proto::SubmitRun,
    responses((status = 200, body = proto::RunCreated),
        (status = 400, body = proto::ErrorBody, description = "not a `SubmitRun`, or a job that is not a valid workflow or enforce (the message names the field or step at fault), or a `container` step naming an image never pushed"),
        (status = 403, body = proto::ErrorBody, description = "the site is revoked"),
        (status = 404, body = proto::ErrorBody, description = "no such site"),
        (status = 409, body = proto::ErrorBody, description = "a pushed image's archive is missing from the orchestrator's data folder, or its registry entry is not what was pushed")))]
async fn submit_run(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    ApiJson(mut r): ApiJson<proto::SubmitRun>,
) -> ApiResult<Json<proto::RunCreated>> {
    s.operator(&h)?;
    let sites = s.store.sites().await?;
    match sites.iter().find(|x| x.name == r.site) {
        None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!(
                    "no site `{}`; `vacsine site create {}` makes it",
                    r.site, r.site
                ),
            ))
        }
        Some(x) if x.revoked_ms.is_some() => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "revoked",
                format!("site `{}` is revoked", r.site),
            ))
        }
        Some(_) => {}
    }
    vacsine_contract::enforce::check_job(&r.job).map_err(ApiError::bad)?;
    s.resolve_images(&mut r.job).await?;
    let workflow = vacsine_contract::enforce::job_title(&r.job);
    if let proto::Job::Workflow(w) = &r.job {
        if crate::xsite::spans_sites(&r.job) {
            // Steps naming sites: driven here, one step at a time.
            let id = s.start_spanning(&r.site, w, workflow).await?;
            return Ok(Json(proto::RunCreated { run_id: id }));
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let row = RunRow {
        id: id.clone(),
        site: r.site,
        workflow,
        request: serde_json::to_string(&r.job).map_err(|e| ApiError::bad(e.to_string()))?,
        status: status::QUEUED.into(),
        agent_id: None,
        lease_expires_ms: None,
        offers: 0,
        created_ms: now_ms(),
        started_ms: None,
        finished_ms: None,
        message: None,
        records: 0,
        site_outcome: None,
    };
    // Signed and queued together: no agent is handed it unsigned.
    s.sign_and_create_run(&row, &r.job).await?;
    s.queue.send_modify(|n| *n += 1);
    s.events.send_modify(|n| *n += 1);
    Ok(Json(proto::RunCreated { run_id: id }))
}

/// An agent whose contract version is not this orchestrator's is served nothing: 426,
/// naming both versions and which side to upgrade. `protocol` is the version it names
/// (`None`: it names none, as agents of protocols 1 and 2 did outside their polls).
fn check_protocol(who: &str, protocol: Option<u32>) -> ApiResult<()> {
    if protocol == Some(proto::PROTOCOL) {
        return Ok(());
    }
    let (theirs, upgrade) = match protocol {
        Some(p) if p > proto::PROTOCOL => (format!("protocol {p}"), "upgrade the orchestrator"),
        Some(p) => (format!("protocol {p}"), "upgrade the agent"),
        None => (
            format!(
                "protocol 2 or earlier (its request names no `{}`)",
                proto::PROTOCOL_HEADER
            ),
            "upgrade the agent",
        ),
    };
    Err(ApiError::new(
        StatusCode::UPGRADE_REQUIRED,
        "protocol",
        format!(
            "{who} speaks {theirs}; this orchestrator (vacsine {}) speaks protocol {}: {upgrade}",
            crate::VERSION,
            proto::PROTOCOL
        ),
    ))
}

fn run_view(r: RunRow) -> proto::RunView {
    proto::RunView {
        id: r.id,
        site: r.site,
        workflow: r.workflow,
        status: r.status,
        agent: r.agent_id,
        offers: r.offers,
        created: rfc3339(r.created_ms),
        started: r.started_ms.map(rfc3339),
        finished: r.finished_ms.map(rfc3339),
        lease_expires: r.lease_expires_ms.map(rfc3339),
        message: r.message,
        records: r.records,
        site_outcome: r.site_outcome.map(|o| proto::SiteOutcomeView {
            status: o.status,
            message: o.message,
            reported: rfc3339(o.reported_ms),
        }),
    }
}

#[derive(Deserialize)]
struct RecordsQuery {
    #[serde(default)]
    after: i64,
    #[serde(default)]
    wait_ms: u64,
}

/// A run and its records after `after`; with `wait_ms`, waits (up to 25 s) until there are
/// new records or the run ends.
#[utoipa::path(get, path = "/v1/runs/{id}", tag = "operator", security(("operator" = [])),
    params(("id" = String, Path, description = "run id"),
        ("after" = Option<i64>, Query, description = "only records after this sequence number", minimum = -9223372036854775808i64, maximum = 9223372036854775807i64),
        ("wait_ms" = Option<u64>, Query, description = "wait up to this long (larger values wait 25000) for new records or the run's end", minimum = 0u64, maximum = 18446744073709551615u64)),
    responses((status = 200, body = proto::RunRecords),
        (status = 400, body = proto::ErrorBody, description = "a query parameter that is not a number of its type"),
        (status = 404, body = proto::ErrorBody, description = "no such run"),
        (status = 503, body = proto::ErrorBody, description = "the orchestrator is stopping: ask again")))]
async fn run_records(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<RecordsQuery>,
) -> ApiResult<Json<proto::RunRecords>> {
    s.operator(&h)?;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(q.wait_ms.min(MAX_WAIT_MS));
    let mut rx = s.events.subscribe();
    let mut stopping = s.stopping.subscribe();
    loop {
        rx.mark_unchanged();
        let run = s.store.run(&id).await?.ok_or_else(|| {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no run `{id}`"))
        })?;
        let recs = s.store.records(&id, q.after).await?;
        if !recs.is_empty() || status::is_final(&run.status) || q.wait_ms == 0 {
            // A stored row that is not a step record (altered in the store) is said, naming
            // the run and the row, never shown as something else nor left out.
            let records = recs
                .into_iter()
                .map(|(seq, r)| {
                    serde_json::from_str(&r)
                        .map(|record| proto::SeqRecord { seq, record })
                        .map_err(|e| {
                            // Logged, and answered as the store's failure (500).
                            ApiError::from(StoreError::Other(format!(
                                "run `{id}`: stored record {seq} is not a step record: {e}"
                            )))
                        })
                })
                .collect::<ApiResult<Vec<_>>>()?;
            return Ok(Json(proto::RunRecords {
                run: run_view(run),
                records,
            }));
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "internal", "shutting down")) },
            _ = tokio::time::sleep_until(deadline) => {
                return Ok(Json(proto::RunRecords { run: run_view(run), records: vec![] }));
            }
            _ = stopping.wait_for(|s| *s) => {
                return Ok(Json(proto::RunRecords { run: run_view(run), records: vec![] }));
            }
        }
    }
}

#[derive(Deserialize)]
struct RunsQuery {
    site: Option<String>,
    status: Option<String>,
    workflow: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

/// Runs of every site, newest first, filtered by site, status and workflow; a page each.
#[utoipa::path(get, path = "/v1/runs", tag = "operator", security(("operator" = [])),
    params(("site" = Option<String>, Query, description = "only this site's runs"),
        ("status" = Option<proto::RunStatus>, Query, description = "only runs in this status"),
        ("workflow" = Option<String>, Query, description = "only runs of this workflow"),
        ("limit" = Option<usize>, Query, description = "at most this many (default 50; larger values give 1000)", minimum = 0u64, maximum = 18446744073709551615u64),
        ("before" = Option<String>, Query, description = "the next page: the `next` of the previous answer (runs listed after it)")),
    responses((status = 200, body = proto::RunList),
        (status = 400, body = proto::ErrorBody, description = "an unknown status, a limit that is not a number, or a `before` that is not a cursor")))]
async fn list_runs(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Json<proto::RunList>> {
    s.operator(&h)?;
    let limit = q.limit.unwrap_or(50).clamp(1, 1000);
    if let Some(st) = &q.status {
        const KNOWN: &[&str] = &[
            status::QUEUED,
            status::RUNNING,
            status::SUCCEEDED,
            status::FAILED,
            status::CANCELLED,
        ];
        if !KNOWN.contains(&st.as_str()) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("unknown status `{st}`; one of {}", KNOWN.join(", ")),
            ));
        }
    }
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(b) => Some(crate::store::Cursor::decode(b).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("before {b:?}: give the `next` of a previous answer (CREATED_MS.SEQ)"),
            )
        })?),
    };
    let page = s
        .store
        .runs_page(&crate::store::RunQuery {
            site: q.site,
            status: q.status,
            workflow: q.workflow,
            before,
            limit,
        })
        .await?;
    Ok(Json(proto::RunList {
        runs: page.runs.into_iter().map(run_view).collect(),
        next: page.next.map(|c| c.encode()),
    }))
}

#[utoipa::path(get, path = "/v1/status", tag = "operator", security(("operator" = [])),
    description = "The consolidated view: sites, agents (online/offline/revoked, last seen, version) and the latest runs.",
    responses((status = 200, body = proto::StatusView)))]
async fn status_view(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
) -> ApiResult<Json<proto::StatusView>> {
    s.operator(&h)?;
    let now = now_ms();
    // The latest autonomous run of each agent among the most recent 1,000 runs.
    let autonomous: std::collections::HashMap<String, i64> =
        s.store.last_autonomous(1000).await?.into_iter().collect();
    let recent = s.store.runs(50).await?;
    let outboxes: std::collections::HashMap<String, proto::OutboxReport> = s
        .store
        .agent_outboxes()
        .await?
        .into_iter()
        .filter_map(|(id, json)| Some((id, serde_json::from_str(&json).ok()?)))
        .collect();
    let agents = s
        .store
        .agents()
        .await?
        .into_iter()
        .map(|a| proto::AgentView {
            outbox: outboxes.get(&a.id).cloned(),
            last_autonomous: autonomous.get(&a.id).copied().map(rfc3339),
            state: if a.revoked_ms.is_some() {
                "revoked"
            } else if now - a.last_seen_ms <= ONLINE_MS {
                "online"
            } else {
                "offline"
            }
            .to_string(),
            last_seen: rfc3339(a.last_seen_ms),
            enrolled: rfc3339(a.enrolled_ms),
            id: a.id,
            site: a.site,
            name: a.name,
            version: a.version,
        })
        .collect();
    Ok(Json(proto::StatusView {
        sites: site_views(&s).await?,
        agents,
        runs: recent.into_iter().take(50).map(run_view).collect(),
    }))
}

/// The data folder's `operator.json`, as the CLI reads it.
pub fn operator_config(data: &Path) -> anyhow::Result<proto::OperatorConfig> {
    let p = data.join("operator.json");
    let t = std::fs::read(&p).with_context(|| {
        format!(
            "reading {} (start `vacsine orchestrator --data {}` first, or give --orchestrator, --pin and --token)",
            p.display(),
            data.display()
        )
    })?;
    serde_json::from_slice(&t).with_context(|| format!("{} is not valid", p.display()))
}

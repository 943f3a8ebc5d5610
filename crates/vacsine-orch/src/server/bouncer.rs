//! CrowdSec's bouncer API (issue 16, compatible enforcement): the subset of CrowdSec's local
//! API that bouncers read (`GET /v1/decisions/stream`, `GET /v1/decisions`), so that an
//! existing CrowdSec bouncer enforces Vacsine's active bans. Served on a listener of its own
//! (`--bouncer-listen`): its paths are CrowdSec's and `/v1/decisions` is also the operator
//! API's. Each bouncer has an API key (`X-Api-Key`), kept hashed; its stream is the
//! difference between the bans active for it now and the ones it was given at its last pull,
//! so a deletion or an expiry is sent once as `deleted`. The operator manages bouncers on the
//! main API (`/v1/bouncers`). A child of `server`.

use super::responses::Opened;
use super::{parse, random_hex, ApiError, ApiResult, Srv};
use crate::store::BouncerRow;
use crate::{now_ms, rfc3339};
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use vacsine_contract::proto;
use vacsine_response::{Action, Decision, IpNet};

/// A decision in CrowdSec's JSON shape (its local API's `Decision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CsDecision {
    /// CrowdSec's ids are integers: 52 bits of the hash of Vacsine's id.
    pub id: u64,
    pub origin: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// `Ip` or `Range`.
    pub scope: String,
    pub value: String,
    /// Time left, as Go writes a duration (`3h59m12s`); negative once gone.
    pub duration: String,
    /// Why: `vacsine/<the response that decided>` (`vacsine/operator` for one made by hand).
    pub scenario: String,
    pub simulated: bool,
}

/// The stream's answer: bans the bouncer does not hold yet, and ones it must drop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CsStream {
    pub new: Vec<CsDecision>,
    pub deleted: Vec<CsDecision>,
}

/// Go's `time.Duration` text in whole seconds (`3h59m12s`, `4m0s`, `12s`), negative with a
/// leading `-`. Time left is rounded up: bouncers keep whole seconds (the firewall bouncer
/// gives its nft element that timeout), and a ban must not end before its decision does.
pub fn go_duration(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let s = if ms < 0 {
        ms.unsigned_abs() / 1000
    } else {
        ms.unsigned_abs().div_ceil(1000)
    };
    let (h, m, s) = (s / 3600, (s / 60) % 60, s % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{sign}{m}m{s}s")
    } else {
        format!("{sign}{s}s")
    }
}

/// A ban without an end, as a duration (ten years).
const FOREVER_MS: i64 = 10 * 365 * 24 * 3600 * 1000;

fn numeric_id(id: &str) -> u64 {
    let pin = vacsine_wire::sha256_pin(id.as_bytes());
    let hex = pin.strip_prefix("sha256:").unwrap_or(&pin);
    u64::from_str_radix(hex.get(..13).unwrap_or("0"), 16).unwrap_or(0)
}

/// CrowdSec's scope and value of a ban.
fn scope_value(net: &IpNet) -> (String, String) {
    if net.is_host() {
        ("Ip".into(), net.network().to_string())
    } else {
        (
            "Range".into(),
            format!("{}/{}", net.network(), net.prefix()),
        )
    }
}

/// A decision as CrowdSec's, if it is a ban signed when it was made.
fn cs_decision(o: &Opened, now: i64) -> Option<(CsDecision, IpNet)> {
    let s = o.sealed.as_ref().ok()?;
    let d: &Decision = &s.grant.decision;
    let Action::Ban { net } = d.action else {
        return None;
    };
    let (scope, value) = scope_value(&net);
    let expires_ms = d.expires_at.map(|t| t.timestamp_millis());
    let left = match (s.deletion.as_ref().map(|(_, d)| d.deleted_ms), expires_ms) {
        (Some(t), _) => t - now,
        (None, Some(t)) => t - now,
        (None, None) => FOREVER_MS,
    };
    let r = &o.row;
    Some((
        CsDecision {
            id: numeric_id(&r.id),
            origin: "vacsine".into(),
            kind: "ban".into(),
            scope,
            value,
            duration: go_duration(left),
            scenario: format!("vacsine/{}", d.origin.response),
            simulated: false,
        },
        net,
    ))
}

/// What a bouncer was last given: Vacsine decision id → (scope, value).
type Known = BTreeMap<String, (String, String)>;

/// The bans active for bouncer `b` (all sites', or its site's).
fn active_for(b: &BouncerRow, rows: &[Opened], now: i64) -> Vec<(String, CsDecision, IpNet)> {
    rows.iter()
        .filter(|o| o.is_active(now))
        .filter(|o| b.site.as_deref().is_none_or(|s| o.in_scope(s)))
        .filter_map(|o| cs_decision(o, now).map(|(c, n)| (o.row.id.clone(), c, n)))
        .collect()
}

/// CrowdSec's error shape.
fn cs_error(status: StatusCode, message: impl Into<String>) -> Response {
    (
        status,
        Json(serde_json::json!({ "message": message.into() })),
    )
        .into_response()
}

impl Srv {
    /// The bouncer whose key is in `X-Api-Key`.
    async fn bouncer_of(&self, h: &HeaderMap) -> Result<BouncerRow, Response> {
        let key = h
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .trim();
        if key.is_empty() {
            return Err(cs_error(
                StatusCode::FORBIDDEN,
                "access forbidden: no X-Api-Key header (make a key with `vacsine bouncer add NAME`)",
            ));
        }
        let hash = super::intake_hash(key);
        let all = self
            .store
            .bouncers()
            .await
            .map_err(|e| cs_error(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")))?;
        all.into_iter().find(|b| b.key_hash == hash).ok_or_else(|| {
            cs_error(
                StatusCode::FORBIDDEN,
                "access forbidden: unknown or deleted API key (`vacsine bouncer list` shows the bouncers)",
            )
        })
    }
}

#[derive(Debug, Deserialize)]
struct StreamQuery {
    #[serde(default)]
    startup: Option<String>,
}

/// `GET /v1/decisions/stream?startup=true|false`.
async fn stream(State(s): State<Arc<Srv>>, h: HeaderMap, Query(q): Query<StreamQuery>) -> Response {
    let b = match s.bouncer_of(&h).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let startup = match q.startup.as_deref().map(str::trim) {
        None | Some("") | Some("false") => false,
        Some("true") => true,
        Some(x) => {
            return cs_error(
                StatusCode::BAD_REQUEST,
                format!("`startup` is `{x}`: give true or false"),
            )
        }
    };
    let now = now_ms();
    let rows = match s.opened_decisions().await {
        Ok(r) => r,
        Err(e) => return cs_error(StatusCode::INTERNAL_SERVER_ERROR, e.message),
    };
    let active = active_for(&b, &rows, now);
    let known: Known = if startup {
        Known::new()
    } else {
        serde_json::from_str(&b.known).unwrap_or_default()
    };
    let new: Vec<CsDecision> = active
        .iter()
        .filter(|(id, _, _)| !known.contains_key(id))
        .map(|(_, c, _)| c.clone())
        .collect();
    let by_id: BTreeMap<&str, &Opened> = rows.iter().map(|o| (o.row.id.as_str(), o)).collect();
    let deleted: Vec<CsDecision> = known
        .iter()
        .filter(|(id, _)| !active.iter().any(|(a, _, _)| a == *id))
        .map(|(id, (scope, value))| {
            by_id
                .get(id.as_str())
                .and_then(|r| cs_decision(r, now))
                .map(|(c, _)| c)
                .unwrap_or_else(|| CsDecision {
                    id: numeric_id(id),
                    origin: "vacsine".into(),
                    kind: "ban".into(),
                    scope: scope.clone(),
                    value: value.clone(),
                    duration: "0s".into(),
                    scenario: "vacsine".into(),
                    simulated: false,
                })
        })
        .collect();
    let now_known: Known = active
        .iter()
        .map(|(id, c, _)| (id.clone(), (c.scope.clone(), c.value.clone())))
        .collect();
    let text = serde_json::to_string(&now_known).unwrap_or_else(|_| "{}".into());
    if let Err(e) = s.store.bouncer_pulled(&b.name, &text, now).await {
        return cs_error(StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}"));
    }
    if !new.is_empty() || !deleted.is_empty() {
        tracing::info!(
            "bouncer {}: {} new, {} deleted{}",
            b.name,
            new.len(),
            deleted.len(),
            if startup { " (startup)" } else { "" }
        );
    }
    Json(CsStream { new, deleted }).into_response()
}

#[derive(Debug, Deserialize)]
struct DecisionsQuery {
    ip: Option<String>,
    range: Option<String>,
}

/// `GET /v1/decisions[?ip=A|range=N]`: the active bans covering an address (or network);
/// `null` when none, as CrowdSec answers.
async fn decisions(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    Query(q): Query<DecisionsQuery>,
) -> Response {
    let b = match s.bouncer_of(&h).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let ip: Option<IpAddr> = match q.ip.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(x) => match x.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                return cs_error(
                    StatusCode::BAD_REQUEST,
                    "`ip` is not an IPv4 or IPv6 address",
                )
            }
        },
    };
    let range: Option<IpNet> = match q.range.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(x) => match x.parse() {
            Ok(n) => Some(n),
            Err(_) => {
                return cs_error(
                    StatusCode::BAD_REQUEST,
                    "`range` is not a network such as 198.51.100.0/24",
                )
            }
        },
    };
    let rows = match s.opened_decisions().await {
        Ok(r) => r,
        Err(e) => return cs_error(StatusCode::INTERNAL_SERVER_ERROR, e.message),
    };
    let found: Vec<CsDecision> = active_for(&b, &rows, now_ms())
        .into_iter()
        .filter(|(_, _, n)| ip.is_none_or(|a| n.contains(a)))
        .filter(|(_, _, n)| range.is_none_or(|r| n.overlaps(&r)))
        .map(|(_, c, _)| c)
        .collect();
    if found.is_empty() {
        Json(serde_json::Value::Null).into_response()
    } else {
        Json(found).into_response()
    }
}

/// The bouncer listener's routes (CrowdSec's paths; nothing else is served there).
pub fn router(srv: Arc<Srv>) -> Router {
    Router::new()
        .route("/v1/decisions/stream", get(stream))
        .route("/v1/decisions", get(decisions))
        .fallback(|| async {
            cs_error(
                StatusCode::NOT_FOUND,
                "not served here: this listener serves CrowdSec's bouncer API (GET /v1/decisions/stream, GET /v1/decisions)",
            )
        })
        .with_state(srv)
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

fn bouncer_view(b: &BouncerRow) -> proto::BouncerView {
    proto::BouncerView {
        name: b.name.clone(),
        site: b.site.clone(),
        created_at: rfc3339(b.created_ms),
        last_pull_at: b.last_pull_ms.map(rfc3339),
        holds: serde_json::from_str::<Known>(&b.known)
            .map(|k| k.len())
            .unwrap_or(0),
    }
}

#[utoipa::path(post, path = "/v1/bouncers", tag = "operator", security(("operator" = [])),
    description = "Let a CrowdSec bouncer read the active bans on the bouncer listener (`--bouncer-listen`): its API key is in the answer, once; only its hash is kept.",
    request_body = proto::AddBouncer,
    responses((status = 200, body = proto::BouncerCreated), (status = 400, body = proto::ErrorBody), (status = 409, body = proto::ErrorBody)))]
pub(super) async fn add_bouncer(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<proto::BouncerCreated>> {
    s.operator(&h)?;
    let r: proto::AddBouncer = parse(&body, "bouncer")?;
    if !valid_name(&r.name) {
        return Err(ApiError::bad(
            "`name`: give 1 to 64 letters, digits, `.`, `_` or `-`",
        ));
    }
    if let Some(site) = &r.site {
        if !s.store.sites().await?.iter().any(|x| &x.name == site) {
            return Err(ApiError::bad(format!(
                "`site`: no site `{site}` (`vacsine site list` shows them)"
            )));
        }
    }
    let key = random_hex(32);
    let row = BouncerRow {
        name: r.name.clone(),
        key_hash: super::intake_hash(&key),
        site: r.site.clone(),
        created_ms: now_ms(),
        last_pull_ms: None,
        known: "{}".into(),
    };
    if !s.store.put_bouncer(&row).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "a bouncer `{}` exists: delete it first (`vacsine bouncer delete {}`) or pick another name",
                r.name, r.name
            ),
        ));
    }
    tracing::info!("bouncer {} added", r.name);
    Ok(Json(proto::BouncerCreated {
        bouncer: bouncer_view(&row),
        key,
    }))
}

#[utoipa::path(get, path = "/v1/bouncers", tag = "operator", security(("operator" = [])),
    description = "The CrowdSec bouncers allowed to read the bans, with their last pull.",
    responses((status = 200, body = proto::BouncerList), (status = 401, body = proto::ErrorBody)))]
pub(super) async fn list_bouncers(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
) -> ApiResult<Json<proto::BouncerList>> {
    s.operator(&h)?;
    let bouncers = s.store.bouncers().await?.iter().map(bouncer_view).collect();
    Ok(Json(proto::BouncerList { bouncers }))
}

#[utoipa::path(delete, path = "/v1/bouncers/{name}", tag = "operator", security(("operator" = [])),
    description = "Revoke a bouncer: its key is refused from now on.",
    params(("name" = String, Path, description = "the bouncer's name")),
    responses((status = 200, body = proto::BouncerView), (status = 404, body = proto::ErrorBody), (status = 401, body = proto::ErrorBody)))]
pub(super) async fn delete_bouncer(
    State(s): State<Arc<Srv>>,
    h: HeaderMap,
    UrlPath(name): UrlPath<String>,
) -> ApiResult<Json<proto::BouncerView>> {
    s.operator(&h)?;
    let row = s
        .store
        .bouncers()
        .await?
        .into_iter()
        .find(|b| b.name == name);
    let Some(row) = row else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no bouncer `{name}` (`vacsine bouncer list` shows them)"),
        ));
    };
    s.store.delete_bouncer(&name).await?;
    tracing::info!("bouncer {name} deleted");
    Ok(Json(bouncer_view(&row)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{header, Method, Request};
    use serde_json::{json, Value};
    use tower::ServiceExt;

    async fn call(
        app: Router,
        method: Method,
        uri: String,
        h: (&'static str, String),
        body: Value,
    ) -> (StatusCode, Value) {
        let mut b = Request::builder().method(method).uri(uri).header(h.0, h.1);
        if !body.is_null() {
            b = b.header(header::CONTENT_TYPE, "application/json");
        }
        let body = if body.is_null() {
            Body::empty()
        } else {
            Body::from(body.to_string())
        };
        let r = app.oneshot(b.body(body).unwrap()).await.unwrap();
        let status = r.status();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    fn values(v: &Value) -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        format!(
                            "{}:{}",
                            d["scope"].as_str().unwrap(),
                            d["value"].as_str().unwrap()
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// The stream as CrowdSec's bouncers read it, through the real routers and SQLite store:
    /// startup gives the active set (the bouncer's site only when it has one), a second pull
    /// gives nothing new, a deletion and an expiry come once as `deleted`, keys are checked.
    #[tokio::test]
    async fn the_stream_is_a_diff_per_bouncer_and_startup_the_whole_active_set() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = super::super::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            listen_plain: None,
            tls_files: None,
            data: dir.path().join("orch"),
            lease_ttl_ms: 30_000,
            database: None,
            max_image_bytes: 1 << 20,
            max_connections_per_client: None,
            retention: Default::default(),
            bouncer_listen: None,
            metrics_listen: None,
            loki: None,
            taxii: Vec::new(),
        };
        let srv = super::super::prepare(&cfg).await.unwrap().srv;
        for (i, site) in ["edge-a", "edge-b"].iter().enumerate() {
            srv.store
                .create_site(site, &format!("h{i}"), 1)
                .await
                .unwrap();
        }
        let bearer = format!("Bearer {}", srv.token);
        let op = |m: Method, uri: &str, body: Value| {
            call(
                super::super::router(srv.clone()),
                m,
                uri.to_string(),
                ("authorization", bearer.clone()),
                body,
            )
        };
        let (st, all) = op(Method::POST, "/v1/bouncers", json!({"name": "all"})).await;
        assert_eq!(st, StatusCode::OK, "{all}");
        let (_, b) = op(
            Method::POST,
            "/v1/bouncers",
            json!({"name": "b", "site": "edge-b"}),
        )
        .await;
        let (st, e) = op(
            Method::POST,
            "/v1/bouncers",
            json!({"name": "c", "site": "nowhere"}),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{e}");
        let (ka, kb) = (
            all["key"].as_str().unwrap().to_string(),
            b["key"].as_str().unwrap().to_string(),
        );
        let (_, d1) = op(
            Method::POST,
            "/v1/decisions",
            json!({"ip": "203.0.113.9", "for": "1h"}),
        )
        .await;
        op(
            Method::POST,
            "/v1/decisions",
            json!({"ip": "198.51.100.0/24", "for": "1h", "sites": ["edge-a"]}),
        )
        .await;
        op(
            Method::POST,
            "/v1/decisions",
            json!({"ip": "2001:db8::7", "for": "1s"}),
        )
        .await;
        let pull = |key: &str, uri: &str| {
            call(
                router(srv.clone()),
                Method::GET,
                uri.to_string(),
                ("x-api-key", key.to_string()),
                Value::Null,
            )
        };
        let (st, s) = pull(&ka, "/v1/decisions/stream?startup=true").await;
        assert_eq!(st, StatusCode::OK, "{s}");
        assert_eq!(
            values(&s["new"]),
            ["Ip:2001:db8::7", "Ip:203.0.113.9", "Range:198.51.100.0/24"],
            "{s}"
        );
        assert_eq!(values(&s["deleted"]), Vec::<String>::new());
        assert_eq!(s["new"][0]["origin"], "vacsine");
        assert_eq!(s["new"][0]["type"], "ban");
        assert_eq!(s["new"][0]["scenario"], "vacsine/operator");
        let (_, s) = pull(&kb, "/v1/decisions/stream?startup=true").await;
        assert_eq!(
            values(&s["new"]),
            ["Ip:2001:db8::7", "Ip:203.0.113.9"],
            "{s}"
        );
        let (_, s) = pull(&ka, "/v1/decisions/stream?startup=false").await;
        assert_eq!(
            (values(&s["new"]).len(), values(&s["deleted"]).len()),
            (0, 0),
            "{s}"
        );

        let id = d1["id"].as_str().unwrap();
        let (st, _) = op(Method::DELETE, &format!("/v1/decisions/{id}"), Value::Null).await;
        assert_eq!(st, StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (_, s) = pull(&ka, "/v1/decisions/stream").await;
        assert_eq!(
            values(&s["deleted"]),
            ["Ip:2001:db8::7", "Ip:203.0.113.9"],
            "{s}"
        );
        assert_eq!(values(&s["new"]), Vec::<String>::new(), "{s}");
        let (_, s) = pull(&ka, "/v1/decisions/stream").await;
        assert_eq!(
            (values(&s["new"]).len(), values(&s["deleted"]).len()),
            (0, 0),
            "{s}"
        );
        let (_, s) = pull(&ka, "/v1/decisions/stream?startup=true").await;
        assert_eq!(values(&s["new"]), ["Range:198.51.100.0/24"], "{s}");

        let (_, v) = pull(&ka, "/v1/decisions?ip=198.51.100.7").await;
        assert_eq!(values(&v), ["Range:198.51.100.0/24"], "{v}");
        let (_, v) = pull(&kb, "/v1/decisions?ip=198.51.100.7").await;
        assert!(v.is_null(), "{v}");
        let (st, _) = pull(&ka, "/v1/decisions?ip=not-an-ip").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, _) = pull(&ka, "/v1/decisions/stream?startup=maybe").await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        let (st, _) = pull("wrong", "/v1/decisions/stream").await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (_, l) = op(Method::GET, "/v1/bouncers", Value::Null).await;
        assert_eq!(l["bouncers"][0]["name"], "all", "{l}");
        assert_eq!(l["bouncers"][0]["holds"], 1, "{l}");
        let (st, _) = op(Method::DELETE, "/v1/bouncers/all", Value::Null).await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = pull(&ka, "/v1/decisions/stream").await;
        assert_eq!(st, StatusCode::FORBIDDEN);
    }

    #[test]
    fn durations_read_as_go_writes_them() {
        for (ms, text) in [
            (0, "0s"),
            (350, "1s"),
            (12_000, "12s"),
            (12_001, "13s"),
            (240_000, "4m0s"),
            (14_352_001, "3h59m13s"),
            (-3_600_999, "-1h0m0s"),
        ] {
            assert_eq!(go_duration(ms), text, "{ms} ms");
        }
    }

    #[test]
    fn a_host_is_an_ip_and_a_network_a_range() {
        let h: IpNet = "203.0.113.9".parse().unwrap();
        assert_eq!(scope_value(&h), ("Ip".into(), "203.0.113.9".into()));
        let n: IpNet = "2001:db8::/32".parse().unwrap();
        assert_eq!(scope_value(&n), ("Range".into(), "2001:db8::/32".into()));
    }
}

//! The operator API as its document says (issue 19, item 6), in process through the real
//! router and a real SQLite store: every refusal is a JSON `ErrorBody` with a status the
//! document lists for the operation, the token is checked before any input, a revocation
//! says what it revokes, and `POST /v1/runs` queues only valid workflows.

use super::{prepare, router, Config, Srv};
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use serde_json::{json, Value};
use std::sync::Arc;
use tower::ServiceExt;
use vacsine_contract::proto;

struct Api {
    srv: Arc<Srv>,
    token: String,
    _dir: tempfile::TempDir,
}

/// What came back: status, the `allow` header, the body as JSON (`Null` when it is not).
struct Answer {
    status: StatusCode,
    allow: Option<String>,
    body: Value,
}

impl Answer {
    /// A refusal in the API's shape: `code` and `error`, both non-empty strings.
    fn refusal(&self, status: StatusCode, code: &str) -> &str {
        assert_eq!(self.status, status, "{}", self.body);
        assert_eq!(self.body["code"], code, "{}", self.body);
        let error = self.body["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "no message: {}", self.body);
        error
    }
}

async fn api() -> Api {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        listen_plain: None,
        tls_files: None,
        data: dir.path().join("orch"),
        lease_ttl_ms: 30_000,
        database: None,
        max_image_bytes: 1 << 20,
        max_connections_per_client: None,
        retention: Default::default(),
        metrics_listen: None,
        loki: None,
        taxii: Vec::new(),
        bouncer_listen: None,
    };
    let p = prepare(&cfg).await.unwrap();
    Api {
        token: p.srv.token.clone(),
        srv: p.srv,
        _dir: dir,
    }
}

impl Api {
    async fn call(
        &self,
        method: Method,
        uri: &str,
        auth: bool,
        content_type: Option<&str>,
        body: impl Into<Body>,
    ) -> Answer {
        let mut b = Request::builder().method(method).uri(uri);
        if auth {
            b = b.header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        }
        if let Some(ct) = content_type {
            b = b.header(header::CONTENT_TYPE, ct);
        }
        let r = router(self.srv.clone())
            .oneshot(b.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = r.status();
        let allow = r
            .headers()
            .get(header::ALLOW)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
            .await
            .unwrap();
        Answer {
            status,
            allow,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    async fn json(&self, method: Method, uri: &str, body: Value) -> Answer {
        self.call(
            method,
            uri,
            true,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    async fn get(&self, uri: &str) -> Answer {
        self.call(Method::GET, uri, true, None, Body::empty()).await
    }
}

/// The statuses the served document lists for `method path` (path as templated there).
fn documented(method: &str, path: &str) -> Vec<String> {
    let doc = super::openapi::document();
    doc["paths"][path][method]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not documented"))
        .keys()
        .cloned()
        .collect()
}

fn assert_documented(method: &str, path: &str, status: StatusCode) {
    let listed = documented(method, path);
    assert!(
        listed.contains(&status.as_u16().to_string()),
        "{method} {path} answered {status}, which its document does not list ({listed:?})"
    );
}

fn workflow(name: &str, uses: &str) -> Value {
    json!({
        "apiVersion": "vacsine.io/v1",
        "kind": "Workflow",
        "metadata": {"name": name},
        "spec": {"steps": [{"id": "hello", "uses": uses, "with": {"argv": ["echo", "hi"]}}]}
    })
}

#[tokio::test]
async fn issue19_unauthenticated_requests_get_401_before_any_input_is_read() {
    let a = api().await;
    // A bad query string, a bad body, a bad content type: the token is judged first.
    let r = a
        .call(
            Method::GET,
            "/v1/runs?limit=many",
            false,
            None,
            Body::empty(),
        )
        .await;
    r.refusal(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_documented("get", "/v1/runs", r.status);
    let r = a
        .call(
            Method::POST,
            "/v1/sites",
            false,
            Some("text/plain"),
            "not json",
        )
        .await;
    r.refusal(StatusCode::UNAUTHORIZED, "unauthorized");
    let r = a
        .call(
            Method::GET,
            "/v1/runs/x?after=first",
            false,
            None,
            Body::empty(),
        )
        .await;
    r.refusal(StatusCode::UNAUTHORIZED, "unauthorized");
    assert_documented("get", "/v1/runs/{id}", r.status);
}

#[tokio::test]
async fn issue19_every_kind_of_rejection_is_a_json_error_body_the_document_lists() {
    let a = api().await;
    // A query string that does not parse: 400 naming the parameter.
    let r = a.get("/v1/runs?limit=many").await;
    let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("limit"), "{m}");
    assert_documented("get", "/v1/runs", r.status);
    let r = a.get("/v1/runs/x?wait_ms=-1").await;
    let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("wait_ms"), "{m}");
    assert_documented("get", "/v1/runs/{id}", r.status);
    let r = a.get("/v1/runs?status=sleeping").await;
    r.refusal(StatusCode::BAD_REQUEST, "bad_request");

    // A body that is not JSON, or not the operation's type: 400 naming the field.
    let r = a
        .call(
            Method::POST,
            "/v1/sites",
            true,
            Some("application/json"),
            "{not json",
        )
        .await;
    r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert_documented("post", "/v1/sites", r.status);
    let r = a.json(Method::POST, "/v1/sites", json!({"name": 5})).await;
    let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("`name`") && m.contains("CreateSite"), "{m}");
    let r = a
        .json(Method::POST, "/v1/runs", json!({"site": "x", "job": 3}))
        .await;
    let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("`job`"), "{m}");

    // Not sent as JSON: 415.
    let r = a
        .call(
            Method::POST,
            "/v1/sites",
            true,
            Some("text/plain"),
            r#"{"name":"a"}"#,
        )
        .await;
    r.refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_documented("post", "/v1/sites", r.status);
    let r = a
        .call(
            Method::POST,
            "/v1/registry",
            true,
            None,
            r#"{"documents":[]}"#,
        )
        .await;
    r.refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    assert_documented("post", "/v1/registry", r.status);

    // Over the operators' limit: 413, in JSON.
    let big = format!(
        r#"{{"name":"{}"}}"#,
        "a".repeat(proto::MAX_OPERATOR_BODY + 1)
    );
    let r = a
        .call(
            Method::POST,
            "/v1/sites",
            true,
            Some("application/json"),
            big,
        )
        .await;
    r.refusal(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert_documented("post", "/v1/sites", r.status);

    // A path parameter that does not decode to UTF-8.
    let r = a.get("/v1/runs/%FF/report").await;
    r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert_documented("get", "/v1/runs/{id}/report", r.status);

    // A route that does not exist, a method a route does not take.
    let r = a.get("/v1/nothing-here").await;
    let m = r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert!(m.contains("/v1/openapi.json"), "{m}");
    let r = a
        .call(Method::DELETE, "/v1/sites", true, None, Body::empty())
        .await;
    r.refusal(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let allow = r.allow.unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let r = a
        .call(Method::GET, "/v1/agent/poll", false, None, Body::empty())
        .await;
    r.refusal(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(r.allow.as_deref(), Some("POST"));

    // The handlers' own refusals: a duplicate site (409), an unknown run (404).
    let r = a
        .json(Method::POST, "/v1/sites", json!({"name": "a"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = a
        .json(Method::POST, "/v1/sites", json!({"name": "a"}))
        .await;
    r.refusal(StatusCode::CONFLICT, "conflict");
    assert_documented("post", "/v1/sites", r.status);
    let r = a.get("/v1/runs/nope").await;
    r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert_documented("get", "/v1/runs/{id}", r.status);
    let r = a.get("/v1/runs/nope/report").await;
    r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert_documented("get", "/v1/runs/{id}/report", r.status);
}

#[tokio::test]
async fn issue19_a_revocation_must_say_what_it_revokes() {
    let a = api().await;
    let r = a
        .json(Method::POST, "/v1/sites", json!({"name": "edge"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let revoked = || async {
        let r = a.get("/v1/sites").await;
        assert_eq!(r.status, StatusCode::OK);
        !r.body[0]["revoked"].is_null()
    };
    let path = "/v1/sites/edge/revoke";
    // No body at all, an empty JSON body, an empty object, `whole_site: false`, both forms:
    // each refused, and the site stays.
    let r = a.call(Method::POST, path, true, None, Body::empty()).await;
    r.refusal(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let r = a
        .call(Method::POST, path, true, Some("application/json"), "")
        .await;
    let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("empty"), "{m}");
    for body in [
        json!({}),
        json!({"whole_site": false}),
        json!({"agent": ""}),
        json!({"agent": "edge-1", "whole_site": true}),
        json!({"site": true}),
    ] {
        let r = a.json(Method::POST, path, body.clone()).await;
        let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
        assert!(
            m.contains("whole_site") || m.contains("unknown field"),
            "{body}: {m}"
        );
        assert_documented("post", "/v1/sites/{name}/revoke", r.status);
    }
    assert!(!revoked().await, "a refused revocation revoked the site");
    // An agent that is not there: 404.
    let r = a.json(Method::POST, path, json!({"agent": "edge-1"})).await;
    r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert_documented("post", "/v1/sites/{name}/revoke", r.status);
    let r = a
        .json(
            Method::POST,
            "/v1/sites/nowhere/revoke",
            json!({"whole_site": true}),
        )
        .await;
    r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert!(!revoked().await);
    // Said: done.
    let r = a
        .json(Method::POST, path, json!({"whole_site": true}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assert_eq!(r.body, json!({"revoked": true}));
    assert!(revoked().await);
}

#[tokio::test]
async fn issue19_only_a_valid_workflow_is_signed_and_queued() {
    let a = api().await;
    let r = a
        .json(Method::POST, "/v1/sites", json!({"name": "edge"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let submit = |workflow: Value| json!({"site": "edge", "job": {"workflow": workflow}});
    let cases = [
        // Any JSON value but a workflow.
        (json!(42), "`job.workflow`"),
        (json!({"anything": true}), "`job.workflow"),
        // A workflow whose step is not what its field says.
        (
            json!({"apiVersion": "vacsine.io/v1", "kind": "Workflow", "metadata": {"name": "w"},
                   "spec": {"steps": [{"id": 7, "uses": "command"}]}}),
            "job.workflow.spec.steps[0].id",
        ),
        // Well formed, but its step names no executor there is: the validator says so.
        (workflow("w", "no-such-executor"), "no-such-executor"),
    ];
    for (w, says) in cases {
        let r = a.json(Method::POST, "/v1/runs", submit(w.clone())).await;
        let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
        assert!(m.contains(says), "{w}: {m} (expected it to name {says})");
        assert_documented("post", "/v1/runs", r.status);
    }
    // A catalog entry that is not a workflow is named too.
    let r = a
        .json(
            Method::POST,
            "/v1/runs",
            json!({"site": "edge", "job": {"workflow": workflow("w", "command"), "catalog": [{"x": 1}]}}),
        )
        .await;
    let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains("job.catalog[0]"), "{m}");
    assert!(
        a.srv.store.runs(100).await.unwrap().is_empty(),
        "a refused job was queued"
    );
    // The site checks come first and are documented: unknown (404), revoked (403).
    let r = a
        .json(
            Method::POST,
            "/v1/runs",
            json!({"site": "elsewhere", "job": {"workflow": workflow("w", "command")}}),
        )
        .await;
    r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert_documented("post", "/v1/runs", r.status);
    // A valid workflow: queued, signed.
    let r = a
        .json(Method::POST, "/v1/runs", submit(workflow("w", "command")))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let id = r.body["run_id"].as_str().unwrap().to_string();
    let runs = a.srv.store.runs(100).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].id, id);
    assert_eq!(runs[0].status, crate::store::status::QUEUED);
    assert!(
        matches!(a.srv.signed_for(&id).await, Ok(Some(_))),
        "queued unsigned"
    );
    let r = a
        .json(
            Method::POST,
            "/v1/sites/edge/revoke",
            json!({"whole_site": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let r = a
        .json(Method::POST, "/v1/runs", submit(workflow("w", "command")))
        .await;
    r.refusal(StatusCode::FORBIDDEN, "revoked");
    assert_documented("post", "/v1/runs", r.status);
}

/// The document types what the operations take: a revocation is one of two forms, an image
/// is bytes, a run's status one of five names.
#[test]
fn issue19_inputs_are_typed_in_the_document() {
    let doc = super::openapi::document();
    let revoke = &doc["components"]["schemas"]["RevokeRequest"]["oneOf"];
    assert_eq!(revoke.as_array().map(Vec::len), Some(2), "{revoke}");
    assert_eq!(revoke[1]["properties"]["whole_site"]["enum"], json!([true]));
    let revoke_body = &doc["paths"]["/v1/sites/{name}/revoke"]["post"]["requestBody"];
    assert_eq!(revoke_body["required"], true, "{revoke_body}");
    let image = &doc["paths"]["/v1/images/{digest}"]["put"]["requestBody"]["content"]
        ["application/octet-stream"]["schema"];
    assert_eq!(image["type"], "string", "{image}");
    assert_eq!(image["format"], "binary", "{image}");
    let status = &doc["components"]["schemas"]["RunStatus"]["enum"];
    assert_eq!(
        status,
        &json!(["queued", "running", "succeeded", "failed", "cancelled"])
    );
    // Every operator operation lists 401 and 500, and with a JSON body 400, 413 and 415.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let listed = op["responses"].as_object().unwrap();
            if op["security"].is_array() {
                assert!(listed.contains_key("401"), "{method} {path}");
            }
            if path != proto::HELLO {
                assert!(listed.contains_key("500"), "{method} {path}");
            }
            if op["security"].is_array()
                && op["requestBody"]["content"]["application/json"].is_object()
            {
                for s in ["400", "413", "415"] {
                    assert!(listed.contains_key(s), "{method} {path} {s}");
                }
            }
        }
    }
}

/// Issue 15: the contract version travels on every sealed request. An agent naming another
/// version (or none, outside a poll: agents of protocols 1 and 2) is refused with 426 before
/// its body is read, the message naming both versions and which side to upgrade; an agent
/// operation is decoded once by its path's operation, tolerating fields it does not know.
#[tokio::test]
async fn issue15_an_agent_of_another_protocol_is_refused_naming_both_versions() {
    use vacsine_contract::client::AgentLink;
    use vacsine_wire::{Binding, Envelope, KeyPair, Opener};

    let a = api().await;
    let r = a
        .json(Method::POST, "/v1/sites", json!({"name": "edge"}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let intake = r.body["intake_key"].as_str().unwrap().to_string();
    let keys = KeyPair::generate();
    let link = AgentLink::new(
        "https://127.0.0.1:1",
        &format!("sha256:{}", "0".repeat(64)),
        keys.clone(),
        a.srv.keys.public().clone(),
    )
    .unwrap();
    // One sealed request, sent as an agent sends it but with the protocol header given.
    let send =
        |path: &'static str, protocol: Option<String>, agent: Option<String>, body: Value| {
            let mut b = Request::builder().method(Method::POST).uri(path);
            if let Some(p) = protocol {
                b = b.header(proto::PROTOCOL_HEADER, p);
            }
            if let Some(id) = agent {
                b = b.header(proto::AGENT_HEADER, id);
            }
            let req = b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap();
            let srv = a.srv.clone();
            async move {
                let r = router(srv).oneshot(req).await.unwrap();
                let status = r.status();
                let bytes = axum::body::to_bytes(r.into_body(), usize::MAX)
                    .await
                    .unwrap();
                Answer {
                    status,
                    allow: None,
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                }
            }
        };
    let this = proto::PROTOCOL.to_string();
    let says_both = |r: &Answer, theirs: &str, fix: &str| {
        let m = r
            .refusal(StatusCode::UPGRADE_REQUIRED, "protocol")
            .to_string();
        assert!(
            m.contains(&format!("speaks {theirs}"))
                && m.contains(&format!("speaks protocol {}", proto::PROTOCOL))
                && m.contains(fix),
            "{m}"
        );
        assert_documented("post", "/v1/agent/{op}", r.status);
        m
    };

    // Enrolment: a newer agent, an older one (no header), then this version.
    let enrol_body = || {
        let req = proto::EnrollRequest {
            intake_key: intake.clone(),
            name: "edge-1".into(),
            version: "test".into(),
        };
        let env = link.seal(proto::ENROLL, "edge-1", &req).unwrap();
        let body = serde_json::to_value(proto::EnrollEnvelope {
            public_key: keys.public().to_b64(),
            envelope: env.clone(),
        })
        .unwrap();
        (env, body)
    };
    let next = (proto::PROTOCOL + 1).to_string();
    let r = send(proto::ENROLL, Some(next.clone()), None, enrol_body().1).await;
    says_both(&r, &format!("protocol {next}"), "upgrade the orchestrator");
    let r = send(proto::ENROLL, None, None, enrol_body().1).await;
    says_both(&r, "protocol 2 or earlier", "upgrade the agent");
    let (env, body) = enrol_body();
    let r = send(proto::ENROLL, Some(this.clone()), None, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let answer: Envelope = serde_json::from_value(r.body).unwrap();
    let plain = Opener::default()
        .open(
            &keys,
            a.srv.keys.public(),
            Binding {
                method: "POST",
                path: proto::ENROLL,
                agent: "edge-1",
            },
            Some(&env.nonce),
            &answer,
            crate::now_ms(),
        )
        .unwrap();
    let enrolled: proto::EnrollResponse = serde_json::from_slice(&plain).unwrap();
    let id = enrolled.agent_id;

    // An older agent of this site: named, with both versions; refused before its body is
    // read (this one is not even an envelope).
    let r = send(
        proto::PING,
        Some("2".into()),
        Some(id.clone()),
        json!("not an envelope"),
    )
    .await;
    let m = says_both(&r, "protocol 2", "upgrade the agent");
    assert!(m.contains("agent edge-1 (vacsine test)"), "{m}");
    // Naming none (protocol 2 or earlier): refused once its envelope opened.
    let ping = |v: Value| link.seal(proto::PING, &id, &v).unwrap();
    let r = send(
        proto::PING,
        None,
        Some(id.clone()),
        serde_json::to_value(ping(json!({}))).unwrap(),
    )
    .await;
    let m = says_both(&r, "protocol 2 or earlier", "upgrade the agent");
    assert!(m.contains("agent edge-1 (vacsine test)"), "{m}");
    // A poll of an agent of protocol 2 (no header; its body names its version).
    let poll = link
        .seal(proto::POLL, &id, &json!({"wait_ms": 0, "protocol": 2}))
        .unwrap();
    let r = send(
        proto::POLL,
        None,
        Some(id.clone()),
        serde_json::to_value(poll).unwrap(),
    )
    .await;
    says_both(&r, "protocol 2;", "upgrade the agent");

    // This version: served, and a field it does not know (from a newer build) is ignored.
    let r = send(
        proto::PING,
        Some(this.clone()),
        Some(id.clone()),
        serde_json::to_value(ping(json!({"sent_by_a_newer_agent": [1, 2]}))).unwrap(),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    // A body that is not the operation's request is refused naming the operation.
    let bad = link.seal(proto::RENEW, &id, &json!({"runs": "x"})).unwrap();
    let r = send(
        proto::RENEW,
        Some(this.clone()),
        Some(id.clone()),
        serde_json::to_value(bad).unwrap(),
    )
    .await;
    let m = r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert!(m.contains(proto::RENEW), "{m}");
    // No such operation: 404 before anything is read.
    let r = send("/v1/agent/nothing", Some(this), Some(id), json!({})).await;
    r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert_documented("post", "/v1/agent/{op}", r.status);
}

/// Issue 17 (point 6): a pushed document's text at each version and the difference between
/// two, through the API as the console and the CLI read them.
#[tokio::test]
async fn issue17_a_document_is_shown_at_each_version_and_diffed() {
    let a = api().await;
    for uses in ["exec", "http"] {
        let r = a
            .json(
                Method::POST,
                "/v1/registry",
                json!({"documents": [{"kind": "Workflow", "name": "hello", "document": workflow("hello", uses)}]}),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    }
    for (version, uses) in [(1, "exec"), (2, "http")] {
        let r = a
            .get(&format!("/v1/registry/Workflow/hello?version={version}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        assert_eq!(r.body["version"], version);
        assert_eq!(r.body["latest"], 2);
        assert_eq!(r.body["verified"], true);
        assert_eq!(r.body["document"], workflow("hello", uses));
        assert!(r.body["sha256"].as_str().unwrap().starts_with("sha256:"));
    }
    // Without a version: the latest.
    let r = a.get("/v1/registry/Workflow/hello").await;
    assert_eq!(r.body["version"], 2, "{}", r.body);

    let r = a.get("/v1/registry/Workflow/hello/diff?from=1&to=2").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let unified = r.body["unified"].as_str().unwrap();
    assert!(
        unified.contains("\n-        \"uses\": \"exec\",\n"),
        "{unified}"
    );
    assert!(
        unified.contains("\n+        \"uses\": \"http\",\n"),
        "{unified}"
    );
    assert!(
        unified.starts_with("--- Workflow hello v1\n+++ Workflow hello v2\n"),
        "{unified}"
    );
    let changed: Vec<(&str, &str)> = r.body["lines"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["op"] != " ")
        .map(|l| {
            (
                l["op"].as_str().unwrap(),
                l["text"].as_str().unwrap().trim(),
            )
        })
        .collect();
    assert_eq!(
        changed,
        [("-", "\"uses\": \"exec\","), ("+", "\"uses\": \"http\",")]
    );

    // Unknown version or document: 404 naming where to look; a bad version: 400.
    let r = a.get("/v1/registry/Workflow/hello?version=3").await;
    let e = r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert!(
        e.contains("no version 3 of Workflow `hello`") && e.contains("vacsine registry list"),
        "{e}"
    );
    assert_documented("get", "/v1/registry/{kind}/{name}", r.status);
    let r = a.get("/v1/registry/Policy/nope").await;
    let e = r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert!(e.contains("vacsine push FILE"), "{e}");
    let r = a.get("/v1/registry/Workflow/hello/diff?from=1&to=9").await;
    r.refusal(StatusCode::NOT_FOUND, "not_found");
    assert_documented("get", "/v1/registry/{kind}/{name}/diff", r.status);
    let r = a.get("/v1/registry/Workflow/hello/diff?from=1").await;
    r.refusal(StatusCode::BAD_REQUEST, "bad_request");
    assert_documented("get", "/v1/registry/{kind}/{name}/diff", r.status);
}

/// Issue 17 (point 6): a site whose agents were all last seen long ago is cut off since
/// then; a site with an agent online is not.
#[tokio::test]
async fn issue17_a_site_says_since_when_it_is_cut_off() {
    let a = api().await;
    let now = crate::now_ms();
    let long_ago = now - 3_600_000;
    for (site, seen) in [("far", long_ago), ("near", now)] {
        a.srv
            .store
            .create_site(site, &format!("h-{site}"), 1)
            .await
            .unwrap();
        a.srv
            .store
            .enroll_agent(&crate::store::AgentRow {
                id: format!("a-{site}"),
                site: site.into(),
                name: format!("agent-{site}"),
                public_key: String::new(),
                version: "test".into(),
                enrolled_ms: 1,
                last_seen_ms: seen,
                revoked_ms: None,
            })
            .await
            .unwrap();
        a.srv
            .store
            .touch_agent(&format!("a-{site}"), seen)
            .await
            .unwrap();
    }
    for uri in ["/v1/status", "/v1/sites"] {
        let r = a.get(uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let sites = if uri == "/v1/status" {
            &r.body["sites"]
        } else {
            &r.body
        };
        let site = |n: &str| {
            sites
                .as_array()
                .unwrap_or_else(|| panic!("{uri}: {}", r.body))
                .iter()
                .find(|s| s["name"] == n)
                .unwrap()
                .clone()
        };
        assert_eq!(
            site("far")["cut_off_since"],
            crate::rfc3339(long_ago),
            "{uri}"
        );
        assert!(site("near").get("cut_off_since").is_none(), "{uri}");
    }
}

//! `http`: call an API (rustls). Status checked against `expectStatus`; body and JSON as outputs.

use super::{check_typed, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use vacsine_core::record::{bound_stream, Level};

/// Arguments of `http`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct HttpArgs {
    /// HTTP method (default `GET`).
    #[serde(default = "get")]
    method: String,
    /// `https://` or `http://` URL.
    url: String,
    /// Request headers (masked in records when they hold secrets).
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// A JSON request body (instead of `body`).
    #[serde(default)]
    json: Option<Value>,
    /// A text request body.
    #[serde(default)]
    body: Option<String>,
    /// Statuses accepted as success (default: any 2xx).
    #[serde(default)]
    expect_status: Option<Vec<u16>>,
}

fn get() -> String {
    "GET".into()
}

#[derive(Default)]
pub struct HttpExecutor {
    client: std::sync::OnceLock<reqwest::Client>,
}

#[async_trait]
impl Executor for HttpExecutor {
    fn name(&self) -> &'static str {
        "http"
    }
    fn summary(&self) -> &'static str {
        "Call an HTTP API from the engine host (rustls); the status is checked against `expectStatus`."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<HttpArgs>()
    }
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("status", "the response's status code"),
            ("body", "the response's body as text (bounded)"),
            ("json", "the body parsed as JSON, when it is JSON"),
        ]
    }
    fn idempotent(&self) -> bool {
        false
    }
    fn needs_node(&self) -> bool {
        false
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<HttpArgs>("http", args)?;
        if args.get("json").is_some() && args.get("body").is_some() {
            return Err("give either `json` or `body`, not both".into());
        }
        Ok(())
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: HttpArgs = match parse_args("http", args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        let method = match reqwest::Method::from_bytes(a.method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => return StepResult::failed(format!("invalid HTTP method `{}`", a.method)),
        };
        let url = match reqwest::Url::parse(&a.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => u,
            Ok(u) => return StepResult::failed(format!("unsupported URL scheme `{}`", u.scheme())),
            Err(e) => return StepResult::failed(format!("invalid URL `{}`: {e}", a.url)),
        };
        let client = self.client.get_or_init(|| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::limited(5))
                .build()
                .unwrap_or_default()
        });
        let mut req = client
            .request(method.clone(), url.clone())
            .timeout(ctx.timeout);
        for (k, v) in &a.headers {
            req = req.header(k, v);
        }
        if let Some(j) = &a.json {
            req = req.json(j);
        } else if let Some(b) = a.body {
            req = req.body(b);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return StepResult::timed_out(ctx.timeout),
            Err(e) => return StepResult::failed(format!("{method} {url}: {e}")),
        };
        let status = resp.status().as_u16();
        let bytes = match resp.bytes().await {
            Ok(b) => b,
            Err(e) => return StepResult::failed(format!("reading the response: {e}")),
        };
        let text = bound_stream(&bytes);
        let mut r =
            StepResult::ok(method != reqwest::Method::GET && method != reqwest::Method::HEAD)
                .msg(Level::Info, format!("{method} {url} → {status}"))
                .output("status", status)
                .output("body", text.clone());
        if let Ok(j) = serde_json::from_slice::<Value>(&bytes) {
            r.outputs.insert("json".into(), j);
        }
        r.stdout = text.into_bytes();
        let ok = match &a.expect_status {
            Some(list) => list.contains(&status),
            None => (200..300).contains(&status),
        };
        if !ok {
            r.status = vacsine_core::record::StepStatus::Failed;
            r.changed = false;
            r.error = Some(format!(
                "HTTP status {status}, expected {}",
                a.expect_status
                    .map(|l| format!("{l:?}"))
                    .unwrap_or_else(|| "2xx".into())
            ));
        }
        r
    }
}

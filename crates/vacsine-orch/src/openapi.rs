//! The orchestrator's API as an OpenAPI 3.1 document, generated from the handlers'
//! annotations and the protocol types (`utoipa`): served at `/v1/openapi.json` and kept in
//! `docs/openapi.json` (a test fails when the two differ). A child of `server`, whose
//! handlers it documents.

use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use vacsine_contract::proto;

struct OperatorAuth;

impl Modify for OperatorAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "operator",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "the operator token, made on the orchestrator's first start (operator.token in its data folder)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The refusals every operation of a kind can answer, whichever handler it reaches: the
/// operator gate (401), the JSON body reader (400, 413, 415), a path parameter that does not
/// decode (400) and the store (500). Added here, once, so that no operation forgets one; an
/// operation's own description of a status is kept.
struct CommonRefusals;

fn error_response(description: &str) -> RefOr<Response> {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build(),
        )
        .build()
        .into()
}

fn add_refusals(op: &mut Operation, uses_store: bool) {
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| error_response(description));
    };
    // Operator operations: the gate, then the JSON body reader. (The agent channel reads
    // its sealed bodies itself and documents its own refusals.)
    let operator = op.security.as_ref().is_some_and(|s| !s.is_empty());
    if operator {
        add(
            "401",
            "the operator token is missing or wrong (checked before anything else is read)",
        );
    }
    let json_body = operator
        && op
            .request_body
            .as_ref()
            .is_some_and(|b| b.content.contains_key("application/json"));
    if json_body {
        add("400", "the body is empty or not a valid request of this operation (the message names the field)");
        add(
            "413",
            "the body is larger than an operator request may be (2 MiB)",
        );
        add(
            "415",
            "the body is not sent as JSON (`content-type: application/json`)",
        );
    }
    let path_params = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Path);
    if path_params {
        add(
            "400",
            "a path parameter that is not valid UTF-8 once percent-decoded",
        );
    }
    if uses_store {
        add("500", "the store failed (the orchestrator logs why)");
    }
}

impl Modify for CommonRefusals {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        for (path, item) in doc.paths.paths.iter_mut() {
            let uses_store = path != proto::HELLO;
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                add_refusals(op, uses_store);
            }
        }
    }
}

/// The `Idempotency-Key` header of operator writes (`server/idempotency.rs`): named on every
/// POST and PUT outside the agent channel, with the answers it adds.
struct IdempotencyKey;

impl Modify for IdempotencyKey {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        use utoipa::openapi::{Ref, Required, ResponseBuilder};
        let param = ParameterBuilder::new()
            .name("Idempotency-Key")
            .parameter_in(ParameterIn::Header)
            .required(Required::False)
            .description(Some(
                "One key per submission (8 to 200 letters, digits, `-`, `_`): the write is made once per key, and a repeat (a retry after a lost answer) gets the first answer (header `idempotent-replayed: true`). Keys are kept 24 hours.",
            ))
            .schema(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[A-Za-z0-9_-]{8,200}$"))
                    .min_length(Some(8))
                    .max_length(Some(200)),
            ))
            .build();
        let answers = [
            ("400", "bad request, or an `Idempotency-Key` that is not a key"),
            ("409", "`idempotency_pending`: a request with this `Idempotency-Key` is under way, or was cut by a stop of the orchestrator (ask again later)"),
            ("422", "`idempotency_key_reused`: this `Idempotency-Key` was used for another request"),
        ];
        for (path, item) in doc.paths.paths.iter_mut() {
            if path.starts_with("/v1/agent/") {
                continue;
            }
            if let Some(op) = item.post.as_mut() {
                op.parameters
                    .get_or_insert_with(Vec::new)
                    .push(param.clone());
                for (status, text) in answers {
                    op.responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(text)
                                .content(
                                    "application/json",
                                    utoipa::openapi::ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Vacsine orchestrator",
        description = "Operators manage sites and runs with a bearer token; agents call /v1/agent/{op} with bodies sealed end to end (HPKE auth mode) on top of HTTPS.",
        license(name = "Apache-2.0")
    ),
    paths(
        super::hello,
        super::agent_call,
        super::create_site,
        super::list_sites,
        super::revoke,
        super::submit_run,
        super::list_runs,
        super::run_records,
        super::enforce_site::run_report,
        super::status_view,
        super::registry::push_documents,
        super::registry::list_registry,
        super::registry::show_document,
        super::registry::diff_documents,
        super::registry::run_pushed,
        super::images::put_image,
        super::responses::list_decisions,
        super::responses::add_decision,
        super::responses::delete_decision,
        super::responses::list_events,
        super::approvals::list_approvals,
        super::approvals::settle_approval,
        super::labels::set_labels,
        super::bouncer::add_bouncer,
        super::bouncer::list_bouncers,
        super::bouncer::delete_bouncer,
        super::console::users::add_user,
        super::console::users::list_users,
        super::console::users::revoke_user,
        super::posture::get_posture,
    ),
    components(schemas(
        proto::EnrollRequest,
        proto::EnrollResponse,
        proto::PollRequest,
        proto::PollResponse,
        proto::RenewRequest,
        proto::RenewResponse,
        proto::RecordsRequest,
        proto::RecordsResponse,
        proto::FinishRequest,
        proto::FinishResponse,
        proto::RunReport,
        proto::PingRequest,
        proto::Pong,
        proto::EnforceJob,
        proto::EnforceJobOptions,
        proto::BundleRequest,
        proto::BundleResponse,
        proto::ImageChunkRequest,
        proto::ImageChunk,
        proto::AutonomousRun,
        proto::AutonomousAccepted,
        proto::StepJob,
        proto::StepOutcome,
        proto::ErrorBody,
        proto::RunStatus,
        proto::RevokeRequest,
        proto::Revoked,
        proto::SignedDecisions,
        proto::ResponseUpload,
        proto::SiteDecision,
        proto::ResponseAccepted,
        proto::AddBouncer,
        proto::BouncerView,
        proto::BouncerCreated,
        proto::BouncerList,
        super::console::AddUser,
        super::console::UserView,
        super::console::UserCreated,
        super::console::UserList,
        super::console::UserRevoked,
        vacsine_contract::schedule::AssessmentUpload,
        vacsine_contract::schedule::AssessmentAccepted,
        vacsine_contract::schedule::Item,
        crate::posture::PostureView,
        crate::posture::SitePosture,
        crate::posture::Finding,
        crate::posture::ControlPosture,
        crate::posture::TrendPoint,
        crate::posture::ControlTrendPoint,
        crate::posture::Exposure,
    )),
    modifiers(&OperatorAuth, &IdempotencyKey, &CommonRefusals),
    tags(
        (name = "operator", description = "sites, runs and the consolidated view"),
        (name = "agent", description = "the sealed agent channel (outbound from the sites)")
    )
)]
struct ApiDoc;

/// Prefix of the components that hold the Workflow document's JSON Schema.
const WORKFLOW: &str = vacsine_contract::proto::WORKFLOW_SCHEMA;

/// The OpenAPI document, as JSON: the handlers' and protocol types' document, with the
/// Workflow document's JSON Schema (the one `vacsine schema workflow` prints, derived from
/// the same types the validator reads) as the components `Workflow` and `Workflow.*`, which
/// `Job.workflow` and `Job.catalog` refer to.
pub fn document() -> serde_json::Value {
    use serde_json::Value;
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or(Value::Null);
    let mut workflow =
        serde_json::to_value(schemars::schema_for!(vacsine_core::workflow::Workflow))
            .unwrap_or(Value::Null);
    let defs = workflow
        .as_object_mut()
        .and_then(|w| {
            w.remove("$schema");
            w.remove("$defs")
        })
        .unwrap_or_default();
    let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return doc;
    };
    rebase_refs(&mut workflow);
    schemas.insert(WORKFLOW.into(), workflow);
    if let Value::Object(defs) = defs {
        for (name, mut def) in defs {
            rebase_refs(&mut def);
            schemas.insert(format!("{WORKFLOW}.{name}"), def);
        }
    }
    doc
}

/// `#/$defs/X` (schemars) becomes `#/components/schemas/Workflow.X`, everywhere in `v`.
fn rebase_refs(v: &mut serde_json::Value) {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix("#/$defs/") {
                            *r = format!("#/components/schemas/{WORKFLOW}.{name}");
                        }
                    }
                    (_, x) => rebase_refs(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(rebase_refs),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/openapi.json` is this build's document (the orchestrator test checks the served
    /// one equals it too). `VACSINE_UPDATE_OPENAPI=1` writes it.
    #[test]
    fn the_kept_document_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
        let doc = document();
        if std::env::var_os("VACSINE_UPDATE_OPENAPI").is_some() {
            let text = serde_json::to_string_pretty(&doc).unwrap() + "\n";
            std::fs::write(path, text).unwrap();
        }
        let kept: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(
            kept == doc,
            "docs/openapi.json is stale: regenerate with `VACSINE_UPDATE_OPENAPI=1 cargo test -p vacsine-orch --lib the_kept_document_is_current`"
        );
    }

    /// Every route the router serves is documented, and nothing else.
    #[test]
    fn every_route_is_documented() {
        let json = document();
        let mut paths: Vec<&str> = json["paths"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        paths.sort();
        let mut want = vec![
            proto::HELLO,
            "/v1/agent/{op}",
            proto::OP_SITES,
            "/v1/sites/{name}/revoke",
            proto::OP_RUNS,
            "/v1/runs/{id}",
            "/v1/runs/{id}/report",
            proto::OP_STATUS,
            proto::OP_REGISTRY,
            proto::OP_REGISTRY_RUNS,
            "/v1/registry/{kind}/{name}",
            "/v1/registry/{kind}/{name}/diff",
            "/v1/images/{digest}",
            proto::OP_DECISIONS,
            "/v1/decisions/{id}",
            proto::OP_EVENTS,
            proto::OP_APPROVALS,
            "/v1/approvals/{id}",
            "/v1/sites/{name}/labels",
            proto::OP_BOUNCERS,
            "/v1/bouncers/{name}",
            crate::server::console::users::OP_USERS,
            "/v1/users/{name}/revoke",
            crate::posture::OP_POSTURE,
        ];
        want.sort();
        assert_eq!(paths, want);
        // Operator routes need the bearer token; the agent channel and hello do not.
        assert_eq!(
            json["paths"]["/v1/status"]["get"]["security"][0]["operator"],
            serde_json::json!([])
        );
        assert!(json["paths"]["/v1/hello"]["get"]["security"].is_null());
        for schema in [
            "RunView",
            "StatusView",
            "PollRequest",
            "ErrorBody",
            "SubmitRun",
            "RunReportView",
            "EnforceJob",
            "PushRequest",
            "RegistryList",
            "RegistryDocument",
            "RegistryDiff",
            "RunPushed",
            "SignedJob",
            "ImagePushed",
            "ImageChunkRequest",
            "ImageRef",
            "SignedDecisions",
            "ResponseUpload",
            "DecisionList",
            "EventList",
        ] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "{schema} missing"
            );
        }
    }

    /// `job.workflow` is typed as a Workflow (its JSON Schema among the components), and
    /// every `$ref` of the document names a component that is there.
    #[test]
    fn a_workflow_is_a_workflow_and_every_reference_resolves() {
        let doc = document();
        let job = &doc["components"]["schemas"]["Job"]["properties"];
        assert_eq!(
            job["workflow"]["anyOf"][0]["$ref"], "#/components/schemas/Workflow",
            "{job}"
        );
        assert_eq!(
            job["catalog"]["items"]["$ref"],
            "#/components/schemas/Workflow"
        );
        let wf = &doc["components"]["schemas"]["Workflow"];
        assert!(wf["properties"]["spec"].is_object(), "{wf}");
        fn refs<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a str>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, x) in m {
                        match (k.as_str(), x.as_str()) {
                            ("$ref", Some(r)) => out.push(r),
                            _ => refs(x, out),
                        }
                    }
                }
                serde_json::Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(all.len() > 20);
        for r in all {
            let name = r
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{r} is not a component reference"));
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} names no component"
            );
        }
    }

    /// `docs/openapi.json` is the document the code generates
    /// (`VACSINE_UPDATE_OPENAPI=1 cargo test -p vacsine-orch openapi` rewrites it).
    #[test]
    fn committed_document_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
        let generated = serde_json::to_string_pretty(&document()).unwrap() + "\n";
        if std::env::var("VACSINE_UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "{} is not the generated document: run VACSINE_UPDATE_OPENAPI=1 cargo test -p vacsine-orch openapi",
            path.display()
        );
    }
}

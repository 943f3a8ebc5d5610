//! The orchestrator's API as an OpenAPI 3.1 document, generated from the handlers'
//! annotations and the protocol types (`utoipa`): served at `/v1/openapi.json` and kept in
//! `docs/openapi.json` (a test fails when the two differ). A child of `server`, whose
//! handlers it documents.

use crate::proto;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

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
        super::registry::run_pushed,
        super::images::put_image,
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
    )),
    modifiers(&OperatorAuth, &CommonRefusals),
    tags(
        (name = "operator", description = "sites, runs and the consolidated view"),
        (name = "agent", description = "the sealed agent channel (outbound from the sites)")
    )
)]
struct ApiDoc;

/// The OpenAPI document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the router serves is documented, and nothing else.
    #[test]
    fn every_route_is_documented() {
        let doc = document();
        let mut paths: Vec<&str> = doc.paths.paths.keys().map(String::as_str).collect();
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
            "/v1/images/{digest}",
        ];
        want.sort();
        assert_eq!(paths, want);
        let json = serde_json::to_value(&doc).unwrap();
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
            "RunPushed",
            "SignedJob",
            "ImagePushed",
            "ImageChunkRequest",
            "ImageRef",
        ] {
            assert!(
                json["components"]["schemas"][schema].is_object(),
                "{schema} missing"
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

//! The orchestrator's API as an OpenAPI 3.1 document, generated from the handlers'
//! annotations and the protocol types (`utoipa`): served at `/v1/openapi.json` and kept in
//! `docs/openapi.json` (a test fails when the two differ). A child of `server`, whose
//! handlers it documents.

use crate::proto;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
        super::responses::list_decisions,
        super::responses::add_decision,
        super::responses::delete_decision,
        super::responses::list_events,
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
        proto::SignedDecisions,
        proto::ResponseUpload,
        proto::SiteDecision,
        proto::ResponseAccepted,
    )),
    modifiers(&OperatorAuth),
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
            proto::OP_DECISIONS,
            "/v1/decisions/{id}",
            proto::OP_EVENTS,
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

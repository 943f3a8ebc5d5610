//! Messages between agents, operators and the orchestrator (JSON; agent bodies travel sealed
//! in a [`vacsine_wire::Envelope`]). Tolerant to unknown fields.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use vacsine_core::policy::Policy;
use vacsine_core::record::{StepRecord, StepStatus};
use vacsine_core::target::Target;
use vacsine_core::workflow::Workflow;

/// Agent endpoints (POST, sealed bodies).
pub const ENROLL: &str = "/v1/agent/enroll";
pub const POLL: &str = "/v1/agent/poll";
pub const RENEW: &str = "/v1/agent/renew";
pub const RECORDS: &str = "/v1/agent/records";
pub const FINISH: &str = "/v1/agent/finish";
/// The registry bundle: every document's latest version, signed (`BundleRequest`,
/// `BundleResponse`).
pub const BUNDLE: &str = "/v1/agent/bundle";

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BundleRequest {
    /// The bundle version the agent holds (`sha256:…` of its payload): not sent again.
    #[serde(default)]
    pub have: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BundleResponse {
    /// The latest bundle (same fields as a signed job: canonical JSON payload, signature,
    /// key id), or `None` when the agent holds it already.
    pub bundle: Option<SignedJob>,
    /// Its version (`sha256:…` of the payload).
    pub version: String,
}

/// Authenticated no-op (preflight): proves the keys and that the agent is not revoked.
pub const PING: &str = "/v1/agent/ping";
/// An autonomous run (`vacsine agent run`) made by the agent, reported when its link allows
/// (`AutonomousRun` → `AutonomousAccepted`); its records and end follow as any run's.
pub const AUTONOMOUS: &str = "/v1/agent/autonomous";

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AutonomousRun {
    /// Made by the agent (a UUID).
    pub run_id: String,
    pub workflow: String,
    /// The registry versions it ran (the workflow first, then its catalog).
    pub versions: Vec<VersionRef>,
    /// The registry bundle version it came from.
    pub bundle: String,
    pub started_ms: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AutonomousAccepted {
    /// False when the run was known already (reported again): nothing changed.
    pub created: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pong {
    pub time_ms: i64,
}
/// Public, unsealed: the orchestrator's keys (authenticated by the TLS pin).
pub const HELLO: &str = "/v1/hello";

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Hello {
    /// HPKE public key of the orchestrator, base64.
    pub server_key: String,
    /// ed25519 key that signs bundles, base64.
    pub bundle_key: String,
    pub version: String,
    pub time_ms: i64,
    /// The contract version the orchestrator speaks ([`PROTOCOL`]; 1 when absent).
    #[serde(default = "protocol_1")]
    pub protocol: u32,
}

/// The enrolment request: the agent's new public key travels beside its sealed body (the
/// orchestrator does not know it yet; HPKE auth mode proves the agent holds its secret).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollEnvelope {
    pub public_key: String,
    /// The sealed envelope.
    #[schema(value_type = Object)]
    pub envelope: vacsine_wire::Envelope,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollRequest {
    pub intake_key: String,
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnrollResponse {
    pub agent_id: String,
    pub site: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PollRequest {
    pub wait_ms: u64,
    /// The contract version the agent speaks ([`PROTOCOL`]); agents made before it was
    /// carried speak 1.
    #[serde(default = "protocol_1")]
    pub protocol: u32,
    /// What the agent keeps as refused in its outbox (`vacsine agent status`); agents made
    /// before it was carried send none (then the last one reported is kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxReport>,
    /// The version of the decision set the agent holds (`""`: none yet). Absent (an agent
    /// that does not enforce decisions): no decision set is ever sent. Present: the poll
    /// also returns when the site's set differs from it, with the set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<String>,
}

impl PollRequest {
    /// A poll waiting up to `wait_ms`, in this build's protocol.
    pub fn new(wait_ms: u64) -> Self {
        PollRequest {
            wait_ms,
            protocol: PROTOCOL,
            outbox: None,
            decisions: None,
        }
    }
}

/// Items an agent's outbox keeps as refused for good (by the orchestrator, or unreadable
/// there): how many, and the oldest few ([`OUTBOX_REPORT_ITEMS`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutboxReport {
    pub refused: u64,
    #[serde(default)]
    pub oldest: Vec<RefusedItem>,
}

/// Refused items an agent names in its poll, oldest first.
pub const OUTBOX_REPORT_ITEMS: usize = 5;

/// One item an agent's outbox keeps as refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RefusedItem {
    /// The item's idempotency key.
    pub key: String,
    pub run_id: String,
    /// `record`, `finish` or `autonomous`.
    pub kind: String,
    /// When it was refused (RFC 3339).
    pub at: String,
    pub reason: String,
}

/// The version of the orchestrator–agent contract. An orchestrator serves agents of its own
/// version only, and tells any other which versions both sides speak.
/// - 1: `Work` carried an unsigned copy of the job beside the signed one.
/// - 2: `Work` carries only the signed job (agents verify before they read its kind);
///   records name the operator's run id and the agent's engine run.
/// - 3: a job is decoded as one of its kinds with its documents typed; a run's end carries
///   its report typed by kind (`{"enforce": …}` or `{"step": …}`); every sealed request
///   names its protocol in [`PROTOCOL_HEADER`].
pub const PROTOCOL: u32 = 3;

/// Header in which an agent names the contract version it speaks, on every request of the
/// sealed channel (enrolment included): one of another version is refused with 426 before
/// its body is read, naming both versions. Agents of protocols 1 and 2 sent none.
pub const PROTOCOL_HEADER: &str = "x-vacsine-protocol";

/// The operations of the sealed agent channel (`POST /v1/agent/{op}`, enrolment apart, whose
/// envelope travels beside the agent's new key): each names its path once, here, and its
/// request and answer types through [`AgentCall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentOp {
    Poll,
    Renew,
    Records,
    Finish,
    Bundle,
    Ping,
    Autonomous,
    Image,
    Responses,
    Assessments,
}

impl AgentOp {
    pub const ALL: [AgentOp; 10] = [
        AgentOp::Poll,
        AgentOp::Renew,
        AgentOp::Records,
        AgentOp::Finish,
        AgentOp::Bundle,
        AgentOp::Ping,
        AgentOp::Autonomous,
        AgentOp::Image,
        AgentOp::Responses,
        AgentOp::Assessments,
    ];

    /// The path the operation's envelopes are sealed for and sent to.
    pub fn path(self) -> &'static str {
        match self {
            AgentOp::Poll => POLL,
            AgentOp::Renew => RENEW,
            AgentOp::Records => RECORDS,
            AgentOp::Finish => FINISH,
            AgentOp::Bundle => BUNDLE,
            AgentOp::Ping => PING,
            AgentOp::Autonomous => AUTONOMOUS,
            AgentOp::Image => IMAGE,
            AgentOp::Responses => RESPONSES,
            AgentOp::Assessments => crate::schedule::ASSESSMENTS,
        }
    }

    /// The operation served at `path` (`None`: no such operation).
    pub fn from_path(path: &str) -> Option<AgentOp> {
        AgentOp::ALL.into_iter().find(|o| o.path() == path)
    }
}

/// A request of the sealed agent channel: the operation it is for and the answer it gets.
/// An agent sends it with [`crate::client::AgentLink::op`], so path, request and answer
/// cannot disagree.
pub trait AgentCall: Serialize {
    const OP: AgentOp;
    type Reply: serde::de::DeserializeOwned;
}

macro_rules! agent_calls {
    // How a request of one operation is decoded: by serde, or by its own decoder.
    (@decode $op:ident, $plain:ident, $req:ty) => {
        serde_json::from_slice::<$req>($plain).map_err(|e| DecodeError {
            code: BAD_REQUEST,
            message: format!("not a valid `{}` request ({}): {e}", $op.path(), stringify!($req)),
        })
    };
    (@decode $op:ident, $plain:ident, $req:ty, $decode:path) => {
        $decode($plain)
    };
    ($($req:ty => $op:ident, $reply:ty $(, decoded_by $decode:path)?;)*) => {
        $(impl AgentCall for $req {
            const OP: AgentOp = AgentOp::$op;
            type Reply = $reply;
        })*

        /// A sealed agent request, decoded once from its opened plaintext by the operation
        /// its path names: the server then matches on this, never on a path string.
        #[derive(Debug, Clone)]
        pub enum AgentRequest {
            $($op($req),)*
        }

        impl AgentRequest {
            /// Decode the plaintext of an opened envelope sent for `op`. Unknown fields are
            /// ignored; the error names the operation (or the record) and what is wrong.
            pub fn decode(op: AgentOp, plain: &[u8]) -> Result<AgentRequest, DecodeError> {
                match op {
                    $(AgentOp::$op => agent_calls!(@decode op, plain, $req $(, $decode)?)
                        .map(AgentRequest::$op),)*
                }
            }
        }
    };
}

/// Error code of a request that is not a valid request of its operation.
pub const BAD_REQUEST: &str = "bad_request";

/// Why a sealed agent request was refused as it was decoded: its error code
/// ([`BAD_REQUEST`], or [`BAD_RECORD`] for a records upload holding a record that is not a
/// step record) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub code: &'static str,
    pub message: String,
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

agent_calls! {
    PollRequest => Poll, PollResponse;
    RenewRequest => Renew, RenewResponse;
    RecordsRequest => Records, RecordsResponse, decoded_by RecordsRequest::decode;
    FinishRequest => Finish, FinishResponse;
    BundleRequest => Bundle, BundleResponse;
    PingRequest => Ping, Pong;
    AutonomousRun => Autonomous, AutonomousAccepted;
    ImageChunkRequest => Image, ImageChunk;
    ResponseUpload => Responses, ResponseAccepted;
    crate::schedule::AssessmentUpload => Assessments, crate::schedule::AssessmentAccepted;
}

/// `ping`: no fields (preflight's authenticated no-op).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PingRequest {}

fn protocol_1() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PollResponse {
    pub work: Option<Work>,
    /// The decisions active for the agent's site, signed, when they differ from the version
    /// the poll named (see `vacsine_orch::decisions`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decisions: Option<SignedDecisions>,
}

/// The decision set of a site, signed by the orchestrator's bundle key: `signed.payload` is
/// the canonical JSON of `{format, site, version, active, deleted, signed_ms}`; the agent
/// verifies it with the key pinned at enrolment before it acts on any of it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SignedDecisions {
    /// `sha256:…` of the active decisions (ids and expiries) and the deleted ids.
    pub version: String,
    pub signed: SignedJob,
}

/// Events and decisions made at a site (`vacsine agent ingest`), uploaded from the agent's
/// outbox (`ResponseUpload` → `ResponseAccepted`). Each is kept once: an event by its
/// content id, a decision by its id, its application at a site by (id, site).
pub const RESPONSES: &str = "/v1/agent/responses";

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResponseUpload {
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<vacsine_events::Event>,
    #[serde(default)]
    pub decisions: Vec<SiteDecision>,
}

/// A decision as a site holds it: made there (its origin names the site) or received from
/// the orchestrator, with its times.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteDecision {
    #[schema(value_type = Object)]
    pub decision: vacsine_response::Decision,
    /// When the event that caused it happened (ms since the epoch).
    #[serde(default)]
    pub event_ms: Option<i64>,
    /// When it was decided.
    pub decided_ms: i64,
    /// When it was in effect at the uploading site.
    #[serde(default)]
    pub applied_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResponseAccepted {
    /// Events not known before.
    pub events_new: usize,
    /// Decisions not known before.
    pub decisions_new: usize,
}

/// Operator endpoints of decisions and events.
pub const OP_DECISIONS: &str = "/v1/decisions";
pub const OP_EVENTS: &str = "/v1/events";

/// `POST /v1/decisions`: ban an address or network by hand.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddDecision {
    /// An IPv4 or IPv6 address, or a network (`198.51.100.0/24`).
    pub ip: String,
    /// How long: a number and `s`, `m`, `h` or `d` (`4h`).
    #[serde(rename = "for")]
    pub duration: String,
    /// Sites it applies at (empty: every site).
    #[serde(default)]
    pub sites: Vec<String>,
    /// Why (shown with the decision).
    #[serde(default)]
    pub reason: Option<String>,
}

/// A decision as the orchestrator holds it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionView {
    pub id: String,
    /// `ban 203.0.113.9`.
    pub action: String,
    #[schema(value_type = Object)]
    pub decision: vacsine_response::Decision,
    /// `active`, `expired`, `deleted`, or `unsigned`: not signed by this orchestrator when
    /// it was made (written into the store by hand, altered, or older than signed
    /// decisions): no site and no bouncer acts on it.
    pub state: String,
    /// Why an `unsigned` decision is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Sites it applies at (empty: every site).
    pub scope: Vec<String>,
    /// The site that decided (`None`: the orchestrator or an operator).
    pub origin_site: Option<String>,
    /// Time to mitigate: when the event happened, when it was decided, when it was in effect
    /// at each site (RFC 3339).
    pub event_at: Option<String>,
    pub decided_at: String,
    pub applied: std::collections::BTreeMap<String, String>,
    /// Milliseconds from the event (or the decision) to the ban in effect, per site.
    pub mitigated_ms: std::collections::BTreeMap<String, i64>,
    pub expires_at: Option<String>,
    pub deleted_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DecisionList {
    pub decisions: Vec<DecisionView>,
}

/// Operator endpoint of approvals (`GET`; `POST /v1/approvals/{id}` settles one).
pub const OP_APPROVALS: &str = "/v1/approvals";

/// What waits for approval: a decision (quarantine) or a workflow run.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Held {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub decision: Option<vacsine_response::Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub run: Option<vacsine_response::WorkflowRun>,
}

/// `POST /v1/approvals/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Settle {
    /// `approve` or `deny`.
    pub decision: String,
}

/// A decision or workflow run waiting for (or settled by) an operator.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalView {
    pub id: String,
    /// `quarantine node "web"` or `run workflow NAME`.
    pub what: String,
    pub response: String,
    /// The site whose event asked for it.
    pub site: String,
    /// Sites a decision applies at once approved (empty: every site).
    pub scope: Vec<String>,
    /// `awaiting`, `expired`, `approved` or `denied`.
    pub state: String,
    /// Why an `unsigned` approval is refused (not signed by the orchestrator when the
    /// Response asked for it: written into the store by hand, or altered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    pub event_at: Option<String>,
    pub requested_at: String,
    pub expires_at: String,
    pub settled_at: Option<String>,
    pub held: Held,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApprovalList {
    pub approvals: Vec<ApprovalView>,
}

/// An event an agent uploaded.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventView {
    pub site: String,
    pub received_at: String,
    #[schema(value_type = Object)]
    pub event: vacsine_events::Event,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EventList {
    pub events: Vec<EventView>,
}

/// A run leased to an agent: only its signed job, which the agent verifies before it reads
/// what the job asks for (there is no unsigned copy to act on by mistake).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Work {
    pub run_id: String,
    pub lease_ttl_ms: i64,
    /// The job signed by the orchestrator's bundle key when the run was submitted
    /// (`None` for a run queued by an orchestrator that did not sign: agents refuse it).
    #[serde(default)]
    pub signed: Option<SignedJob>,
}

/// A job signed by the orchestrator (see `vacsine_orch::bundle`): `payload` is the canonical
/// JSON of `{format, run_id, site, job, signed_ms}`, `signature` its ed25519 signature
/// (base64, domain separated), `key_id` the first 16 hex digits of the SHA-256 of the
/// verifying key (base64 text) that agents pinned at enrolment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SignedJob {
    pub payload: String,
    pub signature: String,
    pub key_id: String,
}

/// A document of the registry a job carries: `kind` (`Policy` or `Workflow`), name, version
/// (1, 2, …) and the SHA-256 of its content.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct VersionRef {
    pub kind: String,
    pub name: String,
    pub version: i64,
    pub sha256: String,
}

/// What a job asks an agent to do: one of its kinds, each carrying its real documents
/// (decoded and checked once, when the job is read: an operator's submission, or the signed
/// bytes an agent verified). The kind is decided from the fields present, never guessed
/// later: a job is a workflow, an enforce or one step, and one that is several or none is
/// refused when decoded.
///
/// On the wire a job keeps the shape operators always sent (`workflow`, `catalog`,
/// `inputs`, `enforce`, `versions`, `images`, `step`: see [`JobFields`]), so a submission
/// and a signed payload read the same; unknown fields are ignored.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "JobFields", into = "JobFields")]
pub enum Job {
    /// A workflow run at the site (or, with steps naming sites, driven by the orchestrator).
    Workflow(Box<WorkflowJob>),
    /// Job 1 at a site (`vacsine enforce --site`): a policy enforced on a target of the site.
    Enforce(Box<EnforceWork>),
    /// One step of a run the orchestrator drives across sites (made by the orchestrator).
    Step(StepWork),
}

/// A workflow job: the workflow, the catalog workflows it may call, its input values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkflowJob {
    pub workflow: Workflow,
    /// The Workflow documents `workflow` may call.
    pub catalog: Vec<Workflow>,
    /// Input values (strings are typed by the engine from the declarations): open, since
    /// their types are the workflow's own declarations, checked when the job is submitted.
    pub inputs: Map<String, Value>,
    /// The registry versions of the workflow and catalog (empty for files sent as they are).
    pub versions: Vec<VersionRef>,
    /// The action images of its `container` steps, resolved by the orchestrator at
    /// submission: the only images the agent may run for it.
    pub images: Vec<ImageRef>,
}

/// An enforce job: the policy, the target and the catalog of fixes the policy may use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnforceWork {
    pub enforce: EnforceJob,
    /// The Workflow documents the policy's fixes may use.
    pub catalog: Vec<Workflow>,
    /// The registry versions of the policy and catalog (empty for files sent as they are).
    pub versions: Vec<VersionRef>,
}

/// One step of a run spanning sites, with the image it may run (a `container` step).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepWork {
    pub step: StepJob,
    pub images: Vec<ImageRef>,
}

/// The kinds of [`Job`], by name (`workflow`, `enforce`, `step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Workflow,
    Enforce,
    Step,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Workflow => "workflow",
            JobKind::Enforce => "enforce",
            JobKind::Step => "step",
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Job {
    /// A workflow job without registry versions or images.
    pub fn workflow(workflow: Workflow, catalog: Vec<Workflow>, inputs: Map<String, Value>) -> Job {
        Job::Workflow(Box::new(WorkflowJob {
            workflow,
            catalog,
            inputs,
            versions: vec![],
            images: vec![],
        }))
    }

    pub fn kind(&self) -> JobKind {
        match self {
            Job::Workflow(_) => JobKind::Workflow,
            Job::Enforce(_) => JobKind::Enforce,
            Job::Step(_) => JobKind::Step,
        }
    }

    /// The registry versions the job carries (empty for a step, or files sent as they are).
    pub fn versions(&self) -> &[VersionRef] {
        match self {
            Job::Workflow(w) => &w.versions,
            Job::Enforce(e) => &e.versions,
            Job::Step(_) => &[],
        }
    }

    /// The action images the job may run.
    pub fn images(&self) -> &[ImageRef] {
        match self {
            Job::Workflow(w) => &w.images,
            Job::Step(s) => &s.images,
            Job::Enforce(_) => &[],
        }
    }
}

/// A job: a workflow (`workflow`, `catalog`, `inputs`), an enforce (`enforce`, `catalog`) or
/// one step (`step`, made by the orchestrator for runs spanning sites). Which one is said by
/// the fields given: a job that is several or none is refused. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Job)]
pub struct JobFields {
    /// A Workflow document (`kind: Workflow`) as JSON, as `vacsine validate` reads it in
    /// YAML: the orchestrator refuses (400, naming the field or step) one its validator
    /// refuses, before anything is signed or queued. Null for an enforce or step job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = workflow_or_null)]
    pub workflow: Option<Workflow>,
    /// The Workflow documents `workflow` (or the enforced policy's fixes) may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(schema_with = workflows_schema)]
    pub catalog: Vec<Workflow>,
    /// The workflow's input values: open, typed by the workflow's own declarations.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub inputs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforce: Option<EnforceJob>,
    /// The registry versions of the workflow and catalog (empty for files sent as they are).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<VersionRef>,
    /// The action images of the `container` steps of the workflow and its catalog, resolved
    /// by the orchestrator at submission (what an operator sends here is replaced): the
    /// agent fetches each archive over the sealed channel and runs only these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageRef>,
    /// One step of a run the orchestrator drives across sites (then `workflow` is null): the
    /// agent runs this step's executor, or its undo, and reports the outcome.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<StepJob>,
}

impl TryFrom<JobFields> for Job {
    type Error = String;
    fn try_from(f: JobFields) -> Result<Job, String> {
        match (f.workflow, f.enforce, f.step) {
            (Some(workflow), None, None) => Ok(Job::Workflow(Box::new(WorkflowJob {
                workflow,
                catalog: f.catalog,
                inputs: f.inputs,
                versions: f.versions,
                images: f.images,
            }))),
            (None, Some(enforce), None) => {
                if !f.inputs.is_empty() {
                    return Err("an enforce job takes no inputs".into());
                }
                Ok(Job::Enforce(Box::new(EnforceWork {
                    enforce,
                    catalog: f.catalog,
                    versions: f.versions,
                })))
            }
            (None, None, Some(step)) => {
                if !f.catalog.is_empty() || !f.inputs.is_empty() {
                    return Err("a step job carries no catalog nor inputs".into());
                }
                Ok(Job::Step(StepWork {
                    step,
                    images: f.images,
                }))
            }
            (None, None, None) => {
                Err("the job has no workflow (nor an enforce): give `job.workflow`".into())
            }
            _ => Err(
                "a job is one of a workflow, an enforce or a step, not several: give one of `workflow`, `enforce`, `step`"
                    .into(),
            ),
        }
    }
}

impl From<Job> for JobFields {
    fn from(j: Job) -> JobFields {
        match j {
            Job::Workflow(w) => JobFields {
                workflow: Some(w.workflow),
                catalog: w.catalog,
                inputs: w.inputs,
                versions: w.versions,
                images: w.images,
                ..Default::default()
            },
            Job::Enforce(e) => JobFields {
                enforce: Some(e.enforce),
                catalog: e.catalog,
                versions: e.versions,
                ..Default::default()
            },
            Job::Step(s) => JobFields {
                step: Some(s.step),
                images: s.images,
                ..Default::default()
            },
        }
    }
}

impl utoipa::PartialSchema for Job {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        <JobFields as utoipa::PartialSchema>::schema()
    }
}

impl utoipa::ToSchema for Job {
    fn name() -> std::borrow::Cow<'static, str> {
        "Job".into()
    }
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        <JobFields as utoipa::ToSchema>::schemas(schemas)
    }
}

/// One step of a run spanning sites, as the orchestrator dispatches it to the site's agent.
/// Its arguments are already rendered (templates were evaluated by the orchestrator's engine):
/// the agent hands them to the executor as data, never to a template engine or a shell.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StepJob {
    /// The run spanning sites this step belongs to.
    pub parent_run: String,
    pub step_id: String,
    pub attempt: u32,
    /// The executor (`command`, `file`, `firewall`…).
    pub executor: String,
    /// The step's rendered `with`: open, since each executor takes its own arguments (it
    /// checks them itself, `check_args`).
    #[serde(default)]
    pub args: Value,
    pub timeout_ms: u64,
    /// When present: undo a change this step made, with the prior state it captured
    /// (opaque: read only by the executor that captured it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub undo: Option<Value>,
}

/// What a step dispatched to a site did (the agent's `finish` report of a step job).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct StepOutcome {
    /// `succeeded`, `failed`, `timed_out`, `cancelled`, `interrupted`. A status this build
    /// does not know (an agent of a later build) reads as `failed`: the step is not taken
    /// as done.
    #[serde(deserialize_with = "step_status_or_failed")]
    #[schema(value_type = StepStatusSchema)]
    pub status: StepStatus,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub stdout: String,
    #[serde(default)]
    pub stderr: String,
    #[serde(default)]
    pub changed: bool,
    #[serde(default)]
    #[schema(value_type = Vec<MessageSchema>)]
    pub messages: Vec<vacsine_core::record::Message>,
    /// The step's outputs, as its executor made them (open: each executor names its own).
    #[serde(default)]
    pub outputs: Map<String, Value>,
    /// Prior state captured before the change (to undo it later), when `changed`: opaque,
    /// read only by the executor that made it, when it undoes the change.
    #[serde(default)]
    pub undo: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    /// When the step started at the site and how long it ran there (agents of protocol 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<RanSchema>)]
    pub ran: Option<vacsine_core::record::Ran>,
}

impl StepOutcome {
    /// An outcome of `status` and nothing else yet.
    pub fn new(status: StepStatus) -> StepOutcome {
        StepOutcome {
            status,
            exit_code: None,
            stdout: String::new(),
            stderr: String::new(),
            changed: false,
            messages: Vec::new(),
            outputs: Map::new(),
            undo: None,
            error: None,
            ran: None,
        }
    }
}

/// A step status by its name; one this build does not know is `failed`.
fn step_status_or_failed<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StepStatus, D::Error> {
    let name = std::borrow::Cow::<str>::deserialize(d)?;
    Ok(StepStatus::parse(&name).unwrap_or(StepStatus::Failed))
}

/// An action image a job may run: the reference its steps name, the SHA-256 of the image
/// archive (`docker save`) pushed with `vacsine push image`, and the archive's size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ImageRef {
    pub name: String,
    /// `sha256:<hex>` of the archive.
    pub digest: String,
    pub size: u64,
}

/// A chunk of an image archive listed in a run this agent holds (`ImageChunkRequest`,
/// `ImageChunk`).
pub const IMAGE: &str = "/v1/agent/image";

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageChunkRequest {
    /// The run (leased to this agent) whose signed job lists the image.
    pub run_id: String,
    pub digest: String,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImageChunk {
    /// Bytes from `offset`, base64 (empty at the end).
    pub data: String,
    /// The archive's size.
    pub total: u64,
}

/// Upload an image archive (operator): `PUT /v1/images/{digest}?name=REF`, the body the
/// archive itself.
pub const OP_IMAGES: &str = "/v1/images";

/// An image archive kept by the orchestrator and its registry entry (kind `Image`).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImagePushed {
    pub name: String,
    pub digest: String,
    pub size: u64,
    pub version: i64,
    /// Whether this push made the version (`false`: already the latest).
    pub created: bool,
}

/// Job 1 at a site (`vacsine enforce --site`): the agent resolves the target with its own
/// driver and runs the whole pipeline (sandbox, verify, apply, verify, roll back).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct EnforceJob {
    /// The policy (kind: Policy, as JSON; SCAP imports already expanded).
    #[schema(value_type = Object)]
    pub policy: Policy,
    /// The target system description (kind: Target, as JSON).
    #[schema(value_type = Object)]
    pub target: Target,
    #[serde(default)]
    pub options: EnforceJobOptions,
}

/// The switches of `vacsine enforce` that travel with the job.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct EnforceJobOptions {
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub require_persistent: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenewRequest {
    pub runs: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RenewResponse {
    /// Runs whose leases were renewed; the others are no longer this agent's.
    pub held: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KeyedRecord {
    /// Idempotency key: unique per step attempt.
    pub key: String,
    #[schema(value_type = StepRecordSchema)]
    pub record: StepRecord,
}

/// The idempotency key of a step record (`run/step/attempt/node`): unique per step attempt,
/// the same at every retry of its upload.
pub fn record_key(r: &StepRecord) -> String {
    format!(
        "{}/{}/{}/{}",
        r.run_id,
        r.step_id,
        r.attempt,
        r.node.as_deref().unwrap_or("-")
    )
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordsRequest {
    pub run_id: String,
    pub records: Vec<KeyedRecord>,
}

impl RecordsRequest {
    /// Decode a records upload, each record on its own: one that is not a step record is
    /// refused with [`BAD_RECORD`], naming its key and run (the agent then sends the others
    /// without it), not as a malformed request.
    pub fn decode(plain: &[u8]) -> Result<RecordsRequest, DecodeError> {
        #[derive(Deserialize)]
        struct Raw {
            run_id: String,
            records: Vec<RawRecord>,
        }
        #[derive(Deserialize)]
        struct RawRecord {
            key: String,
            // Still open here only so that a record that is not a step record is named.
            record: Value,
        }
        let raw: Raw = serde_json::from_slice(plain).map_err(|e| DecodeError {
            code: BAD_REQUEST,
            message: format!(
                "not a valid `{}` request (RecordsRequest): {e}",
                AgentOp::Records.path()
            ),
        })?;
        let records = raw
            .records
            .into_iter()
            .map(|k| match StepRecord::deserialize(k.record) {
                Ok(record) => Ok(KeyedRecord { key: k.key, record }),
                Err(e) => Err(DecodeError {
                    code: BAD_RECORD,
                    message: format!(
                        "record `{}` of run `{}` is not a step record: {e}",
                        k.key, raw.run_id
                    ),
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(RecordsRequest {
            run_id: raw.run_id,
            records,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecordsResponse {
    pub stored: usize,
    pub duplicates: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FinishRequest {
    pub run_id: String,
    /// A final status: `succeeded`, `failed` or `cancelled`.
    #[schema(value_type = String)]
    pub status: vacsine_core::status::RunStatus,
    #[serde(default)]
    pub message: Option<String>,
    /// What the run produced, by its job's kind: an enforce job's report, a step job's
    /// outcome (a workflow job's records travel on their own: none). The orchestrator
    /// refuses a report of another kind than the run's job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
}

/// What a run produced, typed by its job's kind (`{"enforce": REPORT}` or
/// `{"step": OUTCOME}` on the wire).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunReport {
    /// The report of an enforce job (`vacsine enforce --format json`'s document).
    Enforce(Box<vacsine_enforce::Report>),
    /// What the step of a step job did: the confirmation the orchestrator waits for.
    Step(Box<StepOutcome>),
}

impl utoipa::PartialSchema for RunReport {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        // Written out: the enforce report has no schema of its own in this document.
        let v = serde_json::json!({
            "description": "What a run produced, by its job's kind: an enforce job's report, or a step job's outcome.",
            "oneOf": [
                {
                    "type": "object",
                    "title": "enforce",
                    "required": ["enforce"],
                    "properties": {"enforce": {"type": "object", "description": "the enforce report (`vacsine enforce --format json`'s document)"}}
                },
                {
                    "type": "object",
                    "title": "step",
                    "required": ["step"],
                    "properties": {"step": {"$ref": "#/components/schemas/StepOutcome"}}
                }
            ]
        });
        serde_json::from_value(v).unwrap_or_else(|e| unreachable!("RunReport schema: {e}"))
    }
}

impl utoipa::ToSchema for RunReport {
    fn schemas(
        schemas: &mut Vec<(
            String,
            utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
        )>,
    ) {
        schemas.push((
            "StepOutcome".into(),
            <StepOutcome as utoipa::PartialSchema>::schema(),
        ));
        <StepOutcome as utoipa::ToSchema>::schemas(schemas);
    }
}

impl RunReport {
    /// The kind of job that makes this report.
    pub fn kind(&self) -> JobKind {
        match self {
            RunReport::Enforce(_) => JobKind::Enforce,
            RunReport::Step(_) => JobKind::Step,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FinishResponse {
    pub accepted: bool,
}

/// Error body of every refusal.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Short machine name: `replay`, `stale`, `tampered`, `wrong_sender`, `misbound`,
    /// `unknown_agent`, `revoked`, `bad_intake_key`, `unauthorized`, `not_found`, `conflict`,
    /// `forbidden`, `bad_request`, `bad_record`, `too_large`, `unsupported_media_type`,
    /// `method_not_allowed`, `protocol`, `busy`, `unverified_document`, `internal`.
    pub code: String,
    pub error: String,
}

// Operator endpoints (bearer token).
pub const OP_SITES: &str = "/v1/sites";
pub const OP_RUNS: &str = "/v1/runs";
pub const OP_STATUS: &str = "/v1/status";

/// The registry of pushed policies and workflows (operator).
pub const OP_REGISTRY: &str = "/v1/registry";
/// Run a pushed workflow at a site (operator).
pub const OP_REGISTRY_RUNS: &str = "/v1/registry/runs";

/// A document pushed into the registry: `kind` `Policy` or `Workflow`, its
/// `metadata.name`, and the document as JSON (as `vacsine` parsed it from YAML).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushDocument {
    #[schema(pattern = "^(Policy|Workflow)$")]
    pub kind: String,
    /// 1 to 64 letters, digits, `-`, `_` or `.`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// The document as pushed: open, since its type is said by `kind` (the orchestrator
    /// reads it as that kind and refuses one that is not), and it is kept, hashed and
    /// signed as pushed.
    pub document: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PushRequest {
    pub documents: Vec<PushDocument>,
}

/// A version in the registry.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryEntry {
    pub kind: String,
    pub name: String,
    pub version: i64,
    /// `sha256:<hex>` of the document's canonical JSON.
    pub sha256: String,
    pub pushed: String,
    /// In a push's answer: whether this push made the version (`false`: the content was
    /// already the latest version).
    #[serde(default)]
    pub created: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryList {
    pub entries: Vec<RegistryEntry>,
}

/// One version of a registry document, as pushed.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryDocument {
    pub kind: String,
    pub name: String,
    pub version: i64,
    /// The latest version of the document.
    pub latest: i64,
    /// `sha256:<hex>` of the document's canonical JSON.
    pub sha256: String,
    pub pushed: String,
    /// Whether the document in the store is what its signature made at push names (`false`:
    /// altered in the store, or pushed before documents were signed: push it again).
    pub verified: bool,
    /// The document (its canonical JSON, as pushed): open, since its type is said by
    /// `kind`, and it is shown as the store holds it (`verified` says whether it was
    /// altered there).
    #[schema(value_type = Object)]
    pub document: serde_json::Value,
}

/// The query of `GET /v1/registry/{kind}/{name}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct VersionQuery {
    /// The version (the latest when absent).
    #[serde(default)]
    pub version: Option<i64>,
}

/// The query of `GET /v1/registry/{kind}/{name}/diff`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiffQuery {
    /// The older version.
    pub from: i64,
    /// The newer version.
    pub to: i64,
}

/// One line of a diff: `op` is `+` (in `to` only), `-` (in `from` only) or ` ` (in both).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DiffLine {
    pub op: String,
    /// The line, without its end of line.
    pub text: String,
}

/// The difference between two versions of a registry document, line by line, of their
/// pretty-printed JSON.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RegistryDiff {
    pub kind: String,
    pub name: String,
    pub from: i64,
    pub to: i64,
    /// The unified diff (`--- Kind name vFROM`, `+++ Kind name vTO`, hunks with 3 lines of context).
    pub unified: String,
    /// Every line of both versions, in order.
    pub lines: Vec<DiffLine>,
}

/// An integer JSON may write `3` or `3.0` (both are JSON Schema integers).
fn whole_i64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    n.as_i64()
        .or_else(|| {
            // Exactly representable, whole, in range: the integer it writes.
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && (-9.0e18..9.0e18).contains(f))
                .map(|f| f as i64)
        })
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected an integer, found {n}")))
}

/// Run a pushed workflow (its latest version, or `version`) at a site; the catalog is the
/// latest version of every other pushed workflow.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunPushed {
    pub name: String,
    #[serde(default, deserialize_with = "whole_i64")]
    pub version: Option<i64>,
    pub site: String,
    /// The workflow's input values: open, typed by the workflow's own declarations.
    #[serde(default)]
    pub inputs: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateSite {
    /// 1 to 64 letters, digits, `-`, `_` or `.`.
    #[schema(pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub name: String,
    /// Labels the site carries (a Response's `scope.labels` matches them).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/sites/{name}/labels` (and its answer: `set` holds every label of the site).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SiteLabels {
    /// Labels added or replaced.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Keys removed.
    #[serde(default)]
    pub remove: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteCreated {
    pub name: String,
    pub intake_key: String,
}

/// What `POST /v1/sites/{name}/revoke` revokes, always said: one agent of the site
/// (`{"agent": "edge-1"}`), or the whole site, its intake key and every agent
/// (`{"whole_site": true}`). Anything else is refused: a missing or empty body never
/// revokes a site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RevokeFields", into = "RevokeFields")]
pub enum RevokeRequest {
    /// One agent of the site, by name.
    Agent(String),
    /// The whole site: its intake key and every agent.
    WholeSite,
}

/// [`RevokeRequest`] on the wire.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whole_site: Option<bool>,
}

impl TryFrom<RevokeFields> for RevokeRequest {
    type Error = String;
    fn try_from(f: RevokeFields) -> Result<Self, String> {
        const HOW: &str = "give `{\"agent\": NAME}` to revoke one agent, or `{\"whole_site\": true}` to revoke the site, its intake key and every agent";
        match (f.agent, f.whole_site) {
            (Some(_), Some(true)) => Err(format!("`agent` and `whole_site` both given: {HOW}")),
            (Some(a), _) if a.is_empty() => Err(format!("`agent` is empty: {HOW}")),
            (Some(a), _) => Ok(RevokeRequest::Agent(a)),
            (None, Some(true)) => Ok(RevokeRequest::WholeSite),
            (None, Some(false)) => Err(format!(
                "`whole_site` is false and no `agent` is given: {HOW}"
            )),
            (None, None) => Err(format!("nothing to revoke: {HOW}")),
        }
    }
}

impl From<RevokeRequest> for RevokeFields {
    fn from(r: RevokeRequest) -> Self {
        match r {
            RevokeRequest::Agent(a) => RevokeFields {
                agent: Some(a),
                whole_site: None,
            },
            RevokeRequest::WholeSite => RevokeFields {
                agent: None,
                whole_site: Some(true),
            },
        }
    }
}

impl utoipa::PartialSchema for RevokeRequest {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        // Exactly one of the two forms; written out because no derive says "this field, or
        // that one set to true".
        let v = serde_json::json!({
            "description": "One agent of the site, or the whole site (its intake key and every agent): always said.",
            "oneOf": [
                {
                    "type": "object",
                    "title": "one agent",
                    "required": ["agent"],
                    "properties": {
                        "agent": {"type": "string", "minLength": 1, "description": "the agent's name"},
                        "whole_site": {"type": "boolean", "enum": [false]}
                    },
                    "additionalProperties": false
                },
                {
                    "type": "object",
                    "title": "the whole site",
                    "required": ["whole_site"],
                    "properties": {
                        "whole_site": {"type": "boolean", "enum": [true]}
                    },
                    "additionalProperties": false
                }
            ]
        });
        serde_json::from_value(v).unwrap_or_else(|e| unreachable!("RevokeRequest schema: {e}"))
    }
}

impl utoipa::ToSchema for RevokeRequest {}

/// The answer to a revocation.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Revoked {
    /// Always `true`.
    pub revoked: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitRun {
    pub site: String,
    pub job: Job,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunCreated {
    pub run_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SiteView {
    pub name: String,
    pub created: String,
    pub revoked: Option<String>,
    /// Outbox items the site's agents keep as refused, as they last reported them (each
    /// agent's `outbox` in the status names the oldest).
    #[serde(default)]
    pub refused_outbox_items: u64,
    /// The site's labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When the site was cut off: the last time one of its agents was seen, when none is
    /// online now (absent while one is, when it has no agent, or when the site is revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_off_since: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AgentView {
    pub id: String,
    pub site: String,
    pub name: String,
    pub version: String,
    /// `online`, `offline` or `revoked`.
    pub state: String,
    pub last_seen: String,
    pub enrolled: String,
    /// When the latest autonomous run it reported (`vacsine agent run`, e.g. while cut off)
    /// started, among the recent runs; `None`: none.
    #[serde(default)]
    pub last_autonomous: Option<String>,
    /// What its outbox keeps as refused, as it last reported it (`None`: never reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbox: Option<OutboxReport>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    pub id: String,
    pub site: String,
    pub workflow: String,
    pub status: String,
    pub agent: Option<String>,
    pub offers: i64,
    pub created: String,
    pub started: Option<String>,
    pub finished: Option<String>,
    pub lease_expires: Option<String>,
    pub message: Option<String>,
    pub records: i64,
    /// The end the run's agent reported after the orchestrator had ended the run without it
    /// (its lease lost while the site was cut off): shown beside `status`, never in its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site_outcome: Option<SiteOutcomeView>,
}

/// An end a site reported late (see [`RunView::site_outcome`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct SiteOutcomeView {
    /// The status the site's agent gave the run.
    pub status: String,
    pub message: Option<String>,
    /// When it reached the orchestrator (RFC 3339).
    pub reported: String,
}

impl RunView {
    /// The run's message, followed by the site's own late end when there is one: what a
    /// person reads beside the status.
    pub fn message_line(&self) -> String {
        let mut m = self.message.clone().unwrap_or_default();
        if let Some(o) = &self.site_outcome {
            if !m.is_empty() {
                m.push_str("; ");
            }
            m.push_str(&format!(
                "the site's own end, received {} after the orchestrator had ended the run: {}{}",
                o.reported,
                o.status,
                o.message
                    .as_deref()
                    .map(|x| format!(" ({x})"))
                    .unwrap_or_default()
            ));
        }
        m
    }
}

/// A run's status, as `GET /v1/runs?status=` takes it and run views show it: the statuses of
/// the core's one [`vacsine_core::status::RunStatus`] a run in the orchestrator's queue can
/// have (its schema for the API document; converted, never spelled again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl From<RunStatus> for vacsine_core::status::RunStatus {
    fn from(s: RunStatus) -> Self {
        use vacsine_core::status::RunStatus as Core;
        match s {
            RunStatus::Queued => Core::Queued,
            RunStatus::Running => Core::Running,
            RunStatus::Succeeded => Core::Succeeded,
            RunStatus::Failed => Core::Failed,
            RunStatus::Cancelled => Core::Cancelled,
        }
    }
}

#[cfg(test)]
mod contract_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_agent_operation_has_one_path_and_paths_name_one_operation() {
        let mut paths = std::collections::BTreeSet::new();
        for op in AgentOp::ALL {
            assert_eq!(AgentOp::from_path(op.path()), Some(op));
            assert!(paths.insert(op.path()), "{} twice", op.path());
        }
        assert_eq!(
            AgentOp::from_path(ENROLL),
            None,
            "enrolment is not sealed alike"
        );
        assert_eq!(AgentOp::from_path("/v1/agent/nothing"), None);
        assert_eq!(<FinishRequest as AgentCall>::OP.path(), FINISH);
        assert_eq!(<PollRequest as AgentCall>::OP, AgentOp::Poll);
    }

    #[test]
    fn a_request_is_decoded_once_by_its_operation_tolerating_unknown_fields() {
        let r = AgentRequest::decode(AgentOp::Renew, br#"{"runs": ["a"], "later": 1}"#).unwrap();
        assert!(matches!(r, AgentRequest::Renew(RenewRequest { runs }) if runs == ["a"]));
        // The same bytes for another operation are that operation's or refused, named.
        let e = AgentRequest::decode(AgentOp::Finish, br#"{"runs": ["a"]}"#).unwrap_err();
        assert_eq!(e.code, BAD_REQUEST);
        let e = e.message;
        assert!(e.contains(FINISH) && e.contains("FinishRequest"), "{e}");
        assert!(matches!(
            AgentRequest::decode(AgentOp::Ping, b"{}").unwrap(),
            AgentRequest::Ping(_)
        ));
    }

    /// A run's report is typed by its job's kind, and says which on the wire.
    #[test]
    fn a_finish_report_is_typed_by_kind() {
        let step = FinishRequest {
            run_id: "r".into(),
            status: vacsine_core::status::RunStatus::Succeeded,
            message: None,
            report: Some(RunReport::Step(Box::new(StepOutcome::new(
                StepStatus::Succeeded,
            )))),
        };
        let v = serde_json::to_value(&step).unwrap();
        assert_eq!(v["report"]["step"]["status"], "succeeded", "{v}");
        let back: FinishRequest = serde_json::from_value(v).unwrap();
        assert_eq!(back.report.map(|r| r.kind()), Some(JobKind::Step));
        // A step outcome sent where an enforce report is said: refused when decoded.
        let wrong = json!({"run_id": "r", "status": "succeeded",
            "report": {"enforce": {"status": "succeeded"}}});
        assert!(serde_json::from_value::<FinishRequest>(wrong).is_err());
        // Protocol 2's untyped report: refused, not read as either kind.
        let old = json!({"run_id": "r", "status": "succeeded", "report": {"status": "succeeded"}});
        assert!(serde_json::from_value::<FinishRequest>(old).is_err());
        // No report (a workflow job): none.
        let none: FinishRequest =
            serde_json::from_value(json!({"run_id": "r", "status": "failed"})).unwrap();
        assert!(none.report.is_none());
    }
}

#[cfg(test)]
mod typed_record_tests {
    use super::*;
    use serde_json::json;

    fn without(mut v: Value, field: &str) -> Value {
        v.as_object_mut().unwrap().remove(field);
        v
    }

    /// A step record as the untyped contract carried it (`record` any JSON), with a field
    /// this build does not know: decoded, and encoded again with the same fields and values
    /// (the unknown one left out), in an upload and in an operator's view alike.
    #[test]
    fn a_step_record_of_the_untyped_contract_still_decodes_and_encodes_alike() {
        let record = json!({
            "run_id": "run-1", "step_id": "open", "attempt": 2, "node": "edge-a",
            "executor": "command", "started_at": "2026-01-01T00:00:00.000000Z",
            "finished_at": "2026-01-01T00:00:01.500000Z", "duration_ms": 1500,
            "status": "timed_out", "exit_code": null, "stdout": "out", "stderr": "",
            "changed": true,
            "messages": [{"at": "2026-01-01T00:00:01.500000Z", "level": "error", "text": "slow"}],
            "error": "timed out after 1s", "outputs": {"port": 22, "seen": ["a"]},
            "engine_run_id": "engine-1",
            "added_later": {"x": 1}
        });
        let want = without(record.clone(), "added_later");
        let upload = json!({"run_id": "run-1", "later": 1, "records": [
            {"key": "run-1/open/2/edge-a", "record": record, "also_later": true}]});
        let plain = serde_json::to_vec(&upload).unwrap();
        let Ok(AgentRequest::Records(req)) = AgentRequest::decode(AgentOp::Records, &plain) else {
            panic!("not decoded");
        };
        let k = &req.records[0];
        assert_eq!(k.record.status, StepStatus::TimedOut);
        assert_eq!(record_key(&k.record), k.key);
        assert_eq!(serde_json::to_value(&k.record).unwrap(), want);
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"run_id": "run-1", "records": [{"key": "run-1/open/2/edge-a", "record": want}]})
        );
        // The operator's view of it.
        let seq: SeqRecord =
            serde_json::from_value(json!({"seq": 7, "record": record, "later": 1})).unwrap();
        assert_eq!(
            serde_json::to_value(&seq).unwrap(),
            json!({"seq": 7, "record": want})
        );
        // The fields a record may leave out still default.
        let least: StepRecord = serde_json::from_value(json!({"run_id": "r", "step_id": "s",
            "attempt": 1, "executor": "command", "started_at": "t", "status": "running"}))
        .unwrap();
        assert_eq!(
            least,
            StepRecord::started("r", "s", 1, None, "command", "t".into())
        );
    }

    /// The API document's schemas of a step record, its status, messages and times name
    /// the fields and values the core's types write, and require what they require.
    #[test]
    fn the_record_schemas_are_the_core_types() {
        use utoipa::PartialSchema;
        use vacsine_core::record::{Level, Message, Ran};
        let schema = |s: utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>| {
            serde_json::to_value(s).unwrap()
        };
        let keys = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
            k.sort();
            k
        };
        let sorted = |v: &Value| -> Vec<String> {
            let mut k: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_string())
                .collect();
            k.sort();
            k
        };
        let message = Message {
            at: "t".into(),
            level: Level::Warn,
            text: "x".into(),
        };
        let mut full = StepRecord::started("r", "s", 1, Some("n"), "command", "t".into());
        full.engine_run_id = Some("e".into());
        full.messages.push(message.clone());
        let rec = schema(StepRecordSchema::schema());
        assert_eq!(
            keys(&rec["properties"]),
            keys(&serde_json::to_value(&full).unwrap())
        );
        let least = json!({"run_id": "r", "step_id": "s", "attempt": 1, "executor": "command",
            "started_at": "t", "status": "running"});
        assert_eq!(sorted(&rec["required"]), keys(&least));
        for required in keys(&least) {
            assert!(
                serde_json::from_value::<StepRecord>(without(least.clone(), &required)).is_err(),
                "{required} is required"
            );
        }
        let msg = schema(MessageSchema::schema());
        assert_eq!(
            keys(&msg["properties"]),
            keys(&serde_json::to_value(&message).unwrap())
        );
        fn level(l: Level) -> LevelSchema {
            match l {
                Level::Info => LevelSchema::Info,
                Level::Warn => LevelSchema::Warn,
                Level::Error => LevelSchema::Error,
            }
        }
        let levels = [Level::Info, Level::Warn, Level::Error];
        for l in levels {
            assert_eq!(
                serde_json::to_value(level(l)).unwrap(),
                serde_json::to_value(l).unwrap()
            );
        }
        let names = schema(LevelSchema::schema());
        assert_eq!(names["enum"].as_array().unwrap().len(), levels.len());
        let ran = Ran {
            started_at: "t".into(),
            duration_ms: 1,
        };
        let ran_schema = schema(RanSchema::schema());
        assert_eq!(
            keys(&ran_schema["properties"]),
            keys(&serde_json::to_value(&ran).unwrap())
        );
        // Every status the core has, by the core's name, and no other.
        fn mirror(s: StepStatus) -> StepStatusSchema {
            match s {
                StepStatus::Running => StepStatusSchema::Running,
                StepStatus::Succeeded => StepStatusSchema::Succeeded,
                StepStatus::Failed => StepStatusSchema::Failed,
                StepStatus::Skipped => StepStatusSchema::Skipped,
                StepStatus::TimedOut => StepStatusSchema::TimedOut,
                StepStatus::Cancelled => StepStatusSchema::Cancelled,
                StepStatus::RolledBack => StepStatusSchema::RolledBack,
                StepStatus::Interrupted => StepStatusSchema::Interrupted,
            }
        }
        use StepStatus::*;
        let all = [
            Running,
            Succeeded,
            Failed,
            Skipped,
            TimedOut,
            Cancelled,
            RolledBack,
            Interrupted,
        ];
        for s in all {
            assert_eq!(
                serde_json::to_value(mirror(s)).unwrap(),
                serde_json::to_value(s).unwrap()
            );
        }
        let names = schema(StepStatusSchema::schema());
        assert_eq!(
            names["enum"].as_array().unwrap().len(),
            all.len(),
            "{names}"
        );
    }

    /// An upload holding a record that is not a step record is refused naming the record
    /// and its run (`bad_record`: the agent sends the others without it); a malformed
    /// upload is a bad request.
    #[test]
    fn a_record_that_is_not_a_step_record_is_refused_by_its_key() {
        let e = AgentRequest::decode(
            AgentOp::Records,
            br#"{"run_id": "r", "records": [{"key": "k1", "record": {"x": 1}}]}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, BAD_RECORD);
        assert!(
            e.message
                .contains("record `k1` of run `r` is not a step record"),
            "{e}"
        );
        let e = AgentRequest::decode(AgentOp::Records, br#"{"run_id": "r", "records": 1}"#)
            .unwrap_err();
        assert_eq!(e.code, BAD_REQUEST);
        assert!(e.message.contains(RECORDS), "{e}");
    }

    /// A step outcome as the untyped contract carried it (`status` a string), with a field
    /// this build does not know: decoded, and encoded again with the same fields and values.
    #[test]
    fn a_step_outcome_of_the_untyped_contract_still_decodes_and_encodes_alike() {
        let outcome = json!({
            "status": "succeeded", "exit_code": 0, "stdout": "ok\n", "stderr": "",
            "changed": true,
            "messages": [{"at": "2026-01-01T00:00:00.000000Z", "level": "info", "text": "done"}],
            "outputs": {"rule": "r1"}, "undo": {"prior": [1, 2]}, "error": null,
            "ran": {"started_at": "2026-01-01T00:00:00.000000Z", "duration_ms": 12},
            "added_later": "x"
        });
        let finish = json!({"run_id": "r", "status": "succeeded", "report": {"step": outcome}});
        let f: FinishRequest = serde_json::from_value(finish).unwrap();
        let Some(RunReport::Step(o)) = &f.report else {
            panic!("not a step report");
        };
        assert_eq!(o.status, StepStatus::Succeeded);
        assert_eq!(
            serde_json::to_value(o).unwrap(),
            without(outcome, "added_later")
        );
        // Every status by its name, both ways; one this build does not know is a failure.
        use StepStatus::*;
        for s in [
            Running,
            Succeeded,
            Failed,
            Skipped,
            TimedOut,
            Cancelled,
            RolledBack,
            Interrupted,
        ] {
            let o: StepOutcome = serde_json::from_value(json!({"status": s.as_str()})).unwrap();
            assert_eq!(o.status, s);
            assert_eq!(serde_json::to_value(&o).unwrap()["status"], s.as_str());
        }
        let o: StepOutcome = serde_json::from_value(json!({"status": "exploded"})).unwrap();
        assert_eq!(o.status, Failed);
        assert!(serde_json::from_value::<StepOutcome>(json!({"status": 3})).is_err());
    }
}

#[cfg(test)]
mod run_status_tests {
    #[test]
    fn the_api_status_names_are_the_cores() {
        use super::RunStatus::*;
        for s in [Queued, Running, Succeeded, Failed, Cancelled] {
            let core: vacsine_core::status::RunStatus = s.into();
            assert_eq!(serde_json::to_value(s).unwrap(), core.as_str());
        }
    }
}

/// `GET /v1/runs?site=&status=&workflow=&limit=`: runs of every site, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunList {
    pub runs: Vec<RunView>,
    /// More runs may follow: pass this as `before` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusView {
    pub sites: Vec<SiteView>,
    pub agents: Vec<AgentView>,
    pub runs: Vec<RunView>,
}

/// `GET /v1/runs/{id}/report`: the run and the report its agent sent (enforce runs).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunReportView {
    pub run: RunView,
    /// The enforce report (`vacsine enforce --format json`'s document).
    #[schema(value_type = Object)]
    pub report: Box<vacsine_enforce::Report>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SeqRecord {
    pub seq: i64,
    #[schema(value_type = StepRecordSchema)]
    pub record: StepRecord,
}

// The API document's schemas of the core's record types (whose crate has no OpenAPI types):
// their fields and names as those types write and read them; a test
// (`the_record_schemas_are_the_core_types`) holds the two together.

/// One attempt of one step on one node: the traceable log of a step.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = StepRecord)]
#[allow(dead_code)]
pub(crate) struct StepRecordSchema {
    run_id: String,
    step_id: String,
    attempt: u32,
    /// The node it ran on (absent: a step without a node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    node: Option<String>,
    executor: String,
    /// RFC 3339 with microseconds.
    started_at: String,
    #[serde(default)]
    finished_at: Option<String>,
    #[serde(default)]
    duration_ms: Option<u64>,
    status: StepStatusSchema,
    #[serde(default)]
    exit_code: Option<i32>,
    #[serde(default)]
    stdout: String,
    #[serde(default)]
    stderr: String,
    #[serde(default)]
    changed: bool,
    #[serde(default)]
    messages: Vec<MessageSchema>,
    #[serde(default)]
    error: Option<String>,
    /// The step's outputs, as its executor made them.
    #[serde(default)]
    outputs: Map<String, Value>,
    /// The engine run that made the record, when it is not `run_id` (an agent's own runs of
    /// a job at its site).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    engine_run_id: Option<String>,
}

/// A step's status.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = StepStatus)]
#[allow(dead_code)]
pub(crate) enum StepStatusSchema {
    Running,
    Succeeded,
    Failed,
    Skipped,
    TimedOut,
    Cancelled,
    RolledBack,
    Interrupted,
}

/// When and how long a step ran where it ran (a site's agent), as that place measured it.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = StepRan)]
#[allow(dead_code)]
pub(crate) struct RanSchema {
    /// RFC 3339 with microseconds.
    started_at: String,
    duration_ms: u64,
}

/// A message a step left.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = StepMessage)]
#[allow(dead_code)]
pub(crate) struct MessageSchema {
    /// RFC 3339 with microseconds.
    at: String,
    level: LevelSchema,
    text: String,
}

/// A message's level.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = StepMessageLevel)]
#[allow(dead_code)]
pub(crate) enum LevelSchema {
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunRecords {
    pub run: RunView,
    pub records: Vec<SeqRecord>,
}

/// What an operator's CLI needs to reach the orchestrator, written to `operator.json` in the
/// orchestrator's data folder (0600).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OperatorConfig {
    pub url: String,
    pub pin: String,
    pub token: String,
}

/// Largest request body the orchestrator reads on the agent endpoints (`/v1/agent/*`): a
/// sealed envelope, whose ciphertext is the plaintext request in base64 (4/3 of it). Agents
/// size their uploads under it ([`MAX_AGENT_PLAINTEXT`]); a larger body is refused with 413.
pub const MAX_AGENT_BODY: usize = 4 * 1024 * 1024;

/// Largest plaintext request an agent seals for [`MAX_AGENT_BODY`]: base64 expansion and the
/// envelope's own fields taken off.
pub const MAX_AGENT_PLAINTEXT: usize = (MAX_AGENT_BODY - 16 * 1024) / 4 * 3;

/// Largest body of an operator request other than an image upload (JSON documents).
pub const MAX_OPERATOR_BODY: usize = 2 * 1024 * 1024;

/// Error code of a records upload refused for one of its records (named in the message by
/// its key): the other records may be sent without it.
pub const BAD_RECORD: &str = "bad_record";

/// Largest body read from a request whose sender is not known yet (an enrolment, an agent
/// request without [`AGENT_HEADER`] or naming no enrolled agent).
pub const MAX_UNAUTHENTICATED_BODY: usize = 64 * 1024;

/// Header in which an agent names itself (its id), so that the orchestrator knows the sender
/// before it reads a large body; the sealed envelope read then must be that agent's.
pub const AGENT_HEADER: &str = "x-vacsine-agent";

/// Operator endpoints of CrowdSec bouncers (issue 16, compatible enforcement).
pub const OP_BOUNCERS: &str = "/v1/bouncers";

/// `POST /v1/bouncers`: let a CrowdSec bouncer read the decisions.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddBouncer {
    /// Its name: letters, digits, `.`, `_` and `-`, at most 64.
    pub name: String,
    /// Only decisions whose scope holds this site (absent: decisions for every site).
    #[serde(default)]
    pub site: Option<String>,
}

/// A CrowdSec bouncer the orchestrator serves.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BouncerView {
    pub name: String,
    /// The site whose decisions it gets (`None`: decisions for every site).
    pub site: Option<String>,
    pub created_at: String,
    /// Its last pull of the decision stream (RFC 3339).
    pub last_pull_at: Option<String>,
    /// How many active decisions it was given at that pull.
    pub holds: usize,
}

/// A new bouncer and its API key (shown once; the orchestrator keeps only its hash).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BouncerCreated {
    pub bouncer: BouncerView,
    /// The bouncer's `api_key` (its `X-Api-Key` header).
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BouncerList {
    pub bouncers: Vec<BouncerView>,
}

/// The longest an agent's poll waits for work at the orchestrator.
pub const MAX_WAIT_MS: u64 = 25_000;

/// The OpenAPI name of the workflow schema (generated from `vacsine_core`'s JSON Schema).
pub const WORKFLOW_SCHEMA: &str = "Workflow";

/// The schema of an optional workflow: the Workflow schema or null.
fn workflow_or_null() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
    use utoipa::openapi::Ref;
    AnyOfBuilder::new()
        .item(Ref::from_schema_name(WORKFLOW_SCHEMA))
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .into()
}

/// The schema of a list of workflows.
fn workflows_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(utoipa::openapi::Ref::from_schema_name(WORKFLOW_SCHEMA))
        .into()
}

//! Target system descriptions: which nodes, through which driver, seen from which vantage points.

use crate::doc::{Loc, Metadata};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Target {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: TargetSpec,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// Docker containers on the local engine.
    Docker,
    /// The machine Vacsine runs on (workflows only).
    Local,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TargetSpec {
    pub driver: DriverKind,
    pub nodes: Vec<NodeSpec>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vantage_points: Vec<VantagePoint>,
    /// Network kept when a node is quarantined (docker: a network name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub management_network: Option<String>,
}

/// One node, or a set of nodes chosen by container labels.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSpec {
    /// Node name in reports (default: the container name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Loc<String>>,
    /// Container name (docker driver).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<Loc<String>>,
    /// Select every container carrying these labels (docker driver).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A place network probes are made from (docker driver: a container).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VantagePoint {
    pub name: Loc<String>,
    pub container: Loc<String>,
}

/// A node once resolved by a driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedNode {
    /// Name used in reports, plans and workflows.
    pub name: String,
    pub roles: Vec<String>,
    pub labels: BTreeMap<String, String>,
    /// Driver handle (docker: container name).
    pub handle: String,
}

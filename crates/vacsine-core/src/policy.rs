//! Security policies: versioned sets of requirements with typed checks and fixes.

use crate::doc::{Loc, Metadata};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PolicySpec {
    /// Catalog folders (relative to the policy file) where fixes are looked up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub catalog: Vec<String>,
    /// A SCAP profile imported next to the policy's own requirements: each rule the profile
    /// selects becomes a requirement (id: the rule's short id) checked by the content's OVAL,
    /// fixed by the content's own remediation (Ansible tasks, else its shell script).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub import: Option<ScapImport>,
    /// The policy's own requirements (may be empty when `import` brings some).
    #[serde(default)]
    pub requirements: Vec<Requirement>,
}

/// `spec.import`: a profile of a SCAP source data stream (SSG content).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScapImport {
    /// SCAP 1.3 source data stream, e.g. `/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml`
    /// (relative: to the policy file).
    pub scap: Loc<String>,
    /// Profile id (`xccdf_org.ssgproject.content_profile_standard`, or its short form
    /// `standard`).
    pub profile: Loc<String>,
    /// XCCDF tailoring file applied to the data stream before the profile is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tailoring: Option<Loc<String>>,
    /// Only these rules of the profile (short ids such as `file_permissions_etc_shadow`);
    /// empty: every rule the profile selects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Loc<String>>,
    /// Treat SSG's `machine` platform (not a container) as applicable on containers.
    #[serde(default)]
    pub container_as_machine: bool,
}

/// How bad a failure is. Never used to mean "not applicable": use `appliesWhen`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// Security requirement, or availability guard (must pass before and after every remediation).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum RequirementKind {
    #[default]
    Security,
    Availability,
}

#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Requirement {
    /// Stable identifier, unique in the policy.
    pub id: Loc<String>,
    #[serde(default = "one")]
    pub version: u32,
    pub title: String,
    pub severity: Severity,
    #[serde(default)]
    pub kind: RequirementKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rationale: Option<String>,
    /// Nodes the requirement is checked on (default: every node).
    #[serde(default)]
    pub nodes: NodeSelector,
    /// A check that must pass for the requirement to apply to a node; if it does not,
    /// the outcome is `not_applicable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applies_when: Option<Check>,
    pub check: Check,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fixes: Vec<Fix>,
    /// Framework controls this requirement implements, e.g. `nist-800-53r5: [SC-7]`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub references: BTreeMap<String, Vec<String>>,
}

fn one() -> u32 {
    1
}

/// Selects nodes of a target by name, role or label. Empty selects every node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NodeSelector {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<Loc<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<Loc<String>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl NodeSelector {
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.roles.is_empty() && self.labels.is_empty()
    }
    /// True when the node matches every non-empty criterion.
    pub fn matches(&self, name: &str, roles: &[String], labels: &BTreeMap<String, String>) -> bool {
        (self.names.is_empty() || self.names.iter().any(|n| n.value == name))
            && (self.roles.is_empty() || self.roles.iter().any(|r| roles.contains(&r.value)))
            && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
    }
}

/// A reference to a catalog workflow that fixes a requirement (like XCCDF `<fix>`).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Fix {
    /// Name of the catalog workflow.
    pub uses: Loc<String>,
    /// Inputs of the workflow (templated with `node`, `target`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub with: BTreeMap<String, Loc<serde_json::Value>>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub disruption: Disruption,
    #[serde(default)]
    pub reboot: bool,
}

/// XCCDF fix strategies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    Configure,
    Disable,
    Enable,
    Patch,
    Policy,
    Restrict,
    Update,
    #[default]
    Unknown,
}

/// XCCDF disruption levels; the planner prefers the least disruptive fix.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Disruption {
    Low,
    Medium,
    High,
    #[default]
    Unknown,
}

/// A typed check: exactly one probe with its expectation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub enum Check {
    /// TCP reachability of a node's port from a vantage point.
    Port(PortCheck),
    /// HTTP status/body of a node's service from a vantage point.
    Http(HttpCheck),
    /// File existence, mode, owner and content.
    File(FileCheck),
    /// A command run in the node (argv), its exit code and output.
    Command(CommandCheck),
    /// Whether a process with that name runs in the node.
    Process(ProcessCheck),
    /// Whether a package is installed (dpkg or apk database), and its version.
    Package(PackageCheck),
    /// nftables ruleset of the node's network namespace.
    Firewall(FirewallCheck),
    /// A local user account.
    User(UserCheck),
    /// A kernel parameter as seen in the node.
    Sysctl(SysctlCheck),
    /// Sockets listening inside the node's network namespace (seen even when a firewall
    /// rule hides them from the network).
    Listening(ListeningCheck),
    /// An SSH server's behaviour from a vantage point: banner, authentication methods
    /// offered to a user, whether a key logs in.
    Ssh(SshCheck),
    /// One rule of a SCAP data stream's profile, evaluated natively (OVAL) on the node.
    Scap(ScapCheck),
}

impl Check {
    pub fn probe(&self) -> &'static str {
        match self {
            Check::Port(_) => "port",
            Check::Http(_) => "http",
            Check::File(_) => "file",
            Check::Command(_) => "command",
            Check::Process(_) => "process",
            Check::Package(_) => "package",
            Check::Firewall(_) => "firewall",
            Check::User(_) => "user",
            Check::Sysctl(_) => "sysctl",
            Check::Listening(_) => "listening",
            Check::Ssh(_) => "ssh",
            Check::Scap(_) => "scap",
        }
    }
    /// The vantage point a network probe is made from, if any.
    pub fn vantage(&self) -> Option<&Loc<String>> {
        match self {
            Check::Port(p) => Some(&p.from),
            Check::Http(h) => Some(&h.from),
            Check::Ssh(s) => Some(&s.from),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PortState {
    Open,
    Closed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PortCheck {
    pub port: u16,
    /// Vantage point name (from the target's `vantagePoints`).
    pub from: Loc<String>,
    pub expect: PortState,
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_ms: u64,
}

pub fn default_probe_timeout_ms() -> u64 {
    2000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct HttpCheck {
    pub port: u16,
    #[serde(default = "slash")]
    pub path: String,
    pub from: Loc<String>,
    /// Expected status code (default 200).
    #[serde(default = "ok200")]
    pub status: u16,
    /// Regex the body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_matches: Option<Loc<String>>,
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_ms: u64,
}

fn slash() -> String {
    "/".into()
}
fn ok200() -> u16 {
    200
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FileCheck {
    pub path: String,
    /// Must the file exist (default true)? With `false`, the other fields are ignored.
    #[serde(default = "yes")]
    pub exists: bool,
    /// Exact mode, octal string such as "0644".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Loc<String>>,
    /// Most permissive mode allowed: no permission bit outside it may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_mode: Option<Loc<String>>,
    /// Owner user name (or numeric uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Regex (multi-line mode) the content must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<Loc<String>>,
    /// Regex (multi-line mode) the content must not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_contains: Option<Loc<String>>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CommandCheck {
    /// Program and arguments, never a shell string.
    pub argv: Vec<String>,
    #[serde(default)]
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_matches: Option<Loc<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout_not_matches: Option<Loc<String>>,
    #[serde(default = "default_command_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_command_timeout_ms() -> u64 {
    10_000
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ProcessCheck {
    /// Process name (the executable's base name, as in `comm`).
    pub name: String,
    pub running: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageCheck {
    pub name: String,
    pub installed: bool,
    /// Version constraint such as ">= 1.2.3" (Debian version ordering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Loc<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct FirewallCheck {
    /// Regexes that must each match the ruleset text (`nft list ruleset`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains: Vec<Loc<String>>,
    /// Regexes that must not match the ruleset text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_contains: Vec<Loc<String>>,
    /// Default policy required on a base chain of this hook (e.g. `input: drop`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub default_policy: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UserCheck {
    pub name: String,
    pub exists: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Regex the login shell must match (e.g. `nologin|false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Loc<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SysctlCheck {
    /// Dotted key, e.g. `net.ipv4.ip_forward`.
    pub key: String,
    pub value: String,
}

/// Transport protocol of a socket.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Presence {
    Present,
    Absent,
}

/// Is a socket listening on `port` in the node's network namespace (IPv4 or IPv6, any
/// address)? TCP: sockets in state LISTEN; UDP: bound, unconnected sockets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ListeningCheck {
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
    pub expect: Presence,
}

/// Connects to the node's SSH server from a vantage point, as a client would.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshCheck {
    #[serde(default = "ssh_port")]
    pub port: u16,
    /// Vantage point name (from the target's `vantagePoints`).
    pub from: Loc<String>,
    /// User name offered to the server (methods and login are asked for this user).
    #[serde(default = "root_user")]
    pub user: String,
    /// Private key file (OpenSSH format, Ed25519 or ECDSA, unencrypted) tried for `login`;
    /// a relative path is relative to the policy file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<Loc<String>>,
    pub expect: SshExpect,
    #[serde(default = "default_probe_timeout_ms")]
    pub timeout_ms: u64,
}

fn ssh_port() -> u16 {
    22
}
fn root_user() -> String {
    "root".into()
}

/// What the SSH server must do. Every field given must hold.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SshExpect {
    /// Regex the server's identification line must match (e.g. `^SSH-2\.0-OpenSSH_`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner_matches: Option<Loc<String>>,
    /// Whether `user` logs in with `key` (needs `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<Loc<SshLogin>>,
    /// Authentication methods that must each be offered to `user`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods_include: Vec<Loc<String>>,
    /// Authentication methods that must not be offered to `user` (e.g. `password`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods_exclude: Vec<Loc<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SshLogin {
    Allowed,
    Denied,
}

/// A rule of a SCAP source data stream, evaluated with the values of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ScapCheck {
    /// The data stream file (relative: to the policy file).
    pub datastream: String,
    /// Profile id (full or short); its values (refine-value, set-value) feed the OVAL check.
    pub profile: String,
    /// Rule id (full `xccdf_…_rule_x` or short `x`).
    pub rule: String,
    /// Tailoring file applied before the profile is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tailoring: Option<String>,
    /// Treat SSG's `machine` platform as applicable on containers.
    #[serde(default)]
    pub container_as_machine: bool,
}

/// SSH authentication method names (RFC 4252 and its extensions) the `ssh` probe knows.
pub const SSH_METHODS: &[&str] = &[
    "publickey",
    "password",
    "keyboard-interactive",
    "hostbased",
    "gssapi-with-mic",
    "none",
];

impl Policy {
    /// Make the relative file paths of the policy (SSH keys) relative to `dir`, the folder
    /// of the policy file. Pure path arithmetic.
    pub fn rebase_paths(&mut self, dir: &std::path::Path) {
        let rebase = |p: &mut String| {
            if !p.is_empty() && std::path::Path::new(p.as_str()).is_relative() {
                *p = dir.join(&*p).to_string_lossy().into_owned();
            }
        };
        if let Some(i) = &mut self.spec.import {
            rebase(&mut i.scap.value);
            if let Some(t) = &mut i.tailoring {
                rebase(&mut t.value);
            }
        }
        for r in &mut self.spec.requirements {
            for c in std::iter::once(&mut r.check).chain(r.applies_when.as_mut()) {
                if let Check::Scap(s) = c {
                    rebase(&mut s.datastream);
                    if let Some(t) = &mut s.tailoring {
                        rebase(t);
                    }
                }
            }
            for c in std::iter::once(&mut r.check).chain(r.applies_when.as_mut()) {
                if let Check::Ssh(SshCheck { key: Some(k), .. }) = c {
                    if std::path::Path::new(&k.value).is_relative() {
                        k.value = dir.join(&k.value).to_string_lossy().into_owned();
                    }
                }
            }
        }
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format!("{self:?}").to_lowercase())
    }
}

impl std::fmt::Display for Disruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&format!("{self:?}").to_lowercase())
    }
}

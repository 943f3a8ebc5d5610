//! The pure decision: responses × one event × context → outcomes, each with its reason.
//!
//! Order of checks for one response and one target: the event's origin (a decision Vacsine
//! made never triggers a response), the scope and the mode, the condition, then per target:
//! the allow-list, dedupe, throttle, approval. Dedupe and throttle state is passed in and
//! updated in place ([`Windows`]); only decisions actually made (or put to approval) count.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use vacsine_events::{Cidr, Event, Observable, ObservableType};

use crate::decision::{content_id, decision_id, Action, Decision, DecisionOrigin, IpNet};
use crate::response::{EventPart, InputFrom, KeyBy, Mode, Rule, RuleAction};

/// The `source` of events Vacsine itself emits about its own decisions.
pub const VACSINE_SOURCE: &str = "vacsine";
/// The field naming the decision an event of Vacsine's is about.
pub const DECISION_FIELD: &str = "vacsine.decision";

/// Dedupe keys kept before the ended windows are dropped by [`decide`] itself.
pub const MAX_DEDUPE_KEYS: usize = 1_000_000;

/// Shortest IPv4 prefix a ban may take (a /7 or wider is refused).
pub const MIN_PREFIX_V4: u8 = 8;
/// Shortest IPv6 prefix a ban may take.
pub const MIN_PREFIX_V6: u8 = 32;

/// Who is deciding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decider {
    /// An agent at a site: decides for `autonomous` responses only (orchestrated ones are
    /// the orchestrator's).
    Site,
    /// The orchestrator: decides for both modes; an autonomous response's decision gets the
    /// same id as the site's, so it is never doubled.
    Orchestrator,
}

/// Where the event came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum EventOrigin {
    /// A sensor, a feed, a person.
    #[default]
    External,
    /// Vacsine itself, about one of its decisions (applied, expired, verified…).
    Decision { decision_id: String },
}

/// Addresses and networks no decision may touch.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    /// The site's own addresses.
    pub site_addresses: Vec<IpAddr>,
    /// The orchestrator's addresses.
    pub orchestrator_addresses: Vec<IpAddr>,
    /// Management networks.
    pub networks: Vec<Cidr>,
    /// Nodes no quarantine may touch (the site's gateway, the agent's own node…).
    pub nodes: Vec<String>,
}

impl AllowList {
    /// Why `net` may not be banned, if it may not.
    pub fn refuses(&self, net: &IpNet) -> Option<String> {
        // An IPv4-mapped IPv6 address on the list is its IPv4 address (as bans are).
        let hit = |a: &&IpAddr| net.contains(a.to_canonical());
        if let Some(a) = self.site_addresses.iter().find(hit) {
            return Some(format!("{net} contains the site's own address {a}"));
        }
        if let Some(a) = self.orchestrator_addresses.iter().find(hit) {
            return Some(format!("{net} contains the orchestrator's address {a}"));
        }
        if let Some(c) = self
            .networks
            .iter()
            .find(|c| net.overlaps(&IpNet::from_cidr(**c)))
        {
            return Some(format!("{net} overlaps the management network {c}"));
        }
        None
    }
}

/// What a decision is taken against.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub now: DateTime<Utc>,
    /// The site deciding or decided for.
    pub site: &'a str,
    pub site_labels: &'a BTreeMap<String, String>,
    pub decider: Decider,
    pub allow: &'a AllowList,
    pub origin: EventOrigin,
}

/// A workflow run a response asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRun {
    /// Deterministic, like a decision id.
    pub id: String,
    pub workflow: String,
    pub inputs: BTreeMap<String, String>,
    pub origin: DecisionOrigin,
}

/// What an outcome is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Target {
    Net { net: IpNet },
    Node { node: String },
    Workflow { workflow: String },
}

/// Why an outcome is what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Verdict {
    /// Matched: a decision to apply now.
    Decided { decision: Decision },
    /// Matched: a workflow to run now.
    Run { run: WorkflowRun },
    /// The same key was decided within the window.
    Deduplicated { key: String, until: DateTime<Utc> },
    /// `max` decisions for this key within the window already.
    Throttled { key: String, until: DateTime<Utc> },
    /// The target is on the allow-list.
    AllowListed { why: String },
    /// Waits for a person until `expires_at`.
    AwaitingApproval {
        decision: Option<Decision>,
        run: Option<WorkflowRun>,
        expires_at: DateTime<Utc>,
    },
    /// The response matched but cannot act (no node, a network too broad…).
    Refused { why: String },
    /// The event is about a decision Vacsine made: no response is evaluated for it.
    SelfOrigin { decision_id: Option<String> },
}

/// One outcome: a response, an event, a target and the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// `None` for an event ignored as a whole.
    pub response: Option<String>,
    pub event_id: String,
    pub target: Option<Target>,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// Dedupe and throttle windows: per key, when it was last decided (dedupe) and the times of
/// the decisions in the current window (throttle). Keys name the response, so responses do
/// not share windows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Windows {
    /// key → end of its dedupe window.
    pub dedupe: HashMap<String, DateTime<Utc>>,
    /// key → times of decisions within the throttle window (oldest first).
    pub throttle: HashMap<String, VecDeque<DateTime<Utc>>>,
}

impl Windows {
    /// Forgets windows that ended before `now` (bounded memory).
    pub fn prune(&mut self, now: DateTime<Utc>, longest_throttle: TimeDelta) {
        self.dedupe.retain(|_, until| *until > now);
        self.throttle.retain(|_, times| {
            while times.front().is_some_and(|t| *t + longest_throttle <= now) {
                times.pop_front();
            }
            !times.is_empty()
        });
    }
}

/// Evaluates every response for one event.
pub fn decide(rules: &[Rule], event: &Event, cx: &Context, windows: &mut Windows) -> Vec<Outcome> {
    // A response never triggers itself: an event about a decision Vacsine made is recorded
    // and ignored before any response is looked at.
    let self_made = match &cx.origin {
        EventOrigin::Decision { decision_id } => Some(Some(decision_id.clone())),
        EventOrigin::External if event.source == VACSINE_SOURCE => {
            Some(event.fields.get(DECISION_FIELD).cloned())
        }
        EventOrigin::External => None,
    };
    if let Some(decision_id) = self_made {
        return vec![Outcome {
            response: None,
            event_id: event.id.clone(),
            target: None,
            verdict: Verdict::SelfOrigin { decision_id },
        }];
    }
    if windows.dedupe.len() > MAX_DEDUPE_KEYS {
        windows.dedupe.retain(|_, until| *until > cx.now);
    }
    let mut out = Vec::new();
    for rule in rules {
        if !in_scope(rule, cx) || !rule.on.holds(event) {
            continue;
        }
        if cx.decider == Decider::Site && rule.mode == Mode::Orchestrated {
            continue;
        }
        decide_one(rule, event, cx, windows, &mut out);
    }
    out
}

fn in_scope(rule: &Rule, cx: &Context) -> bool {
    (rule.sites.is_empty() || rule.sites.iter().any(|s| s == cx.site))
        && rule
            .labels
            .iter()
            .all(|(k, v)| cx.site_labels.get(k) == Some(v))
}

enum Planned {
    Decision(Decision),
    Run(WorkflowRun),
}

fn decide_one(
    rule: &Rule,
    event: &Event,
    cx: &Context,
    windows: &mut Windows,
    out: &mut Vec<Outcome>,
) {
    let origin = DecisionOrigin {
        site: (cx.decider == Decider::Site).then(|| cx.site.to_string()),
        response: rule.name.clone(),
        event_id: event.id.clone(),
    };
    let outcome = |target: Option<Target>, verdict: Verdict| Outcome {
        response: Some(rule.name.clone()),
        event_id: event.id.clone(),
        target,
        verdict,
    };
    // Each candidate: its target, its key text for windows, and the plan or a refusal.
    let mut candidates: Vec<(Target, String, Result<Planned, Verdict>)> = Vec::new();
    match &rule.action {
        RuleAction::Ban { types, duration } => {
            let mut nets: Vec<IpNet> = event
                .observables
                .iter()
                .filter(|o| types.contains(&o.kind()))
                .filter_map(IpNet::from_observable)
                .collect();
            nets.sort();
            nets.dedup();
            if nets.is_empty() {
                out.push(outcome(
                    None,
                    Verdict::Refused {
                        why: "the event has no address or network of the types this response bans"
                            .into(),
                    },
                ));
                return;
            }
            for net in nets {
                let target = Target::Net { net };
                let plan = if let Some(why) = cx.allow.refuses(&net) {
                    Err(Verdict::AllowListed { why })
                } else if let Some(why) = unbannable(&net) {
                    Err(Verdict::Refused { why })
                } else {
                    let action = Action::Ban { net };
                    Ok(Planned::Decision(Decision {
                        id: decision_id(&rule.name, &event.id, &action),
                        action,
                        expires_at: Some(cx.now + *duration),
                        origin: origin.clone(),
                        created_at: cx.now,
                    }))
                };
                candidates.push((target, net.to_string(), plan));
            }
        }
        RuleAction::Quarantine { node } => {
            let node = node.clone().or_else(|| event.node.clone());
            let Some(node) = node else {
                out.push(outcome(
                    None,
                    Verdict::Refused {
                        why: "the event names no node to quarantine".into(),
                    },
                ));
                return;
            };
            let target = Target::Node { node: node.clone() };
            let plan = if cx.allow.nodes.contains(&node) {
                Err(Verdict::AllowListed {
                    why: format!("node {node:?} is on the allow-list"),
                })
            } else {
                let action = Action::Quarantine { node: node.clone() };
                Ok(Planned::Decision(Decision {
                    id: decision_id(&rule.name, &event.id, &action),
                    action,
                    expires_at: None,
                    origin: origin.clone(),
                    created_at: cx.now,
                }))
            };
            candidates.push((target, node, plan));
        }
        RuleAction::Workflow { name, inputs } => {
            let target = Target::Workflow {
                workflow: name.clone(),
            };
            match workflow_inputs(inputs, event) {
                Ok(values) => {
                    let key_text = serde_json::to_string(&(name, &values)).unwrap_or_default();
                    let id = content_id(&rule.name, &event.id, &format!("workflow:{key_text}"));
                    let plan = Planned::Run(WorkflowRun {
                        id,
                        workflow: name.clone(),
                        inputs: values,
                        origin: origin.clone(),
                    });
                    candidates.push((target, key_text, Ok(plan)));
                }
                Err(why) => candidates.push((target, name.clone(), Err(Verdict::Refused { why }))),
            }
        }
    }

    for (target, key_text, plan) in candidates {
        let plan = match plan {
            Ok(p) => p,
            Err(v) => {
                out.push(outcome(Some(target), v));
                continue;
            }
        };
        // Dedupe.
        if let Some((by, window)) = rule.dedupe {
            let key = window_key(&rule.name, "dedupe", by, &key_text, event);
            if let Some(until) = windows.dedupe.get(&key).filter(|u| **u > cx.now) {
                out.push(outcome(
                    Some(target),
                    Verdict::Deduplicated { key, until: *until },
                ));
                continue;
            }
            // Throttle is checked before the dedupe window is opened: a throttled target
            // must not open a dedupe window.
            if let Some(v) = throttled(rule, &key_text, event, cx, windows) {
                out.push(outcome(Some(target), v));
                continue;
            }
            windows.dedupe.insert(key, cx.now + window);
        } else if let Some(v) = throttled(rule, &key_text, event, cx, windows) {
            out.push(outcome(Some(target), v));
            continue;
        }
        if let Some((by, window, _)) = rule.throttle {
            let key = window_key(&rule.name, "throttle", by, &key_text, event);
            let times = windows.throttle.entry(key).or_default();
            while times.front().is_some_and(|t| *t + window <= cx.now) {
                times.pop_front();
            }
            times.push_back(cx.now);
        }
        // Approval.
        let verdict = match (rule.approval, plan) {
            (Some(exp), Planned::Decision(d)) => Verdict::AwaitingApproval {
                decision: Some(d),
                run: None,
                expires_at: cx.now + exp,
            },
            (Some(exp), Planned::Run(r)) => Verdict::AwaitingApproval {
                decision: None,
                run: Some(r),
                expires_at: cx.now + exp,
            },
            (None, Planned::Decision(decision)) => Verdict::Decided { decision },
            (None, Planned::Run(run)) => Verdict::Run { run },
        };
        out.push(outcome(Some(target), verdict));
    }
}

fn throttled(
    rule: &Rule,
    key_text: &str,
    event: &Event,
    cx: &Context,
    windows: &Windows,
) -> Option<Verdict> {
    let (by, window, max) = rule.throttle?;
    let key = window_key(&rule.name, "throttle", by, key_text, event);
    let times = windows.throttle.get(&key)?;
    let live: Vec<&DateTime<Utc>> = times.iter().filter(|t| **t + window > cx.now).collect();
    if live.len() < max as usize {
        return None;
    }
    let until = *live[live.len() - max as usize] + window;
    Some(Verdict::Throttled { key, until })
}

fn window_key(rule: &str, what: &str, by: KeyBy, target: &str, event: &Event) -> String {
    let part = match by {
        KeyBy::Address => format!("address={target}"),
        KeyBy::Node => format!("node={}", event.node.as_deref().unwrap_or("")),
        KeyBy::Source => format!("source={}", event.source),
        KeyBy::Response => "response".to_string(),
    };
    format!("{rule}/{what}/{part}")
}

/// Refuses a ban that would cut more than an attacker: unspecified, loopback, multicast and
/// link-local addresses, and networks wider than [`MIN_PREFIX_V4`] / [`MIN_PREFIX_V6`].
pub fn unbannable(net: &IpNet) -> Option<String> {
    let ip = net.network();
    let special = match ip {
        IpAddr::V4(a) => {
            a.is_unspecified() || a.is_loopback() || a.is_multicast() || a.is_broadcast()
        }
        IpAddr::V6(a) => a.is_unspecified() || a.is_loopback() || a.is_multicast(),
    };
    if special {
        return Some(format!(
            "{net} is an unspecified, loopback, multicast or broadcast address"
        ));
    }
    let min = if net.is_ipv4() {
        MIN_PREFIX_V4
    } else {
        MIN_PREFIX_V6
    };
    if net.prefix() < min {
        return Some(format!(
            "{net} is wider than a /{min}: refused as too broad to ban"
        ));
    }
    None
}

/// Inputs of a workflow from typed parts of the event only.
fn workflow_inputs(
    inputs: &BTreeMap<String, InputFrom>,
    event: &Event,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (k, from) in inputs {
        let v = match from {
            InputFrom::Value(s) => s.clone(),
            InputFrom::Observable(kind) => {
                let t: ObservableType = (*kind).into();
                event
                    .observables
                    .iter()
                    .find(|o| o.kind() == t)
                    .map(Observable::value)
                    .ok_or_else(|| {
                        format!("input `{k}`: the event has no {} observable", t.as_str())
                    })?
            }
            InputFrom::Event(part) => match part {
                EventPart::Id => event.id.clone(),
                EventPart::Kind => event.kind.as_str().to_string(),
                EventPart::Source => event.source.clone(),
                EventPart::Severity => event.severity.as_str().to_string(),
                EventPart::Site => event
                    .site
                    .clone()
                    .ok_or_else(|| format!("input `{k}`: the event names no site"))?,
                EventPart::Node => event
                    .node
                    .clone()
                    .ok_or_else(|| format!("input `{k}`: the event names no node"))?,
            },
        };
        out.insert(k.clone(), v);
    }
    Ok(out)
}

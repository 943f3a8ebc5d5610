//! Docker's event stream, filtered to a target's containers: the lifecycle events `vacsine
//! watch` follows (the core's [`NodeEvents`]).
//!
//! The stream asks the engine for container `start` and `destroy` events since the moment it
//! was made (so an event between the call and the first read is not lost), keeps those of the
//! target's containers (named by `container:`, or carrying every label of a `selector:`) and
//! drops sandbox clones (label [`SANDBOX_LABEL`]). When the connection is lost it reports the
//! error once, then reconnects from the last event seen (events at that same instant already
//! delivered are skipped).

use crate::{DockerError, SANDBOX_LABEL};
use async_trait::async_trait;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use vacsine_core::driver::{DriverError, NodeEvent, NodeEventKind, NodeEvents};
use vacsine_core::target::{DriverKind, Target};

/// Which containers belong to a target: by name, or by labels (pure).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerFilter {
    names: BTreeSet<String>,
    selectors: Vec<BTreeMap<String, String>>,
}

impl ContainerFilter {
    /// The target's nodes (its vantage points are not nodes).
    pub fn for_target(target: &Target) -> Result<Self, DockerError> {
        if target.spec.driver != DriverKind::Docker {
            return Err(DockerError::InvalidTarget {
                detail: format!(
                    "target `{}` uses driver {:?}: following node events needs `driver: docker`",
                    target.metadata.name.value, target.spec.driver
                ),
            });
        }
        let mut names = BTreeSet::new();
        let mut selectors = Vec::new();
        for n in &target.spec.nodes {
            match (&n.container, n.selector.is_empty()) {
                (Some(c), true) => {
                    names.insert(c.value.trim_start_matches('/').to_string());
                }
                (None, false) => selectors.push(n.selector.clone()),
                _ => {
                    return Err(DockerError::InvalidTarget {
                        detail: "each node needs exactly one of `container:` or `selector:`".into(),
                    })
                }
            }
        }
        Ok(ContainerFilter { names, selectors })
    }

    /// Whether a container with this name and these labels is one of the target's nodes.
    /// A sandbox clone never is.
    pub fn matches(&self, name: &str, labels: &HashMap<String, String>) -> bool {
        if labels.contains_key(SANDBOX_LABEL) {
            return false;
        }
        self.names.contains(name.trim_start_matches('/'))
            || self
                .selectors
                .iter()
                .any(|s| s.iter().all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// Filters the engine applies before sending events: containers, `start` and
    /// `destroy`; by name too when every node is named (the engine ORs names but ANDs
    /// names with labels, so selectors are matched here).
    fn engine_filters(&self) -> HashMap<String, Vec<String>> {
        let mut f = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                vec!["start".to_string(), "destroy".to_string()],
            ),
        ]);
        if self.selectors.is_empty() {
            f.insert("container".into(), self.names.iter().cloned().collect());
        }
        f
    }

    /// The node event an engine event stands for, if it is about one of the target's
    /// containers (pure).
    pub fn node_event(&self, m: &EventMessage) -> Option<NodeEvent> {
        if m.typ != Some(EventMessageTypeEnum::CONTAINER) {
            return None;
        }
        let kind = match m.action.as_deref()? {
            "start" => NodeEventKind::Started,
            "destroy" => NodeEventKind::Removed,
            _ => return None,
        };
        let attrs = m.actor.as_ref()?.attributes.as_ref()?;
        let name = attrs.get("name")?;
        if !self.matches(name, attrs) {
            return None;
        }
        let at = event_time(m)?;
        Some(NodeEvent {
            handle: name.trim_start_matches('/').to_string(),
            kind,
            at,
        })
    }
}

fn event_time(m: &EventMessage) -> Option<SystemTime> {
    let nanos = match (m.time_nano, m.time) {
        (Some(n), _) => n,
        (None, Some(s)) => s.checked_mul(1_000_000_000)?,
        _ => return None,
    };
    UNIX_EPOCH.checked_add(Duration::from_nanos(u64::try_from(nanos).ok()?))
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `since` as the engine takes it: `seconds.nanoseconds`.
fn since_param(nanos: i64) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

/// The event stream of one target's containers.
pub struct DockerNodeEvents {
    docker: Docker,
    filter: ContainerFilter,
    stream: Option<BoxStream<'static, Result<EventMessage, bollard::errors::Error>>>,
    /// Time of the last event delivered (Unix ns), or of the stream's start.
    last_nanos: i64,
    /// Events at `last_nanos` already delivered (id, action): a reconnection from that
    /// instant sees them again.
    at_last: BTreeSet<(String, String)>,
    /// Pause before the next reconnection.
    backoff: Duration,
}

impl DockerNodeEvents {
    /// Follow `target`'s containers from now on.
    pub fn new(docker: Docker, target: &Target) -> Result<Self, DockerError> {
        let filter = ContainerFilter::for_target(target)?;
        let now = now_nanos();
        let mut s = DockerNodeEvents {
            docker,
            filter,
            stream: None,
            last_nanos: now,
            at_last: BTreeSet::new(),
            backoff: Duration::from_millis(100),
        };
        s.connect();
        Ok(s)
    }

    fn connect(&mut self) {
        let opts = EventsOptions {
            since: Some(since_param(self.last_nanos)),
            until: None,
            filters: Some(self.filter.engine_filters()),
        };
        self.stream = Some(self.docker.events(Some(opts)).boxed());
    }
}

#[async_trait]
impl NodeEvents for DockerNodeEvents {
    async fn next(&mut self) -> Option<Result<NodeEvent, DriverError>> {
        loop {
            if self.stream.is_none() {
                tokio::time::sleep(self.backoff).await;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(5));
                self.connect();
            }
            let stream = self.stream.as_mut()?;
            match stream.next().await {
                Some(Ok(m)) => {
                    self.backoff = Duration::from_millis(100);
                    let nanos = m
                        .time_nano
                        .or(m.time.map(|s| s.saturating_mul(1_000_000_000)))
                        .unwrap_or(self.last_nanos);
                    let key = (
                        m.actor
                            .as_ref()
                            .and_then(|a| a.id.clone())
                            .unwrap_or_default(),
                        m.action.clone().unwrap_or_default(),
                    );
                    if nanos < self.last_nanos
                        || (nanos == self.last_nanos && self.at_last.contains(&key))
                    {
                        continue;
                    }
                    if nanos > self.last_nanos {
                        self.last_nanos = nanos;
                        self.at_last.clear();
                    }
                    self.at_last.insert(key);
                    if let Some(e) = self.filter.node_event(&m) {
                        return Some(Ok(e));
                    }
                }
                Some(Err(e)) => {
                    self.stream = None;
                    return Some(Err(DockerError::api("follow events of", "engine", e).into()));
                }
                None => {
                    self.stream = None;
                    return Some(Err(DockerError::Connect {
                        detail: "the engine closed its event stream".into(),
                    }
                    .into()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn target(yaml: &str) -> Target {
        let src = vacsine_core::doc::SourceFile::new("t.yaml", yaml.to_string());
        vacsine_core::doc::parse_as(&src).unwrap()
    }

    fn event(action: &str, name: &str, labels: &[(&str, &str)], nanos: i64) -> EventMessage {
        let mut attrs: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        attrs.insert("name".into(), name.into());
        attrs.insert("image".into(), "img".into());
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.into()),
            actor: Some(EventActor {
                id: Some(format!("id-{name}")),
                attributes: Some(attrs),
            }),
            scope: None,
            time: Some(nanos / 1_000_000_000),
            time_nano: Some(nanos),
        }
    }

    const T: &str = "apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {name: t}\nspec:\n  driver: docker\n  nodes:\n    - {name: a, container: box-a}\n    - {selector: {app: edge, tier: web}}\n  vantagePoints:\n    - {name: out, container: box-out}\n";

    /// The target's containers, by name or by every label of a selector; never a sandbox
    /// clone (which carries the original's labels), never a vantage point or a stranger.
    #[test]
    fn only_the_targets_own_containers_start_events_are_kept() {
        let f = ContainerFilter::for_target(&target(T)).unwrap();
        let web = [("app", "edge"), ("tier", "web")];
        type Case<'a> = (
            &'a str,
            &'a str,
            &'a [(&'a str, &'a str)],
            Option<NodeEventKind>,
        );
        let cases: &[Case] = &[
            ("start", "box-a", &[], Some(NodeEventKind::Started)),
            ("destroy", "box-a", &[], Some(NodeEventKind::Removed)),
            ("die", "box-a", &[], None),
            ("start", "w1", &web, Some(NodeEventKind::Started)),
            ("start", "w2", &[("app", "edge")], None),
            ("start", "box-out", &[], None),
            ("start", "stranger", &[("app", "other")], None),
            (
                "start",
                "box-a-clone",
                &[
                    ("vacsine.sandbox", "sbx-1"),
                    ("app", "edge"),
                    ("tier", "web"),
                ],
                None,
            ),
            ("start", "box-a", &[("vacsine.sandbox", "sbx-1")], None),
        ];
        for (action, name, labels, want) in cases {
            let got = f.node_event(&event(action, name, labels, 1_700_000_000_123_456_789));
            assert_eq!(
                got.as_ref().map(|e| e.kind),
                *want,
                "{action} {name} {labels:?}"
            );
            if let Some(e) = got {
                assert_eq!(e.handle, *name);
                assert_eq!(
                    e.at.duration_since(UNIX_EPOCH).unwrap().as_nanos(),
                    1_700_000_000_123_456_789,
                    "nanosecond time kept"
                );
            }
        }
        // Names only: the engine filters by name; with a selector it cannot (AND with labels).
        let named = ContainerFilter::for_target(&target(
            "apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {name: t}\nspec:\n  driver: docker\n  nodes:\n    - {container: box-a}\n",
        ))
        .unwrap();
        assert_eq!(
            named.engine_filters().get("container"),
            Some(&vec!["box-a".to_string()])
        );
        assert!(!f.engine_filters().contains_key("container"));
    }

    #[test]
    fn local_targets_are_refused_with_the_reason() {
        let t = target(&T.replace("driver: docker", "driver: local"));
        let e = ContainerFilter::for_target(&t).unwrap_err().to_string();
        assert!(e.contains("driver: docker"), "{e}");
    }

    #[test]
    fn since_is_seconds_dot_nanoseconds() {
        assert_eq!(
            since_param(1_700_000_000_000_000_042),
            "1700000000.000000042"
        );
        assert_eq!(since_param(5), "0.000000005");
    }
}

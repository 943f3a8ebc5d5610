//! The orchestrator's Prometheus metrics (issue 17): every metric name is defined here and
//! nowhere else.
//!
//! Least privilege: no run data in labels (no run, step, site or agent ids, no workflow
//! names); the labels are a fixed status set, a route template and an HTTP status. Gauges
//! that describe the store (runs by status, agents online) are read from the store at
//! scrape time with one counting query each; the rest is counted where the orchestrator sees
//! it happen, in this process (replicas each count their own: sum them in PromQL).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use vacsine_core::status::RunStatus;

/// Prefix of every metric name.
const PREFIX: &str = "vacsine";

// Metric names (without the prefix; counters get `_total` on the wire).
pub const AGENTS_ONLINE: &str = "agents_online";
pub const AGENTS: &str = "agents";
pub const RUNS: &str = "runs";
pub const STEP_DURATION: &str = "step_duration_seconds";
pub const DISPATCH_LATENCY: &str = "dispatch_latency_seconds";
pub const EVENTS: &str = "events";
pub const DECISIONS: &str = "decisions";
pub const DECISIONS_APPLIED: &str = "decisions_applied";
pub const TIME_TO_MITIGATE: &str = "time_to_mitigate_seconds";
pub const HTTP_REQUESTS: &str = "http_requests";
pub const LOKI_PUSHED: &str = "loki_pushed";
pub const LOKI_DROPPED: &str = "loki_dropped";
pub const LOKI_BUFFERED: &str = "loki_buffered";
pub const POSTURE_PASSING: &str = "posture_passing";
pub const POSTURE_FAILING: &str = "posture_failing";
pub const POSTURE_CONTROLS_PASSING: &str = "posture_controls_passing";
pub const POSTURE_CONTROLS_FAILING: &str = "posture_controls_failing";

/// The content type of [`Metrics::encode`]'s output (OpenMetrics text, which Prometheus
/// scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OriginLabel {
    /// `site` (decided by an agent) or `operator` (made by hand).
    pub origin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabel {
    /// The route template (`/v1/runs/{id}`), never the path asked for; `unmatched` for
    /// paths no route has.
    pub route: String,
    pub status: u16,
}

/// A site of the posture gauges (issue 17). Sites are the operator's own, bounded set (made
/// with `vacsine site create`), not run data: the one place a site name is a label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SiteLabel {
    pub site: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct FrameworkLabel {
    pub site: String,
    /// A framework named in the policies' `references` (`anssi-bp28`, `cis`…).
    pub framework: String,
}

/// The orchestrator's metrics.
pub struct Metrics {
    registry: Registry,
    pub agents_online: Gauge,
    pub agents: Gauge,
    pub runs: Family<StatusLabel, Gauge>,
    pub step_duration: Histogram,
    pub dispatch_latency: Histogram,
    pub events: Counter,
    pub decisions: Family<OriginLabel, Counter>,
    pub decisions_applied: Counter,
    pub time_to_mitigate: Histogram,
    pub http_requests: Family<HttpLabel, Counter>,
    pub loki_pushed: Counter,
    pub loki_dropped: Counter,
    pub loki_buffered: Gauge,
    pub posture_passing: Family<SiteLabel, Gauge>,
    pub posture_failing: Family<SiteLabel, Gauge>,
    pub posture_controls_passing: Family<FrameworkLabel, Gauge>,
    pub posture_controls_failing: Family<FrameworkLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix(PREFIX);
        let m = Metrics {
            agents_online: Gauge::default(),
            agents: Gauge::default(),
            runs: Family::default(),
            // 10 ms … ~45 min.
            step_duration: Histogram::new(exponential_buckets(0.01, 3.0, 12)),
            // 5 ms … ~1.5 h (a run queued for a site cut off waits).
            dispatch_latency: Histogram::new(exponential_buckets(0.005, 4.0, 12)),
            events: Counter::default(),
            decisions: Family::default(),
            decisions_applied: Counter::default(),
            // 10 ms … ~3 h.
            time_to_mitigate: Histogram::new(exponential_buckets(0.01, 4.0, 12)),
            http_requests: Family::default(),
            loki_pushed: Counter::default(),
            loki_dropped: Counter::default(),
            loki_buffered: Gauge::default(),
            posture_passing: Family::default(),
            posture_failing: Family::default(),
            posture_controls_passing: Family::default(),
            posture_controls_failing: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            POSTURE_PASSING,
            "Requirements and rules passing now on a site's nodes (scheduled assessments)",
            m.posture_passing.clone(),
        );
        registry.register(
            POSTURE_FAILING,
            "Requirements and rules failing now on a site's nodes (scheduled assessments)",
            m.posture_failing.clone(),
        );
        registry.register(
            POSTURE_CONTROLS_PASSING,
            "Framework controls passing now at a site (every requirement referencing them passes)",
            m.posture_controls_passing.clone(),
        );
        registry.register(
            POSTURE_CONTROLS_FAILING,
            "Framework controls failing now at a site (a requirement referencing them fails)",
            m.posture_controls_failing.clone(),
        );
        registry.register(
            AGENTS_ONLINE,
            "Agents not revoked and seen within the online window",
            m.agents_online.clone(),
        );
        registry.register(AGENTS, "Agents enrolled and not revoked", m.agents.clone());
        registry.register(RUNS, "Runs in the store by status", m.runs.clone());
        registry.register(
            STEP_DURATION,
            "Duration of the step records agents uploaded",
            m.step_duration.clone(),
        );
        registry.register(
            DISPATCH_LATENCY,
            "From a run's submission to its lease by an agent",
            m.dispatch_latency.clone(),
        );
        registry.register(
            EVENTS,
            "Events uploaded by sites and kept (each once)",
            m.events.clone(),
        );
        registry.register(
            DECISIONS,
            "Decisions kept (each once), by origin",
            m.decisions.clone(),
        );
        registry.register(
            DECISIONS_APPLIED,
            "Decisions reported in effect at a site (each once per site)",
            m.decisions_applied.clone(),
        );
        registry.register(
            TIME_TO_MITIGATE,
            "From an event (or the decision when it has none) to its decision in effect at a site",
            m.time_to_mitigate.clone(),
        );
        registry.register(
            HTTP_REQUESTS,
            "HTTP requests answered, by route template and status",
            m.http_requests.clone(),
        );
        registry.register(
            LOKI_PUSHED,
            "Log lines Loki accepted",
            m.loki_pushed.clone(),
        );
        registry.register(
            LOKI_DROPPED,
            "Log lines given up (buffer full, or refused by Loki as malformed)",
            m.loki_dropped.clone(),
        );
        registry.register(
            LOKI_BUFFERED,
            "Log lines waiting for Loki",
            m.loki_buffered.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Set the gauges read from the store.
    pub fn set_counts(&self, c: &crate::store::MetricCounts) {
        self.agents_online.set(c.agents_online);
        self.agents.set(c.agents);
        // Every status is shown, 0 when no run has it (a series that vanishes is not 0).
        for s in RunStatus::ALL {
            let n = c
                .runs
                .iter()
                .find(|(k, _)| k == s.as_str())
                .map_or(0, |(_, n)| *n);
            self.runs
                .get_or_create(&StatusLabel {
                    status: s.as_str().to_string(),
                })
                .set(n);
        }
    }

    /// Seconds from `from_ms` to `to_ms` (0 when negative: clocks of two machines).
    pub fn secs(from_ms: i64, to_ms: i64) -> f64 {
        (to_ms - from_ms).max(0) as f64 / 1000.0
    }

    /// The exposition text.
    /// The posture gauges from a posture computed now (`crate::posture`).
    pub fn set_posture(&self, v: &crate::posture::PostureView) {
        for s in &v.sites {
            let l = SiteLabel {
                site: s.site.clone(),
            };
            self.posture_passing.get_or_create(&l).set(s.passing as i64);
            self.posture_failing.get_or_create(&l).set(s.failing as i64);
        }
        let mut per: std::collections::BTreeMap<FrameworkLabel, (i64, i64)> = Default::default();
        for c in &v.controls {
            let e = per
                .entry(FrameworkLabel {
                    site: c.site.clone(),
                    framework: c.framework.clone(),
                })
                .or_default();
            match c.status.as_str() {
                "pass" => e.0 += 1,
                "fail" => e.1 += 1,
                _ => {}
            }
        }
        for (l, (p, f)) in per {
            self.posture_controls_passing.get_or_create(&l).set(p);
            self.posture_controls_failing.get_or_create(&l).set(f);
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_in_the_text() {
        let m = Metrics::new();
        m.set_counts(&crate::store::MetricCounts {
            runs: vec![("queued".into(), 3), ("succeeded".into(), 2)],
            agents_online: 1,
            agents: 2,
        });
        m.events.inc_by(4);
        m.http_requests
            .get_or_create(&HttpLabel {
                route: "/v1/runs".into(),
                status: 200,
            })
            .inc();
        m.step_duration.observe(0.5);
        let t = m.encode();
        for line in [
            "vacsine_runs{status=\"queued\"} 3",
            "vacsine_runs{status=\"succeeded\"} 2",
            "vacsine_runs{status=\"failed\"} 0",
            "vacsine_agents_online 1",
            "vacsine_agents 2",
            "vacsine_events_total 4",
            "vacsine_http_requests_total{route=\"/v1/runs\",status=\"200\"} 1",
            "vacsine_step_duration_seconds_count 1",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} missing from:\n{t}");
        }
    }
}

//! Decisions made by the orchestrator itself (issue 16): `mode: orchestrated` Responses run
//! over the events it receives (sites' uploads, TAXII feeds), and the TAXII poller. The
//! decisions join the store like operator decisions do and fan out over each site's signed
//! decision set. A child of `server`.

use super::Srv;
use crate::now_ms;
use crate::taxii::{self, Feed, Intel};
use chrono::Utc;
use std::collections::BTreeMap;
use std::sync::Arc;
use vacsine_response::response::Mode;
use vacsine_response::{decide, AllowList, Context, Decider, EventOrigin, Rule, Verdict};

/// Where events the orchestrator received itself are kept (`vacsine events --site`).
pub const ORCHESTRATOR_SITE: &str = "orchestrator";

impl Srv {
    /// The latest version of every pushed `kind: Response` in `mode: orchestrated`.
    async fn orchestrated_rules(&self) -> anyhow::Result<Vec<Rule>> {
        let mut latest: BTreeMap<String, crate::store::RegistryRow> = BTreeMap::new();
        for r in self.store.registry().await? {
            if r.kind != "Response" {
                continue;
            }
            if latest.get(&r.name).is_none_or(|l| l.version < r.version) {
                latest.insert(r.name.clone(), r);
            }
        }
        let mut rules = Vec::new();
        for row in latest.into_values() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&row.document) else {
                continue;
            };
            match vacsine_contract::decisions::response_rule(&row.name, row.version, &v) {
                Ok(rule) if rule.mode == Mode::Orchestrated => rules.push(rule),
                Ok(_) => {}
                Err(e) => tracing::warn!("Response {}@{}: {e}", row.name, row.version),
            }
        }
        Ok(rules)
    }

    /// Runs the `mode: orchestrated` Responses over events the orchestrator received; each
    /// decision is kept once (its id is deterministic) with its response's scope, and
    /// wakes the long polls. An indicator's `valid_until` bounds its decision's expiry; an
    /// indicator outside its validity decides nothing. How many decisions were new.
    pub(super) async fn decide_orchestrated(&self, intel: &[Intel]) -> anyhow::Result<usize> {
        if intel.is_empty() {
            return Ok(0);
        }
        let rules = self.orchestrated_rules().await?;
        if rules.is_empty() {
            return Ok(0);
        }
        let now = Utc::now();
        let labels = BTreeMap::new();
        let allow = AllowList::default();
        let mut new = 0;
        for i in intel {
            if i.valid_until.is_some_and(|u| u <= now) {
                tracing::info!(
                    "event {} ({}): expired at {}, nothing decided",
                    i.event.id,
                    i.event.summary,
                    i.valid_until.map(|u| u.to_rfc3339()).unwrap_or_default()
                );
                continue;
            }
            if i.valid_from.is_some_and(|f| f > now) {
                tracing::info!(
                    "event {} ({}): valid only from {}, nothing decided now",
                    i.event.id,
                    i.event.summary,
                    i.valid_from.map(|u| u.to_rfc3339()).unwrap_or_default()
                );
                continue;
            }
            for rule in &rules {
                // Decided once per response (a site in its scope stands for them all: the
                // decision is the same one for every site, its scope the response's).
                let site = rule.sites.first().cloned().unwrap_or_default();
                let cx = Context {
                    now,
                    site: &site,
                    site_labels: &labels,
                    decider: Decider::Orchestrator,
                    allow: &allow,
                    origin: EventOrigin::External,
                };
                let outcomes = {
                    let mut w = self
                        .windows
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    w.prune(now, chrono::TimeDelta::days(1));
                    decide(std::slice::from_ref(rule), &i.event, &cx, &mut w)
                };
                for o in outcomes {
                    match o.verdict {
                        Verdict::Decided { mut decision } => {
                            if let Some(u) = i.valid_until {
                                if decision.expires_at.is_none_or(|e| e > u) {
                                    decision.expires_at = Some(u);
                                }
                            }
                            let row = self
                                .sealed_row(
                                    &decision,
                                    &rule.sites,
                                    None,
                                    Some(i.event.time.timestamp_millis()),
                                    now.timestamp_millis(),
                                )
                                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                            if self.store.put_decision(&row).await? {
                                new += 1;
                                tracing::info!(
                                    "decision {} ({}) made by the orchestrator: response {}, event {} from {}",
                                    decision.id,
                                    decision.action,
                                    rule.name,
                                    i.event.id,
                                    i.event.source
                                );
                            }
                        }
                        other => tracing::info!(
                            "response {} on event {} from {}: {}",
                            rule.name,
                            i.event.id,
                            i.event.source,
                            serde_json::to_string(&other).unwrap_or_default()
                        ),
                    }
                }
            }
        }
        if new > 0 {
            self.queue.send_modify(|n| *n += 1);
        }
        Ok(new)
    }

    /// One page of a feed: its events kept (each once), reports logged, the orchestrated
    /// Responses run, then the position after the page kept.
    async fn taxii_page(&self, feed: &Feed, page: taxii::Page) -> anyhow::Result<()> {
        let at = page
            .date_added_last
            .as_deref()
            .and_then(vacsine_events::parse_time)
            .unwrap_or_else(Utc::now);
        let (intel, reports) = taxii::read_page(feed, &page.body, at);
        for r in &reports {
            tracing::warn!("TAXII {}: {}", feed.url, r.summary);
        }
        let mut rows = Vec::with_capacity(intel.len() + reports.len());
        for e in intel.iter().map(|i| &i.event).chain(reports.iter()) {
            rows.push((e.id.clone(), serde_json::to_string(e)?));
        }
        let fresh = self
            .store
            .put_events(ORCHESTRATOR_SITE, &rows, now_ms())
            .await?;
        let decided = self.decide_orchestrated(&intel).await?;
        tracing::info!(
            "TAXII {}: {} indicator(s), {} not evaluable or refused, {fresh} new event(s), {decided} new decision(s)",
            feed.url,
            intel.len(),
            reports.len()
        );
        Ok(())
    }

    /// One poll of a feed from its stored position; the position moves once every page of
    /// the poll is kept (objects added at the same instant may straddle pages, so a
    /// position taken mid-poll could skip the rest). A poll cut short is read again: its
    /// events and decisions are kept once by id.
    async fn taxii_poll(&self, http: &reqwest::Client, feed: &Feed) -> anyhow::Result<usize> {
        let pos = self.store.feed_position(&feed.key()).await?;
        let last = std::sync::Mutex::new(None::<String>);
        let pages = taxii::poll(http, feed, pos.as_deref(), |page| {
            if let Some(p) = &page.date_added_last {
                *last
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p.clone());
            }
            self.taxii_page(feed, page)
        })
        .await?;
        let last = last
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(p) = last.filter(|p| Some(p) != pos.as_ref()) {
            self.store
                .set_feed_position(&feed.key(), &p, now_ms())
                .await?;
            tracing::debug!("TAXII {}: position now {p}", feed.url);
        }
        Ok(pages)
    }
}

/// Polls `feed` every `feed.every` until the orchestrator stops.
pub(super) async fn taxii_loop(srv: Arc<Srv>, feed: Feed) {
    let http = match taxii::client() {
        Ok(h) => h,
        Err(e) => {
            tracing::error!("TAXII {}: {e:#}", feed.url);
            return;
        }
    };
    let mut stopping = srv.stopping.subscribe();
    loop {
        let t0 = std::time::Instant::now();
        match srv.taxii_poll(&http, &feed).await {
            Ok(pages) => tracing::debug!(
                "TAXII {}: polled ({pages} page(s), {:?})",
                feed.url,
                t0.elapsed()
            ),
            Err(e) => tracing::warn!("TAXII {}: {e:#} (again in {:?})", feed.url, feed.every),
        }
        tokio::select! {
            _ = tokio::time::sleep(feed.every) => {}
            _ = stopping.wait_for(|s| *s) => return,
        }
    }
}

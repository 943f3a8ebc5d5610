//! What the store decides, decided once for both backends. SQLite and PostgreSQL hold only
//! their SQL: they read the facts (a lease's expiry, its offers, the records of its run, who
//! holds a run), call these plain functions, and write what they return. A change of policy
//! (how many offers, what a user is told) is made here and tested here, without a database.

use super::StoreError;
use vacsine_core::status::RunStatus;

/// Leases are re-offered at most this many times before the run fails.
pub const MAX_OFFERS: i64 = 3;

/// A lease found past its expiry, as the store read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LapsedLease<'a> {
    /// The agent that held it.
    pub agent: &'a str,
    /// When it expired (ms since the epoch).
    pub expired_at_ms: i64,
    /// How many times the run was offered, this lease included.
    pub offers: i64,
    /// Step records the run got under its leases.
    pub records: i64,
}

/// What becomes of a run whose lease lapsed: offered again (`Queued`) when its agent recorded
/// no step and offers remain, since nothing ran that a second agent would repeat; `Failed`
/// otherwise, never re-run automatically (a step that ran may not be safe to run twice). The
/// message says which, and why, for the run's page.
pub fn lapsed(l: &LapsedLease<'_>) -> (RunStatus, String) {
    let at = crate::rfc3339(l.expired_at_ms);
    let agent = l.agent;
    if l.records == 0 && l.offers < MAX_OFFERS {
        (
            RunStatus::Queued,
            format!(
                "re-offered: agent {agent} stopped renewing its lease (expired at {at}) before recording any step"
            ),
        )
    } else {
        (
            RunStatus::Failed,
            format!(
                "failed: agent {agent} stopped renewing its lease (expired at {at}) after {} step record(s), {} offer(s); the steps it ran are not re-run automatically",
                l.records, l.offers
            ),
        )
    }
}

/// The status an agent ends a run with: a final one, or refused.
pub fn final_status(status: &str) -> Result<RunStatus, StoreError> {
    match RunStatus::parse(status) {
        Some(s) if s.is_final() => Ok(s),
        _ => Err(StoreError::Other(format!(
            "`{status}` is not a final status"
        ))),
    }
}

/// Whether `agent` may add to run `run`, given the run's holder as read (`None`: no such run;
/// `Some(None)`: held by no agent).
pub fn may_record(run: &str, holder: Option<Option<&str>>, agent: &str) -> Result<(), StoreError> {
    match holder {
        None => Err(no_run(run)),
        Some(Some(a)) if a == agent => Ok(()),
        Some(_) => Err(StoreError::Forbidden(format!(
            "run `{run}` is not leased to this agent"
        ))),
    }
}

/// No run of that id.
pub fn no_run(run: &str) -> StoreError {
    StoreError::NotFound(format!("no run `{run}`"))
}

/// No site of that name.
pub fn no_site(name: &str) -> StoreError {
    StoreError::NotFound(format!("no site `{name}`"))
}

/// No agent of that name at the site.
pub fn no_agent(site: &str, name: &str) -> StoreError {
    StoreError::NotFound(format!("no agent `{name}` at site `{site}`"))
}

/// A site of that name exists already.
pub fn site_exists(name: &str) -> StoreError {
    StoreError::Conflict(format!("site `{name}` already exists"))
}

/// A live agent of that name is enrolled at the site already.
pub fn agent_name_taken(site: &str, name: &str) -> StoreError {
    StoreError::Conflict(format!(
        "an agent named `{name}` is already enrolled at site `{site}` (revoke it first with `vacsine site revoke {site} --agent {name}`)"
    ))
}

/// A run's job is signed once: a second signature is refused.
pub fn job_already_signed(run: &str) -> StoreError {
    StoreError::Conflict(format!("run {run} already has a signed job"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(offers: i64, records: i64) -> LapsedLease<'static> {
        LapsedLease {
            agent: "a1",
            expired_at_ms: 0,
            offers,
            records,
        }
    }

    #[test]
    fn a_lapsed_lease_is_offered_again_only_when_nothing_ran_and_offers_remain() {
        let cases = [
            ((1, 0), RunStatus::Queued),
            ((MAX_OFFERS - 1, 0), RunStatus::Queued),
            ((MAX_OFFERS, 0), RunStatus::Failed),
            ((1, 1), RunStatus::Failed),
            ((MAX_OFFERS + 5, 3), RunStatus::Failed),
        ];
        for ((offers, records), want) in cases {
            let (got, msg) = lapsed(&lease(offers, records));
            assert_eq!(got, want, "offers {offers}, records {records}: {msg}");
            assert!(msg.contains("agent a1"), "{msg}");
            assert!(msg.contains("1970-01-01"), "the expiry is named: {msg}");
            match want {
                RunStatus::Queued => assert!(msg.starts_with("re-offered:"), "{msg}"),
                _ => assert!(
                    msg.contains(&format!("{records} step record(s), {offers} offer(s)"))
                        && msg.contains("not re-run"),
                    "{msg}"
                ),
            }
        }
    }

    #[test]
    fn only_a_final_status_ends_a_run() {
        assert_eq!(final_status("succeeded").unwrap(), RunStatus::Succeeded);
        assert_eq!(final_status("rolled_back").unwrap(), RunStatus::RolledBack);
        for s in ["running", "queued", "done", ""] {
            let e = final_status(s).unwrap_err().to_string();
            assert!(e.contains("not a final status"), "{s}: {e}");
        }
    }

    #[test]
    fn only_the_holder_records() {
        assert!(may_record("r", Some(Some("a")), "a").is_ok());
        assert!(matches!(
            may_record("r", Some(Some("b")), "a"),
            Err(StoreError::Forbidden(_))
        ));
        assert!(matches!(
            may_record("r", Some(None), "a"),
            Err(StoreError::Forbidden(_))
        ));
        assert!(matches!(
            may_record("r", None, "a"),
            Err(StoreError::NotFound(_))
        ));
    }
}

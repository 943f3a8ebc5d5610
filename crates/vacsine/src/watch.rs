//! `vacsine watch`: keep a policy in effect on a Docker target. The domain logic (which fixes
//! were applied to a node, their re-application when it restarts, the re-check) is
//! `vacsine_enforce::watch`; here: the checks of the command line, the journal and driver
//! chosen, signals, and the log printed (human, or JSON Lines).

use crate::cli::{PolicyTarget, SimpleFormat, WatchCli};
use crate::exit::Exit;
use crate::output::{print, print_json_line};
use crate::paths::journal_path;
use std::sync::Arc;
use std::time::Duration;
use vacsine_core::record::{rfc3339, StepStatus};
use vacsine_core::target::DriverKind;
use vacsine_enforce::watch::{LogLine, StartLine, Stopped, Watcher};
use vacsine_engine::Journal;

/// `vacsine watch`. Events are handled concurrently on this thread (a `LocalSet`: checking a
/// site is not a `Send` future).
pub async fn watch(a: &WatchCli) -> miette::Result<Exit> {
    let recheck_deadline = Duration::from_secs(a.recheck_timeout);
    tokio::task::LocalSet::new()
        .run_until(watch_here(&a.io, a.format, recheck_deadline))
        .await
}

/// `vacsine watch` on this thread: the inputs, journal and driver checked, then the watch
/// until a signal stops it.
async fn watch_here(
    io: &PolicyTarget,
    format: SimpleFormat,
    recheck_deadline: Duration,
) -> miette::Result<Exit> {
    let inputs = match crate::checkcmd::load(io) {
        Ok(i) => i,
        Err(exit) => return Ok(exit),
    };
    let target = &inputs.target.doc;
    let target_name = target.metadata.name.value.clone();
    if target.spec.driver != DriverKind::Docker {
        return Err(miette::miette!(
            help = "watch a target with `driver: docker`",
            "{}: target `{target_name}` uses `driver: local`: `vacsine watch` follows Docker containers only (it re-applies fixes when a container restarts)",
            io.target.display()
        ));
    }
    let policy_name = inputs.policy.doc.metadata.name.value.clone();
    let enforce_hint = format!(
        "run `vacsine enforce --policy {} --target {}` first (with the same VACSINE_HOME)",
        io.policy.display(),
        io.target.display()
    );
    let path = journal_path()?;
    if !path.exists() {
        return Err(miette::miette!(
            help = enforce_hint,
            "no journal yet at {}: nothing was enforced, so there is nothing to keep in effect",
            path.display()
        ));
    }
    let journal = Journal::open(&path).map_err(|e| miette::miette!("{e}"))?;
    let driver = crate::drivers::for_target(target).map_err(|e| miette::miette!("{e}"))?;
    let log: vacsine_enforce::watch::LogSink = Arc::new(move |l: &LogLine| match format {
        SimpleFormat::Json => print_json_line(l),
        SimpleFormat::Human => print(&human(l)),
    });
    let watcher = Watcher::new(inputs, driver, journal, recheck_deadline, log);
    let runs = watcher
        .journaled_runs()
        .map_err(|e| miette::miette!("{e}"))?;
    if runs.is_empty() {
        return Err(miette::miette!(
            help = enforce_hint,
            "the journal at {} has no applied remediation of policy `{policy_name}` on target `{target_name}`: nothing to keep in effect",
            path.display()
        ));
    }
    let stop = stop_signal()?;
    let stopped = watcher
        .run(path.display().to_string(), stop)
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    // Stopping on a signal is a watch's normal end.
    Ok(match stopped {
        Stopped::Asked => Exit::Ok,
        Stopped::StreamEnded => Exit::Error,
    })
}

/// A future that ends with the name of the first SIGINT or SIGTERM received: what stops a
/// watch.
fn stop_signal() -> miette::Result<impl std::future::Future<Output = &'static str>> {
    use tokio::signal::unix::{signal, SignalKind};
    let (mut int, mut term) = signal(SignalKind::interrupt())
        .and_then(|i| Ok((i, signal(SignalKind::terminate())?)))
        .map_err(|e| miette::miette!("cannot watch for signals: {e}"))?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        }
    })
}

/// The human rendering of a log line.
pub fn human(line: &LogLine) -> String {
    let now = rfc3339(chrono::Utc::now());
    match line {
        LogLine::Watching {
            target,
            policy,
            journal,
            applied,
        } => {
            let what = if applied.is_empty() {
                "no node has an applied fix yet".to_string()
            } else {
                applied
                    .iter()
                    .map(|(n, w)| format!("{n}: {}", w.join(", ")))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            format!(
                "{now} watching target {target} (policy {policy}, journal {journal}); applied fixes: {what}. Ctrl-C to stop.\n"
            )
        }
        LogLine::NodeStarted(s) => node_started(s),
        LogLine::NodeRemoved {
            node,
            container,
            event_time,
        } => format!(
            "{event_time} {node} ({container}) removed; still watching (a container started again under this name is handled like a restart)\n"
        ),
        LogLine::StreamError { message } => {
            format!("{now} event stream lost ({message}); reconnecting\n")
        }
        LogLine::Stopped { reason } => format!("{now} watch stopped: {reason}\n"),
    }
}

/// The human line for a node that (re)started: nothing to re-apply, an error, or what was
/// re-applied and what the re-check found.
fn node_started(s: &StartLine) -> String {
    let mut out = format!("{} {} ({}) started: ", s.event_time, s.node, s.container);
    match s.status.as_str() {
        "nothing_to_reapply" => out.push_str("no fix was applied to it, nothing re-applied"),
        "error" => out.push_str(&format!(
            "error: {}",
            s.message.as_deref().unwrap_or("unknown")
        )),
        _ => out.push_str(&reapplied(s)),
    }
    out.push('\n');
    out
}

/// What was re-applied on a restarted node (each fix: restored, unchanged or its status), how
/// fast, and whether the re-check found the policy in effect.
fn reapplied(s: &StartLine) -> String {
    let fixes: Vec<String> = s
        .fixes
        .iter()
        .map(|f| {
            format!(
                "{} ({})",
                f.workflow,
                if f.status != StepStatus::Succeeded.as_str() {
                    f.status.clone()
                } else if f.changed {
                    "restored".into()
                } else {
                    "unchanged".into()
                }
            )
        })
        .collect();
    let reqs: Vec<String> = s
        .requirements
        .iter()
        .map(|r| format!("{} {}", r.requirement, r.outcome))
        .collect();
    let verdict = match s.status.as_str() {
        "reapplied" => format!(" — in effect ({} ms)", s.verified_ms.unwrap_or(0)),
        "not_in_effect" => " — NOT in effect".to_string(),
        other => format!(
            " — {other}: {}",
            s.message.as_deref().unwrap_or("see the run's logs")
        ),
    };
    format!(
        "re-applied {} in {} ms from the start event (run {}); re-check: {}{verdict}",
        fixes.join(", "),
        s.latency_ms.unwrap_or(0),
        s.run_id.as_deref().unwrap_or("-"),
        reqs.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use vacsine_core::Outcome;
    use vacsine_enforce::watch::{FixLine, RequirementOutcome};

    fn start_line(status: &str) -> StartLine {
        StartLine {
            node: "web".into(),
            container: "edge-web".into(),
            event_time: "2026-01-01T00:00:00Z".into(),
            status: status.into(),
            detected_ms: Some(3),
            fixes: vec![FixLine {
                workflow: "sshd-hardening".into(),
                step: "fix".into(),
                inputs: Default::default(),
                status: "succeeded".into(),
                changed: true,
            }],
            run_id: Some("r1".into()),
            latency_ms: Some(120),
            verified_ms: Some(150),
            requirements: vec![RequirementOutcome {
                requirement: "ssh-root".into(),
                outcome: Outcome::Pass,
                observed: "no".into(),
                fixed_by_watch: true,
            }],
            rechecks: 1,
            message: None,
        }
    }

    #[test]
    fn a_restarted_node_is_one_line() {
        assert_eq!(
            node_started(&start_line("reapplied")),
            "2026-01-01T00:00:00Z web (edge-web) started: re-applied sshd-hardening (restored) in 120 ms from the start event (run r1); re-check: ssh-root pass — in effect (150 ms)\n"
        );
        assert!(node_started(&start_line("not_in_effect")).ends_with(" — NOT in effect\n"));
        assert_eq!(
            node_started(&start_line("nothing_to_reapply")),
            "2026-01-01T00:00:00Z web (edge-web) started: no fix was applied to it, nothing re-applied\n"
        );
        assert!(node_started(&start_line("error")).ends_with("started: error: unknown\n"));
    }
}

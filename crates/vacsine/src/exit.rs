//! The exit codes of `vacsine`, decided here and nowhere else. Commands return an [`Exit`];
//! errors that end a command are mapped by [`Exit::of_error`]; `main` is the only caller of
//! `std::process::exit`. CI pipelines rely on these numbers: changing one is a breaking change
//! (`--help`, the README and `exit_codes_are_stable` below say the same).

/// How `vacsine` ends. The numbers are the contract; see [`Exit::code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Exit {
    /// 0: done; verified, or every check passes.
    Ok,
    /// 1: an error: bad input (located diagnostics), a usage error, an unreachable Docker or
    /// site, an engine problem.
    Error,
    /// 2: the command ran and failures remain: a requirement or rule fails, a run failed,
    /// an agent check or outbox item is refused, a retention limit waits on held runs.
    Failures,
    /// 3: the orchestrator did not take a submission within `--retry-for` (unreachable or
    /// unavailable all along); submit again with `--idempotency-key`.
    Unreachable,
    /// 130: interrupted by SIGINT (Ctrl-C); the sandbox is removed, a run is `cancelled`.
    Interrupted,
    /// 143: stopped by SIGTERM; as [`Exit::Interrupted`].
    Terminated,
}

/// The exit codes as `--help` prints them (kept in step with [`Exit`] by a test).
pub const HELP: &str = "Exit codes: 0 verified or all pass; 1 error (bad input, usage, \
Docker or site unreachable); 2 failures remain (a requirement or rule fails, a run failed, an \
agent check or outbox item refused); 3 the orchestrator did not take a submission within \
--retry-for; 130 interrupted (SIGINT); 143 terminated (SIGTERM).";

impl Exit {
    /// Every exit code (the tests keep `HELP` and this list in step).
    #[cfg(test)]
    pub const ALL: [Exit; 6] = [
        Exit::Ok,
        Exit::Error,
        Exit::Failures,
        Exit::Unreachable,
        Exit::Interrupted,
        Exit::Terminated,
    ];

    /// The process exit status.
    pub const fn code(self) -> i32 {
        match self {
            Exit::Ok => 0,
            Exit::Error => 1,
            Exit::Failures => 2,
            Exit::Unreachable => 3,
            Exit::Interrupted => 130,
            Exit::Terminated => 143,
        }
    }

    /// [`Exit::Failures`] when `failed`, else [`Exit::Ok`].
    pub fn failures_if(failed: bool) -> Exit {
        if failed {
            Exit::Failures
        } else {
            Exit::Ok
        }
    }

    /// A command line clap refused: usage errors are errors (1), not "failures remain" (clap's
    /// own default, 2); `--help` and `--version` succeed.
    pub fn of_usage(e: &clap::Error) -> Exit {
        if e.use_stderr() {
            Exit::Error
        } else {
            Exit::Ok
        }
    }

    /// An error that ended a command: [`Exit::Unreachable`] when the orchestrator was retried
    /// until `--retry-for` ran out ([`crate::orch::GaveUp`]), else [`Exit::Error`].
    pub fn of_error(e: &miette::Report) -> Exit {
        if e.downcast_ref::<crate::orch::GaveUp>().is_some() {
            Exit::Unreachable
        } else {
            Exit::Error
        }
    }

    /// An enforce report's end state (as oscap): [`Exit::Ok`] only when the verdict is
    /// `verified`/`compliant` and no requirement fails at the end.
    pub fn of_report(rep: &vacsine_enforce::Report) -> Exit {
        Exit::failures_if(rep.exit_code() != 0)
    }

    /// A run's final status: [`Exit::Ok`] when it succeeded, else [`Exit::Failures`].
    pub fn of_run(status: vacsine_core::status::RunStatus) -> Exit {
        Exit::failures_if(status != vacsine_core::status::RunStatus::Succeeded)
    }

    /// The exit of a signal that stopped the command: SIGTERM gives 143, else 130.
    pub fn of_signal(terminated: bool) -> Exit {
        if terminated {
            Exit::Terminated
        } else {
            Exit::Interrupted
        }
    }

    /// Whether the command succeeded.
    pub fn is_ok(self) -> bool {
        self == Exit::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_stable() {
        let codes: Vec<i32> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 130, 143]);
    }

    #[test]
    fn help_names_every_exit_code() {
        for e in Exit::ALL {
            let said = HELP
                .split(|c: char| !c.is_ascii_digit())
                .any(|n| n == e.code().to_string());
            assert!(said, "{e:?} ({}) missing from exit::HELP", e.code());
        }
    }

    #[test]
    fn failures_if_and_signals() {
        assert_eq!(Exit::failures_if(true), Exit::Failures);
        assert_eq!(Exit::failures_if(false), Exit::Ok);
        assert_eq!(Exit::of_signal(true).code(), 143);
        assert_eq!(Exit::of_signal(false).code(), 130);
        assert!(Exit::of_run(vacsine_core::status::RunStatus::Succeeded).is_ok());
        assert_eq!(
            Exit::of_run(vacsine_core::status::RunStatus::Failed),
            Exit::Failures
        );
    }
}

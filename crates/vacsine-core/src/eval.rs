//! Pure evaluation of a probe observation into an outcome, with the evidence shown to users.

use crate::node::{Listener, Observation};
use crate::outcome::Outcome;
use crate::policy::{Check, ListeningCheck, PortState, Presence, SshCheck, SshLogin};
use crate::version::Constraint;
use regex::RegexBuilder;
use serde::{Deserialize, Serialize};

/// The verdict of one check on one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub outcome: Outcome,
    /// Short evidence of what was seen (e.g. `mode 0666`, `port 23 open`).
    pub observed: String,
    /// Why the outcome is what it is.
    pub message: String,
}

fn ev(outcome: Outcome, observed: impl Into<String>, message: impl Into<String>) -> Evaluation {
    Evaluation {
        outcome,
        observed: observed.into(),
        message: message.into(),
    }
}

fn re(pattern: &str) -> Result<regex::Regex, String> {
    RegexBuilder::new(pattern)
        .multi_line(true)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| format!("invalid regex `{pattern}`: {e}"))
}

/// Parse an octal mode string ("0644", "644").
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let t = s.trim().trim_start_matches("0o");
    if t.is_empty() || t.len() > 5 {
        return Err(format!("invalid mode `{s}`: expected octal such as 0644"));
    }
    u32::from_str_radix(t, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid mode `{s}`: expected octal such as 0644"))
}

fn first_line(s: &str) -> String {
    let l = s.lines().next().unwrap_or("").trim();
    if l.len() > 120 {
        format!(
            "{}…",
            &l[..l.char_indices().nth(117).map(|(i, _)| i).unwrap_or(l.len())]
        )
    } else {
        l.to_string()
    }
}

/// Evaluate `obs` against `check`. Pure; never panics.
pub fn evaluate(check: &Check, obs: &Observation) -> Evaluation {
    if let Observation::Error { message } = obs {
        return ev(Outcome::Error, "", message.clone());
    }
    match (check, obs) {
        (
            Check::Port(c),
            Observation::Port {
                address,
                open,
                detail,
            },
        ) => {
            // The driver's address already names the port (`ip:port`).
            let seen = format!("{address} {}", if *open { "open" } else { "closed" });
            let want_open = c.expect == PortState::Open;
            if *open == want_open {
                ev(
                    Outcome::Pass,
                    seen,
                    format!(
                        "port {} is {} from {}",
                        c.port,
                        if *open { "open" } else { "closed" },
                        c.from.value
                    ),
                )
            } else {
                ev(
                    Outcome::Fail,
                    seen,
                    format!(
                        "expected port {} {} from {}; {detail}",
                        c.port,
                        if want_open { "open" } else { "closed" },
                        c.from.value
                    ),
                )
            }
        }
        (
            Check::Http(c),
            Observation::Http {
                url,
                status,
                body,
                detail,
            },
        ) => match status {
            None => ev(
                Outcome::Fail,
                format!("{url}: no answer"),
                format!("no HTTP answer from {url}: {detail}"),
            ),
            Some(code) if *code != c.status => ev(
                Outcome::Fail,
                format!("{url}: status {code}"),
                format!("expected status {}, got {code}", c.status),
            ),
            Some(code) => match &c.body_matches {
                Some(p) => match re(p) {
                    Err(e) => ev(Outcome::Error, "", e),
                    Ok(r) if r.is_match(body) => ev(
                        Outcome::Pass,
                        format!("{url}: status {code}"),
                        "status and body as expected",
                    ),
                    Ok(_) => ev(
                        Outcome::Fail,
                        format!("{url}: status {code}, body: {}", first_line(body)),
                        format!("body does not match `{}`", p.value),
                    ),
                },
                None => ev(
                    Outcome::Pass,
                    format!("{url}: status {code}"),
                    format!("status {code} as expected"),
                ),
            },
        },
        (
            Check::File(c),
            Observation::File {
                path,
                stat,
                content,
            },
        ) => eval_file(c, path, stat.as_ref(), content.as_deref()),
        (
            Check::Command(c),
            Observation::Command {
                exit_code,
                stdout,
                stderr,
            },
        ) => {
            let seen = format!(
                "exit {}, stdout: {}",
                exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "none".into()),
                first_line(stdout)
            );
            if *exit_code != Some(c.exit_code) {
                let why = if stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!("; stderr: {}", first_line(stderr))
                };
                return ev(
                    Outcome::Fail,
                    seen,
                    format!("expected exit code {}{why}", c.exit_code),
                );
            }
            if let Some(p) = &c.stdout_matches {
                match re(p) {
                    Err(e) => return ev(Outcome::Error, seen, e),
                    Ok(r) if !r.is_match(stdout) => {
                        return ev(
                            Outcome::Fail,
                            seen,
                            format!("stdout does not match `{}`", p.value),
                        )
                    }
                    _ => {}
                }
            }
            if let Some(p) = &c.stdout_not_matches {
                match re(p) {
                    Err(e) => return ev(Outcome::Error, seen, e),
                    Ok(r) if r.is_match(stdout) => {
                        return ev(Outcome::Fail, seen, format!("stdout matches `{}`", p.value))
                    }
                    _ => {}
                }
            }
            ev(Outcome::Pass, seen, "command output as expected")
        }
        (Check::Process(c), Observation::Process { running }) => {
            let n = running.iter().filter(|p| **p == c.name).count();
            let seen = format!("{n} process(es) named {}", c.name);
            if (n > 0) == c.running {
                ev(
                    Outcome::Pass,
                    seen,
                    if c.running {
                        "running as required"
                    } else {
                        "not running, as required"
                    },
                )
            } else if c.running {
                ev(Outcome::Fail, seen, format!("{} is not running", c.name))
            } else {
                ev(Outcome::Fail, seen, format!("{} is running", c.name))
            }
        }
        (
            Check::Package(c),
            Observation::Package {
                database,
                installed_version,
                broken,
            },
        ) => {
            let seen = match (installed_version, broken) {
                (Some(v), Some(b)) => format!("{} {v} {b} ({database})", c.name),
                (Some(v), None) => format!("{} {v} ({database})", c.name),
                (None, _) => format!("{} not installed ({database})", c.name),
            };
            if let (Some(_), Some(b), true) = (installed_version, broken, c.installed) {
                return ev(
                    Outcome::Fail,
                    seen,
                    format!(
                        "package {} is present but not fully installed ({b})",
                        c.name
                    ),
                );
            }
            match (installed_version, c.installed) {
                (None, false) => ev(Outcome::Pass, seen, "not installed, as required"),
                (None, true) => ev(
                    Outcome::Fail,
                    seen,
                    format!("package {} is not installed", c.name),
                ),
                (Some(_), false) => ev(
                    Outcome::Fail,
                    seen,
                    format!("package {} is installed", c.name),
                ),
                (Some(v), true) => match &c.version {
                    None => ev(Outcome::Pass, seen, "installed"),
                    Some(con) => match Constraint::parse(con) {
                        Err(e) => ev(Outcome::Error, seen, e),
                        Ok(k) if k.matches(v) => ev(
                            Outcome::Pass,
                            seen,
                            format!("version {v} satisfies `{}`", con.value),
                        ),
                        Ok(_) => ev(
                            Outcome::Fail,
                            seen,
                            format!("version {v} does not satisfy `{}`", con.value),
                        ),
                    },
                },
            }
        }
        (
            Check::Firewall(c),
            Observation::Firewall {
                ruleset,
                base_policies,
            },
        ) => {
            let lines = ruleset.lines().filter(|l| !l.trim().is_empty()).count();
            let seen = format!(
                "{lines} ruleset lines; policies: {}",
                fmt_policies(base_policies)
            );
            for p in &c.contains {
                match re(p) {
                    Err(e) => return ev(Outcome::Error, seen, e),
                    Ok(r) if !r.is_match(ruleset) => {
                        return ev(
                            Outcome::Fail,
                            seen,
                            format!("ruleset does not contain `{}`", p.value),
                        )
                    }
                    _ => {}
                }
            }
            for p in &c.not_contains {
                match re(p) {
                    Err(e) => return ev(Outcome::Error, seen, e),
                    Ok(r) if r.is_match(ruleset) => {
                        return ev(
                            Outcome::Fail,
                            seen,
                            format!("ruleset contains `{}`", p.value),
                        )
                    }
                    _ => {}
                }
            }
            for (hook, want) in &c.default_policy {
                let ok = base_policies
                    .get(hook)
                    .is_some_and(|ps| ps.iter().any(|p| p == want));
                if !ok {
                    return ev(
                        Outcome::Fail,
                        seen,
                        format!("no base chain on hook {hook} with policy {want}"),
                    );
                }
            }
            ev(Outcome::Pass, seen, "ruleset as required")
        }
        (Check::User(c), Observation::User { entry }) => match (entry, c.exists) {
            (None, false) => ev(
                Outcome::Pass,
                format!("no user {}", c.name),
                "absent, as required",
            ),
            (None, true) => ev(
                Outcome::Fail,
                format!("no user {}", c.name),
                format!("user {} does not exist", c.name),
            ),
            (Some(e), false) => ev(
                Outcome::Fail,
                format!("user {} uid {}", e.name, e.uid),
                format!("user {} exists", c.name),
            ),
            (Some(e), true) => {
                let seen = format!("user {} uid {} shell {}", e.name, e.uid, e.shell);
                if let Some(uid) = c.uid {
                    if uid != e.uid {
                        return ev(Outcome::Fail, seen, format!("expected uid {uid}"));
                    }
                }
                if let Some(p) = &c.shell {
                    match re(p) {
                        Err(err) => return ev(Outcome::Error, seen, err),
                        Ok(r) if !r.is_match(&e.shell) => {
                            return ev(
                                Outcome::Fail,
                                seen,
                                format!("shell does not match `{}`", p.value),
                            )
                        }
                        _ => {}
                    }
                }
                ev(Outcome::Pass, seen, "user as required")
            }
        },
        (Check::Sysctl(c), Observation::Sysctl { key, value }) => match value {
            None => ev(
                Outcome::Error,
                format!("{key} absent"),
                format!("kernel parameter {key} does not exist in the node"),
            ),
            Some(v) if v.trim() == c.value.trim() => ev(
                Outcome::Pass,
                format!("{key} = {}", v.trim()),
                "value as required",
            ),
            Some(v) => ev(
                Outcome::Fail,
                format!("{key} = {}", v.trim()),
                format!("expected {key} = {}", c.value),
            ),
        },
        (Check::Listening(c), Observation::Listening { sockets }) => eval_listening(c, sockets),
        (
            Check::Ssh(c),
            Observation::Ssh {
                address,
                banner,
                methods,
                login,
                detail,
            },
        ) => eval_ssh(
            c,
            address,
            banner.as_deref(),
            methods.as_deref(),
            *login,
            detail,
        ),
        (
            Check::Scap(_),
            Observation::Scap {
                rule,
                result,
                evidence,
            },
        ) => eval_scap(rule, result, evidence),
        (c, o) => ev(
            Outcome::Error,
            "",
            format!(
                "driver returned a {} observation for a {} check",
                obs_kind(o),
                c.probe()
            ),
        ),
    }
}

fn obs_kind(o: &Observation) -> &'static str {
    match o {
        Observation::Port { .. } => "port",
        Observation::Http { .. } => "http",
        Observation::File { .. } => "file",
        Observation::Command { .. } => "command",
        Observation::Process { .. } => "process",
        Observation::Package { .. } => "package",
        Observation::Firewall { .. } => "firewall",
        Observation::User { .. } => "user",
        Observation::Sysctl { .. } => "sysctl",
        Observation::Listening { .. } => "listening",
        Observation::Ssh { .. } => "ssh",
        Observation::Scap { .. } => "scap",
        Observation::Error { .. } => "error",
    }
}

/// A SCAP rule's XCCDF result as an outcome; the evidence's first lines (the definition's
/// result, then the tests that decided it) are the observation.
fn eval_scap(rule: &str, result: &str, evidence: &[String]) -> Evaluation {
    let outcome = match result {
        "pass" => Outcome::Pass,
        "fail" => Outcome::Fail,
        "error" => Outcome::Error,
        "unknown" => Outcome::Unknown,
        "notapplicable" => Outcome::NotApplicable,
        "notchecked" => Outcome::NotChecked,
        other => {
            return ev(
                Outcome::Error,
                format!("{rule}: {other}"),
                format!("unknown XCCDF result `{other}`"),
            )
        }
    };
    let telling = |e: &&String| {
        [": false", ": error", ": not evaluated"]
            .iter()
            .any(|k| e.contains(k))
    };
    let mut lines: Vec<&String> = evidence.iter().take(1).collect();
    lines.extend(evidence.iter().skip(1).filter(telling).take(3));
    let observed: String = lines
        .iter()
        .map(|l| l.chars().take(300).collect::<String>())
        .collect::<Vec<_>>()
        .join("; ");
    let message = match outcome {
        Outcome::Pass => format!("rule {rule} passes"),
        Outcome::Fail => format!("rule {rule} fails"),
        _ => format!("rule {rule}: {result}"),
    };
    ev(outcome, observed, message)
}

fn eval_listening(c: &ListeningCheck, sockets: &[Listener]) -> Evaluation {
    let what = format!("{} port {}", c.protocol.as_str(), c.port);
    let mut on_port: Vec<String> = sockets
        .iter()
        .filter(|s| s.protocol == c.protocol && s.port == c.port)
        .map(ToString::to_string)
        .collect();
    on_port.sort();
    on_port.dedup();
    let seen = if on_port.is_empty() {
        let mut all: Vec<String> = sockets.iter().map(ToString::to_string).collect();
        all.sort();
        all.dedup();
        format!(
            "nothing listening on {what}; listening: {}",
            if all.is_empty() {
                "none".to_string()
            } else {
                all.join(", ")
            }
        )
    } else {
        format!("listening: {}", on_port.join(", "))
    };
    match (on_port.is_empty(), c.expect) {
        (false, Presence::Present) => ev(Outcome::Pass, seen, format!("{what} is listening")),
        (true, Presence::Absent) => ev(
            Outcome::Pass,
            seen,
            format!("nothing listens on {what}, as required"),
        ),
        (true, Presence::Present) => ev(
            Outcome::Fail,
            seen,
            format!("nothing listens on {what} in the node"),
        ),
        (false, Presence::Absent) => ev(
            Outcome::Fail,
            seen,
            format!("a socket listens on {what} in the node (a firewall rule does not remove it)"),
        ),
    }
}

fn eval_ssh(
    c: &SshCheck,
    address: &str,
    banner: Option<&str>,
    methods: Option<&[String]>,
    login: Option<bool>,
    detail: &str,
) -> Evaluation {
    let Some(banner) = banner else {
        return ev(
            Outcome::Fail,
            format!("{address}: no SSH server"),
            format!(
                "no SSH server answered on {address} from {}: {detail}",
                c.from.value
            ),
        );
    };
    let mut seen = format!("{address}: {}", first_line(banner));
    if let Some(m) = methods {
        seen.push_str(&format!(
            "; methods for {}: {}",
            c.user,
            if m.is_empty() {
                "none".to_string()
            } else {
                m.join(",")
            }
        ));
    }
    if let Some(l) = login {
        seen.push_str(&format!(
            "; key login as {}: {}",
            c.user,
            if l { "allowed" } else { "denied" }
        ));
    }
    let why = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    let e = &c.expect;
    if let Some(p) = &e.banner_matches {
        match re(p) {
            Err(err) => return ev(Outcome::Error, seen, err),
            Ok(r) if !r.is_match(banner) => {
                return ev(
                    Outcome::Fail,
                    seen,
                    format!("banner does not match `{}`", p.value),
                )
            }
            _ => {}
        }
    }
    if !e.methods_include.is_empty() || !e.methods_exclude.is_empty() {
        let Some(m) = methods else {
            return ev(
                Outcome::Error,
                seen,
                format!("the server's authentication methods could not be read{why}"),
            );
        };
        for want in &e.methods_include {
            if !m.contains(&want.value) {
                return ev(
                    Outcome::Fail,
                    seen,
                    format!("method {} is not offered to {}", want.value, c.user),
                );
            }
        }
        for no in &e.methods_exclude {
            if m.contains(&no.value) {
                return ev(
                    Outcome::Fail,
                    seen,
                    format!("method {} is offered to {}", no.value, c.user),
                );
            }
        }
    }
    if let Some(want) = &e.login {
        let Some(l) = login else {
            return ev(
                Outcome::Error,
                seen,
                format!("the key login could not be tried{why}"),
            );
        };
        match (want.value, l) {
            (SshLogin::Allowed, false) => {
                return ev(
                    Outcome::Fail,
                    seen,
                    format!("{} cannot log in with the key", c.user),
                )
            }
            (SshLogin::Denied, true) => {
                return ev(
                    Outcome::Fail,
                    seen,
                    format!("{} logs in with the key from {}", c.user, c.from.value),
                )
            }
            _ => {}
        }
    }
    ev(Outcome::Pass, seen, "SSH server behaves as required")
}

fn fmt_policies(p: &std::collections::BTreeMap<String, Vec<String>>) -> String {
    if p.is_empty() {
        return "none".into();
    }
    p.iter()
        .map(|(h, ps)| format!("{h}={}", ps.join("/")))
        .collect::<Vec<_>>()
        .join(", ")
}

fn eval_file(
    c: &crate::policy::FileCheck,
    path: &str,
    stat: Option<&crate::node::FileStat>,
    content: Option<&str>,
) -> Evaluation {
    let Some(st) = stat else {
        return if c.exists {
            ev(
                Outcome::Fail,
                format!("{path} missing"),
                format!("{path} does not exist"),
            )
        } else {
            ev(
                Outcome::Pass,
                format!("{path} missing"),
                "absent, as required",
            )
        };
    };
    let seen = format!(
        "{path} mode {:04o} owner {}:{}",
        st.mode,
        st.owner.clone().unwrap_or_else(|| st.uid.to_string()),
        st.group.clone().unwrap_or_else(|| st.gid.to_string())
    );
    if !c.exists {
        return ev(Outcome::Fail, seen, format!("{path} exists"));
    }
    if let Some(m) = &c.mode {
        match parse_mode(m) {
            Err(e) => return ev(Outcome::Error, seen, e),
            Ok(want) if want != st.mode => {
                return ev(Outcome::Fail, seen, format!("expected mode {want:04o}"))
            }
            _ => {}
        }
    }
    if let Some(m) = &c.max_mode {
        match parse_mode(m) {
            Err(e) => return ev(Outcome::Error, seen, e),
            Ok(max) if st.mode & !max != 0 => {
                return ev(
                    Outcome::Fail,
                    seen,
                    format!(
                        "mode {:04o} allows more than {max:04o} (extra bits {:04o})",
                        st.mode,
                        st.mode & !max
                    ),
                )
            }
            _ => {}
        }
    }
    if let Some(o) = &c.owner {
        if st.owner.as_deref() != Some(o.as_str()) && st.uid.to_string() != *o {
            return ev(Outcome::Fail, seen, format!("expected owner {o}"));
        }
    }
    if let Some(g) = &c.group {
        if st.group.as_deref() != Some(g.as_str()) && st.gid.to_string() != *g {
            return ev(Outcome::Fail, seen, format!("expected group {g}"));
        }
    }
    if c.contains.is_some() || c.not_contains.is_some() {
        let Some(text) = content else {
            return ev(
                Outcome::Error,
                seen,
                format!("content of {path} could not be read"),
            );
        };
        if let Some(p) = &c.contains {
            match re(p) {
                Err(e) => return ev(Outcome::Error, seen, e),
                Ok(r) if !r.is_match(text) => {
                    return ev(
                        Outcome::Fail,
                        seen,
                        format!("content does not match `{}`", p.value),
                    )
                }
                _ => {}
            }
        }
        if let Some(p) = &c.not_contains {
            match re(p) {
                Err(e) => return ev(Outcome::Error, seen, e),
                Ok(r) => {
                    if let Some(m) = r.find(text) {
                        let line = text[..m.start()].lines().count().max(1);
                        return ev(
                            Outcome::Fail,
                            format!("{seen}; line {line}: {}", first_line(&text[m.start()..])),
                            format!("content matches `{}`", p.value),
                        );
                    }
                }
            }
        }
    }
    ev(Outcome::Pass, seen, "file as required")
}

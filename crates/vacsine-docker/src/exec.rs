//! Running programs: host tools inside a container's namespaces (`nsenter`), and `docker exec`.

use crate::error::DockerError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::Docker;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use vacsine_core::node::ExecOutput;

/// Output kept per stream; the rest is read (the process is never blocked or stopped by it)
/// and dropped, counted in [`ExecOutput`].
pub(crate) const OUTPUT_LIMIT: usize = 4 << 20;

fn push_bounded(buf: &mut Vec<u8>, dropped: &mut u64, data: &[u8]) {
    let room = OUTPUT_LIMIT.saturating_sub(buf.len());
    let keep = data.len().min(room);
    buf.extend_from_slice(&data[..keep]);
    *dropped += (data.len() - keep) as u64;
}

/// Run a host program (argv, no shell) with optional stdin; killed at `timeout`.
pub(crate) async fn host_tool(
    argv: &[String],
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<ExecOutput, DockerError> {
    let tool = argv.first().cloned().unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&tool);
    cmd.args(&argv[1..])
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| DockerError::Tool {
        tool: tool.clone(),
        detail: format!("cannot start: {e} (is it installed on the host?)"),
    })?;
    if let (Some(data), Some(mut w)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        tokio::spawn(async move {
            let _ = w.write_all(&data).await;
            let _ = w.shutdown().await;
        });
    }
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => Ok(ExecOutput {
            exit_code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
            timed_out: false,
            ..Default::default()
        }),
        Ok(Err(e)) => Err(DockerError::Tool {
            tool,
            detail: e.to_string(),
        }),
        // Dropping the future drops the child: kill_on_drop kills it.
        Err(_) => Ok(ExecOutput {
            exit_code: None,
            stdout: Vec::new(),
            stderr: format!("{tool} killed after {timeout:?}").into_bytes(),
            timed_out: true,
            ..Default::default()
        }),
    }
}

/// `nsenter -t <pid> <ns flags> -- argv...`
pub(crate) fn nsenter(pid: i64, ns: &[&str], argv: &[&str]) -> Vec<String> {
    let mut v = vec!["nsenter".to_string(), "-t".into(), pid.to_string()];
    v.extend(ns.iter().map(|s| s.to_string()));
    v.push("--".into());
    v.extend(argv.iter().map(|s| s.to_string()));
    v
}

/// Host tool output as a Result: a non-zero exit becomes an error naming the tool and stderr.
pub(crate) fn check_ok(argv: &[String], out: ExecOutput) -> Result<ExecOutput, DockerError> {
    if out.exit_code == Some(0) {
        return Ok(out);
    }
    let what = argv.join(" ");
    Err(DockerError::Tool {
        tool: what,
        detail: if out.timed_out {
            "timed out".into()
        } else {
            format!(
                "exit {:?}: {}",
                out.exit_code,
                String::from_utf8_lossy(&out.stderr).trim()
            )
        },
    })
}

/// `docker exec` of `argv` in `container`, with env and optional stdin, killed at `timeout`.
///
/// On timeout the exec's process (its host pid comes from `inspect_exec`) and every descendant
/// of it are killed with SIGKILL, and `timed_out` is set.
pub(crate) async fn docker_exec(
    docker: &Docker,
    container: &str,
    argv: &[String],
    env: &[(String, String)],
    stdin: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<ExecOutput, DockerError> {
    if argv.is_empty() {
        return Err(DockerError::Tool {
            tool: "docker exec".into(),
            detail: "empty argv".into(),
        });
    }
    let env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let created = docker
        .create_exec(
            container,
            CreateExecOptions {
                cmd: Some(argv.to_vec()),
                env: if env.is_empty() { None } else { Some(env) },
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                attach_stdin: Some(stdin.is_some()),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| DockerError::api("exec in", container, e))?;
    let id = created.id;
    let started = docker
        .start_exec(
            &id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            }),
        )
        .await
        .map_err(|e| DockerError::api("start exec in", container, e))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return Err(DockerError::api(
            "exec in",
            container,
            "engine detached the exec",
        ));
    };
    if let Some(data) = stdin {
        tokio::spawn(async move {
            let _ = input.write_all(&data).await;
            let _ = input.flush().await;
            let _ = input.shutdown().await;
        });
    } else {
        drop(input);
    }
    let (mut stdout, mut stdout_dropped) = (Vec::new(), 0);
    let (mut stderr, mut stderr_dropped) = (Vec::new(), 0);
    let collect = async {
        while let Some(item) = output.next().await {
            match item {
                Ok(bollard::container::LogOutput::StdOut { message }) => {
                    push_bounded(&mut stdout, &mut stdout_dropped, &message)
                }
                Ok(bollard::container::LogOutput::StdErr { message }) => {
                    push_bounded(&mut stderr, &mut stderr_dropped, &message)
                }
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    };
    let finished = tokio::time::timeout(timeout, collect).await;
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(DockerError::api("read exec output of", container, e)),
        Err(_) => {
            let pid = docker
                .inspect_exec(&id)
                .await
                .ok()
                .and_then(|i| i.pid)
                .unwrap_or(0);
            if pid > 0 {
                kill_tree(pid as i32);
            }
            return Ok(ExecOutput {
                exit_code: None,
                stdout,
                stderr,
                timed_out: true,
                stdout_dropped,
                stderr_dropped,
            });
        }
    }
    // The stream ends when the process exits; the exit code may lag a few ms behind.
    let mut exit_code = None;
    for _ in 0..50 {
        match docker.inspect_exec(&id).await {
            Ok(i) if i.running == Some(true) => tokio::time::sleep(Duration::from_millis(10)).await,
            Ok(i) => {
                exit_code = i.exit_code.map(|c| c as i32);
                break;
            }
            Err(e) => return Err(DockerError::api("inspect exec in", container, e)),
        }
    }
    Ok(ExecOutput {
        exit_code,
        stdout,
        stderr,
        timed_out: false,
        stdout_dropped,
        stderr_dropped,
    })
}

/// SIGKILL `pid` and all its descendants (host pids).
pub(crate) fn kill_tree(pid: i32) {
    let mut children: std::collections::HashMap<i32, Vec<i32>> = Default::default();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                if let Some(ppid) = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|s| s.parse::<i32>().ok())
                {
                    children.entry(ppid).or_default().push(p);
                }
            }
        }
    }
    let mut todo = vec![pid];
    let mut all = Vec::new();
    while let Some(p) = todo.pop() {
        all.push(p);
        if let Some(c) = children.get(&p) {
            todo.extend(c);
        }
    }
    for p in all {
        if let Some(pid) = rustix::process::Pid::from_raw(p) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

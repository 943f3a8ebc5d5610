//! `file`: ensure a line, a whole content, a mode, or absence. Reports `changed` accurately and
//! captures the previous bytes, mode and ownership (or absence) for undo.
//!
//! **Symbolic links.** A link is never replaced silently:
//! * by default (`follow: true`) a step whose `path` is a symbolic link acts on the file the
//!   link leads to, resolved as the node sees it (in a container, inside its root: an absolute
//!   or `..` target cannot leave it). A message names the resolved path, the link is left as
//!   it is, and undo restores the bytes of that resolved file;
//! * with `follow: false` the link itself is replaced by a regular file (a message says so),
//!   and undo recreates the link with its original target;
//! * `state: absent` removes the link itself, never its target; undo recreates the link.
//!
//! **Mount points.** Writing goes through [`NodeOps::write_file`]: a temporary file renamed over
//! the path, except for a mount point (a bind-mounted file), which is rewritten in place; a
//! read-only mount is an error naming the path.

use super::{check_typed, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;
use vacsine_core::eval::parse_mode;
use vacsine_core::node::{FileContent, NodeOps};
use vacsine_core::record::Level;

#[derive(
    Debug, Deserialize, serde::Serialize, schemars::JsonSchema, Clone, Copy, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
enum FileState {
    #[default]
    Present,
    Absent,
}

/// Arguments of `file`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct FileArgs {
    /// Absolute path on the node.
    path: String,
    /// A line that must be present (with `regexp`: replaces the lines it matches; without: appended when missing).
    #[serde(default)]
    line: Option<String>,
    /// Regular expression selecting the lines `line` replaces (needs `line`).
    #[serde(default)]
    regexp: Option<String>,
    /// The whole content of the file (instead of `line`).
    #[serde(default)]
    content: Option<String>,
    /// Permission bits: octal text (`"0644"`) or octal digits as a number (`644`).
    #[serde(default)]
    mode: Option<ModeArg>,
    /// `present` (default) or `absent` (the file is removed).
    #[serde(default)]
    state: FileState,
    /// When `path` is a symbolic link: act on its target (true), or replace the link (false).
    #[serde(default = "yes")]
    follow: bool,
}

fn yes() -> bool {
    true
}

/// Most symbolic links followed in a row (as the kernel's limit).
const MAX_LINKS: usize = 40;

/// `path` lexically tidied: no empty or `.` components (`..` is kept: only the node can tell
/// where it leads).
fn tidy(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// Follow `path` while it is a symbolic link, as the node sees it.
async fn resolve_links(node: &dyn NodeOps, path: &str) -> Result<String, String> {
    let mut p = path.to_string();
    for _ in 0..MAX_LINKS {
        match node.read_link(&p).await.map_err(|e| e.to_string())? {
            None => return Ok(p),
            Some(t) if t.starts_with('/') => p = tidy(&t),
            Some(t) => {
                let dir = p.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                p = tidy(&format!("{dir}/{t}"));
            }
        }
    }
    Err(format!(
        "{path}: more than {MAX_LINKS} symbolic links in a row"
    ))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum ModeArg {
    Text(String),
    Number(u32),
}

impl ModeArg {
    fn parse(&self) -> Result<u32, String> {
        match self {
            // A YAML number like 644 is meant as octal digits.
            ModeArg::Number(n) => parse_mode(&n.to_string()),
            ModeArg::Text(s) => parse_mode(s),
        }
    }
}

pub struct FileExecutor;

pub(crate) fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn unhex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 {
        return Err("odd hex length".into());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| e.to_string()))
        .collect()
}

fn prior_json(path: &str, prior: &Option<FileContent>) -> Value {
    match prior {
        None => json!({"path": path, "exists": false}),
        Some(f) => json!({
            "path": path, "exists": true, "hex": hex(&f.content),
            "mode": f.mode, "uid": f.uid, "gid": f.gid,
        }),
    }
}

/// Ensure `line` is present: replace lines matching `regexp` (all of them), else append.
fn ensure_line(old: &str, line: &str, regexp: Option<&regex::Regex>) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut found = false;
    for l in old.lines() {
        let hit = match regexp {
            // As Ansible's lineinfile: the line itself already present counts as a match,
            // so a second run changes nothing.
            Some(re) => re.is_match(l) || l == line,
            None => l == line,
        };
        if hit {
            if !found {
                out.push(line);
            } else if regexp.is_none() {
                out.push(l);
            }
            found = true;
        } else {
            out.push(l);
        }
    }
    if !found {
        out.push(line);
    }
    let mut s = out.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    // Keep the file byte-identical when nothing had to change (e.g. no final newline).
    if s.trim_end_matches('\n') == old.trim_end_matches('\n') && found {
        return old.to_string();
    }
    s
}

/// Permission bits of an existing path (file or directory), via `stat` in the node.
async fn stat_mode(node: &dyn NodeOps, path: &str, timeout: Duration) -> Result<u32, String> {
    let out = node
        .exec(
            &[
                "stat".into(),
                "-c".into(),
                "%a".into(),
                "--".into(),
                path.into(),
            ],
            &[],
            None,
            timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    if out.exit_code != Some(0) {
        return Err(format!(
            "{path}: cannot read its mode: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    u32::from_str_radix(text.trim(), 8)
        .map_err(|_| format!("{path}: unexpected stat output `{}`", text.trim()))
}

async fn remove(node: &dyn NodeOps, path: &str, timeout: Duration) -> Result<(), String> {
    let out = node
        .exec(
            &["rm".into(), "-f".into(), "--".into(), path.into()],
            &[],
            None,
            timeout,
        )
        .await
        .map_err(|e| e.to_string())?;
    if out.exit_code == Some(0) {
        Ok(())
    } else {
        Err(format!(
            "removing {path} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[async_trait]
impl Executor for FileExecutor {
    fn name(&self) -> &'static str {
        "file"
    }
    fn summary(&self) -> &'static str {
        "Make a file on the node hold a line, a content, a mode, or be absent; reports a change only when it made one."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<FileArgs>()
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<FileArgs>("file", args)?;
        if args.get("line").is_some() && args.get("content").is_some() {
            return Err("give either `line` or `content`, not both".into());
        }
        if args.get("regexp").is_some() && args.get("line").is_none() {
            return Err("`regexp` needs `line` (the replacement)".into());
        }
        if let Some(Value::String(r)) = args.get("regexp") {
            if !crate::template::is_templated(r) {
                regex::Regex::new(r).map_err(|e| format!("invalid `regexp`: {e}"))?;
            }
        }
        Ok(())
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        match self.apply(ctx, args).await {
            Ok(r) => r,
            Err(e) => StepResult::failed(e),
        }
    }
    async fn undo(&self, ctx: &ExecCtx, undo: Value) -> StepResult {
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        let path = undo["path"].as_str().unwrap_or_default().to_string();
        if path.is_empty() {
            return StepResult::failed("undo data has no path");
        }
        if let Some(target) = undo["symlink"].as_str() {
            return match node.symlink(target, &path).await {
                Ok(()) => StepResult::ok(true).msg(
                    Level::Info,
                    format!("recreated symbolic link {path} → {target}"),
                ),
                Err(e) => StepResult::failed(e.to_string()),
            };
        }
        if undo["chmod_only"] == json!(true) {
            let m = undo["mode"].as_u64().unwrap_or(0) as u32;
            return match node.chmod(&path, m).await {
                Ok(()) => StepResult::ok(true)
                    .msg(Level::Info, format!("restored mode {m:04o} of {path}")),
                Err(e) => StepResult::failed(e.to_string()),
            };
        }
        if undo["exists"] == json!(false) {
            return match remove(node.as_ref(), &path, ctx.timeout).await {
                Ok(()) => StepResult::ok(true).msg(Level::Info, format!("removed {path}")),
                Err(e) => StepResult::failed(e),
            };
        }
        let bytes = match unhex(undo["hex"].as_str().unwrap_or_default()) {
            Ok(b) => b,
            Err(e) => return StepResult::failed(format!("corrupt undo data: {e}")),
        };
        let n = |k: &str| undo[k].as_u64().unwrap_or(0) as u32;
        match node
            .write_file(&path, &bytes, n("mode"), n("uid"), n("gid"))
            .await
        {
            Ok(()) => StepResult::ok(true).msg(
                Level::Info,
                format!(
                    "restored {path} ({} bytes, mode {:04o})",
                    bytes.len(),
                    n("mode")
                ),
            ),
            Err(e) => StepResult::failed(e.to_string()),
        }
    }
}

impl FileExecutor {
    async fn apply(&self, ctx: &ExecCtx, args: Value) -> Result<StepResult, String> {
        let a: FileArgs = parse_args("file", args)?;
        let node = ctx.node()?;
        if !a.path.starts_with('/') {
            return Err(format!("`path` must be absolute, got `{}`", a.path));
        }
        if a.line.is_some() && a.content.is_some() {
            return Err("give either `line` or `content`, not both".into());
        }
        if a.line.as_deref().is_some_and(|l| l.contains('\n')) {
            return Err("`line` must be a single line".into());
        }
        let mode = a.mode.as_ref().map(ModeArg::parse).transpose()?;
        let regexp = a
            .regexp
            .as_deref()
            .map(regex::Regex::new)
            .transpose()
            .map_err(|e| format!("invalid `regexp`: {e}"))?;
        let link = node.read_link(&a.path).await.map_err(|e| e.to_string())?;
        if let Some(target) = &link {
            if a.state == FileState::Absent {
                return self.remove_link(ctx, node.as_ref(), &a.path, target).await;
            }
            if !a.follow {
                return self
                    .replace_link(ctx, node.as_ref(), &a, target, mode, regexp.as_ref())
                    .await;
            }
        }
        // Through a link (`follow`), the file acted on is its target.
        let path = match &link {
            Some(_) => resolve_links(node.as_ref(), &a.path).await?,
            None => a.path.clone(),
        };
        let mut r = self
            .apply_to(ctx, node.as_ref(), &a, &path, mode, regexp.as_ref())
            .await?;
        if let Some(target) = &link {
            r.messages.insert(
                0,
                super::message(
                    Level::Info,
                    format!(
                        "{} is a symbolic link to {target}: acting on {path} (`follow: false` \
                         would replace the link)",
                        a.path
                    ),
                ),
            );
        }
        Ok(r)
    }

    /// `state: absent` on a symbolic link: the link goes, its target stays.
    async fn remove_link(
        &self,
        ctx: &ExecCtx,
        node: &dyn NodeOps,
        path: &str,
        target: &str,
    ) -> Result<StepResult, String> {
        let undo = json!({"path": path, "symlink": target});
        ctx.save_undo(&undo)?;
        remove(node, path, ctx.timeout).await?;
        let mut r = StepResult::ok(true).msg(
            Level::Info,
            format!("removed symbolic link {path} (→ {target}; the target is left as it is)"),
        );
        r.undo = Some(undo);
        Ok(r)
    }

    /// `follow: false` on a symbolic link: a regular file takes the link's place. Its content
    /// starts from what the link showed (for `line`), its mode and owner from the target.
    async fn replace_link(
        &self,
        ctx: &ExecCtx,
        node: &dyn NodeOps,
        a: &FileArgs,
        target: &str,
        mode: Option<u32>,
        regexp: Option<&regex::Regex>,
    ) -> Result<StepResult, String> {
        let shown = node.read_file(&a.path).await.map_err(|e| e.to_string())?;
        let new = match (&a.content, &a.line) {
            (Some(c), _) => c.as_bytes().to_vec(),
            (None, Some(line)) => {
                let old = shown
                    .as_ref()
                    .map(|f| String::from_utf8_lossy(&f.content).into_owned())
                    .unwrap_or_default();
                ensure_line(&old, line, regexp).into_bytes()
            }
            (None, None) => {
                return Err(format!(
                    "{} is a symbolic link and `follow: false` would replace it: give \
                     `content` or `line` (a link has no mode of its own)",
                    a.path
                ))
            }
        };
        let (m, uid, gid) = match &shown {
            Some(f) => (mode.unwrap_or(f.mode), f.uid, f.gid),
            None => (mode.unwrap_or(0o644), 0, 0),
        };
        let undo = json!({"path": a.path, "symlink": target});
        ctx.save_undo(&undo)?;
        node.write_file(&a.path, &new, m, uid, gid)
            .await
            .map_err(|e| e.to_string())?;
        let mut r = StepResult::ok(true).msg(
            Level::Info,
            format!(
                "replaced symbolic link {} (→ {target}) with a regular file ({} bytes, mode \
                 {m:04o}; `follow: false`)",
                a.path,
                new.len()
            ),
        );
        r.undo = Some(undo);
        Ok(r)
    }

    /// The step on a path that is not a symbolic link.
    async fn apply_to(
        &self,
        ctx: &ExecCtx,
        node: &dyn NodeOps,
        a: &FileArgs,
        path: &str,
        mode: Option<u32>,
        regexp: Option<&regex::Regex>,
    ) -> Result<StepResult, String> {
        // Mode only (files or directories): stat and chmod, the content is never read.
        if let (Some(m), None, None, FileState::Present) = (mode, &a.content, &a.line, a.state) {
            let old = stat_mode(node, path, ctx.timeout).await?;
            if old == m {
                return Ok(StepResult::ok(false)
                    .msg(Level::Info, format!("{path} already has mode {m:04o}")));
            }
            let undo = json!({"path": path, "chmod_only": true, "mode": old});
            ctx.save_undo(&undo)?;
            node.chmod(path, m).await.map_err(|e| e.to_string())?;
            let mut r =
                StepResult::ok(true).msg(Level::Info, format!("{path}: mode {old:04o} → {m:04o}"));
            r.undo = Some(undo);
            return Ok(r);
        }
        let prior = node.read_file(path).await.map_err(|e| e.to_string())?;
        let undo = prior_json(path, &prior);

        if a.state == FileState::Absent {
            if prior.is_none() {
                return Ok(StepResult::ok(false).msg(Level::Info, format!("{path} already absent")));
            }
            ctx.save_undo(&undo)?;
            remove(node, path, ctx.timeout).await?;
            let mut r = StepResult::ok(true).msg(Level::Info, format!("removed {path}"));
            r.undo = Some(undo);
            return Ok(r);
        }

        let old_bytes = prior.as_ref().map(|p| p.content.as_slice());
        let new_content: Option<Vec<u8>> = match (&a.content, &a.line) {
            (Some(c), _) => Some(c.as_bytes().to_vec()),
            (None, Some(line)) => {
                let old = old_bytes
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Some(ensure_line(&old, line, regexp).into_bytes())
            }
            (None, None) => None,
        };

        match (&prior, new_content) {
            (None, None) => Err(format!(
                "{path} does not exist; give `content` or `line` to create it"
            )),
            (None, Some(new)) => {
                let m = mode.unwrap_or(0o644);
                ctx.save_undo(&undo)?;
                node.write_file(path, &new, m, 0, 0)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut r = StepResult::ok(true).msg(
                    Level::Info,
                    format!("created {path} ({} bytes, mode {m:04o})", new.len()),
                );
                r.undo = Some(undo);
                Ok(r)
            }
            (Some(p), Some(new)) if new != p.content => {
                let m = mode.unwrap_or(p.mode);
                ctx.save_undo(&undo)?;
                node.write_file(path, &new, m, p.uid, p.gid)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut r = StepResult::ok(true).msg(
                    Level::Info,
                    format!("updated {path} ({} → {} bytes)", p.content.len(), new.len()),
                );
                if m != p.mode {
                    r.push(Level::Info, format!("mode {:04o} → {m:04o}", p.mode));
                }
                r.undo = Some(undo);
                Ok(r)
            }
            (Some(p), _) => match mode {
                Some(m) if m != p.mode => {
                    ctx.save_undo(&undo)?;
                    node.chmod(path, m).await.map_err(|e| e.to_string())?;
                    let mut r = StepResult::ok(true)
                        .msg(Level::Info, format!("mode {:04o} → {m:04o}", p.mode));
                    r.undo = Some(undo);
                    Ok(r)
                }
                _ => {
                    Ok(StepResult::ok(false).msg(Level::Info, format!("{path} already as wanted")))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ensure_line_cases() {
        let re = regex::Regex::new("^#?PermitRootLogin").unwrap();
        let check = |old: &str, line: &str, re: Option<&regex::Regex>, want: &str| {
            assert_eq!(ensure_line(old, line, re), want, "old={old:?}");
        };
        check(
            "a\n#PermitRootLogin yes\nb\n",
            "PermitRootLogin no",
            Some(&re),
            "a\nPermitRootLogin no\nb\n",
        );
        check(
            "a\nPermitRootLogin no\n",
            "PermitRootLogin no",
            Some(&re),
            "a\nPermitRootLogin no\n",
        );
        check(
            "a\nb",
            "PermitRootLogin no",
            Some(&re),
            "a\nb\nPermitRootLogin no\n",
        );
        check("", "x", None, "x\n");
        check("x", "x", None, "x");
        check("a\nx\n", "x", None, "a\nx\n");
        check(
            "PermitRootLogin yes\nPermitRootLogin no\n",
            "PermitRootLogin no",
            Some(&re),
            "PermitRootLogin no\n",
        );
    }

    #[test]
    fn tidy_keeps_dotdot() {
        assert_eq!(tidy("/etc//./ssh/"), "/etc/ssh");
        assert_eq!(tidy("/etc/../x"), "/etc/../x");
        assert_eq!(tidy("/"), "/");
    }

    #[test]
    fn hex_roundtrip() {
        let b = vec![0u8, 1, 0xfe, 0xff, b'a'];
        assert_eq!(unhex(&hex(&b)).unwrap(), b);
    }
}

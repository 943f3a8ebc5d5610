//! Regression tests of issue 7 on the local node: files behind symbolic links and on mount
//! points, commands with large output, and background processes left by a step.

use crate::support::*;
use serde_json::json;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use vacsine_core::record::StepStatus;
use vacsine_engine::RunStatus;

fn texts(r: &vacsine_engine::RunReport, id: &str) -> String {
    recs(r, id)
        .iter()
        .flat_map(|x| x.messages.iter().map(|m| m.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

fn link_target(p: &Path) -> Option<String> {
    std::fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.file_type().is_symlink())
        .map(|_| std::fs::read_link(p).unwrap().to_str().unwrap().to_string())
}

const LINK_SPEC: &str = r#"
  inputs:
    follow: { type: string }
    unfollow: { type: string }
    gone: { type: string }
  steps:
    - id: follow
      uses: file
      with: { path: "{{ inputs.follow }}", line: "b=2" }
    - id: unfollow
      uses: file
      with: { path: "{{ inputs.unfollow }}", content: "own\n", follow: false }
    - id: gone
      uses: file
      with: { path: "{{ inputs.gone }}", state: absent }
"#;

/// Issue 7: the file executor replaced a symbolic link with a regular file (its target left
/// untouched) and undo did not bring the link back.
#[tokio::test]
async fn issue_7_file_steps_through_symlinks_and_undo_restores_links() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("real")).unwrap();
    for (name, text) in [("a.conf", "a=1\n"), ("b.conf", "b\n"), ("c.conf", "c\n")] {
        std::fs::write(d.join("real").join(name), text).unwrap();
    }
    // Relative links (one through a second link), and an absolute one.
    std::os::unix::fs::symlink("hop.conf", d.join("follow.conf")).unwrap();
    std::os::unix::fs::symlink("./real/../real/a.conf", d.join("hop.conf")).unwrap();
    std::os::unix::fs::symlink(d.join("real/b.conf"), d.join("unfollow.conf")).unwrap();
    std::os::unix::fs::symlink("real/c.conf", d.join("gone.conf")).unwrap();
    let i = json!({
        "follow": d.join("follow.conf").to_str(),
        "unfollow": d.join("unfollow.conf").to_str(),
        "gone": d.join("gone.conf").to_str(),
    });
    let e = engine();
    let r = run_on(&e, wf("links", LINK_SPEC), i.clone()).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");

    // Default: through the link to its target; the link stays a link.
    assert_eq!(
        link_target(&d.join("follow.conf")).as_deref(),
        Some("hop.conf")
    );
    assert_eq!(
        std::fs::read_to_string(d.join("real/a.conf")).unwrap(),
        "a=1\nb=2\n"
    );
    let msgs = texts(&r, "follow");
    assert!(
        msgs.contains(&format!(
            "acting on {}",
            d.join("real/../real/a.conf").display()
        )),
        "{msgs}"
    );
    // `follow: false`: the link is replaced (and says so), its target untouched.
    assert_eq!(link_target(&d.join("unfollow.conf")), None);
    assert_eq!(
        std::fs::read_to_string(d.join("unfollow.conf")).unwrap(),
        "own\n"
    );
    assert_eq!(
        std::fs::read_to_string(d.join("real/b.conf")).unwrap(),
        "b\n"
    );
    assert!(texts(&r, "unfollow").contains("replaced symbolic link"));
    // `state: absent`: the link goes, the target stays.
    assert!(std::fs::symlink_metadata(d.join("gone.conf")).is_err());
    assert_eq!(
        std::fs::read_to_string(d.join("real/c.conf")).unwrap(),
        "c\n"
    );

    // A second run changes nothing.
    let r2 = run_on(&e, wf("links", LINK_SPEC), i).await;
    assert_eq!(r2.status, RunStatus::Succeeded, "{r2:#?}");
    assert!(!recs(&r2, "follow")[0].changed && !recs(&r2, "gone")[0].changed);

    let rb = e
        .rollback(&r.run_id, nodes(&[local("local")]))
        .await
        .unwrap();
    assert_eq!(rb.status, RunStatus::RolledBack, "{rb:#?}");
    assert_eq!(
        link_target(&d.join("follow.conf")).as_deref(),
        Some("hop.conf")
    );
    assert_eq!(
        std::fs::read_to_string(d.join("real/a.conf")).unwrap(),
        "a=1\n"
    );
    assert_eq!(
        link_target(&d.join("unfollow.conf")),
        Some(d.join("real/b.conf").to_str().unwrap().to_string()),
        "undo must recreate the replaced link"
    );
    assert_eq!(
        link_target(&d.join("gone.conf")).as_deref(),
        Some("real/c.conf")
    );
}

/// A bind mount undone on drop.
struct BindMount(std::path::PathBuf);

impl BindMount {
    fn new(src: &Path, dst: &Path) -> Option<Self> {
        let ok = Command::new("mount")
            .arg("--bind")
            .arg(src)
            .arg(dst)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| BindMount(dst.to_path_buf()))
    }
    fn read_only(&self) {
        let st = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Issue 7: a file that is a mount point (a bind-mounted file) cannot be renamed over: it is
/// written in place; a read-only mount gives an error naming the path.
#[tokio::test]
async fn issue_7_file_on_a_bind_mount_is_written_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    std::fs::write(&src, "orig\n").unwrap();
    std::fs::write(&dst, "hidden\n").unwrap();
    let Some(mnt) = BindMount::new(&src, &dst) else {
        assert!(
            std::env::var_os("VACSINE_REQUIRE_DOCKER").is_none(),
            "mount --bind unavailable (needs root)"
        );
        eprintln!("SKIP: mount --bind unavailable");
        return;
    };
    let spec = r#"
  inputs:
    path: { type: string }
  steps:
    - id: write
      uses: file
      with: { path: "{{ inputs.path }}", content: "new\n" }
"#;
    let e = engine();
    let i = json!({"path": dst.to_str()});
    let r = run_on(&e, wf("mnt", spec), i.clone()).await;
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    // Through the mount: the mounted file itself changed, the mount is still there.
    assert_eq!(std::fs::read_to_string(&src).unwrap(), "new\n");
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "new\n");
    let rb = e
        .rollback(&r.run_id, nodes(&[local("local")]))
        .await
        .unwrap();
    assert_eq!(rb.status, RunStatus::RolledBack, "{rb:#?}");
    assert_eq!(std::fs::read_to_string(&src).unwrap(), "orig\n");

    mnt.read_only();
    let r = run_on(&e, wf("mnt", spec), i).await;
    let rec = &recs(&r, "write")[0];
    assert_eq!(rec.status, StepStatus::Failed, "{rec:#?}");
    let err = rec.error.as_deref().unwrap();
    assert!(
        err.contains(&format!("{} is on a read-only mount", dst.display())),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&src).unwrap(), "orig\n");
    drop(mnt);
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "hidden\n");
}

/// Issue 7: a command writing more than the 8 MiB read cap was killed by SIGPIPE halfway.
/// Output past the cap is drained and dropped, the count of dropped bytes recorded.
#[tokio::test]
async fn issue_7_command_with_20_mib_of_output_runs_to_completion() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("done");
    let w = wf(
        "big",
        r#"
  inputs:
    marker: { type: string }
  steps:
    - id: big
      uses: command
      with: { argv: [sh, -c, 'head -c 20971520 /dev/zero && touch "$1"', sh, "{{ inputs.marker }}"] }
"#,
    );
    let r = run(w, json!({"marker": marker.to_str()})).await;
    let rec = &recs(&r, "big")[0];
    assert_eq!(rec.status, StepStatus::Succeeded, "{:?}", rec.error);
    assert!(marker.exists(), "the command stopped halfway");
    let msgs = texts(&r, "big");
    assert!(
        msgs.contains(&format!("stdout: {} bytes dropped", 20971520 - 8388608)),
        "{msgs}"
    );
}

/// Issue 7: a step leaving a background process: the process survived and the output the step
/// had printed was discarded. When the main process ends, its process group is ended too and
/// the output is kept.
#[tokio::test]
async fn issue_7_background_child_is_ended_and_output_kept() {
    let w = wf(
        "bg",
        r#"
  steps:
    - id: bg
      uses: command
      with: { argv: [sh, -c, 'sleep 300 & echo "pid $!"; echo hello'] }
"#,
    );
    let t = Instant::now();
    let r = run(w, json!({})).await;
    let took = t.elapsed();
    assert_eq!(status(&r, "bg"), StepStatus::Succeeded, "{r:#?}");
    let out = stdout(&r, "bg");
    assert!(out.contains("hello\n"), "output lost: {out:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let pid: u32 = out
        .lines()
        .find_map(|l| l.strip_prefix("pid "))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {out:?}"));
    let deadline = Instant::now() + Duration::from_secs(2);
    while !process_gone(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        process_gone(pid),
        "background sleep {pid} survived the step"
    );
}

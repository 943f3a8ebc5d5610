//! Action images without a registry, end to end (real orchestrator and agent processes, real
//! Docker): an image pushed with `vacsine push image` and removed locally is fetched by the
//! agent over the sealed channel, verified, loaded and run; an image never pushed is refused
//! at submission; an archive damaged in the orchestrator's data folder is refused by the
//! agent and its run fails saying why.

use super::{run_records, status_final, text, wait_until, Agent, Orch};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const ACTION: &str = r#"#!/bin/busybox sh
read -r doc
printf '{"changed": false, "outputs": {"greeting": "%s", "doc": %s}}\n' "$GREETING" "$doc"
"#;

/// Images this test made (references and IDs), removed at the end.
pub(super) struct Images(pub(super) Vec<String>);

impl Drop for Images {
    fn drop(&mut self) {
        for i in self.0.iter().rev() {
            let _ = Command::new("docker").args(["rmi", "-f", i]).output();
        }
    }
}

/// Build `tag`: FROM scratch, a static busybox and the action, which greets with `greeting`.
/// `false` when Docker or a static busybox is missing.
pub(super) fn build(tag: &str, greeting: &str) -> bool {
    let Some(bb) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        return false;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::copy(bb, dir.path().join("bin/busybox")).unwrap();
    std::fs::write(dir.path().join("action.sh"), ACTION).unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM scratch\nCOPY bin/busybox /bin/busybox\nCOPY action.sh /action.sh\nRUN [\"/bin/busybox\", \"chmod\", \"755\", \"/action.sh\"]\nENV GREETING={greeting}\nENTRYPOINT [\"/action.sh\"]\n"),
    )
    .unwrap();
    Command::new("docker")
        .args(["build", "-q", "-t", tag])
        .arg(dir.path())
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

fn container_workflow(dir: &Path, name: &str, image: &str) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata:\n  name: {name}\nspec:\n  steps:\n    - id: act\n      uses: container\n      timeout: 60s\n      with:\n        image: \"{image}\"\n        input: {{who: site}}\n"
        ),
    )
    .unwrap();
    p
}

fn submit_run(o: &Orch, wf: &Path, site: &str) -> std::process::Output {
    o.cli(&[
        "run",
        wf.to_str().unwrap(),
        "--site",
        site,
        "--detach",
        "--format",
        "json",
    ])
}

fn run_id(o: &std::process::Output) -> String {
    assert!(o.status.success(), "{}", text(o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["run_id"].as_str().unwrap().to_string()
}

fn finished(o: &Orch, id: &str) -> serde_json::Value {
    wait_until(Duration::from_secs(120), "the run to end", || {
        let v = o.run(id);
        status_final(&v).then_some(v)
    })
}

fn local_id(reference: &str) -> Option<String> {
    let o = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", reference])
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[test]
fn pushed_image_is_fetched_verified_loaded_and_run_by_the_agent() {
    if !crate::docker_available() {
        return;
    }
    let tag = format!("vacsine-test/pushed-action:{}", std::process::id());
    let mut made = Images(vec![tag.clone()]);
    if !build(&tag, "hello") {
        assert!(
            std::env::var_os("VACSINE_REQUIRE_DOCKER").is_none(),
            "the test image cannot be built"
        );
        eprintln!("SKIP: no static busybox or docker build failed");
        return;
    }
    let built_id = local_id(&tag).unwrap();
    made.0.push(built_id.clone());
    let d = tempfile::tempdir().unwrap();
    let o = Orch::start(&d.path().join("orch"), "127.0.0.1:0", 5000);

    // Push: the archive's digest, version 1; pushed again, nothing new.
    let t0 = std::time::Instant::now();
    let v = o.json(&["push", "image", &tag, "--format", "json"]);
    eprintln!("push image: {} ms", t0.elapsed().as_millis());
    let pushed = &v["images"][0];
    assert_eq!(
        (
            pushed["name"].as_str(),
            pushed["version"].as_i64(),
            pushed["created"].as_bool()
        ),
        (Some(tag.as_str()), Some(1), Some(true)),
        "{v}"
    );
    let digest = pushed["digest"].as_str().unwrap().to_string();
    let size = pushed["size"].as_u64().unwrap();
    assert!(digest.starts_with("sha256:") && size > 100_000, "{v}");
    let archive = o.data.join("images").join(format!(
        "sha256-{}.tar",
        digest.trim_start_matches("sha256:")
    ));
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&archive).unwrap();
        assert_eq!((m.len(), m.permissions().mode() & 0o777), (size, 0o600));
    }
    let v = o.json(&["push", "image", &tag, "--format", "json"]);
    assert_eq!(v["images"][0]["created"], false, "{v}");
    assert_eq!(v["images"][0]["digest"], digest.as_str(), "{v}");
    let reg = o.json(&["registry", "list", "--format", "json"]);
    assert!(
        reg["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "Image" && e["name"] == tag.as_str() && e["version"] == 1),
        "{reg}"
    );
    // Not an image here: a clear error, nothing pushed.
    let bad = o.cli(&["push", "image", "vacsine-test/absent:0"]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad));
    assert!(
        text(&bad).contains("docker save vacsine-test/absent:0"),
        "{}",
        text(&bad)
    );

    // The site has no copy and no registry to pull from.
    crate::docker(&["rmi", &tag]);
    assert!(local_id(&tag).is_none());

    let key = o.site("img-site");
    let adata = d.path().join("agent");
    let a = Agent::start(&o, &key, "img-site-1", &adata);
    let wf = container_workflow(d.path(), "greet-action", &tag);
    let id = run_id(&submit_run(&o, &wf, "img-site"));
    let v = finished(&o, &id);
    assert_eq!(v["status"], "succeeded", "{v}\n{}", a.log());
    let recs = run_records(&o, &id);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0]["outputs"]["greeting"], "hello", "{}", recs[0]);
    assert_eq!(
        recs[0]["outputs"]["doc"]["input"]["who"], "site",
        "{}",
        recs[0]
    );
    assert!(
        a.log()
            .contains(&format!("image {tag} ({digest}) fetched ({size} bytes"))
            && a.log().contains("digest verified, loaded as sha256:"),
        "{}",
        a.log()
    );
    let loaded = local_id(&tag).expect("the agent loaded the image");
    made.0.push(loaded.clone());

    // Another local image takes the tag: the agent runs the image it loaded, by ID.
    assert!(build(&tag, "impostor"));
    let impostor = local_id(&tag).unwrap();
    made.0.push(impostor.clone());
    assert_ne!(impostor, loaded);
    let id = run_id(&submit_run(&o, &wf, "img-site"));
    let v = finished(&o, &id);
    assert_eq!(v["status"], "succeeded", "{v}");
    let recs = run_records(&o, &id);
    assert_eq!(recs[0]["outputs"]["greeting"], "hello", "{}", recs[0]);
    assert!(
        a.log().contains(&format!(
            "image {tag} ({digest}) already loaded as {loaded}"
        )),
        "{}",
        a.log()
    );

    // Never pushed: refused at submission, naming the step and the fix.
    let wf2 = container_workflow(d.path(), "unpushed", "vacsine-test/never-pushed:1");
    let r = submit_run(&o, &wf2, "img-site");
    assert!(!r.status.success());
    let t = text(&r);
    assert!(
        t.contains("step `act` of workflow `unpushed` runs image `vacsine-test/never-pushed:1`")
            && t.contains("vacsine push image vacsine-test/never-pushed:1"),
        "{t}"
    );
    // A templated image cannot be resolved at submission.
    let wf3 = container_workflow(d.path(), "templated", "acme/{{ inputs.x }}:1");
    let t = text(&submit_run(&o, &wf3, "img-site"));
    assert!(t.contains("templated"), "{t}");

    // The orchestrator's copy damaged (same size): the agent, which must fetch it again
    // (its loaded image removed), refuses it and the run fails visibly.
    crate::docker(&["rmi", "-f", &loaded]);
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&archive, &bytes).unwrap();
    let id = run_id(&submit_run(&o, &wf, "img-site"));
    let v = finished(&o, &id);
    assert_eq!(v["status"], "failed", "{v}");
    let msg = v["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&format!(
            "not {digest} as the signed job lists: refused and deleted"
        )),
        "{v}"
    );
    assert!(run_records(&o, &id).is_empty(), "a step ran");
    assert_eq!(local_id(&loaded), None, "the damaged archive was loaded");
    let left: Vec<_> = std::fs::read_dir(adata.join("images"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "partial archives left: {left:?}");
}

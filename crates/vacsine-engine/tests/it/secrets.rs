//! Secrets: usable by templates and scripts, masked in every record, never in the journal.

use crate::support::*;
use serde_json::json;
use vacsine_engine::{Catalog, Engine, Journal, RunRequest, RunStatus};

#[tokio::test]
async fn secrets_are_masked_everywhere_and_never_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let secret = format!("s3cr3t-{}", uniq());
    let env_secret = format!("envs3cr3t-{}", uniq());
    let file = dir.path().join("token");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let var = format!("VX_TEST_SECRET_{}", uniq().to_uppercase());
    std::env::set_var(&var, &env_secret);
    let spec = format!(
        r#"
  inputs:
    note: {{ type: string }}
  secrets:
    token: {{ file: "{}" }}
    other: {{ env: {var} }}
  steps:
    - id: echo
      uses: command
      with: {{ argv: [echo, "token={{{{ secrets.token }}}} other={{{{ secrets.other }}}}"] }}
      outputs:
        leaked: "{{{{ result.stdout }}}}"
        direct: "{{{{ secrets.token }}}}"
    - id: script
      uses: script
      with:
        script: |
          echo "env has $VACSINE_SECRET_TOKEN"
          echo "stderr has $VACSINE_SECRET_OTHER" >&2
          exit 1
"#,
        file.display()
    );
    let w = wf("secrets", &spec);
    let jpath = dir.path().join("journal.db");
    let e = Engine::new(Journal::open(&jpath).unwrap(), Catalog::new());
    let mut req = RunRequest::new(w);
    req.inputs = inputs(json!({"note": format!("the input holds {secret} too")}));
    req.nodes = nodes(&[local("l")]);
    let r = e.run(req).await.unwrap();
    assert_eq!(r.status, RunStatus::Failed);
    let all = serde_json::to_string(&r).unwrap();
    assert!(
        !all.contains(&secret) && !all.contains(&env_secret),
        "secret in report: {all}"
    );
    assert_eq!(stdout(&r, "echo"), "token=*** other=***\n");
    assert_eq!(stdout(&r, "script"), "env has ***\n");
    assert_eq!(recs(&r, "script")[0].stderr, "stderr has ***\n");
    assert_eq!(r.outputs["echo"]["direct"], json!("***"));
    drop(e);
    // No byte of the journal (database, WAL, shared memory) holds a secret.
    let mut seen = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("journal.db")
        {
            let bytes = std::fs::read(&p).unwrap();
            seen += bytes.len();
            for s in [&secret, &env_secret] {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                    "secret found in {}",
                    p.display()
                );
            }
        }
    }
    assert!(seen > 0);
    // The journal still holds the run, masked.
    let j = Journal::open(&jpath).unwrap();
    let runs = j.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(j.records(&runs[0].id).unwrap().len(), 2);
}

#[tokio::test]
async fn missing_secret_is_an_error_before_running() {
    let w = wf(
        "nosecret",
        r#"
  secrets:
    token: { env: VX_DEFINITELY_NOT_SET_4242 }
  steps:
    - id: a
      uses: command
      with: { argv: ["true"] }
"#,
    );
    let e = engine();
    let mut req = RunRequest::new(w);
    req.nodes = nodes(&[local("l")]);
    let err = e.run(req).await.unwrap_err().to_string();
    assert!(
        err.contains("secret `token`") && err.contains("VX_DEFINITELY_NOT_SET_4242"),
        "{err}"
    );
}

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

/// Issue 7, fault 3: with `Pa55` and `Pa55word-L0NG…` both secrets, masking one at a time in
/// name order left `***word-L0NG…`; encoded forms and single lines of a multi-line secret were
/// not masked at all.
#[tokio::test]
async fn issue_7_overlapping_encoded_and_multi_line_secrets_are_masked() {
    let dir = tempfile::tempdir().unwrap();
    let short = "Pa55";
    let long = "Pa55word-L0NGsecretTail";
    let key = "-----BEGIN KEY-----\nMIIBVQIBADANBgkqhkiG9w0B\n-----END KEY-----";
    let (va, vb) = (
        format!("VX_TEST_A_{}", uniq().to_uppercase()),
        format!("VX_TEST_B_{}", uniq().to_uppercase()),
    );
    std::env::set_var(&va, short);
    std::env::set_var(&vb, long);
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, key).unwrap();
    // Secret names sort `a_short` before `b_long`: the old order that left the tail.
    let spec = format!(
        r#"
  secrets:
    a_short: {{ env: {va} }}
    b_long: {{ env: {vb} }}
    key: {{ file: "{}" }}
  steps:
    - id: leak
      uses: script
      with:
        script: |
          echo "plain $VACSINE_SECRET_B_LONG"
          printf '%s' "$VACSINE_SECRET_B_LONG" | base64 -w0; echo
          printf '%s' "$VACSINE_SECRET_B_LONG" | od -An -tx1 | tr -d ' \n'; echo
          printf '%s\n' "$VACSINE_SECRET_KEY" | sed -n 2p
"#,
        key_file.display()
    );
    let jpath = dir.path().join("journal.db");
    let e = Engine::new(Journal::open(&jpath).unwrap(), Catalog::new());
    let mut req = RunRequest::new(wf("overlap", &spec));
    req.nodes = nodes(&[local("l")]);
    let r = e.run(req).await.unwrap();
    assert_eq!(r.status, RunStatus::Succeeded, "{r:#?}");
    assert_eq!(stdout(&r, "leak"), "plain ***\n***\n***\n***\n");
    drop(e);
    let forms = [
        long,
        "word-L0NG",
        "UGE1NXdvcmQtTDBOR3NlY3JldFRhaWw",                // base64
        "50613535776f72642d4c304e477365637265745461696c", // hex
        "MIIBVQIBADANBgkqhkiG9w0B",                       // one line of the key
    ];
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("journal.db")
        {
            let bytes = std::fs::read(&p).unwrap();
            for s in &forms {
                assert!(
                    !bytes.windows(s.len()).any(|w| w == s.as_bytes()),
                    "{s} found in {}",
                    p.display()
                );
            }
        }
    }
}

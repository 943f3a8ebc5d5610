//! Remediation from SCAP content: a policy's `spec.import` of an SSG profile (and the
//! `vacsine enforce --scap` inputs), fixed with SSG's own Ansible tasks through the `ansible`
//! executor, verified in the sandbox (fail → pass, idempotence) and on the target, on a real
//! Debian container built from Debian's packages. Containers and networks are this module's
//! own (`vacsine-scapfix-*`), not the demo site's.

use crate::{dexec, docker, opts, root, DockerDriver};
use std::path::{Path, PathBuf};
use std::process::Command;
use vacsine_core::Outcome;
use vacsine_enforce::inputs::{load_inputs, load_scap_inputs, ScapImportArgs};
use vacsine_enforce::{enforce, Report, Verdict};

const DS: &str = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml";
const IMAGE: &str = "vacsine-test/scapfix:1";
/// Rules of the `standard` profile whose Ansible fixes work in a container.
const GOOD: [&str; 4] = [
    "file_permissions_etc_shadow",
    "file_permissions_etc_passwd",
    "file_owner_etc_group",
    "package_telnetd_removed",
];

fn required() -> bool {
    std::env::var("VACSINE_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// SSG content, ansible-playbook and the test image; None (skip) when missing on a laptop.
fn prerequisites() -> Option<()> {
    let ansible = Command::new("ansible-playbook")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !Path::new(DS).exists() || !ansible {
        assert!(
            !required(),
            "{DS} (apt-get install ssg-debian) and ansible-playbook on PATH are required"
        );
        eprintln!("skipping: {DS} or ansible-playbook missing");
        return None;
    }
    // telnetd to remove, openssh-server for an sshd rule, python3 (+ apt bindings) for Ansible.
    vacsine_docker::debian::ensure_image(
        IMAGE,
        &["python3", "python3-apt", "telnetd", "openssh-server"],
    )
    .expect("test image from Debian's packages");
    Some(())
}

fn docker_cli(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A non-compliant Debian node of our own on its own network, removed on drop.
struct Node {
    name: String,
    net: String,
    dir: tempfile::TempDir,
}

impl Node {
    fn start(tag: &str) -> Node {
        let name = format!("vacsine-scapfix-{tag}-{}", std::process::id());
        let net = format!("{name}-net");
        let _ = Command::new("docker").args(["rm", "-f", &name]).output();
        let _ = Command::new("docker")
            .args(["network", "rm", &net])
            .output();
        docker_cli(&["network", "create", &net]);
        docker_cli(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            &net,
            IMAGE,
            "sleep",
            "infinity",
        ]);
        // SSG's Debian 11 content applies to Debian 11 (the image may be newer); then break
        // what the good rules check.
        docker_cli(&[
            "exec",
            &name,
            "sh",
            "-c",
            "echo 11.11 > /etc/debian_version && chmod 0644 /etc/shadow && chmod 0666 /etc/passwd && chown 1:1 /etc/group",
        ]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("target.yaml"),
            format!(
                "apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {{name: scapfix}}\nspec:\n  driver: docker\n  nodes:\n    - {{name: deb, container: {name}}}\n"
            ),
        )
        .unwrap();
        Node { name, net, dir }
    }
    fn target(&self) -> PathBuf {
        self.dir.path().join("target.yaml")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.net])
            .output();
    }
}

fn row<'r>(rep: &'r Report, id: &str) -> &'r vacsine_enforce::report::RequirementRow {
    rep.requirements
        .iter()
        .find(|r| r.id == id)
        .unwrap_or_else(|| panic!("no row for {id}: {:?}", rep.requirements))
}

fn sandbox_gone(rep: &Report) {
    let id = rep.sandbox.id.as_deref().expect("a sandbox was made");
    let left = docker_cli(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=vacsine.sandbox={id}"),
    ]);
    assert!(left.is_empty(), "sandbox {id} left containers: {left}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scap_import_fixes_each_rule_in_the_sandbox_then_on_the_target() {
    if docker().await.is_none() || prerequisites().is_none() {
        return;
    }
    let node = Node::start("good");
    let policy = node.dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {{name: ssg-standard}}\nspec:\n  import:\n    scap: {DS}\n    profile: standard\n    rules: [{}]\n",
            GOOD.join(", ")
        ),
    )
    .unwrap();
    let inputs = load_inputs(&policy, &node.target(), &[]).unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(
        inputs
            .policy
            .doc
            .spec
            .requirements
            .iter()
            .map(|r| r.id.value.as_str())
            .collect::<Vec<_>>(),
        GOOD.to_vec(),
        "one requirement per imported rule, in the content's order"
    );
    let rep = enforce(&DockerDriver, &inputs, &opts())
        .await
        .expect("enforce");
    eprintln!("{}", rep.summary);
    for p in &rep.phases {
        eprintln!("  {:<45} {:>6} ms", p.name, p.duration_ms);
    }
    assert_eq!(rep.verdict, Verdict::Verified, "{}", rep.summary);
    for id in GOOD {
        let r = row(&rep, id);
        assert_eq!(
            (
                r.target_before,
                r.sandbox_before,
                r.sandbox_after,
                r.target_after
            ),
            (Outcome::Fail, Outcome::Fail, Outcome::Pass, Outcome::Pass),
            "{id}: {r:?}"
        );
    }
    // Each fix is the rule's own Ansible, one plan step per rule.
    let plan = rep.plan.as_ref().unwrap();
    let mut workflows: Vec<&str> = plan.items.iter().map(|i| i.workflow.as_str()).collect();
    workflows.sort();
    let mut want: Vec<String> = GOOD.iter().map(|g| format!("scap-{g}")).collect();
    want.sort();
    assert_eq!(workflows, want);
    let in_phase = |ph: &str| -> Vec<&vacsine_core::record::StepRecord> {
        rep.steps
            .iter()
            .filter(|s| s.phase == ph)
            .map(|s| &s.record)
            .collect()
    };
    let ansible: Vec<_> = in_phase("sandbox-apply")
        .into_iter()
        .filter(|r| r.executor == "ansible")
        .collect();
    assert_eq!(ansible.len(), GOOD.len(), "one ansible step per rule");
    assert!(
        ansible.iter().all(|r| r.changed),
        "each fix changed its node"
    );
    // Idempotence: the second run in the sandbox changed nothing.
    let again = in_phase("sandbox-idempotence");
    assert!(!again.is_empty());
    assert!(
        again.iter().all(|r| !r.changed),
        "second run changed: {:?}",
        again
            .iter()
            .filter(|r| r.changed)
            .map(|r| &r.step_id)
            .collect::<Vec<_>>()
    );
    // The target itself.
    assert_eq!(
        dexec(
            &node.name,
            &[
                "stat",
                "-c",
                "%a %u",
                "/etc/shadow",
                "/etc/passwd",
                "/etc/group"
            ]
        )
        .await
        .trim(),
        "640 0\n644 0\n644 0"
    );
    let dpkg = Command::new("docker")
        .args([
            "exec",
            &node.name,
            "dpkg-query",
            "-W",
            "-f",
            "${Status}",
            "telnetd",
        ])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&dpkg.stdout);
    assert!(
        !status.contains("install ok installed"),
        "telnetd still installed: {status}"
    );
    sandbox_gone(&rep);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scap_fix_that_does_not_make_its_rule_pass_is_reported_and_the_target_untouched() {
    if docker().await.is_none() || prerequisites().is_none() {
        return;
    }
    let node = Node::start("bad");
    // As `vacsine enforce --scap DS --profile standard --rule … --container-as-machine`:
    // SSG's sshd fix skips containers (`ansible_virtualization_type`), so its rule, evaluated
    // as on a machine, still fails after it ran.
    let args = ScapImportArgs {
        datastream: DS.into(),
        profile: "standard".into(),
        tailoring: None,
        rules: vec![
            "file_permissions_etc_shadow".into(),
            "sshd_disable_root_login".into(),
        ],
        container_as_machine: true,
    };
    let inputs = load_scap_inputs(&args, &node.target(), &[]).unwrap_or_else(|e| panic!("{e:?}"));
    // Issue 18: by default the shadow fix would go on without the sshd one
    // (`partially_verified`); --all-or-nothing keeps the target untouched.
    let mut o = opts();
    o.all_or_nothing = true;
    let rep = enforce(&DockerDriver, &inputs, &o).await.expect("enforce");
    eprintln!("{}", rep.summary);
    assert_eq!(rep.verdict, Verdict::RejectedInSandbox, "{}", rep.summary);
    let ssh = row(&rep, "sshd_disable_root_login");
    assert_eq!(
        (ssh.target_before, ssh.sandbox_after, ssh.target_after),
        (Outcome::Fail, Outcome::Fail, Outcome::NotChecked),
        "{ssh:?}"
    );
    assert!(
        rep.summary
            .contains("sshd_disable_root_login on deb is still fail: its fix did not make it pass"),
        "{}",
        rep.summary
    );
    let left = rep
        .remaining
        .iter()
        .find(|r| r.requirement == "sshd_disable_root_login")
        .expect("reported as remaining");
    assert!(
        left.reason.contains("scap-sshd_disable_root_login")
            && left.reason.contains("did not make the requirement pass"),
        "{left:?}"
    );
    // The other rule's fix worked in the sandbox, but nothing reached the target.
    assert_eq!(
        row(&rep, "file_permissions_etc_shadow").sandbox_after,
        Outcome::Pass
    );
    assert_eq!(
        dexec(&node.name, &["stat", "-c", "%a", "/etc/shadow"])
            .await
            .trim(),
        "644"
    );
    assert!(rep.steps.iter().all(|s| s.phase.starts_with("sandbox")));
    assert_eq!(rep.exit_code(), 2);
    sandbox_gone(&rep);
}

/// `spec.import` errors point at the policy file and the line at fault.
#[test]
fn spec_import_errors_name_the_policy_file_and_line() {
    if !Path::new(DS).exists() {
        assert!(!required(), "{DS} is required (apt-get install ssg-debian)");
        eprintln!("skipping: {DS} missing");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = root().join("examples/edge-site/target.yaml");
    let check = |import: &str, line: u64, want: &str| {
        let p = dir.path().join("policy.yaml");
        std::fs::write(
            &p,
            format!("apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {{name: imp}}\nspec:\n  import:\n{import}"),
        )
        .unwrap();
        let errs = match load_inputs(&p, &target, &[]) {
            Ok(_) => panic!("accepted: {import}"),
            Err(e) => e,
        };
        let e = &errs[0];
        assert_eq!(e.file, p.display().to_string(), "{e}");
        assert_eq!(e.line, line, "{e}");
        assert!(e.message.contains(want), "{e} (wanted {want:?})");
    };
    check(
        "    scap: missing-ds.xml\n    profile: standard\n",
        6,
        "cannot read the data stream",
    );
    check(
        &format!("    scap: {DS}\n    profile: no_such_profile\n"),
        7,
        "profile `no_such_profile` is not in",
    );
    check(
        &format!("    scap: {DS}\n    profile: standard\n    rules:\n      - file_owner_etc_group\n      - nope_rule\n"),
        10,
        "rule `nope_rule` is not in",
    );
    check(
        &format!("    scap: {DS}\n    profile: anssi_np_nt28_minimal\n    rules: [sshd_disable_root_login]\n"),
        8,
        "does not select it",
    );
    check(
        &format!("    scap: {DS}\n    profile: standard\n    tailoring: t.xml\n"),
        8,
        "cannot read the tailoring file",
    );
    check(
        &format!("    scap: {DS}\n    profile: standard\n    profiles: x\n"),
        8,
        "unknown field",
    );
    // A `scap` check written in the policy: located at its requirement.
    check(
        &format!("    scap: {DS}\n    profile: standard\n    rules: [file_owner_etc_group]\n  requirements:\n    - id: mine\n      title: t\n      severity: low\n      check: {{scap: {{datastream: {DS}, profile: standard, rule: no_such_rule}}}}\n"),
        10,
        "requirement `mine`: scap check: rule `no_such_rule` is not selected",
    );
}

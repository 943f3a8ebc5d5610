//! Against the real SSG Debian content (`ssg-debian` package); skipped with a message when
//! the package is not installed.

use std::time::Instant;
use vacsine_scap::system::MemSystem;
use vacsine_scap::xccdf::{find_profile, selected_rules};

const DS: &str = "/usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml";

fn load() -> Option<vacsine_scap::DataStream> {
    let Ok(text) = std::fs::read_to_string(DS) else {
        eprintln!("SKIP: {DS} missing (apt-get install ssg-debian)");
        return None;
    };
    let t = Instant::now();
    let ds = vacsine_scap::parse(&text, DS).expect("SSG data stream parses");
    eprintln!("parsed {} bytes in {:?}", text.len(), t.elapsed());
    Some(ds)
}

#[test]
fn ssg_debian11_profiles_rules_and_oval_are_parsed() {
    let Some(ds) = load() else { return };
    let b = &ds.benchmark;
    assert_eq!(b.id, "xccdf_org.ssgproject.content_benchmark_DEBIAN-11");
    assert_eq!(b.profiles.len(), 5);
    // The numbers `oscap xccdf eval` evaluates for each profile (same rule sets, checked once).
    let counts: Vec<(String, usize)> = b
        .profiles
        .iter()
        .map(|p| {
            (
                p.id.rsplit("_profile_").next().unwrap().to_string(),
                selected_rules(&ds, p).len(),
            )
        })
        .collect();
    let want = [
        ("anssi_np_nt28_average", 45),
        ("anssi_np_nt28_high", 50),
        ("anssi_np_nt28_minimal", 24),
        ("anssi_np_nt28_restrictive", 49),
        ("standard", 44),
    ];
    assert_eq!(
        counts,
        want.iter()
            .map(|(p, n)| (p.to_string(), *n))
            .collect::<Vec<_>>()
    );
    let all: std::collections::BTreeSet<&str> = b
        .profiles
        .iter()
        .flat_map(|p| selected_rules(&ds, p))
        .map(|r| r.id.as_str())
        .collect();
    let two: std::collections::BTreeSet<&str> = ["anssi_np_nt28_high", "standard"]
        .iter()
        .flat_map(|p| selected_rules(&ds, find_profile(&ds, p).unwrap()))
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(
        all, two,
        "high ∪ standard selects every profiled rule (the oracle's choice)"
    );
    assert_eq!(all.len(), 51);
    let high = find_profile(&ds, "anssi_np_nt28_high").unwrap();
    let rules = selected_rules(&ds, high);
    assert!(rules
        .iter()
        .any(|r| r.id.ends_with("sshd_disable_root_login")));
    let oval = ds
        .ovals
        .get("ssg-debian11-oval.xml")
        .expect("oval component by its catalog name");
    assert!(oval
        .definitions
        .contains_key("oval:ssg-sshd_disable_root_login:def:1"));
    assert!(ds.ovals.contains_key("ssg-debian11-cpe-oval.xml"));
    assert!(ds.platform_specs.contains_key("machine"));
    let r = rules
        .iter()
        .find(|r| r.id.ends_with("sshd_disable_root_login"))
        .unwrap();
    let c = r.check.as_ref().unwrap();
    assert_eq!(c.exports[0].0, "oval:ssg-sshd_required:var:1");
    assert!(r.references.iter().any(|x| x.text == "BP28(R19)"));
}

#[test]
fn ssg_debian11_profile_evaluates_on_an_empty_system() {
    let Some(ds) = load() else { return };
    let sys = MemSystem::new();
    let t = Instant::now();
    let rep = vacsine_scap::evaluate(&ds, "anssi_np_nt28_high", &sys, &Default::default()).unwrap();
    eprintln!("evaluated in {:?}: {:?}", t.elapsed(), rep.summary);
    // Not Debian 11 (no /etc/debian_version): the benchmark's platform excludes every rule.
    assert_eq!(
        rep.summary.get(&vacsine_scap::Outcome::NotApplicable),
        Some(&50)
    );
    // Declared Debian 11, empty otherwise, evaluated as a machine: every rule gets an outcome
    // from its OVAL, and what Vacsine cannot evaluate yet says why.
    let mut sys = MemSystem::new();
    sys.file("/etc/debian_version", "11.11\n");
    let opts = vacsine_scap::Options {
        container_as_machine: true,
    };
    let rep = vacsine_scap::evaluate(&ds, "anssi_np_nt28_high", &sys, &opts).unwrap();
    eprintln!("{:?}", rep.summary);
    for r in &rep.rules {
        // Only packages' platforms (audit, …) can exclude a rule now.
        assert!(
            !r.evidence
                .iter()
                .any(|e| e.contains("`machine`") || e.contains("debian_linux")),
            "{}: {:?}",
            r.id,
            r.evidence
        );
        if r.outcome == vacsine_scap::Outcome::NotChecked {
            assert!(
                r.evidence.iter().any(|e| e.contains("not supported")),
                "{}: {:?}",
                r.id,
                r.evidence
            );
        }
    }
}

/// Coverage over every rule of the stream (not only the profiled ones), on an empty Debian 11
/// machine: what Vacsine cannot evaluate yet, counted by reason.
#[test]
fn ssg_debian11_every_rule_coverage() {
    let Some(mut ds) = load() else { return };
    let selects: Vec<(String, bool)> = ds
        .benchmark
        .rules
        .iter()
        .map(|r| (r.id.clone(), true))
        .chain(ds.benchmark.groups.keys().map(|g| (g.clone(), true)))
        .collect();
    ds.benchmark.profiles.push(vacsine_scap::ds::Profile {
        id: "all".into(),
        title: "every rule".into(),
        extends: None,
        selects,
        refine_values: vec![],
        set_values: vec![],
    });
    let mut sys = MemSystem::new();
    sys.file("/etc/debian_version", "11.11\n");
    let opts = vacsine_scap::Options {
        container_as_machine: true,
    };
    let rep = vacsine_scap::evaluate(&ds, "all", &sys, &opts).unwrap();
    let mut reasons: std::collections::BTreeMap<String, usize> = Default::default();
    for r in &rep.rules {
        if r.outcome == vacsine_scap::Outcome::NotChecked {
            let why = r
                .evidence
                .iter()
                .find_map(|e| {
                    e.split(" — ")
                        .nth(1)
                        .filter(|d| d.contains("not supported"))
                        .or_else(|| {
                            (e.contains("no OVAL") || e.contains("no automated check"))
                                .then_some(e.as_str())
                        })
                })
                .unwrap_or("?")
                .to_string();

            *reasons.entry(why).or_default() += 1;
        }
    }
    eprintln!("{} rules: {:?}", rep.rules.len(), rep.summary);
    // Errors here come from the empty system only (no /proc/1/mounts).
    for r in rep
        .rules
        .iter()
        .filter(|r| r.outcome == vacsine_scap::Outcome::Error)
    {
        assert!(
            r.evidence.join(" ").contains("/proc/1/mounts"),
            "{}: {:?}",
            r.id,
            r.evidence
        );
    }
    for (why, n) in &reasons {
        eprintln!("{n:>4} notchecked: {why}");
    }
    assert_eq!(rep.rules.len(), ds.benchmark.rules.len());
    assert!(
        !reasons.contains_key("?"),
        "a notchecked rule without its reason: {reasons:?}"
    );
}

/// A profile's slice (`cache::prune`) evaluates exactly as the whole stream does, on every
/// profile, on a system where rules pass, fail and err; the slice read back from the cache is
/// the slice written, and a changed stream file is parsed again.
#[test]
fn ssg_debian11_profile_slice_and_cache_evaluate_as_the_whole_stream() {
    let Some(ds) = load() else { return };
    let mut sys = MemSystem::new();
    sys.file("/etc/debian_version", "11.11\n")
        .file(
            "/etc/ssh/sshd_config",
            "PermitRootLogin yes\nPermitEmptyPasswords no\nX11Forwarding yes\n",
        )
        .file("/etc/login.defs", "PASS_MAX_DAYS 99999\nUMASK 027\n")
        .sysctl_value("kernel.randomize_va_space", "2")
        .sysctl_value("net.ipv4.ip_forward", "1");
    let opts = vacsine_scap::Options {
        container_as_machine: true,
    };
    let outcomes = |ds: &vacsine_scap::DataStream, p: &str| {
        let rep = vacsine_scap::evaluate(ds, p, &sys, &opts).unwrap();
        rep.rules
            .iter()
            .map(|r| (r.id.clone(), r.outcome, r.evidence.clone()))
            .collect::<Vec<_>>()
    };
    for p in &ds.benchmark.profiles {
        let slice = vacsine_scap::cache::prune(&ds, &p.id).unwrap();
        let full_tests: usize = ds.ovals.values().map(|d| d.tests.len()).sum();
        let slice_tests: usize = slice.ovals.values().map(|d| d.tests.len()).sum();
        assert!(slice_tests < full_tests, "{}: nothing pruned", p.id);
        let (a, b) = (outcomes(&ds, &p.id), outcomes(&slice, &p.id));
        assert_eq!(a.len(), b.len(), "{}", p.id);
        assert!(
            a.iter().any(|(_, o, _)| *o == vacsine_scap::Outcome::Fail),
            "{}: the system should fail some rules",
            p.id
        );
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x, y, "profile {}", p.id);
        }
    }
    // Through the cache, in a folder of this test's own, from a copy of the stream.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("ds.xml");
    std::fs::copy(DS, &copy).unwrap();
    let cache = Some(dir.path().join("cache"));
    let profile = "anssi_np_nt28_high";
    let (first, i1) =
        vacsine_scap::cache::load_in(cache.clone(), &copy, profile, None, |_| Ok(())).unwrap();
    assert!(!i1.cached && i1.cache_error.is_none(), "{i1:?}");
    let (second, i2) =
        vacsine_scap::cache::load_in(cache.clone(), &copy, profile, None, |_| Ok(())).unwrap();
    assert!(i2.cached, "{i2:?}");
    eprintln!(
        "parsed+pruned in {:.0} ms, from the cache in {:.0} ms",
        i1.load_ms, i2.load_ms
    );
    assert_eq!(first, second);
    assert_eq!(outcomes(&second, profile), outcomes(&ds, profile));
    let entry = i2.entry.unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&entry).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Another tailoring is another entry.
    let (_, i3) =
        vacsine_scap::cache::load_in(cache.clone(), &copy, profile, Some(b"<x/>"), |_| Ok(()))
            .unwrap();
    assert!(!i3.cached);
    // A corrupt entry is ignored and rewritten.
    std::fs::write(&entry, b"{not json").unwrap();
    let (_, i4) =
        vacsine_scap::cache::load_in(cache.clone(), &copy, profile, None, |_| Ok(())).unwrap();
    assert!(!i4.cached);
    let (_, i5) =
        vacsine_scap::cache::load_in(cache.clone(), &copy, profile, None, |_| Ok(())).unwrap();
    assert!(i5.cached);
    // The stream rewritten (same bytes, new change time): parsed again.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::copy(DS, &copy).unwrap();
    let (_, i6) =
        vacsine_scap::cache::load_in(cache.clone(), &copy, profile, None, |_| Ok(())).unwrap();
    assert!(!i6.cached);
    // An unknown profile is an error naming the file, nothing cached.
    let e =
        vacsine_scap::cache::load_in(cache.clone(), &copy, "nope", None, |_| Ok(())).unwrap_err();
    assert!(e.to_string().contains("ds.xml"), "{e}");
}

/// A system whose service manager runs, with each unit's `ActiveState` given.
struct Booted {
    inner: MemSystem,
    active: Vec<&'static str>,
}

impl vacsine_scap::system::System for Booted {
    fn read_file(&self, p: &str) -> Result<Option<Vec<u8>>, String> {
        self.inner.read_file(p)
    }
    fn list_dir(&self, p: &str) -> Result<Option<Vec<String>>, String> {
        self.inner.list_dir(p)
    }
    fn stat(&self, p: &str) -> Result<Option<vacsine_scap::system::Stat>, String> {
        self.inner.stat(p)
    }
    fn sysctl(&self, k: &str) -> Result<Option<String>, String> {
        self.inner.sysctl(k)
    }
    fn uname(&self) -> Result<vacsine_scap::system::Uname, String> {
        self.inner.uname()
    }
    fn unit_runtime_property(&self, unit: &str, property: &str) -> Result<String, String> {
        assert_eq!(property, "ActiveState");
        Ok(if self.active.contains(&unit) {
            "active"
        } else {
            "inactive"
        }
        .into())
    }
}

/// SSG's `service_cron_enabled` (systemdunitdependency on multi-user.target and
/// systemdunitproperty ActiveState): pass only when cron is installed, wanted by
/// multi-user.target (a link, as `systemctl enable` makes) and active in a running manager.
#[test]
fn ssg_debian11_service_rule_reads_systemd_units() {
    use vacsine_scap::system::System as _;
    let Some(mut ds) = load() else { return };
    let rule = "xccdf_org.ssgproject.content_rule_service_cron_enabled";
    assert!(ds.benchmark.rules.iter().any(|r| r.id == rule));
    let mut selects: Vec<(String, bool)> = vec![(rule.into(), true)];
    selects.extend(ds.benchmark.groups.keys().map(|g| (g.clone(), true)));
    ds.benchmark.profiles.push(vacsine_scap::ds::Profile {
        id: "cron".into(),
        title: "cron".into(),
        extends: None,
        selects,
        refine_values: vec![],
        set_values: vec![],
    });
    let base = || {
        let mut m = MemSystem::new();
        m.file("/etc/debian_version", "11.11\n")
            .file(
                "/var/lib/dpkg/status",
                "Package: cron\nStatus: install ok installed\nArchitecture: amd64\nVersion: 3.0pl1-137\n\n",
            )
            .file(
                "/lib/systemd/system/multi-user.target",
                "[Unit]\nRequires=basic.target\n",
            )
            .file("/lib/systemd/system/basic.target", "[Unit]\n")
            .file(
                "/lib/systemd/system/cron.service",
                "[Unit]\nDescription=cron\n[Install]\nWantedBy=multi-user.target\n",
            );
        m
    };
    let enabled = || {
        let mut m = base();
        m.symlink(
            "/etc/systemd/system/multi-user.target.wants/cron.service",
            "/lib/systemd/system/cron.service",
        );
        m
    };
    let opts = vacsine_scap::Options {
        container_as_machine: true,
    };
    let outcome = |sys: &dyn vacsine_scap::system::System| {
        let rep = vacsine_scap::evaluate(&ds, "cron", sys, &opts).unwrap();
        assert_eq!(rep.rules.len(), 1);
        (rep.rules[0].outcome, rep.rules[0].evidence.join("\n"))
    };
    let booted = |mut m: MemSystem, active: Vec<&'static str>| {
        m.dir("/run/systemd/system", 0o755);
        Booted { inner: m, active }
    };
    // Enabled and running under a booted systemd: pass.
    let (o, ev) = outcome(&booted(enabled(), vec!["cron.service"]));
    assert_eq!(o, vacsine_scap::Outcome::Pass, "{ev}");
    // Enabled but stopped: fail.
    let (o, ev) = outcome(&booted(enabled(), vec![]));
    assert_eq!(o, vacsine_scap::Outcome::Fail, "{ev}");
    // Running but not enabled (no link): fail.
    let (o, ev) = outcome(&booted(base(), vec!["cron.service"]));
    assert_eq!(o, vacsine_scap::Outcome::Fail, "{ev}");
    // No service manager (a container): nothing is active, fail, and the evidence says so.
    let m = enabled();
    assert!(m.stat("/run/systemd/system").unwrap().is_none());
    let (o, ev) = outcome(&m);
    assert_eq!(o, vacsine_scap::Outcome::Fail, "{ev}");
    assert!(ev.contains("inactive"), "{ev}");
    // A booted node whose manager cannot be asked: an error, not a guess.
    let mut m = enabled();
    m.dir("/run/systemd/system", 0o755);
    let (o, ev) = outcome(&m);
    assert_eq!(o, vacsine_scap::Outcome::Error, "{ev}");
}

/// SSG's `root_path_no_dot` (environmentvariable58, pid nil): the node's init environment.
#[test]
fn ssg_debian11_path_rule_reads_the_nodes_init_environment() {
    let Some(mut ds) = load() else { return };
    let rule = "xccdf_org.ssgproject.content_rule_root_path_no_dot";
    assert!(ds.benchmark.rules.iter().any(|r| r.id == rule));
    let mut selects: Vec<(String, bool)> = vec![(rule.into(), true)];
    selects.extend(ds.benchmark.groups.keys().map(|g| (g.clone(), true)));
    ds.benchmark.profiles.push(vacsine_scap::ds::Profile {
        id: "path".into(),
        title: "path".into(),
        extends: None,
        selects,
        refine_values: vec![],
        set_values: vec![],
    });
    let opts = vacsine_scap::Options {
        container_as_machine: true,
    };
    let outcome = |path: &str| {
        let mut m = MemSystem::new();
        m.file("/etc/debian_version", "11.11\n").file(
            "/proc/1/environ",
            &format!("HOME=/root\0PATH={path}\0TERM=xterm\0"),
        );
        let rep = vacsine_scap::evaluate(&ds, "path", &m, &opts).unwrap();
        (rep.rules[0].outcome, rep.rules[0].evidence.join("\n"))
    };
    let (o, ev) = outcome("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    assert_eq!(o, vacsine_scap::Outcome::Pass, "{ev}");
    for bad in ["/usr/bin:.", ".:/usr/bin", "/usr/bin::/bin", "/usr/bin:bin"] {
        let (o, ev) = outcome(bad);
        assert_eq!(o, vacsine_scap::Outcome::Fail, "PATH={bad}: {ev}");
    }
}

/// `spec.import` of SSG's `standard` profile: one requirement per selected rule, checked by the
/// rule itself; each rule with Ansible tasks gets a generated `ansible` workflow with the
/// profile's values as (unsafe) vars; a rule without a usable fix is planned as `no fix in the
/// content`, not hidden.
#[test]
fn ssg_standard_profile_imports_as_requirements_with_the_contents_fixes() {
    use vacsine_core::policy::Check;
    use vacsine_scap::import::{import, ImportSpec};
    let Some(ds) = load() else { return };
    let spec = ImportSpec {
        datastream: DS.into(),
        profile: "standard".into(),
        ..Default::default()
    };
    let got = import(&ds, &spec).unwrap();
    assert_eq!(got.requirements.len(), 44);
    let by_id = |id: &str| {
        got.requirements
            .iter()
            .find(|r| r.id.value == id)
            .unwrap_or_else(|| panic!("{id}"))
    };
    let shadow = by_id("file_permissions_etc_shadow");
    match &shadow.check {
        Check::Scap(c) => {
            assert_eq!(
                c.rule,
                "xccdf_org.ssgproject.content_rule_file_permissions_etc_shadow"
            );
            assert_eq!(c.profile, "xccdf_org.ssgproject.content_profile_standard");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        shadow.fixes[0].uses.value,
        "scap-file_permissions_etc_shadow"
    );
    let wf = got
        .workflows
        .iter()
        .find(|w| w.metadata.name.value == "scap-file_permissions_etc_shadow")
        .unwrap();
    let step = &wf.spec.steps[0];
    assert_eq!(step.uses.value, "ansible");
    let tasks = step.with["tasks"].as_array().unwrap();
    assert!(tasks[0].get("setup").is_some(), "facts first");
    assert_eq!(tasks[2]["file"]["mode"], "u-xs,g-xws,o-xwrt");
    // A rule whose tasks use a value (no profile of this stream selects one): the value is a
    // var, the task refers to it.
    let profile = vacsine_scap::xccdf::find_profile(&ds, "standard").unwrap();
    let values = vacsine_scap::xccdf::profile_values(&ds, profile);
    let rule = ds
        .benchmark
        .rules
        .iter()
        .find(|r| r.id.ends_with("_rule_sshd_set_max_sessions"))
        .unwrap();
    let (_, step) = vacsine_scap::import::remedy(rule, &values).unwrap();
    assert_eq!(step.uses.value, "ansible");
    let vars = step.with["vars"].as_object().expect("values as vars");
    let value = values
        .get("xccdf_org.ssgproject.content_value_var_sshd_max_sessions")
        .unwrap();
    assert_eq!(vars["vacsine_sub_0"], value.as_str());
    let text = step.with["tasks"].to_string();
    assert!(text.contains("{{ vacsine_sub_0 }}"), "{text}");
    // Rules without a usable fix: none hidden, each says why, and the plan reports it.
    let fixless: Vec<&str> = got
        .requirements
        .iter()
        .filter(|r| r.fixes.is_empty())
        .map(|r| r.id.value.as_str())
        .collect();
    assert!(fixless.contains(&"partition_for_home"), "{fixless:?}");
    for r in got.requirements.iter().filter(|r| r.fixes.is_empty()) {
        assert!(
            r.rationale
                .as_deref()
                .is_some_and(|t| t.starts_with("no fix in the content")),
            "{}: {:?}",
            r.id.value,
            r.rationale
        );
    }
    let policy = vacsine_core::policy::Policy {
        api_version: vacsine_core::API_VERSION.into(),
        kind: "Policy".into(),
        metadata: Default::default(),
        spec: vacsine_core::policy::PolicySpec {
            catalog: vec![],
            import: None,
            requirements: got.requirements.clone(),
        },
    };
    let catalog: vacsine_core::validate::CatalogIndex<'_> = got
        .workflows
        .iter()
        .map(|w| (w.metadata.name.value.clone(), w))
        .collect();
    assert!(vacsine_core::validate::validate_policy(&policy, &catalog, None).is_empty());
    let node = vacsine_core::target::ResolvedNode {
        name: "n".into(),
        roles: vec![],
        labels: Default::default(),
        handle: "n".into(),
    };
    let findings: Vec<vacsine_core::plan::Finding> = policy
        .spec
        .requirements
        .iter()
        .map(|r| vacsine_core::plan::Finding {
            requirement: r.id.value.clone(),
            node: "n".into(),
            outcome: vacsine_core::Outcome::Fail,
        })
        .collect();
    let plan = vacsine_core::plan::plan(&policy, "t", &[node], &findings, &catalog);
    assert_eq!(plan.items.len() + plan.unfixable.len(), 44);
    assert_eq!(plan.unfixable.len(), fixless.len());
    assert!(plan
        .unfixable
        .iter()
        .all(|u| u.reason.starts_with("no fix in the content")));
    eprintln!(
        "standard: {} rules, {} with a fix ({} Ansible), {} without: {fixless:?}",
        got.requirements.len(),
        plan.items.len(),
        got.workflows
            .iter()
            .filter(|w| w.spec.steps[0].uses.value == "ansible")
            .count(),
        fixless.len()
    );
}

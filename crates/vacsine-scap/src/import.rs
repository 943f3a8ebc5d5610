//! A profile of a data stream turned into Vacsine requirements and remediation workflows
//! (`spec.import` of a policy, `vacsine enforce --scap`).
//!
//! Each rule the profile selects becomes a requirement whose check is the rule itself
//! ([`Check::Scap`], evaluated natively on the node) and whose fix is a generated workflow of
//! one step made from the rule's own `<fix>`:
//!
//! * SSG's Ansible tasks (`urn:xccdf:fix:script:ansible`) through the `ansible` executor. The
//!   tasks are taken literally; each `<sub idref>` placeholder becomes a reference to an
//!   Ansible variable (`{{ vacsine_sub_N }}`) whose value, the profile's, is passed in the
//!   step's `vars`, which the executor marks `!unsafe`: a value from a tailoring file is data
//!   for Ansible, never a template. A first `setup` task gathers the facts SSG's `when:`
//!   conditions test (`ansible_virtualization_type`…).
//! * Otherwise the shell script (`urn:xccdf:fix:script:sh`) through the `script` executor:
//!   the text goes to the interpreter's stdin, and each `'<sub idref>'` (SSG quotes them so)
//!   becomes `"$VACSINE_SUB_N"`, its value passed in the environment: no value is ever
//!   spliced into shell text. A placeholder outside single quotes makes the script unusable.
//! * No fix, or none usable: the requirement has no fix, and the planner reports it (`no fix
//!   in the content`), with why in the requirement's rationale.
//!
//! Data streams are parsed once per process ([`load_cached`]): every check of every imported
//! rule reads the same `Arc<DataStream>`.

use crate::ds::{DataStream, Fix as ScapFix, FixPart, Rule};
use crate::xccdf::{find_profile, profile_values, selected_rules};
use crate::ScapError;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;
use vacsine_core::doc::Loc;
use vacsine_core::policy::{
    Check, Disruption, Fix, NodeSelector, Requirement, RequirementKind, ScapCheck, Severity,
    Strategy,
};
use vacsine_core::workflow::{Step, Workflow, WorkflowSpec, MAX_WORKFLOW_NAME};

pub const ANSIBLE_FIX: &str = "urn:xccdf:fix:script:ansible";
pub const SHELL_FIX: &str = "urn:xccdf:fix:script:sh";

type Cache = Mutex<HashMap<PathBuf, (Option<SystemTime>, Arc<DataStream>)>>;

fn cache() -> &'static Cache {
    static CACHE: OnceLock<Cache> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// The data stream at `path`, parsed once per process (keyed by its canonical path and
/// modification time: an edited file is parsed again). `name` is how errors name the file.
pub fn load_cached(path: &Path) -> Result<Arc<DataStream>, ScapError> {
    let name = path.display().to_string();
    let file_err = |e: std::io::Error| {
        ScapError::File {
        file: name.clone(),
        message: format!("cannot read the data stream: {e} (SSG content is in /usr/share/xml/scap/ssg/content/, from the ssg-debian package)"),
    }
    };
    let canon = std::fs::canonicalize(path).map_err(file_err)?;
    let mtime = std::fs::metadata(&canon).and_then(|m| m.modified()).ok();
    // Held while parsing: concurrent checks of the same stream wait for one parse.
    let mut map = cache().lock().unwrap_or_else(|e| e.into_inner());
    if let Some((t, ds)) = map.get(&canon) {
        if *t == mtime {
            return Ok(ds.clone());
        }
    }
    let text = std::fs::read_to_string(&canon).map_err(file_err)?;
    let ds = Arc::new(crate::parse(&text, &name)?);
    map.insert(canon, (mtime, ds.clone()));
    Ok(ds)
}

/// The short id of a rule (`xccdf_org.ssgproject.content_rule_x` → `x`).
pub fn short_rule_id(id: &str) -> &str {
    id.rsplit_once("_rule_").map(|x| x.1).unwrap_or(id)
}

/// What to import.
#[derive(Debug, Clone, Default)]
pub struct ImportSpec {
    /// The data stream's path as the checks will name it (absolute, or as given).
    pub datastream: String,
    pub profile: String,
    pub tailoring: Option<String>,
    /// Short or full rule ids; empty: every selected rule.
    pub rules: Vec<String>,
    pub container_as_machine: bool,
}

/// Why an import failed, by the field at fault (so the policy's error points at it).
#[derive(Debug, Clone, PartialEq)]
pub enum ImportError {
    Profile(String),
    Tailoring(String),
    /// The index in `rules` of a rule that is not in the profile.
    Rule(usize, String),
}

/// Requirements (policy order: the data stream's) and their generated fix workflows.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    pub requirements: Vec<Requirement>,
    pub workflows: Vec<Workflow>,
}

/// Import a profile of `ds` (already tailored, if a tailoring applies).
pub fn import(ds: &DataStream, spec: &ImportSpec) -> Result<Imported, ImportError> {
    if spec.tailoring.is_some() {
        return Err(ImportError::Tailoring(
            "tailoring files are not supported yet in this build: remove `tailoring`, or select rules with `rules:` (the profile's own values apply)".into(),
        ));
    }
    let profile = find_profile(ds, &spec.profile).map_err(ImportError::Profile)?;
    let selected = selected_rules(ds, profile);
    let values = profile_values(ds, profile);
    let chosen: Vec<&Rule> = if spec.rules.is_empty() {
        selected
    } else {
        let mut out = Vec::new();
        for (i, want) in spec.rules.iter().enumerate() {
            let hit = selected
                .iter()
                .find(|r| r.id == *want || short_rule_id(&r.id) == want);
            match hit {
                Some(r) => out.push(*r),
                None => {
                    let exists = ds
                        .benchmark
                        .rules
                        .iter()
                        .any(|r| r.id == *want || short_rule_id(&r.id) == want);
                    return Err(ImportError::Rule(
                        i,
                        if exists {
                            format!(
                                "rule `{want}` is in {} but profile `{}` does not select it",
                                ds.file, profile.id
                            )
                        } else {
                            format!("rule `{want}` is not in {}", ds.file)
                        },
                    ));
                }
            }
        }
        out
    };
    let mut imported = Imported::default();
    let mut names = BTreeSet::new();
    for rule in chosen {
        let short = short_rule_id(&rule.id).to_string();
        let remedy = remedy(rule, &values);
        let mut req = Requirement {
            id: Loc::new(short.clone()),
            version: 1,
            title: rule.title.clone(),
            severity: match rule.severity.as_str() {
                "high" => Severity::High,
                "medium" => Severity::Medium,
                "low" => Severity::Low,
                _ => Severity::Info,
            },
            kind: RequirementKind::Security,
            rationale: None,
            nodes: NodeSelector::default(),
            applies_when: None,
            check: Check::Scap(ScapCheck {
                datastream: spec.datastream.clone(),
                profile: profile.id.clone(),
                rule: rule.id.clone(),
                tailoring: spec.tailoring.clone(),
                container_as_machine: spec.container_as_machine,
            }),
            fixes: vec![],
            references: references(rule),
        };
        match remedy {
            Ok((fix, step)) => {
                let name = workflow_name(&short, &mut names);
                req.fixes.push(Fix {
                    uses: Loc::new(name.clone()),
                    with: BTreeMap::new(),
                    strategy: strategy(&fix.strategy),
                    disruption: disruption(&fix.disruption),
                    reboot: fix.reboot,
                });
                imported.workflows.push(Workflow::new(
                    &name,
                    Some(format!(
                        "Remediation of {} from {} (line {}): {}",
                        rule.id, ds.file, fix.line, rule.title
                    )),
                    WorkflowSpec {
                        steps: vec![step],
                        ..Default::default()
                    },
                ));
            }
            Err(why) => {
                req.rationale = Some(format!("{}: {why}", vacsine_core::plan::NO_FIX_IN_CONTENT))
            }
        }
        imported.requirements.push(req);
    }
    Ok(imported)
}

fn references(rule: &Rule) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &rule.references {
        let fam = crate::xccdf::family(&r.href);
        if fam == "other" {
            continue;
        }
        let key = fam.to_ascii_lowercase().replace([' ', ':'], "-");
        for c in r.text.split(',').map(str::trim).filter(|c| !c.is_empty()) {
            out.entry(key.clone()).or_default().push(c.to_string());
        }
    }
    out
}

fn workflow_name(short: &str, taken: &mut BTreeSet<String>) -> String {
    let mut base: String = format!("scap-{short}")
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(MAX_WORKFLOW_NAME - 4);
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.clone()) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

fn strategy(s: &str) -> Strategy {
    match s {
        "configure" => Strategy::Configure,
        "disable" => Strategy::Disable,
        "enable" => Strategy::Enable,
        "patch" => Strategy::Patch,
        "policy" => Strategy::Policy,
        "restrict" => Strategy::Restrict,
        "update" => Strategy::Update,
        _ => Strategy::Unknown,
    }
}

fn disruption(s: &str) -> Disruption {
    match s {
        "low" => Disruption::Low,
        "medium" => Disruption::Medium,
        "high" => Disruption::High,
        _ => Disruption::Unknown,
    }
}

/// The rule's fix as one workflow step: Ansible first, the shell script as fallback. `Err`
/// says why there is none.
pub fn remedy<'r>(
    rule: &'r Rule,
    values: &HashMap<String, String>,
) -> Result<(&'r ScapFix, Step), String> {
    let mut why = Vec::new();
    for (system, make) in [
        (
            ANSIBLE_FIX,
            ansible_step as fn(&ScapFix, &_) -> Result<Step, String>,
        ),
        (SHELL_FIX, shell_step),
    ] {
        if let Some(f) = rule.fixes.iter().find(|f| f.system == system) {
            match make(f, values) {
                Ok(s) => return Ok((f, s)),
                Err(e) => why.push(format!("{system} fix unusable: {e}")),
            }
        }
    }
    if why.is_empty() {
        let others: Vec<&str> = rule.fixes.iter().map(|f| f.system.as_str()).collect();
        Err(if others.is_empty() {
            "the rule has no <fix>".into()
        } else {
            format!("no Ansible or shell fix (only {})", others.join(", "))
        })
    } else {
        Err(why.join("; "))
    }
}

fn value_of<'v>(values: &'v HashMap<String, String>, id: &str) -> Result<&'v str, String> {
    values.get(id).map(String::as_str).ok_or_else(|| {
        format!("its placeholder names value `{id}`, which the data stream does not define")
    })
}

/// A value as the engine must pass it on verbatim: the engine renders the `with` strings of a
/// step (`vars`, `env`) as templates, so a value holding template syntax is wrapped in
/// `{% raw %}` (which renders to the value itself). A value that would close that block is
/// refused.
pub fn verbatim(v: &str) -> Result<Value, String> {
    if !(v.contains("{{") || v.contains("{%") || v.contains("{#")) {
        return Ok(Value::String(v.to_string()));
    }
    if v.contains("endraw") {
        return Err(format!(
            "value {v:?} holds template syntax that cannot be passed verbatim"
        ));
    }
    Ok(Value::String(format!("{{% raw %}}{v}{{% endraw %}}")))
}

fn step(uses: &str, with: BTreeMap<String, Value>) -> Step {
    Step {
        id: Loc::new("fix".into()),
        name: None,
        uses: Loc::new(uses.into()),
        with,
        needs: vec![],
        condition: None,
        retry: None,
        timeout: Some(Loc::new("10m".into())),
        continue_on_error: false,
        runs_on: None,
        idempotent: None,
        outputs: BTreeMap::new(),
    }
}

const TOKEN: &str = "vacsine_sub_";

/// Replace placeholder tokens `__vacsine_sub_N__` in every string with `{{ vacsine_sub_N }}`.
fn rewrite(v: &mut Value) {
    match v {
        Value::String(s) if s.contains("__vacsine_sub_") => {
            let mut out = String::new();
            let mut rest = s.as_str();
            while let Some(i) = rest.find("__vacsine_sub_") {
                out.push_str(&rest[..i]);
                let after = &rest[i + 2..];
                match after.find("__") {
                    Some(j) => {
                        out.push_str(&format!("{{{{ {} }}}}", &after[..j]));
                        rest = &after[j + 2..];
                    }
                    None => {
                        out.push_str(&rest[i..]);
                        rest = "";
                    }
                }
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Array(a) => a.iter_mut().for_each(rewrite),
        Value::Object(o) => o.values_mut().for_each(rewrite),
        _ => {}
    }
}

fn ansible_step(fix: &ScapFix, values: &HashMap<String, String>) -> Result<Step, String> {
    let mut text = String::new();
    let mut vars = Map::new();
    for part in &fix.parts {
        match part {
            FixPart::Text(t) => text.push_str(t),
            FixPart::Sub(id) => {
                let v = value_of(values, id)?;
                let n = vars.len();
                text.push_str(&format!("__{TOKEN}{n}__"));
                vars.insert(format!("{TOKEN}{n}"), verbatim(v)?);
            }
        }
    }
    let mut tasks: Vec<Value> = serde_saphyr::from_str(&text)
        .map_err(|e| format!("its Ansible tasks are not YAML Vacsine reads: {e}"))?;
    if tasks.is_empty() {
        return Err("it has no Ansible task".into());
    }
    tasks.iter_mut().for_each(rewrite);
    // SSG's conditions test facts (virtualization type, distribution, package facts).
    tasks.insert(
        0,
        json!({"name": "Gather the facts the content's tasks test", "setup": {"gather_subset": ["!all", "virtual"]}}),
    );
    let mut with = BTreeMap::new();
    with.insert("tasks".into(), Value::Array(tasks));
    if !vars.is_empty() {
        with.insert("vars".into(), Value::Object(vars));
    }
    Ok(step("ansible", with))
}

fn shell_step(fix: &ScapFix, values: &HashMap<String, String>) -> Result<Step, String> {
    let mut script = String::new();
    let mut env = Map::new();
    let parts = &fix.parts;
    for (i, part) in parts.iter().enumerate() {
        match part {
            FixPart::Text(t) => {
                // The quote that closed a placeholder replaced just before.
                let after_sub = i > 0 && matches!(parts[i - 1], FixPart::Sub(_));
                script.push_str(if after_sub { &t[1..] } else { t });
            }
            FixPart::Sub(id) => {
                let v = value_of(values, id)?;
                let quoted_after =
                    matches!(parts.get(i + 1), Some(FixPart::Text(t)) if t.starts_with('\''));
                if !(script.ends_with('\'') && quoted_after) {
                    return Err(format!(
                        "value `{id}` is placed outside single quotes in its shell script (Vacsine passes values to scripts only through the environment)"
                    ));
                }
                // '<sub>' → "$VAR": the value stays in the environment, never in the text.
                let var = format!("VACSINE_SUB_{}", env.len());
                script.pop();
                script.push_str(&format!("\"${var}\""));
                env.insert(var, verbatim(v)?);
            }
        }
    }
    if script.trim().is_empty() {
        return Err("its shell script is empty".into());
    }
    let mut with = BTreeMap::new();
    with.insert("script".into(), Value::String(format!("set -e\n{script}")));
    with.insert("interpreter".into(), json!(["/bin/bash"]));
    if !env.is_empty() {
        with.insert("env".into(), Value::Object(env));
    }
    Ok(step("script", with))
}

/// Rule results of one profile evaluation on one node: rule id (full and short) → (XCCDF
/// result, evidence).
pub type RuleResults = HashMap<String, (String, Vec<String>)>;

/// Evaluate the profile `check` names (with its data stream, tailoring and options) on the
/// node behind `ops`, on a blocking thread; every rule of the profile at once (the evaluator
/// shares its reads between rules), so a caller checking many rules of one profile asks once.
pub async fn evaluate_on(
    check: &ScapCheck,
    ops: Arc<dyn vacsine_core::node::NodeOps>,
) -> Result<RuleResults, String> {
    if check.tailoring.is_some() {
        return Err("tailoring files are not supported yet in this build".into());
    }
    let check = check.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let ds = load_cached(Path::new(&check.datastream)).map_err(|e| e.to_string())?;
        let sys = crate::node::NodeSystem::new(ops, rt);
        let opts = crate::Options {
            container_as_machine: check.container_as_machine,
        };
        let rep = crate::evaluate(&ds, &check.profile, &sys, &opts)?;
        let mut out = RuleResults::new();
        for r in rep.rules {
            let v = (r.outcome.as_str().to_string(), r.evidence);
            out.insert(short_rule_id(&r.id).to_string(), v.clone());
            out.insert(r.id, v);
        }
        Ok(out)
    })
    .await
    .map_err(|e| format!("the SCAP evaluation stopped: {e}"))?
}

/// The observation of one rule in `results` (or why there is none).
pub fn observation(
    check: &ScapCheck,
    results: &Result<RuleResults, String>,
) -> vacsine_core::node::Observation {
    use vacsine_core::node::Observation;
    match results {
        Err(e) => Observation::Error { message: e.clone() },
        Ok(map) => match map.get(&check.rule) {
            Some((result, evidence)) => Observation::Scap {
                rule: short_rule_id(&check.rule).to_string(),
                result: result.clone(),
                evidence: evidence.clone(),
            },
            None => Observation::Error {
                message: format!(
                    "rule `{}` is not selected by profile `{}` of {}",
                    check.rule, check.profile, check.datastream
                ),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(system: &str, parts: Vec<FixPart>) -> ScapFix {
        ScapFix {
            system: system.into(),
            parts,
            ..Default::default()
        }
    }

    #[test]
    fn shell_values_go_through_the_environment() {
        let values: HashMap<String, String> =
            [("var_t".to_string(), "x'; rm -rf / #".to_string())].into();
        let f = fix(
            SHELL_FIX,
            vec![
                FixPart::Text("t='".into()),
                FixPart::Sub("var_t".into()),
                FixPart::Text("'\necho \"$t\"\n".into()),
            ],
        );
        let s = shell_step(&f, &values).unwrap();
        let script = s.with["script"].as_str().unwrap();
        assert_eq!(script, "set -e\nt=\"$VACSINE_SUB_0\"\necho \"$t\"\n");
        assert!(!script.contains("rm -rf"));
        assert_eq!(s.with["env"]["VACSINE_SUB_0"], "x'; rm -rf / #");
        // Outside quotes: refused.
        let f = fix(
            SHELL_FIX,
            vec![FixPart::Text("t=".into()), FixPart::Sub("var_t".into())],
        );
        assert!(shell_step(&f, &values)
            .unwrap_err()
            .contains("outside single quotes"));
    }

    #[test]
    fn ansible_values_become_unsafe_vars() {
        let values: HashMap<String, String> = [(
            "var_t".to_string(),
            "{{ lookup('pipe', 'id') }}".to_string(),
        )]
        .into();
        let f = fix(
            ANSIBLE_FIX,
            vec![
                FixPart::Text("- name: v\n  set_fact:\n    t: !!str ".into()),
                FixPart::Sub("var_t".into()),
                FixPart::Text("\n- name: use\n  debug:\n    msg: \"a {{ t }}\"\n".into()),
            ],
        );
        let s = ansible_step(&f, &values).unwrap();
        let tasks = s.with["tasks"].as_array().unwrap();
        assert_eq!(tasks.len(), 3, "{tasks:?}");
        assert_eq!(tasks[1]["set_fact"]["t"], "{{ vacsine_sub_0 }}");
        assert_eq!(tasks[2]["debug"]["msg"], "a {{ t }}");
        // Through the engine's templating (minijinja), the value comes out verbatim.
        let passed = s.with["vars"]["vacsine_sub_0"].as_str().unwrap();
        let env = minijinja::Environment::new();
        assert_eq!(
            env.render_str(passed, ()).unwrap(),
            "{{ lookup('pipe', 'id') }}"
        );
        assert!(verbatim("{% endraw %}{{ x }}").is_err());
        assert_eq!(verbatim("600").unwrap(), "600");
        // A value the stream does not define.
        let f = fix(ANSIBLE_FIX, vec![FixPart::Sub("nope".into())]);
        assert!(ansible_step(&f, &values).unwrap_err().contains("`nope`"));
    }
}

//! Reading user files from disk: documents with their sources (for diagnostics), catalogs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use vacsine_core::doc::{load, load_kind, Document, LoadError, SourceFile};
use vacsine_core::policy::Policy;
use vacsine_core::target::Target;
use vacsine_core::validate::{self, CatalogIndex};
use vacsine_core::workflow::Workflow;

/// A document with the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    pub doc: T,
    pub source: SourceFile,
    pub path: PathBuf,
}

/// Read a file as a source; I/O problems become a located error on the file itself.
pub fn read_source(path: &Path) -> Result<SourceFile, LoadError> {
    let name = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| io_err(&name, &e))?;
    if meta.len() as usize > vacsine_core::doc::MAX_DOCUMENT_BYTES {
        return Err(LoadError::at(
            &SourceFile::new(name.clone(), ""),
            0,
            0,
            format!(
                "file is {} bytes, more than the {} accepted",
                meta.len(),
                vacsine_core::doc::MAX_DOCUMENT_BYTES
            ),
            None,
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| io_err(&name, &e))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        LoadError::at(
            &SourceFile::new(name.clone(), ""),
            0,
            0,
            format!("file is not UTF-8 text: {e}"),
            None,
        )
    })?;
    Ok(SourceFile::new(name, text))
}

fn io_err(name: &str, e: &std::io::Error) -> LoadError {
    LoadError::at(
        &SourceFile::new(name.to_string(), ""),
        0,
        0,
        format!("cannot read {name}: {e}"),
        Some("check the path".into()),
    )
}

pub fn load_any(path: &Path) -> Result<Loaded<Document>, LoadError> {
    let source = read_source(path)?;
    let doc = load(&source)?;
    Ok(Loaded {
        doc,
        source,
        path: path.to_path_buf(),
    })
}

fn load_one<T>(
    path: &Path,
    kind: &'static str,
    pick: impl FnOnce(Document) -> Option<T>,
) -> Result<Loaded<T>, LoadError> {
    let source = read_source(path)?;
    let doc = load_kind(&source, kind, pick)?;
    Ok(Loaded {
        doc,
        source,
        path: path.to_path_buf(),
    })
}

/// Load a policy; its relative file paths (SSH keys) become relative to the policy's folder.
pub fn load_policy(path: &Path) -> Result<Loaded<Policy>, LoadError> {
    let mut p = load_one(path, "Policy", |d| match d {
        Document::Policy(p) => Some(p),
        _ => None,
    })?;
    p.doc
        .rebase_paths(path.parent().unwrap_or_else(|| Path::new("")));
    Ok(p)
}

/// Expand the policy's `spec.import` (paths already made relative to its folder by
/// [`load_policy`]): one requirement per rule of the profile, placed before the policy's own
/// requirements, and the generated fix workflows, returned as catalog entries. Errors point at
/// the field of `spec.import` at fault, in the policy file.
pub fn expand_import(p: &mut Loaded<Policy>) -> Result<Vec<Loaded<Workflow>>, LoadError> {
    let Some(imp) = p.doc.spec.import.clone() else {
        return Ok(Vec::new());
    };
    let at = |l: &vacsine_core::doc::Loc<String>, msg: String, help: &str| {
        LoadError::at(&p.source, l.line, l.column, msg, Some(help.to_string()))
    };
    let ds = vacsine_scap::import::load_cached(Path::new(&imp.scap.value)).map_err(|e| {
        at(
            &imp.scap,
            format!("spec.import.scap: {e}"),
            "give the path of a SCAP 1.3 source data stream (relative to the policy file), e.g. /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml",
        )
    })?;
    let ds = match &imp.tailoring {
        None => ds,
        Some(t) => vacsine_scap::import::load_tailored(
            Path::new(&imp.scap.value),
            Some(Path::new(&t.value)),
        )
        .map_err(|e| {
            at(
                t,
                format!("spec.import.tailoring: {e}"),
                "give an XCCDF 1.2 tailoring file for this data stream (relative to the policy file), e.g. one made by SCAP Workbench or autotailor",
            )
        })?,
    };
    let spec = vacsine_scap::import::ImportSpec {
        datastream: imp.scap.value.clone(),
        profile: imp.profile.value.clone(),
        tailoring: imp.tailoring.as_ref().map(|t| t.value.clone()),
        rules: imp.rules.iter().map(|r| r.value.clone()).collect(),
        container_as_machine: imp.container_as_machine,
    };
    use vacsine_scap::import::ImportError;
    let got = vacsine_scap::import::import(&ds, &spec).map_err(|e| match e {
        ImportError::Profile(m) => at(
            &imp.profile,
            format!("spec.import.profile: {m}"),
            "list them with `vacsine scap profiles <data stream>`",
        ),
        ImportError::Tailoring(m) => at(
            imp.tailoring.as_ref().unwrap_or(&imp.scap),
            format!("spec.import.tailoring: {m}"),
            "fix the tailoring file or remove `tailoring`",
        ),
        ImportError::Rule(i, m) => at(
            imp.rules.get(i).unwrap_or(&imp.profile),
            format!("spec.import.rules: {m}"),
            "name rules the profile selects, by their short id (`vacsine scap eval` lists them)",
        ),
    })?;
    let mut reqs = got.requirements;
    reqs.append(&mut p.doc.spec.requirements);
    p.doc.spec.requirements = reqs;
    let ds_path = PathBuf::from(&imp.scap.value);
    Ok(got
        .workflows
        .into_iter()
        .map(|w| Loaded {
            source: SourceFile::new(
                format!("{} (fix of {})", ds_path.display(), w.metadata.name.value),
                "",
            ),
            doc: w,
            path: ds_path.clone(),
        })
        .collect())
}

/// Problems of the `scap` checks written in the policy itself (imported ones are sound by
/// construction): the data stream must parse, the profile exist and select the rule. Each is
/// located at the requirement's id.
pub fn scap_check_problems(p: &Loaded<Policy>) -> Vec<LoadError> {
    use vacsine_core::policy::Check;
    let mut out = Vec::new();
    for r in p.doc.spec.requirements.iter().filter(|r| r.id.line > 0) {
        for c in std::iter::once(&r.check).chain(r.applies_when.as_ref()) {
            let Check::Scap(c) = c else { continue };
            let problem = match vacsine_scap::import::load_tailored(
                Path::new(&c.datastream),
                c.tailoring.as_deref().map(Path::new),
            ) {
                Err(e) => Some(e.to_string()),
                Ok(ds) => match vacsine_scap::xccdf::find_profile(&ds, &c.profile) {
                    Err(e) => Some(e),
                    Ok(profile) => {
                        let selected = vacsine_scap::xccdf::selected_rules(&ds, profile);
                        let short = vacsine_scap::import::short_rule_id;
                        (!selected
                            .iter()
                            .any(|x| x.id == c.rule || short(&x.id) == c.rule))
                        .then(|| {
                            format!(
                                "rule `{}` is not selected by profile `{}` of {}",
                                c.rule, profile.id, ds.file
                            )
                        })
                    }
                },
            };
            if let Some(m) = problem {
                out.push(LoadError::at(
                    &p.source,
                    r.id.line,
                    r.id.column,
                    format!("requirement `{}`: scap check: {m}", r.id.value),
                    Some("name a data stream, one of its profiles and a rule that profile selects (`vacsine scap profiles`, `vacsine scap eval`)".into()),
                ));
            }
        }
    }
    out
}

/// Load a target and check it on its own (nodes, names, vantage points).
pub fn load_target(path: &Path) -> Result<Loaded<Target>, LoadError> {
    let t = load_one(path, "Target", |d| match d {
        Document::Target(t) => Some(t),
        _ => None,
    })?;
    match validate::validate_target(&t.doc).into_iter().next() {
        Some(p) => Err(p.into_error(&t.source)),
        None => Ok(t),
    }
}

pub fn load_workflow(path: &Path) -> Result<Loaded<Workflow>, LoadError> {
    load_one(path, "Workflow", |d| match d {
        Document::Workflow(w) => Some(w),
        _ => None,
    })
}

/// The remediation catalog: workflows by name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub workflows: BTreeMap<String, Loaded<Workflow>>,
}

impl Catalog {
    pub fn index(&self) -> CatalogIndex<'_> {
        self.workflows
            .iter()
            .map(|(k, v)| (k.clone(), &v.doc))
            .collect()
    }

    /// Add every `*.yaml`/`*.yml` Workflow of `dir`. Problems are collected, not fatal.
    pub fn add_dir(&mut self, dir: &Path, problems: &mut Vec<LoadError>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => {
                problems.push(io_err(&dir.display().to_string(), &e));
                return;
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        paths.sort();
        for p in paths {
            self.add_file(&p, problems);
        }
    }

    pub fn add_file(&mut self, path: &Path, problems: &mut Vec<LoadError>) {
        match load_workflow(path) {
            Ok(w) => {
                let name = w.doc.metadata.name.value.clone();
                if let Some(prev) = self.workflows.get(&name) {
                    let same = |p: &Path| std::fs::canonicalize(p).ok();
                    if same(&prev.path) == same(path) {
                        return; // the same file reached through two catalog paths
                    }
                    problems.push(LoadError::at(
                        &w.source,
                        w.doc.metadata.name.line,
                        w.doc.metadata.name.column,
                        format!(
                            "workflow `{name}` is also defined in {}",
                            prev.path.display()
                        ),
                        Some("workflow names must be unique in a catalog".into()),
                    ));
                } else {
                    self.workflows.insert(name, w);
                }
            }
            Err(e) => problems.push(e),
        }
    }

    /// A workflow made by Vacsine (a SCAP rule's fix); a catalog workflow of the same name is
    /// an error.
    pub fn add_generated(&mut self, w: Loaded<Workflow>, problems: &mut Vec<LoadError>) {
        let name = w.doc.metadata.name.value.clone();
        if let Some(prev) = self.workflows.get(&name) {
            problems.push(LoadError::at(
                &prev.source,
                prev.doc.metadata.name.line,
                prev.doc.metadata.name.column,
                format!(
                    "workflow `{name}` has the name of the fix generated for an imported SCAP rule"
                ),
                Some(
                    "rename the catalog workflow (names `scap-*` are taken by imported rules)"
                        .into(),
                ),
            ));
            return;
        }
        self.workflows.insert(name, w);
    }

    /// Structural validation of every workflow of the catalog.
    pub fn problems(&self) -> Vec<LoadError> {
        let idx = self.index();
        let mut out = Vec::new();
        for w in self.workflows.values() {
            for p in validate::validate_workflow_structure(&w.doc, &idx) {
                out.push(p.into_error(&w.source));
            }
        }
        out
    }
}

/// Load the catalog a policy names (`spec.catalog`, relative to the policy file), plus
/// `extra` folders or files.
pub fn catalog_for(
    policy: Option<&Loaded<Policy>>,
    extra: &[PathBuf],
) -> (Catalog, Vec<LoadError>) {
    let mut cat = Catalog::default();
    let mut problems = Vec::new();
    if let Some(p) = policy {
        let base = p.path.parent().unwrap_or(Path::new("."));
        for d in &p.doc.spec.catalog {
            cat.add_dir(&base.join(d), &mut problems);
        }
    }
    for e in extra {
        if e.is_dir() {
            cat.add_dir(e, &mut problems);
        } else {
            cat.add_file(e, &mut problems);
        }
    }
    problems.extend(cat.problems());
    (cat, problems)
}

/// Everything `check`/`plan`/`enforce` need, loaded and validated together.
pub struct Inputs {
    pub policy: Loaded<Policy>,
    pub target: Loaded<Target>,
    pub catalog: Catalog,
}

/// Load policy, target and catalog; every problem found, located.
pub fn load_inputs(
    policy: &Path,
    target: &Path,
    extra_catalog: &[PathBuf],
) -> Result<Inputs, Vec<LoadError>> {
    load_inputs_with(load_policy(policy), target, extra_catalog)
}

/// A SCAP profile to enforce without a policy file (`vacsine enforce --scap`).
#[derive(Debug, Clone, Default)]
pub struct ScapImportArgs {
    pub datastream: PathBuf,
    pub profile: String,
    pub tailoring: Option<PathBuf>,
    pub rules: Vec<String>,
    pub container_as_machine: bool,
}

/// The policy `vacsine enforce --scap DS --profile ID` stands for: only `spec.import`.
pub fn scap_policy(a: &ScapImportArgs) -> Loaded<Policy> {
    use vacsine_core::doc::{Loc, Metadata};
    use vacsine_core::policy::{PolicySpec, ScapImport};
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let ds = abs(&a.datastream);
    let short = a
        .profile
        .rsplit_once("_profile_")
        .map(|x| x.1)
        .unwrap_or(&a.profile);
    let doc = Policy {
        api_version: vacsine_core::API_VERSION.into(),
        kind: "Policy".into(),
        metadata: Metadata {
            name: Loc::new(
                vacsine_core::plan::plan_workflow_name(short)["remediate-".len()..].to_string(),
            ),
            description: Some(format!("profile {} of {}", a.profile, ds.display())),
            ..Default::default()
        },
        spec: PolicySpec {
            catalog: vec![],
            import: Some(ScapImport {
                scap: Loc::new(ds.to_string_lossy().into_owned()),
                profile: Loc::new(a.profile.clone()),
                tailoring: a
                    .tailoring
                    .as_ref()
                    .map(|t| Loc::new(abs(t).to_string_lossy().into_owned())),
                rules: a.rules.iter().map(|r| Loc::new(r.clone())).collect(),
                container_as_machine: a.container_as_machine,
            }),
            requirements: vec![],
        },
    };
    Loaded {
        doc,
        source: SourceFile::new(format!("--scap {}", ds.display()), ""),
        path: ds,
    }
}

/// [`load_inputs`] for `vacsine enforce --scap`.
pub fn load_scap_inputs(
    a: &ScapImportArgs,
    target: &Path,
    extra_catalog: &[PathBuf],
) -> Result<Inputs, Vec<LoadError>> {
    load_inputs_with(Ok(scap_policy(a)), target, extra_catalog)
}

fn load_inputs_with(
    policy: Result<Loaded<Policy>, LoadError>,
    target: &Path,
    extra_catalog: &[PathBuf],
) -> Result<Inputs, Vec<LoadError>> {
    let mut errors = Vec::new();
    let mut p = policy.map_err(|e| errors.push(e)).ok();
    let generated = match p.as_mut().map(expand_import) {
        Some(Err(e)) => {
            errors.push(e);
            p = None;
            Vec::new()
        }
        Some(Ok(w)) => w,
        None => Vec::new(),
    };
    if let Some(p) = &p {
        errors.extend(scap_check_problems(p));
    }
    let t = load_target(target).map_err(|e| errors.push(e)).ok();
    let (mut catalog, mut cp) = catalog_for(p.as_ref(), extra_catalog);
    errors.append(&mut cp);
    for w in generated {
        catalog.add_generated(w, &mut errors);
    }
    if let (Some(p), Some(t)) = (&p, &t) {
        let (errs, warnings) = validate::Problem::split(validate::validate_policy(
            &p.doc,
            &catalog.index(),
            Some(&t.doc),
        ));
        for w in warnings {
            let e = w.into_error(&p.source);
            eprintln!("warning: {}:{}:{}: {}", e.file, e.line, e.column, e.message);
        }
        for prob in errs {
            errors.push(prob.into_error(&p.source));
        }
    }
    match (p, t) {
        (Some(policy), Some(target)) if errors.is_empty() => Ok(Inputs {
            policy,
            target,
            catalog,
        }),
        _ => Err(errors),
    }
}

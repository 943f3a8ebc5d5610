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
    let mut errors = Vec::new();
    let p = load_policy(policy).map_err(|e| errors.push(e)).ok();
    let t = load_target(target).map_err(|e| errors.push(e)).ok();
    let (catalog, mut cp) = catalog_for(p.as_ref(), extra_catalog);
    errors.append(&mut cp);
    if let (Some(p), Some(t)) = (&p, &t) {
        for prob in validate::validate_policy(&p.doc, &catalog.index(), Some(&t.doc)) {
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

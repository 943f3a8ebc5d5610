//! `vacsine validate`: every document, the catalog, the workflows and the firewall rulesets
//! that can be rendered without a site.

use crate::cli::SimpleFormat;
use crate::exit::Exit;
use crate::nftcheck::{nft_dry_run, RulesetCheck};
use crate::output::{print, print_diagnostics, print_json};
use std::path::{Path, PathBuf};
use vacsine_core::doc::{Document, LoadError};
use vacsine_enforce::inputs;

/// Whether a value holds template syntax anywhere (it is decided only at run time).
fn has_template(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::String(s) => s.contains("{{") || s.contains("{%"),
        serde_json::Value::Array(a) => a.iter().any(has_template),
        serde_json::Value::Object(o) => o.values().any(has_template),
        _ => false,
    }
}

/// The firewall rulesets `validate` can render without a site: the catalog's firewall steps
/// that need no input, and the fixes of each policy whose `with:` values are literal.
fn validate_ruleset_checks<'a>(
    docs: &'a [inputs::Loaded<Document>],
    cat: &'a inputs::Catalog,
    ecat: &vacsine_engine::Catalog,
) -> Vec<RulesetCheck<'a>> {
    let mut checks = Vec::new();
    for w in cat.workflows.values() {
        for r in vacsine_engine::firewall_rulesets(&w.doc, &Default::default(), ecat) {
            let Some(src) = cat.workflows.get(&r.defined_in) else {
                continue;
            };
            checks.push(RulesetCheck {
                source: &src.source,
                line: r.line,
                column: r.column,
                context: String::new(),
                inputs: None,
                ruleset: r,
            });
        }
    }
    for d in docs {
        let Document::Policy(p) = &d.doc else {
            continue;
        };
        for req in &p.spec.requirements {
            for fix in &req.fixes {
                let Some(w) = cat.workflows.get(&fix.uses.value) else {
                    continue;
                };
                let inputs: serde_json::Map<String, serde_json::Value> = fix
                    .with
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect();
                if inputs.is_empty() || inputs.values().any(has_template) {
                    continue;
                }
                for r in vacsine_engine::firewall_rulesets(&w.doc, &inputs, ecat) {
                    checks.push(RulesetCheck {
                        source: &d.source,
                        line: fix.uses.line,
                        column: fix.uses.column,
                        context: format!(
                            "requirement `{}`, fix `{}`",
                            req.id.value, fix.uses.value
                        ),
                        inputs: Some(inputs.clone()),
                        ruleset: r,
                    });
                }
            }
        }
    }
    checks
}

/// `vacsine validate FILE... [--catalog DIR]`: every problem found, located; exit 1 when
/// there is one.
pub(crate) async fn validate(files: &[PathBuf], catalog: &[PathBuf], format: SimpleFormat) -> Exit {
    let mut errors = Vec::new();
    let mut docs = Vec::new();
    for f in files {
        match inputs::load_any(f) {
            Ok(d) => docs.push(d),
            Err(e) => errors.push(e),
        }
    }
    let cat = build_catalog(catalog, &mut docs, &mut errors);
    let mut warnings = check_documents(&docs, &cat, &mut errors);
    // Every catalog workflow, by the one workflow validator (structure, executors, templates).
    let ecat = vacsine_enforce::engine_catalog(&cat);
    for w in cat.workflows.values() {
        for p in vacsine_engine::validate_workflow(&w.doc, &ecat) {
            errors.push(p.into_error(&w.source));
        }
    }
    // Firewall rulesets that can be rendered without a site are dry-run with `nft -c`.
    let (mut nft_errors, nft_warnings) =
        nft_dry_run(validate_ruleset_checks(&docs, &cat, &ecat)).await;
    warnings.extend(nft_warnings);
    errors.append(&mut nft_errors);
    errors.sort_by(|a, b| {
        (a.file.as_str(), a.line, a.column).cmp(&(b.file.as_str(), b.line, b.column))
    });
    errors.dedup_by(|a, b| {
        a.file == b.file && a.line == b.line && a.column == b.column && a.message == b.message
    });
    show_validation(&docs, &cat, errors, &warnings, format)
}

/// The catalog the documents are validated against: explicit folders, the policies'
/// catalogs, the workflows `spec.import` generates (the policies are rewritten with the
/// imported requirements), and workflow files given.
fn build_catalog(
    catalog: &[PathBuf],
    docs: &mut [inputs::Loaded<Document>],
    errors: &mut Vec<LoadError>,
) -> inputs::Catalog {
    let mut cat = inputs::Catalog::default();
    let mut extra_problems = Vec::new();
    for c in catalog {
        if c.is_dir() {
            cat.add_dir(c, &mut extra_problems);
        } else {
            cat.add_file(c, &mut extra_problems);
        }
    }
    // `spec.import`: the profile's rules become requirements, their fixes catalog workflows.
    let mut generated = Vec::new();
    for d in docs.iter_mut() {
        if let Document::Policy(p) = &d.doc {
            let mut lp = inputs::Loaded {
                doc: p.clone(),
                source: d.source.clone(),
                path: d.path.clone(),
            };
            lp.doc
                .rebase_paths(d.path.parent().unwrap_or_else(|| Path::new("")));
            errors.extend(inputs::scap_check_problems(&lp));
            if p.spec.import.is_none() {
                continue;
            }
            match inputs::expand_import(&mut lp) {
                Ok(w) => {
                    generated.extend(w);
                    d.doc = Document::Policy(lp.doc);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    for w in generated {
        cat.add_generated(w, &mut extra_problems);
    }
    for d in docs.iter() {
        match &d.doc {
            Document::Policy(p) => {
                let base = d.path.parent().unwrap_or(Path::new("."));
                for dir in &p.spec.catalog {
                    cat.add_dir(&base.join(dir), &mut extra_problems);
                }
            }
            Document::Workflow(w) => {
                cat.workflows
                    .entry(w.metadata.name.value.clone())
                    .or_insert_with(|| inputs::Loaded {
                        doc: w.clone(),
                        source: d.source.clone(),
                        path: d.path.clone(),
                    });
            }
            Document::Target(_) => {}
        }
    }
    errors.append(&mut extra_problems);
    cat
}

/// Each policy (against the catalog and the first target given) and each target: the problems
/// into `errors`; the deprecations, as warnings, returned.
fn check_documents(
    docs: &[inputs::Loaded<Document>],
    cat: &inputs::Catalog,
    errors: &mut Vec<LoadError>,
) -> Vec<String> {
    let targets: Vec<&vacsine_core::target::Target> = docs
        .iter()
        .filter_map(|d| match &d.doc {
            Document::Target(t) => Some(t),
            _ => None,
        })
        .collect();
    let idx = cat.index();
    let mut warnings: Vec<String> = Vec::new();
    for d in docs {
        match &d.doc {
            Document::Policy(p) => {
                let (probs, deprecated) = vacsine_core::validate::Problem::split(
                    vacsine_core::validate::validate_policy(p, &idx, targets.first().copied()),
                );
                errors.extend(probs.into_iter().map(|x| x.into_error(&d.source)));
                for w in deprecated {
                    let e = w.into_error(&d.source);
                    warnings.push(format!(
                        "{}:{}:{}: {}{}",
                        e.file,
                        e.line,
                        e.column,
                        e.message,
                        e.help.map(|h| format!(" ({h})")).unwrap_or_default()
                    ));
                }
            }
            Document::Target(t) => {
                let probs = vacsine_core::validate::validate_target(t);
                errors.extend(probs.into_iter().map(|x| x.into_error(&d.source)));
            }
            Document::Workflow(_) => {}
        }
    }
    warnings
}

/// Print the outcome of `validate`: a JSON document, or the problems as diagnostics, or one
/// line per valid document.
fn show_validation(
    docs: &[inputs::Loaded<Document>],
    cat: &inputs::Catalog,
    errors: Vec<LoadError>,
    warnings: &[String],
    format: SimpleFormat,
) -> Exit {
    if format == SimpleFormat::Json {
        let v: Vec<_> = errors
            .iter()
            .map(|e| serde_json::json!({"file": e.file, "line": e.line, "column": e.column, "message": e.message, "help": e.help}))
            .collect();
        print_json(
            &serde_json::json!({"valid": v.is_empty(), "documents": docs.len(), "workflows": cat.workflows.len(), "problems": v, "warnings": warnings}),
        );
        return if errors.is_empty() {
            Exit::Ok
        } else {
            Exit::Error
        };
    }
    for w in warnings {
        eprintln!("warning: {w}");
    }
    if errors.is_empty() {
        for d in docs {
            print(&format!(
                "ok  {} ({} {})\n",
                d.path.display(),
                d.doc.kind(),
                d.doc.name()
            ));
        }
        print(&format!(
            "{} documents valid ({} catalog workflows resolved)\n",
            docs.len(),
            cat.workflows.len()
        ));
        Exit::Ok
    } else {
        print_diagnostics(errors)
    }
}

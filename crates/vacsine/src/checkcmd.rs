//! `vacsine check` and `vacsine plan` (a policy on a target), and the loading they share
//! with `enforce` and `watch`.

use crate::cli::{Format, PolicyTarget, SimpleFormat};
use crate::exit::Exit;
use crate::nftcheck::{nft_dry_run, RulesetCheck};
use crate::output::{print, print_diagnostics, print_json};
use std::sync::Arc;
use vacsine_core::doc::LoadError;
use vacsine_core::driver::{DriverError, DriverErrorKind, ResolvedSite};
use vacsine_enforce::check::check_site;
use vacsine_enforce::inputs::{load_inputs, Inputs};
use vacsine_enforce::report;

pub(crate) fn load(io: &PolicyTarget) -> Result<Inputs, Exit> {
    load_inputs(&io.policy, &io.target, &io.catalog).map_err(print_diagnostics)
}

pub(crate) async fn connect_site(inputs: &Inputs) -> miette::Result<Arc<dyn ResolvedSite>> {
    crate::drivers::resolve(&inputs.target.doc)
        .await
        .map_err(|e| site_error(inputs, &e))
}

/// A driver error, located in the target file when it is about a container it names.
pub(crate) fn site_error(inputs: &Inputs, e: &DriverError) -> miette::Report {
    if let DriverErrorKind::NodeMissing { handle: container } = e.kind() {
        let spec = &inputs.target.doc.spec;
        let at = spec
            .nodes
            .iter()
            .filter_map(|n| n.container.as_ref())
            .chain(spec.vantage_points.iter().map(|v| &v.container))
            .find(|c| c.value == *container);
        if let Some(c) = at {
            let err = LoadError::at(&inputs.target.source, c.line, c.column, e.to_string(), None);
            return miette::Report::new(err);
        }
    }
    miette::miette!("{e}")
}

pub(crate) async fn check(io: &PolicyTarget, format: Format) -> miette::Result<Exit> {
    let inputs = match load(io) {
        Ok(i) => i,
        Err(exit) => return Ok(exit),
    };
    let site = connect_site(&inputs).await?;
    let results = check_site(&inputs.policy.doc, site.as_site()).await;
    let name = inputs.policy.doc.metadata.name.value.clone();
    match format {
        Format::Human => print(&report::check_human(&results)),
        Format::Json => print_json(&report::check_json(&results)),
        Format::Junit => print(&report::check_junit(&name, &results)),
        Format::Sarif => print_json(&report::check_sarif(
            &io.policy.display().to_string(),
            &results,
        )),
    }
    Ok(Exit::failures_if(
        results.iter().any(|r| r.outcome.is_problem()),
    ))
}

pub(crate) async fn plan(io: &PolicyTarget, format: SimpleFormat) -> miette::Result<Exit> {
    let inputs = match load(io) {
        Ok(i) => i,
        Err(exit) => return Ok(exit),
    };
    let site = connect_site(&inputs).await?;
    let results = check_site(&inputs.policy.doc, site.as_site()).await;
    let plan = vacsine_core::plan::plan(
        &inputs.policy.doc,
        &inputs.target.doc.metadata.name.value,
        &site.nodes(),
        &vacsine_enforce::check::findings(&results),
        &inputs.catalog.index(),
    );
    // Every firewall step of the plan, rendered with the fix's inputs, must load: dry-run
    // with `nft -c` before anything is printed.
    let checks = plan_ruleset_checks(&inputs, &plan);
    let (errors, warnings) = nft_dry_run(checks).await;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    if !errors.is_empty() {
        return Ok(print_diagnostics(errors));
    }
    match format {
        SimpleFormat::Json => print_json(&plan),
        SimpleFormat::Human => print(&plan_human(&plan)?),
    }
    Ok(Exit::failures_if(!plan.unfixable.is_empty()))
}

/// The firewall rulesets of a plan's fixes, rendered with the fix's inputs, each located at
/// the fix in the policy (the first requirement it fixes).
fn plan_ruleset_checks<'a>(
    inputs: &'a Inputs,
    plan: &vacsine_core::plan::Plan,
) -> Vec<RulesetCheck<'a>> {
    let ecat = vacsine_enforce::engine_catalog(&inputs.catalog);
    let mut checks = Vec::new();
    for i in &plan.items {
        let Some(w) = inputs.catalog.workflows.get(&i.workflow) else {
            continue;
        };
        // Located at the fix in the policy (the first requirement it fixes).
        let fix = inputs
            .policy
            .doc
            .spec
            .requirements
            .iter()
            .filter(|r| i.requirements.contains(&r.id.value))
            .flat_map(|r| r.fixes.iter().map(move |f| (r, f)))
            .find(|(_, f)| f.uses.value == i.workflow);
        let (line, column) = fix
            .map(|(_, f)| (f.uses.line, f.uses.column))
            .unwrap_or((0, 0));
        for r in vacsine_engine::firewall_rulesets(&w.doc, &i.inputs, &ecat) {
            checks.push(RulesetCheck {
                source: &inputs.policy.source,
                line,
                column,
                context: format!(
                    "requirement `{}` on node `{}`, fix `{}`",
                    i.requirements.join("`, `"),
                    i.node,
                    i.workflow
                ),
                inputs: Some(i.inputs.clone()),
                ruleset: r,
            });
        }
    }
    checks
}

/// A plan for people: one comment line per fix and per requirement that cannot be fixed, then
/// the workflow as YAML.
fn plan_human(plan: &vacsine_core::plan::Plan) -> miette::Result<String> {
    let mut out = String::new();
    for i in &plan.items {
        out.push_str(&format!(
            "# + {} on {}: fixes {} (strategy {}, disruption {})\n",
            i.workflow,
            i.node,
            i.requirements.join(", "),
            i.strategy,
            i.disruption
        ));
    }
    for u in &plan.unfixable {
        out.push_str(&format!(
            "# ! {} on {} cannot be fixed: {}\n",
            u.requirement, u.node, u.reason
        ));
    }
    if plan.items.is_empty() {
        out.push_str("# nothing to remediate\n");
    }
    let yaml = serde_saphyr::to_string(&plan.workflow)
        .map_err(|e| miette::miette!("cannot render the plan as YAML: {e}"))?;
    out.push_str(&yaml);
    Ok(out)
}

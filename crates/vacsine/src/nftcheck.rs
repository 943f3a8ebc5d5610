//! The `nft -c` dry run of the firewall rulesets a command would load (`plan`, `validate`).

use vacsine_core::doc::LoadError;

/// One firewall ruleset to dry-run with `nft -c`, and where a failure is reported.
pub(crate) struct RulesetCheck<'a> {
    pub source: &'a vacsine_core::doc::SourceFile,
    pub line: u64,
    pub column: u64,
    /// What asked for it (`requirement `r` on node `n`, fix `f``), or empty for a step
    /// that needs no input.
    pub context: String,
    /// The fix's inputs, for the help text.
    pub inputs: Option<serde_json::Map<String, serde_json::Value>>,
    pub ruleset: vacsine_engine::FirewallRuleset,
}

/// Dry-run every ruleset with `nft -c` (nothing is loaded; see
/// `vacsine_engine::executor::nft_check`), each distinct script once. Returns the located
/// errors and the warnings (`nft` not available here: said once, and the command goes on).
pub(crate) async fn nft_dry_run(checks: Vec<RulesetCheck<'_>>) -> (Vec<LoadError>, Vec<String>) {
    use vacsine_engine::executor::{nft_check, NftCheck};
    let mut errors = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut seen: std::collections::HashMap<String, NftCheck> = Default::default();
    for c in checks {
        let r = &c.ruleset;
        let step = format!("workflow `{}`, step `{}`", r.workflow, r.step);
        let head = if c.context.is_empty() {
            step.clone()
        } else {
            format!("{} ({step})", c.context)
        };
        let with = c
            .inputs
            .as_ref()
            .map(|i| format!(" with inputs {}", serde_json::Value::Object(i.clone())))
            .unwrap_or_default();
        let script = match &r.script {
            Ok(s) => s,
            Err(e) => {
                errors.push(LoadError::at(
                    c.source,
                    c.line,
                    c.column,
                    format!("{head}: the firewall step would fail{with}: {e}"),
                    Some(
                        "correct the fix's `with:` values or the workflow's firewall arguments"
                            .into(),
                    ),
                ));
                continue;
            }
        };
        let verdict = match seen.get(script) {
            Some(v) => v.clone(),
            None => {
                let v = nft_check(script).await;
                seen.insert(script.clone(), v.clone());
                v
            }
        };
        match verdict {
            NftCheck::Loads => {}
            NftCheck::Rejected(msg) => errors.push(LoadError::at(
                c.source,
                c.line,
                c.column,
                format!("{head}: the nft ruleset it renders{with} does not load (`nft -c`): {msg}"),
                Some(format!(
                    "the ruleset was checked with `nft -c` before anything runs; correct the fix's `with:` values or the rules of workflow `{}`.\nRuleset:\n{script}",
                    r.defined_in
                )),
            )),
            NftCheck::Unchecked(why) => warnings.push(format!("{head}: not checked: {why}")),
            NftCheck::Unavailable(why) => {
                // Said once; no other ruleset can be checked either.
                warnings.push(why);
                break;
            }
        }
    }
    (errors, warnings)
}

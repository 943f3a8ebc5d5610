//! Triggers (`spec.on`): a local event starts a workflow by itself at a site. The event is
//! data (`event.type`, `event.payload`, …): the condition is evaluated and the inputs are
//! rendered over it by the same template engine as steps, never by a shell.

use crate::template;
use crate::validate::WorkflowProblem;
use serde_json::{json, Map, Value};
use std::time::Duration;
use vacsine_core::workflow::{parse_duration, Trigger, Workflow, EVENT_TYPES};

/// What a matching trigger starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Fired {
    /// The workflow's inputs (strings, typed by the engine from the declarations).
    pub inputs: Map<String, Value>,
    /// Dedupe key and window, when the trigger has one.
    pub dedupe: Option<(String, Duration)>,
}

/// Whether `t` matches `event` (an object with `type` and `payload`), and what it starts.
pub fn fire(t: &Trigger, event: &Value) -> Result<Option<Fired>, String> {
    if event.get("type").and_then(Value::as_str) != Some(t.event.value.as_str()) {
        return Ok(None);
    }
    let ctx = json!({ "event": event });
    if let Some(c) = &t.condition {
        if !template::eval_condition(&c.value, &ctx)
            .map_err(|e| format!("in `if: {}`: {e}", c.value))?
        {
            return Ok(None);
        }
    }
    let mut inputs = Map::new();
    for (k, tpl) in &t.inputs {
        let v = template::render_str(tpl, &ctx).map_err(|e| format!("input `{k}`: {e}"))?;
        let v = match v {
            Value::String(s) => Value::String(s),
            other => Value::String(other.to_string()),
        };
        inputs.insert(k.clone(), v);
    }
    let dedupe = match &t.dedupe {
        Some(d) => {
            let key =
                match template::render_str(&d.key, &ctx).map_err(|e| format!("dedupe key: {e}"))? {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
            Some((
                key,
                parse_duration(&d.window).map_err(|e| format!("dedupe window: {e}"))?,
            ))
        }
        None => None,
    };
    Ok(Some(Fired { inputs, dedupe }))
}

/// Problems of `w`'s triggers: an unknown event type, an input the workflow does not
/// declare, a bad window.
pub fn problems(w: &Workflow) -> Vec<WorkflowProblem> {
    let mut out = Vec::new();
    for t in &w.spec.on {
        let at = |message: String, help: Option<String>| WorkflowProblem {
            step: None,
            line: t.event.line,
            column: t.event.column,
            message,
            help,
        };
        if !EVENT_TYPES.contains(&t.event.value.as_str()) {
            out.push(at(
                format!("`on`: unknown event type `{}`", t.event.value),
                Some(format!("one of: {}", EVENT_TYPES.join(", "))),
            ));
        }
        for k in t.inputs.keys() {
            if !w.spec.inputs.contains_key(k) {
                out.push(at(
                    format!(
                        "`on` ({}): input `{k}` is not declared in `spec.inputs`",
                        t.event.value
                    ),
                    Some("declare it, or remove it from the trigger".into()),
                ));
            }
        }
        if let Some(d) = &t.dedupe {
            if let Err(e) = parse_duration(&d.window) {
                out.push(at(
                    format!(
                        "`on` ({}): dedupe window `{}`: {e}",
                        t.event.value, d.window
                    ),
                    Some("a duration such as `10m`".into()),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wf(on: &str) -> Workflow {
        let y = format!(
            "apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata: {{name: t}}\nspec:\n  inputs:\n    ip: {{type: ip}}\n  on:\n{on}  steps:\n    - id: s\n      uses: command\n      with: {{argv: [\"true\"]}}\n"
        );
        vacsine_core::doc::parse_as::<Workflow>(&vacsine_core::doc::SourceFile::new("t.yaml", y))
            .unwrap()
    }

    #[test]
    fn a_trigger_fires_on_its_event_type_and_condition_with_rendered_inputs() {
        let w = wf("    - event: indicator\n      if: \"event.payload.type == 'ip'\"\n      inputs: {ip: \"{{ event.payload.value }}\"}\n      dedupe: {key: \"{{ event.payload.value }}\", window: 10m}\n");
        assert!(problems(&w).is_empty());
        let t = &w.spec.on[0];
        let ev = json!({"type": "indicator", "payload": {"type": "ip", "value": "203.0.113.9"}});
        let f = fire(t, &ev).unwrap().unwrap();
        assert_eq!(f.inputs["ip"], "203.0.113.9");
        assert_eq!(
            f.dedupe,
            Some(("203.0.113.9".into(), Duration::from_secs(600)))
        );
        let other = json!({"type": "indicator", "payload": {"type": "domain", "value": "x"}});
        assert_eq!(fire(t, &other).unwrap(), None);
        let incident = json!({"type": "incident", "payload": {"type": "ip", "value": "1.2.3.4"}});
        assert_eq!(fire(t, &incident).unwrap(), None);
        // A payload without the field the condition reads: an error naming it, not a match.
        let bare = json!({"type": "indicator", "payload": {}});
        assert!(fire(t, &bare).is_err());
    }

    #[test]
    fn trigger_problems_name_the_fix() {
        let w = wf("    - event: sighting\n      inputs: {port: \"1\"}\n      dedupe: {key: k, window: soon}\n");
        let p: Vec<String> = problems(&w).into_iter().map(|p| p.message).collect();
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].contains("unknown event type `sighting`"));
        assert!(p[1].contains("input `port` is not declared"));
        assert!(p[2].contains("dedupe window `soon`"));
    }
}

//! Workflow inputs: values given on the command line or by a caller, checked and coerced
//! against the workflow's declared inputs.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use vacsine_core::workflow::InputSpec;

/// Check and coerce input values against the declared inputs.
pub(crate) fn coerce_inputs(
    decl: &BTreeMap<String, InputSpec>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, (String, String)> {
    for k in given.keys() {
        if !decl.contains_key(k) && k != "event" {
            let known: Vec<&str> = decl.keys().map(String::as_str).collect();
            return Err((
                k.clone(),
                format!(
                    "not declared by the workflow (declared inputs: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    let mut out = Map::new();
    for (name, spec) in decl {
        let raw = match (given.get(name), &spec.default) {
            (Some(v), _) => Some(v),
            (None, Some(d)) => Some(d),
            (None, None) => None,
        };
        let v = match raw {
            Some(v) => spec.ty.coerce(v).map_err(|m| (name.clone(), m))?,
            None if spec.required.unwrap_or(true) => {
                return Err((
                    name.clone(),
                    format!("required (type {}) and not given", spec.ty.as_str()),
                ))
            }
            None => Value::Null,
        };
        if !spec.allowed.is_empty()
            && !v.is_null()
            && !spec
                .allowed
                .iter()
                .any(|a| spec.ty.coerce(a).map(|a| a == v).unwrap_or(false))
        {
            let allowed: Vec<String> = spec.allowed.iter().map(Value::to_string).collect();
            return Err((
                name.clone(),
                format!(
                    "{v} is not one of the allowed values: {}",
                    allowed.join(", ")
                ),
            ));
        }
        out.insert(name.clone(), v);
    }
    Ok(out)
}

//! Workflow inputs: values given on the command line or by a caller, checked and coerced
//! against the workflow's declared inputs. The rules live in the core
//! ([`vacsine_core::workflow::coerce_inputs`]), shared with static validation and the CLI.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use vacsine_core::workflow::InputSpec;

/// Check and coerce input values against the declared inputs; the error names the input.
pub(crate) fn coerce_inputs(
    decl: &BTreeMap<String, InputSpec>,
    given: &Map<String, Value>,
) -> Result<Map<String, Value>, (String, String)> {
    vacsine_core::workflow::coerce_inputs(decl, given).map_err(|e| (e.name, e.message))
}

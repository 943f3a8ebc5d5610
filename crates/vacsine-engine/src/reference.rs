//! What workflow authors read: the workflow JSON Schema with `with:` typed for each executor,
//! and the executor reference (arguments and outputs). Both are generated from one source, the
//! executors' argument types ([`Executor::args_schema`], derived with `schemars` from the very
//! structs that parse `with:` at run time), so neither can drift from what the engine accepts.
//!
//! A value in `with:` may be a template (`"{{ inputs.port }}"`) wherever the argument is not
//! taken literally: the schema accepts a template string in place of any non-string value.

use crate::executor::{Executor, Registry, WORKFLOW_EXECUTOR};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use std::fmt::Write as _;
use std::sync::Arc;

/// Prefix of the definitions the executors' argument types add to the workflow schema (kept
/// apart from the workflow's own definitions).
const DEF_PREFIX: &str = "with.";
/// The definition of a templated value.
const TEMPLATE_DEF: &str = "Template";

/// The `with:` schema of each executor: (executor, its `$ref`), and every definition they use,
/// named with [`DEF_PREFIX`] and already made template-tolerant.
struct ArgSchemas {
    by_executor: Vec<(Arc<dyn Executor>, Value)>,
    defs: Map<String, Value>,
}

fn arg_schemas(registry: &Registry) -> ArgSchemas {
    let mut g = SchemaSettings::draft2020_12().into_generator();
    let mut by_executor = Vec::new();
    for e in registry.executors() {
        let mut s = e.args_schema(&mut g).to_value();
        prefix_refs(&mut s);
        by_executor.push((e.clone(), s));
    }
    let mut defs = Map::new();
    for (name, mut def) in g.take_definitions(true) {
        prefix_refs(&mut def);
        templatable(&mut def);
        defs.insert(format!("{DEF_PREFIX}{name}"), def);
    }
    ArgSchemas { by_executor, defs }
}

/// `#/$defs/X` → `#/$defs/with.X` everywhere in `v`.
fn prefix_refs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => {
                        if let Some(name) = r.strip_prefix("#/$defs/") {
                            *r = format!("#/$defs/{DEF_PREFIX}{name}");
                        }
                    }
                    (_, x) => prefix_refs(x),
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(prefix_refs),
        _ => {}
    }
}

/// Whether a schema accepts only strings (a template is a string already).
fn only_string(s: &Value) -> bool {
    match s.get("type") {
        Some(Value::String(t)) => t == "string",
        _ => false,
    }
}

/// Let every non-string value under `s` (object properties, map values, array items) be a
/// template string instead.
fn templatable(s: &mut Value) {
    let Some(o) = s.as_object_mut() else {
        return;
    };
    if let Some(Value::Object(props)) = o.get_mut("properties") {
        for p in props.values_mut() {
            wrap(p);
        }
    }
    for key in ["additionalProperties", "items"] {
        if let Some(p) = o.get_mut(key) {
            if p.is_object() {
                wrap(p);
            }
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        if let Some(Value::Array(a)) = o.get_mut(key) {
            a.iter_mut().for_each(templatable);
        }
    }
}

fn wrap(p: &mut Value) {
    templatable(p);
    if !p.is_object() || only_string(p) {
        return;
    }
    let mut inner = p.take();
    let mut outer = Map::new();
    if let Some(o) = inner.as_object_mut() {
        for k in ["description", "default"] {
            if let Some(v) = o.remove(k) {
                outer.insert(k.into(), v);
            }
        }
    }
    outer.insert(
        "anyOf".into(),
        json!([inner, { "$ref": format!("#/$defs/{TEMPLATE_DEF}") }]),
    );
    *p = Value::Object(outer);
}

/// The workflow JSON Schema (`vacsine schema workflow`): the workflow types from the core,
/// with each step's `with:` typed by the executor its `uses:` names.
pub fn workflow_schema(registry: &Registry) -> Value {
    let mut root = schemars::schema_for!(vacsine_core::workflow::Workflow).to_value();
    let args = arg_schemas(registry);
    let defs = root
        .as_object_mut()
        .and_then(|o| o.get_mut("$defs"))
        .and_then(Value::as_object_mut)
        .expect("the workflow schema has definitions");
    defs.insert(
        TEMPLATE_DEF.into(),
        json!({
            "description": "A template (minijinja), evaluated at run time: `{{ inputs.x }}`.",
            "type": "string",
            "pattern": "\\{\\{|\\{%",
        }),
    );
    defs.extend(args.defs);
    let mut names: Vec<Value> = Vec::new();
    let mut cases = Vec::new();
    for (e, with) in &args.by_executor {
        names.push(json!(e.name()));
        let mut with = with.clone();
        if with.get("$ref").is_none() {
            templatable(&mut with);
        }
        cases.push(json!({
            "if": { "properties": { "uses": { "const": e.name() } }, "required": ["uses"] },
            "then": { "properties": { "with": with } },
        }));
    }
    names.push(json!(WORKFLOW_EXECUTOR));
    let step = defs
        .get_mut("Step")
        .and_then(Value::as_object_mut)
        .expect("the workflow schema defines Step");
    if let Some(Value::Object(uses)) = step.get_mut("properties").and_then(|p| p.get_mut("uses")) {
        uses.insert("enum".into(), Value::Array(names));
    }
    step.insert("allOf".into(), Value::Array(cases));
    root
}

/// The executor reference (`docs/executors.md`, `vacsine schema executors`), in Markdown.
pub fn executor_reference(registry: &Registry) -> String {
    let args = arg_schemas(registry);
    let mut out = String::from(
        "# Executors\n\n\
         <!-- Generated by `vacsine schema executors` from the executors' argument types; a test \
         fails when it differs. -->\n\n\
         A step's `uses:` names an executor and its `with:` gives the executor's arguments. \
         Unknown arguments are refused when the workflow is validated. Any value not taken \
         literally may be a template (`\"{{ inputs.port }}\"`), rendered at run time; a whole \
         value that is one `{{ expression }}` keeps its type (a number stays a number).\n\n\
         The same arguments are typed in the workflow JSON Schema (`vacsine schema workflow`, \
         `schemas/workflow.schema.json`), so an editor with a YAML language server completes \
         and checks them.\n\n",
    );
    for (e, with) in &args.by_executor {
        let _ = writeln!(out, "## `{}`\n\n{}\n", e.name(), e.summary());
        let yes = |b: bool| if b { "yes" } else { "no" };
        let _ = writeln!(
            out,
            "Runs on a node: {} · safe to re-run after a crash (default): {} · check mode: {}",
            yes(e.needs_node()),
            yes(e.idempotent()),
            yes(e.supports_check_mode()),
        );
        if !e.literal_args().is_empty() {
            let lit: Vec<String> = e.literal_args().iter().map(|a| format!("`{a}`")).collect();
            let _ = writeln!(
                out,
                "· taken literally, never templated: {}",
                lit.join(", ")
            );
        }
        out.push('\n');
        let body = resolve(with, &args.defs);
        let props = body.get("properties").and_then(Value::as_object);
        match props {
            Some(p) if !p.is_empty() => fields_table(&mut out, body, &args.defs),
            _ => out.push_str("No arguments.\n"),
        }
        for (name, def) in nested_structs(props, &args.defs) {
            let _ = writeln!(out, "\n`{name}`:\n");
            fields_table(&mut out, def, &args.defs);
        }
        if !e.outputs().is_empty() {
            out.push_str("\nOutputs (`result.outputs`):\n\n");
            for (name, what) in e.outputs() {
                let _ = writeln!(out, "- `{name}`: {what}");
            }
        }
        out.push('\n');
    }
    let _ = writeln!(
        out,
        "## `{WORKFLOW_EXECUTOR}`\n\nRun another workflow of the catalog as one step; `with:` \
         gives its inputs (checked against the called workflow's `inputs`). Run by the engine \
         itself: a failed sub-workflow is compensated before its parent fails."
    );
    out
}

/// One row per field of an object schema: name, type, required, default, description.
fn fields_table(out: &mut String, body: &Value, defs: &Map<String, Value>) {
    let Some(props) = body.get("properties").and_then(Value::as_object) else {
        return;
    };
    let required: Vec<&str> = body
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.push_str("| argument | type | required | default | description |\n");
    out.push_str("|---|---|---|---|---|\n");
    for (name, p) in props {
        let default = p
            .get("default")
            .filter(|d| !d.is_null())
            .map(|d| format!("`{d}`"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {default} | {} |",
            type_name(p, defs),
            if required.contains(&name.as_str()) {
                "yes"
            } else {
                ""
            },
            cell(p.get("description").and_then(Value::as_str).unwrap_or("")),
        );
    }
}

/// The struct definitions (objects with fields) the arguments name directly, in order of first
/// mention (`ChainArg`, `RuleArg`): documented under the executor's table. Enumerations and
/// the policy's checks are named, not expanded.
fn nested_structs<'a>(
    props: Option<&'a Map<String, Value>>,
    defs: &'a Map<String, Value>,
) -> Vec<(String, &'a Value)> {
    fn refs<'v>(v: &'v Value, found: &mut Vec<&'v str>) {
        match v {
            Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("$ref", Value::String(r)) => found.push(r),
                        (_, x) => refs(x, found),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    for p in props.into_iter().flat_map(|p| p.values()) {
        refs(p, &mut found);
    }
    let mut out: Vec<(String, &Value)> = Vec::new();
    for r in found {
        let Some(name) = r.strip_prefix("#/$defs/") else {
            continue;
        };
        let Some(def) = defs.get(name) else { continue };
        let short = name.trim_start_matches(DEF_PREFIX).to_string();
        if def.get("properties").is_some() && !out.iter().any(|(n, _)| *n == short) {
            out.push((short, def));
        }
    }
    out
}

/// A schema behind its `$ref`, if it has one.
fn resolve<'a>(s: &'a Value, defs: &'a Map<String, Value>) -> &'a Value {
    match s.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|n| defs.get(n))
            .map(|d| resolve(d, defs))
            .unwrap_or(s),
        None => s,
    }
}

/// A short human name of a schema's type (`string`, `[integer]`, `map of string`, `a | b`).
fn type_name(s: &Value, defs: &Map<String, Value>) -> String {
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        if name == TEMPLATE_DEF {
            return "template".into();
        }
        let target = resolve(s, defs);
        if ["enum", "oneOf", "anyOf"]
            .iter()
            .any(|k| target.get(*k).is_some())
        {
            return type_name(target, defs);
        }
        return name.trim_start_matches(DEF_PREFIX).to_string();
    }
    if let Some(Value::Array(e)) = s.get("enum") {
        return e
            .iter()
            .map(|v| format!("`{}`", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect::<Vec<_>>()
            .join(" \\| ");
    }
    // An externally tagged variant: `{ port: {...} }`.
    if let (Some(Value::Object(props)), Some(Value::Array(req))) =
        (s.get("properties"), s.get("required"))
    {
        if props.len() == 1 && req.len() == 1 {
            if let Some(k) = props.keys().next() {
                return format!("`{k}: {{…}}`");
            }
        }
    }
    if let Some(c) = s.get("const") {
        return format!("`{}`", c.as_str().map_or(c.to_string(), str::to_string));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(Value::Array(alts)) = s.get(key) {
            let names: Vec<String> = alts
                .iter()
                .map(|a| type_name(a, defs))
                .filter(|n| n != "template" && n != "null")
                .collect();
            return names.join(" \\| ");
        }
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => vec![],
    };
    match types.as_slice() {
        [] => "any".into(),
        ["array"] => match s.get("items") {
            Some(i) if i.is_object() => format!("[{}]", type_name(i, defs)),
            _ => "[any]".into(),
        },
        ["object"] => match s.get("additionalProperties") {
            Some(a) if a.is_object() => format!("map of {}", type_name(a, defs)),
            _ => "object".into(),
        },
        ts => ts.join(" \\| "),
    }
}

/// Text fit for one Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('\n', " ").replace('|', "\\|")
}

//! Templating of step arguments and conditions (minijinja, strict undefined).
//!
//! Templated values are *data*: a rendered string is handed to an executor as one argument or
//! one environment value, never spliced into a shell command line.

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;
use serde_json::Value;
use std::sync::OnceLock;

/// The shared environment: strict undefined, no auto-escaping, no file loader.
pub(crate) fn env() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.set_keep_trailing_newline(true);
        env
    })
}

/// Whether a string contains template syntax at all.
pub(crate) fn is_templated(s: &str) -> bool {
    s.contains("{{") || s.contains("{%") || s.contains("{#")
}

/// When the whole string is one `{{ expr }}`, the expression (to keep its native type).
pub(crate) fn sole_expression(s: &str) -> Option<&str> {
    let t = s.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(
        inner
            .trim()
            .trim_start_matches('-')
            .trim_end_matches('-')
            .trim(),
    )
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

/// Render one string template. The context is any serializable value: a lazy
/// `minijinja::Value` object (the engine's, see `engine::context`) is passed through as is.
pub(crate) fn render_str<C: Serialize + ?Sized>(tpl: &str, ctx: &C) -> Result<Value, String> {
    if !is_templated(tpl) {
        return Ok(Value::String(tpl.to_string()));
    }
    if let Some(expr) = sole_expression(tpl) {
        return eval_value(expr, ctx).map_err(|e| format!("in `{tpl}`: {e}"));
    }
    env()
        .render_str(tpl, ctx)
        .map(Value::String)
        .map_err(|e| format!("in `{tpl}`: {}", describe(&e)))
}

/// Evaluate an expression into a JSON value; an undefined result is an error.
pub(crate) fn eval_value<C: Serialize + ?Sized>(expr: &str, ctx: &C) -> Result<Value, String> {
    let compiled = env().compile_expression(expr).map_err(|e| describe(&e))?;
    let v = compiled.eval(ctx).map_err(|e| describe(&e))?;
    if v.is_undefined() {
        return Err(format!("`{expr}` is undefined"));
    }
    serde_json::to_value(&v).map_err(|e| format!("`{expr}` has no data representation: {e}"))
}

/// Evaluate an `if` condition.
pub(crate) fn eval_condition<C: Serialize + ?Sized>(expr: &str, ctx: &C) -> Result<bool, String> {
    let expr = sole_expression(expr).unwrap_or(expr);
    let compiled = env().compile_expression(expr).map_err(|e| describe(&e))?;
    let v = compiled.eval(ctx).map_err(|e| describe(&e))?;
    if v.is_undefined() {
        return Err(format!("`{expr}` is undefined"));
    }
    Ok(v.is_true())
}

/// Render every string inside `v` recursively (map keys are left as written).
pub(crate) fn render_value<C: Serialize + ?Sized>(v: &Value, ctx: &C) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => render_str(s, ctx)?,
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, ctx))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), render_value(x, ctx)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// A compiled template's free variables (dotted paths), or its syntax error.
pub(crate) fn template_variables(tpl: &str) -> Result<Vec<String>, String> {
    if let Some(expr) = sole_expression(tpl) {
        return expression_variables(expr);
    }
    let t = env().template_from_str(tpl).map_err(|e| describe(&e))?;
    let mut v: Vec<String> = t.undeclared_variables(true).into_iter().collect();
    v.sort();
    Ok(v)
}

/// An expression's free variables (dotted paths), or its syntax error.
pub(crate) fn expression_variables(expr: &str) -> Result<Vec<String>, String> {
    let e = env().compile_expression(expr).map_err(|e| describe(&e))?;
    let mut v: Vec<String> = e.undeclared_variables(true).into_iter().collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_and_keeps_native_types() {
        let ctx = json!({"inputs": {"ip": "1.2.3.4; rm -rf /", "ports": [22, 23]}});
        assert_eq!(
            render_str("{{ inputs.ip }}", &ctx).unwrap(),
            json!("1.2.3.4; rm -rf /")
        );
        assert_eq!(
            render_str("{{ inputs.ports }}", &ctx).unwrap(),
            json!([22, 23])
        );
        assert_eq!(
            render_str("ip={{ inputs.ip }}", &ctx).unwrap(),
            json!("ip=1.2.3.4; rm -rf /")
        );
        assert!(render_str("{{ inputs.nope }}", &ctx).is_err());
        assert!(render_str("x {{ inputs.nope }}", &ctx).is_err());
        assert!(render_str("{{ inputs.ip", &ctx).is_err());
    }

    #[test]
    fn conditions_and_variables() {
        let ctx = json!({"inputs": {"on": true}});
        assert!(eval_condition("inputs.on", &ctx).unwrap());
        assert!(!eval_condition("not inputs.on", &ctx).unwrap());
        assert!(eval_condition("inputs.off", &ctx).is_err());
        assert_eq!(
            template_variables("{{ steps.a.outputs.x }} {{ inputs.y }}").unwrap(),
            vec!["inputs.y".to_string(), "steps.a.outputs.x".to_string()]
        );
        assert_eq!(
            template_variables("{% for p in inputs.ports %}{{ p }}{% endfor %}").unwrap(),
            vec!["inputs.ports".to_string()]
        );
    }
}

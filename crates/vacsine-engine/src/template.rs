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

/// Deserialize rendered step arguments into an executor's typed arguments.
///
/// A value that is exactly `{{ expr }}` keeps its type (a port stays a number, a list stays a
/// list), which typed fields need. Where the executor wants a *list of strings* or a *map of
/// strings* (`argv`, `env`, headers…), a number or boolean element is taken as its text, so
/// `argv: [nc, "{{ inputs.port }}"]` works: each element is one argument, never re-parsed by a
/// shell. Struct fields stay strict (`mode: 644` is still refused: a mode must be written as a
/// string), as do enums. The conversion is driven by the executor's own types, so every
/// executor gets it without declaring anything.
pub(crate) fn from_rendered<T: serde::de::DeserializeOwned>(
    v: Value,
) -> Result<T, serde_json::Error> {
    T::deserialize(Rendered {
        v,
        scalar_as_string: false,
    })
}

/// A JSON value as a deserializer that turns scalars into strings inside string collections.
struct Rendered {
    v: Value,
    /// Inside a sequence or a map (not a struct): a number or boolean may become a string.
    scalar_as_string: bool,
}

impl<'de> serde::de::IntoDeserializer<'de, serde_json::Error> for Rendered {
    type Deserializer = Self;
    fn into_deserializer(self) -> Self {
        self
    }
}

fn visit_seq<'de, V: serde::de::Visitor<'de>>(
    a: Vec<Value>,
    vis: V,
) -> Result<V::Value, serde_json::Error> {
    let mut seq = serde::de::value::SeqDeserializer::new(a.into_iter().map(|v| Rendered {
        v,
        scalar_as_string: true,
    }));
    let out = vis.visit_seq(&mut seq)?;
    seq.end()?;
    Ok(out)
}

fn visit_map<'de, V: serde::de::Visitor<'de>>(
    m: serde_json::Map<String, Value>,
    scalar_as_string: bool,
    vis: V,
) -> Result<V::Value, serde_json::Error> {
    let mut map = serde::de::value::MapDeserializer::new(m.into_iter().map(|(k, v)| {
        (
            k,
            Rendered {
                v,
                scalar_as_string,
            },
        )
    }));
    let out = vis.visit_map(&mut map)?;
    map.end()?;
    Ok(out)
}

macro_rules! strict {
    ($($f:ident)*) => {$(
        fn $f<V: serde::de::Visitor<'de>>(self, vis: V) -> Result<V::Value, Self::Error> {
            self.v.$f(vis)
        }
    )*};
}

impl<'de> serde::Deserializer<'de> for Rendered {
    type Error = serde_json::Error;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, vis: V) -> Result<V::Value, Self::Error> {
        match self.v {
            Value::Array(a) => visit_seq(a, vis),
            Value::Object(m) => visit_map(m, false, vis),
            v => v.deserialize_any(vis),
        }
    }
    fn deserialize_str<V: serde::de::Visitor<'de>>(self, vis: V) -> Result<V::Value, Self::Error> {
        self.deserialize_string(vis)
    }
    fn deserialize_string<V: serde::de::Visitor<'de>>(
        self,
        vis: V,
    ) -> Result<V::Value, Self::Error> {
        match self.v {
            Value::Number(n) if self.scalar_as_string => vis.visit_string(n.to_string()),
            Value::Bool(b) if self.scalar_as_string => vis.visit_string(b.to_string()),
            v => v.deserialize_string(vis),
        }
    }
    fn deserialize_option<V: serde::de::Visitor<'de>>(
        self,
        vis: V,
    ) -> Result<V::Value, Self::Error> {
        match self.v {
            Value::Null => vis.visit_none(),
            v => vis.visit_some(Rendered {
                v,
                scalar_as_string: self.scalar_as_string,
            }),
        }
    }
    fn deserialize_seq<V: serde::de::Visitor<'de>>(self, vis: V) -> Result<V::Value, Self::Error> {
        match self.v {
            Value::Array(a) => visit_seq(a, vis),
            v => v.deserialize_seq(vis),
        }
    }
    fn deserialize_map<V: serde::de::Visitor<'de>>(self, vis: V) -> Result<V::Value, Self::Error> {
        match self.v {
            Value::Object(m) => visit_map(m, true, vis),
            v => v.deserialize_map(vis),
        }
    }
    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        vis: V,
    ) -> Result<V::Value, Self::Error> {
        match self.v {
            Value::Object(m) => visit_map(m, false, vis),
            v => v.deserialize_struct(name, fields, vis),
        }
    }
    fn deserialize_newtype_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        vis: V,
    ) -> Result<V::Value, Self::Error> {
        vis.visit_newtype_struct(self)
    }
    fn deserialize_enum<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        vis: V,
    ) -> Result<V::Value, Self::Error> {
        self.v.deserialize_enum(name, variants, vis)
    }
    fn deserialize_unit_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        vis: V,
    ) -> Result<V::Value, Self::Error> {
        self.v.deserialize_unit_struct(name, vis)
    }
    fn deserialize_tuple<V: serde::de::Visitor<'de>>(
        self,
        len: usize,
        vis: V,
    ) -> Result<V::Value, Self::Error> {
        self.v.deserialize_tuple(len, vis)
    }
    fn deserialize_tuple_struct<V: serde::de::Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        vis: V,
    ) -> Result<V::Value, Self::Error> {
        self.v.deserialize_tuple_struct(name, len, vis)
    }
    strict! {
        deserialize_bool deserialize_i8 deserialize_i16 deserialize_i32 deserialize_i64
        deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64 deserialize_f32
        deserialize_f64 deserialize_char deserialize_bytes deserialize_byte_buf deserialize_unit
        deserialize_identifier deserialize_ignored_any deserialize_i128 deserialize_u128
    }
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

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Args {
        argv: Vec<String>,
        #[serde(default)]
        env: std::collections::BTreeMap<String, String>,
        #[serde(default)]
        mode: Option<String>,
        #[serde(default)]
        port: Option<u16>,
    }

    #[test]
    fn typed_values_become_strings_only_where_a_string_list_or_map_wants_them() {
        let ctx = json!({"inputs": {"port": 8080, "on": true, "list": [1, 2]}});
        let with = json!({
            "argv": ["nc", "-l", "{{ inputs.port }}"],
            "env": {"ON": "{{ inputs.on }}"},
            "port": "{{ inputs.port }}",
        });
        let a: Args = from_rendered(render_value(&with, &ctx).unwrap()).unwrap();
        assert_eq!(a.argv, ["nc", "-l", "8080"]);
        assert_eq!(a.env["ON"], "true");
        assert_eq!(a.port, Some(8080));
        // A list is not an argument; a struct field that wants a string stays strict.
        let bad = json!({"argv": ["echo", "{{ inputs.list }}"]});
        let e = from_rendered::<Args>(render_value(&bad, &ctx).unwrap()).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
        let e = from_rendered::<Args>(json!({"argv": ["x"], "mode": 644})).unwrap_err();
        assert!(e.to_string().contains("expected a string"), "{e}");
        let e = from_rendered::<Args>(json!({"argv": ["x"], "bogus": 1})).unwrap_err();
        assert!(e.to_string().contains("unknown field `bogus`"), "{e}");
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

//! A pure OVAL 5.11 evaluator: definitions (criteria trees), tests (`check`,
//! `check_existence`, states), objects (collected through [`System`]), variables. What it
//! does not support gives `not evaluated` with the reason, never a guess.

use crate::ds::OvalDoc;
use crate::system::{FileKind, System};
use crate::xml::Elem;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OvalResult {
    True,
    False,
    Unknown,
    Error,
    NotEvaluated,
    NotApplicable,
}

impl OvalResult {
    pub fn negate(self) -> OvalResult {
        match self {
            OvalResult::True => OvalResult::False,
            OvalResult::False => OvalResult::True,
            r => r,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            OvalResult::True => "true",
            OvalResult::False => "false",
            OvalResult::Unknown => "unknown",
            OvalResult::Error => "error",
            OvalResult::NotEvaluated => "not evaluated",
            OvalResult::NotApplicable => "not applicable",
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    t: usize,
    f: usize,
    e: usize,
    u: usize,
    ne: usize,
    na: usize,
}

impl Counts {
    fn of(results: impl IntoIterator<Item = OvalResult>) -> Counts {
        let mut c = Counts::default();
        for r in results {
            match r {
                OvalResult::True => c.t += 1,
                OvalResult::False => c.f += 1,
                OvalResult::Error => c.e += 1,
                OvalResult::Unknown => c.u += 1,
                OvalResult::NotEvaluated => c.ne += 1,
                OvalResult::NotApplicable => c.na += 1,
            }
        }
        c
    }
    fn undecided(&self) -> Option<OvalResult> {
        if self.e > 0 {
            Some(OvalResult::Error)
        } else if self.u > 0 {
            Some(OvalResult::Unknown)
        } else if self.ne > 0 {
            Some(OvalResult::NotEvaluated)
        } else {
            None
        }
    }
}

/// Combines results with an OVAL operator (`AND`, `OR`, `ONE`, `XOR`), as the OVAL 5.11
/// truth tables say; `not applicable` results are ignored.
pub fn combine(operator: &str, results: &[OvalResult]) -> OvalResult {
    let c = Counts::of(results.iter().copied());
    if c.t + c.f + c.e + c.u + c.ne == 0 {
        return OvalResult::NotApplicable;
    }
    match operator {
        "OR" => {
            if c.t > 0 {
                OvalResult::True
            } else {
                c.undecided().unwrap_or(OvalResult::False)
            }
        }
        "ONE" => {
            if c.t > 1 {
                OvalResult::False
            } else if let Some(u) = c.undecided() {
                u
            } else if c.t == 1 {
                OvalResult::True
            } else {
                OvalResult::False
            }
        }
        "XOR" => c.undecided().unwrap_or(if c.t % 2 == 1 {
            OvalResult::True
        } else {
            OvalResult::False
        }),
        // AND is the default.
        _ => {
            if c.f > 0 {
                OvalResult::False
            } else {
                c.undecided().unwrap_or(OvalResult::True)
            }
        }
    }
}

/// A test's `check` over the results of its items against the states.
pub fn check_items(check: &str, results: &[OvalResult]) -> OvalResult {
    let c = Counts::of(results.iter().copied());
    match check {
        "at least one" => combine("OR", results),
        "only one" => combine("ONE", results),
        "none satisfy" | "none exist" => {
            if c.t > 0 {
                OvalResult::False
            } else {
                c.undecided().unwrap_or(OvalResult::True)
            }
        }
        _ => combine("AND", results),
    }
}

/// Why a value could not be computed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    Error(String),
    NotChecked(String),
}

impl Fault {
    fn result(&self) -> OvalResult {
        match self {
            Fault::Error(_) => OvalResult::Error,
            Fault::NotChecked(_) => OvalResult::NotEvaluated,
        }
    }
    fn message(&self) -> &str {
        match self {
            Fault::Error(m) | Fault::NotChecked(m) => m,
        }
    }
}

/// One collected item: entity name → values.
pub type Item = BTreeMap<String, Vec<String>>;

#[derive(Debug, Clone, PartialEq)]
pub enum Collected {
    Items(Vec<Item>),
    Fault(Fault),
}

/// The outcome of a test, for the evidence.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TestTrace {
    pub id: String,
    pub comment: String,
    pub result: OvalResult,
    pub detail: String,
}

const MAX_WALK: usize = 20_000;

/// Evaluates definitions of one OVAL document against one system. Results of definitions,
/// tests, objects and variables are cached for the evaluator's life.
pub struct Evaluator<'a> {
    doc: &'a OvalDoc,
    sys: &'a dyn System,
    externals: HashMap<String, Vec<String>>,
    defs: RefCell<HashMap<String, OvalResult>>,
    tests: RefCell<HashMap<String, TestTrace>>,
    objects: RefCell<HashMap<String, Rc<Collected>>>,
    vars: RefCell<HashMap<String, Result<Vec<String>, Fault>>>,
    regexes: RefCell<HashMap<String, Result<Rc<fancy_regex::Regex>, String>>>,
    dpkg: RefCell<Option<Result<Rc<String>, String>>>,
    depth: RefCell<usize>,
    /// Objects and variables being computed: a reference back to one is a cycle.
    busy: RefCell<std::collections::HashSet<String>>,
}

impl<'a> Evaluator<'a> {
    /// `externals`: values of external variables (id → values), from XCCDF check-exports.
    pub fn new(
        doc: &'a OvalDoc,
        sys: &'a dyn System,
        externals: HashMap<String, Vec<String>>,
    ) -> Evaluator<'a> {
        Evaluator {
            doc,
            sys,
            externals,
            defs: RefCell::default(),
            tests: RefCell::default(),
            objects: RefCell::default(),
            vars: RefCell::default(),
            regexes: RefCell::default(),
            dpkg: RefCell::default(),
            depth: RefCell::new(0),
            busy: RefCell::default(),
        }
    }

    /// Result of a definition by id.
    pub fn definition(&self, id: &str) -> OvalResult {
        if let Some(r) = self.defs.borrow().get(id) {
            return *r;
        }
        let Some(def) = self.doc.definitions.get(id) else {
            return OvalResult::Error;
        };
        if *self.depth.borrow() > 64 {
            return OvalResult::Error;
        }
        *self.depth.borrow_mut() += 1;
        let r = match def.child("criteria") {
            Some(c) => self.criteria(c),
            None => OvalResult::Unknown,
        };
        *self.depth.borrow_mut() -= 1;
        self.defs.borrow_mut().insert(id.into(), r);
        r
    }

    fn criteria(&self, c: &Elem) -> OvalResult {
        let mut results = Vec::new();
        for ch in &c.children {
            let neg = ch.attr("negate") == Some("true");
            let r = match ch.name.as_str() {
                "criteria" => self.criteria(ch),
                "criterion" => self.test(ch.attr("test_ref").unwrap_or("")).result,
                "extend_definition" => self.definition(ch.attr("definition_ref").unwrap_or("")),
                _ => continue,
            };
            results.push(if neg { r.negate() } else { r });
        }
        let r = combine(c.attr("operator").unwrap_or("AND"), &results);
        if c.attr("negate") == Some("true") {
            r.negate()
        } else {
            r
        }
    }

    /// Test traces reached from a definition (through criteria and extended definitions),
    /// evaluated already; for evidence.
    pub fn traces(&self, def_id: &str) -> Vec<TestTrace> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.collect_traces(def_id, &mut out, &mut seen, 0);
        out
    }

    fn collect_traces(
        &self,
        def_id: &str,
        out: &mut Vec<TestTrace>,
        seen: &mut std::collections::HashSet<String>,
        depth: usize,
    ) {
        if depth > 32 || !seen.insert(def_id.to_string()) {
            return;
        }
        let Some(def) = self.doc.definitions.get(def_id) else {
            out.push(TestTrace {
                id: def_id.into(),
                comment: String::new(),
                result: OvalResult::Error,
                detail: format!("definition {def_id} is not in the OVAL content"),
            });
            return;
        };
        let mut stack: Vec<&Elem> = def.children_named("criteria").collect();
        while let Some(e) = stack.pop() {
            for ch in e.children.iter().rev() {
                match ch.name.as_str() {
                    "criteria" => stack.push(ch),
                    "criterion" => {
                        let t = ch.attr("test_ref").unwrap_or("");
                        if seen.insert(t.to_string()) {
                            if let Some(tr) = self.tests.borrow().get(t) {
                                let mut tr = tr.clone();
                                if ch.attr("negate") == Some("true") {
                                    tr.detail = format!("(negated in the criteria) {}", tr.detail);
                                }
                                out.push(tr);
                            }
                        }
                    }
                    "extend_definition" => self.collect_traces(
                        ch.attr("definition_ref").unwrap_or(""),
                        out,
                        seen,
                        depth + 1,
                    ),
                    _ => {}
                }
            }
        }
    }

    /// Result of a test by id, with what was seen.
    pub fn test(&self, id: &str) -> TestTrace {
        if let Some(t) = self.tests.borrow().get(id) {
            return t.clone();
        }
        let t = match self.doc.tests.get(id) {
            Some(test) => {
                let (result, detail) = self.eval_test(test);
                TestTrace {
                    id: id.into(),
                    comment: test.attr("comment").unwrap_or("").into(),
                    result,
                    detail,
                }
            }
            None => TestTrace {
                id: id.into(),
                comment: String::new(),
                result: OvalResult::Error,
                detail: format!("test {id} is not in the OVAL content"),
            },
        };
        self.tests.borrow_mut().insert(id.into(), t.clone());
        t
    }

    fn eval_test(&self, test: &Elem) -> (OvalResult, String) {
        let Some(obj_id) = test.child("object").and_then(|o| o.attr("object_ref")) else {
            return (OvalResult::Error, format!("{} has no object", test.name));
        };
        let items = match &*self.object(obj_id) {
            Collected::Fault(f) => return (f.result(), f.message().to_string()),
            Collected::Items(items) => items.clone(),
        };
        let n = items.len();
        let existence = test
            .attr("check_existence")
            .unwrap_or("at_least_one_exists");
        let exist_ok = match existence {
            "all_exist" | "at_least_one_exists" => n >= 1,
            "any_exist" => true,
            "none_exist" => n == 0,
            "only_one_exists" => n == 1,
            other => {
                return (
                    OvalResult::Error,
                    format!("unknown check_existence `{other}`"),
                )
            }
        };
        let shown = summarize(&items);
        if !exist_ok {
            return (
                OvalResult::False,
                format!("check_existence {existence} not met: {n} item(s){shown}"),
            );
        }
        let states: Vec<&str> = test
            .children_named("state")
            .filter_map(|s| s.attr("state_ref"))
            .collect();
        if states.is_empty() || n == 0 {
            return (OvalResult::True, format!("{existence}: {n} item(s){shown}"));
        }
        let state_op = test.attr("state_operator").unwrap_or("AND");
        let mut per_item = Vec::with_capacity(n);
        let mut why = String::new();
        for item in &items {
            let mut rs = Vec::new();
            for s in &states {
                match self.state_matches(s, item) {
                    Ok(r) => rs.push(r),
                    Err(f) => {
                        if why.is_empty() {
                            why = format!("; {}", f.message());
                        }
                        rs.push(f.result())
                    }
                }
            }
            per_item.push(combine(state_op, &rs));
        }
        let check = test.attr("check").unwrap_or("all");
        let r = check_items(check, &per_item);
        let t = per_item.iter().filter(|r| **r == OvalResult::True).count();
        (
            r,
            format!("check {check}: {t} of {n} item(s) match the state{shown}{why}"),
        )
    }

    /// Does `item` satisfy the state `state_id`?
    fn state_matches(&self, state_id: &str, item: &Item) -> Result<OvalResult, Fault> {
        let Some(state) = self.doc.states.get(state_id) else {
            return Err(Fault::Error(format!(
                "state {state_id} is not in the OVAL content"
            )));
        };
        let mut rs = Vec::new();
        for ent in &state.children {
            if ent.name == "notes" || ent.name == "signature" {
                continue;
            }
            rs.push(self.entity_matches(ent, item)?);
        }
        Ok(combine(state.attr("operator").unwrap_or("AND"), &rs))
    }

    fn entity_matches(&self, ent: &Elem, item: &Item) -> Result<OvalResult, Fault> {
        let Some(actual) = item.get(&ent.name) else {
            return Err(Fault::Error(format!(
                "the collected item has no `{}` for the state to compare",
                ent.name
            )));
        };
        let op = ent.attr("operation").unwrap_or("equals");
        let dt = ent.attr("datatype").unwrap_or("string");
        let expected = match ent.attr("var_ref") {
            Some(v) => self.variable(v)?,
            None => vec![ent.text.clone()],
        };
        let var_check = ent.attr("var_check").unwrap_or("all");
        let mut per_actual = Vec::new();
        for a in actual {
            let mut per_exp = Vec::new();
            for e in &expected {
                per_exp.push(bool_res(self.compare(op, dt, a, e)?));
            }
            per_actual.push(check_items(var_check, &per_exp));
        }
        if actual.is_empty() {
            return Ok(OvalResult::False);
        }
        Ok(check_items(
            ent.attr("entity_check").unwrap_or("all"),
            &per_actual,
        ))
    }

    fn regex(&self, pattern: &str) -> Result<Rc<fancy_regex::Regex>, Fault> {
        if let Some(r) = self.regexes.borrow().get(pattern) {
            return r.clone().map_err(Fault::NotChecked);
        }
        let r = fancy_regex::Regex::new(pattern)
            .map(Rc::new)
            .map_err(|e| format!("regular expression `{pattern}` is not supported: {e}"));
        self.regexes.borrow_mut().insert(pattern.into(), r.clone());
        r.map_err(Fault::NotChecked)
    }

    fn is_match(&self, pattern: &str, text: &str) -> Result<bool, Fault> {
        self.regex(pattern)?
            .is_match(text)
            .map_err(|e| Fault::Error(format!("regular expression `{pattern}`: {e}")))
    }

    /// Compares an actual value with an expected one under an OVAL operation and datatype.
    pub fn compare(&self, op: &str, dt: &str, actual: &str, expected: &str) -> Result<bool, Fault> {
        use std::cmp::Ordering;
        let ord: Option<Ordering> = match dt {
            "int" => {
                let a = parse_int(actual)?;
                let e = parse_int(expected)?;
                match op {
                    "bitwise and" => return Ok(a & e == e),
                    "bitwise or" => return Ok(a | e == e),
                    _ => Some(a.cmp(&e)),
                }
            }
            "float" => {
                let a: f64 = actual
                    .trim()
                    .parse()
                    .map_err(|_| Fault::Error(format!("`{actual}` is not a float")))?;
                let e: f64 = expected
                    .trim()
                    .parse()
                    .map_err(|_| Fault::Error(format!("`{expected}` is not a float")))?;
                a.partial_cmp(&e)
            }
            "boolean" => {
                let a = parse_bool(actual)?;
                let e = parse_bool(expected)?;
                Some(a.cmp(&e))
            }
            "version" => Some(cmp_version(actual, expected)),
            "debian_evr_string" => Some(vacsine_core::version::compare(actual, expected)),
            "evr_string" => Some(cmp_rpm_evr(actual, expected)),
            "string" => None,
            other => {
                return Err(Fault::NotChecked(format!(
                    "datatype `{other}` is not supported"
                )))
            }
        };
        match (op, ord) {
            ("pattern match", _) => self.is_match(expected, actual),
            ("case insensitive equals", _) => Ok(actual.to_lowercase() == expected.to_lowercase()),
            ("case insensitive not equal", _) => {
                Ok(actual.to_lowercase() != expected.to_lowercase())
            }
            ("equals", None) => Ok(actual == expected),
            ("not equal", None) => Ok(actual != expected),
            ("equals", Some(o)) => Ok(o == Ordering::Equal),
            ("not equal", Some(o)) => Ok(o != Ordering::Equal),
            ("greater than", Some(o)) => Ok(o == Ordering::Greater),
            ("less than", Some(o)) => Ok(o == Ordering::Less),
            ("greater than or equal", Some(o)) => Ok(o != Ordering::Less),
            ("less than or equal", Some(o)) => Ok(o != Ordering::Greater),
            (op, _) => Err(Fault::NotChecked(format!(
                "operation `{op}` on datatype `{dt}` is not supported"
            ))),
        }
    }

    /// Values of a variable by id.
    pub fn variable(&self, id: &str) -> Result<Vec<String>, Fault> {
        if let Some(v) = self.vars.borrow().get(id) {
            return v.clone();
        }
        let key = format!("var {id}");
        if !self.busy.borrow_mut().insert(key.clone()) {
            return Err(Fault::Error(format!("variable {id} refers to itself")));
        }
        let v = self.eval_variable(id);
        self.busy.borrow_mut().remove(&key);
        self.vars.borrow_mut().insert(id.into(), v.clone());
        v
    }

    fn eval_variable(&self, id: &str) -> Result<Vec<String>, Fault> {
        let Some(var) = self.doc.variables.get(id) else {
            return Err(Fault::Error(format!(
                "variable {id} is not in the OVAL content"
            )));
        };
        match var.name.as_str() {
            "constant_variable" => Ok(var.children_named("value").map(|v| v.text.clone()).collect()),
            "external_variable" => self.externals.get(id).cloned().ok_or_else(|| {
                Fault::Error(format!(
                    "external variable {id} has no value (no XCCDF check-export of the rule provides it)"
                ))
            }),
            "local_variable" => match var.children.iter().find(|c| c.name != "notes" && c.name != "signature") {
                Some(c) => self.component(c),
                None => Err(Fault::Error(format!("local variable {id} has no component"))),
            },
            other => Err(Fault::NotChecked(format!("variable kind `{other}` is not supported"))),
        }
    }

    fn component(&self, c: &Elem) -> Result<Vec<String>, Fault> {
        let kids = || -> Result<Vec<Vec<String>>, Fault> {
            c.children.iter().map(|k| self.component(k)).collect()
        };
        match c.name.as_str() {
            "literal_component" => Ok(vec![c.text.clone()]),
            "variable_component" => self.variable(c.attr("var_ref").unwrap_or("")),
            "object_component" => {
                if c.attr("record_field").is_some() {
                    return Err(Fault::NotChecked(
                        "object_component with record_field is not supported".into(),
                    ));
                }
                let field = c.attr("item_field").unwrap_or("");
                match &*self.object(c.attr("object_ref").unwrap_or("")) {
                    Collected::Fault(f) => Err(f.clone()),
                    Collected::Items(items) => Ok(items
                        .iter()
                        .flat_map(|i| i.get(field).cloned().unwrap_or_default())
                        .collect()),
                }
            }
            "concat" => {
                let mut acc = vec![String::new()];
                for vals in kids()? {
                    let mut next = Vec::new();
                    for a in &acc {
                        for v in &vals {
                            next.push(format!("{a}{v}"));
                        }
                    }
                    acc = next;
                }
                Ok(acc)
            }
            "unique" => {
                let mut out: Vec<String> = Vec::new();
                for v in kids()?.into_iter().flatten() {
                    if !out.contains(&v) {
                        out.push(v);
                    }
                }
                Ok(out)
            }
            "count" => Ok(vec![kids()?.into_iter().flatten().count().to_string()]),
            "split" => {
                let d = c.attr("delimiter").unwrap_or("");
                if d.is_empty() {
                    return Err(Fault::Error("split with an empty delimiter".into()));
                }
                Ok(kids()?
                    .into_iter()
                    .flatten()
                    .flat_map(|v| v.split(d).map(String::from).collect::<Vec<_>>())
                    .collect())
            }
            "substring" => {
                let start: i64 = c
                    .attr("substring_start")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(1);
                let len: i64 = c
                    .attr("substring_length")
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(-1);
                Ok(kids()?
                    .into_iter()
                    .flatten()
                    .map(|v| {
                        let chars: Vec<char> = v.chars().collect();
                        let s = (start.max(1) - 1) as usize;
                        let s = s.min(chars.len());
                        let e = if len < 0 {
                            chars.len()
                        } else {
                            s.saturating_add(len as usize).min(chars.len())
                        };
                        chars[s..e].iter().collect()
                    })
                    .collect())
            }
            "regex_capture" => {
                let pattern = c.attr("pattern").unwrap_or("");
                let re = self.regex(pattern)?;
                let mut out = Vec::new();
                for v in kids()?.into_iter().flatten() {
                    if let Ok(Some(caps)) = re.captures(&v) {
                        out.push(
                            caps.get(1)
                                .map(|m| m.as_str().to_string())
                                .unwrap_or_default(),
                        );
                    }
                }
                Ok(out)
            }
            "arithmetic" => {
                let op = c.attr("arithmetic_operation").unwrap_or("add");
                let mut acc: Option<Vec<i64>> = None;
                for vals in kids()? {
                    let nums: Vec<i64> = vals
                        .iter()
                        .map(|v| parse_int(v))
                        .collect::<Result<_, _>>()?;
                    acc = Some(match acc {
                        None => nums,
                        Some(a) => {
                            let mut out = Vec::new();
                            for x in &a {
                                for y in &nums {
                                    let r = if op == "multiply" {
                                        x.checked_mul(*y)
                                    } else {
                                        x.checked_add(*y)
                                    };
                                    out.push(r.ok_or_else(|| {
                                        Fault::Error(format!("arithmetic overflow: {x} {op} {y}"))
                                    })?);
                                }
                            }
                            out
                        }
                    });
                }
                Ok(acc
                    .unwrap_or_default()
                    .into_iter()
                    .map(|n| n.to_string())
                    .collect())
            }
            "glob_to_regex" => Ok(kids()?
                .into_iter()
                .flatten()
                .map(|g| glob_to_regex(&g))
                .collect()),
            "escape_regex" => Ok(kids()?
                .into_iter()
                .flatten()
                .map(|v| regex::escape(&v))
                .collect()),
            other => Err(Fault::NotChecked(format!(
                "variable function `{other}` is not supported"
            ))),
        }
    }

    /// Items of an object by id (cached).
    pub fn object(&self, id: &str) -> Rc<Collected> {
        if let Some(c) = self.objects.borrow().get(id) {
            return c.clone();
        }
        let key = format!("obj {id}");
        if !self.busy.borrow_mut().insert(key.clone()) {
            return Rc::new(Collected::Fault(Fault::Error(format!(
                "object {id} refers to itself"
            ))));
        }
        let c = Rc::new(match self.doc.objects.get(id) {
            Some(o) => match self.collect(o) {
                Ok(items) => Collected::Items(items),
                Err(f) => Collected::Fault(f),
            },
            None => Collected::Fault(Fault::Error(format!(
                "object {id} is not in the OVAL content"
            ))),
        });
        self.busy.borrow_mut().remove(&key);
        self.objects.borrow_mut().insert(id.into(), c.clone());
        c
    }

    fn collect(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let mut items = if let Some(set) = o.child("set") {
            self.collect_set(set)?
        } else {
            match o.name.as_str() {
                "textfilecontent54_object" => self.collect_textfile(o)?,
                "file_object" => self.collect_file(o)?,
                "dpkginfo_object" => self.collect_dpkg(o)?,
                "sysctl_object" => self.collect_sysctl(o)?,
                "partition_object" => self.collect_partition(o)?,
                "password_object" => self.collect_password(o)?,
                "family_object" => vec![item(&[("family", "unix")])],
                "environmentvariable58_object" => self.collect_environment(o)?,
                "systemdunitdependency_object" => self.collect_unit_dependencies(o)?,
                "systemdunitproperty_object" => self.collect_unit_properties(o)?,
                "uname_object" => {
                    let u = self.sys.uname().map_err(Fault::Error)?;
                    vec![item(&[
                        ("machine_class", &u.machine),
                        ("node_name", &u.node_name),
                        ("os_name", &u.os_name),
                        ("os_release", &u.os_release),
                        ("os_version", &u.os_version),
                        ("processor_type", &u.machine),
                    ])]
                }
                "variable_object" => {
                    let var = o
                        .child("var_ref")
                        .map(|v| v.text.clone())
                        .unwrap_or_default();
                    self.variable(&var)?
                        .into_iter()
                        .map(|v| item(&[("var_ref", &var), ("value", &v)]))
                        .collect()
                }
                other => {
                    return Err(Fault::NotChecked(format!(
                        "OVAL object type `{other}` is not supported by Vacsine yet"
                    )))
                }
            }
        };
        self.apply_filters(o, &mut items)?;
        Ok(items)
    }

    fn apply_filters(&self, o: &Elem, items: &mut Vec<Item>) -> Result<(), Fault> {
        for f in o.children_named("filter") {
            let include = f.attr("action") == Some("include");
            let mut kept = Vec::new();
            for it in items.drain(..) {
                let m = self.state_matches(&f.text, &it)? == OvalResult::True;
                if m == include {
                    kept.push(it);
                }
            }
            *items = kept;
        }
        Ok(())
    }

    fn collect_set(&self, set: &Elem) -> Result<Vec<Item>, Fault> {
        let mut operands: Vec<Vec<Item>> = Vec::new();
        for ch in &set.children {
            match ch.name.as_str() {
                "object_reference" => match &*self.object(&ch.text) {
                    Collected::Items(i) => operands.push(i.clone()),
                    Collected::Fault(f) => return Err(f.clone()),
                },
                "set" => operands.push(self.collect_set(ch)?),
                _ => {}
            }
        }
        let mut result = match set.attr("set_operator").unwrap_or("UNION") {
            "INTERSECTION" => {
                let mut it = operands.into_iter();
                let first = it.next().unwrap_or_default();
                let rest: Vec<Vec<Item>> = it.collect();
                first
                    .into_iter()
                    .filter(|i| rest.iter().all(|r| r.contains(i)))
                    .collect()
            }
            "COMPLEMENT" => {
                let mut it = operands.into_iter();
                let first = it.next().unwrap_or_default();
                let second = it.next().unwrap_or_default();
                first.into_iter().filter(|i| !second.contains(i)).collect()
            }
            _ => {
                let mut out: Vec<Item> = Vec::new();
                for i in operands.into_iter().flatten() {
                    if !out.contains(&i) {
                        out.push(i);
                    }
                }
                out
            }
        };
        self.apply_filters(set, &mut result)?;
        Ok(result)
    }

    /// Values an object entity stands for (its text or its variable's values), with its
    /// operation.
    fn entity_values(&self, e: &Elem) -> Result<(String, Vec<String>), Fault> {
        let op = e.attr("operation").unwrap_or("equals").to_string();
        let vals = match e.attr("var_ref") {
            Some(v) => self.variable(v)?,
            None => vec![e.text.clone()],
        };
        Ok((op, vals))
    }

    /// Paths (directory, file name) an object's `filepath` or `path` + `filename` designate.
    /// `filename` nil (file objects): the directory itself, as (dir, "").
    fn resolve_paths(&self, o: &Elem) -> Result<Vec<(String, String)>, Fault> {
        let mut out = Vec::new();
        if let Some(fp) = o.child("filepath") {
            let (op, vals) = self.entity_values(fp)?;
            for v in vals {
                match op.as_str() {
                    "equals" => {
                        if let Some((d, f)) = v.rsplit_once('/') {
                            out.push((if d.is_empty() { "/".into() } else { d.into() }, f.into()));
                        }
                    }
                    "pattern match" => {
                        for p in self.walk_matching(&v, false)? {
                            if let Some((d, f)) = p.rsplit_once('/') {
                                out.push((
                                    if d.is_empty() { "/".into() } else { d.into() },
                                    f.into(),
                                ));
                            }
                        }
                    }
                    other => {
                        return Err(Fault::NotChecked(format!(
                            "filepath operation `{other}` is not supported"
                        )))
                    }
                }
            }
            return Ok(out);
        }
        let Some(path) = o.child("path") else {
            return Err(Fault::Error(format!(
                "{} has neither filepath nor path",
                o.name
            )));
        };
        let (pop, pvals) = self.entity_values(path)?;
        let mut dirs = Vec::new();
        for v in pvals {
            match pop.as_str() {
                "equals" => dirs.push(v),
                "pattern match" => dirs.extend(self.walk_matching(&v, true)?),
                other => {
                    return Err(Fault::NotChecked(format!(
                        "path operation `{other}` is not supported"
                    )))
                }
            }
        }
        if let Some(b) = o.child("behaviors") {
            if b.attr("recurse_direction") == Some("down") {
                let max: i64 = b
                    .attr("max_depth")
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(-1);
                let max = if max < 0 { 32 } else { max as usize };
                let mut all = Vec::new();
                for d in &dirs {
                    self.subdirs(d, max, &mut all)?;
                }
                dirs = all;
            } else if b.attr("recurse_direction").is_some_and(|r| r != "none") {
                return Err(Fault::NotChecked(
                    "recurse_direction up is not supported".into(),
                ));
            }
        }
        let filename = o.child("filename");
        for d in dirs {
            match filename {
                None => out.push((d, String::new())),
                Some(f) if f.attr("nil") == Some("true") => out.push((d, String::new())),
                Some(f) => {
                    let (fop, fvals) = self.entity_values(f)?;
                    match fop.as_str() {
                        "equals" => out.extend(fvals.into_iter().map(|n| (d.clone(), n))),
                        "pattern match" | "not equal" => {
                            let names = self
                                .sys
                                .list_dir(&d)
                                .map_err(Fault::Error)?
                                .unwrap_or_default();
                            for n in names {
                                for p in &fvals {
                                    let m = if fop == "not equal" {
                                        &n != p
                                    } else {
                                        self.is_match(p, &n)?
                                    };
                                    if m {
                                        out.push((d.clone(), n.clone()));
                                        break;
                                    }
                                }
                            }
                        }
                        other => {
                            return Err(Fault::NotChecked(format!(
                                "filename operation `{other}` is not supported"
                            )))
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    fn subdirs(&self, d: &str, depth: usize, out: &mut Vec<String>) -> Result<(), Fault> {
        if out.len() > MAX_WALK {
            return Err(Fault::NotChecked(format!(
                "more than {MAX_WALK} directories under {d}"
            )));
        }
        out.push(d.to_string());
        if depth == 0 {
            return Ok(());
        }
        for n in self
            .sys
            .list_dir(d)
            .map_err(Fault::Error)?
            .unwrap_or_default()
        {
            let p = join(d, &n);
            if let Some(st) = self.sys.stat(&p).map_err(Fault::Error)? {
                if st.kind == FileKind::Directory {
                    self.subdirs(&p, depth - 1, out)?;
                }
            }
        }
        Ok(())
    }

    /// Every path under the regular expression's literal directory prefix that the
    /// expression matches: directories when `dirs`, other entries otherwise.
    fn walk_matching(&self, pattern: &str, dirs: bool) -> Result<Vec<String>, Fault> {
        let re = self.regex(pattern)?;
        let prefix = literal_prefix(pattern);
        let base = match prefix.rsplit_once('/') {
            Some(("", _)) => "/".to_string(),
            Some((d, _)) => d.to_string(),
            None => {
                return Err(Fault::NotChecked(format!(
                    "path pattern `{pattern}` has no literal directory to start from"
                )))
            }
        };
        let mut out = Vec::new();
        let mut stack = vec![(base, 0usize)];
        let mut seen = 0usize;
        while let Some((d, depth)) = stack.pop() {
            if dirs && re.is_match(&d).unwrap_or(false) {
                out.push(d.clone());
            }
            let Some(names) = self.sys.list_dir(&d).map_err(Fault::Error)? else {
                continue;
            };
            for n in names {
                seen += 1;
                if seen > MAX_WALK {
                    return Err(Fault::NotChecked(format!(
                        "more than {MAX_WALK} entries under the prefix of `{pattern}`"
                    )));
                }
                let p = join(&d, &n);
                let st = self.sys.stat(&p).map_err(Fault::Error)?;
                let is_dir = st.as_ref().is_some_and(|s| s.kind == FileKind::Directory);
                if is_dir && depth < 16 {
                    stack.push((p.clone(), depth + 1));
                } else if !dirs && !is_dir && re.is_match(&p).unwrap_or(false) {
                    out.push(p);
                }
            }
        }
        out.sort();
        Ok(out)
    }

    fn collect_textfile(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let Some(pat) = o.child("pattern") else {
            return Err(Fault::Error(
                "textfilecontent54_object without pattern".into(),
            ));
        };
        let (pop, patterns) = self.entity_values(pat)?;
        if pop != "pattern match" {
            return Err(Fault::NotChecked(format!(
                "pattern operation `{pop}` is not supported"
            )));
        }
        let b = o.child("behaviors");
        let multiline = b
            .and_then(|b| b.attr("multiline"))
            .map(|v| v == "true")
            .unwrap_or(true);
        let singleline = b
            .and_then(|b| b.attr("singleline"))
            .map(|v| v == "true")
            .unwrap_or(false);
        let flags = format!(
            "{}{}",
            if multiline { "(?m)" } else { "" },
            if singleline { "(?s)" } else { "" }
        );
        let inst = o.child("instance");
        let mut items = Vec::new();
        for (dir, name) in self.resolve_paths(o)? {
            if name.is_empty() {
                continue;
            }
            let path = join(&dir, &name);
            // Only regular files (or links to them) have text content.
            if let Some(st) = self.sys.stat(&path).map_err(Fault::Error)? {
                if matches!(st.kind, FileKind::Directory | FileKind::Other) {
                    continue;
                }
            }
            let Some(bytes) = self.sys.read_file(&path).map_err(Fault::Error)? else {
                continue;
            };
            let text = String::from_utf8_lossy(&bytes);
            for p in &patterns {
                let re = self.regex(&format!("{flags}{p}"))?;
                let mut n = 0i64;
                for caps in re.captures_iter(&text) {
                    let caps =
                        caps.map_err(|e| Fault::Error(format!("pattern `{p}` on {path}: {e}")))?;
                    n += 1;
                    if let Some(i) = inst {
                        let (iop, ivals) = self.entity_values(i)?;
                        let mut ok = false;
                        for iv in &ivals {
                            if self.compare(&iop, "int", &n.to_string(), iv)? {
                                ok = true;
                            }
                        }
                        if !ok {
                            continue;
                        }
                    }
                    let mut it = item(&[
                        ("filepath", &path),
                        ("path", &dir),
                        ("filename", &name),
                        ("pattern", p),
                        ("instance", &n.to_string()),
                        ("text", caps.get(0).map(|m| m.as_str()).unwrap_or("")),
                    ]);
                    it.insert(
                        "subexpression".into(),
                        (1..caps.len())
                            .map(|i| {
                                caps.get(i)
                                    .map(|m| m.as_str().to_string())
                                    .unwrap_or_default()
                            })
                            .collect(),
                    );
                    items.push(it);
                }
            }
        }
        Ok(items)
    }

    fn collect_file(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let mut items = Vec::new();
        for (dir, name) in self.resolve_paths(o)? {
            let path = if name.is_empty() {
                dir.clone()
            } else {
                join(&dir, &name)
            };
            let Some(st) = self.sys.stat(&path).map_err(Fault::Error)? else {
                continue;
            };
            let m = st.mode;
            let b = |bit: u32| if m & bit != 0 { "true" } else { "false" };
            let mut it = item(&[
                ("filepath", &path),
                ("path", &dir),
                ("type", st.kind.oval_name()),
                ("user_id", &st.uid.to_string()),
                ("group_id", &st.gid.to_string()),
                ("size", &st.size.to_string()),
                ("suid", b(0o4000)),
                ("sgid", b(0o2000)),
                ("sticky", b(0o1000)),
                ("uread", b(0o400)),
                ("uwrite", b(0o200)),
                ("uexec", b(0o100)),
                ("gread", b(0o40)),
                ("gwrite", b(0o20)),
                ("gexec", b(0o10)),
                ("oread", b(0o4)),
                ("owrite", b(0o2)),
                ("oexec", b(0o1)),
            ]);
            if !name.is_empty() {
                it.insert("filename".into(), vec![name]);
            }
            items.push(it);
        }
        Ok(items)
    }

    fn dpkg_status(&self) -> Result<Rc<String>, Fault> {
        if let Some(r) = &*self.dpkg.borrow() {
            return r.clone().map_err(Fault::Error);
        }
        let r = match self.sys.read_file("/var/lib/dpkg/status") {
            Ok(Some(b)) => Ok(Rc::new(String::from_utf8_lossy(&b).into_owned())),
            Ok(None) => Ok(Rc::new(String::new())),
            Err(e) => Err(e),
        };
        *self.dpkg.borrow_mut() = Some(r.clone());
        r.map_err(Fault::Error)
    }

    /// dpkg packages whose files are on the system: installed (or awaiting triggers) and
    /// half-installed, unpacked or half-configured; `config-files` and `not-installed` give
    /// no item.
    fn collect_dpkg(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let status = self.dpkg_status()?;
        let Some(name) = o.child("name") else {
            return Err(Fault::Error("dpkginfo_object without name".into()));
        };
        let (op, vals) = self.entity_values(name)?;
        let mut names: Vec<String> = Vec::new();
        match op.as_str() {
            "equals" => names = vals,
            "pattern match" => {
                for stanza in status.split("\n\n") {
                    if let Some(n) = stanza.lines().find_map(|l| l.strip_prefix("Package:")) {
                        let n = n.trim();
                        for p in &vals {
                            if self.is_match(p, n)? && !names.iter().any(|x| x == n) {
                                names.push(n.into());
                            }
                        }
                    }
                }
            }
            other => {
                return Err(Fault::NotChecked(format!(
                    "dpkginfo name operation `{other}` is not supported"
                )))
            }
        }
        let mut items = Vec::new();
        for n in names {
            if let Some((version, _broken)) = vacsine_core::parse::dpkg_package(&status, &n) {
                let (epoch, rest) = match version.split_once(':') {
                    Some((e, r)) => (e.to_string(), r.to_string()),
                    None => ("0".to_string(), version.clone()),
                };
                let (upstream, release) = match rest.rsplit_once('-') {
                    Some((u, r)) => (u.to_string(), r.to_string()),
                    None => (rest.clone(), String::new()),
                };
                let arch = package_field(&status, &n, "Architecture").unwrap_or_default();
                items.push(item(&[
                    ("name", &n),
                    ("arch", &arch),
                    ("epoch", &epoch),
                    ("release", &release),
                    ("version", &upstream),
                    ("evr", &format!("{epoch}:{rest}")),
                ]));
            }
        }
        Ok(items)
    }

    /// Mounted file systems as the node's init sees them (`/proc/1/mounts`): mount point,
    /// device, type, options. Space figures (`total_space`…) are not collected: a state on
    /// them is an error that says so.
    fn collect_partition(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let Some(mp) = o.child("mount_point") else {
            return Err(Fault::Error("partition_object without mount_point".into()));
        };
        let (op, vals) = self.entity_values(mp)?;
        let Some(bytes) = self.sys.read_file("/proc/1/mounts").map_err(Fault::Error)? else {
            return Err(Fault::Error(
                "/proc/1/mounts is not readable on the node".into(),
            ));
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut items = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 4 {
                continue;
            }
            let point = unescape_mount(f[1]);
            let mut hit = false;
            for v in &vals {
                hit |= match op.as_str() {
                    "equals" => &point == v,
                    "not equal" => &point != v,
                    "pattern match" => self.is_match(v, &point)?,
                    other => {
                        return Err(Fault::NotChecked(format!(
                            "mount_point operation `{other}` is not supported"
                        )))
                    }
                };
            }
            if !hit {
                continue;
            }
            let mut it = item(&[
                ("mount_point", &point),
                ("device", &unescape_mount(f[0])),
                ("fs_type", f[2]),
            ]);
            it.insert(
                "mount_options".into(),
                f[3].split(',').map(String::from).collect(),
            );
            // The last mount on a point hides the earlier ones.
            items.retain(|i: &Item| i.get("mount_point") != it.get("mount_point"));
            items.push(it);
        }
        Ok(items)
    }

    /// Accounts of the node's `/etc/passwd` (username, password field, ids, gcos, home,
    /// shell); `last_login` is not collected.
    fn collect_password(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let Some(user) = o.child("username") else {
            return Err(Fault::Error("password_object without username".into()));
        };
        let (op, vals) = self.entity_values(user)?;
        let Some(bytes) = self.sys.read_file("/etc/passwd").map_err(Fault::Error)? else {
            return Ok(Vec::new());
        };
        let text = String::from_utf8_lossy(&bytes);
        let mut items = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || line.starts_with('#') {
                continue;
            }
            let mut hit = false;
            for v in &vals {
                hit |= match op.as_str() {
                    "equals" => f[0] == v,
                    "not equal" => f[0] != v,
                    "pattern match" => self.is_match(v, f[0])?,
                    other => {
                        return Err(Fault::NotChecked(format!(
                            "username operation `{other}` is not supported"
                        )))
                    }
                };
            }
            if hit {
                items.push(item(&[
                    ("username", f[0]),
                    ("password", f[1]),
                    ("user_id", f[2]),
                    ("group_id", f[3]),
                    ("gcos", f[4]),
                    ("home_dir", f[5]),
                    ("login_shell", f[6]),
                ]));
            }
        }
        Ok(items)
    }

    /// `environmentvariable58`: a process's environment from `/proc/<pid>/environ`. A nil
    /// `pid` means, for OVAL, the collecting process; on a node Vacsine reads the node's
    /// init (PID 1), whose environment is the one the node's services and a root `exec` get
    /// (oscap offline reads its own environment on the scanning host instead).
    fn collect_environment(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let pids: Vec<String> = match o.child("pid") {
            None => vec!["1".into()],
            Some(p) if p.attr("nil") == Some("true") => vec!["1".into()],
            Some(p) => {
                let (op, vals) = self.entity_values(p)?;
                if op != "equals" {
                    return Err(Fault::NotChecked(format!(
                        "environmentvariable58 pid operation `{op}` is not supported"
                    )));
                }
                vals
            }
        };
        let Some(name) = o.child("name") else {
            return Err(Fault::Error(
                "environmentvariable58_object without name".into(),
            ));
        };
        let (op, names) = self.entity_values(name)?;
        let mut items = Vec::new();
        for pid in pids {
            if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Fault::Error(format!("pid `{pid}` is not a process id")));
            }
            let path = format!("/proc/{pid}/environ");
            let Some(bytes) = self.sys.read_file(&path).map_err(Fault::Error)? else {
                continue;
            };
            for pair in bytes.split(|b| *b == 0) {
                let pair = String::from_utf8_lossy(pair);
                let Some((k, v)) = pair.split_once('=') else {
                    continue;
                };
                let mut hit = false;
                for n in &names {
                    hit |= match op.as_str() {
                        "equals" => k == n,
                        "not equal" => k != n,
                        "pattern match" => self.is_match(n, k)?,
                        other => {
                            return Err(Fault::NotChecked(format!(
                                "environment variable name operation `{other}` is not supported"
                            )))
                        }
                    };
                }
                if hit {
                    items.push(item(&[("pid", &pid), ("name", k), ("value", v)]));
                }
            }
        }
        Ok(items)
    }

    /// Units an object's `unit` entity designates that have a unit file (or are masked).
    fn units_of(&self, o: &Elem) -> Result<Vec<String>, Fault> {
        let Some(u) = o.child("unit") else {
            return Err(Fault::Error(format!("{} without unit", o.name)));
        };
        let (op, vals) = self.entity_values(u)?;
        let known = crate::units::unit_names(self.sys).map_err(Fault::Error)?;
        let mut out = Vec::new();
        for n in &known {
            let mut hit = false;
            for v in &vals {
                hit |= match op.as_str() {
                    "equals" => n == v,
                    "not equal" => n != v,
                    "pattern match" => self.is_match(v, n)?,
                    other => {
                        return Err(Fault::NotChecked(format!(
                            "unit operation `{other}` is not supported"
                        )))
                    }
                };
            }
            if hit {
                out.push(n.clone());
            }
        }
        Ok(out)
    }

    /// `systemdunitdependency`: every unit a unit depends on, transitively
    /// ([`crate::units`]).
    fn collect_unit_dependencies(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let mut items = Vec::new();
        for unit in self.units_of(o)? {
            let deps = crate::units::all_dependencies(self.sys, &unit).map_err(Fault::Error)?;
            let mut it = item(&[("unit", &unit)]);
            it.insert("dependency".into(), deps);
            items.push(it);
        }
        Ok(items)
    }

    /// `systemdunitproperty`: the properties [`crate::units::property`] derives.
    fn collect_unit_properties(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let Some(p) = o.child("property") else {
            return Err(Fault::Error(
                "systemdunitproperty_object without property".into(),
            ));
        };
        let (op, vals) = self.entity_values(p)?;
        if op != "equals" {
            return Err(Fault::NotChecked(format!(
                "property operation `{op}` is not supported"
            )));
        }
        let mut items = Vec::new();
        for unit in self.units_of(o)? {
            for prop in &vals {
                match crate::units::property(self.sys, &unit, prop).map_err(Fault::Error)? {
                    Some(values) => {
                        let mut it = item(&[("unit", &unit), ("property", prop)]);
                        it.insert("value".into(), values);
                        items.push(it);
                    }
                    None => {
                        return Err(Fault::NotChecked(format!(
                            "systemd unit property `{prop}` is not supported (Vacsine derives Id, LoadState, FragmentPath, UnitFileState, ActiveState, SubState, Requires, Requisite, Wants, BindsTo)"
                        )))
                    }
                }
            }
        }
        Ok(items)
    }

    fn collect_sysctl(&self, o: &Elem) -> Result<Vec<Item>, Fault> {
        let Some(name) = o.child("name") else {
            return Err(Fault::Error("sysctl_object without name".into()));
        };
        let (op, vals) = self.entity_values(name)?;
        if op != "equals" {
            return Err(Fault::NotChecked(format!(
                "sysctl name operation `{op}` is not supported"
            )));
        }
        let mut items = Vec::new();
        for k in vals {
            if let Some(v) = self.sys.sysctl(&k).map_err(Fault::Error)? {
                items.push(item(&[("name", &k), ("value", v.trim())]));
            }
        }
        Ok(items)
    }
}

/// Directories the objects of `doc` may list or stat in, for [`System::prefetch_dirs`]:
/// (parents of literal file paths and literal paths, literal directory prefixes of path
/// patterns, which are walked).
pub fn directories(doc: &OvalDoc) -> (Vec<String>, Vec<String>) {
    let mut out = std::collections::BTreeSet::new();
    let mut walked = std::collections::BTreeSet::new();
    let parent = |p: &str| -> Option<String> {
        match p.rsplit_once('/') {
            Some(("", _)) => Some("/".into()),
            Some((d, _)) => Some(d.into()),
            None => None,
        }
    };
    for o in doc.objects.values() {
        for e in &o.children {
            if e.attr("var_ref").is_some() || !matches!(e.name.as_str(), "filepath" | "path") {
                continue;
            }
            let pattern = e.attr("operation") == Some("pattern match");
            let p = if pattern {
                literal_prefix(&e.text)
            } else {
                e.text.clone()
            };
            if !p.starts_with('/') {
                continue;
            }
            if e.name == "path" && !pattern {
                out.insert(p.trim_end_matches('/').to_string());
            }
            if let Some(d) = parent(&p) {
                if pattern && d != "/" {
                    walked.insert(d.clone());
                }
                out.insert(d);
            }
        }
    }
    (out.into_iter().collect(), walked.into_iter().collect())
}

/// `/proc/mounts` escapes spaces, tabs, newlines and backslashes as octal (`\\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        let v = if octal {
            b[i + 1..i + 4]
                .iter()
                .fold(0u32, |a, c| a * 8 + u32::from(c - b'0'))
        } else {
            256
        };
        if let Ok(byte) = u8::try_from(v) {
            out.push(byte);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn package_field(status: &str, name: &str, field: &str) -> Option<String> {
    let want = format!("Package: {name}");
    let stanza = status
        .split("\n\n")
        .find(|s| s.lines().any(|l| l.trim_end() == want))?;
    stanza
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

fn item(fields: &[(&str, &str)]) -> Item {
    fields
        .iter()
        .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
        .collect()
}

fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn bool_res(b: bool) -> OvalResult {
    if b {
        OvalResult::True
    } else {
        OvalResult::False
    }
}

fn parse_int(s: &str) -> Result<i64, Fault> {
    let t = s.trim();
    let r = if let Some(o) = t.strip_prefix("0x") {
        i64::from_str_radix(o, 16)
    } else {
        t.parse()
    };
    r.map_err(|_| Fault::Error(format!("`{s}` is not an integer")))
}

fn parse_bool(s: &str) -> Result<bool, Fault> {
    match s.trim() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Fault::Error(format!("`{s}` is not a boolean"))),
    }
}

/// Compares dotted versions component by component (numbers numerically).
pub fn cmp_version(a: &str, b: &str) -> std::cmp::Ordering {
    let pa: Vec<&str> = a.split(['.', '-', ':']).collect();
    let pb: Vec<&str> = b.split(['.', '-', ':']).collect();
    for i in 0..pa.len().max(pb.len()) {
        let x = pa.get(i).copied().unwrap_or("0");
        let y = pb.get(i).copied().unwrap_or("0");
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    std::cmp::Ordering::Equal
}

/// RPM's `epoch:version-release` ordering (OVAL `evr_string`): epochs numerically, then
/// version and release with `rpmvercmp` (alphanumeric segments, `~` sorts first).
pub fn cmp_rpm_evr(a: &str, b: &str) -> std::cmp::Ordering {
    fn split(s: &str) -> (u64, &str, &str) {
        let (e, rest) = match s.split_once(':') {
            Some((e, r)) => (e.trim().parse().unwrap_or(0), r),
            None => (0, s),
        };
        match rest.rsplit_once('-') {
            Some((v, r)) => (e, v, r),
            None => (e, rest, ""),
        }
    }
    let (ea, va, ra) = split(a.trim());
    let (eb, vb, rb) = split(b.trim());
    ea.cmp(&eb).then_with(|| rpmvercmp(va, vb)).then_with(|| {
        if ra.is_empty() || rb.is_empty() {
            std::cmp::Ordering::Equal
        } else {
            rpmvercmp(ra, rb)
        }
    })
}

/// `rpmvercmp`: compares alternating numeric and alphabetic segments.
pub fn rpmvercmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    if a == b {
        return Equal;
    }
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    loop {
        let skip = |s: &[u8]| -> usize {
            s.iter()
                .take_while(|c| !c.is_ascii_alphanumeric() && **c != b'~')
                .count()
        };
        x = &x[skip(x)..];
        y = &y[skip(y)..];
        match (x.first() == Some(&b'~'), y.first() == Some(&b'~')) {
            (true, true) => {
                x = &x[1..];
                y = &y[1..];
                continue;
            }
            (true, false) => return Less,
            (false, true) => return Greater,
            _ => {}
        }
        if x.is_empty() || y.is_empty() {
            return match (x.is_empty(), y.is_empty()) {
                (true, true) => Equal,
                (true, false) => Less,
                _ => Greater,
            };
        }
        let numeric = x[0].is_ascii_digit();
        let take = |s: &[u8]| -> usize {
            s.iter()
                .take_while(|c| {
                    if numeric {
                        c.is_ascii_digit()
                    } else {
                        c.is_ascii_alphabetic()
                    }
                })
                .count()
        };
        let (nx, ny) = (take(x), take(y));
        if ny == 0 {
            // Different segment types: the numeric one is newer.
            return if numeric { Greater } else { Less };
        }
        let (sx, sy) = (&x[..nx], &y[..ny]);
        let o = if numeric {
            let tx: &[u8] = &sx[sx.iter().take_while(|c| **c == b'0').count()..];
            let ty: &[u8] = &sy[sy.iter().take_while(|c| **c == b'0').count()..];
            tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
        } else {
            sx.cmp(sy)
        };
        if o != Equal {
            return o;
        }
        x = &x[nx..];
        y = &y[ny..];
    }
}

/// The literal text a regular expression starts with (after `^`), with `\.`-style escapes
/// resolved; stops at the first metacharacter.
pub fn literal_prefix(pattern: &str) -> String {
    let mut out = String::new();
    let mut chars = pattern
        .strip_prefix('^')
        .unwrap_or(pattern)
        .chars()
        .peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek() {
                Some(n) if "./-_".contains(*n) => {
                    out.push(*n);
                    chars.next();
                }
                _ => break,
            },
            '.' | '*' | '+' | '?' | '(' | ')' | '[' | ']' | '{' | '}' | '|' | '$' | '^' => {
                // A quantifier makes the previous character optional.
                if "*?{".contains(c) {
                    out.pop();
                }
                break;
            }
            c => out.push(c),
        }
    }
    out
}

/// OVAL `glob_to_regex` (shell glob → anchored regular expression).
pub fn glob_to_regex(glob: &str) -> String {
    let mut out = String::from("^");
    let mut chars = glob.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => out.push_str("[^/]*"),
            '?' => out.push_str("[^/]"),
            '[' => out.push('['),
            ']' => out.push(']'),
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push_str(&regex::escape(&n.to_string()));
                }
            }
            c => out.push_str(&regex::escape(&c.to_string())),
        }
    }
    out.push('$');
    out
}

fn summarize(items: &[Item]) -> String {
    if items.is_empty() {
        return String::new();
    }
    let show: Vec<String> = items
        .iter()
        .take(3)
        .map(|i| {
            let key = [
                "filepath",
                "name",
                "var_ref",
                "family",
                "os_release",
                "mount_point",
                "username",
            ]
            .iter()
            .find_map(|k| i.get(*k).and_then(|v| v.first()).map(|v| v.to_string()))
            .unwrap_or_default();
            let val = ["text", "value", "evr", "type", "fs_type"]
                .iter()
                .find_map(|k| {
                    i.get(*k)
                        .and_then(|v| v.first())
                        .map(|v| format!("{k}={}", truncate(v, 80)))
                })
                .unwrap_or_default();
            format!("{key} {val}").trim().to_string()
        })
        .collect();
    let more = if items.len() > 3 {
        format!(" (+{} more)", items.len() - 3)
    } else {
        String::new()
    };
    format!(" [{}]{more}", show.join("; "))
}

fn truncate(s: &str, n: usize) -> String {
    let s = s.trim();
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

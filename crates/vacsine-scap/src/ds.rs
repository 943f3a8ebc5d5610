//! SCAP 1.3 source data streams: the XCCDF 1.2 benchmark (profiles, groups, rules, values,
//! platforms), the CPE dictionary and applicability language, and the OVAL components.

use crate::xml::{own, Elem, Lines};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A data stream that could not be used: where, and why.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScapError {
    #[error("{file}:{line}:{col}: not well-formed XML: {message}")]
    Xml {
        file: String,
        line: u32,
        col: u32,
        message: String,
    },
    #[error("{file}:{line}: {message}")]
    Content {
        file: String,
        line: u32,
        message: String,
    },
    #[error("{file}: {message}")]
    File { file: String, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub id: String,
    pub title: String,
    pub extends: Option<String>,
    /// (rule or group id, selected), in document order.
    pub selects: Vec<(String, bool)>,
    /// (value id, selector).
    pub refine_values: Vec<(String, String)>,
    /// (value id, literal value).
    pub set_values: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub id: String,
    pub selected: bool,
    pub platforms: Vec<String>,
    pub parent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OvalCheck {
    /// The OVAL file named by `check-content-ref/@href`.
    pub href: String,
    /// The definition id (`check-content-ref/@name`); None: the whole file (not supported).
    pub definition: Option<String>,
    /// (OVAL external variable id, XCCDF value id).
    pub exports: Vec<(String, String)>,
    pub negate: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reference {
    pub href: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub title: String,
    pub severity: String,
    pub selected: bool,
    pub group: Option<String>,
    pub platforms: Vec<String>,
    /// (system, value)
    pub idents: Vec<(String, String)>,
    pub references: Vec<Reference>,
    /// The OVAL check; None when the rule has only other check systems (OCIL…) or none.
    pub check: Option<OvalCheck>,
    /// Check systems present but not OVAL (for the `notchecked` reason).
    pub other_systems: Vec<String>,
    /// The rule's `<fix>`es, in document order.
    pub fixes: Vec<Fix>,
    pub line: u32,
}

/// An XCCDF `<fix>`: its system (`urn:xccdf:fix:script:ansible`, `urn:xccdf:fix:script:sh`…),
/// attributes, and text with its `<sub idref>` placeholders kept apart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Fix {
    pub system: String,
    pub strategy: String,
    pub disruption: String,
    pub reboot: bool,
    pub parts: Vec<FixPart>,
    pub line: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum FixPart {
    Text(String),
    /// `<sub idref="…"/>`: the value (id) to put here.
    Sub(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Value {
    pub id: String,
    pub kind: String,
    /// selector ("" = default) → value.
    pub values: Vec<(String, String)>,
}

impl Value {
    pub fn default_value(&self) -> Option<&str> {
        self.values
            .iter()
            .find(|(s, _)| s.is_empty())
            .or_else(|| self.values.first())
            .map(|(_, v)| v.as_str())
    }
    pub fn selected(&self, selector: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(s, _)| s == selector)
            .map(|(_, v)| v.as_str())
    }
}

/// A CPE applicability language test (`cpe-lang:logical-test`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PlatformTest {
    Logical {
        operator: String,
        negate: bool,
        children: Vec<PlatformTest>,
    },
    /// A CPE name, checked through the dictionary's OVAL definition.
    Fact(String),
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OvalDoc {
    pub definitions: HashMap<String, Elem>,
    pub tests: HashMap<String, Elem>,
    pub objects: HashMap<String, Elem>,
    pub states: HashMap<String, Elem>,
    pub variables: HashMap<String, Elem>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Benchmark {
    pub id: String,
    pub title: String,
    pub platforms: Vec<String>,
    pub profiles: Vec<Profile>,
    pub groups: HashMap<String, Group>,
    pub rules: Vec<Rule>,
    pub values: HashMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DataStream {
    pub file: String,
    pub benchmark: Benchmark,
    /// OVAL components by the name XCCDF and the CPE dictionary use (`ssg-debian11-oval.xml`).
    pub ovals: HashMap<String, OvalDoc>,
    /// CPE name → (OVAL file name, definition id).
    pub cpe_items: HashMap<String, (String, String)>,
    /// Platform id (`machine`) → test.
    pub platform_specs: HashMap<String, PlatformTest>,
}

const XCCDF12: &str = "http://checklists.nist.gov/xccdf/1.2";

struct Ctx<'a, 'i> {
    doc: &'a roxmltree::Document<'i>,
    file: &'a str,
    lines: &'a Lines,
}

impl Ctx<'_, '_> {
    fn line(&self, n: roxmltree::Node) -> u32 {
        self.lines.line(n.range().start)
    }
    fn err(&self, n: roxmltree::Node, message: impl Into<String>) -> ScapError {
        ScapError::Content {
            file: self.file.into(),
            line: self.line(n),
            message: message.into(),
        }
    }
    fn req<'n>(&self, n: roxmltree::Node<'n, '_>, attr: &str) -> Result<&'n str, ScapError> {
        n.attribute(attr).ok_or_else(|| {
            self.err(
                n,
                format!(
                    "<{}> has no `{attr}` attribute (required by the schema)",
                    n.tag_name().name()
                ),
            )
        })
    }
}

fn is(n: &roxmltree::Node, name: &str) -> bool {
    n.is_element() && n.tag_name().name() == name
}

fn text_of(n: roxmltree::Node) -> String {
    n.descendants()
        .filter(|d| d.is_text())
        .filter_map(|d| d.text())
        .collect::<String>()
        .trim()
        .to_string()
}

fn child_text(n: roxmltree::Node, name: &str) -> String {
    n.children()
        .find(|c| is(c, name))
        .map(text_of)
        .unwrap_or_default()
}

fn bool_attr(n: roxmltree::Node, name: &str, default: bool) -> bool {
    match n.attribute(name) {
        Some("true") | Some("1") => true,
        Some("false") | Some("0") => false,
        _ => default,
    }
}

/// Parses a SCAP source data stream (or a bare XCCDF 1.2 benchmark with no OVAL). `file`
/// names it in errors.
pub fn parse(text: &str, file: &str) -> Result<DataStream, ScapError> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: false,
        nodes_limit: u32::MAX,
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
        let p = e.pos();
        ScapError::Xml {
            file: file.into(),
            line: p.row,
            col: p.col,
            message: e.to_string(),
        }
    })?;
    let lines = Lines::new(text);
    let cx = Ctx {
        doc: &doc,
        file,
        lines: &lines,
    };
    let root = doc.root_element();
    let mut ds = DataStream {
        file: file.into(),
        ..Default::default()
    };
    // Catalog names (`ssg-debian11-oval.xml`) → component-ref ids → component ids.
    let mut uri_of_name: HashMap<String, String> = HashMap::new();
    let mut comp_of_ref: HashMap<String, String> = HashMap::new();
    let mut bench = None;
    for n in root.descendants().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "uri"
                if n.tag_name().namespace()
                    == Some("urn:oasis:names:tc:entity:xmlns:xml:catalog") =>
            {
                if let (Some(name), Some(uri)) = (n.attribute("name"), n.attribute("uri")) {
                    uri_of_name.insert(name.into(), uri.trim_start_matches('#').into());
                }
            }
            "component-ref" => {
                if let (Some(id), Some(href)) = (
                    n.attribute("id"),
                    n.attributes()
                        .find(|a| a.name() == "href")
                        .map(|a| a.value()),
                ) {
                    comp_of_ref.insert(id.into(), href.trim_start_matches('#').into());
                }
            }
            "Benchmark" if n.tag_name().namespace() == Some(XCCDF12) && bench.is_none() => {
                bench = Some(n);
            }
            _ => {}
        }
    }
    let Some(bench) = bench else {
        return Err(cx.err(
            root,
            "no XCCDF 1.2 <Benchmark> found: expected a SCAP 1.3 source data stream such as /usr/share/xml/scap/ssg/content/ssg-debian11-ds.xml",
        ));
    };
    ds.benchmark = parse_benchmark(&cx, bench)?;
    ds.platform_specs = parse_platform_specs(&cx)?;
    // OVAL components and the CPE dictionary.
    let mut oval_by_comp: HashMap<String, OvalDoc> = HashMap::new();
    for n in root.descendants().filter(|n| is(n, "oval_definitions")) {
        let doc = parse_oval(&cx, n)?;
        let comp = n
            .ancestors()
            .find(|a| is(a, "component"))
            .and_then(|a| a.attribute("id"))
            .unwrap_or("")
            .to_string();
        oval_by_comp.insert(comp, doc);
    }
    for n in root.descendants().filter(|n| is(n, "cpe-item")) {
        let name = cx.req(n, "name")?;
        if let Some(c) = n.children().find(|c| is(c, "check")) {
            ds.cpe_items.insert(
                name.into(),
                (c.attribute("href").unwrap_or("").into(), text_of(c)),
            );
        }
    }
    // Name each OVAL component by its catalog name.
    // (Catalog names map components one to one in SSG content: a component named twice is
    // copied once per extra name.)
    let mut named: HashMap<String, Vec<String>> = HashMap::new();
    for (name, cref) in &uri_of_name {
        if let Some(comp) = comp_of_ref.get(cref) {
            named.entry(comp.clone()).or_default().push(name.clone());
        }
    }
    let tail = |comp: &str| comp.rsplit("_comp_").next().unwrap_or(comp).to_string();
    for (comp, mut names) in named {
        if let Some(d) = oval_by_comp.remove(&comp) {
            // Every component is also known by its id's tail (`…_comp_<name>`).
            let t = tail(&comp);
            if !names.contains(&t) && !ds.ovals.contains_key(&t) {
                names.push(t);
            }
            let last = names.pop().expect("at least one name per entry");
            for n in names {
                ds.ovals.insert(n, d.clone());
            }
            ds.ovals.insert(last, d);
        }
    }
    // Components no catalog names: by their id's tail.
    for (comp, d) in oval_by_comp {
        ds.ovals.entry(tail(&comp)).or_insert(d);
    }
    Ok(ds)
}

fn parse_platform_test(cx: &Ctx, n: roxmltree::Node) -> Result<PlatformTest, ScapError> {
    if is(&n, "fact-ref") {
        return Ok(PlatformTest::Fact(cx.req(n, "name")?.into()));
    }
    let mut children = Vec::new();
    for c in n.children().filter(|c| c.is_element()) {
        children.push(parse_platform_test(cx, c)?);
    }
    Ok(PlatformTest::Logical {
        operator: n.attribute("operator").unwrap_or("AND").to_uppercase(),
        negate: bool_attr(n, "negate", false),
        children,
    })
}

fn platforms_of(n: roxmltree::Node) -> Vec<String> {
    n.children()
        .filter(|c| is(c, "platform"))
        .filter_map(|c| c.attribute("idref"))
        .map(String::from)
        .collect()
}

fn parse_benchmark(cx: &Ctx, b: roxmltree::Node) -> Result<Benchmark, ScapError> {
    let mut out = Benchmark {
        id: cx.req(b, "id")?.into(),
        title: child_text(b, "title"),
        platforms: platforms_of(b),
        ..Default::default()
    };
    for n in b.children().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "Profile" => {
                let mut p = Profile {
                    id: cx.req(n, "id")?.into(),
                    title: child_text(n, "title"),
                    extends: n.attribute("extends").map(String::from),
                    selects: vec![],
                    refine_values: vec![],
                    set_values: vec![],
                };
                for c in n.children().filter(|c| c.is_element()) {
                    match c.tag_name().name() {
                        "select" => p
                            .selects
                            .push((cx.req(c, "idref")?.into(), bool_attr(c, "selected", true))),
                        "refine-value" => p.refine_values.push((
                            cx.req(c, "idref")?.into(),
                            c.attribute("selector").unwrap_or("").into(),
                        )),
                        "set-value" => p.set_values.push((cx.req(c, "idref")?.into(), text_of(c))),
                        _ => {}
                    }
                }
                out.profiles.push(p);
            }
            "Group" | "Rule" | "Value" => walk_item(cx, n, None, &mut out)?,
            _ => {}
        }
    }
    Ok(out)
}

fn walk_item(
    cx: &Ctx,
    n: roxmltree::Node,
    parent: Option<&str>,
    out: &mut Benchmark,
) -> Result<(), ScapError> {
    match n.tag_name().name() {
        "Group" => {
            let id = cx.req(n, "id")?.to_string();
            out.groups.insert(
                id.clone(),
                Group {
                    id: id.clone(),
                    selected: bool_attr(n, "selected", true),
                    platforms: platforms_of(n),
                    parent: parent.map(String::from),
                },
            );
            for c in n.children().filter(|c| c.is_element()) {
                walk_item(cx, c, Some(&id), out)?;
            }
        }
        "Value" => {
            let id = cx.req(n, "id")?.to_string();
            let mut v = Value {
                id: id.clone(),
                kind: n.attribute("type").unwrap_or("string").into(),
                values: vec![],
            };
            for c in n.children().filter(|c| is(c, "value")) {
                v.values
                    .push((c.attribute("selector").unwrap_or("").into(), text_of(c)));
            }
            out.values.insert(id, v);
        }
        "Rule" => {
            let mut r = Rule {
                id: cx.req(n, "id")?.into(),
                title: child_text(n, "title"),
                severity: n.attribute("severity").unwrap_or("unknown").into(),
                selected: bool_attr(n, "selected", true),
                group: parent.map(String::from),
                platforms: platforms_of(n),
                idents: vec![],
                references: vec![],
                check: None,
                other_systems: vec![],
                fixes: vec![],
                line: cx.line(n),
            };
            for c in n.children().filter(|c| c.is_element()) {
                match c.tag_name().name() {
                    "fix" => r.fixes.push(parse_fix(cx, c)),
                    "ident" => r
                        .idents
                        .push((c.attribute("system").unwrap_or("").into(), text_of(c))),
                    "reference" => r.references.push(Reference {
                        href: c.attribute("href").unwrap_or("").into(),
                        text: text_of(c),
                    }),
                    "check" => {
                        let system = cx.req(c, "system")?;
                        if system != "http://oval.mitre.org/XMLSchema/oval-definitions-5" {
                            r.other_systems.push(system.into());
                            continue;
                        }
                        let mut chk = OvalCheck {
                            negate: bool_attr(c, "negate", false),
                            ..Default::default()
                        };
                        for cc in c.children().filter(|x| x.is_element()) {
                            match cc.tag_name().name() {
                                "check-export" => chk.exports.push((
                                    cx.req(cc, "export-name")?.into(),
                                    cx.req(cc, "value-id")?.into(),
                                )),
                                "check-content-ref" => {
                                    chk.href = cx.req(cc, "href")?.into();
                                    chk.definition = cc.attribute("name").map(String::from);
                                }
                                _ => {}
                            }
                        }
                        if r.check.is_none() {
                            r.check = Some(chk);
                        }
                    }
                    _ => {}
                }
            }
            out.rules.push(r);
        }
        _ => {}
    }
    Ok(())
}

fn parse_fix(cx: &Ctx, n: roxmltree::Node) -> Fix {
    let mut parts = Vec::new();
    for c in n.children() {
        if c.is_text() {
            if let Some(t) = c.text() {
                parts.push(FixPart::Text(t.to_string()));
            }
        } else if is(&c, "sub") {
            parts.push(FixPart::Sub(c.attribute("idref").unwrap_or("").to_string()));
        }
    }
    Fix {
        system: n.attribute("system").unwrap_or("").into(),
        strategy: n.attribute("strategy").unwrap_or("").into(),
        disruption: n.attribute("disruption").unwrap_or("").into(),
        reboot: bool_attr(n, "reboot", false),
        parts,
        line: cx.line(n),
    }
}

fn parse_oval(cx: &Ctx, root: roxmltree::Node) -> Result<OvalDoc, ScapError> {
    let mut d = OvalDoc::default();
    for section in root.children().filter(|c| c.is_element()) {
        let map = match section.tag_name().name() {
            "definitions" => &mut d.definitions,
            "tests" => &mut d.tests,
            "objects" => &mut d.objects,
            "states" => &mut d.states,
            "variables" => &mut d.variables,
            _ => continue,
        };
        for n in section.children().filter(|c| c.is_element()) {
            let id = cx.req(n, "id")?;
            map.insert(id.into(), own(cx.lines, n));
        }
    }
    Ok(d)
}

/// Platform specifications (`cpe-lang:platform`) of the whole stream.
fn parse_platform_specs(cx: &Ctx) -> Result<HashMap<String, PlatformTest>, ScapError> {
    let mut out = HashMap::new();
    for n in cx.doc.descendants().filter(|n| {
        is(n, "platform") && n.tag_name().namespace() == Some("http://cpe.mitre.org/language/2.0")
    }) {
        let id = cx.req(n, "id")?;
        if let Some(t) = n.children().find(|c| is(c, "logical-test")) {
            out.insert(id.into(), parse_platform_test(cx, t)?);
        }
    }
    Ok(out)
}

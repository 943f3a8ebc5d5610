//! The source data stream as written: where its root element, its XCCDF `Benchmark` and its
//! components are, so result documents embed them verbatim (byte for byte, with the namespace
//! declarations their ancestors made copied onto them) instead of a re-serialisation that
//! could lose or alter content.
//!
//! The text was already parsed once by [`crate::ds::parse`]: it is well-formed and has no DTD,
//! so its elements can be cut out by their byte ranges and stay well-formed.

use crate::ds::ScapError;
use crate::xml::Lines;
use std::collections::HashMap;
use std::ops::Range;

const XCCDF12: &str = "http://checklists.nist.gov/xccdf/1.2";
const SDS: &str = "http://scap.nist.gov/schema/scap/source/1.2";

/// A source data stream (or bare XCCDF 1.2 benchmark) located for embedding.
pub struct Source<'a> {
    pub(crate) text: &'a str,
    /// The file name (as given), for `benchmark/@href` and messages.
    pub file: String,
    /// The root element.
    root: Range<usize>,
    /// The `Benchmark` element, its missing namespace declarations, and where a `TestResult`
    /// goes in it (before `signature`, else before its end tag).
    bench: Range<usize>,
    bench_ns: String,
    bench_insert: usize,
    /// `Benchmark/@version` text (`TestResult/@version`).
    pub version: String,
    /// `@weight` of rules and groups that declare one (default 1).
    pub weights: HashMap<String, f64>,
    /// In a data stream collection: the end tag of the first data stream's `checklists`, and
    /// the end of the last `component` (where a tailoring component is spliced in).
    checklists_end: Option<usize>,
    components_end: Option<usize>,
    /// `#<id>` of the data stream component holding the `Benchmark` (how a `TestResult` in
    /// ARF names its benchmark, as oscap writes it).
    pub(crate) bench_component: Option<String>,
}

impl<'a> Source<'a> {
    /// Locates the parts of `text` (the data stream [`crate::ds::parse`] read from `file`).
    pub fn new(text: &'a str, file: &str) -> Result<Source<'a>, ScapError> {
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
        let root = doc.root_element();
        let bench = root
            .descendants()
            .find(|n| n.is_element() && n.has_tag_name((XCCDF12, "Benchmark")))
            .ok_or_else(|| ScapError::Content {
                file: file.into(),
                line: Lines::new(text).line(root.range().start),
                message: "no XCCDF 1.2 <Benchmark> to write results for".into(),
            })?;
        let r = bench.range();
        let insert = bench
            .children()
            .find(|c| c.is_element() && c.tag_name().name() == "signature")
            .map(|c| c.range().start)
            .unwrap_or_else(|| r.start + text[r.clone()].rfind("</").unwrap_or(r.end - r.start));
        let mut weights = HashMap::new();
        for n in bench
            .descendants()
            .filter(|n| n.is_element() && matches!(n.tag_name().name(), "Rule" | "Group"))
        {
            if let (Some(id), Some(w)) = (n.attribute("id"), n.attribute("weight")) {
                if let Ok(w) = w.trim().parse::<f64>() {
                    weights.insert(id.to_string(), w);
                }
            }
        }
        let is_sds =
            |n: &roxmltree::Node, name: &str| n.is_element() && n.has_tag_name((SDS, name));
        let (mut checklists_end, mut components_end) = (None, None);
        if is_sds(&root, "data-stream-collection") {
            checklists_end = root
                .children()
                .find(|n| is_sds(n, "data-stream"))
                .and_then(|d| d.children().find(|n| is_sds(n, "checklists")))
                .map(|c| {
                    let cr = c.range();
                    cr.start + text[cr.clone()].rfind("</").unwrap_or(0)
                });
            components_end = root
                .children()
                .rfind(|n| is_sds(n, "component"))
                .map(|c| c.range().end);
        }
        let bench_component = bench
            .ancestors()
            .find(|a| is_sds(a, "component"))
            .and_then(|c| c.attribute("id"))
            .map(|id| format!("#{id}"));
        Ok(Source {
            bench_component,
            text,
            file: file.into(),
            root: root.range(),
            bench_ns: missing_namespaces(text, bench),
            bench: r,
            bench_insert: insert,
            version: bench
                .children()
                .find(|c| c.is_element() && c.tag_name().name() == "version")
                .and_then(|c| c.text())
                .unwrap_or("")
                .trim()
                .to_string(),
            weights,
            checklists_end,
            components_end,
        })
    }

    /// The `Benchmark` element as written, with `inner` inserted where a `TestResult` goes.
    pub(crate) fn benchmark_with(&self, inner: &str) -> String {
        let b = &self.text[self.bench.clone()];
        let at = self.bench_insert - self.bench.start;
        let name_end = qname_end(b);
        let mut out = String::with_capacity(b.len() + inner.len() + self.bench_ns.len());
        out.push_str(&b[..name_end]);
        out.push_str(&self.bench_ns);
        out.push_str(&b[name_end..at]);
        out.push_str(inner);
        out.push_str(&b[at..]);
        out
    }

    /// The root element as written; with a tailoring, spliced into the data stream as a
    /// checklist component (as `oscap --results-arf --tailoring-file` does).
    pub(crate) fn root_with(&self, component_ref: &str, component: &str) -> String {
        let mut out = String::with_capacity(self.root.len() + component.len());
        match (self.checklists_end, self.components_end) {
            (Some(c), Some(e)) if !component.is_empty() => {
                out.push_str(&self.text[self.root.start..c]);
                out.push_str(component_ref);
                out.push_str(&self.text[c..e]);
                out.push_str(component);
                out.push_str(&self.text[e..self.root.end]);
            }
            _ => out.push_str(&self.text[self.root.clone()]),
        }
        out
    }

    /// Is the source a data stream collection a tailoring component can be spliced into?
    pub(crate) fn is_collection(&self) -> bool {
        self.checklists_end.is_some() && self.components_end.is_some()
    }
}

/// An element as written, made self-contained: the namespace declarations in scope that its
/// ancestors made are added to its start tag.
pub(crate) fn element_text(text: &str, node: roxmltree::Node) -> String {
    let s = &text[node.range()];
    let at = qname_end(s);
    format!("{}{}{}", &s[..at], missing_namespaces(text, node), &s[at..])
}

/// End of the element name in a start tag (`<x:Benchmark` → its length).
fn qname_end(s: &str) -> usize {
    s.char_indices()
        .skip(1)
        .find(|(_, c)| c.is_whitespace() || *c == '/' || *c == '>')
        .map(|(i, _)| i)
        .unwrap_or(s.len())
}

/// ` xmlns:p="uri"` for each namespace in scope at `node` not declared on its start tag.
fn missing_namespaces(text: &str, node: roxmltree::Node) -> String {
    let declared = declared_prefixes(&text[node.range()]);
    let mut out = String::new();
    for ns in node.namespaces() {
        let name = ns.name();
        if name == Some("xml") || declared.iter().any(|d| d.as_deref() == name) {
            continue;
        }
        let uri = ns
            .uri()
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('"', "&quot;");
        match name {
            Some(p) => out.push_str(&format!(" xmlns:{p}=\"{uri}\"")),
            None => out.push_str(&format!(" xmlns=\"{uri}\"")),
        }
    }
    out
}

/// Prefixes declared on an element's start tag (`None`: the default namespace).
fn declared_prefixes(element: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    let b = element.as_bytes();
    let mut i = qname_end(element);
    // Well-formed (the document parsed): name, `=`, a quoted value, repeated, up to `>`.
    while i < b.len() {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= b.len() || b[i] == b'>' || b[i] == b'/' {
            break;
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let name = &element[start..i];
        while i < b.len() && b[i] != b'"' && b[i] != b'\'' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let q = b[i];
        i += 1;
        while i < b.len() && b[i] != q {
            i += 1;
        }
        i += 1;
        if name == "xmlns" {
            out.push(None);
        } else if let Some(p) = name.strip_prefix("xmlns:") {
            out.push(Some(p.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_elements_carry_their_namespaces() {
        let text = r#"<?xml version="1.0"?>
<c:col xmlns:c="urn:c" xmlns:x="http://checklists.nist.gov/xccdf/1.2" xmlns:h="urn:h&amp;1">
 <c:component><x:Benchmark id="b" xmlns:c="urn:c"><x:version>1.2</x:version><x:Rule id="r" weight="2.5"><h:p/></x:Rule></x:Benchmark></c:component>
</c:col>"#;
        let s = Source::new(text, "t.xml").unwrap();
        assert_eq!(s.version, "1.2");
        assert_eq!(s.weights["r"], 2.5);
        let b = s.benchmark_with("<x:TestResult/>");
        assert!(b.starts_with(r#"<x:Benchmark xmlns:x="http://checklists.nist.gov/xccdf/1.2" xmlns:h="urn:h&amp;1" id="b" xmlns:c="urn:c">"#), "{b}");
        assert!(b.ends_with("</x:Rule><x:TestResult/></x:Benchmark>"), "{b}");
        roxmltree::Document::parse(&b).expect("self-contained");
    }
}

//! Strict loading of user-authored YAML documents with located diagnostics.
//!
//! Every document is a Kubernetes-style envelope (`apiVersion`, `kind`, `metadata`, `spec`).
//! Unknown fields are errors. Errors carry the file name, line and column, and render as
//! `miette` diagnostics with a snippet. Inputs are bounded: documents larger than
//! [`MAX_DOCUMENT_BYTES`], alias bombs and absurd nesting are refused quickly.

use crate::{policy::Policy, target::Target, workflow::Workflow, API_VERSION};
use miette::{Diagnostic, NamedSource, SourceSpan};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::sync::Arc;

/// Largest user document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest nesting accepted.
pub const MAX_DEPTH: usize = 64;

/// A source text with its display name, kept to render diagnostics.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<str>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        Self {
            name: name.into(),
            text: text.into(),
        }
    }

    /// Byte offset of a 1-based line/column, clamped to the text.
    pub fn offset(&self, line: u64, column: u64) -> usize {
        if line == 0 {
            return 0;
        }
        let mut off = 0usize;
        for (i, l) in self.text.split_inclusive('\n').enumerate() {
            if i as u64 + 1 == line {
                let col = column.saturating_sub(1) as usize;
                let mut chars = l.char_indices();
                let byte = chars.nth(col).map(|(b, _)| b).unwrap_or(l.len());
                return off + byte;
            }
            off += l.len();
        }
        self.text.len()
    }
}

/// A value with the place it was written, for diagnostics on cross-references.
///
/// Serializes and describes itself as the bare value. Values built in code have line 0.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Loc<T> {
    pub value: T,
    pub line: u64,
    pub column: u64,
}

impl<T> Loc<T> {
    pub fn new(value: T) -> Self {
        Self {
            value,
            line: 0,
            column: 0,
        }
    }
    pub fn at(value: T, line: u64, column: u64) -> Self {
        Self {
            value,
            line,
            column,
        }
    }
}

impl<T> std::ops::Deref for Loc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: fmt::Debug> fmt::Debug for Loc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<T: fmt::Display> fmt::Display for Loc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl From<&str> for Loc<String> {
    fn from(s: &str) -> Self {
        Loc::new(s.to_string())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loc<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(Loc {
            value: s.value,
            line: s.referenced.line(),
            column: s.referenced.column(),
        })
    }
}

impl<T: Serialize> Serialize for Loc<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<T: schemars::JsonSchema> schemars::JsonSchema for Loc<T> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        T::schema_name()
    }
    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        T::json_schema(g)
    }
    fn inline_schema() -> bool {
        true
    }
}

/// An error in a user file, located at file:line:column.
#[derive(Debug, thiserror::Error, Diagnostic)]
#[error("{file}:{line}:{column}: {message}")]
pub struct LoadError {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
    #[help]
    pub help: Option<String>,
    #[source_code]
    pub src: NamedSource<String>,
    #[label("here")]
    pub span: Option<SourceSpan>,
}

impl LoadError {
    /// An error at a line/column of `source` (line 0: the whole file).
    pub fn at(
        source: &SourceFile,
        line: u64,
        column: u64,
        message: impl Into<String>,
        help: Option<String>,
    ) -> Self {
        let span = (line > 0).then(|| {
            let off = source.offset(line, column);
            let len = source.text[off..]
                .find(['\n', ':', ','])
                .unwrap_or(0)
                .max(1)
                .min(source.text.len().saturating_sub(off));
            SourceSpan::from((off, len))
        });
        LoadError {
            file: source.name.clone(),
            line: line.max(1),
            column: column.max(1),
            message: message.into(),
            help,
            src: NamedSource::new(source.name.clone(), source.text.to_string()),
            span,
        }
    }
}

/// Any document Vacsine reads.
#[derive(Debug, Clone)]
pub enum Document {
    Policy(Policy),
    Target(Target),
    Workflow(Workflow),
}

impl Document {
    pub fn kind(&self) -> &'static str {
        match self {
            Document::Policy(_) => "Policy",
            Document::Target(_) => "Target",
            Document::Workflow(_) => "Workflow",
        }
    }
    pub fn name(&self) -> &str {
        match self {
            Document::Policy(p) => &p.metadata.name,
            Document::Target(t) => &t.metadata.name,
            Document::Workflow(w) => &w.metadata.name,
        }
    }
}

#[derive(Deserialize)]
struct KindProbe {
    #[serde(rename = "apiVersion")]
    api_version: Option<Loc<String>>,
    kind: Option<Loc<String>>,
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    budget.max_events = 200_000;
    budget.max_depth = MAX_DEPTH;
    serde_saphyr::options! {
        budget: Some(budget),
        strict_booleans: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
        with_snippet: false,
    }
}

fn parse_err(source: &SourceFile, e: serde_saphyr::Error) -> LoadError {
    let (line, column) = e
        .location()
        .map(|l| (l.line(), l.column()))
        .unwrap_or((0, 0));
    let mut message = e.to_string();
    // The library appends its own location; ours is in the prefix already.
    if let Some(i) = message.find(" at line ") {
        message.truncate(i);
    }
    let help = if message.contains("unknown field") {
        Some("remove the field or fix its spelling; unknown fields are refused so that a typo cannot silently disable a control".to_string())
    } else if message.contains("budget") || message.contains("alias") || message.contains("depth") {
        Some(
            "the document is refused as too large or too deeply nested (alias bombs are refused)"
                .to_string(),
        )
    } else {
        None
    };
    LoadError::at(source, line, column, message, help)
}

/// Deserialize `source` strictly as `T`.
pub fn parse_as<T: DeserializeOwned>(source: &SourceFile) -> Result<T, LoadError> {
    if source.text.len() > MAX_DOCUMENT_BYTES {
        return Err(LoadError::at(
            source,
            0,
            0,
            format!(
                "document is {} bytes, more than the {MAX_DOCUMENT_BYTES} accepted",
                source.text.len()
            ),
            None,
        ));
    }
    serde_saphyr::from_str_with_options::<T>(&source.text, options())
        .map_err(|e| parse_err(source, e))
}

/// Load any Vacsine document, dispatching on its `kind`.
pub fn load(source: &SourceFile) -> Result<Document, LoadError> {
    let probe: KindProbe = parse_as(source)?;
    match &probe.api_version {
        None => {
            return Err(LoadError::at(
                source,
                1,
                1,
                "missing `apiVersion`",
                Some(format!(
                    "start the document with `apiVersion: {API_VERSION}`"
                )),
            ))
        }
        Some(v) if v.value != API_VERSION => {
            return Err(LoadError::at(
                source,
                v.line,
                v.column,
                format!("unsupported apiVersion `{}`", v.value),
                Some(format!("this release reads `{API_VERSION}`")),
            ))
        }
        _ => {}
    }
    let Some(kind) = probe.kind else {
        return Err(LoadError::at(
            source,
            1,
            1,
            "missing `kind`",
            Some("expected one of: Policy, Target, Workflow".into()),
        ));
    };
    match kind.value.as_str() {
        "Policy" => Ok(Document::Policy(parse_as(source)?)),
        "Target" => Ok(Document::Target(parse_as(source)?)),
        "Workflow" => Ok(Document::Workflow(parse_as(source)?)),
        other => Err(LoadError::at(
            source,
            kind.line,
            kind.column,
            format!("unknown kind `{other}`"),
            Some("expected one of: Policy, Target, Workflow".into()),
        )),
    }
}

/// Load a document that must be of one kind.
pub fn load_kind<T>(
    source: &SourceFile,
    want: &'static str,
    pick: impl FnOnce(Document) -> Option<T>,
) -> Result<T, LoadError> {
    let doc = load(source)?;
    let got = doc.kind();
    pick(doc).ok_or_else(|| {
        LoadError::at(
            source,
            1,
            1,
            format!("expected a {want} document, found a {got}"),
            Some(format!("pass a file whose `kind` is `{want}`")),
        )
    })
}

/// `metadata` of every document.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Metadata {
    /// Stable name (lowercase letters, digits, `-`, `.`, `_`).
    pub name: Loc<String>,
    /// Version of this document (free-form, semantic versioning suggested).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
}

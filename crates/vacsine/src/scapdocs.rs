//! The files of `vacsine scap eval` / `check --scap` beyond the report: the tailoring read
//! (`--tailoring`) and the XCCDF results and ARF documents written (`--results`, `--arf`).
//!
//! With several nodes, each node gets its own documents, named after the path given with
//! `-<node>` before its extension (`out.xml` → `out-web.xml`): consumers (`oscap xccdf
//! generate report`, Foreman) read one TestResult per document.

use crate::paths::write_atomic;
use std::path::{Path, PathBuf};
use vacsine_scap::results::{arf_document, id_part, xccdf_document, Run, Source};
use vacsine_scap::tailoring::Tailoring;
use vacsine_scap::DataStream;

/// Reads and parses the tailoring at `path` (its text is part of the slice cache's key).
pub fn read_tailoring(path: &Path) -> miette::Result<(Tailoring, String)> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| miette::miette!("{name}: cannot read the tailoring file: {e}"))?;
    let t = vacsine_scap::tailoring::parse(&text, &name).map_err(|e| miette::miette!("{e}"))?;
    Ok((t, text))
}

/// The data stream's text, for the documents that embed it.
pub fn read_source(path: &Path) -> miette::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| miette::miette!("{}: cannot read the data stream: {e}", path.display()))
}

/// `path` for node `node`: as given for a single node, else with `-<node>` before the
/// extension.
pub fn per_node(path: &Path, node: &str, several: bool) -> PathBuf {
    if !several {
        return path.to_path_buf();
    }
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match path.extension() {
        Some(e) => format!("{stem}-{}.{}", id_part(node), e.to_string_lossy()),
        None => format!("{stem}-{}", id_part(node)),
    };
    path.with_file_name(name)
}

/// Writes the documents asked for one node's run; returns (`results` | `arf`, path written).
#[allow(clippy::too_many_arguments)]
pub fn write(
    src: &Source,
    ds: &DataStream,
    run: &Run,
    tailoring: Option<&Tailoring>,
    results: Option<&Path>,
    arf: Option<&Path>,
    several: bool,
) -> miette::Result<Vec<(&'static str, PathBuf)>> {
    let mut out = Vec::new();
    if let Some(p) = results {
        let p = per_node(p, &run.target.name, several);
        write_atomic(&p, xccdf_document(src, ds, run, tailoring).as_bytes())?;
        out.push(("results", p));
    }
    if let Some(p) = arf {
        let p = per_node(p, &run.target.name, several);
        write_atomic(&p, arf_document(src, ds, run, tailoring).as_bytes())?;
        out.push(("arf", p));
    }
    Ok(out)
}

/// The human report's line naming the documents written (empty when none).
pub fn written_line(written: &[(&'static str, PathBuf)]) -> String {
    if written.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = written
        .iter()
        .map(|(k, p)| {
            let what = if *k == "arf" { "ARF" } else { "XCCDF results" };
            format!("{what} {}", p.display())
        })
        .collect();
    format!("written: {}\n", parts.join(", "))
}

//! `vacsine push FILE...`, `vacsine registry list` and `vacsine run NAME[@VERSION] --site S`:
//! the orchestrator's registry of versioned policies and workflows, as an operator uses it.

use crate::cli::{OperatorConn, RegistryAction, SimpleFormat};
use crate::exit::Exit;
use crate::orch::{call_err, client, err, follow_run};
use crate::output::{print_diagnostics, print_json};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use vacsine_contract::proto;
use vacsine_core::doc::{Document, LoadError};
use vacsine_enforce::inputs;

/// `vacsine push image REF...` (images) or `vacsine push FILE...` (documents).
pub async fn dispatch_push(
    files: Vec<PathBuf>,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    match image_refs(&files) {
        Some(refs) => push_images(refs, conn, format).await,
        None => push(files, conn, format).await,
    }
}

/// `vacsine registry list|show|diff`.
pub async fn dispatch_registry(
    action: RegistryAction,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    match action {
        RegistryAction::List => list(conn, format).await,
        RegistryAction::Show {
            kind,
            name,
            version,
        } => show(&kind, &name, version, conn, format).await,
        RegistryAction::Diff {
            kind,
            name,
            from,
            to,
        } => diff(&kind, &name, from, to, conn, format).await,
    }
}

/// Every file parsed strictly (errors name file:line:column) before anything is pushed.
async fn push(
    files: Vec<PathBuf>,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let mut docs = Vec::new();
    let mut problems: Vec<LoadError> = Vec::new();
    for f in &files {
        match push_document(f)? {
            Ok(doc) => docs.push(doc),
            Err(e) => problems.push(e),
        }
    }
    if !problems.is_empty() {
        return Ok(print_diagnostics(problems));
    }
    let c = client(conn)?;
    let r: proto::RegistryList = c
        .post(proto::OP_REGISTRY, &proto::PushRequest { documents: docs })
        .await
        .map_err(call_err)?;
    if format == SimpleFormat::Json {
        print_json(&r);
    } else {
        print_pushed(&r);
    }
    Ok(Exit::Ok)
}

/// One file to push as the registry's document: a Schedule, a Response, a Policy or a
/// Workflow, read strictly (the inner error is located in the file).
fn push_document(f: &Path) -> miette::Result<Result<proto::PushDocument, LoadError>> {
    // `kind: Schedule` (issue 17): read strictly, errors located.
    match crate::posturecmd::load_schedule(f) {
        Ok(Some(doc)) => return Ok(Ok(doc)),
        Ok(None) => {}
        Err(e) => return Ok(Err(e)),
    }
    // `kind: Response` (issue 16): read by its own crate, strictly, errors located.
    match crate::responsecmd::load_response(f) {
        Ok(Some(doc)) => return Ok(Ok(doc)),
        Ok(None) => {}
        Err(e) => return Ok(Err(e)),
    }
    let l = match inputs::load_any(f) {
        Ok(l) => l,
        Err(e) => return Ok(Err(e)),
    };
    let document = match &l.doc {
        Document::Workflow(w) => serde_json::to_value(w),
        Document::Policy(p) => serde_json::to_value(p),
        Document::Target(_) => {
            return Ok(Err(LoadError::at(
                &l.source,
                1,
                1,
                "a Target is not pushed: the registry keeps policies and workflows",
                Some("push Policy and Workflow files only".to_string()),
            )))
        }
    }
    .map_err(err)?;
    Ok(Ok(proto::PushDocument {
        kind: l.doc.kind().to_string(),
        name: l.doc.name().to_string(),
        document,
    }))
}

/// `push`'s human report: one line per document, pushed or unchanged.
fn print_pushed(r: &proto::RegistryList) {
    for e in &r.entries {
        println!(
            "{:<8} {:<32} version {:<4} {}",
            e.kind,
            e.name,
            e.version,
            if e.created {
                "pushed"
            } else {
                "unchanged (already the latest version)"
            }
        );
    }
}

/// `vacsine push image REF...`: the references after `image` (`None`: files to push). A
/// file named `image` is pushed as `./image`.
fn image_refs(files: &[PathBuf]) -> Option<Vec<PathBuf>> {
    match files.split_first() {
        Some((first, rest)) if first.as_os_str() == "image" => Some(rest.to_vec()),
        _ => None,
    }
}

/// Upload each local image to the orchestrator: `docker save` to a temporary archive (argv,
/// no shell), its SHA-256 is its digest, streamed with the reference it is recorded under.
async fn push_images(
    refs: Vec<PathBuf>,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let names = image_names(&refs)?;
    let c = client(conn)?;
    let dir = tempfile::tempdir().map_err(err)?;
    let file = dir.path().join("image.tar");
    let mut pushed = Vec::new();
    for name in names {
        let r = push_image(&c, &file, name).await?;
        if format == SimpleFormat::Human {
            print_image_pushed(&r);
        }
        pushed.push(r);
    }
    if format == SimpleFormat::Json {
        print_json(&serde_json::json!({ "images": pushed }));
    }
    Ok(Exit::Ok)
}

/// The image references of `push image`, each checked as the engine checks the images it
/// runs; at least one.
fn image_names(refs: &[PathBuf]) -> miette::Result<Vec<String>> {
    if refs.is_empty() {
        return Err(miette::miette!(
            help = "vacsine push image REF... (images built or pulled on this machine; `docker images` lists them)",
            "no image given"
        ));
    }
    let mut names = Vec::new();
    for r in refs {
        let name = r
            .to_str()
            .ok_or_else(|| miette::miette!("{}: an image reference is UTF-8", r.display()))?;
        vacsine_engine::executor::check_image(name).map_err(|e| {
            miette::miette!(
                help = "an image reference such as acme/block-ip:1 (letters, digits, `.`, `_`, `-`, `/`, `:`, `@`)",
                "{e}"
            )
        })?;
        names.push(name.to_string());
    }
    Ok(names)
}

/// One image saved to the archive `file` (`docker save`), then uploaded under its digest
/// and `name`; the archive is removed once uploaded.
async fn push_image(
    c: &vacsine_contract::client::OperatorClient,
    file: &Path,
    name: String,
) -> miette::Result<proto::ImagePushed> {
    use vacsine_core::node::NodeOps;
    let path = file
        .to_str()
        .ok_or_else(|| {
            let dir = file.parent().unwrap_or(file);
            miette::miette!("the temporary folder {} is not UTF-8", dir.display())
        })?
        .to_string();
    let docker = vacsine_engine::LocalNode::new("local");
    let argv: Vec<String> = ["docker", "save", "--output", &path, "--", &name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = docker
        .exec(&argv, &[], None, std::time::Duration::from_secs(1800))
        .await
        .map_err(err)?;
    if out.exit_code != Some(0) {
        return Err(miette::miette!(
            help = "build or pull the image on this machine first (`docker images` lists them)",
            "`docker save {name}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let f2 = file.to_path_buf();
    let (digest, size) =
        tokio::task::spawn_blocking(move || vacsine_contract::images::sha256_file(&f2))
            .await
            .map_err(err)?
            .map_err(err)?;
    // A minute, plus a second per MiB (a slow link still gets there).
    let timeout = std::time::Duration::from_secs(60 + (size >> 20));
    let r: proto::ImagePushed = c
        .put_file(
            &format!("{}/{digest}", proto::OP_IMAGES),
            &[("name", name.clone())],
            file,
            size,
            timeout,
        )
        .await
        .map_err(call_err)?;
    let _ = std::fs::remove_file(file);
    Ok(r)
}

/// `push image`'s human line for one image: its version, digest and size.
fn print_image_pushed(r: &proto::ImagePushed) {
    println!(
        "{:<8} {:<32} version {:<4} {} ({:.1} MiB) {}",
        "Image",
        r.name,
        r.version,
        r.digest,
        r.size as f64 / (1u64 << 20) as f64,
        if r.created {
            "pushed"
        } else {
            "unchanged (already the latest version)"
        }
    );
}

async fn list(conn: &OperatorConn, format: SimpleFormat) -> miette::Result<Exit> {
    let c = client(conn)?;
    let r: proto::RegistryList = c.get(proto::OP_REGISTRY).await.map_err(err)?;
    if format == SimpleFormat::Json {
        print_json(&r);
    } else {
        println!(
            "{:<8} {:<32} {:>7}  {:<26} SHA256",
            "KIND", "NAME", "VERSION", "PUSHED"
        );
        for e in &r.entries {
            println!(
                "{:<8} {:<32} {:>7}  {:<26} {}",
                e.kind, e.name, e.version, e.pushed, e.sha256
            );
        }
    }
    Ok(Exit::Ok)
}

/// The registry path of a document; its name is checked here (it goes into the path).
fn document_path(kind: &str, name: &str) -> miette::Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(miette::miette!(
            "NAME `{name}` is not a document name: letters, digits, `-`, `_` and `.` only (`vacsine registry list` shows the names)"
        ));
    }
    Ok(format!("{}/{kind}/{name}", proto::OP_REGISTRY))
}

/// `vacsine registry show KIND NAME [--version N]`: exits 2 when the document's signature
/// does not verify.
async fn show(
    kind: &str,
    name: &str,
    version: Option<i64>,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let path = document_path(kind, name)?;
    let c = client(conn)?;
    let q: Vec<(&str, String)> = version
        .map(|v| ("version", v.to_string()))
        .into_iter()
        .collect();
    let d: proto::RegistryDocument = c.get_query(&path, &q).await.map_err(err)?;
    if format == SimpleFormat::Json {
        print_json(&d);
    } else {
        println!(
            "{} {} version {} (latest {}), pushed {}, {}",
            d.kind, d.name, d.version, d.latest, d.pushed, d.sha256
        );
        println!(
            "signature: {}",
            if d.verified {
                "verifies"
            } else {
                "does NOT verify (altered in the store, or pushed before documents were signed: push it again)"
            }
        );
        println!(
            "{}",
            serde_json::to_string_pretty(&d.document).map_err(err)?
        );
    }
    Ok(if d.verified { Exit::Ok } else { Exit::Failures })
}

/// `vacsine registry diff KIND NAME FROM TO`.
async fn diff(
    kind: &str,
    name: &str,
    from: i64,
    to: i64,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let path = format!("{}/diff", document_path(kind, name)?);
    let c = client(conn)?;
    let q = [("from", from.to_string()), ("to", to.to_string())];
    let d: proto::RegistryDiff = c.get_query(&path, &q).await.map_err(err)?;
    if format == SimpleFormat::Json {
        print_json(&d);
    } else if d.unified.is_empty() {
        println!("{} {}: v{from} and v{to} are the same", d.kind, d.name);
    } else {
        print!("{}", d.unified);
    }
    Ok(Exit::Ok)
}

/// `NAME` or `NAME@VERSION` of a pushed workflow, when `arg` is not a file here (a path with
/// a `/` or a YAML extension is always a file).
pub fn pushed_ref(arg: &Path) -> Option<(String, Option<i64>)> {
    if arg.exists() {
        return None;
    }
    let s = arg.to_str()?;
    if s.contains('/') || s.ends_with(".yaml") || s.ends_with(".yml") {
        return None;
    }
    let (name, version) = match s.split_once('@') {
        Some((n, v)) => (n, Some(v.parse::<i64>().ok().filter(|v| *v > 0)?)),
        None => (s, None),
    };
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    ok.then(|| (name.to_string(), version))
}

/// Run a pushed workflow at a site; inputs go as strings, typed by the engine at the site
/// from the workflow's declarations.
pub async fn run_pushed(
    name: String,
    version: Option<i64>,
    site: &str,
    raw_inputs: Vec<String>,
    detach: bool,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let mut inputs = Map::new();
    for r in &raw_inputs {
        let (k, v) = r
            .split_once('=')
            .ok_or_else(|| miette::miette!("--input {r:?}: expected NAME=VALUE"))?;
        inputs.insert(k.to_string(), Value::String(v.to_string()));
    }
    let c = client(conn)?;
    let created: proto::RunCreated = c
        .post(
            proto::OP_REGISTRY_RUNS,
            &proto::RunPushed {
                name,
                version,
                site: site.to_string(),
                inputs,
            },
        )
        .await
        .map_err(call_err)?;
    follow_run(&c, created, site, detach, format).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_or_name_at_version_is_a_pushed_workflow_a_path_is_a_file() {
        let p = |s: &str| pushed_ref(Path::new(s));
        assert_eq!(p("harden-ssh"), Some(("harden-ssh".into(), None)));
        assert_eq!(p("harden-ssh@3"), Some(("harden-ssh".into(), Some(3))));
        assert_eq!(p("harden-ssh@0"), None);
        assert_eq!(p("harden-ssh@x"), None);
        assert_eq!(p("wf/harden.yaml"), None);
        assert_eq!(p("harden.yaml"), None);
        assert_eq!(p("a b"), None);
        assert_eq!(p("Cargo.toml"), None, "an existing file");
    }

    #[test]
    fn push_image_takes_the_references_after_image() {
        let v = |a: &[&str]| a.iter().map(PathBuf::from).collect::<Vec<_>>();
        assert_eq!(
            image_refs(&v(&["image", "a:1", "b/c:2"])),
            Some(v(&["a:1", "b/c:2"]))
        );
        assert_eq!(image_refs(&v(&["image"])), Some(vec![]));
        assert_eq!(image_refs(&v(&["./image", "wf.yaml"])), None);
        assert_eq!(image_refs(&v(&["wf.yaml", "image"])), None);
    }
}

//! `vacsine enforce` (here) and `vacsine demo`: the enforce report, its exit code, and the
//! sandbox swept after an interrupt.

use crate::checkcmd::site_error;
use crate::cli::{DemoAction, EnforceInputs, Format};
use crate::exit::Exit;
use crate::output::{print, print_diagnostics, print_json};
use crate::paths::{journal_path, write_atomic};
use crate::progress::Progress;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vacsine_core::driver::DriverErrorKind;
use vacsine_enforce::inputs::{self, load_inputs, Inputs};
use vacsine_enforce::report;

/// The gates and switches of `vacsine enforce`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct EnforceFlags {
    pub keep_sandbox: bool,
    pub force: bool,
    pub require_persistent: bool,
    pub all_or_nothing: bool,
}

pub(crate) async fn enforce(
    io: &EnforceInputs,
    report_path: Option<&Path>,
    format: Format,
    flags: EnforceFlags,
) -> miette::Result<Exit> {
    let (loaded, shown) = match (&io.scap, &io.profile, &io.policy) {
        (Some(ds), Some(profile), _) => {
            let imp = inputs::ScapImportArgs {
                datastream: ds.clone(),
                profile: profile.clone(),
                tailoring: io.tailoring.clone(),
                rules: io.rules.clone(),
                container_as_machine: io.container_as_machine,
            };
            (
                inputs::load_scap_inputs(&imp, &io.target, &io.catalog),
                ds.clone(),
            )
        }
        (_, _, policy) => {
            let policy = policy.clone().unwrap_or_default();
            (load_inputs(&policy, &io.target, &io.catalog), policy)
        }
    };
    let inputs = match loaded {
        Ok(i) => i,
        Err(errors) => return Ok(print_diagnostics(errors)),
    };
    run_enforce(&inputs, &shown, report_path, format, flags).await
}

async fn run_enforce(
    inputs: &Inputs,
    policy_path: &Path,
    report_path: Option<&Path>,
    format: Format,
    flags: EnforceFlags,
) -> miette::Result<Exit> {
    let driver =
        crate::drivers::for_target(&inputs.target.doc).map_err(|e| site_error(inputs, &e))?;
    let progress = Progress::new(false);
    let p2 = progress.clone();
    let slot = Arc::new(Mutex::new(None::<String>));
    let opts = vacsine_enforce::EnforceOptions {
        keep_sandbox: flags.keep_sandbox,
        force: flags.force,
        require_persistent: flags.require_persistent,
        all_or_nothing: flags.all_or_nothing,
        journal: Some(journal_path()?),
        progress: Some(Arc::new(move |m: &str| p2.say(m))),
        hook: None,
        sandbox_slot: Some(slot.clone()),
        ..Default::default()
    };
    let result = tokio::select! {
        r = vacsine_enforce::enforce(driver.as_ref(), inputs, &opts) => r,
        _ = tokio::signal::ctrl_c() => {
            progress.done();
            let id = slot.lock().ok().and_then(|s| s.clone());
            eprintln!("interrupted{}", id.as_ref().map(|i| format!(": removing sandbox {i}")).unwrap_or_default());
            if let Some(id) = id {
                sweep_sandbox(driver.as_ref(), &id).await;
            }
            return Ok(Exit::Interrupted);
        }
    };
    progress.done();
    let rep = result.map_err(|e| match &e {
        vacsine_enforce::EnforceError::Driver(d) => site_error(inputs, d),
        _ => miette::miette!("{e}"),
    })?;
    show_enforce_report(&rep, policy_path, report_path, format)
}

/// Print an enforce report as `format` (and write it to `report_path`); its exit code.
pub(crate) fn show_enforce_report(
    rep: &vacsine_enforce::Report,
    policy_path: &Path,
    report_path: Option<&Path>,
    format: Format,
) -> miette::Result<Exit> {
    if let Some(path) = report_path {
        write_atomic(
            path,
            &serde_json::to_vec_pretty(&rep).map_err(|e| miette::miette!("{e}"))?,
        )?;
    }
    match format {
        Format::Human => print(&report::enforce_human(rep)),
        Format::Json => print_json(rep),
        Format::Junit => print(&report::enforce_junit(rep)),
        Format::Sarif => print_json(&report::enforce_sarif(
            &policy_path.display().to_string(),
            rep,
        )),
    }
    if let (Some(p), Format::Human) = (report_path, format) {
        print(&format!("Report written to {}\n", p.display()));
    }
    Ok(Exit::of_report(rep))
}

/// Remove sandbox `id` of an interrupted enforce. Requests in flight when the clone was
/// interrupted (a commit, a create) can still complete on the backend: sweep until two passes
/// find nothing.
pub(crate) async fn sweep_sandbox(driver: &dyn vacsine_core::driver::Driver, id: &str) {
    let mut quiet = 0;
    for _ in 0..20 {
        match driver.teardown(id).await {
            Ok(removed) if removed.is_empty() => quiet += 1,
            Err(e) if *e.kind() == DriverErrorKind::Unreachable => break,
            _ => quiet = 0,
        }
        if quiet >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

pub(crate) async fn demo(
    action: Option<DemoAction>,
    format: Format,
    report_path: &Path,
) -> miette::Result<Exit> {
    let docker = vacsine_docker::connect()
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    match action {
        Some(DemoAction::Down) => {
            let removed = vacsine_docker::demo::down(&docker)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            print(&format!("demo site removed ({} objects)\n", removed.len()));
            return Ok(Exit::Ok);
        }
        Some(DemoAction::Up) => {
            let p = Progress::new(false);
            build_demo_images(&docker, &p).await?;
            p.say("starting a fresh, non-compliant demo site");
            vacsine_docker::demo::up(&docker)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            p.done();
            print("demo site is up: try\n  vacsine check --policy examples/edge-site/policy.yaml --target examples/edge-site/target.yaml\n");
            return Ok(Exit::Ok);
        }
        None => {}
    }
    let root = find_examples()?;
    let policy = root.join("examples/edge-site/policy.yaml");
    let target = root.join("examples/edge-site/target.yaml");
    let inputs = match load_inputs(&policy, &target, &[]) {
        Ok(i) => i,
        Err(e) => return Ok(print_diagnostics(e)),
    };
    let p = Progress::new(false);
    build_demo_images(&docker, &p).await?;
    p.say("starting a fresh, non-compliant demo site (4 nodes + vantage point `outside`)");
    vacsine_docker::demo::up(&docker)
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    p.done();
    let exit = run_enforce(
        &inputs,
        &policy,
        Some(report_path),
        format,
        EnforceFlags::default(),
    )
    .await?;
    if format == Format::Human {
        print("The demo site stays up for exploring: `vacsine check ...`; remove it with `vacsine demo down`.\n");
    }
    Ok(exit)
}

/// Build the demo's images, telling the user what a first build (Debian packages, a minute
/// or two) is doing.
async fn build_demo_images(
    docker: &vacsine_docker::Docker,
    p: &std::sync::Arc<Progress>,
) -> miette::Result<()> {
    p.say("building demo images: Debian packages, cached after the first run");
    let say = p.clone();
    vacsine_docker::demo::images_with_progress(
        docker,
        std::sync::Arc::new(move |m: &str| say.say(m)),
    )
    .await
    .map_err(|e| miette::miette!("{e}"))?;
    Ok(())
}

/// The demo's files live in the repository: from the current folder or the binary's.
fn find_examples() -> miette::Result<PathBuf> {
    let mut candidates = vec![std::env::current_dir().unwrap_or_default()];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().map(Path::to_path_buf));
    }
    candidates
        .into_iter()
        .find(|d| d.join("examples/edge-site/policy.yaml").is_file())
        .ok_or_else(|| {
            miette::miette!(
                help = "run it from the repository root",
                "cannot find examples/edge-site/policy.yaml"
            )
        })
}

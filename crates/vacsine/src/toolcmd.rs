//! `vacsine sandbox`, `pin` and `schema`: small tools around the main commands.

use crate::cli::{SandboxAction, SchemaKind, SimpleFormat};
use crate::exit::Exit;
use crate::output::{print, print_json};

pub(crate) async fn sandbox(action: SandboxAction, format: SimpleFormat) -> miette::Result<Exit> {
    let docker = vacsine_docker::connect()
        .await
        .map_err(|e| miette::miette!("{e}"))?;
    match action {
        SandboxAction::List => {
            let list = vacsine_docker::sandbox::list(&docker)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            if format == SimpleFormat::Json {
                print_json(&list);
            } else if list.is_empty() {
                print("no sandbox\n");
            } else {
                print("SANDBOX            CONTAINERS  NETWORKS  VOLUMES  IMAGES\n");
                for s in &list {
                    print(&format!(
                        "{:<18} {:>10}  {:>8}  {:>7}  {:>6}\n",
                        s.id, s.containers, s.networks, s.volumes, s.images
                    ));
                }
            }
        }
        SandboxAction::Gc => {
            let removed = vacsine_docker::sandbox::gc(&docker)
                .await
                .map_err(|e| miette::miette!("{e}"))?;
            if format == SimpleFormat::Json {
                print_json(&removed);
            } else {
                print(&format!("removed {} sandbox objects\n", removed.len()));
            }
        }
    }
    Ok(Exit::Ok)
}

/// `vacsine pin FILE`: the pin of a certificate.
pub(crate) fn pin(cert: &std::path::Path, format: SimpleFormat) -> miette::Result<Exit> {
    let pin = vacsine_contract::tls::pin_of_file(cert).map_err(|e| miette::miette!("{e:#}"))?;
    if format == SimpleFormat::Json {
        print_json(&serde_json::json!({ "pin": pin, "file": cert }));
    } else {
        println!("{pin}");
    }
    Ok(Exit::Ok)
}

pub(crate) fn schema(kind: SchemaKind) -> miette::Result<Exit> {
    let s = match kind {
        SchemaKind::Policy => schemars::schema_for!(vacsine_core::policy::Policy),
        SchemaKind::Target => schemars::schema_for!(vacsine_core::target::Target),
        SchemaKind::Workflow => {
            let registry = vacsine_engine::executor::Registry::default();
            print_json(&vacsine_engine::reference::workflow_schema(&registry));
            return Ok(Exit::Ok);
        }
        SchemaKind::Executors => {
            let registry = vacsine_engine::executor::Registry::default();
            print!(
                "{}",
                vacsine_engine::reference::executor_reference(&registry)
            );
            return Ok(Exit::Ok);
        }
    };
    print_json(&s);
    Ok(Exit::Ok)
}

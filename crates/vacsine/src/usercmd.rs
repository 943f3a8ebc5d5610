//! `vacsine user add|list|revoke` (issue 17): the people allowed into the web console, each
//! with a token of their own and a role. Through the operator API, like `vacsine bouncer`.

use crate::cli::{OperatorConn, SimpleFormat, UserAction};
use crate::exit::Exit;
use crate::orch::{client, err};
use crate::output::print_json;
use vacsine_orch::server::console::{self, AddUser, UserCreated, UserList, UserRevoked};

fn line(u: &console::UserView) -> String {
    match &u.revoked {
        Some(t) => format!("{} ({}): revoked {t}", u.name, u.role),
        None => format!("{} ({}): added {}", u.name, u.role, u.created),
    }
}

/// `vacsine user …`.
pub async fn user(
    action: UserAction,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let c = client(conn)?;
    match action {
        UserAction::Add { name, role } => {
            let v: UserCreated = c
                .post(console::users::OP_USERS, &AddUser { name, role })
                .await
                .map_err(err)?;
            match format {
                SimpleFormat::Json => print_json(&v),
                SimpleFormat::Human => {
                    println!(
                        "user {} added as {}; their console token (shown once, give it to them):",
                        v.user.name, v.user.role
                    );
                    println!("{}", v.token);
                    println!("they log in at <orchestrator URL>/console/ with it");
                }
            }
        }
        UserAction::List => {
            let l: UserList = c
                .get_query(console::users::OP_USERS, &[])
                .await
                .map_err(err)?;
            match format {
                SimpleFormat::Json => print_json(&l.users),
                SimpleFormat::Human => {
                    if l.users.is_empty() {
                        println!("no user (`vacsine user add NAME --role viewer` adds one)");
                    }
                    for u in &l.users {
                        println!("{}", line(u));
                    }
                }
            }
        }
        UserAction::Revoke { name } => {
            let v: UserRevoked = c
                .post(
                    &format!("{}/{name}/revoke", console::users::OP_USERS),
                    &serde_json::json!({}),
                )
                .await
                .map_err(err)?;
            match format {
                SimpleFormat::Json => print_json(&v),
                SimpleFormat::Human => println!(
                    "user {} revoked: their token is refused, {} console session(s) ended",
                    v.user.name, v.sessions_ended
                ),
            }
        }
    }
    Ok(Exit::Ok)
}

//! `vacsine approvals`, `vacsine approve ID`, `vacsine deny ID` (issue 16, `approval:
//! required`): what orchestrated Responses asked for, waiting for an operator.

use crate::cli::{OperatorConn, SimpleFormat};
use crate::exit::Exit;
use crate::orch::{client, err};
use crate::output::print_json;
use vacsine_contract::proto;

/// `vacsine approvals`.
pub async fn list(conn: &OperatorConn, format: SimpleFormat) -> miette::Result<Exit> {
    let c = client(conn)?;
    let l: proto::ApprovalList = c.get(proto::OP_APPROVALS).await.map_err(err)?;
    match format {
        SimpleFormat::Json => print_json(&l.approvals),
        SimpleFormat::Human => {
            if l.approvals.is_empty() {
                println!("no approval");
            }
            for a in &l.approvals {
                let when = match a.state.as_str() {
                    "awaiting" => format!("expires {}", a.expires_at),
                    "expired" => format!("expired {}", a.expires_at),
                    "unsigned" => format!(
                        "refused, cannot be approved: {}",
                        a.refused.as_deref().unwrap_or_default()
                    ),
                    _ => a.settled_at.clone().unwrap_or_default(),
                };
                println!(
                    "{} {:<8} {} (response {}, event at {}) {}",
                    a.id.get(..12).unwrap_or(&a.id),
                    a.state,
                    a.what,
                    a.response,
                    a.site,
                    when
                );
            }
        }
    }
    Ok(Exit::Ok)
}

/// `vacsine approve ID` / `vacsine deny ID`; `ID` may be a unique prefix of 6 or more.
pub async fn settle(
    id: &str,
    approve: bool,
    conn: &OperatorConn,
    format: SimpleFormat,
) -> miette::Result<Exit> {
    let c = client(conn)?;
    let id = id.trim();
    let full = if id.len() == 64 {
        id.to_string()
    } else {
        let l: proto::ApprovalList = c.get(proto::OP_APPROVALS).await.map_err(err)?;
        let hits: Vec<&proto::ApprovalView> = l
            .approvals
            .iter()
            .filter(|a| id.len() >= 6 && a.id.starts_with(id))
            .collect();
        match hits.as_slice() {
            [one] => one.id.clone(),
            [] => {
                return Err(miette::miette!(
                    help = "`vacsine approvals` lists them (give at least 6 characters of an id)",
                    "no approval whose id starts with `{id}`"
                ))
            }
            _ => {
                return Err(miette::miette!(
                    help = "give more characters of the id",
                    "`{id}` starts {} approvals' ids",
                    hits.len()
                ))
            }
        }
    };
    let body = proto::Settle {
        decision: if approve { "approve" } else { "deny" }.into(),
    };
    let v: proto::ApprovalView = c
        .post(&format!("{}/{full}", proto::OP_APPROVALS), &body)
        .await
        .map_err(err)?;
    match format {
        SimpleFormat::Json => print_json(&v),
        SimpleFormat::Human => println!(
            "{} {}: {}",
            v.id,
            v.state,
            match (approve, v.held.decision.is_some()) {
                (true, true) => format!(
                    "{} is a decision now, fanned out to {}",
                    v.what,
                    if v.scope.is_empty() {
                        "every site".to_string()
                    } else {
                        v.scope.join(", ")
                    }
                ),
                (true, false) => format!("{} submitted to site {}", v.what, v.site),
                (false, _) => format!("{} will never run", v.what),
            }
        ),
    }
    Ok(Exit::Ok)
}

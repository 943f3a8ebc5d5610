//! Following a run at the orchestrator, once for every command that does (`run --site`,
//! `run NAME --site`, `enforce --site`): long polls of the run's records after the last one
//! seen, an unreachable orchestrator waited out (said once on stderr, and when it is back),
//! until the run ended and no record is left.

use crate::output::RecordPrinter;
use std::io::Write;
use std::time::Duration;
use vacsine_contract::client::{CallError, OperatorClient};
use vacsine_contract::proto;

/// How long one poll waits at the orchestrator for a new record.
const WAIT_MS: u64 = 20_000;

/// Follow run `id`: `on_records` gets each batch of records as it arrives; returns the run
/// once it ended and every record was given. An error other than an unreachable
/// orchestrator ends the follow.
pub async fn follow_run(
    c: &OperatorClient,
    id: &str,
    mut on_records: impl FnMut(&[proto::SeqRecord]),
) -> Result<proto::RunView, CallError> {
    let mut after = 0i64;
    let mut unreachable = false;
    loop {
        let path = format!("{}/{id}?after={after}&wait_ms={WAIT_MS}", proto::OP_RUNS);
        let r: proto::RunRecords = match c.get(&path).await {
            Ok(r) => {
                if unreachable {
                    eprintln!("orchestrator reachable again");
                    unreachable = false;
                }
                r
            }
            Err(CallError::Unreachable(m)) => {
                if !unreachable {
                    eprintln!("orchestrator unreachable ({m}); waiting for it");
                    unreachable = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        if let Some(last) = r.records.iter().map(|s| s.seq).max() {
            after = after.max(last);
        }
        on_records(&r.records);
        if vacsine_orch::store::status::is_final(&r.run.status) && r.records.is_empty() {
            return Ok(r.run);
        }
    }
}

/// Records as they arrive, to `out`, through `printer` (the step-record table, or each
/// record's JSON).
pub fn write_records(
    out: &mut impl Write,
    records: &[proto::SeqRecord],
    printer: &mut RecordPrinter,
) {
    for s in records {
        printer.print(out, &s.record);
    }
    let _ = out.flush();
}

//! Records too large for where they go (an upload, the store) are cut to fit, never dropped:
//! their longest texts are cut, each to the same length, as long as possible, and marked with
//! how much was cut, by whom and where the whole text is. One place for the agent's outbox
//! (`agent/outbox.rs`) and the orchestrator's own records (runs spanning sites,
//! `server/spanning.rs`).

use serde_json::Value;

/// The largest step record the orchestrator stores of its own (runs spanning sites): what an
/// agent's upload may carry, so no record of either kind is larger than the other's.
pub const MAX_STORED_RECORD: usize = crate::proto::MAX_AGENT_PLAINTEXT - 1024;

/// Who cut the orchestrator's own records, and where the whole text is.
pub const CUT_BY_ORCHESTRATOR: &str = "the vacsine orchestrator to fit the store's record limit; the whole text is in its journal of runs spanning sites (spanning.db)";

/// The text that replaces what was cut from a string: `by` names who cut it and where the
/// whole text is.
fn cut_marker(cut: usize, by: &str) -> String {
    format!("\n[… {cut} bytes cut by {by}]")
}

/// `v` with every string longer than `keep` bytes cut to `keep` (at a character boundary) and
/// marked; the bytes cut.
fn cut_strings(v: &mut Value, keep: usize, by: &str) -> usize {
    match v {
        Value::String(s) if s.len() > keep => {
            let mut at = keep;
            while !s.is_char_boundary(at) {
                at -= 1;
            }
            let cut = s.len() - at;
            s.truncate(at);
            s.push_str(&cut_marker(cut, by));
            cut
        }
        Value::Array(a) => a.iter_mut().map(|x| cut_strings(x, keep, by)).sum(),
        Value::Object(m) => m.values_mut().map(|x| cut_strings(x, keep, by)).sum(),
        _ => 0,
    }
}

fn longest_string(v: &Value) -> usize {
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(longest_string).max().unwrap_or(0),
        Value::Object(m) => m.values().map(longest_string).max().unwrap_or(0),
        _ => 0,
    }
}

/// `v` with its longest strings cut (each to the same length, as long as possible) so that
/// its JSON fits in `room` bytes, and the bytes cut; `None` when even cutting every string
/// does not make it fit.
pub fn cut_to_fit(v: &Value, room: usize, by: &str) -> Option<(Value, usize)> {
    let fits = |keep: usize| {
        let mut c = v.clone();
        let cut = cut_strings(&mut c, keep, by);
        let n = serde_json::to_vec(&c).map_or(usize::MAX, |b| b.len());
        (n <= room).then_some((c, cut))
    };
    // The largest length kept that fits: binary search over [0, longest).
    let (mut lo, mut hi) = (0usize, longest_string(v));
    let mut best = fits(0)?;
    while lo + 1 < hi {
        let mid = lo + (hi - lo) / 2;
        match fits(mid) {
            Some(r) => {
                best = r;
                lo = mid;
            }
            None => hi = mid,
        }
    }
    Some(best)
}

/// A step record as the orchestrator stores one of its own: as it is when it fits in
/// [`MAX_STORED_RECORD`]; else with its longest texts cut and marked; else (its structure
/// alone too large: a huge list of outputs) with its outputs and messages left out and its
/// error saying so. Never refused, never dropped.
pub fn stored_record(r: &vacsine_core::record::StepRecord) -> String {
    fit_record(r, MAX_STORED_RECORD, CUT_BY_ORCHESTRATOR)
}

fn fit_record(r: &vacsine_core::record::StepRecord, room: usize, by: &str) -> String {
    let whole = serde_json::to_string(r).unwrap_or_default();
    if whole.len() <= room {
        return whole;
    }
    let v = serde_json::to_value(r).unwrap_or(Value::Null);
    if let Some((cut, n)) = cut_to_fit(&v, room, by) {
        tracing::warn!(
            "record {}#{} of run {}: {} bytes, larger than a stored record may be: {n} byte(s) of its longest texts cut (marked)",
            r.step_id, r.attempt, r.run_id, whole.len()
        );
        return cut.to_string();
    }
    let mut bare = r.clone();
    bare.outputs.clear();
    bare.messages.clear();
    bare.error = Some(format!(
        "{}[this record was {} bytes, too large to store even with its texts cut: its outputs and messages were left out by {by}]",
        bare.error.as_deref().map(|e| format!("{e}\n")).unwrap_or_default(),
        whole.len()
    ));
    tracing::warn!(
        "record {}#{} of run {}: {} bytes even with its texts cut: stored without its outputs and messages (marked)",
        r.step_id,
        r.attempt,
        r.run_id,
        whole.len()
    );
    let v = serde_json::to_value(&bare).unwrap_or(Value::Null);
    cut_to_fit(&v, room, by)
        .map(|(c, _)| c.to_string())
        .unwrap_or_else(|| serde_json::to_string(&bare).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vacsine_core::record::{StepRecord, StepStatus};

    fn record() -> StepRecord {
        let mut r = StepRecord::started(
            "run-1",
            "big",
            1,
            Some("site-a"),
            "command",
            "2026-01-01T00:00:00.000Z".into(),
        );
        r.status = StepStatus::Succeeded;
        r.finished_at = Some(r.started_at.clone());
        r
    }

    #[test]
    fn a_record_that_fits_is_stored_as_it_is() {
        let r = record();
        assert_eq!(stored_record(&r), serde_json::to_string(&r).unwrap());
    }

    #[test]
    fn a_huge_output_is_cut_marked_and_the_record_still_reads() {
        let mut r = record();
        r.outputs
            .insert("dump".into(), Value::String("é".repeat(4 << 20)));
        r.stdout = "o".repeat(100);
        let s = stored_record(&r);
        assert!(s.len() <= MAX_STORED_RECORD, "{}", s.len());
        let back: StepRecord = serde_json::from_str(&s).unwrap();
        let dump = back.outputs["dump"].as_str().unwrap();
        assert!(
            dump.contains("bytes cut by the vacsine orchestrator"),
            "marked"
        );
        assert!(dump.len() > MAX_STORED_RECORD / 2, "as much kept as fits");
        assert_eq!(back.stdout, r.stdout, "short texts kept whole");
        assert_eq!((back.step_id, back.status), (r.step_id, r.status));
    }

    #[test]
    fn a_record_too_large_even_cut_is_kept_without_outputs_and_says_so() {
        let mut r = record();
        // Many small outputs: cutting texts cannot make the structure fit.
        for i in 0..40_000 {
            r.outputs.insert(format!("k{i:06}"), Value::from(i));
        }
        let s = fit_record(&r, 64 * 1024, CUT_BY_ORCHESTRATOR);
        assert!(s.len() <= 64 * 1024);
        let back: StepRecord = serde_json::from_str(&s).unwrap();
        assert!(back.outputs.is_empty());
        assert!(back
            .error
            .unwrap()
            .contains("too large to store even with its texts cut"));
        assert_eq!(back.status, StepStatus::Succeeded);
    }
}

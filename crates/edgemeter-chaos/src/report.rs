//! Runs the simulation's checker over gathered evidence, then compares the
//! cloud's totals with the tuples it holds, and renders the verdict: one
//! JSON line with the four counts, in a fixed field order.

use crate::evidence::Gathered;
use crate::totals::check_totals;
use edgemeter_checker::checker::{check, Evidence, Findings, Kind};

/// The four kinds the verdict reports, in its field order.
pub const VERDICT_KINDS: [Kind; 4] = [
    Kind::Lost,
    Kind::Unexpected,
    Kind::Duplicated,
    Kind::Changed,
];

/// Checks `gathered` as the simulation checks a seed, with nothing
/// excused: no cache loss is on record (epoch 0, and no write log), so an
/// acknowledged tuple missing from the cloud is lost whatever happened to
/// Redis. Keys under the tuple pattern that are not tuples count as
/// unexpected, and totals that differ from the held tuples as
/// [`check_totals`] says.
pub fn findings(gathered: &Gathered, edge_id: &str) -> Findings {
    let mut findings = check(&Evidence {
        edge_id,
        oracle: &gathered.oracle,
        edge_rows: &gathered.edge_rows,
        cloud: &gathered.cloud,
        state_totals: None,
        edge_records: None,
        recent: None,
        household_sets: None,
    });
    check_totals(&gathered.totals, &gathered.cloud, &mut findings);
    for key in &gathered.malformed_keys {
        findings.add(Kind::Unexpected, || {
            format!("redis key {key} is not a tuple hash")
        });
    }
    findings
}

/// `{"cycles": N, "tuples": T, "lost": 0, "unexpected": 0, "duplicated": 0, "changed": 0}`
pub fn verdict_line(cycles: u32, tuples: usize, findings: &Findings) -> String {
    let mut line = format!("{{\"cycles\": {cycles}, \"tuples\": {tuples}");
    for kind in VERDICT_KINDS {
        let count = findings.by_kind.get(&kind).map_or(0, |(count, _)| *count);
        line.push_str(&format!(", \"{}\": {count}", kind.name()));
    }
    line.push('}');
    line
}

/// Whether every one of the four counts is zero.
pub fn passed(findings: &Findings) -> bool {
    VERDICT_KINDS
        .iter()
        .all(|kind| !findings.by_kind.contains_key(kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_verdict_line_has_the_documented_shape() {
        let mut findings = Findings::default();
        assert_eq!(
            verdict_line(3, 10, &findings),
            r#"{"cycles": 3, "tuples": 10, "lost": 0, "unexpected": 0, "duplicated": 0, "changed": 0}"#
        );
        assert!(passed(&findings));
        findings.add(Kind::Duplicated, || "twice".to_owned());
        let line = verdict_line(1, 2, &findings);
        assert!(line.contains(r#""duplicated": 1"#), "{line}");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["tuples"], 2);
        assert!(!passed(&findings));
    }
}

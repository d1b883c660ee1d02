//! Goal: the shipped Grafana dashboard (`deploy/grafana-edgemeter.json`)
//! queries only metrics the binaries export, and queries each of them, so
//! a renamed metric cannot leave an empty panel behind. Method: every
//! `expr` of the JSON, its `edgemeter_*` names taken out (a histogram's
//! `_bucket`, `_sum` and `_count` series count as the histogram), held
//! against `edgemeter::metrics`'s lists, which the end-to-end test
//! `metrics.rs` holds against real scrapes.

use edgemeter::metrics::{CLOUD_METRICS, EDGE_METRICS};
use std::collections::BTreeSet;
use std::path::Path;

/// Every string under a key `expr`, anywhere in `value`.
fn exprs(value: &serde_json::Value, found: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("expr", serde_json::Value::String(expr)) => found.push(expr.clone()),
                    _ => exprs(inner, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| exprs(item, found)),
        _ => {}
    }
}

/// The `edgemeter_*` metric names in a PromQL expression.
fn names_in(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("edgemeter_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

/// The exported name a series belongs to.
fn family<'a>(name: &'a str, exported: &BTreeSet<&str>) -> &'a str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .filter(|family| exported.contains(family))
        .unwrap_or(name)
}

#[test]
fn the_dashboard_queries_exactly_what_the_binaries_export() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana-edgemeter.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard is shipped");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let mut found = Vec::new();
    exprs(&dashboard, &mut found);
    assert!(found.len() >= 10, "the panels' queries: {found:?}");
    let exported: BTreeSet<&str> = EDGE_METRICS.iter().chain(&CLOUD_METRICS).copied().collect();
    let mut queried = BTreeSet::new();
    for expr in &found {
        let names = names_in(expr);
        assert!(!names.is_empty(), "{expr} queries no EdgeMeter metric");
        for name in names {
            let name = family(&name, &exported).to_owned();
            assert!(
                exported.contains(name.as_str()),
                "{expr} queries {name}, which neither binary exports"
            );
            queried.insert(name);
        }
    }
    let unqueried: Vec<&&str> = exported
        .iter()
        .filter(|name| !queried.contains(**name))
        .collect();
    assert!(unqueried.is_empty(), "no panel shows {unqueried:?}");
    for panel in dashboard["panels"].as_array().expect("panels") {
        if panel["type"] != "row" {
            let description = panel["description"].as_str().unwrap_or("");
            assert!(
                description.contains('?'),
                "panel {} says which question it answers",
                panel["title"]
            );
        }
    }
}

#[test]
fn names_are_taken_out_of_queries() {
    assert_eq!(
        names_in("histogram_quantile(0.5, sum by (le) (rate(edgemeter_batch_round_trip_seconds_bucket[5m])))"),
        ["edgemeter_batch_round_trip_seconds_bucket"]
    );
    assert_eq!(
        names_in(r#"edgemeter_outbox_tuples{state="queued"} + edgemeter_x"#),
        ["edgemeter_outbox_tuples", "edgemeter_x"]
    );
    let exported = BTreeSet::from(["edgemeter_batch_round_trip_seconds"]);
    assert_eq!(
        family("edgemeter_batch_round_trip_seconds_bucket", &exported),
        "edgemeter_batch_round_trip_seconds"
    );
    assert_eq!(
        family("edgemeter_other_count", &exported),
        "edgemeter_other_count"
    );
}

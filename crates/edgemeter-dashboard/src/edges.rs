//! `GET /api/edges`: per edge, what the cache remembers (last heartbeat,
//! tuples received, last tuple time) joined with what the cloud's link layer
//! knows right now (connected or not, and the backlog the edge's last
//! heartbeat reported, if it reported one: edges of this version do).

use crate::cache_call;
use crate::{ApiError, DashboardState, EdgeLink};
use axum::extract::State;
use axum::Json;
use edgemeter_cloud::{Cache, EdgeRecord};
use serde::Serialize;
use std::collections::BTreeMap;

/// The most edges one call lists, in edge id order. The list grows with
/// edges, not tuples; a deployment has a handful, and past a thousand panels
/// the page is unreadable anyway. The rest are left off and logged.
pub const EDGES_LISTED_MAX: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EdgeRow {
    pub edge_id: String,
    /// As the cloud's link layer says now; `false` for an edge it does not know.
    pub connected: bool,
    /// Unix ms of the last heartbeat the cloud recorded, if any.
    pub last_heartbeat_ms: Option<i64>,
    /// Tuples stored from this edge, each counted once.
    pub tuples: u64,
    /// Unix ms at which the cloud stored this edge's latest tuple, if any.
    pub last_tuple_ms: Option<i64>,
    /// Tuples the edge still holds for the cloud (queued and sent), when
    /// its heartbeats report it.
    pub backlog_tuples: Option<u64>,
    /// Of those, the tuples not sent yet.
    pub queued_tuples: Option<u64>,
    /// Of those, the tuples sent and waiting for their acknowledgement.
    pub sent_tuples: Option<u64>,
    /// How long the oldest of them had waited at the edge's last
    /// heartbeat, in ms (0 with no backlog).
    pub oldest_unacked_age_ms: Option<u64>,
}

pub async fn get_edges<C: Cache>(
    State(state): State<DashboardState<C>>,
) -> Result<Json<Vec<EdgeRow>>, ApiError> {
    let records = cache_call::bounded(state.cache.edges()).await?;
    let links = (state.edge_links)();
    Ok(Json(edge_rows(records, links)))
}

/// Joins the cache's records and the live links by edge id, in id order.
pub fn edge_rows(records: Vec<EdgeRecord>, links: Vec<EdgeLink>) -> Vec<EdgeRow> {
    let mut rows: BTreeMap<String, EdgeRow> = BTreeMap::new();
    for record in records {
        let row = rows
            .entry(record.edge_id.clone())
            .or_insert_with(|| empty_row(&record.edge_id));
        row.last_heartbeat_ms = record.last_heartbeat_ms;
        row.tuples = record.tuples;
        row.last_tuple_ms = record.last_tuple_ms;
    }
    for link in links {
        let row = rows
            .entry(link.edge_id.clone())
            .or_insert_with(|| empty_row(&link.edge_id));
        row.connected = link.connected;
        row.backlog_tuples = link.backlog.map(|backlog| backlog.unacked());
        row.queued_tuples = link.backlog.map(|backlog| backlog.queued);
        row.sent_tuples = link.backlog.map(|backlog| backlog.sent);
        row.oldest_unacked_age_ms = link.backlog.map(|backlog| backlog.oldest_unacked_age_ms);
    }
    let known = rows.len();
    if known > EDGES_LISTED_MAX {
        tracing::warn!(
            known,
            listed = EDGES_LISTED_MAX,
            "too many edges to list; the rest are left off"
        );
    }
    let listed: Vec<EdgeRow> = rows.into_values().take(EDGES_LISTED_MAX).collect();
    assert!(listed.len() <= EDGES_LISTED_MAX);
    listed
}

fn empty_row(edge_id: &str) -> EdgeRow {
    EdgeRow {
        edge_id: edge_id.to_owned(),
        connected: false,
        last_heartbeat_ms: None,
        tuples: 0,
        last_tuple_ms: None,
        backlog_tuples: None,
        queued_tuples: None,
        sent_tuples: None,
        oldest_unacked_age_ms: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_links_join_by_edge_id() {
        let records = vec![
            EdgeRecord {
                edge_id: "edge-b".into(),
                last_heartbeat_ms: Some(10),
                tuples: 7,
                last_tuple_ms: Some(9),
            },
            EdgeRecord {
                edge_id: "edge-a".into(),
                last_heartbeat_ms: None,
                tuples: 1,
                last_tuple_ms: Some(3),
            },
        ];
        let links = vec![
            EdgeLink {
                edge_id: "edge-b".into(),
                connected: true,
                backlog: Some(edgemeter_wire::Backlog {
                    queued: 3,
                    sent: 1,
                    oldest_unacked_age_ms: 7_000,
                }),
            },
            EdgeLink {
                edge_id: "edge-c".into(),
                connected: true,
                backlog: None,
            },
        ];
        let rows = edge_rows(records, links);
        let ids: Vec<&str> = rows.iter().map(|row| row.edge_id.as_str()).collect();
        assert_eq!(ids, ["edge-a", "edge-b", "edge-c"]);
        assert!(
            !rows[0].connected,
            "an edge the links do not know is not connected"
        );
        assert_eq!(
            (rows[1].tuples, rows[1].backlog_tuples, rows[1].connected),
            (7, Some(4), true)
        );
        assert_eq!(
            (
                rows[1].queued_tuples,
                rows[1].sent_tuples,
                rows[1].oldest_unacked_age_ms
            ),
            (Some(3), Some(1), Some(7_000))
        );
        assert_eq!((rows[2].tuples, rows[2].last_heartbeat_ms), (0, None));
        assert_eq!(rows[2].backlog_tuples, None, "an edge that reports none");
    }

    #[test]
    fn at_most_edges_listed_max_are_listed_in_id_order() {
        let links: Vec<EdgeLink> = (0..EDGES_LISTED_MAX + 5)
            .rev()
            .map(|index| EdgeLink {
                edge_id: format!("edge-{index:05}"),
                connected: true,
                backlog: None,
            })
            .collect();
        let rows = edge_rows(Vec::new(), links);
        assert_eq!(rows.len(), EDGES_LISTED_MAX);
        assert_eq!(rows[0].edge_id, "edge-00000");
        assert_eq!(
            rows[EDGES_LISTED_MAX - 1].edge_id,
            format!("edge-{:05}", EDGES_LISTED_MAX - 1)
        );
    }
}

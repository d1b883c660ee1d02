//! `edgemeter status`: the delivery counts of an edge database, read
//! without writing to it (the edge may be running), and the live state of
//! the edge running on it, asked over its status socket (see
//! [`crate::status_socket`]): whether it consumes or has paused because
//! SQLite refused a write, which no file on a full disk could record.

use crate::cli::StatusArgs;
use crate::command_error::CommandError;
use crate::status_socket::{self, CLIENT_TIMEOUT};
use edgemeter_edge::{Outbox, StatusCounts};
use edgemeter_store::SqliteOutbox;

pub fn run(args: StatusArgs) -> Result<(), CommandError> {
    let counts = read(&args.db)?;
    let edge = status_socket::query(&args.db, CLIENT_TIMEOUT);
    if args.json {
        println!("{}", to_json_with_edge(&counts, edge));
    } else {
        println!("queued (flag 0):       {}", counts.queued);
        println!("sent (flag 1):         {}", counts.sent);
        println!("acknowledged (flag 2): {}", counts.acked);
        println!("rejected records:      {}", counts.rejected);
        println!("  of which late:       {}", counts.late);
        println!("conflicts:             {}", counts.conflicts);
        for line in edge_lines(&edge, &status_socket::socket_path(&args.db)) {
            println!("{line}");
        }
    }
    Ok(())
}

pub fn read(db: &std::path::Path) -> Result<StatusCounts, CommandError> {
    if !db.exists() {
        // Not a permissions problem: no edge has made this database yet.
        return Err(CommandError::Config(format!(
            "no edge database at {}: no edge has run with this --db yet; start \
             `edgemeter edge --db {}`, or pass the --db a running edge uses",
            db.display(),
            db.display()
        )));
    }
    let mut outbox = SqliteOutbox::open_read_only(db).map_err(CommandError::store(db))?;
    outbox.status().map_err(CommandError::store(db))
}

/// The database's counts, the keys scripts read. `late` counts the
/// readings kept in `rejected` because their window was already stored;
/// they are part of `rejected`.
/// `conflicts` counts the
/// tuples the cloud answered it holds other values for.
pub fn to_json(counts: &StatusCounts) -> serde_json::Value {
    serde_json::json!({
        "queued": counts.queued,
        "sent": counts.sent,
        "acked": counts.acked,
        "rejected": counts.rejected,
        "late": counts.late,
        "conflicts": counts.conflicts,
    })
}

/// The counts plus the live state under `edge`: `{"running": false}` when
/// no edge answers, else what the edge reported.
pub fn to_json_with_edge(counts: &StatusCounts, edge: serde_json::Value) -> serde_json::Value {
    let mut value = to_json(counts);
    value["edge"] = edge;
    value
}

/// The human form of the live state.
pub fn edge_lines(edge: &serde_json::Value, socket: &std::path::Path) -> Vec<String> {
    if edge["running"] != true {
        let why = match edge["error"].as_str() {
            Some(error) => format!("no answer: {error}"),
            None => format!("nothing answers on {}", socket.display()),
        };
        return vec![format!("edge:                  not running ({why})")];
    }
    let consumption = if edge["consuming"] == true {
        "active"
    } else {
        "paused (SQLite refused a write; see the edge's log)"
    };
    let intake = if edge["intake_alarm"] == true {
        "ALARM: every record of the last minute was rejected; the edge stores nothing \
         (see table rejected, and --readings if the producer is the original's)"
    } else {
        "records become readings"
    };
    let cloud = if edge["connected"] == true {
        "connected"
    } else {
        "not connected"
    };
    let mut lines = vec![
        format!(
            "edge:                  running ({}, pid {})",
            edge["edge_id"].as_str().unwrap_or("?"),
            edge["pid"]
        ),
        format!("consumption:           {consumption}"),
        format!("intake:                {intake}"),
        format!("cloud:                 {cloud}"),
    ];
    lines.extend(node_lines(edge));
    lines.push(format!("store errors:          {}", edge["store_errors"]));
    lines
}

/// One line per cloud node when the edge has several: which answer.
fn node_lines(edge: &serde_json::Value) -> Vec<String> {
    let nodes = edge["cloud_nodes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if nodes.len() < 2 {
        return Vec::new();
    }
    nodes
        .iter()
        .map(|node| {
            let state = if node["connected"] == true {
                "answers"
            } else {
                "does not answer"
            };
            format!(
                "  cloud node:          {} {state}",
                node["node"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn counts() -> StatusCounts {
        StatusCounts {
            queued: 1,
            sent: 2,
            acked: 3,
            rejected: 4,
            late: 1,
            conflicts: 5,
            oldest_unacked_queued_ms: Some(7),
        }
    }

    #[test]
    fn prints_the_documented_keys() {
        assert_eq!(
            to_json(&counts()).to_string(),
            r#"{"acked":3,"conflicts":5,"late":1,"queued":1,"rejected":4,"sent":2}"#
        );
        let with_edge = to_json_with_edge(&counts(), serde_json::json!({"running": false}));
        assert_eq!(
            with_edge.to_string(),
            r#"{"acked":3,"conflicts":5,"edge":{"running":false},"late":1,"queued":1,"rejected":4,"sent":2}"#
        );
    }

    #[test]
    fn a_paused_edge_says_so_and_why() {
        let socket = Path::new("/data/edge.db.status.sock");
        let mut edge = serde_json::json!({
            "running": true, "edge_id": "edge-7", "pid": 42,
            "consuming": false, "connected": true, "store_errors": 3,
        });
        let lines = edge_lines(&edge, socket);
        assert_eq!(lines[0], "edge:                  running (edge-7, pid 42)");
        assert_eq!(
            lines[1],
            "consumption:           paused (SQLite refused a write; see the edge's log)"
        );
        assert_eq!(lines[2], "intake:                records become readings");
        assert_eq!(lines[3], "cloud:                 connected");
        assert_eq!(lines[4], "store errors:          3");
        edge["consuming"] = true.into();
        assert_eq!(
            edge_lines(&edge, socket)[1],
            "consumption:           active"
        );
        edge["intake_alarm"] = true.into();
        assert!(
            edge_lines(&edge, socket)[2].contains("every record of the last minute was rejected"),
            "an edge that stores nothing says so"
        );
    }

    /// Goal: an edge with several cloud nodes lists each and whether it
    /// answers; with one node the output is as it always was.
    #[test]
    fn several_cloud_nodes_are_listed_one_line_each() {
        let socket = Path::new("/data/edge.db.status.sock");
        let mut edge = serde_json::json!({
            "running": true, "edge_id": "edge-7", "pid": 42,
            "consuming": true, "connected": true, "store_errors": 0,
            "cloud_nodes": [{"node": "c1:1:2", "connected": true}],
        });
        assert_eq!(
            edge_lines(&edge, socket).len(),
            5,
            "one node: no node lines"
        );
        edge["cloud_nodes"] = serde_json::json!([
            {"node": "c1:1:2", "connected": true},
            {"node": "c2:1:2", "connected": false},
        ]);
        let lines = edge_lines(&edge, socket);
        assert_eq!(lines[3], "cloud:                 connected");
        assert_eq!(lines[4], "  cloud node:          c1:1:2 answers");
        assert_eq!(lines[5], "  cloud node:          c2:1:2 does not answer");
        assert_eq!(lines[6], "store errors:          0");
    }

    #[test]
    fn no_edge_is_named_with_the_socket_it_looked_at() {
        let socket = Path::new("/data/edge.db.status.sock");
        let lines = edge_lines(&serde_json::json!({"running": false}), socket);
        assert_eq!(
            lines,
            vec![
                "edge:                  not running (nothing answers on /data/edge.db.status.sock)"
            ]
        );
        let garbled = serde_json::json!({"running": false, "error": "not a status answer"});
        assert!(edge_lines(&garbled, socket)[0].contains("no answer: not a status answer"));
    }

    #[test]
    fn a_missing_database_names_the_flag() {
        let error = read(std::path::Path::new("/no/such/edge.db")).unwrap_err();
        assert!(error.to_string().contains("--db"), "{error}");
        assert!(
            error.to_string().contains("no edge has run"),
            "a database not made yet is not a permissions problem: {error}"
        );
        assert!(!error.to_string().contains("permissions"), "{error}");
    }
}

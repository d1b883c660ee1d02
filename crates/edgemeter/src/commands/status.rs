//! `edgemeter status`: the delivery counts of an edge database, read
//! without writing to it (the edge may be running).

use crate::cli::StatusArgs;
use crate::command_error::CommandError;
use edgemeter_edge::{Outbox, StatusCounts};
use edgemeter_store::SqliteOutbox;

pub fn run(args: StatusArgs) -> Result<(), CommandError> {
    let counts = read(&args.db)?;
    if args.json {
        println!("{}", to_json(&counts));
    } else {
        println!("queued (flag 0):       {}", counts.queued);
        println!("sent (flag 1):         {}", counts.sent);
        println!("acknowledged (flag 2): {}", counts.acked);
        println!("rejected records:      {}", counts.rejected);
    }
    Ok(())
}

pub fn read(db: &std::path::Path) -> Result<StatusCounts, CommandError> {
    let mut outbox = SqliteOutbox::open_read_only(db).map_err(CommandError::store(db))?;
    outbox.status().map_err(CommandError::store(db))
}

pub fn to_json(counts: &StatusCounts) -> serde_json::Value {
    serde_json::json!({
        "queued": counts.queued,
        "sent": counts.sent,
        "acked": counts.acked,
        "rejected": counts.rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_documented_keys() {
        let counts = StatusCounts {
            queued: 1,
            sent: 2,
            acked: 3,
            rejected: 4,
        };
        assert_eq!(
            to_json(&counts).to_string(),
            r#"{"acked":3,"queued":1,"rejected":4,"sent":2}"#
        );
    }

    #[test]
    fn a_missing_database_names_the_flag() {
        let error = read(std::path::Path::new("/no/such/edge.db")).unwrap_err();
        assert!(error.to_string().contains("--db"), "{error}");
    }
}

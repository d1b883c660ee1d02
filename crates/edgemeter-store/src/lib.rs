//! `edgemeter-store` is the edge's durable outbox in SQLite: the table
//! `power_averages` (the original's name, so its queries keep working) and
//! the table `rejected` for records that were not readings.
//!
//! Every [`Outbox`] call is one transaction. The database runs in WAL mode.
//! The store of closed windows ([`Outbox::store_closed`]) runs with
//! `synchronous=FULL`: its commit returns only once the WAL is on stable
//! storage, because the edge commits the readings' Kafka offsets right
//! after it, and a store lost in a power loss after that commit would lose
//! its windows for good, or rebuild one from part of its readings (a
//! window straddling the commit floor another household's open window
//! set). That costs one fsync per store, and the edge stores at most once
//! per `store_interval` (1 s) or 4,096 windows, so the store rate barely
//! moves (`cargo bench -p edgemeter-store --bench store_sync`). Keeping the
//! offsets in SQLite in the same transaction would also work, but needs a
//! consumer that seeks to them at start instead of the group's commits.
//!
//! Flag changes ([`Outbox::mark_sent`], [`Outbox::mark_acked`]) stay at
//! `synchronous=NORMAL`: a power loss may undo the last of them, which only
//! makes the edge send those tuples again, and the cloud stores by identity.
//! A process crash loses nothing committed at either setting. PRAGMA
//! synchronous cannot change inside a transaction, so it is set around the
//! store's (see NOTES.md for what FULL costs per transaction).
//!
//! The unique key on household and window (`UNIQUE (window_start,
//! node_id)`, the same constraint as the original's `UNIQUE(node_id,
//! window_start)`) is what makes a replayed reading unable to create a
//! second tuple or change a stored average. Its index leads with the window:
//! windows close in time order, so new entries land on the index's last
//! page, and a store of windows from fifty households writes one or two
//! index pages, not one per household. Led by the household, that store
//! wrote three times the WAL frames (`the_unique_index_grows_at_its_end`).
//!
//! Two columns serve a cloud that forgets (added to older databases by
//! [`SqliteOutbox::open`] when missing): `acked_epoch`, the epoch of the
//! cloud store's bucket each tuple was last acknowledged under (NULL for
//! tuples acknowledged before epochs existed), and `conflict`, set when the
//! cloud answered that it holds another average or sample count for the
//! tuple. The store has one epoch per bucket (`edgemeter_wire::bucket`),
//! random and distinct, so a tuple acknowledged under none of the current
//! bucket epochs is one whose bucket lost it: it is shipped again
//! (`acked_not_under`), and a tuple of an untouched bucket, whose epoch is
//! in the set, is not. No bucket column is needed. Acknowledged tuples are
//! kept for the edge's retention, then deleted in chunks
//! (`delete_acked_before`).
//!
//! The counts `status` reports (tuples at each flag, rejected records, late
//! readings, conflicts) are kept in the table `outbox_counts`, changed by
//! each write in its own transaction by what that write moved, so they are
//! exact (a rolled-back write moves nothing) and a reopen finds them as
//! committed. Reading them costs six rows, not a scan: the edge reads them
//! for every heartbeat and for `/metrics`. What a write moved is known from
//! its statements' change counts and, where a row's old flag matters, one
//! read of the rows it is about to write (pages it writes next anyway).
//! Triggers would keep the table with less code, but a trigger on the flag
//! makes SQLite copy every updated rowid into an ephemeral table first
//! (`every_write_runs_without_an_ephemeral_table` caught it), and a count
//! from ids (`sqlite_sequence` minus pending minus deleted) needs a
//! persistent count of deleted rows anyway. Every read-write open counts
//! the tables once and writes the counts afresh (one scan per start, in
//! the transaction that creates the table if it is missing), so a database
//! written meanwhile by a binary that did not keep them (an older one,
//! after a downgrade, or a hand edit) starts exact again, and a database
//! made before the table gets it. The scan costs about 0.2 s per million
//! rows with the file in the page cache (a week of 50 households is 3.5M). A read-only `status` of a database
//! without the table counts by scanning, as before. The
//! oldest unacknowledged tuple is the first entry of the partial index
//! `power_averages_unacked` (ids are assigned in queue order).
//!
//! The flag's CHECK is written as comparisons, not `sent IN (0, 1, 2)`:
//! SQLite builds an ephemeral table for an IN list of three or more on every
//! execution of every statement that writes the row, which was a fifth of
//! the cost of each insert and flag update (`every_write_runs_without_an_ephemeral_table`).

use edgemeter_edge::{
    AckOutcome, NewTuple, Outbox, RejectedRecord, StatusCounts, StoreError, StoreOutcome,
};
use edgemeter_env::{Bug, PlantedBugs};
use edgemeter_wire::{PostalCode, TupleAck, TupleOut, TupleOutcome, STORE_BUCKETS};
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use std::path::Path;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS power_averages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id      TEXT    NOT NULL,
    window_start INTEGER NOT NULL,
    average      REAL    NOT NULL,
    samples      INTEGER NOT NULL CHECK (samples > 0),
    postal_code  TEXT,
    sent         INTEGER NOT NULL DEFAULT 0 CHECK (sent = 0 OR sent = 1 OR sent = 2),
    queued_at    INTEGER NOT NULL,
    sent_at      INTEGER,
    acked_at     INTEGER,
    UNIQUE (window_start, node_id),
    CHECK ((sent = 2) = (postal_code IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS power_averages_unacked ON power_averages (id) WHERE sent < 2;
CREATE TABLE IF NOT EXISTS rejected (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    partition   INTEGER NOT NULL,
    offset      INTEGER NOT NULL,
    raw         BLOB    NOT NULL,
    kind        TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    rejected_at INTEGER NOT NULL,
    UNIQUE (partition, offset)
);
";

/// Columns added after the first schema, each with its definition: added
/// by `ALTER TABLE` to a database that lacks them, so an existing
/// EdgeMeter database keeps its tuples and gains them.
const ADDED_COLUMNS: [(&str, &str); 2] = [
    ("acked_epoch", "INTEGER"),
    ("conflict", "INTEGER NOT NULL DEFAULT 0"),
];

/// An index of the acknowledged rows that an earlier build kept for the
/// refill's scan and the retention sweep. It cost a B-tree insert on every
/// acknowledgement, the edge's hottest write, about a tenth of a backlog
/// drain; both scans walk the row ids instead (see
/// [`ACKED_NOT_UNDER_SQL`]), so it is dropped where it exists.
const DROP_ACKED_INDEX_SQL: &str = "DROP INDEX IF EXISTS power_averages_acked";

/// Keys of `outbox_counts`. The three flags are their own keys, so that a
/// trigger addresses a flag's count by the row's `sent` directly.
const COUNT_QUEUED: i64 = 0;
const COUNT_SENT: i64 = 1;
const COUNT_ACKED: i64 = 2;
const COUNT_REJECTED: i64 = 3;
const COUNT_LATE: i64 = 4;
const COUNT_CONFLICTS: i64 = 5;
const _: () = assert!(COUNT_QUEUED == 0 && COUNT_SENT == 1 && COUNT_ACKED == 2);

/// The counts table, one row per count, created and filled in one
/// transaction by [`ensure_counts`].
const COUNTS_TABLE_SQL: &str = "
CREATE TABLE outbox_counts (
    what INTEGER PRIMARY KEY,
    rows INTEGER NOT NULL CHECK (rows >= 0)
);";

/// Adds to one count, in the write's transaction.
const COUNTS_ADD_SQL: &str = "UPDATE outbox_counts SET rows = rows + ?2 WHERE what = ?1";

/// The flag and conflict of one row, read before a write that moves it.
const ROW_FLAGS_SQL: &str = "SELECT sent, conflict FROM power_averages WHERE id = ?1";

/// The flag and conflict of the row a planted REPLACE is about to delete.
const REPLACED_FLAGS_SQL: &str =
    "SELECT sent, conflict FROM power_averages WHERE window_start = ?1 AND node_id = ?2";

/// How many of a run of ids [`MARK_SENT_RUN_SQL`] moves from flag 0.
const QUEUED_IN_RUN_SQL: &str = "SELECT COUNT(*) FROM power_averages NOT INDEXED
     WHERE id BETWEEN ?1 AND ?2 AND sent = 0";

/// Fills the counts table from the tables: at every read-write open.
const COUNTS_FILL_SQL: &str = "
INSERT OR REPLACE INTO outbox_counts (what, rows) VALUES
    (0, (SELECT COUNT(*) FROM power_averages WHERE sent = 0)),
    (1, (SELECT COUNT(*) FROM power_averages WHERE sent = 1)),
    (2, (SELECT COUNT(*) FROM power_averages WHERE sent = 2)),
    (3, (SELECT COUNT(*) FROM rejected)),
    (4, (SELECT COUNT(*) FROM rejected WHERE kind = 'late')),
    (5, (SELECT COUNT(*) FROM power_averages WHERE conflict != 0));";

/// What `status` reads: six rows of the counts table.
const COUNTS_READ_SQL: &str = "SELECT what, rows FROM outbox_counts";

/// The queue time of the oldest unacknowledged tuple: the first entry of
/// the partial index of unacknowledged rows, one index step.
const OLDEST_UNACKED_SQL: &str =
    "SELECT queued_at FROM power_averages WHERE sent < 2 ORDER BY id LIMIT 1";

const INSERT_TUPLE_SQL: &str =
    "INSERT INTO power_averages (node_id, window_start, average, samples, queued_at)
     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (node_id, window_start) DO NOTHING";

/// The planted bug `replace-stored-tuple`: a replayed window overwrites.
const REPLACE_TUPLE_SQL: &str =
    "INSERT OR REPLACE INTO power_averages (node_id, window_start, average, samples, queued_at)
     VALUES (?1, ?2, ?3, ?4, ?5)";

const INSERT_REJECTED_SQL: &str =
    "INSERT INTO rejected (partition, offset, raw, kind, reason, rejected_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (partition, offset) DO NOTHING";

const MARK_SENT_SQL: &str =
    "UPDATE power_averages SET sent = 1, sent_at = ?1 WHERE id = ?2 AND sent < 2";

/// [`MARK_SENT_SQL`] for a batch of consecutive ids, the usual case: a batch
/// is read in id order from rows stored in id order. One statement instead
/// of one per tuple (`a_run_of_ids_is_marked_in_one_statement`).
///
/// `NOT INDEXED` keeps SQLite on the id range itself: through the partial
/// index, whose condition reads the column being written, it would first
/// copy the ids into an ephemeral table.
const MARK_SENT_RUN_SQL: &str = "UPDATE power_averages NOT INDEXED SET sent = 1, sent_at = ?1
     WHERE id BETWEEN ?2 AND ?3 AND sent < 2";

/// A tuple's first answer, for a row at flag `?6` (1, then 0): the change
/// count then says which count the row left, with no read before the write
/// (a read per acknowledged tuple was a fifth of a backlog drain's edge
/// work).
const MARK_ACKED_SQL: &str = "UPDATE power_averages SET sent = 2, postal_code = ?1, acked_at = ?2,
     acked_epoch = ?4, conflict = ?5 WHERE id = ?3 AND sent = ?6";

/// What an answer for a row no longer below flag 2 is checked against.
const STORED_ANSWER_SQL: &str = "SELECT postal_code, conflict FROM power_averages WHERE id = ?1";

/// An answer for a tuple already at flag 2 (shipped again after the cloud
/// forgot, or a resend): the epoch it now stands under, and a conflict
/// that, once recorded, stays.
const MARK_ACKED_AGAIN_SQL: &str = "UPDATE power_averages SET acked_epoch = ?1,
     conflict = MAX(conflict, ?2) WHERE id = ?3 AND sent = 2";

/// The acknowledged tuples acknowledged under none of the cloud's current
/// bucket epochs (`?1` to `?16`, 0 for a bucket not known: no tuple is
/// recorded under 0), by id from the cursor `?17`. The scan walks the
/// table in row id order (`NOT INDEXED`: the row id itself, never an
/// index): the rows it skips are the pending ones, at most
/// `store_pending_max`, and those still under their bucket's epoch, which a
/// refill pass must read anyway. The limit is applied by the reader, as in
/// `UNACKED_AFTER_SQL`. The list always has 16 parameters, so the statement
/// is planned once; SQLite builds its ephemeral table of 16 values once per
/// scan (a scan reads up to a batch of tuples), not per row written.
const ACKED_NOT_UNDER_SQL: &str = "SELECT id, node_id, window_start, average, samples
     FROM power_averages NOT INDEXED
     WHERE id > ?17 AND sent = 2 AND (acked_epoch IS NULL OR acked_epoch NOT IN
       (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16))
     ORDER BY id";

/// How many tuples [`ACKED_NOT_UNDER_SQL`] would return from the start.
const ACKED_NOT_UNDER_COUNT_SQL: &str = "SELECT COUNT(*) FROM power_averages NOT INDEXED
     WHERE sent = 2 AND (acked_epoch IS NULL OR acked_epoch NOT IN
       (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16))";

const _: () = assert!(STORE_BUCKETS == 16, "the refill statements list 16 epochs");

/// The bucket epochs as SQLite parameters: their bits as signed integers,
/// as `acked_epoch` stores them.
fn epoch_parameters(epochs: &[u64; STORE_BUCKETS]) -> [i64; STORE_BUCKETS] {
    epochs.map(|epoch| epoch as i64)
}

/// The most rows one retention sweep deletes: a chunk is one short
/// transaction (a few ms), so the sweep never holds up the edge's writes,
/// and a week's backlog of 50 households (3.5M rows) goes in minutes.
pub const RETENTION_CHUNK_ROWS: usize = 4_096;

/// The rows the retention sweep deletes: expired acknowledged tuples among
/// the oldest acknowledged ones. The id range ends at the
/// [`RETENTION_CHUNK_ROWS`]th acknowledged row whatever its age, so a sweep
/// with nothing to delete reads one chunk of the table from its start,
/// plus the pending rows among them (at most `store_pending_max`). A macro, so that the delete and the count of the conflicts it
/// deletes ([`CONFLICTS_ACKED_BEFORE_SQL`]) cannot name different rows.
macro_rules! acked_before_where {
    () => {
        "id <= (SELECT MAX(id) FROM (SELECT id FROM power_averages NOT INDEXED
                                       WHERE sent = 2 ORDER BY id LIMIT 4096))
       AND sent = 2 AND acked_at < ?1"
    };
}

/// Deletes the rows of `acked_before_where!`.
const DELETE_ACKED_BEFORE_SQL: &str =
    concat!("DELETE FROM power_averages WHERE ", acked_before_where!());

/// The conflicting tuples among those [`DELETE_ACKED_BEFORE_SQL`] deletes,
/// counted first in its transaction: the same rows, so the same pages.
const CONFLICTS_ACKED_BEFORE_SQL: &str = concat!(
    "SELECT COUNT(*) FROM power_averages WHERE ",
    acked_before_where!(),
    " AND conflict != 0"
);

/// The backlog in id order: flags 0 and 1, or 0 only. `sent < 2` is the
/// partial index's own condition, so the index serves the query in id
/// order, and the reader stops at its limit.
///
/// The limit is not a `LIMIT ?`: SQLite's planner looks at a bound LIMIT,
/// and a statement whose plan looked at a parameter is planned again every
/// time that parameter is bound. That was over a third of the cost of each
/// read of the backlog in the simulation (`statements_are_planned_once`).
const UNACKED_AFTER_SQL: &str = "SELECT id, node_id, window_start, average, samples
     FROM power_averages WHERE id > ?1 AND sent < 2 AND sent <= ?2 ORDER BY id";

/// Columns only an EdgeMeter outbox's `power_averages` has. The original
/// system's table of that name has no `window_start`: an edge given its
/// `local.db` used to add its own tables, switch the file to WAL and then
/// fail every store. Later schema changes add columns, never drop these.
const OUTBOX_COLUMNS: [&str; 4] = ["window_start", "samples", "sent", "queued_at"];

/// Refuses a database that is not an EdgeMeter outbox, reading only: a
/// `power_averages` table without the outbox's columns, or a file that is
/// not SQLite. A new or empty database passes.
fn refuse_foreign(connection: &Connection) -> Result<(), StoreError> {
    let columns: rusqlite::Result<Vec<String>> = connection
        .prepare("SELECT name FROM pragma_table_info('power_averages')")
        .and_then(|mut statement| {
            statement
                .query_map([], |row| row.get(0))?
                .collect::<Result<_, _>>()
        });
    let columns = match columns {
        Err(rusqlite::Error::SqliteFailure(failure, _))
            if failure.code == rusqlite::ErrorCode::NotADatabase =>
        {
            return Err(StoreError::Foreign(
                "this is not an EdgeMeter outbox (not a SQLite database); pass a new --db"
                    .to_owned(),
            ));
        }
        other => other.map_err(unavailable)?,
    };
    let missing: Vec<&str> = OUTBOX_COLUMNS
        .into_iter()
        .filter(|column| !columns.iter().any(|present| present == column))
        .collect();
    if columns.is_empty() || missing.is_empty() {
        return Ok(());
    }
    Err(StoreError::Foreign(format!(
        "this is not an EdgeMeter outbox (the original's schema? its power_averages has no {}); pass a new --db",
        missing.join(", ")
    )))
}

/// How long a statement waits for a lock held by another connection (a
/// `status` reader, say) before it reports the store unavailable.
const BUSY_TIMEOUT_MS: u64 = 5_000;

/// One stored tuple with every column, for `status`, tests and the checker.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredTuple {
    pub id: i64,
    pub node_id: String,
    pub window_start_ms: i64,
    pub average_w: f64,
    pub samples: u32,
    pub postal_code: Option<String>,
    pub sent: u8,
    /// The cloud store's epoch it was last acknowledged under.
    pub acked_epoch: Option<u64>,
    /// Whether the cloud reported holding other values for it.
    pub conflict: bool,
}

pub struct SqliteOutbox {
    connection: Connection,
    /// Whether the database has `outbox_counts` (always, once opened for
    /// writing; a read-only open of an older database may lack it).
    has_counts: bool,
    planted: PlantedBugs,
    /// Whether the store of closed windows switches to FULL (off only with
    /// a planted bug).
    sync_stores: bool,
}

/// How [`SqliteOutbox::open_in`] opens the database.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions<'a> {
    /// The SQLite VFS by name; `None` is SQLite's default (production).
    /// The simulation passes its simulated disk's.
    pub vfs: Option<&'a str>,
    pub planted: PlantedBugs,
}

/// `synchronous` for everything but the store of closed windows: a lost
/// flag change only causes a resend (see the module doc).
const SYNCHRONOUS_LAZY: &str = "PRAGMA synchronous = NORMAL";

/// `synchronous` around the store of closed windows: its commit syncs the
/// WAL, so the offsets committed after it never name a lost tuple.
const SYNCHRONOUS_STORE: &str = "PRAGMA synchronous = FULL";

fn unavailable(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

impl SqliteOutbox {
    /// Opens (creating if needed) the outbox at `path`.
    pub fn open(path: &Path) -> Result<SqliteOutbox, StoreError> {
        SqliteOutbox::open_with(path, PlantedBugs::NONE)
    }

    pub fn open_with(path: &Path, planted: PlantedBugs) -> Result<SqliteOutbox, StoreError> {
        SqliteOutbox::open_in(path, OpenOptions { vfs: None, planted })
    }

    /// Opens (creating if needed) the outbox at `path` as `options` say.
    pub fn open_in(path: &Path, options: OpenOptions<'_>) -> Result<SqliteOutbox, StoreError> {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|error| {
                StoreError::Unavailable(format!("cannot create {}: {error}", dir.display()))
            })?;
        }
        let connection = match options.vfs {
            None => Connection::open(path),
            Some(vfs) => Connection::open_with_flags_and_vfs(path, OpenFlags::default(), vfs),
        }
        .map_err(unavailable)?;
        connection
            .busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(unavailable)?;
        // Before the first write: WAL mode alone rewrites the file's header.
        refuse_foreign(&connection)?;
        connection
            .pragma_update(None, "journal_mode", "WAL")
            .map_err(unavailable)?;
        let planted = options.planted;
        let synchronous_off = planted.has(Bug::SynchronousOff);
        let lazy = if synchronous_off {
            "PRAGMA synchronous = OFF"
        } else {
            SYNCHRONOUS_LAZY
        };
        connection.execute_batch(lazy).map_err(unavailable)?;
        connection.execute_batch(SCHEMA).map_err(unavailable)?;
        add_missing_columns(&connection).map_err(unavailable)?;
        connection
            .execute_batch(DROP_ACKED_INDEX_SQL)
            .map_err(unavailable)?;
        ensure_counts(&connection).map_err(unavailable)?;
        Ok(SqliteOutbox {
            connection,
            has_counts: true,
            planted,
            sync_stores: !synchronous_off && !planted.has(Bug::CommitBeforeSync),
        })
    }

    /// SQLite's `PRAGMA integrity_check`: `["ok"]` for a sound database,
    /// else the problems it found (at most 100). The simulation runs it at
    /// every start of the edge, after each crash and power loss.
    pub fn integrity_check(&self) -> Result<Vec<String>, StoreError> {
        let mut statement = self
            .connection
            .prepare("PRAGMA integrity_check")
            .map_err(unavailable)?;
        let rows = statement
            .query_map([], |row| row.get(0))
            .map_err(unavailable)?;
        rows.collect::<Result<_, _>>().map_err(unavailable)
    }

    /// Opens an existing outbox without writing to it, for `status`.
    pub fn open_read_only(path: &Path) -> Result<SqliteOutbox, StoreError> {
        if !path.exists() {
            return Err(StoreError::Unavailable(format!(
                "{} does not exist; pass the --db the edge runs with",
                path.display()
            )));
        }
        let connection = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(unavailable)?;
        connection
            .busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
            .map_err(unavailable)?;
        refuse_foreign(&connection)?;
        let has_counts = has_table(&connection, "outbox_counts").map_err(unavailable)?;
        Ok(SqliteOutbox {
            connection,
            has_counts,
            planted: PlantedBugs::NONE,
            sync_stores: true,
        })
    }

    /// Caps the database at `pages` pages (SQLite's `max_page_count`); a write
    /// past it fails as on a full disk. For tests of that path, and for
    /// operators who want the edge to stop consuming before the disk fills.
    /// Returns the cap SQLite applied (never below the current size).
    pub fn set_page_limit(&self, pages: u64) -> Result<u64, StoreError> {
        self.connection
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |row| {
                row.get(0)
            })
            .map_err(unavailable)
    }

    /// How many tuples are not yet acknowledged (flag 0 or 1). Reads only the
    /// partial index of unacknowledged rows, so it costs what is pending,
    /// not the table: for loops that wait for a backlog to drain, where
    /// [`Outbox::status`], which counts every row, would compete with the
    /// edge for the CPU.
    pub fn unacked_count(&self) -> Result<u64, StoreError> {
        self.connection
            .prepare_cached("SELECT COUNT(*) FROM power_averages WHERE sent < 2")
            .and_then(|mut count| count.query_row([], |row| row.get(0)))
            .map_err(unavailable)
    }

    /// How many acknowledged tuples were acknowledged under none of
    /// `epochs` (the store buckets' current epochs, 0 for one not known):
    /// what is left to ship again to a cloud whose buckets have them. For
    /// the simulation's wait after the heal and for tests; it reads the
    /// whole table.
    pub fn acked_not_under_count(&self, epochs: &[u64; STORE_BUCKETS]) -> Result<u64, StoreError> {
        self.connection
            .prepare_cached(ACKED_NOT_UNDER_COUNT_SQL)
            .and_then(|mut count| {
                count.query_row(params_from_iter(epoch_parameters(epochs)), |row| row.get(0))
            })
            .map_err(unavailable)
    }

    /// Every tuple by id. For tests, tools and the checker: loads the table.
    pub fn all_tuples(&self) -> Result<Vec<StoredTuple>, StoreError> {
        let mut statement = self
            .connection
            .prepare(
                "SELECT id, node_id, window_start, average, samples, postal_code, sent,
                        acked_epoch, conflict
                 FROM power_averages ORDER BY id",
            )
            .map_err(unavailable)?;
        let rows = statement
            .query_map([], |row| {
                Ok(StoredTuple {
                    id: row.get(0)?,
                    node_id: row.get(1)?,
                    window_start_ms: row.get(2)?,
                    average_w: row.get(3)?,
                    samples: row.get(4)?,
                    postal_code: row.get(5)?,
                    sent: row.get(6)?,
                    acked_epoch: row.get::<_, Option<i64>>(7)?.map(|epoch| epoch as u64),
                    conflict: row.get::<_, i64>(8)? != 0,
                })
            })
            .map_err(unavailable)?;
        rows.collect::<Result<_, _>>().map_err(unavailable)
    }

    /// Sets `synchronous` (outside a transaction, where SQLite takes it).
    fn set_synchronous(&self, pragma: &'static str) -> Result<(), StoreError> {
        debug_assert!(self.connection.is_autocommit());
        self.connection
            .prepare_cached(pragma)
            .and_then(|mut statement| statement.execute([]))
            .map(drop)
            .map_err(unavailable)
    }

    /// Runs `work` as one write transaction, rolled back if any part fails.
    /// BEGIN and COMMIT go through the statement cache: rusqlite's
    /// `transaction()` parses both on every call, a tenth of a small store.
    fn write<T>(
        &mut self,
        work: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let connection = &self.connection;
        let done = connection
            .prepare_cached("BEGIN IMMEDIATE")
            .and_then(|mut begin| begin.execute([]))
            .and_then(|_| work(connection))
            .and_then(|value| {
                connection.prepare_cached("COMMIT")?.execute([])?;
                Ok(value)
            });
        if done.is_err() && !connection.is_autocommit() {
            // SQLite may have rolled back already (a full disk, say); if
            // not, nothing of this transaction may stay pending.
            let _ = connection.execute_batch("ROLLBACK");
        }
        done.map_err(unavailable)
    }

    fn insert_tuples(
        connection: &Connection,
        tuples: &[NewTuple],
        now_ms: i64,
        replace: bool,
        deltas: &mut CountDeltas,
    ) -> rusqlite::Result<usize> {
        let sql = if replace {
            REPLACE_TUPLE_SQL
        } else {
            INSERT_TUPLE_SQL
        };
        let mut insert = connection.prepare_cached(sql)?;
        let mut inserted = 0;
        for tuple in tuples {
            assert!(tuple.samples > 0 && tuple.average_w.is_finite());
            if replace {
                // The planted REPLACE deletes the stored row first.
                let replaced: Option<(i64, i64)> = connection
                    .prepare_cached(REPLACED_FLAGS_SQL)?
                    .query_row(params![tuple.window_start_ms, tuple.node_id], |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()?;
                if let Some((flag, conflict)) = replaced {
                    deltas.add(flag, -1);
                    deltas.add(COUNT_CONFLICTS, -i64::from(conflict != 0));
                }
            }
            inserted += insert.execute(params![
                tuple.node_id,
                tuple.window_start_ms,
                tuple.average_w,
                tuple.samples,
                now_ms
            ])?;
        }
        deltas.add(COUNT_QUEUED, inserted as i64);
        Ok(inserted)
    }

    fn insert_rejected(
        connection: &Connection,
        rejected: &[RejectedRecord],
        now_ms: i64,
        deltas: &mut CountDeltas,
    ) -> rusqlite::Result<()> {
        let mut insert = connection.prepare_cached(INSERT_REJECTED_SQL)?;
        for record in rejected {
            let inserted = insert.execute(params![
                record.partition,
                record.offset,
                record.payload,
                record.kind,
                record.reason,
                now_ms
            ])? as i64;
            deltas.add(COUNT_REJECTED, inserted);
            if record.kind == "late" {
                deltas.add(COUNT_LATE, inserted);
            }
        }
        Ok(())
    }

    fn ack_one(
        connection: &Connection,
        answer: &TupleAck,
        epoch: Option<i64>,
        now_ms: i64,
        outcome: &mut AckOutcome,
        deltas: &mut CountDeltas,
    ) -> rusqlite::Result<()> {
        let ack = &answer.ack;
        let conflict = answer.outcome == TupleOutcome::Conflict;
        outcome.value_conflicts += usize::from(conflict);
        // Flag 1 first: a batch is marked sent before it goes out, so that
        // is where nearly every first answer finds its row.
        let mut update = connection.prepare_cached(MARK_ACKED_SQL)?;
        for flag in [COUNT_SENT, COUNT_QUEUED] {
            let moved = update.execute(params![
                ack.postal_code.as_str(),
                now_ms,
                ack.tuple_id,
                epoch,
                i64::from(conflict),
                flag
            ])?;
            if moved == 1 {
                deltas.moved(flag, COUNT_ACKED);
                // A row below flag 2 has no conflict recorded: the flag and
                // the conflict are written together, by this statement.
                deltas.add(COUNT_CONFLICTS, i64::from(conflict));
                outcome.acked += 1;
                return Ok(());
            }
        }
        let stored: Option<(Option<String>, i64)> = connection
            .prepare_cached(STORED_ANSWER_SQL)?
            .query_row([ack.tuple_id], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()?;
        let Some((code, had_conflict)) = stored else {
            // Deleted by the retention sweep since it was shipped.
            outcome.conflicting += 1;
            return Ok(());
        };
        // At flag 2 already: the epoch moves, and a conflict, once
        // recorded, stays.
        let mut again = connection.prepare_cached(MARK_ACKED_AGAIN_SQL)?;
        again.execute(params![epoch, i64::from(conflict), ack.tuple_id])?;
        deltas.add(COUNT_CONFLICTS, i64::from(conflict && had_conflict == 0));
        match code {
            Some(code) if code == ack.postal_code.as_str() => outcome.repeated += 1,
            _ => outcome.conflicting += 1,
        }
        Ok(())
    }
}

/// What one write moved, by `outbox_counts` key, written to the table
/// before the write commits.
#[derive(Debug, Default)]
struct CountDeltas([i64; 6]);

impl CountDeltas {
    fn add(&mut self, what: i64, by: i64) {
        self.0[what as usize] += by;
    }

    /// A row that left flag `from` for flag `to`.
    fn moved(&mut self, from: i64, to: i64) {
        if from != to {
            self.add(from, -1);
            self.add(to, 1);
        }
    }

    fn apply(&self, connection: &Connection) -> rusqlite::Result<()> {
        let mut add = connection.prepare_cached(COUNTS_ADD_SQL)?;
        for (what, by) in self.0.iter().enumerate() {
            // A count that would go below 0 fails the table's CHECK, and
            // the write with it: counts that drifted (a hand edit) are
            // reported, never stored wrong; the next open rebuilds them.
            if *by != 0 && add.execute(params![what as i64, by])? != 1 {
                return Err(rusqlite::Error::QueryReturnedNoRows);
            }
        }
        Ok(())
    }
}

fn has_table(connection: &Connection, name: &str) -> rusqlite::Result<bool> {
    connection.query_row(
        "SELECT COUNT(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
        [name],
        |row| row.get(0),
    )
}

/// Creates `outbox_counts` if the database lacks it and fills it from the
/// tables, in one transaction (see the module doc for why at every open).
fn ensure_counts(connection: &Connection) -> rusqlite::Result<()> {
    connection.execute_batch("BEGIN IMMEDIATE")?;
    let made = has_table(connection, "outbox_counts")
        .and_then(|present| match present {
            true => Ok(()),
            false => connection.execute_batch(COUNTS_TABLE_SQL),
        })
        .and_then(|()| connection.execute_batch(COUNTS_FILL_SQL))
        .and_then(|()| connection.execute_batch("COMMIT"));
    if made.is_err() && !connection.is_autocommit() {
        let _ = connection.execute_batch("ROLLBACK");
    }
    made
}

/// Adds each of [`ADDED_COLUMNS`] the table lacks (a database made before
/// it existed).
fn add_missing_columns(connection: &Connection) -> rusqlite::Result<()> {
    for (name, definition) in ADDED_COLUMNS {
        let present: bool = connection.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('power_averages') WHERE name = ?1",
            [name],
            |row| row.get(0),
        )?;
        if !present {
            connection.execute_batch(&format!(
                "ALTER TABLE power_averages ADD COLUMN {name} {definition}"
            ))?;
        }
    }
    Ok(())
}

impl SqliteOutbox {
    /// The first `limit` rows of a query selecting `id, node_id,
    /// window_start, average, samples` in id order, as tuples to ship: the
    /// backlog and the reship scan read through here.
    fn tuples_out(
        &self,
        sql: &str,
        parameters: impl rusqlite::Params,
        limit: usize,
    ) -> Result<Vec<TupleOut>, StoreError> {
        let mut statement = self.connection.prepare_cached(sql).map_err(unavailable)?;
        let rows = statement
            .query_map(parameters, |row| {
                Ok(TupleOut {
                    tuple_id: row.get(0)?,
                    node_id: row.get(1)?,
                    window_start_ms: row.get(2)?,
                    average_w: row.get(3)?,
                    samples: row.get(4)?,
                })
            })
            .map_err(unavailable)?;
        let tuples: Vec<TupleOut> = rows
            .take(limit)
            .collect::<Result<_, _>>()
            .map_err(unavailable)?;
        assert!(tuples.len() <= limit);
        Ok(tuples)
    }
}

/// The first and last id when `ids` are ascending without a gap, so that
/// `BETWEEN first AND last` names exactly them.
fn consecutive_run(ids: &[i64]) -> Option<(i64, i64)> {
    let (&first, &last) = (ids.first()?, ids.last()?);
    let ascending = ids.windows(2).all(|pair| pair[1] == pair[0] + 1);
    ascending.then_some((first, last))
}

impl Outbox for SqliteOutbox {
    fn store_closed(
        &mut self,
        tuples: &[NewTuple],
        rejected: &[RejectedRecord],
        now_ms: i64,
    ) -> Result<StoreOutcome, StoreError> {
        let replace = self.planted.has(Bug::ReplaceStoredTuple);
        if self.sync_stores {
            self.set_synchronous(SYNCHRONOUS_STORE)?;
        }
        let inserted = self.write(|connection| {
            let mut deltas = CountDeltas::default();
            let inserted = Self::insert_tuples(connection, tuples, now_ms, replace, &mut deltas)?;
            Self::insert_rejected(connection, rejected, now_ms, &mut deltas)?;
            deltas.apply(connection)?;
            Ok(inserted)
        });
        if self.sync_stores {
            // Back to lazy whether or not the store went through.
            self.set_synchronous(SYNCHRONOUS_LAZY)?;
        }
        let inserted = inserted?;
        let inserted = inserted.min(tuples.len());
        Ok(StoreOutcome {
            inserted,
            already_stored: tuples.len() - inserted,
        })
    }

    fn unacked_after(
        &mut self,
        after_id: i64,
        limit: usize,
        include_sent: bool,
    ) -> Result<Vec<TupleOut>, StoreError> {
        let flag_max = if include_sent { 1 } else { 0 };
        self.tuples_out(UNACKED_AFTER_SQL, params![after_id, flag_max], limit)
    }

    fn mark_sent(&mut self, tuple_ids: &[i64], now_ms: i64) -> Result<(), StoreError> {
        self.write(|connection| {
            // Only rows at flag 0 move; a resend stays at 1.
            let mut deltas = CountDeltas::default();
            if let Some((first, last)) = consecutive_run(tuple_ids) {
                let queued: i64 = connection
                    .prepare_cached(QUEUED_IN_RUN_SQL)?
                    .query_row([first, last], |row| row.get(0))?;
                let mut update = connection.prepare_cached(MARK_SENT_RUN_SQL)?;
                update.execute(params![now_ms, first, last])?;
                deltas.add(COUNT_QUEUED, -queued);
                deltas.add(COUNT_SENT, queued);
                return deltas.apply(connection);
            }
            let mut flags = connection.prepare_cached(ROW_FLAGS_SQL)?;
            let mut update = connection.prepare_cached(MARK_SENT_SQL)?;
            for id in tuple_ids {
                let flag: Option<i64> = flags.query_row([id], |row| row.get(0)).optional()?;
                if update.execute(params![now_ms, id])? == 1 {
                    deltas.moved(flag.expect("an updated row exists"), COUNT_SENT);
                }
            }
            deltas.apply(connection)
        })
    }

    fn mark_acked(
        &mut self,
        acks: &[TupleAck],
        epochs: &[Option<u64>],
        now_ms: i64,
    ) -> Result<AckOutcome, StoreError> {
        assert_eq!(acks.len(), epochs.len(), "one epoch per answer");
        assert!(!epochs.contains(&Some(0)), "epoch 0 is the wire's unknown");
        let outcome = self.write(|connection| {
            let mut outcome = AckOutcome::default();
            let mut deltas = CountDeltas::default();
            for (answer, epoch) in acks.iter().zip(epochs) {
                assert!(PostalCode::parse(answer.ack.postal_code.as_str()).is_some());
                // SQLite integers are signed: the epoch is stored as its bits.
                let epoch = epoch.map(|epoch| epoch as i64);
                Self::ack_one(connection, answer, epoch, now_ms, &mut outcome, &mut deltas)?;
            }
            deltas.apply(connection)?;
            Ok(outcome)
        })?;
        assert_eq!(
            outcome.acked + outcome.repeated + outcome.conflicting,
            acks.len()
        );
        Ok(outcome)
    }

    fn acked_not_under(
        &mut self,
        epochs: &[u64; STORE_BUCKETS],
        after_id: i64,
        limit: usize,
    ) -> Result<Vec<TupleOut>, StoreError> {
        let parameters = epoch_parameters(epochs).into_iter().chain([after_id]);
        let tuples = self.tuples_out(ACKED_NOT_UNDER_SQL, params_from_iter(parameters), limit)?;
        assert!(tuples.iter().all(|tuple| tuple.tuple_id > after_id));
        Ok(tuples)
    }

    fn delete_acked_before(&mut self, cutoff_ms: i64) -> Result<usize, StoreError> {
        let deleted = self.write(|connection| {
            let conflicts: i64 = connection
                .prepare_cached(CONFLICTS_ACKED_BEFORE_SQL)?
                .query_row([cutoff_ms], |row| row.get(0))?;
            let deleted = connection
                .prepare_cached(DELETE_ACKED_BEFORE_SQL)?
                .execute([cutoff_ms])?;
            let mut deltas = CountDeltas::default();
            deltas.add(COUNT_ACKED, -(deleted as i64));
            deltas.add(COUNT_CONFLICTS, -conflicts);
            deltas.apply(connection)?;
            Ok(deleted)
        })?;
        assert!(deleted <= RETENTION_CHUNK_ROWS);
        Ok(deleted)
    }

    fn status(&mut self) -> Result<StatusCounts, StoreError> {
        let mut counts = if self.has_counts {
            self.kept_counts()?
        } else {
            self.scanned_counts()?
        };
        counts.oldest_unacked_queued_ms = self
            .connection
            .prepare_cached(OLDEST_UNACKED_SQL)
            .and_then(|mut oldest| oldest.query_row([], |row| row.get(0)).optional())
            .map_err(unavailable)?;
        // Not a hard assertion: a hand edit of the database can break it
        // until the next open rebuilds the counts.
        debug_assert_eq!(
            counts.oldest_unacked_queued_ms.is_some(),
            counts.queued + counts.sent > 0,
            "an unacknowledged tuple exists exactly when one is counted"
        );
        Ok(counts)
    }
}

impl SqliteOutbox {
    /// The counts from `outbox_counts`: six rows, whatever the table holds.
    fn kept_counts(&self) -> Result<StatusCounts, StoreError> {
        let mut counts = StatusCounts::default();
        let mut statement = self
            .connection
            .prepare_cached(COUNTS_READ_SQL)
            .map_err(unavailable)?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, u64>(1)?)))
            .map_err(unavailable)?;
        let mut seen = 0;
        for row in rows {
            let (what, rows) = row.map_err(unavailable)?;
            let slot = match what {
                COUNT_QUEUED => &mut counts.queued,
                COUNT_SENT => &mut counts.sent,
                COUNT_ACKED => &mut counts.acked,
                COUNT_REJECTED => &mut counts.rejected,
                COUNT_LATE => &mut counts.late,
                COUNT_CONFLICTS => &mut counts.conflicts,
                other => {
                    return Err(StoreError::Unavailable(format!(
                        "outbox_counts has an unknown row {other}"
                    )))
                }
            };
            *slot = rows;
            seen += 1;
        }
        if seen != 6 {
            return Err(StoreError::Unavailable(format!(
                "outbox_counts has {seen} rows, not 6"
            )));
        }
        debug_assert!(counts.late <= counts.rejected);
        Ok(counts)
    }

    /// The counts by scanning the tables: for a read-only look at a
    /// database made before `outbox_counts`, and for tests.
    fn scanned_counts(&self) -> Result<StatusCounts, StoreError> {
        let mut counts = StatusCounts::default();
        let mut statement = self
            .connection
            .prepare_cached("SELECT sent, COUNT(*) FROM power_averages GROUP BY sent")
            .map_err(unavailable)?;
        let rows = statement
            .query_map([], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, u64>(1)?)))
            .map_err(unavailable)?;
        for row in rows {
            match row.map_err(unavailable)? {
                (0, count) => counts.queued = count,
                (1, count) => counts.sent = count,
                (_, count) => counts.acked += count,
            }
        }
        let count = |sql: &str| -> Result<u64, StoreError> {
            self.connection
                .query_row(sql, [], |row| row.get(0))
                .map_err(unavailable)
        };
        counts.rejected = count("SELECT COUNT(*) FROM rejected")?;
        counts.late = count("SELECT COUNT(*) FROM rejected WHERE kind = 'late'")?;
        counts.conflicts = count("SELECT COUNT(*) FROM power_averages WHERE conflict != 0")?;
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgemeter_wire::Ack;
    use rusqlite::StatementStatus;

    /// Acks as a version-1 cloud gives them: stored, under no epoch.
    trait MarkPlain {
        fn mark_plain(&mut self, acks: &[Ack], now_ms: i64) -> Result<AckOutcome, StoreError>;
    }

    impl MarkPlain for SqliteOutbox {
        fn mark_plain(&mut self, acks: &[Ack], now_ms: i64) -> Result<AckOutcome, StoreError> {
            let answers: Vec<TupleAck> = acks
                .iter()
                .map(|ack| TupleAck {
                    ack: *ack,
                    outcome: TupleOutcome::Stored,
                })
                .collect();
            self.mark_acked(&answers, &vec![None; answers.len()], now_ms)
        }
    }

    fn tuple(node_id: &str, window_start_ms: i64, average_w: f64) -> NewTuple {
        NewTuple {
            node_id: node_id.into(),
            window_start_ms,
            average_w,
            samples: 2,
        }
    }

    fn open() -> (tempfile::TempDir, SqliteOutbox) {
        let dir = tempfile::tempdir().unwrap();
        let outbox = SqliteOutbox::open(&dir.path().join("edge.db")).unwrap();
        (dir, outbox)
    }

    fn code(text: &str) -> PostalCode {
        PostalCode::parse(text).unwrap()
    }

    /// Stores `count` consecutive windows of one household and returns
    /// their tuple ids, oldest first.
    fn stored_ids(outbox: &mut SqliteOutbox, count: i64) -> Vec<i64> {
        let tuples: Vec<NewTuple> = (0..count)
            .map(|index| tuple("h", index * 5_000, 1.0))
            .collect();
        outbox.store_closed(&tuples, &[], 1).unwrap();
        outbox
            .unacked_after(0, count as usize, true)
            .unwrap()
            .iter()
            .map(|tuple| tuple.tuple_id)
            .collect()
    }

    #[test]
    fn a_stored_window_is_never_doubled_or_changed() {
        let (_dir, mut outbox) = open();
        let first = outbox.store_closed(&[tuple("h", 0, 1.5)], &[], 1).unwrap();
        assert_eq!(
            first,
            StoreOutcome {
                inserted: 1,
                already_stored: 0
            }
        );
        let again = outbox.store_closed(&[tuple("h", 0, 9.0)], &[], 2).unwrap();
        assert_eq!(
            again,
            StoreOutcome {
                inserted: 0,
                already_stored: 1
            }
        );
        let all = outbox.all_tuples().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].average_w, 1.5);
    }

    #[test]
    fn flags_move_queued_sent_acked_and_the_first_code_stays() {
        let (_dir, mut outbox) = open();
        outbox
            .store_closed(
                &[tuple("a", 0, 1.0), tuple("b", 0, 2.0), tuple("c", 0, 3.0)],
                &[],
                1,
            )
            .unwrap();
        let batch = outbox.unacked_after(0, 2, true).unwrap();
        assert_eq!(batch.len(), 2);
        outbox
            .mark_sent(&[batch[0].tuple_id, batch[1].tuple_id], 2)
            .unwrap();
        assert_eq!(
            outbox.unacked_after(0, 10, false).unwrap().len(),
            1,
            "flag 0 only"
        );
        assert_eq!(outbox.unacked_after(0, 10, true).unwrap().len(), 3);
        let ack = Ack {
            tuple_id: batch[0].tuple_id,
            postal_code: code("10115"),
        };
        assert_eq!(outbox.mark_plain(&[ack], 3).unwrap().acked, 1);
        let repeat = outbox.mark_plain(&[ack], 4).unwrap();
        assert_eq!(repeat.repeated, 1);
        let other = Ack {
            tuple_id: batch[0].tuple_id,
            postal_code: code("80331"),
        };
        assert_eq!(outbox.mark_plain(&[other], 5).unwrap().conflicting, 1);
        let stored = outbox.all_tuples().unwrap();
        assert_eq!(stored[0].postal_code.as_deref(), Some("10115"));
        assert_eq!(stored[0].sent, 2);
        assert_eq!(
            outbox.status().unwrap(),
            StatusCounts {
                queued: 1,
                sent: 1,
                acked: 1,
                rejected: 0,
                late: 0,
                conflicts: 0,
                oldest_unacked_queued_ms: Some(1),
            }
        );
        assert_eq!(
            outbox
                .unacked_after(batch[0].tuple_id, 10, true)
                .unwrap()
                .len(),
            2
        );
    }

    /// Goal: one batch of acks, in one transaction, gives each tuple its own
    /// code and sorts every ack right: new, repeated, another code, an
    /// unknown id, and the same tuple twice. Marking a batch sent leaves an
    /// acknowledged tuple at flag 2. Method: a batch with each case, then
    /// every row read back.
    #[test]
    fn a_batch_of_acks_moves_each_tuple_once_with_its_own_code() {
        let (_dir, mut outbox) = open();
        let ids = stored_ids(&mut outbox, 4);
        let ack = |index: usize, text: &str| Ack {
            tuple_id: ids[index],
            postal_code: code(text),
        };
        outbox.mark_plain(&[ack(0, "10115")], 2).unwrap();
        outbox.mark_sent(&ids, 3).unwrap();
        let outcome = outbox
            .mark_plain(
                &[
                    ack(1, "20095"),
                    ack(0, "10115"),
                    ack(2, "80331"),
                    ack(2, "80331"),
                    ack(3, "01067"),
                    ack(0, "50667"),
                    Ack {
                        tuple_id: 999,
                        postal_code: code("01067"),
                    },
                ],
                4,
            )
            .unwrap();
        assert_eq!(
            (outcome.acked, outcome.repeated, outcome.conflicting),
            (3, 2, 2)
        );
        let codes: Vec<(Option<String>, u8)> = outbox
            .all_tuples()
            .unwrap()
            .into_iter()
            .map(|tuple| (tuple.postal_code, tuple.sent))
            .collect();
        let expected = ["10115", "20095", "80331", "01067"];
        assert_eq!(
            codes,
            expected
                .iter()
                .map(|code| (Some(code.to_string()), 2))
                .collect::<Vec<_>>()
        );
    }

    /// Goal: a power loss right after a store keeps every stored window
    /// (the edge commits their offsets next), and may undo only later flag
    /// changes; the connection is back at NORMAL after each store. With
    /// the planted `commit-before-sync` the same loss loses the store.
    /// Method: the outbox on the simulated disk, a store, a flag change, a
    /// loss that keeps no unsynced sector, the outbox opened again.
    #[test]
    fn a_power_loss_after_a_store_keeps_the_stored_windows() {
        let survivors = |planted: PlantedBugs| {
            let dir = tempfile::tempdir().unwrap();
            let disk = edgemeter_simdisk::SimDisk::attach(dir.path()).unwrap();
            let path = disk.dir().join("edge.db");
            let options = OpenOptions {
                vfs: Some(edgemeter_simdisk::VFS_NAME),
                planted,
            };
            let mut outbox = SqliteOutbox::open_in(&path, options).unwrap();
            let windows = [tuple("h", 0, 1.0), tuple("h", 5_000, 2.0)];
            outbox.store_closed(&windows, &[], 1).unwrap();
            let synchronous: i64 = outbox
                .connection
                .query_row("PRAGMA synchronous", [], |row| row.get(0))
                .unwrap();
            assert_eq!(synchronous, 1, "NORMAL again after the store");
            let ids: Vec<i64> = outbox.all_tuples().unwrap().iter().map(|t| t.id).collect();
            outbox.mark_sent(&ids, 2).unwrap();
            disk.power_loss(5, 0).unwrap();
            drop(outbox);
            let reopened = SqliteOutbox::open_in(&path, options).unwrap();
            assert_eq!(reopened.integrity_check().unwrap(), ["ok"]);
            reopened.all_tuples().unwrap()
        };
        let kept = survivors(PlantedBugs::NONE);
        assert_eq!(kept.len(), 2);
        assert!(
            kept.iter().all(|tuple| tuple.sent == 0),
            "the lazy flag change was lost"
        );
        if cfg!(feature = "planted-bugs") {
            assert!(survivors(PlantedBugs::NONE.with(Bug::CommitBeforeSync)).is_empty());
        }
    }

    /// Goal: a database that is not an outbox (the original system's
    /// `local.db`, or not SQLite at all) is refused by both opens with one
    /// message naming what it is and the fix, and is left byte for byte as
    /// it was: no WAL, no tables of ours. Method: the original's table
    /// written by hand, then both opens, then the file compared.
    #[test]
    fn a_foreign_database_is_refused_and_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("local.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE power_averages (id INTEGER PRIMARY KEY AUTOINCREMENT,
                 node_id TEXT NOT NULL, average REAL NOT NULL, sent INTEGER DEFAULT 0);
                 INSERT INTO power_averages (node_id, average) VALUES ('household_1', 412.5);",
            )
            .unwrap();
        let before = std::fs::read(&path).unwrap();
        for refused in [
            SqliteOutbox::open(&path).err(),
            SqliteOutbox::open_read_only(&path).err(),
        ] {
            let message = refused.expect("refused").to_string();
            assert!(
                message.contains("not an EdgeMeter outbox (the original's schema?")
                    && message.contains("window_start")
                    && message.ends_with("pass a new --db"),
                "{message}"
            );
        }
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert!(!dir.path().join("local.db-wal").exists());
        let text = dir.path().join("notes.db");
        std::fs::write(&text, vec![b'x'; 4096]).unwrap();
        let message = SqliteOutbox::open(&text)
            .err()
            .expect("refused")
            .to_string();
        assert!(message.contains("not a SQLite database"), "{message}");
        // Our own outbox, reopened, is not foreign.
        let ours = dir.path().join("edge.db");
        drop(SqliteOutbox::open(&ours).unwrap());
        assert!(SqliteOutbox::open(&ours).is_ok());
        assert!(SqliteOutbox::open_read_only(&ours).is_ok());
    }

    #[test]
    fn rejected_records_are_kept_once() {
        let (_dir, mut outbox) = open();
        let record = RejectedRecord {
            partition: 0,
            offset: 7,
            payload: b"not json".to_vec(),
            kind: "not_json",
            reason: "x".into(),
        };
        outbox
            .store_closed(&[], std::slice::from_ref(&record), 1)
            .unwrap();
        outbox.store_closed(&[], &[record], 2).unwrap();
        assert_eq!(outbox.status().unwrap().rejected, 1);
        let late = RejectedRecord {
            partition: 0,
            offset: 8,
            payload: b"{}".to_vec(),
            kind: "late",
            reason: "window stored".into(),
        };
        outbox.store_closed(&[], &[late], 3).unwrap();
        let counts = outbox.status().unwrap();
        assert_eq!((counts.rejected, counts.late), (2, 1));
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.db");
        {
            let mut outbox = SqliteOutbox::open(&path).unwrap();
            outbox.store_closed(&[tuple("h", 0, 1.0)], &[], 1).unwrap();
            let id = outbox.unacked_after(0, 1, true).unwrap()[0].tuple_id;
            outbox.mark_sent(&[id], 2).unwrap();
        }
        let mut reopened = SqliteOutbox::open(&path).unwrap();
        assert_eq!(reopened.unacked_after(0, 10, true).unwrap().len(), 1);
        let mut reader = SqliteOutbox::open_read_only(&path).unwrap();
        assert_eq!(reader.status().unwrap().sent, 1);
        assert!(SqliteOutbox::open_read_only(&dir.path().join("missing.db")).is_err());
    }

    /// Goal: a store that fails part-way leaves nothing behind, and the
    /// next one works. Method: a page cap that a big batch overruns after
    /// its first rows went in, then the cap lifted.
    #[test]
    fn a_failed_store_is_rolled_back_whole() {
        let (_dir, mut outbox) = open();
        outbox.store_closed(&[tuple("h", 0, 1.0)], &[], 1).unwrap();
        let size: u64 = outbox
            .connection
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        outbox.set_page_limit(size + 2).unwrap();
        let big: Vec<NewTuple> = (1..2_000)
            .map(|index| tuple(&format!("household-{index:04}"), index * 5_000, 1.0))
            .collect();
        assert!(outbox.store_closed(&big, &[], 2).is_err(), "the cap is hit");
        assert!(
            outbox.connection.is_autocommit(),
            "no transaction left open"
        );
        let status = outbox.status().unwrap();
        assert_eq!((status.queued, status.sent, status.acked), (1, 0, 0));
        outbox.set_page_limit(1 << 30).unwrap();
        let stored = outbox.store_closed(&big, &[], 3).unwrap();
        assert_eq!(stored.inserted, big.len());
    }

    /// Goal: a write lock held elsewhere (a tool with the database open)
    /// makes a store fail after `BUSY_TIMEOUT_MS`, not hang, and the store
    /// works once the lock is gone. Method: a second connection holding an
    /// immediate transaction.
    #[test]
    fn a_held_lock_fails_a_store_after_the_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.db");
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let error = outbox
            .store_closed(&[tuple("h", 0, 1.0)], &[], 1)
            .unwrap_err();
        assert!(error.to_string().contains("locked"), "{error}");
        other.execute_batch("ROLLBACK").unwrap();
        let stored = outbox.store_closed(&[tuple("h", 0, 1.0)], &[], 2).unwrap();
        assert_eq!(stored.inserted, 1);
    }

    /// Goal: no statement that writes a tuple or a rejected record builds
    /// an ephemeral table per execution (an IN list in a CHECK did, for
    /// every insert and flag update), and the flag still takes only 0, 1
    /// and 2. Method: each statement's program from EXPLAIN, and inserts of
    /// flags outside the three.
    #[test]
    fn every_write_runs_without_an_ephemeral_table() {
        let (_dir, outbox) = open();
        for sql in [
            INSERT_TUPLE_SQL,
            REPLACE_TUPLE_SQL,
            INSERT_REJECTED_SQL,
            MARK_SENT_SQL,
            MARK_SENT_RUN_SQL,
            MARK_ACKED_SQL,
            MARK_ACKED_AGAIN_SQL,
            DELETE_ACKED_BEFORE_SQL,
            COUNTS_ADD_SQL,
            ROW_FLAGS_SQL,
            REPLACED_FLAGS_SQL,
            QUEUED_IN_RUN_SQL,
            CONFLICTS_ACKED_BEFORE_SQL,
        ] {
            let mut explain = outbox
                .connection
                .prepare(&format!("EXPLAIN {sql}"))
                .unwrap();
            // Unbound parameters are NULL: EXPLAIN runs nothing.
            let mut rows = explain.raw_query();
            let mut opcodes: Vec<String> = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                opcodes.push(row.get(1).unwrap());
            }
            assert!(opcodes.iter().any(|opcode| opcode == "Halt"), "{opcodes:?}");
            assert!(
                !opcodes.iter().any(|opcode| opcode == "OpenEphemeral"),
                "{sql} builds an ephemeral table: {opcodes:?}"
            );
        }
        let insert = "INSERT INTO power_averages
            (node_id, window_start, average, samples, queued_at, sent, postal_code)
            VALUES ('h', ?1, 1.0, 1, 0, ?2, ?3)";
        for (window, flag, code) in [(0, "1", None), (1, "2", Some("01067"))] {
            let flag: f64 = flag.parse().unwrap();
            outbox
                .connection
                .execute(insert, params![window, flag, code])
                .unwrap();
        }
        for (window, flag) in [(2, 3.0), (3, -1.0), (4, 1.5)] {
            let refused = outbox
                .connection
                .execute(insert, params![window, flag, Option::<&str>::None]);
            assert!(
                refused.unwrap_err().to_string().contains("CHECK"),
                "flag {flag} was taken"
            );
        }
    }

    /// Goal: the unique index on household and window leads with the
    /// window, so stores append to its end (see the module doc), and a
    /// replayed window still conflicts on it. Method: the index's columns
    /// from SQLite, then one window stored twice.
    #[test]
    fn the_unique_index_grows_at_its_end() {
        let (_dir, mut outbox) = open();
        let index: String = outbox
            .connection
            .query_row(
                "SELECT name FROM pragma_index_list('power_averages') WHERE origin = 'u'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        let columns: Vec<String> = outbox
            .connection
            .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
            .unwrap()
            .query_map([&index], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(columns, ["window_start", "node_id"]);
        let window = [tuple("h", 5_000, 1.0)];
        assert_eq!(outbox.store_closed(&window, &[], 0).unwrap().inserted, 1);
        let again = outbox.store_closed(&window, &[], 1).unwrap();
        assert_eq!((again.inserted, again.already_stored), (0, 1));
    }

    /// Goal: a batch of consecutive ids is marked by the one range
    /// statement and touches nothing else; a batch with a gap takes the
    /// per-id statement. Method: a run over an acknowledged row, then a
    /// batch with a gap, then every row's flag and each statement's run count.
    #[test]
    fn a_run_of_ids_is_marked_in_one_statement() {
        assert_eq!(consecutive_run(&[4, 5, 6]), Some((4, 6)));
        assert_eq!(consecutive_run(&[4]), Some((4, 4)));
        assert_eq!(consecutive_run(&[4, 6]), None);
        assert_eq!(consecutive_run(&[5, 4]), None);
        assert_eq!(consecutive_run(&[4, 4]), None);
        assert_eq!(consecutive_run(&[]), None);

        let (_dir, mut outbox) = open();
        let ids = stored_ids(&mut outbox, 8);
        let acks = [Ack {
            tuple_id: ids[2],
            postal_code: code("01067"),
        }];
        outbox.mark_plain(&acks, 2).unwrap();
        // A run over an acknowledged row leaves it acknowledged; a gap
        // leaves the row in it queued.
        outbox.mark_sent(&ids[1..4], 3).unwrap();
        outbox.mark_sent(&[ids[5], ids[7]], 4).unwrap();
        let flags: Vec<(u8, Option<i64>)> = outbox
            .connection
            .prepare("SELECT sent, sent_at FROM power_averages ORDER BY id")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            flags,
            [
                (0, None),
                (1, Some(3)),
                (2, None),
                (1, Some(3)),
                (0, None),
                (1, Some(4)),
                (0, None),
                (1, Some(4)),
            ]
        );
        let run = outbox.connection.prepare_cached(MARK_SENT_RUN_SQL).unwrap();
        let one = outbox.connection.prepare_cached(MARK_SENT_SQL).unwrap();
        assert_eq!(run.get_status(StatementStatus::Run), 1);
        assert_eq!(one.get_status(StatementStatus::Run), 2);
    }

    /// Goal: no statement of the outbox is planned again when it is run
    /// with new parameters (see `UNACKED_AFTER_SQL`), and the backlog
    /// read uses the partial index. Method: every operation a few times
    /// with changing values, then each cached statement's re-prepare
    /// count from SQLite, and the read's plan for both flags.
    #[test]
    fn statements_are_planned_once() {
        let (_dir, mut outbox) = open();
        for round in 0..3_i64 {
            let ids = stored_ids(&mut outbox, 4);
            let mut tuples = [tuple("again", round * 5_000, 1.0)];
            outbox.store_closed(&tuples, &[], round).unwrap();
            tuples[0].average_w = 2.0;
            outbox.store_closed(&tuples, &[], round).unwrap();
            for include_sent in [false, true, false] {
                outbox.unacked_after(round, 10, include_sent).unwrap();
            }
            outbox.mark_sent(&ids[..2], round).unwrap();
            outbox.mark_sent(&[ids[1], ids[3]], round).unwrap();
            let acks = [Ack {
                tuple_id: ids[0],
                postal_code: code("01067"),
            }];
            outbox.mark_plain(&acks, round).unwrap();
            outbox.mark_plain(&acks, round).unwrap();
        }
        for sql in [
            UNACKED_AFTER_SQL,
            INSERT_TUPLE_SQL,
            MARK_SENT_SQL,
            MARK_SENT_RUN_SQL,
            MARK_ACKED_SQL,
        ] {
            let statement = outbox.connection.prepare_cached(sql).unwrap();
            assert!(statement.get_status(StatementStatus::Run) > 0, "{sql} ran");
            assert_eq!(
                statement.get_status(StatementStatus::RePrepare),
                0,
                "{sql} was planned again"
            );
        }
        for flag_max in [0, 1] {
            let plan: String = outbox
                .connection
                .query_row(
                    &format!("EXPLAIN QUERY PLAN {UNACKED_AFTER_SQL}"),
                    [0, flag_max],
                    |row| row.get(3),
                )
                .unwrap();
            assert!(plan.contains("power_averages_unacked"), "{plan}");
        }
    }

    /// Goal: the unacknowledged count agrees with `status` and is answered
    /// from the partial index, not by reading the table. Method: tuples
    /// at each flag, the count, and the query plan.
    #[test]
    fn the_unacked_count_reads_only_the_pending_rows() {
        let (_dir, mut outbox) = open();
        let ids = stored_ids(&mut outbox, 10);
        outbox.mark_sent(&ids[..6], 2).unwrap();
        let acks: Vec<Ack> = ids[..4]
            .iter()
            .map(|id| Ack {
                tuple_id: *id,
                postal_code: code("01067"),
            })
            .collect();
        outbox.mark_plain(&acks, 3).unwrap();
        let status = outbox.status().unwrap();
        assert_eq!((status.queued, status.sent, status.acked), (4, 2, 4));
        assert_eq!(outbox.unacked_count().unwrap(), 6);
        let plan: String = outbox
            .connection
            .query_row(
                "EXPLAIN QUERY PLAN SELECT COUNT(*) FROM power_averages WHERE sent < 2",
                [],
                |row| row.get(3),
            )
            .unwrap();
        assert!(plan.contains("power_averages_unacked"), "{plan}");
    }

    /// The counts by scanning, to hold the kept counts against.
    fn scanned(outbox: &SqliteOutbox) -> StatusCounts {
        let mut counts = outbox.scanned_counts().unwrap();
        counts.oldest_unacked_queued_ms = outbox
            .connection
            .query_row(
                "SELECT MIN(queued_at) FROM power_averages WHERE sent < 2",
                [],
                |row| row.get(0),
            )
            .unwrap();
        counts
    }

    /// Goal: the counts `status` reads from `outbox_counts` are exactly
    /// what a scan of the tables finds, after every kind of write (stores
    /// with repeats and rejected records, late ones among them, a store
    /// rolled back on a full disk, flag changes with resends, acks with
    /// repeats and conflicts, retention deletes) and after a reopen, read
    /// and write alike; and reading them touches neither table's rows.
    /// Method: each step followed by the comparison with a scan, and the
    /// read's query plans.
    #[test]
    fn the_kept_counts_stay_exact_and_cost_no_scan() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edge.db");
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        let check = |outbox: &mut SqliteOutbox, step: &str| {
            let kept = outbox.status().unwrap();
            assert_eq!(kept, scanned(outbox), "after {step}");
            kept
        };
        assert_eq!(check(&mut outbox, "open"), StatusCounts::default());
        let tuples: Vec<NewTuple> = (0..40)
            .map(|index| tuple("h", index * 5_000, 1.0))
            .collect();
        let rejected = |offset: i64, kind: &'static str| RejectedRecord {
            partition: 1,
            offset,
            payload: b"x".to_vec(),
            kind,
            reason: "test".into(),
        };
        let records = [
            rejected(1, "not_json"),
            rejected(2, "late"),
            rejected(2, "late"),
        ];
        outbox.store_closed(&tuples[..30], &records, 7).unwrap();
        let counts = check(&mut outbox, "a store");
        assert_eq!((counts.queued, counts.rejected, counts.late), (30, 2, 1));
        assert_eq!(counts.oldest_unacked_queued_ms, Some(7));
        outbox
            .store_closed(&tuples[20..], &[rejected(3, "late")], 8)
            .unwrap();
        assert_eq!(check(&mut outbox, "a store with repeats").queued, 40);
        let size: u64 = outbox
            .connection
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .unwrap();
        outbox.set_page_limit(size).unwrap();
        let many: Vec<NewTuple> = (0..3_000)
            .map(|index| tuple(&format!("full-{index}"), index * 5_000, 1.0))
            .collect();
        assert!(outbox
            .store_closed(&many, &[rejected(9, "late")], 9)
            .is_err());
        outbox.set_page_limit(1 << 30).unwrap();
        assert_eq!(check(&mut outbox, "a rolled-back store").queued, 40);
        // The planted REPLACE deletes a stored row before its insert.
        outbox.planted = PlantedBugs::NONE.with(Bug::ReplaceStoredTuple);
        outbox.store_closed(&tuples[..2], &[], 9).unwrap();
        outbox.planted = PlantedBugs::NONE;
        assert_eq!(check(&mut outbox, "a planted replace").queued, 40);

        let ids: Vec<i64> = outbox.all_tuples().unwrap().iter().map(|t| t.id).collect();
        outbox.mark_sent(&ids[..25], 10).unwrap();
        outbox.mark_sent(&[ids[3], ids[30], ids[32]], 11).unwrap();
        let counts = check(&mut outbox, "marking sent, with resends");
        assert_eq!((counts.queued, counts.sent), (13, 27));
        let answers: Vec<TupleAck> = ids[..20]
            .iter()
            .enumerate()
            .map(|(index, id)| {
                let outcome = if index % 7 == 0 {
                    TupleOutcome::Conflict
                } else {
                    TupleOutcome::Stored
                };
                answer(*id, outcome)
            })
            .collect();
        outbox
            .mark_acked(&answers, &under(answers.len(), 3), 100)
            .unwrap();
        outbox.mark_acked(&answers[..5], &under(5, 4), 101).unwrap();
        let counts = check(&mut outbox, "acks, with repeats and conflicts");
        assert_eq!((counts.sent, counts.acked, counts.conflicts), (7, 20, 3));
        assert_eq!(counts.oldest_unacked_queued_ms, Some(7));
        outbox
            .mark_acked(&[answer(ids[25], TupleOutcome::Stored)], &under(1, 3), 900)
            .unwrap();
        assert_eq!(outbox.delete_acked_before(500).unwrap(), 20);
        let counts = check(&mut outbox, "a retention sweep");
        assert_eq!((counts.acked, counts.conflicts), (1, 0));
        drop(outbox);

        let mut reader = SqliteOutbox::open_read_only(&path).unwrap();
        assert!(reader.has_counts);
        let read = check(&mut reader, "a read-only reopen");
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        assert_eq!(check(&mut outbox, "a reopen"), read);
        let rest: Vec<TupleAck> = ids
            .iter()
            .filter(|id| **id != ids[25] && **id > ids[19])
            .map(|id| answer(*id, TupleOutcome::Stored))
            .collect();
        outbox
            .mark_acked(&rest, &under(rest.len(), 3), 1_000)
            .unwrap();
        let counts = check(&mut outbox, "everything acknowledged");
        assert_eq!((counts.queued, counts.sent, counts.acked), (0, 0, 20));
        assert_eq!(counts.oldest_unacked_queued_ms, None);

        for (sql, uses) in [
            (COUNTS_READ_SQL, "outbox_counts"),
            (OLDEST_UNACKED_SQL, "power_averages_unacked"),
        ] {
            let plan: Vec<String> = outbox
                .connection
                .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
                .unwrap()
                .query_map([], |row| row.get(3))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                plan.iter().all(|step| step.contains(uses)),
                "{sql}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|step| step.contains("rejected")
                    || (uses == "outbox_counts" && step.contains("power_averages"))),
                "{sql}: {plan:?}"
            );
        }
    }

    /// Goal: a database made before `outbox_counts` gets it, filled with
    /// what it holds, at its first read-write open; a read-only open of
    /// such a database still counts, by scanning; rows written by a binary
    /// that did not keep the counts are counted at the next open. Method:
    /// the table dropped by hand from a database with rows, then rows
    /// changed by hand.
    #[test]
    fn an_older_database_gains_its_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        let ids = stored_ids(&mut outbox, 5);
        outbox.mark_sent(&ids[..2], 2).unwrap();
        let expected = outbox.status().unwrap();
        outbox
            .connection
            .execute_batch("DROP TABLE outbox_counts")
            .unwrap();
        drop(outbox);
        let mut reader = SqliteOutbox::open_read_only(&path).unwrap();
        assert!(!reader.has_counts);
        assert_eq!(reader.status().unwrap(), expected);
        drop(reader);
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        assert_eq!(outbox.status().unwrap(), expected);
        outbox.mark_sent(&ids[2..3], 3).unwrap();
        assert_eq!(outbox.status().unwrap(), scanned(&outbox));
        // A binary that does not keep the counts (a downgrade) writes:
        // the next open counts again.
        outbox
            .connection
            .execute_batch(
                "UPDATE power_averages SET sent = 2, postal_code = '01067' WHERE sent = 0;
                 INSERT INTO rejected (partition, offset, raw, kind, reason, rejected_at)
                 VALUES (0, 1, x'00', 'late', 'by hand', 0);",
            )
            .unwrap();
        assert_ne!(outbox.status().unwrap(), scanned(&outbox));
        drop(outbox);
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        let counts = outbox.status().unwrap();
        assert_eq!(counts, scanned(&outbox));
        assert_eq!((counts.queued, counts.acked, counts.late), (0, 2, 1));
    }

    /// One epoch for each of `count` answers.
    fn under(count: usize, epoch: u64) -> Vec<Option<u64>> {
        vec![Some(epoch); count]
    }

    /// A set of current bucket epochs: `known` in the first buckets, the
    /// rest not known (0).
    fn current(known: &[u64]) -> [u64; STORE_BUCKETS] {
        let mut epochs = [0; STORE_BUCKETS];
        epochs[..known.len()].copy_from_slice(known);
        epochs
    }

    fn answer(tuple_id: i64, outcome: TupleOutcome) -> TupleAck {
        TupleAck {
            ack: Ack {
                tuple_id,
                postal_code: code("01067"),
            },
            outcome,
        }
    }

    /// Goal: each answer records the epoch its tuple stands under, on new
    /// and repeated acks alike; the refill scan returns exactly the
    /// acknowledged tuples under another epoch (or none), by id from its
    /// cursor, through the acknowledged rows' index; a conflict is recorded
    /// once and stays, and `status` counts it.
    #[test]
    fn acknowledged_tuples_keep_their_epoch_and_the_refill_finds_the_others() {
        let (_dir, mut outbox) = open();
        let ids = stored_ids(&mut outbox, 6);
        outbox
            .mark_plain(&[answer(ids[0], TupleOutcome::Stored).ack], 1)
            .unwrap();
        let under_seven: Vec<TupleAck> = ids[1..4]
            .iter()
            .map(|id| answer(*id, TupleOutcome::Stored))
            .collect();
        // One batch across buckets: each answer under its own bucket's epoch.
        outbox
            .mark_acked(&under_seven, &[Some(7), Some(8), Some(7)], 2)
            .unwrap();
        let big = u64::MAX - 1;
        let conflict = [answer(ids[4], TupleOutcome::Conflict)];
        let outcome = outbox
            .mark_acked(&conflict, &under(conflict.len(), big), 3)
            .unwrap();
        assert_eq!((outcome.acked, outcome.value_conflicts), (1, 1));
        let scanned = |outbox: &mut SqliteOutbox, epochs: &[u64], after, limit| -> Vec<i64> {
            outbox
                .acked_not_under(&current(epochs), after, limit)
                .unwrap()
                .iter()
                .map(|tuple| tuple.tuple_id)
                .collect()
        };
        // None recorded (ids[0]) is always shipped; the others when their
        // epoch is in none of the buckets.
        assert_eq!(scanned(&mut outbox, &[7, 8], 0, 10), [ids[0], ids[4]]);
        assert_eq!(
            scanned(&mut outbox, &[8, big], 0, 10),
            [ids[0], ids[1], ids[3]]
        );
        assert_eq!(scanned(&mut outbox, &[7], 0, 10), [ids[0], ids[2], ids[4]]);
        assert_eq!(scanned(&mut outbox, &[big], 0, 10), &ids[..4]);
        assert_eq!(scanned(&mut outbox, &[big], ids[1], 2), [ids[2], ids[3]]);
        assert_eq!(scanned(&mut outbox, &[], 0, 10), &ids[..5], "nothing known");
        assert_eq!(outbox.acked_not_under_count(&current(&[7, 8])).unwrap(), 2);
        assert_eq!(outbox.acked_not_under_count(&current(&[])).unwrap(), 5);
        // Shipped again, under a new epoch: a repeat that moves the epoch,
        // and the conflict stays although this answer has none.
        let again: Vec<TupleAck> = [ids[0], ids[4]]
            .iter()
            .map(|id| answer(*id, TupleOutcome::Stored))
            .collect();
        let outcome = outbox
            .mark_acked(&again, &under(again.len(), 7), 4)
            .unwrap();
        assert_eq!((outcome.acked, outcome.repeated), (0, 2));
        assert_eq!(outbox.acked_not_under_count(&current(&[7, 8])).unwrap(), 0);
        assert!(scanned(&mut outbox, &[7, 8], 0, 10).is_empty());
        let rows = outbox.all_tuples().unwrap();
        assert_eq!(rows[4].acked_epoch, Some(7));
        assert_eq!(rows[2].acked_epoch, Some(8));
        assert!(rows[4].conflict && !rows[3].conflict);
        assert_eq!(rows[5].acked_epoch, None, "never acknowledged");
        assert_eq!(outbox.status().unwrap().conflicts, 1);
        let parameters: Vec<i64> = (0..17).collect();
        let plan: String = outbox
            .connection
            .query_row(
                &format!("EXPLAIN QUERY PLAN {ACKED_NOT_UNDER_SQL}"),
                params_from_iter(parameters),
                |row| row.get(3),
            )
            .unwrap();
        // The row id range, not an index and not a full scan.
        assert!(plan.contains("USING INTEGER PRIMARY KEY"), "{plan}");
        let statement = outbox
            .connection
            .prepare_cached(ACKED_NOT_UNDER_SQL)
            .unwrap();
        assert_eq!(statement.get_status(StatementStatus::RePrepare), 0);
    }

    /// Goal: a database made before the epoch and conflict columns gains
    /// them on open and keeps its tuples, acknowledged ones under no epoch
    /// (so a refill ships them). Method: the first schema by hand, a row
    /// at flag 2, then `open`.
    #[test]
    fn an_older_database_gains_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let old = Connection::open(&path).unwrap();
            old.execute_batch(SCHEMA).unwrap();
            old.execute(
                "INSERT INTO power_averages (node_id, window_start, average, samples,
                 postal_code, sent, queued_at) VALUES ('h', 0, 1.5, 2, '01067', 2, 0)",
                [],
            )
            .unwrap();
        }
        let mut outbox = SqliteOutbox::open(&path).unwrap();
        let rows = outbox.all_tuples().unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].acked_epoch, rows[0].conflict), (None, false));
        assert_eq!(
            outbox.acked_not_under(&current(&[7]), 0, 10).unwrap().len(),
            1
        );
        drop(outbox);
        assert!(
            SqliteOutbox::open(&path).is_ok(),
            "opening twice adds nothing twice"
        );
    }

    /// Goal: the retention sweep deletes only acknowledged tuples older
    /// than the cutoff, at most one chunk per call, and a sweep with
    /// nothing expired deletes nothing. Method: a chunk and a half of old
    /// acknowledged rows, a young one and an unacknowledged one.
    #[test]
    fn retention_deletes_old_acknowledged_tuples_in_chunks() {
        let (_dir, mut outbox) = open();
        let count = RETENTION_CHUNK_ROWS as i64 * 3 / 2;
        let ids = stored_ids(&mut outbox, count + 2);
        let answers: Vec<TupleAck> = ids[..count as usize]
            .iter()
            .map(|id| answer(*id, TupleOutcome::Stored))
            .collect();
        outbox
            .mark_acked(&answers, &under(answers.len(), 3), 100)
            .unwrap();
        outbox
            .mark_acked(
                &[answer(ids[count as usize], TupleOutcome::Stored)],
                &under(1, 3),
                900,
            )
            .unwrap();
        assert!(DELETE_ACKED_BEFORE_SQL.contains(&format!("LIMIT {RETENTION_CHUNK_ROWS})")));
        let plan: Vec<String> = outbox
            .connection
            .prepare(&format!("EXPLAIN QUERY PLAN {DELETE_ACKED_BEFORE_SQL}"))
            .unwrap()
            .query_map([0], |row| row.get(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            plan.iter()
                .any(|step| step.starts_with("SEARCH power_averages") && step.contains("id<?)")),
            "the delete walks an id range: {plan:?}"
        );
        assert_eq!(
            outbox.delete_acked_before(100).unwrap(),
            0,
            "nothing older than 100"
        );
        assert_eq!(
            outbox.delete_acked_before(500).unwrap(),
            RETENTION_CHUNK_ROWS
        );
        assert_eq!(
            outbox.delete_acked_before(500).unwrap(),
            count as usize - RETENTION_CHUNK_ROWS
        );
        assert_eq!(outbox.delete_acked_before(500).unwrap(), 0);
        let left: Vec<(i64, u8)> = outbox
            .all_tuples()
            .unwrap()
            .iter()
            .map(|row| (row.id, row.sent))
            .collect();
        assert_eq!(
            left,
            [(ids[count as usize], 2), (ids[count as usize + 1], 0)]
        );
    }
}

//! The disk's own tests: SQLite through the shim, then power losses and
//! process crashes, then what a new connection finds.

use super::*;
use rusqlite::{Connection, OpenFlags};

fn open(path: &Path) -> Connection {
    let connection = Connection::open_with_flags_and_vfs(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
        VFS_NAME,
    )
    .unwrap();
    connection
        .execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v BLOB)")
        .unwrap();
    connection
}

fn insert(connection: &Connection, synchronous: &str, keys: Range<i64>) {
    connection
        .execute_batch(&format!("PRAGMA synchronous = {synchronous}"))
        .unwrap();
    connection.execute_batch("BEGIN").unwrap();
    for key in keys {
        // Rows of a few sectors each, so that transactions span pages.
        connection
            .execute("INSERT INTO t VALUES (?1, zeroblob(700))", [key])
            .unwrap();
    }
    connection.execute_batch("COMMIT").unwrap();
}

fn keys(connection: &Connection) -> Vec<i64> {
    connection
        .prepare("SELECT k FROM t ORDER BY k")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn integrity(connection: &Connection) -> String {
    connection
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap()
}

fn setup() -> (tempfile::TempDir, SimDisk, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let disk = SimDisk::attach(dir.path()).unwrap();
    let path = disk.dir().join("test.db");
    (dir, disk, path)
}

/// Goal: a transaction committed with `synchronous=FULL` survives a power
/// loss, one committed with NORMAL after it does not (its WAL frames were
/// never synced), and the database is intact. Method: one of each, a loss
/// keeping nothing, the connection dropped, a new one.
#[test]
fn a_power_loss_keeps_what_was_synced_and_loses_the_rest() {
    let (_dir, disk, path) = setup();
    let connection = open(&path);
    insert(&connection, "FULL", 0..10);
    insert(&connection, "NORMAL", 10..20);
    assert_eq!(keys(&connection).len(), 20);
    let loss = disk.power_loss(7, 0).unwrap();
    assert!(loss.sectors_lost > 0, "{loss:?}");
    assert_eq!(loss.sectors_kept, 0);
    drop(connection);
    assert!(!shm_path(&path).exists(), "shared memory does not survive");
    let reopened = open(&path);
    assert_eq!(integrity(&reopened), "ok");
    assert_eq!(keys(&reopened), (0..10).collect::<Vec<_>>());
}

/// Goal: a process crash keeps every write, synced or not, and the dying
/// connection neither checkpoints nor removes the WAL (a killed process
/// runs no cleanup). Method: a NORMAL commit, a crash, the connection
/// dropped, the WAL's size before and after, a new connection.
#[test]
fn a_process_crash_keeps_unsynced_writes_and_skips_the_close() {
    let (_dir, disk, path) = setup();
    let connection = open(&path);
    insert(&connection, "NORMAL", 0..5);
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let wal_len = std::fs::metadata(&wal).unwrap().len();
    assert!(wal_len > 0);
    disk.process_crash();
    drop(connection);
    assert_eq!(
        std::fs::metadata(&wal).unwrap().len(),
        wal_len,
        "no checkpoint, no delete"
    );
    let reopened = open(&path);
    assert_eq!(keys(&reopened), (0..5).collect::<Vec<_>>());
    // Only the page cache holds them: a later power loss loses them
    // (unless a clean close checkpoints and syncs them first).
    disk.process_crash();
    drop(reopened);
    disk.power_loss(1, 0).unwrap();
    let after = open(&path);
    assert_eq!(integrity(&after), "ok");
    assert!(keys(&after).is_empty());
}

/// Goal: a connection from before the loss changes nothing on disk after
/// it, whatever it does. Method: writes, a checkpoint and a close through
/// the old connection after a loss, then the files compared and a new
/// connection.
#[test]
fn the_dead_process_writes_nothing() {
    let (_dir, disk, path) = setup();
    let connection = open(&path);
    insert(&connection, "FULL", 0..3);
    disk.power_loss(3, 0).unwrap();
    let snapshot = |path: &Path| std::fs::read(path).unwrap_or_default();
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let before = (snapshot(&path), snapshot(&wal));
    let _ = connection.execute_batch("PRAGMA synchronous = FULL; INSERT INTO t VALUES (99, x'00')");
    let _ = connection.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
    drop(connection);
    assert_eq!((snapshot(&path), snapshot(&wal)), before);
    let reopened = open(&path);
    assert_eq!(keys(&reopened), vec![0, 1, 2]);
}

/// Goal: a new connection cannot open the database while the dead
/// process's connection is still open (they would share one shared-memory
/// mapping). Method: open, loss, open again.
#[test]
fn a_database_cannot_be_reopened_before_the_dead_connection_is_dropped() {
    let (_dir, disk, path) = setup();
    let connection = open(&path);
    disk.power_loss(0, 0).unwrap();
    let refused = Connection::open_with_flags_and_vfs(&path, OpenFlags::default(), VFS_NAME)
        .and_then(|second| {
            second.query_row("SELECT COUNT(*) FROM t", [], |row| row.get::<_, i64>(0))
        });
    assert!(refused.is_err());
    drop(connection);
    assert_eq!(
        open(&path)
            .query_row("SELECT COUNT(*) FROM t", [], |row| row.get::<_, i64>(0))
            .unwrap(),
        0
    );
}

/// Goal: whatever share of unsynced sectors reaches the device, torn at
/// sector granularity and in any order, SQLite in WAL mode keeps every
/// transaction committed with FULL and its database passes
/// `integrity_check`; the undo log is empty after each loss and never
/// holds more than the files. Method: many rounds of FULL and NORMAL
/// commits, updates and checkpoints, each ended by a loss with a seeded
/// share kept, then a new connection.
#[test]
fn torn_unsynced_writes_never_corrupt_a_wal_database() {
    let (_dir, disk, path) = setup();
    let mut synced: Vec<i64> = Vec::new();
    let mut next = 0;
    for round in 0..60_u64 {
        let connection = open(&path);
        assert_eq!(integrity(&connection), "ok", "round {round}");
        let present = keys(&connection);
        for key in &synced {
            assert!(
                present.contains(key),
                "round {round}: synced row {key} lost"
            );
        }
        for step in 0..(round % 5 + 1) {
            insert(&connection, "FULL", next..next + 4);
            synced.extend(next..next + 4);
            next += 4;
            insert(&connection, "NORMAL", next..next + 3);
            next += 3;
            connection
                .execute(
                    "UPDATE t SET v = zeroblob(900) WHERE k % 3 = ?1",
                    [step as i64 % 3],
                )
                .unwrap();
            if (round + step) % 4 == 0 {
                connection
                    .execute_batch("PRAGMA wal_checkpoint(PASSIVE)")
                    .unwrap();
            }
        }
        let files: u64 = [
            path.clone(),
            PathBuf::from(format!("{}-wal", path.display())),
        ]
        .iter()
        .map(|file| std::fs::metadata(file).map(|meta| meta.len()).unwrap_or(0))
        .sum();
        assert!(disk.undo_bytes() <= files, "round {round}");
        disk.power_loss(round, (round * 37 % 101) as u8).unwrap();
        assert_eq!(disk.undo_bytes(), 0);
        drop(connection);
    }
    let connection = open(&path);
    assert_eq!(integrity(&connection), "ok");
}

/// Goal: files outside an attached directory pass through untouched, and
/// a directory takes one disk at a time. Method: a database elsewhere
/// through the VFS, and a second attach.
#[test]
fn only_attached_directories_are_tracked() {
    let (_dir, disk, _) = setup();
    assert!(SimDisk::attach(disk.dir()).is_err());
    let elsewhere = tempfile::tempdir().unwrap();
    let path = elsewhere.path().join("free.db");
    let connection = open(&path);
    insert(&connection, "OFF", 0..3);
    disk.power_loss(1, 0).unwrap();
    assert_eq!(keys(&connection).len(), 3);
    assert_eq!(disk.undo_bytes(), 0);
}

/// Goal: a full or failing disk refuses SQLite's transactions with the
/// codes a real one gives, loses nothing committed before, corrupts
/// nothing, and works again once the failure ends; a power loss after it
/// still keeps what was synced. Method: commit rows, fail the disk each
/// way, try to commit more (a growing insert), check the error code, the
/// rows and `integrity_check`, then heal and commit again.
#[test]
fn a_full_or_failing_disk_refuses_transactions_and_recovers() {
    let (_dir, disk, path) = setup();
    let connection = open(&path);
    insert(&connection, "FULL", 0..5);
    for (failure, expected) in [
        (DiskFailure::Full, rusqlite::ErrorCode::DiskFull),
        (DiskFailure::Io, rusqlite::ErrorCode::SystemIoFailure),
    ] {
        disk.set_failure(Some(failure));
        let before = disk.failed_operations();
        let result = connection.execute_batch(
            "PRAGMA synchronous = FULL; BEGIN; \
             INSERT INTO t SELECT k + 1000, zeroblob(4000) FROM t; COMMIT",
        );
        let _ = connection.execute_batch("ROLLBACK");
        let code = result.unwrap_err().sqlite_error_code();
        assert_eq!(code, Some(expected), "{failure:?}");
        assert!(
            disk.failed_operations() > before,
            "{failure:?} refused something"
        );
        disk.set_failure(None);
        assert_eq!(keys(&connection), (0..5).collect::<Vec<_>>(), "{failure:?}");
        assert_eq!(integrity(&connection), "ok");
    }
    insert(&connection, "FULL", 5..8);
    drop(connection);
    disk.power_loss(3, 0).unwrap();
    let connection = open(&path);
    assert_eq!(keys(&connection), (0..8).collect::<Vec<_>>());
    assert_eq!(integrity(&connection), "ok");
}

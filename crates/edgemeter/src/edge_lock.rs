//! One edge per outbox: an exclusive `flock` on `<db>.lock`, taken before
//! the database is opened and held for the life of the process.
//!
//! Two edges on one database would ship each other's tuples and, worse,
//! commit to one consumer group and interleave its offsets, so a restart
//! resumes at the other edge's position and builds partial windows. The
//! cloud refuses a second live instance of an edge id too (its instance
//! lease); this lock catches the same mistake on one machine before
//! anything is read or written. `flock` is released by the kernel when the
//! process ends however it ends, so a crashed edge never leaves a stale
//! lock behind; the file itself stays, holding the last holder's pid for
//! the refusal's message.

use crate::command_error::CommandError;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// The most bytes of the lock file read for the holder's pid: a pid and a
/// newline, with room to spare; a file someone filled is not read whole.
const LOCK_FILE_BYTES_MAX: u64 = 64;

/// The lock, held until dropped (the end of the process).
#[derive(Debug)]
pub struct EdgeLock {
    /// Open for the life of the lock: closing it would release the flock.
    _file: File,
    path: PathBuf,
}

/// The lock file of an outbox: `<db>.lock`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut path = db.as_os_str().to_owned();
    path.push(".lock");
    PathBuf::from(path)
}

impl EdgeLock {
    /// Takes the lock of the outbox at `db`, or refuses with one line that
    /// names the pid holding it.
    pub fn acquire(db: &Path) -> Result<EdgeLock, CommandError> {
        let path = lock_path(db);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|error| {
                CommandError::config(format!(
                    "cannot open the edge's lock file {}: {error}; check the permissions of the --db directory",
                    path.display()
                ))
            })?;
        // SAFETY: `flock` on a descriptor this function owns; it reads no
        // memory of ours.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let error = std::io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(CommandError::config(format!(
                    "cannot lock {}: {error}",
                    path.display()
                )));
            }
            let holder = holder_pid(&mut file)
                .map_or("an unknown pid".to_owned(), |pid| format!("pid {pid}"));
            return Err(CommandError::config(format!(
                "another edge ({holder}) is running on {}: it holds {}; one edge per database",
                db.display(),
                path.display()
            )));
        }
        write_pid(&mut file).map_err(|error| {
            CommandError::config(format!("cannot write {}: {error}", path.display()))
        })?;
        Ok(EdgeLock { _file: file, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The pid the holder wrote, if the file holds one.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.take(LOCK_FILE_BYTES_MAX)
        .read_to_string(&mut text)
        .ok()?;
    text.trim().parse().ok()
}

/// Replaces the file's content with this process's pid, synced, so the
/// next refused edge can name it.
fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: the lock is exclusive per database, refused with the holder's
    /// pid, released when dropped, and independent per database. Method:
    /// two acquisitions in one process (flock locks belong to the open
    /// file, so a second open conflicts even here).
    #[test]
    fn one_lock_per_database() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("edge.db");
        let held = EdgeLock::acquire(&db).unwrap();
        assert_eq!(held.path(), dir.path().join("edge.db.lock"));
        let refused = EdgeLock::acquire(&db).unwrap_err().to_string();
        assert!(
            refused.contains(&format!("pid {}", std::process::id())),
            "{refused}"
        );
        assert!(refused.contains("edge.db.lock"), "{refused}");
        let other = EdgeLock::acquire(&dir.path().join("other.db")).unwrap();
        drop(held);
        let again = EdgeLock::acquire(&db).unwrap();
        drop((again, other));
    }
}

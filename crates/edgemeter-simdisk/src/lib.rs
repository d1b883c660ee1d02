//! `edgemeter-simdisk` is the simulation's disk: a SQLite VFS whose
//! unsynced writes vanish in a power loss, so that the harness can cut the
//! edge host's power and see what SQLite, and the edge on top of it, keep.
//!
//! # Layout
//! - `vfs` (the crate's only unsafe code): a shim VFS registered with
//!   SQLite as [`VFS_NAME`]. It wraps the default `unix` VFS, so files stay
//!   real files in their directory and locking and shared memory are the
//!   unix VFS's own; it reports every write, truncation, sync and delete to
//!   the [`SimDisk`] of the file's directory before passing it on.
//! - this file: [`SimDisk`], one per directory, which keeps for each file
//!   the content it had at its last sync and applies a power loss.
//!
//! # The model
//! Between two syncs of a file, the operating system may write any of its
//! dirty sectors to the device, in any order, or none. A sync makes the
//! file's content and length durable. So for every file the disk keeps an
//! undo log: the length at the last `xSync`, and the pre-image of every
//! [`SECTOR_BYTES`] sector written or truncated away since, taken at its
//! first change (at most one per sector of the file, so the log never holds
//! more than the file). [`SimDisk::power_loss`]
//! 1. makes every file handle opened before it inert: its later writes,
//!    truncations, syncs and deletes change nothing, and it cannot take a
//!    lock, so the dying process's connection cannot checkpoint or remove
//!    the WAL while it is dropped;
//! 2. rolls every file back to its last synced content, keeping a seeded
//!    random share of the unsynced sectors (the writes the page cache had
//!    already flushed): writes are torn at sector granularity, never
//!    inside a sector, and never touch bytes outside the written range
//!    (the unix VFS reports `SQLITE_IOCAP_POWERSAFE_OVERWRITE` and no
//!    atomic or sequential writes, so SQLite assumes exactly this much);
//! 3. deletes each database's `-shm` file: shared memory does not survive.
//!
//! [`SimDisk::process_crash`] is a crash of the process alone: handles go
//! inert as in a power loss (a killed process runs no cleanup, so SQLite's
//! checkpoint on close does not happen either), but every write stays, as
//! the operating system's page cache keeps it.
//!
//! [`SimDisk::set_failure`] makes the device fail for a while, as a full
//! or dying disk does: with [`DiskFailure::Full`] every write that would
//! grow a file fails with `SQLITE_FULL` (writes inside a file's current
//! length still succeed, as a file system with no free block still
//! overwrites allocated ones); with [`DiskFailure::Io`] every write,
//! truncation and sync fails with an `SQLITE_IOERR_*` code. A failed
//! operation changes nothing on the disk and records nothing. Handles of a
//! dead process stay inert whatever the failure.
//!
//! Not modelled: directory entries (a file created or deleted stays so
//! without a sync of its directory), a drive that acknowledges a sync it
//! did not do, bit rot, and a dying device. Writes through memory-mapped
//! IO (`xFetch`) are not offered, so SQLite never uses them.
//!
//! Deterministic: no clock, no threads; the sectors kept come from the seed
//! the caller passes. A file in a directory with no disk attached passes
//! through the shim untouched.

mod vfs;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// The name the VFS is registered under; pass it to SQLite's open.
pub const VFS_NAME: &str = "edgemeter-simdisk";

/// The granularity of torn writes: a disk sector. 512 bytes is the
/// smallest sector a device reports, so tearing here is at least as hard
/// on SQLite as any real device with the unix VFS's 4,096-byte sectors.
pub const SECTOR_BYTES: u64 = 512;

/// Registers the VFS with SQLite (once per process; later calls are free).
pub fn register() -> Result<&'static str, String> {
    vfs::register().map(|()| VFS_NAME)
}

/// What one power loss did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerLoss {
    /// Files that had unsynced changes.
    pub files_changed: usize,
    /// Unsynced sectors rolled back to their synced content.
    pub sectors_lost: u64,
    /// Unsynced sectors that reached the device before the loss.
    pub sectors_kept: u64,
}

/// One file's undo log since its last sync.
#[derive(Debug)]
struct FileLog {
    synced_len: u64,
    /// Sector index -> its bytes at the last sync (empty past the synced
    /// length). Only a sector's first change is recorded.
    pre_images: BTreeMap<u64, Vec<u8>>,
}

/// How the device fails while [`SimDisk::set_failure`] says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskFailure {
    /// No free block: writes that grow a file fail with `SQLITE_FULL`.
    Full,
    /// Every write, truncation and sync fails with an I/O error.
    Io,
}

#[derive(Debug, Default)]
struct DiskState {
    /// Handles of older generations are inert.
    generation: u64,
    /// How the device fails now, if it does.
    failure: Option<DiskFailure>,
    /// Operations refused by a failure, over the disk's life.
    failed_operations: u64,
    /// Handles of the current generation that are open.
    live_handles: usize,
    /// Handles of older generations that are still open.
    stale_handles: usize,
    files: BTreeMap<PathBuf, FileLog>,
    main_databases: BTreeSet<PathBuf>,
}

/// What the VFS does with an operation of a handle.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    Proceed,
    /// The handle belongs to a process that died: do nothing, report success.
    Inert,
    /// The pre-image could not be read: fail the operation.
    Failed,
}

/// The part of a disk the VFS's handles share.
#[derive(Debug)]
pub(crate) struct DiskCore {
    state: Mutex<DiskState>,
}

/// Every attached disk by its (canonical) directory. Several seeds run on
/// several threads at once, each with its own directory.
static DISKS: Mutex<BTreeMap<PathBuf, Weak<DiskCore>>> = Mutex::new(BTreeMap::new());

fn disks() -> MutexGuard<'static, BTreeMap<PathBuf, Weak<DiskCore>>> {
    DISKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The disk of the directory `path` lies in, if one is attached.
pub(crate) fn disk_of(path: &Path) -> Option<Arc<DiskCore>> {
    let dir = path.parent()?;
    disks().get(dir).and_then(Weak::upgrade)
}

/// The simulated disk under one directory: every file SQLite opens there
/// through [`VFS_NAME`] is tracked. Detached when dropped.
#[derive(Debug)]
pub struct SimDisk {
    dir: PathBuf,
    core: Arc<DiskCore>,
}

impl SimDisk {
    /// Attaches a disk to `dir` (which must exist) and registers the VFS.
    pub fn attach(dir: &Path) -> io::Result<SimDisk> {
        register().map_err(io::Error::other)?;
        let dir = dir.canonicalize()?;
        let core = Arc::new(DiskCore {
            state: Mutex::new(DiskState::default()),
        });
        let mut disks = disks();
        if disks.get(&dir).and_then(Weak::upgrade).is_some() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} already has a simulated disk", dir.display()),
            ));
        }
        disks.insert(dir.clone(), Arc::downgrade(&core));
        Ok(SimDisk { dir, core })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Cuts the power (see the crate doc): every handle open now is inert,
    /// every file is rolled back to its last synced content except for a
    /// share of about `kept_percent` of its unsynced sectors drawn from
    /// `seed`, and each database's `-shm` file is gone. The caller drops
    /// the dying process's connections before anything opens the files
    /// again (the unix VFS shares one shared-memory mapping per file in a
    /// process; a new handle would otherwise join the old one).
    pub fn power_loss(&self, seed: u64, kept_percent: u8) -> io::Result<PowerLoss> {
        assert!(kept_percent <= 100, "kept_percent is a percentage");
        let mut state = self.core.lock();
        state.kill_handles();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut report = PowerLoss::default();
        let mut gone = Vec::new();
        for (path, log) in state.files.iter_mut() {
            match roll_back(path, log, &mut rng, kept_percent)? {
                Some((lost, kept)) => {
                    report.files_changed += usize::from(lost + kept > 0);
                    report.sectors_lost += lost;
                    report.sectors_kept += kept;
                }
                None => gone.push(path.clone()),
            }
        }
        for path in gone {
            state.files.remove(&path);
        }
        for database in &state.main_databases {
            remove_if_present(&shm_path(database))?;
        }
        Ok(report)
    }

    /// The process dies, the machine does not: handles go inert, and
    /// everything written stays (unsynced writes are still lost in a later
    /// power loss, as the page cache would lose them).
    pub fn process_crash(&self) {
        self.core.lock().kill_handles();
    }

    /// From now on the device fails as `failure` says (see the crate
    /// doc), or works again with `None`.
    pub fn set_failure(&self, failure: Option<DiskFailure>) {
        self.core.lock().failure = failure;
    }

    /// Writes, truncations and syncs a failure refused so far: whether a
    /// failure window met any work.
    pub fn failed_operations(&self) -> u64 {
        self.core.lock().failed_operations
    }

    /// Bytes of pre-images held, over every file: for tests and bounds.
    pub fn undo_bytes(&self) -> u64 {
        let state = self.core.lock();
        state
            .files
            .values()
            .flat_map(|log| log.pre_images.values())
            .map(|bytes| bytes.len() as u64)
            .sum()
    }
}

impl Drop for SimDisk {
    fn drop(&mut self) {
        let mut disks = disks();
        let ours = disks
            .get(&self.dir)
            .is_some_and(|weak| std::ptr::eq(weak.as_ptr(), Arc::as_ptr(&self.core)));
        if ours {
            disks.remove(&self.dir);
        }
    }
}

fn shm_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push("-shm");
    PathBuf::from(name)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Rolls one file back to its synced content, keeping each unsynced sector
/// that still exists with probability `kept_percent`. Returns the sectors
/// lost and kept, or `None` when the file no longer exists.
fn roll_back(
    path: &Path,
    log: &mut FileLog,
    rng: &mut SmallRng,
    kept_percent: u8,
) -> io::Result<Option<(u64, u64)>> {
    let file = match OpenOptions::new().write(true).open(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        other => other?,
    };
    let current_len = file.metadata()?.len();
    let mut kept_sectors = BTreeSet::new();
    let mut new_len = log.synced_len;
    for &sector in log.pre_images.keys() {
        let start = sector * SECTOR_BYTES;
        // A sector truncated away has nothing left to keep.
        let keep = start < current_len && rng.gen_range(0..100u8) < kept_percent;
        if keep {
            kept_sectors.insert(sector);
            new_len = new_len.max((start + SECTOR_BYTES).min(current_len));
        }
    }
    file.set_len(new_len)?;
    for (&sector, pre_image) in &log.pre_images {
        if kept_sectors.contains(&sector) {
            continue;
        }
        let start = sector * SECTOR_BYTES;
        file.write_all_at(pre_image, start)?;
        // Past the synced length a lost sector that the file still covers
        // (a later sector was kept) reads as zeros, as a fresh block does.
        let written_end = start + pre_image.len() as u64;
        let zero_end = (start + SECTOR_BYTES).min(new_len);
        if zero_end > written_end {
            file.write_all_at(&vec![0; (zero_end - written_end) as usize], written_end)?;
        }
    }
    let kept = kept_sectors.len() as u64;
    let lost = log.pre_images.len() as u64 - kept;
    log.synced_len = new_len;
    log.pre_images.clear();
    Ok(Some((lost, kept)))
}

impl DiskState {
    fn kill_handles(&mut self) {
        self.generation += 1;
        self.stale_handles += self.live_handles;
        self.live_handles = 0;
    }

    fn log(&mut self, path: &Path) -> &mut FileLog {
        self.files
            .get_mut(path)
            .expect("every open file has a log from its open")
    }
}

impl FileLog {
    /// Records the synced content of every sector in `range` not recorded
    /// yet. `read` fills a buffer from the file at an offset.
    fn record(&mut self, range: Range<u64>, read: &mut dyn FnMut(u64, &mut [u8]) -> bool) -> bool {
        if range.is_empty() {
            return true;
        }
        let first = range.start / SECTOR_BYTES;
        let last = (range.end - 1) / SECTOR_BYTES;
        for sector in first..=last {
            if self.pre_images.contains_key(&sector) {
                continue;
            }
            let start = sector * SECTOR_BYTES;
            let end = (start + SECTOR_BYTES).min(self.synced_len);
            let mut pre_image = vec![0; end.saturating_sub(start) as usize];
            // Unchanged since the sync: the file still holds it.
            if !pre_image.is_empty() && !read(start, &mut pre_image) {
                return false;
            }
            self.pre_images.insert(sector, pre_image);
        }
        true
    }
}

impl DiskCore {
    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A handle opened `path` (`len` bytes now). Returns its generation, or
    /// `None` when a database is opened while handles of a dead process are
    /// still open (they would share its shared memory).
    pub(crate) fn opened(&self, path: &Path, len: u64, main_database: bool) -> Option<u64> {
        let mut state = self.lock();
        if main_database && state.stale_handles > 0 {
            return None;
        }
        state.live_handles += 1;
        state.files.entry(path.to_owned()).or_insert(FileLog {
            synced_len: len,
            pre_images: BTreeMap::new(),
        });
        if main_database {
            state.main_databases.insert(path.to_owned());
        }
        Some(state.generation)
    }

    pub(crate) fn closed(&self, generation: u64) {
        let mut state = self.lock();
        if generation == state.generation {
            state.live_handles -= 1;
        } else {
            state.stale_handles -= 1;
        }
    }

    /// The failure that refuses an operation of a live handle of
    /// `generation`, counted as refused: `grows` says whether it is a write
    /// past the file's current end (the only kind a full disk refuses).
    pub(crate) fn refusal(&self, generation: u64, grows: bool) -> Option<DiskFailure> {
        let mut state = self.lock();
        if state.generation != generation {
            return None;
        }
        let refused = match state.failure? {
            DiskFailure::Full if grows => DiskFailure::Full,
            DiskFailure::Full => return None,
            DiskFailure::Io => DiskFailure::Io,
        };
        state.failed_operations += 1;
        Some(refused)
    }

    pub(crate) fn is_live(&self, generation: u64) -> bool {
        self.lock().generation == generation
    }

    /// Before a handle writes or truncates away `range` of `path`.
    pub(crate) fn before_change(
        &self,
        path: &Path,
        generation: u64,
        range: Range<u64>,
        read: &mut dyn FnMut(u64, &mut [u8]) -> bool,
    ) -> Gate {
        let mut state = self.lock();
        if state.generation != generation {
            return Gate::Inert;
        }
        if state.log(path).record(range, read) {
            Gate::Proceed
        } else {
            Gate::Failed
        }
    }

    /// The length `path` had at its last sync: a truncation changes the
    /// sectors from its new length up to this.
    pub(crate) fn synced_len(&self, path: &Path) -> u64 {
        self.lock().log(path).synced_len
    }

    /// After a handle's sync of `path` succeeded with the file at `len`.
    pub(crate) fn synced(&self, path: &Path, generation: u64, len: u64) {
        let mut state = self.lock();
        if state.generation == generation {
            let log = state.log(path);
            log.synced_len = len;
            log.pre_images.clear();
        }
    }

    /// Whether a delete may happen now: not while a dead process's handles
    /// are still open (it is their connection's close asking).
    pub(crate) fn may_delete(&self) -> bool {
        self.lock().stale_handles == 0
    }

    pub(crate) fn deleted(&self, path: &Path) {
        let mut state = self.lock();
        state.files.remove(path);
    }
}

#[cfg(test)]
mod tests;

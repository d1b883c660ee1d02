//! The shim VFS: SQLite's `unix` VFS with every file operation reported to
//! the file's [`DiskCore`] first. This is the crate's only unsafe code.
//!
//! A shim file is SQLite's `sqlite3_file` header (our method table), a
//! pointer to the disk's handle, and the unix VFS's own file right behind
//! it in the same allocation (`szOsFile` is the sum of both), which every
//! method forwards to. Files outside an attached directory, and temporary
//! files without a name, are forwarded without a handle.

use crate::{disk_of, DiskCore, DiskFailure, Gate};
use rusqlite::ffi;
use std::ffi::{c_char, c_int, c_void, CStr, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Arc, OnceLock};

const NAME: &CStr = c"edgemeter-simdisk";

const _: () = assert!(
    std::mem::size_of::<ShimFile>().is_multiple_of(8),
    "the unix file behind the header must stay 8-byte aligned"
);

/// The unix VFS, found once at registration.
static UNIX: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// Our part of an open file. `#[repr(C)]` with SQLite's header first, as
/// SQLite requires of every VFS's file type.
#[repr(C)]
struct ShimFile {
    base: ffi::sqlite3_file,
    /// Null when the file is not on a simulated disk.
    handle: *mut Handle,
    /// The unix VFS's file, in the same allocation right after this header.
    inner: *mut ffi::sqlite3_file,
}

struct Handle {
    disk: Arc<DiskCore>,
    path: PathBuf,
    generation: u64,
}

pub(crate) fn register() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    // SAFETY: runs once per process; see `register_once`.
    REGISTERED
        .get_or_init(|| unsafe { register_once() })
        .clone()
}

/// # Safety
/// Called once (through a `OnceLock`): registers a VFS struct that is
/// leaked, so it outlives every connection, as SQLite requires.
unsafe fn register_once() -> Result<(), String> {
    // SAFETY: sqlite3_vfs_find initialises SQLite if needed and returns a
    // pointer to a static struct of SQLite's, or null.
    let unix = unsafe { ffi::sqlite3_vfs_find(c"unix".as_ptr()) };
    if unix.is_null() {
        return Err("SQLite has no unix VFS".to_owned());
    }
    // SAFETY: `unix` is non-null and points to SQLite's static VFS.
    let mut vfs = unsafe { *unix };
    let inner_bytes = usize::try_from(vfs.szOsFile).map_err(|error| error.to_string())?;
    vfs.szOsFile = c_int::try_from(std::mem::size_of::<ShimFile>() + inner_bytes)
        .map_err(|error| error.to_string())?;
    vfs.pNext = ptr::null_mut();
    vfs.zName = NAME.as_ptr();
    // The unix VFS's app data is its locking-style finder, read only by its
    // xOpen, which we call with the unix VFS itself. The methods copied
    // unchanged (randomness, sleep, time, last error, dlopen, system calls)
    // never read their VFS argument.
    vfs.pAppData = ptr::null_mut();
    vfs.xOpen = Some(open);
    vfs.xDelete = Some(delete);
    vfs.xAccess = Some(access);
    vfs.xFullPathname = Some(full_pathname);
    UNIX.store(unix, Ordering::Release);
    let vfs = Box::leak(Box::new(vfs));
    // SAFETY: `vfs` is a complete VFS struct that lives forever.
    let code = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
    if code == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("sqlite3_vfs_register failed with code {code}"))
    }
}

fn unix() -> *mut ffi::sqlite3_vfs {
    let unix = UNIX.load(Ordering::Acquire);
    assert!(!unix.is_null(), "the VFS is used only once registered");
    unix
}

/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn path_of(name: *const c_char) -> Option<PathBuf> {
    if name.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated, per the contract.
    let bytes = unsafe { CStr::from_ptr(name) }.to_bytes();
    Some(PathBuf::from(OsStr::from_bytes(bytes)))
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let unix = unix();
    let shim = file.cast::<ShimFile>();
    // SAFETY: SQLite hands us `szOsFile` bytes, 8-byte aligned: our header
    // and, right behind it, room for the unix VFS's file.
    let inner = unsafe {
        file.cast::<u8>()
            .add(std::mem::size_of::<ShimFile>())
            .cast::<ffi::sqlite3_file>()
    };
    // SAFETY: `shim` points to our header's bytes (see above). A null
    // method table tells SQLite not to close a file whose open failed.
    unsafe {
        ptr::write(
            shim,
            ShimFile {
                base: ffi::sqlite3_file {
                    pMethods: ptr::null(),
                },
                handle: ptr::null_mut(),
                inner,
            },
        );
    }
    // SAFETY: the unix VFS's own open, on its own file's memory, with
    // SQLite's arguments unchanged.
    let code = unsafe { ((*unix).xOpen.expect("unix xOpen"))(unix, name, inner, flags, out_flags) };
    if code != ffi::SQLITE_OK {
        return code;
    }
    // SAFETY: `name` comes from SQLite, null or NUL-terminated.
    let path = unsafe { path_of(name) };
    if let Some((path, disk)) = path.and_then(|path| disk_of(&path).map(|disk| (path, disk))) {
        // SAFETY: `inner` was opened successfully just above.
        let len = match unsafe { file_len(inner) } {
            Ok(len) => len,
            Err(code) => return unsafe { close_inner_with(inner, code) },
        };
        let main_database = flags & ffi::SQLITE_OPEN_MAIN_DB != 0;
        let Some(generation) = disk.opened(&path, len, main_database) else {
            // SAFETY: as above.
            return unsafe { close_inner_with(inner, ffi::SQLITE_CANTOPEN) };
        };
        let handle = Box::new(Handle {
            disk,
            path,
            generation,
        });
        // SAFETY: our header, initialised above.
        unsafe { (*shim).handle = Box::into_raw(handle) };
    }
    // SAFETY: our header; the method table is a static.
    unsafe { (*shim).base.pMethods = &IO_METHODS };
    ffi::SQLITE_OK
}

/// # Safety
/// `inner` is an open unix file; it is closed here.
unsafe fn close_inner_with(inner: *mut ffi::sqlite3_file, code: c_int) -> c_int {
    // SAFETY: per the contract, its method table is the unix VFS's.
    unsafe { ((*(*inner).pMethods).xClose.expect("xClose"))(inner) };
    code
}

/// # Safety
/// `inner` is an open unix file.
unsafe fn file_len(inner: *mut ffi::sqlite3_file) -> Result<u64, c_int> {
    let mut len: ffi::sqlite3_int64 = 0;
    // SAFETY: per the contract.
    let code = unsafe { ((*(*inner).pMethods).xFileSize.expect("xFileSize"))(inner, &mut len) };
    if code == ffi::SQLITE_OK {
        Ok(u64::try_from(len).unwrap_or(0))
    } else {
        Err(code)
    }
}

unsafe extern "C" fn delete(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    let unix = unix();
    // SAFETY: `name` comes from SQLite, NUL-terminated.
    let disk = unsafe { path_of(name) }.and_then(|path| disk_of(&path).map(|disk| (path, disk)));
    if let Some((_, disk)) = &disk {
        if !disk.may_delete() {
            return ffi::SQLITE_OK;
        }
    }
    // SAFETY: the unix VFS's own delete, with SQLite's arguments.
    let code = unsafe { ((*unix).xDelete.expect("unix xDelete"))(unix, name, sync_dir) };
    if let (ffi::SQLITE_OK, Some((path, disk))) = (code, &disk) {
        disk.deleted(path);
    }
    code
}

unsafe extern "C" fn access(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let unix = unix();
    // SAFETY: forwarded unchanged to the unix VFS.
    unsafe { ((*unix).xAccess.expect("unix xAccess"))(unix, name, flags, out) }
}

unsafe extern "C" fn full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    out_bytes: c_int,
    out: *mut c_char,
) -> c_int {
    let unix = unix();
    // SAFETY: forwarded unchanged to the unix VFS.
    unsafe { ((*unix).xFullPathname.expect("unix xFullPathname"))(unix, name, out_bytes, out) }
}

/// Version 2: shared memory, but no `xFetch`, so SQLite never reads or
/// writes the file through a memory map behind the shim's back.
static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

/// The unix file, its method table, and the disk handle of a shim file.
///
/// # Safety
/// `file` is a shim file opened by [`open`] and not yet closed.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
    Option<&'a Handle>,
) {
    let shim = file.cast::<ShimFile>();
    // SAFETY: per the contract the header is initialised, `inner` is an
    // open unix file with a static method table, and `handle` is null or a
    // live box owned by this file until `close`.
    unsafe {
        let inner = (*shim).inner;
        (inner, &*(*inner).pMethods, (*shim).handle.as_ref())
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    let shim = file.cast::<ShimFile>();
    // SAFETY: SQLite closes each file it opened once; the handle box was
    // made by `open` and is freed only here.
    unsafe {
        let handle = std::mem::replace(&mut (*shim).handle, ptr::null_mut());
        if !handle.is_null() {
            let handle = Box::from_raw(handle);
            handle.disk.closed(handle.generation);
        }
        close_inner_with((*shim).inner, ffi::SQLITE_OK);
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn read(
    file: *mut ffi::sqlite3_file,
    buffer: *mut c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xRead.expect("xRead"))(inner, buffer, amount, offset)
    }
}

/// Reads the unix file into `out` for a pre-image. A short read (the file
/// ends inside the range) leaves zeros, which is what the file holds there.
///
/// # Safety
/// `inner` is an open unix file with `methods` as its method table.
unsafe fn read_into(
    inner: *mut ffi::sqlite3_file,
    methods: &ffi::sqlite3_io_methods,
    offset: u64,
    out: &mut [u8],
) -> bool {
    let (Ok(amount), Ok(offset)) = (c_int::try_from(out.len()), i64::try_from(offset)) else {
        return false;
    };
    // SAFETY: `out` is valid for `amount` bytes.
    let code =
        unsafe { (methods.xRead.expect("xRead"))(inner, out.as_mut_ptr().cast(), amount, offset) };
    code == ffi::SQLITE_OK || code == ffi::SQLITE_IOERR_SHORT_READ
}

/// Reports a change of `range` of the file to its disk.
///
/// # Safety
/// As for [`parts`].
unsafe fn gate_change(
    file: *mut ffi::sqlite3_file,
    range: impl FnOnce(&Handle) -> (u64, u64),
) -> Gate {
    // SAFETY: per the contract.
    let (inner, methods, handle) = unsafe { parts(file) };
    let Some(handle) = handle else {
        return Gate::Proceed;
    };
    let (start, end) = range(handle);
    // SAFETY: `inner` and `methods` belong together (see `parts`).
    let mut reader =
        |offset: u64, out: &mut [u8]| unsafe { read_into(inner, methods, offset, out) };
    handle
        .disk
        .before_change(&handle.path, handle.generation, start..end, &mut reader)
}

/// The failure that refuses an operation of `file` now, if any (none for
/// a file off the simulated disk). `grows` says, given the unix file,
/// whether the operation writes past its end.
///
/// # Safety
/// As for [`parts`].
unsafe fn refusal(
    file: *mut ffi::sqlite3_file,
    grows: impl FnOnce(*mut ffi::sqlite3_file) -> bool,
) -> Option<DiskFailure> {
    // SAFETY: per the contract.
    let (inner, _, handle) = unsafe { parts(file) };
    let handle = handle?;
    handle.disk.refusal(handle.generation, grows(inner))
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buffer: *const c_void,
    amount: c_int,
    offset: ffi::sqlite3_int64,
) -> c_int {
    let (start, bytes) = (offset.max(0) as u64, amount.max(0) as u64);
    // SAFETY: `file` is one of ours (SQLite calls our table only for ours).
    let refused = unsafe {
        refusal(file, |inner| {
            // `inner` is open (the enclosing block's contract).
            let len = file_len(inner).unwrap_or(0);
            start + bytes > len
        })
    };
    match refused {
        Some(DiskFailure::Full) => return ffi::SQLITE_FULL,
        Some(DiskFailure::Io) => return ffi::SQLITE_IOERR_WRITE,
        None => {}
    }
    // SAFETY: as above.
    match unsafe { gate_change(file, |_| (start, start + bytes)) } {
        Gate::Inert => return ffi::SQLITE_OK,
        Gate::Failed => return ffi::SQLITE_IOERR_WRITE,
        Gate::Proceed => {}
    }
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xWrite.expect("xWrite"))(inner, buffer, amount, offset)
    }
}

unsafe extern "C" fn truncate(file: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let new_len = size.max(0) as u64;
    // SAFETY: as in `write`.
    if unsafe { refusal(file, |_| false) }.is_some() {
        return ffi::SQLITE_IOERR_TRUNCATE;
    }
    // SAFETY: as in `write`.
    let gate = unsafe {
        gate_change(file, |handle| {
            let synced_len = handle.disk.synced_len(&handle.path);
            (new_len, synced_len.max(new_len))
        })
    };
    match gate {
        Gate::Inert => return ffi::SQLITE_OK,
        Gate::Failed => return ffi::SQLITE_IOERR_TRUNCATE,
        Gate::Proceed => {}
    }
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xTruncate.expect("xTruncate"))(inner, size)
    }
}

unsafe extern "C" fn sync(file: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: as in `write`.
    let (inner, methods, handle) = unsafe { parts(file) };
    if let Some(handle) = handle {
        if !handle.disk.is_live(handle.generation) {
            return ffi::SQLITE_OK;
        }
        if handle.disk.refusal(handle.generation, false).is_some() {
            return ffi::SQLITE_IOERR_FSYNC;
        }
    }
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    let code = unsafe { (methods.xSync.expect("xSync"))(inner, flags) };
    if let (ffi::SQLITE_OK, Some(handle)) = (code, handle) {
        // SAFETY: `inner` is open.
        match unsafe { file_len(inner) } {
            Ok(len) => handle.disk.synced(&handle.path, handle.generation, len),
            Err(code) => return code,
        }
    }
    code
}

unsafe extern "C" fn file_size(
    file: *mut ffi::sqlite3_file,
    size: *mut ffi::sqlite3_int64,
) -> c_int {
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xFileSize.expect("xFileSize"))(inner, size)
    }
}

/// A dead process's handle takes no lock: its connection's close then
/// skips the checkpoint and keeps the WAL, as a killed process would.
unsafe extern "C" fn lock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: as in `write`.
    let (inner, methods, handle) = unsafe { parts(file) };
    if handle.is_some_and(|handle| !handle.disk.is_live(handle.generation)) {
        return ffi::SQLITE_BUSY;
    }
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe { (methods.xLock.expect("xLock"))(inner, level) }
}

unsafe extern "C" fn unlock(file: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xUnlock.expect("xUnlock"))(inner, level)
    }
}

unsafe extern "C" fn check_reserved_lock(file: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xCheckReservedLock.expect("xCheckReservedLock"))(inner, out)
    }
}

unsafe extern "C" fn file_control(
    file: *mut ffi::sqlite3_file,
    operation: c_int,
    argument: *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xFileControl.expect("xFileControl"))(inner, operation, argument)
    }
}

unsafe extern "C" fn sector_size(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xSectorSize.expect("xSectorSize"))(inner)
    }
}

unsafe extern "C" fn device_characteristics(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods
            .xDeviceCharacteristics
            .expect("xDeviceCharacteristics"))(inner)
    }
}

unsafe extern "C" fn shm_map(
    file: *mut ffi::sqlite3_file,
    region: c_int,
    region_bytes: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xShmMap.expect("xShmMap"))(inner, region, region_bytes, extend, out)
    }
}

unsafe extern "C" fn shm_lock(
    file: *mut ffi::sqlite3_file,
    offset: c_int,
    count: c_int,
    flags: c_int,
) -> c_int {
    // SAFETY: SQLite's arguments, forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xShmLock.expect("xShmLock"))(inner, offset, count, flags)
    }
}

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xShmBarrier.expect("xShmBarrier"))(inner)
    }
}

unsafe extern "C" fn shm_unmap(file: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    // SAFETY: forwarded to the unix file.
    unsafe {
        let (inner, methods, _) = parts(file);
        (methods.xShmUnmap.expect("xShmUnmap"))(inner, delete)
    }
}

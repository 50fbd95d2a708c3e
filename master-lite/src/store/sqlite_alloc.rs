//! SQLite's own allocations through the program's global allocator (`slapos-master`:
//! jemalloc), not the C library's `malloc`.
//!
//! On the static musl build, musl's `malloc` maps and unmaps pages for SQLite's short-lived
//! allocations: at 32 requesters `perf` put a sixth of the replica's samples in the TLB
//! shootdowns and page faults of those `munmap`s (docs/fleet.md, "The allocator, measured").
//! [`install`] hands SQLite a `sqlite3_mem_methods` whose functions call
//! [`std::alloc`]: each block carries its size in a 16-byte header, as SQLite's `xSize` needs.

use std::alloc::Layout;
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use rusqlite::ffi;

/// Bytes before each block: its requested size, and the block's 16-byte alignment.
const HEADER: usize = 16;

/// Bytes SQLite holds through [`install`]'s functions.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// Routes SQLite's allocations to the global allocator. Must run before SQLite's first use in
/// the process (the first connection opened): afterwards SQLite refuses the change and keeps
/// its own; returns whether SQLite took it. Runs once; later calls return the first answer.
pub fn install() -> bool {
    static DONE: OnceLock<bool> = OnceLock::new();
    *DONE.get_or_init(|| {
        let methods = ffi::sqlite3_mem_methods {
            xMalloc: Some(x_malloc),
            xFree: Some(x_free),
            xRealloc: Some(x_realloc),
            xSize: Some(x_size),
            xRoundup: Some(x_roundup),
            xInit: Some(x_init),
            xShutdown: Some(x_shutdown),
            pAppData: std::ptr::null_mut(),
        };
        // SAFETY: SQLITE_CONFIG_MALLOC takes one pointer to a sqlite3_mem_methods, which
        // SQLite copies before returning; the functions it names are sound for any input
        // SQLite passes (below). Before initialisation this call is allowed; after it, SQLite
        // answers SQLITE_MISUSE and changes nothing.
        let rc = unsafe {
            ffi::sqlite3_config(
                ffi::SQLITE_CONFIG_MALLOC,
                &methods as *const ffi::sqlite3_mem_methods,
            )
        };
        rc == ffi::SQLITE_OK
    })
}

/// Bytes SQLite holds through the functions [`install`] gave it (0 when it did not take them).
pub fn live_bytes() -> usize {
    LIVE.load(Ordering::Relaxed)
}

fn layout(n: usize) -> Option<Layout> {
    Layout::from_size_align(n.checked_add(HEADER)?, HEADER).ok()
}

/// A block of `n` bytes after its header, or null.
fn alloc_block(n: usize) -> *mut c_void {
    let Some(l) = layout(n) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `l` has a non-zero size (at least HEADER).
    let base = unsafe { std::alloc::alloc(l) };
    if base.is_null() {
        return std::ptr::null_mut();
    }
    LIVE.fetch_add(n, Ordering::Relaxed);
    // SAFETY: `base` was just allocated with `layout(n)`.
    unsafe { labelled(base, n) }
}

/// Writes size `n` into the header at `base` and returns the block after it.
///
/// # Safety
/// `base` must be valid for `HEADER + n` bytes and 16-byte aligned (allocated with
/// `layout(n)`).
unsafe fn labelled(base: *mut u8, n: usize) -> *mut c_void {
    // SAFETY: the caller's contract: the usize at `base` and the block after the header are
    // in bounds and aligned.
    unsafe {
        base.cast::<usize>().write(n);
        base.add(HEADER).cast()
    }
}

/// The header of a block made by [`alloc_block`], and the size it records.
///
/// # Safety
/// `p` must come from [`alloc_block`] (or [`x_realloc`]) and not be freed yet.
unsafe fn header(p: *mut c_void) -> (*mut u8, usize) {
    // SAFETY: the caller's contract: the header sits HEADER bytes before `p`, in the same
    // allocation, and holds the block's size.
    unsafe {
        let base = p.cast::<u8>().sub(HEADER);
        (base, base.cast::<usize>().read())
    }
}

unsafe extern "C" fn x_malloc(n: c_int) -> *mut c_void {
    match usize::try_from(n) {
        Ok(n) if n > 0 => alloc_block(n),
        _ => std::ptr::null_mut(),
    }
}

unsafe extern "C" fn x_free(p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: SQLite frees only what its xMalloc/xRealloc returned, once.
    let (base, n) = unsafe { header(p) };
    if let Some(l) = layout(n) {
        LIVE.fetch_sub(n, Ordering::Relaxed);
        // SAFETY: `base` was allocated with exactly this layout by `alloc_block`/`x_realloc`.
        unsafe { std::alloc::dealloc(base, l) };
    }
}

unsafe extern "C" fn x_realloc(p: *mut c_void, n: c_int) -> *mut c_void {
    let Ok(n) = usize::try_from(n) else {
        return std::ptr::null_mut();
    };
    if p.is_null() {
        return alloc_block(n);
    }
    if n == 0 {
        return std::ptr::null_mut();
    }
    // SAFETY: SQLite passes only a live block of its xMalloc/xRealloc.
    let (base, old) = unsafe { header(p) };
    let (Some(old_layout), Some(new_layout)) = (layout(old), layout(n)) else {
        return std::ptr::null_mut();
    };
    // SAFETY: `base` was allocated with `old_layout`; the new size is non-zero and, being a
    // valid Layout's size with the same alignment, does not overflow isize.
    let moved = unsafe { std::alloc::realloc(base, old_layout, new_layout.size()) };
    if moved.is_null() {
        // The old block is untouched and still SQLite's, as xRealloc's contract wants.
        return std::ptr::null_mut();
    }
    LIVE.fetch_add(n, Ordering::Relaxed);
    LIVE.fetch_sub(old, Ordering::Relaxed);
    // SAFETY: `moved` is the block reallocated to `new_layout`, i.e. `layout(n)`.
    unsafe { labelled(moved, n) }
}

unsafe extern "C" fn x_size(p: *mut c_void) -> c_int {
    if p.is_null() {
        return 0;
    }
    // SAFETY: SQLite asks the size of its own live blocks only.
    let (_, n) = unsafe { header(p) };
    c_int::try_from(n).unwrap_or(c_int::MAX)
}

unsafe extern "C" fn x_roundup(n: c_int) -> c_int {
    // SQLite wants 8-byte multiples; it never asks near c_int::MAX (its limit is 2^31 - 256).
    n.saturating_add(7) & !7
}

unsafe extern "C" fn x_init(_: *mut c_void) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shutdown(_: *mut c_void) {}

//! Issue #19: an xml_marshaller "reference bomb" is refused with bounded memory.
//!
//! This test binary counts every heap allocation (a global allocator wrapping the system one)
//! so the peak memory of one `loads` call is measured, not guessed. It holds one test, so no
//! other thread allocates while it measures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use slapos_proto::slap::marshal::{MAX_EXPANDED_BYTES, VALUE_BYTES};
use slapos_proto::slap::{MarshalError, Value, dumps, loads};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = LIVE.fetch_add(size, Relaxed) + size;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the `GlobalAlloc`
// contract; the wrapper only updates two counters.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same layout as the caller's, forwarded to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout` (through `alloc`/`realloc`).
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Peak heap growth while `f` runs, and its result.
fn peak_during<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let out = f();
    (PEAK.load(Relaxed) - base, out)
}

#[test]
fn reference_bombs_are_refused_with_bounded_memory() {
    const MIB: usize = 1 << 20;
    // A 1 MiB string in a list, and `n` references to that list: 1 MB of document.
    let bomb = |n: usize| {
        let big = Value::List(vec![Value::str("a".repeat(MIB))]);
        let one = dumps(&Value::List(vec![big])).unwrap();
        // <marshal><list id="i2"><list id="i3">…</list></list></marshal>
        let cut = one.len() - "</list></marshal>".len();
        format!(
            "{}{}</list></marshal>",
            &one[..cut],
            "<reference id=\"i3\"/>".repeat(n)
        )
    };
    for n in [1000, 5000] {
        let xml = bomb(n);
        assert!(xml.len() < MIB + 200 * n, "{}", xml.len());
        let t = Instant::now();
        let (peak, got) = peak_during(|| loads(&xml));
        let took = t.elapsed();
        assert_eq!(
            got,
            Err(MarshalError::TooManyBytes {
                limit: MAX_EXPANDED_BYTES
            }),
            "{n} references"
        );
        // Before the fix: 1 GiB (n = 1000) and 5 GiB (n = 5000) of copies. Now the copies stop
        // at the byte bound (128 MiB); the rest is the document-sized working set.
        assert!(
            peak <= MAX_EXPANDED_BYTES + 4 * xml.len() + 16 * MIB,
            "{n} references: peak {} MiB",
            peak / MIB
        );
        assert!(took < Duration::from_secs(10), "{n} references: {took:?}");
        eprintln!(
            "{n} × 1 MiB references: refused in {took:?}, peak heap {} MiB",
            peak / MIB
        );
    }
    // A legitimate document with a few references decodes, and its memory is what its
    // expanded size says.
    let ok = bomb(3);
    let (peak, got) = peak_during(|| loads(&ok));
    let Value::List(items) = got.unwrap() else {
        panic!("not a list")
    };
    assert_eq!(items.len(), 4);
    assert!(peak <= 5 * MIB + 2 * ok.len() + 64 * VALUE_BYTES, "{peak}");
}

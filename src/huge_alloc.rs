//! The `rnn` binary's global allocator: the system allocator, except that blocks of at least
//! [`HUGE_MIN`] bytes (a training step's saved activations and gradient buffers) are mapped
//! directly, aligned to 2 MiB, with transparent huge pages requested (`madvise(MADV_HUGEPAGE)`;
//! this machine's kernel grants them only on request). Such a buffer then faults in 512 times
//! fewer pages, and the GEMMs that stream it miss the TLB less; freed mappings are kept for the
//! next allocation of the same length (see [`Cache`]). Large training steps (e.g. an LSTM with
//! hidden size 1024) run faster and with less variation than with the system allocator. The
//! advice is only a hint: where the kernel refuses it, the mapping is ordinary pages.

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks from this size on are mapped with huge pages; smaller ones go to the system allocator
/// (which keeps them in its heap for reuse: `rnn_core::device::keep_freed_memory`, called in
/// `main`).
const HUGE_MIN: usize = 32 << 20;
/// The size and alignment of a transparent huge page on x86_64 and aarch64 (4 KiB base pages).
const HUGE_PAGE: usize = 2 << 20;

pub struct HugePageAlloc;

fn is_huge(size: usize, align: usize) -> bool {
    size >= HUGE_MIN && align <= HUGE_PAGE
}

fn mapped_len(size: usize) -> usize {
    size.next_multiple_of(HUGE_PAGE)
}

/// Maps `size` bytes (rounded up to whole huge pages) at a 2 MiB-aligned address; null on failure.
/// The memory is zero (fresh anonymous pages).
unsafe fn map(size: usize) -> *mut u8 {
    let len = mapped_len(size);
    let raw = libc::mmap(
        std::ptr::null_mut(),
        len + HUGE_PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        0,
    );
    if raw == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    // Trim the over-allocation to an aligned window of `len` bytes.
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE);
    let head = aligned - start;
    if head > 0 {
        libc::munmap(raw, head);
    }
    let tail = HUGE_PAGE - head;
    if tail > 0 {
        libc::munmap((aligned + len) as *mut libc::c_void, tail);
    }
    // Advisory: a kernel without transparent huge pages leaves ordinary pages.
    libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    aligned as *mut u8
}

/// Freed huge mappings kept for the next allocation of the same length (a training step frees
/// and re-allocates the same buffers every step): reusing one costs a `memset` when zeroed memory
/// is asked for, against a fault and a kernel-side clear of every 2 MiB page (and, when the kernel
/// must compact memory to find huge pages, a stall) for a fresh mapping. Holds at most
/// [`CACHE_SLOTS`] mappings and [`CACHE_MAX_BYTES`] in all; beyond that the oldest is unmapped.
struct Cache(std::sync::Mutex<[(usize, usize); CACHE_SLOTS]>);

const CACHE_SLOTS: usize = 16;
const CACHE_MAX_BYTES: usize = 1 << 30;

static CACHE: Cache = Cache(std::sync::Mutex::new([(0, 0); CACHE_SLOTS]));

/// The slots hold the cached mappings as a prefix in order of arrival (oldest first), then
/// `(0, 0)`.
impl Cache {
    /// A cached mapping of exactly `len` bytes, removed from the cache.
    fn take(&self, len: usize) -> Option<*mut u8> {
        let mut slots = self.0.lock().ok()?;
        let live = live(&slots);
        let i = slots[..live].iter().position(|s| s.1 == len)?;
        let ptr = slots[i].0;
        slots.copy_within(i + 1..live, i);
        slots[live - 1] = (0, 0);
        Some(ptr as *mut u8)
    }

    /// Keeps the mapping `(ptr, len)` for reuse, unmapping the oldest ones (or this one) to stay
    /// within the limits.
    unsafe fn give(&self, ptr: *mut u8, len: usize) {
        let Ok(mut slots) = self.0.lock() else {
            libc::munmap(ptr as *mut libc::c_void, len);
            return;
        };
        if len > CACHE_MAX_BYTES {
            libc::munmap(ptr as *mut libc::c_void, len);
            return;
        }
        let mut live = live(&slots);
        let mut total: usize = slots[..live].iter().map(|s| s.1).sum();
        while live == CACHE_SLOTS || (live > 0 && total + len > CACHE_MAX_BYTES) {
            let (p, l) = slots[0];
            libc::munmap(p as *mut libc::c_void, l);
            total -= l;
            slots.copy_within(1..live, 0);
            live -= 1;
            slots[live] = (0, 0);
        }
        slots[live] = (ptr as usize, len);
    }
}

/// How many slots hold a mapping.
fn live(slots: &[(usize, usize); CACHE_SLOTS]) -> usize {
    slots.iter().take_while(|s| s.0 != 0).count()
}

// SAFETY: every block is either the system allocator's (small or over-aligned layouts, freed by
// it) or a private anonymous mapping of `mapped_len(size)` bytes (freed with munmap); the layout
// passed to dealloc/realloc decides which, and it is the layout the block was allocated with.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            match CACHE.take(mapped_len(layout.size())) {
                Some(p) => p,
                None => map(layout.size()),
            }
        } else {
            System.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if is_huge(layout.size(), layout.align()) {
            match CACHE.take(mapped_len(layout.size())) {
                Some(p) => {
                    p.write_bytes(0, layout.size());
                    p
                }
                None => map(layout.size()),
            }
        } else {
            System.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if is_huge(layout.size(), layout.align()) {
            CACHE.give(ptr, mapped_len(layout.size()));
        } else {
            System.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let (old_huge, new_huge) = (
            is_huge(layout.size(), layout.align()),
            is_huge(new_size, layout.align()),
        );
        if !old_huge && !new_huge {
            return System.realloc(ptr, layout, new_size);
        }
        if old_huge && new_huge && mapped_len(layout.size()) == mapped_len(new_size) {
            return ptr;
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large blocks come back 2 MiB-aligned, zeroed, writable to their end, and survive growth
    /// and shrinking across the threshold with their contents.
    #[test]
    fn huge_blocks_round_trip() {
        let a = HugePageAlloc;
        unsafe {
            let layout = Layout::from_size_align(HUGE_MIN + 12345, 8).unwrap();
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % HUGE_PAGE, 0);
            assert!(std::slice::from_raw_parts(p, layout.size())
                .iter()
                .all(|&b| b == 0));
            p.add(layout.size() - 1).write(7);
            p.write(3);
            let q = a.realloc(p, layout, 3 * HUGE_MIN);
            assert_eq!((q.read(), q.add(layout.size() - 1).read()), (3, 7));
            let big = Layout::from_size_align(3 * HUGE_MIN, 8).unwrap();
            let r = a.realloc(q, big, 100);
            assert_eq!(r.read(), 3);
            a.dealloc(r, Layout::from_size_align(100, 8).unwrap());
            // A freed block comes back for the same length, zeroed when asked.
            let p = a.alloc(layout);
            p.write(9);
            a.dealloc(p, layout);
            let q = a.alloc_zeroed(layout);
            assert!(std::slice::from_raw_parts(q, layout.size())
                .iter()
                .all(|&b| b == 0));
            a.dealloc(q, layout);
        }
    }

    /// The cache stays within its slot and byte limits whatever is freed into it.
    #[test]
    fn cache_limits_hold() {
        let a = HugePageAlloc;
        unsafe {
            let layouts: Vec<Layout> = (0..40)
                .map(|i| Layout::from_size_align(HUGE_MIN + i * HUGE_PAGE * 3, 8).unwrap())
                .collect();
            let blocks: Vec<*mut u8> = layouts.iter().map(|l| a.alloc(*l)).collect();
            for (p, l) in blocks.into_iter().zip(&layouts) {
                a.dealloc(p, *l);
                let slots = CACHE.0.lock().unwrap();
                let live = slots.iter().filter(|s| s.0 != 0).count();
                let bytes: usize = slots.iter().map(|s| s.1).sum();
                assert!(live <= CACHE_SLOTS && bytes <= CACHE_MAX_BYTES);
            }
        }
    }
}

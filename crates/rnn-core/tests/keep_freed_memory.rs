//! `device::keep_freed_memory`: a step's worth of large buffers, freed, stays in glibc's heap
//! for the next step instead of going back to the operating system. Its own test binary without
//! libtest's harness: the thresholds are process-wide, and glibc's main arena (the main
//! thread's, where a training loop allocates) trims by them; libtest runs tests on other threads.

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn main() {
    const LEN: usize = 16 << 20;
    const BLOCKS: usize = 4;
    /// Allocates, fills and frees `BLOCKS` blocks of `LEN` bytes, as a training step does with
    /// its large tensors; returns the bytes left free in the heap afterwards.
    fn step() -> usize {
        // SAFETY: each block is written in full inside its bounds, freed once, not used after.
        unsafe {
            let blocks: Vec<*mut u8> = (0..BLOCKS)
                .map(|_| {
                    let p = libc::malloc(LEN) as *mut u8;
                    assert!(!p.is_null());
                    std::ptr::write_bytes(p, 1, LEN);
                    p
                })
                .collect();
            for p in blocks {
                libc::free(p as *mut libc::c_void);
            }
            libc::mallinfo2().fordblks
        }
    }
    // glibc's defaults adapt after the first step (its blocks were mapped one by one, then the
    // thresholds rise to 16 and 32 MiB), but freeing 64 MiB at once still exceeds the trim
    // threshold: the heap gives the memory back, and the next step faults it in again.
    step();
    let by_default = step();
    if by_default >= BLOCKS * LEN {
        // Another glibc, or GLIBC_TUNABLES in the environment: nothing to tell apart here.
        println!("keep_freed_memory: this glibc kept {by_default} bytes by default already");
    }
    assert!(rnn_core::device::keep_freed_memory());
    step();
    let kept = step();
    assert!(
        kept >= BLOCKS * LEN,
        "after keep_freed_memory the heap kept {kept} bytes, not the step's {} MiB",
        (BLOCKS * LEN) >> 20
    );
    println!("keep_freed_memory: {by_default} bytes free in the heap after a step by default, {kept} after the call: ok");
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn main() {
    assert!(!rnn_core::device::keep_freed_memory());
    println!("keep_freed_memory: not glibc, nothing to do: ok");
}

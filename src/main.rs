//! The `rnn` command line (see `rnn --help`; the commands live in `rnn::cli`).

#[cfg(target_os = "linux")]
mod huge_alloc;

#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: huge_alloc::HugePageAlloc = huge_alloc::HugePageAlloc;

/// Restores the default SIGPIPE action, so `rnn predict ... | head` ends quietly instead of
/// panicking when the reader goes away (Rust ignores SIGPIPE by default).
fn quiet_broken_pipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal disposition to its default before any other thread runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Keeps error messages to one line when `RUST_BACKTRACE` is set: Candle attaches a captured
/// backtrace to its errors and prints it inside their message whenever the standard library's
/// `Backtrace::capture` is enabled, which `RUST_BACKTRACE` also turns on. `RUST_LIB_BACKTRACE=0`
/// disables only that capture (panics still print their backtrace under `RUST_BACKTRACE`); set
/// `RUST_LIB_BACKTRACE=1` to get backtraces in error messages.
fn one_line_errors() {
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        // Called first in main, before any other thread exists.
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
}

/// Runs Candle's element-wise CPU ops on the calling thread unless `CANDLE_NUM_THREADS` says
/// otherwise. Candle 0.11 runs them on a pool of its own, beside Rayon's, whose workers spin
/// between ops: with this project's fused ops and products already on every core through
/// Rayon, the two pools fight for the cores, and a training step of the default char-LM and
/// word-LM took 10-20% longer (benches/README.md, "End to end").
fn inline_candle_elementwise() {
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Called in main before any other thread exists (Candle reads it at its first op).
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

/// Keeps the matrix kernels measured on this host for the next run (`rnn_core::kernels`):
/// `RNN_KERNEL_CACHE=off` keeps them in memory only, `RNN_KERNEL_CACHE=PATH` names the file,
/// unset or empty uses the user's cache directory.
fn kernel_cache() {
    use rnn::rnn_core::kernels;
    match std::env::var_os("RNN_KERNEL_CACHE") {
        Some(v) if v == "off" => {}
        Some(v) if !v.is_empty() => kernels::set_cache_file(Some(v.into())),
        _ => kernels::set_cache_file(kernels::default_cache_file()),
    }
}

fn main() {
    one_line_errors();
    inline_candle_elementwise();
    // Freed buffers stay in the heap for the next step (blocks of 32 MiB and more bypass it:
    // `huge_alloc`).
    rnn::rnn_core::device::keep_freed_memory();
    quiet_broken_pipe();
    if std::env::var_os("RNN_KEEP_DENORMALS").is_none() {
        rnn::rnn_core::device::flush_denormals();
    }
    kernel_cache();
    std::process::exit(rnn::cli::main_entry(std::env::args_os()));
}

//! Device choice from a user's string: the one place that knows which devices this build has.

use candle_core::{bail, Device, Result};

/// Parses `auto | cpu | cuda | cuda:N | metal | metal:N` into a Candle device.
///
/// `auto` picks CUDA, then Metal, then the CPU, among the devices compiled into this build and
/// present on this machine. A device whose feature is not compiled in is an error that says how to
/// rebuild.
pub fn select(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    let (kind, index) = match spec.split_once(':') {
        Some((kind, idx)) => match idx.parse::<usize>() {
            Ok(i) => (kind.to_string(), i),
            Err(_) => {
                bail!("device '{spec}': the part after ':' must be a device number, like cuda:0")
            }
        },
        None => (spec.clone(), 0),
    };
    match kind.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(auto()),
        "cuda" => {
            if !cfg!(feature = "cuda") {
                bail!("device '{spec}': this build has no CUDA support; rebuild with `--features cuda` (e.g. `cargo build --release --features cuda`)");
            }
            Device::new_cuda(index)
        }
        "metal" => {
            if !cfg!(feature = "metal") {
                bail!("device '{spec}': this build has no Metal support; rebuild with `--features metal` on macOS");
            }
            Device::new_metal(index)
        }
        other => bail!("unknown device '{other}': expected auto, cpu, cuda, cuda:N or metal"),
    }
}

/// The best device of this build and machine: CUDA, then Metal, then the CPU.
pub fn auto() -> Device {
    if cfg!(feature = "cuda") {
        if let Ok(d) = Device::new_cuda(0) {
            return d;
        }
    }
    if cfg!(feature = "metal") {
        if let Ok(d) = Device::new_metal(0) {
            return d;
        }
    }
    Device::Cpu
}

/// A short name for messages: `cpu`, `cuda:0`, `metal:0`.
pub fn name(device: &Device) -> String {
    match device.location() {
        candle_core::DeviceLocation::Cpu => "cpu".into(),
        candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        candle_core::DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Sets flush-to-zero and denormals-are-zero on the calling thread (x86-64: MXCSR bits FTZ and
/// DAZ; aarch64: FPCR.FZ). Returns whether the platform has such a mode.
fn set_flush_denormals_on_this_thread() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let mut csr: u32 = 0;
        // SAFETY: stmxcsr/ldmxcsr read and write this thread's SSE control register; setting
        // FTZ (bit 15) and DAZ (bit 6) only changes how subnormal floats are rounded.
        unsafe {
            std::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack));
            csr |= (1 << 15) | (1 << 6);
            std::arch::asm!("ldmxcsr [{}]", in(reg) &csr, options(nostack, readonly));
        }
        true
    }
    #[cfg(target_arch = "aarch64")]
    {
        // SAFETY: reads and writes this thread's floating-point control register; FZ (bit 24)
        // only changes how subnormal floats are rounded.
        unsafe {
            let mut fpcr: u64;
            std::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack));
            fpcr |= 1 << 24;
            std::arch::asm!("msr fpcr, {}", in(reg) fpcr, options(nomem, nostack));
        }
        true
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// Flushes subnormal floats to zero on the CPU, as `torch.set_flush_denormal(True)`: on the
/// calling thread and on every thread of Rayon's global pool (where Candle's and the fused ops'
/// CPU kernels run). Subnormals (below 1.2e-38 in f32) cost up to about 100 cycles per
/// operation on x86 CPUs; a network whose gradients vanish produces them in bulk (an LSTM
/// stuck on the adding problem at T = 200 trained several times slower). The values lost are
/// below f32's normal range. Threads started later (other than Rayon's) are not affected.
/// Returns whether the platform has such a mode.
pub fn flush_denormals() -> bool {
    let here = set_flush_denormals_on_this_thread();
    rayon::broadcast(|_| {
        set_flush_denormals_on_this_thread();
    });
    here
}

/// Keeps freed CPU tensor memory in glibc's heap for reuse, where glibc's `malloc` would hand
/// it back to the operating system: buffers below 32 MiB come from the heap instead of a fresh
/// mapping each, and freed memory stays in the heap up to 1 GiB (`mallopt(M_MMAP_THRESHOLD,
/// 32 MiB)` and `mallopt(M_TRIM_THRESHOLD, 1 GiB)`). Without it a training step that allocates
/// and frees the same large tensors every step (Candle allocates a fresh buffer for each op's
/// output and for each gradient) faults in and zeroes every page of them again each step; at
/// the word-LM's output layer (400 rows x 10,000 words) that was more than half of the
/// backward (benches/README.md, "Large tensors in Candle's own ops"). The `rnn` binary calls
/// it at start; call it first in `main` of your own program. The cost: the process keeps the
/// memory of its largest step instead of returning it between steps. Returns whether the
/// platform's allocator is glibc's (elsewhere this does nothing).
///
/// ```
/// // First in `main`, before the training loop allocates anything large.
/// let glibc = rnn_core::device::keep_freed_memory();
/// assert_eq!(glibc, cfg!(all(target_os = "linux", target_env = "gnu")));
/// ```
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes two thresholds of the allocator; glibc serialises it
        // against concurrent allocations.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_without_gpu_features() {
        assert!(select("cpu").unwrap().is_cpu());
        assert!(select(" CPU ").unwrap().is_cpu());
        if !cfg!(feature = "cuda") && !cfg!(feature = "metal") {
            assert!(select("auto").unwrap().is_cpu());
        }
        assert_eq!(name(&Device::Cpu), "cpu");
    }

    #[test]
    fn missing_features_say_how_to_rebuild() {
        if !cfg!(feature = "cuda") {
            let e = select("cuda:1").unwrap_err().to_string();
            assert!(e.contains("--features cuda"), "{e}");
        }
        if !cfg!(feature = "metal") {
            let e = select("metal").unwrap_err().to_string();
            assert!(e.contains("--features metal"), "{e}");
        }
    }

    #[test]
    fn bad_specs_are_named() {
        let e = select("tpu").unwrap_err().to_string();
        assert!(e.contains("tpu") && e.contains("cuda:N"), "{e}");
        let e = select("cuda:x").unwrap_err().to_string();
        assert!(e.contains("device number"), "{e}");
    }
}

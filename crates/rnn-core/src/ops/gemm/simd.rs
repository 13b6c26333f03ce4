//! The register-blocked f32 micro-kernels (the only `unsafe` SIMD code of the crate): AVX-512 and
//! AVX2+FMA on x86-64, chosen at run time per shape class ([`KernelIsa`], [`super::calibrate`]),
//! and the portable fallback.

/// Which register-blocked f32 kernel runs a matrix product: the products of a recurrence with
/// one fixed right-hand matrix (packed once), and the large weight gradients. Chosen per shape
/// class by measurement on this host unless the environment variable `RNN_KERNEL` pins one (see
/// [`crate::kernels`]); tests force each one [`KernelIsa::supported`] lists to check it against
/// the portable path.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Hash)]
pub enum KernelIsa {
    /// 8 rows x 32 columns: two 16-lane registers per row (x86_64 with AVX-512F).
    Avx512,
    /// 6 rows x 16 columns: two 8-lane registers per row, 12 accumulators of 16 registers
    /// (x86_64 with AVX2 and FMA).
    Avx2,
    /// No register-blocked kernel: the products run on faer, or the axpy path for a few rows
    /// (other architectures, x86_64 CPUs without AVX2+FMA, `RNN_KERNEL=portable`,
    /// `RNN_PACKED_KERNEL=off`, and wherever it measured fastest).
    Portable,
}

impl KernelIsa {
    /// The kernel's name: `avx512`, `avx2` or `portable` (the values of `RNN_KERNEL`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Avx512 => "avx512",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }

    /// Every kernel this CPU runs, fastest first; `Portable` (always) last.
    pub fn supported() -> Vec<Self> {
        [Self::Avx512, Self::Avx2, Self::Portable]
            .into_iter()
            .filter(|isa| isa.runs_here())
            .collect()
    }

    /// Whether this CPU has the instructions of the kernel.
    pub fn runs_here(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx512 | Self::Avx2 => false,
            Self::Portable => true,
        }
    }

    /// Columns per packed panel of the kernel.
    pub(super) fn nr(self) -> usize {
        match self {
            Self::Avx512 => 32,
            _ => 16,
        }
    }

    /// Rows per register block of the kernel.
    pub(super) fn mr(self) -> usize {
        match self {
            Self::Avx512 => 8,
            _ => 6,
        }
    }

    /// Panics unless `self` is a register-blocked kernel this CPU runs: the safety condition of
    /// `kernel::run` and `kernel::run_packed`.
    pub(super) fn assert_simd(self) {
        assert!(
            self != Self::Portable && self.runs_here(),
            "the {self:?} kernel does not run on this CPU"
        );
    }
}

impl std::fmt::Display for KernelIsa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for KernelIsa {
    type Err = String;
    /// `avx512`, `avx2` or `portable` (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "avx512" => Ok(Self::Avx512),
            "avx2" => Ok(Self::Avx2),
            "portable" => Ok(Self::Portable),
            other => Err(format!(
                "'{other}' is not a kernel (expected avx512, avx2 or portable)"
            )),
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(in crate::ops::gemm) mod kernel {
    use super::KernelIsa;
    use std::arch::x86_64::*;

    /// Steps of the inner dimension per block: a panel's block (KC x NR floats, 32 KiB with
    /// AVX-512, 16 KiB with AVX2) stays in L1 while the row blocks of `a` pass over it.
    pub const KC: usize = 256;

    /// Lane mask of the first `w` (at most 8) lanes, for AVX2's maskload/maskstore.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(in crate::ops::gemm) unsafe fn lanes(w: usize) -> __m256i {
        let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(w.min(8) as i32), idx)
    }

    /// `c (m, n) [+]= a · b` with `isa`'s kernel over `kc` steps of the inner dimension, with `a`
    /// packed in micro-panels of `mr` rows (element (i, p) at
    /// `a[(i / mr) * kc * mr + p * mr + i % mr]`) and `panels` starting at the block's first
    /// step, `k` rows apart (`mr`, `nr` of `isa`).
    ///
    /// # Safety
    /// `isa` is a SIMD kernel this CPU runs ([`KernelIsa::runs_here`], not `Portable`); `a`
    /// holds `ceil(m / mr)` micro-panels of `kc` steps; `panels` holds `ceil(n / nr)` panels
    /// `k * nr` apart, each with `kc` rows from its start; `c` covers `(m, n)` with row stride
    /// `c_rs`.
    pub unsafe fn run_packed(
        isa: KernelIsa,
        (m, kc, n): (usize, usize, usize),
        a: *const f32,
        panels: &[f32],
        k: usize,
        c: (*mut f32, usize),
        accumulate: bool,
    ) {
        match isa {
            KernelIsa::Avx512 => avx512::run_packed((m, kc, n), a, panels, k, c, accumulate),
            KernelIsa::Avx2 => avx2::run_packed((m, kc, n), a, panels, k, c, accumulate),
            KernelIsa::Portable => unreachable!("the portable path has no register kernel"),
        }
    }

    /// The loops of [`run_packed`]: panels of NR columns, micro-panels of MR rows.
    #[inline(always)]
    unsafe fn drive_packed<const NR: usize, const MR: usize>(
        (m, kc, n): (usize, usize, usize),
        a: *const f32,
        panels: &[f32],
        k: usize,
        (c, c_rs): (*mut f32, usize),
        accumulate: bool,
        block: impl Fn(usize, Args),
    ) {
        for q in 0..n.div_ceil(NR) {
            let panel = panels.as_ptr().add(q * k * NR);
            let cols = NR.min(n - q * NR);
            let mut i = 0;
            while i < m {
                let rows = MR.min(m - i);
                let a_blk = a.add(i * kc);
                let c_blk = c.add(i * c_rs + q * NR);
                block(
                    rows,
                    (kc, a_blk, 1, MR, panel, c_blk, c_rs, accumulate, cols),
                );
                i += rows;
            }
        }
    }

    /// `c (m, n) [+]= a · b` with `isa`'s kernel (`mr`, `nr` of `isa`).
    ///
    /// # Safety
    /// `isa` is a SIMD kernel this CPU runs ([`KernelIsa::runs_here`], not `Portable`); `a`
    /// covers `(m, k)`: element `(i, p)` of a block of `mr` rows starting at row `i0` is at
    /// `(i0 / mr) * a_bs + (i - i0) * a_rs + p * a_cs` (a plain strided view has
    /// `a_bs = mr * a_rs`; packed micro-panels have `a_rs = 1`, `a_cs = mr`, `a_bs = k * mr`);
    /// `c` covers `(m, n)` with row stride `c_rs`; `panels` holds `ceil(n / nr)` packed panels
    /// of `k` rows.
    pub unsafe fn run(
        isa: KernelIsa,
        dims: (usize, usize, usize),
        a: (*const f32, usize, usize, usize),
        panels: &[f32],
        c: (*mut f32, usize),
        accumulate: bool,
    ) {
        match isa {
            KernelIsa::Avx512 => avx512::run(dims, a, panels, c, accumulate),
            KernelIsa::Avx2 => avx2::run(dims, a, panels, c, accumulate),
            KernelIsa::Portable => unreachable!("the portable path has no register kernel"),
        }
    }

    type Args = (
        usize,
        *const f32,
        usize,
        usize,
        *const f32,
        *mut f32,
        usize,
        bool,
        usize,
    );

    /// The loops around the register block shared by both kernels: panels of NR columns, blocks
    /// of KC steps of k, row blocks of MR rows; `block(rows, args)` does one register block.
    /// Panels outermost, so `panels` is read front to back once per call: a large `b` then streams
    /// from L3 in prefetch order, where walking every panel per block of k would jump a whole
    /// panel between reads.
    #[inline(always)]
    unsafe fn drive<const NR: usize, const MR: usize>(
        (m, k, n): (usize, usize, usize),
        (a, a_rs, a_cs, a_bs): (*const f32, usize, usize, usize),
        panels: &[f32],
        (c, c_rs): (*mut f32, usize),
        accumulate: bool,
        block: impl Fn(usize, Args),
    ) {
        for q in 0..n.div_ceil(NR) {
            let cols = NR.min(n - q * NR);
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                let acc = accumulate || p0 > 0;
                let panel = panels.as_ptr().add(q * k * NR + p0 * NR);
                let mut i = 0;
                while i < m {
                    let rows = MR.min(m - i);
                    let a_blk = a.add(i / MR * a_bs + p0 * a_cs);
                    let c_blk = c.add(i * c_rs + q * NR);
                    block(rows, (kc, a_blk, a_rs, a_cs, panel, c_blk, c_rs, acc, cols));
                    i += rows;
                }
            }
        }
    }

    /// A kernel module's `run` and `run_packed` on its `dispatch` (register blocks by row
    /// count), `NR` and `MR`, compiled for `$feature`: `run` takes the micro-panel strides as
    /// constants when `a` is packed (`a_rs = 1`, `a_cs = MR`), as run-time values otherwise.
    macro_rules! kernel_entries {
        ($feature:literal) => {
            #[target_feature(enable = $feature)]
            pub unsafe fn run(
                dims: (usize, usize, usize),
                a: (*const f32, usize, usize, usize),
                panels: &[f32],
                c: (*mut f32, usize),
                accumulate: bool,
            ) {
                if a.1 == 1 && a.2 == MR {
                    drive::<NR, MR>(dims, a, panels, c, accumulate, |rows, args| {
                        dispatch::<true>(rows, args)
                    });
                } else {
                    drive::<NR, MR>(dims, a, panels, c, accumulate, |rows, args| {
                        dispatch::<false>(rows, args)
                    });
                }
            }

            #[target_feature(enable = $feature)]
            pub unsafe fn run_packed(
                dims: (usize, usize, usize),
                a: *const f32,
                panels: &[f32],
                k: usize,
                c: (*mut f32, usize),
                accumulate: bool,
            ) {
                drive_packed::<NR, MR>(dims, a, panels, k, c, accumulate, |rows, args| {
                    dispatch::<true>(rows, args)
                });
            }
        };
    }

    mod avx512 {
        use super::*;
        const NR: usize = 32;
        const MR: usize = 8;

        kernel_entries!("avx512f");

        /// The register block for `rows` rows. Blocks of 1-3 rows keep 4, 2 or 2 sets of
        /// accumulators (steps of k alternate between them), so that at least 8 independent FMA
        /// chains hide the FMA latency: a batch-1 step (a matrix-vector product) with one set
        /// would wait on the latency of each FMA instead of streaming its panels.
        #[inline(always)]
        unsafe fn dispatch<const PACKED: bool>(rows: usize, args: Args) {
            match rows {
                8 => block::<8, 1, PACKED>(args),
                7 => block::<7, 1, PACKED>(args),
                6 => block::<6, 1, PACKED>(args),
                5 => block::<5, 1, PACKED>(args),
                4 => block::<4, 1, PACKED>(args),
                3 => block::<3, 2, PACKED>(args),
                2 => block::<2, 2, PACKED>(args),
                _ => block::<1, 4, PACKED>(args),
            }
        }

        /// `M` rows x up to `NR` columns of `c [+]= a · panel`, with `U` sets of accumulators
        /// (step `p` of k adds into set `p % U`, the sets summed at the end) and, when `PACKED`,
        /// `a` in a micro-panel (`a_rs = 1`, `a_cs = MR`).
        ///
        /// With `PACKED` the eight broadcasts of a step read one pointer at constant offsets and
        /// the steps go in groups of 4, so the loop advances two pointers per four steps; with
        /// strided rows it advances one pointer per row and step. Those integer additions share
        /// the issue ports with the FMAs: on Skylake-SP and Cascade Lake cores (two 512-bit FMA
        /// ports, 4-wide rename) the strided loop cannot reach the FMA peak (benches/README.md,
        /// "The AVX-512 kernel's loop on Intel cores").
        #[inline]
        #[target_feature(enable = "avx512f")]
        unsafe fn block<const M: usize, const U: usize, const PACKED: bool>(
            (k, a, a_rs, a_cs, panel, c, c_rs, accumulate, cols): Args,
        ) {
            let (a_rs, a_cs) = if PACKED { (1, MR) } else { (a_rs, a_cs) };
            let mut sets0 = [[_mm512_setzero_ps(); M]; U];
            let mut sets1 = [[_mm512_setzero_ps(); M]; U];
            // Steps of k in groups of 4 (U divides 4) when packed, then the rest into set 0.
            let group = if PACKED { 4 } else { U };
            // Step `q` of k into accumulator set `set`.
            macro_rules! step {
                ($q:expr, $set:expr) => {{
                    let (q, acc0, acc1) = ($q, &mut sets0[$set], &mut sets1[$set]);
                    let b0 = _mm512_loadu_ps(panel.add(q * NR));
                    let b1 = _mm512_loadu_ps(panel.add(q * NR + 16));
                    for i in 0..M {
                        let av = _mm512_set1_ps(*a.add(i * a_rs + q * a_cs));
                        acc0[i] = _mm512_fmadd_ps(av, b0, acc0[i]);
                        acc1[i] = _mm512_fmadd_ps(av, b1, acc1[i]);
                    }
                }};
            }
            let mut p = 0;
            while p + group <= k {
                for s in 0..group {
                    step!(p + s, s % U);
                }
                p += group;
            }
            while p < k {
                step!(p, 0);
                p += 1;
            }
            let (mut acc0, mut acc1) = (sets0[0], sets1[0]);
            for s in 1..U {
                for i in 0..M {
                    acc0[i] = _mm512_add_ps(acc0[i], sets0[s][i]);
                    acc1[i] = _mm512_add_ps(acc1[i], sets1[s][i]);
                }
            }
            let mask = |w: usize| -> __mmask16 {
                if w >= 16 {
                    0xffff
                } else {
                    ((1u32 << w) - 1) as u16
                }
            };
            let (m0, m1) = (mask(cols), mask(cols.saturating_sub(16)));
            for i in 0..M {
                let row = c.add(i * c_rs);
                // Masked-off lanes are neither read nor written (no fault past the row's end).
                let hi = row.wrapping_add(16);
                let (mut v0, mut v1) = (acc0[i], acc1[i]);
                if accumulate {
                    v0 = _mm512_add_ps(v0, _mm512_maskz_loadu_ps(m0, row));
                    v1 = _mm512_add_ps(v1, _mm512_maskz_loadu_ps(m1, hi));
                }
                _mm512_mask_storeu_ps(row, m0, v0);
                _mm512_mask_storeu_ps(hi, m1, v1);
            }
        }
    }

    mod avx2 {
        use super::*;
        const NR: usize = 16;
        const MR: usize = 6;

        kernel_entries!("avx2,fma");

        /// The register block for `rows` rows. Blocks of 1-3 rows keep 4, 2 or 2 sets of
        /// accumulators (steps of k alternate between them) so that at least 8 independent FMA
        /// chains hide the FMA latency (one chain per accumulator would stall on it).
        #[inline(always)]
        unsafe fn dispatch<const PACKED: bool>(rows: usize, args: Args) {
            match rows {
                6 => block::<6, 1, PACKED>(args),
                5 => block::<5, 1, PACKED>(args),
                4 => block::<4, 1, PACKED>(args),
                3 => block::<3, 2, PACKED>(args),
                2 => block::<2, 2, PACKED>(args),
                _ => block::<1, 4, PACKED>(args),
            }
        }

        /// `M` rows x up to `NR` columns of `c [+]= a · panel`, with `U` sets of accumulators
        /// (step `p` of k adds into set `p % U`) and, when `PACKED`, `a` in a micro-panel
        /// (`a_rs = 1`, `a_cs = MR`, so every load is at a constant offset of one pointer).
        #[inline]
        #[target_feature(enable = "avx2,fma")]
        unsafe fn block<const M: usize, const U: usize, const PACKED: bool>(
            (k, a, a_rs, a_cs, panel, c, c_rs, accumulate, cols): Args,
        ) {
            let (a_rs, a_cs) = if PACKED { (1, MR) } else { (a_rs, a_cs) };
            let mut sets0 = [[_mm256_setzero_ps(); M]; U];
            let mut sets1 = [[_mm256_setzero_ps(); M]; U];
            // Steps of k in groups of 4 (U divides 4), then the rest into set 0. Not with six
            // strided rows: their pointers then no longer fit in registers.
            let group = if PACKED || U > 1 { 4 } else { 1 };
            // Step `q` of k into accumulator set `set`.
            macro_rules! step {
                ($q:expr, $set:expr) => {{
                    let (q, acc0, acc1) = ($q, &mut sets0[$set], &mut sets1[$set]);
                    let b0 = _mm256_loadu_ps(panel.add(q * NR));
                    let b1 = _mm256_loadu_ps(panel.add(q * NR + 8));
                    for i in 0..M {
                        let av = _mm256_broadcast_ss(&*a.add(i * a_rs + q * a_cs));
                        acc0[i] = _mm256_fmadd_ps(av, b0, acc0[i]);
                        acc1[i] = _mm256_fmadd_ps(av, b1, acc1[i]);
                    }
                }};
            }
            let mut p = 0;
            while p + group <= k {
                for s in 0..group {
                    step!(p + s, s % U);
                }
                p += group;
            }
            while p < k {
                step!(p, 0);
                p += 1;
            }
            let (mut acc0, mut acc1) = (sets0[0], sets1[0]);
            for s in 1..U {
                for i in 0..M {
                    acc0[i] = _mm256_add_ps(acc0[i], sets0[s][i]);
                    acc1[i] = _mm256_add_ps(acc1[i], sets1[s][i]);
                }
            }
            if cols == NR {
                for i in 0..M {
                    let row = c.add(i * c_rs);
                    let (mut v0, mut v1) = (acc0[i], acc1[i]);
                    if accumulate {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(row));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(row.add(8)));
                    }
                    _mm256_storeu_ps(row, v0);
                    _mm256_storeu_ps(row.add(8), v1);
                }
                return;
            }
            let (m0, m1) = (lanes(cols), lanes(cols.saturating_sub(8)));
            for i in 0..M {
                let row = c.add(i * c_rs);
                // Masked-off lanes are neither read nor written (no fault past the row's end).
                let hi = row.wrapping_add(8);
                let (mut v0, mut v1) = (acc0[i], acc1[i]);
                if accumulate {
                    v0 = _mm256_add_ps(v0, _mm256_maskload_ps(row, m0));
                    v1 = _mm256_add_ps(v1, _mm256_maskload_ps(hi, m1));
                }
                _mm256_maskstore_ps(row, m0, v0);
                _mm256_maskstore_ps(hi, m1, v1);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub(in crate::ops::gemm) mod kernel {
    use super::KernelIsa;
    pub const KC: usize = 256;
    pub unsafe fn run_packed(
        _: KernelIsa,
        _: (usize, usize, usize),
        _: *const f32,
        _: &[f32],
        _: usize,
        _: (*mut f32, usize),
        _: bool,
    ) {
        unreachable!("the packed kernel is only built on x86_64")
    }
    pub unsafe fn run(
        _: KernelIsa,
        _: (usize, usize, usize),
        _: (*const f32, usize, usize, usize),
        _: &[f32],
        _: (*mut f32, usize),
        _: bool,
    ) {
        unreachable!("the packed kernel is only built on x86_64")
    }
}

//! Which kernel runs a product: chosen per shape class by a short measurement on this host at
//! the class's first use (every kernel the CPU runs, on a synthetic product of the class, for a
//! few milliseconds; some tens for the weight gradients' class), kept for the process and, when a cache file is set
//! ([`set_cache_file`]), on disk for the next process. The ISA flag alone does not decide: on a
//! host nobody tuned for, the AVX-512 kernel is not always faster than the AVX2 one or faer.
//!
//! `RNN_KERNEL=avx512|avx2|portable` pins every class to one kernel (`auto`, the default,
//! measures); `RNN_PACKED_KERNEL=off` pins `portable` as before. A kernel this CPU lacks, or an
//! unknown value, is a warning on stderr and measuring ([`Setting`]).
//!
//! Kernels differ in the order of their float additions, so a measured choice may differ between
//! two processes and with it the low bits of the results: exact resumption needs the same choice
//! in both, which the cache file (same host) or `RNN_KERNEL` (any host that runs the kernel) give.
//! Processes sharing the file agree even when they measure a class at the same time: the first
//! to store it wins and the others take its choice ([`settle`]).

use super::blocked::blocked_f32;
use super::matref::MatRef;
use super::packed::PackedRhs;
use super::product::faer_matmul;
use super::rowdot::RowsRhs;
use super::simd::KernelIsa;
use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// Upper bounds of the row buckets (rows of `a` per call: a batch chunk); the last is open.
const ROWS: [usize; 5] = [1, 8, 32, 128, usize::MAX];
/// Upper bounds of the inner-dimension buckets (`k`).
const INNER: [usize; 6] = [64, 128, 256, 512, 1024, usize::MAX];
/// Upper bounds of the output-column buckets (`n`: gate columns).
const COLS: [usize; 6] = [128, 512, 1024, 2048, 4096, usize::MAX];
/// The size each bucket is measured at: its upper bound, or twice the last bound when open.
const fn representative(bounds: &[usize], i: usize) -> usize {
    if bounds[i] == usize::MAX {
        2 * bounds[i - 1]
    } else {
        bounds[i]
    }
}
/// Multiply-adds of one measured product at most (rows, then columns down to 512, are cut to
/// fit): a few tenths of a millisecond on one core.
const MAX_MACS: usize = 1 << 25;
/// Rounds of the measurement, each running every kernel in turn (so all see the same load).
const ROUNDS: usize = 3;
/// Time per kernel per round.
const ROUND_SECS: f64 = 300e-6;
/// A kernel later in [`KernelIsa::supported`]'s order must be this much faster to be chosen
/// over an earlier one (keeps near-ties from flipping between processes).
const MARGIN: f64 = 0.03;

/// A shape class: the products whose kernel is chosen once.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub(crate) enum Class {
    /// A product with a packed right-hand side ([`PackedRhs`]): bucket indices of rows, inner
    /// dimension and columns.
    Packed { rows: u8, inner: u8, cols: u8 },
    /// The cache-blocked product of the weight gradients (against faer for `Portable`).
    Blocked,
    /// A product with the rows of a weight matrix read in place ([`super::rowdot::RowsRhs`]):
    /// bucket indices as in `Packed`.
    RowDot { rows: u8, inner: u8, cols: u8 },
}

fn bucket(bounds: &[usize], v: usize) -> u8 {
    bounds
        .iter()
        .position(|&b| v <= b)
        .unwrap_or(bounds.len() - 1) as u8
}

fn range_label(bounds: &[usize], i: u8) -> String {
    let i = i as usize;
    let lo = if i == 0 { 1 } else { bounds[i - 1] + 1 };
    match bounds[i] {
        usize::MAX => format!(">{}", lo - 1),
        hi if hi == lo => format!("{hi}"),
        hi => format!("{lo}-{hi}"),
    }
}

impl Class {
    /// The class of `a (rows, k) · b (k, n)` with `b` packed.
    pub fn packed(rows: usize, k: usize, n: usize) -> Self {
        Self::Packed {
            rows: bucket(&ROWS, rows),
            inner: bucket(&INNER, k),
            cols: bucket(&COLS, n),
        }
    }

    /// The class of `a (rows, k) · wᵀ` with `n` rows of `w` read in place.
    pub fn rowdot(rows: usize, k: usize, n: usize) -> Self {
        let Self::Packed { rows, inner, cols } = Self::packed(rows, k, n) else {
            unreachable!()
        };
        Self::RowDot { rows, inner, cols }
    }

    /// Every class, for reading labels back.
    fn all() -> impl Iterator<Item = Self> {
        let buckets = (0..ROWS.len() as u8).flat_map(|rows| {
            (0..INNER.len() as u8)
                .flat_map(move |inner| (0..COLS.len() as u8).map(move |cols| (rows, inner, cols)))
        });
        let packed = buckets
            .clone()
            .map(|(rows, inner, cols)| Self::Packed { rows, inner, cols });
        let rowdot = buckets.map(|(rows, inner, cols)| Self::RowDot { rows, inner, cols });
        packed.chain(std::iter::once(Self::Blocked)).chain(rowdot)
    }

    /// A readable name, also the class's key in the cache file.
    pub fn label(self) -> String {
        match self {
            Self::Packed { rows, inner, cols } => format!(
                "rows {}, k {}, n {}",
                range_label(&ROWS, rows),
                range_label(&INNER, inner),
                range_label(&COLS, cols)
            ),
            Self::Blocked => "weight gradients".into(),
            Self::RowDot { rows, inner, cols } => format!(
                "row-dot rows {}, k {}, n {}",
                range_label(&ROWS, rows),
                range_label(&INNER, inner),
                range_label(&COLS, cols)
            ),
        }
    }

    fn from_label(label: &str) -> Option<Self> {
        Self::all().find(|c| c.label() == label)
    }

    /// `(m, k, n)` of the product measured for the class.
    fn problem(self) -> (usize, usize, usize) {
        match self {
            Self::Packed { rows, inner, cols } | Self::RowDot { rows, inner, cols } => {
                let mut m = representative(&ROWS, rows as usize);
                let k = representative(&INNER, inner as usize);
                let mut n = representative(&COLS, cols as usize);
                while m * k * n > MAX_MACS && n > 512 {
                    n /= 2;
                }
                while m * k * n > MAX_MACS && m > 1 {
                    m /= 2;
                }
                (m, k, n)
            }
            // A transposed `a` at twice the size where the blocked path begins
            // (BLOCKED_MIN_MACS), on every thread as the weight gradients run.
            Self::Blocked => (512, 1024, 256),
        }
    }
}

/// How the kernel is chosen, from `RNN_KERNEL` and `RNN_PACKED_KERNEL`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Setting {
    /// Measured per class.
    Auto,
    /// One kernel for every class.
    Pinned(KernelIsa),
}

impl Setting {
    /// The setting for the values of `RNN_KERNEL` and `RNN_PACKED_KERNEL` (`None` when unset),
    /// and a warning to print when `RNN_KERNEL` cannot be obeyed: `RNN_KERNEL` names a kernel
    /// (`avx512`, `avx2`, `portable`) or `auto`; unset, empty or `auto`, `RNN_PACKED_KERNEL=off`
    /// pins `portable`. A kernel this CPU lacks, or another value, warns and measures.
    pub fn parse(kernel: Option<&OsStr>, packed: Option<&OsStr>) -> (Self, Option<String>) {
        let packed_off = packed.is_some_and(|v| v == "off");
        let fallback = if packed_off {
            Self::Pinned(KernelIsa::Portable)
        } else {
            Self::Auto
        };
        let Some(value) = kernel.map(|v| v.to_string_lossy().trim().to_ascii_lowercase()) else {
            return (fallback, None);
        };
        if value.is_empty() || value == "auto" {
            return (fallback, None);
        }
        match value.parse::<KernelIsa>() {
            Ok(isa) if isa.runs_here() => (Self::Pinned(isa), None),
            Ok(isa) => (
                fallback,
                Some(format!(
                    "warning: RNN_KERNEL={value}: this CPU cannot run the {} kernel (it runs: {}); \
                     choosing by measurement instead",
                    isa.name(),
                    names(&KernelIsa::supported())
                )),
            ),
            Err(_) => (
                fallback,
                Some(format!(
                    "warning: RNN_KERNEL={value} is not one of auto, avx512, avx2, portable; \
                     choosing by measurement instead"
                )),
            ),
        }
    }

    /// This process's setting, read once (a warning goes to stderr then).
    pub fn current() -> Self {
        static SETTING: OnceLock<Setting> = OnceLock::new();
        *SETTING.get_or_init(|| {
            let (setting, warning) = Self::parse(
                std::env::var_os("RNN_KERNEL").as_deref(),
                std::env::var_os("RNN_PACKED_KERNEL").as_deref(),
            );
            if let Some(w) = warning {
                eprintln!("{w}");
            }
            setting
        })
    }
}

fn names(isas: &[KernelIsa]) -> String {
    isas.iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
}

thread_local! {
    /// A kernel forced for this thread's products ([`with_forced`]), ahead of any setting.
    static FORCED: Cell<Option<KernelIsa>> = const { Cell::new(None) };
}

/// Runs `f` with every class's kernel on this thread forced to `isa` (which must run here).
pub(crate) fn with_forced<R>(isa: KernelIsa, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<KernelIsa>);
    impl Drop for Restore {
        fn drop(&mut self) {
            FORCED.set(self.0);
        }
    }
    let _restore = Restore(FORCED.replace(Some(isa)));
    f()
}

/// One class's chosen kernel and how many products asked for it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    pub isa: KernelIsa,
    pub uses: u64,
}

/// The choices of this process, and the file they are kept in.
#[derive(Default)]
struct Table {
    entries: HashMap<Class, Entry>,
    file: Option<PathBuf>,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn lock() -> std::sync::MutexGuard<'static, Table> {
    table().lock().unwrap_or_else(|e| e.into_inner())
}

/// The kernel for `class`: forced on this thread, else pinned by the environment, else the
/// one measured (or read from the cache file) for the class. The measurement runs on the
/// calling thread without holding the table (it may use rayon, whose workers may ask for other
/// classes); two threads measuring one class at once keep the first result stored, and so do
/// two processes sharing the cache file ([`settle`]).
pub(crate) fn kernel_for(class: Class) -> KernelIsa {
    if let Some(isa) = FORCED.get() {
        return isa;
    }
    let pinned = match Setting::current() {
        Setting::Pinned(isa) => Some(isa),
        Setting::Auto => None,
    };
    {
        let mut table = lock();
        if let Some(e) = table.entries.get_mut(&class) {
            if pinned.is_none_or(|isa| isa == e.isa) {
                e.uses += 1;
                return e.isa;
            }
        }
        if let Some(isa) = pinned {
            table.entries.insert(class, Entry { isa, uses: 1 });
            return isa;
        }
    }
    let measured = measure(class);
    let mut table = lock();
    let isa = match table.entries.get(&class) {
        // Another thread of this process stored the class while this one measured.
        Some(e) => e.isa,
        None => match table.file.clone() {
            Some(file) => settle(&file, class, measured, &table.entries),
            None => measured,
        },
    };
    let entry = table.entries.entry(class).or_insert(Entry { isa, uses: 0 });
    entry.uses += 1;
    entry.isa
}

/// The kernel for `class` that every process sharing `file` uses: the one the file holds if
/// another process stored the class since this one read it, else `measured`, which is then
/// written to the file with the file's other choices and this process's (`entries`) for classes
/// the file lacks. Done under an exclusive lock on `<file>.lock`, so that of two processes that
/// measured the same class at once the first to write wins and the other takes its choice: two
/// runs started together on a fresh host (ranks of one job, a run and its resumption) then
/// compute with the same kernels. Without the lock (an unwritable place) the file is read and
/// written as it is, and errors are ignored.
pub(super) fn settle(
    file: &Path,
    class: Class,
    measured: KernelIsa,
    entries: &HashMap<Class, Entry>,
) -> KernelIsa {
    if let Some(dir) = file.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut lock_path = file.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(PathBuf::from(lock_path))
        .ok()
        .filter(|f| f.lock().is_ok());
    let on_disk = load(file);
    if let Some(&(_, isa)) = on_disk.iter().find(|(c, _)| *c == class) {
        return isa;
    }
    let mut merged: HashMap<Class, Entry> = on_disk
        .into_iter()
        .map(|(c, isa)| (c, Entry { isa, uses: 0 }))
        .collect();
    for (c, e) in entries {
        merged.entry(*c).or_insert(*e);
    }
    merged.insert(
        class,
        Entry {
            isa: measured,
            uses: 0,
        },
    );
    save(file, &merged);
    drop(lock_file);
    measured
}

/// Every class chosen so far in this process, ordered by class.
pub(crate) fn choices() -> Vec<(Class, Entry)> {
    let mut out: Vec<(Class, Entry)> = lock().entries.iter().map(|(c, e)| (*c, *e)).collect();
    out.sort_by_key(|(c, _)| *c);
    out
}

/// Keeps measured choices in `file` from now on (`None`: in memory only, the default): choices
/// the file holds for kernels this CPU runs are taken for classes not chosen yet, and every
/// new measurement rewrites the file. A missing, unreadable or corrupt file is ignored; an
/// unwritable one is never an error.
pub(crate) fn set_cache_file(file: Option<PathBuf>) {
    let mut table = lock();
    if let Some(path) = &file {
        for (class, isa) in load(path) {
            table.entries.entry(class).or_insert(Entry { isa, uses: 0 });
        }
    }
    table.file = file;
}

/// The CPU's model name (`/proc/cpuinfo`), or `unknown CPU`.
pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "unknown CPU".into())
}

/// FNV-1a of the CPU model and the kernels it runs: the cache file's name on this host.
fn host_hash() -> u64 {
    let key = format!("{}|{}", cpu_model(), names(&KernelIsa::supported()));
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// `$XDG_CACHE_HOME/rnn/kernels-<hash>.json`, else `~/.cache/rnn/...`, the hash naming the CPU
/// model; `None` without either variable.
pub(crate) fn default_cache_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(
        base.join("rnn")
            .join(format!("kernels-{:016x}.json", host_hash())),
    )
}

/// The choices in `path` for this CPU model and kernels it runs; nothing when the file is
/// missing, unreadable, corrupt or from another CPU.
pub(super) fn load(path: &Path) -> Vec<(Class, KernelIsa)> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let Ok(serde_json::Value::Object(root)) = serde_json::from_str::<serde_json::Value>(&text)
    else {
        return Vec::new();
    };
    if root.get("cpu").and_then(|v| v.as_str()) != Some(cpu_model().as_str()) {
        return Vec::new();
    }
    let Some(kernels) = root.get("kernels").and_then(|v| v.as_object()) else {
        return Vec::new();
    };
    kernels
        .iter()
        .filter_map(|(label, v)| {
            let class = Class::from_label(label)?;
            let isa = v.as_str()?.parse::<KernelIsa>().ok()?;
            isa.runs_here().then_some((class, isa))
        })
        .collect()
}

/// Writes `entries` to `path` (through a temporary file and a rename, so a killed process
/// leaves the old file or the new one); errors are ignored.
pub(super) fn save(path: &Path, entries: &HashMap<Class, Entry>) {
    let kernels: BTreeMap<String, &str> = entries
        .iter()
        .map(|(c, e)| (c.label(), e.isa.name()))
        .collect();
    let doc = serde_json::json!({ "cpu": cpu_model(), "kernels": kernels });
    let Ok(text) = serde_json::to_string_pretty(&doc) else {
        return;
    };
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// Deterministic values in [-1, 1) for the measured operands.
fn synthetic(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Times every kernel this CPU runs on `class`'s synthetic product and returns the fastest
/// (single-threaded for the per-step products, which run inside one batch chunk's thread;
/// on rayon's threads for the weight gradients).
pub(super) fn measure(class: Class) -> KernelIsa {
    let isas = KernelIsa::supported();
    if isas.len() == 1 {
        return isas[0];
    }
    let (m, k, n) = class.problem();
    let mut dst = vec![0f32; m * n];
    let mut seconds = vec![f64::INFINITY; isas.len()];
    match class {
        Class::Packed { .. } => {
            let a = synthetic(m * k, 1);
            let b = synthetic(k * n, 2);
            let a = MatRef::row_major(&a, m, k);
            let packed: Vec<PackedRhs<f32>> = isas
                .iter()
                .map(|&isa| PackedRhs::with_kernel(MatRef::row_major(&b, k, n), isa))
                .collect();
            time_each(&mut seconds, |i| packed[i].matmul(&mut dst, 0, n, false, a));
        }
        Class::RowDot { .. } => {
            let a = synthetic(m * k, 1);
            let w = synthetic(n * k, 2);
            let rhs: Vec<RowsRhs<f32>> = isas
                .iter()
                .map(|&isa| RowsRhs::with_kernel(&w, k, std::iter::once(0..n).collect(), isa))
                .collect();
            time_each(&mut seconds, |i| {
                rhs[i].matmul(&mut dst, n, false, (&a, m, k))
            });
        }
        Class::Blocked => {
            // `a` transposed (columns contiguous), as `xᵀ` in `xᵀ · dG`.
            let at = synthetic(k * m, 1);
            let b = synthetic(k * n, 2);
            let a = MatRef::row_major(&at, k, m).t();
            let b = MatRef::row_major(&b, k, n);
            time_each(&mut seconds, |i| match isas[i] {
                KernelIsa::Portable => faer_matmul(&mut dst, 0, n, false, a, b, true),
                isa => blocked_f32(isa, &mut dst, 0, n, false, a, b, true),
            });
        }
    }
    pick(&isas, &seconds)
}

/// Fills `seconds[i]` with the fastest time per call of `run(i)`, over [`ROUNDS`] rounds that
/// run every `i` in turn, after one warm-up call each.
fn time_each(seconds: &mut [f64], mut run: impl FnMut(usize)) {
    let mut reps = vec![1usize; seconds.len()];
    for (i, r) in reps.iter_mut().enumerate() {
        let t0 = Instant::now();
        run(i);
        let once = t0.elapsed().as_secs_f64().max(1e-7);
        *r = ((ROUND_SECS / once).ceil() as usize).clamp(1, 64);
    }
    for _ in 0..ROUNDS {
        for (i, s) in seconds.iter_mut().enumerate() {
            let t0 = Instant::now();
            for _ in 0..reps[i] {
                run(i);
            }
            *s = s.min(t0.elapsed().as_secs_f64() / reps[i] as f64);
        }
    }
}

/// The fastest of `isas` by `seconds`, a later one winning only by more than [`MARGIN`].
pub(super) fn pick(isas: &[KernelIsa], seconds: &[f64]) -> KernelIsa {
    let mut best = 0;
    for i in 1..isas.len() {
        if seconds[i] < seconds[best] * (1.0 - MARGIN) {
            best = i;
        }
    }
    isas[best]
}

//! `rnn bench --devices LIST`: one table of timings, device × cell × mode × shape, with PyTorch on
//! the same shape and device beside ours when asked (`--pytorch PYTHON`).
//!
//! A device this build or machine lacks is a row saying so, and a workload that fails is a row
//! with the error: the table always completes. PyTorch runs as a child process (the script
//! [`TORCH_SCRIPT`], embedded in the binary), once per row, right after our measurement of the
//! same row, so both see the same machine load.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use rnn_core::Mode;
use serde::{Deserialize, Serialize};

use crate::bench::{BenchImpl, BenchSpec, Workload};
use crate::run::error_line;

/// The PyTorch timing script (`benches/torch_bench.py`), run as `PYTHON -c TORCH_SCRIPT ARGS`.
pub const TORCH_SCRIPT: &str = include_str!("../benches/torch_bench.py");

/// One problem size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Sequences per batch.
    pub batch: usize,
    /// Steps per sequence.
    pub seq_len: usize,
    /// Input features.
    pub input: usize,
    /// Hidden size.
    pub hidden: usize,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}×{}×{}×{}",
            self.batch, self.seq_len, self.input, self.hidden
        )
    }
}

/// Parses `--shapes`: `;`-separated `BxTxIxH` (`x`, `X` or `×` between the sizes), e.g.
/// `32x64x256x256;1x100x64x128`. Every size must be at least 1.
pub fn parse_shapes(list: &str) -> Result<Vec<Shape>> {
    let mut shapes = Vec::new();
    for item in list.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let sizes: Vec<&str> = item.split(['x', 'X', '×']).map(str::trim).collect();
        let parsed: Option<Vec<usize>> = sizes
            .iter()
            .map(|s| s.parse::<usize>().ok().filter(|&n| n > 0))
            .collect();
        match parsed.as_deref() {
            Some(&[batch, seq_len, input, hidden]) => shapes.push(Shape {
                batch,
                seq_len,
                input,
                hidden,
            }),
            _ => bail!(
                "--shapes: '{item}' is not BxTxIxH with four sizes of at least 1 (e.g. 32x64x256x256)"
            ),
        }
    }
    if shapes.is_empty() {
        bail!("--shapes: no shape given (expected e.g. '32x64x256x256;1x100x64x128')");
    }
    Ok(shapes)
}

/// Parses `--cells`: a comma-separated list of `lstm`, `gru`, `rnn-tanh`, `rnn-relu`.
pub fn parse_cells(list: &str) -> Result<Vec<Mode>> {
    let cells = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<Mode>().context("--cells"))
        .collect::<Result<Vec<_>>>()?;
    if cells.is_empty() {
        bail!("--cells: no cell given (expected e.g. 'lstm,gru')");
    }
    Ok(cells)
}

/// Parses `--modes`: a comma-separated list of `train` and `infer`; `true` means train.
pub fn parse_modes(list: &str) -> Result<Vec<bool>> {
    let mut modes = Vec::new();
    for m in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        modes.push(match m {
            "train" => true,
            "infer" => false,
            other => bail!("--modes: '{other}' is not train or infer"),
        });
    }
    if modes.is_empty() {
        bail!("--modes: no mode given (expected train, infer or 'train,infer')");
    }
    Ok(modes)
}

/// Expands `--devices`: comma-separated device specs (`cpu`, `cuda`, `cuda:N`, `metal`,
/// `metal:N`, `auto`), where `all` is every device kind compiled into this build: `cpu`, then
/// `cuda` with the `cuda` feature, then `metal` with the `metal` feature. Duplicates are dropped.
///
/// Only the spelling is checked here; whether this machine has the device is a row of the table.
pub fn expand_devices(list: &str) -> Result<Vec<String>> {
    let mut out: Vec<String> = Vec::new();
    for spec in list.split(',').map(|s| s.trim().to_ascii_lowercase()) {
        if spec.is_empty() {
            continue;
        }
        let specs = if spec == "all" {
            let mut all = vec!["cpu".to_string()];
            if cfg!(feature = "cuda") {
                all.push("cuda".into());
            }
            if cfg!(feature = "metal") {
                all.push("metal".into());
            }
            all
        } else {
            let (kind, index) = spec.split_once(':').unwrap_or((&spec, "0"));
            let known = matches!(kind, "cpu" | "auto" | "cuda" | "metal");
            if !known || index.parse::<usize>().is_err() || (kind == "cpu" && index != "0") {
                bail!(
                    "--devices: unknown device '{spec}': expected cpu, cuda, cuda:N, metal, metal:N, auto or all"
                );
            }
            vec![spec]
        };
        for s in specs {
            if !out.contains(&s) {
                out.push(s);
            }
        }
    }
    if out.is_empty() {
        bail!("--devices: no device given (expected e.g. 'cpu,cuda' or 'all')");
    }
    Ok(out)
}

/// What to time: every device × cell × mode × shape, with the same layers, directions,
/// implementation, element type and iterations.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Device specs, as [`expand_devices`] returns them.
    pub devices: Vec<String>,
    /// Cell kinds.
    pub cells: Vec<Mode>,
    /// Modes: `true` = train (forward + loss + backward), `false` = infer.
    pub modes: Vec<bool>,
    /// Problem sizes.
    pub shapes: Vec<Shape>,
    /// Stacked layers.
    pub layers: usize,
    /// Two directions per layer.
    pub bidirectional: bool,
    /// Our implementation timed.
    pub implementation: BenchImpl,
    /// Element type.
    pub dtype: DType,
    /// Timed iterations (after the same warm-up rule), on both sides.
    pub iters: usize,
    /// Seconds the timed iterations take at least ([`BenchSpec::min_time_s`]), both sides.
    pub min_time_s: f64,
    /// A Python with PyTorch: time the same row in PyTorch too.
    pub pytorch: Option<PathBuf>,
    /// Allow TF32 in f32 matrix products on CUDA, on both sides (Candle's reduced-precision
    /// GEMMs; PyTorch's `allow_tf32` for matmul and cuDNN). Off by default, as in both libraries.
    pub tf32: bool,
}

/// How a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RowStatus {
    /// Ours was measured.
    Ok,
    /// The device cannot be opened (not compiled in, or not on this machine).
    NotAvailable,
    /// Our workload failed on an available device (the note has the error).
    Error,
}

/// One line of the table (one JSON object with `--json`). Cell, mode and shape are `None` on a
/// device's single "not available" row; times are in milliseconds per iteration.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `cpu`, `cuda:0`, `metal:0`; the spec as given when the device cannot be opened.
    pub device: String,
    /// `lstm`, `gru`, `rnn-tanh`, `rnn-relu`.
    pub cell: Option<String>,
    /// `train` or `infer`.
    pub mode: Option<String>,
    /// Sequences per batch.
    pub batch: Option<usize>,
    /// Steps per sequence.
    pub seq_len: Option<usize>,
    /// Input features.
    pub input: Option<usize>,
    /// Hidden size.
    pub hidden: Option<usize>,
    /// Stacked layers.
    pub layers: usize,
    /// Two directions per layer.
    pub bidirectional: bool,
    /// Our implementation: `fused`, `composed` or `candle-nn`.
    #[serde(rename = "impl")]
    pub implementation: BenchImpl,
    /// Element type: `f32`, `f64`, `bf16`, `f16`.
    pub dtype: String,
    /// Timed iterations (after the warm-up).
    pub iters: usize,
    /// Our median.
    pub ours_median_ms: Option<f64>,
    /// Our fastest iteration.
    pub ours_min_ms: Option<f64>,
    /// PyTorch's median on the same shape and device.
    pub torch_median_ms: Option<f64>,
    /// PyTorch's fastest iteration.
    pub torch_min_ms: Option<f64>,
    /// PyTorch's version.
    pub torch_version: Option<String>,
    /// PyTorch's intra-op threads.
    pub torch_threads: Option<usize>,
    /// The kernels PyTorch ran: `oneDNN v3.x`, `ATen CPU cells (BLAS mkl)`, `cuDNN 90100`, `MPS`.
    pub torch_backend: Option<String>,
    /// TF32 on CUDA (both sides); `None` off CUDA, where it does not apply.
    pub tf32: Option<bool>,
    /// `ours_median_ms / torch_median_ms` (below 1: ours is faster).
    pub ratio: Option<f64>,
    /// How the row ended.
    pub status: RowStatus,
    /// Why a device is missing, our error, or PyTorch's; empty when all went well.
    pub note: String,
    /// The host CPU (`model name` of /proc/cpuinfo).
    pub cpu_model: String,
    /// Rayon threads (the CPU threads our GEMMs may use).
    pub threads: usize,
}

/// The host: CPU model and our CPU threads, printed above the table.
#[derive(Debug, Clone)]
pub struct Host {
    /// `model name` of /proc/cpuinfo, or the architecture where there is none.
    pub cpu_model: String,
    /// Rayon threads.
    pub threads: usize,
}

impl Host {
    /// Reads this machine's CPU model and Rayon's thread count.
    pub fn detect() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .filter_map(|l| l.split_once(':'))
                    .find(|(k, _)| k.trim() == "model name")
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| format!("unknown {} CPU", std::env::consts::ARCH));
        Self {
            cpu_model,
            threads: rayon::current_num_threads(),
        }
    }
}

/// What the PyTorch script prints (the fields the table uses).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TorchResult {
    pub median_ms: f64,
    pub min_ms: Option<f64>,
    pub torch: Option<String>,
    pub threads: Option<usize>,
    pub backend: Option<String>,
    pub device_name: Option<String>,
    pub tf32: Option<bool>,
}

/// Runs the table, calling `on_row` as each row is done (so long tables print as they go), and
/// returns every row. Errors only for a spec that cannot run at all (no device, cell, mode or
/// shape, or zero iterations); a missing device or a failing workload is a row.
pub fn run_table(spec: &TableSpec, mut on_row: impl FnMut(&Row)) -> Result<Vec<Row>> {
    if spec.devices.is_empty()
        || spec.cells.is_empty()
        || spec.modes.is_empty()
        || spec.shapes.is_empty()
    {
        bail!("bench: --devices, --cells, --modes and --shapes must each name at least one");
    }
    if spec.iters == 0 {
        bail!("--iters must be at least 1, got 0");
    }
    let host = Host::detect();
    // A Python that cannot import PyTorch fails every row alike: say so once, run it no more.
    let torch_probe = spec.pytorch.as_deref().map(probe_torch);
    let mut rows = Vec::new();
    let mut seen = Vec::new();
    for device_spec in &spec.devices {
        let device = match rnn_core::device::select(device_spec) {
            Ok(device) => device,
            Err(e) => {
                let mut row = empty_row(spec, &host, device_spec.clone());
                row.status = RowStatus::NotAvailable;
                row.note = format!("not available: {}", error_line(&e.into()));
                on_row(&row);
                rows.push(row);
                continue;
            }
        };
        let name = rnn_core::device::name(&device);
        // `auto` and `cuda` may name a device already in the list.
        if seen.contains(&name) {
            continue;
        }
        seen.push(name.clone());
        if device.is_cuda() {
            candle_core::cuda::set_gemm_reduced_precision_f32(spec.tf32);
        }
        for &cell in &spec.cells {
            for &train in &spec.modes {
                for &shape in &spec.shapes {
                    let row = measure_row(
                        spec,
                        &host,
                        torch_probe.as_ref(),
                        &device,
                        &name,
                        cell,
                        train,
                        shape,
                    );
                    on_row(&row);
                    rows.push(row);
                }
            }
        }
    }
    Ok(rows)
}

/// A row with the table-wide fields filled and nothing measured.
fn empty_row(spec: &TableSpec, host: &Host, device: String) -> Row {
    Row {
        device,
        cell: None,
        mode: None,
        batch: None,
        seq_len: None,
        input: None,
        hidden: None,
        layers: spec.layers,
        bidirectional: spec.bidirectional,
        implementation: spec.implementation,
        dtype: spec.dtype.as_str().to_string(),
        iters: spec.iters,
        ours_median_ms: None,
        ours_min_ms: None,
        torch_median_ms: None,
        torch_min_ms: None,
        torch_version: None,
        torch_threads: None,
        torch_backend: None,
        tf32: None,
        ratio: None,
        status: RowStatus::Ok,
        note: String::new(),
        cpu_model: host.cpu_model.clone(),
        threads: host.threads,
    }
}

/// Ours, then PyTorch (if asked and `torch_probe` found it), on one device, cell, mode and shape.
#[allow(clippy::too_many_arguments)]
fn measure_row(
    spec: &TableSpec,
    host: &Host,
    torch_probe: Option<&Result<()>>,
    device: &Device,
    name: &str,
    cell: Mode,
    train: bool,
    shape: Shape,
) -> Row {
    let mut row = empty_row(spec, host, name.to_string());
    row.cell = Some(cell.as_str().to_string());
    row.mode = Some(if train { "train" } else { "infer" }.to_string());
    row.batch = Some(shape.batch);
    row.seq_len = Some(shape.seq_len);
    row.input = Some(shape.input);
    row.hidden = Some(shape.hidden);
    if device.is_cuda() {
        row.tf32 = Some(spec.tf32);
    }
    let bench = BenchSpec {
        cell,
        batch: shape.batch,
        seq_len: shape.seq_len,
        input: shape.input,
        hidden: shape.hidden,
        layers: spec.layers,
        bidirectional: spec.bidirectional,
        train,
        implementation: spec.implementation,
        iters: spec.iters,
        min_time_s: spec.min_time_s,
        dtype: spec.dtype,
        masks: Default::default(),
        layer_norm: false,
    };
    let mut notes = Vec::new();
    match Workload::new(&bench, device).and_then(|mut w| w.measure()) {
        Ok(r) => {
            row.ours_median_ms = Some(r.median_ms);
            row.ours_min_ms = Some(r.min_ms);
        }
        Err(e) => {
            row.status = RowStatus::Error;
            notes.push(format!("error: {}", error_line(&e)));
        }
    }
    match (torch_probe, &spec.pytorch) {
        (Some(Err(e)), _) => notes.push(format!("PyTorch: {}", error_line(e))),
        (Some(Ok(())), Some(python)) => match run_torch(python, &bench, name, spec.tf32) {
            Ok(t) => {
                row.torch_median_ms = Some(t.median_ms);
                row.torch_min_ms = t.min_ms;
                row.torch_version = t.torch;
                row.torch_threads = t.threads;
                row.torch_backend = match (t.backend, t.device_name) {
                    (Some(b), Some(d)) if device.is_cuda() => Some(format!("{b} ({d})")),
                    (b, _) => b,
                };
                if device.is_cuda() && t.tf32.is_some_and(|on| on != spec.tf32) {
                    notes.push(format!(
                        "PyTorch reports TF32 {}, asked {}",
                        on_off(t.tf32 == Some(true)),
                        on_off(spec.tf32)
                    ));
                }
                row.ratio = row
                    .ours_median_ms
                    .filter(|_| t.median_ms > 0.0)
                    .map(|ours| ours / t.median_ms);
            }
            Err(e) => notes.push(format!("PyTorch: {}", error_line(&e))),
        },
        _ => {}
    }
    row.note = notes.join("; ");
    row
}

fn on_off(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// PyTorch's name for one of our devices: `cpu`, `cuda:N`, and `mps` for `metal:N`.
pub fn torch_device(name: &str) -> String {
    if name.starts_with("metal") {
        "mps".into()
    } else {
        name.into()
    }
}

/// Runs `python` and waits for it; the error says why it failed (its last line of output).
fn run_python(python: &Path, cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run '{}'", python.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .chain(stdout.lines())
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        bail!(
            "'{}' failed ({}): {}",
            python.display(),
            out.status,
            last.trim()
        );
    }
    Ok(stdout)
}

/// Whether `python` can import PyTorch.
pub(crate) fn probe_torch(python: &Path) -> Result<()> {
    run_python(python, Command::new(python).args(["-c", "import torch"])).map(drop)
}

/// Runs [`TORCH_SCRIPT`] under `python` on the same workload; the error says why it gave no time.
pub(crate) fn run_torch(
    python: &Path,
    bench: &BenchSpec,
    device: &str,
    tf32: bool,
) -> Result<TorchResult> {
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(TORCH_SCRIPT);
    for (flag, value) in [
        ("--cell", bench.cell.as_str().to_string()),
        ("--batch", bench.batch.to_string()),
        ("--seq-len", bench.seq_len.to_string()),
        ("--input", bench.input.to_string()),
        ("--hidden", bench.hidden.to_string()),
        ("--layers", bench.layers.to_string()),
        ("--mode", if bench.train { "train" } else { "infer" }.into()),
        ("--iters", bench.iters.to_string()),
        ("--min-time-s", bench.min_time_s.to_string()),
        ("--max-iters", crate::bench::TIMED_MAX_ITERS.to_string()),
        ("--warmup-s", crate::bench::WARMUP_MIN_S.to_string()),
        ("--warmup-max", crate::bench::WARMUP_MAX_ITERS.to_string()),
        ("--device", torch_device(device)),
        ("--dtype", bench.dtype.as_str().to_string()),
        ("--tf32", on_off(tf32).to_string()),
    ] {
        cmd.arg(flag).arg(value);
    }
    if bench.bidirectional {
        cmd.arg("--bidirectional");
    }
    run_python(python, &mut cmd)?
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<TorchResult>(l.trim()).ok())
        .with_context(|| format!("'{}' printed no JSON line with median_ms", python.display()))
}

/// The lines above the Markdown table: the host and what every row shares.
pub fn markdown_header(spec: &TableSpec, host: &Host) -> String {
    let dirs = if spec.bidirectional {
        "bidirectional"
    } else {
        "one direction"
    };
    let layers = if spec.layers == 1 { "layer" } else { "layers" };
    let mut s = format!(
        "host: {}, {} threads (Rayon)\nrnn {}: impl {}, {}, {} {layers}, {dirs}; median of {} iterations{} after at least 2 warm-ups and 0.25 s of them; TF32 (CUDA only): {}",
        host.cpu_model,
        host.threads,
        env!("CARGO_PKG_VERSION"),
        impl_name(spec.implementation),
        spec.dtype.as_str(),
        spec.layers,
        spec.iters,
        if spec.min_time_s > 0.0 {
            format!(" (more while they take less than {} s)", spec.min_time_s)
        } else {
            String::new()
        },
        on_off(spec.tf32),
    );
    if let Some(p) = &spec.pytorch {
        s.push_str(&format!(
            "\nPyTorch: {} (same shape, device, mode and iterations; ratio = ours / PyTorch, below 1 = ours faster)",
            p.display()
        ));
    }
    s.push_str("\n\n");
    if spec.pytorch.is_some() {
        s.push_str("| device | cell | mode | B×T×I×H | ours ms | PyTorch ms | PyTorch backend | ours / PyTorch | note |\n");
        s.push_str("|---|---|---|---|---:|---:|---|---:|---|");
    } else {
        s.push_str("| device | cell | mode | B×T×I×H | ours ms | note |\n");
        s.push_str("|---|---|---|---|---:|---|");
    }
    s
}

/// One Markdown table line (no trailing newline).
pub fn markdown_row(row: &Row, with_torch: bool) -> String {
    let dash = || "-".to_string();
    let ms = |v: Option<f64>| v.map_or_else(dash, |v| format!("{v:.3}"));
    let shape = match (row.batch, row.seq_len, row.input, row.hidden) {
        (Some(batch), Some(seq_len), Some(input), Some(hidden)) => Shape {
            batch,
            seq_len,
            input,
            hidden,
        }
        .to_string(),
        _ => dash(),
    };
    let mut cols = vec![
        row.device.clone(),
        row.cell.clone().unwrap_or_else(dash),
        row.mode.clone().unwrap_or_else(dash),
        shape,
        ms(row.ours_median_ms),
    ];
    if with_torch {
        let backend = match (&row.torch_backend, row.tf32) {
            (Some(b), Some(tf32)) => format!("{b}, TF32 {}", on_off(tf32)),
            (Some(b), None) => b.clone(),
            (None, _) => dash(),
        };
        let backend = match (&row.torch_version, row.torch_threads) {
            (Some(v), Some(t)) if row.tf32.is_none() => {
                format!("torch {v}, {backend}, {t} threads")
            }
            (Some(v), _) => format!("torch {v}, {backend}"),
            _ => backend,
        };
        cols.push(ms(row.torch_median_ms));
        cols.push(backend);
        cols.push(row.ratio.map_or_else(dash, |r| format!("{r:.2}")));
    }
    cols.push(row.note.clone());
    let cols: Vec<String> = cols
        .iter()
        .map(|c| c.replace('|', "\\|").replace(['\n', '\r'], " "))
        .collect();
    format!("| {} |", cols.join(" | "))
}

fn impl_name(implementation: BenchImpl) -> &'static str {
    match implementation {
        BenchImpl::Fused => "fused",
        BenchImpl::Composed => "composed",
        BenchImpl::CandleNn => "candle-nn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_bad_ones_are_named() {
        let s = parse_shapes("32x64x256x256; 1X100×64x128;").unwrap();
        assert_eq!(
            s,
            [
                Shape {
                    batch: 32,
                    seq_len: 64,
                    input: 256,
                    hidden: 256
                },
                Shape {
                    batch: 1,
                    seq_len: 100,
                    input: 64,
                    hidden: 128
                }
            ]
        );
        assert_eq!(s[0].to_string(), "32×64×256×256");
        for bad in ["32x64x256", "0x1x1x1", "axbxcxd", "1x2x3x4x5"] {
            let e = parse_shapes(bad).unwrap_err().to_string();
            assert!(e.contains(bad) && e.contains("BxTxIxH"), "{e}");
        }
        assert!(parse_shapes(" ; ").is_err());
    }

    #[test]
    fn cells_and_modes_parse() {
        assert_eq!(
            parse_cells("lstm, gru,rnn").unwrap(),
            [Mode::Lstm, Mode::Gru, Mode::RnnTanh]
        );
        assert!(parse_cells("lstn").is_err());
        assert_eq!(parse_modes("train,infer").unwrap(), [true, false]);
        let e = parse_modes("train,fast").unwrap_err().to_string();
        assert!(e.contains("fast"), "{e}");
    }

    #[test]
    fn devices_expand_and_typos_are_errors() {
        let mut all = vec!["cpu"];
        if cfg!(feature = "cuda") {
            all.push("cuda");
        }
        if cfg!(feature = "metal") {
            all.push("metal");
        }
        assert_eq!(expand_devices("all").unwrap(), all);
        assert_eq!(
            expand_devices("CPU, cuda:1,cpu,metal").unwrap(),
            ["cpu", "cuda:1", "metal"]
        );
        for bad in ["tpu", "cuda:x", "cpu:1", ""] {
            assert!(expand_devices(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn torch_names_metal_mps() {
        assert_eq!(torch_device("cpu"), "cpu");
        assert_eq!(torch_device("cuda:1"), "cuda:1");
        assert_eq!(torch_device("metal:0"), "mps");
    }

    #[test]
    fn markdown_escapes_pipes_and_newlines() {
        let spec = TableSpec {
            devices: vec!["cpu".into()],
            cells: vec![Mode::Lstm],
            modes: vec![true],
            shapes: vec![],
            layers: 1,
            bidirectional: false,
            implementation: BenchImpl::Fused,
            dtype: DType::F32,
            iters: 1,
            min_time_s: 0.0,
            pytorch: None,
            tf32: false,
        };
        let host = Host {
            cpu_model: "x".into(),
            threads: 1,
        };
        let mut row = empty_row(&spec, &host, "cuda".into());
        row.note = "a | b\nc".into();
        assert_eq!(
            markdown_row(&row, false),
            "| cuda | - | - | - | - | a \\| b c |"
        );
    }
}

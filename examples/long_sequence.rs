//! Long inputs in bounded memory (issue 8, part 5): inference over a 100,000-step sequence keeps
//! no autograd graph when no gradient is needed, and training with truncated BPTT keeps memory
//! flat from window to window, while full BPTT grows with the sequence length.
//!
//! Run: `cargo run --release --example long_sequence` (Linux: it reads `VmRSS` / `VmHWM` from
//! `/proc/self/status`). Every measurement runs in a child process of its own (the example runs
//! itself with `--phase ...`), so no phase inherits another's heap. One phase alone:
//! `cargo run --release --example long_sequence -- --phase stream lstm fused detached 100000`;
//! only the rows whose phase contains a word (here `tbptt`):
//! `cargo run --release --example long_sequence -- tbptt`.
//!
//! What each row measures: `base` is the resident set after the model is built and before the
//! measured work, `peak` the high-water mark during it (`VmHWM`), `growth = peak - base`; for
//! training, the resident set after every window (step) is recorded too. Layer rows: batch 1,
//! input and hidden size 128, f32, on the CPU; "stream" reads the sequence in chunks of 1,000
//! steps carrying the state (inputs generated chunk by chunk). The language model: vocabulary
//! 1,000, embedding and hidden 128, one LSTM layer. `docs/MEMORY.md` has the whole measured
//! table (release build on a shared, loaded 2-core machine; the run took about 8 minutes).
//! Expected output, a markdown table whose key rows read (growth = peak - base, MB):
//!
//! | what | T | growth |
//! |---|---|---|
//! | LSTM fused full output (detached layer) | 10,000 / 100,000 | +30.9 / +294.6 |
//! | LSTM fused streamed (detached layer) | 10,000 / 100,000 | +4.9 / +4.7 |
//! | GRU fused streamed (detached layer) | 10,000 / 100,000 | +3.9 / +3.7 |
//! | LSTM composed streamed (detached layer) | 10,000 / 100,000 | +2.8 / +3.1 |
//! | LSTM fused streamed, `Var` parameters, state not detached | 10,000 / 100,000 | +50.2 / +492.9 |
//! | LM `stream_nll` / `generate` | 100,000 | +2.8 / +1.7 |
//! | LM loop of `lm.step` on `Var` parameters (graph kept) | 10,000 | +5175.4 |
//! | train TBPTT, 1,000 windows of 100 (RSS after window 10 -> last) | 100,000 | 23.1 -> 24.1 MB |
//! | train full BPTT, one window | 1,000 / 4,000 / 16,000 | +53.5 / +203.4 / +745.1 |
//!
//! So: streamed inference with a detached layer (`Rnn::detached`, which the LM's `stream_nll`
//! and `generate` use internally) does not grow with T; carrying the state of a layer whose
//! parameters are still attached keeps every chunk's graph (detach the layer or the state);
//! truncated BPTT is flat across windows while full BPTT grows with T.
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder, VarMap};
use rnn::models::lm::{GenerateConfig, LanguageModel, LanguageModelConfig};
use rnn::rnn_core::init::seeded_var_builder;
use rnn::rnn_core::{Implementation, Mode, Rnn, RnnConfig, RnnState};
use rnn::train::data::LmBatches;
use rnn::train::metrics::masked_cross_entropy;
use rnn::train::optim::{AdamWConfig, OptimizerConfig};
use rnn::train::trainer::{Evaluation, StepLoss, TrainTask, Trainer, TrainerConfig};
use std::process::Command;
use std::time::Instant;

const HIDDEN: usize = 128;
const CHUNK: usize = 1_000;
const VOCAB: usize = 1_000;
const WINDOW: usize = 100;

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    for line in status.lines() {
        if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
            let kb = rest.trim().trim_end_matches("kB").trim();
            return kb
                .parse()
                .with_context(|| format!("parsing {field} = {rest:?}"));
        }
    }
    bail!("{field} not found in /proc/self/status (this example needs Linux)")
}

/// Resets `VmHWM` to the current resident set (Linux >= 4.0); false when the kernel refuses.
fn reset_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Resident set and peak of the measured work, in kB.
struct Measure {
    base: u64,
    peak: u64,
    end: u64,
    secs: f64,
}

/// Runs `work` between a baseline and a peak reading.
fn measure(work: impl FnOnce() -> Result<()>) -> Result<Measure> {
    let reset = reset_peak();
    let base = status_kb("VmRSS")?;
    if !reset {
        eprintln!("note: /proc/self/clear_refs refused; the peak includes the setup");
    }
    let t0 = Instant::now();
    work()?;
    let secs = t0.elapsed().as_secs_f64();
    Ok(Measure {
        base,
        peak: status_kb("VmHWM")?,
        end: status_kb("VmRSS")?,
        secs,
    })
}

fn mb(kb: u64) -> String {
    format!("{:.1}", kb as f64 / 1024.0)
}

fn signed_mb(kb: i64) -> String {
    format!("{:+.1}", kb as f64 / 1024.0)
}

/// Prints one table row for the parent: `| what | T | base | peak | growth | time | note |`.
fn row(what: &str, t: usize, m: &Measure, note: &str) {
    println!(
        "ROW | {what} | {t} | {} | {} | {} | {:.1} s | {note} |",
        mb(m.base),
        mb(m.peak),
        signed_mb(m.peak as i64 - m.base as i64),
        m.secs
    );
}

fn parse_mode(s: &str) -> Result<Mode> {
    match s {
        "lstm" => Ok(Mode::Lstm),
        "gru" => Ok(Mode::Gru),
        _ => bail!("mode must be lstm or gru, got {s}"),
    }
}

fn parse_impl(s: &str) -> Result<Implementation> {
    match s {
        "fused" => Ok(Implementation::Fused),
        "composed" => Ok(Implementation::Composed),
        _ => bail!("implementation must be fused or composed, got {s}"),
    }
}

/// How the layer's parameters and the carried state relate to the autograd graph.
#[derive(Clone, Copy, PartialEq)]
enum Grad {
    /// `Rnn::detached`: no parameter tracks gradients, so no graph is built at all.
    Detached,
    /// Parameters are `Var`s (as in training), the carried state is detached after each chunk.
    DetachState,
    /// Parameters are `Var`s and the state is carried as returned: every chunk's graph is kept.
    KeepGraph,
}

fn parse_grad(s: &str) -> Result<Grad> {
    match s {
        "detached" => Ok(Grad::Detached),
        "detach-state" => Ok(Grad::DetachState),
        "keep-graph" => Ok(Grad::KeepGraph),
        _ => bail!("gradient mode must be detached, detach-state or keep-graph, got {s}"),
    }
}

fn layer(mode: Mode, imp: Implementation, grad: Grad) -> Result<(VarMap, Rnn)> {
    let varmap = VarMap::new();
    let cfg = RnnConfig::new(mode, HIDDEN, HIDDEN).with_batch_first(true);
    let rnn = Rnn::new(
        &cfg,
        seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu),
    )?
    .with_implementation(imp);
    let rnn = if grad == Grad::Detached {
        rnn.detached()
    } else {
        rnn
    };
    Ok((varmap, rnn))
}

/// Inputs `(1, len, HIDDEN)` for steps `start..start + len`, generated from the step index.
fn inputs(start: usize, len: usize) -> Result<Tensor> {
    let data: Vec<f32> = (start * HIDDEN..(start + len) * HIDDEN)
        .map(|i| ((i as f32) * 0.618_034).sin() * 0.5)
        .collect();
    Ok(Tensor::from_vec(data, (1, len, HIDDEN), &Device::Cpu)?)
}

/// One forward over all `t` steps, returning the full `(1, t, H)` output.
fn phase_full(mode: Mode, imp: Implementation, grad: Grad, t: usize) -> Result<Measure> {
    let (_varmap, rnn) = layer(mode, imp, grad)?;
    measure(|| {
        let xs = inputs(0, t)?;
        let (ys, _state) = rnn.forward_with_state(&xs, None)?;
        let mean = ys.mean_all()?.to_scalar::<f32>()?;
        anyhow::ensure!(mean.is_finite(), "non-finite output");
        Ok(())
    })
}

/// One forward over all `t` steps, then the output is dropped and only the final state kept:
/// `end - base` is what the state holds on to.
fn phase_state_only(mode: Mode, imp: Implementation, t: usize) -> Result<Measure> {
    let (_varmap, rnn) = layer(mode, imp, Grad::Detached)?;
    let mut kept: Option<RnnState> = None;
    let m = measure(|| {
        let xs = inputs(0, t)?;
        let (_ys, state) = rnn.forward_with_state(&xs, None)?;
        kept = Some(state);
        Ok(())
    })?;
    anyhow::ensure!(kept.is_some(), "no state");
    Ok(m)
}

/// The sequence in chunks of `CHUNK` steps, carrying the state.
fn phase_stream(mode: Mode, imp: Implementation, grad: Grad, t: usize) -> Result<Measure> {
    let (_varmap, rnn) = layer(mode, imp, grad)?;
    measure(|| {
        let mut state: Option<RnnState> = None;
        let mut start = 0;
        while start < t {
            let len = CHUNK.min(t - start);
            let (_ys, next) = rnn.forward_with_state(&inputs(start, len)?, state.as_ref())?;
            state = Some(match grad {
                Grad::DetachState => next.detach(),
                Grad::Detached | Grad::KeepGraph => next,
            });
            start += len;
        }
        let h = state.context("no state")?.h.sum_all()?.to_scalar::<f32>()?;
        anyhow::ensure!(h.is_finite(), "non-finite state");
        Ok(())
    })
}

/// A deterministic token stream with some structure: a noisy counter.
fn token_stream(len: usize, seed: u64) -> Vec<u32> {
    let mut x = seed as u32 % VOCAB as u32;
    let mut r = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            r ^= r << 13;
            r ^= r >> 7;
            r ^= r << 17;
            x = if r.is_multiple_of(10) {
                (r >> 32) as u32 % VOCAB as u32
            } else {
                (x + 1) % VOCAB as u32
            };
            x
        })
        .collect()
}

fn language_model(varmap: &VarMap) -> Result<LanguageModel> {
    let cfg = LanguageModelConfig::new(Mode::Lstm, VOCAB, HIDDEN, HIDDEN);
    Ok(LanguageModel::new(
        &cfg,
        seeded_var_builder(varmap, 0, DType::F32, &Device::Cpu),
    )?)
}

/// `LanguageModel::stream_nll` over `t` tokens, batch 1, windows of `WINDOW`.
fn phase_lm_score(t: usize) -> Result<Measure> {
    let varmap = VarMap::new();
    let lm = language_model(&varmap)?;
    let stream = token_stream(t, 1);
    measure(|| {
        let (nll, count) = lm.stream_nll(&stream, 1, WINDOW)?;
        anyhow::ensure!(count == t - 1 && nll.is_finite(), "bad score");
        Ok(())
    })
}

/// `LanguageModel::generate` of `t` tokens, one step at a time.
fn phase_lm_sample(t: usize) -> Result<Measure> {
    let varmap = VarMap::new();
    let lm = language_model(&varmap)?;
    measure(|| {
        let cfg = GenerateConfig {
            max_len: t,
            stop_at_eos: false,
            ..Default::default()
        };
        let out = lm.generate(&[1, 2, 3], &cfg, 7)?;
        anyhow::ensure!(out.len() == t, "generated {} tokens", out.len());
        Ok(())
    })
}

/// A hand-written loop of `LanguageModel::step` on `t` tokens: on the model itself (parameters
/// attached, so each step's graph hangs on the carried state) or on `lm.detached()`.
fn phase_lm_step_loop(t: usize, detached: bool) -> Result<Measure> {
    let varmap = VarMap::new();
    let lm = language_model(&varmap)?;
    let lm = if detached { lm.detached() } else { lm };
    let stream = token_stream(t, 2);
    measure(|| {
        let mut state: Option<RnnState> = None;
        for &tok in &stream {
            let (_logits, next) = lm.step(&Tensor::new(&[tok], &Device::Cpu)?, state.as_ref())?;
            state = Some(next);
        }
        Ok(())
    })
}

/// The network of the training phases: the `LanguageModel`, or the same architecture built
/// here from an `Rnn` running the composed implementation (the model does not expose its
/// layer's implementation).
enum Net {
    Lm(LanguageModel),
    Composed {
        emb: Embedding,
        rnn: Rnn,
        out: Linear,
    },
}

impl Net {
    fn new(varmap: &VarMap, imp: Implementation) -> Result<Self> {
        if imp != Implementation::Composed {
            return Ok(Net::Lm(language_model(varmap)?));
        }
        let vb: VarBuilder = seeded_var_builder(varmap, 0, DType::F32, &Device::Cpu);
        let cfg = RnnConfig::new(Mode::Lstm, HIDDEN, HIDDEN).with_batch_first(true);
        Ok(Net::Composed {
            emb: candle_nn::embedding(VOCAB, HIDDEN, vb.pp("embedding"))?,
            rnn: Rnn::new(&cfg, vb.pp("rnn"))?.with_implementation(Implementation::Composed),
            out: candle_nn::linear(HIDDEN, VOCAB, vb.pp("decoder"))?,
        })
    }

    /// Mean next-token cross-entropy of a window and the final state.
    fn loss(
        &self,
        inputs: &Tensor,
        targets: &Tensor,
        state: Option<&RnnState>,
    ) -> Result<(Tensor, RnnState)> {
        match self {
            Net::Lm(lm) => {
                let (nll, s) = lm.loss(inputs, targets, state, None, true)?;
                Ok((nll.mean()?, s))
            }
            Net::Composed { emb, rnn, out } => {
                let (ys, s) = rnn.forward_t(&emb.forward(inputs)?, state, None, true)?;
                let loss = masked_cross_entropy(&out.forward(&ys)?, targets, None)?;
                Ok((loss, s))
            }
        }
    }
}

/// LM training over one long stream with truncated BPTT; records the resident set at the start
/// of every `train_step` (i.e. after the previous window's update).
struct StreamTask {
    net: Net,
    train: LmBatches,
    valid: LmBatches,
    rss_kb: Vec<u64>,
}

impl TrainTask for StreamTask {
    type Batch = usize;

    fn train_batches(&mut self, _epoch: u64, _seed: u64) -> rnn::train::Result<Vec<usize>> {
        Ok((0..self.train.len()).collect())
    }

    fn train_step(
        &mut self,
        k: &usize,
        carry: &mut Option<RnnState>,
    ) -> rnn::train::Result<StepLoss> {
        let rss = status_kb("VmRSS").map_err(|e| rnn::train::Error::Invalid(e.to_string()))?;
        self.rss_kb.push(rss);
        let w = self.train.window(*k, &Device::Cpu)?;
        let (loss, state) = self
            .net
            .loss(&w.inputs, &w.targets, carry.as_ref())
            .map_err(|e| rnn::train::Error::Invalid(e.to_string()))?;
        *carry = Some(state);
        Ok(StepLoss {
            loss,
            units: w.targets.elem_count() as u64,
        })
    }

    fn evaluate(&mut self) -> rnn::train::Result<Evaluation> {
        let (mut sum, mut n, mut state) = (0.0, 0.0, None::<RnnState>);
        for w in self.valid.iter(&Device::Cpu) {
            let w = w?;
            let (loss, s) = self
                .net
                .loss(&w.inputs, &w.targets, state.as_ref())
                .map_err(|e| rnn::train::Error::Invalid(e.to_string()))?;
            state = Some(s.detach());
            sum += f64::from(loss.to_scalar::<f32>()?) * w.len as f64;
            n += w.len as f64;
        }
        Ok(Evaluation::from_loss(sum / n))
    }
}

/// Trains one epoch over a `t`-token stream (batch 1) in windows of `window` tokens.
fn train_stream(imp: Implementation, t: usize, window: usize) -> Result<(Measure, Vec<u64>)> {
    let varmap = VarMap::new();
    let mut task = StreamTask {
        net: Net::new(&varmap, imp)?,
        train: LmBatches::new(&token_stream(t + 1, 3), 1, window)?,
        valid: LmBatches::new(&token_stream(1_001, 4), 1, WINDOW)?,
        rss_kb: Vec::with_capacity(t / window + 2),
    };
    let cfg = TrainerConfig {
        optimizer: OptimizerConfig::AdamW(AdamWConfig::with_lr(1e-3)),
        clip_grad_norm: Some(1.0),
        epochs: Some(1),
        progress: false,
        plot: false,
        save_best: false,
        ..Default::default()
    };
    let mut trainer = Trainer::new(cfg, varmap.clone())?;
    let m = measure(|| {
        let report = trainer.fit(&mut task)?;
        anyhow::ensure!(report.steps as usize == task.train.len(), "steps");
        Ok(())
    })?;
    Ok((m, task.rss_kb))
}

/// Truncated BPTT: prints the row and the resident set after windows 1, 10, last.
fn phase_tbptt(imp: Implementation, t: usize) -> Result<()> {
    let (m, rss) = train_stream(imp, t, WINDOW)?;
    let windows = rss.len();
    // rss[k] is read before window k + 1, i.e. after window k's update.
    let after = |k: usize| rss[k.min(windows - 1)];
    let last = *rss.last().context("no windows")?;
    let max = rss.iter().copied().max().unwrap_or(0);
    let note = format!(
        "{windows} windows of {WINDOW}; RSS after window 1 / 10 / last: {} / {} / {} MB (last - 10th: {} MB), max {} MB",
        mb(after(1)),
        mb(after(10)),
        mb(last),
        signed_mb(last as i64 - after(10) as i64),
        mb(max)
    );
    row(&format!("train TBPTT, LM LSTM {}", name(imp)), t, &m, &note);
    Ok(())
}

/// Full BPTT: one window over the whole `t`-token stream.
fn phase_full_bptt(imp: Implementation, t: usize) -> Result<()> {
    let (m, _) = train_stream(imp, t, t)?;
    row(
        &format!("train full BPTT, LM LSTM {}", name(imp)),
        t,
        &m,
        "one window of T tokens",
    );
    Ok(())
}

fn name(imp: Implementation) -> &'static str {
    match imp {
        Implementation::Composed => "composed",
        _ => "fused",
    }
}

fn grad_note(grad: Grad) -> &'static str {
    match grad {
        Grad::Detached => "Rnn::detached()",
        Grad::DetachState => "Var parameters, state.detach() per chunk",
        Grad::KeepGraph => "Var parameters, state carried as returned: graph kept",
    }
}

/// Runs one phase (in this process) from its arguments.
fn run_phase(args: &[String]) -> Result<()> {
    let arg = |i: usize| -> Result<&str> {
        args.get(i)
            .map(String::as_str)
            .with_context(|| format!("phase {args:?}: missing argument {i}"))
    };
    let num = |i: usize| -> Result<usize> { Ok(arg(i)?.parse()?) };
    match arg(0)? {
        "full" | "stream" => {
            let (mode, imp, grad, t) = (
                parse_mode(arg(1)?)?,
                parse_impl(arg(2)?)?,
                parse_grad(arg(3)?)?,
                num(4)?,
            );
            let m = if arg(0)? == "full" {
                phase_full(mode, imp, grad, t)?
            } else {
                phase_stream(mode, imp, grad, t)?
            };
            let what = if arg(0)? == "full" {
                "full output".to_string()
            } else {
                format!("streamed, chunks of {CHUNK}")
            };
            row(
                &format!("{} {} {what}", arg(1)?.to_uppercase(), arg(2)?),
                t,
                &m,
                grad_note(grad),
            );
        }
        "state-only" => {
            let (mode, imp, t) = (parse_mode(arg(1)?)?, parse_impl(arg(2)?)?, num(3)?);
            let m = phase_state_only(mode, imp, t)?;
            let note = format!(
                "output dropped, final state kept: RSS after - before = {} MB",
                signed_mb(m.end as i64 - m.base as i64)
            );
            row(
                &format!(
                    "{} {} full, keep state only",
                    arg(1)?.to_uppercase(),
                    arg(2)?
                ),
                t,
                &m,
                &note,
            );
        }
        "lm-score" => {
            let t = num(1)?;
            row(
                "LM stream_nll",
                t,
                &phase_lm_score(t)?,
                "batch 1, windows of 100",
            );
        }
        "lm-sample" => {
            let t = num(1)?;
            row("LM generate", t, &phase_lm_sample(t)?, "one step per token");
        }
        "lm-step" => {
            let (detached, t) = (arg(1)? == "detached", num(2)?);
            let note = if detached {
                "loop of lm.detached().step(..)"
            } else {
                "loop of lm.step(..) on Var parameters: graph kept"
            };
            row("LM step loop", t, &phase_lm_step_loop(t, detached)?, note);
        }
        "tbptt" => phase_tbptt(parse_impl(arg(1)?)?, num(2)?)?,
        "full-bptt" => phase_full_bptt(parse_impl(arg(1)?)?, num(2)?)?,
        other => bail!("unknown phase {other}"),
    }
    Ok(())
}

/// Every measurement of the table, as phase arguments.
fn plan() -> Vec<Vec<String>> {
    let mut plan: Vec<String> = Vec::new();
    for mode in ["lstm", "gru"] {
        for t in [10_000, 100_000] {
            plan.push(format!("full {mode} fused detached {t}"));
            plan.push(format!("stream {mode} fused detached {t}"));
        }
    }
    plan.push("state-only lstm fused 100000".into());
    plan.push("stream lstm fused detach-state 100000".into());
    for t in [10_000, 100_000] {
        plan.push(format!("stream lstm fused keep-graph {t}"));
    }
    for t in [10_000, 100_000] {
        plan.push(format!("full lstm composed detached {t}"));
        plan.push(format!("stream lstm composed detached {t}"));
    }
    plan.push("stream lstm composed keep-graph 10000".into());
    for t in [10_000, 100_000] {
        plan.push(format!("lm-score {t}"));
        plan.push(format!("lm-sample {t}"));
    }
    plan.push("lm-step detached 10000".into());
    plan.push("lm-step attached 10000".into());
    plan.push("tbptt fused 100000".into());
    plan.push("tbptt composed 20000".into());
    for t in [1_000, 4_000, 16_000] {
        plan.push(format!("full-bptt fused {t}"));
    }
    for t in [1_000, 4_000] {
        plan.push(format!("full-bptt composed {t}"));
    }
    plan.into_iter()
        .map(|p| p.split_whitespace().map(String::from).collect())
        .collect()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--phase") {
        return run_phase(&args[1..]);
    }
    status_kb("VmRSS")?;
    let exe = std::env::current_exe()?;
    let filter = args.first().cloned();
    println!("| what | T | base MB | peak MB | growth MB | time | note |");
    println!("|---|---|---|---|---|---|---|");
    for phase in plan() {
        if filter
            .as_ref()
            .is_some_and(|f| !phase.join(" ").contains(f))
        {
            continue;
        }
        let out = Command::new(&exe).arg("--phase").args(&phase).output()?;
        if !out.status.success() {
            bail!(
                "phase {phase:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(r) = line.strip_prefix("ROW ") {
                println!("{r}");
            }
        }
    }
    Ok(())
}

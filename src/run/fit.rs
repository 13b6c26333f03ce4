//! Checkpointed training: a trainer writing into the run directory, resumed from `--resume`
//! when given, and the one-line summary of the run.

use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_nn::VarMap;
use rnn_train::checkpoint;
use rnn_train::optim::LrScheduleConfig;
use rnn_train::trainer::{FitReport, TrainTask, Trainer, TrainerConfig, BEST_DIR, LATEST_DIR};

use super::checkpoint::resolve_checkpoint;
use super::context::RunContext;

/// Before `--resume DIR` or `--init-from DIR` (`flag`): repairs what a killed save left in
/// `DIR` (a checkpoint itself, or a run directory with `checkpoint/` and `best/`), see
/// [`checkpoint::recover`], and says so when a checkpoint that had been moved aside is put back.
fn recover_checkpoint(dir: &Path, flag: &str) -> Result<()> {
    let candidates = if dir.join(checkpoint::STATE_FILE).is_file()
        || dir
            .file_name()
            .is_some_and(|n| n == LATEST_DIR || n == "best")
    {
        vec![dir.to_path_buf()]
    } else {
        vec![dir.join(LATEST_DIR), dir.join("best")]
    };
    for candidate in candidates {
        if let Some(backup) =
            checkpoint::recover(&candidate).with_context(|| format!("{flag} {}", dir.display()))?
        {
            eprintln!(
                "note: {flag}: {} was missing (a run was killed while replacing it); restored it from {}",
                candidate.display(),
                backup.display()
            );
        }
    }
    Ok(())
}

/// What a task's training returns: the trainer's report plus task-specific final numbers
/// (e.g. test accuracy), and the headline for the summary line.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The trainer's report.
    pub report: FitReport,
    /// Extra results printed after the summary (e.g. `test accuracy 0.912`).
    pub extra: Vec<String>,
}

/// Builds a trainer for `varmap` writing into `ctx.out`, resumes from `--resume` if given
/// (refusing a checkpoint of another task), and trains `task`.
pub fn fit<T: TrainTask>(
    ctx: &RunContext,
    cfg: TrainerConfig,
    varmap: VarMap,
    task: &mut T,
) -> Result<FitReport> {
    let mut cfg = cfg;
    if let LrScheduleConfig::CosineRestarts {
        cycle_steps: cycle_epochs,
        cycle_mult,
        peak_decay,
        min_lr,
    } = &cfg.schedule
    {
        // `--cycle-epochs` counts epochs; the schedule counts optimiser steps.
        let per_epoch = task.train_batches(0, cfg.seed)?.len() as u64;
        cfg.schedule = LrScheduleConfig::CosineRestarts {
            cycle_steps: cycle_epochs
                .iter()
                .map(|e| e.saturating_mul(per_epoch).max(1))
                .collect(),
            cycle_mult: *cycle_mult,
            peak_decay: *peak_decay,
            min_lr: *min_lr,
        };
        cfg.validate()?;
    }
    if let LrScheduleConfig::CosineWarmup {
        warmup_steps,
        total_steps,
        min_lr,
    } = cfg.schedule
    {
        // The cosine runs over the whole budget: steps per epoch times epochs, or --max-steps.
        let per_epoch = task.train_batches(0, cfg.seed)?.len() as u64;
        let by_epochs = cfg.epochs.map(|e| e.saturating_mul(per_epoch));
        let total = match (by_epochs, cfg.max_steps) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => total_steps,
        };
        if warmup_steps > total {
            bail!("--warmup-steps {warmup_steps} is longer than the run ({total} steps)");
        }
        cfg.schedule = LrScheduleConfig::CosineWarmup {
            warmup_steps,
            total_steps: total.max(1),
            min_lr,
        };
        cfg.validate()?;
    }
    if let (Some(dir), Some(_)) = (&ctx.opts.init_from, &ctx.opts.resume) {
        ctx.say(&format!(
            "--init-from {} ignored: --resume continues a run, whose weights already started from it",
            dir.display()
        ));
    } else if let Some(dir) = &ctx.opts.init_from {
        let dir = rank0_checkpoint(ctx, dir, "--init-from", true)?;
        refuse_overwrite(&dir, &ctx.out)?;
        init_from(&dir, &varmap, task).with_context(|| format!("--init-from {}", dir.display()))?;
        ctx.say(&format!(
            "starting from the weights of {} (fresh optimiser and schedule)",
            dir.display()
        ));
    }
    // `Options::validate` refuses --chrono-init with --init-from.
    if let (Some(t_max), None) = (ctx.opts.chrono_init, &ctx.opts.resume) {
        let layers = rnn_core::init::chrono_init(&varmap, t_max, cfg.seed)
            .map_err(|e| anyhow::anyhow!("--chrono-init {t_max}: {e}"))?;
        ctx.say(&format!(
            "chrono initialisation (T_max {t_max}) of {}",
            layers.join(", ")
        ));
    }
    let mut trainer = Trainer::new(cfg, varmap)?.with_out_dir(&ctx.out)?;
    if let Some(group) = &ctx.group {
        trainer = trainer.with_collective(group.0.clone());
    }
    if let Some(dir) = &ctx.opts.resume {
        let dir = rank0_checkpoint(ctx, dir, "--resume", false)?;
        trainer.resume(&dir).with_context(|| {
            format!(
                "--resume {}: the checkpoint does not fit this model (same task, cell, sizes and data as when it was written?)",
                dir.display()
            )
        })?;
        ctx.say(&format!(
            "resuming {} from step {}",
            dir.display(),
            trainer.step()
        ));
    }
    let report = trainer.fit(task)?;
    if ctx.rank() != 0 {
        // What a task does after training (test scores, summaries, files) is rank 0's work.
        return Err(RankDone.into());
    }
    Ok(report)
}

/// What [`fit`] returns on a data-parallel rank other than 0 once training is over, so that the
/// task's code after training (test scores, files) runs on rank 0 only; `rnn train` counts it as
/// success.
#[derive(Debug, Clone, Copy)]
pub struct RankDone;

impl std::fmt::Display for RankDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("this data-parallel rank has finished training; rank 0 reports the results")
    }
}

impl std::error::Error for RankDone {}

/// The checkpoint named by `flag DIR` on every rank: rank 0 repairs, resolves and checks it
/// (`prefer_best`: a run directory's `best/` before its `checkpoint/`), then sends its files to
/// the other ranks, which need not see rank 0's disk (several hosts without a shared filesystem).
fn rank0_checkpoint(
    ctx: &RunContext,
    dir: &Path,
    flag: &str,
    prefer_best: bool,
) -> Result<std::path::PathBuf> {
    let resolved = if ctx.rank() == 0 {
        recover_checkpoint(dir, flag)?;
        let dir = resolve_checkpoint(dir, prefer_best).context(flag.to_string())?;
        check_saved_task(ctx, &dir, flag)?;
        Some(dir)
    } else {
        None
    };
    match (&ctx.group, resolved) {
        (Some(group), resolved) if group.0.world_size() > 1 => {
            share_checkpoint(&*group.0, resolved.as_deref(), &ctx.out.join("resume"))
        }
        (_, Some(dir)) => Ok(dir),
        (_, None) => bail!("{flag}: no rank 0 to read the checkpoint"),
    }
}

/// Refuses `--init-from DIR` when DIR lies inside the new run's output directory: the new run's
/// checkpoints would replace the weights it started from (a run directory's `best/` first).
fn refuse_overwrite(dir: &Path, out: &Path) -> Result<()> {
    let (Ok(dir), Ok(out)) = (dir.canonicalize(), out.canonicalize()) else {
        return Ok(());
    };
    if dir.starts_with(&out) {
        bail!(
            "--init-from {}: the checkpoint is inside --out {}, whose checkpoints the new run would write over; give the new run another --out",
            dir.display(),
            out.display()
        );
    }
    Ok(())
}

/// Copies the model weights of the checkpoint in `dir` into `varmap`, after checking that every
/// parameter is there with its shape and that the files the task writes beside the weights
/// (vocabulary, tokenizer) are byte for byte those of this run: the same shapes with another
/// vocabulary would silently mean other tokens. Nothing is copied when a check fails.
fn init_from<T: TrainTask>(dir: &Path, varmap: &VarMap, task: &T) -> Result<()> {
    let device = varmap
        .all_vars()
        .first()
        .map(|v| v.device().clone())
        .unwrap_or(candle_core::Device::Cpu);
    let loaded = checkpoint::load(dir, &device)?;
    loaded.validate(&checkpoint::varmap_expected(varmap)?)?;
    for (name, bytes) in task.checkpoint_files() {
        match loaded.read_file(&name)? {
            Some(saved) if saved == bytes => {}
            Some(_) => bail!(
                "{} differs from the one this run built from its data: the checkpoint was trained on other data or options (--data, --vocab-size, --level)",
                loaded.path(&name).display()
            ),
            None => bail!(
                "{} is missing: this task needs the file the checkpoint was trained with",
                loaded.path(&name).display()
            ),
        }
    }
    loaded.copy_into(varmap)?;
    Ok(())
}

/// Refuses a checkpoint written by another task.
fn check_saved_task(ctx: &RunContext, dir: &Path, flag: &str) -> Result<()> {
    let config_path = dir.join(checkpoint::CONFIG_FILE);
    let config: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&config_path)
            .with_context(|| format!("{flag}: cannot read {}", config_path.display()))?,
    )
    .with_context(|| format!("{flag}: {} is not valid JSON", config_path.display()))?;
    let saved_task = config
        .pointer("/model/task")
        .and_then(|t| t.as_str())
        .unwrap_or("?");
    if saved_task != ctx.task.as_str() {
        bail!(
            "{flag} {}: the checkpoint is from task `{saved_task}`, not `{}`",
            dir.display(),
            ctx.task.as_str()
        );
    }
    Ok(())
}

/// Rank 0's checkpoint `dir` on every rank: rank 0 broadcasts its files (a checkpoint is one
/// flat directory), the others write them into `private` and return that; rank 0 returns `dir`.
fn share_checkpoint(
    group: &dyn rnn_train::collective::Collective,
    dir: Option<&Path>,
    private: &Path,
) -> Result<std::path::PathBuf> {
    let mut packed = Vec::new();
    if let Some(dir) = dir {
        let mut names: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("--resume: cannot list {}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
            .map(|e| e.file_name())
            .collect();
        names.sort();
        for name in names {
            let bytes = std::fs::read(dir.join(&name))
                .with_context(|| format!("--resume: cannot read {}", dir.join(&name).display()))?;
            let name = name.to_string_lossy().into_owned();
            packed.extend_from_slice(&(name.len() as u64).to_le_bytes());
            packed.extend_from_slice(name.as_bytes());
            packed.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
            packed.extend_from_slice(&bytes);
        }
    }
    group.broadcast_bytes(&mut packed, 0)?;
    if let Some(dir) = dir {
        return Ok(dir.to_path_buf());
    }
    std::fs::create_dir_all(private)
        .with_context(|| format!("cannot create {}", private.display()))?;
    let mut rest: &[u8] = &packed;
    while !rest.is_empty() {
        let name = String::from_utf8_lossy(take_field(&mut rest)?).into_owned();
        let bytes = take_field(&mut rest)?;
        std::fs::write(private.join(&name), bytes)
            .with_context(|| format!("cannot write {}", private.join(&name).display()))?;
    }
    Ok(private.to_path_buf())
}

/// The next length-prefixed field of a packed checkpoint (see [`share_checkpoint`]).
fn take_field<'a>(rest: &mut &'a [u8]) -> Result<&'a [u8]> {
    let truncated = || anyhow::anyhow!("--resume: the checkpoint sent by rank 0 is truncated");
    let (len, tail) = rest.split_at_checked(8).ok_or_else(truncated)?;
    let n = u64::from_le_bytes(len.try_into().expect("8 bytes")) as usize;
    let (field, tail) = tail.split_at_checked(n).ok_or_else(truncated)?;
    *rest = tail;
    Ok(field)
}

/// Copies the weights of `OUT/best` (when it exists) into `varmap`, e.g. to score a test set
/// with the best weights after [`fit`]; returns the step they were saved at, `None` when there
/// is no best checkpoint (the weights stay the last ones).
pub fn load_best(ctx: &RunContext, varmap: &VarMap) -> Result<Option<u64>> {
    let best = ctx.out.join(BEST_DIR);
    if !best.join(checkpoint::STATE_FILE).is_file() {
        return Ok(None);
    }
    let loaded = checkpoint::load(&best, &ctx.device)?;
    loaded
        .copy_into(varmap)
        .with_context(|| format!("loading the best weights from {}", best.display()))?;
    Ok(Some(loaded.state.step))
}

/// Which weights [`load_best`] left in place, for result lines: `best checkpoint, step S` or
/// `last weights`.
pub fn weights_label(best_step: Option<u64>) -> String {
    match best_step {
        Some(step) => format!("best checkpoint, step {step}"),
        None => "last weights".to_string(),
    }
}

/// The final line of a training run.
pub fn summary_line(ctx: &RunContext, outcome: &TrainOutcome) -> String {
    let mut s = format!("{}: {}", ctx.task.as_str(), outcome.report.summary());
    for e in &outcome.extra {
        s.push_str("; ");
        s.push_str(e);
    }
    s.push_str(&format!("; run in {}", ctx.out.display()));
    s
}

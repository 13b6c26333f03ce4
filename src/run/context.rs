//! The run context of `rnn train`: merged options, device, dtype and output directory, and the
//! trainer configuration they give over a task's defaults.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use rnn_train::checkpoint;
use rnn_train::collective::Collective;
use rnn_train::optim::{AdamWConfig, LrScheduleConfig, OptimizerConfig, SgdConfig};
use rnn_train::trainer::{
    EarlyStopping, NonFinitePolicy, TrainerConfig, WeightAverage, BEST_DIR, LATEST_DIR,
};

use super::options::{parse_dtype, parse_optimizer_name, parse_schedule_name, Options};
use super::task_name::TaskName;

/// Everything a task's `train` needs besides its own options.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The task being trained.
    pub task: TaskName,
    /// Flags over the config file's values; tasks apply their defaults to what is `None`.
    pub opts: Options,
    /// The device chosen by `--device` (default auto).
    pub device: Device,
    /// The dtype chosen by `--dtype` (default f32).
    pub dtype: DType,
    /// The output directory (created).
    pub out: PathBuf,
    /// The run's seed (default 0).
    pub seed: u64,
    /// Print progress lines (off in tests).
    pub verbose: bool,
    /// The topmost directory that creating `out` made (`None` when `out` existed): a run that
    /// fails before its first checkpoint removes it ([`RunContext::remove_created_out`]).
    pub created_out: Option<PathBuf>,
    /// The data-parallel group this process trains in (`None`: alone), see
    /// [`RunContext::join_group`].
    pub group: Option<Group>,
}

/// A data-parallel group, as the run context holds it.
#[derive(Clone)]
pub struct Group(pub Arc<dyn Collective>);

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Group({} rank {} of {})",
            self.0.backend(),
            self.0.rank(),
            self.0.world_size()
        )
    }
}

impl RunContext {
    /// Builds the context for `task` from the merged options: validates them, selects the
    /// device and creates the output directory (an unwritable `--out` is an error naming it).
    pub fn new(task: TaskName, opts: Options) -> Result<Self> {
        opts.validate()?;
        let device_spec = opts.device.clone().unwrap_or_else(|| "auto".to_string());
        let device = rnn_core::device::select(&device_spec).context("--device")?;
        let dtype = parse_dtype(opts.dtype.as_deref().unwrap_or("f32"))?;
        let out = opts
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs").join(task.as_str()));
        let created_out = out
            .ancestors()
            .take_while(|a| !a.as_os_str().is_empty() && !a.exists())
            .last()
            .map(Path::to_path_buf);
        std::fs::create_dir_all(&out)
            .with_context(|| format!("--out {}: cannot create the directory", out.display()))?;
        let probe = out.join(".rnn-write-test");
        std::fs::write(&probe, b"")
            .with_context(|| format!("--out {}: the directory is not writable", out.display()))?;
        let _ = std::fs::remove_file(&probe);
        Ok(Self {
            task,
            seed: opts.seed.unwrap_or(0),
            opts,
            device,
            dtype,
            out,
            verbose: true,
            created_out,
            group: None,
        })
    }

    /// Makes this run one rank of a data-parallel group. Rank 0 keeps the output directory and
    /// the progress output; every other rank trains quietly and writes only into a private
    /// temporary directory ([`RunContext::leave_group`] removes it), so whatever a task writes
    /// beside the trainer (summaries, plots) comes from rank 0 alone.
    pub fn join_group(&mut self, collective: Arc<dyn Collective>) -> Result<()> {
        let rank = collective.rank();
        if rank != 0 {
            let private = std::env::temp_dir().join(format!(
                "rnn-{}-rank{rank}-{}",
                self.task.as_str(),
                std::process::id()
            ));
            std::fs::create_dir_all(&private)
                .with_context(|| format!("rank {rank}: cannot create {}", private.display()))?;
            self.out = private.clone();
            self.created_out = Some(private);
            self.verbose = false;
        }
        self.group = Some(Group(collective));
        Ok(())
    }

    /// This process's rank (0 when alone).
    pub fn rank(&self) -> usize {
        self.group.as_ref().map_or(0, |g| g.0.rank())
    }

    /// After a data-parallel run: removes the private directory of a rank other than 0.
    pub fn leave_group(&self) {
        if self.rank() != 0 {
            let _ = std::fs::remove_dir_all(&self.out);
        }
    }

    /// After a failed run: removes the output directory this run created, unless a checkpoint
    /// was written into it (that work is kept). Returns the removed directory.
    pub fn remove_created_out(&self) -> Option<PathBuf> {
        let created = self.created_out.as_ref()?;
        let saved = [LATEST_DIR, BEST_DIR]
            .iter()
            .any(|d| self.out.join(d).join(checkpoint::STATE_FILE).exists());
        if saved {
            return None;
        }
        std::fs::remove_dir_all(created).ok()?;
        Some(created.clone())
    }

    /// A seeded `VarBuilder` over `varmap` on the run's device and dtype.
    pub fn var_builder(&self, varmap: &VarMap) -> VarBuilder<'static> {
        rnn_core::init::seeded_var_builder(varmap, self.seed, self.dtype, &self.device)
    }

    /// `--cell`, or the task's default.
    pub fn cell(&self, default: rnn_core::Mode) -> Result<rnn_core::Mode> {
        match &self.opts.cell {
            Some(c) => c.parse().map_err(|e| anyhow::anyhow!("--cell: {e}")),
            None => Ok(default),
        }
    }

    /// Prints a line unless quiet.
    pub fn say(&self, line: &str) {
        if self.verbose {
            eprintln!("{line}");
        }
    }
}

/// A task's training defaults, overridden by the options.
#[derive(Debug, Clone)]
pub struct TrainDefaults {
    /// Epochs.
    pub epochs: u64,
    /// Learning rate.
    pub lr: f64,
    /// Gradient-norm clipping (None = off).
    pub clip: Option<f64>,
    /// Evaluate every N steps (None = at epoch ends only).
    pub eval_every: Option<u64>,
    /// Optimiser: `adamw` or `sgd`.
    pub optimizer: &'static str,
}

impl Default for TrainDefaults {
    fn default() -> Self {
        Self {
            epochs: 10,
            lr: 1e-3,
            clip: Some(5.0),
            eval_every: None,
            optimizer: "adamw",
        }
    }
}

/// The trainer configuration from the options over the task's defaults.
pub fn trainer_config(ctx: &RunContext, d: &TrainDefaults) -> Result<TrainerConfig> {
    let o = &ctx.opts;
    let lr = o.lr.unwrap_or(d.lr);
    let optimizer = match parse_optimizer_name(o.optimizer.as_deref().unwrap_or(d.optimizer))? {
        "adamw" => OptimizerConfig::AdamW(AdamWConfig::with_lr(lr)),
        _ => OptimizerConfig::Sgd(SgdConfig::with_lr(lr)),
    };
    let clip = match o.clip {
        Some(0.0) => None,
        Some(c) => Some(c),
        None => d.clip,
    };
    let cfg = TrainerConfig {
        optimizer,
        clip_grad_norm: clip,
        epochs: if o.max_steps.is_some() && o.epochs.is_none() {
            None
        } else {
            Some(o.epochs.unwrap_or(d.epochs))
        },
        max_steps: o.max_steps,
        eval_every: o.eval_every.or(d.eval_every),
        checkpoint_every: o.checkpoint_every,
        average: o.average_from_epoch.map(|start_epoch| WeightAverage {
            start_epoch,
            ema_decay: o.average_ema,
        }),
        early_stopping: o.patience.map(|patience| EarlyStopping {
            patience,
            min_delta: 0.0,
        }),
        seed: ctx.seed,
        on_non_finite: if o.skip_non_finite == Some(true) {
            NonFinitePolicy::Skip
        } else {
            NonFinitePolicy::Stop
        },
        progress: ctx.verbose,
        host_sync_every: o.host_sync_every,
        grad_accum: o.grad_accum.unwrap_or(1),
        ..Default::default()
    };
    if let (Some(a), Some(epochs), None) = (cfg.average, cfg.epochs, cfg.max_steps) {
        if a.start_epoch >= epochs {
            bail!(
                "--average-from-epoch {} is not before the last epoch (--epochs {epochs}): nothing would be averaged",
                a.start_epoch
            );
        }
    }
    let mut cfg = cfg;
    if let Some(name) = &o.schedule {
        cfg.schedule = schedule_from_options(o, name)?;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The schedule `--schedule NAME` asks for, with `--lr-decay`, `--decay-every`, `--milestones`,
/// `--warmup-steps`, `--min-lr`, `--cycle-epochs`, `--cycle-mult` and `--peak-decay`. The cosine
/// schedule's length is a placeholder here, and the cosine-restarts cycles are in epochs;
/// [`fit`](super::fit) turns both into optimiser steps.
pub fn schedule_from_options(o: &Options, name: &str) -> Result<LrScheduleConfig> {
    let gamma = o.lr_decay.unwrap_or(0.5);
    Ok(match parse_schedule_name(name)? {
        "constant" => LrScheduleConfig::Constant,
        "step" => LrScheduleConfig::StepDecay {
            step_size: o.decay_every.unwrap_or(1),
            gamma,
        },
        "multistep" => {
            let Some(milestones) = o.milestones.clone() else {
                bail!("--schedule multistep needs --milestones (epochs, e.g. 4,5,6)");
            };
            LrScheduleConfig::MultiStep { milestones, gamma }
        }
        "plateau" => {
            if gamma >= 1.0 {
                bail!("--lr-decay must be below 1 for the plateau schedule, got {gamma}");
            }
            LrScheduleConfig::PlateauDecay {
                factor: gamma,
                patience: 0,
                threshold: 0.0,
                min_lr: o.min_lr.unwrap_or(0.0),
            }
        }
        "cosine-restarts" => {
            let Some(cycles) = o.cycle_epochs.clone() else {
                bail!("--schedule cosine-restarts needs --cycle-epochs (epochs per cycle, e.g. 14,12)");
            };
            LrScheduleConfig::CosineRestarts {
                cycle_steps: cycles,
                cycle_mult: o.cycle_mult.unwrap_or(1),
                peak_decay: o.peak_decay.unwrap_or(1.0),
                min_lr: o.min_lr.unwrap_or(0.0),
            }
        }
        _ => {
            let warmup = o.warmup_steps.unwrap_or(0);
            LrScheduleConfig::CosineWarmup {
                warmup_steps: warmup,
                total_steps: warmup.max(1),
                min_lr: o.min_lr.unwrap_or(0.0),
            }
        }
    })
}

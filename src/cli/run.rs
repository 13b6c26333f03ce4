//! What every task's training and evaluation share: the run context (merged options, device,
//! dtype, output directory), the trainer configuration from the options, resuming, checkpoint
//! lookup, and the one-line summary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use rnn_train::checkpoint::{self, LoadedCheckpoint};
use rnn_train::optim::{AdamWConfig, LrScheduleConfig, OptimizerConfig, SgdConfig};
use rnn_train::trainer::{
    EarlyStopping, FitReport, NonFinitePolicy, TrainTask, Trainer, TrainerConfig, LATEST_DIR,
};

use super::options::Options;
use crate::tasks::TaskName;

/// Parses `--dtype`.
pub fn parse_dtype(s: &str) -> Result<DType> {
    match s.trim().to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "f64" | "float64" => Ok(DType::F64),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" | "half" => Ok(DType::F16),
        other => bail!("--dtype must be f32, f64, bf16 or f16, got '{other}'"),
    }
}

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
        })
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
    let optimizer = match o.optimizer.as_deref().unwrap_or(d.optimizer) {
        "adamw" | "adam" => OptimizerConfig::AdamW(AdamWConfig::with_lr(lr)),
        "sgd" => OptimizerConfig::Sgd(SgdConfig::with_lr(lr)),
        other => bail!("--optimizer must be adamw or sgd, got '{other}'"),
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
        ..Default::default()
    };
    let mut cfg = cfg;
    if let Some(name) = &o.schedule {
        cfg.schedule = schedule_from_options(o, name)?;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The schedule `--schedule NAME` asks for, with `--lr-decay`, `--decay-every`, `--milestones`,
/// `--warmup-steps` and `--min-lr`. The cosine schedule's length is a placeholder here; [`fit`]
/// sets it to the run's step budget.
pub fn schedule_from_options(o: &Options, name: &str) -> Result<LrScheduleConfig> {
    let gamma = o.lr_decay.unwrap_or(0.5);
    Ok(match crate::cli::options::parse_schedule_name(name)? {
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

/// The checkpoint directory inside `dir`: `dir` itself when it holds `state.json`, else
/// `dir/best` (when `prefer_best`) or `dir/checkpoint`.
pub fn resolve_checkpoint(dir: &Path, prefer_best: bool) -> Result<PathBuf> {
    if dir.join(checkpoint::STATE_FILE).is_file() {
        return Ok(dir.to_path_buf());
    }
    let order = if prefer_best {
        ["best", LATEST_DIR]
    } else {
        [LATEST_DIR, "best"]
    };
    for sub in order {
        let d = dir.join(sub);
        if d.join(checkpoint::STATE_FILE).is_file() {
            return Ok(d);
        }
    }
    if !dir.exists() {
        bail!("checkpoint {}: no such directory", dir.display());
    }
    bail!(
        "{}: not a checkpoint (no state.json in it, nor in its checkpoint/ or best/ subdirectory)",
        dir.display()
    )
}

/// Before `--resume DIR`: repairs what a killed save left in `DIR` (a checkpoint itself, or a
/// run directory with `checkpoint/` and `best/`), see [`checkpoint::recover`], and says so when
/// a checkpoint that had been moved aside is put back.
fn recover_for_resume(dir: &Path) -> Result<()> {
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
        if let Some(backup) = checkpoint::recover(&candidate)
            .with_context(|| format!("--resume {}", dir.display()))?
        {
            eprintln!(
                "note: --resume: {} was missing (a run was killed while replacing it); restored it from {}",
                candidate.display(),
                backup.display()
            );
        }
    }
    Ok(())
}

/// A checkpoint loaded for `eval`, `sample` or `predict`, with the task that wrote it.
pub struct CheckpointRun {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// Its contents.
    pub loaded: LoadedCheckpoint,
    /// The task recorded in `config.json`.
    pub task: TaskName,
    /// The `model` entry of `config.json` (what the task's `checkpoint_config` wrote).
    pub model: serde_json::Value,
    /// The device to run on.
    pub device: Device,
}

impl CheckpointRun {
    /// Loads the checkpoint under `dir` (see [`resolve_checkpoint`]) onto `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let dir = resolve_checkpoint(dir, true)?;
        let loaded = checkpoint::load(&dir, device)?;
        let model = loaded.config.get("model").cloned().unwrap_or_default();
        let task_name = model
            .get("task")
            .and_then(|t| t.as_str())
            .with_context(|| {
                format!(
                    "{}: no model.task entry; it was not written by `rnn train`",
                    dir.join(checkpoint::CONFIG_FILE).display()
                )
            })?;
        let task: TaskName = task_name.parse().with_context(|| {
            format!(
                "{}: model.task",
                dir.join(checkpoint::CONFIG_FILE).display()
            )
        })?;
        Ok(Self {
            dir,
            loaded,
            task,
            model,
            device: device.clone(),
        })
    }

    /// Deserialises `model[key]` (e.g. the model's config).
    pub fn model_entry<T: serde::de::DeserializeOwned>(&self, key: &str) -> Result<T> {
        let v = self.model.get(key).cloned().with_context(|| {
            format!(
                "{}: no model.{key} entry",
                self.dir.join(checkpoint::CONFIG_FILE).display()
            )
        })?;
        serde_json::from_value(v).with_context(|| {
            format!(
                "{}: model.{key} is malformed",
                self.dir.join(checkpoint::CONFIG_FILE).display()
            )
        })
    }

    /// The dtype of the saved parameters: the one most of them have (ties go to the dtype of
    /// the first parameter by name), so that the model is rebuilt the same way on every run and
    /// a parameter saved in another dtype is reported as the odd one out.
    pub fn dtype(&self) -> DType {
        let mut names: Vec<&String> = self.loaded.params.keys().collect();
        names.sort();
        // (dtype, count) in order of first appearance by name.
        let mut counts: Vec<(DType, usize)> = Vec::new();
        for name in names {
            let dtype = self.loaded.params[name].dtype();
            match counts.iter_mut().find(|(d, _)| *d == dtype) {
                Some((_, n)) => *n += 1,
                None => counts.push((dtype, 1)),
            }
        }
        // `max_by_key` keeps the last maximum: reverse so that the first one wins a tie.
        counts
            .into_iter()
            .rev()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d)
            .unwrap_or(DType::F32)
    }

    /// A VarBuilder for rebuilding the model, and after the model is built, call
    /// [`CheckpointRun::fill`] to copy the saved parameters in (validated by name, shape, dtype).
    pub fn var_builder(&self, varmap: &VarMap) -> VarBuilder<'static> {
        rnn_core::init::seeded_var_builder(varmap, 0, self.dtype(), &self.device)
    }

    /// Copies the saved parameters into `varmap` after checking names, shapes and dtypes.
    pub fn fill(&self, varmap: &VarMap) -> Result<()> {
        self.loaded
            .validate(&checkpoint::varmap_expected(varmap)?)
            .with_context(|| {
                format!(
                    "checkpoint {} does not match the model it describes",
                    self.dir.display()
                )
            })?;
        self.loaded.copy_into(varmap)?;
        Ok(())
    }

    /// The vocabulary saved as the extra file `name` (e.g. `vocab.json`); errors name the file.
    pub fn vocab(&self, name: &str) -> Result<rnn_train::data::Vocab> {
        let path = self.dir.join(name);
        let text = String::from_utf8(self.file(name)?)
            .with_context(|| format!("{}: not UTF-8", path.display()))?;
        rnn_train::data::Vocab::from_json(&text).with_context(|| path.display().to_string())
    }

    /// The bytes of an extra file (vocab.json, tokenizer.json), or an error naming it.
    pub fn file(&self, name: &str) -> Result<Vec<u8>> {
        self.loaded.read_file(name)?.with_context(|| {
            format!(
                "{}: missing from the checkpoint",
                self.dir.join(name).display()
            )
        })
    }
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
    if let (Some(t_max), None) = (ctx.opts.chrono_init, &ctx.opts.resume) {
        let layers = rnn_core::init::chrono_init(&varmap, t_max, cfg.seed)
            .map_err(|e| anyhow::anyhow!("--chrono-init {t_max}: {e}"))?;
        ctx.say(&format!(
            "chrono initialisation (T_max {t_max}) of {}",
            layers.join(", ")
        ));
    }
    let mut trainer = Trainer::new(cfg, varmap)?.with_out_dir(&ctx.out)?;
    if let Some(dir) = &ctx.opts.resume {
        recover_for_resume(dir)?;
        let dir = resolve_checkpoint(dir, false).context("--resume")?;
        let config_path = dir.join(checkpoint::CONFIG_FILE);
        let config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(&config_path)
                .with_context(|| format!("--resume: cannot read {}", config_path.display()))?,
        )
        .with_context(|| format!("--resume: {} is not valid JSON", config_path.display()))?;
        let saved_task = config
            .pointer("/model/task")
            .and_then(|t| t.as_str())
            .unwrap_or("?");
        if saved_task != ctx.task.as_str() {
            bail!(
                "--resume {}: the checkpoint is from task `{saved_task}`, not `{}`",
                dir.display(),
                ctx.task.as_str()
            );
        }
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
    Ok(trainer.fit(task)?)
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

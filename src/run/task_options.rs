//! Which options each task reads, and the defaults it fills in. `rnn train TASK` refuses an
//! option that TASK does not read (no option is silently ignored), and `rnn train TASK --help`
//! lists TASK's own options with its defaults.

use std::fmt::Display;

use anyhow::{bail, Result};

use super::options::Options;
use super::task_name::TaskName;

/// Options every task reads: the recurrent core, the training loop and the run.
pub const COMMON: [&str; 35] = [
    "cell",
    "hidden",
    "layers",
    "dropout",
    "epochs",
    "max-steps",
    "batch-size",
    "lr",
    "optimizer",
    "clip",
    "schedule",
    "lr-decay",
    "decay-every",
    "milestones",
    "warmup-steps",
    "min-lr",
    "cycle-epochs",
    "cycle-mult",
    "peak-decay",
    "host-sync-every",
    "grad-accum",
    "dp-threads",
    "eval-every",
    "checkpoint-every",
    "average-from-epoch",
    "average-ema",
    "patience",
    "skip-non-finite",
    "seed",
    "device",
    "dtype",
    "out",
    "resume",
    "init-from",
    "chrono-init",
];

/// The options of one task: those it reads besides [`COMMON`], the defaults it fills in
/// (shown by `--help`), and options it refuses with a reason of its own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskOptions {
    /// `(key, default)` of every option the task reads besides [`COMMON`] (default `None`: off,
    /// required, or derived from the data), then of the common ones it sets a default for.
    pub options: Vec<(&'static str, Option<String>)>,
    /// `(key, reason)` of options the task refuses with a message of its own.
    pub refused: Vec<(&'static str, String)>,
}

impl TaskOptions {
    /// No option besides the common ones.
    pub fn new() -> Self {
        Self::default()
    }

    /// The task reads `key` (a long flag without `--`), default `default`.
    pub fn with(mut self, key: &'static str, default: impl Display) -> Self {
        self.options.push((key, Some(default.to_string())));
        self
    }

    /// The task reads `key`, which has no default (off, required, or derived from the data).
    pub fn read(mut self, key: &'static str) -> Self {
        self.options.push((key, None));
        self
    }

    /// The training defaults `t` (epochs, learning rate, optimiser, clipping, evaluation period).
    pub fn training(self, t: &super::context::TrainDefaults) -> Self {
        let s = self
            .with("epochs", t.epochs)
            .with("lr", t.lr)
            .with("optimizer", t.optimizer)
            .with("clip", t.clip.map_or("off".to_string(), |c| c.to_string()));
        match t.eval_every {
            Some(n) => s.with("eval-every", n),
            None => s,
        }
    }

    /// The task refuses `key` with `reason` (the error is `--key: reason`).
    pub fn refuse(mut self, key: &'static str, reason: impl Into<String>) -> Self {
        self.refused.push((key, reason.into()));
        self
    }

    /// Whether the task reads `key`.
    pub fn reads(&self, key: &str) -> bool {
        COMMON.contains(&key) || self.options.iter().any(|(k, _)| *k == key)
    }

    /// The default the task fills in for `key`, if it has one.
    pub fn default_of(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, d)| d.as_deref())
    }

    /// The task's own options (not in [`COMMON`]), as `--flag`s.
    pub fn own_flags(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|(k, _)| !COMMON.contains(k))
            .map(|(k, _)| format!("--{k}"))
            .collect()
    }

    /// Refuses every option set in `opts` (by flag or config file) that `task` does not read,
    /// and data paths that do not exist (before training, so that a mistyped `--test` does not
    /// cost a whole run).
    pub fn check(&self, task: TaskName, opts: &Options) -> Result<()> {
        for key in set_keys(opts) {
            if let Some((_, reason)) = self.refused.iter().find(|(k, _)| *k == key) {
                bail!("--{key}: {reason}");
            }
            if !self.reads(&key) {
                let own = self.own_flags();
                bail!(
                    "--{key} does not apply to `rnn train {t}`, which reads {} besides the training options (`rnn train {t} --help` lists them)",
                    if own.is_empty() { "nothing".to_string() } else { own.join(" ") },
                    t = task.as_str()
                );
            }
        }
        for (flag, path) in [
            ("--data", &opts.data),
            ("--valid", &opts.valid),
            ("--test", &opts.test),
            ("--labels", &opts.labels),
        ] {
            if let Some(p) = path {
                if !p.exists() {
                    bail!("{flag} {}: no such file", p.display());
                }
            }
        }
        Ok(())
    }
}

/// The keys (long flag names) of the options set in `opts`, in declaration order.
pub fn set_keys(opts: &Options) -> Vec<String> {
    match serde_json::to_value(opts) {
        Ok(serde_json::Value::Object(map)) => map
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, _)| k)
            .collect(),
        _ => Vec::new(),
    }
}

/// Every option key of `rnn train` (the long flags of [`Options`]).
pub fn all_keys() -> Vec<String> {
    match serde_json::to_value(Options::default()) {
        Ok(serde_json::Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
        _ => Vec::new(),
    }
}

/// The help of `rnn train TASK`: `cmd` (the full `rnn train` command) cut down to the options
/// TASK reads, each showing TASK's default.
pub fn task_help(cmd: clap::Command, task: TaskName, options: &TaskOptions) -> String {
    let mut out = clap::Command::new(format!("rnn train {}", task.as_str()))
        .about(task.describe())
        .disable_help_flag(true)
        .disable_version_flag(true);
    for arg in cmd.get_arguments() {
        let Some(long) = arg.get_long() else {
            continue;
        };
        if long != "config" && !options.reads(long) {
            continue;
        }
        let mut arg = arg.clone();
        if let Some(d) = options.default_of(long) {
            arg = arg.default_value(d.to_string());
        }
        out = out.arg(arg);
    }
    out.render_help().to_string()
}

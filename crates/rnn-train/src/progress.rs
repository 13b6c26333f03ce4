//! Progress reporting: a progress bar on a terminal, nothing when output is redirected (CI logs
//! stay readable), and a JSON-lines log of every evaluation.

use crate::{Error, Result};
#[cfg(feature = "progress")]
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
#[cfg(feature = "progress")]
use std::io::IsTerminal;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A progress bar over `total` steps showing the loss and the throughput, drawn on stderr only
/// when stderr is a terminal. Without the `progress` feature (no `indicatif`) nothing is drawn
/// and [`Progress::println`] writes plain lines to stderr.
pub struct Progress {
    #[cfg(feature = "progress")]
    bar: ProgressBar,
    #[cfg(feature = "progress")]
    unit: String,
    #[cfg(feature = "progress")]
    units: std::sync::atomic::AtomicU64,
    #[cfg(feature = "progress")]
    start: std::time::Instant,
}

#[cfg(feature = "progress")]
impl Progress {
    /// A bar for `total` steps; `unit` names what the throughput counts (`tokens`, `samples`).
    pub fn new(total: u64, unit: &str) -> Self {
        let target = if std::io::stderr().is_terminal() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(total), target);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
        {
            bar.set_style(style);
        }
        Self {
            bar,
            unit: unit.to_string(),
            units: std::sync::atomic::AtomicU64::new(0),
            start: std::time::Instant::now(),
        }
    }

    /// Whether the bar is drawn (stderr is a terminal).
    pub fn is_visible(&self) -> bool {
        !self.bar.is_hidden()
    }

    /// Advances one step, with the step's loss and how many units (tokens, samples) it processed.
    pub fn step(&self, loss: f64, units: u64) {
        let total = self
            .units
            .fetch_add(units, std::sync::atomic::Ordering::Relaxed)
            + units;
        let rate = total as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        self.bar
            .set_message(format!("loss {loss:.4}  {rate:.0} {}/s", self.unit));
        self.bar.inc(1);
    }

    /// Prints a line above the bar (or plainly when the bar is hidden).
    pub fn println(&self, line: &str) {
        if self.bar.is_hidden() {
            eprintln!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// Moves the bar to `pos` steps (when resuming a run).
    pub fn set_position(&self, pos: u64) {
        self.bar.set_position(pos);
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(not(feature = "progress"))]
impl Progress {
    /// No bar (built without the `progress` feature).
    pub fn new(_total: u64, _unit: &str) -> Self {
        Self {}
    }

    /// Always false without the `progress` feature.
    pub fn is_visible(&self) -> bool {
        false
    }

    /// Nothing to advance without the `progress` feature.
    pub fn step(&self, _loss: f64, _units: u64) {}

    /// Writes the line to stderr.
    pub fn println(&self, line: &str) {
        eprintln!("{line}");
    }

    /// Nothing to move without the `progress` feature.
    pub fn set_position(&self, _pos: u64) {}

    /// Nothing to remove without the `progress` feature.
    pub fn finish(&self) {}
}

/// Appends one JSON object per line to a file, flushed after every record so a killed run keeps
/// every record written before it.
pub struct JsonlLog {
    file: std::fs::File,
    path: PathBuf,
}

impl JsonlLog {
    /// Opens `path` for appending (`append = true`, to continue a resumed run) or truncates it.
    pub fn open(path: &Path, append: bool) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
        })
    }

    /// Writes `record` as one line.
    pub fn write<T: Serialize>(&mut self, record: &T) -> Result<()> {
        let line = serde_json::to_string(record)
            .map_err(|e| Error::Invalid(format!("log record: {e}")))?;
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        writeln!(self.file, "{line}").map_err(io)?;
        self.file.flush().map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_appends_and_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("metrics.jsonl");
        let mut log = JsonlLog::open(&p, false).unwrap();
        log.write(&serde_json::json!({"step": 1, "loss": 2.5}))
            .unwrap();
        drop(log);
        let mut log = JsonlLog::open(&p, true).unwrap();
        log.write(&serde_json::json!({"step": 2})).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text, "{\"loss\":2.5,\"step\":1}\n{\"step\":2}\n");
        JsonlLog::open(&p, false).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "");
        assert!(JsonlLog::open(Path::new("/nonexistent/dir/m.jsonl"), false).is_err());
    }

    #[test]
    fn progress_is_hidden_when_not_a_terminal() {
        // Test harness output is captured, so stderr is not a terminal here (as in CI logs).
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let p = Progress::new(10, "tokens");
            assert!(!p.is_visible());
            p.step(1.0, 5);
            p.finish();
        }
    }
}

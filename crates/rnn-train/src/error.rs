//! The crate's error type: data errors carry the file, the line and what was wrong.

use std::path::PathBuf;

/// Errors of data loading, metrics and training.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read (missing, unreadable).
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file's content is wrong at a given line (1-based).
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        message: String,
    },
    /// A file as a whole is unusable (empty, not UTF-8 at an unknown place, no usable rows).
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        message: String,
    },
    /// An argument or option is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// Training produced a NaN or infinite loss or gradient; nothing from that step was applied
    /// or saved.
    #[error("step {step}: {what} is not finite{}; training stopped, the last checkpoint (if any) is untouched. Lower the learning rate (`--lr`), clip gradients (`--clip`), or pass `--skip-non-finite` (`TrainerConfig::on_non_finite` in the library) to skip such steps", .value.map(|v| format!(" ({v})")).unwrap_or_default())]
    NonFinite {
        /// The 1-based global step at which it happened.
        step: u64,
        /// What was not finite (`loss`, `gradient of <param>`).
        what: String,
        /// The offending value (NaN or ±inf), when known.
        value: Option<f64>,
    },
    /// A collective operation of data-parallel training failed (a rank left the group, the
    /// ranks disagree on the data, the transport failed).
    #[error("data-parallel: {0}")]
    Collective(String),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A parse error at `line` (1-based) of `path`.
    pub fn parse(path: impl Into<PathBuf>, line: usize, message: impl Into<String>) -> Self {
        Error::Parse {
            path: path.into(),
            line,
            message: message.into(),
        }
    }

    /// An error about the file `path` as a whole.
    pub fn file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_stop_names_the_flag_that_skips() {
        let e = Error::NonFinite {
            step: 7,
            what: "loss".into(),
            value: Some(f64::NAN),
        }
        .to_string();
        assert!(
            e.starts_with("step 7: loss is not finite (NaN); training stopped")
                && e.contains("--skip-non-finite"),
            "{e}"
        );
    }
}

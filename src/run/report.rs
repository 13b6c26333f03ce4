//! What `rnn eval`, `rnn predict` and `rnn sample` answer, as plain data: the lines the command
//! prints, and the same results as numbers and structured values for `--json` (the documents
//! are shaped in `crate::cli::json`; docs/CLI_JSON.md gives the schema). The counterpart of the
//! requests in `request`.
//!
//! Each task builds its lines and its values from the same numbers in one place, so that the
//! text output stays what it was and the JSON carries the unrounded values behind it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};
use serde_json::Value;

/// Which rows an evaluation scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// The run's test part, which neither training nor model selection saw (for generated
    /// tasks: fresh sequences from a seed neither used).
    Test,
    /// The run's validation part (checkpoints that record no test part).
    Validation,
    /// Every example of the `--data` file given to `rnn eval`.
    Data,
}

/// The result of `rnn eval`: the line it prints and the numbers behind it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    /// The file the scored rows came from; `None` when they were generated (or, for the
    /// language models, the built-in text).
    #[serde(serialize_with = "lossy_path")]
    pub data: Option<PathBuf>,
    /// Which part of the data was scored.
    pub split: Split,
    /// Every metric of the line, unrounded, by snake_case name (the names of `metrics.jsonl`
    /// where the task logs the metric there); `loss` is the training loss's quantity.
    pub metrics: BTreeMap<String, f64>,
    /// How many `unit` were scored: the count the line prints (the denominator of the
    /// headline metric; copy's per-symbol and per-step metrics count within these sequences).
    pub count: u64,
    /// What `count` counts, plural: `examples`, `tokens`, `chars`, `sequences`, `pairs`,
    /// `points`, `images`, `days`.
    pub unit: String,
    /// The line `rnn eval` prints without `--json`.
    pub summary: String,
}

impl EvalReport {
    /// A report of `count` `unit` of `split` (from `data`) with no metric yet, printed as
    /// `summary`; add the metrics with [`EvalReport::metric`].
    pub fn new(summary: String, split: Split, data: Option<&Path>, count: u64, unit: &str) -> Self {
        Self {
            data: data.map(Path::to_path_buf),
            split,
            metrics: BTreeMap::new(),
            count,
            unit: unit.to_string(),
            summary,
        }
    }

    /// Adds (or replaces) metric `name`.
    pub fn metric(mut self, name: &str, value: f64) -> Self {
        self.metrics.insert(name.to_string(), value);
        self
    }
}

/// The summary line, as `rnn eval` prints it.
impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary)
    }
}

/// One input of `rnn predict` and what the checkpoint made of it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The input: the text of the line (or, for a task whose inputs are not lines, what
    /// names it: the CSV file of forecast, the index of the image of digits).
    pub input: Value,
    /// The task's answer, structured (labels, tags, numbers); see docs/CLI_JSON.md.
    pub output: Value,
}

/// The result of `rnn predict`: the lines it prints and one [`Prediction`] per input.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Predictions {
    /// The lines printed without `--json` (one per input for most tasks).
    #[serde(skip)]
    pub lines: Vec<String>,
    /// Every input with its output, in input order.
    pub predictions: Vec<Prediction>,
}

impl Predictions {
    /// Adds the answer to one input: its printed `line` and its structured `output`.
    pub fn push(&mut self, line: String, input: impl Into<Value>, output: Value) {
        self.lines.push(line);
        self.predictions.push(Prediction {
            input: input.into(),
            output,
        });
    }
}

/// The result of `rnn sample`: the lines it prints and the samples themselves.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct Samples {
    /// The lines printed without `--json` (headers and tables included).
    #[serde(skip)]
    pub lines: Vec<String>,
    /// One value per sample, in order: the text for the language models, a structure for
    /// routine; see docs/CLI_JSON.md.
    pub samples: Vec<Value>,
}

/// A path as a JSON string (lossily, should it not be UTF-8), or null.
fn lossy_path<S: Serializer>(path: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(p) => s.serialize_str(&p.to_string_lossy()),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_eval_report_serialises_its_fields_and_prints_its_summary() {
        let r = EvalReport::new(
            "accuracy 0.5000 on 2 examples of a.txt".into(),
            Split::Data,
            Some(Path::new("a.txt")),
            2,
            "examples",
        )
        .metric("accuracy", 0.5)
        .metric("loss", f64::NAN);
        assert_eq!(r.to_string(), "accuracy 0.5000 on 2 examples of a.txt");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["data"], "a.txt");
        assert_eq!(v["split"], "data");
        assert_eq!(v["metrics"]["accuracy"], 0.5);
        // serde_json writes a non-finite number as null.
        assert!(v["metrics"]["loss"].is_null());
        assert_eq!(v["count"], 2);
        assert_eq!(v["unit"], "examples");
        let none = EvalReport::new(String::new(), Split::Test, None, 0, "sequences");
        assert!(serde_json::to_value(&none).unwrap()["data"].is_null());
    }

    #[test]
    fn predictions_and_samples_leave_their_lines_out_of_the_json() {
        let mut p = Predictions::default();
        p.push("pos\tP(pos)=0.9".into(), "a fine film", "pos".into());
        assert_eq!(p.lines, ["pos\tP(pos)=0.9"]);
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"predictions":[{"input":"a fine film","output":"pos"}]}"#
        );
        let s = Samples {
            lines: vec!["--- sample 1 ---".into(), "abc".into()],
            samples: vec!["abc".into()],
        };
        assert_eq!(serde_json::to_string(&s).unwrap(), r#"{"samples":["abc"]}"#);
    }
}

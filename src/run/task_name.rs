//! The names of the tasks of `rnn train`, as the command line and checkpoints spell them.

use anyhow::Result;

/// Every task of `rnn train`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskName {
    /// Character-level language model on a text file.
    CharLm,
    /// Word-level language model on a text file.
    WordLm,
    /// Sequence classification from "label text" lines.
    Classify,
    /// Sequence tagging from CoNLL-U or 2-column CoNLL.
    Tag,
    /// Encoder-decoder translation from TSV pairs.
    Seq2seq,
    /// Time-series forecasting from a CSV file.
    Forecast,
    /// Sequential MNIST from idx files (rows as time steps).
    Digits,
    /// The adding problem (generated).
    Adding,
    /// The copy-memory task (generated).
    Copy,
    /// The weekly-routine example (generated).
    Routine,
    /// Dates in human formats to ISO 8601 (generated encoder-decoder task).
    Dates,
}

impl TaskName {
    /// All tasks, in the order `rnn tasks` lists them.
    pub const ALL: [TaskName; 11] = [
        TaskName::Routine,
        TaskName::Adding,
        TaskName::Copy,
        TaskName::Dates,
        TaskName::CharLm,
        TaskName::WordLm,
        TaskName::Classify,
        TaskName::Tag,
        TaskName::Seq2seq,
        TaskName::Forecast,
        TaskName::Digits,
    ];

    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskName::CharLm => "char-lm",
            TaskName::WordLm => "word-lm",
            TaskName::Classify => "classify",
            TaskName::Tag => "tag",
            TaskName::Seq2seq => "seq2seq",
            TaskName::Forecast => "forecast",
            TaskName::Digits => "digits",
            TaskName::Adding => "adding",
            TaskName::Copy => "copy",
            TaskName::Routine => "routine",
            TaskName::Dates => "dates",
        }
    }

    /// What the task does and what data it expects.
    pub fn describe(self) -> &'static str {
        match self {
            TaskName::CharLm => "character language model. --data FILE: UTF-8 text (--valid FILE, or the last --split fraction, default 0.1). Metric: bits per character / perplexity",
            TaskName::WordLm => "word language model. --data FILE: UTF-8 text, tokens split on whitespace, one sentence per line gets <eos> (--valid/--test FILE, e.g. PTB). --level word|subword. Metric: perplexity",
            TaskName::Classify => "many-to-one classification. --data FILE: lines \"label<TAB or space>text\" (SST-2 style); --pooling last|mean|max|attention. Metric: accuracy, macro F1",
            TaskName::Tag => "many-to-many tagging. --data FILE: CoNLL-U (--tag-column upos by default) or 2-column CoNLL (token tag). Metric: token accuracy",
            TaskName::Seq2seq => "encoder-decoder translation. --data FILE: TSV \"source<TAB>target\" lines; --attention none|additive|dot|general, --beam N. Metrics: BLEU, exact match",
            TaskName::Forecast => "time-series forecasting. --data FILE: CSV with a header; --target COLUMN, --features A,B, --lookback N, --horizon N. Metric: RMSE vs persistence",
            TaskName::Digits => "sequential MNIST, 28 rows as 28 steps. --data IMAGES.idx3[.gz] --labels LABELS.idx1[.gz]. Metric: accuracy",
            TaskName::Adding => "adding problem (generated): sum the two marked numbers of a length --seq-len sequence. Metric: MSE (0.167 = guessing 1)",
            TaskName::Copy => "copy-memory task (generated): recall symbols after a long blank gap of --seq-len steps. Metric: accuracy on the recalled symbols",
            TaskName::Routine => "the weekly routine (generated, default task): run/bike/swim in turn, sleep on rainy days and resume; predict tomorrow's activity. Metric: accuracy",
            TaskName::Dates => "dates in human formats -> ISO 8601 (generated encoder-decoder). Metric: exact match",
        }
    }
}

impl std::str::FromStr for TaskName {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        TaskName::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = TaskName::ALL.iter().map(|t| t.as_str()).collect();
                anyhow::anyhow!("unknown task '{s}': expected one of {}", names.join(", "))
            })
    }
}

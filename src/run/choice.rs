//! Closed sets of values for `rnn train` options (`--cell`, `--optimizer`, `--schedule`,
//! `--dtype`, `--level`, `--pooling`, `--attention`, `--strategy`): clap value parsers that list
//! the choices in `--help`, answer a wrong value with the valid ones, and accept exactly what the
//! run layer's own parsers accept (aliases, any case), because they call those parsers. The
//! options stay strings, so a `--config` file goes through the same parsers and errors.

use std::ffi::OsStr;

use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;

/// A value parser over a closed set: `values` are the canonical spellings shown in `--help`,
/// `parse` maps any accepted spelling to its canonical one (or says why not).
#[derive(Clone, Copy)]
pub struct Choice {
    values: &'static [&'static str],
    parse: fn(&str) -> Result<&'static str, String>,
}

impl TypedValueParser for Choice {
    type Value = String;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<String, clap::Error> {
        let flag = arg
            .and_then(|a| a.get_long())
            .map_or_else(|| "the option".to_string(), |l| format!("--{l}"));
        let text = value.to_string_lossy();
        (self.parse)(&text).map(str::to_string).map_err(|why| {
            let mut cmd = cmd.clone();
            cmd.error(
                ErrorKind::InvalidValue,
                format!(
                    "{}\n  [possible values: {}]",
                    if why.contains(&flag) {
                        why
                    } else {
                        format!("{flag}: {why}")
                    },
                    self.values.join(", ")
                ),
            )
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(self.values.iter().map(PossibleValue::new)))
    }
}

fn lower(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// `--cell`: `rnn_core::Mode`'s spellings.
pub fn cell() -> Choice {
    Choice {
        values: &["lstm", "gru", "rnn-tanh", "rnn-relu"],
        parse: |s| {
            s.parse::<rnn_core::Mode>()
                .map(|m| m.as_str())
                .map_err(|e| e.to_string())
        },
    }
}

/// `--optimizer`.
pub fn optimizer() -> Choice {
    Choice {
        values: &["adamw", "sgd"],
        parse: |s| super::options::parse_optimizer_name(s).map_err(|e| e.to_string()),
    }
}

/// `--schedule`.
pub fn schedule() -> Choice {
    Choice {
        values: &super::options::SCHEDULES,
        parse: |s| super::options::parse_schedule_name(s).map_err(|e| e.to_string()),
    }
}

/// `--dtype`.
pub fn dtype() -> Choice {
    Choice {
        values: &["f32", "f64", "bf16", "f16"],
        parse: |s| {
            super::options::parse_dtype(s)
                .map(|d| d.as_str())
                .map_err(|e| e.to_string())
        },
    }
}

/// `--level`: the union of the language models' (char, word, subword) and translation's (char,
/// word, tutorial) levels; each task refuses the ones it does not have, naming its own.
pub fn level() -> Choice {
    Choice {
        values: &["char", "word", "subword", "tutorial"],
        parse: |s| {
            match lower(s).as_str() {
            "char" | "character" => Ok("char"),
            "word" => Ok("word"),
            "subword" | "bpe" => Ok("subword"),
            "tutorial" => Ok("tutorial"),
            _ => Err(format!(
                "--level must be char, word or subword (language models) or tutorial (translation), got '{}'",
                lower(s)
            )),
        }
        },
    }
}

/// `--pooling` of the classifier.
pub fn pooling() -> Choice {
    Choice {
        values: &["last", "mean", "max", "attention"],
        parse: |s| {
            s.parse::<rnn_models::classifier::Pooling>()
                .map(|p| p.as_str())
                .map_err(|_| format!("--pooling must be last, mean, max or attention, got '{s}'"))
        },
    }
}

/// `--attention` of seq2seq.
pub fn attention() -> Choice {
    Choice {
        values: &["none", "additive", "dot", "general"],
        parse: |s| {
            s.parse::<rnn_models::seq2seq::Attention>()
                .map(|a| a.as_str())
                .map_err(|e| e.to_string())
        },
    }
}

/// `--strategy` of the forecaster.
pub fn strategy() -> Choice {
    Choice {
        values: &["next-step", "direct", "autoregressive"],
        parse: |s| {
            s.parse::<rnn_models::forecaster::ForecastStrategy>()
                .map(|f| f.as_str())
                .map_err(|e| e.to_string())
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_value_and_alias_parses_to_a_listed_value() {
        for (choice, extra) in [
            (cell(), &["LSTM", "rnn_tanh", "relu"][..]),
            (optimizer(), &["Adam"][..]),
            (schedule(), &["StepLR", "reduce_lr_on_plateau"][..]),
            (dtype(), &["float64", "half"][..]),
            (level(), &["bpe"][..]),
            (pooling(), &["avg"][..]),
            (attention(), &["luong"][..]),
            (strategy(), &["ar"][..]),
        ] {
            for v in choice.values.iter().copied().chain(extra.iter().copied()) {
                let canon = (choice.parse)(v).unwrap_or_else(|e| panic!("{v}: {e}"));
                assert!(choice.values.contains(&canon), "{v} -> {canon}");
            }
            assert!((choice.parse)("no-such-value").is_err());
        }
    }
}

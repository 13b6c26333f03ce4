//! [`MaskOptions`]: the mask regularisers of a model's recurrent layer (variational, recurrent and
//! weight dropout, zoneout; see `rnn_core::RnnMasks`) and of its token embedding (embedding
//! dropout), and [`EmbeddingDropout`], which drops whole words (Merity et al. 2017,
//! <https://arxiv.org/abs/1708.02182>).

use candle_core::{DType, Result, Tensor};
use rnn_core::{Mode, RnnConfig};
use serde::{Deserialize, Serialize};

use crate::common::SeededDropout;
use crate::config_checks::check_dropout;

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// Mask regularisers of a model, every rate in `[0, 1)` and 0 (off) by default. Flattened into
/// the model's config and left out of its JSON while 0, so configs and checkpoints written
/// without them read and write as before.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct MaskOptions {
    /// Variational dropout on every recurrent layer's input and on the last layer's output (one
    /// mask per sequence): `RnnConfig::input_dropout` and `output_dropout`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub variational_dropout: f64,
    /// `RnnConfig::recurrent_dropout` (Keras' `recurrent_dropout`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub recurrent_dropout: f64,
    /// `RnnConfig::zoneout_h`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zoneout_h: f64,
    /// `RnnConfig::zoneout_c` (LSTM only).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub zoneout_c: f64,
    /// `RnnConfig::weight_drop` (DropConnect on `W_hh`, AWD-LSTM's WeightDrop).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub weight_drop: f64,
    /// Drop whole words of the embedding matrix (one mask over the vocabulary per training
    /// forward, scaled by `1 / (1 - p)`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub embedding_dropout: f64,
}

impl MaskOptions {
    /// Whether every rate is 0.
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }

    /// [`MaskOptions::validate`] for a model whose input need not be token embeddings (the
    /// classifier and the tagger, `tokens` telling whether it is): `embedding_dropout`, which
    /// drops whole words, needs a token input.
    pub fn validate_recurrent(&self, owner: &str, mode: Mode, tokens: bool) -> Result<()> {
        self.validate(owner, mode)?;
        if self.embedding_dropout > 0.0 && !tokens {
            return Err(crate::common::invalid(
                owner,
                format!(
                    "masks.embedding_dropout drops whole words and needs a token input (this model reads numeric features), got {}",
                    self.embedding_dropout
                ),
            ));
        }
        Ok(())
    }

    /// `cfg` with the recurrent-layer options set.
    pub fn apply(&self, cfg: RnnConfig) -> RnnConfig {
        cfg.with_input_dropout(self.variational_dropout)
            .with_output_dropout(self.variational_dropout)
            .with_recurrent_dropout(self.recurrent_dropout)
            .with_zoneout_h(self.zoneout_h)
            .with_zoneout_c(self.zoneout_c)
            .with_weight_drop(self.weight_drop)
    }

    /// Checks every rate for a model of `mode`; the error names `owner` and the field.
    pub fn validate(&self, owner: &str, mode: Mode) -> Result<()> {
        for (name, p) in [
            ("variational_dropout", self.variational_dropout),
            ("recurrent_dropout", self.recurrent_dropout),
            ("zoneout_h", self.zoneout_h),
            ("zoneout_c", self.zoneout_c),
            ("weight_drop", self.weight_drop),
            ("embedding_dropout", self.embedding_dropout),
        ] {
            check_dropout(owner, name, p)?;
        }
        if self.zoneout_c > 0.0 && mode != Mode::Lstm {
            return Err(crate::common::invalid(
                owner,
                format!(
                    "zoneout_c is for the LSTM cell state only, got {} with mode {mode}",
                    self.zoneout_c
                ),
            ));
        }
        Ok(())
    }
}

/// Embedding dropout: in training, each row (word) of the embedding matrix is zeroed with
/// probability `p` and the others scaled by `1 / (1 - p)`, one mask per forward, seeded through
/// [`SeededDropout`]'s seed and call counter (so a resumed run draws the same masks).
#[derive(Debug, Clone)]
pub struct EmbeddingDropout {
    dropout: SeededDropout,
}

impl EmbeddingDropout {
    /// Embedding dropout with probability `p` in `[0, 1)` and seed `seed`.
    pub fn new(p: f64, seed: u64) -> Result<Self> {
        Ok(Self {
            dropout: SeededDropout::new(p, seed)?,
        })
    }

    /// The drop probability.
    pub fn p(&self) -> f64 {
        self.dropout.p()
    }

    /// Reseeds and restarts the mask sequence.
    pub fn set_seed(&mut self, seed: u64) {
        self.dropout.set_seed(seed);
    }

    /// Masks drawn so far (saved in checkpoints).
    pub fn calls(&self) -> u64 {
        self.dropout.calls()
    }

    /// Restores the mask counter.
    pub fn set_calls(&self, calls: u64) {
        self.dropout.set_calls(calls)
    }

    /// The scale of each word when `train` and `p > 0`: `(vocab, 1)` of 0 or `1 / (1 - p)`
    /// (one draw), else `None`. Multiplying the looked-up embeddings of ids by their rows of it
    /// equals looking them up in the matrix [`EmbeddingDropout::forward`] returns.
    pub fn word_scale(
        &self,
        vocab: usize,
        dtype: DType,
        device: &candle_core::Device,
        train: bool,
    ) -> Result<Option<Tensor>> {
        if !train || self.p() == 0.0 {
            return Ok(None);
        }
        let ones = Tensor::ones((vocab, 1), DType::F32, device)?.to_dtype(dtype)?;
        self.dropout.forward(&ones, true).map(Some)
    }

    /// The embedding matrix `weight (V, E)` with whole rows dropped when `train` and `p > 0`,
    /// else `weight` itself. The gradient reaches `weight` through the product.
    pub fn forward(&self, weight: &Tensor, train: bool) -> Result<Tensor> {
        if !train || self.p() == 0.0 {
            return Ok(weight.clone());
        }
        let (v, _) = weight.dims2()?;
        let ones = Tensor::ones((v, 1), DType::F32, weight.device())?.to_dtype(weight.dtype())?;
        weight.broadcast_mul(&self.dropout.forward(&ones, true)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn embedding_dropout_drops_whole_rows() {
        let w = Tensor::ones((40, 3), DType::F32, &Device::Cpu).unwrap();
        let d = EmbeddingDropout::new(0.5, 3).unwrap();
        let y = d.forward(&w, true).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(d.calls(), 1);
        for row in &y {
            assert!(row.iter().all(|&v| v == row[0]) && (row[0] == 0.0 || row[0] == 2.0));
        }
        let dropped = y.iter().filter(|r| r[0] == 0.0).count();
        assert!((5..35).contains(&dropped), "{dropped} of 40 rows dropped");
        assert_eq!(
            d.forward(&w, false).unwrap().to_vec2::<f32>().unwrap(),
            w.to_vec2::<f32>().unwrap()
        );
        // Replaying the counter replays the mask.
        d.set_calls(0);
        assert_eq!(d.forward(&w, true).unwrap().to_vec2::<f32>().unwrap(), y);
    }

    #[test]
    fn options_validate_and_stay_out_of_json_when_off() {
        let off = MaskOptions::default();
        assert_eq!(serde_json::to_string(&off).unwrap(), "{}");
        let bad = MaskOptions {
            weight_drop: 1.0,
            ..off
        };
        let e = bad.validate("M", Mode::Lstm).unwrap_err().to_string();
        assert!(e.contains("weight_drop"), "{e}");
        let zc = MaskOptions {
            zoneout_c: 0.1,
            ..off
        };
        assert!(zc.validate("M", Mode::Gru).is_err());
        zc.validate("M", Mode::Lstm).unwrap();
    }
}

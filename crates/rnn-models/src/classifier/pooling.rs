//! [`Pooling`]: how the classifier summarises the valid steps, and the pooling itself.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Result, Tensor};
use candle_nn::Module;
use rnn_core::activation::tanh;
use rnn_core::linear::Linear;
use rnn_core::RnnState;
use serde::{Deserialize, Serialize};

use super::{SequenceClassifier, MODEL};
use crate::common::{invalid, length_mask};

/// How the classifier summarises the recurrent outputs of the valid steps into one vector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pooling {
    /// The top layer's final hidden state, PyTorch's `h_n`: the forward direction at the last
    /// valid step, concatenated with the backward direction at step 0 when bidirectional.
    #[default]
    Last,
    /// The mean of the outputs over the valid steps.
    Mean,
    /// The element-wise maximum of the outputs over the valid steps.
    Max,
    /// Learned attention: `alpha = softmax_t(v^T tanh(W h_t + b))` over the valid steps (exactly
    /// 0 at padding), pooled `sum_t alpha_t h_t`.
    Attention,
}

impl Pooling {
    /// Every pooling, in a fixed order.
    pub const ALL: [Pooling; 4] = [
        Pooling::Last,
        Pooling::Mean,
        Pooling::Max,
        Pooling::Attention,
    ];

    /// The config / command-line spelling: `last`, `mean`, `max`, `attention`.
    pub fn as_str(self) -> &'static str {
        match self {
            Pooling::Last => "last",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::Attention => "attention",
        }
    }
}

impl fmt::Display for Pooling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Pooling {
    type Err = candle_core::Error;

    /// Accepts `last`, `mean`, `max`, `attention` in any case (also `attn`, `avg`, `average`).
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "last" => Ok(Pooling::Last),
            "mean" | "avg" | "average" => Ok(Pooling::Mean),
            "max" => Ok(Pooling::Max),
            "attention" | "attn" => Ok(Pooling::Attention),
            _ => Err(candle_core::Error::Msg(format!(
                "unknown pooling '{s}': expected one of last, mean, max, attention"
            ))),
        }
    }
}

/// The attention scorer `score_t = v^T tanh(W h_t + b)`.
#[derive(Debug, Clone)]
pub(super) struct AttentionScorer {
    pub(super) w: Linear,
    pub(super) v: Linear,
}

impl SequenceClassifier {
    /// Pools `ys (batch, seq, out)` (zeros at padding, as the Rnn returns them).
    pub(super) fn pool(
        &self,
        ys: &Tensor,
        state: &RnnState,
        lengths: Option<&[usize]>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (b, t, _) = ys.dims3()?;
        let device = ys.device();
        match self.cfg.pooling {
            Pooling::Last => {
                // h_n of the top layer, forward direction first: exactly PyTorch's h_n[-dirs:].
                let dirs = self.rnn().config().num_directions();
                let top = (self.cfg.num_layers - 1) * dirs;
                let parts = (top..top + dirs)
                    .map(|i| state.h.get(i))
                    .collect::<Result<Vec<_>>>()?;
                Ok((Tensor::cat(&parts, 1)?, None))
            }
            Pooling::Mean => {
                let mask = length_mask(lengths, b, t, ys.dtype(), device)?;
                let weights = mask.broadcast_div(&mask.sum_keepdim(1)?)?;
                let pooled = weights.unsqueeze(1)?.matmul(ys)?.squeeze(1)?;
                Ok((pooled, Some(weights)))
            }
            Pooling::Max => {
                let pooled = match lengths {
                    None => ys.max(1)?,
                    Some(lengths) => {
                        let valid = length_mask(Some(lengths), b, t, DType::U8, device)?
                            .unsqueeze(2)?
                            .broadcast_as(ys.shape())?;
                        let neg = Tensor::full(f32::NEG_INFINITY, ys.shape(), device)?
                            .to_dtype(ys.dtype())?;
                        valid.where_cond(ys, &neg)?.max(1)?
                    }
                };
                Ok((pooled, None))
            }
            Pooling::Attention => {
                let att = self
                    .attention
                    .as_ref()
                    .ok_or_else(|| invalid(MODEL, "attention pooling without its parameters"))?;
                let scores = att.v.forward(&tanh(&att.w.forward(ys)?)?)?.squeeze(2)?;
                let weights = match lengths {
                    None => candle_nn::ops::softmax(&scores, 1)?,
                    Some(lengths) => {
                        // -inf at padding: exp gives exactly 0 there, and 0 gradient.
                        let valid = length_mask(Some(lengths), b, t, DType::U8, device)?;
                        let neg = Tensor::full(f32::NEG_INFINITY, (b, t), device)?
                            .to_dtype(scores.dtype())?;
                        candle_nn::ops::softmax(&valid.where_cond(&scores, &neg)?, 1)?
                    }
                };
                let pooled = weights.unsqueeze(1)?.matmul(ys)?.squeeze(1)?;
                Ok((pooled, Some(weights)))
            }
        }
    }
}

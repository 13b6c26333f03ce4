//! The [`SequenceClassifier`] model: parameters, forward, loss, prediction.

use candle_core::{DType, Result, Tensor, D};
use candle_nn::VarBuilder;
use rnn_core::linear::{linear, linear_no_bias};
use rnn_core::Rnn;

use super::pooling::AttentionScorer;
use super::{Pooling, SequenceClassifierConfig, MODEL};
use crate::common::{invalid, value_checks_on, Mlp, Stochastic};
use crate::encoder::SequenceEncoder;
use crate::loss::masked_cross_entropy;

/// Checks `u32 (batch,)` class targets with every id `< classes` (one scalar copied to the host).
pub(crate) fn check_class_targets(
    model: &str,
    targets: &Tensor,
    batch: usize,
    classes: usize,
) -> Result<()> {
    if targets.dtype() != DType::U32 {
        return Err(invalid(
            model,
            format!(
                "`targets` must hold u32 class ids, got dtype {:?}",
                targets.dtype()
            ),
        ));
    }
    if targets.dims() != [batch] {
        return Err(invalid(
            model,
            format!(
                "`targets` must have shape ({batch},) (one class per sequence), got {:?}",
                targets.dims()
            ),
        ));
    }
    if !value_checks_on(targets.device()) {
        return Ok(());
    }
    let max = targets.max_all()?.to_scalar::<u32>()?;
    if max as usize >= classes {
        return Err(invalid(
            model,
            format!("`targets` holds class {max}, but there are {classes} classes"),
        ));
    }
    Ok(())
}

/// A many-to-one sequence classifier (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct SequenceClassifier {
    pub(super) cfg: SequenceClassifierConfig,
    pub(super) encoder: SequenceEncoder,
    pub(super) attention: Option<AttentionScorer>,
    head: Mlp,
}

impl SequenceClassifier {
    /// Builds the model, loading or creating every parameter under `vb` (names in the
    /// [module docs](super)). Fails on an invalid config or a missing / misshapen tensor.
    /// Random sources start as after [`Stochastic::set_seed`] with seed 0.
    pub fn new(cfg: &SequenceClassifierConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let rnn_cfg = cfg.rnn_config();
        let encoder = SequenceEncoder::new(
            MODEL,
            &cfg.input,
            &rnn_cfg,
            cfg.embedding_dropout,
            cfg.output_dropout,
            cfg.masks.embedding_dropout,
            &vb,
        )?;
        let pooled = rnn_cfg.output_size();
        let attention = if cfg.pooling == Pooling::Attention {
            let a = cfg.attention_size.unwrap_or(pooled);
            let vb = vb.pp("attention");
            Some(AttentionScorer {
                w: linear(pooled, a, vb.pp("w"))?,
                v: linear_no_bias(a, 1, vb.pp("v"))?,
            })
        } else {
            None
        };
        let head = Mlp::new(
            pooled,
            &cfg.head_hidden,
            cfg.num_classes,
            cfg.head_activation,
            vb.pp("head"),
        )?;
        Ok(Self {
            cfg: cfg.clone(),
            encoder,
            attention,
            head,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SequenceClassifierConfig {
        &self.cfg
    }

    /// The recurrent layer.
    pub fn rnn(&self) -> &Rnn {
        self.encoder.rnn()
    }

    /// Class logits `(batch, num_classes)`.
    ///
    /// # Arguments
    /// - `input`: token ids `u32 (batch, seq)` or features `(batch, seq, size)` (see [`Input`](super::Input)),
    ///   right-padded.
    /// - `lengths`: valid steps per sequence, each in `1..=seq`; `None` = all `seq` steps valid.
    ///   Values at padded steps never influence the result.
    /// - `train`: turns dropout on.
    ///
    /// # Errors
    /// A [`candle_core::Error::Msg`] starting with `SequenceClassifier:` and naming the argument and its
    /// shape for: a wrong dtype, rank or feature size of `input`, an input on another device,
    /// `lengths` of the wrong count or outside `1..=seq`, a token id `>= vocab_size` at a valid
    /// step (checked with one scalar reduction copied to the host, on every device).
    pub fn forward(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<Tensor> {
        self.forward_with_weights(input, lengths, train)
            .map(|(logits, _)| logits)
    }

    /// Logits `(batch, num_classes)` and the pooling weights `(batch, seq)` over the steps:
    /// the attention weights for [`Pooling::Attention`], the uniform `1 / length` for
    /// [`Pooling::Mean`] (both sum to 1 over the valid steps and are exactly 0 at padding),
    /// `None` for [`Pooling::Last`] and [`Pooling::Max`]. Arguments as [`SequenceClassifier::forward`].
    pub fn forward_with_weights(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (pooled, weights) = self.pooled(input, lengths, train)?;
        let pooled = self.encoder.output_dropout(&pooled, train)?;
        Ok((self.head.forward(&pooled)?, weights))
    }

    /// The pooled sequence representation `(batch, pooled_size)` the head reads, and the pooling
    /// weights as in [`SequenceClassifier::forward_with_weights`]. Arguments as
    /// [`SequenceClassifier::forward`].
    pub fn pooled(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let (ys, state) = self.encoder.forward(input, lengths, train)?;
        self.pool(&ys, &state, lengths)
    }

    /// Mean cross-entropy (nats, rank 0) of the logits against `targets`, `u32 (batch,)` class
    /// ids `< num_classes`. Other arguments as [`SequenceClassifier::forward`].
    pub fn loss(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        targets: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (b, _) = self.encoder.check_input(input)?;
        check_class_targets(MODEL, targets, b, self.cfg.num_classes)?;
        let logits = self.forward(input, lengths, train)?;
        masked_cross_entropy(&logits, targets, None)
    }

    /// The most likely class of each sequence (eval mode).
    pub fn predict(&self, input: &Tensor, lengths: Option<&[usize]>) -> Result<Vec<u32>> {
        self.forward(input, lengths, false)?
            .argmax(D::Minus1)?
            .to_vec1::<u32>()
    }
}

impl Stochastic for SequenceClassifier {
    /// Seeds the shared encoder's random sources ([`SequenceEncoder`]'s `set_seed`).
    fn set_seed(&mut self, seed: u64) {
        self.encoder.set_seed(seed);
    }

    /// `[rnn, embedding dropout, output dropout]`, then the word dropout's with
    /// `masks.embedding_dropout` on.
    fn rng_counters(&self) -> Vec<u64> {
        self.encoder.rng_counters()
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        self.encoder.set_rng_counters(counters)
    }
}

/// `forward_t(input, train)` = [`SequenceClassifier::forward`] on unpadded input (no lengths):
/// logits `(batch, num_classes)`, dropout on when `train`.
impl candle_nn::ModuleT for SequenceClassifier {
    fn forward_t(&self, input: &Tensor, train: bool) -> Result<Tensor> {
        self.forward(input, None, train)
    }
}

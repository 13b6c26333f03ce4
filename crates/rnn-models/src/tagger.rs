//! Many-to-many aligned sequence labelling: [`SequenceTagger`], one tag per step (POS tagging,
//! named entities, per-step events).
//!
//! `input -> embedding | projection -> Rnn (bidirectional by default) -> dropout -> Linear ->
//! logits (batch, seq, num_tags)`.
//!
//! Parameter names: `embedding.weight` (or `input_projection.weight` / `.bias`, see
//! [`Input`]), `rnn.*` with PyTorch's `RNNBase` names (`rnn.weight_ih_l0_reverse`, ...) and
//! `output.weight` / `output.bias`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use rnn_models::classifier::Input;
//! use rnn_models::tagger::{SequenceTagger, SequenceTaggerConfig};
//! use rnn_models::rnn_core::{init::seeded_var_builder, Mode};
//!
//! let cfg = SequenceTaggerConfig::new(Input::tokens(10, 8), Mode::Lstm, 16, 5);
//! let varmap = VarMap::new();
//! let tagger = SequenceTagger::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
//! let ids = Tensor::new(&[[1u32, 2, 3], [4, 5, 0]], &Device::Cpu)?;
//! assert_eq!(tagger.forward(&ids, Some(&[3, 2]), false)?.dims(), &[2, 3, 5]);
//! let tags = tagger.predict(&ids, Some(&[3, 2]))?;
//! assert_eq!((tags[0].len(), tags[1].len()), (3, 2));
//! # Ok::<(), candle_core::Error>(())
//! ```

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use rnn_core::{Mode, Rnn, RnnConfig};
use serde::{Deserialize, Serialize};

use crate::classifier::{check_dropout, derive_seed, Input, InputEncoder};
use crate::common::{
    check_counters, check_lengths, invalid, length_mask, value_checks_on, SeededDropout, Stochastic,
};
use crate::loss::masked_cross_entropy;

const MODEL: &str = "SequenceTagger";
const CONFIG: &str = "SequenceTaggerConfig";

fn one() -> usize {
    1
}

fn yes() -> bool {
    true
}

/// Configuration of a [`SequenceTagger`]; serde-serialisable, with `with_*` setters.
///
/// Fields with a serde default may be left out of a config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SequenceTaggerConfig {
    /// Token or feature input.
    pub input: Input,
    /// Recurrent cell.
    pub mode: Mode,
    /// Hidden size of the recurrence (per direction).
    pub hidden_size: usize,
    /// Stacked recurrent layers (default 1).
    #[serde(default = "one")]
    pub num_layers: usize,
    /// Whether the recurrence also runs backwards, so each tag sees the whole sentence
    /// (default true).
    #[serde(default = "yes")]
    pub bidirectional: bool,
    /// Dropout between recurrent layers, training only (default 0).
    #[serde(default)]
    pub rnn_dropout: f64,
    /// LSTM output projection size, 0 = none (default 0; see [`RnnConfig::proj_size`]).
    #[serde(default)]
    pub proj_size: usize,
    /// Number of tags (>= 2).
    pub num_tags: usize,
    /// Dropout on the step features (after the embedding / projection), training only.
    #[serde(default)]
    pub embedding_dropout: f64,
    /// Dropout on the recurrent outputs before the output layer, training only.
    #[serde(default)]
    pub output_dropout: f64,
}

impl SequenceTaggerConfig {
    /// A one-layer bidirectional tagger without dropout.
    pub fn new(input: Input, mode: Mode, hidden_size: usize, num_tags: usize) -> Self {
        Self {
            input,
            mode,
            hidden_size,
            num_layers: 1,
            bidirectional: true,
            rnn_dropout: 0.0,
            proj_size: 0,
            num_tags,
            embedding_dropout: 0.0,
            output_dropout: 0.0,
        }
    }

    /// Sets `num_layers`.
    pub fn with_num_layers(mut self, num_layers: usize) -> Self {
        self.num_layers = num_layers;
        self
    }

    /// Sets `bidirectional`.
    pub fn with_bidirectional(mut self, bidirectional: bool) -> Self {
        self.bidirectional = bidirectional;
        self
    }

    /// Sets `rnn_dropout`.
    pub fn with_rnn_dropout(mut self, p: f64) -> Self {
        self.rnn_dropout = p;
        self
    }

    /// Sets `proj_size` (LSTM only).
    pub fn with_proj_size(mut self, proj_size: usize) -> Self {
        self.proj_size = proj_size;
        self
    }

    /// Sets `embedding_dropout`.
    pub fn with_embedding_dropout(mut self, p: f64) -> Self {
        self.embedding_dropout = p;
        self
    }

    /// Sets `output_dropout`.
    pub fn with_output_dropout(mut self, p: f64) -> Self {
        self.output_dropout = p;
        self
    }

    /// The recurrent layer's configuration (batch-first, `input_size` from [`Input::output_size`]).
    pub fn rnn_config(&self) -> RnnConfig {
        RnnConfig::new(self.mode, self.input.output_size(), self.hidden_size)
            .with_num_layers(self.num_layers)
            .with_bidirectional(self.bidirectional)
            .with_dropout(self.rnn_dropout)
            .with_proj_size(self.proj_size)
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        self.input.validate(CONFIG)?;
        self.rnn_config()
            .validate()
            .map_err(|e| invalid(CONFIG, format!("recurrent layer: {e}")))?;
        if self.num_tags < 2 {
            return Err(invalid(
                CONFIG,
                format!("num_tags must be >= 2, got {}", self.num_tags),
            ));
        }
        check_dropout(CONFIG, "embedding_dropout", self.embedding_dropout)?;
        check_dropout(CONFIG, "output_dropout", self.output_dropout)?;
        Ok(())
    }
}

/// A many-to-many aligned tagger (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct SequenceTagger {
    cfg: SequenceTaggerConfig,
    encoder: InputEncoder,
    embedding_dropout: SeededDropout,
    rnn: Rnn,
    output_dropout: SeededDropout,
    output: Linear,
}

impl SequenceTagger {
    /// Builds the model, loading or creating every parameter under `vb` (names in the
    /// [module docs](self)). Fails on an invalid config or a missing / misshapen tensor.
    /// Random sources start as after [`Stochastic::set_seed`] with seed 0.
    pub fn new(cfg: &SequenceTaggerConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let encoder = InputEncoder::new(&cfg.input, &vb)?;
        let rnn_cfg = cfg.rnn_config();
        let rnn = Rnn::new(&rnn_cfg, vb.pp("rnn"))?;
        let output = candle_nn::linear(rnn_cfg.output_size(), cfg.num_tags, vb.pp("output"))?;
        let mut model = Self {
            cfg: cfg.clone(),
            encoder,
            embedding_dropout: SeededDropout::new(cfg.embedding_dropout, 0)?,
            rnn,
            output_dropout: SeededDropout::new(cfg.output_dropout, 0)?,
            output,
        };
        model.set_seed(0);
        Ok(model)
    }

    /// The configuration.
    pub fn config(&self) -> &SequenceTaggerConfig {
        &self.cfg
    }

    /// The recurrent layer.
    pub fn rnn(&self) -> &Rnn {
        &self.rnn
    }

    /// Per-step tag logits `(batch, seq, num_tags)`.
    ///
    /// # Arguments
    /// - `input`: token ids `u32 (batch, seq)` or features `(batch, seq, size)` (see [`Input`]),
    ///   right-padded.
    /// - `lengths`: valid steps per sequence, each in `1..=seq`; `None` = all `seq` steps valid.
    ///   Values at padded steps never influence the logits of valid steps; the logits at padded
    ///   steps are meaningless (the output bias) and are ignored by [`SequenceTagger::loss`] and
    ///   [`SequenceTagger::predict`].
    /// - `train`: turns dropout on.
    ///
    /// # Errors
    /// A [`candle_core::Error::Msg`] starting with `SequenceTagger:` and naming the argument and its
    /// shape for: a wrong dtype, rank or feature size of `input`, an input on another device,
    /// `lengths` of the wrong count or outside `1..=seq`, a token id `>= vocab_size` at a valid
    /// step (checked with one scalar reduction copied to the host, on every device).
    pub fn forward(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t) = self.encoder.check(MODEL, input)?;
        if let Some(lengths) = lengths {
            check_lengths(MODEL, lengths, b, t)?;
        }
        let xs = self.encoder.forward(MODEL, input, lengths)?;
        let xs = self.embedding_dropout.forward(&xs, train)?;
        let (ys, _) = self.rnn.forward_t(&xs, None, lengths, train)?;
        let ys = self.output_dropout.forward(&ys, train)?;
        self.output.forward(&ys)
    }

    /// Mean cross-entropy (nats, rank 0) over the valid steps of every sequence against `tags`,
    /// `u32 (batch, seq)` tag ids `< num_tags`; ids at padded steps are ignored (any value,
    /// e.g. `u32::MAX`). Other arguments as [`SequenceTagger::forward`].
    pub fn loss(
        &self,
        input: &Tensor,
        lengths: Option<&[usize]>,
        tags: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let (b, t) = self.encoder.check(MODEL, input)?;
        if let Some(lengths) = lengths {
            check_lengths(MODEL, lengths, b, t)?;
        }
        self.check_tags(tags, lengths, b, t)?;
        let logits = self.forward(input, lengths, train)?;
        let mask = length_mask(lengths, b, t, DType::U8, input.device())?;
        masked_cross_entropy(&logits, tags, Some(&mask))
    }

    /// Checks `u32 (batch, seq)` tags with ids `< num_tags` at valid steps (one scalar copied to
    /// the host).
    fn check_tags(
        &self,
        tags: &Tensor,
        lengths: Option<&[usize]>,
        b: usize,
        t: usize,
    ) -> Result<()> {
        if tags.dtype() != DType::U32 {
            return Err(invalid(
                MODEL,
                format!("`tags` must hold u32 tag ids, got dtype {:?}", tags.dtype()),
            ));
        }
        if tags.dims() != [b, t] {
            return Err(invalid(
                MODEL,
                format!(
                    "`tags` must have the input's shape (batch, seq) = ({b}, {t}), got {:?}",
                    tags.dims()
                ),
            ));
        }
        if !value_checks_on(tags.device()) {
            return Ok(()); // reading the tags back would stall the device once per step
        }
        let valid = match lengths {
            Some(lengths) => {
                let mask = length_mask(Some(lengths), b, t, DType::U8, tags.device())?;
                mask.where_cond(tags, &tags.zeros_like()?)?
            }
            None => tags.clone(),
        };
        let max = valid.max_all()?.to_scalar::<u32>()?;
        if max as usize >= self.cfg.num_tags {
            return Err(invalid(
                MODEL,
                format!(
                    "`tags` holds tag {max} at a valid step, but there are {} tags",
                    self.cfg.num_tags
                ),
            ));
        }
        Ok(())
    }

    /// The most likely tag at each valid step (eval mode): one vector per sequence, of length
    /// `lengths[b]` (or `seq` without lengths).
    pub fn predict(&self, input: &Tensor, lengths: Option<&[usize]>) -> Result<Vec<Vec<u32>>> {
        let rows = self
            .forward(input, lengths, false)?
            .argmax(D::Minus1)?
            .to_vec2::<u32>()?;
        Ok(match lengths {
            Some(lengths) => rows
                .into_iter()
                .zip(lengths)
                .map(|(mut row, &l)| {
                    row.truncate(l);
                    row
                })
                .collect(),
            None => rows,
        })
    }
}

impl Stochastic for SequenceTagger {
    /// Seeds, in this order: the recurrent layer's inter-layer dropout, the embedding dropout,
    /// the output dropout (each from its own derived seed).
    fn set_seed(&mut self, seed: u64) {
        self.rnn = self.rnn.set_dropout_seed(derive_seed(seed, 0));
        self.embedding_dropout.set_seed(derive_seed(seed, 1));
        self.output_dropout.set_seed(derive_seed(seed, 2));
    }

    /// `[rnn, embedding dropout, output dropout]`.
    fn rng_counters(&self) -> Vec<u64> {
        vec![
            self.rnn.dropout_calls(),
            self.embedding_dropout.calls(),
            self.output_dropout.calls(),
        ]
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        check_counters(MODEL, counters, 3)?;
        self.rnn.set_dropout_calls(counters[0]);
        self.embedding_dropout.set_calls(counters[1]);
        self.output_dropout.set_calls(counters[2]);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rnn_core::init::seeded_var_builder;

    fn build(cfg: &SequenceTaggerConfig, seed: u64) -> (VarMap, SequenceTagger) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = SequenceTagger::new(cfg, vb).unwrap();
        (varmap, model)
    }

    fn token_input(vocab: u32, b: usize, t: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let ids: Vec<u32> = (0..b * t).map(|_| rng.random_range(0..vocab)).collect();
        Tensor::from_vec(ids, (b, t), &Device::Cpu).unwrap()
    }

    fn feature_input(b: usize, t: usize, f: usize, seed: u64) -> Tensor {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let xs: Vec<f32> = (0..b * t * f)
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        Tensor::from_vec(xs, (b, t, f), &Device::Cpu).unwrap()
    }

    fn make_input(input: &Input, b: usize, t: usize, seed: u64) -> Tensor {
        match *input {
            Input::Tokens { vocab_size, .. } => token_input(vocab_size as u32, b, t, seed),
            Input::Features { size, .. } => feature_input(b, t, size, seed),
        }
    }

    fn inputs() -> [Input; 3] {
        [
            Input::tokens_with_padding(7, 5, 0),
            Input::features(4),
            Input::projected_features(4, 6),
        ]
    }

    fn vec3(t: &Tensor) -> Vec<Vec<Vec<f32>>> {
        t.to_vec3::<f32>().unwrap()
    }

    #[test]
    fn shapes_for_every_mode_direction_and_input() {
        let (b, t) = (3, 5);
        let lengths = [5, 1, 3];
        for input in inputs() {
            for mode in Mode::ALL {
                for bidirectional in [false, true] {
                    let cfg = SequenceTaggerConfig::new(input.clone(), mode, 6, 4)
                        .with_num_layers(2)
                        .with_bidirectional(bidirectional);
                    let (_, model) = build(&cfg, 1);
                    let xs = make_input(&input, b, t, 2);
                    for lengths in [None, Some(&lengths[..])] {
                        let logits = model.forward(&xs, lengths, false).unwrap();
                        assert_eq!(logits.dims(), &[b, t, 4], "{cfg:?}");
                        let tags = model.predict(&xs, lengths).unwrap();
                        let lens: Vec<usize> = tags.iter().map(|r| r.len()).collect();
                        assert_eq!(lens, lengths.map_or(vec![t; b], |l| l.to_vec()));
                        assert!(tags.iter().flatten().all(|&tag| tag < 4));
                    }
                }
            }
        }
    }

    /// Changes every padded position of `xs` and `tags` (beyond each length) to other values.
    fn scramble_padding(xs: &Tensor, tags: &Tensor, lengths: &[usize]) -> (Tensor, Tensor) {
        let mut tag_rows = tags.to_vec2::<u32>().unwrap();
        for (row, &l) in tag_rows.iter_mut().zip(lengths) {
            for v in row.iter_mut().skip(l) {
                *v = u32::MAX;
            }
        }
        let tags = Tensor::new(tag_rows, &Device::Cpu).unwrap();
        let xs = match xs.rank() {
            2 => {
                let mut rows = xs.to_vec2::<u32>().unwrap();
                for (row, &l) in rows.iter_mut().zip(lengths) {
                    for v in row.iter_mut().skip(l) {
                        *v = 999;
                    }
                }
                Tensor::new(rows, &Device::Cpu).unwrap()
            }
            _ => {
                let mut rows = xs.to_vec3::<f32>().unwrap();
                for (row, &l) in rows.iter_mut().zip(lengths) {
                    for step in row.iter_mut().skip(l) {
                        for v in step.iter_mut() {
                            *v = *v * 50.0 - 3.0;
                        }
                    }
                }
                Tensor::new(rows, &Device::Cpu).unwrap()
            }
        };
        (xs, tags)
    }

    #[test]
    fn padded_positions_change_nothing() {
        let (b, t) = (4, 6);
        let lengths = [6, 1, 3, 5];
        for input in inputs() {
            for mode in [Mode::Lstm, Mode::RnnTanh] {
                for bidirectional in [false, true] {
                    let cfg = SequenceTaggerConfig::new(input.clone(), mode, 5, 3)
                        .with_num_layers(2)
                        .with_bidirectional(bidirectional);
                    let (_, model) = build(&cfg, 3);
                    let xs = make_input(&input, b, t, 4);
                    let tags = token_input(3, b, t, 5);
                    let logits = vec3(&model.forward(&xs, Some(&lengths), false).unwrap());
                    let loss = model
                        .loss(&xs, Some(&lengths), &tags, false)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    let pred = model.predict(&xs, Some(&lengths)).unwrap();
                    let (xs2, tags2) = scramble_padding(&xs, &tags, &lengths);
                    let logits2 = vec3(&model.forward(&xs2, Some(&lengths), false).unwrap());
                    let loss2 = model
                        .loss(&xs2, Some(&lengths), &tags2, false)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(loss.is_finite());
                    assert_eq!(loss, loss2, "{cfg:?}");
                    for (bi, &l) in lengths.iter().enumerate() {
                        assert_eq!(logits[bi][..l], logits2[bi][..l], "{cfg:?}");
                    }
                    assert_eq!(pred, model.predict(&xs2, Some(&lengths)).unwrap());
                }
            }
        }
    }

    /// tag = 2 * [previous token == this token] + [next token == this token]: needs both
    /// directions of context.
    fn tagging_batch(rng: &mut ChaCha8Rng, batch: usize) -> (Tensor, Vec<usize>, Tensor) {
        let t_max = 12;
        let (mut ids, mut tags, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..batch {
            let len = rng.random_range(5..=t_max);
            let seq: Vec<u32> = (0..len).map(|_| rng.random_range(0..3u32)).collect();
            for i in 0..t_max {
                if i < len {
                    let prev = i > 0 && seq[i - 1] == seq[i];
                    let next = i + 1 < len && seq[i + 1] == seq[i];
                    ids.push(seq[i]);
                    tags.push(2 * prev as u32 + next as u32);
                } else {
                    ids.push(3);
                    tags.push(u32::MAX);
                }
            }
            lengths.push(len);
        }
        (
            Tensor::from_vec(ids, (batch, t_max), &Device::Cpu).unwrap(),
            lengths,
            Tensor::from_vec(tags, (batch, t_max), &Device::Cpu).unwrap(),
        )
    }

    fn token_accuracy(model: &SequenceTagger, data: &(Tensor, Vec<usize>, Tensor)) -> f64 {
        let pred = model.predict(&data.0, Some(&data.1)).unwrap();
        let truth = data.2.to_vec2::<u32>().unwrap();
        let (mut right, mut total) = (0, 0);
        for (p, t) in pred.iter().zip(&truth) {
            right += p.iter().zip(t).filter(|(a, b)| a == b).count();
            total += p.len();
        }
        right as f64 / total as f64
    }

    #[test]
    fn learns_a_tagging_rule_that_needs_both_directions() {
        let cfg = SequenceTaggerConfig::new(Input::tokens_with_padding(4, 8, 3), Mode::Gru, 16, 4)
            .with_output_dropout(0.1);
        let (varmap, mut model) = build(&cfg, 7);
        model.set_seed(1);
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let held_out = tagging_batch(&mut rng, 200);
        let untrained = token_accuracy(&model, &held_out);
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 0.02,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..250 {
            let (ids, lengths, tags) = tagging_batch(&mut rng, 32);
            let loss = model.loss(&ids, Some(&lengths), &tags, true).unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let trained = token_accuracy(&model, &held_out);
        eprintln!("tagger: untrained {untrained:.3}, trained {trained:.3}");
        assert!(untrained < 0.6, "untrained token accuracy {untrained}");
        assert!(trained >= 0.95, "trained token accuracy {trained}");
    }

    #[test]
    fn every_parameter_is_named_and_gets_a_gradient() {
        let cfg =
            SequenceTaggerConfig::new(Input::tokens(6, 3), Mode::Lstm, 4, 3).with_num_layers(2);
        let (varmap, model) = build(&cfg, 2);
        let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
        for expected in [
            "embedding.weight",
            "rnn.weight_ih_l0",
            "rnn.weight_hh_l1_reverse",
            "output.weight",
            "output.bias",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        let xs = token_input(6, 3, 5, 1);
        let tags = token_input(3, 3, 5, 2);
        let loss = model.loss(&xs, Some(&[5, 3, 1]), &tags, true).unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in varmap.data().lock().unwrap().iter() {
            assert!(
                grads.get(var.as_tensor()).is_some(),
                "no gradient for {name}"
            );
        }
    }

    #[test]
    fn save_load_round_trip_is_exact() {
        let cfg = SequenceTaggerConfig::new(Input::projected_features(3, 5), Mode::Lstm, 6, 4)
            .with_num_layers(2)
            .with_proj_size(4);
        let (varmap, model) = build(&cfg, 21);
        let xs = feature_input(3, 5, 3, 22);
        let lengths = [5, 3, 2];
        let logits = vec3(&model.forward(&xs, Some(&lengths), false).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        varmap.save(&path).unwrap();

        let mut fresh = VarMap::new();
        let loaded = SequenceTagger::new(
            &cfg,
            VarBuilder::from_varmap(&fresh, DType::F32, &Device::Cpu),
        )
        .unwrap();
        assert_ne!(
            vec3(&loaded.forward(&xs, Some(&lengths), false).unwrap()),
            logits
        );
        fresh.load(&path).unwrap();
        assert_eq!(
            vec3(&loaded.forward(&xs, Some(&lengths), false).unwrap()),
            logits
        );
    }

    #[test]
    fn dropout_is_seeded_and_resumable() {
        let cfg = SequenceTaggerConfig::new(Input::tokens(8, 4), Mode::Gru, 6, 3)
            .with_num_layers(2)
            .with_rnn_dropout(0.3)
            .with_embedding_dropout(0.2)
            .with_output_dropout(0.4);
        let (_, mut model) = build(&cfg, 1);
        let xs = token_input(8, 2, 6, 2);
        let eval = vec3(&model.forward(&xs, None, false).unwrap());
        model.set_seed(4);
        let a1 = vec3(&model.forward(&xs, None, true).unwrap());
        let counters = model.rng_counters();
        assert_eq!(counters, vec![1, 1, 1]);
        let a2 = vec3(&model.forward(&xs, None, true).unwrap());
        assert_ne!(a1, eval);
        assert_ne!(a1, a2);
        model.set_seed(4);
        assert_eq!(vec3(&model.forward(&xs, None, true).unwrap()), a1);
        model.set_rng_counters(&counters).unwrap();
        assert_eq!(vec3(&model.forward(&xs, None, true).unwrap()), a2);
        assert!(model.set_rng_counters(&[0, 0]).is_err());
    }

    #[test]
    fn argument_errors_name_the_argument() {
        let cfg = SequenceTaggerConfig::new(Input::tokens(5, 3), Mode::Gru, 4, 3);
        let (_, model) = build(&cfg, 0);
        let dev = Device::Cpu;
        let xs = token_input(5, 2, 4, 0);
        let tags = token_input(3, 2, 4, 1);
        let err = |r: Result<Tensor>| r.unwrap_err().to_string();
        let check = |msg: String, needles: &[&str]| {
            assert!(msg.contains("SequenceTagger"), "{msg}");
            for n in needles {
                assert!(msg.contains(n), "{n} not in: {msg}");
            }
        };
        check(
            err(model.forward(&xs, Some(&[4, 2, 1]), false)),
            &["lengths", "3 entries"],
        );
        check(
            err(model.forward(&xs, Some(&[4, 9]), false)),
            &["lengths[1]", "1..=4"],
        );
        check(
            err(model.loss(&xs, Some(&[0, 1]), &tags, false)),
            &["lengths[0]"],
        );
        let float_ids = xs.to_dtype(DType::F32).unwrap();
        check(
            err(model.forward(&float_ids, None, false)),
            &["input", "u32"],
        );
        let rank1 = Tensor::new(&[1u32, 2], &dev).unwrap();
        check(err(model.forward(&rank1, None, false)), &["input", "[2]"]);
        let oov = Tensor::new(&[[1u32, 2, 3, 4], [1, 5, 1, 1]], &dev).unwrap();
        check(
            err(model.forward(&oov, None, false)),
            &["input", "token id 5", "[1, 1]"],
        );
        let wrong_shape = token_input(3, 2, 3, 1);
        check(
            err(model.loss(&xs, None, &wrong_shape, false)),
            &["tags", "(2, 4)", "[2, 3]"],
        );
        let float_tags = tags.to_dtype(DType::F32).unwrap();
        check(
            err(model.loss(&xs, None, &float_tags, false)),
            &["tags", "u32", "F32"],
        );
        let big = Tensor::new(&[[0u32, 1, 2, 3], [0, 0, 0, 0]], &dev).unwrap();
        check(err(model.loss(&xs, None, &big, false)), &["tags", "tag 3"]);
        // ... but an invalid tag at a padded step is fine.
        model.loss(&xs, Some(&[3, 4]), &big, false).unwrap();
    }

    #[test]
    fn config_validation_and_serde() {
        let ok = SequenceTaggerConfig::new(Input::tokens(5, 3), Mode::Lstm, 4, 3);
        ok.validate().unwrap();
        let cases = [
            (ok.clone().with_num_layers(0), "num_layers"),
            (ok.clone().with_rnn_dropout(1.0), "dropout"),
            (ok.clone().with_embedding_dropout(2.0), "embedding_dropout"),
            (ok.clone().with_output_dropout(-1.0), "output_dropout"),
            (ok.clone().with_proj_size(4), "proj_size"),
            (
                SequenceTaggerConfig::new(Input::tokens(5, 3), Mode::Gru, 4, 1),
                "num_tags",
            ),
            (
                SequenceTaggerConfig::new(Input::tokens_with_padding(5, 3, 9), Mode::Gru, 4, 3),
                "padding_idx",
            ),
        ];
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains(CONFIG),
                "{needle}: {err}"
            );
        }
        let json = serde_json::to_string(&ok.clone().with_output_dropout(0.5)).unwrap();
        let back: SequenceTaggerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ok.clone().with_output_dropout(0.5));
        let minimal: SequenceTaggerConfig = serde_json::from_str(
            r#"{"input":{"kind":"tokens","vocab_size":5,"embedding_dim":3},"mode":"lstm","hidden_size":4,"num_tags":3}"#,
        )
        .unwrap();
        assert_eq!(minimal, ok);
        assert!(minimal.bidirectional);
    }
}

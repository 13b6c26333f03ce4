//! [`Seq2Seq`]: an RNN encoder-decoder (many-to-many with different lengths) with optional
//! attention, teacher forcing, greedy decoding and batched beam search.
//!
//! # Model
//!
//! - **Encoder**: source embedding -> dropout -> [`Rnn`] (any [`Mode`], `encoder_layers` stacked,
//!   optionally bidirectional, `hidden_size` per direction) run with the source lengths
//!   (PyTorch packed-sequence semantics: padding never reaches a valid output or the final state).
//!   Its outputs `(B, S, K)`, `K = directions * hidden_size`, are the attention memory.
//! - **Bridge** (encoder final state -> decoder initial state, `h` and for LSTM `c`):
//!   - bidirectional encoder: per layer, `[forward ; backward]` final states (`2 * hidden_size`)
//!     are mapped by a learned `tanh(Linear)` to `hidden_size` (`bridge.h.*`, and `bridge.c.*` for
//!     LSTM; one Linear shared by all layers);
//!   - unidirectional encoder: passed through unchanged (the sizes are equal by construction);
//!   - layers: when `encoder_layers == decoder_layers` layer k starts decoder layer k; otherwise
//!     **every** decoder layer starts from the (bridged) state of the **top** encoder layer.
//! - **Decoder**: target embedding -> dropout -> [`Rnn`] (unidirectional, `decoder_layers`
//!   stacked; with `input_feeding` its input is `[embedding ; previous attentional hidden]` as in
//!   Luong et al. 2015, zeros at the first step) -> attention -> `tanh(W_c [context ; h])`
//!   (`decoder.combine.*`) -> dropout -> `decoder.output` (logits over `tgt_vocab`).
//! - **Attention** ([`Attention`]), the query is the decoder's top-layer output `h_t`, keys and
//!   values the encoder outputs `k_s`:
//!   - `None`: no attention; the decoder sees the source only through the bridged state and
//!     `logits = output(h_t)` (no combine layer);
//!   - `Additive` (Bahdanau): `score = v^T tanh(W_q q + W_k k + b)` (`attention.query`,
//!     `attention.key`, `attention.v`; attention size = `hidden_size`);
//!   - `Dot` (Luong): `score = q . k` (no parameters; needs `K == hidden_size`, so not with a
//!     bidirectional encoder: use `general` or `additive` there);
//!   - `General` (Luong): `score = q^T W k` (`attention.key.weight`, shape `(hidden, K)`).
//!
//!   The softmax runs over valid source positions only: padding gets a weight of exactly 0.
//!
//! # Teacher forcing
//!
//! [`Seq2Seq::forward`] takes the decoder input `tgt_in = [bos, y_1, .., y_{T-1}]`. With
//! `teacher_forcing_ratio = 1.0` every step reads the gold previous token; with a ratio `r < 1`,
//! at every step `t >= 1` and for every sentence independently, one uniform number `u` is drawn
//! from a ChaCha8 generator seeded with `seed` (row-major: step by step, sentence by sentence)
//! and the step reads the gold token if `u < r`, else the model's own greedy prediction (argmax of
//! its logits at step `t - 1`, not differentiated through). The same seed gives the same
//! choices. [`Seq2Seq::loss`] draws that seed from the model's own seeded counter (see
//! [`Stochastic`]), so training runs are reproducible and resumable.
//!
//! With ratio 1.0 and no input feeding the decoder RNN and the attention run once over the whole
//! target sequence (fast, no per-step slicing of tracked tensors); otherwise the decoder runs
//! step by step. Both give the same result.
//!
//! # Decoding
//!
//! [`Seq2Seq::greedy`] and [`Seq2Seq::beam_search`] decode at most `max_len` steps (the end token
//! counts as a step) and stop a sentence at `eos_id`. Beam search is batched: the `beam`
//! hypotheses of all sentences are one tensor per step. Per sentence and step, the `2 * beam`
//! best continuations (by summed log-probability; ties towards the lower beam, then the lower
//! token id) are ranked; an end token among the first `beam` of them finishes that hypothesis,
//! the first `beam` other continuations stay alive; a sentence is done once it has `beam`
//! finished hypotheses (as fairseq) or at `max_len`, where the live hypotheses are finished
//! without an end token. The result is the finished hypothesis with the best
//! `score = log_prob / lp(len)`, with the GNMT length penalty
//! `lp(len) = ((5 + len) / 6)^alpha` (Wu et al. 2016; [`length_penalty`]), `len` = steps taken
//! (tokens plus the end token if any), `alpha = 0` = no penalty. Beam 1 equals greedy decoding.
//!
//! # Parameters
//!
//! `encoder.embedding.weight`, `encoder.rnn.*` (PyTorch names: `weight_ih_l0`, ..),
//! `bridge.{h,c}.{weight,bias}` (bidirectional encoder), `decoder.embedding.weight`,
//! `decoder.rnn.*`, `attention.*`, `decoder.combine.{weight,bias}` (with attention),
//! `decoder.output.{weight,bias}`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use candle_nn::VarMap;
//! use rnn_core::init::seeded_var_builder;
//! use rnn_models::seq2seq::{Attention, Seq2Seq, Seq2SeqConfig};
//!
//! let cfg = Seq2SeqConfig {
//!     embedding_dim: 8,
//!     hidden_size: 16,
//!     attention: Attention::General,
//!     ..Seq2SeqConfig::new(10, 12)
//! };
//! let varmap = VarMap::new();
//! let model = Seq2Seq::new(&cfg, seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?;
//! let src = Tensor::new(&[[3u32, 4, 5], [6, 7, 0]], &Device::Cpu)?;
//! let tgt = Tensor::new(&[[5u32, 4, 3, 2], [7, 6, 2, 0]], &Device::Cpu)?; // gold, with eos = 2
//! let loss = model.loss(&src, &[3, 2], &tgt, &[4, 3], true, 1.0)?;
//! assert_eq!(loss.rank(), 0);
//! let hyps = model.beam_search(&src, &[3, 2], 4, 0.6, 10)?;
//! assert_eq!(hyps.len(), 2);
//! # Ok::<(), candle_core::Error>(())
//! ```

use std::cmp::Ordering as CmpOrdering;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_core::{Mode, Rnn, RnnConfig, RnnState};
use serde::{Deserialize, Serialize};

use crate::common::{
    check_counters, check_ids, check_lengths, invalid, length_mask, value_checks_on, SeededDropout,
    Stochastic,
};
use crate::loss::masked_cross_entropy;

const MODEL: &str = "Seq2Seq";

/// The attention of the decoder over the encoder outputs (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Attention {
    /// No attention: the decoder sees the source only through the bridged state.
    None,
    /// Bahdanau (additive): `v^T tanh(W_q q + W_k k + b)`.
    Additive,
    /// Luong dot: `q . k`.
    Dot,
    /// Luong general: `q^T W k`.
    #[default]
    General,
}

impl Attention {
    /// Every kind, in a fixed order.
    pub const ALL: [Attention; 4] = [
        Attention::None,
        Attention::Additive,
        Attention::Dot,
        Attention::General,
    ];

    /// The config / command-line spelling: `none`, `additive`, `dot`, `general`.
    pub fn as_str(self) -> &'static str {
        match self {
            Attention::None => "none",
            Attention::Additive => "additive",
            Attention::Dot => "dot",
            Attention::General => "general",
        }
    }
}

impl fmt::Display for Attention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Attention {
    type Err = candle_core::Error;

    /// Accepts `none`, `additive` (or `bahdanau`), `dot`, `general` (or `luong`), any case.
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(Attention::None),
            "additive" | "bahdanau" => Ok(Attention::Additive),
            "dot" => Ok(Attention::Dot),
            "general" | "luong" => Ok(Attention::General),
            other => Err(invalid(
                MODEL,
                format!("unknown attention '{other}': expected one of none|additive|dot|general"),
            )),
        }
    }
}

fn default_embedding_dim() -> usize {
    64
}
fn default_hidden_size() -> usize {
    128
}
fn default_layers() -> usize {
    1
}
fn default_mode() -> Mode {
    Mode::Lstm
}
fn default_bos() -> u32 {
    1
}
fn default_eos() -> u32 {
    2
}

/// Configuration of a [`Seq2Seq`]. Every field but the vocabulary sizes has a serde default
/// (the values of [`Seq2SeqConfig::new`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seq2SeqConfig {
    /// Source vocabulary size (ids `0..src_vocab`).
    pub src_vocab: usize,
    /// Target vocabulary size (ids `0..tgt_vocab`), the number of logits.
    pub tgt_vocab: usize,
    /// Embedding size of source and target tokens. Default 64.
    #[serde(default = "default_embedding_dim")]
    pub embedding_dim: usize,
    /// Hidden size of the decoder and of each encoder direction. Default 128.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// Stacked encoder layers. Default 1.
    #[serde(default = "default_layers")]
    pub encoder_layers: usize,
    /// Stacked decoder layers. Default 1.
    #[serde(default = "default_layers")]
    pub decoder_layers: usize,
    /// Cell of encoder and decoder. Default LSTM.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// Bidirectional encoder (its final states go through the learned bridge). Default false.
    #[serde(default)]
    pub bidirectional_encoder: bool,
    /// Attention kind. Default `general`.
    #[serde(default)]
    pub attention: Attention,
    /// Dropout on embeddings, between stacked RNN layers and before the output layer, in
    /// training only; in `[0, 1)`. Default 0.
    #[serde(default)]
    pub dropout: f64,
    /// Start-of-sequence id (target vocabulary). Default 1.
    #[serde(default = "default_bos")]
    pub bos_id: u32,
    /// End-of-sequence id (target vocabulary). Default 2.
    #[serde(default = "default_eos")]
    pub eos_id: u32,
    /// Padding id (both vocabularies). Default 0.
    #[serde(default)]
    pub pad_id: u32,
    /// Feed the previous attentional hidden into the decoder RNN (Luong input feeding; needs
    /// attention). Default false.
    #[serde(default)]
    pub input_feeding: bool,
}

impl Seq2SeqConfig {
    /// Defaults: embedding 64, hidden 128, one LSTM layer each side, unidirectional, `general`
    /// attention, no dropout, `pad = 0`, `bos = 1`, `eos = 2`, no input feeding.
    pub fn new(src_vocab: usize, tgt_vocab: usize) -> Self {
        Self {
            src_vocab,
            tgt_vocab,
            embedding_dim: default_embedding_dim(),
            hidden_size: default_hidden_size(),
            encoder_layers: 1,
            decoder_layers: 1,
            mode: default_mode(),
            bidirectional_encoder: false,
            attention: Attention::default(),
            dropout: 0.0,
            bos_id: default_bos(),
            eos_id: default_eos(),
            pad_id: 0,
            input_feeding: false,
        }
    }

    /// Features per encoder output step: `hidden_size`, doubled when bidirectional.
    pub fn memory_size(&self) -> usize {
        if self.bidirectional_encoder {
            2 * self.hidden_size
        } else {
            self.hidden_size
        }
    }

    /// Checks every field; the error names the field and the value at fault.
    pub fn validate(&self) -> Result<()> {
        let what = "Seq2SeqConfig";
        let positive = [
            ("src_vocab", self.src_vocab),
            ("tgt_vocab", self.tgt_vocab),
            ("embedding_dim", self.embedding_dim),
            ("hidden_size", self.hidden_size),
            ("encoder_layers", self.encoder_layers),
            ("decoder_layers", self.decoder_layers),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(invalid(what, format!("{name} must be > 0, got 0")));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(invalid(
                what,
                format!("dropout must be in [0, 1), got {}", self.dropout),
            ));
        }
        for (name, id) in [("bos_id", self.bos_id), ("eos_id", self.eos_id)] {
            if id as usize >= self.tgt_vocab {
                return Err(invalid(
                    what,
                    format!(
                        "{name} = {id} is outside the target vocabulary (tgt_vocab = {})",
                        self.tgt_vocab
                    ),
                ));
            }
        }
        let pad = self.pad_id as usize;
        if pad >= self.tgt_vocab || pad >= self.src_vocab {
            return Err(invalid(
                what,
                format!(
                    "pad_id = {pad} must be a valid id of both vocabularies (src_vocab = {}, tgt_vocab = {})",
                    self.src_vocab, self.tgt_vocab
                ),
            ));
        }
        if self.bos_id == self.eos_id {
            return Err(invalid(
                what,
                format!("bos_id and eos_id must differ, both are {}", self.bos_id),
            ));
        }
        if self.attention == Attention::Dot && self.bidirectional_encoder {
            return Err(invalid(
                what,
                format!(
                    "attention 'dot' needs queries (hidden_size = {}) and keys of the same size, but a bidirectional encoder gives keys of size {}; use 'general' or 'additive'",
                    self.hidden_size,
                    self.memory_size()
                ),
            ));
        }
        if self.input_feeding && self.attention == Attention::None {
            return Err(invalid(
                what,
                "input_feeding feeds the previous attentional hidden and needs attention; attention is 'none'",
            ));
        }
        Ok(())
    }
}

/// What [`Seq2Seq::forward`] returns.
#[derive(Debug, Clone)]
pub struct Seq2SeqOutput {
    /// `(batch, tgt_len, tgt_vocab)` unnormalised scores of the next token at every step.
    pub logits: Tensor,
    /// `(batch, tgt_len, src_len)` attention weights (each row sums to 1 over the valid source
    /// positions, 0 at padding); `None` without attention.
    pub attention: Option<Tensor>,
}

/// One decoded sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Generated tokens, without the start token and without the end token.
    pub tokens: Vec<u32>,
    /// Sum of the log-softmax of every generated token, the end token included if produced
    /// (natural log).
    pub log_prob: f64,
    /// `log_prob / length_penalty(steps, alpha)` (equals `log_prob` for greedy decoding).
    pub score: f64,
    /// Whether decoding stopped at the end token (false: stopped at `max_len`).
    pub finished: bool,
    /// Attention weights per decoding step over the sentence's valid source positions
    /// (`steps x src_len`, the end-token step included); empty without attention.
    pub attention: Vec<Vec<f32>>,
}

/// The GNMT length penalty `((5 + len) / 6)^alpha` (Wu et al. 2016); `alpha = 0` gives 1.
pub fn length_penalty(len: usize, alpha: f64) -> f64 {
    ((5.0 + len as f64) / 6.0).powf(alpha)
}

/// SplitMix64: derives independent seeds from one.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The encoder outputs prepared for attention (computed once per source batch).
#[derive(Debug, Clone)]
struct Memory {
    /// `(B, S, K)` encoder outputs (the attention values).
    values: Tensor,
    /// Dot / General: `(B, H, S)` keys, transposed for the score matmul; Additive: `(B, S, A)`
    /// projected keys; None: absent.
    keys: Option<Tensor>,
    /// `(B, 1, S)`: 0 at valid positions, -inf at padding.
    mask_bias: Tensor,
}

impl Memory {
    /// Rows `indices` of every tensor (e.g. each sentence repeated `beam` times).
    fn index_rows(&self, indices: &Tensor) -> Result<Self> {
        Ok(Self {
            values: self.values.index_select(indices, 0)?,
            keys: self
                .keys
                .as_ref()
                .map(|k| k.index_select(indices, 0))
                .transpose()?,
            mask_bias: self.mask_bias.index_select(indices, 0)?,
        })
    }
}

/// A live beam-search hypothesis.
#[derive(Debug, Clone)]
struct Live {
    tokens: Vec<u32>,
    log_prob: f64,
    attention: Vec<Vec<f32>>,
}

/// An RNN encoder-decoder with attention; see the [module docs](self).
#[derive(Debug)]
pub struct Seq2Seq {
    cfg: Seq2SeqConfig,
    src_embedding: Embedding,
    encoder: Rnn,
    bridge_h: Option<Linear>,
    bridge_c: Option<Linear>,
    tgt_embedding: Embedding,
    decoder: Rnn,
    att_query: Option<Linear>,
    att_key: Option<Linear>,
    att_v: Option<Linear>,
    combine: Option<Linear>,
    output: Linear,
    src_dropout: SeededDropout,
    tgt_dropout: SeededDropout,
    out_dropout: SeededDropout,
    tf_seed: u64,
    tf_calls: AtomicU64,
}

impl Clone for Seq2Seq {
    fn clone(&self) -> Self {
        Self {
            cfg: self.cfg.clone(),
            src_embedding: self.src_embedding.clone(),
            encoder: self.encoder.clone(),
            bridge_h: self.bridge_h.clone(),
            bridge_c: self.bridge_c.clone(),
            tgt_embedding: self.tgt_embedding.clone(),
            decoder: self.decoder.clone(),
            att_query: self.att_query.clone(),
            att_key: self.att_key.clone(),
            att_v: self.att_v.clone(),
            combine: self.combine.clone(),
            output: self.output.clone(),
            src_dropout: self.src_dropout.clone(),
            tgt_dropout: self.tgt_dropout.clone(),
            out_dropout: self.out_dropout.clone(),
            tf_seed: self.tf_seed,
            tf_calls: AtomicU64::new(self.tf_calls.load(Ordering::Relaxed)),
        }
    }
}

fn detach_linear(l: &Linear) -> Linear {
    Linear::new(l.weight().detach(), l.bias().map(|b| b.detach()))
}

fn detach_embedding(e: &Embedding) -> Embedding {
    let dim = e.embeddings().dim(1).unwrap_or(0);
    Embedding::new(e.embeddings().detach(), dim)
}

impl Seq2Seq {
    /// Builds the model, loading every parameter from `vb` (or creating it when `vb` is backed
    /// by a `VarMap`). Fails on an invalid config and on a missing or misshapen tensor.
    pub fn new(cfg: &Seq2SeqConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let (e, h) = (cfg.embedding_dim, cfg.hidden_size);
        let k = cfg.memory_size();
        let enc_vb = vb.pp("encoder");
        let dec_vb = vb.pp("decoder");
        let src_embedding = candle_nn::embedding(cfg.src_vocab, e, enc_vb.pp("embedding"))?;
        let encoder_cfg = RnnConfig::new(cfg.mode, e, h)
            .with_num_layers(cfg.encoder_layers)
            .with_bidirectional(cfg.bidirectional_encoder)
            .with_dropout(cfg.dropout);
        let encoder = Rnn::new(&encoder_cfg, enc_vb.pp("rnn"))?;
        let (bridge_h, bridge_c) = if cfg.bidirectional_encoder {
            let bh = candle_nn::linear(2 * h, h, vb.pp("bridge").pp("h"))?;
            let bc = if cfg.mode.has_cell_state() {
                Some(candle_nn::linear(2 * h, h, vb.pp("bridge").pp("c"))?)
            } else {
                None
            };
            (Some(bh), bc)
        } else {
            (None, None)
        };
        let tgt_embedding = candle_nn::embedding(cfg.tgt_vocab, e, dec_vb.pp("embedding"))?;
        let dec_input = if cfg.input_feeding { e + h } else { e };
        let decoder_cfg = RnnConfig::new(cfg.mode, dec_input, h)
            .with_num_layers(cfg.decoder_layers)
            .with_dropout(cfg.dropout);
        let decoder = Rnn::new(&decoder_cfg, dec_vb.pp("rnn"))?;
        let att_vb = vb.pp("attention");
        let (att_query, att_key, att_v) = match cfg.attention {
            Attention::None | Attention::Dot => (None, None, None),
            Attention::General => (
                None,
                Some(candle_nn::linear_no_bias(k, h, att_vb.pp("key"))?),
                None,
            ),
            Attention::Additive => (
                Some(candle_nn::linear_no_bias(h, h, att_vb.pp("query"))?),
                Some(candle_nn::linear(k, h, att_vb.pp("key"))?),
                Some(candle_nn::linear_no_bias(h, 1, att_vb.pp("v"))?),
            ),
        };
        let combine = if cfg.attention == Attention::None {
            None
        } else {
            Some(candle_nn::linear(k + h, h, dec_vb.pp("combine"))?)
        };
        let output = candle_nn::linear(h, cfg.tgt_vocab, dec_vb.pp("output"))?;
        Ok(Self {
            cfg: cfg.clone(),
            src_embedding,
            encoder,
            bridge_h,
            bridge_c,
            tgt_embedding,
            decoder,
            att_query,
            att_key,
            att_v,
            combine,
            output,
            src_dropout: SeededDropout::new(cfg.dropout, mix(0))?,
            tgt_dropout: SeededDropout::new(cfg.dropout, mix(1))?,
            out_dropout: SeededDropout::new(cfg.dropout, mix(2))?,
            tf_seed: mix(5),
            tf_calls: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Seq2SeqConfig {
        &self.cfg
    }

    /// The same model with every parameter cut from the autograd graph (for decoding).
    fn detached(&self) -> Self {
        let mut out = self.clone();
        out.src_embedding = detach_embedding(&self.src_embedding);
        out.tgt_embedding = detach_embedding(&self.tgt_embedding);
        out.encoder = self.encoder.detached();
        out.decoder = self.decoder.detached();
        for l in [
            &mut out.bridge_h,
            &mut out.bridge_c,
            &mut out.att_query,
            &mut out.att_key,
            &mut out.att_v,
            &mut out.combine,
        ]
        .into_iter()
        .flatten()
        {
            *l = detach_linear(l);
        }
        out.output = detach_linear(&self.output);
        out
    }

    fn dtype(&self) -> DType {
        self.output.weight().dtype()
    }

    /// Fails unless every id of `ids` is below `vocab`.
    fn check_vocab(&self, name: &str, ids: &Tensor, vocab: usize) -> Result<()> {
        if !value_checks_on(ids.device()) {
            return Ok(()); // reading the ids back would stall the device once per step
        }
        let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
        if max as usize >= vocab {
            return Err(invalid(
                MODEL,
                format!("`{name}` holds token id {max}, outside the vocabulary of {vocab} ids"),
            ));
        }
        Ok(())
    }

    /// Checks `src` and `src_lengths`; returns `(batch, src_len)`.
    fn check_src(&self, src: &Tensor, src_lengths: &[usize]) -> Result<(usize, usize)> {
        let (b, s) = check_ids(MODEL, "src", src)?;
        check_lengths(&format!("{MODEL} (src_lengths)"), src_lengths, b, s)?;
        if !src.device().same_device(self.output.weight().device()) {
            return Err(invalid(
                MODEL,
                format!(
                    "`src` is on {:?} but the model is on {:?}",
                    src.device().location(),
                    self.output.weight().device().location()
                ),
            ));
        }
        self.check_vocab("src", src, self.cfg.src_vocab)?;
        Ok((b, s))
    }

    /// Encoder: memory for attention and the bridged decoder initial state.
    fn encode(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        train: bool,
    ) -> Result<(Memory, RnnState)> {
        let (b, s) = src.dims2()?;
        let emb = self
            .src_dropout
            .forward(&self.src_embedding.forward(src)?, train)?;
        let (values, state) = self
            .encoder
            .forward_t(&emb, None, Some(src_lengths), train)?;
        let init = RnnState::new(
            self.bridge(&state.h, self.bridge_h.as_ref(), b)?,
            match &state.c {
                Some(c) => Some(self.bridge(c, self.bridge_c.as_ref(), b)?),
                None => None,
            },
        );
        let dev = src.device();
        let valid = length_mask(Some(src_lengths), b, s, DType::U8, dev)?;
        let zeros = Tensor::zeros((b, s), self.dtype(), dev)?;
        let neg_inf = Tensor::full(f32::NEG_INFINITY, (b, s), dev)?.to_dtype(self.dtype())?;
        let mask_bias = valid.where_cond(&zeros, &neg_inf)?.unsqueeze(1)?;
        let keys = match self.cfg.attention {
            Attention::None => None,
            Attention::Dot => Some(values.transpose(1, 2)?.contiguous()?),
            Attention::General => Some(
                self.linear(&self.att_key, &values)?
                    .transpose(1, 2)?
                    .contiguous()?,
            ),
            Attention::Additive => Some(self.linear(&self.att_key, &values)?),
        };
        Ok((
            Memory {
                values,
                keys,
                mask_bias,
            },
            init,
        ))
    }

    fn linear(&self, layer: &Option<Linear>, xs: &Tensor) -> Result<Tensor> {
        match layer {
            Some(l) => l.forward(xs),
            None => Err(invalid(
                MODEL,
                "internal error: a layer of this attention kind is missing",
            )),
        }
    }

    /// Maps one encoder state tensor `(enc_layers * dirs, B, H)` to the decoder's
    /// `(dec_layers, B, H)` (see the module docs).
    fn bridge(&self, t: &Tensor, lin: Option<&Linear>, batch: usize) -> Result<Tensor> {
        let (el, dl, h) = (
            self.cfg.encoder_layers,
            self.cfg.decoder_layers,
            self.cfg.hidden_size,
        );
        let t = match lin {
            Some(lin) if self.cfg.bidirectional_encoder => {
                let joined =
                    t.reshape((el, 2, batch, h))?
                        .transpose(1, 2)?
                        .reshape((el, batch, 2 * h))?;
                lin.forward(&joined)?.tanh()?
            }
            _ => t.clone(),
        };
        if el == dl {
            Ok(t)
        } else {
            t.get(el - 1)?
                .unsqueeze(0)?
                .broadcast_as((dl, batch, h))?
                .contiguous()
        }
    }

    /// Attention over `mem` for decoder outputs `ys (B, T, H)`: the attentional hidden
    /// `(B, T, H)` and the weights `(B, T, S)` (`ys` itself and `None` without attention).
    fn attend(&self, mem: &Memory, ys: &Tensor) -> Result<(Tensor, Option<Tensor>)> {
        let keys = match (&mem.keys, self.cfg.attention) {
            (_, Attention::None) | (None, _) => return Ok((ys.clone(), None)),
            (Some(k), _) => k,
        };
        let scores = match self.cfg.attention {
            Attention::Additive => {
                let (b, t, _) = ys.dims3()?;
                let (_, s, a) = keys.dims3()?;
                let q = self.linear(&self.att_query, ys)?; // (B, T, A)
                let e = q.unsqueeze(2)?.broadcast_add(&keys.unsqueeze(1)?)?.tanh()?; // (B, T, S, A)
                self.linear(&self.att_v, &e.reshape((b * t * s, a))?)?
                    .reshape((b, t, s))?
            }
            _ => ys.contiguous()?.matmul(keys)?, // (B, T, H) x (B, H, S)
        };
        let scores = scores.broadcast_add(&mem.mask_bias)?;
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = weights.matmul(&mem.values)?; // (B, T, K)
        let joined = Tensor::cat(&[&context, ys], 2)?;
        let hidden = self.linear(&self.combine, &joined)?.tanh()?;
        Ok((hidden, Some(weights)))
    }

    /// One decoder step for tokens `(B)`: attentional hidden `(B, 1, H)`, weights `(B, 1, S)`,
    /// new state.
    fn decode_step(
        &self,
        mem: &Memory,
        tokens: &Tensor,
        prev_hidden: Option<&Tensor>,
        state: &RnnState,
        train: bool,
    ) -> Result<(Tensor, Option<Tensor>, RnnState)> {
        let emb = self
            .tgt_dropout
            .forward(&self.tgt_embedding.forward(tokens)?, train)?;
        let x = match prev_hidden {
            Some(p) if self.cfg.input_feeding => Tensor::cat(&[&emb, p], 1)?,
            _ => emb,
        };
        let (y, state) = self
            .decoder
            .forward_t(&x.unsqueeze(1)?, Some(state), None, train)?;
        let (hidden, weights) = self.attend(mem, &y)?;
        Ok((hidden, weights, state))
    }

    fn logits(&self, hidden: &Tensor, train: bool) -> Result<Tensor> {
        self.output
            .forward(&self.out_dropout.forward(hidden, train)?)
    }

    /// Teacher-forced (or partly free-running) forward pass.
    ///
    /// - `src`: `(B, S)` u32 source ids, right-padded; `src_lengths[b]` in `1..=S`
    /// - `tgt_in`: `(B, T)` u32 decoder input, `[bos, y_1, .., y_{T-1}]` (see [`Seq2Seq::loss`],
    ///   which builds it from the gold target)
    /// - `train`: dropout on
    /// - `teacher_forcing_ratio` in `[0, 1]`, `seed`: see the [module docs](self)
    ///
    /// Returns logits `(B, T, tgt_vocab)` and the attention weights `(B, T, S)`.
    pub fn forward(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt_in: &Tensor,
        train: bool,
        teacher_forcing_ratio: f64,
        seed: u64,
    ) -> Result<Seq2SeqOutput> {
        self.forward_impl(
            src,
            src_lengths,
            tgt_in,
            train,
            teacher_forcing_ratio,
            seed,
            false,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn forward_impl(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt_in: &Tensor,
        train: bool,
        ratio: f64,
        seed: u64,
        force_steps: bool,
    ) -> Result<Seq2SeqOutput> {
        let (b, _) = self.check_src(src, src_lengths)?;
        let (bt, t) = check_ids(MODEL, "tgt_in", tgt_in)?;
        if bt != b {
            return Err(invalid(
                MODEL,
                format!(
                    "`tgt_in` has shape {:?} but `src` has shape {:?}: the batch sizes differ",
                    tgt_in.dims(),
                    src.dims()
                ),
            ));
        }
        self.check_vocab("tgt_in", tgt_in, self.cfg.tgt_vocab)?;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(invalid(
                MODEL,
                format!("`teacher_forcing_ratio` must be in [0, 1], got {ratio}"),
            ));
        }
        let (mem, init) = self.encode(src, src_lengths, train)?;
        if ratio >= 1.0 && !self.cfg.input_feeding && !force_steps {
            // The whole target at once: one decoder RNN call, one batched attention.
            let emb = self
                .tgt_dropout
                .forward(&self.tgt_embedding.forward(tgt_in)?, train)?;
            let (ys, _) = self.decoder.forward_t(&emb, Some(&init), None, train)?;
            let (hidden, attention) = self.attend(&mem, &ys)?;
            let logits = self.logits(&hidden, train)?;
            return Ok(Seq2SeqOutput { logits, attention });
        }
        let dev = src.device();
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut state = init;
        let mut prev_hidden = if self.cfg.input_feeding {
            Some(Tensor::zeros((b, self.cfg.hidden_size), self.dtype(), dev)?)
        } else {
            None
        };
        // The model's own predictions stay on the device (no host round trip per step); which
        // rows take the gold token is drawn on the host and uploaded.
        let mut predicted: Option<Tensor> = None;
        let mut all_logits = Vec::with_capacity(t);
        let mut all_weights = Vec::with_capacity(t);
        for step in 0..t {
            let gold_t = tgt_in.narrow(1, step, 1)?.squeeze(1)?.contiguous()?;
            let tokens = match &predicted {
                Some(pred) if step > 0 && ratio < 1.0 => {
                    let take_gold: Vec<u8> = (0..b)
                        .map(|_| u8::from(rng.random::<f64>() < ratio))
                        .collect();
                    Tensor::from_vec(take_gold, b, dev)?.where_cond(&gold_t, pred)?
                }
                _ => gold_t,
            };
            let (hidden, weights, new_state) =
                self.decode_step(&mem, &tokens, prev_hidden.as_ref(), &state, train)?;
            let logits = self.logits(&hidden, train)?; // (B, 1, V)
            if ratio < 1.0 && step + 1 < t {
                predicted = Some(logits.detach().squeeze(1)?.argmax(D::Minus1)?);
            }
            if self.cfg.input_feeding {
                prev_hidden = Some(hidden.squeeze(1)?);
            }
            state = new_state;
            all_logits.push(logits);
            if let Some(w) = weights {
                all_weights.push(w);
            }
        }
        let logits = Tensor::cat(&all_logits, 1)?;
        let attention = if all_weights.is_empty() {
            None
        } else {
            Some(Tensor::cat(&all_weights, 1)?)
        };
        Ok(Seq2SeqOutput { logits, attention })
    }

    /// Checks the gold target and its lengths; returns `(B, T)`.
    fn check_tgt(
        &self,
        tgt: &Tensor,
        tgt_lengths: &[usize],
        batch: usize,
    ) -> Result<(usize, usize)> {
        let (b, t) = check_ids(MODEL, "tgt", tgt)?;
        if b != batch {
            return Err(invalid(
                MODEL,
                format!(
                    "`tgt` has shape {:?} but the source batch has {batch} sentences",
                    tgt.dims()
                ),
            ));
        }
        check_lengths(&format!("{MODEL} (tgt_lengths)"), tgt_lengths, b, t)?;
        self.check_vocab("tgt", tgt, self.cfg.tgt_vocab)?;
        Ok((b, t))
    }

    /// `[bos, tgt[.., ..T-1]]`: the decoder input for the gold target `tgt (B, T)`.
    fn shift_right(&self, tgt: &Tensor) -> Result<Tensor> {
        let (b, t) = tgt.dims2()?;
        let bos = Tensor::full(self.cfg.bos_id, (b, 1), tgt.device())?;
        if t == 1 {
            Ok(bos)
        } else {
            Tensor::cat(&[&bos, &tgt.narrow(1, 0, t - 1)?], 1)
        }
    }

    /// Mean cross-entropy (nats per target token) of the gold target.
    ///
    /// - `tgt`: `(B, T)` u32 gold target **including** the end token, right-padded;
    ///   `tgt_lengths[b]` in `1..=T` counts the end token; padded steps are ignored
    /// - the decoder input is `[bos, tgt[.., ..T-1]]`; `teacher_forcing_ratio` as in
    ///   [`Seq2Seq::forward`], with the seed drawn from the model's own counter
    ///   ([`Stochastic`]) when the ratio is below 1
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt: &Tensor,
        tgt_lengths: &[usize],
        train: bool,
        teacher_forcing_ratio: f64,
    ) -> Result<Tensor> {
        let (b, _) = self.check_src(src, src_lengths)?;
        let (_, t) = self.check_tgt(tgt, tgt_lengths, b)?;
        let tgt_in = self.shift_right(tgt)?;
        let seed = if teacher_forcing_ratio < 1.0 {
            mix(self.tf_seed ^ mix(self.tf_calls.fetch_add(1, Ordering::Relaxed)))
        } else {
            0
        };
        let out = self.forward(
            src,
            src_lengths,
            &tgt_in,
            train,
            teacher_forcing_ratio,
            seed,
        )?;
        let mask = length_mask(Some(tgt_lengths), b, t, self.dtype(), src.device())?;
        masked_cross_entropy(&out.logits, tgt, Some(&mask))
    }

    /// The model's log-probability (natural log) of each gold target sentence: the sum over
    /// its valid steps of `log p(tgt_t | src, tgt_<t)`, in eval mode with full teacher forcing.
    /// Shapes as in [`Seq2Seq::loss`]; for a hypothesis that ended with the end token, pass
    /// its tokens followed by `eos_id`.
    pub fn sequence_log_probs(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        tgt: &Tensor,
        tgt_lengths: &[usize],
    ) -> Result<Vec<f64>> {
        let (b, _) = self.check_src(src, src_lengths)?;
        let (_, t) = self.check_tgt(tgt, tgt_lengths, b)?;
        let out = self.forward(src, src_lengths, &self.shift_right(tgt)?, false, 1.0, 0)?;
        let log_probs = candle_nn::ops::log_softmax(&out.logits.to_dtype(DType::F32)?, D::Minus1)?
            .gather(&tgt.unsqueeze(2)?, 2)?
            .squeeze(2)?
            .to_vec2::<f32>()?;
        Ok(log_probs
            .iter()
            .zip(tgt_lengths)
            .map(|(row, &len)| row[..len.min(t)].iter().map(|&v| v as f64).sum())
            .collect())
    }

    fn check_decode_args(
        &self,
        what: &str,
        src: &Tensor,
        src_lengths: &[usize],
        max_len: usize,
    ) -> Result<usize> {
        let (b, _) = self.check_src(src, src_lengths)?;
        if max_len == 0 {
            return Err(invalid(
                MODEL,
                format!("{what}: `max_len` must be >= 1, got 0"),
            ));
        }
        Ok(b)
    }

    /// Greedy decoding: at every step the most likely token (ties towards the lower id), until
    /// the end token or `max_len` steps. One [`Hypothesis`] per sentence (`score == log_prob`).
    pub fn greedy(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        max_len: usize,
    ) -> Result<Vec<Hypothesis>> {
        let b = self.check_decode_args("greedy", src, src_lengths, max_len)?;
        let model = self.detached();
        let (mem, mut state) = model.encode(src, src_lengths, false)?;
        let dev = src.device();
        let mut hyps: Vec<Hypothesis> = (0..b)
            .map(|_| Hypothesis {
                tokens: Vec::new(),
                log_prob: 0.0,
                score: 0.0,
                finished: false,
                attention: Vec::new(),
            })
            .collect();
        let mut tokens = vec![self.cfg.bos_id; b];
        let mut prev_hidden = if self.cfg.input_feeding {
            Some(Tensor::zeros((b, self.cfg.hidden_size), self.dtype(), dev)?)
        } else {
            None
        };
        for _ in 0..max_len {
            let input = Tensor::from_vec(tokens.clone(), b, dev)?;
            let (hidden, weights, new_state) =
                model.decode_step(&mem, &input, prev_hidden.as_ref(), &state, false)?;
            let log_probs = host_log_probs(&model.logits(&hidden, false)?)?;
            let weights = weights.map(|w| host_rows(&w)).transpose()?;
            for (row, hyp) in hyps.iter_mut().enumerate() {
                if hyp.finished {
                    continue;
                }
                let (best, lp) = argmax(&log_probs[row]);
                hyp.log_prob += lp as f64;
                if let Some(w) = &weights {
                    hyp.attention.push(w[row][..src_lengths[row]].to_vec());
                }
                if best == self.cfg.eos_id {
                    hyp.finished = true;
                } else {
                    hyp.tokens.push(best);
                }
                tokens[row] = best;
            }
            if hyps.iter().all(|h| h.finished) {
                break;
            }
            state = new_state;
            if self.cfg.input_feeding {
                prev_hidden = Some(hidden.squeeze(1)?);
            }
        }
        for h in &mut hyps {
            h.score = h.log_prob;
        }
        Ok(hyps)
    }

    /// Beam search with `beam` hypotheses per sentence, batched over the batch, GNMT length
    /// penalty `alpha = length_penalty` (0 = none), at most `max_len` steps (see the
    /// [module docs](self) for the exact rules). One [`Hypothesis`] per sentence: the
    /// best-scoring one. `beam == 1` equals [`Seq2Seq::greedy`].
    pub fn beam_search(
        &self,
        src: &Tensor,
        src_lengths: &[usize],
        beam: usize,
        length_penalty: f64,
        max_len: usize,
    ) -> Result<Vec<Hypothesis>> {
        let b = self.check_decode_args("beam_search", src, src_lengths, max_len)?;
        if beam == 0 {
            return Err(invalid(MODEL, "beam_search: `beam` must be >= 1, got 0"));
        }
        if !length_penalty.is_finite() {
            return Err(invalid(
                MODEL,
                format!("beam_search: `length_penalty` must be finite, got {length_penalty}"),
            ));
        }
        let alpha = length_penalty;
        let k = beam;
        let rows = b * k;
        let dev = src.device();
        let model = self.detached();
        let (mem, state) = model.encode(src, src_lengths, false)?;
        let repeat: Vec<u32> = (0..rows).map(|r| (r / k) as u32).collect();
        let repeat = Tensor::from_vec(repeat, rows, dev)?;
        let mem = mem.index_rows(&repeat)?;
        let mut state = state.index_select(&repeat, 1)?;
        let mut prev_hidden = if self.cfg.input_feeding {
            Some(Tensor::zeros(
                (rows, self.cfg.hidden_size),
                self.dtype(),
                dev,
            )?)
        } else {
            None
        };
        // Row r = sentence r / k, beam r % k; only beam 0 of each sentence is live at first.
        let mut live: Vec<Option<Live>> = (0..rows)
            .map(|r| {
                (r % k == 0).then(|| Live {
                    tokens: Vec::new(),
                    log_prob: 0.0,
                    attention: Vec::new(),
                })
            })
            .collect();
        let mut tokens = vec![self.cfg.bos_id; rows];
        let mut finished: Vec<Vec<Hypothesis>> = vec![Vec::new(); b];
        let mut done = vec![false; b];
        let eos = self.cfg.eos_id;
        let finish = |l: &Live, extra_lp: f64, with_eos: bool, extra_att: Option<Vec<f32>>| {
            let mut attention = l.attention.clone();
            attention.extend(extra_att);
            let log_prob = l.log_prob + extra_lp;
            let steps = l.tokens.len() + usize::from(with_eos);
            Hypothesis {
                tokens: l.tokens.clone(),
                log_prob,
                score: log_prob / self::length_penalty(steps, alpha),
                finished: with_eos,
                attention,
            }
        };
        for step in 0..max_len {
            let input = Tensor::from_vec(tokens.clone(), rows, dev)?;
            let (hidden, weights, new_state) =
                model.decode_step(&mem, &input, prev_hidden.as_ref(), &state, false)?;
            let log_probs = host_log_probs(&model.logits(&hidden, false)?)?;
            let weights = weights.map(|w| host_rows(&w)).transpose()?;
            let last_step = step + 1 == max_len;
            let mut sources: Vec<u32> = (0..rows as u32).collect();
            let mut next_live: Vec<Option<Live>> = vec![None; rows];
            for s in 0..b {
                if done[s] {
                    continue;
                }
                let att_of =
                    |row: usize| weights.as_ref().map(|w| w[row][..src_lengths[s]].to_vec());
                // (score, beam, token) of every continuation of every live beam.
                let mut cands: Vec<(f64, usize, usize)> = Vec::new();
                for j in 0..k {
                    if let Some(l) = &live[s * k + j] {
                        for (v, &lp) in log_probs[s * k + j].iter().enumerate() {
                            let score = l.log_prob + lp as f64;
                            if score.is_finite() {
                                cands.push((score, j, v));
                            }
                        }
                    }
                }
                let by_rank = |a: &(f64, usize, usize), c: &(f64, usize, usize)| -> CmpOrdering {
                    c.0.total_cmp(&a.0).then(a.1.cmp(&c.1)).then(a.2.cmp(&c.2))
                };
                let top = (2 * k).min(cands.len());
                if top < cands.len() {
                    cands.select_nth_unstable_by(top, by_rank);
                    cands.truncate(top);
                }
                cands.sort_by(by_rank);
                let mut kept: Vec<(usize, u32, f64)> = Vec::with_capacity(k);
                for (rank, &(score, j, v)) in cands.iter().enumerate() {
                    let row = s * k + j;
                    let Some(l) = &live[row] else { continue };
                    if v as u32 == eos {
                        if rank < k {
                            finished[s].push(finish(l, score - l.log_prob, true, att_of(row)));
                        }
                    } else if kept.len() < k {
                        kept.push((j, v as u32, score));
                    }
                }
                if finished[s].len() >= k || kept.is_empty() {
                    done[s] = true;
                    continue;
                }
                for (slot, &(j, v, score)) in kept.iter().enumerate() {
                    let row = s * k + j;
                    let Some(l) = &live[row] else { continue };
                    let mut next = l.clone();
                    next.tokens.push(v);
                    next.log_prob = score;
                    next.attention.extend(att_of(row));
                    let new_row = s * k + slot;
                    sources[new_row] = row as u32;
                    tokens[new_row] = v;
                    if last_step {
                        finished[s].push(finish(&next, 0.0, false, None));
                    } else {
                        next_live[new_row] = Some(next);
                    }
                }
                if last_step {
                    done[s] = true;
                }
            }
            live = next_live;
            if done.iter().all(|&d| d) {
                break;
            }
            let sources = Tensor::from_vec(sources, rows, dev)?;
            state = new_state.index_select(&sources, 1)?;
            if self.cfg.input_feeding {
                prev_hidden = Some(hidden.squeeze(1)?.index_select(&sources, 0)?);
            }
        }
        finished
            .into_iter()
            .enumerate()
            .map(|(s, hyps)| {
                let mut best: Option<Hypothesis> = None;
                for h in hyps {
                    if best.as_ref().is_none_or(|b| h.score > b.score) {
                        best = Some(h);
                    }
                }
                best.ok_or_else(|| {
                    invalid(MODEL, format!("beam_search: no hypothesis for sentence {s} (all continuations had probability 0)"))
                })
            })
            .collect()
    }
}

/// `(rows, 1, V)` logits -> per-row log-softmax on the host, f32.
fn host_log_probs(logits: &Tensor) -> Result<Vec<Vec<f32>>> {
    candle_nn::ops::log_softmax(&logits.squeeze(1)?.to_dtype(DType::F32)?, D::Minus1)?
        .to_vec2::<f32>()
}

/// `(rows, 1, S)` -> host rows, f32.
fn host_rows(t: &Tensor) -> Result<Vec<Vec<f32>>> {
    t.squeeze(1)?.to_dtype(DType::F32)?.to_vec2::<f32>()
}

/// Index and value of the largest entry (the first one on ties; NaN never wins).
fn argmax(row: &[f32]) -> (u32, f32) {
    let mut best = (0usize, f32::NEG_INFINITY);
    for (i, &v) in row.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    (best.0 as u32, best.1)
}

impl Stochastic for Seq2Seq {
    /// Reseeds the embedding / output dropouts, both RNNs' inter-layer dropout and the
    /// teacher-forcing draws of [`Seq2Seq::loss`].
    fn set_seed(&mut self, seed: u64) {
        let derive = |i: u64| mix(seed ^ mix(i));
        self.src_dropout.set_seed(derive(0));
        self.tgt_dropout.set_seed(derive(1));
        self.out_dropout.set_seed(derive(2));
        self.encoder = self.encoder.set_dropout_seed(derive(3));
        self.decoder = self.decoder.set_dropout_seed(derive(4));
        self.tf_seed = derive(5);
        self.tf_calls.store(0, Ordering::Relaxed);
    }

    /// `[src dropout, tgt dropout, output dropout, encoder RNN, decoder RNN, teacher forcing]`.
    fn rng_counters(&self) -> Vec<u64> {
        vec![
            self.src_dropout.calls(),
            self.tgt_dropout.calls(),
            self.out_dropout.calls(),
            self.encoder.dropout_calls(),
            self.decoder.dropout_calls(),
            self.tf_calls.load(Ordering::Relaxed),
        ]
    }

    fn set_rng_counters(&self, counters: &[u64]) -> Result<()> {
        check_counters(MODEL, counters, 6)?;
        self.src_dropout.set_calls(counters[0]);
        self.tgt_dropout.set_calls(counters[1]);
        self.out_dropout.set_calls(counters[2]);
        self.encoder.set_dropout_calls(counters[3]);
        self.decoder.set_dropout_calls(counters[4]);
        self.tf_calls.store(counters[5], Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
    use rnn_core::init::seeded_var_builder;
    use std::collections::HashSet;
    use std::time::Instant;

    fn build(cfg: &Seq2SeqConfig, seed: u64) -> (VarMap, Seq2Seq) {
        let varmap = VarMap::new();
        let model = Seq2Seq::new(
            cfg,
            seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu),
        )
        .unwrap();
        (varmap, model)
    }

    fn small(mode: Mode, attention: Attention, bidirectional: bool) -> Seq2SeqConfig {
        Seq2SeqConfig {
            embedding_dim: 6,
            hidden_size: 8,
            mode,
            attention,
            bidirectional_encoder: bidirectional,
            ..Seq2SeqConfig::new(9, 10)
        }
    }

    /// Right-pads `seqs` with 0 into a `(B, max_len)` u32 tensor.
    fn pad(seqs: &[Vec<u32>]) -> (Tensor, Vec<usize>) {
        let max = seqs.iter().map(Vec::len).max().unwrap();
        let flat: Vec<u32> = seqs
            .iter()
            .flat_map(|s| s.iter().copied().chain(std::iter::repeat(0)).take(max))
            .collect();
        (
            Tensor::from_vec(flat, (seqs.len(), max), &Device::Cpu).unwrap(),
            seqs.iter().map(Vec::len).collect(),
        )
    }

    /// Three sentences: source lengths 5, 3, 1; gold targets (with eos = 2) of lengths 4, 2, 3.
    fn batch() -> (Tensor, Vec<usize>, Tensor, Vec<usize>) {
        let (src, sl) = pad(&[vec![3, 4, 5, 6, 7], vec![8, 3, 4], vec![5]]);
        let (tgt, tl) = pad(&[vec![7, 6, 5, 2], vec![4, 2], vec![9, 3, 2]]);
        (src, sl, tgt, tl)
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        a.sub(b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    fn scalar(t: &Tensor) -> f32 {
        t.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn attention_parses_and_config_validates() {
        for a in Attention::ALL {
            assert_eq!(a.as_str().parse::<Attention>().unwrap(), a);
            assert_eq!(a.to_string(), a.as_str());
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{}\"", a.as_str()));
        }
        assert_eq!(
            "Bahdanau".parse::<Attention>().unwrap(),
            Attention::Additive
        );
        let err = "cosine".parse::<Attention>().unwrap_err().to_string();
        assert!(
            err.contains("cosine") && err.contains("none|additive|dot|general"),
            "{err}"
        );

        let cfg: Seq2SeqConfig =
            serde_json::from_str(r#"{"src_vocab": 9, "tgt_vocab": 10, "attention": "additive"}"#)
                .unwrap();
        assert_eq!(
            cfg,
            Seq2SeqConfig {
                attention: Attention::Additive,
                ..Seq2SeqConfig::new(9, 10)
            }
        );
        let back: Seq2SeqConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        cfg.validate().unwrap();

        let ok = small(Mode::Lstm, Attention::General, false);
        let cases = [
            (
                Seq2SeqConfig {
                    src_vocab: 0,
                    ..ok.clone()
                },
                "src_vocab",
            ),
            (
                Seq2SeqConfig {
                    hidden_size: 0,
                    ..ok.clone()
                },
                "hidden_size",
            ),
            (
                Seq2SeqConfig {
                    decoder_layers: 0,
                    ..ok.clone()
                },
                "decoder_layers",
            ),
            (
                Seq2SeqConfig {
                    dropout: 1.0,
                    ..ok.clone()
                },
                "dropout",
            ),
            (
                Seq2SeqConfig {
                    eos_id: 10,
                    ..ok.clone()
                },
                "eos_id",
            ),
            (
                Seq2SeqConfig {
                    pad_id: 9,
                    ..ok.clone()
                },
                "pad_id",
            ),
            (
                Seq2SeqConfig {
                    bos_id: 2,
                    ..ok.clone()
                },
                "bos_id and eos_id",
            ),
            (small(Mode::Lstm, Attention::Dot, true), "'dot'"),
            (
                Seq2SeqConfig {
                    input_feeding: true,
                    ..small(Mode::Gru, Attention::None, false)
                },
                "input_feeding",
            ),
        ];
        for (cfg, needle) in cases {
            let err = cfg.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
            let varmap = VarMap::new();
            assert!(Seq2Seq::new(
                &cfg,
                seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu)
            )
            .is_err());
        }
    }

    /// Every attention kind, bidirectional on/off, LSTM and GRU, and unequal layer counts with
    /// input feeding: output shapes, a finite loss and a gradient for every parameter.
    #[test]
    fn shapes_and_gradients_for_every_variant() {
        let (src, sl, tgt, tl) = batch();
        let mut cfgs = Vec::new();
        for mode in [Mode::Lstm, Mode::Gru] {
            for bidirectional in [false, true] {
                for attention in Attention::ALL {
                    if attention == Attention::Dot && bidirectional {
                        continue; // rejected by validate (tested above)
                    }
                    cfgs.push(small(mode, attention, bidirectional));
                }
            }
        }
        cfgs.push(Seq2SeqConfig {
            encoder_layers: 2,
            decoder_layers: 3,
            input_feeding: true,
            ..small(Mode::Lstm, Attention::Additive, true)
        });
        cfgs.push(Seq2SeqConfig {
            encoder_layers: 3,
            decoder_layers: 2,
            input_feeding: true,
            ..small(Mode::RnnTanh, Attention::Dot, false)
        });
        cfgs.push(Seq2SeqConfig {
            encoder_layers: 2,
            decoder_layers: 2,
            dropout: 0.2,
            ..small(Mode::Gru, Attention::General, true)
        });
        for cfg in cfgs {
            let label = format!("{cfg:?}");
            let (varmap, model) = build(&cfg, 3);
            let tgt_in = model.shift_right(&tgt).unwrap();
            let out = model.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
            assert_eq!(out.logits.dims(), &[3, 4, 10], "{label}");
            match cfg.attention {
                Attention::None => assert!(out.attention.is_none(), "{label}"),
                _ => assert_eq!(out.attention.unwrap().dims(), &[3, 4, 5], "{label}"),
            }
            for ratio in [1.0, 0.5] {
                let loss = model.loss(&src, &sl, &tgt, &tl, true, ratio).unwrap();
                assert_eq!(loss.rank(), 0);
                assert!(scalar(&loss).is_finite(), "{label}");
                let grads = loss.backward().unwrap();
                let data = varmap.data().lock().unwrap();
                for (name, var) in data.iter() {
                    let g = grads.get(var.as_tensor());
                    assert!(g.is_some(), "{label}: no gradient for {name}");
                }
            }
            let hyps = model.greedy(&src, &sl, 6).unwrap();
            assert_eq!(hyps.len(), 3);
            for (h, &len) in hyps.iter().zip(&sl) {
                assert!(h.tokens.len() <= 6);
                let steps = h.tokens.len() + usize::from(h.finished);
                if cfg.attention == Attention::None {
                    assert!(h.attention.is_empty());
                } else {
                    assert_eq!(h.attention.len(), steps, "{label}");
                    assert!(h.attention.iter().all(|r| r.len() == len), "{label}");
                }
            }
        }
    }

    #[test]
    fn parameter_names() {
        let cfg = Seq2SeqConfig {
            encoder_layers: 2,
            ..small(Mode::Lstm, Attention::Additive, true)
        };
        let (varmap, _) = build(&cfg, 0);
        let data = varmap.data().lock().unwrap();
        let shape = |n: &str| {
            data.get(n)
                .unwrap_or_else(|| panic!("missing {n}"))
                .as_tensor()
                .dims()
                .to_vec()
        };
        assert_eq!(shape("encoder.embedding.weight"), [9, 6]);
        assert_eq!(shape("encoder.rnn.weight_ih_l0"), [32, 6]);
        assert_eq!(shape("encoder.rnn.weight_ih_l1_reverse"), [32, 16]);
        assert_eq!(shape("bridge.h.weight"), [8, 16]);
        assert_eq!(shape("bridge.c.bias"), [8]);
        assert_eq!(shape("decoder.embedding.weight"), [10, 6]);
        assert_eq!(shape("decoder.rnn.weight_hh_l0"), [32, 8]);
        assert_eq!(shape("attention.query.weight"), [8, 8]);
        assert_eq!(shape("attention.key.weight"), [8, 16]);
        assert_eq!(shape("attention.key.bias"), [8]);
        assert_eq!(shape("attention.v.weight"), [1, 8]);
        assert_eq!(shape("decoder.combine.weight"), [8, 24]);
        assert_eq!(shape("decoder.output.weight"), [10, 8]);
        assert_eq!(shape("decoder.output.bias"), [10]);
        drop(data);
        let (varmap, _) = build(&small(Mode::Gru, Attention::General, false), 0);
        let data = varmap.data().lock().unwrap();
        assert_eq!(data.get("attention.key.weight").unwrap().dims(), [8, 8]);
        assert!(!data.keys().any(|k| k.starts_with("bridge")));
    }

    /// The whole-sequence fast path equals the step-by-step decoder.
    #[test]
    fn fast_path_equals_step_by_step() {
        let (src, sl, tgt, _) = batch();
        for cfg in [
            small(Mode::Lstm, Attention::Additive, true),
            Seq2SeqConfig {
                decoder_layers: 2,
                ..small(Mode::Gru, Attention::General, false)
            },
            small(Mode::RnnRelu, Attention::Dot, false),
            small(Mode::Lstm, Attention::None, true),
        ] {
            let (_, model) = build(&cfg, 5);
            let tgt_in = model.shift_right(&tgt).unwrap();
            let fast = model
                .forward_impl(&src, &sl, &tgt_in, false, 1.0, 0, false)
                .unwrap();
            let steps = model
                .forward_impl(&src, &sl, &tgt_in, false, 1.0, 0, true)
                .unwrap();
            let d = max_abs_diff(&fast.logits, &steps.logits);
            assert!(d < 1e-5, "{cfg:?}: {d}");
            if let (Some(a), Some(b)) = (&fast.attention, &steps.attention) {
                assert!(max_abs_diff(a, b) < 1e-6);
            }
        }
    }

    #[test]
    fn teacher_forcing_is_seeded_and_ratio_zero_is_greedy() {
        let (src, sl, tgt, _) = batch();
        let cfg = Seq2SeqConfig {
            input_feeding: true,
            ..small(Mode::Gru, Attention::General, true)
        };
        let (_, model) = build(&cfg, 11);
        let tgt_in = model.shift_right(&tgt).unwrap();
        let a = model.forward(&src, &sl, &tgt_in, false, 0.5, 42).unwrap();
        let b = model.forward(&src, &sl, &tgt_in, false, 0.5, 42).unwrap();
        assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0);
        // Free running (ratio 0): every step reads the previous argmax, i.e. greedy decoding.
        let free = model.forward(&src, &sl, &tgt_in, false, 0.0, 1).unwrap();
        let predicted = free
            .logits
            .argmax(D::Minus1)
            .unwrap()
            .to_vec2::<u32>()
            .unwrap();
        let greedy = model.greedy(&src, &sl, 4).unwrap();
        for (row, h) in predicted.iter().zip(&greedy) {
            let n = h.tokens.len();
            assert_eq!(&row[..n], &h.tokens[..], "{row:?} vs {h:?}");
            if h.finished && n < 4 {
                assert_eq!(row[n], cfg.eos_id);
            }
        }
        let gold = model.forward(&src, &sl, &tgt_in, false, 1.0, 1).unwrap();
        assert!(max_abs_diff(&gold.logits, &free.logits) > 1e-4);
    }

    /// Padded source positions change neither logits nor loss; attention is exactly 0 there.
    #[test]
    fn padding_is_masked() {
        let (src, sl, tgt, tl) = batch();
        // Same valid prefixes, different ids in the padding.
        let (src2, _) = pad(&[
            vec![3, 4, 5, 6, 7],
            vec![8, 3, 4, 7, 7],
            vec![5, 1, 8, 2, 3],
        ]);
        for cfg in [
            small(Mode::Lstm, Attention::Additive, true),
            small(Mode::Gru, Attention::Dot, false),
            small(Mode::Gru, Attention::General, true),
        ] {
            let (_, model) = build(&cfg, 2);
            let tgt_in = model.shift_right(&tgt).unwrap();
            let a = model.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
            let b = model.forward(&src2, &sl, &tgt_in, false, 1.0, 0).unwrap();
            assert_eq!(max_abs_diff(&a.logits, &b.logits), 0.0, "{cfg:?}");
            let la = scalar(&model.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap());
            let lb = scalar(&model.loss(&src2, &sl, &tgt, &tl, false, 1.0).unwrap());
            assert_eq!(la, lb);
            let att = a.attention.unwrap().to_vec3::<f32>().unwrap();
            for (rows, &len) in att.iter().zip(&sl) {
                for row in rows {
                    let sum: f32 = row[..len].iter().sum();
                    assert!((sum - 1.0).abs() < 1e-5, "{row:?}");
                    assert!(row[len..].iter().all(|&w| w == 0.0), "{row:?}");
                }
            }
            // Padded target steps do not count in the loss.
            let mut t = tgt.to_vec2::<u32>().unwrap();
            t[1][3] = 9;
            t[2][3] = 5;
            let tgt2 = Tensor::new(t, &Device::Cpu).unwrap();
            let lc = scalar(&model.loss(&src, &sl, &tgt2, &tl, false, 1.0).unwrap());
            assert_eq!(la, lc);
        }
    }

    /// A bigram decoder set by hand (attention none, W_hh = 0): from bos, `a` (p .6) beats `b`
    /// (p .4), but after `a` the end has p .4 while after `b` it has p .95: greedy finds
    /// `a </s>` (.24), a beam of 2 finds `b </s>` (.38).
    #[test]
    fn wider_beam_escapes_the_greedy_trap() {
        let cfg = Seq2SeqConfig {
            embedding_dim: 5,
            hidden_size: 5,
            mode: Mode::RnnTanh,
            attention: Attention::None,
            ..Seq2SeqConfig::new(5, 5)
        };
        let (mut varmap, model) = build(&cfg, 0);
        let dev = Device::Cpu;
        let eye = Tensor::eye(5, DType::F32, &dev).unwrap();
        let eps = 1e-6f64;
        // P[prev][next], ids: 0 pad, 1 bos, 2 eos, 3 a, 4 b.
        let table = [
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [eps, eps, eps, 0.6, 0.4],
            [0.2, 0.2, 0.2, 0.2, 0.2],
            [eps, eps, 0.4, 0.3, 0.3],
            [eps, eps, 0.95, 0.025, 0.025],
        ];
        let gain = 3f64.tanh();
        let mut w = vec![0f32; 25];
        for (prev, row) in table.iter().enumerate() {
            let total: f64 = row.iter().sum();
            for (next, p) in row.iter().enumerate() {
                w[next * 5 + prev] = ((p / total).ln() / gain) as f32;
            }
        }
        let set = |varmap: &mut VarMap, name: &str, t: Tensor| varmap.set_one(name, t).unwrap();
        set(
            &mut varmap,
            "decoder.embedding.weight",
            (&eye * 3.0).unwrap(),
        );
        set(&mut varmap, "decoder.rnn.weight_ih_l0", eye.clone());
        set(
            &mut varmap,
            "decoder.rnn.weight_hh_l0",
            eye.zeros_like().unwrap(),
        );
        let zeros = Tensor::zeros(5, DType::F32, &dev).unwrap();
        for name in [
            "decoder.rnn.bias_ih_l0",
            "decoder.rnn.bias_hh_l0",
            "decoder.output.bias",
        ] {
            set(&mut varmap, name, zeros.clone());
        }
        set(
            &mut varmap,
            "decoder.output.weight",
            Tensor::from_vec(w, (5, 5), &dev).unwrap(),
        );
        let (src, sl) = pad(&[vec![3, 4], vec![4]]);
        let greedy = model.greedy(&src, &sl, 5).unwrap();
        let beam = model.beam_search(&src, &sl, 2, 0.0, 5).unwrap();
        for (g, b) in greedy.iter().zip(&beam) {
            assert_eq!(g.tokens, vec![3]);
            assert!((g.log_prob - 0.24f64.ln()).abs() < 1e-4, "{g:?}");
            assert_eq!(b.tokens, vec![4]);
            assert!((b.log_prob - 0.38f64.ln()).abs() < 1e-4, "{b:?}");
            assert!(b.finished && g.finished && b.log_prob > g.log_prob + 0.4);
            assert_eq!(b.score, b.log_prob);
        }
        // The beam's log-probability is the model's own score of that sequence.
        let (tgt, tl) = pad(&[vec![4, 2], vec![4, 2]]);
        let scored = model.sequence_log_probs(&src, &sl, &tgt, &tl).unwrap();
        for (s, b) in scored.iter().zip(&beam) {
            assert!((s - b.log_prob).abs() < 1e-5, "{s} vs {}", b.log_prob);
        }
        // Beam 1 is greedy.
        assert_eq!(model.beam_search(&src, &sl, 1, 0.0, 5).unwrap(), greedy);
    }

    fn random_batch(seed: u64, n: usize) -> (Tensor, Vec<usize>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let seqs: Vec<Vec<u32>> = (0..n)
            .map(|_| {
                let len = rng.random_range(1..=6);
                (0..len).map(|_| rng.random_range(3..9u32)).collect()
            })
            .collect();
        pad(&seqs)
    }

    /// A random model with output bias `eos_bias` on the end token (0 elsewhere).
    fn model_with_eos_bias(cfg: &Seq2SeqConfig, seed: u64, eos_bias: f32) -> (VarMap, Seq2Seq) {
        let (mut varmap, model) = build(cfg, seed);
        let mut bias = vec![0f32; cfg.tgt_vocab];
        bias[cfg.eos_id as usize] = eos_bias;
        varmap
            .set_one(
                "decoder.output.bias",
                Tensor::new(bias, &Device::Cpu).unwrap(),
            )
            .unwrap();
        (varmap, model)
    }

    #[test]
    fn beam_one_equals_greedy_and_log_probs_match_the_model() {
        let (src, sl) = random_batch(3, 6);
        for cfg in [
            Seq2SeqConfig {
                input_feeding: true,
                ..small(Mode::Lstm, Attention::Additive, true)
            },
            small(Mode::Gru, Attention::Dot, false),
            Seq2SeqConfig {
                decoder_layers: 2,
                ..small(Mode::Gru, Attention::None, true)
            },
        ] {
            for eos_bias in [0.6, -2.0] {
                // 0.6: many hypotheses end early; -2: many run to max_len.
                let (_, model) = model_with_eos_bias(&cfg, 4, eos_bias);
                let greedy = model.greedy(&src, &sl, 7).unwrap();
                let beam1 = model.beam_search(&src, &sl, 1, 0.8, 7).unwrap();
                for (g, b) in greedy.iter().zip(&beam1) {
                    assert_eq!(g.tokens, b.tokens);
                    assert_eq!(g.finished, b.finished);
                    assert!((g.log_prob - b.log_prob).abs() < 1e-5);
                    assert_eq!(g.attention, b.attention);
                }
                let beam = model.beam_search(&src, &sl, 4, 0.6, 7).unwrap();
                if eos_bias > 0.0 {
                    assert!(beam.iter().any(|h| h.finished), "{beam:?}");
                } else {
                    assert!(beam.iter().any(|h| h.tokens.len() > 1), "{beam:?}");
                }
                let seqs: Vec<Vec<u32>> = beam
                    .iter()
                    .map(|h| {
                        let mut t = h.tokens.clone();
                        if h.finished {
                            t.push(cfg.eos_id);
                        }
                        t
                    })
                    .collect();
                let (tgt, tl) = pad(&seqs);
                let scored = model.sequence_log_probs(&src, &sl, &tgt, &tl).unwrap();
                for ((h, s), len) in beam.iter().zip(&scored).zip(&tl) {
                    assert!((h.log_prob - s).abs() < 1e-4, "{h:?} vs {s}");
                    let expected = h.log_prob / length_penalty(*len, 0.6);
                    assert!((h.score - expected).abs() < 1e-9);
                }
            }
        }
    }

    #[test]
    fn batched_beam_search_equals_one_sentence_at_a_time() {
        let (src, sl) = random_batch(9, 5);
        let cfg = Seq2SeqConfig {
            input_feeding: true,
            ..small(Mode::Lstm, Attention::General, true)
        };
        let mut seen = (false, false);
        for eos_bias in [0.6, -1.0] {
            let (_, model) = model_with_eos_bias(&cfg, 8, eos_bias);
            let batched = model.beam_search(&src, &sl, 3, 0.6, 8).unwrap();
            seen.0 |= batched.iter().any(|h| h.finished);
            seen.1 |= batched.iter().any(|h| !h.finished);
            for (i, h) in batched.iter().enumerate() {
                let one = src.narrow(0, i, 1).unwrap().narrow(1, 0, sl[i]).unwrap();
                let single = model.beam_search(&one, &sl[i..=i], 3, 0.6, 8).unwrap();
                assert_eq!(single[0].tokens, h.tokens, "sentence {i}");
                assert_eq!(single[0].finished, h.finished);
                assert!((single[0].log_prob - h.log_prob).abs() < 1e-5);
                assert!((single[0].score - h.score).abs() < 1e-5);
                for (a, b) in single[0].attention.iter().zip(&h.attention) {
                    assert_eq!(a.len(), b.len());
                    assert!(a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5));
                }
            }
        }
        // Hypotheses that stopped at the end token and at max_len were both compared.
        assert_eq!(seen, (true, true));
    }

    #[test]
    fn save_load_round_trip() {
        let (src, sl, tgt, tl) = batch();
        let cfg = Seq2SeqConfig {
            input_feeding: true,
            ..small(Mode::Lstm, Attention::Additive, true)
        };
        let (varmap, model) = build(&cfg, 21);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        varmap.save(&path).unwrap();
        let (mut varmap2, model2) = build(&cfg, 99);
        let tgt_in = model.shift_right(&tgt).unwrap();
        let before = model2.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
        let reference = model.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
        assert!(max_abs_diff(&before.logits, &reference.logits) > 1e-3);
        varmap2.load(&path).unwrap();
        let after = model2.forward(&src, &sl, &tgt_in, false, 1.0, 0).unwrap();
        assert_eq!(max_abs_diff(&after.logits, &reference.logits), 0.0);
        assert_eq!(
            scalar(&model.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap()),
            scalar(&model2.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap())
        );
        assert_eq!(
            model.beam_search(&src, &sl, 3, 0.6, 6).unwrap(),
            model2.beam_search(&src, &sl, 3, 0.6, 6).unwrap()
        );
    }

    #[test]
    fn dropout_and_teacher_forcing_are_resumable() {
        let (src, sl, tgt, tl) = batch();
        let cfg = Seq2SeqConfig {
            dropout: 0.3,
            encoder_layers: 2,
            decoder_layers: 2,
            ..small(Mode::Gru, Attention::General, true)
        };
        let (_, mut a) = build(&cfg, 1);
        let (_, mut b) = build(&cfg, 1);
        a.set_seed(7);
        b.set_seed(7);
        let first = scalar(&a.loss(&src, &sl, &tgt, &tl, true, 0.5).unwrap());
        assert_eq!(
            first,
            scalar(&b.loss(&src, &sl, &tgt, &tl, true, 0.5).unwrap())
        );
        let counters = a.rng_counters();
        assert_eq!(counters.len(), 6);
        assert!(counters.iter().all(|&c| c > 0), "{counters:?}");
        let second = scalar(&a.loss(&src, &sl, &tgt, &tl, true, 0.5).unwrap());
        assert_ne!(first, second);
        let (_, mut c) = build(&cfg, 1);
        c.set_seed(7);
        c.set_rng_counters(&counters).unwrap();
        assert_eq!(
            second,
            scalar(&c.loss(&src, &sl, &tgt, &tl, true, 0.5).unwrap())
        );
        let err = c.set_rng_counters(&[1, 2]).unwrap_err().to_string();
        assert!(err.contains("6"), "{err}");
        // Eval ignores dropout.
        let e1 = scalar(&a.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap());
        let e2 = scalar(&a.loss(&src, &sl, &tgt, &tl, false, 1.0).unwrap());
        assert_eq!(e1, e2);
    }

    #[test]
    fn errors_name_the_argument() {
        let (src, sl, tgt, tl) = batch();
        let (_, model) = build(&small(Mode::Gru, Attention::Dot, false), 0);
        let tgt_in = model.shift_right(&tgt).unwrap();
        let dev = Device::Cpu;
        let check = |r: Result<Seq2SeqOutput>, needles: &[&str]| {
            let e = r.unwrap_err().to_string();
            assert!(needles.iter().all(|n| e.contains(n)), "{needles:?}: {e}");
        };
        let float_src = src.to_dtype(DType::F32).unwrap();
        check(
            model.forward(&float_src, &sl, &tgt_in, false, 1.0, 0),
            &["`src`", "u32"],
        );
        check(
            model.forward(&src, &[5, 3], &tgt_in, false, 1.0, 0),
            &["src_lengths", "2 entries"],
        );
        check(
            model.forward(&src, &[5, 6, 1], &tgt_in, false, 1.0, 0),
            &["src_lengths", "lengths[1]"],
        );
        check(
            model.forward(&src, &sl, &tgt_in.narrow(0, 0, 2).unwrap(), false, 1.0, 0),
            &["`tgt_in`", "[2, 4]", "[3, 5]"],
        );
        check(
            model.forward(&src, &sl, &tgt_in, false, 1.5, 0),
            &["teacher_forcing_ratio", "1.5"],
        );
        check(
            model.forward(&src, &sl, &tgt_in, false, f64::NAN, 0),
            &["teacher_forcing_ratio"],
        );
        let big = Tensor::new(&[[3u32, 9, 0], [1, 2, 3], [4, 4, 4]], &dev).unwrap();
        check(
            model.forward(&big, &[3, 3, 3], &tgt_in, false, 1.0, 0),
            &["`src`", "token id 9", "9 ids"],
        );
        let big_t = Tensor::new(&[[1u32, 10], [1, 2], [1, 3]], &dev).unwrap();
        check(
            model.forward(&src, &sl, &big_t, false, 1.0, 0),
            &["`tgt_in`", "token id 10"],
        );
        let e = model
            .loss(&src, &sl, &tgt, &[4, 2, 5], false, 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("tgt_lengths") && e.contains("lengths[2]"), "{e}");
        let e = model
            .loss(&src, &sl, &tgt.unsqueeze(0).unwrap(), &tl, false, 1.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`tgt`") && e.contains("(batch, seq)"), "{e}");
        let e = model.greedy(&src, &sl, 0).unwrap_err().to_string();
        assert!(e.contains("max_len"), "{e}");
        let e = model
            .beam_search(&src, &sl, 0, 0.0, 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`beam`"), "{e}");
        let e = model
            .beam_search(&src, &sl, 2, f64::INFINITY, 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("length_penalty"), "{e}");
        let e = model
            .beam_search(&src, &[], 2, 0.0, 5)
            .unwrap_err()
            .to_string();
        assert!(e.contains("src_lengths"), "{e}");
    }

    /// Trains `cfg` (vocabulary 11: pad, bos, eos and 8 symbols) to reverse sequences of 3-7
    /// symbols with AdamW at teacher-forcing ratio `ratio`; checks greedy exact match on 200
    /// held-out sequences goes from < 5% to >= 95%. Returns the model and the held-out set.
    fn train_reverse(cfg: &Seq2SeqConfig, ratio: f64, label: &str) -> (Seq2Seq, Vec<Vec<u32>>) {
        let start = Instant::now();
        let (varmap, mut model) = build(cfg, 1);
        model.set_seed(3);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let sample = |rng: &mut ChaCha8Rng| -> Vec<u32> {
            let len = rng.random_range(3..=7);
            (0..len).map(|_| rng.random_range(3..11u32)).collect()
        };
        let mut held: Vec<Vec<u32>> = Vec::new();
        let mut held_set = HashSet::new();
        while held.len() < 200 {
            let s = sample(&mut rng);
            if held_set.insert(s.clone()) {
                held.push(s);
            }
        }
        let (held_src, held_len) = pad(&held);
        let accuracy = |model: &Seq2Seq| {
            let hyps = model.greedy(&held_src, &held_len, 10).unwrap();
            let correct = hyps
                .iter()
                .zip(&held)
                .filter(|(h, s)| h.finished && h.tokens.iter().copied().eq(s.iter().rev().copied()))
                .count();
            correct as f64 / held.len() as f64
        };
        let untrained = accuracy(&model);
        assert!(untrained < 0.05, "{label}: untrained accuracy {untrained}");
        let mut opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: 0.01,
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        let mut trained = 0.0;
        let mut steps = 0;
        for round in 0..10 {
            // 0.01 for 300 steps, then 0.003, then 0.001: settles the noisy plateau.
            opt.set_learning_rate(match round {
                0..=2 => 0.01,
                3..=5 => 0.003,
                _ => 0.001,
            });
            for _ in 0..100 {
                let mut seqs = Vec::new();
                while seqs.len() < 32 {
                    let s = sample(&mut rng);
                    if !held_set.contains(&s) {
                        seqs.push(s);
                    }
                }
                let targets: Vec<Vec<u32>> = seqs
                    .iter()
                    .map(|s| s.iter().rev().copied().chain([cfg.eos_id]).collect())
                    .collect();
                let (src, sl) = pad(&seqs);
                let (tgt, tl) = pad(&targets);
                let loss = model.loss(&src, &sl, &tgt, &tl, true, ratio).unwrap();
                opt.backward_step(&loss).unwrap();
                steps += 1;
            }
            trained = accuracy(&model);
            eprintln!(
                "{label} round {round}: {steps} steps, held-out exact match {trained:.3}, {:.1} s",
                start.elapsed().as_secs_f64()
            );
            if trained >= 0.98 {
                break;
            }
        }
        assert!(trained >= 0.95, "{label}: held-out exact match {trained}");
        (model, held)
    }

    /// Reversal with the fast path (GRU, general attention, full teacher forcing), then beam
    /// search on the trained model: never less likely than greedy, and its log-probabilities
    /// are the model's own scores.
    #[test]
    fn learns_to_reverse_sequences() {
        let cfg = Seq2SeqConfig {
            embedding_dim: 16,
            hidden_size: 48,
            mode: Mode::Gru,
            attention: Attention::General,
            ..Seq2SeqConfig::new(11, 11)
        };
        let (model, held) = train_reverse(&cfg, 1.0, "gru/general");
        let (src, sl) = pad(&held[..20]);
        let greedy = model.greedy(&src, &sl, 10).unwrap();
        let beam = model.beam_search(&src, &sl, 4, 0.0, 10).unwrap();
        for (g, b) in greedy.iter().zip(&beam) {
            assert!(b.log_prob >= g.log_prob - 1e-5);
        }
        let seqs: Vec<Vec<u32>> = beam
            .iter()
            .map(|h| h.tokens.iter().copied().chain([cfg.eos_id]).collect())
            .collect();
        assert!(beam.iter().all(|h| h.finished));
        let (tgt, tl) = pad(&seqs);
        let scored = model.sequence_log_probs(&src, &sl, &tgt, &tl).unwrap();
        for (h, s) in beam.iter().zip(&scored) {
            assert!((h.log_prob - s).abs() < 1e-4, "{} vs {s}", h.log_prob);
        }
    }

    /// Reversal through the step-by-step decoder: bidirectional LSTM encoder, additive
    /// attention, input feeding, dropout and a teacher-forcing ratio of 0.8.
    #[test]
    fn learns_to_reverse_step_by_step() {
        let cfg = Seq2SeqConfig {
            embedding_dim: 16,
            hidden_size: 32,
            mode: Mode::Lstm,
            bidirectional_encoder: true,
            attention: Attention::Additive,
            input_feeding: true,
            dropout: 0.1,
            ..Seq2SeqConfig::new(11, 11)
        };
        train_reverse(&cfg, 0.8, "lstm/additive/input-feeding");
    }
}

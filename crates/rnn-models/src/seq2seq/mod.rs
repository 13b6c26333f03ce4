//! [`Seq2Seq`]: an RNN encoder-decoder (many-to-many with different lengths) with optional
//! attention, teacher forcing, greedy decoding and batched beam search.
//!
//! # Model
//!
//! - **Encoder**: source embedding -> dropout -> [`Rnn`](rnn_core::Rnn) (any [`Mode`](rnn_core::Mode), `encoder_layers` stacked,
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
//! - **Decoder**: target embedding -> dropout -> [`Rnn`](rnn_core::Rnn) (unidirectional, `decoder_layers`
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
//! [`Stochastic`](crate::common::Stochastic)), so training runs are reproducible and resumable.
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

mod config;
mod decoding;
mod model;
#[cfg(test)]
mod tests;

pub use config::{Attention, Seq2SeqConfig};
pub use decoding::{length_penalty, Hypothesis};
pub use model::{Seq2Seq, Seq2SeqOutput};

const MODEL: &str = "Seq2Seq";

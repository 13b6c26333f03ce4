//! Language-model batching as in Zaremba et al. (2014, <https://arxiv.org/abs/1409.2329>): the token
//! stream is cut into `batch` parallel streams, read in windows of `seq_len` steps, so each row of
//! window k+1 continues the same row of window k and the state can be carried (truncated BPTT).

use std::ops::Range;

use super::TokenIds;
use crate::{Error, Result};
use candle_core::{Device, Tensor};

/// One window: inputs and next-token targets, both `(batch, seq_len)` u32.
#[derive(Debug, Clone)]
pub struct LmWindow {
    /// Token ids `(batch, len)`.
    pub inputs: Tensor,
    /// The next token of each input `(batch, len)`.
    pub targets: Tensor,
    /// Steps in this window (`seq_len`, or fewer for the last one).
    pub len: usize,
}

/// Windows over `batch` parallel streams of one token sequence. The ids are read in place
/// ([`TokenIds`]: a vector, or a mapped token file), so a window costs `batch x seq_len` ids of
/// memory whatever the size of the sequence.
#[derive(Debug, Clone)]
pub struct LmBatches {
    ids: TokenIds,
    batch: usize,
    /// Tokens per stream; stream `r` is `ids[r * per_stream..(r + 1) * per_stream]`.
    per_stream: usize,
    seq_len: usize,
}

/// Windows between two [`TokenIds::release`] hints of a mapped sequence.
const RELEASE_EVERY: usize = 256;

impl LmBatches {
    /// Cuts `ids` into `batch` streams of equal length (the tail that does not divide is dropped).
    pub fn new(ids: &[u32], batch: usize, seq_len: usize) -> Result<Self> {
        Self::from_ids(TokenIds::from(ids.to_vec()), batch, seq_len)
    }

    /// [`LmBatches::new`] over ids read in place (e.g. a part of a [`TokenFile`](super::TokenFile)):
    /// nothing is copied until a window is read.
    pub fn from_ids(ids: TokenIds, batch: usize, seq_len: usize) -> Result<Self> {
        if batch == 0 || seq_len == 0 {
            return Err(Error::Invalid(format!(
                "language-model batching needs batch > 0 and seq_len > 0, got {batch} and {seq_len}"
            )));
        }
        let per_stream = ids.len() / batch;
        if per_stream < 2 {
            return Err(Error::Invalid(format!(
                "{} tokens are too few for {batch} streams (each needs at least 2 tokens)",
                ids.len()
            )));
        }
        Ok(Self {
            ids,
            batch,
            per_stream,
            seq_len,
        })
    }

    /// Number of windows per pass.
    pub fn len(&self) -> usize {
        (self.per_stream - 1).div_ceil(self.seq_len)
    }

    /// Whether there are no windows (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of parallel streams (the rows of a window).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Tokens predicted per pass (batch x (stream length - 1)).
    pub fn tokens(&self) -> usize {
        self.batch * (self.per_stream - 1)
    }

    /// Window `k` (0-based) on `device`.
    pub fn window(&self, k: usize, device: &Device) -> Result<LmWindow> {
        self.window_rows(k, 0..self.batch, device)
    }

    /// Rows `rows` of window `k` (streams `rows`, in order) on `device`: `(rows.len(), len)`
    /// tensors equal to those rows of [`LmBatches::window`], reading only those streams (a
    /// data-parallel part of the batch).
    pub fn window_rows(&self, k: usize, rows: Range<usize>, device: &Device) -> Result<LmWindow> {
        let n = self.per_stream - 1;
        let start = k * self.seq_len;
        if start >= n {
            return Err(Error::Invalid(format!(
                "window {k} out of range ({} windows)",
                self.len()
            )));
        }
        if rows.start > rows.end || rows.end > self.batch {
            return Err(Error::Invalid(format!(
                "rows {rows:?} out of range ({} streams)",
                self.batch
            )));
        }
        let len = self.seq_len.min(n - start);
        let count = rows.len();
        let mut inputs = Vec::with_capacity(count * len);
        let mut targets = Vec::with_capacity(count * len);
        for r in rows {
            let s = r * self.per_stream + start;
            self.ids.extend_into(s..s + len, &mut inputs);
            self.ids.extend_into(s + 1..s + len + 1, &mut targets);
            if k.is_multiple_of(RELEASE_EVERY) && k > 0 {
                // The windows behind this one are not read again this pass.
                self.ids.release(r * self.per_stream..s);
            }
        }
        Ok(LmWindow {
            inputs: Tensor::from_vec(inputs, (count, len), device)?,
            targets: Tensor::from_vec(targets, (count, len), device)?,
            len,
        })
    }

    /// Every window in order.
    pub fn iter<'a>(&'a self, device: &'a Device) -> impl Iterator<Item = Result<LmWindow>> + 'a {
        (0..self.len()).map(move |k| self.window(k, device))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_continue_from_window_to_window() {
        let ids: Vec<u32> = (0..23).collect();
        let b = LmBatches::new(&ids, 2, 4).unwrap();
        // 2 streams of 11 tokens: 0..11 and 11..22; 10 predictions each -> windows of 4, 4, 2.
        assert_eq!(b.len(), 3);
        assert_eq!(b.tokens(), 20);
        let w: Vec<LmWindow> = b.iter(&Device::Cpu).collect::<Result<_>>().unwrap();
        assert_eq!(
            w[0].inputs.to_vec2::<u32>().unwrap(),
            vec![vec![0, 1, 2, 3], vec![11, 12, 13, 14]]
        );
        assert_eq!(
            w[0].targets.to_vec2::<u32>().unwrap(),
            vec![vec![1, 2, 3, 4], vec![12, 13, 14, 15]]
        );
        assert_eq!(w[1].inputs.to_vec2::<u32>().unwrap()[0], vec![4, 5, 6, 7]);
        assert_eq!(w[2].len, 2);
        assert_eq!(
            w[2].targets.to_vec2::<u32>().unwrap(),
            vec![vec![9, 10], vec![20, 21]]
        );
    }

    #[test]
    fn rows_of_a_window_and_ids_read_in_place() {
        let ids: Vec<u32> = (0..50).collect();
        let b = LmBatches::new(&ids, 5, 3).unwrap();
        let shared = LmBatches::from_ids(TokenIds::from(ids.clone()), 5, 3).unwrap();
        for k in 0..b.len() {
            let whole = b.window(k, &Device::Cpu).unwrap();
            let again = shared.window(k, &Device::Cpu).unwrap();
            assert_eq!(
                whole.inputs.to_vec2::<u32>().unwrap(),
                again.inputs.to_vec2::<u32>().unwrap()
            );
            let part = b.window_rows(k, 1..3, &Device::Cpu).unwrap();
            assert_eq!(
                part.inputs.to_vec2::<u32>().unwrap(),
                whole
                    .inputs
                    .narrow(0, 1, 2)
                    .unwrap()
                    .to_vec2::<u32>()
                    .unwrap()
            );
            assert_eq!(
                part.targets.to_vec2::<u32>().unwrap(),
                whole
                    .targets
                    .narrow(0, 1, 2)
                    .unwrap()
                    .to_vec2::<u32>()
                    .unwrap()
            );
        }
        assert_eq!(b.batch(), 5);
        assert_eq!(
            b.window_rows(0, 2..2, &Device::Cpu).unwrap().inputs.dims(),
            &[0, 3]
        );
        assert!(b.window_rows(0, 4..6, &Device::Cpu).is_err());
        assert!(b.window(b.len(), &Device::Cpu).is_err());
    }

    #[test]
    fn too_little_data_and_bad_sizes() {
        assert!(LmBatches::new(&[1, 2, 3], 2, 4).is_err());
        assert!(LmBatches::new(&[1, 2, 3, 4], 0, 4).is_err());
        assert!(LmBatches::new(&[1, 2, 3, 4], 1, 0).is_err());
    }
}

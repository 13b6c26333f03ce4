//! Language-model batching as in Zaremba et al. (2014, <https://arxiv.org/abs/1409.2329>): the token
//! stream is cut into `batch` parallel streams, read in windows of `seq_len` steps, so each row of
//! window k+1 continues the same row of window k and the state can be carried (truncated BPTT).

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

/// Windows over `batch` parallel streams of one token sequence.
#[derive(Debug, Clone)]
pub struct LmBatches {
    streams: Vec<Vec<u32>>,
    seq_len: usize,
}

impl LmBatches {
    /// Cuts `ids` into `batch` streams of equal length (the tail that does not divide is dropped).
    pub fn new(ids: &[u32], batch: usize, seq_len: usize) -> Result<Self> {
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
        let streams = ids
            .chunks_exact(per_stream)
            .take(batch)
            .map(<[u32]>::to_vec)
            .collect();
        Ok(Self { streams, seq_len })
    }

    /// Number of windows per pass.
    pub fn len(&self) -> usize {
        (self.streams[0].len() - 1).div_ceil(self.seq_len)
    }

    /// Whether there are no windows (never, once built).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens predicted per pass (batch x (stream length - 1)).
    pub fn tokens(&self) -> usize {
        self.streams.len() * (self.streams[0].len() - 1)
    }

    /// Window `k` (0-based) on `device`.
    pub fn window(&self, k: usize, device: &Device) -> Result<LmWindow> {
        let n = self.streams[0].len() - 1;
        let start = k * self.seq_len;
        if start >= n {
            return Err(Error::Invalid(format!(
                "window {k} out of range ({} windows)",
                self.len()
            )));
        }
        let len = self.seq_len.min(n - start);
        let batch = self.streams.len();
        let mut inputs = Vec::with_capacity(batch * len);
        let mut targets = Vec::with_capacity(batch * len);
        for s in &self.streams {
            inputs.extend_from_slice(&s[start..start + len]);
            targets.extend_from_slice(&s[start + 1..start + len + 1]);
        }
        Ok(LmWindow {
            inputs: Tensor::from_vec(inputs, (batch, len), device)?,
            targets: Tensor::from_vec(targets, (batch, len), device)?,
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
    fn too_little_data_and_bad_sizes() {
        assert!(LmBatches::new(&[1, 2, 3], 2, 4).is_err());
        assert!(LmBatches::new(&[1, 2, 3, 4], 0, 4).is_err());
        assert!(LmBatches::new(&[1, 2, 3, 4], 1, 0).is_err());
    }
}

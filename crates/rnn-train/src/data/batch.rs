//! Batching: padding with lengths and masks, bucketing by length, seeded shuffles and splits.

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// A right-padded batch of id sequences.
#[derive(Debug, Clone)]
pub struct PaddedBatch {
    /// `(batch, max_len)` u32 ids, padded with the pad id.
    pub ids: Tensor,
    /// Valid steps of each row.
    pub lengths: Vec<usize>,
    /// `(batch, max_len)` f32, 1 on valid steps and 0 on padding.
    pub mask: Tensor,
}

/// Pads `seqs` to the longest with `pad`. Empty sequences are an error (a recurrent layer needs at
/// least one step per row).
pub fn pad_batch(seqs: &[Vec<u32>], pad: u32, device: &Device) -> Result<PaddedBatch> {
    if seqs.is_empty() {
        return Err(Error::Invalid("cannot pad an empty batch".into()));
    }
    if let Some(i) = seqs.iter().position(Vec::is_empty) {
        return Err(Error::Invalid(format!(
            "sequence {i} of the batch is empty"
        )));
    }
    let max_len = seqs.iter().map(Vec::len).max().unwrap_or(0);
    let mut ids = Vec::with_capacity(seqs.len() * max_len);
    let mut mask = Vec::with_capacity(seqs.len() * max_len);
    for s in seqs {
        ids.extend_from_slice(s);
        ids.extend(std::iter::repeat_n(pad, max_len - s.len()));
        mask.extend(std::iter::repeat_n(1f32, s.len()));
        mask.extend(std::iter::repeat_n(0f32, max_len - s.len()));
    }
    Ok(PaddedBatch {
        ids: Tensor::from_vec(ids, (seqs.len(), max_len), device)?,
        lengths: seqs.iter().map(Vec::len).collect(),
        mask: Tensor::from_vec(mask, (seqs.len(), max_len), device)?,
    })
}

/// Shuffles `items` in place with a generator seeded by `seed` (same seed, same order).
pub fn seeded_shuffle<T>(items: &mut [T], seed: u64) {
    items.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
}

/// Batches of example indices grouped by similar length (less padding): indices are sorted by
/// length within shuffled pools of `50 * batch_size`, cut into batches, and the batches shuffled.
pub fn bucket_batches(lengths: &[usize], batch_size: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(Error::Invalid("batch size must be > 0".into()));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    seeded_shuffle(&mut order, seed);
    let mut batches = Vec::new();
    for pool in order.chunks_mut(50 * batch_size) {
        pool.sort_by_key(|&i| lengths[i]);
        batches.extend(pool.chunks(batch_size).map(<[usize]>::to_vec));
    }
    seeded_shuffle(&mut batches, seed.wrapping_add(1));
    Ok(batches)
}

/// Splits `items` into `(first, second)` with `fraction` of them (rounded) in the second part,
/// after a seeded shuffle; e.g. a validation split.
pub fn split_fraction<T>(mut items: Vec<T>, fraction: f64, seed: u64) -> Result<(Vec<T>, Vec<T>)> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::Invalid(format!(
            "split fraction must be in [0, 1), got {fraction}"
        )));
    }
    seeded_shuffle(&mut items, seed);
    let second = ((items.len() as f64) * fraction).round() as usize;
    let rest = items.split_off(items.len() - second);
    Ok((items, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding_lengths_and_mask() {
        let b = pad_batch(&[vec![5, 6, 7], vec![8]], 0, &Device::Cpu).unwrap();
        assert_eq!(
            b.ids.to_vec2::<u32>().unwrap(),
            vec![vec![5, 6, 7], vec![8, 0, 0]]
        );
        assert_eq!(b.lengths, vec![3, 1]);
        assert_eq!(
            b.mask.to_vec2::<f32>().unwrap(),
            vec![vec![1.0, 1.0, 1.0], vec![1.0, 0.0, 0.0]]
        );
        assert!(pad_batch(&[], 0, &Device::Cpu).is_err());
        let err = pad_batch(&[vec![1], vec![]], 0, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sequence 1"), "{err}");
    }

    #[test]
    fn buckets_cover_every_index_once_and_group_lengths() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 7919) % 97 + 1).collect();
        let batches = bucket_batches(&lengths, 10, 3).unwrap();
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
        // Sorted within pools: the spread of lengths inside a batch is small on average.
        let spread: usize = batches
            .iter()
            .map(|b| {
                let l: Vec<usize> = b.iter().map(|&i| lengths[i]).collect();
                l.iter().max().unwrap() - l.iter().min().unwrap()
            })
            .sum();
        assert!(
            spread / batches.len() < 5,
            "mean spread {}",
            spread / batches.len()
        );
        assert_eq!(batches, bucket_batches(&lengths, 10, 3).unwrap(), "seeded");
        assert_ne!(batches, bucket_batches(&lengths, 10, 4).unwrap());
    }

    #[test]
    fn seeded_split() {
        let (a, b) = split_fraction((0..100).collect::<Vec<_>>(), 0.1, 7).unwrap();
        assert_eq!((a.len(), b.len()), (90, 10));
        let (a2, _) = split_fraction((0..100).collect::<Vec<_>>(), 0.1, 7).unwrap();
        assert_eq!(a, a2);
        assert!(split_fraction(vec![1], 1.0, 0).is_err());
    }
}

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

/// A batch is closed before it is full when the next example, in length order, is longer than
/// `PAD_RATIO` times the batch's shortest example plus [`PAD_SLACK`] steps: one long example then
/// gets a batch of its own (or of examples near its length) instead of padding a full batch of
/// short ones to its length. Batches of ordinary data, whose sorted neighbours differ by a few
/// steps, are unchanged.
pub const PAD_RATIO: usize = 2;
/// See [`PAD_RATIO`].
pub const PAD_SLACK: usize = 8;

/// Cuts `sorted` (indices in order of `lengths`) into batches of at most `batch_size` under the
/// [`PAD_RATIO`] rule.
fn cut_sorted(sorted: &[usize], lengths: &[usize], batch_size: usize, out: &mut Vec<Vec<usize>>) {
    let mut batch: Vec<usize> = Vec::with_capacity(batch_size);
    for &i in sorted {
        let too_long = batch
            .first()
            .is_some_and(|&f| lengths[i] > PAD_RATIO * lengths[f] + PAD_SLACK);
        if batch.len() == batch_size || too_long {
            out.push(std::mem::take(&mut batch));
        }
        batch.push(i);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
}

/// Batches of example indices grouped by similar length (less padding): indices are sorted by
/// length within shuffled pools of `50 * batch_size`, cut into batches (closed early before an
/// example much longer than the batch's shortest, see [`PAD_RATIO`]), and the batches shuffled.
pub fn bucket_batches(lengths: &[usize], batch_size: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if batch_size == 0 {
        return Err(Error::Invalid("batch size must be > 0".into()));
    }
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    seeded_shuffle(&mut order, seed);
    let mut batches = Vec::new();
    for pool in order.chunks_mut(50 * batch_size) {
        pool.sort_by_key(|&i| lengths[i]);
        cut_sorted(pool, lengths, batch_size, &mut batches);
    }
    seeded_shuffle(&mut batches, seed.wrapping_add(1));
    Ok(batches)
}

/// Batches of example indices in order of length (evaluation: the order does not change the
/// scores), at most `batch_size` each and cut under the [`PAD_RATIO`] rule as
/// [`bucket_batches`].
pub fn length_batches(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut batches = Vec::new();
    cut_sorted(&order, lengths, batch_size.max(1), &mut batches);
    batches
}

/// `(rows, padded length)` of the largest batch, by `rows * padded length`, that
/// [`bucket_batches`] or [`length_batches`] can make of `lengths` with `batch_size`, whatever the
/// shuffle: a batch whose longest example has length `l` holds at most `batch_size` examples, all
/// of length at least `(l - PAD_SLACK) / PAD_RATIO`. `(0, 0)` for no examples.
pub fn largest_batch(lengths: &[usize], batch_size: usize) -> (usize, usize) {
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable();
    let mut best = (0, 0);
    let mut lo = 0;
    for (j, &l) in sorted.iter().enumerate() {
        if sorted.get(j + 1) == Some(&l) {
            continue; // the last of equal lengths counts them all
        }
        while PAD_RATIO * sorted[lo] + PAD_SLACK < l {
            lo += 1;
        }
        let rows = (j + 1 - lo).min(batch_size.max(1));
        if rows * l > best.0 * best.1 {
            best = (rows, l);
        }
    }
    best
}

/// `seqs` with every sequence longer than `max_len` split into consecutive chunks of at most
/// `max_len` items (the last chunk holds the rest); shorter sequences unchanged, order kept.
pub fn chunk_sequences<T: Clone>(seqs: &[Vec<T>], max_len: usize) -> Vec<Vec<T>> {
    let max_len = max_len.max(1);
    seqs.iter()
        .flat_map(|s| {
            if s.len() <= max_len {
                vec![s.clone()]
            } else {
                s.chunks(max_len).map(<[T]>::to_vec).collect()
            }
        })
        .collect()
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
    fn one_long_example_gets_a_batch_of_its_own() {
        let mut lengths = vec![20; 40];
        lengths[7] = 200_000;
        for batches in [
            bucket_batches(&lengths, 32, 5).unwrap(),
            length_batches(&lengths, 32),
        ] {
            let long = batches.iter().find(|b| b.contains(&7)).unwrap();
            assert_eq!(long, &vec![7]);
            let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
            seen.sort();
            assert_eq!(seen, (0..40).collect::<Vec<_>>());
            assert!(batches.iter().all(|b| b.len() <= 32));
        }
        assert_eq!(largest_batch(&lengths, 32), (1, 200_000));
        // Neighbours within the ratio share a batch: 2 * 10 + 8 = 28 >= 28.
        assert_eq!(length_batches(&[10, 28, 29], 8), vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn largest_batch_bounds_every_batching() {
        assert_eq!(largest_batch(&[], 4), (0, 0));
        assert_eq!(largest_batch(&[5, 5, 5], 2), (2, 5));
        assert_eq!(largest_batch(&[1, 2, 3, 100], 32), (1, 100));
        assert_eq!(largest_batch(&[30, 60, 60, 61], 32), (4, 61));
        let lengths: Vec<usize> = (0..3000).map(|i| (i * 7919) % 997 + 1).collect();
        let (rows, len) = largest_batch(&lengths, 16);
        for seed in 0..5 {
            for b in bucket_batches(&lengths, 16, seed).unwrap() {
                let padded = b.iter().map(|&i| lengths[i]).max().unwrap();
                assert!(b.len() * padded <= rows * len);
            }
        }
        for b in length_batches(&lengths, 16) {
            let padded = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(b.len() * padded <= rows * len);
        }
    }

    #[test]
    fn chunks_keep_every_item_in_order() {
        let seqs = vec![vec![1, 2, 3, 4, 5], vec![6], vec![7, 8]];
        assert_eq!(
            chunk_sequences(&seqs, 2),
            vec![vec![1, 2], vec![3, 4], vec![5], vec![6], vec![7, 8]]
        );
        assert_eq!(chunk_sequences(&seqs, 5), seqs);
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

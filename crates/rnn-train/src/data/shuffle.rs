//! Streaming a training file in a bounded buffer: a seeded shuffle buffer (as in tf.data's
//! `shuffle(buffer_size)` and webdataset) and the batches of an epoch read from it.
//!
//! A shuffle buffer holds at most `capacity` examples: it fills up from the stream, then hands
//! out a uniformly chosen held example and takes the next one from the stream in its place. The
//! order is an *approximate* shuffle: an example leaves at most `capacity - 1` places before its
//! position in the file, so a file sorted by label or length stays partly sorted unless the
//! buffer is large against the runs of similar examples. With `capacity >= ` the file's length it
//! is a uniform shuffle.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// A seeded shuffle buffer over a stream of examples: it holds at most `capacity` examples,
/// fills up from the stream, then hands out a uniformly chosen held example and takes the next
/// one in its place (an approximate shuffle: an example leaves at most `capacity - 1` places
/// early).
pub struct ShuffleBuffer<T, I> {
    source: I,
    buffer: Vec<T>,
    capacity: usize,
    rng: ChaCha8Rng,
    peak: usize,
}

impl<T, I: Iterator<Item = Result<T>>> ShuffleBuffer<T, I> {
    /// A buffer of at most `capacity` (at least 1) examples of `source`, shuffled by a generator
    /// seeded with `seed`: the same source and seed give the same order.
    pub fn new(source: I, capacity: usize, seed: u64) -> Self {
        let capacity = capacity.max(1);
        Self {
            source,
            buffer: Vec::with_capacity(capacity),
            capacity,
            rng: ChaCha8Rng::seed_from_u64(seed),
            peak: 0,
        }
    }

    /// The most examples the buffer has held at once (never above its capacity).
    pub fn peak(&self) -> usize {
        self.peak
    }
}

impl<T, I: Iterator<Item = Result<T>>> Iterator for ShuffleBuffer<T, I> {
    type Item = Result<T>;

    fn next(&mut self) -> Option<Result<T>> {
        while self.buffer.len() < self.capacity {
            match self.source.next() {
                Some(Ok(x)) => self.buffer.push(x),
                Some(Err(e)) => return Some(Err(e)),
                None => break,
            }
        }
        self.peak = self.peak.max(self.buffer.len());
        if self.buffer.is_empty() {
            return None;
        }
        let j = self.rng.random_range(0..self.buffer.len());
        Some(Ok(self.buffer.swap_remove(j)))
    }
}

/// Opens the stream of a training file's examples from its start (called once per epoch, and
/// again when a resumed run or a repeated request goes back in the stream).
pub type OpenStream<T> = Box<dyn FnMut() -> Result<Box<dyn Iterator<Item = Result<T>>>>>;

/// The training batches of a file read sequentially once per epoch through a
/// [`ShuffleBuffer`] seeded from the epoch: batch `k` of an epoch holds examples
/// `k * batch_size ..` of the shuffled stream, so an epoch's batches depend only on the file,
/// the seed and the epoch. Holds at most `capacity` examples in the buffer plus the current
/// batch; a request for an earlier batch (a resumed run) reopens the file and skips forward.
pub struct StreamedBatches<T> {
    open: OpenStream<T>,
    capacity: usize,
    batch_size: usize,
    examples: usize,
    at: Option<Position<T>>,
    peak: usize,
}

/// Where the stream of the current epoch stands.
struct Position<T> {
    seed: u64,
    stream: ShuffleBuffer<T, Box<dyn Iterator<Item = Result<T>>>>,
    /// The batch last read and its index.
    batch: Option<(usize, Vec<T>)>,
}

impl<T> StreamedBatches<T> {
    /// Batches of `batch_size` (at least 1) of the `examples` examples that `open` yields, through
    /// a shuffle buffer of `capacity` (at least 1) examples.
    pub fn new(open: OpenStream<T>, examples: usize, capacity: usize, batch_size: usize) -> Self {
        Self {
            open,
            capacity: capacity.max(1),
            batch_size: batch_size.max(1),
            examples,
            at: None,
            peak: 0,
        }
    }

    /// How many examples an epoch has.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// How many batches an epoch has: the examples over the batch size, rounded up.
    pub fn batches_per_epoch(&self) -> usize {
        self.examples.div_ceil(self.batch_size)
    }

    /// The most examples any shuffle buffer of this stream has held at once.
    pub fn peak(&self) -> usize {
        self.peak
            .max(self.at.as_ref().map_or(0, |p| p.stream.peak()))
    }

    /// The examples of batch `index` of the epoch whose shuffle is seeded with `seed`. A stream
    /// that ends early (the file changed since it was counted) is an error.
    pub fn batch(&mut self, seed: u64, index: usize) -> Result<&[T]> {
        let reuse = self
            .at
            .as_ref()
            .is_some_and(|p| p.seed == seed && p.batch.as_ref().is_none_or(|(k, _)| *k <= index));
        if !reuse {
            if let Some(old) = self.at.take() {
                self.peak = self.peak.max(old.stream.peak());
            }
            let source = (self.open)()?;
            self.at = Some(Position {
                seed,
                stream: ShuffleBuffer::new(source, self.capacity, seed),
                batch: None,
            });
        }
        let Some(at) = self.at.as_mut() else {
            return Err(Error::Invalid("the training stream is not open".into()));
        };
        let mut next = at.batch.as_ref().map_or(0, |(k, _)| k + 1);
        while next <= index {
            // The batch in hand is dropped before the next one is read.
            at.batch = None;
            let mut rows = Vec::with_capacity(self.batch_size);
            for x in at.stream.by_ref().take(self.batch_size) {
                rows.push(x?);
            }
            let expected = self
                .batch_size
                .min(self.examples.saturating_sub(next * self.batch_size));
            if rows.len() != expected {
                return Err(Error::Invalid(format!(
                    "the training file yielded {} examples for batch {next} where its first pass counted {expected}; was it changed during training?",
                    rows.len()
                )));
            }
            at.batch = Some((next, rows));
            next += 1;
        }
        match &at.batch {
            Some((_, rows)) => Ok(rows),
            None => Err(Error::Invalid(format!("batch {index} was not read"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(n: usize) -> OpenStream<usize> {
        Box::new(move || Ok(Box::new((0..n).map(Ok)) as Box<dyn Iterator<Item = Result<usize>>>))
    }

    #[test]
    fn buffer_yields_every_example_once_in_a_seeded_order() {
        let out: Vec<usize> = ShuffleBuffer::new((0..100).map(Ok), 10, 3)
            .collect::<Result<_>>()
            .unwrap();
        let mut sorted = out.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(out, sorted, "shuffled");
        let again: Vec<usize> = ShuffleBuffer::new((0..100).map(Ok), 10, 3)
            .collect::<Result<_>>()
            .unwrap();
        assert_eq!(out, again, "seeded");
        // Bounded: an example leaves at most capacity - 1 places early.
        for (pos, &x) in out.iter().enumerate() {
            assert!(x <= pos + 9, "{x} at {pos}");
        }
    }

    #[test]
    fn buffer_never_holds_more_than_its_capacity() {
        let mut b = ShuffleBuffer::new((0..1000).map(Ok), 7, 1);
        let mut n = 0;
        while let Some(x) = b.next() {
            x.unwrap();
            assert!(b.buffer.len() < 7);
            n += 1;
        }
        assert_eq!((n, b.peak()), (1000, 7));
    }

    #[test]
    fn batches_skip_forward_and_restart_for_earlier_batches() {
        let mut s = StreamedBatches::new(numbers(23), 23, 5, 4);
        assert_eq!(s.batches_per_epoch(), 6);
        let all: Vec<Vec<usize>> = (0..6).map(|k| s.batch(9, k).unwrap().to_vec()).collect();
        assert_eq!(all[5].len(), 3);
        let mut seen: Vec<usize> = all.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..23).collect::<Vec<_>>());
        // The same batch twice (the parts of a step), a jump ahead (resume), a step back.
        let mut t = StreamedBatches::new(numbers(23), 23, 5, 4);
        assert_eq!(t.batch(9, 3).unwrap(), all[3].as_slice());
        assert_eq!(t.batch(9, 3).unwrap(), all[3].as_slice());
        assert_eq!(t.batch(9, 4).unwrap(), all[4].as_slice());
        assert_eq!(t.batch(9, 1).unwrap(), all[1].as_slice());
        assert_ne!(
            t.batch(10, 0).unwrap(),
            all[0].as_slice(),
            "another epoch seed"
        );
        assert!(t.peak() <= 5);
    }

    #[test]
    fn a_shorter_stream_than_counted_is_an_error() {
        let mut s = StreamedBatches::new(numbers(5), 9, 4, 4);
        let e = s.batch(0, 1).unwrap_err().to_string();
        assert!(e.contains("batch 1") && e.contains("changed"), "{e}");
    }
}

//! Constrained decoding: the best tag sequence under a [`TransitionMask`], by Viterbi
//! ([Viterbi 1967](https://doi.org/10.1109/TIT.1967.1054010)).
//!
//! The tagger scores each step independently (log-softmax of its logits), so the best sequence
//! without constraints is the per-step argmax. A mask forbids some transitions (under BIO,
//! `O -> I-PER`; under BIOES, ending a sentence on `B-PER`), and Viterbi finds the sequence with
//! the largest summed log-probability among those the mask allows, in `O(seq_len * tags^2)`.
//! The mask is built from a rule over tag ids ([`TransitionMask::from_fn`]); which tag names form
//! which scheme is the caller's knowledge (the `rnn` tag task uses
//! `rnn_train::metrics::TagScheme::allows`).

use candle_core::Result;

use crate::common::invalid;

const WHAT: &str = "TransitionMask";

/// Which tags may start a sequence, follow each other and end it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionMask {
    num_tags: usize,
    /// Row-major `(from, to)`.
    allowed: Vec<bool>,
    start: Vec<bool>,
    end: Vec<bool>,
}

impl TransitionMask {
    /// A mask that allows everything (decoding is then the per-step argmax).
    pub fn unconstrained(num_tags: usize) -> Self {
        Self {
            num_tags,
            allowed: vec![true; num_tags * num_tags],
            start: vec![true; num_tags],
            end: vec![true; num_tags],
        }
    }

    /// A mask from `rule(prev, next)` over tag ids, where `None` is the sequence boundary:
    /// `rule(None, Some(t))` says whether a sequence may start with `t`, `rule(Some(t), None)`
    /// whether it may end with it, and `rule(Some(a), Some(b))` whether `b` may follow `a`.
    ///
    /// # Errors
    /// `num_tags` is 0, or the rule lets no tag start or no tag end a sequence.
    pub fn from_fn(
        num_tags: usize,
        rule: impl Fn(Option<usize>, Option<usize>) -> bool,
    ) -> Result<Self> {
        if num_tags == 0 {
            return Err(invalid(WHAT, "`num_tags` must be at least 1, got 0"));
        }
        let mut allowed = Vec::with_capacity(num_tags * num_tags);
        for from in 0..num_tags {
            allowed.extend((0..num_tags).map(|to| rule(Some(from), Some(to))));
        }
        let start: Vec<bool> = (0..num_tags).map(|t| rule(None, Some(t))).collect();
        let end: Vec<bool> = (0..num_tags).map(|t| rule(Some(t), None)).collect();
        if !start.contains(&true) || !end.contains(&true) {
            return Err(invalid(
                WHAT,
                "the rule lets no tag start or no tag end a sequence",
            ));
        }
        Ok(Self {
            num_tags,
            allowed,
            start,
            end,
        })
    }

    /// Number of tags.
    pub fn num_tags(&self) -> usize {
        self.num_tags
    }

    /// Whether `to` may follow `from` (both `< num_tags`).
    pub fn allows(&self, from: usize, to: usize) -> bool {
        self.allowed[from * self.num_tags + to]
    }

    /// Whether a sequence may start with `tag`.
    pub fn allows_start(&self, tag: usize) -> bool {
        self.start[tag]
    }

    /// Whether a sequence may end with `tag`.
    pub fn allows_end(&self, tag: usize) -> bool {
        self.end[tag]
    }

    /// Whether every transition, start and end is allowed.
    pub fn is_unconstrained(&self) -> bool {
        self.allowed
            .iter()
            .chain(&self.start)
            .chain(&self.end)
            .all(|&a| a)
    }

    /// Whether `tags` (ids `< num_tags`) start, step and end as the mask allows; an empty
    /// sequence does.
    pub fn is_valid(&self, tags: &[u32]) -> bool {
        let (Some(&first), Some(&last)) = (tags.first(), tags.last()) else {
            return true;
        };
        let ok = |t: u32| (t as usize) < self.num_tags;
        tags.iter().all(|&t| ok(t))
            && self.allows_start(first as usize)
            && self.allows_end(last as usize)
            && tags
                .windows(2)
                .all(|w| self.allows(w[0] as usize, w[1] as usize))
    }
}

/// The allowed tag sequence with the largest summed score.
///
/// # Arguments
/// - `scores`: per-step tag scores (log-probabilities), row-major `(seq_len, num_tags)`.
/// - `mask`: the allowed transitions, over `mask.num_tags()` tags.
///
/// Ties go to the smaller tag id at the last step and to the smaller previous tag on the way
/// back, so an unconstrained mask gives the first per-step argmax.
///
/// # Errors
/// A mask over 0 tags, `scores.len()` not a multiple of the number of tags, a non-finite score, or no sequence of
/// this length that the mask allows.
pub fn viterbi(scores: &[f32], mask: &TransitionMask) -> Result<Vec<u32>> {
    let k = mask.num_tags();
    if k == 0 {
        return Err(invalid("viterbi", "the mask is over 0 tags"));
    }
    if !scores.len().is_multiple_of(k) {
        return Err(invalid(
            "viterbi",
            format!(
                "`scores` holds {} values, not a multiple of the {k} tags",
                scores.len()
            ),
        ));
    }
    if let Some(i) = scores.iter().position(|s| !s.is_finite()) {
        return Err(invalid(
            "viterbi",
            format!("`scores` holds the non-finite value {} at {i}", scores[i]),
        ));
    }
    let seq_len = scores.len() / k;
    if seq_len == 0 {
        return Ok(Vec::new());
    }
    // best[t]: the best score of an allowed prefix ending in tag t; back[step * k + t]: its
    // previous tag.
    let mut best: Vec<f64> = (0..k)
        .map(|t| match mask.allows_start(t) {
            true => f64::from(scores[t]),
            false => f64::NEG_INFINITY,
        })
        .collect();
    let mut next = vec![f64::NEG_INFINITY; k];
    let mut back = vec![0u32; seq_len * k];
    for step in 1..seq_len {
        for to in 0..k {
            let (mut arg, mut top) = (0, f64::NEG_INFINITY);
            for (from, &b) in best.iter().enumerate() {
                if b > top && mask.allows(from, to) {
                    (arg, top) = (from, b);
                }
            }
            next[to] = top + f64::from(scores[step * k + to]);
            back[step * k + to] = arg as u32;
        }
        std::mem::swap(&mut best, &mut next);
    }
    let (mut last, mut top) = (0, f64::NEG_INFINITY);
    for (t, &b) in best.iter().enumerate() {
        if b > top && mask.allows_end(t) {
            (last, top) = (t, b);
        }
    }
    if top == f64::NEG_INFINITY {
        return Err(invalid(
            "viterbi",
            format!("no tag sequence of length {seq_len} satisfies the transition mask"),
        ));
    }
    let mut path = vec![0u32; seq_len];
    path[seq_len - 1] = last as u32;
    for step in (1..seq_len).rev() {
        path[step - 1] = back[step * k + path[step] as usize];
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn score_of(scores: &[f32], k: usize, path: &[u32]) -> f64 {
        path.iter()
            .enumerate()
            .map(|(s, &t)| f64::from(scores[s * k + t as usize]))
            .sum()
    }

    /// The best allowed sequence by enumerating all `k^seq_len` of them.
    fn brute_force(scores: &[f32], mask: &TransitionMask) -> Option<(f64, Vec<u32>)> {
        let k = mask.num_tags();
        let seq_len = scores.len() / k;
        let mut best: Option<(f64, Vec<u32>)> = None;
        for code in 0..k.pow(seq_len as u32) {
            let path: Vec<u32> = (0..seq_len)
                .map(|s| ((code / k.pow(s as u32)) % k) as u32)
                .collect();
            if !mask.is_valid(&path) {
                continue;
            }
            let s = score_of(scores, k, &path);
            if best.as_ref().is_none_or(|(b, _)| s > *b) {
                best = Some((s, path));
            }
        }
        best
    }

    /// Log-softmax rows of random logits, like the tagger's.
    fn random_scores(rng: &mut ChaCha8Rng, seq_len: usize, k: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(seq_len * k);
        for _ in 0..seq_len {
            let row: Vec<f32> = (0..k).map(|_| rng.random_range(-3.0..3.0)).collect();
            let lse = row.iter().map(|x| x.exp()).sum::<f32>().ln();
            out.extend(row.iter().map(|x| x - lse));
        }
        out
    }

    #[test]
    fn equals_brute_force_on_small_random_cases() {
        let mut rng = ChaCha8Rng::seed_from_u64(25);
        let (mut decoded, mut impossible) = (0, 0);
        for case in 0..400 {
            let k = rng.random_range(1..=4);
            let seq_len = rng.random_range(1..=5);
            let density = rng.random_range(0.2..0.9);
            let table: Vec<bool> = (0..(k + 1) * (k + 1))
                .map(|_| rng.random_bool(density))
                .collect();
            // Index k stands for the boundary.
            let rule = |a: Option<usize>, b: Option<usize>| {
                table[a.unwrap_or(k) * (k + 1) + b.unwrap_or(k)]
            };
            let Ok(mask) = TransitionMask::from_fn(k, rule) else {
                continue;
            };
            let scores = random_scores(&mut rng, seq_len, k);
            match (viterbi(&scores, &mask), brute_force(&scores, &mask)) {
                (Ok(path), Some((best, best_path))) => {
                    assert!(mask.is_valid(&path), "case {case}: {path:?} not allowed");
                    let got = score_of(&scores, k, &path);
                    assert!((got - best).abs() < 1e-9, "case {case}: {got} vs {best}");
                    assert_eq!(path, best_path, "case {case}");
                    decoded += 1;
                }
                (Err(e), None) => {
                    assert!(e.to_string().contains("no tag sequence"), "{e}");
                    impossible += 1;
                }
                (got, want) => panic!("case {case}: viterbi {got:?}, brute force {want:?}"),
            }
        }
        assert!(
            decoded > 200 && impossible > 0,
            "{decoded} decoded, {impossible} impossible"
        );
    }

    #[test]
    fn unconstrained_equals_argmax() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..50 {
            let k = rng.random_range(1..=9);
            let seq_len = rng.random_range(0..=12);
            let scores = random_scores(&mut rng, seq_len, k);
            let mask = TransitionMask::unconstrained(k);
            assert!(mask.is_unconstrained());
            let argmax: Vec<u32> = scores
                .chunks(k)
                .map(|row| {
                    let mut best = 0;
                    for (t, &s) in row.iter().enumerate() {
                        if s > row[best] {
                            best = t;
                        }
                    }
                    best as u32
                })
                .collect();
            assert_eq!(viterbi(&scores, &mask).unwrap(), argmax);
        }
    }

    /// Tags `O, B-X, I-X, B-Y, I-Y` under BIO: `I-T` only after `B-T` or `I-T`.
    fn bio_mask() -> TransitionMask {
        TransitionMask::from_fn(5, |a, b| match b {
            Some(i @ (2 | 4)) => a.is_some_and(|a| a == i || a == i - 1),
            _ => true,
        })
        .unwrap()
    }

    #[test]
    fn bio_decoding_repairs_what_argmax_gets_wrong() {
        // Per-step argmax: O I-X I-X (invalid). Best valid: O B-X I-X, since B-X is a close
        // second at step 1.
        let row = |best: usize, second: usize| {
            let mut r = vec![-5.0f32; 5];
            r[best] = -0.1;
            r[second] = -0.5;
            r
        };
        let scores: Vec<f32> = [row(0, 1), row(2, 1), row(2, 4)].concat();
        let mask = bio_mask();
        assert!(!mask.is_unconstrained());
        assert!(!mask.is_valid(&[0, 2, 2]));
        assert_eq!(viterbi(&scores, &mask).unwrap(), [0, 1, 2]);
        assert_eq!(
            viterbi(&scores, &TransitionMask::unconstrained(5)).unwrap(),
            [0, 2, 2]
        );
    }

    #[test]
    fn rejects_bad_arguments() {
        let mask = bio_mask();
        let e = viterbi(&[0.0; 7], &mask).unwrap_err().to_string();
        assert!(e.contains("multiple of the 5 tags"), "{e}");
        let mut s = [0.0f32; 5];
        s[3] = f32::NAN;
        assert!(viterbi(&s, &mask)
            .unwrap_err()
            .to_string()
            .contains("non-finite"));
        assert!(viterbi(&[], &mask).unwrap().is_empty());
        assert!(TransitionMask::from_fn(0, |_, _| true).is_err());
        let e = TransitionMask::from_fn(2, |a, _| a.is_some())
            .unwrap_err()
            .to_string();
        assert!(e.contains("no tag start"), "{e}");
        assert!(!mask.is_valid(&[7]));
        let e = viterbi(&[], &TransitionMask::unconstrained(0)).unwrap_err();
        assert!(e.to_string().contains("0 tags"), "{e}");
    }
}

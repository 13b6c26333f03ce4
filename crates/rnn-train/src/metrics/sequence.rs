//! Metrics of generated sequences against references: exact match and corpus BLEU.

use std::collections::HashMap;
use std::hash::Hash;

use super::{check_same_len, invalid, ratio_or_zero, Metric};
use crate::Result;

/// Fraction of generated sequences identical to their reference (same length, same tokens).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExactMatch {
    matched: u64,
    total: u64,
}

impl ExactMatch {
    /// Nothing counted yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `hypotheses[i]` compared with `references[i]`; both slices have the same length.
    /// Tokens may be ids (`Vec<u32>`) or anything comparable (`Vec<&str>`, `String`s' bytes).
    pub fn update<T, H, R>(&mut self, hypotheses: &[H], references: &[R]) -> Result<()>
    where
        T: PartialEq,
        H: AsRef<[T]>,
        R: AsRef<[T]>,
    {
        check_same_len(
            "ExactMatch::update",
            "hypotheses",
            hypotheses.len(),
            "references",
            references.len(),
        )?;
        for (h, r) in hypotheses.iter().zip(references) {
            self.matched += u64::from(h.as_ref() == r.as_ref());
        }
        self.total += hypotheses.len() as u64;
        Ok(())
    }
}

impl Metric for ExactMatch {
    /// Matched over compared sequences, or `None` if none has been compared.
    type Output = Option<f64>;

    fn compute(&self) -> Option<f64> {
        (self.total > 0).then(|| self.matched as f64 / self.total as f64)
    }

    /// The exact-match rate.
    fn value(&self) -> Option<f64> {
        self.compute()
    }

    fn reset(&mut self) {
        self.matched = 0;
        self.total = 0;
    }

    fn name(&self) -> &'static str {
        "exact_match"
    }
}

/// Corpus-level BLEU (Papineni et al., 2002) with one reference per hypothesis.
///
/// For each order `n = 1..=N` (default `N = 4`) the clipped n-gram matches and the hypothesis
/// n-gram counts are summed over the whole corpus; precision `p_n` is their ratio. With the total
/// hypothesis length `c` and reference length `r`, the brevity penalty is `BP = 1` if `c > r`,
/// else `exp(1 - r / c)` (0 if `c = 0`), and `BLEU = BP * exp(sum_n ln(p_n) / N)` (uniform
/// weights). There is no smoothing: if any `p_n` is 0 the score is 0, as in sacrebleu with
/// `smooth_method="none"` (NLTK's unsmoothed `corpus_bleu` returns a number around 1e-77 there).
/// Scores are in `[0, 1]` (sacrebleu reports 100 times that).
///
/// Tokens are compared as given: ids, or words split by [`CorpusBleu::update_text`] on white
/// space (no lower-casing and no punctuation splitting, so not sacrebleu's `13a` tokenizer;
/// comparable with NLTK on `str.split()` tokens). One difference from NLTK remains: NLTK counts
/// at least one n-gram per sentence in the denominator even when the hypothesis is shorter than
/// `n`, whereas here (as in the paper and sacrebleu) the denominator is the true n-gram count;
/// the two agree when every hypothesis has at least `N` tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct CorpusBleu {
    max_order: usize,
    /// Clipped matches per order (index `n - 1`).
    matches: Vec<u64>,
    /// Hypothesis n-grams per order (index `n - 1`).
    totals: Vec<u64>,
    hypothesis_length: u64,
    reference_length: u64,
    sentences: u64,
}

/// The result of [`CorpusBleu`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BleuScore {
    /// BLEU in `[0, 1]`.
    pub bleu: f64,
    /// Modified (clipped) n-gram precisions `p_1 ..= p_N`, each in `[0, 1]` (0 when the corpus
    /// has no hypothesis n-gram of that order).
    pub precisions: Vec<f64>,
    /// Brevity penalty in `[0, 1]`.
    pub brevity_penalty: f64,
    /// Total hypothesis length `c` in tokens.
    pub hypothesis_length: u64,
    /// Total reference length `r` in tokens.
    pub reference_length: u64,
}

impl Default for CorpusBleu {
    fn default() -> Self {
        Self::new()
    }
}

impl CorpusBleu {
    /// BLEU-4: n-grams up to 4 with uniform weights 1/4.
    pub fn new() -> Self {
        Self::empty(4)
    }

    /// BLEU up to `max_order`-grams with uniform weights `1 / max_order`; `max_order` must be at
    /// least 1.
    pub fn with_max_order(max_order: usize) -> Result<Self> {
        if max_order == 0 {
            return Err(invalid(
                "CorpusBleu::with_max_order: `max_order` must be at least 1, got 0",
            ));
        }
        Ok(Self::empty(max_order))
    }

    fn empty(max_order: usize) -> Self {
        Self {
            max_order,
            matches: vec![0; max_order],
            totals: vec![0; max_order],
            hypothesis_length: 0,
            reference_length: 0,
            sentences: 0,
        }
    }

    /// The largest n-gram order `N`.
    pub fn max_order(&self) -> usize {
        self.max_order
    }

    /// Adds sentence pairs: `hypotheses[i]` is scored against its single reference
    /// `references[i]`; both slices have the same length. Tokens are ids (`Vec<u32>`) or
    /// anything hashable (`Vec<&str>`).
    pub fn update<T, H, R>(&mut self, hypotheses: &[H], references: &[R]) -> Result<()>
    where
        T: Eq + Hash,
        H: AsRef<[T]>,
        R: AsRef<[T]>,
    {
        check_same_len(
            "CorpusBleu::update",
            "hypotheses",
            hypotheses.len(),
            "references",
            references.len(),
        )?;
        for (h, r) in hypotheses.iter().zip(references) {
            self.add_sentence(h.as_ref(), r.as_ref());
        }
        Ok(())
    }

    /// [`CorpusBleu::update`] on text, split into words on white space.
    pub fn update_text<S: AsRef<str>>(&mut self, hypotheses: &[S], references: &[S]) -> Result<()> {
        check_same_len(
            "CorpusBleu::update_text",
            "hypotheses",
            hypotheses.len(),
            "references",
            references.len(),
        )?;
        for (h, r) in hypotheses.iter().zip(references) {
            let h: Vec<&str> = h.as_ref().split_whitespace().collect();
            let r: Vec<&str> = r.as_ref().split_whitespace().collect();
            self.add_sentence(&h, &r);
        }
        Ok(())
    }

    fn add_sentence<T: Eq + Hash>(&mut self, hypothesis: &[T], reference: &[T]) {
        for n in 1..=self.max_order {
            let reference_counts = ngram_counts(reference, n);
            let hypothesis_counts = ngram_counts(hypothesis, n);
            // Clipping: an n-gram is credited at most as often as it occurs in the reference.
            let clipped: u64 = hypothesis_counts
                .iter()
                .map(|(gram, &count)| count.min(reference_counts.get(gram).copied().unwrap_or(0)))
                .sum();
            self.matches[n - 1] += clipped;
            self.totals[n - 1] += hypothesis.len().saturating_sub(n - 1) as u64;
        }
        self.hypothesis_length += hypothesis.len() as u64;
        self.reference_length += reference.len() as u64;
        self.sentences += 1;
    }
}

/// How often each n-gram (a window of `n >= 1` tokens) occurs in `tokens`.
fn ngram_counts<T: Eq + Hash>(tokens: &[T], n: usize) -> HashMap<&[T], u64> {
    let mut counts = HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

impl Metric for CorpusBleu {
    /// The score, or `None` if no sentence pair has been added.
    type Output = Option<BleuScore>;

    fn compute(&self) -> Option<BleuScore> {
        if self.sentences == 0 {
            return None;
        }
        let precisions: Vec<f64> = self
            .matches
            .iter()
            .zip(&self.totals)
            .map(|(&m, &t)| ratio_or_zero(m, t))
            .collect();
        let (c, r) = (self.hypothesis_length, self.reference_length);
        let brevity_penalty = if c == 0 {
            0.0
        } else if c > r {
            1.0
        } else {
            (1.0 - r as f64 / c as f64).exp()
        };
        let bleu = if precisions.contains(&0.0) {
            0.0
        } else {
            let mean_log = precisions.iter().map(|p| p.ln()).sum::<f64>() / self.max_order as f64;
            brevity_penalty * mean_log.exp()
        };
        Some(BleuScore {
            bleu,
            precisions,
            brevity_penalty,
            hypothesis_length: c,
            reference_length: r,
        })
    }

    /// The BLEU score in `[0, 1]`.
    fn value(&self) -> Option<f64> {
        self.compute().map(|s| s.bleu)
    }

    fn reset(&mut self) {
        *self = Self::empty(self.max_order);
    }

    fn name(&self) -> &'static str {
        "bleu"
    }
}

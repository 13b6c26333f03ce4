//! Vocabulary: tokens to ids and back, with the special tokens `<pad> <unk> <bos> <eos>` first.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// Padding token (id 0).
pub const PAD: &str = "<pad>";
/// Unknown token (id 1).
pub const UNK: &str = "<unk>";
/// Beginning of sequence (id 2).
pub const BOS: &str = "<bos>";
/// End of sequence (id 3).
pub const EOS: &str = "<eos>";

/// A token vocabulary. Ids 0-3 are `<pad> <unk> <bos> <eos>`; the rest are ordered by decreasing
/// frequency, ties by the token's text, so the same corpus always gives the same ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vocab {
    tokens: Vec<String>,
    #[serde(skip)]
    index: HashMap<String, u32>,
}

impl Vocab {
    /// Builds a vocabulary from tokens, keeping those seen at least `min_freq` times, at most
    /// `max_size` tokens in all (specials included; `None` = no limit).
    pub fn build<'a>(
        tokens: impl IntoIterator<Item = &'a str>,
        min_freq: usize,
        max_size: Option<usize>,
    ) -> Result<Self> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for t in tokens {
            *counts.entry(t).or_default() += 1;
        }
        Self::from_counts(counts, min_freq, max_size)
    }

    /// [`Vocab::build`] from token counts already made (as a streaming reader of a large corpus
    /// makes them, one token at a time): the same rules, the same ids.
    pub fn from_counts<S: AsRef<str>>(
        counts: impl IntoIterator<Item = (S, usize)>,
        min_freq: usize,
        max_size: Option<usize>,
    ) -> Result<Self> {
        if let Some(max) = max_size {
            if max < 4 {
                return Err(Error::Invalid(format!(
                    "vocabulary max_size must be at least 4 (the special tokens), got {max}"
                )));
            }
        }
        let specials = [PAD, UNK, BOS, EOS];
        let mut by_freq: Vec<(S, usize)> = counts
            .into_iter()
            .filter(|(t, c)| *c >= min_freq.max(1) && !specials.contains(&t.as_ref()))
            .collect();
        by_freq.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.as_ref().cmp(b.0.as_ref())));
        let mut list: Vec<String> = specials.iter().map(|s| s.to_string()).collect();
        let room = max_size.map_or(usize::MAX, |m| m - specials.len());
        list.extend(
            by_freq
                .into_iter()
                .take(room)
                .map(|(t, _)| t.as_ref().to_string()),
        );
        Ok(Self::from_tokens(list))
    }

    /// A vocabulary with exactly these tokens in this order (the first four must be the specials).
    pub fn from_tokens(tokens: Vec<String>) -> Self {
        let index = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        Self { tokens, index }
    }

    /// Number of tokens, specials included.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary has no tokens (never true for a built one).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The id of `token`, or `<unk>`'s.
    pub fn id(&self, token: &str) -> u32 {
        self.index.get(token).copied().unwrap_or(1)
    }

    /// The ids of `tokens`.
    pub fn encode<'a>(&self, tokens: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
        tokens.into_iter().map(|t| self.id(t)).collect()
    }

    /// The token of `id` (`<unk>` for an id out of range).
    pub fn token(&self, id: u32) -> &str {
        self.tokens.get(id as usize).map_or(UNK, String::as_str)
    }

    /// All tokens in id order.
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Rebuilds the lookup after deserialising (serde skips it). Checks the special tokens.
    pub fn from_json(json: &str) -> Result<Self> {
        let v: Vocab = serde_json::from_str(json)
            .map_err(|e| Error::Invalid(format!("vocabulary JSON: {e}")))?;
        let v = Self::from_tokens(v.tokens);
        let specials = [PAD, UNK, BOS, EOS];
        if v.tokens.len() < 4 || v.tokens[..4] != specials {
            return Err(Error::Invalid(format!(
                "vocabulary JSON: the first tokens must be {specials:?}"
            )));
        }
        if v.index.len() != v.tokens.len() {
            return Err(Error::Invalid("vocabulary JSON: duplicate tokens".into()));
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specials_first_then_by_frequency_with_limits() {
        let words = "b a c a b a d".split(' ');
        let v = Vocab::build(words.clone(), 1, None).unwrap();
        assert_eq!(v.tokens()[..4], [PAD, UNK, BOS, EOS]);
        assert_eq!(v.tokens()[4..], ["a", "b", "c", "d"]);
        assert_eq!(v.encode(["a", "zzz"]), vec![4, 1]);
        assert_eq!(v.token(5), "b");
        let v2 = Vocab::build(words.clone(), 2, None).unwrap();
        assert_eq!(v2.tokens()[4..], ["a", "b"]);
        let v3 = Vocab::build(words, 1, Some(5)).unwrap();
        assert_eq!(v3.len(), 5);
        assert!(Vocab::build(["a"], 1, Some(3)).is_err());
        let counts = [("d", 1), ("c", 1), ("b", 2), ("a", 3), ("<unk>", 9)];
        assert_eq!(
            Vocab::from_counts(counts, 1, None).unwrap(),
            Vocab::build("b a c a b a d <unk>".split(' '), 1, None).unwrap()
        );
    }

    #[test]
    fn json_round_trip_and_validation() {
        let v = Vocab::build("x y y".split(' '), 1, None).unwrap();
        let json = serde_json::to_string(&v).unwrap();
        let back = Vocab::from_json(&json).unwrap();
        assert_eq!(back.id("y"), v.id("y"));
        assert!(Vocab::from_json(r#"{"tokens":["a","b"]}"#).is_err());
        assert!(Vocab::from_json("not json").is_err());
    }
}

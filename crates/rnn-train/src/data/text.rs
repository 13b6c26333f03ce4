//! Splitting text into tokens at the character or word level.

use super::vocab::EOS;
use serde::{Deserialize, Serialize};

/// Token granularity of a text corpus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    /// Every Unicode scalar value is a token, newlines included.
    Char,
    /// Whitespace-separated words; each line ends with `<eos>` (as in the PTB language-model setup).
    Word,
}

/// The tokens of `text` at `granularity`.
pub fn tokenize(text: &str, granularity: Granularity) -> Vec<String> {
    match granularity {
        Granularity::Char => text.chars().map(String::from).collect(),
        Granularity::Word => text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .flat_map(|l| {
                l.split_whitespace()
                    .map(str::to_string)
                    .chain(std::iter::once(EOS.to_string()))
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chars_and_words() {
        assert_eq!(
            tokenize("a\u{e9}\n", Granularity::Char),
            vec!["a", "\u{e9}", "\n"]
        );
        assert_eq!(
            tokenize(" the cat \n\n sat\n", Granularity::Word),
            vec!["the", "cat", EOS, "sat", EOS]
        );
    }
}

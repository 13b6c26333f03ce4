//! Splitting text into tokens at the character or word level.

use std::ops::ControlFlow;

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
    let mut tokens = Vec::new();
    let mut stream = TokenStream::new(granularity);
    let mut push = |t: &str| {
        tokens.push(t.to_string());
        ControlFlow::Continue(())
    };
    let _ = stream.feed(text, &mut push);
    let _ = stream.finish(&mut push);
    tokens
}

/// The tokens of a text that arrives piece by piece (a large file read in blocks), exactly as
/// [`tokenize`] gives them for the whole text (which is built on it): pieces may end anywhere,
/// even inside a line; [`TokenStream::finish`] ends the text (its last line needs no newline).
#[derive(Debug, Clone)]
pub struct TokenStream {
    granularity: Granularity,
    /// The start of a line whose end has not arrived yet (word level).
    line: String,
}

impl TokenStream {
    /// A stream at the start of a text.
    pub fn new(granularity: Granularity) -> Self {
        Self {
            granularity,
            line: String::new(),
        }
    }

    /// Calls `f` with each token that `piece` completes, in order, until `f` breaks.
    pub fn feed(
        &mut self,
        piece: &str,
        f: &mut impl FnMut(&str) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        match self.granularity {
            Granularity::Char => {
                let mut buf = [0u8; 4];
                for c in piece.chars() {
                    f(c.encode_utf8(&mut buf))?;
                }
                ControlFlow::Continue(())
            }
            Granularity::Word => {
                let mut rest = piece;
                while let Some(nl) = rest.find('\n') {
                    if self.line.is_empty() {
                        line_tokens(&rest[..nl], f)?;
                    } else {
                        self.line.push_str(&rest[..nl]);
                        let line = std::mem::take(&mut self.line);
                        line_tokens(&line, f)?;
                    }
                    rest = &rest[nl + 1..];
                }
                self.line.push_str(rest);
                ControlFlow::Continue(())
            }
        }
    }

    /// Ends the text: the tokens of a last line without a newline. The stream is then at the
    /// start of a new text.
    pub fn finish(&mut self, f: &mut impl FnMut(&str) -> ControlFlow<()>) -> ControlFlow<()> {
        let line = std::mem::take(&mut self.line);
        line_tokens(&line, f)
    }
}

/// The words of one line (without its newline) and `<eos>`; nothing for a blank line.
fn line_tokens(line: &str, f: &mut impl FnMut(&str) -> ControlFlow<()>) -> ControlFlow<()> {
    let mut any = false;
    for w in line.split_whitespace() {
        any = true;
        f(w)?;
    }
    if any {
        f(EOS)?;
    }
    ControlFlow::Continue(())
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

    #[test]
    fn pieces_cut_anywhere_give_the_same_tokens() {
        let text = " the cat \r\n\n sat on\tthe  mat\nl\u{e9}st line";
        for g in [Granularity::Word, Granularity::Char] {
            let whole = tokenize(text, g);
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
            for &a in &boundaries {
                for &b in boundaries.iter().filter(|&&b| b >= a) {
                    let mut got = Vec::new();
                    let mut push = |t: &str| {
                        got.push(t.to_string());
                        ControlFlow::Continue(())
                    };
                    let mut s = TokenStream::new(g);
                    for piece in [&text[..a], &text[a..b], &text[b..]] {
                        let _ = s.feed(piece, &mut push);
                    }
                    let _ = s.finish(&mut push);
                    assert_eq!(got, whole, "{g:?} cut at {a} and {b}");
                }
            }
        }
        assert_eq!(
            tokenize("a b\r\nc", Granularity::Word),
            vec!["a", "b", EOS, "c", EOS]
        );
    }
}

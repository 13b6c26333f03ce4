//! Entity-level scores for BIO / BIOES tagging: spans by exact match, with micro precision,
//! recall and F1, as [conlleval] and [seqeval] compute them.
//!
//! A tag is `O` or `P-TYPE`, where the prefix `P` is `B` (begin), `I` (inside), `E` (end) or `S`
//! (single); `L` and `U` (BILOU) are read as `E` and `S`. [`TagScheme::detect`] tells from a tag
//! set whether the tags form a scheme at all (UPOS tags such as `NOUN` do not).
//!
//! Two ways to read spans ([`SpanMode`]):
//! - [`SpanMode::Conlleval`], seqeval's default and conlleval's rules: every tag sequence
//!   yields spans, an `I-X` after `O` or after another type starts a new entity, and a type
//!   change ends one.
//! - [`SpanMode::Strict`], seqeval's `mode='strict'`: only well-formed spans of the given
//!   scheme count (`B-X I-X` under BIO; `B-X I-X E-X` or `S-X` under BIOES), and a tag whose
//!   prefix the scheme lacks is an error.
//!
//! An entity is correct when its type, first and last token all match a gold entity of the same
//! sentence. [`EntityF1`] sums the counts over sentences (micro average) and defines any ratio
//! over 0 as 0 (seqeval's `zero_division=0`); the cross-check against seqeval 1.2.2 lives in
//! `tests/entity_f1_seqeval.rs`.
//!
//! ```
//! use rnn_train::metrics::{EntityF1, Metric};
//!
//! let mut f1 = EntityF1::new();
//! f1.update(&["B-PER", "I-PER", "O", "B-LOC"], &["B-PER", "I-PER", "O", "B-ORG"])?;
//! let report = f1.compute();
//! assert_eq!((report.total.correct, report.total.predicted, report.total.gold), (1, 2, 2));
//! assert_eq!(report.f1, 0.5);
//! # Ok::<(), rnn_train::Error>(())
//! ```
//!
//! [conlleval]: https://www.clips.uantwerpen.be/conll2000/chunking/output.html
//! [seqeval]: https://github.com/chakki-works/seqeval

use std::collections::{BTreeMap, BTreeSet};

use super::{check_same_len, invalid, ratio_or_zero, Metric};
use crate::Result;

/// A tagging scheme of named-entity style tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TagScheme {
    /// `B-X`, `I-X`, `O` (IOB2; also IOB1 data, whose entities start with `I-X`).
    Bio,
    /// `B-X`, `I-X`, `E-X`, `S-X`, `O` (also called IOBES).
    Bioes,
    /// `B-X`, `I-X`, `L-X`, `U-X`, `O`: BIOES with other letters.
    Bilou,
}

/// A tag's role in a span, with `L` / `U` already read as `E` / `S`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prefix {
    B,
    I,
    E,
    S,
    O,
}

/// `O` or `P-TYPE` with `P` one of `BIESLU` and a non-empty type, else `None`. The second item
/// is the letter as written.
fn split_tag(tag: &str) -> Option<(Prefix, char, &str)> {
    if tag == "O" {
        return Some((Prefix::O, 'O', ""));
    }
    let (p, kind) = tag.split_once('-')?;
    let letter = match p {
        "B" => 'B',
        "I" => 'I',
        "E" => 'E',
        "S" => 'S',
        "L" => 'L',
        "U" => 'U',
        _ => return None,
    };
    (!kind.is_empty()).then_some((prefix_of(letter)?, letter, kind))
}

/// The role of a prefix letter (`L` = `E`, `U` = `S`), `None` for any other letter.
fn prefix_of(letter: char) -> Option<Prefix> {
    Some(match letter {
        'B' => Prefix::B,
        'I' => Prefix::I,
        'E' | 'L' => Prefix::E,
        'S' | 'U' => Prefix::S,
        'O' => Prefix::O,
        _ => return None,
    })
}

impl TagScheme {
    /// The scheme that `tags` (a tag set or a tag sequence) follow: every tag is `O` or
    /// `P-TYPE`, at least one is not `O`, and the prefixes are those of one scheme (BIO when
    /// only `B` and `I` occur). `None` for anything else, e.g. part-of-speech tags.
    pub fn detect<I, S>(tags: I) -> Option<TagScheme>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let (mut entity, mut es, mut lu) = (false, false, false);
        for tag in tags {
            let (prefix, letter, _) = split_tag(tag.as_ref())?;
            entity |= prefix != Prefix::O;
            es |= matches!(letter, 'E' | 'S');
            lu |= matches!(letter, 'L' | 'U');
        }
        match (entity, es, lu) {
            (false, _, _) | (true, true, true) => None,
            (true, false, false) => Some(TagScheme::Bio),
            (true, true, false) => Some(TagScheme::Bioes),
            (true, false, true) => Some(TagScheme::Bilou),
        }
    }

    /// The scheme's usual name: `"BIO"`, `"BIOES"` or `"BILOU"`.
    pub fn name(self) -> &'static str {
        match self {
            TagScheme::Bio => "BIO",
            TagScheme::Bioes => "BIOES",
            TagScheme::Bilou => "BILOU",
        }
    }

    /// The prefix letters the scheme uses besides `O`.
    fn letters(self) -> &'static [char] {
        match self {
            TagScheme::Bio => &['B', 'I'],
            TagScheme::Bioes => &['B', 'I', 'E', 'S'],
            TagScheme::Bilou => &['B', 'I', 'L', 'U'],
        }
    }

    /// Whether `tag` belongs to the scheme (`O` or `P-TYPE` with one of its prefixes).
    pub fn has_tag(self, tag: &str) -> bool {
        split_tag(tag)
            .is_some_and(|(p, letter, _)| p == Prefix::O || self.letters().contains(&letter))
    }

    /// Whether `next` may follow `prev` in a well-formed sequence; `None` stands for the
    /// sentence boundary, so `allows(None, Some(t))` says whether a sentence may start with `t`
    /// and `allows(Some(t), None)` whether it may end with it. A tag outside the scheme is
    /// never allowed.
    ///
    /// BIO: `I-X` only after `B-X` or `I-X`; everything else anywhere. BIOES / BILOU: `I-X` and
    /// `E-X` only after `B-X` or `I-X`; `O`, `B-Y`, `S-Y` and the sentence end only after `O`,
    /// `E-X`, `S-X` or the sentence start.
    pub fn allows(self, prev: Option<&str>, next: Option<&str>) -> bool {
        let (Some((p, p_kind)), Some((n, n_kind))) = (self.role(prev), self.role(next)) else {
            return false;
        };
        let continues = matches!(p, Prefix::B | Prefix::I) && p_kind == n_kind;
        match (self, n) {
            (_, Prefix::I) => continues,
            (TagScheme::Bio, _) => true,
            (_, Prefix::E) => continues,
            (_, Prefix::B | Prefix::S | Prefix::O) => {
                matches!(p, Prefix::O | Prefix::E | Prefix::S)
            }
        }
    }

    /// The role and type of a tag of the scheme (the boundary `None` acts as `O`), `None` for a
    /// tag outside the scheme.
    fn role(self, tag: Option<&str>) -> Option<(Prefix, &str)> {
        match tag {
            None => Some((Prefix::O, "")),
            Some(t) if self.has_tag(t) => split_tag(t).map(|(p, _, kind)| (p, kind)),
            Some(_) => None,
        }
    }

    /// Whether the whole sentence `tags` is well formed (every step, the start and the end
    /// [allowed](TagScheme::allows)); an empty sentence is.
    pub fn is_valid<S: AsRef<str>>(self, tags: &[S]) -> bool {
        let mut prev: Option<&str> = None;
        for t in tags {
            if !self.allows(prev, Some(t.as_ref())) {
                return false;
            }
            prev = Some(t.as_ref());
        }
        tags.is_empty() || self.allows(prev, None)
    }
}

/// How spans are read from tags (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SpanMode {
    /// conlleval's rules, seqeval's default: every tag sequence yields spans.
    #[default]
    Conlleval,
    /// seqeval's `mode='strict'` for the given scheme: only well-formed spans count.
    Strict(TagScheme),
}

/// An entity: its type and the tokens `start..end` (end exclusive) of its sentence.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span<'a> {
    /// The entity type, e.g. `PER` (`_` for a prefix without a type).
    pub kind: &'a str,
    /// Index of the first token.
    pub start: usize,
    /// One past the index of the last token.
    pub end: usize,
}

/// The entities of one sentence's `tags`, in order of their first token.
///
/// # Errors
/// An empty tag; in [`SpanMode::Strict`], a tag whose prefix the scheme lacks (seqeval raises
/// there too).
pub fn entity_spans<S: AsRef<str>>(tags: &[S], mode: SpanMode) -> Result<Vec<Span<'_>>> {
    if let Some(i) = tags.iter().position(|t| t.as_ref().is_empty()) {
        return Err(invalid(format!("entity spans: tag {i} is empty")));
    }
    match mode {
        SpanMode::Conlleval => Ok(conlleval_spans(tags)),
        SpanMode::Strict(scheme) => strict_spans(tags, scheme),
    }
}

/// seqeval's `get_entities` (conlleval's `endOfChunk` / `startOfChunk`) over `tags` followed by
/// one `O`. Type: the text after the first `-` past the prefix letter (`_` if empty).
fn conlleval_spans<S: AsRef<str>>(tags: &[S]) -> Vec<Span<'_>> {
    let mut out = Vec::new();
    let (mut prev_tag, mut prev_kind, mut begin) = ('O', None::<&str>, 0);
    let read = tags.iter().map(|t| conlleval_tag(t.as_ref()));
    for (i, (tag, kind)) in read.chain([('O', "_")]).enumerate() {
        let differs = prev_kind != Some(kind);
        let end = matches!(prev_tag, 'E' | 'S')
            || (matches!(prev_tag, 'B' | 'I') && matches!(tag, 'B' | 'S' | 'O'))
            || (!matches!(prev_tag, 'O' | '.') && differs);
        let start = matches!(tag, 'B' | 'S')
            || (matches!(prev_tag, 'E' | 'S' | 'O') && matches!(tag, 'E' | 'I'))
            || (!matches!(tag, 'O' | '.') && differs);
        if end {
            if let Some(kind) = prev_kind {
                out.push(Span {
                    kind,
                    start: begin,
                    end: i,
                });
            }
        }
        if start {
            begin = i;
        }
        prev_tag = tag;
        prev_kind = Some(kind);
    }
    out
}

/// A tag as conlleval reads it: its first letter and its type (the text after the first `-`
/// past the letter, `_` if empty).
fn conlleval_tag(tag: &str) -> (char, &str) {
    let mut chars = tag.chars();
    let first = chars.next().unwrap_or('O');
    let rest = chars.as_str();
    let kind = rest.split_once('-').map_or(rest, |(_, k)| k);
    let kind = if kind.is_empty() { "_" } else { kind };
    // BILOU letters as their BIOES twins (seqeval's default mode knows only BIOES).
    let letter = match (first, rest.starts_with('-')) {
        ('L', true) => 'E',
        ('U', true) => 'S',
        _ => first,
    };
    (letter, kind)
}

/// A token as seqeval's `scheme.Token` reads it: prefix and type (`_` if empty).
#[derive(Clone, Copy)]
struct StrictToken<'a> {
    prefix: Prefix,
    kind: &'a str,
}

const OUTSIDE: StrictToken<'static> = StrictToken {
    prefix: Prefix::O,
    kind: "_",
};

impl StrictToken<'_> {
    /// seqeval's `is_start`: `B` or `S` (after anything).
    fn is_start(self) -> bool {
        matches!(self.prefix, Prefix::B | Prefix::S)
    }

    /// seqeval's `is_inside`: `I` (or `E`) of the same type after `B` or `I`.
    fn is_inside(self, prev: StrictToken) -> bool {
        matches!(prev.prefix, Prefix::B | Prefix::I)
            && matches!(self.prefix, Prefix::I | Prefix::E)
            && prev.kind == self.kind
    }

    /// seqeval's `is_end`: whether a span closed by `prev` ends before `self`.
    fn is_end(self, prev: StrictToken, scheme: TagScheme) -> bool {
        match scheme {
            TagScheme::Bio => {
                matches!(prev.prefix, Prefix::B | Prefix::I)
                    && (matches!(self.prefix, Prefix::O | Prefix::B)
                        || (self.prefix == Prefix::I && prev.kind != self.kind))
            }
            TagScheme::Bioes | TagScheme::Bilou => matches!(prev.prefix, Prefix::E | Prefix::S),
        }
    }
}

/// seqeval's `Tokens.entities` for `scheme`.
fn strict_spans<S: AsRef<str>>(tags: &[S], scheme: TagScheme) -> Result<Vec<Span<'_>>> {
    let mut tokens = Vec::with_capacity(tags.len() + 1);
    for (i, tag) in tags.iter().enumerate() {
        let tag = tag.as_ref();
        let mut chars = tag.chars();
        let letter = chars.next().unwrap_or('O');
        let prefix = prefix_of(letter)
            .filter(|_| letter == 'O' || scheme.letters().contains(&letter))
            .ok_or_else(|| {
                invalid(format!(
                    "entity spans: tag {i} `{tag}` has a prefix the {} scheme lacks",
                    scheme.name()
                ))
            })?;
        let kind = chars.as_str().trim_matches('-');
        let kind = if kind.is_empty() { "_" } else { kind };
        tokens.push(StrictToken { prefix, kind });
    }
    tokens.push(OUTSIDE);
    let n = tags.len();
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let token = tokens[i];
        if token.is_start() {
            let mut end = i + 1;
            let mut inner = token;
            while tokens[end].is_inside(inner) {
                inner = tokens[end];
                end += 1;
            }
            if tokens[end].is_end(tokens[end - 1], scheme) {
                out.push(Span {
                    kind: token.kind,
                    start: i,
                    end,
                });
            }
            i = end;
        } else {
            i += 1;
        }
    }
    Ok(out)
}

/// Entity counts of one type, or of all types together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EntityCounts {
    /// Predicted entities that match a gold entity exactly (true positives).
    pub correct: u64,
    /// Predicted entities.
    pub predicted: u64,
    /// Gold entities.
    pub gold: u64,
}

impl EntityCounts {
    /// `correct / predicted` (0 when nothing was predicted).
    pub fn precision(&self) -> f64 {
        ratio_or_zero(self.correct, self.predicted)
    }

    /// `correct / gold` (0 when there is no gold entity).
    pub fn recall(&self) -> f64 {
        ratio_or_zero(self.correct, self.gold)
    }

    /// The harmonic mean of precision and recall, computed as seqeval does (0 when both are 0).
    pub fn f1(&self) -> f64 {
        let (p, r) = (self.precision(), self.recall());
        let denominator = if p + r == 0.0 { 1.0 } else { p + r };
        2.0 * p * r / denominator
    }

    fn add(&mut self, other: EntityCounts) {
        self.correct += other.correct;
        self.predicted += other.predicted;
        self.gold += other.gold;
    }
}

/// The result of [`EntityF1`]: micro-averaged scores and the counts behind them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityReport {
    /// Micro precision: all correct entities over all predicted ones.
    pub precision: f64,
    /// Micro recall: all correct entities over all gold ones.
    pub recall: f64,
    /// Micro F1 (seqeval's default `f1_score`).
    pub f1: f64,
    /// Counts summed over types.
    pub total: EntityCounts,
    /// Counts per entity type (types seen in the gold or the predicted tags).
    pub per_type: BTreeMap<String, EntityCounts>,
    /// Sentences added.
    pub sentences: u64,
}

/// Entity precision, recall and F1 by exact span, accumulated sentence by sentence (see the
/// [module docs](self)).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityF1 {
    mode: SpanMode,
    per_type: BTreeMap<String, EntityCounts>,
    sentences: u64,
}

impl EntityF1 {
    /// Spans read by conlleval's rules ([`SpanMode::Conlleval`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Spans read in `mode`.
    pub fn with_mode(mode: SpanMode) -> Self {
        Self {
            mode,
            ..Self::default()
        }
    }

    /// How spans are read.
    pub fn mode(&self) -> SpanMode {
        self.mode
    }

    /// Adds one sentence: its `predicted` and `gold` tags, of the same length.
    ///
    /// # Errors
    /// Different lengths, or a tag [`entity_spans`] refuses; the metric is then unchanged.
    pub fn update<P: AsRef<str>, G: AsRef<str>>(
        &mut self,
        predicted: &[P],
        gold: &[G],
    ) -> Result<()> {
        check_same_len(
            "EntityF1::update",
            "predicted",
            predicted.len(),
            "gold",
            gold.len(),
        )?;
        let predicted: BTreeSet<Span> = entity_spans(predicted, self.mode)?.into_iter().collect();
        let gold: BTreeSet<Span> = entity_spans(gold, self.mode)?.into_iter().collect();
        for s in &predicted {
            let counts = self.per_type.entry(s.kind.to_string()).or_default();
            counts.predicted += 1;
            counts.correct += u64::from(gold.contains(s));
        }
        for s in &gold {
            self.per_type.entry(s.kind.to_string()).or_default().gold += 1;
        }
        self.sentences += 1;
        Ok(())
    }
}

impl Metric for EntityF1 {
    type Output = EntityReport;

    fn compute(&self) -> EntityReport {
        let mut total = EntityCounts::default();
        for c in self.per_type.values() {
            total.add(*c);
        }
        EntityReport {
            precision: total.precision(),
            recall: total.recall(),
            f1: total.f1(),
            total,
            per_type: self.per_type.clone(),
            sentences: self.sentences,
        }
    }

    /// The micro F1, or `None` before any sentence has been added.
    fn value(&self) -> Option<f64> {
        (self.sentences > 0).then(|| self.compute().f1)
    }

    fn reset(&mut self) {
        self.per_type.clear();
        self.sentences = 0;
    }

    fn name(&self) -> &'static str {
        "entity_f1"
    }
}

#[cfg(test)]
mod tests;

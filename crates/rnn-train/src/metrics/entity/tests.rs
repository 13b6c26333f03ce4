//! Hand-worked cases of the entity metric; seqeval's numbers on a larger sample are checked in
//! `tests/entity_f1_seqeval.rs`.

use super::*;

fn tags(s: &str) -> Vec<&str> {
    s.split_whitespace().collect()
}

/// `(type, first, last)` with the last token inclusive, as seqeval's `get_entities` prints them.
fn spans_of(s: &str, mode: SpanMode) -> Vec<(String, usize, usize)> {
    entity_spans(&tags(s), mode)
        .unwrap()
        .into_iter()
        .map(|sp| (sp.kind.to_string(), sp.start, sp.end - 1))
        .collect()
}

fn e(kind: &str, first: usize, last: usize) -> (String, usize, usize) {
    (kind.to_string(), first, last)
}

const STRICT_BIO: SpanMode = SpanMode::Strict(TagScheme::Bio);
const STRICT_BIOES: SpanMode = SpanMode::Strict(TagScheme::Bioes);

#[test]
fn detects_the_scheme_from_the_tag_set() {
    assert_eq!(
        TagScheme::detect(["O", "B-PER", "I-PER"]),
        Some(TagScheme::Bio)
    );
    assert_eq!(TagScheme::detect(["I-LOC", "O"]), Some(TagScheme::Bio)); // IOB1 data
    assert_eq!(
        TagScheme::detect(["O", "B-PER", "E-PER", "S-LOC"]),
        Some(TagScheme::Bioes)
    );
    assert_eq!(TagScheme::detect(["U-LOC", "O"]), Some(TagScheme::Bilou));
    assert_eq!(TagScheme::detect(["NOUN", "VERB", "X"]), None); // UPOS
    assert_eq!(TagScheme::detect(["O"]), None); // no entity at all
    assert_eq!(TagScheme::detect(["O", "B-PER", "NOUN"]), None);
    assert_eq!(TagScheme::detect(["B-", "O"]), None); // no type
    assert_eq!(TagScheme::detect(["-LRB-", "NN"]), None);
    assert_eq!(TagScheme::detect(["E-PER", "L-PER"]), None); // two schemes mixed
    assert_eq!(TagScheme::detect(Vec::<String>::new()), None);
    assert_eq!(TagScheme::Bioes.name(), "BIOES");
}

#[test]
fn bio_transitions() {
    let s = TagScheme::Bio;
    assert!(s.allows(None, Some("B-PER")) && s.allows(None, Some("O")));
    assert!(!s.allows(None, Some("I-PER")));
    assert!(s.allows(Some("B-PER"), Some("I-PER")) && s.allows(Some("I-PER"), Some("I-PER")));
    assert!(!s.allows(Some("B-PER"), Some("I-LOC")) && !s.allows(Some("O"), Some("I-PER")));
    assert!(s.allows(Some("I-PER"), Some("B-PER")) && s.allows(Some("I-PER"), None));
    assert!(!s.allows(Some("O"), Some("E-PER"))); // not a BIO tag
    assert!(s.is_valid(&tags("B-PER I-PER O B-LOC B-LOC I-LOC")));
    assert!(!s.is_valid(&tags("O I-PER")));
    assert!(s.is_valid::<&str>(&[]));
}

#[test]
fn bioes_and_bilou_transitions() {
    for (s, e_, s_) in [(TagScheme::Bioes, "E", "S"), (TagScheme::Bilou, "L", "U")] {
        let t = |p: &str, k: &str| format!("{p}-{k}");
        let (b, i, end, single) = (t("B", "X"), t("I", "X"), t(e_, "X"), t(s_, "X"));
        assert!(s.allows(None, Some(&b)) && s.allows(None, Some(&single)));
        assert!(!s.allows(None, Some(&i)) && !s.allows(None, Some(&end)));
        assert!(s.allows(Some(&b), Some(&i)) && s.allows(Some(&b), Some(&end)));
        assert!(!s.allows(Some(&b), Some("O")) && !s.allows(Some(&i), Some(&b)));
        assert!(!s.allows(Some(&b), None) && !s.allows(Some(&i), None));
        assert!(s.allows(Some(&end), None) && s.allows(Some(&single), Some(&b)));
        assert!(!s.allows(Some(&b), Some(&t("I", "Y"))));
        assert!(!s.allows(Some(&single), Some(&i)));
        assert!(s.is_valid(&[b.as_str(), i.as_str(), end.as_str(), "O", single.as_str()]));
        assert!(!s.is_valid(&[b.as_str(), i.as_str()]));
    }
    assert!(!TagScheme::Bioes.allows(None, Some("U-X")));
}

#[test]
fn conlleval_spans_match_seqeval_get_entities() {
    // Each expected list is what seqeval.metrics.sequence_labeling.get_entities returns.
    let m = SpanMode::Conlleval;
    assert_eq!(
        spans_of("B-PER I-PER O B-LOC", m),
        [e("PER", 0, 1), e("LOC", 3, 3)]
    );
    // I after O starts an entity; a type change ends one and starts another.
    assert_eq!(
        spans_of("O I-PER I-PER I-LOC", m),
        [e("PER", 1, 2), e("LOC", 3, 3)]
    );
    // B after B / I splits; an entity runs to the sentence end.
    assert_eq!(
        spans_of("B-PER B-PER I-PER", m),
        [e("PER", 0, 0), e("PER", 1, 2)]
    );
    // BIOES: E and S close; I after E starts anew; E after O starts.
    assert_eq!(
        spans_of("B-PER E-PER S-LOC I-LOC E-LOC O E-ORG", m),
        [
            e("PER", 0, 1),
            e("LOC", 2, 2),
            e("LOC", 3, 4),
            e("ORG", 6, 6)
        ]
    );
    // An unterminated BIOES entity still counts in this mode.
    assert_eq!(spans_of("B-PER I-PER O", m), [e("PER", 0, 1)]);
    // BILOU letters read as BIOES.
    assert_eq!(
        spans_of("B-PER L-PER U-LOC", m),
        [e("PER", 0, 1), e("LOC", 2, 2)]
    );
    // Types keep their inner dashes; an entity at the first token.
    assert_eq!(spans_of("I-A-B O", m), [e("A-B", 0, 0)]);
    assert!(spans_of("O O", m).is_empty());
    assert!(spans_of("", m).is_empty());
}

#[test]
fn strict_spans_match_seqeval_strict_mode() {
    // Each expected list is what seqeval.scheme.Entities(..., scheme, mode strict) returns.
    assert_eq!(
        spans_of("B-PER I-PER O B-LOC", STRICT_BIO),
        [e("PER", 0, 1), e("LOC", 3, 3)]
    );
    // An I without its B is no entity; B-X I-Y ends X at the B.
    assert!(spans_of("O I-PER I-PER", STRICT_BIO).is_empty());
    assert_eq!(
        spans_of("B-PER I-LOC I-LOC B-ORG", STRICT_BIO),
        [e("PER", 0, 0), e("ORG", 3, 3)]
    );
    // BIOES: only B..E and S count.
    assert_eq!(
        spans_of("B-PER I-PER E-PER S-LOC B-ORG I-ORG O", STRICT_BIOES),
        [e("PER", 0, 2), e("LOC", 3, 3)]
    );
    assert!(spans_of("B-PER E-LOC", STRICT_BIOES).is_empty());
    assert!(spans_of("I-PER E-PER", STRICT_BIOES).is_empty());
    assert_eq!(
        spans_of("B-X L-X U-Y", SpanMode::Strict(TagScheme::Bilou)),
        [e("X", 0, 1), e("Y", 2, 2)]
    );
    let err = entity_spans(&tags("B-PER E-PER"), STRICT_BIO)
        .unwrap_err()
        .to_string();
    assert!(err.contains("E-PER") && err.contains("BIO"), "{err}");
    assert!(entity_spans(&["O", ""], SpanMode::Conlleval).is_err());
}

#[test]
fn micro_scores_over_sentences() {
    let mut m = EntityF1::new();
    assert_eq!(m.value(), None);
    assert_eq!(m.name(), "entity_f1");
    // Sentence 1: gold PER(0,1), LOC(3); predicted PER(0,1) correct, LOC(3) as ORG wrong.
    m.update(&tags("B-PER I-PER O B-ORG"), &tags("B-PER I-PER O B-LOC"))
        .unwrap();
    // Sentence 2: gold PER(0); predicted PER(0,1): wrong boundary; extra MISC(3).
    m.update(&tags("B-PER I-PER O B-MISC"), &tags("B-PER O O O"))
        .unwrap();
    // Sentence 3: the same spans at the same places as sentence 1 do not leak across.
    m.update(&tags("O O O O"), &tags("O O O B-LOC")).unwrap();
    let r = m.compute();
    // correct 1, predicted 4, gold 4.
    assert_eq!(
        r.total,
        EntityCounts {
            correct: 1,
            predicted: 4,
            gold: 4
        }
    );
    assert_eq!((r.precision, r.recall, r.f1), (0.25, 0.25, 0.25));
    assert_eq!(r.sentences, 3);
    assert_eq!(
        r.per_type["PER"],
        EntityCounts {
            correct: 1,
            predicted: 2,
            gold: 2
        }
    );
    assert_eq!(r.per_type["LOC"].recall(), 0.0);
    assert_eq!(r.per_type["ORG"].precision(), 0.0);
    assert_eq!(r.per_type["MISC"].f1(), 0.0);
    assert_eq!(m.value(), Some(0.25));
    m.reset();
    assert_eq!(m.value(), None);
}

#[test]
fn precision_and_recall_differ() {
    // gold 3 entities, predicted 2, both correct: P = 1, R = 2/3, F1 = 0.8.
    let mut m = EntityF1::new();
    m.update(&tags("B-A O B-B O O"), &tags("B-A O B-B O B-C"))
        .unwrap();
    let r = m.compute();
    assert_eq!(r.precision, 1.0);
    assert!((r.recall - 2.0 / 3.0).abs() < 1e-15);
    assert!((r.f1 - 0.8).abs() < 1e-15);
}

#[test]
fn zero_division_is_zero_and_errors_leave_the_metric_unchanged() {
    let mut m = EntityF1::new();
    m.update(&tags("O O"), &tags("O O")).unwrap();
    let r = m.compute();
    assert_eq!((r.precision, r.recall, r.f1), (0.0, 0.0, 0.0));
    assert_eq!(m.value(), Some(0.0));
    let before = m.clone();
    let err = m.update(&tags("O"), &tags("O O")).unwrap_err().to_string();
    assert!(err.contains("predicted") && err.contains("gold"), "{err}");
    let mut strict = EntityF1::with_mode(STRICT_BIO);
    assert!(strict.update(&tags("S-X"), &tags("O")).is_err());
    assert_eq!(strict.compute().sentences, 0);
    assert_eq!(m, before);
}

#[test]
fn strict_and_default_modes_differ_on_invalid_predictions() {
    let gold = tags("B-PER I-PER O");
    let pred = tags("I-PER I-PER O");
    let mut lenient = EntityF1::new();
    let mut strict = EntityF1::with_mode(STRICT_BIO);
    lenient.update(&pred, &gold).unwrap();
    strict.update(&pred, &gold).unwrap();
    assert_eq!(lenient.compute().f1, 1.0);
    assert_eq!(strict.compute().total.predicted, 0);
    assert_eq!(strict.mode(), STRICT_BIO);
}

use std::collections::HashMap;

use super::*;
use candle_core::Device;

const EPS: f64 = 1e-12;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

fn assert_close(a: f64, b: f64, tol: f64) {
    assert!(close(a, b, tol), "{a} vs {b} (tolerance {tol})");
}

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

#[test]
fn mean_loss_is_weighted_by_count() {
    let mut m = MeanLoss::new();
    assert_eq!(m.compute(), None);
    // Batch of 1 item with mean 2.0 and batch of 3 with mean 1.0: (2*1 + 1*3) / 4 = 1.25,
    // not the mean of batch means (1.5).
    m.update(2.0, 1);
    m.update(1.0, 3);
    m.update(100.0, 0); // nothing to weigh: ignored
    assert_close(m.compute().unwrap(), 1.25, EPS);
    assert_eq!(m.count(), 4);
    // So far the sum is 5 over 4 items; one more item of 0.25 from a scalar tensor:
    // (5 + 0.25) / 5 = 1.05.
    m.update_tensor(&Tensor::new(0.25f32, &Device::Cpu).unwrap(), 1)
        .unwrap();
    assert_close(m.value().unwrap(), 5.25 / 5.0, 1e-7);
    let err = m
        .update_tensor(&Tensor::new(&[1f32, 2.0], &Device::Cpu).unwrap(), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch_mean") && err.contains("[2]"), "{err}");
    m.reset();
    assert_eq!(m.compute(), None);
    assert_eq!(m.name(), "mean_loss");
}

#[test]
fn accuracy_ignores_padding_targets() {
    let pad = 0;
    let mut acc = Accuracy::with_ignore_index(pad);
    // Positions 3 and 4 are padding (target 0): skipped whatever is predicted there.
    // Counted: (1,1) ok, (2,2) ok, (3,2) wrong -> 2 / 3.
    acc.update(&[1, 2, 3, 0, 5], &[1, 2, 2, 0, 0]).unwrap();
    assert_eq!((acc.correct(), acc.total()), (2, 3));
    assert_close(acc.compute().unwrap(), 2.0 / 3.0, EPS);

    // Without an ignore index the same batch counts 5 positions: 3 correct -> 3 / 5.
    let mut plain = Accuracy::new();
    plain.update(&[1, 2, 3, 0, 5], &[1, 2, 2, 0, 0]).unwrap();
    assert_close(plain.compute().unwrap(), 0.6, EPS);

    // Mask variant: only positions 0 and 2 counted: (1,1) ok, (3,2) wrong -> 1 / 2.
    let mut masked = Accuracy::new();
    masked
        .update_masked(&[1, 2, 3], &[1, 2, 2], &[true, false, true])
        .unwrap();
    assert_close(masked.compute().unwrap(), 0.5, EPS);

    let err = acc.update(&[1, 2], &[1]).unwrap_err().to_string();
    assert!(
        err.contains("predictions") && err.contains('2') && err.contains('1'),
        "{err}"
    );
    // A failed update changes nothing.
    assert_eq!(acc.total(), 3);

    acc.reset();
    assert_eq!(acc.compute(), None);
    assert_eq!(acc.ignore_index(), Some(pad));
}

#[test]
fn accuracy_from_logits_with_padding() {
    let dev = Device::Cpu;
    // (B=1, T=3, C=3); argmax per position: 1, 0, 2. Targets 1, 2, pad(0).
    // Counted: position 0 correct, position 1 wrong; position 2 is padding -> 1 / 2.
    let logits = Tensor::new(
        &[[[0f32, 5.0, 1.0], [3.0, 1.0, 2.0], [0.0, 0.0, 9.0]]],
        &dev,
    )
    .unwrap();
    let targets = Tensor::new(&[[1u32, 2, 0]], &dev).unwrap();
    let mut acc = Accuracy::with_ignore_index(0);
    acc.update_logits(&logits, &targets).unwrap();
    assert_close(acc.compute().unwrap(), 0.5, EPS);

    let bad = Tensor::new(&[1u32, 2, 0], &dev).unwrap();
    let err = acc.update_logits(&logits, &bad).unwrap_err().to_string();
    assert!(err.contains("[1, 3, 3]") && err.contains("[3]"), "{err}");
}

#[test]
fn confusion_matrix_three_classes() {
    // Checked against scikit-learn 1.9.1:
    //   t = [0,0,0,0,1,1,2,2,2]; p = [0,0,1,2,1,0,2,2,1]
    //   precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    //   -> (0.5555..., 0.5555..., 0.546031746031746, None)
    let targets = [0, 0, 0, 0, 1, 1, 2, 2, 2];
    let predictions = [0, 0, 1, 2, 1, 0, 2, 2, 1];
    let mut cm = ConfusionMatrix::new(3).unwrap();
    cm.update(&predictions, &targets).unwrap();
    // rows = target, columns = prediction:
    //   t0: p0 2, p1 1, p2 1   (support 4)
    //   t1: p0 1, p1 1, p2 0   (support 2)
    //   t2: p0 0, p1 1, p2 2   (support 3)
    // column sums (predicted): 3, 3, 3
    assert_eq!(cm.counts(), &[2, 1, 1, 1, 1, 0, 0, 1, 2]);
    assert_eq!(cm.count(0, 2), 1);
    let r = cm.compute();
    // class 0: P = 2/3, R = 2/4, F1 = 2 (2/3)(1/2) / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    // class 1: P = 1/3, R = 1/2, F1 = 2 (1/6) / (5/6) = 2/5
    // class 2: P = 2/3, R = 2/3, F1 = 2/3
    let expected = [
        (2.0 / 3.0, 0.5, 4.0 / 7.0, 4),
        (1.0 / 3.0, 0.5, 0.4, 2),
        (2.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0, 3),
    ];
    for (c, &(p, rec, f1, support)) in expected.iter().enumerate() {
        let m = &r.per_class[c];
        assert_close(m.precision, p, EPS);
        assert_close(m.recall, rec, EPS);
        assert_close(m.f1, f1, EPS);
        assert_eq!(m.support, support);
        assert_eq!(m.predicted, 3);
    }
    // macro P = (2/3 + 1/3 + 2/3) / 3 = 5/9; macro R = (1/2 + 1/2 + 2/3) / 3 = 5/9
    // macro F1 = (4/7 + 2/5 + 2/3) / 3 = (60 + 42 + 70) / 105 / 3 = 172/315
    assert_close(r.macro_precision, 5.0 / 9.0, EPS);
    assert_close(r.macro_recall, 5.0 / 9.0, EPS);
    assert_close(r.macro_f1, 172.0 / 315.0, EPS);
    assert_close(r.macro_f1, 0.546031746031746, 1e-15);
    // accuracy = diagonal / total = (2 + 1 + 2) / 9
    assert_close(r.accuracy, 5.0 / 9.0, EPS);
    assert_eq!((r.total, r.present_classes), (9, 3));
    assert_close(cm.value().unwrap(), 172.0 / 315.0, EPS);

    cm.reset();
    assert!(cm.counts().iter().all(|&c| c == 0));
    assert_eq!(cm.value(), None);
    assert_eq!(cm.compute().macro_f1, 0.0);
}

#[test]
fn confusion_matrix_zero_division_and_absent_classes() {
    // K = 5; t = [0,1,1,2], p = [0,1,3,1]. scikit-learn 1.9.1,
    // precision_recall_fscore_support(t, p, average="macro", zero_division=0)
    // -> (0.375, 0.375, 0.375, None)   (with labels=range(5) it would be 0.3).
    let mut cm = ConfusionMatrix::new(5).unwrap();
    cm.update(&[0, 1, 3, 1], &[0, 1, 1, 2]).unwrap();
    let r = cm.compute();
    // class 0: tp 1, predicted 1, support 1 -> P = R = F1 = 1
    // class 1: tp 1, predicted 2, support 2 -> P = R = F1 = 1/2
    // class 2: never predicted -> P = 0 (0/0 defined 0); R = 0/1 = 0; F1 = 0
    // class 3: never a target -> P = 0/1 = 0; R = 0 (0/0 defined 0); F1 = 0
    // class 4: absent from both -> left out of the macro averages
    assert_eq!(r.per_class[2].predicted, 0);
    assert_eq!(r.per_class[2].precision, 0.0);
    assert_eq!(r.per_class[3].support, 0);
    assert_eq!(r.per_class[3].recall, 0.0);
    assert_eq!(r.present_classes, 4);
    // macro = (1 + 1/2 + 0 + 0) / 4 = 3/8 for P, R and F1
    assert_close(r.macro_precision, 0.375, EPS);
    assert_close(r.macro_recall, 0.375, EPS);
    assert_close(r.macro_f1, 0.375, EPS);
    assert_close(r.accuracy, 0.5, EPS);

    // Out-of-range ids are errors naming the argument and position, and add nothing.
    let err = cm.update(&[0, 7], &[0, 1]).unwrap_err().to_string();
    assert!(err.contains("predictions[1]") && err.contains('7'), "{err}");
    assert_eq!(cm.compute().total, 4);
    // A padding id outside 0..K is fine when ignored.
    let mut padded = ConfusionMatrix::new(2).unwrap().with_ignore_index(99);
    padded.update(&[1, 0, 1], &[1, 99, 0]).unwrap();
    assert_eq!(padded.compute().total, 2);
    assert!(ConfusionMatrix::new(0).is_err());
}

#[test]
fn perplexity_and_bits_per_token() {
    let mut ppl = Perplexity::new();
    assert_eq!(ppl.compute(), None);
    // 3 tokens each with p = 1/2: NLL = 3 ln 2; 1 token with p = 1/8: NLL = ln 8 = 3 ln 2.
    // Total 6 ln 2 over 4 tokens = 1.5 ln 2 nats/token
    // -> perplexity = exp(1.5 ln 2) = 2^1.5 = 2.8284..., bits/token = 1.5.
    let ln2 = std::f64::consts::LN_2;
    ppl.update(3.0 * ln2, 3).unwrap();
    ppl.update(8f64.ln(), 1).unwrap();
    let r = ppl.compute().unwrap();
    assert_close(r.nll_per_token, 1.5 * ln2, EPS);
    assert_close(r.perplexity, 2f64.powf(1.5), EPS);
    assert_close(r.bits_per_token, 1.5, EPS);
    assert_eq!(r.tokens, 4);

    let err = ppl.update(-1.0, 2).unwrap_err().to_string();
    assert!(err.contains("nll_sum") && err.contains("-1"), "{err}");
    assert!(ppl.update(1.0, 0).is_err());
    assert_eq!(ppl.tokens(), 4);
    ppl.reset();
    assert_eq!(ppl.value(), None);
}

#[test]
fn perplexity_from_uniform_logits_via_loss() {
    // Uniform logits over C = 4 classes: every token has p = 1/4, NLL = ln 4,
    // so perplexity = 4 and bits/token = 2. The masked position is not counted.
    let dev = Device::Cpu;
    let logits = Tensor::zeros((2, 3, 4), DType::F32, &dev).unwrap();
    let targets = Tensor::new(&[[0u32, 1, 2], [3, 0, 0]], &dev).unwrap();
    let mask = Tensor::new(&[[1f32, 1.0, 1.0], [1.0, 1.0, 0.0]], &dev).unwrap();
    let nll = masked_cross_entropy_sum(&logits, &targets, Some(&mask)).unwrap();
    assert_eq!(scalar(&nll.count), 5.0);
    let mut ppl = Perplexity::new();
    ppl.update_nll_sum(&nll).unwrap();
    let r = ppl.compute().unwrap();
    assert_eq!(r.tokens, 5);
    assert_close(r.perplexity, 4.0, 1e-5);
    assert_close(r.bits_per_token, 2.0, 1e-6);
}

#[test]
fn exact_match_counts_identical_sequences() {
    let mut em = ExactMatch::new();
    // [1,2,3] == [1,2,3]; [4,5] != [4,5,0] (length differs); [6] != [7] -> 1 / 3.
    let hyps = vec![vec![1u32, 2, 3], vec![4, 5], vec![6]];
    let refs = vec![vec![1u32, 2, 3], vec![4, 5, 0], vec![7]];
    em.update(&hyps, &refs).unwrap();
    assert_close(em.compute().unwrap(), 1.0 / 3.0, EPS);
    // Words work too: 1 more match -> 2 / 4.
    em.update(&[vec!["a", "b"]], &[vec!["a", "b"]]).unwrap();
    assert_close(em.value().unwrap(), 0.5, EPS);
    let err = em.update(&hyps, &refs[..2]).unwrap_err().to_string();
    assert!(
        err.contains("hypotheses") && err.contains("references"),
        "{err}"
    );
    em.reset();
    assert_eq!(em.compute(), None);
}

const HYPS: [&str; 4] = [
    "the cat sat on the mat",
    "a dog is in the garden",
    "he reads a book every night",
    "we love machine learning",
];
const REFS: [&str; 4] = [
    "the cat is on the mat",
    "there is a dog in the garden",
    "he reads the book every night",
    "we love machine learning very much",
];

#[test]
fn corpus_bleu_matches_hand_computation_and_nltk() {
    // Hand computation (clipped matches / hypothesis n-grams per sentence):
    //              1-grams  2-grams  3-grams  4-grams   c   r
    //   sentence 1   5/6      3/5      1/4      0/3     6   6
    //   sentence 2   6/6      3/5      1/4      0/3     6   7
    //   sentence 3   5/6      3/5      1/4      0/3     6   6
    //   sentence 4   4/4      3/3      2/2      1/1     4   6
    //   corpus      20/22    12/18     5/14     1/10   22  25
    // BP = exp(1 - 25/22) = exp(-3/22)
    // BLEU = exp(-3/22) * (20/22 * 12/18 * 5/14 * 1/10)^(1/4) = exp(-3/22) * (5/231)^(1/4)
    //      = 0.33467057610252227
    let hand = (-3.0f64 / 22.0).exp() * (5.0f64 / 231.0).powf(0.25);
    // Reference value from NLTK 3.10.4 (Python 3, `pip install nltk`):
    //   from nltk.translate.bleu_score import corpus_bleu
    //   hyps = ["the cat sat on the mat", "a dog is in the garden",
    //           "he reads a book every night", "we love machine learning"]
    //   refs = ["the cat is on the mat", "there is a dog in the garden",
    //           "he reads the book every night", "we love machine learning very much"]
    //   corpus_bleu([[r.split()] for r in refs], [h.split() for h in hyps])
    //   -> 0.3346705761025222
    let nltk = 0.3346705761025222;

    let mut bleu = CorpusBleu::new();
    bleu.update_text(&HYPS, &REFS).unwrap();
    let s = bleu.compute().unwrap();
    assert_close(s.bleu, hand, 1e-12);
    assert_close(s.bleu, nltk, 1e-12);
    let expected_p = [20.0 / 22.0, 12.0 / 18.0, 5.0 / 14.0, 1.0 / 10.0];
    for (p, e) in s.precisions.iter().zip(expected_p) {
        assert_close(*p, e, EPS);
    }
    assert_close(s.brevity_penalty, (-3.0f64 / 22.0).exp(), EPS);
    assert_eq!((s.hypothesis_length, s.reference_length), (22, 25));

    // The same corpus as token ids, added in two batches, gives the same score.
    let mut vocab: HashMap<&str, u32> = HashMap::new();
    let mut ids = |s: &'static str| -> Vec<u32> {
        s.split_whitespace()
            .map(|w| {
                let next = vocab.len() as u32;
                *vocab.entry(w).or_insert(next)
            })
            .collect()
    };
    let hyp_ids: Vec<Vec<u32>> = HYPS.iter().map(|s| ids(s)).collect();
    let ref_ids: Vec<Vec<u32>> = REFS.iter().map(|s| ids(s)).collect();
    let mut by_id = CorpusBleu::new();
    by_id.update(&hyp_ids[..1], &ref_ids[..1]).unwrap();
    by_id.update(&hyp_ids[1..], &ref_ids[1..]).unwrap();
    assert_close(by_id.value().unwrap(), nltk, 1e-12);

    bleu.reset();
    assert_eq!(bleu.compute(), None);
    assert_eq!(bleu.max_order(), 4);
}

#[test]
fn corpus_bleu_clipping_zero_precision_and_brevity() {
    // Papineni's example: "the" x7 against "the cat is on the mat". "the" occurs twice in the
    // reference, so the clipped unigram precision is 2/7; c = 7 > r = 6 so BP = 1.
    let mut b1 = CorpusBleu::with_max_order(1).unwrap();
    b1.update_text(&["the the the the the the the"], &["the cat is on the mat"])
        .unwrap();
    assert_close(b1.value().unwrap(), 2.0 / 7.0, EPS);

    // BLEU-4 of the same pair: no bigram matches ("the the" is not in the reference), so
    // p_2 = 0 and, without smoothing, BLEU = 0.
    let mut b4 = CorpusBleu::new();
    b4.update_text(&["the the the the the the the"], &["the cat is on the mat"])
        .unwrap();
    let s = b4.compute().unwrap();
    assert_close(s.precisions[0], 2.0 / 7.0, EPS);
    assert_eq!(s.precisions[1], 0.0);
    assert_eq!(s.bleu, 0.0);

    // Short hypothesis, perfect prefix, unigrams only: p_1 = 1, BP = exp(1 - 6/3) = e^-1.
    let mut short = CorpusBleu::with_max_order(1).unwrap();
    short
        .update(&[vec![1u32, 2, 3]], &[vec![1u32, 2, 3, 4, 5, 6]])
        .unwrap();
    assert_close(short.value().unwrap(), (-1.0f64).exp(), EPS);

    // An empty hypothesis: BP = 0 and BLEU = 0, not NaN.
    let mut empty = CorpusBleu::new();
    empty
        .update(&[Vec::<u32>::new()], &[vec![1u32, 2]])
        .unwrap();
    let s = empty.compute().unwrap();
    assert_eq!((s.bleu, s.brevity_penalty), (0.0, 0.0));

    assert!(CorpusBleu::with_max_order(0).is_err());
    let err = b4.update_text(&["a", "b"], &["a"]).unwrap_err().to_string();
    assert!(err.contains("hypotheses") && err.contains('2'), "{err}");
}

#[test]
fn regression_mae_rmse_mape() {
    let mut reg = RegressionMetrics::new();
    // errors p - t: 2-1 = 1, 0-0 = 0, 5-4 = 1, 1-4 = -3
    // MAE = (1 + 0 + 1 + 3) / 4 = 1.25
    // RMSE = sqrt((1 + 0 + 1 + 9) / 4) = sqrt(2.75)
    // MAPE skips the zero target: (1/1 + 1/4 + 3/4) / 3 = 2/3
    reg.update(&[2.0, 0.0, 5.0, 1.0], &[1.0, 0.0, 4.0, 4.0])
        .unwrap();
    let r = reg.compute().unwrap();
    assert_close(r.mae, 1.25, EPS);
    assert_close(r.rmse, 2.75f64.sqrt(), EPS);
    assert_close(r.mape.unwrap(), 2.0 / 3.0, EPS);
    assert_eq!((r.count, r.mape_count), (4, 3));

    // Tensor variant adds |3 - (-2)| = 5 on target -2: MAE = (5 + 5) / 5 = 2,
    // MAPE = (2 + 5/2) / 4 = 1.125.
    let dev = Device::Cpu;
    reg.update_tensors(
        &Tensor::new(&[3f32], &dev).unwrap(),
        &Tensor::new(&[-2f32], &dev).unwrap(),
    )
    .unwrap();
    let r = reg.compute().unwrap();
    assert_close(r.mae, 2.0, EPS);
    assert_close(r.mape.unwrap(), 1.125, EPS);
    assert_close(reg.value().unwrap(), ((11.0 + 25.0) / 5.0f64).sqrt(), EPS);

    let err = reg
        .update_tensors(
            &Tensor::new(&[3f32, 1.0], &dev).unwrap(),
            &Tensor::new(&[-2f32], &dev).unwrap(),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("[2]") && err.contains("[1]"), "{err}");

    // Only zero targets: MAPE undefined.
    let mut zeros = RegressionMetrics::new();
    zeros.update(&[1.0], &[0.0]).unwrap();
    assert_eq!(zeros.compute().unwrap().mape, None);

    reg.reset();
    assert_eq!(reg.compute(), None);
}

#[test]
fn metric_names_are_distinct() {
    let names = [
        MeanLoss::new().name(),
        Accuracy::new().name(),
        ConfusionMatrix::new(2).unwrap().name(),
        Perplexity::new().name(),
        ExactMatch::new().name(),
        CorpusBleu::new().name(),
        RegressionMetrics::new().name(),
    ];
    let unique: std::collections::HashSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
}

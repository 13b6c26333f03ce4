//! [`EntityF1`] against seqeval 1.2.2 on a committed sample: 300 BIO and 300 BIOES sentences
//! with partly ill-formed predictions, scored in seqeval's default (conlleval) and strict modes.
//! `tests/fixtures/entity_f1/make_fixture.py` made the JSON; CI never runs Python.

use std::path::Path;

use rnn_train::metrics::{EntityF1, Metric, SpanMode, TagScheme};
use serde_json::Value;

/// seqeval computes with NumPy float64 in the same order; only the last bits may differ.
const TOLERANCE: f64 = 1e-12;

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/entity_f1/seqeval_reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn sentences(v: &Value) -> Vec<Vec<String>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn close(what: &str, got: f64, want: &Value) {
    let want = want.as_f64().unwrap();
    assert!(
        (got - want).abs() <= TOLERANCE,
        "{what}: {got} vs seqeval {want}"
    );
}

#[test]
fn entity_f1_matches_seqeval_in_both_modes_and_schemes() {
    let fixture = fixture();
    let samples = fixture["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 2);
    for sample in samples {
        let name = sample["scheme"].as_str().unwrap();
        let scheme = match name {
            "BIO" => TagScheme::Bio,
            "BIOES" => TagScheme::Bioes,
            other => panic!("unknown scheme {other}"),
        };
        let gold = sentences(&sample["gold"]);
        let predicted = sentences(&sample["predicted"]);
        assert_eq!(gold.len(), 300);
        assert_eq!(TagScheme::detect(gold.iter().flatten()), Some(scheme));
        assert!(
            gold.iter().all(|s| scheme.is_valid(s)),
            "{name}: gold ill formed"
        );
        assert!(
            predicted.iter().any(|s| !scheme.is_valid(s)),
            "{name}: the sample should hold ill-formed predictions"
        );
        for (mode, key) in [
            (SpanMode::Conlleval, "default"),
            (SpanMode::Strict(scheme), "strict"),
        ] {
            let mut metric = EntityF1::with_mode(mode);
            for (p, g) in predicted.iter().zip(&gold) {
                metric.update(p, g).unwrap();
            }
            let report = metric.compute();
            let want = &sample[key];
            let what = format!("{name} {key}");
            close(
                &format!("{what} precision"),
                report.precision,
                &want["precision"],
            );
            close(&format!("{what} recall"), report.recall, &want["recall"]);
            close(&format!("{what} f1"), report.f1, &want["f1"]);
            let per_type = want["per_type"].as_object().unwrap();
            for (kind, w) in per_type {
                let counts = report.per_type.get(kind).copied().unwrap_or_default();
                close(
                    &format!("{what} {kind} precision"),
                    counts.precision(),
                    &w["precision"],
                );
                close(
                    &format!("{what} {kind} recall"),
                    counts.recall(),
                    &w["recall"],
                );
                close(&format!("{what} {kind} f1"), counts.f1(), &w["f1"]);
                assert_eq!(
                    counts.gold,
                    w["support"].as_u64().unwrap(),
                    "{what} {kind} support"
                );
            }
            assert_eq!(report.per_type.len(), per_type.len(), "{what}: types");
        }
    }
}

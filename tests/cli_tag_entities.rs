//! `rnn train tag` on named entities (2-column BIO CoNLL, generated): the headline is entity F1
//! in the summary, the test line and `eval`, `eval` agrees with the summary's best value, and
//! decoding never breaks the BIO transitions. POS data keep token accuracy
//! (`cli_classify_tag.rs`).
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rnn_train::metrics::TagScheme;

/// Runs the `rnn` binary and returns its stdout; fails the test on an error exit.
fn rnn(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rnn"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "rnn {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Sentences of a few templates with PER (1-3 tokens), LOC and ORG (1-2 tokens) in BIO.
fn ner_file(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let people = ["John Smith", "Mary", "Ann Lee Jones", "Ravi Patel", "Olga"];
    let places = ["Paris", "New York", "Oslo", "Cape Town"];
    let firms = ["Acme", "Blue Sky", "Nordbank"];
    let templates = [
        "PER lives in LOC .",
        "ORG hired PER in LOC .",
        "the weather in LOC is nice .",
        "PER met PER at ORG .",
        "nothing happened today .",
    ];
    let mut text = String::new();
    for _ in 0..n {
        let template = templates[rng.random_range(0..templates.len())];
        for word in template.split(' ') {
            let (entity, kind) = match word {
                "PER" => (people[rng.random_range(0..people.len())], "PER"),
                "LOC" => (places[rng.random_range(0..places.len())], "LOC"),
                "ORG" => (firms[rng.random_range(0..firms.len())], "ORG"),
                w => {
                    text.push_str(&format!("{w} O\n"));
                    continue;
                }
            };
            for (i, token) in entity.split(' ').enumerate() {
                let prefix = if i == 0 { "B" } else { "I" };
                text.push_str(&format!("{token} {prefix}-{kind}\n"));
            }
        }
        text.push('\n');
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The four decimals after `key` in `line`, e.g. `0.8123` after `"entity F1 "`.
fn number_after<'a>(line: &'a str, key: &str) -> &'a str {
    let at = line
        .find(key)
        .unwrap_or_else(|| panic!("no `{key}` in {line}"));
    let rest = &line[at + key.len()..];
    &rest[..rest
        .find(|c: char| c != '.' && !c.is_ascii_digit())
        .unwrap_or(rest.len())]
}

#[test]
fn entity_f1_is_the_headline_and_eval_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let train = ner_file(dir.path(), "train.txt", 240, 1);
    let test = ner_file(dir.path(), "test.txt", 40, 2);
    let out = dir.path().join("run");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let stdout = rnn(&[
        "train",
        "tag",
        "--data",
        &s(&train),
        "--test",
        &s(&test),
        "--out",
        &s(&out),
        "--device",
        "cpu",
        "--epochs",
        "2",
        "--eval-every",
        "8",
        "--hidden",
        "16",
        "--embedding",
        "16",
        "--batch-size",
        "16",
        "--lr",
        "0.02",
    ]);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("tag: step"))
        .unwrap_or_else(|| panic!("no summary line in {stdout}"));
    assert!(summary.contains(": entity_f1 "), "{summary}");
    assert!(summary.contains("; test entity F1 "), "{summary}");
    assert!(
        summary.contains("recall") && summary.contains("accuracy"),
        "{summary}"
    );
    let test_f1: f64 = number_after(summary, "test entity F1 ").parse().unwrap();
    assert!(test_f1 > 0.5, "the templates are easy: {summary}");

    // Every validation record logs the entity scores besides token accuracy.
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    for line in metrics.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["main"]["name"], "entity_f1", "{line}");
        for key in ["accuracy", "entity_precision", "entity_recall", "entity_f1"] {
            assert!(r["metrics"][key].is_f64(), "{key} in {line}");
        }
    }

    // `eval` scores the best checkpoint on the same test sentences as the headline.
    let eval = rnn(&["eval", "--checkpoint", &s(&out), "--device", "cpu"]);
    assert!(eval.starts_with("test entity F1 "), "{eval}");
    assert_eq!(
        number_after(&eval, "entity F1 "),
        number_after(summary, "test entity F1 "),
        "{eval} vs {summary}"
    );
    let on_test = rnn(&[
        "eval",
        "--checkpoint",
        &s(&out),
        "--data",
        &s(&test),
        "--device",
        "cpu",
    ]);
    assert!(
        on_test.contains("entity F1 ") && on_test.contains("accuracy "),
        "{on_test}"
    );

    // Constrained decoding: whatever the model thinks, no `I-X` without its `B-X` / `I-X`.
    let ckpt = rnn::cli::run::CheckpointRun::load(&out, &candle_core::Device::Cpu).unwrap();
    let tagger = rnn::tasks::tag::load(&ckpt).unwrap();
    for text in [
        "John Smith lives in Oslo .",
        "Smith Smith Smith",
        "in in Paris Paris York York .",
        "New",
        "Lee Jones hired Cape Town",
    ] {
        let pairs = rnn::tasks::tag::tag_sentence(&tagger, text, &ckpt.device).unwrap();
        let tags: Vec<&str> = pairs.iter().map(|(_, t)| t.as_str()).collect();
        assert!(TagScheme::Bio.is_valid(&tags), "{text}: {tags:?}");
    }
    let predicted = rnn(&[
        "predict",
        "--checkpoint",
        &s(&out),
        "--input",
        "Mary lives in Paris .",
        "--device",
        "cpu",
    ]);
    assert!(predicted.contains("Mary/"), "{predicted}");
}

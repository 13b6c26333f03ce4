//! Data files in other encodings and layouts (issue 25, items 5 and 6): `--encoding` on the text
//! tasks, a header line skipped with a notice, and `digits` reading CSV rows. The refusals
//! (wrong layouts, unknown encodings) are rows of `tests/bad_inputs.rs`.
#![cfg(feature = "cli")]

mod common;
use std::process::Command;

fn run(args: &[&str]) -> anyhow::Result<()> {
    let mut all = vec!["rnn"];
    all.extend_from_slice(args);
    rnn::cli::run(all)
}

fn err(args: &[&str]) -> String {
    format!("{:#}", run(args).expect_err("the command should fail"))
}

/// `label<TAB>text` lines in Latin-1: `pos` lines hold `génial`, `neg` lines `ennuyé`.
fn latin1_sentiment(n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..n {
        let line: &[u8] = if i % 2 == 0 {
            b"pos\tun film g\xe9nial et dr\xf4le\n"
        } else {
            b"neg\tun film ennuy\xe9 et lent\n"
        };
        out.extend_from_slice(line);
    }
    out
}

#[test]
fn classify_reads_latin1_with_encoding_and_eval_reuses_it() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("latin1.txt");
    std::fs::write(&data, latin1_sentiment(40)).unwrap();
    let out = d.path().join("run");
    let (data_s, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let base = [
        "train",
        "classify",
        "--data",
        data_s,
        "--out",
        out_s,
        "--device",
        "cpu",
        "--hidden",
        "8",
        "--embedding",
        "8",
        "--max-steps",
        "2",
    ];
    let e = err(&base);
    assert!(
        e.contains("latin1.txt:1: not valid UTF-8") && e.contains("--encoding latin1"),
        "{e}"
    );
    let mut args = base.to_vec();
    args.extend(["--encoding", "latin1"]);
    run(&args).unwrap();
    let config = std::fs::read_to_string(out.join("checkpoint/config.json")).unwrap();
    assert!(config.contains("windows-1252"), "{config}");
    let ckpt = out.join("checkpoint");
    run(&[
        "eval",
        "--checkpoint",
        ckpt.to_str().unwrap(),
        "--device",
        "cpu",
    ])
    .unwrap();
}

#[test]
fn a_header_line_is_skipped_with_a_notice() {
    let d = tempfile::tempdir().unwrap();
    let data = common::sentiment_file(d.path(), "body.txt", 40, 3);
    let mut text = b"label\ttext\n".to_vec();
    text.extend(std::fs::read(&data).unwrap());
    let with_header = d.path().join("header.tsv");
    std::fs::write(&with_header, text).unwrap();
    let out = d.path().join("run");
    let o = Command::new(common::rnn_bin())
        .args([
            "train",
            "classify",
            "--data",
            with_header.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--hidden",
            "8",
            "--embedding",
            "8",
            "--max-steps",
            "2",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{stderr}");
    assert!(
        stderr.contains("header.tsv:1: skipped a header line `label text`"),
        "{stderr}"
    );
    // Two classes, not three: the header did not become one.
    assert!(stderr.contains(" 2 labels"), "{stderr}");
}

#[test]
fn char_lm_and_seq2seq_read_their_encoding() {
    let d = tempfile::tempdir().unwrap();
    let text: Vec<u8> = b"le caf\xe9 est chaud et la cr\xe8me est froide\n".repeat(30);
    let corpus = d.path().join("corpus.txt");
    std::fs::write(&corpus, &text).unwrap();
    let out = d.path().join("lm");
    let lm = |extra: &[&str]| {
        let mut args = vec![
            "train",
            "char-lm",
            "--data",
            corpus.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--hidden",
            "8",
            "--embedding",
            "8",
            "--layers",
            "1",
            "--batch-size",
            "4",
            "--seq-len",
            "10",
            "--max-steps",
            "2",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let e = format!("{:#}", lm(&[]).unwrap_err());
    assert!(e.contains("corpus.txt:1: not valid UTF-8"), "{e}");
    lm(&["--encoding", "iso-8859-1"]).unwrap();
    let vocab = std::fs::read_to_string(out.join("checkpoint/vocab.json")).unwrap();
    assert!(
        vocab.contains('\u{e9}') || vocab.contains("\\u00e9"),
        "{vocab}"
    );

    let pairs: Vec<u8> =
        b"I am cold.\tJ'ai froid.\nIt is a caf\xe9.\tC'est un caf\xe9.\n".repeat(20);
    let tsv = d.path().join("pairs.tsv");
    std::fs::write(&tsv, &pairs).unwrap();
    let out = d.path().join("s2s");
    run(&[
        "train",
        "seq2seq",
        "--data",
        tsv.to_str().unwrap(),
        "--encoding",
        "latin1",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--hidden",
        "8",
        "--embedding",
        "8",
        "--max-steps",
        "2",
    ])
    .unwrap();
    let config = std::fs::read_to_string(out.join("checkpoint/config.json")).unwrap();
    assert!(config.contains("windows-1252"), "{config}");
}

/// CSV rows of 64 features (values 0-16, a stroke per class) then the class 0-2, with a header.
fn digit_rows(n: usize) -> String {
    let mut text = (0..64)
        .map(|i| format!("f{i}"))
        .collect::<Vec<_>>()
        .join(",")
        + ",class\n";
    for i in 0..n {
        let class = i % 3;
        let row: Vec<String> = (0..64)
            .map(|p| {
                let (r, c) = (p / 8, p % 8);
                let on = match class {
                    0 => r == 3 || r == 4,
                    1 => c == 3 || c == 4,
                    _ => r == c,
                };
                (if on { 16 } else { (p + i) % 3 }).to_string()
            })
            .collect();
        text.push_str(&format!("{},{class}\n", row.join(",")));
    }
    text
}

#[test]
fn digits_trains_and_evaluates_on_csv_rows() {
    let d = tempfile::tempdir().unwrap();
    let data = d.path().join("optdigits.csv");
    std::fs::write(&data, digit_rows(60)).unwrap();
    let out = d.path().join("run");
    run(&[
        "train",
        "digits",
        "--data",
        data.to_str().unwrap(),
        "--row-len",
        "8",
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--hidden",
        "8",
        "--max-steps",
        "3",
    ])
    .unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("checkpoint/config.json")).unwrap())
            .unwrap();
    let spec = &config["model"]["spec"];
    assert_eq!(
        (spec["rows"].as_u64(), spec["cols"].as_u64()),
        (Some(8), Some(8))
    );
    assert_eq!(spec["csv_scale"].as_f64(), Some(16.0));
    let ckpt = out.join("checkpoint");
    let ckpt = ckpt.to_str().unwrap();
    run(&["eval", "--checkpoint", ckpt, "--device", "cpu"]).unwrap();
    run(&[
        "eval",
        "--checkpoint",
        ckpt,
        "--data",
        data.to_str().unwrap(),
        "--device",
        "cpu",
    ])
    .unwrap();
    // Rows that do not fold into the model's steps are refused by eval.
    let other = d.path().join("other.csv");
    std::fs::write(&other, "1,2,3,0\n4,5,6,1\n").unwrap();
    let e = err(&[
        "eval",
        "--checkpoint",
        ckpt,
        "--data",
        other.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert!(
        e.contains("other.csv") && e.contains("time steps of 8 features"),
        "{e}"
    );
}

/// `tag --encoding latin1` reads a Latin-1 CoNLL file (refused without it, naming the line), and
/// `eval` reads it the same way from what the checkpoint recorded.
#[test]
fn tag_reads_latin1_conll_with_encoding_and_eval_reuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = Vec::new();
    for i in 0..60 {
        let (w, t) = if i % 2 == 0 {
            (&b"caf\xe9"[..], "NOUN")
        } else {
            (&b"na\xefve"[..], "ADJ")
        };
        bytes.extend_from_slice(b"le\tDET\n");
        bytes.extend_from_slice(w);
        bytes.extend_from_slice(format!("\t{t}\n.\tPUNCT\n\n").as_bytes());
    }
    let data = dir.path().join("fr.conll");
    std::fs::write(&data, &bytes).unwrap();
    let out = dir.path().join("run");
    let (data_s, out_s) = (data.to_str().unwrap(), out.to_str().unwrap());
    let e = err(&[
        "train", "tag", "--data", data_s, "--out", out_s, "--device", "cpu",
    ]);
    assert!(
        e.contains("fr.conll:2: not valid UTF-8") && e.contains("--encoding"),
        "{e}"
    );
    run(&[
        "train",
        "tag",
        "--data",
        data_s,
        "--encoding",
        "latin1",
        "--out",
        out_s,
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--embedding",
        "8",
    ])
    .unwrap();
    let ckpt = rnn::cli::run::CheckpointRun::load(&out, &candle_core::Device::Cpu).unwrap();
    let tagger = rnn::tasks::tag::load(&ckpt).unwrap();
    assert_eq!(tagger.encoding.name(), "windows-1252");
    assert!(
        tagger.vocab.len() > 4,
        "café and naïve decoded into the vocabulary"
    );
    run(&["eval", "--checkpoint", out_s, "--device", "cpu"]).unwrap();
}

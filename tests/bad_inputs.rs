//! Every bad input we tried, with the exact one-line error each gets (issue 8, parts 6 and 7).
//!
//! Each case below is one `#[test]` and one row of the table in `docs/BAD_INPUTS.md`; the test
//! `doc_table_is_up_to_date` renders the table from this list and compares it with the doc
//! (`RNN_BLESS=1 cargo test --test bad_inputs` rewrites the doc). A case makes its bad input in
//! a fresh temporary directory (generated data only), runs `rnn ...` in-process through
//! `rnn::cli::run` (or a library call), and compares the whole error line, as
//! `rnn::cli::main_entry` prints it after `error: `, with the expected text, the temporary
//! directory written `<tmp>`.
#![cfg(feature = "cli")]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};
use rnn::rnn_core::init::seeded_var_builder;
use rnn::rnn_core::{Mode, Rnn, RnnConfig, RnnState};

/// How a case produces its error.
enum Run {
    /// `setup` writes files into the temporary directory, then `rnn ARGS` runs (`<tmp>` in an
    /// argument is the temporary directory).
    Cli {
        setup: fn(&Path),
        args: &'static [&'static str],
    },
    /// A library call, described by `call`, run on the temporary directory.
    Lib {
        call: &'static str,
        f: fn(&Path) -> anyhow::Result<()>,
    },
}

/// One bad input and the error it must get.
struct Case {
    id: &'static str,
    /// What is wrong with the input (Markdown).
    input: &'static str,
    run: Run,
    /// The whole error line, `<tmp>` for the temporary directory.
    expect: &'static str,
    /// A known problem (the test is ignored and the row says so).
    issue: Option<&'static str>,
    /// The case does not apply when this feature of the `rnn` package is on.
    unless_feature: Option<&'static str>,
}

macro_rules! opt {
    () => {
        None
    };
    ($x:expr) => {
        Some($x)
    };
}

/// `id: "bad input", Run => "expected message" [, issue "why"] [, unless "feature"];` makes the
/// case list and one test per case.
macro_rules! cases {
    ($( $id:ident: $input:literal, $run:expr => $expect:literal
        $(, issue $why:literal)? $(, unless $feature:literal)?; )*) => {
        fn cases() -> Vec<Case> {
            vec![$(Case {
                id: stringify!($id),
                input: $input,
                run: $run,
                expect: $expect,
                issue: opt!($($why)?),
                unless_feature: opt!($($feature)?),
            },)*]
        }
        $(
            #[test]
            $(#[ignore = $why])?
            fn $id() {
                check(stringify!($id));
            }
        )*
    };
}

fn cli(setup: fn(&Path), args: &'static [&'static str]) -> Run {
    Run::Cli { setup, args }
}

fn lib(call: &'static str, f: fn(&Path) -> anyhow::Result<()>) -> Run {
    Run::Lib { call, f }
}

fn nothing(_: &Path) {}

fn write(dir: &Path, name: &str, bytes: impl AsRef<[u8]>) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// The memory check of `rnn train classify` with the default model, 40 training examples of
/// 200,000 tokens and 8 GB available.
fn memory_refusal() -> anyhow::Result<()> {
    use rnn::run::memory::{Longest, MemoryPlan, RecurrentShape};
    let plan = MemoryPlan {
        shape: RecurrentShape {
            embedding: 128,
            hidden: 128,
            layers: 1,
            directions: 2,
            gates: 4,
        },
        dtype_bytes: 4,
        params: 1_000_000,
        batch_size: 32,
        eval_batch_size: 256,
    };
    let longest = Longest {
        place: "long.txt:3".into(),
        tokens: 200_000,
    };
    plan.check(&[200_000; 40], &[20; 4], Some(8_000_000_000), &longest)
}

// ---- generated data -------------------------------------------------------------------------

/// `rnn prepare word-lm` of a small corpus into `<dir>/c.tokens`; its bytes.
fn token_file(dir: &Path) -> Vec<u8> {
    let data = write(dir, "corpus.txt", corpus(40));
    let out = dir.join("c.tokens");
    let (data, out) = (data.display().to_string(), out.display().to_string());
    rnn::cli::run(["rnn", "prepare", "word-lm", "--data", &data, "--out", &out]).unwrap();
    std::fs::read(&out).unwrap()
}

/// Lines of plain English-like text.
fn corpus(lines: usize) -> String {
    let words = [
        "the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far",
    ];
    (0..lines)
        .map(|i| {
            (0..6)
                .map(|j| words[(i * 7 + j * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        })
        .collect()
}

/// "label<TAB>text" lines with labels pos/neg.
fn sentiment(lines: usize) -> String {
    (0..lines)
        .map(|i| {
            if i % 2 == 0 {
                "1\ta great funny film\n".to_string()
            } else {
                "0\ta dull boring film\n".to_string()
            }
        })
        .collect()
}

/// CoNLL-U sentences (10 columns).
fn conllu(sentences: usize) -> String {
    let mut text = String::new();
    for s in 0..sentences {
        text.push_str(&format!("# sent_id = {s}\n"));
        for (i, (w, t)) in [
            ("the", "DET"),
            ("cat", "NOUN"),
            ("sat", "VERB"),
            (".", "PUNCT"),
        ]
        .iter()
        .enumerate()
        {
            text.push_str(&format!("{}\t{w}\t{w}\t{t}\t_\t_\t0\tdep\t_\t_\n", i + 1));
        }
        text.push('\n');
    }
    text
}

/// A CSV series with a header `t,value`.
fn series(rows: usize) -> String {
    let mut s = "t,value\n".to_string();
    for t in 0..rows {
        s.push_str(&format!("{t},{}\n", (t % 7) as f64 * 1.5));
    }
    s
}

/// IDX files of `n` 8x8 images and their labels.
fn idx(n: usize) -> (Vec<u8>, Vec<u8>) {
    let mut images = Vec::new();
    for x in [2051u32, n as u32, 8, 8] {
        images.extend_from_slice(&x.to_be_bytes());
    }
    let mut labels = 2049u32.to_be_bytes().to_vec();
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        images.extend((0..64).map(|p| ((p * 3 + i * 11) % 256) as u8));
        labels.push((i % 3) as u8);
    }
    (images, labels)
}

/// CSV rows of 64 features (8x8 values 0-16) then a class 0-2, with a header.
fn digit_rows(n: usize) -> String {
    let mut text = (0..64)
        .map(|i| format!("f{i}"))
        .collect::<Vec<_>>()
        .join(",")
        + ",class\n";
    for i in 0..n {
        let row: Vec<String> = (0..64)
            .map(|p| ((p * 3 + i * 5) % 17).to_string())
            .collect();
        text.push_str(&format!("{},{}\n", row.join(","), i % 3));
    }
    text
}

// ---- a small checkpoint, trained once -------------------------------------------------------

/// Trains `rnn train ARGS --out DIR` once per test process into `DIR` under cargo's scratch
/// directory for integration tests (a static `TempDir` would never be removed) and returns the
/// checkpoint directory; `files` are written beside it first (`<dir>` in ARGS is that directory).
/// Directories left by earlier runs are removed after an hour.
fn train_fixture(name: &str, files: &[(&str, String)], args: &[&str]) -> PathBuf {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let prefix = format!("bad_inputs-{name}-");
    if let Ok(entries) = std::fs::read_dir(scratch) {
        for entry in entries.flatten() {
            let stale = entry.file_name().to_string_lossy().starts_with(&prefix)
                && entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age.as_secs() > 3600);
            if stale {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = scratch.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for (file, text) in files {
        write(&dir, file, text);
    }
    let out = dir.join("run");
    let d = dir.to_str().unwrap();
    let mut all = vec!["rnn".to_string(), "train".to_string()];
    all.extend(args.iter().map(|a| a.replace("<dir>", d)));
    all.extend(["--device", "cpu", "--out", out.to_str().unwrap()].map(String::from));
    rnn::cli::run(all).unwrap();
    rnn::cli::run::resolve_checkpoint(&out, true).unwrap()
}

/// The checkpoint of a 2-step `adding` run (LSTM, hidden 8).
fn adding_checkpoint() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        train_fixture(
            "adding",
            &[],
            &[
                "adding",
                "--samples",
                "64",
                "--seq-len",
                "5",
                "--hidden",
                "8",
                "--batch-size",
                "16",
                "--max-steps",
                "2",
            ],
        )
    })
}

/// The checkpoint of a 2-step `char-lm` run (hidden 8).
fn char_lm_checkpoint() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        train_fixture(
            "char-lm",
            &[("corpus.txt", corpus(60))],
            &[
                "char-lm",
                "--data",
                "<dir>/corpus.txt",
                "--hidden",
                "8",
                "--embedding",
                "4",
                "--seq-len",
                "16",
                "--batch-size",
                "4",
                "--max-steps",
                "2",
            ],
        )
    })
}

/// A copy of the checkpoint in `from` at `<tmp>/NAME`.
fn copy_checkpoint(from: &Path, d: &Path, name: &str) -> PathBuf {
    let to = d.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
    to
}

/// A copy of the `char-lm` checkpoint at `<tmp>/lm`.
fn lm(d: &Path) {
    copy_checkpoint(char_lm_checkpoint(), d, "lm");
}

/// A copy of the `adding` checkpoint at `<tmp>/ckpt`.
fn ckpt(d: &Path) -> PathBuf {
    copy_checkpoint(adding_checkpoint(), d, "ckpt")
}

/// Rewrites `<tmp>/ckpt/model.safetensors` through `edit`.
fn edit_params(d: &Path, edit: fn(&mut HashMap<String, Tensor>)) {
    let path = ckpt(d).join("model.safetensors");
    let mut params = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut params);
    candle_core::safetensors::save(&params, &path).unwrap();
}

/// Rewrites `<tmp>/ckpt/FILE` (JSON) through `edit`.
fn edit_json(d: &Path, file: &str, edit: fn(&mut serde_json::Value)) {
    let path = ckpt(d).join(file);
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

// ---- the layer, for wrong shapes ------------------------------------------------------------

/// An LSTM with input size 3, hidden size 4, 1 layer, batch-first.
fn lstm() -> Rnn {
    let varmap = candle_nn::VarMap::new();
    let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    Rnn::new(&RnnConfig::new(Mode::Lstm, 3, 4), vb).unwrap()
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

// ---- the cases --------------------------------------------------------------------------------

cases! {
    // -- malformed and missing data files --
    text_missing: "`--data` names a file that does not exist",
        cli(nothing, &["train", "char-lm", "--data", "<tmp>/nope.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data <tmp>/nope.txt: no such file";
    text_empty: "`empty.txt` is empty",
        cli(|d| { write(d, "empty.txt", ""); }, &["train", "char-lm", "--data", "<tmp>/empty.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/empty.txt: the file is empty";
    text_not_utf8: "`latin1.txt`: Latin-1 bytes on line 3",
        cli(|d| { write(d, "latin1.txt", b"one line\ntwo line\nna\xefve\n"); }, &["train", "char-lm", "--data", "<tmp>/latin1.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/latin1.txt:3: not valid UTF-8 (byte offset 20); name the file's encoding with --encoding, e.g. --encoding latin1";
    text_valid_missing: "`--valid` names a file that does not exist",
        cli(|d| { write(d, "ok.txt", corpus(40)); }, &["train", "char-lm", "--data", "<tmp>/ok.txt", "--valid", "<tmp>/nope.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--valid <tmp>/nope.txt: no such file";
    text_is_directory: "`--data` names a directory",
        cli(nothing, &["train", "word-lm", "--data", "<tmp>", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>: Is a directory (os error 21)";
    token_file_truncated: "`c.tokens` (made by `rnn prepare`) cut at byte 400, inside its ids",
        cli(|d| { let b = token_file(d); write(d, "c.tokens", &b[..400]); }, &["train", "word-lm", "--data", "<tmp>/c.tokens", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/c.tokens: truncated: 400 bytes, but its 280 ids of 2 bytes end at byte 688; prepare the file again";
    token_file_bit_flip: "`c.tokens`: one bit of its ids flipped",
        cli(|d| { let mut b = token_file(d); b[140] ^= 4; write(d, "c.tokens", b); }, &["train", "word-lm", "--data", "<tmp>/c.tokens", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/c.tokens: ids checksum mismatch (stored 98eef929a0591b05, computed d23a0029a80e4841): the file is corrupt; prepare it again";
    token_file_with_split: "`--split` differs from the one `c.tokens` was prepared with",
        cli(|d| { token_file(d); }, &["train", "word-lm", "--data", "<tmp>/c.tokens", "--split", "0.2", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--split 0.2: <tmp>/c.tokens was prepared with --split 0.1; the data options are fixed by `rnn prepare` (prepare the corpus again to change them)";
    prepare_subword: "`rnn prepare --level subword`",
        cli(|d| { write(d, "ok.txt", corpus(40)); }, &["prepare", "word-lm", "--data", "<tmp>/ok.txt", "--level", "subword", "--out", "<tmp>/o.tokens"])
        => "--level subword: rnn prepare makes char and word token files only (byte-level BPE is trained on the whole text in memory); train on --data TEXT for subwords";
    prepare_missing: "`rnn prepare --data` names a file that does not exist",
        cli(nothing, &["prepare", "char-lm", "--data", "<tmp>/nope.txt", "--out", "<tmp>/o.tokens"])
        => "--data <tmp>/nope.txt: no such file";
    labels_no_text: "`labels.txt` line 3 has a label and no text",
        cli(|d| { write(d, "labels.txt", "1 a fine film\n0 dull\n1\n"); }, &["train", "classify", "--data", "<tmp>/labels.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/labels.txt:3: expected `label<space or tab>text`, found no separator";
    labels_unseen_in_valid: "`valid.txt` line 2 has a label the training data never had",
        cli(|d| { write(d, "train.txt", sentiment(40)); write(d, "valid.txt", "1\ta fine film\nneutral\tso so\n"); }, &["train", "classify", "--data", "<tmp>/train.txt", "--valid", "<tmp>/valid.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/valid.txt:2: label 'neutral' does not occur in the training data (labels: 0, 1)";
    labels_no_data_flag: "`rnn train classify` without `--data`",
        cli(nothing, &["train", "classify", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "classify needs --data FILE with `label<TAB or space>text` lines (e.g. SST-2 stsa.binary.train)";
    conllu_wrong_columns: "`broken.conllu` line 2 has 8 columns, not 10",
        cli(|d| { write(d, "broken.conllu", "1\tThe\tthe\tDET\t_\t_\t2\tdet\t_\t_\n2\tcat\tcat\tNOUN\t_\t_\t0\troot\n"); }, &["train", "tag", "--data", "<tmp>/broken.conllu", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/broken.conllu:2: expected 10 tab-separated columns, found 8";
    conllu_unknown_tag_column: "`--tag-column colour` is not a CoNLL-U column",
        cli(|d| { write(d, "good.conllu", conllu(10)); }, &["train", "tag", "--data", "<tmp>/good.conllu", "--tag-column", "colour", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--tag-column: unknown tag column 'colour': expected a CoNLL-U column name (upos, xpos, deprel, ...) or 1-10";
    tsv_one_column: "`pairs.tsv` line 3 has no TAB (one column)",
        cli(|d| { write(d, "pairs.tsv", "a b\tx y\nc d\tz w\njust one column\n"); }, &["train", "seq2seq", "--data", "<tmp>/pairs.tsv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/pairs.tsv:3: expected at least 2 tab-separated columns, found 1";
    conll_extra_field: "`tags.conll` (2-column CoNLL) line 2 has 3 fields",
        cli(|d| { write(d, "tags.conll", "the DET\ncat NOUN extra\n\n"); }, &["train", "tag", "--data", "<tmp>/tags.conll", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/tags.conll:2: expected 2 columns (token tag), found 3";
    conllu_comments_only: "`empty.conllu` holds only a comment",
        cli(|d| { write(d, "empty.conllu", "# newdoc id = x\n\n"); }, &["train", "tag", "--data", "<tmp>/empty.conllu", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/empty.conllu: no sentences found";
    labels_not_utf8: "`labels.txt`: a Latin-1 byte on line 2",
        cli(|d| { write(d, "labels.txt", b"1 fine film\n0 na\xefve plot\n"); }, &["train", "classify", "--data", "<tmp>/labels.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/labels.txt:2: not valid UTF-8 (byte offset 16); name the file's encoding with --encoding, e.g. --encoding latin1";
    labels_comma_separated: "`spam.csv`: `ham,Go until ...` lines (comma after the label)",
        cli(|d| { write(d, "spam.csv", "ham,Go until jurong point crazy available only in bugis\nspam,Free entry in 2 a wkly comp\nham,Ok lar joking wif u oni\n"); }, &["train", "classify", "--data", "<tmp>/spam.csv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/spam.csv:1: expected `label<TAB or space>text`; line 1 looks comma-separated (`ham,Go until jurong point crazy availab…`): put a TAB or a space after the label instead of the comma";
    labels_text_then_label: "`swapped.tsv`: `text<TAB>label` lines (the label last)",
        cli(|d| { write(d, "swapped.tsv", "a great film\tpos\ndull and slow\tneg\nfine work\tpos\nbad acting here\tneg\n"); }, &["train", "classify", "--data", "<tmp>/swapped.tsv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/swapped.tsv:1: expected `label<TAB or space>text`; line 1 looks like `text<TAB>label` (`a great film\tpos`): put the label first";
    labels_conll_file: "a 2-column BIO CoNLL file given to `classify`",
        cli(|d| { write(d, "ner.conll", "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO\n\nPeter\tB-PER\nBlackburn\tI-PER\n"); }, &["train", "classify", "--data", "<tmp>/ner.conll", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/ner.conll: this looks like CoNLL (token<TAB>tag lines, blank lines between sentences), not `label<TAB or space>text` lines; use `rnn train tag` for tagging data";
    labels_conllu_file: "a CoNLL-U file given to `classify`",
        cli(|d| { write(d, "ud.conllu", conllu(3)); }, &["train", "classify", "--data", "<tmp>/ud.conllu", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/ud.conllu:2: this looks like CoNLL-U (10 tab-separated columns), not `label<TAB or space>text` lines; use `rnn train tag` for tagging data";
    labels_unseen_many_labels: "`valid.txt` has a label unseen in training, which has 40 labels (the list is cut)",
        cli(|d| { write(d, "train.txt", (0..80).map(|i| format!("label{:02} some text {i}\n", i % 40)).collect::<String>()); write(d, "valid.txt", "other some text\n"); }, &["train", "classify", "--data", "<tmp>/train.txt", "--valid", "<tmp>/valid.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/valid.txt:1: label 'other' does not occur in the training data (labels: label00, label01, label02, label03, label04, label05, label06, label07, label08, label09, label10, label11, label12, la…)";
    encoding_unknown: "`--encoding klingon`",
        cli(|d| { write(d, "train.txt", sentiment(40)); }, &["train", "classify", "--data", "<tmp>/train.txt", "--encoding", "klingon", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--encoding: unknown encoding 'klingon': expected a name such as utf-8, latin1, windows-1252, iso-8859-15, utf-16le, shift_jis or gb18030";
    max_len_zero: "`rnn train classify --max-len 0`",
        cli(|d| { write(d, "train.txt", sentiment(40)); }, &["train", "classify", "--data", "<tmp>/train.txt", "--max-len", "0", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--max-len must be at least 1, got 0";
    memory_too_large: "a training batch of 32 examples of 200,000 tokens with 8 GB available (what `rnn train classify` and `tag` check before training, with the memory the machine has)",
        lib("MemoryPlan { lstm, embedding 128, hidden 128, bidirectional, f32, 1M parameters, batch 32 }.check(40 examples of 200000 tokens, available 8 GB)", |_| memory_refusal())
        => "training would need about 278.5 GB of memory for its largest batch (32 x 200000 tokens) and 8.0 GB is available; the longest example is long.txt:3 (200000 tokens): shorten examples with --max-len 5700 or lower --batch-size (now 32)";
    pairs_not_utf8: "`pairs.tsv`: a Latin-1 byte on line 2",
        cli(|d| { write(d, "pairs.tsv", b"Go.\tVa !\nHi.\tSalut, \xe7a va ?\n"); }, &["train", "seq2seq", "--data", "<tmp>/pairs.tsv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/pairs.tsv:2: not valid UTF-8 (byte offset 20); name the file's encoding with --encoding, e.g. --encoding latin1";
    conll_not_utf8: "`ner.conll` (2-column CoNLL): a Latin-1 byte on line 4",
        cli(|d| { write(d, "ner.conll", b"EU B-ORG\nrejects O\n\nM\xfcller B-PER\n"); }, &["train", "tag", "--data", "<tmp>/ner.conll", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/ner.conll:4: not valid UTF-8 (byte offset 21); name the file's encoding with --encoding, e.g. --encoding latin1";
    train_non_finite: "`--lr 1e30` without clipping makes the loss infinite",
        cli(nothing, &["train", "adding", "--lr", "1e30", "--clip", "0", "--samples", "64", "--seq-len", "5", "--batch-size", "16", "--max-steps", "5", "--device", "cpu", "--out", "<tmp>/run"])
        => "step 2: the loss is not finite (inf); training stopped, the last checkpoint (if any) is untouched. Lower the learning rate (`--lr`), clip gradients (`--clip`), or pass `--skip-non-finite` (`TrainerConfig::on_non_finite` in the library) to skip such steps";
    tsv_empty: "`pairs.tsv` is empty",
        cli(|d| { write(d, "pairs.tsv", ""); }, &["train", "seq2seq", "--data", "<tmp>/pairs.tsv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/pairs.tsv: the file is empty";
    csv_ragged_row: "`ragged.csv` line 4 has one field, the header two",
        cli(|d| { write(d, "ragged.csv", "t,v\n1,2\n2,3\n3\n4,5\n"); }, &["train", "forecast", "--data", "<tmp>/ragged.csv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/ragged.csv:4: ragged row: 1 field, the header has 2";
    csv_non_numeric: "`text.csv` line 3 holds the word `many`",
        cli(|d| { write(d, "text.csv", "t,v\n1,2\n2,many\n"); }, &["train", "forecast", "--data", "<tmp>/text.csv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/text.csv:3: non-numeric value 'many' in column 'v'";
    csv_unknown_target: "`--target price`: the CSV has no such column",
        cli(|d| { write(d, "good.csv", series(60)); }, &["train", "forecast", "--data", "<tmp>/good.csv", "--target", "price", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/good.csv:1: no column 'price' in the header (columns: t, value)";
    csv_header_only: "`header.csv` has a header and no rows",
        cli(|d| { write(d, "header.csv", "t,value\n"); }, &["train", "forecast", "--data", "<tmp>/header.csv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/header.csv: no data rows";
    csv_lookback_too_long: "`--lookback 50` on a 60-row series (not enough windows)",
        cli(|d| { write(d, "good.csv", series(60)); }, &["train", "forecast", "--data", "<tmp>/good.csv", "--lookback", "50", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/good.csv: 60 rows, 32 before the validation part (--split 0.333, --valid-split 0.200): too few for one training window of --lookback 50 + --horizon 1 (+1 for differencing)";
    csv_not_utf8: "`bytes.csv` line 3 holds the byte 0xFF",
        cli(|d| { write(d, "bytes.csv", b"t,v\n1,2\n2,\xff\n"); }, &["train", "forecast", "--data", "<tmp>/bytes.csv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "<tmp>/bytes.csv:3: CSV parse error: record 2 (line 3, field: 1, byte: 8): invalid utf-8: invalid UTF-8 in field 1 near byte index 0";
    idx_empty: "`img.idx3` is empty",
        cli(|d| { write(d, "img.idx3", ""); write(d, "lab.idx1", idx(10).1); }, &["train", "digits", "--data", "<tmp>/img.idx3", "--labels", "<tmp>/lab.idx1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/img.idx3: not an IDX image file (expected magic number 2051)";
    idx_truncated: "`trunc.idx3` is 5 bytes short",
        cli(|d| { let (img, lab) = idx(10); write(d, "trunc.idx3", &img[..img.len() - 5]); write(d, "lab.idx1", lab); }, &["train", "digits", "--data", "<tmp>/trunc.idx3", "--labels", "<tmp>/lab.idx1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/trunc.idx3: header says 10 images of 8x8 (640 bytes), the file has 635 bytes of image data";
    idx_label_count: "`short.idx1` has 9 labels for 10 images",
        cli(|d| { let (img, lab) = idx(10); write(d, "img.idx3", img); let mut short = lab[..8].to_vec(); short[4..8].copy_from_slice(&9u32.to_be_bytes()); short.extend_from_slice(&lab[8..17]); write(d, "short.idx1", short); }, &["train", "digits", "--data", "<tmp>/img.idx3", "--labels", "<tmp>/short.idx1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--labels: <tmp>/short.idx1: 9 labels for 10 images";
    idx_swapped_files: "images and labels swapped (wrong magic number)",
        cli(|d| { let (img, lab) = idx(10); write(d, "img.idx3", img); write(d, "lab.idx1", lab); }, &["train", "digits", "--data", "<tmp>/lab.idx1", "--labels", "<tmp>/img.idx3", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/lab.idx1: not an IDX image file (expected magic number 2051)";
    idx_no_labels_flag: "`rnn train digits` without `--labels`",
        cli(|d| { write(d, "img.idx3", idx(10).0); }, &["train", "digits", "--data", "<tmp>/img.idx3", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data <tmp>/img.idx3: IDX images need their --labels LABELS.idx1[.gz] (or give --data ROWS.csv, features then label per row)";
    digits_no_data_flag: "`rnn train digits` without `--data`",
        cli(nothing, &["train", "digits", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "digits needs --data IMAGES.idx3[.gz] and --labels LABELS.idx1[.gz] (e.g. t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), or --data ROWS.csv (features then label per row)";
    digits_csv_row_len_not_dividing: "`--row-len 7` for CSV rows of 64 features",
        cli(|d| { write(d, "rows.csv", digit_rows(6)); }, &["train", "digits", "--data", "<tmp>/rows.csv", "--row-len", "7", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/rows.csv: rows of 64 features do not fold into time steps of 7 features (--row-len must divide 64)";
    digits_csv_ragged: "`rows.csv` line 3 has one field fewer than the others",
        cli(|d| { write(d, "rows.csv", "1,2,3,0\n4,5,6,1\n7,8,1\n"); }, &["train", "digits", "--data", "<tmp>/rows.csv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/rows.csv:3: ragged row: 3 fields, the first row has 4";
    digits_csv_label_not_integer: "`rows.csv` line 2: the label (last column) is `0.5`",
        cli(|d| { write(d, "rows.csv", "1,2,3,0\n4,5,6,0.5\n"); }, &["train", "digits", "--data", "<tmp>/rows.csv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: <tmp>/rows.csv:2: label '0.5' (column 4) is not a class number 0-9999";
    digits_csv_with_labels_flag: "`--labels` given with CSV rows (which hold their labels)",
        cli(|d| { write(d, "rows.csv", digit_rows(6)); write(d, "lab.idx1", idx(6).1); }, &["train", "digits", "--data", "<tmp>/rows.csv", "--labels", "<tmp>/lab.idx1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--labels <tmp>/lab.idx1: --data <tmp>/rows.csv is CSV, whose rows hold their labels; --labels goes with IDX images";
    digits_row_len_on_idx: "`--row-len` with IDX images",
        cli(|d| { write(d, "img.idx3", idx(10).0); write(d, "lab.idx1", idx(10).1); }, &["train", "digits", "--data", "<tmp>/img.idx3", "--labels", "<tmp>/lab.idx1", "--row-len", "4", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--row-len: --data <tmp>/img.idx3 is an IDX image file, read as rows of pixels; --row-len folds CSV rows";
    predict_input_empty_file: "`--input` names an empty file",
        cli(|d| { ckpt(d); write(d, "empty.txt", "\n\n"); }, &["predict", "--checkpoint", "<tmp>/ckpt", "--input", "<tmp>/empty.txt", "--device", "cpu"])
        => "--input <tmp>/empty.txt: the file has no input (it is empty or blank)";
    predict_input_malformed: "`--input` step 2 is not `value:marker`",
        cli(|d| { ckpt(d); }, &["predict", "--checkpoint", "<tmp>/ckpt", "--input", "0.5:1 0.2 0.3:1", "--device", "cpu"])
        => "--input: step 2 '0.2': no ':'; expected value:marker pairs such as \"0.3:1 0.5:0 0.2:1\"";
    predict_input_missing_path: "`--input` looks like a path (`inputs/today.txt`) but names no file",
        cli(|d| { ckpt(d); }, &["predict", "--checkpoint", "<tmp>/ckpt", "--input", "<tmp>/inputs/today.txt", "--device", "cpu"])
        => "--input <tmp>/inputs/today.txt: no such file (a value that looks like a path is read as a file, not as the input text)";

    // -- wrong shapes through the library --
    shape_input_rank: "`Rnn::forward` on a 4-D input",
        lib("lstm(3→4).forward(zeros [2, 5, 3, 1], None)", |_| { lstm().forward_with_state(&zeros(&[2, 5, 3, 1]), None)?; Ok(()) })
        => "Rnn::forward: xs must be (batch, seq_len, input_size) or unbatched (seq_len, input_size), got rank 4 shape [2, 5, 3, 1]";
    shape_feature_size: "`Rnn::forward` with 7 features per step, the layer takes 3",
        lib("lstm(3→4).forward(zeros [2, 5, 7], None)", |_| { lstm().forward_with_state(&zeros(&[2, 5, 7]), None)?; Ok(()) })
        => "Rnn::forward: xs has 7 features per step, expected input_size = 3 (xs shape [2, 5, 7])";
    shape_empty_sequence: "`Rnn::forward` on a sequence of 0 steps",
        lib("lstm(3→4).forward(zeros [2, 0, 3], None)", |_| { lstm().forward_with_state(&zeros(&[2, 0, 3]), None)?; Ok(()) })
        => "Rnn::forward: xs must have at least one step and one sequence, got shape [2, 0, 3]";
    shape_state_h: "initial `h` for batch 3, input batch 2",
        lib("lstm(3→4).forward(zeros [2, 5, 3], Some(h [1, 3, 4], c [1, 2, 4]))", |_| { let s = RnnState::new(zeros(&[1, 3, 4]), Some(zeros(&[1, 2, 4]))); lstm().forward_with_state(&zeros(&[2, 5, 3]), Some(&s))?; Ok(()) })
        => "Rnn::forward state.h: expected shape [1, 2, 4], got [1, 3, 4]";
    shape_state_c_missing: "an LSTM state without `c`",
        lib("lstm(3→4).forward(zeros [2, 5, 3], Some(h [1, 2, 4], c None))", |_| { let s = RnnState::new(zeros(&[1, 2, 4]), None); lstm().forward_with_state(&zeros(&[2, 5, 3]), Some(&s))?; Ok(()) })
        => "Rnn::forward: an LSTM state needs c, got None";
    shape_lengths_too_long: "`lengths[1] = 9` for sequences of 5 steps",
        lib("lstm(3→4).forward_t(zeros [2, 5, 3], None, Some(&[5, 9]), false)", |_| { lstm().forward_t(&zeros(&[2, 5, 3]), None, Some(&[5, 9]), false)?; Ok(()) })
        => "lengths[1] = 9 is longer than the padded sequence length 5";
    shape_lengths_batch: "3 lengths for a batch of 2",
        lib("lstm(3→4).forward_t(zeros [2, 5, 3], None, Some(&[5, 4, 3]), false)", |_| { lstm().forward_t(&zeros(&[2, 5, 3]), None, Some(&[5, 4, 3]), false)?; Ok(()) })
        => "lengths: expected one length per batch row (2), got 3 lengths";
    shape_step_rank: "`Rnn::step` on a 3-D input",
        lib("lstm(3→4).step(zeros [2, 1, 3], None)", |_| { lstm().step(&zeros(&[2, 1, 3]), None)?; Ok(()) })
        => "Rnn::step: x_t must be (batch, input_size), got shape [2, 1, 3]";
    dtype_input_mismatch: "f64 input to an f32 layer",
        lib("lstm(3→4, f32).forward(zeros [2, 5, 3] f64, None)", |_| { let xs = zeros(&[2, 5, 3]).to_dtype(DType::F64)?; lstm().forward_with_state(&xs, None)?; Ok(()) })
        => "Rnn::forward xs: dtype F64 does not match the dtype of the weights (F32)";
    config_dropout_layer: "`RnnConfig` with dropout 1.0",
        lib("Rnn::new(RnnConfig::new(Lstm, 3, 4).with_dropout(1.0), vb)", |_| { let varmap = candle_nn::VarMap::new(); Rnn::new(&RnnConfig::new(Mode::Lstm, 3, 4).with_dropout(1.0), seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu))?; Ok(()) })
        => "RnnConfig: dropout must be in [0, 1), got 1";

    // -- entity scores and constrained decoding through the library --
    entity_f1_lengths: "`EntityF1::update` with 1 predicted and 2 gold tags",
        lib("EntityF1::new().update(&[\"O\"], &[\"O\", \"B-PER\"])", |_| { rnn::train::metrics::EntityF1::new().update(&["O"], &["O", "B-PER"])?; Ok(()) })
        => "EntityF1::update: `predicted` has 1 items but `gold` has 2; they must be equal";
    entity_strict_foreign_prefix: "a BIOES tag read in strict BIO mode",
        lib("entity_spans(&[\"B-PER\", \"E-PER\"], SpanMode::Strict(TagScheme::Bio))", |_| { use rnn::train::metrics::{entity_spans, SpanMode, TagScheme}; entity_spans(&["B-PER", "E-PER"], SpanMode::Strict(TagScheme::Bio))?; Ok(()) })
        => "entity spans: tag 1 `E-PER` has a prefix the BIO scheme lacks";
    transition_mask_no_start: "a transition rule that lets no tag start a sequence",
        lib("TransitionMask::from_fn(2, |prev, _| prev.is_some())", |_| { rnn::models::tagger::TransitionMask::from_fn(2, |prev, _| prev.is_some())?; Ok(()) })
        => "TransitionMask: the rule lets no tag start or no tag end a sequence";

    // -- mismatched, damaged or foreign checkpoints --
    ckpt_dir_missing: "`--checkpoint` names a directory that does not exist",
        cli(nothing, &["eval", "--checkpoint", "<tmp>/nope", "--device", "cpu"])
        => "checkpoint <tmp>/nope: no such directory";
    ckpt_not_a_checkpoint: "`--checkpoint` names a directory without `state.json`",
        cli(|d| { write(d, "notes.txt", "hello"); }, &["predict", "--checkpoint", "<tmp>", "--input", "x", "--device", "cpu"])
        => "<tmp>: not a checkpoint (no state.json in it, nor in its checkpoint/ or best/ subdirectory)";
    ckpt_truncated_safetensors: "`model.safetensors` cut in half",
        cli(|d| { let p = ckpt(d).join("model.safetensors"); let b = std::fs::read(&p).unwrap(); std::fs::write(&p, &b[..b.len() / 2]).unwrap(); }, &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/model.safetensors: not a valid safetensors file (truncated or corrupt? 1026 bytes): incomplete metadata, file not fully covered";
    ckpt_truncated_header_lib: "`model.safetensors` cut inside its header, loaded by the library",
        lib("rnn::train::checkpoint::load(<tmp>/ckpt, &Device::Cpu)", |d| { let p = ckpt(d).join("model.safetensors"); let b = std::fs::read(&p).unwrap(); std::fs::write(&p, &b[..20]).unwrap(); rnn::train::checkpoint::load(&d.join("ckpt"), &Device::Cpu)?; Ok(()) })
        => "<tmp>/ckpt/model.safetensors: not a valid safetensors file (truncated or corrupt? 20 bytes): invalid header length";
    ckpt_pickle_bytes: "`model.safetensors` holds a Python pickle (never executed)",
        cli(|d| { let p = ckpt(d).join("model.safetensors"); std::fs::write(&p, b"\x80\x04\x95\x1c\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94.").unwrap(); }, &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/model.safetensors: not a valid safetensors file (truncated or corrupt? 37 bytes): header too large";
    ckpt_model_file_missing: "`model.safetensors` deleted",
        cli(|d| { std::fs::remove_file(ckpt(d).join("model.safetensors")).unwrap(); }, &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/model.safetensors: missing: the checkpoint is incomplete";
    ckpt_missing_tensor: "`model.safetensors` lacks `rnn.bias_hh_l0`",
        cli(|d| edit_params(d, |p| { p.remove("rnn.bias_hh_l0"); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "checkpoint <tmp>/ckpt does not match the model it describes: <tmp>/ckpt/model.safetensors: checkpoint parameters do not match the model (1 problem): `rnn.bias_hh_l0` is missing (expected shape [32], dtype f32)";
    ckpt_extra_tensor: "`model.safetensors` has an extra tensor `rnn.weight_hh_l1`",
        cli(|d| edit_params(d, |p| { p.insert("rnn.weight_hh_l1".into(), Tensor::zeros((32, 8), DType::F32, &Device::Cpu).unwrap()); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "checkpoint <tmp>/ckpt does not match the model it describes: <tmp>/ckpt/model.safetensors: checkpoint parameters do not match the model (1 problem): `rnn.weight_hh_l1` (shape [32, 8], dtype f32) is not a parameter of the model";
    ckpt_wrong_dtype: "`rnn.bias_ih_l0` saved as f64, the rest f32",
        cli(|d| edit_params(d, |p| { let t = p["rnn.bias_ih_l0"].to_dtype(DType::F64).unwrap(); p.insert("rnn.bias_ih_l0".into(), t); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "checkpoint <tmp>/ckpt does not match the model it describes: <tmp>/ckpt/model.safetensors: checkpoint parameters do not match the model (1 problem): `rnn.bias_ih_l0` has dtype f64, expected f32";
    ckpt_wrong_shape: "`rnn.weight_hh_l0` saved with shape [32, 16], the model's is [32, 8]",
        cli(|d| edit_params(d, |p| { p.insert("rnn.weight_hh_l0".into(), Tensor::zeros((32, 16), DType::F32, &Device::Cpu).unwrap()); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "checkpoint <tmp>/ckpt does not match the model it describes: <tmp>/ckpt/model.safetensors: checkpoint parameters do not match the model (1 problem): `rnn.weight_hh_l0` has shape [32, 16], expected [32, 8]";
    ckpt_nan_parameter: "`rnn.bias_hh_l0` holds a NaN",
        cli(|d| edit_params(d, |p| { let t = Tensor::full(f32::NAN, 32, &Device::Cpu).unwrap(); p.insert("rnn.bias_hh_l0".into(), t); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/model.safetensors: parameter `rnn.bias_hh_l0` holds NaN (flat index 0 of 32, shape [32]); refusing to load non-finite values from a checkpoint";
    ckpt_other_hidden_size: "`config.json` says hidden size 16, the weights are 8",
        cli(|d| edit_json(d, "config.json", |v| { v["model"]["model"]["hidden_size"] = 16.into(); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "checkpoint <tmp>/ckpt does not match the model it describes: <tmp>/ckpt/model.safetensors: checkpoint parameters do not match the model (5 problems): `head.layers.0.weight` has shape [1, 8], expected [1, 16]; `rnn.bias_hh_l0` has shape [32], expected [64]; `rnn.bias_ih_l0` has shape [32], expected [64]; `rnn.weight_hh_l0` has shape [32, 8], expected [64, 16]; `rnn.weight_ih_l0` has shape [32, 2], expected [64, 2]";
    ckpt_other_cell: "`config.json` says GRU, the weights are an LSTM's",
        cli(|d| edit_json(d, "config.json", |v| { v["model"]["model"]["mode"] = "gru".into(); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "checkpoint <tmp>/ckpt does not match the model it describes: <tmp>/ckpt/model.safetensors: checkpoint parameters do not match the model (4 problems): `rnn.bias_hh_l0` has shape [32], expected [24]; `rnn.bias_ih_l0` has shape [32], expected [24]; `rnn.weight_hh_l0` has shape [32, 8], expected [24, 8]; `rnn.weight_ih_l0` has shape [32, 2], expected [24, 2]";
    ckpt_config_corrupt: "`config.json` is not valid JSON (line 3)",
        cli(|d| { std::fs::write(ckpt(d).join("config.json"), "{\n  \"model\": {\n    \"task\": ]\n}\n").unwrap(); }, &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/config.json:3: invalid JSON at column 13: expected value";
    ckpt_config_no_task: "`config.json` has no `model.task`",
        cli(|d| edit_json(d, "config.json", |v| { v["model"].as_object_mut().unwrap().remove("task"); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/config.json: no model.task entry; it was not written by `rnn train`";
    ckpt_config_unknown_task: "`config.json` names task `chess`",
        cli(|d| edit_json(d, "config.json", |v| { v["model"]["task"] = "chess".into(); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/config.json: model.task: unknown task 'chess': expected one of routine, adding, copy, dates, char-lm, word-lm, classify, tag, seq2seq, forecast, digits";
    ckpt_config_model_malformed: "`config.json`: `model.model` is a string",
        cli(|d| edit_json(d, "config.json", |v| { v["model"]["model"] = "lstm".into(); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/config.json: model.model is malformed: invalid type: string \"lstm\", expected struct ForecasterConfig";
    ckpt_state_corrupt: "`state.json` has `\"epoch\": \"three\"`",
        cli(|d| edit_json(d, "state.json", |v| { v["epoch"] = "three".into(); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/state.json:5: invalid JSON at column 18: invalid type: string \"three\", expected u64";
    ckpt_state_future_version: "`state.json` of format version 99",
        cli(|d| edit_json(d, "state.json", |v| { v["format_version"] = 99.into(); }), &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "<tmp>/ckpt/state.json: checkpoint format version 99 is not supported (this build reads version 1); it was written by a newer version of rnn";
    ckpt_other_task_sample: "`rnn sample` on an `adding` checkpoint",
        cli(|d| { ckpt(d); }, &["sample", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "`rnn sample` needs a language-model checkpoint (char-lm, word-lm or routine); <tmp>/ckpt is a checkpoint of task `adding`; use `rnn predict`";
    ckpt_resume_other_task: "`--resume` an `adding` checkpoint in a `copy` run",
        cli(|d| { ckpt(d); }, &["train", "copy", "--resume", "<tmp>/ckpt", "--max-steps", "1", "--device", "cpu", "--out", "<tmp>/run"])
        => "--resume <tmp>/ckpt: the checkpoint is from task `adding`, not `copy`";
    ckpt_resume_other_size: "`--resume` a hidden-8 checkpoint with `--hidden 16`",
        cli(|d| { ckpt(d); }, &["train", "adding", "--resume", "<tmp>/ckpt", "--hidden", "16", "--samples", "64", "--seq-len", "5", "--batch-size", "16", "--max-steps", "3", "--device", "cpu", "--out", "<tmp>/run"])
        => "--resume <tmp>/ckpt: the checkpoint does not fit this model (same task, cell, sizes and data as when it was written?): <tmp>/ckpt/model.safetensors: checkpoint parameters do not match the model (5 problems): `head.layers.0.weight` has shape [1, 8], expected [1, 16]; `rnn.bias_hh_l0` has shape [32], expected [64]; `rnn.bias_ih_l0` has shape [32], expected [64]; `rnn.weight_hh_l0` has shape [32, 8], expected [64, 16]; `rnn.weight_ih_l0` has shape [32, 2], expected [64, 2]";

    ckpt_resume_missing: "`--resume` names a directory that does not exist",
        cli(nothing, &["train", "adding", "--resume", "<tmp>/nope", "--max-steps", "1", "--device", "cpu", "--out", "<tmp>/run"])
        => "--resume: checkpoint <tmp>/nope: no such directory";
    ckpt_init_from_other_task: "`--init-from` an `adding` checkpoint in a `copy` run",
        cli(|d| { ckpt(d); }, &["train", "copy", "--init-from", "<tmp>/ckpt", "--max-steps", "1", "--device", "cpu", "--out", "<tmp>/run"])
        => "--init-from <tmp>/ckpt: the checkpoint is from task `adding`, not `copy`";
    ckpt_init_from_other_size: "`--init-from` a hidden-8 checkpoint with `--hidden 16`",
        cli(|d| { ckpt(d); }, &["train", "adding", "--init-from", "<tmp>/ckpt", "--hidden", "16", "--samples", "64", "--seq-len", "5", "--batch-size", "16", "--max-steps", "3", "--device", "cpu", "--out", "<tmp>/run"])
        => "--init-from <tmp>/ckpt: <tmp>/ckpt/model.safetensors: checkpoint parameters do not match the model (5 problems): `head.layers.0.weight` has shape [1, 8], expected [1, 16]; `rnn.bias_hh_l0` has shape [32], expected [64]; `rnn.bias_ih_l0` has shape [32], expected [64]; `rnn.weight_hh_l0` has shape [32, 8], expected [64, 16]; `rnn.weight_ih_l0` has shape [32, 2], expected [64, 2]";
    ckpt_init_from_missing: "`--init-from` names a directory that does not exist",
        cli(nothing, &["train", "adding", "--init-from", "<tmp>/nope", "--max-steps", "1", "--device", "cpu", "--out", "<tmp>/run"])
        => "--init-from: checkpoint <tmp>/nope: no such directory";

    // -- out-of-range or unknown options --
    opt_zero_hidden: "`--hidden 0`",
        cli(nothing, &["train", "adding", "--hidden", "0", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--hidden must be at least 1, got 0";
    opt_negative_hidden: "`--hidden -3` (not an unsigned number)",
        cli(nothing, &["train", "adding", "--hidden", "-3", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "invalid value '-3' for '--hidden <HIDDEN>': invalid digit found in string";
    opt_zero_batch: "`--batch-size 0`",
        cli(nothing, &["train", "adding", "--batch-size", "0", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--batch-size must be at least 1, got 0";
    opt_zero_epochs: "`--epochs 0`",
        cli(nothing, &["train", "adding", "--epochs", "0", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--epochs must be at least 1, got 0";
    opt_dropout_one: "`--dropout 1`",
        cli(nothing, &["train", "adding", "--dropout", "1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--dropout must be in [0, 1), got 1";
    opt_weight_drop_one: "`--weight-drop 1` (a mask option out of range)",
        cli(nothing, &["train", "char-lm", "--weight-drop", "1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--weight-drop must be in [0, 1), got 1";
    opt_zoneout_not_read: "`--zoneout` on a task without the mask options",
        cli(nothing, &["train", "adding", "--zoneout", "0.1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--zoneout does not apply to `rnn train adding`, which reads --seq-len --samples --bidirectional --layer-norm besides the training options (`rnn train adding --help` lists them)";
    opt_chrono_init_too_small: "`--chrono-init 1` (a time scale below 2 steps)",
        cli(nothing, &["train", "adding", "--chrono-init", "1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--chrono-init must be a number of steps >= 2, got 1";
    opt_chrono_init_vanilla: "`--chrono-init` on a vanilla RNN (no gates)",
        cli(nothing, &["train", "adding", "--cell", "rnn-tanh", "--chrono-init", "50", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--chrono-init 50: chrono_init: no LSTM or GRU layer with biases among the parameters (a vanilla RNN has no gate to initialise)";
    opt_lr_zero: "`--lr 0`",
        cli(nothing, &["train", "adding", "--lr", "0", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--lr must be a positive number, got 0";
    opt_lr_negative: "`--lr -0.1`",
        cli(nothing, &["train", "adding", "--lr", "-0.1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--lr must be a positive number, got -0.1";
    opt_lr_not_a_number: "`--lr fast`",
        cli(nothing, &["train", "adding", "--lr", "fast", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "invalid value 'fast' for '--lr <LR>': invalid float literal";
    opt_restarts_without_cycles: "`--schedule cosine-restarts` without `--cycle-epochs`",
        cli(nothing, &["train", "adding", "--schedule", "cosine-restarts", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--schedule cosine-restarts needs --cycle-epochs (epochs per cycle, e.g. 14,12)";
    opt_restarts_zero_cycle: "`--cycle-epochs 3,0` (a cycle of no epochs)",
        cli(nothing, &["train", "adding", "--schedule", "cosine-restarts", "--cycle-epochs", "3,0", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--cycle-epochs: every cycle must last at least 1 epoch, got 0 for cycle 2";
    opt_restarts_peak_decay_above_one: "`--peak-decay 2` (a later cycle peaking higher)",
        cli(nothing, &["train", "adding", "--schedule", "cosine-restarts", "--cycle-epochs", "3", "--peak-decay", "2", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--peak-decay must be in (0, 1], got 2";
    opt_split_one: "`--split 1`",
        cli(nothing, &["train", "char-lm", "--split", "1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--split must be in (0, 1), got 1";
    opt_not_for_task: "`--labels` given to `classify`, which reads no label file",
        cli(|d| { write(d, "l.txt", "pos good\n"); }, &["train", "classify", "--data", "<tmp>/l.txt", "--labels", "<tmp>/l.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--labels does not apply to `rnn train classify`, which reads --data --valid --test --split --encoding --max-len --shuffle-buffer --vocab-size --embedding --pooling --bidirectional --layer-norm --zoneout --recurrent-dropout --weight-drop --embedding-dropout --variational-dropout --hf-dataset --hf-split --text-column --label-column besides the training options (`rnn train classify --help` lists them)";
    shuffle_buffer_without_files: "`--shuffle-buffer` (stream --data) without --valid and --test files",
        cli(|d| { write(d, "l.txt", "pos good\nneg bad\n"); }, &["train", "classify", "--data", "<tmp>/l.txt", "--shuffle-buffer", "100", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--shuffle-buffer 100 streams --data from the file, so the validation and test rows cannot be held out of it: give --valid FILE and --test FILE";
    shuffle_buffer_other_encoding: "`--shuffle-buffer` with a non-UTF-8 --encoding",
        cli(|d| { write(d, "l.txt", "pos good\nneg bad\n"); }, &["train", "tag", "--data", "<tmp>/l.txt", "--valid", "<tmp>/l.txt", "--test", "<tmp>/l.txt", "--encoding", "latin1", "--shuffle-buffer", "100", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--shuffle-buffer streams --data as UTF-8; convert the file (e.g. `iconv -f latin1 -t utf-8`) or drop --shuffle-buffer";
    opt_refused_by_task: "`--valid` given to `forecast`, which splits its one series by time",
        cli(|d| { write(d, "s.csv", "t,v\n1,2\n"); }, &["train", "forecast", "--data", "<tmp>/s.csv", "--valid", "<tmp>/s.csv", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--valid: forecast splits its one --data series by time; size the test part with --split and the validation part with --valid-split";
    opt_test_file_missing: "`--test` names a file that does not exist (refused before training)",
        cli(|d| { write(d, "l.txt", "pos good\n"); }, &["train", "classify", "--data", "<tmp>/l.txt", "--test", "<tmp>/tset.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--test <tmp>/tset.txt: no such file";
    opt_season_zero: "`--season 0` (forecast)",
        cli(|d| { write(d, "s.csv", "t,v\n1,2\n"); }, &["train", "forecast", "--data", "<tmp>/s.csv", "--season", "0", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--season must be at least 1, got 0";
    opt_valid_split_one: "`--valid-split 1` (forecast, digits)",
        cli(|d| { write(d, "s.csv", "t,v\n1,2\n"); }, &["train", "forecast", "--data", "<tmp>/s.csv", "--valid-split", "1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--valid-split must be in (0, 1), got 1";
    opt_split_half_twice: "`--split 0.6` without `--valid`/`--test`: no room for a validation and a test part of that size",
        cli(|d| { write(d, "l.txt", "pos good film\nneg bad film\n".repeat(20)); }, &["train", "classify", "--data", "<tmp>/l.txt", "--split", "0.6", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--split 0.6: too large to hold out a validation and a test part of that size each; give --split below 0.5, or --valid/--test FILE";
    opt_split_zero: "`--split 0`",
        cli(nothing, &["train", "char-lm", "--split", "0", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--split must be in (0, 1), got 0";
    opt_clip_negative: "`--clip -1`",
        cli(nothing, &["train", "adding", "--clip", "-1", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--clip must be >= 0 (0 = no clipping), got -1";
    opt_teacher_forcing: "`--teacher-forcing 2`",
        cli(nothing, &["train", "dates", "--teacher-forcing", "2", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--teacher-forcing must be in [0, 1], got 2";
    opt_unknown_cell: "`--cell lstn`",
        cli(nothing, &["train", "adding", "--cell", "lstn", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--cell: unknown cell 'lstn': expected one of lstm, gru, rnn-tanh, rnn-relu";
    opt_unknown_task: "`rnn train chess`",
        cli(nothing, &["train", "chess"])
        => "unknown task 'chess': expected one of routine, adding, copy, dates, char-lm, word-lm, classify, tag, seq2seq, forecast, digits";
    opt_unknown_level: "`--level bogus`",
        cli(|d| { write(d, "ok.txt", corpus(40)); }, &["train", "word-lm", "--data", "<tmp>/ok.txt", "--level", "bogus", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--level must be char, word or subword (language models) or tutorial (translation), got 'bogus'";
    opt_unknown_pooling: "`--pooling bogus`",
        cli(|d| { write(d, "train.txt", sentiment(40)); }, &["train", "classify", "--data", "<tmp>/train.txt", "--pooling", "bogus", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--pooling must be last, mean, max or attention, got 'bogus'";
    opt_unknown_attention: "`--attention bogus`",
        cli(nothing, &["train", "dates", "--attention", "bogus", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--attention: Seq2Seq: unknown attention 'bogus': expected one of none|additive|dot|general";
    opt_unknown_optimizer: "`--optimizer adagrad`",
        cli(nothing, &["train", "adding", "--optimizer", "adagrad", "--samples", "32", "--seq-len", "4", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--optimizer must be adamw or sgd, got 'adagrad'";
    opt_unknown_flag: "`--hiden 8` (misspelt flag)",
        cli(nothing, &["train", "adding", "--hiden", "8"])
        => "unexpected argument '--hiden' found";
    opt_unwritable_out: "`--out` below a regular file",
        cli(|d| { write(d, "a-file", "x"); }, &["train", "adding", "--out", "<tmp>/a-file/run", "--device", "cpu", "--max-steps", "1"])
        => "--out <tmp>/a-file/run: cannot create the directory: Not a directory (os error 20)";
    opt_data_for_generated_task: "`--data` given to a generated task",
        cli(|d| { write(d, "ok.txt", corpus(4)); }, &["train", "adding", "--data", "<tmp>/ok.txt", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--data: the adding task generates its data and reads no file; set its size with --seq-len and --samples";
    config_unknown_key: "`run.toml` line 2: misspelt key `hiden`",
        cli(|d| { write(d, "run.toml", "hidden = 8\nhiden = 3\n"); }, &["train", "adding", "--config", "<tmp>/run.toml", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--config <tmp>/run.toml:2: unknown key `hiden` (did you mean `hidden`?); the keys are the long flags of `rnn train --help` without `--`";
    config_wrong_type: "`run.toml` line 2: `layers = \"two\"`",
        cli(|d| { write(d, "run.toml", "hidden = 8\nlayers = \"two\"\n"); }, &["train", "adding", "--config", "<tmp>/run.toml", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--config <tmp>/run.toml:2: `layers`: invalid type: string \"two\", expected usize";
    config_toml_syntax: "`run.toml` line 2 is not TOML",
        cli(|d| { write(d, "run.toml", "hidden = 8\nlayers = = 3\n"); }, &["train", "adding", "--config", "<tmp>/run.toml", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--config <tmp>/run.toml:2: invalid TOML: extra `=`, expected nothing";
    config_json_syntax: "`run.json` line 3: trailing comma",
        cli(|d| { write(d, "run.json", "{\n  \"hidden\": 8,\n}\n"); }, &["train", "adding", "--config", "<tmp>/run.json", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--config <tmp>/run.json:3: invalid JSON: trailing comma at line 3 column 1";
    config_json_unknown_key: "`run.json` line 3: unknown key `lerning_rate`",
        cli(|d| { write(d, "run.json", "{\n  \"hidden\": 8,\n  \"lerning_rate\": 0.1\n}\n"); }, &["train", "adding", "--config", "<tmp>/run.json", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--config <tmp>/run.json:3: unknown key `lerning_rate`; the keys are the long flags of `rnn train --help` without `--`";
    config_out_of_range: "`run.toml` line 1: `dropout = 1.5`",
        cli(|d| { write(d, "run.toml", "dropout = 1.5\n"); }, &["train", "adding", "--config", "<tmp>/run.toml", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--config <tmp>/run.toml:1: --dropout must be in [0, 1), got 1.5";
    config_missing: "`--config` names a file that does not exist",
        cli(nothing, &["train", "adding", "--config", "<tmp>/nope.toml", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--config <tmp>/nope.toml: cannot read the file: No such file or directory (os error 2)";
    config_not_a_table: "`run.json` is a JSON array",
        cli(|d| { write(d, "run.json", "[8, 16]\n"); }, &["train", "adding", "--config", "<tmp>/run.json", "--out", "<tmp>/run", "--device", "cpu", "--max-steps", "1"])
        => "--config <tmp>/run.json: expected a table of options (`key = value` lines in TOML, an object in JSON)";
    eval_batch_zero: "`rnn eval --batch-size 0`",
        cli(|d| { ckpt(d); }, &["eval", "--checkpoint", "<tmp>/ckpt", "--batch-size", "0", "--device", "cpu"])
        => "--batch-size must be at least 1, got 0";
    predict_no_input: "`rnn predict` without `--input`",
        cli(|d| { ckpt(d); }, &["predict", "--checkpoint", "<tmp>/ckpt", "--device", "cpu"])
        => "--input is required: give a text or a file with one input per line";
    sample_negative_temperature: "`rnn sample --temperature -1`",
        cli(lm, &["sample", "--checkpoint", "<tmp>/lm", "--temperature", "-1", "--device", "cpu"])
        => "--temperature: SamplingConfig: temperature must be finite and >= 0 (0 = greedy), got -1";
    sample_top_p_above_one: "`rnn sample --top-p 1.5`",
        cli(lm, &["sample", "--checkpoint", "<tmp>/lm", "--top-p", "1.5", "--device", "cpu"])
        => "--top-p: SamplingConfig: top_p must be in (0, 1] (or None for no top-p filter), got 1.5";
    sample_top_k_zero: "`rnn sample --top-k 0`",
        cli(lm, &["sample", "--checkpoint", "<tmp>/lm", "--top-k", "0", "--device", "cpu"])
        => "--top-k: SamplingConfig: top_k must be >= 1 (or None for no top-k filter), got 0";
    sample_zero_samples: "`rnn sample --num 0`",
        cli(lm, &["sample", "--checkpoint", "<tmp>/lm", "--num", "0", "--device", "cpu"])
        => "--num must be at least 1, got 0";
    sample_zero_length: "`rnn sample --max-len 0`",
        cli(lm, &["sample", "--checkpoint", "<tmp>/lm", "--max-len", "0", "--device", "cpu"])
        => "--max-len must be at least 1, got 0";
    sample_missing_vocab: "`vocab.json` deleted from a language-model checkpoint",
        cli(|d| { lm(d); std::fs::remove_file(d.join("lm/vocab.json")).unwrap(); }, &["sample", "--checkpoint", "<tmp>/lm", "--device", "cpu"])
        => "<tmp>/lm/vocab.json: missing from the checkpoint";
    sample_corrupt_vocab: "`vocab.json` is not JSON",
        cli(|d| { lm(d); std::fs::write(d.join("lm/vocab.json"), "{\"tokens\": [").unwrap(); }, &["sample", "--checkpoint", "<tmp>/lm", "--device", "cpu"])
        => "<tmp>/lm/vocab.json: vocabulary JSON: EOF while parsing a list at line 1 column 12";
    bench_unknown_mode: "`rnn bench --mode fast`",
        cli(nothing, &["bench", "--mode", "fast"])
        => "--mode must be train or infer, got 'fast'";

    // -- wrong device or dtype --
    device_cuda_not_built: "`--device cuda` in a build without the `cuda` feature",
        cli(nothing, &["train", "adding", "--device", "cuda", "--out", "<tmp>/run", "--max-steps", "1"])
        => "--device: device 'cuda': this build has no CUDA support; rebuild with `--features cuda` (e.g. `cargo build --release --features cuda`)", unless "cuda";
    device_metal_not_built: "`--device metal` in a build without the `metal` feature",
        cli(nothing, &["train", "adding", "--device", "metal", "--out", "<tmp>/run", "--max-steps", "1"])
        => "--device: device 'metal': this build has no Metal support; rebuild with `--features metal` on macOS", unless "metal";
    device_unknown: "`--device tpu`",
        cli(nothing, &["train", "adding", "--device", "tpu", "--out", "<tmp>/run", "--max-steps", "1"])
        => "--device: unknown device 'tpu': expected auto, cpu, cuda, cuda:N or metal";
    device_bad_index: "`--device cuda:first`",
        cli(nothing, &["eval", "--checkpoint", "<tmp>", "--device", "cuda:first"])
        => "--device: device 'cuda:first': the part after ':' must be a device number, like cuda:0";
    device_eval_unknown: "`rnn eval --device tpu`",
        cli(|d| { ckpt(d); }, &["eval", "--checkpoint", "<tmp>/ckpt", "--device", "tpu"])
        => "--device: unknown device 'tpu': expected auto, cpu, cuda, cuda:N or metal";
    bench_half_dtype: "`rnn bench --dtype f16` with the default `--impl fused`",
        cli(nothing, &["bench", "--dtype", "f16"])
        => "--impl fused runs f32 or f64 (the fused CPU op), got --dtype F16; use --impl composed (or candle-nn) for bf16/f16";
    dtype_unknown: "`--dtype f8`",
        cli(nothing, &["train", "adding", "--dtype", "f8", "--device", "cpu", "--out", "<tmp>/run", "--max-steps", "1"])
        => "--dtype must be f32, f64, bf16 or f16, got 'f8'";
}

// ---- running a case ---------------------------------------------------------------------------

fn find(id: &str) -> Case {
    cases()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no case {id}"))
}

fn feature_on(feature: &str) -> bool {
    match feature {
        "cuda" => cfg!(feature = "cuda"),
        "metal" => cfg!(feature = "metal"),
        other => panic!("unknown feature {other}"),
    }
}

/// Runs the case in a fresh temporary directory and returns its error line, `<tmp>` for the
/// directory; a panic or a success is a failure of the test.
fn error_of(case: &Case) -> String {
    let dir = tempfile::tempdir().unwrap();
    // Canonical, so that paths the program canonicalises are replaced too.
    let d = dir.path().canonicalize().unwrap();
    let tmp = d.to_str().unwrap().to_string();
    let result = match &case.run {
        Run::Cli { setup, args } => {
            setup(&d);
            let args: Vec<String> = std::iter::once("rnn".to_string())
                .chain(args.iter().map(|a| a.replace("<tmp>", &tmp)))
                .collect();
            std::panic::catch_unwind(|| rnn::cli::run(args))
        }
        Run::Lib { f, .. } => std::panic::catch_unwind(|| f(&d)),
    };
    let error = match result {
        Err(panic) => {
            let what = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("{}: PANICKED instead of an error: {what}", case.id)
        }
        Ok(Ok(())) => panic!("{}: succeeded, expected an error", case.id),
        Ok(Err(e)) => rnn::cli::error_line(&e),
    };
    // Candle appends a backtrace on new lines when RUST_BACKTRACE is set.
    let line = match std::env::var("RUST_BACKTRACE") {
        Ok(v) if v != "0" => error.lines().next().unwrap_or_default().to_string(),
        _ => error,
    };
    line.replace(&tmp, "<tmp>")
}

fn check(id: &str) {
    let case = find(id);
    if let Some(feature) = case.unless_feature {
        if feature_on(feature) {
            return;
        }
    }
    let got = error_of(&case);
    assert!(
        !got.contains('\n'),
        "{id}: the error is not one line:\n{got}"
    );
    assert_eq!(
        got, case.expect,
        "\n{id}: the error message changed.\n  got:      {got}\n  expected: {}\nUpdate the case in tests/bad_inputs.rs, then `RNN_BLESS=1 cargo test --test bad_inputs doc_table` to regenerate docs/BAD_INPUTS.md.",
        case.expect
    );
}

// ---- the document -----------------------------------------------------------------------------

const DOC: &str = "docs/BAD_INPUTS.md";

const DOC_HEAD: &str = "\
# Bad inputs and the errors they get

Every bad input we tried, the command (or library call) that meets it, and the exact error line:
what `rnn` prints after `error: ` (exit code 1; usage errors from the argument parser exit with
code 2 and print their usage as well), or the `Display` of the error the library returns.
`<tmp>` stands for the temporary directory the input was written to.

Each row is a test in [`tests/bad_inputs.rs`](../tests/bad_inputs.rs), which compares the whole
message, and this file is generated from that list: `cargo test --test bad_inputs` fails when the
two differ, and `RNN_BLESS=1 cargo test --test bad_inputs doc_table` rewrites this file. No input
makes `rnn` panic: a case that panics fails its test.

## Checkpoints: safetensors and JSON only, validated on load

What issue 8 part 7 asks, and what guarantees it:

- A checkpoint directory holds `model.safetensors` (the parameters), `config.json` (task, model
  configuration, preprocessing), `state.json` (the training state) and, depending on the task,
  `optimizer.safetensors`, `vocab.json` or `tokenizer.json`. Nothing else is read, and nothing
  in it is code: safetensors is a JSON header plus raw little-endian tensor bytes, JSON is data.
  There is no pickle and no `eval`; a pickle where the safetensors file should be is refused as
  an invalid file (`ckpt_pickle_bytes`).
- Loading parses both formats strictly: a truncated or corrupt safetensors file
  (`ckpt_truncated_safetensors`, `ckpt_truncated_header_lib`), a missing file
  (`ckpt_model_file_missing`), invalid JSON with its line (`ckpt_config_corrupt`,
  `ckpt_state_corrupt`), a format version this build does not read
  (`ckpt_state_future_version`) and parameters holding NaN or infinity (`ckpt_nan_parameter`)
  are refused, naming the file.
- The model is rebuilt from `config.json`, then every saved tensor is checked against the
  model's parameters by name, shape and dtype before any value is copied, and any difference is
  refused with the list of problems: a missing tensor (`ckpt_missing_tensor`), an extra one
  (`ckpt_extra_tensor`), a wrong dtype (`ckpt_wrong_dtype`), a wrong shape
  (`ckpt_wrong_shape`), a configuration that does not describe the saved weights
  (`ckpt_other_hidden_size`, `ckpt_other_cell`), a malformed configuration
  (`ckpt_config_no_task`, `ckpt_config_unknown_task`, `ckpt_config_model_malformed`), a
  missing or corrupt vocabulary (`sample_missing_vocab`, `sample_corrupt_vocab`), a
  checkpoint of another task (`ckpt_other_task_sample`, `ckpt_resume_other_task`,
  `ckpt_init_from_other_task`) or of other sizes (`ckpt_resume_other_size`,
  `ckpt_init_from_other_size`).

## The table
";

/// Escapes a table cell: `|` would end it, and a code span may hold backticks.
fn code(s: &str) -> String {
    let s = s.replace('|', "\\|");
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

fn render() -> String {
    let mut out = String::from(DOC_HEAD);
    let cases = cases();
    out.push_str(&format!(
        "\n{} cases.\n\n| id | bad input | command or call | exact error message |\n|---|---|---|---|\n",
        cases.len()
    ));
    for c in &cases {
        let command = match &c.run {
            Run::Cli { args, .. } => {
                let quoted: Vec<String> = args
                    .iter()
                    .map(|a| {
                        if a.contains(' ') || a.is_empty() {
                            format!("'{a}'")
                        } else {
                            a.to_string()
                        }
                    })
                    .collect();
                format!("rnn {}", quoted.join(" "))
            }
            Run::Lib { call, .. } => call.to_string(),
        };
        let mut message = code(c.expect);
        if let Some(why) = c.issue {
            message = format!("{message} **(expected once fixed; test ignored: {why})**");
        }
        if let Some(f) = c.unless_feature {
            message.push_str(&format!(" (builds without `--features {f}`)"));
        }
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            c.id,
            c.input.replace('|', "\\|"),
            code(&command),
            message
        ));
    }
    out
}

#[test]
fn doc_table_is_up_to_date() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(DOC);
    let want = render();
    if std::env::var_os("RNN_BLESS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    if have != want {
        let diff: Vec<String> = have
            .lines()
            .zip(want.lines())
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .take(10)
            .map(|(i, (a, b))| format!("line {}:\n  doc:   {a}\n  tests: {b}", i + 1))
            .collect();
        panic!(
            "{DOC} is out of date with tests/bad_inputs.rs ({} lines in the doc, {} rendered); first differences:\n{}\nRegenerate it with `RNN_BLESS=1 cargo test --test bad_inputs doc_table`.",
            have.lines().count(),
            want.lines().count(),
            diff.join("\n")
        );
    }
}

#[test]
fn cases_are_many_and_distinct() {
    let cases = cases();
    assert!(cases.len() >= 35, "{} cases", cases.len());
    let mut ids: Vec<&str> = cases.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), cases.len(), "duplicate ids");
}

//! The loaders on the real data sets of `../shared/data/` (sizes from its README). Skipped, with a
//! printed reason, when that folder is absent (a fresh clone without the shared data).

use candle_core::Device;
use rnn_train::data::{
    read_conllu, read_labelled, read_mnist, read_pairs, read_text, tokenize, Granularity,
    MissingPolicy, Series, Vocab,
};
use std::path::PathBuf;

fn data_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: {} not found (shared data sets absent)",
            dir.display()
        );
        None
    }
}

#[test]
fn shared_data_sets_load_with_their_published_sizes() {
    let Some(d) = data_dir() else { return };
    let text = read_text(&d.join("char_lm/tinyshakespeare.txt")).unwrap();
    let chars = tokenize(&text, Granularity::Char);
    let vocab = Vocab::build(chars.iter().map(String::as_str), 1, None).unwrap();
    assert_eq!(vocab.len(), 65 + 4, "65 symbols plus the special tokens");

    let ptb = read_text(&d.join("word_lm/ptb.train.txt")).unwrap();
    let words = tokenize(&ptb, Granularity::Word);
    assert_eq!(words.len(), 929_589, "887k words + one <eos> per sentence");
    let vocab = Vocab::build(words.iter().map(String::as_str), 1, None).unwrap();
    assert_eq!(
        vocab.len(),
        10_000 + 2,
        "PTB's 10k (incl. <unk>, <eos>) plus <pad>, <bos>"
    );

    let ewt = read_conllu(&d.join("tagging/en_ewt-ud-train.conllu"), None).unwrap();
    assert_eq!(ewt.len(), 12_544);

    let sst = read_labelled(
        &d.join("classification/stsa.binary.train"),
        Some(&["0", "1"]),
    )
    .unwrap();
    assert_eq!(sst.len(), 6_920);

    let fra = read_pairs(&d.join("translation/fra.txt"), 0, 1).unwrap();
    assert_eq!(fra.len(), 142_787);

    let air = Series::from_csv(
        &d.join("timeseries/airline-passengers.csv"),
        "Passengers",
        &[],
        MissingPolicy::Error,
    )
    .unwrap();
    assert_eq!(air.len(), 144);

    let digits = read_mnist(
        &d.join("digits/t10k-images-idx3-ubyte.gz"),
        &d.join("digits/t10k-labels-idx1-ubyte.gz"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(digits.images.dims(), &[10_000, 28, 28]);
}

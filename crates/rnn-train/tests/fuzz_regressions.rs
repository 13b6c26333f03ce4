//! Regression tests for the parser bugs found while fuzzing (see docs/FUZZING.md): each test
//! runs a parser on a saved input (in `tests/fuzz_regressions/`) or on the input inline, and
//! checks that it returns a clear error (naming the file and, where there is one, the line)
//! instead of panicking, hanging or allocating without bound.

use candle_core::Device;
use rnn_train::data::{parse_mnist, parse_mnist_images, parse_pairs};
use std::path::{Path, PathBuf};

/// The saved input `name`.
fn input(name: &str) -> (PathBuf, Vec<u8>) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(name);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (path, bytes)
}

/// A gzip IDX file whose header announces one 1x1 image but which decompresses to 4 MiB: it was
/// decompressed in full before the size check; now reading stops one byte past the announced
/// size and the error says so.
#[test]
fn mnist_gzip_with_more_data_than_announced_stops_early() {
    let (images, bytes) = input("mnist_gzip_bomb.idx3.gz");
    assert!(bytes.len() < 8192, "the saved input stays small");
    let (labels, label_bytes) = input("mnist_labels_ok.idx1");
    let err = parse_mnist(&images, &bytes, &labels, &label_bytes, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mnist_gzip_bomb.idx3.gz")
            && err.contains("header says 1 images of 1x1 (1 bytes), the file has more bytes"),
        "{err}"
    );
    let err = parse_mnist_images(&images, &bytes, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(err.contains("the file has more bytes"), "{err}");
}

/// A column index of `usize::MAX` overflowed `max(source, target) + 1` (a panic in debug
/// builds); now it is an error.
#[test]
fn pairs_with_the_largest_column_index_is_an_error() {
    let path = Path::new("pairs.tsv");
    let err = parse_pairs(path, b"Go.\tVa !\n", usize::MAX, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("out of range"), "{err}");
    let ok = parse_pairs(path, b"Go.\tVa !\n", 1, 0).unwrap();
    assert_eq!(
        (ok[0].source.as_str(), ok[0].target.as_str()),
        ("Va !", "Go.")
    );
}

/// A `tokenizer.json` whose `decoder` the tokenizers crate cannot deserialise: tokenizers 0.23
/// panicked ("Helper: Error(\"expected ident\", line: 53, column: 24)", decoders/mod.rs:90);
/// now loading it is an error naming the file.
#[test]
#[cfg(feature = "tokenizers")]
fn tokenizer_json_that_makes_the_tokenizers_crate_panic_is_an_error() {
    let (path, bytes) = input("tokenizer_bad_decoder.json");
    let err = rnn_train::data::SubwordTokenizer::from_bytes(&path, &bytes)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer_bad_decoder.json") && err.contains("not a valid tokenizer.json"),
        "{err}"
    );
}

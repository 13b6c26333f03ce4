//! `rnn train digits --hf-dataset ylecun/mnist` (feature `hub`): MNIST through candle-datasets'
//! loader, on parquet files in the MNIST layout (an `image` struct of PNG bytes, an integer
//! `label`) that the test writes into a Hugging Face cache under a temporary `HF_HOME`, where
//! the loader looks for them (the `refs/convert/parquet` revision). Offline: the pixels and
//! labels reach the run exactly, `eval` and `predict` read them again; a dataset not cached (and
//! no network), an unknown dataset or split, and an image that is not a PNG give clear errors.
#![cfg(all(feature = "cli", feature = "hub"))]

mod common;
use common::rnn_bin;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::parser::parse_message_type;

/// The commit the fake cache's `refs/convert/parquet` names.
const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// Image `i` of a split: label `i % 10`, 28x28 pixels that differ from image to image.
fn image(i: usize, seed: usize) -> (Vec<u8>, i64) {
    let pixels = (0..784)
        .map(|p| ((p * 7 + i * 13 + seed * 31) % 256) as u8)
        .collect();
    (pixels, (i % 10) as i64)
}

fn png(pixels: &[u8]) -> Vec<u8> {
    let img = image::GrayImage::from_raw(28, 28, pixels.to_vec()).unwrap();
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    bytes.into_inner()
}

/// Writes `rows` (image bytes, label) in the Hugging Face MNIST layout:
/// `image: struct<bytes: binary, path: string>` (path null) and `label: int64`.
fn write_parquet(path: &Path, rows: &[(Vec<u8>, i64)]) {
    let schema = parse_message_type(
        "message schema {
            OPTIONAL group image { OPTIONAL BYTE_ARRAY bytes; OPTIONAL BYTE_ARRAY path (UTF8); }
            OPTIONAL INT64 label;
        }",
    )
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = Arc::new(WriterProperties::builder().build());
    let file = std::fs::File::create(path).unwrap();
    let mut writer = SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
    let mut group = writer.next_row_group().unwrap();
    let n = rows.len();
    let mut column = 0;
    while let Some(mut col) = group.next_column().unwrap() {
        match column {
            0 => {
                let bytes: Vec<ByteArray> = rows.iter().map(|(b, _)| b.clone().into()).collect();
                col.typed::<ByteArrayType>()
                    .write_batch(&bytes, Some(&vec![2; n]), None)
                    .unwrap();
            }
            1 => {
                col.typed::<ByteArrayType>()
                    .write_batch(&[], Some(&vec![1; n]), None)
                    .unwrap();
            }
            _ => {
                let labels: Vec<i64> = rows.iter().map(|(_, l)| *l).collect();
                col.typed::<Int64Type>()
                    .write_batch(&labels, Some(&vec![1; n]), None)
                    .unwrap();
            }
        }
        col.close().unwrap();
        column += 1;
    }
    group.close().unwrap();
    writer.close().unwrap();
}

/// Parquet rows: PNG bytes and label.
type Rows = Vec<(Vec<u8>, i64)>;

/// The split of `n` images, as pixels and labels, and as parquet rows.
fn split(n: usize, seed: usize) -> (Vec<u8>, Vec<u8>, Rows) {
    let (mut pixels, mut labels, mut rows) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        let (p, l) = image(i, seed);
        rows.push((png(&p), l));
        pixels.extend_from_slice(&p);
        labels.push(l as u8);
    }
    (pixels, labels, rows)
}

/// Puts `train` and `test` rows where candle-datasets' MNIST loader finds them: the
/// `refs/convert/parquet` revision of `datasets--ylecun--mnist` in `HF_HOME/hub`.
fn cache_mnist(home: &Path, train: &[(Vec<u8>, i64)], test: &[(Vec<u8>, i64)]) {
    let repo = home.join("hub/datasets--ylecun--mnist");
    let refs = repo.join("refs/refs/convert");
    std::fs::create_dir_all(&refs).unwrap();
    std::fs::write(refs.join("parquet"), REV).unwrap();
    let snap = repo.join("snapshots").join(REV).join("mnist");
    write_parquet(&snap.join("train/0000.parquet"), train);
    write_parquet(&snap.join("test/0000.parquet"), test);
}

fn rnn(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(rnn_bin())
        .args(args)
        .env("HF_HOME", home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HUGGINGFACE_HUB_CACHE")
        // No network here; make sure a test machine with one does not reach the Hub either.
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap()
}

fn ok(o: &std::process::Output) -> String {
    let all = format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "rnn failed:\n{all}");
    all
}

fn failed(o: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "rnn succeeded:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

fn train_digits(home: &Path, out: &Path, split: &str) -> String {
    ok(&rnn(
        home,
        &[
            "train",
            "digits",
            "--hf-dataset",
            "ylecun/mnist",
            "--hf-split",
            split,
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
            "--epochs",
            "1",
            "--hidden",
            "8",
            "--batch-size",
            "16",
        ],
    ))
}

#[test]
fn digits_trains_on_a_cached_mnist_through_candle_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let (train_pixels, train_labels, train_rows) = split(50, 1);
    let (test_pixels, test_labels, test_rows) = split(20, 2);
    cache_mnist(&home, &train_rows, &test_rows);

    let out = dir.path().join("run");
    let all = train_digits(&home, &out, "train");
    // 50 images: the last 10 test, the 4 before them validate.
    assert!(
        all.contains("digits: 50 images of 28x28 (28 steps of 28 features): first 36 train, next 4 validate, last 10 test"),
        "{all}"
    );
    assert!(all.contains("through candle-datasets"), "{all}");
    // The split reached the run exactly: the PNGs' pixels and the labels, in order.
    let images: PathBuf = out.join("hf-data/ylecun--mnist.train-images.idx3.gz");
    let idx = gunzip(&images);
    assert_eq!(
        idx[..16],
        [0, 0, 8, 3, 0, 0, 0, 50, 0, 0, 0, 28, 0, 0, 0, 28]
    );
    assert!(idx[16..] == train_pixels[..], "pixels differ");
    let labels = gunzip(&out.join("hf-data/ylecun--mnist.train-labels.idx1.gz"));
    assert_eq!(labels[..8], [0, 0, 8, 1, 0, 0, 0, 50]);
    assert_eq!(labels[8..], train_labels[..]);

    // eval re-scores the held-out part of the same files; predict reads them as --input.
    let eval = ok(&rnn(
        &home,
        &[
            "eval",
            "--checkpoint",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    ));
    assert!(eval.contains("digits: test accuracy "), "{eval}");
    assert!(
        eval.contains("on the last 10 images of ") && eval.contains("ylecun--mnist.train-images"),
        "{eval}"
    );
    let predict = ok(&rnn(
        &home,
        &[
            "predict",
            "--checkpoint",
            out.to_str().unwrap(),
            "--input",
            images.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    ));
    let lines: Vec<&str> = predict
        .lines()
        .filter(|l| l.split('\t').count() == 3)
        .collect();
    assert_eq!(lines.len(), 50, "{predict}");

    // --hf-split test reads the other file.
    let out = dir.path().join("run-test");
    let all = train_digits(&home, &out, "test");
    assert!(all.contains("digits: 20 images of 28x28"), "{all}");
    let idx = gunzip(&out.join("hf-data/ylecun--mnist.test-images.idx3.gz"));
    assert!(idx[16..] == test_pixels[..], "pixels differ");
    let labels = gunzip(&out.join("hf-data/ylecun--mnist.test-labels.idx1.gz"));
    assert_eq!(labels[8..], test_labels[..]);
}

#[test]
fn a_dataset_not_cached_and_no_network_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let out = dir.path().join("run");
    let args = |name: &'static str, split: &'static str| {
        vec![
            "train",
            "digits",
            "--hf-dataset",
            name,
            "--hf-split",
            split,
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ]
    };
    let err = failed(&rnn(&home, &args("ylecun/mnist", "train")));
    assert!(
        err.contains("--hf-dataset ylecun/mnist --hf-split train"),
        "{err}"
    );
    assert!(
        err.contains(&home.join("hub").display().to_string()),
        "{err}"
    );
    assert!(err.contains("mnist/train/0000.parquet"), "{err}");
    assert!(err.contains("network"), "{err}");

    // The split cached at another revision (the main branch's file names): the error says how
    // to fetch the loader's revision.
    let (_, _, rows) = split(3, 1);
    let main = home.join("hub/datasets--ylecun--mnist");
    write_parquet(
        &main.join("snapshots/fedcba/mnist/train-00000-of-00001.parquet"),
        &rows,
    );
    let err = failed(&rnn(&home, &args("ylecun/mnist", "train")));
    assert!(err.contains("train-00000-of-00001.parquet"), "{err}");
    assert!(err.contains("--revision refs/convert/parquet"), "{err}");

    let err = failed(&rnn(&home, &args("someone/cifar", "train")));
    assert!(err.contains("--hf-dataset someone/cifar"), "{err}");
    assert!(
        err.contains("ylecun/mnist, zalando-datasets/fashion_mnist"),
        "{err}"
    );
    let err = failed(&rnn(&home, &args("ylecun/mnist", "validation")));
    assert!(err.contains("--hf-split validation"), "{err}");
    assert!(err.contains("train and test"), "{err}");
}

#[test]
fn an_image_that_is_not_a_png_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let (_, _, mut train) = split(5, 1);
    train[3].0 = b"not an image".to_vec();
    let (_, _, test) = split(2, 2);
    cache_mnist(&home, &train, &test);
    let out = dir.path().join("run");
    let err = failed(&rnn(
        &home,
        &[
            "train",
            "digits",
            "--hf-dataset",
            "ylecun/mnist",
            "--out",
            out.to_str().unwrap(),
            "--device",
            "cpu",
        ],
    ));
    assert!(err.contains("--hf-dataset ylecun/mnist"), "{err}");
    assert!(err.contains("could not decode an image"), "{err}");
}

#[test]
fn hf_dataset_and_data_files_exclude_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("hf");
    let out = dir.path().join("run");
    let o = dir.path().to_str().unwrap();
    let err = failed(&rnn(
        &home,
        &[
            "train",
            "digits",
            "--hf-dataset",
            "ylecun/mnist",
            "--data",
            o,
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("--data IMAGES or --hf-dataset NAME"), "{err}");
    let err = failed(&rnn(
        &home,
        &[
            "train",
            "digits",
            "--hf-dataset",
            "ylecun/mnist",
            "--labels",
            o,
            "--out",
            out.to_str().unwrap(),
        ],
    ));
    assert!(err.contains("holds its labels"), "{err}");
}

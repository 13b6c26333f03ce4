//! MNIST-layout image datasets for `digits` (`--hf-dataset ylecun/mnist`), through
//! candle-datasets' own loaders (`candle_datasets::vision::mnist::load` and
//! `fashion_mnist::load`). Those read the `refs/convert/parquet` revision from the local Hugging
//! Face cache (`NAME/train/0000.parquet` and `NAME/test/0000.parquet`: an `image` struct of PNG
//! bytes and an integer `label`) and download it only when it is not there. The split's images
//! and labels become gzip IDX files in the run directory, read like any `--data`/`--labels` pair
//! (so `rnn eval` re-scores them and `rnn predict --input` takes them).

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

#[cfg(feature = "hub")]
use super::{cache_dir, cached_split_files};

/// The Hugging Face image datasets `digits` reads (`--hf-dataset`), those candle-datasets has a
/// loader for: 28x28 images in an `image` column (PNG bytes) and a `label` column of integers,
/// splits `train` and `test`.
pub const MNIST_DATASETS: [&str; 2] = ["ylecun/mnist", "zalando-datasets/fashion_mnist"];

/// Writes the images and labels of `split` of the MNIST-layout dataset `dataset` (one of
/// [`MNIST_DATASETS`]) as IDX files under `out` and returns their paths `(images, labels)`.
#[cfg(not(feature = "hub"))]
pub fn mnist_idx_files(dataset: &str, _split: &str, _out: &Path) -> Result<(PathBuf, PathBuf)> {
    bail!(
        "--hf-dataset {dataset}: this rnn was built without Hugging Face datasets; rebuild with --features hub"
    )
}

/// Writes the images and labels of `split` of the MNIST-layout dataset `dataset` (one of
/// [`MNIST_DATASETS`]) as gzip IDX files under `out` and returns their paths `(images, labels)`.
#[cfg(feature = "hub")]
pub fn mnist_idx_files(dataset: &str, split: &str, out: &Path) -> Result<(PathBuf, PathBuf)> {
    use anyhow::Context;
    use std::io::Write;

    let ds = load_mnist_like(dataset, split)?;
    let (images, labels) = match split {
        "train" => (ds.train_images, ds.train_labels),
        _ => (ds.test_images, ds.test_labels),
    };
    let n = images.dim(0)?;
    if n == 0 {
        bail!("--hf-dataset {dataset} --hf-split {split}: the split holds no images");
    }
    // The loader gives pixels / 255 as f32; IDX files hold the bytes again.
    let pixels = (images * 255.)?
        .round()?
        .clamp(0f32, 255f32)?
        .to_dtype(candle_core::DType::U8)?
        .flatten_all()?
        .to_vec1::<u8>()?;
    let labels = labels.to_vec1::<u8>()?;
    let side = 28usize;
    if pixels.len() != n * side * side || labels.len() != n {
        bail!(
            "--hf-dataset {dataset} --hf-split {split}: {} pixels and {} labels for {n} images of {side}x{side}",
            pixels.len(),
            labels.len()
        );
    }
    let dir = out.join("hf-data");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let stem = format!("{}.{split}", dataset.replace('/', "--"));
    let write = |name: String, header: &[u32], body: &[u8]| -> Result<PathBuf> {
        let path = dir.join(name);
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = flate2::write::GzEncoder::new(
            std::io::BufWriter::new(file),
            flate2::Compression::fast(),
        );
        for x in header {
            w.write_all(&x.to_be_bytes())?;
        }
        w.write_all(body)?;
        w.finish()?.flush()?;
        Ok(path)
    };
    let images = write(
        format!("{stem}-images.idx3.gz"),
        &[2051, n as u32, side as u32, side as u32],
        &pixels,
    )?;
    let labels = write(format!("{stem}-labels.idx1.gz"), &[2049, n as u32], &labels)?;
    Ok((images, labels))
}

/// `dataset` through its candle-datasets loader, from the cache or the Hub. Errors name the
/// dataset and say whether the files were not cached (and the Hub not reached) or could not be
/// read; the loader's panic on an image it cannot decode becomes an error too.
#[cfg(feature = "hub")]
fn load_mnist_like(dataset: &str, split: &str) -> Result<candle_datasets::vision::Dataset> {
    use candle_datasets::vision::{fashion_mnist, mnist};

    let load: fn() -> candle_core::Result<candle_datasets::vision::Dataset> = match dataset {
        "ylecun/mnist" => mnist::load,
        "zalando-datasets/fashion_mnist" => fashion_mnist::load,
        other => bail!(
            "--hf-dataset {other}: digits reads the MNIST-layout datasets that candle-datasets loads: {}",
            MNIST_DATASETS.join(", ")
        ),
    };
    if split != "train" && split != "test" {
        bail!("--hf-split {split}: {dataset} has the splits train and test");
    }
    let cache = cache_dir();
    let name = dataset.rsplit('/').next().unwrap_or(dataset);
    let wanted: Vec<String> = ["test", "train"]
        .iter()
        .map(|s| format!("{name}/{s}/0000.parquet"))
        .collect();
    let cached = wanted
        .iter()
        .all(|f| convert_parquet_file(&cache, dataset, f).is_some_and(|p| p.exists()));
    let where_ = format!(
        "the Hugging Face cache {} (candle-datasets reads {} of revision refs/convert/parquet)",
        cache.display(),
        wanted.join(" and ")
    );
    match quiet_catch_unwind(load) {
        Ok(Ok(ds)) => Ok(ds),
        Ok(Err(e)) if cached => {
            bail!("--hf-dataset {dataset}: cannot read its files in {where_}: {e}")
        }
        Ok(Err(e)) => {
            let others = cached_split_files(&cache, dataset, split);
            let hint = match others.first() {
                Some(f) => format!(
                    " The cache holds {} of another revision; `huggingface-cli download {dataset} --repo-type dataset --revision refs/convert/parquet` fetches the loader's files.",
                    f.display()
                ),
                None => String::new(),
            };
            bail!(
                "--hf-dataset {dataset} --hf-split {split}: not in {where_}, and the Hub could not be reached to download it (is the network unreachable?): {e}.{hint}"
            )
        }
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            bail!("--hf-dataset {dataset}: candle-datasets could not decode an image of its parquet files in {where_}: {why}")
        }
    }
}

/// Runs `f`, turning a panic into `Err` without the panic message on stderr (the caller reports
/// it as an error).
#[cfg(feature = "hub")]
fn quiet_catch_unwind<T>(f: impl FnOnce() -> T + std::panic::UnwindSafe) -> std::thread::Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(f);
    std::panic::set_hook(hook);
    result
}

/// The path `file` of `dataset`'s `refs/convert/parquet` revision would have in the cache
/// `cache`, if that revision is cached (the hub client keeps the ref `refs/X` under
/// `refs/refs/X`).
#[cfg(feature = "hub")]
fn convert_parquet_file(cache: &Path, dataset: &str, file: &str) -> Option<PathBuf> {
    let repo = cache.join(format!("datasets--{}", dataset.replace('/', "--")));
    let rev = std::fs::read_to_string(repo.join("refs/refs/convert/parquet")).ok()?;
    Some(repo.join("snapshots").join(rev.trim()).join(file))
}

#[cfg(test)]
mod tests {
    #[cfg(not(feature = "hub"))]
    #[test]
    fn without_the_feature_mnist_asks_for_a_rebuild() {
        let e = super::mnist_idx_files("ylecun/mnist", "train", std::path::Path::new("out"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--hf-dataset ylecun/mnist"), "{e}");
        assert!(e.contains("rebuild with --features hub"), "{e}");
    }

    #[cfg(feature = "hub")]
    #[test]
    fn the_loaders_revision_is_found_under_refs_refs() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("datasets--ylecun--mnist");
        assert!(super::convert_parquet_file(dir.path(), "ylecun/mnist", "mnist/x").is_none());
        std::fs::create_dir_all(repo.join("refs/refs/convert")).unwrap();
        std::fs::write(repo.join("refs/refs/convert/parquet"), "abc\n").unwrap();
        assert_eq!(
            super::convert_parquet_file(dir.path(), "ylecun/mnist", "mnist/train/0000.parquet"),
            Some(repo.join("snapshots/abc/mnist/train/0000.parquet"))
        );
    }
}

//! `rnn train digits`: sequential MNIST, and numeric-sequence classification from CSV rows. Each
//! image's rows are the time steps and its pixels per row the features (28 steps of 28 values in
//! [0, 1]); a [`SequenceClassifier`] reads them and predicts the digit.
//!
//! # Data and options
//!
//! - `--data IMAGES.idx3[.gz]` and `--labels LABELS.idx1[.gz]` (IDX format, gzip optional), or
//! - `--data ROWS.csv`: one example per row, its features then its integer class (or a column
//!   headed `label`/`class`/`target`, as in MNIST's CSV), a header row detected and skipped
//!   ([`rnn_train::data::read_feature_rows`]). `--row-len N` folds a row of F features into F/N
//!   time steps of N features (N must divide F; default 28 when F = 784, else 1). Features are
//!   divided by the file's largest absolute value when it exceeds 1 (255 for 8-bit pixels); that
//!   scale is recorded for `rnn eval`. A file is CSV when its name ends in `.csv` or it starts
//!   with text; there are max(10, largest class + 1) classes.
//! - `--hf-dataset NAME [--hf-split train|test]` (feature `hub`): MNIST (`ylecun/mnist`) or
//!   Fashion-MNIST (`zalando-datasets/fashion_mnist`) from Hugging Face, read by candle-datasets'
//!   loaders from the local Hugging Face cache (downloaded into it when not there); the split's
//!   images and labels are kept as gzip IDX files under `OUT/hf-data/`, which `rnn eval` re-reads
//!   and `rnn predict --input` takes (see [`crate::run::hub`]).
//! - `--split F` (default 0.2): the **last** `round(F * n)` images are the **test** part, in file
//!   order (no shuffle), so on the 10k MNIST test set the first 8,000 are for training and the
//!   last 2,000 for testing, the split of the reference "1-NN 96.75%".
//! - `--valid-split F` (default 0.1): the last `round(F * m)` of the `m` images before the test
//!   part are the **validation** part: they pick `best/` and stop training early after
//!   `--patience` (default 4) epochs without a better accuracy. Model selection never sees the
//!   test part; the summary ends with its accuracy at the best checkpoint, which `rnn eval
//!   --checkpoint DIR` prints again.
//! - Model: `--cell` (default lstm), `--hidden` (128), `--layers` (1), `--pooling last|mean|max|attention`
//!   (default last), `--bidirectional`, `--dropout` (between layers and before the head).
//! - Training: `--epochs` (12), `--batch-size` (64), `--lr` (2e-3, AdamW), `--clip` (1.0).
//!
//! Metric: accuracy on the validation images (main, higher is better); the headline is the test
//! accuracy.
//!
//! `rnn eval --checkpoint DIR` rescores the held-out part of the training files; with `--data
//! IMAGES --labels LABELS` it scores every image of those files. `rnn predict --checkpoint DIR
//! --input IMAGES.idx3[.gz]` prints one line per image: its index, the predicted digit and its
//! probability.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::parts::{empty_part, part_rows};
use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarMap;
use rnn_core::{Mode, RnnState};
use rnn_models::classifier::{Input, Pooling, SequenceClassifier, SequenceClassifierConfig};
use rnn_train::data::{read_feature_rows, read_mnist, seeded_shuffle, Mnist};
use rnn_train::trainer::{EarlyStopping, Evaluation, MainMetric, Part, StepLoss, TrainTask};
use serde::{Deserialize, Serialize};

use crate::run::{
    fit, invalid, load_best, stochastic_model, task_from_functions, trainer_config, weights_label,
    CheckpointRun, EvalRequest, PredictRequest, RunContext, TaskName, TaskOptions, TrainDefaults,
    TrainOutcome,
};
use crate::run::{EvalReport, Predictions, Split};

/// Default `--split`: the last 20% are held out.
pub const DEFAULT_SPLIT: f64 = 0.2;
/// Default `--valid-split`: a tenth of the images before the test part validate.
pub const DEFAULT_VALID_SPLIT: f64 = 0.1;
/// Default `--patience`: epochs without a better validation accuracy before training stops.
pub const DEFAULT_PATIENCE: u64 = 4;
/// Default `--hidden`.
pub const DEFAULT_HIDDEN: usize = 128;
/// Default `--batch-size`.
pub const DEFAULT_BATCH: usize = 64;
/// Images per forward pass when evaluating.
const EVAL_CHUNK: usize = 500;

/// What a digits checkpoint records besides the model (`model.spec` in `config.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigitsSpec {
    /// The training images file.
    pub images: PathBuf,
    /// The training labels file.
    pub labels: PathBuf,
    /// Fraction held out at the end: the test part.
    pub split: f64,
    /// Fraction of the images before the test part that validate (0 in checkpoints written
    /// before the validation part existed, whose held-out part was both).
    #[serde(default)]
    pub valid_split: f64,
    /// Rows per image (time steps).
    pub rows: usize,
    /// Pixels per row (features per step).
    pub cols: usize,
    /// For CSV data (`images` is the CSV file, and `labels` too): what the features were divided
    /// by. `None` for IDX files.
    #[serde(default)]
    pub csv_scale: Option<f32>,
}

/// Reads images and labels; errors name the flag and the file.
pub fn load(images: &Path, labels: &Path, device: &Device) -> Result<Mnist> {
    // The loader's errors name the file at fault; the flag that gave it is added in front.
    read_mnist(images, labels, device).map_err(|e| {
        let message = e.to_string();
        let names = |p: &Path| message.starts_with(&format!("{}:", p.display()));
        let flag = if names(labels) {
            "--labels".to_string()
        } else if names(images) {
            "--data".to_string()
        } else {
            format!("--data {} --labels {}", images.display(), labels.display())
        };
        anyhow::Error::new(e).context(flag)
    })
}

/// Whether `path` holds CSV rows rather than IDX images: a `.csv` name, or text at its start
/// (IDX files start with a zero byte, gzip files with 0x1f 0x8b).
pub fn is_csv(path: &Path) -> bool {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"))
    {
        return true;
    }
    let mut head = [0u8; 64];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .unwrap_or(0);
    n > 0
        && head[..n]
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
}

/// Reads `data`: CSV rows (with `row_len` features per step, features divided by `scale` or by
/// the detected scale, which is returned) or IDX images with their `labels` file.
pub fn load_data(
    data: &Path,
    labels: Option<&Path>,
    row_len: Option<usize>,
    scale: Option<f32>,
    device: &Device,
) -> Result<(Mnist, Option<f32>)> {
    if is_csv(data) {
        if let Some(l) = labels {
            bail!(
                "--labels {}: --data {} is CSV, whose rows hold their labels; --labels goes with IDX images",
                l.display(),
                data.display()
            );
        }
        let rows = read_feature_rows(data, row_len, scale, device).context("--data")?;
        return Ok((rows.data, Some(rows.scale)));
    }
    let Some(labels) = labels else {
        bail!(
            "--data {}: IDX images need their --labels LABELS.idx1[.gz] (or give --data ROWS.csv, features then label per row)",
            data.display()
        );
    };
    Ok((load(data, labels, device)?, None))
}

/// Number of held-out images of `n` for `split` (at least 1, at most `n - 1`).
pub fn held_out(n: usize, split: f64) -> usize {
    ((n as f64 * split).round() as usize).clamp(1, n.saturating_sub(1).max(1))
}

/// Accuracy and mean cross-entropy of `model` on `images (n, rows, cols)` / `labels (n,)`.
pub fn accuracy(
    model: &SequenceClassifier,
    images: &Tensor,
    labels: &Tensor,
) -> Result<(f64, f64)> {
    let n = images.dim(0)?;
    let (mut correct, mut nll) = (0usize, 0f64);
    let mut start = 0;
    while start < n {
        let len = EVAL_CHUNK.min(n - start);
        let xs = images.narrow(0, start, len)?;
        let ys = labels.narrow(0, start, len)?;
        let logits = model.forward(&xs, None, false)?;
        let pred = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let truth = ys.to_vec1::<u32>()?;
        correct += pred.iter().zip(&truth).filter(|(p, t)| p == t).count();
        let loss = candle_nn::loss::cross_entropy(&logits.to_dtype(DType::F32)?, &ys)?;
        nll += loss.to_scalar::<f32>()? as f64 * len as f64;
        start += len;
    }
    Ok((correct as f64 / n as f64, nll / n as f64))
}

struct DigitsTask {
    model: SequenceClassifier,
    cfg: SequenceClassifierConfig,
    spec: DigitsSpec,
    train_x: Tensor,
    train_y: Tensor,
    valid_x: Tensor,
    valid_y: Tensor,
    batch_size: usize,
    task: &'static str,
}

impl TrainTask for DigitsTask {
    type Batch = (Tensor, Tensor);

    fn train_batches(&mut self, epoch: u64, seed: u64) -> rnn_train::Result<Vec<Self::Batch>> {
        let n = self.train_x.dim(0)?;
        let mut order: Vec<u32> = (0..n as u32).collect();
        seeded_shuffle(
            &mut order,
            rnn_core::seed::epoch_seed(seed, epoch, rnn_core::seed::EPOCH_SPREAD),
        );
        let device = self.train_x.device().clone();
        order
            .chunks(self.batch_size)
            .map(|chunk| {
                let idx = Tensor::new(chunk, &device)?;
                Ok((
                    self.train_x.index_select(&idx, 0)?,
                    self.train_y.index_select(&idx, 0)?,
                ))
            })
            .collect()
    }

    fn train_step(
        &mut self,
        batch: &Self::Batch,
        carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        self.train_part(batch, Part::WHOLE, carry)
    }

    /// Rows of the batch: the loss is the mean cross-entropy over the part's images, so the
    /// units-weighted mean of the parts is the batch's loss.
    fn train_part(
        &mut self,
        (xs, ys): &Self::Batch,
        part: Part,
        _carry: &mut Option<RnnState>,
    ) -> rnn_train::Result<StepLoss> {
        let Some((xs, ys)) = part_rows(part, xs, ys)? else {
            return empty_part(xs.device());
        };
        let loss = self.model.loss(&xs, None, &ys, true)?;
        Ok(StepLoss {
            loss,
            units: xs.dim(0)? as u64,
        })
    }

    fn evaluate(&mut self) -> rnn_train::Result<Evaluation> {
        let (acc, loss) = accuracy(&self.model, &self.valid_x, &self.valid_y).map_err(invalid)?;
        let mut metrics = BTreeMap::new();
        metrics.insert("accuracy".to_string(), acc);
        Ok(Evaluation {
            loss,
            metrics,
            main: Some(MainMetric {
                name: "accuracy".to_string(),
                value: acc,
                higher_is_better: true,
            }),
        })
    }

    stochastic_model!(model);

    fn checkpoint_config(&self) -> serde_json::Value {
        serde_json::json!({"task": self.task, "model": self.cfg, "spec": self.spec})
    }
}

/// The training defaults.
const TRAIN_DEFAULTS: TrainDefaults = TrainDefaults {
    epochs: 12,
    lr: 2e-3,
    clip: Some(1.0),
    eval_every: None,
    optimizer: "adamw",
};

/// The options `digits` reads, with its defaults.
pub fn options(_task: TaskName) -> TaskOptions {
    let files = "digits holds out a seeded --split fraction of --data for evaluation; it reads no other data file";
    TaskOptions::new()
        .read("data")
        .read("labels")
        .with("split", DEFAULT_SPLIT)
        .with("valid-split", DEFAULT_VALID_SPLIT)
        .read("row-len")
        .with("pooling", "last")
        .with("bidirectional", false)
        .with("cell", "lstm")
        .with("hidden", DEFAULT_HIDDEN)
        .with("layers", 1)
        .with("dropout", 0)
        .with("batch-size", DEFAULT_BATCH)
        .with("patience", DEFAULT_PATIENCE)
        .read("hf-dataset")
        .with("hf-split", "train")
        .training(&TRAIN_DEFAULTS)
        .refuse("valid", files)
        .refuse("test", files)
}

task_from_functions!(
    /// The `digits` task (see the [module docs](self)).
    Digits
);

/// Trains the task.
pub fn train(ctx: &RunContext) -> Result<TrainOutcome> {
    let o = &ctx.opts;
    let hf_files;
    let (images, labels) = match (&o.data, &o.hf_dataset) {
        (Some(_), Some(_)) => bail!("digits reads --data IMAGES or --hf-dataset NAME, not both"),
        (Some(images), None) => (images, o.labels.as_deref()),
        (None, Some(name)) => {
            if let Some(l) = &o.labels {
                bail!(
                    "--labels {}: --hf-dataset {name} holds its labels",
                    l.display()
                );
            }
            if o.row_len.is_some() {
                bail!("--row-len: --hf-dataset {name} holds 28x28 images, read as rows of pixels; --row-len folds CSV rows");
            }
            let split = o.hf_split.as_deref().unwrap_or("train");
            hf_files = crate::run::hub::mnist_idx_files(name, split, &ctx.out)?;
            ctx.say(&format!(
                "digits: --hf-dataset {name} --hf-split {split} (through candle-datasets) kept as {} and {}",
                hf_files.0.display(),
                hf_files.1.display()
            ));
            (&hf_files.0, Some(hf_files.1.as_path()))
        }
        (None, None) => bail!("digits needs --data IMAGES.idx3[.gz] and --labels LABELS.idx1[.gz] (e.g. t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), or --data ROWS.csv (features then label per row)"),
    };
    let split = o.split.unwrap_or(DEFAULT_SPLIT);
    let valid_split = o.valid_split.unwrap_or(DEFAULT_VALID_SPLIT);
    if o.row_len.is_some() && !is_csv(images) {
        bail!(
            "--row-len: --data {} is an IDX image file, read as rows of pixels; --row-len folds CSV rows",
            images.display()
        );
    }
    let (data, csv_scale) = load_data(images, labels, o.row_len, None, &ctx.device)?;
    let labels = labels.unwrap_or(images).to_path_buf();
    let classes = match data.labels.max(0)?.to_scalar::<u32>()? as usize + 1 {
        c if c > 10 => c,
        _ => 10,
    };
    let (n, rows, cols) = data.images.dims3()?;
    if n < 3 {
        bail!(
            "--data {}: {n} image(s); need at least 3 (to train on, to validate and to test)",
            images.display()
        );
    }
    let test_n = held_out(n, split);
    let valid_n = held_out(n - test_n, valid_split);
    let train_n = n - test_n - valid_n;
    let images_f = data.images.to_dtype(ctx.dtype)?;
    ctx.say(&format!(
        "digits: {n} images of {rows}x{cols} ({rows} steps of {cols} features): first {train_n} train, next {valid_n} validate, last {test_n} test"
    ));
    let pooling = match &o.pooling {
        Some(p) => p
            .parse::<Pooling>()
            .map_err(|e| anyhow::anyhow!("--pooling: {e}"))?,
        None => Pooling::Last,
    };
    let dropout = o.dropout.unwrap_or(0.0);
    let cfg = SequenceClassifierConfig::new(
        Input::features(cols),
        ctx.cell(Mode::Lstm)?,
        o.hidden.unwrap_or(DEFAULT_HIDDEN),
        classes,
    )
    .with_num_layers(o.layers.unwrap_or(1))
    .with_bidirectional(o.bidirectional.unwrap_or(false))
    .with_pooling(pooling)
    .with_rnn_dropout(dropout)
    .with_output_dropout(dropout);
    let varmap = VarMap::new();
    let model = SequenceClassifier::new(&cfg, ctx.var_builder(&varmap))?;
    let spec = DigitsSpec {
        images: std::fs::canonicalize(images).unwrap_or_else(|_| images.clone()),
        labels: std::fs::canonicalize(&labels).unwrap_or_else(|_| labels.clone()),
        split,
        valid_split,
        rows,
        cols,
        csv_scale,
    };
    let mut task = DigitsTask {
        model,
        cfg,
        spec,
        train_x: images_f.narrow(0, 0, train_n)?,
        train_y: data.labels.narrow(0, 0, train_n)?,
        valid_x: images_f.narrow(0, train_n, valid_n)?,
        valid_y: data.labels.narrow(0, train_n, valid_n)?,
        batch_size: o.batch_size.unwrap_or(DEFAULT_BATCH),
        task: ctx.task.as_str(),
    };
    let mut tcfg = trainer_config(ctx, &TRAIN_DEFAULTS)?;
    if o.patience.is_none() {
        tcfg.early_stopping = Some(EarlyStopping {
            patience: DEFAULT_PATIENCE,
            min_delta: 0.0,
        });
    }
    let report = fit(ctx, tcfg, varmap.clone(), &mut task)?;
    // The headline: the test part, which model selection never saw, with the best weights.
    let at = weights_label(load_best(ctx, &varmap)?);
    let (acc, _) = accuracy(
        &task.model,
        &images_f.narrow(0, n - test_n, test_n)?,
        &data.labels.narrow(0, n - test_n, test_n)?,
    )?;
    let extra = vec![format!(
        "test accuracy {acc:.4} (the last {test_n} images of {}; {at})",
        task.spec.images.display()
    )];
    Ok(TrainOutcome { report, extra })
}

/// A checkpoint's model and spec.
pub fn load_model(run: &CheckpointRun) -> Result<(SequenceClassifier, DigitsSpec)> {
    let cfg: SequenceClassifierConfig = run.model_entry("model")?;
    let spec: DigitsSpec = run.model_entry("spec")?;
    let varmap = VarMap::new();
    let model = SequenceClassifier::new(&cfg, run.var_builder(&varmap))?;
    run.fill(&varmap)?;
    Ok((model, spec))
}

fn check_size(images: &Tensor, spec: &DigitsSpec, path: &Path) -> Result<()> {
    let (_, rows, cols) = images.dims3()?;
    if (rows, cols) != (spec.rows, spec.cols) {
        bail!(
            "{}: images are {rows}x{cols}, the model was trained on {}x{}",
            path.display(),
            spec.rows,
            spec.cols
        );
    }
    Ok(())
}

/// Evaluates a checkpoint.
pub fn eval(run: &CheckpointRun, req: impl Into<EvalRequest>) -> Result<EvalReport> {
    let req = req.into();
    let (model, spec) = load_model(run)?;
    let dtype = run.dtype();
    let row_len = spec.csv_scale.map(|_| spec.cols);
    let (images, labels, what, path, count) = match &req.data {
        Some(images) => {
            let (d, _) = load_data(
                images,
                req.labels.as_deref(),
                row_len,
                spec.csv_scale,
                &run.device,
            )?;
            check_size(&d.images, &spec, images)?;
            let n = d.images.dim(0)?;
            (
                d.images,
                d.labels,
                format!("{n} images of {}", images.display()),
                images,
                n,
            )
        }
        None => {
            let labels = spec.csv_scale.is_none().then_some(spec.labels.as_path());
            let (d, _) = load_data(&spec.images, labels, row_len, spec.csv_scale, &run.device)?;
            let n = d.images.dim(0)?;
            let test_n = held_out(n, spec.split);
            (
                d.images.narrow(0, n - test_n, test_n)?,
                d.labels.narrow(0, n - test_n, test_n)?,
                format!("the last {test_n} images of {}", spec.images.display()),
                &spec.images,
                test_n,
            )
        }
    };
    let (acc, loss) = accuracy(&model, &images.to_dtype(dtype)?, &labels)?;
    let (part, split) = match req.data {
        None => ("test ", Split::Test),
        Some(_) => ("", Split::Data),
    };
    let summary = format!("digits: {part}accuracy {acc:.4}, loss {loss:.4} on {what}");
    Ok(
        EvalReport::new(summary, split, Some(path.as_path()), count as u64, "images")
            .metric("accuracy", acc)
            .metric("loss", loss),
    )
}

/// Reads an IDX image file without labels: a temporary all-zero label file of the right length
/// lets [`read_mnist`] do the (checked) parsing. The image count of a gzip file comes from its
/// trailer (uncompressed size) and the model's image size.
fn read_images(path: &Path, spec: &DigitsSpec, device: &Device) -> Result<Tensor> {
    let raw =
        std::fs::read(path).with_context(|| format!("--input {}: cannot read", path.display()))?;
    let n = if raw.starts_with(&[0x1f, 0x8b]) && raw.len() >= 18 {
        let size = u32::from_le_bytes(raw[raw.len() - 4..].try_into()?) as usize;
        let per = spec.rows * spec.cols;
        if size < 16 || !(size - 16).is_multiple_of(per) {
            bail!(
                "--input {}: the decompressed size {size} is not a 16-byte IDX header plus {}x{} images",
                path.display(),
                spec.rows,
                spec.cols
            );
        }
        (size - 16) / per
    } else if raw.len() >= 16 && raw[..4] == 2051u32.to_be_bytes() {
        u32::from_be_bytes(raw[4..8].try_into()?) as usize
    } else {
        bail!(
            "--input {}: not an IDX image file (expected magic number 2051, or gzip)",
            path.display()
        );
    };
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let tmp = std::env::temp_dir().join(format!(
        "rnn-digits-labels-{}-{stamp}.idx1",
        std::process::id()
    ));
    let mut labels = 2049u32.to_be_bytes().to_vec();
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    labels.resize(8 + n, 0);
    std::fs::write(&tmp, &labels)
        .with_context(|| format!("cannot write a temporary file {}", tmp.display()))?;
    let result = read_mnist(path, &tmp, device);
    let _ = std::fs::remove_file(&tmp);
    let images = result
        .with_context(|| format!("--input {}", path.display()))?
        .images;
    check_size(&images, spec, path)?;
    Ok(images)
}

/// Predicts with a checkpoint: one line `index<TAB>digit<TAB>probability` per image of
/// `--input IMAGES.idx3[.gz]`; as values, input the image's index (from 0) and output
/// `{"digit", "probability"}`.
pub fn predict(run: &CheckpointRun, req: impl Into<PredictRequest>) -> Result<Predictions> {
    let req = req.into();
    let (model, spec) = load_model(run)?;
    let Some(input) = &req.input else {
        bail!("--input IMAGES.idx3[.gz] is required (an IDX image file)");
    };
    let images = read_images(Path::new(input), &spec, &run.device)?.to_dtype(run.dtype())?;
    let n = images.dim(0)?;
    let mut out = Predictions::default();
    let mut start = 0;
    while start < n {
        let len = EVAL_CHUNK.min(n - start);
        let logits = model.forward(&images.narrow(0, start, len)?, None, false)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits.to_dtype(DType::F32)?)?;
        let best = probs.argmax(D::Minus1)?.to_vec1::<u32>()?;
        let p = probs.max(D::Minus1)?.to_vec1::<f32>()?;
        for (i, (d, p)) in best.iter().zip(&p).enumerate() {
            out.push(
                format!("{}\t{d}\t{p:.4}", start + i),
                start + i,
                serde_json::json!({"digit": d, "probability": p}),
            );
        }
        start += len;
    }
    Ok(out)
}

/// Digit-like generated images for running without MNIST: `n` images of 28x28 pixels from
/// `classes` (at most 6) stroke patterns (horizontal bar, vertical bar, diagonal, anti-diagonal,
/// ring, cross), each shifted by up to +-4 pixels, with varying stroke width and pixel noise.
/// Returns the IDX files' bytes `(images idx3, labels idx1)`, uncompressed.
pub fn synthetic_idx(n: usize, classes: usize, seed: u64) -> (Vec<u8>, Vec<u8>) {
    use rand::{Rng, SeedableRng};
    let classes = classes.clamp(2, 6);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (h, w) = (28usize, 28usize);
    let mut images = Vec::with_capacity(16 + n * h * w);
    for x in [2051u32, n as u32, h as u32, w as u32] {
        images.extend_from_slice(&x.to_be_bytes());
    }
    let mut labels = Vec::with_capacity(8 + n);
    labels.extend_from_slice(&2049u32.to_be_bytes());
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    for _ in 0..n {
        let class = rng.random_range(0..classes);
        let (dy, dx) = (rng.random_range(-4.0..4.0), rng.random_range(-4.0..4.0));
        let width: f64 = rng.random_range(1.0..2.5);
        for r in 0..h {
            for c in 0..w {
                let y = r as f64 - 13.5 - dy;
                let x = c as f64 - 13.5 - dx;
                let inside = |v: f64| v.abs() <= 9.0;
                let dist = match class {
                    0 if inside(x) => y.abs(),
                    1 if inside(y) => x.abs(),
                    2 if inside(x) && inside(y) => (x - y).abs() / 2f64.sqrt(),
                    3 if inside(x) && inside(y) => (x + y).abs() / 2f64.sqrt(),
                    4 => ((x * x + y * y).sqrt() - 7.0).abs(),
                    5 if inside(x) && inside(y) => x.abs().min(y.abs()),
                    _ => f64::INFINITY,
                };
                let ink = (1.0 - (dist - width).max(0.0)).clamp(0.0, 1.0);
                let noise: f64 = rng.random_range(0.0..0.25);
                images.push(((ink + noise).min(1.0) * 255.0) as u8);
            }
        }
        labels.push(class as u8);
    }
    (images, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_out_matches_the_reference_split() {
        assert_eq!(held_out(10_000, DEFAULT_SPLIT), 2_000);
        assert_eq!(held_out(2, 0.2), 1);
        assert_eq!(held_out(5, 0.9), 4);
    }

    #[test]
    fn synthetic_files_parse() {
        let (img, lab) = synthetic_idx(7, 3, 1);
        assert_eq!(img.len(), 16 + 7 * 28 * 28);
        assert_eq!(lab.len(), 8 + 7);
        assert!(lab[8..].iter().all(|&l| l < 3));
        let dir = tempfile::tempdir().unwrap();
        let (i, l) = (dir.path().join("i.idx3"), dir.path().join("l.idx1"));
        std::fs::write(&i, &img).unwrap();
        std::fs::write(&l, &lab).unwrap();
        let m = load(&i, &l, &Device::Cpu).unwrap();
        assert_eq!(m.images.dims(), &[7, 28, 28]);
        let spec = DigitsSpec {
            images: i.clone(),
            labels: l,
            split: 0.2,
            valid_split: 0.1,
            rows: 28,
            cols: 28,
            csv_scale: None,
        };
        let alone = read_images(&i, &spec, &Device::Cpu).unwrap();
        assert_eq!(alone.dims(), &[7, 28, 28]);
    }

    #[test]
    fn csv_and_idx_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (img, _) = synthetic_idx(2, 2, 1);
        let idx = dir.path().join("images");
        std::fs::write(&idx, &img).unwrap();
        assert!(!is_csv(&idx));
        let rows = dir.path().join("rows");
        std::fs::write(&rows, "1,2,3,0\n4,5,6,1\n").unwrap();
        assert!(is_csv(&rows));
        let (d, scale) = load_data(&rows, None, Some(3), None, &Device::Cpu).unwrap();
        assert_eq!((d.images.dims(), scale), (&[2usize, 1, 3][..], Some(6.0)));
        let e = load_data(&rows, Some(&idx), None, None, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--labels") && e.contains("is CSV"), "{e}");
        let e = load_data(&idx, None, None, None, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--labels LABELS.idx1"), "{e}");
    }

    #[test]
    fn parts_of_a_batch_sum_to_the_whole_batch() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let pixels: Vec<f32> = (0..20 * 4 * 3).map(|_| rng.random::<f32>()).collect();
        let labels: Vec<u32> = (0..20).map(|i| i % 3).collect();
        let x = Tensor::from_vec(pixels, (20, 4, 3), &Device::Cpu).unwrap();
        let y = Tensor::new(labels.as_slice(), &Device::Cpu).unwrap();
        let varmap = VarMap::new();
        let vb = rnn_core::init::seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
        let cfg = SequenceClassifierConfig::new(Input::features(3), rnn_core::Mode::Lstm, 6, 3);
        let mut task = DigitsTask {
            model: SequenceClassifier::new(&cfg, vb).unwrap(),
            cfg,
            spec: DigitsSpec {
                images: PathBuf::new(),
                labels: PathBuf::new(),
                split: 0.1,
                valid_split: 0.1,
                rows: 4,
                cols: 3,
                csv_scale: None,
            },
            train_x: x.clone(),
            train_y: y.clone(),
            valid_x: x,
            valid_y: y,
            batch_size: 7,
            task: "digits",
        };
        let batch = task.train_batches(0, 1).unwrap().remove(0);
        crate::tasks::parts::checks::assert_parts_sum_to_whole(
            &mut task,
            &batch,
            7,
            &varmap.all_vars(),
            &[2, 3, 9],
        );
    }
}

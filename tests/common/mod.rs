//! Small generated data sets shared by the integration tests (`mod common;`).

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Filler words of [`sentiment_file`].
pub const FILLER: [&str; 10] = [
    "the", "film", "a", "story", "is", "with", "its", "cast", "and", "plot",
];

/// "label text" lines: label 1 when the sentence holds a positive keyword, 0 for a negative one.
#[allow(dead_code)] // not every test binary that includes this module calls it
pub fn sentiment_file(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    sentiment_file_with(dir, name, n, seed, &FILLER)
}

/// [`sentiment_file`] with other filler words.
pub fn sentiment_file_with(
    dir: &Path,
    name: &str,
    n: usize,
    seed: u64,
    filler: &[&str],
) -> PathBuf {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pos = ["great", "funny", "moving"];
    let neg = ["dull", "boring", "awful"];
    let mut text = String::new();
    for _ in 0..n {
        let label = rng.random_range(0..2);
        let len = rng.random_range(3..8);
        let mut words: Vec<&str> = (0..len)
            .map(|_| filler[rng.random_range(0..filler.len())])
            .collect();
        let key = if label == 1 { &pos } else { &neg };
        let at = rng.random_range(0..=words.len());
        words.insert(at, key[rng.random_range(0..3)]);
        text.push_str(&format!("{label}\t{}\n", words.join(" ")));
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The `rnn` binary the tests run, found at run time so that a test executable carried away from
/// its build (the GPU kit) still finds it: `RNN_BIN` when set, else the binary cargo built for
/// this test run, else `rnn` beside this executable or one folder up (cargo's `target/<profile>/`
/// layout, the kit's `bin/`).
#[allow(dead_code)] // not every test binary that includes this module spawns the binary
pub fn rnn_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RNN_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let built = PathBuf::from(env!("CARGO_BIN_EXE_rnn"));
    if built.is_file() {
        return built;
    }
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe.parent().expect("the test executable's folder");
    [dir.join("rnn"), dir.join("../rnn")]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "cannot find the rnn binary: set RNN_BIN (looked at {} and beside {})",
                built.display(),
                dir.display()
            )
        })
}

/// Runs the `rnn` binary with `args`; returns stdout and stderr, failing the test on a non-zero
/// exit.
#[allow(dead_code)] // not every test binary that includes this module spawns the binary
pub fn rnn_output(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(rnn_bin())
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "rnn {args:?} failed:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

/// CoNLL sentences of 2 to 9 tokens (`DET NOUN VERB NOUN*`, `.`), seeded.
#[allow(dead_code)] // not every test binary that includes this module calls it
pub fn conll_file(dir: &Path, name: &str, n: usize, seed: u64) -> PathBuf {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut text = String::new();
    for _ in 0..n {
        text.push_str(["the DET\n", "a DET\n"][rng.random_range(0..2)]);
        text.push_str(["cat NOUN\n", "dog NOUN\n", "mat NOUN\n"][rng.random_range(0..3)]);
        for _ in 0..rng.random_range(0..6) {
            text.push_str(["sees VERB\n", "bird NOUN\n", "old ADJ\n"][rng.random_range(0..3)]);
        }
        text.push_str(". PUNCT\n\n");
    }
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The files under `dir`, relative to it, sorted.
#[allow(dead_code)] // not every test binary that includes this module calls it
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

/// The evaluation records of the run in `out` (its `metrics.jsonl`).
#[allow(dead_code)] // not every test binary that includes this module calls it
pub fn records(out: &Path) -> Vec<rnn::train::trainer::EvalRecord> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The parameters of the checkpoint in `dir` as f32 values, by name.
#[allow(dead_code)] // not every test binary that includes this module calls it
pub fn checkpoint_params(dir: &Path) -> std::collections::BTreeMap<String, Vec<f32>> {
    let loaded = rnn::train::checkpoint::load(dir, &candle_core::Device::Cpu).unwrap();
    loaded
        .params
        .iter()
        .map(|(k, t)| (k.clone(), t.flatten_all().unwrap().to_vec1().unwrap()))
        .collect()
}

use super::atomic::save_sibling;
use super::*;
use candle_nn::Init;
use serde_json::json;

/// Fails one chosen step: writing a given file half-way (half its bytes reach the disk, as
/// in a crash or a full disk), or renaming the temporary directory into place.
#[derive(Default)]
struct Faulty {
    fail_write_of: Option<&'static str>,
    fail_final_rename: bool,
}

impl FileSystem for Faulty {
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let file = path.file_name().and_then(|n| n.to_str());
        if file.is_some() && file == self.fail_write_of {
            RealFs.write_file(path, &bytes[..bytes.len() / 2])?;
            return Err(io::Error::other("simulated failure half-way"));
        }
        RealFs.write_file(path, bytes)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        RealFs.sync_dir(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let from_temp = from
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".tmp-"));
        if self.fail_final_rename && from_temp {
            return Err(io::Error::other("simulated rename failure"));
        }
        RealFs.rename(from, to)
    }
}

fn dev() -> Device {
    Device::Cpu
}

fn params(scale: f32) -> HashMap<String, Tensor> {
    let w: Vec<f32> = (0..6).map(|i| i as f32 * scale).collect();
    HashMap::from([
        (
            "rnn.weight_ih_l0".to_string(),
            Tensor::from_vec(w, (2, 3), &dev()).unwrap(),
        ),
        (
            "rnn.bias_ih_l0".to_string(),
            Tensor::from_vec(vec![scale, -scale], 2, &dev()).unwrap(),
        ),
    ])
}

fn state(step: u64) -> TrainState {
    TrainState {
        epoch: 3,
        step,
        best_metric: Some(0.25),
        best_metric_name: "val_loss".to_string(),
        dropout_calls: 17,
        optimizer: json!({"kind": "adam", "beta1": 0.9, "t": step}),
        ..TrainState::new(42, 1e-3)
    }
}

fn save_simple(dir: &Path, scale: f32, step: u64) {
    save(
        dir,
        &params(scale),
        &json!({"hidden": 3}),
        &state(step),
        None,
        &[],
    )
    .unwrap();
}

fn f32_bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .map(|x| x.to_bits())
        .collect()
}

fn weight(dir: &Path) -> Vec<u32> {
    f32_bits(&load(dir, &dev()).unwrap().params["rnn.weight_ih_l0"])
}

/// Names in `parent` other than `keep`: temporary or backup directories left behind.
fn leftovers(parent: &Path, keep: &str) -> Vec<String> {
    fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != keep)
        .collect()
}

fn message(r: Result<impl std::fmt::Debug>) -> String {
    r.unwrap_err().to_string()
}

#[test]
fn round_trip_is_bit_identical() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("runs").join("ckpt");
    let special = vec![
        0.0f32,
        -0.0,
        f32::MIN_POSITIVE / 3.0,
        f32::MAX,
        f32::MIN,
        1.0 / 3.0,
    ];
    let base = Tensor::from_vec(special.clone(), (2, 3), &dev()).unwrap();
    let mut p = HashMap::from([
        ("a.special".to_string(), base.clone()),
        // Non-contiguous and offset views must be written as their logical values.
        ("b.transposed".to_string(), base.t().unwrap()),
        ("c.narrowed".to_string(), base.narrow(1, 1, 2).unwrap()),
        (
            "d.f64".to_string(),
            Tensor::new(&[1e-300f64, -2.5, std::f64::consts::PI], &dev()).unwrap(),
        ),
        (
            "e.bf16".to_string(),
            Tensor::new(&[1.5f32, -3.0, 0.0078125], &dev())
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap(),
        ),
        (
            "f.f16".to_string(),
            Tensor::new(&[65504f32, -0.5], &dev())
                .unwrap()
                .to_dtype(DType::F16)
                .unwrap(),
        ),
        (
            "g.i64".to_string(),
            Tensor::new(&[i64::MIN, -1, i64::MAX], &dev()).unwrap(),
        ),
        (
            "h.u8".to_string(),
            Tensor::new(&[0u8, 7, 255], &dev()).unwrap(),
        ),
        ("i.scalar".to_string(), Tensor::new(2.5f32, &dev()).unwrap()),
    ]);
    p.insert(
        "j.u32".to_string(),
        Tensor::new(&[[1u32, 2], [3, u32::MAX]], &dev()).unwrap(),
    );
    let optim = HashMap::from([(
        "exp_avg.rnn.weight_ih_l0".to_string(),
        Tensor::new(&[[0.5f32, 0.25, -1e-8]], &dev()).unwrap(),
    )]);
    let config = json!({"model": {"kind": "lstm", "hidden": 3, "layers": [1, 2]},
                        "train": {"lr": 0.001}, "tokenizer": TOKENIZER_FILE});
    let st = state(99);
    let tokenizer = br#"{"version": "1.0"}"#;
    save(
        &dir,
        &p,
        &config,
        &st,
        Some(&optim),
        &[(TOKENIZER_FILE, tokenizer), (VOCAB_FILE, b"[\"a\", \"b\"]")],
    )
    .unwrap();

    let loaded = load(&dir, &dev()).unwrap();
    assert_eq!(loaded.dir, dir);
    assert_eq!(loaded.config, config);
    assert_eq!(loaded.state, st);
    let mut names: Vec<_> = loaded.params.keys().cloned().collect();
    names.sort();
    let mut expected: Vec<_> = p.keys().cloned().collect();
    expected.sort();
    assert_eq!(names, expected);
    for (name, t) in &p {
        let l = &loaded.params[name];
        assert_eq!(l.dims(), t.dims(), "{name}");
        assert_eq!(l.dtype(), t.dtype(), "{name}");
        // Compare raw bits through an exact widening (f16/bf16 -> f32 is exact).
        let bits = |x: &Tensor| -> Vec<u64> {
            match x.dtype() {
                DType::F64 => x
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f64>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect(),
                DType::I64 => x
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap()
                    .iter()
                    .map(|v| *v as u64)
                    .collect(),
                DType::U8 | DType::U32 => x
                    .flatten_all()
                    .unwrap()
                    .to_dtype(DType::I64)
                    .unwrap()
                    .to_vec1::<i64>()
                    .unwrap()
                    .iter()
                    .map(|v| *v as u64)
                    .collect(),
                _ => f32_bits(&x.to_dtype(DType::F32).unwrap())
                    .iter()
                    .map(|v| u64::from(*v))
                    .collect(),
            }
        };
        assert_eq!(bits(l), bits(t), "{name}");
    }
    let lo = loaded.extra_tensors.as_ref().unwrap();
    assert_eq!(
        f32_bits(&lo["exp_avg.rnn.weight_ih_l0"]),
        f32_bits(&optim["exp_avg.rnn.weight_ih_l0"])
    );
    assert_eq!(
        loaded.read_file(TOKENIZER_FILE).unwrap().unwrap(),
        tokenizer
    );
    assert_eq!(loaded.read_file("absent.json").unwrap(), None);
    // candle's own reader agrees (an independent check of the encoder).
    let direct = candle_core::safetensors::load(dir.join(MODEL_FILE), &dev()).unwrap();
    assert_eq!(f32_bits(&direct["a.special"]), f32_bits(&base));
    // Header: 8-byte aligned, PyTorch format metadata.
    let bytes = fs::read(dir.join(MODEL_FILE)).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["format"], "pt");
    assert_eq!(header["a.special"]["dtype"], "F32");
    assert_eq!(
        leftovers(dir.parent().unwrap(), "ckpt"),
        Vec::<String>::new()
    );
}

#[test]
fn checkpoint_without_optimizer_tensors_loads_none() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    let loaded = load(&dir, &dev()).unwrap();
    assert!(loaded.extra_tensors.is_none());
    assert!(!dir.join(OPTIMIZER_FILE).exists());
}

#[test]
fn overwrite_replaces_atomically_and_leaves_nothing_behind() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    // The old checkpoint had an optimiser file; the new one must not inherit it.
    save(
        &dir,
        &params(1.0),
        &json!({}),
        &state(1),
        Some(&params(0.5)),
        &[],
    )
    .unwrap();
    assert!(dir.join(OPTIMIZER_FILE).exists());
    save_simple(&dir, 2.0, 2);
    let loaded = load(&dir, &dev()).unwrap();
    assert_eq!(loaded.state.step, 2);
    assert_eq!(weight(&dir), f32_bits(&params(2.0)["rnn.weight_ih_l0"]));
    assert!(loaded.extra_tensors.is_none());
    assert_eq!(leftovers(root.path(), "ckpt"), Vec::<String>::new());
}

#[test]
fn failure_half_way_keeps_the_previous_checkpoint() {
    for file in [
        MODEL_FILE,
        OPTIMIZER_FILE,
        CONFIG_FILE,
        TOKENIZER_FILE,
        STATE_FILE,
    ] {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ckpt");
        save_simple(&dir, 1.0, 1);
        let before = weight(&dir);
        let fs = Faulty {
            fail_write_of: Some(file),
            ..Faulty::default()
        };
        let p = params(2.0);
        let err = Checkpoint {
            params: &p,
            config: &json!({"hidden": 4}),
            state: &state(2),
            extra_tensors: Some(&p),
            extra_files: &[(TOKENIZER_FILE, b"{}")],
        }
        .save_with(&dir, &fs)
        .unwrap_err()
        .to_string();
        assert!(err.contains(file), "{file}: {err}");
        assert!(err.contains("simulated failure"), "{err}");
        assert!(err.contains("unchanged"), "{err}");
        let loaded = load(&dir, &dev()).unwrap();
        assert_eq!(loaded.state.step, 1, "{file}");
        assert_eq!(loaded.config, json!({"hidden": 3}));
        assert_eq!(weight(&dir), before, "{file}");
        assert_eq!(
            leftovers(root.path(), "ckpt"),
            Vec::<String>::new(),
            "{file}"
        );
    }
}

#[test]
fn failure_of_a_first_save_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    let fs = Faulty {
        fail_write_of: Some(MODEL_FILE),
        ..Faulty::default()
    };
    let p = params(1.0);
    let c = Checkpoint {
        params: &p,
        config: &json!({}),
        state: &state(1),
        extra_tensors: None,
        extra_files: &[],
    };
    assert!(c.save_with(&dir, &fs).is_err());
    assert!(!dir.exists());
    assert_eq!(leftovers(root.path(), "ckpt"), Vec::<String>::new());
    let err = message(load(&dir, &dev()));
    assert!(
        err.contains("ckpt") && err.contains("does not exist"),
        "{err}"
    );
}

#[test]
fn failed_final_rename_restores_the_previous_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    let before = weight(&dir);
    let fs = Faulty {
        fail_final_rename: true,
        ..Faulty::default()
    };
    let p = params(2.0);
    let err = Checkpoint {
        params: &p,
        config: &json!({}),
        state: &state(2),
        extra_tensors: None,
        extra_files: &[],
    }
    .save_with(&dir, &fs)
    .unwrap_err()
    .to_string();
    assert!(err.contains("simulated rename failure"), "{err}");
    assert_eq!(weight(&dir), before);
    assert_eq!(load(&dir, &dev()).unwrap().state.step, 1);
    assert_eq!(leftovers(root.path(), "ckpt"), Vec::<String>::new());
}

/// A process id that is not running (Linux `pid_max` is at most 2^22).
const DEAD_PID: u32 = 999_999_999;

#[test]
fn save_sibling_names_are_recognised() {
    assert_eq!(
        save_sibling(".ckpt.tmp-12-345-6", "ckpt"),
        Some(("tmp", 12))
    );
    assert_eq!(save_sibling(".ckpt.old-7-8-9", "ckpt"), Some(("old", 7)));
    for other in [
        "ckpt",
        ".ckpt.tmp-12-345",
        ".ckpt.new-1-2-3",
        ".other.tmp-1-2-3",
        ".ckpt.tmp-x-2-3",
        ".ckpt.old-1-2-3-4",
    ] {
        assert_eq!(save_sibling(other, "ckpt"), None, "{other}");
    }
}

/// The state of a kill between the two renames of a save (`ckpt/` moved aside, the new one
/// not yet in place) plus an unfinished write: `recover` puts the backup back and removes
/// the leftovers of dead processes, never those of a live one.
#[test]
fn recover_restores_a_checkpoint_moved_aside_and_removes_dead_leftovers() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    let older = root.path().join(format!(".ckpt.old-{DEAD_PID}-1-0"));
    fs::rename(&dir, &older).unwrap();
    save_simple(&dir, 2.0, 2);
    let newer = root.path().join(format!(".ckpt.old-{DEAD_PID}-2-0"));
    fs::rename(&dir, &newer).unwrap();
    let torn = root.path().join(format!(".ckpt.tmp-{DEAD_PID}-3-0"));
    fs::create_dir(&torn).unwrap();
    fs::write(torn.join(MODEL_FILE), [1u8, 2, 3]).unwrap();
    let live = root.path().join(".ckpt.tmp-1-4-0");
    fs::create_dir(&live).unwrap();
    assert!(load(&dir, &dev()).is_err());

    assert_eq!(recover(&dir).unwrap(), Some(newer));
    assert_eq!(load(&dir, &dev()).unwrap().state.step, 2);
    assert_eq!(
        leftovers(root.path(), "ckpt"),
        vec![".ckpt.tmp-1-4-0".to_string()]
    );
    // Nothing to do the second time; a complete checkpoint is never replaced.
    assert_eq!(recover(&dir).unwrap(), None);
    assert_eq!(load(&dir, &dev()).unwrap().state.step, 2);
}

#[test]
fn save_removes_the_leftovers_of_dead_processes_only() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    for name in [
        format!(".ckpt.tmp-{DEAD_PID}-1-0"),
        format!(".ckpt.old-{DEAD_PID}-2-0"),
        ".ckpt.tmp-1-3-0".to_string(),
    ] {
        fs::create_dir(root.path().join(name)).unwrap();
    }
    save_simple(&dir, 2.0, 2);
    assert_eq!(
        leftovers(root.path(), "ckpt"),
        vec![".ckpt.tmp-1-3-0".to_string()]
    );
    assert_eq!(load(&dir, &dev()).unwrap().state.step, 2);
}

#[test]
fn stale_temp_dir_from_a_crash_does_not_disturb_load_or_save() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    // What a crash in the middle of writing leaves: a hidden sibling with a partial file.
    let stale = root.path().join(".ckpt.tmp-1-2-3");
    fs::create_dir(&stale).unwrap();
    fs::write(stale.join(MODEL_FILE), [1u8, 2, 3]).unwrap();
    assert_eq!(load(&dir, &dev()).unwrap().state.step, 1);
    save_simple(&dir, 2.0, 2);
    assert_eq!(load(&dir, &dev()).unwrap().state.step, 2);
}

#[test]
fn crash_between_renames_is_reported_with_the_backup() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    let backup = root.path().join(".ckpt.old-1-2-3");
    fs::rename(&dir, &backup).unwrap();
    let err = message(load(&dir, &dev()));
    assert!(err.contains(".ckpt.old-1-2-3"), "{err}");
}

#[test]
fn non_finite_parameters_are_refused_and_the_previous_checkpoint_kept() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    let before = weight(&dir);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut p = params(2.0);
        p.insert(
            "rnn.weight_hh_l0".to_string(),
            Tensor::new(&[[1.0f32, 2.0], [bad, 0.0]], &dev()).unwrap(),
        );
        let err = message(save(&dir, &p, &json!({}), &state(2), None, &[]));
        assert!(err.contains("rnn.weight_hh_l0"), "{err}");
        assert!(err.contains(&format!("{}", bad as f64)), "{err}");
        assert!(err.contains("flat index 2"), "{err}");
        // In optimiser tensors too.
        let mut optim = params(1.0);
        optim.insert(
            "exp_avg_sq".to_string(),
            Tensor::new(&[bad], &dev()).unwrap(),
        );
        let err = message(save(
            &dir,
            &params(2.0),
            &json!({}),
            &state(2),
            Some(&optim),
            &[],
        ));
        assert!(err.contains("exp_avg_sq"), "{err}");
    }
    // NaN in f16 and f64 is caught as well.
    for dtype in [DType::F16, DType::BF16, DType::F64] {
        let mut p = params(2.0);
        p.insert(
            "x".to_string(),
            Tensor::new(&[f32::NAN], &dev())
                .unwrap()
                .to_dtype(dtype)
                .unwrap(),
        );
        let err = message(save(&dir, &p, &json!({}), &state(2), None, &[]));
        assert!(
            err.contains("`x`") && err.contains("NaN"),
            "{dtype:?}: {err}"
        );
    }
    let mut st = state(2);
    st.learning_rate = f64::NAN;
    assert!(
        message(save(&dir, &params(2.0), &json!({}), &st, None, &[])).contains("learning_rate")
    );
    assert_eq!(weight(&dir), before);
    assert_eq!(load(&dir, &dev()).unwrap().state.step, 1);
    assert_eq!(leftovers(root.path(), "ckpt"), Vec::<String>::new());
}

#[test]
fn truncated_or_corrupt_model_file_is_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    let model = dir.join(MODEL_FILE);
    let bytes = fs::read(&model).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 9, 3, 0] {
        fs::write(&model, &bytes[..cut]).unwrap();
        let err = load(&dir, &dev()).unwrap_err();
        let Error::File { path, message } = &err else {
            panic!("cut {cut}: {err:?}");
        };
        assert_eq!(path, &model);
        assert!(message.contains("safetensors"), "{message}");
        assert!(err.to_string().contains(MODEL_FILE));
    }
    fs::write(&model, b"this is not a safetensors file at all").unwrap();
    assert!(message(load(&dir, &dev())).contains(MODEL_FILE));
    fs::remove_file(&model).unwrap();
    let err = message(load(&dir, &dev()));
    assert!(err.contains(MODEL_FILE) && err.contains("missing"), "{err}");
}

#[test]
fn invalid_json_names_file_and_line() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    for file in [STATE_FILE, CONFIG_FILE] {
        save_simple(&dir, 1.0, 1);
        fs::write(dir.join(file), "{\n  \"a\": 1,\n  \"b\": ]\n}\n").unwrap();
        match load(&dir, &dev()).unwrap_err() {
            Error::Parse { path, line, .. } => {
                assert_eq!(path, dir.join(file));
                assert_eq!(line, 3);
            }
            other => panic!("{file}: {other:?}"),
        }
    }
    // A well-formed state.json with a wrongly typed field: the line of the field.
    save_simple(&dir, 1.0, 1);
    let text = fs::read_to_string(dir.join(STATE_FILE)).unwrap();
    let broken = text.replace("\"epoch\": 3", "\"epoch\": \"three\"");
    let line = broken.lines().position(|l| l.contains("three")).unwrap() + 1;
    fs::write(dir.join(STATE_FILE), broken).unwrap();
    match load(&dir, &dev()).unwrap_err() {
        Error::Parse {
            path,
            line: l,
            message,
        } => {
            assert_eq!(path, dir.join(STATE_FILE));
            assert_eq!(l, line);
            assert!(message.contains("invalid type"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unsupported_format_version_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    let path = dir.join(STATE_FILE);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    v["format_version"] = json!(FORMAT_VERSION + 1);
    fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    let err = message(load(&dir, &dev()));
    assert!(err.contains(STATE_FILE), "{err}");
    assert!(
        err.contains(&format!("version {} is not supported", FORMAT_VERSION + 1)),
        "{err}"
    );
    v.as_object_mut().unwrap().remove("format_version");
    fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    assert!(message(load(&dir, &dev())).contains("format_version"));
    // The writer refuses to write another version, too.
    let mut st = state(1);
    st.format_version = FORMAT_VERSION + 1;
    assert!(
        message(save(&dir, &params(1.0), &json!({}), &st, None, &[])).contains("format_version")
    );
}

#[test]
fn missing_directory_and_missing_files_are_named() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("nope");
    let err = message(load(&dir, &dev()));
    assert!(
        err.contains("nope") && err.contains("does not exist"),
        "{err}"
    );
    save_simple(&dir, 1.0, 1);
    fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
    let err = message(load(&dir, &dev()));
    assert!(
        err.contains(CONFIG_FILE) && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn refuses_to_replace_something_that_is_not_a_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("data");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("precious.txt"), b"keep me").unwrap();
    let err = message(save(&dir, &params(1.0), &json!({}), &state(1), None, &[]));
    assert!(err.contains("not a checkpoint"), "{err}");
    assert_eq!(fs::read(dir.join("precious.txt")).unwrap(), b"keep me");
    let file = root.path().join("file");
    fs::write(&file, b"x").unwrap();
    assert!(
        message(save(&file, &params(1.0), &json!({}), &state(1), None, &[]))
            .contains("not a directory")
    );
    // An empty directory is fine.
    let empty = root.path().join("empty");
    fs::create_dir(&empty).unwrap();
    save_simple(&empty, 1.0, 1);
    assert_eq!(load(&empty, &dev()).unwrap().state.step, 1);
}

#[test]
fn bad_extra_file_names_and_empty_params_are_refused() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    let p = params(1.0);
    for name in [
        "",
        "..",
        "../evil.json",
        "sub/x.json",
        STATE_FILE,
        MODEL_FILE,
    ] {
        let err = message(save(
            &dir,
            &p,
            &json!({}),
            &state(1),
            None,
            &[(name, b"{}")],
        ));
        assert!(err.contains(&format!("`{name}`")), "{name}: {err}");
    }
    let twice: [(&str, &[u8]); 2] = [(VOCAB_FILE, b"[]"), (VOCAB_FILE, b"[]")];
    assert!(message(save(&dir, &p, &json!({}), &state(1), None, &twice)).contains("twice"));
    let empty = HashMap::new();
    assert!(
        message(save(&dir, &empty, &json!({}), &state(1), None, &[])).contains("no parameters")
    );
    assert!(!dir.exists());
}

fn expected() -> Vec<(String, Vec<usize>, DType)> {
    vec![
        ("rnn.weight_ih_l0".to_string(), vec![2, 3], DType::F32),
        ("rnn.bias_ih_l0".to_string(), vec![2], DType::F32),
    ]
}

#[test]
fn validate_params_accepts_an_exact_match() {
    validate_params(&params(1.0), &expected()).unwrap();
}

#[test]
fn validate_params_reports_a_missing_tensor() {
    let mut p = params(1.0);
    p.remove("rnn.bias_ih_l0");
    let err = message(validate_params(&p, &expected()));
    assert!(
        err.contains("`rnn.bias_ih_l0` is missing (expected shape [2], dtype f32)"),
        "{err}"
    );
}

#[test]
fn validate_params_reports_an_unexpected_tensor() {
    let mut p = params(1.0);
    p.insert(
        "rnn.weight_hh_l0".to_string(),
        Tensor::zeros((2, 2), DType::F32, &dev()).unwrap(),
    );
    let err = message(validate_params(&p, &expected()));
    assert!(
        err.contains("`rnn.weight_hh_l0` (shape [2, 2], dtype f32) is not a parameter"),
        "{err}"
    );
}

#[test]
fn validate_params_reports_a_wrong_shape() {
    let mut p = params(1.0);
    p.insert(
        "rnn.weight_ih_l0".to_string(),
        Tensor::zeros((3, 2), DType::F32, &dev()).unwrap(),
    );
    let err = message(validate_params(&p, &expected()));
    assert!(
        err.contains("`rnn.weight_ih_l0` has shape [3, 2], expected [2, 3]"),
        "{err}"
    );
}

#[test]
fn validate_params_reports_a_wrong_dtype() {
    let mut p = params(1.0);
    p.insert(
        "rnn.bias_ih_l0".to_string(),
        Tensor::zeros(2, DType::F64, &dev()).unwrap(),
    );
    let err = message(validate_params(&p, &expected()));
    assert!(
        err.contains("`rnn.bias_ih_l0` has dtype f64, expected f32"),
        "{err}"
    );
}

#[test]
fn validate_params_reports_every_problem_at_once() {
    let p = HashMap::from([(
        "extra".to_string(),
        Tensor::zeros(1, DType::F32, &dev()).unwrap(),
    )]);
    let err = message(validate_params(&p, &expected()));
    assert!(err.contains("(3 problems)"), "{err}");
}

fn varmap() -> VarMap {
    let vm = VarMap::new();
    vm.get(
        (2, 3),
        "rnn.weight_ih_l0",
        Init::Const(0.0),
        DType::F32,
        &dev(),
    )
    .unwrap();
    vm.get(2, "rnn.bias_ih_l0", Init::Const(0.0), DType::F32, &dev())
        .unwrap();
    vm
}

#[test]
fn copy_into_varmap_sets_values_through_a_checkpoint() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    let source = varmap();
    source
        .data()
        .lock()
        .unwrap()
        .get("rnn.weight_ih_l0")
        .unwrap()
        .set(&params(1.5)["rnn.weight_ih_l0"])
        .unwrap();
    let p = varmap_tensors(&source).unwrap();
    save(&dir, &p, &json!({}), &state(1), None, &[]).unwrap();

    let loaded = load(&dir, &dev()).unwrap();
    let vm = varmap();
    loaded.validate(&varmap_expected(&vm).unwrap()).unwrap();
    loaded.copy_into(&vm).unwrap();
    let got = varmap_tensors(&vm).unwrap();
    assert_eq!(
        f32_bits(&got["rnn.weight_ih_l0"]),
        f32_bits(&params(1.5)["rnn.weight_ih_l0"])
    );
}

#[test]
fn copy_into_varmap_changes_nothing_on_a_mismatch() {
    let vm = varmap();
    let mut p = params(1.0);
    p.insert(
        "rnn.bias_ih_l0".to_string(),
        Tensor::zeros(3, DType::F32, &dev()).unwrap(),
    );
    let err = message(copy_into_varmap(&p, &vm));
    assert!(
        err.contains("`rnn.bias_ih_l0` has shape [3], expected [2]"),
        "{err}"
    );
    let got = varmap_tensors(&vm).unwrap();
    assert_eq!(f32_bits(&got["rnn.weight_ih_l0"]), vec![0; 6]);
}

#[test]
fn loaded_checkpoint_validation_errors_name_the_model_file() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("ckpt");
    save_simple(&dir, 1.0, 1);
    let loaded = load(&dir, &dev()).unwrap();
    let mut exp = expected();
    exp[0].1 = vec![4];
    let err = message(loaded.validate(&exp));
    assert!(
        err.contains(MODEL_FILE) && err.contains("rnn.weight_ih_l0"),
        "{err}"
    );
}

//! The kernel choice ([`calibrate`]): the environment's setting, classes, the measurement and
//! the cache file. The setting is checked on its parsing, not by setting the variables, which
//! other tests read concurrently.

use super::calibrate::{self, Class, Entry, Setting};
use super::*;
use std::collections::HashMap;
use std::ffi::OsStr;

fn parse(kernel: Option<&str>, packed: Option<&str>) -> (Setting, Option<String>) {
    Setting::parse(kernel.map(OsStr::new), packed.map(OsStr::new))
}

#[test]
fn rnn_kernel_pins_each_kernel_this_cpu_runs_and_auto_measures() {
    for isa in KernelIsa::supported() {
        for spelling in [isa.name().to_string(), isa.name().to_uppercase()] {
            assert_eq!(
                parse(Some(&spelling), None),
                (Setting::Pinned(isa), None),
                "{spelling}"
            );
        }
        // RNN_KERNEL wins over RNN_PACKED_KERNEL.
        assert_eq!(parse(Some(isa.name()), Some("off")).0, Setting::Pinned(isa));
    }
    assert_eq!(parse(None, None), (Setting::Auto, None));
    assert_eq!(parse(Some("auto"), None), (Setting::Auto, None));
    assert_eq!(parse(Some(""), None), (Setting::Auto, None));
}

#[test]
fn rnn_packed_kernel_off_still_pins_the_portable_path() {
    let portable = Setting::Pinned(KernelIsa::Portable);
    assert_eq!(parse(None, Some("off")), (portable, None));
    assert_eq!(parse(Some("auto"), Some("off")), (portable, None));
    // Any other value is ignored, as before.
    for other in ["", "on", "OFF", "0", "avx2"] {
        assert_eq!(parse(None, Some(other)), (Setting::Auto, None), "{other:?}");
    }
}

#[test]
fn an_unknown_or_unavailable_kernel_warns_and_measures() {
    let (setting, warning) = parse(Some("sse9"), None);
    assert_eq!(setting, Setting::Auto);
    let warning = warning.expect("a warning");
    assert!(
        warning.contains("RNN_KERNEL=sse9") && warning.contains("auto, avx512, avx2, portable"),
        "{warning}"
    );
    for isa in [KernelIsa::Avx512, KernelIsa::Avx2] {
        let (setting, warning) = parse(Some(isa.name()), None);
        if isa.runs_here() {
            assert_eq!((setting, warning), (Setting::Pinned(isa), None));
        } else {
            assert_eq!(setting, Setting::Auto);
            let warning = warning.expect("a warning");
            assert!(warning.contains("cannot run"), "{warning}");
        }
    }
}

#[test]
fn classes_bucket_rows_inner_dimension_and_columns() {
    assert_eq!(
        Class::packed(1, 256, 1024).label(),
        "rows 1, k 129-256, n 513-1024"
    );
    assert_eq!(
        Class::packed(16, 650, 2600).label(),
        "rows 9-32, k 513-1024, n 2049-4096"
    );
    assert_eq!(
        Class::packed(200, 2000, 9000).label(),
        "rows >128, k >1024, n >4096"
    );
    assert_eq!(Class::packed(2, 64, 128), Class::packed(8, 1, 1));
    assert_ne!(Class::packed(8, 64, 128), Class::packed(9, 64, 128));
}

/// Every class measures to a kernel this CPU runs, and the product on that kernel is the
/// product (within the tolerance of the kernels' reassociation).
#[test]
fn measurement_picks_a_kernel_that_runs_here() {
    for class in [
        Class::packed(1, 128, 512),
        Class::packed(16, 256, 1024),
        Class::packed(200, 2000, 9000),
        Class::Blocked,
    ] {
        let isa = calibrate::measure(class);
        assert!(isa.runs_here(), "{class:?}: {isa:?}");
        assert!(KernelIsa::supported().contains(&isa));
    }
    let (m, k, n) = (12, 130, 70);
    let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
    let packed = PackedRhs::new(MatRef::row_major(&b, k, n), m);
    assert!(packed.isa.runs_here());
    let mut got = vec![0f32; m * n];
    packed.matmul(&mut got, 0, n, false, MatRef::row_major(&a, m, k));
    for i in 0..m {
        for j in 0..n {
            let want: f64 = (0..k)
                .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                .sum();
            assert!((got[i * n + j] as f64 - want).abs() < 1e-3, "({i},{j})");
        }
    }
    // The choice is kept for the process and counted per use.
    let class = Class::packed(m, k, n);
    let uses = |c| {
        calibrate::choices()
            .into_iter()
            .find(|(x, _)| *x == c)
            .map(|(_, e)| e.uses)
    };
    let before = uses(class).expect("the class was chosen");
    let again = PackedRhs::<f32>::new(MatRef::row_major(&b, k, n), m);
    assert_eq!(again.isa, packed.isa);
    assert!(uses(class).unwrap() > before);
}

#[test]
fn the_fastest_kernel_wins_by_more_than_the_margin_only() {
    use KernelIsa::*;
    let isas = [Avx512, Avx2, Portable];
    assert_eq!(calibrate::pick(&isas, &[1.0, 0.5, 0.9]), Avx2);
    assert_eq!(calibrate::pick(&isas, &[1.0, 1.2, 0.8]), Portable);
    assert_eq!(calibrate::pick(&isas, &[1.0, 0.99, 0.995]), Avx512);
}

#[test]
fn forcing_a_kernel_on_a_thread_overrides_the_choice() {
    let (k, n) = (40, 48);
    let b: Vec<f32> = (0..k * n).map(|i| i as f32).collect();
    for isa in KernelIsa::supported() {
        let packed = calibrate::with_forced(isa, || PackedRhs::new(MatRef::row_major(&b, k, n), 8));
        assert_eq!(packed.isa, isa);
    }
}

#[test]
fn the_cache_file_round_trips_and_a_bad_one_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("kernels.json");
    let isas = KernelIsa::supported();
    let mut entries = HashMap::new();
    let classes = [
        Class::packed(1, 64, 128),
        Class::packed(32, 512, 2048),
        Class::Blocked,
    ];
    for (i, class) in classes.into_iter().enumerate() {
        let isa = isas[i % isas.len()];
        entries.insert(class, Entry { isa, uses: 3 });
    }
    calibrate::save(&path, &entries);
    let mut loaded = calibrate::load(&path);
    loaded.sort();
    let mut want: Vec<(Class, KernelIsa)> = entries.iter().map(|(c, e)| (*c, e.isa)).collect();
    want.sort();
    assert_eq!(loaded, want);
    // A file from another CPU model is not taken.
    let text = std::fs::read_to_string(&path).unwrap();
    let other = text.replace(&calibrate::cpu_model(), "Another CPU 9000");
    std::fs::write(&path, other).unwrap();
    assert!(calibrate::load(&path).is_empty());
    // Corrupt, truncated, wrong types, unknown classes or kernels: nothing, and no panic.
    let cpu = serde_json::to_string(&calibrate::cpu_model()).unwrap();
    for bad in [
        "".to_string(),
        "{".to_string(),
        text[..text.len() / 2].to_string(),
        "[1, 2]".to_string(),
        "\u{0}\u{1}garbage".to_string(),
        format!(r#"{{"cpu": {cpu}, "kernels": 5}}"#),
        format!(
            r#"{{"cpu": {cpu}, "kernels": {{"rows 99": "avx2", "weight gradients": "sse9"}}}}"#
        ),
    ] {
        std::fs::write(&path, &bad).unwrap();
        assert!(calibrate::load(&path).is_empty(), "{bad:?}");
    }
    assert!(calibrate::load(&dir.path().join("missing.json")).is_empty());
    // An unwritable place is not an error.
    std::fs::write(dir.path().join("file"), "x").unwrap();
    calibrate::save(&dir.path().join("file").join("kernels.json"), &entries);
}

/// Two processes that measured one class at once: the one that settles second takes the
/// first one's choice, and neither wipes out the classes the other stored.
#[test]
fn the_first_process_to_store_a_class_wins_and_others_keep_their_choices() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rnn").join("kernels.json");
    let isas = KernelIsa::supported();
    let (first, second) = (isas[0], isas[isas.len() - 1]);
    let shared = Class::packed(8, 64, 128);
    let only_a = Class::packed(32, 256, 512);
    let only_b = Class::Blocked;
    let a: HashMap<Class, Entry> = [(
        only_a,
        Entry {
            isa: second,
            uses: 2,
        },
    )]
    .into();
    let b: HashMap<Class, Entry> = [(
        only_b,
        Entry {
            isa: first,
            uses: 1,
        },
    )]
    .into();
    // Process a stores its measurement of `shared`, with its own `only_a`.
    assert_eq!(calibrate::settle(&path, shared, first, &a), first);
    assert!(path.with_file_name("kernels.json.lock").exists());
    // Process b measured `shared` too, differently: it takes a's choice and writes nothing.
    assert_eq!(calibrate::settle(&path, shared, second, &b), first);
    // Process b's next new class keeps a's classes in the file.
    let other = Class::rowdot(1, 64, 128);
    assert_eq!(calibrate::settle(&path, other, second, &b), second);
    let mut on_disk = calibrate::load(&path);
    on_disk.sort();
    let mut want = vec![
        (shared, first),
        (only_a, second),
        (only_b, first),
        (other, second),
    ];
    want.sort();
    assert_eq!(on_disk, want);
    // An unwritable place: the measured choice, and no panic.
    std::fs::write(dir.path().join("file"), "x").unwrap();
    let nowhere = dir.path().join("file").join("kernels.json");
    assert_eq!(calibrate::settle(&nowhere, shared, second, &a), second);
}

/// Processes racing on one cache file all end up with one choice per class.
#[test]
fn threads_settling_one_class_at_once_agree() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kernels.json");
    let isas = KernelIsa::supported();
    for round in 0..8 {
        let rows = [1, 8, 32, 128][round % 4];
        let class = if round < 4 {
            Class::packed(rows, 64, 128)
        } else {
            Class::rowdot(rows, 64, 128)
        };
        let chosen: Vec<KernelIsa> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let path = &path;
                    let isa = isas[t % isas.len()];
                    s.spawn(move || calibrate::settle(path, class, isa, &HashMap::new()))
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(
            chosen.iter().all(|&c| c == chosen[0]),
            "{round}: {chosen:?}"
        );
        assert!(calibrate::load(&path).contains(&(class, chosen[0])));
    }
    assert_eq!(calibrate::load(&path).len(), 8);
}

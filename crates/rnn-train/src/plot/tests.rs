use super::drawing::{viridis, MISSING, PALETTE};
use super::layout::{fmt_num, log_ticks};
use super::output::PNG_SIGNATURE;
use super::*;
use plotters::style::RGBColor;
use std::io::Read;

/// Width, height and the RGB pixels of a PNG written by [`encode_png`] (checks the CRCs).
fn decode_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    assert!(bytes.len() > 8, "PNG too short");
    assert_eq!(&bytes[..8], &PNG_SIGNATURE, "PNG signature");
    let mut pos = 8;
    let (mut w, mut h, mut idat) = (0u32, 0u32, Vec::new());
    loop {
        let len = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let kind = &bytes[pos + 4..pos + 8];
        let data = &bytes[pos + 8..pos + 8 + len];
        let crc = u32::from_be_bytes(bytes[pos + 8 + len..pos + 12 + len].try_into().unwrap());
        let mut c = flate2::Crc::new();
        c.update(kind);
        c.update(data);
        assert_eq!(
            c.sum(),
            crc,
            "CRC of chunk {:?}",
            String::from_utf8_lossy(kind)
        );
        match kind {
            b"IHDR" => {
                w = u32::from_be_bytes(data[0..4].try_into().unwrap());
                h = u32::from_be_bytes(data[4..8].try_into().unwrap());
                assert_eq!(&data[8..], &[8, 2, 0, 0, 0]);
            }
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        pos += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .unwrap();
    let stride = w as usize * 3;
    assert_eq!(raw.len(), (stride + 1) * h as usize);
    let mut rgb = Vec::with_capacity(stride * h as usize);
    for line in raw.chunks_exact(stride + 1) {
        assert_eq!(line[0], 1, "Sub filter");
        let start = rgb.len();
        for (k, &b) in line[1..].iter().enumerate() {
            let left = if k >= 3 { rgb[start + k - 3] } else { 0 };
            rgb.push(b.wrapping_add(left));
        }
    }
    (w, h, rgb)
}

fn count_colour(rgb: &[u8], c: RGBColor) -> usize {
    rgb.chunks_exact(3)
        .filter(|p| p[0] == c.0 && p[1] == c.1 && p[2] == c.2)
        .count()
}

/// Checks both files, returns the decoded PNG and the SVG text.
fn check_files(paths: &[PathBuf], size: (u32, u32)) -> (Vec<u8>, String) {
    assert_eq!(paths.len(), 2);
    assert_eq!(paths[0].extension().unwrap(), "png");
    assert_eq!(paths[1].extension().unwrap(), "svg");
    let png = std::fs::read(&paths[0]).unwrap();
    let (w, h, rgb) = decode_png(&png);
    assert_eq!((w, h), size);
    assert!(
        rgb.chunks_exact(3).any(|p| p != [255, 255, 255]),
        "blank PNG"
    );
    let svg = std::fs::read_to_string(&paths[1]).unwrap();
    assert!(
        svg.starts_with("<svg") || svg.starts_with("<?xml"),
        "{}",
        &svg[..40]
    );
    assert!(svg.contains(&format!("width=\"{}\"", size.0)));
    // No temporary files left behind.
    let dir = paths[0].parent().unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name();
        assert!(!name.to_string_lossy().contains(".tmp"), "{name:?} left");
    }
    (rgb, svg)
}

fn ramp(n: usize, f: impl Fn(f64) -> f64) -> Vec<(f64, f64)> {
    (0..n).map(|i| (i as f64 * 10.0, f(i as f64))).collect()
}

fn chart(series: Vec<Series>) -> Chart {
    Chart {
        title: "Test chart".into(),
        x_label: "step".into(),
        y_label: "loss value".into(),
        log_y: false,
        series,
    }
}

#[test]
fn save_chart_writes_png_and_svg_with_text() {
    let dir = tempfile::tempdir().unwrap();
    let c = chart(vec![
        Series::new("train", ramp(200, |i| 2.0 / (1.0 + i * 0.05))),
        Series::new("valid", ramp(20, |i| 2.2 / (1.0 + i * 0.4))),
    ]);
    let stem = dir.path().join("run.v1");
    let paths = save_chart(&c, &stem).unwrap();
    assert_eq!(paths[0], dir.path().join("run.v1.png"));
    assert_eq!(paths[1], dir.path().join("run.v1.svg"));
    let (rgb, svg) = check_files(&paths, PANEL_SIZE);
    for text in ["train", "valid", "Test chart", "step", "loss value"] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
    // Both series colours show up in the bitmap.
    assert!(count_colour(&rgb, PALETTE[0]) > 100);
    assert!(count_colour(&rgb, PALETTE[1]) > 20);
    // Text was rendered into the bitmap: the title row has dark pixels.
    let dark_in_title = rgb[..800 * 3 * 40]
        .chunks_exact(3)
        .filter(|p| p.iter().all(|&b| b < 100))
        .count();
    assert!(dark_in_title > 50, "no title text in the PNG");
    // PNG stays small.
    assert!(std::fs::metadata(&paths[0]).unwrap().len() < 200_000);
}

#[test]
fn non_finite_points_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut pts = ramp(50, |i| i.sin());
    pts[3].1 = f64::NAN;
    pts[7].0 = f64::NAN;
    pts[9].1 = f64::INFINITY;
    pts.push((f64::NEG_INFINITY, 1.0));
    let c = chart(vec![
        Series::new("wavy", pts),
        Series::new("broken", vec![(f64::NAN, f64::NAN)]),
    ]);
    let paths = save_chart(&c, &dir.path().join("nan")).unwrap();
    let (_, svg) = check_files(&paths, PANEL_SIZE);
    assert!(svg.contains("wavy"));
    assert!(svg.contains("broken (no data)"));
    assert!(!svg.contains("NaN"));
}

#[test]
fn single_point_and_constant_series() {
    let dir = tempfile::tempdir().unwrap();
    let one = chart(vec![Series::new("one", vec![(5.0, 0.25)])]);
    let (rgb, _) = check_files(
        &save_chart(&one, &dir.path().join("one")).unwrap(),
        PANEL_SIZE,
    );
    assert!(
        count_colour(&rgb, PALETTE[0]) > 10,
        "the single point is drawn"
    );
    let flat = chart(vec![Series::new("flat", ramp(100, |_| 0.0))]);
    check_files(
        &save_chart(&flat, &dir.path().join("flat")).unwrap(),
        PANEL_SIZE,
    );
    let flat3 = chart(vec![Series::new("flat3", ramp(100, |_| -3.0))]);
    check_files(
        &save_chart(&flat3, &dir.path().join("flat3")).unwrap(),
        PANEL_SIZE,
    );
}

#[test]
fn log_scale_skips_non_positive_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = chart(vec![Series::new(
        "decay",
        ramp(40, |i| {
            if (i as usize).is_multiple_of(10) {
                0.0
            } else {
                0.5f64.powf(i)
            }
        }),
    )]);
    c.log_y = true;
    c.series[0].points.push((400.0, -1.0));
    check_files(
        &save_chart(&c, &dir.path().join("log")).unwrap(),
        PANEL_SIZE,
    );
    c.series[0].points = vec![(0.0, 0.0), (1.0, -2.0)];
    let err = save_chart(&c, &dir.path().join("log2")).unwrap_err();
    assert!(err.to_string().contains("log scale"), "{err}");
    // Less than a decade of range still gets labelled decades.
    c.series[0].points = vec![(0.0, 0.5), (1.0, 0.7)];
    check_files(
        &save_chart(&c, &dir.path().join("log3")).unwrap(),
        PANEL_SIZE,
    );
}

#[test]
fn empty_charts_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("empty");
    let err = save_chart(&chart(vec![]), &stem).unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(err.to_string().contains("no finite point"), "{err}");
    let err = save_chart(&chart(vec![Series::new("x", vec![(1.0, f64::NAN)])]), &stem).unwrap_err();
    assert!(err.to_string().contains("Test chart"), "{err}");
    assert!(save_panels(&[], &stem).is_err());
    let good = chart(vec![Series::new("a", ramp(3, |i| i))]);
    let err = save_panels(&[good, chart(vec![])], &stem).unwrap_err();
    assert!(err.to_string().contains("panel 2 of 2"), "{err}");
    assert!(!dir.path().join("empty.png").exists());
}

#[test]
fn unwritable_path_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("missing-dir").join("plot");
    let c = chart(vec![Series::new("a", ramp(3, |i| i))]);
    let err = save_chart(&c, &stem).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("missing-dir") && msg.contains("plot.png"),
        "{msg}"
    );
    let err = heatmap(&[vec![1.0]], &[], &[], "h", &stem).unwrap_err();
    assert!(err.to_string().contains("plot.png"), "{err}");
}

#[test]
fn panels_are_laid_out_two_per_row() {
    let dir = tempfile::tempdir().unwrap();
    let charts: Vec<Chart> = (0..3)
        .map(|k| {
            let mut c = chart(vec![Series::new(format!("s{k}"), ramp(10, |i| i * i))]);
            c.title = format!("Panel {k}");
            c
        })
        .collect();
    let paths = save_panels(&charts[..2], &dir.path().join("two")).unwrap();
    check_files(&paths, (1600, 500));
    let paths = save_panels(&charts, &dir.path().join("three")).unwrap();
    let (_, svg) = check_files(&paths, (1600, 1000));
    for k in 0..3 {
        assert!(svg.contains(&format!("Panel {k}")));
        assert!(svg.contains(&format!("s{k}")));
    }
}

#[test]
fn learning_curves_with_and_without_metric() {
    let dir = tempfile::tempdir().unwrap();
    let train = ramp(300, |i| 3.0 * (-i / 80.0).exp() + 0.3);
    let valid: Vec<(f64, f64)> = ramp(300, |i| 3.1 * (-i / 80.0).exp() + 0.4)
        .into_iter()
        .step_by(30)
        .collect();
    let acc: Vec<(f64, f64)> = valid.iter().map(|&(x, y)| (x, 1.0 - y / 4.0)).collect();
    let stem = dir.path().join("learning_curves");
    let paths = learning_curves(&train, &valid, Some(("accuracy", &acc)), &stem).unwrap();
    let (_, svg) = check_files(&paths, (1600, 500));
    for text in [
        "Loss",
        "train",
        "valid",
        "Accuracy",
        "valid accuracy",
        "step",
    ] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
    let paths = learning_curves(&train, &[], None, &stem).unwrap();
    check_files(&paths, PANEL_SIZE);
    // A metric without data yet gives the loss panel only.
    let paths = learning_curves(&train, &[], Some(("perplexity", &[])), &stem).unwrap();
    check_files(&paths, PANEL_SIZE);
    // Perplexity spanning decades goes on a log scale.
    let ppl: Vec<(f64, f64)> = ramp(30, |i| 5000.0 * (-i / 3.0).exp() + 20.0);
    let paths = learning_curves(&train, &valid, Some(("perplexity", &ppl)), &stem).unwrap();
    let (_, svg) = check_files(&paths, (1600, 500));
    assert!(svg.contains("Perplexity"));
    assert!(learning_curves(&[], &[], None, &stem).is_err());
}

#[test]
fn gradient_norms_on_log_scale() {
    let dir = tempfile::tempdir().unwrap();
    let t = 60;
    let series = vec![
        Series::new("rnn-tanh", ramp(t, |i| 0.8f64.powf(60.0 - i))),
        Series::new("lstm", ramp(t, |i| 0.5 + 0.01 * i)),
        Series::new("gru", ramp(t, |i| 0.4 + 0.005 * i)),
        Series::new(
            "rnn-tanh clipped",
            ramp(t, |i| if i < 3.0 { 0.0 } else { 1e-9 * 1.3f64.powf(i) }),
        ),
    ];
    let paths = gradient_norms(&series, &dir.path().join("grad_norms")).unwrap();
    let (rgb, svg) = check_files(&paths, PANEL_SIZE);
    assert!(svg.contains(GRADIENT_NORMS_TITLE));
    for s in &series {
        assert!(svg.contains(&s.name), "SVG lacks {:?}", s.name);
    }
    for c in &PALETTE[..4] {
        assert!(count_colour(&rgb, *c) > 20, "colour {c:?} missing");
    }
    assert!(svg.contains("time step t"));
    assert!(gradient_norms(&[], &dir.path().join("none")).is_err());
}

#[test]
fn heatmap_writes_labelled_image() {
    let dir = tempfile::tempdir().unwrap();
    let src: Vec<String> = ["le", "chat", "noir", "<eos>"].map(String::from).to_vec();
    let tgt: Vec<String> = ["the", "black", "cat"].map(String::from).to_vec();
    let m = vec![
        vec![0.9, 0.05, 0.03, 0.02],
        vec![0.1, 0.1, 0.75, 0.05],
        vec![0.05, 0.85, f32::NAN, 0.05],
    ];
    let paths = heatmap(
        &m,
        &tgt,
        &src,
        "Attention weights",
        &dir.path().join("attn"),
    )
    .unwrap();
    let (rgb, svg) = check_files(&paths, HEATMAP_SIZE);
    for text in [
        "Attention weights",
        "the",
        "black",
        "chat",
        "noir",
        "&lt;eos&gt;",
    ] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
    // The maximum is yellow-ish, the minimum dark purple, the NaN cell grey.
    assert!(count_colour(&rgb, viridis(1.0)) > 500);
    assert!(count_colour(&rgb, viridis(0.0)) > 500);
    assert!(count_colour(&rgb, MISSING) > 500);

    // Large matrix without labels, constant matrix.
    let big: Vec<Vec<f32>> = (0..40)
        .map(|i| (0..70).map(|j| ((i * j) as f32).sin()).collect())
        .collect();
    check_files(
        &heatmap(&big, &[], &[], "", &dir.path().join("big")).unwrap(),
        HEATMAP_SIZE,
    );
    let flat = vec![vec![0.5f32; 3]; 2];
    check_files(
        &heatmap(&flat, &[], &[], "flat", &dir.path().join("flat")).unwrap(),
        HEATMAP_SIZE,
    );
}

#[test]
fn heatmap_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let stem = dir.path().join("h");
    let err = heatmap(&[vec![1.0, 2.0], vec![3.0]], &[], &[], "t", &stem).unwrap_err();
    assert!(err.to_string().contains("ragged"), "{err}");
    assert!(err.to_string().contains("row 1"), "{err}");
    assert!(heatmap(&[], &[], &[], "t", &stem).is_err());
    assert!(heatmap(&[vec![]], &[], &[], "t", &stem).is_err());
    let err = heatmap(
        &[vec![1.0, 2.0]],
        &["a".into(), "b".into()],
        &[],
        "t",
        &stem,
    )
    .unwrap_err();
    assert!(err.to_string().contains("2 row labels for 1 rows"), "{err}");
    let err = heatmap(&[vec![1.0, 2.0]], &[], &["a".into()], "t", &stem).unwrap_err();
    assert!(err.to_string().contains("column labels"), "{err}");
    let err = heatmap(&[vec![f32::NAN]], &[], &[], "t", &stem).unwrap_err();
    assert!(err.to_string().contains("no finite value"), "{err}");
    assert!(!dir.path().join("h.png").exists());
}

#[test]
fn log_axis_ticks() {
    let (bold, light) = log_ticks((0.1, 1.0));
    assert_eq!(bold.len(), 4, "{bold:?}"); // 0.1 0.2 0.5 1
    assert_eq!(light.len(), 10, "{light:?}"); // 0.1 .. 0.9, 1
    let (bold, _) = log_ticks((1e-4, 1.0));
    assert_eq!(bold.len(), 9, "{bold:?}"); // 1 and 3 per decade, then 1
    let (bold, light) = log_ticks((1e-30, 1e2));
    assert!(bold.len() <= 10, "{bold:?}");
    assert_eq!(light.len(), 33);
    assert!(bold.contains(&1e2) || bold.contains(&1e-30));
}

#[test]
fn number_formatting() {
    assert_eq!(fmt_num(0.0), "0");
    assert_eq!(fmt_num(0.25), "0.25");
    assert_eq!(fmt_num(0.1 + 0.2), "0.3");
    assert_eq!(fmt_num(12.5), "12.5");
    assert_eq!(fmt_num(2500.0), "2500");
    assert_eq!(fmt_num(-1.5), "-1.5");
    assert_eq!(fmt_num(1e-5), "1e-5");
    assert_eq!(fmt_num(2.5e7), "2.5e7");
    assert_eq!(fmt_num(-1e-9), "-1e-9");
}

//! Numeric sequences for classification from CSV rows: each row holds the features of one example
//! and its integer class (the digit data sets published as CSV: UCI optdigits, 64 features then
//! the class; MNIST as CSV, a `label` column then 784 pixels). A row of F features is folded
//! into F / `row_len` time steps of `row_len` features.

use super::{excerpt, Mnist};
use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::path::Path;

/// Header names of a label column; without such a header the label is the last column.
const LABEL_COLUMNS: [&str; 6] = ["label", "class", "target", "y", "digit", "labels"];

/// Largest class id accepted (a larger one is more likely a feature read as the label).
const MAX_CLASS: u64 = 9_999;

/// Rows read from a CSV file: the sequences and labels, and the scale the features were divided
/// by.
#[derive(Debug, Clone)]
pub struct FeatureRows {
    /// `images (n, steps, row_len)` f32 (features divided by `scale`) and `labels (n,)` u32.
    pub data: Mnist,
    /// What the raw values were divided by.
    pub scale: f32,
}

/// Reads a CSV file of feature rows: each row holds the features of one example and its integer
/// class (e.g. UCI optdigits, or MNIST as CSV). A first row with a
/// non-numeric field is a header; its column named `label` (or `class`, `target`, `y`, `digit`)
/// holds the labels, else the last column does. Fields are separated by commas (or by semicolons
/// or TABs when the first line has no comma). `row_len` features make one time step (default:
/// 28 for rows of 784 features, as MNIST's rows, else 1); it must divide the row length.
/// Features are divided by `scale`, or when `None` by the largest absolute value in the file
/// when that exceeds 1 (255 for 8-bit pixels). Errors name the file, and the line where there
/// is one.
pub fn read_feature_rows(
    path: &Path,
    row_len: Option<usize>,
    scale: Option<f32>,
    device: &Device,
) -> Result<FeatureRows> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_feature_rows(path, &bytes, row_len, scale, device)
}

/// [`read_feature_rows`] of a file's bytes already in memory; `path` only names the file in
/// errors.
pub fn parse_feature_rows(
    path: &Path,
    bytes: &[u8],
    row_len: Option<usize>,
    scale: Option<f32>,
    device: &Device,
) -> Result<FeatureRows> {
    let first_line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let delimiter = if first_line.contains(&b',') {
        b','
    } else if first_line.contains(&b';') {
        b';'
    } else if first_line.contains(&b'\t') {
        b'\t'
    } else {
        b','
    };
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(bytes);
    let mut label_col: Option<usize> = None;
    let mut width: Option<usize> = None;
    let (mut features, mut labels) = (Vec::<f32>::new(), Vec::<u32>::new());
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(i + 1, |p| p.line() as usize);
            Error::parse(path, line, format!("CSV parse error: {e}"))
        })?;
        let line = record.position().map_or(i + 1, |p| p.line() as usize);
        if record.iter().all(|f| f.trim().is_empty()) {
            continue;
        }
        let fields: Vec<&str> = record.iter().map(str::trim).collect();
        if width.is_none() && fields.iter().any(|f| f.parse::<f64>().is_err()) {
            // A header: find the label column by name.
            label_col = fields
                .iter()
                .position(|f| LABEL_COLUMNS.contains(&f.to_ascii_lowercase().as_str()));
            width = Some(fields.len());
            continue;
        }
        let w = *width.get_or_insert(fields.len());
        if fields.len() != w {
            return Err(Error::parse(
                path,
                line,
                format!("ragged row: {} fields, the first row has {w}", fields.len()),
            ));
        }
        if w < 2 {
            return Err(Error::parse(
                path,
                line,
                "expected features then a label, found one field",
            ));
        }
        let at = label_col.unwrap_or(w - 1);
        for (c, f) in fields.iter().enumerate() {
            if c == at {
                let label = f
                    .parse::<u64>()
                    .ok()
                    .filter(|&l| l <= MAX_CLASS)
                    .ok_or_else(|| {
                        Error::parse(
                            path,
                            line,
                            format!(
                                "label '{}' (column {}) is not a class number 0-{MAX_CLASS}",
                                excerpt(f, 20),
                                c + 1
                            ),
                        )
                    })?;
                labels.push(label as u32);
            } else {
                let v = f
                    .parse::<f32>()
                    .ok()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| {
                        Error::parse(
                            path,
                            line,
                            format!("non-numeric value '{}' in column {}", excerpt(f, 20), c + 1),
                        )
                    })?;
                features.push(v);
            }
        }
    }
    let n = labels.len();
    if n == 0 {
        return Err(Error::file(path, "no data rows"));
    }
    let per_row = features.len() / n;
    let row_len = row_len.unwrap_or(if per_row == 784 { 28 } else { 1 });
    if row_len == 0 || !per_row.is_multiple_of(row_len) {
        return Err(Error::file(
            path,
            format!("rows of {per_row} features do not fold into time steps of {row_len} features (--row-len must divide {per_row})"),
        ));
    }
    let scale = scale.unwrap_or_else(|| {
        let max = features.iter().fold(0f32, |m, v| m.max(v.abs()));
        if max > 1.0 {
            max
        } else {
            1.0
        }
    });
    for v in &mut features {
        *v /= scale;
    }
    let images = Tensor::from_vec(features, (n, per_row / row_len, row_len), device)?;
    let labels = Tensor::from_vec(labels, n, device)?;
    Ok(FeatureRows {
        data: Mnist { images, labels },
        scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, row_len: Option<usize>) -> Result<FeatureRows> {
        parse_feature_rows(
            Path::new("d.csv"),
            text.as_bytes(),
            row_len,
            None,
            &Device::Cpu,
        )
    }

    #[test]
    fn features_then_label_folded_into_steps() {
        let r = parse("0,16,8,4,7\n16,0,0,0,1\n", Some(2)).unwrap();
        assert_eq!(r.data.images.dims(), &[2, 2, 2]);
        assert_eq!(r.scale, 16.0);
        assert_eq!(r.data.labels.to_vec1::<u32>().unwrap(), vec![7, 1]);
        assert_eq!(
            r.data.images.to_vec3::<f32>().unwrap()[0],
            vec![vec![0.0, 1.0], vec![0.5, 0.25]]
        );
        // Default: one feature per step.
        assert_eq!(
            parse("1,2,3,0\n", None).unwrap().data.images.dims(),
            &[1, 3, 1]
        );
    }

    #[test]
    fn a_header_is_skipped_and_names_the_label_column() {
        let r = parse("label,p0,p1\n3,0.5,0.25\n\n4,1,0\n", None).unwrap();
        assert_eq!(r.data.labels.to_vec1::<u32>().unwrap(), vec![3, 4]);
        assert_eq!(r.scale, 1.0);
        assert_eq!(
            r.data.images.to_vec3::<f32>().unwrap()[0],
            vec![vec![0.5], vec![0.25]]
        );
        let mnist: String = std::iter::once("label".to_string())
            .chain((0..784).map(|i| format!("pixel{i}")))
            .collect::<Vec<_>>()
            .join(",")
            + "\n5,"
            + &vec!["255"; 784].join(",")
            + "\n";
        let r = parse(&mnist, None).unwrap();
        assert_eq!(r.data.images.dims(), &[1, 28, 28]);
        assert_eq!(r.scale, 255.0);
        let r = parse("a;b;c\n1;2;3\n", None).unwrap();
        assert_eq!(r.data.labels.to_vec1::<u32>().unwrap(), vec![3]);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let e = |t: &str, r: Option<usize>| parse(t, r).unwrap_err().to_string();
        assert_eq!(
            e("1,2,3\n1,2\n", None),
            "d.csv:2: ragged row: 2 fields, the first row has 3"
        );
        assert_eq!(
            e("1,2,3\n1,x,3\n", None),
            "d.csv:2: non-numeric value 'x' in column 2"
        );
        assert_eq!(
            e("1,2,3\n1,2,3.5\n", None),
            "d.csv:2: label '3.5' (column 3) is not a class number 0-9999"
        );
        assert!(e("1,2,3,4\n", Some(2)).contains("--row-len must divide 3"));
        assert_eq!(e("a,b\n", None), "d.csv: no data rows");
        assert!(e("1\n2\n", None).starts_with("d.csv:1: expected features then a label"));
    }
}

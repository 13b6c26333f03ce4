//! Numeric series from CSV files with a header: chosen target and feature columns, a policy for
//! missing values, normalisation fitted on the training part only, and windows with a look-back
//! and a horizon for forecasting.

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What to do with a missing value (an empty cell, `NA`, `NaN`, `null`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissingPolicy {
    /// Stop with an error naming the line and column (the default: nothing is silently invented).
    Error,
    /// Repeat the last value seen in the column (a missing first value is an error).
    ForwardFill,
    /// Replace with zero.
    Zero,
    /// Drop the row.
    DropRow,
}

/// A numeric table: `values[row][col]` for the chosen columns, target first.
#[derive(Debug, Clone)]
pub struct Series {
    /// Column names, the target first, then the features.
    pub columns: Vec<String>,
    /// One row per kept CSV record.
    pub values: Vec<Vec<f64>>,
    /// How many values the missing-value policy filled or how many rows it dropped.
    pub missing_handled: usize,
}

fn is_missing(cell: &str) -> bool {
    let c = cell.trim();
    c.is_empty() || ["na", "nan", "null", "n/a"].contains(&c.to_ascii_lowercase().as_str())
}

impl Series {
    /// Reads `target` and `features` (by header name) from the CSV file at `path`. A ragged row, a
    /// non-numeric value or (with [`MissingPolicy::Error`]) a missing one is an error naming the
    /// file, the line and the column.
    pub fn from_csv(
        path: &Path,
        target: &str,
        features: &[&str],
        missing: MissingPolicy,
    ) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_csv_reader(path, file, target, features, missing)
    }

    /// [`Series::from_csv`] of a file's bytes already in memory; `path` only names the file in
    /// errors.
    pub fn from_csv_bytes(
        path: &Path,
        bytes: &[u8],
        target: &str,
        features: &[&str],
        missing: MissingPolicy,
    ) -> Result<Self> {
        Self::from_csv_reader(path, bytes, target, features, missing)
    }

    fn from_csv_reader(
        path: &Path,
        input: impl std::io::Read,
        target: &str,
        features: &[&str],
        missing: MissingPolicy,
    ) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
        let header = reader
            .headers()
            .map_err(|e| Error::file(path, format!("cannot read the header: {e}")))?
            .clone();
        if header.is_empty() || header.iter().all(|h| h.trim().is_empty()) {
            return Err(Error::file(path, "the file is empty (no header)"));
        }
        let mut names = vec![target];
        names.extend(features.iter().copied().filter(|f| *f != target));
        let indices = names
            .iter()
            .map(|name| {
                header
                    .iter()
                    .position(|h| h.trim() == *name)
                    .ok_or_else(|| {
                        Error::parse(
                            path,
                            1,
                            format!(
                                "no column '{name}' in the header (columns: {})",
                                header.iter().collect::<Vec<_>>().join(", ")
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut values: Vec<Vec<f64>> = Vec::new();
        let mut last: Vec<Option<f64>> = vec![None; names.len()];
        let mut missing_handled = 0;
        for record in reader.records() {
            let record = record.map_err(|e| {
                let line = e.position().map_or(0, |p| p.line() as usize);
                Error::parse(path, line, format!("{e}"))
            })?;
            let line = record.position().map_or(0, |p| p.line() as usize);
            if record.len() == 1 && record[0].trim().is_empty() {
                continue;
            }
            if record.len() != header.len() {
                return Err(Error::parse(
                    path,
                    line,
                    format!(
                        "ragged row: {} field{}, the header has {}",
                        record.len(),
                        if record.len() == 1 { "" } else { "s" },
                        header.len()
                    ),
                ));
            }
            let mut row = Vec::with_capacity(indices.len());
            let mut drop = false;
            for (k, &i) in indices.iter().enumerate() {
                let cell = &record[i];
                let v = if is_missing(cell) {
                    missing_handled += 1;
                    match missing {
                        MissingPolicy::Error => {
                            return Err(Error::parse(
                                path,
                                line,
                                format!("missing value in column '{}' (choose a missing-value policy to fill or drop it)", names[k]),
                            ))
                        }
                        MissingPolicy::Zero => 0.0,
                        MissingPolicy::ForwardFill => last[k].ok_or_else(|| {
                            Error::parse(path, line, format!("missing value in column '{}' with no earlier value to carry forward", names[k]))
                        })?,
                        MissingPolicy::DropRow => {
                            drop = true;
                            0.0
                        }
                    }
                } else {
                    let v: f64 = cell.trim().parse().map_err(|_| {
                        Error::parse(
                            path,
                            line,
                            format!("non-numeric value '{cell}' in column '{}'", names[k]),
                        )
                    })?;
                    if !v.is_finite() {
                        return Err(Error::parse(
                            path,
                            line,
                            format!("non-finite value '{cell}' in column '{}'", names[k]),
                        ));
                    }
                    v
                };
                last[k] = Some(v);
                row.push(v);
            }
            if !drop {
                values.push(row);
            }
        }
        if values.is_empty() {
            return Err(Error::file(path, "no data rows"));
        }
        Ok(Self {
            columns: names.iter().map(|s| s.to_string()).collect(),
            values,
            missing_handled,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Per-column z-score normalisation `(x - mean) / std`, fitted on training rows only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    /// Column means.
    pub mean: Vec<f64>,
    /// Column standard deviations (1 where a column is constant).
    pub std: Vec<f64>,
}

impl Normalizer {
    /// Fits on `rows` (the training part).
    pub fn fit(rows: &[Vec<f64>]) -> Result<Self> {
        let Some(first) = rows.first() else {
            return Err(Error::Invalid(
                "cannot fit a normaliser on zero rows".into(),
            ));
        };
        let n = rows.len() as f64;
        let cols = first.len();
        let mean: Vec<f64> = (0..cols)
            .map(|c| rows.iter().map(|r| r[c]).sum::<f64>() / n)
            .collect();
        let std = (0..cols)
            .map(|c| {
                let var = rows.iter().map(|r| (r[c] - mean[c]).powi(2)).sum::<f64>() / n;
                if var > 0.0 {
                    var.sqrt()
                } else {
                    1.0
                }
            })
            .collect();
        Ok(Self { mean, std })
    }

    /// Normalises one value of column `col`.
    pub fn apply(&self, col: usize, x: f64) -> f64 {
        (x - self.mean[col]) / self.std[col]
    }

    /// Undoes [`Normalizer::apply`].
    pub fn invert(&self, col: usize, z: f64) -> f64 {
        z * self.std[col] + self.mean[col]
    }
}

/// Forecasting windows: for each start t, inputs are rows t..t+look_back (all columns,
/// normalised) and targets the next `horizon` values of the target column (normalised).
#[derive(Debug, Clone)]
pub struct SeriesWindows {
    /// `(windows, look_back, columns)` f32.
    pub inputs: Tensor,
    /// `(windows, horizon)` f32.
    pub targets: Tensor,
}

impl SeriesWindows {
    /// Windows over `rows` with `norm` applied. Fails when there are fewer rows than
    /// `look_back + horizon`.
    pub fn new(
        rows: &[Vec<f64>],
        norm: &Normalizer,
        look_back: usize,
        horizon: usize,
        device: &Device,
    ) -> Result<Self> {
        if look_back == 0 || horizon == 0 {
            return Err(Error::Invalid(format!(
                "look_back and horizon must be > 0, got {look_back} and {horizon}"
            )));
        }
        if rows.len() < look_back + horizon {
            return Err(Error::Invalid(format!(
                "{} rows are too few for a look-back of {look_back} and a horizon of {horizon}",
                rows.len()
            )));
        }
        let cols = rows[0].len();
        let n = rows.len() - look_back - horizon + 1;
        let mut inputs = Vec::with_capacity(n * look_back * cols);
        let mut targets = Vec::with_capacity(n * horizon);
        for t in 0..n {
            for row in &rows[t..t + look_back] {
                inputs.extend(
                    row.iter()
                        .enumerate()
                        .map(|(c, x)| norm.apply(c, *x) as f32),
                );
            }
            for row in &rows[t + look_back..t + look_back + horizon] {
                targets.push(norm.apply(0, row[0]) as f32);
            }
        }
        Ok(Self {
            inputs: Tensor::from_vec(inputs, (n, look_back, cols), device)?,
            targets: Tensor::from_vec(targets, (n, horizon), device)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::write_file;
    use super::*;

    const CSV: &str = "\"Month\",\"Passengers\",\"Temp\"\n\"1949-01\",112,1.5\n\"1949-02\",,2.5\n\"1949-03\",132,NA\n\"1949-04\",129,4\n";

    #[test]
    fn reads_columns_with_each_missing_policy() {
        let (_d, p) = write_file("air.csv", CSV.as_bytes());
        let err = Series::from_csv(&p, "Passengers", &["Temp"], MissingPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("air.csv:3:") && err.contains("missing value in column 'Passengers'"),
            "{err}"
        );
        let s = Series::from_csv(&p, "Passengers", &["Temp"], MissingPolicy::ForwardFill).unwrap();
        assert_eq!(
            s.values,
            vec![
                vec![112.0, 1.5],
                vec![112.0, 2.5],
                vec![132.0, 2.5],
                vec![129.0, 4.0]
            ]
        );
        assert_eq!(s.missing_handled, 2);
        let z = Series::from_csv(&p, "Passengers", &["Temp"], MissingPolicy::Zero).unwrap();
        assert_eq!(z.values[1], vec![0.0, 2.5]);
        let d = Series::from_csv(&p, "Passengers", &[], MissingPolicy::DropRow).unwrap();
        assert_eq!(d.values, vec![vec![112.0], vec![132.0], vec![129.0]]);
        assert_eq!(d.columns, vec!["Passengers"]);
    }

    #[test]
    fn bad_files_name_line_and_column() {
        let (_d, p) = write_file("s.csv", b"a,b\n1,2\n3\n");
        let err = Series::from_csv(&p, "a", &["b"], MissingPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.csv:3:") && err.contains("ragged"), "{err}");
        let (_d, p) = write_file("s.csv", b"a,b\n1,2\n3,x\n");
        let err = Series::from_csv(&p, "a", &["b"], MissingPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.csv:3:") && err.contains("non-numeric value 'x' in column 'b'"),
            "{err}"
        );
        let err = Series::from_csv(&p, "c", &[], MissingPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("s.csv:1:") && err.contains("no column 'c'"),
            "{err}"
        );
        let (_d, p) = write_file("s.csv", b"");
        let err = Series::from_csv(&p, "a", &[], MissingPolicy::Error)
            .unwrap_err()
            .to_string();
        assert!(err.contains("s.csv") && err.contains("empty"), "{err}");
        let (_d, p) = write_file("s.csv", b"a\n,\n");
        assert!(Series::from_csv(&p, "a", &[], MissingPolicy::ForwardFill).is_err());
    }

    #[test]
    fn normaliser_fits_training_rows_only_and_windows() {
        let rows: Vec<Vec<f64>> = (0..10).map(|i| vec![i as f64, 2.0]).collect();
        let norm = Normalizer::fit(&rows[..5]).unwrap();
        assert_eq!(norm.mean, vec![2.0, 2.0]);
        assert!((norm.std[0] - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(norm.std[1], 1.0, "constant column");
        assert!((norm.invert(0, norm.apply(0, 7.0)) - 7.0).abs() < 1e-12);
        let w = SeriesWindows::new(&rows, &norm, 3, 2, &Device::Cpu).unwrap();
        assert_eq!(w.inputs.dims(), &[6, 3, 2]);
        assert_eq!(w.targets.dims(), &[6, 2]);
        let t = w.targets.to_vec2::<f32>().unwrap();
        assert!((t[0][0] as f64 - norm.apply(0, 3.0)).abs() < 1e-6);
        assert!(SeriesWindows::new(&rows[..4], &norm, 3, 2, &Device::Cpu).is_err());
    }
}

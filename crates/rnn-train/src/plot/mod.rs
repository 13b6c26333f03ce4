//! Line charts and heatmaps, each written as a PNG and an SVG ([`plotters`]).
//!
//! - [`save_chart`] / [`save_panels`]: one or several line charts ([`Chart`]) in one image;
//! - [`learning_curves`]: the `learning_curves.png/.svg` every training run writes;
//! - [`gradient_norms`]: `||dL/dh_t||` by time step on a log scale (see
//!   [`crate::diagnostics::hidden_state_gradient_norms`]);
//! - [`heatmap`]: a matrix such as attention weights, with row and column labels.
//!
//! Every function takes a `stem` and writes `{stem}.png` and `{stem}.svg` (the extensions are
//! appended, so a stem such as `runs/v1.2/curves` keeps its dots); it returns both paths. The
//! parent directory must exist; each file is written to a temporary name next to it and then
//! renamed, so a reader never sees half a plot. Write errors name the file.
//!
//! Text is drawn with DejaVu Sans, embedded in the crate (`assets/DejaVuSans.ttf`, Bitstream Vera
//! licence, see `assets/DejaVuSans.LICENSE.txt`), so plots render the same on machines without
//! system fonts. The PNG is encoded here (zlib from `flate2`), the SVG by plotters.

mod drawing;
mod layout;
mod output;
#[cfg(test)]
mod tests;

use crate::{Error, Result};
use drawing::{Figure, HeatmapData};
use layout::{capitalise, min_max, prepare_chart, shorten};
use output::save_figure;
use std::path::{Path, PathBuf};

/// Pixel size of one line-chart panel; [`save_panels`] lays panels out two per row.
pub const PANEL_SIZE: (u32, u32) = (800, 500);

/// Pixel size of a [`heatmap`] image.
pub const HEATMAP_SIZE: (u32, u32) = (800, 600);

/// One line of a [`Chart`]: `(x, y)` points in drawing order.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry (an empty name gets no legend entry).
    pub name: String,
    /// `(x, y)` points; points with a non-finite coordinate (and, on a log scale, `y <= 0`) are
    /// skipped.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series named `name` with `points`.
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.into(),
            points,
        }
    }
}

/// A line chart: title, axis labels, y scale and the series to draw.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// Logarithmic y axis (points with `y <= 0` are skipped).
    pub log_y: bool,
    /// The lines, each in its own colour.
    pub series: Vec<Series>,
}

/// Writes `chart` as `{stem}.png` (800x500) and `{stem}.svg`; returns both paths.
///
/// Non-finite points (and non-positive `y` on a log scale) are skipped; a chart without a single
/// plottable point is an [`Error::Invalid`]. Ranges are padded a little; a single point or a
/// constant series gets a range around its value.
pub fn save_chart(chart: &Chart, stem: &Path) -> Result<Vec<PathBuf>> {
    save_panels(std::slice::from_ref(chart), stem)
}

/// Writes several charts in one image, two panels per row (800x500 each), as `{stem}.png` and
/// `{stem}.svg`; returns both paths.
///
/// Every chart must have a plottable point (see [`save_chart`]); the error names the panel.
pub fn save_panels(charts: &[Chart], stem: &Path) -> Result<Vec<PathBuf>> {
    save_panels_impl(charts, false, stem)
}

/// [`save_panels`], optionally with one x range (the union) for all panels.
fn save_panels_impl(charts: &[Chart], share_x: bool, stem: &Path) -> Result<Vec<PathBuf>> {
    if charts.is_empty() {
        return Err(Error::Invalid("plot: no charts to draw".into()));
    }
    let mut prepared = charts
        .iter()
        .enumerate()
        .map(|(i, chart)| {
            prepare_chart(chart).map_err(|e| match e {
                Error::Invalid(msg) if charts.len() > 1 => {
                    Error::Invalid(format!("panel {} of {}: {msg}", i + 1, charts.len()))
                }
                e => e,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if share_x {
        let x = prepared
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.x.0), b.max(p.x.1))
            });
        for p in &mut prepared {
            p.x = x;
        }
    }
    let cols = prepared.len().min(2);
    let rows = prepared.len().div_ceil(2);
    let size = (PANEL_SIZE.0 * cols as u32, PANEL_SIZE.1 * rows as u32);
    save_figure(
        &Figure::Panels {
            charts: prepared,
            rows,
            cols,
        },
        size,
        stem,
    )
}

/// Writes the learning curves of a run as `{stem}.png` and `{stem}.svg` (x = step).
///
/// The first panel shows the train and valid loss; if `metric` is `Some((name, points))` and has
/// a plottable point, a second panel beside it shows that metric (e.g. `"accuracy"`,
/// `"perplexity"`), on a log scale when its values are positive and span a factor of 100 or more
/// (early perplexities). An empty `valid_loss` is fine (no validation yet), but the loss panel
/// needs at least one finite point.
pub fn learning_curves(
    train_loss: &[(f64, f64)],
    valid_loss: &[(f64, f64)],
    metric: Option<(&str, &[(f64, f64)])>,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let mut charts = vec![Chart {
        title: "Loss".into(),
        x_label: "step".into(),
        y_label: "loss".into(),
        log_y: false,
        series: vec![
            Series::new("train", train_loss.to_vec()),
            Series::new("valid", valid_loss.to_vec()),
        ],
    }];
    if let Some((name, points)) = metric {
        let finite: Vec<f64> = points
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(_, y)| y)
            .collect();
        if !finite.is_empty() {
            let (lo, hi) = min_max(finite.iter().copied());
            let log_y = lo > 0.0 && hi / lo >= 100.0;
            charts.push(Chart {
                title: capitalise(name),
                x_label: "step".into(),
                y_label: name.into(),
                log_y,
                series: vec![Series::new(format!("valid {name}"), points.to_vec())],
            });
        }
    }
    save_panels_impl(&charts, true, stem)
}

/// Title of the [`gradient_norms`] chart.
pub const GRADIENT_NORMS_TITLE: &str = "Gradient norm ||dL/dh_t|| by time step";

/// Writes `||dL/dh_t||` against time step `t` on a log-scale y axis, one line per series
/// (e.g. `"rnn-tanh"`, `"lstm"`, `"gru"`, `"rnn-tanh clipped"`), as `{stem}.png` and
/// `{stem}.svg`. Zero and non-finite norms are skipped (they have no place on a log axis).
pub fn gradient_norms(series: &[Series], stem: &Path) -> Result<Vec<PathBuf>> {
    let chart = Chart {
        title: GRADIENT_NORMS_TITLE.into(),
        x_label: "time step t".into(),
        y_label: "||dL/dh_t||".into(),
        log_y: true,
        series: series.to_vec(),
    };
    save_chart(&chart, stem)
}

/// Writes `matrix` as a heatmap (800x600) to `{stem}.png` and `{stem}.svg`, e.g. attention
/// weights with rows = target tokens and columns = source tokens.
///
/// Colours follow a viridis-like scale from the matrix's minimum (dark) to its maximum (yellow),
/// shown by a colour bar; non-finite cells are grey. `row_labels` / `col_labels` are either empty
/// (indices are shown) or have one entry per row / column; labels are thinned out when the cells
/// get too small for them, and values are printed in the cells when they are large enough.
/// Errors: an empty matrix, ragged rows, a label count mismatch, or no finite value.
///
/// Every cell is one SVG rectangle (about 100 bytes), so pool very large matrices (beyond a few
/// hundred rows or columns) before plotting them.
pub fn heatmap(
    matrix: &[Vec<f32>],
    row_labels: &[String],
    col_labels: &[String],
    title: &str,
    stem: &Path,
) -> Result<Vec<PathBuf>> {
    let rows = matrix.len();
    let cols = matrix.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return Err(Error::Invalid(format!(
            "heatmap '{title}': the matrix is empty ({rows} rows, {cols} columns)"
        )));
    }
    if let Some((i, row)) = matrix.iter().enumerate().find(|(_, r)| r.len() != cols) {
        return Err(Error::Invalid(format!(
            "heatmap '{title}': ragged matrix: row {i} has {} values, row 0 has {cols}",
            row.len()
        )));
    }
    let labels = |given: &[String], n: usize, what: &str| -> Result<Vec<String>> {
        match given.len() {
            0 => Ok((0..n).map(|i| i.to_string()).collect()),
            len if len == n => Ok(given.iter().map(|s| shorten(s, 24)).collect()),
            len => Err(Error::Invalid(format!(
                "heatmap '{title}': {len} {what} labels for {n} {what}s"
            ))),
        }
    };
    let row_labels = labels(row_labels, rows, "row")?;
    let col_labels = labels(col_labels, cols, "column")?;
    let finite = matrix.iter().flatten().filter(|v| v.is_finite());
    if finite.clone().next().is_none() {
        return Err(Error::Invalid(format!(
            "heatmap '{title}': no finite value in the {rows}x{cols} matrix"
        )));
    }
    let (lo, hi) = min_max(finite.map(|&v| f64::from(v)));
    let data = HeatmapData {
        matrix,
        rows,
        cols,
        row_labels,
        col_labels,
        title,
        lo,
        hi,
    };
    save_figure(&Figure::Heatmap(data), HEATMAP_SIZE, stem)
}

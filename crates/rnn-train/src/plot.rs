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

use crate::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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

// ---------------------------------------------------------------------------------------------
// Preparation: filtering, ranges, legend placement.

/// A chart with its plottable points and padded ranges.
struct PreparedChart<'a> {
    chart: &'a Chart,
    /// Legend label (empty: none) and plottable points, per series.
    series: Vec<(String, Vec<(f64, f64)>)>,
    x: (f64, f64),
    /// Linear y range, or actual (positive) bounds on a log scale.
    y: (f64, f64),
    legend: SeriesLabelPosition,
}

fn prepare_chart(chart: &Chart) -> Result<PreparedChart<'_>> {
    let plottable =
        |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite() && (!chart.log_y || y > 0.0);
    let series: Vec<(String, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|s| {
            let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(plottable).collect();
            let label = if s.name.is_empty() || !pts.is_empty() {
                s.name.clone()
            } else {
                format!("{} (no data)", s.name)
            };
            (label, pts)
        })
        .collect();
    let all = || series.iter().flat_map(|(_, p)| p.iter().copied());
    if all().next().is_none() {
        let why = if chart.log_y {
            "no finite positive point to plot on a log scale"
        } else {
            "no finite point to plot"
        };
        return Err(Error::Invalid(format!("chart '{}': {why}", chart.title)));
    }
    let x = pad_linear(min_max(all().map(|p| p.0)), 0.02);
    let ty = |y: f64| if chart.log_y { y.log10() } else { y };
    let (y0, y1) = min_max(all().map(|p| ty(p.1)));
    let y = if chart.log_y {
        // Whole decades, so that the axis always has labelled powers of ten.
        let (a, b) = pad_linear((y0, y1), 0.05);
        (10f64.powf(a.floor()), 10f64.powf(b.ceil()))
    } else {
        pad_linear((y0, y1), 0.05)
    };
    let normalise = |(px, py): (f64, f64)| {
        let (ylo, yhi) = (ty(y.0), ty(y.1));
        ((px - x.0) / (x.1 - x.0), (ty(py) - ylo) / (yhi - ylo))
    };
    let legend = legend_position(all().map(normalise));
    Ok(PreparedChart {
        chart,
        series,
        x,
        y,
        legend,
    })
}

/// Labelled and light tick values for a log axis from `lo` to `hi` (both powers of ten): up to
/// about ten labels (1-2-5 or 1-3 per decade when the range is short, every k-th power of ten
/// when it is long), light lines at 1..9 per decade when there are few decades.
fn log_ticks((lo, hi): (f64, f64)) -> (Vec<f64>, Vec<f64>) {
    let a = lo.log10().round() as i32;
    let b = hi.log10().round() as i32;
    let decades = (b - a).max(1);
    let mantissas: &[f64] = match decades {
        0..=2 => &[1.0, 2.0, 5.0],
        3..=4 => &[1.0, 3.0],
        _ => &[1.0],
    };
    let step = if decades > 8 { (decades + 7) / 8 } else { 1 };
    let in_range = |v: f64| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9);
    let mut bold = Vec::new();
    for e in (a..=b).step_by(step as usize) {
        for &m in mantissas {
            let v = m * 10f64.powi(e);
            if in_range(v) {
                bold.push(v);
            }
        }
    }
    let mut light = Vec::new();
    for e in a..=b {
        let ms: &[f64] = if decades <= 6 {
            &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
        } else {
            &[1.0]
        };
        for &m in ms {
            let v = m * 10f64.powi(e);
            if in_range(v) {
                light.push(v);
            }
        }
    }
    (bold, light)
}

/// `(min, max)` of a non-empty iterator.
fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    })
}

/// Pads `[lo, hi]` by `frac` of its width on each side; a point gets a range around it.
fn pad_linear((lo, hi): (f64, f64), frac: f64) -> (f64, f64) {
    let width = hi - lo;
    if width > 0.0 && width.is_finite() {
        let pad = width * frac;
        let (a, b) = (lo - pad, hi + pad);
        if b > a {
            return (a, b);
        }
    }
    let half = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
    (lo - half, lo + half)
}

/// The legend corner with the fewest data points under it (points in `[0, 1]^2`, y up).
fn legend_position(points: impl Iterator<Item = (f64, f64)>) -> SeriesLabelPosition {
    // Upper right, upper left, lower right, lower left: in order of preference.
    let mut counts = [0usize; 4];
    for (x, y) in points {
        let (right, left) = (x > 0.6, x < 0.4);
        let (upper, lower) = (y > 0.65, y < 0.35);
        counts[0] += usize::from(right && upper);
        counts[1] += usize::from(left && upper);
        counts[2] += usize::from(right && lower);
        counts[3] += usize::from(left && lower);
    }
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    [
        SeriesLabelPosition::UpperRight,
        SeriesLabelPosition::UpperLeft,
        SeriesLabelPosition::LowerRight,
        SeriesLabelPosition::LowerLeft,
    ][best]
        .clone()
}

/// `s` with its first letter upper-cased.
fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `s` cut to `max` characters (with an ellipsis).
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// A tick label: up to 4 significant digits, scientific notation for very large/small values.
fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".into()
        } else {
            v.to_string()
        };
    }
    if !(1e-3..1e6).contains(&a) {
        let s = format!("{v:.1e}");
        return s.replace(".0e", "e");
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Drawing.

/// Family name the embedded font is registered under (plotters' default family, so text that
/// plotters styles itself uses it too). Sizes used with it are even: plotters 0.3.7 places each
/// glyph at `size / 2 + top` truncated to an integer, which at odd sizes lifts "." and "-" by a
/// pixel relative to the digits.
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Registers the embedded font under [`FONT`] (once per process).
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "plot: the embedded font (assets/DejaVuSans.ttf) could not be loaded".into(),
        ))
    }
}

/// Tableau-10 colours.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Series with at most this many points also get a dot per point (so a single point shows).
const MARKER_MAX_POINTS: usize = 60;

struct HeatmapData<'a> {
    matrix: &'a [Vec<f32>],
    rows: usize,
    cols: usize,
    row_labels: Vec<String>,
    col_labels: Vec<String>,
    title: &'a str,
    lo: f64,
    hi: f64,
}

enum Figure<'a> {
    Panels {
        charts: Vec<PreparedChart<'a>>,
        rows: usize,
        cols: usize,
    },
    Heatmap(HeatmapData<'a>),
}

type DrawResult = std::result::Result<(), String>;

fn de(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> DrawResult {
    root.fill(&WHITE).map_err(de)?;
    match figure {
        Figure::Panels { charts, rows, cols } => {
            for (area, chart) in root.split_evenly((*rows, *cols)).iter().zip(charts) {
                draw_chart(area, chart)?;
            }
            Ok(())
        }
        Figure::Heatmap(data) => draw_heatmap(root, data),
    }
}

fn draw_chart<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &PreparedChart) -> DrawResult {
    if p.chart.log_y {
        let (bold, light) = log_ticks(p.y);
        let y_spec = (p.y.0..p.y.1)
            .log_scale()
            .with_key_points(bold)
            .with_light_points(light);
        draw_chart_in(area, p, y_spec)
    } else {
        draw_chart_in(area, p, p.y.0..p.y.1)
    }
}

fn draw_chart_in<DB, Y>(area: &DrawingArea<DB, Shift>, p: &PreparedChart, y_spec: Y) -> DrawResult
where
    DB: DrawingBackend,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(12)
        .margin_right(24)
        .x_label_area_size(48)
        .y_label_area_size(76);
    if !p.chart.title.is_empty() {
        builder.caption(&p.chart.title, (FONT, 22));
    }
    let mut ctx = builder
        .build_cartesian_2d(p.x.0..p.x.1, y_spec)
        .map_err(de)?;
    let x_fmt = |v: &f64| fmt_num(*v);
    let y_fmt = |v: &f64| fmt_num(*v);
    ctx.configure_mesh()
        .x_desc(&p.chart.x_label)
        .y_desc(&p.chart.y_label)
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(238, 238, 238))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()
        .map_err(de)?;
    for (i, (label, pts)) in p.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let style = ShapeStyle {
            color: color.to_rgba(),
            filled: false,
            stroke_width: 2,
        };
        let anno = ctx
            .draw_series(LineSeries::new(pts.iter().copied(), style))
            .map_err(de)?;
        if !label.is_empty() {
            anno.label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        if pts.len() <= MARKER_MAX_POINTS {
            ctx.draw_series(pts.iter().map(|&q| Circle::new(q, 3, color.filled())))
                .map_err(de)?;
        }
    }
    if p.series.iter().any(|(label, _)| !label.is_empty()) {
        ctx.configure_series_labels()
            .position(p.legend.clone())
            .margin(10)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()
            .map_err(de)?;
    }
    Ok(())
}

/// Viridis sampled at 0, 0.1, ..., 1.
const VIRIDIS: [(u8, u8, u8); 11] = [
    (68, 1, 84),
    (72, 36, 117),
    (65, 68, 135),
    (53, 95, 141),
    (42, 120, 142),
    (33, 145, 140),
    (34, 168, 132),
    (68, 191, 112),
    (122, 209, 81),
    (189, 223, 38),
    (253, 231, 37),
];

/// The viridis colour at `t` in `[0, 1]` (linear interpolation between samples).
fn viridis(t: f64) -> RGBColor {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.5
    };
    let pos = t * (VIRIDIS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(VIRIDIS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |u: u8, v: u8| (f64::from(u) + (f64::from(v) - f64::from(u)) * f).round() as u8;
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// Grey for non-finite heatmap cells.
const MISSING: RGBColor = RGBColor(200, 200, 200);

fn draw_heatmap<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, h: &HeatmapData) -> DrawResult {
    let (w, ht) = root.dim_in_pixel();
    let (w, ht) = (w as i32, ht as i32);
    let label_style: TextStyle = (FONT, 14).into_font().color(&BLACK);
    let text_width = |s: &str| -> std::result::Result<i32, String> {
        Ok(root.estimate_text_size(s, &label_style).map_err(de)?.0 as i32)
    };
    let mut row_w = 0;
    for s in &h.row_labels {
        row_w = row_w.max(text_width(s)?);
    }
    let mut col_w = 0;
    for s in &h.col_labels {
        col_w = col_w.max(text_width(s)?);
    }
    // Colour-bar ticks: five values from min to max (one for a constant matrix), shown rounded to
    // 1/1000 of the span so that a middle tick near 0 reads "0", not "3.1e-6". `t` is the position
    // on the bar, 0 at the bottom.
    let span = h.hi - h.lo;
    let ticks: Vec<(f64, String)> = if span > 0.0 {
        let quantum = 10f64.powf(span.log10().floor() - 3.0);
        (0..5)
            .map(|i| {
                let t = f64::from(i) / 4.0;
                let v = h.lo + span * t;
                (t, fmt_num((v / quantum).round() * quantum))
            })
            .collect()
    } else {
        vec![(0.5, fmt_num(h.lo))]
    };
    let mut bar_label_w = 0;
    for (_, label) in &ticks {
        bar_label_w = bar_label_w.max(text_width(label)?);
    }

    let top = if h.title.is_empty() { 16 } else { 52 };
    let left = 12 + row_w.min(220) + 8;
    let bottom = 12 + col_w.min(160) + 8;
    let bar_area = 24 + 18 + 6 + bar_label_w + 12;
    let avail_w = f64::from((w - left - bar_area - 12).max(10));
    let avail_h = f64::from((ht - top - bottom).max(10));
    let cell = (avail_w / h.cols as f64)
        .min(avail_h / h.rows as f64)
        .min(60.0);
    let grid_w = cell * h.cols as f64;
    let grid_h = cell * h.rows as f64;
    // Centre title, grid, labels and colour bar in the image.
    let content_w = f64::from(left) + grid_w + f64::from(bar_area);
    let content_h = f64::from(top + bottom) + grid_h.max(120.0);
    let dx = ((f64::from(w) - content_w) / 2.0).max(0.0);
    let dy = ((f64::from(ht) - content_h) / 2.0).max(0.0).round() as i32;
    let gx = f64::from(left) + dx;
    let gy = f64::from(top + dy);
    let px = |j: usize| (gx + j as f64 * cell).round() as i32;
    let py = |i: usize| (gy + i as f64 * cell).round() as i32;

    if !h.title.is_empty() {
        let style = (FONT, 22)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        root.draw_text(h.title, &style, (w / 2, 14 + dy))
            .map_err(de)?;
    }

    // Cells.
    let norm = |v: f64| if span > 0.0 { (v - h.lo) / span } else { 0.5 };
    let show_values = cell >= 34.0 && h.rows * h.cols <= 400;
    let value_style = |c: RGBColor| {
        let lum = 0.299 * f64::from(c.0) + 0.587 * f64::from(c.1) + 0.114 * f64::from(c.2);
        let text = if lum > 140.0 { BLACK } else { WHITE };
        (FONT, 12)
            .into_font()
            .color(&text)
            .pos(Pos::new(HPos::Center, VPos::Center))
    };
    for (i, row) in h.matrix.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let v = f64::from(v);
            let color = if v.is_finite() {
                viridis(norm(v))
            } else {
                MISSING
            };
            let (x0, y0, x1, y1) = (px(j), py(i), px(j + 1), py(i + 1));
            root.draw(&Rectangle::new(
                [(x0, y0), (x1.max(x0 + 1), y1.max(y0 + 1))],
                color.filled(),
            ))
            .map_err(de)?;
            if show_values && v.is_finite() {
                let text = format!("{v:.2}");
                root.draw_text(&text, &value_style(color), ((x0 + x1) / 2, (y0 + y1) / 2))
                    .map_err(de)?;
            }
        }
    }
    root.draw(&Rectangle::new(
        [(px(0), py(0)), (px(h.cols), py(h.rows))],
        ShapeStyle::from(&RGBColor(120, 120, 120)).stroke_width(1),
    ))
    .map_err(de)?;

    // Labels, thinned out when cells are smaller than the text.
    let every = |min_px: f64| (min_px / cell).ceil().max(1.0) as usize;
    let row_style = label_style.pos(Pos::new(HPos::Right, VPos::Center));
    for (i, label) in h.row_labels.iter().enumerate().step_by(every(14.0)) {
        let y = (gy + (i as f64 + 0.5) * cell).round() as i32;
        root.draw_text(label, &row_style, (px(0) - 6, y))
            .map_err(de)?;
    }
    // Column labels read top to bottom, starting just below the grid.
    let col_style = label_style
        .transform(FontTransform::Rotate90)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (j, label) in h.col_labels.iter().enumerate().step_by(every(14.0)) {
        let x = (gx + (j as f64 + 0.5) * cell).round() as i32;
        root.draw_text(label, &col_style, (x, py(h.rows) + 6))
            .map_err(de)?;
    }

    // Colour bar: as tall as the grid (at least 120 px), maximum at the top.
    let bx0 = px(h.cols) + 24;
    let bx1 = bx0 + 18;
    let by0 = py(0);
    let by1 = (py(h.rows)).max(by0 + 120).min(ht - 8);
    let bar_h = (by1 - by0).max(1);
    for k in 0..bar_h {
        let t = 1.0 - f64::from(k) / f64::from((bar_h - 1).max(1));
        root.draw(&Rectangle::new(
            [(bx0, by0 + k), (bx1, by0 + k + 1)],
            viridis(t).filled(),
        ))
        .map_err(de)?;
    }
    root.draw(&Rectangle::new(
        [(bx0, by0), (bx1, by1)],
        ShapeStyle::from(&RGBColor(120, 120, 120)).stroke_width(1),
    ))
    .map_err(de)?;
    let tick_style = label_style.pos(Pos::new(HPos::Left, VPos::Center));
    for (t, label) in &ticks {
        let y = by1 - (t * f64::from(bar_h)).round() as i32;
        root.draw(&PathElement::new(vec![(bx1, y), (bx1 + 4, y)], BLACK))
            .map_err(de)?;
        root.draw_text(label, &tick_style, (bx1 + 6, y))
            .map_err(de)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Output.

/// `stem` with `.{ext}` appended (not replacing an existing extension).
fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

fn save_figure(figure: &Figure, (w, h): (u32, u32), stem: &Path) -> Result<Vec<PathBuf>> {
    ensure_font()?;
    let png_path = with_ext(stem, "png");
    let svg_path = with_ext(stem, "svg");

    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_figure(&root, figure)
            .and_then(|()| root.present().map_err(de))
            .map_err(|e| Error::file(&png_path, format!("cannot draw the plot: {e}")))?;
    }
    let png = encode_png(&rgb, w, h).map_err(|source| Error::Io {
        path: png_path.clone(),
        source,
    })?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        draw_figure(&root, figure)
            .and_then(|()| root.present().map_err(de))
            .map_err(|e| Error::file(&svg_path, format!("cannot draw the plot: {e}")))?;
    }

    write_atomic(&png_path, &png)?;
    write_atomic(&svg_path, svg.as_bytes())?;
    Ok(vec![png_path, svg_path])
}

/// Writes `bytes` to a temporary file next to `path`, then renames it to `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = with_ext(path, &format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(e)
    })
}

/// PNG (8-bit RGB, no interlace) of a `w` x `h` RGB buffer; rows use the "Sub" filter.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> std::io::Result<Vec<u8>> {
    let stride = w as usize * 3;
    debug_assert_eq!(rgb.len(), stride * h as usize);
    let mut raw = Vec::with_capacity((stride + 1) * h as usize);
    for row in rgb.chunks_exact(stride) {
        raw.push(1); // Sub: each byte minus the same channel of the pixel to its left.
        raw.extend_from_slice(&row[..3.min(stride)]);
        raw.extend(
            row.iter()
                .skip(3)
                .zip(row.iter())
                .map(|(&cur, &left)| cur.wrapping_sub(left)),
        );
    }
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&raw)?;
    let idat = z.finish()?;

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // depth 8, RGB, deflate, adaptive filters, no interlace

    let mut out = Vec::with_capacity(idat.len() + 64);
    out.extend_from_slice(&PNG_SIGNATURE);
    for (kind, data) in [
        (b"IHDR", &ihdr[..]),
        (b"IDAT", &idat[..]),
        (b"IEND", &[][..]),
    ] {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        out.extend_from_slice(kind);
        out.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        out.extend_from_slice(&crc.sum().to_be_bytes());
    }
    Ok(out)
}

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

#[cfg(test)]
mod tests {
    use super::*;
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
        let err =
            save_chart(&chart(vec![Series::new("x", vec![(1.0, f64::NAN)])]), &stem).unwrap_err();
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
}

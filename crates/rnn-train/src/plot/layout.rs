//! Layout: which points are plotted, the axis ranges and ticks, the legend position and the
//! text of labels.

use super::Chart;
use crate::{Error, Result};
use plotters::prelude::*;

/// A chart with its plottable points and padded ranges.
pub(super) struct PreparedChart<'a> {
    pub(super) chart: &'a Chart,
    /// Legend label (empty: none) and plottable points, per series.
    pub(super) series: Vec<(String, Vec<(f64, f64)>)>,
    pub(super) x: (f64, f64),
    /// Linear y range, or actual (positive) bounds on a log scale.
    pub(super) y: (f64, f64),
    pub(super) legend: SeriesLabelPosition,
}

pub(super) fn prepare_chart(chart: &Chart) -> Result<PreparedChart<'_>> {
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
pub(super) fn log_ticks((lo, hi): (f64, f64)) -> (Vec<f64>, Vec<f64>) {
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
pub(super) fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
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
pub(super) fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// `s` cut to `max` characters (with an ellipsis).
pub(super) fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let mut out: String = s.chars().take(max - 1).collect();
        out.push('…');
        out
    }
}

/// A tick label: up to 4 significant digits, scientific notation for very large/small values.
pub(super) fn fmt_num(v: f64) -> String {
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

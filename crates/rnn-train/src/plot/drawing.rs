//! Drawing a prepared chart or a heatmap on a plotters backend, with the embedded font.

use super::layout::{fmt_num, log_ticks, PreparedChart};
use crate::{Error, Result};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::sync::OnceLock;

/// Family name the embedded font is registered under (plotters' default family, so text that
/// plotters styles itself uses it too). Sizes used with it are even: plotters 0.3.7 places each
/// glyph at `size / 2 + top` truncated to an integer, which at odd sizes lifts "." and "-" by a
/// pixel relative to the digits.
const FONT: &str = "sans-serif";
static FONT_BYTES: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");

/// Registers the embedded font under [`FONT`] (once per process).
pub(super) fn ensure_font() -> Result<()> {
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
pub(super) const PALETTE: [RGBColor; 10] = [
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

pub(super) struct HeatmapData<'a> {
    pub(super) matrix: &'a [Vec<f32>],
    pub(super) rows: usize,
    pub(super) cols: usize,
    pub(super) row_labels: Vec<String>,
    pub(super) col_labels: Vec<String>,
    pub(super) title: &'a str,
    pub(super) lo: f64,
    pub(super) hi: f64,
}

pub(super) enum Figure<'a> {
    Panels {
        charts: Vec<PreparedChart<'a>>,
        rows: usize,
        cols: usize,
    },
    Heatmap(HeatmapData<'a>),
}

type DrawResult = std::result::Result<(), String>;

pub(super) fn de(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub(super) fn draw_figure<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    figure: &Figure,
) -> DrawResult {
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
pub(super) fn viridis(t: f64) -> RGBColor {
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
pub(super) const MISSING: RGBColor = RGBColor(200, 200, 200);

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

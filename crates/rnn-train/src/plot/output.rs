//! Output: each figure rendered to PNG (encoded here) and SVG, written atomically.

use super::drawing::{de, draw_figure, ensure_font, Figure};
use crate::{Error, Result};
use plotters::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `stem` with `.{ext}` appended (not replacing an existing extension).
fn with_ext(stem: &Path, ext: &str) -> PathBuf {
    let mut s = stem.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

pub(super) fn save_figure(
    figure: &Figure,
    (w, h): (u32, u32),
    stem: &Path,
) -> Result<Vec<PathBuf>> {
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

pub(super) const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

//! MNIST in IDX format (optionally gzip-compressed), for sequential MNIST: each image's 28 rows
//! are the time steps, its 28 pixels per row the features.
//!
//! candle-datasets reads only uncompressed IDX files and brings a large dependency tree (hub,
//! parquet, image); the format is a 4-byte magic, big-endian sizes and raw bytes, so it is read
//! here directly, with every size checked against the file's length.

use crate::{Error, Result};
use candle_core::{Device, Tensor};
use std::io::Read;
use std::path::Path;

/// Images and labels.
#[derive(Debug, Clone)]
pub struct Mnist {
    /// `(n, rows, cols)` f32 in [0, 1].
    pub images: Tensor,
    /// `(n,)` u32 class ids 0-9.
    pub labels: Tensor,
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The `n` bytes `reader` gives (fewer at its end); errors are gzip errors of `path`.
fn read_up_to(path: &Path, reader: &mut dyn Read, n: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(n)
        .read_to_end(&mut out)
        .map_err(|e| Error::file(path, format!("not a valid gzip file: {e}")))?;
    Ok(out)
}

/// Parses an IDX file (plain, or gzip-compressed when it starts with the gzip magic bytes) with
/// magic number `magic` and `ndims` sizes: the sizes and the data bytes, whose count is checked
/// against the sizes. A gzip stream is decompressed only up to the size its header announces
/// (plus one byte, to detect extra data), so a small file cannot expand without bound.
fn parse_idx(
    path: &Path,
    raw: &[u8],
    magic: u32,
    ndims: usize,
    kind: &str,
) -> Result<(Vec<usize>, Vec<u8>)> {
    let mut gz;
    let mut plain = raw;
    let reader: &mut dyn Read = if raw.starts_with(&[0x1f, 0x8b]) {
        gz = flate2::read::GzDecoder::new(raw);
        &mut gz
    } else {
        &mut plain
    };
    let header_len = 4 + 4 * ndims;
    let header = read_up_to(path, reader, header_len as u64)?;
    if header.len() < header_len || be_u32(&header, 0) != magic {
        return Err(Error::file(
            path,
            format!("not an IDX {kind} file (expected magic number {magic})"),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| be_u32(&header, 4 + 4 * i) as usize)
        .collect();
    let want = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&w| w < usize::MAX)
        .ok_or_else(|| Error::file(path, format!("{kind} sizes overflow")))?;
    let data = read_up_to(path, reader, want as u64 + 1)?;
    if data.len() != want {
        let found = if data.len() > want {
            "more".to_string()
        } else {
            data.len().to_string()
        };
        let sizes = match dims.as_slice() {
            [n, rows, cols] => format!("{n} images of {rows}x{cols}"),
            _ => format!("{want} {kind}s"),
        };
        return Err(Error::file(
            path,
            format!(
                "header says {sizes} ({want} bytes), the file has {found} bytes of {kind} data"
            ),
        ));
    }
    Ok((dims, data))
}

/// Pixels of an IDX image file as `(n, rows, cols)` f32 in [0, 1].
fn image_tensor(path: &Path, bytes: &[u8], device: &Device) -> Result<Tensor> {
    let (dims, img) = parse_idx(path, bytes, 2051, 3, "image")?;
    let pixels: Vec<f32> = img.iter().map(|&p| p as f32 / 255.0).collect();
    Ok(Tensor::from_vec(
        pixels,
        (dims[0], dims[1], dims[2]),
        device,
    )?)
}

/// Reads an IDX image file (magic 2051) and its label file (magic 2049).
pub fn read_mnist(images: &Path, labels: &Path, device: &Device) -> Result<Mnist> {
    let image_bytes = read_file(images)?;
    let label_bytes = read_file(labels)?;
    parse_mnist(images, &image_bytes, labels, &label_bytes, device)
}

/// [`read_mnist`] of the two files' bytes already in memory (each plain or gzip-compressed);
/// the paths only name the files in errors.
pub fn parse_mnist(
    images: &Path,
    image_bytes: &[u8],
    labels: &Path,
    label_bytes: &[u8],
    device: &Device,
) -> Result<Mnist> {
    let image_tensor = image_tensor(images, image_bytes, device)?;
    let n = image_tensor.dim(0)?;
    let (_, lab) = parse_idx(labels, label_bytes, 2049, 1, "label")?;
    if lab.len() != n {
        return Err(Error::file(
            labels,
            format!("{} labels for {n} images", lab.len()),
        ));
    }
    if let Some(i) = lab.iter().position(|&l| l > 9) {
        return Err(Error::file(
            labels,
            format!("label {} of image {i} is not a digit 0-9", lab[i]),
        ));
    }
    let ids: Vec<u32> = lab.iter().map(|&l| l as u32).collect();
    Ok(Mnist {
        images: image_tensor,
        labels: Tensor::from_vec(ids, n, device)?,
    })
}

/// Reads an IDX image file (magic 2051, plain or gzip-compressed) without labels:
/// `(n, rows, cols)` f32 in [0, 1]. Errors name the file.
pub fn read_mnist_images(path: &Path, device: &Device) -> Result<Tensor> {
    image_tensor(path, &read_file(path)?, device)
}

/// [`read_mnist_images`] of a file's bytes already in memory; `path` only names the file in
/// errors.
pub fn parse_mnist_images(path: &Path, bytes: &[u8], device: &Device) -> Result<Tensor> {
    image_tensor(path, bytes, device)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::write_file;
    use super::*;
    use std::io::Write;

    fn idx_images(n: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [2051, n, rows, cols] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend_from_slice(pixels);
        v
    }

    fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = 2049u32.to_be_bytes().to_vec();
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    #[test]
    fn reads_plain_and_gzip_files() {
        let (_a, img) = write_file(
            "img.idx",
            &idx_images(2, 2, 3, &[0, 255, 51, 0, 0, 0, 1, 2, 3, 4, 5, 6]),
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&idx_labels(&[7, 3])).unwrap();
        let (_b, lab) = write_file("lab.idx.gz", &gz.finish().unwrap());
        let m = read_mnist(&img, &lab, &Device::Cpu).unwrap();
        assert_eq!(m.images.dims(), &[2, 2, 3]);
        assert_eq!(m.labels.to_vec1::<u32>().unwrap(), vec![7, 3]);
        assert_eq!(
            m.images.to_vec3::<f32>().unwrap()[0][0],
            vec![0.0, 1.0, 0.2]
        );
    }

    #[test]
    fn bad_files_are_named() {
        let (_a, img) = write_file("img.idx", &idx_images(2, 2, 3, &[0; 11]));
        let (_b, lab) = write_file("lab.idx", &idx_labels(&[1, 2]));
        let err = read_mnist(&img, &lab, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("img.idx") && err.contains("11 bytes"), "{err}");
        let (_c, img) = write_file("img.idx", &idx_images(2, 2, 3, &[0; 12]));
        let (_d, lab) = write_file("lab.idx", &idx_labels(&[1, 12]));
        let err = read_mnist(&img, &lab, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lab.idx") && err.contains("label 12"), "{err}");
        let err = read_mnist(&lab, &img, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("magic number 2051"), "{err}");
        let (_e, trunc) = write_file("t.gz", &[0x1f, 0x8b, 8, 0, 0]);
        let err = read_mnist(&trunc, &lab, &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(err.contains("t.gz") && err.contains("gzip"), "{err}");
    }
}

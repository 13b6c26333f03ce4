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

fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| Error::file(path, format!("not a valid gzip file: {e}")))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

fn be_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// Reads an IDX image file (magic 2051) and its label file (magic 2049).
pub fn read_mnist(images: &Path, labels: &Path, device: &Device) -> Result<Mnist> {
    let img = read_maybe_gz(images)?;
    if img.len() < 16 || be_u32(&img, 0) != 2051 {
        return Err(Error::file(
            images,
            "not an IDX image file (expected magic number 2051)",
        ));
    }
    let (n, rows, cols) = (
        be_u32(&img, 4) as usize,
        be_u32(&img, 8) as usize,
        be_u32(&img, 12) as usize,
    );
    let want = n
        .checked_mul(rows)
        .and_then(|x| x.checked_mul(cols))
        .ok_or_else(|| Error::file(images, "image sizes overflow"))?;
    if img.len() - 16 != want {
        return Err(Error::file(
            images,
            format!("header says {n} images of {rows}x{cols} ({want} bytes), the file has {} bytes of pixels", img.len() - 16),
        ));
    }
    let lab = read_maybe_gz(labels)?;
    if lab.len() < 8 || be_u32(&lab, 0) != 2049 {
        return Err(Error::file(
            labels,
            "not an IDX label file (expected magic number 2049)",
        ));
    }
    let m = be_u32(&lab, 4) as usize;
    if m != n || lab.len() - 8 != m {
        return Err(Error::file(
            labels,
            format!("{} labels for {n} images", lab.len() - 8),
        ));
    }
    if let Some(i) = lab[8..].iter().position(|&l| l > 9) {
        return Err(Error::file(
            labels,
            format!("label {} of image {i} is not a digit 0-9", lab[8 + i]),
        ));
    }
    let pixels: Vec<f32> = img[16..].iter().map(|&p| p as f32 / 255.0).collect();
    let ids: Vec<u32> = lab[8..].iter().map(|&l| l as u32).collect();
    Ok(Mnist {
        images: Tensor::from_vec(pixels, (n, rows, cols), device)?,
        labels: Tensor::from_vec(ids, n, device)?,
    })
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

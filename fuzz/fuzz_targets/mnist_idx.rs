//! MNIST IDX image and label files, plain and gzip-compressed. The first byte says which parts
//! to gzip (bit 0 images, bit 1 labels; otherwise the bytes are passed as they are, so mutated
//! gzip streams are read too), the next two where to split the rest into the two files.
#![no_main]
#[path = "common.rs"]
mod common;

use candle_core::Device;
use libfuzzer_sys::fuzz_target;
use rnn_train::data::{parse_mnist, parse_mnist_images};
use std::io::Write;
use std::path::Path;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, data)) = data.split_first() else {
        return;
    };
    let (images, labels) = common::split2(data);
    let images = if flags & 1 == 1 {
        gzip(images)
    } else {
        images.to_vec()
    };
    let labels = if flags & 2 == 2 {
        gzip(labels)
    } else {
        labels.to_vec()
    };
    let (ip, lp) = (Path::new("fuzz-images.idx3"), Path::new("fuzz-labels.idx1"));
    match parse_mnist(ip, &images, lp, &labels, &Device::Cpu) {
        Ok(m) => {
            let n = m.images.dim(0).unwrap();
            assert_eq!(m.labels.dims(), &[n]);
            assert!(m.labels.to_vec1::<u32>().unwrap().iter().all(|&l| l <= 9));
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("fuzz-images.idx3") || msg.contains("fuzz-labels.idx1"),
                "{msg}"
            );
        }
    }
    match parse_mnist_images(ip, &images, &Device::Cpu) {
        Ok(t) => assert_eq!(t.rank(), 3),
        Err(e) => common::assert_names(&e.to_string(), "fuzz-images.idx3"),
    }
});

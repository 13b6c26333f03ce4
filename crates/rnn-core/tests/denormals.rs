//! `device::flush_denormals` (its own test binary: the mode it sets is per thread and would
//! otherwise leak into other tests' threads).

use std::hint::black_box;

use candle_core::{Device, Tensor};
use rnn_core::device::flush_denormals;

/// Half of the smallest normal f32: a subnormal unless subnormals are flushed.
fn half_min_positive() -> f32 {
    black_box(f32::MIN_POSITIVE) * black_box(0.5)
}

#[test]
fn subnormals_flush_to_zero_here_and_on_rayon_threads() {
    assert!(half_min_positive() > 0.0, "subnormals exist before");
    if !flush_denormals() {
        return; // a platform without a flush mode: nothing to check
    }
    assert_eq!(half_min_positive(), 0.0);
    let on_pool = rayon::broadcast(|_| half_min_positive());
    assert!(on_pool.iter().all(|&v| v == 0.0), "{on_pool:?}");
    // A Candle CPU op gives the same.
    let t = Tensor::new(&[f32::MIN_POSITIVE; 64], &Device::Cpu).unwrap();
    let halved = t.affine(0.5, 0.0).unwrap().to_vec1::<f32>().unwrap();
    assert!(halved.iter().all(|&v| v == 0.0));
    // Normal values are untouched.
    assert_eq!(
        black_box(f32::MIN_POSITIVE) * black_box(2.0),
        2.0 * f32::MIN_POSITIVE
    );
}

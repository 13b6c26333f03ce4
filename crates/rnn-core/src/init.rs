//! Reproducible parameter creation: a `VarBuilder` whose fresh parameters come from a seeded
//! generator, so the same seed gives the same model on every run and machine.
//!
//! Candle's CPU generator cannot be seeded (`Device::set_seed` fails on CPU), so a `VarMap`-backed
//! `VarBuilder` gives different weights on every run. [`seeded_var_builder`] fixes that: each
//! parameter's initial value depends only on the seed and the parameter's full name, not on the
//! order in which parameters are created.

use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A `VarBuilder` that creates missing parameters in `varmap` with values drawn from a generator
/// seeded by `seed` and the parameter's name; existing entries of `varmap` are returned as they are.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::VarMap;
/// use rnn_core::{init::seeded_var_builder, Mode, Rnn, RnnConfig};
/// let (a, b) = (VarMap::new(), VarMap::new());
/// let cfg = RnnConfig::new(Mode::Gru, 3, 4);
/// let ra = Rnn::new(&cfg, seeded_var_builder(&a, 7, DType::F32, &Device::Cpu))?;
/// let rb = Rnn::new(&cfg, seeded_var_builder(&b, 7, DType::F32, &Device::Cpu))?;
/// let (wa, wb) = (&ra.named_parameters()[0].1, &rb.named_parameters()[0].1);
/// assert_eq!(wa.to_vec2::<f32>()?, wb.to_vec2::<f32>()?);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededBackend {
        varmap: varmap.clone(),
        seed,
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

struct SeededBackend {
    varmap: VarMap,
    seed: u64,
}

/// FNV-1a, to turn a parameter name into a stream number.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Values for `init` over `shape`, drawn on the host from `rng`, as f64.
fn init_values(init: &Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| -> Vec<f64> {
        (0..n)
            .map(|_| lo + (up - lo) * rng.random::<f64>())
            .collect()
    };
    let normal = |rng: &mut ChaCha8Rng, mean: f64, stdev: f64| -> Vec<f64> {
        (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                mean + stdev * z
            })
            .collect()
    };
    match *init {
        Init::Const(v) => vec![v; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = fan.for_shape(shape).max(1) as f64;
            let std = non_linearity.gain() / fan.sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                candle_nn::init::NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

impl SimpleBackend for SeededBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = match self.varmap.data().lock() {
            Ok(d) => d,
            Err(_) => bail!("seeded_var_builder: the VarMap's lock is poisoned"),
        };
        if let Some(var) = data.get(name) {
            let t = var.as_tensor();
            if t.shape() != &s {
                bail!(
                    "parameter {name}: expected shape {:?}, the VarMap holds {:?}",
                    s.dims(),
                    t.dims()
                );
            }
            return Ok(t.clone());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(name_hash(name));
        let values = init_values(&h, &s, &mut rng);
        let t = Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        bail!("seeded_var_builder: parameter {name} must be created with a shape first")
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_other_seed_other_values() -> Result<()> {
        let dev = Device::Cpu;
        let init = Init::Uniform { lo: -0.5, up: 0.5 };
        let make = |seed| -> Result<Vec<f32>> {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, DType::F32, &dev);
            vb.get_with_hints(100, "w", init)?.to_vec1::<f32>()
        };
        let (a, b, c) = (make(1)?, make(1)?, make(2)?);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.15, "mean {mean}");
        Ok(())
    }

    #[test]
    fn values_depend_on_name_not_order() -> Result<()> {
        let dev = Device::Cpu;
        let init = Init::Randn {
            mean: 0.0,
            stdev: 1.0,
        };
        let (m1, m2) = (VarMap::new(), VarMap::new());
        let v1 = seeded_var_builder(&m1, 3, DType::F64, &dev);
        let v2 = seeded_var_builder(&m2, 3, DType::F64, &dev);
        let a1 = v1.get_with_hints(5, "a", init)?;
        let b1 = v1.get_with_hints(5, "b", init)?;
        let b2 = v2.get_with_hints(5, "b", init)?;
        let a2 = v2.get_with_hints(5, "a", init)?;
        assert_eq!(a1.to_vec1::<f64>()?, a2.to_vec1::<f64>()?);
        assert_eq!(b1.to_vec1::<f64>()?, b2.to_vec1::<f64>()?);
        assert_ne!(a1.to_vec1::<f64>()?, b1.to_vec1::<f64>()?);
        // Created parameters are trainable Vars of the map.
        assert_eq!(m1.all_vars().len(), 2);
        Ok(())
    }

    #[test]
    fn existing_entry_with_other_shape_is_an_error() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 0, DType::F32, &dev);
        vb.get_with_hints(3, "w", Init::Const(0.0)).unwrap();
        let err = vb
            .get_with_hints(4, "w", Init::Const(0.0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("w") && err.contains("[3]"), "{err}");
    }
}

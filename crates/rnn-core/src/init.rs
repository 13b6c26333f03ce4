//! Reproducible parameter creation: a `VarBuilder` whose fresh parameters come from a seeded
//! generator, so the same seed gives the same model on every run and machine.
//!
//! Candle's CPU generator cannot be seeded (`Device::set_seed` fails on CPU), so a `VarMap`-backed
//! `VarBuilder` gives different weights on every run. [`seeded_var_builder`] fixes that: each
//! parameter's initial value depends only on the seed and the parameter's full name, not on the
//! order in which parameters are created.

use crate::seed;
use candle_core::{bail, DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::Rng;
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
        let mut rng = seed::rng(self.seed, seed::name_stream(name));
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

/// Chrono initialisation (Tallec & Ollivier, "Can recurrent neural networks warp time?", ICLR
/// 2018, <https://arxiv.org/abs/1804.11188>) of every gated recurrent layer in `varmap`, for
/// dependencies up to `t_max` steps. Each unit `j` gets `b_j = ln(u_j)`, `u_j ~ U(1, t_max - 1)`:
///
/// - LSTM (gates i, f, g, o): forget bias `b_ih[f] = b`, input bias `b_ih[i] = -b`, and
///   `b_hh[i] = b_hh[f] = 0`, so the unit starts with a memory time scale of about `u_j` steps.
/// - GRU (gates r, z, n; `h' = (1 - z) * n + z * h`): update bias `b_ih[z] = b`, `b_hh[z] = 0`.
///
/// Layers are found by PyTorch's names (`...bias_ih_l{k}[_reverse]` with its `bias_hh` and
/// `weight_hh` siblings, and `weight_hr` for a projected LSTM); their gate count is read from the
/// shapes. The values are drawn from a generator seeded by `seed` and the parameter's name.
/// Returns the names of the `bias_ih` parameters set. Errors: `t_max < 2`, no gated layer with
/// biases in `varmap` (a vanilla RNN has no gate to set), a layer without its siblings.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::VarMap;
/// use rnn_core::{init::{chrono_init, seeded_var_builder}, Mode, Rnn, RnnConfig};
/// let vm = VarMap::new();
/// let rnn = Rnn::new(&RnnConfig::new(Mode::Lstm, 2, 8), seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu).pp("rnn"))?;
/// assert_eq!(chrono_init(&vm, 200.0, 0)?, ["rnn.bias_ih_l0"]);
/// # Ok::<(), candle_core::Error>(())
/// ```
pub fn chrono_init(varmap: &VarMap, t_max: f64, seed: u64) -> Result<Vec<String>> {
    if !(t_max.is_finite() && t_max >= 2.0) {
        bail!("chrono_init: t_max must be a number >= 2, got {t_max}");
    }
    let data = match varmap.data().lock() {
        Ok(d) => d,
        Err(_) => bail!("chrono_init: the VarMap's lock is poisoned"),
    };
    let mut names: Vec<&String> = data
        .keys()
        .filter(|n| {
            n.rsplit('.').next().is_some_and(|last| {
                last.strip_prefix("bias_ih_l")
                    .map(|r| r.strip_suffix("_reverse").unwrap_or(r))
                    .is_some_and(|k| !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .collect();
    names.sort();
    let mut done = Vec::new();
    for name in names {
        let sibling = |what: &str| {
            let other = name.replace("bias_ih_l", what);
            data.get(&other).map(|v| (other.clone(), v)).ok_or_else(|| {
                candle_core::Error::Msg(format!("chrono_init: {name} has no {other}"))
            })
        };
        let b_ih = &data[name];
        let (_, b_hh) = sibling("bias_hh_l")?;
        let (_, w_hh) = sibling("weight_hh_l")?;
        let hidden = match sibling("weight_hr_l") {
            Ok((_, w_hr)) => w_hr.dims()[1],
            Err(_) => w_hh.dims()[1],
        };
        let len = b_ih.elem_count();
        let (forget, input) = match len / hidden.max(1) {
            4 if len == 4 * hidden => (1, Some(0)),
            3 if len == 3 * hidden => (1, None),
            _ => continue,
        };
        let mut rng = seed::rng(seed, seed::name_stream(name));
        let b: Vec<f64> = (0..hidden)
            .map(|_| (1.0 + (t_max - 2.0) * rng.random::<f64>()).ln())
            .collect();
        let set = |var: &Var, gate: usize, values: &[f64]| -> Result<()> {
            let mut all = var.as_tensor().to_dtype(DType::F64)?.to_vec1::<f64>()?;
            all[gate * hidden..(gate + 1) * hidden].copy_from_slice(values);
            let t = Tensor::from_vec(all, len, var.device())?.to_dtype(var.dtype())?;
            var.set(&t)
        };
        let zeros = vec![0.0; hidden];
        set(b_ih, forget, &b)?;
        set(b_hh, forget, &zeros)?;
        if let Some(input) = input {
            let minus: Vec<f64> = b.iter().map(|v| -v).collect();
            set(b_ih, input, &minus)?;
            set(b_hh, input, &zeros)?;
        }
        done.push(name.clone());
    }
    if done.is_empty() {
        bail!("chrono_init: no LSTM or GRU layer with biases among the parameters (a vanilla RNN has no gate to initialise)");
    }
    Ok(done)
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

    fn vec(vm: &VarMap, name: &str) -> Vec<f32> {
        vm.data().lock().unwrap()[name]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap()
    }

    #[test]
    fn chrono_init_sets_the_gate_biases_of_lstm_and_gru_layers() -> Result<()> {
        use crate::{Mode, Rnn, RnnConfig};
        let dev = Device::Cpu;
        let h = 16;
        let t_max = 200f64;
        for (mode, gates, forget, input) in [(Mode::Lstm, 4, 1, Some(0)), (Mode::Gru, 3, 1, None)] {
            let vm = VarMap::new();
            let cfg = RnnConfig::new(mode, 3, h)
                .with_num_layers(2)
                .with_bidirectional(true);
            let vb = seeded_var_builder(&vm, 5, DType::F32, &dev).pp("enc");
            Rnn::new(&cfg, vb)?;
            let before = vec(&vm, "enc.bias_ih_l1_reverse");
            let names = chrono_init(&vm, t_max, 9)?;
            assert_eq!(
                names,
                [
                    "enc.bias_ih_l0",
                    "enc.bias_ih_l0_reverse",
                    "enc.bias_ih_l1",
                    "enc.bias_ih_l1_reverse"
                ]
            );
            for name in &names {
                let ih = vec(&vm, name);
                let hh = vec(&vm, &name.replace("bias_ih", "bias_hh"));
                assert_eq!(ih.len(), gates * h);
                let f = &ih[forget * h..(forget + 1) * h];
                // ln(U(1, t_max - 1)): within [0, ln(t_max - 1)] and spread over it.
                assert!(
                    f.iter()
                        .all(|&b| (0.0..=(t_max - 1.0).ln() as f32).contains(&b)),
                    "{f:?}"
                );
                let mean = f.iter().sum::<f32>() / h as f32;
                assert!((2.0..5.2).contains(&mean), "{mode:?} {name}: mean {mean}");
                assert!(hh[forget * h..(forget + 1) * h].iter().all(|&b| b == 0.0));
                if let Some(i) = input {
                    let neg: Vec<f32> = f.iter().map(|b| -b).collect();
                    assert_eq!(&ih[i * h..(i + 1) * h], neg.as_slice());
                    assert!(hh[i * h..(i + 1) * h].iter().all(|&b| b == 0.0));
                }
            }
            // The other gates keep their values; every layer-direction has its own draw.
            let after = vec(&vm, "enc.bias_ih_l1_reverse");
            let other = gates - 1;
            assert_eq!(after[other * h..], before[other * h..]);
            assert_ne!(
                vec(&vm, "enc.bias_ih_l0")[forget * h..(forget + 1) * h],
                after[forget * h..(forget + 1) * h]
            );
        }
        Ok(())
    }

    #[test]
    fn chrono_init_errors() -> Result<()> {
        use crate::{Mode, Rnn, RnnConfig};
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
        Rnn::new(&RnnConfig::new(Mode::RnnTanh, 2, 4), vb)?;
        let e = chrono_init(&vm, 100.0, 0).unwrap_err().to_string();
        assert!(e.contains("no LSTM or GRU layer"), "{e}");
        for bad in [1.0, f64::NAN] {
            let e = chrono_init(&vm, bad, 0).unwrap_err().to_string();
            assert!(e.contains("t_max must be a number >= 2"), "{e}");
        }
        Ok(())
    }
}

//! AdamW, as `torch.optim.AdamW`.

use std::collections::{BTreeMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use super::inplace::{par_zip, par_zip3, Elem, InPlace, Update2, Update3};
use super::{
    check_grads, check_no_extra_tensors, check_non_negative, check_params, current_value,
    exact_f64, master_copies, restore_masters, restore_param_steps, restore_tensor, state_dtype,
    write_param, OptimizerConfig, OptimizerMeta, OptimizerState, StatefulOptimizer, EXP_AVG_PREFIX,
    EXP_AVG_SQ_PREFIX, MASTER_PREFIX,
};
use crate::{Error, Result};

const WHO: &str = "AdamW";

/// AdamW's hyper-parameters; the defaults are PyTorch's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdamWConfig {
    /// Learning rate (default 1e-3).
    #[serde(with = "exact_f64", default = "default_lr")]
    pub lr: f64,
    /// Decay of the first-moment average, PyTorch's `betas[0]` (default 0.9).
    #[serde(with = "exact_f64", default = "default_beta1")]
    pub beta1: f64,
    /// Decay of the second-moment average, PyTorch's `betas[1]` (default 0.999).
    #[serde(with = "exact_f64", default = "default_beta2")]
    pub beta2: f64,
    /// Added to the denominator for stability (default 1e-8).
    #[serde(with = "exact_f64", default = "default_eps")]
    pub eps: f64,
    /// Decoupled weight decay: each step first multiplies the parameter by `1 - lr *
    /// weight_decay` (default 0.01).
    #[serde(with = "exact_f64", default = "default_weight_decay")]
    pub weight_decay: f64,
}

fn default_lr() -> f64 {
    1e-3
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.999
}
fn default_eps() -> f64 {
    1e-8
}
fn default_weight_decay() -> f64 {
    1e-2
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: default_lr(),
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            weight_decay: default_weight_decay(),
        }
    }
}

impl AdamWConfig {
    /// The defaults with learning rate `lr`.
    pub fn with_lr(lr: f64) -> Self {
        Self {
            lr,
            ..Self::default()
        }
    }

    /// Checks the ranges PyTorch checks: `lr`, `eps`, `weight_decay` finite and `>= 0`, betas in
    /// `[0, 1)`.
    pub fn validate(&self) -> Result<()> {
        check_non_negative(WHO, "lr", self.lr)?;
        check_non_negative(WHO, "eps", self.eps)?;
        check_non_negative(WHO, "weight_decay", self.weight_decay)?;
        for (what, beta) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&beta) {
                return Err(Error::Invalid(format!(
                    "{WHO}: {what} must be in [0, 1), got {beta}"
                )));
            }
        }
        Ok(())
    }
}

/// AdamW with exactly `torch.optim.AdamW`'s update (without `amsgrad`). For each parameter `p`
/// with gradient `g`, at that parameter's own step `t` (counting only the steps that updated it):
///
/// ```text
/// p  *= 1 - lr * weight_decay
/// m   = m + (1 - beta1) * (g - m)                       (torch's exp_avg.lerp_)
/// v   = v * beta2 + (1 - beta2) * g * g
/// p  += -(lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
/// ```
///
/// The moments start at zero (PyTorch creates them lazily, also as zeros). Each step reads no
/// value back to the host. For bf16/f16 parameters the moments and an f32 master copy of the
/// parameter are kept in f32 (see [`state_dtype`](super::state_dtype)): the update runs in f32
/// and the parameter receives the rounded result.
///
/// On the CPU, f32/f64 parameters without a master copy are updated in place, as PyTorch's
/// single-tensor AdamW: three parallel passes (the two moments, then the parameter) instead of
/// a dozen composed tensor ops, with the same roundings in the same order, so the result is
/// bitwise the composed update's. The moments are then the optimiser's own storage: `state`
/// hands out copies and `load_state` takes copies.
#[derive(Debug)]
pub struct TorchAdamW {
    params: Vec<(String, Var)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    master: Vec<Option<Tensor>>,
    param_steps: Vec<u64>,
    step: u64,
    config: AdamWConfig,
    /// Whether updates may run in place (see [`Self::set_in_place`]).
    in_place: bool,
    /// Parameter updates done in place so far.
    in_place_updates: u64,
}

impl TorchAdamW {
    /// AdamW over the named parameters. Names must be unique; they key the saved state.
    pub fn new(params: Vec<(String, Var)>, config: AdamWConfig) -> Result<Self> {
        config.validate()?;
        check_params(WHO, &params)?;
        let zeros = || {
            params
                .iter()
                .map(|(_, v)| Tensor::zeros(v.shape(), state_dtype(v.dtype()), v.device()))
                .collect::<candle_core::Result<Vec<_>>>()
        };
        let (exp_avg, exp_avg_sq) = (zeros()?, zeros()?);
        let master = master_copies(&params)?;
        Ok(Self {
            master,
            param_steps: vec![0; params.len()],
            params,
            exp_avg,
            exp_avg_sq,
            step: 0,
            config,
            in_place: true,
            in_place_updates: 0,
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.config
    }

    /// Whether CPU updates of f32/f64 parameters without a master copy run in place, in three
    /// parallel passes over the moments' and the parameter's storage (the default, as PyTorch's
    /// `foreach`/`fused` implementations), or always as composed Candle tensor ops (the
    /// reference path the in-place one is tested against; the two agree bitwise).
    pub fn set_in_place(&mut self, in_place: bool) {
        self.in_place = in_place;
    }

    /// Number of calls to [`StatefulOptimizer::step`] so far (restored by `load_state`).
    pub fn steps(&self) -> u64 {
        self.step
    }
}

/// One step's constants, from the hyper-parameters and the parameter's step count (in f64, and
/// converted to the element type where the composed path's `affine` converts them).
struct AdamConsts {
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    /// `1 - lr * weight_decay`, when there is weight decay.
    decay: Option<f64>,
    inv_bias_correction2_sqrt: f64,
    eps: f64,
    neg_step_size: f64,
}

impl TorchAdamW {
    /// The update of parameter `i` in place: the moments in their own storage, then the
    /// parameter in its (the composed path's arithmetic, so the two agree bitwise). Returns
    /// false, changing nothing, where it does not apply: a master copy, a device other than the
    /// CPU, a dtype other than f32/f64, or non-contiguous layouts.
    fn update_in_place(&self, i: usize, grad: &Tensor, c: &AdamConsts) -> Result<bool> {
        let p = self.params[i].1.as_tensor();
        let (m, v) = (&self.exp_avg[i], &self.exp_avg_sq[i]);
        let same = |t: &Tensor| t.dtype() == p.dtype() && t.dims() == p.dims() && t.is_contiguous();
        if self.master[i].is_some()
            || !p.device().is_cpu()
            || !matches!(p.dtype(), DType::F32 | DType::F64)
            || !p.is_contiguous()
            || ![grad, m, v].into_iter().all(same)
        {
            return Ok(false);
        }
        // The moments are the optimiser's own (fresh zeros, composed results or copies), so
        // only the gradient could share storage with one; Candle refuses that before writing.
        if m.inplace_op2(grad, &InPlace(FirstMoment(c))).is_err() {
            return Ok(false);
        }
        let who = &self.params[i].0;
        let failed = |e: candle_core::Error| {
            Error::Invalid(format!(
                "{WHO}: the in-place update of {who:?} failed after its first moment: {e}"
            ))
        };
        v.inplace_op2(grad, &InPlace(SecondMoment(c)))
            .map_err(failed)?;
        p.inplace_op3(m, v, &InPlace(ParamStep(c)))
            .map_err(failed)?;
        Ok(true)
    }
}

/// `m = affine(g - m, 1 - beta1, 0) + m`, in the storage of `m`.
struct FirstMoment<'a>(&'a AdamConsts);

impl Update2 for FirstMoment<'_> {
    const NAME: &'static str = "adamw-exp-avg";

    fn run<T: Elem>(&self, m: &mut [T], g: &[T]) {
        let (c, zero) = (T::of(self.0.one_minus_beta1), T::of(0.0));
        par_zip(m, g, |m, g| *m = ((g - *m) * c + zero) + *m);
    }
}

/// `v = affine(v, beta2, 0) + affine(g, 1 - beta2, 0) * g`, in the storage of `v`.
struct SecondMoment<'a>(&'a AdamConsts);

impl Update2 for SecondMoment<'_> {
    const NAME: &'static str = "adamw-exp-avg-sq";

    fn run<T: Elem>(&self, v: &mut [T], g: &[T]) {
        let (b2, c2, zero) = (
            T::of(self.0.beta2),
            T::of(self.0.one_minus_beta2),
            T::of(0.0),
        );
        par_zip(v, g, |v, g| *v = (*v * b2 + zero) + ((g * c2 + zero) * g));
    }
}

/// `p = affine(p, 1 - lr * wd, 0)` (with weight decay), then
/// `p = p + affine(m / affine(sqrt(v), 1 / sqrt(bc2), eps), -step_size, 0)`, in the storage of `p`.
struct ParamStep<'a>(&'a AdamConsts);

impl Update3 for ParamStep<'_> {
    const NAME: &'static str = "adamw-param";

    fn run<T: Elem>(&self, p: &mut [T], m: &[T], v: &[T]) {
        let c = self.0;
        let zero = T::of(0.0);
        let decay = c.decay.map(T::of);
        let (inv_bc2, eps, neg_step) = (
            T::of(c.inv_bias_correction2_sqrt),
            T::of(c.eps),
            T::of(c.neg_step_size),
        );
        par_zip3(p, m, v, |p, m, v| {
            let q = match decay {
                Some(d) => *p * d + zero,
                None => *p,
            };
            let denom = v.sqrt() * inv_bc2 + eps;
            *p = q + ((m / denom) * neg_step + zero);
        });
    }
}

impl StatefulOptimizer for TorchAdamW {
    fn step(&mut self, grads: &GradStore) -> Result<()> {
        // Re-checked here because set_lr cannot return an error.
        self.config.validate()?;
        check_grads(WHO, &self.params, grads)?;
        let AdamWConfig {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.config;
        for (i, (_, var)) in self.params.iter().enumerate() {
            let Some(grad) = grads.get(var) else {
                continue;
            };
            if var.elem_count() == 0 {
                // Nothing to update, and Var::set refuses the empty tensor Candle's ops return
                // unchanged (it would share the parameter's storage).
                self.param_steps[i] += 1;
                continue;
            }
            let t = (self.param_steps[i] + 1) as f64;
            // Python's float `**`, as PyTorch computes the corrections on the host in f64.
            let bias_correction1 = 1.0 - beta1.powf(t);
            let bias_correction2_sqrt = (1.0 - beta2.powf(t)).powf(0.5);
            let step_size = lr / bias_correction1;
            let consts = AdamConsts {
                one_minus_beta1: 1.0 - beta1,
                beta2,
                one_minus_beta2: 1.0 - beta2,
                decay: (weight_decay != 0.0).then_some(1.0 - lr * weight_decay),
                inv_bias_correction2_sqrt: 1.0 / bias_correction2_sqrt,
                eps,
                neg_step_size: -step_size,
            };
            if self.in_place && self.update_in_place(i, grad, &consts)? {
                self.in_place_updates += 1;
                self.param_steps[i] += 1;
                continue;
            }
            // Detached so that no state tensor keeps an autograd graph alive across steps.
            let dtype = state_dtype(var.dtype());
            let grad = grad.detach().to_dtype(dtype)?;
            let mut p = current_value(var, &self.master[i]);
            if let Some(decay) = consts.decay {
                p = p.affine(decay, 0.0)?;
            }
            let m = &self.exp_avg[i];
            let m = ((&grad - m)?.affine(consts.one_minus_beta1, 0.0)? + m)?;
            let v = (self.exp_avg_sq[i].affine(beta2, 0.0)?
                + (grad.affine(consts.one_minus_beta2, 0.0)? * &grad)?)?;
            let denom = v.sqrt()?.affine(consts.inv_bias_correction2_sqrt, eps)?;
            let p = (p + m.div(&denom)?.affine(consts.neg_step_size, 0.0)?)?;
            write_param(var, &mut self.master[i], p)?;
            self.exp_avg[i] = m;
            self.exp_avg_sq[i] = v;
            self.param_steps[i] += 1;
        }
        self.step += 1;
        Ok(())
    }

    fn lr(&self) -> f64 {
        self.config.lr
    }

    fn set_lr(&mut self, lr: f64) {
        self.config.lr = lr;
    }

    fn state(&self) -> Result<OptimizerState> {
        let mut tensors = BTreeMap::new();
        let mut param_steps = BTreeMap::new();
        for (i, (name, _)) in self.params.iter().enumerate() {
            // Copies: the in-place update writes the moments' storage.
            tensors.insert(format!("{EXP_AVG_PREFIX}{name}"), self.exp_avg[i].copy()?);
            tensors.insert(
                format!("{EXP_AVG_SQ_PREFIX}{name}"),
                self.exp_avg_sq[i].copy()?,
            );
            if let Some(master) = &self.master[i] {
                tensors.insert(format!("{MASTER_PREFIX}{name}"), master.clone());
            }
            param_steps.insert(name.clone(), self.param_steps[i]);
        }
        Ok(OptimizerState {
            meta: OptimizerMeta {
                config: OptimizerConfig::AdamW(self.config.clone()),
                step: self.step,
                param_steps,
            },
            tensors,
        })
    }

    fn load_state(&mut self, state: &OptimizerState) -> Result<()> {
        let OptimizerConfig::AdamW(config) = &state.meta.config else {
            return Err(Error::Invalid(format!(
                "{WHO}: the optimizer state is for {:?}, expected \"adamw\"",
                state.meta.config.kind()
            )));
        };
        config.validate()?;
        let param_steps = restore_param_steps(WHO, &state.meta, &self.params)?;
        let mut expected = HashSet::new();
        let mut exp_avg = Vec::with_capacity(self.params.len());
        let mut exp_avg_sq = Vec::with_capacity(self.params.len());
        for (name, var) in &self.params {
            let (k1, k2) = (
                format!("{EXP_AVG_PREFIX}{name}"),
                format!("{EXP_AVG_SQ_PREFIX}{name}"),
            );
            // Copies: the in-place update must not write into the caller's state.
            exp_avg.push(restore_tensor(WHO, state, &k1, name, var)?.copy()?);
            exp_avg_sq.push(restore_tensor(WHO, state, &k2, name, var)?.copy()?);
            expected.insert(k1);
            expected.insert(k2);
        }
        let master = restore_masters(WHO, state, &self.params, &mut expected)?;
        check_no_extra_tensors(WHO, state, &expected)?;
        self.config = config.clone();
        self.step = state.meta.step;
        self.param_steps = param_steps;
        self.exp_avg = exp_avg;
        self.exp_avg_sq = exp_avg_sq;
        self.master = master;
        Ok(())
    }

    fn params(&self) -> &[(String, Var)] {
        &self.params
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{assert_close, bits, Problem, Twin};
    use super::*;
    use candle_core::{DType, Device};

    fn config() -> AdamWConfig {
        AdamWConfig {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }

    // Python (with `run` from optim/testutil.rs):
    // fn = lambda p: torch.optim.AdamW(p, lr=0.1, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1, foreach=False)
    // print(run(fn, torch.float64)); print(run(fn, torch.float32))
    const TORCH_W_F64: [f64; 6] = [
        0.4426984381317314,
        0.233520386546416,
        -0.1397839875842872,
        -0.06754432150925216,
        0.10286900885220818,
        -0.10693238467978759,
    ];
    const TORCH_B_F64: [f64; 3] = [-0.23177745511332365, 0.33456396676442, 0.3756071642673852];
    const TORCH_W_F32: [f64; 6] = [
        0.4426984488964081,
        0.23352038860321045,
        -0.13978400826454163,
        -0.06754427403211594,
        0.10286898910999298,
        -0.10693243145942688,
    ];
    const TORCH_B_F32: [f64; 3] = [-0.23177748918533325, 0.3345640301704407, 0.3756071925163269];

    #[test]
    fn matches_pytorch_adamw_including_a_skipped_parameter() {
        for (dtype, tol, w, b) in [
            (DType::F64, 1e-12, TORCH_W_F64, TORCH_B_F64),
            (DType::F32, 1e-6, TORCH_W_F32, TORCH_B_F32),
        ] {
            let pb = Problem::new(dtype);
            let mut opt = TorchAdamW::new(pb.params(), config()).unwrap();
            pb.run(&mut opt, 0..5);
            let (got_w, got_b) = pb.values();
            assert_close(&got_w, &w, tol, &format!("w {dtype:?}"));
            assert_close(&got_b, &b, tol, &format!("b {dtype:?}"));
            let state = opt.state().unwrap();
            assert_eq!(state.meta.step, 5);
            assert_eq!(state.meta.param_steps["w"], 5);
            assert_eq!(state.meta.param_steps["b"], 4);
        }
    }

    #[test]
    fn missing_grads_names_the_skipped_parameter() {
        let pb = Problem::new(DType::F64);
        let opt = TorchAdamW::new(pb.params(), config()).unwrap();
        assert!(opt.missing_grads(&pb.grads(0)).is_empty());
        assert_eq!(opt.missing_grads(&pb.grads(2)), ["b"]);
    }

    #[test]
    fn resume_through_safetensors_and_json_is_bit_identical() {
        for dtype in [DType::F32, DType::F64] {
            // An lr plain serde_json would read back one ulp off.
            let cfg = AdamWConfig {
                lr: 0.0020796181086732758 * 40.0,
                ..config()
            };
            let straight = Problem::new(dtype);
            let mut opt = TorchAdamW::new(straight.params(), cfg.clone()).unwrap();
            straight.run(&mut opt, 0..6);

            let first = Problem::new(dtype);
            let mut opt = TorchAdamW::new(first.params(), cfg.clone()).unwrap();
            first.run(&mut opt, 0..3);
            let state = opt.state().unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("optim.safetensors");
            candle_core::safetensors::save(&state.to_tensors(), &path).unwrap();
            let json = state.to_json().unwrap();
            drop(opt);

            let tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
            let loaded = OptimizerState::from_json(&json, tensors).unwrap();
            let second = first.restored();
            // A fresh optimiser with other hyper-parameters: load_state restores them.
            let mut opt = TorchAdamW::new(second.params(), AdamWConfig::default()).unwrap();
            opt.load_state(&loaded).unwrap();
            assert_eq!(opt.config(), &cfg);
            assert_eq!(opt.lr().to_bits(), cfg.lr.to_bits());
            second.run(&mut opt, 3..6);
            assert_eq!(bits(&second.w), bits(&straight.w), "{dtype:?}");
            assert_eq!(bits(&second.b), bits(&straight.b), "{dtype:?}");
        }
    }

    #[test]
    fn state_snapshot_is_not_changed_by_later_steps() {
        let pb = Problem::new(DType::F64);
        let mut opt = TorchAdamW::new(pb.params(), config()).unwrap();
        pb.run(&mut opt, 0..1);
        let state = opt.state().unwrap();
        let before = bits(&state.tensors["exp_avg.w"]);
        pb.run(&mut opt, 1..2);
        assert_eq!(bits(&state.tensors["exp_avg.w"]), before);
    }

    /// The in-place update equals the composed one bitwise (with and without weight decay, f32
    /// and f64, over several parallel chunks and on zeros of both signs), and its moments too.
    #[test]
    fn in_place_update_equals_the_composed_twin() {
        for dtype in [DType::F32, DType::F64] {
            for weight_decay in [0.0, 0.1] {
                let twin = Twin::new(dtype);
                let cfg = AdamWConfig {
                    weight_decay,
                    ..config()
                };
                let [pa, pb] = twin.params();
                let mut composed = TorchAdamW::new(pa, cfg.clone()).unwrap();
                composed.set_in_place(false);
                let mut in_place = TorchAdamW::new(pb, cfg).unwrap();
                twin.run(&mut composed, &mut in_place, 3);
                assert_eq!(
                    (composed.in_place_updates, in_place.in_place_updates),
                    (0, 3)
                );
                let what = format!("{dtype:?} weight decay {weight_decay}");
                twin.assert_equal_and_moved(&what);
                let (sc, si) = (composed.state().unwrap(), in_place.state().unwrap());
                for key in ["exp_avg.p", "exp_avg_sq.p"] {
                    assert_eq!(
                        bits(&sc.tensors[key]),
                        bits(&si.tensors[key]),
                        "{what} {key}"
                    );
                }
            }
        }
    }

    /// The moments are updated in their own storage, so neither a state handed out nor one
    /// loaded may share it.
    #[test]
    fn loaded_state_is_not_changed_by_later_steps() {
        let pb = Problem::new(DType::F32);
        let mut opt = TorchAdamW::new(pb.params(), config()).unwrap();
        pb.run(&mut opt, 0..2);
        let state = opt.state().unwrap();
        let before: Vec<_> = state.tensors.values().map(bits).collect();
        let mut other = TorchAdamW::new(pb.params(), config()).unwrap();
        other.load_state(&state).unwrap();
        pb.run(&mut other, 2..4);
        // w twice, b once (it gets no gradient in the third step).
        assert_eq!(other.in_place_updates, 3);
        let after: Vec<_> = state.tensors.values().map(bits).collect();
        assert_eq!(after, before);
    }

    #[test]
    fn bad_states_are_rejected_by_name_and_change_nothing() {
        let pb = Problem::new(DType::F64);
        let mut opt = TorchAdamW::new(pb.params(), config()).unwrap();
        pb.run(&mut opt, 0..2);
        let good = opt.state().unwrap();
        let mut fresh = TorchAdamW::new(pb.params(), AdamWConfig::default()).unwrap();
        let err = |s: &OptimizerState, fresh: &mut TorchAdamW| {
            fresh.load_state(s).unwrap_err().to_string()
        };

        let mut s = good.clone();
        s.tensors.insert(
            "exp_avg_sq.b".into(),
            Tensor::zeros(4, DType::F64, &Device::Cpu).unwrap(),
        );
        let e = err(&s, &mut fresh);
        assert!(
            e.contains("\"exp_avg_sq.b\" has shape [4], expected parameter \"b\"'s shape [3]"),
            "{e}"
        );

        let mut s = good.clone();
        s.tensors.remove("exp_avg.w");
        let e = err(&s, &mut fresh);
        assert!(
            e.contains("no tensor \"exp_avg.w\" for parameter \"w\""),
            "{e}"
        );

        let mut s = good.clone();
        s.tensors
            .insert("exp_avg.v".into(), good.tensors["exp_avg.b"].clone());
        let e = err(&s, &mut fresh);
        assert!(e.contains("\"exp_avg.v\""), "{e}");

        let mut s = good.clone();
        s.meta.param_steps.insert("v".into(), 1);
        let e = err(&s, &mut fresh);
        assert!(
            e.contains("parameter \"v\", which this optimizer does not have"),
            "{e}"
        );

        let mut s = good.clone();
        s.meta.param_steps.remove("b");
        let e = err(&s, &mut fresh);
        assert!(e.contains("no entry for parameter \"b\""), "{e}");

        let mut s = good.clone();
        s.meta.config = OptimizerConfig::Sgd(Default::default());
        let e = err(&s, &mut fresh);
        assert!(e.contains("for \"sgd\", expected \"adamw\""), "{e}");

        // None of the failures touched the fresh optimiser.
        assert_eq!(fresh.steps(), 0);
        assert_eq!(fresh.config(), &AdamWConfig::default());
        fresh.load_state(&good).unwrap();
        assert_eq!(fresh.steps(), 2);
    }

    #[test]
    fn bad_gradients_and_learning_rates_fail_before_any_update() {
        let pb = Problem::new(DType::F64);
        let mut opt = TorchAdamW::new(pb.params(), config()).unwrap();
        let before = (bits(&pb.w), bits(&pb.b));
        let mut grads = pb.grads(0);
        grads.insert(&pb.b, Tensor::zeros(2, DType::F64, &Device::Cpu).unwrap());
        let e = opt.step(&grads).unwrap_err().to_string();
        assert!(
            e.contains(
                "gradient of parameter \"b\" has shape [2], expected the parameter's shape [3]"
            ),
            "{e}"
        );
        opt.set_lr(f64::NAN);
        let e = opt.step(&pb.grads(0)).unwrap_err().to_string();
        assert!(e.contains("lr must be finite and >= 0, got NaN"), "{e}");
        assert_eq!((bits(&pb.w), bits(&pb.b)), before);
        assert_eq!(opt.steps(), 0);
    }

    #[test]
    fn config_defaults_are_pytorchs_and_json_fills_them() {
        let c: AdamWConfig = serde_json::from_str(r#"{"lr": 0.01}"#).unwrap();
        assert_eq!(c, AdamWConfig::with_lr(0.01));
        assert_eq!(
            AdamWConfig::default(),
            AdamWConfig {
                lr: 1e-3,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01
            }
        );
        assert!(serde_json::from_str::<AdamWConfig>(r#"{"lr": 0.01, "beta": 0.9}"#).is_err());
        let e = AdamWConfig {
            beta2: 1.0,
            ..Default::default()
        }
        .validate()
        .unwrap_err();
        assert!(
            e.to_string().contains("beta2 must be in [0, 1), got 1"),
            "{e}"
        );
    }
}

//! Optimisers, learning-rate schedules, gradient clipping and non-finite detection.
//!
//! * [`TorchAdamW`] and [`TorchSgd`] reproduce `torch.optim.AdamW` and `torch.optim.SGD` (single-tensor
//!   path, `foreach=False`) step for step, including PyTorch's rule that a parameter with no
//!   gradient in a step is left alone (and, for TorchAdamW, keeps its own step count for the bias
//!   correction). Both implement [`StatefulOptimizer`] (named parameters, learning rate and a
//!   resumable state) and also `candle_nn::Optimizer`, so they drop into a candle-nn training
//!   loop (`TorchAdamW::new(varmap.all_vars(), config)` through that trait, then
//!   `backward_step`). Steps use tensor operations only, so they run on any Candle device without
//!   copying to the host. (Until 0.1 they were called `AdamW`, `Sgd` and `Optimizer`, names that
//!   clash with candle-nn's; the old names remain as deprecated aliases.)
//! * [`OptimizerState`] is an optimiser's resumable state: named tensors for a safetensors file
//!   ([`OptimizerState::to_tensors`]) and a serde part for JSON ([`OptimizerMeta`]). Loading it
//!   into a fresh optimiser and continuing gives bit-identical parameters to a run that never
//!   stopped.
//! * [`LrSchedule`]s: [`Constant`], [`StepDecay`], [`MultiStep`], [`PlateauDecay`]
//!   (`ReduceLROnPlateau`), [`CosineWarmup`] and [`CosineRestarts`]
//!   (`CosineAnnealingWarmRestarts`), built from a serde [`LrScheduleConfig`] and resumable through
//!   [`LrScheduleState`].
//! * [`clip_grad_norm`] (`torch.nn.utils.clip_grad_norm_`), [`clip_grad_value`], [`grad_norm`],
//!   and [`grads_are_finite`] / [`first_non_finite_grad`] so a trainer can stop at the step where
//!   a NaN or an infinity appears.
//!
//! Floating-point fields of the serde types here are written as JSON numbers when serde_json
//! reads them back exactly, and otherwise as strings (`"7.345678901234567e-4"`, `"inf"`): plain
//! serde_json loses the last bit of some 17-digit numbers and cannot store infinities, and resuming
//! must be exact. Numbers and such strings are both accepted when reading.
//!
//! ```
//! use candle_core::{DType, Device, Tensor, Var};
//! use rnn_train::optim::{AdamWConfig, OptimizerState, StatefulOptimizer, TorchAdamW};
//!
//! # fn main() -> rnn_train::Result<()> {
//! let w = Var::zeros((2, 2), DType::F32, &Device::Cpu)?;
//! let mut opt = TorchAdamW::new(vec![("w".to_string(), w.clone())], AdamWConfig::default())?;
//! let loss = (w.as_tensor() - 1.0)?.sqr()?.sum_all()?;
//! opt.step(&loss.backward()?)?;
//!
//! // A checkpoint stores the tensors (e.g. in safetensors) and the rest as JSON.
//! let state = opt.state()?;
//! let (tensors, json) = (state.to_tensors(), state.to_json()?);
//! let mut resumed = TorchAdamW::new(vec![("w".to_string(), w.clone())], AdamWConfig::default())?;
//! resumed.load_state(&OptimizerState::from_json(&json, tensors)?)?;
//! assert_eq!(resumed.steps(), 1);
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

mod adamw;
mod clip;
pub(crate) mod exact_f64;
pub(crate) mod inplace;
mod schedule;
mod sgd;
#[cfg(test)]
mod testutil;

pub use adamw::{AdamWConfig, TorchAdamW};
pub use clip::{
    clip_grad_norm, clip_grad_norm_tensor, clip_grad_value, first_non_finite_grad, grad_norm,
    grad_norm_tensor, grads_are_finite, non_finite_markers,
};
pub use schedule::{
    Constant, CosineRestarts, CosineWarmup, LrSchedule, LrScheduleConfig, LrScheduleState,
    MultiStep, PlateauDecay, StepDecay,
};
pub use sgd::{SgdConfig, TorchSgd};

/// Prefix of AdamW's first-moment tensors in [`OptimizerState::tensors`].
pub const EXP_AVG_PREFIX: &str = "exp_avg.";
/// Prefix of AdamW's second-moment tensors in [`OptimizerState::tensors`].
pub const EXP_AVG_SQ_PREFIX: &str = "exp_avg_sq.";
/// Prefix of SGD's momentum buffers in [`OptimizerState::tensors`].
pub const MOMENTUM_PREFIX: &str = "momentum.";
/// Prefix of the f32 master copies of half-precision (bf16/f16) parameters in
/// [`OptimizerState::tensors`].
pub const MASTER_PREFIX: &str = "master.";

/// The dtype an optimiser keeps its state in for a parameter of `dtype`: f32 for the half
/// types (bf16, f16), whose 8- or 11-bit mantissas would round small updates away (a bf16
/// weight of 1.0 does not move for an update below 0.004), the parameter's own dtype otherwise.
pub fn state_dtype(dtype: DType) -> DType {
    match dtype {
        DType::BF16 | DType::F16 => DType::F32,
        other => other,
    }
}

/// The f32 master copy of a half-precision parameter (`None` for other dtypes): the optimisers
/// update it, and the parameter receives its rounded value, as mixed-precision training does.
fn master_copy(var: &Var) -> Result<Option<Tensor>> {
    let dtype = state_dtype(var.dtype());
    Ok(if dtype == var.dtype() {
        None
    } else {
        Some(var.as_detached_tensor().to_dtype(dtype)?)
    })
}

/// [`master_copy`] of every parameter, in order.
fn master_copies(params: &[(String, Var)]) -> Result<Vec<Option<Tensor>>> {
    params.iter().map(|(_, v)| master_copy(v)).collect()
}

/// The value an optimiser step starts from: the master copy where there is one, else the
/// parameter itself, detached.
fn current_value(var: &Var, master: &Option<Tensor>) -> Tensor {
    match master {
        Some(master) => master.clone(),
        None => var.as_detached_tensor(),
    }
}

/// Writes the updated `value` (in the state dtype) into `var`, and into its master copy when it
/// has one.
fn write_param(var: &Var, master: &mut Option<Tensor>, value: Tensor) -> Result<()> {
    if master.is_some() {
        var.set(&value.to_dtype(var.dtype())?)?;
        *master = Some(value);
    } else {
        var.set(&value)?;
    }
    Ok(())
}

/// The f32 master copies of `params` restored from `state` (a half-precision parameter's is
/// required, under [`MASTER_PREFIX`]); each expected key is added to `expected`.
fn restore_masters(
    who: &str,
    state: &OptimizerState,
    params: &[(String, Var)],
    expected: &mut HashSet<String>,
) -> Result<Vec<Option<Tensor>>> {
    params
        .iter()
        .map(|(name, var)| {
            if state_dtype(var.dtype()) == var.dtype() {
                return Ok(None);
            }
            let key = format!("{MASTER_PREFIX}{name}");
            let t = restore_tensor(who, state, &key, name, var)?;
            expected.insert(key);
            Ok(Some(t))
        })
        .collect()
}

/// The former name of [`TorchAdamW`].
#[deprecated(
    since = "0.2.0",
    note = "renamed `TorchAdamW`: `AdamW` clashes with `candle_nn::AdamW`"
)]
pub type AdamW = TorchAdamW;

/// The former name of [`TorchSgd`].
#[deprecated(since = "0.2.0", note = "renamed `TorchSgd`, beside `candle_nn::SGD`")]
pub type Sgd = TorchSgd;

/// The former name of [`StatefulOptimizer`], implemented for every one of them.
#[deprecated(
    since = "0.2.0",
    note = "renamed `StatefulOptimizer`: `Optimizer` clashes with `candle_nn::Optimizer`"
)]
pub trait Optimizer: StatefulOptimizer {}

#[allow(deprecated)]
impl<T: StatefulOptimizer + ?Sized> Optimizer for T {}

/// `candle_nn::Optimizer` for an optimiser of this module: parameters are named `param.{i}` in
/// the order given (the names key [`StatefulOptimizer::state`]).
macro_rules! candle_optimizer {
    ($ty:ident, $config:ident) => {
        impl candle_nn::Optimizer for $ty {
            type Config = $config;

            fn new(vars: Vec<Var>, config: $config) -> candle_core::Result<Self> {
                let named = vars
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("param.{i}"), v))
                    .collect();
                $ty::new(named, config).map_err(|e| candle_core::Error::Msg(e.to_string()))
            }

            fn step(&mut self, grads: &GradStore) -> candle_core::Result<()> {
                StatefulOptimizer::step(self, grads)
                    .map_err(|e| candle_core::Error::Msg(e.to_string()))
            }

            fn learning_rate(&self) -> f64 {
                StatefulOptimizer::lr(self)
            }

            fn set_learning_rate(&mut self, lr: f64) {
                StatefulOptimizer::set_lr(self, lr)
            }
        }
    };
}

candle_optimizer!(TorchAdamW, AdamWConfig);
candle_optimizer!(TorchSgd, SgdConfig);

/// An optimiser over named [`Var`]s.
pub trait StatefulOptimizer {
    /// Updates every parameter that has a gradient in `grads`; parameters without one are left
    /// unchanged, as are their state tensors (PyTorch skips parameters whose `.grad` is `None`).
    ///
    /// All gradients are checked (shape, dtype, device) before any parameter changes, so an error
    /// leaves the parameters and the state as they were.
    fn step(&mut self, grads: &GradStore) -> Result<()>;

    /// The learning rate of the next step.
    fn lr(&self) -> f64;

    /// Sets the learning rate of the next steps. A negative or non-finite value is rejected by
    /// the next [`step`](StatefulOptimizer::step).
    fn set_lr(&mut self, lr: f64);

    /// A snapshot of the state (hyper-parameters, step counts, per-parameter tensors).
    ///
    /// The tensors are shared, not copied: the optimiser replaces its state tensors on each step
    /// rather than writing into them, so the snapshot stays valid.
    fn state(&self) -> Result<OptimizerState>;

    /// Restores a state saved by [`state`](StatefulOptimizer::state) of the same kind of optimiser over
    /// parameters of the same names and shapes; the hyper-parameters (including the learning
    /// rate) are restored too, as PyTorch's `load_state_dict` does. Tensors are moved to each
    /// parameter's device and dtype.
    ///
    /// Nothing changes unless the whole state is valid; errors name the parameter or tensor.
    fn load_state(&mut self, state: &OptimizerState) -> Result<()>;

    /// The parameters, by name, in the order they were given.
    fn params(&self) -> &[(String, Var)];

    /// Names of the parameters that have no gradient in `grads` (and that
    /// [`step`](StatefulOptimizer::step) would therefore skip), in parameter order.
    fn missing_grads(&self, grads: &GradStore) -> Vec<String> {
        self.params()
            .iter()
            .filter(|(_, var)| grads.get(var).is_none())
            .map(|(name, _)| name.clone())
            .collect()
    }
}

/// The hyper-parameters of an optimiser, tagged by kind (`{"kind": "adamw", "lr": 0.001, ...}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum OptimizerConfig {
    /// [`TorchAdamW`].
    #[serde(rename = "adamw")]
    AdamW(AdamWConfig),
    /// [`TorchSgd`].
    #[serde(rename = "sgd")]
    Sgd(SgdConfig),
}

impl OptimizerConfig {
    /// The kind as written in JSON (`"adamw"`, `"sgd"`).
    pub fn kind(&self) -> &'static str {
        match self {
            OptimizerConfig::AdamW(_) => "adamw",
            OptimizerConfig::Sgd(_) => "sgd",
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match self {
            OptimizerConfig::AdamW(c) => c.lr,
            OptimizerConfig::Sgd(c) => c.lr,
        }
    }

    /// Checks the hyper-parameters' ranges.
    pub fn validate(&self) -> Result<()> {
        match self {
            OptimizerConfig::AdamW(c) => c.validate(),
            OptimizerConfig::Sgd(c) => c.validate(),
        }
    }

    /// Builds the optimiser over `params`.
    pub fn build(&self, params: Vec<(String, Var)>) -> Result<Box<dyn StatefulOptimizer + Send>> {
        Ok(match self {
            OptimizerConfig::AdamW(c) => Box::new(TorchAdamW::new(params, c.clone())?),
            OptimizerConfig::Sgd(c) => Box::new(TorchSgd::new(params, c.clone())?),
        })
    }
}

/// The JSON-serialisable part of an [`OptimizerState`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimizerMeta {
    /// Hyper-parameters, including the learning rate at the time of the snapshot.
    pub config: OptimizerConfig,
    /// Number of calls to [`StatefulOptimizer::step`].
    pub step: u64,
    /// Per parameter name, the number of steps that updated it (less than `step` if it lacked a
    /// gradient in some steps). AdamW's bias correction uses this count, as PyTorch's per-parameter
    /// `state["step"]`.
    pub param_steps: BTreeMap<String, u64>,
}

/// An optimiser's resumable state: [`meta`](OptimizerState::meta) for JSON and named
/// [`tensors`](OptimizerState::tensors) (`"exp_avg.<param>"`, `"exp_avg_sq.<param>"`,
/// `"momentum.<param>"`) for a tensor file.
#[derive(Debug, Clone)]
pub struct OptimizerState {
    /// Hyper-parameters and step counts.
    pub meta: OptimizerMeta,
    /// Per-parameter tensors, keyed by a prefix ([`EXP_AVG_PREFIX`], [`EXP_AVG_SQ_PREFIX`],
    /// [`MOMENTUM_PREFIX`]) followed by the parameter's name.
    pub tensors: BTreeMap<String, Tensor>,
}

impl OptimizerState {
    /// The tensors, e.g. for `candle_core::safetensors::save`.
    pub fn to_tensors(&self) -> HashMap<String, Tensor> {
        self.tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect()
    }

    /// The non-tensor part as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(&self.meta)
            .map_err(|e| Error::Invalid(format!("optimizer state: cannot write JSON: {e}")))
    }

    /// Reassembles a state from its JSON part (as written by [`to_json`](Self::to_json)) and its
    /// tensors (as returned by [`to_tensors`](Self::to_tensors) or loaded from a file). The
    /// tensors are checked against the parameters by [`StatefulOptimizer::load_state`].
    pub fn from_json(json: &str, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let meta: OptimizerMeta = serde_json::from_str(json)
            .map_err(|e| Error::Invalid(format!("optimizer state JSON: {e}")))?;
        Ok(Self::from_parts(meta, tensors))
    }

    /// The non-tensor part as a JSON value, to embed in a larger JSON document (e.g. a
    /// checkpoint's training state).
    pub fn to_json_value(&self) -> Result<serde_json::Value> {
        serde_json::to_value(&self.meta)
            .map_err(|e| Error::Invalid(format!("optimizer state: cannot write JSON: {e}")))
    }

    /// Reassembles a state from a JSON value written by [`to_json_value`](Self::to_json_value)
    /// and its tensors.
    pub fn from_json_value(
        value: serde_json::Value,
        tensors: HashMap<String, Tensor>,
    ) -> Result<Self> {
        let meta: OptimizerMeta = serde_json::from_value(value)
            .map_err(|e| Error::Invalid(format!("optimizer state JSON: {e}")))?;
        Ok(Self::from_parts(meta, tensors))
    }

    /// Reassembles a state from its parts.
    pub fn from_parts(meta: OptimizerMeta, tensors: HashMap<String, Tensor>) -> Self {
        Self {
            meta,
            tensors: tensors.into_iter().collect(),
        }
    }
}

/// The variables of a `VarMap`, sorted by name so that the order (and thus the optimiser's state
/// layout) does not depend on hash order.
pub fn named_vars(varmap: &candle_nn::VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Invalid("named_vars: the VarMap's lock is poisoned".to_string()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// Checks a parameter list for an optimiser: not empty, unique names, no tensor twice, float
/// dtypes. `who` names the optimiser in errors.
fn check_params(who: &str, params: &[(String, Var)]) -> Result<()> {
    if params.is_empty() {
        return Err(Error::Invalid(format!(
            "{who}: the parameter list is empty"
        )));
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut ids = HashMap::new();
    for (i, (name, var)) in params.iter().enumerate() {
        if let Some(first) = names.insert(name.as_str(), i) {
            return Err(Error::Invalid(format!(
                "{who}: parameter name {name:?} is given twice (positions {first} and {i})"
            )));
        }
        if let Some(other) = ids.insert(var.id(), name) {
            return Err(Error::Invalid(format!(
                "{who}: parameters {other:?} and {name:?} are the same tensor"
            )));
        }
        if !var.dtype().is_float() {
            return Err(Error::Invalid(format!(
                "{who}: parameter {name:?} has dtype {:?}, expected a floating-point dtype \
                 (f16, bf16, f32 or f64)",
                var.dtype()
            )));
        }
    }
    Ok(())
}

/// Checks that every gradient present matches its parameter's shape, dtype and device, so that a
/// step fails before changing anything rather than half-way.
fn check_grads(who: &str, params: &[(String, Var)], grads: &GradStore) -> Result<()> {
    for (name, var) in params {
        let Some(g) = grads.get(var) else { continue };
        if g.dims() != var.dims() {
            return Err(Error::Invalid(format!(
                "{who}: the gradient of parameter {name:?} has shape {:?}, expected the \
                 parameter's shape {:?}",
                g.dims(),
                var.dims()
            )));
        }
        if g.dtype() != var.dtype() {
            return Err(Error::Invalid(format!(
                "{who}: the gradient of parameter {name:?} has dtype {:?}, expected the \
                 parameter's dtype {:?}",
                g.dtype(),
                var.dtype()
            )));
        }
        if !g.device().same_device(var.device()) {
            return Err(Error::Invalid(format!(
                "{who}: the gradient of parameter {name:?} is on {:?}, expected the parameter's \
                 device {:?}",
                g.device().location(),
                var.device().location()
            )));
        }
    }
    Ok(())
}

/// Checks that `meta.param_steps` names exactly the parameters, and returns their step counts in
/// parameter order.
fn restore_param_steps(
    who: &str,
    meta: &OptimizerMeta,
    params: &[(String, Var)],
) -> Result<Vec<u64>> {
    let known: HashSet<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    if let Some(extra) = meta
        .param_steps
        .keys()
        .find(|k| !known.contains(k.as_str()))
    {
        return Err(Error::Invalid(format!(
            "{who}: the optimizer state has parameter {extra:?}, which this optimizer does not \
             have (it has {})",
            list_names(params)
        )));
    }
    let mut steps = Vec::with_capacity(params.len());
    for (name, _) in params {
        let s = *meta.param_steps.get(name).ok_or_else(|| {
            Error::Invalid(format!(
                "{who}: the optimizer state has no entry for parameter {name:?}"
            ))
        })?;
        if s > meta.step {
            return Err(Error::Invalid(format!(
                "{who}: the optimizer state says parameter {name:?} was updated {s} times, more \
                 than the {} steps taken",
                meta.step
            )));
        }
        steps.push(s);
    }
    Ok(steps)
}

/// Takes the state tensor `key` for parameter `name`, checking its shape and moving it to the
/// parameter's device and dtype (as PyTorch's `load_state_dict` casts state to the parameter's).
fn restore_tensor(
    who: &str,
    state: &OptimizerState,
    key: &str,
    name: &str,
    var: &Var,
) -> Result<Tensor> {
    let t = state.tensors.get(key).ok_or_else(|| {
        Error::Invalid(format!(
            "{who}: the optimizer state has no tensor {key:?} for parameter {name:?}"
        ))
    })?;
    if t.dims() != var.dims() {
        return Err(Error::Invalid(format!(
            "{who}: optimizer state tensor {key:?} has shape {:?}, expected parameter {name:?}'s \
             shape {:?}",
            t.dims(),
            var.dims()
        )));
    }
    Ok(t.detach()
        .to_device(var.device())?
        .to_dtype(state_dtype(var.dtype()))?)
}

/// Rejects state tensors that are not in `expected`: a typo'd or foreign key must not be dropped
/// silently.
fn check_no_extra_tensors(
    who: &str,
    state: &OptimizerState,
    expected: &HashSet<String>,
) -> Result<()> {
    match state.tensors.keys().find(|k| !expected.contains(*k)) {
        Some(extra) => Err(Error::Invalid(format!(
            "{who}: the optimizer state has tensor {extra:?}, which belongs to no parameter of \
             this optimizer (or is not expected with these hyper-parameters)"
        ))),
        None => Ok(()),
    }
}

/// The parameter names for an error message, shortened when there are many.
fn list_names(params: &[(String, Var)]) -> String {
    const SHOWN: usize = 8;
    let mut s: Vec<String> = params
        .iter()
        .take(SHOWN)
        .map(|(n, _)| format!("{n:?}"))
        .collect();
    if params.len() > SHOWN {
        s.push(format!("... {} in all", params.len()));
    }
    s.join(", ")
}

/// Checks that `value` is finite and `>= 0`; `what` names it in the error.
fn check_non_negative(who: &str, what: &str, value: f64) -> Result<()> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{who}: {what} must be finite and >= 0, got {value}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn var(dims: &[usize]) -> Var {
        Var::zeros(dims, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn parameter_lists_are_checked() {
        let cfg = AdamWConfig::default();
        let err = TorchAdamW::new(vec![], cfg.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        let err = TorchAdamW::new(
            vec![("a".into(), var(&[2])), ("a".into(), var(&[3]))],
            cfg.clone(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"a\" is given twice"), "{err}");
        let v = var(&[2]);
        let err = TorchSgd::new(
            vec![("a".into(), v.clone()), ("b".into(), v)],
            SgdConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("\"a\" and \"b\" are the same tensor"), "{err}");
        let ints = Var::zeros(2, DType::U32, &Device::Cpu).unwrap();
        let err = TorchAdamW::new(vec![("n".into(), ints)], cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"n\" has dtype U32"), "{err}");
    }

    #[test]
    fn config_is_tagged_json_and_builds() {
        let cfg: OptimizerConfig =
            serde_json::from_str(r#"{"kind": "sgd", "lr": 0.1, "momentum": 0.9}"#).unwrap();
        assert_eq!(cfg.kind(), "sgd");
        assert_eq!(cfg.lr(), 0.1);
        let opt = cfg.build(vec![("w".into(), var(&[2]))]).unwrap();
        assert_eq!(opt.lr(), 0.1);
        let cfg = OptimizerConfig::AdamW(AdamWConfig::default());
        let back: OptimizerConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(serde_json::to_string(&cfg)
            .unwrap()
            .contains(r#""kind":"adamw""#));
    }

    #[test]
    fn state_json_value_round_trips_and_errors_are_named() {
        let mut opt = TorchSgd::new(
            vec![("w".into(), var(&[2]))],
            SgdConfig {
                lr: 0.0020796181086732758,
                momentum: 0.9,
                ..Default::default()
            },
        )
        .unwrap();
        let state = opt.state().unwrap();
        let text = serde_json::to_string(&state.to_json_value().unwrap()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let back = OptimizerState::from_json_value(value, state.to_tensors()).unwrap();
        assert_eq!(back.meta, state.meta);
        opt.load_state(&back).unwrap();
        let e = OptimizerState::from_json("{\"step\": 1}", HashMap::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("optimizer state JSON: missing field"),
            "{e}"
        );
    }

    #[test]
    fn named_vars_are_sorted() {
        let vm = candle_nn::VarMap::new();
        for name in ["z", "a", "m"] {
            vm.get(
                2,
                name,
                candle_nn::Init::Const(0.0),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        }
        let names: Vec<String> = named_vars(&vm)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(names, ["a", "m", "z"]);
    }

    /// Steps of lr * 1 on a parameter at 1.0: each is below half a bf16 ulp (2^-9), so a bf16
    /// parameter updated in bf16 would never move. With the f32 master copy it follows the f32
    /// run: the master bit for bit, the parameter as its rounding; the state (master included)
    /// resumes bit-identically.
    #[test]
    fn half_precision_parameters_are_updated_through_f32_master_copies() {
        let run = |dtype: DType, opt: &dyn Fn(Vec<(String, Var)>) -> Box<dyn StatefulOptimizer>| {
            let p = Var::from_tensor(
                &Tensor::ones(4, DType::F32, &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap(),
            )
            .unwrap();
            let mut o = opt(vec![("p".to_string(), p.clone())]);
            for _ in 0..100 {
                let grads = p.as_tensor().sum_all().unwrap().backward().unwrap();
                o.step(&grads).unwrap();
            }
            (p, o)
        };
        let sgd = |params| -> Box<dyn StatefulOptimizer> {
            Box::new(
                TorchSgd::new(
                    params,
                    SgdConfig {
                        lr: 1e-3,
                        momentum: 0.5,
                        ..SgdConfig::default()
                    },
                )
                .unwrap(),
            )
        };
        let adamw = |params| -> Box<dyn StatefulOptimizer> {
            Box::new(TorchAdamW::new(params, AdamWConfig::with_lr(1e-3)).unwrap())
        };
        for (name, make) in [("sgd", &sgd as &dyn Fn(_) -> _), ("adamw", &adamw)] {
            let (p32, _) = run(DType::F32, make);
            let want = p32.as_tensor().to_vec1::<f32>().unwrap();
            assert!(want[0] < 0.95, "{name}: the f32 run moved: {want:?}");
            for dtype in [DType::BF16, DType::F16] {
                let (p, mut o) = run(dtype, make);
                assert_eq!(p.dtype(), dtype);
                let state = o.state().unwrap();
                let master = &state.tensors["master.p"];
                assert_eq!(master.dtype(), DType::F32, "{name} {dtype:?}");
                assert_eq!(master.to_vec1::<f32>().unwrap(), want, "{name} {dtype:?}");
                let rounded = Tensor::new(want.as_slice(), &Device::Cpu)
                    .unwrap()
                    .to_dtype(dtype)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                let got = p
                    .as_tensor()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
                assert_eq!(got, rounded, "{name} {dtype:?}");
                for t in state.tensors.values() {
                    assert_eq!(t.dtype(), DType::F32, "{name} {dtype:?}: state in f32");
                }
                // Resume from the state into fresh parameters (as a checkpoint load does).
                let p2 = Var::from_tensor(&p.as_tensor().copy().unwrap()).unwrap();
                let mut o2 = make(vec![("p".to_string(), p2.clone())]);
                o2.load_state(&state).unwrap();
                for _ in 0..3 {
                    let g1 = p.as_tensor().sum_all().unwrap().backward().unwrap();
                    o.step(&g1).unwrap();
                    let g2 = p2.as_tensor().sum_all().unwrap().backward().unwrap();
                    o2.step(&g2).unwrap();
                }
                assert_eq!(
                    o.state().unwrap().tensors["master.p"]
                        .to_vec1::<f32>()
                        .unwrap(),
                    o2.state().unwrap().tensors["master.p"]
                        .to_vec1::<f32>()
                        .unwrap(),
                    "{name} {dtype:?}: resumed"
                );
                // A state without the master copy is refused, naming it.
                let mut missing = o.state().unwrap();
                missing.tensors.remove("master.p");
                let e = o2.load_state(&missing).unwrap_err().to_string();
                assert!(e.contains("\"master.p\""), "{e}");
            }
        }
    }
}

//! Model parameters against a `VarMap`: taking them out for a save, checking loaded ones
//! against what the model expects, and copying them in.

use std::collections::{HashMap, HashSet};

use candle_core::{DType, Tensor, Var};
use candle_nn::VarMap;

use crate::{Error, Result};

/// The tensors of `varmap` under their names (shared, not copied), for [`save`](super::save).
pub fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let vars = lock_varmap(varmap)?;
    Ok(vars
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect())
}

/// Checks that `loaded` holds exactly the `expected` (name, shape, dtype) parameters.
///
/// Every problem is reported at once (missing names, unexpected names, wrong shapes, wrong
/// dtypes), each naming the tensor, what was expected and what was found.
pub fn validate_params(
    loaded: &HashMap<String, Tensor>,
    expected: &[(String, Vec<usize>, DType)],
) -> Result<()> {
    let mut problems = Vec::new();
    let mut expected_names = HashSet::new();
    for (name, shape, dtype) in expected {
        if !expected_names.insert(name.as_str()) {
            // A model listing a name twice is a bug in the caller, not in the checkpoint.
            return Err(Error::Invalid(format!(
                "the expected parameters list `{name}` twice"
            )));
        }
        match loaded.get(name) {
            None => problems.push(format!(
                "`{name}` is missing (expected shape {shape:?}, dtype {})",
                dtype.as_str()
            )),
            Some(t) => {
                if t.dims() != shape.as_slice() {
                    problems.push(format!(
                        "`{name}` has shape {:?}, expected {shape:?}",
                        t.dims()
                    ));
                }
                if t.dtype() != *dtype {
                    problems.push(format!(
                        "`{name}` has dtype {}, expected {}",
                        t.dtype().as_str(),
                        dtype.as_str()
                    ));
                }
            }
        }
    }
    let mut unexpected: Vec<(&String, &Tensor)> = loaded
        .iter()
        .filter(|(name, _)| !expected_names.contains(name.as_str()))
        .collect();
    unexpected.sort_by(|a, b| a.0.cmp(b.0));
    for (name, t) in unexpected {
        problems.push(format!(
            "`{name}` (shape {:?}, dtype {}) is not a parameter of the model",
            t.dims(),
            t.dtype().as_str()
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    Err(Error::Invalid(format!(
        "checkpoint parameters do not match the model ({} problem{}): {}",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        problems.join("; ")
    )))
}

/// The (name, shape, dtype) of every variable of `varmap`, sorted by name, for
/// [`validate_params`].
pub fn varmap_expected(varmap: &VarMap) -> Result<Vec<(String, Vec<usize>, DType)>> {
    let vars = lock_varmap(varmap)?;
    Ok(expected_of(&vars))
}

/// Copies `loaded` into the variables of `varmap`, after checking with [`validate_params`] that
/// names, shapes and dtypes match exactly; on a mismatch no variable is changed. Values move to
/// each variable's device.
pub fn copy_into_varmap(loaded: &HashMap<String, Tensor>, varmap: &VarMap) -> Result<()> {
    // One lock for both the check and the copy, so the checked map is the one written.
    let vars = lock_varmap(varmap)?;
    validate_params(loaded, &expected_of(&vars))?;
    // Move everything first: a failing device copy then leaves every variable unchanged.
    let mut moved = Vec::with_capacity(vars.len());
    for (name, var) in vars.iter() {
        let value = loaded
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("`{name}` is missing from the checkpoint")))?;
        moved.push((name, var, value.to_device(var.device())?));
    }
    for (name, var, value) in moved {
        var.set(&value)
            .map_err(|e| Error::Invalid(format!("cannot set parameter `{name}`: {e}")))?;
    }
    Ok(())
}

fn lock_varmap(varmap: &VarMap) -> Result<std::sync::MutexGuard<'_, HashMap<String, Var>>> {
    varmap
        .data()
        .lock()
        .map_err(|_| Error::Invalid("the VarMap's lock is poisoned".to_string()))
}

fn expected_of(vars: &HashMap<String, Var>) -> Vec<(String, Vec<usize>, DType)> {
    let mut expected: Vec<_> = vars
        .iter()
        .map(|(name, var)| (name.clone(), var.dims().to_vec(), var.dtype()))
        .collect();
    expected.sort_by(|a, b| a.0.cmp(&b.0));
    expected
}

//! Splitting a training batch into parts ([`TrainTask::train_part`]): the helpers the tasks
//! share, and (in tests) the check that the parts of a batch add up to it.
//!
//! [`TrainTask::train_part`]: rnn_train::trainer::TrainTask::train_part

use candle_core::{DType, Device, Tensor};
use rnn_train::trainer::{Part, StepLoss};

/// The loss of a part with no rows (see [`TrainTask::train_part`]): zero, counting no units.
///
/// [`TrainTask::train_part`]: rnn_train::trainer::TrainTask::train_part
pub fn empty_part(device: &Device) -> rnn_train::Result<StepLoss> {
    Ok(StepLoss {
        loss: Tensor::zeros((), DType::F32, device)?,
        units: 0,
    })
}

/// Rows `part.rows(n)` of the inputs `xs` and targets `ys` of a batch of `n` rows (dimension 0
/// of both); `None` for an empty part. The whole batch comes back as it is.
pub fn part_rows(
    part: Part,
    xs: &Tensor,
    ys: &Tensor,
) -> rnn_train::Result<Option<(Tensor, Tensor)>> {
    if part == Part::WHOLE {
        return Ok(Some((xs.clone(), ys.clone())));
    }
    let (xs, ys) = (part.narrow(xs, 0)?, part.narrow(ys, 0)?);
    Ok((xs.dim(0)? > 0).then_some((xs, ys)))
}

/// Checks for [`TrainTask::train_part`] implementations.
///
/// [`TrainTask::train_part`]: rnn_train::trainer::TrainTask::train_part
#[cfg(test)]
pub(crate) mod checks {
    use candle_core::{DType, Tensor, Var};
    use rnn_train::trainer::{Part, TrainTask};

    /// Largest difference between the whole batch's loss and the units-weighted mean of its
    /// parts' losses that f32 rounding explains.
    pub const LOSS_TOLERANCE: f64 = 1e-6;
    /// The same for each gradient entry.
    pub const GRAD_TOLERANCE: f64 = 1e-5;

    /// The loss, units and gradients (one flat f64 vector per variable) of one part.
    fn part_of<T: TrainTask>(
        task: &mut T,
        batch: &T::Batch,
        part: Part,
        vars: &[Var],
    ) -> (f64, u64, Vec<Vec<f64>>) {
        let step = task.train_part(batch, part, &mut None).unwrap();
        let loss = step
            .loss
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        if step.units == 0 {
            assert_eq!(loss, 0.0, "an empty part's loss is zero");
            return (
                0.0,
                0,
                vars.iter().map(|v| vec![0.0; v.elem_count()]).collect(),
            );
        }
        let grads = step.loss.backward().unwrap();
        let flat = |t: &Tensor| -> Vec<f64> {
            t.flatten_all()
                .unwrap()
                .to_dtype(DType::F64)
                .unwrap()
                .to_vec1()
                .unwrap()
        };
        let g = vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => flat(g),
                None => vec![0.0; v.elem_count()],
            })
            .collect();
        (loss, step.units, g)
    }

    /// Asserts that for each part count in `counts`, the units-weighted sums of the parts'
    /// losses and gradients equal the whole batch's loss and gradient (within the tolerances),
    /// that the parts' units add up to the batch's, and that parts beyond the batch's rows are
    /// empty (`rows`: the batch's rows). The task's model must have no dropout (each part
    /// would draw other masks).
    pub fn assert_parts_sum_to_whole<T: TrainTask>(
        task: &mut T,
        batch: &T::Batch,
        rows: usize,
        vars: &[Var],
        counts: &[usize],
    ) {
        let (loss, units, grad) = part_of(task, batch, Part::WHOLE, vars);
        assert!(
            units > 0 && loss > 0.0,
            "the whole batch trains: {loss} over {units}"
        );
        assert!(
            grad.iter().flatten().any(|&g| g != 0.0),
            "the gradient is not zero"
        );
        for &count in counts {
            let (mut sum, mut n) = (0.0, 0u64);
            let mut gsum: Vec<Vec<f64>> = grad.iter().map(|g| vec![0.0; g.len()]).collect();
            let mut empty = 0;
            for index in 0..count {
                let (l, u, g) = part_of(task, batch, Part { index, count }, vars);
                empty += usize::from(u == 0);
                sum += l * u as f64;
                n += u;
                for (acc, g) in gsum.iter_mut().zip(&g) {
                    for (a, x) in acc.iter_mut().zip(g) {
                        *a += x * u as f64;
                    }
                }
            }
            assert_eq!(n, units, "{count} parts count the batch's units");
            let mean = sum / n as f64;
            assert!(
                (mean - loss).abs() < LOSS_TOLERANCE,
                "{count} parts: loss {mean} vs whole {loss}"
            );
            for (whole, parts) in grad.iter().flatten().zip(gsum.iter().flatten()) {
                let parts = parts / n as f64;
                assert!(
                    (parts - whole).abs() < GRAD_TOLERANCE,
                    "{count} parts: gradient {parts} vs whole {whole}"
                );
            }
            assert_eq!(
                empty,
                count.saturating_sub(rows),
                "{count} parts of {rows} rows"
            );
        }
    }
}

//! Small pieces the fused backwards share: the input gradient, packing weight gradients, bias
//! gradients as column sums.

use super::gemm;
use super::math::Float;
use super::problem::Problem;
use super::scratch;

/// The input's gradient `dx = dG · W_ih` of a backward, `None` unless [`Problem::input_grad`];
/// `dg` is `(rows, gates)` and `w_ih` `(gates, input)`.
pub(crate) fn input_gradient<T: Float>(
    p: &Problem,
    dg: gemm::MatRef<T>,
    w_ih: &[T],
    gates: usize,
) -> Option<Vec<T>> {
    p.input_grad.then(|| {
        // Overwritten by the product.
        let mut dx = scratch::take(p.rows() * p.input);
        let w_ih = gemm::MatRef::row_major(w_ih, gates, p.input);
        gemm::matmul(&mut dx, 0, p.input, false, dg, w_ih, true);
        dx
    })
}

/// Appends a weight gradient to the packed parameter gradient and recycles its buffer.
pub(crate) fn append<T: Float>(dst: &mut Vec<T>, grad: Vec<T>) {
    dst.extend_from_slice(&grad);
    scratch::give(grad);
}

/// Adds up the rows of a row-major `(rows, width)` buffer into `out (width)`.
pub(crate) fn colsum_into<T: Float>(data: &[T], width: usize, out: &mut [T]) {
    for row in data.chunks_exact(width) {
        for (o, v) in out.iter_mut().zip(row) {
            *o += *v;
        }
    }
}

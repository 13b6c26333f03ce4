//! [`MatRef`]: the strided read-only matrix view every product takes.

use crate::ops::math::Float;

/// A read-only strided matrix view: element (i, j) is at `ptr[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a, T> {
    pub(super) data: &'a [T],
    pub(super) offset: usize,
    pub(super) rs: usize,
    pub(super) cs: usize,
    pub(super) rows: usize,
    pub(super) cols: usize,
}

impl<'a, T> MatRef<'a, T> {
    /// A row-major `(rows, cols)` matrix stored contiguously from `data[0]`.
    pub fn row_major(data: &'a [T], rows: usize, cols: usize) -> Self {
        Self::strided(data, 0, rows, cols, cols, 1)
    }

    /// Any layout; panics in debug builds if a corner falls outside `data`.
    pub fn strided(
        data: &'a [T],
        offset: usize,
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Self {
        debug_assert!(
            rows == 0 || cols == 0 || offset + (rows - 1) * rs + (cols - 1) * cs < data.len(),
            "matrix view out of bounds"
        );
        Self {
            data,
            offset,
            rs,
            cs,
            rows,
            cols,
        }
    }

    /// The transpose (a view, no copy).
    pub fn t(self) -> Self {
        Self {
            rs: self.cs,
            cs: self.rs,
            rows: self.cols,
            cols: self.rows,
            ..self
        }
    }
}

/// `v` viewed as f32; `T` must be f32.
pub(super) fn cast<T: Float>(v: MatRef<'_, T>) -> MatRef<'_, f32> {
    MatRef {
        data: f32_view(v.data).expect("T is f32"),
        offset: v.offset,
        rs: v.rs,
        cs: v.cs,
        rows: v.rows,
        cols: v.cols,
    }
}

/// `data` as `&[f32]` when `T` is `f32`.
pub(super) fn f32_view<T: Float>(data: &[T]) -> Option<&[f32]> {
    // SAFETY: T is f32 (same TypeId), so the cast is an identity.
    (std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(data.as_ptr() as *const f32, data.len()) })
}

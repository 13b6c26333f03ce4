//! What one layer-direction's run is: its shapes and step order ([`Problem`]) and the views of
//! its packed parameters ([`ParamSizes`], [`Weights`]).

/// Shapes and order of one layer-direction's run. Rows of the input, the output and every saved
/// buffer are (step, batch) pairs in the caller's layout: `t * batch + b` time-major, or
/// `b * seq_len + t` batch-first.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub seq_len: usize,
    pub batch: usize,
    pub input: usize,
    pub hidden: usize,
    /// Size of `h`: `proj_size` when projecting, else `hidden`.
    pub state: usize,
    pub batch_first: bool,
    pub reverse: bool,
    /// Valid steps per batch row; `None` = all `seq_len`.
    pub lengths: Option<Vec<usize>>,
    /// Whether the backward computes the input's gradient (`dx = dG · W_ih`, a product as large
    /// as a weight gradient): not when the input is data outside the autograd graph, as PyTorch
    /// skips the gradient of an input that does not require one.
    pub input_grad: bool,
}

impl Problem {
    pub(crate) fn rows(&self) -> usize {
        self.seq_len * self.batch
    }

    #[inline]
    pub(crate) fn row(&self, t: usize, b: usize) -> usize {
        if self.batch_first {
            b * self.seq_len + t
        } else {
            t * self.batch + b
        }
    }

    /// `(start, len)` of the part of a `width`-column buffer holding step `t`'s rows for batch rows
    /// `b0 .. b0 + n`: only that chunk of the batch ever touches it.
    #[inline]
    pub(crate) fn span(&self, t: usize, b0: usize, n: usize, width: usize) -> (usize, usize) {
        let first = self.row(t, b0);
        let last = self.row(t, b0 + n - 1);
        (first * width, (last - first) * width + width)
    }

    /// Distance between consecutive batch rows of one step in a buffer of `width` columns.
    #[inline]
    pub(crate) fn step_rs(&self, width: usize) -> usize {
        if self.batch_first {
            self.seq_len * width
        } else {
            width
        }
    }

    #[inline]
    pub(crate) fn valid(&self, t: usize, b: usize) -> bool {
        self.lengths.as_ref().is_none_or(|l| t < l[b])
    }

    /// Steps in the order the forward pass visits them.
    pub(crate) fn forward_steps(&self) -> Box<dyn Iterator<Item = usize>> {
        if self.reverse {
            Box::new((0..self.seq_len).rev())
        } else {
            Box::new(0..self.seq_len)
        }
    }

    /// Steps in the order the backward pass visits them (the forward order reversed).
    pub(crate) fn backward_steps(&self) -> Box<dyn Iterator<Item = usize>> {
        if self.reverse {
            Box::new(0..self.seq_len)
        } else {
            Box::new((0..self.seq_len).rev())
        }
    }
}

/// Views of the packed parameters `[w_ih | w_hh | b_ih | b_hh | w_hr]` (biases and `w_hr` optional).
pub(crate) struct Weights<'a, T> {
    pub w_ih: &'a [T],
    pub w_hh: &'a [T],
    pub b_ih: Option<&'a [T]>,
    pub b_hh: Option<&'a [T]>,
    pub w_hr: Option<&'a [T]>,
}

/// Lengths of the packed parameter pieces, in packing order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParamSizes {
    pub(crate) w_ih: usize,
    pub(crate) w_hh: usize,
    pub(crate) bias: usize,
    pub(crate) w_hr: usize,
}

impl ParamSizes {
    pub(crate) fn total(&self) -> usize {
        self.w_ih + self.w_hh + 2 * self.bias + self.w_hr
    }

    pub(crate) fn split<'a, T>(&self, flat: &'a [T]) -> Weights<'a, T> {
        let (w_ih, rest) = flat.split_at(self.w_ih);
        let (w_hh, rest) = rest.split_at(self.w_hh);
        let (b_ih, rest) = rest.split_at(self.bias);
        let (b_hh, rest) = rest.split_at(self.bias);
        let w_hr = &rest[..self.w_hr];
        let some = |s: &'a [T]| (!s.is_empty()).then_some(s);
        Weights {
            w_ih,
            w_hh,
            b_ih: some(b_ih),
            b_hh: some(b_hh),
            w_hr: some(w_hr),
        }
    }
}

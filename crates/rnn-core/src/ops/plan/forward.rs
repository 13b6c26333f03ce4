//! The forward plan: copy the initial state into the result's final-state slots (the kernels
//! update it there in place), one GEMM for the input projection of all steps, then per step one
//! GEMM against `W_hh` and one pointwise kernel (plus the `W_hr` product and its kernel when an
//! LSTM projects).

use super::ir::{ArgsDesc, Buf, Gemm, Kernel, Op, Plan, RowMajor, Spec};
use crate::config::Mode;

/// The forward of `spec`: writes [`Buf::Out`] and, when `spec.save`, the saved buffers.
pub(crate) fn forward_plan(spec: &Spec) -> Plan {
    let p = spec.problem;
    let (bb, hh, pp, ii) = (p.batch, p.hidden, p.state, p.input);
    let rows = p.rows();
    let gh = spec.gates() * hh;
    let lstm = spec.mode == Mode::Lstm;
    let proj = spec.proj();
    let [o_w_ih, o_w_hh, o_b_ih, o_b_hh, o_w_hr] = spec.param_offsets();
    let (o_hn, o_cn) = (rows * pp, rows * pp + bb * pp);
    let save = spec.save;

    let mut scratch = vec![(Buf::Gates, rows * gh)];
    if save {
        scratch.push((Buf::Hprev, rows * pp));
        if lstm {
            scratch.push((Buf::Cprev, rows * hh));
            scratch.push((Buf::Tanhc, rows * hh));
        }
        if spec.mode == Mode::Gru {
            scratch.push((Buf::Hn, rows * hh));
        }
    }
    match (spec.mode, proj) {
        (Mode::Gru, _) => scratch.push((Buf::Hg, bb * 3 * hh)),
        (Mode::Lstm, true) => {
            scratch.push((Buf::Hg, bb * pp));
            scratch.push((Buf::R, bb * hh));
        }
        _ => {}
    }

    let mut ops = vec![Op::Copy {
        src: Buf::State0.at(0),
        dst: Buf::Out.at(o_hn),
        len: bb * pp,
    }];
    if lstm {
        ops.push(Op::Copy {
            src: Buf::State0.at(bb * pp),
            dst: Buf::Out.at(o_cn),
            len: bb * hh,
        });
    }
    // Gates (rows, G*H) = X W_ih^T: the input projection of every step.
    ops.push(Op::Gemm(Gemm::row_major(
        Buf::Gates.at(0),
        gh,
        (rows, gh, ii),
        RowMajor::new(Buf::X.at(0), ii),
        RowMajor::new(Buf::Params.at(o_w_ih), ii).t(),
        false,
    )));
    let w_hh_t = RowMajor::new(Buf::Params.at(o_w_hh), pp).t();
    let h = RowMajor::new(Buf::Out.at(o_hn), pp);
    let saved = |b: Buf| save.then(|| b.at(0));
    let mut t_prev = None;
    for t in p.forward_steps() {
        let (row_base, row_stride) = spec.rows_of_step(t);
        let mut a = ArgsDesc {
            b_ih: spec.bias().then(|| Buf::Params.at(o_b_ih)),
            b_hh: spec.bias().then(|| Buf::Params.at(o_b_hh)),
            gates: Some(Buf::Gates.at(0)),
            h: Some(Buf::Out.at(o_hn)),
            y: Some(Buf::Out.at(0)),
            hprev: saved(Buf::Hprev),
            ..spec.step_args(t, t_prev)
        };
        let kernel = match spec.mode {
            Mode::Gru => {
                // Hg (B, 3H) = h W_hh^T: the reset gate multiplies its n part, so it stays apart.
                ops.push(Op::Gemm(Gemm::row_major(
                    Buf::Hg.at(0),
                    3 * hh,
                    (bb, gh, pp),
                    h,
                    w_hh_t,
                    false,
                )));
                a.hg = Some(Buf::Hg.at(0));
                a.hn = saved(Buf::Hn);
                Kernel::GruFwd
            }
            mode => {
                // Gates of step t += h W_hh^T, in place: the step's rows are `row_stride` apart.
                ops.push(Op::Gemm(Gemm::row_major(
                    Buf::Gates.at(row_base * gh),
                    row_stride * gh,
                    (bb, gh, pp),
                    h,
                    w_hh_t,
                    true,
                )));
                if mode == Mode::Lstm {
                    a.c = Some(Buf::Out.at(o_cn));
                    a.cprev = saved(Buf::Cprev);
                    a.tanhc = saved(Buf::Tanhc);
                    Kernel::LstmFwd
                } else {
                    Kernel::RnnFwd
                }
            }
        };
        if proj {
            // The cell kernel writes r = o * tanh(c); h and y come from r W_hr^T below.
            a.r = Some(Buf::R.at(0));
            a.hprev = None;
        }
        ops.push(Op::Pointwise {
            kernel,
            n: bb * hh,
            args: Box::new(a),
        });
        if proj {
            ops.push(Op::Gemm(Gemm::row_major(
                Buf::Hg.at(0),
                pp,
                (bb, pp, hh),
                RowMajor::new(Buf::R.at(0), hh),
                RowMajor::new(Buf::Params.at(o_w_hr), hh).t(),
                false,
            )));
            ops.push(Op::Pointwise {
                kernel: Kernel::LstmProjFwd,
                n: bb * pp,
                args: Box::new(ArgsDesc {
                    hg: Some(Buf::Hg.at(0)),
                    h: Some(Buf::Out.at(o_hn)),
                    y: Some(Buf::Out.at(0)),
                    hprev: saved(Buf::Hprev),
                    ..spec.step_args(t, t_prev)
                }),
            });
        }
        t_prev = Some(t);
    }
    Plan { ops, scratch }
}

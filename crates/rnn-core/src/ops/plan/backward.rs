//! The backward plan, steps in the reverse order of the forward: per step one pointwise kernel
//! (gate gradients, the cell gradient, and the gradient carried past masked steps) and one GEMM
//! `dgates W_hh`; then one kernel for the initial-state gradient, one GEMM each for `dX`, `dW_ih`
//! and `dW_hh`, and one column-sum kernel for the biases (rows added in order: deterministic).
//! An LSTM with projection resolves `dh` in a kernel of its own and multiplies it by `W_hr`
//! before the cell kernel, and ends with `dW_hr`.

use super::ir::{ArgsDesc, Buf, Gemm, Kernel, Op, Plan, RowMajor, Spec};
use crate::config::Mode;

/// The backward of `spec`, reading [`Buf::GradOut`], the inputs and the forward's saved buffers;
/// writes [`Buf::DState`], [`Buf::DParams`] and, when the problem asks for it, [`Buf::DX`].
pub(crate) fn backward_plan(spec: &Spec) -> Plan {
    let p = spec.problem;
    let (bb, hh, pp, ii) = (p.batch, p.hidden, p.state, p.input);
    let rows = p.rows();
    let gh = spec.gates() * hh;
    let lstm = spec.mode == Mode::Lstm;
    let gru = spec.mode == Mode::Gru;
    let proj = spec.proj();
    let [o_w_ih, o_w_hh, o_b_ih, o_b_hh, o_w_hr] = spec.param_offsets();
    let (o_dhn, o_dcn) = (rows * pp, rows * pp + bb * pp);

    let mut scratch = vec![
        (Buf::Dg, rows * gh),
        (Buf::Carry, bb * pp),
        (Buf::DhRec, bb * pp),
    ];
    if gru {
        scratch.push((Buf::Dgh, rows * gh));
    }
    if lstm {
        scratch.push((Buf::Dc, bb * hh));
    }
    if proj {
        scratch.extend([
            (Buf::Dr, bb * hh),
            (Buf::Dh, bb * pp),
            (Buf::DhAll, rows * pp),
            (Buf::RAll, rows * hh),
        ]);
    }

    // The gradient of the pre-activations that multiply h: GRU's hidden side, else all of them.
    let dg_h = if gru { Buf::Dgh } else { Buf::Dg };
    let mut ops = Vec::new();
    let mut t_prev: Option<usize> = None;
    for t in p.backward_steps() {
        let (row_base, row_stride) = spec.rows_of_step(t);
        let first = t_prev.is_none();
        let base = ArgsDesc {
            gates: Some(Buf::Gates.at(0)),
            dy: Some(Buf::GradOut.at(0)),
            carry_in: Some(if first {
                Buf::GradOut.at(o_dhn)
            } else {
                Buf::Carry.at(0)
            }),
            carry_out: Some(Buf::Carry.at(0)),
            dh_rec: (!first).then(|| Buf::DhRec.at(0)),
            dg: Some(Buf::Dg.at(0)),
            ..spec.step_args(t, t_prev)
        };
        let dc_in = Some(if first {
            Buf::GradOut.at(o_dcn)
        } else {
            Buf::Dc.at(0)
        });
        if proj {
            ops.push(Op::Pointwise {
                kernel: Kernel::DhResolve,
                n: bb * pp,
                args: Box::new(ArgsDesc {
                    dh: Some(Buf::Dh.at(0)),
                    dh_all: Some(Buf::DhAll.at(0)),
                    dg: None,
                    gates: None,
                    ..base.clone()
                }),
            });
            // Dr (B, H) = dh W_hr.
            ops.push(Op::Gemm(Gemm::row_major(
                Buf::Dr.at(0),
                hh,
                (bb, hh, pp),
                RowMajor::new(Buf::Dh.at(0), pp),
                RowMajor::new(Buf::Params.at(o_w_hr), hh),
                false,
            )));
        }
        let (kernel, args) = match spec.mode {
            Mode::Lstm => {
                let mut a = ArgsDesc {
                    dc_in,
                    dc_out: Some(Buf::Dc.at(0)),
                    cprev: Some(Buf::Cprev.at(0)),
                    tanhc: Some(Buf::Tanhc.at(0)),
                    ..base
                };
                if proj {
                    a.dr = Some(Buf::Dr.at(0));
                    a.dy = None;
                    a.carry_in = None;
                    a.carry_out = None;
                    a.dh_rec = None;
                }
                (Kernel::LstmBwd, a)
            }
            Mode::Gru => (
                Kernel::GruBwd,
                ArgsDesc {
                    hprev: Some(Buf::Hprev.at(0)),
                    hn: Some(Buf::Hn.at(0)),
                    dgh: Some(Buf::Dgh.at(0)),
                    ..base
                },
            ),
            Mode::RnnTanh | Mode::RnnRelu => (Kernel::RnnBwd, base),
        };
        ops.push(Op::Pointwise {
            kernel,
            n: bb * hh,
            args: Box::new(args),
        });
        // DhRec (B, P) = dgates of step t (rows `row_stride` apart) W_hh.
        ops.push(Op::Gemm(Gemm::row_major(
            Buf::DhRec.at(0),
            pp,
            (bb, pp, gh),
            RowMajor::new(dg_h.at(row_base * gh), row_stride * gh),
            RowMajor::new(Buf::Params.at(o_w_hh), pp),
            false,
        )));
        t_prev = Some(t);
    }
    // [dh0 | dc0].
    ops.push(Op::Pointwise {
        kernel: Kernel::BwdFinal,
        n: bb * pp + if lstm { bb * hh } else { 0 },
        args: Box::new(ArgsDesc {
            carry_in: Some(if t_prev.is_some() {
                Buf::Carry.at(0)
            } else {
                Buf::GradOut.at(o_dhn)
            }),
            dh_rec: t_prev.map(|_| Buf::DhRec.at(0)),
            dc_in: lstm.then(|| {
                if t_prev.is_some() {
                    Buf::Dc.at(0)
                } else {
                    Buf::GradOut.at(o_dcn)
                }
            }),
            out1: Some(Buf::DState.at(0)),
            t: -1,
            ..spec.step_args(0, t_prev)
        }),
    });
    let dg = RowMajor::new(Buf::Dg.at(0), gh);
    if p.input_grad {
        // dX (rows, I) = dG W_ih.
        ops.push(Op::Gemm(Gemm::row_major(
            Buf::DX.at(0),
            ii,
            (rows, ii, gh),
            dg,
            RowMajor::new(Buf::Params.at(o_w_ih), ii),
            false,
        )));
    }
    // dW_ih (G*H, I) = dG^T X; dW_hh (G*H, P) = dG_h^T Hprev.
    ops.push(Op::Gemm(Gemm::row_major(
        Buf::DParams.at(o_w_ih),
        ii,
        (gh, ii, rows),
        dg.t(),
        RowMajor::new(Buf::X.at(0), ii),
        false,
    )));
    ops.push(Op::Gemm(Gemm::row_major(
        Buf::DParams.at(o_w_hh),
        pp,
        (gh, pp, rows),
        RowMajor::new(dg_h.at(0), gh).t(),
        RowMajor::new(Buf::Hprev.at(0), pp),
        false,
    )));
    if spec.bias() {
        ops.push(Op::Pointwise {
            kernel: Kernel::Colsum,
            n: if gru { 2 * gh } else { gh },
            args: Box::new(ArgsDesc {
                rows: rows as i64,
                width: gh as i64,
                dg: Some(Buf::Dg.at(0)),
                dgh: gru.then(|| Buf::Dgh.at(0)),
                out1: Some(Buf::DParams.at(o_b_ih)),
                out2: Some(Buf::DParams.at(o_b_hh)),
                ..ArgsDesc::default()
            }),
        });
    }
    if proj {
        ops.push(Op::Pointwise {
            kernel: Kernel::LstmRAll,
            n: rows * hh,
            args: Box::new(ArgsDesc {
                hidden: hh as i64,
                gates: Some(Buf::Gates.at(0)),
                tanhc: Some(Buf::Tanhc.at(0)),
                r: Some(Buf::RAll.at(0)),
                ..ArgsDesc::default()
            }),
        });
        // dW_hr (P, H) = dH_all^T R_all.
        ops.push(Op::Gemm(Gemm::row_major(
            Buf::DParams.at(o_w_hr),
            hh,
            (pp, hh, rows),
            RowMajor::new(Buf::DhAll.at(0), pp).t(),
            RowMajor::new(Buf::RAll.at(0), hh),
            false,
        )));
    }
    Plan { ops, scratch }
}

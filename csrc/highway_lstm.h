// highway_lstm_fwd / highway_lstm_bwd: one highway-LSTM layer (one direction) on CPU.
//
// Semantics are those of stackft.kernels.reference.highway_lstm (the spec of record):
// gates from x_t W_xᵀ (6H: i, f, g, o, r, carry) and h_{t-1} W_hᵀ + b (5H: i, f, g, o, r),
//   i, f, o, r = σ(·), g = tanh(·), c_t = f·c_{t-1} + i·g, h_t = (r·o·tanh(c_t) + (1−r)·carry)·mask,
// steps t >= lengths[b] keep the state and output 0, reverse runs from each row's last valid step
// back to 0.
//
// Forward: one GEMM over all steps for the input projection, one GEMM per step for the recurrent
// projection, one fused elementwise pass per step (at::parallel_for over batch rows, SIMD gate
// math with a polynomial exp). It keeps the activated gates (in place of the input projection),
// and the state each step started from (h_prev, c_prev), and returns them for the backward:
//   (out [B,T,H], h_n [B,H], c_n [B,H], gates [B,T,6H] acc, h_prev [B,T,H], c_prev [B,T,H] acc)
// acc = float32 for float32/bfloat16 inputs (bf16: the GEMMs run in bf16, gate math and the cell
// state in fp32), float64 for float64.
//
// Backward: per step (reverse order) one fused elementwise pass that recomputes tanh(c_t) from
// the saved gates and c_prev, then one GEMM for the recurrent gradient dh_{t-1}; the weight
// gradients, the bias gradient and dx are single GEMMs / reductions over all steps at the end.
//   -> (dx, dW_x, dW_h, db, dh0, dc0, d_dropout_mask); d_dropout_mask is [0] without a mask, and
// output_mask = [dx, dweights, dstate] skips what is not wanted (those come back as [0]): no dx
// GEMM for an input that needs no grad, no weight GEMMs for frozen weights, no last recurrent GEMM
// without h0/c0 grads.
//
// Registered as torch.ops.stackft_C.highway_lstm_fwd / highway_lstm_bwd (CPU);
// stackft.kernels.ops.highway_lstm_cpp composes them into an autograd-aware custom op.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace stackft {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
highway_lstm_fwd_cpu(const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& W_x,
                     const at::Tensor& W_h, const at::Tensor& b, const std::optional<at::Tensor>& h0,
                     const std::optional<at::Tensor>& c0,
                     const std::optional<at::Tensor>& dropout_mask, bool reverse);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
highway_lstm_bwd_cpu(const std::optional<at::Tensor>& grad_out,
                     const std::optional<at::Tensor>& grad_h_n,
                     const std::optional<at::Tensor>& grad_c_n, const at::Tensor& x,
                     const at::Tensor& lengths, const at::Tensor& W_x, const at::Tensor& W_h,
                     const std::optional<at::Tensor>& dropout_mask, const at::Tensor& gates,
                     const at::Tensor& h_prev, const at::Tensor& c_prev, bool reverse,
                     std::array<bool, 3> output_mask);

}  // namespace stackft

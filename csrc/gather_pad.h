// gather_pad: ragged token features -> padded batch, dequantised on the fly.
//
// values  [N_tokens, d]  float32 | float16 | bfloat16 | int8, rows contiguous
// offsets [N + 1]        int64, sequence i owns rows offsets[i] .. offsets[i+1]
// indices [B]            int32 | int64, sequences to gather (any order, repeats allowed)
// scales  [N_tokens]     float16, required for int8 values (x = q * scale), else absent
// max_len    optional int: the padded length. Given, Tmax = max_len (the caller knows the lengths:
//            no pass over them is needed to size the output, and on CUDA no host sync at all);
//            every gathered length must be <= max_len (CPU: ValueError; CUDA: the caller's
//            contract, see gather_pad_cuda.cu). Absent, Tmax = longest gathered length.
// returns (padded [B, Tmax, d] out_dtype, mask [B, Tmax] bool), padding rows are zero.
//
// The op library is registered as torch.ops.stackft_C.gather_pad (CPU kernel in gather_pad.cpp,
// CUDA kernel in gather_pad_cuda.cu when built with CUDA).
#pragma once

#include <ATen/core/Tensor.h>
#include <optional>

#include <tuple>

namespace stackft {

// Shape/dtype checks shared by the CPU and CUDA entry points (data checks live in the kernels).
void check_gather_pad_args(const at::Tensor& values, const at::Tensor& offsets,
                           const at::Tensor& indices, const std::optional<at::Tensor>& scales,
                           at::ScalarType out_dtype);

std::tuple<at::Tensor, at::Tensor> gather_pad_cpu(const at::Tensor& values,
                                                  const at::Tensor& offsets,
                                                  const at::Tensor& indices,
                                                  const std::optional<at::Tensor>& scales,
                                                  at::ScalarType out_dtype,
                                                  std::optional<int64_t> max_len);

}  // namespace stackft

// gather_pad: ragged token features -> padded batch, dequantised on the fly.
//
// values  [N_tokens, d]  float32 | float16 | bfloat16 | int8, rows contiguous
// offsets [N + 1]        int64, sequence i owns rows offsets[i] .. offsets[i+1]
// indices [B]            int32 | int64, sequences to gather (any order, repeats allowed)
// scales  [N_tokens]     float16, required for int8 values (x = q * scale), else absent
// returns (padded [B, Tmax, d] out_dtype, mask [B, Tmax] bool), Tmax = longest gathered length,
// padding rows are zero.
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
                                                  at::ScalarType out_dtype);

}  // namespace stackft

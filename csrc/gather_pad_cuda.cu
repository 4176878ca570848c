// CUDA entry point of gather_pad (torch glue around gather_pad_kernels.cuh).
//
// Output device = indices' device. values / offsets / scales may be on that device or in pinned
// host memory (read in place by the kernel through unified addressing: no full-store upload).
// Only c10/cuda headers are used (not ATen/cuda/CUDAContext.h), so no cuBLAS/cuSPARSE headers
// are needed to build this file.
#include "gather_pad.h"
#include "gather_pad_kernels.cuh"

#include <ATen/core/TensorBody.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

namespace stackft {
namespace {

#define STACKFT_CUDA_CHECK(expr)                                                         \
  do {                                                                                   \
    const cudaError_t err_ = (expr);                                                     \
    TORCH_CHECK(err_ == cudaSuccess, "gather_pad (CUDA): ", cudaGetErrorString(err_)); \
  } while (0)

void check_reachable(const at::Tensor& t, const at::Device& dev, const char* name) {
  TORCH_CHECK(t.device() == dev || (t.device().is_cpu() && t.is_pinned()), "gather_pad: ", name,
              " must be on ", dev, " (the device of indices) or in pinned host memory, got ",
              t.device());
}

template <typename in_t, typename out_t, bool kScaled>
cudaError_t launch_typed(const at::Tensor& values, const at::Tensor& scales,
                         const int64_t* starts, const int64_t* lens, int64_t B, int64_t T,
                         at::Tensor& out, at::Tensor& mask, cudaStream_t stream) {
  return cuda::launch_gather_pad<in_t, out_t, kScaled>(
      reinterpret_cast<const in_t*>(values.const_data_ptr()),
      kScaled ? reinterpret_cast<const __half*>(scales.const_data_ptr()) : nullptr, starts, lens,
      B, T, values.size(1), reinterpret_cast<out_t*>(out.mutable_data_ptr()),
      mask.mutable_data_ptr<bool>(), stream);
}

template <typename in_t, bool kScaled>
cudaError_t launch_out(const at::Tensor& values, const at::Tensor& scales, const int64_t* starts,
                       const int64_t* lens, int64_t B, int64_t T, at::Tensor& out,
                       at::Tensor& mask, cudaStream_t stream) {
  switch (out.scalar_type()) {
    case at::kFloat:
      return launch_typed<in_t, float, kScaled>(values, scales, starts, lens, B, T, out, mask,
                                                stream);
    case at::kHalf:
      return launch_typed<in_t, __half, kScaled>(values, scales, starts, lens, B, T, out, mask,
                                                 stream);
    case at::kBFloat16:
      return launch_typed<in_t, __nv_bfloat16, kScaled>(values, scales, starts, lens, B, T, out,
                                                        mask, stream);
    default:
      return cudaErrorInvalidValue;
  }
}

std::tuple<at::Tensor, at::Tensor> gather_pad_cuda(const at::Tensor& values_in,
                                                   const at::Tensor& offsets_in,
                                                   const at::Tensor& indices_in,
                                                   const std::optional<at::Tensor>& scales_in,
                                                   at::ScalarType out_dtype) {
  check_gather_pad_args(values_in, offsets_in, indices_in, scales_in, out_dtype);
  TORCH_CHECK(indices_in.is_cuda(), "gather_pad (CUDA kernel): indices must be a CUDA tensor");
  const at::Device dev = indices_in.device();
  check_reachable(values_in, dev, "values");
  check_reachable(offsets_in, dev, "offsets");
  if (scales_in.has_value()) check_reachable(*scales_in, dev, "scales");
  const c10::cuda::CUDAGuard guard(dev);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(dev.index()).stream();

  const at::Tensor values = values_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  const at::Tensor indices = indices_in.contiguous();
  const bool scaled = values.scalar_type() == at::kChar;
  at::Tensor scales;
  if (scaled) scales = scales_in->contiguous();

  const int64_t B = indices.size(0);
  const int64_t n_seqs = offsets.size(0) - 1;
  const int64_t n_tokens = values.size(0);
  const int64_t d = values.size(1);
  const auto long_opts = indices.options().dtype(at::kLong);

  // plan: [starts (B) | lens (B) | stats (2)] in one allocation, one host read of stats.
  at::Tensor plan = at::empty({2 * B + 2}, long_opts);
  int64_t* starts = plan.mutable_data_ptr<int64_t>();
  int64_t* lens = starts + B;
  auto* stats = reinterpret_cast<unsigned long long*>(lens + B);
  STACKFT_CUDA_CHECK(cudaMemsetAsync(stats, 0, 2 * sizeof(unsigned long long), stream));
  if (indices.scalar_type() == at::kLong) {
    STACKFT_CUDA_CHECK(cuda::launch_gather_pad_plan<int64_t>(
        offsets.const_data_ptr<int64_t>(), n_seqs, n_tokens, indices.const_data_ptr<int64_t>(), B,
        starts, lens, stats, stream));
  } else {
    STACKFT_CUDA_CHECK(cuda::launch_gather_pad_plan<int32_t>(
        offsets.const_data_ptr<int64_t>(), n_seqs, n_tokens, indices.const_data_ptr<int32_t>(), B,
        starts, lens, stats, stream));
  }
  unsigned long long host_stats[2];
  STACKFT_CUDA_CHECK(
      cudaMemcpyAsync(host_stats, stats, sizeof(host_stats), cudaMemcpyDeviceToHost, stream));
  STACKFT_CUDA_CHECK(cudaStreamSynchronize(stream));
  TORCH_CHECK_INDEX(!(host_stats[1] & cuda::kErrIndex), "gather_pad: an index is out of range for ",
                    n_seqs, " sequences");
  TORCH_CHECK_VALUE(!(host_stats[1] & cuda::kErrOffsets),
                    "gather_pad: offsets must be non-decreasing within [0, N_tokens=", n_tokens,
                    "]");
  const int64_t T = static_cast<int64_t>(host_stats[0]);

  auto out = at::empty({B, T, d}, indices.options().dtype(out_dtype));
  auto mask = at::empty({B, T}, indices.options().dtype(at::kBool));
  cudaError_t err = cudaSuccess;
  switch (values.scalar_type()) {
    case at::kFloat:
      err = launch_out<float, false>(values, scales, starts, lens, B, T, out, mask, stream);
      break;
    case at::kHalf:
      err = launch_out<__half, false>(values, scales, starts, lens, B, T, out, mask, stream);
      break;
    case at::kBFloat16:
      err = launch_out<__nv_bfloat16, false>(values, scales, starts, lens, B, T, out, mask, stream);
      break;
    case at::kChar:
      err = launch_out<int8_t, true>(values, scales, starts, lens, B, T, out, mask, stream);
      break;
    default:
      err = cudaErrorInvalidValue;
  }
  STACKFT_CUDA_CHECK(err);
  return {out, mask};
}

}  // namespace
}  // namespace stackft

TORCH_LIBRARY_IMPL(stackft_C, CUDA, m) { m.impl("gather_pad", &stackft::gather_pad_cuda); }

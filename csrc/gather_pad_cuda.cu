// CUDA entry point of gather_pad (torch glue around gather_pad_kernels.cuh).
//
// Output device = indices' device. values / offsets / scales may be on that device or in pinned
// host memory (read in place by the kernel through unified addressing: no full-store upload).
// Only c10/cuda headers are used (not ATen/cuda/CUDAContext.h), so no cuBLAS/cuSPARSE headers
// are needed to build this file.
//
// Host syncs. Without max_len the output's Tmax is data-dependent: the host reads the plan kernel's
// stats (max length, error bits) once, through c10::cuda::memcpy_and_sync, so the call raises on bad
// indices/offsets and torch.cuda.set_sync_debug_mode sees the sync. With max_len the output is
// sized from it and the host reads nothing: no sync, and the call can run on a side stream or
// inside a CUDA graph capture. The data checks then still run in the plan kernel but cannot raise;
// the contract is the caller's (FeatureCache.gather computes max_len from host-side offsets):
//   - every gathered length <= max_len; a longer one is truncated to max_len (kErrTooLong set);
//   - indices in range and offsets valid; a bad row comes out as all padding (mask False).
// Memory safety never depends on it (the kernels check bounds before reading). With the
// environment variable STACKFT_GATHER_PAD_CHECK=1 a max_len call syncs and raises like one
// without max_len (ValueError for a length over max_len): for debugging and the tests.
#include "gather_pad.h"
#include "gather_pad_kernels.cuh"

#include <ATen/core/TensorBody.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdlib>
#include <cstring>

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

bool check_env() {
  const char* v = std::getenv("STACKFT_GATHER_PAD_CHECK");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
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
                                                   at::ScalarType out_dtype,
                                                   std::optional<int64_t> max_len) {
  check_gather_pad_args(values_in, offsets_in, indices_in, scales_in, out_dtype);
  TORCH_CHECK_VALUE(!max_len.has_value() || *max_len >= 0, "gather_pad: max_len must be >= 0, got ",
                    max_len.value_or(0));
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

  // plan: [starts (B) | lens (B) | stats (2)] in one allocation; without max_len, one host read
  // of stats (the only sync of the call).
  const int64_t max_len_arg = max_len.has_value() ? *max_len : -1;
  at::Tensor plan = at::empty({2 * B + 2}, long_opts);
  int64_t* starts = plan.mutable_data_ptr<int64_t>();
  int64_t* lens = starts + B;
  auto* stats = reinterpret_cast<unsigned long long*>(lens + B);
  STACKFT_CUDA_CHECK(cudaMemsetAsync(stats, 0, 2 * sizeof(unsigned long long), stream));
  if (indices.scalar_type() == at::kLong) {
    STACKFT_CUDA_CHECK(cuda::launch_gather_pad_plan<int64_t>(
        offsets.const_data_ptr<int64_t>(), n_seqs, n_tokens, indices.const_data_ptr<int64_t>(), B,
        max_len_arg, starts, lens, stats, stream));
  } else {
    STACKFT_CUDA_CHECK(cuda::launch_gather_pad_plan<int32_t>(
        offsets.const_data_ptr<int64_t>(), n_seqs, n_tokens, indices.const_data_ptr<int32_t>(), B,
        max_len_arg, starts, lens, stats, stream));
  }
  int64_t T = max_len_arg;
  if (!max_len.has_value() || check_env()) {
    unsigned long long host_stats[2];
    c10::cuda::memcpy_and_sync(host_stats, stats, sizeof(host_stats), cudaMemcpyDeviceToHost,
                               stream);
    TORCH_CHECK_INDEX(!(host_stats[1] & cuda::kErrIndex),
                      "gather_pad: an index is out of range for ", n_seqs, " sequences");
    TORCH_CHECK_VALUE(!(host_stats[1] & cuda::kErrOffsets),
                      "gather_pad: offsets must be non-decreasing within [0, N_tokens=", n_tokens,
                      "]");
    TORCH_CHECK_VALUE(!(host_stats[1] & cuda::kErrTooLong), "gather_pad: a gathered sequence has ",
                      "length ", host_stats[0], " > max_len=", max_len_arg);
    if (!max_len.has_value()) T = static_cast<int64_t>(host_stats[0]);
  }

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

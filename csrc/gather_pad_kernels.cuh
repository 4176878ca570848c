// CUDA kernels of gather_pad, free of torch headers (gather_pad_cuda.cu is the torch glue).
//
// Two launches per call:
//   gather_pad_plan_kernel  one thread per batch row: validates the index and its offsets, writes
//                           start/length, and folds max length and an error code into `stats`
//                           (without max_len the host reads stats once to size the output: Tmax is
//                           data-dependent; with max_len the host reads nothing, and a length over
//                           max_len only sets kErrTooLong: the copy below truncates it to Tmax).
//   gather_pad_kernel       grid (B, ceil(Tmax / kTokensPerBlock)), block (32, kWarps): each warp
//                           row (threadIdx.y) owns tokens, lanes stride over the feature dim in
//                           VEC-wide packs (16-byte loads of the source row when aligned), convert
//                           to float, scale (int8), convert to out_t, store; tokens past the row's
//                           length get zeros. The mask is written by the same block.
// Inputs may live in device memory or in pinned host memory: with unified addressing a pinned
// host pointer is valid in kernels, so values never need to be copied to the GPU whole.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace stackft {
namespace cuda {

constexpr int kWarps = 8;            // warps per block = token rows in flight per block
constexpr int kTokensPerBlock = 16;  // tokens per block (two per warp)

// stats[0]: max length over the batch; stats[1]: error bits (kErr*)
constexpr unsigned long long kErrIndex = 1ull;
constexpr unsigned long long kErrOffsets = 2ull;
constexpr unsigned long long kErrTooLong = 4ull;  // a length > max_len (only when max_len >= 0)

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) {
  return __bfloat162float(x);
}
template <>
__device__ __forceinline__ float to_float<int8_t>(int8_t x) { return static_cast<float>(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// N elements moved as one aligned unit: the compiler emits 16-byte (or wider, split) accesses.
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

template <typename idx_t>
__global__ void gather_pad_plan_kernel(const int64_t* __restrict__ offsets, int64_t n_seqs,
                                       int64_t n_tokens, const idx_t* __restrict__ indices,
                                       int64_t B, int64_t max_len, int64_t* __restrict__ starts,
                                       int64_t* __restrict__ lens,
                                       unsigned long long* __restrict__ stats) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const int64_t i = static_cast<int64_t>(indices[b]);
  starts[b] = 0;
  lens[b] = 0;
  if (i < 0 || i >= n_seqs) {
    atomicOr(&stats[1], kErrIndex);
    return;
  }
  const int64_t s = offsets[i], e = offsets[i + 1];
  if (s < 0 || e < s || e > n_tokens) {
    atomicOr(&stats[1], kErrOffsets);
    return;
  }
  starts[b] = s;
  lens[b] = e - s;
  if (max_len >= 0 && e - s > max_len) atomicOr(&stats[1], kErrTooLong);
  atomicMax(&stats[0], static_cast<unsigned long long>(e - s));
}

template <typename in_t, typename out_t, int VEC, bool kScaled>
__global__ void __launch_bounds__(32 * kWarps)
    gather_pad_kernel(const in_t* __restrict__ values, const __half* __restrict__ scales,
                      const int64_t* __restrict__ starts, const int64_t* __restrict__ lens,
                      int64_t T, int64_t d, out_t* __restrict__ out, bool* __restrict__ mask) {
  const int64_t b = blockIdx.x;
  const int64_t t_begin = static_cast<int64_t>(blockIdx.y) * kTokensPerBlock;
  const int64_t len = lens[b];
  const int64_t start = starts[b];
  const int nvec = static_cast<int>(d / VEC);

  if (threadIdx.y == 0 && threadIdx.x < kTokensPerBlock) {
    const int64_t t = t_begin + threadIdx.x;
    if (t < T) mask[b * T + t] = t < len;
  }

  for (int tt = threadIdx.y; tt < kTokensPerBlock; tt += kWarps) {
    const int64_t t = t_begin + tt;
    if (t >= T) break;
    out_t* dst = out + (b * T + t) * d;
    if (t < len) {
      const int64_t row = start + t;
      const in_t* src = values + row * d;
      const float s = kScaled ? __half2float(scales[row]) : 1.0f;
#pragma unroll 4
      for (int v = threadIdx.x; v < nvec; v += 32) {
        const Pack<in_t, VEC> p = reinterpret_cast<const Pack<in_t, VEC>*>(src)[v];
        Pack<out_t, VEC> o;
#pragma unroll
        for (int k = 0; k < VEC; ++k) {
          float x = to_float<in_t>(p.v[k]);
          if (kScaled) x *= s;
          o.v[k] = from_float<out_t>(x);
        }
        reinterpret_cast<Pack<out_t, VEC>*>(dst)[v] = o;
      }
    } else {
      Pack<out_t, VEC> z;
#pragma unroll
      for (int k = 0; k < VEC; ++k) z.v[k] = from_float<out_t>(0.0f);
      for (int v = threadIdx.x; v < nvec; v += 32) reinterpret_cast<Pack<out_t, VEC>*>(dst)[v] = z;
    }
  }
}

// Host-side launchers (plain CUDA runtime; return the launch error, if any).

// max_len < 0: none given.
template <typename idx_t>
cudaError_t launch_gather_pad_plan(const int64_t* offsets, int64_t n_seqs, int64_t n_tokens,
                                   const idx_t* indices, int64_t B, int64_t max_len,
                                   int64_t* starts, int64_t* lens, unsigned long long* stats,
                                   cudaStream_t stream) {
  if (B == 0) return cudaSuccess;
  const int threads = 128;
  const unsigned blocks = static_cast<unsigned>((B + threads - 1) / threads);
  gather_pad_plan_kernel<idx_t><<<blocks, threads, 0, stream>>>(offsets, n_seqs, n_tokens, indices,
                                                                B, max_len, starts, lens, stats);
  return cudaGetLastError();
}

// Widest pack such that each row start stays 16-byte aligned for the source.
template <typename in_t>
inline int pick_vec(const void* values, int64_t d) {
  constexpr int kWide = 16 / sizeof(in_t);
  const bool aligned = (reinterpret_cast<uintptr_t>(values) % 16 == 0) && (d % kWide == 0);
  return aligned ? kWide : 1;
}

template <typename in_t, typename out_t, bool kScaled>
cudaError_t launch_gather_pad(const in_t* values, const __half* scales, const int64_t* starts,
                              const int64_t* lens, int64_t B, int64_t T, int64_t d, out_t* out,
                              bool* mask, cudaStream_t stream) {
  if (B == 0 || T == 0) return cudaSuccess;
  const int64_t chunks = (T + kTokensPerBlock - 1) / kTokensPerBlock;
  if (chunks > 65535 || B > 0x7fffffff) return cudaErrorInvalidConfiguration;  // grid limits
  const dim3 block(32, kWarps);
  const dim3 grid(static_cast<unsigned>(B), static_cast<unsigned>(chunks));
  constexpr int kWide = 16 / sizeof(in_t);
  if (pick_vec<in_t>(values, d) == kWide) {
    gather_pad_kernel<in_t, out_t, kWide, kScaled>
        <<<grid, block, 0, stream>>>(values, scales, starts, lens, T, d, out, mask);
  } else {
    gather_pad_kernel<in_t, out_t, 1, kScaled>
        <<<grid, block, 0, stream>>>(values, scales, starts, lens, T, d, out, mask);
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace stackft

// CPU kernel of gather_pad and the op registration (namespace stackft_C).
//
// One pass over the output: every (sequence, token) row of `padded` is either converted from its
// source row or zero-filled, and its mask byte written, in the same at::parallel_for task, so the
// output is never touched twice (no zero-fill pass before the copy).
#include "gather_pad.h"

#include <ATen/Parallel.h>
#include <ATen/core/TensorBody.h>
#include <ATen/ops/empty.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define STACKFT_X86 1
#endif

namespace stackft {

void check_gather_pad_args(const at::Tensor& values, const at::Tensor& offsets,
                           const at::Tensor& indices, const std::optional<at::Tensor>& scales,
                           at::ScalarType out_dtype) {
  const auto vt = values.scalar_type();
  TORCH_CHECK_TYPE(vt == at::kFloat || vt == at::kHalf || vt == at::kBFloat16 || vt == at::kChar,
                   "gather_pad: values must be float32, float16, bfloat16 or int8, got ", vt);
  TORCH_CHECK_VALUE(values.dim() == 2, "gather_pad: values must be 2-D [N_tokens, d], got ",
                    values.dim(), "-D");
  TORCH_CHECK_TYPE(offsets.scalar_type() == at::kLong, "gather_pad: offsets must be int64, got ",
                   offsets.scalar_type());
  TORCH_CHECK_VALUE(offsets.dim() == 1 && offsets.size(0) >= 1,
                    "gather_pad: offsets must be 1-D [N + 1] with N >= 0");
  TORCH_CHECK_TYPE(indices.scalar_type() == at::kLong || indices.scalar_type() == at::kInt,
                   "gather_pad: indices must be int32 or int64, got ", indices.scalar_type());
  TORCH_CHECK_VALUE(indices.dim() == 1, "gather_pad: indices must be 1-D [B], got ",
                    indices.dim(), "-D");
  TORCH_CHECK_TYPE(out_dtype == at::kFloat || out_dtype == at::kHalf || out_dtype == at::kBFloat16,
                   "gather_pad: out_dtype must be float32, float16 or bfloat16, got ", out_dtype);
  if (vt == at::kChar) {
    TORCH_CHECK_VALUE(scales.has_value(),
                      "gather_pad: int8 values need per-token scales [N_tokens] (float16)");
    const auto& s = *scales;
    TORCH_CHECK_TYPE(s.scalar_type() == at::kHalf, "gather_pad: scales must be float16, got ",
                     s.scalar_type());
    TORCH_CHECK_VALUE(s.dim() == 1 && s.size(0) == values.size(0),
                      "gather_pad: scales must be 1-D [N_tokens] = [", values.size(0), "], got ",
                      s.sizes());
  } else {
    TORCH_CHECK_VALUE(!scales.has_value(), "gather_pad: scales only apply to int8 values (got ",
                      vt, " values)");
  }
}

namespace {

// ---- block conversion -------------------------------------------------------------------------
// Converters work on contiguous runs (a sequence's rows are contiguous in both the store and the
// padded output), written as plain loops the compiler vectorises at baseline ISA; only
// float16 <-> float32 needs F16C, used through runtime-dispatched functions.

constexpr int64_t kChunk = 512;  // floats of stack scratch for two-step conversions

inline float bf16_bits_to_float(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, sizeof(f));
  return f;
}

// Round to nearest even, NaN -> 0x7FC0: the same bits as c10::BFloat16(float).
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof(b));
  const uint32_t r = (b + 0x7FFFu + ((b >> 16) & 1u)) >> 16;
  return f != f ? static_cast<uint16_t>(0x7FC0) : static_cast<uint16_t>(r);
}

#ifdef STACKFT_X86
__attribute__((target("avx,f16c"))) void half_to_float_f16c(const uint16_t* src, float* dst,
                                                             int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j));
    _mm256_storeu_ps(dst + j, _mm256_cvtph_ps(h));
  }
  for (; j < n; ++j) dst[j] = _cvtsh_ss(src[j]);
}

__attribute__((target("avx,f16c"))) void float_to_half_f16c(const float* src, uint16_t* dst,
                                                             int64_t n) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + j), _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), h);
  }
  for (; j < n; ++j) dst[j] = _cvtss_sh(src[j], _MM_FROUND_TO_NEAREST_INT);
}

const bool kHasF16C = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#endif

void half_to_float(const c10::Half* src, float* dst, int64_t n) {
#ifdef STACKFT_X86
  if (kHasF16C) return half_to_float_f16c(reinterpret_cast<const uint16_t*>(src), dst, n);
#endif
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]);
}

void float_to_half(const float* src, c10::Half* dst, int64_t n) {
#ifdef STACKFT_X86
  if (kHasF16C) return float_to_half_f16c(src, reinterpret_cast<uint16_t*>(dst), n);
#endif
  for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<c10::Half>(src[j]);
}

// in_t -> float (n elements)
template <typename in_t>
inline void to_float(const in_t* src, float* dst, int64_t n) {
  if constexpr (std::is_same_v<in_t, float>) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  } else if constexpr (std::is_same_v<in_t, c10::Half>) {
    half_to_float(src, dst, n);
  } else if constexpr (std::is_same_v<in_t, c10::BFloat16>) {
    const auto* s = reinterpret_cast<const uint16_t*>(src);
    for (int64_t j = 0; j < n; ++j) dst[j] = bf16_bits_to_float(s[j]);
  } else {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]);
  }
}

// float -> out_t (n elements)
template <typename out_t>
inline void from_float(const float* src, out_t* dst, int64_t n) {
  if constexpr (std::is_same_v<out_t, float>) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
  } else if constexpr (std::is_same_v<out_t, c10::Half>) {
    float_to_half(src, dst, n);
  } else {
    auto* d = reinterpret_cast<uint16_t*>(dst);
    for (int64_t j = 0; j < n; ++j) d[j] = float_to_bf16_bits(src[j]);
  }
}

// Convert n contiguous elements, multiplying by `scale` when kScaled. Every path rounds once,
// from the float32 value (x or x * scale), to out_t.
template <typename in_t, typename out_t, bool kScaled>
void convert(const in_t* src, out_t* dst, int64_t n, float scale) {
  if constexpr (!kScaled && std::is_same_v<in_t, out_t>) {
    std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(out_t));
  } else if constexpr (kScaled && std::is_same_v<in_t, int8_t> && std::is_same_v<out_t, float>) {
    for (int64_t j = 0; j < n; ++j) dst[j] = static_cast<float>(src[j]) * scale;
  } else if constexpr (std::is_same_v<out_t, float>) {
    to_float<in_t>(src, dst, n);
    if constexpr (kScaled) {
      for (int64_t j = 0; j < n; ++j) dst[j] *= scale;
    }
  } else {
    float tmp[kChunk];
    for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
      const int64_t k = std::min(kChunk, n - j0);
      to_float<in_t>(src + j0, tmp, k);
      if constexpr (kScaled) {
        for (int64_t j = 0; j < k; ++j) tmp[j] *= scale;
      }
      from_float<out_t>(tmp, dst + j0, k);
    }
  }
}

// ---- kernel -----------------------------------------------------------------------------------

// Work item = (sequence b, run of `rows_per_item` output rows). Its real rows are one contiguous
// source run and its padding rows one contiguous output run, so each item is at most one convert
// (int8: one per row, each row has its own scale) plus one memset.
template <typename in_t, typename out_t, bool kScaled>
void gather_pad_rows(const in_t* values, const c10::Half* scales, const int64_t* starts,
                     const int64_t* lens, int64_t B, int64_t T, int64_t d, out_t* out,
                     bool* mask) {
  const int64_t row_bytes = std::max<int64_t>(1, d * static_cast<int64_t>(sizeof(out_t)));
  const int64_t rows_per_item = std::clamp<int64_t>((int64_t{1} << 15) / row_bytes, 1, T);
  const int64_t items_per_seq = (T + rows_per_item - 1) / rows_per_item;
  auto real_rows = [&](int64_t it, int64_t* b, int64_t* t0, int64_t* t1, int64_t* tv) {
    *b = it / items_per_seq;
    *t0 = (it - *b * items_per_seq) * rows_per_item;
    *t1 = std::min(T, *t0 + rows_per_item);
    *tv = std::clamp(lens[*b], *t0, *t1);  // rows [t0, tv) real, [tv, t1) padding
  };
  at::parallel_for(0, B * items_per_seq, 1, [&](int64_t begin, int64_t end) {
    for (int64_t it = begin; it < end; ++it) {
      int64_t b, t0, t1, tv;
      real_rows(it, &b, &t0, &t1, &tv);
      if (it + 1 < end) {
        // The store is usually far bigger than the caches and each item starts a new stream
        // the hardware prefetcher has not seen: request the next item's rows now (into L2).
        int64_t nb, n0, n1, nv;
        real_rows(it + 1, &nb, &n0, &n1, &nv);
        const char* p = reinterpret_cast<const char*>(values + (starts[nb] + n0) * d);
        const int64_t bytes = (nv - n0) * d * static_cast<int64_t>(sizeof(in_t));
        for (int64_t k = 0; k < bytes; k += 64) __builtin_prefetch(p + k, 0, 2);
      }
      out_t* dst = out + (b * T + t0) * d;
      const in_t* src = values + (starts[b] + t0) * d;
      if constexpr (kScaled) {
        for (int64_t t = t0; t < tv; ++t) {
          const float s = static_cast<float>(scales[starts[b] + t]);
          convert<in_t, out_t, true>(src + (t - t0) * d, dst + (t - t0) * d, d, s);
        }
      } else if (tv > t0) {
        convert<in_t, out_t, false>(src, dst, (tv - t0) * d, 1.0f);
      }
      if (t1 > tv) {  // +0.0 is all-zero bits in every out dtype
        std::memset(dst + (tv - t0) * d, 0, static_cast<size_t>((t1 - tv) * d) * sizeof(out_t));
      }
      std::memset(mask + b * T + t0, 1, static_cast<size_t>(tv - t0));
      std::memset(mask + b * T + tv, 0, static_cast<size_t>(t1 - tv));
    }
  });
}

template <typename in_t, bool kScaled>
void dispatch_out(const at::Tensor& values, const c10::Half* scales, const int64_t* starts,
                  const int64_t* lens, int64_t B, int64_t T, at::Tensor& out, at::Tensor& mask) {
  const int64_t d = values.size(1);
  const in_t* v = values.const_data_ptr<in_t>();
  bool* m = mask.mutable_data_ptr<bool>();
  switch (out.scalar_type()) {
    case at::kFloat:
      gather_pad_rows<in_t, float, kScaled>(v, scales, starts, lens, B, T, d,
                                            out.mutable_data_ptr<float>(), m);
      break;
    case at::kHalf:
      gather_pad_rows<in_t, c10::Half, kScaled>(v, scales, starts, lens, B, T, d,
                                                out.mutable_data_ptr<c10::Half>(), m);
      break;
    case at::kBFloat16:
      gather_pad_rows<in_t, c10::BFloat16, kScaled>(v, scales, starts, lens, B, T, d,
                                                    out.mutable_data_ptr<c10::BFloat16>(), m);
      break;
    default:
      TORCH_CHECK(false, "gather_pad: unsupported out_dtype ", out.scalar_type());
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> gather_pad_cpu(const at::Tensor& values_in,
                                                  const at::Tensor& offsets_in,
                                                  const at::Tensor& indices_in,
                                                  const std::optional<at::Tensor>& scales_in,
                                                  at::ScalarType out_dtype,
                                                  std::optional<int64_t> max_len) {
  check_gather_pad_args(values_in, offsets_in, indices_in, scales_in, out_dtype);
  TORCH_CHECK_VALUE(!max_len.has_value() || *max_len >= 0, "gather_pad: max_len must be >= 0, got ",
                    max_len.value_or(0));
  TORCH_CHECK(values_in.device().is_cpu() && offsets_in.device().is_cpu() &&
                  indices_in.device().is_cpu() &&
                  (!scales_in.has_value() || scales_in->device().is_cpu()),
              "gather_pad (CPU kernel): all inputs must be CPU tensors");

  // contiguous() is free for the cache's memory-mapped tensors (already row-major).
  const at::Tensor values = values_in.contiguous();
  const at::Tensor offsets = offsets_in.contiguous();
  const at::Tensor indices = indices_in.to(at::kLong).contiguous();
  const bool scaled = values.scalar_type() == at::kChar;
  at::Tensor scales;
  if (scaled) scales = scales_in->contiguous();

  const int64_t B = indices.size(0);
  const int64_t n_seqs = offsets.size(0) - 1;
  const int64_t n_tokens = values.size(0);
  const int64_t d = values.size(1);
  const int64_t* off = offsets.const_data_ptr<int64_t>();
  const int64_t* idx = indices.const_data_ptr<int64_t>();

  std::vector<int64_t> starts(B), lens(B);
  int64_t T = 0;
  for (int64_t b = 0; b < B; ++b) {
    const int64_t i = idx[b];
    TORCH_CHECK_INDEX(i >= 0 && i < n_seqs, "gather_pad: index ", i, " (position ", b,
                      ") is out of range for ", n_seqs, " sequences");
    const int64_t s = off[i], e = off[i + 1];
    TORCH_CHECK_VALUE(s >= 0 && s <= e && e <= n_tokens,
                      "gather_pad: offsets must be non-decreasing within [0, N_tokens=", n_tokens,
                      "]; sequence ", i, " spans [", s, ", ", e, ")");
    if (max_len.has_value()) {
      TORCH_CHECK_VALUE(e - s <= *max_len, "gather_pad: sequence ", i, " (position ", b,
                        ") has length ", e - s, " > max_len=", *max_len);
    }
    starts[b] = s;
    lens[b] = e - s;
    T = std::max(T, e - s);
  }
  if (max_len.has_value()) T = *max_len;  // longer than needed: the extra rows are padding

  auto out = at::empty({B, T, d}, values.options().dtype(out_dtype));
  auto mask = at::empty({B, T}, values.options().dtype(at::kBool));
  if (B == 0 || T == 0) return {out, mask};

  const c10::Half* sc = scaled ? scales.const_data_ptr<c10::Half>() : nullptr;
  switch (values.scalar_type()) {
    case at::kFloat:
      dispatch_out<float, false>(values, sc, starts.data(), lens.data(), B, T, out, mask);
      break;
    case at::kHalf:
      dispatch_out<c10::Half, false>(values, sc, starts.data(), lens.data(), B, T, out, mask);
      break;
    case at::kBFloat16:
      dispatch_out<c10::BFloat16, false>(values, sc, starts.data(), lens.data(), B, T, out, mask);
      break;
    case at::kChar:
      dispatch_out<int8_t, true>(values, sc, starts.data(), lens.data(), B, T, out, mask);
      break;
    default:
      TORCH_CHECK(false, "gather_pad: unsupported values dtype ", values.scalar_type());
  }
  return {out, mask};
}

namespace {

std::string build_info() {
  std::string s = "stackft_C abi=1";
#ifdef STACKFT_WITH_CUDA
  s += " cuda=1";
#else
  s += " cuda=0";
#endif
#ifdef STACKFT_X86
  s += kHasF16C ? " f16c=1" : " f16c=0";
#endif
#ifdef _OPENMP
  s += " openmp=1";  // at::parallel_for really runs in parallel (stackft/_ext.py: openmp_flags)
#else
  s += " openmp=0";
#endif
  return s;
}

}  // namespace
}  // namespace stackft

TORCH_LIBRARY(stackft_C, m) {
  m.def(
      "gather_pad(Tensor values, Tensor offsets, Tensor indices, Tensor? scales, "
      "ScalarType out_dtype, int? max_len=None) -> (Tensor, Tensor)");
  m.def("build_info() -> str", &stackft::build_info);
}

TORCH_LIBRARY_IMPL(stackft_C, CPU, m) { m.impl("gather_pad", &stackft::gather_pad_cpu); }

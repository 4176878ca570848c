// Packed-B fp32 GEMM, AVX-512 and AVX2 micro-kernels (see packed_gemm.h for the layout and the contract).
#include "packed_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define PG_X86 1
#include <immintrin.h>
#endif

namespace stackft {
namespace packed {
namespace {

constexpr int64_t kMR = 8;     // AVX-512 rows per micro-block: 8 x 2 zmm accumulators
constexpr int64_t kMR2 = 6;    // AVX2 rows per micro-block: 6 x 2 ymm accumulators
constexpr int64_t kKB = 256;   // K block: a panel's block is 256 x 32 x 4 B = 32 KiB, L1-resident
constexpr int64_t kMC = 64;    // rows per parallel task
constexpr double kSerialFlops = 2.0e6;  // below this a GEMM runs on the calling thread

#ifdef PG_X86
#define PG_AVX512 __attribute__((target("avx512f")))

// C[0:MR, 0:32] (masked to the panel's valid columns) (+)= A[0:MR, 0:K] x Bp[0:K, 0:32]
template <int MR>
PG_AVX512 void micro(const float* A, int64_t a_ms, int64_t a_ks, const float* Bp, int64_t K,
                     float* C, int64_t ldc, bool acc, __mmask16 m0, __mmask16 m1) {
  __m512 c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) {
    if (acc) {
      c0[r] = _mm512_maskz_loadu_ps(m0, C + r * ldc);
      c1[r] = _mm512_maskz_loadu_ps(m1, C + r * ldc + 16);
    } else {
      c0[r] = _mm512_setzero_ps();
      c1[r] = _mm512_setzero_ps();
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m512 b0 = _mm512_loadu_ps(Bp + k * kPanel);
    const __m512 b1 = _mm512_loadu_ps(Bp + k * kPanel + 16);
    const float* a = A + k * a_ks;
    for (int r = 0; r < MR; ++r) {
      const __m512 ar = _mm512_set1_ps(a[r * a_ms]);
      c0[r] = _mm512_fmadd_ps(ar, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(ar, b1, c1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(C + r * ldc, m0, c0[r]);
    _mm512_mask_storeu_ps(C + r * ldc + 16, m1, c1[r]);
  }
}

using MicroFn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t,
                         bool, __mmask16, __mmask16);
constexpr MicroFn kMicro[kMR + 1] = {nullptr,   &micro<1>, &micro<2>, &micro<3>, &micro<4>,
                                     &micro<5>, &micro<6>, &micro<7>, &micro<8>};

__mmask16 lane_mask(int64_t n) {  // the first n (clamped to 0..16) lanes
  n = std::clamp<int64_t>(n, 0, 16);
  return static_cast<__mmask16>(n == 16 ? 0xFFFFu : ((1u << n) - 1u));
}

#define PG_AVX2 __attribute__((target("avx2,fma")))

// C[0:MR, 0:min(w, 16)] (+)= A[0:MR, 0:K] x Bp[0:K, 0:16], Bp's rows kPanel apart (one half of a
// 32-column panel); C's columns from w on are neither read nor written. The masks are built here
// from w, not passed: a __m256i argument across the target boundary would change the ABI.
template <int MR>
PG_AVX2 void micro_avx2(const float* A, int64_t a_ms, int64_t a_ks, const float* Bp, int64_t K,
                        float* C, int64_t ldc, bool acc, int64_t w) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(w, 16))), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(std::min<int64_t>(w, 16) - 8)), lane);
  __m256 c0[MR], c1[MR];
  for (int r = 0; r < MR; ++r) {
    if (acc) {
      c0[r] = _mm256_maskload_ps(C + r * ldc, m0);
      c1[r] = _mm256_maskload_ps(C + r * ldc + 8, m1);
    } else {
      c0[r] = _mm256_setzero_ps();
      c1[r] = _mm256_setzero_ps();
    }
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(Bp + k * kPanel);
    const __m256 b1 = _mm256_loadu_ps(Bp + k * kPanel + 8);
    const float* a = A + k * a_ks;
    for (int r = 0; r < MR; ++r) {
      const __m256 ar = _mm256_broadcast_ss(a + r * a_ms);
      c0[r] = _mm256_fmadd_ps(ar, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(ar, b1, c1[r]);
    }
  }
  for (int r = 0; r < MR; ++r) {
    _mm256_maskstore_ps(C + r * ldc, m0, c0[r]);
    _mm256_maskstore_ps(C + r * ldc + 8, m1, c1[r]);
  }
}

using Micro2Fn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, bool,
                          int64_t);
constexpr Micro2Fn kMicro2[kMR2 + 1] = {nullptr, &micro_avx2<1>, &micro_avx2<2>, &micro_avx2<3>,
                                        &micro_avx2<4>, &micro_avx2<5>, &micro_avx2<6>};
#endif

}  // namespace

int cpu_isa() {
#ifdef PG_X86
  static const int isa = __builtin_cpu_supports("avx512f")                                  ? kAvx512
                         : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? kAvx2
                                                                                              : 0;
  return isa;
#else
  return 0;
#endif
}

at::Tensor pack_b(const float* b, int64_t K, int64_t N, int64_t ks, int64_t ns) {
  const int64_t P = (N + kPanel - 1) / kPanel;
  at::Tensor out = at::empty({P, K, kPanel}, at::TensorOptions().dtype(at::kFloat));
  float* o = out.mutable_data_ptr<float>();
  at::parallel_for(0, P, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t n0 = p * kPanel, w = std::min(kPanel, N - n0);
      for (int64_t k = 0; k < K; ++k) {
        float* dst = o + (p * K + k) * kPanel;
        const float* src = b + k * ks + n0 * ns;
        if (ns == 1) {
          std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(w));
        } else {
          for (int64_t j = 0; j < w; ++j) dst[j] = src[j * ns];
        }
        for (int64_t j = w; j < kPanel; ++j) dst[j] = 0.0f;
      }
    }
  });
  return out;
}

void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_ms, int64_t a_ks,
          const at::Tensor& packed_b, float* C, int64_t ldc, bool accumulate, int isa) {
  const int64_t P = (N + kPanel - 1) / kPanel;
  TORCH_CHECK(packed_b.dim() == 3 && packed_b.size(0) == P && packed_b.size(1) == K &&
                  packed_b.size(2) == kPanel && packed_b.is_contiguous(),
              "packed::gemm: packed_b must be pack_b's [", P, ", ", K, ", ", kPanel, "] output");
  TORCH_CHECK(isa == kAvx2 || isa == kAvx512, "packed::gemm: isa must be kAvx2 or kAvx512, got ", isa);
  TORCH_CHECK(isa <= cpu_isa(), "packed::gemm: this CPU cannot run the ", isa == kAvx512 ? "AVX-512" : "AVX2",
              " micro-kernel");
  if (M <= 0 || N <= 0) return;
#ifdef PG_X86
  if (K <= 0) {  // an empty sum
    if (!accumulate) {
      for (int64_t m = 0; m < M; ++m) std::memset(C + m * ldc, 0, sizeof(float) * N);
    }
    return;
  }
  const float* Bp = packed_b.const_data_ptr<float>();
  const int64_t chunks = (M + kMC - 1) / kMC, tasks = P * chunks;
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * K;
  const int64_t grain = flops < kSerialFlops ? tasks : 1;
  // tasks go panel-major, so a thread's consecutive tasks reuse its panels from its own cache
  at::parallel_for(0, tasks, grain, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t p = t / chunks, m_lo = (t % chunks) * kMC, m_hi = std::min(M, m_lo + kMC);
      const int64_t n0 = p * kPanel, w = N - n0;
      const float* panel = Bp + p * K * kPanel;
      for (int64_t k0 = 0; k0 < K; k0 += kKB) {
        const int64_t kb = std::min(kKB, K - k0);
        const bool acc = accumulate || k0 > 0;
        if (isa == kAvx512) {
          const __mmask16 m0 = lane_mask(w), m1 = lane_mask(w - 16);
          for (int64_t m = m_lo; m < m_hi; m += kMR) {
            const int64_t mr = std::min(kMR, m_hi - m);
            kMicro[mr](A + m * a_ms + k0 * a_ks, a_ms, a_ks, panel + k0 * kPanel, kb, C + m * ldc + n0,
                       ldc, acc, m0, m1);
          }
        } else {
          for (int64_t half = 0; half < 2 && w > 16 * half; ++half) {
            for (int64_t m = m_lo; m < m_hi; m += kMR2) {
              const int64_t mr = std::min(kMR2, m_hi - m);
              kMicro2[mr](A + m * a_ms + k0 * a_ks, a_ms, a_ks, panel + k0 * kPanel + 16 * half, kb,
                          C + m * ldc + n0 + 16 * half, ldc, acc, w - 16 * half);
            }
          }
        }
      }
    }
  });
#else
  (void)A, (void)a_ms, (void)a_ks, (void)C, (void)ldc, (void)accumulate, (void)isa;
#endif
}

}  // namespace packed
}  // namespace stackft

// Packed-B fp32 GEMM, AVX-512 and AVX2 micro-kernels (see packed_gemm.h for the layout and the contract).
#include "packed_gemm.h"

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>
#include <vector>

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

// C[0:MR, 0:16] (+)= A[0:MR, 0:K] x Bp[0:K, 0:16], Bp's rows kPanel apart (one half of a 32-column
// panel). 12 accumulators, 2 B vectors and a broadcast: 15 of the 16 ymm registers. The accumulators
// are named variables, not arrays as in the AVX-512 kernel: with __m256 arrays (and with masks live
// across the loop) GCC 12 stored every accumulator to the stack on each k, which halved the rate.
// Tail columns go through micro_avx2_tail's local tile instead of masks.
#define PG_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
template <int MR>
PG_AVX2 void micro_avx2(const float* A, int64_t a_ms, int64_t a_ks, const float* Bp, int64_t K,
                        float* C, int64_t ldc, bool acc) {
#define PG_DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = _mm256_setzero_ps();
  PG_ROWS(PG_DECL)
#define PG_LOAD(r)                                      \
  if constexpr (r < MR) {                               \
    c##r##0 = _mm256_loadu_ps(C + r * ldc);             \
    c##r##1 = _mm256_loadu_ps(C + r * ldc + 8);         \
  }
  if (acc) {
    PG_ROWS(PG_LOAD)
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m256 b0 = _mm256_loadu_ps(Bp + k * kPanel);
    const __m256 b1 = _mm256_loadu_ps(Bp + k * kPanel + 8);
    const float* a = A + k * a_ks;
#define PG_FMA(r)                                           \
  if constexpr (r < MR) {                                   \
    const __m256 ar = _mm256_broadcast_ss(a + r * a_ms);    \
    c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0);             \
    c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1);             \
  }
    PG_ROWS(PG_FMA)
  }
#define PG_STORE(r)                                     \
  if constexpr (r < MR) {                               \
    _mm256_storeu_ps(C + r * ldc, c##r##0);             \
    _mm256_storeu_ps(C + r * ldc + 8, c##r##1);         \
  }
  PG_ROWS(PG_STORE)
#undef PG_DECL
#undef PG_LOAD
#undef PG_FMA
#undef PG_STORE
}
#undef PG_ROWS

using Micro2Fn = void (*)(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t, bool);
constexpr Micro2Fn kMicro2[kMR2 + 1] = {nullptr, &micro_avx2<1>, &micro_avx2<2>, &micro_avx2<3>,
                                        &micro_avx2<4>, &micro_avx2<5>, &micro_avx2<6>};

// The same on C's first w < 16 columns (the last panel's tail): through a 16-column local tile, so
// C's columns from w on are neither read nor written.
void micro_avx2_tail(int64_t mr, const float* A, int64_t a_ms, int64_t a_ks, const float* Bp, int64_t K,
                     float* C, int64_t ldc, bool acc, int64_t w) {
  alignas(32) float tile[kMR2 * 16];
  for (int64_t r = 0; r < mr; ++r) {
    for (int64_t j = 0; j < 16; ++j) tile[r * 16 + j] = acc && j < w ? C[r * ldc + j] : 0.0f;
  }
  kMicro2[mr](A, a_ms, a_ks, Bp, K, tile, 16, acc);
  for (int64_t r = 0; r < mr; ++r) std::memcpy(C + r * ldc, tile + r * 16, sizeof(float) * w);
}

// Row blocks of at most mr rows, as even as possible (32 rows, mr 6 -> 6,6,5,5,5,5): a block of one
// or two rows keeps too few FMA chains in flight to hide the FMA latency.
int64_t row_blocks(int64_t rows, int64_t mr) { return (rows + mr - 1) / mr; }
int64_t micro_rows(int isa) { return isa == kAvx512 ? kMR : kMR2; }  // the micro-kernel's height
int64_t block_rows(int64_t rows, int64_t blocks, int64_t i) { return rows / blocks + (i < rows % blocks ? 1 : 0); }

struct ARows {  // A's block starting at a given row: pointer and element strides (row, k)
  const float* a;
  int64_t ms, ks;
};

// C[0:rows, panel columns 0:w) (+)= A[0:rows, 0:kb] x Bp[0:kb, 0:32] (one K block of one panel), rows
// in row_blocks of at most the micro-kernel's height; a_at(m) gives A's block starting at row m.
template <class AAt>
void panel_rows(int isa, int64_t rows, const AAt& a_at, const float* Bp, int64_t kb, float* C, int64_t ldc,
                int64_t w, bool acc) {
  if (isa == kAvx512) {
    const __mmask16 m0 = lane_mask(w), m1 = lane_mask(w - 16);
    const int64_t blocks = row_blocks(rows, micro_rows(isa));
    for (int64_t i = 0, m = 0; i < blocks; ++i) {
      const int64_t mr = block_rows(rows, blocks, i);
      const ARows a = a_at(m, mr);
      kMicro[mr](a.a, a.ms, a.ks, Bp, kb, C + m * ldc, ldc, acc, m0, m1);
      m += mr;
    }
    return;
  }
  const int64_t blocks = row_blocks(rows, micro_rows(isa));
  for (int64_t half = 0; half < 2 && w > 16 * half; ++half) {
    const int64_t wh = w - 16 * half;
    for (int64_t i = 0, m = 0; i < blocks; ++i) {
      const int64_t mr = block_rows(rows, blocks, i);
      const ARows a = a_at(m, mr);
      float* c = C + m * ldc + 16 * half;
      if (wh >= 16) {
        kMicro2[mr](a.a, a.ms, a.ks, Bp + 16 * half, kb, c, ldc, acc);
      } else {
        micro_avx2_tail(mr, a.a, a.ms, a.ks, Bp + 16 * half, kb, c, ldc, acc, wh);
      }
      m += mr;
    }
  }
}
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
  const int64_t chunks = (M + kMC - 1) / kMC;
  const double flops = 2.0 * static_cast<double>(M) * static_cast<double>(N) * K;
  const bool serial = flops < kSerialFlops;
  if (a_ks == 1) {
    // A's rows contiguous (the per-step GEMMs, x @ W): read in place. Tasks go panel-major, so a
    // thread's consecutive tasks reuse its panels from its own cache.
    const int64_t tasks = P * chunks;
    at::parallel_for(0, tasks, serial ? tasks : 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t p = t / chunks, m_lo = (t % chunks) * kMC, m_hi = std::min(M, m_lo + kMC);
        const float* panel = Bp + p * K * kPanel;
        for (int64_t k0 = 0; k0 < K; k0 += kKB) {
          const auto a_at = [&](int64_t m, int64_t) { return ARows{A + (m_lo + m) * a_ms + k0 * a_ks, a_ms, a_ks}; };
          panel_rows(isa, m_hi - m_lo, a_at, panel + k0 * kPanel, std::min(kKB, K - k0), C + m_lo * ldc + p * kPanel,
                     ldc, N - p * kPanel, accumulate || k0 > 0);
        }
      }
    });
    return;
  }
  // A read across rows (a transposed operand, as in the weight gradients dGᵀ @ x): each row chunk's
  // K block is first packed k-major per row block (block rows contiguous for each k), then run
  // against every panel. Read in place, each k would touch a new cache line a row stride away.
  at::parallel_for(0, chunks, serial ? chunks : 1, [&](int64_t c0, int64_t c1) {
    std::vector<float> buf(static_cast<size_t>(kMC * kKB));
    for (int64_t c = c0; c < c1; ++c) {
      // the same row blocks as panel_rows makes, so a_at(m) below finds block m where it was packed
      const int64_t m_lo = c * kMC, rows = std::min(M, m_lo + kMC) - m_lo, blocks = row_blocks(rows, micro_rows(isa));
      for (int64_t k0 = 0; k0 < K; k0 += kKB) {
        const int64_t kb = std::min(kKB, K - k0);
        for (int64_t i = 0, m = 0; i < blocks; ++i) {  // block at row m: buf[m * kb + k * mr + r]
          const int64_t mr = block_rows(rows, blocks, i);
          float* dst = buf.data() + m * kb;
          const float* src = A + (m_lo + m) * a_ms + k0 * a_ks;
          for (int64_t k = 0; k < kb; ++k) {
            for (int64_t r = 0; r < mr; ++r) dst[k * mr + r] = src[k * a_ks + r * a_ms];
          }
          m += mr;
        }
        const auto a_at = [&](int64_t m, int64_t mr) { return ARows{buf.data() + m * kb, 1, mr}; };
        for (int64_t p = 0; p < P; ++p) {
          panel_rows(isa, rows, a_at, Bp + (p * K + k0) * kPanel, kb, C + m_lo * ldc + p * kPanel, ldc,
                     N - p * kPanel, accumulate || k0 > 0);
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

// Packed-B fp32 GEMM with register-blocked AVX-512 and AVX2 micro-kernels, for the highway-LSTM
// layer's per-step recurrent GEMMs ([B, H] x [H, 5H] forward, [B, 5H] x [5H, H] backward, B = 32),
// which are too small for BLAS's blocking and threading to pay off. General enough (any strides, any
// sizes) to be tested on its own through stackft_C::highway_lstm_mm.
//
// B is packed once into panels of kPanel = 32 columns, k-major inside a panel, zero-padded to a
// whole panel:  packed[p][k][j] = B[k, 32p + j]  (p < ceil(N / 32), j < 32). One packing serves both
// ISAs. The micro-kernel keeps a block of C in registers over a K block, broadcasting one A element
// per row and k (A is read through element strides, so strided views need no copy; a transposed A,
// read down its columns, runs at about half the row-major rate):
//   AVX-512: 8 rows x 32 columns (2 zmm a row, 16 accumulators of 32), tail columns masked;
//   AVX2: up to 6 rows x 16 columns (2 ymm a row, 12 of its 16 registers) on each half of a panel,
//   rows split evenly (32 -> 6,6,5,5,5,5), tail columns through a local tile.
// Work is split over (panel, row chunk) pairs with at::parallel_for.
//
// Measured side by side on a Zen 5 CPU (bench/bench_highway_gemm.py, 1 and 2 threads): AVX-512 is
// 1.2-1.7x oneDNN's matmul and 2.3-3x MKL's sgemm on the per-step shapes; AVX2 (oneDNN and MKL held
// to AVX2 on the same core) is 1.2-1.5x MKL's AVX2 sgemm there. On the large GEMMs over all B·T rows
// the libraries were as fast or faster, so the layer uses the kernels only for the per-step ones.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace stackft {
namespace packed {

constexpr int64_t kPanel = 32;

// Micro-kernel ISAs (the numbering of the layer's gate-math paths: 1 avx2, 2 avx512).
constexpr int kAvx2 = 1;
constexpr int kAvx512 = 2;

// The best micro-kernel this CPU and build can run: kAvx512 (AVX-512F), kAvx2 (AVX2 + FMA) or 0.
int cpu_isa();

// B[k, n] = b[k * ks + n * ns] (K x N, fp32) -> [ceil(N / 32), K, 32] fp32 tensor.
at::Tensor pack_b(const float* b, int64_t K, int64_t N, int64_t ks, int64_t ns);

// C[m, n] (row stride ldc; accumulate: C += instead of C =) = sum_k A[m * a_ms + k * a_ks] * B[k, n]
// with B given as pack_b's output for the same K, N, on micro-kernel `isa` (kAvx2 or kAvx512, at most
// cpu_isa()).
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_ms, int64_t a_ks,
          const at::Tensor& packed_b, float* C, int64_t ldc, bool accumulate, int isa);

}  // namespace packed
}  // namespace stackft

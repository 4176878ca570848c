// Packed-B fp32 GEMM with an AVX-512 register-blocked micro-kernel, for the highway-LSTM layer's
// GEMMs, which BLAS runs slowly on the CPUs measured: the per-step recurrent GEMMs ([B, H] x
// [H, 5H] forward, [B, 5H] x [5H, H] backward, B = 32: too small for BLAS's blocking to pay off),
// the input projection and the weight / input gradients over all B·T steps (whose A operand is
// often a transposed, strided view of the gate buffer).
//
// B is packed once into panels of kPanel = 32 columns, k-major inside a panel, zero-padded to a
// whole panel:  packed[p][k][j] = B[k, 32p + j]  (p < ceil(N / 32), j < 32).
// The micro-kernel keeps an MR x 32 block of C (MR <= 8 rows, 2 zmm each) in registers over a K
// block, broadcasting one A element per row and k (A is read through element strides, so a
// transposed or strided view costs nothing), and writes the panel's tail columns with a mask.
// Work is split over (panel, row chunk) pairs with at::parallel_for.
//
// Measured on one Zen 5 core (bench/bench_heads.py --gemm-rates): 2-3x MKL's sgemm and about 1.5x
// oneDNN's matmul on the layer's shapes. Only AVX-512 CPUs run it; cpu_supported() says whether
// this one can.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>

namespace stackft {
namespace packed {

constexpr int64_t kPanel = 32;

// True when the CPU has AVX-512F and the build targets x86-64.
bool cpu_supported();

// B[k, n] = b[k * ks + n * ns] (K x N, fp32) -> [ceil(N / 32), K, 32] fp32 tensor.
at::Tensor pack_b(const float* b, int64_t K, int64_t N, int64_t ks, int64_t ns);

// C[m, n] (row stride ldc; accumulate: C += instead of C =) = sum_k A[m * a_ms + k * a_ks] * B[k, n]
// with B given as pack_b's output for the same K, N. Requires cpu_supported().
void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t a_ms, int64_t a_ks,
          const at::Tensor& packed_b, float* C, int64_t ldc, bool accumulate);

}  // namespace packed
}  // namespace stackft

// CPU highway-LSTM layer: forward and backward ops (see highway_lstm.h for the contract).
//
// Layout. Everything per (row b, step t) lives in [B, T, ·] buffers, so the input projection and
// the three backward GEMMs see one [B·T, ·] matrix and a step's rows are strided views (the GEMMs
// take the row stride as their leading dimension, nothing is copied):
//   gates  [B,T,6H] acc  the x projection, overwritten in place by the step with the activated
//                        gates i, f, g, o, r (carry stays), so the backward needs no recompute GEMM
//   h_prev [B,T,H]       the recurrent state each step read (the per-step GEMM's A operand)
//   c_prev [B,T,H] acc   the cell state each step read
// The forward writes step t's new state straight into the next step's h_prev/c_prev slot.
//
// Gate math: one pass per step over [B, 5H] + carry, at::parallel_for over batch rows; each row
// is processed in SIMD chunks (GCC/Clang vector extensions: 16 floats compiled for AVX-512 and
// baseline x86-64, 8 for AVX2; picked at run time) with a Cephes-style polynomial exp (about 1 ulp) and
// tanh; float64 uses std::exp / std::tanh. bf16: GEMMs in bf16, gate math and the cell state in
// fp32, h rounded to bf16 each step (it is the next GEMM's operand) as in the reference; the
// backward runs in fp32 and rounds the gradients once.
#include "highway_lstm.h"
#include "packed_gemm.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/core/TensorBody.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/zeros.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) || defined(__clang__)
#define HL_INLINE inline __attribute__((always_inline))
#define HL_VECTOR 1
#pragma GCC diagnostic ignored "-Wpsabi"
#else
#define HL_INLINE inline
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HL_X86 1
#endif

#if defined(__linux__) || defined(__APPLE__)
#include <dlfcn.h>
#define HL_DLSYM 1
#endif

namespace stackft {
namespace {

// ---- SIMD lanes ---------------------------------------------------------------------------------

#ifdef HL_VECTOR
typedef float vf16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
typedef float vf8 __attribute__((vector_size(32)));
typedef int32_t vi8 __attribute__((vector_size(32)));
#endif

template <class V>
struct Lanes;
template <>
struct Lanes<float> {
  static constexpr int64_t W = 1;
  using S = float;
};
template <>
struct Lanes<double> {
  static constexpr int64_t W = 1;
  using S = double;
};
#ifdef HL_VECTOR
// 16 lanes on AVX-512 (one zmm); 8 on AVX2, where a 16-lane value takes two of the 16 ymm
// registers and the gate math spilled (fwd_row ran at about half the 8-lane rate).
template <>
struct Lanes<vf16> {
  static constexpr int64_t W = 16;
  using S = float;
  using I = vi16;
};
template <>
struct Lanes<vf8> {
  static constexpr int64_t W = 8;
  using S = float;
  using I = vi8;
};
#endif

template <class V>
HL_INLINE V bcast(typename Lanes<V>::S s) {
  if constexpr (Lanes<V>::W == 1) {
    return s;
  } else {
    return V{} + s;
  }
}

// kFull: W elements; else n < W elements (missing lanes read as 0, not written).
template <class V, bool kFull>
HL_INLINE V ld(const typename Lanes<V>::S* p, int64_t n) {
  if constexpr (Lanes<V>::W == 1) {
    return *p;
  } else {
    V v = V{};
    std::memcpy(&v, p, sizeof(float) * static_cast<size_t>(kFull ? Lanes<V>::W : n));
    return v;
  }
}

template <class V, bool kFull>
HL_INLINE void st(typename Lanes<V>::S* p, V v, int64_t n) {
  if constexpr (Lanes<V>::W == 1) {
    *p = v;
  } else {
    std::memcpy(p, &v, sizeof(float) * static_cast<size_t>(kFull ? Lanes<V>::W : n));
  }
}

HL_INLINE float vexp(float x) { return std::exp(x); }
HL_INLINE double vexp(double x) { return std::exp(x); }
HL_INLINE float vtanh(float x) { return std::tanh(x); }
HL_INLINE double vtanh(double x) { return std::tanh(x); }

#ifdef HL_VECTOR
// Cephes expf: x clamped to [-87.3, 88.3] (2^n stays a normal float), n = round(x / ln 2) by the
// 1.5·2^23 trick, Cody-Waite reduction with ln 2 in two parts, degree-5 polynomial.
template <class V>
HL_INLINE std::enable_if_t<(Lanes<V>::W > 1), V> vexp(V x) {
  using I = typename Lanes<V>::I;
  x = x > 88.3f ? bcast<V>(88.3f) : x;
  x = x < -87.3f ? bcast<V>(-87.3f) : x;
  const V magic = bcast<V>(12582912.0f);
  const V r = x * 1.44269504088896341f + magic;
  const I n = (I)r - (I)magic;
  const V fx = r - magic;
  x = x - fx * 0.693359375f;
  x = x - fx * -2.12194440e-4f;
  V y = bcast<V>(1.9875691500e-4f);
  y = y * x + 1.3981999507e-3f;
  y = y * x + 8.3334519073e-3f;
  y = y * x + 4.1665795894e-2f;
  y = y * x + 1.6666665459e-1f;
  y = y * x + 5.0000001201e-1f;
  y = y * (x * x) + x + 1.0f;
  const I e = (n + 127) << 23;
  return y * (V)e;
}

// Cephes tanhf: odd polynomial below |x| = 0.625 (keeps the relative precision near 0),
// 1 - 2 / (exp(2|x|) + 1) with the sign of x above.
template <class V>
HL_INLINE std::enable_if_t<(Lanes<V>::W > 1), V> vtanh(V x) {
  using I = typename Lanes<V>::I;
  const I sign = (I)x & (int32_t)0x80000000u;
  const V ax = (V)((I)x & 0x7fffffff);
  const V big = 1.0f - 2.0f / (vexp(ax + ax) + 1.0f);
  const V s = x * x;
  V p = bcast<V>(-5.70498872745e-3f);
  p = p * s + 2.06390887954e-2f;
  p = p * s - 5.37397155531e-2f;
  p = p * s + 1.33314422036e-1f;
  p = p * s - 3.33332819422e-1f;
  const V small = p * s * x + x;
  return ax >= 0.625f ? (V)((I)big | sign) : small;
}
#endif

template <class V>
HL_INLINE V vsigmoid(V x) {
  return bcast<V>(1) / (bcast<V>(1) + vexp(-x));
}

// ---- one row of one step ------------------------------------------------------------------------

// Forward, lanes [j, j+n) of one row. g [6H]: in the x projection, out the activated gates
// (carry untouched); hg [5H] the recurrent projection (null: h_prev = 0); h_out = the masked h.
template <class V, bool kFull>
HL_INLINE void fwd_chunk(int64_t j, int64_t n, typename Lanes<V>::S* g,
                         const typename Lanes<V>::S* hg, const typename Lanes<V>::S* bias,
                         const typename Lanes<V>::S* cp, const typename Lanes<V>::S* drop,
                         typename Lanes<V>::S* h_out, typename Lanes<V>::S* c_out, int64_t H) {
  V pre[5];
  for (int k = 0; k < 5; ++k) {
    pre[k] = ld<V, kFull>(g + k * H + j, n) + ld<V, kFull>(bias + k * H + j, n);
    if (hg != nullptr) pre[k] = pre[k] + ld<V, kFull>(hg + k * H + j, n);
  }
  const V i = vsigmoid(pre[0]), f = vsigmoid(pre[1]), gg = vtanh(pre[2]);
  const V o = vsigmoid(pre[3]), r = vsigmoid(pre[4]);
  const V carry = ld<V, kFull>(g + 5 * H + j, n);
  const V c = f * ld<V, kFull>(cp + j, n) + i * gg;
  V h = r * o * vtanh(c) + (bcast<V>(1) - r) * carry;
  if (drop != nullptr) h = h * ld<V, kFull>(drop + j, n);
  st<V, kFull>(g + j, i, n);
  st<V, kFull>(g + H + j, f, n);
  st<V, kFull>(g + 2 * H + j, gg, n);
  st<V, kFull>(g + 3 * H + j, o, n);
  st<V, kFull>(g + 4 * H + j, r, n);
  st<V, kFull>(c_out + j, c, n);
  st<V, kFull>(h_out + j, h, n);
}

// Backward, lanes [j, j+n) of an active row. g [6H] the activated gates; gh in: the grad w.r.t.
// the state h after the step minus `rec` (null: 0), out: 0 (the grad w.r.t. h_prev is then all in
// the next recurrent GEMM); gc in/out: the grad w.r.t. c after / before the step; dg [6H] out.
template <class V, bool kFull>
HL_INLINE void bwd_chunk(int64_t j, int64_t n, const typename Lanes<V>::S* g,
                         const typename Lanes<V>::S* cp, const typename Lanes<V>::S* drop,
                         const typename Lanes<V>::S* gout, const typename Lanes<V>::S* rec,
                         typename Lanes<V>::S* gh, typename Lanes<V>::S* gc,
                         typename Lanes<V>::S* gdrop, typename Lanes<V>::S* dg, int64_t H) {
  const V one = bcast<V>(1);
  const V i = ld<V, kFull>(g + j, n), f = ld<V, kFull>(g + H + j, n);
  const V gg = ld<V, kFull>(g + 2 * H + j, n), o = ld<V, kFull>(g + 3 * H + j, n);
  const V r = ld<V, kFull>(g + 4 * H + j, n), carry = ld<V, kFull>(g + 5 * H + j, n);
  const V c_prev = ld<V, kFull>(cp + j, n);
  const V tc = vtanh(f * c_prev + i * gg);
  V gn = ld<V, kFull>(gh + j, n);
  if (rec != nullptr) gn = gn + ld<V, kFull>(rec + j, n);
  if (gout != nullptr) gn = gn + ld<V, kFull>(gout + j, n);
  if (drop != nullptr) {
    const V h_raw = r * o * tc + (one - r) * carry;
    st<V, kFull>(gdrop + j, ld<V, kFull>(gdrop + j, n) + gn * h_raw, n);
    gn = gn * ld<V, kFull>(drop + j, n);
  }
  const V d_carry = gn * (one - r);
  const V d_r = gn * (o * tc - carry) * r * (one - r);
  const V d_o = gn * r * tc * o * (one - o);
  const V gcn = ld<V, kFull>(gc + j, n) + gn * r * o * (one - tc * tc);
  const V d_i = gcn * gg * i * (one - i);
  const V d_f = gcn * c_prev * f * (one - f);
  const V d_g = gcn * i * (one - gg * gg);
  st<V, kFull>(gc + j, gcn * f, n);
  st<V, kFull>(gh + j, bcast<V>(0), n);
  st<V, kFull>(dg + j, d_i, n);
  st<V, kFull>(dg + H + j, d_f, n);
  st<V, kFull>(dg + 2 * H + j, d_g, n);
  st<V, kFull>(dg + 3 * H + j, d_o, n);
  st<V, kFull>(dg + 4 * H + j, d_r, n);
  st<V, kFull>(dg + 5 * H + j, d_carry, n);
}

template <class V>
HL_INLINE void fwd_row(typename Lanes<V>::S* g, const typename Lanes<V>::S* hg,
                       const typename Lanes<V>::S* bias, const typename Lanes<V>::S* cp,
                       const typename Lanes<V>::S* drop, typename Lanes<V>::S* h_out,
                       typename Lanes<V>::S* c_out, int64_t H) {
  constexpr int64_t W = Lanes<V>::W;
  int64_t j = 0;
  for (; j + W <= H; j += W) fwd_chunk<V, true>(j, W, g, hg, bias, cp, drop, h_out, c_out, H);
  if (j < H) fwd_chunk<V, false>(j, H - j, g, hg, bias, cp, drop, h_out, c_out, H);
}

template <class V>
HL_INLINE void bwd_row(const typename Lanes<V>::S* g, const typename Lanes<V>::S* cp,
                       const typename Lanes<V>::S* drop, const typename Lanes<V>::S* gout,
                       const typename Lanes<V>::S* rec, typename Lanes<V>::S* gh,
                       typename Lanes<V>::S* gc, typename Lanes<V>::S* gdrop,
                       typename Lanes<V>::S* dg, int64_t H) {
  constexpr int64_t W = Lanes<V>::W;
  int64_t j = 0;
  for (; j + W <= H; j += W) bwd_chunk<V, true>(j, W, g, cp, drop, gout, rec, gh, gc, gdrop, dg, H);
  if (j < H) bwd_chunk<V, false>(j, H - j, g, cp, drop, gout, rec, gh, gc, gdrop, dg, H);
}

// ---- float kernels per ISA (picked at run time) -------------------------------------------------

using FwdRowF = void (*)(float*, const float*, const float*, const float*, const float*, float*,
                         float*, int64_t);
using BwdRowF = void (*)(const float*, const float*, const float*, const float*, const float*,
                         float*, float*, float*, float*, int64_t);

#ifdef HL_VECTOR
using BaseV = vf16;
#else
using BaseV = float;
#endif

void fwd_row_base(float* g, const float* hg, const float* bias, const float* cp, const float* drop,
                  float* h_out, float* c_out, int64_t H) {
  fwd_row<BaseV>(g, hg, bias, cp, drop, h_out, c_out, H);
}
void bwd_row_base(const float* g, const float* cp, const float* drop, const float* gout,
                  const float* rec, float* gh, float* gc, float* gdrop, float* dg, int64_t H) {
  bwd_row<BaseV>(g, cp, drop, gout, rec, gh, gc, gdrop, dg, H);
}

#ifdef HL_X86
#define HL_AVX512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,fma")))
#define HL_AVX2 __attribute__((target("avx2,fma")))
HL_AVX512 void fwd_row_avx512(float* g, const float* hg, const float* bias, const float* cp,
                              const float* drop, float* h_out, float* c_out, int64_t H) {
  fwd_row<vf16>(g, hg, bias, cp, drop, h_out, c_out, H);
}
HL_AVX512 void bwd_row_avx512(const float* g, const float* cp, const float* drop,
                              const float* gout, const float* rec, float* gh, float* gc,
                              float* gdrop, float* dg, int64_t H) {
  bwd_row<vf16>(g, cp, drop, gout, rec, gh, gc, gdrop, dg, H);
}
HL_AVX2 void fwd_row_avx2(float* g, const float* hg, const float* bias, const float* cp,
                          const float* drop, float* h_out, float* c_out, int64_t H) {
  fwd_row<vf8>(g, hg, bias, cp, drop, h_out, c_out, H);
}
HL_AVX2 void bwd_row_avx2(const float* g, const float* cp, const float* drop, const float* gout,
                          const float* rec, float* gh, float* gc, float* gdrop, float* dg,
                          int64_t H) {
  bwd_row<vf8>(g, cp, drop, gout, rec, gh, gc, gdrop, dg, H);
}
#endif

struct FloatKernels {
  FwdRowF fwd;
  BwdRowF bwd;
  const char* name;
};

constexpr FloatKernels kBase{&fwd_row_base, &bwd_row_base, "base"};
#ifdef HL_X86
constexpr FloatKernels kAvx2{&fwd_row_avx2, &bwd_row_avx2, "avx2"};
constexpr FloatKernels kAvx512{&fwd_row_avx512, &bwd_row_avx512, "avx512"};
#endif

// 0 base, 1 avx2, 2 avx512
int best_isa() {
#ifdef HL_X86
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
    return 2;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
  return 0;
}

std::atomic<int> g_isa{-1};

const FloatKernels& float_kernels() {
  int isa = g_isa.load(std::memory_order_relaxed);
  if (isa < 0) {
    isa = best_isa();
    g_isa.store(isa, std::memory_order_relaxed);
  }
#ifdef HL_X86
  if (isa == 2) return kAvx512;
  if (isa == 1) return kAvx2;
#endif
  return kBase;
}

// highway_lstm_isa(str? isa=None) -> str: the gate-math code path in use; "base" | "avx2" |
// "avx512" (or "auto") switches it, which the tests use to cover every path the CPU can run.
std::string highway_lstm_isa(const std::optional<std::string>& isa) {
  if (isa.has_value()) {
    const int best = best_isa();
    int want = -1;
    if (*isa == "auto") want = best;
    if (*isa == "base") want = 0;
    if (*isa == "avx2") want = 1;
    if (*isa == "avx512") want = 2;
    TORCH_CHECK_VALUE(want >= 0, "highway_lstm_isa: unknown code path '", *isa,
                      "' (auto, base, avx2, avx512)");
    TORCH_CHECK_VALUE(want <= best, "highway_lstm_isa: this CPU cannot run '", *isa, "'");
    g_isa.store(want, std::memory_order_relaxed);
  }
  return float_kernels().name;
}

// acc_t rows: float -> the ISA kernels, double -> the scalar template.
template <typename acc_t>
HL_INLINE void fwd_row_any(acc_t* g, const acc_t* hg, const acc_t* bias, const acc_t* cp,
                           const acc_t* drop, acc_t* h_out, acc_t* c_out, int64_t H,
                           const FloatKernels& k) {
  if constexpr (std::is_same_v<acc_t, float>) {
    k.fwd(g, hg, bias, cp, drop, h_out, c_out, H);
  } else {
    fwd_row<double>(g, hg, bias, cp, drop, h_out, c_out, H);
  }
}

template <typename acc_t>
HL_INLINE void bwd_row_any(const acc_t* g, const acc_t* cp, const acc_t* drop, const acc_t* gout,
                           const acc_t* rec, acc_t* gh, acc_t* gc, acc_t* gdrop, acc_t* dg,
                           int64_t H, const FloatKernels& k) {
  if constexpr (std::is_same_v<acc_t, float>) {
    k.bwd(g, cp, drop, gout, rec, gh, gc, gdrop, dg, H);
  } else {
    bwd_row<double>(g, cp, drop, gout, rec, gh, gc, gdrop, dg, H);
  }
}

template <typename scalar_t>
struct AccOf {
  using type = float;
};
template <>
struct AccOf<double> {
  using type = double;
};

// Batch rows per parallel task of the gate math: at least 16k cells. A step's pass over B=32 x
// H=256 takes ~20 us against ~300 us for its GEMM, so below that size a parallel region (one more
// barrier per step, on top of the GEMM's) costs more than it saves; larger steps split. Tunable
// with STACKFT_HL_GRAIN (cells per task) for measurements.
int64_t row_grain(int64_t H) {
  static const int64_t cells = [] {
    const char* env = std::getenv("STACKFT_HL_GRAIN");
    return env != nullptr && std::atoll(env) > 0 ? static_cast<int64_t>(std::atoll(env)) : int64_t{16384};
  }();
  return std::max<int64_t>(1, cells / std::max<int64_t>(H, 1));
}

at::ScalarType acc_type(at::ScalarType t) { return t == at::kDouble ? at::kDouble : at::kFloat; }

// ---- GEMMs --------------------------------------------------------------------------------------
// fp32 GEMMs go to at::mm (MKL / OpenBLAS), except the large ones, which go to oneDNN's matmul
// (at::native::mkldnn_matmul, exported by libtorch_cpu) when torch has it: on the AVX-512 hosts
// measured it is 10-30% faster than MKL's sgemm for these shapes (bench/README.md). The symbol is
// looked up at run time, so a torch without it (or with another signature) only loses the fast
// path; torch.backends.mkldnn.enabled = False and STACKFT_HL_GEMM=mm turn it off.

using MkldnnMatmulFn = void (*)(const at::Tensor&, const at::Tensor&, const at::Tensor&, float,
                                float);

MkldnnMatmulFn find_mkldnn_matmul() {
#ifdef HL_DLSYM
  const char* env = std::getenv("STACKFT_HL_GEMM");
  if (env != nullptr && std::string(env) == "mm") return nullptr;
  const char* name = "_ZN2at6native13mkldnn_matmulERKNS_6TensorES3_S3_ff";
  void* sym = dlsym(RTLD_DEFAULT, name);
  if (sym == nullptr) {
    void* lib = dlopen("libtorch_cpu.so", RTLD_NOW | RTLD_NOLOAD);
    if (lib != nullptr) sym = dlsym(lib, name);
  }
  return reinterpret_cast<MkldnnMatmulFn>(sym);
#else
  return nullptr;
#endif
}

MkldnnMatmulFn mkldnn_matmul_fn() {
  static const MkldnnMatmulFn fn = find_mkldnn_matmul();
  return fn;
}

// Whether the symbol found runs here: torch's mkldnn_matmul refuses (RuntimeError) on CPUs whose
// oneDNN has no bf16 support (AVX2-only x86, or ONEDNN_MAX_CPU_ISA=AVX2), even for fp32 operands,
// so one 1 x 1 product is tried, once per process.
bool onednn_runs() {
  static const bool ok = [] {
    if (mkldnn_matmul_fn() == nullptr || !at::hasMKLDNN()) return false;
    try {
      const at::Tensor one = at::ones({1, 1}, at::TensorOptions().dtype(at::kFloat));
      at::Tensor out = at::empty({1, 1}, one.options());
      mkldnn_matmul_fn()(one, one, out, /*beta=*/0.0f, /*alpha=*/1.0f);
      return out.item<float>() == 1.0f;
    } catch (const std::exception&) {
      return false;
    }
  }();
  return ok;
}

bool use_onednn(const at::Tensor& out) {
  return out.scalar_type() == at::kFloat && at::globalContext().userEnabledMkldnn() && onednn_runs();
}

// out = a @ b (out preallocated, contiguous); large=true: oneDNN when available
void gemm_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, bool large) {
  if (large && a.size(0) > 0 && a.size(1) > 0 && b.size(1) > 0 && use_onednn(out)) {
    mkldnn_matmul_fn()(a, b, out, /*beta=*/0.0f, /*alpha=*/1.0f);
  } else {
    at::mm_out(out, a, b);
  }
}

at::Tensor gemm(const at::Tensor& a, const at::Tensor& b, bool large) {
  at::Tensor out = at::empty({a.size(0), b.size(1)}, a.options());
  gemm_out(out, a, b, large);
  return out;
}

// The per-step recurrent GEMMs of both passes go to packed::gemm (a micro-kernel on a packed copy
// of W_h, packed_gemm.h) when the gate math runs its AVX-512 or AVX2 path, on the micro-kernel of the
// same ISA. Measured side by side (bench/bench_highway_gemm.py, one Zen 5 core / two): AVX-512
// 1.2-1.8x oneDNN's matmul and 2.3-3x MKL's sgemm at [32, 256] x [256, 1280] and [32, 1280] x
// [1280, 256]; AVX2, with oneDNN and MKL held to AVX2, 1.2-1.5x MKL's AVX2 sgemm there. On the large
// GEMMs over all B·T rows oneDNN (or MKL) was as fast or faster, so those stay as above.
// STACKFT_HL_PACKED=0 turns it off; read per call, so tests can switch it. Returns the micro-kernel's
// ISA (packed::kAvx512 / packed::kAvx2) or 0.
int use_packed() {
  const FloatKernels& k = float_kernels();
#ifdef HL_X86
  const int isa = &k == &kAvx512 ? packed::kAvx512 : &k == &kAvx2 ? packed::kAvx2 : 0;
#else
  const int isa = 0;
  (void)k;
#endif
  if (isa == 0 || isa > packed::cpu_isa()) return 0;
  const char* env = std::getenv("STACKFT_HL_PACKED");
  return env == nullptr || std::string(env) != "0" ? isa : 0;
}

// highway_lstm_gemm() -> str: where the large fp32 GEMMs run, "onednn" or "mm" (at::mm)
std::string highway_lstm_gemm() {
  return at::globalContext().userEnabledMkldnn() && onednn_runs() ? "onednn" : "mm";
}

// highway_lstm_step_gemm() -> str: where the per-step fp32 GEMMs run, "packed-avx512", "packed-avx2"
// or "blas" (the forward's at::mm, the backward's large-GEMM path)
std::string highway_lstm_step_gemm() {
  const int isa = use_packed();
  return isa == packed::kAvx512 ? "packed-avx512" : isa == packed::kAvx2 ? "packed-avx2" : "blas";
}

// ---- checks -------------------------------------------------------------------------------------

void check_same(const at::Tensor& t, const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), "highway_lstm: ", name,
                   " must have x's dtype ", x.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device().is_cpu(), "highway_lstm (CPU kernel): ", name, " must be a CPU tensor");
}

void check_state(const std::optional<at::Tensor>& t, const at::Tensor& x, int64_t B, int64_t H,
                 const char* name) {
  if (!t.has_value()) return;
  check_same(*t, x, name);
  TORCH_CHECK_VALUE(t->dim() == 2 && t->size(0) == B && t->size(1) == H, "highway_lstm: ", name,
                    " must be [B, H] = [", B, ", ", H, "], got ", t->sizes());
}

// returns H
int64_t check_args(const at::Tensor& x, const at::Tensor& lengths, const at::Tensor& W_x,
                   const at::Tensor& W_h, const std::optional<at::Tensor>& h0,
                   const std::optional<at::Tensor>& c0,
                   const std::optional<at::Tensor>& dropout_mask) {
  const auto dt = x.scalar_type();
  TORCH_CHECK_TYPE(dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16,
                   "highway_lstm (CPU kernel): x must be float32, float64 or bfloat16, got ", dt);
  TORCH_CHECK(x.device().is_cpu(), "highway_lstm (CPU kernel): x must be a CPU tensor");
  TORCH_CHECK_VALUE(x.dim() == 3, "highway_lstm: x must be [B, T, in], got ", x.dim(), "-D");
  const int64_t B = x.size(0), n_in = x.size(2);
  TORCH_CHECK_VALUE(W_h.dim() == 2 && W_h.size(0) == 5 * W_h.size(1),
                    "highway_lstm: W_h must be [5H, H], got ", W_h.sizes());
  const int64_t H = W_h.size(1);
  TORCH_CHECK_VALUE(W_x.dim() == 2 && W_x.size(0) == 6 * H && W_x.size(1) == n_in,
                    "highway_lstm: W_x must be [6H, in] = [", 6 * H, ", ", n_in, "], got ",
                    W_x.sizes());
  check_same(W_x, x, "W_x");
  check_same(W_h, x, "W_h");
  TORCH_CHECK_VALUE(lengths.dim() == 1 && lengths.size(0) == B,
                    "highway_lstm: lengths must be [B] = [", B, "], got ", lengths.sizes());
  TORCH_CHECK_TYPE(lengths.scalar_type() == at::kLong || lengths.scalar_type() == at::kInt,
                   "highway_lstm: lengths must be int64 or int32, got ", lengths.scalar_type());
  TORCH_CHECK(lengths.device().is_cpu(), "highway_lstm (CPU kernel): lengths must be on the CPU");
  check_state(h0, x, B, H, "h0");
  check_state(c0, x, B, H, "c0");
  check_state(dropout_mask, x, B, H, "dropout_mask");
  return H;
}

// ---- forward ------------------------------------------------------------------------------------

template <typename scalar_t>
void forward_steps(at::Tensor& G, const at::Tensor& W_h, const at::Tensor& bias_acc,
                   const int64_t* len, const at::Tensor& drop_acc, bool has_h0, bool reverse,
                   at::Tensor& Hp, at::Tensor& Cp, at::Tensor& out, at::Tensor& h_n,
                   at::Tensor& c_n_acc) {
  using acc_t = typename AccOf<scalar_t>::type;
  constexpr bool kSame = std::is_same_v<scalar_t, acc_t>;
  const int64_t B = G.size(0), T = G.size(1), H = Hp.size(2);
  const FloatKernels& k = float_kernels();
  at::Tensor hg = at::empty({B, 5 * H}, Hp.options());
  const at::Tensor W_hT = W_h.t();
  acc_t* g_base = G.mutable_data_ptr<acc_t>();
  scalar_t* hp_base = Hp.mutable_data_ptr<scalar_t>();
  acc_t* cp_base = Cp.mutable_data_ptr<acc_t>();
  scalar_t* out_base = out.mutable_data_ptr<scalar_t>();
  scalar_t* hn_base = h_n.mutable_data_ptr<scalar_t>();
  acc_t* cn_base = c_n_acc.mutable_data_ptr<acc_t>();
  const acc_t* bias = bias_acc.const_data_ptr<acc_t>();
  const acc_t* drop = drop_acc.defined() ? drop_acc.const_data_ptr<acc_t>() : nullptr;
  const scalar_t* hg_base = hg.const_data_ptr<scalar_t>();
  const int64_t grain = row_grain(H);
  // fp32: W_hᵀ [H, 5H] packed once for the T per-step GEMMs (W_hᵀ[k, n] = W_h[n * H + k])
  at::Tensor W_pk;
  int pk_isa = 0;
  if constexpr (std::is_same_v<scalar_t, float>) {
    pk_isa = use_packed();
    if (pk_isa != 0) W_pk = packed::pack_b(W_h.const_data_ptr<float>(), H, 5 * H, 1, H);
  }
  // set only with W_pk, i.e. only when scalar_t is float
  const float* hp_f = W_pk.defined() ? Hp.const_data_ptr<float>() : nullptr;
  float* hg_f = W_pk.defined() ? hg.mutable_data_ptr<float>() : nullptr;

  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = reverse ? T - 1 - s : s;
    const int64_t tn = reverse ? t - 1 : t + 1;
    const bool last = s == T - 1;
    const bool rec = s > 0 || has_h0;  // else h_prev = 0: no recurrent term
    if (rec) {
      if (hp_f != nullptr) {
        packed::gemm(B, 5 * H, H, hp_f + t * H, T * H, 1, W_pk, hg_f, 5 * H, /*accumulate=*/false, pk_isa);
      } else {
        at::mm_out(hg, Hp.select(1, t), W_hT);
      }
    }
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      std::vector<float> tmp(kSame ? 0 : 6 * H);
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t bt = b * T + t;
        acc_t* g = g_base + bt * 6 * H;
        const scalar_t* hp = hp_base + bt * H;
        const acc_t* cp = cp_base + bt * H;
        scalar_t* hn = last ? hn_base + b * H : hp_base + (b * T + tn) * H;
        acc_t* cn = last ? cn_base + b * H : cp_base + (b * T + tn) * H;
        scalar_t* o = out_base + bt * H;
        if (t < len[b]) {
          const acc_t* dr = drop != nullptr ? drop + b * H : nullptr;
          if constexpr (kSame) {
            fwd_row_any<acc_t>(g, rec ? hg_base + b * 5 * H : nullptr, bias, cp, dr, hn, cn, H, k);
            std::memcpy(o, hn, sizeof(scalar_t) * H);
          } else {
            float* hgf = tmp.data();
            float* hf = tmp.data() + 5 * H;
            if (rec) {
              const scalar_t* src = hg_base + b * 5 * H;
              for (int64_t j = 0; j < 5 * H; ++j) hgf[j] = static_cast<float>(src[j]);
            }
            fwd_row_any<acc_t>(g, rec ? hgf : nullptr, bias, cp, dr, hf, cn, H, k);
            for (int64_t j = 0; j < H; ++j) hn[j] = o[j] = static_cast<scalar_t>(hf[j]);
          }
        } else {  // step past this row's length: output 0, state carried over
          std::memset(o, 0, sizeof(scalar_t) * H);
          std::memcpy(hn, hp, sizeof(scalar_t) * H);
          std::memcpy(cn, cp, sizeof(acc_t) * H);
        }
      }
    });
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
highway_lstm_fwd_cpu(const at::Tensor& x_in, const at::Tensor& lengths_in, const at::Tensor& W_x,
                     const at::Tensor& W_h_in, const at::Tensor& b,
                     const std::optional<at::Tensor>& h0, const std::optional<at::Tensor>& c0,
                     const std::optional<at::Tensor>& dropout_mask, bool reverse) {
  const int64_t H = check_args(x_in, lengths_in, W_x, W_h_in, h0, c0, dropout_mask);
  check_same(b, x_in, "b");
  TORCH_CHECK_VALUE(b.dim() == 1 && b.size(0) == 5 * H, "highway_lstm: b must be [5H] = [", 5 * H,
                    "], got ", b.sizes());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor W_h = W_h_in.contiguous();
  const at::Tensor lengths = lengths_in.to(at::kLong).contiguous();
  const int64_t B = x.size(0), T = x.size(1), n_in = x.size(2);
  const auto dt = x.scalar_type();
  const auto acc = acc_type(dt);
  const auto opt = x.options();
  const auto opt_acc = opt.dtype(acc);

  // the input projection of every step, one GEMM: [B·T, in] x [in, 6H]
  at::Tensor G = gemm(x.view({B * T, n_in}), W_x.t(), /*large=*/true);
  if (G.scalar_type() != acc) G = G.to(acc);
  G = G.view({B, T, 6 * H});
  at::Tensor Hp = at::empty({B, T, H}, opt);
  at::Tensor Cp = at::empty({B, T, H}, opt_acc);
  at::Tensor out = at::empty({B, T, H}, opt);
  at::Tensor h_n = at::empty({B, H}, opt);
  at::Tensor c_n = at::empty({B, H}, opt_acc);
  if (T == 0) {
    if (h0.has_value()) h_n.copy_(*h0); else h_n.zero_();
    if (c0.has_value()) c_n.copy_(*c0); else c_n.zero_();
  } else {
    const int64_t t0 = reverse ? T - 1 : 0;
    if (h0.has_value()) Hp.select(1, t0).copy_(*h0); else Hp.select(1, t0).zero_();
    if (c0.has_value()) Cp.select(1, t0).copy_(*c0); else Cp.select(1, t0).zero_();
    const at::Tensor bias_acc = b.to(acc).contiguous();
    const at::Tensor drop_acc =
        dropout_mask.has_value() ? dropout_mask->to(acc).contiguous() : at::Tensor();
    const int64_t* len = lengths.const_data_ptr<int64_t>();
    switch (dt) {
      case at::kFloat:
        forward_steps<float>(G, W_h, bias_acc, len, drop_acc, h0.has_value(), reverse, Hp, Cp,
                             out, h_n, c_n);
        break;
      case at::kDouble:
        forward_steps<double>(G, W_h, bias_acc, len, drop_acc, h0.has_value(), reverse, Hp, Cp,
                              out, h_n, c_n);
        break;
      case at::kBFloat16:
        forward_steps<c10::BFloat16>(G, W_h, bias_acc, len, drop_acc, h0.has_value(), reverse, Hp,
                                     Cp, out, h_n, c_n);
        break;
      default:
        TORCH_CHECK(false, "highway_lstm: unsupported dtype ", dt);
    }
  }
  if (c_n.scalar_type() != dt) c_n = c_n.to(dt);
  return {out, h_n, c_n, G, Hp, Cp};
}

namespace {

template <typename acc_t>
void backward_steps(const at::Tensor& G, const at::Tensor& Cp, const at::Tensor& drop_acc,
                    const at::Tensor& gout_acc, const at::Tensor& W_h_acc, const int64_t* len,
                    bool reverse, bool need_dstate, at::Tensor& gh, at::Tensor& gc,
                    at::Tensor& gdrop, at::Tensor& dG, at::Tensor& rec) {
  const int64_t B = G.size(0), T = G.size(1), H = Cp.size(2);
  const FloatKernels& k = float_kernels();
  const acc_t* g_base = G.const_data_ptr<acc_t>();
  const acc_t* cp_base = Cp.const_data_ptr<acc_t>();
  const acc_t* drop = drop_acc.defined() ? drop_acc.const_data_ptr<acc_t>() : nullptr;
  const acc_t* gout = gout_acc.defined() ? gout_acc.const_data_ptr<acc_t>() : nullptr;
  acc_t* gh_base = gh.mutable_data_ptr<acc_t>();
  acc_t* gc_base = gc.mutable_data_ptr<acc_t>();
  acc_t* gdrop_base = gdrop.defined() ? gdrop.mutable_data_ptr<acc_t>() : nullptr;
  acc_t* dg_base = dG.mutable_data_ptr<acc_t>();
  const acc_t* rec_base = rec.const_data_ptr<acc_t>();
  const int64_t grain = row_grain(H);
  at::Tensor W_pk;  // fp32: W_h [5H, H] packed once for the T per-step GEMMs
  int pk_isa = 0;
  if constexpr (std::is_same_v<acc_t, float>) {
    pk_isa = use_packed();
    if (pk_isa != 0) W_pk = packed::pack_b(W_h_acc.const_data_ptr<float>(), 5 * H, H, H, 1);
  }

  for (int64_t s = 0; s < T; ++s) {
    const int64_t t = reverse ? s : T - 1 - s;  // the forward's steps, last first
    const bool has_rec = s > 0;                  // rec = grad w.r.t. h_prev of the step after t
    at::parallel_for(0, B, grain, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t bt = b * T + t;
        acc_t* dg = dg_base + bt * 6 * H;
        acc_t* ghr = gh_base + b * H;
        const acc_t* rr = has_rec ? rec_base + b * H : nullptr;
        if (t < len[b]) {
          bwd_row_any<acc_t>(g_base + bt * 6 * H, cp_base + bt * H,
                             drop != nullptr ? drop + b * H : nullptr,
                             gout != nullptr ? gout + bt * H : nullptr, rr, ghr, gc_base + b * H,
                             gdrop_base != nullptr ? gdrop_base + b * H : nullptr, dg, H, k);
        } else {  // state passed through: its grads pass through too, no gate grads
          if (rr != nullptr) {
            for (int64_t j = 0; j < H; ++j) ghr[j] += rr[j];
          }
          std::memset(dg, 0, sizeof(acc_t) * 6 * H);
        }
      }
    });
    // grad w.r.t. the h this step read: [B, 5H] (row stride T·6H) x [5H, H]; after the first
    // step of the forward it is the grad of h0, skipped when nobody wants it
    if (s + 1 < T || need_dstate) {
      if (W_pk.defined()) {
        packed::gemm(B, H, 5 * H, dG.const_data_ptr<float>() + t * 6 * H, T * 6 * H, 1, W_pk,
                     rec.mutable_data_ptr<float>(), H, /*accumulate=*/false, pk_isa);
      } else {
        gemm_out(rec, dG.select(1, t).narrow(1, 0, 5 * H), W_h_acc, /*large=*/true);
      }
    }
  }
}

at::Tensor acc_or_zeros(const std::optional<at::Tensor>& t, at::IntArrayRef shape,
                        const at::TensorOptions& opt_acc) {
  if (t.has_value() && t->defined()) {
    return t->to(c10::typeMetaToScalarType(opt_acc.dtype()), /*non_blocking=*/false,
                 /*copy=*/true)
        .contiguous();
  }
  return at::zeros(shape, opt_acc);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
highway_lstm_bwd_cpu(const std::optional<at::Tensor>& grad_out,
                     const std::optional<at::Tensor>& grad_h_n,
                     const std::optional<at::Tensor>& grad_c_n, const at::Tensor& x_in,
                     const at::Tensor& lengths_in, const at::Tensor& W_x_in,
                     const at::Tensor& W_h_in, const std::optional<at::Tensor>& dropout_mask,
                     const at::Tensor& gates, const at::Tensor& h_prev, const at::Tensor& c_prev,
                     bool reverse, std::array<bool, 3> output_mask) {
  const bool need_dx = output_mask[0], need_dw = output_mask[1], need_dstate = output_mask[2];
  const int64_t H = check_args(x_in, lengths_in, W_x_in, W_h_in, std::nullopt, std::nullopt,
                               dropout_mask);
  const int64_t B = x_in.size(0), T = x_in.size(1), n_in = x_in.size(2);
  const auto dt = x_in.scalar_type();
  const auto acc = acc_type(dt);
  const auto opt_acc = x_in.options().dtype(acc);
  TORCH_CHECK_VALUE(gates.sizes() == at::IntArrayRef({B, T, 6 * H}) && gates.scalar_type() == acc &&
                        gates.is_contiguous(),
                    "highway_lstm_bwd: gates must be the forward's [B, T, 6H] ", acc, " buffer");
  TORCH_CHECK_VALUE(h_prev.sizes() == at::IntArrayRef({B, T, H}) &&
                        c_prev.sizes() == at::IntArrayRef({B, T, H}) &&
                        c_prev.scalar_type() == acc && c_prev.is_contiguous(),
                    "highway_lstm_bwd: h_prev / c_prev must be the forward's [B, T, H] buffers");
  const at::Tensor lengths = lengths_in.to(at::kLong).contiguous();

  at::Tensor gh = acc_or_zeros(grad_h_n, {B, H}, opt_acc);
  at::Tensor gc = acc_or_zeros(grad_c_n, {B, H}, opt_acc);
  const at::Tensor gout = (grad_out.has_value() && grad_out->defined())
                              ? grad_out->to(acc).contiguous()
                              : at::Tensor();
  if (gout.defined()) {
    TORCH_CHECK_VALUE(gout.sizes() == at::IntArrayRef({B, T, H}),
                      "highway_lstm_bwd: grad_out must be [B, T, H], got ", gout.sizes());
  }
  const at::Tensor drop_acc =
      dropout_mask.has_value() ? dropout_mask->to(acc).contiguous() : at::Tensor();
  at::Tensor gdrop = dropout_mask.has_value() ? at::zeros({B, H}, opt_acc) : at::Tensor();
  const at::Tensor W_h_acc = W_h_in.to(acc).contiguous();
  at::Tensor dG = at::empty({B, T, 6 * H}, opt_acc);
  at::Tensor rec = at::empty({B, H}, opt_acc);
  const int64_t* len = lengths.const_data_ptr<int64_t>();
  if (acc == at::kDouble) {
    backward_steps<double>(gates, c_prev, drop_acc, gout, W_h_acc, len, reverse, need_dstate, gh,
                           gc, gdrop, dG, rec);
  } else {
    backward_steps<float>(gates, c_prev, drop_acc, gout, W_h_acc, len, reverse, need_dstate, gh,
                          gc, gdrop, dG, rec);
  }
  // what is not wanted comes back as [0] (a fresh one each: outputs of a custom op never alias)
  auto none = [&]() { return at::empty({0}, x_in.options()); };
  at::Tensor dh0 = !need_dstate ? none() : T > 0 ? gh.add_(rec) : gh;
  at::Tensor dc0 = need_dstate ? gc : none();

  // weight, bias and input gradients: one GEMM / reduction each over all B·T steps
  const at::Tensor dG2 = dG.view({B * T, 6 * H});
  const at::Tensor dGh = dG2.narrow(1, 0, 5 * H);  // the recurrent gates' grads (= the input ones)
  at::Tensor db, dW_h, dW_x, dx;
  if (need_dw) {
    const int64_t dim0[1] = {0};
    db = at::sum(dGh, at::IntArrayRef(dim0, 1));
    const at::Tensor hp = h_prev.to(acc).reshape({B * T, H});
    if (use_onednn(dG2)) {
      // oneDNN runs dGᵀ·h_prev over the dense [B·T, 6H] buffer at ~2.5x its rate on the 5H-column
      // view (bench/bench_highway_gemm.py); the carry block's H extra rows are dropped
      dW_h = gemm(dG2.t(), hp, /*large=*/true).narrow(0, 0, 5 * H);
    } else {
      dW_h = at::mm(dGh.t(), hp);
    }
    dW_x = gemm(dG2.t(), x_in.to(acc).reshape({B * T, n_in}), /*large=*/true);
  } else {
    db = none(), dW_h = none(), dW_x = none();
  }
  dx = need_dx ? gemm(dG2, W_x_in.to(acc), /*large=*/true).view({B, T, n_in}) : none();
  if (!gdrop.defined()) gdrop = none();
  auto to_dt = [&](at::Tensor t) { return t.scalar_type() == dt ? t : t.to(dt); };
  return {to_dt(dx), to_dt(dW_x), to_dt(dW_h), to_dt(db), to_dt(dh0), to_dt(dc0), to_dt(gdrop)};
}

// highway_lstm_mm(a, b, backend, repeat) -> a @ b (fp32, 2-D, any strides) on one of the layer's GEMM
// paths, "packed" (the best micro-kernel the CPU runs) | "packed-avx512" | "packed-avx2" | "onednn" |
// "mm", run `repeat` times (the packing of b done once, as the layer
// does for its T per-step GEMMs): for tests of the micro-kernel and for bench/bench_highway_gemm.py.
at::Tensor highway_lstm_mm(const at::Tensor& a, const at::Tensor& b, const std::string& backend,
                           int64_t repeat) {
  TORCH_CHECK_VALUE(a.dim() == 2 && b.dim() == 2 && a.size(1) == b.size(0),
                    "highway_lstm_mm: need a [M, K] and b [K, N], got ", a.sizes(), " and ", b.sizes());
  TORCH_CHECK_TYPE(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat,
                   "highway_lstm_mm: float32 only");
  TORCH_CHECK_VALUE(a.device().is_cpu() && b.device().is_cpu(), "highway_lstm_mm: CPU tensors only");
  TORCH_CHECK_VALUE(repeat >= 1, "highway_lstm_mm: repeat must be >= 1, got ", repeat);
  const int64_t M = a.size(0), K = a.size(1), N = b.size(1);
  at::Tensor out = at::empty({M, N}, a.options());
  if (backend == "packed" || backend == "packed-avx512" || backend == "packed-avx2") {
    const int isa = backend == "packed" ? packed::cpu_isa()
                    : backend == "packed-avx512" ? packed::kAvx512 : packed::kAvx2;
    TORCH_CHECK(isa != 0 && isa <= packed::cpu_isa(), "highway_lstm_mm: this CPU cannot run '", backend,
                "' (it needs ", isa == packed::kAvx512 ? "AVX-512F" : "AVX2 and FMA", ")");
    const at::Tensor pk = packed::pack_b(b.const_data_ptr<float>(), K, N, b.stride(0), b.stride(1));
    for (int64_t i = 0; i < repeat; ++i) {
      packed::gemm(M, N, K, a.const_data_ptr<float>(), a.stride(0), a.stride(1), pk,
                   out.mutable_data_ptr<float>(), N, /*accumulate=*/false, isa);
    }
  } else if (backend == "onednn" || backend == "mm") {
    TORCH_CHECK(backend == "mm" || use_onednn(out), "highway_lstm_mm: oneDNN's matmul is unavailable");
    for (int64_t i = 0; i < repeat; ++i) gemm_out(out, a, b, /*large=*/backend == "onednn");
  } else {
    TORCH_CHECK_VALUE(false, "highway_lstm_mm: backend must be packed, packed-avx512, packed-avx2, onednn or mm, "
                      "got '", backend, "'");
  }
  return out;
}

}  // namespace stackft

TORCH_LIBRARY_FRAGMENT(stackft_C, m) {
  m.def(
      "highway_lstm_fwd(Tensor x, Tensor lengths, Tensor W_x, Tensor W_h, Tensor b, Tensor? h0, "
      "Tensor? c0, Tensor? dropout_mask, bool reverse) -> (Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor)");
  m.def(
      "highway_lstm_bwd(Tensor? grad_out, Tensor? grad_h_n, Tensor? grad_c_n, Tensor x, "
      "Tensor lengths, Tensor W_x, Tensor W_h, Tensor? dropout_mask, Tensor gates, Tensor h_prev, "
      "Tensor c_prev, bool reverse, bool[3] output_mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor, "
      "Tensor, Tensor)");
  m.def("highway_lstm_isa(str? isa=None) -> str", &stackft::highway_lstm_isa);
  m.def("highway_lstm_gemm() -> str", &stackft::highway_lstm_gemm);
  m.def("highway_lstm_step_gemm() -> str", &stackft::highway_lstm_step_gemm);
  m.def("highway_lstm_mm(Tensor a, Tensor b, str backend, int repeat=1) -> Tensor");
}

TORCH_LIBRARY_IMPL(stackft_C, CPU, m) {
  m.impl("highway_lstm_fwd", &stackft::highway_lstm_fwd_cpu);
  m.impl("highway_lstm_bwd", &stackft::highway_lstm_bwd_cpu);
  m.impl("highway_lstm_mm", &stackft::highway_lstm_mm);
}

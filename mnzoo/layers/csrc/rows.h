// Per-row passes of the ModeNorm CPU kernels over x in its contiguous (N, C, S) layout: row
// reductions, the affine map and the two backward row passes (see mode_norm_cpu.cpp).
#pragma once
#include <ATen/ATen.h>
#ifdef __AVX2__
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

namespace mnzoo_cpu {

using at::Tensor;

// Grain: rows per task, so that a task touches at least ~32k elements.
inline int64_t row_grain(int64_t s) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(s, 1)); }

// Row reductions. fp32 with AVX2 uses intrinsics: two 8-lane accumulators in registers, a masked
// load for the tail and one in-register horizontal sum. GCC lowers an `omp simd` reduction to
// lane arrays on the stack summed by a serial chain of 8 scalar adds per row; on rows of 49-64
// values that epilogue cost more than the loop (~20 % of the backward at 7x7, by perf).
// Other dtypes and CPUs use the `omp simd` loops (written _Pragma: a #pragma cannot stand
// inside the AT_DISPATCH macro), vectorised without -ffast-math.
#ifdef __AVX2__
inline float hsum(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// Lanes [0, n) set, n in [0, 8].
inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// sum_i f(x1[i], x2[i]) over a row with the lanes of f(0, 0) masked off at the tail; f maps two
// 8-lane vectors to (term a, term b), and both sums are returned.
template <typename F>
inline std::pair<float, float> row_sums_avx2(const float* __restrict__ p1, const float* __restrict__ p2,
                                             int64_t s, F f) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= s; i += 16) {
    auto [ta, tb] = f(_mm256_loadu_ps(p1 + i), _mm256_loadu_ps(p2 + i));
    auto [ua, ub] = f(_mm256_loadu_ps(p1 + i + 8), _mm256_loadu_ps(p2 + i + 8));
    a0 = _mm256_add_ps(a0, ta), b0 = _mm256_add_ps(b0, tb);
    a1 = _mm256_add_ps(a1, ua), b1 = _mm256_add_ps(b1, ub);
  }
  for (; i < s; i += 8) {
    const __m256i mask = tail_mask(std::min<int64_t>(8, s - i));
    auto [ta, tb] = f(_mm256_maskload_ps(p1 + i, mask), _mm256_maskload_ps(p2 + i, mask));
    const __m256 keep = _mm256_castsi256_ps(mask);
    a0 = _mm256_add_ps(a0, _mm256_and_ps(ta, keep)), b0 = _mm256_add_ps(b0, _mm256_and_ps(tb, keep));
  }
  return {hsum(_mm256_add_ps(a0, a1)), hsum(_mm256_add_ps(b0, b1))};
}
#endif

template <typename T>
T row_sum(const T* __restrict__ p, int64_t s) {
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    const __m256 zero = _mm256_setzero_ps();
    return row_sums_avx2(p, p, s, [&](__m256 x, __m256) { return std::pair{x, zero}; }).first;
  }
#endif
  T sum = 0;
  _Pragma("omp simd reduction(+ : sum)")
  for (int64_t i = 0; i < s; ++i) sum += p[i];
  return sum;
}

template <typename T>
T row_mean(const T* __restrict__ p, int64_t s) { return row_sum(p, s) / static_cast<T>(s); }

// sum_i p[i] * q[i]: the per-(sample, mode) reductions of the small graph over C channels.
template <typename T>
T dot(const T* __restrict__ p, const T* __restrict__ q, int64_t s) {
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    const __m256 zero = _mm256_setzero_ps();
    return row_sums_avx2(p, q, s, [&](__m256 a, __m256 b) { return std::pair{_mm256_mul_ps(a, b), zero}; })
        .first;
  }
#endif
  T sum = 0;
  _Pragma("omp simd reduction(+ : sum)")
  for (int64_t i = 0; i < s; ++i) sum += p[i] * q[i];
  return sum;
}

// Mean and biased variance of one row, two-pass (no E[x^2] - E[x]^2 cancellation).
template <typename T>
void row_moments(const T* __restrict__ p, int64_t s, T* mean_out, T* var_out) {
  const T mean = row_mean(p, s);
  T ss = 0;
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vm = _mm256_set1_ps(mean), zero = _mm256_setzero_ps();
    ss = row_sums_avx2(p, p, s, [&](__m256 x, __m256) {
      const __m256 d = _mm256_sub_ps(x, vm);
      return std::pair{_mm256_mul_ps(d, d), zero};
    }).first;
  } else
#endif
  {
    _Pragma("omp simd reduction(+ : ss)")
    for (int64_t i = 0; i < s; ++i) ss += (p[i] - mean) * (p[i] - mean);
  }
  *mean_out = mean;
  *var_out = ss / static_cast<T>(s);
}

// Outputs of at least this size are written with non-temporal (streaming) stores: such a
// tensor does not stay in cache anyway, and streaming skips the read-for-ownership of each output
// line and keeps the input, which the eval kernel reads twice, in cache. Measured on a 2-core
// Zen 3 VM: eval of a 32x64x56x56 map -18 %; a 4 MiB map is faster with plain stores when warm.
constexpr int64_t kStreamBytes = int64_t{8} << 20;

// Whether rows of s values of out can be streamed: fp32 with AVX2, big enough, and every row
// starting on a 64-byte line (no partial lines, which make streaming stores slow).
template <typename T>
bool stream_rows(const Tensor& out, int64_t s) {
#ifdef __AVX2__
  return std::is_same_v<T, float> && out.nbytes() >= static_cast<size_t>(kStreamBytes) &&
         (s * static_cast<int64_t>(sizeof(T))) % 64 == 0 &&
         reinterpret_cast<std::uintptr_t>(out.const_data_ptr()) % 64 == 0;
#else
  return false;
#endif
}

// Ends a parallel region of streaming stores (they are weakly ordered).
inline void stream_fence(bool streamed) {
#ifdef __AVX2__
  if (streamed) _mm_sfence();
#endif
}

// out = a (p - mean) + b for one row.
template <typename T>
void row_affine(const T* __restrict__ p, int64_t s, T a, T mean, T b, T* __restrict__ out,
                bool stream) {
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    if (stream) {  // s is a multiple of 16 and out is line-aligned (stream_rows)
      const __m256 va = _mm256_set1_ps(a), vm = _mm256_set1_ps(mean), vb = _mm256_set1_ps(b);
      for (int64_t i = 0; i < s; i += 8)
        _mm256_stream_ps(out + i, _mm256_fmadd_ps(va, _mm256_sub_ps(_mm256_loadu_ps(p + i), vm), vb));
      return;
    }
  }
#endif
  for (int64_t i = 0; i < s; ++i) out[i] = a * (p[i] - mean) + b;
}

// sum_s gy and sum_s gy (x - m) of one row (the two reductions of the backward).
template <typename T>
void row_grad_sums(const T* __restrict__ py, const T* __restrict__ px, T mean, int64_t s,
                   T* sum_gy, T* sum_gy_xc) {
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    const __m256 vm = _mm256_set1_ps(mean);
    std::tie(*sum_gy, *sum_gy_xc) = row_sums_avx2(py, px, s, [&](__m256 gy, __m256 x) {
      return std::pair{gy, _mm256_mul_ps(gy, _mm256_sub_ps(x, vm))};
    });
    return;
  }
#endif
  T sb = 0, sc = 0;
  _Pragma("omp simd reduction(+ : sb, sc)")
  for (int64_t i = 0; i < s; ++i) {
    sb += py[i];
    sc += py[i] * (px[i] - mean);
  }
  *sum_gy = sb;
  *sum_gy_xc = sc;
}

// gx = a gy + cv (x - mean) + shift for one row (centred, so large means do not cancel).
template <typename T>
void row_grad_input(const T* __restrict__ py, const T* __restrict__ px, int64_t s, T a, T cv,
                    T mean, T shift, T* __restrict__ out, bool stream) {
#ifdef __AVX2__
  if constexpr (std::is_same_v<T, float>) {
    if (stream) {
      const __m256 va = _mm256_set1_ps(a), vc = _mm256_set1_ps(cv);
      const __m256 vm = _mm256_set1_ps(mean), vs = _mm256_set1_ps(shift);
      for (int64_t i = 0; i < s; i += 8) {
        const __m256 xc = _mm256_sub_ps(_mm256_loadu_ps(px + i), vm);
        _mm256_stream_ps(out + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(py + i), _mm256_fmadd_ps(vc, xc, vs)));
      }
      return;
    }
  }
#endif
  for (int64_t i = 0; i < s; ++i) out[i] = a * py[i] + cv * (px[i] - mean) + shift;
}

}  // namespace mnzoo_cpu

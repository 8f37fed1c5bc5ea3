// The passes over x of the ModeNorm CPU kernels, for both memory layouts of a 4-D input:
// - kRows (contiguous NCHW): sample n, channel c is one row of S = H*W values (rows.h). These run
//   in parallel over rows.
// - kChannelsLast (NHWC, what `model.to(memory_format=torch.channels_last)` gives): sample n is S
//   pixels of C contiguous channel values. The per-channel sums run channels-innermost, over
//   blocks of pixels. These run in parallel over samples.
// Everything else in the kernels works on (N, C) and (K, C) arrays and does not see the layout.
#pragma once
#include <ATen/Parallel.h>

#include <vector>

#include "rows.h"

namespace mnzoo_cpu {

enum class Layout { kRows, kChannelsLast };

// The layout of x (the kernels take no other), checked.
inline Layout layout_of(const Tensor& x) {
  if (x.is_contiguous()) return Layout::kRows;
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "mnzoo kernel: x must be contiguous or (4-D) channels_last");
  return Layout::kChannelsLast;
}

// An uninitialised tensor shaped and laid out like x (y, gx).
inline Tensor empty_in(const Tensor& x, Layout layout) {
  return at::empty(x.sizes(), x.options().memory_format(
      layout == Layout::kRows ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast));
}

// Whether the passes write out (y, gx) with streaming stores: NCHW rows only (rows.h,
// stream_rows); the channels-last passes use plain stores.
template <typename T>
bool stream_output(const Tensor& out, int64_t s, Layout layout) {
  return layout == Layout::kRows && stream_rows<T>(out, s);
}

// Samples per task in the channels-last passes (a task touches at least ~32k elements).
inline int64_t sample_grain(int64_t c, int64_t s) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(c * s, 1)); }

// Pixels per block of a channels-last sum: each block is summed on its own, then added to the
// total, so fp32 rounding grows with kBlock + S / kBlock instead of S.
constexpr int64_t kBlock = 64;

// total[q] = sum_i f(i, q) over the S pixels of one channels-last sample, for each channel q;
// blk is C values of scratch.
// Four pixels per step, so the C accumulators are loaded and stored once per four pixels.
template <typename T, typename F>
void plane_sum(int64_t s, int64_t c, T* __restrict__ total, T* __restrict__ blk, F f) {
  std::fill(total, total + c, T(0));
  for (int64_t i0 = 0; i0 < s; i0 += kBlock) {
    std::fill(blk, blk + c, T(0));
    const int64_t i1 = std::min(s, i0 + kBlock);
    int64_t i = i0;
    for (; i + 4 <= i1; i += 4) {
      _Pragma("omp simd")
      for (int64_t q = 0; q < c; ++q) blk[q] += (f(i, q) + f(i + 1, q)) + (f(i + 2, q) + f(i + 3, q));
    }
    for (; i < i1; ++i) {
      _Pragma("omp simd")
      for (int64_t q = 0; q < c; ++q) blk[q] += f(i, q);
    }
    _Pragma("omp simd")
    for (int64_t q = 0; q < c; ++q) total[q] += blk[q];
  }
}

// Per-channel means of one sample (m has C entries); scratch holds C values.
template <typename T>
void sample_means(const T* xs, int64_t c, int64_t s, Layout layout, T* m, T* scratch) {
  if (layout == Layout::kRows) {
    for (int64_t q = 0; q < c; ++q) m[q] = row_mean(xs + q * s, s);
    return;
  }
  plane_sum(s, c, m, scratch, [&](int64_t i, int64_t q) { return xs[i * c + q]; });
  const T inv_s = T(1) / static_cast<T>(s);
  for (int64_t q = 0; q < c; ++q) m[q] *= inv_s;
}

// y = a (x - m) + b for one sample, a, m, b per channel.
template <typename T>
void sample_affine(const T* xs, int64_t c, int64_t s, Layout layout, const T* a, const T* m, const T* b,
                   T* ys, bool stream) {
  if (layout == Layout::kRows) {
    for (int64_t q = 0; q < c; ++q) row_affine(xs + q * s, s, a[q], m[q], b[q], ys + q * s, stream);
    return;
  }
  for (int64_t i = 0; i < s; ++i) {
    const T* __restrict__ p = xs + i * c;
    T* __restrict__ out = ys + i * c;
    _Pragma("omp simd")
    for (int64_t q = 0; q < c; ++q) out[q] = a[q] * (p[q] - m[q]) + b[q];
  }
}

// m, v (N, C): per-(sample, channel) mean and biased variance of x, two-pass.
template <typename T>
void moments(const T* xp, int64_t n, int64_t c, int64_t s, Layout layout, T* m, T* v) {
  if (layout == Layout::kRows) {
    at::parallel_for(0, n * c, row_grain(s), [&](int64_t lo, int64_t hi) {
      for (int64_t r = lo; r < hi; ++r) row_moments(xp + r * s, s, m + r, v + r);
    });
    return;
  }
  const T inv_s = T(1) / static_cast<T>(s);
  at::parallel_for(0, n, sample_grain(c, s), [&](int64_t lo, int64_t hi) {
    std::vector<T> blk(c);
    for (int64_t i = lo; i < hi; ++i) {
      const T* xs = xp + i * s * c;
      T* m_i = m + i * c;
      sample_means(xs, c, s, layout, m_i, blk.data());
      plane_sum(s, c, v + i * c, blk.data(), [&](int64_t p, int64_t q) {
        const T d = xs[p * c + q] - m_i[q];
        return d * d;
      });
      for (int64_t q = 0; q < c; ++q) v[i * c + q] *= inv_s;
    }
  });
}

// y = a (x - m) + b over the whole batch, a, m, b (N, C).
template <typename T>
void apply_map(const T* xp, int64_t n, int64_t c, int64_t s, Layout layout, const T* a, const T* m,
               const T* b, T* yp, bool stream) {
  if (layout == Layout::kRows) {
    at::parallel_for(0, n * c, row_grain(s), [&](int64_t lo, int64_t hi) {
      for (int64_t q = lo; q < hi; ++q) row_affine(xp + q * s, s, a[q], m[q], b[q], yp + q * s, stream);
      stream_fence(stream);
    });
    return;
  }
  at::parallel_for(0, n, sample_grain(c, s), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i)
      sample_affine(xp + i * s * c, c, s, layout, a + i * c, m + i * c, b + i * c, yp + i * s * c, false);
  });
}

// Backward pass 1: gb = sum_s gy and gc = sum_s gy (x - m), both (N, C).
template <typename T>
void grad_sums(const T* gyp, const T* xp, const T* m, int64_t n, int64_t c, int64_t s, Layout layout,
               T* gb, T* gc) {
  if (layout == Layout::kRows) {
    at::parallel_for(0, n * c, row_grain(s), [&](int64_t lo, int64_t hi) {
      for (int64_t q = lo; q < hi; ++q) row_grad_sums(gyp + q * s, xp + q * s, m[q], s, &gb[q], &gc[q]);
    });
    return;
  }
  at::parallel_for(0, n, sample_grain(c, s), [&](int64_t lo, int64_t hi) {
    std::vector<T> blk(c);
    for (int64_t i = lo; i < hi; ++i) {
      const T *gys = gyp + i * s * c, *xs = xp + i * s * c, *m_i = m + i * c;
      plane_sum(s, c, gb + i * c, blk.data(), [&](int64_t p, int64_t q) { return gys[p * c + q]; });
      plane_sum(s, c, gc + i * c, blk.data(), [&](int64_t p, int64_t q) {
        return gys[p * c + q] * (xs[p * c + q] - m_i[q]);
      });
    }
  });
}

// Backward pass 2: gx = a gy + (2 d_v / S) (x - m) + d_m / S, with a, m, d_v, d_m (N, C).
template <typename T>
void grad_input(const T* gyp, const T* xp, const T* a, const T* m, const T* d_v, const T* d_m, int64_t n,
                int64_t c, int64_t s, Layout layout, T* gxp, bool stream) {
  const T inv_s = static_cast<T>(1.0 / static_cast<double>(s));
  if (layout == Layout::kRows) {
    at::parallel_for(0, n * c, row_grain(s), [&](int64_t lo, int64_t hi) {
      for (int64_t q = lo; q < hi; ++q)
        row_grad_input(gyp + q * s, xp + q * s, s, a[q], T(2) * d_v[q] * inv_s, m[q], d_m[q] * inv_s,
                       gxp + q * s, stream);
      stream_fence(stream);
    });
    return;
  }
  at::parallel_for(0, n, sample_grain(c, s), [&](int64_t lo, int64_t hi) {
    std::vector<T> cv(c), shift(c);
    for (int64_t i = lo; i < hi; ++i) {
      const T *a_i = a + i * c, *m_i = m + i * c;
      for (int64_t q = 0; q < c; ++q) {
        cv[q] = T(2) * d_v[i * c + q] * inv_s;
        shift[q] = d_m[i * c + q] * inv_s;
      }
      for (int64_t p = 0; p < s; ++p) {
        const T* __restrict__ gy = gyp + (i * s + p) * c;
        const T* __restrict__ x = xp + (i * s + p) * c;
        T* __restrict__ out = gxp + (i * s + p) * c;
        _Pragma("omp simd")
        for (int64_t q = 0; q < c; ++q) out[q] = a_i[q] * gy[q] + cv[q] * (x[q] - m_i[q]) + shift[q];
      }
    }
  });
}

}  // namespace mnzoo_cpu

// Fused CPU kernels of ModeNorm2d / ModeNorm1d (Deecke, Murray & Bilen, ICLR 2019, eq. 2-4).
//
// The same math as mnzoo/layers/functional.py (mode_norm_coefficients and its hand-derived
// backward), written as loops so that one layer is a few passes over x instead of ~40 small
// torch ops: on a 2-core CPU the per-op overhead, not the arithmetic, made MN's eval cost 2x BN.
//
// Shapes: x (N, C, *), contiguous or 4-D channels_last, with S = H*W values per (sample, channel)
// (passes.h: the passes over x for both layouts); m, v (N, C) their mean and biased variance;
// gates g (N, K); mode statistics mu, var (K, C) and masses (K,); a, b (N, C) the per-(sample,
// channel) affine map y = a * (x - m) + b.
//
// The small (N, K, C) math runs in x's dtype, 8 fp32 lanes per AVX2 op (double took twice the
// time, and made K=6 cost 10 % more than K=2 on small maps). That is safe because every
// quantity is centred before it is summed: mode means are sums of m - mean_n(m), the map is
// centred on the row mean (b = bias + sum_k g_k scale_k (m - mu_k)), and the backward sums
// gy * (x - m), never gy * x. Nothing of size 1e4 is ever added to its own negative.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "passes.h"

namespace {

using namespace mnzoo_cpu;
constexpr double kMinMass = 1e-12;     // denominator guard, as functional._nonzero

// 1 / N_k, guarded: an empty mode divides a zero sum by kMinMass instead of by 0.
inline double inv_mass(double mass) { return 1.0 / std::max(mass, kMinMass); }

// g[n] = softmax(W m[n] + b_g) for one sample; m has C entries, g gets K, z is K scratch.
template <typename T>
void gate_row(const T* m, const T* gw, const T* gb, int64_t c, int64_t k, double* z, T* g) {
  double zmax = -INFINITY;
  for (int64_t j = 0; j < k; ++j) {
    z[j] = static_cast<double>(dot(gw + j * c, m, c)) + gb[j];
    zmax = std::max(zmax, z[j]);
  }
  double total = 0;
  for (int64_t j = 0; j < k; ++j) total += (z[j] = std::exp(z[j] - zmax));
  for (int64_t j = 0; j < k; ++j) g[j] = static_cast<T>(z[j] / total);
}

// r = (var + eps)^-1/2 and scale = w r, both (K, C).
template <typename T>
void mode_scale(const T* var, const T* w, int64_t c, int64_t k, double eps, T* r, T* scale) {
  const T e = static_cast<T>(eps);
  for (int64_t j = 0; j < k; ++j) {
    T *r_j = r + j * c, *sc_j = scale + j * c;
    const T* var_j = var + j * c;
    _Pragma("omp simd")
    for (int64_t q = 0; q < c; ++q) r_j[q] = T(1) / std::sqrt(var_j[q] + e);
    _Pragma("omp simd")
    for (int64_t q = 0; q < c; ++q) sc_j[q] = w ? r_j[q] * w[q] : r_j[q];
  }
}

// The map of one sample, centred on its row means m: a = sum_k g_k scale_k and
// b = bias + sum_k g_k scale_k (m - mu_k), so that y = a (x - m) + b.
template <typename T>
void coeff_row(const T* g, const T* scale, const T* mu, const T* m, const T* bias, int64_t c,
               int64_t k, T* __restrict__ a, T* __restrict__ b) {
  for (int64_t q = 0; q < c; ++q) {
    a[q] = 0;
    b[q] = bias ? bias[q] : T(0);
  }
  for (int64_t j = 0; j < k; ++j) {
    const T gj = g[j];
    const T *sc = scale + j * c, *mu_j = mu + j * c;
    _Pragma("omp simd")
    for (int64_t q = 0; q < c; ++q) {
      const T gs = gj * sc[q];
      a[q] += gs;
      b[q] += gs * (m[q] - mu_j[q]);
    }
  }
}

// Batch mode statistics (eq. 2): masses N_k = sum_n g_nk, mu_k = sum_n g_nk m_n / N_k and the
// total variance var_k = sum_n g_nk (v_n + (m_n - mu_k)^2) / N_k. mu is summed as
// ref + sum_n g (m_n - ref) / N_k with ref the batch mean of m, so the sum stays small when the
// input's mean is large.
template <typename T>
void mode_statistics(const T* m, const T* v, const T* g, int64_t n, int64_t c, int64_t k, T* mu,
                     T* var, T* mass) {
  std::vector<T> ref(c, T(0));
  std::vector<double> ms(k, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    const T* m_i = m + i * c;
    _Pragma("omp simd")
    for (int64_t q = 0; q < c; ++q) ref[q] += m_i[q];
    for (int64_t j = 0; j < k; ++j) ms[j] += g[i * k + j];
  }
  const T inv_n = T(1) / static_cast<T>(n);
  for (int64_t q = 0; q < c; ++q) ref[q] *= inv_n;
  std::fill(mu, mu + k * c, T(0));
  std::fill(var, var + k * c, T(0));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const T gij = g[i * k + j];
      const T* m_i = m + i * c;
      T* mu_j = mu + j * c;
      _Pragma("omp simd")
      for (int64_t q = 0; q < c; ++q) mu_j[q] += gij * (m_i[q] - ref[q]);
    }
  std::vector<T> inv(k);
  for (int64_t j = 0; j < k; ++j) {
    inv[j] = static_cast<T>(inv_mass(ms[j]));
    mass[j] = static_cast<T>(ms[j]);
    for (int64_t q = 0; q < c; ++q) mu[j * c + q] = ref[q] + mu[j * c + q] * inv[j];
  }
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < k; ++j) {
      const T gij = g[i * k + j];
      const T *mu_j = mu + j * c, *m_i = m + i * c, *v_i = v + i * c;
      T* var_j = var + j * c;
      _Pragma("omp simd")
      for (int64_t q = 0; q < c; ++q) {
        const T d = m_i[q] - mu_j[q];
        var_j[q] += gij * (v_i[q] + d * d);
      }
    }
  for (int64_t j = 0; j < k; ++j)
    for (int64_t q = 0; q < c; ++q) var[j * c + q] *= inv[j];
}

const Tensor* opt(const std::optional<Tensor>& t) { return t.has_value() && t->defined() ? &*t : nullptr; }

// Checks x (N, C, *) and returns S, the values per (sample, channel); layout_of(x) checks its layout.
int64_t check_input(const Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "mnzoo kernel: x must be on the CPU");
  TORCH_CHECK(x.dim() >= 2 && x.size(0) > 0 && x.size(1) > 0, "mnzoo kernel: x must be (N, C, *)");
  return x.numel() / (x.size(0) * x.size(1));
}

// Number of non-finite entries of a small (N, C) tensor (the layer raises on any).
template <typename T>
int64_t count_nonfinite(const T* p, int64_t count) {
  int64_t bad = 0;
  for (int64_t i = 0; i < count; ++i) bad += !std::isfinite(p[i]);
  return bad;
}

// Running statistics (eq. 4), in place: mode k moves by `momentum` towards its batch mean and
// its unbiased batch variance, var * n_eff / (n_eff - 1), n_eff = S (sum_n g)^2 / sum_n g^2.
// A mode whose batch mass is at most min_mass keeps its running statistics.
template <typename T>
void update_running(T* rm, T* rv, const T* mu, const T* var, const T* mass, const T* g, int64_t n,
                    int64_t c, int64_t k, int64_t s, double momentum, double min_mass) {
  for (int64_t j = 0; j < k; ++j) {
    if (!(static_cast<double>(mass[j]) > min_mass)) continue;
    double sq = 0;
    for (int64_t i = 0; i < n; ++i) sq += static_cast<double>(g[i * k + j]) * g[i * k + j];
    const double n_eff = static_cast<double>(mass[j]) * mass[j] * s / std::max(sq, kMinMass);
    const double unbias = n_eff > 1.0 + 1e-6 ? n_eff / std::max(n_eff - 1.0, 1e-6) : 1.0;
    for (int64_t q = 0; q < c; ++q) {
      const int64_t at = j * c + q;
      rm[at] = static_cast<T>(rm[at] + momentum * (mu[at] - rm[at]));
      rv[at] = static_cast<T>(rv[at] + momentum * (var[at] * unbias - rv[at]));
    }
  }
}

// Training forward: batch mode statistics (Alg. 1). Returns y, m, v, a, g, mu, var, mass and
// the number of non-finite variances. When running_mean/var are given, they are updated in place.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, int64_t> train_forward(
    const Tensor& x, const Tensor& gate_w, const Tensor& gate_b,
    const std::optional<Tensor>& weight, const std::optional<Tensor>& bias, double eps,
    const std::optional<Tensor>& running_mean, const std::optional<Tensor>& running_var,
    double momentum, double min_mass) {
  const int64_t s = check_input(x);
  const Layout layout = layout_of(x);
  const int64_t n = x.size(0), c = x.size(1), k = gate_w.size(0);
  auto y = empty_in(x, layout);
  auto m = at::empty({n, c}, x.options()), v = at::empty({n, c}, x.options());
  auto a = at::empty({n, c}, x.options()), b = at::empty({n, c}, x.options());
  auto g = at::empty({n, k}, x.options());
  auto mu = at::empty({k, c}, x.options()), var = at::empty({k, c}, x.options());
  auto mass = at::empty({k}, x.options());
  for (const auto* t : {opt(running_mean), opt(running_var)})
    TORCH_CHECK(!t || (t->is_contiguous() && t->scalar_type() == x.scalar_type() && t->numel() == k * c),
                "mnzoo kernel: running statistics must be contiguous (K, C) of x's dtype");
  int64_t nonfinite = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mnzoo_mode_norm_train_forward", [&] {
    using T = scalar_t;
    const T* xp = x.const_data_ptr<T>();
    T *mp = m.data_ptr<T>(), *vp = v.data_ptr<T>();
    moments(xp, n, c, s, layout, mp, vp);
    nonfinite = count_nonfinite(vp, n * c);
    if (nonfinite) return;  // the layer raises; nothing is updated
    const T *gw = gate_w.const_data_ptr<T>(), *gbp = gate_b.const_data_ptr<T>();
    T* gp = g.data_ptr<T>();
    std::vector<double> z(k);
    for (int64_t i = 0; i < n; ++i) gate_row(mp + i * c, gw, gbp, c, k, z.data(), gp + i * k);
    T *mup = mu.data_ptr<T>(), *varp = var.data_ptr<T>(), *massp = mass.data_ptr<T>();
    mode_statistics(mp, vp, gp, n, c, k, mup, varp, massp);
    if (opt(running_mean) && opt(running_var))
      update_running(running_mean->data_ptr<T>(), running_var->data_ptr<T>(), mup, varp, massp, gp,
                     n, c, k, s, momentum, min_mass);
    std::vector<T> r(k * c), scale(k * c);
    mode_scale<T>(varp, opt(weight) ? weight->const_data_ptr<T>() : nullptr, c, k, eps, r.data(),
                  scale.data());
    const T* bb = opt(bias) ? bias->const_data_ptr<T>() : nullptr;
    T *ap = a.data_ptr<T>(), *bp = b.data_ptr<T>(), *yp = y.data_ptr<T>();
    for (int64_t i = 0; i < n; ++i)
      coeff_row(gp + i * k, scale.data(), mup, mp + i * c, bb, c, k, ap + i * c, bp + i * c);
    apply_map(xp, n, c, s, layout, ap, mp, bp, yp, stream_output<T>(y, s, layout));
  });
  return {y, m, v, a, g, mu, var, mass, nonfinite};
}

// Inference forward with the running statistics (Alg. 2), fused per sample: its pooled means,
// gate and affine map are computed while the sample is in cache. Returns y and the number of
// non-finite pooled means.
std::tuple<Tensor, int64_t> eval_forward(
    const Tensor& x, const Tensor& gate_w, const Tensor& gate_b,
    const std::optional<Tensor>& weight, const std::optional<Tensor>& bias,
    const Tensor& running_mean, const Tensor& running_var, double eps) {
  const int64_t s = check_input(x);
  const Layout layout = layout_of(x);
  const int64_t n = x.size(0), c = x.size(1), k = gate_w.size(0);
  auto y = empty_in(x, layout);
  auto m = at::empty({n, c}, x.options());
  int64_t nonfinite = 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mnzoo_mode_norm_eval_forward", [&] {
    using T = scalar_t;
    auto rm = running_mean.contiguous(), rv = running_var.contiguous();
    std::vector<T> r(k * c), scale(k * c);
    mode_scale<T>(rv.const_data_ptr<T>(), opt(weight) ? weight->const_data_ptr<T>() : nullptr, c,
                  k, eps, r.data(), scale.data());
    const T* bb = opt(bias) ? bias->const_data_ptr<T>() : nullptr;
    const T *xp = x.const_data_ptr<T>(), *rmp = rm.const_data_ptr<T>();
    const T *gw = gate_w.const_data_ptr<T>(), *gbp = gate_b.const_data_ptr<T>();
    T *mp = m.data_ptr<T>(), *yp = y.data_ptr<T>();
    const bool stream = stream_output<T>(y, s, layout);
    at::parallel_for(0, n, sample_grain(c, s), [&](int64_t lo, int64_t hi) {
      std::vector<T> g(k), a(c), b(c), scratch(c);
      std::vector<double> z(k);
      for (int64_t i = lo; i < hi; ++i) {
        const T* xs = xp + i * c * s;
        T* m_i = mp + i * c;
        sample_means(xs, c, s, layout, m_i, scratch.data());
        gate_row(m_i, gw, gbp, c, k, z.data(), g.data());
        coeff_row(g.data(), scale.data(), rmp, m_i, bb, c, k, a.data(), b.data());
        sample_affine(xs, c, s, layout, a.data(), m_i, b.data(), yp + i * c * s, stream);
      }
      stream_fence(stream);
    });
    nonfinite = count_nonfinite(mp, n * c);
  });
  return {y, nonfinite};
}

// Backward of train_forward (the hand-derived chain of functional._mode_norm_coefficients_backward
// in centred form, plus the two big passes). Returns gx, d_gate_w, d_gate_b, d_weight, d_bias
// (the last two are empty tensors when the layer has no affine).
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> train_backward(
    const Tensor& gy_in, const Tensor& x, const Tensor& m, const Tensor& v, const Tensor& a,
    const Tensor& g, const Tensor& mu, const Tensor& var, const Tensor& mass, const Tensor& gate_w,
    const std::optional<Tensor>& weight, bool has_bias, double eps) {
  const int64_t s = check_input(x);
  const Layout layout = layout_of(x);
  auto gy = gy_in.contiguous(layout == Layout::kRows ? at::MemoryFormat::Contiguous : at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(gy.sizes() == x.sizes(), "mnzoo kernel: gy and x differ in shape");
  const int64_t n = x.size(0), c = x.size(1), k = gate_w.size(0);
  auto gx = empty_in(x, layout);
  auto d_gw = at::zeros({k, c}, x.options()), d_gb = at::zeros({k}, x.options());
  auto d_w = opt(weight) ? at::zeros({c}, x.options()) : at::empty({0}, x.options());
  auto d_b = has_bias ? at::zeros({c}, x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mnzoo_mode_norm_train_backward", [&] {
    using T = scalar_t;
    const T *gyp = gy.const_data_ptr<T>(), *xp = x.const_data_ptr<T>();
    const T *mp = m.const_data_ptr<T>(), *vp = v.const_data_ptr<T>(), *ap = a.const_data_ptr<T>();
    const T *gp = g.const_data_ptr<T>(), *mup = mu.const_data_ptr<T>();
    const T *varp = var.const_data_ptr<T>(), *massp = mass.const_data_ptr<T>();
    const T* gw = gate_w.const_data_ptr<T>();
    const T* w = opt(weight) ? weight->const_data_ptr<T>() : nullptr;
    // pass 1: per row, gb = sum_s gy and gc = sum_s gy (x - m)
    std::vector<T> gb(n * c), gc(n * c);
    grad_sums(gyp, xp, mp, n, c, s, layout, gb.data(), gc.data());
    // Small graph. y = sum_k g_k scale_k (x - mu_k) + bias, so with t_nk = sum_s gy (x - mu_k)
    // = gc + (m - mu_k) gb: dL/dscale_k = sum_n g_nk t_nk, dL/dmu_k = -scale_k sum_n g_nk gb
    // and dL/dg_nk = sum_c scale_k t_nk. Every O(N K C) loop runs channels innermost.
    const int64_t kc = k * c;
    std::vector<T> r(kc), scale(kc), d_scale(kc, T(0)), g_gb(kc, T(0));
    mode_scale<T>(varp, w, c, k, eps, r.data(), scale.data());
    std::vector<double> d_g(n * k, 0.0);
    std::vector<T> row(c);  // the (n, k) terms of a reduction over channels
    T* d_bias = has_bias ? d_b.data_ptr<T>() : nullptr;
    for (int64_t i = 0; i < n; ++i) {
      const T *gc_i = gc.data() + i * c, *gb_i = gb.data() + i * c, *m_i = mp + i * c;
      if (d_bias) {
        _Pragma("omp simd")
        for (int64_t q = 0; q < c; ++q) d_bias[q] += gb_i[q];
      }
      for (int64_t j = 0; j < k; ++j) {
        const T gij = gp[i * k + j];
        const T *sc = scale.data() + j * c, *mu_j = mup + j * c;
        T *dsc = d_scale.data() + j * c, *ggb = g_gb.data() + j * c;
        _Pragma("omp simd")
        for (int64_t q = 0; q < c; ++q) {
          const T t = gc_i[q] + (m_i[q] - mu_j[q]) * gb_i[q];
          row[q] = t;
          dsc[q] += gij * t;
          ggb[q] += gij * gb_i[q];
        }
        d_g[i * k + j] = dot(sc, row.data(), c);
      }
    }
    // scale = w r, r = (var + eps)^-1/2; var_k = sum_n g (v + (m - mu_k)^2) / N_k and
    // mu_k = sum_n g m / N_k. d_var and d_mu below are already divided by N_k. var_k depends on
    // mu_k only through -2 sum_n g_nk (m_n - mu_k) / N_k, which is 0 by the definition of mu_k.
    std::vector<T> d_var(kc), d_mu(kc);
    T* d_weight = w ? d_w.data_ptr<T>() : nullptr;
    for (int64_t j = 0; j < k; ++j) {
      const T inv = static_cast<T>(inv_mass(massp[j]));
      for (int64_t q = 0; q < c; ++q) {
        const int64_t at = j * c + q;
        T d_r = d_scale[at];
        if (w) {
          d_weight[q] += d_r * r[at];
          d_r *= w[q];
        }
        d_var[at] = T(-0.5) * d_r * r[at] * r[at] * r[at] * inv;
        d_mu[at] = -g_gb[at] * scale[at] * inv;
      }
    }
    std::vector<T> d_m(n * c, T(0)), d_v(n * c, T(0));
    T *dgw = d_gw.data_ptr<T>(), *dgb = d_gb.data_ptr<T>();
    for (int64_t i = 0; i < n; ++i) {
      const T *m_i = mp + i * c, *v_i = vp + i * c;
      T *dm_i = d_m.data() + i * c, *dv_i = d_v.data() + i * c;
      for (int64_t j = 0; j < k; ++j) {
        const T gij = gp[i * k + j];
        const T *mu_j = mup + j * c, *var_j = varp + j * c;
        const T *dvar_j = d_var.data() + j * c, *dmu_j = d_mu.data() + j * c;
        // row = the (n, k) terms of dL/dg_nk through mu_k and var_k (their mass derivative)
        _Pragma("omp simd")
        for (int64_t q = 0; q < c; ++q) {
          const T dm = m_i[q] - mu_j[q];
          const T dv = dvar_j[q];
          dv_i[q] += gij * dv;
          dm_i[q] += gij * (dmu_j[q] + T(2) * dm * dv);
          row[q] = (v_i[q] + dm * dm - var_j[q]) * dv + dm * dmu_j[q];
        }
        d_g[i * k + j] += row_sum(row.data(), c);
      }
      // softmax backward: d_z = g * (d_g - sum_j g_j d_g_j); then the gate's Linear
      double dot = 0;
      for (int64_t j = 0; j < k; ++j) dot += gp[i * k + j] * d_g[i * k + j];
      for (int64_t j = 0; j < k; ++j) {
        const T dz = static_cast<T>(gp[i * k + j] * (d_g[i * k + j] - dot));
        dgb[j] += dz;
        const T* gw_j = gw + j * c;
        T* dgw_j = dgw + j * c;
        _Pragma("omp simd")
        for (int64_t q = 0; q < c; ++q) {
          dm_i[q] += dz * gw_j[q];
          dgw_j[q] += dz * m_i[q];
        }
      }
    }
    // pass 2: gx = a gy + (2 d_v / S) (x - m) + d_m / S
    grad_input(gyp, xp, ap, mp, d_v.data(), d_m.data(), n, c, s, layout, gx.data_ptr<T>(),
               stream_output<T>(gx, s, layout));
  });
  return {gx, d_gw, d_gb, d_w, d_b};
}

}  // namespace

TORCH_LIBRARY(mnzoo, lib) {
  lib.def("mode_norm_train_forward", &train_forward);
  lib.def("mode_norm_eval_forward", &eval_forward);
  lib.def("mode_norm_train_backward", &train_backward);
}

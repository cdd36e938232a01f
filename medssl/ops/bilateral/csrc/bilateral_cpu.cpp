// medssl::bilateral_filter: the operator schemas (registered once, here) and the C++ CPU
// kernels. Semantics, border rule and gradient formulas: see reference.py.
//
// Layout of the work: one task per image row (b, z, y), parallelised with at::parallel_for.
// For a row, each window tap (dz, dy) copies the neighbour row (with the border rule applied
// along x) into a padded buffer, and the loop over dx and the row's voxels is a contiguous,
// vectorisable loop with one exp per tap. The backward is a pure gather: every row writes only
// its own outputs, in a fixed order, so results are deterministic and bitwise repeatable
// whatever the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/List.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <Python.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

#include "bilateral_host.h"
#include "cpu_exp.h"

namespace medssl {
namespace {

template <typename T>
MEDSSL_INLINE T neg_half_inv_sq(T s) {
  s = s < static_cast<T>(kSigmaEps) ? static_cast<T>(kSigmaEps) : s;
  return static_cast<T>(-0.5) / (s * s);
}

// Inputs of one call, as raw pointers (x, out, grad contiguous (B, C, D, H, W)).
template <typename T>
struct Args {
  Dims d;
  const T* x;
  StridedMap<T> sig[3];  // sigma_z (unused for 2D), sigma_y, sigma_x
  StridedMap<T> sr;
  const int64_t* xmap;  // padded x position -> source column (length W + 2 rx)
};

template <typename T>
MEDSSL_INLINE const T* row_ptr(const Args<T>& a, const T* base, int64_t b, int64_t c,
                               int64_t z, int64_t y) {
  const Dims& d = a.d;
  return base + (((b * d.C + c) * d.D + z) * d.H + y) * d.W;
}

// Per-row coefficient buffers: -1/(2 s^2) along z, y, x and in range.
template <typename T>
MEDSSL_INLINE void load_coeffs(const Args<T>& a, int64_t b, int64_t z, int64_t y, T* az, T* ay,
                               T* ax, T* ar) {
  const Dims& d = a.d;
  for (int64_t i = 0; i < d.W; ++i) {
    az[i] = d.nd == 3 ? neg_half_inv_sq(a.sig[0].at(b, z, y, i)) : T(0);
    ay[i] = neg_half_inv_sq(a.sig[1].at(b, z, y, i));
    ax[i] = neg_half_inv_sq(a.sig[2].at(b, z, y, i));
    ar[i] = neg_half_inv_sq(a.sr.at(b, z, y, i));
  }
}

// Copy row (zz, yy) of every channel into a padded buffer (C, W + 2 rx) with the border rule.
template <typename T>
MEDSSL_INLINE void load_padded_row(const Args<T>& a, int64_t b, int64_t zz, int64_t yy, T* dst) {
  const Dims& d = a.d;
  const int64_t Wp = d.W + 2 * d.rx;
  for (int64_t c = 0; c < d.C; ++c) {
    const T* src = row_ptr(a, a.x, b, c, zz, yy);
    T* out = dst + c * Wp;
    for (int64_t p = 0; p < Wp; ++p) out[p] = src[a.xmap[p]];
  }
}

// ---- forward --------------------------------------------------------------------------------
template <typename T, int kC>
MEDSSL_INLINE void forward_row(const Args<T>& a, int64_t b, int64_t z, int64_t y, T* scratch,
                               T* out, T* norm) {
  const Dims& d = a.d;
  const int64_t C = kC > 0 ? kC : d.C, W = d.W, Wp = W + 2 * d.rx;
  T* xc = scratch;
  T* az = xc + C * W;
  T* ay = az + W;
  T* ax = ay + W;
  T* ar = ax + W;
  T* base = ar + W;
  T* den = base + W;
  T* num = den + W;
  T* nrow = num + C * W;
  for (int64_t c = 0; c < C; ++c) std::memcpy(xc + c * W, row_ptr(a, a.x, b, c, z, y), W * sizeof(T));
  load_coeffs(a, b, z, y, az, ay, ax, ar);
  std::fill(den, den + W, T(0));
  std::fill(num, num + C * W, T(0));
  for (int64_t dz = -d.rz; dz <= d.rz; ++dz) {
    const int64_t zz = reflect_clamp(z + dz, d.D);
    for (int64_t dy = -d.ry; dy <= d.ry; ++dy) {
      const int64_t yy = reflect_clamp(y + dy, d.H);
      load_padded_row(a, b, zz, yy, nrow);
      const T dz2 = T(dz * dz), dy2 = T(dy * dy);
      for (int64_t i = 0; i < W; ++i) base[i] = dz2 * az[i] + dy2 * ay[i];
      for (int64_t dx = -d.rx; dx <= d.rx; ++dx) {
        const T dx2 = T(dx * dx);
        const T* nb = nrow + d.rx + dx;
        if constexpr (kC == 1) {
#pragma omp simd
          for (int64_t i = 0; i < W; ++i) {
            const T diff = xc[i] - nb[i];
            const T w = exp_approx(base[i] + dx2 * ax[i] + diff * diff * ar[i]);
            den[i] += w;
            num[i] += w * nb[i];
          }
        } else {
#pragma omp simd
          for (int64_t i = 0; i < W; ++i) {
            T d2 = 0;
            for (int64_t c = 0; c < C; ++c) {
              const T diff = xc[c * W + i] - nb[c * Wp + i];
              d2 += diff * diff;
            }
            const T w = exp_approx(base[i] + dx2 * ax[i] + d2 * ar[i]);
            den[i] += w;
            for (int64_t c = 0; c < C; ++c) num[c * W + i] += w * nb[c * Wp + i];
          }
        }
      }
    }
  }
  for (int64_t c = 0; c < C; ++c) {
    T* o = const_cast<T*>(row_ptr(a, out, b, c, z, y));
    for (int64_t i = 0; i < W; ++i) o[i] = num[c * W + i] / den[i];
  }
  T* nrm = norm + ((b * d.D + z) * d.H + y) * W;
  std::memcpy(nrm, den, W * sizeof(T));
}

MEDSSL_CLONES void forward_row_f32_c1(const Args<float>& a, int64_t b, int64_t z, int64_t y,
                                      float* s, float* out, float* norm) {
  forward_row<float, 1>(a, b, z, y, s, out, norm);
}
MEDSSL_CLONES void forward_row_f32_c2(const Args<float>& a, int64_t b, int64_t z, int64_t y,
                                      float* s, float* out, float* norm) {
  forward_row<float, 2>(a, b, z, y, s, out, norm);
}
MEDSSL_CLONES void forward_row_f32(const Args<float>& a, int64_t b, int64_t z, int64_t y,
                                   float* s, float* out, float* norm) {
  forward_row<float, 0>(a, b, z, y, s, out, norm);
}
void forward_row_any(const Args<float>& a, int64_t b, int64_t z, int64_t y, float* s, float* o,
                     float* n) {
  if (a.d.C == 1)
    forward_row_f32_c1(a, b, z, y, s, o, n);
  else if (a.d.C == 2)  // an image and its guide (medssl's joint bilateral filter)
    forward_row_f32_c2(a, b, z, y, s, o, n);
  else
    forward_row_f32(a, b, z, y, s, o, n);
}
void forward_row_any(const Args<double>& a, int64_t b, int64_t z, int64_t y, double* s,
                     double* o, double* n) {
  forward_row<double, 0>(a, b, z, y, s, o, n);
}

// ---- backward -------------------------------------------------------------------------------
// Quantities of one centre row needed by both parts of the backward: centre values,
// g / W ("ghat"), sum_c ghat * y ("ahat") and the coefficients.
template <typename T>
struct CentreRow {
  T *xc, *gh, *ah, *az, *ay, *ax, *ar, *base;
};

template <typename T>
MEDSSL_INLINE void load_centre(const Args<T>& a, const T* g, const T* y, const T* norm, int64_t b,
                               int64_t z, int64_t yrow, const CentreRow<T>& r) {
  const Dims& d = a.d;
  const int64_t W = d.W;
  const T* nrm = norm + ((b * d.D + z) * d.H + yrow) * W;
  std::fill(r.ah, r.ah + W, T(0));
  for (int64_t c = 0; c < d.C; ++c) {
    const T* xr = row_ptr(a, a.x, b, c, z, yrow);
    const T* gr = row_ptr(a, g, b, c, z, yrow);
    const T* yr = row_ptr(a, y, b, c, z, yrow);
    for (int64_t i = 0; i < W; ++i) {
      r.xc[c * W + i] = xr[i];
      const T gh = gr[i] / nrm[i];
      r.gh[c * W + i] = gh;
      r.ah[i] += gh * yr[i];
    }
  }
  load_coeffs(a, b, z, yrow, r.az, r.ay, r.ax, r.ar);
}

template <typename T>
struct GradOut {
  T* gx;      // (B, C, D, H, W) or nullptr
  T* gs[3];   // per-voxel sigma gradients (z, y, x) or nullptr
  T* gr;      // range sigma gradient or nullptr
};

template <typename T, int kC>
MEDSSL_INLINE void backward_row(const Args<T>& a, const T* g, const T* yout, const T* norm,
                                int64_t b, int64_t z, int64_t y, T* scratch,
                                const GradOut<T>& go) {
  const Dims& d = a.d;
  const int64_t C = kC > 0 ? kC : d.C, W = d.W, Wp = W + 2 * d.rx;
  T* p = scratch;
  auto take = [&p](int64_t n) {
    T* q = p;
    p += n;
    return q;
  };
  CentreRow<T> cr{take(C * W), take(C * W), take(W), take(W), take(W), take(W), take(W), take(W)};
  T* acc_s[3] = {take(W), take(W), take(W)};
  T* acc_r = take(W);
  T* own = take(C * W);
  T* nrow = take(C * Wp);
  const int64_t voxel0 = ((b * d.D + z) * d.H + y) * W;

  // Part A: sigma gradients and the centre's own range term, over the centre's taps.
  load_centre(a, g, yout, norm, b, z, y, cr);
  for (int k = 0; k < 3; ++k) std::fill(acc_s[k], acc_s[k] + W, T(0));
  std::fill(acc_r, acc_r + W, T(0));
  std::fill(own, own + C * W, T(0));
  for (int64_t dz = -d.rz; dz <= d.rz; ++dz) {
    const int64_t zz = reflect_clamp(z + dz, d.D);
    for (int64_t dy = -d.ry; dy <= d.ry; ++dy) {
      const int64_t yy = reflect_clamp(y + dy, d.H);
      load_padded_row(a, b, zz, yy, nrow);
      const T dz2 = T(dz * dz), dy2 = T(dy * dy);
      for (int64_t i = 0; i < W; ++i) cr.base[i] = dz2 * cr.az[i] + dy2 * cr.ay[i];
      for (int64_t dx = -d.rx; dx <= d.rx; ++dx) {
        const T dx2 = T(dx * dx);
        const T* nb = nrow + d.rx + dx;
        if constexpr (kC == 1) {
#pragma omp simd
          for (int64_t i = 0; i < W; ++i) {
            const T diff = cr.xc[i] - nb[i];
            const T d2 = diff * diff;
            const T w = exp_approx(cr.base[i] + dx2 * cr.ax[i] + d2 * cr.ar[i]);
            const T t = (cr.gh[i] * nb[i] - cr.ah[i]) * w;
            acc_s[0][i] += t * dz2;
            acc_s[1][i] += t * dy2;
            acc_s[2][i] += t * dx2;
            acc_r[i] += t * d2;
            own[i] += t * diff;
          }
        } else {
#pragma omp simd
          for (int64_t i = 0; i < W; ++i) {
            T d2 = 0, gx = 0;
            for (int64_t c = 0; c < C; ++c) {
              const T diff = cr.xc[c * W + i] - nb[c * Wp + i];
              d2 += diff * diff;
              gx += cr.gh[c * W + i] * nb[c * Wp + i];
            }
            const T w = exp_approx(cr.base[i] + dx2 * cr.ax[i] + d2 * cr.ar[i]);
            const T t = (gx - cr.ah[i]) * w;
            acc_s[0][i] += t * dz2;
            acc_s[1][i] += t * dy2;
            acc_s[2][i] += t * dx2;
            acc_r[i] += t * d2;
            for (int64_t c = 0; c < C; ++c) own[c * W + i] += t * (cr.xc[c * W + i] - nb[c * Wp + i]);
          }
        }
      }
    }
  }
  const StridedMap<T>* maps[3] = {&a.sig[0], &a.sig[1], &a.sig[2]};
  for (int k = 0; k < 3; ++k) {
    if (go.gs[k] == nullptr) continue;
    for (int64_t i = 0; i < W; ++i) {
      const T s = maps[k]->at(b, z, y, i);
      go.gs[k][voxel0 + i] = s >= T(kSigmaEps) ? acc_s[k][i] / (s * s * s) : T(0);
    }
  }
  if (go.gr != nullptr) {
    for (int64_t i = 0; i < W; ++i) {
      const T s = a.sr.at(b, z, y, i);
      go.gr[voxel0 + i] = s >= T(kSigmaEps) ? acc_r[i] / (s * s * s) : T(0);
    }
  }
  if (go.gx == nullptr) return;

  // Part B: what this row's voxels receive as neighbours j of other centres i: the direct term
  // ghat_i w_ij and the range term 2 a_r(i) G_ij w_ij (x_j - x_i), gathered over every padded
  // position that maps onto this row (the border rule's preimages) and every tap.
  T* xv = nrow;  // this row, padded along x
  load_padded_row(a, b, z, y, xv);
  T* acc = take(C * Wp);
  std::fill(acc, acc + C * Wp, T(0));
  std::vector<int64_t> qzs, qys;  // preimages of this row along z and y
  for_each_preimage(z, d.D, d.rz, [&](int64_t q) { qzs.push_back(q); });
  for_each_preimage(y, d.H, d.ry, [&](int64_t q) { qys.push_back(q); });
  for (const int64_t qz : qzs) {
    for (const int64_t qy : qys) {
      for (int64_t dz = -d.rz; dz <= d.rz; ++dz) {
        const int64_t cz = qz - dz;
        if (cz < 0 || cz >= d.D) continue;
        for (int64_t dy = -d.ry; dy <= d.ry; ++dy) {
          const int64_t cy = qy - dy;
          if (cy < 0 || cy >= d.H) continue;
          load_centre(a, g, yout, norm, b, cz, cy, cr);
          const T dz2 = T(dz * dz), dy2 = T(dy * dy);
          for (int64_t i = 0; i < W; ++i) cr.base[i] = dz2 * cr.az[i] + dy2 * cr.ay[i];
          for (int64_t dx = -d.rx; dx <= d.rx; ++dx) {
            const T dx2 = T(dx * dx);
            const T* nb = xv + d.rx + dx;  // x_j for the centre at column i
            T* ac = acc + d.rx + dx;
            if constexpr (kC == 1) {
#pragma omp simd
              for (int64_t i = 0; i < W; ++i) {
                const T diff = cr.xc[i] - nb[i];
                const T w = exp_approx(cr.base[i] + dx2 * cr.ax[i] + diff * diff * cr.ar[i]);
                const T t = (cr.gh[i] * nb[i] - cr.ah[i]) * w;
                ac[i] += cr.gh[i] * w - T(2) * cr.ar[i] * t * diff;
              }
            } else {
#pragma omp simd
              for (int64_t i = 0; i < W; ++i) {
                T d2 = 0, gx = 0;
                for (int64_t c = 0; c < C; ++c) {
                  const T diff = cr.xc[c * W + i] - nb[c * Wp + i];
                  d2 += diff * diff;
                  gx += cr.gh[c * W + i] * nb[c * Wp + i];
                }
                const T w = exp_approx(cr.base[i] + dx2 * cr.ax[i] + d2 * cr.ar[i]);
                const T t = (gx - cr.ah[i]) * w;
                for (int64_t c = 0; c < C; ++c) {
                  const T diff = cr.xc[c * W + i] - nb[c * Wp + i];
                  ac[c * Wp + i] += cr.gh[c * W + i] * w - T(2) * cr.ar[i] * t * diff;
                }
              }
            }
          }
        }
      }
    }
  }
  // Own range term of part A, then fold the padded accumulator onto the row's columns.
  load_centre(a, g, yout, norm, b, z, y, cr);  // restores this row's coefficients
  for (int64_t c = 0; c < C; ++c) {
    T* gx = go.gx + (((b * d.C + c) * d.D + z) * d.H + y) * W;
    for (int64_t i = 0; i < W; ++i) gx[i] = T(2) * cr.ar[i] * own[c * W + i];
    for (int64_t q = 0; q < Wp; ++q) gx[a.xmap[q]] += acc[c * Wp + q];
  }
}

MEDSSL_CLONES void backward_row_f32_c1(const Args<float>& a, const float* g, const float* y,
                                       const float* n, int64_t b, int64_t z, int64_t yr,
                                       float* s, const GradOut<float>& go) {
  backward_row<float, 1>(a, g, y, n, b, z, yr, s, go);
}
MEDSSL_CLONES void backward_row_f32_c2(const Args<float>& a, const float* g, const float* y,
                                       const float* n, int64_t b, int64_t z, int64_t yr,
                                       float* s, const GradOut<float>& go) {
  backward_row<float, 2>(a, g, y, n, b, z, yr, s, go);
}
MEDSSL_CLONES void backward_row_f32(const Args<float>& a, const float* g, const float* y,
                                    const float* n, int64_t b, int64_t z, int64_t yr,
                                    float* s, const GradOut<float>& go) {
  backward_row<float, 0>(a, g, y, n, b, z, yr, s, go);
}
void backward_row_any(const Args<float>& a, const float* g, const float* y, const float* n,
                      int64_t b, int64_t z, int64_t yr, float* s, const GradOut<float>& go) {
  if (a.d.C == 1)
    backward_row_f32_c1(a, g, y, n, b, z, yr, s, go);
  else if (a.d.C == 2)
    backward_row_f32_c2(a, g, y, n, b, z, yr, s, go);
  else
    backward_row_f32(a, g, y, n, b, z, yr, s, go);
}
void backward_row_any(const Args<double>& a, const double* g, const double* y, const double* n,
                      int64_t b, int64_t z, int64_t yr, double* s, const GradOut<double>& go) {
  backward_row<double, 0>(a, g, y, n, b, z, yr, s, go);
}

// ---- op entry points ------------------------------------------------------------------------
template <typename T>
Args<T> make_args(const Dims& d, const at::Tensor& x, at::TensorList sig, const at::Tensor& sr,
                  const std::vector<int64_t>& xmap) {
  Args<T> a;
  a.d = d;
  a.x = x.data_ptr<T>();
  for (int k = 0; k < 3; ++k) {
    const int idx = d.nd == 3 ? k : k - 1;
    a.sig[k] = idx >= 0 ? strided_map<T>(sig[idx], d.nd) : StridedMap<T>{nullptr, 0, 0, 0, 0};
  }
  a.sr = strided_map<T>(sr, d.nd);
  a.xmap = xmap.data();
  return a;
}

std::vector<int64_t> make_xmap(const Dims& d) {
  std::vector<int64_t> m(d.W + 2 * d.rx);
  for (int64_t p = 0; p < static_cast<int64_t>(m.size()); ++p) m[p] = reflect_clamp(p - d.rx, d.W);
  return m;
}

at::Tensor map_shape_empty(const at::Tensor& x, at::ScalarType dtype) {
  auto sizes = x.sizes().vec();
  sizes[1] = 1;
  return at::empty(sizes, x.options().dtype(dtype));
}

std::tuple<at::Tensor, at::Tensor> bilateral_forward_cpu(const at::Tensor& x_in,
                                                         at::TensorList sigma_spatial,
                                                         const at::Tensor& sigma_range,
                                                         at::IntArrayRef radius) {
  TORCH_CHECK(x_in.device().is_cpu(), "bilateral_filter (CPU kernel): x must be on the CPU");
  TORCH_CHECK(x_in.scalar_type() == at::kFloat || x_in.scalar_type() == at::kDouble,
              "bilateral_filter (CPU kernel): x must be float32 or float64, got ",
              x_in.scalar_type());
  const Dims d = make_dims(x_in, sigma_spatial, sigma_range, radius);
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  at::Tensor norm = map_shape_empty(x, x.scalar_type());
  if (x.numel() == 0) return {out, norm};
  const auto xmap = make_xmap(d);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bilateral_forward_cpu", [&] {
    const Args<scalar_t> a = make_args<scalar_t>(d, x, sigma_spatial, sigma_range, xmap);
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* n = norm.data_ptr<scalar_t>();
    const int64_t rows = d.B * d.D * d.H;
    const int64_t scratch = (2 * d.C + 6) * d.W + d.C * (d.W + 2 * d.rx);
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(scratch);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / (d.D * d.H), z = (r / d.H) % d.D, y = r % d.H;
        forward_row_any(a, b, z, y, buf.data(), o, n);
      }
    });
  });
  return {out, norm};
}

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> bilateral_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x_in, const at::Tensor& out_in,
    const at::Tensor& norm_in, at::TensorList sigma_spatial, const at::Tensor& sigma_range,
    at::IntArrayRef radius, const c10::List<bool>& mask_list) {
  TORCH_CHECK(x_in.device().is_cpu(), "bilateral_filter_backward (CPU kernel): x must be on the CPU");
  const Dims d = make_dims(x_in, sigma_spatial, sigma_range, radius);
  const std::vector<bool> output_mask(mask_list.begin(), mask_list.end());
  TORCH_CHECK(static_cast<int>(output_mask.size()) == d.nd + 2,
              "bilateral_filter_backward: output_mask must have ", d.nd + 2, " entries");
  const at::Tensor x = x_in.contiguous(), g = grad_out.contiguous(), y = out_in.contiguous(),
                   norm = norm_in.contiguous();
  TORCH_CHECK(g.sizes() == x.sizes() && y.sizes() == x.sizes(),
              "bilateral_filter_backward: grad_out and out must have x's shape");
  const auto empty = at::empty({0}, x.options());
  at::Tensor gx = output_mask[0] ? at::empty_like(x) : empty;
  std::vector<at::Tensor> gs;
  for (int k = 0; k < d.nd; ++k)
    gs.push_back(output_mask[1 + k] ? map_shape_empty(x, x.scalar_type()) : empty);
  at::Tensor gr = output_mask[1 + d.nd] ? map_shape_empty(x, x.scalar_type()) : empty;
  if (x.numel() == 0) return {gx, gs, gr};
  const auto xmap = make_xmap(d);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bilateral_backward_cpu", [&] {
    const Args<scalar_t> a = make_args<scalar_t>(d, x, sigma_spatial, sigma_range, xmap);
    GradOut<scalar_t> go;
    go.gx = output_mask[0] ? gx.data_ptr<scalar_t>() : nullptr;
    for (int k = 0; k < 3; ++k) {
      const int idx = d.nd == 3 ? k : k - 1;
      go.gs[k] = (idx >= 0 && output_mask[1 + idx]) ? gs[idx].data_ptr<scalar_t>() : nullptr;
    }
    go.gr = output_mask[1 + d.nd] ? gr.data_ptr<scalar_t>() : nullptr;
    const scalar_t* gp = g.data_ptr<scalar_t>();
    const scalar_t* yp = y.data_ptr<scalar_t>();
    const scalar_t* np = norm.data_ptr<scalar_t>();
    const int64_t rows = d.B * d.D * d.H;
    const int64_t Wp = d.W + 2 * d.rx;
    const int64_t scratch = (3 * d.C + 10) * d.W + 2 * d.C * Wp;
    at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf(scratch);
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / (d.D * d.H), z = (r / d.H) % d.D, yr = r % d.H;
        backward_row_any(a, gp, yp, np, b, z, yr, buf.data(), go);
      }
    });
  });
  return {gx, gs, gr};
}

}  // namespace

TORCH_LIBRARY(medssl, m) {
  m.def(
      "bilateral_filter(Tensor x, Tensor[] sigma_spatial, Tensor sigma_range, int[] radius) "
      "-> (Tensor, Tensor)");
  m.def(
      "bilateral_filter_backward(Tensor grad_out, Tensor x, Tensor out, Tensor norm, "
      "Tensor[] sigma_spatial, Tensor sigma_range, int[] radius, bool[] output_mask) "
      "-> (Tensor, Tensor[], Tensor)");
}

TORCH_LIBRARY_IMPL(medssl, CPU, m) {
  m.impl("bilateral_filter", &bilateral_forward_cpu);
  m.impl("bilateral_filter_backward", &bilateral_backward_cpu);
}

}  // namespace medssl

// Importing the module (medssl.ops.bilateral._C) runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr,
                                   nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}

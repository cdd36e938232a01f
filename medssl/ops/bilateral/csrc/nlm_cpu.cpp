// medssl::nlm_forward / medssl::nlm_backward: the C++ CPU kernels of non-local means with
// per-pixel parameters. Semantics, border rule and gradient formulas: the torch implementation
// in medssl/denoise/filter2noise/nlm.py, which is the fallback and the tests' oracle.
//
// Layout of the work: one task per band of kTile rows of one image. For each window offset, a
// band computes the squared differences of its rows (plus a halo of the patch blur's half
// width), blurs them in a buffer that stays in cache, turns them into weights and accumulates:
// the image is read once per offset instead of the ~20 passes of the torch version. The
// forward can keep the patch distances (offsets x pixels) for the backward, which otherwise
// recomputes them with a halo of two half widths. The backward writes its gradient to the
// padded image into a slab per band; the slabs are then summed in band order, so results are
// deterministic and do not depend on the thread count.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "cpu_exp.h"

namespace medssl {
namespace {

constexpr int64_t kTile = 32;  // rows per task (fixed: the slab sums must not depend on threads)

// exp(-z), exactly 0 for z > 70 (as the torch version and the bilateral kernel)
MEDSSL_INLINE float weight_of(float z) { return exp_approx(-z); }
MEDSSL_INLINE double weight_of(double z) {
  return z > -static_cast<double>(kExpCut) ? 0.0 : std::exp(-z);
}

template <typename T>
struct Nlm {
  int64_t B, H, W, r, Hp, Wp, k;  // k: the patch blur's half width (taps: 2k + 1)
  const T* padded;                // (B, H + 2r, W + 2r)
  const T* inv_h;                 // (B, H, W) each
  const T* inv_y;
  const T* inv_x;
  std::vector<T> taps;
  T* dist = nullptr;  // (B, offsets, H, W) patch distances kept by the forward for the backward

  int64_t tiles() const { return (H + kTile - 1) / kTile; }
  int64_t offsets() const { return (2 * r + 1) * (2 * r + 1) - 1; }
  T* dist_row(int64_t b, int64_t o, int64_t i) const {
    return dist + ((b * offsets() + o) * H + i) * W;
  }
};

// The patch blur along one axis: out[j] = sum_t taps[t] * src[t * stride + j], t = 0 .. 2k.
// Horizontal (stride 1): src a W + 2k buffer holding the row at src + k, zeros at both ends.
// Vertical (stride W): src the first of 2k + 1 consecutive rows of W.
template <typename T>
MEDSSL_INLINE void blur_taps(const Nlm<T>& a, const T* __restrict__ src, int64_t stride,
                             T* __restrict__ out) {
  const int64_t W = a.W;
  const T* taps = a.taps.data();
  const T t0 = taps[0];
  for (int64_t j = 0; j < W; ++j) out[j] = t0 * src[j];
  for (int64_t t = 1; t <= 2 * a.k; ++t) {
    const T tt = taps[t];
    const T* __restrict__ s = src + t * stride;
    for (int64_t j = 0; j < W; ++j) out[j] += tt * s[j];
  }
}

// Horizontally blurred squared differences x(p) - x(p + d) of image rows [first, first + n)
// into hb (n rows of W; rows outside the image are 0). e: a W + 2k buffer, zero at both ends.
template <typename T>
MEDSSL_INLINE void blurred_sq_diff_rows(const Nlm<T>& a, const T* P, int64_t first, int64_t n,
                                        int64_t dy, int64_t dx, T* e, T* hb) {
  const int64_t W = a.W, k = a.k, Wp = a.Wp, r = a.r;
  for (int64_t hi = 0; hi < n; ++hi) {
    const int64_t i = first + hi;
    T* __restrict__ h = hb + hi * W;
    if (i < 0 || i >= a.H) {
      std::fill(h, h + W, T(0));
      continue;
    }
    const T* __restrict__ xc = P + (i + r) * Wp + r;
    const T* __restrict__ xs = P + (i + r + dy) * Wp + r + dx;
    T* __restrict__ em = e + k;
    for (int64_t j = 0; j < W; ++j) {
      const T v = xc[j] - xs[j];
      em[j] = v * v;
    }
    blur_taps(a, e, 1, h);
  }
}

template <typename T>
MEDSSL_INLINE void forward_tile_impl(const Nlm<T>& a, int64_t task, T* out, T* den,
                                     std::vector<T>& buf) {
  const int64_t W = a.W, H = a.H, k = a.k, r = a.r, Wp = a.Wp;
  const int64_t b = task / a.tiles(), y0 = (task % a.tiles()) * kTile;
  const int64_t y1 = std::min(H, y0 + kTile), n = y1 - y0;
  buf.assign((W + 2 * k) + (n + 2 * k) * W + W, T(0));
  T* e = buf.data();
  T* hb = e + W + 2 * k;
  T* row = hb + (n + 2 * k) * W;
  const T* P = a.padded + b * a.Hp * Wp;
  const int64_t off = b * H * W;
  T* o = out + off;
  T* dn = den + off;
  for (int64_t i = y0; i < y1; ++i) {
    std::memcpy(o + i * W, P + (i + r) * Wp + r, W * sizeof(T));
    std::fill(dn + i * W, dn + (i + 1) * W, T(1));
  }
  int64_t od = 0;  // the offset's index
  for (int64_t dy = -r; dy <= r; ++dy) {
    for (int64_t dx = -r; dx <= r; ++dx) {
      if (dy == 0 && dx == 0) continue;
      blurred_sq_diff_rows(a, P, y0 - k, n + 2 * k, dy, dx, e, hb);
      const T wy = static_cast<T>(dy * dy), wx = static_cast<T>(dx * dx);
      for (int64_t i = y0; i < y1; ++i) {
        T* dist = a.dist ? a.dist_row(b, od, i) : row;
        blur_taps(a, hb + (i - y0) * W, a.W, dist);
        const T* __restrict__ xs = P + (i + r + dy) * Wp + r + dx;
        const T* __restrict__ ih = a.inv_h + off + i * W;
        const T* __restrict__ iy = a.inv_y + off + i * W;
        const T* __restrict__ ix = a.inv_x + off + i * W;
        T* __restrict__ orow = o + i * W;
        T* __restrict__ drow = dn + i * W;
        for (int64_t j = 0; j < W; ++j) {
          const T w = weight_of(dist[j] * ih[j] + wy * iy[j] + wx * ix[j]);
          orow[j] += w * xs[j];
          drow[j] += w;
        }
      }
      ++od;
    }
  }
  for (int64_t i = y0; i < y1; ++i)
    for (int64_t j = 0; j < W; ++j) o[i * W + j] /= dn[i * W + j];
}

struct BackwardOut {
  void* slabs;  // (B * tiles, kTile + 2r, Wp): each task's share of the padded image's gradient
  void* gh;
  void* gy;
  void* gx;
};

template <typename T>
MEDSSL_INLINE void backward_tile_impl(const Nlm<T>& a, int64_t task, const T* grad, const T* out,
                                      const T* den, const BackwardOut& go, std::vector<T>& buf) {
  const int64_t W = a.W, H = a.H, k = a.k, r = a.r, Wp = a.Wp;
  const int64_t b = task / a.tiles(), y0 = (task % a.tiles()) * kTile;
  const int64_t y1 = std::min(H, y0 + kTile), n = y1 - y0, nh = n + 2 * k;
  buf.assign((W + 2 * k) + (nh + 2 * k) * W + 3 * nh * W + W, T(0));
  T* e = buf.data();
  T* hb = e + W + 2 * k;     // blurred squared differences, rows y0 - 2k ..
  T* gd = hb + (nh + 2 * k) * W;  // grad / den, rows y0 - k ..
  T* L = gd + nh * W;        // dL/dlogw * inv_h, rows y0 - k ..
  T* hl = L + nh * W;        // L blurred horizontally
  T* row = hl + nh * W;      // one row: the distance, then the blurred L
  const T* P = a.padded + b * a.Hp * Wp;
  const int64_t off = b * H * W;
  T* slab = static_cast<T*>(go.slabs) + task * (kTile + 2 * r) * Wp;
  T* gh = static_cast<T*>(go.gh) + off;
  T* gy = static_cast<T*>(go.gy) + off;
  T* gxx = static_cast<T*>(go.gx) + off;
  for (int64_t li = 0; li < nh; ++li) {
    const int64_t i = y0 - k + li;
    if (i < 0 || i >= H) continue;  // stays 0
    for (int64_t j = 0; j < W; ++j) gd[li * W + j] = grad[off + i * W + j] / den[off + i * W + j];
  }
  for (int64_t i = y0; i < y1; ++i) {  // the centre tap: weight 1, no parameter gradient
    T* s = slab + (i - y0 + r) * Wp + r;
    const T* g = gd + (i - y0 + k) * W;
    for (int64_t j = 0; j < W; ++j) s[j] += g[j];
    std::fill(gh + i * W, gh + (i + 1) * W, T(0));
    std::fill(gy + i * W, gy + (i + 1) * W, T(0));
    std::fill(gxx + i * W, gxx + (i + 1) * W, T(0));
  }
  int64_t od = 0;  // the offset's index
  for (int64_t dy = -r; dy <= r; ++dy) {
    for (int64_t dx = -r; dx <= r; ++dx) {
      if (dy == 0 && dx == 0) continue;
      if (!a.dist) blurred_sq_diff_rows(a, P, y0 - 2 * k, nh + 2 * k, dy, dx, e, hb);
      const T wy = static_cast<T>(dy * dy), wx = static_cast<T>(dx * dx);
      for (int64_t li = 0; li < nh; ++li) {
        const int64_t i = y0 - k + li;
        T* __restrict__ Lrow = L + li * W;
        if (i < 0 || i >= H) {
          std::fill(Lrow, Lrow + W, T(0));
          continue;
        }
        const T* __restrict__ dist = row;
        if (a.dist)
          dist = a.dist_row(b, od, i);
        else
          blur_taps(a, hb + li * W, a.W, row);
        const T* __restrict__ xs = P + (i + r + dy) * Wp + r + dx;
        const T* __restrict__ ih = a.inv_h + off + i * W;
        const T* __restrict__ iy = a.inv_y + off + i * W;
        const T* __restrict__ ix = a.inv_x + off + i * W;
        const T* __restrict__ orow = out + off + i * W;
        const T* __restrict__ g = gd + li * W;
        if (i >= y0 && i < y1) {
          T* __restrict__ s = slab + (i - y0 + r + dy) * Wp + r + dx;
          T* __restrict__ ghr = gh + i * W;
          T* __restrict__ gyr = gy + i * W;
          T* __restrict__ gxr = gxx + i * W;
          for (int64_t j = 0; j < W; ++j) {
            const T w = weight_of(dist[j] * ih[j] + wy * iy[j] + wx * ix[j]);
            const T gw = g[j] * w;
            const T glw = gw * (xs[j] - orow[j]);
            s[j] += gw;  // through the averaged value
            ghr[j] -= glw * dist[j];
            gyr[j] -= glw * wy;
            gxr[j] -= glw * wx;
            Lrow[j] = glw * ih[j];
          }
        } else {
          for (int64_t j = 0; j < W; ++j) {
            const T w = weight_of(dist[j] * ih[j] + wy * iy[j] + wx * ix[j]);
            Lrow[j] = g[j] * w * (xs[j] - orow[j]) * ih[j];
          }
        }
      }
      // through the patch distance: dL/d(diff) = -2 diff * blur(dL/dlogw * inv_h)
      for (int64_t li = 0; li < nh; ++li) {
        std::memcpy(e + k, L + li * W, W * sizeof(T));
        blur_taps(a, e, 1, hl + li * W);
      }
      for (int64_t i = y0; i < y1; ++i) {
        blur_taps(a, hl + (i - y0) * W, a.W, row);
        const T* __restrict__ xc = P + (i + r) * Wp + r;
        const T* __restrict__ xs = P + (i + r + dy) * Wp + r + dx;
        T* __restrict__ gdiff = row;
        for (int64_t j = 0; j < W; ++j) gdiff[j] *= T(-2) * (xc[j] - xs[j]);
        T* __restrict__ sc = slab + (i - y0 + r) * Wp + r;
        for (int64_t j = 0; j < W; ++j) sc[j] += gdiff[j];
        T* __restrict__ ss = slab + (i - y0 + r + dy) * Wp + r + dx;
        for (int64_t j = 0; j < W; ++j) ss[j] -= gdiff[j];
      }
      ++od;
    }
  }
}

// The float versions are compiled twice (AVX2+FMA and baseline), the double ones once.
MEDSSL_CLONES void forward_tile(const Nlm<float>& a, int64_t task, float* out, float* den,
                                std::vector<float>& buf) {
  forward_tile_impl(a, task, out, den, buf);
}
void forward_tile(const Nlm<double>& a, int64_t task, double* out, double* den,
                  std::vector<double>& buf) {
  forward_tile_impl(a, task, out, den, buf);
}
MEDSSL_CLONES void backward_tile(const Nlm<float>& a, int64_t task, const float* grad,
                                 const float* out, const float* den, const BackwardOut& go,
                                 std::vector<float>& buf) {
  backward_tile_impl(a, task, grad, out, den, go, buf);
}
void backward_tile(const Nlm<double>& a, int64_t task, const double* grad, const double* out,
                   const double* den, const BackwardOut& go, std::vector<double>& buf) {
  backward_tile_impl(a, task, grad, out, den, go, buf);
}

void check_inputs(const char* op, const at::Tensor& padded, const at::Tensor& inv_h,
                  const at::Tensor& inv_y, const at::Tensor& inv_x, int64_t radius,
                  at::ArrayRef<double> taps) {
  TORCH_CHECK(padded.device().is_cpu(), op, " (CPU kernel): tensors must be on the CPU");
  TORCH_CHECK(padded.dim() == 4 && padded.size(1) == 1, op,
              ": padded must be (B, 1, H + 2r, W + 2r), got ", padded.sizes());
  TORCH_CHECK(radius >= 1, op, ": radius must be >= 1, got ", radius);
  TORCH_CHECK(taps.size() % 2 == 1, op, ": taps must have an odd length, got ", taps.size());
  const auto H = padded.size(2) - 2 * radius, W = padded.size(3) - 2 * radius;
  TORCH_CHECK(H >= 1 && W >= 1, op, ": padded is smaller than the window");
  for (const at::Tensor* m : {&inv_h, &inv_y, &inv_x}) {
    TORCH_CHECK(m->sizes() == at::IntArrayRef({padded.size(0), 1, H, W}), op,
                ": the parameter maps must be (B, 1, H, W) = ", padded.size(0), ", 1, ", H, ", ",
                W, ", got ", m->sizes());
    TORCH_CHECK(m->scalar_type() == padded.scalar_type(), op, ": dtypes differ");
  }
}

template <typename T>
Nlm<T> make_nlm(const at::Tensor& padded, const at::Tensor& inv_h, const at::Tensor& inv_y,
                const at::Tensor& inv_x, int64_t radius, at::ArrayRef<double> taps) {
  Nlm<T> a;
  a.B = padded.size(0);
  a.r = radius;
  a.Hp = padded.size(2);
  a.Wp = padded.size(3);
  a.H = a.Hp - 2 * radius;
  a.W = a.Wp - 2 * radius;
  a.k = static_cast<int64_t>(taps.size() / 2);
  a.padded = padded.data_ptr<T>();
  a.inv_h = inv_h.data_ptr<T>();
  a.inv_y = inv_y.data_ptr<T>();
  a.inv_x = inv_x.data_ptr<T>();
  for (double t : taps) a.taps.push_back(static_cast<T>(t));
  return a;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> nlm_forward_cpu(const at::Tensor& padded_in,
                                                   const at::Tensor& inv_h_in,
                                                   const at::Tensor& inv_y_in,
                                                   const at::Tensor& inv_x_in, int64_t radius,
                                                   at::ArrayRef<double> taps, bool keep_dist) {
  check_inputs("nlm_forward", padded_in, inv_h_in, inv_y_in, inv_x_in, radius, taps);
  const at::Tensor padded = padded_in.contiguous(), inv_h = inv_h_in.contiguous(),
                   inv_y = inv_y_in.contiguous(), inv_x = inv_x_in.contiguous();
  at::Tensor out = at::empty(inv_h.sizes(), inv_h.options());
  at::Tensor den = at::empty(inv_h.sizes(), inv_h.options());
  const int64_t offsets = (2 * radius + 1) * (2 * radius + 1) - 1;
  at::Tensor dist = keep_dist ? at::empty({inv_h.size(0), offsets, inv_h.size(2), inv_h.size(3)},
                                          inv_h.options())
                              : at::empty({0}, inv_h.options());
  if (out.numel() == 0) return {out, den, dist};
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "nlm_forward_cpu", [&] {
    Nlm<scalar_t> a = make_nlm<scalar_t>(padded, inv_h, inv_y, inv_x, radius, taps);
    if (keep_dist) a.dist = dist.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    scalar_t* d = den.data_ptr<scalar_t>();
    at::parallel_for(0, a.B * a.tiles(), 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf;
      for (int64_t t = begin; t < end; ++t) forward_tile(a, t, o, d, buf);
    });
  });
  return {out, den, dist};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> nlm_backward_cpu(
    const at::Tensor& grad_in, const at::Tensor& padded_in, const at::Tensor& inv_h_in,
    const at::Tensor& inv_y_in, const at::Tensor& inv_x_in, const at::Tensor& out_in,
    const at::Tensor& den_in, const at::Tensor& dist_in, int64_t radius,
    at::ArrayRef<double> taps) {
  check_inputs("nlm_backward", padded_in, inv_h_in, inv_y_in, inv_x_in, radius, taps);
  TORCH_CHECK(grad_in.sizes() == inv_h_in.sizes() && out_in.sizes() == inv_h_in.sizes() &&
                  den_in.sizes() == inv_h_in.sizes(),
              "nlm_backward: grad, out and den must be (B, 1, H, W)");
  const at::Tensor padded = padded_in.contiguous(), inv_h = inv_h_in.contiguous(),
                   inv_y = inv_y_in.contiguous(), inv_x = inv_x_in.contiguous(),
                   grad = grad_in.contiguous().to(padded.scalar_type()),
                   out = out_in.contiguous(), den = den_in.contiguous(),
                   dist = dist_in.contiguous();
  const int64_t offsets = (2 * radius + 1) * (2 * radius + 1) - 1;
  TORCH_CHECK(dist.numel() == 0 || dist.sizes() == at::IntArrayRef({inv_h.size(0), offsets,
                                                                     inv_h.size(2), inv_h.size(3)}),
              "nlm_backward: dist must be empty or (B, offsets, H, W), got ", dist.sizes());
  at::Tensor g_padded = at::zeros(padded.sizes(), padded.options());
  at::Tensor gh = at::empty(inv_h.sizes(), inv_h.options());
  at::Tensor gy = at::empty(inv_h.sizes(), inv_h.options());
  at::Tensor gx = at::empty(inv_h.sizes(), inv_h.options());
  if (gh.numel() == 0) return {g_padded, gh, gy, gx};
  AT_DISPATCH_FLOATING_TYPES(padded.scalar_type(), "nlm_backward_cpu", [&] {
    Nlm<scalar_t> a = make_nlm<scalar_t>(padded, inv_h, inv_y, inv_x, radius, taps);
    if (dist.numel() > 0) a.dist = const_cast<scalar_t*>(dist.data_ptr<scalar_t>());
    const int64_t tiles = a.tiles(), slab_rows = kTile + 2 * a.r;
    at::Tensor slabs = at::zeros({a.B * tiles, slab_rows, a.Wp}, padded.options());
    const BackwardOut go{slabs.data_ptr<scalar_t>(), gh.data_ptr<scalar_t>(),
                         gy.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>()};
    const scalar_t* gp = grad.data_ptr<scalar_t>();
    const scalar_t* op = out.data_ptr<scalar_t>();
    const scalar_t* dp = den.data_ptr<scalar_t>();
    at::parallel_for(0, a.B * tiles, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> buf;
      for (int64_t t = begin; t < end; ++t) backward_tile(a, t, gp, op, dp, go, buf);
    });
    // the padded image's gradient: each row sums the slabs that cover it, in band order
    const scalar_t* sp = slabs.data_ptr<scalar_t>();
    scalar_t* gpad = g_padded.data_ptr<scalar_t>();
    at::parallel_for(0, a.B * a.Hp, 16, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        const int64_t b = q / a.Hp, R = q % a.Hp;
        scalar_t* dst = gpad + q * a.Wp;
        for (int64_t t = std::max<int64_t>(0, (R - slab_rows) / kTile); t < tiles; ++t) {
          const int64_t y0 = t * kTile;
          if (R < y0) break;
          const int64_t n = std::min(a.H, y0 + kTile) - y0;
          if (R >= y0 + n + 2 * a.r) continue;
          const scalar_t* src = sp + ((b * tiles + t) * slab_rows + (R - y0)) * a.Wp;
          for (int64_t j = 0; j < a.Wp; ++j) dst[j] += src[j];
        }
      }
    });
  });
  return {g_padded, gh, gy, gx};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(medssl, m) {
  m.def(
      "nlm_forward(Tensor padded, Tensor inv_h, Tensor inv_y, Tensor inv_x, int radius, "
      "float[] taps, bool keep_dist) -> (Tensor, Tensor, Tensor)");
  m.def(
      "nlm_backward(Tensor grad, Tensor padded, Tensor inv_h, Tensor inv_y, Tensor inv_x, "
      "Tensor out, Tensor den, Tensor dist, int radius, float[] taps) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(medssl, CPU, m) {
  m.impl("nlm_forward", &nlm_forward_cpu);
  m.impl("nlm_backward", &nlm_backward_cpu);
}

}  // namespace medssl

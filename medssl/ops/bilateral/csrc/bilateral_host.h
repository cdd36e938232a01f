// Host-side helpers shared by the CPU and CUDA registrations: argument checks, strided
// sigma maps and the border rule's preimage tables.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include "bilateral_common.h"

namespace medssl {

// Sigma maps and the normaliser are kept in the "opmath" type: float for half/bfloat16/float
// inputs, double for double inputs.
inline at::ScalarType opmath_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

inline Dims make_dims(const at::Tensor& x, at::TensorList sigma_spatial,
                      const at::Tensor& sigma_range, at::IntArrayRef radius) {
  TORCH_CHECK(x.dim() == 4 || x.dim() == 5,
              "bilateral_filter: x must be (B, C, H, W) or (B, C, D, H, W), got ", x.sizes());
  const int nd = static_cast<int>(x.dim()) - 2;
  TORCH_CHECK(static_cast<int>(sigma_spatial.size()) == nd, "bilateral_filter: expected ", nd,
              " spatial sigmas (one per spatial axis), got ", sigma_spatial.size());
  TORCH_CHECK(static_cast<int>(radius.size()) == nd, "bilateral_filter: expected ", nd,
              " radii, got ", radius.size());
  for (auto r : radius) TORCH_CHECK(r >= 0, "bilateral_filter: radius must be >= 0");
  const auto st = opmath_type(x.scalar_type());
  auto check_map = [&](const at::Tensor& s, const char* what) {
    TORCH_CHECK(s.dim() == x.dim() && s.size(0) == x.size(0) && s.size(1) == 1,
                "bilateral_filter: ", what, " must be expanded to (B, 1, *spatial), got ",
                s.sizes());
    for (int a = 0; a < nd; ++a)
      TORCH_CHECK(s.size(2 + a) == x.size(2 + a), "bilateral_filter: ", what,
                  " spatial size mismatch: ", s.sizes(), " vs ", x.sizes());
    TORCH_CHECK(s.scalar_type() == st, "bilateral_filter: ", what, " must have dtype ", st,
                ", got ", s.scalar_type());
    TORCH_CHECK(s.device() == x.device(), "bilateral_filter: ", what,
                " is on another device than x");
  };
  for (const auto& s : sigma_spatial) check_map(s, "sigma_spatial");
  check_map(sigma_range, "sigma_range");
  Dims d;
  d.nd = nd;
  d.B = x.size(0);
  d.C = x.size(1);
  d.D = nd == 3 ? x.size(2) : 1;
  d.H = x.size(nd == 3 ? 3 : 2);
  d.W = x.size(nd == 3 ? 4 : 3);
  d.rz = nd == 3 ? radius[0] : 0;
  d.ry = radius[nd == 3 ? 1 : 0];
  d.rx = radius[nd == 3 ? 2 : 1];
  return d;
}

template <typename T>
StridedMap<T> strided_map(const at::Tensor& s, int nd) {
  StridedMap<T> m;
  m.data = s.data_ptr<T>();
  m.sb = s.stride(0);
  m.sz = nd == 3 ? s.stride(2) : 0;
  m.sy = s.stride(nd == 3 ? 3 : 2);
  m.sx = s.stride(nd == 3 ? 4 : 3);
  return m;
}

}  // namespace medssl

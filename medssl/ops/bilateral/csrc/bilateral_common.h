// Shared by the C++ CPU and the CUDA kernels of medssl::bilateral_filter: constants, the
// border rule and strided sigma-map access. Light on purpose: no ATen/torch headers, so the
// CUDA translation unit stays fast to compile.
#pragma once

#include <cstdint>

#ifdef __CUDACC__
#define MEDSSL_HD __host__ __device__ __forceinline__
#else
#define MEDSSL_HD inline
#endif

namespace medssl {

// Lower clamp of every sigma (voxels / input units); see reference.py (SIGMA_EPS).
constexpr double kSigmaEps = 1e-3;

// Border rule: reflect about the edge voxel without repeating it, then clamp into [0, n).
MEDSSL_HD int64_t reflect_clamp(int64_t q, int64_t n) {
  if (n == 1) return 0;
  if (q < 0) q = -q;
  if (q > n - 1) q = 2 * (n - 1) - q;
  return q < 0 ? 0 : (q > n - 1 ? n - 1 : q);
}

// Calls f(q) for every unpadded coordinate q in [-r, n - 1 + r] that the border rule maps
// onto k (reflect_clamp(q, n) == k), in increasing order: the "preimages" of k, over which the
// backward gathers. Away from short axes only k itself and single reflections qualify.
template <typename F>
MEDSSL_HD void for_each_preimage(int64_t k, int64_t n, int64_t r, F&& f) {
  if (n <= 2 * r + 4) {
    for (int64_t q = -r; q <= n - 1 + r; ++q)
      if (reflect_clamp(q, n) == k) f(q);
    return;
  }
  const int64_t cand[3] = {-k, k, 2 * (n - 1) - k};
  for (int i = 0; i < 3; ++i) {
    const int64_t q = cand[i];
    if (q < -r || q > n - 1 + r) continue;
    if ((i == 0 && k == 0) || (i == 2 && k == n - 1)) continue;  // same as q = k
    if (reflect_clamp(q, n) == k) f(q);
  }
}

// Problem size; 2D problems are 3D with D = 1 and rz = 0.
struct Dims {
  int nd;  // number of spatial axes (2 or 3)
  int64_t B, C, D, H, W;
  int64_t rz, ry, rx;
};

// A per-voxel map of shape (B, 1, [D,] H, W) read through its strides (0 where broadcast).
template <typename T>
struct StridedMap {
  const T* data;
  int64_t sb, sz, sy, sx;
  MEDSSL_HD T at(int64_t b, int64_t z, int64_t y, int64_t x) const {
    return data[b * sb + z * sz + y * sy + x * sx];
  }
};

}  // namespace medssl

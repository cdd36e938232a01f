// CUDA kernels of medssl::bilateral_filter. Semantics and gradients: see reference.py; the
// structure mirrors the CPU kernel (bilateral_cpu.cpp).
//
// One thread per output voxel. A block covers BX x BY voxels of one (b, z) slice and loads
// into shared memory the input values of its window (block + halo, border rule applied), and
// for the backward also the per-centre quantities of the halo (g/W, sum g*y/W, -1/(2 s^2)),
// computed once per block instead of once per tap. Where the tiles would not fit in shared
// memory the kernels read global memory instead (same arithmetic). The backward is a gather:
// each thread writes only its own voxel's gradients, in a fixed order (no atomics), so results
// are deterministic.
//
// Only CUDA headers here: the translation unit compiles in about a minute.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "bilateral_cuda.h"

namespace medssl {
namespace {

template <typename T>
struct Opmath {
  using type = float;
};
template <>
struct Opmath<double> {
  using type = double;
};

__device__ __forceinline__ float to_s(float v) { return v; }
__device__ __forceinline__ double to_s(double v) { return v; }
__device__ __forceinline__ float to_s(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_s(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_s(float v);
template <>
__device__ __forceinline__ float from_s<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half from_s<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_s<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}
template <typename T>
__device__ __forceinline__ T from_s(double v) {
  return static_cast<T>(v);
}

__device__ __forceinline__ float exp_s(float v) { return __expf(v); }
__device__ __forceinline__ double exp_s(double v) { return exp(v); }

template <typename S>
__device__ __forceinline__ S neg_half_inv_sq(S s) {
  s = s < S(kSigmaEps) ? S(kSigmaEps) : s;
  return S(-0.5) / (s * s);
}

template <typename S>
__device__ __forceinline__ S map_at(const void* p, const int64_t* st, int64_t b, int64_t z,
                                    int64_t y, int64_t x) {
  return static_cast<const S*>(p)[b * st[0] + z * st[1] + y * st[2] + x * st[3]];
}

struct Block {
  int bx, by;  // threads per block along x and y
  int64_t tw, th, td;  // tile extent (block + halo) along x, y, z
};

__host__ __device__ inline Block block_for(const Dims& d) {
  Block k;
  k.bx = d.nd == 3 ? 16 : 32;
  k.by = 8;
  k.tw = k.bx + 2 * d.rx;
  k.th = k.by + 2 * d.ry;
  k.td = 2 * d.rz + 1;
  return k;
}

// x[b, c, reflect(zz), reflect(yy), reflect(xx)] with the border rule.
template <typename T, typename S>
__device__ __forceinline__ S load_x(const ForwardArgs& a, const T* X, int64_t b, int64_t c,
                                    int64_t zz, int64_t yy, int64_t xx) {
  const Dims& d = a.d;
  zz = reflect_clamp(zz, d.D);
  yy = reflect_clamp(yy, d.H);
  xx = reflect_clamp(xx, d.W);
  return to_s(X[(((b * d.C + c) * d.D + zz) * d.H + yy) * d.W + xx]);
}

// ---- forward --------------------------------------------------------------------------------
template <typename T, int kC, bool kTiled>
__global__ void forward_kernel(ForwardArgs a) {
  using S = typename Opmath<T>::type;
  const Dims d = a.d;
  const Block k = block_for(d);
  const int64_t x0 = static_cast<int64_t>(blockIdx.x) * k.bx;
  const int64_t y0 = static_cast<int64_t>(blockIdx.y) * k.by;
  const int64_t bz = a.bz0 + blockIdx.z;
  const int64_t b = bz / d.D, z = bz % d.D;
  const int64_t x = x0 + threadIdx.x, y = y0 + threadIdx.y;
  const T* X = static_cast<const T*>(a.x);
  extern __shared__ unsigned char smem[];
  S* tile = reinterpret_cast<S*>(smem);
  if (kTiled) {
    const int64_t n = kC * k.td * k.th * k.tw;
    for (int64_t t = threadIdx.y * k.bx + threadIdx.x; t < n; t += k.bx * k.by) {
      const int64_t tx = t % k.tw, ty = (t / k.tw) % k.th, tz = (t / (k.tw * k.th)) % k.td;
      const int64_t c = t / (k.tw * k.th * k.td);
      tile[t] = load_x<T, S>(a, X, b, c, z - d.rz + tz, y0 - d.ry + ty, x0 - d.rx + tx);
    }
    __syncthreads();
  }
  if (x >= d.W || y >= d.H) return;
  const S az = d.nd == 3 ? neg_half_inv_sq(map_at<S>(a.sig[0], a.sig_strides[0], b, z, y, x)) : S(0);
  const S ay = neg_half_inv_sq(map_at<S>(a.sig[1], a.sig_strides[1], b, z, y, x));
  const S ax = neg_half_inv_sq(map_at<S>(a.sig[2], a.sig_strides[2], b, z, y, x));
  const S ar = neg_half_inv_sq(map_at<S>(a.sr, a.sr_strides, b, z, y, x));
  S xc[kC], num[kC];
#pragma unroll
  for (int c = 0; c < kC; ++c) {
    xc[c] = to_s(X[(((b * d.C + c) * d.D + z) * d.H + y) * d.W + x]);
    num[c] = S(0);
  }
  S den = S(0);
  for (int64_t dz = -d.rz; dz <= d.rz; ++dz) {
    for (int64_t dy = -d.ry; dy <= d.ry; ++dy) {
      const S base = S(dz * dz) * az + S(dy * dy) * ay;
      for (int64_t dx = -d.rx; dx <= d.rx; ++dx) {
        S xn[kC];
        S d2 = S(0);
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          if (kTiled) {
            const int64_t tz = d.rz + dz, ty = threadIdx.y + d.ry + dy, tx = threadIdx.x + d.rx + dx;
            xn[c] = tile[((c * k.td + tz) * k.th + ty) * k.tw + tx];
          } else {
            xn[c] = load_x<T, S>(a, X, b, c, z + dz, y + dy, x + dx);
          }
          const S diff = xc[c] - xn[c];
          d2 += diff * diff;
        }
        const S w = exp_s(base + S(dx * dx) * ax + d2 * ar);
        den += w;
#pragma unroll
        for (int c = 0; c < kC; ++c) num[c] += w * xn[c];
      }
    }
  }
  T* out = static_cast<T*>(a.out);
#pragma unroll
  for (int c = 0; c < kC; ++c)
    out[(((b * d.C + c) * d.D + z) * d.H + y) * d.W + x] = from_s<T>(num[c] / den);
  static_cast<S*>(a.norm)[((b * d.D + z) * d.H + y) * d.W + x] = den;
}

// ---- backward -------------------------------------------------------------------------------
// Per-centre quantities (params) of the backward, kept per tile element in shared memory:
// x (kC), ghat = g / W (kC), ahat = sum_c ghat * y, az, ay, ax, ar.
template <int kC>
struct ParamLayout {
  static constexpr int kSize = 2 * kC + 5;
};

template <typename T, typename S, int kC>
__device__ __forceinline__ void centre_params(const BackwardArgs& a, int64_t b, int64_t z,
                                              int64_t y, int64_t x, S* p) {
  const Dims& d = a.f.d;
  const T* X = static_cast<const T*>(a.f.x);
  const T* G = static_cast<const T*>(a.grad);
  const T* Y = static_cast<const T*>(a.f.out);
  const S W = static_cast<const S*>(a.f.norm)[((b * d.D + z) * d.H + y) * d.W + x];
  S ah = S(0);
#pragma unroll
  for (int c = 0; c < kC; ++c) {
    const int64_t idx = (((b * d.C + c) * d.D + z) * d.H + y) * d.W + x;
    p[c] = to_s(X[idx]);
    const S gh = to_s(G[idx]) / W;
    p[kC + c] = gh;
    ah += gh * to_s(Y[idx]);
  }
  p[2 * kC] = ah;
  p[2 * kC + 1] =
      d.nd == 3 ? neg_half_inv_sq(map_at<S>(a.f.sig[0], a.f.sig_strides[0], b, z, y, x)) : S(0);
  p[2 * kC + 2] = neg_half_inv_sq(map_at<S>(a.f.sig[1], a.f.sig_strides[1], b, z, y, x));
  p[2 * kC + 3] = neg_half_inv_sq(map_at<S>(a.f.sig[2], a.f.sig_strides[2], b, z, y, x));
  p[2 * kC + 4] = neg_half_inv_sq(map_at<S>(a.f.sr, a.f.sr_strides, b, z, y, x));
}

template <typename T, int kC, bool kTiled>
__global__ void backward_kernel(BackwardArgs a) {
  using S = typename Opmath<T>::type;
  constexpr int P = ParamLayout<kC>::kSize;
  const Dims d = a.f.d;
  const Block k = block_for(d);
  const int64_t x0 = static_cast<int64_t>(blockIdx.x) * k.bx;
  const int64_t y0 = static_cast<int64_t>(blockIdx.y) * k.by;
  const int64_t bz = a.f.bz0 + blockIdx.z;
  const int64_t b = bz / d.D, z = bz % d.D;
  const int64_t x = x0 + threadIdx.x, y = y0 + threadIdx.y;
  const T* X = static_cast<const T*>(a.f.x);
  const int64_t nt = k.td * k.th * k.tw;
  extern __shared__ unsigned char smem[];
  S* xtile = reinterpret_cast<S*>(smem);  // kC * nt, border rule applied (neighbour values)
  S* ptile = xtile + kC * nt;             // P * nt, real centres only (params)
  if (kTiled) {
    for (int64_t t = threadIdx.y * k.bx + threadIdx.x; t < nt; t += k.bx * k.by) {
      const int64_t tx = t % k.tw, ty = (t / k.tw) % k.th, tz = t / (k.tw * k.th);
      const int64_t zz = z - d.rz + tz, yy = y0 - d.ry + ty, xx = x0 - d.rx + tx;
#pragma unroll
      for (int c = 0; c < kC; ++c) xtile[c * nt + t] = load_x<T, S>(a.f, X, b, c, zz, yy, xx);
      if (zz >= 0 && zz < d.D && yy >= 0 && yy < d.H && xx >= 0 && xx < d.W && a.grad_x) {
        S p[P];
        centre_params<T, S, kC>(a, b, zz, yy, xx, p);
#pragma unroll
        for (int i = 0; i < P; ++i) ptile[i * nt + t] = p[i];
      }
    }
    __syncthreads();
  }
  if (x >= d.W || y >= d.H) return;

  // Part A: sigma gradients and the centre's own range term.
  S cp[P];
  centre_params<T, S, kC>(a, b, z, y, x, cp);
  const S* xc = cp;
  const S* gh = cp + kC;
  const S ah = cp[2 * kC], az = cp[2 * kC + 1], ay = cp[2 * kC + 2], ax = cp[2 * kC + 3],
          ar = cp[2 * kC + 4];
  S acc_z = 0, acc_y = 0, acc_x = 0, acc_r = 0, own[kC];
#pragma unroll
  for (int c = 0; c < kC; ++c) own[c] = S(0);
  for (int64_t dz = -d.rz; dz <= d.rz; ++dz) {
    for (int64_t dy = -d.ry; dy <= d.ry; ++dy) {
      const S dz2 = S(dz * dz), dy2 = S(dy * dy);
      const S base = dz2 * az + dy2 * ay;
      for (int64_t dx = -d.rx; dx <= d.rx; ++dx) {
        const S dx2 = S(dx * dx);
        S xn[kC];
        S d2 = S(0), gx = S(0);
#pragma unroll
        for (int c = 0; c < kC; ++c) {
          if (kTiled) {
            const int64_t t =
                ((d.rz + dz) * k.th + (threadIdx.y + d.ry + dy)) * k.tw + (threadIdx.x + d.rx + dx);
            xn[c] = xtile[c * nt + t];
          } else {
            xn[c] = load_x<T, S>(a.f, X, b, c, z + dz, y + dy, x + dx);
          }
          const S diff = xc[c] - xn[c];
          d2 += diff * diff;
          gx += gh[c] * xn[c];
        }
        const S w = exp_s(base + dx2 * ax + d2 * ar);
        const S t = (gx - ah) * w;
        acc_z += t * dz2;
        acc_y += t * dy2;
        acc_x += t * dx2;
        acc_r += t * d2;
#pragma unroll
        for (int c = 0; c < kC; ++c) own[c] += t * (xc[c] - xn[c]);
      }
    }
  }
  const int64_t v = ((b * d.D + z) * d.H + y) * d.W + x;
  const S accs[3] = {acc_z, acc_y, acc_x};
  for (int ax_i = 0; ax_i < 3; ++ax_i) {
    if (a.grad_sig[ax_i] == nullptr) continue;
    const S s = map_at<S>(a.f.sig[ax_i], a.f.sig_strides[ax_i], b, z, y, x);
    static_cast<S*>(a.grad_sig[ax_i])[v] = s >= S(kSigmaEps) ? accs[ax_i] / (s * s * s) : S(0);
  }
  if (a.grad_sr != nullptr) {
    const S s = map_at<S>(a.f.sr, a.f.sr_strides, b, z, y, x);
    static_cast<S*>(a.grad_sr)[v] = s >= S(kSigmaEps) ? acc_r / (s * s * s) : S(0);
  }
  if (a.grad_x == nullptr) return;

  // Part B: this voxel as the neighbour j of centres i, over the border rule's preimages.
  S acc[kC];
#pragma unroll
  for (int c = 0; c < kC; ++c) acc[c] = S(2) * ar * own[c];
  const int64_t lo[3] = {z - d.rz, y0 - d.ry, x0 - d.rx};  // tile origin (real coords)
  const int64_t ext[3] = {k.td, k.th, k.tw};
  auto gather = [&](int64_t qz, int64_t qy, int64_t qx) {
    for (int64_t dz = -d.rz; dz <= d.rz; ++dz) {
      const int64_t cz = qz - dz;
      if (cz < 0 || cz >= d.D) continue;
      for (int64_t dy = -d.ry; dy <= d.ry; ++dy) {
        const int64_t cy = qy - dy;
        if (cy < 0 || cy >= d.H) continue;
        for (int64_t dx = -d.rx; dx <= d.rx; ++dx) {
          const int64_t cx = qx - dx;
          if (cx < 0 || cx >= d.W) continue;
          S p[P];
          const int64_t tz = cz - lo[0], ty = cy - lo[1], tx = cx - lo[2];
          if (kTiled && tz >= 0 && tz < ext[0] && ty >= 0 && ty < ext[1] && tx >= 0 &&
              tx < ext[2]) {
            const int64_t t = (tz * k.th + ty) * k.tw + tx;
#pragma unroll
            for (int i = 0; i < P; ++i) p[i] = ptile[i * nt + t];
          } else {
            centre_params<T, S, kC>(a, b, cz, cy, cx, p);
          }
          S d2 = S(0), gx = S(0);
#pragma unroll
          for (int c = 0; c < kC; ++c) {
            const S diff = p[c] - xc[c];  // x_i - x_j, with j = this voxel
            d2 += diff * diff;
            gx += p[kC + c] * xc[c];
          }
          const S w = exp_s(S(dz * dz) * p[2 * kC + 1] + S(dy * dy) * p[2 * kC + 2] +
                            S(dx * dx) * p[2 * kC + 3] + d2 * p[2 * kC + 4]);
          const S t = (gx - p[2 * kC]) * w;
#pragma unroll
          for (int c = 0; c < kC; ++c)
            acc[c] += p[kC + c] * w - S(2) * p[2 * kC + 4] * t * (p[c] - xc[c]);
        }
      }
    }
  };
  for_each_preimage(z, d.D, d.rz, [&](int64_t qz) {
    for_each_preimage(y, d.H, d.ry, [&](int64_t qy) {
      for_each_preimage(x, d.W, d.rx, [&](int64_t qx) { gather(qz, qy, qx); });
    });
  });
  T* GX = static_cast<T*>(a.grad_x);
#pragma unroll
  for (int c = 0; c < kC; ++c) GX[(((b * d.C + c) * d.D + z) * d.H + y) * d.W + x] = from_s<T>(acc[c]);
}

// ---- launch ---------------------------------------------------------------------------------
template <typename T>
size_t forward_smem(const Dims& d, int kc) {
  const Block k = block_for(d);
  return sizeof(typename Opmath<T>::type) * kc * k.td * k.th * k.tw;
}

template <typename T>
size_t backward_smem(const Dims& d, int kc) {
  const Block k = block_for(d);
  return sizeof(typename Opmath<T>::type) * (3 * kc + 5) * k.td * k.th * k.tw;
}

int max_dynamic_smem() {
  int device = 0, value = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&value, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return value;
}

constexpr int64_t kMaxGridZ = 65535;

// Launch over all B * D slices, in grids of at most kMaxGridZ slices; `first` points at the
// slice offset inside `args`, set before each launch.
template <typename Kernel, typename Args>
cudaError_t launch(Kernel kernel, const Dims& d, size_t smem, Args& args, int64_t* first,
                   cudaStream_t stream) {
  const Block k = block_for(d);
  const dim3 block(k.bx, k.by);
  if (smem > 48 * 1024) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(smem));
    if (err != cudaSuccess) return err;
  }
  const int64_t slices = d.B * d.D;
  for (int64_t s0 = 0; s0 < slices; s0 += kMaxGridZ) {
    *first = s0;
    const int64_t n = slices - s0 < kMaxGridZ ? slices - s0 : kMaxGridZ;
    const dim3 grid(static_cast<unsigned>((d.W + k.bx - 1) / k.bx),
                    static_cast<unsigned>((d.H + k.by - 1) / k.by), static_cast<unsigned>(n));
    kernel<<<grid, block, smem, stream>>>(args);
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  return cudaSuccess;
}

template <typename T, int kC>
cudaError_t forward_typed(ForwardArgs a, cudaStream_t stream) {
  const size_t smem = forward_smem<T>(a.d, kC);
  if (smem <= static_cast<size_t>(max_dynamic_smem()))
    return launch(forward_kernel<T, kC, true>, a.d, smem, a, &a.bz0, stream);
  return launch(forward_kernel<T, kC, false>, a.d, 0, a, &a.bz0, stream);
}

template <typename T, int kC>
cudaError_t backward_typed(BackwardArgs a, cudaStream_t stream) {
  const size_t smem = backward_smem<T>(a.f.d, kC);
  if (smem <= static_cast<size_t>(max_dynamic_smem()))
    return launch(backward_kernel<T, kC, true>, a.f.d, smem, a, &a.f.bz0, stream);
  return launch(backward_kernel<T, kC, false>, a.f.d, 0, a, &a.f.bz0, stream);
}

template <typename T>
cudaError_t forward_channels(const ForwardArgs& a, cudaStream_t s) {
  switch (a.d.C) {
    case 1: return forward_typed<T, 1>(a, s);
    case 2: return forward_typed<T, 2>(a, s);
    case 3: return forward_typed<T, 3>(a, s);
    case 4: return forward_typed<T, 4>(a, s);
    default: return cudaErrorInvalidValue;
  }
}

template <typename T>
cudaError_t backward_channels(const BackwardArgs& a, cudaStream_t s) {
  switch (a.f.d.C) {
    case 1: return backward_typed<T, 1>(a, s);
    case 2: return backward_typed<T, 2>(a, s);
    case 3: return backward_typed<T, 3>(a, s);
    case 4: return backward_typed<T, 4>(a, s);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace

cudaError_t launch_bilateral_forward(const ForwardArgs& a, cudaStream_t stream) {
  switch (a.type) {
    case StorageType::kFloat: return forward_channels<float>(a, stream);
    case StorageType::kDouble: return forward_channels<double>(a, stream);
    case StorageType::kHalf: return forward_channels<__half>(a, stream);
    case StorageType::kBFloat16: return forward_channels<__nv_bfloat16>(a, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t launch_bilateral_backward(const BackwardArgs& a, cudaStream_t stream) {
  switch (a.f.type) {
    case StorageType::kFloat: return backward_channels<float>(a, stream);
    case StorageType::kDouble: return backward_channels<double>(a, stream);
    case StorageType::kHalf: return backward_channels<__half>(a, stream);
    case StorageType::kBFloat16: return backward_channels<__nv_bfloat16>(a, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace medssl

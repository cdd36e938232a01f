// Interface between the CUDA host wrapper (bilateral_cuda.cpp) and the kernels
// (bilateral_cuda_kernel.cu). Plain data only, so the .cu file needs no torch headers.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "bilateral_common.h"

namespace medssl {

// Which storage type the tensors use; the kernels accumulate in float (double for kDouble).
enum class StorageType { kFloat, kDouble, kHalf, kBFloat16 };

struct ForwardArgs {
  Dims d;
  StorageType type;
  const void* x;       // (B, C, D, H, W) contiguous, storage type
  const void* sig[3];  // opmath type, strided (B, 1, D, H, W); sig[0] unused for 2D
  int64_t sig_strides[3][4];
  const void* sr;
  int64_t sr_strides[4];
  void* out;   // storage type
  void* norm;  // opmath type, (B, 1, D, H, W) contiguous
  int64_t bz0; // first (b * D + z) slice of this launch (grids are split at 65535 slices)
};

struct BackwardArgs {
  ForwardArgs f;      // x, sigmas; out = y (forward output), norm = forward normaliser
  const void* grad;   // storage type
  void* grad_x;       // storage type or nullptr
  void* grad_sig[3];  // opmath, contiguous (B, 1, D, H, W), or nullptr
  void* grad_sr;      // opmath or nullptr
};

// Launch on `stream`; return the launch's cudaError_t.
cudaError_t launch_bilateral_forward(const ForwardArgs& args, cudaStream_t stream);
cudaError_t launch_bilateral_backward(const BackwardArgs& args, cudaStream_t stream);

}  // namespace medssl

// CUDA registration of medssl::bilateral_filter and its backward: argument checks, output
// allocation and kernel launch on the current stream. The schemas are defined by the CPU
// library (bilateral_cpu.cpp) or, where it is missing, from Python.
#include <ATen/core/List.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <Python.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "bilateral_cuda.h"
#include "bilateral_host.h"

namespace medssl {
namespace {

StorageType storage_type(const at::Tensor& x) {
  switch (x.scalar_type()) {
    case at::kFloat: return StorageType::kFloat;
    case at::kDouble: return StorageType::kDouble;
    case at::kHalf: return StorageType::kHalf;
    case at::kBFloat16: return StorageType::kBFloat16;
    default: TORCH_CHECK(false, "bilateral_filter (CUDA): unsupported dtype ", x.scalar_type());
  }
}

void set_map(const at::Tensor& s, int nd, const void** ptr, int64_t* strides) {
  *ptr = s.data_ptr();
  strides[0] = s.stride(0);
  strides[1] = nd == 3 ? s.stride(2) : 0;
  strides[2] = s.stride(nd == 3 ? 3 : 2);
  strides[3] = s.stride(nd == 3 ? 4 : 3);
}

ForwardArgs forward_args(const Dims& d, const at::Tensor& x, at::TensorList sig,
                         const at::Tensor& sr) {
  TORCH_CHECK(d.C <= 4, "bilateral_filter (CUDA): at most 4 channels, got ", d.C,
              " (the Python wrapper falls back to the reference for more)");
  ForwardArgs a{};
  a.d = d;
  a.type = storage_type(x);
  a.x = x.data_ptr();
  for (int k = 0; k < 3; ++k) {
    const int idx = d.nd == 3 ? k : k - 1;
    if (idx >= 0) {
      set_map(sig[idx], d.nd, &a.sig[k], a.sig_strides[k]);
    } else {
      a.sig[k] = nullptr;
    }
  }
  set_map(sr, d.nd, &a.sr, a.sr_strides);
  a.bz0 = 0;
  return a;
}

at::Tensor map_empty(const at::Tensor& x) {
  auto sizes = x.sizes().vec();
  sizes[1] = 1;
  return at::empty(sizes, x.options().dtype(opmath_type(x.scalar_type())));
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "bilateral_filter (CUDA): ", what, " failed: ",
              cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor> bilateral_forward_cuda(const at::Tensor& x_in,
                                                          at::TensorList sigma_spatial,
                                                          const at::Tensor& sigma_range,
                                                          at::IntArrayRef radius) {
  TORCH_CHECK(x_in.is_cuda(), "bilateral_filter (CUDA kernel): x must be a CUDA tensor");
  const Dims d = make_dims(x_in, sigma_spatial, sigma_range, radius);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  at::Tensor out = at::empty_like(x);
  at::Tensor norm = map_empty(x);
  if (x.numel() == 0) return {out, norm};
  ForwardArgs a = forward_args(d, x, sigma_spatial, sigma_range);
  a.out = out.data_ptr();
  a.norm = norm.data_ptr();
  check_launch(launch_bilateral_forward(a, c10::cuda::getCurrentCUDAStream()), "forward launch");
  return {out, norm};
}

std::tuple<at::Tensor, std::vector<at::Tensor>, at::Tensor> bilateral_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x_in, const at::Tensor& out_in,
    const at::Tensor& norm_in, at::TensorList sigma_spatial, const at::Tensor& sigma_range,
    at::IntArrayRef radius, const c10::List<bool>& mask_list) {
  TORCH_CHECK(x_in.is_cuda(), "bilateral_filter_backward (CUDA kernel): x must be a CUDA tensor");
  const Dims d = make_dims(x_in, sigma_spatial, sigma_range, radius);
  const std::vector<bool> mask(mask_list.begin(), mask_list.end());
  TORCH_CHECK(static_cast<int>(mask.size()) == d.nd + 2,
              "bilateral_filter_backward: output_mask must have ", d.nd + 2, " entries");
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(), g = grad_out.contiguous(), y = out_in.contiguous(),
                   norm = norm_in.contiguous();
  const auto empty = at::empty({0}, x.options());
  at::Tensor gx = mask[0] ? at::empty_like(x) : empty;
  std::vector<at::Tensor> gs;
  for (int k = 0; k < d.nd; ++k) gs.push_back(mask[1 + k] ? map_empty(x) : empty);
  at::Tensor gr = mask[1 + d.nd] ? map_empty(x) : empty;
  if (x.numel() == 0) return {gx, gs, gr};
  BackwardArgs a{};
  a.f = forward_args(d, x, sigma_spatial, sigma_range);
  a.f.out = const_cast<void*>(y.data_ptr());
  a.f.norm = const_cast<void*>(norm.data_ptr());
  a.grad = g.data_ptr();
  a.grad_x = mask[0] ? gx.data_ptr() : nullptr;
  for (int k = 0; k < 3; ++k) {
    const int idx = d.nd == 3 ? k : k - 1;
    a.grad_sig[k] = (idx >= 0 && mask[1 + idx]) ? gs[idx].data_ptr() : nullptr;
  }
  a.grad_sr = mask[1 + d.nd] ? gr.data_ptr() : nullptr;
  check_launch(launch_bilateral_backward(a, c10::cuda::getCurrentCUDAStream()), "backward launch");
  return {gx, gs, gr};
}

}  // namespace

TORCH_LIBRARY_IMPL(medssl, CUDA, m) {
  m.impl("bilateral_filter", &bilateral_forward_cuda);
  m.impl("bilateral_filter_backward", &bilateral_backward_cuda);
}

}  // namespace medssl

extern "C" PyObject* PyInit__C_cuda(void) {
  static PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C_cuda", nullptr, -1, nullptr,
                                   nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}

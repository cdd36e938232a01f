// CPU helpers shared by the C++ kernels (bilateral_cpu.cpp, nlm_cpu.cpp): function
// multi-versioning and a vectorisable exp. Header only, no torch headers.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
// One build serves every x86-64 CPU: GCC compiles an AVX2+FMA and a baseline version of each
// hot function and picks one at load time.
#define MEDSSL_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define MEDSSL_CLONES
#endif

#define MEDSSL_INLINE inline __attribute__((always_inline))

namespace medssl {

// Below this exponent a weight is set to exactly 0. Such a weight is under 4e-31 of the centre
// tap's (which is 1), so the result does not change, but its products with values and
// gradients are denormal floats, which x86 processes ~13x slower (measured: a 512^2 fit with a
// 4 HU range sigma, i.e. a standard-dose scan) and which the parallel_for worker threads do not
// flush to zero, whatever torch.set_flush_denormal says.
constexpr float kExpCut = -70.0f;

// exp(x) for x <= 0 to ~1e-7 relative error (Cephes' expf polynomial), written so that the
// compiler vectorises it; 0 below kExpCut.
MEDSSL_INLINE float exp_approx(float x) {
  const float keep = x < kExpCut ? 0.0f : 1.0f;
  x = x < kExpCut ? kExpCut : x;
  const float t = x * 1.44269504088896341f + 0.5f;
  int32_t n = static_cast<int32_t>(t);
  n -= (t < static_cast<float>(n));  // floor
  const float nf = static_cast<float>(n);
  float r = x - nf * 0.693359375f;
  r = r + nf * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union {
    int32_t i;
    float f;
  } scale;
  scale.i = (n + 127) << 23;
  return p * scale.f * keep;
}

MEDSSL_INLINE double exp_approx(double x) { return std::exp(x); }

}  // namespace medssl

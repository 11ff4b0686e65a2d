// The per-ray arithmetic of fused compositing, shared by the CPU and CUDA kernels so that
// the two cannot drift apart. The PyTorch reference is fastjoint/ops/_torch_impl.py.
//
// For the samples i of one ray: tau_i = sigma_i * (t_end_i - t_start_i),
// T_i = exp(-sum_{j<i} tau_j), w_i = T_i * (1 - exp(-tau_i)), and
// rgb = sum w_i c_i, opacity = sum w_i, depth = sum w_i (t_start_i + t_end_i) / 2.
//
// Backward, with upstream gradients g = (v_rgb, v_opacity, v_depth) and
// f_i = v_rgb . c_i + v_opacity + v_depth * t_mid_i (what sample i contributes per unit weight):
//   v_c_i   = v_rgb * w_i
//   v_tau_i = T_{i+1} f_i - sum_{k>i} w_k f_k,
// and sum_{k>i} w_k f_k = (g . forward outputs) - sum_{k<=i} w_k f_k, so one front-to-back pass
// that reuses the forward outputs suffices; no per-sample transmittance is stored.
#pragma once

#include <math.h>
#include <string.h>
#include <cstdint>

#ifdef __CUDACC__
#define FASTJOINT_HOST_DEVICE __host__ __device__
#else
#define FASTJOINT_HOST_DEVICE
#endif

namespace fastjoint {

// exp(x) in the argument's precision, on host and device alike.
FASTJOINT_HOST_DEVICE inline float exp_of(float x) { return expf(x); }
FASTJOINT_HOST_DEVICE inline double exp_of(double x) { return exp(x); }

// exp(x) for float x <= 0 without branches or calls, so that a loop over it vectorises on
// the CPU (libm's expf does not): x = n ln2 + r with |r| <= ln2 / 2, exp(r) by Cephes'
// degree-7 minimax polynomial (about 1 ulp), 2^n written into the exponent bits. Below -87
// the result is clamped at about 1.6e-38 rather than flushed to zero; NaN stays NaN.
inline float exp_nonpositive(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // rint, |n| < 2^22
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;            // ln 2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float e = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return e * scale;
}

// The opacity 1 - exp(-tau) of a sample from its transparency exp(-tau), accurate for thin
// samples too, where 1 - exp(-tau) cancels (a series there, relative error < tau^4 / 120).
template <typename scalar_t>
FASTJOINT_HOST_DEVICE inline scalar_t opacity_of(scalar_t tau, scalar_t transparency) {
  const scalar_t series = tau * (scalar_t(1) - tau * scalar_t(0.5) * (scalar_t(1) - tau * scalar_t(1.0 / 3.0) *
                                                                            (scalar_t(1) - tau * scalar_t(0.25))));
  return tau < scalar_t(1e-3) ? series : scalar_t(1) - transparency;
}

// The samples of a ray are walked in blocks: first every sample's opacity and transparency
// (independent of each other, so on the CPU this loop vectorises), then the sequential
// accumulation. One exponential per sample each way; it runs in the input's precision,
// while the transmittance is carried multiplicatively and every sum runs in double, so a
// ray of thousands of samples loses nothing.
#ifdef __CUDA_ARCH__
constexpr int kBlock = 1;  // a thread per ray has nothing to vectorise; keep the arrays in registers
#else
constexpr int kBlock = 32;
#endif

template <typename scalar_t>
FASTJOINT_HOST_DEVICE inline void opacity_block(int m, const scalar_t* __restrict__ sigmas,
                                                const scalar_t* __restrict__ t_starts,
                                                const scalar_t* __restrict__ t_ends, scalar_t* __restrict__ alpha,
                                                scalar_t* __restrict__ transparency) {
  for (int j = 0; j < m; ++j) {
    const scalar_t tau = sigmas[j] * (t_ends[j] - t_starts[j]);
#ifdef __CUDA_ARCH__
    transparency[j] = exp_of(-tau);
#else
    if constexpr (sizeof(scalar_t) == sizeof(float)) {
      transparency[j] = exp_nonpositive(-tau);
    } else {
      transparency[j] = exp_of(-tau);
    }
#endif
    alpha[j] = opacity_of(tau, transparency[j]);
  }
}

template <typename scalar_t>
FASTJOINT_HOST_DEVICE inline void composite_ray_forward(
    int64_t begin, int64_t end,
    const scalar_t* __restrict__ sigmas,    // [S]
    const scalar_t* __restrict__ rgbs,      // [S, 3]
    const scalar_t* __restrict__ t_starts,  // [S]
    const scalar_t* __restrict__ t_ends,    // [S]
    scalar_t* __restrict__ rgb,             // [3], this ray's
    scalar_t* __restrict__ opacity,         // [1]
    scalar_t* __restrict__ depth) {         // [1]
  double transmittance = 1.0, r = 0.0, g = 0.0, b = 0.0, o = 0.0, z = 0.0;
  scalar_t alpha[kBlock], transparency[kBlock];
  for (int64_t base = begin; base < end; base += kBlock) {
    const int m = static_cast<int>(end - base < kBlock ? end - base : kBlock);
    opacity_block<scalar_t>(m, sigmas + base, t_starts + base, t_ends + base, alpha, transparency);
    for (int j = 0; j < m; ++j) {
      const int64_t i = base + j;
      const double weight = transmittance * alpha[j];
      r += weight * rgbs[3 * i + 0];
      g += weight * rgbs[3 * i + 1];
      b += weight * rgbs[3 * i + 2];
      o += weight;
      z += weight * 0.5 * (static_cast<double>(t_starts[i]) + t_ends[i]);
      transmittance *= transparency[j];
    }
  }
  rgb[0] = static_cast<scalar_t>(r);
  rgb[1] = static_cast<scalar_t>(g);
  rgb[2] = static_cast<scalar_t>(b);
  *opacity = static_cast<scalar_t>(o);
  *depth = static_cast<scalar_t>(z);
}

template <typename scalar_t>
FASTJOINT_HOST_DEVICE inline void composite_ray_backward(
    int64_t begin, int64_t end,
    const scalar_t* __restrict__ v_rgb,     // [3], this ray's upstream gradients
    scalar_t v_opacity, scalar_t v_depth,
    const scalar_t* __restrict__ rgb,       // [3], this ray's forward outputs
    scalar_t opacity, scalar_t depth,
    const scalar_t* __restrict__ sigmas,    // [S]
    const scalar_t* __restrict__ rgbs,      // [S, 3]
    const scalar_t* __restrict__ t_starts,  // [S]
    const scalar_t* __restrict__ t_ends,    // [S]
    scalar_t* __restrict__ v_sigmas,        // [S]
    scalar_t* __restrict__ v_rgbs) {        // [S, 3]
  const double gr = v_rgb[0], gg = v_rgb[1], gb = v_rgb[2], go = v_opacity, gz = v_depth;
  const double total = gr * rgb[0] + gg * rgb[1] + gb * rgb[2] + go * opacity + gz * depth;
  double transmittance = 1.0, prefix = 0.0;
  scalar_t alpha[kBlock], transparency[kBlock];
  for (int64_t base = begin; base < end; base += kBlock) {
    const int m = static_cast<int>(end - base < kBlock ? end - base : kBlock);
    opacity_block<scalar_t>(m, sigmas + base, t_starts + base, t_ends + base, alpha, transparency);
    for (int j = 0; j < m; ++j) {
      const int64_t i = base + j;
      const double t0 = t_starts[i], t1 = t_ends[i];
      const double weight = transmittance * alpha[j];
      const double next_transmittance = transmittance * transparency[j];
      const double per_weight = gr * rgbs[3 * i + 0] + gg * rgbs[3 * i + 1] + gb * rgbs[3 * i + 2] + go +
                                gz * 0.5 * (t0 + t1);
      prefix += weight * per_weight;
      const double v_tau = next_transmittance * per_weight - (total - prefix);
      v_sigmas[i] = static_cast<scalar_t>(v_tau * (t1 - t0));
      v_rgbs[3 * i + 0] = static_cast<scalar_t>(gr * weight);
      v_rgbs[3 * i + 1] = static_cast<scalar_t>(gg * weight);
      v_rgbs[3 * i + 2] = static_cast<scalar_t>(gb * weight);
      transmittance = next_transmittance;
    }
  }
}

// Where each ray's samples begin in a pack sorted by ray: sample i writes the offsets of the
// rays that begin at it (its own and the empty rays just before it), and the last sample
// those after it, so every offset is written once. An index outside [0, n_rays) is clamped,
// and `offsets` starts zeroed, so malformed input gives wrong offsets but never ones
// outside [0, n_samples] (the CPU entry point also rejects it).
template <typename index_t>
FASTJOINT_HOST_DEVICE inline void write_ray_offsets(int64_t i, int64_t n_samples, int64_t n_rays,
                                                    const index_t* __restrict__ ray_indices,
                                                    int64_t* __restrict__ offsets) {  // [n_rays + 1]
  const auto clamp = [n_rays](int64_t ray) { return ray < 0 ? int64_t(0) : (ray >= n_rays ? n_rays - 1 : ray); };
  const int64_t ray = clamp(ray_indices[i]);
  const int64_t previous = i == 0 ? int64_t(-1) : clamp(ray_indices[i - 1]);
  for (int64_t r = previous + 1; r <= ray; ++r) offsets[r] = i;
  if (i == n_samples - 1) {
    for (int64_t r = ray + 1; r <= n_rays; ++r) offsets[r] = n_samples;
  }
}

}  // namespace fastjoint

// Fused compositing on the CPU: rays in parallel (at::parallel_for), each ray one pass.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <atomic>
#include <string>
#include <tuple>

#include "checks.h"
#include "composite.h"

namespace fastjoint {
namespace {

// Rays per task: enough work per task to amortise scheduling on short rays.
constexpr int64_t kRaysPerTask = 256;

at::Tensor ray_offsets_cpu(const at::Tensor& ray_indices, int64_t n_rays) {
  check_ray_indices(ray_indices, n_rays);
  const int64_t n_samples = ray_indices.size(0);
  at::Tensor offsets = at::zeros({n_rays + 1}, ray_indices.options().dtype(at::kLong));
  if (n_samples == 0) return offsets;
  AT_DISPATCH_INDEX_TYPES(ray_indices.scalar_type(), "ray_offsets_cpu", [&] {
    const index_t* indices = ray_indices.data_ptr<index_t>();
    int64_t* offset = offsets.data_ptr<int64_t>();
    std::atomic<bool> malformed{false};
    at::parallel_for(0, n_samples, 4096, [&](int64_t first, int64_t last) {
      for (int64_t i = first; i < last; ++i) {
        if (indices[i] < 0 || indices[i] >= n_rays || (i > 0 && indices[i] < indices[i - 1])) malformed = true;
        write_ray_offsets<index_t>(i, n_samples, n_rays, indices, offset);
      }
    });
    TORCH_CHECK(!malformed, "ray_indices must be sorted and in [0, n_rays = " + std::to_string(n_rays) + ")");
  });
  return offsets;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> composite_forward_cpu(
    const at::Tensor& sigmas, const at::Tensor& rgbs, const at::Tensor& t_starts, const at::Tensor& t_ends,
    const at::Tensor& offsets) {
  check_samples(sigmas, rgbs, t_starts, t_ends, offsets);
  const int64_t n_rays = offsets.size(0) - 1;
  at::Tensor rgb = at::empty({n_rays, 3}, sigmas.options());
  at::Tensor opacity = at::empty({n_rays}, sigmas.options());
  at::Tensor depth = at::empty({n_rays}, sigmas.options());
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "composite_forward_cpu", [&] {
    const int64_t* offset = offsets.data_ptr<int64_t>();
    const scalar_t* sigma = sigmas.data_ptr<scalar_t>();
    const scalar_t* colour = rgbs.data_ptr<scalar_t>();
    const scalar_t* t0 = t_starts.data_ptr<scalar_t>();
    const scalar_t* t1 = t_ends.data_ptr<scalar_t>();
    scalar_t* rgb_out = rgb.data_ptr<scalar_t>();
    scalar_t* opacity_out = opacity.data_ptr<scalar_t>();
    scalar_t* depth_out = depth.data_ptr<scalar_t>();
    at::parallel_for(0, n_rays, kRaysPerTask, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) {
        composite_ray_forward<scalar_t>(offset[r], offset[r + 1], sigma, colour, t0, t1, rgb_out + 3 * r,
                                        opacity_out + r, depth_out + r);
      }
    });
  });
  return {rgb, opacity, depth};
}

std::tuple<at::Tensor, at::Tensor> composite_backward_cpu(
    const at::Tensor& v_rgb, const at::Tensor& v_opacity, const at::Tensor& v_depth, const at::Tensor& rgb,
    const at::Tensor& opacity, const at::Tensor& depth, const at::Tensor& sigmas, const at::Tensor& rgbs,
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& offsets) {
  check_samples(sigmas, rgbs, t_starts, t_ends, offsets);
  const int64_t n_rays = offsets.size(0) - 1;
  check_ray_gradients(v_rgb, v_opacity, v_depth, rgb, opacity, depth, sigmas, n_rays);
  at::Tensor v_sigmas = at::empty_like(sigmas);
  at::Tensor v_rgbs = at::empty_like(rgbs);
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "composite_backward_cpu", [&] {
    const int64_t* offset = offsets.data_ptr<int64_t>();
    const scalar_t* g_rgb = v_rgb.data_ptr<scalar_t>();
    const scalar_t* g_opacity = v_opacity.data_ptr<scalar_t>();
    const scalar_t* g_depth = v_depth.data_ptr<scalar_t>();
    const scalar_t* out_rgb = rgb.data_ptr<scalar_t>();
    const scalar_t* out_opacity = opacity.data_ptr<scalar_t>();
    const scalar_t* out_depth = depth.data_ptr<scalar_t>();
    const scalar_t* sigma = sigmas.data_ptr<scalar_t>();
    const scalar_t* colour = rgbs.data_ptr<scalar_t>();
    const scalar_t* t0 = t_starts.data_ptr<scalar_t>();
    const scalar_t* t1 = t_ends.data_ptr<scalar_t>();
    scalar_t* v_sigma = v_sigmas.data_ptr<scalar_t>();
    scalar_t* v_colour = v_rgbs.data_ptr<scalar_t>();
    at::parallel_for(0, n_rays, kRaysPerTask, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) {
        composite_ray_backward<scalar_t>(offset[r], offset[r + 1], g_rgb + 3 * r, g_opacity[r], g_depth[r],
                                         out_rgb + 3 * r, out_opacity[r], out_depth[r], sigma, colour, t0, t1,
                                         v_sigma, v_colour);
      }
    });
  });
  return {v_sigmas, v_rgbs};
}

}  // namespace
}  // namespace fastjoint

TORCH_LIBRARY_IMPL(fastjoint, CPU, m) {
  m.impl("ray_offsets", &fastjoint::ray_offsets_cpu);
  m.impl("composite_forward", &fastjoint::composite_forward_cpu);
  m.impl("composite_backward", &fastjoint::composite_backward_cpu);
}

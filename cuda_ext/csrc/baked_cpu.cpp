// Marching a baked scene on the CPU: blocks of rays in parallel (at::parallel_for), each block
// collecting its kept samples, then one copy into the packed outputs.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "baked.h"
#include "checks.h"

namespace fastjoint {
namespace {

constexpr int64_t kRaysPerBlock = 512;

struct Kept {
  std::vector<int64_t> rays;
  std::vector<float> weights;
  std::vector<float> features;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> baked_march_cpu(
    const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& aabbs, const at::Tensor& index,
    const at::Tensor& bricks, const at::Tensor& bounds, const at::Tensor& blocks, int64_t factor, double step_size,
    double min_transmittance, double min_weight) {
  const BakedScene scene = checked_baked_scene(rays_o, rays_d, aabbs, index, bricks, bounds, blocks, factor);
  const int64_t n_rays = rays_o.size(0);
  const int features = scene.channels - 1;
  at::Tensor opacity = at::zeros({n_rays}, rays_o.options());
  at::Tensor depth = at::zeros({n_rays}, rays_o.options());
  const float* origins = rays_o.data_ptr<float>();
  const float* directions = rays_d.data_ptr<float>();
  float* opacity_out = opacity.data_ptr<float>();
  float* depth_out = depth.data_ptr<float>();
  const float step = static_cast<float>(step_size), min_t = static_cast<float>(min_transmittance),
              min_w = static_cast<float>(min_weight);
  const int64_t n_blocks = (n_rays + kRaysPerBlock - 1) / kRaysPerBlock;
  std::vector<Kept> kept(n_blocks);
  at::parallel_for(0, n_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      Kept& mine = kept[block];
      const int64_t end = std::min(n_rays, (block + 1) * kRaysPerBlock);
      for (int64_t r = block * kRaysPerBlock; r < end; ++r) {
        const BakedRay ray = march_baked_ray(origins + 3 * r, directions + 3 * r, scene, step, min_t, min_w,
                                             [&](float weight, const float* feature) {
                                               mine.rays.push_back(r);
                                               mine.weights.push_back(weight);
                                               mine.features.insert(mine.features.end(), feature, feature + features);
                                             });
        opacity_out[r] = ray.opacity;
        depth_out[r] = ray.depth;
      }
    }
  });
  std::vector<int64_t> starts(n_blocks + 1, 0);
  for (int64_t block = 0; block < n_blocks; ++block) starts[block + 1] = starts[block] + kept[block].rays.size();
  const int64_t total = starts[n_blocks];
  at::Tensor ray_indices = at::empty({total}, rays_o.options().dtype(at::kLong));
  at::Tensor weights = at::empty({total}, rays_o.options());
  at::Tensor feature_out = at::empty({total, features}, rays_o.options());
  int64_t* ray_ptr = ray_indices.data_ptr<int64_t>();
  float* weight_ptr = weights.data_ptr<float>();
  float* feature_ptr = feature_out.data_ptr<float>();
  at::parallel_for(0, n_blocks, 1, [&](int64_t first, int64_t last) {
    for (int64_t block = first; block < last; ++block) {
      const Kept& mine = kept[block];
      std::copy(mine.rays.begin(), mine.rays.end(), ray_ptr + starts[block]);
      std::copy(mine.weights.begin(), mine.weights.end(), weight_ptr + starts[block]);
      std::copy(mine.features.begin(), mine.features.end(), feature_ptr + starts[block] * features);
    }
  });
  return {ray_indices, weights, feature_out, opacity, depth};
}

}  // namespace
}  // namespace fastjoint

TORCH_LIBRARY_IMPL(fastjoint, CPU, m) { m.impl("baked_march", &fastjoint::baked_march_cpu); }

// Marching a baked scene on CUDA: one thread per ray, in two passes (count the kept samples
// of every ray, then write them where a prefix sum of the counts says).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "baked.h"
#include "checks.h"

namespace fastjoint {
namespace {

constexpr int kThreads = 128;

__global__ void baked_count_kernel(int64_t n_rays, const float* __restrict__ origins,
                                   const float* __restrict__ directions, BakedScene scene, float step, float min_t,
                                   float min_w, int64_t* __restrict__ counts, float* __restrict__ opacity,
                                   float* __restrict__ depth) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < n_rays;
       r += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t count = 0;
    const BakedRay ray = march_baked_ray(origins + 3 * r, directions + 3 * r, scene, step, min_t, min_w,
                                         [&](float, const float*) { ++count; });
    counts[r] = count;
    opacity[r] = ray.opacity;
    depth[r] = ray.depth;
  }
}

__global__ void baked_write_kernel(int64_t n_rays, const float* __restrict__ origins,
                                   const float* __restrict__ directions, BakedScene scene, float step, float min_t,
                                   float min_w, const int64_t* __restrict__ ends, int64_t* __restrict__ ray_indices,
                                   float* __restrict__ weights, float* __restrict__ features) {
  const int n_features = scene.channels - 1;
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < n_rays;
       r += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    int64_t at = r == 0 ? 0 : ends[r - 1];
    march_baked_ray(origins + 3 * r, directions + 3 * r, scene, step, min_t, min_w,
                    [&](float weight, const float* feature) {
                      ray_indices[at] = r;
                      weights[at] = weight;
                      for (int c = 0; c < n_features; ++c) features[at * n_features + c] = feature[c];
                      ++at;
                    });
  }
}

int blocks_for(int64_t n_items) {
  const int64_t wanted = (n_items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 65535)));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> baked_march_cuda(
    const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& aabbs, const at::Tensor& index,
    const at::Tensor& bricks, const at::Tensor& bounds, const at::Tensor& blocks, int64_t factor, double step_size,
    double min_transmittance, double min_weight) {
  const BakedScene scene = checked_baked_scene(rays_o, rays_d, aabbs, index, bricks, bounds, blocks, factor);
  const c10::cuda::CUDAGuard guard(rays_o.device());
  const int64_t n_rays = rays_o.size(0);
  const int channels = scene.channels;
  at::Tensor opacity = at::zeros({n_rays}, rays_o.options());
  at::Tensor depth = at::zeros({n_rays}, rays_o.options());
  at::Tensor counts = at::zeros({n_rays}, rays_o.options().dtype(at::kLong));
  const float step = static_cast<float>(step_size), min_t = static_cast<float>(min_transmittance),
              min_w = static_cast<float>(min_weight);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (n_rays > 0) {
    baked_count_kernel<<<blocks_for(n_rays), kThreads, 0, stream>>>(
        n_rays, rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), scene, step, min_t, min_w,
        counts.data_ptr<int64_t>(), opacity.data_ptr<float>(), depth.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor ends = counts.cumsum(0);
  const int64_t total = n_rays > 0 ? ends[n_rays - 1].item<int64_t>() : 0;
  at::Tensor ray_indices = at::empty({total}, rays_o.options().dtype(at::kLong));
  at::Tensor weights = at::empty({total}, rays_o.options());
  at::Tensor features = at::empty({total, channels - 1}, rays_o.options());
  if (total > 0) {
    baked_write_kernel<<<blocks_for(n_rays), kThreads, 0, stream>>>(
        n_rays, rays_o.data_ptr<float>(), rays_d.data_ptr<float>(), scene, step, min_t, min_w,
        ends.data_ptr<int64_t>(), ray_indices.data_ptr<int64_t>(), weights.data_ptr<float>(),
        features.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {ray_indices, weights, features, opacity, depth};
}

}  // namespace
}  // namespace fastjoint

TORCH_LIBRARY_IMPL(fastjoint, CUDA, m) { m.impl("baked_march", &fastjoint::baked_march_cuda); }

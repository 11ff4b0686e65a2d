// Fused compositing on CUDA: one thread per ray, each ray one pass front to back.
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>

#include "checks.h"
#include "composite.h"

namespace fastjoint {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void composite_forward_kernel(int64_t n_rays, const int64_t* __restrict__ offsets,
                                         const scalar_t* __restrict__ sigmas, const scalar_t* __restrict__ rgbs,
                                         const scalar_t* __restrict__ t_starts, const scalar_t* __restrict__ t_ends,
                                         scalar_t* __restrict__ rgb, scalar_t* __restrict__ opacity,
                                         scalar_t* __restrict__ depth) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < n_rays;
       r += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    composite_ray_forward<scalar_t>(offsets[r], offsets[r + 1], sigmas, rgbs, t_starts, t_ends, rgb + 3 * r,
                                    opacity + r, depth + r);
  }
}

template <typename scalar_t>
__global__ void composite_backward_kernel(int64_t n_rays, const int64_t* __restrict__ offsets,
                                          const scalar_t* __restrict__ v_rgb, const scalar_t* __restrict__ v_opacity,
                                          const scalar_t* __restrict__ v_depth, const scalar_t* __restrict__ rgb,
                                          const scalar_t* __restrict__ opacity, const scalar_t* __restrict__ depth,
                                          const scalar_t* __restrict__ sigmas, const scalar_t* __restrict__ rgbs,
                                          const scalar_t* __restrict__ t_starts, const scalar_t* __restrict__ t_ends,
                                          scalar_t* __restrict__ v_sigmas, scalar_t* __restrict__ v_rgbs) {
  for (int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; r < n_rays;
       r += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    composite_ray_backward<scalar_t>(offsets[r], offsets[r + 1], v_rgb + 3 * r, v_opacity[r], v_depth[r],
                                     rgb + 3 * r, opacity[r], depth[r], sigmas, rgbs, t_starts, t_ends, v_sigmas,
                                     v_rgbs);
  }
}

template <typename index_t>
__global__ void ray_offsets_kernel(int64_t n_samples, int64_t n_rays, const index_t* __restrict__ ray_indices,
                                   int64_t* __restrict__ offsets) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n_samples;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    write_ray_offsets<index_t>(i, n_samples, n_rays, ray_indices, offsets);
  }
}

int blocks_for(int64_t n_items) {
  const int64_t wanted = (n_items + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(wanted, 65535)));
}

at::Tensor ray_offsets_cuda(const at::Tensor& ray_indices, int64_t n_rays) {
  check_ray_indices(ray_indices, n_rays);
  const c10::cuda::CUDAGuard guard(ray_indices.device());
  const int64_t n_samples = ray_indices.size(0);
  at::Tensor offsets = at::zeros({n_rays + 1}, ray_indices.options().dtype(at::kLong));
  if (n_samples == 0) return offsets;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_INDEX_TYPES(ray_indices.scalar_type(), "ray_offsets_cuda", [&] {
    ray_offsets_kernel<index_t><<<blocks_for(n_samples), kThreads, 0, stream>>>(
        n_samples, n_rays, ray_indices.data_ptr<index_t>(), offsets.data_ptr<int64_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return offsets;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> composite_forward_cuda(
    const at::Tensor& sigmas, const at::Tensor& rgbs, const at::Tensor& t_starts, const at::Tensor& t_ends,
    const at::Tensor& offsets) {
  check_samples(sigmas, rgbs, t_starts, t_ends, offsets);
  const c10::cuda::CUDAGuard guard(sigmas.device());
  const int64_t n_rays = offsets.size(0) - 1;
  at::Tensor rgb = at::empty({n_rays, 3}, sigmas.options());
  at::Tensor opacity = at::empty({n_rays}, sigmas.options());
  at::Tensor depth = at::empty({n_rays}, sigmas.options());
  if (n_rays == 0) return {rgb, opacity, depth};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "composite_forward_cuda", [&] {
    composite_forward_kernel<scalar_t><<<blocks_for(n_rays), kThreads, 0, stream>>>(
        n_rays, offsets.data_ptr<int64_t>(), sigmas.data_ptr<scalar_t>(), rgbs.data_ptr<scalar_t>(),
        t_starts.data_ptr<scalar_t>(), t_ends.data_ptr<scalar_t>(), rgb.data_ptr<scalar_t>(),
        opacity.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {rgb, opacity, depth};
}

std::tuple<at::Tensor, at::Tensor> composite_backward_cuda(
    const at::Tensor& v_rgb, const at::Tensor& v_opacity, const at::Tensor& v_depth, const at::Tensor& rgb,
    const at::Tensor& opacity, const at::Tensor& depth, const at::Tensor& sigmas, const at::Tensor& rgbs,
    const at::Tensor& t_starts, const at::Tensor& t_ends, const at::Tensor& offsets) {
  check_samples(sigmas, rgbs, t_starts, t_ends, offsets);
  const int64_t n_rays = offsets.size(0) - 1;
  check_ray_gradients(v_rgb, v_opacity, v_depth, rgb, opacity, depth, sigmas, n_rays);
  const c10::cuda::CUDAGuard guard(sigmas.device());
  at::Tensor v_sigmas = at::empty_like(sigmas);
  at::Tensor v_rgbs = at::empty_like(rgbs);
  if (n_rays == 0) return {v_sigmas, v_rgbs};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigmas.scalar_type(), "composite_backward_cuda", [&] {
    composite_backward_kernel<scalar_t><<<blocks_for(n_rays), kThreads, 0, stream>>>(
        n_rays, offsets.data_ptr<int64_t>(), v_rgb.data_ptr<scalar_t>(), v_opacity.data_ptr<scalar_t>(),
        v_depth.data_ptr<scalar_t>(), rgb.data_ptr<scalar_t>(), opacity.data_ptr<scalar_t>(),
        depth.data_ptr<scalar_t>(), sigmas.data_ptr<scalar_t>(), rgbs.data_ptr<scalar_t>(),
        t_starts.data_ptr<scalar_t>(), t_ends.data_ptr<scalar_t>(), v_sigmas.data_ptr<scalar_t>(),
        v_rgbs.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {v_sigmas, v_rgbs};
}

}  // namespace
}  // namespace fastjoint

TORCH_LIBRARY_IMPL(fastjoint, CUDA, m) {
  m.impl("ray_offsets", &fastjoint::ray_offsets_cuda);
  m.impl("composite_forward", &fastjoint::composite_forward_cuda);
  m.impl("composite_backward", &fastjoint::composite_backward_cuda);
}

// The hash-grid encoding on CUDA: a grid over points x levels (blockIdx.y is the level), so
// the threads of a block read one level's table, which stays in cache. Backward scatters into
// the table with atomicAdd (its order, hence the last bits, may vary from run to run).
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>

#include "checks.h"
#include "hashgrid.h"

namespace fastjoint {
namespace {

constexpr int kThreads = 256;

template <typename scalar_t>
__global__ void hashgrid_forward_kernel(int64_t n_points, int64_t n_features, GridLevels levels,
                                        const float* __restrict__ points, const scalar_t* __restrict__ table,
                                        scalar_t* __restrict__ encoded) {
  const int l = blockIdx.y;
  const GridLevel level = levels.level[l];
  const int64_t stride = static_cast<int64_t>(levels.n_levels) * n_features;
  for (int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; n < n_points;
       n += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    Corners corners;
    level_corners(points + 3 * n, level, corners);
    scalar_t* out = encoded + n * stride + l * n_features;
    if (n_features == 2) {
      interpolate2<scalar_t>(corners, table, out);
    } else {
      interpolate<scalar_t>(corners, table, n_features, out);
    }
  }
}

template <typename scalar_t>
__global__ void hashgrid_backward_kernel(int64_t n_points, int64_t n_features, GridLevels levels,
                                         const float* __restrict__ points, const scalar_t* __restrict__ v_out,
                                         scalar_t* __restrict__ v_table) {
  const int l = blockIdx.y;
  const GridLevel level = levels.level[l];
  const int64_t stride = static_cast<int64_t>(levels.n_levels) * n_features;
  for (int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; n < n_points;
       n += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    Corners corners;
    level_corners(points + 3 * n, level, corners);
    const scalar_t* v = v_out + n * stride + l * n_features;
    for (int c = 0; c < 8; ++c) {
      const scalar_t w = static_cast<scalar_t>(corners.weight[c]);
      for (int64_t f = 0; f < n_features; ++f) atomicAdd(v_table + corners.row[c] * n_features + f, w * v[f]);
    }
  }
}

// The gradient in x: one thread per point over every level (each writes its own v_x row, no atomics).
template <typename scalar_t>
__global__ void hashgrid_backward_x_kernel(int64_t n_points, int64_t n_features, GridLevels levels,
                                           const float* __restrict__ points, const scalar_t* __restrict__ table,
                                           const scalar_t* __restrict__ v_out, scalar_t* __restrict__ v_x) {
  const int64_t stride = static_cast<int64_t>(levels.n_levels) * n_features;
  for (int64_t n = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; n < n_points;
       n += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    Corners corners;
    for (int l = 0; l < levels.n_levels; ++l) {
      level_corners(points + 3 * n, levels.level[l], corners);
      level_input_gradient<scalar_t>(levels.level[l], corners, table, n_features,
                                     v_out + n * stride + l * n_features, v_x + 3 * n);
    }
  }
}

dim3 blocks_for(int64_t n_points, int n_levels) {
  const int64_t wanted = (n_points + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(wanted, 65535))),
              static_cast<unsigned>(n_levels));
}

int64_t rows_of(at::IntArrayRef sizes) { return std::accumulate(sizes.begin(), sizes.end(), int64_t(0)); }

at::Tensor hashgrid_forward_cuda(const at::Tensor& x, const at::Tensor& table, at::ArrayRef<double> scales,
                                 at::IntArrayRef resolutions, at::IntArrayRef sizes, at::IntArrayRef offsets,
                                 at::IntArrayRef hashed) {
  check_grid_points(x);
  check_grid_table(table, x);
  const GridLevels levels = grid_levels(scales, resolutions, sizes, offsets, hashed, table.size(0));
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n_points = x.size(0), n_features = table.size(1);
  at::Tensor encoded = at::empty({n_points, levels.n_levels * n_features}, table.options());
  if (n_points == 0) return encoded;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hashgrid_forward_cuda", [&] {
    hashgrid_forward_kernel<scalar_t><<<blocks_for(n_points, levels.n_levels), kThreads, 0, stream>>>(
        n_points, n_features, levels, x.data_ptr<float>(), table.data_ptr<scalar_t>(), encoded.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return encoded;
}

at::Tensor hashgrid_backward_cuda(const at::Tensor& v_out, const at::Tensor& x, at::ArrayRef<double> scales,
                                  at::IntArrayRef resolutions, at::IntArrayRef sizes, at::IntArrayRef offsets,
                                  at::IntArrayRef hashed) {
  check_grid_points(x);
  const GridLevels levels = grid_levels(scales, resolutions, sizes, offsets, hashed, rows_of(sizes));
  const int64_t n_features = check_grid_gradient(v_out, x, levels.n_levels);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n_points = x.size(0);
  at::Tensor v_table = at::zeros({rows_of(sizes), n_features}, v_out.options());
  if (n_points == 0) return v_table;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(v_out.scalar_type(), "hashgrid_backward_cuda", [&] {
    hashgrid_backward_kernel<scalar_t><<<blocks_for(n_points, levels.n_levels), kThreads, 0, stream>>>(
        n_points, n_features, levels, x.data_ptr<float>(), v_out.data_ptr<scalar_t>(), v_table.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return v_table;
}

at::Tensor hashgrid_backward_x_cuda(const at::Tensor& v_out, const at::Tensor& x, const at::Tensor& table,
                                    at::ArrayRef<double> scales, at::IntArrayRef resolutions, at::IntArrayRef sizes,
                                    at::IntArrayRef offsets, at::IntArrayRef hashed) {
  check_grid_points(x);
  const GridLevels levels = grid_levels(scales, resolutions, sizes, offsets, hashed, table.size(0));
  const int64_t n_features = check_grid_point_gradient(v_out, x, table, levels.n_levels);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n_points = x.size(0);
  at::Tensor v_x = at::zeros({n_points, 3}, table.options());
  if (n_points == 0) return v_x;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hashgrid_backward_x_cuda", [&] {
    hashgrid_backward_x_kernel<scalar_t><<<blocks_for(n_points, 1), kThreads, 0, stream>>>(
        n_points, n_features, levels, x.data_ptr<float>(), table.data_ptr<scalar_t>(), v_out.data_ptr<scalar_t>(),
        v_x.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return v_x;
}

}  // namespace
}  // namespace fastjoint

TORCH_LIBRARY_IMPL(fastjoint, CUDA, m) {
  m.impl("hashgrid_forward", &fastjoint::hashgrid_forward_cuda);
  m.impl("hashgrid_backward", &fastjoint::hashgrid_backward_cuda);
  m.impl("hashgrid_backward_x", &fastjoint::hashgrid_backward_x_cuda);
}

// The hash-grid encoding on the CPU. Forward: points in parallel (at::parallel_for), every
// level of a block of points in one pass. Backward: levels in parallel, each level's points in
// order, so every table row is summed by one thread in one fixed order: the gradient is the
// same bit for bit whatever the number of threads (resume stays exact), with no atomics and
// no per-thread copies of the table.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <numeric>
#include <string>

#include "checks.h"
#include "hashgrid.h"

namespace fastjoint {
namespace {

// Points per task: a task's levels touch a few hundred kilobytes of table, amortising the
// scheduling many times over.
constexpr int64_t kPointsPerTask = 256;

int64_t rows_of(at::IntArrayRef sizes) { return std::accumulate(sizes.begin(), sizes.end(), int64_t(0)); }

at::Tensor hashgrid_forward_cpu(const at::Tensor& x, const at::Tensor& table, at::ArrayRef<double> scales,
                                at::IntArrayRef resolutions, at::IntArrayRef sizes, at::IntArrayRef offsets,
                                at::IntArrayRef hashed) {
  check_grid_points(x);
  check_grid_table(table, x);
  const GridLevels levels = grid_levels(scales, resolutions, sizes, offsets, hashed, table.size(0));
  const int64_t n_points = x.size(0), n_features = table.size(1), n_levels = levels.n_levels;
  at::Tensor encoded = at::empty({n_points, n_levels * n_features}, table.options());
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hashgrid_forward_cpu", [&] {
    const float* points = x.data_ptr<float>();
    const scalar_t* rows = table.data_ptr<scalar_t>();
    scalar_t* out = encoded.data_ptr<scalar_t>();
    const int64_t stride = n_levels * n_features;
    // Within a task, level by level over its points: one level's rows stay in cache.
    at::parallel_for(0, n_points, kPointsPerTask, [&](int64_t first, int64_t last) {
      Corners corners;
      for (int64_t l = 0; l < n_levels; ++l) {
        const GridLevel& level = levels.level[l];
        for (int64_t n = first; n < last; ++n) {
          level_corners(points + 3 * n, level, corners);
          if (n_features == 2) {
            interpolate2<scalar_t>(corners, rows, out + n * stride + 2 * l);
          } else {
            interpolate<scalar_t>(corners, rows, n_features, out + n * stride + l * n_features);
          }
        }
      }
    });
  });
  return encoded;
}

at::Tensor hashgrid_backward_cpu(const at::Tensor& v_out, const at::Tensor& x, at::ArrayRef<double> scales,
                                 at::IntArrayRef resolutions, at::IntArrayRef sizes, at::IntArrayRef offsets,
                                 at::IntArrayRef hashed) {
  check_grid_points(x);
  const GridLevels levels = grid_levels(scales, resolutions, sizes, offsets, hashed, rows_of(sizes));
  const int64_t n_levels = levels.n_levels;
  const int64_t n_features = check_grid_gradient(v_out, x, n_levels);
  const int64_t n_points = x.size(0);
  // Each level's task zeroes its own rows: in parallel, and warm in that thread's cache.
  at::Tensor v_table = at::empty({rows_of(sizes), n_features}, v_out.options());
  AT_DISPATCH_FLOATING_TYPES(v_out.scalar_type(), "hashgrid_backward_cpu", [&] {
    const float* points = x.data_ptr<float>();
    const scalar_t* upstream = v_out.data_ptr<scalar_t>();
    scalar_t* grad = v_table.data_ptr<scalar_t>();
    const int64_t stride = n_levels * n_features;
    // A level per task: its rows are its own, so no two threads write one row.
    at::parallel_for(0, n_levels, 1, [&](int64_t first, int64_t last) {
      Corners corners;
      for (int64_t l = first; l < last; ++l) {
        const GridLevel& level = levels.level[l];
        std::fill(grad + level.offset * n_features, grad + (level.offset + level.size) * n_features, scalar_t(0));
        for (int64_t n = 0; n < n_points; ++n) {
          level_corners(points + 3 * n, level, corners);
          const scalar_t* v = upstream + n * stride + l * n_features;
          if (n_features == 2) {
            const scalar_t v0 = v[0], v1 = v[1];
            for (int c = 0; c < 8; ++c) {
              const scalar_t w = static_cast<scalar_t>(corners.weight[c]);
              grad[2 * corners.row[c]] += w * v0;
              grad[2 * corners.row[c] + 1] += w * v1;
            }
          } else {
            for (int c = 0; c < 8; ++c) {
              const scalar_t w = static_cast<scalar_t>(corners.weight[c]);
              for (int64_t f = 0; f < n_features; ++f) grad[corners.row[c] * n_features + f] += w * v[f];
            }
          }
        }
      }
    });
  });
  return v_table;
}

at::Tensor hashgrid_backward_x_cpu(const at::Tensor& v_out, const at::Tensor& x, const at::Tensor& table,
                                   at::ArrayRef<double> scales, at::IntArrayRef resolutions, at::IntArrayRef sizes,
                                   at::IntArrayRef offsets, at::IntArrayRef hashed) {
  check_grid_points(x);
  const GridLevels levels = grid_levels(scales, resolutions, sizes, offsets, hashed, table.size(0));
  const int64_t n_levels = levels.n_levels;
  const int64_t n_features = check_grid_point_gradient(v_out, x, table, n_levels);
  const int64_t n_points = x.size(0);
  at::Tensor v_x = at::zeros({n_points, 3}, table.options());
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "hashgrid_backward_x_cpu", [&] {
    const float* points = x.data_ptr<float>();
    const scalar_t* rows = table.data_ptr<scalar_t>();
    const scalar_t* upstream = v_out.data_ptr<scalar_t>();
    scalar_t* grad = v_x.data_ptr<scalar_t>();
    const int64_t stride = n_levels * n_features;
    // Points in parallel: each writes its own row, so the sums run in one order whatever the threads.
    at::parallel_for(0, n_points, kPointsPerTask, [&](int64_t first, int64_t last) {
      Corners corners;
      for (int64_t n = first; n < last; ++n) {
        for (int64_t l = 0; l < n_levels; ++l) {
          level_corners(points + 3 * n, levels.level[l], corners);
          level_input_gradient<scalar_t>(levels.level[l], corners, rows, n_features,
                                         upstream + n * stride + l * n_features, grad + 3 * n);
        }
      }
    });
  });
  return v_x;
}

}  // namespace
}  // namespace fastjoint

TORCH_LIBRARY_IMPL(fastjoint, CPU, m) {
  m.impl("hashgrid_forward", &fastjoint::hashgrid_forward_cpu);
  m.impl("hashgrid_backward", &fastjoint::hashgrid_backward_cpu);
  m.impl("hashgrid_backward_x", &fastjoint::hashgrid_backward_x_cpu);
}

// Input checks shared by the CPU and CUDA entry points. The Python wrapper
// (fastjoint/ops/composite.py) already validates and makes inputs contiguous; these guard
// the op when it is called directly through torch.ops.fastjoint.
//
// Messages are built from strings only (std::to_string, c10::toString, Device::str): on a
// machine whose compiler differs from the one that built torch, formatting a number through
// an std::ostream inside an extension crashed (seen with torch 2.11+cu130 and g++ 13.3).
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "baked.h"

namespace fastjoint {

inline std::string shape_of(const at::Tensor& t) {
  std::string text = "[";
  for (int64_t d = 0; d < t.dim(); ++d) text += (d ? ", " : "") + std::to_string(t.size(d));
  return text + "]";
}

inline void check_same(const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.is_contiguous(), std::string("composite expects contiguous tensors"));
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), std::string("expected ") + c10::toString(like.scalar_type()) +
                                                         ", got " + c10::toString(t.scalar_type()));
  TORCH_CHECK(t.device() == like.device(), "expected a tensor on " + like.device().str() + ", got " + t.device().str());
}

inline void check_ray_indices(const at::Tensor& ray_indices, int64_t n_rays) {
  TORCH_CHECK(ray_indices.dim() == 1, "ray_indices must be [S], got " + shape_of(ray_indices));
  TORCH_CHECK(ray_indices.scalar_type() == at::kInt || ray_indices.scalar_type() == at::kLong,
              std::string("ray_indices must be int32 or int64, got ") + c10::toString(ray_indices.scalar_type()));
  TORCH_CHECK(ray_indices.is_contiguous(), std::string("ray_indices must be contiguous"));
  TORCH_CHECK(n_rays >= 0, "n_rays must not be negative, got " + std::to_string(n_rays));
  TORCH_CHECK(n_rays > 0 || ray_indices.size(0) == 0, std::string("samples given for n_rays = 0"));
}

inline void check_samples(const at::Tensor& sigmas, const at::Tensor& rgbs, const at::Tensor& t_starts,
                          const at::Tensor& t_ends, const at::Tensor& offsets) {
  TORCH_CHECK(sigmas.dim() == 1, "sigmas must be [S], got " + shape_of(sigmas));
  const int64_t n = sigmas.size(0);
  TORCH_CHECK(rgbs.dim() == 2 && rgbs.size(0) == n && rgbs.size(1) == 3, "rgbs must be [S, 3], got " + shape_of(rgbs));
  TORCH_CHECK(t_starts.sizes() == sigmas.sizes() && t_ends.sizes() == sigmas.sizes(),
              "t_starts and t_ends must be [S] like sigmas, got " + shape_of(t_starts) + " and " + shape_of(t_ends));
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) >= 1, "offsets must be [n_rays + 1], got " + shape_of(offsets));
  TORCH_CHECK(offsets.scalar_type() == at::kLong,
              std::string("offsets must be int64, got ") + c10::toString(offsets.scalar_type()));
  TORCH_CHECK(offsets.is_contiguous(), std::string("offsets must be contiguous"));
  TORCH_CHECK(offsets.device() == sigmas.device(), "offsets must be on " + sigmas.device().str());
  for (const at::Tensor* t : {&sigmas, &rgbs, &t_starts, &t_ends}) check_same(*t, sigmas);
}

inline void check_ray_gradients(const at::Tensor& v_rgb, const at::Tensor& v_opacity, const at::Tensor& v_depth,
                                const at::Tensor& rgb, const at::Tensor& opacity, const at::Tensor& depth,
                                const at::Tensor& sigmas, int64_t n_rays) {
  for (const at::Tensor* t : {&v_rgb, &rgb}) {
    TORCH_CHECK(t->dim() == 2 && t->size(0) == n_rays && t->size(1) == 3,
                "per-ray colours must be [n_rays, 3], got " + shape_of(*t));
  }
  for (const at::Tensor* t : {&v_opacity, &v_depth, &opacity, &depth}) {
    TORCH_CHECK(t->dim() == 1 && t->size(0) == n_rays, "per-ray values must be [n_rays], got " + shape_of(*t));
  }
  for (const at::Tensor* t : {&v_rgb, &v_opacity, &v_depth, &rgb, &opacity, &depth}) check_same(*t, sigmas);
}

}  // namespace fastjoint

// --- the hash grid ----------------------------------------------------------------------

#include "hashgrid.h"

namespace fastjoint {

// The layout's per-level lists (fastjoint.ops.hashgrid.grid_layout) checked and packed for the
// kernels; `n_rows` is the table's row count, which the levels must tile exactly.
inline GridLevels grid_levels(at::ArrayRef<double> scales, at::IntArrayRef resolutions, at::IntArrayRef sizes,
                              at::IntArrayRef offsets, at::IntArrayRef hashed, int64_t n_rows) {
  const int64_t n = static_cast<int64_t>(scales.size());
  TORCH_CHECK(n >= 1 && n <= kMaxGridLevels,
              "a hash grid has 1 to " + std::to_string(kMaxGridLevels) + " levels, got " + std::to_string(n));
  TORCH_CHECK(static_cast<int64_t>(resolutions.size()) == n && static_cast<int64_t>(sizes.size()) == n &&
                  static_cast<int64_t>(offsets.size()) == n && static_cast<int64_t>(hashed.size()) == n,
              "scales, resolutions, sizes, offsets and hashed must have one entry per level (" + std::to_string(n) +
                  ")");
  GridLevels levels{};
  levels.n_levels = static_cast<int>(n);
  int64_t next = 0;
  for (int64_t l = 0; l < n; ++l) {
    const std::string which = "level " + std::to_string(l) + ": ";
    TORCH_CHECK(sizes[l] >= 1, which + "size must be positive, got " + std::to_string(sizes[l]));
    TORCH_CHECK(resolutions[l] >= 1, which + "resolution must be positive, got " + std::to_string(resolutions[l]));
    TORCH_CHECK(offsets[l] == next, which + "offset must be " + std::to_string(next) + " (levels tile the table), got " +
                                        std::to_string(offsets[l]));
    TORCH_CHECK(hashed[l] == 0 || hashed[l] == 1, which + "hashed must be 0 or 1, got " + std::to_string(hashed[l]));
    levels.level[l] = GridLevel{static_cast<float>(scales[l]), resolutions[l], sizes[l], offsets[l], hashed[l] == 1};
    next += sizes[l];
  }
  TORCH_CHECK(next == n_rows, "the levels hold " + std::to_string(next) + " rows but the table has " +
                                  std::to_string(n_rows));
  return levels;
}

inline void check_grid_points(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == 3, "x must be [N, 3], got " + shape_of(x));
  TORCH_CHECK(x.scalar_type() == at::kFloat, std::string("x must be float32, got ") + c10::toString(x.scalar_type()));
  TORCH_CHECK(x.is_contiguous(), std::string("x must be contiguous"));
}

inline void check_grid_table(const at::Tensor& table, const at::Tensor& x) {
  TORCH_CHECK(table.dim() == 2 && table.size(1) >= 1, "table must be [n_params, F], got " + shape_of(table));
  TORCH_CHECK(table.scalar_type() == at::kFloat || table.scalar_type() == at::kDouble,
              std::string("table must be float32 or float64, got ") + c10::toString(table.scalar_type()));
  TORCH_CHECK(table.is_contiguous(), std::string("table must be contiguous"));
  TORCH_CHECK(table.device() == x.device(), "table on " + table.device().str() + " but x on " + x.device().str());
}

// v_out [N, L * F] for x [N, 3]; returns F.
inline int64_t check_grid_gradient(const at::Tensor& v_out, const at::Tensor& x, int64_t n_levels) {
  TORCH_CHECK(v_out.dim() == 2 && v_out.size(0) == x.size(0) && v_out.size(1) >= n_levels &&
                  v_out.size(1) % n_levels == 0,
              "v_out must be [N, n_levels * F] with N = " + std::to_string(x.size(0)) + " and n_levels = " +
                  std::to_string(n_levels) + ", got " + shape_of(v_out));
  TORCH_CHECK(v_out.scalar_type() == at::kFloat || v_out.scalar_type() == at::kDouble,
              std::string("v_out must be float32 or float64, got ") + c10::toString(v_out.scalar_type()));
  TORCH_CHECK(v_out.is_contiguous(), std::string("v_out must be contiguous"));
  TORCH_CHECK(v_out.device() == x.device(), "v_out on " + v_out.device().str() + " but x on " + x.device().str());
  return v_out.size(1) / n_levels;
}

// hashgrid_backward_x's inputs: v_out [N, L * F] for x [N, 3] and table [n_params, F], one dtype; returns F.
inline int64_t check_grid_point_gradient(const at::Tensor& v_out, const at::Tensor& x, const at::Tensor& table,
                                         int64_t n_levels) {
  check_grid_table(table, x);
  const int64_t n_features = check_grid_gradient(v_out, x, n_levels);
  TORCH_CHECK(n_features == table.size(1), "v_out has " + std::to_string(n_features) +
                                               " features per level but the table " + std::to_string(table.size(1)));
  TORCH_CHECK(v_out.scalar_type() == table.scalar_type(), "v_out and table must have one dtype");
  return n_features;
}

}  // namespace fastjoint

namespace fastjoint {

// The inputs of baked_march (see baked.h): float32 rays, boxes and bricks, an int32 index.
inline BakedScene checked_baked_scene(const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& aabbs,
                        const at::Tensor& index, const at::Tensor& bricks, const at::Tensor& bounds,
                        const at::Tensor& blocks, int64_t factor) {
  TORCH_CHECK(rays_o.dim() == 2 && rays_o.size(1) == 3 && rays_d.sizes() == rays_o.sizes(),
              "rays_o and rays_d must be [n_rays, 3], got " + shape_of(rays_o) + " and " + shape_of(rays_d));
  TORCH_CHECK(index.dim() == 4 && index.scalar_type() == at::kInt,
              "index must be int32 [L, R, R, R], got " + shape_of(index) + " " + c10::toString(index.scalar_type()));
  TORCH_CHECK(index.size(0) >= 1 && index.size(0) <= 8, "baked_march takes 1 to 8 levels, got " + shape_of(index));
  TORCH_CHECK(aabbs.dim() == 2 && aabbs.size(0) == index.size(0) && aabbs.size(1) == 6,
              "aabbs must be [L, 6] for the index's levels, got " + shape_of(aabbs));
  TORCH_CHECK(bricks.dim() == 5 && bricks.size(1) >= 2 && bricks.size(1) == bricks.size(2) &&
                  bricks.size(2) == bricks.size(3) && bricks.size(4) >= 2 && bricks.size(4) <= kMaxChannels,
              "bricks must be [n, B + 1, B + 1, B + 1, C] with 2 <= C <= " + std::to_string(kMaxChannels) + ", got " +
                  shape_of(bricks));
  TORCH_CHECK(bounds.dim() == 1 && bounds.size(0) == 6, "bounds must be [6], got " + shape_of(bounds));
  TORCH_CHECK(factor == 4, "baked_march's kernel is built for factor 4, got " + std::to_string(factor));
  TORCH_CHECK(blocks.scalar_type() == at::kByte && blocks.dim() == 4 && blocks.size(0) == index.size(0),
              "blocks must be uint8 [L, R / factor, R / factor, R / factor], got " + shape_of(blocks));
  for (int a = 1; a < 4; ++a) {
    TORCH_CHECK(blocks.size(a) == (index.size(a) + factor - 1) / factor,
                "blocks must be ceil(R / factor) per axis: index " + shape_of(index) + ", blocks " + shape_of(blocks) +
                    ", factor " + std::to_string(factor));
  }
  for (const at::Tensor* t : {&rays_o, &rays_d, &aabbs, &bricks, &bounds}) {
    TORCH_CHECK(t->scalar_type() == at::kFloat, std::string("baked_march takes float32, got ") +
                                                    c10::toString(t->scalar_type()));
  }
  for (const at::Tensor* t : {&rays_o, &rays_d, &aabbs, &index, &bricks, &bounds, &blocks}) {
    TORCH_CHECK(t->is_contiguous(), std::string("baked_march expects contiguous tensors"));
    TORCH_CHECK(t->device() == rays_o.device(), "expected a tensor on " + rays_o.device().str());
  }
  // Pointers into the tensors: host memory for the CPU kernel, device memory for the CUDA one.
  return BakedScene{static_cast<int>(index.size(0)),
                    aabbs.data_ptr<float>(),
                    {static_cast<int>(index.size(1)), static_cast<int>(index.size(2)), static_cast<int>(index.size(3))},
                    index.data_ptr<int32_t>(),
                    bounds.data_ptr<float>(),
                    {static_cast<int>(blocks.size(1)), static_cast<int>(blocks.size(2)), static_cast<int>(blocks.size(3))},
                    blocks.data_ptr<uint8_t>(),
                    static_cast<int>(bricks.size(1)) - 1,
                    static_cast<int>(bricks.size(4)),
                    bricks.data_ptr<float>()};
}

}  // namespace fastjoint

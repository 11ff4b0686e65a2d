// Marching one ray through a baked scene, shared by the CPU and CUDA kernels so that the two
// cannot drift apart. The PyTorch reference is `_baked_march` in fastjoint/ops/_torch_impl.py.
//
// A baked scene (fastjoint/render/baked.py) is, per occupancy level l, a box aabbs[l] split
// into R^3 cells; index[l, x, y, z] is the brick of an occupied cell or -1. A brick holds
// (B + 1)^3 corners of B^3 sub-cells, each corner C values: the density's pre-activation s
// (sigma = exp(s)) and the style feature (C - 1 values). A sample's values are the trilinear
// interpolation of its sub-cell's corners.
//
// Steps are those of the exact renderer (`_march_rays` with the near plane at the origin):
// step k spans [k dt, (k + 1) dt], taken when its midpoint lies in the largest box and in an
// occupied cell of the finest level holding it. Along the ray, w_i = T_i (1 - exp(-sigma_i dt)),
// T_{i+1} = T_i exp(-sigma_i dt). The ray stops once T falls below `min_transmittance`; every
// sample it took adds to the opacity and depth, and the samples whose weight exceeds
// `min_weight` are emitted (weight and feature) for the caller to decode and composite.
#pragma once

#include <math.h>
#include <stdint.h>

#include "composite.h"

namespace fastjoint {

constexpr int kMaxLevels = 8;
constexpr int kBlockCells = 4;  // cells per block and axis of the skipping grid (fastjoint.ops.baked.BLOCK)
// A brick corner's values at most (fastjoint.ops.baked.MAX_CHANNELS): the density logit, 15 geometry
// features and the normal a decoder reads.
constexpr int kMaxChannels = 20;

struct BakedScene {
  int levels;
  const float* aabbs;    // [levels, 6]
  int res[3];            // cells per axis of every level
  const int32_t* index;  // [levels, res0, res1, res2]
  const float* bounds;   // [6] the box of every occupied cell: no sample lies outside it
  int blocks_res[3];     // blocks per axis: ceil(res / factor)
  const uint8_t* blocks; // [levels, blocks_res0, blocks_res1, blocks_res2]: each block's Chebyshev distance in
                         // blocks to the nearest block holding an occupied cell (0: it holds one); a block
                         // is kBlockCells cells per axis
  int sub;               // B, sub-cells per cell and axis
  int channels;          // C
  const float* bricks;   // [n_bricks, B + 1, B + 1, B + 1, C]
};

struct BakedRay {
  float opacity;
  float depth;
};

FASTJOINT_HOST_DEVICE inline void ray_box(const float* o, const float* d, const float* box, float* t_min,
                                          float* t_max, bool* hit) {
  // The same slab test as _ray_aabb: NaN (0 * inf) bounds are ignored.
  float lo = -INFINITY, hi = INFINITY;
  for (int a = 0; a < 3; ++a) {
    const float inv = 1.0f / d[a];
    const float t0 = (box[a] - o[a]) * inv;
    const float t1 = (box[3 + a] - o[a]) * inv;
    const float near = fminf(t0, t1), far = fmaxf(t0, t1);
    if (!isnan(near)) lo = fmaxf(lo, near);
    if (!isnan(far)) hi = fminf(hi, far);
  }
  *t_min = lo;
  *t_max = hi;
  *hit = hi > lo && hi > 0.0f;
}

// Marches one ray; `emit(weight, feature)` receives each kept sample, front to back.
template <typename Emit>
FASTJOINT_HOST_DEVICE inline BakedRay march_baked_ray(const float* o, const float* d, const BakedScene& scene,
                                                      float step, float min_transmittance, float min_weight,
                                                      Emit&& emit) {
  BakedRay out{0.0f, 0.0f};
  float lmin[kMaxLevels], lmax[kMaxLevels];
  bool lhit[kMaxLevels];
  for (int l = 0; l < scene.levels; ++l) ray_box(o, d, scene.aabbs + 6 * l, lmin + l, lmax + l, lhit + l);
  const int last = scene.levels - 1;
  if (!lhit[last]) return out;
  const float seg_start = fmaxf(lmin[last], 0.0f), seg_end = lmax[last];
  if (!(seg_start < seg_end)) return out;
  // Steps outside the occupied cells' box are all empty: march from a step before it to a step after.
  float b_min, b_max;
  bool b_hit;
  ray_box(o, d, scene.bounds, &b_min, &b_max, &b_hit);
  if (!b_hit) return out;
  const float from = fmaxf(seg_start, b_min), to = fminf(seg_end, b_max);
  if (!(from <= to)) return out;
  int64_t k = static_cast<int64_t>(fmaxf(ceilf(from / step - 0.5f) - 1.0f, 0.0f));
  const int64_t k_end = static_cast<int64_t>(fmaxf(ceilf(to / step - 0.5f) + 1.0f, 0.0f));
  const int b = scene.sub, c_count = scene.channels, side = b + 1;
  const int64_t brick_size = static_cast<int64_t>(side) * side * side * c_count;
  // Per level: cells per unit length and the cell width, per axis; per ray: 1 / d.
  float scale[kMaxLevels][3], width[kMaxLevels][3], inv_d[3];
  for (int l = 0; l < scene.levels; ++l) {
    for (int a = 0; a < 3; ++a) {
      const float extent = scene.aabbs[6 * l + 3 + a] - scene.aabbs[6 * l + a];
      scale[l][a] = static_cast<float>(scene.res[a]) / extent;
      width[l][a] = extent / static_cast<float>(scene.res[a]);
    }
  }
  for (int a = 0; a < 3; ++a) inv_d[a] = 1.0f / d[a];
  double transmittance = 1.0, opacity = 0.0, depth = 0.0;
  float values[kMaxChannels];
  while (k < k_end) {
    const float t_mid = (static_cast<float>(k) + 0.5f) * step;
    if (t_mid < seg_start || t_mid >= seg_end) {
      ++k;
      continue;
    }
    int level = last;
    for (int l = last - 1; l >= 0; --l) {
      if (lhit[l] && t_mid >= lmin[l] && t_mid < lmax[l]) level = l;
    }
    const float* box = scene.aabbs + 6 * level;
    float u[3];
    int cell[3];
    for (int a = 0; a < 3; ++a) {
      const float p = o[a] + d[a] * t_mid;
      u[a] = (p - box[a]) * scale[level][a];
      int c = static_cast<int>(floorf(u[a]));
      cell[a] = c < 0 ? 0 : (c >= scene.res[a] ? scene.res[a] - 1 : c);
    }
    const int64_t block_slot =
        ((static_cast<int64_t>(level) * scene.blocks_res[0] + cell[0] / kBlockCells) * scene.blocks_res[1] +
         cell[1] / kBlockCells) * scene.blocks_res[2] + cell[2] / kBlockCells;
    // The block's Chebyshev distance (in blocks) to the nearest block with an occupied cell: the
    // cube of blocks within distance - 1 of this one is empty, and the ray can leave it at once.
    const int distance = scene.blocks[block_slot];
    const int64_t slot =
        ((static_cast<int64_t>(level) * scene.res[0] + cell[0]) * scene.res[1] + cell[1]) * scene.res[2] + cell[2];
    const int32_t brick = distance > 0 ? -1 : scene.index[slot];
    if (brick < 0) {
      // Jump to the first step whose midpoint is past the empty cube (or the empty cell).
      float t_exit = INFINITY;
      for (int a = 0; a < 3; ++a) {
        if (d[a] == 0.0f) continue;
        int wall_cell;
        if (distance > 0) {
          const int block = cell[a] / kBlockCells;
          wall_cell = (d[a] > 0.0f ? block + distance : block - distance + 1) * kBlockCells;
        } else {
          wall_cell = cell[a] + (d[a] > 0.0f ? 1 : 0);
        }
        const float wall = box[a] + static_cast<float>(wall_cell) * width[level][a];
        t_exit = fminf(t_exit, (wall - o[a]) * inv_d[a]);
      }
      const int64_t next = static_cast<int64_t>(ceilf(t_exit / step - 0.5f));
      k = next > k ? next : k + 1;
      continue;
    }
    // Trilinear interpolation inside the brick.
    const float* corners = scene.bricks + static_cast<int64_t>(brick) * brick_size;
    int fine[3];
    float frac[3];
    for (int a = 0; a < 3; ++a) {
      const float f = (u[a] - static_cast<float>(cell[a])) * static_cast<float>(b);
      int i = static_cast<int>(floorf(f));
      i = i < 0 ? 0 : (i >= b ? b - 1 : i);
      fine[a] = i;
      const float r = f - static_cast<float>(i);
      frac[a] = r < 0.0f ? 0.0f : (r > 1.0f ? 1.0f : r);
    }
    for (int c = 0; c < c_count; ++c) values[c] = 0.0f;
    for (int corner = 0; corner < 8; ++corner) {
      const int dx = corner & 1, dy = (corner >> 1) & 1, dz = (corner >> 2) & 1;
      const float w = (dx ? frac[0] : 1.0f - frac[0]) * (dy ? frac[1] : 1.0f - frac[1]) * (dz ? frac[2] : 1.0f - frac[2]);
      const float* v = corners + (((fine[0] + dx) * side + (fine[1] + dy)) * side + (fine[2] + dz)) * c_count;
      for (int c = 0; c < c_count; ++c) values[c] += w * v[c];
    }
    const float tau = exp_of(values[0]) * step;
#ifdef __CUDA_ARCH__
    const float transparency = exp_of(-tau);
#else
    const float transparency = exp_nonpositive(-tau);
#endif
    const double weight = transmittance * opacity_of(tau, transparency);
    opacity += weight;
    depth += weight * t_mid;
    if (weight > min_weight) emit(static_cast<float>(weight), values + 1);
    transmittance *= transparency;
    if (transmittance < min_transmittance) break;
    ++k;
  }
  out.opacity = static_cast<float>(opacity);
  out.depth = static_cast<float>(depth);
  return out;
}

}  // namespace fastjoint

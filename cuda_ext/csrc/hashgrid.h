// The per-point, per-level arithmetic of the hash-grid encoding, shared by the CPU and CUDA
// kernels so that the two cannot drift apart. The PyTorch reference is
// fastjoint/ops/_torch_impl.py (_hashgrid_encode); the layout comes from
// fastjoint/ops/hashgrid.py (grid_layout), as tiny-cuda-nn derives it.
//
// For a point x in [0,1]^3 and a level of grid scale s: pos = x * s + 0.5 (in float32, the
// product and the sum rounded separately, as the reference does), the cell's low vertex
// floor(pos), the fractional part t = pos - floor(pos). Its 8 vertices c (bit 0 is x, bit 1
// y, bit 2 z) have trilinear weights w_c = w_z * w_y * w_x with w = t (high) or 1 - t (low),
// and rows offset + index(c) mod size, where index is x + y*res + z*res^2 on a dense level and
// tiny-cuda-nn's prime hash (x * 1) ^ (y * 2654435761) ^ (z * 805459861) in uint32 on a hashed
// one. The level's F features are sum_c w_c * table[row_c]. Their derivative in x_d is
// scale * sum_c (dw_c / dt_d) * table[row_c], where dw_c / dt_d is the other two axes' weights,
// signed + for a high vertex on axis d and - for a low one (floor has no derivative).
#pragma once

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define FASTJOINT_HOST_DEVICE __host__ __device__
#else
#define FASTJOINT_HOST_DEVICE
#endif

namespace fastjoint {

// tcnn's offset table holds at most 32 levels; ours is passed by value to the kernels.
constexpr int kMaxGridLevels = 32;

struct GridLevel {
  float scale;         // grid scale: 2^(level * log2(per_level_scale)) * base - 1, in float32
  int64_t resolution;  // vertices per side: ceil(scale) + 1
  int64_t size;        // table rows of the level
  int64_t offset;      // first table row of the level
  bool hashed;         // prime hash, else dense x + y*res + z*res^2
};

struct GridLevels {
  int n_levels;
  GridLevel level[kMaxGridLevels];
};

// x * scale + 0.5 with two roundings, as two separate torch ops compute it: a fused
// multiply-add (which nvcc and -ffp-contract would emit) moves points on cell borders.
FASTJOINT_HOST_DEVICE inline float grid_position(float x, float scale) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(__fmul_rn(x, scale), 0.5f);
#elif defined(__FP_FAST_FMAF)
  volatile float product = x * scale;  // the target has FMA: keep the compiler from contracting
  return product + 0.5f;
#else
  return x * scale + 0.5f;  // no FMA instruction (x86-64 without -mfma): nothing to contract into
#endif
}

// The 8 table rows and trilinear weights of one point on one level.
struct Corners {
  int64_t row[8];
  float weight[8];
  float axis[3][2];  // per axis, the low and high vertices' factor: 1 - t and t (for the gradient in x)
};

FASTJOINT_HOST_DEVICE inline int64_t floor_mod(int64_t value, int64_t size) {
  const int64_t r = value % size;
  return r < 0 ? r + size : r;  // the reference's % takes the divisor's sign
}

FASTJOINT_HOST_DEVICE inline void level_corners(const float* __restrict__ point,  // [3]
                                                const GridLevel& level, Corners& out) {
  int64_t low[3];
  float (&w)[3][2] = out.axis;  // (unused by the encoding itself; an inlined caller drops the stores)
  for (int d = 0; d < 3; ++d) {
    const float pos = grid_position(point[d], level.scale);
    const float cell = floorf(pos);
    const float frac = pos - cell;
    low[d] = static_cast<int64_t>(cell);
    w[d][0] = 1.0f - frac;
    w[d][1] = frac;
  }
  const bool power_of_two = (level.size & (level.size - 1)) == 0 && level.size <= (int64_t(1) << 32);
  for (int c = 0; c < 8; ++c) {
    const int hx = c & 1, hy = (c >> 1) & 1, hz = (c >> 2) & 1;
    const int64_t vx = low[0] + hx, vy = low[1] + hy, vz = low[2] + hz;
    int64_t index;
    // Divisions are the slowest step here: a power-of-two size masks, and a dense index needs
    // reducing only on the grid's far faces (or outside the box).
    if (level.hashed) {
      // uint32 products, as (v * prime) & 0xFFFFFFFF in int64 gives for any integer v.
      const uint32_t h = static_cast<uint32_t>(vx) ^ (static_cast<uint32_t>(vy) * 2654435761u) ^
                         (static_cast<uint32_t>(vz) * 805459861u);
      index = power_of_two ? static_cast<int64_t>(h & static_cast<uint32_t>(level.size - 1))
                           : static_cast<int64_t>(h % static_cast<uint64_t>(level.size));
    } else {
      index = vx + vy * level.resolution + vz * level.resolution * level.resolution;
      if (index < 0 || index >= level.size) index = floor_mod(index, level.size);
    }
    out.row[c] = level.offset + index;
    out.weight[c] = (w[2][hz] * w[1][hy]) * w[0][hx];  // the reference's order: z, y, then x
  }
}

// encoded[f] = sum_c w_c * table[row_c, f], for the level's F features.
template <typename scalar_t>
FASTJOINT_HOST_DEVICE inline void interpolate(const Corners& corners, const scalar_t* __restrict__ table,
                                              int64_t n_features, scalar_t* __restrict__ encoded) {
  for (int64_t f = 0; f < n_features; ++f) {
    scalar_t sum = 0;
    for (int c = 0; c < 8; ++c) sum += static_cast<scalar_t>(corners.weight[c]) * table[corners.row[c] * n_features + f];
    encoded[f] = sum;
  }
}

// F = 2, the common case, with both features read per row.
template <typename scalar_t>
FASTJOINT_HOST_DEVICE inline void interpolate2(const Corners& corners, const scalar_t* __restrict__ table,
                                               scalar_t* __restrict__ encoded) {
  scalar_t a = 0, b = 0;
  for (int c = 0; c < 8; ++c) {
    const scalar_t w = static_cast<scalar_t>(corners.weight[c]);
    a += w * table[2 * corners.row[c]];
    b += w * table[2 * corners.row[c] + 1];
  }
  encoded[0] = a;
  encoded[1] = b;
}

// The gradient in x of one level's features: v_x[d] += scale * sum_c (dw_c / dt_d) * <v, table[row_c]>,
// for the level's upstream gradient v [F], from the point's corners on that level (level_corners).
template <typename scalar_t>
FASTJOINT_HOST_DEVICE inline void level_input_gradient(const GridLevel& level, const Corners& corners,
                                                       const scalar_t* __restrict__ table, int64_t n_features,
                                                       const scalar_t* __restrict__ v, scalar_t* __restrict__ v_x) {
  const float(&w)[3][2] = corners.axis;
  scalar_t g[3] = {0, 0, 0};
  for (int c = 0; c < 8; ++c) {
    const int h[3] = {c & 1, (c >> 1) & 1, (c >> 2) & 1};
    scalar_t dot = 0;
    for (int64_t f = 0; f < n_features; ++f) dot += v[f] * table[corners.row[c] * n_features + f];
    for (int d = 0; d < 3; ++d) {
      const float others = w[(d + 1) % 3][h[(d + 1) % 3]] * w[(d + 2) % 3][h[(d + 2) % 3]];
      g[d] += static_cast<scalar_t>(h[d] ? others : -others) * dot;
    }
  }
  for (int d = 0; d < 3; ++d) v_x[d] += static_cast<scalar_t>(level.scale) * g[d];
}

}  // namespace fastjoint

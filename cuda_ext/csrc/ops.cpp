// The schemas of fastjoint's native ops. The CPU and CUDA kernels register their
// implementations under them (<op>_cpu.cpp, <op>_cuda.cu); autograd and the fake-tensor
// rules are registered from Python (fastjoint/ops/<op>.py, through fastjoint/ops/native.py).
#include <Python.h>
#include <torch/library.h>

extern "C" {
// Lets an ahead-of-time build be imported as the Python module fastjoint._C, which loads
// this library and so registers the ops. A just-in-time build is loaded by path instead.
PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
}

TORCH_LIBRARY(fastjoint, m) {
  // ray_indices [S] (int32 or int64, sorted) -> offsets [n_rays + 1] int64.
  m.def("ray_offsets(Tensor ray_indices, int n_rays) -> Tensor");
  // offsets [n_rays + 1]: the samples of ray r are offsets[r] .. offsets[r + 1] - 1.
  m.def(
      "composite_forward(Tensor sigmas, Tensor rgbs, Tensor t_starts, Tensor t_ends, Tensor offsets)"
      " -> (Tensor rgb, Tensor opacity, Tensor depth)");
  m.def(
      "composite_backward(Tensor v_rgb, Tensor v_opacity, Tensor v_depth, Tensor rgb, Tensor opacity, Tensor depth,"
      " Tensor sigmas, Tensor rgbs, Tensor t_starts, Tensor t_ends, Tensor offsets)"
      " -> (Tensor v_sigmas, Tensor v_rgbs)");
  // x [N, 3] float32 in [0, 1]^3, table [n_params, F] -> encoded [N, n_levels * F], level-major.
  // The layout (fastjoint.ops.hashgrid.grid_layout) comes as one entry per level; hashed is 0 or 1.
  m.def(
      "hashgrid_forward(Tensor x, Tensor table, float[] scales, int[] resolutions, int[] sizes, int[] offsets,"
      " int[] hashed) -> Tensor");
  // v_out [N, n_levels * F] -> v_table [n_params, F]; x needs no gradient.
  m.def(
      "hashgrid_backward(Tensor v_out, Tensor x, float[] scales, int[] resolutions, int[] sizes, int[] offsets,"
      " int[] hashed) -> Tensor v_table");
  // v_out [N, n_levels * F] -> v_x [N, 3] in the table's dtype: the gradient in x (only a caller
  // that differentiates the points, such as aligning a view's pose, asks for it).
  m.def(
      "hashgrid_backward_x(Tensor v_out, Tensor x, Tensor table, float[] scales, int[] resolutions, int[] sizes,"
      " int[] offsets, int[] hashed) -> Tensor v_x");
  // A baked scene marched (see baked.h): rays [n_rays, 3], aabbs [L, 6], index int32 [L, R, R, R],
  // bricks [n, B + 1, B + 1, B + 1, C], bounds [6], blocks uint8 [L, R / f, R / f, R / f] (f = factor)
  // -> the kept samples (ray_indices [S] int64, sorted; weights [S]; features [S, C - 1]) and per ray
  // the opacity and depth of every sample taken.
  m.def(
      "baked_march(Tensor rays_o, Tensor rays_d, Tensor aabbs, Tensor index, Tensor bricks, Tensor bounds,"
      " Tensor blocks, int factor, float step_size,"
      " float min_transmittance, float min_weight)"
      " -> (Tensor ray_indices, Tensor weights, Tensor features, Tensor opacity, Tensor depth)");
}

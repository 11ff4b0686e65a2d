"""fastjoint's native kernels: C++/CUDA sources in csrc/ and the build shared by setup.py
and the just-in-time loader (build.py). The ops themselves are used through fastjoint.ops.
"""

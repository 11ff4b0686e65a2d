"""Small encodings and activations shared by the networks."""

from __future__ import annotations

import torch
from torch import Tensor


def spherical_harmonics(dirs: Tensor, degree: int) -> Tensor:  # [N, 3] unit -> [N, degree^2]
    """Real spherical harmonics of unit directions, bands 0 to degree-1 (tiny-cuda-nn's basis)."""
    assert 1 <= degree <= 4, f"degree must be 1..4, got {degree}"
    x, y, z = dirs.unbind(-1)
    out = [torch.full_like(x, 0.28209479177387814)]
    if degree > 1:
        out += [-0.48860251190291987 * y, 0.48860251190291987 * z, -0.48860251190291987 * x]
    if degree > 2:
        xx, yy, zz = x * x, y * y, z * z
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.94617469575755997 * zz - 0.31539156525251999,
            -1.0925484305920792 * x * z,
            0.54627421529603959 * (xx - yy),
        ]
    if degree > 3:
        out += [
            0.59004358992664352 * y * (-3.0 * xx + yy),
            2.8906114426405538 * x * y * z,
            0.45704579946446572 * y * (1.0 - 5.0 * zz),
            0.3731763325901154 * z * (5.0 * zz - 3.0),
            0.45704579946446572 * x * (1.0 - 5.0 * zz),
            1.4453057213202769 * z * (xx - yy),
            0.59004358992664352 * x * (-xx + 3.0 * yy),
        ]
    return torch.stack(out, dim=-1)


class _TruncExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, v_out: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return v_out * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """exp, with the gradient's exponent clamped at 15 (instant-ngp's density activation)."""
    return _TruncExp.apply(x)

"""render.occ_levels: nested occupancy grids, and the hash grids spanning the largest."""

from __future__ import annotations

import pytest
import torch

from fastjoint.config import Config, DataConfig, RenderConfig, StyleData, load_config
from fastjoint.errors import UserError
from fastjoint.pairing import Pairing
from fastjoint.render.extent import SceneExtent, field_box
from fastjoint.run import Built


def test_occ_levels_need_the_hashgrid_encoder(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        '[data]\ntarget = "t"\nreference = "r"\n[data.styles.b]\nreference = "rb"\n[model]\nencoder = "mlp"\n[render]\nocc_levels = 2\n'
    )
    with pytest.raises(UserError, match="render.occ_levels: needs model.encoder"):
        load_config(path)
    box = (-1, -2, -1, 1, 2, 3)
    assert field_box(box, SceneExtent(False, 1, 0.0)) == box
    assert field_box(box, SceneExtent(False, 3, 0.0)) == (-4.0, -8.0, -7.0, 4.0, 8.0, 9.0)  # centre (0, 0, 1), 4x the half sizes
    assert field_box(box, SceneExtent(True, 3, 0.0)) == box  # contracted about the box itself


def test_built_marches_and_encodes_beyond_the_box():
    data = DataConfig(target="t", reference="r", styles={"b": StyleData("rb")})
    config = Config(device="cpu", data=data, render=RenderConfig(occ_levels=3, occ_resolution=8, step_size=0.05))
    built = Built(config, torch.device("cpu"))
    estimator = built.estimators["target"]
    assert tuple(estimator.binaries.shape) == (3, 8, 8, 8)
    torch.testing.assert_close(estimator.aabbs[2], torch.tensor([-6.0, -6.0, -6.0, 6.0, 6.0, 6.0]))
    torch.testing.assert_close(built.model.encoders["target"].aabb, estimator.aabbs[2])
    # Occupied only in the outer shell of the largest level: samples lie between 3 and 6 from the centre.
    estimator.binaries.zero_()
    estimator.binaries[2] = True
    generator = torch.Generator().manual_seed(0)
    rays_o = torch.nn.functional.normalize(torch.randn(32, 3, generator=generator), dim=-1) * 4.0
    rays_d = torch.nn.functional.normalize(torch.randn(32, 3, generator=generator), dim=-1)
    samples = built.samplers["target"](rays_o, rays_d, None)
    points = rays_o[samples.ray_indices] + rays_d[samples.ray_indices] * ((samples.t_starts + samples.t_ends) / 2)[:, None]
    reach = points.abs().amax(dim=-1)
    assert samples.ray_indices.numel() > 500
    assert reach.min() >= 3.0 - 1e-4 and reach.max() <= 6.0 + 1e-4 and reach.max() > 5.5
    result = built.render_rays(Pairing("target", "original"), rays_o, rays_d, torch.ones(3))
    assert result.n_samples == samples.ray_indices.numel() and torch.isfinite(result.rgb).all()

"""Why a transfer depends on the seed: where the paint that changes lands on the feature plane, in each scene.

For each run (a kit run whose config names the transfer's ground truth), on the test views:
the pixels that the desired style changes ("paint": the style's ground truth differs from the
original's by more than 0.1 on average over the channels) in the target and in the reference;
where their surface features land (opacity above 0.95, at the expected depth, as `analyze`
samples them); how far the target's paint lies from the nearest reference paint on the plane
(median over the target's paint pixels); the transfer's mean squared error on the target's
paint and elsewhere; and the style decoder's colour at the target's paint features against
its colour at the reference's. One picture per run (`--pictures`): the feature plane under
the style's decoder with the reference's paint (white rims) and the target's paint (black
rims), each dot in its original rendered colour, beside the transfer and its ground truth.

    python -m benchmarks.seeds runs/sweeps/experiments-digger+robot-recolour+relight/digger-recolour,seed*
    python -m benchmarks.seeds RUN... --pictures
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from benchmarks.common import RESULTS, pictures, write_results
from benchmarks.common import console as make_console
from fastjoint.data import image_rays
from fastjoint.files import write_image
from fastjoint.pairing import ORIGINAL, Pairing
from fastjoint.plane import OPAQUE, decoder_map, side_by_side
from fastjoint.run import LoadedRun, load_run
from fastjoint.scoring import load_test_views

CHANGED = 0.1  # mean absolute change over the channels that makes a pixel paint
VIEWS = 4  # test views per scene


@torch.no_grad()
def scene_paint(run: LoadedRun, scene: str, style: str) -> dict[str, torch.Tensor]:
    """A scene's test views: surface features, paint mask, renders in both styles, and the truths."""
    data = run.config.data
    original = load_test_views(run, data.dataset(Pairing(scene, ORIGINAL)), scene)
    truth = load_test_views(run, data.dataset(Pairing(scene, style)), scene)
    white = torch.ones(3)
    chosen = torch.linspace(0, len(original) - 1, min(VIEWS, len(original))).round().long().tolist()
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("feature", "hit", "paint", "styled", "truth")}
    built = run.built
    for index in chosen:
        pose = original.poses[index].to(built.device)
        rays_o, rays_d = image_rays(pose, original.camera)
        result = built.render_chunked(Pairing(scene, ORIGINAL), rays_o, rays_d, white.to(built.device))
        hit, points = result.surface(rays_o, rays_d, OPAQUE)
        feature = torch.full((hit.shape[0], built.model.feature_dim), float("nan"))
        if hit.any():
            feature[hit.cpu()] = built.model.features(scene, points, rays_d[hit])[1].cpu()
        before = original.on_background(white)[index].reshape(-1, 3)
        after = truth.on_background(white)[index].reshape(-1, 3)
        styled = built.render_chunked(Pairing(scene, style), rays_o, rays_d, white.to(built.device)).rgb.cpu()
        out["feature"].append(feature)
        out["hit"].append(hit.cpu())
        out["paint"].append((after - before).abs().mean(dim=1) > CHANGED)
        out["styled"].append(styled)
        out["truth"].append(after)
    return {k: torch.cat(v) for k, v in out.items()} | {"size": torch.tensor([original.camera.height, original.camera.width])}


def measure(run_dir: Path, pictures_dir: Path | None) -> dict:
    run = load_run(run_dir)
    style = next(s for s in run.pairings.styles if s != ORIGINAL)
    target, reference = scene_paint(run, "target", style), scene_paint(run, "reference", style)
    t_paint = target["paint"] & target["hit"]
    r_paint = reference["paint"] & reference["hit"]
    t_other = ~target["paint"] & target["hit"]
    error = (target["styled"] - target["truth"]).square().mean(dim=1)
    tf, rf = target["feature"][t_paint], reference["feature"][r_paint]
    nearest = torch.cdist(tf, rf).min(dim=1).values if len(tf) and len(rf) else torch.tensor([float("nan")])
    everywhere = torch.cdist(target["feature"][target["hit"]], reference["feature"][reference["hit"]]).min(dim=1).values
    far = everywhere > everywhere.quantile(0.9)
    hit_error = error[target["hit"]]
    decoder, on_plane = run.built.model.decoders[style], run.built.model.on_plane  # (a decoder that reads the normal: at none)
    dev = run.built.device
    with torch.no_grad():
        decoded_t = decoder(on_plane(tf.to(dev))).mean(dim=0).cpu() if len(tf) else torch.full((3,), float("nan"))
        decoded_r = decoder(on_plane(rf.to(dev))).mean(dim=0).cpu() if len(rf) else torch.full((3,), float("nan"))
    row = {
        "run": run_dir.name,
        "style": style,
        "target_paint_pixels": int(t_paint.sum()),
        "reference_paint_pixels": int(r_paint.sum()),
        "paint_nearest_median": float(nearest.median()),
        "paint_centroid_distance": float((tf.mean(dim=0) - rf.mean(dim=0)).norm()) if len(tf) and len(rf) else float("nan"),
        "reference_paint_spread": float(rf.std(dim=0).norm()) if len(rf) > 1 else float("nan"),
        "nearest_p50": float(everywhere.median()),
        "nearest_p90": float(everywhere.quantile(0.9)),
        "transfer_mse_far_decile": float(hit_error[far].mean()),
        "transfer_mse_near": float(hit_error[~far].mean()),
        "transfer_mse_paint": float(error[t_paint].mean()),
        "transfer_mse_other": float(error[t_other].mean()),
        "decoded_target_paint": [round(float(v), 3) for v in decoded_t],
        "decoded_reference_paint": [round(float(v), 3) for v in decoded_r],
    }
    if pictures_dir is not None:
        plane = decoder_map(run, style)
        image = (plane.astype(np.float64) * 0.5 + 255 * 0.5).astype(np.uint8)
        pixels = image.shape[0]
        for features, mask, rim in ((reference["feature"], r_paint, 255), (target["feature"], t_paint, 0)):
            f = features[mask][:: max(1, int(mask.sum()) // 1500)].numpy()
            cols = np.clip(((f[:, 0] + 1) / 2 * (pixels - 1)).round().astype(int), 0, pixels - 1)
            rows = np.clip(((1 - f[:, 1]) / 2 * (pixels - 1)).round().astype(int), 0, pixels - 1)
            for dr in range(-2, 3):
                for dc in range(-2, 3):
                    image[np.clip(rows + dr, 0, pixels - 1), np.clip(cols + dc, 0, pixels - 1)] = rim
        h, w = target["size"].tolist()
        first = slice(0, h * w)
        transfer = (target["styled"][first].reshape(h, w, 3).numpy() * 255 + 0.5).astype(np.uint8)
        truth = (target["truth"][first].reshape(h, w, 3).numpy() * 255 + 0.5).astype(np.uint8)
        scale = max(1, pixels // h)
        transfer, truth = (np.kron(x, np.ones((scale, scale, 1), dtype=np.uint8)) for x in (transfer, truth))
        write_image(
            pictures_dir / f"seeds-{run_dir.name}.png",
            side_by_side({f"{style} decoder; paint: reference white, target black": image, "transfer": transfer, "truth": truth}),
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--pictures", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--label", default="seeds")
    args = parser.parse_args()
    console = make_console()
    rows = []
    for run_dir in args.runs:
        rows.append(measure(run_dir, pictures(args.results) if args.pictures else None))
        eval_json = run_dir / "eval.json"
        if eval_json.is_file():
            transfers = json.loads(eval_json.read_text())["transfers"]
            rows[-1]["transfer_psnr"] = next(iter(transfers.values()))["psnr"]
    table = Table(title="paint on the feature plane, per run")
    columns = (
        "run",
        "transfer_psnr",
        "paint_nearest_median",
        "nearest_p50",
        "nearest_p90",
        "transfer_mse_far_decile",
        "transfer_mse_near",
        "transfer_mse_paint",
        "transfer_mse_other",
    )
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(f"{row[c]:.4f}" if isinstance(row.get(c), float) else str(row.get(c)) for c in columns))
    console.print(table)
    write_results(args.label, {"rows": rows}, args.results)


if __name__ == "__main__":
    main()

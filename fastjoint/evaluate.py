"""The `eval` verb: a run scored on its test views, eval.json.

For each transfer `target:<style>` whose ground truth the config names, eval.json also
holds the no-transfer baseline (fastjoint.scoring): the target in its original style scored
against that style's ground truth, i.e. what doing nothing would score. Beside each transfer,
the share of the target's visible surface whose style feature the reference does not cover
(fastjoint.coverage): where every transfer extrapolates; a large share is warned of.

With `align_poses` (`fastjoint eval --align-poses`), each trained pairing's test views are
first aligned to their photos, the scene fixed (fastjoint.align), and scored from the aligned
poses; a transfer takes target:original's (its ground truth shares the target's cameras).
eval.json then records each view's correction under `aligned_poses`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from rich.markup import escape
from rich.table import Table
from torch import Tensor

from fastjoint.align import ALIGN_STEPS, Aligned, align_views
from fastjoint.coverage import Share, reference_coverage, target_share, warning
from fastjoint.data import Split
from fastjoint.files import write_json
from fastjoint.log import console
from fastjoint.metrics import Scores, score
from fastjoint.pairing import Pairing
from fastjoint.run import LoadedRun, load_run
from fastjoint.scoring import TransferScores, backdrop, check_same_views, load_test_views, score_transfer


@dataclass(frozen=True)
class EvalResult:
    """What eval.json holds."""

    step: int
    train_seconds: float
    pairings: dict[str, Scores]  # trained pairing name -> scores
    transfers: dict[str, TransferScores]  # transfer name -> scores (those with ground truth)
    untested: tuple[str, ...]  # transfers without ground truth
    # The target's uncovered share (the same for every transfer: each style's decoder learns from the
    # reference's features); None when too little of the reference is seen to say.
    coverage: Share | None = None
    aligned: dict[str, Aligned] | None = None  # trained pairing name -> its test views' pose corrections (--align-poses)

    @property
    def uncovered_share(self) -> float | None:
        return None if self.coverage is None else self.coverage.share

    def to_json(self) -> dict:
        share = None if self.coverage is None else round(self.coverage.share, 6)
        return {
            "step": self.step,
            "train_seconds": round(self.train_seconds, 2),
            "pairings": {name: s._asdict() for name, s in self.pairings.items()},
            "transfers": {name: {**t._asdict(), "gain_db": t.gain_db, "uncovered_share": share} for name, t in self.transfers.items()},
            "untested": list(self.untested),
            "coverage": None if self.coverage is None else self.coverage.to_json(),
            "aligned_poses": None
            if self.aligned is None
            else {"steps": ALIGN_STEPS, **{name: a.to_json() for name, a in self.aligned.items()}},
        }


def evaluate(
    run_dir: str | Path,
    device: str | None = None,
    run: LoadedRun | None = None,
    background: Tensor | None = None,
    align_poses: bool = False,
) -> EvalResult:
    """Scores every trained pairing and every transfer with ground truth on test views; writes RUN/eval.json.

    Each pairing is rendered on its own backdrop (`Built.backdrop`), or on `background` [3]
    when given, and RGBA ground truth is composited on the same. With `align_poses`, each
    trained pairing's test poses are aligned to its photos first (fastjoint.align).
    """
    run_dir = Path(run_dir)
    run = run or load_run(run_dir, device)
    pairings: dict[str, Scores] = {}
    transfers: dict[str, TransferScores] = {}
    untested: list[str] = []
    aligned: dict[str, Aligned] = {}  # trained pairing name -> its test views' corrections (align_poses)
    given: dict[Pairing, Split] = {}  # trained pairing -> its test views as the dataset gives them
    with console.status("[bold]Evaluating on the test views...") as status:
        for pairing in run.pairings.trained:
            split = given[pairing] = load_test_views(run, run.dataset(pairing), pairing.scene)
            if align_poses:

                def aligning(done: int, total: int, name: str = pairing.name) -> None:
                    status.update(f"[bold]Aligning {name}'s test views to their photos ({done} of {total})...")

                aligned[pairing.name] = align_views(run, pairing, split, background, aligning)
                split = replace(split, poses=aligned[pairing.name].poses)
            status.update(f"[bold]Evaluating {pairing.name} on its test views...")
            behind = backdrop(run, pairing, split, background)
            pairings[pairing.name] = score(run.render(pairing, split.poses, split.camera, background), split.on_background(behind))
        original_pairing = run.pairings.trained[0]  # target:original
        original = given[original_pairing]
        for pairing in run.pairings.transfers:
            truth = run.dataset(pairing)
            if truth is None:
                untested.append(pairing.name)
                continue
            status.update(f"[bold]Evaluating the transfer {pairing.name} against its ground truth...")
            truth_views = load_test_views(run, truth, pairing.scene)
            if align_poses:  # the ground truth shares the target's cameras (checked as given), so it takes their aligned poses
                check_same_views(truth_views, original)
                poses = aligned[original_pairing.name].poses
                truth_views, views = replace(truth_views, poses=poses), replace(original, poses=poses)
            else:
                views = original
            transfers[pairing.name] = score_transfer(run, pairing, truth_views, views, background)
        share = None
        if run.pairings.transfers:
            status.update("[bold]Measuring where the reference covers the target's features...")
            share, _ = target_share(run, reference_coverage(run))
    result = EvalResult(run.step, run.train_seconds, pairings, transfers, tuple(untested), share, aligned or None)
    write_json(run_dir / "eval.json", result.to_json())
    return result


def print_table(result: EvalResult) -> None:
    """eval.json as a table on the console."""
    table = Table(title=f"eval.json (step {result.step}, {result.train_seconds:.0f} s of training)")
    for column in ("pairing", "PSNR (dB)", "SSIM", "no-transfer PSNR", "gain (dB)", "uncovered"):
        table.add_column(column, justify="left" if column == "pairing" else "right")
    uncovered = "n/a" if result.coverage is None else f"{result.coverage.share:.1%}"
    for name, scores in result.pairings.items():
        table.add_row(name, f"{scores.psnr:.2f}", f"{scores.ssim:.4f}", "", "", "")
    for name, t in result.transfers.items():
        table.add_row(f"{name} (transfer)", f"{t.psnr:.2f}", f"{t.ssim:.4f}", f"{t.baseline_psnr:.2f}", f"{t.gain_db:+.2f}", uncovered)
    for name in result.untested:
        table.add_row(f"{name} (transfer)", "no ground truth", "", "", "", uncovered)
    console.print(table)
    for name, a in (result.aligned or {}).items():
        console.print(
            f"{name}: test poses aligned to their photos, corrections {a.rotation_deg.median():.3f} degrees "
            f"(median; largest {a.rotation_deg.max():.3f}) and {a.shift.median():.4f} units (largest {a.shift.max():.4f})"
        )
    if result.coverage is not None and result.coverage.large:
        console.print(f"[yellow]warning:[/yellow] {escape(warning(result.coverage))}", soft_wrap=True)

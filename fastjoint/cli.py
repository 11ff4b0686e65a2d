"""The `fastjoint` command: train, eval, render, scenes.

This module only parses and calls. A user mistake ends with one line on stderr naming the
file or key at fault, and exit status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import io
import math
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Optional

import tyro

from fastjoint import __version__
from fastjoint.config import Config, describe, load_config
from fastjoint.errors import UserError

DEFAULT_CONFIG = Path("configs") / "demo.toml"
VERBS = ("train", "eval", "render", "analyze", "scenes")


@dataclass(frozen=True)
class TrainCommand:
    """Train the three pairings jointly; then evaluate and render the transfer."""

    config: Annotated[Config, tyro.conf.arg(name="")]
    resume: bool = False
    """Continue the run from checkpoints/latest.pt."""
    max_seconds: Optional[float] = None
    """Stop training after this many seconds of training (a checkpoint is written; --resume continues)."""
    eval: bool = True
    """When training stops, evaluate on the test views (RUN/eval.json)."""
    render: bool = True
    """When training stops, render the transfer target:desired (test views, orbit video)."""
    orbit: int = 48
    """Frames of the orbit video rendered when training stops."""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _dispatch(argv)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"fastjoint {__version__}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb == "train":
        return _train(rest)
    if verb == "eval":
        return _eval(rest)
    if verb == "render":
        return _render(rest)
    if verb == "analyze":
        return _analyze(rest)
    if verb == "scenes":
        return _scenes(rest)
    close = difflib.get_close_matches(verb, VERBS, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UserError(f"unknown command '{verb}'{hint}; commands: {', '.join(VERBS)}")


def _usage() -> str:
    return (
        f"fastjoint {__version__}: restyle a 3D scene by analogy\n\n"
        "usage: fastjoint COMMAND [ARGS]\n\n"
        "commands:\n"
        "  train [CONFIG] [OPTIONS]   train target:original, reference:original, reference:desired jointly\n"
        "                             (CONFIG defaults to configs/demo.toml); then eval and render\n"
        "  eval RUN                   score every pairing on the test views; writes RUN/eval.json\n"
        "  render RUN [OPTIONS]       write PNGs (and an MP4) of a pairing, target:desired by default\n"
        "  analyze RUN                the feature space: decoder maps, feature scatter, KL between scenes\n"
        "  scenes list | make NAME    the procedural scene kit (recipes in data/)\n\n"
        "Run `fastjoint COMMAND --help` for a command's options."
    )


# --- train ---------------------------------------------------------------------------


def _train(argv: list[str]) -> int:
    if argv and not argv[0].startswith("-"):
        config_path, overrides = Path(argv[0]), argv[1:]
    else:
        config_path, overrides = _default_config(), argv
    base = load_config(config_path)
    command = _parse_train(base, overrides, config_path)

    from fastjoint.train import train

    summary = train(command.config, resume=command.resume, max_seconds=command.max_seconds)
    how = "finished" if summary.finished else "stopped by --max-seconds"
    print(f"{how} at step {summary.step} after {summary.train_seconds:.0f} s; run in {summary.run_dir}")
    if not (command.eval or command.render):
        return 0
    from fastjoint.run import load_run

    run = load_run(summary.run_dir)
    if command.eval:
        _print_eval(_evaluate(run))
    if command.render:
        _render_outputs(run, "target:desired", "test", command.orbit, video=command.orbit > 0)
    return 0


def _default_config() -> Path:
    """configs/demo.toml of the working folder, else that of the fastjoint checkout."""
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG
    checkout = Path(__file__).resolve().parents[1] / DEFAULT_CONFIG
    return checkout if checkout.is_file() else DEFAULT_CONFIG


def _parse_train(base: Config, argv: list[str], config_path: Path) -> TrainCommand:
    default = TrainCommand(config=base)
    prog = f"fastjoint train [CONFIG] (now {config_path})"
    if any(a in ("-h", "--help") for a in argv):
        tyro.cli(TrainCommand, default=default, args=argv, prog=prog, description=TrainCommand.__doc__)
    try:
        # tyro prints some errors as a framed box even with console_outputs=False; we say
        # them in one line instead.
        with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            command, unknown = tyro.cli(
                TrainCommand, default=default, args=argv, prog=prog, console_outputs=False, return_unknown_args=True
            )
    except SystemExit:
        raise UserError(_explain_bad_arguments(argv)) from None
    if unknown:
        raise UserError(_explain_unknown(unknown[0]))
    return command


def _fields() -> dict[str, Any]:
    """Every option of `fastjoint train` (with underscores) -> its type."""
    options: dict[str, Any] = {}
    for f in dataclasses.fields(TrainCommand):
        if f.name != "config":
            options[f.name] = typing.get_type_hints(TrainCommand)[f.name]
    hints = typing.get_type_hints(Config)
    for f in dataclasses.fields(Config):
        if dataclasses.is_dataclass(hints[f.name]):
            section = typing.get_type_hints(hints[f.name])
            options.update({f"{f.name}.{key}": hint for key, hint in section.items()})
        else:
            options[f.name] = hints[f.name]
    return options


def _explain_unknown(token: str) -> str:
    if not token.startswith("--"):
        return f"unexpected argument '{token}' (see fastjoint train --help)"
    name = token[2:].split("=")[0].replace("-", "_")
    close = difflib.get_close_matches(name, list(_fields()), n=1)
    hint = f" (did you mean --{close[0].replace('_', '-')}?)" if close else ""
    return f"unknown option '{token}'{hint}"


def _explain_bad_arguments(argv: list[str]) -> str:
    """Names the first option whose value does not parse; tyro has already refused the line."""
    options = _fields()
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token[2:].replace("-", "_") if token.startswith("--") else ""
        hint = options.get(name)
        if hint is None or hint is bool:
            i += 1
            continue
        arity = len(typing.get_args(hint)) if typing.get_origin(hint) is tuple else 1
        values = argv[i + 1 : i + 1 + arity]
        if len(values) < arity or any(v.startswith("--") for v in values):
            return f"{token}: expects {describe(hint)}"
        if not _parses(hint, values):
            return f"{token}: expects {describe(hint)}, got {' '.join(values)!r}"
        i += 1 + arity
    return "cannot parse the command line (see fastjoint train --help)"


def _parses(hint: Any, values: list[str]) -> bool:
    origin = typing.get_origin(hint)
    if origin is tuple:
        return all(_parses(item, [v]) for item, v in zip(typing.get_args(hint), values))
    if origin is typing.Literal:
        return values[0] in typing.get_args(hint)
    if origin is typing.Union:
        return any(_parses(option, values) for option in typing.get_args(hint) if option is not type(None)) or values[0] == "None"
    try:
        value = hint(values[0])
    except ValueError:
        return False
    return not isinstance(value, float) or math.isfinite(value)


# --- eval ----------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> typing.NoReturn:
        raise UserError(f"{self.prog}: {message}")


def _eval(argv: list[str]) -> int:
    parser = _Parser(prog="fastjoint eval", description="Score every pairing of a run on its test views; writes RUN/eval.json.")
    parser.add_argument("run", help="the run folder, e.g. runs/demo")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="where to render (default: the run's)")
    args = parser.parse_args(argv)
    from fastjoint.run import load_run

    _print_eval(_evaluate(load_run(args.run, args.device)))
    return 0


def _evaluate(run) -> dict:
    from fastjoint.evaluate import evaluate

    return evaluate(run.run_dir, run=run)


def _print_eval(result: dict) -> None:
    from rich.table import Table

    from fastjoint.log import console

    table = Table(title=f"eval.json (step {result['step']}, {result['train_seconds']:.0f} s of training)")
    for column in ("pairing", "PSNR (dB)", "SSIM", "no-transfer PSNR", "gain (dB)"):
        table.add_column(column, justify="left" if column == "pairing" else "right")
    for name, scores in result["pairings"].items():
        table.add_row(name, f"{scores['psnr']:.2f}", f"{scores['ssim']:.4f}", "", "")
    transfer = result.get("transfer")
    if transfer:
        table.add_row(
            f"{transfer['pairing']} (transfer)",
            f"{transfer['psnr']:.2f}",
            f"{transfer['ssim']:.4f}",
            f"{transfer['baseline_psnr']:.2f}",
            f"{transfer['gain_db']:+.2f}",
        )
    console.print(table)


# --- render --------------------------------------------------------------------------


def _render(argv: list[str]) -> int:
    parser = _Parser(prog="fastjoint render", description="Render a pairing of a trained run to RUN/renders/<scene>_<style>/.")
    parser.add_argument("run", help="the run folder, e.g. runs/demo")
    parser.add_argument("--pairing", default="target:desired", help="scene:style to render (default: the transfer, target:desired)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="whose camera views to render (default: test)")
    parser.add_argument("--orbit", type=int, default=0, metavar="N", help="also render N frames orbiting the scene")
    parser.add_argument("--video", action="store_true", help="write an MP4 of the orbit (or of the views without --orbit)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="where to render (default: the run's)")
    args = parser.parse_args(argv)
    if args.orbit < 0:
        raise UserError("--orbit: must not be negative")
    from fastjoint.run import load_run

    _render_outputs(load_run(args.run, args.device), args.pairing, args.split, args.orbit, args.video)
    return 0


def _render_outputs(run, pairing_name: str, split: str, orbit: int, video: bool) -> None:
    from rich.progress import Progress

    from fastjoint.log import console
    from fastjoint.pairing import parse_pairing
    from fastjoint.renders import render_pairing

    pairing = parse_pairing(pairing_name)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"render {pairing.name}", total=None)
        outputs = render_pairing(
            run, pairing, split, orbit, video, progress=lambda done, total: progress.update(task, completed=done, total=total)
        )
    print(f"rendered {len(outputs.images)} images of {pairing.name} to {outputs.folder}")
    if outputs.video:
        print(f"video: {outputs.video}")


# --- analyze -------------------------------------------------------------------------


def _analyze(argv: list[str]) -> int:
    parser = _Parser(
        prog="fastjoint analyze",
        description="Draw the style decoders over the 2-D feature plane, scatter each scene's surface features "
        "on it, and fit the KL divergence between the scenes' features: RUN/analysis/, RUN/analysis.json.",
    )
    parser.add_argument("run", help="the run folder, e.g. runs/demo")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="where to render (default: the run's)")
    args = parser.parse_args(argv)
    from fastjoint.analyze import analyze
    from fastjoint.log import console
    from fastjoint.run import load_run

    run = load_run(args.run, args.device)
    with console.status("[bold]Sampling the feature space..."):
        result = analyze(run.run_dir, run=run)
    points = ", ".join(f"{scene} {n}" for scene, n in result["points"].items())
    print(f"surface points: {points}")
    if result["kl"]:
        kl = result["kl"]
        print(f"KL(target || reference) = {kl['target||reference']:.3f}, KL(reference || target) = {kl['reference||target']:.3f} nats")
    print(f"wrote {run.run_dir / 'analysis'}/decoders.png, features.png and {run.run_dir / 'analysis.json'}")
    return 0


# --- scenes --------------------------------------------------------------------------


def _scenes(argv: list[str]) -> int:
    parser = _Parser(prog="fastjoint scenes", description="The procedural scene kit: recipes in data/, datasets in data/generated/.")
    sub = parser.add_subparsers(dest="action", required=True, parser_class=_Parser)
    sub.add_parser("list", help="list the recipes, their scenes and styles")
    make = sub.add_parser("make", help="write a recipe's datasets (every scene in every style)")
    make.add_argument("name", help="recipe name, e.g. demo (data/demo.toml)")
    make.add_argument("--size", type=int, default=None, help="image size in pixels (default: the recipe's)")
    make.add_argument("--force", action="store_true", help="write again even when the output is current")
    make.add_argument("--out", default="data/generated", help="folder for the datasets (default: data/generated)")
    make.add_argument("--format", choices=("blender", "nerfstudio", "colmap"), default="blender", help="dataset format (default: blender)")
    args = parser.parse_args(argv)
    from fastjoint.scenes import list_recipes, load_recipe, make_datasets

    if args.action == "list":
        for path in list_recipes():
            recipe = load_recipe(path)
            print(f"{recipe.name}: {recipe.description}")
            print(f"  file: {path}")
            print(f"  scenes: {', '.join(recipe.scenes)}; styles: {', '.join(recipe.styles)}")
            views = recipe.views
            print(f"  {recipe.camera.size}px, {views.train}/{views.val}/{views.test} train/val/test views")
        return 0
    if args.size is not None and args.size < 8:
        raise UserError("--size: must be at least 8 pixels")
    from rich.progress import Progress

    from fastjoint.log import console

    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"scenes {args.name}", total=None)
        folder = make_datasets(
            args.name,
            root=args.out,
            size=args.size,
            force=args.force,
            format=args.format,
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    print(f"datasets of '{args.name}' in {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

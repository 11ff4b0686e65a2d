"""The `sweep` verb: a grid of ordinary runs (fastjoint.sweepfile) as tasks on Ray.

Each point of the grid is one Ray task that runs `fastjoint train` (and `analyze`) as a
subprocess on its point's config, so that a sweep trains with the very code of `train`. By
default Ray starts a local cluster sized to the machine; `address` joins a running one (the
sweep folder must then be on a filesystem every node sees).

Nothing is lost or done twice: a run's outcome is written into its folder (`RUN/sweep.json`),
so a sweep started again skips the runs that finished, resumes the interrupted ones from
their checkpoints (`train --resume`) and, unless asked to retry them, reports the failed ones
with their one-line error. A worker killed mid-run is replaced by Ray, which runs the task
again: it resumes the run from its last checkpoint. The training subprocess is tied to its
worker (it receives SIGTERM when the worker dies, so it checkpoints and stops instead of
living on) and runs in a session of its own, out of the worker's process group: Ray cleans
up a dead worker's group with SIGKILL a fraction of a second after its SIGTERM, which would
cut the training's last checkpoint short. One sweep at a time writes a sweep folder (its `.lock`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fastjoint.checkpoints import has_checkpoint
from fastjoint.datasets import check_test_splits, ensure_datasets
from fastjoint.errors import Interrupted, UserError
from fastjoint.files import RunLock, write_json, write_text
from fastjoint.schema import to_toml
from fastjoint.sweepfile import AFTER, GridPoint, SweepFile, load_sweep
from fastjoint.sweepsummary import write_summary

STATUS = "sweep.json"  # in each run folder: {"status": "done" | "failed", "error": ..., "attempts": n}
POINTS = "points"  # the sweep folder's points/<name>.toml: each run's config
LOGS = "logs"  # the sweep folder's logs/<name>.log: each run's commands and output
INSTALL = 'fastjoint sweep needs Ray: pip install -e ".[sweep]" (or pip install "ray>=2.9")'
WORKER_RETRIES = 3  # times Ray runs a task again when its worker dies
WRITER_PATIENCE = 300.0  # seconds a task waits for an earlier attempt's training to save and end


@dataclass(frozen=True)
class SweepSettings:
    """How a sweep runs."""

    address: str | None = None
    """A running Ray cluster to join (ray.init's address, e.g. "auto" or "ray://host:10001"); None: a local one."""
    cpus_per_run: float = 1.0
    """CPUs each run takes (Ray's num_cpus; also its torch threads)."""
    gpus_per_run: float = 0.0
    """GPUs each run takes (Ray's num_gpus)."""
    retry_failed: bool = False
    """Run the failed runs again instead of reporting them."""
    summary_only: bool = False
    """Write summary.json and summary.md from the runs there are, and start nothing."""


class PointTask(NamedTuple):
    """What a Ray task needs to run one point (plain data: it travels to the worker)."""

    name: str
    run_dir: str  # absolute
    config: str  # absolute path of its points/<name>.toml
    log: str  # absolute path of its logs/<name>.log
    after: tuple[str, ...]
    cpus: float
    cwd: str
    env: dict[str, str]


class Outcome(NamedTuple):
    """How a task ended: "done", "failed" (with the one-line error) or "interrupted"."""

    status: str
    error: str = ""


@dataclass(frozen=True)
class SweepResult:
    folder: Path
    points: list[GridPoint]
    status: dict[str, str]  # point name -> done | failed | pending
    errors: dict[str, str]  # point name -> the one-line error of a failed run
    summary: dict[str, Any]


Progress = Callable[[dict[str, int]], None]  # {"done", "failed", "running", "pending", "total"}


def read_status(run_dir: Path) -> dict[str, Any]:
    """A run's sweep.json ({} when absent or unreadable: the run has not ended under a sweep)."""
    with contextlib.suppress(OSError, ValueError):
        value = json.loads((run_dir / STATUS).read_text())
        if isinstance(value, dict):
            return value
    return {}


def sweep(path: str | Path, settings: SweepSettings = SweepSettings(), progress: Progress | None = None) -> SweepResult:
    """Runs (or continues) the sweep of a sweep file; writes its summary. See the module's docstring.

    Raises UserError (one line) for a mistake in the sweep file, any point's config or data,
    a sweep folder another sweep is writing, or Ray missing; Interrupted on Ctrl-C or SIGTERM,
    after the running runs have checkpointed.
    """
    sweep_file, points = load_sweep(path)
    folder = sweep_file.folder
    if not settings.summary_only:
        _import_ray()  # a missing Ray is said before any work
    _check_points(sweep_file, points)
    with RunLock(folder, writer="fastjoint sweep", what="sweep", advice="give the sweep another name"):
        for sub in (POINTS, LOGS):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        write_text(folder / "sweep.toml", Path(path).read_text())
        for point in points:
            write_text(folder / POINTS / f"{point.name}.toml", to_toml(point.config))
        status, errors = {}, {}
        for point in points:
            saved = read_status(folder / point.name)
            status[point.name] = saved.get("status") if saved.get("status") in ("done", "failed") else "pending"
            errors[point.name] = saved.get("error", "")
        todo = [p for p in points if status[p.name] == "pending" or (status[p.name] == "failed" and settings.retry_failed)]
        if todo and not settings.summary_only:
            _run_on_ray(sweep_file, folder, todo, settings, status, errors, progress)
        summary = write_summary(folder, points, status)
    return SweepResult(folder, points, status, {k: v for k, v in errors.items() if status[k] == "failed"}, summary)


def _check_points(sweep_file: SweepFile, points: list[GridPoint]) -> None:
    """Every point's data is there (the kit writes its own once) before any run starts."""
    seen: list = []
    for point in points:
        data = point.config.data
        if data in seen:
            continue
        seen.append(data)
        ensure_datasets(data)
        if "eval" in sweep_file.after or "render" in sweep_file.after:
            check_test_splits(data)


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL) from None
    return ray


def _run_on_ray(
    sweep_file: SweepFile,
    folder: Path,
    todo: list[GridPoint],
    settings: SweepSettings,
    status: dict[str, str],
    errors: dict[str, str],
    progress: Progress | None,
) -> None:
    ray = _import_ray()
    refs: dict[Any, str] = {}
    ray.init(
        address=settings.address,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        configure_logging=True,
    )
    try:
        task = ray.remote(num_cpus=settings.cpus_per_run, num_gpus=settings.gpus_per_run, max_retries=WORKER_RETRIES)(run_point)
        env = {key: os.environ[key] for key in ("PYTHONPATH", "FASTJOINT_CACHE", "FASTJOINT_NATIVE") if key in os.environ}
        cwd = str(Path.cwd())
        for point in todo:
            spec = PointTask(
                name=point.name,
                run_dir=str((folder / point.name).resolve()),
                config=str((folder / POINTS / f"{point.name}.toml").resolve()),
                log=str((folder / LOGS / f"{point.name}.log").resolve()),
                after=tuple(step for step in AFTER if step in sweep_file.after),
                cpus=settings.cpus_per_run,
                cwd=cwd,
                env=env,
            )
            status[point.name] = "pending"
            refs[task.remote(spec)] = point.name
        _wait(ray, refs, status, errors, progress)
    except KeyboardInterrupt as stop:
        interrupted = Interrupted.of(stop)
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.cancel(ref)  # the task passes Ctrl-C on to its training, which checkpoints
        for ref in refs:
            with contextlib.suppress(Exception):
                ray.get(ref)
        done = sum(1 for s in status.values() if s == "done")
        raise Interrupted(
            interrupted.signum,
            f"{interrupted.how.split(' (')[0]} ({done} of {len(status)} runs done); run the same command to continue",
        ) from None
    finally:
        ray.shutdown()


def _wait(ray, refs: dict, status: dict[str, str], errors: dict[str, str], progress: Progress | None) -> None:
    pending = dict(refs)
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
        for ref in ready:
            name = pending.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.WorkerCrashedError:
                outcome = Outcome("failed", f"its Ray worker died {WORKER_RETRIES + 1} times")
            except ray.exceptions.RayError as error:
                outcome = Outcome("failed", f"Ray: {str(error).strip().splitlines()[0]}")
            if outcome.status == "interrupted":
                status[name] = "pending"
            else:
                status[name] = outcome.status
                errors[name] = outcome.error
        if progress is not None:
            counts = {s: sum(1 for v in status.values() if v == s) for s in ("done", "failed")}
            waiting = len(status) - counts["done"] - counts["failed"] - len(pending)
            progress({**counts, "running": len(pending), "pending": waiting, "total": len(status)})


# --- on a worker ---------------------------------------------------------------------


def run_point(task: PointTask) -> Outcome:
    """Trains (or resumes) one point's run, then does what the sweep asks after training.

    Runs on a Ray worker; `fastjoint train` runs as its child, tied to it (SIGTERM when the
    worker dies). Ctrl-C here (Ray's cancel) is passed on to the child, which checkpoints.
    """
    run_dir = Path(task.run_dir)
    saved = read_status(run_dir)
    attempts = int(saved.get("attempts", 0)) + 1
    env = {**os.environ, **task.env, "COLUMNS": "120"}
    env.setdefault("OMP_NUM_THREADS", str(max(1, int(task.cpus))))
    with open(task.log, "a") as log:
        _wait_for_writer(run_dir, log)
        resume = has_checkpoint(run_dir)
        train = ["train", task.config, "--orbit", "48" if "render" in task.after else "0"]
        train += [] if "eval" in task.after else ["--no-eval"]
        train += [] if "render" in task.after else ["--no-render"]
        commands = [train + (["--resume"] if resume else [])]
        if "analyze" in task.after:
            commands.append(["analyze", str(run_dir)])
        for args in commands:
            outcome = _run_cli(args, task.cwd, env, log)
            if outcome is not None:
                if outcome.status == "failed":
                    _write_status(run_dir, {"status": "failed", "error": outcome.error, "attempts": attempts})
                return outcome
    _write_status(run_dir, {"status": "done", "attempts": attempts, "resumed": resume})
    return Outcome("done")


def _run_cli(args: list[str], cwd: str, env: dict[str, str], log) -> Outcome | None:
    """One `fastjoint` command as this worker's child; None when it succeeded."""
    log.write(f"$ fastjoint {' '.join(args)}\n")
    log.flush()
    started = log.tell()
    child = subprocess.Popen(
        [sys.executable, "-m", "fastjoint", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        preexec_fn=functools.partial(_tie_to_parent, os.getpid()),
        start_new_session=True,  # out of reach of Ray's cleanup of the worker's process group
    )
    try:
        code = child.wait()
    except KeyboardInterrupt:  # Ray's cancel, or the sweep stopping: the child checkpoints
        child.send_signal(signal.SIGINT)
        child.wait()
        raise
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    log.flush()
    if code == 0:
        return None
    if code in (130, 143):
        return Outcome("interrupted")
    with open(log.name) as reader:
        reader.seek(started)
        lines = [line.strip() for line in reader.read().splitlines() if line.strip().startswith("error:")]
    error = lines[-1].removeprefix("error:").strip() if lines else f"fastjoint {args[0]} ended with exit status {code}"
    return Outcome("failed", error)


def _tie_to_parent(parent: int) -> None:
    """In the child, before exec: SIGTERM when the parent (the Ray worker, PID `parent`) dies, so
    that a killed worker's training checkpoints and ends instead of holding its run (Linux;
    elsewhere a no-op). A parent gone before the tie was made ends the child before it starts."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(128 + signal.SIGTERM)


def _wait_for_writer(run_dir: Path, log) -> None:
    """Waits while another process writes the run: a training whose worker died, finishing its
    checkpoint (it ends once saved). One that holds it longer than WRITER_PATIENCE is an error."""
    give_up = time.monotonic() + WRITER_PATIENCE
    while True:
        try:
            with RunLock(run_dir):
                return
        except UserError:
            if time.monotonic() > give_up:
                raise
            log.write(f"waiting for the process writing {run_dir} to end\n")
            log.flush()
            time.sleep(1.0)


def _write_status(run_dir: Path, value: dict[str, Any]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / STATUS, value)

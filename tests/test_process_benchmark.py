"""`python -m benchmarks.process --resume`: a stopped benchmark goes on only with the arguments it was started with.

The benchmark itself (COLMAP, trainings) takes 25 minutes a seed on 2 cores; what a resumed one keeps
and skips was checked by resuming one (benchmarks/README.md, "The benchmark's third seed"). Here, its guard.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

from benchmarks.process import STATE, arguments, begin, command_line, started
from conftest import REPO

STARTED = ("--size", "384", "--noise", "--repeats", "1", "--seeds", "0", "1", "2", "--rounds", "1")


def resume(runs, *argv: str) -> subprocess.CompletedProcess:
    """The benchmark with --resume, in a process group of its own: if the guard let it through, what it
    started (COLMAP, trainings) is killed with it."""
    command = [sys.executable, "-m", "benchmarks.process", "--runs", str(runs), "--resume", *argv]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    process = subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_a_benchmark_resumes_only_with_its_arguments(tmp_path):
    runs = tmp_path / "runs"
    (runs / "kept").mkdir(parents=True)
    begin(runs, arguments(command_line().parse_args(["--runs", str(runs), *STARTED])))
    assert not (runs / "kept").exists()  # started afresh: the folder emptied
    # The same arguments (another --results, the same --runs) pass the guard.
    started(runs, arguments(command_line().parse_args([*STARTED, "--runs", str(runs), "--results", str(tmp_path)])))

    (runs / "kept").mkdir()
    done = resume(runs, *STARTED[:-1], "2")  # --rounds 2, not 1
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(runs / STATE) in line and "--rounds 1 (now 2)" in line
    assert (runs / "kept").is_dir()  # nothing removed
    assert json.loads((runs / STATE).read_text())["arguments"]["rounds"] == 1


def test_resume_without_a_started_benchmark_is_one_line(tmp_path):
    done = resume(tmp_path / "none", *STARTED)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert str(tmp_path / "none" / STATE) in line and "not found" in line
    assert not (tmp_path / "none").exists()

    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / STATE).write_text("{")
    done = resume(tmp_path / "broken", *STARTED)
    assert done.returncode == 2 and "not a benchmark's state" in done.stderr.strip(), done.stderr

"""Atomic writes, the kept previous file, and the run lock, in-process."""

from __future__ import annotations

import os

import pytest

from fastjoint.errors import UserError
from fastjoint.files import RunLock, atomic_path, atomic_write, remove_partials, replace_keeping_previous, write_text


def test_a_failed_write_leaves_the_old_file_and_no_partial(tmp_path):
    path = tmp_path / "eval.json"
    write_text(path, "old\n")

    def half_then_fail(handle):
        handle.write(b"new, but only ha")
        raise RuntimeError("the writer broke")

    with pytest.raises(RuntimeError, match="the writer broke"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["eval.json"]


def test_an_os_error_names_the_target_not_the_partial(tmp_path):
    path = tmp_path / "latest.pt"
    with pytest.raises(OSError) as raised, atomic_path(path) as partial:
        partial.write_bytes(b"x")
        raise OSError(28, "No space left on device")  # as a write to a handle raises it: no name
    assert raised.value.filename == str(path) and raised.value.errno == 28
    assert not list(tmp_path.iterdir())


def test_the_replaced_file_becomes_previous_and_the_latest_never_disappears(tmp_path):
    latest, previous = tmp_path / "latest.pt", tmp_path / "previous.pt"
    for content in (b"first", b"second", b"third"):
        partial = tmp_path / "new.partial"
        partial.write_bytes(content)
        replace_keeping_previous(partial, latest, previous)
    assert latest.read_bytes() == b"third" and previous.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "previous.pt"]
    assert os.stat(latest).st_ino != os.stat(previous).st_ino


def test_stale_partials_are_removed(tmp_path):
    (tmp_path / "latest.123.partial.pt").write_bytes(b"cut short")
    (tmp_path / "latest.pt").write_bytes(b"whole")
    remove_partials(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]


def test_the_run_lock_admits_one_writer_and_names_it(tmp_path):
    run = tmp_path / "run"
    first = RunLock(run).acquire()
    assert (run / ".lock").read_text() == f"{os.getpid()}\n"
    with pytest.raises(UserError, match=rf"another fastjoint train \(PID {os.getpid()}\) is writing this run"):
        RunLock(run).acquire(patience=0.0)
    first.release()
    assert not (run / ".lock").exists()  # an idle run holds no lock file
    with RunLock(run) as second:
        assert (run / ".lock").read_text() == f"{os.getpid()}\n"
    assert second is not None and not (run / ".lock").exists()


def test_a_lock_file_left_by_a_killed_writer_is_taken_over(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("999999\n")  # a PID whose process is gone: nothing holds the OS lock
    lock = RunLock(run).acquire(patience=0.0)
    assert (run / ".lock").read_text() == f"{os.getpid()}\n"
    lock.release()

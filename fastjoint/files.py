"""Writing files so that a kill or a failed write at any moment leaves either the old file
or the new one, never a partial file; and the one-writer lock of a run folder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from fastjoint.errors import UserError

PARTIAL = ".partial"  # suffix of a file being written; renamed over its target when whole

# errno values that say something about the machine (a full disk, a read-only or forbidden
# folder), not about fastjoint's code: they end as one line naming the path.
ENVIRONMENT_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.EFBIG, errno.ENAMETOOLONG}
)


@contextlib.contextmanager
def naming(path: Path) -> Iterator[None]:
    """Gives an OSError raised inside (a write to an open handle carries no file name) the name `path`."""
    try:
        yield
    except OSError as error:
        if error.filename is None and error.errno is not None:
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise


@contextlib.contextmanager
def atomic_path(path: Path, previous: Path | None = None) -> Iterator[Path]:
    """Yields a partial path beside `path` to write; renamed over `path` when the block ends.

    If the block raises (a full disk, a kill by Ctrl-C), the partial file is removed and any
    file already at `path` is left as it was. OSErrors name `path`, not the partial file.

    Args:
        path: the file to write.
        previous: if given, the file now at `path` is kept there (see `replace_keeping_previous`).
    """
    path = Path(path)
    with naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = partial_path(path)
        try:
            yield partial
            fsync(partial)
            if previous is None:
                os.replace(partial, path)
            else:
                replace_keeping_previous(partial, path, previous)
        except OSError as error:
            if error.filename is not None and Path(error.filename) == partial:
                raise OSError(error.errno, error.strerror, str(path)) from error
            raise
        finally:
            _remove(partial)


def _remove(path: Path) -> None:
    """Removes `path` if it is there (on a read-only disk, where it cannot be, unlink itself fails)."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        if path.exists():
            raise


def partial_path(path: Path) -> Path:
    """Where `path` is written before it is whole: latest.pt -> latest.<pid>.partial.pt.

    One name per process, so that two writers (eval beside eval) never share a partial file;
    the suffix stays last, so that writers that choose a format by it (ffmpeg) still can.
    """
    return path.with_name(f"{path.stem}.{os.getpid()}{PARTIAL}{path.suffix}")


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Calls `write` on a partial file beside `path`, syncs it, then renames it over `path`."""
    with atomic_path(path) as partial, naming(path), open(partial, "wb") as handle:
        write(handle)


def write_text(path: Path, text: str) -> None:
    """`text` to `path`, atomically."""
    atomic_write(path, lambda handle: handle.write(text.encode()))


def write_image(path: Path, pixels: Any) -> None:
    """An image (format from the suffix of `path`, e.g. PNG) written atomically.

    Args:
        path: the image file.
        pixels: [H, W, 3 or 4] uint8 array.
    """
    import imageio.v3 as iio

    atomic_write(path, lambda handle: iio.imwrite(handle, pixels, extension=path.suffix))


def write_json(path: Path, value: Any) -> None:
    """`value` as indented JSON, atomically."""
    write_text(path, json.dumps(value, indent=2) + "\n")


def replace_keeping_previous(partial: Path, path: Path, previous: Path) -> None:
    """Renames `partial` over `path`, first making the file now at `path` the new `previous`.

    `path` exists at every moment (a reader beside the writer always finds a whole file): the
    old file is hard-linked to `previous` before `partial` replaces it.
    """
    if path.is_file():
        link = partial_path(previous)
        _remove(link)
        try:
            try:
                os.link(path, link)
            except OSError as error:  # a file system without hard links: copy instead
                if error.errno not in (errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EXDEV):
                    raise
                with naming(previous), open(path, "rb") as source, open(link, "wb") as target:
                    while chunk := source.read(1 << 20):
                        target.write(chunk)
                fsync(link)
            os.replace(link, previous)
        finally:
            _remove(link)
    os.replace(partial, path)


def remove_partials(folder: Path) -> None:
    """Removes partial files left in `folder` by a writer that was killed mid-write."""
    if folder.is_dir():
        for stale in folder.glob(f"*{PARTIAL}*"):
            stale.unlink(missing_ok=True)


def fsync(path: Path) -> None:
    """Flushes a written file to the disk, so that a rename after it never publishes an empty file."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


class RunLock:
    """The one-writer lock of a run folder: an OS lock on RUN/.lock, which holds the writer's PID.

    The operating system releases the lock when the process ends, however it ends, so a killed
    run never leaves a stale lock (its .lock file, left behind, is simply taken over). A lock
    released normally removes its file, so an idle run folder holds no .lock.
    """

    NAME = ".lock"

    def __init__(
        self, run_dir: Path, writer: str = "fastjoint train", what: str = "run", advice: str = "train under another --name"
    ) -> None:
        """`writer`, `what` and `advice` word the refusal: who else holds the lock, what it writes, what to do instead."""
        self.path = Path(run_dir) / self.NAME
        self.writer = writer
        self.what = what
        self.advice = advice
        self._fd: int | None = None

    def acquire(self, patience: float = 1.0) -> RunLock:
        """Takes the lock, or raises UserError naming the PID of the process that holds it.

        Args:
            patience: seconds to keep trying while the holder is just taking the lock (its PID
                not yet written) or just releasing it.
        """
        give_up = time.monotonic() + patience
        with naming(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    os.close(fd)
                    if holder or time.monotonic() > give_up:
                        who = f"PID {holder}" if holder else "a process whose PID is not written yet"
                        raise UserError(
                            f"{self.path.parent}: another {self.writer} ({who}) is writing this {self.what}; "
                            f"wait for it to end or stop it, or {self.advice}"
                        ) from None
                    time.sleep(0.05)
                    continue
                if self._is_current(fd):
                    break
                os.close(fd)  # locked a file its holder removed on release: take the new one
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except BaseException:
                self._unlink_and_close(fd)
                raise
        self._fd = fd
        return self

    def _is_current(self, fd: int) -> bool:
        """Whether `fd` is still the file at self.path (a releasing holder removes it)."""
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def _unlink_and_close(self, fd: int) -> None:
        # Removed while still locked: whoever opened this file meanwhile finds it gone and retries.
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(fd)

    def release(self) -> None:
        """Removes the lock file and releases the lock (idempotent)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            self._unlink_and_close(fd)

    def __enter__(self) -> RunLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

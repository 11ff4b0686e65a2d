"""The exception types that end a command with one line instead of a traceback."""

from __future__ import annotations

import signal


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit status 2, no traceback.

    The message names the file or key at fault and what is wrong with it.
    """


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) or SIGTERM: the command stops, says so in one line, and exits 128 + signal.

    Args:
        signum: the signal that stopped the command.
        message: the line to print; "" for the plain "interrupted" or "terminated".
    """

    def __init__(self, signum: int = signal.SIGINT, message: str = "") -> None:
        super().__init__(message)
        self.signum = int(signum)
        self.message = message

    @property
    def exit_status(self) -> int:
        return 128 + self.signum

    @property
    def how(self) -> str:
        """What stopped the command, as a user names it."""
        return "interrupted (Ctrl-C)" if self.signum == signal.SIGINT else f"terminated ({signal.Signals(self.signum).name})"

    @classmethod
    def of(cls, stop: KeyboardInterrupt) -> Interrupted:
        """`stop` as an Interrupted (a plain KeyboardInterrupt is Ctrl-C)."""
        return stop if isinstance(stop, Interrupted) else cls(signal.SIGINT)


def raise_interrupted(signum: int, frame) -> None:
    """A signal handler that stops the command as Ctrl-C does (SIGTERM: exit status 143)."""
    raise Interrupted(signum)

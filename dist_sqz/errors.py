"""Errors a user can cause, and failures of the network. The CLI prints each as one line."""

from __future__ import annotations


def first_line(e: BaseException, limit: int = 100) -> str:
    """An exception as a clause of one line: its message's first line (at most `limit`
    characters), or its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__


class UsageError(ValueError):
    """Bad input: a wrong option, a missing file, an unreachable rendezvous. Exit status 2.

    The message says what is wrong and how to fix it, in one line. `rank=None` means every
    worker finds the same fault (a config value): one process per host reports it. A rank
    number means only that worker found it (its own state file, its own rendezvous): that
    worker reports it, prefixed `rank r:` unless it is rank 0.
    """

    def __init__(self, message: str, rank: int | None = None) -> None:
        super().__init__(message)
        self.rank = rank


class RunFailure(RuntimeError):
    """The run cannot go on (a dead peer, a cut link, a full disk). Not bad input: the CLI
    prints the message, if this rank has one, as one line and exits 1; the last checkpoint
    is left as it was."""


class CommFailure(RunFailure):
    """A collective failed or timed out mid-run (a dead peer, a cut link)."""


class Stopped(Exception):
    """A signal (SIGTERM, SIGINT) stopped the run at a step boundary, after every rank saved
    its checkpoint state. The CLI prints `message` (rank 0's; other ranks carry '') and exits
    with `status` (128 + the signal number: 143, 130)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status

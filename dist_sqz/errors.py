"""Errors a user can cause. The CLI prints them as one line and exits with status 2."""


class UsageError(ValueError):
    """Bad input: a wrong option, a missing file, an unreachable rendezvous.

    The message says what is wrong and how to fix it, in one line.
    """


class CommFailure(RuntimeError):
    """A collective failed or timed out mid-run (a dead peer, a cut link). Not bad input:
    the CLI prints one line and exits 1; the last checkpoint is left as it was."""

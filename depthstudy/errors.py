"""Errors a user can cause. The CLI turns each into one line on stderr and its exit code."""


class DepthstudyError(Exception):
    """A runtime failure the user can act on (missing data, a corrupted file, a busy run)."""

    exit_code = 1


class UsageError(DepthstudyError):
    """Bad input on the command line or in a config: exit code 2, like any CLI usage error."""

    exit_code = 2

"""Errors that the CLI turns into one line on stderr and exit code 2."""


class UsageError(Exception):
    """Bad input from the user: a missing file, an unknown name, a wrong value."""

    exit_code = 2

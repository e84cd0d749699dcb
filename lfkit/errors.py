"""Errors that the CLI turns into one line on stderr and exit code 2."""


class UsageError(Exception):
    """Bad input from the user: a missing file, an unknown name, a wrong value."""

    exit_code = 2


def stop_run(message: str) -> None:
    """Stop a run from inside a hook, in whatever process it runs: one line on stderr, exit code 2."""
    import sys

    sys.stderr.write(f"lfkit: error: {' '.join(str(message).split())}\n")
    raise SystemExit(2)

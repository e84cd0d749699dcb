"""How a run that did not finish ends its process, the same for ``lfkit run`` and a Slurm job's node."""

from __future__ import annotations

import contextlib
import errno
import sys

from .runner import RunInterrupted, StepFailed


@contextlib.contextmanager
def run_failures():
    """A failed step: the lines of its log that name the error and where the whole log is (exit 1).
    A stopped run: one line that says how to continue it (exit 130)."""
    try:
        yield
    except StepFailed as exc:
        sys.stderr.write(f"lfkit: error: {' '.join(str(exc).split())}\n")
        for line in exc.lines:
            sys.stderr.write(f"  {line}\n")
        if exc.log is not None:
            sys.stderr.write(f"  full log: {exc.log}\n")
        raise SystemExit(1) from None
    except RunInterrupted as exc:
        sys.stderr.write(f"lfkit: interrupted: {exc}\n")
        raise SystemExit(130) from None
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        sys.stderr.write(
            f"lfkit: error: {where}{exc.strerror}; the run stopped: free space there, then run the same "
            "command again to continue\n"
        )
        raise SystemExit(1) from None

"""Problems in lfkit's own state (its home folder, registry files, plugins, switches).

lfkit lives in every Python process of the environment through its .pth file, so a
problem of its own must never stop a process: it is recorded here, the process goes
on, one warning line at most is printed, and ``lfkit doctor`` lists each problem
with how to mend it.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Problem:
    what: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


_found: list[Problem] = []
_warned = False


def report(what: str, fix: str) -> None:
    problem = Problem(what, fix)
    if problem not in _found:
        _found.append(problem)


def found() -> list[Problem]:
    return list(_found)


def warn_once() -> None:
    """One stderr line for all problems found so far, once per process."""
    global _warned
    if _warned or not _found:
        return
    _warned = True
    more = f" (+{len(_found) - 1} more)" if len(_found) > 1 else ""
    sys.stderr.write(f"lfkit: warning: {_found[0].what}{more}; `lfkit doctor` says how to mend it\n")


def reset_for_tests() -> None:
    global _warned
    _found.clear()
    _warned = False

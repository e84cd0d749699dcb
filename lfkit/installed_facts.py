"""Facts about the installed LLaMA-Factory, read once per installed version and kept in lfkit's home.

Checking a recipe needs only names: LLaMA-Factory's argument keys and their types, its
chat templates. Reading them means importing LLaMA-Factory, which pulls in torch,
transformers and peft: about ten seconds on every `lfkit run` before anything starts.
So each fact is kept as JSON under ``$LFKIT_HOME/cache``, named by what it depends on
(the versions installed, and the size and time of LLaMA-Factory's files that define it,
for an editable install that changes without a new version).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from lfkit.atomic import write_json
from lfkit.installed_dists import version
from lfkit.paths import lfkit_home, may_write_home
from lfkit.state_files import read_json_bounded

FORMAT = 1


def llamafactory_files(patterns: Iterable[str]) -> dict[str, Any] | None:
    """The installed llamafactory and transformers versions, and size and time of LLaMA-Factory's
    files matching ``patterns`` (relative to its package folder); None where it is not installed."""
    try:
        spec = importlib.util.find_spec("llamafactory")
        root = Path(next(iter(spec.submodule_search_locations)))
        files = sorted({f for pattern in patterns for f in root.glob(pattern)})
        versions = {name: version(name) for name in ("llamafactory", "transformers")}
        if None in versions.values():
            return None
        return {
            **versions,
            "files": [[str(f.relative_to(root)), f.stat().st_size, f.stat().st_mtime_ns] for f in files],
        }
    except (ImportError, AttributeError, StopIteration, TypeError, ValueError, OSError):
        return None


def remembered(
    name: str, depends_on: dict[str, Any] | None, compute: Callable[[], Any], sound: Callable[[Any], bool] = bool
) -> Any:
    """``compute()``, or what it returned before for the same ``depends_on``; a JSON value.

    Without ``depends_on`` (nothing to tell versions apart) it is computed every time. A home
    that cannot be written (read-only, full) only costs the time. A kept value ``sound`` rejects
    (a damaged or hand-edited file) is computed again and replaced, never used.
    """
    if depends_on is None:
        return compute()
    identity = {"fact": name, "format": FORMAT, "python": list(sys.version_info[:2]), **depends_on}
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
    path = lfkit_home() / "cache" / f"{name}-{digest}.json"
    try:
        kept = read_json_bounded(path)
        if kept.get("identity") == identity and sound(kept["value"]):
            return kept["value"]
    except (OSError, ValueError, AttributeError, KeyError, TypeError):
        pass
    value = compute()
    if not may_write_home():
        return value
    with contextlib.suppress(OSError):
        write_json(path, {"identity": identity, "value": value})
    return value

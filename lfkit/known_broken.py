"""Combinations of installed packages known to fail, found from their versions alone.

Each check reads versions through lfkit.installed_dists (nothing is imported: numpy, pyarrow and
torch cost seconds, and a broken combination may be the reason they cannot be imported) and
answers a ``problems.Problem``: what fails, and the one-line fix. `lfkit doctor` lists them; an
lfkit command that runs into the numpy / pyarrow one says it in one line (``import_failure``).
"""

from __future__ import annotations

from typing import Any

from .installed_dists import version
from .patching import Status, disabled_ids
from .problems import Problem

# pyarrow 26 is built for NumPy 2 and refuses NumPy 1 on import ("pyarrow requires NumPy 2.0 or newer,
# found 1.26.4"; apache/arrow PR 50769 "Require numpy 2.0"). pyarrow 20 - 25 import and work with
# numpy 1.26, as torch < 2.3 needs: DTK's builds are made against numpy 1.
PYARROW_NEEDS_NUMPY2 = 26
# transformers 4.52 imports DTensor from torch.distributed.tensor when saving (save_pretrained), which
# torch < 2.5 does not have; lfkit's patch of this id mends it. 4.50 and 4.51 do not name DTensor there
# (their pytorch_utils.id_tensor_storage and modeling_utils, read), 4.53 only on torch >= 2.5.
DTENSOR_PATCH = "transformers-dtensor-import"
DTENSOR_TRANSFORMERS = (4, 52)
DTENSOR_TORCH = (2, 5)


def _release(found: str | None) -> tuple[int, ...] | None:
    from packaging.version import InvalidVersion, Version

    try:
        return Version(found).release if found else None
    except InvalidVersion:
        return None


def numpy_pyarrow(found: dict[str, str | None] | None = None) -> Problem | None:
    """pyarrow 26+ with numpy 1: ``import datasets`` (so every LLaMA-Factory import) fails."""
    found = found or {name: version(name) for name in ("numpy", "pyarrow", "torch")}
    numpy, pyarrow = _release(found.get("numpy")), _release(found.get("pyarrow"))
    if numpy is None or pyarrow is None or numpy[0] >= 2 or pyarrow[0] < PYARROW_NEEDS_NUMPY2:
        return None
    torch = _release(found.get("torch"))
    keep = f"keep numpy 1: torch {found['torch']} is built for it" if torch and torch[:2] < (2, 3) else "keep numpy 1"
    return Problem(
        f"pyarrow {found['pyarrow']} needs NumPy 2 and numpy {found['numpy']} is installed: `import datasets`, "
        'and so LLaMA-Factory, fails with "pyarrow requires NumPy 2.0 or newer"',
        f'pip install "pyarrow<{PYARROW_NEEDS_NUMPY2}" ({keep})',
    )


def transformers_dtensor(patches: Any, found: dict[str, str | None] | None = None) -> Problem | None:
    """transformers 4.52 with torch < 2.5, and the patch that mends it off, missing or skipped
    (``patches``: the plugin manager's patch registry; the patch is looked up by its id)."""
    found = found or {name: version(name) for name in ("transformers", "torch")}
    transformers, torch = _release(found.get("transformers")), _release(found.get("torch"))
    if transformers is None or torch is None or transformers[:2] != DTENSOR_TRANSFORMERS:
        return None
    if torch[:2] >= DTENSOR_TORCH:
        return None
    pin = 'pip install "transformers<4.52"'
    state = patches.states.get(DTENSOR_PATCH)
    if state is None:
        why, fix = f"this lfkit has no {DTENSOR_PATCH} fix", pin
    elif state.status is Status.DISABLED:
        why = f"its fix {DTENSOR_PATCH} is turned off by LFKIT_DISABLE_PATCHES"
        named = "all" if "all" in disabled_ids() else DTENSOR_PATCH
        fix = f"take {named} out of LFKIT_DISABLE_PATCHES, or {pin}"
    elif state.status is Status.APPLIED:
        return None
    elif state.status is Status.WAITING:
        verdict = patches.verdict(state)
        if not verdict.startswith("would skip"):
            return None  # it applies when transformers is imported
        why, fix = f"its fix {DTENSOR_PATCH} {verdict}", pin
    else:  # skipped, failed, reverted in this process
        detail = f": {state.detail}" if state.detail else ""
        why, fix = f"its fix {DTENSOR_PATCH} is {state.status.value}{detail}", pin
    return Problem(
        f"transformers {found['transformers']} with torch {found['torch']}: save_pretrained fails "
        f"(cannot import DTensor from torch.distributed.tensor, which torch < 2.5 lacks), and {why}",
        fix,
    )


def found(patches: Any) -> list[Problem]:
    """Every known-broken combination installed here."""
    return [p for p in (numpy_pyarrow(), transformers_dtensor(patches)) if p is not None]


def import_failure(exc: BaseException) -> str | None:
    """The one line an lfkit command stops with when ``exc`` (or an exception it came from) is the
    ImportError of the numpy / pyarrow mismatch; None for any other failure."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ImportError) and "NumPy 2" in str(exc):
            problem = numpy_pyarrow()
            if problem is not None:
                return f"{problem.what}; fix: {problem.fix}"
            numpy = version("numpy")  # another package built for NumPy 2: said as it says it
            return f"{str(exc).strip().splitlines()[0]}; fix: install a release of it built for numpy {numpy}"
        exc = exc.__cause__ or exc.__context__
    return None

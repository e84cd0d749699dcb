"""Combinations of installed packages known to fail, found from their versions alone.

Each check reads versions through lfkit.installed_dists (nothing is imported: numpy, pyarrow and
torch cost seconds, and a broken combination may be the reason they cannot be imported) and
answers a ``problems.Problem``: what fails, and the one-line fix. `lfkit doctor` lists them; an
lfkit command that runs into the numpy / pyarrow one says it in one line (``import_failure``).
"""

from __future__ import annotations

from typing import Any

from .installed_dists import version
from .lf_versions import release
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


# torch < 2.2 imports packaging from pkg_resources in torch.utils.cpp_extension (pytorch PR 113023 took it
# out for 2.2), and setuptools 81 no longer ships pkg_resources: every JIT extension and DeepSpeed op
# build then fails with "No module named 'pkg_resources'" (seen here with torch 2.1.2, setuptools 84).
PKG_RESOURCES_TORCH = (2, 2)
SETUPTOOLS_WITHOUT_PKG_RESOURCES = 81


# transformers 4.52 refuses torch.load below torch 2.6 (CVE-2025-32434: check_torch_load_is_safe, 13 call
# sites in trainer.py; 4.51.3 has none), and a Trainer resumes its optimizer, scheduler and RNG state
# from torch.save pickles: on DTK's torch 2.1 - 2.5 every resume from a checkpoint fails.
RESUME_GATE_TRANSFORMERS = (4, 52)
RESUME_GATE_TORCH = (2, 6)


def numpy_pyarrow(found: dict[str, str | None] | None = None) -> Problem | None:
    """pyarrow 26+ with numpy 1: ``import datasets`` (so every LLaMA-Factory import) fails."""
    found = found or {name: version(name) for name in ("numpy", "pyarrow", "torch")}
    numpy, pyarrow = release(found.get("numpy")), release(found.get("pyarrow"))
    if numpy is None or pyarrow is None or numpy[0] >= 2 or pyarrow[0] < PYARROW_NEEDS_NUMPY2:
        return None
    torch = release(found.get("torch"))
    keep = f"keep numpy 1: torch {found['torch']} is built for it" if torch and torch[:2] < (2, 3) else "keep numpy 1"
    return Problem(
        f"pyarrow {found['pyarrow']} needs NumPy 2 and numpy {found['numpy']} is installed: `import datasets`, "
        'and so LLaMA-Factory, fails with "pyarrow requires NumPy 2.0 or newer"',
        f'pip install "pyarrow<{PYARROW_NEEDS_NUMPY2}" ({keep})',
    )


def torch_setuptools(found: dict[str, str | None] | None = None) -> Problem | None:
    """torch < 2.2 with setuptools 81+: torch.utils.cpp_extension (DeepSpeed's ops, JIT builds) fails."""
    found = found or {name: version(name) for name in ("torch", "setuptools")}
    torch, setuptools = release(found.get("torch")), release(found.get("setuptools"))
    if torch is None or setuptools is None or torch[:2] >= PKG_RESOURCES_TORCH:
        return None
    if setuptools[0] < SETUPTOOLS_WITHOUT_PKG_RESOURCES:
        return None
    return Problem(
        f"torch {found['torch']} with setuptools {found['setuptools']}: torch.utils.cpp_extension imports "
        "pkg_resources, which setuptools 81 removed, so DeepSpeed's op builds and every JIT extension fail "
        "(\"No module named 'pkg_resources'\")",
        f'pip install "setuptools<{SETUPTOOLS_WITHOUT_PKG_RESOURCES}"',
    )


def resume_torch_load(found: dict[str, str | None] | None = None) -> Problem | None:
    """transformers 4.52+ with torch < 2.6: a training run cannot resume from its checkpoints."""
    found = found or {name: version(name) for name in ("transformers", "torch")}
    transformers, torch = release(found.get("transformers")), release(found.get("torch"))
    if transformers is None or torch is None or transformers[:2] < RESUME_GATE_TRANSFORMERS:
        return None
    if torch[:2] >= RESUME_GATE_TORCH:
        return None
    lf = release(found.get("llamafactory", version("llamafactory")))
    if lf is not None and lf[:3] >= (0, 9, 4):  # needs transformers >= 4.55: only a newer torch helps
        fix = 'pip install "torch>=2.6" (a build for your platform), or start the run anew (lfkit run ... --overwrite)'
    else:
        fix = 'pip install "transformers<4.52" (LLaMA-Factory 0.9.3 takes 4.51.3, whose Trainer has no such check)'
    return Problem(
        f"transformers {found['transformers']} with torch {found['torch']}: resuming a training run from a "
        "checkpoint fails (transformers 4.52 loads the optimizer state with torch.load only on torch >= 2.6, "
        "CVE-2025-32434)",
        fix,
    )


def transformers_dtensor(patches: Any, found: dict[str, str | None] | None = None) -> Problem | None:
    """transformers 4.52 with torch < 2.5, and the patch that mends it off, missing or skipped
    (``patches``: the plugin manager's patch registry; the patch is looked up by its id)."""
    found = found or {name: version(name) for name in ("transformers", "torch")}
    transformers, torch = release(found.get("transformers")), release(found.get("torch"))
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
    checks = (numpy_pyarrow(), torch_setuptools(), transformers_dtensor(patches), resume_torch_load())
    return [p for p in checks if p is not None]


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

"""LFKIT_SIMULATE: decide and report as on another platform, on a machine without it.

``LFKIT_SIMULATE=rocm:gfx906`` (also ``rocm:gfx90a``, ``dtk:gfx906``, ``cuda``, ``cpu``) makes
lfkit's platform detection answer with that platform and architecture, so ``lfkit doctor``,
``lfkit patches``, ``lfkit plan`` and ``lfkit run --dry-run`` show what would happen there, on a
login node before a DCU node is allocated. It changes what lfkit reports and decides; torch,
the driver and the real device are never touched. An optional third part gives the HIP
version: ``rocm:gfx906:6.2``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

ENV = "LFKIT_SIMULATE"
KINDS = ("rocm", "dtk", "cuda", "cpu")
# A HIP version each simulated stack plausibly ships with: ROCm 6.2, and DTK 24.04's HIP 5.7.
DEFAULT_HIP = {"rocm": "6.2.41133", "dtk": "5.7.24164"}
DEFAULT_ARCH = {"rocm": "gfx90a", "dtk": "gfx906"}
CARD_GIB = 16.0  # what a simulated card holds, unless gpu_memory= says otherwise


@dataclass(frozen=True)
class Simulated:
    kind: str
    arch: str | None
    hip: str | None
    text: str


class BadSimulation(ValueError):
    pass


def parse(text: str) -> Simulated:
    parts = [p.strip().lower() for p in text.split(":")]
    kind = parts[0]
    if kind not in KINDS:
        raise BadSimulation(f"{ENV}={text}: the platform is one of {', '.join(KINDS)} (e.g. rocm:gfx906)")
    if kind in ("cuda", "cpu"):
        if len(parts) > 1:
            raise BadSimulation(f"{ENV}={text}: {kind} takes no architecture")
        return Simulated(kind, None, None, text)
    arch = parts[1] if len(parts) > 1 and parts[1] else DEFAULT_ARCH[kind]
    if not arch.startswith("gfx"):
        raise BadSimulation(f"{ENV}={text}: an AMD architecture is a gfx name, e.g. gfx906 or gfx90a")
    hip = parts[2] if len(parts) > 2 and parts[2] else DEFAULT_HIP[kind]
    if not re.fullmatch(r"\d+(\.\d+){0,3}", hip):
        raise BadSimulation(f"{ENV}={text}: the HIP version is numbers and dots, e.g. rocm:gfx906:6.2")
    if len(parts) > 3:
        raise BadSimulation(f"{ENV}={text}: expected PLATFORM[:ARCH[:HIP]], e.g. rocm:gfx906:6.2")
    return Simulated(kind, arch, hip, text)


def simulated() -> Simulated | None:
    """The simulated platform, or None; a malformed value is reported once and ignored."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    try:
        return parse(text)
    except BadSimulation as exc:
        from . import problems

        problems.report(str(exc), f"unset {ENV}, or give e.g. rocm:gfx906, dtk:gfx906, rocm:gfx90a, cuda, cpu")
        return None


def real_work_refusal(what: str, dry_run: bool = True) -> str | None:
    """Why ``what`` (a run, a model load) must not start under a simulation, or None.

    A simulation decides as on another platform (its fixes, fp16 for a card this machine does
    not have) while the work itself would run here: the result would be recorded under a
    platform it never ran on. So only checking is simulated; real work is refused.
    """
    sim = simulated()
    if sim is None:
        return None
    instead = "add --dry-run to check it, or " if dry_run else ""
    return (
        f"{ENV}={sim.text} only checks what would happen on {sim.kind} (lfkit doctor, patches, plan, "
        f"run --dry-run); {what} would take place on this machine, deciding and recording as {sim.kind}: "
        f"{instead}unset {ENV} to run it here"
    )

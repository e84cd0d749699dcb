"""What the architecture-dependent fixes share: the GPU's gfx name, and whether a fix is switched on.

A fix that stops a run (in lfkit_prepare_args) is still a declared patch: its record is
listed and guarded like any other, and LFKIT_DISABLE_PATCHES turns its check off too.
"""

from __future__ import annotations

from collections.abc import Callable

from lfkit.patching import Patch, check_guards, disabled_ids


def amd_arch() -> str | None:
    """The gfx name of the GPU on ROCm / DTK (or the simulated one), else None."""
    from lfkit.platform_detect import detect_platform

    platform = detect_platform()
    return platform.arch if platform.kind in ("rocm", "dtk") else None


def switched_on(patch: Patch) -> bool:
    off = disabled_ids()
    return "all" not in off and patch.id not in off and check_guards(patch) is None


def needs(feature: str, supported: Callable[[str], bool | None]) -> Callable[[], str | None]:
    """A patch condition: nothing to fix where the architecture has ``feature`` (supported(arch) is True)."""

    def condition() -> str | None:
        arch = amd_arch()
        if not arch:
            return "the GPU architecture is not known (no visible device)"
        if supported(arch):
            return f"{arch} has {feature}"
        return None

    return condition

"""Patches as declared records: what they fix, where, when they apply, and how to undo them.

A patch never runs on import of lfkit. It is armed: it waits for its target module
and, when that module is imported, checks its platform and version guards, then
applies once. Every patch has a status a user can see (``lfkit patches``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from types import ModuleType
from typing import Any

from . import import_hooks

PLATFORMS = ("cuda", "rocm", "dtk", "cpu")
_SENTINEL = "__lfkit_patches__"


class SkipPatch(Exception):
    """Raised by a patch's apply() when, on a closer look, there is nothing to fix here."""


class Status(str, Enum):
    WAITING = "waiting"
    APPLIED = "applied"
    SKIPPED = "skipped"
    FAILED = "failed"
    DISABLED = "disabled"
    REVERTED = "reverted"


@dataclass(frozen=True)
class Patch:
    """One fix. ``apply(module, ctx)`` makes its changes through ``ctx`` so they can be undone.

    apply may return a short note for the status line, or raise SkipPatch(reason)
    when a closer look shows nothing to fix.
    """

    id: str
    why: str
    target: str
    apply: Callable[[ModuleType, PatchContext], str | None]
    reference: str = ""
    # None: every platform; otherwise a subset of PLATFORMS.
    platforms: frozenset[str] | None = None
    # distribution name -> the version range this patch was verified on.
    requires: Mapping[str, str] = field(default_factory=dict)
    # Extra clean-up beyond what ctx recorded (rarely needed).
    on_revert: Callable[[ModuleType], None] | None = None
    # The distribution whose version `lfkit patches` shows, when it is not the first
    # of `requires` (a patch may wait for one module but be about another package).
    distribution: str | None = None
    # A last guard, after platform and versions: the reason there is nothing to fix on this
    # machine (an architecture that has the feature), or None. Cheap, and asked before the
    # target is imported too, so `lfkit patches` can say what would happen.
    condition: Callable[[], str | None] | None = None

    @property
    def subject(self) -> str | None:
        if self.distribution:
            return self.distribution
        if self.requires:
            return next(iter(self.requires))
        return self.target.partition(".")[0]

    def __post_init__(self):
        if self.platforms is not None:
            unknown = set(self.platforms) - set(PLATFORMS)
            if unknown:
                raise ValueError(f"patch {self.id}: unknown platform(s) {sorted(unknown)}")


class Overlay:
    """``inner`` with some attributes replaced and the rest passed through: what one patched module
    sees in place of a module it imported by name (``subprocess`` for llamafactory.launcher).
    Patches stack: each overlays whatever the module held before."""

    def __init__(self, inner: Any, **replaced: Any) -> None:
        self._inner = inner
        self.__dict__.update(replaced)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class PatchContext:
    """Records every change a patch makes, so revert restores the originals exactly once saved."""

    _MISSING = object()

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def replace(self, owner: Any, attr: str, new: Any) -> Any:
        """Set ``owner.attr = new``; returns the original."""
        if isinstance(owner, type):
            # The raw class attribute: a staticmethod must come back as a staticmethod,
            # and an inherited one must come back by deleting ours.
            original = owner.__dict__.get(attr, self._MISSING)
        else:
            original = getattr(owner, attr, self._MISSING)
        setattr(owner, attr, new)

        def undo() -> None:
            if original is self._MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, original)

        self._undo.append(undo)
        return None if original is self._MISSING else original

    def replace_everywhere(self, module: ModuleType, attr: str, new: Any, scope: str) -> Any:
        """Replace a function in its module and in every loaded module of ``scope`` that imported it by name.

        Needed when lfkit activates after the target package was imported: its
        ``from .x import f`` copies still point at the original.
        """
        original = getattr(module, attr)
        self.replace(module, attr, new)
        for name, other in list(sys.modules.items()):
            if other is module or other is None or not (name == scope or name.startswith(scope + ".")):
                continue
            if getattr(other, attr, None) is original:
                self.replace(other, attr, new)
        return original

    def setitem(self, mapping: Any, key: Any, value: Any) -> None:
        original = mapping.get(key, self._MISSING)
        mapping[key] = value

        def undo() -> None:
            if original is self._MISSING:
                mapping.pop(key, None)
            else:
                mapping[key] = original

        self._undo.append(undo)

    def setenv(self, name: str, value: str) -> None:
        original = os.environ.get(name)
        os.environ[name] = value

        def undo() -> None:
            if original is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = original

        self._undo.append(undo)

    def undo_all(self) -> None:
        while self._undo:
            self._undo.pop()()


@dataclass
class PatchState:
    patch: Patch
    plugin: str
    status: Status = Status.WAITING
    detail: str = ""
    ctx: PatchContext | None = None

    def as_dict(self) -> dict[str, Any]:
        p = self.patch
        return {
            "id": p.id,
            "status": self.status.value,
            "detail": self.detail,
            "why": p.why,
            "target": p.target,
            "distribution": p.subject,
            "installed_version": distribution_version(p.subject) if p.subject else None,
            "platforms": sorted(p.platforms) if p.platforms is not None else "all",
            "requires": dict(p.requires),
            "reference": p.reference,
            "plugin": self.plugin,
        }


def disabled_ids() -> set[str]:
    raw = os.environ.get("LFKIT_DISABLE_PATCHES", "")
    return {part.strip() for part in raw.split(",") if part.strip()}


def distribution_version(dist: str) -> str | None:
    """The installed version of ``dist``, or None (lfkit.installed_dists: read once per install)."""
    from .installed_dists import version

    return version(dist)


def check_guards(patch: Patch) -> str | None:
    """The reason this patch must not apply here, or None. May import torch (platform)."""
    from packaging.specifiers import InvalidSpecifier, SpecifierSet
    from packaging.version import InvalidVersion, Version

    for dist, spec in patch.requires.items():
        installed = distribution_version(dist)
        if installed is None:
            return f"{dist} is not installed"
        try:
            ok = SpecifierSet(spec, prereleases=True).contains(Version(installed))
        except (InvalidSpecifier, InvalidVersion) as exc:
            return f"cannot compare {dist} {installed} with {spec!r}: {exc}"
        if not ok:
            return f"{dist} {installed} is outside the verified range {spec}"
    if patch.platforms is not None:
        from .platform_detect import detect_platform

        platform = detect_platform()
        if platform.kind not in patch.platforms:
            return f"platform is {platform.kind}, patch is for {'/'.join(sorted(patch.platforms))}"
    if patch.condition is not None:
        return patch.condition()
    return None


class PatchRegistry:
    def __init__(self) -> None:
        self.states: dict[str, PatchState] = {}

    def add(self, patch: Patch, plugin: str) -> None:
        if patch.id in self.states:
            owner = self.states[patch.id].plugin
            raise ValueError(f"patch id {patch.id!r} is already registered by {owner}")
        self.states[patch.id] = PatchState(patch, plugin)

    def arm(self) -> None:
        """Apply each patch when its target is imported (at once if it already is)."""
        off = disabled_ids()
        for state in self.states.values():
            if "all" in off or state.patch.id in off:
                state.status = Status.DISABLED
                state.detail = "LFKIT_DISABLE_PATCHES"
                continue
            import_hooks.when_imported(state.patch.target, lambda module, s=state: self._apply(s, module))

    def _apply(self, state: PatchState, module: ModuleType) -> None:
        patch = state.patch
        applied_here = getattr(module, _SENTINEL, None)
        if applied_here is not None and patch.id in applied_here:
            # Applied already (another registry, a reload of lfkit): twice is once.
            state.status, state.ctx = Status.APPLIED, applied_here[patch.id]
            return
        try:
            reason = check_guards(patch)
        except Exception as exc:  # noqa: BLE001
            state.status, state.detail = Status.FAILED, f"guard check raised {exc!r}"
            return
        if reason is not None:
            state.status, state.detail = Status.SKIPPED, reason
            return
        ctx = PatchContext()
        try:
            note = patch.apply(module, ctx)
        except SkipPatch as skip:
            ctx.undo_all()
            state.status, state.detail = Status.SKIPPED, str(skip)
            return
        except Exception as exc:  # noqa: BLE001
            ctx.undo_all()
            state.status, state.detail = Status.FAILED, f"{type(exc).__name__}: {exc}"
            return
        if applied_here is None:
            applied_here = {}
            setattr(module, _SENTINEL, applied_here)
        applied_here[patch.id] = ctx
        state.status, state.detail, state.ctx = Status.APPLIED, note or "", ctx

    def apply_now(self, patch_id: str) -> PatchState:
        """Apply a patch whose target is already imported (tests, and late activation)."""
        state = self.states[patch_id]
        module = sys.modules.get(state.patch.target)
        if module is None:
            raise RuntimeError(f"{state.patch.target} is not imported")
        self._apply(state, module)
        return state

    def revert(self, patch_id: str) -> None:
        state = self.states[patch_id]
        if state.status is not Status.APPLIED or state.ctx is None:
            return
        module = sys.modules.get(state.patch.target)
        state.ctx.undo_all()
        if state.patch.on_revert is not None and module is not None:
            state.patch.on_revert(module)
        if module is not None:
            getattr(module, _SENTINEL, {}).pop(patch_id, None)
        state.status, state.detail, state.ctx = Status.REVERTED, "", None

    def verdict(self, state: PatchState) -> str:
        """What would happen to a waiting patch if its target were imported now."""
        if state.status is not Status.WAITING:
            return state.detail
        from .platform_detect import TorchNotLoaded, without_importing_torch

        try:
            with without_importing_torch():
                reason = check_guards(state.patch)
        except TorchNotLoaded:
            return "decided when torch loads"
        return "would apply" if reason is None else f"would skip: {reason}"

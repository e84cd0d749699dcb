"""Post-import hooks: run a callback right after a named module finishes executing.

lfkit must not import torch, transformers or LLaMA-Factory early, yet its patches
have to land before anyone uses those modules. A finder at the front of
``sys.meta_path`` wraps the loader of each watched module, so the callback runs
after the module's own code and before the importer gets to bind names from it
(``from .loader import load_model`` then sees the patched function).

Standard library only: this runs in every interpreter start.
"""

from __future__ import annotations

# Only builtin modules here: importlib.abc, threading or typing would cost more
# than everything else lfkit does at start-up. The finder and loader below follow
# the importlib protocols by duck typing.
import _thread
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    Callback = Callable[[ModuleType], None]

_lock = _thread.RLock()
_callbacks: dict[str, list[Callback]] = {}
# Callbacks for "the first import of any module under these top-level names".
_root_callbacks: dict[str, list[Callable[[str], None]]] = {}
_resolving = _thread._local()


def when_imported(name: str, callback: Callback) -> None:
    """Call ``callback(module)`` once ``name`` is imported; at once if it already is."""
    module = sys.modules.get(name)
    if module is not None:
        _run_safely(callback, module)
        return
    with _lock:
        _callbacks.setdefault(name, []).append(callback)
    _ensure_installed()


def when_any_imported(roots: set[str], callback: Callable[[str], None]) -> None:
    """Call ``callback(name)`` once, before the first module under any of ``roots`` executes.

    Used to defer plugin loading until an ML framework is actually being imported.
    """
    fired = [False]

    def once(name: str) -> None:
        if not fired[0]:
            fired[0] = True
            callback(name)

    with _lock:
        for root in roots:
            _root_callbacks.setdefault(root, []).append(once)
    _ensure_installed()


def _run_safely(callback: Callable, arg) -> None:
    # A bug in lfkit must never turn into an ImportError in the user's program.
    try:
        callback(arg)
    except Exception as exc:  # noqa: BLE001
        if getattr(exc, "lfkit_fatal", False):
            raise
        sys.stderr.write(f"lfkit: post-import hook {getattr(callback, '__qualname__', callback)} failed: {exc!r}\n")


def _ensure_installed() -> None:
    with _lock:
        if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _FINDER)


class _PostImportFinder:
    def find_spec(self, fullname, path, target=None):
        root = fullname.partition(".")[0]
        if _root_callbacks and root in _root_callbacks:
            with _lock:
                pending = _root_callbacks.pop(root, [])
            for cb in pending:
                _run_safely(cb, fullname)
        if fullname not in _callbacks:
            return None
        busy = getattr(_resolving, "names", None)
        if busy is None:
            busy = _resolving.names = set()
        if fullname in busy:
            return None
        busy.add(fullname)
        try:
            spec = None
            for finder in sys.meta_path:
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
        finally:
            busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _NotifyingLoader(spec.loader, fullname)
        return spec


class _NotifyingLoader:
    """Delegates to the real loader, then fires the callbacks and steps aside."""

    def __init__(self, loader, name: str):
        self._loader = loader
        self._name = name

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # Put the real loader back first, so the module never keeps a reference to us
        # (importlib.resources, inspect and pickling look at __loader__).
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        with _lock:
            callbacks = _callbacks.pop(self._name, [])
        for cb in callbacks:
            _run_safely(cb, module)


_FINDER = _PostImportFinder()

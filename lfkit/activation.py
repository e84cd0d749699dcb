"""Activation: arm lfkit in this interpreter without importing anything heavy.

Plugins (and so patches) load when the first ML framework module is imported:
by then the process is paying for torch anyway, while a plain ``python`` start
pays only for this module and the import hook. Patches whose target is already
imported apply at once.
"""

from __future__ import annotations

import os
import sys

from . import import_hooks

# Importing any of these means the process is about to need lfkit's patches or hooks.
TRIGGER_ROOTS = frozenset(
    {
        "torch",
        "transformers",
        "llamafactory",
        "deepspeed",
        "peft",
        "trl",
        "accelerate",
        "bitsandbytes",
        "xformers",
        "datasets",
    }
)

_active = False


def is_active() -> bool:
    return _active


def activate() -> None:
    global _active
    if _active:
        return
    _active = True
    if os.environ.get("LFKIT_WORKER_REPORTS") or os.environ.get("LLAMABOARD_WORKDIR"):
        # A torchrun worker of a step lfkit started, or a training LlamaBoard started: leave its
        # patch statuses (lfkit.worker_report says where).
        from . import worker_report

        worker_report.arm()
    if TRIGGER_ROOTS & sys.modules.keys():
        _load_plugins()
    else:
        import_hooks.when_any_imported(set(TRIGGER_ROOTS), lambda _name: _load_plugins())


def _load_plugins() -> None:
    from .plugin_manager import PluginError, get_manager

    try:
        get_manager()
    except PluginError as exc:
        # LFKIT_STRICT_PLUGINS=1: fatal, but as one line, not a traceback through an import.
        sys.stderr.write(f"lfkit: error: {exc}\n")
        raise SystemExit(2) from None
    except Exception as exc:  # noqa: BLE001 - lfkit's failure must never stop the user's process
        sys.stderr.write(f"lfkit: warning: running without lfkit in this process ({type(exc).__name__}: {exc})\n")

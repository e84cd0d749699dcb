"""One way for patches to look at each class transformers loads from a model folder (trust_remote_code).

Both ``get_class_from_dynamic_module`` and the Auto* classes go through
``transformers.dynamic_module_utils.get_class_in_module``; a patch that wraps it
with ``on_remote_class`` sees every remote-code class, and its module, as loaded.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from types import ModuleType


def on_remote_class(dynamic_module_utils: ModuleType, ctx, callback: Callable[[type, ModuleType | None], None]) -> None:
    """Wrap get_class_in_module (through the patch context) so ``callback(cls, module)`` runs on each load."""
    original = dynamic_module_utils.get_class_in_module

    @functools.wraps(original)
    def get_class_in_module(class_name, module_path, *args, **kwargs):
        cls = original(class_name, module_path, *args, **kwargs)
        callback(cls, sys.modules.get(getattr(cls, "__module__", "")))
        return cls

    ctx.replace(dynamic_module_utils, "get_class_in_module", get_class_in_module)

"""Loads built-in and third-party plugins and collects what they register.

Built-in features are plugins too and go through the same hooks as a third party.
Third-party plugins come from the ``lfkit`` entry-point group, one at a time: one
that fails to load is recorded with its error and skipped, so it can never take
the CLI or a training run down (``LFKIT_STRICT_PLUGINS=1`` makes it fatal). The
same holds for a built-in one: lfkit runs inside every Python process of the
environment, and its own failure must never stop a process that did not ask for it.
"""

from __future__ import annotations

import difflib
import os
import threading
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs, problems
from .flags import env_flag
from .patching import Patch, PatchRegistry, disabled_ids
from .registry import Registry

PROJECT = "lfkit"
ENTRY_POINT_GROUP = "lfkit"

# Modules of this distribution that implement hooks. A feature folder joins this
# list once it registers something.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "lfkit.lifecycle",
    "lfkit.rocm_patches",
    "lfkit.dataset_registry",
    "lfkit.recipes",
    "lfkit.launching",
    "lfkit.planning",
    "lfkit.plugins",
    "lfkit.llamaboard",
)


@dataclass(frozen=True)
class ArgChange:
    """One argument a plugin's lfkit_prepare_args changed: said in one log line, kept in run.json."""

    plugin: str
    key: str
    old: Any
    new: Any

    def as_dict(self) -> dict[str, Any]:
        return {"plugin": self.plugin, "key": self.key, "old": self.old, "new": self.new}

    def line(self, patch: str = "lf-hook-prepare-args") -> str:
        return f"lfkit: {patch} ({self.plugin}) changed {self.key}: {self.old!r} -> {self.new!r}"


class PluginError(RuntimeError):
    """A third-party plugin failed under LFKIT_STRICT_PLUGINS=1."""

    # import_hooks re-raises errors carrying this flag instead of reporting them.
    lfkit_fatal = True


@dataclass
class PluginInfo:
    name: str
    source: str  # "built-in" or "<distribution> <version>"
    module: str = ""
    hooks: list[str] = field(default_factory=list)
    error: str | None = None
    status: str = "loaded"  # loaded | failed | not allowed

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "module": self.module,
            "hooks": self.hooks,
            "status": self.status,
            "error": self.error,
        }


class _PluginManager(pluggy.PluginManager):
    def parse_hookimpl_opts(self, plugin, name):
        # Like pytest with pytest_*: a plain function named lfkit_* is a hook
        # implementation without the marker, so a misspelled one is caught below.
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith("lfkit_") and callable(getattr(plugin, name, None)):
            opts = {}
        return opts


def _record_check(kind: str, usage: str):
    """The check register() applies to a record: its class must declare ``lfkit_record = kind``.
    The core checks the kind a class declares rather than importing the feature that defines it:
    imports point from the features down to the core."""

    def check(value: Any) -> None:
        if getattr(type(value), "lfkit_record", None) != kind:
            raise TypeError(f"{usage}, got {type(value).__name__}")

    return check


def _allow_list() -> set[str] | None:
    raw = os.environ.get("LFKIT_PLUGINS")
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


class Manager:
    def __init__(self) -> None:
        self.pm = _PluginManager(PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.patches = PatchRegistry()
        self.datasets = Registry(
            "dataset",
            check=_record_check("dataset", "register(name, spec) takes an lfkit.dataset_registry.DatasetSpec"),
        )
        self.recipes = Registry(
            "recipe", check=_record_check("recipe", "register(name, recipe) takes an lfkit.recipes.Recipe")
        )
        self.models = Registry(
            "model family", check=_record_check("family", "register(name, family) takes an lfkit.plugins.ModelFamily")
        )
        self.strict = env_flag("LFKIT_STRICT_PLUGINS")

    @property
    def hook(self):
        return self.pm.hook

    # --- loading ------------------------------------------------------------

    def load(self) -> None:
        import importlib

        for module_name in BUILTIN_PLUGINS:
            module = importlib.import_module(module_name)
            info = PluginInfo(module_name, "built-in", module_name)
            self._register(module, info)
        self._load_entry_points()
        self.pm.check_pending()
        self._collect_registrations()
        self.patches.arm()
        self._check_switches()
        problems.warn_once()

    def _check_switches(self) -> None:
        """Names in LFKIT_DISABLE_PATCHES / LFKIT_PLUGINS that match nothing: a typo, never silence."""
        checks = [
            ("LFKIT_DISABLE_PATCHES", "patch", "`lfkit patches`", disabled_ids() - {"all"}, set(self.patches.states)),
            ("LFKIT_PLUGINS", "plugin", "`lfkit plugins`", _allow_list() or set(), set(self.plugins)),
        ]
        for variable, noun, listing, given, known in checks:
            for name in sorted(given - known):
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                message = f"{variable} names {name!r}, which is no {noun} here{hint}"
                if self.strict:
                    raise PluginError(message)
                problems.report(message, f"correct {variable}; {listing} lists the names")

    def _load_entry_points(self) -> None:
        from .installed_dists import entry_points, load_entry_point

        allowed = _allow_list()
        for name, value, source in sorted(entry_points(), key=lambda point: point[0]):
            info = PluginInfo(name, source, value)
            if name in self.plugins:
                self._fail(info, f"another plugin is already named {name!r}")
                continue
            if allowed is not None and name not in allowed:
                info.status = "not allowed"
                info.error = "not in LFKIT_PLUGINS"
                self.plugins[name] = info
                continue
            try:
                plugin = load_entry_point(value)
            except BaseException as exc:  # noqa: BLE001 - SystemExit in a plugin must not kill us either
                self._fail(info, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self._register(plugin, info)

    def _register(self, plugin: Any, info: PluginInfo) -> None:
        try:
            self.pm.register(plugin, name=info.name)
        except pluggy.PluginValidationError as exc:
            self._fail(info, str(exc))
            return
        unknown = [hc.name for hc in self.pm.get_hookcallers(plugin) or [] if not hc.has_spec()]
        if unknown:
            self.pm.unregister(plugin)
            known = [n for n in dir(hookspecs) if n.startswith("lfkit_")]
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, known, n=1)
                hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
            self._fail(info, "implements unknown hook(s): " + ", ".join(hints))
            return
        info.hooks = sorted(hc.name for hc in self.pm.get_hookcallers(plugin) or [])
        self.plugins[info.name] = info

    def _fail(self, info: PluginInfo, error: str) -> None:
        info.status, info.error = "failed", error
        self.plugins.setdefault(info.name, info)
        if self.strict:
            raise PluginError(f"plugin {info.name} ({info.source}): {error}")
        problems.report(f"plugin {info.name} ({info.source}) failed: {error}", "`lfkit plugins` shows its error")

    # --- registrations ----------------------------------------------------------

    def _collect_registrations(self) -> None:
        targets = {
            "lfkit_register_patches": self._add_patch,
            "lfkit_register_datasets": self.datasets.add,
            "lfkit_register_recipes": self.recipes.add,
            "lfkit_register_models": self.models.add,
        }
        for hook_name, add in targets.items():
            caller = getattr(self.pm.hook, hook_name)
            # Call each implementation on its own so every registration knows its plugin.
            # get_hookimpls() is in registration order: built-ins first, so they win a name clash.
            for impl in caller.get_hookimpls():
                plugin_name = impl.plugin_name

                def register(*args, _add=add, _plugin=plugin_name, **kwargs):
                    _add(*args, plugin=_plugin, **kwargs)

                try:
                    impl.function(register=register)
                except Exception as exc:  # noqa: BLE001
                    info = self.plugins[plugin_name]
                    if info.source != "built-in":
                        self.pm.unregister(name=plugin_name)
                    self._fail(info, f"{hook_name}: {type(exc).__name__}: {exc}")

    def _add_patch(self, patch: Patch, plugin: str) -> None:
        if not isinstance(patch, Patch):
            raise TypeError(f"register() takes an lfkit.patching.Patch, got {type(patch).__name__}")
        self.patches.add(patch, plugin)

    # --- lifecycle --------------------------------------------------------------

    def prepare_args(self, command: str, args: dict) -> list[ArgChange]:
        """Each plugin's lfkit_prepare_args in turn (in pluggy's order), changing ``args`` in place;
        returns every change made, with the plugin that made it, so none goes unsaid."""
        changes: list[ArgChange] = []
        hook = self.pm.hook.lfkit_prepare_args
        for impl in reversed(hook.get_hookimpls()):
            before = dict(args)
            impl.function(**{name: {"command": command, "args": args}[name] for name in impl.argnames})
            for key in sorted(set(before) | set(args), key=str):
                old, new = before.get(key), args.get(key)
                if old != new:
                    changes.append(ArgChange(impl.plugin_name, key, old, new))
        return changes

    def recipe_defaults(self, command: str, args: dict, runs_model_code: bool = True) -> dict[str, tuple[Any, str]]:
        """What the plugins would fill in a recipe step (``lfkit run`` only): key -> (value, why).
        Keys the user set are never offered; the first plugin to offer a key wins."""
        filled: dict[str, tuple[Any, str]] = {}
        hook = self.pm.hook.lfkit_recipe_defaults
        for result in hook(command=command, args=dict(args), runs_model_code=runs_model_code):
            for key, offer in (result or {}).items():
                if args.get(key) in (None, ""):
                    filled.setdefault(key, tuple(offer))
        return filled

    def train_callbacks(self, args: dict) -> list:
        callbacks: list = []
        for result in self.pm.hook.lfkit_train_callbacks(args=args):
            callbacks.extend(result or [])
        return callbacks


_manager: Manager | None = None
_lock = threading.RLock()


def get_manager() -> Manager:
    """The process-wide manager, loading plugins on first use."""
    global _manager
    with _lock:
        if _manager is None:
            manager = Manager()
            _manager = manager
            try:
                manager.load()
            except BaseException:
                _manager = None
                raise
        return _manager


def reset_for_tests() -> None:
    """Forget loaded plugins (reverting applied patches) so a test can load afresh."""
    global _manager
    with _lock:
        if _manager is not None:
            for patch_id in list(_manager.patches.states):
                _manager.patches.revert(patch_id)
        _manager = None

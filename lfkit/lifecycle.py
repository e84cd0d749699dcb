"""Wires lfkit's lifecycle hooks into LLaMA-Factory's own code paths.

Three patches, each waiting for the LLaMA-Factory module that defines the step,
so the hooks fire in whatever process runs LLaMA-Factory: ``lfkit run``, plain
``llamafactory-cli`` and its torchrun workers alike. Verified on the range in
LF_RANGE; outside it the patches skip with that reason and LLaMA-Factory runs
untouched.

Nothing here imports LLaMA-Factory at module level: this module loads with the
plugins, which may be before LLaMA-Factory is imported.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import sys
from typing import Any

from .errors import stop_run
from .hookspecs import hookimpl
from .lf_versions import RANGE as LF_RANGE
from .patching import Patch, PatchContext, Status

LF_SCOPE = "llamafactory"

# Set while _training_function runs: its arguments were prepared already, so the
# get_train_args call inside it must not run lfkit_prepare_args a second time.
_prepared = contextvars.ContextVar("lfkit_args_prepared", default=False)


def _manager():
    from .plugin_manager import get_manager

    return get_manager()


# --- arguments ----------------------------------------------------------------------


def _argv_view(argv: list[str]) -> dict[str, str]:
    """``--key value`` / ``--key=value`` / ``--flag`` tokens as a dict of strings."""
    view: dict[str, str] = {}
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("--"):
            key, eq, value = token[2:].partition("=")
            if not eq:
                if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                    value = argv[i + 1]
                    i += 1
                else:
                    value = "true"
            view[key] = value
        i += 1
    return view


def _argv_set(argv: list[str], key: str, value: Any) -> list[str]:
    """argv with ``--key`` (and its value) removed and ``--key value`` appended."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        name = token[2:].partition("=")[0] if token.startswith("--") else None
        if name == key:
            if "=" not in token and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                i += 1
        else:
            out.append(token)
        i += 1
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return [*out, f"--{key}", str(value)]


# Every change lfkit_prepare_args made in this process, for run.json (recipes/step.py reports them).
ARG_CHANGES: list = []


def _say(changes) -> None:
    for change in changes:
        sys.stderr.write(change.line() + "\n")
        ARG_CHANGES.append(change)


def prepare_args(command: str, args: dict | list) -> dict | list:
    """Run lfkit_prepare_args on LLaMA-Factory's arguments, dict or argv form; each change is said."""
    manager = _manager()
    if isinstance(args, dict):
        args = dict(args)  # the caller's dict stays as it was
        _say(manager.prepare_args(command, args))
        return args
    argv = list(args)
    view = _argv_view(argv)
    changed = dict(view)
    _say(manager.prepare_args(command, changed))
    for key, value in changed.items():
        if key not in view or view[key] != value:
            argv = _argv_set(argv, key, value)
    return argv


def _args_dict(args: dict | list) -> dict:
    return args if isinstance(args, dict) else _argv_view(args)


def _infer_command(args: dict | list) -> str:
    # get_infer_args serves export and chat (also api / webchat); only export has export_dir.
    return "export" if _args_dict(args).get("export_dir") else "chat"


def _wrap_parser(original, parser_module, command_of):
    @functools.wraps(original)
    def get_args(args=None):
        if _prepared.get():
            return original(args)
        args = parser_module.read_args(args)
        return original(prepare_args(command_of(args), args))

    return get_args


def _apply_prepare_args(parser, ctx: PatchContext) -> None:
    commands = {
        "get_train_args": lambda _a: "train",
        "get_infer_args": _infer_command,
        "get_eval_args": lambda _a: "eval",
    }
    for name, command_of in commands.items():
        ctx.replace_everywhere(parser, name, _wrap_parser(getattr(parser, name), parser, command_of), LF_SCOPE)


# --- tokenizer and model -----------------------------------------------------------------


def _apply_model_load(loader, ctx: PatchContext) -> None:
    load_tokenizer = loader.load_tokenizer
    load_model = loader.load_model
    model_signature = inspect.signature(load_model)

    @functools.wraps(load_tokenizer)
    def lfkit_load_tokenizer(model_args, *args, **kwargs):
        module = load_tokenizer(model_args, *args, **kwargs)
        _manager().hook.lfkit_post_tokenizer_load(tokenizer=module["tokenizer"], model_args=model_args)
        return module

    @functools.wraps(load_model)
    def lfkit_load_model(*args, **kwargs):
        from .simulation import real_work_refusal

        refusal = real_work_refusal("loading the model", dry_run=False)
        if refusal is not None:  # the fixes in this process were chosen for the simulated platform
            stop_run(refusal)
        model = load_model(*args, **kwargs)
        bound = model_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        _manager().hook.lfkit_post_model_load(
            model=model, model_args=bound.arguments["model_args"], is_trainable=bound.arguments["is_trainable"]
        )
        return model

    ctx.replace_everywhere(loader, "load_tokenizer", lfkit_load_tokenizer, LF_SCOPE)
    ctx.replace_everywhere(loader, "load_model", lfkit_load_model, LF_SCOPE)


# --- training callbacks ------------------------------------------------------------------


def _apply_train_callbacks(tuner, ctx: PatchContext) -> None:
    training_function = tuner._training_function

    @functools.wraps(training_function)
    def lfkit_training_function(config: dict[str, Any]) -> None:
        from llamafactory.hparams.parser import read_args

        args = read_args(config.get("args"))
        # Prepare here, once, so the callbacks see the final arguments; only when the
        # prepare-args patch itself is live (a user may have disabled it).
        prepare_state = _manager().patches.states.get("lf-hook-prepare-args")
        if prepare_state is not None and prepare_state.status is Status.APPLIED:
            args = prepare_args("train", args)
        callbacks = config.get("callbacks")
        if callbacks is None:
            callbacks = []
        callbacks.extend(_manager().train_callbacks(_args_dict(args)))
        token = _prepared.set(True)
        try:
            return training_function({**config, "args": args, "callbacks": callbacks})
        finally:
            _prepared.reset(token)

    ctx.replace(tuner, "_training_function", lfkit_training_function)


UPSTREAM = "https://github.com/hiyouga/LLaMA-Factory (v0.9.3-v0.9.5: hparams/parser.py, model/loader.py, tuner.py)"

PATCHES = (
    Patch(
        id="lf-hook-prepare-args",
        why="call lfkit_prepare_args before LLaMA-Factory parses train/export/chat/eval arguments",
        target="llamafactory.hparams.parser",
        apply=_apply_prepare_args,
        reference=UPSTREAM,
        requires=LF_RANGE,
    ),
    Patch(
        id="lf-hook-model-load",
        why="call lfkit_post_tokenizer_load / lfkit_post_model_load after LLaMA-Factory loads them",
        target="llamafactory.model.loader",
        apply=_apply_model_load,
        reference=UPSTREAM,
        requires=LF_RANGE,
    ),
    Patch(
        id="lf-hook-train-callbacks",
        why="add the callbacks of lfkit_train_callbacks to LLaMA-Factory training runs",
        target="llamafactory.train.tuner",
        apply=_apply_train_callbacks,
        reference=UPSTREAM,
        requires=LF_RANGE,
    ),
)


@hookimpl
def lfkit_register_patches(register):
    for patch in PATCHES:
        register(patch)

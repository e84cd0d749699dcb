"""The hooks a plugin may implement.

A plugin is a module (or object) with functions named after these hooks; the
``@hookimpl`` marker is optional. A function whose name starts with ``lfkit_``
but matches no hook here is an error: it is almost always a typo.

Registration hooks receive a ``register`` callback rather than returning values,
so the core keeps control of duplicates, validation and provenance (which plugin
gave what).

Lifecycle hooks are called from inside LLaMA-Factory's own code paths (wired by
the ``lf-*`` patches in ``lfkit.lifecycle``), so they fire under plain
``llamafactory-cli`` and in its torchrun workers too.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("lfkit")
hookimpl = pluggy.HookimplMarker("lfkit")


# --- registration ---------------------------------------------------------------


@hookspec
def lfkit_register_patches(register):
    """Call ``register(patch)`` for each :class:`lfkit.patching.Patch` this plugin brings."""


@hookspec
def lfkit_register_datasets(register):
    """Call ``register(name, spec)`` for each dataset this plugin brings."""


@hookspec
def lfkit_register_recipes(register):
    """Call ``register(name, recipe)`` for each recipe this plugin brings."""


@hookspec
def lfkit_register_models(register):
    """Call ``register(name, family)`` for each model family this plugin brings."""


# --- lifecycle ------------------------------------------------------------------


@hookspec
def lfkit_prepare_args(command, args):
    """Before LLaMA-Factory parses a run's arguments, in every process (plain ``llamafactory-cli`` too).

    ``command`` is ``train``, ``export``, ``chat`` or ``eval``; ``args`` is the dict
    of LLaMA-Factory keys. Under LLaMA-Factory's own commands lfkit must be invisible
    unless it fixes: stop a run that cannot work on this platform (``lfkit.errors.stop_run``),
    or change a key only where LLaMA-Factory would otherwise fail. Every change is said
    in one log line (plugin, key, old and new value) and kept in run.json. Preferences
    belong in ``lfkit_recipe_defaults``.
    """


@hookspec
def lfkit_recipe_defaults(command, args, runs_model_code):
    """Preferences for a recipe step of ``lfkit run`` / ``sweep`` / ``compare`` / ``recipes export``, never
    for LLaMA-Factory's own commands: return ``{key: (value, why)}`` for keys the user left unset
    (a model family's template and lora_target). lfkit fills them, shows each with its why in
    ``--dry-run``, ``lfkit show`` and the exported YAML. May stop the run with ``stop_run``.

    ``runs_model_code`` is False where the step is only planned (``lfkit plan`` reads config.json and
    nothing else): a consent such as ``trust_remote_code`` is not needed there.
    """


@hookspec
def lfkit_post_tokenizer_load(tokenizer, model_args):
    """After LLaMA-Factory loaded (and patched) the tokenizer."""


@hookspec
def lfkit_post_model_load(model, model_args, is_trainable):
    """After LLaMA-Factory loaded the model and attached its adapters."""


@hookspec
def lfkit_train_callbacks(args):
    """Return a list of ``transformers.TrainerCallback`` to add to a training run."""


# --- planning -------------------------------------------------------------------


@hookspec(firstresult=True)
def lfkit_model_shape(config):
    """Return a :class:`lfkit.planning.shapes.ModelShape` for a model's config.json (a dict), or None.

    For architectures transformers cannot build without the model folder's own code
    (remote-code families): the memory plan reads every parameter's size from here.
    """

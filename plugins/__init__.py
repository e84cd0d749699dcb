"""Model families: what each needs (template, lora_target, remote code, fixes), built in and from plugins.

A built-in plugin registering baichuan2, chatglm3, gemma and llama2 through
``lfkit_register_models``, the hook a third-party family package uses too.

Under LLaMA-Factory's own commands a family brings its fixes (the patches it
registers, which apply by their own targets and guards) and nothing else: no
template, no lora_target, no checks of its own. Its preferences are recipe
defaults of ``lfkit run`` (``lfkit_recipe_defaults``), shown as such.
"""

from lfkit.hookspecs import hookimpl

from . import baichuan2, chatglm3, decoder_shape, defaults, gemma, llama2
from .detect import Detection, detect
from .family import ModelFamily

BUILTIN = (baichuan2.FAMILY, chatglm3.FAMILY, gemma.FAMILY, llama2.FAMILY)

__all__ = ["Detection", "ModelFamily", "detect"]


@hookimpl
def lfkit_register_models(register):
    for family in BUILTIN:
        register(family.name, family)


@hookimpl
def lfkit_register_patches(register):
    for patch in (
        baichuan2.TEMPLATE_PATCH,
        baichuan2.TOKENIZER_PATCH,
        chatglm3.AUTO_MAP_PATCH,
        chatglm3.GENERATION_PATCH,
    ):
        register(patch)


@hookimpl
def lfkit_recipe_defaults(command, args, runs_model_code):
    return defaults.recipe_defaults(command, args, runs_model_code)


@hookimpl
def lfkit_model_shape(config):
    """Shapes for memory plans from config.json alone: the remote-code families' (their code stays
    unrun) and the LLaMA and Gemma layouts (no torch needed); transformers builds any other."""
    for family_shape in (baichuan2.shape, chatglm3.shape, decoder_shape.shape):
        found = family_shape(config)
        if found is not None:
            return found
    return None

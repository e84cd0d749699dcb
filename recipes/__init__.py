"""Recipes: LLaMA-Factory's train / export / chat (and lfkit's eval) run by name.

A built-in plugin: every ``*.yaml`` beside this module registers through
``lfkit_register_recipes``, the hook a third party uses for its own. The format
is in ``spec``, the resolution of a user's key=value in ``resolve``, the run
itself in ``runner`` (one process per step, ``step``).
"""

from pathlib import Path

from lfkit.hookspecs import hookimpl

from .spec import Recipe, load, parse

HERE = Path(__file__).resolve().parent

__all__ = ["Recipe", "load", "parse"]


@hookimpl
def lfkit_register_recipes(register):
    for path in sorted(HERE.glob("*.yaml")):
        recipe = load(path)
        register(recipe.name, recipe)

"""Recipes: LLaMA-Factory's train / export / chat (and lfkit's eval) run by name.

A built-in plugin: every ``*.yaml`` beside this module, and every one in the
user's ``$LFKIT_HOME/recipes/``, registers through ``lfkit_register_recipes``, the
hook a third party uses for its own. A user's file that does not parse is
reported by ``lfkit doctor`` and left out; it never stops a process. The format
is in ``spec``, the resolution of a user's key=value in ``resolve``, the run
itself in ``runner`` (one process per step, ``step``).
"""

from pathlib import Path

from lfkit import paths, problems
from lfkit.hookspecs import hookimpl

from .spec import Recipe, RecipeError, load, parse

HERE = Path(__file__).resolve().parent

__all__ = ["Recipe", "load", "parse"]


def user_recipes_dir() -> Path:
    return paths.lfkit_home() / "recipes"


def _user_files() -> list[Path]:
    try:
        return sorted(user_recipes_dir().glob("*.yaml"))
    except OSError:
        return []


@hookimpl
def lfkit_register_recipes(register):
    for path in sorted(HERE.glob("*.yaml")):
        recipe = load(path)
        register(recipe.name, recipe)
    for path in _user_files():
        try:
            recipe = load(path)
            register(recipe.name, recipe)
        except (RecipeError, ValueError) as exc:
            problems.report(f"recipe file left out: {exc}", f"mend or remove {path}")

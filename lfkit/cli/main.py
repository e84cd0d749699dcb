"""The `lfkit` command: the top of the CLI, which only this entry point imports.

Each command module registers its commands on the shared app (``app.py``) when
imported here; none of them imports this module.
"""

from __future__ import annotations

import importlib
import sys

from ..errors import UsageError
from .app import app

# The module that registers each command, in the order `lfkit --help` lists them (experiments
# imports recipes, which registers `run`). `lfkit COMMAND ...` imports only COMMAND's module:
# importing them all (recipes, planning, Slurm, evaluation code) was a third of the start-up
# of `lfkit datasets`. `lfkit`, `--help`, `--version` and an unknown word import them all.
COMMANDS = {
    "plugins": "environment",
    "patches": "environment",
    "datasets": "environment",
    "doctor": "environment",
    "eval": "experiments",
    "sweep": "experiments",
    "compare": "experiments",
    "run": "recipes",
    "status": "jobs",
    "logs": "jobs",
    "cancel": "jobs",
    "plan": "plan",
    "runs": "runs",
    "show": "runs",
    "data": "data",
    "recipes": "recipes",
    "models": "models",
}
# Command groups: a typer app of their own, added under their name.
GROUPS = {"data": "data_app", "recipes": "recipes_app", "models": "models_app"}


def register(words: list[str]) -> None:
    """Put on the app the command ``words[0]`` names, or every command."""
    wanted = [words[0]] if words and words[0] in COMMANDS else list(COMMANDS)
    for name in wanted:
        module = importlib.import_module(f"{__package__}.{COMMANDS[name]}")
        if name in GROUPS:
            app.add_typer(getattr(module, GROUPS[name]), name=name)


def _warn_of_a_bad_simulation() -> None:
    """A malformed LFKIT_SIMULATE is ignored (the real platform answers): said at every command,
    not only by `lfkit doctor`, since a user who set it expects every answer to follow it."""
    import os

    from ..simulation import ENV, BadSimulation, parse

    text = os.environ.get(ENV, "").strip()
    if text:
        try:
            parse(text)
        except BadSimulation as exc:
            sys.stderr.write(f"lfkit: warning: {exc}; ignored, this machine's own platform answers\n")


def _relative_home() -> str | None:
    """LFKIT_HOME given as a relative path would put lfkit's state wherever the user stands."""
    import os
    from pathlib import Path

    given = os.environ.get("LFKIT_HOME")
    if given and not Path(given).expanduser().is_absolute():
        return f"LFKIT_HOME={given} is a relative path; give an absolute one (e.g. $PWD/{given})"
    return None


def main() -> None:
    relative = _relative_home()
    if relative:
        from .output import error_line

        error_line(relative)
        raise SystemExit(2)
    _warn_of_a_bad_simulation()
    register(sys.argv[1:2])
    try:
        app()
    except UsageError as exc:
        from .output import error_line

        error_line(str(exc))
        raise SystemExit(2) from None
    except ImportError as exc:
        # LLaMA-Factory (through `datasets`) cannot be imported with pyarrow 26+ and numpy 1: said in one line
        from ..known_broken import import_failure
        from .output import error_line

        line = import_failure(exc)
        if line is None:
            raise
        error_line(line)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

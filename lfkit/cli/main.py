"""The `lfkit` command: the top of the CLI, which only this entry point imports.

Each command module registers its commands on the shared app (``app.py``) when
imported here; none of them imports this module.
"""

from __future__ import annotations

from ..errors import UsageError

# Each command module registers its commands on the app as it is imported (experiments imports
# recipes, which registers `run`); typer lists them in that order in `lfkit --help`.
from . import environment, experiments, jobs, plan, runs  # noqa: F401
from .app import app
from .data import data_app
from .models import models_app
from .recipes import recipes_app  # also `run`

app.add_typer(data_app, name="data")
app.add_typer(recipes_app, name="recipes")
app.add_typer(models_app, name="models")


def _warn_of_a_bad_simulation() -> None:
    """A malformed LFKIT_SIMULATE is ignored (the real platform answers): said at every command,
    not only by `lfkit doctor`, since a user who set it expects every answer to follow it."""
    import os
    import sys

    from ..simulation import ENV, BadSimulation, parse

    text = os.environ.get(ENV, "").strip()
    if text:
        try:
            parse(text)
        except BadSimulation as exc:
            sys.stderr.write(f"lfkit: warning: {exc}; ignored, this machine's own platform answers\n")


def main() -> None:
    _warn_of_a_bad_simulation()
    try:
        app()
    except UsageError as exc:
        from .output import error_line

        error_line(str(exc))
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

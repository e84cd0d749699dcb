"""The typer app every command module registers on, and what they share.

main.py imports the command modules; they import this module, never main, so no
import climbs back up.
"""

from __future__ import annotations

import typer

from .. import __version__
from .output import console, fail

app = typer.Typer(
    help="lfkit: ROCm/DTK fixes, datasets, recipes and model plugins for LLaMA-Factory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def manager():
    """The plugin manager; a plugin failure under LFKIT_STRICT_PLUGINS=1 is one line, exit 2."""
    from ..plugin_manager import PluginError, get_manager

    try:
        return get_manager()
    except PluginError as exc:
        fail(str(exc))


def _version_callback(value: bool):
    if value:
        console.print(f"lfkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
):
    pass

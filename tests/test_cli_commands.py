"""`lfkit COMMAND` imports only the module that registers COMMAND (lfkit/cli/main.py COMMANDS):
the table must name, for every command, the module that registers it."""

import json

from conftest import clean_env, py

# Import each command module alone, in a fresh interpreter, recipes before experiments (which
# imports it), and say which commands each one added to the app.
WHO_REGISTERS = """
import json
import typer
from lfkit.cli import main
from lfkit.cli.app import app

def names():
    return set(typer.main.get_command(app).commands)

found, before = {}, names()
for module in sorted(set(main.COMMANDS.values()), key=lambda m: m != "recipes"):
    for command in [c for c, m in main.COMMANDS.items() if m == module]:
        main.register([command])
    after = names()
    found.update({name: module for name in after - before})
    before = after
print("REPORT " + json.dumps(found))
"""


def test_each_command_comes_from_the_module_the_table_names(tmp_path):
    from lfkit.cli.main import COMMANDS

    result = py(WHO_REGISTERS, env=clean_env(), cwd=tmp_path)
    line = next(line for line in result.stdout.splitlines() if line.startswith("REPORT "))
    assert json.loads(line[len("REPORT ") :]) == COMMANDS, result.stderr[-2000:]

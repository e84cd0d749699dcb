"""``llamafactory-cli`` as its console script runs it, recording the arguments LLaMA-Factory's parser receives.

``python record_cli.py REPORT.json train x.yaml``: the same ``llamafactory.cli.main`` (0.9.3 to 0.9.5),
with ``parser._parse_args`` wrapped after anything lfkit did in front of it (as lfsuite_probe does
for LLaMA-Factory's own suite), the calls written to REPORT.json when the process ends.
"""

import atexit
import functools
import json
import sys

from lfsuite_probe import _plain
from llamafactory.hparams import parser

report, calls = sys.argv.pop(1), []
original = parser._parse_args


@functools.wraps(original)
def _parse_args(hf_parser, args=None, *rest, **kwargs):
    seen = parser.read_args(args) if args is None or isinstance(args, (dict, list)) else args
    calls.append({"parser": [c.__name__ for c in getattr(hf_parser, "dataclass_types", [])], "args": _plain(seen)})
    return original(hf_parser, args, *rest, **kwargs)


parser._parse_args = _parse_args
atexit.register(lambda: open(report, "w", encoding="utf-8").write(json.dumps(calls)))

from llamafactory.cli import main  # noqa: E402

sys.argv[0] = "llamafactory-cli"
sys.exit(main())

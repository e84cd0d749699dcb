"""A pytest plugin (``-p lfsuite_probe``) for LLaMA-Factory's own test suite.

It records, per test, every set of arguments that LLaMA-Factory's argument parser
receives (``llamafactory.hparams.parser._parse_args``, which every get_*_args goes
through, after anything lfkit did in front of it), and each test's outcome. The
same plugin runs with lfkit off and on, so the two records can be compared.
Written to the JSON file named by LFSUITE_REPORT when the session ends.
"""

from __future__ import annotations

import functools
import json
import os
import sys

_calls: dict[str, list] = {}
_outcomes: dict[str, str] = {}


def _plain(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def _current_test() -> str:
    return os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]


def pytest_configure(config):
    from llamafactory.hparams import parser

    original = parser._parse_args

    @functools.wraps(original)
    def _parse_args(hf_parser, args=None, *rest, **kwargs):
        seen = parser.read_args(args) if args is None or isinstance(args, (dict, list)) else args
        classes = [c.__name__ for c in getattr(hf_parser, "dataclass_types", [])]
        _calls.setdefault(_current_test(), []).append({"parser": classes, "args": _plain(seen)})
        return original(hf_parser, args, *rest, **kwargs)

    parser._parse_args = _parse_args


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        outcome = report.outcome
        if hasattr(report, "wasxfail"):
            outcome = "xfailed" if report.skipped else "xpassed"
        _outcomes[report.nodeid] = outcome
    elif report.when == "teardown" and report.outcome == "failed":
        _outcomes[report.nodeid] = "error"


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("LFSUITE_REPORT")
    if path:
        # Present only where lfkit loaded itself (the .pth and LLaMA-Factory's imports); never imported here.
        activation = sys.modules.get("lfkit.activation")
        lfkit = bool(activation and activation.is_active())
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"lfkit_active": lfkit, "outcomes": _outcomes, "calls": _calls}, out, indent=1)

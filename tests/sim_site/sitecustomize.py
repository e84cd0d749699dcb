"""Tests only: with LFKIT_TEST_SIMULATE=rocm|dtk, make this interpreter's torch look like
that platform right after it is imported (see tests/simulate_platform.py).
Put this folder on PYTHONPATH of a subprocess, such as a real `llamafactory-cli` run."""

import os
import sys

_kind = os.environ.get("LFKIT_TEST_SIMULATE")
if _kind:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import torch  # noqa: F401

    from simulate_platform import simulate

    simulate(
        kind=_kind,
        hip=os.environ.get("LFKIT_TEST_HIP", "6.2.41133"),
        arch=os.environ.get("LFKIT_TEST_ARCH", "gfx90a"),
        devices=int(os.environ.get("LFKIT_TEST_DEVICES", "1")),
    )

"""accelerate-cpu-device: CPU torchrun workers on torch < 2.2 (DTK 23.10 / 24.04's torch 2.1) fail in
accelerate before the model loads; the failure first, in the real accelerate, then the fix. On a torch
that has torch.cpu.set_device there is nothing to fix, and the status says so."""

import pytest

from conftest import clean_env, free_port, probe

pytestmark = pytest.mark.both_stacks

PROBE = """
import json
from accelerate import PartialState
from lfkit.plugin_manager import get_manager
try:
    state = PartialState()
    report = {"device": str(state.device), "type": str(state.distributed_type)}
except Exception as exc:
    report = {"error": f"{type(exc).__name__}: {exc}"}
patch = get_manager().patches.states["accelerate-cpu-device"]
report["patch"] = [patch.status.value, patch.detail]
print("REPORT " + json.dumps(report))
"""


def _worker(tmp_path, **extra):
    """One torchrun worker's environment, as torchrun sets it (world of one: no peer to wait for)."""
    env = clean_env(LOCAL_RANK="0", RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                    MASTER_PORT=str(free_port()), **extra)  # fmt: skip
    return probe(PROBE, env=env, cwd=tmp_path)


def test_a_cpu_worker_gets_its_device_on_torch_21_as_on_a_newer_torch(tmp_path):
    import torch

    from lfkit.installed_dists import version

    fixed = _worker(tmp_path)
    assert fixed.get("device") == "cpu:0" and fixed["type"] == "DistributedType.MULTI_CPU", fixed
    if hasattr(torch.cpu, "set_device"):
        assert fixed["patch"] == ["skipped", f"torch {version('torch')} has torch.cpu.set_device"]
        return
    broken = _worker(tmp_path, LFKIT_DISABLE_PATCHES="accelerate-cpu-device")
    assert broken["error"] == "AttributeError: module 'torch.cpu' has no attribute 'set_device'"
    assert fixed["patch"][0] == "applied"

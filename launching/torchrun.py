"""LLaMA-Factory's multi-worker launch, made to start this environment's torchrun.

LLaMA-Factory (``llamafactory/cli.py`` up to 0.9.3, ``llamafactory/launcher.py`` from 0.9.4 on)
runs a bare ``torchrun`` looked up on PATH. Started as
``.venv/bin/llamafactory-cli`` without the venv activated, under sudo, or from a
Slurm job whose PATH was set by a site script, there is no torchrun on PATH
(``FileNotFoundError: 'torchrun'``) or, worse, another environment's, whose
workers run without this environment's packages. The patch makes the launch run
``python -m torch.distributed.run`` with the interpreter that runs LLaMA-Factory.
"""

from __future__ import annotations

import os
import sys

from lfkit.lf_versions import RANGE, torchrun_module
from lfkit.patching import Overlay, Patch, PatchContext, SkipPatch

# torchrun's console script is this module's main.
TORCHRUN_MODULE = "torch.distributed.run"


def own_torchrun(cmd):
    """``cmd`` with a leading bare ``torchrun`` replaced by this interpreter's."""
    if isinstance(cmd, (list, tuple)) and cmd and cmd[0] == "torchrun":
        return [sys.executable, "-m", TORCHRUN_MODULE, *cmd[1:]]
    return cmd


def _apply(launcher, ctx: PatchContext) -> str:
    if not hasattr(launcher, "subprocess"):
        raise SkipPatch(f"{launcher.__name__} does not start torchrun through subprocess")
    inner = launcher.subprocess
    ctx.replace(launcher, "subprocess", Overlay(inner, run=lambda cmd, *a, **k: inner.run(own_torchrun(cmd), *a, **k)))
    return f"torchrun = {sys.executable} -m {TORCHRUN_MODULE}"


PATCH = Patch(
    id="lf-torchrun",
    why="start this environment's torchrun for multi-worker training, not whichever one PATH finds",
    # where this LLaMA-Factory starts torchrun (lfkit.lf_versions)
    target=torchrun_module(),
    apply=_apply,
    reference="LLaMA-Factory v0.9.3 cli.py main(), v0.9.4+ launcher.py launch(): subprocess.run('torchrun ...')",
    requires=RANGE,
)


# lfkit's train-step keys; LLaMA-Factory's launcher reads each as an environment variable in capitals.
LAUNCH_KEYS = ("nproc_per_node", "nnodes", "node_rank", "master_addr", "master_port")


def launcher_env(own: dict, args: dict) -> dict[str, str]:
    """The environment that makes ``llamafactory-cli train`` start torchrun with these workers.

    A Slurm job sets NNODES / NODE_RANK / MASTER_* itself, per node; keys given on the
    command line win over those."""
    env = {key.upper(): str(own[key]) for key in LAUNCH_KEYS if own.get(key) is not None}
    nnodes = int(env.get("NNODES") or os.environ.get("NNODES") or 1)
    if (own.get("nproc_per_node") or 0) > 1 or nnodes > 1 or args.get("deepspeed"):
        env["FORCE_TORCHRUN"] = "1"
        env.setdefault("NPROC_PER_NODE", str(own.get("nproc_per_node") or 1))
    return env


def world_size(env: dict[str, str]) -> int:
    """How many workers a launch with ``env`` starts (0: no torchrun)."""
    if env.get("FORCE_TORCHRUN") != "1":
        return 0
    return int(env["NPROC_PER_NODE"]) * int(env.get("NNODES") or os.environ.get("NNODES") or 1)

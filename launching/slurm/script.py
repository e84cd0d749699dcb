"""The job script: readable sbatch text that ``sbatch OUTPUT_DIR/job.sbatch`` runs as it is.

One srun task per node. Every task runs ``python -m lfkit.launching.slurm.node OUTPUT_DIR``:
node 0 runs the recipe's steps as ``lfkit run`` does, the other nodes start their
share of each training step's workers. The rendezvous address and port are set
once here, so every node agrees on them.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from lfkit.errors import UsageError

from .options import JobOptions

SCRIPT = "job.sbatch"
JOB_FILE = "job.json"  # the plan the submission resolved, which the job runs as it is
JOB_LOG = "slurm-%j.out"


def job_log(out: Path, job_id: str) -> Path:
    return Path(out) / JOB_LOG.replace("%j", str(job_id))


def directive_path(folder: Path, pattern: str) -> str:
    """``folder/pattern`` as one argument of an #SBATCH line: sbatch splits those lines at spaces,
    reads a double-quoted argument whole (a backslash escapes the quote and itself) and expands
    %-patterns in file names (%% is a literal %); the folder is taken literally."""
    text = str(folder).replace("%", "%%").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}/{pattern}"'


def render(out: Path, recipe: str, options: JobOptions, python: str) -> str:
    if any(c in str(out) for c in "\n\r"):
        raise UsageError(f"output_dir {str(out)!r} holds a line break; a batch job needs a folder without one")
    directives = [
        f"--job-name=lfkit-{recipe}",
        f"--output={directive_path(Path(out), JOB_LOG)}",
        "--open-mode=append",  # a requeued job adds to the same log
        "--requeue",  # preempted or requeued: started again, it resumes from the last checkpoint
        f"--nodes={options.nodes}",
        "--ntasks-per-node=1",
    ]
    for key in ("partition", "gres", "cpus_per_task", "time", "account", "qos"):
        value = getattr(options, key)
        if value is not None:
            directives.append(f"--{key.replace('_', '-')}={value}")
    directives += options.extra_lines
    port = (
        str(options.master_port)
        if options.master_port
        else "$((20000 + SLURM_JOB_ID % 20000))  # one port per job, the same on every node"
    )
    lines = [
        "#!/bin/bash",
        f"# lfkit run of recipe {recipe} -> {out}",
        "# Written by `lfkit run ... --slurm`; `sbatch THIS_FILE` submits it again the same way.",
        f"# Follow it with `lfkit status|logs|cancel {shlex.quote(str(out))}`.",
        *(f"#SBATCH {d}" for d in directives),
        "",
        "set -eo pipefail",
    ]
    if options.setup:
        lines += ["# the node's environment", options.setup]
    lines += [
        "",
        'export MASTER_ADDR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)"',
        f"export MASTER_PORT={port}",
        "# Each task: NNODES from the allocation, NODE_RANK from its place in it (with one task per node,",
        "# SLURM_PROCID is the node's index, SLURM_NODEID).",
        "srun --kill-on-bad-exit=1 bash -c "
        + shlex.quote(
            'export NNODES="$SLURM_NTASKS" NODE_RANK="$SLURM_PROCID"; '
            f"exec {shlex.quote(python)} -m lfkit.launching.slurm.node {shlex.quote(str(out))}"
        ),
        "",
    ]
    return "\n".join(lines)

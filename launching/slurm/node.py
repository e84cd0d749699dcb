"""One srun task of an lfkit Slurm job: ``python -m lfkit.launching.slurm.node OUTPUT_DIR``.

Node 0 runs the plan the submission resolved (``job.json``) with the ordinary
runner: it holds the run folder's lock, writes every run.json, and continues a
requeued or resubmitted run from its last checkpoint. The other nodes run no step
of their own: before each training step, node 0 leaves a launch ticket in the
step's folder, and each other node then starts its share of the torchrun workers
(the rendezvous at MASTER_ADDR:MASTER_PORT joins them), or skips a step that node 0
kept from an earlier attempt.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from lfkit.atomic import write_json

from .script import JOB_FILE, job_log

TICKET = ".lfkit-launch.json"
POLL_SECONDS = 1.0


def fix_device_masks(env: dict[str, str] | os._Environ) -> list[str]:
    """On ROCm / DTK, when Slurm masks the devices with ROCR_VISIBLE_DEVICES the HIP runtime numbers
    the remaining ones from 0; Slurm's CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES, which hold the
    original numbers, would then mask them a second time and hide them. Returns what it removed."""
    if not env.get("ROCR_VISIBLE_DEVICES"):
        return []
    removed = [var for var in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES") if var in env]
    for var in removed:
        del env[var]
    return removed


def attempt() -> str:
    """This start of the job: a requeued job runs again under the same id with a higher restart count."""
    return f"{os.environ.get('SLURM_JOB_ID', 'local')}.{os.environ.get('SLURM_RESTART_COUNT', '0')}"


def _ticket_writer(current: str):
    def leave_ticket(step, launches: bool) -> None:
        write_json(Path(step.dir) / TICKET, {"attempt": current, "step": step.name, "launch": launches})

    return leave_ticket


def _wait_ticket(folder: Path, current: str) -> dict:
    while True:
        try:
            ticket = json.loads((folder / TICKET).read_text(encoding="utf-8"))
            if ticket.get("attempt") == current:
                return ticket
        except (OSError, ValueError):
            pass
        time.sleep(POLL_SECONDS)


def lead(out: Path, job: dict) -> int:
    from lfkit.errors import UsageError
    from lfkit.recipes.failures import run_failures
    from lfkit.recipes.run_folder import plan_from_file, read_record
    from lfkit.recipes.runner import Runner

    from ..backends import guard_all

    plan = plan_from_file(job["plan"])
    slurm = dict((read_record(out) or {}).get("slurm") or {})
    job_id = os.environ.get("SLURM_JOB_ID")
    if job_id and slurm.get("job_id") != job_id:  # submitted again by hand: `sbatch OUTPUT_DIR/job.sbatch`
        slurm.update(job_id=job_id, jobs=[*slurm.get("jobs", []), job_id], cancelled=None)
        slurm["log"] = str(job_log(out, job_id))
    try:
        with run_failures():  # the same lines and exit codes as `lfkit run`
            Runner(plan, on_train_step=_ticket_writer(attempt()), extra={"slurm": slurm}, guard=guard_all).run()
    except SystemExit as exc:
        return exc.code
    except UsageError as exc:
        sys.stderr.write(f"lfkit: error: {' '.join(str(exc).split())}\n")
        return 2
    print(f"lfkit: {plan.recipe.name} finished -> {out}", flush=True)
    return 0


def follow(job: dict, node_rank: int) -> int:
    """Start this node's workers for each training step node 0 launches; nothing else."""
    from lfkit.recipes.run_folder import plan_from_file
    from lfkit.recipes.step_process import StepProcess

    from ..step_launch import step_environment

    current = attempt()
    for step in plan_from_file(job["plan"]).steps:
        if step.command != "train" or step.dir is None:
            continue
        ticket = _wait_ticket(step.dir, current)
        if not ticket.get("launch"):
            continue
        print(f"lfkit: node {node_rank}: workers of step {step.name}", flush=True)
        env = step_environment(step, step.args, step.dir, leader=False)
        argv = [sys.executable, "-m", "lfkit.recipes.step", str(step.dir), "--other-node"]
        process = StepProcess(argv, step.dir, extra_env=env, log_name=f"output-node{node_rank}.log")
        try:
            code = process.wait()
        except KeyboardInterrupt:
            process.stop()
            return 130
        if code != 0:
            return code
    return 0


def main() -> None:
    from lfkit.recipes.step_process import stop_signals

    out = Path(sys.argv[1])
    job = json.loads((out / JOB_FILE).read_text(encoding="utf-8"))
    removed = fix_device_masks(os.environ)
    node_rank = int(os.environ.get("NODE_RANK", "0"))
    print(
        f"lfkit: node {node_rank} of {os.environ.get('NNODES', '1')} on {os.uname().nodename}, "
        f"job attempt {attempt()}, rendezvous {os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        + (f" (unset {', '.join(removed)}: ROCR_VISIBLE_DEVICES masks the devices already)" if removed else ""),
        flush=True,
    )
    with stop_signals():
        try:
            code = lead(out, job) if node_rank == 0 else follow(job, node_rank)
        except KeyboardInterrupt:
            code = 130
    raise SystemExit(code)


if __name__ == "__main__":
    main()

"""``lfkit run RECIPE ... --slurm``: the plan resolved and checked here, then one batch job.

Nothing is written or submitted until the plan, the folder and the job request
have passed: the job script is first shown to Slurm with ``sbatch --test-only``,
so an unknown partition or a gres the cluster rejects is Slurm's own message,
on one line. Then ``job.json`` (the resolved plan), ``job.sbatch`` and ``run.json``
go into the output_dir, and ``sbatch --parsable`` returns the job id at once.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from lfkit.atomic import write_json, write_text
from lfkit.errors import UsageError

from . import jobs
from .options import JobOptions
from .script import JOB_FILE, SCRIPT, job_log, render


def sbatch_path() -> str:
    found = shutil.which("sbatch")
    if found is None:
        raise UsageError("no sbatch on PATH: run --slurm on a Slurm login node (or load its slurm module)")
    return found


def refuse_unrunnable(plan) -> None:
    """Steps that need a person at a terminal cannot run in a batch job."""
    if plan.output_dir is None:
        raise UsageError(f"recipe {plan.recipe.name}: --slurm needs output_dir=..., a folder the nodes share")
    for step in plan.steps:
        if step.command == "chat" and not step.lfkit_args.get("prompt"):
            raise UsageError(
                f"recipe {plan.recipe.name}: step {step.name} is an interactive chat, which cannot run in a batch job "
                "(give prompt=... for a one-shot answer)"
            )


def _slurm_error(stderr: str) -> str:
    lines = [line.removeprefix("sbatch: ").removeprefix("error: ").strip() for line in stderr.splitlines()]
    lines = [line for line in lines if line]
    return "; ".join(dict.fromkeys(lines)) or "sbatch failed"


def test_only(sbatch: str, text: str) -> None:
    """Slurm's own verdict on the request, without submitting anything."""
    done = subprocess.run([sbatch, "--test-only"], input=text, capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(f"Slurm refused the job: {_slurm_error(done.stderr)}")


def refuse_active(out: Path) -> None:
    from lfkit.recipes.run_folder import read_record

    job = jobs.job_id_of(read_record(out))
    if job is not None:
        state = jobs.slurm_state(job)
        if jobs.is_active(state):
            raise UsageError(
                f"output_dir {out} has job {job} {state.lower()}; wait for it or `lfkit cancel {shlex.quote(str(out))}`"
            )


def guard(out: Path, record: dict) -> None:
    """A folder whose job is queued or running is refused, unless this process is that job."""
    job = jobs.job_id_of(record)
    if job and os.environ.get("SLURM_JOB_ID") != str(job):
        refuse_active(out)


def submit(plan, options: JobOptions, overwrite: bool = False) -> str:
    """Submit ``plan`` as one job; its id. A run that stopped before finishing is continued by the job."""
    from lfkit.recipes import outputs
    from lfkit.recipes.run_folder import (
        RUN_FILE,
        SUBMITTED,
        check_output_dir,
        identity,
        lock_run_folder,
        now,
        plan_file,
        read_record,
        refuse_finished,
        refuse_foreign,
    )

    sbatch = sbatch_path()
    refuse_unrunnable(plan)
    out = plan.output_dir
    refuse_foreign(out)
    refuse_finished(out, overwrite)
    refuse_active(out)
    text = render(out, plan.recipe.name, options, sys.executable)
    test_only(sbatch, text)

    lock = lock_run_folder(out)
    try:
        state = check_output_dir(plan, overwrite, guard=guard)
        previous = read_record(out) if state == "continue" else None
        write_json(out / JOB_FILE, {"plan": plan_file(plan), "options": options.as_dict(), "python": sys.executable})
        write_text(out / SCRIPT, text)
        submitted = now()
        record = previous or {**identity(plan), "status": SUBMITTED}
        write_json(out / RUN_FILE, record)
        done = subprocess.run([sbatch, "--parsable", str(out / SCRIPT)], capture_output=True, text=True, cwd=out)
        if done.returncode != 0:
            if previous is None:
                outputs.remove(out, [out / JOB_FILE, out / SCRIPT, out / RUN_FILE])
            raise UsageError(f"Slurm refused the job: {_slurm_error(done.stderr)}")
        job_id = done.stdout.strip().split(";")[0]
        history = list((record.get("slurm") or {}).get("jobs", []))
        slurm = {
            "job_id": job_id,
            "jobs": [*history, job_id],
            "submitted": submitted,
            "script": str(out / SCRIPT),
            "log": str(job_log(out, job_id)),
            "options": options.as_dict(),
        }
        write_json(out / RUN_FILE, {**record, "slurm": slurm})
        outputs.record(out)
        return job_id
    finally:
        os.close(lock)

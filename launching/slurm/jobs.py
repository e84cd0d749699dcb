"""Where a submitted run stands, its log, and cancelling it: read from Slurm, then from run.json.

squeue knows a job while it is pending or running; scontrol a few minutes longer
(MinJobAge); sacct for good, where accounting is on. Many clusters run without
accounting (sacct: "accounting storage is disabled"), so once Slurm has forgotten
the job, the run's own run.json says how it ended.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from lfkit.errors import UsageError

PENDING_STATES = {"PENDING", "CONFIGURING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED"}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "RESIZING"}
CANCELLED_STATES = {"CANCELLED", "PREEMPTED", "REVOKED", "DEADLINE"}


def _ask(*cmd: str) -> str | None:
    """stdout of a Slurm command, or None when it fails or is not there."""
    if shutil.which(cmd[0]) is None:
        return None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else None


def slurm_state(job_id: str) -> str | None:
    """Slurm's state of the job (RUNNING, COMPLETED, CANCELLED, ...), or None when Slurm no longer knows it."""
    state = _ask("squeue", "-h", "-j", str(job_id), "-o", "%T")
    if state:
        return state.split()[0]
    shown = _ask("scontrol", "-o", "show", "job", str(job_id))
    match = re.search(r"\bJobState=(\S+)", shown or "")
    if match:
        return match.group(1)
    accounted = _ask("sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State")
    return accounted.split()[0] if accounted else None


def _forgotten(job_id: str) -> bool:
    """Slurm answers, and no longer knows the job (not: squeue is missing or the controller is down)."""
    if shutil.which("squeue") is None:
        return False
    try:
        done = subprocess.run(["squeue", "-h", "-j", str(job_id)], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "Invalid job id" in done.stderr or (done.returncode == 0 and not done.stdout.strip())


def is_active(state: str | None) -> bool:
    return state in PENDING_STATES or state in RUNNING_STATES


def summarize(record: dict | None, state: str | None) -> str:
    """pending | running | finished | failed | cancelled."""
    record = record or {}
    if state in PENDING_STATES:
        return "pending"
    if state in RUNNING_STATES:
        return "running"
    ran = record.get("status")
    if ran == "finished":
        return "finished"
    if state is not None:
        return "cancelled" if state in CANCELLED_STATES else "failed"
    slurm = record.get("slurm") if isinstance(record.get("slurm"), dict) else {}
    if ran in ("interrupted", "cancelled") or slurm.get("cancelled"):
        return "cancelled"
    return "failed"  # Slurm forgot a job whose run never recorded an end: it was lost


def job_id_of(record: dict | None) -> str | None:
    slurm = (record or {}).get("slurm")
    job = slurm.get("job_id") if isinstance(slurm, dict) else None
    return str(job) if isinstance(job, (str, int)) and not isinstance(job, bool) else None


def status(folder: Path) -> dict:
    """Where a run stands (a Slurm job's run, or one on this machine), with each step's state; the
    same answer `lfkit runs` and `lfkit show` give. A run.json left saying "running" by a run that
    is gone is mended on the way: "interrupted" (killed here); a job that ended without finishing
    makes it "cancelled" or "failed", whatever its run last wrote."""
    from lfkit.recipes.run_folder import RUN_FILE, planned_steps, read_record, record_problem, settle

    problem = record_problem(Path(folder))
    if problem is not None:
        raise UsageError(f"{folder}: {problem}")
    if not (Path(folder) / RUN_FILE).is_file():
        raise UsageError(f"{folder} holds no lfkit run (no run.json)")
    record = settle(Path(folder))
    if record is None:
        raise UsageError(f"{folder} holds no lfkit run (no run.json)")
    job = job_id_of(record)
    state = slurm_state(job) if job else None
    if job:
        # Read again after asking Slurm: a job that just ended wrote its end first.
        record = read_record(Path(folder)) or record
    summary = summarize(record, state) if job else _local(record)
    # run.json says what every command says: a job cancelled under a running step left "interrupted"
    if job and not is_active(state) and record.get("status") in UNSETTLED and record.get("status") != summary:
        if state is not None or _forgotten(job):  # known to have ended; not merely out of reach from here
            record = _mark_ended(Path(folder), record, state, summary)
    steps = []
    for name, step in planned_steps(record).items():
        step_dir = step["dir"]
        own = read_record(Path(step_dir)) if step_dir and Path(step_dir) != Path(folder) else record
        steps.append({"name": name, "command": step.get("command"), "status": (own or {}).get("status", "waiting")})
    return {
        "output_dir": str(Path(folder).resolve()),
        "recipe": record.get("recipe"),
        "status": summary,
        "job_id": job,
        "slurm_state": state,
        "run_status": record.get("status"),
        "steps": steps,
    }


# What a run.json may say when its job has ended without finishing: the job's run never wrote an end
# (killed with the node), or wrote "interrupted" when Slurm's SIGTERM reached it.
UNSETTLED = ("running", "submitted", "interrupted")


def _mark_ended(folder: Path, record: dict, state: str | None, summary: str) -> dict:
    """run.json (and its steps') of a job that ended, or that Slurm forgot, without finishing:
    "cancelled" where it was cancelled, else "failed", as `lfkit status`, `runs` and `show` say."""
    from lfkit.recipes.run_folder import CANCELLED, FAILED, mend_record, now, planned_steps, read_record

    why = f"the Slurm job ended {state}" if state else "Slurm no longer knows the job"
    status = CANCELLED if summary == "cancelled" else FAILED
    ended = now()
    for step in planned_steps(record).values():
        step_dir = Path(step["dir"]) if step["dir"] else None
        own = read_record(step_dir) if step_dir is not None and step_dir != Path(folder) else None
        if own is not None and own.get("status") in UNSETTLED:
            mend_record(step_dir, {**own, "status": status, "ended": own.get("ended") or ended, "settled": why})
    mended = {**record, "status": status, "ended": record.get("ended") or ended, "settled": why}
    mend_record(folder, mended)
    return mended


def _local(record: dict) -> str:
    ran = record.get("status")
    if ran == "submitted":
        return "pending"
    return ran if ran in ("running", "finished", "failed", "interrupted") else "unknown"


def cancel(folder: Path) -> str:
    from lfkit.atomic import write_json
    from lfkit.recipes.run_folder import RUN_FILE, now, read_record, record_problem

    problem = record_problem(Path(folder))
    if problem is not None:
        raise UsageError(f"{folder}: {problem}")
    record = read_record(folder)
    job = job_id_of(record)
    if job is None:
        raise UsageError(f"{folder} is not a Slurm run; stop a run on this machine with Ctrl-C")
    state = slurm_state(job)
    if not is_active(state):
        raise UsageError(f"job {job} is not pending or running ({state or 'Slurm no longer knows it'})")
    if shutil.which("scancel") is None:
        raise UsageError("no scancel on PATH: run this on a Slurm login node")
    done = subprocess.run(["scancel", str(job)], capture_output=True, text=True)
    if done.returncode != 0:
        raise UsageError(f"scancel {job}: {done.stderr.strip() or done.returncode}")
    # The job's own run.json may be written by its node a moment later: take the newest.
    record = read_record(folder) or record
    write_json(Path(folder) / RUN_FILE, {**record, "slurm": {**record["slurm"], "cancelled": now()}})
    return job

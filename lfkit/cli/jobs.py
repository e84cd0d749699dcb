"""`lfkit status`, `lfkit logs` and `lfkit cancel`: following a run, on this machine or as a Slurm job."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from .app import JSON_OPTION, app
from .output import console, print_json, table

FOLDER = typer.Argument(..., help="The run folder (output_dir).")


@app.command("status")
def status_command(folder: Path = FOLDER, as_json: bool = JSON_OPTION):
    """Where a run stands: pending, running, finished, failed or cancelled, with each step's state."""
    from lfkit.launching.slurm.jobs import status

    info = status(folder)
    if as_json:
        print_json(info)
        return
    from rich.text import Text

    from lfkit.tables import printable

    job = f"  job {info['job_id']} ({info['slurm_state'] or 'gone from the queue'})" if info["job_id"] else ""
    line = Text(printable(f"{info['output_dir']}: {info['recipe']} ")) + Text(printable(info["status"]), style="bold")
    console.print(line + Text(printable(job)), highlight=False)
    if len(info["steps"]) > 1:
        table("steps", ["step", "command", "status"], [(s["name"], s["command"], s["status"]) for s in info["steps"]])


def _log_of(folder: Path) -> Path | None:
    from lfkit.launching.slurm.jobs import job_id_of
    from lfkit.launching.slurm.script import job_log
    from lfkit.recipes.run_folder import planned_steps, read_record
    from lfkit.recipes.step_process import LOG_FILE

    record = read_record(folder)
    job = job_id_of(record)
    if job:
        return job_log(folder, job)
    logs = [Path(s["dir"]) / LOG_FILE for s in planned_steps(record).values() if s["dir"]]
    present = [log for log in logs if log.is_file()]
    return max(present, key=lambda p: p.stat().st_mtime) if present else None


@app.command("logs")
def logs_command(
    folder: Path = FOLDER,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
):
    """Print a run's log: the Slurm job's output, or the latest step's output.log."""
    from lfkit.launching.slurm.jobs import status

    info = status(folder)
    log = _log_of(folder)
    position = 0
    while True:
        if log is not None and log.is_file():  # a regular file: a FIFO named so is no log
            with open(log, "rb") as fh:
                fh.seek(position)
                for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):  # a log of gigabytes, a piece at a time
                    position += len(chunk)
                    sys.stdout.buffer.write(chunk)
            sys.stdout.flush()
        if not follow or info["status"] not in ("pending", "running"):
            break
        time.sleep(1)
        info = status(folder)
        log = _log_of(folder) if log is None or not log.is_file() else log
    if log is None or not log.is_file():
        console.print(f"lfkit: {folder}: no log yet ({info['status']})", highlight=False)


@app.command("cancel")
def cancel_command(folder: Path = FOLDER):
    """Cancel a submitted run's Slurm job; `lfkit run ... --slurm` again continues it from its last checkpoint."""
    from lfkit.launching.slurm.jobs import cancel

    job = cancel(folder)
    console.print(f"lfkit: cancelled job {job}; submit the same command again to continue from the last checkpoint")

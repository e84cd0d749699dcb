"""The run folder: one module that decides what a folder holds and what state its run is in.

A run folder is an output_dir with a ``run.json`` (and, for a multi-step recipe, one
sub-folder per step, each with its own). Everything that reads or guards a run folder
goes through here: the runner while it runs, ``lfkit runs`` / ``show`` / ``status``, the
summary, sweeps and the launch back ends (a Slurm job's node included), so every
command gives the same answer.

- its record (``read_record``), the statuses, the plan as JSON (``plan_dict``, one
  form everywhere), the identity a run.json carries, the plan file a job runs;
- the guards: a finished run is never overwritten without --overwrite, a folder of
  other files is never written into, a run continues only with the same arguments and
  data, one run per folder (an exclusive lock);
- ``guard`` lets a launch back end refuse a folder whose job is still queued or running.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lfkit.atomic import write_json, write_text
from lfkit.errors import UsageError
from lfkit.locking import Busy, acquire, holder_of
from lfkit.state_files import read_json_bounded

from . import outputs
from .progress import TRAINER_LOG

if TYPE_CHECKING:  # resolving pulls in LLaMA-Factory's argument facts; `lfkit show` and `status` need none
    from .resolve import Plan

RUN_FILE = "run.json"
LF_ARGS_FILE = "llamafactory.yaml"
DEEPSPEED_FILE = "deepspeed.json"
PATCH_REPORT = ".lfkit-patches.json"
FINISHED, RUNNING, FAILED, INTERRUPTED = "finished", "running", "failed", "interrupted"
CANCELLED = "cancelled"  # a Slurm job cancelled (lfkit cancel, scancel, preempted) before its run finished
SUBMITTED = "submitted"  # a batch job (Slurm) that has not started yet
VERSIONS = ("lfkit", "llamafactory", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "deepspeed")


def host() -> str:
    return socket.gethostname()


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # another user's process
    except (OSError, TypeError, ValueError):
        return False
    return True


def _nobody_runs(folder: Path, record: dict) -> bool:
    """No lfkit process runs this folder's run any more: its lock is free (a run holds it from start
    to end). Where the lock cannot be opened (a folder of another user, a file system without
    locks), its recorded process is gone (judged on the host that ran it only)."""
    plan = record.get("plan") if isinstance(record.get("plan"), dict) else {}
    own = plan.get(record.get("step")) if isinstance(plan.get(record.get("step")), dict) else {}
    # A step folder of a multi-step run: the run's lock is its parent's (the output_dir).
    root = folder.parent if len(plan) > 1 and own.get("dir") and Path(own["dir"]) == folder else folder
    try:
        fd = acquire(root / outputs.LOCK_FILE, blocking=False)
    except Busy:
        return False
    except OSError:
        return record.get("host") in (None, host()) and not _pid_alive(record.get("pid"))
    os.close(fd)
    return True


def settle(folder: Path) -> dict | None:
    """The folder's record, mended where it still says "running" though no process runs it (killed
    with SIGKILL, the machine rebooted): then it and its running steps' records say "interrupted",
    so that every command (status, runs, show) and run.json give one answer. A batch job's run is
    its back end's to judge (the job may run on another node); it is returned as it is."""
    record = read_record(folder)
    if not isinstance(record, dict) or record.get("status") != RUNNING or (record.get("slurm") or {}).get("job_id"):
        return record
    if not _nobody_runs(Path(folder), record):
        return record
    ended = now()
    why = "its process was gone"
    for step in planned_steps(record).values():
        step_dir = Path(step["dir"]) if step["dir"] else None
        if step_dir is None or step_dir == Path(folder):
            continue
        step_record = read_record(step_dir)
        if isinstance(step_record, dict) and step_record.get("status") == RUNNING:
            mend_record(step_dir, {**step_record, "status": INTERRUPTED, "ended": ended, "settled": why})
    mended = {**record, "status": INTERRUPTED, "ended": ended, "settled": why}
    mend_record(Path(folder), mended)
    return mended


def mend_record(folder: Path, record: dict) -> None:
    """Write a corrected run.json; a folder the user may read but not write keeps the old one."""
    with contextlib.suppress(OSError):  # a folder the user may read but not write: the answer is still right
        write_json(folder / RUN_FILE, normal(record))


def _load(path: Path) -> tuple[dict | None, str | None]:
    """A record and, where the file is there but is no record, why (in words)."""
    try:
        data = read_json_bounded(path)
    except FileNotFoundError:
        return None, None
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc}"
    except ValueError as exc:  # nested too deeply for the parser
        return None, str(exc)
    except OSError as exc:  # a FIFO, a device, a huge file, no permission: never read, never a hang
        return None, exc.strerror or type(exc).__name__
    if not isinstance(data, dict):
        return None, "not a JSON object"
    return data, None


def read_record(folder: Path | None, name: str = RUN_FILE) -> dict | None:
    """The JSON record ``name`` (run.json unless told) of a folder; None if absent, unreadable or
    not a record (a JSON object)."""
    if folder is None:
        return None
    return _load(Path(folder) / name)[0]


def planned_steps(record: dict | None) -> dict[str, dict]:
    """The steps a run.json's plan names, each a mapping with a ``dir`` that is a path or None; what a
    hand-edited or damaged plan holds besides is left out (a listing must not end in a traceback)."""
    plan = (record or {}).get("plan")
    if not isinstance(plan, dict):
        return {}
    steps = {name: step for name, step in plan.items() if isinstance(step, dict)}
    return {
        name: {**step, "dir": step["dir"] if isinstance(step.get("dir"), str) else None} for name, step in steps.items()
    }


def record_problem(folder: Path, name: str = RUN_FILE) -> str | None:
    """What is wrong with a folder's record, in the words every command uses (show, status, logs,
    cancel, runs, a run into that folder); None where it reads as a record or is absent."""
    why = _load(Path(folder) / name)[1]
    return None if why is None else f"unreadable {name} ({why})"


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def plan_dict(plan: Plan) -> dict[str, Any]:
    return {
        s.name: {
            "command": s.command,
            "dir": str(s.dir) if s.dir else None,
            "args": s.args,
            "lfkit_args": s.lfkit_args,
            "datasets": s.datasets,
            "notes": s.notes,
        }
        for s in plan.steps
    }


def identity(plan: Plan) -> dict[str, Any]:
    """What a run.json says of the run it belongs to: recipe, parameters, the whole plan."""
    return {"recipe": plan.recipe.name, "params": normal(plan.params), "plan": normal(plan_dict(plan))}


def plan_file(plan: Plan) -> dict[str, Any]:
    """A resolved plan as JSON, for a run that goes on elsewhere (a Slurm job) exactly as it was resolved."""
    return normal(
        {
            "recipe": plan.recipe.name,
            "description": plan.recipe.description,
            "params": plan.params,
            "output_dir": str(plan.output_dir) if plan.output_dir else None,
            "steps": plan_dict(plan),
        }
    )


def plan_from_file(data: dict[str, Any]) -> Plan:
    from .resolve import Plan, ResolvedStep
    from .spec import Recipe, Step

    steps = [
        ResolvedStep(
            name,
            s["command"],
            Path(s["dir"]) if s.get("dir") else None,
            dict(s["args"]),
            dict(s.get("lfkit_args") or {}),
            list(s.get("notes") or []),
            dict(s.get("datasets") or {}),
        )
        for name, s in data["steps"].items()
    ]
    recipe = Recipe(data["recipe"], data.get("description", ""), {}, tuple(Step(s.name, s.command, {}) for s in steps))
    out = data.get("output_dir")
    return Plan(recipe, dict(data.get("params") or {}), Path(out) if out else None, steps)


def normal(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def differences(old: dict, new: dict) -> list[str]:
    diffs = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name, {}), new.get(name, {})
        for part in ("args", "lfkit_args"):
            pa, pb = a.get(part, {}), b.get(part, {})
            for key in sorted(set(pa) | set(pb)):
                if pa.get(key) != pb.get(key):
                    diffs.append(f"{name}.{key}: {pa.get(key)!r} -> {pb.get(key)!r}")
        da, db = a.get("datasets", {}), b.get("datasets", {})
        for dataset in sorted(set(da) | set(db)):
            if (da.get(dataset) or {}).get("sha256") != (db.get(dataset) or {}).get("sha256"):
                diffs.append(f"dataset {dataset} changed since the run started ({(db.get(dataset) or {}).get('file')})")
    return diffs


def refuse_finished(out: Path | None, overwrite: bool, record: dict | None = None) -> None:
    """The cheap first check, before anything is imported: a finished run stays untouched."""
    record = record if record is not None else read_record(out)
    problem = None if record is not None or out is None else record_problem(out)
    if problem is not None:
        raise UsageError(f"{out}: {problem}; mend or move it, or choose another output_dir")
    if record and record.get("status") == FINISHED and not overwrite:
        raise UsageError(
            f"output_dir {out} holds a finished run of {record.get('recipe')}; pass --overwrite to replace it"
        )


def refuse_foreign(out: Path | None) -> None:
    """A non-empty folder that holds no lfkit run is never written into (checked before the lock file is made)."""
    if out is None or not out.exists():
        return
    if not out.is_dir():
        raise UsageError(f"output_dir {out} is a file")
    refuse_finished(out, True)  # an unreadable run.json, perhaps a finished run's, is never taken as nothing
    if read_record(out) is None and not outputs.is_empty_run_folder(out):
        raise UsageError(f"output_dir {out} holds files that are not an lfkit run; choose a new or empty folder")


# How long a new run waits for the steps of a killed lfkit process to let go of its folder's lock. Such
# a step holds the inherited lock until it has ended; it is told to end when its parent dies, and a
# torchrun agent gives its workers some seconds to stop.
ORPHAN_WAIT_SECONDS = 30.0


def lock_run_folder(out: Path) -> int:
    """Create ``out`` if needed and lock it for this run; one UsageError line if that cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return acquire(out / outputs.LOCK_FILE, blocking=False)
    except Busy as busy:
        fd = _after_orphans(out / outputs.LOCK_FILE, busy.holder)
        if fd is not None:
            return fd
        raise UsageError(
            f"output_dir {out} has a run in progress (pid {busy.holder or '?'}); wait for it or stop it first"
        ) from None
    except OSError as exc:
        raise UsageError(f"output_dir {out}: cannot write there ({exc.strerror or exc})") from None


def _after_orphans(lock: Path, holder: str) -> int | None:
    """The lock, once the steps left by a killed lfkit process (``holder``, gone) have ended; None
    while the process that took the lock still lives, or when they do not end in time."""
    if not holder or _pid_alive(holder):
        return None
    deadline = time.monotonic() + ORPHAN_WAIT_SECONDS
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            return acquire(lock, blocking=False)
        except Busy as busy:
            if busy.holder != holder:
                return None  # another run took the folder meanwhile
    return None


# A launch back end's check of a folder's record: raises UsageError while the folder's job is queued or running.
Guard = Callable[[Path, dict], None]


def refuse_unwritable(output_dir: Path | None) -> None:
    """A file, or a folder lfkit cannot write, stops the run only after the model loaded."""
    if output_dir is None:
        return
    if output_dir.exists() and not output_dir.is_dir():
        raise UsageError(f"output_dir {output_dir} is a file; give a folder")
    existing = output_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"output_dir {output_dir}: {existing} is a file, so no folder can be made there")
    if not os.access(existing, os.W_OK | os.X_OK):  # the words the run's own lock says it in
        raise UsageError(f"output_dir {output_dir}: cannot write there (Permission denied)")


def refuse_busy(out: Path | None) -> None:
    """What taking the folder's lock would say while another run holds it, asked without taking it
    (for --dry-run; the run itself takes the lock)."""
    if out is None:
        return
    holder = holder_of(out / outputs.LOCK_FILE)
    if holder is not None and (not holder or _pid_alive(holder)):
        raise UsageError(f"output_dir {out} has a run in progress (pid {holder or '?'}); wait for it or stop it first")


def refuse_unresumable(plan: Plan) -> None:
    """A train step that would resume from a checkpoint this stack cannot load, refused before anything loads."""
    from lfkit.known_broken import resume_torch_load

    for step in plan.steps:
        checkpoint = last_checkpoint(step.dir) if step.command == "train" and step.dir else None
        if checkpoint is None or (read_record(step.dir) or {}).get("status") == FINISHED:
            continue
        refused = resume_torch_load()
        if refused is not None:
            raise UsageError(f"step {step.name}: cannot resume from {checkpoint}: {refused.what}; fix: {refused.fix}")


def judge_output_dir(plan: Plan, overwrite: bool, guard: Guard | None = None) -> tuple[str, list[Path]]:
    """What a run would do with its output_dir: ("fresh", []), ("overwrite", the files it would
    remove) or ("continue", []); a UsageError where it must refuse. Writes nothing, so ``--dry-run``
    asks exactly what the run asks."""
    out = plan.output_dir
    refuse_unwritable(out)
    if out is None or outputs.is_empty_run_folder(out):
        return "fresh", []
    refuse_foreign(out)
    record = read_record(out) or {}
    if guard is not None:
        guard(out, record)
    if record.get("status") == SUBMITTED and not overwrite:
        return "fresh", []  # a Slurm job's first start: the folder holds only what the submission wrote
    refuse_finished(out, overwrite, record)
    if overwrite:
        return "overwrite", outputs.removal(out)
    diffs = differences(record.get("plan", {}), normal(plan_dict(plan)))
    if record.get("recipe") != plan.recipe.name or diffs:
        what = diffs[0] if diffs else f"recipe {record.get('recipe')}"
        raise UsageError(
            f"output_dir {out} holds an unfinished run with other arguments ({what}); "
            "run it with the same ones to continue, or pass --overwrite to start over"
        )
    refuse_unresumable(plan)
    return "continue", []


def check_output_dir(plan: Plan, overwrite: bool, guard: Guard | None = None) -> str:
    """'fresh' or 'continue', with the folder locked; --overwrite clears the run's own files."""
    verdict, files = judge_output_dir(plan, overwrite, guard)
    if verdict == "overwrite":
        outputs.remove(plan.output_dir, files)
        return "fresh"
    if verdict == "continue":
        unfinished = [s.dir for s in plan.steps if s.dir and (read_record(s.dir) or {}).get("status") != FINISHED]
        outputs.keep_user_files(plan.output_dir, unfinished)
    return verdict


def versions() -> dict[str, str | None]:
    from lfkit.doctor import versions as installed_versions

    return installed_versions(VERSIONS)


def last_checkpoint(folder: Path) -> Path | None:
    candidates = []
    for child in folder.glob("checkpoint-*"):
        suffix = child.name.rpartition("-")[2]
        if child.is_dir() and suffix.isdigit() and (child / "trainer_state.json").is_file():
            candidates.append((int(suffix), child))
    return max(candidates)[1] if candidates else None


def set_aside_log_after(checkpoint: Path) -> Path | None:
    """Before a train step resumes from ``checkpoint``: the log lines of the steps after it move to
    ``trainer_log.after-checkpoint-N.jsonl`` beside it (appended, if an earlier resume left one).

    LLaMA-Factory appends to trainer_log.jsonl when it resumes and runs those steps again, so they
    would be logged twice (the progress line, `lfkit show`, loss plots and sweep curves read it).
    A last line a kill cut short goes aside too. Returns the file set aside, or None.
    """
    folder = checkpoint.parent
    log = folder / TRAINER_LOG
    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
        step = int(state["global_step"])
        lines = log.read_text(encoding="utf-8").splitlines(keepends=True)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    keep, aside = [], []
    for line in lines:
        try:
            current = json.loads(line).get("current_steps") if line.endswith("\n") else None
        except (ValueError, AttributeError):
            current = None
        (keep if isinstance(current, int) and current <= step else aside).append(line)
    if not aside:
        return None
    target = folder / f"trainer_log.after-{checkpoint.name}.jsonl"
    earlier = target.read_text(encoding="utf-8") if target.is_file() else ""
    aside_text = "".join(line if line.endswith("\n") else line + "\n" for line in aside)
    write_text(target, earlier + aside_text)  # first: a crash in between loses nothing
    write_text(log, "".join(keep))
    return target

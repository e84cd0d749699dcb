"""Runs a resolved recipe: one process per step, a run.json per step, nothing lost.

- A folder that holds a finished run is refused unless --overwrite, and --overwrite
  removes only the files the run recorded as its own (``outputs``); a folder of
  files that are not an lfkit run is always refused.
- One run per folder: an exclusive lock on the folder, held by the step process
  too, so two trainers never write into one folder.
- A run that was killed or stopped continues where it stopped: finished steps are
  kept, a training step resumes from its last checkpoint. Started again with other
  arguments or on changed data, it is refused rather than mixed.
- Each step runs in its own process (LLaMA-Factory keeps global template state
  between in-process runs); see ``step_process`` for how it starts and stops.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lfkit.atomic import write_json, write_text
from lfkit.errors import UsageError
from lfkit.launching import workers
from lfkit.launching.torchrun import launcher_env, world_size
from lfkit.locking import Busy, acquire

from . import inputs, outputs
from .progress import StepProgress
from .resolve import Plan, ResolvedStep, export_yaml
from .step_process import LOG_FILE, StepProcess, Stopped, error_lines, stop_signals

RUN_FILE = "run.json"
LF_ARGS_FILE = "llamafactory.yaml"
DEEPSPEED_FILE = "deepspeed.json"
PATCH_REPORT = ".lfkit-patches.json"
FINISHED, RUNNING, FAILED, INTERRUPTED = "finished", "running", "failed", "interrupted"
SUBMITTED = "submitted"  # a Slurm job that has not started yet
VERSIONS = ("lfkit", "llamafactory", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "deepspeed")


class StepFailed(RuntimeError):
    """A step's process exited non-zero; ``lines`` are the lines of its log that name the error."""

    def __init__(self, message: str, lines: list[str] | None = None, log: Path | None = None) -> None:
        super().__init__(message)
        self.lines, self.log = lines or [], log


class RunInterrupted(RuntimeError):
    """The run was stopped (Ctrl-C, SIGTERM) and marked interrupted; the same command continues it."""


def read_record(folder: Path | None, name: str = RUN_FILE) -> dict | None:
    """The JSON record ``name`` (run.json unless told) of a folder; None if absent or unreadable."""
    if folder is None:
        return None
    path = Path(folder) / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def now() -> str:
    return _dt.datetime.now().astimezone().isoformat(timespec="seconds")


def _plan_record(plan: Plan) -> dict[str, Any]:
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
    return {"recipe": plan.recipe.name, "params": _normal(plan.params), "plan": _normal(_plan_record(plan))}


def plan_file(plan: Plan) -> dict[str, Any]:
    """A resolved plan as JSON, for a run that goes on elsewhere (a Slurm job) exactly as it was resolved."""
    return _normal(
        {
            "recipe": plan.recipe.name,
            "description": plan.recipe.description,
            "params": plan.params,
            "output_dir": str(plan.output_dir) if plan.output_dir else None,
            "steps": _plan_record(plan),
        }
    )


def plan_from_file(data: dict[str, Any]) -> Plan:
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


def _normal(data: Any) -> Any:
    return json.loads(json.dumps(data, default=str))


def _differences(old: dict, new: dict) -> list[str]:
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
    if read_record(out) is None and not outputs.is_empty_run_folder(out):
        raise UsageError(f"output_dir {out} holds files that are not an lfkit run; choose a new or empty folder")


def lock_run_folder(out: Path) -> int:
    """Create ``out`` if needed and lock it for this run; one UsageError line if that cannot be."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        return acquire(out / outputs.LOCK_FILE, blocking=False)
    except Busy as busy:
        raise UsageError(
            f"output_dir {out} has a run in progress (pid {busy.holder or '?'}); wait for it or stop it first"
        ) from None
    except OSError as exc:
        raise UsageError(f"output_dir {out}: cannot write there ({exc.strerror or exc})") from None


def check_output_dir(plan: Plan, overwrite: bool) -> str:
    """'fresh' or 'continue', with the folder locked; --overwrite clears the run's own files."""
    out = plan.output_dir
    if out is None or outputs.is_empty_run_folder(out):
        return "fresh"
    refuse_foreign(out)
    record = read_record(out)
    job = (record.get("slurm") or {}).get("job_id")
    if job and os.environ.get("SLURM_JOB_ID") != str(job):
        from lfkit.slurm.submit import refuse_active  # a submitted job of this folder that is not us

        refuse_active(out)
    if record.get("status") == SUBMITTED and not overwrite:
        return "fresh"  # a Slurm job's first start: the folder holds only what the submission wrote
    refuse_finished(out, overwrite, record)
    if overwrite:
        outputs.remove(out, outputs.removal(out))
        return "fresh"
    diffs = _differences(record.get("plan", {}), _normal(_plan_record(plan)))
    if record.get("recipe") != plan.recipe.name or diffs:
        what = diffs[0] if diffs else f"recipe {record.get('recipe')}"
        raise UsageError(
            f"output_dir {out} holds an unfinished run with other arguments ({what}); "
            "run it with the same ones to continue, or pass --overwrite to start over"
        )
    unfinished = [s.dir for s in plan.steps if s.dir and (read_record(s.dir) or {}).get("status") != FINISHED]
    outputs.keep_user_files(out, unfinished)
    return "continue"


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


def _fix_adapter_base(folder: Path, base: str | None) -> None:
    """adapter_config.json must name the base model by an absolute path (users mended relative ones by hand)."""
    config_path = folder / "adapter_config.json"
    if not base or not config_path.is_file():
        return
    config = json.loads(config_path.read_text(encoding="utf-8"))
    recorded = config.get("base_model_name_or_path")
    if recorded and not os.path.isabs(recorded) and Path(base).is_absolute() and Path(base).exists():
        config["base_model_name_or_path"] = base
        write_json(config_path, config)


def _own_deepspeed_copy(args: dict[str, Any], folder: Path) -> None:
    """The step folder keeps the DeepSpeed config it ran with, beside its llamafactory.yaml."""
    source = args.get("deepspeed")
    if source and Path(source).is_file() and Path(source) != folder / DEEPSPEED_FILE:
        write_text(folder / DEEPSPEED_FILE, Path(source).read_text(encoding="utf-8"))
        args["deepspeed"] = str(folder / DEEPSPEED_FILE)


def memory_env(step: ResolvedStep, folder: Path) -> dict[str, str]:
    from lfkit.planning.measure import REPORT_ENV, REPORT_FILE

    if step.command != "train":
        return {}
    (folder / REPORT_FILE).unlink(missing_ok=True)
    return {REPORT_ENV: str(folder)}


def memory_record(folder: Path, plan: dict | None) -> dict[str, Any]:
    """The step's memory plan (when one was made) beside what its first optimizer step really held."""
    from lfkit.planning.measure import REPORT_FILE

    measured = read_record(folder, REPORT_FILE)
    (folder / REPORT_FILE).unlink(missing_ok=True)
    return {"plan": plan, "measured": measured}


class Runner:
    def __init__(
        self,
        plan: Plan,
        echo: Callable[[str], None] = print,
        on_train_step: Callable[[ResolvedStep, bool], None] | None = None,
        extra: dict[str, Any] | None = None,
        memory_plans: dict[str, dict] | None = None,
        verbose: bool = False,
    ) -> None:
        self.plan = plan
        self.verbose = verbose  # stream each step's output (always kept in STEP/output.log)
        self.memory_plans = memory_plans or {}  # step -> its memory plan (lfkit.planning), kept in run.json
        self.echo = echo
        # Told before each train step whether it launches (True) or was kept; a Slurm job's
        # other nodes start their workers on it.
        self.on_train_step = on_train_step
        self.lock: int | None = None  # the run folder's lock, passed on to each step process
        # kept in every run.json this run writes (with ``extra``: a Slurm job's record)
        self.common = {**identity(plan), **(extra or {})}

    def _write(self, folder: Path, record: dict) -> None:
        write_json(folder / RUN_FILE, _normal(record))

    def run(self, overwrite: bool = False) -> list[dict]:
        root = self.plan.output_dir
        if root is None:
            return [self._step(step, continuing=False) for step in self.plan.steps]
        refuse_foreign(root)
        self.lock = lock_run_folder(root)
        from .history import remember

        remember(root)  # for `lfkit runs`
        try:
            with stop_signals():
                return self._run_locked(root, overwrite)
        finally:
            os.close(self.lock)

    def _run_locked(self, root: Path, overwrite: bool) -> list[dict]:
        state = check_output_dir(self.plan, overwrite)
        multi = not self.plan.recipe.single
        if multi:
            started = read_record(root) or {}
            self._write(
                root, {**self.common, "status": RUNNING, "pid": os.getpid(), "started": started.get("started", now())}
            )
        results = []
        try:
            for step in self.plan.steps:
                results.append(self._step(step, continuing=state == "continue"))
        except (StepFailed, RunInterrupted) as exc:
            if multi:
                status = INTERRUPTED if isinstance(exc, RunInterrupted) else FAILED
                self._write(root, {**(read_record(root) or {}), "status": status, "ended": now()})
            raise
        finally:
            outputs.record(root)
        if multi:
            record = read_record(root) or {}
            self._write(root, {**record, "status": FINISHED, "finished": now(), "steps": [r["step"] for r in results]})
            outputs.record(root)
        return results

    def _step(self, step: ResolvedStep, continuing: bool) -> dict:
        temporary = step.dir is None
        folder = step.dir or Path(tempfile.mkdtemp(prefix=f"lfkit-{step.name}-"))
        previous = read_record(folder)
        if previous and previous.get("status") == FINISHED and previous.get("step") == step.name:
            self.echo(f"lfkit: step {step.name}: finished earlier, kept ({folder})")
            if step.command == "train" and self.on_train_step is not None:
                self.on_train_step(step, False)
            return previous
        folder.mkdir(parents=True, exist_ok=True)
        args = dict(step.args)
        resumed = None
        if step.command == "train":
            checkpoint = last_checkpoint(folder) if continuing else None
            if checkpoint is not None:
                args["resume_from_checkpoint"] = str(checkpoint)
                resumed = str(checkpoint)
                self.echo(f"lfkit: step {step.name}: resuming from {checkpoint.name}")
            else:
                # The folder holds only this run's own files (run.json, the YAML, a killed run's leftovers).
                args["overwrite_output_dir"] = True
        if not temporary:
            args = inputs.materialize(args, folder)
            _own_deepspeed_copy(args, folder)
        write_text(
            folder / LF_ARGS_FILE,
            export_yaml(replace(step, args=args), self.plan.recipe),
        )
        from lfkit.platform_detect import detect_platform

        record = {
            **self.common,
            "step": step.name,
            "command": step.command,
            "status": RUNNING,
            "pid": os.getpid(),
            "args": args,
            "lfkit_args": step.lfkit_args,
            "datasets": step.datasets,
            "notes": step.notes,
            "resumed_from": resumed,
            "argv": [sys.executable, "-m", "lfkit.recipes.step", str(folder)],
            "versions": versions(),
            "platform": detect_platform().as_dict(),
            "started": now(),
        }
        self._write(folder, record)
        interactive = step.command == "chat" and not step.lfkit_args.get("prompt")
        progress = None if (self.verbose or interactive) else StepProgress(step.name, step.command, folder)
        if progress is not None:
            progress.start()
        else:
            self.echo(f"lfkit: step {step.name} ({step.command}) -> {folder}")
        began = time.monotonic()
        (folder / PATCH_REPORT).unlink(missing_ok=True)
        (folder / LOG_FILE).unlink(missing_ok=True)
        launch = launcher_env(step.lfkit_args, args) if step.command == "train" else {}
        workers.clear(folder)
        if step.command == "train" and self.on_train_step is not None:
            self.on_train_step(step, True)
        lock = getattr(self, "lock", None)
        process = StepProcess(
            record["argv"],
            folder,
            keep_fds=(lock,) if lock is not None else (),
            interactive=interactive,
            extra_env={**launch, workers.REPORTS_ENV: str(folder), **memory_env(step, folder)},
            echo=progress is None,
        )
        try:
            code = process.wait(poll=progress.poll if progress else None)
        except KeyboardInterrupt as stop:
            process.stop()
            if progress is not None:
                progress.finish(INTERRUPTED, time.monotonic() - began)
            self._write(folder, {**record, "status": INTERRUPTED, "seconds": round(time.monotonic() - began, 1)})
            how = "resume from its last checkpoint" if step.command == "train" else "continue"
            signal_name = str(stop) if isinstance(stop, Stopped) else "SIGINT"
            raise RunInterrupted(
                f"stopped by {signal_name} during step {step.name}; run the same command again to {how}"
            ) from None
        record["seconds"] = round(time.monotonic() - began, 1)
        record["exit_code"] = code
        record["finished"] = now()
        report = folder / PATCH_REPORT
        if report.is_file():
            statuses = json.loads(report.read_text(encoding="utf-8"))
            record["patches"] = statuses["patches"]
            # What lfkit_prepare_args changed in the step's own process (each also said in its log).
            record["arg_changes"] = statuses["arg_changes"]
            report.unlink()
        if step.command == "train":
            record["memory"] = memory_record(folder, self.memory_plans.get(step.name))
        if world_size(launch):
            record["launch"] = {k: v for k, v in launch.items() if k != "FORCE_TORCHRUN"}
            wait = 10 if code == 0 else 0  # a failed launch leaves what it left
            record["workers"] = workers.collect(folder, expected=world_size(launch), wait_seconds=wait)
        if progress is not None:
            progress.finish(FINISHED if code == 0 else FAILED, record["seconds"])
            answer = read_record(folder, "answer.json") if step.command == "chat" and code == 0 else None
            if answer:  # a one-shot chat's answer is what the step is for: shown, not only logged
                self.echo(f"{answer.get('prompt')}\n=> {answer.get('answer')}")
        if code != 0:
            record["status"] = FAILED
            self._write(folder, record)
            log = folder / LOG_FILE
            raise StepFailed(
                f"step {step.name} ({step.command}) failed with exit code {code}",
                error_lines(log),
                log if log.is_file() else None,
            )
        if step.command == "train":
            _fix_adapter_base(folder, args.get("model_name_or_path"))
        record["status"] = FINISHED
        self._write(folder, record)
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        return record

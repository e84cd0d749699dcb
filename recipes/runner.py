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

import contextlib
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
from lfkit.launching.step_launch import launch_record, step_environment

from . import inputs, outputs
from .progress import StepProgress
from .resolve import Plan, ResolvedStep, export_yaml
from .run_folder import (
    DEEPSPEED_FILE,
    FAILED,
    FINISHED,
    INTERRUPTED,
    LF_ARGS_FILE,
    PATCH_REPORT,
    RUN_FILE,
    RUNNING,
    Guard,
    check_output_dir,
    host,
    identity,
    last_checkpoint,
    lock_run_folder,
    normal,
    now,
    read_record,
    refuse_foreign,
    set_aside_log_after,
    versions,
)
from .step_process import LOG_FILE, StepProcess, Stopped, error_lines, stop_signals


class StepFailed(RuntimeError):
    """A step's process exited non-zero; ``lines`` are the lines of its log that name the error."""

    def __init__(self, message: str, lines: list[str] | None = None, log: Path | None = None) -> None:
        super().__init__(message)
        self.lines, self.log = lines or [], log


class RunInterrupted(RuntimeError):
    """The run was stopped (Ctrl-C, SIGTERM) and marked interrupted; the same command continues it."""


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
        guard: Guard | None = None,
    ) -> None:
        self.plan = plan
        # The launch back ends' check that the folder's batch job (if any) is not queued or running.
        self.guard = guard
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
        write_json(folder / RUN_FILE, normal(record))

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
        state = check_output_dir(self.plan, overwrite, self.guard)
        multi = not self.plan.recipe.single
        if multi:
            started = read_record(root) or {}
            self._write(
                root,
                {
                    **self.common,
                    "status": RUNNING,
                    "pid": os.getpid(),
                    "host": host(),
                    "started": started.get("started", now()),
                },
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
            # what the run wrote, for a later --overwrite; where that cannot be written (a full disk), the
            # step's own failure is what is said, and a later --overwrite takes the newer files as not its own
            with contextlib.suppress(OSError):
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
            if checkpoint is not None:  # one this stack can load (run_folder.refuse_unresumable, before any step)
                args["resume_from_checkpoint"] = str(checkpoint)
                resumed = str(checkpoint)
                self.echo(f"lfkit: step {step.name}: resuming from {checkpoint.name}")
                aside = set_aside_log_after(checkpoint)
                if aside is not None:
                    self.echo(f"lfkit: step {step.name}: steps logged after {checkpoint.name} kept in {aside.name}")
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
        record = {
            **self.common,
            "step": step.name,
            "command": step.command,
            "status": RUNNING,
            "pid": os.getpid(),
            "host": host(),
            "args": args,
            "lfkit_args": step.lfkit_args,
            "datasets": step.datasets,
            "notes": step.notes,
            "resumed_from": resumed,
            "argv": [sys.executable, "-m", "lfkit.recipes.step", str(folder)],
            "versions": versions(),
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
        launch = step_environment(step, args, folder)
        if step.command == "train" and self.on_train_step is not None:
            self.on_train_step(step, True)
        lock = getattr(self, "lock", None)
        process = StepProcess(
            record["argv"],
            folder,
            keep_fds=(lock,) if lock is not None else (),
            interactive=interactive,
            extra_env={**launch, **memory_env(step, folder)},
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
            # Read where the step ran (a Slurm node's own), and where torch is imported anyway.
            record["platform"] = statuses.get("platform")
            report.unlink()
        if step.command == "train":
            record["memory"] = memory_record(folder, self.memory_plans.get(step.name))
        record.update(launch_record(step, folder, launch, code))
        if progress is not None:
            progress.finish(FINISHED if code == 0 else FAILED, record["seconds"])
            answer = read_record(folder, "answer.json") if step.command == "chat" and code == 0 else None
            if answer:  # a one-shot chat's answer is what the step is for: shown, not only logged
                self.echo(f"{answer.get('prompt')}\n=> {answer.get('answer')}")
        if code != 0:
            record["status"] = FAILED
            self._write(folder, record)
            log = folder / LOG_FILE
            lost = process.seen.lost
            if lost is None:
                lines = error_lines(log)
            else:  # the log stopped being written (a full disk): its end, as the step printed it
                lines = error_lines(log, text=process.seen.tail.decode("utf-8", errors="replace"))
                lines.append(f"(the log could not be written past some point: {lost.strerror or lost})")
            raise StepFailed(
                f"step {step.name} ({step.command}) failed with exit code {code}", lines, log if log.is_file() else None
            )
        if step.command == "train":
            _fix_adapter_base(folder, args.get("model_name_or_path"))
        record["status"] = FINISHED
        self._write(folder, record)
        if temporary:
            shutil.rmtree(folder, ignore_errors=True)
        return record

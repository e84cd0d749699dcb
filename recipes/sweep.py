"""A/B runs: one recipe, several variants (a hyperparameter grid, or several models), each evaluated.

The telecom fine-tune's tuning phase (fix the data, vary hyperparameters) and comparison phase
(fix data and hyperparameters, vary the model). Every variant is the recipe plus
an eval step, run by the ordinary runner into ``SWEEP_DIR/<variant>/``: each step
in its own process, with the same data and seed. A finished variant is kept, so an
interrupted sweep started again runs only what is missing.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from lfkit.atomic import write_json
from lfkit.errors import UsageError

from . import outputs
from .resolve import Plan, parse_assignments, resolve
from .run_folder import FAILED, FINISHED, INTERRUPTED, SUBMITTED, lock_run_folder, read_record
from .runner import RunInterrupted, StepFailed
from .spec import Recipe, Step, load

SWEEP_FILE = "sweep.json"
EVAL_STEP = "eval"
# What a sweep writes at its top, beside the variants' own run folders.
SWEEP_OUTPUTS = (SWEEP_FILE, "comparison.csv", "comparison.md", "loss_curves.png")


class VariantsFailed(RuntimeError):
    """Some variants failed; the others ran and the table shows all of them."""


def default_folder(recipe: str, key: dict[str, Any]) -> Path:
    """The same command, the same folder: a sweep run again without -o continues instead of starting over."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path("runs") / f"sweep-{recipe}-{digest}"


def _same_value(value: str) -> object:
    """What makes two grid values the same run: 5e-5 and 0.00005 are one learning rate."""
    try:
        return float(value)
    except ValueError:
        return value


def unique(values: list[str]) -> list[str]:
    seen: dict[object, str] = {}
    for value in values:
        seen.setdefault(_same_value(value), value)
    return list(seen.values())


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    grid: dict[str, list[str]] = {}
    for item in items:
        key, eq, values = item.partition("=")
        key = key.strip()
        options = unique([v.strip() for v in values.split(",") if v.strip()])
        if not eq or not key or not options:
            raise UsageError(f"--grid expects key=v1,v2,..., got {item!r}")
        if key in grid:
            raise UsageError(f"--grid {key} given twice")
        grid[key] = options
    return grid


def variants(grid: dict[str, list[str]]) -> list[dict[str, str]]:
    keys = list(grid)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(grid[k] for k in keys))]


def _short(key: str, value: str) -> str:
    if key in ("model", "model_name_or_path", "adapter", "adapter_name_or_path"):
        value = Path(value.rstrip("/")).name or value
    return value


def variant_names(items: list[dict[str, str]]) -> list[str]:
    names: list[str] = []
    for values in items:
        base = "_".join(f"{k}={_short(k, v)}" for k, v in values.items())
        base = re.sub(r"[^A-Za-z0-9_.=+\-]", "-", base) or "variant"
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def _trained_step(recipe: Recipe) -> Step:
    for step in reversed(recipe.steps):
        if step.command in ("train", "export"):
            return step
    raise UsageError(f"recipe {recipe.name} trains and merges nothing; sweep and compare need a train or export step")


def with_eval(recipe: Recipe, dataset: str) -> Recipe:
    """The recipe as a multi-step one, with an eval step of what it produced."""
    if any(s.name == EVAL_STEP for s in recipe.steps):
        raise UsageError(f"recipe {recipe.name} has a step named {EVAL_STEP!r} already")
    _trained_step(recipe)
    if "model" not in recipe.params:
        raise UsageError(f"recipe {recipe.name} takes no model=; sweep and compare need one")
    # _wire_eval points it at what the trained step made, once the plan is resolved.
    # the eval recipe's lengths: LLaMA-Factory's own default of 1024 new tokens lets an undertrained model
    # ramble on every sample of a short-answer split (minutes per variant); eval.max_new_tokens= changes it
    evaluation = load(Path(__file__).with_name("eval-telecom.yaml")).steps[0].args
    defaults = {k: v for k, v in evaluation.items() if k in ("max_new_tokens", "batch_size")}
    eval_step = Step(EVAL_STEP, "eval", {"model_name_or_path": "${model}", "eval_dataset": dataset, **defaults})
    # Two steps or more: each gets a folder of its own under the variant's folder.
    return replace(recipe, steps=(*recipe.steps, eval_step))


def _wire_eval(plan: Plan, trained: Step) -> None:
    """Point the eval step at what the trained step made, with that step's template and consent."""
    produced = next(s for s in plan.steps if s.name == trained.name)
    evaluation = plan.steps[-1]
    carried = ("template", "trust_remote_code", "dataset_dir", "cutoff_len")
    evaluation.args.update({k: produced.args[k] for k in carried if k in produced.args})
    if produced.command == "train":
        evaluation.args["model_name_or_path"] = produced.args["model_name_or_path"]
        evaluation.args["adapter_name_or_path"] = str(produced.dir)
        evaluation.args["finetuning_type"] = produced.args.get("finetuning_type", "lora")
    else:
        evaluation.args["model_name_or_path"] = str(produced.dir)
        evaluation.args.pop("adapter_name_or_path", None)


class Sweep:
    def __init__(
        self,
        recipe: Recipe,
        grid: dict[str, list[str]],
        assignments: list[str],
        config: dict[str, Any],
        dataset: str,
        out: Path,
        metric: str = "exact_match",
    ) -> None:
        self.recipe, self.grid, self.dataset, self.out, self.metric = recipe, grid, dataset, out, metric
        self.given = parse_assignments(assignments)
        overlap = set(self.given) & set(grid)
        if overlap:
            raise UsageError(f"{', '.join(sorted(overlap))} given both as key=value and as --grid")
        if "output_dir" in self.given or "output_dir" in grid:
            raise UsageError("a sweep chooses each variant's output_dir; give --output-dir for the sweep folder")
        self.config = config
        self.items = variants(grid)
        self.names = variant_names(self.items)
        self.wrapped = with_eval(recipe, dataset)
        self.trained = _trained_step(recipe)
        self._doomed: set[Path] | None = None  # what --overwrite deletes, once every check has passed

    def plans(self, devices: int | None = None) -> list[Plan]:
        """Every variant resolved and validated before the first one starts (``devices``: see resolve)."""
        plans = []
        for name, values in zip(self.names, self.items, strict=True):
            assignments = {**self.given, **values, "output_dir": str(self.out / name)}
            plan = resolve(self.wrapped, assignments, self.config, devices=devices)
            _wire_eval(plan, self.trained)
            plans.append(plan)
        return plans

    def record(self, status: str, rows: list[dict] | None = None) -> dict:
        return {
            "recipe": self.recipe.name,
            "grid": self.grid,
            "params": self.given,
            "eval_dataset": self.dataset,
            "metric": self.metric,
            "variants": dict(zip(self.names, self.items, strict=True)),
            "status": status,
            "results": rows or [],
        }

    def check_folder(self, overwrite: bool) -> None:
        if self.out.exists() and not self.out.is_dir():
            raise UsageError(f"{self.out} is a file; a sweep needs a folder")
        previous = read_record(self.out, SWEEP_FILE)
        if previous is None:
            if self.out.exists() and not outputs.is_empty_run_folder(self.out):
                raise UsageError(f"{self.out} holds files that are not an lfkit sweep; choose a new or empty folder")
            return
        if overwrite:
            # what --overwrite will delete is judged now (a file not the sweep's own refuses), and deleted
            # only once every variant has resolved and passed its checks (clear_overwritten)
            self._doomed = self._removal()
            return
        if previous.get("status") == FINISHED:
            raise UsageError(f"{self.out} holds a finished sweep; pass --overwrite to run it again")
        mine = self.record("running")
        for key in ("recipe", "grid", "params", "eval_dataset"):
            if previous.get(key) != mine[key]:
                raise UsageError(
                    f"{self.out} holds an unfinished sweep with another {key}; "
                    "run it with the same arguments to continue, or pass --overwrite"
                )

    def _removal(self) -> set[Path]:
        """--overwrite: the sweep's own files and each variant's recorded outputs, nothing else."""
        variants = {p.name for p in self.out.iterdir() if p.is_dir() and read_record(p) is not None}
        doomed: set[Path] = set()
        for name in sorted(variants):
            doomed.update(outputs.removal(self.out / name))
        checked = {f"{name}/{rel}" for name in variants for rel in outputs.files_under(self.out / name)}
        doomed.update(outputs.removal(self.out, SWEEP_OUTPUTS + tuple(checked)))
        return doomed

    def clear_overwritten(self) -> None:
        """The finished sweep --overwrite replaces, deleted: called after every check, before the first variant."""
        if self._doomed:
            outputs.remove(self.out, self._doomed)
        self._doomed = None

    def run(self, plans: list[Plan], backend, echo) -> list[dict]:
        """Each variant in turn on ``backend`` (a launch back end that runs here)."""
        lock = lock_run_folder(self.out)
        try:
            return self._run(plans, backend, echo)
        finally:
            os.close(lock)

    def _run(self, plans: list[Plan], backend, echo) -> list[dict]:
        write_json(self.out / SWEEP_FILE, self.record("running"))
        failed = []
        for name, plan in zip(self.names, plans, strict=True):
            record = read_record(plan.output_dir)
            if record and record.get("status") == FINISHED:
                echo(f"lfkit: variant {name}: finished earlier, kept")
                continue
            echo(f"lfkit: variant {name}")
            try:
                backend.run(plan, overwrite=False, echo=echo)
            except StepFailed as exc:
                failed.append(name)
                echo(f"lfkit: variant {name} failed: {exc}" + (f" ({exc.lines[-1]})" if exc.lines else ""))
            except RunInterrupted:
                write_json(self.out / SWEEP_FILE, self.record(INTERRUPTED))
                raise
        return self._table(failed)

    def _table(self, failed: list[str]) -> list[dict]:
        from lfkit.evaluation.compare import collect, write_comparison

        rows = collect(self.out, self.names, self.items, self.trained.name, EVAL_STEP, self.metric)
        write_comparison(self.out, rows, list(self.grid), self.metric, self.trained.name)
        write_json(self.out / SWEEP_FILE, self.record(FAILED if failed else FINISHED, rows))
        if failed:
            raise VariantsFailed(
                f"{len(failed)} of {len(self.names)} variants failed ({', '.join(failed)}); each folder's log "
                "says why; run the same command again to retry them (finished variants are kept)"
            )
        return rows

    def submit(self, plans: list[Plan], backend, echo) -> list[dict] | None:
        """On a batch back end (--slurm): one job per variant, and back at once. Run again once the jobs
        have ended, the same command collects the table; run again after that, it resubmits the failed variants."""
        lock = lock_run_folder(self.out)
        try:
            previous = read_record(self.out, SWEEP_FILE) or {}
            states = {
                name: backend.state(plan.output_dir) if read_record(plan.output_dir) else None
                for name, plan in zip(self.names, plans, strict=True)
            }
            active = [name for name, state in states.items() if state in ("pending", "running")]
            if active:
                echo(
                    f"lfkit: {len(active)} of {len(plans)} variant jobs are still pending or running "
                    f"({', '.join(active)}); run the same command again once they have ended"
                )
                return None
            if previous.get("status") == SUBMITTED:
                return self._table([name for name, state in states.items() if state != FINISHED])
            jobs = dict(previous.get("jobs") or {})
            for name, plan in zip(self.names, plans, strict=True):
                if states[name] == FINISHED:
                    echo(f"lfkit: variant {name}: finished earlier, kept")
                    continue
                jobs[name] = backend.run(plan, overwrite=False, echo=echo)
                echo(f"lfkit: variant {name}: job {jobs[name]}")
            write_json(self.out / SWEEP_FILE, {**self.record(SUBMITTED), "jobs": jobs})
            echo(f"lfkit: run the same command again once the jobs have ended to collect the table ({self.out})")
            return None
        finally:
            os.close(lock)

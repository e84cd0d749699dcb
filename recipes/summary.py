"""What a finished (or failed) run tells its user: each step's key result, and the command to run next.

Read from the step folders alone (run.json, trainer_log.jsonl, all_results.json,
metrics.json, answer.json), so ``lfkit run``, ``lfkit runs`` and ``lfkit show`` say the same.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from lfkit.state_files import number, read_json_bounded, read_tail_bounded

from .run_folder import RUN_FILE, read_record

# The end of a training log holds its last loss; a long run's whole log need not be read for it.
LOG_TAIL = 1 << 20


def _json(path: Path) -> dict[str, Any] | None:
    """A record beside the run (metrics, results, an answer): a JSON object, or None for anything else
    (absent, a FIFO, too big, cut short, a list), so a listing never hangs or ends in a traceback."""
    try:
        data = read_json_bounded(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def final_loss(folder: Path) -> float | None:
    """The last logged training loss, else the run's mean train_loss."""
    try:
        lines = read_tail_bounded(folder / "trainer_log.jsonl", LOG_TAIL).decode("utf-8", errors="replace")
    except OSError:
        lines = ""
    for line in reversed(lines.splitlines()):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        loss = number(entry.get("loss")) if isinstance(entry, dict) else None
        if loss is not None:
            return loss
    return number((_json(folder / "all_results.json") or {}).get("train_loss"))


# What a finished train step leaves in its folder, by what it trains.
WEIGHTS = {"adapter": ("adapter_model.*",), "model": ("*.safetensors", "pytorch_model*.bin")}


def key_result(command: str, folder: Path | None, record: dict[str, Any] | None) -> str:
    """One short phrase: the step's main figure and where its product is."""
    if folder is None or record is None:
        return ""
    args = record.get("args") if isinstance(record.get("args"), dict) else {}  # a damaged run.json: no args
    if command == "train":
        loss = final_loss(folder)
        what = "adapter" if args.get("finetuning_type", "lora") == "lora" else "model"
        made = record.get("status") == "finished" and any(any(folder.glob(w)) for w in WEIGHTS[what])
        # a step killed or failed (a full disk) made none, whatever its checkpoints hold
        status = record.get("status") or "stopped"
        product = f"{what} in {folder}" if made else f"no {what} saved (the step {status})"
        if not made and status == "running":
            product = f"no {what} yet (the step is running)"
        return (f"loss {loss:.4g}; " if loss is not None else "") + product
    if command == "export":
        return f"merged model in {args.get('export_dir') or folder}"
    if command == "eval":
        metrics = _json(folder / "metrics.json") or {}
        exact, f1 = number(metrics.get("exact_match")), number(metrics.get("f1"))
        if exact is not None:
            scores = f"exact match {exact:.3f}, F1 {f1 or 0:.3f}"
            return f"{scores} ({metrics.get('samples')} samples)"
    if command == "chat":
        answer = (_json(folder / "answer.json") or {}).get("answer")
        if isinstance(answer, str) and answer:
            return f"answer: {answer[:60]}"
    if command == "report":
        # the before / after summary lands in the report's summary_dir (the run folder for the demo)
        where = folder if (folder / "metrics.json").is_file() else folder.parent
        summary = _json(where / "metrics.json") or {}
        before, after = summary.get("before"), summary.get("after")
        parts = []
        was = number(before.get("exact_match")) if isinstance(before, dict) else None
        now = number(after.get("exact_match")) if isinstance(after, dict) else None
        if was is not None and now is not None:
            parts.append(f"exact match {was:.3f} -> {now:.3f}")
        if (where / "metrics.png").is_file():
            parts.append(f"plot {where / 'metrics.png'}")
        return "; ".join(parts)
    return ""


def key_metric(folder: Path) -> str:
    """A run folder's headline figure for `lfkit runs`: the last eval's exact match, else the final loss."""
    record = read_record(folder) or {}
    plan = record.get("plan") if isinstance(record.get("plan"), dict) else {}
    steps = record.get("steps") if isinstance(record.get("steps"), list) else list(plan)
    dirs = [folder / s for s in steps if isinstance(s, str) and (folder / s / RUN_FILE).is_file()] or [folder]
    for step_dir in reversed(dirs):
        exact = number((_json(step_dir / "metrics.json") or {}).get("exact_match"))
        if exact is not None:
            return f"exact match {exact:.3f}"
    for step_dir in reversed(dirs):
        if (step_dir / "trainer_log.jsonl").is_file() or (step_dir / "all_results.json").is_file():
            loss = final_loss(step_dir)
            if loss is not None:
                return f"loss {loss:.4g}"
    return ""


def _same_prompts(args: dict[str, Any]) -> str:
    """What the next command must repeat to talk to the model as the step did: its template (a chat or
    eval in another format answers another question) and the consent to run the model folder's code."""
    said = f" template={shlex.quote(str(args['template']))}" if args.get("template") else ""
    return said + (" trust_remote_code=true" if str(args.get("trust_remote_code")).lower() == "true" else "")


def next_commands(plan, records: list[dict[str, Any]]) -> list[str]:
    """What a user would likely run next, from the last step that made something."""
    out: list[str] = []
    for step, record in reversed(list(zip(plan.steps, records, strict=True))):
        if record.get("status") != "finished" or step.dir is None:
            continue
        args = step.args
        model = args.get("model_name_or_path")
        same = _same_prompts(args)
        if step.command == "train" and args.get("finetuning_type", "lora") == "lora":
            base, adapter = shlex.quote(str(model)), shlex.quote(str(step.dir))
            merged = shlex.quote(f"{step.dir}-merged")
            out.append(f"lfkit run chat model={base} adapter={adapter}{same}")
            out.append(f"lfkit run merge-lora model={base} adapter={adapter} output_dir={merged}{same}")
            out.append(f"lfkit eval model={base} adapter={adapter}{same}")
            break
        if step.command == "train":
            out.append(f"lfkit run chat model={shlex.quote(str(step.dir))}{same}")
            break
        if step.command == "export":
            merged = shlex.quote(str(args.get("export_dir") or step.dir))
            out.append(f"lfkit run chat model={merged}{same}")
            out.append(f"lfkit eval model={merged}{same}")
            break
        if step.command == "eval" and plan.output_dir is not None:
            out.append(f"lfkit show {shlex.quote(str(plan.output_dir))}")
            break
    return out

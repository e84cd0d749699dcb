"""Evaluate a model on a dataset known by name: predictions.jsonl, metrics.json and a table.

The dataset is looked up as LLaMA-Factory would look it up (the user's
dataset_dir/dataset_info.json, then lfkit's registry), and each row becomes the
conversation LLaMA-Factory trains on: alpaca rows as instruction + input with
their history and system, sharegpt rows up to their last assistant turn.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from lfkit.atomic import write_json, write_text
from lfkit.dataset_registry.lookup_patch import DEFAULT_DATASET_DIR, merged_info, user_entries
from lfkit.dataset_registry.spec import ALPACA_DEFAULTS, SHAREGPT_DEFAULTS, load_rows
from lfkit.errors import UsageError

from .metrics import summarize

# samples done / total while an eval runs, for lfkit run's progress line
EVAL_PROGRESS = ".lfkit-progress.json"


def dataset_entry(name: str, dataset_dir: str | Path | None) -> dict[str, Any]:
    entries = merged_info([name], user_entries(dataset_dir or DEFAULT_DATASET_DIR))
    if name not in entries:
        raise UsageError(f"unknown dataset {name!r}: see `lfkit datasets`, or give dataset_dir=")
    entry = entries[name]
    if "file_name" not in entry:
        raise UsageError(f"dataset {name!r} is not a local file; lfkit eval reads local files only")
    return entry


def _alpaca(row: dict, columns: dict[str, str]) -> tuple[list[dict], str | None, str]:
    c = {**ALPACA_DEFAULTS, **columns}
    messages = []
    for old_prompt, old_response in row.get(c.get("history", "history")) or []:
        messages += [{"role": "user", "content": old_prompt}, {"role": "assistant", "content": old_response}]
    content = str(row[c["prompt"]])
    query = row.get(c["query"])
    if query:
        content = f"{content}\n{query}"
    messages.append({"role": "user", "content": content})
    system = row.get(c["system"]) if "system" in c else None
    return messages, system, str(row[c["response"]])


def _sharegpt(row: dict, columns: dict[str, str], tags: dict[str, str]) -> tuple[list[dict], str | None, str]:
    t = {**SHAREGPT_DEFAULTS, **tags}
    turns = row[columns.get("messages", SHAREGPT_DEFAULTS["messages"])]
    roles = {t["user_tag"]: "user", t["assistant_tag"]: "assistant"}
    system = row.get(columns["system"]) if "system" in columns else None
    if turns and turns[0][t["role_tag"]] == t["system_tag"]:
        system, turns = turns[0][t["content_tag"]], turns[1:]
    last = max((i for i, m in enumerate(turns) if m[t["role_tag"]] == t["assistant_tag"]), default=None)
    if last is None:
        raise UsageError("a sharegpt row has no assistant turn to compare with")
    messages = [{"role": roles.get(m[t["role_tag"]], "user"), "content": m[t["content_tag"]]} for m in turns[:last]]
    return messages, system, str(turns[last][t["content_tag"]])


def examples(name: str, dataset_dir: str | Path | None, max_samples: int | None = None) -> list[dict]:
    entry = dataset_entry(name, dataset_dir)
    rows = load_rows(Path(entry["file_name"]))  # absolute: merged_info made it so
    if max_samples:
        rows = rows[:max_samples]
    columns, tags = entry.get("columns", {}), entry.get("tags", {})
    out = []
    for number, row in enumerate(rows, 1):
        try:
            if entry.get("formatting", "alpaca") == "sharegpt":
                messages, system, reference = _sharegpt(row, columns, tags)
            else:
                messages, system, reference = _alpaca(row, columns)
        except UsageError as exc:
            raise UsageError(f"dataset {name!r}, row {number}: {exc}") from None
        except (KeyError, IndexError, TypeError, AttributeError) as exc:  # a row not shaped as its entry says
            raise UsageError(f"dataset {name!r}, row {number}: {_misshapen(row, exc)}") from None
        out.append({"messages": messages, "system": system, "reference": reference, "category": row.get("category")})
    return out


def _misshapen(row: Any, exc: Exception) -> str:
    if not isinstance(row, dict):
        return f"not a JSON object but {type(row).__name__}"
    if isinstance(exc, KeyError):
        return f"no field {exc.args[0]!r} (its fields: {', '.join(map(str, row)) or 'none'})"
    return f"not shaped as its formatting says ({type(exc).__name__}: {exc})"


def evaluate(infer_args: dict[str, Any], dataset: str, out_dir: Path, batch_size: int = 8) -> dict:
    """Answer every example of ``dataset`` greedily, score, write predictions.jsonl and metrics.json."""
    from rich.progress import Progress

    from .generate import Generator

    started = time.monotonic()
    items = examples(dataset, infer_args.get("dataset_dir"), infer_args.get("max_samples"))
    generator = Generator({k: v for k, v in infer_args.items() if k not in ("eval_dataset", "max_samples")})
    prompts = [generator.prompt_ids(item["messages"], item["system"]) for item in items]
    done = [0]

    def advance(n: int) -> None:
        # lfkit run's progress line reads this file (the step's stdout goes to its log)
        done[0] += n
        write_json(out_dir / EVAL_PROGRESS, {"done": done[0], "total": len(prompts)})

    with Progress(transient=True, disable=not sys.stdout.isatty()) as progress:
        task = progress.add_task(f"eval {dataset}", total=len(prompts))

        def both(n: int) -> None:
            progress.advance(task, n)
            advance(n)

        predictions = list(generator.answers(prompts, batch_size, progress=both))
    (out_dir / EVAL_PROGRESS).unlink(missing_ok=True)
    lines = []
    for item, prediction in zip(items, predictions, strict=True):
        prompt = item["messages"][-1]["content"]
        lines.append(
            json.dumps({"prompt": prompt, "prediction": prediction, "reference": item["reference"]}, ensure_ascii=False)
        )
    metrics = summarize((p, item["reference"], item["category"]) for p, item in zip(predictions, items, strict=True))
    metrics.update(
        dataset=dataset,
        model=infer_args.get("model_name_or_path"),
        adapter=infer_args.get("adapter_name_or_path"),
        seconds=round(time.monotonic() - started, 1),
    )
    out_dir = Path(out_dir)
    write_text(out_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    write_json(out_dir / "metrics.json", metrics)
    return metrics

"""One step of a recipe, in its own process: ``python -m lfkit.recipes.step STEP_DIR``.

Reads the step from STEP_DIR/run.json (written by the runner). train, export and
an interactive chat are LLaMA-Factory's own CLI on STEP_DIR/llamafactory.yaml, so
they behave exactly as ``llamafactory-cli`` does; a one-shot chat, eval and
report are lfkit's. On the way out the step leaves its process's patch statuses
for the runner to put into run.json.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import yaml

import lfkit  # noqa: F401 - activation, whether or not the .pth autoload is on
from lfkit.errors import stop_run
from lfkit.known_broken import import_failure
from lfkit.worker_report import patch_statuses

from .run_folder import LF_ARGS_FILE, PATCH_REPORT, RUN_FILE
from .step_process import die_with_parent


def _llamafactory(command: str, args_file: Path) -> None:
    from llamafactory.cli import main as llamafactory_main

    sys.argv = ["llamafactory-cli", command, str(args_file)]
    llamafactory_main()


def chat_once(args: dict, prompt: str, seed: int | None, folder: Path) -> str:
    from llamafactory.chat import ChatModel
    from transformers import set_seed

    if seed is not None:
        set_seed(seed)
    model = ChatModel(dict(args))
    answer = model.chat([{"role": "user", "content": prompt}])[0].response_text
    print(f"\n{prompt}\n=> {answer}\n", flush=True)
    from lfkit.atomic import write_json

    write_json(folder / "answer.json", {"prompt": prompt, "answer": answer, "seed": seed})
    return answer


def run(folder: Path) -> None:
    record = json.loads((folder / RUN_FILE).read_text(encoding="utf-8"))
    command, own = record["command"], record.get("lfkit_args") or {}
    args = yaml.safe_load((folder / LF_ARGS_FILE).read_text(encoding="utf-8")) or {}
    if command in ("train", "export") or (command == "chat" and not own.get("prompt")):
        _llamafactory(command, folder / LF_ARGS_FILE)
    elif command == "chat":
        chat_once(args, own["prompt"], own.get("seed"), folder)
    elif command == "eval":
        from lfkit.evaluation.report import print_metrics
        from lfkit.evaluation.runner import evaluate

        if own.get("seed") is not None:
            from transformers import set_seed

            set_seed(own["seed"])
        dataset = args.get("eval_dataset")
        metrics = evaluate(args, dataset, folder, batch_size=own.get("batch_size") or 8)
        print_metrics(f"eval {dataset}", metrics)
    elif command == "report":
        from lfkit.evaluation.report import before_after

        train = own.get("train")
        before_after(
            Path(own.get("summary_dir") or folder), Path(own["before"]), Path(own["after"]), train and Path(train)
        )
    else:
        raise SystemExit(f"lfkit: unknown step command {command!r}")


def main() -> None:
    die_with_parent()
    folder = Path(sys.argv[1])
    if "--other-node" in sys.argv[2:]:
        # Another node's share of a multi-node train step (see lfkit.launching.slurm.node); node 0 reports.
        _llamafactory("train", folder / LF_ARGS_FILE)
        return
    try:
        run(folder)
    except ImportError as exc:
        # pyarrow 26+ with numpy 1: LLaMA-Factory cannot be imported; one line the runner shows
        line = import_failure(exc)
        if line is None:
            raise
        stop_run(line)
    finally:
        from lfkit.atomic import write_json
        from lfkit.lifecycle import ARG_CHANGES
        from lfkit.platform_detect import detect_platform

        report = {
            "patches": patch_statuses(),
            "arg_changes": [c.as_dict() for c in ARG_CHANGES],
            "platform": detect_platform().as_dict(),
        }
        # On a full disk the step's own error is what the user must see, not this report's
        with contextlib.suppress(OSError):
            write_json(folder / PATCH_REPORT, report)


if __name__ == "__main__":
    main()

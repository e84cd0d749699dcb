"""The memory plan of LlamaBoard's current choices, as one line under the train tab's settings.

"needs 14.8 GiB of 16 GiB per card: fits", or what does not fit and the cheapest change that does. The
arguments are LLaMA-Factory's own (the web UI's ``Runner._parse_train_args``, what Start would
train); the plan is lfkit's (``lfkit.planning``) at the cutoff length. It is worked out in a thread
of its own with a short timeout and never blocks the UI; a model folder without config.json (a hub
id, nothing chosen yet) gives "not known".
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from lfkit.errors import UsageError
from lfkit.lf_versions import RANGE
from lfkit.patching import Patch, PatchContext

logger = logging.getLogger("lfkit.llamaboard")
GIB = 2**30
TIMEOUT_SECONDS = 10.0
ELEM_ID = "lfkit-fit-line"
TARGET_ID = "lfkit-fit-target"
PREFIX = "**lfkit memory plan:**"
# Choices that change the plan (the card size box is added to them).
WATCHED = (
    "top.model_path",
    "top.finetuning_type",
    "top.quantization_bit",
    "top.quantization_method",
    "top.booster",
    "train.training_stage",
    "train.compute_type",
    "train.cutoff_len",
    "train.batch_size",
    "train.gradient_accumulation_steps",
    "train.lora_rank",
    "train.lora_target",
    "train.freeze_trainable_layers",
    "train.ds_stage",
    "train.ds_offload",
)
# The words the web UI uses for the arguments a suggestion changes.
WORDS = {
    "per_device_train_batch_size": "micro-batch",
    "gradient_accumulation_steps": "accumulation",
    "cutoff_len": "cutoff length",
    "quantization_bit": "quantization bit",
    "finetuning_type": "finetuning method",
    "deepspeed": "DeepSpeed",
}


@functools.cache
def _pool():
    """The plan's threads, made when the web UI first asks (every process of the environment loads this module)."""
    import concurrent.futures

    return concurrent.futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="lfkit-fit-line")


def _change_words(change: dict[str, Any]) -> str:
    change = dict(change)
    batch, steps = change.pop("per_device_train_batch_size", None), change.pop("gradient_accumulation_steps", None)
    parts = []
    if batch is not None and steps is not None:
        parts.append(f"micro-batch {batch} x accumulation {steps}")
    elif batch is not None:
        parts.append(f"micro-batch {batch}")
    elif steps is not None:
        parts.append(f"accumulation {steps}")
    parts += [f"{WORDS.get(key, key)} {value}" for key, value in change.items()]
    return ", ".join(parts)


def _target_bytes(text: Any) -> int | None:
    from lfkit.planning.plan import parse_size

    if text in (None, "") or not str(text).strip():
        return None
    return parse_size(str(text).strip())


def plan_line(args: dict[str, Any], target_text: Any) -> str:
    """The line for LLaMA-Factory train arguments and a typed card size (GiB; empty: the visible card)."""
    from lfkit.planning.plan import plan_step

    model = Path(str(args.get("model_name_or_path") or ""))
    if not str(args.get("model_name_or_path") or "") or not (model / "config.json").is_file():
        return f"{PREFIX} not known (the model path is not a local folder with a config.json)"
    try:
        target = _target_bytes(target_text)
    except UsageError:
        return f"{PREFIX} give the card size in GiB, such as 16"
    own = {"gpu_memory": target / GIB} if target else {}
    # The plan at the cutoff length: the data is not tokenized for a line that follows every click.
    step = SimpleNamespace(
        name="train", args={k: v for k, v in args.items() if k != "dataset"}, lfkit_args=own, datasets={}
    )
    result = plan_step(step)
    needed, s = result.needed / GIB, result.estimate.setting
    shape = f"{s.seq_len} tokens x micro-batch {s.micro_batch}"
    if result.target is None:
        return f"{PREFIX} needs {needed:.1f} GiB per card ({shape}); type a card size to compare"
    card = f"{result.target / GIB:.3g} GiB"
    if result.fits:
        return f"{PREFIX} needs {needed:.1f} GiB of {card} per card: fits ({shape})"
    line = f"{PREFIX} needs {needed:.1f} GiB of {card} per card: does not fit ({shape})"
    if result.suggestions:
        best = result.suggestions[0]
        line += f"; cheapest change: {_change_words(best.change)} ({best.estimate.needed / GIB:.1f} GiB)"
    return line


def _visible_card() -> str:
    """The smallest visible card's memory in GiB, as the box's first value ("" without a card)."""
    try:
        from lfkit.platform_detect import detect_platform

        gpus = [g for g in detect_platform(with_gpus=True).gpus if "memory_bytes" in g]
    except Exception:  # noqa: BLE001 - the box stays empty; a typed size still plans
        return ""
    return f"{min(g['memory_bytes'] for g in gpus) / GIB:.0f}" if gpus else ""


def _apply(train, ctx: PatchContext) -> None:
    original = train.create_train_tab

    def create_train_tab(engine):
        elems = original(engine)
        try:
            _add_fit_line(train.gr, engine, elems)
        except Exception:  # noqa: BLE001 - the train tab must come up as LLaMA-Factory made it
            logger.warning("lfkit: the memory plan line could not be added to the train tab", exc_info=True)
        return elems

    create_train_tab.__wrapped__ = original
    ctx.replace_everywhere(train, "create_train_tab", create_train_tab, "llamafactory.webui")


def _add_fit_line(gr, engine, elems: dict[str, Any]) -> None:
    with gr.Row():
        target = gr.Textbox(
            value=_visible_card(), label="card memory (GiB) for lfkit's plan", elem_id=TARGET_ID, scale=1
        )
        line = gr.Markdown(f"{PREFIX} choose a local model folder", elem_id=ELEM_ID)
    own = {f"train.{name}": elem for name, elem in elems.items()}
    outputs = (gr.Button, gr.Markdown, gr.JSON, gr.Plot, gr.LinePlot)
    inputs = {
        elem for elem in own.values() if isinstance(elem, gr.components.Component) and not isinstance(elem, outputs)
    } | engine.manager.get_base_elems()

    name = engine.manager.get_elem_by_id("top.model_name")

    def update(data: dict) -> str:
        def work() -> str:
            # The ids are those of LLaMA-Factory's manager, which holds the train tab's elements by now.
            # The model name only names the output folder: a path typed without one still plans.
            args = engine.runner._parse_train_args({**data, name: data.get(name) or "Custom"})
            return plan_line(args, data[target])

        import concurrent.futures

        try:
            return _pool().submit(work).result(timeout=TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:
            return f"{PREFIX} not known (the plan took longer than {TIMEOUT_SECONDS:.0f} s)"
        except Exception as exc:  # noqa: BLE001 - a line, never an error box in the UI
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            return f"{PREFIX} not known ({reason})"

    base = {eid: engine.manager.get_elem_by_id(eid) for eid in WATCHED if eid.startswith("top.")}
    for elem in [*base.values(), *(own[eid] for eid in WATCHED if eid in own), target]:
        elem.change(update, inputs | {target}, [line], queue=False, trigger_mode="always_last")


PATCH = Patch(
    id="webui-fit-line",
    why="show the memory plan of LlamaBoard's current choices before Start",
    target="llamafactory.webui.components.train",
    apply=_apply,
    reference="LLaMA-Factory v0.9.3-v0.9.5 webui/components/train.py create_train_tab",
    requires=RANGE,
)

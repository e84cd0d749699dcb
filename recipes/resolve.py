"""From a recipe and the user's key=value to the exact arguments of every step.

Order: recipe defaults < --config file < key=value on the command line. A name the
recipe declares under ``params`` is a parameter; ``STEP.key=value`` sets one
step's key; any other key is a LLaMA-Factory key for every step that knows it.
Then the model plugins fill recipe defaults (a recognised family's template and
lora_target, each kept as a note with its why; the user's values win), and every
key and value is checked against LLaMA-Factory's own argument dataclasses.
Nothing here starts training or loads a model.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lfkit.errors import UsageError

from . import lf_args
from .inputs import check_apart, fingerprints, given_paths, refuse_overlap
from .ranges import range_error
from .spec import LF_COMMANDS, Recipe
from .validate import check_adapter, check_datasets, check_model, check_template, resolve_model

_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_.\-]*)\}")
_UNSET = object()

# Keys holding paths: made absolute, so the run works from any folder and PEFT
# records the base model's absolute path in adapter_config.json.
PATH_KEYS = ("model_name_or_path", "adapter_name_or_path", "dataset_dir", "output_dir", "export_dir")
# "auto" for these means: on where a GPU (CUDA, ROCm or DTK) is visible.
AUTO_PRECISION = ("fp16", "bf16")


@dataclass
class ResolvedStep:
    name: str
    command: str
    dir: Path | None
    args: dict[str, Any]  # LLaMA-Factory keys
    lfkit_args: dict[str, Any] = field(default_factory=dict)  # keys lfkit's side of the step reads
    notes: list[str] = field(default_factory=list)
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {file, sha256}


@dataclass
class Plan:
    recipe: Recipe
    params: dict[str, Any]
    output_dir: Path | None
    steps: list[ResolvedStep]


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``key=value`` strings to a dict; the values stay text until a key's type is known."""
    out: dict[str, Any] = {}
    for item in items:
        key, eq, value = item.partition("=")
        key = key.strip()
        if not eq or not key:
            raise UsageError(f"expected key=value, got {item!r}")
        out[key] = value
    return out


def read_config(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--config {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"--config {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of key: value")
    return data


def _interpolate(value: Any, scope: dict[str, Any], where: str) -> Any:
    if isinstance(value, dict):
        return {k: _interpolate(v, scope, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, scope, where) for v in value]
    if not isinstance(value, str):
        return value
    whole = _REF.fullmatch(value)
    if whole:  # a whole-value reference keeps the value's type, or drops the key when unset
        if whole.group(1) not in scope:
            _missing(whole.group(1), where)
        return scope[whole.group(1)]

    def sub(match: re.Match) -> str:
        name = match.group(1)
        if name not in scope:
            _missing(name, where)
        if scope[name] is _UNSET or scope[name] is None:
            raise UsageError(f"{where}: needs {name}=")
        return str(scope[name])

    return _REF.sub(sub, value)


def _missing(name: str, where: str):
    raise UsageError(f"{where}: refers to ${{{name}}}, which the recipe does not define")


def _params(recipe: Recipe, given: dict[str, Any]) -> dict[str, Any]:
    # A default may hold {time}: the demo's run folder is new each time, never an old run's.
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    params = {
        name: p.default.replace("{time}", stamp) if isinstance(p.default, str) else p.default
        for name, p in recipe.params.items()
    }
    params.update({k: v for k, v in given.items() if k in recipe.params})
    for name, p in recipe.params.items():
        if p.required and params.get(name) in (None, ""):
            hint = f" ({p.help})" if p.help else ""
            raise UsageError(f"recipe {recipe.name} needs {name}=...{hint}")
    return params


# The device files of the NVIDIA, AMD (ROCm and Hygon DTK: kfd) and WSL drivers.
GPU_DRIVER_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")


def visible_devices() -> int:
    """GPUs (CUDA, ROCm or DTK) this process sees; 0 on a CPU machine; one under LFKIT_SIMULATE of a GPU."""
    from lfkit.simulation import simulated

    sim = simulated()
    if sim is not None:
        return 0 if sim.kind == "cpu" else 1
    if "torch" not in sys.modules and not any(Path(node).exists() for node in GPU_DRIVER_NODES):
        return 0  # no driver, no device: spare the import of torch (seconds)
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _emulated_bf16() -> str | None:
    """The AMD architecture here when it only emulates bf16, else None."""
    from lfkit.platform_detect import detect_platform

    platform = detect_platform()
    return platform.arch if platform.kind in ("rocm", "dtk") and platform.native_bf16 is False else None


def _launch(args: dict[str, Any], devices: int, where: str) -> None:
    """Workers and DeepSpeed: more workers than devices is refused (a CPU machine may run any number);
    DeepSpeed always runs under torchrun, one worker per device unless told."""
    if args.get("deepspeed") and not args.get("nproc_per_node"):
        args["nproc_per_node"] = max(devices, 1)
    nproc = args.get("nproc_per_node")
    if nproc and devices and nproc > devices:
        raise UsageError(f"{where}: nproc_per_node={nproc} but only {devices} device(s) are visible")
    nnodes, rank = args.get("nnodes") or 1, args.get("node_rank")
    if rank is not None and rank >= nnodes:
        raise UsageError(f"{where}: node_rank={rank} must be below nnodes={nnodes}")
    if args.get("deepspeed"):
        from lfkit.launching.deepspeed import resolve as resolve_deepspeed

        args["deepspeed"] = resolve_deepspeed(args["deepspeed"], args)


def _absolute(key: str, value: Any) -> Any:
    if not isinstance(value, str) or not value:
        return value
    if key in ("model_name_or_path", "adapter_name_or_path"):
        # Comma-separated adapters; a hub id ("org/name") that is not a local folder stays as it is.
        parts = [p.strip() for p in value.split(",")]
        return ",".join(str(Path(p).expanduser().resolve()) if Path(p).expanduser().exists() else p for p in parts)
    return str(Path(value).expanduser().resolve())


def _prepare_with_plugins(command: str, args: dict[str, Any], notes: list[str], runs_model_code: bool) -> None:
    """Recipe defaults first (a family's template and lora_target, said with their why), then
    lfkit_prepare_args, exactly as ``llamafactory-cli`` on the exported YAML will run it."""
    from lfkit.plugin_manager import get_manager

    manager = get_manager()
    lf_command = command if command in LF_COMMANDS else "chat"
    for key, (value, why) in manager.recipe_defaults(lf_command, args, runs_model_code).items():
        args[key] = value
        notes.append(f"{key}: {value} ({why})")
    for change in manager.prepare_args(lf_command, args):
        notes.append(f"{change.key}: {change.old!r} -> {change.new!r} (lf-hook-prepare-args, {change.plugin})")


def resolve(
    recipe: Recipe,
    assignments: dict[str, Any],
    config: dict[str, Any] | None = None,
    on_output_dir: Callable[[Path | None], None] | None = None,
    devices: int | None = None,
    runs_model_code: bool = True,
) -> Plan:
    """The plan of a run. ``on_output_dir`` sees the run folder as soon as it is known,
    before LLaMA-Factory is imported, so a refusal there costs nothing. ``devices``: the
    GPUs per node where the run will go (a Slurm job's gres); None means this machine's.
    ``runs_model_code=False``: the plan is only looked at (``lfkit plan``), so no consent to a model
    folder's code is asked."""
    given = {**(config or {}), **assignments}
    step_names = {s.name for s in recipe.steps}
    per_step: dict[str, dict[str, Any]] = {name: {} for name in step_names}
    common: dict[str, Any] = {}
    for key, value in given.items():
        if key in recipe.params:
            continue
        step, dot, sub = key.partition(".")
        if dot and step in step_names:
            per_step[step][sub] = value
        else:
            common[key] = value

    params = _params(recipe, given)
    out = params.get("output_dir")
    output_dir = Path(str(out)).expanduser().resolve() if out not in (None, "") else None
    if on_output_dir is not None:
        refuse_overlap(output_dir, given_paths(params))
        on_output_dir(output_dir)
    if params.get("model"):
        params["model"] = resolve_model(str(params["model"]))

    # A key on the command line must mean something to at least one step.
    for key in common:
        if not any(key in lf_args.known_keys(s.command) for s in recipe.steps):
            commands = sorted({s.command for s in recipe.steps})
            lf_args.check_key(commands[0], key, f"recipe {recipe.name}")

    dirs: dict[str, Path | None] = {}
    for step in recipe.steps:
        if output_dir is None:
            dirs[step.name] = None
        else:
            dirs[step.name] = output_dir if recipe.single else output_dir / step.name
    scope_base = {k: (_UNSET if v in (None, "") else v) for k, v in params.items()}
    scope_base["output_dir"] = str(output_dir) if output_dir else _UNSET
    for name, d in dirs.items():
        scope_base[f"steps.{name}"] = str(d) if d else _UNSET

    steps = []
    for step in recipe.steps:
        where = f"recipe {recipe.name}, step {step.name}"
        scope = {**scope_base, "step_dir": str(dirs[step.name]) if dirs[step.name] else _UNSET}
        args = {k: v for k, v in _interpolate(step.args, scope, where).items() if v is not _UNSET}
        known = lf_args.known_keys(step.command)
        args.update({k: v for k, v in common.items() if k in known})
        args.update(per_step[step.name])
        resolved = ResolvedStep(step.name, step.command, dirs[step.name], {})
        for key in AUTO_PRECISION:
            if args.get(key) == "auto":
                if devices is None:
                    devices = visible_devices()
                args[key] = devices > 0
                why = f"GPU visible: {args[key]}"
                if key == "bf16" and args[key] and _emulated_bf16():
                    args[key], why = False, f"{_emulated_bf16()} has no native bf16"
                resolved.notes.append(f"{key}: auto -> {args[key]} ({why})")
        if step.command != "report":
            _prepare_with_plugins(step.command, args, resolved.notes, runs_model_code)
        for key in list(args):
            args[key] = lf_args.coerce(step.command, key, args[key], where)
            out_of_range = range_error(key, args[key])
            if out_of_range:
                raise UsageError(f"{where}: {out_of_range}")
            if key in PATH_KEYS:
                args[key] = _absolute(key, args[key])
        if step.command == "train":
            if devices is None and (args.get("nproc_per_node") or args.get("deepspeed")):
                devices = visible_devices()
            _launch(args, devices or 0, where)
        own = lf_args.lfkit_keys(step.command)
        resolved.args = {k: v for k, v in args.items() if k not in own}
        resolved.lfkit_args = {k: v for k, v in args.items() if k in own}
        steps.append(resolved)

    _check(steps, output_dir)
    return Plan(recipe, params, output_dir, steps)


# The bits each quantization method of LLaMA-Factory takes (model/model_utils/quantization.py).
QUANTIZATION_BITS = {"bitsandbytes": (4, 8), "bnb": (4, 8), "hqq": (1, 2, 3, 4, 5, 6, 8), "eetq": (8,)}


def _check_training(step: ResolvedStep, made_by_run: Callable[[ResolvedStep, str], bool]) -> None:
    """What LLaMA-Factory refuses only once the model has loaded: quantization bits its method lacks,
    LoRA targets the model does not have."""
    args = step.args
    bits = args.get("quantization_bit")
    method = str(args.get("quantization_method") or "bitsandbytes").lower()
    if bits is not None and method in QUANTIZATION_BITS and bits not in QUANTIZATION_BITS[method]:
        allowed = " or ".join(map(str, QUANTIZATION_BITS[method]))
        raise UsageError(f"step {step.name}: quantization_bit={bits}: {method} quantizes to {allowed} bits")
    model = str(args.get("model_name_or_path") or "")
    targets = args.get("lora_target")
    if str(args.get("finetuning_type") or "lora") != "lora" or not targets or made_by_run(step, model):
        return
    if args.get("adapter_name_or_path") and not args.get("create_new_adapter"):
        return  # LLaMA-Factory goes on training the given adapter, whose targets are its own
    if not (Path(model) / "config.json").is_file():
        return
    from lfkit.planning.shapes import model_shape
    from lfkit.planning.trainable import split_list

    names = [n for n in split_list(targets, ["all"]) if n != "all"]
    if not names:
        return
    try:
        modules = {t.module for t in model_shape(model).tensors}
    except Exception:  # noqa: BLE001 - a shape that cannot be laid out here refuses nothing; the run decides
        return
    leaves = {path.rpartition(".")[2] for path in modules}
    # peft's rule for names: a module whose path is the name or ends with "." + name (Linear, Embedding, Conv1D)
    missing = [n for n in names if n not in leaves and not any(path == n or path.endswith("." + n) for path in modules)]
    if missing:
        raise UsageError(
            f"step {step.name}: lora_target names {', '.join(missing)}, which {model} does not have; "
            f"its modules with weights: {', '.join(sorted(leaves))} (or lora_target=all)"
        )


def _check(steps: list[ResolvedStep], output_dir: Path | None) -> None:
    """Paths and names the user gave must exist; those an earlier step will make are skipped."""

    def made_by_run(step: ResolvedStep, value: str) -> bool:
        earlier = [s.dir for s in steps[: steps.index(step)] if s.dir is not None]
        return any(Path(value).resolve().is_relative_to(d) for d in earlier)

    for step in steps:
        args = step.args
        model = args.get("model_name_or_path")
        if step.command != "report":
            if not model:
                raise UsageError(f"step {step.name}: needs model=...")
            if not made_by_run(step, model):
                check_model(model)
        for adapter in str(args.get("adapter_name_or_path") or "").split(","):
            if adapter and not made_by_run(step, adapter):
                check_adapter(adapter)
        dataset_dir = args.get("dataset_dir")
        for key in ("dataset", "eval_dataset"):
            if args.get(key):
                check_datasets(args[key], dataset_dir, f"step {step.name}: {key}")
        step.datasets = fingerprints(args)
        if args.get("template"):
            check_template(args["template"])
        if step.command in ("train", "export") and step.dir is None:
            raise UsageError(f"step {step.name}: needs output_dir=...")
        if step.command == "train":
            _check_training(step, made_by_run)
        if step.command == "eval" and args.get("eval_dataset"):
            from lfkit.evaluation.runner import examples

            # every row read as the eval step reads it: a missing field failed the step with a KeyError
            examples(str(args["eval_dataset"]), dataset_dir, args.get("max_samples"))
    check_apart(output_dir, steps, made_by_run)


def export_yaml(step: ResolvedStep, recipe: Recipe) -> str:
    """A plain LLaMA-Factory YAML for one step, which ``llamafactory-cli`` runs as it is."""
    if step.command in LF_COMMANDS:
        how = f"# run: llamafactory-cli {step.command} THIS_FILE"
    else:  # lfkit's own steps: LLaMA-Factory 0.9.5's eval raises NotImplementedError
        how = f"# run: lfkit run {recipe.name} (this step is lfkit's {step.command}, not a llamafactory-cli command)"
    header = [f"# LLaMA-Factory arguments from lfkit recipe {recipe.name!r}, step {step.name!r}", how]
    header += [f"# resolved here: {note}" for note in step.notes]
    if step.lfkit_args:
        dropped = ", ".join(f"{k}={v}" for k, v in step.lfkit_args.items())
        header.append(f"# lfkit-only keys left out (llamafactory-cli does not read them): {dropped}")
    body = yaml.safe_dump(step.args, allow_unicode=True, sort_keys=False)
    return "\n".join(header) + "\n" + body

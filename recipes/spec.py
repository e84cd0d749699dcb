"""The recipe file format: a named list of steps, each one LLaMA-Factory (or lfkit) entry point.

A recipe is plain data (YAML)::

    name: sft-lora-single
    description: one line
    params:                      # what a user gives as key=value
      model: {required: true, help: base model folder}
    command: train               # one step: command + args at top level ...
    args: {model_name_or_path: ${model}, stage: sft, ...}
    steps:                       # ... or several, each with name, command, args
      - {name: train, command: train, args: {...}}

``args`` are LLaMA-Factory's own keys. Values may refer to parameters as
``${model}``, to the step's own folder as ``${step_dir}``, to the run folder as
``${output_dir}`` and to an earlier step's folder as ``${steps.NAME}``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from lfkit.state_files import read_text_bounded

# Entry points a step may wrap. train / export / chat are LLaMA-Factory's CLI
# commands; eval and report are lfkit's (LLaMA-Factory 0.9.5's eval raises
# NotImplementedError).
LF_COMMANDS = ("train", "export", "chat")
COMMANDS = (*LF_COMMANDS, "eval", "report")

# Parameters every recipe understands, and the help `lfkit recipes show` prints.
COMMON_PARAMS = {
    "model": "base model: a local folder, a cached hub id, or tiny:llama / tiny:gemma",
    "dataset": "dataset name(s), comma-separated (see `lfkit datasets`)",
    "adapter": "LoRA adapter folder(s), comma-separated",
    "output_dir": "the run folder",
    "prompt": "one-shot question (chat answers it and exits)",
}


class RecipeError(ValueError):
    """A recipe file that does not follow the format."""


@dataclass(frozen=True)
class Param:
    name: str
    required: bool = False
    default: Any = None
    help: str = ""


@dataclass(frozen=True)
class Step:
    name: str
    command: str
    args: dict[str, Any]


@dataclass(frozen=True)
class Recipe:
    lfkit_record: ClassVar[str] = "recipe"  # what the plugin manager checks register() against
    name: str
    description: str
    params: dict[str, Param]
    steps: tuple[Step, ...]
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def single(self) -> bool:
        return len(self.steps) == 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "commands": [s.command for s in self.steps],
            "steps": [s.name for s in self.steps],
            "params": {
                p.name: {"required": p.required, "default": p.default, "help": p.help} for p in self.params.values()
            },
            "source": self.source,
        }


def _param(name: str, value: Any, where: str) -> Param:
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise RecipeError(f"{where}: params.{name} must be a mapping (required / default / help)")
    unknown = set(value) - {"required", "default", "help"}
    if unknown:
        raise RecipeError(f"{where}: params.{name} has unknown field(s) {', '.join(sorted(unknown))}")
    return Param(
        name=name,
        required=bool(value.get("required", False)),
        default=value.get("default"),
        help=str(value.get("help") or COMMON_PARAMS.get(name, "")),
    )


def _step(raw: dict[str, Any], where: str, default_name: str) -> Step:
    command = raw.get("command")
    if command not in COMMANDS:
        raise RecipeError(f"{where}: command must be one of {', '.join(COMMANDS)}, not {command!r}")
    args = raw.get("args") or {}
    if not isinstance(args, dict):
        raise RecipeError(f"{where}: args must be a mapping of LLaMA-Factory keys")
    return Step(name=str(raw.get("name") or default_name), command=command, args=dict(args))


def parse(data: Any, source: str = "") -> Recipe:
    where = source or "recipe"
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: a recipe is a mapping")
    name = data.get("name")
    if not name or not isinstance(name, str):
        raise RecipeError(f"{where}: missing name")
    if ("steps" in data) == ("command" in data):
        raise RecipeError(f"{where}: give either command + args (one step) or steps")
    if "steps" in data:
        raw_steps = data["steps"]
        if not isinstance(raw_steps, list) or not raw_steps:
            raise RecipeError(f"{where}: steps must be a non-empty list")
        steps = tuple(
            _step(s if isinstance(s, dict) else {}, f"{where} step {i + 1}", "") for i, s in enumerate(raw_steps)
        )
        if any(not s.name for s in steps):
            raise RecipeError(f"{where}: every step of a multi-step recipe needs a name")
    else:
        steps = (_step({"command": data["command"], "args": data.get("args")}, where, str(data["command"])),)
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise RecipeError(f"{where}: step names must be unique")
    raw_params = data.get("params") or {}
    if not isinstance(raw_params, dict):
        raise RecipeError(f"{where}: params must be a mapping")
    params = {n: _param(n, v, where) for n, v in raw_params.items()}
    return Recipe(
        name=name,
        description=str(data.get("description") or "").strip(),
        params=params,
        steps=steps,
        source=source,
        raw=data,
    )


def _parse_yaml(text: str):
    """LibYAML's parser where PyYAML has it (8x faster: every command loads the built-in recipes);
    a file it refuses is parsed again by the pure-Python one, whose error words lfkit reports."""
    import yaml

    try:
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        return yaml.safe_load(text)


def _data_of(text: str) -> Any:
    """The file's data, parsed once per content and kept as JSON in lfkit's cache: every lfkit command
    and every process lfkit activates in loads the recipes, and importing PyYAML alone takes longer
    than reading them back (23 ms). Data JSON would not give back as it is (a date, a number as a key)
    is parsed every time; a file that does not parse is never kept."""
    from lfkit.installed_facts import remembered

    def parse_once() -> dict[str, Any]:
        data = _parse_yaml(text)
        _refuse_expansion(data)  # before anything walks it: json.dumps would expand every alias
        try:
            same = json.loads(json.dumps(data)) == data
        except (TypeError, ValueError):
            same = False
        return {"data": data} if same else {"parse_every_time": True}

    def sound(kept: Any) -> bool:
        return isinstance(kept, dict) and (isinstance(kept.get("data"), dict) or kept.get("parse_every_time") is True)

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    kept = remembered("recipe-file", {"sha256": digest}, parse_once, sound)
    if "data" in kept:
        return kept["data"]  # checked on its way into the cache
    data = _parse_yaml(text)
    _refuse_expansion(data)
    return data


# A recipe is a few dozen values; YAML aliases can make a few lines stand for billions of them.
RECIPE_BYTES, RECIPE_VALUES = 1 << 20, 100_000


class ExpandsTooFar(ValueError):
    pass


def _refuse_expansion(data: Any) -> None:
    """Count the values as anything that walks the data would meet them, aliases repeated; stop early."""
    seen, stack = 0, [data]
    while stack:
        item = stack.pop()
        seen += 1
        if seen > RECIPE_VALUES:
            raise ExpandsTooFar(f"more than {RECIPE_VALUES:,} values once its YAML aliases are expanded")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def load(path: Path) -> Recipe:
    try:
        text = read_text_bounded(Path(path), RECIPE_BYTES)  # a FIFO, /dev/zero: read at every interpreter start
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"{path}: {getattr(exc, 'strerror', None) or _first_line(exc)}") from exc
    try:
        data = _data_of(text)
        return parse(data, str(path))
    except ExpandsTooFar as exc:
        raise RecipeError(f"{path}: {exc}") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply") from None
    except Exception as exc:
        import yaml

        if not isinstance(exc, yaml.YAMLError):
            raise
        raise RecipeError(f"{path}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

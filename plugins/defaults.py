"""Family knowledge applied to a recipe step of ``lfkit run`` (``lfkit_recipe_defaults``).

Only where lfkit resolves a recipe (run, sweep, compare, recipes export), never under
LLaMA-Factory's own commands, which keep their own choices (a default lora_target,
the template the tokenizer brings). The resolved step, its exported YAML and run.json
hold every value filled here, so ``llamafactory-cli`` on that YAML does the same run.

- template and (for LoRA training) lora_target, only where the user gave none,
  each with the evidence it came from;
- remote code only with consent: without ``trust_remote_code: true`` the run stops
  with one line naming the files that would execute (a plan runs none: no consent);
- a transformers too old for the family stops the run with one line and the fix.
"""

from __future__ import annotations

from pathlib import Path

from lfkit.errors import stop_run
from lfkit.flags import truthy
from lfkit.patching import distribution_version

from .detect import Detection, detect, remote_code_files


def detect_model(model: str | None) -> Detection | None:
    if not model:
        return None
    path = Path(str(model).split(",")[0]).expanduser()
    if not path.is_dir():
        return None  # a hub id: nothing local to read
    from lfkit.plugin_manager import get_manager

    return detect(path, get_manager().models.in_registration_order())


def requirement_problem(family, installed=distribution_version) -> str | None:
    from packaging.specifiers import SpecifierSet

    for dist, spec in family.requires.items():
        version = installed(dist)
        if version is None or version not in SpecifierSet(spec):
            why = f" ({family.requires_why})" if family.requires_why else ""
            return (
                f"{family.name} models need {dist}{spec}{why}; installed: {version or 'none'}. "
                f"Fix: pip install '{dist}{spec}'"
            )
    return None


def defaults_for(command: str, args: dict, detection: Detection) -> dict:
    """The keys the family would fill in ``args`` (those the user left unset)."""
    family = detection.family
    filled = {}
    if family is None:
        return filled
    if not args.get("template"):
        filled["template"] = family.template
    lora = str(args.get("finetuning_type") or "lora") == "lora"
    if command == "train" and lora and not args.get("lora_target"):
        filled["lora_target"] = family.lora_target
    return filled


def recipe_defaults(command: str, args: dict, runs_model_code: bool = True) -> dict[str, tuple[str, str]]:
    """key -> (value, why) for a recipe step on a recognised family; stops a run that cannot start."""
    model = args.get("model_name_or_path")
    detection = detect_model(model)
    if detection is None or detection.family is None:
        return {}
    family = detection.family
    problem = requirement_problem(family)
    if problem:
        stop_run(problem)
    if family.remote_code and runs_model_code and not truthy(args.get("trust_remote_code")):
        files = ", ".join(remote_code_files(model)) or "(none found in the folder)"
        stop_run(
            f"model {model} is {family.name}, which runs Python code from its folder ({files}); "
            "read it, then pass trust_remote_code=true to allow it"
        )
    why = f"{family.name} family default ({detection.why()})"
    return {key: (value, why) for key, value in defaults_for(command, args, detection).items()}

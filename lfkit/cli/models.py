"""`lfkit models [--json]` and `lfkit models detect PATH`."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import UsageError
from .app import JSON_OPTION, manager
from .output import console, print_json, table

models_app = typer.Typer(
    help="Model families: how each is recognised and what a run on it gets.", invoke_without_command=True
)


@models_app.callback()
def models_list(ctx: typer.Context, as_json: bool = JSON_OPTION):
    """List model families: recognised by, template, lora_target, remote code, fixes, plugin."""
    if ctx.invoked_subcommand is not None:
        return
    from lfkit.plugins.family import recognised_by

    entries = manager().models.in_registration_order()
    if as_json:
        print_json([{**e.value.as_dict(), "plugin": e.plugin} for e in entries])
        return
    table(
        "model families",
        ["name", "recognised by", "template", "lora_target", "remote code", "fixes", "plugin"],
        [
            (
                e.name,
                ", ".join(recognised_by(e.value)),
                e.value.template,
                e.value.lora_target,
                "yes (needs trust_remote_code=true)" if e.value.remote_code else "no",
                ", ".join(e.value.fixes),
                e.plugin,
            )
            for e in entries
        ],
    )


@models_app.command("detect")
def models_detect(
    model: str = typer.Argument(..., help="A model folder, or tiny:llama / tiny:gemma."),
    as_json: bool = JSON_OPTION,
):
    """Which family a model folder belongs to, the defaults `lfkit run` would give it, and why (or why not)."""
    from lfkit.plugins.defaults import defaults_for
    from lfkit.plugins.detect import detect, remote_code_files
    from lfkit.recipes.validate import read_config_json, resolve_model

    path = Path(resolve_model(model))
    if not path.is_dir():
        raise UsageError(f"{path}: no such folder")
    if not (path / "config.json").is_file():
        raise UsageError(f"{path} holds no model (no config.json in the folder)")
    read_config_json(path, "model")
    detection = detect(path, manager().models.in_registration_order())
    family = detection.family
    report = {
        "path": str(path.resolve()),
        "family": family.name if family else None,
        "plugin": detection.plugin,
        "why": detection.why(),
        "model_type": detection.config.get("model_type"),
        "architectures": detection.config.get("architectures"),
        "train_defaults": defaults_for("train", {}, detection),
        "remote_code": bool(family and family.remote_code),
        "remote_code_files": remote_code_files(path) if family and family.remote_code else [],
        "fixes": list(family.fixes) if family else [],
    }
    if as_json:
        print_json(report)
        return
    if family is None:
        console.print(
            f"{path}: no family recognised ({report['why']}); give template= and lora_target=", highlight=False
        )
        return
    console.print(f"[bold]{family.name}[/bold]  (from {detection.plugin})", highlight=False)
    console.print(f"why: {report['why']}", highlight=False)
    for key, value in report["train_defaults"].items():
        console.print(f"{key}: {value}   (lfkit run's default unless you give {key}=)", highlight=False)
    if report["remote_code"]:
        console.print(
            f"remote code: runs {', '.join(report['remote_code_files'])}; needs trust_remote_code=true", highlight=False
        )
    if report["fixes"]:
        console.print(f"fixes: {', '.join(report['fixes'])}  (see `lfkit patches`)", highlight=False)

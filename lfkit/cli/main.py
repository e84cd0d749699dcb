"""The `lfkit` command."""

from __future__ import annotations

import typer

from .. import __version__
from ..errors import UsageError
from .output import console, fail, print_json, table

app = typer.Typer(
    help="lfkit: ROCm/DTK fixes, datasets, recipes and model plugins for LLaMA-Factory.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

JSON_OPTION = typer.Option(False, "--json", help="Print machine-readable JSON instead of a table.")


def _manager():
    from ..plugin_manager import PluginError, get_manager

    try:
        return get_manager()
    except PluginError as exc:
        fail(str(exc))


def _version_callback(value: bool):
    if value:
        console.print(f"lfkit {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version."
    ),
):
    pass


@app.command()
def plugins(as_json: bool = JSON_OPTION):
    """List plugins: where each comes from, the hooks it implements, its load error if any."""
    infos = list(_manager().plugins.values())
    if as_json:
        print_json([info.as_dict() for info in infos])
        return
    table(
        "plugins",
        ["name", "source", "status", "hooks", "error"],
        [(i.name, i.source, i.status, ", ".join(i.hooks), i.error) for i in infos],
    )


@app.command()
def patches(as_json: bool = JSON_OPTION):
    """List every patch with its status (waiting / applied / skipped / failed / disabled)."""
    manager = _manager()
    rows = []
    for state in manager.patches.states.values():
        row = state.as_dict()
        if not row["detail"]:  # a waiting patch: what would happen if its target were imported now
            row["detail"] = manager.patches.verdict(state)
        rows.append(row)
    if as_json:
        print_json(rows)
        return
    table(
        "patches (this process; a waiting patch applies when its target is imported)",
        ["id", "status", "detail", "installed"],
        [
            (r["id"], r["status"], r["detail"], f"{r['distribution']} {r['installed_version'] or 'absent'}")
            for r in rows
        ],
    )


@app.command()
def datasets(as_json: bool = JSON_OPTION):
    """List datasets known by name: formatting, rows, origin (bundled, prepared, added, plugin), file."""
    from .data import list_datasets

    list_datasets(as_json)


@app.command()
def doctor(as_json: bool = JSON_OPTION):
    """Report the platform, library versions, activation, patches and plugins."""
    from ..doctor import collect

    report = collect(_manager())
    if as_json:
        print_json(report)
        return
    p = report["platform"]
    console.print(f"[bold]lfkit {report['lfkit']}[/bold]  (python {report['python']})")
    console.print(f"platform: [bold]{p['kind']}[/bold]  ({p['reason']})")
    details = [
        ("torch", p["torch_version"]),
        ("CUDA", p["cuda_version"]),
        ("HIP", p["hip_version"]),
        ("DTK", p["dtk_version"]),
    ]
    console.print("  " + "  ".join(f"{k} {v}" for k, v in details if v))
    for gpu in p["gpus"]:
        console.print(
            f"  GPU {gpu.get('index', '?')}: {gpu.get('name', gpu.get('error'))}  {gpu.get('memory_gib', '')} GiB"
        )
    if p.get("arch"):
        bf16 = {True: "native bf16", False: "no native bf16 (emulated): automatic precision is fp16"}
        console.print(f"  architecture {p['arch']}: {bf16.get(p['native_bf16'], 'bf16 unknown')}", highlight=False)
    table("versions", ["package", "version"], [(k, v or "absent") for k, v in report["versions"].items()])
    a = report["activation"]
    state = "on" if a["autoload_on"] else "off"
    pth = a["autoload_pth"] or "not installed"
    console.print(f"activation: {state}  (.pth: {pth}; LFKIT_AUTOLOAD={a['LFKIT_AUTOLOAD'] or 'unset'})")
    table("patches", ["id", "status", "detail"], [(r["id"], r["status"], r["detail"]) for r in report["patches"]])
    b = report["bitsandbytes"]
    verdict = {True: "fits", False: "does not fit", None: "n/a"}[b["fits"]]
    console.print(f"bitsandbytes {b['installed'] or 'absent'}: {verdict} ({b['reason']})", highlight=False)
    if b["pin"] and b["fits"] is not True:
        console.print(f"  fix: {b['pin']}", highlight=False)
    if b["hidden"]:
        console.print(
            "  hidden from peft / transformers / LLaMA-Factory in this environment's processes", highlight=False
        )
    failed = [pl for pl in report["plugins"] if pl["error"]]
    console.print(
        f"plugins: {len(report['plugins']) - len(failed)} loaded, {len(failed)} with errors (see `lfkit plugins`)"
    )
    if report["problems"]:
        table("problems in lfkit's own state (processes run on without it)", ["problem", "how to mend it"],
              [(p["what"], p["fix"]) for p in report["problems"]])  # fmt: skip
    else:
        console.print("problems: none")


from .data import data_app  # noqa: E402  (after app: it imports _manager from here)

app.add_typer(data_app, name="data")

from .recipes import recipes_app  # noqa: E402  (registers `lfkit run` on app)

app.add_typer(recipes_app, name="recipes")

from .models import models_app  # noqa: E402

app.add_typer(models_app, name="models")

# Registering on app: `lfkit eval`, `sweep`, `compare`; `lfkit status`, `logs`, `cancel`.
from . import experiments, jobs  # noqa: E402, F401
from . import plan as _plan  # noqa: E402, F401  (`lfkit plan`)
from . import runs as _runs  # noqa: E402, F401  (`lfkit runs`, `lfkit show`)


def main() -> None:
    try:
        app()
    except UsageError as exc:
        from .output import error_line

        error_line(str(exc))
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()

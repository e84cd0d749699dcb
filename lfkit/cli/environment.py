"""`lfkit plugins`, `patches`, `datasets` and `doctor`: what lfkit does in this environment."""

from __future__ import annotations

from .app import JSON_OPTION, app, manager
from .output import console, print_json, table


@app.command()
def plugins(as_json: bool = JSON_OPTION):
    """List plugins: where each comes from, the hooks it implements, its load error if any."""
    infos = list(manager().plugins.values())
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
    pm = manager()
    rows = []
    for state in pm.patches.states.values():
        row = state.as_dict()
        if not row["detail"]:  # a waiting patch: what would happen if its target were imported now
            row["detail"] = pm.patches.verdict(state)
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
    """Report the platform, library versions, the supported stack, activation, patches, plugins and problems."""
    from lfkit.dataset_registry.state import report_set_aside
    from lfkit.rocm_patches import bitsandbytes_pin

    from ..doctor import collect
    from ..platform_detect import detect_platform

    pm = manager()
    report_set_aside()
    state = pm.patches.states.get(bitsandbytes_pin.PATCH.id)
    platform = detect_platform(with_gpus=True)
    report = collect(pm, platform, bitsandbytes_pin.doctor_report(platform.kind, state))
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
    console.print(f"stack: {report['stack']['line']}", highlight=False, soft_wrap=True)
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
        table("problems", ["problem", "how to mend it"], [(p["what"], p["fix"]) for p in report["problems"]])
    else:
        console.print("problems: none")

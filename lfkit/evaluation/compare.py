"""The comparison of a sweep's variants: a ranked table (CSV, Markdown, terminal) and overlaid loss curves."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lfkit.atomic import write_text

from .report import HEADLINE, loss_points, new_figure, save_figure

console = Console()


def collect(out: Path, names, items, trained_step: str, eval_step: str, metric: str) -> list[dict]:
    rows = []
    for name, values in zip(names, items, strict=True):
        folder = out / name
        metrics = json.loads((folder / eval_step / "metrics.json").read_text(encoding="utf-8"))
        run = json.loads((folder / trained_step / "run.json").read_text(encoding="utf-8"))
        losses = loss_points(folder / trained_step)
        rows.append(
            {
                "variant": name,
                **values,
                **{k: metrics.get(k) for k in HEADLINE},
                "samples": metrics.get("samples"),
                "final_loss": losses[-1][1] if losses else None,
                "train_seconds": run.get("seconds"),
                "folder": str(folder),
            }
        )
    # Ties (common on tiny runs) go to the better F1, then the lower final loss.
    rows.sort(key=lambda r: (-(r.get(metric) or 0.0), -(r.get("f1") or 0.0), r["final_loss"] or 0.0, r["variant"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows


def _columns(keys: list[str]) -> list[str]:
    return ["rank", "variant", *keys, *HEADLINE, "final_loss", "train_seconds"]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_comparison(out: Path, rows: list[dict], keys: list[str], metric: str, trained_step: str) -> None:
    columns = _columns(keys)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=[*columns, "folder"], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / "comparison.csv", buffer.getvalue())
    lines = [
        f"Ranked by {metric} on {rows[0].get('samples') if rows else 0} samples.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]
    write_text(out / "comparison.md", "\n".join(lines) + "\n")
    _plot(out, rows, trained_step)
    table = Table(title=f"ranked by {metric}", title_justify="left")
    for c in columns:
        table.add_column(c, no_wrap=c == "variant")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    console.print(table)
    console.print(f"table: {out / 'comparison.csv'}, {out / 'comparison.md'}  plot: {out / 'loss_curves.png'}")


def _plot(out: Path, rows: list[dict], trained_step: str) -> None:
    fig, ax = new_figure(figsize=(7, 4))
    for row in rows:
        points = loss_points(Path(row["folder"]) / trained_step)
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], label=f"#{row['rank']} {row['variant']}")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss per variant")
    ax.legend(fontsize="small")
    save_figure(fig, out / "loss_curves.png")

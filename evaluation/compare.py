"""The comparison of a sweep's variants: a ranked table (CSV, Markdown, terminal) and overlaid loss curves."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from rich.console import Console

from lfkit.atomic import write_text
from lfkit.state_files import number, read_json_bounded
from lfkit.tables import print_table

from .report import HEADLINE, loss_points, mean_loss_point, new_figure, save_figure

console = Console(emoji=False)  # a ":name:" in a path or value stays as written


def _final_loss(train_dir: Path) -> float | None:
    points = loss_points(train_dir)
    if points:
        return points[-1][1]
    mean = mean_loss_point(train_dir)
    return mean[1] if mean else None


def collect(out: Path, names, items, trained_step: str, eval_step: str, metric: str) -> list[dict]:
    """One row per variant; a variant that failed or did not finish is a row with its status and no metrics."""
    rows = []
    for name, values in zip(names, items, strict=True):
        folder = out / name
        status = (_read(folder / "run.json") or {}).get("status", "not started")
        status = status if isinstance(status, str) else "unreadable run.json"
        metrics = _read(folder / eval_step / "metrics.json") if status == "finished" else None
        run = _read(folder / trained_step / "run.json") or {}
        rows.append(
            {
                "variant": name,
                **values,
                "status": status if metrics is not None else ("failed" if status == "finished" else status),
                **{k: number((metrics or {}).get(k)) for k in HEADLINE},
                "samples": _count((metrics or {}).get("samples")),
                "final_loss": _final_loss(folder / trained_step),
                "train_seconds": number(run.get("seconds")),
                "folder": str(folder),
            }
        )

    # Ties (common on tiny runs) go to the better F1, then the lower final loss; equal on all three, equal rank.
    def key(row):
        return (-(row.get(metric) or 0.0), -(row.get("f1") or 0.0), row["final_loss"] or 0.0)

    done = sorted((r for r in rows if r["status"] == "finished"), key=lambda r: (key(r), r["variant"]))
    for index, row in enumerate(done):
        row["rank"] = done[index - 1]["rank"] if index and key(done[index - 1]) == key(row) else index + 1
    rest = [r for r in rows if r["status"] != "finished"]
    for row in rest:
        row["rank"] = None
    return done + rest


def _count(value) -> int | None:
    found = number(value)
    return None if found is None else int(found)


def _read(path: Path) -> dict | None:
    """A variant's record, or None for what is none (absent, a FIFO, cut short, not a JSON object)."""
    try:
        data = read_json_bounded(path)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _columns(keys: list[str]) -> list[str]:
    return ["rank", "variant", *keys, "status", *HEADLINE, "final_loss", "train_seconds"]


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
    print_table(console, f"ranked by {metric}", columns, [[_cell(row.get(c)) for c in columns] for row in rows])
    console.print(f"table: {out / 'comparison.csv'}, {out / 'comparison.md'}  plot: {out / 'loss_curves.png'}")


def _plot(out: Path, rows: list[dict], trained_step: str) -> None:
    fig, ax = new_figure(figsize=(7, 4))
    for row in rows:
        label = f"#{row['rank'] or '-'} {row['variant']}"
        points = loss_points(Path(row["folder"]) / trained_step)
        if points:
            ax.plot([s for s, _ in points], [v for _, v in points], label=label)
            continue
        mean = mean_loss_point(Path(row["folder"]) / trained_step)
        if mean:  # logging_steps above the steps run: the mean loss is the only figure
            ax.plot([mean[0]], [mean[1]], marker="o", linestyle="", label=f"{label} (mean loss, nothing logged)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("training loss per variant")
    ax.legend(fontsize="small")
    save_figure(fig, out / "loss_curves.png")

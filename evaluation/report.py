"""Tables and plots of evaluation metrics: one model, or before / after fine-tuning."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from lfkit.atomic import write_json
from lfkit.state_files import number, read_bounded, read_json_bounded

HEADLINE = ("exact_match", "precision", "recall", "f1")
console = Console(emoji=False)  # a ":name:" in a path or value stays as written


def print_metrics(title: str, metrics: dict) -> None:
    table = Table(title=f"{title}  ({metrics.get('samples', 0)} samples)", title_justify="left")
    table.add_column("metric", no_wrap=True)
    table.add_column("value", justify="right")
    for key in HEADLINE:
        table.add_row(key, f"{metrics.get(key, 0):.3f}")
    for name, cat in metrics.get("per_category", {}).items():
        table.add_row(f"accuracy: {name}", f"{cat['accuracy']:.3f}  (n={cat['samples']})")
    console.print(table)


def _read(folder: Path) -> dict:
    return json.loads((Path(folder) / "metrics.json").read_text(encoding="utf-8"))


# A trainer log of a long run (a line per logging step) is read whole for its curve, up to this size.
LOG_LIMIT = 256 * 2**20


def loss_points(train_dir: Path | None) -> list[tuple[int, float]]:
    """(step, loss) pairs from LLaMA-Factory's trainer_log.jsonl in a training folder."""
    log = Path(train_dir) / "trainer_log.jsonl" if train_dir else None
    if log is None:
        return []
    try:
        text = read_bounded(log, LOG_LIMIT).decode("utf-8", errors="replace")
    except OSError:  # absent, a FIFO, a log of more than LOG_LIMIT: no curve rather than a hang
        return []
    points = []
    for line in text.splitlines():
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue  # the last line of a killed run is cut short
        if not isinstance(entry, dict):
            continue
        step, loss = number(entry.get("current_steps")), number(entry.get("loss"))
        if step is not None and loss is not None:
            points.append((int(step), loss))
    return points


def mean_loss_point(train_dir: Path | None) -> tuple[int, float] | None:
    """(last step, mean training loss) from train_results.json: all there is when logging_steps
    exceeded the steps run, so trainer_log.jsonl holds no loss."""
    if not train_dir:
        return None
    try:
        results = read_json_bounded(Path(train_dir) / "train_results.json")
        state = read_json_bounded(Path(train_dir) / "trainer_state.json", LOG_LIMIT)
    except (OSError, ValueError):
        return None
    if not isinstance(results, dict) or not isinstance(state, dict):
        return None
    loss, step = number(results.get("train_loss")), number(state.get("global_step", 0))
    return None if loss is None else (int(step or 0), loss)


def new_figure(*args, **kwargs):
    """``plt.subplots`` on the Agg backend: plots are files, and the machine may have no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: Path) -> None:
    """Write the figure as a PNG atomically (complete or absent) and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)


def save_plot(path: Path, before: dict, after: dict, losses: list[tuple[int, float]]) -> None:
    panels = 2 if losses else 1
    fig, axes = new_figure(1, panels, figsize=(5 * panels, 3.6), squeeze=False)
    ax = axes[0][0]
    xs = range(len(HEADLINE))
    ax.bar([x - 0.2 for x in xs], [before.get(k, 0) for k in HEADLINE], width=0.4, label="before")
    ax.bar([x + 0.2 for x in xs], [after.get(k, 0) for k in HEADLINE], width=0.4, label="after")
    ax.set_xticks(list(xs), [k.replace("_", " ") for k in HEADLINE])
    ax.set_ylim(0, 1.2)
    ax.set_title(f"{after.get('dataset', '')}: before / after fine-tuning")
    ax.legend(loc="upper left", ncol=2)
    if losses:
        ax = axes[0][1]
        ax.plot([s for s, _ in losses], [v for _, v in losses])
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
        ax.set_title("training loss")
    save_figure(fig, path)


def before_after(summary_dir: Path, before_dir: Path, after_dir: Path, train_dir: Path | None = None) -> dict:
    """metrics.json and metrics.png in summary_dir, and a before / after table."""
    before, after = _read(before_dir), _read(after_dir)
    summary = {
        "dataset": after.get("dataset"),
        "before": {k: before.get(k) for k in (*HEADLINE, "samples")},
        "after": {k: after.get(k) for k in (*HEADLINE, "samples")},
        "per_category_after": after.get("per_category", {}),
    }
    summary_dir = Path(summary_dir)
    write_json(summary_dir / "metrics.json", summary)
    save_plot(summary_dir / "metrics.png", before, after, loss_points(train_dir))
    table = Table(title=f"{summary['dataset']}: before / after fine-tuning", title_justify="left")
    for column in ("metric", "before", "after"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for key in HEADLINE:
        table.add_row(key, f"{before.get(key, 0):.3f}", f"{after.get(key, 0):.3f}")
    console.print(table)
    console.print(f"metrics: {summary_dir / 'metrics.json'}  plot: {summary_dir / 'metrics.png'}", highlight=False)
    return summary

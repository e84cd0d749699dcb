"""`lfkit data prepare telecom`: the raw telecom Q&A table -> balanced alpaca splits.

The telecom fine-tune rewrote the competition table into telecom_train_5000 / 400 / 100 and
telecom_test_100 by hand, "keeping the categories in balance". Here:
- test first, then the largest train split from what is left (so test is disjoint
  from every train split), each smaller train split nested in the larger one;
- every split keeps the whole table's category proportions (largest remainder);
- deterministic for a given seed; nothing is written unless every split fits.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from lfkit.atomic import write_json
from lfkit.errors import UsageError
from lfkit.evaluation.metrics import category as first_label_category

from . import state
from .generate_demo import TEMPLATE
from .spec import TELECOM_COLUMNS, DatasetSpec
from .tables import read_table


@dataclass
class Prepared:
    splits: dict[str, list[dict]] = field(default_factory=dict)
    categories: dict[str, Counter] = field(default_factory=dict)
    usable: int = 0
    skipped: int = 0
    duplicates: int = 0
    conflicting: int = 0
    files: dict[str, Path] = field(default_factory=dict)


def allocate(n: int, weights: Counter, available: dict[str, int]) -> dict[str, int]:
    """Split n over categories in proportion to weights (largest remainder), capped by what is available."""
    if n > sum(available.values()):
        raise ValueError("not enough rows")
    quota = {c: 0 for c in weights}
    remaining, active = n, {c for c in weights if available.get(c, 0) > 0}
    while remaining:
        total = sum(weights[c] for c in active)
        shares = {c: remaining * weights[c] / total for c in active}
        step = {c: min(int(shares[c]), available[c] - quota[c]) for c in active}
        left = remaining - sum(step.values())
        # the remainder goes to the largest fractional parts (ties: category name)
        for c in sorted(active, key=lambda c: (-(shares[c] - int(shares[c])), c)):
            if left == 0:
                break
            if quota[c] + step[c] < available[c]:
                step[c] += 1
                left -= 1
        for c, k in step.items():
            quota[c] += k
        remaining = n - sum(quota.values())
        active = {c for c in active if quota[c] < available[c]}
    return quota


def _row(question: str, answer: str, category: str) -> dict:
    # The category travels with the row, so evaluation scores per category exactly as the split was balanced.
    return {"instruction": TEMPLATE.format(question=question), "input": "", "output": answer, "category": category}


def prepare(
    source: Path,
    out: Path,
    *,
    question_column: str = "用户问题",
    answer_column: str = "答案",
    category_column: str = "属性名",
    train_sizes: tuple[int, ...] = (5000, 400, 100),
    test_size: int = 100,
    seed: int = 0,
    overwrite: bool = False,
    replace: bool = False,
    register: bool = True,
) -> Prepared:
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder for the split files")
    rows = read_table(source)
    header = list(dict.fromkeys(key for row in rows for key in row))
    for column in (question_column, answer_column):
        if column not in header:
            raise UsageError(f"{source}: no column {column!r} (columns: {', '.join(map(str, header))})")
    use_category_column = category_column in header

    result = Prepared()
    seen: dict[str, str] = {}
    by_category: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for row in rows:
        question = str(row.get(question_column) or "").strip()
        answer = str(row.get(answer_column) or "").strip()
        if not question or not answer:
            result.skipped += 1
            continue
        if question in seen:
            result.duplicates += 1
            result.conflicting += seen[question] != answer
            continue
        seen[question] = answer
        category = str(row.get(category_column) or "").strip() if use_category_column else ""
        by_category[category or first_label_category(answer)].append((question, answer))
    result.usable = len(seen)

    sizes = sorted(set(train_sizes), reverse=True)
    if not sizes or min(sizes) <= 0 or test_size <= 0:
        raise UsageError("split sizes must be positive")
    needed = test_size + sizes[0]
    if needed > result.usable:
        raise UsageError(
            f"{source}: {result.usable} usable rows (after {result.skipped} without a question or answer and "
            f"{result.duplicates} duplicate questions) cannot fill telecom_test_{test_size} plus "
            f"telecom_train_{sizes[0]} ({needed} rows); pass smaller --train-sizes / --test-size"
        )

    rng = random.Random(seed)
    pools = {c: rng.sample(items, len(items)) for c, items in sorted(by_category.items())}
    weights = Counter({c: len(items) for c, items in pools.items()})
    test_quota = allocate(test_size, weights, weights)
    test = {c: pools[c][: test_quota[c]] for c in pools}
    rest = {c: pools[c][test_quota[c] :] for c in pools}
    train = {}
    largest = allocate(sizes[0], weights, {c: len(v) for c, v in rest.items()})
    train[sizes[0]] = {c: rest[c][: largest[c]] for c in rest}
    for size in sizes[1:]:
        parent = train[sizes[0]]
        quota = allocate(size, weights, {c: len(v) for c, v in parent.items()})
        train[size] = {c: parent[c][: quota[c]] for c in parent}

    def flatten(groups, name):
        items = [(q, a, c) for c in sorted(groups) for q, a in groups[c]]
        random.Random(f"{seed}:{name}").shuffle(items)
        result.categories[name] = Counter({c: len(groups[c]) for c in groups if groups[c]})
        return [_row(q, a, c) for q, a, c in items]

    for size in sizes:
        name = f"telecom_train_{size}"
        result.splits[name] = flatten(train[size], name)
    result.splits[f"telecom_test_{test_size}"] = flatten(test, f"telecom_test_{test_size}")

    files = {name: (out / f"{name}.json").resolve() for name in result.splits}
    existing = [str(p) for p in files.values() if p.exists()]
    if existing and not overwrite:
        raise UsageError(f"{existing[0]} exists; pass --overwrite to replace the splits in {out}")
    specs = {
        name: DatasetSpec(path, columns=TELECOM_COLUMNS, origin="prepared", description=f"from {source}")
        for name, path in files.items()
    }
    if register and not replace:
        registered = state.load()
        for name, spec in specs.items():
            if name in registered and registered[name].file != spec.file:
                raise UsageError(
                    f"dataset {name!r} is already registered for {registered[name].file}; "
                    f"pass --replace to point it at {spec.file}, or --out the folder it came from"
                )
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, rows_out in result.splits.items():
            write_json(files[name], rows_out)
    except OSError as exc:
        raise UsageError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    result.files = files
    if register:
        state.save(specs, replace=replace)
    return result

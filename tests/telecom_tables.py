"""Raw telecom tables shaped like the competition's, and the CLI calls that prepare them (tests only)."""

import csv
import random

from conftest import BIN, clean_env, run

LFKIT = BIN / "lfkit"
CATEGORIES = {"取消方式": 0.5, "开通方式": 0.3, "业务简介": 0.2}


def lfkit(home, *args):
    return run([LFKIT, *args], env=clean_env(LFKIT_HOME=str(home)))


def raw_rows(n=600, seed=1, category_column=True):
    """A table shaped like the competition's: 用户问题, 答案, 属性名, with gaps and duplicates."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        category = rng.choices(list(CATEGORIES), weights=list(CATEGORIES.values()))[0]
        row = {"用户问题": f"第{i}个问题：套餐{i % 37}怎么处理", "答案": f"{category}_{i % 90}|9.9"}
        if category_column:
            row["属性名"] = category
        rows.append(row)
    rows += [
        {"用户问题": "", "答案": "取消方式_1", "属性名": "取消方式"},
        {"用户问题": "空答案", "答案": "", "属性名": "x"},
    ]
    rows += [dict(rows[3]), dict(rows[4]), {**rows[5], "答案": "开通方式_999"}]  # 3 duplicates, 1 conflicting
    return rows


def write_csv(path, rows, encoding="utf-8"):
    with open(path, "w", encoding=encoding, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_xlsx(path, rows):
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    sheet.append(list(rows[0]))
    for row in rows:
        sheet.append([row.get(k) for k in rows[0]])
    book.save(path)
    return path


def prepare(home, source, out, *extra):
    return lfkit(
        home,
        "data",
        "prepare",
        "telecom",
        source,
        "--out",
        out,
        "--train-sizes",
        "400,100,50",
        "--test-size",
        "100",
        *extra,
    )

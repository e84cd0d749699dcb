"""The dataset registry: bundled datasets, `lfkit data prepare telecom`, `lfkit data add`, bad input."""

import json
from collections import Counter

import pytest

from conftest import run
from telecom_tables import CATEGORIES, LFKIT, lfkit, prepare, raw_rows, write_csv, write_xlsx


@pytest.fixture
def home(tmp_path):
    return tmp_path / "lfkit-home"


def test_bundled_datasets_are_listed_and_marked():
    result = run([LFKIT, "datasets", "--json"])
    assert result.returncode == 0, result.stderr
    data = {d["name"]: d for d in json.loads(result.stdout)}
    assert (data["telecom_demo"]["rows"], data["telecom_demo"]["origin"], data["telecom_demo"]["synthetic"]) == (
        400,
        "bundled",
        True,
    )
    assert data["telecom_demo_test"]["synthetic"] is True
    assert data["sharegpt_single"]["formatting"] == "sharegpt"
    assert "synthetic" in run([LFKIT, "datasets"]).stdout


def test_bundled_demo_data_is_what_the_generator_makes():
    from lfkit.dataset_registry import BUNDLED
    from lfkit.dataset_registry.generate_demo import TEMPLATE, build

    train, test = build()
    assert json.loads(BUNDLED["telecom_demo"].file.read_text()) == train
    assert json.loads(BUNDLED["telecom_demo_test"].file.read_text()) == test
    assert {r["instruction"] for r in train}.isdisjoint({r["instruction"] for r in test})
    assert all(r["instruction"].startswith(TEMPLATE.split("{")[0]) and r["input"] == "" for r in train)


def test_sharegpt_single_is_seed_000s_entry():
    from lfkit.dataset_registry import BUNDLED

    entry = BUNDLED["sharegpt_single"].dataset_info()
    assert entry["formatting"] == "sharegpt"
    assert entry["columns"] == {"messages": "conversations"}
    assert entry["tags"] == {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt"}
    turns = json.loads(BUNDLED["sharegpt_single"].file.read_text())[0]["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt", "human", "gpt"]


@pytest.mark.parametrize("kind", ["csv-utf8", "csv-bom", "csv-gbk", "xlsx", "json", "jsonl"])
def test_prepare_reads_every_format(kind, tmp_path, home):
    rows = raw_rows()
    source = tmp_path / f"raw.{kind.split('-')[0]}"
    if kind.startswith("csv"):
        write_csv(source, rows, {"csv-utf8": "utf-8", "csv-bom": "utf-8-sig", "csv-gbk": "gbk"}[kind])
    elif kind == "xlsx":
        write_xlsx(source, rows)
    elif kind == "json":
        source.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    else:
        source.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    out = tmp_path / "splits"
    result = prepare(home, source, out, "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["usable"], summary["skipped_without_question_or_answer"]) == (600, 2)
    assert (summary["duplicate_questions"], summary["duplicates_with_another_answer"]) == (3, 1)
    assert sorted(p.name for p in out.iterdir()) == [
        "telecom_test_100.json",
        "telecom_train_100.json",
        "telecom_train_400.json",
        "telecom_train_50.json",
    ]
    first = json.loads((out / "telecom_train_400.json").read_text())[0]
    assert first["instruction"].startswith("回答中国电信手机用户的问题,第") and first["instruction"].endswith(
        ",应该怎么做？"
    )
    assert first["input"] == ""


def test_splits_are_balanced_disjoint_nested_and_deterministic(tmp_path, home):
    source = write_csv(tmp_path / "raw.csv", raw_rows())
    assert prepare(home, source, tmp_path / "a").returncode == 0
    splits = {p.stem: json.loads(p.read_text()) for p in (tmp_path / "a").iterdir()}
    whole = Counter(r["属性名"] for r in raw_rows()[:600])
    for name, rows in splits.items():
        counts = Counter(r["output"].split("_")[0] for r in rows)
        for category, n in whole.items():
            assert abs(counts[category] - len(rows) * n / 600) <= 1, (name, category)
    questions = {name: {r["instruction"] for r in rows} for name, rows in splits.items()}
    for name in ("telecom_train_400", "telecom_train_100", "telecom_train_50"):
        assert questions["telecom_test_100"].isdisjoint(questions[name])
    assert questions["telecom_train_50"] <= questions["telecom_train_100"] <= questions["telecom_train_400"]

    # the names point at a's files: re-pointing them to b's needs --replace
    refused = prepare(home, source, tmp_path / "b")
    assert refused.returncode == 2 and "pass --replace" in refused.stderr and not (tmp_path / "b").exists()
    assert prepare(home, source, tmp_path / "b", "--replace").returncode == 0
    assert (tmp_path / "a" / "telecom_test_100.json").read_text() == (
        tmp_path / "b" / "telecom_test_100.json"
    ).read_text()
    assert prepare(home, source, tmp_path / "c", "--seed", "7", "--replace").returncode == 0
    assert (tmp_path / "a" / "telecom_test_100.json").read_text() != (
        tmp_path / "c" / "telecom_test_100.json"
    ).read_text()


def test_category_from_the_answer_when_the_table_has_no_category_column(tmp_path, home):
    source = write_csv(tmp_path / "raw.csv", raw_rows(category_column=False)[:600])
    result = prepare(home, source, tmp_path / "out", "--json")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["categories"]["telecom_test_100"]) == set(CATEGORIES)


def test_prepared_splits_are_registered_and_the_table_is_printed(tmp_path, home):
    source = write_csv(tmp_path / "raw.csv", raw_rows())
    result = prepare(home, source, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert "rows per split and category" in result.stdout and "取消方式" in result.stdout
    listed = {d["name"]: d for d in json.loads(lfkit(home, "datasets", "--json").stdout)}
    assert listed["telecom_train_400"]["origin"] == "prepared"
    assert listed["telecom_train_400"]["rows"] == 400
    assert listed["telecom_demo"]["origin"] == "bundled"


def _fails(result, message):
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [f"lfkit: error: {message}"]


def test_too_small_a_table_says_so_and_writes_nothing(tmp_path, home):
    source = write_csv(tmp_path / "raw.csv", raw_rows(n=300))
    out = tmp_path / "out"
    result = prepare(home, source, out)
    _fails(
        result,
        f"{source}: 300 usable rows (after 2 without a question or answer and 3 duplicate questions) "
        "cannot fill telecom_test_100 plus telecom_train_400 (500 rows); pass smaller --train-sizes / --test-size",
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "case",
    [
        "missing-file",
        "missing-column",
        "empty",
        "header-only",
        "malformed-json",
        "malformed-jsonl",
        "encoding",
        "not-a-list",
        "a-folder",
        "bad-sizes",
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, tmp_path, home):
    source = tmp_path / "raw.csv"
    extra = []
    if case == "missing-file":
        message = f"{source}: no such file"
    elif case == "missing-column":
        write_csv(source, [{"问题": "a", "答案": "b"}])
        message = f"{source}: no column '用户问题' (columns: 问题, 答案)"
    elif case == "empty":
        source.write_text("")
        message = f"{source}: empty table"
    elif case == "header-only":
        source.write_text("用户问题,答案\n")
        message = f"{source}: empty table (a header and no rows)"
    elif case == "malformed-json":
        source = tmp_path / "raw.json"
        source.write_text('[{"用户问题": "a", "答案": "b"},\n {"用户问题": }]')
        message = f"{source}: line 2 column 11: malformed JSON: Expecting value"
    elif case == "malformed-jsonl":
        source = tmp_path / "raw.jsonl"
        source.write_text('{"用户问题": "a", "答案": "b"}\n{"用户问题": "c",\n')
        message = f"{source}: line 2: malformed JSON: Expecting property name enclosed in double quotes"
    elif case == "encoding":
        source.write_bytes("用户问题,答案\n".encode() + b"\xff\xfe\xfa,x\n")
        message = f"{source}: neither UTF-8 nor GBK text"
    elif case == "not-a-list":
        source = tmp_path / "raw.json"
        source.write_text('{"用户问题": "a"}')
        message = f"{source}: expected a list of JSON objects"
    elif case == "a-folder":
        source.mkdir()  # unreadable as a file (permission bits cannot stop root, who runs CI)
        message = f"{source}: is a folder, not a table"
    else:
        write_csv(source, raw_rows())
        extra = ["--train-sizes", "400,abc"]
        message = "--train-sizes takes whole numbers separated by commas, got '400,abc'"
    out = tmp_path / "out"
    args = ["data", "prepare", "telecom", source, "--out", out] + (
        extra or ["--train-sizes", "40", "--test-size", "10"]
    )
    _fails(lfkit(home, *args), message)
    assert not out.exists()
    assert not (home / "datasets.json").exists()


def test_existing_splits_are_not_overwritten_without_the_flag(tmp_path, home):
    source = write_csv(tmp_path / "raw.csv", raw_rows())
    out = tmp_path / "out"
    assert prepare(home, source, out).returncode == 0
    before = (out / "telecom_train_400.json").read_text()
    _fails(
        prepare(home, source, out, "--seed", "3"),
        f"{out / 'telecom_train_400.json'} exists; pass --overwrite to replace the splits in {out}",
    )
    assert (out / "telecom_train_400.json").read_text() == before
    assert prepare(home, source, out, "--seed", "3", "--overwrite").returncode == 0
    assert (out / "telecom_train_400.json").read_text() != before


def test_add_checks_the_file_then_registers_it(tmp_path, home):
    alpaca = tmp_path / "qa.jsonl"
    alpaca.write_text('{"q": "你好", "a": "取消方式_1"}\n{"q": "再见", "a": "开通方式_2"}\n')
    result = lfkit(home, "data", "add", "my_qa", alpaca, "--column", "prompt=q", "--column", "response=a")
    assert result.returncode == 0, result.stderr
    listed = {d["name"]: d for d in json.loads(lfkit(home, "datasets", "--json").stdout)}
    assert (listed["my_qa"]["origin"], listed["my_qa"]["rows"]) == ("added", 2)

    _fails(lfkit(home, "data", "add", "bad_qa", alpaca), f"{alpaca}: row 1: missing column 'instruction'")
    chat = tmp_path / "chat.json"
    chat.write_text(json.dumps([{"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}]))
    _fails(
        lfkit(
            home,
            "data",
            "add",
            "chat",
            chat,
            "--formatting",
            "sharegpt",
            "--column",
            "messages=messages",
            "--tag",
            "role_tag=role",
            "--tag",
            "content_tag=content",
            "--tag",
            "user_tag=user",
            "--tag",
            "assistant_tag=assistant",
        ),
        f"{chat}: row 1, message 2: role 'bot' is none of ['assistant', 'function_call', 'observation', 'system', 'user'] (set the tags)",
    )
    _fails(
        lfkit(home, "data", "add", "telecom_demo", alpaca, "--column", "prompt=q", "--column", "response=a"),
        "dataset 'telecom_demo' is already registered by lfkit.dataset_registry; pick another name",
    )
    _fails(
        lfkit(home, "data", "add", "x", alpaca, "--column", "promt=q"),
        "unknown column key 'promt': one of prompt, query, response, history, system, messages",
    )
    assert "bad_qa" not in lfkit(home, "datasets").stdout
    # files LLaMA-Factory cannot load ("Cannot find valid samples", a pyarrow parse error) are not registered
    rows = [{"instruction": "q", "input": "", "output": 5}]
    numbers = tmp_path / "numbers.json"
    numbers.write_text(json.dumps(rows), encoding="utf-8")
    _fails(lfkit(home, "data", "add", "numbers", numbers),
           f"{numbers}: row 1: 'output' is 5, not text; LLaMA-Factory takes text: write it as \"5\"")  # fmt: skip
    marked = tmp_path / "marked.json"
    marked.write_text(json.dumps([{**rows[0], "output": "5"}]), encoding="utf-8-sig")
    _fails(lfkit(home, "data", "add", "marked", marked),
           f"{marked}: starts with a UTF-8 byte-order mark, which LLaMA-Factory's JSON reader cannot read; "
           "save it as UTF-8 without BOM")  # fmt: skip
    table = write_csv(tmp_path / "x.csv", raw_rows())  # used to say "malformed JSON"
    _fails(
        lfkit(home, "data", "add", "x", table),
        f"{table}: a CSV table; lfkit takes datasets as .json or .jsonl records (alpaca or sharegpt): convert it, "
        "or turn a question / answer table into splits with `lfkit data prepare telecom`",
    )

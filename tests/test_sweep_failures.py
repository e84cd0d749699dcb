"""Sweeps that meet failures, duplicates, ties and too few logged steps; evaluation categories from prepare."""

import csv
import json

import pytest

from conftest import BIN, clean_env, run

LFKIT = BIN / "lfkit"


@pytest.mark.slow
def test_a_failing_variant_is_recorded_and_the_others_run(tmp_path, tiny_llama):
    argv = [LFKIT, "sweep", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", "max_steps=2",
            "max_samples=8", "per_device_train_batch_size=2", "logging_steps=10", "cutoff_len=64",
            "eval.max_new_tokens=8", "eval.max_samples=8", "--grid", "report_to=wandb,none,none",
            "--eval", "telecom_demo_test"]  # fmt: skip
    first = run(argv, env=clean_env(), cwd=tmp_path)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "1 of 2 variants failed (report_to=wandb)" in first.stderr
    (folder,) = (tmp_path / "runs").iterdir()  # no -o: a folder named after the command
    assert folder.name.startswith("sweep-sft-lora-single-")
    rows = {r["variant"]: r for r in csv.DictReader(open(folder / "comparison.csv", encoding="utf-8"))}
    assert set(rows) == {"report_to=wandb", "report_to=none"}  # the duplicate ran once
    assert rows["report_to=none"]["status"] == "finished" and rows["report_to=none"]["rank"] == "1"
    assert rows["report_to=wandb"]["status"] == "failed" and rows["report_to=wandb"]["rank"] == ""
    # logging_steps above the steps run: the mean loss stands in for the last logged one
    assert float(rows["report_to=none"]["final_loss"]) > 0
    assert json.loads((folder / "sweep.json").read_text())["status"] == "failed"

    again = run(argv, env=clean_env(), cwd=tmp_path)
    assert again.returncode == 1
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [folder.name]
    assert "variant report_to=none: finished earlier, kept" in again.stdout
    assert "variant report_to=wandb failed" in again.stdout  # retried, not skipped


def _variant(out, name, em, f1, loss):
    folder = out / name
    (folder / "train").mkdir(parents=True)
    (folder / "eval").mkdir()
    (folder / "run.json").write_text(json.dumps({"status": "finished"}))
    (folder / "train" / "run.json").write_text(json.dumps({"seconds": 1.0}))
    (folder / "eval" / "metrics.json").write_text(
        json.dumps({"exact_match": em, "precision": f1, "recall": f1, "f1": f1, "samples": 4})
    )
    (folder / "train" / "train_results.json").write_text(json.dumps({"train_loss": loss}))
    (folder / "train" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))


def test_equal_results_share_a_rank(tmp_path):
    from lfkit.evaluation.compare import collect

    names = ["a", "b", "c", "d"]
    for name, em in zip(names, [0.5, 0.5, 0.75, 0.25], strict=True):
        _variant(tmp_path, name, em, 0.6, 1.5)
    rows = collect(tmp_path, names, [{} for _ in names], "train", "eval", "exact_match")
    assert [(r["variant"], r["rank"]) for r in rows] == [("c", 1), ("a", 2), ("b", 2), ("d", 4)]
    assert {r["final_loss"] for r in rows} == {1.5}


def test_grid_values_that_are_the_same_run_once():
    from lfkit.recipes.sweep import parse_grid

    assert parse_grid(["learning_rate=5e-5,0.00005,1e-4", "lora_target=q_proj,q_proj,v_proj"]) == {
        "learning_rate": ["5e-5", "1e-4"],
        "lora_target": ["q_proj", "v_proj"],
    }


def test_evaluation_scores_the_categories_prepare_balanced(tmp_path):
    from lfkit.dataset_registry.telecom import prepare
    from lfkit.evaluation.metrics import summarize
    from lfkit.evaluation.runner import examples
    from telecom_tables import write_csv

    answers = {"流量包": ["5G", "9.9", "accuracy: 19"], "取消方式": ["取消方式_1", "取消方式_2", "取消方式_3"]}
    rows = [{"用户问题": f"问题{c}{i}", "答案": answers[c][i % 3], "属性名": c} for c in answers for i in range(30)]
    result = prepare(write_csv(tmp_path / "raw.csv", rows), tmp_path / "out", train_sizes=(20,), test_size=10,
                     register=False)  # fmt: skip
    test_rows = result.splits["telecom_test_10"]
    assert {r["category"] for r in test_rows} == {"流量包", "取消方式"}
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.json").write_text(json.dumps(test_rows, ensure_ascii=False), encoding="utf-8")
    (data / "dataset_info.json").write_text(json.dumps({"t": {"file_name": "t.json"}}))
    items = examples("t", data)
    metrics = summarize((item["reference"], item["reference"], item["category"]) for item in items)
    assert set(metrics["per_category"]) == {"流量包", "取消方式"}  # not one category per answer value

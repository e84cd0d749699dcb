"""The README's main job: `lfkit run demo` offline on CPU, before/after metrics that prove the pipeline lines up."""

import json

import pytest

from conftest import BIN, clean_env, run

pytestmark = pytest.mark.both_stacks


def test_every_held_out_character_is_taught_by_the_train_split():
    """A character that train never shows keeps its random embedding: noise that made the tiny model misread prices."""
    from lfkit.dataset_registry.generate_demo import build

    train, test = build()
    taught = set("".join(r["instruction"] for r in train))
    assert {c for r in test for c in r["instruction"]} <= taught
    assert len({r["instruction"] for r in test}) == len(test) == 80
    # every held-out question's answer is taught by train, under other wordings
    assert {r["output"] for r in test} <= {r["output"] for r in train}


@pytest.mark.slow
def test_demo_learns_the_held_out_split_and_keeps_its_run(tmp_path, lfkit_home):
    out = tmp_path / "demo"
    env = clean_env(LFKIT_HOME=str(lfkit_home), COLUMNS="120")
    result = run([BIN / "lfkit", "run", "demo", f"output_dir={out}"], env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert summary["dataset"] == "telecom_demo_test" and summary["after"]["samples"] == 80
    assert summary["before"]["exact_match"] <= 0.05  # a random tiny model knows nothing
    assert summary["after"]["exact_match"] >= 0.9  # data, template, training, merge and eval line up
    assert (out / "metrics.png").stat().st_size > 0
    assert (out / "train" / "training_loss.png").is_file()
    assert json.loads((out / "chat" / "answer.json").read_text(encoding="utf-8"))["answer"]
    predictions = (out / "eval-after" / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(predictions) == 80
    # the end summary: both evaluations, and the report's before -> after
    before, after = summary["before"]["exact_match"], summary["after"]["exact_match"]
    assert f"exact match {after:.3f}, F1" in result.stdout
    assert f"exact match {before:.3f} -> {after:.3f}" in result.stdout
    for step in ("eval-before", "train", "merge", "chat", "eval-after", "report"):
        assert json.loads((out / step / "run.json").read_text())["status"] == "finished"
    assert json.loads((out / "run.json").read_text())["status"] == "finished"

    again = run([BIN / "lfkit", "run", "demo", f"output_dir={out}"], env=clean_env(LFKIT_HOME=str(lfkit_home)))
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"lfkit: error: output_dir {out} holds a finished run of demo; pass --overwrite to replace it"
    ]

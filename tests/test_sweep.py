"""lfkit eval, a two-variant sweep end to end (with its resume after a kill), and compare across models."""

import csv
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import BIN, REPO, clean_env, read_jsonl, run

pytestmark = pytest.mark.slow
LFKIT = BIN / "lfkit"
SMALL = ["max_steps=4", "max_samples=12", "per_device_train_batch_size=2", "gradient_accumulation_steps=1",
         "logging_steps=1", "cutoff_len=64"]  # fmt: skip
# A tiny model barely trained rarely says its end token: without a cap each answer runs to
# LLaMA-Factory's default of 1024 new tokens. The ranking needs answers, not long ones, nor many.
SHORT_EVAL = ["eval.max_new_tokens=8", "eval.max_samples=8"]


@pytest.mark.both_stacks
def test_eval_writes_predictions_metrics_and_a_table(tmp_path, tiny_llama):
    out = tmp_path / "eval"
    result = run([LFKIT, "eval", f"model={tiny_llama}", "dataset=telecom_demo_test", "max_samples=6",
                  "max_new_tokens=8", f"output_dir={out}"], env=clean_env())  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = read_jsonl(out / "predictions.jsonl")
    assert len(predictions) == 6 and {"prompt", "prediction", "reference"} <= set(predictions[0])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["samples"] == 6 and metrics["dataset"] == "telecom_demo_test"
    assert set(metrics["per_category"]) <= {"取消方式", "开通方式", "业务简介"}
    assert "exact match" in result.stdout  # the summary's result column
    # progress lines, as `lfkit run eval-telecom` prints them, not LLaMA-Factory's whole log (`--verbose`)
    assert "[INFO|" not in result.stdout + result.stderr and len(result.stdout.splitlines()) < 40, result.stdout


def sweep_argv(tiny_llama, out):
    return [LFKIT, "sweep", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", *SMALL, *SHORT_EVAL,
            "--grid", "learning_rate=1e-3,1e-2", "--eval", "telecom_demo_test", "-o", out]  # fmt: skip


@pytest.mark.both_stacks
def test_a_two_variant_sweep_resumes_without_rerunning_finished_variants(tmp_path, tiny_llama):
    out = tmp_path / "sweep"
    argv = sweep_argv(tiny_llama, out)
    process = subprocess.Popen([str(a) for a in argv], env=clean_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    first = out / "learning_rate=1e-3" / "run.json"
    deadline = time.monotonic() + 600
    while not (first.is_file() and json.loads(first.read_text()).get("status") == "finished"):
        assert process.poll() is None, "the sweep ended before it could be interrupted"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    kept = (out / "learning_rate=1e-3" / "train" / "adapter_model.safetensors").stat().st_mtime_ns
    assert not (out / "comparison.csv").exists()

    resumed = run(argv, env=clean_env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "variant learning_rate=1e-3: finished earlier, kept" in resumed.stdout
    assert (out / "learning_rate=1e-3" / "train" / "adapter_model.safetensors").stat().st_mtime_ns == kept

    with open(out / "comparison.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["learning_rate"] for r in rows) == ["1e-2", "1e-3"]
    assert [r["rank"] for r in rows] == ["1", "2"]
    ranked = [float(r["exact_match"]) for r in rows]
    assert ranked == sorted(ranked, reverse=True)
    for r in rows:  # same data and seed: only the learning rate differs
        args = json.loads((out / r["variant"] / "train" / "run.json").read_text())["args"]
        assert args["learning_rate"] == float(r["learning_rate"]) and args["max_samples"] == 12
        assert args.get("seed", 42) == 42
    assert "| rank | variant | learning_rate |" in (out / "comparison.md").read_text(encoding="utf-8")
    assert (out / "loss_curves.png").stat().st_size > 0
    assert json.loads((out / "sweep.json").read_text())["status"] == "finished"

    again = run(argv, env=clean_env())
    assert again.returncode == 2
    assert again.stderr.strip().splitlines()[-1] == (
        f"lfkit: error: {out} holds a finished sweep; pass --overwrite to run it again"
    )
    # --overwrite deletes the finished sweep only once the new one has passed every check: a typo, or a
    # simulation, deleted it and then stopped
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    typo = run([*argv, "max_stepz=2", "--overwrite"], env=clean_env())
    assert typo.returncode == 2 and "max_stepz" in typo.stderr
    simulated = run([*argv, "--overwrite"], env=clean_env(LFKIT_SIMULATE="rocm:gfx906"))
    assert simulated.returncode == 2 and "every variant would take place on this machine" in simulated.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == files


def test_compare_runs_the_same_recipe_on_two_models(tmp_path, tiny_llama, tiny_gemma):
    out = tmp_path / "compare"
    result = run([LFKIT, "compare", "sft-lora-single", f"model={tiny_llama},{tiny_gemma}", "dataset=telecom_demo",
                  *SMALL, *SHORT_EVAL, "--eval", "telecom_demo_test", "-o", out], env=clean_env())  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out / "comparison.csv", encoding="utf-8") as fh:
        rows = {r["model"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {str(tiny_llama), str(tiny_gemma)}
    templates = {
        model: json.loads((out / r["variant"] / "train" / "run.json").read_text())["args"]["template"]
        for model, r in rows.items()
    }
    assert templates == {str(tiny_llama): "llama2", str(tiny_gemma): "gemma"}  # each model's family


def test_bad_sweep_input_is_one_line(tmp_path, tiny_llama):
    result = run([LFKIT, "sweep", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                  "--grid", "learning_rate", "--eval", "telecom_demo_test"], env=clean_env())  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == "lfkit: error: --grid expects key=v1,v2,..., got 'learning_rate'"
    single = run([LFKIT, "compare", "sft-lora-single", f"model={tiny_llama}", "--eval", "x"], env=clean_env())
    assert single.stderr.strip() == "lfkit: error: compare needs model=a,b[,c...] with two or more models"
    a_file = tmp_path / "results.txt"
    a_file.write_text("not a folder\n")
    into_file = run([LFKIT, "sweep", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                     "--grid", "learning_rate=1e-3,1e-2", "--eval", "telecom_demo_test", "-o", a_file],
                    env=clean_env())  # fmt: skip
    assert into_file.returncode == 2
    assert into_file.stderr.strip() == f"lfkit: error: {a_file} is a file; a sweep needs a folder"
    assert a_file.read_text() == "not a folder\n"


def test_a_sweeps_eval_step_answers_as_briefly_as_the_eval_recipe():
    """The README's `lfkit sweep ... --eval telecom_demo_test` left the eval steps at LLaMA-Factory's 1024 new
    tokens: 9 minutes for 64 of 80 samples on the tiny model, against 50 s for the whole sweep at 24."""
    from lfkit.recipes.spec import load
    from lfkit.recipes.sweep import with_eval

    root = REPO / "recipes"
    step = with_eval(load(root / "sft-lora-single.yaml"), "telecom_demo_test").steps[-1]
    wanted = load(root / "eval-telecom.yaml").steps[0].args
    assert step.args["max_new_tokens"] == wanted["max_new_tokens"] == 64
    assert step.args["batch_size"] == wanted["batch_size"]

"""Recipes: listing, export, and every validation error as one line and exit code 2, before anything heavy."""

import json

import pytest
import yaml

from conftest import BIN, clean_env, run

LFKIT = BIN / "lfkit"
BUILTIN = {"sft-lora-single", "sft-lora-tuned", "merge-lora", "chat", "demo"}


def lfkit(*args, cwd=None):
    return run([LFKIT, *args], env=clean_env(), cwd=cwd)


def one_error_line(result) -> str:
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("lfkit: error: ")
    return lines[0]


def test_recipes_json_lists_the_builtin_recipes():
    result = lfkit("recipes", "--json")
    assert result.returncode == 0, result.stderr
    recipes = {r["name"]: r for r in json.loads(result.stdout)}
    assert BUILTIN <= set(recipes)
    assert recipes["sft-lora-single"]["commands"] == ["train"]
    assert recipes["merge-lora"]["commands"] == ["export"]
    assert recipes["demo"]["commands"] == ["eval", "train", "export", "chat", "eval", "report"]
    assert recipes["sft-lora-single"]["params"]["model"]["required"] is True
    assert all(r["plugin"] == "lfkit.recipes" for r in recipes.values() if r["name"] in BUILTIN)


def test_recipes_show_prints_parameters_and_llamafactory_arguments():
    result = lfkit("recipes", "show", "sft-lora-tuned")
    assert result.returncode == 0, result.stderr
    assert "lora_rank: 128" in result.stdout and "use_dora: true" in result.stdout
    assert "dataset" in result.stdout


def test_export_writes_seed_000s_settings_as_a_plain_llamafactory_yaml(tmp_path, tiny_llama):
    out = tmp_path / "sft.yaml"
    result = lfkit(
        "recipes", "export", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
        f"output_dir={tmp_path / 'run'}", "num_train_epochs=1", "-o", out,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    args = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert args["model_name_or_path"] == str(tiny_llama)
    assert args["output_dir"] == str(tmp_path / "run")
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (4, 4)
    assert (args["lr_scheduler_type"], args["learning_rate"], args["logging_steps"]) == ("cosine", 5e-5, 10)
    assert (args["save_steps"], args["plot_loss"], args["num_train_epochs"]) == (1000, True, 1.0)
    assert args["fp16"] is False  # no GPU here: "fp16 where the device supports it"
    assert "resolved here: fp16: auto -> False" in out.read_text(encoding="utf-8")
    # never silently replaced
    again = lfkit("recipes", "export", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo",
                  f"output_dir={tmp_path / 'run'}", "-o", out)  # fmt: skip
    assert one_error_line(again) == f"lfkit: error: {out} exists; pass --force to replace it"


def test_a_multi_step_recipe_exports_one_named_step(tmp_path):
    out = tmp_path / "merge.yaml"
    result = lfkit("recipes", "export", "demo", f"output_dir={tmp_path / 'demo'}", "--step", "merge", "-o", out)
    assert result.returncode == 0, result.stderr
    args = yaml.safe_load(out.read_text(encoding="utf-8"))
    assert args["adapter_name_or_path"] == str(tmp_path / "demo" / "train")
    assert args["export_dir"] == str(tmp_path / "demo" / "merge")
    assert "pick one with --step" in one_error_line(lfkit("recipes", "export", "demo", "-o", tmp_path / "x.yaml"))


@pytest.fixture(scope="module")
def no_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("not-a-model")
    (folder / "README.md").write_text("weights were never copied here\n")
    return folder


CASES = {
    "unknown recipe": (["run", "sft-lora-singel"], "unknown recipe 'sft-lora-singel' (did you mean sft-lora-single"),
    "missing parameter": (
        ["run", "sft-lora-single", "model={model}", "output_dir={tmp}/o"],
        "recipe sft-lora-single needs dataset=...",
    ),
    "model path missing": (
        ["run", "sft-lora-single", "model={tmp}/nowhere/model", "dataset=telecom_demo", "output_dir={tmp}/o"],
        "model {tmp}/nowhere/model: no such folder",
    ),
    "folder without a model": (
        ["run", "sft-lora-single", "model={no_model}", "dataset=telecom_demo", "output_dir={tmp}/o"],
        "model {no_model} holds no model (no config.json in the folder)",
    ),
    "unknown key": (
        ["run", "sft-lora-single", "model={model}", "dataset=telecom_demo", "output_dir={tmp}/o", "learning_rat=1e-4"],
        "does not know the key 'learning_rat' (did you mean learning_rate",
    ),
    "wrong type": (
        [
            "run",
            "sft-lora-single",
            "model={model}",
            "dataset=telecom_demo",
            "output_dir={tmp}/o",
            "num_train_epochs=many",
        ],
        "num_train_epochs='many' is not a number",
    ),
    "wrong choice": (
        [
            "run",
            "sft-lora-single",
            "model={model}",
            "dataset=telecom_demo",
            "output_dir={tmp}/o",
            "finetuning_type=lorra",
        ],
        "finetuning_type='lorra' is not one of lora, oft, freeze, full",
    ),
    "unknown dataset": (
        ["run", "sft-lora-single", "model={model}", "dataset=telecom_dem", "output_dir={tmp}/o"],
        "unknown dataset 'telecom_dem' (did you mean telecom_demo",
    ),
    "adapter without adapter_config": (
        ["run", "merge-lora", "model={model}", "adapter={no_model}", "output_dir={tmp}/o"],
        "adapter {no_model} holds no adapter (no adapter_config.json)",
    ),
    "not key=value": (["run", "chat", "model"], "expected key=value, got 'model'"),
    "bad --config": (["run", "chat", "--config", "{tmp}/missing.yaml"], "--config {tmp}/missing.yaml: No such file"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2(case, tmp_path, tiny_llama, no_model):
    argv, expected = CASES[case]
    values = {"model": tiny_llama, "tmp": tmp_path, "no_model": no_model}
    line = one_error_line(lfkit(*[a.format(**values) for a in argv]))
    assert expected.format(**values) in line
    assert not (tmp_path / "o").exists()  # nothing started


def test_dry_run_resolves_keys_types_and_absolute_paths(tmp_path, tiny_llama):
    config = tmp_path / "extra.yaml"
    config.write_text("lora_rank: 16\nlearning_rate: 1.0e-4\n")
    result = lfkit(
        "run", "sft-lora-single", f"model={tiny_llama}", "dataset=telecom_demo", "output_dir=out",
        "--config", config, "learning_rate=2e-4", "train.logging_steps=1", "--dry-run", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    (step,) = json.loads(result.stdout)["steps"]
    args = step["args"]
    assert args["lora_rank"] == 16  # from --config
    assert args["learning_rate"] == 2e-4  # the command line wins over --config
    assert args["logging_steps"] == 1  # STEP.key
    assert args["output_dir"] == str(tmp_path / "out")  # made absolute
    assert not (tmp_path / "out").exists()

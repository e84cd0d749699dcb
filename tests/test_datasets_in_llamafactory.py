"""Registry datasets inside real LLaMA-Factory training runs (2 steps on a tiny model)."""

import json

import pytest

from conftest import BIN, clean_env, lora_train_args, run, write_yaml
from telecom_tables import prepare, raw_rows, write_csv

pytestmark = [pytest.mark.slow, pytest.mark.both_stacks]
LF_CLI = BIN / "llamafactory-cli"


def _config(folder, model, dataset, output_dir=None, **extra):
    args = lora_train_args(model, output_dir or folder / "out", dataset=dataset, cutoff_len=96, **extra)
    return write_yaml(folder / "train.yaml", args)


def test_plain_llamafactory_cli_finds_prepared_and_bundled_names(tmp_path, tiny_llama):
    home = tmp_path / "home"
    assert prepare(home, write_csv(tmp_path / "raw.csv", raw_rows()), tmp_path / "splits").returncode == 0
    work = tmp_path / "work"  # no data/ folder here: LLaMA-Factory's default dataset_dir does not exist
    work.mkdir()
    config = _config(work, tiny_llama, "telecom_train_100,telecom_demo")
    env = clean_env(LFKIT_HOME=str(home))
    result = run([LF_CLI, "train", config], env=env, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (work / "out" / "adapter_model.safetensors").is_file()

    env["LFKIT_DISABLE_PATCHES"] = "lf-dataset-lookup"  # without lfkit's lookup LLaMA-Factory cannot
    result = run(
        [LF_CLI, "train", _config(work, tiny_llama, "telecom_train_100", output_dir=str(work / "o2"))],
        env=env,
        cwd=work,
    )
    assert result.returncode != 0
    assert "Cannot open data/dataset_info.json" in result.stderr


def test_the_users_own_entry_wins_a_clash_with_a_warning(tmp_path, tiny_llama):
    work = tmp_path / "work"
    data = work / "data"
    data.mkdir(parents=True)
    mine = [{"instruction": f"我的问题{i}", "input": "", "output": "我的答案"} for i in range(6)]
    (data / "mine.json").write_text(json.dumps(mine, ensure_ascii=False))
    (data / "dataset_info.json").write_text(json.dumps({"telecom_demo": {"file_name": "mine.json"}}))
    result = run(
        [LF_CLI, "train", _config(work, tiny_llama, "telecom_demo,sharegpt_single")],
        env=clean_env(LFKIT_HOME=str(tmp_path / "home")),
        cwd=work,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        "dataset 'telecom_demo': your dataset_info.json entry wins over the one from lfkit.dataset_registry"
        in result.stderr
    )
    # 6 rows of the user's file plus seed 000's one dialogue: the bundled 400-row file was not used
    assert "Num examples = 7" in result.stdout + result.stderr


def test_a_materialised_folder_works_without_the_lookup_patch(tmp_path, tiny_llama):
    from lfkit.dataset_registry.lookup_patch import materialize

    user = tmp_path / "user-data"
    user.mkdir()
    (user / "mine.json").write_text(
        json.dumps([{"instruction": "问", "input": "", "output": "答"}] * 4, ensure_ascii=False)
    )
    (user / "dataset_info.json").write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    folder = materialize(tmp_path / "run" / "data", user)
    info = json.loads((folder / "dataset_info.json").read_text())
    assert info["mine"]["file_name"] == str((user / "mine.json").resolve())
    assert info["telecom_demo"]["file_name"].endswith("dataset_registry/data/telecom_demo.json")
    assert {"sharegpt_single", "telecom_demo_test"} <= set(info)

    config = _config(tmp_path / "run", tiny_llama, "mine,sharegpt_single", dataset_dir=str(folder))
    env = clean_env(LFKIT_DISABLE_PATCHES="lf-dataset-lookup")
    result = run([LF_CLI, "train", config], env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Num examples = 5" in result.stdout + result.stderr
